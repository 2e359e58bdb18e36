# SPDX-License-Identifier: MIT
"""The ASGI demo behind `make run` (tools/demo.sh): a FastAPI app (Debian's python3-fastapi)
under gatehouse.asgi, reached over the gatehouse ASGI message protocol (adapters/asgi/
PROTOCOL.md): a few long-lived connections, many requests on each.

  /asgi/    python3 -m gatehouse.asgi demo_asgi:app --bind unix:... --chdir tests/apps

The gateway strips the prefix and sends it as the scope's root_path, so the app's own links
stay right.

  /               which server and worker answered, the ASGI scope as the app received it and
                  the lifespan state its worker set at startup (?format=json for JSON)
  /events         Server-Sent Events: ?n= events (default 5, at most 30), one per second
  /ws             a WebSocket echo: a first text message names the server and worker pid,
                  then every text message comes back as the same text, every binary one as
                  the same bytes, until the client closes (subprotocol "echo" if offered)
  /items/{id}     FastAPI routing and validation: JSON for an integer id (?q= echoed), 422
                  for anything else
  /openapi.json   the schema FastAPI generates (its /docs and /redoc pages load scripts from
                  a CDN, so they are off: the demo needs no network)
  /healthz        "ok"
"""

import asyncio
import contextlib
import html
import json
import os
import sys
import time
from typing import Optional

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse


