# SPDX-License-Identifier: MIT
"""A small raw-frame HTTP/2 client (RFC 9113) for the integration tests, over a plain socket
(h2c by prior knowledge) or TLS (ALPN h2). HPACK is python3-hpack (python3-h2's codec).

Why not h2.connection.H2Connection: its state machine refuses every frame after a GOAWAY
(ConnectionState.CLOSED), so it cannot see a graceful shutdown (GOAWAY, then the streams in
flight finish), and it refuses to put on the wire the malformed input the conformance tests
need. Here every frame is the test's to write (frame(), send_raw()), and every frame that
arrives is parsed strictly, logged in .frames and applied to per-stream state:

    c = H2Client(port)                  # preface + SETTINGS sent, nothing read yet
    s = c.get("/echo")                  # a Stream: .status, .headers, .body, .trailers
    sid = c.request("POST", "/sink", body=data)
    s = c.response(sid)

Flow control: received DATA is given back with WINDOW_UPDATE at once (auto_window=True, the
default), or never (auto_window=False: then the test opens windows itself); sent DATA waits
for the peer's windows (send_data), or ignores them (send_data_raw, frame()).

Nothing blocks without a deadline: every wait has a timeout and raises H2Timeout."""

import os
import select
import socket
import ssl
import struct
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
               5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE",
               9: "CONTINUATION"}
# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, \
    STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, \
    CONNECT_ERROR, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR",
               3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED",
               6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
               9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
               12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}

# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, \
    MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = range(1, 7)
ENABLE_CONNECT_PROTOCOL = 8

DEFAULT_TIMEOUT = 10.0
CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                       "upgrade"}


def err_name(code):
    return ERROR_NAMES.get(code, hex(code) if code is not None else "None")


class H2Timeout(AssertionError):
    pass


class H2Closed(AssertionError):
    """The connection ended (EOF or reset) where more was expected."""


def frame(ftype, flags=0, stream_id=0, payload=b""):
    """The bytes of one frame, anything allowed (stream 0 DATA, oversized, reserved bit)."""
    payload = bytes(payload)
    n = len(payload)
    return struct.pack("!BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def settings_payload(settings):
    return b"".join(struct.pack("!HI", k, v) for k, v in dict(settings).items())


class Frame:
    __slots__ = ("type", "flags", "stream_id", "payload", "time")

    def __init__(self, ftype, flags, stream_id, payload):
        self.type, self.flags, self.stream_id, self.payload = ftype, flags, stream_id, payload
        self.time = time.monotonic()

    def __repr__(self):
        extra = ""
        if self.type == GOAWAY and len(self.payload) >= 8:
            last, code = struct.unpack("!II", self.payload[:8])
            extra = " last=%d %s %r" % (last & 0x7FFFFFFF, err_name(code), self.payload[8:80])
        elif self.type == RST_STREAM and len(self.payload) == 4:
            extra = " " + err_name(struct.unpack("!I", self.payload)[0])
        return "<%s flags=%#x sid=%d len=%d%s>" % (FRAME_NAMES.get(self.type, self.type),
                                                   self.flags, self.stream_id,
                                                   len(self.payload), extra)


class Stream:
    """One stream's response side: status and headers (names as sent, values latin-1 str),
    interim (1xx) heads, body, trailers, pieces [(arrival time, bytes)] of DATA, ended
    (END_STREAM seen), reset (the RST_STREAM error code, or None)."""

    def __init__(self, sid):
        self.id = sid
        self.headers = None
        self.interim = []
        self.trailers = None
        self.data = bytearray()
        self.pieces = []
        self.ended = False
        self.reset = None
        self.read_pos = 0            # for StreamSocket
        self.local_ended = False
        self.head_time = None

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def status(self):
        v = self.header(":status")
        return int(v) if v is not None else None

    @property
    def body(self):
        return bytes(self.data)

    def header(self, name):
        for k, v in self.headers or []:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers or [] if k.lower() == name.lower()]

    def trailer(self, name):
        for k, v in self.trailers or []:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        import json
        return json.loads(bytes(self.data))

    def __repr__(self):
        return "<Stream %d status=%s headers=%r body=%r%s ended=%s reset=%s trailers=%r>" % (
            self.id, self.status, self.headers, bytes(self.data[:200]),
            "..." if len(self.data) > 200 else "", self.ended, err_name(self.reset)
            if self.reset is not None else None, self.trailers)


