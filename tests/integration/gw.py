# SPDX-License-Identifier: MIT
"""Helpers for the integration tests: processes (the gateway, test upstreams), configuration
files, a strict raw-socket HTTP/1.1 client, logs and RSS. Imported by conftest.py and tests.

Every wait here is bounded in count and time; every process is stopped by its PID."""

import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GATEHOUSE_BIN = Path(os.environ.get("GATEHOUSE_BIN", REPO / "build" / "gatehouse"))
UPSTREAM_PY = REPO / "tests" / "apps" / "upstream.py"
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
if not os.path.exists(PYTHON):
    PYTHON = sys.executable

DEFAULT_TIMEOUT = 10.0

# ----------------------------------------------------------------------------------------
# Ports, body pattern, small utilities
# ----------------------------------------------------------------------------------------

_used_ports = set()


def free_port(host="127.0.0.1"):
    """A TCP port that nothing listens on right now (and that this run has not handed out)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


PATTERN = bytes(range(256))
_BLOCK = PATTERN * 4096  # 1 MiB
_sha_cache = {}


def pattern_bytes(n, offset=0):
    """|n| bytes of the upstream's body pattern (byte i is i % 256) from body offset |offset|."""
    reps = (n + offset % 256) // 256 + 1
    off = offset % 256
    return (PATTERN * reps)[off:off + n]


def pattern_sha256(n):
    if n not in _sha_cache:
        h = hashlib.sha256()
        left = n
        while left:
            k = min(left, len(_BLOCK))
            h.update(memoryview(_BLOCK)[:k])
            left -= k
        _sha_cache[n] = h.hexdigest()
    return _sha_cache[n]


