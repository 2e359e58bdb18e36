# SPDX-License-Identifier: MIT
"""HTTP/2 (RFC 9113) through the gateway: h2c by prior knowledge on a cleartext listener
(`http2: prior_knowledge`) with curl, nghttp, h2load and the raw-frame client of h2client.py,
to every kind of upstream (http: tests/apps/upstream.py, uwsgi: gatehouse.wsgi with
tests/python/apps/wsgi_app.py, asgi: gatehouse.asgi with tests/apps/fastapi_gw.py):
settings, multiplexing, bodies both ways under flow control, trailers, Server-Sent Events,
GOAWAY on SIGTERM and on reload, metrics, the access log, what the apps are told, and RFC 8441
WebSockets (ws_echo.py, ws_echo_wsgi.py, uvicorn through a tunnel). The same functional tests
over TLS with ALPN h2 are at the end (TestTls).

The flood protections and the conformance cases are in test_h2_protect.py.

Every process is stopped by its PID; every read and wait is bounded."""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import gw
import h2client as H
import wsclient as W
from gw import free_port, wait_until
from h2client import H2Client, StreamSocket
from test_asgi import APPS, GhAsgi, asgi_upstream
from test_uwsgi import GhWsgi, uwsgi_upstream

MIB = 1 << 20
CURL = "/usr/bin/curl"
NGHTTP = "/usr/bin/nghttp"
H2LOAD = "/usr/bin/h2load"


# ---- gateways and backends ------------------------------------------------------------------

def h2_listen(port, mode="prior_knowledge"):
    return [{"address": "127.0.0.1:%d" % port, "http2": mode}]


def h2_gateway(harness, upstreams, routes=None, **over):
    """A gateway whose listener serves h2c by prior knowledge (and HTTP/1.1)."""
    port = free_port()
    over.setdefault("listen", h2_listen(port))
    return harness.gateway(upstreams, routes, port=port, **over)


