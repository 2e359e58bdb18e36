# SPDX-License-Identifier: MIT
"""The admin listener (admin.address): /healthz, /readyz and /metrics, `gatehouse
--healthcheck`, and the shutdown sequence a load balancer sees: /readyz fails at SIGTERM while
traffic is still served for shutdown.delay, then the drain ends WebSockets (1001) and event
streams (a complete response), all within shutdown.timeout. Real processes on loopback; the
upstream is tests/apps/upstream.py."""

import re
import signal
import socket
import subprocess
import threading
import time

import gw
import wsclient as W
from gw import Conn, free_port, get, wait_until


def admin_get(port, path, method="GET"):
    with Conn(port, timeout=5) as c:
        return c.request(method, path, host="127.0.0.1")


def metrics(port):
    """The /metrics samples as {(name, frozenset(labels)): value}."""
    r = admin_get(port, "/metrics")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4"), r
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, "not Prometheus text: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def sample(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())), 0.0)


def start(harness, up=None, **over):
    admin = free_port()
    up = up or harness.upstream("plain")
    g = harness.gateway({"app": gw.upstream_conf([up.addr])},
                        routes=[{"match": {"path": "/api/"}, "upstream": "app"},
                                {"match": {"path": "/"}, "upstream": "app"}],
                        admin={"address": "127.0.0.1:%d" % admin}, **over)
    return g, admin, up


def test_healthz_readyz_and_unknown_paths(harness):
    g, admin, _ = start(harness)
    r = admin_get(admin, "/healthz")
    assert (r.status, r.body) == (200, b"ok\n"), r
    r = admin_get(admin, "/readyz")
    assert (r.status, r.body) == (200, b"ready\n"), r
    assert admin_get(admin, "/nope").status == 404
    r = admin_get(admin, "/healthz", method="HEAD")
    assert r.status == 200 and r.body == b"", r
    assert admin_get(admin, "/healthz", method="POST").status == 405
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 "), "a broken request is refused"
    g.wait_stderr(r"admin: malformed request \(.*\): 400")
    g.wait_stderr(r"admin: method POST: 405")
    assert admin_get(admin, "/healthz").status == 200  # and the listener serves on
    assert get(g.port, "/echo").status == 200   # the traffic listener is not the admin one


def test_metrics_count_requests_by_route_status_and_upstream(harness):
    g, admin, _ = start(harness)
    before = metrics(admin)
    for _ in range(3):
        assert get(g.port, "/api/echo").status == 200
    assert get(g.port, "/status/404").status == 404
    assert get(g.port, "/echo").status == 200

    def counted():
        # Each worker counts an exchange when it frees it, a moment after the client has its
        # response: wait for all five.
        ms = metrics(admin)
        api = sample(ms, "gatehouse_requests_total", route="/api", upstream="app", code="2xx")
        api -= sample(before, "gatehouse_requests_total", route="/api", upstream="app",
                      code="2xx")
        root_ok = sample(ms, "gatehouse_requests_total", route="/", upstream="app", code="2xx")
        root_404 = sample(ms, "gatehouse_requests_total", route="/", upstream="app",
                          code="4xx")
        return ms if api >= 3 and root_ok >= 1 and root_404 >= 1 else None
    ms = wait_until(counted, what="the requests counted by route, upstream and status class")
    api = {"route": "/api", "upstream": "app"}
    assert sample(ms, "gatehouse_request_duration_seconds_count", **api) >= 3
    assert sample(ms, "gatehouse_request_duration_seconds_bucket", le="+Inf", **api) >= 3
    assert sample(ms, "gatehouse_received_bytes_total", **api) > 0
    assert sample(ms, "gatehouse_sent_bytes_total", **api) > \
        sample(before, "gatehouse_sent_bytes_total", **api)
    assert sample(ms, "gatehouse_connections", protocol="http1") >= 0
    assert sample(ms, "gatehouse_config_last_reload_successful") == 1


