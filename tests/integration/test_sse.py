# SPDX-License-Identifier: MIT
"""Server-Sent Events through the gateway from every kind of backend: an HTTP upstream
(tests/apps/upstream.py), a blocking pool (gatehouse.wsgi, uwsgi protocol) and an async app
(FastAPI under gatehouse.asgi). Events arrive one by one; an idle stream gets comment-line
heartbeats after `sse.heartbeat` (per route too) that never break an event.

Every process is stopped by its PID; every wait is bounded."""

import time

import pytest

import gw
from gw import Conn
from test_asgi import GhAsgi, asgi_upstream
from test_uwsgi import GhWsgi, uwsgi_upstream

KINDS = ("http", "uwsgi", "asgi")
PATHS = {"http": "/events?n=3&ms=1000", "uwsgi": "/stream?n=3&ms=1000",
         "asgi": "/events?n=3&ms=1000"}


@pytest.fixture(params=KINDS)
def backend(request, harness, tmp_path):
    """(kind, upstream config) for one backend of each kind, started for the test."""
    kind = request.param
    if kind == "http":
        yield kind, gw.upstream_conf([harness.upstream().addr])
        return
    app = GhWsgi(tmp_path, workers=2) if kind == "uwsgi" else GhAsgi(tmp_path, workers=1)
    try:
        yield kind, (uwsgi_upstream if kind == "uwsgi" else asgi_upstream)([app.server])
    finally:
        app.stop()


def sse_events(text):
    """The events of an SSE stream (data fields joined) and its comment lines, per the
    WHATWG parsing rules: a blank line dispatches, a line starting with ':' is a comment."""
    events, comments, data = [], 0, []
    for line in text.split("\n"):
        if line == "":
            if data:
                events.append("\n".join(data))
            data = []
        elif line.startswith(":"):
            comments += 1
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    return events, comments


def read_stream(port, target):
    """(arrival times of the body's pieces, the body as text)."""
    with Conn(port, timeout=15) as c:
        c.send(gw.build_request("GET", target))
        r = c.read_head()
        assert r.status == 200, r
        assert r.header("Content-Type").startswith("text/event-stream")
        pieces = []
        c.read_body(r, sink=lambda b: pieces.append((time.monotonic(), b)))
    return pieces, b"".join(b for _, b in pieces).decode()


def events_of(kind, text):
    events, comments = sse_events(text)
    if kind == "uwsgi":
        events = [e.rsplit(" at ", 1)[0] for e in events]    # wsgi_app adds a timestamp
    return events, comments


def test_events_arrive_one_by_one_with_heartbeats(harness, backend):
    kind, up = backend
    g = harness.gateway({"app": up}, sse={"heartbeat": "250ms"})
    pieces, text = read_stream(g.port, PATHS[kind])
    events, comments = events_of(kind, text)
    assert events == ["event 0", "event 1", "event 2"], text
    # Two idle seconds at 250 ms: heartbeats in both gaps, only between events.
    assert comments >= 4, text
    assert ":\n:\n" in text and "data: event 0" in text
    first = [t for t, b in pieces if b"event 0" in b][0]
    last = [t for t, b in pieces if b"event 2" in b][0]
    assert last - first > 1.5


def test_route_turns_heartbeats_off(harness, backend):
    kind, up = backend
    g = harness.gateway({"app": up}, sse={"heartbeat": "250ms"}, routes=[
        {"match": {"path": "/"}, "upstream": "app", "sse": {"heartbeat": "0s"}}])
    _, text = read_stream(g.port, PATHS[kind])
    events, comments = events_of(kind, text)
    assert events == ["event 0", "event 1", "event 2"] and comments == 0, text


def test_http_client_gone_closes_the_upstream(harness):
    u = harness.upstream()
    g = harness.gateway({"app": gw.upstream_conf([u.addr])})
    c = Conn(g.port, timeout=10)
    c.send(gw.build_request("GET", "/events?n=20&ms=200"))
    assert c.read_head().status == 200
    c.close()
    gw.wait_until(lambda: u.stats()["events_gone"] >= 1, timeout=5,
                  what="the upstream saw the client go")
