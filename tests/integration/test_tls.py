# SPDX-License-Identifier: MIT
"""TLS termination: certificates by SNI, ALPN, protocol versions, session resumption (also
across a reload), client certificates (mTLS) and what each upstream kind learns of them,
certificate reloads, bad certificates, and clients that do not speak TLS or stall.

Certificates are made with the openssl CLI in a session-scoped directory. Every process is
stopped by its PID; every wait is bounded."""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse

import httpx
import pytest

import gw
from gw import Conn, free_port, make_config, wait_until

REPO = gw.REPO
APPS = REPO / "tests" / "apps"
PYAPPS = REPO / "tests" / "python" / "apps"
ADAPTERS = REPO / "adapters" / "python"


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def _leaf(d, name, ca, subj, san=None, days=30):
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
             name + ".csr", "-subj", subj, cwd=d)
    ext = d / (name + ".ext")
    ext.write_text(("subjectAltName=" + san + "\n") if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-CAcreateserial", "-out", name + ".pem", "-days", str(days), "-extfile",
             name + ".ext", cwd=d)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (tools/deps.sh test)")
    d = tmp_path_factory.mktemp("certs")
    for ca, cn in (("ca", "Test Server CA"), ("cca", "Test Client CA"), ("rogue", "Rogue CA")):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key",
                 "-out", ca + ".pem", "-days", "30", "-subj", "/CN=" + cn, cwd=d)
    _leaf(d, "a", "ca", "/CN=a.test", "DNS:a.test,DNS:*.a.test,IP:127.0.0.1")
    _leaf(d, "b", "ca", "/CN=b.test", "DNS:b.test")
    _leaf(d, "alice", "cca", "/CN=alice/O=Example")
    _leaf(d, "mallory", "rogue", "/CN=mallory")
    return d


def tls_conf(certs, names=("a", "b"), **over):
    t = {"certificates": [{"cert": str(certs / (n + ".pem")), "key": str(certs / (n + ".key"))}
                          for n in names]}
    t.update(over)
    return t


def tls_gateway(harness, upstreams, tls, http2=None, routes=None, **over):
    port = free_port()
    cfg = make_config(port, upstreams, routes, **over)
    listener = {"address": "127.0.0.1:%d" % port, "tls": tls}
    if http2 is not None:
        listener["http2"] = http2
    cfg["listen"] = [listener]
    return harness.gateway(config=cfg, port=port)


def client_ctx(certs, alpn=None, version=None, cert=None, verify=True):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.check_hostname = False
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(str(certs / (cert + ".pem")), str(certs / (cert + ".key")))
    return ctx


def tls_sock(port, ctx, name="a.test", session=None, timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=name, session=session)
    except Exception:
        raw.close()
        raise


def https_get(port, ctx, target="/echo", name="a.test", headers=None):
    with Conn(sock=tls_sock(port, ctx, name)) as c:
        return c.request("GET", target, headers=headers, host=name)


def peer_cn(port, ctx, name):
    with tls_sock(port, ctx, name) as s:
        subject = dict(x[0] for x in s.getpeercert()["subject"])
        return subject["commonName"]


def echo_headers(resp):
    return {k.lower(): v for k, v in resp.json()["headers"]}


# ---- HTTP/1.1 over TLS ----------------------------------------------------------------------

