# SPDX-License-Identifier: MIT
"""Upstream servers given by host name: resolved through /etc/hosts and through a name server
(resolver.nameservers), and re-resolved every `resolve` interval, as containers need when a
service comes back on a new address. The name server is a small DNS responder on loopback
whose answer the test changes. Every kind of upstream: http (tests/apps/upstream.py), uwsgi
(gatehouse.wsgi over TCP) and asgi (gatehouse.asgi over TCP).

Every process is stopped by its PID; every wait is bounded."""

import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import gw
from gw import Conn, build_request, free_port, get, upstream_conf, wait_until


class FakeDNS:
    """Answers A queries for one name with |self.address| (TTL 1 s; a list gives one record
    per address); AAAA with no records;
    other names with NXDOMAIN. Counts the A queries it answered. With |self.delay| (seconds)
    every answer waits that long (None: none is sent)."""

    def __init__(self, name, address):
        self.name = name.lower().rstrip(".")
        self.address = address
        self.queries = 0
        self.received = 0           # queries of any kind, answered or not
        self.delay = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                q, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            delay = self.delay
            self.received += 1
            reply = self._answer(q)
            if reply is None or delay is None:
                continue
            if delay:
                threading.Timer(delay, self._send_late, (reply, peer)).start()
            else:
                self.sock.sendto(reply, peer)

    def _send_late(self, reply, peer):
        try:
            self.sock.sendto(reply, peer)
        except OSError:
            pass

    def _answer(self, q):
        if len(q) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        labels, i = [], 12
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        i += 1
        if qd != 1 or i + 4 > len(q):
            return None
        qtype, _qclass = struct.unpack("!HH", q[i:i + 4])
        question = q[12:i + 4]
        name = ".".join(labels).lower()
        rd = flags & 0x0100
        if name != self.name:
            return struct.pack("!HHHHHH", qid, 0x8183 | rd, 1, 0, 0, 0) + question
        if qtype != 1:  # AAAA and the rest: the name exists, no records of that type
            return struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 0, 0, 0) + question
        self.queries += 1
        addrs = [self.address] if isinstance(self.address, str) else list(self.address)
        answer = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + socket.inet_aton(a)
                          for a in addrs)
        return (struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, len(addrs), 0, 0) + question
                + answer)

    def close(self):
        self.running = False
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def dns():
    """Tests list it before |harness|, so that it outlives the gateway: a lookup still out when
    the gateway exits shows as a leak under AddressSanitizer."""
    d = FakeDNS("app.test", "127.0.0.1")
    yield d
    d.close()


def test_host_name_from_etc_hosts(harness):
    up = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf(["localhost:%d" % up.port])})
    r = get(g.port, "/name")
    assert r.status == 200, r
    assert r.header("X-Upstream-Name") == "A"


def test_host_name_from_configured_nameserver(dns, harness):
    up = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % up.port])},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    r = wait_until(lambda: get(g.port, "/name"), timeout=5, what="first answer")
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
                   timeout=5, what="a 200 through the resolved name")
    assert r.header("X-Upstream-Name") == "A"
    assert dns.queries >= 1


def test_unresolvable_name_is_503_then_served_when_it_resolves(dns, harness):
    up = harness.upstream("A")
    dns.name = "not-yet.test"  # app.test is NXDOMAIN for now
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % up.port], resolve="1s")},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    r = get(g.port, "/name")
    assert r.status in (502, 503), r
    dns.name = "app.test"
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
                   timeout=8, what="served once the name resolves")
    assert r.header("X-Upstream-Name") == "A"


def test_name_is_re_resolved_periodically(dns, harness):
    """The service moves from 127.0.0.1 to 127.0.0.2 (same port): within a few resolve
    intervals every request goes to the new address, idle keep-alive connections included."""
    port = free_port()
    a = harness.upstream("A", port=port, host="127.0.0.1")
    b = harness.upstream("B", port=port, host="127.0.0.2")
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % port], resolve="1s")},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
                   timeout=5, what="first 200")
    assert r.header("X-Upstream-Name") == "A"
    dns.address = "127.0.0.2"

    def moved():
        names = {get(g.port, "/name").header("X-Upstream-Name") for _ in range(4)}
        return names == {"B"}

    wait_until(moved, timeout=10, interval=0.3, what="requests to follow the new address")
    assert a.proc.poll() is None and b.proc.poll() is None


