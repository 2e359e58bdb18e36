#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""gatehouse vs nginx as HTTP/2 (TLS) reverse proxies in front of the same fast upstream.

Usage:
  /usr/bin/python3 tests/bench/bench_h2.py --gatehouse /abs/build/gatehouse \
      [--workers 1] [--duration 10] [--connections 32] [--streams 10] [--rounds 1] [--json OUT]
  /usr/bin/python3 tests/bench/bench_h2.py --nginx-only ...   (no gatehouse at all)
  /usr/bin/python3 tests/bench/bench_h2.py --gatehouse ... --h2c   (both cleartext h2, no TLS)

Figures (see tests/bench/README.md):
  throughput   h2load -c32 -m10 req/s, mean/p50/p99 latency (from h2load's per-request log)
               and the proxy's CPU per request, for GET / (6 bytes) and GET /64k (64 KiB)
  handshakes   openssl s_time, full (-new) and resumed (-reuse) TLS handshakes per second
               and the proxy's CPU per handshake, TLS 1.3 and 1.2

A benchmark reports; it never fails on numbers. Exit status: 0 when everything ran, 1 when
some measurement could not run (the gatehouse side included: the nginx side is still
measured), 2 when the setup itself failed (a tool missing, the upstream or the certificates).
Standard library only; every process is started by the script and stopped by its PID.
"""

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_http as bh  # noqa: E402  (processes, readiness, report, formatting)
from bench_http import (Proc, SetupError, fmt_ms, fmt_num, fmt_ratio, log, warn)  # noqa: E402

BIG = 65536
SIZES = {"small": ("/", 6), "64k": ("/64k", BIG)}  # name -> (path, body bytes)
GOAL_RPS = 1.1
GOAL_LINE = ("goal: gatehouse >= %.1fx nginx's h2 req/s (GET /), and no more CPU per full "
             "handshake than nginx" % GOAL_RPS)


# ----------------------------------------------------------------------------- certificates

def openssl(argv, cwd):
    p = subprocess.run(["openssl"] + argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise SetupError("openssl %s failed (%d): %s" % (argv[0], p.returncode,
                                                         (p.stderr or p.stdout)[-600:]))
    return p.stdout


def make_certs(d, key_type):
    """A throwaway CA and a server certificate for localhost/127.0.0.1 signed by it, in |d|.
    Returns dict(ca, cert (leaf + CA), key)."""
    os.makedirs(d, exist_ok=True)
    newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec256"
              else ["-newkey", "rsa:2048"])
    openssl(["req", "-x509", "-new", "-nodes"] + newkey +
            ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
             "/CN=gatehouse bench CA", "-addext", "basicConstraints=critical,CA:true",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    openssl(["req", "-new", "-nodes"] + newkey +
            ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:false\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "server.ext"], d)
    openssl(["verify", "-CAfile", "ca.pem", "leaf.pem"], d)
    with open(os.path.join(d, "server.pem"), "w") as out:
        for name in ("leaf.pem", "ca.pem"):
            with open(os.path.join(d, name)) as f:
                out.write(f.read())
    return {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key")}


# ----------------------------------------------------------------------------- h2load

def parse_h2load(out):
    r = {}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", out)
    r["seconds"] = float(m.group(1)) if m else None
    r["rps"] = float(m.group(2)) if m else None
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        (r["total"], _, r["done"], r["requests"], r["failed"], r["errored"],
         r["timeout"]) = (int(x) for x in m.groups())
    else:
        r["requests"] = None
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    r["status_2xx"] = int(m.group(1)) if m else None
    r["non2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?\((\d+)\) data", out)
    r["data_bytes"] = int(m.group(3)) if m else None
    r["traffic_bytes"] = int(m.group(1)) if m else None
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    r["h2load_mean_ms"] = bh._ms(m.group(3)) if m else None
    m = re.search(r"Application protocol: (\S+)", out)
    r["alpn"] = m.group(1) if m else None
    m = re.search(r"TLS Protocol: (\S+)", out)
    r["tls"] = m.group(1) if m else None
    return r


def latencies(path):
    """mean, p50, p99 (ms) from h2load's --log-file (start us, status, duration us)."""
    vals = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    vals.append(int(parts[2]))
    except OSError:
        return None, None, None
    if not vals:
        return None, None, None
    vals.sort()
    n = len(vals)
    pick = lambda q: vals[min(n - 1, int(q * n))] / 1000.0  # noqa: E731
    return statistics.fmean(vals) / 1000.0, pick(0.50), pick(0.99)


def h2load(url, workdir, duration=None, n=None, clients=1, streams=1, threads=1, log_file=True):
    """One h2load run: |duration| seconds (-D) or |n| requests. Returns the parsed figures
    (latencies from the per-request log); raises RuntimeError when it did not run or no
    request succeeded."""
    argv = ["h2load", "-t%d" % threads, "-c%d" % clients, "-m%d" % streams]
    argv += ["-D%d" % duration] if duration else ["-n%d" % n]
    path = os.path.join(workdir, "h2load-requests.log")
    if log_file:
        argv.append("--log-file=" + path)
    argv.append(url)
    p = subprocess.run(argv, capture_output=True, text=True,
                       timeout=(duration or 30) + 60)
    r = parse_h2load(p.stdout)
    if log_file:
        r["mean_ms"], r["p50_ms"], r["p99_ms"] = latencies(path)
        try:
            os.unlink(path)
        except OSError:
            pass
    if p.returncode != 0 or not r.get("requests"):
        lines = [l.strip() for l in (p.stdout + "\n" + p.stderr).splitlines()
                 if re.match(r"\s*(requests:|status codes:|Application protocol:)", l)
                 or re.search(r"error|fail|refused|reset|GOAWAY|No protocol", l, re.I)]
        raise RuntimeError("h2load %s: status %d: %s" % (url, p.returncode,
                                                         "; ".join(lines[-5:]) or "no output"))
    return r


# ----------------------------------------------------------------------------- s_time

def s_time(port, seconds, mode, tls, clients, www):
    """|clients| parallel `openssl s_time -new|-reuse` for |seconds|. Returns dict(conns,
    new, reused, seconds) (seconds of wall time, all processes); raises RuntimeError."""
    argv = ["openssl", "s_time", "-connect", "127.0.0.1:%d" % port, "-" + mode,
            "-time", str(seconds), "-tls" + tls.replace(".", "_")]
    if www:
        argv += ["-www", www_arg(www, port)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True) for _ in range(clients)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        outs.append((p.returncode, out, err))
    wall = time.monotonic() - t0
    res = {"conns": 0, "new": 0, "reused": 0, "seconds": wall}
    for rc, out, err in outs:
        m = re.search(r"^(\d+) connections in [\d.]+s;", out, re.M)
        if rc != 0 or not m:
            raise RuntimeError("openssl s_time -%s -tls%s: status %s: %s" % (
                mode, tls, rc, (err.strip() or out.strip()[-300:]).splitlines()[-1:]))
        res["conns"] += int(m.group(1))
        marks = "".join(l for l in out.splitlines() if re.fullmatch(r"[*r]+", l.strip()))
        res["new"] += marks.count("*")
        res["reused"] += marks.count("r")
    return res


def www_arg(path, port):
    """s_time's -www value. s_time sends "GET <value> HTTP/1.0\\r\\n\\r\\n", no Host: both proxies
    forward that without one and the upstream answers 400. This value makes it an HTTP/1.1
    GET with a Host and `Connection: close` (the "HTTP/1.0" lands in a dummy header), which
    the upstream answers with its 200 "hello\\n"."""
    return "%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\nX-S-Time:" % (path, port)


def s_time_check(port, path, tls):
    """None when the request s_time sends with -www gets a 200 with "hello\\n", else what
    went wrong (one TLS connection from Python, without ALPN, as s_time)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = ssl.TLSVersion.TLSv1_3 if tls == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(("GET %s HTTP/1.0\r\n\r\n" % www_arg(path, port)).encode())
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    data += c
    except (OSError, ssl.SSLError) as e:
        return "%s: %s" % (type(e).__name__, e)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or (path == "/" and body != bh.BODY):
        return "s_time's request got %r ... %r" % (head.split(b"\r\n")[0], body[:40])
    return None


# ----------------------------------------------------------------------------- bench

class H2Bench(bh.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.certs = None
        self.scheme = "http" if args.h2c else "https"

    def start_upstream(self):
        d = self.dir("upstream")
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "www"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, "www", "64k"), "wb") as f:
            f.write(os.urandom(BIG))
        self.upport = bh.free_port()
        conf = bh.render("nginx_h2_upstream.conf.in", os.path.join(d, "nginx.conf"), PREFIX=d,
                         PORT=self.upport, USER=bh.user_line())
        self.upstream = Proc("upstream", self.nginx_argv(d, conf), d)
        if not bh.wait_listen(self.upport, self.upstream, 15) or bh.http_check(self.upport):
            raise SetupError("upstream nginx did not come up on port %d:\n%s"
                             % (self.upport, self.upstream.tail()))

    def conf(self, kind, d, port, workers):
        a = self.args
        if kind == "nginx":
            for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            return bh.render("nginx_h2.conf.in", os.path.join(d, "nginx.conf"), PREFIX=d,
                             PORT=port, UPPORT=self.upport, WORKERS=workers,
                             USER=bh.user_line(), CERT=self.certs["cert"],
                             KEY=self.certs["key"], SSL="" if a.h2c else "ssl",
                             REUSEPORT="reuseport" if workers > 1 else "",
                             FORWARD_HEADERS=bh.nginx_headers(a.nginx_headers))
        if a.h2c:
            lines = ["    http2: prior_knowledge"]
        else:
            lines = ["    tls:", "      certificates:",
                     '        - { cert: "%s", key: "%s" }' % (self.certs["cert"],
                                                             self.certs["key"])]
        lines += ["    " + l for l in a.gatehouse_listen_extra]
        return bh.render("gatehouse_h2.yaml.in", os.path.join(d, "gatehouse.yaml"),
                         PORT=port, UPPORT=self.upport, WORKERS=workers,
                         LISTENER="\n".join(lines))

    def start(self, kind, workers):
        """Starts |kind| with |workers| workers; returns (Proc, port, dir, error or None).
        The error covers --check (gatehouse), listening, and one h2 GET / and GET /64k."""
        a = self.args
        d = self.dir("%s-w%d" % (kind, workers))
        port = bh.free_port()
        conf = self.conf(kind, d, port, workers)
        if kind == "nginx":
            argv = self.nginx_argv(d, conf)
        else:
            argv = [a.gatehouse, "-c", conf]
            p = subprocess.run(argv + ["--check"], capture_output=True, text=True, timeout=30)
            if p.returncode != 0:
                return None, port, d, ("gatehouse --check refused the configuration (%d): %s"
                                       % (p.returncode, (p.stderr + p.stdout).strip()))
        pr = Proc(kind, argv, d)
        if not bh.wait_listen(port, pr, a.start_timeout, want=workers):
            what = ("exited with status %s before listening" % pr.p.returncode
                    if not pr.alive() else "not listening after %.0fs" % a.start_timeout)
            return pr, port, d, "%s:\n%s" % (what, pr.tail())
        err = None
        for _ in range(20):
            err = self.check(port)
            if err is None or not pr.alive():
                break
            time.sleep(0.25)
        if err:
            return pr, port, d, "listening, but %s:\n%s" % (err, pr.tail())
        return pr, port, d, None

    def url(self, port, path="/"):
        return "%s://127.0.0.1:%d%s" % (self.scheme, port, path)

    def check(self, port):
        """None when 10 h2 GETs of each size succeed with their full bodies, else the error."""
        for name, (path, size) in SIZES.items():
            try:
                r = h2load(self.url(port, path), self.tmp, n=10, log_file=False)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                return str(e)
            if not self.args.h2c and r.get("alpn") != "h2":
                return "ALPN negotiated %r, not h2" % r.get("alpn")
            if r["requests"] != 10 or r["status_2xx"] != 10:
                return "GET %s: %s of 10 succeeded, %s 2xx" % (path, r["requests"],
                                                              r["status_2xx"])
            if r["data_bytes"] is not None and r["data_bytes"] < 10 * size:
                return "GET %s: %d body bytes for 10 responses of %d" % (path, r["data_bytes"],
                                                                         size)
        return None


def cpu_during(pr, fn):
    """Runs fn() and returns (its result, CPU seconds |pr|'s process tree used meanwhile)."""
    tree = bh.proc_tree(pr.pid)
    c0 = bh.cpu_seconds(tree)
    r = fn()
    return r, bh.cpu_seconds(tree) - c0


def measure(b):
    """Per worker count: both proxies started side by side; h2load throughput rounds (order
    alternating) for each size, then the s_time handshake runs. Returns the results."""
    a = b.args
    res = {"workers": {}}
    sizes = [s for s in SIZES if s not in a.skip]
    hs = "handshakes" not in a.skip and not a.h2c
    for wi, workers in enumerate(a.workers):
        row = {"throughput": {s: {} for s in sizes}, "handshakes": {}, "errors": {}}
        res["workers"][str(workers)] = row
        procs = {}
        for kind in a.proxies:
            pr, port, d, err = b.start(kind, workers)
            if err:
                b.errors.append("%s with %d worker(s): %s" % (kind, workers, err))
                warn("%s with %d worker(s) did not run: %s" % (kind, workers, err))
                row["errors"][kind] = err.splitlines()[0]
                if pr:
                    pr.stop()
                continue
            log("  %s with %d worker(s): listening on 127.0.0.1:%d, h2 GET / and /64k ok"
                % (kind, workers, port))
            procs[kind] = (pr, port)
        if not procs:
            continue

        if sizes:
            log("\n== workers %d: h2load -c%d -m%d -t%d -D%ds, warm-up %ds, %d round(s) ==" % (
                workers, a.connections, a.streams, a.threads, a.duration, a.warmup, a.rounds))
        runs = {(k, s): [] for k in procs for s in sizes}
        for kind, (pr, port) in procs.items():
            if sizes and a.warmup:
                try:
                    h2load(b.url(port), b.tmp, duration=a.warmup, clients=a.connections,
                           streams=a.streams, threads=a.threads, log_file=False)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    warn("%s warm-up: %s" % (kind, e))
        for rnd in range(a.rounds):
            order = list(procs)
            if (wi + rnd) % 2:
                order.reverse()
            for size in sizes:
                path = SIZES[size][0]
                for kind in order:
                    pr, port = procs[kind]
                    if not pr.alive():
                        continue
                    try:
                        r, cpu = cpu_during(pr, lambda: h2load(
                            b.url(port, path), b.tmp, duration=a.duration,
                            clients=a.connections, streams=a.streams, threads=a.threads))
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        b.errors.append("h2load %s %s, %d worker(s): %s"
                                        % (kind, path, workers, e))
                        warn("%s: %s" % (kind, e))
                        continue
                    r["proxy_cpu_s"] = cpu
                    r["proxy_cpu_us_per_req"] = cpu * 1e6 / r["requests"]
                    r["mb_s"] = (r["data_bytes"] or 0) / r["seconds"] / 1e6 if r["seconds"] else None
                    runs[(kind, size)].append(r)
                    log("  %-9s %-5s round %d: %9.0f req/s  mean %s  p50 %s  p99 %s  "
                        "cpu %s us/req%s" % (kind, size, rnd + 1, r["rps"], fmt_ms(r["mean_ms"]),
                                             fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                                             fmt_num(r["proxy_cpu_us_per_req"], 1), note(r)))
        for (kind, size), rs in runs.items():
            row["throughput"][size][kind] = bh.median_run(rs) if rs else {
                "error": "no successful run"}
        for size in sizes:
            t = row["throughput"][size]
            t["ratio"] = bh.ratio_of(t.get("gatehouse") or {}, t.get("nginx") or {},
                                     ("rps", "mean_ms", "p50_ms", "p99_ms",
                                      "proxy_cpu_us_per_req"))

        if hs:
            log("\n== workers %d: TLS handshakes, openssl s_time, %d client(s), %ds per run%s =="
                % (workers, a.handshake_clients, a.handshake_time,
                   ", GET %s per connection" % a.www if a.www else ""))
            for kind, (pr, port) in procs.items():
                for tls in a.tls_versions if a.www else ():
                    err = s_time_check(port, a.www, tls)
                    if err:
                        b.errors.append("s_time request check, %s TLS %s: %s" % (kind, tls, err))
                        warn("%s TLS %s: %s" % (kind, tls, err))
            for tls in a.tls_versions:
                for mode in ("new", "reuse"):
                    key = "tls%s-%s" % (tls, mode)
                    cell = row["handshakes"].setdefault(key, {})
                    order = list(procs)
                    if wi % 2:
                        order.reverse()
                    for kind in order:
                        pr, port = procs[kind]
                        if not pr.alive():
                            continue
                        try:
                            r, cpu = cpu_during(pr, lambda: s_time(
                                port, a.handshake_time, mode, tls, a.handshake_clients, a.www))
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            b.errors.append("s_time %s %s, %d worker(s): %s"
                                            % (key, kind, workers, e))
                            warn("%s %s: %s" % (kind, key, e))
                            cell[kind] = {"error": str(e).splitlines()[0]}
                            continue
                        r["rate"] = r["conns"] / r["seconds"]
                        r["proxy_cpu_s"] = cpu
                        r["cpu_us_per_conn"] = cpu * 1e6 / r["conns"] if r["conns"] else None
                        r["resumed_pct"] = (100.0 * r["reused"] / (r["new"] + r["reused"])
                                            if r["new"] + r["reused"] else None)
                        cell[kind] = r
                        log("  %-9s TLS %s %-6s %7.0f conn/s  cpu %s us/conn  resumed %s%%"
                            % (kind, tls, mode, r["rate"], fmt_num(r["cpu_us_per_conn"], 1),
                               fmt_num(r["resumed_pct"], 0)))
                        if mode == "reuse" and (r["resumed_pct"] or 0) < 90:
                            warn("%s TLS %s: only %s%% of the -reuse connections resumed"
                                 % (kind, tls, fmt_num(r["resumed_pct"], 0)))
                    cell["ratio"] = bh.ratio_of(cell.get("gatehouse") or {},
                                                cell.get("nginx") or {},
                                                ("rate", "cpu_us_per_conn"))

        for kind, (pr, port) in procs.items():
            if not pr.alive():
                msg = "%s with %d worker(s) died during the run:\n%s" % (kind, workers, pr.tail())
                b.errors.append(msg)
                warn(msg)
            pr.stop(signal.SIGTERM, timeout=20)
    return res


def note(r):
    bad = (r.get("non2xx") or 0) + (r.get("failed") or 0) + (r.get("errored") or 0)
    return "  (%d failed/non-2xx)" % bad if bad else ""


# ----------------------------------------------------------------------------- output

def table(res, a):
    out = []
    w = out.append
    m = res["meta"]
    w("")
    w("=" * 78)
    w("SUMMARY  gatehouse vs nginx %s as %s reverse proxies, same upstream"
      % (m["nginx_version"], "h2c (cleartext HTTP/2)" if a.h2c else "HTTP/2 over TLS"))
    w("=" * 78)
    goal = {}
    for workers, row in (res.get("measure") or {}).get("workers", {}).items():
        for kind, err in row["errors"].items():
            w("workers %s: %s did not run: %s" % (workers, kind, err))
        if row["throughput"]:
            w("")
            w("Throughput, workers %s (h2load -c%d -m%d -t%d -D%ds; median of %d round(s))"
              % (workers, a.connections, a.streams, a.threads, a.duration, a.rounds))
            w("%-6s %-10s %10s %8s %9s %9s %9s %11s  %s" % (
                "size", "proxy", "req/s", "MB/s", "mean", "p50", "p99", "cpu us/req", "failed"))
            for size, t in row["throughput"].items():
                for kind in a.proxies:
                    r = t.get(kind)
                    if r is None:
                        continue
                    if "error" in r:
                        w("%-6s %-10s %s" % (size, kind, "did not run: " + r["error"]))
                        continue
                    w("%-6s %-10s %10.0f %8.1f %9s %9s %9s %11s  %d" % (
                        size, kind, r["rps"], r.get("mb_s") or 0, fmt_ms(r.get("mean_ms")),
                        fmt_ms(r.get("p50_ms")), fmt_ms(r.get("p99_ms")),
                        fmt_num(r.get("proxy_cpu_us_per_req"), 1),
                        (r.get("failed") or 0) + (r.get("errored") or 0) + (r.get("non2xx") or 0)))
                rt = t.get("ratio")
                if rt:
                    w("%-6s %-10s %10s %8s %9s %9s %9s %11s" % (
                        size, "gh/nginx", fmt_ratio(rt.get("rps")), "",
                        fmt_ratio(rt.get("mean_ms")), fmt_ratio(rt.get("p50_ms")),
                        fmt_ratio(rt.get("p99_ms")), fmt_ratio(rt.get("proxy_cpu_us_per_req"))))
                    if size == "small" and rt.get("rps"):
                        goal.setdefault("rps", []).append((workers, rt["rps"]))
        if row["handshakes"]:
            w("")
            w("TLS handshakes, workers %s (openssl s_time, %d client(s), %ds per run%s)"
              % (workers, a.handshake_clients, a.handshake_time,
                 "; each connection also GETs %s" % a.www if a.www else ""))
            w("%-14s %-10s %10s %14s %9s" % ("handshake", "proxy", "conn/s", "cpu us/conn",
                                             "resumed"))
            for key, cell in row["handshakes"].items():
                for kind in a.proxies:
                    r = cell.get(kind)
                    if r is None:
                        continue
                    if "error" in r:
                        w("%-14s %-10s did not run: %s" % (key, kind, r["error"]))
                        continue
                    w("%-14s %-10s %10.0f %14s %8s%%" % (
                        key, kind, r["rate"], fmt_num(r.get("cpu_us_per_conn"), 1),
                        fmt_num(r.get("resumed_pct"), 0)))
                rt = cell.get("ratio")
                if rt:
                    w("%-14s %-10s %10s %14s" % (key, "gh/nginx", fmt_ratio(rt.get("rate")),
                                                  fmt_ratio(rt.get("cpu_us_per_conn"))))
                    if key.endswith("-new") and rt.get("cpu_us_per_conn"):
                        goal.setdefault("hs", []).append((workers, key, rt["cpu_us_per_conn"]))
            for kind in a.proxies:
                full = [c[kind]["rate"] for k, c in row["handshakes"].items()
                        if k.endswith("-new") and "rate" in (c.get(kind) or {})]
                resumed = [c[kind]["rate"] for k, c in row["handshakes"].items()
                           if k.endswith("-reuse") and "rate" in (c.get(kind) or {})]
                if full and resumed:
                    w("  %s: resumed/full connection rate %s" % (kind, ", ".join(
                        "%s %.2fx" % (k.split("-")[0], c[kind]["rate"] / row["handshakes"][
                            k.replace("-reuse", "-new")][kind]["rate"])
                        for k, c in row["handshakes"].items()
                        if k.endswith("-reuse") and "rate" in (c.get(kind) or {})
                        and "rate" in (row["handshakes"][k.replace("-reuse", "-new")].get(kind)
                                       or {}))))
    w("")
    w("req/s ratio > 1 is better for gatehouse; latency, cpu/req and cpu/conn ratios < 1 are.")
    w(GOAL_LINE + ":")
    if "gatehouse" not in a.proxies:
        w("  not measured (--nginx-only)")
    else:
        for workers, v in goal.get("rps", []):
            w("  workers %s: req/s %.2fx nginx: %s" % (workers, v,
                                                      "met" if v >= GOAL_RPS else "NOT met"))
        for workers, key, v in goal.get("hs", []):
            w("  workers %s: %s CPU per connection %.2fx nginx: %s"
              % (workers, key, v, "met" if v <= 1.0 else "NOT met"))
        if not goal:
            w("  not measured (gatehouse did not run)")
    w("")
    w("Caveats: %s" % m["caveat"])
    return "\n".join(out)


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gatehouse", help="absolute path of the gatehouse binary")
    ap.add_argument("--nginx-only", action="store_true", help="measure nginx only")
    ap.add_argument("--h2c", action="store_true",
                    help="both proxies speak cleartext HTTP/2 with prior knowledge (gatehouse: "
                         "http2: prior_knowledge); no TLS, no handshake runs")
    ap.add_argument("--workers", default="1", help="worker counts to compare (1; e.g. 1,2)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per h2load run (10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of h2load warm-up (2)")
    ap.add_argument("--connections", type=int, default=32, help="h2load clients (-c, 32)")
    ap.add_argument("--streams", type=int, default=10,
                    help="h2load concurrent streams per connection (-m, 10)")
    ap.add_argument("--threads", type=int, default=1, help="h2load threads (-t, 1)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="h2load rounds per proxy, order alternating; the median is reported")
    ap.add_argument("--handshake-time", type=int, default=5,
                    help="seconds per openssl s_time run (5)")
    ap.add_argument("--handshake-clients", type=int, default=2,
                    help="openssl s_time processes run in parallel (2)")
    ap.add_argument("--tls-versions", default="1.3,1.2",
                    help="TLS versions of the handshake runs (1.3,1.2)")
    ap.add_argument("--www", default="/",
                    help="path s_time GETs on each connection (HTTP/1.0, no ALPN; default /: "
                         "without a read the TLS 1.3 ticket never arrives and -reuse does not "
                         "resume); '' for handshakes only")
    ap.add_argument("--key", choices=("ec256", "rsa2048"), default="ec256",
                    help="server key type (ec256: ECDSA P-256, default; rsa2048)")
    ap.add_argument("--skip", default="",
                    help="comma list of parts to skip: small,64k,handshakes")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 3 s h2load runs, 1 s warm-up, 2 s s_time runs")
    ap.add_argument("--nginx-headers", choices=("bare", "forward", "request-id"),
                    default="forward", help="request headers nginx adds, as bench_http.py")
    ap.add_argument("--gatehouse-listen-extra", action="append", default=[], metavar="YAML",
                    help="extra key of gatehouse's listener, e.g. 'http2: on' (repeatable)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--start-timeout", type=float, default=15.0,
                    help="seconds a proxy may take to start (15)")
    a = ap.parse_args(argv)
    if a.quick:
        a.duration, a.warmup, a.handshake_time = min(a.duration, 3), 1, min(a.handshake_time, 2)
    a.workers = [int(x) for x in a.workers.split(",") if x.strip()]
    a.tls_versions = [x.strip() for x in a.tls_versions.split(",") if x.strip()]
    for v in a.tls_versions:
        if v not in ("1.2", "1.3"):
            ap.error("--tls-versions takes 1.2 and/or 1.3")
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    if not a.gatehouse and not a.nginx_only:
        ap.error("give --gatehouse /abs/path/build/gatehouse (or --nginx-only)")
    a.proxies = ["nginx"] if a.nginx_only else ["gatehouse", "nginx"]
    a.access_log = False
    return a


def main(argv):
    a = parse_args(argv)
    usable = len(os.sched_getaffinity(0))
    caveat = ("h2load, openssl s_time, the upstream's two workers and the proxy share %d "
              "CPU(s), so req/s, latencies and handshake rates are noisy and mostly show the "
              "proxies' relative cost; the cpu us/req and us/conn columns are the steadier "
              "figures." % usable)
    meta = {"cpus": os.cpu_count(), "cpus_usable": usable, "kernel": platform.release(),
            "nginx_version": (bh.tool_version([a.nginx, "-v"]) or "?").replace(
                "nginx version: ", ""),
            "h2load": bh.tool_version(["h2load", "--version"]),
            "openssl": bh.tool_version(["openssl", "version"]),
            "python": platform.python_version(), "gatehouse": a.gatehouse,
            "mode": "h2c" if a.h2c else "tls", "key": a.key, "workers": a.workers,
            "duration_s": a.duration, "warmup_s": a.warmup, "connections": a.connections,
            "streams": a.streams, "threads": a.threads, "rounds": a.rounds,
            "handshake_time_s": a.handshake_time, "handshake_clients": a.handshake_clients,
            "tls_versions": a.tls_versions, "www": a.www, "nginx_headers": a.nginx_headers,
            "caveat": caveat, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log("gatehouse HTTP/2 proxy benchmark: gatehouse vs nginx %s, %s" % (
        meta["nginx_version"], "h2c prior knowledge" if a.h2c else "TLS (ALPN h2), %s key" % a.key))
    log("  CPUs: %d usable; %s; %s" % (usable, meta["h2load"], meta["openssl"]))
    log("  gatehouse: %s" % (a.gatehouse or "(not measured: --nginx-only)"))

    missing = [t for t in (a.nginx, "h2load", "openssl") if not shutil.which(t)]
    if missing:
        warn("missing tools: %s (Debian: nginx nghttp2-client openssl; tools/deps.sh bench)"
             % ", ".join(missing))
        return 2
    if a.gatehouse:
        bad = bh.gatehouse_binary(a, "build it first (make build/gatehouse), or --nginx-only")
        if bad:
            warn(bad)
            return 2

    b = H2Bench(a)
    log("  work dir: %s" % b.tmp)
    res = {"meta": meta}

    def setup(b):
        b.certs = make_certs(os.path.join(b.tmp, "certs"), a.key)
        log("  certificates: throwaway CA + server certificate (%s) in %s"
            % (a.key, os.path.dirname(b.certs["cert"])))
        b.start_upstream()
        log("  upstream: nginx, 2 workers, 127.0.0.1:%d, GET / -> \"hello\\n\", GET /64k -> "
            "64 KiB" % b.upport)

    status = bh.run_parts(b, res, [("setup", setup), ("measure", measure)], bh.stop_all)
    res.pop("setup", None)
    return bh.report(b, res, a, status, table(res, a) if status != 2 else None)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        bh.stop_all()
