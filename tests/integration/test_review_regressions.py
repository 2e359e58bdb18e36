# SPDX-License-Identifier: MIT
"""Regressions found in review of the core: each test failed before its fix.

- a POST on a stale keep-alive connection is not sent twice;
- a client that pipelines without reading cannot make the gateway queue every response;
- an error in the request body after the response head went out cuts the response instead of
  appending a second one;
- SIGTERM does not reset accepted connections whose request has not been read yet;
- running out of file descriptors pauses accepting instead of spinning."""

import os
import resource
import signal
import socket
import subprocess
import threading
import time

from gw import (GATEHOUSE_BIN, Conn, build_request, free_port, get, make_config, to_yaml,
                upstream_conf, wait_until)

NO_HEALTH = {"fails": 1000, "cooldown": "10s"}


def test_stale_keepalive_post_is_not_replayed(harness):
    """The server read the POST and closed without answering: it may have acted on it, so the
    gateway answers 502 instead of sending it again (a replay would come back 200)."""
    a = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf([a.addr], retries=1, health=NO_HEALTH)},
                        workers=1)
    with Conn(g.port) as c:
        assert c.request("GET", "/kill-keepalive?mode=next").status == 200
        r = c.request("POST", "/echo?pay=1", body=b"pay once")
    assert r.status == 502, r
    assert a.stats()["killed"] == 1


def test_stale_keepalive_get_is_still_retried(harness):
    a = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf([a.addr], retries=1, health=NO_HEALTH)},
                        workers=1)
    with Conn(g.port) as c:
        assert c.request("GET", "/kill-keepalive?mode=next").status == 200
        assert c.request("GET", "/echo?again=1").status == 200
    assert a.stats()["killed"] == 1


def read_responses(s, n, size):
    """Reads |n| pipelined 200 responses with |size|-byte bodies from socket |s|, in order;
    returns how many arrived before the connection closed."""
    got, buf = 0, b""
    s.settimeout(30)
    while got < n:
        data = s.recv(1 << 20)
        assert data, "connection closed after %d responses" % got
        buf += data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0 or len(buf) < i + 4 + size:
                break
            assert buf.startswith(b"HTTP/1.1 200"), buf[:120]
            buf = buf[i + 4 + size:]
            got += 1
    return got


def test_pipelining_client_that_does_not_read_is_bounded(harness):
    """3,000 pipelined requests for 8 KB responses (24 MB: more than loopback socket buffers
    absorb; each response complete in one upstream read, so the upstream side never pauses)
    from a client that reads nothing: the gateway must stop taking requests once its output
    holds about 64 KiB, not serve them all into memory. Then the client reads them all."""
    a = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf([a.addr])}, workers=1)
    n, size = 3000, 8000
    before = a.stats()["requests"]
    s = socket.create_connection(("127.0.0.1", g.port))
    sender = threading.Thread(
        target=lambda: s.sendall(build_request("GET", "/bytes?n=%d" % size) * n), daemon=True)
    sender.start()
    time.sleep(4)  # long enough for the upstream to serve all 3,000 if asked to
    served = a.stats()["requests"] - before - 1
    assert served < n // 2, "%d of %d requests served to a client that reads nothing" % (
        served, n)
    # Now read: every response arrives, in order, none lost.
    assert read_responses(s, n, size) == n
    sender.join(10)
    s.close()


