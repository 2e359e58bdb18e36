# SPDX-License-Identifier: MIT
"""Upstream servers given by host name: resolved through /etc/hosts and through a name server
(resolver.nameservers), and re-resolved every `resolve` interval, as containers need when a
service comes back on a new address. The name server is a small DNS responder on loopback
whose answer the test changes."""

import socket
import struct
import threading
import time

import pytest

from gw import Conn, build_request, free_port, get, upstream_conf, wait_until


class FakeDNS:
    """Answers A queries for one name with |self.address| (TTL 1 s); AAAA with no records;
    other names with NXDOMAIN. Counts the A queries it answered."""

    def __init__(self, name, address):
        self.name = name.lower().rstrip(".")
        self.address = address
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                q, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(q)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def _answer(self, q):
        if len(q) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        labels, i = [], 12
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        i += 1
        if qd != 1 or i + 4 > len(q):
            return None
        qtype, _qclass = struct.unpack("!HH", q[i:i + 4])
        question = q[12:i + 4]
        name = ".".join(labels).lower()
        rd = flags & 0x0100
        if name != self.name:
            return struct.pack("!HHHHHH", qid, 0x8183 | rd, 1, 0, 0, 0) + question
        if qtype != 1:  # AAAA and the rest: the name exists, no records of that type
            return struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 0, 0, 0) + question
        self.queries += 1
        answer = (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4)
                  + socket.inet_aton(self.address))
        return struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 1, 0, 0) + question + answer

    def close(self):
        self.running = False
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def dns():
    d = FakeDNS("app.test", "127.0.0.1")
    yield d
    d.close()


def test_host_name_from_etc_hosts(harness):
    up = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf(["localhost:%d" % up.port])})
    r = get(g.port, "/name")
    assert r.status == 200, r
    assert r.header("X-Upstream-Name") == "A"


def test_host_name_from_configured_nameserver(harness, dns):
    up = harness.upstream("A")
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % up.port])},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    r = wait_until(lambda: get(g.port, "/name"), timeout=5, what="first answer")
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
                   timeout=5, what="a 200 through the resolved name")
    assert r.header("X-Upstream-Name") == "A"
    assert dns.queries >= 1


def test_unresolvable_name_is_503_then_served_when_it_resolves(harness, dns):
    up = harness.upstream("A")
    dns.name = "not-yet.test"  # app.test is NXDOMAIN for now
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % up.port], resolve="1s")},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    r = get(g.port, "/name")
    assert r.status in (502, 503), r
    dns.name = "app.test"
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
                   timeout=8, what="served once the name resolves")
    assert r.header("X-Upstream-Name") == "A"


def test_name_is_re_resolved_periodically(harness, dns):
    """The service moves from 127.0.0.1 to 127.0.0.2 (same port): within a few resolve
    intervals every request goes to the new address, idle keep-alive connections included."""
    port = free_port()
    a = harness.upstream("A", port=port, host="127.0.0.1")
    b = harness.upstream("B", port=port, host="127.0.0.2")
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % port], resolve="1s")},
                        resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
                   timeout=5, what="first 200")
    assert r.header("X-Upstream-Name") == "A"
    dns.address = "127.0.0.2"

    def moved():
        names = {get(g.port, "/name").header("X-Upstream-Name") for _ in range(4)}
        return names == {"B"}

    wait_until(moved, timeout=10, interval=0.3, what="requests to follow the new address")
    assert a.proc.poll() is None and b.proc.poll() is None


def test_connection_busy_while_the_name_moved_is_not_reused(harness, dns):
    """A connection in use when the answer changes finishes its request, then is retired:
    the next request goes to the new address, not to the old one over that connection."""
    port = free_port()
    harness.upstream("A", port=port, host="127.0.0.1")
    harness.upstream("B", port=port, host="127.0.0.2")
    g = harness.gateway({"web": upstream_conf(["app.test:%d" % port], resolve="1s")},
                        workers=1, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})
    wait_until(lambda: (lambda x: x if x.status == 200 else None)(get(g.port, "/name")),
               timeout=5, what="first 200")
    with Conn(g.port) as c:
        c.send(build_request("GET", "/slow?ms=2500"))
        time.sleep(0.3)
        dns.address = "127.0.0.2"
        r = c.read_response(timeout=10)
        assert r.status == 200 and r.header("X-Upstream-Name") == "A"
        assert c.request("GET", "/name").header("X-Upstream-Name") == "B"
