# SPDX-License-Identifier: MIT
"""WebSocket conformance (RFC 6455, RFC 7692) through the gateway, with the raw-frame client
of wsclient.py and, for permessage-deflate, Debian's python3-websockets as a second client.
The app is tests/apps/ws_echo.py, the same under every backend.

Each test runs against every kind of backend it applies to (the `kind` parameter):

  asgi    gateway -> gatehouse.asgi (unix socket, `protocol: asgi`): the gateway terminates the
          WebSocket and speaks WS_* frames to the app
  uwsgi   gateway -> gatehouse.wsgi (unix socket, `protocol: uwsgi`): the gateway terminates the
          WebSocket and carries it as WebSocket-over-HTTP POSTs to tests/apps/ws_echo_wsgi.py,
          a blocking WSGI twin of ws_echo.py
  http    gateway -> uvicorn (`protocol: http`): the gateway checks the handshake, forwards it
          and, on 101, tunnels the bytes both ways, so frame-level outcomes come from uvicorn's
          websockets library (tests of that kind check only what is the same either way)
  direct  uvicorn alone, no gateway: the reference run showing that a test's expectation is
          what a well-known server does (and that the client and the app are right)

A test states what it needs (@needs("gateway", "terminates", ...)); the kinds with all those
tags run it. Adding a kind is one entry in KINDS. Backends are shared by the module (tests use
unique paths, and the app's event log is filtered by path); gateways are per test.

Every process is stopped by its PID; every read and wait is bounded."""

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import struct
import threading
import time
from contextlib import contextmanager

import pytest

import gw
import wsclient as W
from gw import wait_until
from test_asgi import APPS, GhAsgi, Uvicorn, asgi_upstream
from test_uwsgi import GhWsgi, uwsgi_upstream
from wsclient import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT

_spec = importlib.util.spec_from_file_location("ws_echo", APPS / "ws_echo.py")
ws_echo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ws_echo)

MIB = 1 << 20


# ---- backends and kinds ---------------------------------------------------------------------

@contextmanager
def environ(**env):
    """Sets environment variables for the child processes started inside the block."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Backend:
    """A running ws_echo:app: its upstream configuration for the gateway, its TCP port when it
    has one (for the direct kind), its event log, and kill/stop."""

    def __init__(self, upstream, log, proc, port=None):
        self.upstream = upstream
        self.log = log
        self.proc = proc          # GhAsgi or Uvicorn
        self.port = port

    def events(self, path=None):
        try:
            lines = self.log.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass             # a line being written right now
        return [e for e in out if path is None or e.get("path") == path]

    def kill(self):
        """SIGKILL, as a crash or the OOM killer would."""
        if hasattr(self.proc, "kill"):
            self.proc.kill()               # GhAsgi: the master and its workers
        else:
            self.proc.proc.kill()
            self.proc.proc.wait(5)

    def stop(self):
        self.proc.stop()


def start_gatehouse_asgi(workdir):
    log = workdir / "events.jsonl"
    with environ(WS_ECHO_LOG=str(log)):
        a = GhAsgi(workdir, app="ws_echo:app", workers=1, name="wsecho")
    return Backend(asgi_upstream([a.server]), log, a)


def start_gatehouse_wsgi(workdir, workers=4):
    log = workdir / "events.jsonl"
    g = GhWsgi(workdir, app="ws_echo_wsgi:app", workers=workers, name="wsecho", chdir=APPS,
               env={"WS_ECHO_LOG": str(log)})
    # Every WebSocket's POSTs queue for the 4 workers with the plain requests.
    return Backend(uwsgi_upstream([g.server], queue={"limit": 1000, "timeout": "30s"}), log, g)


def start_uvicorn(workdir):
    log = workdir / "events.jsonl"
    with environ(WS_ECHO_LOG=str(log)):
        # websockets (not wsproto), and no server pings of its own during a test
        u = Uvicorn(workdir, "ws_echo:app", ["--ws", "websockets", "--ws-ping-interval",
                                             "3600", "--lifespan", "on"])
    return Backend(gw.upstream_conf(["127.0.0.1:%d" % u.port]), log, u, port=u.port)


class Kind:
    """|backend|: the name of the backend process (kinds that name the same one share it);
    |start|: starts one in a directory; |tags|: what the kind gives:
      gateway          a gateway is in front (all but direct)
      terminates       the gateway terminates the WebSocket (frames, limits, pings are its own)
      posts            WebSocket-over-HTTP: the app sees POSTs of application/websocket-events
      tunnel           the gateway tunnels bytes to an upstream that speaks WebSocket itself
      held             the upstream holds a connection for each WebSocket, so its loss is seen
                       at once (not so for uwsgi, which sees the app only at each POST)
      denial_response  the app side supports websocket.http.response (uvicorn 0.17 does not)"""

    def __init__(self, backend, start, tags):
        self.backend = backend
        self.start = start
        self.tags = frozenset(tags)


KINDS = {
    "asgi": Kind("gatehouse.asgi", start_gatehouse_asgi,
                 {"gateway", "terminates", "denial_response", "held"}),
    "uwsgi": Kind("gatehouse.wsgi", start_gatehouse_wsgi,
                  {"gateway", "terminates", "denial_response", "posts"}),
    "http": Kind("uvicorn", start_uvicorn, {"gateway", "held", "tunnel"}),
    "direct": Kind("uvicorn", start_uvicorn, set()),
}


def needs(*tags):
    """Runs the test for the kinds that have all of |tags| (no tags: every kind)."""
    def mark(fn):
        fn.ws_tags = frozenset(tags)
        return fn
    return mark


def pytest_generate_tests(metafunc):
    if "kind" in metafunc.fixturenames:
        tags = getattr(metafunc.function, "ws_tags", frozenset())
        metafunc.parametrize("kind", [k for k, v in KINDS.items() if tags <= v.tags])


class Backends:
    """The module's backends, started on first use, one per backend name."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.running = {}

    def get(self, kind):
        k = KINDS[kind]
        if k.backend not in self.running:
            d = self.workdir / re.sub(r"[^\w.-]", "_", k.backend)
            d.mkdir(exist_ok=True)
            self.running[k.backend] = k.start(d)
        return self.running[k.backend]

    def stop(self):
        for b in self.running.values():
            b.stop()


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    b = Backends(tmp_path_factory.mktemp("ws_backends"))
    yield b
    b.stop()