class Backends:
    """The module's long-lived app servers, started on first use."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.running = {}
        self.pattern_file = workdir / "pattern-8m.bin"
        self.pattern_file.write_bytes(gw.pattern_bytes(8 * MIB))

    def _dir(self, name):
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        return d

    def asgi(self):
        if "asgi" not in self.running:
            self.running["asgi"] = GhAsgi(self._dir("asgi"), workers=1, name="h2asgi")
        return self.running["asgi"]

    def asgi_edge(self):
        if "asgi_edge" not in self.running:
            self.running["asgi_edge"] = GhAsgi(self._dir("asgi_edge"), app="asgi_edge:app",
                                               workers=1, name="h2edge")
        return self.running["asgi_edge"]

    def wsgi(self):
        if "wsgi" not in self.running:
            self.running["wsgi"] = GhWsgi(self._dir("wsgi"), workers=4, name="h2wsgi")
        return self.running["wsgi"]

    def ws(self, kind):
        key = "ws-" + kind
        if key not in self.running:
            import test_websocket as TW
            start = {"asgi": TW.start_gatehouse_asgi, "uwsgi": TW.start_gatehouse_wsgi,
                     "http": TW.start_uvicorn}[kind]
            self.running[key] = start(self._dir(key))
        return self.running[key]

    def stop(self):
        for b in self.running.values():
            b.stop()


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    b = Backends(tmp_path_factory.mktemp("h2_backends"))
    yield b
    b.stop()


class Kind:
    """How to reach one kind of upstream: its config, a GET with a JSON answer, an upload
    endpoint answering (length, sha256), a download of |n| pattern bytes."""

    def __init__(self, name, upstream, get, check_get, upload, upload_result, download):
        self.name = name
        self.upstream = upstream
        self.get = get
        self.check_get = check_get
        self.upload = upload
        self.upload_result = upload_result
        self.download = download


def make_kind(name, harness, backends):
    if name == "http":
        u = harness.upstream("A")
        return Kind("http", gw.upstream_conf([u.addr]), "/echo?k=http",
                    lambda j: j["path"] == "/echo?k=http" and j["version"] == "HTTP/1.1",
                    "/sink", lambda j: (j["bytes"], j["sha256"]),
                    lambda n: "/bytes?n=%d" % n)
    if name == "uwsgi":
        a = backends.wsgi()
        pf = str(backends.pattern_file)
        return Kind("uwsgi", uwsgi_upstream([a.server]), "/env",
                    lambda j: j["PATH_INFO"] == "/env",
                    "/body", lambda j: (j["len"], j["sha256"]),
                    lambda n: "/file?path=%s&length=%d" % (pf, n) if n == 8 * MIB else None)
    if name == "asgi":
        a = backends.asgi()
        return Kind("asgi", asgi_upstream([a.server]), "/items/5",
                    lambda j: j == {"item_id": 5, "q": None},
                    "/upload", lambda j: (j["size"], j["sha256"]),
                    lambda n: "/big?mib=%d" % (n // MIB))
    raise ValueError(name)


@pytest.fixture(params=["http", "uwsgi", "asgi"])
def kind(request, harness, backends):
    return make_kind(request.param, harness, backends)


def assert_clean(c):
    assert c.violations == [], c.violations


def pattern_ok(body, n):
    return len(body) == n and hashlib.sha256(body).hexdigest() == gw.pattern_sha256(n)


def run(cmd, timeout=60):
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


# ---- settings, tools, HTTP/1.1 alongside ----------------------------------------------------

def test_server_settings_and_windows_defaults(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    with H2Client(g.port) as c:
        st = c.wait_settings()
        assert st.get(H.MAX_CONCURRENT_STREAMS) == 128, st
        assert st.get(H.INITIAL_WINDOW_SIZE) == 256 * 1024, st
        assert st.get(H.ENABLE_CONNECT_PROTOCOL) == 1, st
        # The connection receive window: a WINDOW_UPDATE on stream 0 up to 1 MiB.
        c.wait(lambda: c.send_conn_window >= MIB, 3, "the connection window raised to 1m")
        c.drain(0.2)
        assert c.send_conn_window == MIB, c.send_conn_window
        c.wait(lambda: c.settings_acks >= 1, 3, "the SETTINGS ack")
        s = c.get("/echo")
        assert s.status == 200 and s.json()["path"] == "/echo", s
        assert_clean(c)


def test_server_settings_follow_the_config(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr], http2={"max_concurrent_streams": 7, "window": "100k",
                                             "connection_window": "2m"})
    with H2Client(g.port) as c:
        st = c.wait_settings()
        assert st.get(H.MAX_CONCURRENT_STREAMS) == 7, st
        assert st.get(H.INITIAL_WINDOW_SIZE) == 100 * 1024, st
        c.wait(lambda: c.send_conn_window >= 2 * MIB, 3, "the connection window raised to 2m")
        c.drain(0.2)
        assert c.send_conn_window == 2 * MIB
        assert c.get("/echo").status == 200


def test_curl_prior_knowledge_get_and_post(harness, tmp_path):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    url = "http://127.0.0.1:%d" % g.port
    p = run([CURL, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}",
             url + "/echo?curl=1"])
    assert p.returncode == 0, p.stderr
    body, _, tail = p.stdout.rpartition(b"\n")
    assert tail == b"2 200", p.stdout
    j = json.loads(body)
    assert j["path"] == "/echo?curl=1" and j["method"] == "GET", j
    data = os.urandom(3 * MIB + 17)
    f = tmp_path / "up.bin"
    f.write_bytes(data)
    p = run([CURL, "-sS", "--http2-prior-knowledge", "--data-binary", "@%s" % f,
             "-H", "Content-Type: application/octet-stream", "-w", "\n%{http_version}",
             url + "/sink"])
    assert p.returncode == 0, p.stderr
    body, _, tail = p.stdout.rpartition(b"\n")
    assert tail == b"2", p.stdout
    assert json.loads(body) == {"name": "A", "bytes": len(data),
                                "sha256": hashlib.sha256(data).hexdigest()}


def test_http1_still_served_on_the_prior_knowledge_port(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    r = gw.get(g.port, "/echo?h1")
    assert r.status == 200 and r.version == "HTTP/1.1" and r.json()["path"] == "/echo?h1"
    p = run([CURL, "-sS", "--http1.1", "-w", "\n%{http_version}",
             "http://127.0.0.1:%d/echo" % g.port])
    assert p.returncode == 0 and p.stdout.endswith(b"\n1.1"), p
    with H2Client(g.port) as c:       # and h2 on the same port, at the same time
        assert c.get("/echo?h2").status == 200


def test_cleartext_listener_without_http2_is_not_h2c(harness):
    """Without `http2: prior_knowledge` a cleartext listener speaks HTTP/1.1 only: the
    preface is not answered with a SETTINGS frame."""
    u = harness.upstream()
    g = harness.gateway([u.addr])
    with gw.Conn(g.port, timeout=5) as c:
        c.send(H.PREFACE + H.frame(H.SETTINGS))
        try:
            got = c.read_until_close(5)
        except TimeoutError:
            got = bytes(c.buf)
    assert not (len(got) >= 9 and got[3] == H.SETTINGS), got[:40]


def test_nghttp_and_h2load(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    url = "http://127.0.0.1:%d" % g.port
    p = run([NGHTTP, "-nv", url + "/echo?nghttp"])
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", out), out
    assert re.search(r"SETTINGS_ENABLE_CONNECT_PROTOCOL\(0x08\):1|\(0x08\):1", out), out
    # Ten concurrent streams, each its own path.
    p = run([NGHTTP, "-n", "-s"] + [url + "/echo?m=%d" % i for i in range(10)])
    assert p.returncode == 0, p.stderr
    p = run([H2LOAD, "-n", "2000", "-c", "4", "-m", "20", url + "/echo"], timeout=120)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    assert m and m.group(3) == "2000" and m.group(4) == "0" and m.group(5) == "0", out
    assert re.search(r"status codes: 2000 2xx", out), out


# ---- every kind of upstream -----------------------------------------------------------------

def test_get_and_post_to_each_kind(harness, kind):
    g = h2_gateway(harness, {"app": kind.upstream})
    data = os.urandom(MIB + 3)
    with H2Client(g.port) as c:
        s = c.get(kind.get)
        assert s.status == 200, s
        assert kind.check_get(s.json()), s
        sid = c.request("POST", kind.upload, body=data,
                        headers=[("content-type", "application/octet-stream"),
                                 ("content-length", str(len(data)))])
        s = c.response(sid, timeout=30)
        assert s.status == 200, s
        assert kind.upload_result(s.json()) == (len(data), hashlib.sha256(data).hexdigest())
        # A body without content-length (the gateway frames it for the upstream).
        sid = c.request("POST", kind.upload, body=b"x" * 70000)
        s = c.response(sid, timeout=30)
        assert s.status == 200, s
        assert kind.upload_result(s.json())[0] == 70000
        assert_clean(c)


def test_large_bodies_both_ways(harness, kind):
    """8 MiB up and 8 MiB down on one connection, under the default windows (256k per
    stream, 1m for the connection): every byte arrives."""
    n = 8 * MIB
    g = h2_gateway(harness, {"app": kind.upstream})
    data = os.urandom(n)
    with H2Client(g.port, timeout=60) as c:
        sid = c.request("POST", kind.upload, body=data,
                        headers=[("content-length", str(n))])
        s = c.response(sid, timeout=60)
        assert s.status == 200, s
        assert kind.upload_result(s.json()) == (n, hashlib.sha256(data).hexdigest())
        s = c.get(kind.download(n), timeout=60)
        assert s.status == 200, s
        assert pattern_ok(s.body, n), (len(s.body), s.headers)
        assert_clean(c)


def test_http_upstream_gets_http11_with_host_and_joined_cookies(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    with H2Client(g.port) as c:
        s = c.get("/echo?c", authority="h2.example:8443",
                  headers=[("cookie", "a=1"), ("x-one", "1"), ("cookie", "b=2")])
    assert s.status == 200, s
    j = s.json()
    assert j["version"] == "HTTP/1.1", j
    hs = [(k.lower(), v) for k, v in j["headers"]]
    assert [v for k, v in hs if k == "host"] == ["h2.example:8443"], hs
    # RFC 9113 §8.2.3: split cookie fields are joined with "; " for HTTP/1.1.
    assert [v for k, v in hs if k == "cookie"] == ["a=1; b=2"], hs
    assert [v for k, v in hs if k == "x-one"] == ["1"], hs
    assert not [k for k, _ in hs if k.startswith(":")], hs


def test_multiplexing_100_concurrent_streams(harness, backends):
    """100 streams at once on one connection, each 300 ms at the upstream: all answered,
    each with its own answer, in about the time of one."""
    u = harness.upstream()
    a = backends.asgi()
    g = h2_gateway(harness, {"web": gw.upstream_conf([u.addr]),
                             "api": asgi_upstream([a.server])},
                   routes=[{"match": {"path": "/items"}, "upstream": "api"},
                           {"match": {"path": "/"}, "upstream": "web"}])
    with H2Client(g.port, timeout=20) as c:
        c.wait_settings()
        t0 = time.monotonic()
        sids = {}
        for i in range(100):
            path = "/slow?ms=300&i=%d" % i if i % 2 else "/items/%d" % i
            sids[c.request("GET", path)] = (i, path)
        for sid, (i, path) in sids.items():
            s = c.response(sid, timeout=20)
            assert s.status == 200, (path, s)
            j = s.json()
            if i % 2:
                assert j["path"] == path, (path, j)
            else:
                assert j["item_id"] == i, (path, j)
        took = time.monotonic() - t0
        assert took < 6, "100 streams took %.1fs: not concurrent" % took
        assert_clean(c)


def test_stream_cancelled_by_client_leaves_the_connection_usable(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    with H2Client(g.port) as c:
        sid = c.request("GET", "/events?n=50&ms=100")
        assert c.head(sid).status == 200
        c.reset(sid, H.CANCEL)
        wait_until(lambda: u.stats()["events_gone"] >= 1, timeout=5,
                   what="the upstream saw the stream cancelled")
        assert c.get("/echo").status == 200
        assert not c.goaways


# ---- flow control ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["http", "uwsgi", "asgi"])
def test_client_opening_no_window_holds_the_response_back(harness, backends, name):
    """A client whose windows are closed gets the head and no DATA; the gateway does not read
    the whole 32 MiB response into memory meanwhile. Opened, every byte arrives."""
    n = 32 * MIB
    if name == "uwsgi":
        # gatehouse.wsgi's file_wrapper of a 32 MiB file
        f = backends.workdir / "pattern-32m.bin"
        if not f.exists():
            f.write_bytes(gw.pattern_bytes(n))
        k = make_kind("uwsgi", harness, backends)
        target = "/file?path=%s&length=%d" % (f, n)
    else:
        k = make_kind(name, harness, backends)
        target = k.download(n)
    g = h2_gateway(harness, {"app": k.upstream})
    base = g.rss_kb()
    with H2Client(g.port, timeout=60, settings={H.INITIAL_WINDOW_SIZE: 0}, conn_window=0,
                  auto_window=False) as c:
        sampler = gw.RssSampler(g.pid).start()
        sid = c.request("GET", target)
        s = c.head(sid, timeout=10)
        assert s.status == 200, s
        time.sleep(2.0)
        c.drain(0.1)
        sampler.stop()
        assert len(s.data) == 0, "DATA beyond a zero window: %d bytes" % len(s.data)
        grew = sampler.max_kb - base
        assert grew < 12 * 1024, "gateway RSS grew by %d kB holding a stalled response" % grew
        c.auto_window = True
        c.window_update(0, n)
        c.window_update(sid, n)
        s = c.response(sid, timeout=60)
        assert s.ended and pattern_ok(s.body, n), (len(s.body), s)
        assert_clean(c)


class SlowReader:
    """An HTTP/1.1 upstream (one thread per connection, a small receive buffer) that reads a
    request head, then waits for release() before reading the body; answers JSON {bytes,
    sha256}. Other requests (no body) are answered at once with {"path"}."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.head_seen = threading.Event()
        self.released = threading.Event()
        self.stop_ev = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop_ev.is_set():
            try:
                s, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(60)
        f = s.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                hs = {}
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    hs[k.strip().lower()] = v.strip()
                if "content-length" not in hs and "chunked" not in hs.get("transfer-encoding",
                                                                           ""):
                    body = json.dumps({"path": path}).encode()
                else:
                    self.head_seen.set()
                    self.released.wait(60)
                    h = hashlib.sha256()
                    total = 0
                    if "content-length" in hs:
                        left = int(hs["content-length"])
                        while left:
                            d = f.read(min(left, 65536))
                            if not d:
                                return
                            h.update(d)
                            total += len(d)
                            left -= len(d)
                    else:
                        while True:
                            size = int(f.readline().split(b";")[0], 16)
                            if size == 0:
                                while f.readline() not in (b"\r\n", b"\n", b""):
                                    pass
                                break
                            d = f.read(size)
                            h.update(d)
                            total += len(d)
                            f.readline()
                    body = json.dumps({"bytes": total, "sha256": h.hexdigest()}).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self.stop_ev.set()
        self.released.set()
        self.sock.close()


