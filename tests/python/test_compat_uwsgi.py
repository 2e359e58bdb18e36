# SPDX-License-Identifier: MIT
"""Compatibility: the same Flask app (apps/flask_app.py) under gatehouse.wsgi and under
Debian's uWSGI (/usr/bin/uwsgi --plugin python3 --socket) gets the same uwsgi packets; what
the app reports (its environ) and the responses (status, headers, body) must be the same."""

import os
import signal
import subprocess
import tempfile
import shutil
import time

import pytest

import ghwsgi
from ghwsgi import make_vars, request

UWSGI = "/usr/bin/uwsgi"


@pytest.fixture(scope="module")
def pair():
    tmp = tempfile.mkdtemp(prefix="ghc-", dir="/tmp")
    ours = ghwsgi.Server(tmp, "flask_app:app", 2, [], tcp=True)
    port = ghwsgi.free_port()
    with open(os.path.join(tmp, "uwsgi.log"), "wb") as log:
        uw = subprocess.Popen(
            [UWSGI, "--plugin", "python3", "--socket", "127.0.0.1:%d" % port,
             "--wsgi-file", os.path.join(ghwsgi.APPS, "flask_app.py"), "--callable", "app",
             "--master", "--processes", "2", "--need-app", "--die-on-term",
             "--disable-logging"],
            cwd=ghwsgi.APPS, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            r = request(("127.0.0.1", port), make_vars(path="/status/200"), timeout=2)
            if r.status == 200:
                break
        except OSError:
            pass
        assert uw.poll() is None and time.monotonic() < deadline, open(
            os.path.join(tmp, "uwsgi.log")).read()
        time.sleep(0.1)
    yield ours.addr, ("127.0.0.1", port)
    uw.send_signal(signal.SIGTERM)
    try:
        uw.wait(15)
    except subprocess.TimeoutExpired:
        uw.kill()
        uw.wait(5)
    code = ours.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    assert code == 0, ours.log()


UPLOAD = os.urandom(300_000)
FORM = b"name=caf%C3%A9&tags=a&tags=b"

CASES = {
    "get_query": (make_vars(path="/env", query="q=blue+shoes&page=2&page=3",
                            headers=[("Host", "shop.example"), ("Accept", "*/*")]), b""),
    "script_name": (make_vars(path="/env/deep/x", script_name="/shop", query="",
                              headers=[("Host", "shop.example")]), b""),
    "https": (make_vars(path="/env", scheme="https", server=("shop.example", "443"),
                        headers=[("Host", "shop.example")]), b""),
    "utf8_path": (make_vars(path="/env/caf\xc3\xa9", uri="/env/caf%C3%A9",
                            headers=[("Host", "h")]), b""),
    "joined_headers": (make_vars(path="/env", headers=[
        ("Host", "h"), ("Accept-Language", "en, fr;q=0.5"), ("Cookie", "a=1; b=2"),
        ("X-Forwarded-For", "198.51.100.1, 10.0.0.2"), ("User-Agent", "test/1.0")]), b""),
    "upload": (make_vars(method="PUT", path="/env", body=UPLOAD,
                         content_type="application/octet-stream", headers=[("Host", "h")]),
               UPLOAD),
    "form": (make_vars(method="POST", path="/env", body=FORM,
                       content_type="application/x-www-form-urlencoded",
                       headers=[("Host", "h")]), FORM),
    "delete_empty": (make_vars(method="DELETE", path="/env", headers=[("Host", "h")]), b""),
    "status_404": (make_vars(path="/status/404"), b""),
    "status_204": (make_vars(path="/status/204"), b""),
    "not_found": (make_vars(path="/nowhere", headers=[("Host", "h")]), b""),
    "cookies": (make_vars(path="/cookies"), b""),
    "redirect": (make_vars(path="/redirect", headers=[("Host", "h")]), b""),
    "error": (make_vars(path="/error"), b""),
    "events": (make_vars(path="/events", query="n=4"), b""),
    "big": (make_vars(path="/big", query="n=2000000"), b""),
    "method_not_allowed": (make_vars(method="POST", path="/cookies", body=b"x",
                                     headers=[("Host", "h")]), b"x"),
}

IGNORED_HEADERS = {"date", "server"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_uwsgi(pair, name):
    ours_addr, theirs_addr = pair
    vars, body = CASES[name]
    ours = request(ours_addr, vars, body, timeout=20)
    theirs = request(theirs_addr, vars, body, timeout=20)
    assert theirs.status is not None, theirs.raw[:300]
    assert ours.status == theirs.status
    assert ours.status_line.split(" ", 1)[0] == theirs.status_line.split(" ", 1)[0]

    def hdrs(r):
        out = []
        for k, v in r.headers:
            k = k.lower()
            if k == "allow":  # Werkzeug builds it from a set: the order varies per process
                v = ", ".join(sorted(v.split(", ")))
            if k not in IGNORED_HEADERS:
                out.append((k, v))
        return out

    assert hdrs(ours) == hdrs(theirs)
    if ours.header("Content-Type") == "application/json":
        a, b = ours.json(), theirs.json()
        assert a == b
        if name == "upload":
            assert a["body_len"] == len(UPLOAD)
    else:
        assert ours.body == theirs.body


def test_flask_sse_arrives_event_by_event(pair):
    ours_addr, _ = pair
    with ghwsgi.connect(ours_addr, timeout=10) as s:
        s.sendall(ghwsgi.encode_request(make_vars(path="/events", query="n=3&ms=300")))
        seen = {}
        buf = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            seen.setdefault(buf.count(b"data: "), time.monotonic())
    assert buf.endswith(b"data: 2\n\n")
    gaps = [seen[i + 1] - seen[i] for i in (1, 2)]
    assert all(0.15 < g < 1.5 for g in gaps), gaps
