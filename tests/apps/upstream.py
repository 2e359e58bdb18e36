#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A small threaded HTTP/1.1 upstream for the integration tests (standard library only).

    /usr/bin/python3 tests/apps/upstream.py --port N [--host 127.0.0.1] [--name NAME]

Prints "ready" on stdout once it listens. Every response carries `X-Upstream-Name: NAME`.
Every endpoint reads the whole request body first (Content-Length or chunked) unless said
otherwise, so keep-alive connections stay in step.

  /echo              JSON: name, method, path, version, headers (list of [name, value] as
                     received), trailers, body_len, body_sha256, peer (the connection's
                     client address), conn_requests (requests served on this connection)
  /status/N          status N with a short body (none for 204 and 304)
  /slow?ms=N         sleeps N ms before the head, then JSON {name, path}
  /slowbody?ms=N&n=B head with Content-Length B (default 1000), half the body, sleeps N ms,
                     the rest
  /bytes?n=N         N bytes of PATTERN with Content-Length, written 256 KiB at a time
  /chunked?n=N[&chunk=C][&trailer=1]
                     N bytes of PATTERN chunked (chunks of C bytes, default 16384), with
                     `Trailer: X-Checksum` and a trailer `X-Checksum: <sha256>` when trailer=1
  /sink[?pause_ms=N] reads the body as it streams (after an optional pause) and answers JSON
                     {name, bytes, sha256}
  /close             reads the request, then closes the connection without a response
  /garbage           reads the request, answers bytes that are not HTTP and closes
  /name              the server's --name as text/plain
  /hop               a response with hop-by-hop fields (Connection: X-Secret, X-Secret,
                     Keep-Alive, Proxy-Connection) and an end-to-end field X-End: 1
  /kill-keepalive[?name=NAME][&mode=now|next]
                     answers 200 normally (no "Connection: close"); then, on servers whose
                     name matches (all when name= is absent): mode=now (default) closes the
                     connection right after the response; mode=next keeps it open and drops
                     the next request received on it without answering (a stale keep-alive
                     connection as the proxy sees it, deterministically)
  /stats             JSON counters: connections, requests, closes (/close hits), killed
                     (requests dropped by mode=next), body_bytes (request body bytes read so
                     far, updated as they stream in)
  anything else      answered like /echo (the routing tests look at the path that arrived)

