# SPDX-License-Identifier: MIT
"""Run a WSGI app (PEP 3333) as a master and N pre-forked blocking workers speaking uwsgi.

    python3 -m gatehouse.wsgi module:app --bind unix:/run/app.sock | HOST:PORT --workers N
        [--max-requests N [--max-requests-jitter N]] [--timeout S] [--graceful-timeout S]
        [--chdir DIR]

The master creates the listening socket, forks the workers and then only supervises them:
it restarts the ones that die, kills (after dumping its traceback) one stuck in a request
longer than --timeout, replaces them all on SIGHUP and drains them on SIGTERM/SIGINT. Each
worker accepts one connection at a time; a connection carries one uwsgi request packet, then
CONTENT_LENGTH body bytes; the answer is an HTTP/1.1 status line, headers and body, ended by
closing the connection (a response cut short by an error ends with a reset instead).
"""

import argparse
import errno
import faulthandler
import importlib
import io
import mmap
import os
import random
import re
import select
import signal
import socket
import stat
import struct
import sys
import time
import traceback

from . import protocol

__all__ = ["FileWrapper", "serve_connection", "main"]

READ_TIMEOUT = 60.0  # the gateway sends the whole request at once; this only bounds a bad peer
WRITE_TIMEOUT = 60.0  # a gateway that stops reading for this long is gone
BOOT_FAILED = 3  # worker exit status: the app could not be loaded

_STATUS_RE = re.compile(r"[1-9][0-9]{2} [^\x00-\x08\x0a-\x1f\x7f]*\Z")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE_BAD_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def log(msg, *args):
    """One line on stderr with the process's prefix."""
    if args:
        msg = msg % args
    try:
        sys.stderr.write("[gatehouse.wsgi pid %d] %s\n" % (os.getpid(), msg))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# --- wsgi.input --------------------------------------------------------------------------


class InputStream(io.RawIOBase):
    """wsgi.input: exactly CONTENT_LENGTH bytes of body, some possibly already received with
    the packet. Never reads past the body, so it never waits for bytes that will not come."""

    def __init__(self, sock, length, preread=b""):
        super().__init__()
        self._sock = sock
        self._buf = bytearray(preread[:length])
        self._remaining = length - len(self._buf)  # still in the socket
        self.truncated = False  # the peer closed before the whole body arrived

    def readable(self):
        return True

    def _fill(self, want):
        """Receive up to |want| more body bytes into the buffer; False at the body's end."""
        if self._remaining <= 0 or self.truncated:
            return False
        try:
            data = self._sock.recv(min(want, self._remaining, 1 << 20))
        except OSError:
            data = b""
        if not data:
            self.truncated = True
            return False
        self._remaining -= len(data)
        self._buf += data
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            while self._fill(1 << 20):
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out
        while len(self._buf) < size and self._fill(max(size - len(self._buf), 65536)):
            pass
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def readinto(self, b):
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def read1(self, size=-1):
        if not self._buf:
            self._fill(65536 if size is None or size < 0 else max(size, 1))
        return self.read(len(self._buf) if size is None or size < 0 else min(size, len(self._buf)))

    def readline(self, size=-1):
        if size is None:
            size = -1
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl >= 0:
                end = nl + 1
                break
            if 0 <= size <= len(self._buf):
                end = size
                break
            start = len(self._buf)
            if not self._fill(65536):
                end = len(self._buf)
                break
        if 0 <= size < end:
            end = size
        out = bytes(self._buf[:end])
        del self._buf[:end]
        return out

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self):
        """Discard the body the app did not read (bounded by CONTENT_LENGTH)."""
        self._buf.clear()
        while self._fill(1 << 20):
            self._buf.clear()


# --- wsgi.file_wrapper -------------------------------------------------------------------