class Direct:
    """Stands for the gateway in the direct kind: the backend's own port."""

    def __init__(self, port):
        self.port = port


class Env:
    """One test's view: its kind, the shared backend, gateways started on demand, unique
    paths, and the app's events."""

    def __init__(self, kind, backend, harness, workdir, name):
        self.kind = kind
        self.tags = KINDS[kind].tags
        self.backend = backend
        self.harness = harness
        self.workdir = workdir
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
        self.count = 0
        self.private = []

    def path(self, suffix=""):
        """A path under /ws/ that no other test uses."""
        self.count += 1
        return "/ws/%s-%d%s" % (self.name, self.count, suffix)

    def gateway(self, ws=None, route_ws=None, advisory=False, backend=None, routes=(),
                upstreams=None, **over):
        """Starts a gateway in front of the backend (or |backend|): routes /ws/ (with
        `websocket: route_ws` when given) and / go to it; |routes| come first; |ws| is the
        top-level websocket block; |upstreams| more upstreams by name. Returns the Gateway.
        In the direct kind, returns the backend's port as a Direct; the settings must then be
        |advisory| (ones the test does not depend on, such as a large enough max_message)."""
        b = backend or self.backend
        if "gateway" not in self.tags:
            assert advisory or not (ws or route_ws or routes or upstreams or over), \
                "this test depends on gateway settings: it cannot run without a gateway"
            return Direct(b.port)
        ws_route = {"match": {"path": "/ws/"}, "upstream": "app"}
        if route_ws is not None:
            ws_route["websocket"] = route_ws
        ups = {"app": b.upstream}
        ups.update(upstreams or {})
        all_routes = list(routes) + [ws_route, {"match": {"path": "/"}, "upstream": "app"}]
        if ws is not None:
            over["websocket"] = ws
        return self.harness.gateway(ups, routes=all_routes, **over)

    def private_backend(self, **kw):
        """A backend of this kind for this test alone (one it may kill); |kw| go to the
        kind's start function."""
        d = self.workdir / ("private%d" % len(self.private))
        d.mkdir()
        b = KINDS[self.kind].start(d, **kw)
        self.private.append(b)
        return b

    def events(self, path, backend=None):
        return (backend or self.backend).events(path)

    def wait_event(self, path, event, code=None, timeout=2.0, backend=None):
        """Waits for the app's |event| on |path| (with that close |code| when given)."""
        def found():
            es = [e for e in self.events(path, backend) if e["event"] == event]
            return es if es and (code is None or any(e.get("code") == code for e in es)) \
                else None
        try:
            return wait_until(found, timeout=timeout, what="app event %s %s on %s"
                              % (event, code, path))
        except AssertionError as e:
            raise AssertionError("%s; the app's events there: %s"
                                 % (e, self.events(path, backend))) from None

    def close(self):
        for b in self.private:
            b.stop()


@pytest.fixture
def env(kind, backends, harness, tmp_path, request):
    e = Env(kind, backends.get(kind), harness, tmp_path, request.node.name)
    yield e
    e.close()


# ---- helpers --------------------------------------------------------------------------------

def text_of(n):
    """A str whose UTF-8 form is exactly |n| bytes, with 1- to 4-byte characters."""
    unit = "aé€😀"          # 1 + 2 + 3 + 4 bytes
    reps = n // 10
    s = unit * reps
    return s + "z" * (n - 10 * reps)


def echo(c, msg):
    """Sends |msg| (str: text, bytes: binary) and asserts the same comes back."""
    if isinstance(msg, str):
        c.send_text(msg)
        want = (OP_TEXT, msg.encode("utf-8"))
    else:
        c.send_binary(msg)
        want = (OP_BINARY, bytes(msg))
    m = c.recv_message()
    assert (m.opcode, m.data) == want, (m.opcode, len(m.data), want[0], len(want[1]))


def clean_close(c, code=1000):
    """The client closes: the server answers with the same code and closes TCP."""
    c.send_close(code, "done")
    assert c.expect_close(code, answer=False, timeout=3)[0] == code


def assert_gateway_answered(env, g, path, r):
    """|r| (the answer to a handshake for |path|) came from the gateway: the app never saw
    |path| (a plain request sent after it reached the app first) and nothing in it is from
    uvicorn or its websockets library."""
    assert not re.search(r"uvicorn|websockets", r.header("Server") or "", re.I), r
    ctl = env.path("-ctl")
    rc = gw.get(g.port, ctl)
    assert rc.status == 200 and rc.body == b"ws_echo", rc
    env.wait_event(ctl, "http")
    time.sleep(0.1)
    assert env.events(path) == [], env.events(path)


def no_data_frames(c):
    data = [f for f in c.skipped if f.opcode in (OP_TEXT, OP_BINARY, OP_CONT)]
    assert not data, data


# ---- the opening handshake ------------------------------------------------------------------

BAD_KEY_15 = "AAAAAAAAAAAAAAAAAAAA"                  # valid base64, but of 15 bytes
BAD_KEY_CHARS = "!!!!!!!!!!!!!!!!!!!!!!=="             # 24 characters, not base64

REFUSALS = [
    ("post", dict(method="POST", headers=[("Content-Length", "0")]), 400),
    ("no-key", dict(key=None), 400),
    ("key-of-15-bytes", dict(key=BAD_KEY_15), 400),
    ("key-not-base64", dict(key=BAD_KEY_CHARS), 400),
    ("two-keys", dict(key=[W.new_key(), W.new_key()]), 400),
    ("no-connection-upgrade", dict(connection=None), 400),
    ("connection-keep-alive", dict(connection="keep-alive"), 400),
    ("http-1.0", dict(http_version="HTTP/1.0"), 400),
    ("version-8", dict(version="8"), 426),
    ("no-version", dict(version=None), 426),
]


