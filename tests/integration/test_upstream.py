# SPDX-License-Identifier: MIT
"""The http upstream: errors (502, 503, 504), retries, stale keep-alive connections, balancing,
passive health, hop-by-hop fields, forwarding fields, X-Request-Id, access-log fields."""

import re
import time

from gw import (Conn, build_request, echo_header_all, echo_headers, free_port, get,
                upstream_conf)

NO_HEALTH = {"fails": 1000, "cooldown": "10s"}


def web(servers, **over):
    """One upstream "web" whose passive health never trips unless |over| says so."""
    over.setdefault("health", NO_HEALTH)
    return {"web": upstream_conf(servers, **over)}


def assert_gateway_error(r, c, status):
    assert r.status == status, r
    assert r.conn_close
    assert len(r.body) < 1024
    c.wait_closed(3)


# --- 502 / 504 ------------------------------------------------------------------------------

def test_refused_is_502(harness):
    g = harness.gateway(web(["127.0.0.1:%d" % free_port()]))
    with Conn(g.port) as c:
        r = c.request("GET", "/echo?refused")
        assert_gateway_error(r, c, 502)
    e = g.access_for("/echo?refused")[0]
    assert e["status"] == 502
    assert e.get("error"), "a failed exchange says why in the access log: %r" % e
    assert g.alive()


def test_garbage_response_is_502(harness, upstream):
    g = harness.gateway(web([upstream.addr]))
    with Conn(g.port) as c:
        r = c.request("GET", "/garbage")
        assert_gateway_error(r, c, 502)
    assert get(g.port, "/echo").status == 200


def test_close_without_response_is_502(harness, upstream):
    g = harness.gateway(web([upstream.addr]))
    with Conn(g.port) as c:
        r = c.request("GET", "/close")
        assert_gateway_error(r, c, 502)
    assert get(g.port, "/echo").status == 200


def test_idempotent_request_retried_on_other_server(harness):
    a, b = harness.upstream("A"), harness.upstream("B")
    g = harness.gateway(web([a.addr, b.addr], retries=1))
    with Conn(g.port) as c:
        r = c.request("GET", "/close")
        assert r.status == 502
    # Both servers saw it: the first closed without a response, the gateway tried the other.
    assert (a.stats()["closes"], b.stats()["closes"]) == (1, 1)


def test_non_idempotent_request_not_retried(harness):
    a, b = harness.upstream("A"), harness.upstream("B")
    g = harness.gateway(web([a.addr, b.addr], retries=1))
    with Conn(g.port) as c:
        r = c.request("POST", "/close", body=b"payload")
        assert_gateway_error(r, c, 502)
    assert a.stats()["closes"] + b.stats()["closes"] == 1


def test_request_with_body_not_retried_after_send(harness):
    a, b = harness.upstream("A"), harness.upstream("B")
    g = harness.gateway(web([a.addr, b.addr], retries=1))
    with Conn(g.port) as c:
        r = c.request("PUT", "/close", body=b"payload")
        assert r.status == 502
    assert a.stats()["closes"] + b.stats()["closes"] == 1


def test_first_byte_timeout_is_504(harness, upstream):
    g = harness.gateway(web([upstream.addr], retries=0,
                            timeouts={"first_byte": "500ms", "read": "10s"}))
    with Conn(g.port) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/slow?ms=4000", timeout=6)
        took = time.monotonic() - t0
        assert_gateway_error(r, c, 504)
    assert 0.4 <= took < 2.5, took
    e = g.access_for("/slow?ms=4000")[0]
    assert e["status"] == 504 and e.get("error")


def test_read_timeout_cuts_started_response(harness, upstream):
    g = harness.gateway(web([upstream.addr], timeouts={"first_byte": "10s", "read": "500ms"}))
    n = 100000
    with Conn(g.port) as c:
        c.send(build_request("GET", "/slowbody?ms=4000&n=%d" % n))
        t0 = time.monotonic()
        r = c.read_head(timeout=5)
        assert r.status == 200
        rest = c.wait_closed(3)
        took = time.monotonic() - t0
    # The head was already sent: the gateway cannot answer 504, it cuts the response short.
    if r.header("Content-Length"):
        assert len(rest) < n
    else:
        assert not rest.endswith(b"0\r\n\r\n")
    assert took < 3


