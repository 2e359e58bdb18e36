#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""gatehouse vs nginx in front of blocking WSGI pools (uwsgi protocol), same pool size.

Usage:
  /usr/bin/python3 tests/bench/bench_wsgi.py --gatehouse /abs/build/gatehouse \
      [--wsgi-workers 4] [--duration 8] [--connections 32] [--quick] [--json OUT]

Setups, each with --wsgi-workers WSGI processes behind a unix socket:
  gatehouse->gh.wsgi   gatehouse (protocol: uwsgi) -> python3 -m gatehouse.wsgi
  gatehouse->uWSGI     gatehouse (protocol: uwsgi) -> Debian's uWSGI (--plugin python3)
  nginx->uWSGI         nginx (uwsgi_pass, default buffering) -> the same uWSGI
Apps: a bare WSGI callable and a Flask "hello" app (tests/bench/apps/).

Figures (see tests/bench/README.md):
  throughput    wrk req/s, p50, p99; gateway and pool CPU per request
  Ir/request    callgrind instructions per request of the gateway only (uWSGI behind both),
                (Ir(N2)-Ir(N1))/(N2-N1)
  slow clients  the fast clients' p99 without and with 500 slow clients holding connections
                (slow readers of a 256 KiB response, request-body tricklers)

A benchmark reports; it never fails on numbers (the goals are printed, not enforced). Exit
status: 0 when everything ran, 1 when some measurement could not run, 2 when the setup
itself failed (a tool, Flask or uWSGI's python3 plugin missing, the gatehouse binary missing
or not serving GET / through uWSGI). Standard library only; every process is started by the
script and stopped by its PID.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_http as bh  # noqa: E402  (processes, wrk, readiness, callgrind, formatting)
from bench_http import (Proc, SetupError, fmt_int, fmt_ms, fmt_num, fmt_ratio, log,  # noqa: E402
                        warn)

REPO = os.path.dirname(os.path.dirname(HERE))
APPS_DIR = os.path.join(HERE, "apps")
ADAPTERS = os.path.join(REPO, "adapters", "python")
PYTHON = "/usr/bin/python3"
BIG_LEN = 262144  # /big of both apps

APPS = {"bare": "bare_app", "flask": "flask_app"}  # name -> module in tests/bench/apps
APP_LABEL = {"bare": "bare WSGI", "flask": "Flask"}
SETUPS = ("gh_ghwsgi", "gh_uwsgi", "nginx_uwsgi")
SETUP_LABEL = {"gh_ghwsgi": "gatehouse->gh.wsgi", "gh_uwsgi": "gatehouse->uWSGI",
               "nginx_uwsgi": "nginx->uWSGI"}
SETUP_PARTS = {"gh_ghwsgi": ("gatehouse", "ghwsgi"), "gh_uwsgi": ("gatehouse", "uwsgi"),
               "nginx_uwsgi": ("nginx", "uwsgi")}
RATIO_LABEL = {"gh_ghwsgi": "ratio gh.wsgi/nginx", "gh_uwsgi": "ratio gh/nginx"}
BASELINE = "nginx_uwsgi"
BOOTED = {"ghwsgi": "worker booted", "uwsgi": "spawned uWSGI worker"}

GOAL_RPS, GOAL_IR, GOAL_SLOW = 1.2, 0.6, 1.5

POOL_KEYS = "    concurrency: %d\n    queue: { limit: 4096, timeout: 30s }"
POOL_NONE = "    # concurrency/queue left out (refused by --check, or --no-pool-keys)"

# The request headers gatehouse adds to every request it forwards (as uwsgi vars), for nginx
# to add as well (--nginx-headers forward, the default), as in bench_http.py.
FORWARD_PARAMS = """\
            # the headers gatehouse adds to each request it forwards, as uwsgi vars
            uwsgi_param HTTP_X_FORWARDED_FOR $proxy_add_x_forwarded_for;
            uwsgi_param HTTP_X_FORWARDED_PROTO $scheme;
            uwsgi_param HTTP_X_FORWARDED_HOST $http_host;
            uwsgi_param HTTP_FORWARDED "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";
            uwsgi_param HTTP_X_REQUEST_START "t=${msec}";"""
REQUEST_ID_PARAM = """
            uwsgi_param HTTP_X_REQUEST_ID $request_id;"""


def nginx_params(mode):
    return {"bare": "", "forward": FORWARD_PARAMS,
            "request-id": FORWARD_PARAMS + REQUEST_ID_PARAM}[mode]


# ----------------------------------------------------------------------------- helpers

