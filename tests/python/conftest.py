# SPDX-License-Identifier: MIT
"""Fixtures for the gatehouse Python adapter tests: real `gatehouse.wsgi` (and Debian uWSGI)
processes on loopback, spoken to in uwsgi with gatehouse.protocol.encode_request.

Run from the repository root: /usr/bin/python3 -m pytest -q tests/python
Helpers (Server, request, make_vars, ...) live in ghwsgi.py."""

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "adapters", "python"))
sys.path.insert(0, HERE)

import ghwsgi  # noqa: E402


@pytest.fixture
def short_tmp():
    """A short temporary directory (unix socket paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="ghw-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def servers(short_tmp):
    """servers.start(app=..., workers=..., args=[...]) starts gatehouse.wsgi; every server
    still running at the end gets SIGTERM and must exit 0."""
    started = []

    class Factory:
        def start(self, app="wsgi_app:app", workers=2, args=(), tcp=False):
            s = ghwsgi.Server(short_tmp, app, workers, list(args), tcp=tcp, n=len(started))
            started.append(s)
            return s

    yield Factory()
    problems = []
    for s in started:
        code = s.stop()
        if code not in (0, None):
            problems.append("server %d exited %s\n%s" % (s.proc.pid, code, s.log()))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def server(servers):
    """One gatehouse.wsgi with two workers serving tests/python/apps/wsgi_app.py."""
    return servers.start()