class EarlyAnswerUpstream:
    """A raw upstream that answers a chunked 200 as soon as it has the request head, then
    keeps reading (and ignoring) whatever follows."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        try:
            cs, _ = self.ls.accept()
        except OSError:
            return
        cs.settimeout(5)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = cs.recv(4096)
            if not d:
                return
            buf += d
        cs.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        try:
            while cs.recv(4096):
                pass
        except OSError:
            pass
        cs.close()

    def close(self):
        self.ls.close()


def test_body_error_after_response_head_cuts_the_response(harness):
    up = EarlyAnswerUpstream()
    try:
        g = harness.gateway({"web": upstream_conf(["127.0.0.1:%d" % up.port])}, workers=1)
        with Conn(g.port) as c:
            c.send(build_request("POST", "/early", [("Transfer-Encoding", "chunked")]))
            c.send(b"3\r\nabc\r\n")
            time.sleep(0.5)  # the response head and first chunk are on their way
            c.send(b"zz\r\nnot a chunk size\r\n")
            rest = c.read_until_close(timeout=5)
        assert rest.startswith(b"HTTP/1.1 200 OK"), rest
        assert b"hello" in rest
        assert rest.count(b"HTTP/1.1") == 1, "a second response was appended: %r" % rest
        assert not rest.endswith(b"0\r\n\r\n"), "the cut response must not look complete"
    finally:
        up.close()


def test_sigterm_keeps_fresh_connections_for_their_request(harness):
    """Connections accepted before SIGTERM whose request has not arrived yet get their one
    response (with Connection: close), not a reset: their request may already be in flight."""
    a = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf([a.addr])}, shutdown={"timeout": "10s"})
    conns = [Conn(g.port, timeout=10) for _ in range(3)]
    time.sleep(0.3)  # accepted, nothing sent yet
    g.signal(signal.SIGTERM)
    time.sleep(0.3)
    for i, c in enumerate(conns):
        c.send(build_request("GET", "/echo?late=%d" % i))
    for c in conns:
        r = c.read_response(timeout=10)
        assert r.status == 200, r
        assert r.header("Connection") == "close"
        c.close()
    assert g.wait_exit(10) == 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answers(port, target):
    try:
        return get(port, target, timeout=2).status == 200
    except Exception:  # refused, reset, timed out: not answering yet
        return False


def test_out_of_file_descriptors_pauses_accepting(harness, tmp_path):
    """With its open-files limit reached, the gateway stops watching its listeners for a
    while (one log line) instead of spinning on accept and flooding the log, and accepts
    again once descriptors are free."""
    a = harness.upstream("A")
    port = free_port()
    conf = tmp_path / "fds.yaml"
    conf.write_text(to_yaml(make_config(port, {"web": upstream_conf([a.addr])}, workers=1)))
    err = tmp_path / "fds.stderr"
    limit = 32  # the idle gateway needs about 15; a dozen clients exhaust the rest
    with open(err, "wb") as fe, open(tmp_path / "fds.stdout", "wb") as fo:
        proc = subprocess.Popen(
            [str(GATEHOUSE_BIN), "-c", str(conf)], stdout=fo, stderr=fe,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    try:
        wait_until(lambda: answers(port, "/echo?up=1"), timeout=10, what="gateway up")
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5)
                   for _ in range(40)]
        try:
            time.sleep(0.3)
            cpu0 = cpu_seconds(proc.pid)
            time.sleep(2)
            used = cpu_seconds(proc.pid) - cpu0
            lines = [l for l in err.read_text().splitlines() if "accept" in l]
            assert used < 0.5, "the gateway spun on accept (%.2f s of CPU in 2 s)" % used
            assert 1 <= len(lines) <= 10, "%d accept lines in 2 s" % len(lines)
        finally:
            for c in clients:
                c.close()
        wait_until(lambda: answers(port, "/echo?after=1"), timeout=5, what="accepting again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def tx_queue(local_port, remote_port):
    """Bytes the kernel holds unsent on the gateway's socket (local_port -> remote_port)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            lp = int(fields[1].split(":")[1], 16)
            rp = int(fields[2].split(":")[1], 16)
            if lp == local_port and rp == remote_port:
                return int(fields[4].split(":")[0], 16)
    return 0


def test_sigterm_does_not_drop_responses_queued_for_a_slow_reader(harness):
    """Responses finished but still queued in the gateway for a client that reads slowly are
    delivered before a drained connection closes. One request at a time (each logged before
    the next is sent), never reading, until the kernel's send queue stops growing: the last
    responses then wait in the gateway with no request pending. Then SIGTERM."""
    a = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf([a.addr])}, workers=1,
                        shutdown={"timeout": "10s"},
                        log={"access_buffer": "1k", "access_flush": "1ms"})
    size = 16000
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", g.port))
    me = s.getsockname()[1]
    sent, last, steady = 0, -1, 0
    while sent < 2000 and steady < 2:
        sent += 1
        s.sendall(build_request("GET", "/bytes?n=%d&k=%d" % (size, sent)))
        k = sent
        g.wait_access(lambda e: e.get("target", "").endswith("&k=%d" % k), timeout=5)
        q = tx_queue(g.port, me)
        steady = steady + 1 if (q == last and q > 0) else 0
        last = q
    assert steady >= 2, "the kernel send queue never filled"
    g.signal(signal.SIGTERM)
    s.settimeout(10)
    data = bytearray()
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    s.close()
    complete = data.count(b"HTTP/1.1 200 OK")
    assert complete == sent, "%d of %d responses delivered (%d bytes)" % (complete, sent,
                                                                          len(data))
    head_len = data.index(b"\r\n\r\n") + 4
    assert len(data) == sent * (head_len + size), "the last response was cut"
    assert g.wait_exit(10) == 0


def test_output_blocked_pipelining_client_is_not_timed_out_as_idle(harness):
    """A client whose pipelined requests wait because it does not read is not answered 408 by
    the idle or header clock when it pauses longer than timeouts.idle."""
    a = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf([a.addr])}, workers=1,
                        timeouts={"idle": "1s", "header": "1s"})
    n, size = 3000, 3000
    s = socket.create_connection(("127.0.0.1", g.port))
    sender = threading.Thread(
        target=lambda: s.sendall(build_request("GET", "/bytes?n=%d" % size) * n), daemon=True)
    sender.start()
    time.sleep(3)  # longer than timeouts.idle and timeouts.header
    assert read_responses(s, n, size) == n
    sender.join(10)
    s.close()
