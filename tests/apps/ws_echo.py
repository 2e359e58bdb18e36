# SPDX-License-Identifier: MIT
"""A bare ASGI app (no framework: it runs the same under uvicorn and gatehouse.asgi) for the
WebSocket conformance tests (tests/integration/test_websocket.py).

websocket scope, any path:
  .../deny           websocket.close before accept (the server answers 403)
  .../deny-response  a denial response: 401, x-denied: yes, body "denied" (the
                     websocket.http.response extension; uvicorn 0.17 does not have it)
  .../bad-proto      accept with the subprotocol "nobody.offered", which no client offers
  anything else      accept with the first offered subprotocol in PREFERRED and the header
                     x-echo: 1, then echo text as text and bytes as bytes, except the texts
                       close:<code>:<reason>  websocket.close with that code and reason
                       flood:<n>:<size>       n binary messages of size bytes (message i is
                                              flood_message(i, size)), then the text flood-done
                       scope                  the scope as JSON (see scope_json)
                       deaf:<s>               receives nothing for s seconds, then "deaf-done"
http scope: 200 "ws_echo".

With $WS_ECHO_LOG set, one JSON line per event is appended to that file:
  {"event": "connect", "path": ...}                      a websocket scope began
  {"event": "disconnect", "code": ..., "path": ...}      websocket.disconnect reached the app
  {"event": "http", "path": ...}                         an http scope
"""

import asyncio
import json
import os

PREFERRED = ("chat.v2", "chat.v1")
_PATTERN = bytes(range(256)) * 520     # enough for any rotation of a 128 KiB message


def flood_message(i, size):
    """Message |i| of a flood: its index (4 bytes, big-endian) then the byte pattern rotated
    by i, so both order and content can be checked. Also used by the tests."""
    head = (i & 0xFFFFFFFF).to_bytes(4, "big")[:size]
    n = size - len(head)
    off = i % 256
    if off + n <= len(_PATTERN):
        return head + _PATTERN[off:off + n]
    reps = (off + n) // 256 + 1
    return head + (bytes(range(256)) * reps)[off:off + n]


def log_event(**event):
    path = os.environ.get("WS_ECHO_LOG")
    if not path:
        return
    line = (json.dumps(event) + "\n").encode()
    # One write(2) on an O_APPEND file: lines from several workers do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _latin1(v):
    return bytes(v).decode("latin-1")


def scope_json(scope):
    return json.dumps({
        "type": scope["type"],
        "path": scope["path"],
        "query_string": _latin1(scope.get("query_string", b"")),
        "subprotocols": list(scope.get("subprotocols", [])),
        "headers": [[_latin1(n), _latin1(v)] for n, v in scope.get("headers", [])],
        "scheme": scope.get("scheme"),
        "http_version": scope.get("http_version"),
    })


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def http(scope, receive, send):
    log_event(event="http", path=scope["path"])
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"7")]})
    await send({"type": "http.response.body", "body": b"ws_echo"})


async def command(scope, send, text):
    """Runs a text command; returns False when the app should stop (it closed)."""
    if text.startswith("close:"):
        _, code, reason = text.split(":", 2)
        await send({"type": "websocket.close", "code": int(code), "reason": reason})
        return False
    if text.startswith("flood:"):
        _, n, size = text.split(":")
        for i in range(int(n)):
            await send({"type": "websocket.send", "bytes": flood_message(i, int(size))})
        await send({"type": "websocket.send", "text": "flood-done"})
    elif text == "scope":
        await send({"type": "websocket.send", "text": scope_json(scope)})
    elif text.startswith("deaf:"):
        await asyncio.sleep(float(text.split(":", 1)[1]))
        await send({"type": "websocket.send", "text": "deaf-done"})
    else:
        await send({"type": "websocket.send", "text": text})
    return True


async def websocket(scope, receive, send):
    path = scope["path"]
    log_event(event="connect", path=path)
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if path.endswith("/deny"):
        await send({"type": "websocket.close", "code": 1000})
        return
    if path.endswith("/deny-response"):
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"x-denied", b"yes"), (b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"denied"})
        return
    offered = list(scope.get("subprotocols", []))
    chosen = next((p for p in offered if p in PREFERRED), None)
    if path.endswith("/bad-proto"):
        chosen = "nobody.offered"
    await send({"type": "websocket.accept", "subprotocol": chosen,
                "headers": [(b"x-echo", b"1")]})
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            log_event(event="disconnect", code=message.get("code", 1000), path=path)
            return
        if kind != "websocket.receive":
            continue
        try:
            if message.get("text") is not None:
                if not await command(scope, send, message["text"]):
                    return
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        except Exception:   # noqa: BLE001  the peer went away under a send: the next
            continue        # receive() gives websocket.disconnect with its code


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(receive, send)
    elif kind == "http":
        await http(scope, receive, send)
    elif kind == "websocket":
        await websocket(scope, receive, send)
