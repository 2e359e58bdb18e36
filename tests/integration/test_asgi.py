# SPDX-License-Identifier: MIT
"""The asgi upstream driver against a real FastAPI app (Debian's python3-fastapi) served by
`python3 -m gatehouse.asgi`: routes, bodies both ways, streaming, disconnects, lifespan,
exceptions, an app killed and restarted, pings, timeouts and 1,000 slow streams.

Every process is stopped by its PID; every wait is bounded."""

import hashlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import gw
from gw import Conn, free_port, wait_until

REPO = gw.REPO
APPS = REPO / "tests" / "apps"
ADAPTERS = REPO / "adapters" / "python"
MIB = 1 << 20

sys.path.insert(0, str(ADAPTERS))
from gatehouse import asgi_protocol as P  # noqa: E402  (the app side's codec, to script a bad app)

def asgi_upstream(servers, **over):
    u = {
        "protocol": "asgi",
        "servers": list(servers),
        "connections": 2,
        "timeouts": {"connect": "2s", "first_byte": "20s", "read": "20s", "send": "20s"},
    }
    return gw.deep_merge(u, over)


class GhAsgi:
    """`python3 -m gatehouse.asgi APP --bind unix:PATH --workers N`, stopped by PID."""

    def __init__(self, workdir, app="fastapi_gw:app", workers=2, name="ghasgi", args=(),
                 sock=None, tcp=False):
        """Listens on a unix socket (|sock| or one in |workdir|), or on 127.0.0.1 with |tcp|."""
        self.sock = sock or str(workdir / ("%s.sock" % name))
        self.bind = "127.0.0.1:%d" % free_port() if tcp else "unix:" + self.sock
        self.state = workdir / ("%s.state" % name)
        self.state.mkdir(exist_ok=True)
        self.errpath = workdir / ("%s.err" % name)
        self.workers = workers
        env = dict(os.environ, PYTHONPATH="%s:%s" % (ADAPTERS, APPS), PYTHONUNBUFFERED="1",
                   GH_STATE_DIR=str(self.state))
        with open(self.errpath, "ab") as err:
            self.proc = subprocess.Popen(
                [gw.PYTHON, "-m", "gatehouse.asgi", app, "--bind", self.bind,
                 "--workers", str(workers)] + list(args),
                cwd=str(APPS), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        wait_until(lambda: self.log().count("worker booted") >= workers
                   or self.proc.poll() is not None, timeout=20, what="gatehouse.asgi booted")
        assert self.proc.poll() is None, self.log()

    def log(self):
        return self.errpath.read_text(errors="replace")

    @property
    def server(self):
        return self.bind

    def worker_pids(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self):
        """SIGKILL the master and its workers at once, as an OOM killer or a crash would."""
        pids = self.worker_pids()
        for pid in [self.proc.pid] + pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(5)
        for pid in pids:
            wait_until(lambda: not os.path.exists("/proc/%d/stat" % pid) or
                       open("/proc/%d/stat" % pid).read().split()[2] == "Z", timeout=5,
                       what="worker gone")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def apps(tmp_path):
    started = []

    def start(**kw):
        a = GhAsgi(tmp_path, **kw)
        started.append(a)
        return a
    yield start
    for a in started:
        a.stop()


@pytest.fixture
def app(apps):
    return apps()


def gateway_for(harness, servers, upstream=None, **over):
    return harness.gateway({"app": asgi_upstream(servers, **(upstream or {}))}, **over)


def get_json(port, target, **kw):
    r = gw.get(port, target, **kw)
    assert r.status == 200, r
    return r.json()


# ---- routes ---------------------------------------------------------------------------------

def test_json_routes_and_parameters(harness, app):
    g = gateway_for(harness, [app.server])
    assert get_json(g.port, "/items/42?q=hello") == {"item_id": 42, "q": "hello"}
    assert get_json(g.port, "/items/7") == {"item_id": 7, "q": None}
    r = gw.get(g.port, "/items/notanint")
    # ASGI has no reason phrase: the gateway writes RFC 9110's.
    assert r.status == 422 and r.reason == "Unprocessable Content" and b"item_id" in r.body
    assert gw.get(g.port, "/nothing/here").status == 404
    r = gw.get(g.port, "/teapot")
    assert r.status == 418 and r.json() == {"detail": "short and stout"}
    with Conn(g.port) as c:
        r = c.request("POST", "/json", body=b'{"a": 1, "b": [1, 2]}',
                      headers=[("Content-Type", "application/json")])
    assert r.status == 200, r
    assert r.json() == {"got": {"a": 1, "b": [1, 2]}, "size": 2}
    assert r.header("Content-Type") == "application/json"


def test_keep_alive_and_head(harness, app):
    g = gateway_for(harness, [app.server])
    with Conn(g.port) as c:
        for i in range(20):
            r = c.request("GET", "/items/%d" % i)
            assert r.status == 200 and r.json()["item_id"] == i
        c.send(gw.build_request("HEAD", "/items/3"))
        r = c.read_response(head_request=True)
        assert r.status in (200, 405) and r.body == b""
        r = c.request("GET", "/items/4")
        assert r.json()["item_id"] == 4


def test_access_log_names_the_server(harness, app):
    g = gateway_for(harness, [app.server])
    assert gw.get(g.port, "/items/1").status == 200
    e = g.access_for("/items/1")[0]
    assert e["status"] == 200 and e["upstream"] == "app"


# ---- bodies ---------------------------------------------------------------------------------

def test_upload_100mb_streams_to_the_app(harness, app):
    """100 MB go to the app as its credit allows; the gateway holds little of it at a time."""
    n = 100 * 1000 * 1000
    body = os.urandom(n)
    g = gateway_for(harness, [app.server], limits={"body_bytes": "200m"})
    base = g.rss_kb()
    sampler = gw.RssSampler(g.pid).start()
    with Conn(g.port, timeout=120) as c:
        r = c.request("POST", "/upload", body=body, timeout=120)
    sampler.stop()
    assert r.status == 200, r
    assert r.json() == {"size": n, "sha256": hashlib.sha256(body).hexdigest()}
    # Held whole it would be 100 MB (the margin is for a sanitizer build's quarantine).
    assert sampler.max_kb - base < 24 * 1024, (base, sampler.max_kb)


def test_chunked_upload(harness, app):
    pieces = [b"hello ", os.urandom(300000), b"", b"world"]
    data = b"".join(pieces)
    g = gateway_for(harness, [app.server])
    with Conn(g.port, timeout=30) as c:
        c.send(gw.build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")])
               + gw.chunked([p for p in pieces if p]))
        r = c.read_response(timeout=30)
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_large_response_is_whole(harness, app):
    g = gateway_for(harness, [app.server])
    with Conn(g.port, timeout=30) as c:
        r = c.request("GET", "/big?mib=8", timeout=30)
    assert r.status == 200 and r.header("Content-Length") == str(8 * MIB)
    assert hashlib.sha256(r.body).hexdigest() == gw.pattern_sha256(8 * MIB)


def test_streaming_response_arrives_piece_by_piece(harness, app):
    g = gateway_for(harness, [app.server])
    with Conn(g.port, timeout=10) as c:
        c.send(gw.build_request("GET", "/stream?n=5&delay=0.3"))
        r = c.read_head()
        assert r.status == 200 and r.header("Transfer-Encoding") == "chunked"
        arrivals = []
        r.body = c.read_body(r, sink=lambda b: arrivals.append((time.monotonic(), b)))
    lines = b"".join(b for _, b in arrivals).split(b"\n")
    assert lines[:5] == [b"%d:xxxxxxxxxx" % i for i in range(5)]
    # Five pieces 0.3 s apart: not buffered until the end.
    assert arrivals[-1][0] - arrivals[0][0] > 0.9, arrivals


def test_tcp_transport(harness, apps):
    a = apps(tcp=True)
    assert a.server.startswith("127.0.0.1:")
    g = gateway_for(harness, [a.server])
    assert get_json(g.port, "/items/8?q=tcp") == {"item_id": 8, "q": "tcp"}
    with Conn(g.port, timeout=30) as c:
        r = c.request("GET", "/big?mib=2", timeout=30)
    assert hashlib.sha256(r.body).hexdigest() == gw.pattern_sha256(2 * MIB)


def test_streams_spread_over_connections(harness, apps):
    """8 slow requests at once on one gateway thread with 4 connections to 2 app workers:
    the fewest-open rule puts 2 on each connection, so both workers serve some. (All on one
    connection would be one worker.)"""
    a = apps(workers=2)
    g = gateway_for(harness, [a.server], upstream={"connections": 4}, workers=1)
    get_json(g.port, "/items/1")
    pids = []

    def one():
        pids.append(get_json(g.port, "/pid?s=0.5", timeout=10)["pid"])
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(pids) == 8
    counts = sorted(pids.count(p) for p in set(pids))
    assert len(counts) == 2 and counts[0] >= 2, pids


# ---- the client going away ------------------------------------------------------------------

def test_client_disconnect_reaches_the_app(harness, app):
    g = gateway_for(harness, [app.server])
    c = Conn(g.port, timeout=10)
    c.send(gw.build_request("GET", "/watch/one"))
    r = c.read_head()
    assert r.status == 200
    c.close()
    wait_until(lambda: (app.state / "disconnected-one").exists()
               or (app.state / "cancelled-one").exists(), timeout=5,
               what="the app saw http.disconnect")
    # The connection and the gateway go on serving.
    assert get_json(g.port, "/items/1")["item_id"] == 1


# ---- lifespan and exceptions ----------------------------------------------------------------

def test_lifespan_startup_and_shutdown(harness, apps):
    a = apps(workers=1)
    g = gateway_for(harness, [a.server])
    j = get_json(g.port, "/lifespan")
    assert j["started"] == "started in %d" % j["pid"]
    a.stop()
    assert (a.state / ("shutdown-%d" % j["pid"])).read_text() == "done"


def test_exception_before_the_response_is_500(harness, app):
    g = gateway_for(harness, [app.server])
    r = gw.get(g.port, "/boom")
    assert r.status == 500
    assert get_json(g.port, "/items/2")["item_id"] == 2


def test_exception_mid_stream_cuts_the_response(harness, app):
    g = gateway_for(harness, [app.server])
    with Conn(g.port, timeout=10) as c:
        c.send(gw.build_request("GET", "/boom-mid"))
        r = c.read_head()
        assert r.status == 200
        with pytest.raises((gw.ProtocolError, ConnectionError, OSError)):
            c.read_body(r)
    wait_until(lambda: any(e.get("target") == "/boom-mid" for e in g.access_log()),
               what="access line")
    e = [e for e in g.access_log() if e.get("target") == "/boom-mid"][0]
    assert e["error"] == "upstream reset the stream"
    assert get_json(g.port, "/items/3")["item_id"] == 3


# ---- losing the app -------------------------------------------------------------------------

def test_app_killed_and_restarted(harness, apps, tmp_path):
    a = apps()
    g = gateway_for(harness, [a.server])
    assert get_json(g.port, "/items/1")["item_id"] == 1
    with Conn(g.port, timeout=10) as c:
        c.send(gw.build_request("GET", "/sleep?s=5"))
        time.sleep(0.3)
        a.kill()
        r = c.read_response()
    # In flight when its connection died: a 502 at once, not a wait for a timeout.
    assert r.status == 502, r
    t0 = time.monotonic()
    r = gw.get(g.port, "/items/2")
    assert r.status == 502 and time.monotonic() - t0 < 2
    assert g.alive()
    b = apps(sock=a.sock, name="again")
    # Reconnected on demand or by the backoff (at most 5 s).
    wait_until(lambda: gw.get(g.port, "/items/3").status == 200, timeout=8, interval=0.2,
               what="answers again")
    assert get_json(g.port, "/items/4")["item_id"] == 4
    assert b.proc.poll() is None
    assert "connection" in g.stderr_text() and "is back" in g.stderr_text()


def test_connection_lost_mid_response_cuts_it(harness, apps):
    a = apps(workers=1)
    g = gateway_for(harness, [a.server])
    with Conn(g.port, timeout=10) as c:
        c.send(gw.build_request("GET", "/watch/cut"))
        r = c.read_head()
        assert r.status == 200 and r.header("Transfer-Encoding") == "chunked"
        time.sleep(0.3)
        a.kill()
        with pytest.raises((gw.ProtocolError, ConnectionError, OSError)):
            c.read_body(r)
    e = g.access_for("/watch/cut")[0]
    assert e["status"] == 200 and e["error"] == "upstream closed mid-response"
    assert g.alive()


def test_one_worker_killed_others_serve(harness, apps):
    a = apps(workers=2)
    g = gateway_for(harness, [a.server], upstream={"connections": 4})
    pids = {get_json(g.port, "/pid")["pid"] for _ in range(40)}
    assert len(pids) == 2
    os.kill(pids.pop(), signal.SIGKILL)
    # Connections to the dead worker fail over; the master starts a new one.
    ok = 0
    for _ in range(60):
        r = gw.get(g.port, "/items/9")
        ok += r.status == 200
        assert r.status in (200, 502)
    assert ok >= 50
    wait_until(lambda: gw.get(g.port, "/items/9").status == 200, timeout=5)


def test_unanswered_ping_fails_streams_early(harness, app):
    """A frozen app (SIGSTOP) answers no PING: its streams get 502 after ping.timeout, not
    after the 20 s first_byte timeout."""
    g = gateway_for(harness, [app.server],
                    upstream={"ping": {"interval": "500ms", "timeout": "1s"}})
    assert get_json(g.port, "/items/1")["item_id"] == 1
    pids = app.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = gw.get(g.port, "/items/2", timeout=10)
        took = time.monotonic() - t0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert r.status == 502 and took < 4, (r.status, took)
    g.wait_stderr("PING unanswered")
    wait_until(lambda: gw.get(g.port, "/items/3").status == 200, timeout=8, interval=0.2)


def test_first_byte_timeout_is_504(harness, app):
    g = gateway_for(harness, [app.server], upstream={"timeouts": {"first_byte": "1s"}})
    t0 = time.monotonic()
    r = gw.get(g.port, "/sleep?s=3")
    assert r.status == 504 and time.monotonic() - t0 < 3
    assert get_json(g.port, "/items/5")["item_id"] == 5


def test_app_sigterm_drains_in_flight_streams(harness, app):
    g = gateway_for(harness, [app.server])
    conns = []
    for _ in range(4):
        c = Conn(g.port, timeout=10)
        c.send(gw.build_request("GET", "/sleep?s=1"))
        conns.append(c)
    time.sleep(0.3)
    app.proc.send_signal(signal.SIGTERM)
    for c in conns:
        r = c.read_response()
        assert r.status == 200 and r.body == b"slept 1.00"
        c.close()
    app.proc.wait(10)


def test_no_server_is_502_at_once(harness, tmp_path):
    g = gateway_for(harness, ["unix:%s/none.sock" % tmp_path])
    t0 = time.monotonic()
    r = gw.get(g.port, "/items/1")
    assert r.status == 502 and time.monotonic() - t0 < 1
    assert g.alive()


# ---- many slow streams ----------------------------------------------------------------------

def test_1000_slow_streams_bounded_memory(harness, app):
    """1,000 clients each ask for 1 MiB and read nothing for a while: the app's sends stop at
    the gateway's credit, so the gateway holds a bounded amount per stream, not 1 GiB. Then
    every client reads its whole response."""
    n, size = 1000, MIB
    g = gateway_for(harness, [app.server], upstream={"connections": 2},
                    timeouts={"send": "60s"})
    base = g.rss_kb()
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", g.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(gw.build_request("GET", "/big?mib=1"))
        socks.append(s)
    time.sleep(3)
    held = g.rss_kb() - base
    # Per stream at most the client's output (64 KiB) and the app's credit (64 KiB); the
    # kernel's socket buffers are not the gateway's RSS.
    assert held < n * 160, held
    head = {s: b"" for s in socks}   # the response head, until its end is seen
    got = {s: 0 for s in socks}      # body bytes after it
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + 120
    done = 0
    while done < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                b = s.recv(1 << 20)
            except BlockingIOError:
                continue
            if got[s] == 0 and b"\r\n\r\n" not in head[s]:
                head[s] += b
                if b"\r\n\r\n" in head[s]:
                    got[s] = len(head[s].split(b"\r\n\r\n", 1)[1])
            else:
                got[s] += len(b)
            if not b or got[s] >= size:
                sel.unregister(s)
                done += 1
    for s in socks:
        s.close()
    assert done == n
    assert all(v >= size for v in got.values()), sorted(got.values())[:5]
    assert get_json(g.port, "/items/1")["item_id"] == 1


# ---- scope fidelity -------------------------------------------------------------------------

class Uvicorn:
    """Debian's uvicorn serving |app| from tests/apps on 127.0.0.1, stopped by PID."""

    def __init__(self, workdir, app, args=()):
        self.port = free_port()
        self.logpath = workdir / "uvicorn.log"
        with open(self.logpath, "wb") as log:
            self.proc = subprocess.Popen(
                [gw.PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port",
                 str(self.port), "--no-access-log"] + list(args),
                cwd=str(APPS), env=dict(os.environ, PYTHONPATH=str(APPS)),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        gw.wait_listening(self.proc, self.port, "uvicorn listening")
        assert self.proc.poll() is None, self.logpath.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def raw_scope(port, target, headers):
    """The scope the app at |port| saw for GET |target| with |headers| sent exactly so."""
    with Conn(port) as c:
        c.send(b"GET %s HTTP/1.1\r\n%s\r\n" % (
            target.encode(), b"".join(b"%s: %s\r\n" % (n.encode(), v.encode())
                                      for n, v in headers)))
        r = c.read_response()
    assert r.status == 200, r
    return r.json()


def test_scope_matches_uvicorn(harness, apps, tmp_path):
    """The same request through gatehouse (route /pre/ stripped) -> gatehouse.asgi and to
    uvicorn --root-path /pre (given the path as a proxy that strips /pre sends it): the scopes
    are the same, except for what a proxy must do differently, checked exactly below."""
    a = apps(app="scope_echo:app", workers=1)
    g = gateway_for(harness, [a.server], routes=[
        {"match": {"path": "/pre/"}, "upstream": "app", "strip_prefix": True}])
    u = Uvicorn(tmp_path, "scope_echo:app", ["--root-path", "/pre", "--http", "httptools",
                                             "--loop", "uvloop"])
    try:
        path = "/a%20b/caf%C3%A9/x%2Fy/%E2%82%AC"
        query = "q=%20&r=1&r=2&s=caf%C3%A9&t"
        common = [("User-Agent", "fidelity/1"), ("X-Custom", "one"), ("Accept", "*/*"),
                  ("x-custom", "two"), ("Cookie", "a=1"), ("Cookie", "b=2"),
                  ("Connection", "keep-alive")]
        theirs = raw_scope(u.port, path + "?" + query,
                           [("Host", "127.0.0.1:%d" % u.port)] + common)
        ours = raw_scope(g.port, "/pre" + path + "?" + query,
                         [("Host", "127.0.0.1:%d" % g.port)] + common)
    finally:
        u.stop()
    for k in ("type", "http_version", "method", "scheme", "path", "raw_path", "query_string",
              "root_path"):
        assert ours[k] == theirs[k], (k, ours[k], theirs[k])
    assert ours["path"] == "/a b/café/x/y/€" and ours["root_path"] == "/pre"
    # The client's address is the same; its port is that of each one's own connection.
    assert ours["client"][0] == theirs["client"][0] == "127.0.0.1"
    assert isinstance(ours["client"][1], int) and ours["client"][1] > 0
    # server: each one's own address and port.
    assert ours["server"] == ["127.0.0.1", g.port] and theirs["server"] == ["127.0.0.1", u.port]
    # Headers: lower-cased, in order, repeats kept. A proxy removes the hop-by-hop Connection
    # and adds its request id; the Host each got names its own port.
    def split_host(hs):
        return [[n, v] for n, v in hs if n != "host"], [v for n, v in hs if n == "host"]
    ours_h, ours_host = split_host(ours["headers"])
    theirs_h, theirs_host = split_host(theirs["headers"])
    assert ours_host == ["127.0.0.1:%d" % g.port] and theirs_host == ["127.0.0.1:%d" % u.port]
    assert ours_h[-1][0] == "x-request-id" and len(ours_h[-1][1]) == 32
    assert ours_h[:-1] == [h for h in theirs_h if h[0] != "connection"], (ours_h, theirs_h)
    assert ["connection", "keep-alive"] in theirs_h


# ---- trailers, pathsend, framing ------------------------------------------------------------

def test_trailers_in_two_messages(harness, apps):
    a = apps(app="asgi_edge:app", workers=1)
    g = gateway_for(harness, [a.server])
    with Conn(g.port) as c:
        r = c.request("GET", "/trailers", headers=[("TE", "trailers")])
    assert r.status == 200 and r.body == b"body with trailers"
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.trailers == [("x-a", "1"), ("x-b", "2")]


def test_pathsend_is_sent_by_the_gateway(harness, apps):
    a = apps(app="asgi_edge:app", workers=1)
    g = gateway_for(harness, [a.server])
    with Conn(g.port, timeout=20) as c:
        r = c.request("GET", "/pathsend")
        assert r.status == 200 and r.header("Content-Length") == str(MIB)
        assert hashlib.sha256(r.body).hexdigest() == gw.pattern_sha256(MIB)
        # No body for a 204, and the connection goes on with the next response.
        r = c.request("GET", "/pathsend-204")
        assert r.status == 204 and r.body == b""
        c.send(gw.build_request("HEAD", "/pathsend"))
        r = c.read_response(head_request=True)
        assert r.status == 200 and r.header("Content-Length") == str(MIB)
        r = c.request("GET", "/trailers")
        assert r.status == 200 and r.body == b"body with trailers"


def test_body_shorter_than_content_length_is_cut(harness, apps):
    a = apps(app="asgi_edge:app", workers=1)
    g = gateway_for(harness, [a.server])
    with Conn(g.port) as c:
        c.send(gw.build_request("GET", "/short"))
        r = c.read_head()
        assert r.status == 200 and r.header("Content-Length") == "10"
        with pytest.raises((gw.ProtocolError, ConnectionError, OSError)):
            c.read_body(r)
    e = g.access_for("/short")[0]
    assert e["error"] == "upstream response shorter than its Content-Length"


def test_head_drops_a_streamed_body(harness, apps):
    a = apps(app="asgi_edge:app", workers=1)
    g = gateway_for(harness, [a.server])
    with Conn(g.port) as c:
        for _ in range(3):
            c.send(gw.build_request("HEAD", "/head-body"))
            r = c.read_response(head_request=True)
            assert r.status == 200 and r.header("Content-Length") == "300000"
        r = c.request("GET", "/trailers")
        assert r.body == b"body with trailers"


# ---- an app that breaks the protocol ---------------------------------------------------------

class BadApp:
    """A scripted app side on a unix socket (with the Python codec): a proper HELLO (or one of
    version |version|), then per request path a breach of PROTOCOL.md, or a good answer on
    /ok. Stopped in close()."""

    def __init__(self, path, version=P.PROTOCOL_VERSION):
        self.path = str(path)
        self.version = version
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.resets = []        # (stream, code) of the RESETs the gateway sent
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def server(self):
        return "unix:" + self.path

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        d = P.FrameDecoder(65536)
        c.settimeout(0.2)
        try:
            while not self._stop.is_set():
                try:
                    b = c.recv(65536)
                except socket.timeout:
                    continue
                if not b:
                    return
                d.feed(b)
                while True:
                    f = d.next_frame()
                    if f is P.NeedData:
                        break
                    self._on(c, f)
        except OSError:
            pass
        finally:
            c.close()

    def _on(self, c, f):
        if isinstance(f, P.Hello):
            c.sendall(P.encode(P.Hello(0, P.FLAG_ACK, self.version, 65536, 100, 65536, 0)))
        elif isinstance(f, P.Reset):
            self.resets.append((f.stream, f.error))
        elif isinstance(f, P.HttpRequest):
            sid, path = f.stream, f.path
            if path == "/ok":
                c.sendall(P.encode(P.HttpResponse(sid, 0, 200, [(b"content-length", b"2")]))
                          + P.encode(P.Data(sid, P.FLAG_END, b"ok")))
            elif path == "/bad-field":
                c.sendall(P.encode(P.HttpResponse(
                    sid, P.FLAG_END, 200, [(b"x-evil", b"a\r\nSet-Cookie: injected=1")])))
            elif path == "/bad-status":
                c.sendall(P.encode(P.HttpResponse(sid, P.FLAG_END, 99, [])))
            elif path == "/data-first":
                c.sendall(P.encode(P.Data(sid, P.FLAG_END, b"no head")))
            elif path == "/garbage":
                c.sendall(b"\xff\xff\xff\x02\x00\x00\x00\x00\x01" + b"x" * 64)

    def close(self):
        self._stop.set()
        self.sock.close()


@pytest.fixture
def bad_app(tmp_path):
    apps = []

    def start(**kw):
        a = BadApp(tmp_path / ("bad%d.sock" % len(apps)), **kw)
        apps.append(a)
        return a
    yield start
    for a in apps:
        a.close()


@pytest.mark.parametrize("path,log", [
    ("/bad-field", "invalid response field"),
    ("/bad-status", "invalid status"),
    ("/data-first", "DATA not allowed here"),
    ("/garbage", "a frame over the gateway's max_frame"),
])
def test_app_breaking_the_protocol_gets_502(harness, bad_app, path, log):
    """Each breach is a 502 with a log line naming it; the app's stream is reset (or, for a
    frame that cannot be trusted, its connection closed), and the next request is served."""
    a = bad_app()
    g = gateway_for(harness, [a.server])
    assert gw.get(g.port, "/ok").body == b"ok"
    pos = g.stderr_size()
    r = gw.get(g.port, path)
    assert r.status == 502, r
    assert b"injected" not in r.raw_head + r.body
    g.wait_stderr(log, since=pos)
    e = g.access_for(path)[0]
    assert e["error"] == "invalid response from upstream" or path == "/garbage"
    if path != "/garbage":
        wait_until(lambda: any(code == P.PROTOCOL for _, code in a.resets), timeout=3,
                   what="RESET PROTOCOL sent to the app")
    wait_until(lambda: gw.get(g.port, "/ok").status == 200, timeout=5, interval=0.1,
               what="served again")
    assert g.alive()


def test_app_of_another_version_is_refused(harness, bad_app):
    a = bad_app(version=2)
    g = gateway_for(harness, [a.server])
    g.wait_stderr("the app speaks another protocol version")
    t0 = time.monotonic()
    r = gw.get(g.port, "/ok")
    assert r.status == 502 and time.monotonic() - t0 < 3
    assert g.alive()
