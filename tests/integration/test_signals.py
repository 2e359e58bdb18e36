# SPDX-License-Identifier: MIT
"""The command line and signals: --check, SIGHUP reload (good and bad files), SIGTERM/SIGINT
drain."""

import re
import signal
import socket
import subprocess
import time

import pytest

import gw
from gw import Conn, build_request, free_port, get, make_config, to_yaml, upstream_conf


def run_check(path, timeout=10):
    return subprocess.run([str(gw.GATEHOUSE_BIN), "--check", "-c", str(path)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def test_check_good_file(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(to_yaml(make_config(free_port(), ["127.0.0.1:%d" % free_port()])))
    p = run_check(path)
    assert p.returncode == 0, p.stderr.decode()


def test_check_minimal_file(tmp_path):
    path = tmp_path / "minimal.yaml"
    path.write_text("listen:\n  - address: \"127.0.0.1:%d\"\n"
                    "upstreams:\n  web:\n    protocol: http\n    servers: [\"127.0.0.1:1\"]\n"
                    "routes:\n  - { match: { path: / }, upstream: web }\n" % free_port())
    p = run_check(path)
    assert p.returncode == 0, p.stderr.decode()


HEAD = """workers: 1
listen:
  - address: "127.0.0.1:18080"
"""
TAIL = """upstreams:
  web:
    protocol: http
    servers: ["127.0.0.1:18081"]
routes:
  - { match: { path: / }, upstream: web }
"""

# (id, text, line of the error, allowed columns or None for any)
BAD = [
    ("unknown-key", HEAD + "bogus_key: 1\n" + TAIL, 4, {1}),
    ("bad-duration", HEAD + "timeouts:\n  header: banana\n" + TAIL, 5, {3, 11}),
    ("bad-size", HEAD + "limits:\n  header_bytes: 12q\n" + TAIL, 5, {3, 17}),
    ("bad-listen-port", "workers: 1\nlisten:\n  - address: \"127.0.0.1:99999\"\n" + TAIL,
     3, None),
    ("unknown-upstream", HEAD + TAIL.replace("upstream: web }", "upstream: nowhere }"), 9,
     None),
    ("bad-balance", HEAD + TAIL.replace("    servers:", "    balance: random\n    servers:"),
     7, {5, 14}),
    ("bad-protocol", HEAD + TAIL.replace("protocol: http", "protocol: gopher"), 6, {5, 15}),
    ("workers-not-a-number", "workers: many\n" + HEAD.split("\n", 1)[1] + TAIL, 1, {1, 10}),
    ("bad-trusted-cidr", HEAD + "trusted_proxies: [\"10.0.0.0/99\"]\n" + TAIL, 4, None),
]


@pytest.mark.parametrize("text,line,cols", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_check_bad_file_reports_line_and_column(tmp_path, text, line, cols):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    p = run_check(path)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, (p.returncode, err)
    m = re.search(r"^%s:(\d+):(\d+): \S.*$" % re.escape(str(path)), err, re.M)
    assert m, "no FILE:LINE:COL: message on stderr:\n" + err
    assert int(m.group(1)) == line, m.group(0)
    if cols is not None:
        assert int(m.group(2)) in cols, m.group(0)


def test_check_yaml_syntax_error(tmp_path):
    path = tmp_path / "syntax.yaml"
    path.write_text(HEAD + "limits: { header_bytes: 16k\n" + TAIL)
    p = run_check(path)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1
    m = re.search(r"^%s:(\d+):(\d+): \S" % re.escape(str(path)), err, re.M)
    assert m, err
    assert 4 <= int(m.group(1)) <= 12


def test_check_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    p = run_check(path)
    assert p.returncode == 1
    assert str(path) in p.stderr.decode("utf-8", "replace")


def test_start_with_bad_file_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD[0][1])
    p = subprocess.run([str(gw.GATEHOUSE_BIN), "-c", str(path)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=10)
    assert p.returncode != 0
    assert str(path) in p.stderr.decode("utf-8", "replace")


# --- SIGHUP ------------------------------------------------------------------------------------

@pytest.fixture
def two(harness):
    a, b = harness.upstream("A"), harness.upstream("B")
    ups = {"a": upstream_conf([a.addr]), "b": upstream_conf([b.addr])}
    port = free_port()

    def cfg(target):
        return make_config(port, ups, [{"match": {"path": "/"}, "upstream": target}])

    g = harness.gateway(config=cfg("a"), port=port)
    return g, cfg


def name_via_new_conn(g):
    r = get(g.port, "/name", timeout=5)
    assert r.status == 200, r
    return r.text()


def test_sighup_good_file_changes_route(two):
    g, cfg = two
    assert name_via_new_conn(g) == "A"
    g.reload(cfg("b"))
    gw.wait_until(lambda: name_via_new_conn(g) == "B", timeout=5, what="route to B")
    # And it stays changed.
    for _ in range(5):
        assert name_via_new_conn(g) == "B"
    assert g.alive()


def test_sighup_existing_connection_moves_to_new_config(two):
    """A request in flight finishes on the old snapshot; the next request on the same
    keep-alive connection already uses the new one, and the connection stays open."""
    g, cfg = two
    with Conn(g.port) as old:
        r = old.request("GET", "/name")
        assert r.text() == "A" and r.header("Connection") is None
        g.reload(cfg("b"))
        gw.wait_until(lambda: name_via_new_conn(g) == "B", timeout=5, what="route to B")
        r = old.request("GET", "/name")
        assert r.text() == "B"
        assert r.header("Connection") is None
        assert old.request("GET", "/name").text() == "B"


def test_sighup_request_in_flight_finishes_on_old_config(two):
    g, cfg = two
    with Conn(g.port) as c:
        c.send(build_request("GET", "/slow?ms=800"))
        time.sleep(0.2)
        g.reload(cfg("b"))
        r = c.read_response(timeout=5)
        assert r.status == 200 and r.header("X-Upstream-Name") == "A"
        assert c.request("GET", "/name").text() == "B"


def test_sighup_bad_file_keeps_old_config(two):
    g, cfg = two
    assert name_via_new_conn(g) == "A"
    since = g.stderr_size()
    g.write_config(to_yaml(cfg("b")).replace("upstream: b", "upstream: nowhere"))
    g.signal(signal.SIGHUP)
    g.wait_stderr(re.escape(g.config_path.name), since=since, timeout=5)
    time.sleep(0.3)
    assert g.alive()
    for _ in range(5):
        assert name_via_new_conn(g) == "A"
    # A good file afterwards is applied.
    g.reload(cfg("b"))
    gw.wait_until(lambda: name_via_new_conn(g) == "B", timeout=5, what="route to B")


def test_sighup_unparsable_file_keeps_old_config(two):
    g, cfg = two
    since = g.stderr_size()
    g.write_config("listen: [ { address: \n")
    g.signal(signal.SIGHUP)
    g.wait_stderr(re.escape(g.config_path.name), since=since, timeout=5)
    assert g.alive()
    assert name_via_new_conn(g) == "A"
    g.write_config(cfg("a"))  # leave a good file for teardown


def test_repeated_sighup(two):
    g, cfg = two
    for i in range(6):
        target = "ab"[i % 2]
        g.reload(cfg(target))
        gw.wait_until(lambda: name_via_new_conn(g) == target.upper(), timeout=5,
                      what="route to %s" % target)
    assert g.alive()


# --- SIGTERM / SIGINT --------------------------------------------------------------------------

def connect_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def test_sigterm_drains_in_flight_request(harness, upstream):
    g = harness.gateway([upstream.addr], shutdown={"delay": "0s", "timeout": "10s"})
    with Conn(g.port) as idle, Conn(g.port, timeout=10) as busy:
        assert idle.request("GET", "/echo").status == 200
        busy.send(build_request("GET", "/slow?ms=5000"))
        time.sleep(0.5)
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)

        # Idle keep-alive connections are closed at once.
        idle.wait_closed(1.5)
        # New connections are refused.
        gw.wait_until(lambda: connect_refused(g.port), timeout=1.5, interval=0.1,
                      what="connections refused after SIGTERM")
        assert time.monotonic() - t0 < 4.0, "checks took too long to prove anything"
        # The in-flight request completes.
        r = busy.read_response(timeout=10)
        assert r.status == 200
        assert r.json()["path"] == "/slow?ms=5000"
    rc = g.wait_exit(10)
    assert rc == 0
    assert time.monotonic() - t0 < 10


def test_sigterm_with_request_in_flight_body_streaming(harness, upstream):
    """A response being streamed at SIGTERM is finished, not cut."""
    g = harness.gateway([upstream.addr])
    n = 20000
    with Conn(g.port, timeout=10) as busy:
        busy.send(build_request("GET", "/slowbody?ms=1500&n=%d" % n))
        r = busy.read_head(timeout=5)
        assert r.status == 200
        g.signal(signal.SIGTERM)
        busy.read_body(r, timeout=8)
        assert len(r.body) == n
    assert g.wait_exit(10) == 0


def test_sigterm_deadline(harness, upstream):
    """An exchange that outlives shutdown.timeout does not keep the gateway alive."""
    g = harness.gateway([upstream.addr], shutdown={"delay": "0s", "timeout": "2s"})
    with Conn(g.port, timeout=10) as busy:
        busy.send(build_request("GET", "/slow?ms=20000"))
        time.sleep(0.5)
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        rc = g.wait_exit(2 + 3)
        took = time.monotonic() - t0
        assert rc == 0
        assert took >= 1.5, "exited before the in-flight exchange had its time"
        busy.wait_closed(3)


def test_sigterm_idle_gateway_exits_quickly(harness, upstream):
    g = harness.gateway([upstream.addr])
    assert get(g.port, "/echo").status == 200
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    assert g.wait_exit(5) == 0
    assert time.monotonic() - t0 < 2


def test_sigint_exits_zero(harness, upstream):
    g = harness.gateway([upstream.addr])
    with Conn(g.port) as c:
        assert c.request("GET", "/echo").status == 200
        g.signal(signal.SIGINT)
        assert g.wait_exit(5) == 0
        c.wait_closed(2)


def test_access_log_flushed_at_exit(harness, upstream):
    """Buffered access-log lines are written out when the gateway stops."""
    g = harness.gateway([upstream.addr], log={"access_flush": "60s"})
    for i in range(3):
        assert get(g.port, "/echo?exit-flush=%d" % i).status == 200
    g.signal(signal.SIGTERM)
    assert g.wait_exit(5) == 0
    targets = [e["target"] for e in g.access_log()]
    # Each worker thread buffers its own lines, so only the set is certain, not the order.
    assert ["/echo?exit-flush=%d" % i for i in range(3)] == \
        sorted(t for t in targets if t.startswith("/echo?exit-flush"))
