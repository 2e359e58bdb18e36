# SPDX-License-Identifier: MIT
"""The demo behind `make run`: tools/demo.sh with its own ports and sockets serves every demo
path of DESIGN.md that has landed, and SIGTERM to the script stops every process it started.

The tests share one demo (a module fixture) and run in file order: the last one stops it.
Every wait is bounded; every process is stopped by its PID."""

import asyncio
import json
import os
import re
import signal
import subprocess
import time

import pytest

import gw
from gw import Conn, free_port, wait_until

DEMO_SH = gw.REPO / "tools" / "demo.sh"
UWSGI = "/usr/bin/uwsgi"
BIN = os.path.abspath(str(gw.GATEHOUSE_BIN))


# ----------------------------------------------------------------------------------------
# Processes, from /proc
# ----------------------------------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid, starttime) of |pid|, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return rest[0], int(rest[1]), int(rest[19])


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def descendants(root):
    """{pid: (starttime, argv)} of every process under |root| (not |root| itself)."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                children.setdefault(st[1], []).append((int(name), st[2]))
    out = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in out:
                out[pid] = (start, cmdline(pid))
                todo.append(pid)
    return out


def running(pid, start):
    """True while the process |pid| that started at |start| runs (a zombie does not count)."""
    st = proc_stat(pid)
    return st is not None and st[2] == start and st[0] != "Z"


def kind(argv):
    """Which of the demo's servers |argv| is: gateway, gunicorn, gatehouse.wsgi, uwsgi,
    gatehouse.asgi."""
    if not argv:
        return None
    if argv[0] == BIN:
        return "gateway"
    if argv[0] == UWSGI:
        return "uwsgi"
    if "gunicorn" in argv[:3]:
        return "gunicorn"
    if "gatehouse.wsgi" in argv[:3]:
        return "gatehouse.wsgi"
    if "gatehouse.asgi" in argv[:3]:
        return "gatehouse.asgi"
    return None


# ----------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------

class Demo:
    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self.admin_port = free_port()
        self.tmpdir = workdir / "tmp"   # TMPDIR: where demo.sh makes its runtime directory
        self.tmpdir.mkdir()
        self.wsgi_sock = workdir / "wsgi.sock"
        self.asgi_sock = workdir / "asgi.sock"
        self.legacy_port = free_port()
        self.env = dict(
            os.environ, PYTHON=gw.PYTHON, TMPDIR=str(self.tmpdir),
            GATEHOUSE_LISTEN="127.0.0.1:%d" % self.port,
            GATEHOUSE_ADMIN="127.0.0.1:%d" % self.admin_port,
            DEMO_HTTP_UPSTREAM="127.0.0.1:%d" % free_port(),
            DEMO_WSGI_UPSTREAM="unix:%s" % self.wsgi_sock,
            DEMO_LEGACY_UPSTREAM="127.0.0.1:%d" % self.legacy_port,
            DEMO_ASGI_UPSTREAM="unix:%s" % self.asgi_sock)
        for k in ("GATEHOUSE_CONFIG", "UWSGI"):
            self.env.pop(k, None)
        self.out = workdir / "demo.out"
        self.err = workdir / "demo.err"
        self.proc = None
        self.seen = {}   # every descendant ever observed: pid -> (starttime, argv)

    def start(self):
        if not os.path.exists(BIN):
            raise AssertionError("gateway binary %s does not exist (set GATEHOUSE_BIN or run "
                                 "make)" % BIN)
        with open(self.out, "wb") as fo, open(self.err, "wb") as fe:
            self.proc = subprocess.Popen(["/bin/sh", str(DEMO_SH), BIN], cwd=str(gw.REPO),
                                         env=self.env, stdin=subprocess.DEVNULL, stdout=fo,
                                         stderr=fe)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("demo.sh exited with %s at start"
                                     % self.proc.returncode)
            try:
                return gw.get(self.port, "/healthz", timeout=2).status == 200
            except (OSError, gw.ProtocolError):
                return False
        try:
            wait_until(answers, timeout=60, interval=0.2, what="the demo's gateway")
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.stderr()))
        return self

    def stderr(self):
        return self.err.read_text(errors="replace")[-4000:]

    def snapshot(self):
        """The demo's descendants now, by kind: {kind: [(pid, start, argv)]} of the direct
        children, and every descendant under "all"."""
        procs = descendants(self.proc.pid)
        self.seen.update(procs)
        out = {"all": procs}
        for pid, (start, argv) in procs.items():
            st = proc_stat(pid)
            if st is not None and st[1] == self.proc.pid:
                out.setdefault(kind(argv), []).append((pid, start, argv))
        return out

    def master(self, what):
        masters = self.snapshot().get(what, [])
        assert len(masters) == 1, "demo.sh runs %d %s processes" % (len(masters), what)
        return masters[0][0]

    def stop(self):
        """Last resort (fixture teardown): demo.sh by SIGTERM, then anything left by SIGKILL,
        each by its PID."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.snapshot()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid, (start, _) in self.seen.items():
            if running(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("demo"))
    try:
        yield d.start()
    finally:
        d.stop()


