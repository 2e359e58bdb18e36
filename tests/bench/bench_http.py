#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""gatehouse vs nginx as HTTP/1.1 reverse proxies in front of the same fast upstream.

Usage:
  /usr/bin/python3 tests/bench/bench_http.py --gatehouse /abs/build/gatehouse \
      [--duration 10] [--connections 64] [--workers 1,2] [--quick] [--json OUT]
  /usr/bin/python3 tests/bench/bench_http.py --nginx-only ...   (no gatehouse at all)

Figures (see tests/bench/README.md):
  throughput   wrk req/s, p50, p99 and proxy CPU per request, per worker count
  Ir/request   callgrind instructions per proxied request, (Ir(N2)-Ir(N1))/(N2-N1)
  sys/request  strace -f -c syscalls per proxied request, same two-run difference,
               one keep-alive connection and 16 concurrent ones

A benchmark reports; it never fails on numbers. Exit status: 0 when everything ran,
1 when some measurement could not run, 2 when the setup itself failed (gatehouse
binary missing or not working, nginx/wrk missing, upstream not starting).
Standard library only; the proxies and tools are started and stopped by PID.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = b"hello\n"

# ----------------------------------------------------------------------------- processes

_live = []  # every Proc started and not yet reaped, stopped on the way out


def log(msg=""):
    print(msg, flush=True)