def test_http11_with_curl_and_httpx(harness, upstream, certs):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs))
    out = subprocess.run(
        ["curl", "-sS", "--http1.1", "--max-time", "10", "--cacert", str(certs / "ca.pem"),
         "--resolve", "a.test:%d:127.0.0.1" % g.port, "https://a.test:%d/echo?x=1" % g.port],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["path"] == "/echo?x=1"
    h = {k.lower(): v for k, v in body["headers"]}
    assert h["x-forwarded-proto"] == "https"
    assert "proto=https" in h["forwarded"]
    with httpx.Client(verify=str(certs / "ca.pem"), timeout=10) as cl:
        r = cl.post("https://127.0.0.1:%d/echo" % g.port, content=b"x" * 100000)
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        assert r.json()["body_len"] == 100000
        r = cl.get("https://127.0.0.1:%d/bytes?n=3000000" % g.port)
        assert r.status_code == 200 and r.content == gw.pattern_bytes(3000000)


# ---- SNI ------------------------------------------------------------------------------------

def test_sni_picks_the_certificate(harness, upstream, certs):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs))
    ctx = client_ctx(certs)
    assert peer_cn(g.port, ctx, "a.test") == "a.test"
    assert peer_cn(g.port, ctx, "B.TEST") == "b.test"
    assert peer_cn(g.port, ctx, "www.a.test") == "a.test"    # *.a.test
    assert peer_cn(g.port, ctx, "unknown.test") == "a.test"  # the first is the default
    g2 = tls_gateway(harness, [upstream.addr], tls_conf(certs, names=("b", "a")))
    assert peer_cn(g2.port, ctx, "unknown.test") == "b.test"
    assert peer_cn(g2.port, ctx, "a.test") == "a.test"
    # strict verification of the name the client asked for
    strict = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with tls_sock(g.port, strict, "b.test") as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3")


# ---- ALPN -----------------------------------------------------------------------------------