def get(demo, target):
    r = gw.get(demo.port, target, timeout=10)
    assert r.status == 200, "%s: %d %r\n%s" % (target, r.status, r.body[:500], demo.stderr())
    return r


def get_json(demo, target):
    r = get(demo, target)
    assert r.header("Content-Type") == "application/json", r.headers
    return json.loads(r.body)


# ----------------------------------------------------------------------------------------
# The paths
# ----------------------------------------------------------------------------------------

def test_index_links_every_demo(demo):
    r = get(demo, "/")
    assert r.header("Content-Type").startswith("text/html")
    for path in ("/http/", "/wsgi/", "/wsgi/events", "/legacy/", "/asgi/", "/asgi/events"):
        assert ('href="%s"' % path).encode() in r.body, path
    # The live boxes: a WebSocket to /asgi/ws, an EventSource on /asgi/events and the chat,
    # a WebSocket to /wsgi/ws.
    assert b'+ "/asgi/ws"' in r.body and b'new EventSource("/asgi/events")' in r.body
    assert b'+ "/wsgi/ws"' in r.body and b'id="chat-log"' in r.body
    # A WebSocket is no page: its row links the live box, not the path.
    for path in (b"/asgi/ws", b"/wsgi/ws"):
        assert b'<a href="#live"><code>%s</code></a>' % path in r.body, path
        assert b'href="%s"' % path not in r.body, path
    # Every demo path has landed: none is listed as coming.
    assert b"coming with a later capability" not in r.body


def test_http_is_gunicorn_with_the_prefix_stripped(demo):
    assert b"<h1>gatehouse</h1>" in get(demo, "/http/").body
    info = get_json(demo, "/http/headers?format=json")
    assert info["path_received"] == "/headers?format=json"
    assert proc_stat(demo.master("gunicorn")) is not None


def check_wsgi_page(demo, prefix, server, master_kind):
    info = get_json(demo, prefix + "/?format=json")
    assert info["server"].startswith(server), info
    assert info["script_name"] == prefix and info["path_info"] == "/", info
    assert re.fullmatch(r"t=\d{16}", info["x_request_start"]), info
    assert proc_stat(info["pid"])[1] == demo.master(master_kind), \
        "pid %d is not a worker of %s" % (info["pid"], master_kind)
    page = get(demo, prefix + "/").body.decode()
    assert "under %s" % server in page
    assert 'href="%s/events"' % prefix in page   # url_for() sees SCRIPT_NAME


def test_wsgi_is_gatehouse_wsgi(demo):
    check_wsgi_page(demo, "/wsgi", "gatehouse.wsgi", "gatehouse.wsgi")


def test_legacy_is_debian_uwsgi(demo):
    check_wsgi_page(demo, "/legacy", "uWSGI", "uwsgi")


