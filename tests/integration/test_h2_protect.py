# SPDX-License-Identifier: MIT
"""HTTP/2 flood protections and RFC 9113 conformance, with the raw-frame client of
h2client.py against an h2c (prior knowledge) listener.

Protections: per connection and per 10 s, more than 200 client RST_STREAMs (rapid reset,
CVE-2023-44487), 100 SETTINGS, 100 PINGs, 500 PRIORITY frames, 100 empty DATA frames without
END_STREAM; a header block in more than 16 CONTINUATION frames or encoded beyond
limits.header_bytes; the 10th decoded header list beyond limits.header_bytes (each one before
is a 431 on its stream: an HPACK bomb); 100 streams refused beyond max_concurrent_streams.
Each answered with GOAWAY ENHANCE_YOUR_CALM and the connection closed, a warn line naming it,
and gatehouse_http2_protections_total{kind=...} in /metrics; the gateway's RSS and CPU stay
small and another client is served during and after. Below the thresholds nothing happens.

Conformance: connection errors (GOAWAY with the RFC's code, then close) and stream errors
(RST_STREAM on that stream only, the connection goes on) are told apart.

Every process is stopped by its PID; every read and wait is bounded."""

import os
import re
import struct
import threading
import time

import pytest

import gw
import h2client as H
from gw import free_port, wait_until
from h2client import H2Client, frame
from test_admin import metrics, sample

MIB = 1 << 20
# CPU seconds the gateway may spend on one flood (the bystander's requests included); a
# sanitizer build is several times slower.
CPU_BUDGET = float(os.environ.get("H2_FLOOD_CPU_BUDGET", "2.0"))
RSS_BUDGET_KB = 16 * 1024


def h2_gateway(harness, upstream, **over):
    port = free_port()
    admin = free_port()
    over.setdefault("listen", [{"address": "127.0.0.1:%d" % port,
                                "http2": "prior_knowledge"}])
    over.setdefault("admin", {"address": "127.0.0.1:%d" % admin})
    g = harness.gateway([upstream.addr], port=port, **over)
    g.admin_port = admin
    return g


@pytest.fixture
def g(harness):
    return h2_gateway(harness, harness.upstream())


def client(g, **kw):
    c = H2Client(g.port, timeout=10, **kw)
    c.wait_settings()
    c.drain(0.05)   # our SETTINGS ack reaches the server before the test's frames
    return c


GET_ECHO = [(":method", "GET"), (":scheme", "http"), (":authority", "app.test"),
            (":path", "/echo")]


class Bystander:
    """Another client on its own connection, a GET every 20 ms while the flood runs."""

    def __init__(self, g):
        self.g = g
        self.ok = 0
        self.errors = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with H2Client(self.g.port, timeout=5) as c:
                while not self.stop_ev.is_set():
                    s = c.get("/echo?bystander")
                    if s.status == 200:
                        self.ok += 1
                    else:
                        self.errors.append(repr(s))
                    self.stop_ev.wait(0.02)
        except Exception as e:  # noqa: BLE001
            self.errors.append(repr(e))

    def __enter__(self):
        self.t.start()
        wait_until(lambda: self.ok >= 1 or self.errors, timeout=5, what="the bystander served")
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join(10)


def flood(g, kind, send, c=None, code_expected=None):
    """Runs |send(c)| on a fresh connection (or |c|) while a bystander is served, and asserts
    the protection |kind|: GOAWAY ENHANCE_YOUR_CALM (or |code_expected|), the connection
    closed, a warn line, the counter, bounded RSS and CPU, the bystander served during and
    after."""
    code_expected = H.ENHANCE_YOUR_CALM if code_expected is None else code_expected
    since = g.stderr_size()
    base = g.rss_kb()
    before = sample(metrics(g.admin_port), "gatehouse_http2_protections_total", kind=kind)
    with Bystander(g) as by:
        sampler = gw.RssSampler(g.pid).start()
        cpu0 = H.cpu_seconds(g.pid)
        c = c or client(g)
        ok_before = by.ok
        try:
            send(c)
            try:
                last, code, debug = c.wait_goaway(timeout=5)
            except H.H2Closed:
                raise AssertionError("%s: the connection closed without a GOAWAY; frames: %r"
                                     % (kind, c.frames[-10:]))
            assert code == code_expected, "%s: GOAWAY %s %r" % (kind, H.err_name(code), debug)
            c.wait_closed(timeout=3)
        finally:
            c.close()
        cpu = H.cpu_seconds(g.pid) - cpu0
        sampler.stop()
        time.sleep(0.1)
        served_during = by.ok - ok_before
    assert not by.errors, by.errors
    assert served_during >= 1, "the bystander was not served during the flood"
    assert cpu < CPU_BUDGET, "%s: the flood cost the gateway %.2f s of CPU" % (kind, cpu)
    assert sampler.max_kb - base < RSS_BUDGET_KB, (kind, base, sampler.max_kb)
    words = kind.replace("_", "[ _-]")
    line = g.wait_stderr(r" warn .*(?i:%s)" % words, since=since, timeout=3)
    assert line
    wait_until(lambda: sample(metrics(g.admin_port), "gatehouse_http2_protections_total",
                              kind=kind) >= before + 1, timeout=3,
               what="gatehouse_http2_protections_total{kind=\"%s\"} counted" % kind)
    # And after: a new connection is served.
    with H2Client(g.port, timeout=5) as c2:
        assert c2.get("/echo?after").status == 200
    return c


