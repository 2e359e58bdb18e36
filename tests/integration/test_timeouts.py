# SPDX-License-Identifier: MIT
"""Client-side timeouts: header (slowloris), body (idle between body reads), keep-alive idle,
send (a client that does not read)."""

import socket
import time

import pytest

from gw import Conn, build_request, upstream_conf

SLACK = 1.5  # seconds allowed beyond a configured timeout


@pytest.fixture
def tgw(harness, upstream):
    return harness.gateway({"web": upstream_conf([upstream.addr])},
                           timeouts={"header": "1s", "body": "1s", "idle": "1s", "send": "1s"})


def test_slowloris_header_timeout_408(tgw):
    """Dribbling header lines does not extend the header timeout; others are served."""
    with Conn(tgw.port, timeout=5) as slow:
        t0 = time.monotonic()
        slow.send(b"GET /echo HTTP/1.1\r\nHost: app.test\r\n")
        for i in range(25):
            if slow.readable(0.15):
                break
            try:
                slow.send(b"X-Drip-%d: y\r\n" % i)
            except OSError:
                break
            if i == 1:
                # Another client is served normally meanwhile, before the slow one's 408.
                with Conn(tgw.port, timeout=5) as other:
                    r = other.request("GET", "/echo?other")
                    assert r.status == 200
                assert not slow.readable(0), "the other client waited for the slow one"
        r = slow.read_response(timeout=5)
        took = time.monotonic() - t0
        assert r.status == 408, r
        assert r.conn_close
        slow.wait_closed(3)
    assert 0.8 <= took < 1 + SLACK, took


def test_header_timeout_partial_request_line(tgw):
    with Conn(tgw.port, timeout=5) as c:
        t0 = time.monotonic()
        c.send(b"GET /ec")
        r = c.read_response(timeout=5)
        assert r.status == 408
        assert r.conn_close
        c.wait_closed(3)
        assert time.monotonic() - t0 < 1 + SLACK


def test_header_timeout_on_second_request(tgw):
    """A partial head after a complete exchange on a keep-alive connection: 408."""
    with Conn(tgw.port, timeout=5) as c:
        assert c.request("GET", "/echo").status == 200
        c.send(b"GET /echo HTTP/1.1\r\nHost: app")
        r = c.read_response(timeout=5)
        assert r.status == 408
        c.wait_closed(3)


def test_body_timeout_408(tgw):
    with Conn(tgw.port, timeout=5) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "100")]) + b"x" * 10)
        t0 = time.monotonic()
        r = c.read_response(timeout=5)
        took = time.monotonic() - t0
        assert r.status == 408, r
        assert r.conn_close
        c.wait_closed(3)
    assert 0.8 <= took < 1 + SLACK, took
    # The gateway still serves.
    with Conn(tgw.port) as c:
        assert c.request("GET", "/echo").status == 200


def test_body_timeout_chunked_408(tgw):
    with Conn(tgw.port, timeout=5) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")])
               + b"5\r\nhello\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 408, r
        c.wait_closed(3)


def test_body_timeout_is_idle_time_not_total(tgw):
    """A body trickling in (a byte every 0.3 s, 3 s in all) is not timed out: the body
    timeout is the idle time between reads."""
    with Conn(tgw.port, timeout=10) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "10")]))
        for i in range(10):
            time.sleep(0.3)
            c.send(b"z")
        r = c.read_response(timeout=5)
        assert r.status == 200, r
        assert r.json()["body_len"] == 10


def test_idle_keepalive_closed_silently(tgw):
    with Conn(tgw.port, timeout=5) as c:
        assert c.request("GET", "/echo").status == 200
        t0 = time.monotonic()
        assert c.is_open(0.4), "closed long before the idle timeout"
        rest = c.wait_closed(1 + SLACK)
        took = time.monotonic() - t0
        assert rest == b"", "an idle keep-alive connection is closed without a response"
    assert took >= 0.8, took


def test_fresh_connection_without_request_closed(tgw):
    """A connection that never sends a byte does not live forever (silent close or 408)."""
    with Conn(tgw.port, timeout=5) as c:
        rest = c.wait_closed(1 + SLACK + 1)
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408"), rest


def test_keepalive_activity_resets_idle(tgw):
    with Conn(tgw.port, timeout=5) as c:
        for i in range(5):
            assert c.request("GET", "/echo?i=%d" % i).status == 200
            time.sleep(0.5)
        assert c.request("GET", "/echo?last").status == 200


def test_send_timeout_client_not_reading(tgw):
    """A client that stops reading a large response is cut off after the send timeout."""
    total = 256 << 20
    with Conn(tgw.port, timeout=5) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(build_request("GET", "/bytes?n=%d" % total))
        time.sleep(1 + SLACK + 1.5)
        got = len(c.buf)
        deadline = time.monotonic() + 20
        closed = False
        while time.monotonic() < deadline and got < total:
            try:
                c.sock.settimeout(max(0.1, deadline - time.monotonic()))
                data = c.sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            got += len(data)
        assert closed, "the connection was not closed"
        assert got < total, "the whole response arrived; the client was never cut off"
    # Still serving others.
    with Conn(tgw.port) as c:
        assert c.request("GET", "/echo").status == 200