def test_stalled_upstream_limits_what_the_client_may_send(harness):
    """An upstream that does not read the body: the gateway gives back window only for bytes
    the upstream took, so the client can get only about one stream window (64k here) plus
    the sockets' buffers ahead of it, never the whole 32 MiB; other streams of the
    connection are served meanwhile; released, the body arrives whole."""
    srv = SlowReader()
    try:
        g = h2_gateway(harness, [("127.0.0.1:%d" % srv.port)],
                       http2={"window": "64k", "connection_window": "1m"},
                       limits={"body_bytes": "100m"})
        n = 32 * MIB
        data = os.urandom(n)
        base = g.rss_kb()
        with H2Client(g.port, timeout=60) as c:
            c.wait_settings()
            sid = c.request("POST", "/upload", body=None, end_stream=False,
                            headers=[("content-length", str(n))])
            # Send from the main thread as far as the windows allow, without blocking.
            off = 0
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and off < n:
                avail = min(c.send_conn_window, c.send_windows.get(sid, 0), c.peer_max_frame,
                            n - off)
                if avail > 0:
                    c.send_data_raw(sid, data[off:off + avail])
                    off += avail
                else:
                    c.drain(0.05)
            assert srv.head_seen.wait(5), "the request head never reached the upstream"
            ahead = off
            assert ahead < 4 * MIB, \
                "the client could send %d bytes ahead of an upstream that reads nothing" % ahead
            assert g.rss_kb() - base < 12 * 1024
            # The connection is not blocked by the stalled stream.
            s2 = c.get("/other", timeout=5)
            assert s2.status == 200 and s2.json() == {"path": "/other"}, s2
            srv.released.set()
            c.send_data(sid, data[off:], end_stream=True, timeout=60)
            s = c.response(sid, timeout=60)
            assert s.status == 200, s
            assert s.json() == {"bytes": n, "sha256": hashlib.sha256(data).hexdigest()}
            assert_clean(c)
    finally:
        srv.stop()


