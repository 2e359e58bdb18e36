# SPDX-License-Identifier: MIT
"""Routing: exact and wildcard hosts, path prefixes on segment boundaries, the longest prefix,
strip_prefix, 404 without a route, 400 for dot segments."""

import pytest

from gw import Conn, free_port, make_config, upstream_conf

ROUTES = [
    {"match": {"host": "api.example.com", "path": "/api/"}, "upstream": "a",
     "strip_prefix": True},
    {"match": {"host": "*.example.com", "path": "/"}, "upstream": "b"},
    {"match": {"path": "/static/"}, "upstream": "c"},
    {"match": {"path": "/static/deep/"}, "upstream": "d"},
    {"match": {"host": "exact.test", "path": "/"}, "upstream": "d"},
    {"match": {"path": "/strip/"}, "upstream": "c", "strip_prefix": True},
]


@pytest.fixture(scope="module")
def routed(module_harness):
    ups = {n: module_harness.upstream(n.upper()) for n in "abcd"}
    port = free_port()
    cfg = make_config(port, {n: upstream_conf([u.addr]) for n, u in ups.items()}, ROUTES)
    return module_harness.gateway(config=cfg, port=port)


def fetch(g, host, target):
    with Conn(g.port, timeout=5) as c:
        r = c.request("GET", target, host=host)
        if r.status == 200:
            return r.header("X-Upstream-Name"), r.json()["path"], r
        return None, None, r


ROUTED = [
    # host, target, upstream name, path the upstream sees
    ("api.example.com", "/api/users?q=1", "A", "/users?q=1"),
    ("API.Example.COM", "/api/x", "A", "/x"),
    ("api.example.com:8080", "/api/x", "A", "/x"),
    ("api.example.com", "/api", "A", "/"),
    ("api.example.com", "/api?q=1", "A", "/?q=1"),
    ("api.example.com", "/api/", "A", "/"),
    ("api.example.com", "/apix", "B", "/apix"),
    ("api.example.com", "/other", "B", "/other"),
    ("www.example.com", "/x", "B", "/x"),
    ("a.b.example.com", "/", "B", "/"),
    ("www.example.com:80", "/x/y", "B", "/x/y"),
    ("other.test", "/static/x", "C", "/static/x"),
    ("other.test", "/static", "C", "/static"),
    ("other.test", "/static?v=1", "C", "/static?v=1"),
    ("other.test", "/static/deep/y", "D", "/static/deep/y"),
    ("other.test", "/static/deep", "D", "/static/deep"),
    ("other.test", "/static/deeper", "C", "/static/deeper"),
    ("exact.test", "/anything", "D", "/anything"),
    ("EXACT.test:1234", "/anything", "D", "/anything"),
    ("other.test", "/strip/a/b?c=1", "C", "/a/b?c=1"),
    ("other.test", "/strip", "C", "/"),
    # Dots that are not dot segments are fine.
    ("other.test", "/static/a..b/x", "C", "/static/a..b/x"),
    ("other.test", "/static/.well-known/x", "C", "/static/.well-known/x"),
    ("other.test", "/static/.../x", "C", "/static/.../x"),
    ("other.test", "/static/x?p=../y", "C", "/static/x?p=../y"),
]


@pytest.mark.parametrize("host,target,name,path", ROUTED)
def test_route(routed, host, target, name, path):
    got_name, got_path, r = fetch(routed, host, target)
    assert r.status == 200, r
    assert (got_name, got_path) == (name, path)


NOT_ROUTED = [
    ("example.com", "/x"),          # "*.example.com" does not match the bare domain
    ("notexample.com", "/x"),       # nor a name that merely ends with it
    ("sub.exact.test", "/x"),       # an exact host is exact
    ("other.test", "/staticx"),     # prefixes match whole segments
    ("other.test", "/"),
    ("other.test", "/stripped"),
    ("other.test", "/api/x"),       # /api/ is only for api.example.com
]


@pytest.mark.parametrize("host,target", NOT_ROUTED)
def test_no_route_is_404(routed, host, target):
    with Conn(routed.port, timeout=5) as c:
        r = c.request("GET", target, host=host)
        assert r.status == 404, r
        assert r.header("X-Upstream-Name") is None, "the 404 must be the gateway's own"
        assert r.conn_close
        assert len(r.body) < 1024
        c.wait_closed(3)
    # and the gateway goes on serving
    assert fetch(routed, "other.test", "/static/ok")[0] == "C"


# Each of these paths matches a route as written, so only the dot segment can refuse it.
DOT_SEGMENTS = [
    ("other.test", "/static/../secret"),
    ("other.test", "/static/./x"),
    ("other.test", "/static/.."),
    ("other.test", "/static/x/.."),
    ("other.test", "/static/x/."),
    ("www.example.com", "/.."),
    ("www.example.com", "/./x"),
    ("other.test", "/static/%2e%2e/x"),
    ("other.test", "/static/%2E%2e/x"),
    ("other.test", "/static/%2e/x"),
    ("other.test", "/static/.%2e/x"),
    ("other.test", "/static/%2e./x"),
    ("other.test", "/static/x/%2E%2E?q=1"),
    ("api.example.com", "/api/../static/x"),
    ("other.test", "/strip/../x"),
]


@pytest.mark.parametrize("host,target", DOT_SEGMENTS)
def test_dot_segments_are_400(routed, host, target):
    with Conn(routed.port, timeout=5) as c:
        r = c.request("GET", target, host=host)
        assert r.status == 400, r
        assert r.conn_close
        c.wait_closed(3)
    assert fetch(routed, "other.test", "/static/ok")[0] == "C"


def test_dot_segment_with_matching_host_route(routed):
    with Conn(routed.port, timeout=5) as c:
        r = c.request("GET", "/api/../../etc/passwd", host="api.example.com")
        assert r.status == 400


def test_absolute_form_authority_routes(routed):
    with Conn(routed.port, timeout=5) as c:
        c.send(b"GET http://api.example.com/api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("X-Upstream-Name") == "A"
        assert r.json()["path"] == "/x"


def test_absolute_form_authority_wins_over_host(routed):
    # RFC 9112 §3.2.2: with an absolute-form target the Host field is ignored.
    with Conn(routed.port, timeout=5) as c:
        c.send(b"GET http://api.example.com/api/x HTTP/1.1\r\nHost: other.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("X-Upstream-Name") == "A"


def test_request_without_host_uses_host_less_routes(routed):
    with Conn(routed.port, timeout=5) as c:
        c.send(b"GET /static/x HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("X-Upstream-Name") == "C"
    with Conn(routed.port, timeout=5) as c:
        c.send(b"GET /x HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 404


def test_routes_per_request_on_one_connection(routed):
    """Each request on a keep-alive connection is routed on its own."""
    with Conn(routed.port, timeout=5) as c:
        seen = []
        for host, target in [("api.example.com", "/api/1"), ("www.example.com", "/2"),
                             ("other.test", "/static/3"), ("exact.test", "/4")]:
            r = c.request("GET", target, host=host)
            assert r.status == 200
            seen.append(r.header("X-Upstream-Name"))
        assert seen == ["A", "B", "C", "D"]


def test_404_in_access_log(routed):
    with Conn(routed.port, timeout=5) as c:
        r = c.request("GET", "/no-route-here", host="other.test")
        assert r.status == 404
    e = routed.access_for("/no-route-here")[0]
    assert e["status"] == 404
    assert not e["upstream"]
    assert not e["server"]