def warn(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def proc_children(pid):
    """PIDs whose parent is |pid| (scan of /proc; threads are not processes)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def proc_tree(pid):
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(proc_children(p))
    return tree


def cpu_seconds(pids):
    """utime+stime of |pids| (each process with all its threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


class Proc:
    """A started process with its output in files, stopped by its PID."""

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(workdir, name + ".stdout")
        self.err_path = os.path.join(workdir, name + ".stderr")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                  stderr=self._err, env=env, start_new_session=True)
        self.pid = self.p.pid
        _live.append(self)

    def alive(self):
        return self.p.poll() is None

    def tail(self, n=15):
        lines = []
        for path in (self.err_path, self.out_path):
            try:
                with open(path, "rb") as f:
                    data = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            lines += ["    " + l for l in data[-n:]]
        return "\n".join(lines) if lines else "    (no output)"

    def send(self, sig, pid=None):
        try:
            os.kill(pid or self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=20.0, target=None):
        """Sends |sig| to |target| (default: our own PID), waits; then SIGKILL by PID."""
        if self.alive():
            self.send(sig, target)
            if self.wait(timeout) is None:
                warn("%s (pid %d) did not exit on %s within %.0fs: SIGKILL"
                     % (self.name, self.pid, signal.Signals(sig).name, timeout))
                for p in reversed(proc_tree(self.pid)):
                    self.send(signal.SIGKILL, p)
                self.wait(10)
        self._close()
        return self.p.returncode

    def _close(self):
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass
        if self in _live:
            _live.remove(self)


def stop_all():
    for pr in list(_live):
        pr.stop(signal.SIGTERM, timeout=10)


# ----------------------------------------------------------------------------- network

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listeners(port):
    """Number of sockets in LISTEN state on local |port| (from /proc/net/tcp{,6});
    counting without connecting leaves the server untouched (matters under callgrind)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def wait_listen(port, proc, timeout, want=1):
    """Waits until a socket listens on |port|, then up to 3 s more for |want| of them (one
    per SO_REUSEPORT worker); False if |proc| died or nothing listened in time."""
    deadline = time.monotonic() + timeout
    while listeners(port) < 1:
        if not proc.alive() or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    deadline = time.monotonic() + 3.0
    while listeners(port) < want and time.monotonic() < deadline and proc.alive():
        time.sleep(0.05)
    return proc.alive()


class HTTPConn:
    """One keep-alive HTTP/1.1 connection: send a GET, read the whole response by
    Content-Length (or chunked), repeat. Reconnects if the server says Connection: close."""

    def __init__(self, port, timeout=30.0):
        self.port = port
        self.timeout = timeout
        self.req = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port).encode()
        self.sock = None
        self.buf = bytearray()
        self.reconnects = -1
        self._connect()

    def _connect(self):
        if self.sock:
            self.sock.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.reconnects += 1

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _read_until(self, sep):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            self._fill()

    def _read_n(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def get(self):
        """Returns (status, body)."""
        self.sock.sendall(self.req)
        head = self._read_until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(b":")
            hdrs[k.strip().lower()] = v.strip()
        if b"content-length" in hdrs:
            body = self._read_n(int(hdrs[b"content-length"]))
        elif b"chunked" in hdrs.get(b"transfer-encoding", b"").lower():
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._read_until(b"\r\n"):  # trailers
                        pass
                    break
                body += self._read_n(size)
                self._read_n(2)
        else:  # delimited by close
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            body = bytes(self.buf)
            self.buf = bytearray()
            hdrs[b"connection"] = b"close"
        if hdrs.get(b"connection", b"").lower() == b"close":
            self._connect()
        return status, body

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


def run_client(port, n, conns=1, timeout=60.0):
    """Sends |n| GETs: over one keep-alive connection, or split over |conns| connections
    driven in parallel by threads. Returns dict(ok, bad, errors, reconnects, seconds)."""
    res = {"ok": 0, "bad": 0, "errors": [], "reconnects": 0}
    lock = threading.Lock()
    share = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    barrier = threading.Barrier(conns)

    def worker(count):
        ok = bad = 0
        c = None
        try:
            c = HTTPConn(port, timeout)
            try:
                barrier.wait(timeout)
            except threading.BrokenBarrierError:
                pass
            for _ in range(count):
                status, body = c.get()
                if status == 200 and body == BODY:
                    ok += 1
                else:
                    bad += 1
        except (OSError, ValueError, IndexError) as e:
            with lock:
                res["errors"].append("%s: %s" % (type(e).__name__, e))
            barrier.abort()
        finally:
            with lock:
                res["ok"] += ok
                res["bad"] += bad
                if c:
                    res["reconnects"] += c.reconnects
                    c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res["seconds"] = time.monotonic() - t0
    return res


def http_check(port, timeout=5.0):
    """One GET through |port|; None if it returned 200 "hello\\n", else what went wrong."""
    try:
        c = HTTPConn(port, timeout)
        try:
            status, body = c.get()
        finally:
            c.close()
    except (OSError, ValueError, IndexError) as e:
        return "%s: %s" % (type(e).__name__, e)
    if status != 200 or body != BODY:
        return "got status %d body %r" % (status, body[:60])
    return None


# ----------------------------------------------------------------------------- servers

def render(template, out_path, **values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError("%s: unfilled placeholders %s" % (template, left))
    with open(out_path, "w") as f:
        f.write(text)
    return out_path


def user_line():
    # as root nginx would switch its workers to "nobody"; keep the same user as gatehouse
    if os.geteuid() == 0:
        return "user root root;"
    return ""


FORWARD_HEADERS = """\
            # the headers gatehouse adds to each proxied request (DESIGN.md: http upstreams),
            # so that both send the upstream the same request (X-Request-Id aside)
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";"""
# gatehouse also adds X-Request-Id (xorshift, a few instructions); nginx's $request_id calls
# OpenSSL RAND_bytes (~7,000 instructions and a getpid() per request), so it is opt-in.
REQUEST_ID_HEADER = """
            proxy_set_header X-Request-Id $request_id;"""


def nginx_headers(mode):
    return {"bare": "", "forward": FORWARD_HEADERS,
            "request-id": FORWARD_HEADERS + REQUEST_ID_HEADER}[mode]


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="gatehouse-bench-")
        self.seq = 0
        self.errors = []  # what could not run

    def dir(self, name):
        self.seq += 1
        d = os.path.join(self.tmp, "%02d-%s" % (self.seq, name))
        os.makedirs(d)
        return d

    # --- nginx
    def nginx_conf(self, d, port, workers, master=True, upport=None):
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        if upport is None:
            return render("nginx_upstream.conf.in", conf, PREFIX=d, PORT=port, USER=user_line())
        access = os.path.join(d, "access.log") if self.args.access_log else "off"
        return render("nginx_proxy.conf.in", conf, PREFIX=d, PORT=port, UPPORT=upport,
                      WORKERS=workers, MASTER="on" if master else "off", USER=user_line(),
                      ACCESS_LOG=access, REUSEPORT="reuseport" if workers > 1 else "",
                      FORWARD_HEADERS=nginx_headers(self.args.nginx_headers))

    def nginx_argv(self, d, conf):
        return [self.args.nginx, "-p", d + "/", "-c", conf, "-e", os.path.join(d, "error.log")]

    # --- gatehouse
    def gatehouse_conf(self, d, port, workers, upport):
        return render("gatehouse.yaml.in", os.path.join(d, "gatehouse.yaml"), PORT=port,
                      UPPORT=upport, WORKERS=workers,
                      ACCESS="json" if self.args.access_log else "off")

    def gatehouse_argv(self, d, conf):
        return [self.args.gatehouse, "-c", conf]

    # --- a proxy in normal (throughput) mode
    def start_proxy(self, kind, workers, wrapper=None, single_process=False):
        """Starts |kind| ('gatehouse' or 'nginx') with |workers| workers in front of the
        upstream, under |wrapper| argv if given. Returns (Proc, port, dir)."""
        d = self.dir("%s-w%d%s" % (kind, workers, "-" + wrapper[0].rsplit("/", 1)[-1]
                                   if wrapper else ""))
        port = free_port()
        if kind == "nginx":
            conf = self.nginx_conf(d, port, workers, master=not single_process,
                                   upport=self.upport)
            argv = self.nginx_argv(d, conf)
        else:
            conf = self.gatehouse_conf(d, port, workers, self.upport)
            argv = self.gatehouse_argv(d, conf)
        if wrapper:
            argv = list(wrapper) + argv
        pr = Proc(kind, argv, d)
        return pr, port, d

    def start_upstream(self):
        d = self.dir("upstream")
        self.upport = free_port()
        conf = self.nginx_conf(d, self.upport, 2)
        self.upstream = Proc("upstream", self.nginx_argv(d, conf), d)
        if not wait_listen(self.upport, self.upstream, 15) or http_check(self.upport):
            raise SetupError("upstream nginx did not come up on port %d:\n%s"
                             % (self.upport, self.upstream.tail()))

    def ready(self, pr, port, workers, timeout):
        """Waits for |pr| to listen (one socket per worker when it uses SO_REUSEPORT) and
        to answer one proxied GET. Returns None or what went wrong."""
        if not wait_listen(port, pr, timeout, want=workers):
            if not pr.alive():
                return "exited with status %s before listening:\n%s" % (pr.p.returncode,
                                                                        pr.tail())
            return "not listening on 127.0.0.1:%d after %.0fs:\n%s" % (port, timeout, pr.tail())
        err = None
        for _ in range(20):
            err = http_check(port)
            if err is None:
                return None
            if not pr.alive():
                break
            time.sleep(0.25)
        return "listening but a proxied GET / failed (%s):\n%s" % (err, pr.tail())


