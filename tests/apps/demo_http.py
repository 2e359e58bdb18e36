# SPDX-License-Identifier: MIT
"""The demo app behind `make run` (tools/demo.sh): a small Flask app under gunicorn, reached
through gatehouse's http upstream (keep-alive pools).

    /usr/bin/python3 -m gunicorn -w 2 -k gthread -b 127.0.0.1:8001 --chdir tests/apps demo_http:app

The /wsgi/ and /legacy/ demos are tests/apps/demo_wsgi.py. This app answers the same whether
or not the gateway strips the /http prefix:
  /  /http/  /demo          the page that explains gatehouse and links the demos
  /http/headers  /headers   the request as the app received it (?format=json for JSON)
  /http/stream   /stream    a streamed (chunked) response, one line every interval
  /healthz                  "ok"
"""

import html
import json
import os
import socket
import time

from flask import Flask, Response, request

app = Flask(__name__)

# What the gateway adds or rewrites on its way to the app.
FORWARDING = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
              "x-request-id")

# The demo layout (DESIGN.md, "The demo"). A path is live once its capability has landed.
DEMOS = [
    ("/http/", "A plain HTTP service: this Flask app under gunicorn, reached through "
     "keep-alive connection pools.", True),
    ("/wsgi/", "A Flask app under gatehouse.wsgi, over the uwsgi protocol: the gateway "
     "buffers requests and responses, so a slow client never holds a worker.", True),
    ("/wsgi/events", "Server-Sent Events from that Flask app, streamed through unbuffered.",
     True),
    ("/wsgi/ws", "A chat over a WebSocket served by that sync Flask app, without gevent, "
     "through WebSocket-over-HTTP: try it below.", True),
    ("/legacy/", "The same Flask app under Debian's uWSGI, unchanged.", True),
    ("/asgi/", "A FastAPI app under gatehouse.asgi, over the multiplexed message protocol: "
     "which worker answered, the ASGI scope it received (root_path /asgi) and its lifespan "
     "state.", True),
    ("/asgi/events", "Server-Sent Events from that FastAPI app's async generator, streamed "
     "through event by event.", True),
    ("/asgi/ws", "A WebSocket echo from FastAPI: try it below.", True),
]