def wait_until(pred, timeout=3.0, interval=0.05, what="condition"):
    """Polls |pred| until it returns a truthy value; returns it, or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_listening(proc, port, what, timeout=15):
    """Waits until something accepts on 127.0.0.1:|port| or |proc| (a Popen) exits."""
    def up():
        if proc.poll() is not None:
            return True
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_until(up, timeout=timeout, what=what)


def parse_duration_s(s, default):
    if s is None:
        return default
    if isinstance(s, (int, float)):
        return float(s)
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(s).strip())
    if not m:
        return default
    n = int(m.group(1))
    return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def rss_kb(pid):
    """VmRSS of |pid| in kB (0 when the process is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class RssSampler:
    """Samples a process's VmRSS in a background thread (every |interval| s) until stop()."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            v = rss_kb(self.pid)
            if v:
                self.samples.append(v)
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self

    @property
    def max_kb(self):
        return max(self.samples) if self.samples else 0


# ----------------------------------------------------------------------------------------
# Configuration: a tiny YAML writer (no PyYAML needed)
# ----------------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_/][A-Za-z0-9_./-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _RESERVED:
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def _emit(obj, ind, out):
    pad = " " * ind
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _scalar(k)
            if isinstance(v, dict) and v:
                out.append("%s%s:" % (pad, key))
                _emit(v, ind + 2, out)
            elif isinstance(v, list) and v:
                out.append("%s%s:" % (pad, key))
                _emit(v, ind + 2, out)
            elif isinstance(v, dict):
                out.append("%s%s: {}" % (pad, key))
            elif isinstance(v, list):
                out.append("%s%s: []" % (pad, key))
            else:
                out.append("%s%s: %s" % (pad, key, _scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = []
                _emit(item, ind + 2, sub)
                sub[0] = pad + "- " + sub[0][ind + 2:]
                out.extend(sub)
            else:
                out.append("%s- %s" % (pad, _scalar(item) if not isinstance(item, (dict, list))
                                       else ("{}" if isinstance(item, dict) else "[]")))
    else:
        out.append(pad + _scalar(obj))


def to_yaml(obj):
    out = []
    _emit(obj, 0, out)
    return "\n".join(out) + "\n"


def deep_merge(base, over):
    """Merges |over| into |base| (in place): dicts recursively, anything else replaced; a None
    value deletes the key. Returns |base|."""
    for k, v in over.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def upstream_conf(servers, **over):
    u = {
        "protocol": "http",
        "servers": list(servers),
        "balance": "round_robin",
        "timeouts": {"connect": "2s", "first_byte": "20s", "read": "20s", "send": "20s"},
        "keepalive": {"connections": 32, "timeout": "60s", "requests": 1000},
        "retries": 1,
        "health": {"fails": 3, "cooldown": "10s"},
    }
    return deep_merge(u, over)


def make_config(port, upstreams, routes=None, **overrides):
    """A complete gateway configuration listening on 127.0.0.1:|port|.

    |upstreams|: a list of "host:port" (one upstream named "web"), or a dict name -> list of
    servers or name -> upstream dict. |routes| defaults to "/" -> the first upstream.
    |overrides| are deep-merged into the result (a None value removes a key)."""
    if isinstance(upstreams, (list, tuple)):
        upstreams = {"web": list(upstreams)}
    ups = {}
    for name, u in upstreams.items():
        ups[name] = upstream_conf(u) if isinstance(u, (list, tuple)) else u
    if routes is None:
        routes = [{"match": {"path": "/"}, "upstream": next(iter(ups))}]
    cfg = {
        "workers": 2,
        "listen": [{"address": "127.0.0.1:%d" % port}],
        "limits": {"header_bytes": "16k", "headers": 100, "target_bytes": "8k",
                   "body_bytes": "10m"},
        "timeouts": {"header": "10s", "body": "30s", "idle": "60s", "send": "60s"},
        "shutdown": {"delay": "0s", "timeout": "10s"},
        "trusted_proxies": ["10.0.0.0/8"],
        "log": {"access": "json", "level": "info", "access_buffer": "64k",
                "access_flush": "100ms"},
        "upstreams": ups,
        "routes": routes,
    }
    return deep_merge(cfg, overrides)


# ----------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------

def _stop_process(proc, timeout):
    """SIGTERM |proc| by PID, wait up to |timeout| s, then SIGKILL. Returns (rc, killed)."""
    if proc.poll() is not None:
        return proc.returncode, False
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10), True


class Upstream:
    """One tests/apps/upstream.py process."""

    def __init__(self, workdir, name, port=None, host="127.0.0.1"):
        self.workdir = Path(workdir)
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self.proc = None

    @property
    def addr(self):
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)

    def start(self, timeout=10.0):
        out = self.workdir / ("upstream-%s.out" % self.name)
        err = self.workdir / ("upstream-%s.err" % self.name)
        with open(out, "wb") as fo, open(err, "ab") as fe:
            self.proc = subprocess.Popen(
                [PYTHON, str(UPSTREAM_PY), "--port", str(self.port), "--name", self.name,
                 "--host", self.host],
                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ready" in out.read_bytes():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("upstream %s did not start: %s" % (self.name, err.read_text()))

    def stop(self):
        if self.proc is not None:
            _stop_process(self.proc, 5)

    def restart(self):
        self.stop()
        return self.start()

    def get(self, path, timeout=5.0):
        """A direct request to the upstream (not through the gateway)."""
        c = Conn(self.port, host=self.host, timeout=timeout)
        try:
            return c.request("GET", path, host="upstream")
        finally:
            c.close()

    def stats(self):
        return self.get("/stats").json()


SANITIZER_RE = re.compile(r"Sanitizer|runtime error")


class Gateway:
    """One gatehouse process with its configuration file and captured stdout/stderr."""

    def __init__(self, workdir, config, port, name="gw"):
        self.workdir = Path(workdir)
        self.port = port
        self.name = name
        self.config_path = self.workdir / ("%s.yaml" % name)
        self.stdout_path = self.workdir / ("%s.stdout" % name)
        self.stderr_path = self.workdir / ("%s.stderr" % name)
        self.proc = None
        self.config = None
        self.start_failed = False  # reported by the test already: teardown stays quiet
        self.write_config(config)

    # -- configuration --

    def write_config(self, config):
        """Writes |config| (a dict or YAML text) to the gateway's file, atomically."""
        self.config = config
        text = config if isinstance(config, str) else to_yaml(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def make_config(self, upstreams, routes=None, **overrides):
        return make_config(self.port, upstreams, routes, **overrides)

    @property
    def shutdown_timeout(self):
        if isinstance(self.config, dict):
            return parse_duration_s(self.config.get("shutdown", {}).get("timeout"), 30.0)
        return 30.0

    # -- process --

    @property
    def pid(self):
        return self.proc.pid

    def start(self, wait=True, timeout=10.0):
        if not GATEHOUSE_BIN.exists():
            raise AssertionError("gateway binary %s does not exist (set GATEHOUSE_BIN or run "
                                 "make)" % GATEHOUSE_BIN)
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        # In a sanitizer build, ASan keeps freed memory in a quarantine (256 MB by default),
        # which would read as RSS growth in the streaming tests: keep it small.
        asan = env.get("ASAN_OPTIONS", "")
        if "quarantine_size_mb" not in asan:
            env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "quarantine_size_mb=8"
        with open(self.stdout_path, "ab") as fo, open(self.stderr_path, "ab") as fe:
            self.proc = subprocess.Popen([str(GATEHOUSE_BIN), "-c", str(self.config_path)],
                                         stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                         cwd=str(self.workdir), env=env)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.start_failed = True
                raise AssertionError("gateway exited with %s at start; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_text()[-4000:]))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.start_failed = True
        raise AssertionError("gateway did not accept on port %d within %.0fs; stderr:\n%s"
                             % (self.port, timeout, self.stderr_text()[-4000:]))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, config):
        self.write_config(config)
        self.signal(signal.SIGHUP)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("gateway did not exit within %.1fs" % timeout)

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def finish(self):
        """Stops the gateway (if running) and returns a list of problems: a non-zero exit, a
        hang, sanitizer reports."""
        problems = []
        if self.proc is None:
            return problems
        rc, killed = _stop_process(self.proc, self.shutdown_timeout + 5)
        if killed:
            problems.append("gateway %s did not exit within %.0fs of SIGTERM (killed)"
                            % (self.name, self.shutdown_timeout + 5))
        elif rc != 0 and not self.start_failed:
            problems.append("gateway %s exited with status %s" % (self.name, rc))
        bad = [l for l in self.stderr_text().splitlines() if SANITIZER_RE.search(l)]
        if bad:
            problems.append("gateway %s stderr has sanitizer reports:\n%s"
                            % (self.name, "\n".join(bad[:20])))
        if problems:
            problems.append("stderr tail:\n" + self.stderr_text()[-3000:])
        return problems

    # -- logs --

    def stderr_text(self):
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_size(self):
        try:
            return self.stderr_path.stat().st_size
        except FileNotFoundError:
            return 0

    def stderr_since(self, pos):
        with open(self.stderr_path, "rb") as f:
            f.seek(pos)
            return f.read().decode("utf-8", "replace")

    def wait_stderr(self, pattern, since=0, timeout=3.0):
        """Waits for a regex |pattern| in stderr written after byte offset |since|. Returns the
        match."""
        rx = re.compile(pattern, re.M)
        return wait_until(lambda: rx.search(self.stderr_since(since)), timeout,
                          what="stderr line matching %r; stderr since:\n%s"
                          % (pattern, self.stderr_since(since)[-2000:]))

    def access_lines(self):
        """Complete stdout lines (the access log)."""
        try:
            data = self.stdout_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        lines = data.split("\n")
        return [l for l in lines[:-1] if l.strip()]

    def access_log(self):
        """The access log, parsed. Raises AssertionError on a line that is not a JSON object."""
        out = []
        for l in self.access_lines():
            try:
                obj = json.loads(l)
            except ValueError:
                raise AssertionError("access-log line is not JSON: %r" % l)
            if not isinstance(obj, dict):
                raise AssertionError("access-log line is not a JSON object: %r" % l)
            out.append(obj)
        return out

    def wait_access(self, pred, count=1, timeout=3.0):
        """Waits until at least |count| access-log entries satisfy |pred|; returns them."""
        def found():
            m = [e for e in self.access_log() if pred(e)]
            return m if len(m) >= count else None
        return wait_until(found, timeout, what="%d access-log line(s); log:\n%s"
                          % (count, "\n".join(self.access_lines()[-20:])))

    def access_for(self, target, count=1, timeout=3.0):
        return self.wait_access(lambda e: e.get("target") == target, count, timeout)


class Harness:
    """Starts upstreams and gateways in |workdir| and stops them all in close()."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.upstreams = []
        self.gateways = []

    def upstream(self, name="A", port=None, host="127.0.0.1"):
        u = Upstream(self.workdir, name, port, host).start()
        self.upstreams.append(u)
        return u

    def gateway(self, upstreams=None, routes=None, config=None, port=None, wait=True,
                name=None, **overrides):
        """Starts a gateway. Either |config| (a dict or YAML text, whose listen port must be
        |port|) or |upstreams| (+ |routes|, |overrides|: see make_config())."""
        port = port or free_port()
        name = name or "gw%d" % (len(self.gateways) + 1)
        if config is None:
            config = make_config(port, upstreams, routes, **overrides)
        g = Gateway(self.workdir, config, port, name)
        self.gateways.append(g)
        g.start(wait=wait)
        return g

    def close(self):
        problems = []
        for g in self.gateways:
            problems += g.finish()
        for u in self.upstreams:
            u.stop()
        return problems


# ----------------------------------------------------------------------------------------
# A strict raw HTTP/1.1 client
# ----------------------------------------------------------------------------------------

class ProtocolError(AssertionError):
    pass


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []      # [(name, value)] as received
        self.body = b""
        self.trailers = []
        self.interim = []      # 1xx responses before this one
        self.raw_head = b""
        self.wire_bytes = 0    # head + body bytes as framed on the wire
        self.framing = None    # "length", "chunked", "close" or "none"

    def header(self, name):
        """The first value of |name| (case-insensitive), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has_token(self, name, token):
        vals = ",".join(self.header_all(name))
        return token.lower() in [t.strip().lower() for t in vals.split(",")]

    @property
    def conn_close(self):
        return self.has_token("Connection", "close")

    def json(self):
        return json.loads(self.body)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %s %s %r %r>" % (self.status, self.reason, self.headers,
                                           self.body[:200])


def build_request(method, target, headers=None, body=None, host="app.test",
                  version="HTTP/1.1"):
    """Request bytes. |headers|: list of (name, value) or dict. Adds Host (unless None) and
    Content-Length for a body (unless the headers frame it already)."""
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, target, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs)
    head += "\r\n"
    return head.encode("latin-1") + (body or b"")


