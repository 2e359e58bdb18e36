# SPDX-License-Identifier: MIT
"""The WSGI demo behind `make run` (tools/demo.sh): one plain Flask app, served twice over the
uwsgi protocol, the file unchanged:

  /wsgi/    by gatehouse.wsgi  (python3 -m gatehouse.wsgi demo_wsgi:app --bind unix:...)
  /legacy/  by Debian's uWSGI  (uwsgi --plugin python3 --wsgi-file demo_wsgi.py --callable app)

The gateway strips the prefix and sends it as SCRIPT_NAME, so the app's own links stay right.

  /         which server and worker answered, SCRIPT_NAME, PATH_INFO and the X-Request-Start
            the gateway stamped (?format=json for JSON)
  /events   Server-Sent Events: ?n= events (default 5, at most 30), one per second
  /healthz  "ok"
"""

import html
import json
import os
import time

from flask import Flask, Response, request, url_for

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
                       **fields)


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


@app.route("/healthz")
def healthz():
    return Response("ok\n", mimetype="text/plain")
