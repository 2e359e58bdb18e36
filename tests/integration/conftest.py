# SPDX-License-Identifier: MIT
"""Fixtures for the integration tests: real processes on loopback.

The gateway binary is $GATEHOUSE_BIN (default build/gatehouse). Upstreams are
tests/apps/upstream.py processes. Each test gets its own temporary directory (tmp_path) holding
configuration files and the processes' captured output. Fixture teardown stops every gateway
with SIGTERM and fails the test if one did not exit 0 or reported a sanitizer error.

The helpers (Conn, make_config, ...) live in gw.py; tests import them from there."""

import pytest

import gw


@pytest.fixture
def free_port():
    """A function returning an unused loopback TCP port."""
    return gw.free_port


@pytest.fixture
def harness(tmp_path):
    """Starts upstreams (harness.upstream(name)) and gateways (harness.gateway(...)) for one
    test; stops them afterwards and fails on a bad gateway exit or a sanitizer report."""
    h = gw.Harness(tmp_path)
    yield h
    problems = h.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def upstream(harness):
    """One running upstream named "A"."""
    return harness.upstream("A")


@pytest.fixture
def gateway(harness, upstream):
    """A gateway with the default test configuration, routing everything to |upstream|."""
    return harness.gateway([upstream.addr])


@pytest.fixture(scope="module")
def module_harness(tmp_path_factory, request):
    """Like |harness| but shared by the tests of one module."""
    h = gw.Harness(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield h
    problems = h.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
