# SPDX-License-Identifier: MIT
"""The bare ASGI callable of bench_asgi.py: no framework, so the server (gatehouse.asgi or
uvicorn) and whatever is in front of it are most of the cost. Served as `asgi_bare_app:app`
by both.

  every path   200 "hello\\n", text/plain, with Content-Length (the body bench_http.py's
               client checks, so the readiness checks can use it)

A request body is read and dropped, so a POST completes like a GET. The lifespan scope is
answered (startup and shutdown complete at once), so neither server logs it as unsupported."""

HELLO = b"hello\n"
_START = {"type": "http.response.start", "status": 200,
          "headers": [(b"content-type", b"text/plain"),
                      (b"content-length", str(len(HELLO)).encode())]}
_BODY = {"type": "http.response.body", "body": HELLO}


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        more = True
        while more:  # the request body, if any (one http.request event when there is none)
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
