# SPDX-License-Identifier: MIT
"""gatehouse.wsgi's master: respawning, --timeout, --max-requests, SIGTERM drain, SIGHUP.
Worker pids come from the server's own log lines and from what the app reports."""

import os
import re
import signal
import socket
import threading
import time

import ghwsgi
from ghwsgi import get, make_vars
from gatehouse.protocol import encode_request


def _start_request(addr, path, query=""):
    s = ghwsgi.connect(addr, timeout=15)
    s.sendall(encode_request(make_vars(path=path, query=query)))
    return s


def test_worker_killed_mid_request_is_respawned(servers):
    server = servers.start(workers=1)
    s = _start_request(server.addr, "/hang", "s=20")
    first = s.recv(65536)
    pid = int(re.search(rb"pid=(\d+)", first).group(1))
    assert pid in server.booted_pids()
    os.kill(pid, signal.SIGKILL)
    rest, _ = ghwsgi.read_all(s)
    s.close()
    resp = ghwsgi.Response(first + rest)
    assert resp.header("Content-Length") == "1000" and len(resp.body) < 1000  # incomplete
    server.wait_log(r"worker %d died: killed by SIGKILL during request 1 \(GET /hang\?s=20" % pid)
    server.wait_log(r"worker booted", 2)
    r = get(server.addr, "/pid")
    assert r.status == 200 and r.json()["pid"] != pid


def test_timeout_kills_stuck_worker_with_traceback(servers):
    server = servers.start(workers=1, args=["--timeout", "1"])
    (old,) = server.booted_pids()
    t0 = time.monotonic()
    s = _start_request(server.addr, "/stuck", "s=20")
    raw, _ = ghwsgi.read_all(s)
    s.close()
    took = time.monotonic() - t0
    assert raw == b"" and 0.9 < took < 5, took
    log = server.wait_log(r"worker %d killed by SIGKILL \(--timeout\)" % old)
    assert log
    text = server.log()
    assert re.search(r"worker %d stuck for [\d.]+s in request 1 \(GET /stuck\?s=20" % old, text)
    assert re.search(r'File ".*wsgi_app\.py", line \d+ in stuck_in_app_code', text), text
    server.wait_log(r"worker booted", 2)
    assert get(server.addr, "/pid").json()["pid"] != old


def test_max_requests_recycles(servers):
    server = servers.start(workers=1, args=["--max-requests", "3"])
    pids = [get(server.addr, "/pid").json()["pid"] for _ in range(7)]
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5] != pids[0]
    assert pids[6] not in (pids[0], pids[3])
    server.wait_log(r"served 3 requests \(--max-requests\); recycling", 2)
    server.wait_log(r"after 3 requests \(recycled\)", 2)


def test_max_requests_jitter_stays_in_range(servers):
    server = servers.start(workers=1, args=["--max-requests", "2", "--max-requests-jitter", "2"])
    pids = [get(server.addr, "/pid").json()["pid"] for _ in range(9)]
    runs = []
    for p in pids:
        if runs and runs[-1][0] == p:
            runs[-1][1] += 1
        else:
            runs.append([p, 1])
    assert len(runs) >= 3
    assert all(2 <= n <= 4 for _, n in runs[:-1]), runs


def test_sigterm_drains_in_flight_request_then_exits_0(servers):
    server = servers.start(workers=2, args=["--graceful-timeout", "10"])
    s = _start_request(server.addr, "/sleep", "s=1.0")
    time.sleep(0.3)  # the worker is inside the app now
    server.signal(signal.SIGTERM)
    server.wait_log(r"SIGTERM: no new requests")
    # no new requests: the unix socket is gone
    deadline = time.monotonic() + 5
    while os.path.exists(server.addr) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(server.addr)
    raw, reset = ghwsgi.read_all(s)
    s.close()
    r = ghwsgi.Response(raw)
    assert r.status == 200 and r.json()["slept"] == 1.0 and not reset
    assert server.proc.wait(10) == 0
    assert "stopped" in server.log()


def test_sigterm_graceful_timeout_kills_laggards(servers):
    server = servers.start(workers=1, args=["--graceful-timeout", "0.5"])
    s = _start_request(server.addr, "/sleep", "s=20")
    time.sleep(0.3)
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5
    raw, _ = ghwsgi.read_all(s)
    s.close()
    assert raw == b""
    assert "did not stop within --graceful-timeout" in server.log()


def test_sighup_replaces_workers(servers):
    server = servers.start(workers=2)
    old = set(server.booted_pids())
    assert len(old) == 2
    # one request in flight on an old worker survives the reload
    s = _start_request(server.addr, "/sleep", "s=0.8")
    time.sleep(0.2)
    server.signal(signal.SIGHUP)
    server.wait_log(r"worker booted", 4)
    new = set(server.booted_pids()) - old
    assert len(new) == 2
    raw, _ = ghwsgi.read_all(s)
    s.close()
    assert ghwsgi.Response(raw).json()["pid"] in old
    for pid in old:
        server.wait_log(r"worker %d exited with status 0" % pid)
    seen = {get(server.addr, "/pid").json()["pid"] for _ in range(10)}
    assert seen <= new
    assert server.proc.poll() is None


def test_concurrent_requests_use_all_workers(servers):
    server = servers.start(workers=3)
    results = []

    def one():
        results.append(get(server.addr, "/sleep", "s=0.5").json()["pid"])

    threads = [threading.Thread(target=one) for _ in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(results)) == 3
    assert time.monotonic() - t0 < 1.4  # in parallel, not one after the other


def test_unloadable_app_exits_1(short_tmp):
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, "-m", "gatehouse.wsgi", "no_such_module:app", "--bind",
         "unix:" + os.path.join(short_tmp, "x.sock"), "--workers", "1"],
        cwd=ghwsgi.APPS, env=dict(os.environ, PYTHONPATH=ghwsgi.ADAPTERS),
        capture_output=True, timeout=15)
    assert proc.returncode == 1
    assert b"No module named 'no_such_module'" in proc.stderr
    assert not os.path.exists(os.path.join(short_tmp, "x.sock"))


def test_stale_unix_socket_is_replaced(servers, short_tmp):
    path = os.path.join(short_tmp, "s0.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on
    server = servers.start(workers=1)
    assert server.addr == path and get(server.addr, "/pid").status == 200