# ---- trailers -------------------------------------------------------------------------------

def test_response_trailers_from_an_http_upstream(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    n = 200000
    with H2Client(g.port) as c:
        s = c.get("/chunked?n=%d&trailer=1&chunk=10000" % n)
        assert s.status == 200 and pattern_ok(s.body, n), s
        assert s.trailers == [("x-checksum", gw.pattern_sha256(n))], s.trailers
        assert s.header("trailer") is None or s.header("trailer").lower() == "x-checksum"
        # No trailers asked for: none sent.
        s = c.get("/chunked?n=1000")
        assert s.status == 200 and s.trailers is None and len(s.body) == 1000, s
        assert_clean(c)


def test_response_trailers_from_an_asgi_app(harness, backends):
    a = backends.asgi_edge()
    g = h2_gateway(harness, {"app": asgi_upstream([a.server])})
    with H2Client(g.port) as c:
        s = c.get("/trailers")
        assert s.status == 200 and s.body == b"body with trailers", s
        assert [(k.lower(), v) for k, v in s.trailers or []] == [("x-a", "1"), ("x-b", "2")], s
        assert_clean(c)


def test_request_trailers_are_accepted_and_not_forwarded(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    with H2Client(g.port) as c:
        sid = c.request("POST", "/echo?rt", body=b"x" * 5000, end_stream=False)
        c.send_trailers(sid, [("x-req-trailer", "secret")])
        s = c.response(sid)
        assert s.status == 200, s
        j = s.json()
        assert j["body_len"] == 5000, j
        assert j["trailers"] == [], j
        assert not [k for k, _ in j["headers"] if k.lower() == "x-req-trailer"], j
        assert c.get("/echo").status == 200
        assert_clean(c)


# ---- Server-Sent Events ---------------------------------------------------------------------

SSE_PATHS = {"http": "/events?n=3&ms=1000", "uwsgi": "/stream?n=3&ms=1000",
             "asgi": "/events?n=3&ms=1000"}


def test_sse_events_arrive_one_by_one_with_heartbeats(harness, kind):
    from test_sse import events_of
    g = h2_gateway(harness, {"app": kind.upstream}, sse={"heartbeat": "250ms"})
    with H2Client(g.port, timeout=15) as c:
        s = c.get(SSE_PATHS[kind.name], timeout=15)
    assert s.status == 200 and s.header("content-type").startswith("text/event-stream"), s
    text = s.body.decode()
    events, comments = events_of(kind.name, text)
    assert events == ["event 0", "event 1", "event 2"], text
    assert comments >= 4 and ":\n:\n" in text, text
    first = [t for t, b in s.pieces if b"event 0" in b][0]
    last = [t for t, b in s.pieces if b"event 2" in b][0]
    assert last - first > 1.5, "the events arrived together, not as they were sent"
    assert s.head_time <= first


# ---- GOAWAY: drain and reload ---------------------------------------------------------------

def test_goaway_on_sigterm_lets_the_stream_in_flight_finish(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr], shutdown={"delay": "0s", "timeout": "10s"})
    n = 20000
    with H2Client(g.port, timeout=10) as c:
        assert c.get("/echo").status == 200
        sid = c.request("GET", "/slowbody?ms=2000&n=%d" % n)
        s = c.head(sid)
        assert s.status == 200
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        last, code, _ = c.wait_goaway(timeout=1.5)
        assert code == H.NO_ERROR, H.err_name(code)
        assert time.monotonic() - t0 < 1.5
        assert not s.done, "the stream ended before the GOAWAY"
        s = c.response(sid, timeout=10)
        assert s.ended and s.reset is None and pattern_ok(s.body, n), s
        last, code, _ = c.goaways[-1]
        assert code == H.NO_ERROR and last == sid, c.goaways
        c.wait_closed(timeout=3)
        assert_clean(c)
    assert g.wait_exit(10) == 0


def test_goaway_on_reload_and_the_next_connection_uses_the_new_config(harness):
    a, b = harness.upstream("A"), harness.upstream("B")
    port = free_port()
    ups = {"a": gw.upstream_conf([a.addr]), "b": gw.upstream_conf([b.addr])}

    def cfg(target):
        return gw.make_config(port, ups, [{"match": {"path": "/"}, "upstream": target}],
                              listen=h2_listen(port))
    g = harness.gateway(config=cfg("a"), port=port)
    with H2Client(g.port) as c:
        assert c.get("/name").body == b"A"
        sid = c.request("GET", "/slow?ms=1500")
        time.sleep(0.2)
        g.reload(cfg("b"))
        last, code, _ = c.wait_goaway(timeout=3)
        assert code == H.NO_ERROR, H.err_name(code)
        s = c.response(sid, timeout=10)
        assert s.status == 200 and s.header("x-upstream-name") == "A", s
        assert c.goaways[-1][0] >= sid, c.goaways
        c.wait_closed(timeout=5)
    with H2Client(g.port) as c2:
        wait_until(lambda: c2.get("/name").body == b"B", timeout=5, what="the new route")
    assert g.alive()


# ---- metrics, the access log, what the apps are told ----------------------------------------

def test_h2_connections_gauge_and_requests_counted(harness):
    from test_admin import metrics, sample
    u = harness.upstream()
    admin = free_port()
    g = h2_gateway(harness, [u.addr], admin={"address": "127.0.0.1:%d" % admin})
    c = H2Client(g.port)
    try:
        for i in range(3):
            assert c.get("/echo?m=%d" % i).status == 200
        wait_until(lambda: sample(metrics(admin), "gatehouse_connections", protocol="h2") == 1,
                   what="gatehouse_connections{protocol=\"h2\"} 1")
        assert sample(metrics(admin), "gatehouse_connections", protocol="http1") == 0
        wait_until(lambda: sample(metrics(admin), "gatehouse_requests_total", route="/",
                                  upstream="web", code="2xx") >= 3,
                   what="the h2 requests counted")
    finally:
        c.close()
    wait_until(lambda: sample(metrics(admin), "gatehouse_connections", protocol="h2") == 0,
               what="the h2 connection uncounted")


def test_access_log_says_http2(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr])
    with H2Client(g.port) as c:
        assert c.get("/echo?proto-h2").status == 200
    assert gw.get(g.port, "/echo?proto-h1").status == 200
    e2 = g.access_for("/echo?proto-h2")[0]
    e1 = g.access_for("/echo?proto-h1")[0]
    assert e2["status"] == 200 and e2["method"] == "GET" and e2["host"] == "app.test", e2
    # The record names the protocol: "HTTP/2.0" for h2 (under whatever key h1's record uses
    # for its "HTTP/1.1"; "protocol" is the expected name).
    keys2 = [k for k, v in e2.items() if v == "HTTP/2.0"]
    assert keys2, "no field says HTTP/2.0 in %r" % e2
    assert e2.get("protocol") == "HTTP/2.0", e2
    assert e1.get(keys2[0]) == "HTTP/1.1", e1