class H2Client:
    """One client connection. |settings|: the client's SETTINGS (dict id -> value; by default
    push off and a 4 MiB stream window); |conn_window|: the connection window the client
    opens at the start (WINDOW_UPDATE on stream 0 up to this); |tls|: an ssl.SSLContext (ALPN
    h2 is set on it when it has none); |start|: send the preface and SETTINGS now."""

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, settings=None,
                 conn_window=16 << 20, auto_window=True, tls=None, server_hostname=None,
                 start=True, rcvbuf=None, sock=None):
        self.timeout = timeout
        if sock is None:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                 socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
            except OSError:
                sock.close()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=server_hostname or "localhost")
        self.sock = sock
        self.alpn = sock.selected_alpn_protocol() if isinstance(sock, ssl.SSLSocket) else None
        self.buf = bytearray()
        self.eof = False
        self.frames = []             # every frame received, in order
        self.streams = {}
        self.goaways = []            # (last_stream_id, error_code, debug data)
        self.remote_settings = {}
        self.remote_settings_frames = 0
        self.settings_acks = 0
        self.ping_acks = []
        self.violations = []         # what the server got wrong in its headers
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.auto_window = auto_window
        self.auto_settings_ack = True
        self.auto_ping_ack = True
        self.send_conn_window = 65535
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.send_windows = {}
        self.recv_conn_window = 65535
        self.received_data = 0
        self.next_sid = 1
        self._block = None           # (stream id, END_STREAM, [fragments]) of an open block
        self.local_settings = {ENABLE_PUSH: 0, INITIAL_WINDOW_SIZE: 4 << 20}
        if settings:
            self.local_settings.update(settings)
        self.conn_window = conn_window
        if start:
            self.start()

    # ---- lifetime -------------------------------------------------------------------------

    def start(self):
        out = PREFACE + frame(SETTINGS, 0, 0, settings_payload(self.local_settings))
        if self.conn_window and self.conn_window > 65535:
            out += frame(WINDOW_UPDATE, 0, 0, struct.pack("!I", self.conn_window - 65535))
            self.recv_conn_window = self.conn_window
        self.send_raw(out)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Closes TCP with a reset."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    # ---- bytes out ------------------------------------------------------------------------

    def send_raw(self, data):
        """Sends bytes as they are. Returns False when the peer has gone (EPIPE, reset)."""
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            return False
        except socket.timeout:
            raise H2Timeout("send timed out")

    def send_frame(self, ftype, flags=0, stream_id=0, payload=b""):
        return self.send_raw(frame(ftype, flags, stream_id, payload))

    def new_stream_id(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def encode(self, headers):
        """HPACK block of [(name, value)] (str or bytes), names as given (no lower-casing)."""
        hs = [(k.encode("latin-1") if isinstance(k, str) else k,
               v.encode("latin-1") if isinstance(v, str) else v) for k, v in headers]
        return self.encoder.encode(hs)

    def send_headers(self, sid, headers, end_stream=False, fragment=None, block=None):
        """HEADERS (+ CONTINUATIONs when the block is longer than |fragment| or than the
        peer's max frame size). |block|: an already encoded header block."""
        if block is None:
            block = self.encode(headers)
        size = fragment or self.peer_max_frame
        parts = [block[i:i + size] for i in range(0, len(block), size)] or [b""]
        out = []
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if i == 0:
                fl = (END_STREAM if end_stream else 0) | (END_HEADERS if last else 0)
                out.append(frame(HEADERS, fl, sid, p))
            else:
                out.append(frame(CONTINUATION, END_HEADERS if last else 0, sid, p))
        self.streams.setdefault(sid, Stream(sid))
        self.send_windows.setdefault(sid, self.peer_initial_window)
        if end_stream:
            self.streams[sid].local_ended = True
        return self.send_raw(b"".join(out))

    def request_headers(self, method, path, authority="app.test", scheme="http", headers=()):
        return [(":method", method), (":scheme", scheme), (":authority", authority),
                (":path", path)] + list(headers)

    def request(self, method="GET", path="/", headers=(), body=None, authority="app.test",
                scheme="http", end_stream=None, raw_headers=None, sid=None):
        """Opens a stream: HEADERS (|raw_headers| as they are, or the pseudo-headers and
        |headers|), then |body| under flow control. |end_stream| (default: True unless a
        body or end_stream=False) ends the request. Returns the stream id."""
        sid = sid or self.new_stream_id()
        hs = raw_headers if raw_headers is not None else \
            self.request_headers(method, path, authority, scheme, headers)
        if end_stream is None:
            end_stream = True
        self.send_headers(sid, hs, end_stream=end_stream and body is None)
        if body is not None:
            self.send_data(sid, body, end_stream=end_stream)
        return sid

    def send_data(self, sid, data, end_stream=False, timeout=None):
        """Sends |data| on |sid| as the peer's windows allow (waiting for WINDOW_UPDATEs).
        Returns the bytes sent (less than len(data) if the stream or connection ended)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        mv = memoryview(bytes(data))
        off = 0
        s = self.streams.setdefault(sid, Stream(sid))
        self.send_windows.setdefault(sid, self.peer_initial_window)
        while off < len(mv):
            avail = min(self.send_conn_window, self.send_windows[sid], self.peer_max_frame,
                        len(mv) - off)
            if avail <= 0:
                if s.reset is not None or self.eof:
                    return off
                self.pump(deadline - time.monotonic(), what="a WINDOW_UPDATE for stream %d "
                          "(%d of %d bytes sent)" % (sid, off, len(mv)))
                continue
            last = off + avail == len(mv)
            if not self.send_raw(frame(DATA, END_STREAM if (last and end_stream) else 0, sid,
                                       mv[off:off + avail])):
                return off
            self.send_conn_window -= avail
            self.send_windows[sid] -= avail
            off += avail
            # Take what arrived meanwhile (window updates, resets) without blocking.
            while self.readable(0):
                if not self._read_once(time.monotonic() + 1):
                    break
        if end_stream:
            if not len(mv):
                self.send_raw(frame(DATA, END_STREAM, sid))
            s.local_ended = True
        return off

    def send_data_raw(self, sid, data, end_stream=False, padding=None):
        """One DATA frame, whatever the windows say."""
        fl = END_STREAM if end_stream else 0
        payload = bytes(data)
        if padding is not None:
            fl |= PADDED
            payload = bytes([padding]) + payload + b"\0" * padding
        self.send_conn_window -= len(payload)
        if sid in self.send_windows:
            self.send_windows[sid] -= len(payload)
        return self.send_raw(frame(DATA, fl, sid, payload))

    def end_stream(self, sid):
        self.streams.setdefault(sid, Stream(sid)).local_ended = True
        return self.send_raw(frame(DATA, END_STREAM, sid))

    def send_trailers(self, sid, headers):
        return self.send_headers(sid, headers, end_stream=True)

    def reset(self, sid, code=CANCEL):
        return self.send_raw(frame(RST_STREAM, 0, sid, struct.pack("!I", code)))

    def ping(self, data=b"12345678", ack=False):
        return self.send_raw(frame(PING, ACK if ack else 0, 0, data))

    def settings(self, settings=None):
        return self.send_raw(frame(SETTINGS, 0, 0, settings_payload(settings or {})))

    def window_update(self, sid, inc):
        if sid == 0:
            self.recv_conn_window += inc
        return self.send_raw(frame(WINDOW_UPDATE, 0, sid, struct.pack("!I", inc)))

    def priority(self, sid, dep=0, weight=16, exclusive=False):
        return self.send_raw(frame(PRIORITY, 0, sid, struct.pack(
            "!IB", dep | (0x80000000 if exclusive else 0), weight - 1)))

    def goaway(self, last=0, code=NO_ERROR):
        return self.send_raw(frame(GOAWAY, 0, 0, struct.pack("!II", last, code)))

    # ---- bytes in -------------------------------------------------------------------------

    def readable(self, wait=0.0):
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            r, _, _ = select.select([self.sock], [], [], wait)
        except (ValueError, OSError):
            return False
        return bool(r)

    def _read_once(self, deadline):
        """One recv; frames parsed and applied. False at EOF."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise H2Timeout("read timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise H2Timeout("read timed out")
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
        except ssl.SSLError:
            data = b""
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        self._parse()
        return True

    def pump(self, timeout=None, what="data"):
        """Reads once (waiting at most |timeout|). False at EOF."""
        t = self.timeout if timeout is None else timeout
        try:
            return self._read_once(time.monotonic() + max(t, 0.001))
        except H2Timeout:
            raise H2Timeout("timed out after %.1fs waiting for %s; frames so far: %r"
                            % (t, what, self.frames[-12:]))

    def wait(self, pred, timeout=None, what="condition"):
        """Reads until pred() is true; returns its value. Raises H2Timeout, or H2Closed when
        the connection ends first."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            v = pred()
            if v:
                return v
            if self.eof:
                raise H2Closed("connection closed while waiting for %s; last frames: %r"
                               % (what, self.frames[-12:]))
            try:
                self._read_once(deadline)
            except H2Timeout:
                v = pred()
                if v:
                    return v
                raise H2Timeout("timed out after %.1fs waiting for %s; last frames: %r"
                                % (t, what, self.frames[-12:]))

    def drain(self, wait=0.2):
        """Reads whatever arrives within |wait| s (no error on silence). False at EOF."""
        deadline = time.monotonic() + wait
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not self.readable(left):
                break
            self._read_once(time.monotonic() + 1)
        return not self.eof

    def response(self, sid, timeout=None):
        """Waits until stream |sid| ended or was reset; returns its Stream."""
        s = self.streams.setdefault(sid, Stream(sid))
        self.wait(lambda: s.done, timeout, "the end of stream %d" % sid)
        return s

    def head(self, sid, timeout=None):
        """Waits for stream |sid|'s final response head (or its reset)."""
        s = self.streams.setdefault(sid, Stream(sid))
        self.wait(lambda: s.headers is not None or s.done, timeout,
                  "the response head on stream %d" % sid)
        return s

    def get(self, path, timeout=None, **kw):
        return self.response(self.request("GET", path, **kw), timeout)

    def wait_settings(self, timeout=None):
        """Waits for the server's first SETTINGS frame; returns the settings."""
        self.wait(lambda: self.remote_settings_frames > 0, timeout, "the server's SETTINGS")
        return self.remote_settings

    def wait_goaway(self, timeout=None):
        """Waits for a GOAWAY (EOF first is an H2Closed). Returns (last_stream_id, code,
        debug) of the last one received."""
        self.wait(lambda: self.goaways, timeout, "a GOAWAY")
        return self.goaways[-1]

    def wait_closed(self, timeout=3.0):
        """Reads (and applies) everything until EOF. Raises H2Timeout if it stays open."""
        deadline = time.monotonic() + timeout
        try:
            while self._read_once(deadline):
                pass
        except H2Timeout:
            raise H2Timeout("connection still open %.1fs later; last frames: %r"
                            % (timeout, self.frames[-12:]))

    def is_open(self, wait=0.3):
        """True when no EOF arrives within |wait| s (frames arriving are applied)."""
        self.drain(wait)
        return not self.eof

    def frames_of(self, ftype, sid=None):
        return [f for f in self.frames if f.type == ftype and (sid is None or
                                                             f.stream_id == sid)]

    def rst_code(self, sid):
        return self.streams[sid].reset if sid in self.streams else None

    # ---- frame handling -------------------------------------------------------------------

    def _parse(self):
        while len(self.buf) >= 9:
            n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
            if len(self.buf) < 9 + n:
                return
            ftype, flags = self.buf[3], self.buf[4]
            sid = struct.unpack("!I", self.buf[5:9])[0] & 0x7FFFFFFF
            payload = bytes(self.buf[9:9 + n])
            del self.buf[:9 + n]
            f = Frame(ftype, flags, sid, payload)
            self.frames.append(f)
            self._apply(f)

    def _violation(self, what):
        self.violations.append(what)

    def _apply(self, f):
        if self._block is not None and f.type != CONTINUATION:
            self._violation("frame %r inside a header block" % f)
        if f.type == SETTINGS:
            if f.flags & ACK:
                self.settings_acks += 1
                return
            self.remote_settings_frames += 1
            for i in range(0, len(f.payload) - 5, 6):
                k, v = struct.unpack("!HI", f.payload[i:i + 6])
                if k == INITIAL_WINDOW_SIZE:
                    delta = v - self.peer_initial_window
                    self.peer_initial_window = v
                    for s in self.send_windows:
                        self.send_windows[s] += delta
                elif k == MAX_FRAME_SIZE:
                    self.peer_max_frame = v
                self.remote_settings[k] = v
            if self.auto_settings_ack:
                self.send_raw(frame(SETTINGS, ACK, 0))
        elif f.type == PING:
            if f.flags & ACK:
                self.ping_acks.append(f.payload)
            elif self.auto_ping_ack:
                self.send_raw(frame(PING, ACK, 0, f.payload))
        elif f.type == GOAWAY:
            last, code = struct.unpack("!II", f.payload[:8])
            self.goaways.append((last & 0x7FFFFFFF, code, f.payload[8:]))
        elif f.type == WINDOW_UPDATE:
            inc = struct.unpack("!I", f.payload)[0] & 0x7FFFFFFF
            if f.stream_id == 0:
                self.send_conn_window += inc
            else:
                self.send_windows[f.stream_id] = self.send_windows.get(
                    f.stream_id, self.peer_initial_window) + inc
        elif f.type == RST_STREAM:
            s = self.streams.setdefault(f.stream_id, Stream(f.stream_id))
            s.reset = struct.unpack("!I", f.payload)[0]
        elif f.type == DATA:
            s = self.streams.setdefault(f.stream_id, Stream(f.stream_id))
            body = f.payload
            if f.flags & PADDED:
                pad = body[0]
                body = body[1:len(body) - pad]
            if s.headers is None:
                self._violation("DATA before a response head on stream %d" % f.stream_id)
            if s.ended:
                self._violation("DATA after END_STREAM on stream %d" % f.stream_id)
            s.data += body
            s.pieces.append((f.time, body))
            self.received_data += len(f.payload)
            if f.flags & END_STREAM:
                s.ended = True
            if self.auto_window and f.payload:
                n = len(f.payload)
                out = frame(WINDOW_UPDATE, 0, 0, struct.pack("!I", n))
                if not s.ended:
                    out += frame(WINDOW_UPDATE, 0, f.stream_id, struct.pack("!I", n))
                self.send_raw(out)
            else:
                self.recv_conn_window -= len(f.payload)
        elif f.type == HEADERS:
            body = f.payload
            if f.flags & PADDED:
                pad = body[0]
                body = body[1:len(body) - pad]
            if f.flags & PRIORITY_FLAG:
                body = body[5:]
            self._block = (f.stream_id, bool(f.flags & END_STREAM), [body])
            if f.flags & END_HEADERS:
                self._end_block()
        elif f.type == CONTINUATION:
            if self._block is None or self._block[0] != f.stream_id:
                self._violation("CONTINUATION without a header block: %r" % f)
                return
            self._block[2].append(f.payload)
            if f.flags & END_HEADERS:
                self._end_block()
        elif f.type == PUSH_PROMISE:
            self._violation("PUSH_PROMISE although push is off")

    def _end_block(self):
        sid, end, parts = self._block
        self._block = None
        try:
            raw = self.decoder.decode(b"".join(parts), raw=True)
        except Exception as e:  # noqa: BLE001
            self._violation("HPACK error on stream %d: %r" % (sid, e))
            return
        hs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        s = self.streams.setdefault(sid, Stream(sid))
        self._check_fields(sid, hs)
        status = next((v for k, v in hs if k == ":status"), None)
        if s.headers is None:
            if status is None:
                self._violation("response head without :status on stream %d: %r" % (sid, hs))
            elif status.startswith("1"):
                s.interim.append(hs)
                return
            s.headers = hs
            s.head_time = time.monotonic()
        else:
            if not end:
                self._violation("trailers without END_STREAM on stream %d" % sid)
            if any(k.startswith(":") for k, _ in hs):
                self._violation("pseudo-header in trailers on stream %d: %r" % (sid, hs))
            s.trailers = hs
        if end:
            s.ended = True

    def _check_fields(self, sid, hs):
        seen_regular = False
        for k, v in hs:
            if k.startswith(":"):
                if seen_regular:
                    self._violation("pseudo-header after a regular field: %r" % (hs,))
                if k != ":status":
                    self._violation("response pseudo-header %s" % k)
            else:
                seen_regular = True
            if k != k.lower():
                self._violation("upper-case field name %r on stream %d" % (k, sid))
            if k in CONNECTION_SPECIFIC:
                self._violation("connection-specific field %s: %s on stream %d" % (k, v, sid))
            if k == "te" and v.lower() != "trailers":
                self._violation("te: %s on stream %d" % (v, sid))


class StreamSocket:
    """A stream of an H2Client looking like a socket, for wsclient.WsConn(sock=...): an RFC 8441
    WebSocket's frames ride in DATA frames. recv() returns b"" once the server ended the stream
    (END_STREAM or RST_STREAM: what TCP EOF is to HTTP/1.1); close() ends the client's side
    (END_STREAM), a close after SO_LINGER 0 (WsConn.abort) resets the stream (CANCEL)."""

    def __init__(self, client, sid):
        self.client = client
        self.sid = sid
        self.stream = client.streams[sid]
        self._timeout = client.timeout
        self._abort = False
        self.closed = False

    def settimeout(self, t):
        self._timeout = t

    def setsockopt(self, level, opt, value):
        if level == socket.SOL_SOCKET and opt == socket.SO_LINGER:
            self._abort = True

    def fileno(self):
        return self.client.sock.fileno()

    def recv(self, n):
        s = self.stream
        c = self.client
        deadline = time.monotonic() + (self._timeout if self._timeout is not None else 3600)
        while len(s.data) <= s.read_pos:
            if s.done or c.eof:
                return b""
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            try:
                c._read_once(time.monotonic() + left)
            except H2Timeout:
                raise socket.timeout("timed out")
        out = bytes(s.data[s.read_pos:s.read_pos + n])
        s.read_pos += len(out)
        return out

    def sendall(self, data):
        if self.stream.reset is not None or self.client.eof:
            raise BrokenPipeError("stream %d is closed" % self.sid)
        sent = self.client.send_data(self.sid, data, timeout=self._timeout)
        if sent < len(data):
            raise BrokenPipeError("stream %d closed while sending" % self.sid)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.client.eof or self.stream.reset is not None:
            return
        if self._abort:
            self.client.reset(self.sid, CANCEL)
        elif not self.stream.local_ended:
            self.client.end_stream(self.sid)


def tls_client_context(alpn=("h2",)):
    """A client context that trusts anything (the tests' self-signed certificates)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def cpu_seconds(pid):
    """utime + stime of |pid| (all its threads) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
