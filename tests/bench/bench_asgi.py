#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""gatehouse in front of gatehouse.asgi vs uvicorn (directly, and behind nginx), same number
of ASGI app processes.

Usage:
  /usr/bin/python3 tests/bench/bench_asgi.py --gatehouse /abs/build/gatehouse \
      [--app-workers 2] [--duration 8] [--connections 32] [--quick] [--json OUT]

Setups, each with --app-workers ASGI processes:
  gatehouse->gh.asgi   gatehouse (protocol: asgi, long-lived multiplexed connections on a
                       unix socket) -> python3 -m gatehouse.asgi
  uvicorn              wrk straight at uvicorn (--http httptools --loop uvloop) on 127.0.0.1
  nginx->uvicorn       nginx (proxy_pass, pooled keep-alive upstream connections) -> the same
                       uvicorn
Apps: a bare ASGI callable and a FastAPI "hello" app (tests/bench/apps/).

Figures (see tests/bench/README.md): wrk req/s, p50, p99; CPU per request of the front
(gatehouse or nginx) and of the app processes; ratios gatehouse/uvicorn and
gatehouse/nginx->uvicorn; the goal (gatehouse->gh.asgi >= 1.1x uvicorn's req/s with a lower
p99), printed and never enforced.

A benchmark reports; it never fails on numbers. Exit status: 0 when everything ran, 1 when
some measurement could not run, 2 when a setup failed (a tool or Python module missing, a
pool not starting, or the gatehouse binary missing or not serving GET / through
gatehouse.asgi; the other setups are still measured and reported). Standard library only;
every process is started by the script and stopped by its PID.
"""

import argparse
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_http as bh  # noqa: E402  (processes, wrk, readiness, report, formatting)
from bench_http import (Proc, SetupError, fmt_ms, fmt_num, fmt_ratio, log, warn)  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
APPS_DIR = os.path.join(HERE, "apps")
ADAPTERS = os.path.join(REPO, "adapters", "python")
PYTHON = "/usr/bin/python3"

APPS = {"bare": "asgi_bare_app", "fastapi": "fastapi_app"}  # name -> module in apps/
APP_LABEL = {"bare": "bare ASGI", "fastapi": "FastAPI"}
EXPECT = {"bare": b"hello\n", "fastapi": b'{"hello":"world"}'}  # GET / of each app
SETUPS = ("gh_ghasgi", "uvicorn", "nginx_uvicorn")
SETUP_LABEL = {"gh_ghasgi": "gatehouse->gh.asgi", "uvicorn": "uvicorn",
               "nginx_uvicorn": "nginx->uvicorn"}
SETUP_PARTS = {"gh_ghasgi": ("gatehouse", "ghasgi"), "uvicorn": (None, "uvicorn"),
               "nginx_uvicorn": ("nginx", "uvicorn")}  # (front, app server)
SERVER_LABEL = {"ghasgi": "gatehouse.asgi", "uvicorn": "uvicorn"}
BOOTED = {"ghasgi": "worker booted", "uvicorn": "Application startup complete."}
GH = "gh_ghasgi"
BASELINES = ("uvicorn", "nginx_uvicorn")  # gatehouse->gh.asgi is compared with both
RATIO_LABEL = {"uvicorn": "gh/uvicorn", "nginx_uvicorn": "gh/nginx->uvicorn"}
RATIO_KEYS = ("rps", "p50_ms", "p99_ms", "front_cpu_us_per_req", "app_cpu_us_per_req",
              "total_cpu_us_per_req")

GOAL_RPS = 1.1
GOAL_LINE = "goal: gatehouse->gh.asgi >= %.1fx uvicorn req/s with a lower p99" % GOAL_RPS


# ----------------------------------------------------------------------------- checks

_proto = None


def asgi_protocol():
    """gatehouse.asgi_protocol from adapters/python (imported on first use)."""
    global _proto
    if _proto is None:
        if ADAPTERS not in sys.path:
            sys.path.insert(0, ADAPTERS)
        from gatehouse import asgi_protocol
        _proto = asgi_protocol
    return _proto


def asgi_check(sock_path, expect, timeout=5.0):
    """One GET / straight to a gatehouse.asgi pool on |sock_path|, spoken as the gateway
    does (HELLO, HTTP_REQUEST, HTTP_RESPONSE + DATA); None if it was 200 |expect|, else what
    went wrong."""
    try:
        P = asgi_protocol()
    except ImportError as e:
        return "cannot import gatehouse.asgi_protocol from %s: %s" % (ADAPTERS, e)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    dec = P.FrameDecoder(65536)

    def frame():
        while True:
            f = dec.next_frame()
            if f is not P.NeedData:
                return f
            data = s.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the pool")
            dec.feed(data)

    try:
        s.connect(sock_path)
        s.sendall(P.encode(P.Hello(max_frame=65536, initial_credit=65536)))
        hello = frame()
        if not isinstance(hello, P.Hello) or not hello.flags & P.FLAG_ACK:
            return "no HELLO ACK: %r" % (hello,)
        s.sendall(P.encode(P.HttpRequest(1, P.FLAG_END, method="GET", path="/", raw_path=b"/",
                                         headers=[(b"host", b"localhost")])))
        status, body = None, []
        while True:
            f = frame()
            if f.stream != 1:
                continue
            if isinstance(f, P.HttpResponse):
                status = f.status
            elif isinstance(f, P.Data):
                body.append(f.data)
            else:
                return "unexpected frame %r" % (f,)
            if f.flags & P.FLAG_END:
                break
    except (OSError, ValueError, P.ProtocolError) as e:
        return "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()
    body = b"".join(body)
    if status != 200 or body != expect:
        return "got status %s body %r" % (status, body[:60])
    return None


def http_check(port, expect, timeout=5.0):
    """One GET / on |port|; None if it returned 200 |expect|, else what went wrong."""
    try:
        c = bh.HTTPConn(port, timeout)
        try:
            status, body = c.get()
        finally:
            c.close()
    except (OSError, ValueError, IndexError) as e:
        return "%s: %s" % (type(e).__name__, e)
    if status != 200 or body != expect:
        return "got status %d body %r" % (status, body[:60])
    return None


def signal_note(rc):
    if rc is not None and rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exited with status %s" % rc


# ----------------------------------------------------------------------------- servers

class AsgiBench(bh.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.backends = {}  # (server, app) -> (Proc, address: socket path or port)
        self.disabled = {}  # setup -> why it is not measured (its preflight failed)
        self.setup_failed = False
        self.argv_shown = set()

    def fail_setup(self, what, msg):
        """A setup (or a pool) that could not be set up: exit status 2 at the end."""
        self.setup_failed = True
        self.errors.append("setup: %s: %s" % (what, msg))
        warn("%s: %s" % (what, msg))

    # --- the app servers
    def start_backend(self, server, app):
        a = self.args
        d = self.dir("%s-%s" % (server, app))
        mod = APPS[app] + ":app"
        pypath = os.environ.get("PYTHONPATH")
        if server == "ghasgi":
            addr = os.path.join(d, "app.sock")
            env = dict(os.environ, PYTHONUNBUFFERED="1",
                       PYTHONPATH=ADAPTERS + ":" + APPS_DIR + (":" + pypath if pypath else ""))
            argv = [PYTHON, "-m", "gatehouse.asgi", mod, "--bind", "unix:" + addr,
                    "--workers", str(a.app_workers), "--chdir", APPS_DIR]
        else:
            addr = bh.free_port()
            env = dict(os.environ, PYTHONUNBUFFERED="1",
                       PYTHONPATH=APPS_DIR + (":" + pypath if pypath else ""))
            argv = [PYTHON, "-m", "uvicorn", mod, "--host", "127.0.0.1", "--port", str(addr),
                    "--workers", str(a.app_workers), "--http", "httptools", "--loop", "uvloop",
                    "--no-access-log"]
        if server not in self.argv_shown:
            self.argv_shown.add(server)
            log("  %s: %s" % (SERVER_LABEL[server], " ".join(argv).replace(HERE + "/", "")))
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
            if text.count(BOOTED[server]) >= a.app_workers:
                if server == "ghasgi":
                    err = asgi_check(addr, EXPECT[app]) if os.path.exists(addr) else "no socket"
                else:
                    err = http_check(addr, EXPECT[app])
                if err is None:
                    break
            time.sleep(0.1)
        else:
            died = not pr.alive()
            pr.stop(signal.SIGTERM, timeout=20)
            raise SetupError("%s serving the %s app on %s: %s:\n%s" % (
                SERVER_LABEL[server], app,
                "unix:" + addr if server == "ghasgi" else "127.0.0.1:%d" % addr,
                signal_note(pr.p.returncode) if died else
                "not ready after %.0fs (%s)" % (a.start_timeout, err), pr.tail()))
        self.backends[(server, app)] = (pr, addr)
        return pr, addr

    def use_backends(self, wanted):
        """Stops the pools not in |wanted| ((server, app) pairs), starts the missing ones.
        Returns {(server, app): what went wrong} for those that could not start."""
        failed = {}
        for key in list(self.backends):
            if key not in wanted:
                self.backends.pop(key)[0].stop(signal.SIGTERM, timeout=30)
        for key in sorted(wanted):
            pr_addr = self.backends.get(key)
            if pr_addr and not pr_addr[0].alive():
                self.errors.append("%s (%s app) died:\n%s" % (SERVER_LABEL[key[0]], key[1],
                                                              pr_addr[0].tail()))
                self.backends.pop(key)
            if key not in self.backends:
                try:
                    self.start_backend(*key)
                except SetupError as e:
                    failed[key] = str(e)
        return failed

    # --- the fronts
    def gh_conf(self, d, port, workers, sock):
        return bh.render("gatehouse_asgi.yaml.in", os.path.join(d, "gatehouse.yaml"),
                         WORKERS=workers, PORT=port, SOCK=sock,
                         CONNECTIONS=self.args.asgi_connections)

    def start_front(self, front, addr, workers, tag):
        """Starts |front| ('gatehouse' or 'nginx') in front of |addr| (gatehouse.asgi's
        socket path, or uvicorn's port). Returns (Proc, port, dir)."""
        d = self.dir("%s-%s-w%d" % (front, tag, workers))
        port = bh.free_port()
        if front == "nginx":
            # nginx_proxy.conf.in of bench_http.py: pooled keep-alive upstream connections
            argv = self.nginx_argv(d, self.nginx_conf(d, port, workers, upport=addr))
        else:
            argv = self.gatehouse_argv(d, self.gh_conf(d, port, workers, addr))
        return Proc(front, argv, d), port, d

    def ready_front(self, pr, port, workers, expect, timeout):
        """bench_http's Bench.ready for an app's body: waits for |pr| to listen and to
        answer one GET / with 200 |expect|. Returns None or what went wrong."""
        if not bh.wait_listen(port, pr, timeout, want=workers):
            if not pr.alive():
                return "%s before listening:\n%s" % (signal_note(pr.p.returncode), pr.tail())
            return "not listening on 127.0.0.1:%d after %.0fs:\n%s" % (port, timeout, pr.tail())
        err = None
        for _ in range(20):
            err = http_check(port, expect)
            if err is None:
                return None
            if not pr.alive():
                break
            time.sleep(0.25)
        return "listening but GET / failed (%s%s):\n%s" % (
            err, "; " + signal_note(pr.p.returncode) if not pr.alive() else "", pr.tail())

    def gatehouse_preflight(self):
        """gatehouse --check, then GET / through gatehouse -> gatehouse.asgi (bare app).
        Returns None when it works, else what went wrong (with the configuration)."""
        a = self.args
        bad = bh.gatehouse_binary(a, "build it first (make build/gatehouse)")
        if bad:
            return bad
        failed = self.use_backends({("ghasgi", "bare")})
        if failed:
            return "gatehouse.asgi did not start: " + failed[("ghasgi", "bare")]
        d = self.dir("gatehouse-preflight")
        sock = self.backends[("ghasgi", "bare")][1]
        conf = self.gh_conf(d, bh.free_port(), 1, sock)
        try:
            p = subprocess.run([a.gatehouse, "--check", "-c", conf], capture_output=True,
                               text=True, timeout=20)
            err = None if p.returncode == 0 else "gatehouse --check %s: %s" % (
                signal_note(p.returncode), (p.stdout + p.stderr).strip() or "(no output)")
        except (OSError, subprocess.TimeoutExpired) as e:
            err = "gatehouse --check: %s" % e
        if err is None:
            pr, port, d = self.start_front("gatehouse", sock, 1, "preflight")
            err = self.ready_front(pr, port, 1, EXPECT["bare"], a.start_timeout)
            pr.stop(signal.SIGTERM, timeout=20)
        if err:
            return str(bh.preflight_error(a, d, "gatehouse does not serve GET / through "
                                          "gatehouse.asgi", err))
        return None


# ----------------------------------------------------------------------------- measurements

def measure(front_pr, port, app_pr, connections, duration):
    """One wrk run with the front's (none for uvicorn alone) and the app processes' CPU.
    Raises RuntimeError."""
    r = bh.wrk_cpu(port, duration, connections, front=front_pr, app=app_pr)
    n = r["requests"]
    r["total_cpu_us_per_req"] = (((r["front_cpu_s"] or 0) + r["app_cpu_s"]) * 1e6 / n
                                 if n else None)
    return r


def throughput(b):
    a = b.args
    log("\n== throughput: wrk -t2 -c%d -d%ds --latency, warm-up %ds, %d round(s); %d app "
        "processes, %d gateway worker(s) ==" % (a.connections, a.duration, a.warmup, a.rounds,
                                               a.app_workers, a.gateway_workers))
    res = {}
    for ai, app in enumerate(a.apps):
        row = {}
        setups = [s for s in a.setups if s not in b.disabled]
        for s in a.setups:
            if s in b.disabled:
                row[s] = {"error": b.disabled[s]}
        failed = b.use_backends({(SETUP_PARTS[s][1], app) for s in setups})
        for (server, _), msg in failed.items():
            b.fail_setup("%s (%s app)" % (SERVER_LABEL[server], app), msg)
            for s in list(setups):
                if SETUP_PARTS[s][1] == server:
                    setups.remove(s)
                    row[s] = {"error": "%s did not start: %s" % (SERVER_LABEL[server],
                                                                 msg.splitlines()[0])}
        procs = {}
        for setup in setups:
            front, server = SETUP_PARTS[setup]
            apr, addr = b.backends[(server, app)]
            if front is None:
                procs[setup] = (None, addr, apr)
                continue
            pr, port, d = b.start_front(front, addr, a.gateway_workers, "%s-%s" % (app, server))
            err = b.ready_front(pr, port, a.gateway_workers, EXPECT[app], a.start_timeout)
            if err:
                b.errors.append("throughput: %s (%s): %s" % (SETUP_LABEL[setup], app, err))
                warn("%s (%s): %s" % (SETUP_LABEL[setup], app, err))
                pr.stop()
                row[setup] = {"error": err.splitlines()[0]}
                continue
            procs[setup] = (pr, port, apr)
        for setup, (pr, port, apr) in procs.items():
            try:
                bh.wrk(port, a.warmup, a.connections)  # pools filled, caches and JITs warm
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                warn("%s warm-up: %s" % (SETUP_LABEL[setup], e))
        runs = {s: [] for s in procs}
        for rnd in range(a.rounds):
            order = list(procs)
            k = (ai + rnd) % len(order) if order else 0
            order = order[k:] + order[:k]  # rotate who goes first
            for setup in order:
                pr, port, apr = procs[setup]
                if (pr and not pr.alive()) or not apr.alive():
                    continue
                try:
                    r = measure(pr, port, apr, a.connections, a.duration)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    b.errors.append("throughput: %s (%s): %s" % (SETUP_LABEL[setup], app, e))
                    warn("%s: %s" % (SETUP_LABEL[setup], e))
                    continue
                runs[setup].append(r)
                log("  %-8s %-19s round %d: %7.0f req/s  p50 %-8s p99 %-8s front %s us/req"
                    "  app %s us/req%s" % (app, SETUP_LABEL[setup], rnd + 1, r["rps"],
                                           fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                                           fmt_num(r["front_cpu_us_per_req"], 1),
                                           fmt_num(r["app_cpu_us_per_req"], 0),
                                           bh.errs_note(r)))
        for setup, (pr, port, apr) in procs.items():
            for what, p in (("", pr), (" (its app server)", apr)):
                if p and not p.alive():
                    msg = "%s%s (%s) died during the run:\n%s" % (SETUP_LABEL[setup], what,
                                                                  app, p.tail())
                    if ("throughput: " + msg) not in b.errors:
                        b.errors.append("throughput: " + msg)
                        warn(msg)
            if pr:
                pr.stop(signal.SIGTERM, timeout=20)
            row[setup] = bh.median_run(runs[setup]) if runs[setup] else {
                "error": "no successful run"}
        row["ratio"] = {}
        if GH in a.setups:
            for base in BASELINES:
                if base in a.setups:
                    row["ratio"][base] = bh.ratio_of(row.get(GH) or {}, row.get(base) or {},
                                                  RATIO_KEYS)
        res[app] = row
    return res


# ----------------------------------------------------------------------------- output

def goals(res, a):
    """Per app: gatehouse->gh.asgi req/s / uvicorn's >= GOAL_RPS and p99 below uvicorn's."""
    out = []
    if GH not in a.setups or "uvicorn" not in a.setups:
        return out
    tp = res.get("throughput") or {}
    for app in a.apps:
        rt = ((tp.get(app) or {}).get("ratio") or {}).get("uvicorn") or {}
        rps, p99 = rt.get("rps"), rt.get("p99_ms")
        met = None if rps is None or p99 is None else (rps >= GOAL_RPS and p99 < 1.0)
        out.append({"goal": GOAL_LINE, "app": app, "rps_ratio": rps, "p99_ratio": p99,
                    "met": met})
    return out


def table(res, a):
    out = []
    w = out.append
    m = res["meta"]
    w("")
    w("=" * 100)
    w("SUMMARY  gatehouse->gatehouse.asgi vs uvicorn %s and nginx %s->uvicorn, %d app "
      "processes each," % (m["uvicorn_version"], m["nginx_version"], a.app_workers))
    w("         gateway workers %d (gatehouse workers = nginx worker_processes), gatehouse "
      "connections %d" % (a.gateway_workers, a.asgi_connections))
    w("=" * 100)
    tp = res.get("throughput")
    if tp:
        w("")
        w("Throughput (wrk -t2 -c%d -d%ds --latency, median of %d round(s))"
          % (a.connections, a.duration, a.rounds))
        w("%-10s %-20s %9s %9s %9s %13s %11s %13s %7s" % (
            "app", "setup", "req/s", "p50", "p99", "front us/req", "app us/req",
            "total us/req", "errors"))
        for app in a.apps:
            row = tp.get(app) or {}
            for setup in a.setups:
                r = row.get(setup) or {}
                if "error" in r:
                    w("%-10s %-20s did not run: %s" % (APP_LABEL[app], SETUP_LABEL[setup],
                                                       r["error"]))
                    continue
                w("%-10s %-20s %9.0f %9s %9s %13s %11s %13s %7d" % (
                    APP_LABEL[app], SETUP_LABEL[setup], r["rps"], fmt_ms(r["p50_ms"]),
                    fmt_ms(r["p99_ms"]), fmt_num(r.get("front_cpu_us_per_req"), 1),
                    fmt_num(r.get("app_cpu_us_per_req"), 0),
                    fmt_num(r.get("total_cpu_us_per_req"), 0),
                    (r.get("non2xx") or 0) + (r.get("socket_errors") or 0)))
            for base, rt in (row.get("ratio") or {}).items():
                rt = rt or {}
                w("%-10s %-20s %9s %9s %9s %13s %11s %13s" % (
                    APP_LABEL[app], RATIO_LABEL[base], fmt_ratio(rt.get("rps")),
                    fmt_ratio(rt.get("p50_ms")), fmt_ratio(rt.get("p99_ms")),
                    fmt_ratio(rt.get("front_cpu_us_per_req")),
                    fmt_ratio(rt.get("app_cpu_us_per_req")),
                    fmt_ratio(rt.get("total_cpu_us_per_req"))))
        w("  req/s ratio > 1 is better for gatehouse; latency and cpu ratios < 1 are. front: "
          "gatehouse or nginx (uvicorn alone")
        w("  has none: it parses HTTP in its app processes); app: all app processes; total: "
          "front + app.")
    gl = res.get("goals")
    if gl is not None and GH in a.setups and "uvicorn" in a.setups:
        w("")
        w(GOAL_LINE + " (reported, not enforced)")
        for g in gl:
            met = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
            w("  %-10s req/s %s, p99 %s: %s" % (APP_LABEL[g["app"]], fmt_ratio(g["rps_ratio"]),
                                                fmt_ratio(g["p99_ratio"]), met))
    w("")
    w("Caveats: %s" % m["caveat"])
    return "\n".join(out)


# ----------------------------------------------------------------------------- main

def module_version(name):
    try:
        mod = __import__(name)
        return getattr(mod, "__version__", "?")
    except Exception:  # noqa: BLE001  (any import failure: reported as missing)
        return None


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gatehouse", help="absolute path of the gatehouse binary (needed "
                    "unless --setups leaves gh_ghasgi out)")
    ap.add_argument("--app-workers", type=int, default=2,
                    help="ASGI processes of gatehouse.asgi and of uvicorn (2)")
    ap.add_argument("--gateway-workers", type=int, default=1,
                    help="gatehouse workers = nginx worker_processes (1)")
    ap.add_argument("--asgi-connections", type=int, default=4,
                    help="gatehouse's connections: to the pool, per server and gateway "
                         "worker (4)")
    ap.add_argument("--apps", default="bare,fastapi", help="apps to measure (bare,fastapi)")
    ap.add_argument("--setups", default=",".join(SETUPS),
                    help="comma list of %s" % ",".join(SETUPS))
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (8)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up (2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="wrk rounds per setup, order rotating; the median is reported")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 s runs, 1 s warm-up")
    ap.add_argument("--nginx-headers", choices=("bare", "forward", "request-id"),
                    default="forward",
                    help="request headers nginx adds: none; Host, X-Forwarded-*, Forwarded "
                         "as gatehouse (default); those plus X-Request-Id")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (configs, logs)")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--start-timeout", type=float, default=20.0,
                    help="seconds a front or an app server may take to start (20)")
    a = ap.parse_args(argv)
    if a.quick:
        a.duration, a.warmup = min(a.duration, 2), 1
    a.apps = [x.strip() for x in a.apps.split(",") if x.strip()]
    bad = [x for x in a.apps if x not in APPS]
    if bad or not a.apps:
        ap.error("--apps: unknown %s (known: %s)" % (bad, ", ".join(APPS)))
    a.setups = [x.strip() for x in a.setups.split(",") if x.strip()]
    bad = [x for x in a.setups if x not in SETUPS]
    if bad or not a.setups:
        ap.error("--setups: unknown %s (known: %s)" % (bad, ", ".join(SETUPS)))
    if GH in a.setups and not a.gatehouse:
        ap.error("give --gatehouse /abs/path/build/gatehouse (or --setups without %s)" % GH)
    if a.app_workers < 1 or a.gateway_workers < 1:
        ap.error("--app-workers and --gateway-workers must be at least 1")
    if not 1 <= a.asgi_connections <= 64:
        ap.error("--asgi-connections takes 1 to 64")
    a.access_log = False  # bench_http.Bench.nginx_conf reads it
    return a


