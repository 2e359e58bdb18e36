# SPDX-License-Identifier: MIT
"""gatehouse.wsgi as a PEP 3333 server: real processes, spoken to in uwsgi the way the
gateway will (one connection per request, the response delimited by the close)."""

import hashlib
import json
import os
import socket
import time

import pytest

import ghwsgi
from ghwsgi import get, make_vars, request
from gatehouse.protocol import encode_request


def test_environ_fidelity(server):
    vars = make_vars(
        method="POST", path="/env", query="a=1&b=%20x", script_name="/shop",
        headers=[("Host", "app.example:8080"), ("X-Forwarded-For", "198.51.100.9"),
                 ("Accept", "*/*"), ("Cookie", "a=1; b=2")],
        body=b"abc", content_type="text/plain; charset=utf-8", scheme="https",
        remote=("203.0.113.5", "61000"), server=("app.example", "8443"),
        uri="/shop/env?a=1&b=%20x")
    vars.append(("PATH_TRANSLATED", "caf\xe9"))  # bytes >= 0x80 arrive as latin-1
    r = request(server.addr, vars, b"abc")
    assert r.status == 200, r.raw
    e = r.json()
    expect = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/env", "QUERY_STRING": "a=1&b=%20x",
        "SCRIPT_NAME": "/shop", "REQUEST_URI": "/shop/env?a=1&b=%20x",
        "SERVER_NAME": "app.example", "SERVER_PORT": "8443", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.5", "REMOTE_PORT": "61000", "HTTPS": "on",
        "HTTP_HOST": "app.example:8080", "HTTP_X_FORWARDED_FOR": "198.51.100.9",
        "HTTP_ACCEPT": "*/*", "HTTP_COOKIE": "a=1; b=2",
        "CONTENT_TYPE": "text/plain; charset=utf-8", "CONTENT_LENGTH": "3",
        "PATH_TRANSLATED": "caf\xe9",
        "wsgi.version": [1, 0], "wsgi.url_scheme": "https", "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.input_terminated": True,
        "wsgi.errors.is_stderr": True, "wsgi.input.has_read": True,
        "gatehouse.disconnected": False,
    }
    for k, v in expect.items():
        assert e.get(k) == v, k