def test_asgi_scope_http_version_is_2(harness, backends):
    a = backends.asgi()
    g = h2_gateway(harness, {"app": asgi_upstream([a.server])})
    with H2Client(g.port) as c:
        s = c.get("/scope?x=1")
    assert s.status == 200 and s.json()["http_version"] == "2", s
    assert s.json()["query_string"] == "x=1"
    assert gw.get(g.port, "/scope").json()["http_version"] == "1.1"


def test_uwsgi_server_protocol_is_http2(harness, backends):
    a = backends.wsgi()
    g = h2_gateway(harness, {"app": uwsgi_upstream([a.server])})
    with H2Client(g.port) as c:
        s = c.get("/env")
    assert s.status == 200, s
    j = s.json()
    assert j["SERVER_PROTOCOL"] == "HTTP/2", j.get("SERVER_PROTOCOL")
    assert j["REQUEST_METHOD"] == "GET" and j["PATH_INFO"] == "/env"
    assert gw.get(g.port, "/env").json()["SERVER_PROTOCOL"] == "HTTP/1.1"


# ---- RFC 8441 WebSockets --------------------------------------------------------------------

WS_KINDS = ["asgi", "uwsgi", "http"]


def ws_gateway(harness, backend, ws=None, route_ws=None, **over):
    ws_route = {"match": {"path": "/ws/"}, "upstream": "app"}
    if route_ws is not None:
        ws_route["websocket"] = route_ws
    if ws is not None:
        over["websocket"] = ws
    return h2_gateway(harness, {"app": backend.upstream},
                      routes=[ws_route, {"match": {"path": "/"}, "upstream": "app"}], **over)


