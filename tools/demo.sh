#!/bin/sh
# SPDX-License-Identifier: MIT
# The demo behind `make run`: starts the demo app (tests/apps/demo_http.py under gunicorn on
# 127.0.0.1:8001), waits until it answers, then runs the gateway in the foreground with the
# default configuration. Ctrl-C (or SIGTERM) stops both.
#
# Usage: tools/demo.sh BIN
# Environment: GATEHOUSE_CONFIG (default config/gatehouse.yaml), PYTHON (default
# /usr/bin/python3), DEMO_HTTP_UPSTREAM (where the demo app listens, default 127.0.0.1:8001;
# the default configuration reads it too), GATEHOUSE_LISTEN (the gateway's address, read by
# the default configuration; default 127.0.0.1:8080).
set -u

usage() { echo "usage: $0 path/to/gatehouse" >&2; exit 2; }
[ $# -eq 1 ] || usage
BIN=$1
case $BIN in /*) ;; *) BIN=$(pwd)/$BIN ;; esac

cd "$(dirname "$0")/.." || exit 1
CONFIG=${GATEHOUSE_CONFIG:-config/gatehouse.yaml}
PYTHON=${PYTHON:-/usr/bin/python3}
APP_ADDR=${DEMO_HTTP_UPSTREAM:-127.0.0.1:8001}
export DEMO_HTTP_UPSTREAM="$APP_ADDR"
LISTEN_PORT=8080
[ -n "${GATEHOUSE_LISTEN:-}" ] && LISTEN_PORT=${GATEHOUSE_LISTEN##*:}

[ -x "$BIN" ] || { echo "demo: $BIN is not an executable (run make first)" >&2; exit 1; }
[ -r "$CONFIG" ] || { echo "demo: no configuration at $CONFIG" >&2; exit 1; }

app_pid=""
gw_pid=""

# Sends SIGTERM to process $1, waits up to $2 seconds, then SIGKILL.
stop_pid() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt $(($2 * 10)) ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "demo: process $1 did not stop, killing it" >&2
        kill -KILL "$1" 2>/dev/null
    fi
    wait "$1" 2>/dev/null
    return 0
}

cleanup() {
    trap '' INT TERM
    stop_pid "$gw_pid" 35
    gw_pid=""
    stop_pid "$app_pid" 10
    app_pid=""
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

# Prints what $APP_ADDR answers on /healthz (nothing when nothing answers).
app_health() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 1 "http://$APP_ADDR/healthz" 2>/dev/null
    else
        "$PYTHON" -c 'import sys, urllib.request
print(urllib.request.urlopen("http://%s/healthz" % sys.argv[1], timeout=1).read().decode())' \
            "$APP_ADDR" 2>/dev/null
    fi
}

# Answers 0 once the demo app serves /healthz.
app_ready() {
    [ "$(app_health)" = "ok" ]
}

echo "gatehouse demo: open http://localhost:$LISTEN_PORT/"
if [ -n "$(app_health)" ]; then
    echo "demo: something already answers on $APP_ADDR; stop it first" >&2
    exit 1
fi
echo "demo: starting the demo app (gunicorn on $APP_ADDR)" >&2

"$PYTHON" -m gunicorn --workers 2 --worker-class gthread --threads 4 --keep-alive 75 \
    --bind "$APP_ADDR" --log-level warning --chdir tests/apps demo_http:app &
app_pid=$!

i=0
until app_ready; do
    if ! kill -0 "$app_pid" 2>/dev/null; then
        wait "$app_pid"
        echo "demo: the demo app exited (status $?); is $APP_ADDR already in use?" >&2
        app_pid=""
        exit 1
    fi
    i=$((i + 1))
    if [ "$i" -gt 150 ]; then
        echo "demo: the demo app did not answer within 15s" >&2
        exit 1
    fi
    sleep 0.1
done

echo "demo: starting gatehouse ($BIN -c $CONFIG); Ctrl-C stops everything" >&2
"$BIN" -c "$CONFIG" &
gw_pid=$!

# `wait` returns early when a trapped signal arrives; the trap then stops both processes.
wait "$gw_pid"
status=$?
gw_pid=""
echo "demo: gatehouse exited with status $status" >&2
exit "$status"
