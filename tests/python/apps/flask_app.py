# SPDX-License-Identifier: MIT
"""The Flask app served both by gatehouse.wsgi and by Debian's uWSGI in the compatibility
tests: whatever it reports must be the same under both."""

import hashlib
import time

from flask import Flask, Response, jsonify, redirect, request

app = Flask(__name__)
application = app


@app.route("/env", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@app.route("/env/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def env(rest=None):
    e = request.environ
    data = request.get_data()
    return jsonify(
        method=e["REQUEST_METHOD"],
        script_name=e.get("SCRIPT_NAME", ""),
        path_info=e.get("PATH_INFO", ""),
        query_string=e.get("QUERY_STRING", ""),
        request_uri=e.get("REQUEST_URI"),
        server_protocol=e.get("SERVER_PROTOCOL"),
        server_name=e.get("SERVER_NAME"),
        server_port=e.get("SERVER_PORT"),
        remote_addr=e.get("REMOTE_ADDR"),
        remote_port=e.get("REMOTE_PORT"),
        content_type=e.get("CONTENT_TYPE"),
        content_length=e.get("CONTENT_LENGTH"),
        http={k: v for k, v in e.items() if k.startswith("HTTP_")},
        url_scheme=e["wsgi.url_scheme"],
        wsgi_version=list(e["wsgi.version"]),
        multithread=e["wsgi.multithread"],
        multiprocess=e["wsgi.multiprocess"],
        run_once=e["wsgi.run_once"],
        body_len=len(data),
        body_sha256=hashlib.sha256(data).hexdigest(),
        args={k: request.args.getlist(k) for k in request.args},
        form={k: request.form.getlist(k) for k in request.form},
        url=request.url,
        rule=str(request.url_rule),
        rest=rest,
    )


@app.route("/status/<int:code>")
def status(code):
    return Response("status %d\n" % code, status=code, mimetype="text/plain")


@app.route("/cookies")
def cookies():
    r = Response("two cookies\n", mimetype="text/plain")
    r.set_cookie("a", "1")
    r.set_cookie("b", "2", httponly=True)
    r.headers["X-Custom"] = "yes"
    return r


@app.route("/redirect")
def redir():
    return redirect("/env?from=redirect")


@app.route("/error")
def error():
    raise RuntimeError("deliberate")


@app.route("/events")
def events():
    n = int(request.args.get("n", "3"))  # the generator runs outside the request context
    pause = int(request.args.get("ms", "50")) / 1000

    def gen():
        for i in range(n):
            yield "data: %d\n\n" % i
            time.sleep(pause)

    return Response(gen(), mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"})


@app.route("/big")
def big():
    n = int(request.args.get("n", "1000000"))
    return Response(b"a" * n, mimetype="application/octet-stream")