def test_demo_listener_speaks_h2c_too(demo):
    """The demo listener has http2: prior_knowledge: curl's h2c reaches every kind of app."""
    for path in ("/http/", "/wsgi/", "/legacy/", "/asgi/"):
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                              "-w", "%{http_version} %{http_code}",
                              "http://127.0.0.1:%d%s" % (demo.port, path)],
                             capture_output=True, text=True, timeout=20).stdout
        assert out == "2 200", (path, out)


def check_events_arrive_one_by_one(demo, target, master_kind):
    pieces = []   # (arrival time, bytes) as the body comes in
    with Conn(demo.port, timeout=15) as c:
        t0 = time.monotonic()
        c.send(gw.build_request("GET", target, host="demo.test"))
        r = c.read_head()
        assert r.status == 200, r.raw_head
        assert r.header("Content-Type").startswith("text/event-stream"), r.headers
        c.read_body(r, sink=lambda b: pieces.append((time.monotonic() - t0, bytes(b))))
    body = b"".join(p for _, p in pieces).decode()
    events = [e for e in body.split("\n\n") if e]
    assert [e.splitlines()[0] for e in events] == ["id: 1", "id: 2", "id: 3", "event: end"], \
        body
    pid = int(re.search(r"from pid (\d+)", events[0]).group(1))
    assert proc_stat(pid)[1] == demo.master(master_kind)
    # The first event was whole long before the stream ended (they are a second apart).
    got, first = b"", None
    for t, p in pieces:
        got += p
        if first is None and b"\n\n" in got:
            first = t
    end = pieces[-1][0]
    assert end - first >= 1.5, "events did not arrive one by one: %r" % pieces


def test_wsgi_events_arrive_one_by_one(demo):
    check_events_arrive_one_by_one(demo, "/wsgi/events?n=3", "gatehouse.wsgi")


def test_asgi_is_gatehouse_asgi_with_the_prefix_as_root_path(demo):
    info = get_json(demo, "/asgi/?format=json")
    assert info["server"] == "gatehouse.asgi", info
    scope = info["scope"]
    assert scope["root_path"] == "/asgi", scope
    assert scope["path"] == "/" and scope["raw_path"] == "/", scope
    assert scope["query_string"] == "format=json", scope
    assert scope["type"] == "http" and scope["method"] == "GET", scope
    assert scope["http_version"] == "1.1" and scope["scheme"] == "http", scope
    assert scope["client"][0] == "127.0.0.1", scope
    headers = dict(info["headers"])
    assert headers["host"] == "app.test" and headers.get("x-request-id"), headers
    master = demo.master("gatehouse.asgi")
    assert proc_stat(info["pid"])[1] == master == info["ppid"], \
        "pid %d is not a worker of gatehouse.asgi" % info["pid"]
    # The worker's lifespan startup ran in that worker and its state reached the request.
    assert info["lifespan_state"]["started_by_pid"] == info["pid"], info
    page = get(demo, "/asgi/").body.decode()
    assert "A FastAPI app under gatehouse.asgi" in page
    # Links carry the root path.
    for target in ("/asgi/events", "/asgi/items/5", "/asgi/openapi.json"):
        assert 'href="%s' % target in page, target


def test_asgi_items_is_fastapi_routing(demo):
    item = get_json(demo, "/asgi/items/5")
    assert item["item_id"] == 5 and item["q"] is None, item
    assert item["url"] == "/asgi/items/5", item
    assert get_json(demo, "/asgi/items/7?q=hello")["q"] == "hello"
    r = gw.get(demo.port, "/asgi/items/abc", timeout=10)
    assert r.status == 422, (r.status, r.body[:300])
    schema = get_json(demo, "/asgi/openapi.json")
    assert "/items/{item_id}" in schema["paths"], schema["paths"]
    assert {"url": "/asgi"} in schema.get("servers", []), schema.get("servers")


