# SPDX-License-Identifier: MIT
"""Run an ASGI app as a master and N pre-forked asyncio workers speaking the gatehouse ASGI
message protocol (adapters/asgi/PROTOCOL.md): the app side listens, the gateway connects.

    python3 -m gatehouse.asgi module:app --bind unix:/run/app.sock | HOST:PORT --workers N
        [--graceful-timeout S] [--max-streams N] [--chdir DIR]

The master binds the socket, forks the workers and supervises them: it restarts the ones
that die and drains them on SIGTERM/SIGINT. Each worker runs the app's lifespan startup, then
an asyncio loop (uvloop when importable) that accepts gateway connections. A connection
carries many streams; each HTTP_REQUEST becomes a task running `app(scope, receive, send)`.
This increment serves the `http` scope only (WEBSOCKET is never agreed).
"""

import argparse
import asyncio
import collections
import inspect
import os
import signal
import sys
import time
import traceback

from . import asgi_protocol as P
from .wsgi import SignalPipe, Slot, load_app, run_master

__all__ = ["main", "serve_connection", "Lifespan"]

BOOT_FAILED = 3            # worker exit status: the app or its lifespan startup failed
HANDSHAKE_TIMEOUT = 10.0   # a gateway sends HELLO as soon as it connects
OUT_HIGH_WATER = 256 * 1024  # flush the connection's write buffer at once past this
READ_SIZE = 256 * 1024
SUPPORTED_CAPS = P.CAP_TRAILERS | P.CAP_PATHSEND   # WEBSOCKET: not in this increment
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


def log(msg, *args):
    """One line on stderr with the process's prefix."""
    if args:
        msg = msg % args
    try:
        sys.stderr.write("[gatehouse.asgi pid %d] %s\n" % (os.getpid(), msg))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# --- the app ------------------------------------------------------------------------------


def asgi3(app):
    """(app as an ASGI 3 callable, its asgi version). ASGI 2 double callables (`app(scope)`
    returning `instance(receive, send)`) are detected the way uvicorn does it."""
    if inspect.isclass(app):
        is3 = hasattr(app, "__await__")
    elif inspect.isfunction(app):
        is3 = asyncio.iscoroutinefunction(app)
    else:
        is3 = asyncio.iscoroutinefunction(getattr(app, "__call__", None))
    if is3:
        return app, "3.0"

    async def app3(scope, receive, send):
        instance = app(scope)
        await instance(receive, send)

    return app3, "2.0"


