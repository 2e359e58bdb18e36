#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""WebSockets: gatehouse terminating them in front of gatehouse.asgi vs uvicorn (directly, and
behind nginx), the same echo app and number of app processes.

Usage:
  /usr/bin/python3 tests/bench/bench_ws.py --gatehouse /abs/build/gatehouse \
      [--app-workers 2] [--duration 8] [--connections 64] [--idle 10000] [--quick]
      [--json OUT]

Setups, each with --app-workers ASGI processes serving apps/ws_echo_app.py:
  gatehouse->gh.asgi   gatehouse (1 worker; RFC 6455 with the client, messages over protocol:
                       asgi on a unix socket) -> python3 -m gatehouse.asgi
  uvicorn              the clients straight at uvicorn (--ws websockets --http httptools
                       --loop uvloop) on 127.0.0.1
  nginx->uvicorn       nginx (1 worker, Upgrade forwarded, bytes relayed after the 101) ->
                       the same uvicorn

Two measurements (see tests/bench/README.md):
  echo   --client-procs processes (ws_client.py) x --connections in all: each connection sends
         a 32-byte masked text frame, waits for the echo, sends the next, for --duration
         seconds. Round trips/s, p50/p99, CPU of the front and of the app processes per round
         trip; ratios gatehouse/uvicorn, gatehouse/nginx->uvicorn. Goal printed: >= 1.2x
         uvicorn's round trips.
  idle   --idle WebSockets opened (handshake only) through gatehouse and through nginx, one
         front at a time, held idle ~2 s: the front's RSS growth per connection; the ratio; the
         goal (gatehouse <= 2 KB per idle connection). Also, for context, gatehouse holding as
         many idle HTTP keep-alive connections.

A benchmark reports; it never fails on numbers. Exit status: 0 when everything ran, 1 when
some measurement could not run, 2 when a setup failed (a tool or Python module missing, a pool
not starting, or gatehouse not echoing one WebSocket message through gatehouse.asgi; the other
setups are still measured and reported). Standard library only; every process is started by
the script and stopped by its PID.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_http as bh  # noqa: E402  (processes, readiness, report, formatting, ratios)
import bench_asgi as ba  # noqa: E402  (ASGI pool checks, AsgiBench's front readiness)
import ws_client as wc  # noqa: E402  (the WebSocket clients)
from bench_http import SetupError, fmt_ms, fmt_num, fmt_ratio, log, warn  # noqa: E402

PYTHON = "/usr/bin/python3"
APP = "ws_echo_app:app"
HELLO = b"hello\n"  # the echo app's answer to GET / (readiness checks, idle HTTP connections)
CLIENT = os.path.join(HERE, "ws_client.py")

SETUPS = ("gh_ghasgi", "uvicorn", "nginx_uvicorn")
GH = "gh_ghasgi"
SETUP_LABEL = ba.SETUP_LABEL
SETUP_PARTS = ba.SETUP_PARTS  # (front, app server)
SERVER_LABEL = ba.SERVER_LABEL
BASELINES = ("uvicorn", "nginx_uvicorn")
RATIO_LABEL = ba.RATIO_LABEL
RATIO_KEYS = ("rps", "p50_ms", "p99_ms", "front_cpu_us_per_rt", "app_cpu_us_per_rt",
              "total_cpu_us_per_rt")

GOAL_RT = 1.2
GOAL_ECHO = "goal: >= %.1fx uvicorn's round trips" % GOAL_RT
GOAL_KB = 2.0
GOAL_IDLE = ("goal: gatehouse <= 2 KB per idle connection (nginx measured about 18 KB here, "
             "HAProxy about 4.7 KB)")
IDLE_FRONTS = ("gatehouse", "nginx", "gatehouse_http")
IDLE_LABEL = {"gatehouse": "gatehouse WebSocket", "nginx": "nginx WebSocket",
              "gatehouse_http": "gatehouse HTTP k-a"}
FD_MARGIN = 64  # descriptors a front needs besides its connections (listeners, logs, pool)


# ----------------------------------------------------------------------------- processes