def test_connection_busy_while_the_name_moved_is_not_reused(dns, harness):
    """A connection in use when the answer changes finishes its request, then is retired:
    the next request goes to the new address, not to the old one over that connection."""
    port = free_port()
    harness.upstream("A", port=port, host="127.0.0.1")
    harness.upstream("B", port=port, host="127.0.0.2")
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % port], resolve="1s")},
                        workers=1, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
               timeout=5, what="first 200")
    with Conn(g.port) as c:
        c.send(build_request("GET", "/slow?ms=2500"))
        time.sleep(0.3)
        dns.address = "127.0.0.2"
        r = c.read_response(timeout=10)
        assert r.status == 200 and r.header("X-Upstream-Name") == "A"
        assert c.request("GET", "/name").header("X-Upstream-Name") == "B"


# ----------------------------------------------------------------------------------------
# uwsgi and asgi upstreams named by host name
# ----------------------------------------------------------------------------------------

ADAPTERS = gw.REPO / "adapters" / "python"

# One app for both servers: it says which server it is (GH_IDENT) in X-App and the body;
# /slow?ms=N answers after N ms.
IDENT_APP = """
import asyncio
import os
import time

IDENT = os.environ["GH_IDENT"].encode()


def _ms(qs):
    for part in qs.split("&"):
        if part.startswith("ms="):
            return int(part[3:])
    return 0


def wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(_ms(environ.get("QUERY_STRING", "")) / 1000)
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", IDENT.decode()),
                              ("Content-Length", str(len(IDENT)))])
    return [IDENT]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/slow":
        await asyncio.sleep(_ms(scope["query_string"].decode()) / 1000)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-app", IDENT),
                            (b"content-length", str(len(IDENT)).encode())]})
    await send({"type": "http.response.body", "body": IDENT})
"""