class Lifespan:
    """The ASGI lifespan protocol for one worker: startup before accepting, shutdown on exit.
    An app that raises on the lifespan scope does not support it: logged, not fatal."""

    def __init__(self, app, asgi_version):
        self.app = app
        self.asgi_version = asgi_version
        self.state = {}
        self.queue = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failed = None      # the message of a startup.failed / shutdown.failed
        self.unsupported = False
        self.task = None

    async def _run(self):
        scope = {"type": "lifespan", "asgi": {"version": self.asgi_version,
                                              "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self.queue.get, self._send)
        except Exception:
            if not self.started.is_set():
                self.unsupported = True
                log("the app does not support the lifespan protocol (it raised); going on "
                    "without it\n%s", traceback.format_exc().rstrip())
            else:
                log("error in the app's lifespan\n%s", traceback.format_exc().rstrip())
        finally:
            # an app that returns without answering must not leave us waiting
            self.started.set()
            self.stopped.set()

    async def _send(self, message):
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failed = message.get("message", "")
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            log("lifespan shutdown failed: %s", message.get("message", ""))
            self.stopped.set()
        else:
            raise RuntimeError("unexpected lifespan message %r" % (kind,))

    async def startup(self):
        """True when the worker may serve."""
        self.task = asyncio.ensure_future(self._run())
        await self.queue.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failed is not None:
            log("lifespan startup failed: %s", self.failed)
            return False
        return True

    async def shutdown(self, timeout):
        if self.task is None or self.task.done():
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self.stopped.wait(), timeout)
        except asyncio.TimeoutError:
            log("lifespan shutdown did not finish within %gs", timeout)
            self.task.cancel()


# --- one stream (the http scope) ----------------------------------------------------------


class _Flow(Exception):
    """Internal: a stream error to answer with RESET (code)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class HttpStream:
    """One HTTP_REQUEST: the app's task, its receive() and send(), both credits."""

    def __init__(self, conn, frame):
        self.conn = conn
        self.id = frame.stream
        self.line = "%s %s" % (frame.method, frame.raw_path.decode("latin-1") or frame.path)
        self.scope = conn.build_scope(frame)
        # request direction: DATA payloads queued until receive() hands them over
        self.body = collections.deque()
        self.body_bytes = 0
        self.request_done = bool(frame.flags & P.FLAG_END)  # END seen from the gateway
        self.eof_given = False       # receive() has handed over the more_body False event
        self.recv_credit = conn.opts.initial_credit         # what the gateway may still send
        self.wakeup = asyncio.Event()    # body arrived, or the stream ended
        # response direction
        self.send_credit = conn.peer_credit
        self.credit_event = asyncio.Event()
        self.start = None            # the app's http.response.start, until it is written
        self.head_sent = False       # HTTP_RESPONSE is on the wire
        self.trailers = False        # HTTP_RESPONSE had MORE: TRAILERS carries END
        self.body_started = False
        self.response_done = False   # END written
        self.ended = False           # DISCONNECT, RESET or a lost connection: stop here
        self.app_done = False
        self.task = None

    # -- events from the gateway -------------------------------------------------------

    def on_data(self, frame):
        n = len(frame.data)
        if self.request_done:
            raise _Flow(P.PROTOCOL, "DATA after END")
        if n > self.recv_credit:
            raise _Flow(P.FLOW, "DATA of %d bytes over the credit %d" % (n, self.recv_credit))
        self.recv_credit -= n
        self.request_done = bool(frame.flags & P.FLAG_END)
        if self.app_done:
            # The app has answered without reading all of the body: let the rest come
            # (and be dropped) so that the gateway's upload does not stall on credit.
            self.give_credit(n)
        else:
            self.body.append(frame.data)
            self.body_bytes += n
            self.wakeup.set()
        self.maybe_finished()

    def on_credit(self, frame):
        inc = frame.increment
        if inc == 0 or self.send_credit + inc > P.MAX_CREDIT:
            raise _Flow(P.FLOW, "bad CREDIT increment %d" % inc)
        self.send_credit += inc
        self.credit_event.set()

    def end(self, cancel):
        """The stream is over (DISCONNECT, RESET, connection lost): sends become no-ops and
        receive() says http.disconnect. A RESET also cancels the app (cancel=True)."""
        if self.ended:
            return
        self.ended = True
        self.wakeup.set()
        self.credit_event.set()
        if cancel and self.task is not None and not self.task.done():
            self.task.cancel()
        self.maybe_finished()

    def maybe_finished(self):
        """Drop the stream from the connection once neither side will send on it."""
        if self.ended or (self.response_done and self.request_done):
            self.conn.stream_over(self)

    def give_credit(self, n):
        if n and not self.request_done and not self.ended:
            self.recv_credit += n
            self.conn.write_frame(P.Credit(self.id, 0, n))

    # -- receive() ---------------------------------------------------------------------

    async def receive(self):
        while True:
            if self.ended:
                return {"type": "http.disconnect"}
            if self.body or (self.request_done and not self.eof_given):
                return self._body_event()
            if self.response_done:
                # like uvicorn: the exchange is over, nothing more will come
                return {"type": "http.disconnect"}
            self.wakeup.clear()
            await self.wakeup.wait()

    def _body_event(self):
        """Everything that has arrived, joined into one http.request event (section 4.2);
        the bytes handed over are given back to the gateway as credit."""
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.body_bytes = 0
        more = not self.request_done
        if not more:
            self.eof_given = True
        self.give_credit(len(data))
        return {"type": "http.request", "body": data, "more_body": more}

    # -- send() ------------------------------------------------------------------------

    async def send(self, message):
        kind = message["type"]
        if self.ended:
            return               # section 4.6: discarded, not failed
        if kind == "http.response.start":
            if self.start is not None or self.head_sent:
                raise RuntimeError("http.response.start sent twice")
            self.start = message
            return
        if self.start is None:
            raise RuntimeError("%s before http.response.start" % kind)
        if self.response_done:
            if kind == "http.response.trailers" and not self.trailers:
                return   # the gateway did not agree TRAILERS: the body's END ended it
            raise RuntimeError("%s after the response is complete" % kind)
        try:
            if kind == "http.response.body":
                await self._send_body(message.get("body", b""), message.get("more_body", False))
            elif kind == "http.response.trailers":
                await self._send_trailers(message)
            elif kind == "http.response.pathsend":
                await self._send_pathsend(message["path"])
            else:
                raise RuntimeError("unexpected ASGI message %r on an http stream" % (kind,))
        except ConnectionError:
            self.end(cancel=False)   # the gateway went away: the app's sends go nowhere

    def _write_head(self, end):
        """The deferred http.response.start, as HTTP_RESPONSE. Deferred so that an empty
        response is a single frame, and so that a failure before any byte is a clean 500."""
        start = self.start
        want_trailers = bool(start.get("trailers", False))
        self.trailers = want_trailers and bool(self.conn.caps & P.CAP_TRAILERS)
        flags = P.FLAG_MORE if self.trailers else (P.FLAG_END if end else 0)
        headers = [(bytes(n), bytes(v)) for n, v in start.get("headers", ())]
        self.conn.write_frame(P.HttpResponse(self.id, flags, int(start["status"]), headers))
        self.head_sent = True
        if flags & P.FLAG_END:
            self._done()

    def _done(self):
        self.response_done = True
        self.wakeup.set()     # a receive() waiting for the end of the exchange
        self.maybe_finished()

    async def _send_body(self, body, more):
        body = bytes(body)
        if not self.head_sent:
            self._write_head(end=not body and not more)
            if self.response_done:
                return
        # END goes on the last DATA, unless TRAILERS will carry it
        end = not more and not self.trailers
        if body or end:
            await self._send_data(body, end)

    async def _send_data(self, body, end):
        """DATA frames within the gateway's credit and max_frame; waits for credit."""
        pos = 0
        size = len(body)
        while True:
            left = size - pos
            room = min(self.send_credit, self.conn.peer_max_frame)
            if left and room <= 0:
                self.credit_event.clear()
                await self.credit_event.wait()
                if self.ended:
                    return
                continue
            take = min(left, room)
            last = pos + take == size
            flags = P.FLAG_END if (end and last) else 0
            self.conn.write_data(self.id, flags, body[pos:pos + take])
            self.body_started = True
            self.send_credit -= take
            pos += take
            if flags:
                self._done()
            await self.conn.drain()   # backpressure: a slow gateway socket stops the app
            if last or self.ended:
                return

    async def _send_trailers(self, message):
        more = bool(message.get("more_trailers", False))
        if not self.start.get("trailers", False):
            raise RuntimeError("http.response.trailers without trailers: true in the start")
        if not self.head_sent:
            self._write_head(end=False)
        if not self.trailers:
            return    # the gateway did not agree TRAILERS: the body already ended
        headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        self.conn.write_frame(P.Trailers(self.id, P.FLAG_MORE if more else P.FLAG_END,
                                         headers))
        if not more:
            self._done()
        await self.conn.drain()

    async def _send_pathsend(self, path):
        if not os.path.isabs(path):
            raise RuntimeError("http.response.pathsend wants an absolute path, not %r" % path)
        if self.body_started:
            raise RuntimeError("http.response.pathsend after http.response.body")
        if not self.head_sent:
            self._write_head(end=False)
        # PATHSEND carries END, so it cannot be used when TRAILERS must end the stream
        if self.conn.caps & P.CAP_PATHSEND and not self.trailers:
            self.conn.write_frame(P.PathSend(self.id, P.FLAG_END, path))
            self._done()
            await self.conn.drain()
            return
        # Not agreed: send the file's bytes ourselves.
        with open(path, "rb") as f:
            while True:
                block = f.read(self.conn.peer_max_frame)
                await self._send_body(block, more=bool(block))
                if not block or self.ended:
                    return

    # -- the app's task ----------------------------------------------------------------

    async def run(self, app):
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            return       # RESET by the gateway, or the worker's drain ran out of time
        except Exception:
            if self.ended:
                log("%s: error in the app after the client went away\n%s", self.line,
                    traceback.format_exc().rstrip())
            else:
                log("%s: error in the app; %s\n%s", self.line,
                    "cutting the response" if self.head_sent else "answering 500",
                    traceback.format_exc().rstrip())
                self.fail()
        else:
            if not self.response_done and not self.ended:
                log("%s: the app returned without completing the response; %s", self.line,
                    "cutting it" if self.head_sent else "answering 500")
                self.fail()
        finally:
            self.app_done = True
            # credit for what the app left unread, so the rest of the upload can drain
            unread = self.body_bytes
            self.body.clear()
            self.body_bytes = 0
            self.give_credit(unread)
            self.conn.task_over(self)

    def fail(self):
        """Section 4.7: 500 before HTTP_RESPONSE, RESET INTERNAL after it."""
        if self.ended or self.response_done:
            return
        if self.head_sent:
            self.conn.write_frame(P.Reset(self.id, 0, P.INTERNAL))
            self.end(cancel=False)
        else:
            self.conn.write_frame(P.HttpResponse(
                self.id, P.FLAG_END, 500, [(b"content-length", b"0")]))
            self.head_sent = True
            self._done()


# --- one gateway connection ---------------------------------------------------------------


class _ConnError(Exception):
    """Internal: a connection error: GOAWAY with code, then close."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Connection:
    def __init__(self, worker, reader, writer):
        self.worker = worker
        self.opts = worker.opts
        self.app = worker.app
        self.reader = reader
        self.writer = writer
        self.decoder = P.FrameDecoder()
        self.streams = {}        # id -> HttpStream the protocol still routes frames to
        self.tasks = set()       # HttpStreams whose app task runs
        self.last_stream = 0
        self.caps = 0
        self.peer_max_frame = P.DEFAULT_MAX_FRAME
        self.peer_credit = 0
        self.out = []            # frames written since the last flush
        self.out_size = 0
        self.flush_scheduled = False
        self.ready = False       # the handshake is done
        self.draining = False    # GOAWAY NONE sent: finish the streams, then close
        self.closed = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    # -- writing: frames are collected and written once per loop turn ---------------------

    def write_frame(self, frame):
        self._out(P.encode(frame, self.peer_max_frame))

    def write_data(self, stream, flags, data):
        self._out(P.frame_header(P.DATA, flags, stream, len(data)))
        self._out(data)

    def _out(self, b):
        if self.writer.is_closing():
            return
        self.out.append(b)
        self.out_size += len(b)
        if self.out_size >= OUT_HIGH_WATER:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.flush_scheduled = False
        if self.out and not self.writer.is_closing():
            self.writer.writelines(self.out)
        self.out.clear()
        self.out_size = 0

    async def drain(self):
        """Waits while the transport holds more than its high-water mark, so that a slow
        gateway socket bounds this connection's memory. Raises ConnectionError when lost."""
        if self.out_size:
            self.flush()
        await self.writer.drain()

    # -- the scope -----------------------------------------------------------------------

    def build_scope(self, f):
        extensions = {}
        if self.caps & P.CAP_TRAILERS:
            extensions["http.response.trailers"] = {}
        if self.caps & P.CAP_PATHSEND:
            extensions["http.response.pathsend"] = {}
        return {
            "type": "http",
            "asgi": dict(ASGI_VERSION, version=self.worker.asgi_version),
            "http_version": f.http_version,
            "method": f.method,
            "scheme": f.scheme,
            "path": f.path,
            "raw_path": f.raw_path,
            "query_string": f.query_string,
            "root_path": f.root_path,
            "headers": [[n, v] for n, v in f.headers],
            "client": f.client,
            "server": f.server,
            "state": dict(self.worker.lifespan_state),   # shallow copy, as uvicorn does
            "extensions": extensions,
        }

    # -- the connection's life -----------------------------------------------------------

    async def serve(self):
        try:
            if await self.handshake():
                await self.read_loop()
        except _ConnError as e:
            log("connection error %s: %s; closing", P.ERROR_NAMES.get(e.code, e.code), e)
            self.write_frame(P.GoAway(0, 0, self.last_stream, e.code, str(e)[:200]))
        except (ConnectionError, OSError):
            pass
        finally:
            for s in list(self.streams.values()):
                s.end(cancel=False)     # the app sees http.disconnect; its sends are dropped
            self.flush()
            self.writer.close()
            # The connection is gone, but the apps' tasks may still run: the worker's drain
            # waits for them too (abort() cancels them when the graceful timeout is over).
            while self.tasks:
                await asyncio.wait([s.task for s in self.tasks])
            self.closed.set()

    async def handshake(self):
        """Section 3. False when the connection must close (already answered if need be)."""
        try:
            hello = await asyncio.wait_for(self._first_frame(), HANDSHAKE_TIMEOUT)
        except (asyncio.TimeoutError, P.ProtocolError):
            return False
        if not isinstance(hello, P.Hello) or hello.flags & P.FLAG_ACK or hello.stream:
            return False
        if hello.version != P.PROTOCOL_VERSION:
            log("gateway speaks protocol version %d, not %d; refusing", hello.version,
                P.PROTOCOL_VERSION)
            self.write_frame(P.GoAway(0, 0, 0, P.VERSION, str(P.PROTOCOL_VERSION)))
            return False
        if not P.DEFAULT_MAX_FRAME <= hello.max_frame <= P.MAX_PAYLOAD:
            raise _ConnError(P.PROTOCOL, "HELLO max_frame %d out of range" % hello.max_frame)
        if hello.initial_credit > P.MAX_CREDIT:
            raise _ConnError(P.FLOW, "HELLO initial_credit over 2^31-1")
        self.peer_max_frame = hello.max_frame
        self.peer_credit = hello.initial_credit
        self.caps = hello.capabilities & SUPPORTED_CAPS
        self.write_frame(P.Hello(0, P.FLAG_ACK, P.PROTOCOL_VERSION, self.opts.max_frame,
                                 self.opts.max_streams, self.opts.initial_credit, self.caps))
        self.decoder.max_frame = self.opts.max_frame
        self.ready = True
        if self.worker.draining:
            self.start_drain()
        return True

    async def _first_frame(self):
        while True:
            frame = self.decoder.next_frame()
            if frame is not P.NeedData:
                return frame
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise P.ProtocolError(P.PROTOCOL, "closed before HELLO")
            self.decoder.feed(data)

    async def read_loop(self):
        while True:
            self.process_frames()
            if self.writer.is_closing():
                return
            # Control answers (PING, CREDIT) are written from here: stop reading while the
            # gateway is not reading what we write, rather than buffer without bound.
            await self.drain()
            data = await self.reader.read(READ_SIZE)
            if not data:
                return
            self.decoder.feed(data)

    def process_frames(self):
        while True:
            try:
                frame = self.decoder.next_frame()
            except P.ProtocolError as e:
                self.on_bad_frame(e)
                continue
            if frame is P.NeedData:
                return
            self.on_frame(frame)

    def on_bad_frame(self, e):
        if e.fatal or not e.stream:
            raise _ConnError(e.code, str(e))
        if e.frame_type in (P.HTTP_REQUEST, P.WS_CONNECT):
            self.check_new_id(e.stream)
            self.write_frame(P.Reset(e.stream, 0, e.code))
        else:
            self.stream_error(e.stream, e.code, str(e))

    def check_new_id(self, sid):
        if sid <= self.last_stream:
            raise _ConnError(P.PROTOCOL, "stream id %d not above %d" % (sid, self.last_stream))
        self.last_stream = sid

    def stream_error(self, sid, code, message):
        s = self.streams.get(sid)
        if s is None:
            return        # a stream that has ended: late frames are dropped
        log("stream %d: %s; resetting it", sid, message)
        self.write_frame(P.Reset(sid, 0, code))
        s.end(cancel=True)

    def on_frame(self, f):
        t = f.type
        if t == P.HTTP_REQUEST:
            self.open_stream(f)
        elif t in (P.DATA, P.CREDIT, P.DISCONNECT, P.RESET):
            self.on_stream_frame(f)
        elif t == P.PING:
            if f.stream:
                raise _ConnError(P.PROTOCOL, "PING on stream %d" % f.stream)
            if not f.flags & P.FLAG_ACK:
                self.write_frame(P.Ping(0, P.FLAG_ACK, f.data))
        elif t == P.GOAWAY:
            if f.stream:
                raise _ConnError(P.PROTOCOL, "GOAWAY on stream %d" % f.stream)
            self.on_goaway(f)
        elif t == P.HELLO:
            raise _ConnError(P.PROTOCOL, "HELLO after the handshake")
        elif isinstance(f, P.Unknown):
            pass          # section 2: later versions' frames are ignored
        elif t == P.WS_CONNECT:
            self.check_new_id(f.stream)
            self.write_frame(P.Reset(f.stream, 0, P.PROTOCOL))  # WEBSOCKET was not agreed
        else:
            # app -> gateway frames coming the other way
            if not f.stream:
                raise _ConnError(P.PROTOCOL, "%s on stream 0" % P.TYPE_NAMES[t])
            self.stream_error(f.stream, P.PROTOCOL, "%s from the gateway" % P.TYPE_NAMES[t])

    def open_stream(self, f):
        if not f.stream:
            raise _ConnError(P.PROTOCOL, "HTTP_REQUEST on stream 0")
        self.check_new_id(f.stream)
        if self.draining or len(self.streams) >= self.opts.max_streams:
            # after our GOAWAY, or over max_streams: not processed, may be retried elsewhere
            self.write_frame(P.Reset(f.stream, 0, P.REFUSED))
            return
        s = HttpStream(self, f)
        self.streams[s.id] = s
        self.tasks.add(s)
        s.task = self.loop.create_task(s.run(self.app))

    def on_stream_frame(self, f):
        if not f.stream or f.stream > self.last_stream:
            raise _ConnError(P.PROTOCOL, "%s on stream %d, which was never opened"
                             % (P.TYPE_NAMES[f.type], f.stream))
        s = self.streams.get(f.stream)
        if s is None:
            return        # late frames for an ended stream
        t = f.type
        try:
            if t == P.DATA:
                s.on_data(f)
            elif t == P.CREDIT:
                s.on_credit(f)
            elif t == P.DISCONNECT:
                s.end(cancel=False)    # the app sees http.disconnect on its next receive()
            else:
                s.end(cancel=True)     # RESET: the stream is not wanted any more
        except _Flow as e:
            self.stream_error(s.id, e.code, str(e))

    def on_goaway(self, f):
        if f.error != P.NONE:
            log("gateway GOAWAY %s (%s); closing", P.ERROR_NAMES.get(f.error, f.error), f.debug)
            for s in list(self.streams.values()):
                s.end(cancel=True)
            self.writer.close()
        # GOAWAY NONE: the gateway drains; it opens no new streams and closes when done.

    # -- the end of streams and draining -------------------------------------------------

    def stream_over(self, s):
        self.streams.pop(s.id, None)
        self.check_drained()

    def task_over(self, s):
        self.tasks.discard(s)
        s.maybe_finished()
        self.check_drained()

    def start_drain(self):
        """Section 9: GOAWAY NONE with the last stream received; finish those, then close."""
        if self.draining or not self.ready:
            return    # before the handshake, handshake() itself drains once it is done
        self.draining = True
        self.write_frame(P.GoAway(0, 0, self.last_stream, P.NONE, "draining"))
        self.check_drained()

    def check_drained(self):
        if self.draining and not self.streams and not self.tasks:
            self.flush()
            self.writer.close()    # the read loop sees EOF and ends

    def abort(self):
        """The graceful timeout ran out: cancel what is left and close."""
        for s in list(self.tasks):
            if s.task is not None:
                s.task.cancel()
        self.flush()
        self.writer.close()


async def serve_connection(worker, reader, writer):
    conn = Connection(worker, reader, writer)
    worker.connections.add(conn)
    try:
        await conn.serve()
    finally:
        worker.connections.discard(conn)


# --- worker -------------------------------------------------------------------------------


class Worker:
    def __init__(self, listener, app, opts):
        self.listener = listener
        self.app, self.asgi_version = asgi3(app)
        self.opts = opts
        self.connections = set()
        self.draining = False
        self.lifespan_state = {}
        self.stop = None

    async def run(self):
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        lifespan = Lifespan(self.app, self.asgi_version)
        if not await lifespan.startup():
            return BOOT_FAILED
        self.lifespan_state = lifespan.state
        server = await asyncio.start_server(
            lambda r, w: serve_connection(self, r, w), sock=self.listener, limit=READ_SIZE)
        watchdog = loop.create_task(self.watch_master())
        log("worker booted (%s)", self.opts.app)
        self.booted()
        await self.stop.wait()
        watchdog.cancel()
        server.close()             # no more accepting here; other workers still may
        await self.drain()
        await lifespan.shutdown(self.opts.graceful_timeout)
        log("worker stopped")
        return 0

    def booted(self):
        pass      # replaced by the master's slot update

    async def watch_master(self):
        master = os.getppid()
        while os.getppid() == master:
            await asyncio.sleep(1.0)
        log("master went away; stopping")
        self.stop.set()

    async def drain(self):
        self.draining = True
        conns = list(self.connections)
        if conns:
            log("draining %d connections (up to %gs)", len(conns), self.opts.graceful_timeout)
        for c in conns:
            c.start_drain()
        waits = [asyncio.ensure_future(c.closed.wait()) for c in conns]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.opts.graceful_timeout)
            if pending:
                log("--graceful-timeout %gs reached; cancelling what is left",
                    self.opts.graceful_timeout)
                for c in list(self.connections):
                    c.abort()
                await asyncio.wait(pending, timeout=5)