def test_asgi_events_arrive_one_by_one(demo):
    check_events_arrive_one_by_one(demo, "/asgi/events?n=3", "gatehouse.asgi")


def test_asgi_ws_echoes_through_the_gateway(demo):
    import websockets   # Debian's python3-websockets (10.4)

    async def session():
        uri = "ws://127.0.0.1:%d/asgi/ws" % demo.port
        async with websockets.connect(uri, subprotocols=["echo"], open_timeout=10,
                                      close_timeout=5) as ws:
            greeting = await ws.recv()
            echoed = []
            for message in ("h\u00e9llo, gateway", b"\x00\xffbytes\x80"):
                await ws.send(message)
                echoed.append(await ws.recv())
        return ws.subprotocol, greeting, echoed, ws.close_code

    try:
        subprotocol, greeting, echoed, close_code = asyncio.run(
            asyncio.wait_for(session(), timeout=20))
    except Exception as e:
        raise AssertionError("WebSocket to /asgi/ws: %r\n%s" % (e, demo.stderr()))
    assert subprotocol == "echo", subprotocol
    assert isinstance(greeting, str) and "gatehouse.asgi" in greeting, greeting
    pid = int(re.search(r"pid (\d+)", greeting).group(1))
    assert proc_stat(pid)[1] == demo.master("gatehouse.asgi"), \
        "pid %d is not a worker of gatehouse.asgi" % pid
    assert echoed == ["h\u00e9llo, gateway", b"\x00\xffbytes\x80"], echoed
    assert close_code == 1000, close_code
    page = get(demo, "/asgi/").body.decode()
    assert "/asgi/ws</code>" in page and 'const ROOT = "/asgi";' in page


def test_wsgi_ws_is_a_chat_without_a_held_worker(demo):
    """/wsgi/ws: a WebSocket served by the sync Flask app of /wsgi/ through WebSocket-over-HTTP.
    What A says reaches B, who says nothing, through the gateway's keep-alive POSTs; with more
    WebSockets open than the app has workers, the app still answers plain requests."""
    import websockets   # Debian's python3-websockets (10.4)

    uri = "ws://127.0.0.1:%d/wsgi/ws" % demo.port
    token = "h\u00e9llo from A %d" % time.monotonic_ns()

    async def until(ws, needle, timeout):
        """The messages |ws| receives until one that contains |needle|, within |timeout|."""
        got = []
        async with asyncio.timeout(timeout):
            while not got or needle not in got[-1]:
                got.append(await ws.recv())
        return got

    def plain_get():
        t0 = time.monotonic()
        r = gw.get(demo.port, "/wsgi/?format=json", timeout=10)
        return r.status, time.monotonic() - t0

    async def session():
        conns = [await websockets.connect(uri + "?name=" + name, open_timeout=10,
                                          close_timeout=5) for name in ("A", "B", "C")]
        a, b, c = conns
        greetings = [await ws.recv() for ws in conns]
        # Each has seen itself join (the last of its first messages).
        for name, ws in zip("ABC", conns):
            await until(ws, "* %s joined" % name, 5)
        # Three WebSockets open, two workers: none is held, a page still comes at once.
        status, took = await asyncio.to_thread(plain_get)
        t0 = time.monotonic()
        await a.send(token)
        mine = await until(a, "A: " + token, 5)
        theirs = await until(b, "A: " + token, 5)
        b_took = time.monotonic() - t0
        await c.close()
        await b.close()
        await a.close(1000, "bye")
        return (greetings, status, took, mine, theirs, b_took,
                [ws.close_code for ws in conns])

    try:
        greetings, status, took, mine, theirs, b_took, codes = asyncio.run(
            asyncio.wait_for(session(), timeout=30))
    except Exception as e:
        raise AssertionError("WebSocket chat on /wsgi/ws: %r\n%s" % (e, demo.stderr()))
    for name, greeting in zip("ABC", greetings):
        assert isinstance(greeting, str) and "gatehouse.wsgi" in greeting, greeting
        assert "as %s." % name in greeting, greeting
        pid = int(re.search(r"pid (\d+)", greeting).group(1))
        assert proc_stat(pid)[1] == demo.master("gatehouse.wsgi"), \
            "pid %d is not a worker of gatehouse.wsgi" % pid
    assert status == 200 and took < 3, (status, took)
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] A: " + re.escape(token), mine[-1]), mine
    assert theirs[-1] == mine[-1], (theirs, mine)
    assert b_took < 5, b_took
    assert codes == [1000, 1000, 1000], codes

    # A new client sees the recent history, then the news: C's leave, whichever it is (the
    # app hears of it in a POST of its own, maybe after D's OPEN).
    async def history():
        async with websockets.connect(uri + "?name=D", open_timeout=10, close_timeout=5) as d:
            return await until(d, "* C left", 5)
    seen = asyncio.run(asyncio.wait_for(history(), timeout=15))
    assert any(line.endswith("A: " + token) for line in seen), seen
    assert any(line.endswith("* C left") for line in seen), seen

    # Not a WebSocket: a short explanation.
    r = gw.get(demo.port, "/wsgi/ws", timeout=10)
    assert r.status == 400 and b"is a WebSocket" in r.body, (r.status, r.body)
    assert r.header("Content-Type").startswith("text/plain"), r.headers