@contextlib.asynccontextmanager
async def lifespan(app):
    """Runs once in every worker before it accepts a connection. What it yields is the
    lifespan state: the server copies it into each request's scope["state"] (request.state)."""
    yield {"started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "started_by_pid": os.getpid()}


app = FastAPI(title="gatehouse ASGI demo", docs_url=None, redoc_url=None)
# FastAPI 0.92 takes no lifespan= argument; its Starlette (0.26) router runs this one and
# passes the yielded state on.
app.router.lifespan_context = lifespan


def server_name():
    """Which ASGI server runs us: `python3 -m gatehouse.asgi` makes it the __main__ module."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main is not None and main.name == "gatehouse.asgi":
        return "gatehouse.asgi"
    if "uvicorn" in sys.modules:
        return "uvicorn " + getattr(sys.modules["uvicorn"], "__version__", "")
    return "an unknown ASGI server"


def link(request, name, **params):
    """The path of route |name| as the client must ask for it: root_path first."""
    return request.scope.get("root_path", "") + app.url_path_for(name, **params)


def latin1(b):
    return b.decode("latin-1")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gatehouse: {server}</title>
<style>body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; }}
code, pre {{ font: 14px ui-monospace, monospace; background: #f3f3f3; }}
td {{ padding: .2rem .6rem; vertical-align: top; }}</style></head>
<body>
<p><a href="/">&larr; gatehouse demo</a></p>
<h1>A FastAPI app under {server}</h1>
<p>The gateway keeps a few connections open to each worker and sends every request as a
stream of frames on one of them; the app gets the ASGI events and never parses HTTP.</p>
<table>
<tr><td>worker pid</td><td><code>{pid}</code> (its master is <code>{ppid}</code>; each of
 the gateway's connections belongs to the worker that accepted it, so reloading may or may
 not reach the other one)</td></tr>
<tr><td>lifespan state</td><td><code>{state}</code> (set by the worker's lifespan startup,
 handed to every request as <code>request.state</code>)</td></tr>
</table>
<h2>The ASGI scope</h2>
<table>
{scope_rows}
</table>
<h2>Headers</h2>
<table>
{header_rows}
</table>
<h2>Server-Sent Events</h2>
<p><a href="{events}">{events}</a> sends a few events, one per second, from an async
generator; the gateway streams them as they come. Try <code>curl -N {host}{events}</code>, or
<button onclick="watch()">watch them here</button></p>
<pre id="log"></pre>
<h2>A WebSocket echo</h2>
<p><code>{ws}</code> is a WebSocket: the gateway does the handshake and the framing, and the
app gets <code>websocket.receive</code> events, one per whole message. It greets you with the
worker's pid, then sends back every message as it came.</p>
<p><input id="msg" value="hello" size="30"> <button onclick="say()">send</button></p>
<pre id="wslog"></pre>
<h2>FastAPI routing</h2>
<ul>
<li><a href="{item}">{item}</a> and <a href="{item_q}">{item_q}</a>: a path parameter and a
 query parameter, validated and returned as JSON.</li>
<li><a href="{item_bad}">{item_bad}</a>: not an integer, so FastAPI answers 422.</li>
<li><a href="{openapi}">{openapi}</a>: the OpenAPI schema, with the root path as its
 server.</li>
</ul>
<script>
function watch() {{
  const log = document.getElementById("log"), es = new EventSource("{events}");
  es.onmessage = (e) => {{ log.textContent += e.data + "\\n"; }};
  es.addEventListener("end", () => es.close());
}}
const ROOT = {root};
let ws = null;
function say() {{
  const log = document.getElementById("wslog"), text = document.getElementById("msg").value;
  const show = (line) => {{ log.textContent += line + "\\n"; }};
  if (ws === null || ws.readyState > WebSocket.OPEN) {{
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host
                       + ROOT + "/ws", ["echo"]);
    ws.onmessage = (e) => show("< " + e.data);
    ws.onclose = (e) => show("closed (" + e.code + ")");
  }}
  if (ws.readyState === WebSocket.OPEN) {{
    ws.send(text); show("> " + text);
  }} else {{
    ws.addEventListener("open", () => {{ ws.send(text); show("> " + text); }}, {{once: true}});
  }}
}}
</script>
</body></html>
"""


@app.get("/")
async def index(request: Request, format: Optional[str] = None):
    s = request.scope
    info = {
        "server": server_name(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "lifespan_state": dict(s.get("state") or {}),
        "scope": {
            "type": s["type"],
            "asgi": s.get("asgi"),
            "http_version": s.get("http_version"),
            "method": s.get("method"),
            "scheme": s.get("scheme"),
            "path": s.get("path"),
            "raw_path": latin1(s["raw_path"]) if s.get("raw_path") is not None else None,
            "root_path": s.get("root_path"),
            "query_string": latin1(s.get("query_string", b"")),
            "client": list(s["client"]) if s.get("client") else None,
            "server": list(s["server"]) if s.get("server") else None,
            "extensions": sorted(s.get("extensions") or {}),
        },
        "headers": [[latin1(n), latin1(v)] for n, v in s.get("headers", [])],
    }
    if format == "json":
        return Response(json.dumps(info, indent=2) + "\n", media_type="application/json")

    def rows(pairs):
        return "\n".join("<tr><td><code>%s</code></td><td><code>%s</code></td></tr>"
                         % (html.escape(str(k)), html.escape(str(v))) for k, v in pairs)

    notes = {"root_path": " (the prefix the route stripped)",
             "path": " (what the app routes on)"}
    scope_rows = "\n".join(
        "<tr><td><code>%s</code></td><td><code>%s</code>%s</td></tr>"
        % (html.escape(k), html.escape(json.dumps(v)), notes.get(k, ""))
        for k, v in info["scope"].items())
    item = link(request, "read_item", item_id=5)
    return HTMLResponse(PAGE.format(
        server=html.escape(info["server"]), pid=info["pid"], ppid=info["ppid"],
        state=html.escape(json.dumps(info["lifespan_state"])),
        scope_rows=scope_rows, header_rows=rows(info["headers"]),
        host=html.escape(request.headers.get("host", "localhost:8080")),
        events=html.escape(link(request, "events")),
        ws=html.escape(s.get("root_path", "") + "/ws"),
        root=json.dumps(s.get("root_path", "")).replace("<", "\\u003c"),
        item=html.escape(item), item_q=html.escape(item + "?q=hello"),
        item_bad=html.escape(link(request, "read_item", item_id="abc")),
        openapi=html.escape(s.get("root_path", "") + app.openapi_url)))


@app.get("/events")
async def events(n: int = 5):
    n = max(1, min(30, n))
    pid = os.getpid()

    async def generate():
        for i in range(1, n + 1):
            if i > 1:
                await asyncio.sleep(1)
            yield "id: %d\ndata: tick %d of %d at %s from pid %d\n\n" % (
                i, i, n, time.strftime("%H:%M:%S"), pid)
        yield "event: end\ndata: that was all\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="echo" if "echo" in offered else None)
    try:
        await websocket.send_text("connected to %s, worker pid %d: every message comes back"
                                  % (server_name(), os.getpid()))
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except (WebSocketDisconnect, OSError):
        pass   # the client went away while we sent (gatehouse.asgi: ClientDisconnected)


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request, q: Optional[str] = None):
    return {"item_id": item_id, "q": q, "pid": os.getpid(),
            "url": request.scope.get("root_path", "") + request.scope["path"]}


@app.get("/healthz")
async def healthz():
    return PlainTextResponse("ok\n")
