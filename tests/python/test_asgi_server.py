# SPDX-License-Identifier: MIT
"""gatehouse.asgi: a real `python3 -m gatehouse.asgi` process on a unix socket, spoken to by
a small gateway-side client built on gatehouse.asgi_protocol. Apps: apps/asgi_app.py,
apps/ws_app.py for the websocket scope (and apps/fastapi_app.py when Debian's
python3-fastapi is installed).

Every wait is bounded; servers are stopped by their PID."""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from gatehouse.asgi_protocol import (
    CAP_PATHSEND, CAP_TRAILERS, CAP_WEBSOCKET, CANCEL, DATA, FLAG_ACK, FLAG_END, FLAG_MORE,
    FLAG_TEXT, FLOW, INTERNAL, NONE, PROTOCOL, REFUSED, VERSION, WS_MESSAGE, Credit, Data,
    Disconnect, FrameDecoder, GoAway, Hello, HttpRequest, HttpResponse, NeedData, PathSend,
    Ping, Reset, Trailers, Unknown, WsAccept, WsClose, WsConnect, WsMessage, encode)

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
ADAPTERS = os.path.abspath(os.path.join(HERE, "..", "..", "adapters", "python"))
TIMEOUT = 10.0
ALL_CAPS = CAP_WEBSOCKET | CAP_TRAILERS | CAP_PATHSEND


# --- the server process -------------------------------------------------------------------


