# SPDX-License-Identifier: MIT
"""The WebSocket echo app of bench_ws.py: a bare ASGI callable (no framework), so the server
(gatehouse.asgi or uvicorn) and whatever is in front of it are most of the cost. Served as
`ws_echo_app:app` by both.

  websocket scope   accept (no subprotocol, no extra headers), then echo each message as it
                    came (text as text, bytes as bytes) until websocket.disconnect
  http scope        200 "hello\\n", text/plain, with Content-Length (the body bench_http.py's
                    client checks, so the readiness checks and the idle keep-alive
                    connections can use it)

The lifespan scope is answered (startup and shutdown complete at once), so neither server logs
it as unsupported."""

HELLO = b"hello\n"
_START = {"type": "http.response.start", "status": 200,
          "headers": [(b"content-type", b"text/plain"),
                      (b"content-length", str(len(HELLO)).encode())]}
_BODY = {"type": "http.response.body", "body": HELLO}
_ACCEPT = {"type": "websocket.accept"}


async def websocket(receive, send):
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    await send(_ACCEPT)
    while True:
        msg = await receive()
        if msg["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = msg.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": msg.get("bytes") or b""})


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "websocket":
        try:
            await websocket(receive, send)
        except Exception:  # noqa: BLE001  a send after the client went away: gatehouse.asgi
            return         # raises ClientDisconnected, uvicorn websockets' ConnectionClosed
    elif kind == "http":
        more = True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # http.disconnect
            more = msg.get("more_body", False)
        await send(_START)
        await send(_BODY)
    elif kind == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
