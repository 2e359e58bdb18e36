#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""WebSocket clients for bench_ws.py, raw sockets and the standard library only (no C client
is available here, so this is kept lean: the machine's two cores are shared with the servers).

As a process, the echo load generator (bench_ws.py starts K of them):

  /usr/bin/python3 tests/bench/ws_client.py --port P [--connections 32] [--payload 32]
      [--path /] [--connect-timeout 10]

  Opens its connections one by one (RFC 6455 opening handshake, no Sec-WebSocket-Extensions
  offered, so no permessage-deflate), then obeys commands on stdin, one per line:
    run SECONDS   each connection sends one masked text frame (precomputed bytes, PAYLOAD
                  bytes), waits for the echo, sends the next, ... for SECONDS; then the
                  messages in flight are waited for (not counted past the deadline)
    quit          closes the connections and exits
  and answers on stdout, one JSON object per line:
    {"event": "ready", "connections": N, "errors": {...}}          after the handshakes
    {"event": "run", "round_trips": N, "seconds": S, "hist": {"US": COUNT, ...},
     "closed": N, "errors": {...}}                                 after each run
  hist is the round-trip latency histogram in whole microseconds (merged by the parent).

Imported, the idle connection opener (open_idle, hold, close_all) that bench_ws.py runs in its
own process: N connections, at most BATCH connecting or handshaking at once, each left idle
once its handshake (or its one HTTP request) is answered; pings are answered while held.
"""

import argparse
import base64
import errno
import hashlib
import json
import os
import select
import selectors
import socket
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MASK = b"\x37\xfa\x21\x3d"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def masked_frame(opcode, payload, mask=MASK):
    """One client frame (FIN, masked; RFC 6455 §5.2-5.3) carrying |payload| (< 126 bytes)."""
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


def handshake_request(port, path):
    """The opening handshake (RFC 6455 §4.1) and the Sec-WebSocket-Accept it must get back."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    req = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port +
           b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
           b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    return req, accept


