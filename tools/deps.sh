#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian packages a make target needs, only those missing (idempotent).
# Usage: tools/deps.sh build|test|run|bench
set -eu

build="gcc make pkg-config libevent-dev libnghttp2-dev libssl-dev libyaml-dev zlib1g-dev"
testpk="libcriterion-dev clang libclang-rt-14-dev curl openssl python3-pytest python3-flask gunicorn python3-httpx
        uwsgi uwsgi-plugin-python3 python3-fastapi python3-uvicorn python3-uvloop python3-httptools
        python3-websockets"
run="gunicorn python3-flask curl uwsgi uwsgi-plugin-python3 python3-fastapi"
bench="nginx wrk valgrind strace nghttp2-client openssl python3-uvicorn python3-uvloop python3-httptools
       python3-websockets"

case "${1:-build}" in
build) want="$build" ;;
test) want="$build $testpk" ;;
run) want="$build $run" ;;
bench) want="$build $run $bench" ;;
*) echo "usage: $0 build|test|run|bench" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# An old or empty package list finds nothing; refresh it once per call that installs.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