class FileWrapper:
    """wsgi.file_wrapper: served with sendfile(2) when the object is a real file, else
    iterated in blocks."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def regular_fileno(self):
        """The file descriptor when sendfile applies, else None."""
        try:
            fd = self.filelike.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            pass
        return None


# --- one connection ----------------------------------------------------------------------


class _Abort(Exception):
    """The response cannot continue: close the connection with a reset."""


class _Response:
    def __init__(self, sock, environ):
        self.sock = sock
        self.environ = environ
        self.status = None
        self.headers = None
        self.head_sent = False
        self.content_length = None
        self.sent = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str or not _STATUS_RE.match(status):
            raise ValueError("bad status %r: want a str like '200 OK'" % (status,))
        if type(headers) is not list:
            raise TypeError("headers must be a list, not %s" % type(headers).__name__)
        content_length = None
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise TypeError("header %r is not a (name, value) tuple" % (item,))
            name, value = item
            if type(name) is not str or not _TOKEN_RE.match(name):
                raise ValueError("bad header name %r" % (name,))
            if type(value) is not str or _VALUE_BAD_RE.search(value):
                raise ValueError("bad value for header %s: %r" % (name, value))
            if name.lower() == "content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    raise ValueError("bad Content-Length %r" % value) from None
        self.status = status
        self.headers = headers
        self.content_length = content_length
        return self.write

    def _send_head(self):
        if self.status is None:
            raise AssertionError("the app wrote body bytes before calling start_response")
        lines = ["HTTP/1.1 %s\r\n" % self.status]
        lines += ["%s: %s\r\n" % h for h in self.headers]
        lines.append("\r\n")
        try:
            head = "".join(lines).encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("status or headers are not latin-1") from None
        self.head_sent = True
        return head

    def write(self, data):
        """The write() callable; also used for every chunk of the iterable."""
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError("response body chunks must be bytes, not %s"
                                % type(data).__name__)
        out = data if self.head_sent else self._send_head() + data
        if not out:
            return
        try:
            self.sock.sendall(out)
        except OSError as e:
            raise _Abort("gateway went away: %s" % e) from None
        self.sent += len(data)

    def sendfile(self, wrapper, fd):
        if not self.head_sent:
            self.write(b"")
        count = None
        if self.content_length is not None:
            count = max(self.content_length - self.sent, 0)
        try:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            offset = 0
        try:
            n = self.sock.sendfile(_FdFile(fd), offset, count)
        except OSError as e:
            raise _Abort("gateway went away: %s" % e) from None
        self.sent += n

    def finish(self):
        if not self.head_sent:
            self.write(b"")


class _FdFile:
    """What socket.sendfile() needs from a file: fileno() (and a seek it will call)."""

    def __init__(self, fd):
        self._fd = fd

    def fileno(self):
        return self._fd

    def seek(self, pos, whence=0):
        return os.lseek(self._fd, pos, whence)

    def read(self, n):
        return os.read(self._fd, n)  # socket.sendfile's fallback when sendfile(2) refuses


def _disconnected_probe(sock, stream):
    """environ["gatehouse.disconnected"]: True once the gateway has closed its side. Looks at
    the socket without consuming anything."""
    rdhup = getattr(select, "POLLRDHUP", 0)

    def disconnected():
        if sock.fileno() < 0:
            return True
        if stream.truncated:
            return True
        p = select.poll()
        p.register(sock.fileno(), select.POLLIN | rdhup)
        events = p.poll(0)
        if not events:
            return False
        ev = events[0][1]
        if ev & (rdhup | select.POLLHUP | select.POLLERR | select.POLLNVAL):
            return True
        if stream._remaining > 0:
            return False  # unread body bytes, not an end of stream
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    return disconnected


def _request_line(environ):
    uri = environ.get("REQUEST_URI")
    if not uri:
        uri = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            uri += "?" + environ["QUERY_STRING"]
    return "%s %s %s" % (environ.get("REQUEST_METHOD", "-"), uri or "-",
                         environ.get("SERVER_PROTOCOL", "-"))


def _url_scheme(environ):
    scheme = environ.get("REQUEST_SCHEME", "").lower()
    if scheme in ("http", "https"):
        return scheme
    if environ.get("HTTPS", "").lower() in ("on", "1", "yes", "true"):
        return "https"
    return "http"


def build_environ(req, sock, preread, server_addr=None):
    """The PEP 3333 environ for one request: the vars of |req| (a protocol.Request) as
    latin-1 str plus wsgi.*. Returns (environ, input stream); raises ValueError for an
    unusable CONTENT_LENGTH."""
    environ = req.text_vars()
    environ.setdefault("REQUEST_METHOD", "GET")
    environ.setdefault("SCRIPT_NAME", "")
    environ.setdefault("PATH_INFO", "")
    environ.setdefault("QUERY_STRING", "")
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
    if "SERVER_NAME" not in environ or "SERVER_PORT" not in environ:
        host, port = server_addr or ("localhost", "80")
        environ.setdefault("SERVER_NAME", str(host))
        environ.setdefault("SERVER_PORT", str(port))
    cl = environ.get("CONTENT_LENGTH", "").strip()
    if cl:
        if not cl.isdigit():
            raise ValueError("bad CONTENT_LENGTH %r" % cl)
        length = int(cl)
    else:
        length = 0
    stream = InputStream(sock, length, preread)
    environ.update({
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": _url_scheme(environ),
        "wsgi.input": stream,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "gatehouse.disconnected": _disconnected_probe(sock, stream),
    })
    return environ, stream


def _read_packet(sock):
    """(Request, bytes past the packet), or (None, reason) when the peer gives up or lies."""
    dec = protocol.RequestDecoder()
    while True:
        try:
            ev = dec.next_event()
        except protocol.ProtocolError as e:
            return None, "bad uwsgi packet: %s" % e
        if ev is not protocol.NeedData:
            return ev, dec.trailing_data
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None, "timed out reading the uwsgi packet"
        except OSError as e:
            return None, "reading the uwsgi packet: %s" % e
        if not data:
            return None, None  # closed before a packet: nothing to say
        dec.feed(data)


def _reset(sock):
    """Close so that the gateway sees ECONNRESET, not a clean end of a response."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _simple(sock, status, body):
    try:
        sock.sendall(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                     % (status, len(body), body))
    except OSError:
        pass