def test_metrics_gauges_follow_open_event_streams(harness):
    up = harness.upstream("plain")
    g, admin, _ = start(harness, up=up)
    # An event stream held open: the gauge counts it while it streams.
    c = Conn(g.port, timeout=10)
    c.send(b"GET /events?n=50&ms=100 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    wait_until(lambda: sample(metrics(admin), "gatehouse_sse_streams") == 1,
               what="the event stream counted")
    assert sample(metrics(admin), "gatehouse_upstream_in_flight", upstream="app") >= 1
    c.close()
    wait_until(lambda: sample(metrics(admin), "gatehouse_sse_streams") == 0,
               what="the event stream uncounted")
    wait_until(lambda: sample(metrics(admin), "gatehouse_upstream_in_flight", upstream="app")
               == 0, what="nothing in flight")


def test_metrics_count_reloads_ok_and_failed(harness):
    g, admin, up = start(harness)
    cfg = g.make_config({"app": gw.upstream_conf([up.addr])},
                        admin={"address": "127.0.0.1:%d" % admin})
    g.reload(cfg)
    wait_until(lambda: sample(metrics(admin), "gatehouse_config_reloads_total", result="ok")
               == 1, what="a reload counted")
    g.write_config("upstreams: [broken\n")
    g.signal(signal.SIGHUP)
    ms = wait_until(lambda: (lambda m: m if sample(m, "gatehouse_config_reloads_total",
                                                   result="failed") == 1 else None)(
        metrics(admin)), what="a failed reload counted")
    assert sample(ms, "gatehouse_config_last_reload_successful") == 0
    assert get(g.port, "/echo").status == 200       # the running configuration serves on