def test_alpn_selection(harness, upstream, certs):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs))
    with tls_sock(g.port, client_ctx(certs, alpn=["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "h2"
    with tls_sock(g.port, client_ctx(certs, alpn=["http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    # neither offered: no ALPN, HTTP/1.1 (as nginx)
    with Conn(sock=tls_sock(g.port, client_ctx(certs, alpn=["spdy/3"]))) as c:
        assert c.sock.selected_alpn_protocol() is None
        assert c.request("GET", "/echo").status == 200
    off = tls_gateway(harness, [upstream.addr], tls_conf(certs), http2="off")
    with Conn(sock=tls_sock(off.port, client_ctx(certs, alpn=["h2", "http/1.1"]))) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert c.request("GET", "/echo").status == 200
    on = tls_gateway(harness, [upstream.addr], tls_conf(certs), http2="on")
    with tls_sock(on.port, client_ctx(certs, alpn=["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "h2"


# ---- versions -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_refused(harness, upstream, certs, version):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs))
    ctx = client_ctx(certs, version=version, verify=False)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")   # let this client offer it: the server refuses
    pos = g.stderr_size()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_sock(g.port, ctx).close()
    g.wait_stderr(r"TLS handshake failed: unsupported protocol", since=pos)
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert https_get(g.port, client_ctx(certs, version=v)).status == 200


@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-SHA256", "ECDHE-RSA-AES128-SHA"])
def test_weak_tls12_ciphers_refused(harness, upstream, certs, cipher):
    """TLS 1.2 with only a legacy suite on offer (no forward secrecy, or CBC with SHA-1):
    the handshake fails and is logged; modern suites still work."""
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs))
    ctx = client_ctx(certs, version=ssl.TLSVersion.TLSv1_2, verify=False)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher + ":@SECLEVEL=0")
    pos = g.stderr_size()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_sock(g.port, ctx).close()
    g.wait_stderr(r"TLS handshake failed: no shared cipher", since=pos)
    assert https_get(g.port, client_ctx(certs, version=ssl.TLSVersion.TLSv1_2)).status == 200


# ---- session resumption ---------------------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption_also_across_reload(harness, upstream, certs, version):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs))
    ctx = client_ctx(certs, version=version, alpn=["http/1.1"])

    def visit(session=None):
        with Conn(sock=tls_sock(g.port, ctx, session=session)) as c:
            assert c.request("GET", "/echo").status == 200   # TLS 1.3 tickets come after
            return c.sock.session, c.sock.session_reused

    s1, reused = visit()
    assert not reused
    s2, reused = visit(s1)
    assert reused
    pos = g.stderr_size()
    g.signal(signal.SIGHUP)
    g.wait_stderr(r"configuration reloaded", since=pos)
    _, reused = visit(s2)
    assert reused, "a session from before the reload did not resume"


@pytest.mark.parametrize("case", ["add_client_ca", "rotate_client_ca"])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_reload_changing_client_verification_refuses_older_sessions(harness, upstream, certs,
                                                                    version, case):
    """Ticket keys outlive reloads, so the session id context must cover what authenticated a
    session: one issued before client_ca was added (or rotated) does not resume after it."""
    before, after, cert = {}, {"client_ca": str(certs / "cca.pem")}, None
    if case == "rotate_client_ca":
        before, after, cert = after, {"client_ca": str(certs / "rogue.pem")}, "alice"
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs, **before))
    ctx = client_ctx(certs, version=version, alpn=["http/1.1"], cert=cert)
    with Conn(sock=tls_sock(g.port, ctx)) as c:
        assert c.request("GET", "/echo").status == 200
        s1 = c.sock.session
    with Conn(sock=tls_sock(g.port, ctx, session=s1)) as c:   # it does resume as it stands
        assert c.request("GET", "/echo").status == 200 and c.sock.session_reused
        s1 = c.sock.session
    cfg = make_config(g.port, [upstream.addr])
    cfg["listen"] = [{"address": "127.0.0.1:%d" % g.port, "tls": tls_conf(certs, **after)}]
    pos = g.stderr_size()
    g.reload(cfg)
    g.wait_stderr(r"configuration reloaded", since=pos)
    pos = g.stderr_size()
    with pytest.raises((ssl.SSLError, ConnectionError, gw.ProtocolError)):
        # a full handshake, which this client cannot pass (TLS 1.3: refused on read)
        with Conn(sock=tls_sock(g.port, ctx, session=s1)) as c:
            r = c.request("GET", "/echo")
            pytest.fail("served (session_reused=%s, status %d)" % (c.sock.session_reused,
                                                                   r.status))
    g.wait_stderr(r"TLS handshake failed: (peer did not return a certificate|"
                  r"certificate verify failed)", since=pos)


def test_session_tickets_off_still_resumes_by_id(harness, upstream, certs):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs, session_tickets=False))
    ctx = client_ctx(certs, version=ssl.TLSVersion.TLSv1_2)
    with Conn(sock=tls_sock(g.port, ctx)) as c:
        assert c.request("GET", "/echo").status == 200
        s = c.sock.session
        assert not s.has_ticket
    with Conn(sock=tls_sock(g.port, ctx, session=s)) as c:
        assert c.request("GET", "/echo").status == 200
        assert c.sock.session_reused


# ---- client certificates --------------------------------------------------------------------

class GhWsgi:
    def __init__(self, workdir):
        self.sock = str(workdir / "ghwsgi.sock")
        self.errpath = workdir / "ghwsgi.err"
        env = dict(os.environ, PYTHONPATH=str(ADAPTERS), PYTHONUNBUFFERED="1")
        with open(self.errpath, "wb") as err:
            self.proc = subprocess.Popen(
                [gw.PYTHON, "-m", "gatehouse.wsgi", "wsgi_app:app", "--bind",
                 "unix:" + self.sock, "--workers", "1", "--chdir", str(PYAPPS)],
                cwd=str(PYAPPS), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        wait_until(lambda: "worker booted" in self.errpath.read_text(errors="replace")
                   or self.proc.poll() is not None, timeout=15, what="gatehouse.wsgi booted")
        assert self.proc.poll() is None, self.errpath.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class GhAsgi:
    def __init__(self, workdir):
        self.sock = str(workdir / "ghasgi.sock")
        self.errpath = workdir / "ghasgi.err"
        env = dict(os.environ, PYTHONPATH="%s:%s" % (ADAPTERS, APPS), PYTHONUNBUFFERED="1")
        with open(self.errpath, "wb") as err:
            self.proc = subprocess.Popen(
                [gw.PYTHON, "-m", "gatehouse.asgi", "tls_echo:app", "--bind",
                 "unix:" + self.sock, "--workers", "1"],
                cwd=str(APPS), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        wait_until(lambda: "worker booted" in self.errpath.read_text(errors="replace")
                   or self.proc.poll() is not None, timeout=20, what="gatehouse.asgi booted")
        assert self.proc.poll() is None, self.errpath.read_text(errors="replace")

    stop = GhWsgi.stop


@pytest.fixture(scope="module")
def ghw(tmp_path_factory):
    s = GhWsgi(tmp_path_factory.mktemp("ghwsgi"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gha(tmp_path_factory):
    s = GhAsgi(tmp_path_factory.mktemp("ghasgi"))
    yield s
    s.stop()


def uwsgi_up(ghw):
    return {"app": {"protocol": "uwsgi", "servers": ["unix:" + ghw.sock]}}


def test_mtls_required_refuses_without_a_certificate(harness, ghw, certs):
    g = tls_gateway(harness, uwsgi_up(ghw), tls_conf(certs, client_ca=str(certs / "cca.pem")))
    pos = g.stderr_size()
    with pytest.raises((ssl.SSLError, ConnectionError, gw.ProtocolError)):
        # TLS 1.3: the client's side of the handshake ends first; the refusal comes on read
        https_get(g.port, client_ctx(certs))
    with pytest.raises((ssl.SSLError, ConnectionError, gw.ProtocolError)):
        https_get(g.port, client_ctx(certs, cert="mallory"))
    g.wait_stderr(r"TLS handshake failed: peer did not return a certificate", since=pos)


def test_mtls_uwsgi_environ(harness, ghw, certs):
    g = tls_gateway(harness, uwsgi_up(ghw), tls_conf(certs, client_ca=str(certs / "cca.pem")))
    r = https_get(g.port, client_ctx(certs, cert="alice", version=ssl.TLSVersion.TLSv1_3),
                  "/env")
    assert r.status == 200, r
    env = r.json()
    assert env["HTTPS"] == "on" and env["wsgi.url_scheme"] == "https"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CIPHER"].startswith("TLS_")
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "O=Example,CN=alice"
    assert env["SSL_CLIENT_I_DN"] == "CN=Test Client CA"
    assert len(env["SSL_CLIENT_M_SERIAL"]) > 0
    assert env["SSL_CLIENT_CERT"] == (certs / "alice.pem").read_text()
    # a client's own SSL-looking field does not pass as the gateway's
    r = https_get(g.port, client_ctx(certs, cert="alice"), "/env",
                  headers=[("X-SSL-Client-Verify", "SUCCESS")])
    assert "HTTP_X_SSL_CLIENT_VERIFY" not in r.json()


def test_optional_verify_uwsgi(harness, ghw, certs):
    g = tls_gateway(harness, uwsgi_up(ghw), tls_conf(certs, client_ca=str(certs / "cca.pem"),
                                                      client_verify="optional"))
    env = https_get(g.port, client_ctx(certs), "/env").json()
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in env and "SSL_CLIENT_CERT" not in env
    env = https_get(g.port, client_ctx(certs, cert="mallory"), "/env").json()
    assert env["SSL_CLIENT_VERIFY"].startswith("FAILED:")
    assert env["SSL_CLIENT_S_DN"] == "CN=mallory"
    env = https_get(g.port, client_ctx(certs, cert="alice"), "/env").json()
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_asgi_tls_scope_extension(harness, gha, certs):
    ups = {"app": {"protocol": "asgi", "servers": ["unix:" + gha.sock]}}
    g = tls_gateway(harness, ups, tls_conf(certs, client_ca=str(certs / "cca.pem"),
                                           client_verify="optional"))
    r = https_get(g.port, client_ctx(certs, cert="alice", version=ssl.TLSVersion.TLSv1_2))
    assert r.status == 200, r
    body = r.json()
    assert body["scheme"] == "https"
    t = body["tls"]
    assert t["tls_version"] == 0x0303
    assert t["cipher_suite"] in (0xC02F, 0xC030, 0xCCA8)      # ECDHE-RSA AES-GCM / CHACHA20
    assert t["client_cert_name"] == "O=Example,CN=alice"
    assert t["client_cert_error"] is None
    assert t["client_cert_chain"] == [(certs / "alice.pem").read_text()]
    assert t["server_cert"] is None
    t = https_get(g.port, client_ctx(certs, version=ssl.TLSVersion.TLSv1_3)).json()["tls"]
    assert t["tls_version"] == 0x0304 and t["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert t["client_cert_chain"] == [] and t["client_cert_name"] is None
    t = https_get(g.port, client_ctx(certs, cert="mallory")).json()["tls"]
    assert t["client_cert_error"] and t["client_cert_name"] == "CN=mallory"
    # cleartext: no tls extension
    port = free_port()
    plain = harness.gateway(config=make_config(port, ups), port=port)
    with Conn(plain.port) as c:
        body = c.request("GET", "/").json()
    assert body == {"scheme": "http", "tls": None}


def test_http_upstream_tls_client_headers(harness, upstream, certs):
    ups = {"web": gw.upstream_conf([upstream.addr], tls_client_headers=True)}
    g = tls_gateway(harness, ups, tls_conf(certs, client_ca=str(certs / "cca.pem"),
                                           client_verify="optional"))
    h = echo_headers(https_get(g.port, client_ctx(certs, cert="alice"),
                               headers=[("X-SSL-Client-Verify", "SUCCESS"),
                                        ("x-ssl-client-s-dn", "CN=admin")]))
    assert h["x-ssl-client-verify"] == "SUCCESS"
    assert h["x-ssl-client-s-dn"] == "O=Example,CN=alice"
    assert urllib.parse.unquote(h["x-ssl-client-cert"]) == (certs / "alice.pem").read_text()
    h = echo_headers(https_get(g.port, client_ctx(certs),
                               headers=[("X-SSL-Client-Verify", "SUCCESS"),
                                        ("X-SSL-Client-S-DN", "CN=admin")]))
    assert h["x-ssl-client-verify"] == "NONE"
    assert "x-ssl-client-s-dn" not in h and "x-ssl-client-cert" not in h
    # without tls_client_headers: none of them, and never the client's
    g2 = tls_gateway(harness, [upstream.addr], tls_conf(certs, client_ca=str(certs / "cca.pem")))
    h = echo_headers(https_get(g2.port, client_ctx(certs, cert="alice"),
                               headers=[("X-SSL-Client-Verify", "SUCCESS")]))
    assert not any(k.startswith("x-ssl-client") for k in h)


# ---- reloads and bad certificates -----------------------------------------------------------

def test_certificate_reload_and_broken_reload(harness, upstream, certs, tmp_path):
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(certs / "a.pem", live_cert)
    shutil.copy(certs / "a.key", live_key)
    t = {"certificates": [{"cert": str(live_cert), "key": str(live_key)}]}
    g = tls_gateway(harness, [upstream.addr], t)
    ctx = client_ctx(certs)
    assert peer_cn(g.port, ctx, "x.test") == "a.test"
    kept = tls_sock(g.port, client_ctx(certs, alpn=["http/1.1"]))   # lives across reloads
    shutil.copy(certs / "b.pem", live_cert)
    shutil.copy(certs / "b.key", live_key)
    pos = g.stderr_size()
    g.signal(signal.SIGHUP)
    g.wait_stderr(r"configuration reloaded", since=pos)
    assert peer_cn(g.port, ctx, "x.test") == "b.test"
    live_cert.write_text("not a certificate\n")
    pos = g.stderr_size()
    g.signal(signal.SIGHUP)
    line = g.wait_stderr(r"reload refused.*cannot load %s" % str(live_cert), since=pos)
    assert line
    assert peer_cn(g.port, ctx, "x.test") == "b.test"
    with Conn(sock=kept) as c:
        assert c.request("GET", "/echo").status == 200


def _check(tmp_path, cfg):
    path = tmp_path / "check.yaml"
    path.write_text(gw.to_yaml(cfg))
    return subprocess.run([str(gw.GATEHOUSE_BIN), "--check", "-c", str(path)],
                          capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("case", ["missing", "not_pem", "key_mismatch", "bad_ca"])
def test_bad_certificate_at_start_exits_1(harness, upstream, certs, tmp_path, case):
    port = free_port()
    cfg = make_config(port, [upstream.addr])
    t = tls_conf(certs, names=("a",))
    bad = tmp_path / "bad.pem"
    bad.write_text("garbage\n")
    if case == "missing":
        t["certificates"][0]["cert"] = want = str(tmp_path / "nope.pem")
        why = "No such file or directory"
    elif case == "not_pem":
        t["certificates"][0]["cert"] = want = str(bad)
        why = "cannot load"
    elif case == "key_mismatch":
        t["certificates"][0]["key"] = want = str(certs / "b.key")
        why = "does not match"
    else:
        t["client_ca"] = want = str(bad)
        why = "cannot load"
    cfg["listen"] = [{"address": "127.0.0.1:%d" % port, "tls": t}]
    out = _check(tmp_path, cfg)
    assert out.returncode == 1
    assert want in out.stderr and why in out.stderr, out.stderr
    assert ":" in out.stderr.split(" ")[0]       # file:line:column
    g = gw.Gateway(tmp_path, cfg, port)
    g.start(wait=False)
    try:
        assert g.wait_exit(10) == 1
        assert want in g.stderr_text()
    finally:
        g.start_failed = True


def test_check_accepts_good_tls(tmp_path, certs):
    port = free_port()
    cfg = make_config(port, ["127.0.0.1:9"])
    cfg["listen"] = [{"address": "127.0.0.1:%d" % port, "tls": tls_conf(certs)}]
    out = _check(tmp_path, cfg)
    assert out.returncode == 0, out.stderr


# ---- clients that do not speak TLS, or stall ------------------------------------------------

def test_garbage_client_logged_and_closed(harness, upstream, certs):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs))
    pos = g.stderr_size()
    with Conn(g.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        c.wait_closed(5)
    line = g.wait_stderr(r"peer=127\.0\.0\.1:\d+ .*TLS handshake failed: http request", since=pos)
    assert line
    assert https_get(g.port, client_ctx(certs)).status == 200


def test_stalled_handshake_closed_at_header_timeout(harness, upstream, certs):
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs),
                    timeouts={"header": "1s", "body": "30s", "idle": "60s", "send": "60s"})
    pos = g.stderr_size()
    t0 = time.monotonic()
    with Conn(g.port) as c:
        c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01")    # the start of a ClientHello, then nothing
        c.wait_closed(5)
    assert 0.8 < time.monotonic() - t0 < 4
    g.wait_stderr(r"TLS handshake timed out", since=pos)
    assert https_get(g.port, client_ctx(certs)).status == 200


def test_request_and_close_notify_in_one_segment_closes(harness, upstream, certs):
    """A request and the client's close_notify read in one go: the end is reported after the
    request (as a cleartext request and FIN are), so the connection closes at once rather than
    idling until a timeout."""
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs),
                    timeouts={"header": "20s", "body": "20s", "idle": "20s", "send": "20s"})
    ctx = client_ctx(certs, version=ssl.TLSVersion.TLSv1_3, alpn=["http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_side=False, server_hostname="a.test")
    raw = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    try:
        def pump():
            data = out.read()
            if data:
                raw.sendall(data)

        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                chunk = raw.recv(65536)
                assert chunk, "closed during the handshake"
                inc.write(chunk)
        pump()
        obj.write(gw.build_request("GET", "/echo", host="a.test"))
        with pytest.raises(ssl.SSLWantReadError):
            obj.unwrap()                         # puts close_notify after the request
        t0 = time.monotonic()
        raw.sendall(out.read())                  # both records in one write, then silence
        got = b""
        while True:
            try:
                chunk = raw.recv(65536)
            except socket.timeout:
                pytest.fail("not closed within 5 s (timeouts are 20 s)")
            if not chunk:
                break
            inc.write(chunk)
            try:
                got += obj.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
        assert time.monotonic() - t0 < 4, "closed only at a timeout"
    finally:
        raw.close()
    # as a cleartext request followed by a FIN: the request was read, the client's end seen
    line = g.access_for("/echo")[0]
    assert line["error"] == "client closed connection", line


def test_metrics_count_handshakes(harness, upstream, certs):
    admin = free_port()
    g = tls_gateway(harness, [upstream.addr], tls_conf(certs),
                    admin={"address": "127.0.0.1:%d" % admin})
    assert https_get(g.port, client_ctx(certs)).status == 200
    with Conn(g.port) as c:
        c.send(b"hello\r\n\r\n")
        c.wait_closed(5)

    def figures():
        with Conn(admin) as c:
            text = c.request("GET", "/metrics").text()
        return {l.split()[0]: float(l.split()[1]) for l in text.splitlines()
                if l.startswith("gatehouse_tls_")}

    f = wait_until(lambda: (lambda m: m if m.get("gatehouse_tls_handshake_failures_total")
                            else None)(figures()), what="failure counted")
    assert f["gatehouse_tls_handshakes_total"] >= 1
    assert f["gatehouse_tls_handshake_failures_total"] >= 1
