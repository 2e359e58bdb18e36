#!/bin/sh
# SPDX-License-Identifier: MIT
# `make container-test`: the container deployment, end to end. Not part of `make test`.
#
#   1. builds the images of docker/ (gatehouse, gatehouse-python, the demo apps and the uWSGI
#      legacy app), from the repository root as context;
#   2. checks the Kubernetes manifests of docker/k8s (docker/k8s/check_manifests.py: YAML,
#      required fields, links between objects, and the ConfigMap through gatehouse --check);
#   3. starts docker/compose.yaml as its own project (gatehouse-ctest, network CTEST_NET.0/24,
#      a free port on 127.0.0.1) so a running demo is not touched;
#   4. sends requests through every demo route: HTTP, SSE (checked to stream event by event)
#      and WebSockets (/asgi/ws echo, /wsgi/ws chat through WebSocket-over-HTTP); then the
#      admin listener (published on 127.0.0.1): /healthz, /readyz, and /metrics counting
#      those requests in gatehouse_requests_total; and the container's HEALTHCHECK command
#      (`gatehouse --healthcheck -c /etc/gatehouse/gatehouse.yaml`, run with docker exec; under
#      podman also `podman healthcheck run`, under Docker the engine's health status);
#   5. sends SIGTERM to the gatehouse container while a load runs from the host (short
#      requests on new and on kept-alive connections; in flight: SSE streams, a slow download
#      and WebSockets) and a poller asks /readyz every 20 ms, and checks that no request
#      failed: every request sent got its whole response, the slow download too, the SSE
#      streams were ended by the drain as complete responses, the WebSockets got a close
#      frame with 1001, new connections were refused once the gateway stopped listening,
#      /readyz answered 200 until the SIGTERM and 503 after it, before the process exited,
#      and the container exited with status 0 well within shutdown.timeout;
#   6. tears the stack down (also on failure or Ctrl-C) and prints how long it all took.
#
# Needs: docker (or podman's Docker API: DOCKER_HOST), docker-compose or `docker compose`,
# /usr/bin/python3 with python3-websockets and python3-yaml, loopback only.
# Environment: PYTHON (default /usr/bin/python3), CTEST_PORT and CTEST_ADMIN_PORT (the host
# ports of the gateway and of its admin listener, on 127.0.0.1; default: free ports),
# CTEST_NET (default 172.30.81), CTEST_KEEP=1 (leave the stack up on failure, to look at it),
# CTEST_BUILD=0 (use the images already built instead of building them), CTEST_NO_CACHE=1
# (build without the build cache: every apt-get and make runs again, as on a new machine).
set -u

cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-/usr/bin/python3}
PROJECT=gatehouse-ctest
CTEST_NET=${CTEST_NET:-172.30.81}
T0=$(date +%s)

say() { echo "container-test: $*" >&2; }
failmsg=""
fail() { failmsg="$*"; say "FAIL: $*"; exit 1; }
elapsed() { echo $(($(date +%s) - T0)); }

# No Docker engine, but podman serving its Docker API (../shared/tools/container-env starts
# it)? Use that socket; podman's builder wants the classic (non-BuildKit) client.
if [ -z "${DOCKER_HOST:-}" ] && [ ! -S /var/run/docker.sock ] &&
        [ -S /run/podman/podman.sock ]; then
    export DOCKER_HOST=unix:///run/podman/podman.sock DOCKER_BUILDKIT=0
fi
command -v docker >/dev/null 2>&1 || fail "no docker command"
docker version >/dev/null 2>&1 ||
    fail "docker does not answer (DOCKER_HOST=${DOCKER_HOST:-unset});" \
        "with podman: eval \"\$(../shared/tools/container-env)\""
if command -v docker-compose >/dev/null 2>&1; then
    COMPOSE="docker-compose"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE="docker compose"
else
    fail "neither docker-compose nor docker compose"
fi
"$PYTHON" -c 'import websockets, yaml' 2>/dev/null ||
    fail "$PYTHON lacks websockets or yaml (apt-get install python3-websockets python3-yaml)"

