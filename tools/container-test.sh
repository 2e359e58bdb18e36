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
#      and WebSockets (/asgi/ws echo, /wsgi/ws chat through WebSocket-over-HTTP), and runs
#      `gatehouse --healthcheck` in the container when the binary has it;
#   5. sends SIGTERM to the gatehouse container while a load runs from the host (short
#      requests on new and on kept-alive connections, SSE streams and WebSockets in flight)
#      and checks that no request failed: every request sent got its whole response, the
#      streams in flight finished, the WebSockets got a close frame with 1001, new
#      connections were refused once the gateway stopped listening, and the container exited
#      with status 0 well within shutdown.timeout;
#   6. tears the stack down (also on failure or Ctrl-C) and prints how long it all took.
#
# Needs: docker (or podman's Docker API: DOCKER_HOST), docker-compose or `docker compose`,
# /usr/bin/python3 with python3-websockets and python3-yaml, loopback only.
# Environment: PYTHON (default /usr/bin/python3), CTEST_PORT (default: a free port),
# CTEST_NET (default 172.30.81), CTEST_KEEP=1 (leave the stack up on failure, to look at it),
# CTEST_BUILD=0 (use the images already built instead of building them).
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

if [ -z "${CTEST_PORT:-}" ]; then
    CTEST_PORT=$("$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
fi
export GATEHOUSE_PORT="$CTEST_PORT" DEMO_NET="$CTEST_NET" DEMO_WORKERS=2
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

# Does this gatehouse have the admin listener and `--healthcheck` yet? (`docker run --rm`
# through podman's Docker API loses the exit status: look at the output.)
if docker run --rm gatehouse:latest --help 2>&1 | grep -q -- --healthcheck; then
    has_admin=1
else
    has_admin=""
fi

# ---- 2. the Kubernetes manifests ----------------------------------------------------------------
"$PYTHON" docker/k8s/check_manifests.py >"$tmp/k8s.log" 2>&1 ||
    { cat "$tmp/k8s.log" >&2; fail "docker/k8s manifests"; }
say "ok: docker/k8s: $(tail -n 1 "$tmp/k8s.log" | sed 's/^check_manifests: //')"
if "$PYTHON" docker/k8s/check_manifests.py --gatehouse \
        "docker run --rm -i --entrypoint gatehouse gatehouse:latest" >"$tmp/k8s.log" 2>&1; then
    say "ok: docker/k8s/configmap.yaml passes gatehouse --check"
elif [ -z "$has_admin" ]; then
    say "SKIP: docker/k8s/configmap.yaml: gatehouse --check refuses it until the admin" \
        "listener lands:"
    grep -- '--check' "$tmp/k8s.log" | sed 's/^/container-test:   /' >&2
else
    cat "$tmp/k8s.log" >&2
    fail "gatehouse --check of docker/k8s/configmap.yaml"
fi

# ---- 3. the stack ---------------------------------------------------------------------------
say "starting docker/compose.yaml as project $PROJECT on 127.0.0.1:$CTEST_PORT" \
    "(network $CTEST_NET.0/24)"
up=1
compose up -d --no-build >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "compose up"; }
GW=$(compose ps -q gatehouse)
[ -n "$GW" ] || fail "no gatehouse container"

# ---- 4. every route -------------------------------------------------------------------------
cat >"$tmp/check.py" <<'EOF'
"""The host side of tools/container-test.sh: `routes PORT` checks every demo route, `drain
PORT CONTAINER` SIGTERMs the gateway's container under load and checks nothing failed."""
import asyncio
import http.client
import json
import subprocess
import sys
import threading
import time
import uuid

import websockets

HOST = "127.0.0.1"
PORT = int(sys.argv[2])


def log(msg):
    print("container-test: " + msg, file=sys.stderr, flush=True)


def get(path, timeout=10):
    c = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
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


def read_sse(path, n, timeout=30):
    """GETs an SSE stream of n ticks; answers the arrival times of its events. Raises unless
    all n ticks and the end event arrived, in order."""
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
        check(len(times) == n and ended,
              "%s: %d of %d events, end %s" % (path, len(times), n, ended))
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


def routes():
    wait_ready()
    check_http()
    check_sse()
    asyncio.run(check_ws())


# ---- drain ------------------------------------------------------------------------------------

QUICK = ["/http/", "/wsgi/?format=json", "/legacy/?format=json", "/asgi/?format=json",
         "/http/headers?format=json", "/asgi/items/3"]


class Load:
    def __init__(self):
        self.lock = threading.Lock()
        self.sigterm_at = None        # time.monotonic() of the SIGTERM
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
    try:
        started.release()
        times = read_sse(path, n, timeout=40)
        load.ok()
        load.note("SSE %s: %d events, last at %.2fs" % (path, len(times), times[-1]))
    except Exception as e:   # noqa: BLE001
        load.fail("SSE %s: %r" % (path, e))


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


def drain():
    container = sys.argv[3]
    wait_ready()
    load, stop = Load(), threading.Event()
    threads = [threading.Thread(target=new_conn_worker, args=(load, k, stop)) for k in range(6)]
    threads += [threading.Thread(target=keepalive_worker, args=(load, k, stop)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    # Long exchanges in flight at the SIGTERM: SSE streams (about 4 s) and WebSockets.
    started = threading.Semaphore(0)
    longs = [threading.Thread(target=sse_worker, args=(load, p, 5, started))
             for p in ["/wsgi/events", "/asgi/events", "/legacy/events"]]
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
    code = w.stdout.strip()
    log("the gatehouse container exited with status %s, %.1fs after SIGTERM" % (code, took))
    if code != "0":
        load.fail("gatehouse exited with status %s after SIGTERM (137: killed)" % code)
    if took > 25:
        load.fail("the drain took %.1fs (the in-flight streams end after about 3s)" % took)
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

"$PYTHON" "$tmp/check.py" routes "$CTEST_PORT" || fail "routes"

# The HEALTHCHECK of docker/Dockerfile runs `gatehouse --healthcheck` (GET the admin
# listener's /healthz); check it answers when the binary has it.
if [ -n "$has_admin" ]; then
    n=0
    until docker exec "$GW" gatehouse --healthcheck >"$tmp/hc.log" 2>&1; do
        n=$((n + 1))
        if [ "$n" -ge 20 ]; then
            cat "$tmp/hc.log" >&2
            fail "gatehouse --healthcheck in the container"
        fi
        sleep 0.5
    done
    say "ok: HEALTHCHECK gatehouse --healthcheck (admin /healthz) answers 0"
else
    say "SKIP: HEALTHCHECK: this gatehouse has no --healthcheck option yet (the image's" \
        "HEALTHCHECK reports unhealthy)"
fi

# ---- 5. SIGTERM under load ------------------------------------------------------------------
say "SIGTERM under load"
"$PYTHON" "$tmp/check.py" drain "$CTEST_PORT" "$GW" || fail "SIGTERM under load"
docker logs "$GW" 2>&1 | grep -v '^{' | grep -E 'draining|stopped|signal' | tail -n 5 |
    sed 's/^/container-test:   gatehouse: /' >&2

# ---- 6. down --------------------------------------------------------------------------------
t=$(date +%s)
compose down --remove-orphans -t 40 >"$tmp/down.log" 2>&1 ||
    { cat "$tmp/down.log" >&2; fail "compose down"; }
up=""
say "stack removed in $(($(date +%s) - t))s"