def serve_connection(sock, app, server_addr=None, on_request=None):
    """Serve the one request a gateway connection carries, then close it. Returns the request
    line (or None when no request came). |on_request(line)| is called once the packet is in."""
    try:
        sock.settimeout(READ_TIMEOUT)
        req, rest = _read_packet(sock)
        if req is None:
            if rest:
                log("%s; closing", rest)
            return None
        if req.modifier1 != 0:
            log("uwsgi modifier1 %d is not a WSGI request; closing", req.modifier1)
            _reset(sock)
            return None
        try:
            environ, stream = build_environ(req, sock, rest, server_addr)
        except ValueError as e:
            log("%s; answering 400", e)
            _simple(sock, b"400 Bad Request", b"Bad Request\n")
            return None
        line = _request_line(environ)
        if on_request is not None:
            on_request(line)
        sock.settimeout(WRITE_TIMEOUT)
        _run_app(app, environ, sock, line)
        return line
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _run_app(app, environ, sock, line):
    resp = _Response(sock, environ)
    result = None
    try:
        result = app(environ, resp.start_response)
        fd = result.regular_fileno() if isinstance(result, FileWrapper) else None
        if fd is not None and resp.status is not None:
            resp.sendfile(result, fd)
        else:
            for chunk in result:
                if chunk or resp.head_sent:
                    resp.write(chunk)
                elif type(chunk) is not bytes:
                    resp.write(chunk)  # raises the TypeError
        resp.finish()
    except _Abort as e:
        log("%s: response cut: %s", line, e)
        _reset(sock)
    except Exception:
        tb = traceback.format_exc()
        if resp.head_sent:
            log("%s: error after the response started; cutting it\n%s", line, tb.rstrip())
            _reset(sock)
        else:
            log("%s: error in the app; answering 500\n%s", line, tb.rstrip())
            _simple(sock, b"500 Internal Server Error", b"Internal Server Error\n")
    finally:
        if result is not None and hasattr(result, "close"):
            try:
                result.close()
            except Exception:
                log("%s: error in the response's close()\n%s", line,
                    traceback.format_exc().rstrip())
    # Whatever body the app left unread: read it off so the close is a FIN, not a reset
    # that could destroy the response still in flight to the gateway.
    stream = environ["wsgi.input"]
    if not stream.truncated and stream._remaining > 0:
        try:
            sock.settimeout(1.0)
            stream.drain()
        except OSError:
            pass


