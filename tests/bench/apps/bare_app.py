# SPDX-License-Identifier: MIT
"""The bare WSGI callable of bench_wsgi.py: no framework, so the gateway and the WSGI server
are most of the cost. Served as `bare_app:app` (gatehouse.wsgi) and `--wsgi-file bare_app.py
--callable app` (uWSGI).

  /big   262144 bytes (256 KiB), what the slow clients ask for
  else   "hello\\n" (the body bench_http.py's client checks)

A request body is read whole and dropped, so a POST completes like a GET."""

HELLO = b"hello\n"
BIG = bytes(range(256)) * 1024  # 256 KiB
_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
_BIG_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))]


def app(environ, start_response):
    n = environ.get("CONTENT_LENGTH")
    if n and n.isdigit() and int(n) > 0:
        left = int(n)
        inp = environ["wsgi.input"]
        while left > 0:
            chunk = inp.read(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)
    if environ.get("PATH_INFO") == "/big":
        start_response("200 OK", list(_BIG_HEADERS))
        return [BIG]
    start_response("200 OK", list(_HELLO_HEADERS))
    return [HELLO]


application = app
