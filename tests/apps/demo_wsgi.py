# SPDX-License-Identifier: MIT
"""The WSGI demo behind `make run` (tools/demo.sh): one plain Flask app, served twice over the
uwsgi protocol, the file unchanged:

  /wsgi/    by gatehouse.wsgi  (python3 -m gatehouse.wsgi demo_wsgi:app --bind unix:...)
  /legacy/  by Debian's uWSGI  (uwsgi --plugin python3 --wsgi-file demo_wsgi.py --callable app)

The gateway strips the prefix and sends it as SCRIPT_NAME, so the app's own links stay right.

  /         which server and worker answered, SCRIPT_NAME, PATH_INFO and the X-Request-Start
            the gateway stamped (?format=json for JSON)
  /events   Server-Sent Events: ?n= events (default 5, at most 30), one per second
  /ws       a chat over a WebSocket, with no gevent and no thread: the gateway terminates the
            WebSocket and POSTs its events to this plain sync route (WebSocket-over-HTTP, see
            adapters/uwsgi/WEBSOCKET.md), so no worker is held between messages. Messages live
            in a sqlite3 file (the workers are separate processes), each connection's place in
            them in a Meta-Seen field the gateway carries from one POST to the next.
  /healthz  "ok"
"""

import html
import json
import os
import re
import sqlite3
import sys
import tempfile
import time

from flask import Flask, Response, request, url_for

try:
    from gatehouse import wsevents
except ImportError:   # under Debian's uWSGI, which is not given adapters/python
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                 "adapters", "python"))
    from gatehouse import wsevents
from gatehouse.wsevents import Event

app = Flask(__name__)


def server_name(environ):
    if "uwsgi.version" in environ:
        return "uWSGI " + environ["uwsgi.version"].decode()
    if "gatehouse.disconnected" in environ:
        return "gatehouse.wsgi"
    return environ.get("SERVER_SOFTWARE", "an unknown WSGI server")


def request_start_age_ms(value):
    """X-Request-Start is "t=<microseconds since the epoch>": how long ago was that?"""
    try:
        return round(time.time() * 1000 - int(value.removeprefix("t=")) / 1000, 1)
    except ValueError:
        return None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gatehouse: {server}</title>