def _event_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _worker_main(listener, slot, opts):
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the master decides; a ^C reaches it too
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    try:
        app = load_app(opts.app)
    except BaseException:
        log("cannot load %s\n%s", opts.app, traceback.format_exc().rstrip())
        return BOOT_FAILED
    worker = Worker(listener, app, opts)
    worker.booted = lambda: slot.set(0.0, 0, True)
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(worker.run())
    finally:
        loop.close()


# --- master -------------------------------------------------------------------------------


class Master:
    """Forks the workers after binding, restarts those that die, drains them on SIGTERM."""

    def __init__(self, opts, listener):
        self.opts = opts
        self.listener = listener
        self.workers = {}          # pid -> Slot
        self.sigs = None
        self.stop_deadline = None
        self.booted_once = False
        self.respawn_after = 0.0

    def spawn(self):
        slot = Slot()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.sigs.close_in_child()
                code = _worker_main(self.listener, slot, self.opts)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                log("worker crashed\n%s", traceback.format_exc().rstrip())
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.workers[pid] = slot

    def run(self):
        self.sigs = SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGCHLD))
        log("listening on %s with %d workers", self.describe(), self.opts.workers)
        for _ in range(self.opts.workers):
            self.spawn()
        while True:
            for s in self.sigs.wait(0.2):
                if s in (signal.SIGTERM, signal.SIGINT):
                    self.begin_stop(s)
            status = self.reap()
            if status is not None:
                return status
            if self.stop_deadline is not None:
                if not self.workers:
                    log("stopped")
                    return 0
                if time.monotonic() > self.stop_deadline:
                    log("workers still running past --graceful-timeout; killing them")
                    self.kill_all()
                continue
            missing = self.opts.workers - len(self.workers)
            if missing > 0 and time.monotonic() >= self.respawn_after:
                for _ in range(missing):
                    self.spawn()

    def describe(self):
        name = self.listener.getsockname()
        return "unix:" + name if isinstance(name, str) else "%s:%d" % name[:2]

    def begin_stop(self, signum):
        if self.stop_deadline is not None:
            if signum == signal.SIGINT:
                log("second SIGINT: killing the workers now")
                self.kill_all()
            return
        log("%s: draining %d workers (up to %gs)", signal.Signals(signum).name,
            len(self.workers), self.opts.graceful_timeout)
        # the workers need a little longer than their own graceful timeout for lifespan
        self.stop_deadline = time.monotonic() + self.opts.graceful_timeout + 5.0
        self.close_listener()     # new connections are refused, not left in the backlog
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill_all(self):
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self):
        """Collects exited workers; returns an exit status when the master must give up."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            booted = slot.get()[2]
            slot.close()
            self.booted_once = self.booted_once or booted
            if os.WIFSIGNALED(status):
                how = "killed by %s" % signal.Signals(os.WTERMSIG(status)).name
            else:
                how = "exited with status %d" % os.waitstatus_to_exitcode(status)
            if self.stop_deadline is not None:
                log("worker %d %s", pid, how)
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == BOOT_FAILED:
                if not self.booted_once:
                    log("worker %d could not start the app; giving up", pid)
                    self.kill_all()
                    self.wait_all()
                    return 1
                log("worker %d could not start the app; retrying in 1s", pid)
                self.respawn_after = time.monotonic() + 1.0
                continue
            log("worker %d died: %s; starting another", pid, how)

    def wait_all(self):
        for pid in list(self.workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.workers.clear()

    def close_listener(self):
        if self.listener.fileno() < 0:
            return
        name = self.listener.getsockname()
        if isinstance(name, str) and name:
            try:
                os.unlink(name)
            except OSError:
                pass
        self.listener.close()


def build_parser():
    p = argparse.ArgumentParser(
        prog="python3 -m gatehouse.asgi",
        description="Serve an ASGI app over the gatehouse ASGI protocol with pre-forked "
                    "asyncio workers.")
    p.add_argument("app", help="module:callable (default callable: application)")
    p.add_argument("--bind", "-b", required=True, help="unix:/path or HOST:PORT")
    p.add_argument("--workers", "-w", type=int, default=1)
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="how long SIGTERM waits for the streams in flight")
    p.add_argument("--max-streams", type=int, default=1000,
                   help="streams a gateway may keep open on one connection")
    p.add_argument("--max-frame", type=int, default=65536,
                   help="the largest frame payload accepted from the gateway")
    p.add_argument("--initial-credit", type=int, default=65536,
                   help="request body bytes the gateway may send per stream before credit")
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("--chdir", help="change to this directory before loading the app")
    return p


def main(argv=None):
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.workers < 1 or opts.max_streams < 1:
        parser.error("--workers and --max-streams must be at least 1")
    if not P.DEFAULT_MAX_FRAME <= opts.max_frame <= P.MAX_PAYLOAD:
        parser.error("--max-frame must be within 16384..16777215")
    if not 1 <= opts.initial_credit <= P.MAX_CREDIT:
        parser.error("--initial-credit must be within 1..2^31-1")
    return run_master(Master, opts)


if __name__ == "__main__":
    sys.exit(main())