def assert_fine(c, what):
    """Nothing happened to |c|: no GOAWAY, open, and a request on it is answered."""
    s = c.get("/echo?still-fine")
    assert s.status == 200, (what, s)
    assert not c.goaways, (what, c.goaways)
    assert c.is_open(0.2), what


# ---- rapid reset ----------------------------------------------------------------------------

def rapid_resets(c, n, path="/echo"):
    out = []
    hs = GET_ECHO[:3] + [(":path", path)]
    for _ in range(n):
        sid = c.new_stream_id()
        out.append(frame(H.HEADERS, H.END_STREAM | H.END_HEADERS, sid, c.encode(hs)))
        out.append(frame(H.RST_STREAM, 0, sid, struct.pack("!I", H.CANCEL)))
    c.send_raw(b"".join(out))


def test_rapid_reset_flood(g):
    flood(g, "rapid_reset", lambda c: rapid_resets(c, 300, "/slow?ms=2000"))


def test_50_resets_leave_the_connection_usable(g):
    c = client(g)
    rapid_resets(c, 50)
    c.drain(0.3)
    assert_fine(c, "50 resets")
    rapid_resets(c, 50)
    assert_fine(c, "100 resets")


# ---- SETTINGS, PING, PRIORITY, empty DATA ---------------------------------------------------

def test_settings_flood(g):
    flood(g, "settings", lambda c: c.send_raw(frame(H.SETTINGS) * 150))


def test_50_settings_are_acknowledged(g):
    c = client(g)
    acks = c.settings_acks
    c.send_raw(frame(H.SETTINGS) * 50)
    c.wait(lambda: c.settings_acks >= acks + 50, 5, "50 SETTINGS acks")
    assert_fine(c, "50 SETTINGS")


def test_ping_flood(g):
    flood(g, "ping", lambda c: c.send_raw(b"".join(
        frame(H.PING, 0, 0, struct.pack("!Q", i)) for i in range(150))))


def test_50_pings_are_answered(g):
    c = client(g)
    c.send_raw(b"".join(frame(H.PING, 0, 0, struct.pack("!Q", i)) for i in range(50)))
    c.wait(lambda: len(c.ping_acks) >= 50, 5, "50 PING acks")
    assert sorted(c.ping_acks) == [struct.pack("!Q", i) for i in range(50)]
    assert_fine(c, "50 PINGs")


def priority_frames(n, start=101):
    return b"".join(frame(H.PRIORITY, 0, start + 2 * i, struct.pack("!IB", 0, 15))
                    for i in range(n))


def test_priority_flood(g):
    flood(g, "priority", lambda c: c.send_raw(priority_frames(700)))


def test_300_priority_frames_are_fine(g):
    c = client(g)
    c.send_raw(priority_frames(300))
    c.drain(0.3)
    assert_fine(c, "300 PRIORITY frames")


def empty_data(c, n):
    sid = c.request("POST", "/echo?empty", end_stream=False)
    c.send_raw(frame(H.DATA, 0, sid) * n)
    return sid


def test_empty_data_flood(g):
    flood(g, "empty_data", lambda c: empty_data(c, 150))


