# SPDX-License-Identifier: MIT
"""A bare ASGI app for the edges of the asgi driver, under gatehouse.asgi: trailers in two
messages, http.response.pathsend (the gateway sends the file), a body shorter than its
Content-Length, and a streamed body to a HEAD request. $GH_STATE_DIR holds the file."""

import os

STATE = os.environ.get("GH_STATE_DIR", "/tmp")
FILE = os.path.join(STATE, "pathsend.bin")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                with open(FILE, "wb") as f:
                    f.write(bytes(range(256)) * 4096)     # 1 MiB of the test pattern
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    ext = scope.get("extensions", {})
    if path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-a, x-b")]})
        await send({"type": "http.response.body", "body": b"body with trailers"})
        await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"X-B", b"2")]})
    elif path in ("/pathsend", "/pathsend-204"):
        status = 204 if path.endswith("204") else 200
        headers = [(b"content-type", b"application/octet-stream")]
        if status == 200:
            headers.append((b"content-length", str(os.path.getsize(FILE)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        assert "http.response.pathsend" in ext
        await send({"type": "http.response.pathsend", "path": FILE})
    elif path == "/short":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})
    elif path == "/head-body":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"300000")]})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"x" * 100000, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no such edge"})
