# SPDX-License-Identifier: MIT
"""Run an ASGI app as a master and N pre-forked asyncio workers speaking the gatehouse ASGI
message protocol (adapters/asgi/PROTOCOL.md): the app side listens, the gateway connects.

    python3 -m gatehouse.asgi module:app --bind unix:/run/app.sock | HOST:PORT --workers N
        [--graceful-timeout S] [--max-streams N] [--ws-max-size BYTES] [--chdir DIR]

The master binds the socket, forks the workers and supervises them: it restarts the ones
that die and drains them on SIGTERM/SIGINT. Each worker runs the app's lifespan startup, then
an asyncio loop (uvloop when importable) that accepts gateway connections. A connection
carries many streams; each HTTP_REQUEST (the `http` scope) and each WS_CONNECT (the
`websocket` scope, when the gateway offers WEBSOCKET) becomes a task running
`app(scope, receive, send)`.

The websocket scope follows the ASGI spec 2.4 (plus the disconnect `reason` that later
versions and uvicorn 0.30 add) and, where the spec leaves a choice, uvicorn:

- receive() gives websocket.connect, then one websocket.receive per whole message (WS_MESSAGE
  pieces joined), then websocket.disconnect with `code` and `reason` (the client's close from
  DISCONNECT; 1006 when the stream is reset or the connection lost; after the app's own
  close, its code). Messages that arrived before the close are handed over first.
- Credit for a message is given back when receive() takes it. The pieces of a message still
  incomplete are credited as they arrive while no whole message waits, so that a message
  larger than the credit can complete; --ws-max-size (16 MiB, as uvicorn) bounds it.
- We close the WebSocket ourselves with 1007 for a text message that is not UTF-8, 1009 for
  a message over --ws-max-size and 1012 when the worker drains (as uvicorn's shutdown); the
  app then gets websocket.disconnect with that code.
- Before websocket.accept, websocket.close refuses (the gateway answers 403) and
  websocket.http.response.start/.body send a denial response, as in the http scope
  ("websocket.http.response" is in the scope's extensions).
- The app failing before accept gets the client a 500 (a denial response already begun is
  cut); failing after it closes with 1011. Returning without accepting is a 500 too (uvicorn:
  "ASGI callable returned without sending handshake"); returning after accept without
  closing closes with 1000.
- Unlike in the http scope, where sends after the client went away are dropped (PROTOCOL.md
  section 4.6), send() raises ClientDisconnected, an OSError, once the WebSocket is closed
  under the app (spec 2.4; uvicorn raises too): an app that only pushes messages would
  otherwise never learn that nobody listens. A send after the app's own websocket.close (or
  after its denial response) is a RuntimeError, as in uvicorn.
- A reset stream does not cancel a websocket app (it does an http one): it sees the 1006.
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

__all__ = ["main", "serve_connection", "Lifespan", "ClientDisconnected"]

BOOT_FAILED = 3            # worker exit status: the app or its lifespan startup failed
HANDSHAKE_TIMEOUT = 10.0   # a gateway sends HELLO as soon as it connects
OUT_HIGH_WATER = 256 * 1024  # flush the connection's write buffer at once past this
ACCEPT_DELAY = 0.002          # a worker holding N connections tries to accept after N times this
ACCEPT_DELAY_MAX = 0.05
ACCEPT_PAUSE = 0.5            # after an accept error such as EMFILE
DRAIN_AT = 64 * 1024         # a send() waits for the gateway while more than this is unsent
READ_SIZE = 256 * 1024
SUPPORTED_CAPS = P.CAP_WEBSOCKET | P.CAP_TRAILERS | P.CAP_PATHSEND | P.CAP_TLS
SPEC_VERSION = "2.4"        # the ASGI spec version of the http and websocket scopes


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


# --- streams -------------------------------------------------------------------------------


class _Flow(Exception):
    """Internal: a stream error to answer with RESET (code)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ClientDisconnected(OSError):
    """Raised by a websocket send() once the WebSocket is closed under the app: the client
    closed it or vanished, the stream was reset, or we closed it (1007, 1009, 1012). ASGI
    spec 2.4 asks for a server-specific subclass of OSError; uvicorn's has this name."""