_ws_count = [0]


def ws_path(suffix=""):
    _ws_count[0] += 1
    return "/ws/h2-%d-%d%s" % (os.getpid(), _ws_count[0], suffix)


def ws_connect(c, path, protocols=None, version="13", extra=(), timeout=5):
    """Opens an RFC 8441 WebSocket on |c|: (Stream with its response head, WsConn or None
    when the status is not 200)."""
    hs = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
          (":authority", "app.test"), (":path", path)]
    if version is not None:
        hs.append(("sec-websocket-version", version))
    if protocols:
        hs.append(("sec-websocket-protocol", protocols))
    hs += list(extra)
    sid = c.request(raw_headers=hs, end_stream=False)
    s = c.head(sid, timeout=timeout)
    if s.status != 200:
        return s, None
    return s, W.WsConn(None, sock=StreamSocket(c, sid), timeout=timeout)


@pytest.fixture(params=WS_KINDS)
def ws_backend(request, backends):
    return request.param, backends.ws(request.param)


def test_ws_echo_ping_and_close(harness, ws_backend):
    name, b = ws_backend
    g = ws_gateway(harness, b)
    with H2Client(g.port) as c:
        c.wait_settings()
        s, ws = ws_connect(c, ws_path(), protocols="chat.v0, chat.v1")
        assert s.status == 200, s
        assert s.header("sec-websocket-protocol") == "chat.v1", s
        assert s.header("sec-websocket-accept") is None, s
        assert s.header("x-echo") == "1", s
        assert not s.done
        for msg in ("hello", "é€😀" * 100):
            ws.send_text(msg)
            m = ws.recv_message()
            assert (m.opcode, m.text) == (W.OP_TEXT, msg)
        big = os.urandom(200000)
        ws.send_binary(big, fragments=3)
        m = ws.recv_message(timeout=10)
        assert (m.opcode, m.data) == (W.OP_BINARY, big)
        ws.send_ping(b"p-h2")
        f = ws.read_frame()
        assert (f.opcode, f.payload) == (W.OP_PONG, b"p-h2"), f
        ws.send_close(1000, "done")
        assert ws.expect_close(1000, answer=False, timeout=5)[0] == 1000
        # An orderly end: END_STREAM (then RST_STREAM NO_ERROR is allowed, RFC 9113 §8.1,
        # since the client has not ended its side).
        assert s.ended and s.reset in (None, H.NO_ERROR), s
        # The connection serves on.
        r = c.get("/ws/plain-after")
        assert r.status == 200 and r.body == b"ws_echo", r
        assert not c.goaways
        assert_clean(c)


def test_ws_server_initiated_close(harness, ws_backend):
    name, b = ws_backend
    g = ws_gateway(harness, b)
    with H2Client(g.port) as c:
        s, ws = ws_connect(c, ws_path())
        assert s.status == 200, s
        ws.send_text("close:4001:bye")
        code, reason = ws.expect_close(4001, answer=True, timeout=5)
        assert (code, reason) == (4001, "bye")
        assert s.done


def test_ws_unmasked_client_frame_is_a_protocol_error(harness, ws_backend):
    name, b = ws_backend
    g = ws_gateway(harness, b)
    with H2Client(g.port) as c:
        s, ws = ws_connect(c, ws_path())
        assert s.status == 200, s
        ws.send_frame(W.OP_TEXT, b"not masked", mask=False)
        code, _ = ws.expect_close(1002, answer=True, timeout=5)
        assert code == 1002
        assert c.get("/ws/still-there").status == 200


