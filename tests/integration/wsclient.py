# SPDX-License-Identifier: MIT
"""A raw-frame WebSocket client (RFC 6455, RFC 7692) over a plain socket, standard library
only, for the conformance tests: every byte of the opening handshake and of each client frame
is the test's to choose (FIN, RSV bits, opcode, mask on or off, mask key, payload, length
encoding), and frames from the server are checked strictly (unmasked, minimal length, no
reserved bits or opcodes, control frames whole and short, close reasons UTF-8).

Nothing is answered automatically unless asked (answer_pings=True, expect_close(answer=...)).
Every read has a deadline (DEFAULT_TIMEOUT unless given): a test never hangs on a socket."""

import base64
import collections
import hashlib
import os
import re
import select
import socket
import struct
import time
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_TIMEOUT = 5.0

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)
CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)

Frame = collections.namedtuple("Frame", "fin rsv opcode payload")
Frame.__doc__ = "A server frame: fin (bool), rsv (3 bits, RSV1 = 4), opcode, payload (bytes)."


class Message(collections.namedtuple("Message", "opcode data frames compressed")):
    """A whole message: opcode (OP_TEXT or OP_BINARY), data (bytes, inflated), the number of
    frames it came in, and whether it was compressed (RSV1)."""

    @property
    def text(self):
        return self.data.decode("utf-8")


class WsError(AssertionError):
    """The server broke the protocol, or did not do what the test waited for."""


class ReadTimeout(WsError):
    pass


class PeerClosed(WsError):
    """TCP closed (EOF or reset) where more was expected."""


class CloseReceived(WsError):
    """A close frame arrived while a message was expected."""

    def __init__(self, code, reason):
        super().__init__("close frame %s %r while waiting for a message" % (code, reason))
        self.code = code
        self.reason = reason


# ---- handshake ---------------------------------------------------------------------------

def new_key():
    """A fresh Sec-WebSocket-Key: 16 random bytes in base64."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    """The Sec-WebSocket-Accept that answers |key|."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode()


_DEFAULT = object()


def build_upgrade(path="/ws/", host="app.test", key=_DEFAULT, version="13", method="GET",
                  http_version="HTTP/1.1", upgrade="websocket", connection="Upgrade",
                  origin=None, protocols=None, extensions=None, headers=(), omit=()):
    """The bytes of an opening handshake, and the key it carries (or None).

    Each field given as None is left out: |key| (a fresh one by default; a list gives one
    field per item), |version| (Sec-WebSocket-Version), |upgrade|, |connection|, |host|,
    |origin|, |protocols| (a list joined with ", ", or a string sent as is), |extensions|
    (Sec-WebSocket-Extensions, as is). |headers|: more (name, value) fields appended, in
    order. |omit|: names (any case) of fields to drop at the end, whatever put them there."""
    if key is _DEFAULT:
        key = new_key()
    fields = []
    if host is not None:
        fields.append(("Host", host))
    if upgrade is not None:
        fields.append(("Upgrade", upgrade))
    if connection is not None:
        fields.append(("Connection", connection))
    keys = key if isinstance(key, (list, tuple)) else ([] if key is None else [key])
    for k in keys:
        fields.append(("Sec-WebSocket-Key", k))
    if version is not None:
        fields.append(("Sec-WebSocket-Version", version))
    if origin is not None:
        fields.append(("Origin", origin))
    if protocols is not None:
        fields.append(("Sec-WebSocket-Protocol",
                       protocols if isinstance(protocols, str) else ", ".join(protocols)))
    if extensions is not None:
        fields.append(("Sec-WebSocket-Extensions", extensions))
    fields.extend(headers)
    drop = {n.lower() for n in omit}
    fields = [(n, v) for n, v in fields if n.lower() not in drop]
    head = "%s %s %s\r\n" % (method, path, http_version)
    head += "".join("%s: %s\r\n" % (n, v) for n, v in fields) + "\r\n"
    return head.encode("latin-1"), (keys[0] if len(keys) == 1 else None)