class SetupError(Exception):
    pass


# ----------------------------------------------------------------------------- wrk

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else None


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    r["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s(?:\.0+)?%%\s+(\S+)" % pct, out, re.M)
        r["p" + pct + "_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def wrk(port, duration, connections, threads=2):
    argv = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % duration, "--latency",
            "http://127.0.0.1:%d/" % port]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    r = parse_wrk(p.stdout)
    if p.returncode != 0 or r["rps"] is None:
        raise RuntimeError("wrk failed (status %d): %s %s" % (p.returncode, p.stdout[-400:],
                                                                p.stderr[-400:]))
    return r


# ----------------------------------------------------------------------------- measurements


def wrk_cpu(port, duration, connections, **procs):
    """One wrk run (see wrk()) and the CPU that each named process tree (a Proc, or None for
    none) used meanwhile: r[NAME + "_cpu_s"] and r[NAME + "_cpu_us_per_req"], None for a
    None process. Raises RuntimeError."""
    trees = {k: proc_tree(pr.pid) if pr is not None else None for k, pr in procs.items()}
    before = {k: cpu_seconds(t) for k, t in trees.items() if t is not None}
    r = wrk(port, duration, connections)
    n = r["requests"]
    for k, t in trees.items():
        used = cpu_seconds(t) - before[k] if t is not None else None
        r[k + "_cpu_s"] = used
        r[k + "_cpu_us_per_req"] = used * 1e6 / n if n and used is not None else None
        r[k + "_processes"] = len(t) if t is not None else 0
    return r


def ratio_of(g, n, keys):
    """g[k] / n[k] for each key both have (and non-zero); None when there is none."""
    out = {}
    for k in keys:
        if g.get(k) and n.get(k):
            out[k] = g[k] / n[k]
    return out or None

