# SPDX-License-Identifier: MIT
"""HTTP/1.x downstream behaviour: keep-alive, pipelining, HTTP/1.0, chunked bodies both ways,
Expect: 100-continue, absolute-form targets, HEAD."""

import hashlib
import time

from gw import Conn, build_request, chunked, echo_header_all, pattern_bytes, pattern_sha256


def test_keepalive_reuses_client_and_upstream_connections(gateway):
    with Conn(gateway.port) as c:
        peers = []
        for i in range(4):
            r = c.request("GET", "/echo?i=%d" % i)
            assert r.status == 200, r
            assert not r.conn_close
            j = r.json()
            assert j["path"] == "/echo?i=%d" % i
            peers.append(j["peer"])
        assert c.is_open(0.2)
    # One client connection lives in one worker: its requests reuse one pooled upstream
    # connection (the upstream sees the same peer and a growing request count).
    assert len(set(peers)) == 1, peers


def test_connection_close_from_client(gateway):
    with Conn(gateway.port) as c:
        r = c.request("GET", "/echo", headers=[("Connection", "close")])
        assert r.status == 200
        assert r.conn_close
        assert c.wait_closed(3) == b""


def test_pipelined_requests_answered_in_order(gateway):
    with Conn(gateway.port) as c:
        c.send(build_request("GET", "/slow?ms=300&n=1")
               + build_request("GET", "/echo?n=2")
               + build_request("POST", "/echo?n=3", body=b"x" * 1000)
               + build_request("GET", "/bytes?n=70000"))
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response()
        assert (r1.status, r2.status, r3.status, r4.status) == (200, 200, 200, 200)
        assert r1.json()["path"] == "/slow?ms=300&n=1"
        assert r2.json()["path"] == "/echo?n=2"
        assert r3.json()["path"] == "/echo?n=3" and r3.json()["body_len"] == 1000
        assert r4.body == pattern_bytes(70000)
        assert c.is_open(0.2)


def test_pipelined_burst_many_small_requests(gateway):
    n = 50
    with Conn(gateway.port) as c:
        c.send(b"".join(build_request("GET", "/echo?i=%d" % i) for i in range(n)))
        for i in range(n):
            r = c.read_response()
            assert r.status == 200
            assert r.json()["path"] == "/echo?i=%d" % i


