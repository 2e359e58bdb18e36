# SPDX-License-Identifier: MIT
"""Slow clients do not hold blocking WSGI workers (the uwsgi upstream's buffering), shown by
what the app observes.

gatehouse.wsgi runs tests/python/apps/slow_app.py with 4 workers on a unix socket; the app
writes, per request, how long its wsgi.input.read() took and how long the request held the
worker (call to the response's close()). Through the gateway, at the same time:

  * 200 "tricklers" POST a 96 KiB body in 1536-byte pieces every 125 ms (~8 s each);
  * 200 "slow readers" GET a 1 MiB body with a 4 KiB receive buffer, taking 512 bytes every
    100 ms (5 KiB/s: ~200 s for the whole body); they advertise an Ethernet-sized MSS, so
    that the gateway's kernel gives their sockets the ~200 KiB send buffer a real client
    would get, not loopback's ~4 MiB (see _connect());
  * a fast client issues GET /fast (and small whole POSTs) one after the other, each of which
    must be answered within FAST_BOUND.

buffer.memory is 16k, so both the uploads and the 1 MiB responses spill to temporary files:
while all 400 are in flight the gateway holds 400 of them open (checked in /proc).

Then, from the app's records: every wsgi.input.read() took under READ_BOUND and each upload
reached the app only after its client had sent its last piece; every /big released its worker
within HOLD_BOUND, while its client had read under a tenth of it. Finally the readers speed up
and every one of the 400 gets its whole, correct response.

Why this fails without the feature:
  * if the gateway streamed request bodies, an upload would reach a worker at its first
    piece: the app's read would wait ~8 s for the trickle (READ_BOUND, and the "called after
    the last piece" check), and 4 tricklers would occupy all 4 workers, so the fast client
    would wait seconds (FAST_BOUND) and the readers' GETs would queue behind them;
  * if it streamed responses with backpressure, each /big would hold its worker until its
    client had read all but the ~630 KiB held in between (unix socket, the gateway's 64 KiB
    window, the TCP buffers; measured: the worker lets go once its client has read ~400 KB):
    over a minute at 5 KiB/s (HOLD_BOUND; the /big would not be recorded before the readers
    speed up), and the first 4 slow readers would take all 4 workers: the other 196 readers
    would not get a response head (the wait for them fails) and the fast client would time
    out. Run with the readers' GETs made unbuffered (&stream=1), this test does fail there.
test_control_unbuffered_response_holds_the_worker runs the second case in small (the app's
X-Accel-Buffering: no makes the gateway stream) to show the measurements catch it.

Every wait is bounded; every process is stopped by its PID."""

import hashlib
import json
import os
import resource
import selectors
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pytest

import gw
from gw import Conn, free_port, make_config, wait_until
from test_uwsgi import GhWsgi


WORKERS = 4
N_TRICKLE = 200
N_SLOW = 200
UPLOAD_LEN = 96 * 1024            # more than the worker's first recv: the app reads the socket
PIECE = 1536                      # 64 pieces
PIECE_EVERY = 0.125               # -> ~8 s per upload
BIG_LEN = 1 << 20
SLOW_READ = 512                   # bytes per slow read
SLOW_EVERY = 0.1                  # -> 5 KiB/s per reader
SLOW_RCVBUF = 4096
CLIENT_MSS = 1448                 # see _connect()

READ_BOUND = 0.25                 # one wsgi.input.read() of a 96 KiB body already there
HOLD_BOUND = 0.5                  # a worker busy with one 1 MiB response
FAST_BOUND = 1.5                  # one fast request, end to end
MIN_OVERLAPPED = 20               # fast requests made while all 400 were in flight

