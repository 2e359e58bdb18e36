# SPDX-License-Identifier: MIT
"""A small FastAPI app for the gatehouse.asgi tests (Debian's python3-fastapi)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: dict):
    return {"created": item, "size": len(item)}