def test_ws_many_on_one_connection(harness, ws_backend):
    name, b = ws_backend
    g = ws_gateway(harness, b)
    with H2Client(g.port, timeout=10) as c:
        conns = []
        for i in range(8):
            s, ws = ws_connect(c, ws_path("-m%d" % i))
            assert s.status == 200, s
            conns.append(ws)
        for rnd in range(3):
            for i, ws in enumerate(conns):
                ws.send_text("ws %d round %d" % (i, rnd))
            for i, ws in enumerate(conns):
                assert ws.recv_message(timeout=10).text == "ws %d round %d" % (i, rnd)
        for ws in conns:
            ws.send_close(1000)
            assert ws.expect_close(1000, answer=False, timeout=5)[0] == 1000


def test_ws_refused_by_origin_and_by_the_app(harness, ws_backend):
    name, b = ws_backend
    g = ws_gateway(harness, b, route_ws={"origins": ["https://good.example"]})
    with H2Client(g.port) as c:
        s, ws = ws_connect(c, ws_path(), extra=[("origin", "https://evil.example")])
        assert ws is None and s.status == 403, s
        c.response(s.id)
        s, ws = ws_connect(c, ws_path(), extra=[("origin", "https://good.example")])
        assert s.status == 200, s
        ws.send_close(1000)
        ws.expect_close(1000, answer=False)
        s, ws = ws_connect(c, ws_path("/deny"))
        assert ws is None and s.status == 403, s
        c.response(s.id)
        assert not c.goaways


def test_ws_bad_version_is_426(harness, ws_backend):
    name, b = ws_backend
    g = ws_gateway(harness, b)
    with H2Client(g.port) as c:
        s, ws = ws_connect(c, ws_path(), version="8")
        assert ws is None and s.status == 426, s
        assert s.header_all("sec-websocket-version") == ["13"], s
        s, ws = ws_connect(c, ws_path(), version=None)
        assert ws is None and s.status in (400, 426), s


def test_ws_asgi_scope_says_http_2(harness, backends):
    b = backends.ws("asgi")
    g = ws_gateway(harness, b)
    with H2Client(g.port) as c:
        s, ws = ws_connect(c, ws_path() + "?q=1", protocols="chat.v1")
        assert s.status == 200, s
        ws.send_text("scope")
        sc = json.loads(ws.recv_message().text)
        assert sc["type"] == "websocket" and sc["query_string"] == "q=1", sc
        assert sc["subprotocols"] == ["chat.v1"], sc
        assert sc["http_version"] == "2", sc
        ws.send_close(1000)
        ws.expect_close(1000, answer=False)


def test_ws_client_reset_tells_the_app(harness, backends):
    """RST_STREAM on a WebSocket's stream is the TCP reset of HTTP/1.1: the app hears its
    client went away (1006), the connection goes on."""
    b = backends.ws("asgi")
    g = ws_gateway(harness, b)
    p = ws_path()
    with H2Client(g.port) as c:
        s, ws = ws_connect(c, p)
        assert s.status == 200
        ws.send_text("x")
        assert ws.recv_message().text == "x"
        c.reset(s.id, H.CANCEL)
        wait_until(lambda: [e for e in b.events(p) if e["event"] == "disconnect"],
                   timeout=5, what="the app told of the reset")
        assert c.get("/ws/after-reset").status == 200


# ---- TLS with ALPN h2 -----------------------------------------------------------------------

def _tls_available():
    readme = (gw.REPO / "config" / "README.md").read_text()
    return "tls" in readme and re.search(r"^\s*tls:", readme, re.M) is not None


def make_cert(d):
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("h2_tls"))


def tls_gateway(harness, cert, upstreams, routes=None, http2=None, **over):
    port = free_port()
    listener = {"address": "127.0.0.1:%d" % port,
                "tls": {"certificates": [{"cert": str(cert[0]), "key": str(cert[1])}]}}
    if http2 is not None:
        listener["http2"] = http2
    over.setdefault("listen", [listener])
    return harness.gateway(upstreams, routes, port=port, **over)