class AsgiServer:
    def __init__(self, tmpdir, app="asgi_app:app", workers=1, args=(), n=0, wait=True):
        self.path = os.path.join(tmpdir, "a%d.sock" % n)
        self.errpath = os.path.join(tmpdir, "asgi%d.err" % n)
        self.expected_exit = 0
        env = dict(os.environ, PYTHONPATH=ADAPTERS, PYTHONUNBUFFERED="1")
        with open(self.errpath, "wb") as err:
            self.proc = subprocess.Popen(
                ["/usr/bin/python3", "-m", "gatehouse.asgi", app, "--bind", "unix:" + self.path,
                 "--workers", str(workers)] + list(args),
                cwd=APPS, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        if wait:
            self.wait_log(r"worker booted", workers)

    def log(self):
        with open(self.errpath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, count=1, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, "%r not seen %d times; stderr:\n%s" % (
                pattern, count, self.log())
            assert self.proc.poll() is None, "server exited %s; stderr:\n%s" % (
                self.proc.returncode, self.log())
            time.sleep(0.02)

    def worker_pids(self):
        return [int(p) for p in re.findall(r"\[gatehouse\.asgi pid (\d+)\] worker booted",
                                           self.log())]

    def stop(self, timeout=20):
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return "not stopped within %ss" % timeout


@pytest.fixture
def servers(short_tmp):
    started = []

    class Factory:
        def start(self, **kw):
            s = AsgiServer(short_tmp, n=len(started), **kw)
            started.append(s)
            return s

    yield Factory()
    problems = []
    for s in started:
        code = s.stop()
        if code not in (s.expected_exit, None):
            problems.append("server exited %s\n%s" % (code, s.log()))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def server(servers):
    return servers.start()


# --- the gateway side ---------------------------------------------------------------------


class Client:
    """One gateway connection. Frames of other streams read while waiting for one stream are
    kept for later; credit given to the server is tracked so its DATA can be checked."""

    def __init__(self, path, caps=ALL_CAPS, credit=65536, max_frame=65536, handshake=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.dec = FrameDecoder(max_frame)
        self.initial_credit = credit
        self.credit = {}                 # stream -> credit the server may still use
        self.pending = collections.defaultdict(collections.deque)
        self.conn_frames = collections.deque()
        self.next_id = 1
        self.hello = None
        if handshake:
            self.send(Hello(max_frame=max_frame, initial_credit=credit, capabilities=caps))
            self.hello = self.read()
            assert isinstance(self.hello, Hello) and self.hello.flags & FLAG_ACK, self.hello

    def send(self, *frames):
        self.sock.sendall(b"".join(encode(f) for f in frames))

    def read(self, timeout=TIMEOUT):
        """The next frame from the socket (None at EOF)."""
        self.sock.settimeout(timeout)
        while True:
            f = self.dec.next_frame()
            if f is not NeedData:
                if f.type in (DATA, WS_MESSAGE):
                    left = self.credit.get(f.stream, self.initial_credit)
                    assert len(f.data) <= left, "%s of %d over the credit %d" % (
                        type(f).__name__, len(f.data), left)
                    self.credit[f.stream] = left - len(f.data)
                return f
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.dec.feed(data)

    def frame_for(self, stream, timeout=TIMEOUT):
        """The next frame of |stream| (0: connection frames)."""
        q = self.conn_frames if stream == 0 else self.pending[stream]
        deadline = time.monotonic() + timeout
        while not q:
            f = self.read(max(deadline - time.monotonic(), 0.01))
            assert f is not None, "connection closed while waiting for stream %d" % stream
            (self.conn_frames if f.stream == 0 else self.pending[f.stream]).append(f)
        return q.popleft()

    def give_credit(self, stream, n):
        self.credit[stream] = self.credit.get(stream, self.initial_credit) + n
        self.send(Credit(stream, 0, n))

    def request(self, path, query=b"", method="GET", body=None, headers=(), stream=None,
                **kw):
        sid = stream or self.next_id
        self.next_id = sid + 1
        self.send(HttpRequest(sid, FLAG_END if body is None else 0, method=method, path=path,
                              raw_path=path.encode(), query_string=query,
                              headers=list(headers), **kw))
        if body is not None:
            self.send(Data(sid, FLAG_END, body))
        return sid

    def response(self, sid, auto_credit=True):
        """(HttpResponse, body, [other frames]) until the stream ends."""
        head = self.frame_for(sid)
        if not isinstance(head, HttpResponse):
            return head, b"", []
        body = []
        rest = []
        end = bool(head.flags & FLAG_END)
        while not end:
            f = self.frame_for(sid)
            if isinstance(f, Data):
                body.append(f.data)
                if auto_credit and f.data and not f.flags & FLAG_END:
                    self.give_credit(sid, len(f.data))
            else:
                rest.append(f)
            end = bool(f.flags & FLAG_END) or isinstance(f, Reset)
        return head, b"".join(body), rest

    def ws_connect(self, path, query=b"", subprotocols=(), headers=(), stream=None, **kw):
        sid = stream or self.next_id
        self.next_id = sid + 1
        self.send(WsConnect(sid, 0, path=path, raw_path=path.encode(), query_string=query,
                            headers=list(headers), subprotocols=list(subprotocols), **kw))
        return sid

    def ws_accepted(self, sid):
        f = self.frame_for(sid)
        assert isinstance(f, WsAccept), f
        return f

    def ws_message(self, sid, auto_credit=True):
        """(the message's bytes, its WsMessage pieces); CREDIT frames from the server (for
        what the app received) are skipped. The pieces are checked: MORE on all but the
        last, the same TEXT flag on all."""
        pieces = []
        while True:
            f = self.frame_for(sid)
            if isinstance(f, Credit):
                continue
            assert isinstance(f, WsMessage), f
            pieces.append(f)
            if auto_credit and f.data:
                self.give_credit(sid, len(f.data))
            if not f.flags & FLAG_MORE:
                break
        assert len({p.flags & FLAG_TEXT for p in pieces}) == 1, pieces
        return b"".join(p.data for p in pieces), pieces

    def ws_text(self, sid):
        data, pieces = self.ws_message(sid)
        assert pieces[0].flags & FLAG_TEXT, pieces
        return data.decode()

    def get_json(self, path, query=b"", **kw):
        head, body, _ = self.response(self.request(path, query, **kw))
        assert head.status == 200, (head, body)
        return json.loads(body)

    def close(self):
        self.sock.close()


def connect(server, **kw):
    return Client(server.path, **kw)


# --- handshake and connection frames ------------------------------------------------------


def test_handshake(server):
    c = connect(server)
    h = c.hello
    assert (h.version, h.max_frame, h.max_streams, h.initial_credit) == (1, 65536, 1000, 65536)
    assert h.capabilities == CAP_WEBSOCKET | CAP_TRAILERS | CAP_PATHSEND
    c2 = connect(server, caps=CAP_WEBSOCKET | CAP_TRAILERS)
    assert c2.hello.capabilities == CAP_WEBSOCKET | CAP_TRAILERS
    c3 = connect(server, caps=CAP_TRAILERS)
    assert c3.hello.capabilities == CAP_TRAILERS
    # WEBSOCKET not agreed: a WS_CONNECT is refused as a protocol error
    f = c3.frame_for(c3.ws_connect("/"))
    assert isinstance(f, Reset) and f.error == PROTOCOL
    assert connect(server, caps=0).hello.capabilities == 0


def test_wrong_version_gets_goaway_version(server):
    c = connect(server, handshake=False)
    c.send(Hello(version=2, max_frame=65536, initial_credit=65536, capabilities=ALL_CAPS))
    f = c.read()
    assert isinstance(f, GoAway) and f.error == VERSION and f.debug == "1", f
    assert c.read() is None


def test_bad_magic_is_closed_without_answer(server):
    c = connect(server, handshake=False)
    c.sock.sendall(b"\x00\x00\x18\x00\x00\x00\x00\x00\x00" + b"NOTASG" + bytes(18))
    assert c.read() is None


def test_ping_and_unknown_frames(server):
    c = connect(server)
    c.send(Unknown(type=0x3F, payload=b"later versions"), Ping(data=b"12345678"))
    f = c.frame_for(0)
    assert isinstance(f, Ping) and f.flags & FLAG_ACK and f.data == b"12345678"


def test_hello_twice_is_a_connection_error(server):
    c = connect(server)
    c.send(Hello(max_frame=65536))
    f = c.frame_for(0)
    assert isinstance(f, GoAway) and f.error != NONE
    assert c.read() is None


# --- the http scope -----------------------------------------------------------------------


def test_get_scope(server):
    c = connect(server)
    s = c.get_json("/scope", b"a=1&b=%20", method="GET", http_version="2", scheme="https",
                   root_path="/mnt", client=("192.0.2.7", 51000), server=("app.example", 443),
                   headers=[(b"host", b"app.example"), (b"x-two", b"1"), (b"x-two", b"2")])
    assert s["type"] == "http"
    assert s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (s["http_version"], s["method"], s["scheme"]) == ("2", "GET", "https")
    assert (s["path"], s["raw_path"], s["query_string"], s["root_path"]) == (
        "/scope", "/scope", "a=1&b=%20", "/mnt")
    assert s["headers"] == [["host", "app.example"], ["x-two", "1"], ["x-two", "2"]]
    assert s["headers_types"] == ["tuple/bytes"]   # as uvicorn (httptools) gives them
    assert s["client"] == ["192.0.2.7", 51000] and s["server"] == ["app.example", 443]
    assert s["extensions"] == {"http.response.trailers": {}, "http.response.pathsend": {}}
    s = c.get_json("/scope")
    assert s["client"] is None and s["server"] is None


def test_extensions_follow_capabilities(server):
    c = connect(server, caps=0)
    assert c.get_json("/scope")["extensions"] == {}


def test_post_1mb_with_credits_both_ways(server):
    """The client sends only within the server's credit and waits for CREDIT; the server
    sends the echo only within the client's credit (checked in Client.read)."""
    c = connect(server)
    payload = os.urandom(1 << 20)
    sid = 1
    c.send(HttpRequest(sid, 0, method="POST", path="/echo", raw_path=b"/echo"))
    upload_credit = c.hello.initial_credit
    credited = 0
    sent = 0
    got = []
    head = None
    done = False
    while not done:
        if sent < len(payload) and upload_credit > 0:
            n = min(upload_credit, 16384, len(payload) - sent)
            last = sent + n == len(payload)
            c.send(Data(sid, FLAG_END if last else 0, payload[sent:sent + n]))
            sent += n
            upload_credit -= n
            continue
        f = c.read()
        assert f is not None and f.stream == sid, f
        if isinstance(f, Credit):
            credited += f.increment
            assert credited <= sent, "credit for bytes never sent"
            upload_credit += f.increment
        elif isinstance(f, HttpResponse):
            head = f
        elif isinstance(f, Data):
            got.append(f.data)
            if f.flags & FLAG_END:
                done = True
            elif f.data:
                c.give_credit(sid, len(f.data))
        else:
            raise AssertionError(f)
    assert head.status == 200 and b"".join(got) == payload
    # the last body event is not credited (the stream's upload is over)
    assert credited < len(payload)


def test_streaming_response_waits_for_credit(server):
    c = connect(server, credit=1000)
    sid = c.request("/stream", b"n=4&size=3000")
    head = c.frame_for(sid)
    assert isinstance(head, HttpResponse) and head.status == 200
    got = 0
    while got < 1000:
        f = c.frame_for(sid)
        assert isinstance(f, Data) and not f.flags & FLAG_END
        got += len(f.data)
    assert got == 1000 and c.credit[sid] == 0
    # out of credit: the server must wait
    with pytest.raises(socket.timeout):
        c.read(timeout=0.5)
    body = b""
    while True:
        c.give_credit(sid, 2500)
        while c.credit[sid] > 0:
            f = c.frame_for(sid)
            body += f.data
            if f.flags & FLAG_END:
                break
        if f.flags & FLAG_END:
            break
    assert got + len(body) == 12000


def test_small_gateway_max_frame_splits_data(server):
    c = connect(server, max_frame=16384, credit=1 << 20)
    sid = c.request("/stream", b"n=1&size=50000")
    head, body, _ = c.response(sid)
    assert len(body) == 50000  # Client.read checked every frame against max_frame 16384


def test_empty_response_is_one_frame(server):
    c = connect(server)
    head = c.frame_for(c.request("/empty"))
    assert head.status == 204 and head.flags & FLAG_END


def test_disconnect_seen_by_app_and_later_send_is_noop(server):
    c = connect(server)
    sid = c.request("/long")
    deadline = time.monotonic() + TIMEOUT
    while c.get_json("/recorded")["recorded"] != ["http.request"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.send(Disconnect(sid))
    while c.get_json("/recorded")["recorded"] != ["http.request", "http.disconnect", "sent"]:
        assert time.monotonic() < deadline, c.get_json("/recorded")
        time.sleep(0.05)
    assert not c.pending[sid], "nothing is sent on a disconnected stream"
    assert "Traceback" not in server.log()


def test_reset_cancels_the_app(server):
    c = connect(server)
    sid = c.request("/sleep", b"s=30")
    time.sleep(0.2)
    c.send(Reset(sid, 0, CANCEL))
    deadline = time.monotonic() + TIMEOUT
    while "cancelled" not in c.get_json("/recorded")["recorded"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_exception_before_start_is_500(server):
    c = connect(server)
    head, body, _ = c.response(c.request("/raise/before"))
    assert head.status == 500 and head.flags & FLAG_END and body == b""
    server.wait_log(r"GET /raise/before: error in the app; answering 500")
    assert "ValueError: boom before start" in server.log()


def test_exception_after_start_is_reset_internal(server):
    c = connect(server)
    sid = c.request("/raise/after")
    head, body, rest = c.response(sid)
    assert head.status == 200 and body == b"partial"
    assert isinstance(rest[-1], Reset) and rest[-1].error == INTERNAL
    server.wait_log(r"GET /raise/after: error in the app; cutting the response")
    assert "ValueError: boom after start" in server.log()


def test_incomplete_response(server):
    c = connect(server)
    head, _, _ = c.response(c.request("/incomplete"))
    assert head.status == 500 and head.flags & FLAG_END
    sid = c.request("/incomplete", b"started=1")
    f = c.frame_for(sid)
    # the start was held back (nothing sent yet), so this is still a clean 500
    assert isinstance(f, HttpResponse) and f.status == 500 and f.flags & FLAG_END


def test_trailers(server):
    c = connect(server)
    head, body, rest = c.response(c.request("/trailers"))
    assert head.flags & FLAG_MORE and not head.flags & FLAG_END and body == b"with trailers"
    assert len(rest) == 1 and isinstance(rest[0], Trailers) and rest[0].flags & FLAG_END
    assert rest[0].headers == [(b"x-checksum", b"abc")]
    # not agreed: the body ends the stream, the trailers are dropped
    c = connect(server, caps=0)
    head, body, rest = c.response(c.request("/trailers"))
    assert not head.flags & FLAG_MORE and body == b"with trailers" and rest == []


def test_pathsend(server, short_tmp):
    path = os.path.join(short_tmp, "file.bin")
    data = os.urandom(200_000)
    with open(path, "wb") as f:
        f.write(data)
    c = connect(server)
    sid = c.request("/pathsend", b"path=" + path.encode())
    head, body, rest = c.response(sid)
    assert head.status == 200 and not head.flags & FLAG_END and body == b""
    assert len(rest) == 1 and isinstance(rest[0], PathSend) and rest[0].flags & FLAG_END
    assert rest[0].path == path
    # not agreed: the server sends the file's bytes itself
    c = connect(server, caps=0)
    head, body, rest = c.response(c.request("/pathsend", b"path=" + path.encode()))
    assert body == data and rest == []


def test_many_concurrent_streams_on_one_connection(server):
    c = connect(server)
    n = 200
    t0 = time.monotonic()
    sids = [c.request("/sleep", b"s=0.5&id=%d" % i) for i in range(n)]
    for i, sid in enumerate(sids):
        head, body, _ = c.response(sid)
        assert head.status == 200 and json.loads(body)["id"] == str(i)
    assert time.monotonic() - t0 < 5, "the streams did not run concurrently"


def test_max_streams_refuses(servers):
    server = servers.start(args=["--max-streams", "2"])
    c = connect(server)
    assert c.hello.max_streams == 2
    sids = [c.request("/sleep", b"s=0.5") for _ in range(3)]
    f = c.frame_for(sids[2])
    assert isinstance(f, Reset) and f.error == REFUSED
    for sid in sids[:2]:
        assert c.response(sid)[0].status == 200
    assert c.response(c.request("/sleep", b"s=0"))[0].status == 200


def test_two_connections(server):
    a = connect(server)
    b = connect(server)
    sa = a.request("/sleep", b"s=0.3&id=a")
    sb = b.request("/sleep", b"s=0.3&id=b")
    assert json.loads(b.response(sb)[1])["id"] == "b"
    assert json.loads(a.response(sa)[1])["id"] == "a"


def test_sigterm_drains(servers):
    server = servers.start(args=["--graceful-timeout", "10"])
    c = connect(server)
    sid = c.request("/sleep", b"s=1&id=inflight")
    time.sleep(0.2)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    g = c.frame_for(0)
    assert isinstance(g, GoAway) and g.error == NONE and g.last_stream == sid, g
    head, body, _ = c.response(sid)
    assert head.status == 200 and json.loads(body)["id"] == "inflight"
    assert c.read() is None               # closed once its streams are done
    assert server.proc.wait(TIMEOUT) == 0
    assert time.monotonic() - t0 < 5
    log = server.log()
    assert "app: lifespan shutdown" in log and "worker stopped" in log
    assert not os.path.exists(server.path)


def test_sigterm_graceful_timeout_cancels(servers):
    server = servers.start(args=["--graceful-timeout", "0.5"])
    c = connect(server)
    sid = c.request("/sleep", b"s=30")
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0
    assert "graceful-timeout 0.5s reached" in server.log()


def test_lifespan_state(server):
    c = connect(server)
    (pid,) = server.worker_pids()
    s1 = c.get_json("/scope")
    assert s1["state"] == {"started_by": pid, "shared": {"hits": 0}}
    s2 = c.get_json("/scope")
    assert "leak" not in s2["state"]       # each request gets a shallow copy
    assert "app: lifespan startup" in server.log()


def test_app_without_lifespan(servers):
    server = servers.start(app="asgi_app:nolifespan")
    c = connect(server)
    assert c.get_json("/scope")["state"] == {}
    assert "does not support the lifespan protocol" in server.log()


def test_lifespan_startup_failed(servers):
    server = servers.start(app="asgi_app:failstartup", wait=False)
    server.expected_exit = 1
    assert server.proc.wait(TIMEOUT) == 1
    assert "lifespan startup failed: no database" in server.log()


def test_asgi2_app(servers):
    server = servers.start(app="asgi_app:asgi2")
    assert connect(server).get_json("/")["asgi"]["version"] == "2.0"


def test_workers_restarted(servers):
    server = servers.start(workers=3)
    pids = server.worker_pids()
    assert len(set(pids)) == 3
    seen = {connect(server).get_json("/scope")["pid"] for _ in range(10)}
    assert seen <= set(pids)
    os.kill(pids[0], signal.SIGKILL)
    server.wait_log(r"worker %d died: killed by SIGKILL; starting another" % pids[0])
    server.wait_log(r"worker booted", 4)
    assert connect(server).get_json("/scope")["type"] == "http"


# --- the websocket scope ------------------------------------------------------------------


@pytest.fixture
def ws_server(servers):
    return servers.start(app="ws_app:app")


def wait_recorded(c, n):
    """What apps/ws_app.py recorded, once it holds n entries."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        got = c.get_json("/recorded")["recorded"]
        if len(got) >= n:
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.05)


DISCONNECTED = ["ClientDisconnected", "OSError", "Exception", "BaseException"]
MISUSED = ["RuntimeError", "Exception", "BaseException"]


def test_ws_scope(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/scope", b"a=1&b=%20", subprotocols=["chat", "superchat"],
                       scheme="wss", root_path="/mnt", client=("192.0.2.7", 51000),
                       server=("app.example", 443),
                       headers=[(b"host", b"app.example"),
                                (b"sec-websocket-protocol", b"chat, superchat")])
    c.ws_accepted(sid)
    s = json.loads(c.ws_text(sid))
    assert s["type"] == "websocket" and "method" not in s
    assert s["first_event"] == "websocket.connect"
    assert s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (s["http_version"], s["scheme"]) == ("1.1", "wss")
    assert (s["path"], s["raw_path"], s["query_string"], s["root_path"]) == (
        "/scope", "/scope", "a=1&b=%20", "/mnt")
    assert s["headers"] == [["host", "app.example"],
                            ["sec-websocket-protocol", "chat, superchat"]]
    assert s["subprotocols"] == ["chat", "superchat"]
    assert s["client"] == ["192.0.2.7", 51000] and s["server"] == ["app.example", 443]
    assert s["state"] == {"ws_app": "started"}
    assert s["extensions"] == {"websocket.http.response": {}}
    f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and (f.code, f.reason) == (1000, "")
    sid = c.ws_connect("/scope", http_version="2")
    c.ws_accepted(sid)
    s = json.loads(c.ws_text(sid))
    assert (s["http_version"], s["scheme"], s["subprotocols"]) == ("2", "ws", [])
    assert s["state"] == {"ws_app": "started"}        # a shallow copy: no "leak"
    assert s["client"] is None and s["server"] is None


def test_ws_echo_text_and_bytes(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/echo")
    a = c.ws_accepted(sid)
    assert a.subprotocol is None and a.headers == []
    for flags, payload in ((FLAG_TEXT, "h\u00e9llo \u2713".encode()), (0, b"\x00\xffbin"),
                           (FLAG_TEXT, b""), (0, b"")):
        c.send(WsMessage(sid, flags, payload))
        if payload:
            # the app's receive() took it: its bytes come back as credit
            f = c.frame_for(sid)
            assert isinstance(f, Credit) and f.increment == len(payload), f
        data, pieces = c.ws_message(sid)
        assert data == payload and len(pieces) == 1
        assert pieces[0].flags == flags
    c.send(Disconnect(sid, FLAG_END, 1000, ""))
    assert wait_recorded(c, 1) == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]


def test_ws_message_in_pieces_is_joined(servers):
    """A message larger than the server's credit, in pieces that split characters: the
    pieces are credited as they come, the app gets one websocket.receive."""
    server = servers.start(app="ws_app:app", args=["--initial-credit", "20000"])
    c = connect(server)
    assert c.hello.initial_credit == 20000
    sid = c.ws_connect("/echo")
    c.ws_accepted(sid)
    message = ("\u20ac" * 20000).encode()      # 60000 bytes, 3 per character
    upload = 20000
    credited = 0
    sent = 0
    while sent < len(message):
        if upload == 0:
            f = c.frame_for(sid)
            assert isinstance(f, Credit), f
            upload += f.increment
            credited += f.increment
            continue
        n = min(7000, upload, len(message) - sent)
        last = sent + n == len(message)
        c.send(WsMessage(sid, FLAG_TEXT | (0 if last else FLAG_MORE), message[sent:sent + n]))
        sent += n
        upload -= n
    assert credited >= len(message) - 20000
    data, pieces = c.ws_message(sid)
    assert data == message and pieces[0].flags & FLAG_TEXT
    # bytes, with an empty piece in the middle
    c.send(WsMessage(sid, FLAG_MORE, b"ab"), WsMessage(sid, FLAG_MORE, b""),
           WsMessage(sid, 0, b"cd"))
    data, pieces = c.ws_message(sid)
    assert data == b"abcd" and not pieces[0].flags & FLAG_TEXT


def test_ws_send_split_by_max_frame_and_credit(ws_server):
    c = connect(ws_server, credit=1000, max_frame=16384)
    sid = c.ws_connect("/big", b"size=50000&text=1")
    c.ws_accepted(sid)
    pieces = []
    while sum(len(p.data) for p in pieces) < 1000:
        f = c.frame_for(sid)
        assert isinstance(f, WsMessage) and f.flags == FLAG_TEXT | FLAG_MORE, f
        pieces.append(f)
    assert sum(len(p.data) for p in pieces) == 1000 and c.credit[sid] == 0
    # out of credit: the server must wait
    with pytest.raises(socket.timeout):
        c.read(timeout=0.5)
    c.give_credit(sid, 49000)         # the rest at once: now max_frame splits it
    while pieces[-1].flags & FLAG_MORE:
        pieces.append(c.frame_for(sid))
    sizes = [len(p.data) for p in pieces]
    assert max(sizes) == 16384 and min(sizes) >= 1, sizes
    assert all(p.flags == FLAG_TEXT | FLAG_MORE for p in pieces[:-1])
    assert pieces[-1].flags == FLAG_TEXT
    text = b"".join(p.data for p in pieces).decode()
    assert text == "\u20ac" + "t" * 49994 + "\u20ac"
    # bytes: no TEXT on any piece
    c = connect(ws_server, credit=1 << 20, max_frame=16384)
    sid = c.ws_connect("/big", b"size=40000")
    c.ws_accepted(sid)
    data, pieces = c.ws_message(sid)
    assert data == bytes(i % 251 for i in range(40000))
    assert [len(p.data) for p in pieces] == [16384, 16384, 7232]
    assert [p.flags for p in pieces] == [FLAG_MORE, FLAG_MORE, 0]


def test_ws_concurrent_sends_do_not_interleave(ws_server):
    """Two tasks of the app send at once while the gateway socket is full: each message's
    pieces stay together."""
    c = connect(ws_server, credit=1 << 23)
    sid = c.ws_connect("/concurrent", b"size=2000000")
    c.ws_accepted(sid)
    time.sleep(0.3)           # let the server's writes back up
    first, _ = c.ws_message(sid, auto_credit=False)
    second, _ = c.ws_message(sid, auto_credit=False)
    assert {first[:1], second[:1]} == {b"a", b"b"}
    assert first == first[:1] * 2000000 and second == second[:1] * 2000000


def test_ws_push_only_app_stopped_by_send_error(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/push")
    c.ws_accepted(sid)
    assert c.ws_text(sid) == "tick" and c.ws_text(sid) == "tick"
    c.send(Disconnect(sid, FLAG_END, 1001, ""))
    assert wait_recorded(c, 1) == ["push over"]
    # the ClientDisconnected it did not catch is how it learnt: not an error to log
    assert "Traceback" not in ws_server.log()


def test_ws_accept_with_subprotocol_and_headers(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/accept", b"sub=superchat", subprotocols=["chat", "superchat"])
    a = c.ws_accepted(sid)
    assert a.subprotocol == "superchat" and not a.flags & FLAG_END
    assert a.headers == [(b"x-accept", b"yes"), (b"set-cookie", b"a=1")]
    f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and (f.code, f.reason) == (1000, "")


def test_ws_close_with_code_and_reason(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/accept", b"code=4001&reason=bye")
    assert c.ws_accepted(sid).subprotocol is None
    f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and (f.code, f.reason) == (4001, "bye")
    # after its own close, the app's receive() says so and a send is a misuse
    assert wait_recorded(c, 2) == [
        {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}, MISUSED]


def test_ws_close_before_accept(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/deny")
    f = c.frame_for(sid)      # no WS_ACCEPT first: the gateway answers 403
    assert isinstance(f, WsClose) and f.flags & FLAG_END and f.code == 1000
    assert wait_recorded(c, 2) == [
        {"type": "websocket.disconnect", "code": 1006, "reason": ""}, MISUSED]
    assert not c.pending[sid]


def test_ws_denial_response(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/denial")
    head, body, rest = c.response(sid)
    assert isinstance(head, HttpResponse) and head.status == 401, head
    assert head.headers == [(b"content-type", b"text/plain"), (b"www-authenticate", b"Basic")]
    assert body == b"who are you?" and rest == []
    assert wait_recorded(c, 1) == [MISUSED]     # a body after the end of the response


def test_ws_disconnect_reaches_the_app(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/wait")
    c.ws_accepted(sid)
    c.send(WsMessage(sid, FLAG_TEXT, b"last words"), Disconnect(sid, FLAG_END, 1001, "away"))
    # a message that came before the close is still handed over; then the disconnect;
    # then the app's send raises an OSError
    assert wait_recorded(c, 3) == [
        {"type": "websocket.receive", "text": "last words"},
        {"type": "websocket.disconnect", "code": 1001, "reason": "away"}, DISCONNECTED]
    assert not [f for f in c.pending[sid] if not isinstance(f, Credit)]
    assert "Traceback" not in ws_server.log()


def test_ws_reset_gives_1006(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/wait")
    c.ws_accepted(sid)
    c.send(Reset(sid, 0, CANCEL))
    assert wait_recorded(c, 2) == [
        {"type": "websocket.disconnect", "code": 1006, "reason": ""}, DISCONNECTED]
    assert not c.pending[sid]


def test_ws_exception_before_accept_is_500(ws_server):
    c = connect(ws_server)
    head, body, _ = c.response(c.ws_connect("/raise/before"))
    assert isinstance(head, HttpResponse) and head.status == 500 and head.flags & FLAG_END
    ws_server.wait_log(r"WebSocket /raise/before: error in the app; answering 500")
    assert "ValueError: boom before accept" in ws_server.log()


def test_ws_exception_after_accept_closes_1011(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/raise/after")
    c.ws_accepted(sid)
    assert c.ws_text(sid) == "partial"
    f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and f.code == 1011, f
    ws_server.wait_log(r"WebSocket /raise/after: error in the app; closing with 1011")
    assert "ValueError: boom after accept" in ws_server.log()


def test_ws_app_returning_early(ws_server):
    c = connect(ws_server)
    head, _, _ = c.response(c.ws_connect("/return/before"))
    assert isinstance(head, HttpResponse) and head.status == 500 and head.flags & FLAG_END
    ws_server.wait_log(r"WebSocket /return/before: the app returned without accepting; "
                       r"answering 500")
    sid = c.ws_connect("/return/after")
    c.ws_accepted(sid)
    f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and f.code == 1000, f


def test_ws_invalid_utf8_closes_1007(ws_server):
    c = connect(ws_server)
    sid = c.ws_connect("/wait")
    c.ws_accepted(sid)
    c.send(WsMessage(sid, FLAG_TEXT | FLAG_MORE, b"ok \xe2\x82"),
           WsMessage(sid, FLAG_TEXT, b"\xff"))
    f = c.frame_for(sid)
    while isinstance(f, Credit):
        f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and f.code == 1007, f
    assert wait_recorded(c, 2) == [
        {"type": "websocket.disconnect", "code": 1007, "reason": "invalid UTF-8"},
        DISCONNECTED]


def test_ws_message_over_max_size_closes_1009(servers):
    server = servers.start(app="ws_app:app", args=["--ws-max-size", "1000"])
    c = connect(server)
    sid = c.ws_connect("/wait")
    c.ws_accepted(sid)
    c.send(WsMessage(sid, 0, b"x" * 1000))         # at the limit: fine
    c.send(WsMessage(sid, FLAG_MORE, b"x" * 600), WsMessage(sid, 0, b"x" * 600))
    f = c.frame_for(sid)
    while isinstance(f, Credit):
        f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and f.code == 1009, f
    got = wait_recorded(c, 3)
    assert got[0] == {"type": "websocket.receive", "bytes": "x" * 1000}
    assert got[1:] == [{"type": "websocket.disconnect", "code": 1009,
                        "reason": "message too big"}, DISCONNECTED]


def test_ws_stream_errors(servers):
    server = servers.start(app="ws_app:app", args=["--initial-credit", "1000"])
    c = connect(server)
    sid = c.ws_connect("/hold")
    c.send(WsMessage(sid, 0, b"before accept"))
    f = c.frame_for(sid)
    assert isinstance(f, Reset) and f.error == PROTOCOL
    sid = c.ws_connect("/wait")
    c.ws_accepted(sid)
    c.send(WsMessage(sid, 0, b"x" * 1001))
    f = c.frame_for(sid)
    assert isinstance(f, Reset) and f.error == FLOW
    sid = c.ws_connect("/wait")
    c.ws_accepted(sid)
    c.send(Data(sid, 0, b"not here"))
    f = c.frame_for(sid)
    assert isinstance(f, Reset) and f.error == PROTOCOL
    # the apps are not cancelled: they see 1006
    got = wait_recorded(c, 5)
    assert got.count({"type": "websocket.disconnect", "code": 1006, "reason": ""}) == 3
    assert got.count(DISCONNECTED) == 2


def test_ws_max_streams_refuses(servers):
    server = servers.start(app="ws_app:app", args=["--max-streams", "2"])
    c = connect(server)
    sids = [c.ws_connect("/hold") for _ in range(3)]
    f = c.frame_for(sids[2])
    assert isinstance(f, Reset) and f.error == REFUSED
    # http and websocket streams count together
    f = c.frame_for(c.request("/recorded"))
    assert isinstance(f, Reset) and f.error == REFUSED
    c.send(Disconnect(sids[0], FLAG_END, 1001, ""))
    sid = c.ws_connect("/echo")
    c.ws_accepted(sid)


def test_ws_drain_closes_with_1012(servers):
    server = servers.start(app="ws_app:app", args=["--graceful-timeout", "10"])
    c = connect(server)
    sid = c.ws_connect("/wait")
    c.ws_accepted(sid)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    g = c.frame_for(0)
    assert isinstance(g, GoAway) and g.error == NONE and g.last_stream == sid, g
    f = c.frame_for(sid)
    assert isinstance(f, WsClose) and f.flags & FLAG_END and f.code == 1012, f
    assert c.read() is None
    assert server.proc.wait(TIMEOUT) == 0
    assert time.monotonic() - t0 < 5


def _has_fastapi():
    return subprocess.run(["/usr/bin/python3", "-c", "import fastapi"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_fastapi(), reason="python3-fastapi is not installed")
def test_fastapi(servers):
    server = servers.start(app="fastapi_app:app")
    c = connect(server)
    assert c.get_json("/items/42", b"q=blue") == {"item_id": 42, "q": "blue"}
    head, body, _ = c.response(c.request("/items/nope"))
    assert head.status == 422
    body = json.dumps({"a": 1, "b": [1, 2]}).encode()
    r = c.get_json("/items", method="POST", body=body,
                   headers=[(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())])
    assert r == {"created": {"a": 1, "b": [1, 2]}, "size": 2}
