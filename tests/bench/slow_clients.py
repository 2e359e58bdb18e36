#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Slow HTTP clients for bench_wsgi.py: N connections to 127.0.0.1:PORT that each hold one
request open for as long as this process runs.

  /usr/bin/python3 tests/bench/slow_clients.py --port P [--n 500] [--kind mix|read|body]
      [--path /big] [--bytes 64] [--interval 0.1] [--rcvbuf 16384] [--body-size 262144]
      [--ready-timeout 60] [--max-seconds 900]

  read   GET PATH (a 256 KiB response in bench_wsgi.py), then recv(BYTES) every INTERVAL, on
         a socket with a small SO_RCVBUF so the TCP window stays small and the gateway has
         to hold the rest of the response.
  body   POST / with Content-Length BODY_SIZE, then BYTES of the body every INTERVAL (the
         gateway has to wait for the whole body before it may hand the request to a worker).
  mix    half and half (even connection numbers read, odd ones trickle).

At BYTES every INTERVAL (640 B/s by default) none of them finishes within a benchmark run.
The connections are served in turn, spread evenly over INTERVAL, so the gateway sees a
steady trickle rather than bursts.

stdout, one JSON object per line:
  {"event": "ready", ...}  once every connection is established (a reader has received the
                           first bytes of its response, a trickler has sent its head), or at
                           --ready-timeout with whatever was reached ("all": false)
  {"event": "done", ...}   on SIGTERM/SIGINT, at --max-seconds or when the parent is gone:
                           how many are still open, closed by the server, reset, the statuses
                           seen, bytes in and out
