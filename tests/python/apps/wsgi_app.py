# SPDX-License-Identifier: MIT
"""A bare WSGI app for the gatehouse.wsgi tests: one endpoint per PEP 3333 behaviour.

Query parameters steer it; `path=` names a file under the test's temporary directory
where an endpoint leaves a note for the test when the client cannot be told."""

import hashlib
import io
import json
import os
import sys
import time
from urllib.parse import parse_qs


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def env(environ, start_response, q):
    out = {}
    for k, v in environ.items():
        if isinstance(v, str):
            out[k] = v
        elif k in ("wsgi.version",):
            out[k] = list(v)
        elif isinstance(v, bool):
            out[k] = v
    out["wsgi.errors.is_stderr"] = environ["wsgi.errors"] is sys.stderr
    out["wsgi.input.has_read"] = hasattr(environ["wsgi.input"], "read")
    out["gatehouse.disconnected"] = environ["gatehouse.disconnected"]()
    return _json(start_response, out)


def body(environ, start_response, q):
    """Reads the body the way mode= says and reports its length, digest and the pieces."""
    inp = environ["wsgi.input"]
    mode = q.get("mode", "read")
    pieces = []
    if mode == "read":
        data = inp.read()
    elif mode == "readn":
        n = int(q.get("n", "1000"))
        while True:
            piece = inp.read(n)
            if not piece:
                break
            pieces.append(len(piece))
        data = None
    elif mode == "readline":
        data = b""
        while True:
            line = inp.readline()
            if not line:
                break
            pieces.append(len(line))
            data += line
    elif mode == "readline_size":
        data = b""
        while True:
            line = inp.readline(int(q.get("n", "4")))
            if not line:
                break
            pieces.append(len(line))
            data += line
    elif mode == "readlines":
        lines = inp.readlines()
        pieces = [len(x) for x in lines]
        data = b"".join(lines)
    elif mode == "iter":
        lines = list(inp)
        pieces = [len(x) for x in lines]
        data = b"".join(lines)
    elif mode == "none":
        data = b""
    else:
        raise ValueError(mode)
    if data is None:
        length, digest = sum(pieces), None
    else:
        length, digest = len(data), hashlib.sha256(data).hexdigest()
    after = inp.read()  # at the end: must be b"" at once, never a wait
    return _json(start_response, {"len": length, "sha256": digest, "pieces": pieces,
                                  "after": len(after)})


def write(environ, start_response, q):
    w = start_response("200 OK", [("Content-Type", "text/plain")])
    w(b"written-1;")
    w(b"written-2;")
    return [b"returned-1;", b"", b"returned-2"]


def excinfo_before(environ, start_response, q):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        start_response("503 Service Unavailable", [("X-Replaced", "yes")], sys.exc_info())
    return [b"replaced"]


def excinfo_after(environ, start_response, q):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part;"
    try:
        raise RuntimeError("late boom")
    except RuntimeError:
        start_response("500 Internal Server Error", [], sys.exc_info())
    yield b"never"


def twice(environ, start_response, q):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"no"]


class _Closing:
    def __init__(self, path, fail=False):
        self.path = path
        self.fail = fail

    def __iter__(self):
        yield b"chunk;"
        if self.fail:
            raise RuntimeError("fails mid-iteration")
        yield b"chunk"

    def close(self):
        with open(self.path, "a") as f:
            f.write("closed\n")


def closing(environ, start_response, q):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Closing(q["path"], q.get("fail") == "1")


def file(environ, start_response, q):
    if q.get("kind") == "bytesio":
        f = io.BytesIO(open(q["path"], "rb").read())
    else:
        f = open(q["path"], "rb")
        if "skip" in q:
            f.seek(int(q["skip"]))
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in q:
        headers.append(("Content-Length", q["length"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 65536)


def error(environ, start_response, q):
    raise KeyError("deliberate failure before the response")


def error_after(environ, start_response, q):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial;"
    raise KeyError("deliberate failure after the response started")


def bad_header(environ, start_response, q):
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: injected=1")])
    return [b"no"]


def bad_status(environ, start_response, q):
    start_response("OK", [])
    return [b"no"]


def stream(environ, start_response, q):
    n = int(q.get("n", "5"))
    ms = int(q.get("ms", "200"))
    start_response("200 OK", [("Content-Type", "text/event-stream"),
                              ("Cache-Control", "no-cache")])
    for i in range(n):
        yield b"data: event %d at %f\n\n" % (i, time.time())
        if i + 1 < n:
            time.sleep(ms / 1000)


def pid(environ, start_response, q):
    return _json(start_response, {"pid": os.getpid()})


def sleep(environ, start_response, q):
    time.sleep(float(q.get("s", "1")))
    return _json(start_response, {"pid": os.getpid(), "slept": float(q.get("s", "1"))})


def hang(environ, start_response, q):
    """Starts a response it does not finish: the pid line, then a bounded sleep."""
    w = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1000")])
    w(b"pid=%d\n" % os.getpid())
    time.sleep(float(q.get("s", "20")))
    return [b"x" * (1000 - len(b"pid=%d\n" % os.getpid()))]


def stuck_in_app_code(environ, start_response, q):
    time.sleep(float(q.get("s", "20")))
    return [b"too late"]


def disconnected(environ, start_response, q):
    """Records gatehouse.disconnected() before and after the client leaves (bounded)."""
    probe = environ["gatehouse.disconnected"]
    before = probe()
    deadline = time.monotonic() + float(q.get("s", "5"))
    after = False
    while time.monotonic() < deadline:
        if probe():
            after = True
            break
        time.sleep(0.02)
    with open(q["path"], "w") as f:
        json.dump({"before": before, "after": after}, f)
    return _json(start_response, {"before": before, "after": after})


ROUTES = {
    "/env": env, "/body": body, "/write": write, "/excinfo_before": excinfo_before,
    "/excinfo_after": excinfo_after, "/twice": twice, "/closing": closing, "/file": file,
    "/error": error, "/error_after": error_after, "/bad_header": bad_header,
    "/bad_status": bad_status, "/stream": stream, "/pid": pid, "/sleep": sleep,
    "/hang": hang, "/stuck": stuck_in_app_code, "/disconnected": disconnected,
}


def app(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    return handler(environ, start_response, _q(environ))


application = app