def test_healthcheck_command(harness):
    g, admin, _ = start(harness)
    ok = subprocess.run([str(gw.GATEHOUSE_BIN), "--healthcheck", "-c", str(g.config_path)],
                        capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    ok = subprocess.run([str(gw.GATEHOUSE_BIN), "--healthcheck", "http://127.0.0.1:%d/healthz" % admin],
                        capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(gw.GATEHOUSE_BIN), "--healthcheck", "http://127.0.0.1:%d/nope" % admin],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 1 and "answered 404" in bad.stderr, bad.stderr
    down = subprocess.run([str(gw.GATEHOUSE_BIN), "--healthcheck",
                           "http://127.0.0.1:%d/healthz" % free_port()],
                          capture_output=True, text=True, timeout=10)
    assert down.returncode == 1 and "cannot connect" in down.stderr, down.stderr


def test_sigterm_readyz_fails_first_then_drain_ends_streams(harness):
    """The rolling-restart sequence: at SIGTERM /readyz answers 503 at once while requests are
    still served for shutdown.delay; then the drain: a WebSocket gets 1001, an event stream
    ends as a complete response, and the process exits 0 within shutdown.timeout."""
    g, admin, _ = start(harness, shutdown={"delay": "1500ms", "timeout": "5s"})
    stream = Conn(g.port, timeout=10)
    stream.send(b"GET /events?n=1000&ms=100 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    wait_until(lambda: sample(metrics(admin), "gatehouse_sse_streams") == 1,
               what="the event stream open")
    polled = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                polled.append((time.monotonic(), admin_get(admin, "/readyz").status))
            except OSError:
                polled.append((time.monotonic(), None))
            time.sleep(0.05)
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    wait_until(lambda: any(s == 503 for _, s in polled), what="/readyz failing")
    # Still serving during shutdown.delay, on new connections too.
    served = 0
    while time.monotonic() - t0 < 1.0:
        assert get(g.port, "/echo").status == 200
        served += 1
    assert served > 0
    head = stream.read_head(timeout=5)
    assert head.status == 200, head
    r = stream.read_body(head, timeout=6)          # ends: the last chunk came
    assert b"data:" in r.body, r.body
    rc = g.wait_exit(6)
    stop.set()
    t.join(2)
    assert rc == 0, g.stderr_text()[-2000:]
    first_503 = min(ts for ts, s in polled if s == 503)
    assert first_503 - t0 < 0.5, first_503 - t0
    assert all(s == 200 for ts, s in polled if ts < t0), polled
    assert time.monotonic() - t0 < 5 + 1


def test_websocket_counted_and_closed_1001_by_the_drain(harness, tmp_path):
    from test_websocket import start_gatehouse_asgi
    b = start_gatehouse_asgi(tmp_path)
    try:
        admin = free_port()
        g = harness.gateway({"ws": b.upstream}, routes=[{"match": {"path": "/"},
                                                         "upstream": "ws"}],
                            admin={"address": "127.0.0.1:%d" % admin},
                            shutdown={"delay": "0s", "timeout": "3s"})
        with W.connect(g.port, "/ws/x") as c:
            c.send_text("hi")
            assert c.recv_message().text == "hi"
            assert sample(metrics(admin), "gatehouse_websockets") == 1
            g.signal(signal.SIGTERM)
            c.expect_close(1001, timeout=3)
        assert g.wait_exit(4) == 0
    finally:
        b.stop()


def test_a_route_pointed_elsewhere_by_a_reload_keeps_its_old_series(harness):
    """Counts stay with the upstream that served them: after a reload sends /api/ to another
    upstream, its requests start a new series."""
    g, admin, up = start(harness)
    other = harness.upstream("other")
    assert get(g.port, "/api/echo").status == 200
    cfg = g.make_config({"app": gw.upstream_conf([up.addr]),
                         "new": gw.upstream_conf([other.addr])},
                        routes=[{"match": {"path": "/api/"}, "upstream": "new"},
                                {"match": {"path": "/"}, "upstream": "app"}],
                        admin={"address": "127.0.0.1:%d" % admin})
    g.reload(cfg)
    wait_until(lambda: get(g.port, "/api/echo").json()["name"] == "other",
               what="/api/ served by the other upstream")
    ms = wait_until(lambda: (lambda m: m if sample(m, "gatehouse_requests_total", route="/api",
                                                   upstream="new", code="2xx") >= 1
                             else None)(metrics(admin)), what="the new series")
    assert sample(ms, "gatehouse_requests_total", route="/api", upstream="app", code="2xx") >= 1


def test_stalled_admin_clients_do_not_keep_probes_out(harness):
    """Forty connections that never finish their request: each gets at most 2 s, and the
    oldest make room for new ones, so /healthz still answers."""
    g, admin, _ = start(harness)
    idle = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", admin), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\n")          # and nothing more
            idle.append(s)
        t0 = time.monotonic()
        r = admin_get(admin, "/healthz")
        assert r.status == 200 and time.monotonic() - t0 < 1, r
        ok = subprocess.run([str(gw.GATEHOUSE_BIN), "--healthcheck",
                             "http://127.0.0.1:%d/healthz" % admin],
                            capture_output=True, text=True, timeout=10)
        assert ok.returncode == 0, ok.stderr
        # The stalled ones are closed by their deadline.
        idle[-1].settimeout(4)
        t0 = time.monotonic()
        assert idle[-1].recv(100) == b"" and time.monotonic() - t0 < 3
    finally:
        for s in idle:
            s.close()


def test_healthcheck_on_an_ipv6_admin_address(harness):
    admin = free_port("::1")
    up = harness.upstream("plain")
    g = harness.gateway({"app": gw.upstream_conf([up.addr])},
                        admin={"address": "[::1]:%d" % admin})
    ok = subprocess.run([str(gw.GATEHOUSE_BIN), "--healthcheck", "-c", str(g.config_path)],
                        capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr


def test_event_stream_starting_during_the_drain_ends_at_once(harness):
    """The stream's head comes after the drain began: it ends right after it, a complete
    response, instead of running until shutdown.timeout."""
    g, admin, _ = start(harness, shutdown={"delay": "0s", "timeout": "8s"})
    stream = Conn(g.port, timeout=10)
    stream.send(b"GET /events?n=1000&ms=100&head_ms=1000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    time.sleep(0.3)
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    head = stream.read_head(timeout=5)
    assert head.status == 200, head
    stream.read_body(head, timeout=5)              # the last chunk came: a complete response
    assert g.wait_exit(8) == 0
    assert time.monotonic() - t0 < 4, time.monotonic() - t0
