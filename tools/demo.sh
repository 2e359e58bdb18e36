#!/bin/sh
# SPDX-License-Identifier: MIT
# The demo behind `make run`: starts the demo apps of tests/apps, waits until each answers,
# then runs the gateway in the foreground with the default configuration. Ctrl-C (or SIGTERM)
# stops them all.
#
#   demo_http.py under gunicorn               /  /http/           DEMO_HTTP_UPSTREAM
#   demo_wsgi.py under gatehouse.wsgi         /wsgi/              DEMO_WSGI_UPSTREAM
#   demo_wsgi.py under Debian's uWSGI         /legacy/            DEMO_LEGACY_UPSTREAM
#   demo_asgi.py under gatehouse.asgi         /asgi/              DEMO_ASGI_UPSTREAM
#
# Usage: tools/demo.sh BIN
# Environment: GATEHOUSE_CONFIG (default config/gatehouse.yaml), PYTHON (default
# /usr/bin/python3), UWSGI (default /usr/bin/uwsgi), GATEHOUSE_LISTEN (the gateway's address;
# default 127.0.0.1:8080), and where each app listens, read by the default configuration too:
# DEMO_HTTP_UPSTREAM (default 127.0.0.1:8001), DEMO_WSGI_UPSTREAM, DEMO_LEGACY_UPSTREAM and
# DEMO_ASGI_UPSTREAM (unix:PATH or IP:PORT; default unix sockets in a private directory made
# with mktemp -d and removed on exit, which also holds uWSGI's log).
set -u

