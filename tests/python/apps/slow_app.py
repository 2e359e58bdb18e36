# SPDX-License-Identifier: MIT
"""A WSGI app that reports what a worker observes, for the slow-client test
(tests/integration/test_uwsgi_slow_clients.py).

Every request appends one JSON line to $SLOW_APP_STATS/<pid>.jsonl once the worker lets go of
it (in the response iterable's close(), which gatehouse.wsgi calls after the last body byte
was handed to the gateway):

    {"path", "id", "pid", "call": wall time the app was called, "close": wall time of close(),
     "hold": seconds from the call to close() (the worker is busy all that time),
     "read": seconds the wsgi.input.read() took (uploads), "len": body bytes read}

Endpoints:
    POST /upload?id=N     reads the whole body at once, answers {"len", "sha256", "id"}
    GET  /big?id=N&n=B    B bytes (default 1 MiB) of the pattern byte i = i % 256, written in
                          64 KiB pieces; &stream=1 adds X-Accel-Buffering: no (the gateway
                          then streams instead of buffering: the negative control)
    GET  /fast            a few bytes
"""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

PATTERN = bytes(range(256)) * 256  # 64 KiB
STATS = os.environ.get("SLOW_APP_STATS")


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _record(rec):
    if not STATS:
        return
    line = (json.dumps(rec, sort_keys=True) + "\n").encode()
    fd = os.open(os.path.join(STATS, "%d.jsonl" % os.getpid()),
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class _Measured:
    """The response iterable: yields |chunks|, and in close() records how long the worker
    was held by this request."""

    def __init__(self, chunks, rec, t0):
        self._chunks = chunks
        self._rec = rec
        self._t0 = t0

    def __iter__(self):
        return iter(self._chunks)

    def close(self):
        self._rec["hold"] = time.monotonic() - self._t0
        self._rec["close"] = time.time()
        _record(self._rec)


def _big_chunks(n):
    while n > 0:
        k = min(n, len(PATTERN))
        yield PATTERN[:k]
        n -= k


def app(environ, start_response):
    t0 = time.monotonic()
    q = _q(environ)
    path = environ.get("PATH_INFO", "")
    rec = {"path": path, "id": q.get("id"), "pid": os.getpid(), "call": time.time(),
           "read": None, "len": None}
    if path == "/upload":
        r0 = time.monotonic()
        data = environ["wsgi.input"].read()
        rec["read"] = time.monotonic() - r0
        rec["len"] = len(data)
        body = json.dumps({"len": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                           "id": q.get("id")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return _Measured([body], rec, t0)
    if path == "/big":
        n = int(q.get("n", str(1 << 20)))
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))]
        if q.get("stream") == "1":
            headers.append(("X-Accel-Buffering", "no"))
        start_response("200 OK", headers)
        return _Measured(_big_chunks(n), rec, t0)
    if path == "/fast":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return _Measured([b"ok\n"], rec, t0)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return _Measured([b"not found\n"], rec, t0)
