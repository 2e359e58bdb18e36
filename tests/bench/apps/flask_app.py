# SPDX-License-Identifier: MIT
"""The Flask "hello" app of bench_wsgi.py. Served as `flask_app:app` (gatehouse.wsgi) and
`--wsgi-file flask_app.py --callable app` (uWSGI).

  /big   262144 bytes (256 KiB), what the slow clients ask for
  /      "hello\\n" (GET or POST; a POST body is read and dropped)"""

from flask import Flask, Response, request

HELLO = b"hello\n"
BIG = bytes(range(256)) * 1024  # 256 KiB

app = Flask(__name__)
application = app


@app.route("/", methods=["GET", "POST"])
def hello():
    if request.method == "POST":
        request.get_data()
    return Response(HELLO, mimetype="text/plain")


@app.route("/big")
def big():
    return Response(BIG, mimetype="application/octet-stream")