def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def raise_nofile(want):
    """Raises RLIMIT_NOFILE's soft limit towards |want| (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            warn("could not raise RLIMIT_NOFILE to %d: %s" % (target, e))
    return soft


def uwsgi_packet(path):
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", path), (b"PATH_INFO", path),
             (b"QUERY_STRING", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
             (b"SERVER_NAME", b"localhost"), (b"SERVER_PORT", b"80"),
             (b"REMOTE_ADDR", b"127.0.0.1"), (b"HTTP_HOST", b"localhost")]
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    return struct.pack("<BHB", 0, len(body), 0) + body


def uwsgi_check(sock_path, timeout=5.0):
    """One GET / straight to the uwsgi server on |sock_path| (the answer ends at close);
    None if it was 200 "hello\\n", else what went wrong."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(sock_path)
            s.sendall(uwsgi_packet(b"/"))
            data = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
    except OSError as e:
        return "%s: %s" % (type(e).__name__, e)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or body != bh.BODY:
        return "got %r" % bytes(data[:80])
    return None


def big_check(port, timeout=20.0):
    """One GET /big through the gateway on |port|; None if 200 with BIG_LEN bytes."""
    try:
        c = bh.HTTPConn(port, timeout)
        c.req = ("GET /big HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port).encode()
        try:
            status, body = c.get()
        finally:
            c.close()
    except (OSError, ValueError, IndexError) as e:
        return "%s: %s" % (type(e).__name__, e)
    if status != 200 or len(body) != BIG_LEN:
        return "GET /big: status %d, %d bytes" % (status, len(body))
    return None


def json_lines(path):
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


# ----------------------------------------------------------------------------- servers

class WsgiBench(bh.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.backends = {}  # (server, app) -> (Proc, socket path)
        self.pool_text = POOL_NONE
        self.pool_used = False
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            with open("/proc/sys/net/core/somaxconn") as f:
                somaxconn = int(f.read())
        except (OSError, ValueError):
            somaxconn = 128
        self.backlog = min(1024, somaxconn)  # pools: queued requests wait in the backlog

    # --- the WSGI pools
    def start_backend(self, server, app):
        a = self.args
        d = self.dir("%s-%s" % (server, app))
        sock = os.path.join(d, "app.sock")
        mod = APPS[app]
        env = None
        if server == "uwsgi":
            argv = [a.uwsgi, "--plugin", "python3", "--socket", sock,
                    "--processes", str(a.wsgi_workers), "--master", "--need-app",
                    "--die-on-term", "--disable-logging", "--listen", str(self.backlog),
                    "--chdir", APPS_DIR, "--wsgi-file", os.path.join(APPS_DIR, mod + ".py"),
                    "--callable", "app"]
        else:
            env = dict(os.environ, PYTHONUNBUFFERED="1",
                       PYTHONPATH=ADAPTERS + (":" + os.environ["PYTHONPATH"]
                                              if os.environ.get("PYTHONPATH") else ""))
            argv = [PYTHON, "-m", "gatehouse.wsgi", mod + ":app", "--bind", "unix:" + sock,
                    "--workers", str(a.wsgi_workers), "--backlog", str(self.backlog),
                    "--chdir", APPS_DIR]
        pr = Proc(server, argv, d, env=env)
        deadline = time.monotonic() + a.start_timeout
        err = "did not come up"
        while time.monotonic() < deadline and pr.alive():
            text = ""
            for path in (pr.err_path, pr.out_path):
                try:
                    with open(path, errors="replace") as f:
                        text += f.read()
                except OSError:
                    pass
            if text.count(BOOTED[server]) >= a.wsgi_workers and os.path.exists(sock):
                err = uwsgi_check(sock)
                if err is None:
                    break
            time.sleep(0.1)
        else:
            died = not pr.alive()
            pr.stop(signal.SIGTERM, timeout=20)
            raise SetupError("%s serving the %s app on unix:%s: %s:\n%s"
                             % (server, app, sock, "exited with status %s" % pr.p.returncode
                                if died else "not ready after %.0fs (%s)" % (a.start_timeout,
                                                                              err),
                                pr.tail()))
        self.backends[(server, app)] = (pr, sock)
        return pr, sock

    def use_backends(self, wanted):
        """Stops the pools not in |wanted| ((server, app) pairs), starts the missing ones."""
        for key in list(self.backends):
            if key not in wanted:
                self.backends.pop(key)[0].stop(signal.SIGTERM, timeout=30)
        for key in wanted:
            pr_sock = self.backends.get(key)
            if pr_sock and not pr_sock[0].alive():
                self.errors.append("%s (%s app) died:\n%s" % (key[0], key[1], pr_sock[0].tail()))
                self.backends.pop(key)
            if key not in self.backends:
                self.start_backend(*key)

    # --- the gateways
    def gh_conf(self, d, port, workers, sock, pool=None, name="gatehouse.yaml"):
        return bh.render("gatehouse_uwsgi.yaml.in", os.path.join(d, name), WORKERS=workers,
                         PORT=port, SOCK=sock, TMPDIR=d,
                         POOL=self.pool_text if pool is None else pool)

    def nginx_uwsgi_conf(self, d, port, workers, sock, master=True):
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        a = self.args
        wc = max(4096, 2 * (a.slow_clients + a.connections) + 512)
        return bh.render("nginx_uwsgi.conf.in", os.path.join(d, "nginx.conf"), PREFIX=d,
                         PORT=port, SOCK=sock, WORKERS=workers, MASTER="on" if master else "off",
                         USER=bh.user_line(), NOFILE=max(self.nofile, 1024),
                         WORKER_CONNECTIONS=wc, REUSEPORT="reuseport" if workers > 1 else "",
                         FORWARD_PARAMS=nginx_params(a.nginx_headers))

    def start_gateway(self, gateway, sock, workers, tag, wrapper=None, single_process=False):
        d = self.dir("%s-%s-w%d%s" % (gateway, tag, workers,
                                      "-" + wrapper[0].rsplit("/", 1)[-1] if wrapper else ""))
        port = bh.free_port()
        if gateway == "nginx":
            argv = self.nginx_argv(d, self.nginx_uwsgi_conf(d, port, workers, sock,
                                                            master=not single_process))
        else:
            argv = self.gatehouse_argv(d, self.gh_conf(d, port, workers, sock))
        if wrapper:
            argv = list(wrapper) + argv
        return Proc(gateway, argv, d), port, d

    def start_proxy(self, kind, workers, wrapper=None, single_process=False):
        """For bench_http.traced_run: |kind| is "gatehouse@APP" or "nginx@APP", in front of
        the uWSGI pool serving APP (so the comparison is gateway vs gateway)."""
        gateway, app = kind.split("@", 1)
        sock = self.backends[("uwsgi", app)][1]
        return self.start_gateway(gateway, sock, workers, app + "-uwsgi", wrapper,
                                  single_process)

    def probe_pool_keys(self):
        """Runs `gatehouse --check` once without and once with concurrency/queue; uses them
        when accepted. Returns what --check said about them."""
        d = self.dir("check")
        sock = os.path.join(d, "probe.sock")
        res = {}
        keys = "concurrency: %d, queue: {limit: 4096, timeout: 30s}" % self.args.concurrency
        if self.args.no_pool_keys:
            return {"used": False, "keys": keys, "check": "not tried: --no-pool-keys"}
        for name, pool in (("base", "    # no pool keys"),
                           ("pool", POOL_KEYS % self.args.concurrency)):
            conf = self.gh_conf(d, bh.free_port(), 1, sock, pool=pool, name=name + ".yaml")
            try:
                p = subprocess.run([self.args.gatehouse, "--check", "-c", conf],
                                   capture_output=True, text=True, timeout=20)
                res[name] = (p.returncode, (p.stdout + p.stderr).strip())
            except (OSError, subprocess.TimeoutExpired) as e:
                res[name] = (None, str(e))
        if res["base"][0] != 0:
            with open(os.path.join(d, "base.yaml")) as f:
                conf = "".join("    " + l for l in f if not l.startswith("#"))
            raise SetupError("gatehouse --check refuses the benchmark's configuration: %s\n"
                             "  FILE:\n%s" % (res["base"][1] or res["base"][0], conf))
        self.pool_used = res["pool"][0] == 0
        self.pool_text = POOL_KEYS % self.args.concurrency if self.pool_used else POOL_NONE
        msg = res["pool"][1].splitlines()[-1] if res["pool"][1] else ""
        return {"used": self.pool_used, "keys": keys,
                "check": msg if self.pool_used else "refused by --check: %s" % msg}


# ----------------------------------------------------------------------------- measurements

def measure(b, setup, pr, port, backend_pr, connections, duration):
    """One wrk run with the gateway's and the pool's CPU; raises RuntimeError."""
    return bh.wrk_cpu(port, duration, connections, gateway=pr, pool=backend_pr)


def throughput(b):
    a = b.args
    log("\n== throughput: wrk -t2 -c%d -d%ds --latency, warm-up %ds, %d round(s); WSGI pools "
        "of %d, gateway workers %d ==" % (a.connections, a.duration, a.warmup, a.rounds,
                                          a.wsgi_workers, a.gateway_workers))
    res = {}
    for ai, app in enumerate(a.apps):
        row = {}
        b.use_backends({(SETUP_PARTS[s][1], app) for s in a.setups})
        procs = {}
        for setup in a.setups:
            gateway, server = SETUP_PARTS[setup]
            bpr, sock = b.backends[(server, app)]
            pr, port, d = b.start_gateway(gateway, sock, a.gateway_workers,
                                          "%s-%s" % (app, server))
            err = b.ready(pr, port, a.gateway_workers, a.start_timeout)
            if err:
                b.errors.append("throughput: %s (%s): %s" % (SETUP_LABEL[setup], app, err))
                warn("%s (%s): %s" % (SETUP_LABEL[setup], app, err))
                pr.stop()
                row[setup] = {"error": err.splitlines()[0]}
                continue
            procs[setup] = (pr, port, bpr)
            try:
                bh.wrk(port, a.warmup, a.connections)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                warn("%s warm-up: %s" % (SETUP_LABEL[setup], e))
        runs = {s: [] for s in procs}
        for rnd in range(a.rounds):
            order = list(procs)
            k = (ai + rnd) % len(order) if order else 0
            order = order[k:] + order[:k]  # rotate who goes first
            for setup in order:
                pr, port, bpr = procs[setup]
                if not pr.alive():
                    continue
                try:
                    r = measure(b, setup, pr, port, bpr, a.connections, a.duration)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    b.errors.append("throughput: %s (%s): %s" % (SETUP_LABEL[setup], app, e))
                    warn("%s: %s" % (SETUP_LABEL[setup], e))
                    continue
                runs[setup].append(r)
                log("  %-6s %-19s round %d: %7.0f req/s  p50 %-8s p99 %-8s gateway %s us/req"
                    "  pool %s us/req%s" % (app, SETUP_LABEL[setup], rnd + 1, r["rps"],
                                            fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                                            fmt_num(r["gateway_cpu_us_per_req"], 1),
                                            fmt_num(r["pool_cpu_us_per_req"], 0),
                                            bh.errs_note(r)))
        for setup, (pr, port, bpr) in procs.items():
            if not pr.alive():
                msg = "%s (%s) died during the run:\n%s" % (SETUP_LABEL[setup], app, pr.tail())
                b.errors.append("throughput: " + msg)
                warn(msg)
            pr.stop(signal.SIGTERM, timeout=20)
            row[setup] = bh.median_run(runs[setup]) if runs[setup] else {
                "error": "no successful run"}
        row["ratio"] = {}
        for setup in a.setups:
            if setup != BASELINE and BASELINE in a.setups:
                row["ratio"][setup] = bh.ratio_of(row.get(setup) or {}, row.get(BASELINE) or {},
                                               ("rps", "p50_ms", "p99_ms",
                                                "gateway_cpu_us_per_req",
                                                "pool_cpu_us_per_req"))
        res[app] = row
    return res


def instructions(b):
    a = b.args
    log("\n== instructions per request, gateway only: callgrind, 1 worker, 1 keep-alive "
        "connection, N=%d and N=%d, uWSGI (%d processes) behind both ==" % (
            a.n[0], a.n[1], a.wsgi_workers))
    res = {}
    for app in a.apps:
        res[app] = {}
        try:
            b.use_backends({("uwsgi", app)})
        except SetupError as e:
            b.errors.append("callgrind: %s: %s" % (app, e))
            warn(str(e))
            continue
        for gateway in ("gatehouse", "nginx"):
            kind = "%s@%s" % (gateway, app)
            try:
                r = bh.per_request(b, kind, "callgrind", 1)
                res[app][gateway] = r
                log("  %-16s %s Ir/request" % (kind, fmt_int(r["per_request"])))
            except (RuntimeError, OSError) as e:
                b.errors.append("callgrind: %s: %s" % (kind, e))
                warn("callgrind %s: %s" % (kind, e))
                res[app][gateway] = {"error": str(e).splitlines()[0]}
        g, n = res[app].get("gatehouse") or {}, res[app].get("nginx") or {}
        if g.get("per_request") and n.get("per_request"):
            res[app]["ratio"] = g["per_request"] / n["per_request"]
    return res


def wait_slow_ready(slow, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in json_lines(slow.out_path):
            if ev.get("event") == "ready":
                return ev
        if not slow.alive():
            break
        time.sleep(0.2)
    return None


def slow_clients(b):
    a = b.args
    app = a.slow_app
    log("\n== slow clients: fast clients (wrk -t2 -c%d -d%ds GET /) without and with %d slow "
        "ones (%s: %d bytes every %.2fs, %s app) ==" % (a.connections, a.duration,
                                                        a.slow_clients, a.slow_kind,
                                                        a.slow_bytes, a.slow_interval, app))
    res = {"app": app, "clients": a.slow_clients, "kind": a.slow_kind, "setups": {}}
    for setup in a.setups:
        gateway, server = SETUP_PARTS[setup]
        label = SETUP_LABEL[setup]
        out = res["setups"][setup] = {}
        try:
            b.use_backends({(server, app)})
        except SetupError as e:
            b.errors.append("slow clients: %s: %s" % (label, e))
            out["error"] = str(e).splitlines()[0]
            continue
        bpr, sock = b.backends[(server, app)]
        pr, port, d = b.start_gateway(gateway, sock, a.gateway_workers,
                                      "slow-%s-%s" % (app, server))
        slow = None
        try:
            err = b.ready(pr, port, a.gateway_workers, a.start_timeout) or big_check(port)
            if err:
                raise RuntimeError(err)
            try:
                bh.wrk(port, a.warmup, a.connections)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                warn("%s warm-up: %s" % (label, e))
            tree = bh.proc_tree(pr.pid)
            out["rss_kib_before"] = rss_kib(tree)
            out["without"] = measure(b, setup, pr, port, bpr, a.connections, a.duration)
            t0 = time.monotonic()
            slow = Proc("slow-clients", [PYTHON, os.path.join(HERE, "slow_clients.py"),
                                         "--port", str(port), "--n", str(a.slow_clients),
                                         "--kind", a.slow_kind, "--bytes", str(a.slow_bytes),
                                         "--interval", str(a.slow_interval),
                                         "--ready-timeout", str(a.slow_ready_timeout),
                                         "--max-seconds", str(a.slow_ready_timeout
                                                              + 3 * a.duration + 120)], d)
            ready = wait_slow_ready(slow, a.slow_ready_timeout + 15)
            if ready is None:
                raise RuntimeError("the slow clients never reported ready:\n%s" % slow.tail())
            out["slow_ready"] = ready
            out["slow_ready_s"] = time.monotonic() - t0
            if not ready.get("all"):
                msg = ("only %d of %d slow clients got going (%s)" % (
                    ready.get("ready", 0), a.slow_clients,
                    ready.get("connect_errors") or ready.get("errors") or ready.get("by_state")))
                b.errors.append("slow clients: %s: %s" % (label, msg))
                warn("%s: %s" % (label, msg))
            out["rss_kib_with"] = rss_kib(tree)
            s0, t1 = bh.cpu_seconds([slow.pid]), time.monotonic()
            out["with"] = measure(b, setup, pr, port, bpr, a.connections, a.duration)
            out["slow_clients_cpu_pct"] = (100.0 * (bh.cpu_seconds([slow.pid]) - s0)
                                           / (time.monotonic() - t1))
            out["rss_kib_with"] = max(out["rss_kib_with"], rss_kib(tree))
            slow.stop(signal.SIGTERM, timeout=20)
            done = [ev for ev in json_lines(slow.out_path) if ev.get("event") == "done"]
            out["slow_done"] = done[-1] if done else None
            if not pr.alive():
                raise RuntimeError("died with the slow clients present:\n%s" % pr.tail())
            after = bh.http_check(port, timeout=10)
            if after:
                raise RuntimeError("does not answer after the slow clients left: %s" % after)
            w0, w1 = out["without"], out["with"]
            out["ratio"] = {k: (w1[k] / w0[k] if w0.get(k) and w1.get(k) else None)
                            for k in ("p99_ms", "p50_ms", "rps", "gateway_cpu_us_per_req")}
            sd = out["slow_done"] or {}
            log("  %-19s without: %7.0f req/s p50 %-8s p99 %-8s | with %d slow (%d open at the "
                "end): %7.0f req/s p50 %-8s p99 %-8s | p99 with/without %s%s%s" % (
                    label, w0["rps"], fmt_ms(w0["p50_ms"]), fmt_ms(w0["p99_ms"]),
                    ready.get("ready", 0), sd.get("open", -1), w1["rps"], fmt_ms(w1["p50_ms"]),
                    fmt_ms(w1["p99_ms"]), fmt_ratio(out["ratio"]["p99_ms"]), bh.errs_note(w0),
                    bh.errs_note(w1)))
            if sd and sd.get("open", 0) < sd.get("connected", 0):
                log("  %-19s slow clients at the end: %s, statuses %s%s" % (
                    "", sd.get("by_state"), sd.get("statuses"),
                    ", errors %s" % sd["errors"] if sd.get("errors") else ""))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            msg = str(e)
            b.errors.append("slow clients: %s: %s" % (label, msg))
            warn("slow clients: %s: %s" % (label, msg))
            out["error"] = msg.splitlines()[0]
        finally:
            if slow is not None and slow.alive():
                slow.stop(signal.SIGTERM, timeout=20)
            pr.stop(signal.SIGTERM, timeout=20)
    return res


# ----------------------------------------------------------------------------- output

def goals(res, a):
    out = []
    tp = res.get("throughput") or {}
    for app in a.apps:
        for setup in ("gh_ghwsgi", "gh_uwsgi"):
            r = ((tp.get(app) or {}).get("ratio") or {}).get(setup) or {}
            v = r.get("rps")
            if setup in a.setups and BASELINE in a.setups and "throughput" not in a.skip:
                out.append({"goal": "req/s %s / nginx->uWSGI, %s" % (SETUP_LABEL[setup],
                                                                     APP_LABEL[app]),
                            "target": ">= %.1fx" % GOAL_RPS, "value": v,
                            "met": None if v is None else v >= GOAL_RPS})
    ins = res.get("instructions") or {}
    for app in a.apps:
        v = (ins.get(app) or {}).get("ratio")
        if "callgrind" not in a.skip:
            out.append({"goal": "gateway Ir/request gatehouse / nginx, %s" % APP_LABEL[app],
                        "target": "<= %.1fx" % GOAL_IR, "value": v,
                        "met": None if v is None else v <= GOAL_IR})
    sl = (res.get("slow_clients") or {}).get("setups") or {}
    for setup in a.setups:
        if "slow" in a.skip:
            break
        v = ((sl.get(setup) or {}).get("ratio") or {}).get("p99_ms")
        g = {"goal": "fast p99 with/without %d slow clients, %s" % (a.slow_clients,
                                                                    SETUP_LABEL[setup]),
             "target": "<= %.1fx" % GOAL_SLOW, "value": v,
             "met": None if v is None else v <= GOAL_SLOW}
        if SETUP_PARTS[setup][0] == "nginx":
            g["target"] = "(reference)"
            g["met"] = None
        out.append(g)
    return out


def table(res, a):
    out = []
    w = out.append
    m = res["meta"]
    w("")
    w("=" * 96)
    w("SUMMARY  gatehouse vs nginx %s in front of WSGI pools of %d (uWSGI %s, gatehouse.wsgi),"
      % (m["nginx_version"], a.wsgi_workers, m["uwsgi_version"]))
    w("         gateway workers %d, pools on unix sockets" % a.gateway_workers)
    w("=" * 96)
    pk = m["pool_keys"]
    w("gatehouse pool keys: %s" % ("used: " + pk["keys"] if pk.get("used") else
                                   "not used (%s)" % (pk.get("check") or "?")))
    tp = res.get("throughput")
    if tp:
        w("")
        w("Throughput (wrk -t2 -c%d -d%ds --latency, median of %d round(s))"
          % (a.connections, a.duration, a.rounds))
        w("%-10s %-20s %9s %9s %9s %13s %13s %7s" % ("app", "setup", "req/s", "p50", "p99",
                                                   "gw cpu us/req", "pool us/req", "errors"))
        for app in a.apps:
            row = tp.get(app) or {}
            for setup in a.setups:
                r = row.get(setup) or {}
                if "error" in r:
                    w("%-10s %-20s did not run: %s" % (APP_LABEL[app], SETUP_LABEL[setup],
                                                       r["error"]))
                    continue
                w("%-10s %-20s %9.0f %9s %9s %13s %13s %7d" % (
                    APP_LABEL[app], SETUP_LABEL[setup], r["rps"], fmt_ms(r["p50_ms"]),
                    fmt_ms(r["p99_ms"]), fmt_num(r.get("gateway_cpu_us_per_req"), 1),
                    fmt_num(r.get("pool_cpu_us_per_req"), 0),
                    (r.get("non2xx") or 0) + (r.get("socket_errors") or 0)))
            for setup, rt in (row.get("ratio") or {}).items():
                rt = rt or {}
                w("%-10s %-20s %9s %9s %9s %13s %13s" % (
                    APP_LABEL[app], RATIO_LABEL[setup],
                    fmt_ratio(rt.get("rps")), fmt_ratio(rt.get("p50_ms")),
                    fmt_ratio(rt.get("p99_ms")), fmt_ratio(rt.get("gateway_cpu_us_per_req")),
                    fmt_ratio(rt.get("pool_cpu_us_per_req"))))
        w("  ratios are against nginx->uWSGI: req/s > 1 is better for gatehouse, latency and "
          "cpu < 1 are.")
        w("  'ratio gh.wsgi/nginx' = gatehouse->gh.wsgi vs nginx->uWSGI (whole stack); "
          "'ratio gh/nginx' = gatehouse->uWSGI vs nginx->uWSGI (same pool).")
    ins = res.get("instructions")
    if ins:
        w("")
        w("Instructions per request, gateway only (callgrind Ir, 1 worker, 1 keep-alive "
          "connection, (Ir(%d)-Ir(%d))/%d; uWSGI behind both)" % (a.n[1], a.n[0],
                                                                  a.n[1] - a.n[0]))
        w("%-10s %14s %14s %10s %16s %16s" % ("app", "gatehouse", "nginx", "gh/nginx",
                                              "gh start-up Ir", "nginx start-up"))
        for app in a.apps:
            row = ins.get(app) or {}
            g, n = row.get("gatehouse") or {}, row.get("nginx") or {}
            w("%-10s %14s %14s %10s %16s %16s" % (
                APP_LABEL[app], "error" if "error" in g else fmt_int(g.get("per_request")),
                "error" if "error" in n else fmt_int(n.get("per_request")),
                fmt_ratio(row.get("ratio")), fmt_int(g.get("startup")),
                fmt_int(n.get("startup"))))
    sl = res.get("slow_clients")
    if sl:
        w("")
        w("Slow clients: fast wrk -c%d GET / without and with %d slow clients (%s, %s app, "
          "%d B per %.2fs)" % (a.connections, sl["clients"], sl["kind"], APP_LABEL[sl["app"]],
                               a.slow_bytes, a.slow_interval))
        w("%-20s %9s %9s %9s %9s %9s %9s %8s %8s %9s" % (
            "setup", "p99 w/o", "p99 with", "ratio", "p50 w/o", "p50 with", "rps ratio",
            "slow up", "errors", "RSS with"))
        for setup in a.setups:
            r = sl["setups"].get(setup) or {}
            if "error" in r or "with" not in r:
                w("%-20s did not run: %s" % (SETUP_LABEL[setup], r.get("error", "?")))
                continue
            w0, w1, rt = r["without"], r["with"], r["ratio"]
            sd = r.get("slow_done") or {}
            errs = sum((x.get("non2xx") or 0) + (x.get("socket_errors") or 0) for x in (w0, w1))
            w("%-20s %9s %9s %9s %9s %9s %9s %8s %8d %8.0fM" % (
                SETUP_LABEL[setup], fmt_ms(w0["p99_ms"]), fmt_ms(w1["p99_ms"]),
                fmt_ratio(rt["p99_ms"]), fmt_ms(w0["p50_ms"]), fmt_ms(w1["p50_ms"]),
                fmt_ratio(rt["rps"]), "%d/%d" % (sd.get("open", 0), sl["clients"]), errs,
                r.get("rss_kib_with", 0) / 1024.0))
        w("  'slow up': slow clients still connected when they were stopped; errors: the fast "
          "clients' non-2xx and socket errors; RSS: the gateway's.")
    gl = res.get("goals")
    if gl:
        w("")
        w("Goals (reported, not enforced)")
        for g in gl:
            met = {True: "met", False: "NOT met", None: "-"}[g["met"]]
            w("  %-66s %8s  target %-11s %s" % (g["goal"], fmt_ratio(g["value"]), g["target"],
                                                met))
    w("")
    w("Caveats: %s" % m["caveat"])
    return "\n".join(out)


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gatehouse", required=True, help="absolute path of the gatehouse binary")
    ap.add_argument("--wsgi-workers", type=int, default=4,
                    help="WSGI processes in every pool (4)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="gatehouse's concurrency: for the pool (default: --wsgi-workers)")
    ap.add_argument("--no-pool-keys", action="store_true",
                    help="never give gatehouse concurrency:/queue:, even if it accepts them")
    ap.add_argument("--gateway-workers", type=int, default=1,
                    help="gatehouse workers = nginx worker_processes (1)")
    ap.add_argument("--apps", default="bare,flask", help="apps to measure (bare,flask)")
    ap.add_argument("--setups", default=",".join(SETUPS),
                    help="comma list of %s" % ",".join(SETUPS))
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (8)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up (2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="wrk rounds per setup, order rotating; the median is reported")
    ap.add_argument("--n", default="2000,10000",
                    help="request counts N1,N2 of the callgrind runs (2000,10000)")
    ap.add_argument("--slow-clients", type=int, default=500, help="slow clients (500)")
    ap.add_argument("--slow-kind", choices=("mix", "read", "body"), default="mix",
                    help="slow readers of /big, request-body tricklers, or half each (mix)")
    ap.add_argument("--slow-bytes", type=int, default=64,
                    help="bytes each slow client reads or sends per turn (64)")
    ap.add_argument("--slow-interval", type=float, default=0.1,
                    help="seconds between a slow client's turns (0.1)")
    ap.add_argument("--slow-app", default="bare", choices=sorted(APPS),
                    help="app behind the slow-client runs (bare)")
    ap.add_argument("--slow-ready-timeout", type=float, default=60.0,
                    help="seconds the slow clients may take to get going (60)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 s runs, 1 s warm-up, N=200,1000")
    ap.add_argument("--skip", default="",
                    help="comma list of parts to skip: throughput,callgrind,slow")
    ap.add_argument("--nginx-headers", choices=("bare", "forward", "request-id"),
                    default="forward",
                    help="uwsgi vars nginx adds beyond uwsgi_params: none; X-Forwarded-*, "
                         "Forwarded, X-Request-Start as gatehouse (default); those plus "
                         "X-Request-Id")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (configs, logs, callgrind files)")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--uwsgi", default="/usr/bin/uwsgi")
    ap.add_argument("--start-timeout", type=float, default=20.0,
                    help="seconds a gateway or pool may take to start natively (20)")
    ap.add_argument("--valgrind-timeout", type=float, default=120.0,
                    help="seconds a gateway may take to start or stop under valgrind (120)")
    a = ap.parse_args(argv)
    if a.quick:
        a.duration, a.warmup, a.n = min(a.duration, 2), 1, "200,1000"
    a.n = [int(x) for x in a.n.split(",")]
    if len(a.n) != 2 or a.n[0] >= a.n[1] or a.n[0] < 1:
        ap.error("--n takes two increasing counts, e.g. 2000,10000")
    a.apps = [x.strip() for x in a.apps.split(",") if x.strip()]
    bad = [x for x in a.apps if x not in APPS]
    if bad or not a.apps:
        ap.error("--apps: unknown %s (known: %s)" % (bad, ", ".join(APPS)))
    a.setups = [x.strip() for x in a.setups.split(",") if x.strip()]
    bad = [x for x in a.setups if x not in SETUPS]
    if bad or not a.setups:
        ap.error("--setups: unknown %s (known: %s)" % (bad, ", ".join(SETUPS)))
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    if a.concurrency is None:
        a.concurrency = a.wsgi_workers
    if a.wsgi_workers < 1 or a.gateway_workers < 1 or a.slow_clients < 1:
        ap.error("--wsgi-workers, --gateway-workers and --slow-clients must be at least 1")
    if a.concurrency < 0:
        ap.error("--concurrency must be at least 0")
    return a


def main(argv):
    a = parse_args(argv)
    nofile = raise_nofile(max(65536, 4 * (a.slow_clients + a.connections) + 1024))
    usable = len(os.sched_getaffinity(0))
    caveat = ("wrk, the slow clients, the gateway and %d WSGI processes share %d CPU(s); the "
              "pools are the bottleneck, so req/s and latencies mostly show what the gateway "
              "takes away from them, and are noisy. Gateway Ir/request (callgrind) is the "
              "stable figure." % (a.wsgi_workers, usable))
    meta = {"cpus": os.cpu_count(), "cpus_usable": usable, "kernel": platform.release(),
            "nginx_version": (bh.tool_version([a.nginx, "-v"]) or "?").replace(
                "nginx version: ", ""),
            "uwsgi_version": bh.tool_version([a.uwsgi, "--version"]) or "?",
            "wrk": bh.tool_version(["wrk", "-v"]),
            "valgrind": bh.tool_version(["valgrind", "--version"]),
            "python": platform.python_version(), "gatehouse": a.gatehouse,
            "wsgi_workers": a.wsgi_workers, "gateway_workers": a.gateway_workers,
            "apps": a.apps, "setups": a.setups, "duration_s": a.duration,
            "warmup_s": a.warmup, "connections": a.connections, "rounds": a.rounds, "n": a.n,
            "slow_clients": a.slow_clients, "slow_kind": a.slow_kind,
            "slow_bytes": a.slow_bytes, "slow_interval_s": a.slow_interval,
            "slow_app": a.slow_app, "nginx_headers": a.nginx_headers, "nofile": nofile,
            "concurrency": None if a.no_pool_keys else a.concurrency,
            "caveat": caveat, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log("gatehouse WSGI benchmark: gatehouse vs nginx %s -> uWSGI %s, pools of %d"
        % (meta["nginx_version"], meta["uwsgi_version"], a.wsgi_workers))
    log("  CPUs: %d online, %d usable; kernel %s; RLIMIT_NOFILE %d"
        % (meta["cpus"], usable, meta["kernel"], nofile))
    log("  NOTE: on a shared %d-core machine the pools, wrk and the gateway compete for the"
        % usable)
    log("        cores: req/s and latencies are noisy; gateway Ir/request is the stable figure.")
    log("  gatehouse: %s" % a.gatehouse)

    needed = {"nginx": a.nginx, "wrk": "wrk", "uwsgi": a.uwsgi}
    if "callgrind" not in a.skip:
        needed["valgrind"] = "valgrind"
    missing = [k for k, v in needed.items() if not shutil.which(v)]
    if "flask" in a.apps and importlib.util.find_spec("flask") is None:
        missing.append("python3-flask")
    if missing:
        warn("missing: %s (Debian: nginx wrk valgrind uwsgi uwsgi-plugin-python3 "
             "python3-flask; tools/deps.sh bench and test install them)" % ", ".join(missing))
        return 2
    bad = bh.gatehouse_binary(a, "build it first (make build/gatehouse)")
    if bad:
        warn(bad)
        return 2

    b = WsgiBench(a)
    log("  work dir: %s" % b.tmp)
    res = {"meta": meta}

    def preflight(b):
        meta["pool_keys"] = b.probe_pool_keys()
        pk = meta["pool_keys"]
        log("  gatehouse pool keys (%s): %s" % (
            pk["keys"], "accepted by --check, used" if pk["used"] else "left out"
            + (" (%s)" % pk["check"] if pk["check"] else "")))
        log("  pools: unix sockets, %d processes, listen backlog %d" % (a.wsgi_workers,
                                                                        b.backlog))
        # gatehouse must serve GET / through a uWSGI pool
        b.use_backends({("uwsgi", "bare")})
        pr, port, d = b.start_gateway("gatehouse", b.backends[("uwsgi", "bare")][1], 1,
                                      "preflight")
        err = b.ready(pr, port, 1, a.start_timeout) or big_check(port)
        pr.stop(signal.SIGTERM, timeout=20)
        if err:
            raise bh.preflight_error(a, d, "gatehouse does not serve GET / (or /big) through "
                                     "uWSGI", err)
        log("  gatehouse preflight: GET / and GET /big through uWSGI ok")

    parts = [("preflight", preflight)]
    if "throughput" not in a.skip:
        parts.append(("throughput", throughput))
    if "slow" not in a.skip:
        parts.append(("slow_clients", slow_clients))
    if "callgrind" not in a.skip:
        parts.append(("instructions", instructions))
    status = bh.run_parts(b, res, parts, bh.stop_all)
    res.pop("preflight", None)
    res["goals"] = goals(res, a)
    shown = status != 2 and "pool_keys" in meta
    return bh.report(b, res, a, status, table(res, a) if shown else None)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        bh.stop_all()