PATTERN is bytes(range(256)) repeated; byte i of a body is i % 256.
"""

import argparse
import hashlib
import http.server
import json
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

PATTERN = bytes(range(256))
BLOCK = PATTERN * 1024  # 256 KiB, a whole number of patterns
_BLOCK_PLUS = memoryview(PATTERN * 1025)  # any 256 KiB window starting at offset 0..255
MAX_LINE = 65536


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {"connections": 0, "requests": 0, "closes": 0, "killed": 0,
                       "body_bytes": 0, "events_gone": 0}

    def add(self, key, n=1):
        with self.lock:
            self.values[key] += n

    def snapshot(self):
        with self.lock:
            return dict(self.values)


class BadRequest(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "upstream/1"

    def version_string(self):
        return self.server_version

    # --- connection lifetime -------------------------------------------------------------

    def setup(self):
        super().setup()
        self.conn_requests = 0
        self.doomed = False
        self.server.counters.add("connections")
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, socket.timeout, BrokenPipeError):
            self.close_connection = True

    # --- request body --------------------------------------------------------------------

    def read_body(self):
        """Reads the whole request body as it streams in (counted in the "body_bytes" stat).
        Returns (length, sha256 hex, trailers)."""
        h = hashlib.sha256()
        total = 0
        trailers = []
        te = self.headers.get_all("Transfer-Encoding") or []
        cl = self.headers.get("Content-Length")
        buf = bytearray(262144)
        view = memoryview(buf)
        if te and "chunked" in ",".join(te).lower():
            while True:
                line = self.rfile.readline(MAX_LINE)
                if not line.endswith(b"\n"):
                    raise BadRequest("chunk size line")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                left = size
                while left:
                    n = self.rfile.readinto(view[: min(left, len(buf))])
                    if not n:
                        raise BadRequest("eof in chunk")
                    h.update(view[:n])
                    self.server.counters.add("body_bytes", n)
                    total += n
                    left -= n
                if self.rfile.readline(MAX_LINE) not in (b"\r\n", b"\n"):
                    raise BadRequest("chunk not followed by CRLF")
            while True:
                line = self.rfile.readline(MAX_LINE)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
                trailers.append([name, value.strip()])
        elif cl is not None:
            left = int(cl)
            while left:
                n = self.rfile.readinto(view[: min(left, len(buf))])
                if not n:
                    raise BadRequest("eof in body")
                h.update(view[:n])
                self.server.counters.add("body_bytes", n)
                total += n
                left -= n
        return total, h.hexdigest(), trailers

    # --- responses -----------------------------------------------------------------------

    def start(self, status, headers=(), reason=None):
        self.send_response(status, reason)
        self.send_header("X-Upstream-Name", self.server.name)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def send_body(self, status, body, ctype="text/plain", headers=()):
        if isinstance(body, str):
            body = body.encode()
        hdrs = [("Content-Type", ctype)]
        if status not in (204, 304):
            hdrs.append(("Content-Length", str(len(body))))
        self.start(status, list(hdrs) + list(headers))
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def send_json(self, obj, status=200):
        self.send_body(status, json.dumps(obj) + "\n", "application/json")

    def write_pattern(self, n, chunked=False, chunk=262144, offset=0):
        """Writes |n| bytes of PATTERN starting at body offset |offset|, in pieces of at most
        |chunk| bytes (each a chunk when |chunked|)."""
        chunk = min(chunk, len(BLOCK))
        left = n
        off = offset % 256
        while left:
            k = min(left, chunk)
            piece = _BLOCK_PLUS[off:off + k]
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (k, piece))
            else:
                self.wfile.write(piece)
            left -= k
            off = (off + k) % 256

    # --- dispatch ------------------------------------------------------------------------

    def handle_any(self):
        self.conn_requests += 1
        self.server.counters.add("requests")
        if self.doomed:
            self.server.counters.add("killed")
            self.close_connection = True
            return
        url = urlsplit(self.path)
        path = url.path
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self.route(path, q)
        except BadRequest as e:
            self.close_connection = True
            try:
                self.send_body(400, "bad request: %s\n" % e, headers=[("Connection", "close")])
            except OSError:
                pass
        except (ValueError, KeyError) as e:
            self.close_connection = True
            self.send_body(400, "bad parameter: %s\n" % e, headers=[("Connection", "close")])

    def route(self, path, q):
        name = self.server.name
        if path == "/sink":
            pause = int(q.get("pause_ms", 0))
            if pause:
                time.sleep(pause / 1000)
            n, digest, _ = self.read_body()
            self.send_json({"name": name, "bytes": n, "sha256": digest})
            return

        n, digest, trailers = self.read_body()

        if path == "/echo" or (path not in ENDPOINTS and not path.startswith("/status/")):
            self.send_json({
                "name": name,
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.raw_items()],
                "trailers": trailers,
                "body_len": n,
                "body_sha256": digest,
                "peer": "%s:%d" % self.client_address[:2],
                "conn_requests": self.conn_requests,
            })
        elif path.startswith("/status/"):
            status = int(path[len("/status/"):])
            if not 200 <= status <= 999:
                raise ValueError("status")
            self.send_body(status, "status %d from %s\n" % (status, name))
        elif path == "/slow":
            time.sleep(int(q.get("ms", 1000)) / 1000)
            self.send_json({"name": name, "path": self.path})
        elif path == "/slowbody":
            total = int(q.get("n", 1000))
            self.start(200, [("Content-Type", "application/octet-stream"),
                             ("Content-Length", str(total))])
            first = total // 2
            self.write_pattern(first)
            self.wfile.flush()
            time.sleep(int(q.get("ms", 1000)) / 1000)
            self.write_pattern(total - first, offset=first)
        elif path == "/bytes":
            total = int(q["n"])
            self.start(200, [("Content-Type", "application/octet-stream"),
                             ("Content-Length", str(total))])
            if self.command != "HEAD":
                self.write_pattern(total)
        elif path == "/chunked":
            total = int(q.get("n", 100000))
            chunk = max(1, int(q.get("chunk", 16384)))
            trailer = q.get("trailer") == "1"
            hdrs = [("Content-Type", "application/octet-stream"),
                    ("Transfer-Encoding", "chunked")]
            if trailer:
                hdrs.append(("Trailer", "X-Checksum"))
            self.start(200, hdrs)
            if self.command == "HEAD":
                return
            self.write_pattern(total, chunked=True, chunk=chunk)
            if trailer:
                self.wfile.write(b"0\r\nX-Checksum: %s\r\n\r\n"
                                 % pattern_sha256(total).encode())
            else:
                self.wfile.write(b"0\r\n\r\n")
        elif path == "/events":
            # Server-Sent Events: ?n= events ?ms= apart, chunked, the head after ?head_ms=; a
            # client gone is counted.
            time.sleep(int(q.get("head_ms", 0)) / 1000)
            self.start(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                             ("Transfer-Encoding", "chunked")])
            try:
                for i in range(int(q.get("n", 3))):
                    if i:
                        time.sleep(int(q.get("ms", 1000)) / 1000)
                    ev = b"data: event %d\n\n" % i
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.server.counters.add("events_gone")
                self.close_connection = True
        elif path == "/close":
            self.server.counters.add("closes")
            self.close_connection = True
        elif path == "/garbage":
            self.close_connection = True
            self.wfile.write(b"this is not HTTP at all\r\n\x00\x01\x02 garbage\r\n\r\n")
        elif path == "/name":
            self.send_body(200, name)
        elif path == "/hop":
            self.send_body(200, "hop\n", headers=[
                ("Connection", "X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"), ("X-End", "1")])
        elif path == "/kill-keepalive":
            self.send_body(200, name)
            if q.get("name") in (None, name):
                if q.get("mode", "now") == "next":
                    self.doomed = True
                else:
                    self.close_connection = True
        elif path == "/stats":
            self.send_json(self.server.counters.snapshot())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = handle_any
    do_TRACE = handle_any


ENDPOINTS = {"/echo", "/slow", "/slowbody", "/bytes", "/chunked", "/events", "/sink", "/close",
             "/garbage", "/name", "/hop", "/kill-keepalive", "/stats"}
_sha_cache = {}


def pattern_sha256(n):
    if n not in _sha_cache:
        h = hashlib.sha256()
        left = n
        while left:
            k = min(left, len(BLOCK))
            h.update(BLOCK[:k])
            left -= k
        _sha_cache[n] = h.hexdigest()
    return _sha_cache[n]


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, name, verbose, family):
        self.address_family = family
        self.name = name
        self.verbose = verbose
        self.counters = Counters()
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="upstream")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    srv = Server((args.host, args.port), args.name, args.verbose, family)
    print("ready", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