# A WebSocket is no page to open: its row links the live box further down instead.
LINKS = {"/asgi/ws": "#live", "/wsgi/ws": "#live"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
 body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto;
        padding: 0 1rem; color: #222; }}
 code, pre {{ font: 14px ui-monospace, monospace; background: #f3f3f3; padding: 0 .2rem; }}
 table {{ border-collapse: collapse; width: 100%; }}
 td, th {{ border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: left;
          vertical-align: top; }}
 tr.fwd td {{ background: #eef6ff; }}
 .soon {{ color: #888; }}
 .tag {{ font-size: 12px; border: 1px solid #aaa; border-radius: 3px; padding: 0 .3rem; }}
 .box {{ border: 1px solid #ddd; padding: .5rem; margin: .5rem 0; }}
 .box pre {{ min-height: 3rem; max-height: 12rem; overflow: auto; margin: .5rem 0 0; }}
</style>
</head>
<body>
{body}
<hr>
<p><small>Served by the demo app (pid {pid} on {host}) &middot;
request id <code>{rid}</code></small></p>
</body>
</html>
"""


def page(title, body):
    return Response(PAGE.format(title=html.escape(title), body=body, pid=os.getpid(),
                                host=html.escape(socket.gethostname()),
                                rid=html.escape(request.headers.get("X-Request-Id", "-"))),
                    mimetype="text/html")


@app.route("/")
@app.route("/http/")
@app.route("/demo")
def index():
    rows = []
    for path, what, live in DEMOS:
        if live:
            rows.append('<tr><td><a href="%s"><code>%s</code></a></td><td>%s</td></tr>'
                        % (LINKS.get(path, path), path, html.escape(what)))
        else:
            rows.append('<tr class="soon"><td><code>%s</code></td><td>%s '
                        '<span class="tag">coming with a later capability</span></td></tr>'
                        % (path, html.escape(what)))
    body = """
<h1>gatehouse</h1>
<p><b>gatehouse</b> is an asynchronous front proxy written in C. It terminates clients
(HTTP/1.1 today; HTTP/2 and TLS later), handles WebSocket and Server-Sent Events itself, and
forwards each request to the kind of backend that fits it: plain HTTP/1.1 services over pooled
keep-alive connections, blocking WSGI apps over the uwsgi protocol with the gateway doing the
buffering and queueing, and async ASGI apps over a multiplexed, flow-controlled protocol.</p>

<p>Everything on <code>http://localhost:8080</code> goes through the gateway. Its access log
(one JSON line per request) scrolls in the terminal that runs <code>make run</code>.</p>

<h2>Demos</h2>
<table>
<tr><th>path</th><th>what answers</th></tr>
{rows}
</table>

<h2>The HTTP demo</h2>
<ul>
<li><a href="/http/headers">/http/headers</a> &mdash; the request as this app received it:
 the path after routing (and prefix stripping, if the route strips), and the
 <code>X-Forwarded-*</code>, <code>Forwarded</code> and <code>X-Request-Id</code> fields the
 gateway set. Also as <a href="/http/headers?format=json">JSON</a>.</li>
<li><a href="/http/stream">/http/stream</a> &mdash; a response streamed line by line
 (chunked): the gateway forwards each piece as it comes instead of buffering the body.
 Try <code>curl -N localhost:8080/http/stream</code>.</li>
</ul>

<h2>The WSGI demos</h2>
<p>One plain Flask app (<code>tests/apps/demo_wsgi.py</code>), served twice over the uwsgi
protocol on unix sockets: by <code>gatehouse.wsgi</code>, gatehouse's own pre-forked server,
and by Debian's uWSGI, the way apps are deployed today. Both routes strip their prefix, which
the app receives as <code>SCRIPT_NAME</code>.</p>
<ul>
<li><a href="/wsgi/">/wsgi/</a> and <a href="/legacy/">/legacy/</a> &mdash; which server and
 worker answered, <code>SCRIPT_NAME</code> and <code>PATH_INFO</code>, and the
 <code>X-Request-Start</code> time the gateway stamped on the request.</li>
<li><a href="/wsgi/events">/wsgi/events</a> &mdash; Server-Sent Events, one per second: the
 gateway buffers ordinary responses but streams <code>text/event-stream</code> as it comes.
 Try <code>curl -N localhost:8080/wsgi/events</code>.</li>
<li><a href="#live">/wsgi/ws</a> &mdash; a chat over a WebSocket, served by the same sync app
 without gevent: the gateway carries the WebSocket as short POSTs of its events
 (WebSocket-over-HTTP), so no worker is held between messages. Try it below.</li>
</ul>

<h2 id="live">WebSocket and Server-Sent Events</h2>
<p>The gateway does the WebSocket handshake and framing itself and hands the FastAPI app
one <code>websocket.receive</code> event per whole message; it streams
<code>text/event-stream</code> responses event by event. The first two boxes below talk to
the <a href="/asgi/">/asgi/</a> app live, through the gateway; the chat talks to the blocking
Flask app of <a href="/wsgi/">/wsgi/</a>.</p>
<div class="box">
<b>WebSocket echo</b> <code>/asgi/ws</code> &mdash; the app greets you with its worker's pid,
then sends back every message as it came.<br>
<input id="ws-msg" value="hello" size="30"> <button id="ws-send">send</button>
<pre id="ws-log"></pre>
</div>
<div class="box">
<b>Server-Sent Events</b> <code>/asgi/events</code> &mdash; five events, one per second, then
an <code>end</code> event, after which the page stops listening (an
<code>EventSource</code> would otherwise reconnect).<br>
<button id="sse-start">listen</button>
<pre id="sse-log"></pre>
</div>
<div class="box">
<b>Chat</b> <code>/wsgi/ws</code> &mdash; a WebSocket served by a sync Flask app under
<code>gatehouse.wsgi</code>, without gevent or threads: the gateway holds the WebSocket and
POSTs its events to the app (WebSocket-over-HTTP), plus an empty POST every second so the app
can pass on what others said. No worker waits between messages; they are kept in sqlite.
Open this page in two windows and talk.<br>
<input id="chat-msg" value="hi there" size="30"> <button id="chat-send">send</button>
<button id="chat-leave">leave</button>
<pre id="chat-log"></pre>
</div>

<h2>Things to try</h2>
<pre>
curl -i localhost:8080/http/headers
curl -N localhost:8080/http/stream?n=5&amp;interval=1
curl -N localhost:8080/wsgi/events?n=3
curl -N localhost:8080/asgi/events?n=3
python3 -m websockets ws://localhost:8080/asgi/ws   # an interactive WebSocket client
python3 -m websockets ws://localhost:8080/wsgi/ws   # the chat, from a terminal
curl localhost:8080/legacy/?format=json
curl -i localhost:8080/no/such/route     # 404 from the gateway itself, if no route matches
curl -i localhost:8080/http/../etc       # 400: dot segments are refused (use --path-as-is)
</pre>
""".format(rows="\n".join(rows)) + LIVE_SCRIPT
    return page("gatehouse demo", body)


# The live boxes of the index page. Plain JavaScript, no library: the page works offline.
LIVE_SCRIPT = """
<script>
(function () {
  const wsLog = document.getElementById("ws-log"), sseLog = document.getElementById("sse-log");
  const show = (log, line) => { log.textContent += line + "\\n"; log.scrollTop = 1e9; };
  let ws = null;
  document.getElementById("ws-send").onclick = () => {
    const text = document.getElementById("ws-msg").value;
    const send = () => { ws.send(text); show(wsLog, "> " + text); };
    if (ws === null || ws.readyState > WebSocket.OPEN) {
      ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host
                         + "/asgi/ws", ["echo"]);
      ws.onopen = () => show(wsLog, "open (subprotocol " + (ws.protocol || "none") + ")");
      ws.onmessage = (e) => show(wsLog, "< " + e.data);
      ws.onclose = (e) => show(wsLog, "closed (" + e.code + ")");
    }
    if (ws.readyState === WebSocket.OPEN) send();
    else ws.addEventListener("open", send, {once: true});
  };
  const chatLog = document.getElementById("chat-log");
  const chatMsg = document.getElementById("chat-msg");
  let chat = null;
  const chatSend = () => {
    const text = chatMsg.value;
    if (chat === null || chat.readyState > WebSocket.OPEN) {
      chat = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host
                           + "/wsgi/ws");
      chat.onmessage = (e) => show(chatLog, e.data);
      chat.onclose = (e) => show(chatLog, "closed (" + e.code + ")");
    }
    if (text === "") return;
    chatMsg.value = "";
    if (chat.readyState === WebSocket.OPEN) chat.send(text);
    else chat.addEventListener("open", () => chat.send(text), {once: true});
  };
  document.getElementById("chat-send").onclick = chatSend;
  chatMsg.onkeydown = (e) => { if (e.key === "Enter") chatSend(); };
  document.getElementById("chat-leave").onclick = () => { if (chat !== null) chat.close(1000); };
  let es = null;
  document.getElementById("sse-start").onclick = () => {
    if (es !== null) es.close();
    es = new EventSource("/asgi/events");
    es.onmessage = (e) => show(sseLog, e.data);
    es.addEventListener("end", (e) => { show(sseLog, "end: " + e.data); es.close(); });
    es.onerror = () => { show(sseLog, "error: the stream broke off"); es.close(); };
  };
})();
</script>
"""


@app.route("/http/headers")
@app.route("/headers")
def headers():
    info = {
        "method": request.method,
        "path_received": request.full_path if request.query_string else request.path,
        "remote_addr": request.remote_addr,
        "headers": [[k, v] for k, v in request.headers.items()],
    }
    if request.args.get("format") == "json" or \
            request.accept_mimetypes.best == "application/json":
        return Response(json.dumps(info, indent=2) + "\n", mimetype="application/json")
    rows = "\n".join(
        '<tr%s><td><code>%s</code></td><td><code>%s</code></td></tr>'
        % (' class="fwd"' if k.lower() in FORWARDING else "", html.escape(k), html.escape(v))
        for k, v in request.headers.items())
    body = """
<p><a href="/">&larr; gatehouse demo</a></p>
<h1>Your request, as the app saw it</h1>
<p><code>{method} {path}</code> from <code>{remote}</code> (the gateway's address: the
app's peer is the gateway, the client is in <code>X-Forwarded-For</code>).</p>
<p>If you asked for <code>/http/headers</code> and the path above is <code>/headers</code>,
the route stripped its prefix.</p>
<table>
<tr><th>field</th><th>value</th></tr>
{rows}
</table>
<p>Highlighted: fields the gateway set (<code>X-Forwarded-For</code>,
<code>-Proto</code>, <code>-Host</code>, <code>Forwarded</code>,
<code>X-Request-Id</code>). Hop-by-hop fields such as <code>Connection</code> or
<code>Keep-Alive</code> that your client sent were removed.</p>
""".format(method=html.escape(request.method), path=html.escape(info["path_received"]),
           remote=html.escape(str(request.remote_addr)), rows=rows)
    return page("request headers", body)


def _bounded(name, default, lo, hi, conv):
    try:
        v = conv(request.args.get(name, default))
    except (TypeError, ValueError):
        v = default
    return max(lo, min(hi, v))


@app.route("/http/stream")
@app.route("/stream")
def stream():
    n = _bounded("n", 10, 1, 100, int)
    interval = _bounded("interval", 0.5, 0.0, 2.0, float)

    def generate():
        yield "streaming %d lines, one every %.1f s\n" % (n, interval)
        for i in range(1, n + 1):
            time.sleep(interval)
            yield "line %d of %d at %s\n" % (i, n, time.strftime("%H:%M:%S"))
        yield "done\n"

    return Response(generate(), mimetype="text/plain")


@app.route("/healthz")
def healthz():
    return Response("ok\n", mimetype="text/plain")
