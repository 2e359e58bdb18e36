# SPDX-License-Identifier: MIT
"""Helpers for the gatehouse.wsgi tests: start a server, speak uwsgi to it, read responses.

Every wait here is bounded; a server is stopped by its own PID."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from gatehouse.protocol import encode_request

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
ADAPTERS = os.path.abspath(os.path.join(HERE, "..", "..", "adapters", "python"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_vars(method="GET", path="/", query="", headers=(), body=b"", script_name="",
              scheme="http", remote=("127.0.0.1", "50123"), server=("app.example", "8080"),
              content_type=None, uri=None):
    """The vars a gateway sends for one request (what gatehouse's uwsgi encoder sends)."""
    if uri is None:
        uri = script_name + path + ("?" + query if query else "")
    v = [
        ("REQUEST_METHOD", method),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("SCRIPT_NAME", script_name),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", server[0]),
        ("SERVER_PORT", str(server[1])),
        ("REMOTE_ADDR", remote[0]),
        ("REMOTE_PORT", str(remote[1])),
        ("REQUEST_SCHEME", scheme),
    ]
    if scheme == "https":
        v.append(("HTTPS", "on"))
    if content_type is not None:
        v.append(("CONTENT_TYPE", content_type))
    if body or method in ("POST", "PUT", "PATCH"):
        v.append(("CONTENT_LENGTH", str(len(body))))
    for name, value in headers:
        v.append(("HTTP_" + name.upper().replace("-", "_"), value))
    return v


class Response:
    def __init__(self, raw, reset=False):
        self.raw = raw
        self.reset = reset  # the connection ended with ECONNRESET
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        self.complete_head = bool(sep)
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0] if lines else ""
        parts = self.status_line.split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.headers = [tuple(x.split(": ", 1)) for x in lines[1:] if x] if sep else []

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[-1] if vals else None

    def json(self):
        return json.loads(self.body)


def connect(addr, timeout=10):
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


def read_all(s):
    """Everything until the peer closes; (bytes, reset?)."""
    chunks = []
    reset = False
    while True:
        try:
            data = s.recv(1 << 20)
        except ConnectionResetError:
            reset = True
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks), reset


def request(addr, vars, body=b"", timeout=10, packet=None):
    """One uwsgi request; the whole response (delimited by the close)."""
    with connect(addr, timeout) as s:
        s.sendall((packet if packet is not None else encode_request(vars)) + body)
        raw, reset = read_all(s)
    return Response(raw, reset)


def get(addr, path, query="", **kw):
    body = kw.pop("body", b"")
    timeout = kw.pop("timeout", 10)
    return request(addr, make_vars(path=path, query=query, body=body, **kw), body, timeout)


class Server:
    """One `python3 -m gatehouse.wsgi` process (cwd tests/python/apps), stderr in a file."""

    def __init__(self, tmpdir, app, workers, args, tcp=False, n=0):
        if tcp:
            port = free_port()
            self.addr = ("127.0.0.1", port)
            bind = "127.0.0.1:%d" % port
        else:
            self.addr = os.path.join(tmpdir, "s%d.sock" % n)
            bind = "unix:" + self.addr
        self.errpath = os.path.join(tmpdir, "server%d.err" % n)
        env = dict(os.environ, PYTHONPATH=ADAPTERS, PYTHONUNBUFFERED="1")
        with open(self.errpath, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gatehouse.wsgi", app, "--bind", bind,
                 "--workers", str(workers)] + args,
                cwd=APPS, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        self.workers = workers
        self.wait_log(r"worker booted", workers)

    def log(self):
        with open(self.errpath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, count=1, timeout=10.0):
        """Waits until |pattern| occurs |count| times in stderr; returns the matches."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError("%r not seen %d times within %gs; stderr:\n%s"
                                     % (pattern, count, timeout, self.log()))
            if self.proc.poll() is not None:
                raise AssertionError("server exited %s; stderr:\n%s"
                                     % (self.proc.returncode, self.log()))
            time.sleep(0.02)

    def booted_pids(self):
        return [int(p) for p in re.findall(r"\[gatehouse\.wsgi pid (\d+)\] worker booted",
                                           self.log())]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return "not stopped within %ss" % timeout