def raise_nofile():
    """Raises RLIMIT_NOFILE's soft limit to the hard one (the fronts, pools and clients
    started later inherit it). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            warn("could not raise RLIMIT_NOFILE to %d: %s" % (hard, e))
    return soft


def rss_kb(pids):
    """VmRSS of |pids| summed, in KiB (from /proc/PID/status)."""
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


def smaps_rollup(pid):
    """/proc/PID/smaps_rollup as {field: KiB} (Rss, Pss, Anonymous, Private_Dirty, ...)."""
    out = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


class ClientProc:
    """One ws_client.py echo process, driven over its stdin/stdout pipes; stopped by PID."""

    def __init__(self, name, argv):
        self.name = name
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self.p.pid
        bh._live.append(self)  # stopped by bh.stop_all() on the way out

    def command(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def event(self, timeout):
        """The next JSON line; RuntimeError when none comes within |timeout| s."""
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline() if r else b""
        if not line:
            raise RuntimeError("client %s gave no answer within %.0f s%s" % (
                self.name, timeout, self.stderr_tail()))
        return json.loads(line)

    def stderr_tail(self):
        if self.p.poll() is None:
            return ""
        err = self.p.stderr.read().decode("utf-8", "replace").strip()
        return " (exited %s: %s)" % (self.p.returncode, err[-600:] or "no stderr")

    def stop(self, sig=signal.SIGTERM, timeout=10.0, target=None):
        if self.p.poll() is None:
            try:
                self.command("quit")
            except OSError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(10)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass
        if self in bh._live:
            bh._live.remove(self)
        return self.p.returncode


# ----------------------------------------------------------------------------- servers

class WsBench(ba.AsgiBench):
    def __init__(self, args):
        super().__init__(args)
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    def max_streams(self):
        """gatehouse.asgi's --max-streams: every idle WebSocket may land on one connection."""
        return max(1000, self.args.idle + 100)

    def start_backend(self, server, app="ws"):
        a = self.args
        d = self.dir(server)
        pypath = os.environ.get("PYTHONPATH")
        if server == "ghasgi":
            addr = os.path.join(d, "app.sock")
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ba.ADAPTERS + ":" +
                       ba.APPS_DIR + (":" + pypath if pypath else ""))
            argv = [PYTHON, "-m", "gatehouse.asgi", APP, "--bind", "unix:" + addr,
                    "--workers", str(a.app_workers), "--max-streams", str(self.max_streams()),
                    "--backlog", "4096", "--chdir", ba.APPS_DIR]
        else:
            addr = bh.free_port()
            env = dict(os.environ, PYTHONUNBUFFERED="1",
                       PYTHONPATH=ba.APPS_DIR + (":" + pypath if pypath else ""))
            argv = [PYTHON, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(addr),
                    "--workers", str(a.app_workers), "--ws", "websockets", "--http",
                    "httptools", "--loop", "uvloop", "--no-access-log", "--backlog", "4096"]
        log("  %s: %s" % (SERVER_LABEL[server], " ".join(argv).replace(HERE + "/", "")))
        pr = bh.Proc(server, argv, d, env=env)
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
            if text.count(ba.BOOTED[server]) >= a.app_workers:
                if server == "ghasgi":
                    err = ba.asgi_check(addr, HELLO) if os.path.exists(addr) else "no socket"
                else:
                    err = ba.http_check(addr, HELLO)
                    if err is None:
                        err = wc.echo_once(addr)
                if err is None:
                    break
            time.sleep(0.1)
        else:
            died = not pr.alive()
            pr.stop(signal.SIGTERM, timeout=20)
            raise SetupError("%s serving %s on %s: %s:\n%s" % (
                SERVER_LABEL[server], APP,
                "unix:" + addr if server == "ghasgi" else "127.0.0.1:%d" % addr,
                ba.signal_note(pr.p.returncode) if died else
                "not ready after %.0fs (%s)" % (a.start_timeout, err), pr.tail()))
        self.backends[(server, "ws")] = (pr, addr)
        return pr, addr

    def backend(self, server):
        """The running pool |server| ('ghasgi' or 'uvicorn'), started on first use. Raises
        SetupError (and marks the setups on it failed) when it does not start or died."""
        key = (server, "ws")
        pr_addr = self.backends.get(key)
        if pr_addr and not pr_addr[0].alive():
            self.errors.append("%s died:\n%s" % (SERVER_LABEL[server], pr_addr[0].tail()))
            self.backends.pop(key)
            raise SetupError("%s died" % SERVER_LABEL[server])
        if key not in self.backends:
            self.start_backend(server)
        return self.backends[key]

    # --- the fronts
    def gh_conf(self, d, port, workers, sock, ping_interval="30s"):
        return bh.render("gatehouse_ws.yaml.in", os.path.join(d, "gatehouse.yaml"),
                         WORKERS=workers, PORT=port, SOCK=sock,
                         CONNECTIONS=self.args.asgi_connections, PING_INTERVAL=ping_interval)

    def nginx_ws_conf(self, d, port, upport, conns):
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        workers = self.args.gateway_workers
        return bh.render("nginx_ws.conf.in", os.path.join(d, "nginx.conf"), PREFIX=d,
                         PORT=port, UPPORT=upport, WORKERS=workers, USER=bh.user_line(),
                         REUSEPORT="reuseport" if workers > 1 else "", RLIMIT=self.nofile,
                         WORKER_CONNECTIONS=2 * conns + 4096,
                         FORWARD_HEADERS=bh.nginx_headers(self.args.nginx_headers))

    def start_ws_front(self, front, addr, tag, ping_interval="30s", conns=0):
        """Starts |front| ('gatehouse' or 'nginx', --gateway-workers workers) in front of
        |addr| (gatehouse.asgi's socket or uvicorn's port), ready for |conns| connections.
        Returns (Proc, port) once it serves GET / and one WebSocket echo; raises
        RuntimeError (with the front's log tail) otherwise."""
        a = self.args
        d = self.dir("%s-%s" % (front, tag))
        port = bh.free_port()
        if front == "nginx":
            argv = self.nginx_argv(d, self.nginx_ws_conf(d, port, addr, conns))
        else:
            argv = self.gatehouse_argv(d, self.gh_conf(d, port, a.gateway_workers, addr,
                                                       ping_interval))
        pr = bh.Proc(front, argv, d)
        err = self.ready_front(pr, port, a.gateway_workers, HELLO, a.start_timeout)
        if err is None:
            err = wc.echo_once(port)
            if err is not None:
                time.sleep(0.3)  # let the front log why
                err = "listening and serving GET /, but one WebSocket echo failed: %s\n%s" % (
                    err, pr.tail())
        if err is not None:
            pr.stop(signal.SIGTERM, timeout=20)
            raise RuntimeError(err)
        return pr, port

    def gatehouse_preflight(self):
        """gatehouse --check, then GET / and one WebSocket echo through gatehouse ->
        gatehouse.asgi. Returns None when they work, else what went wrong (with the
        configuration and the gateway's stderr)."""
        a = self.args
        bad = bh.gatehouse_binary(a, "build it first (make build/gatehouse)")
        if bad:
            return bad
        try:
            _, sock = self.backend("ghasgi")
        except SetupError as e:
            return "gatehouse.asgi did not start: %s" % e
        d = self.dir("gatehouse-check")
        conf = self.gh_conf(d, bh.free_port(), a.gateway_workers, sock)
        try:
            p = subprocess.run([a.gatehouse, "--check", "-c", conf], capture_output=True,
                               text=True, timeout=20)
            if p.returncode != 0:
                err = "gatehouse --check %s: %s" % (ba.signal_note(p.returncode),
                                                    (p.stdout + p.stderr).strip() or "(none)")
                return str(bh.preflight_error(a, d, "gatehouse refuses the configuration",
                                              err))
        except (OSError, subprocess.TimeoutExpired) as e:
            return "gatehouse --check: %s" % e
        try:
            pr, _ = self.start_ws_front("gatehouse", sock, "preflight")
        except RuntimeError as e:
            return str(bh.preflight_error(a, d, "gatehouse does not echo a WebSocket message "
                                          "through gatehouse.asgi", e))
        pr.stop(signal.SIGTERM, timeout=20)
        return None