<style>body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; }}
code, pre {{ font: 14px ui-monospace, monospace; background: #f3f3f3; }}
td {{ padding: .2rem .6rem; }}</style></head>
<body>
<p><a href="/">&larr; gatehouse demo</a></p>
<h1>A plain Flask app under {server}</h1>
<table>
<tr><td>worker pid</td><td><code>{pid}</code> (reload the page: another worker may answer)</td></tr>
<tr><td>SCRIPT_NAME</td><td><code>{script_name}</code> (the prefix the route stripped)</td></tr>
<tr><td>PATH_INFO</td><td><code>{path_info}</code></td></tr>
<tr><td>X-Request-Start</td><td><code>{start}</code> (stamped by the gateway
 {age} ms ago: the time spent waiting for a free worker shows here)</td></tr>
</table>
<h2>Server-Sent Events</h2>
<p><a href="{events}">{events}</a> sends a few events, one per second; the gateway streams
them instead of buffering. Try <code>curl -N {host}{events}</code>, or
<button onclick="watch()">watch them here</button></p>
<pre id="log"></pre>
<h2>A chat over a WebSocket</h2>
<p><code>{ws}</code> is a WebSocket chat served by this sync app without gevent: the gateway
holds the WebSocket and POSTs each batch of its events to the app, plus an empty POST every
second so the app can push what others said. Try it on the
<a href="/#live">demo's index page</a> or with
<code>python3 -m websockets ws://{host}{ws}</code>.</p>
<script>
function watch() {{
  const log = document.getElementById("log"), es = new EventSource("{events}");
  es.onmessage = (e) => {{ log.textContent += e.data + "\\n"; }};
  es.addEventListener("end", () => es.close());
}}
</script>
</body></html>
"""


@app.route("/")
def index():
    e = request.environ
    start = e.get("HTTP_X_REQUEST_START", "")
    info = {
        "server": server_name(e),
        "pid": os.getpid(),
        "script_name": e.get("SCRIPT_NAME", ""),
        "path_info": e.get("PATH_INFO", ""),
        "x_request_start": start,
        "x_request_start_age_ms": request_start_age_ms(start),
    }
    if request.args.get("format") == "json":
        return Response(json.dumps(info, indent=2) + "\n", mimetype="application/json")
    fields = {k: html.escape(str(v)) for k, v in info.items()}
    return PAGE.format(start=fields["x_request_start"] or "(none)",
                       age=fields["x_request_start_age_ms"],
                       host=html.escape(request.host), events=html.escape(url_for("events")),
                       ws=html.escape(url_for("ws")), **fields)


@app.route("/events")
def events():
    n = max(1, min(30, request.args.get("n", 5, type=int)))
    pid = os.getpid()

    def generate():
        for i in range(1, n + 1):
            if i > 1:
                time.sleep(1)
            yield "id: %d\ndata: tick %d of %d at %s from pid %d\n\n" % (
                i, i, n, time.strftime("%H:%M:%S"), pid)
        yield "event: end\ndata: that was all\n\n"

    return Response(generate(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache"})


# ---- /ws: a chat through WebSocket-over-HTTP ----------------------------------------------
#
# The gateway turns a WebSocket to /ws into short POSTs of application/websocket-events: OPEN
# first, then the client's messages as they come, and an empty POST every Keep-Alive-Interval
# seconds, each answered at once. Between POSTs no worker is held, and any worker may answer
# the next one: what a connection must remember travels in Meta-* fields (set by the answer's
# Set-Meta-*), what everyone shares is in sqlite3.

CHAT_DB = os.environ.get("DEMO_CHAT_DB") or os.path.join(
    tempfile.gettempdir(), "gatehouse-chat-%d.sqlite3" % os.getuid())
CHAT_KEEP = 200            # messages kept
CHAT_MAX_CHARS = 1000      # longer messages are cut
CHAT_HISTORY = 10          # messages a newcomer is shown
CHAT_KEEPALIVE = 1         # seconds between the gateway's POSTs when nobody speaks
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,20}\Z")

NOT_A_PAGE = """{path} is a WebSocket (a small chat), not a page. Connect with a WebSocket client,
e.g. python3 -m websockets ws://HOST{path}; the gateway turns the WebSocket into POSTs of
application/websocket-events to this app.
"""


def chat_db():
    """A connection to the chat's database, created on first use. One per request: the
    workers are processes, and sqlite3 does the locking between them."""
    db = sqlite3.connect(CHAT_DB, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, "
               "at REAL NOT NULL, who TEXT NOT NULL, text TEXT NOT NULL)")
    return db


def chat_store(db, who, text):
    """Stores a message (who "" for a notice) and keeps only the last CHAT_KEEP."""
    with db:
        db.execute("INSERT INTO messages (at, who, text) VALUES (?, ?, ?)",
                   (time.time(), who, text[:CHAT_MAX_CHARS]))
        db.execute("DELETE FROM messages WHERE id <= (SELECT MAX(id) FROM messages) - ?",
                   (CHAT_KEEP,))


def chat_last_id(db, back=0):
    """The id just before the last |back| messages (the newest id when |back| is 0)."""
    if back == 0:
        return db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]
    row = db.execute("SELECT MIN(id) FROM (SELECT id FROM messages ORDER BY id DESC "
                     "LIMIT ?)", (back,)).fetchone()
    return row[0] - 1 if row[0] is not None else 0


def chat_lines(db, seen):
    """[(id, line)] of the messages after id |seen|."""
    rows = db.execute("SELECT id, at, who, text FROM messages WHERE id > ? ORDER BY id "
                      "LIMIT ?", (seen, CHAT_KEEP)).fetchall()
    return [(i, "[%s] %s" % (time.strftime("%H:%M:%S", time.localtime(at)),
                             "%s: %s" % (who, text) if who else "* " + text))
            for i, at, who, text in rows]


def chat_name(environ):
    """?name= of the WebSocket's URL (every POST carries it), else one from Connection-Id."""
    name = request.args.get("name", "")
    if _NAME_RE.match(name):
        return name
    return "guest-" + (re.sub(r"[^0-9A-Za-z]", "", environ.get("HTTP_CONNECTION_ID", ""))[:4]
                       or "?")


@app.route("/ws", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def ws():
    e = request.environ
    if request.method != "POST" or not wsevents.is_events(e):
        return Response(NOT_A_PAGE.format(path=e.get("SCRIPT_NAME", "") + "/ws"), status=400,
                        mimetype="text/plain")
    try:
        events = wsevents.decode(request.get_data())
    except ValueError as err:
        return Response("malformed events: %s\n" % err, status=400, mimetype="text/plain")
    who = chat_name(e)
    out, headers = [], {}
    try:
        old_seen = int(e.get("HTTP_META_SEEN", ""))
    except ValueError:
        old_seen = None
    closing = False
    db = chat_db()
    try:
        seen = old_seen
        if seen is None and not any(ev.type == "OPEN" for ev in events):
            seen = chat_last_id(db)   # no place bound: from now on
        for ev in events:
            if ev.type == "OPEN":
                out.append(Event("OPEN"))
                headers["Keep-Alive-Interval"] = str(CHAT_KEEPALIVE)
                out.append(Event("TEXT", (
                    "connected to a sync Flask app under %s (this answer: worker pid %d) as %s."
                    " Each message is a short POST; no worker waits for you between them."
                    % (server_name(e), os.getpid(), who)).encode()))
                seen = chat_last_id(db, CHAT_HISTORY)   # a newcomer sees the last few
                chat_store(db, "", who + " joined")
            elif ev.type == "TEXT":
                text = ev.content.decode("utf-8", "replace").strip()
                if text:
                    chat_store(db, who, text)
            elif ev.type == "BINARY":
                out.append(Event("TEXT", b"(binary messages are not shown in this chat)"))
            elif ev.type == "PING":
                out.append(Event("PONG"))
            elif ev.type == "CLOSE":
                code, _ = wsevents.parse_close(ev.content)
                chat_store(db, "", who + " left")
                out.append(Event("CLOSE", wsevents.close_content(code)
                                 if 1000 <= code <= 4999 else b""))
                closing = True
                break
            elif ev.type == "DISCONNECT":
                chat_store(db, "", who + " left")
                closing = True
                break
        if not closing and seen is not None:
            lines = chat_lines(db, seen)
            out.extend(Event("TEXT", line.encode()) for _, line in lines)
            if lines:
                seen = lines[-1][0]
            if seen != old_seen:
                headers["Set-Meta-Seen"] = str(seen)
    finally:
        db.close()
    return Response(wsevents.encode(out), mimetype=wsevents.CONTENT_TYPE, headers=headers)


@app.route("/healthz")
def healthz():
    return Response("ok\n", mimetype="text/plain")