def test_50_empty_data_frames_are_fine(g):
    c = client(g)
    sid = empty_data(c, 50)
    c.send_data(sid, b"abc", end_stream=True)
    s = c.response(sid)
    assert s.status == 200 and s.json()["body_len"] == 3, s
    assert_fine(c, "50 empty DATA frames")


# ---- CONTINUATION flood, HPACK bomb ---------------------------------------------------------

def split_block(c, headers, pieces):
    block = c.encode(headers)
    size = max(1, -(-len(block) // pieces))
    return [block[i:i + size] for i in range(0, len(block), size)]


def block_frames(sid, parts, end_headers=True, end_stream=True):
    out = []
    for i, p in enumerate(parts):
        last = end_headers and i == len(parts) - 1
        if i == 0:
            fl = (H.END_STREAM if end_stream else 0) | (H.END_HEADERS if last else 0)
            out.append(frame(H.HEADERS, fl, sid, p))
        else:
            out.append(frame(H.CONTINUATION, H.END_HEADERS if last else 0, sid, p))
    return b"".join(out)


FILLER = [("x-f%02d" % i, "v%02d" % i * 10) for i in range(40)]


def test_continuation_flood_by_count(g):
    def send(c):
        sid = c.new_stream_id()
        parts = split_block(c, GET_ECHO + FILLER, 40)
        assert len(parts) >= 30
        c.send_raw(block_frames(sid, parts, end_headers=False))
    flood(g, "continuation", send)


def test_continuation_flood_by_size(g):
    """A header block growing past limits.header_bytes (16k) in a few frames, never
    ended."""
    def send(c):
        sid = c.new_stream_id()
        big = [("x-big%d" % i, os.urandom(3000).hex()) for i in range(6)]   # ~36k encoded
        parts = split_block(c, GET_ECHO + big, 5)
        c.send_raw(block_frames(sid, parts, end_headers=False))
    flood(g, "continuation", send)


def test_block_in_8_frames_is_fine(g):
    """HEADERS and 7 CONTINUATIONs: the most a block may take (H2C_MAX_CONTINUATIONS)."""
    c = client(g)
    sid = c.new_stream_id()
    parts = split_block(c, GET_ECHO + FILLER, 8)
    assert len(parts) == 8
    c.send_raw(block_frames(sid, parts))
    s = c.response(sid)
    assert s.status == 200, s
    got = {k.lower(): v for k, v in s.json()["headers"]}
    assert got.get("x-f39") == "v39" * 10
    assert_fine(c, "a block in 8 frames")


def test_block_in_9_frames_is_a_flood(g):
    def send(c):
        sid = c.new_stream_id()
        parts = split_block(c, GET_ECHO + FILLER, 9)
        assert len(parts) == 9
        c.send_raw(block_frames(sid, parts))
    flood(g, "continuation", send)


BOMB = GET_ECHO[:3] + [(":path", "/echo?bomb")] + [("x-bomb", "a" * 3900)] * 10


def test_hpack_bomb_is_431_then_goaway_at_the_10th(g):
    """Each header list that decodes to 39k (> 16k) from ~15 encoded bytes is a 431 on its
    stream and the connection goes on; the 10th is ENHANCE_YOUR_CALM."""
    c = client(g)
    for i in range(9):
        sid = c.request(raw_headers=BOMB)
        s = c.response(sid)
        assert s.status == 431, (i, s)
        if i == 1:
            assert len(c.encode(BOMB)) < 64     # it is a bomb: tiny encoded
        assert not c.goaways, (i, c.goaways)
    assert_fine(c, "9 bombs")

    def tenth(c):
        c.request(raw_headers=BOMB)
    flood(g, "header_list", tenth, c=c)


# ---- max_concurrent_streams -----------------------------------------------------------------

def test_streams_beyond_the_limit(harness):
    """Once the client acknowledged SETTINGS_MAX_CONCURRENT_STREAMS, a stream past it is a
    connection error (nghttp2 1.52 makes it one: GOAWAY PROTOCOL_ERROR), counted as
    `streams`; the streams within the limit were taken before it."""
    u = harness.upstream()
    g = h2_gateway(harness, u, http2={"max_concurrent_streams": 2})

    def send(c):
        c.wait_settings()
        time.sleep(0.2)     # our SETTINGS ACK has reached the gateway
        for _ in range(2):
            c.request("GET", "/slow?ms=3000")
        c.request("GET", "/echo?one-too-many")
    c = flood(g, "streams", send, code_expected=H.PROTOCOL_ERROR)
    assert c.goaways[-1][0] >= 3, c.goaways


def test_streams_within_the_limit_are_fine(harness):
    u = harness.upstream()
    g = h2_gateway(harness, u, http2={"max_concurrent_streams": 2})
    c = client(g)
    c.wait_settings()
    for round in range(5):
        sids = [c.request("GET", "/echo?r=%d-%d" % (round, i)) for i in range(2)]
        for sid in sids:
            assert c.response(sid).status == 200
    assert_fine(c, "streams within the limit")


# ---- RFC 9113: stream errors ----------------------------------------------------------------

BASE = [(":method", "GET"), (":scheme", "http"), (":authority", "app.test"),
        (":path", "/echo")]


def without(name):
    return [h for h in BASE if h[0] != name]


BAD_HEADERS = [
    ("missing-path", without(":path")),
    ("missing-method", without(":method")),
    ("missing-scheme", without(":scheme")),
    ("empty-path", without(":path") + [(":path", "")]),
    ("two-paths", BASE + [(":path", "/other")]),
    ("unknown-pseudo", BASE + [(":foo", "bar")]),
    ("status-in-request", BASE + [(":status", "200")]),
    ("pseudo-after-regular", without(":path") + [("x-a", "1"), (":path", "/echo")]),
    ("uppercase-name", BASE + [("X-Upper", "1")]),
    ("connection", BASE + [("connection", "keep-alive")]),
    ("keep-alive", BASE + [("keep-alive", "timeout=5")]),
    ("proxy-connection", BASE + [("proxy-connection", "keep-alive")]),
    ("transfer-encoding", BASE + [("transfer-encoding", "chunked")]),
    ("upgrade", BASE + [("upgrade", "websocket")]),
    ("te-gzip", BASE + [("te", "gzip")]),
    ("newline-in-value", BASE + [("x-a", "1\r\nx-b: 2")]),
    ("protocol-without-connect", BASE + [(":protocol", "websocket")]),
]


@pytest.mark.parametrize("case,headers", BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS])
def test_malformed_request_is_a_stream_error(g, case, headers):
    c = client(g)
    pos = g.stderr_size()
    sid = c.request(raw_headers=headers)
    s = c.response(sid)
    assert s.reset == H.PROTOCOL_ERROR, (case, s)
    assert s.headers is None or s.status == 400, (case, s)
    if s.headers is None:   # reset by nghttp2's checks: the error log says so
        g.wait_stderr(r" info .*http2: stream %d reset: PROTOCOL_ERROR" % sid, since=pos)
    assert_fine(c, case)


def test_te_trailers_is_allowed(g):
    c = client(g)
    s = c.get("/echo", headers=[("te", "trailers")])
    assert s.status == 200, s


@pytest.mark.parametrize("declared,sent", [(10, 5), (3, 5)])
def test_content_length_mismatch_is_a_stream_error(g, declared, sent):
    c = client(g)
    sid = c.request("POST", "/echo?cl", end_stream=False,
                    headers=[("content-length", str(declared))])
    c.send_data(sid, b"x" * sent, end_stream=True)
    s = c.response(sid)
    assert s.reset == H.PROTOCOL_ERROR, s
    assert_fine(c, "content-length %d with %d bytes" % (declared, sent))


def test_data_on_a_half_closed_stream_is_stream_closed(g):
    c = client(g)
    sid = c.request("GET", "/slow?ms=1000")      # END_STREAM: half-closed (remote)
    c.send_data_raw(sid, b"late")
    c.wait(lambda: c.streams[sid].reset is not None or c.goaways, 5, "the error")
    if c.goaways:
        assert c.goaways[-1][1] == H.STREAM_CLOSED, c.goaways
    else:
        assert c.streams[sid].reset == H.STREAM_CLOSED, c.streams[sid]
        assert_fine(c, "DATA on a half-closed stream")


def test_data_on_a_closed_stream_is_stream_closed(g):
    c = client(g)
    s = c.get("/echo")
    assert s.status == 200
    c.send_data_raw(s.id, b"late", end_stream=True)
    c.wait(lambda: c.goaways or [f for f in c.frames_of(H.RST_STREAM, s.id)], 5,
           "an error for DATA on a closed stream")
    if c.goaways:
        assert c.goaways[-1][1] == H.STREAM_CLOSED, c.goaways
        c.wait_closed(3)
    else:
        assert c.streams[s.id].reset == H.STREAM_CLOSED


def stream_or_connection_error(c, sid, code, what):
    """RFC 9113 §5.4.1 lets an endpoint treat a stream error as a connection error: either
    RST_STREAM |code| on |sid| (and the connection serves on) or GOAWAY |code|."""
    c.wait(lambda: c.streams[sid].reset is not None or c.goaways, 5, "the error for " + what)
    if c.goaways:
        assert c.goaways[-1][1] == code, (what, c.goaways)
        c.wait_closed(3)
    else:
        assert c.streams[sid].reset == code, (what, c.streams[sid])
        assert_fine(c, what)


def test_window_update_of_zero_on_a_stream(g):
    c = client(g)
    sid = c.request("POST", "/echo", end_stream=False)
    c.send_raw(frame(H.WINDOW_UPDATE, 0, sid, struct.pack("!I", 0)))
    stream_or_connection_error(c, sid, H.PROTOCOL_ERROR, "WINDOW_UPDATE 0 on a stream")


def test_data_beyond_the_stream_window_is_a_flow_control_error(harness):
    """An upstream that reads nothing (so no window comes back) and a client that sends
    16 MiB into a 16k stream window."""
    from test_h2 import SlowReader
    srv = SlowReader()
    try:
        g = h2_gateway(harness, type("U", (), {"addr": "127.0.0.1:%d" % srv.port})(),
                       http2={"window": "16k", "connection_window": "64m"})
        c = client(g)
        sid = c.request("POST", "/upload", end_stream=False,
                        headers=[("content-length", str(64 * MIB))])
        chunk = frame(H.DATA, 0, sid, b"x" * 16384)
        try:
            for _ in range(16):
                if not c.send_raw(chunk * 64) or c.goaways or c.streams[sid].reset:
                    break
                c.drain(0.01)
        except H.H2Timeout:
            pass
        stream_or_connection_error(c, sid, H.FLOW_CONTROL_ERROR, "DATA beyond the window")
    finally:
        srv.stop()


# ---- RFC 9113: connection errors ------------------------------------------------------------

def connection_error(c, code, what):
    last, got, debug = c.wait_goaway(timeout=5)
    assert got == code, "%s: GOAWAY %s %r, expected %s" % (what, H.err_name(got), debug,
                                                          H.err_name(code))
    c.wait_closed(timeout=3)
    return last


def test_data_on_stream_0(g):
    c = client(g)
    pos = g.stderr_size()
    c.send_raw(frame(H.DATA, 0, 0, b"hello"))
    connection_error(c, H.PROTOCOL_ERROR, "DATA on stream 0")
    g.wait_stderr(r" info .*http2: connection error PROTOCOL_ERROR \(.*\); closing", since=pos)
    with H2Client(g.port, timeout=5) as c2:     # the gateway serves on
        assert c2.get("/echo?after").status == 200


def test_preface_then_no_settings(g):
    c = H2Client(g.port, start=False)
    c.send_raw(H.PREFACE + frame(H.PING, 0, 0, b"12345678"))
    connection_error(c, H.PROTOCOL_ERROR, "PING before SETTINGS")


def test_preface_then_http1(g):
    c = H2Client(g.port, start=False)
    c.send_raw(H.PREFACE + b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    connection_error(c, H.PROTOCOL_ERROR, "HTTP/1.1 after the preface")


def test_even_stream_id(g):
    c = client(g)
    c.send_raw(frame(H.HEADERS, H.END_STREAM | H.END_HEADERS, 2, c.encode(BASE)))
    connection_error(c, H.PROTOCOL_ERROR, "HEADERS on stream 2")


def test_frame_larger_than_max_frame_size(g):
    c = client(g)
    sid = c.request("POST", "/echo", end_stream=False)
    c.send_raw(frame(H.DATA, 0, sid, b"x" * 20000))
    connection_error(c, H.FRAME_SIZE_ERROR, "a 20000-byte DATA frame")


def test_connection_window_overflow(g):
    c = client(g)
    c.send_raw(frame(H.WINDOW_UPDATE, 0, 0, struct.pack("!I", 0x7FFFFFFF)) * 2)
    connection_error(c, H.FLOW_CONTROL_ERROR, "the connection window beyond 2^31-1")


def test_window_update_of_zero_on_the_connection(g):
    c = client(g)
    c.send_raw(frame(H.WINDOW_UPDATE, 0, 0, struct.pack("!I", 0)))
    connection_error(c, H.PROTOCOL_ERROR, "WINDOW_UPDATE 0 on stream 0")


@pytest.mark.parametrize("setting,value,code", [
    (H.ENABLE_PUSH, 2, H.PROTOCOL_ERROR),
    (H.INITIAL_WINDOW_SIZE, 1 << 31, H.FLOW_CONTROL_ERROR),
    (H.MAX_FRAME_SIZE, 100, H.PROTOCOL_ERROR),
], ids=["enable-push-2", "window-2^31", "max-frame-100"])
def test_bad_settings_value(g, setting, value, code):
    c = client(g)
    c.settings({setting: value})
    connection_error(c, code, "SETTINGS %d=%d" % (setting, value))


def test_continuation_without_headers(g):
    c = client(g)
    c.send_raw(frame(H.CONTINUATION, H.END_HEADERS, 1, c.encode(BASE)))
    connection_error(c, H.PROTOCOL_ERROR, "CONTINUATION without HEADERS")


def test_frame_inside_a_header_block(g):
    c = client(g)
    parts = split_block(c, BASE + FILLER, 2)
    c.send_raw(frame(H.HEADERS, H.END_STREAM, 1, parts[0]) + frame(H.PING, 0, 0, b"12345678")
               + frame(H.CONTINUATION, H.END_HEADERS, 1, parts[1]))
    connection_error(c, H.PROTOCOL_ERROR, "PING inside a header block")


def test_hpack_garbage(g):
    c = client(g)
    c.send_raw(frame(H.HEADERS, H.END_STREAM | H.END_HEADERS, 1, b"\xff\xff\xff\xff\xff\x7f"))
    connection_error(c, H.COMPRESSION_ERROR, "an undecodable header block")


def test_stream_errors_do_not_touch_other_streams(g):
    """A malformed request next to a slow good one: only the bad stream is reset."""
    c = client(g)
    good = c.request("GET", "/slow?ms=500")
    bad = c.request(raw_headers=without(":path"))
    assert c.response(bad).reset == H.PROTOCOL_ERROR
    s = c.response(good)
    assert s.status == 200 and s.reset is None, s
    assert not c.goaways


# ---- review regressions ---------------------------------------------------------------------

def test_refused_bodies_give_the_connection_window_back(harness):
    """Each 413 (limits.body_bytes) drops request bytes the exchange held: their share of the
    connection window must come back, or after 1 MiB of refused uploads every later upload on
    the connection stalls."""
    u = harness.upstream()
    g = h2_gateway(harness, u, http2={"window": "64k", "connection_window": "1m"},
                   limits={"body_bytes": "1k"})
    c = client(g)
    for i in range(80):
        sid = c.request("POST", "/echo?n=%d" % i, end_stream=False,
                        headers=[("content-length", "16000")])
        c.send_data_raw(sid, b"x" * 16000, end_stream=True)
        assert c.response(sid, timeout=5).status == 413
    c.drain(0.3)
    # 80 x 16000 refused bytes are more than the 1 MiB connection window: had they not come
    # back, nothing more could be sent. (The window comes back in WINDOW_UPDATEs of half of it,
    # so its exact figure is not the test.)
    big = 1000
    sid = c.request("POST", "/echo?small", end_stream=False,
                    headers=[("content-length", str(big))])
    c.send_data(sid, b"y" * big, end_stream=True, timeout=5)
    assert c.response(sid, timeout=5).status == 200
    for i in range(40):
        sid = c.request("POST", "/echo?more=%d" % i, end_stream=False,
                        headers=[("content-length", "16000")])
        c.send_data(sid, b"z" * 16000, end_stream=True, timeout=5)
        assert c.response(sid, timeout=5).status == 413
    assert not c.goaways


def test_provoked_resets_count_as_rapid_reset(g):
    """MadeYouReset (CVE-2025-8671): streams the server must reset because the client broke
    the rules (more DATA than its content-length) cost like client resets, and are counted
    with them."""
    def send(c):
        for i in range(400):
            sid = c.request("POST", "/slow?ms=2000", end_stream=False,
                            headers=[("content-length", "1")])
            c.send_raw(frame(H.DATA, H.END_STREAM, sid, b"zz"))
            if i % 50 == 49:
                c.drain(0.02)
    flood(g, "rapid_reset", send)