BIG_SHA = hashlib.sha256((bytes(range(256)) * (BIG_LEN // 256 + 1))[:BIG_LEN]).hexdigest()


# ---- processes ------------------------------------------------------------------------------

class SlowApp(GhWsgi):
    """`python3 -m gatehouse.wsgi slow_app:app --workers N` on a unix socket, with the app's
    records in a directory; stopped by PID."""

    def __init__(self, workers=WORKERS):
        self.dir = tempfile.mkdtemp(prefix="ghslow-", dir="/tmp")  # short: a unix socket path
        self.stats = os.path.join(self.dir, "stats")
        os.mkdir(self.stats)
        super().__init__(Path(self.dir), app="slow_app:app", workers=workers, name="app",
                         env={"SLOW_APP_STATS": self.stats})

    def records(self):
        out = []
        for name in sorted(os.listdir(self.stats)):
            with open(os.path.join(self.stats, name)) as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        return out

    def stop(self):
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def slow_app():
    a = SlowApp()
    yield a
    a.stop()


def start_gateway(harness, app):
    port = free_port()
    up = {
        "protocol": "uwsgi",
        "servers": [app.server],
        "timeouts": {"connect": "2s", "first_byte": "20s", "read": "20s", "send": "20s"},
        # Small on purpose: the 32 KiB uploads and the 1 MiB responses both spill to files.
        "buffer": {"memory": "16k", "dir": "/tmp"},
    }
    cfg = make_config(port, {"app": up}, workers=2,
                      listen=[{"address": "127.0.0.1:%d" % port, "backlog": 2048}],
                      # The trickle pauses 125 ms between pieces, the readers ~100 ms between
                      # reads: far inside these, set here so that a default cannot cut them.
                      timeouts={"header": "10s", "body": "30s", "idle": "60s", "send": "60s"},
                      log={"access": "off"})
    return harness.gateway(config=cfg, port=port)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))  # inherited by the gateway
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        pytest.skip("RLIMIT_NOFILE %d is below the %d descriptors this test needs" % (soft, need))


# ---- the raw clients, driven by one selector loop -------------------------------------------

def _connect(port, rcvbuf=None):
    """A client socket that looks like one from the internet to the gateway's kernel.

    On loopback the MSS is ~64 KiB, and Linux sizes a new connection's send buffer from it
    (a few times 10 segments): the gateway's socket to every client gets ~4 MiB at once, which
    would swallow a 1 MiB response whole and release the worker even if the gateway did not
    buffer. Advertising an Ethernet-sized MSS brings that down to ~200 KiB, as for a real
    client, so that only the gateway's own buffering can free the worker."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, CLIENT_MSS)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) <= CLIENT_MSS
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s


class _Reply:
    """Collects one HTTP/1.1 response with a Content-Length body, hashing the body."""

    def __init__(self, keep_body):
        self.head = b""
        self.status = None
        self.length = None
        self.got = 0
        self.keep = keep_body
        self.body = bytearray()
        self.sha = hashlib.sha256()
        self.head_at = None

    @property
    def complete(self):
        return self.length is not None and self.got >= self.length

    def feed(self, data):
        if self.status is None:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                if len(self.head) > 65536:
                    raise AssertionError("response head too long: %r" % self.head[:200])
                return
            head, data = self.head[:i], self.head[i + 4:]
            self.head = head
            lines = head.split(b"\r\n")
            self.status = int(lines[0].split(b" ")[1])
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    self.length = int(v.strip())
            if self.length is None:
                raise AssertionError("response without Content-Length: %r" % head)
            self.head_at = time.monotonic()
        if self.got + len(data) > self.length:
            raise AssertionError("response longer than its Content-Length")
        self.got += len(data)
        self.sha.update(data)
        if self.keep:
            self.body += data


class Trickler:
    def __init__(self, idx, port, start):
        self.idx = idx
        self.body = os.urandom(UPLOAD_LEN)
        self.sha = hashlib.sha256(self.body).hexdigest()
        self.sock = _connect(port)
        self.out = (b"POST /upload?id=%d HTTP/1.1\r\nHost: app.test\r\nContent-Type: "
                    b"application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                    % (idx, UPLOAD_LEN))
        self.sent = 0                 # body bytes handed to the kernel
        self.due = start
        self.last_piece_wall = None   # time.time() just before the last piece was sent
        self.reply = _Reply(keep_body=True)
        self.error = None

    @property
    def sending(self):
        return self.sent < UPLOAD_LEN

    def send_due(self, now):
        """Sends the head (first time) and the next piece; called when |due| has passed."""
        if not self.out:
            end = min(self.sent + PIECE, UPLOAD_LEN)
            if end == UPLOAD_LEN:
                self.last_piece_wall = time.time()
            self.out = self.body[self.sent:end]
            self.sent = end
        n = self.sock.send(self.out)
        self.out = self.out[n:]
        self.due = now + (0.005 if self.out else PIECE_EVERY)

    def on_readable(self):
        data = self.sock.recv(65536)
        if not data:
            raise AssertionError("upload %d: connection closed (%d body bytes sent, reply %r)"
                                 % (self.idx, self.sent, self.reply.head))
        if self.sending:
            raise AssertionError("upload %d: answered after %d of %d body bytes: %r"
                                 % (self.idx, self.sent, UPLOAD_LEN, data[:200]))
        self.reply.feed(data)

    @property
    def done(self):
        return self.reply.complete or self.error is not None


class SlowReader:
    def __init__(self, idx, port, start):
        self.idx = idx
        self.sock = _connect(port, rcvbuf=SLOW_RCVBUF)
        self.sock.send(b"GET /big?id=%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % idx)
        self.due = start
        self.reply = _Reply(keep_body=False)
        self.error = None
        self.eof = False

    def read(self, size):
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            return
        if not data:
            raise AssertionError("reader %d: connection closed after %d of %s body bytes"
                                 % (self.idx, self.reply.got, self.reply.length))
        self.reply.feed(data)

    @property
    def done(self):
        return self.reply.complete or self.error is not None


class Driver(threading.Thread):
    """One thread, one selector: sends the tricklers' pieces on schedule, reads the slow
    readers SLOW_READ bytes every SLOW_EVERY (or as fast as they can once |fast| is set) and
    reads the replies."""

    def __init__(self, tricklers, readers, limit_s):
        super().__init__(daemon=True)
        self.tricklers = tricklers
        self.readers = readers
        self.fast = threading.Event()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + limit_s
        self.errors = []

    def run(self):
        sel = selectors.DefaultSelector()
        for t in self.tricklers:
            sel.register(t.sock, selectors.EVENT_READ, t)
        fast_registered = False
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                now = time.monotonic()
                nxt = now + 0.05
                for t in self.tricklers:
                    if t.error is None and (t.sending or t.out):
                        if t.due <= now:
                            self._guard(t, t.send_due, now)
                        nxt = min(nxt, t.due)
                if not self.fast.is_set():
                    for r in self.readers:
                        if not r.done and r.due <= now:
                            self._guard(r, r.read, SLOW_READ)
                            r.due = max(r.due + SLOW_EVERY, now)
                        if not r.done:
                            nxt = min(nxt, r.due)
                elif not fast_registered:
                    for r in self.readers:
                        if not r.done:
                            sel.register(r.sock, selectors.EVENT_READ, r)
                    fast_registered = True
                for key, _ in sel.select(max(0.0, nxt - time.monotonic())):
                    c = key.data
                    if isinstance(c, SlowReader):
                        self._guard(c, c.read, 1 << 18)
                    else:
                        self._guard(c, c.on_readable)
                    if c.done:
                        sel.unregister(c.sock)
                if all(c.done for c in self.tricklers) and all(c.done for c in self.readers):
                    return
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))
        finally:
            sel.close()

    @staticmethod
    def _guard(c, fn, *args):
        try:
            fn(*args)
        except (AssertionError, OSError) as e:
            c.error = str(e)


def spool_files(pid):
    """How many of the gateway's temporary spool files (unlinked /tmp/gatehouse-*) are open."""
    n = 0
    fddir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fddir)
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(os.path.join(fddir, fd))
        except OSError:
            continue
        if target.startswith("/tmp/gatehouse-") and target.endswith("(deleted)"):
            n += 1
    return n