def test_refused_server_skipped_to_next(harness):
    live = harness.upstream("B")
    g = harness.gateway(web(["127.0.0.1:%d" % free_port(), live.addr], retries=1))
    for i in range(6):
        with Conn(g.port) as c:
            r = c.request("GET", "/name")
            assert r.status == 200, r
            assert r.text() == "B"
    # A refused connect sent nothing: any method may go to the next server.
    with Conn(g.port) as c:
        r = c.request("POST", "/echo", body=b"abc")
        assert r.status == 200 and r.json()["body_len"] == 3


def test_all_servers_refused_is_502(harness):
    g = harness.gateway(web(["127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()],
                            retries=1))
    with Conn(g.port) as c:
        r = c.request("GET", "/echo")
        assert_gateway_error(r, c, 502)


# --- keep-alive pool ---------------------------------------------------------------------------

def test_stale_keepalive_closed_by_upstream_is_retried(harness):
    """The upstream closes each connection right after answering (no "Connection: close"):
    a request on such a pooled connection must not fail."""
    a, b = harness.upstream("A"), harness.upstream("B")
    g = harness.gateway(web([a.addr, b.addr], retries=1))
    with Conn(g.port) as c:
        for i in range(12):
            r = c.request("GET", "/kill-keepalive?name=A&i=%d" % i)
            assert r.status == 200, "request %d: %r" % (i, r)


def test_stale_keepalive_deterministic(harness):
    """A pooled connection that drops the next request it gets (as one the upstream closed
    just when the gateway reused it): idempotent requests are retried and succeed."""
    a, b = harness.upstream("A"), harness.upstream("B")
    g = harness.gateway(web([a.addr, b.addr], retries=1), workers=1)
    with Conn(g.port) as c:
        for i in range(12):
            r = c.request("GET", "/kill-keepalive?name=A&mode=next&i=%d" % i)
            assert r.status == 200, "request %d: %r" % (i, r)
    # The gateway did reuse pooled connections to A (and so met a dead one at least once).
    assert a.stats()["killed"] >= 1


def test_upstream_connection_reused_and_keepalive_requests_limit(harness, upstream):
    g = harness.gateway(web([upstream.addr], keepalive={"requests": 3}))
    peers = []
    with Conn(g.port) as c:
        for i in range(7):
            r = c.request("GET", "/echo")
            assert r.status == 200
            j = r.json()
            assert j["conn_requests"] <= 3
            peers.append(j["peer"])
    # 7 requests, at most 3 per upstream connection, connections reused: 3 connections.
    assert len(set(peers)) == 3, peers


# --- balancing and health ----------------------------------------------------------------------

def test_round_robin_spreads_requests(harness):
    ups = [harness.upstream(n) for n in "ABC"]
    g = harness.gateway(web([u.addr for u in ups], balance="round_robin"))
    counts = {"A": 0, "B": 0, "C": 0}
    with Conn(g.port) as c:
        for i in range(30):
            r = c.request("GET", "/name")
            assert r.status == 200
            counts[r.text()] += 1
    assert all(8 <= v <= 12 for v in counts.values()), counts


def test_round_robin_across_connections(harness):
    ups = [harness.upstream(n) for n in "AB"]
    g = harness.gateway(web([u.addr for u in ups], balance="round_robin"))
    counts = {"A": 0, "B": 0}
    for i in range(20):
        counts[get(g.port, "/name").text()] += 1
    assert min(counts.values()) >= 5, counts


def test_least_outstanding_avoids_busy_server(harness):
    a, b = harness.upstream("A"), harness.upstream("B")
    g = harness.gateway(web([a.addr, b.addr], balance="least_outstanding"), workers=1)
    with Conn(g.port) as slow, Conn(g.port) as fast:
        slow.send(build_request("GET", "/slow?ms=2000"))
        time.sleep(0.4)
        names = [fast.request("GET", "/name").text() for _ in range(6)]
        r = slow.read_response(timeout=5)
        assert r.status == 200
        busy = r.header("X-Upstream-Name")
    assert len(set(names)) == 1 and names[0] != busy, (busy, names)


def test_passive_health_503_then_recovery(harness):
    a = harness.upstream("A")
    g = harness.gateway(web([a.addr], retries=0, health={"fails": 2, "cooldown": "3s"}),
                        workers=1)
    assert get(g.port, "/name").status == 200
    a.stop()
    statuses = []
    marked = None
    for i in range(6):
        with Conn(g.port) as c:
            statuses.append(c.request("GET", "/name").status)
        if statuses[-1] == 503 and marked is None:
            marked = time.monotonic()
    assert statuses[0] == 502, statuses
    assert 503 in statuses[:4], statuses
    first = statuses.index(503)
    assert all(s == 503 for s in statuses[first:]), statuses

    a.restart()
    if time.monotonic() - marked < 2.0:
        # Back up, but still inside its cooldown: still skipped.
        assert get(g.port, "/name").status == 503
    deadline = time.monotonic() + 8
    status = None
    while time.monotonic() < deadline:
        status = get(g.port, "/name").status
        if status == 200:
            break
        assert status == 503
        time.sleep(0.25)
    assert status == 200, "server not used again after its cooldown"
    assert time.monotonic() - marked >= 2.0, "server used again before its cooldown"
    e = g.wait_access(lambda e: e.get("status") == 503)[0]
    assert e.get("error")


def test_unhealthy_server_skipped_while_other_serves(harness):
    a, b = harness.upstream("A"), harness.upstream("B")
    g = harness.gateway(web([a.addr, b.addr], retries=1, health={"fails": 1,
                                                                 "cooldown": "30s"}),
                        workers=1)
    a.stop()
    names = []
    for i in range(8):
        r = get(g.port, "/name")
        assert r.status == 200
        names.append(r.text())
    assert set(names) == {"B"}


# --- fields ------------------------------------------------------------------------------------

def test_hop_by_hop_request_fields_removed(gateway):
    hdrs = [("Connection", "keep-alive, X-Drop-Me"), ("X-Drop-Me", "1"),
            ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"), ("Trailer", "X-Whatever"), ("Upgrade", "foo/1"),
            ("X-Keep-Me", "yes")]
    with Conn(gateway.port) as c:
        r = c.request("GET", "/echo", hdrs)
        assert r.status == 200
    names = [k.lower() for k, _ in echo_headers(r)]
    for gone in ("x-drop-me", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                 "transfer-encoding"):
        assert gone not in names, (gone, echo_headers(r))
    conn = ",".join(echo_header_all(r, "Connection")).lower()
    assert "x-drop-me" not in conn
    assert echo_header_all(r, "X-Keep-Me") == ["yes"]


def test_hop_by_hop_response_fields_removed(gateway):
    with Conn(gateway.port) as c:
        r = c.request("GET", "/hop")
        assert r.status == 200
        assert r.header("X-Secret") is None
        assert r.header("Keep-Alive") is None
        assert r.header("Proxy-Connection") is None
        assert "x-secret" not in ",".join(r.header_all("Connection")).lower()
        assert r.header("X-End") == "1"
        assert c.request("GET", "/echo").status == 200


def forwarded_elements(values):
    """Parses Forwarded field values into a list of {param: value} (quotes removed)."""
    out = []
    for v in values:
        for elem in v.split(","):
            d = {}
            for pair in elem.strip().split(";"):
                k, _, val = pair.strip().partition("=")
                d[k.lower()] = val.strip('"')
            out.append(d)
    return out


def list_values(values):
    return [x.strip() for v in values for x in v.split(",")]


SPOOF = [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
         ("X-Forwarded-Host", "orig.example"), ("Forwarded", "for=1.2.3.4;proto=https")]


def test_forwarded_fields_untrusted_peer_replaced(harness, upstream):
    g = harness.gateway(web([upstream.addr]), trusted_proxies=["10.0.0.0/8"])
    with Conn(g.port) as c:
        r = c.request("GET", "/echo", SPOOF, host="app.test")
    assert echo_header_all(r, "X-Forwarded-For") == ["127.0.0.1"]
    assert echo_header_all(r, "X-Forwarded-Proto") == ["http"]
    assert echo_header_all(r, "X-Forwarded-Host") == ["app.test"]
    fwd = echo_header_all(r, "Forwarded")
    assert len(fwd) == 1, fwd
    assert forwarded_elements(fwd) == [{"for": "127.0.0.1", "proto": "http",
                                        "host": "app.test"}]


def test_forwarded_fields_set_without_incoming(gateway):
    with Conn(gateway.port) as c:
        r = c.request("GET", "/echo", host="plain.test")
    assert echo_header_all(r, "X-Forwarded-For") == ["127.0.0.1"]
    assert echo_header_all(r, "X-Forwarded-Proto") == ["http"]
    assert echo_header_all(r, "X-Forwarded-Host") == ["plain.test"]
    assert forwarded_elements(echo_header_all(r, "Forwarded")) == [
        {"for": "127.0.0.1", "proto": "http", "host": "plain.test"}]


def test_forwarded_fields_trusted_peer_appended(harness, upstream):
    g = harness.gateway(web([upstream.addr]), trusted_proxies=["127.0.0.1/32"])
    with Conn(g.port) as c:
        r = c.request("GET", "/echo", SPOOF, host="app.test")
    xff = echo_header_all(r, "X-Forwarded-For")
    assert len(xff) == 1 and list_values(xff) == ["1.2.3.4", "127.0.0.1"], xff
    fwd = echo_header_all(r, "Forwarded")
    assert len(fwd) == 1, fwd
    assert forwarded_elements(fwd) == [{"for": "1.2.3.4", "proto": "https"},
                                       {"for": "127.0.0.1", "proto": "http",
                                        "host": "app.test"}]
    assert list_values(echo_header_all(r, "X-Forwarded-Proto"))[0] == "https"
    assert list_values(echo_header_all(r, "X-Forwarded-Host"))[0] == "orig.example"


def test_forwarded_fields_trusted_peer_without_incoming(harness, upstream):
    g = harness.gateway(web([upstream.addr]), trusted_proxies=["127.0.0.1/32"])
    with Conn(g.port) as c:
        r = c.request("GET", "/echo", host="app.test")
    assert echo_header_all(r, "X-Forwarded-For") == ["127.0.0.1"]
    assert forwarded_elements(echo_header_all(r, "Forwarded")) == [
        {"for": "127.0.0.1", "proto": "http", "host": "app.test"}]


def test_forwarded_ipv6_client(harness, upstream):
    port4, port6 = free_port(), free_port("::1")
    g = harness.gateway(web([upstream.addr]), port=port4,
                        listen=[{"address": "127.0.0.1:%d" % port4},
                                {"address": "[::1]:%d" % port6}])
    with Conn(port6, host="::1") as c:
        r = c.request("GET", "/echo", host="app.test")
        assert r.status == 200
    assert echo_header_all(r, "X-Forwarded-For") == ["::1"]
    fwd = echo_header_all(r, "Forwarded")
    assert len(fwd) == 1
    assert 'for="[::1]"' in fwd[0], fwd
    assert forwarded_elements(fwd) == [{"for": "[::1]", "proto": "http", "host": "app.test"}]
    e = g.access_for("/echo")[0]
    assert e["client"].startswith("[::1]:") or e["client"].startswith("::1"), e


def test_request_id_kept(gateway):
    with Conn(gateway.port) as c:
        r = c.request("GET", "/echo?rid=kept", [("X-Request-Id", "req-0123456789abcdef")])
    assert echo_header_all(r, "X-Request-Id") == ["req-0123456789abcdef"]
    assert gateway.access_for("/echo?rid=kept")[0]["request_id"] == "req-0123456789abcdef"


def test_request_id_generated(gateway):
    ids = []
    with Conn(gateway.port) as c:
        for i in range(2):
            r = c.request("GET", "/echo?rid=gen%d" % i)
            got = echo_header_all(r, "X-Request-Id")
            assert len(got) == 1 and re.fullmatch(r"[0-9a-f]{32}", got[0]), got
            ids.append(got[0])
    assert ids[0] != ids[1]
    assert gateway.access_for("/echo?rid=gen0")[0]["request_id"] == ids[0]
    assert gateway.access_for("/echo?rid=gen1")[0]["request_id"] == ids[1]


def test_request_id_insane_replaced(gateway):
    with Conn(gateway.port) as c:
        r = c.request("GET", "/echo?rid=bad", [("X-Request-Id", 'bad id "<script>"')])
    got = echo_header_all(r, "X-Request-Id")
    assert len(got) == 1 and re.fullmatch(r"[0-9a-f]{32}", got[0]), got
    assert gateway.access_for("/echo?rid=bad")[0]["request_id"] == got[0]


def test_access_log_fields(harness, upstream):
    g = harness.gateway(web([upstream.addr]))
    raw = build_request("POST", "/echo?fields=1", [("X-Request-Id", "log-fields-1"),
                                                  ("Connection", "close")], b"0123456789",
                        host="fields.test")
    with Conn(g.port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 200
        c.wait_closed(3)
        received = c.received
        client = "127.0.0.1:%d" % c.local_port
    e = g.access_for("/echo?fields=1")[0]
    assert e["client"] == client
    assert e["method"] == "POST"
    assert e["host"] == "fields.test"
    assert e["status"] == 200
    assert e["bytes_in"] == len(raw)
    assert e["bytes_out"] == received
    assert e["upstream"] == "web"
    assert e["server"] == upstream.addr
    assert isinstance(e["upstream_ms"], (int, float)) and e["upstream_ms"] >= 0
    assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0
    assert e["upstream_ms"] <= e["duration_ms"] + 1
    assert e["request_id"] == "log-fields-1"
    assert not e.get("error")