def chunked(pieces, trailers=()):
    """Chunked encoding of the byte strings |pieces| (+ trailer fields)."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    out += b"0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in trailers)
    return out + b"\r\n"


class Conn:
    """A client connection with a read buffer. All reads are bounded by a timeout."""

    def __init__(self, port=None, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, sock=None):
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
            except OSError:
                sock.close()
                raise
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.sent = 0
        self.received = 0
        self._rb = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    @property
    def local_addr(self):
        return self.sock.getsockname()[:2]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)
        self.sent += len(data)

    def _fill(self, deadline, size=65536):
        """Reads more into the buffer. Returns False at EOF (or reset); raises TimeoutError."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("read timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(size)
        except socket.timeout:
            raise TimeoutError("read timed out")
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.received += len(data)
        self.buf += data
        return True

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _read_line(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if len(self.buf) > limit:
                raise ProtocolError("line too long")
            if not self._fill(deadline):
                raise ProtocolError("connection closed in a line; got %r" % bytes(self.buf))

    def _read_exact(self, n, deadline, sink=None):
        got = 0
        if sink is None:
            while len(self.buf) < n:
                if not self._fill(deadline, max(65536, min(n - len(self.buf), 1 << 20))):
                    raise ProtocolError("connection closed in a body (%d of %d bytes)"
                                        % (len(self.buf), n))
            return self._take(n)
        if self.buf:
            got = min(n, len(self.buf))
            sink(self._take(got))
        if self._rb is None:
            self._rb = memoryview(bytearray(1 << 20))
        mv = self._rb
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("read timed out (%d of %d body bytes)" % (got, n))
            self.sock.settimeout(left)
            try:
                m = self.sock.recv_into(mv[:min(n - got, len(mv))])
            except socket.timeout:
                raise TimeoutError("read timed out (%d of %d body bytes)" % (got, n))
            except ConnectionResetError:
                m = 0
            if not m:
                self.eof = True
                raise ProtocolError("connection closed in a body (%d of %d bytes)" % (got, n))
            self.received += m
            sink(mv[:m])
            got += m
        return b""

    def read_head(self, timeout=None, deadline=None):
        """Reads one response head (1xx included) without its body."""
        deadline = deadline or time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > (1 << 20):
                raise ProtocolError("response head too long")
            if not self._fill(deadline):
                if not self.buf:
                    raise ConnectionClosed("connection closed before a response")
                raise ProtocolError("connection closed in a response head: %r" % bytes(self.buf))
        i = self.buf.find(b"\r\n\r\n")
        head = self._take(i + 4)
        r = Response()
        r.raw_head = head
        lines = head[:-4].split(b"\r\n")
        m = re.fullmatch(rb"(HTTP/1\.[01]) (\d{3})(?: (.*))?", lines[0])
        if not m:
            raise ProtocolError("bad status line %r" % lines[0])
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if not sep or not k or k != k.strip():
                raise ProtocolError("bad header line %r" % line)
            r.headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        r.wire_bytes = len(head)
        return r

    def read_body(self, r, head_request=False, timeout=None, sink=None, deadline=None):
        """Reads the body of response head |r| into r.body (or into |sink| piece by piece)."""
        deadline = deadline or time.monotonic() + (timeout or self.timeout)
        before = self.received - len(self.buf)
        te = ",".join(r.header_all("Transfer-Encoding")).lower()
        cls = r.header_all("Content-Length")
        if head_request or 100 <= r.status < 200 or r.status in (204, 304):
            r.framing = "none"
        elif te:
            if te.split(",")[-1].strip() != "chunked":
                raise ProtocolError("response transfer-encoding %r" % te)
            if cls:
                raise ProtocolError("response with both Content-Length and Transfer-Encoding")
            r.framing = "chunked"
            parts = []
            while True:
                line = self._read_line(deadline)
                size_s = line.split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size_s):
                    raise ProtocolError("bad chunk size line %r" % line)
                size = int(size_s, 16)
                if size == 0:
                    break
                data = self._read_exact(size, deadline, sink)
                if sink is None:
                    parts.append(data)
                if self._read_line(deadline) != b"":
                    raise ProtocolError("chunk data not followed by CRLF")
            while True:
                line = self._read_line(deadline)
                if line == b"":
                    break
                k, _, v = line.partition(b":")
                r.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
            r.body = b"".join(parts)
        elif cls:
            if len(set(cls)) != 1 or not re.fullmatch(r"\d+", cls[0]):
                raise ProtocolError("bad response Content-Length %r" % cls)
            r.framing = "length"
            r.body = self._read_exact(int(cls[0]), deadline, sink)
        else:
            r.framing = "close"
            while self._fill(deadline, 1 << 20):
                if sink is not None:
                    sink(self._take(len(self.buf)))
            if sink is None:
                r.body = self._take(len(self.buf))
        r.wire_bytes += (self.received - len(self.buf)) - before
        return r

    def read_response(self, head_request=False, timeout=None, sink=None, interim=False):
        """Reads one complete response. 1xx responses are collected in .interim and skipped,
        unless |interim| is True: then the first response is returned whatever its status."""
        deadline = time.monotonic() + (timeout or self.timeout)
        early = []
        while True:
            r = self.read_head(deadline=deadline)
            if 100 <= r.status < 200 and r.status != 101 and not interim:
                early.append(r)
                continue
            r.interim = early
            return self.read_body(r, head_request, sink=sink, deadline=deadline)

    def request(self, method, target, headers=None, body=None, host="app.test",
                version="HTTP/1.1", timeout=None):
        self.send(build_request(method, target, headers, body, host, version))
        return self.read_response(head_request=(method == "HEAD"), timeout=timeout)

    def read_until_close(self, timeout=None):
        """Everything until EOF (or reset). Raises TimeoutError if the peer keeps it open."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline, 1 << 20):
            pass
        return self._take(len(self.buf))

    def wait_closed(self, timeout=3.0):
        """Asserts the peer closes (EOF or reset) within |timeout| s; returns unread bytes."""
        try:
            return self.read_until_close(timeout)
        except TimeoutError:
            raise AssertionError("connection still open after %.1fs" % timeout)

    def is_open(self, wait=0.2):
        """True when no EOF (and no data) arrives within |wait| s."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            self.sock.settimeout(0.5)
            data = self.sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.received += len(data)
        return True

    def readable(self, wait=0.0):
        if self.buf or self.eof:
            return True
        r, _, _ = select.select([self.sock], [], [], wait)
        return bool(r)