def main(argv):
    a = parse_args(argv)
    usable = len(os.sched_getaffinity(0))
    caveat = ("wrk, the front and %d ASGI processes share %d CPU(s): req/s and latencies are "
              "noisy (p99 of 2 s --quick runs even more so) and mostly show what each stack "
              "costs in CPU; compare the us/req columns. uvicorn alone has no front: its app "
              "processes also parse HTTP." % (a.app_workers, usable))
    meta = {"cpus": os.cpu_count(), "cpus_usable": usable, "kernel": platform.release(),
            "nginx_version": (bh.tool_version([a.nginx, "-v"]) or "?").replace(
                "nginx version: ", ""),
            "uvicorn_version": module_version("uvicorn") or "?",
            "fastapi_version": module_version("fastapi"),
            "uvloop_version": module_version("uvloop"),
            "httptools_version": module_version("httptools"),
            "wrk": bh.tool_version(["wrk", "-v"]), "python": platform.python_version(),
            "gatehouse": a.gatehouse, "app_workers": a.app_workers,
            "gateway_workers": a.gateway_workers, "asgi_connections": a.asgi_connections,
            "apps": a.apps, "setups": a.setups, "duration_s": a.duration,
            "warmup_s": a.warmup, "connections": a.connections, "rounds": a.rounds,
            "nginx_headers": a.nginx_headers, "goal": GOAL_LINE, "caveat": caveat,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log("gatehouse ASGI benchmark: gatehouse->gatehouse.asgi vs uvicorn %s (direct and behind "
        "nginx %s), %d app processes" % (meta["uvicorn_version"], meta["nginx_version"],
                                         a.app_workers))
    log("  CPUs: %d online, %d usable; kernel %s" % (meta["cpus"], usable, meta["kernel"]))
    log("  NOTE: on a shared %d-core machine the app processes, wrk and the front compete for"
        % usable)
    log("        the cores: req/s and latencies are noisy; compare CPU per request too.")
    log("  gatehouse: %s" % (a.gatehouse or "(not measured)"))

    needed = {"wrk": "wrk"}
    if "nginx_uvicorn" in a.setups:
        needed["nginx"] = a.nginx
    missing = [k for k, v in needed.items() if not shutil.which(v)]
    mods = []
    if any(SETUP_PARTS[s][1] == "uvicorn" for s in a.setups):
        mods += [("uvicorn", "python3-uvicorn"), ("uvloop", "python3-uvloop"),
                 ("httptools", "python3-httptools")]
    if GH in a.setups:
        mods.append(("uvloop", "python3-uvloop"))  # gatehouse.asgi uses it when importable
    if "fastapi" in a.apps:
        mods.append(("fastapi", "python3-fastapi"))
    for mod, pkg in mods:
        if importlib.util.find_spec(mod) is None and pkg not in missing:
            missing.append(pkg)
    if missing:
        warn("missing: %s (Debian: nginx wrk python3-uvicorn python3-uvloop python3-httptools "
             "python3-fastapi; tools/deps.sh bench and test install them)" % ", ".join(missing))
        return 2

    b = AsgiBench(a)
    log("  work dir: %s" % b.tmp)
    res = {"meta": meta}

    def preflight(b):
        if GH not in a.setups:
            return
        err = b.gatehouse_preflight()
        if err:
            b.fail_setup("gatehouse->gh.asgi", err)
            b.disabled[GH] = "setup failed: " + err.splitlines()[0]
            log("  gatehouse preflight FAILED; measuring the other setups only")
        else:
            log("  gatehouse preflight: GET / through gatehouse.asgi ok")

    parts = [("preflight", preflight), ("throughput", throughput)]
    status = bh.run_parts(b, res, parts, bh.stop_all)
    res.pop("preflight", None)
    res["goals"] = goals(res, a)
    if b.setup_failed and status == 0:
        status = 2
    return bh.report(b, res, a, status, table(res, a))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        bh.stop_all()