# --- shared state between master and workers ---------------------------------------------

_SLOT = struct.Struct("<dQ?H")  # request start (monotonic, 0 when idle), count, booted, len
_SLOT_LINE = 256
_SLOT_SIZE = _SLOT.size + _SLOT_LINE


class Slot:
    """A small anonymous shared mapping, created by the master before a fork: the worker
    writes what it is doing, the master reads it to enforce --timeout."""

    def __init__(self):
        self.mm = mmap.mmap(-1, _SLOT_SIZE)

    def get(self):
        start, count, booted, n = _SLOT.unpack_from(self.mm, 0)
        line = self.mm[_SLOT.size : _SLOT.size + min(n, _SLOT_LINE)].decode("latin-1")
        return start, count, booted, line

    def set(self, start, count, booted, line=""):
        data = line.encode("latin-1", "replace")[:_SLOT_LINE]
        self.mm[_SLOT.size : _SLOT.size + len(data)] = data
        _SLOT.pack_into(self.mm, 0, start, count, booted, len(data))

    def close(self):
        self.mm.close()


# --- worker ------------------------------------------------------------------------------


def load_app(spec):
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError("%s is not callable" % spec)
    return obj


def _worker_main(listener, slot, opts, max_requests):
    stop = []

    def on_term(signum, frame):
        stop.append(signum)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master decides; a ^C reaches it too
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True, chain=False)
    master = os.getppid()

    try:
        app = load_app(opts.app)
    except BaseException:
        log("cannot load %s\n%s", opts.app, traceback.format_exc().rstrip())
        return BOOT_FAILED
    slot.set(0.0, 0, True)
    log("worker booted (%s)", opts.app)

    server_addr = None
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        server_addr = listener.getsockname()[:2]
    is_tcp = server_addr is not None
    count = 0
    while not stop:
        if os.getppid() != master:
            log("master went away; exiting")
            return 0
        try:
            ready, _, _ = select.select([listener, wake_r], [], [], 1.0)
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                while os.read(wake_r, 64):
                    pass
            except BlockingIOError:
                pass
        if stop or listener not in ready:
            continue
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another worker took it
        except OSError as e:
            if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                continue
            raise
        if is_tcp:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        count += 1

        def on_request(line, _count=count):
            slot.set(time.monotonic(), _count, True, line)

        slot.set(time.monotonic(), count, True, "(reading the request)")
        try:
            serve_connection(conn, app, server_addr, on_request)
        finally:
            slot.set(0.0, count, True)
        if max_requests and count >= max_requests:
            log("served %d requests (--max-requests); recycling", count)
            return 0
    return 0


# --- master ------------------------------------------------------------------------------