def test_http10_closes_by_default(gateway):
    with Conn(gateway.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\nHost: app.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.json()["method"] == "GET"
        assert c.wait_closed(3) == b""


def test_http10_without_host_is_fine(gateway):
    with Conn(gateway.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200


def test_http10_keepalive(gateway):
    with Conn(gateway.port) as c:
        for i in range(3):
            c.send(b"GET /echo?i=%d HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n"
                   % i)
            r = c.read_response()
            assert r.status == 200
            assert r.json()["path"] == "/echo?i=%d" % i
            assert r.framing == "length"
            assert r.has_token("Connection", "keep-alive")
        assert c.is_open(0.2)


def test_http10_gets_chunked_upstream_body_until_close(gateway):
    n = 300000
    with Conn(gateway.port) as c:
        c.send(b"GET /chunked?n=%d HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n"
               % n)
        r = c.read_response()
        assert r.status == 200
        assert r.header("Transfer-Encoding") is None, "no chunked framing for a 1.0 client"
        assert r.framing == "close"
        assert r.body == pattern_bytes(n)


def test_chunked_request_body_forwarded_chunked(gateway):
    pieces = [b"a" * 10, b"b" * 70000, b"c", pattern_bytes(5000)]
    body = b"".join(pieces)
    with Conn(gateway.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")],
                             chunked(pieces)))
        r = c.read_response()
        assert r.status == 200
        j = r.json()
        assert j["body_len"] == len(body)
        assert j["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert "chunked" in ",".join(echo_header_all(r, "Transfer-Encoding")).lower()
        assert echo_header_all(r, "Content-Length") == []
        # The connection stays usable after a chunked body.
        r = c.request("GET", "/echo")
        assert r.status == 200


def test_chunked_request_with_extension_and_trailer(gateway):
    raw = (b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n")
    with Conn(gateway.port) as c:
        c.send(build_request("PUT", "/echo", [("Transfer-Encoding", "chunked")], raw))
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_len"] == 11
        assert r.json()["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
        assert c.request("GET", "/echo").status == 200


def test_chunked_request_sent_slowly_in_pieces(gateway):
    body = pattern_bytes(3000)
    raw = build_request("POST", "/echo", [("Transfer-Encoding", "chunked")],
                        chunked([body[:1000], body[1000:2000], body[2000:]]))
    with Conn(gateway.port) as c:
        for i in range(0, len(raw), 700):
            c.send(raw[i:i + 700])
            time.sleep(0.02)
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_content_length_body_split_across_writes(gateway):
    body = pattern_bytes(200000)
    raw = build_request("POST", "/echo", body=body)
    with Conn(gateway.port) as c:
        c.send(raw[:30])          # inside the request line
        time.sleep(0.05)
        c.send(raw[30:len(raw) - len(body) + 10])
        time.sleep(0.05)
        c.send(raw[len(raw) - len(body) + 10:])
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_len"] == len(body)
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_response_to_http11_client(gateway):
    n = 500000
    with Conn(gateway.port) as c:
        r = c.request("GET", "/chunked?n=%d&chunk=7001" % n)
        assert r.status == 200
        assert r.framing == "chunked"
        assert r.body == pattern_bytes(n)
        assert c.request("GET", "/echo").status == 200


def test_chunked_response_with_trailer_keeps_framing(gateway):
    n = 10000
    with Conn(gateway.port) as c:
        r = c.request("GET", "/chunked?n=%d&trailer=1" % n)
        assert r.status == 200
        assert r.framing == "chunked"
        assert r.body == pattern_bytes(n)
        for k, v in r.trailers:
            if k.lower() == "x-checksum":
                assert v == pattern_sha256(n)
        # The trailer section was consumed correctly: the connection is still in step.
        r = c.request("GET", "/echo?after")
        assert r.status == 200 and r.json()["path"] == "/echo?after"


def test_content_length_response_passed_through(gateway):
    n = 1000000
    with Conn(gateway.port) as c:
        r = c.request("GET", "/bytes?n=%d" % n)
        assert r.status == 200
        assert r.framing == "length"
        assert r.header("Content-Length") == str(n)
        assert r.body == pattern_bytes(n)


def test_expect_100_continue(gateway):
    body = b"0123456789"
    with Conn(gateway.port) as c:
        c.send(build_request("POST", "/echo", [("Expect", "100-continue"),
                                               ("Content-Length", str(len(body)))]))
        first = c.read_response(interim=True, timeout=5)
        assert first.status == 100, "expected 100 Continue before the body, got %r" % first
        c.send(body)
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_len"] == len(body)
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert c.request("GET", "/echo").status == 200


def test_expect_100_continue_with_body_sent_anyway(gateway):
    # A client may send the body without waiting for 100 Continue.
    body = b"x" * 5000
    with Conn(gateway.port) as c:
        c.send(build_request("POST", "/echo", [("Expect", "100-continue")], body))
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_len"] == len(body)
        assert c.request("GET", "/echo").status == 200


def test_absolute_form_target(gateway):
    with Conn(gateway.port) as c:
        c.send(b"GET http://app.test/echo?x=1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        # Sent upstream in origin-form.
        assert r.json()["path"] == "/echo?x=1"


def test_absolute_form_with_port(gateway):
    with Conn(gateway.port) as c:
        c.send(b"GET http://app.test:%d/echo HTTP/1.1\r\nHost: app.test:%d\r\n\r\n"
               % (gateway.port, gateway.port))
        r = c.read_response()
        assert r.status == 200
        assert r.json()["path"] == "/echo"


def test_head_request(gateway):
    with Conn(gateway.port) as c:
        r = c.request("HEAD", "/bytes?n=5000")
        assert r.status == 200
        assert r.header("Content-Length") == "5000"
        assert r.body == b""
        # The gateway did not wait for (or send) a body: the next request is answered at once.
        r = c.request("GET", "/echo?after-head")
        assert r.status == 200
        assert r.json()["path"] == "/echo?after-head"


def test_head_of_chunked_resource(gateway):
    with Conn(gateway.port) as c:
        r = c.request("HEAD", "/chunked?n=5000")
        assert r.status == 200
        assert r.body == b""
        r = c.request("GET", "/echo")
        assert r.status == 200


def test_methods_and_statuses_pass_through(gateway):
    with Conn(gateway.port) as c:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            r = c.request(method, "/echo", body=b"" if method in ("POST", "PUT", "PATCH")
                          else None)
            assert r.status == 200
            assert r.json()["method"] == method
        for status in (201, 204, 301, 304, 404, 418, 500, 503):
            r = c.request("GET", "/status/%d" % status)
            assert r.status == status
            if status in (204, 304):
                assert r.body == b""
        assert c.is_open(0.1)


def test_request_headers_forwarded_with_case_and_order(gateway):
    hdrs = [("X-First", "1"), ("x-lower", "two"), ("X-Dup", "a"), ("X-Dup", "b"),
            ("X-Obs-Text", "caf\xe9")]
    with Conn(gateway.port) as c:
        r = c.request("GET", "/echo", hdrs)
        assert r.status == 200
        got = [(k, v) for k, v in (tuple(p) for p in r.json()["headers"])
               if k.lower().startswith("x-") and k.lower() in
               ("x-first", "x-lower", "x-dup", "x-obs-text")]
        assert [k.lower() for k, _ in got] == ["x-first", "x-lower", "x-dup", "x-dup",
                                                "x-obs-text"]
        assert [v for _, v in got][:4] == ["1", "two", "a", "b"]


def test_many_concurrent_connections(gateway):
    conns = [Conn(gateway.port) for _ in range(40)]
    try:
        for i, c in enumerate(conns):
            c.send(build_request("GET", "/echo?c=%d" % i))
        for i, c in enumerate(conns):
            r = c.read_response()
            assert r.status == 200 and r.json()["path"] == "/echo?c=%d" % i
    finally:
        for c in conns:
            c.close()