class TestTls:
    """The functional basics over TLS, h2 chosen by ALPN."""

    def test_alpn_h2_get_post_and_settings(self, harness, cert):
        u = harness.upstream()
        g = tls_gateway(harness, cert, [u.addr])
        with H2Client(g.port, tls=H.tls_client_context()) as c:
            assert c.alpn == "h2"
            st = c.wait_settings()
            assert st.get(H.ENABLE_CONNECT_PROTOCOL) == 1, st
            s = c.get("/echo?tls", scheme="https")
            assert s.status == 200 and s.json()["path"] == "/echo?tls", s
            data = os.urandom(2 * MIB)
            s = c.response(c.request("POST", "/sink", body=data, scheme="https"), timeout=30)
            assert s.json()["sha256"] == hashlib.sha256(data).hexdigest()
            assert_clean(c)

    def test_curl_and_nghttp_over_tls(self, harness, cert):
        u = harness.upstream()
        g = tls_gateway(harness, cert, [u.addr])
        url = "https://127.0.0.1:%d" % g.port
        p = run([CURL, "-sSk", "--http2", "-w", "\n%{http_version} %{http_code}",
                 url + "/echo?curl-tls"])
        assert p.returncode == 0 and p.stdout.endswith(b"\n2 200"), p
        p = run([NGHTTP, "-nv", url + "/echo?nghttp-tls"])
        assert p.returncode == 0 and b":status: 200" in p.stdout, p

    def test_http2_off_offers_only_http11(self, harness, cert):
        u = harness.upstream()
        g = tls_gateway(harness, cert, [u.addr], http2="off")
        ctx = H.tls_client_context(alpn=("h2", "http/1.1"))
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                assert s.selected_alpn_protocol() in (None, "http/1.1")
        p = run([CURL, "-sSk", "--http2", "-w", "\n%{http_version}",
                 "https://127.0.0.1:%d/echo" % g.port])
        assert p.returncode == 0 and p.stdout.endswith(b"\n1.1"), p

    def test_bad_preface_over_tls_is_a_protocol_error(self, harness, cert):
        u = harness.upstream()
        g = tls_gateway(harness, cert, [u.addr])
        with H2Client(g.port, tls=H.tls_client_context(), start=False) as c:
            assert c.alpn == "h2"
            c.send_raw(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            last, code, _ = c.wait_goaway(timeout=5)
            assert code == H.PROTOCOL_ERROR, H.err_name(code)
            c.wait_closed(3)

    def test_ws_over_tls(self, harness, cert, backends):
        b = backends.ws("asgi")
        g = tls_gateway(harness, cert, {"app": b.upstream})
        with H2Client(g.port, tls=H.tls_client_context()) as c:
            hs = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                  (":authority", "app.test"), (":path", ws_path()),
                  ("sec-websocket-version", "13")]
            sid = c.request(raw_headers=hs, end_stream=False)
            s = c.head(sid)
            assert s.status == 200, s
            ws = W.WsConn(None, sock=StreamSocket(c, sid), timeout=5)
            ws.send_text("scope")
            sc = json.loads(ws.recv_message().text)
            assert sc["scheme"] == "wss", sc
            ws.send_close(1000)
            ws.expect_close(1000, answer=False)


# ---- drain of long-lived streams, timeouts --------------------------------------------------

@pytest.mark.parametrize("reload_first", [False, True], ids=["plain", "after_reload"])
def test_sigterm_ends_event_streams_and_closes_websockets_1001(harness, backends, reload_first):
    """At SIGTERM an event stream on h2 ends as a complete response (END_STREAM) and an RFC 8441
    WebSocket gets 1001, then the process exits. Also when a reload sent its GOAWAY first (the
    connection then already said goodbye, but its streams must still be ended)."""
    b = backends.ws("asgi")
    u = harness.upstream()
    g = h2_gateway(harness, {"app": b.upstream, "web": gw.upstream_conf([u.addr])},
                   routes=[{"match": {"path": "/ws/"}, "upstream": "app"},
                           {"match": {"path": "/"}, "upstream": "web"}],
                   shutdown={"delay": "0s", "timeout": "10s"}, sse={"heartbeat": "0s"})
    with H2Client(g.port, timeout=10) as c:
        c.wait_settings()
        s, ws = ws_connect(c, ws_path())
        assert s.status == 200
        ws.send_text("before")
        assert ws.recv_message().text == "before"
        ev = c.request("GET", "/events?n=1000&ms=100")
        assert c.head(ev).status == 200
        c.wait(lambda: b"event 1" in c.streams[ev].body, 5, "two events")
        if reload_first:
            g.reload(g.config)
            c.wait_goaway(timeout=3)
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        code, _ = ws.expect_close(1001, answer=True, timeout=5)
        assert code == 1001
        es = c.response(ev, timeout=5)
        assert es.ended and es.reset is None, es
        assert time.monotonic() - t0 < 3
    assert g.wait_exit(10) == 0


def test_request_body_timeout_is_408_per_stream(harness):
    """A stream whose body stops coming gets 408 after timeouts.body; the other streams of the
    connection are not touched."""
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr], timeouts={"body": "500ms"})
    with H2Client(g.port, timeout=10) as c:
        c.wait_settings()
        sid = c.request("POST", "/echo?stalled", end_stream=False,
                        headers=[("content-length", "1000")])
        c.send_data(sid, b"x" * 10, end_stream=False)
        t0 = time.monotonic()
        for i in range(3):
            assert c.get("/echo?meanwhile=%d" % i).status == 200
        s = c.response(sid, timeout=5)
        assert s.status == 408, s
        assert 0.4 < time.monotonic() - t0 < 3
        assert c.get("/echo?after").status == 200
        assert not c.goaways
    line = g.wait_stderr(r"408 .*timeouts\.body", timeout=3)
    assert line


def test_idle_connection_gets_goaway_then_closes(harness):
    u = harness.upstream()
    g = h2_gateway(harness, [u.addr], timeouts={"idle": "500ms"})
    with H2Client(g.port, timeout=10) as c:
        assert c.get("/echo").status == 200
        t0 = time.monotonic()
        last, code, _ = c.wait_goaway(timeout=3)
        assert code == H.NO_ERROR and last == 1, (last, code)
        assert 0.4 < time.monotonic() - t0 < 2.5
        c.wait_closed(timeout=3)