class SignalPipe:
    """A master's signals: handlers only note them, and the wake-up pipe ends the master's
    select() at once, so the master acts on them in its own loop, not in a handler."""

    def __init__(self, signums):
        self.pending = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        for s in signums:
            signal.signal(s, self._note)

    def _note(self, signum, frame):
        self.pending.append(signum)

    def wait(self, timeout):
        """Waits up to |timeout| seconds for a signal; returns those that came, oldest first."""
        try:
            select.select([self.wake_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self.wake_r, 64):
                pass
        except BlockingIOError:
            pass
        got, self.pending = self.pending, []
        return got

    def close_in_child(self):
        """In a forked worker: the master's pipe is not the worker's business."""
        os.close(self.wake_r)
        os.close(self.wake_w)



class Worker:
    def __init__(self, pid, slot, generation):
        self.pid = pid
        self.slot = slot
        self.generation = generation
        self.stopping = False  # sent SIGTERM: finish the request, then exit
        self.deadline = None  # SIGKILL it at this monotonic time
        self.reason = None  # why the master is killing it
        self.timed_out = False  # over --timeout: traceback asked for, SIGKILL scheduled


def parse_bind(bind):
    if bind.startswith("unix:"):
        path = bind[5:]
        if not path:
            raise ValueError("unix: needs a path")
        return socket.AF_UNIX, path
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("--bind wants unix:/path or HOST:PORT, not %r" % bind)
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def make_listener(bind, backlog=1024):
    family, addr = parse_bind(bind)
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_UNIX:
        if os.path.exists(addr):
            if not stat.S_ISSOCK(os.lstat(addr).st_mode):
                raise OSError(errno.EEXIST, "%s exists and is not a socket" % addr)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(addr)
            except OSError:
                os.unlink(addr)  # stale: nobody listens there
            else:
                raise OSError(errno.EADDRINUSE, "%s: a server already listens there" % addr)
            finally:
                probe.close()
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(backlog)
    sock.setblocking(False)  # workers poll it and accept without blocking
    return sock


class Master:
    def __init__(self, opts, listener):
        self.opts = opts
        self.listener = listener
        self.workers = {}
        self.generation = 0
        self.stopping_at = None
        self.booted_once = False
        self.respawn_after = 0.0
        self.sigs = None

    def spawn(self):
        slot = Slot()
        jitter = random.randint(0, self.opts.max_requests_jitter) if self.opts.max_requests else 0
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.sigs.close_in_child()
                code = _worker_main(self.listener, slot, self.opts,
                                    self.opts.max_requests + jitter if self.opts.max_requests
                                    else 0)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                log("worker crashed\n%s", traceback.format_exc().rstrip())
                code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.workers[pid] = Worker(pid, slot, self.generation)
        return pid

    def run(self):
        self.sigs = SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD))
        log("listening on %s with %d workers", self.describe(), self.opts.workers)
        for _ in range(self.opts.workers):
            self.spawn()
        while True:
            for s in self.sigs.wait(0.1):
                if s in (signal.SIGTERM, signal.SIGINT):
                    self.begin_stop(s)
                elif s == signal.SIGHUP and self.stopping_at is None:
                    self.reload()
            status = self.reap()
            if status is not None:
                return status
            self.check_timeouts()
            if self.stopping_at is not None:
                if not self.workers:
                    log("stopped")
                    return 0
                continue
            missing = self.opts.workers - sum(1 for w in self.workers.values()
                                              if w.generation == self.generation)
            if missing > 0 and time.monotonic() >= self.respawn_after:
                for _ in range(missing):
                    self.spawn()

    def describe(self):
        name = self.listener.getsockname()
        if isinstance(name, str):
            return "unix:" + name
        return "%s:%d" % name[:2]

    def begin_stop(self, signum):
        name = signal.Signals(signum).name
        if self.stopping_at is not None:
            if signum == signal.SIGINT:
                log("second %s: killing the workers now", name)
                for w in self.workers.values():
                    self.kill(w, "fast shutdown")
            return
        log("%s: no new requests; draining %d workers (up to %gs)", name, len(self.workers),
            self.opts.graceful_timeout)
        self.stopping_at = time.monotonic()
        self.close_listener()
        for w in self.workers.values():
            self.stop_worker(w)

    def close_listener(self):
        name = self.listener.getsockname()
        if isinstance(name, str) and name:
            try:
                os.unlink(name)
            except OSError:
                pass
        self.listener.close()

    def reload(self):
        old = [w for w in self.workers.values() if not w.stopping]
        self.generation += 1
        log("SIGHUP: starting %d new workers, stopping %d old ones gracefully",
            self.opts.workers, len(old))
        for _ in range(self.opts.workers):
            self.spawn()
        for w in old:
            self.stop_worker(w)

    def stop_worker(self, w):
        if w.stopping:
            return
        w.stopping = True
        w.deadline = time.monotonic() + self.opts.graceful_timeout
        w.reason = "did not stop within --graceful-timeout %gs" % self.opts.graceful_timeout
        try:
            os.kill(w.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def kill(self, w, reason):
        w.reason = reason
        w.deadline = time.monotonic()
        try:
            os.kill(w.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def check_timeouts(self):
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.deadline is not None and now >= w.deadline:
                if w.reason:
                    log("worker %d: %s; killing it", w.pid, w.reason)
                w.deadline = None  # SIGKILL once; reap() collects it
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                continue
            if not self.opts.timeout or w.timed_out:
                continue
            start, count, _, line = w.slot.get()
            if start and now - start > self.opts.timeout:
                log("worker %d stuck for %.1fs in request %d (%s), over --timeout %gs; "
                    "its traceback follows, then SIGKILL", w.pid, now - start, count, line,
                    self.opts.timeout)
                try:
                    os.kill(w.pid, signal.SIGUSR2)  # faulthandler dumps the stacks
                except ProcessLookupError:
                    pass
                # Give the dump a moment: it is written from the worker's signal handler.
                w.timed_out = True
                w.reason = None
                w.deadline = now + 0.5

    def reap(self):
        """Collect exited workers; returns an exit status when the master must give up."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            _, count, booted, line = w.slot.get()
            w.slot.close()
            if booted:
                self.booted_once = True
            if os.WIFSIGNALED(status):
                how = "killed by %s" % signal.Signals(os.WTERMSIG(status)).name
            else:
                how = "exited with status %d" % os.waitstatus_to_exitcode(status)
            if w.timed_out:
                log("worker %d %s (--timeout) after %d requests; %s", pid, how, count,
                    "not replacing it (stopping)" if w.stopping or self.stopping_at is not None
                    else "starting another")
                continue
            if w.stopping or self.stopping_at is not None:
                log("worker %d %s after %d requests", pid, how, count)
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                log("worker %d %s after %d requests (recycled); starting another", pid, how,
                    count)
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == BOOT_FAILED:
                if not self.booted_once:
                    log("worker %d could not load the app; giving up", pid)
                    self.begin_stop(signal.SIGTERM)
                    self.wait_all()
                    return 1
                log("worker %d could not load the app; retrying in 1s", pid)
                self.respawn_after = time.monotonic() + 1.0
                continue
            busy = " during request %d (%s)" % (count, line) if line else ""
            log("worker %d died: %s%s; starting another", pid, how, busy)

    def wait_all(self):
        for w in list(self.workers.values()):
            self.kill(w, "giving up")
        for pid in list(self.workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.workers.clear()


def build_parser():
    p = argparse.ArgumentParser(
        prog="python3 -m gatehouse.wsgi",
        description="Serve a WSGI app over the uwsgi protocol with pre-forked workers.")
    p.add_argument("app", help="module:callable (default callable: application)")
    p.add_argument("--bind", "-b", required=True, help="unix:/path or HOST:PORT")
    p.add_argument("--workers", "-w", type=int, default=2)
    p.add_argument("--max-requests", type=int, default=0,
                   help="recycle a worker after this many requests (0: never)")
    p.add_argument("--max-requests-jitter", type=int, default=0,
                   help="add 0..N (random, per worker) to --max-requests")
    p.add_argument("--timeout", type=float, default=0,
                   help="kill a worker busy with one request for longer (0: never)")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="how long SIGTERM/SIGHUP wait for in-flight requests")
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("--chdir", help="change to this directory before loading the app")
    return p


def run_master(master_cls, opts):
    """Moves to --chdir, makes the app's directory importable, binds --bind and runs
    |master_cls|(opts, listener) to the end. Returns the exit status. Shared by
    gatehouse.wsgi and gatehouse.asgi."""
    if opts.chdir:
        os.chdir(opts.chdir)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        listener = make_listener(opts.bind, opts.backlog)
    except (OSError, ValueError) as e:
        log("cannot listen on %s: %s", opts.bind, e)
        return 1
    master = master_cls(opts, listener)
    try:
        return master.run()
    finally:
        if listener.fileno() >= 0:
            master.close_listener()


def main(argv=None):
    opts = build_parser().parse_args(argv)
    if opts.workers < 1:
        build_parser().error("--workers must be at least 1")
    if opts.max_requests < 0 or opts.max_requests_jitter < 0 or opts.timeout < 0:
        build_parser().error("--max-requests, --max-requests-jitter and --timeout are >= 0")
    return run_master(Master, opts)


if __name__ == "__main__":
    sys.exit(main())
