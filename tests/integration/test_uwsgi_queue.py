# SPDX-License-Identifier: MIT
"""The concurrency limit and FIFO queue of uwsgi upstreams (`concurrency`, `queue`).

The backend is a threaded uwsgi server on a unix socket that counts the connections it holds
at once and records the order requests reach it, so what the gateway sends can be observed
exactly: how many at a time across both worker threads, in which order, and which never came.
gatehouse.wsgi stands in where the app's side of the queue matters (X-Request-Start).
Every wait is bounded; every process is stopped by its PID."""

import json
import socket
import threading
import time

import pytest

import gw
from gw import Conn, build_request, free_port, make_config, wait_until
from test_uwsgi import GhWsgi, uwsgi_upstream


def parse_vars(data):
    """The vars of one uwsgi packet (header + vars), as a dict."""
    size = int.from_bytes(data[1:3], "little")
    body, out, i = data[4:4 + size], {}, 0
    while i < len(body):
        kl = int.from_bytes(body[i:i + 2], "little")
        k = body[i + 2:i + 2 + kl].decode("latin-1")
        i += 2 + kl
        vl = int.from_bytes(body[i:i + 2], "little")
        out[k] = body[i + 2:i + 2 + vl].decode("latin-1")
        i += 2 + vl
    return out


class CountingServer:
    """A uwsgi server answering each request on its own thread after `hold` ms (a query
    parameter, default 0) with a short 200, or with `reply` raw bytes when set."""

    def __init__(self, path, reply=None):
        self.path = str(path)
        self.reply = reply
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0
        self.seen = []          # PATH_INFO + "?" + QUERY_STRING, in arrival order
        self.vars = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.threads = []
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    @property
    def server(self):
        return "unix:" + self.path

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        # Counted from accept until just before the last response byte goes out: once the
        # gateway has the whole response it may give the slot to the next request at once.
        held = [True]

        def done():
            if held[0]:
                held[0] = False
                with self.lock:
                    self.now -= 1
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)
        try:
            c.settimeout(10)
            data = b""
            while len(data) < 4 or len(data) < 4 + int.from_bytes(data[1:3], "little"):
                piece = c.recv(65536)
                if not piece:
                    return
                data += piece
            v = parse_vars(data)
            with self.lock:
                self.seen.append(v.get("PATH_INFO", "") + "?" + v.get("QUERY_STRING", ""))
                self.vars.append(v)
            q = dict(p.split("=", 1) for p in v.get("QUERY_STRING", "").split("&") if "=" in p)
            time.sleep(int(q.get("hold", "0")) / 1000)
            if self.reply is not None:
                reply = self.reply
            else:
                body = v.get("PATH_INFO", "").encode()
                if "size" in q:
                    body = b"b" * int(q["size"])
                # close=1: no Content-Length, the close ends the body (uwsgi's usual way).
                length = b"" if "close" in q else b"Content-Length: %d\r\n" % len(body)
                reply = b"HTTP/1.1 200 OK\r\n%s\r\n%s" % (length, body)
            c.sendall(reply[:-1])
            done()
            c.sendall(reply[-1:])
        except OSError:
            pass
        finally:
            done()
            c.close()

    def stop(self):
        self._stop.set()
        self.t.join(5)
        for t in self.threads:
            t.join(10)
        self.sock.close()


@pytest.fixture
def counting(tmp_path):
    s = CountingServer(tmp_path / "count.sock")
    yield s
    s.stop()


def start_gateway(harness, servers, concurrency, queue=None, **over):
    port = free_port()
    up = uwsgi_upstream(servers, concurrency=concurrency,
                        queue=dict({"limit": 100, "timeout": "10s"}, **(queue or {})))
    return harness.gateway(config=make_config(port, {"app": up}, **over), port=port)


def get(port, target, timeout=15, headers=None):
    with Conn(port, timeout=timeout) as c:
        return c.request("GET", target, headers=headers)


def in_threads(fns):
    """Runs each callable on its own thread; returns their results (or exceptions) in order."""
    out = [None] * len(fns)

    def run(i, f):
        try:
            out[i] = f()
        except Exception as e:  # reported by the caller's asserts
            out[i] = e
    ts = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def test_concurrency_is_never_exceeded_across_worker_threads(harness, counting):
    g = start_gateway(harness, [counting.server], concurrency=3)
    rs = in_threads([lambda i=i: get(g.port, "/r%d?hold=150" % i) for i in range(24)])
    assert all(not isinstance(r, Exception) and r.status == 200 for r in rs), rs
    assert counting.max == 3, "the backend held %d requests at once" % counting.max
    assert len(counting.seen) == 24
    logs = g.wait_access(lambda e: e["target"].startswith("/r"), count=24)
    # Every one went through the gate; some of them had to wait.
    assert all("queue_ms" in e for e in logs)
    assert max(e["queue_ms"] for e in logs) >= 100


