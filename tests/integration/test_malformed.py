# SPDX-License-Identifier: MIT
"""Malformed, ambiguous and oversized requests (RFC 9112 strictness, request smuggling, limits).

Each case: the gateway answers the expected status itself, with a short body and
"Connection: close", closes the connection, writes an error-log line for that connection, and
goes on serving: a good request on a new connection still works."""

import re

import pytest

from gw import Conn, free_port, make_config

LIMITS = {"header_bytes": "4k", "headers": 20, "target_bytes": "1k", "body_bytes": "1k"}

H = b"Host: app.test"


def req(head_lines, body=b"", line=b"POST /echo HTTP/1.1"):
    return line + b"\r\n" + b"".join(l + b"\r\n" for l in head_lines) + b"\r\n" + body


# (id, raw bytes, allowed statuses). Where RFC 9112 leaves the choice between two statuses
# (e.g. an unknown transfer-coding that is also not last), both are allowed.
CASES = [
    # --- request smuggling: framing ambiguity ---
    ("cl-and-te", req([H, b"Content-Length: 5", b"Transfer-Encoding: chunked"],
                      b"0\r\n\r\n"), {400}),
    ("te-and-cl", req([H, b"Transfer-Encoding: chunked", b"Content-Length: 5"],
                      b"0\r\n\r\n"), {400}),
    ("duplicate-cl-different", req([H, b"Content-Length: 5", b"Content-Length: 6"],
                                   b"hello!"), {400}),
    ("duplicate-cl-same", req([H, b"Content-Length: 5", b"Content-Length: 5"], b"hello"),
     {400}),
    ("duplicate-cl-case", req([H, b"Content-Length: 5", b"content-length: 6"], b"hello!"),
     {400}),
    ("cl-list", req([H, b"Content-Length: 5, 5"], b"hello"), {400}),
    ("cl-letters", req([H, b"Content-Length: 5a"], b"hello"), {400}),
    ("cl-negative", req([H, b"Content-Length: -1"]), {400}),
    ("cl-plus", req([H, b"Content-Length: +5"], b"hello"), {400}),
    ("cl-hex", req([H, b"Content-Length: 0x5"], b"hello"), {400}),
    ("cl-space-inside", req([H, b"Content-Length: 1 0"], b"helloworld"), {400}),
    ("cl-empty", req([H, b"Content-Length: "]), {400}),
    ("cl-huge-overflow", req([H, b"Content-Length: 99999999999999999999999999"]), {400, 413}),
    ("te-not-last-chunked", req([H, b"Transfer-Encoding: chunked, gzip"], b"0\r\n\r\n"),
     {400, 501}),
    ("te-two-fields-not-last", req([H, b"Transfer-Encoding: chunked",
                                    b"Transfer-Encoding: identity"], b"0\r\n\r\n"),
     {400, 501}),
    ("te-unknown-gzip", req([H, b"Transfer-Encoding: gzip"], b"0\r\n\r\n"), {501}),
    ("te-unknown-then-chunked", req([H, b"Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n"),
     {501}),
    ("te-xchunked", req([H, b"Transfer-Encoding: xchunked"], b"0\r\n\r\n"), {400, 501}),
    ("te-empty", req([H, b"Transfer-Encoding: "], b"0\r\n\r\n"), {400, 501}),
    ("te-space-before-colon", req([H, b"Transfer-Encoding : chunked"], b"0\r\n\r\n"), {400}),
    ("te-vertical-tab", req([H, b"Transfer-Encoding: \x0bchunked"], b"0\r\n\r\n"), {400}),
    # --- bad chunked bodies ---
    ("chunk-size-not-hex", req([H, b"Transfer-Encoding: chunked"], b"zz\r\nhello\r\n0\r\n\r\n"),
     {400}),
    ("chunk-size-negative", req([H, b"Transfer-Encoding: chunked"], b"-5\r\nhello\r\n0\r\n\r\n"),
     {400}),
    ("chunk-size-0x", req([H, b"Transfer-Encoding: chunked"], b"0x5\r\nhello\r\n0\r\n\r\n"),
     {400}),
    ("chunk-size-overflow", req([H, b"Transfer-Encoding: chunked"],
                                b"fffffffffffffffffffff1\r\nhello\r\n0\r\n\r\n"), {400, 413}),
    ("chunk-size-empty", req([H, b"Transfer-Encoding: chunked"], b"\r\nhello\r\n0\r\n\r\n"),
     {400}),
    ("chunk-data-no-crlf", req([H, b"Transfer-Encoding: chunked"],
                               b"5\r\nhelloXX0\r\n\r\n"), {400}),
    ("chunk-size-bare-lf", req([H, b"Transfer-Encoding: chunked"], b"5\nhello\r\n0\r\n\r\n"),
     {400}),
    ("chunk-trailer-obs-fold", req([H, b"Transfer-Encoding: chunked"],
                                   b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"), {400}),
    # --- header syntax ---
    ("obs-fold", req([H, b"X-Foo: a", b" b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("obs-fold-tab", req([H, b"X-Foo: a", b"\tb"], line=b"GET /echo HTTP/1.1"), {400}),
    ("first-header-indented", req([b" Host: app.test"], line=b"GET /echo HTTP/1.1"), {400}),
    ("bare-lf-in-head", b"GET /echo HTTP/1.1\r\nHost: app.test\nX-A: b\r\n\r\n", {400}),
    ("bare-lf-everywhere", b"GET /echo HTTP/1.1\nHost: app.test\n\n", {400}),
    ("bare-cr-in-value", req([H, b"X-A: a\rb"], line=b"GET /echo HTTP/1.1"), {400}),
    ("nul-in-value", req([H, b"X-A: a\x00b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("ctl-in-value", req([H, b"X-A: a\x01b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("del-in-value", req([H, b"X-A: a\x7fb"], line=b"GET /echo HTTP/1.1"), {400}),
    ("space-before-colon", req([H, b"X-A : b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("tab-before-colon", req([H, b"X-A\t: b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("space-before-colon-host", req([b"Host : app.test"], line=b"GET /echo HTTP/1.1"), {400}),
    ("space-in-name", req([H, b"X A: b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("paren-in-name", req([H, b"X(A): b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("non-ascii-in-name", req([H, b"X-\xe9: b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("empty-name", req([H, b": b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("no-colon", req([H, b"X-A b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("missing-host-11", req([b"X-A: b"], line=b"GET /echo HTTP/1.1"), {400}),
    ("duplicate-host", req([H, b"Host: other.test"], line=b"GET /echo HTTP/1.1"), {400}),
    # --- request line ---
    ("bad-method-char", req([H], line=b"G@T /echo HTTP/1.1"), {400}),
    ("bad-method-quote", req([H], line=b'G"T /echo HTTP/1.1'), {400}),
    ("nul-in-method", req([H], line=b"GE\x00T /echo HTTP/1.1"), {400}),
    ("double-space", req([H], line=b"GET  /echo HTTP/1.1"), {400}),
    ("leading-space", req([H], line=b" GET /echo HTTP/1.1"), {400}),
    ("space-in-target", req([H], line=b"GET /ec ho HTTP/1.1"), {400, 505}),
    ("ctl-in-target", req([H], line=b"GET /ec\x01ho HTTP/1.1"), {400}),
    ("target-not-slash", req([H], line=b"GET echo HTTP/1.1"), {400}),
    ("trailing-garbage-after-version", req([H], line=b"GET /echo HTTP/1.1 x"), {400, 505}),
    ("http09", b"GET /echo\r\n\r\n", {400, 505}),
    ("lowercase-http", req([H], line=b"GET /echo http/1.1"), {400, 505}),
    ("version-1x", req([H], line=b"GET /echo HTTP/1.x"), {400, 505}),
    ("version-garbage", req([H], line=b"GET /echo HTTX/1.1"), {400, 505}),
    # --- versions and methods the gateway does not serve ---
    ("http20", req([H], line=b"GET /echo HTTP/2.0"), {505}),
    ("http30", req([H], line=b"GET /echo HTTP/3.0"), {505}),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400, 505}),
    ("connect", b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n", {501}),
    # --- limits (LIMITS above) ---
    ("target-too-long", req([H], line=b"GET /echo?" + b"a" * 1100 + b" HTTP/1.1"), {414}),
    ("header-too-big", req([H, b"X-Big: " + b"b" * 5000], line=b"GET /echo HTTP/1.1"),
     {431}),
    ("head-too-big-many-fields", req([H] + [b"X-F%d: %s" % (i, b"v" * 300) for i in range(15)],
                                     line=b"GET /echo HTTP/1.1"), {431}),
    ("too-many-headers", req([H] + [b"X-H%d: v" % i for i in range(25)],
                             line=b"GET /echo HTTP/1.1"), {431}),
    ("body-too-large-cl", req([H, b"Content-Length: 2000"]), {413}),
    ("body-too-large-chunked", req([H, b"Transfer-Encoding: chunked"],
                                   b"400\r\n" + b"a" * 1024 + b"\r\n400\r\n" + b"b" * 1024
                                   + b"\r\n0\r\n\r\n"), {413}),
]


@pytest.fixture(scope="module")
def gw_malformed(module_harness):
    up = module_harness.upstream("A")
    port = free_port()
    cfg = make_config(port, [up.addr], limits=LIMITS,
                      log={"level": "debug"}, timeouts={"header": "5s", "body": "5s"})
    return module_harness.gateway(config=cfg, port=port)


def good_request_works(port, tag="good"):
    with Conn(port, timeout=5) as c:
        r = c.request("POST", "/echo?" + tag, body=b"fine")
        assert r.status == 200, "a good request after the bad one failed: %r" % r
        assert r.json()["body_len"] == 4


@pytest.mark.parametrize("raw,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_request_refused(gw_malformed, raw, expected):
    g = gw_malformed
    since = g.stderr_size()
    with Conn(g.port, timeout=5) as c:
        port = c.local_port
        c.send(raw)
        r = c.read_response(timeout=8)
        assert r.status in expected, "expected %s, got %r" % (sorted(expected), r)
        assert r.conn_close, "no Connection: close in %r" % r
        assert len(r.body) < 1024, "error body should be short"
        assert c.wait_closed(3) == b"", "bytes after the error response"
    g.wait_stderr(r"conn=\d+ peer=127\.0\.0\.1:%d \S+\.c:\d+: " % port, since=since,
                  timeout=3)
    assert g.alive()
    good_request_works(g.port)


def test_malformed_after_good_request_on_same_connection(gw_malformed):
    g = gw_malformed
    with Conn(g.port, timeout=5) as c:
        r = c.request("GET", "/echo?first")
        assert r.status == 200
        c.send(b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-A : b\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        assert r.conn_close
        c.wait_closed(3)
    good_request_works(g.port)


def test_smuggled_second_request_never_reaches_upstream(gw_malformed):
    """CL+TE with a hidden request in the body: refused, and nothing after it is forwarded."""
    g = gw_malformed
    hidden = b"GET /echo?smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    raw = req([H, b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"], body)
    with Conn(g.port, timeout=5) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 400
        rest = c.wait_closed(3)
        assert b"HTTP/1.1 200" not in rest
    good_request_works(g.port, "after-smuggle")
    g.access_for("/echo?after-smuggle")
    log = g.access_log()
    assert not [e for e in log if "smuggled" in str(e.get("target"))], log


def test_limits_just_under_pass(gw_malformed):
    """Requests close to each limit, but within it, are served."""
    g = gw_malformed
    with Conn(g.port, timeout=5) as c:
        r = c.request("GET", "/echo?" + "a" * 900)
        assert r.status == 200
        r = c.request("GET", "/echo", [("X-Big", "b" * 2500)])
        assert r.status == 200
        r = c.request("GET", "/echo", [("X-H%d" % i, "v") for i in range(15)])
        assert r.status == 200
        r = c.request("POST", "/echo", body=b"x" * 1024)
        assert r.status == 200
        assert r.json()["body_len"] == 1024
        assert c.is_open(0.1)


def test_expect_100_with_too_large_body_gets_413_not_100(gw_malformed):
    g = gw_malformed
    with Conn(g.port, timeout=5) as c:
        c.send(req([H, b"Content-Length: 5000", b"Expect: 100-continue"]))
        r = c.read_response(interim=True)
        assert r.status == 413
        assert r.conn_close
        c.wait_closed(3)


def test_error_responses_are_well_formed(gw_malformed):
    """A gateway-made error response is a complete HTTP/1.1 message with a length."""
    g = gw_malformed
    with Conn(g.port, timeout=5) as c:
        c.send(req([H, b"X A: b"], line=b"GET /echo HTTP/1.1"))
        r = c.read_response()
        assert r.status == 400
        assert r.version == "HTTP/1.1"
        assert r.framing in ("length", "chunked")
        assert re.fullmatch(r"[\x20-\x7e]*", r.reason)