usage() { echo "usage: $0 path/to/gatehouse" >&2; exit 2; }
[ $# -eq 1 ] || usage
BIN=$1
case $BIN in /*) ;; *) BIN=$(pwd)/$BIN ;; esac

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
CONFIG=${GATEHOUSE_CONFIG:-config/gatehouse.yaml}
PYTHON=${PYTHON:-/usr/bin/python3}
UWSGI=${UWSGI:-/usr/bin/uwsgi}
LISTEN_PORT=8080
[ -n "${GATEHOUSE_LISTEN:-}" ] && LISTEN_PORT=${GATEHOUSE_LISTEN##*:}

[ -x "$BIN" ] || { echo "demo: $BIN is not an executable (run make first)" >&2; exit 1; }
[ -r "$CONFIG" ] || { echo "demo: no configuration at $CONFIG" >&2; exit 1; }
[ -x "$UWSGI" ] || { echo "demo: no uWSGI at $UWSGI (run tools/deps.sh run)" >&2; exit 1; }

app_pid=""
wsgi_pid=""
legacy_pid=""
asgi_pid=""
gw_pid=""
rundir=""

# Answers 0 while process $1 runs (a zombie, dead but not yet waited for, does not count).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    case $(cat "/proc/$1/stat" 2>/dev/null) in *") Z "*) return 1 ;; esac
    return 0
}

# Sends SIGTERM to processes $2..., waits up to $1 seconds for all of them, then SIGKILL.
stop_pids() {
    limit=$(($1 * 10))
    shift
    for p; do kill -TERM "$p" 2>/dev/null; done
    i=0
    while [ "$i" -lt "$limit" ]; do
        running=""
        for p; do alive "$p" && running="$running $p"; done
        [ -z "$running" ] && break
        sleep 0.1
        i=$((i + 1))
    done
    for p; do
        if alive "$p"; then
            echo "demo: process $p did not stop, killing it" >&2
            kill -KILL "$p" 2>/dev/null
        fi
        wait "$p" 2>/dev/null
    done
    return 0
}

# The gateway first (it drains its exchanges), then the apps. The PIDs are numbers: unquoted
# on purpose, so that an empty one is no argument.
# shellcheck disable=SC2086
cleanup() {
    trap '' INT TERM
    stop_pids 35 $gw_pid
    gw_pid=""
    stop_pids 10 $app_pid $wsgi_pid $legacy_pid $asgi_pid
    app_pid=""
    wsgi_pid=""
    legacy_pid=""
    asgi_pid=""
    [ -n "$rundir" ] && rm -rf "$rundir"
    rundir=""
}

on_signal() {
    echo "" >&2
    echo "demo: stopping" >&2
    cleanup
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'cleanup' EXIT

rundir=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-demo.XXXXXX") || exit 1
APP_ADDR=${DEMO_HTTP_UPSTREAM:-127.0.0.1:8001}
WSGI_ADDR=${DEMO_WSGI_UPSTREAM:-unix:$rundir/wsgi.sock}
LEGACY_ADDR=${DEMO_LEGACY_UPSTREAM:-unix:$rundir/legacy.sock}
ASGI_ADDR=${DEMO_ASGI_UPSTREAM:-unix:$rundir/asgi.sock}
export DEMO_HTTP_UPSTREAM="$APP_ADDR" DEMO_WSGI_UPSTREAM="$WSGI_ADDR"
export DEMO_LEGACY_UPSTREAM="$LEGACY_ADDR" DEMO_ASGI_UPSTREAM="$ASGI_ADDR"

# Prints what the HTTP app at $1 answers on /healthz (nothing when nothing answers).
http_health() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 1 "http://$1/healthz" 2>/dev/null
    else
        "$PYTHON" -c 'import sys, urllib.request
print(urllib.request.urlopen("http://%s/healthz" % sys.argv[1], timeout=1).read().decode())' \
            "$1" 2>/dev/null
    fi
}

# Prints what the uwsgi server at $1 (unix:PATH or IP:PORT) answers on /healthz.
uwsgi_health() {
    PYTHONPATH="$ROOT/adapters/python" "$PYTHON" - "$1" 2>/dev/null <<'EOF'
import socket, sys
from gatehouse.protocol import encode_request
addr = sys.argv[1]
if addr.startswith("unix:"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(addr[5:])
else:
    host, _, port = addr.rpartition(":")
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=2)
s.sendall(encode_request({"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz", "SCRIPT_NAME": "",
                          "QUERY_STRING": "", "REQUEST_URI": "/healthz", "HTTP_HOST": "demo",
                          "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "demo",
                          "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1"}))
data = b""
while len(data) < 65536:
    more = s.recv(65536)
    if not more:
        break
    data += more
head, _, body = data.partition(b"\r\n\r\n")
if head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
    print(body.decode().strip())
EOF
}

# Prints what the gatehouse.asgi server at $1 (unix:PATH or IP:PORT) answers on /healthz,
# speaking the gatehouse ASGI protocol (adapters/asgi/PROTOCOL.md): HELLO, its ACK, then one
# HTTP_REQUEST and the HTTP_RESPONSE and DATA frames that answer it.
asgi_health() {
    PYTHONPATH="$ROOT/adapters/python" "$PYTHON" - "$1" 2>/dev/null <<'EOF'
import socket, sys
from gatehouse import asgi_protocol as P
addr = sys.argv[1]
if addr.startswith("unix:"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(addr[5:])
else:
    host, _, port = addr.rpartition(":")
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=2)
MAX_FRAME = CREDIT = 65536
dec = P.FrameDecoder(MAX_FRAME)   # the max_frame our HELLO announces


def frames():
    while True:
        yield from dec.frames()
        data = s.recv(65536)
        if not data:
            return
        dec.feed(data)


s.sendall(P.encode(P.Hello(max_frame=MAX_FRAME, max_streams=0, initial_credit=CREDIT)))
it = frames()
hello = next(it)
if not (isinstance(hello, P.Hello) and hello.flags & P.FLAG_ACK
        and hello.version == P.PROTOCOL_VERSION):
    sys.exit(1)
s.sendall(P.encode(P.HttpRequest(stream=1, flags=P.FLAG_END, method="GET", path="/healthz",
                                 raw_path=b"/healthz", server=("demo", 80),
                                 headers=[(b"host", b"demo")]), hello.max_frame))
status, body = None, b""
for f in it:
    if isinstance(f, P.Ping) and not f.flags & P.FLAG_ACK:
        s.sendall(P.encode(P.Ping(flags=P.FLAG_ACK, data=f.data)))
    elif isinstance(f, (P.Reset, P.GoAway)):
        sys.exit(1)
    elif f.stream != 1:
        continue
    elif isinstance(f, P.HttpResponse):
        status = f.status
        if f.flags & P.FLAG_END:
            break
    elif isinstance(f, P.Data):
        body += f.data
        if f.flags & P.FLAG_END:
            break
if status == 200:
    print(body.decode().strip())
EOF
}

# Waits (about 15 s at most) until $1, run as process $2, answers "ok" to `$3 $4`.
wait_ready() {
    deadline=$(($(date +%s) + 15))
    until [ "$("$3" "$4")" = ok ]; do
        if ! alive "$2"; then
            wait "$2"
            echo "demo: $1 exited (status $?); is $4 already in use?" >&2
            [ "$1" = uWSGI ] && tail -n 20 "$rundir/uwsgi.log" >&2
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "demo: $1 did not answer on $4 within 15s" >&2
            return 1
        fi
        sleep 0.1
    done
}

echo "gatehouse demo: open http://localhost:$LISTEN_PORT/"
if [ -n "$(http_health "$APP_ADDR")" ] || [ -n "$(uwsgi_health "$WSGI_ADDR")" ] ||
        [ -n "$(uwsgi_health "$LEGACY_ADDR")" ] || [ -n "$(asgi_health "$ASGI_ADDR")" ]; then
    echo "demo: something already answers on $APP_ADDR, $WSGI_ADDR, $LEGACY_ADDR or" \
        "$ASGI_ADDR; stop it first" >&2
    exit 1
fi

echo "demo: starting demo_http.py (gunicorn on $APP_ADDR)" >&2
"$PYTHON" -m gunicorn --workers 2 --worker-class gthread --threads 4 --keep-alive 75 \
    --bind "$APP_ADDR" --log-level warning --chdir tests/apps demo_http:app &
app_pid=$!

echo "demo: starting demo_wsgi.py (gatehouse.wsgi on $WSGI_ADDR)" >&2
PYTHONPATH="$ROOT/adapters/python${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m gatehouse.wsgi \
    demo_wsgi:app --bind "$WSGI_ADDR" --workers 2 --graceful-timeout 5 --chdir tests/apps &
wsgi_pid=$!

# uWSGI's --socket takes a bare path for a unix socket. Its chatty log goes to a file.
echo "demo: starting demo_wsgi.py (Debian's uWSGI on $LEGACY_ADDR; log in $rundir/uwsgi.log)" >&2
"$UWSGI" --plugin python3 --socket "${LEGACY_ADDR#unix:}" --wsgi-file tests/apps/demo_wsgi.py \
    --callable app --master --processes 2 --need-app --die-on-term --buffer-size 65535 \
    --disable-logging --vacuum >"$rundir/uwsgi.log" 2>&1 &
legacy_pid=$!

echo "demo: starting demo_asgi.py (gatehouse.asgi on $ASGI_ADDR)" >&2
PYTHONPATH="$ROOT/adapters/python${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m gatehouse.asgi \
    demo_asgi:app --bind "$ASGI_ADDR" --workers 2 --graceful-timeout 5 --chdir tests/apps &
asgi_pid=$!

wait_ready "the demo app (gunicorn)" "$app_pid" http_health "$APP_ADDR" || exit 1
wait_ready gatehouse.wsgi "$wsgi_pid" uwsgi_health "$WSGI_ADDR" || exit 1
wait_ready uWSGI "$legacy_pid" uwsgi_health "$LEGACY_ADDR" || exit 1
wait_ready gatehouse.asgi "$asgi_pid" asgi_health "$ASGI_ADDR" || exit 1

echo "demo: starting gatehouse ($BIN -c $CONFIG); Ctrl-C stops everything" >&2
"$BIN" -c "$CONFIG" &
gw_pid=$!
echo "demo: serving http://localhost:$LISTEN_PORT/ /http/ /wsgi/ /wsgi/events /wsgi/ws /legacy/" \
    "/asgi/ /asgi/events /asgi/ws" >&2

# `wait` returns early when a trapped signal arrives; the trap then stops every process.
wait "$gw_pid"
status=$?
gw_pid=""
echo "demo: gatehouse exited with status $status" >&2
exit "$status"