class TcpApp:
    """`python3 -m gatehouse.{wsgi,asgi} ident_app:{wsgi,asgi} --bind HOST:PORT` (|kind| uwsgi
    or asgi), one worker, answering with its |ident|. Stopped by PID."""

    def __init__(self, workdir, kind, ident, host="127.0.0.1", port=None):
        appdir = workdir / "identapp"
        appdir.mkdir(exist_ok=True)
        (appdir / "ident_app.py").write_text(IDENT_APP)
        self.port = port or free_port(host)
        self.errpath = workdir / ("%s-%s.err" % (kind, ident))
        env = dict(os.environ, PYTHONPATH=str(ADAPTERS), PYTHONUNBUFFERED="1", GH_IDENT=ident)
        module = "wsgi" if kind == "uwsgi" else "asgi"
        with open(self.errpath, "ab") as err:
            self.proc = subprocess.Popen(
                [gw.PYTHON, "-m", "gatehouse." + module, "ident_app:" + module, "--bind",
                 "%s:%d" % (host, self.port), "--workers", "1", "--chdir", str(appdir)],
                cwd=str(appdir), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        wait_until(lambda: "worker booted" in self.log() or self.proc.poll() is not None,
                   timeout=20, what="gatehouse.%s booted" % kind)
        assert self.proc.poll() is None, self.log()

    def log(self):
        return self.errpath.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def tcp_apps(tmp_path):
    started = []

    def start(kind, ident, **kw):
        a = TcpApp(tmp_path, kind, ident, **kw)
        started.append(a)
        return a
    yield start
    for a in started:
        a.stop()


def app_upstream(kind, servers, **over):
    u = {
        "protocol": kind,
        "servers": list(servers),
        "timeouts": {"connect": "2s", "first_byte": "20s", "read": "20s", "send": "20s"},
    }
    if kind == "asgi":
        u["connections"] = 2
    return gw.deep_merge(u, over)


KINDS = ["uwsgi", "asgi"]


def ok(port, target="/"):
    """The response to a GET of |target| when it is a 200, else None (for wait_until)."""
    r = get(port, target)
    return r if r.status == 200 else None


@pytest.mark.parametrize("kind", KINDS)
def test_app_server_named_through_etc_hosts(harness, tcp_apps, kind):
    """`localhost:PORT` for a uwsgi or asgi upstream loads and is served (from /etc/hosts)."""
    app = tcp_apps(kind, "A")
    g = harness.gateway({"app": app_upstream(kind, ["localhost:%d" % app.port])})
    r = wait_until(lambda: ok(g.port), timeout=10, what="a 200 through localhost")
    assert r.header("X-App") == "A" and r.body == b"A"
    for _ in range(5):
        assert get(g.port, "/").header("X-App") == "A"


def established_to(host, port):
    """Established TCP connections to |host|:|port| (IPv4), from /proc/net/tcp."""
    want = "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(host))[0], port)
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for row in f:
            cols = row.split()
            n += cols[2] == want and cols[3] == "01"
    return n


@pytest.mark.parametrize("kind", KINDS)
def test_app_server_name_moves_to_another_address(dns, harness, tcp_apps, kind):
    """The name first answers 127.0.0.1, then 127.0.0.2 (another app server on the same port):
    within a few `resolve` intervals every request reaches the new one, while a request in
    flight on the old one when the answer changes still finishes there."""
    port = free_port()
    tcp_apps(kind, "A", host="127.0.0.1", port=port)
    tcp_apps(kind, "B", host="127.0.0.2", port=port)
    g = harness.gateway({"app": app_upstream(kind, ["app.test:%d" % port], resolve="1s")},
                        workers=1, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    r = wait_until(lambda: ok(g.port), timeout=10, what="a 200 through the resolved name")
    assert r.header("X-App") == "A"
    assert dns.queries >= 1
    with Conn(g.port) as c:
        c.send(build_request("GET", "/slow?ms=2500"))
        time.sleep(0.3)
        dns.address = "127.0.0.2"
        r = c.read_response(timeout=15)
        assert r.status == 200 and r.header("X-App") == "A", r

    def moved():
        return {get(g.port, "/").header("X-App") for _ in range(6)} == {"B"}

    wait_until(moved, timeout=10, interval=0.3, what="requests to follow the new address")
    if kind == "asgi":
        # The connections to the old address were retired: closed once they had no stream.
        g.wait_stderr(r"connection \d+ to app\.test:%d \(127\.0\.0\.1:%d\): the address is "
                      r"gone from the answer" % (port, port), timeout=5)
        wait_until(lambda: established_to("127.0.0.1", port) == 0, timeout=5,
                   what="no connection left to the old address")
        assert established_to("127.0.0.2", port) >= 1
    for _ in range(4):
        assert get(g.port, "/").header("X-App") == "B"


@pytest.mark.parametrize("kind", KINDS)
def test_unresolvable_app_server_name_is_502_and_logged(dns, harness, tcp_apps, kind):
    """A name that does not resolve: 502 at once, an error-log line naming the name and the
    DNS error; the other upstreams of the gateway keep serving. Once the name resolves (the
    next `resolve`), it is served."""
    app = tcp_apps(kind, "A")
    other = harness.upstream("H")
    dns.name = "not-yet.test"  # app.test is NXDOMAIN for now
    g = harness.gateway(
        {"app": app_upstream(kind, ["app.test:%d" % app.port], resolve="1s"),
         "other": [other.addr]},
        routes=[{"match": {"path": "/other"}, "upstream": "other"},
                {"match": {"path": "/"}, "upstream": "app"}],
        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    g.wait_stderr(r"cannot resolve app\.test", timeout=5)
    r = get(g.port, "/")
    assert r.status == 502, r
    g.wait_stderr(r"upstream app server app\.test:%d: cannot resolve app\.test: \S" % app.port,
                  timeout=5)
    assert get(g.port, "/other/name").status == 200
    line = g.access_for("/")[0]
    assert line["status"] == 502 and line["error"] == "upstream host name does not resolve"
    dns.name = "app.test"
    r = wait_until(lambda: ok(g.port), timeout=8, what="served once the name resolves")
    assert r.header("X-App") == "A"
    assert get(g.port, "/other/name").status == 200


@pytest.mark.parametrize("kind", KINDS)
def test_exchange_waits_for_the_first_answer(dns, harness, tcp_apps, kind):
    """A request that arrives before the name's first answer waits for it (within
    timeouts.connect) instead of failing."""
    app = tcp_apps(kind, "A")
    dns.delay = 1.5
    g = harness.gateway({"app": app_upstream(kind, ["app.test:%d" % app.port],
                                             timeouts={"connect": "5s"})},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    t0 = time.monotonic()
    r = get(g.port, "/")
    took = time.monotonic() - t0
    assert r.status == 200 and r.header("X-App") == "A", r
    assert 0.5 < took < 5, took  # it did wait for the answer, and no longer


@pytest.mark.parametrize("kind", KINDS)
def test_no_answer_within_connect_timeout_is_504(dns, harness, tcp_apps, kind):
    """The name server answers after timeouts.connect: the request waits that long, then 504
    with a line naming the name; once the answer is in, the name is served."""
    app = tcp_apps(kind, "A")
    dns.delay = 3
    g = harness.gateway({"app": app_upstream(kind, ["app.test:%d" % app.port],
                                             timeouts={"connect": "1s"})},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    t0 = time.monotonic()
    r = get(g.port, "/")
    took = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.7 < took < 4, took
    g.wait_stderr(r"cannot resolve app\.test: not resolved yet \(no answer within "
                  r"timeouts\.connect\)", timeout=3)
    # Also so that no lookup is left out when the gateway exits (a sanitizer would see it).
    r = wait_until(lambda: ok(g.port), timeout=10, what="served once the late answer is in")
    assert r.header("X-App") == "A"


@pytest.mark.parametrize("kind", KINDS)
def test_each_address_of_a_name_is_a_server(dns, harness, tcp_apps, kind):
    """A name with two addresses is two servers: both get requests. For uwsgi each address has
    its own in-flight count, shared by the worker threads: while one server is busy with a slow
    request, the next requests all go to the other (fewest in flight)."""
    port = free_port()
    tcp_apps(kind, "A", host="127.0.0.1", port=port)
    tcp_apps(kind, "B", host="127.0.0.2", port=port)
    dns.address = ["127.0.0.1", "127.0.0.2"]
    g = harness.gateway({"app": app_upstream(kind, ["app.test:%d" % port])},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    wait_until(lambda: ok(g.port), timeout=10, what="a 200 through the resolved name")
    seen = {get(g.port, "/").header("X-App") for _ in range(12)}
    assert seen == {"A", "B"}, seen
    if kind != "uwsgi":
        return
    with Conn(g.port) as c:
        c.send(build_request("GET", "/slow?ms=2000"))
        time.sleep(0.3)
        others = [get(g.port, "/").header("X-App") for _ in range(6)]
        r = c.read_response(timeout=10)
        assert r.status == 200
        busy = r.header("X-App")
        assert busy not in others and len(set(others)) == 1, (busy, others)


@pytest.mark.parametrize("kind", KINDS)
def test_client_leaves_and_reload_while_waiting_for_the_name(dns, harness, tcp_apps, kind):
    """A request waiting for the first answer whose client goes away is dropped; a reload
    while lookups are out replaces the pools (their lookups are cancelled); the new pools'
    answers then serve requests. Under AddressSanitizer nothing leaks or is used after free."""
    app = tcp_apps(kind, "A")
    dns.delay = 1.5
    ups = {"app": app_upstream(kind, ["app.test:%d" % app.port], timeouts={"connect": "5s"})}
    g = harness.gateway(ups, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    c = Conn(g.port)
    c.send(build_request("GET", "/"))
    time.sleep(0.3)
    c.close()
    time.sleep(0.2)
    since = g.stderr_size()
    g.reload(g.make_config(ups, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]}))
    g.wait_stderr("configuration reloaded", since=since)
    r = get(g.port, "/")
    assert r.status == 200 and r.header("X-App") == "A", r
    left, served = g.access_for("/", count=2)
    assert left["status"] == 0 and left["error"] == "client closed connection", left
    assert served["status"] == 200, served


@pytest.mark.parametrize("kind", KINDS)
def test_name_moves_away_from_a_dead_address(dns, harness, tcp_apps, kind):
    """The container died and came back elsewhere: while the name still gives the dead address
    requests fail (502), the gateway keeps serving; once the answer moves they are served by
    the new one, and nothing is left trying the old address."""
    port = free_port()
    tcp_apps(kind, "B", host="127.0.0.2", port=port)
    g = harness.gateway({"app": app_upstream(kind, ["app.test:%d" % port], resolve="1s")},
                        workers=1, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    wait_until(lambda: dns.queries >= 1, timeout=5, what="a first lookup")
    r = get(g.port, "/")
    assert r.status == 502, r
    dns.address = "127.0.0.2"
    r = wait_until(lambda: ok(g.port), timeout=10, what="served from the new address")
    assert r.header("X-App") == "B"
    if kind == "asgi":
        g.wait_stderr(r"connection \d+ to app\.test:%d \(127\.0\.0\.1:%d\): the address is "
                      r"gone from the answer" % (port, port), timeout=5)
        since = g.stderr_size()
        time.sleep(1.5)  # the old connections' reconnect backoff would have fired by now
        assert "127.0.0.1:%d" % port not in g.stderr_since(since)
    for _ in range(4):
        assert get(g.port, "/").header("X-App") == "B"


@pytest.mark.parametrize("kind", KINDS + ["http"])
def test_exit_with_a_lookup_out(dns, harness, tcp_apps, kind):
    """SIGTERM while a lookup is still out (the name server never answers): the gateway exits
    0, and the cancelled lookup is freed on the way out (`make asan` would report a leak)."""
    dns.delay = None
    if kind == "http":
        up = gw.upstream_conf(["app.test:1"], timeouts={"connect": "1s"})
    else:
        up = app_upstream(kind, ["app.test:1"], timeouts={"connect": "1s"})
    g = harness.gateway({"app": up}, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]},
                        shutdown={"delay": "0s", "timeout": "2s"})
    wait_until(lambda: dns.received > 0, timeout=3, what="a lookup sent")
    g.signal(signal.SIGTERM)
    assert g.wait_exit(5) == 0