Standard library only. Exit status 0, or 2 when not a single connection could be made.
"""

import argparse
import errno
import json
import os
import resource
import signal
import socket
import sys
import time

_stop = False


def _on_signal(signum, frame):
    global _stop
    _stop = True


class Slow:
    __slots__ = ("i", "kind", "sock", "state", "status", "bytes_in", "bytes_out",
                 "body_left", "ready_at", "why")

    def __init__(self, i, kind):
        self.i = i
        self.kind = kind  # "read" or "body"
        self.sock = None
        self.state = "new"  # new -> open -> closed | reset | error
        self.status = None  # the status code of a response, once its first bytes came
        self.bytes_in = 0
        self.bytes_out = 0
        self.body_left = 0
        self.ready_at = None
        self.why = None


def connect(c, a, host_hdr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if c.kind == "read":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)  # before connect: window
    s.settimeout(5.0)
    s.connect(("127.0.0.1", a.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if c.kind == "read":
        head = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: slow-reader\r\n\r\n" % (a.path,
                                                                                 host_hdr)
    else:
        head = ("POST / HTTP/1.1\r\nHost: %s\r\nUser-Agent: slow-body\r\nContent-Type: "
                "application/octet-stream\r\nContent-Length: %d\r\n\r\n" % (host_hdr,
                                                                            a.body_size))
        c.body_left = a.body_size
    s.sendall(head.encode())
    c.bytes_out += len(head)
    s.setblocking(False)
    c.sock = s
    c.state = "open"
    if c.kind == "body":
        c.ready_at = time.monotonic()


def step(c, a, chunk):
    """One turn of connection |c|: read BYTES (a reader; a trickler only looks for an early
    answer), or send BYTES of body (a trickler)."""
    if c.state != "open":
        return
    try:
        data = c.sock.recv(a.bytes if c.kind == "read" else 4096)
        if data == b"":
            close(c, "closed")
            return
        if c.bytes_in == 0:
            c.ready_at = c.ready_at or time.monotonic()
            parts = data.split(b" ", 2)
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
                c.status = int(parts[1])
            else:
                c.status = -1
        c.bytes_in += len(data)
    except BlockingIOError:
        pass
    except OSError as e:
        close(c, "reset" if e.errno in (errno.ECONNRESET, errno.EPIPE) else "error", e)
        return
    if c.kind == "body" and c.body_left > 0:
        n = min(a.bytes, c.body_left)
        try:
            sent = c.sock.send(chunk[:n])
            c.body_left -= sent
            c.bytes_out += sent
        except BlockingIOError:
            pass
        except OSError as e:
            close(c, "reset" if e.errno in (errno.ECONNRESET, errno.EPIPE) else "error", e)


def close(c, state, exc=None):
    c.state = state
    if exc is not None:
        c.why = "%s: %s" % (type(exc).__name__, exc)
    try:
        c.sock.close()
    except OSError:
        pass


def summary(conns, t0, extra):
    by_state, statuses, why = {}, {}, {}
    for c in conns:
        key = "%s_%s" % (c.kind, c.state)
        by_state[key] = by_state.get(key, 0) + 1
        if c.status is not None:
            statuses[str(c.status)] = statuses.get(str(c.status), 0) + 1
        if c.why:
            why[c.why] = why.get(c.why, 0) + 1
    out = {"n": len(conns), "open": sum(1 for c in conns if c.state == "open"),
           "ready": sum(1 for c in conns if c.ready_at is not None),
           "by_state": by_state, "statuses": statuses,
           "errors": dict(sorted(why.items(), key=lambda kv: -kv[1])[:5]),
           "bytes_in": sum(c.bytes_in for c in conns),
           "bytes_out": sum(c.bytes_out for c in conns),
           "seconds": round(time.monotonic() - t0, 2)}
    out.update(extra)
    return out


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--kind", choices=("mix", "read", "body"), default="mix")
    ap.add_argument("--path", default="/big")
    ap.add_argument("--bytes", type=int, default=64, help="bytes per turn (64)")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between turns (0.1)")
    ap.add_argument("--rcvbuf", type=int, default=16384, help="readers' SO_RCVBUF (16384)")
    ap.add_argument("--body-size", type=int, default=262144, help="tricklers' Content-Length")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("--max-seconds", type=float, default=900.0)
    a = ap.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 64
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    parent = os.getppid()

    host_hdr = "127.0.0.1:%d" % a.port
    chunk = b"x" * max(1, a.bytes)
    kinds = {"mix": ("read", "body"), "read": ("read",), "body": ("body",)}[a.kind]
    conns = [Slow(i, kinds[i % len(kinds)]) for i in range(a.n)]
    t0 = time.monotonic()
    connect_errors = {}
    for c in conns:  # one by one: never more than one SYN ahead of the gateway's accept
        if _stop:
            break
        try:
            connect(c, a, host_hdr)
        except OSError as e:
            c.state = "error"
            c.why = "connect: %s: %s" % (type(e).__name__, e)
            connect_errors[c.why] = connect_errors.get(c.why, 0) + 1
    connected = sum(1 for c in conns if c.state == "open")
    if connected == 0:
        emit({"event": "ready", "all": False, "connected": 0, "errors": connect_errors})
        emit(dict(summary(conns, t0, {}), event="done"))
        return 2

    slots = max(1, int(round(a.interval / 0.01)))  # 10 ms turns
    tick = a.interval / slots
    announced = False
    deadline_ready = t0 + a.ready_timeout
    k = 0
    t_tick = time.monotonic()
    while not _stop:
        for c in conns[k % slots::slots]:
            step(c, a, chunk)
        k += 1
        now = time.monotonic()
        if not announced:
            ready = sum(1 for c in conns if c.ready_at is not None)
            if ready == connected or now > deadline_ready:
                announced = True
                emit(summary(conns, t0, {"event": "ready", "all": ready == a.n,
                                          "connected": connected,
                                          "connect_errors": connect_errors}))
        if now - t0 > a.max_seconds or os.getppid() != parent:
            break
        t_tick += tick
        if t_tick > now:
            time.sleep(t_tick - now)
        else:
            t_tick = now  # behind: do not try to catch up in a burst
    emit(summary(conns, t0, {"event": "done", "connected": connected,
                             "connect_errors": connect_errors}))
    for c in conns:
        if c.state == "open":
            close(c, "open")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