def throughput(b):
    a = b.args
    res = {"upstream": None, "workers": {}}
    log("\n== throughput: wrk -t2 -c%d -d%ds --latency, warm-up %ds, %d round(s) ==" % (
        a.connections, a.duration, a.warmup, a.rounds))
    try:
        wrk(b.upport, a.warmup, a.connections)
        r = wrk(b.upport, a.duration, a.connections)
        res["upstream"] = r
        log("  upstream directly (ceiling): %9.0f req/s  p50 %s  p99 %s" % (
            r["rps"], fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"])))
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        b.errors.append("throughput: upstream ceiling: %s" % e)
        warn(str(e))

    for wi, workers in enumerate(a.workers):
        row = {}
        procs = {}
        for kind in a.proxies:
            pr, port, d = b.start_proxy(kind, workers)
            err = b.ready(pr, port, workers, a.start_timeout)
            if err:
                b.errors.append("throughput: %s with %d worker(s): %s" % (kind, workers, err))
                warn("%s with %d worker(s): %s" % (kind, workers, err))
                pr.stop()
                row[kind] = {"error": err.splitlines()[0]}
                continue
            procs[kind] = (pr, port)
            try:
                wrk(port, a.warmup, a.connections)  # warm-up: pools filled, caches hot
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                warn("%s warm-up: %s" % (kind, e))
        runs = {k: [] for k in procs}
        for rnd in range(a.rounds):
            order = list(procs)
            if (wi + rnd) % 2:
                order.reverse()  # alternate who goes first
            for kind in order:
                pr, port = procs[kind]
                if not pr.alive():
                    continue
                tree = proc_tree(pr.pid)
                c0 = cpu_seconds(tree)
                try:
                    r = wrk(port, a.duration, a.connections)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    b.errors.append("throughput: %s with %d worker(s): %s" % (kind, workers, e))
                    warn("%s: %s" % (kind, e))
                    continue
                cpu = cpu_seconds(tree) - c0
                r["proxy_cpu_s"] = cpu
                r["proxy_cpu_us_per_req"] = cpu * 1e6 / r["requests"] if r["requests"] else None
                runs[kind].append(r)
                log("  workers %d  %-9s round %d: %9.0f req/s  p50 %s  p99 %s  cpu %s us/req%s"
                    % (workers, kind, rnd + 1, r["rps"], fmt_ms(r["p50_ms"]),
                       fmt_ms(r["p99_ms"]), fmt_num(r["proxy_cpu_us_per_req"], 1),
                       errs_note(r)))
            for kind, (pr, port) in procs.items():
                if not pr.alive():
                    msg = "%s with %d worker(s) died during the run:\n%s" % (kind, workers,
                                                                             pr.tail())
                    if msg not in b.errors:
                        b.errors.append("throughput: " + msg)
                        warn(msg)
        for kind, (pr, port) in procs.items():
            pr.stop(signal.SIGTERM, timeout=20)
            if runs[kind]:
                row[kind] = median_run(runs[kind])
            elif kind not in row:
                row[kind] = {"error": "no successful run"}
        row["ratio"] = ratios(row)
        res["workers"][str(workers)] = row
    return res


def median_run(runs):
    if len(runs) == 1:
        out = dict(runs[0])
    else:
        out = {}
        for k in runs[0]:
            vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
            out[k] = statistics.median(vals) if vals else None
    out["rounds"] = [r["rps"] for r in runs]
    return out


def ratios(row):
    g, n = row.get("gatehouse") or {}, row.get("nginx") or {}
    out = {}
    for k in ("rps", "p50_ms", "p99_ms", "proxy_cpu_us_per_req"):
        if g.get(k) and n.get(k):
            out[k] = g[k] / n[k]
    return out or None


def callgrind_total(path):
    """Total Ir from a callgrind output file ('totals:' or 'summary:' line)."""
    totals = summary = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("totals:"):
                totals = int(line.split()[1])
            elif line.startswith("summary:"):
                summary = int(line.split()[1])
    return totals if totals is not None else summary


def parse_strace(path):
    """strace -c table -> (total calls, {syscall: calls}, {syscall: errors})."""
    calls, errs, total = {}, {}, None
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split()
            if not parts or not re.match(r"^[\d.]+$", parts[0]):
                continue
            name = parts[-1]
            nums = parts[1:-1]  # seconds usecs/call calls [errors]
            if len(nums) < 3:
                continue
            n = int(nums[2])
            e = int(nums[3]) if len(nums) > 3 else 0
            if name == "total":
                total = n
            else:
                calls[name] = n
                errs[name] = e
    return total, calls, errs


def traced_run(b, kind, n, conns, tool):
    """One proxy with one worker under |tool| ('callgrind' or 'strace'), |n| requests over
    |conns| connection(s), stopped with SIGTERM. Returns a dict or raises RuntimeError."""
    a = b.args
    out_file = os.path.join(b.tmp, "%s-%s-n%d-c%d.out" % (tool, kind, n, conns))
    if tool == "callgrind":
        wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out_file,
                   "--dump-instr=no", "--trace-children=no", "-q"]
        timeout = a.valgrind_timeout
    else:
        wrapper = ["strace", "-f", "-c", "-o", out_file]
        timeout = a.start_timeout
    pr, port, d = b.start_proxy(kind, 1, wrapper=wrapper, single_process=True)
    try:
        if not wait_listen(port, pr, timeout):
            raise RuntimeError("%s under %s did not listen within %.0fs:\n%s"
                               % (kind, tool, timeout, pr.tail()))
        # the process to signal: valgrind execs the tool in place (same PID); strace forks
        target = pr.pid
        if tool == "strace":
            kids = proc_children(pr.pid)
            if not kids:
                raise RuntimeError("no traced child under strace pid %d" % pr.pid)
            target = kids[0]
        r = run_client(port, n, conns, timeout=max(60.0, timeout))
        if r["errors"] or r["ok"] != n:
            raise RuntimeError("%s under %s: %d/%d requests ok, %d bad, errors: %s\n%s"
                               % (kind, tool, r["ok"], n, r["bad"], r["errors"][:3],
                                  pr.tail()))
        time.sleep(0.2)  # let the last close be processed before stopping
        rc = pr.stop(signal.SIGTERM, timeout=a.valgrind_timeout, target=target)
        if not os.path.exists(out_file):
            raise RuntimeError("%s under %s wrote no %s (exit %s):\n%s"
                               % (kind, tool, out_file, rc, pr.tail()))
        out = {"requests": n, "connections": conns, "client_seconds": r["seconds"],
               "reconnects": r["reconnects"], "exit": rc, "file": out_file}
        if tool == "callgrind":
            out["ir"] = callgrind_total(out_file)
            if out["ir"] is None:
                raise RuntimeError("no totals/summary line in %s" % out_file)
        else:
            out["calls"], out["by_syscall"], out["errors_by_syscall"] = parse_strace(out_file)
            if out["calls"] is None:
                raise RuntimeError("no total line in %s" % out_file)
        return out
    finally:
        if pr.alive():
            pr.stop(signal.SIGTERM, timeout=30)


def per_request(b, kind, tool, conns):
    a = b.args
    n1, n2 = a.n
    runs = []
    for n in (n1, n2):
        t0 = time.monotonic()
        r = traced_run(b, kind, n, conns, tool)
        runs.append(r)
        key = "ir" if tool == "callgrind" else "calls"
        log("  %-9s %-9s conns %2d  N=%-6d total %s  (%.1fs)"
            % (kind, tool, conns, n, fmt_int(r[key]), time.monotonic() - t0))
    key = "ir" if tool == "callgrind" else "calls"
    per = (runs[1][key] - runs[0][key]) / (n2 - n1)
    out = {"n": [n1, n2], "connections": conns, "totals": [r[key] for r in runs],
           "per_request": per, "startup": runs[0][key] - per * n1,
           "files": [r["file"] for r in runs]}
    if tool == "strace":
        names = set(runs[0]["by_syscall"]) | set(runs[1]["by_syscall"])
        by = {s: (runs[1]["by_syscall"].get(s, 0) - runs[0]["by_syscall"].get(s, 0)) / (n2 - n1)
              for s in names}
        out["by_syscall"] = {s: round(v, 3) for s, v in
                             sorted(by.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.005}
        eb = {s: (runs[1]["errors_by_syscall"].get(s, 0)
                  - runs[0]["errors_by_syscall"].get(s, 0)) / (n2 - n1) for s in names}
        out["errors_by_syscall"] = {s: round(v, 3) for s, v in eb.items() if abs(v) >= 0.005}
    return out


def instructions(b):
    a = b.args
    log("\n== instructions per proxied request: callgrind, 1 worker, 1 keep-alive connection,"
        " N=%d and N=%d ==" % tuple(a.n))
    res = {}
    for kind in a.proxies:
        try:
            res[kind] = per_request(b, kind, "callgrind", 1)
            log("  %-9s %s Ir/request" % (kind, fmt_int(res[kind]["per_request"])))
        except (RuntimeError, OSError) as e:
            b.errors.append("callgrind: %s: %s" % (kind, e))
            warn("callgrind %s: %s" % (kind, e))
            res[kind] = {"error": str(e).splitlines()[0]}
    return res


def syscalls(b):
    a = b.args
    log("\n== syscalls per proxied request: strace -f -c, 1 worker, N=%d and N=%d ==" % tuple(a.n))
    res = {}
    for conns in (1, a.strace_connections):
        key = "%dconn" % conns
        res[key] = {}
        for kind in a.proxies:
            try:
                r = per_request(b, kind, "strace", conns)
                res[key][kind] = r
                top = breakdown(r["by_syscall"], 6)
                log("  %-9s %2d conn(s): %.2f syscalls/request  (%s)"
                    % (kind, conns, r["per_request"], top))
            except (RuntimeError, OSError) as e:
                b.errors.append("strace %s: %s: %s" % (key, kind, e))
                warn("strace %s %s: %s" % (key, kind, e))
                res[key][kind] = {"error": str(e).splitlines()[0]}
    return res


# ----------------------------------------------------------------------------- output

def breakdown(by_syscall, n):
    """'name calls/request, ...' for the |n| most frequent syscalls (noise under 0.02 left out)."""
    return ", ".join("%s %.2f" % kv for kv in list(by_syscall.items())[:n] if abs(kv[1]) >= 0.02)


def fmt_ms(v):
    if v is None:
        return "-"
    if v < 1:
        return "%.0fus" % (v * 1000)
    if v < 100:
        return "%.2fms" % v
    return "%.0fms" % v


def fmt_num(v, digits=2):
    return "-" if v is None else "%.*f" % (digits, v)


def fmt_int(v):
    return "-" if v is None else "{:,.0f}".format(v)


def fmt_ratio(v):
    return "-" if v is None else "%.2fx" % v


def errs_note(r):
    bad = (r.get("non2xx") or 0) + (r.get("socket_errors") or 0)
    return "  (%d non-2xx/socket errors)" % bad if bad else ""


def table(res, args):
    out = []
    w = out.append
    w("")
    w("=" * 78)
    w("SUMMARY  gatehouse vs nginx %s as HTTP/1.1 reverse proxies, same upstream"
      % res["meta"]["nginx_version"])
    w("=" * 78)
    tp = res.get("throughput")
    if tp:
        w("")
        w("Throughput (wrk -t2 -c%d -d%ds, keep-alive both sides; median of %d round(s))"
          % (args.connections, args.duration, args.rounds))
        w("%-8s %-12s %10s %9s %9s %12s  %s" % ("workers", "proxy", "req/s", "p50", "p99",
                                              "cpu us/req", "errors"))
        up = tp.get("upstream")
        if up:
            w("%-8s %-12s %10.0f %9s %9s %12s" % ("-", "upstream", up["rps"],
                                                 fmt_ms(up["p50_ms"]), fmt_ms(up["p99_ms"]),
                                                 "-"))
        for workers, row in tp["workers"].items():
            for kind in args.proxies:
                r = row.get(kind) or {}
                if "error" in r:
                    w("%-8s %-12s %s" % (workers, kind, "did not run: " + r["error"]))
                    continue
                w("%-8s %-12s %10.0f %9s %9s %12s  %s" % (
                    workers, kind, r["rps"], fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                    fmt_num(r.get("proxy_cpu_us_per_req"), 1),
                    (r.get("non2xx") or 0) + (r.get("socket_errors") or 0)))
            rt = row.get("ratio")
            if rt:
                w("%-8s %-12s %10s %9s %9s %12s" % (
                    workers, "gh/nginx", fmt_ratio(rt.get("rps")), fmt_ratio(rt.get("p50_ms")),
                    fmt_ratio(rt.get("p99_ms")), fmt_ratio(rt.get("proxy_cpu_us_per_req"))))
        w("  req/s ratio > 1 is better for gatehouse; latency and cpu/req ratios < 1 are.")
    ins = res.get("instructions")
    if ins:
        w("")
        w("Instructions per proxied request (callgrind Ir, 1 worker, 1 keep-alive connection,"
          " (Ir(%d)-Ir(%d))/%d)" % (args.n[1], args.n[0], args.n[1] - args.n[0]))
        w("%-12s %14s %16s %16s" % ("proxy", "Ir/request", "start-up Ir", "total Ir(N2)"))
        for kind in args.proxies:
            r = ins.get(kind) or {}
            if "error" in r:
                w("%-12s did not run: %s" % (kind, r["error"]))
                continue
            w("%-12s %14s %16s %16s" % (kind, fmt_int(r["per_request"]), fmt_int(r["startup"]),
                                        fmt_int(r["totals"][1])))
        g, n = ins.get("gatehouse") or {}, ins.get("nginx") or {}
        if g.get("per_request") and n.get("per_request"):
            w("%-12s %14s   (< 1 is better for gatehouse)" % (
                "gh/nginx", fmt_ratio(g["per_request"] / n["per_request"])))
    sc = res.get("syscalls")
    if sc:
        w("")
        w("Syscalls per proxied request (strace -f -c, 1 worker, two-run difference)")
        keys = list(sc)
        w("%-12s %s" % ("proxy", "".join("%14s" % k.replace("conn", " conn(s)") for k in keys)))
        for kind in args.proxies:
            cells = []
            for k in keys:
                r = sc[k].get(kind) or {}
                cells.append("%14s" % ("error" if "error" in r else fmt_num(r.get("per_request"))))
            w("%-12s %s" % (kind, "".join(cells)))
        cells = []
        for k in keys:
            g, n = sc[k].get("gatehouse") or {}, sc[k].get("nginx") or {}
            ok = g.get("per_request") is not None and n.get("per_request")
            cells.append("%14s" % (fmt_ratio(g["per_request"] / n["per_request"]) if ok else "-"))
        if "gatehouse" in args.proxies:
            w("%-12s %s" % ("gh/nginx", "".join(cells)))
        for k in keys:
            for kind in args.proxies:
                r = sc[k].get(kind) or {}
                if r.get("by_syscall"):
                    w("  %-9s %-8s %s" % (kind, k, breakdown(r["by_syscall"], 8)))
    w("")
    w("Caveats: %s" % res["meta"]["caveat"])
    return "\n".join(out)


# ----------------------------------------------------------------------------- main

def tool_version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gatehouse", help="absolute path of the gatehouse binary")
    ap.add_argument("--nginx-only", action="store_true",
                    help="measure nginx (and the upstream ceiling) only")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up (2)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (1,2)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="wrk rounds per proxy, order alternating; the median is reported")
    ap.add_argument("--n", default="2000,10000",
                    help="request counts N1,N2 of the callgrind/strace runs (2000,10000)")
    ap.add_argument("--strace-connections", type=int, default=16,
                    help="connections of the concurrent strace variant (16)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 s runs, 1 s warm-up, N=200,1000")
    ap.add_argument("--skip", default="",
                    help="comma list of parts to skip: throughput,callgrind,strace")
    ap.add_argument("--access-log", action="store_true",
                    help="both proxies write an access log (to a file) instead of none")
    ap.add_argument("--nginx-headers", choices=("bare", "forward", "request-id"),
                    default="forward",
                    help="request headers nginx adds: none; Host, X-Forwarded-*, Forwarded "
                         "as gatehouse (default); those plus X-Request-Id as gatehouse")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (configs, logs, callgrind/strace files)")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--start-timeout", type=float, default=15.0,
                    help="seconds a proxy may take to start natively (15)")
    ap.add_argument("--valgrind-timeout", type=float, default=120.0,
                    help="seconds a proxy may take to start or stop under valgrind (120)")
    a = ap.parse_args(argv)
    if a.quick:
        a.duration, a.warmup, a.n = min(a.duration, 2), 1, "200,1000"
    a.workers = [int(x) for x in a.workers.split(",") if x.strip()]
    a.n = [int(x) for x in a.n.split(",")]
    if len(a.n) != 2 or a.n[0] >= a.n[1] or a.n[0] < 1:
        ap.error("--n takes two increasing counts, e.g. 2000,10000")
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    if not a.gatehouse and not a.nginx_only:
        ap.error("give --gatehouse /abs/path/build/gatehouse (or --nginx-only)")
    a.proxies = ["nginx"] if a.nginx_only else ["gatehouse", "nginx"]
    return a