def _wake_all(waiters):
    """Wakes every future of the list |waiters| (or None); returns what replaces it (None)."""
    for f in waiters or ():
        if not f.done():
            f.set_result(None)


async def _wait_in(waiters, loop):
    """Waits on a future of its own in |waiters|. Several tasks may wait at once (Starlette
    polls receive() from a cancelled scope while another task waits in it): a shared future
    would be cancelled for them all."""
    f = loop.create_future()
    waiters.append(f)
    try:
        await f
    finally:
        if not f.done() or f.cancelled():
            try:
                waiters.remove(f)
            except ValueError:
                pass


class _Stream:
    """What both scopes share: the app's task, both credits, and the HTTP response writer (a
    websocket denial response is the http one, section 5.2). Subclasses define `line` (for
    the log), the gateway's events on_data(), on_message(), on_disconnect() and end(), then
    receive(), send(), maybe_finished(), give_credit() and app_returned()."""

    def __init__(self, conn, frame):
        self.conn = conn
        self.id = frame.stream
        self.scope = conn.build_scope(frame)
        # gateway -> app: DATA or WS_MESSAGE payloads the gateway may still send
        self.recv_credit = conn.opts.initial_credit
        # Lists of futures, made only when a task must wait (most requests never do):
        # receive() waits in _wakeup for the gateway's next event, a sender in _credit_wait
        # for CREDIT.
        self._wakeup = None
        # app -> gateway
        self.send_credit = conn.peer_credit
        self._credit_wait = None
        self.start = None            # the app's response start, until it is written
        self.head_sent = False       # HTTP_RESPONSE is on the wire
        self.trailers = False        # HTTP_RESPONSE had MORE: TRAILERS carries END
        self.body_started = False
        self.response_done = False   # END written
        self.ended = False           # DISCONNECT, RESET or a lost connection: stop here
        self.app_done = False
        self.task = None

    def wake(self):
        """Something for receive() arrived, or the stream ended."""
        self._wakeup = _wake_all(self._wakeup)

    async def sleep(self):
        """Waits for the next wake() (the caller checks its conditions again after)."""
        if self._wakeup is None:
            self._wakeup = []
        await _wait_in(self._wakeup, self.conn.loop)

    def credit_wake(self):
        self._credit_wait = _wake_all(self._credit_wait)

    @property
    def line(self):
        """The request for the log: made only when a line is written."""
        scope = self.scope
        target = scope["raw_path"].decode("latin-1") or scope["path"]
        if scope["type"] == "websocket":
            return "WebSocket " + target
        return "%s %s" % (scope["method"], target)

    def on_credit(self, frame):
        inc = frame.increment
        if inc == 0 or self.send_credit + inc > P.MAX_CREDIT:
            raise _Flow(P.FLOW, "bad CREDIT increment %d" % inc)
        self.send_credit += inc
        self.credit_wake()

    # -- the response ------------------------------------------------------------------

    def _write_head(self, end):
        """The deferred response start, as HTTP_RESPONSE. Deferred so that an empty response
        is a single frame, and so that a failure before any byte is a clean 500."""
        start = self.start
        want_trailers = bool(start.get("trailers", False))
        self.trailers = want_trailers and bool(self.conn.caps & P.CAP_TRAILERS)
        flags = P.FLAG_MORE if self.trailers else (P.FLAG_END if end else 0)
        self.conn._out(P.encode_http_response(self.id, flags, int(start["status"]),
                                              start.get("headers", ()),
                                              self.conn.peer_max_frame))
        self.head_sent = True
        if flags & P.FLAG_END:
            self._done()

    def _done(self):
        self.response_done = True
        self.wake()     # a receive() waiting for the end of the exchange
        self.maybe_finished()

    async def _send_body(self, body, more):
        if type(body) is not bytes:
            body = bytes(body)
        if (not self.head_sent and not more and body and not self.start.get("trailers") and
                len(body) <= self.send_credit and len(body) <= self.conn.peer_max_frame):
            # The common whole response: HTTP_RESPONSE and one DATA with END, one write.
            conn = self.conn
            conn._out(P.encode_http_response(self.id, 0, int(self.start["status"]),
                                             self.start.get("headers", ()),
                                             conn.peer_max_frame)
                      + P.frame_header(P.DATA, P.FLAG_END, self.id, len(body)) + body)
            self.head_sent = self.body_started = True
            self.send_credit -= len(body)
            self._done()
            await conn.drain()
            return
        if not self.head_sent:
            self._write_head(end=not body and not more)
            if self.response_done:
                return
        # END goes on the last DATA, unless TRAILERS will carry it
        end = not more and not self.trailers
        if body or end:
            self.body_started = True
            await self._send_frames(P.DATA, body, 0, 0, P.FLAG_END if end else 0)

    async def _send_frames(self, ftype, payload, flags, more, last):
        """|payload| as DATA or WS_MESSAGE frames within the gateway's credit and max_frame,
        waiting for CREDIT (section 6). Every frame has |flags|, all but the last add |more|
        and the last adds |last|; an empty payload is one empty frame. False when the stream
        ended before the last frame went out."""
        pos = 0
        size = len(payload)
        while True:
            left = size - pos
            room = min(self.send_credit, self.conn.peer_max_frame)
            if left and room <= 0:
                if self._credit_wait is None:
                    self._credit_wait = []
                await _wait_in(self._credit_wait, self.conn.loop)
                if self.ended:
                    return False
                continue
            take = min(left, room)
            final = pos + take == size
            self.conn.write_payload(ftype, self.id, flags | (last if final else more),
                                    payload[pos:pos + take])
            self.send_credit -= take
            pos += take
            if final and last & P.FLAG_END:
                self._done()
            await self.conn.drain()   # backpressure: a slow gateway socket stops the app
            if final or self.ended:
                return final

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

    def failure_action(self):
        """What fail() is about to do, for the log."""
        return "cutting the response" if self.head_sent else "answering 500"

    # -- the app's task ----------------------------------------------------------------

    async def run(self, app):
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            return       # RESET by the gateway, or the worker's drain ran out of time
        except ClientDisconnected:
            pass         # a websocket send() told the app the client is gone (uvicorn: quiet)
        except Exception:
            if self.ended:
                log("%s: error in the app after the client went away\n%s", self.line,
                    traceback.format_exc().rstrip())
            else:
                log("%s: error in the app; %s\n%s", self.line, self.failure_action(),
                    traceback.format_exc().rstrip())
                self.fail()
        else:
            self.app_returned()
        finally:
            self.app_done = True
            self.app_over()
            self.conn.task_over(self)

    def app_over(self):
        """The app's task is over, however it ended."""