# ----------------------------------------------------------------------------------------
# Stopping (runs last)
# ----------------------------------------------------------------------------------------

def test_admin_listener_answers(demo):
    """make run opens the admin listener (127.0.0.1:9901 by default, GATEHOUSE_ADMIN here)."""
    assert gw.get(demo.port, "/http/").status == 200
    r = gw.get(demo.admin_port, "/healthz")
    assert (r.status, r.body) == (200, b"ok\n"), r
    assert gw.get(demo.admin_port, "/readyz").status == 200
    r = gw.get(demo.admin_port, "/metrics")
    assert r.status == 200 and b'gatehouse_requests_total{route="/http"' in r.body, r.body[:2000]


def test_sigterm_stops_every_process(demo):
    def all_up():
        s = demo.snapshot()
        workers = {k: sum(1 for _, (_, a) in s["all"].items() if kind(a) == k) - len(s.get(k, []))
                   for k in ("gunicorn", "gatehouse.wsgi", "uwsgi", "gatehouse.asgi")}
        ok = all(len(s.get(k, [])) == 1 for k in ("gateway", "gunicorn", "gatehouse.wsgi",
                                                  "uwsgi", "gatehouse.asgi")) \
            and min(workers.values()) >= 2
        return ok and s
    snap = wait_until(all_up, timeout=10, what="the demo's servers and their workers")
    procs = snap["all"]
    asgi_master = snap["gatehouse.asgi"][0][0]
    rundirs = list(demo.tmpdir.glob("gatehouse-demo.*"))
    assert len(rundirs) == 1, rundirs

    demo.proc.send_signal(signal.SIGTERM)
    try:
        rc = demo.proc.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError("demo.sh still runs 60s after SIGTERM:\n" + demo.stderr())
    assert rc == 143, "demo.sh exited with %s:\n%s" % (rc, demo.stderr())

    def left():
        return {pid: argv for pid, (start, argv) in procs.items() if running(pid, start)}
    try:
        wait_until(lambda: not left(), timeout=5, what="every process of the demo to exit")
    except AssertionError:
        raise AssertionError("still running after demo.sh exited: %r" % left())
    assert "killing it" not in demo.stderr(), demo.stderr()
    assert not rundirs[0].exists(), "demo.sh left its runtime directory %s" % rundirs[0]
    assert not demo.wsgi_sock.exists(), "gatehouse.wsgi left its socket"
    assert not demo.asgi_sock.exists(), "gatehouse.asgi left its socket"
    err = demo.err.read_text(errors="replace")
    assert "[gatehouse.asgi pid %d] stopped" % asgi_master in err, demo.stderr()