def gatehouse_binary(a, hint):
    """Makes a.gatehouse absolute. Returns None when it is an executable, else the warning
    to give (with |hint| on how to get one)."""
    if not os.path.isabs(a.gatehouse):
        a.gatehouse = os.path.abspath(a.gatehouse)
    if os.path.isfile(a.gatehouse) and os.access(a.gatehouse, os.X_OK):
        return None
    return "gatehouse binary %s does not exist or is not executable; %s" % (a.gatehouse, hint)


def preflight_error(a, workdir, what, err):
    """The SetupError for a gatehouse that failed its preflight, with its configuration."""
    with open(os.path.join(workdir, "gatehouse.yaml")) as f:
        conf = "".join("    " + l for l in f if not l.startswith("#"))
    return SetupError("%s: %s\n  command: %s -c FILE\n  FILE:\n%s"
                      % (what, err, a.gatehouse, conf))


def run_parts(b, res, parts, stop):
    """Runs |parts| (name -> function of b) into |res| and stops every process with |stop|.
    Returns 0, 2 (setup failed) or 130 (interrupted)."""
    try:
        for name, fn in parts:
            res[name] = fn(b)
        return 0
    except SetupError as e:
        warn(str(e))
        b.errors.append("setup: " + str(e).splitlines()[0])
        return 2
    except KeyboardInterrupt:
        warn("interrupted")
        return 130
    finally:
        stop()