def test_queue_is_served_in_arrival_order(harness, counting):
    g = start_gateway(harness, [counting.server], concurrency=1)
    first = threading.Thread(target=get, args=(g.port, "/first?hold=800"))
    first.start()
    wait_until(lambda: counting.now == 1, timeout=5, what="the first request at the backend")
    conns = []
    try:
        # Separate connections land on both worker threads; the order must still hold.
        for i in range(8):
            c = Conn(g.port, timeout=15)
            c.send(build_request("GET", "/q%d" % i))
            conns.append(c)
            time.sleep(0.03)
        for c in conns:
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()
        first.join(15)
    assert counting.seen == ["/first?hold=800"] + ["/q%d?" % i for i in range(8)]


def test_queue_full_is_503_with_retry_after(harness, counting):
    g = start_gateway(harness, [counting.server], concurrency=1,
                      queue={"limit": 1, "retry_after": "3s"})
    held = threading.Thread(target=get, args=(g.port, "/held?hold=1000"))
    held.start()
    wait_until(lambda: counting.now == 1, timeout=5, what="the first request at the backend")
    queued = Conn(g.port, timeout=15)
    queued.send(build_request("GET", "/queued"))
    time.sleep(0.2)
    t0 = time.monotonic()
    r = get(g.port, "/refused")
    assert time.monotonic() - t0 < 0.5, "a full queue answers at once"
    assert r.status == 503
    assert r.header("Retry-After") == "3"
    assert queued.read_response().status == 200
    queued.close()
    held.join(15)
    assert "/refused?" not in counting.seen
    e = g.access_for("/refused")[0]
    assert e["status"] == 503 and e["error"] == "upstream queue full"
    assert "queue full" in g.stderr_text()
    q = g.access_for("/queued")[0]
    assert 500 <= q["queue_ms"] <= 5000, q


def test_queue_timeout_is_503_with_retry_after(harness, counting):
    g = start_gateway(harness, [counting.server], concurrency=1, queue={"timeout": "300ms"})
    held = threading.Thread(target=get, args=(g.port, "/held?hold=1500"))
    held.start()
    wait_until(lambda: counting.now == 1, timeout=5, what="the first request at the backend")
    t0 = time.monotonic()
    r = get(g.port, "/late")
    took = time.monotonic() - t0
    held.join(15)
    assert r.status == 503 and r.header("Retry-After") == "1"
    assert 0.25 <= took < 1.2, took
    assert "/late?" not in counting.seen
    e = g.access_for("/late")[0]
    assert e["error"] == "upstream queue timed out" and 250 <= e["queue_ms"] < 1200, e


def test_a_request_the_worker_cannot_take_is_refused_before_it_waits(harness, counting):
    g = start_gateway(harness, [counting.server], concurrency=1, queue={"limit": 0},
                      limits={"header_bytes": "128k", "headers": 100})
    held = threading.Thread(target=get, args=(g.port, "/held?hold=800"))
    held.start()
    wait_until(lambda: counting.now == 1, timeout=5, what="the first request at the backend")
    # The queue takes no one: a 503 here would mean it was judged only after asking.
    assert get(g.port, "/nul%00x").status == 400
    assert get(g.port, "/x", headers=[("X-Big-%d" % i, "v" * 14000) for i in range(5)]
               ).status == 431
    assert get(g.port, "/full").status == 503
    held.join(15)


def test_queued_request_is_dropped_when_its_client_leaves(harness, counting):
    g = start_gateway(harness, [counting.server], concurrency=1)
    held = threading.Thread(target=get, args=(g.port, "/held?hold=700"))
    held.start()
    wait_until(lambda: counting.now == 1, timeout=5, what="the first request at the backend")
    gone = Conn(g.port)
    gone.send(build_request("GET", "/gone"))
    time.sleep(0.1)
    gone.close()
    time.sleep(0.1)
    r = get(g.port, "/after")
    held.join(15)
    assert r.status == 200
    assert counting.seen == ["/held?hold=700", "/after?"]
    e = g.access_for("/gone")[0]
    assert e["status"] == 0