def _pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


def _fmt(values):
    if not values:
        return "none"
    return "n=%d median %.1f ms, p99 %.1f ms, max %.1f ms" % (
        len(values), statistics.median(values) * 1e3, _pct(values, 0.99) * 1e3,
        max(values) * 1e3)


# ---- the test -------------------------------------------------------------------------------

def test_slow_clients_do_not_hold_workers(harness, slow_app):
    raise_nofile(2 * (N_TRICKLE + N_SLOW) + 1024)
    g = start_gateway(harness, slow_app)
    t_begin = time.monotonic()

    # Warm-up: the path works and every worker has imported everything.
    for _ in range(8):
        assert gw.get(g.port, "/fast", timeout=5).status == 200

    readers, tricklers, driver = [], [], None
    start = time.monotonic()
    try:
        for i in range(N_SLOW):
            readers.append(SlowReader(i, g.port, start + (i % 10) * SLOW_EVERY / 10))
        start = time.monotonic()
        for i in range(N_TRICKLE):
            tricklers.append(Trickler(i, g.port, start + (i % 25) * PIECE_EVERY / 25))
        driver = Driver(tricklers, readers, limit_s=60)
        driver.start()

        def all_active():
            return (all(t.sending and t.error is None for t in tricklers)
                    and all(r.reply.status is not None and not r.done for r in readers))

        # Every reader has its response head (the GETs were served) and is still reading.
        wait_until(lambda: all(r.reply.status is not None or r.error for r in readers),
                   timeout=10, interval=0.05, what="every slow reader's response head")
        assert not [r.error for r in readers if r.error], [r.error for r in readers if r.error]
        assert {r.reply.status for r in readers} == {200}
        assert all_active(), "the slow clients finished before the fast phase"

        # The fast client, one request after the other, until every upload is answered.
        lat, overlapped, fast_errors, spooled = [], 0, [], 0
        k = 0
        fast_deadline = time.monotonic() + 25
        while not all(t.done for t in tricklers) and time.monotonic() < fast_deadline:
            active = all_active()
            t0 = time.monotonic()
            try:
                if k % 5 == 4:
                    body = os.urandom(4096)
                    with Conn(g.port, timeout=5) as c:
                        r = c.request("POST", "/upload?id=fast%d" % k, body=body, timeout=5)
                    ok = r.status == 200 and r.json()["sha256"] == hashlib.sha256(body).hexdigest()
                else:
                    r = gw.get(g.port, "/fast?id=fast%d" % k, timeout=5)
                    ok = r.status == 200 and r.body == b"ok\n"
            except (AssertionError, OSError) as e:
                ok, r = False, e
            dt = time.monotonic() - t0
            lat.append(dt)
            if not ok:
                fast_errors.append((k, repr(r)))
            if active and all_active():
                overlapped += 1
                if k % 8 == 0:
                    spooled = max(spooled, spool_files(g.pid))
            k += 1
            time.sleep(0.05)
        print("\nfast requests: %d (%d while all 400 were in flight), latency %s"
              % (len(lat), overlapped, _fmt(lat)))
        print("gateway spool files open at once (max seen): %d" % spooled)
        assert not fast_errors, fast_errors
        assert max(lat) < FAST_BOUND, _fmt(lat)
        assert overlapped >= MIN_OVERLAPPED, (overlapped, len(lat))
        # The gateway, not the worker, held the bodies meanwhile: past buffer.memory (16k) each
        # upload and each response had spilled to its own temporary file.
        assert spooled >= N_TRICKLE + N_SLOW, spooled

        # Every upload answered, with its own body, whole.
        assert all(t.done for t in tricklers), "uploads not answered within 25 s"
        bad = [(t.idx, t.error) for t in tricklers if t.error]
        assert not bad, bad[:10]
        for t in tricklers:
            assert t.reply.status == 200, (t.idx, t.reply.head)
            j = json.loads(bytes(t.reply.body))
            assert (j["id"], j["len"], j["sha256"]) == (str(t.idx), UPLOAD_LEN, t.sha), j

        # The readers are still slow: each has taken only a small part of its 1 MiB.
        slow_until = time.time()
        got = [r.reply.got for r in readers]
        assert not [r.error for r in readers if r.error], [r.error for r in readers if r.error]
        assert max(got) < BIG_LEN // 10, max(got)
        print("slow readers had read %d..%d bytes of %d after %.1f s"
              % (min(got), max(got), BIG_LEN, time.monotonic() - start))

        # Now read fast: every reader gets its whole, correct megabyte.
        records_before_fast = slow_app.records()
        driver.fast.set()
        t_fast = time.monotonic()
        wait_until(lambda: all(r.done for r in readers), timeout=30, interval=0.05,
                   what="the readers' whole responses")
        print("200 readers took their remaining bodies in %.1f s" % (time.monotonic() - t_fast))
        driver.stop.set()
        driver.join(10)
        assert not driver.errors, driver.errors
        bad = [(r.idx, r.error) for r in readers if r.error]
        assert not bad, bad[:10]
        for r in readers:
            assert r.reply.got == BIG_LEN and r.reply.sha.hexdigest() == BIG_SHA, r.idx
    finally:
        if driver is not None:
            driver.stop.set()
            driver.join(10)
        for c in tricklers + readers:
            c.sock.close()

    # ---- what the app saw ----
    # A record is written in close(), just after the last byte went to the gateway: the client
    # can have its answer a moment before.
    def all_recorded():
        rs = slow_app.records()
        n = sum(1 for r in rs if r["path"] == "/upload" and r["id"].isdigit())
        return rs if n >= N_TRICKLE else None
    recs = wait_until(all_recorded, timeout=5, what="the app's records of every upload")
    uploads = {r["id"]: r for r in recs if r["path"] == "/upload" and r["id"].isdigit()}
    bigs = {r["id"]: r for r in records_before_fast if r["path"] == "/big"}
    fasts = [r for r in recs if r["id"] and r["id"].startswith("fast")]
    reads = [r["read"] for r in uploads.values()]
    holds_big = [r["hold"] for r in bigs.values()]
    holds_up = [r["hold"] for r in uploads.values()]
    holds_fast = [r["hold"] for r in fasts]
    print("app: wsgi.input.read() of 96 KiB: %s" % _fmt(reads))
    print("app: worker held by a /big (1 MiB): %s" % _fmt(holds_big))
    print("app: worker held by an upload: %s" % _fmt(holds_up))
    print("app: worker held by a fast request: %s" % _fmt(holds_fast))
    print("workers: %s; total %.1f s"
          % (sorted({r["pid"] for r in recs}), time.monotonic() - t_begin))

    # Each upload reached the app once, whole, and only after its client's last piece.
    assert sorted(uploads) == sorted(str(i) for i in range(N_TRICKLE))
    for t in tricklers:
        rec = uploads[str(t.idx)]
        assert rec["len"] == UPLOAD_LEN
        assert rec["call"] > t.last_piece_wall, (t.idx, rec, t.last_piece_wall)
    # The body was all there when the app asked: no read waited.
    assert max(reads) < READ_BOUND, _fmt(reads)
    # Every /big let go of its worker at once, before its client had read a tenth of it.
    assert sorted(bigs) == sorted(str(i) for i in range(N_SLOW)), \
        "some /big still held a worker while its reader was slow"
    assert max(holds_big) < HOLD_BOUND, _fmt(holds_big)
    assert max(r["close"] for r in bigs.values()) < slow_until
    assert max(holds_up) < HOLD_BOUND, _fmt(holds_up)
    assert len({r["pid"] for r in recs}) <= WORKERS


