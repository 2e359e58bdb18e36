# SPDX-License-Identifier: MIT
"""A bare ASGI 3 app for the gatehouse.asgi tests: one endpoint per behaviour, steered by the
path and query parameters. `app` supports lifespan; `nolifespan` raises on it; `failstartup`
answers lifespan.startup.failed; `asgi2` is an ASGI 2 double callable."""

import asyncio
import json
import os
import sys
from urllib.parse import parse_qs

RECORDED = []       # what /long saw, reported by /recorded (per worker process)


def _q(scope):
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def _read_body(receive):
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunks.append(msg["body"])
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _json(send, obj, status=200):
    body = json.dumps(obj, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


async def scope_echo(scope, receive, send, q):
    await _read_body(receive)
    out = {k: _plain(v) for k, v in scope.items() if k != "state"}
    out["state"] = _plain(scope.get("state"))
    out["headers_types"] = sorted({"%s/%s" % (type(h).__name__, type(h[0]).__name__)
                                   for h in scope["headers"]})
    out["pid"] = os.getpid()
    # the state is a shallow copy per request: this must not leak into the next request
    if "state" in scope:
        scope["state"]["leak"] = True
    await _json(send, out)


async def body_echo(scope, receive, send, q):
    """Reads the whole body, then sends it back in one http.response.body."""
    body = await _read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": body})


async def stream(scope, receive, send, q):
    n, size = int(q.get("n", "5")), int(q.get("size", "1000"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(n):
        await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * size,
                    "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def raise_before(scope, receive, send, q):
    raise ValueError("boom before start")


async def raise_after(scope, receive, send, q):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("boom after start")


async def incomplete(scope, receive, send, q):
    if q.get("started"):
        await send({"type": "http.response.start", "status": 200, "headers": []})


async def trailers(scope, receive, send, q):
    await send({"type": "http.response.start", "status": 200, "headers": [],
                "trailers": True})
    await send({"type": "http.response.body", "body": b"with trailers"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})


async def pathsend(scope, receive, send, q):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.pathsend", "path": q["path"]})


async def long(scope, receive, send, q):
    """Waits in receive() for http.disconnect, then tries to send (must be a no-op)."""
    RECORDED.clear()
    while True:
        msg = await receive()
        RECORDED.append(msg["type"])
        if msg["type"] == "http.disconnect":
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"nobody listens"})
    RECORDED.append("sent")


async def sleep(scope, receive, send, q):
    await _read_body(receive)
    try:
        await asyncio.sleep(float(q.get("s", "0.1")))
    except asyncio.CancelledError:
        RECORDED.append("cancelled")
        raise
    await _json(send, {"slept": float(q.get("s", "0.1")), "id": q.get("id")})


async def recorded(scope, receive, send, q):
    await _json(send, {"recorded": RECORDED})


async def empty(scope, receive, send, q):
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


ROUTES = {
    "/scope": scope_echo, "/echo": body_echo, "/stream": stream,
    "/raise/before": raise_before, "/raise/after": raise_after, "/incomplete": incomplete,
    "/trailers": trailers, "/pathsend": pathsend, "/long": long, "/sleep": sleep,
    "/recorded": recorded, "/empty": empty,
}


async def lifespan(scope, receive, send, fail=False):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            if fail:
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            scope["state"]["started_by"] = os.getpid()
            scope["state"]["shared"] = {"hits": 0}
            print("app: lifespan startup", file=sys.stderr, flush=True)
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            print("app: lifespan shutdown", file=sys.stderr, flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def http(scope, receive, send):
    handler = ROUTES.get(scope["path"])
    if handler is None:
        await _json(send, {"error": "not found"}, 404)
        return
    await handler(scope, receive, send, _q(scope))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
    else:
        await http(scope, receive, send)


async def nolifespan(scope, receive, send):
    assert scope["type"] == "http", "no lifespan here"
    await http(scope, receive, send)


async def failstartup(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send, fail=True)
    else:
        await http(scope, receive, send)


def asgi2(scope):
    async def instance(receive, send):
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
        else:
            await _json(send, {"asgi": scope["asgi"]})
    return instance
