# SPDX-License-Identifier: MIT
"""The access log (JSON lines on stdout, flushed by time) and the error log format (stderr)."""

import json
import time

from gw import ACCESS_KEYS, ERRLOG_RE, Conn, build_request, free_port, get, upstream_conf


def test_every_stdout_line_is_a_json_object_with_all_keys(harness, upstream):
    g = harness.gateway({"web": upstream_conf([upstream.addr]),
                         "dead": upstream_conf(["127.0.0.1:%d" % free_port()])},
                        routes=[{"match": {"path": "/dead/"}, "upstream": "dead"},
                                {"match": {"path": "/"}, "upstream": "web"}])
    with Conn(g.port) as c:
        assert c.request("GET", "/echo?a").status == 200
        assert c.request("POST", "/echo?b", body=b"x" * 100).status == 200
        assert c.request("GET", "/status/404").status == 404
    assert get(g.port, "/dead/x").status == 502
    with Conn(g.port) as c:
        c.send(b"GET /bad HTTP/1.1\r\nHost: app.test\r\nBad Header: x\r\n\r\n")
        assert c.read_response().status == 400
    g.access_for("/dead/x")
    g.access_for("/status/404")
    time.sleep(0.3)
    raw = g.access_lines()
    assert len(raw) >= 4
    for line in raw:
        e = json.loads(line)
        assert isinstance(e, dict), line
        missing = [k for k in ACCESS_KEYS if k not in e]
        assert not missing, "missing %s in %s" % (missing, line)
        assert isinstance(e["status"], int)
        assert isinstance(e["bytes_in"], int) and isinstance(e["bytes_out"], int)
        assert isinstance(e["duration_ms"], (int, float))
        assert e["upstream_ms"] is None or isinstance(e["upstream_ms"], (int, float))
        assert isinstance(e["request_id"], str)


def test_one_line_per_exchange(gateway):
    with Conn(gateway.port) as c:
        for i in range(5):
            assert c.request("GET", "/echo?one=%d" % i).status == 200
    # pipelined too
    with Conn(gateway.port) as c:
        c.send(b"".join(build_request("GET", "/echo?pipe=%d" % i) for i in range(5)))
        for i in range(5):
            assert c.read_response().status == 200
    for i in range(5):
        gateway.access_for("/echo?one=%d" % i)
        gateway.access_for("/echo?pipe=%d" % i)
    time.sleep(0.3)
    targets = [e["target"] for e in gateway.access_log()]
    for i in range(5):
        assert targets.count("/echo?one=%d" % i) == 1
        assert targets.count("/echo?pipe=%d" % i) == 1


def test_flushed_within_access_flush(gateway):
    """With little traffic the buffer never fills; lines still appear within access_flush
    (100ms in the tests), not only at exit."""
    assert get(gateway.port, "/echo?flush").status == 200
    t0 = time.monotonic()
    gateway.access_for("/echo?flush", timeout=2.0)
    assert time.monotonic() - t0 < 1.0


def test_log_values(gateway, upstream):
    with Conn(gateway.port) as c:
        r = c.request("GET", "/slow?ms=400", host="values.test")
        assert r.status == 200
        port = c.local_port
    e = gateway.access_for("/slow?ms=400")[0]
    assert e["method"] == "GET"
    assert e["host"] == "values.test"
    assert e["client"] == "127.0.0.1:%d" % port
    assert e["status"] == 200
    assert e["upstream"] == "web"
    assert e["server"] == upstream.addr
    assert e["duration_ms"] >= 380
    assert e["upstream_ms"] >= 380
    assert e["bytes_out"] > len(r.body)


def test_target_logged_as_sent(gateway):
    with Conn(gateway.port) as c:
        c.send(b"GET http://abs.test/echo?abs=1 HTTP/1.1\r\nHost: abs.test\r\n\r\n")
        assert c.read_response().status == 200
    e = gateway.access_for("http://abs.test/echo?abs=1")[0]
    assert e["host"].startswith("abs.test")


def test_bytes_in_counts_body(gateway):
    raw = build_request("POST", "/echo?bytes-in", body=b"b" * 12345)
    with Conn(gateway.port) as c:
        c.send(raw)
        assert c.read_response().status == 200
    e = gateway.access_for("/echo?bytes-in")[0]
    assert e["bytes_in"] == len(raw)


def test_gateway_errors_logged_with_reason(harness):
    g = harness.gateway({"web": upstream_conf(["127.0.0.1:%d" % free_port()])})
    assert get(g.port, "/echo?why").status == 502
    e = g.access_for("/echo?why")[0]
    assert e["status"] == 502
    assert isinstance(e.get("error"), str) and e["error"]
    assert e["upstream"] == "web"


def test_request_id_in_log_matches_upstream(gateway):
    r = get(gateway.port, "/echo?rid-log")
    sent = [v for k, v in r.json()["headers"] if k.lower() == "x-request-id"]
    assert len(sent) == 1
    assert gateway.access_for("/echo?rid-log")[0]["request_id"] == sent[0]


def test_error_log_format(harness, upstream):
    """Every stderr line is "TIME LEVEL [conn=N peer=ADDR ]file.c:LINE: message"."""
    gateway = harness.gateway({"web": upstream_conf([upstream.addr])}, log={"level": "debug"})
    assert get(gateway.port, "/echo").status == 200
    with Conn(gateway.port) as c:
        c.send(b"GET /x HTTP/1.1\r\nHost: app.test\r\nX : y\r\n\r\n")
        assert c.read_response().status == 400
    gateway.wait_stderr(r"conn=\d+ peer=127\.0\.0\.1:\d+ \S+\.c:\d+: ", timeout=3)
    lines = [l for l in gateway.stderr_text().splitlines() if l.strip()]
    assert lines
    bad = [l for l in lines if not ERRLOG_RE.match(l)]
    assert not bad, "stderr lines not in the error-log format:\n" + "\n".join(bad[:10])
    assert not [l for l in gateway.stderr_text().splitlines() if l.startswith("{")], \
        "access-log lines belong on stdout"