def test_control_unbuffered_response_holds_the_worker(harness, slow_app):
    """The negative control: with X-Accel-Buffering: no the gateway streams the response with
    backpressure, and the measurements above do see a slow reader hold its worker (and the
    fast client wait for one)."""
    g = start_gateway(harness, slow_app)
    assert gw.get(g.port, "/fast", timeout=5).status == 200
    readers = []
    try:
        for i in range(WORKERS):
            s = _connect(g.port, rcvbuf=SLOW_RCVBUF)
            s.setblocking(True)
            s.settimeout(5)
            s.sendall(b"GET /big?id=ctl%d&stream=1 HTTP/1.1\r\nHost: app.test\r\n\r\n" % i)
            assert s.recv(512).startswith(b"HTTP/1.1 200")
            readers.append(s)
        # All 4 workers are held by clients that read nothing more: a fast request waits.
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            gw.get(g.port, "/fast?id=ctl-fast", timeout=FAST_BOUND)
        assert time.monotonic() - t0 >= FAST_BOUND - 0.1
        assert not [r for r in slow_app.records() if r["path"] == "/big"], \
            "a streamed /big let go of its worker while its client was not reading"
        # Reading the rest releases them.
        for s in readers:
            got = 0
            deadline = time.monotonic() + 15
            while got < BIG_LEN - 512 and time.monotonic() < deadline:
                data = s.recv(1 << 18)
                if not data:
                    break
                got += len(data)
    finally:
        for s in readers:
            s.close()
    def streamed():
        rs = [r for r in slow_app.records() if r["path"] == "/big"]
        return rs if len(rs) >= WORKERS else None
    bigs = wait_until(streamed, timeout=10, what="the streamed /big records")
    holds = [r["hold"] for r in bigs]
    print("\ncontrol: worker held by a streamed /big: %s" % _fmt(holds))
    assert min(holds) > FAST_BOUND, holds
