# SPDX-License-Identifier: MIT
"""Streaming with bounded memory: 1 GiB up and down through the gateway, slow readers on
either side. The gateway's RSS (VmRSS) must stay flat: it may not buffer bodies whole.

The client side streams too (raw sockets, a fixed 1 MiB buffer), so the test process stays
small whatever the body size."""

import hashlib
import threading
import time

from gw import (Conn, RssSampler, build_request, pattern_sha256, rss_kb, upstream_conf)

GIB = 1 << 30
MIB = 1 << 20
RSS_GROWTH_LIMIT_KB = 64 * 1024
BLOCK = bytes(range(256)) * 4096  # 1 MiB of the pattern (byte i is i % 256)


STALL_S = 20  # no progress for this long fails a transfer


def stream_gateway(harness, **over):
    up = harness.upstream("A")
    cfg = {"web": upstream_conf([up.addr], timeouts={"first_byte": "60s", "read": "60s",
                                                      "send": "60s"})}
    over.setdefault("limits", {"body_bytes": 0})
    over.setdefault("timeouts", {"header": "10s", "body": "60s", "idle": "60s",
                                 "send": "60s"})
    g = harness.gateway(cfg, **over)
    g.up = up
    # Warm up (threads, pools, first buffers) before taking the baseline.
    with Conn(g.port) as c:
        for _ in range(3):
            assert c.request("POST", "/sink", body=BLOCK).status == 200
            assert c.request("GET", "/bytes?n=%d" % (4 * MIB)).status == 200
    time.sleep(0.2)
    return g, up


def send_pattern(sock, total, deadline, up, chunked=False):
    """Sends |total| bytes of the pattern (as 1 MiB chunks when |chunked|). Fails with how far
    the client and the upstream got when the transfer stalls or takes too long."""
    sent = 0
    view = memoryview(BLOCK)
    piece = b"%x\r\n" % len(BLOCK) + BLOCK + b"\r\n"
    sock.settimeout(STALL_S)
    try:
        while sent < total:
            if time.monotonic() > deadline:
                raise TimeoutError("deadline")
            k = min(total - sent, MIB)
            sock.sendall(piece if chunked else view[:k])
            sent += k
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except (TimeoutError, OSError) as e:
        raise AssertionError(
            "upload stalled (%r): client sent %d of %d body bytes, the upstream received %d"
            % (e, sent, total, up.stats()["body_bytes"]))


def check_rss(g, base_kb, sampler):
    growth = sampler.max_kb - base_kb
    assert sampler.samples, "no RSS samples"
    assert growth < RSS_GROWTH_LIMIT_KB, (
        "gateway RSS grew by %d kB (baseline %d kB, peak %d kB)"
        % (growth, base_kb, sampler.max_kb))


def test_upload_1gib_content_length(harness):
    g, _ = stream_gateway(harness)
    base = g.rss_kb()
    sampler = RssSampler(g.pid).start()
    try:
        with Conn(g.port, timeout=60) as c:
            c.send(build_request("POST", "/sink", [("Content-Length", str(GIB))]))
            send_pattern(c.sock, GIB, time.monotonic() + 120, g.up)
            r = c.read_response(timeout=60)
    finally:
        sampler.stop()
    assert r.status == 200, r
    assert r.json()["bytes"] == GIB
    assert r.json()["sha256"] == pattern_sha256(GIB)
    check_rss(g, base, sampler)


def test_upload_chunked_256mib(harness):
    g, _ = stream_gateway(harness)
    total = 256 * MIB
    base = g.rss_kb()
    sampler = RssSampler(g.pid).start()
    try:
        with Conn(g.port, timeout=60) as c:
            c.send(build_request("POST", "/sink", [("Transfer-Encoding", "chunked")]))
            send_pattern(c.sock, total, time.monotonic() + 60, g.up, chunked=True)
            r = c.read_response(timeout=60)
    finally:
        sampler.stop()
    assert r.status == 200, r
    assert r.json()["bytes"] == total
    assert r.json()["sha256"] == pattern_sha256(total)
    check_rss(g, base, sampler)