@needs("gateway")
@pytest.mark.parametrize("case,kw,status", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_handshake_refused_by_the_gateway(env, case, kw, status):
    """A broken opening handshake is answered by the gateway itself (RFC 6455 §4.2.1, §4.4):
    400, or 426 with Sec-WebSocket-Version: 13 for a missing or other version."""
    g = env.gateway()
    p = env.path()
    with W.WsConn(g.port, timeout=3) as c:
        r = c.handshake(p, **kw)
    assert r.status == status, r
    assert r.header("Sec-WebSocket-Accept") is None, r
    if status == 426:
        assert r.header_all("Sec-WebSocket-Version") == ["13"], r
    assert_gateway_answered(env, g, p, r)


@needs("gateway")
def test_upgrade_to_something_else_is_a_plain_request(env):
    """Upgrade: h2c without any WebSocket field is an ordinary request: the app's 200 (the
    gateway drops the hop-by-hop Upgrade; uvicorn would answer 400 to it)."""
    g = env.gateway()
    p = env.path()
    with gw.Conn(g.port, timeout=5) as c:
        c.send(("GET %s HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" % p).encode())
        r = c.read_response()
    assert r.status == 200 and r.body == b"ws_echo", r
    assert r.header("Upgrade") is None
    env.wait_event(p, "http")


@needs()
def test_accept_with_subprotocol_and_app_headers(env):
    g = env.gateway()
    p = env.path()
    with W.WsConn(g.port) as c:
        r = c.handshake(p + "?a=1&b=x%20y", protocols="chat.v0, chat.v1",
                        headers=[("X-Custom", "yes")])
        assert r.status == 101, r
        assert r.tokens("Upgrade") == ["websocket"], r
        assert "upgrade" in r.tokens("Connection"), r
        assert r.header_all("Sec-WebSocket-Accept") == [W.accept_for(c.key)], r
        assert r.header_all("Sec-WebSocket-Protocol") == ["chat.v1"], r
        assert r.header_all("x-echo") == ["1"], r
        assert r.header("Content-Length") is None and r.header("Transfer-Encoding") is None
        assert r.leftover == b"", r.leftover
        c.send_text("scope")
        s = json.loads(c.recv_message().text)
        assert s["type"] == "websocket" and s["path"] == p, s
        assert s["query_string"] == "a=1&b=x%20y", s
        assert s["subprotocols"] == ["chat.v0", "chat.v1"], s
        assert s["http_version"] == "1.1", s
        if "terminates" in env.tags or "gateway" not in env.tags:
            assert s["scheme"] == "ws", s
        else:
            # uvicorn 0.17 takes the gateway's X-Forwarded-Proto: http literally (later
            # versions turn it into ws)
            assert s["scheme"] in ("ws", "http"), s
        assert ["x-custom", "yes"] in [[n.lower(), v] for n, v in s["headers"]], s
        clean_close(c)


@needs()
@pytest.mark.parametrize("offer", [None, "chat.v0", "chat.v0, other"])
def test_no_subprotocol_when_none_matches(env, offer):
    g = env.gateway()
    with W.connect(g.port, env.path(), protocols=offer) as c:
        assert c.response.header("Sec-WebSocket-Protocol") is None, c.response
        assert c.response.header("x-echo") == "1"
        echo(c, "still works")
        clean_close(c)


@needs("gateway")
def test_origin_allow_list(env):
    """`origins` per route (the top level's inherited, a route's own replacing it, "*" any).
    A request without Origin is not from a browser and is let through."""
    g = env.gateway(ws={"origins": ["https://good.example"]}, routes=[
        {"match": {"path": "/ws/any/"}, "upstream": "app", "websocket": {"origins": ["*"]}}])
    with W.connect(g.port, env.path(), origin="https://good.example") as c:
        echo(c, "good")
        clean_close(c)
    with W.connect(g.port, env.path()) as c:
        echo(c, "no origin")
        clean_close(c)
    for origin in ("https://evil.example", "http://good.example",
                   "https://good.example.evil.example"):
        p = env.path()
        with W.WsConn(g.port, timeout=3) as c:
            r = c.handshake(p, origin=origin)
        assert r.status == 403, (origin, r)
        assert_gateway_answered(env, g, p, r)
    p = "/ws/any/" + env.path()[4:]
    with W.connect(g.port, p, origin="https://evil.example") as c:
        echo(c, "any origin")
        clean_close(c)


@needs()
def test_app_refuses_before_accept_403(env):
    g = env.gateway()
    p = env.path("/deny")
    with W.WsConn(g.port, timeout=3) as c:
        r = c.handshake(p)
    assert r.status == 403, r
    assert r.header("Sec-WebSocket-Accept") is None and r.header("Upgrade") is None, r
    env.wait_event(p, "connect")      # the app was asked, and said no


@needs("gateway", "terminates")
def test_app_subprotocol_not_offered_is_502(env):
    """An app must choose among the offered subprotocols (RFC 6455 §4.2.2): the gateway refuses
    another with 502 and a log line, and the client never gets a 101 with it."""
    g = env.gateway()
    with W.WsConn(g.port, timeout=3) as c:
        r = c.handshake(env.path("/bad-proto"), protocols="chat.v0")
    assert r.status == 502 and r.header("Sec-WebSocket-Accept") is None, r
    assert "subprotocol the client did not offer" in g.stderr_text(), g.stderr_text()[-2000:]


@needs("gateway", "denial_response")
def test_app_denial_response(env):
    g = env.gateway()
    with W.WsConn(g.port, timeout=3) as c:
        r = c.handshake(env.path("/deny-response"))
    assert r.status == 401, r
    assert r.header_all("x-denied") == ["yes"], r
    assert r.body == b"denied", r
    assert r.header("Sec-WebSocket-Accept") is None and r.header("Upgrade") is None, r


# ---- messages -------------------------------------------------------------------------------

SIZES = (0, 125, 126, 65535, 65536, MIB - 1)   # each length encoding and its edges


@needs()
def test_echo_text_and_binary_of_every_length_encoding(env):
    g = env.gateway(route_ws={"max_message": "2m"}, advisory=True)
    with W.connect(g.port, env.path(), timeout=10) as c:
        for n in SIZES:
            echo(c, os.urandom(n))
            echo(c, text_of(n))
        # a mask of zeros is a mask too
        c.send_frame(OP_TEXT, b"zero mask", mask_key=b"\0\0\0\0")
        assert c.recv_message().data == b"zero mask"
        clean_close(c)


@needs()
def test_fragmented_text_with_a_ping_between_fragments(env):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        c.send_frame(OP_TEXT, b"Hello, ", fin=False)
        c.send_ping(b"between")
        c.send_frame(OP_CONT, b"fragmented ", fin=False)
        c.send_frame(OP_CONT, b"world")
        controls = []
        m = c.recv_message(controls=controls)
        assert controls == [W.Frame(True, 0, OP_PONG, b"between")], controls
        assert (m.opcode, m.data) == (OP_TEXT, b"Hello, fragmented world"), m
        clean_close(c)


@needs()
def test_utf8_split_across_fragments(env):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        data = "café 😀!".encode("utf-8")          # é = c3 a9, 😀 = f0 9f 98 80
        i, j = data.index(b"\xa9"), data.index(b"\x98")
        c.send_message(OP_TEXT, data, sizes=[i, j - i, len(data) - j])
        m = c.recv_message()
        assert (m.opcode, m.text) == (OP_TEXT, "café 😀!"), m
        clean_close(c)


@needs()
def test_binary_in_many_small_fragments(env):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        data = os.urandom(1000)
        sizes = [0, 1] + [7] * 142 + [5, 0]       # empty first and last frames are legal
        assert sum(sizes) == len(data)
        c.send_message(OP_BINARY, data, sizes=sizes)
        m = c.recv_message()
        assert (m.opcode, m.data) == (OP_BINARY, data)
        clean_close(c)


@needs()
def test_ping_payloads_are_echoed_in_pongs(env):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        c.send_pong(b"unsolicited")                 # ignored (RFC 6455 §5.5.3)
        for payload in (b"", bytes(range(125))):
            c.send_ping(payload)
            f = c.read_frame(timeout=3)
            assert f == W.Frame(True, 0, OP_PONG, payload), f
        echo(c, "after pings")
        clean_close(c)


# ---- protocol errors ------------------------------------------------------------------------

def _send(*frames):
    """An action sending frames, each (opcode, payload, options)."""
    def act(c):
        for op, payload, kw in frames:
            c.send_frame(op, payload, **kw)
    return act


PROTOCOL_ERRORS = [
    ("unmasked", _send((OP_TEXT, b"hello", {"mask": False})), 1002),
    ("rsv1-without-deflate", _send((OP_TEXT, b"hello", {"rsv1": True})), 1002),
    ("rsv2", _send((OP_TEXT, b"hello", {"rsv2": True})), 1002),
    ("rsv3", _send((OP_BINARY, b"hello", {"rsv3": True})), 1002),
    ("opcode-3", _send((0x3, b"x", {})), 1002),
    ("opcode-0xB", _send((0xB, b"x", {})), 1002),
    ("control-frame-of-126", _send((OP_PING, b"x" * 126, {})), 1002),
    ("fragmented-ping", _send((OP_PING, b"x", {"fin": False})), 1002),
    ("continuation-without-message", _send((OP_CONT, b"x", {})), 1002),
    ("text-inside-open-message", _send((OP_TEXT, b"a", {"fin": False}),
                                       (OP_TEXT, b"b", {})), 1002),
    ("binary-inside-open-message", _send((OP_BINARY, b"a", {"fin": False}),
                                         (OP_BINARY, b"b", {})), 1002),
    ("invalid-utf8", _send((OP_TEXT, b"abc\xff", {})), 1007),
    ("utf8-overlong", _send((OP_TEXT, b"\xc0\xaf", {})), 1007),
    ("utf8-surrogate", _send((OP_TEXT, b"\xed\xa0\x80", {})), 1007),
    ("utf8-over-10ffff", _send((OP_TEXT, b"\xf4\x90\x80\x80", {})), 1007),
    ("utf8-invalid-across-fragments", _send((OP_TEXT, b"abc\xe2", {"fin": False}),
                                            (OP_CONT, b"xyz", {})), 1007),
    ("close-of-1-byte", _send((W.OP_CLOSE, b"\x03", {})), 1002),
    ("close-reason-not-utf8", _send((W.OP_CLOSE, struct.pack("!H", 1000) + b"\xff\xfe", {})),
     1007),
] + [("close-code-%d" % k, _send((W.OP_CLOSE, struct.pack("!H", k) + b"x", {})), 1002)
     for k in (999, 1004, 1005, 1006, 1016, 2999, 5000)]


@needs()
@pytest.mark.parametrize("case,act,code", PROTOCOL_ERRORS, ids=[p[0] for p in PROTOCOL_ERRORS])
def test_protocol_error_closes_with_code(env, case, act, code):
    """The server sends a close frame with the code, nothing of the bad message reaches the
    client, and TCP is closed once the client answered."""
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        act(c)
        c.expect_close(code, timeout=3)
        no_data_frames(c)


@needs()
@pytest.mark.parametrize("code", [1000, 1001, 1003, 3000, 4999])
def test_client_close_is_answered_and_reaches_the_app(env, code):
    g = env.gateway()
    p = env.path()
    with W.connect(g.port, p) as c:
        echo(c, "before the close")
        c.send_close(code, "bye é")
        assert c.expect_close(code, answer=False, timeout=3)[0] == code
    env.wait_event(p, "disconnect", code=code)


@needs()
def test_close_without_code(env):
    """An empty close is valid: answered (empty, or 1000), and the app sees 1005."""
    g = env.gateway()
    p = env.path()
    with W.connect(g.port, p) as c:
        echo(c, "before the close")
        c.send_close()
        c.expect_close((None, 1000), answer=False, timeout=3)
    env.wait_event(p, "disconnect", code=1005)


@needs("gateway", "terminates")
def test_message_over_max_message_is_1009(env):
    g = env.gateway(route_ws={"max_message": "64k"})
    with W.connect(g.port, env.path()) as c:
        echo(c, os.urandom(65536))                 # the limit itself is allowed
        c.send_binary(os.urandom(65537))
        c.expect_close(1009, timeout=3)
        no_data_frames(c)
    with W.connect(g.port, env.path()) as c:       # fragments, each well under the limit
        c.send_message(OP_TEXT, b"x" * 65537, sizes=[16384] * 4 + [1])
        c.expect_close(1009, timeout=3)
        no_data_frames(c)


@needs("gateway", "terminates")
def test_close_timeout_when_the_client_does_not_answer(env):
    """After its close frame the gateway waits close_timeout for the client's, then closes
    TCP anyway: after a protocol error and after the app's close."""
    g = env.gateway(route_ws={"close_timeout": "300ms"})
    for act, code in ((lambda c: c.send_frame(OP_TEXT, b"x", mask=False), 1002),
                      (lambda c: c.send_text("close:4002:no answer"), 4002)):
        with W.connect(g.port, env.path()) as c:
            act(c)
            t0 = time.monotonic()
            c.expect_close(code, answer=False, timeout=3)
            took = time.monotonic() - t0
        assert took < 0.3 + 1.0, (code, took)


@needs()
def test_app_closes_with_its_code_and_reason(env):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        echo(c, "hello")
        c.send_text("close:4001:bye")
        assert c.expect_close(4001, timeout=3) == (4001, "bye")


# ---- liveness, flow, scale ------------------------------------------------------------------

LIVENESS = {"ping_interval": "300ms", "ping_timeout": "300ms"}


@needs("gateway", "terminates")
def test_pings_keep_an_answering_client_open(env):
    g = env.gateway(route_ws=LIVENESS)
    with W.connect(g.port, env.path()) as c:
        t0 = time.monotonic()
        pings = 0
        while time.monotonic() - t0 < 2.2:
            f = c.read_frame(timeout=1.0)          # one ping per 300 ms
            assert f.opcode == OP_PING, f
            pings += 1
            c.send_pong(f.payload)
        assert pings >= 4, pings
        c.send_text("still open")
        assert c.recv_message(answer_pings=True).text == "still open"
        clean_close(c)


@needs("gateway", "terminates")
def test_client_not_answering_pings_is_closed(env):
    g = env.gateway(route_ws=LIVENESS)
    p = env.path()
    with W.connect(g.port, p) as c:
        t0 = time.monotonic()
        pings = 0
        code = "none"
        while time.monotonic() - t0 < 3:
            try:
                f = c.read_frame(timeout=3)
            except W.PeerClosed:
                code = None                        # TCP closed without a close frame
                break
            if f.opcode == OP_PING:
                pings += 1                         # not answered
            elif f.opcode == W.OP_CLOSE:
                code = W.parse_close(f.payload)[0]
                c.send_close(code)
                c.wait_tcp_closed(2)
                break
        took = time.monotonic() - t0
    assert pings >= 1 and code in (1011, None), (pings, code)
    assert took < 0.3 + 0.3 + 1.0, took
    env.wait_event(p, "disconnect")


@needs("gateway", "terminates")
def test_flood_to_a_client_that_does_not_read_is_held_back(env):
    """400 x 64 KiB from the app to a client reading nothing for 2 s: the gateway holds far
    less than the 26 MB; then every message arrives, in order, intact."""
    g = env.gateway()
    with W.connect(g.port, env.path(), timeout=20, rcvbuf=128 * 1024) as c:
        base = g.rss_kb()
        sampler = gw.RssSampler(g.pid).start()
        c.send_text("flood:400:65536")
        time.sleep(2)
        sampler.stop()
        grown = sampler.max_kb - base
        assert grown < 16 * 1024, (base, sampler.max_kb)
        for i in range(400):
            m = c.recv_message()
            assert m.opcode == OP_BINARY and m.data == ws_echo.flood_message(i, 65536), i
        assert c.recv_message().text == "flood-done"
        clean_close(c)


@needs("gateway")
def test_200_concurrent_websockets(env):
    g = env.gateway()
    base = env.path()
    n = 200
    opened = threading.Barrier(n, timeout=30)
    done, errors = [], []

    def one(i):
        try:
            with W.connect(g.port, "%s-%d" % (base, i), timeout=30) as c:
                opened.wait()                      # all 200 open at once
                for j in range(5):
                    msg = "connection %d message %d" % (i, j)
                    c.send_text(msg)
                    assert c.recv_message().text == msg
                c.send_close(1000)
                c.expect_close(1000, answer=False, timeout=30)
            done.append(i)
        except BaseException as e:                 # noqa: BLE001  reported below
            errors.append((i, repr(e)))
            opened.abort()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert sorted(done) == list(range(n))


@needs("gateway", "terminates")
def test_upstream_that_takes_nothing_ends_the_websocket(env):
    """A client held back because the app takes no message (no credit comes back; the POST in
    flight does not end) is not held for ever: after ping_interval + ping_timeout without
    progress the gateway closes with 1011, tells the app and says why."""
    g = env.gateway(route_ws=LIVENESS)
    p = env.path()
    with W.connect(g.port, p, timeout=10) as c:
        c.send_text("slow:3" if "posts" in env.tags else "deaf:3")
        t0 = time.monotonic()
        c.sock.settimeout(0.5)
        try:
            for _ in range(512):                   # up to 8 MiB, until the gateway stops
                c.send_binary(b"x" * 16384)        # reading
        except OSError:
            pass
        c.sock.settimeout(10)
        code, _ = c.close_or_eof(timeout=5)
        took = time.monotonic() - t0
    assert code in (1011, None), code              # None: a reset over the unread bytes
    assert took < 4, took
    assert "the upstream took no message" in g.stderr_text(), g.stderr_text()[-2000:]
    env.wait_event(p, "disconnect", timeout=5)


class HalfCloseUpstream:
    """A WebSocket server that answers the upgrade with 101, reads until the client's EOF,
    then sends one text frame saying how many bytes it got, and closes: its answer needs the
    client's half-close to reach it and the way back to stay open."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        with c:
            c.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(4096)
            head, rest = head.split(b"\r\n\r\n", 1)
            key = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head).group(1).decode()
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                      % W.accept_for(key).encode())
            got = len(rest)
            while True:
                piece = c.recv(65536)
                if not piece:
                    break
                got += len(piece)
            msg = b"got %d" % got
            c.sendall(bytes([0x81, len(msg)]) + msg)

    def stop(self):
        self.sock.close()
        self.t.join(5)


@needs("tunnel")
def test_tunnel_client_half_close_reaches_the_upstream_and_its_answer_comes_back(env):
    up = HalfCloseUpstream()
    try:
        g = env.gateway(upstreams={"half": gw.upstream_conf(["127.0.0.1:%d" % up.port])},
                        routes=[{"match": {"path": "/half/"}, "upstream": "half"}])
        with W.connect(g.port, "/half/x") as c:
            c.send_text("hello")                   # 2 + 4 (mask) + 5 bytes
            c.sock.shutdown(socket.SHUT_WR)
            assert c.recv_message(timeout=3).text == "got 11"
            c.wait_tcp_closed(3)
    finally:
        up.stop()


# ---- ends -----------------------------------------------------------------------------------

@needs()
def test_client_vanishing_reaches_the_app_as_1006(env):
    g = env.gateway()
    p = env.path()
    c = W.connect(g.port, p)
    echo(c, "here")
    c.close()                                      # TCP closed, no close frame
    env.wait_event(p, "disconnect", code=1006, timeout=2)


@needs("gateway", "terminates", "held")
def test_backend_killed_closes_the_websocket(env):
    b = env.private_backend()
    plain = env.harness.upstream("plain")
    g = env.gateway(backend=b, upstreams={"plain": gw.upstream_conf([plain.addr])}, routes=[
        {"match": {"path": "/plain/"}, "upstream": "plain", "strip_prefix": True}])
    with W.connect(g.port, env.path()) as c:
        echo(c, "before")
        b.kill()
        t0 = time.monotonic()
        code, _ = c.close_or_eof(timeout=3)
        took = time.monotonic() - t0
    assert code in (1011, 1014, None), code
    assert took < 3, took
    r = gw.get(g.port, "/plain/echo")
    assert r.status == 200, r
    assert g.alive()


@needs("gateway", "terminates")
def test_gateway_sigterm_closes_with_1001(env):
    g = env.gateway(shutdown={"delay": "0s", "timeout": "3s"})
    with W.connect(g.port, env.path()) as c:
        echo(c, "before")
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        c.expect_close(1001, timeout=3)
    rc = g.wait_exit(max(0.1, t0 + 3.5 - time.monotonic()))
    assert rc == 0, (rc, g.stderr_text()[-2000:])


@needs("gateway")
def test_access_log_status_101(env):
    g = env.gateway()
    p = env.path()
    with W.connect(g.port, p) as c:
        echo(c, "logged")
        clean_close(c)
    e = g.access_for(p)[0]
    assert e["status"] == 101 and e["method"] == "GET", e


# ---- permessage-deflate ---------------------------------------------------------------------

DEFLATE = {"deflate": True, "max_message": "4m"}


def websockets_roundtrip(port, path, messages, compression="deflate"):
    """Echoes |messages| one by one with python3-websockets' asyncio client; returns (the
    response's Sec-WebSocket-Extensions fields, the messages echoed)."""
    import websockets

    async def run():
        async with websockets.connect("ws://127.0.0.1:%d%s" % (port, path),
                                      compression=compression, max_size=None,
                                      open_timeout=5, close_timeout=3,
                                      ping_interval=None) as ws:
            ext = ws.response_headers.get_all("Sec-WebSocket-Extensions")
            out = []
            for m in messages:
                await ws.send(m)
                out.append(await asyncio.wait_for(ws.recv(), 5))
            return ext, out
    return asyncio.run(asyncio.wait_for(run(), 20))


def compressible_text(n, seed=0):
    line = "%d: the quick brown fox jumps over the lazy dog, again and again. " % seed
    return (line * (n // len(line) + 1))[:n]


def pmd_names(ext_fields):
    return [e.split(";")[0].strip().lower() for f in ext_fields for e in f.split(",")]


@needs()
def test_deflate_with_websockets_client(env):
    g = env.gateway(route_ws=DEFLATE, advisory=True)
    messages = [compressible_text(MIB), os.urandom(200000)] + \
        [compressible_text(5000, i) for i in range(5)]        # context takeover across them
    ext, out = websockets_roundtrip(g.port, env.path(), messages)
    assert pmd_names(ext) == ["permessage-deflate"], ext
    assert out == messages


@needs()
def test_deflate_raw_frames_with_context_takeover(env):
    g = env.gateway(route_ws=DEFLATE, advisory=True)
    with W.connect(g.port, env.path(), extensions="permessage-deflate") as c:
        assert c.deflate is not None, c.response
        for i in range(3):
            text = compressible_text(3000, i)
            c.send_text(text, compress=True)
            assert c.recv_message().text == text
        data = compressible_text(20000, 9).encode()
        c.send_message(OP_BINARY, data, compress=True, fragments=3)
        assert c.recv_message().data == data
        echo(c, "not compressed")                  # RSV1 clear: a plain message
        clean_close(c)


@needs()
@pytest.mark.parametrize("n", [0, 1, 65535, 65536, 65537, 131072, 131073, MIB])
def test_deflate_raw_message_sizes(env, n):
    """Compressed client messages that inflate to sizes around powers of two (where an
    inflate loop's output buffer fills exactly), echoed intact."""
    g = env.gateway(route_ws=DEFLATE, advisory=True)
    with W.connect(g.port, env.path(), extensions="permessage-deflate") as c:
        assert c.deflate is not None, c.response
        text = compressible_text(n, n)
        c.send_text(text, compress=True)
        assert c.recv_message().text == text
        data = bytes(n)
        c.send_binary(data, compress=True)
        assert c.recv_message().data == data
        clean_close(c)


@needs("gateway", "terminates")
def test_deflate_no_context_takeover(env):
    g = env.gateway(route_ws=dict(DEFLATE, deflate_no_context_takeover=True))
    with W.connect(g.port, env.path(),
                   extensions="permessage-deflate; client_max_window_bits") as c:
        params = dict(c.deflate or {})
        assert "server_no_context_takeover" in params, c.response
        assert "client_no_context_takeover" in params, c.response
        for i in range(3):                          # each compressed on its own
            text = compressible_text(3000, i)
            c.send_text(text, compress=True)
            assert c.recv_message().text == text
        clean_close(c)
    messages = [compressible_text(50000, i) for i in range(4)]
    ext, out = websockets_roundtrip(g.port, env.path(), messages)
    assert "server_no_context_takeover" in ",".join(ext), ext
    assert out == messages


@needs("gateway", "terminates")
def test_deflate_window_bits(env):
    """deflate_window_bits bounds both windows: a client that offers client_max_window_bits
    is told a value no larger; the gateway's output inflates within the window it agreed."""
    g = env.gateway(route_ws=dict(DEFLATE, deflate_window_bits=10))
    with W.connect(g.port, env.path(),
                   extensions="permessage-deflate; client_max_window_bits") as c:
        params = dict(c.deflate or {})
        assert "client_max_window_bits" in params, c.response
        assert 8 <= int(params["client_max_window_bits"]) <= 10, params
        if "server_max_window_bits" in params:
            assert 8 <= int(params["server_max_window_bits"]) <= 10, params
        text = compressible_text(100000) + os.urandom(3000).hex()
        c.send_text(text, compress=True)
        assert c.recv_message().text == text
        clean_close(c)


@needs("gateway", "terminates")
def test_deflate_off(env):
    g = env.gateway(route_ws={"deflate": False})
    with W.connect(g.port, env.path(), extensions="permessage-deflate") as c:
        assert c.response.header("Sec-WebSocket-Extensions") is None, c.response
        assert c.deflate is None
        c.send_text("hello", compress=False)
        assert c.recv_message().text == "hello"
        c.send_frame(OP_TEXT, W.deflate_message(b"hello"), rsv1=True)   # not agreed
        c.expect_close(1002, timeout=3)
    ext, out = websockets_roundtrip(g.port, env.path(), ["plain", b"bytes"])
    assert ext == [] and out == ["plain", b"bytes"]


@needs()
def test_deflated_text_not_utf8_is_1007(env):
    g = env.gateway(route_ws=DEFLATE, advisory=True)
    with W.connect(g.port, env.path(), extensions="permessage-deflate") as c:
        assert c.deflate is not None, c.response
        c.send_frame(OP_TEXT, W.deflate_message(b"valid, then \xff\xfe"), rsv1=True)
        c.expect_close(1007, timeout=3)
        no_data_frames(c)


@needs("gateway", "terminates")
def test_deflated_message_inflating_over_max_message_is_1009(env):
    g = env.gateway(route_ws={"deflate": True, "max_message": "64k"})
    with W.connect(g.port, env.path(), extensions="permessage-deflate") as c:
        assert c.deflate is not None, c.response
        payload = W.deflate_message(bytes(200000))
        assert len(payload) < 1000
        c.send_frame(OP_BINARY, payload, rsv1=True)
        c.expect_close(1009, timeout=3)
        no_data_frames(c)


# ---- WebSocket-over-HTTP (uwsgi pools) -----------------------------------------------------

def posts(env, path):
    """The POSTs the app saw for |path|: their event types, Connection-Id and Meta-* fields."""
    return env.events(path) and [e for e in env.events(path) if e["event"] == "post"]


def text_reply(c, text):
    c.send_text(text)
    return c.recv_message().text


@needs("posts")
def test_woh_posts_carry_connection_id_and_the_handshake_fields(env):
    """Each POST replays the handshake's end-to-end fields and carries one Connection-Id per
    WebSocket; the client's own Meta-* and Connection-Id never reach the app."""
    g = env.gateway()
    p = env.path()
    spoof = [("X-Custom", "yes"), ("Cookie", "session=abc"), ("Meta-User", "mallory"),
             ("Connection-Id", "forged")]
    with W.connect(g.port, p, headers=spoof) as c:
        info1 = json.loads(text_reply(c, "post-info"))
        info2 = json.loads(text_reply(c, "post-info"))
        s = json.loads(text_reply(c, "scope"))
        clean_close(c)
    with W.connect(g.port, env.path()) as c:
        other = json.loads(text_reply(c, "post-info"))
        clean_close(c)
    cid = info1["connection_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", cid), info1
    assert info2["connection_id"] == cid and other["connection_id"] != cid
    assert info1["meta"] == {} and info2["meta"] == {}, (info1, info2)
    names = {n for n, _ in s["headers"]}
    assert ["x-custom", "yes"] in s["headers"] and ["cookie", "session=abc"] in s["headers"], s
    for gone in ("sec-websocket-key", "sec-websocket-version", "upgrade", "meta-user"):
        assert gone not in names, (gone, s["headers"])
    assert ["content-type", "application/websocket-events"] in s["headers"] or \
        "content-type" not in names, s   # WSGI puts it in CONTENT_TYPE, not HTTP_*
    seen = posts(env, p)
    assert seen[0]["types"] == ["OPEN"], seen
    assert {e["connection_id"] for e in seen} == {cid}, seen
    assert seen[-1]["types"] == ["CLOSE"], seen


@needs("posts")
def test_woh_set_meta_binds_fields_to_later_posts(env):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        assert text_reply(c, "meta:User:alice") == "meta-set"
        assert text_reply(c, "meta:Room:7") == "meta-set"
        assert json.loads(text_reply(c, "post-info"))["meta"] == {"user": "alice", "room": "7"}
        assert text_reply(c, "meta:User:bob") == "meta-set"          # replaced
        assert json.loads(text_reply(c, "post-info"))["meta"] == {"user": "bob", "room": "7"}
        assert text_reply(c, "meta:Room:") == "meta-set"             # an empty value unbinds
        assert json.loads(text_reply(c, "post-info"))["meta"] == {"user": "bob"}
        clean_close(c)


@needs("posts")
def test_woh_one_post_in_flight_and_batches(env):
    """While a POST is out, the client's messages wait and go together in the next one, in
    order: one POST in flight per WebSocket."""
    g = env.gateway()
    p = env.path()
    with W.connect(g.port, p, timeout=10) as c:
        c.send_text("slow:0.8")
        time.sleep(0.2)
        for i in range(5):
            c.send_text("m%d" % i)
        got = [c.recv_message().text for _ in range(6)]
        assert got == ["slow-done"] + ["m%d" % i for i in range(5)], got
        clean_close(c)
    types = [e["types"] for e in posts(env, p)]
    assert types == [["OPEN"], ["TEXT"], ["TEXT"] * 5, ["CLOSE"]], types


@needs("posts")
def test_woh_keep_alive_interval_posts_while_idle(env):
    g = env.gateway()
    p = env.path()
    with W.connect(g.port, p, timeout=10) as c:
        assert text_reply(c, "keepalive:1") == "keepalive-set"
        n0 = len(posts(env, p))
        time.sleep(2.6)
        idle = posts(env, p)[n0:]
        assert 2 <= len(idle) <= 3 and all(e["types"] == [] for e in idle), idle
        echo(c, "still here")
        clean_close(c)


@needs("posts")
def test_woh_ping_pong_and_disconnect_from_the_app(env):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        c.send_text("ping")
        f = c.read_frame(timeout=3)
        assert f.opcode == OP_PING and f.payload == b"", f
        c.send_text("pong")
        f = c.read_frame(timeout=3)
        assert f.opcode == OP_PONG, f
        echo(c, "after")
        c.send_text("disconnect")
        code, _ = c.close_or_eof(timeout=3)
        assert code == 1011, code
    assert "upstream sent DISCONNECT" in g.stderr_text()


@needs("posts")
@pytest.mark.parametrize("cmd,logged", [
    ("bad-events", "an answer with a body that is not application/websocket-events"),
    ("truncated", "the answer ends inside an event"),
    ("status:500", "status 500 to a POST of events"),
])
def test_woh_broken_answer_after_open_closes_1011(env, cmd, logged):
    g = env.gateway()
    with W.connect(g.port, env.path()) as c:
        c.send_text(cmd)
        assert c.close_or_eof(timeout=3)[0] == 1011
    assert logged in g.stderr_text(), g.stderr_text()[-2000:]
    with W.connect(g.port, env.path()) as c:                # the gateway serves on
        echo(c, "next")
        clean_close(c)


@needs("posts")
@pytest.mark.parametrize("suffix,logged", [
    ("/open-html", "answer to OPEN is not application/websocket-events"),
    ("/open-no-open", "the first event of the answer to OPEN is not OPEN"),
    ("/bad-proto", "the app chose a subprotocol the client did not offer"),
])
def test_woh_broken_answer_to_open_is_502(env, suffix, logged):
    g = env.gateway()
    with W.WsConn(g.port, timeout=3) as c:
        r = c.handshake(env.path(suffix), protocols="chat.v0")
    assert r.status == 502 and r.header("Sec-WebSocket-Accept") is None, r
    assert logged in g.stderr_text(), g.stderr_text()[-2000:]


@needs("posts")
def test_woh_no_worker_is_held_between_messages(env):
    """Ten WebSockets open at once on a pool of ONE worker, taking turns: each message is a
    short POST, so the worker is never held by a connection."""
    b = env.private_backend(workers=1)
    g = env.gateway(backend=b)
    conns = [W.connect(g.port, env.path(), timeout=10) for _ in range(10)]
    try:
        for rnd in range(3):
            for i, c in enumerate(conns):
                echo(c, "conn %d round %d" % (i, rnd))
        for c in conns:
            clean_close(c)
    finally:
        for c in conns:
            c.close()


@needs("posts")
def test_woh_app_down_502_at_handshake_and_1011_after(env):
    b = env.private_backend()
    g = env.gateway(backend=b)
    with W.connect(g.port, env.path()) as c:
        echo(c, "before")
        b.kill()
        c.send_text("anyone?")
        t0 = time.monotonic()
        code, _ = c.close_or_eof(timeout=3)
        assert code == 1011 and time.monotonic() - t0 < 3, code
    with W.WsConn(g.port, timeout=3) as c:
        r = c.handshake(env.path())
    assert r.status == 502, r
    assert g.alive()


@needs("posts")
def test_woh_client_that_does_not_read_is_held_back(env):
    """Echoes of 2,000 x 6,000 bytes to a client that reads nothing for 3 s: it is held back
    (not all its messages are read), then every echo arrives, in order. (The gateway's memory
    under such a flood is checked by the flood test above; RSS figures here would measure
    AddressSanitizer's quarantine under `make asan`.)"""
    g = env.gateway()
    n, size = 2000, 6000
    with W.connect(g.port, env.path(), timeout=20, rcvbuf=128 * 1024) as c:
        sent = []

        def writer():
            for i in range(n):
                c.send_binary(ws_echo.flood_message(i, size))
                sent.append(i)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        time.sleep(3)
        assert len(sent) < n, "the client was never held back"
        for i in range(n):
            m = c.recv_message()
            assert m.opcode == OP_BINARY and m.data == ws_echo.flood_message(i, size), i
        t.join(10)
        assert len(sent) == n
        clean_close(c)


@needs("posts")
def test_woh_app_close_in_a_paused_answer_frees_the_session(env):
    """An answer that pauses on a slow client and then holds the app's CLOSE, with more after
    it: the rest is dropped at once instead of waiting for a resume that never comes, so a
    SIGTERM drains at once (a review found it waiting for shutdown.timeout)."""
    g = env.gateway(shutdown={"delay": "0s", "timeout": "10s"})
    with W.connect(g.port, env.path(), timeout=10, rcvbuf=4096) as c:
        for _ in range(600):                        # echoes pile up unread: output full
            c.send_binary(b"f" * 6000)
            time.sleep(0.005)
        c.send_text("slow:0.5")                     # a POST out: the next three go together
        time.sleep(0.1)
        c.send_text("x")
        c.send_text("close:1000:bye")
        c.send_binary(b"t" * (256 << 10))
        time.sleep(1)
        assert c.expect_close(1000, timeout=10) == (1000, "bye")
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    assert g.wait_exit(12) == 0
    assert time.monotonic() - t0 < 3, "the drain waited for a paused answer"


@needs("posts")
def test_woh_batch_is_bounded_when_no_post_is_out(env):
    """Twenty compressed 60 KB messages in one small write (about 2 KB on the wire), while no
    POST is out: the client is not read past 64 KiB of waiting events, so no POST body goes
    over max_message + 64 KiB (a review found all 1.2 MB in one POST)."""
    g = env.gateway(route_ws={"max_message": "64k"})
    p = env.path()
    with W.connect(g.port, p, timeout=10, extensions="permessage-deflate") as c:
        assert c.deflate is not None, c.response
        c.send_raw(b"".join(W.encode_frame(OP_BINARY, W.deflate_message(bytes([i]) * 60000),
                                           rsv1=True) for i in range(20)))
        for i in range(20):
            assert c.recv_message().data == bytes([i]) * 60000, i
        clean_close(c)
    sizes = [e["size"] for e in posts(env, p)]
    assert sum(sizes) > 20 * 60000 and max(sizes) <= 64 * 1024 + 65536 + 64, sizes


@needs("posts")
def test_woh_app_told_disconnect_when_a_post_fails_after_open(env):
    g = env.gateway()
    p = env.path()
    with W.connect(g.port, p) as c:
        c.send_text("status:500")
        assert c.close_or_eof(timeout=3)[0] == 1011
    env.wait_event(p, "disconnect", code=1006)


@needs("posts")
def test_woh_sigterm_tells_the_app_1001_before_exit(env):
    g = env.gateway(shutdown={"delay": "0s", "timeout": "3s"})
    p = env.path()
    with W.connect(g.port, p) as c:
        echo(c, "before")
        g.signal(signal.SIGTERM)
        c.expect_close(1001, timeout=3)
    assert g.wait_exit(4) == 0
    env.wait_event(p, "disconnect", code=1001)
