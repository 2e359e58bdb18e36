# SPDX-License-Identifier: MIT
"""A FastAPI app (Debian's python3-fastapi) for the gateway's asgi tests, run under
`python3 -m gatehouse.asgi fastapi_gw:app`. What the tests must observe inside the app
(a disconnect seen, the lifespan shutdown) is written as files into $GH_STATE_DIR, since the
app runs in several worker processes."""

import asyncio
import hashlib
import os

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

STATE = os.environ.get("GH_STATE_DIR", "/tmp")
app = FastAPI()


def note(name, text=""):
    with open(os.path.join(STATE, name), "w") as f:
        f.write(text)


@app.on_event("startup")
async def startup():
    app.state.started = "started in %d" % os.getpid()


@app.on_event("shutdown")
async def shutdown():
    note("shutdown-%d" % os.getpid(), "done")


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str = None):
    return {"item_id": item_id, "q": q}


@app.post("/json")
async def echo_json(item: dict):
    return {"got": item, "size": len(item)}


@app.get("/lifespan")
async def lifespan_state():
    return {"started": app.state.started, "pid": os.getpid()}


@app.get("/pid")
async def pid(s: float = 0.0):
    if s:
        await asyncio.sleep(s)
    return {"pid": os.getpid()}


@app.post("/upload")
async def upload(request: Request):
    h = hashlib.sha256()
    n = 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
    return {"size": n, "sha256": h.hexdigest()}


@app.get("/stream")
async def stream(n: int = 5, size: int = 10, delay: float = 0.0):
    async def gen():
        for i in range(n):
            yield (b"%d:" % i) + b"x" * size + b"\n"
            if delay:
                await asyncio.sleep(delay)
    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/events")
async def events(n: int = 3, ms: int = 1000):
    """Server-Sent Events: n events ms apart."""
    async def gen():
        for i in range(n):
            if i:
                await asyncio.sleep(ms / 1000)
            yield b"data: event %d\n\n" % i
    return StreamingResponse(gen(), media_type="text/event-stream")


@app.get("/big")
async def big(mib: int = 1):
    block = bytes(range(256)) * 256   # 64 KiB of the test pattern

    async def gen():
        for _ in range(mib * 16):
            yield block
    return StreamingResponse(gen(), media_type="application/octet-stream",
                             headers={"content-length": str(mib << 20)})


@app.get("/watch/{tag}")
async def watch(tag: str, request: Request):
    """Streams a line every 100 ms until the client goes away, then notes that it saw it."""
    async def gen():
        try:
            for i in range(600):
                if await request.is_disconnected():
                    note("disconnected-" + tag, str(i))
                    return
                yield b"tick %d\n" % i
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            note("cancelled-" + tag)
            raise
    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/sleep")
async def sleep(s: float = 1.0):
    await asyncio.sleep(s)
    return PlainTextResponse("slept %.2f" % s)


@app.get("/teapot")
async def teapot():
    raise HTTPException(status_code=418, detail="short and stout")


@app.get("/boom")
async def boom():
    raise RuntimeError("boom before the response")


@app.get("/boom-mid")
async def boom_mid():
    async def gen():
        yield b"first part\n"
        await asyncio.sleep(0.05)
        raise RuntimeError("boom in the middle")
    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/scope")
async def scope(request: Request):
    s = request.scope
    return {"path": s["path"], "raw_path": s["raw_path"].decode("latin-1"),
            "root_path": s["root_path"], "query_string": s["query_string"].decode("latin-1"),
            "client": s["client"], "scheme": s["scheme"], "http_version": s["http_version"]}