class Response:
    """A response head: status, reason, version, headers [(name, value)], body (once read),
    and leftover: the bytes that had arrived after the head when it was parsed."""

    def __init__(self, version, status, reason, headers, leftover):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.leftover = leftover
        self.body = b""

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def tokens(self, name):
        """The comma-separated tokens of every |name| field, lower-cased."""
        out = []
        for v in self.header_all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def extension_params(self):
        """Sec-WebSocket-Extensions parsed: [(name, {param: value or None})]."""
        out = []
        for v in self.header_all("Sec-WebSocket-Extensions"):
            for ext in v.split(","):
                parts = [p.strip() for p in ext.split(";")]
                if not parts[0]:
                    continue
                params = {}
                for p in parts[1:]:
                    k, eq, val = p.partition("=")
                    params[k.strip().lower()] = val.strip().strip('"') if eq else None
                out.append((parts[0].lower(), params))
        return out

    def __repr__(self):
        return "<Response %s %s %r %r>" % (self.status, self.reason, self.headers,
                                           self.body[:200])


# ---- frames ------------------------------------------------------------------------------

def mask_bytes(data, key):
    """|data| XOR the 4-byte |key| repeated (masking and unmasking alike)."""
    n = len(data)
    if n == 0:
        return b""
    k = (bytes(key) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(opcode, payload=b"", fin=True, rsv1=False, rsv2=False, rsv3=False,
                 mask=True, mask_key=None, length_form=None, length=None):
    """One frame's bytes. |mask_key|: 4 bytes (random by default; ignored without |mask|).
    |length_form|: None for the minimal encoding, or 7, 16 or 64 to force that form (a
    16/64 form for a short payload is non-minimal). |length|: a declared length other than
    the payload's (to lie)."""
    payload = bytes(payload)
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | \
        (0x10 if rsv3 else 0) | (opcode & 0x0F)
    m = 0x80 if mask else 0
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    if form == 7:
        head = struct.pack("!BB", b0, m | n)
    elif form == 16:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if mask:
        key = os.urandom(4) if mask_key is None else bytes(mask_key)
        return head + key + mask_bytes(payload, key)
    return head + payload


def close_payload(code=None, reason=b""):
    """A close frame's payload: nothing without |code|, else the code and |reason|."""
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def deflate_message(data, compressor=None):
    """|data| compressed as one permessage-deflate message (RFC 7692 §7.2.1): raw deflate,
    sync-flushed, the trailing 00 00 ff ff removed. |compressor| keeps context across
    messages (zlib.compressobj(wbits=-15)); a fresh one by default."""
    c = compressor or zlib.compressobj(wbits=-15)
    out = c.compress(bytes(data)) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def split_sizes(n, parts):
    """|parts| fragment sizes adding up to |n| (the last ones may be 0 when n < parts)."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# ---- the connection ----------------------------------------------------------------------

class WsConn:
    """One client connection: the opening handshake, then frames. |timeout| bounds each read
    (and the send of each write)."""

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, sock=None,
                 rcvbuf=None):
        self.timeout = timeout
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
            except OSError:
                sock.close()
                raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.key = None
        self.response = None
        self.deflate = None          # agreed permessage-deflate params, or None
        self._inflater = None
        self._deflater = None
        self.skipped = []            # the frames expect_close() read past

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- bytes --

    def _deadline(self, timeout):
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _fill(self, deadline):
        """Reads more into the buffer; False at EOF or reset; raises ReadTimeout."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReadTimeout("read timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise ReadTimeout("read timed out")
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _need(self, n, deadline, what):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise PeerClosed("connection closed in %s (%d of %d bytes)"
                                 % (what, len(self.buf), n))

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send_raw(self, data):
        """Sends bytes as they are. Returns False when the peer has closed (EPIPE, reset)."""
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return False

    # -- the opening handshake --

    def handshake(self, path="/ws/", timeout=None, **kw):
        """Sends an opening handshake (build_upgrade(path, **kw)) and reads the response head.
        Returns the Response; on a 101 the connection is then a WebSocket (and, when the
        server agreed to permessage-deflate, its messages are inflated). The body of any
        other status is read too when it is framed by Content-Length or chunked."""
        raw, self.key = build_upgrade(path, **kw)
        self.send_raw(raw)
        r = self.read_head(timeout)
        self.response = r
        if r.status == 101:
            for name, params in r.extension_params():
                if name == "permessage-deflate":
                    self.deflate = params
        else:
            self.read_body(r, timeout)
        return r

    def read_head(self, timeout=None):
        deadline = self._deadline(timeout)
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise WsError("response head too long: %r" % bytes(self.buf[:300]))
            if not self._fill(deadline):
                raise PeerClosed("connection closed before a response head; got %r"
                                 % bytes(self.buf))
        i = self.buf.find(b"\r\n\r\n")
        head = self._take(i + 4)[:-4].split(b"\r\n")
        m = re.fullmatch(rb"(HTTP/1\.[01]) (\d{3})(?: (.*))?", head[0])
        if not m:
            raise WsError("bad status line %r" % head[0])
        headers = []
        for line in head[1:]:
            k, sep, v = line.partition(b":")
            if not sep or not k or k != k.strip():
                raise WsError("bad header line %r" % line)
            headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        return Response(m.group(1).decode(), int(m.group(2)),
                        (m.group(3) or b"").decode("latin-1"), headers, bytes(self.buf))

    def read_body(self, r, timeout=None):
        """Reads the body of a non-101 response |r| into r.body (Content-Length, chunked, or
        nothing when neither frames it and the connection stays open)."""
        deadline = self._deadline(timeout)
        cl = r.header("Content-Length")
        if "chunked" in r.tokens("Transfer-Encoding"):
            parts = []
            while True:
                while b"\r\n" not in self.buf:
                    if not self._fill(deadline):
                        raise PeerClosed("connection closed in a chunked body")
                line, _, _ = self._take(self.buf.find(b"\r\n") + 2).partition(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while not self.buf.startswith(b"\r\n"):   # trailers, if any
                        while b"\r\n" not in self.buf:
                            if not self._fill(deadline):
                                raise PeerClosed("connection closed in a chunked body")
                        if self.buf.startswith(b"\r\n"):
                            break
                        self._take(self.buf.find(b"\r\n") + 2)
                    self._take(2)
                    break
                self._need(size + 2, deadline, "a chunk")
                parts.append(self._take(size))
                self._take(2)
            r.body = b"".join(parts)
        elif cl is not None:
            self._need(int(cl), deadline, "a response body")
            r.body = self._take(int(cl))
        elif r.status in (204, 304) or 100 <= r.status < 200:
            r.body = b""
        else:
            # Not framed: read what comes until EOF, if the server closes soon.
            try:
                while self._fill(deadline):
                    pass
            except ReadTimeout:
                pass
            r.body = self._take(len(self.buf))
        return r

    # -- frames out --

    def send_frame(self, opcode, payload=b"", **kw):
        """Sends one frame (see encode_frame for the options). Returns False when the peer
        has closed."""
        return self.send_raw(encode_frame(opcode, payload, **kw))

    def send_message(self, opcode, data, fragments=1, sizes=None, compress=False, **kw):
        """Sends a text or binary message, in |fragments| frames of about equal size (or of
        the given |sizes|), the first with |opcode| and the rest continuations. |compress|
        deflates it first with self.compress() (RSV1 on the first frame). |kw| go to every
        frame."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if compress:
            data = self.compress(data)
        sizes = sizes or split_sizes(len(data), fragments)
        assert sum(sizes) == len(data)
        out, off = [], 0
        for i, n in enumerate(sizes):
            out.append(encode_frame(opcode if i == 0 else OP_CONT, data[off:off + n],
                                    fin=(i == len(sizes) - 1),
                                    rsv1=(compress and i == 0), **kw))
            off += n
        return self.send_raw(b"".join(out))

    def compress(self, data):
        """|data| compressed as the agreed permessage-deflate parameters say: with the
        client_max_window_bits window (15 when not given) and, unless
        client_no_context_takeover was agreed, with the context of the previous messages."""
        params = self.deflate if self.deflate is not None else {}
        if self._deflater is None or "client_no_context_takeover" in params:
            bits = params.get("client_max_window_bits")
            self._deflater = zlib.compressobj(wbits=-int(bits or 15))
        return deflate_message(data, self._deflater)

    def send_text(self, text, **kw):
        return self.send_message(OP_TEXT, text, **kw)

    def send_binary(self, data, **kw):
        return self.send_message(OP_BINARY, data, **kw)

    def send_ping(self, payload=b"", **kw):
        return self.send_frame(OP_PING, payload, **kw)

    def send_pong(self, payload=b"", **kw):
        return self.send_frame(OP_PONG, payload, **kw)

    def send_close(self, code=None, reason=b"", payload=None, **kw):
        """A close frame with |code| and |reason| (or exactly |payload|)."""
        return self.send_frame(OP_CLOSE, close_payload(code, reason) if payload is None
                               else payload, **kw)

    # -- frames in --

    def read_frame(self, timeout=None, deadline=None):
        """The next server frame, checked: unmasked, minimal length encoding, RSV2/RSV3 clear,
        RSV1 only when permessage-deflate was agreed, a known opcode, control frames with FIN
        and at most 125 bytes. Raises PeerClosed at EOF, ReadTimeout after |timeout|."""
        deadline = deadline or self._deadline(timeout)
        self._need(2, deadline, "a frame header")
        b0, b1 = self.buf[0], self.buf[1]
        fin, rsv, opcode = bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0x0F
        if b1 & 0x80:
            raise WsError("masked server frame: %r" % bytes(self.buf[:14]))
        n = b1 & 0x7F
        hlen = 2
        if n == 126:
            self._need(4, deadline, "a frame header")
            n = struct.unpack("!H", self.buf[2:4])[0]
            hlen = 4
            if n < 126:
                raise WsError("non-minimal 16-bit length %d" % n)
        elif n == 127:
            self._need(10, deadline, "a frame header")
            n = struct.unpack("!Q", self.buf[2:10])[0]
            hlen = 10
            if n < 65536 or n >> 63:
                raise WsError("non-minimal or invalid 64-bit length %d" % n)
        if opcode not in DATA_OPS + CONTROL_OPS:
            raise WsError("server frame with reserved opcode %#x" % opcode)
        if rsv & 0x3:
            raise WsError("server frame with RSV2/RSV3: %#x" % b0)
        if rsv & 0x4 and (self.deflate is None or opcode not in (OP_TEXT, OP_BINARY)):
            raise WsError("server frame with RSV1 (deflate %s, opcode %#x)"
                          % (self.deflate, opcode))
        if opcode in CONTROL_OPS and (not fin or n > 125):
            raise WsError("bad control frame: fin=%s len=%d" % (fin, n))
        self._need(hlen + n, deadline, "a frame payload")
        self._take(hlen)
        return Frame(fin, rsv, opcode, self._take(n))

    def _inflate(self, data):
        # Inflate with the window the server announced (server_max_window_bits), not more:
        # a server that compressed with a larger window than it agreed to fails here.
        if self._inflater is None:
            bits = self.deflate.get("server_max_window_bits")
            self._inflater = zlib.decompressobj(wbits=-int(bits or 15))
        out = self._inflater.decompress(data + b"\x00\x00\xff\xff")
        if "server_no_context_takeover" in self.deflate:
            self._inflater = None
        return out

    def recv_message(self, timeout=None, controls=None, answer_pings=False):
        """The next whole message (fragments joined, inflated when compressed): a Message.
        Control frames before or between its fragments are appended to the list |controls|
        when given (else dropped); with |answer_pings| each ping gets a pong. A close frame
        raises CloseReceived (not answered); EOF raises PeerClosed."""
        deadline = self._deadline(timeout)
        parts, opcode, nframes, compressed = [], None, 0, False
        while True:
            f = self.read_frame(deadline=deadline)
            if f.opcode in CONTROL_OPS:
                if controls is not None:
                    controls.append(f)
                if f.opcode == OP_PING and answer_pings:
                    self.send_pong(f.payload)
                elif f.opcode == OP_CLOSE:
                    code, reason = parse_close(f.payload)
                    raise CloseReceived(code, reason)
                continue
            if opcode is None:
                if f.opcode == OP_CONT:
                    raise WsError("continuation frame with no message open")
                opcode, compressed = f.opcode, bool(f.rsv & 0x4)
            elif f.opcode != OP_CONT:
                raise WsError("new data frame (opcode %#x) inside a fragmented message"
                              % f.opcode)
            elif f.rsv & 0x4:
                raise WsError("RSV1 on a continuation frame")
            parts.append(f.payload)
            nframes += 1
            if f.fin:
                data = b"".join(parts)
                if compressed:
                    data = self._inflate(data)
                if opcode == OP_TEXT:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise WsError("server text message is not UTF-8: %s" % e)
                return Message(opcode, data, nframes, compressed)

    def expect_close(self, code=None, timeout=None, answer=True, eof_timeout=None):
        """Reads frames until a close frame and returns its (code, reason) (code None when it
        had no payload); the data and control frames read past are left in self.skipped.
        |code|: the expected code, or a collection of acceptable ones. With |answer|, replies
        with a close frame of the same code; then asserts the server closes TCP within
        |eof_timeout| (default: |timeout|). Raises PeerClosed when TCP closes without a close
        frame."""
        deadline = self._deadline(timeout)
        self.skipped = []
        while True:
            try:
                f = self.read_frame(deadline=deadline)
            except PeerClosed:
                raise PeerClosed("TCP closed without a close frame (expected %s)" % (code,))
            if f.opcode == OP_CLOSE:
                break
            self.skipped.append(f)
        got, reason = parse_close(f.payload)
        if code is not None:
            ok = got in code if isinstance(code, (set, frozenset, list, tuple)) else got == code
            if not ok:
                raise WsError("close code %s (reason %r), expected %s" % (got, reason, code))
        if answer:
            self.send_close(got if got is not None else None)
        if eof_timeout is None:
            eof_timeout = self.timeout if timeout is None else timeout
        self.wait_tcp_closed(eof_timeout)
        return got, reason

    def close_or_eof(self, timeout=None):
        """Waits for the server to end the connection: returns the close frame's (code,
        reason) after answering it and seeing TCP closed, or (None, None) when TCP closed
        without one. Data and control frames before it are skipped."""
        deadline = self._deadline(timeout)
        while True:
            try:
                f = self.read_frame(deadline=deadline)
            except PeerClosed:
                return None, None
            if f.opcode == OP_CLOSE:
                got, reason = parse_close(f.payload)
                self.send_close(got)
                self.wait_tcp_closed(max(0.5, deadline - time.monotonic()))
                return got, reason

    def wait_tcp_closed(self, timeout=None):
        """Asserts the server closes TCP (EOF or reset) within |timeout|, discarding whatever
        comes before. Returns the discarded bytes."""
        deadline = self._deadline(timeout)
        try:
            while self._fill(deadline):
                pass
        except ReadTimeout:
            raise WsError("TCP still open %.1fs after the close" % (
                self.timeout if timeout is None else timeout))
        return self._take(len(self.buf))

    def is_open(self, wait=0.2):
        """True when neither EOF nor data arrive within |wait| s (data is kept)."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        return self._fill(time.monotonic() + 0.5)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Closes TCP with a reset (SO_LINGER 0), no close frame."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


def parse_close(payload):
    """(code, reason) of a server close frame; (None, "") when empty. Strict: a 1-byte payload
    or a reason that is not UTF-8 is a WsError."""
    if not payload:
        return None, ""
    if len(payload) < 2:
        raise WsError("close frame with a 1-byte payload")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WsError("close reason is not UTF-8: %r" % payload[2:])
    return struct.unpack("!H", payload[:2])[0], reason


def connect(port, path="/ws/", timeout=DEFAULT_TIMEOUT, rcvbuf=None, **kw):
    """A WsConn whose handshake got a 101 with the right Sec-WebSocket-Accept (asserted).
    |kw| go to build_upgrade()."""
    c = WsConn(port, timeout=timeout, rcvbuf=rcvbuf)
    try:
        r = c.handshake(path, **kw)
        if r.status != 101:
            raise WsError("handshake for %s answered %d, not 101: %r" % (path, r.status, r))
        if r.header("Sec-WebSocket-Accept") != accept_for(c.key):
            raise WsError("wrong Sec-WebSocket-Accept %r for key %r"
                          % (r.header("Sec-WebSocket-Accept"), c.key))
    except BaseException:
        c.close()
        raise
    return c
