# SPDX-License-Identifier: MIT
"""A bare ASGI app answering every http request with its scope as JSON (byte strings as
latin-1 text, tuples as lists), for comparing what gatehouse.asgi and uvicorn give an app."""

import json


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    keys = ("type", "http_version", "method", "scheme", "path", "raw_path", "query_string",
            "root_path", "headers", "client", "server")
    body = json.dumps({k: _plain(scope.get(k)) for k in keys}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