def report(b, res, a, status, table_text):
    """Prints the summary (|table_text|, None when there is none), what could not run, writes
    --json and cleans up. Returns the exit status (1 when something could not run)."""
    res["errors"] = b.errors
    if status == 0 and b.errors:
        status = 1
    if table_text is not None:
        log(table_text)
    if b.errors:
        log("\nCould not run:")
        for e in b.errors:
            log("  - " + e.splitlines()[0])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, sort_keys=False)
        log("JSON written to %s" % a.json)
    if a.keep:
        log("kept %s" % b.tmp)
    else:
        shutil.rmtree(b.tmp, ignore_errors=True)
    return status


def main(argv):
    a = parse_args(argv)
    ncpu = os.cpu_count()
    usable = len(os.sched_getaffinity(0))
    caveat = ("the clients (wrk, the Python client), both nginx instances and the proxy share "
              "%d CPU(s); wrk itself takes a large share, so req/s and latencies are noisy "
              "and mostly show the proxies' relative cost. Instruction counts (callgrind) are "
              "the stable figure; syscall counts are nearly as stable." % usable)
    meta = {"cpus": ncpu, "cpus_usable": usable, "kernel": platform.release(),
            "nginx_version": (tool_version([a.nginx, "-v"]) or "?").replace("nginx version: ", ""),
            "wrk": tool_version(["wrk", "-v"]), "valgrind": tool_version(["valgrind", "--version"]),
            "strace": tool_version(["strace", "-V"]), "python": platform.python_version(),
            "gatehouse": a.gatehouse, "duration_s": a.duration, "warmup_s": a.warmup,
            "connections": a.connections, "workers": a.workers, "rounds": a.rounds, "n": a.n,
            "access_log": a.access_log, "nginx_headers": a.nginx_headers,
            "caveat": caveat, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log("gatehouse HTTP proxy benchmark: gatehouse vs nginx %s" % meta["nginx_version"])
    log("  CPUs: %d online, %d usable by this process; kernel %s" % (ncpu, usable,
                                                                    meta["kernel"]))
    log("  NOTE: timings on a shared %d-core machine are noisy (clients and servers share the"
        % usable)
    log("        cores, wrk eats CPU); instruction counts per request are the stable figure.")
    log("  gatehouse: %s" % (a.gatehouse or "(not measured: --nginx-only)"))

    needed = {"nginx": a.nginx, "wrk": "wrk"}
    if "callgrind" not in a.skip:
        needed["valgrind"] = "valgrind"
    if "strace" not in a.skip:
        needed["strace"] = "strace"
    missing = [k for k, v in needed.items() if not shutil.which(v)]
    if missing:
        warn("missing tools: %s (make bench installs them: tools/deps.sh bench)"
             % ", ".join(missing))
        return 2
    if a.gatehouse:
        bad = gatehouse_binary(a, "build it first (make build/gatehouse), or pass --nginx-only")
        if bad:
            warn(bad)
            return 2

    b = Bench(a)
    log("  work dir: %s" % b.tmp)
    res = {"meta": meta}

    def preflight(b):
        b.start_upstream()
        log("  upstream: nginx, 2 workers, 127.0.0.1:%d, return 200 \"hello\\n\"" % b.upport)
        if a.gatehouse:
            pr, port, d = b.start_proxy("gatehouse", 1)
            err = b.ready(pr, port, 1, a.start_timeout)
            pr.stop(signal.SIGTERM, timeout=20)
            if err:
                raise preflight_error(a, d, "gatehouse does not work yet", err)
            log("  gatehouse preflight: proxied GET / ok")

    parts = [("preflight", preflight)]
    if "throughput" not in a.skip:
        parts.append(("throughput", throughput))
    if "callgrind" not in a.skip:
        parts.append(("instructions", instructions))
    if "strace" not in a.skip:
        parts.append(("syscalls", syscalls))
    status = run_parts(b, res, parts, stop_all)
    res.pop("preflight", None)
    return report(b, res, a, status, table(res, a) if status != 2 else None)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        stop_all()