class HttpStream(_Stream):
    """One HTTP_REQUEST: the http scope (section 4)."""

    def __init__(self, conn, frame):
        super().__init__(conn, frame)
        # request direction: DATA payloads queued until receive() hands them over
        self.body = collections.deque()
        self.body_bytes = 0
        self.request_done = bool(frame.flags & P.FLAG_END)  # END seen from the gateway
        self.eof_given = False       # receive() has handed over the more_body False event

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
            self.wake()
        self.maybe_finished()

    def on_message(self, frame):
        raise _Flow(P.PROTOCOL, "WS_MESSAGE on an http stream")

    def on_disconnect(self, frame):
        self.end(cancel=False)       # the app sees http.disconnect on its next receive()

    def end(self, cancel):
        """The stream is over (DISCONNECT, RESET, connection lost): sends become no-ops and
        receive() says http.disconnect. A RESET also cancels the app (cancel=True)."""
        if self.ended:
            return
        self.ended = True
        self.wake()
        self.credit_wake()
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
            await self.sleep()

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

    # -- the end of the app ------------------------------------------------------------

    def app_returned(self):
        if not self.response_done and not self.ended:
            log("%s: the app returned without completing the response; %s", self.line,
                "cutting it" if self.head_sent else "answering 500")
            self.fail()

    def app_over(self):
        # credit for what the app left unread, so the rest of the upload can drain
        unread = self.body_bytes
        self.body.clear()
        self.body_bytes = 0
        self.give_credit(unread)