class ConnectionClosed(ProtocolError):
    pass


def one_request(port, raw, timeout=DEFAULT_TIMEOUT, head_request=False):
    """Sends |raw| on a new connection and reads one response. Returns (response, conn)."""
    c = Conn(port, timeout=timeout)
    c.send(raw)
    return c.read_response(head_request=head_request, timeout=timeout), c


def get(port, target, headers=None, host="app.test", timeout=DEFAULT_TIMEOUT):
    """A GET on a new connection (closed afterwards)."""
    with Conn(port, timeout=timeout) as c:
        return c.request("GET", target, headers, host=host, timeout=timeout)


def echo_headers(resp):
    """The request headers an /echo response saw, as [(name, value)]."""
    return [tuple(p) for p in resp.json()["headers"]]


def echo_header_all(resp, name):
    return [v for k, v in echo_headers(resp) if k.lower() == name.lower()]


ERRLOG_RE = re.compile(
    r"^(?P<time>.+?) (?P<level>[A-Za-z]+) (?:conn=(?P<conn>\d+) peer=(?P<peer>\S+) )?"
    r"(?P<file>[\w./-]+\.c):(?P<line>\d+): (?P<msg>.*)$")

ACCESS_KEYS = ("time", "client", "method", "target", "host", "status", "bytes_in",
               "bytes_out", "duration_ms", "upstream", "server", "upstream_ms", "request_id")