def check_handshake(head, accept):
    """None when |head| (the response head, without the blank line) is a proper 101 for
    |accept| with no extension agreed; else what is wrong."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[1] != b"101":
        return "status line %r" % lines[0][:80].decode("latin-1")
    fields = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        fields[k.strip().lower()] = v.strip()
    if fields.get(b"sec-websocket-accept") != accept:
        return "bad Sec-WebSocket-Accept %r" % fields.get(b"sec-websocket-accept")
    if b"sec-websocket-extensions" in fields:
        return "an extension was agreed without an offer: %r" % fields[b"sec-websocket-extensions"]
    return None


def parse_frames(buf):
    """Server frames (unmasked, RFC 6455 §5.2) at the start of |buf| (a bytearray, consumed):
    a list of (opcode, payload). Fragments are returned as they come (opcode 0 for
    continuations): the echo of a 32-byte message is never fragmented in practice."""
    out = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack_from("!H", buf, 2)[0]
            off = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack_from("!Q", buf, 2)[0]
            off = 10
        if buf[1] & 0x80:
            off += 4  # a masked server frame is a protocol error; skip the key all the same
        if len(buf) < off + n:
            break
        out.append((buf[0] & 0x0F, bytes(buf[off:off + n])))
        del buf[:off + n]
    return out


def bump(d, key):
    d[key] = d.get(key, 0) + 1


# ----------------------------------------------------------------------------- echo load

class EchoClient:
    def __init__(self, port, n, payload_len, path, timeout):
        self.port = port
        payload = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 8)[:payload_len]
        self.frame = masked_frame(OP_TEXT, payload)
        self.echo = bytes((0x80 | OP_TEXT, len(payload))) + payload
        self.payload = payload
        self.socks = []
        self.bufs = []
        self.errors = {}
        self.ep = select.epoll()
        for _ in range(n):
            try:
                self.socks.append(self.connect(path, timeout))
            except (OSError, ValueError) as e:
                bump(self.errors, "connect: %s: %s" % (type(e).__name__, e))
        self.bufs = [bytearray() for _ in self.socks]
        self.index = {s.fileno(): i for i, s in enumerate(self.socks)}
        self.live = [True] * len(self.socks)
        for s in self.socks:
            s.setblocking(False)
            self.ep.register(s.fileno(), select.EPOLLIN)

    def connect(self, path, timeout):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req, accept = handshake_request(self.port, path)
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                s.close()
                raise ValueError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        err = check_handshake(head, accept)
        if err or rest:
            s.close()
            raise ValueError(err or "bytes after the 101 before any message")
        return s

    def lost(self, i, what):
        bump(self.errors, what)
        if self.live[i]:
            self.live[i] = False
            self.ep.unregister(self.socks[i].fileno())

    def slow_path(self, i, data):
        """Anything but exactly one echo frame: returns the number of echoes it completes
        (0 or 1), answers pings, records anything else."""
        buf = self.bufs[i]
        buf += data
        done = 0
        for op, payload in parse_frames(buf):
            if op == OP_TEXT and payload == self.payload:
                done += 1
            elif op == OP_PING:
                self.socks[i].send(masked_frame(OP_PONG, payload))
            elif op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.lost(i, "close frame %s %r" % (code, payload[2:60]))
            elif op != OP_PONG:
                bump(self.errors, "unexpected frame opcode %d, %d bytes" % (op, len(payload)))
        return done

    def run(self, seconds):
        socks, frame, echo, live = self.socks, self.frame, self.echo, self.live
        index, bufs = self.index, self.bufs
        hist = {}
        clock = time.perf_counter
        sent_at = [0.0] * len(socks)
        waiting = 0
        start = clock()
        deadline = start + seconds
        for i, s in enumerate(socks):
            if live[i]:
                s.send(frame)
                sent_at[i] = start
                waiting += 1
        count = 0
        poll = self.ep.poll
        idle_since = None
        while waiting:
            events = poll(1.0)
            if not events:
                now = clock()
                idle_since = idle_since or now
                if now - idle_since > 10.0:
                    bump(self.errors, "%d echoes not answered within 10 s" % waiting)
                    break
                continue
            idle_since = None
            for fd, _ in events:
                i = index[fd]
                try:
                    data = socks[i].recv(65536)
                except OSError as e:
                    self.lost(i, "recv: %s" % os.strerror(e.errno or errno.EIO))
                    waiting -= 1
                    continue
                now = clock()
                if data == echo and not bufs[i]:
                    pass
                elif not data:
                    self.lost(i, "closed by the server")
                    waiting -= 1
                    continue
                elif not self.slow_path(i, data):
                    if not live[i]:
                        waiting -= 1
                    continue
                if sent_at[i] < deadline:
                    us = int((now - sent_at[i]) * 1e6)
                    hist[us] = hist.get(us, 0) + 1
                    count += 1
                if now < deadline:
                    socks[i].send(frame)
                    sent_at[i] = now
                else:
                    sent_at[i] = deadline
                    waiting -= 1
        elapsed = min(clock(), deadline) - start
        return {"event": "run", "round_trips": count, "seconds": elapsed, "hist": hist,
                "closed": self.live.count(False), "errors": self.errors}

    def close(self):
        for s in self.socks:
            s.close()
        self.ep.close()


def echo_once(port, path="/", timeout=5.0):
    """One WebSocket to 127.0.0.1:|port|, one 32-byte text message echoed, a close handshake.
    None when that worked, else what went wrong."""
    payload = b"bench_ws readiness check 0123456"
    s = None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        req, accept = handshake_request(port, path)
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return "connection closed during the handshake (got %r)" % data[:200]
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        err = check_handshake(head, accept)
        if err:
            return "handshake: " + err
        s.sendall(masked_frame(OP_TEXT, payload))
        buf = bytearray(rest)
        while True:
            for op, got in parse_frames(buf):
                if op == OP_TEXT and got == payload:
                    s.sendall(masked_frame(OP_CLOSE, struct.pack("!H", 1000)))
                    return None
                if op == OP_CLOSE:
                    return "close frame %r instead of the echo" % got[:60]
                if op != OP_PING:
                    return "frame opcode %d %r instead of the echo" % (op, got[:60])
            chunk = s.recv(4096)
            if not chunk:
                return "connection closed before the echo"
            buf += chunk
    except OSError as e:
        return "%s: %s" % (type(e).__name__, e)
    finally:
        if s is not None:
            s.close()


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--payload", type=int, default=32, help="text payload bytes (32, < 126)")
    ap.add_argument("--path", default="/")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    a = ap.parse_args(argv)
    if not 1 <= a.payload < 126:
        ap.error("--payload takes 1..125")
    c = EchoClient(a.port, a.connections, a.payload, a.path, a.connect_timeout)
    emit({"event": "ready", "connections": len(c.socks), "errors": c.errors})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "run":
            emit(c.run(float(cmd[1])))
    c.close()
    return 0


# ----------------------------------------------------------------------------- idle

class Idle:
    __slots__ = ("sock", "state", "buf", "accept")

    def __init__(self):
        self.sock = None
        self.state = "new"   # new, connecting, waiting (request sent), open, closed, failed
        self.buf = b""
        self.accept = None


def _http_answered(head, rest):
    """True once a response with this |head| is whole (Content-Length bodies only)."""
    for l in head.split(b"\r\n")[1:]:
        k, _, v = l.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(rest) >= int(v)
    return True


def open_idle(port, n, batch=500, mode="ws", path="/", timeout=60.0, progress=None):
    """Opens |n| connections to 127.0.0.1:|port|, at most |batch| in progress at once. |mode|
    "ws": a WebSocket handshake each; "http": one GET |path| each, answered 200, then kept
    alive. Returns (conns, selector, stats); stats: opened, failed, errors, seconds."""
    sel = selectors.DefaultSelector()
    conns = [Idle() for _ in range(n)]
    errors = {}
    pending = iter(conns)
    in_progress = 0
    opened = failed = 0
    started = 0
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_report = t0

    def fail(c, what):
        nonlocal failed, in_progress
        bump(errors, what)
        c.state = "failed"
        failed += 1
        in_progress -= 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    while opened + failed < n:
        while in_progress < batch and started < n:
            c = next(pending)
            started += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            c.sock = s
            in_progress += 1
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                fail(c, "connect: %s" % os.strerror(rc))
                continue
            c.state = "connecting"
            sel.register(s, selectors.EVENT_WRITE, c)
        now = time.monotonic()
        if now > deadline:
            for c in conns:
                if c.state in ("connecting", "waiting"):
                    fail(c, "not answered within %.0f s" % timeout)
            break
        if progress and now - last_report >= 5.0:
            last_report = now
            progress(opened, failed, n)
        for key, _ in sel.select(1.0):
            c = key.data
            s = c.sock
            if c.state == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, "connect: %s" % os.strerror(err))
                    continue
                if mode == "ws":
                    req, c.accept = handshake_request(port, path)
                else:
                    req = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path.encode(), port)
                s.send(req)  # small: fits an empty socket buffer
                c.state = "waiting"
                sel.modify(s, selectors.EVENT_READ, c)
                continue
            try:
                data = s.recv(4096)
            except OSError as e:
                if c.state == "waiting":
                    fail(c, "recv: %s" % os.strerror(e.errno or errno.EIO))
                continue
            if not data:
                fail(c, "closed before the answer")
                continue
            c.buf += data
            head, sep, rest = c.buf.partition(b"\r\n\r\n")
            if not sep:
                continue
            if mode == "ws":
                err = check_handshake(head, c.accept)
                if err:
                    fail(c, err)
                    continue
                c.buf = bytearray(rest)
            else:
                if not head.split(b" ", 2)[1:2] == [b"200"]:
                    fail(c, "status line %r" % head.split(b"\r\n")[0][:80])
                    continue
                if not _http_answered(head, rest):
                    continue
                c.buf = bytearray()
            c.state = "open"
            opened += 1
            in_progress -= 1
    return conns, sel, {"opened": opened, "failed": failed, "errors": errors,
                        "seconds": time.monotonic() - t0}


def hold(conns, sel, seconds):
    """Keeps the open connections idle for |seconds|, answering pings. Returns
    {"still_open": N, "closed": {why: count}, "pings": N}."""
    closed = {}
    pings = 0
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(left):
            c = key.data
            if c.state != "open":
                continue
            try:
                data = c.sock.recv(65536)
            except OSError as e:
                data, why = b"", "recv: %s" % os.strerror(e.errno or errno.EIO)
            else:
                why = "closed by the server"
            if data:
                c.buf += data
                for op, payload in parse_frames(c.buf):
                    if op == OP_PING:
                        pings += 1
                        c.sock.send(masked_frame(OP_PONG, payload[:125]))
                    elif op == OP_CLOSE:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                        why = "close frame %s %r" % (code, payload[2:60])
                        data = b""
                    else:
                        bump(closed, "unexpected frame opcode %d (kept)" % op)
            if not data:
                bump(closed, why)
                c.state = "closed"
                sel.unregister(c.sock)
                c.sock.close()
    return {"still_open": sum(1 for c in conns if c.state == "open"), "closed": closed,
            "pings": pings}


def close_all(conns, sel):
    for c in conns:
        if c.sock is not None and c.state not in ("closed", "failed"):
            try:
                sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
            c.state = "closed"
    sel.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