class WebSocketStream(_Stream):
    """One WS_CONNECT: the websocket scope (section 5). Before WS_ACCEPT the app may instead
    refuse (WS_CLOSE, the gateway answers 403) or deny with an HTTP response; after it,
    messages go both ways until WS_CLOSE from the app or DISCONNECT/RESET from the gateway."""

    def __init__(self, conn, frame):
        super().__init__(conn, frame)
        self.connect_given = False   # receive() has handed over websocket.connect
        self.accepted = False        # WS_ACCEPT is on the wire
        # gateway -> app: whole messages as (event key, value, bytes not yet credited)
        self.messages = collections.deque()
        self.pieces = []             # the message being received, until a piece without MORE
        self.pieces_text = False
        self.pieces_size = 0
        self.pieces_uncredited = 0
        # what websocket.disconnect says once the WebSocket is closed: 1006 unless the
        # client's close, the app's own or ours tells otherwise
        self.close_code = 1006
        self.close_reason = ""
        # Apps often send from several tasks (a broadcast and a reply): one message's pieces
        # must not interleave with another's while it waits for credit.
        self.send_lock = asyncio.Lock()

    # -- events from the gateway -------------------------------------------------------

    def on_data(self, frame):
        raise _Flow(P.PROTOCOL, "DATA on a websocket stream")

    def on_message(self, frame):
        if not self.accepted:
            raise _Flow(P.PROTOCOL, "WS_MESSAGE before WS_ACCEPT")
        data = frame.data
        n = len(data)
        if n > self.recv_credit:
            raise _Flow(P.FLOW, "WS_MESSAGE of %d bytes over the credit %d"
                        % (n, self.recv_credit))
        self.recv_credit -= n
        text = bool(frame.flags & P.FLAG_TEXT)
        if not self.pieces:
            self.pieces_text = text
        elif text != self.pieces_text:
            raise _Flow(P.PROTOCOL, "the TEXT flag changed within a message")
        self.pieces.append(data)
        self.pieces_size += n
        self.pieces_uncredited += n
        if self.pieces_size > self.conn.opts.ws_max_size:
            log("%s: a message over --ws-max-size %d; closing with 1009", self.line,
                self.conn.opts.ws_max_size)
            self.close_by_server(1009, "message too big")
            return
        if frame.flags & P.FLAG_MORE:
            if not self.messages:
                # The app cannot take half a message, so its pieces are credited as they
                # come (--ws-max-size bounds them); else a message larger than the credit
                # would never complete. While whole messages wait, receive() credits them.
                self.give_credit(self.pieces_uncredited)
                self.pieces_uncredited = 0
            return
        payload = b"".join(self.pieces) if len(self.pieces) != 1 else data
        uncredited = self.pieces_uncredited
        self.pieces = []
        self.pieces_size = 0
        self.pieces_uncredited = 0
        if text:
            try:
                self.messages.append(("text", payload.decode("utf-8"), uncredited))
            except UnicodeDecodeError:
                log("%s: a text message is not UTF-8; closing with 1007", self.line)
                self.close_by_server(1007, "invalid UTF-8")
                return
        else:
            self.messages.append(("bytes", payload, uncredited))
        self.wake()

    def on_disconnect(self, frame):
        self._closed(frame.code, frame.reason)

    def end(self, cancel):
        """The stream was reset or its connection lost. |cancel| is for http streams: a
        websocket app is not cancelled but, as with a client that vanishes under uvicorn,
        gets websocket.disconnect 1006 from receive() and ClientDisconnected from send()."""
        self._closed(1006, "")

    def _closed(self, code, reason):
        if self.ended:
            return
        self.ended = True
        self.close_code = code
        self.close_reason = reason
        self.wake()
        self.credit_wake()
        self.maybe_finished()

    def close_by_server(self, code, reason):
        """Close the client's WebSocket ourselves (a bad message, draining): the app sees
        websocket.disconnect with that code, and its sends raise ClientDisconnected."""
        self.conn.write_frame(P.WsClose(self.id, P.FLAG_END, code, reason))
        self.response_done = True
        self._closed(code, reason)

    def maybe_finished(self):
        """Drop the stream once closed either way: after the app's WS_CLOSE, whatever the
        gateway still sends for it (a last message, the client's DISCONNECT) is late."""
        if self.ended or self.response_done:
            self.conn.stream_over(self)

    def give_credit(self, n):
        if n and not self.ended and not self.response_done:
            self.recv_credit += n
            self.conn.write_frame(P.Credit(self.id, 0, n))

    # -- receive() ---------------------------------------------------------------------

    async def receive(self):
        if not self.connect_given:
            self.connect_given = True
            return {"type": "websocket.connect"}
        while True:
            # messages that arrived before the close are still handed over, as the
            # websockets library that uvicorn uses does
            if self.messages:
                key, value, n = self.messages.popleft()
                if not self.messages:
                    n += self.pieces_uncredited    # held back while messages waited
                    self.pieces_uncredited = 0
                self.give_credit(n)
                return {"type": "websocket.receive", key: value}
            if self.ended or self.response_done:
                return {"type": "websocket.disconnect", "code": self.close_code,
                        "reason": self.close_reason}
            await self.sleep()

    # -- send() ------------------------------------------------------------------------

    async def send(self, message):
        kind = message["type"]
        async with self.send_lock:
            self._check_open(kind)
            try:
                if self.accepted:
                    await self._send_open(kind, message)
                elif self.start is not None:
                    await self._send_denial(kind, message)
                else:
                    await self._send_handshake(kind, message)
            except ConnectionError:
                self.end(cancel=False)
                self._check_ended(kind)

    def _check_open(self, kind):
        self._check_ended(kind)
        if self.response_done:
            raise RuntimeError("%s after websocket.close or the end of the response" % kind)

    def _check_ended(self, kind):
        if self.ended:
            raise ClientDisconnected("%s: the WebSocket is closed (%d)"
                                     % (kind, self.close_code))

    async def _send_handshake(self, kind, message):
        if kind == "websocket.accept":
            headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
            self.conn.write_frame(P.WsAccept(self.id, 0, message.get("subprotocol"), headers))
            self.accepted = True
            if self.conn.draining:
                self.close_by_server(1012, "service restart")
            await self.conn.drain()
        elif kind == "websocket.close":
            await self._send_close(message)      # before WS_ACCEPT: the gateway answers 403
        elif kind == "websocket.http.response.start":
            # kept for the first body, as in the http scope; a denial has no trailers
            self.start = {"status": message["status"], "headers": message.get("headers", ())}
        else:
            raise RuntimeError("expected websocket.accept, websocket.close or "
                               "websocket.http.response.start, not %r" % (kind,))

    async def _send_denial(self, kind, message):
        if kind != "websocket.http.response.body":
            raise RuntimeError("expected websocket.http.response.body, not %r" % (kind,))
        await self._send_body(message.get("body", b""), message.get("more_body", False))
        self._check_ended(kind)   # the client went away before the body went out

    async def _send_open(self, kind, message):
        if kind == "websocket.send":
            data = message.get("bytes")
            flags = 0
            if data is None:
                text = message.get("text")
                if text is None:
                    raise RuntimeError("websocket.send with neither bytes nor text")
                data = text.encode("utf-8")
                flags = P.FLAG_TEXT
            if not await self._send_frames(P.WS_MESSAGE, bytes(data), flags, P.FLAG_MORE, 0):
                self._check_ended(kind)
        elif kind == "websocket.close":
            await self._send_close(message)
        else:
            raise RuntimeError("expected websocket.send or websocket.close, not %r" % (kind,))

    async def _send_close(self, message):
        code = message.get("code", 1000)
        reason = message.get("reason") or ""
        self.conn.write_frame(P.WsClose(self.id, P.FLAG_END, code, reason))
        if self.accepted:
            self.close_code = code
            self.close_reason = reason
        self._done()
        await self.conn.drain()

    # -- the end of the app ------------------------------------------------------------

    def fail(self):
        """An error in the app: close 1011 once accepted; before, as in the http scope."""
        if self.accepted and not self.ended and not self.response_done:
            self.conn.write_frame(P.WsClose(self.id, P.FLAG_END, 1011, ""))
            self._done()
        else:
            super().fail()

    def failure_action(self):
        return "closing with 1011" if self.accepted else super().failure_action()

    def app_returned(self):
        if self.response_done or self.ended:
            return
        if self.accepted:
            # a normal closure, as the websockets library does when uvicorn's handler returns
            self.conn.write_frame(P.WsClose(self.id, P.FLAG_END, 1000, ""))
            self._done()
            return
        log("%s: the app returned without %s; %s", self.line,
            "completing the response" if self.start is not None else "accepting",
            self.failure_action())
        self.fail()


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
        self.transport = writer.transport
        self.decoder = P.FrameDecoder()
        self.streams = {}        # id -> HttpStream or WebSocketStream still routed frames
        self.tasks = set()       # streams whose app task runs
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

    def write_payload(self, ftype, stream, flags, data):
        """A DATA or WS_MESSAGE frame, its payload written without joining it to the header."""
        self._out(P.frame_header(ftype, flags, stream, len(data)))
        self._out(data)

    def _out(self, b):
        if self.transport.is_closing():
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
        if self.out and not self.transport.is_closing():
            self.transport.writelines(self.out)
        self.out.clear()
        self.out_size = 0

    async def drain(self):
        """Waits while the transport holds more than its high-water mark, so that a slow
        gateway socket bounds this connection's memory. Raises ConnectionError when lost."""
        # What is queued goes out with the loop turn's flush (one write for every stream's
        # frames of the turn) unless it is a lot already.
        if self.out_size >= DRAIN_AT:
            self.flush()
        # Most calls find room: awaiting StreamWriter.drain() only when the transport is
        # over its high-water mark (or closing, to raise) saves a coroutine per send.
        if self.transport.is_closing() or self.transport.get_write_buffer_size() > DRAIN_AT:
            await self.writer.drain()

    # -- the scope -----------------------------------------------------------------------

    def build_scope(self, f):
        """The http scope of an HttpRequest, or the websocket scope of a WsConnect."""
        extensions = {}
        scope = {
            "type": "http",
            "asgi": {"version": self.worker.asgi_version, "spec_version": SPEC_VERSION},
            "http_version": f.http_version,
            "scheme": f.scheme,
            "path": f.path,
            "raw_path": f.raw_path,
            "query_string": f.query_string,
            "root_path": f.root_path,
            "headers": f.headers,      # (name, value) tuples, as uvicorn gives them
            "client": f.client,
            "server": f.server,
            "state": dict(self.worker.lifespan_state),   # shallow copy, as uvicorn does
            "extensions": extensions,
        }
        t = f.tls
        if t is not None and t.present:
            # https://asgi.readthedocs.io/en/latest/specs/tls.html
            extensions["tls"] = {
                "server_cert": None,
                "client_cert_chain": [t.client_cert] if t.client_cert else [],
                "client_cert_name": t.client_cert_name or None,
                "client_cert_error": t.client_cert_error or None,
                "tls_version": t.version,
                "cipher_suite": t.cipher_suite,
            }
        if f.type == P.WS_CONNECT:
            scope["type"] = "websocket"
            scope["subprotocols"] = f.subprotocols
            # a denial response is part of section 5.2, so it comes with WEBSOCKET
            extensions["websocket.http.response"] = {}
            return scope
        scope["method"] = f.method
        if self.caps & P.CAP_TRAILERS:
            extensions["http.response.trailers"] = {}
        if self.caps & P.CAP_PATHSEND:
            extensions["http.response.pathsend"] = {}
        return scope

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
                s.end(cancel=False)     # the app sees the disconnect on its next receive()
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
        self.decoder.tls = bool(self.caps & P.CAP_TLS)
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
            self.open_stream(f, HttpStream)
        elif t == P.WS_CONNECT and self.caps & P.CAP_WEBSOCKET:
            self.open_stream(f, WebSocketStream)
        elif t in (P.DATA, P.WS_MESSAGE, P.CREDIT, P.DISCONNECT, P.RESET):
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

    def open_stream(self, f, kind):
        if not f.stream:
            raise _ConnError(P.PROTOCOL, "%s on stream 0" % P.TYPE_NAMES[f.type])
        self.check_new_id(f.stream)
        if self.draining or len(self.streams) >= self.opts.max_streams:
            # after our GOAWAY, or over max_streams: not processed, may be retried elsewhere
            self.write_frame(P.Reset(f.stream, 0, P.REFUSED))
            return
        s = kind(self, f)
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
            elif t == P.WS_MESSAGE:
                s.on_message(f)
            elif t == P.CREDIT:
                s.on_credit(f)
            elif t == P.DISCONNECT:
                s.on_disconnect(f)
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
        # A WebSocket may stay open for hours: close the accepted ones now (1012, as uvicorn
        # does on shutdown) rather than hold the drain until --graceful-timeout cuts them.
        # One accepted later is closed as soon as it is (WebSocketStream._send_handshake).
        for s in list(self.streams.values()):
            if isinstance(s, WebSocketStream) and s.accepted:
                s.close_by_server(1012, "service restart")
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
        self.loop = None
        self.accepting = True

    async def run(self):
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        lifespan = Lifespan(self.app, self.asgi_version)
        if not await lifespan.startup():
            return BOOT_FAILED
        self.lifespan_state = lifespan.state
        self.loop = loop
        self.listener.setblocking(False)
        loop.add_reader(self.listener.fileno(), self.acceptable)
        watchdog = loop.create_task(self.watch_master())
        log("worker booted (%s)", self.opts.app)
        self.booted()
        await self.stop.wait()
        watchdog.cancel()
        self.accepting = False     # no more accepting here; other workers still may
        loop.remove_reader(self.listener.fileno())
        await self.drain()
        await lifespan.shutdown(self.opts.graceful_timeout)
        log("worker stopped")
        return 0

    def booted(self):
        pass      # replaced by the master's slot update

    # -- accepting: the gateway's few long-lived connections spread over the workers ----------
    #
    # Every worker watches the shared listening socket. A gateway opens its connections in a
    # burst, and a worker that accepted all it could at once (as asyncio's servers do) would
    # get them all and leave the others idle. So a worker accepts one connection per try,
    # and one that already has connections tries later, the more it has the later: the
    # worker with the fewest usually wins the next one.

    def acceptable(self):
        n = len(self.connections)
        if n and self.accepting:
            self.loop.remove_reader(self.listener.fileno())
            self.loop.call_later(min(ACCEPT_DELAY_MAX, ACCEPT_DELAY * n), self.accept_later)
            return
        self.accept_one()

    def accept_later(self):
        if self.accepting and self.listener.fileno() >= 0:
            self.loop.add_reader(self.listener.fileno(), self.acceptable)
            self.accept_one()

    def accept_one(self):
        fd = self.listener.fileno()
        if not self.accepting or fd < 0:
            return
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            # Out of file descriptors the socket stays readable: pause instead of spinning.
            log("accept: %s; not accepting for %gs", e, ACCEPT_PAUSE)
            self.loop.remove_reader(fd)
            self.loop.call_later(ACCEPT_PAUSE, self.accept_later)
            return
        sock.setblocking(False)
        self.loop.create_task(self.start_connection(sock))

    async def start_connection(self, sock):
        reader = asyncio.StreamReader(limit=READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(
            reader, lambda r, w: serve_connection(self, r, w))
        try:
            await self.loop.connect_accepted_socket(lambda: protocol, sock)
        except OSError:
            sock.close()

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
                   help="request body or WebSocket message bytes the gateway may send per "
                        "stream before credit")
    p.add_argument("--ws-max-size", type=int, default=16 * 1024 * 1024,
                   help="the largest WebSocket message accepted from a client (larger ones "
                        "close the WebSocket with 1009)")
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
    if opts.ws_max_size < 1:
        parser.error("--ws-max-size must be at least 1")
    return run_master(Master, opts)


if __name__ == "__main__":
    sys.exit(main())