def download(g, target, total, sampler=None, pause_after=None, pause_s=0.0):
    """GETs |target| and hashes the body as it streams. Optionally stops reading for
    |pause_s| seconds after |pause_after| bytes. Returns (response, sha256 hex, byte count)."""
    h = hashlib.sha256()
    count = [0]
    paused = [pause_after is None]

    def sink(mv):
        h.update(mv)
        count[0] += len(mv)
        if not paused[0] and count[0] >= pause_after:
            paused[0] = True
            time.sleep(pause_s)

    with Conn(g.port, timeout=60) as c:
        c.send(build_request("GET", target))
        r = c.read_response(timeout=60, sink=sink)
    return r, h.hexdigest(), count[0]


def test_download_1gib(harness):
    g, _ = stream_gateway(harness)
    base = g.rss_kb()
    sampler = RssSampler(g.pid).start()
    try:
        r, digest, n = download(g, "/bytes?n=%d" % GIB, GIB)
    finally:
        sampler.stop()
    assert r.status == 200
    assert n == GIB
    assert digest == pattern_sha256(GIB)
    check_rss(g, base, sampler)


def test_download_chunked_256mib(harness):
    g, _ = stream_gateway(harness)
    total = 256 * MIB
    base = g.rss_kb()
    sampler = RssSampler(g.pid).start()
    try:
        r, digest, n = download(g, "/chunked?n=%d&chunk=65536" % total, total)
    finally:
        sampler.stop()
    assert r.status == 200 and r.framing == "chunked"
    assert n == total
    assert digest == pattern_sha256(total)
    check_rss(g, base, sampler)


def test_download_slow_reader_backpressure(harness):
    """The client stops reading for 3 s: the gateway must stop reading the upstream, not
    buffer what it sends."""
    g, _ = stream_gateway(harness)
    total = 512 * MIB
    base = g.rss_kb()
    sampler = RssSampler(g.pid).start()
    try:
        r, digest, n = download(g, "/bytes?n=%d" % total, total, pause_after=4 * MIB,
                                pause_s=3.0)
    finally:
        sampler.stop()
    assert r.status == 200
    assert n == total and digest == pattern_sha256(total)
    check_rss(g, base, sampler)


def test_upload_slow_upstream_backpressure(harness):
    """The upstream reads nothing for 3 s: the gateway must stop reading the client."""
    g, _ = stream_gateway(harness)
    total = 512 * MIB
    base = g.rss_kb()
    sampler = RssSampler(g.pid).start()
    progress = {"sent": 0}
    result = {}

    def uploader(sock):
        try:
            view = memoryview(BLOCK)
            deadline = time.monotonic() + 60
            sock.settimeout(STALL_S)
            for _ in range(total // MIB):
                if time.monotonic() > deadline:
                    raise AssertionError("upload took too long")
                sock.sendall(view)
                progress["sent"] += MIB
        except Exception as e:  # reported by the main thread
            result["error"] = "%r after %d bytes sent; the upstream received %d" % (
                e, progress["sent"], g.up.stats()["body_bytes"])

    try:
        with Conn(g.port, timeout=60) as c:
            c.send(build_request("POST", "/sink?pause_ms=3000",
                                 [("Content-Length", str(total))]))
            t = threading.Thread(target=uploader, args=(c.sock,), daemon=True)
            t.start()
            time.sleep(2.0)
            stalled_at = progress["sent"]
            # While the upstream is not reading, the client is held back too (a few MB of
            # socket buffers at most, not hundreds).
            assert stalled_at < 128 * MIB, "client sent %d MiB while the upstream read " \
                "nothing" % (stalled_at // MIB)
            t.join(90)
            assert not t.is_alive(), "upload did not finish"
            assert "error" not in result, result.get("error")
            r = c.read_response(timeout=60)
    finally:
        sampler.stop()
    assert r.status == 200
    assert r.json()["bytes"] == total and r.json()["sha256"] == pattern_sha256(total)
    check_rss(g, base, sampler)


def test_concurrent_streams_bounded(harness):
    """Four 128 MiB downloads at once, read slowly: memory stays bounded."""
    g, _ = stream_gateway(harness)
    total = 128 * MIB
    base = g.rss_kb()
    sampler = RssSampler(g.pid).start()
    results = [None] * 4

    def one(i):
        try:
            results[i] = download(g, "/bytes?n=%d" % total, total, pause_after=MIB,
                                  pause_s=1.5)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sampler.stop()
    for res in results:
        assert not isinstance(res, Exception) and res is not None, res
        r, digest, n = res
        assert r.status == 200 and n == total and digest == pattern_sha256(total)
    check_rss(g, base, sampler)
    assert rss_kb(g.pid) > 0
