# SPDX-License-Identifier: MIT
"""A bare ASGI 3 app for the gatehouse.asgi websocket tests: one WebSocket endpoint per
behaviour, steered by the path and query parameters. What the endpoints saw is kept in
RECORDED and reported by the http endpoint /recorded (per worker process)."""

import asyncio
import json
from urllib.parse import parse_qs

RECORDED = []


def _q(scope):
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


async def _connect(receive):
    msg = await receive()
    assert msg["type"] == "websocket.connect", msg


async def _until_disconnect(receive):
    """Records every event up to websocket.disconnect; returns that."""
    while True:
        msg = await receive()
        RECORDED.append(_plain(msg))
        if msg["type"] == "websocket.disconnect":
            return msg


async def _try_send(send, message):
    """Records how a send after the close went: "sent" or the exception's class names."""
    try:
        await send(message)
    except Exception as e:
        RECORDED.append([c.__name__ for c in type(e).__mro__ if c is not object])
    else:
        RECORDED.append("sent")


async def scope_ws(scope, receive, send, q):
    """Sends the scope (and the first event's type) as one text message, then closes."""
    first = await receive()
    await send({"type": "websocket.accept"})
    out = {k: _plain(v) for k, v in scope.items()}
    out["first_event"] = first["type"]
    if "state" in scope:
        scope["state"]["leak"] = True      # must not reach the next scope
    await send({"type": "websocket.send", "text": json.dumps(out)})
    await send({"type": "websocket.close"})


async def echo(scope, receive, send, q):
    """Echoes every message as it came (text or bytes) until the disconnect."""
    await _connect(receive)
    await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            RECORDED.append(_plain(msg))
            return
        if msg.get("text") is not None:
            await send({"type": "websocket.send", "text": msg["text"]})
        else:
            await send({"type": "websocket.send", "bytes": msg["bytes"]})


async def accept(scope, receive, send, q):
    """Accepts with ?sub= and an x-accept header, then closes with ?code= and ?reason=
    (no code: the default), then tries to send once more."""
    await _connect(receive)
    await send({"type": "websocket.accept", "subprotocol": q.get("sub"),
                "headers": [(b"x-accept", b"yes"), (b"set-cookie", b"a=1")]})
    close = {"type": "websocket.close"}
    if "code" in q:
        close["code"] = int(q["code"])
    if "reason" in q:
        close["reason"] = q["reason"]
    await send(close)
    RECORDED.append(_plain(await receive()))
    await _try_send(send, {"type": "websocket.send", "text": "after close"})


async def deny(scope, receive, send, q):
    """websocket.close before accept: the gateway answers 403."""
    await _connect(receive)
    await send({"type": "websocket.close"})
    RECORDED.append(_plain(await receive()))
    await _try_send(send, {"type": "websocket.accept"})


async def denial(scope, receive, send, q):
    """A denial response: websocket.http.response.start and a body in two parts."""
    await _connect(receive)
    await send({"type": "websocket.http.response.start", "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Basic")]})
    await send({"type": "websocket.http.response.body", "body": b"who are ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"you?"})
    await _try_send(send, {"type": "websocket.http.response.body", "body": b"more"})


async def big(scope, receive, send, q):
    """Sends one message of ?size= bytes (?text=1: as text), then waits for the disconnect."""
    await _connect(receive)
    await send({"type": "websocket.accept"})
    size = int(q["size"])
    if q.get("text"):
        # a 3-byte character at the start and the end: pieces split inside characters
        await send({"type": "websocket.send", "text": "\u20ac" + "t" * (size - 6) + "\u20ac"})
    else:
        await send({"type": "websocket.send", "bytes": bytes(i % 251 for i in range(size))})
    RECORDED.append("sent big")
    await _until_disconnect(receive)


async def concurrent(scope, receive, send, q):
    """Two tasks send a message of ?size= bytes each at once, one of "a"s, one of "b"s."""
    await _connect(receive)
    await send({"type": "websocket.accept"})
    size = int(q["size"])
    await asyncio.gather(send({"type": "websocket.send", "bytes": b"a" * size}),
                         send({"type": "websocket.send", "bytes": b"b" * size}))
    await _until_disconnect(receive)


async def push(scope, receive, send, q):
    """Sends a tick every 10 ms and never receives: only a failing send() can stop it (and
    it does not catch that)."""
    await _connect(receive)
    await send({"type": "websocket.accept"})
    try:
        while True:
            await send({"type": "websocket.send", "text": "tick"})
            await asyncio.sleep(0.01)
    finally:
        RECORDED.append("push over")


async def wait(scope, receive, send, q):
    """Accepts and records every event until the disconnect, then tries to send."""
    await _connect(receive)
    await send({"type": "websocket.accept"})
    await _until_disconnect(receive)
    await _try_send(send, {"type": "websocket.send", "text": "nobody listens"})


async def raise_before(scope, receive, send, q):
    await _connect(receive)
    raise ValueError("boom before accept")


async def raise_after(scope, receive, send, q):
    await _connect(receive)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "partial"})
    raise ValueError("boom after accept")


async def return_before(scope, receive, send, q):
    await _connect(receive)


async def return_after(scope, receive, send, q):
    await _connect(receive)
    await send({"type": "websocket.accept"})


async def hold(scope, receive, send, q):
    """Never accepts until the disconnect (max_streams)."""
    await _connect(receive)
    await _until_disconnect(receive)


WS_ROUTES = {
    "/scope": scope_ws, "/echo": echo, "/accept": accept, "/deny": deny, "/denial": denial,
    "/big": big, "/concurrent": concurrent, "/push": push, "/wait": wait,
    "/raise/before": raise_before, "/raise/after": raise_after,
    "/return/before": return_before, "/return/after": return_after, "/hold": hold,
}


async def http(scope, receive, send):
    """/recorded: what the WebSocket endpoints saw, as JSON."""
    body = json.dumps({"recorded": RECORDED}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            scope["state"]["ws_app"] = "started"
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
    elif scope["type"] == "http":
        await http(scope, receive, send)
    else:
        await WS_ROUTES[scope["path"]](scope, receive, send, _q(scope))