def test_a_slow_reader_does_not_keep_the_slot(harness, counting):
    """The worker's response is whole in the gateway's buffer: its slot goes to the next
    request while the client still reads, for a Content-Length response as for one
    delimited by the close."""
    g = start_gateway(harness, [counting.server], concurrency=1, queue={"timeout": "3s"})
    for target in ("/cl?size=3000000", "/close?size=3000000&close=1"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small window and an Ethernet MSS: loopback's socket buffers cannot take it all.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1448)
        s.settimeout(10)
        s.connect(("127.0.0.1", g.port))
        try:
            s.sendall(build_request("GET", target))
            s.recv(1024)
            t0 = time.monotonic()
            assert get(g.port, "/next").status == 200
            assert time.monotonic() - t0 < 1.5, "the slow reader kept the only slot"
        finally:
            s.close()


def test_no_slot_is_lost_to_failures(harness, tmp_path, counting):
    """With concurrency 1, any slot kept by a failed exchange would stall the next request."""
    bad = CountingServer(tmp_path / "bad.sock", reply=b"garbage\r\n\r\n")
    early = CountingServer(tmp_path / "early.sock", reply=b"")
    try:
        port = free_port()
        ups = {}
        for name, srv in (("bad", bad), ("early", early), ("ok", counting),
                          ("absent", None)):
            servers = [srv.server if srv else "unix:" + str(tmp_path / "absent.sock")]
            ups[name] = uwsgi_upstream(servers, concurrency=1,
                                       queue={"limit": 10, "timeout": "2s"},
                                       timeouts={"first_byte": "300ms"})
        routes = [{"match": {"path": "/%s/" % n}, "upstream": n} for n in ups]
        g = harness.gateway(config=make_config(port, ups, routes), port=port)
        for i in range(3):
            assert get(g.port, "/bad/x").status == 502
            assert get(g.port, "/early/x").status == 502
            assert get(g.port, "/absent/x").status == 502
            assert get(g.port, "/ok/x?hold=600").status == 504  # first_byte 300ms
            # A client that leaves while the worker works gives its slot back too.
            c = Conn(g.port)
            c.send(build_request("GET", "/ok/leave?hold=300"))
            wait_until(lambda: counting.seen.count("/ok/leave?hold=300") == i + 1, timeout=5,
                       what="request at the backend")
            c.close()
        t0 = time.monotonic()
        for name in ("bad", "early", "absent"):
            get(g.port, "/%s/y" % name)
        assert get(g.port, "/ok/y").status == 200
        assert time.monotonic() - t0 < 1.9, "a slot was left taken (queue.timeout is 2s)"
        assert counting.seen[-1] == "/ok/y?"
    finally:
        bad.stop()
        early.stop()


def test_a_reload_keeps_the_limit_and_a_raised_limit_admits_at_once(harness, counting):
    port = free_port()

    def cfg(conc):
        return make_config(port, {"app": uwsgi_upstream([counting.server], concurrency=conc,
                                                        queue={"limit": 10, "timeout": "10s"})})
    g = harness.gateway(config=cfg(1), port=port)
    a = threading.Thread(target=get, args=(g.port, "/a?hold=3000"))
    a.start()
    wait_until(lambda: counting.now == 1, timeout=5, what="the first request at the backend")
    # Same limit after a reload: the new configuration's requests share the old slots.
    g.reload(cfg(1))
    g.wait_stderr("configuration reloaded")
    b = threading.Thread(target=get, args=(g.port, "/b"))
    b.start()
    time.sleep(0.5)
    assert counting.seen == ["/a?hold=3000"], "/b passed a full gate after the reload"
    # Raised: /b is admitted now, while /a still holds its slot.
    g.reload(cfg(2))
    wait_until(lambda: "/b?" in counting.seen, timeout=2, what="/b admitted by the raise")
    assert counting.now >= 1 and a.is_alive()
    b.join(15)
    a.join(15)
    assert counting.max == 2


def test_queue_time_reaches_the_app_as_x_request_start(harness, tmp_path):
    app = GhWsgi(tmp_path, workers=2)
    try:
        port = free_port()
        up = uwsgi_upstream([app.server], concurrency=1)
        g = harness.gateway(config=make_config(port, {"app": up}), port=port)
        slow = threading.Thread(target=get, args=(g.port, "/sleep?s=0.6"))
        slow.start()
        time.sleep(0.15)
        sent = time.time()
        r = get(g.port, "/env", headers=[("X-Request-Start", "t=1")])
        done = time.time()
        slow.join(15)
        assert r.status == 200
        start = r.json()["HTTP_X_REQUEST_START"]
        assert start.startswith("t=")
        t = int(start[2:]) / 1e6
        # The time it asked for a slot (not the client's value, not the time it got one).
        assert sent - 0.05 <= t <= sent + 0.3, (sent, t, done)
        assert done - t >= 0.3
        e = g.access_for("/env")[0]
        assert e["queue_ms"] >= 300, e
    finally:
        app.stop()


def test_without_concurrency_nothing_waits(harness, counting):
    port = free_port()
    g = harness.gateway(config=make_config(port, {"app": uwsgi_upstream([counting.server])}),
                        port=port)
    rs = in_threads([lambda i=i: get(g.port, "/u%d?hold=300" % i) for i in range(6)])
    assert all(r.status == 200 for r in rs)
    assert counting.max == 6
    logs = g.wait_access(lambda e: e["target"].startswith("/u"), count=6)
    assert all(e["queue_ms"] < 100 for e in logs), [e["queue_ms"] for e in logs]