# ----------------------------------------------------------------------------- echo

def percentile(hist, q):
    """The |q| quantile (0..1) of a {microseconds: count} histogram, in ms."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for us in sorted(hist):
        seen += hist[us]
        if seen >= rank:
            return us / 1000.0
    return max(hist) / 1000.0


def split(n, k):
    """|n| split into |k| near-equal shares (no empty one)."""
    shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [x for x in shares if x]


def echo_run(b, setup, port, front, app):
    """One measurement through |port|: the client processes connect, warm up, run
    --duration; the CPU of |front| (a Proc or None) and |app| (a Proc) is read around the
    run. Returns the figures; raises RuntimeError."""
    a = b.args
    clients = []
    try:
        for k, n in enumerate(split(a.connections, a.client_procs)):
            clients.append(ClientProc("%s-%d" % (setup, k), [
                PYTHON, CLIENT, "--port", str(port), "--connections", str(n),
                "--payload", str(a.payload)]))
        opened, errors = 0, {}
        for c in clients:
            ev = c.event(a.start_timeout + 30)
            opened += ev["connections"]
            for k, v in ev["errors"].items():
                errors[k] = errors.get(k, 0) + v
        if opened < a.connections:
            raise RuntimeError("%d of %d WebSockets opened: %s" % (opened, a.connections,
                                                                  errors))
        if a.warmup > 0:
            for c in clients:
                c.command("run %g" % a.warmup)
            for c in clients:
                c.event(a.warmup + 30)
        trees = {"front": bh.proc_tree(front.pid) if front else None,
                 "app": bh.proc_tree(app.pid), "client": [c.pid for c in clients]}
        before = {k: bh.cpu_seconds(t) for k, t in trees.items() if t is not None}
        app_before = [bh.cpu_seconds([p]) for p in trees["app"]]
        for c in clients:
            c.command("run %g" % a.duration)
        runs = [c.event(a.duration + 60) for c in clients]
        cpu = {k: bh.cpu_seconds(t) - before[k] for k, t in trees.items() if t is not None}
        # per app process: shows how the connections were spread over the workers
        app_split = [round(bh.cpu_seconds([p]) - c0, 2) for p, c0 in zip(trees["app"],
                                                                         app_before)]
    finally:
        for c in clients:
            c.stop()
    hist, errors = {}, {}
    for r in runs:
        for us, n in r["hist"].items():
            hist[int(us)] = hist.get(int(us), 0) + n
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    rts = sum(r["round_trips"] for r in runs)
    out = {"round_trips": rts,
           "rps": sum(r["round_trips"] / r["seconds"] for r in runs if r["seconds"] > 0),
           "p50_ms": percentile(hist, 0.50), "p99_ms": percentile(hist, 0.99),
           "closed": sum(r["closed"] for r in runs), "errors": errors,
           "connections": opened, "client_processes": len(clients)}
    for k in ("front", "app", "client"):
        used = cpu.get(k)
        out[k + "_cpu_s"] = used
        out[k + "_cpu_us_per_rt"] = used * 1e6 / rts if rts and used is not None else None
    out["total_cpu_us_per_rt"] = (((out["front_cpu_s"] or 0) + out["app_cpu_s"]) * 1e6 / rts
                                  if rts else None)
    out["app_processes"] = len(trees["app"])
    out["app_cpu_s_by_process"] = app_split
    return out


def echo(b):
    a = b.args
    log("\n== echo: %d client process(es) x %d WebSockets in all, %d-byte text messages, "
        "%ds after %ds warm-up, %d round(s); %d app processes, %d gateway worker(s) =="
        % (a.client_procs, a.connections, a.payload, a.duration, a.warmup, a.rounds,
           a.app_workers, a.gateway_workers))
    res = {}
    procs = {}
    for s in a.setups:
        if s in b.disabled:
            res[s] = {"error": b.disabled[s]}
            continue
        front, server = SETUP_PARTS[s]
        try:
            apr, addr = b.backend(server)
        except SetupError as e:
            b.fail_setup(SETUP_LABEL[s], str(e))
            res[s] = {"error": "%s did not start" % SERVER_LABEL[server]}
            continue
        if front is None:
            procs[s] = (None, addr, apr)
            continue
        try:
            pr, port = b.start_ws_front(front, addr, "echo")
        except RuntimeError as e:
            b.errors.append("echo: %s: %s" % (SETUP_LABEL[s], e))
            warn("%s: %s" % (SETUP_LABEL[s], e))
            res[s] = {"error": str(e).splitlines()[0]}
            continue
        procs[s] = (pr, port, apr)
    runs = {s: [] for s in procs}
    for rnd in range(a.rounds):
        order = list(procs)
        k = rnd % len(order) if order else 0
        for s in order[k:] + order[:k]:  # rotate who goes first
            pr, port, apr = procs[s]
            if (pr and not pr.alive()) or not apr.alive():
                continue
            try:
                r = echo_run(b, s, port, pr, apr)
            except (RuntimeError, OSError, ValueError) as e:
                msg = "%s: %s" % (SETUP_LABEL[s], e)
                if pr:
                    msg += "\n  %s log tail:\n%s" % (pr.name, pr.tail())
                b.errors.append("echo: " + msg)
                warn(msg)
                continue
            runs[s].append(r)
            bad = sum(r["errors"].values())
            log("  %-19s round %d: %7.0f rt/s  p50 %-8s p99 %-8s front %s us/rt  app %s us/rt"
                "  client %s us/rt%s" % (SETUP_LABEL[s], rnd + 1, r["rps"], fmt_ms(r["p50_ms"]),
                                         fmt_ms(r["p99_ms"]),
                                         fmt_num(r["front_cpu_us_per_rt"], 1),
                                         fmt_num(r["app_cpu_us_per_rt"], 1),
                                         fmt_num(r["client_cpu_us_per_rt"], 1),
                                         "  (%d errors: %s)" % (bad, r["errors"]) if bad else ""))
            if bad and pr:
                log("  %s log tail:\n%s" % (pr.name, pr.tail()))
    for s, (pr, port, apr) in procs.items():
        for what, p in (("", pr), (" (its app server)", apr)):
            if p and not p.alive():
                msg = "%s%s died during the run:\n%s" % (SETUP_LABEL[s], what, p.tail())
                b.errors.append("echo: " + msg)
                warn(msg)
        if pr:
            pr.stop(signal.SIGTERM, timeout=20)
        if runs[s]:
            res[s] = bh.median_run(runs[s])
            res[s]["errors"] = runs[s][0]["errors"]
        elif s not in res:
            res[s] = {"error": "no successful run"}
    res["ratio"] = {}
    if GH in a.setups:
        for base in BASELINES:
            if base in a.setups:
                res["ratio"][base] = bh.ratio_of(res.get(GH) or {}, res.get(base) or {},
                                                 RATIO_KEYS)
    return res


# ----------------------------------------------------------------------------- idle

def idle_one(b, kind, n):
    """|n| idle connections through a fresh front: 'gatehouse' or 'nginx' WebSockets, or
    'gatehouse_http' keep-alive connections after one GET / each. Returns the figures;
    raises RuntimeError."""
    a = b.args
    front = "nginx" if kind == "nginx" else "gatehouse"
    server = "uvicorn" if kind == "nginx" else "ghasgi"
    apr, addr = b.backend(server)
    pr, port = b.start_ws_front(front, addr, "idle-" + kind, ping_interval="1h", conns=n)
    conns = sel = None
    try:
        time.sleep(0.5)
        tree = bh.proc_tree(pr.pid)
        app_tree = bh.proc_tree(apr.pid)
        before, app_before = rss_kb(tree), rss_kb(app_tree)
        smaps_before = smaps_rollup(pr.pid)

        def progress(opened, failed, total):
            log("    ... %d/%d open, %d failed" % (opened, total, failed))

        conns, sel, st = wc.open_idle(port, n, batch=a.idle_batch,
                                      mode="http" if kind == "gatehouse_http" else "ws",
                                      timeout=a.idle_timeout, progress=progress)
        held = wc.hold(conns, sel, a.hold)
        tree = bh.proc_tree(pr.pid)  # nginx: the same master and worker(s)
        after, app_after = rss_kb(tree), rss_kb(bh.proc_tree(apr.pid))
        smaps_after = smaps_rollup(pr.pid) if front == "gatehouse" else {}
        fronts_alive = pr.alive()
    finally:
        if conns is not None:
            wc.close_all(conns, sel)
        time.sleep(1.0)  # let the front see the closes before it is told to stop
        tail = pr.tail()
        pr.stop(signal.SIGTERM, timeout=30)
    still = held["still_open"]
    out = {"requested": n, "opened": st["opened"], "failed": st["failed"],
           "open_errors": st["errors"], "open_seconds": st["seconds"], "still_open": still,
           "closed_while_held": held["closed"], "pings_answered": held["pings"],
           "hold_s": a.hold, "front_processes": len(tree), "rss_before_kb": before,
           "rss_after_kb": after, "app_rss_before_kb": app_before,
           "app_rss_after_kb": app_after, "app_processes": len(app_tree),
           "kb_per_conn": (after - before) / still if still else None,
           "app_kb_per_conn": (app_after - app_before) / still if still else None}
    if smaps_after:
        out["smaps_delta_kb"] = {k: smaps_after.get(k, 0) - smaps_before.get(k, 0)
                                 for k in ("Rss", "Pss", "Anonymous", "Private_Dirty",
                                           "Private_Clean", "Shared_Clean")}
    if not fronts_alive:
        raise RuntimeError("%s died while holding the connections:\n%s" % (front, tail))
    if st["failed"] or held["closed"]:
        out["front_log_tail"] = tail
    return out


def idle(b):
    a = b.args
    # nginx holds two descriptors per WebSocket (client and uvicorn); gatehouse one (its
    # streams to gatehouse.asgi share a few connections), the client one per connection
    cap_nginx = (b.nofile - FD_MARGIN) // 2
    cap_one = b.nofile - FD_MARGIN
    log("\n== idle: %d connections per front (at most %d at once connecting), held %gs; "
        "RLIMIT_NOFILE %d ==" % (a.idle, a.idle_batch, a.hold, b.nofile))
    res = {}
    for kind in a.idle_fronts:
        if kind != "nginx" and GH in b.disabled:
            res[kind] = {"error": b.disabled[GH]}
            continue
        n = min(a.idle, cap_nginx if kind == "nginx" else cap_one)
        if n < a.idle:
            log("  %s: %d connections, not %d: RLIMIT_NOFILE %d (the hard limit) allows no "
                "more" % (IDLE_LABEL[kind], n, a.idle, b.nofile))
        try:
            r = idle_one(b, kind, n)
        except (RuntimeError, OSError, SetupError) as e:
            b.errors.append("idle: %s: %s" % (IDLE_LABEL[kind], e))
            warn("idle %s: %s" % (IDLE_LABEL[kind], e))
            res[kind] = {"error": str(e).splitlines()[0]}
            continue
        res[kind] = r
        extra = ""
        if r.get("smaps_delta_kb"):
            extra = "  (smaps_rollup: Anonymous %+d KiB, Private_Dirty %+d KiB)" % (
                r["smaps_delta_kb"]["Anonymous"], r["smaps_delta_kb"]["Private_Dirty"])
        log("  %-20s %5d open (%.1fs to open), RSS %s -> %s KiB: %s KB/conn; app %s KB/conn%s"
            % (IDLE_LABEL[kind], r["still_open"], r["open_seconds"], r["rss_before_kb"],
               r["rss_after_kb"], fmt_num(r["kb_per_conn"], 2),
               fmt_num(r["app_kb_per_conn"], 1), extra))
        if r["failed"] or r["closed_while_held"]:
            msg = "%s: %d failed to open %s, closed while held %s" % (
                IDLE_LABEL[kind], r["failed"], r["open_errors"], r["closed_while_held"])
            b.errors.append("idle: " + msg)
            warn(msg + "\n  front log tail:\n" + r.get("front_log_tail", ""))
    g, ng = res.get("gatehouse") or {}, res.get("nginx") or {}
    if g.get("kb_per_conn") and ng.get("kb_per_conn"):
        res["ratio"] = g["kb_per_conn"] / ng["kb_per_conn"]
    return res


# ----------------------------------------------------------------------------- output

def goals(res, a):
    out = {}
    rt = ((res.get("echo") or {}).get("ratio") or {}).get("uvicorn") or {}
    r = rt.get("rps")
    out["echo"] = {"goal": GOAL_ECHO, "ratio": r, "met": None if r is None else r >= GOAL_RT}
    kb = ((res.get("idle") or {}).get("gatehouse") or {}).get("kb_per_conn")
    out["idle"] = {"goal": GOAL_IDLE, "kb_per_conn": kb,
                   "met": None if kb is None else kb <= GOAL_KB}
    return out


def met_text(m):
    return {True: "met", False: "NOT met", None: "not measured"}[m]


def table(res, a):
    out = []
    w = out.append
    m = res["meta"]
    w("")
    w("=" * 100)
    w("SUMMARY  WebSockets: gatehouse->gatehouse.asgi vs uvicorn %s (websockets %s) and nginx %s"
      "->uvicorn," % (m["uvicorn_version"], m["websockets_version"], m["nginx_version"]))
    w("         %d app processes each, %d gateway worker(s), gatehouse connections %d"
      % (a.app_workers, a.gateway_workers, a.asgi_connections))
    w("=" * 100)
    ec = res.get("echo")
    if ec:
        w("")
        w("Echo round trips (%d client processes x %d WebSockets in all, %d-byte text messages, "
          "%ds, median of %d round(s))" % (a.client_procs, a.connections, a.payload,
                                           a.duration, a.rounds))
        w("%-20s %9s %9s %9s %12s %10s %12s %13s %7s" % (
            "setup", "rt/s", "p50", "p99", "front us/rt", "app us/rt", "total us/rt",
            "client us/rt", "errors"))
        for s in a.setups:
            r = ec.get(s) or {}
            if "error" in r:
                w("%-20s did not run: %s" % (SETUP_LABEL[s], r["error"]))
                continue
            w("%-20s %9.0f %9s %9s %12s %10s %12s %13s %7d" % (
                SETUP_LABEL[s], r["rps"], fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                fmt_num(r.get("front_cpu_us_per_rt"), 1), fmt_num(r.get("app_cpu_us_per_rt"), 1),
                fmt_num(r.get("total_cpu_us_per_rt"), 1),
                fmt_num(r.get("client_cpu_us_per_rt"), 1), sum(r["errors"].values())))
        for base, rt in (ec.get("ratio") or {}).items():
            rt = rt or {}
            w("%-20s %9s %9s %9s %12s %10s %12s" % (
                RATIO_LABEL[base], fmt_ratio(rt.get("rps")), fmt_ratio(rt.get("p50_ms")),
                fmt_ratio(rt.get("p99_ms")), fmt_ratio(rt.get("front_cpu_us_per_rt")),
                fmt_ratio(rt.get("app_cpu_us_per_rt")), fmt_ratio(rt.get("total_cpu_us_per_rt"))))
        w("  rt/s ratio > 1 is better for gatehouse; latency and cpu ratios < 1 are. front: "
          "gatehouse or nginx; app: all")
        w("  app processes; total: front + app; client: the load generator (the same for all).")
        g = (res.get("goals") or {}).get("echo")
        if g and GH in a.setups and "uvicorn" in a.setups:
            w("%s (reported, not enforced): %s, %s" % (GOAL_ECHO, fmt_ratio(g["ratio"]),
                                                       met_text(g["met"])))
    idl = res.get("idle")
    if idl:
        w("")
        w("Idle connections (opened, then held %gs; front RSS = VmRSS, nginx master + worker)"
          % a.hold)
        w("%-20s %7s %12s %12s %9s %12s %16s" % ("front", "open", "RSS before", "RSS after",
                                                 "KB/conn", "app KB/conn", "app"))
        for kind in a.idle_fronts:
            r = idl.get(kind) or {}
            if "error" in r:
                w("%-20s did not run: %s" % (IDLE_LABEL[kind], r["error"]))
                continue
            w("%-20s %7d %9s KiB %8s KiB %9s %12s %16s" % (
                IDLE_LABEL[kind], r["still_open"], "{:,}".format(r["rss_before_kb"]),
                "{:,}".format(r["rss_after_kb"]), fmt_num(r["kb_per_conn"], 2),
                fmt_num(r["app_kb_per_conn"], 1),
                "uvicorn" if kind == "nginx" else "gatehouse.asgi"))
        if idl.get("ratio"):
            w("%-20s %7s %12s %12s %9s" % ("gh/nginx (WS)", "", "", "",
                                            fmt_ratio(idl["ratio"])))
        g = (res.get("goals") or {}).get("idle")
        if g:
            w("%s (reported, not enforced): %s KB, %s" % (GOAL_IDLE, fmt_num(g["kb_per_conn"], 2),
                                                          met_text(g["met"])))
    w("")
    w("Caveats: %s" % m["caveat"])
    return "\n".join(out)


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gatehouse", help="absolute path of the gatehouse binary (needed "
                    "unless --setups leaves gh_ghasgi out and --idle-fronts nginx)")
    ap.add_argument("--app-workers", type=int, default=2,
                    help="ASGI processes of gatehouse.asgi and of uvicorn (2)")
    ap.add_argument("--gateway-workers", type=int, default=1,
                    help="gatehouse workers = nginx worker_processes (1)")
    ap.add_argument("--asgi-connections", type=int, default=4,
                    help="gatehouse's connections to the pool per server and worker (4)")
    ap.add_argument("--setups", default=",".join(SETUPS),
                    help="echo setups, comma list of %s" % ",".join(SETUPS))
    ap.add_argument("--duration", type=float, default=8, help="seconds per echo run (8)")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of echo warm-up (2)")
    ap.add_argument("--connections", type=int, default=64,
                    help="echo WebSockets in all, split over the client processes (64)")
    ap.add_argument("--client-procs", type=int, default=2, help="echo client processes (2)")
    ap.add_argument("--payload", type=int, default=32, help="echo message bytes (32)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="echo rounds per setup, order rotating; the median is reported")
    ap.add_argument("--idle", type=int, default=10000, help="idle connections per front (10000)")
    ap.add_argument("--idle-fronts", default=",".join(IDLE_FRONTS),
                    help="comma list of %s" % ",".join(IDLE_FRONTS))
    ap.add_argument("--idle-batch", type=int, default=500,
                    help="idle connections connecting or handshaking at once (500)")
    ap.add_argument("--hold", type=float, default=2.0,
                    help="seconds the idle connections are held before RSS is read (2)")
    ap.add_argument("--idle-timeout", type=float, default=120.0,
                    help="seconds all idle connections may take to open (120)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: echo,idle")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 s runs, 1 s warm-up, 2000 idle connections")
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
        a.duration, a.warmup, a.idle = min(a.duration, 2), 1, min(a.idle, 2000)
    a.setups = [x.strip() for x in a.setups.split(",") if x.strip()]
    bad = [x for x in a.setups if x not in SETUPS]
    if bad:
        ap.error("--setups: unknown %s (known: %s)" % (bad, ", ".join(SETUPS)))
    a.idle_fronts = [x.strip() for x in a.idle_fronts.split(",") if x.strip()]
    bad = [x for x in a.idle_fronts if x not in IDLE_FRONTS]
    if bad:
        ap.error("--idle-fronts: unknown %s (known: %s)" % (bad, ", ".join(IDLE_FRONTS)))
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    if a.skip - {"echo", "idle"}:
        ap.error("--skip takes echo and/or idle")
    if "echo" in a.skip:
        a.setups = []
    if "idle" in a.skip:
        a.idle_fronts = []
    wants_gh = GH in a.setups or any(k != "nginx" for k in a.idle_fronts)
    if wants_gh and not a.gatehouse:
        ap.error("give --gatehouse /abs/path/build/gatehouse")
    if min(a.app_workers, a.gateway_workers, a.client_procs, a.connections, a.idle,
           a.idle_batch) < 1:
        ap.error("--app-workers, --gateway-workers, --client-procs, --connections, --idle "
                 "and --idle-batch must be at least 1")
    if a.connections < a.client_procs:
        a.client_procs = a.connections
    if not 1 <= a.payload <= 125:
        ap.error("--payload takes 1..125")
    a.access_log = False  # bench_http.Bench reads it
    a.wants_gh = wants_gh
    return a


def main(argv):
    a = parse_args(argv)
    nofile = raise_nofile()
    usable = len(os.sched_getaffinity(0))
    caveat = ("the echo clients (%d Python processes), the front and %d ASGI processes share "
              "%d CPU(s): round trips/s and latencies are noisy and mostly show what each "
              "stack costs in CPU; compare the us/rt columns. RSS per idle connection counts "
              "what the front's allocator kept (glibc arenas), not kernel socket buffers."
              % (a.client_procs, a.app_workers, usable))
    meta = {"cpus": os.cpu_count(), "cpus_usable": usable, "kernel": platform.release(),
            "nginx_version": (bh.tool_version([a.nginx, "-v"]) or "?").replace(
                "nginx version: ", ""),
            "uvicorn_version": ba.module_version("uvicorn") or "?",
            "websockets_version": ba.module_version("websockets") or "?",
            "uvloop_version": ba.module_version("uvloop"),
            "httptools_version": ba.module_version("httptools"),
            "python": platform.python_version(), "gatehouse": a.gatehouse,
            "app_workers": a.app_workers, "gateway_workers": a.gateway_workers,
            "asgi_connections": a.asgi_connections, "setups": a.setups,
            "duration_s": a.duration, "warmup_s": a.warmup, "connections": a.connections,
            "client_procs": a.client_procs, "payload": a.payload, "rounds": a.rounds,
            "idle": a.idle, "idle_fronts": a.idle_fronts, "hold_s": a.hold,
            "rlimit_nofile": nofile, "nginx_headers": a.nginx_headers,
            "goals": [GOAL_ECHO, GOAL_IDLE], "caveat": caveat,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log("gatehouse WebSocket benchmark: gatehouse->gatehouse.asgi vs uvicorn %s (websockets %s; "
        "direct and behind nginx %s), %d app processes" % (
            meta["uvicorn_version"], meta["websockets_version"], meta["nginx_version"],
            a.app_workers))
    log("  CPUs: %d online, %d usable; kernel %s; RLIMIT_NOFILE %d" % (
        meta["cpus"], usable, meta["kernel"], nofile))
    log("  NOTE: on a shared %d-core machine the clients, the front and the app processes "
        "compete for" % usable)
    log("        the cores: round trips/s and latencies are noisy; compare CPU per round trip "
        "too.")
    log("  gatehouse: %s" % (a.gatehouse or "(not measured)"))

    missing = []
    if "nginx_uvicorn" in a.setups or "nginx" in a.idle_fronts:
        if not shutil.which(a.nginx):
            missing.append("nginx")
    uses_uvicorn = any(SETUP_PARTS[s][1] == "uvicorn" for s in a.setups) or \
        "nginx" in a.idle_fronts
    mods = [("uvloop", "python3-uvloop")]
    if uses_uvicorn:
        mods += [("uvicorn", "python3-uvicorn"), ("httptools", "python3-httptools"),
                 ("websockets", "python3-websockets")]
    for mod, pkg in mods:
        if importlib.util.find_spec(mod) is None and pkg not in missing:
            missing.append(pkg)
    if missing:
        warn("missing: %s (Debian: nginx python3-uvicorn python3-uvloop python3-httptools "
             "python3-websockets)" % ", ".join(missing))
        return 2

    b = WsBench(a)
    log("  work dir: %s" % b.tmp)
    res = {"meta": meta}

    def preflight(b):
        if not a.wants_gh:
            return
        err = b.gatehouse_preflight()
        if err:
            b.fail_setup("gatehouse->gh.asgi", err)
            b.disabled[GH] = "setup failed: " + err.splitlines()[0]
            log("  gatehouse preflight FAILED; measuring the other setups only")
        else:
            log("  gatehouse preflight: GET / and one WebSocket echo through gatehouse.asgi ok")

    parts = [("preflight", preflight)]
    if a.setups:
        parts.append(("echo", echo))
    if a.idle_fronts:
        parts.append(("idle", idle))
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
