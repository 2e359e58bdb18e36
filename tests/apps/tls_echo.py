# SPDX-License-Identifier: MIT
"""A bare ASGI app answering every http request with its scheme and its scope's "tls"
extension as JSON (None when absent), for the TLS integration tests."""

import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"scheme": scope["scheme"],
                       "tls": scope.get("extensions", {}).get("tls")}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
