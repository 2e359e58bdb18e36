# SPDX-License-Identifier: MIT
"""The FastAPI "hello" app of bench_asgi.py (Debian's python3-fastapi), written the way the
FastAPI tutorial starts: an `async def` path operation returning a dict, which FastAPI
serialises into a JSONResponse. Served as `fastapi_app:app` by gatehouse.asgi and uvicorn.

  GET /   200 {"hello":"world"} (application/json, with Content-Length), also what the
          readiness checks ask for"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello():
    return {"hello": "world"}