free_port() {
    "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
CTEST_PORT=${CTEST_PORT:-$(free_port)}
CTEST_ADMIN_PORT=${CTEST_ADMIN_PORT:-$(free_port)}
[ "$CTEST_PORT" != "$CTEST_ADMIN_PORT" ] || CTEST_ADMIN_PORT=$(free_port)
export GATEHOUSE_PORT="$CTEST_PORT" GATEHOUSE_ADMIN_PORT="$CTEST_ADMIN_PORT" \
    DEMO_NET="$CTEST_NET" DEMO_WORKERS=2
# shellcheck disable=SC2086
compose() { $COMPOSE -p "$PROJECT" -f docker/compose.yaml "$@"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-ctest.XXXXXX") || exit 1
up=""
cleanup() {
    status=$?
    trap '' INT TERM
    if [ -n "$up" ]; then
        if [ "$status" -ne 0 ]; then
            say "logs of the stack (last 40 lines per service):"
            compose logs --no-color --tail=40 >&2 2>&1 || true
        fi
        if [ "$status" -ne 0 ] && [ "${CTEST_KEEP:-}" = 1 ]; then
            say "CTEST_KEEP=1: the stack stays up; stop it with:" \
                "$COMPOSE -p $PROJECT -f docker/compose.yaml down"
        else
            compose down --remove-orphans -t 40 >"$tmp/down.log" 2>&1 ||
                { say "compose down failed:"; cat "$tmp/down.log" >&2; }
        fi
    fi
    rm -rf "$tmp"
    if [ "$status" -eq 0 ]; then
        say "PASS in $(elapsed)s"
    else
        say "FAILED after $(elapsed)s${failmsg:+: $failmsg}"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. images ------------------------------------------------------------------------------
build() {   # build TAG DOCKERFILE [ARGS...]
    tag=$1 file=$2
    shift 2
    t=$(date +%s)
    [ "${CTEST_NO_CACHE:-0}" = 1 ] && set -- --no-cache "$@"
    docker build -f "$file" -t "$tag" "$@" . >"$tmp/build.log" 2>&1 ||
        { tail -n 40 "$tmp/build.log" >&2; fail "docker build of $tag ($file)"; }
    say "built $tag in $(($(date +%s) - t))s"
}
if [ "${CTEST_BUILD:-1}" = 0 ]; then
    for i in gatehouse gatehouse-python gatehouse-demo-apps gatehouse-demo-legacy; do
        docker image inspect "$i:latest" >/dev/null 2>&1 || fail "CTEST_BUILD=0 but no image $i"
    done
    say "CTEST_BUILD=0: using the images already built"
else
    build gatehouse docker/Dockerfile
    build gatehouse-python docker/Dockerfile.python
    build gatehouse-demo-apps docker/Dockerfile.demo --target apps
    build gatehouse-demo-legacy docker/Dockerfile.demo --target legacy
fi
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' 2>/dev/null |
    grep -E '(^|/)gatehouse(-python|-demo-apps|-demo-legacy)?:latest ' |
    sed 's/^/container-test: image /' >&2

# ---- 2. the Kubernetes manifests ----------------------------------------------------------------
"$PYTHON" docker/k8s/check_manifests.py >"$tmp/k8s.log" 2>&1 ||
    { cat "$tmp/k8s.log" >&2; fail "docker/k8s manifests"; }
say "ok: docker/k8s: $(tail -n 1 "$tmp/k8s.log" | sed 's/^check_manifests: //')"
if "$PYTHON" docker/k8s/check_manifests.py --gatehouse \
        "docker run --rm -i --entrypoint gatehouse gatehouse:latest" >"$tmp/k8s.log" 2>&1; then
    say "ok: docker/k8s/configmap.yaml passes gatehouse --check"
else
    cat "$tmp/k8s.log" >&2
    fail "gatehouse --check of docker/k8s/configmap.yaml"
fi

# ---- 3. the stack ---------------------------------------------------------------------------
say "starting docker/compose.yaml as project $PROJECT on 127.0.0.1:$CTEST_PORT, admin" \
    "127.0.0.1:$CTEST_ADMIN_PORT (network $CTEST_NET.0/24)"
up=1
t=$(date +%s)
compose up -d --no-build >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "compose up"; }
say "stack up in $(($(date +%s) - t))s"
GW=$(compose ps -q gatehouse)
[ -n "$GW" ] || fail "no gatehouse container"

# ---- 4. every route -------------------------------------------------------------------------
cat >"$tmp/check.py" <<'EOF'
"""The host side of tools/container-test.sh: `routes PORT ADMIN_PORT` checks every demo route
and the admin listener, `drain PORT ADMIN_PORT CONTAINER` SIGTERMs the gateway's container
under load and checks nothing failed and /readyz said 503 before the exit."""
import asyncio
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import uuid

import websockets

HOST = "127.0.0.1"
PORT = int(sys.argv[2])
ADMIN = int(sys.argv[3])


def log(msg):
    print("container-test: " + msg, file=sys.stderr, flush=True)


def get(path, timeout=10, port=PORT):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        c.close()


def wait_ready(deadline=90):
    """Until every upstream answers its /healthz through the gateway."""
    end = time.monotonic() + deadline
    paths = ["/http/healthz", "/wsgi/healthz", "/legacy/healthz", "/asgi/healthz"]
    while True:
        bad = []
        for p in paths:
            try:
                status, _, body = get(p, timeout=2)
                if status != 200 or body.strip() != b"ok":
                    bad.append("%s: %d" % (p, status))
            except OSError as e:
                bad.append("%s: %s" % (p, e))
        if not bad:
            return
        if time.monotonic() > end:
            raise SystemExit("not ready after %ds: %s" % (deadline, "; ".join(bad)))
        time.sleep(0.5)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_http():
    status, ctype, body = get("/")
    check(status == 200 and b"<title>gatehouse demo</title>" in body, "/: %d" % status)
    status, _, body = get("/http/")
    check(status == 200 and b"<title>gatehouse demo</title>" in body, "/http/: %d" % status)
    status, _, body = get("/http/headers?format=json")
    names = {k.lower() for k, _ in json.loads(body)["headers"]}
    check(status == 200 and {"x-forwarded-for", "x-request-id", "forwarded"} <= names,
          "/http/headers: %d %s" % (status, sorted(names)))
    for path, server, prefix in [("/wsgi/", "gatehouse.wsgi", "/wsgi"),
                                 ("/legacy/", "uWSGI", "/legacy")]:
        status, _, body = get(path + "?format=json")
        info = json.loads(body)
        check(status == 200 and info["server"].startswith(server)
              and info["script_name"] == prefix and info["x_request_start"].startswith("t="),
              "%s: %d %s" % (path, status, info))
    status, _, body = get("/asgi/?format=json")
    info = json.loads(body)
    check(status == 200 and info["server"] == "gatehouse.asgi"
          and info["scope"]["root_path"] == "/asgi", "/asgi/: %d %s" % (status, body[:200]))
    status, _, body = get("/asgi/items/7?q=ctest")
    check(status == 200 and json.loads(body)["item_id"] == 7, "/asgi/items/7: %d" % status)
    log("ok: HTTP  /  /http/  /http/headers  /wsgi/  /legacy/  /asgi/  /asgi/items/7")


def read_sse(path, n, timeout=30, whole=True):
    """GETs an SSE stream of n ticks; answers the arrival times of its events. Raises unless
    the ticks arrived in order and the response ended complete (its last chunk: a cut raises
    IncompleteRead), and with |whole|, unless all n ticks and the end event arrived."""
    c = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    try:
        t0 = time.monotonic()
        c.request("GET", "%s?n=%d" % (path, n), headers={"Accept": "text/event-stream"})
        r = c.getresponse()
        check(r.status == 200, "%s: status %d" % (path, r.status))
        check(r.getheader("Content-Type", "").startswith("text/event-stream"),
              "%s: Content-Type %s" % (path, r.getheader("Content-Type")))
        times, ended = [], False
        while True:
            line = r.readline()
            if not line:
                break
            if line.startswith(b"id: "):
                check(int(line[4:]) == len(times) + 1, "%s: event %r out of order" % (path, line))
                times.append(time.monotonic() - t0)
            elif line.startswith(b"event: end"):
                ended = True
        check(not whole or (len(times) == n and ended),
              "%s: %d of %d events, end %s" % (path, len(times), n, ended))
        check(len(times) >= 1, "%s: no event" % path)
        return times
    finally:
        c.close()


def check_sse():
    for path in ["/wsgi/events", "/asgi/events"]:
        times = read_sse(path, 3)
        # One tick a second: streamed, the first arrives long before the last.
        check(times[0] < 0.8 and times[-1] - times[0] > 1.5,
              "%s: not streamed (events at %s)" % (path, times))
        log("ok: SSE   %s (events at %s s)" % (path, ", ".join("%.2f" % t for t in times)))


async def check_ws():
    uri = "ws://%s:%d" % (HOST, PORT)
    async with websockets.connect(uri + "/asgi/ws", subprotocols=["echo"], open_timeout=10,
                                  close_timeout=5) as ws:
        check(ws.subprotocol == "echo", "/asgi/ws: subprotocol %r" % ws.subprotocol)
        hello = await asyncio.wait_for(ws.recv(), 10)
        check("gatehouse.asgi" in hello, "/asgi/ws: greeting %r" % hello)
        await ws.send("hello from container-test")
        check(await asyncio.wait_for(ws.recv(), 10) == "hello from container-test", "/asgi/ws text")
        await ws.send(b"\x00\x01\xfe\xff")
        check(await asyncio.wait_for(ws.recv(), 10) == b"\x00\x01\xfe\xff", "/asgi/ws binary")
    check(ws.close_code == 1000, "/asgi/ws: close code %s" % ws.close_code)
    log("ok: WS    /asgi/ws (echo subprotocol, text and binary echoed, closed 1000)")

    word = "ctest-" + uuid.uuid4().hex[:8]
    async with websockets.connect(uri + "/wsgi/ws?name=ctest", open_timeout=10,
                                  close_timeout=5) as ws:
        hello = await asyncio.wait_for(ws.recv(), 10)
        check("gatehouse.wsgi" in hello, "/wsgi/ws: greeting %r" % hello)
        await ws.send(word)
        end = time.monotonic() + 10
        while True:
            check(time.monotonic() < end, "/wsgi/ws: own message never came back")
            line = await asyncio.wait_for(ws.recv(), 10)
            if ("ctest: " + word) in line:
                break
    log("ok: WS    /wsgi/ws (chat through WebSocket-over-HTTP: joined, message came back)")


def metrics():
    """The admin listener's /metrics as {(name, frozenset(labels)): value}."""
    status, ctype, body = get("/metrics", port=ADMIN)
    check(status == 200 and ctype.startswith("text/plain; version=0.0.4"),
          "admin /metrics: %d %s" % (status, ctype))
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        check(m is not None, "admin /metrics: not Prometheus text: %r" % line)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def check_admin():
    """The admin listener, published on 127.0.0.1:ADMIN: /healthz, /readyz, and /metrics
    counting the requests the route checks made, for each upstream."""
    for path, want in [("/healthz", b"ok"), ("/readyz", b"ready")]:
        status, _, body = get(path, port=ADMIN)
        check((status, body.strip()) == (200, want), "admin %s: %d %r" % (path, status, body))
    ms = metrics()
    counts = {}
    for (name, labels), v in ms.items():
        lab = dict(labels)
        if name == "gatehouse_requests_total" and lab.get("code") == "2xx":
            counts[lab.get("upstream")] = counts.get(lab.get("upstream"), 0) + v
    for up in ["demo", "wsgi", "legacy", "asgi"]:
        check(counts.get(up, 0) > 0, "admin /metrics: no gatehouse_requests_total{upstream=%r,"
              "code=\"2xx\"} after the route checks: %s" % (up, counts))
    check(ms.get(("gatehouse_draining", frozenset())) == 0, "admin /metrics: draining before "
          "SIGTERM")
    log("ok: admin /healthz 200 ok, /readyz 200 ready, /metrics gatehouse_requests_total 2xx "
        "by upstream: %s" % ", ".join("%s %d" % kv for kv in sorted(counts.items())))


def routes():
    wait_ready()
    check_http()
    check_sse()
    asyncio.run(check_ws())
    check_admin()


# ---- drain ------------------------------------------------------------------------------------

QUICK = ["/http/", "/wsgi/?format=json", "/legacy/?format=json", "/asgi/?format=json",
         "/http/headers?format=json", "/asgi/items/3"]


class Load:
    def __init__(self):
        self.lock = threading.Lock()
        self.sigterm_at = None        # time.monotonic() of the SIGTERM (docker kill starts)
        self.kill_done = None         # time.monotonic() when docker kill returned
        self.ok_before = self.ok_after = self.refused = self.retried = 0
        self.failures = []
        self.notes = []

    def since(self):
        return "" if self.sigterm_at is None else " (%+.3fs from SIGTERM)" % (
            time.monotonic() - self.sigterm_at)

    def ok(self):
        with self.lock:
            if self.sigterm_at is None:
                self.ok_before += 1
            else:
                self.ok_after += 1

    def fail(self, what):
        with self.lock:
            self.failures.append(what + self.since())

    def note(self, what):
        with self.lock:
            self.notes.append(what + self.since())


def one_request(conn, path):
    """Sends one GET on conn and reads the whole answer; raises on any failure."""
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()   # IncompleteRead when cut short of its Content-Length or last chunk
    if r.status != 200 or not body:
        raise AssertionError("status %d, %d bytes" % (r.status, len(body)))
    return r


def new_conn_worker(load, k, stop):
    """A new connection per request, until the gateway refuses connections after SIGTERM."""
    i = k
    while not stop.is_set():
        path = QUICK[i % len(QUICK)]
        i += 1
        c = http.client.HTTPConnection(HOST, PORT, timeout=15)
        try:
            try:
                c.connect()
            except ConnectionRefusedError:
                if load.sigterm_at is None:
                    load.fail("connect refused before SIGTERM")
                else:
                    with load.lock:
                        load.refused += 1
                return
            try:
                one_request(c, path)
                load.ok()
            except Exception as e:   # noqa: BLE001 - every failure counts
                load.fail("new connection, GET %s: %r" % (path, e))
                return
        finally:
            c.close()


def keepalive_worker(load, k, stop):
    """Requests on one kept-alive connection. A request that meets the server's close of an
    idle connection (no response byte) is sent again on a new connection, once, as HTTP
    clients do for idempotent requests (RFC 9112 9.3.1); that one must not fail."""
    i = k
    c = None
    while not stop.is_set():
        path = QUICK[i % len(QUICK)]
        i += 1
        reused = c is not None
        if c is None:
            c = http.client.HTTPConnection(HOST, PORT, timeout=15)
            try:
                c.connect()
            except ConnectionRefusedError:
                if load.sigterm_at is None:
                    load.fail("connect refused before SIGTERM")
                else:
                    with load.lock:
                        load.refused += 1
                return
        try:
            r = one_request(c, path)
            load.ok()
            if r.will_close:
                c.close()
                c = None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            c.close()
            c = None
            if not reused:
                load.fail("keep-alive, GET %s on a new connection: %r" % (path, e))
                return
            with load.lock:
                load.retried += 1
            i -= 1    # the same request again, on a new connection
        except Exception as e:   # noqa: BLE001
            load.fail("keep-alive, GET %s: %r" % (path, e))
            return
    if c is not None:
        c.close()


def sse_worker(load, path, n, started):
    """An event stream in flight at the SIGTERM: the drain ends it as a complete response
    after the events sent so far (config/README.md, `shutdown`), so fewer than n may come,
    but in order and never cut."""
    try:
        started.release()
        times = read_sse(path, n, timeout=40, whole=False)
        if load.sigterm_at is None:
            raise AssertionError("the stream ended before the SIGTERM")
        load.ok()
        load.note("SSE %s: %d of %d events, the last at %.2fs; ended complete"
                  % (path, len(times), n, times[-1]))
    except Exception as e:   # noqa: BLE001
        load.fail("SSE %s: %r" % (path, e))


def slow_worker(load, path, lines, started):
    """A slow download in flight at the SIGTERM (the http app streams a line every 0.5 s):
    the drain waits for it, so it must arrive whole, and meanwhile /readyz says 503."""
    c = http.client.HTTPConnection(HOST, PORT, timeout=40)
    try:
        started.release()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        got = body.decode(errors="replace").splitlines()
        if r.status != 200 or len(got) != lines or got[-1] != "done":
            raise AssertionError("status %d, %d of %d lines, last %r"
                                 % (r.status, len(got), lines, got[-1:]))
        if load.sigterm_at is None:
            raise AssertionError("the download ended before the SIGTERM")
        load.ok()
        load.note("GET %s: whole (%d lines)" % (path, len(got)))
    except Exception as e:   # noqa: BLE001
        load.fail("GET %s: %r" % (path, e))
    finally:
        c.close()


def ws_worker(load, path, started):
    async def run():
        async with websockets.connect("ws://%s:%d%s" % (HOST, PORT, path), open_timeout=10,
                                      close_timeout=10, ping_interval=None) as ws:
            await asyncio.wait_for(ws.recv(), 10)      # the greeting
            started.release()
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 40)   # chat lines, until the close
            except websockets.ConnectionClosed:
                pass
            return ws.close_code
    try:
        code = asyncio.run(run())
        if code != 1001:
            load.fail("WebSocket %s: closed with %s, not 1001 (going away)" % (path, code))
        else:
            load.note("WebSocket %s: closed with 1001" % path)
    except Exception as e:   # noqa: BLE001
        started.release()
        load.fail("WebSocket %s: %r" % (path, e))


class ReadyPoller(threading.Thread):
    """GETs /readyz on the admin listener every 20 ms (a new connection each: the listener
    answers one request per connection) until stopped, and keeps what it saw: statuses
    before and after the SIGTERM, the first 503, the last answer, and /metrics' draining
    gauge once while it says 503."""

    def __init__(self, load):
        super().__init__(daemon=True)
        self.load = load
        self.stop = threading.Event()
        self.before = {}            # status -> count, before the SIGTERM
        self.after = {}             # status or error name -> count, after it
        self.first_503 = None       # seconds from the SIGTERM
        self.last_answer = None     # seconds from the SIGTERM of the last HTTP answer
        self.draining_gauge = None
        self.ready_after_kill = 0   # 200s to polls sent after `docker kill` had returned

    def run(self):
        while not self.stop.is_set():
            sig = self.load.sigterm_at
            killed = self.load.kill_done
            try:
                status, _, body = get("/readyz", timeout=1, port=ADMIN)
                what = status
            except (OSError, http.client.HTTPException) as e:
                status, what = None, type(e).__name__
            now = time.monotonic()
            if sig is None:
                self.before[what] = self.before.get(what, 0) + 1
            else:
                self.after[what] = self.after.get(what, 0) + 1
                if status is not None:
                    self.last_answer = now - sig
                if status == 200 and killed is not None:
                    self.ready_after_kill += 1
                if status == 503 and self.first_503 is None:
                    self.first_503 = now - sig
                    try:
                        self.draining_gauge = metrics().get(("gatehouse_draining", frozenset()))
                    except (OSError, http.client.HTTPException, AssertionError) as e:
                        self.draining_gauge = repr(e)
            self.stop.wait(0.02)


def drain():
    container = sys.argv[4]
    wait_ready()
    load, stop = Load(), threading.Event()
    poller = ReadyPoller(load)
    poller.start()
    threads = [threading.Thread(target=new_conn_worker, args=(load, k, stop)) for k in range(6)]
    threads += [threading.Thread(target=keepalive_worker, args=(load, k, stop)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    # Long exchanges in flight at the SIGTERM: SSE streams (5 ticks, a second apart), which
    # the drain ends; a slow download (8 lines, 0.5 s apart), which it waits for; WebSockets,
    # which it closes with 1001.
    started = threading.Semaphore(0)
    longs = [threading.Thread(target=sse_worker, args=(load, p, 5, started))
             for p in ["/wsgi/events", "/asgi/events", "/legacy/events"]]
    longs += [threading.Thread(target=slow_worker,
                               args=(load, "/http/stream?n=8&interval=0.5", 10, started))]
    longs += [threading.Thread(target=ws_worker, args=(load, p, started))
              for p in ["/asgi/ws", "/wsgi/ws?name=drain"]]
    for t in longs:
        t.start()
    for _ in longs:
        started.acquire(timeout=15)
    time.sleep(1)
    before = load.ok_before
    load.sigterm_at = time.monotonic()
    subprocess.run(["docker", "kill", "--signal", "TERM", container], check=True,
                   stdout=subprocess.DEVNULL)
    load.kill_done = time.monotonic()
    log("SIGTERM sent to the gatehouse container after %d requests" % before)
    for t in threads + longs:
        t.join(60)
    stop.set()
    for t in threads + longs:
        t.join(5)
    stuck = [t for t in threads + longs if t.is_alive()]
    log("under load: %d requests answered before SIGTERM, %d in flight or after it; %d "
        "connections refused once it stopped listening; %d requests sent again after the "
        "server closed an idle kept-alive connection" % (
            load.ok_before, load.ok_after, load.refused, load.retried))
    for n in load.notes:
        log("  " + n)
    if stuck:
        load.fail("%d client threads still running a minute after SIGTERM" % len(stuck))
    if load.ok_before < 20:
        load.fail("only %d requests answered before SIGTERM" % load.ok_before)
    if load.refused == 0:
        load.fail("no connection was refused after SIGTERM: did the gateway stop?")
    # The container must end on its own, with status 0, well within shutdown.timeout (30s).
    w = subprocess.run(["docker", "wait", container], capture_output=True, text=True,
                       timeout=90)
    took = time.monotonic() - load.sigterm_at
    poller.stop.set()
    poller.join(5)
    code = w.stdout.strip()
    log("the gatehouse container exited with status %s, %.1fs after SIGTERM" % (code, took))
    if code != "0":
        load.fail("gatehouse exited with status %s after SIGTERM (137: killed)" % code)
    if took > 25:
        load.fail("the drain took %.1fs (the slow download ends after about 3s)" % took)
    log("/readyz poller: before SIGTERM %s; after it %s; docker kill took %.3fs; first 503 "
        "at %s, last answer at %s, gatehouse_draining %s then" % (
            poller.before, poller.after, load.kill_done - load.sigterm_at,
            "none" if poller.first_503 is None else "%+.3fs" % poller.first_503,
            "none" if poller.last_answer is None else "%+.3fs" % poller.last_answer,
            poller.draining_gauge))
    if set(poller.before) != {200}:
        load.fail("/readyz before SIGTERM: %s (want only 200)" % poller.before)
    if poller.first_503 is None:
        load.fail("/readyz never answered 503 between SIGTERM and the exit: %s" % poller.after)
    else:
        if poller.first_503 > load.kill_done - load.sigterm_at + 1.0:
            load.fail("/readyz answered 503 only %.3fs after SIGTERM" % poller.first_503)
        if poller.draining_gauge != 1:
            load.fail("/metrics gatehouse_draining while /readyz said 503: %s"
                      % poller.draining_gauge)
    if poller.ready_after_kill:
        load.fail("/readyz answered 200 to %d polls sent after docker kill had returned"
                  % poller.ready_after_kill)
    for f in load.failures:
        log("FAILED: " + f)
    if load.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    try:
        {"routes": routes, "drain": drain}[sys.argv[1]]()
    except AssertionError as e:
        raise SystemExit("container-test: FAIL: %s" % e)
EOF

t=$(date +%s)
"$PYTHON" "$tmp/check.py" routes "$CTEST_PORT" "$CTEST_ADMIN_PORT" || fail "routes"

# The container's HEALTHCHECK (the image's, which compose.yaml repeats): run its command in the
# container as the engine does, after making sure a failing check does fail through docker
# exec (a wrong URL must exit 1), so that the 0 means something.
hc=$(docker inspect --format \
    '{{if .Config.Healthcheck}}{{json .Config.Healthcheck.Test}}{{end}}' "$GW") ||
    fail "docker inspect $GW"
case $hc in
    '["CMD",'*) ;;
    *) fail "the gatehouse container has no HEALTHCHECK in exec form: '$hc'" ;;
esac
hc_cmd=$(echo "$hc" | "$PYTHON" -c 'import json, shlex, sys
print(shlex.join(json.load(sys.stdin)[1:]))')
if docker exec "$GW" gatehouse --healthcheck http://127.0.0.1:1/healthz \
        >"$tmp/hc.log" 2>&1; then
    fail "gatehouse --healthcheck http://127.0.0.1:1/healthz exited 0 (nothing listens there)"
fi
eval "set -- $hc_cmd"     # the JSON list, quoted for sh by shlex.join
docker exec "$GW" "$@" >"$tmp/hc.log" 2>&1 ||
    { rc=$?; cat "$tmp/hc.log" >&2; fail "HEALTHCHECK: docker exec $hc_cmd exited $rc"; }
say "ok: HEALTHCHECK: docker exec $hc_cmd exits 0 (and 1 for a port where nothing listens)"
if docker version 2>/dev/null | grep -q 'Podman Engine'; then
    # podman keeps the HEALTHCHECK but schedules it with systemd timers (none here); it runs
    # it when asked and records the result as the container's health.
    if command -v podman >/dev/null 2>&1 && podman container exists "$GW" 2>/dev/null; then
        podman healthcheck run "$GW" >"$tmp/hc.log" 2>&1 ||
            { cat "$tmp/hc.log" >&2; fail "podman healthcheck run"; }
        health=$(docker inspect --format '{{.State.Health.Status}}' "$GW")
        [ "$health" = healthy ] || fail "after podman healthcheck run, the health is '$health'"
        say "ok: HEALTHCHECK: podman healthcheck run: $health"
    else
        say "note: podman's Docker API without its podman command: no podman healthcheck run"
    fi
else
    # Docker runs the HEALTHCHECK itself, every 10s: wait for its verdict.
    n=0
    while :; do
        health=$(docker inspect --format '{{.State.Health.Status}}' "$GW")
        [ "$health" = healthy ] && break
        n=$((n + 1))
        if [ "$n" -ge 60 ] || [ "$health" = unhealthy ]; then
            fail "the engine's health status of the gatehouse container is '$health'"
        fi
        sleep 0.5
    done
    say "ok: HEALTHCHECK: the engine reports the container healthy"
fi

# ---- 5. SIGTERM under load ------------------------------------------------------------------
say "routes, admin and HEALTHCHECK checked in $(($(date +%s) - t))s"
t=$(date +%s)
say "SIGTERM under load"
"$PYTHON" "$tmp/check.py" drain "$CTEST_PORT" "$CTEST_ADMIN_PORT" "$GW" ||
    fail "SIGTERM under load"
say "SIGTERM under load checked in $(($(date +%s) - t))s"
docker logs "$GW" 2>&1 | grep -v '^{' | grep -E 'draining|stopped|signal' | tail -n 5 |
    sed 's/^/container-test:   gatehouse: /' >&2

# ---- 6. down --------------------------------------------------------------------------------
t=$(date +%s)
compose down --remove-orphans -t 40 >"$tmp/down.log" 2>&1 ||
    { cat "$tmp/down.log" >&2; fail "compose down"; }
up=""
say "stack removed in $(($(date +%s) - t))s"