@pytest.mark.parametrize("vars,scheme", [
    ([("REQUEST_SCHEME", "https")], "https"),
    ([("HTTPS", "on")], "https"),
    ([("HTTPS", "off")], "http"),
    ([("REQUEST_SCHEME", "http")], "http"),
    ([], "http"),
])
def test_url_scheme(server, vars, scheme):
    r = request(server.addr, [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/env")] + vars)
    assert r.json()["wsgi.url_scheme"] == scheme


def test_minimal_vars_get_pep_defaults(server):
    r = request(server.addr, [("PATH_INFO", "/env")])
    e = r.json()
    assert e["REQUEST_METHOD"] == "GET" and e["SCRIPT_NAME"] == "" and e["QUERY_STRING"] == ""
    assert e["SERVER_NAME"] and e["SERVER_PORT"] and e["SERVER_PROTOCOL"] == "HTTP/1.1"


BODY = b"".join(b"line %d %s\n" % (i, b"x" * (i % 50)) for i in range(3000)) + b"tail"


@pytest.mark.parametrize("mode", ["read", "readn", "readline", "readline_size", "readlines",
                                  "iter"])
def test_post_body_read_ways(server, mode):
    r = get(server.addr, "/body", "mode=%s&n=777" % mode, method="POST", body=BODY)
    assert r.status == 200, r.raw
    out = r.json()
    assert out["len"] == len(BODY)
    assert out["after"] == 0
    if out["sha256"] is not None:
        assert out["sha256"] == hashlib.sha256(BODY).hexdigest()
    if mode in ("readline", "readlines", "iter"):
        assert len(out["pieces"]) == 3001 and out["pieces"][-1] == 4
    if mode == "readline_size":
        assert max(out["pieces"]) <= 777
    if mode == "readn":
        assert all(p == 777 for p in out["pieces"][:-1])


def test_body_split_across_packet_and_later_sends(server):
    body = b"0123456789" * 1000
    with ghwsgi.connect(server.addr) as s:
        s.sendall(encode_request(make_vars(method="POST", path="/body", body=body)) + body[:7])
        time.sleep(0.1)
        s.sendall(body[7:5000])
        time.sleep(0.1)
        s.sendall(body[5000:])
        raw, _ = ghwsgi.read_all(s)
    out = ghwsgi.Response(raw).json()
    assert out["len"] == len(body) and out["sha256"] == hashlib.sha256(body).hexdigest()


def test_no_body_read_does_not_wait(server):
    """CONTENT_LENGTH 0 / absent: read() answers b"" at once (the socket stays open)."""
    t0 = time.monotonic()
    r = get(server.addr, "/body", "mode=read", method="POST")
    assert r.json()["len"] == 0 and time.monotonic() - t0 < 2
    r = request(server.addr, [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/body")])
    assert r.json()["len"] == 0


def test_unread_body_is_discarded_cleanly(server):
    body = b"z" * 3_000_000
    r = get(server.addr, "/body", "mode=none", method="POST", body=body)
    assert r.status == 200 and not r.reset and r.json()["len"] == 0


def test_upload_20mb_arrives_whole(server):
    body = os.urandom(1 << 20) * 20
    r = get(server.addr, "/body", "mode=read", method="PUT", body=body, timeout=30)
    assert r.status == 200, r.raw[:200]
    assert r.json()["len"] == len(body)
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_bad_content_length_is_400(server):
    r = request(server.addr, [("REQUEST_METHOD", "POST"), ("PATH_INFO", "/body"),
                              ("CONTENT_LENGTH", "12x")])
    assert r.status == 400


def test_write_callable_then_iterable(server):
    r = get(server.addr, "/write")
    assert r.status == 200
    assert r.body == b"written-1;written-2;returned-1;returned-2"
    assert r.status_line == "HTTP/1.1 200 OK"


def test_exc_info_before_headers_replaces_response(server):
    r = get(server.addr, "/excinfo_before")
    assert r.status == 503 and r.header("X-Replaced") == "yes" and r.body == b"replaced"


@pytest.fixture(params=["unix", "tcp"])
def any_server(request, servers):
    return servers.start(tcp=request.param == "tcp")


def test_exc_info_after_headers_reraises_and_cuts(any_server):
    server = any_server
    r = get(server.addr, "/excinfo_after")
    assert r.status == 200 and r.body == b"first part;"
    if isinstance(server.addr, tuple):  # over TCP the cut is a reset; unix has no RST
        assert r.reset, "a cut response ends with a reset, not a clean close"
    server.wait_log(r"GET /excinfo_after HTTP/1.1: error after the response started")
    assert "late boom" in server.log()


def test_start_response_twice_is_an_error(server):
    r = get(server.addr, "/twice")
    assert r.status == 500
    server.wait_log(r"called a second time without exc_info")


@pytest.mark.parametrize("fail", ["0", "1"])
def test_close_always_called(server, short_tmp, fail):
    path = os.path.join(short_tmp, "closed-%s" % fail)
    r = get(server.addr, "/closing", "path=%s&fail=%s" % (path, fail))
    assert r.status == 200
    assert r.body == (b"chunk;" if fail == "1" else b"chunk;chunk")
    deadline = time.monotonic() + 5
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(path) as f:
        assert f.read() == "closed\n"


def test_app_exception_is_500_with_traceback_and_request_line(server):
    r = get(server.addr, "/error", "q=1")
    assert r.status == 500 and r.body == b"Internal Server Error\n"
    log = server.wait_log(r"GET /error\?q=1 HTTP/1.1: error in the app; answering 500")
    assert log
    assert "Traceback (most recent call last)" in server.log()
    assert "deliberate failure before the response" in server.log()


def test_app_exception_after_start_cuts_the_connection(any_server):
    r = get(any_server.addr, "/error_after")
    assert r.status == 200 and r.body == b"partial;"
    assert r.reset or not isinstance(any_server.addr, tuple)
    any_server.wait_log(r"GET /error_after HTTP/1.1: error after the response started")


@pytest.mark.parametrize("path", ["/bad_header", "/bad_status"])
def test_header_and_status_validation(server, path):
    r = get(server.addr, path)
    assert r.status == 500
    assert b"injected" not in r.raw


@pytest.mark.parametrize("kind", ["file", "bytesio"])
def test_file_wrapper(server, short_tmp, kind):
    path = os.path.join(short_tmp, "payload")
    data = os.urandom(3 * 65536 + 123)
    with open(path, "wb") as f:
        f.write(data)
    r = get(server.addr, "/file", "path=%s&kind=%s" % (path, kind))
    assert r.status == 200 and r.body == data
    r = get(server.addr, "/file", "path=%s&skip=100&length=1000" % path)
    assert r.body == data[100:1100]


def test_file_wrapper_uses_sendfile(monkeypatch, short_tmp):
    """In-process: serve_connection over a socketpair; os.sendfile must carry the bytes."""
    from gatehouse import wsgi

    path = os.path.join(short_tmp, "payload")
    data = os.urandom(200_000)
    with open(path, "wb") as f:
        f.write(data)
    calls = []
    real = os.sendfile

    def counting(*a):
        n = real(*a)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    a, b = socket.socketpair()
    a.sendall(encode_request(make_vars(path="/f")))
    import threading
    got = []
    t = threading.Thread(target=lambda: got.append(ghwsgi.read_all(a)))
    t.start()
    wsgi.serve_connection(b, app)
    t.join(10)
    a.close()
    resp = ghwsgi.Response(got[0][0])
    assert resp.body == data
    assert sum(calls) == len(data) and calls


def test_streaming_arrives_chunk_by_chunk(server):
    with ghwsgi.connect(server.addr) as s:
        s.sendall(encode_request(make_vars(path="/stream", query="n=4&ms=300")))
        arrivals = []
        buf = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            arrivals.append((time.monotonic(), buf.count(b"data: ")))
    events = [t for t, n in arrivals for _ in range(1)]
    counts = sorted({n: t for t, n in reversed(arrivals)}.items())
    # each event arrives on its own, about 300 ms after the previous one
    firsts = [t for n, t in counts if n >= 1]
    assert [n for n, _ in counts][-1] == 4 and len(firsts) == 4, arrivals
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert all(0.15 < g < 1.5 for g in gaps), gaps
    assert b"text/event-stream" in buf and events


def test_disconnected_turns_true_when_client_closes(server, short_tmp):
    path = os.path.join(short_tmp, "disc.json")
    s = ghwsgi.connect(server.addr)
    s.sendall(encode_request(make_vars(path="/disconnected", query="s=5&path=" + path)))
    time.sleep(0.3)
    s.close()
    deadline = time.monotonic() + 8
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.05)
    with open(path) as f:
        out = json.load(f)
    assert out == {"before": False, "after": True}


def test_tcp_bind_and_request_line_for_server_vars(servers):
    s = servers.start(tcp=True, workers=1)
    r = request(s.addr, [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/env")])
    e = r.json()
    assert e["SERVER_NAME"] == "127.0.0.1" and e["SERVER_PORT"] == str(s.addr[1])


def test_garbage_packet_is_refused_and_worker_survives(server):
    block = b"\x05\x00AB"
    with ghwsgi.connect(server.addr) as s:
        s.sendall(b"\x00" + len(block).to_bytes(2, "little") + b"\x00" + block)
        raw, _ = ghwsgi.read_all(s)
    assert raw == b""
    assert get(server.addr, "/pid").status == 200
    server.wait_log(r"bad uwsgi packet")
