# SPDX-License-Identifier: MIT
"""The gateway <-> ASGI app frames (adapters/asgi/PROTOCOL.md), sans-I/O: bytes in, frames
out; frames in, bytes out. No sockets, no clock, no state machine: stream-id order, credits,
capabilities and "which frame is allowed now" belong to the connection that uses this codec.

A frame is a 9-byte header -- u24 length, u8 type, u8 flags, R bit + u31 stream id, all
big-endian -- and `length` bytes of payload laid out per type (section 2 onwards).

    dec = FrameDecoder()              # max_frame 16384 until our HELLO says otherwise
    dec.feed(data)
    while (frame := dec.next_frame()) is not NeedData:
        ...                           # Hello, HttpRequest, Data, ..., Unknown
    sock.sendall(encode(HttpResponse(stream=1, status=200, headers=[(b"a", b"b")])))

Field types (what the decoder returns and the encoder takes):

- Text fields are str, decoded as strict UTF-8: http_version, method, scheme, client and
  server hosts, subprotocols, reasons, GOAWAY's debug. Invalid UTF-8 there is
  ProtocolError(PROTOCOL).
- Paths -- HttpRequest/WsConnect .path and .root_path, PathSend .path -- are str decoded as
  UTF-8 with errors="surrogateescape" (as os.fsdecode does): a percent-decoded path may hold
  bytes that are not UTF-8 (``/%FF``), and the app still gets a str that re-encodes to the
  same bytes. The encoder uses surrogateescape for them too.
- raw_path, query_string, header names and values, DATA / WS_MESSAGE / PING / unknown
  payloads are bytes (the encoder takes any bytes-like object).
- client and server are (host, port) tuples, or None when the host on the wire is empty
  (None encodes as host "" and port 0). WsAccept.subprotocol is None for "" likewise.
- flags are kept exactly as received (flags a type does not use are ignored, not cleared),
  so a decoded frame re-encodes to the same bytes. The stream id has its R bit masked off.

Errors: ProtocolError(code, message) with code one of the section 8 codes:

- FRAME_SIZE, *fatal*: a header announcing more than max_frame bytes. The decoder is then
  unusable (the connection must go: GOAWAY FRAME_SIZE).
- FRAME_SIZE: a payload that does not match its type's layout (truncated: a string or count
  running past the end; or bytes left over after the last field; a PING not of 8 bytes).
- PROTOCOL: a HELLO without the "GHASGI" magic, or invalid UTF-8 in a text field.

A non-fatal error consumes the bad frame: e.stream and e.frame_type tell which, and the
decoder carries on with the next frame (a stream error is answered with RESET, section 8).
The encoder raises ValueError for values that do not fit their field (a str16 over 65535
bytes, a u16 over 65535, a negative number, a payload over 2^24-1 or over max_frame, a
stream id over 2^31-1) and TypeError for a str where bytes are wanted.
"""

import struct
from dataclasses import dataclass, field

__all__ = [
    # frame types
    "HELLO", "HTTP_REQUEST", "DATA", "HTTP_RESPONSE", "TRAILERS", "PATHSEND", "DISCONNECT",
    "WS_CONNECT", "WS_ACCEPT", "WS_MESSAGE", "WS_CLOSE", "CREDIT", "PING", "RESET", "GOAWAY",
    "TYPE_NAMES",
    # flags
    "FLAG_END", "FLAG_MORE", "FLAG_TEXT", "FLAG_ACK",
    # capabilities
    "CAP_WEBSOCKET", "CAP_TRAILERS", "CAP_PATHSEND", "CAP_TLS", "Tls",
    # error codes
    "NONE", "PROTOCOL", "INTERNAL", "FLOW", "FRAME_SIZE", "REFUSED", "CANCEL", "VERSION",
    "ERROR_NAMES",
    # limits
    "MAGIC", "PROTOCOL_VERSION", "HEADER_SIZE", "DEFAULT_MAX_FRAME", "MAX_PAYLOAD",
    "MAX_STREAM_ID", "MAX_CREDIT",
    # frames
    "Hello", "HttpRequest", "Data", "HttpResponse", "Trailers", "PathSend", "Disconnect",
    "WsConnect", "WsAccept", "WsMessage", "WsClose", "Credit", "Ping", "Reset", "GoAway",
    "Unknown",
    # codec
    "NeedData", "ProtocolError", "FrameDecoder", "encode", "frame_header",
]

# -- constants (PROTOCOL.md sections 2, 3, 8) ------------------------------------------------

HELLO = 0x00
HTTP_REQUEST = 0x01
DATA = 0x02
HTTP_RESPONSE = 0x03
TRAILERS = 0x04
PATHSEND = 0x05
DISCONNECT = 0x06
WS_CONNECT = 0x07
WS_ACCEPT = 0x08
WS_MESSAGE = 0x09
WS_CLOSE = 0x0A
CREDIT = 0x0B
PING = 0x0C
RESET = 0x0D
GOAWAY = 0x0E

TYPE_NAMES = {
    HELLO: "HELLO", HTTP_REQUEST: "HTTP_REQUEST", DATA: "DATA", HTTP_RESPONSE: "HTTP_RESPONSE",
    TRAILERS: "TRAILERS", PATHSEND: "PATHSEND", DISCONNECT: "DISCONNECT",
    WS_CONNECT: "WS_CONNECT", WS_ACCEPT: "WS_ACCEPT", WS_MESSAGE: "WS_MESSAGE",
    WS_CLOSE: "WS_CLOSE", CREDIT: "CREDIT", PING: "PING", RESET: "RESET", GOAWAY: "GOAWAY",
}

FLAG_END = 0x01
FLAG_MORE = 0x02
FLAG_TEXT = 0x04
FLAG_ACK = 0x08

CAP_WEBSOCKET = 0x1
CAP_TRAILERS = 0x2
CAP_PATHSEND = 0x4
CAP_TLS = 0x8

NONE = 0
PROTOCOL = 1
INTERNAL = 2
FLOW = 3
FRAME_SIZE = 4
REFUSED = 5
CANCEL = 6
VERSION = 7

ERROR_NAMES = {
    NONE: "NONE", PROTOCOL: "PROTOCOL", INTERNAL: "INTERNAL", FLOW: "FLOW",
    FRAME_SIZE: "FRAME_SIZE", REFUSED: "REFUSED", CANCEL: "CANCEL", VERSION: "VERSION",
}

MAGIC = b"GHASGI"
PROTOCOL_VERSION = 1
HEADER_SIZE = 9
DEFAULT_MAX_FRAME = 16384          # every receiver's max_frame until its HELLO is received
MAX_PAYLOAD = 0xFFFFFF             # what a u24 length can say
MAX_STREAM_ID = 0x7FFFFFFF
MAX_CREDIT = 0x7FFFFFFF

# u24 length and u8 type read and written as one u32: (length << 8) | type
_HDR = struct.Struct(">IBI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HELLO = struct.Struct(">6sHIIII")
_GOAWAY_HEAD = struct.Struct(">II")
_u16_from = _U16.unpack_from
_u16 = _U16.pack
_u32 = _U32.pack


class ProtocolError(Exception):
    """The peer sent bytes that are not a well-formed frame.

    code: the PROTOCOL.md error code (FRAME_SIZE or PROTOCOL) to answer with.
    stream, frame_type: the frame's, when its header was read (None otherwise).
    fatal: the decoder cannot go on (a length over max_frame): close the connection."""

    def __init__(self, code, message, stream=None, frame_type=None, fatal=False):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.stream = stream
        self.frame_type = frame_type
        self.fatal = fatal

    def __str__(self):
        return "%s: %s" % (ERROR_NAMES.get(self.code, self.code), self.message)


class NeedData:
    """Sentinel returned by FrameDecoder.next_frame(): feed more bytes, then ask again.

    The class itself is the value (as h11's NEED_DATA is); it is never instantiated."""

    def __new__(cls):  # pragma: no cover - guard against misuse
        raise TypeError("NeedData is a sentinel; compare with `is NeedData`")


class _Layout(Exception):
    """Internal: a payload that does not match its layout (becomes FRAME_SIZE)."""


# -- encoding helpers -------------------------------------------------------------------------

def _text(s):
    """A text field's bytes: str as strict UTF-8 (bytes-like passed through)."""
    return s.encode("utf-8") if isinstance(s, str) else s


def _path(s):
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s


def _raw(b, what):
    if isinstance(b, str):
        raise TypeError("%s must be bytes, not str" % what)
    return b


def _str16(parts, b, what):
    n = len(b)
    if n > 0xFFFF:
        raise ValueError("%s of %d bytes does not fit a str16" % (what, n))
    parts.append(_u16(n))
    parts.append(b)


def _headers_out(parts, headers, what="header"):
    if len(headers) > 0xFFFF:
        raise ValueError("%d %ss do not fit a u16 count" % (len(headers), what))
    parts.append(_u16(len(headers)))
    for name, value in headers:
        ln = len(name)
        lv = len(value)
        if ln > 0xFFFF or lv > 0xFFFF:
            raise ValueError("%s %r: a name or value over 65535 bytes" % (what, name[:40]))
        parts += (_u16(ln), name, _u16(lv), value)     # a str fails in b"".join: TypeError


def _scope_out(f, parts):
    _str16(parts, _text(f.http_version), "http_version")
    _str16(parts, _text(f.method), "method")
    _str16(parts, _text(f.scheme), "scheme")
    _str16(parts, _path(f.path), "path")
    _str16(parts, _raw(f.raw_path, "raw_path"), "raw_path")
    _str16(parts, _raw(f.query_string, "query_string"), "query_string")
    _str16(parts, _path(f.root_path), "root_path")
    for what, addr in (("client", f.client), ("server", f.server)):
        if addr is None:
            parts.append(b"\x00\x00\x00\x00")     # host "" and port 0
        else:
            host, port = addr
            _str16(parts, _text(host), what + " host")
            parts.append(_u16(port))
    _headers_out(parts, f.headers)


@dataclass(slots=True)
class Tls:
    """The tls block of section 4.1 (with CAP_TLS): the ASGI "tls" scope extension's facts.
    present is False for a cleartext request (nothing else on the wire)."""
    present: bool = False
    version: int = 0
    cipher_suite: int = 0
    client_cert_name: str = ""      # "" reads as None
    client_cert_error: str = ""     # "" reads as None
    client_cert: str = ""           # PEM; "" when no certificate


def _tls_out(t, parts):
    if t is None:
        return
    if not t.present:
        parts.append(b"\x00")
        return
    parts += (b"\x01", _u16(t.version), _u16(t.cipher_suite))
    _str16(parts, _text(t.client_cert_name), "client_cert_name")
    _str16(parts, _text(t.client_cert_error), "client_cert_error")
    _str16(parts, _text(t.client_cert), "client_cert")


def _tls_in(p, o, tls):
    """With CAP_TLS (|tls|), the tls block at |o|: (Tls or None, new offset)."""
    if not tls:
        return None, o
    if o >= len(p):
        raise _Layout("truncated payload (no tls block)")
    present = p[o]
    o += 1
    if not present:
        return Tls(), o
    version, suite = _u16_from(p, o)[0], _u16_from(p, o + 2)[0]
    o += 4
    vals = []
    for _ in range(3):
        (n,) = _u16_from(p, o)
        o += 2
        vals.append(p[o:o + n].decode("utf-8", "replace"))
        o += n
    return Tls(True, version, suite, *vals), o


# -- the frames -------------------------------------------------------------------------------
#
# Every frame has .stream and .flags; .type is the frame type (a class constant, except on
# Unknown). Fields have defaults so that frames can be built by keyword.

_frame = dataclass(slots=True)


@_frame
class Hello:
    """HELLO (section 3). The magic is checked on decode and written on encode."""
    stream: int = 0
    flags: int = 0
    version: int = PROTOCOL_VERSION
    max_frame: int = DEFAULT_MAX_FRAME
    max_streams: int = 0
    initial_credit: int = 0
    capabilities: int = 0
    type = HELLO

    def _payload(self):
        return _HELLO.pack(MAGIC, self.version, self.max_frame, self.max_streams,
                           self.initial_credit, self.capabilities)


@_frame
class HttpRequest:
    """HTTP_REQUEST (section 4.1): opens a stream with the ASGI http scope."""
    stream: int = 0
    flags: int = 0
    http_version: str = "1.1"
    method: str = "GET"
    scheme: str = "http"
    path: str = "/"
    raw_path: bytes = b"/"
    query_string: bytes = b""
    root_path: str = ""
    client: tuple = None
    server: tuple = None
    headers: list = field(default_factory=list)
    tls: Tls = None                 # None: no tls block (CAP_TLS not negotiated)
    type = HTTP_REQUEST

    def _payload(self):
        parts = []
        _scope_out(self, parts)
        _tls_out(self.tls, parts)
        return b"".join(parts)


@_frame
class Data:
    """DATA (sections 4.2, 4.3): a piece of a body."""
    stream: int = 0
    flags: int = 0
    data: bytes = b""
    type = DATA

    def _payload(self):
        return _raw(self.data, "data")


@_frame
class HttpResponse:
    """HTTP_RESPONSE (section 4.3): http.response.start."""
    stream: int = 0
    flags: int = 0
    status: int = 200
    headers: list = field(default_factory=list)
    type = HTTP_RESPONSE

    def _payload(self):
        parts = [_u16(self.status)]
        _headers_out(parts, self.headers)
        return b"".join(parts)


@_frame
class Trailers:
    """TRAILERS (section 4.4): http.response.trailers."""
    stream: int = 0
    flags: int = 0
    headers: list = field(default_factory=list)
    type = TRAILERS

    def _payload(self):
        parts = []
        _headers_out(parts, self.headers)
        return b"".join(parts)


@_frame
class PathSend:
    """PATHSEND (section 4.5): http.response.pathsend."""
    stream: int = 0
    flags: int = FLAG_END
    path: str = ""
    type = PATHSEND

    def _payload(self):
        parts = []
        _str16(parts, _path(self.path), "path")
        return b"".join(parts)


def _encode_code_reason(code, reason):
    """The payload DISCONNECT and WS_CLOSE share: u16 code, str16 reason."""
    parts = [_u16(code)]
    _str16(parts, _text(reason), "reason")
    return b"".join(parts)


@_frame
class Disconnect:
    """DISCONNECT (section 4.6): the client went away (code 0 and reason "" on http)."""
    stream: int = 0
    flags: int = FLAG_END
    code: int = 0
    reason: str = ""
    type = DISCONNECT

    def _payload(self):
        return _encode_code_reason(self.code, self.reason)


@_frame
class WsConnect:
    """WS_CONNECT (section 5.1): the scope of section 4.1, then the offered subprotocols."""
    stream: int = 0
    flags: int = 0
    http_version: str = "1.1"
    method: str = ""
    scheme: str = "ws"
    path: str = "/"
    raw_path: bytes = b"/"
    query_string: bytes = b""
    root_path: str = ""
    client: tuple = None
    server: tuple = None
    headers: list = field(default_factory=list)
    subprotocols: list = field(default_factory=list)
    tls: Tls = None                 # None: no tls block (CAP_TLS not negotiated)
    type = WS_CONNECT

    def _payload(self):
        parts = []
        _scope_out(self, parts)
        subs = self.subprotocols
        if len(subs) > 0xFFFF:
            raise ValueError("%d subprotocols do not fit a u16 count" % len(subs))
        parts.append(_u16(len(subs)))
        for s in subs:
            _str16(parts, _text(s), "subprotocol")
        _tls_out(self.tls, parts)
        return b"".join(parts)


@_frame
class WsAccept:
    """WS_ACCEPT (section 5.2): websocket.accept (subprotocol None is "" on the wire)."""
    stream: int = 0
    flags: int = 0
    subprotocol: str = None
    headers: list = field(default_factory=list)
    type = WS_ACCEPT

    def _payload(self):
        parts = []
        _str16(parts, _text(self.subprotocol or ""), "subprotocol")
        _headers_out(parts, self.headers)
        return b"".join(parts)


@_frame
class WsMessage:
    """WS_MESSAGE (section 5.3): a message or a piece of one; the bytes even when TEXT."""
    stream: int = 0
    flags: int = 0
    data: bytes = b""
    type = WS_MESSAGE

    def _payload(self):
        return _raw(self.data, "data")


@_frame
class WsClose:
    """WS_CLOSE (section 5.4): websocket.close."""
    stream: int = 0
    flags: int = FLAG_END
    code: int = 1000
    reason: str = ""
    type = WS_CLOSE

    def _payload(self):
        return _encode_code_reason(self.code, self.reason)


@_frame
class Credit:
    """CREDIT (section 6). The codec does not check the 1 .. 2^31-1 bound (that is FLOW)."""
    stream: int = 0
    flags: int = 0
    increment: int = 0
    type = CREDIT

    def _payload(self):
        return _u32(self.increment)


@_frame
class Ping:
    """PING (section 7): 8 opaque bytes."""
    stream: int = 0
    flags: int = 0
    data: bytes = bytes(8)
    type = PING

    def _payload(self):
        if len(self.data) != 8:
            raise ValueError("a PING carries 8 bytes, not %d" % len(self.data))
        return _raw(self.data, "data")


@_frame
class Reset:
    """RESET (section 8)."""
    stream: int = 0
    flags: int = 0
    error: int = 0
    type = RESET

    def _payload(self):
        return _u32(self.error)


@_frame
class GoAway:
    """GOAWAY (section 9)."""
    stream: int = 0
    flags: int = 0
    last_stream: int = 0
    error: int = 0
    debug: str = ""
    type = GOAWAY

    def _payload(self):
        parts = [_GOAWAY_HEAD.pack(self.last_stream, self.error)]
        _str16(parts, _text(self.debug), "debug")
        return b"".join(parts)


@_frame
class Unknown:
    """A frame of a type this version does not know (section 2: ignore it)."""
    type: int = 0xFF
    flags: int = 0
    stream: int = 0
    payload: bytes = b""

    def _payload(self):
        return _raw(self.payload, "payload")


# -- encoding ---------------------------------------------------------------------------------

def frame_header(ftype, flags, stream, length):
    """The 9-byte header alone, e.g. to write a DATA header and its body without joining them.
    Raises ValueError for a field that does not fit."""
    if not 0 <= length <= MAX_PAYLOAD:
        raise ValueError("a payload of %d bytes does not fit a u24 length" % length)
    if not 0 <= ftype <= 0xFF:
        raise ValueError("frame type %r does not fit a u8" % (ftype,))
    if not 0 <= stream <= MAX_STREAM_ID:
        raise ValueError("stream id %r does not fit 31 bits" % (stream,))
    try:
        return _HDR.pack((length << 8) | ftype, flags, stream)
    except struct.error as e:
        raise ValueError("flags %r: %s" % (flags, e)) from None


def encode(frame, max_frame=None):
    """The bytes of |frame| (header and payload). With max_frame (the peer's, from its HELLO)
    a larger payload is refused too. Raises ValueError when a field does not fit."""
    try:
        payload = frame._payload()
    except struct.error as e:
        raise ValueError("%s: %s" % (type(frame).__name__, e)) from None
    n = len(payload)
    if max_frame is not None and n > max_frame:
        raise ValueError("a payload of %d bytes is over max_frame %d" % (n, max_frame))
    return frame_header(frame.type, frame.flags, frame.stream, n) + payload


def encode_http_response(stream, flags, status, headers, max_frame=None):
    """HTTP_RESPONSE as encode(HttpResponse(...)) gives it, without the frame object: the
    app side writes one per request. |headers| are (name, value) byte strings."""
    try:
        parts = [_u16(status)]
    except struct.error as e:
        raise ValueError("HttpResponse: status %r: %s" % (status, e)) from None
    _headers_out(parts, headers)
    payload = b"".join(parts)
    n = len(payload)
    if max_frame is not None and n > max_frame:
        raise ValueError("a payload of %d bytes is over max_frame %d" % (n, max_frame))
    return frame_header(HTTP_RESPONSE, flags, stream, n) + payload


# -- decoding ---------------------------------------------------------------------------------
#
# Each parser takes (stream, flags, payload bytes) and returns the frame. Strings and counts
# are walked first with unpack_from and slices: a length running past the end gives a short
# slice and an offset past the end (or a struct.error on the next unpack), both caught as
# FRAME_SIZE; text is decoded only once the layout is known to be right, so that a truncated
# payload is FRAME_SIZE even when the cut falls inside a UTF-8 sequence.

def _parse_headers(p, o):
    (count,) = _u16_from(p, o)
    o += 2
    headers = []
    append = headers.append
    u16 = _u16_from
    for _ in range(count):
        (n,) = u16(p, o)
        o += 2
        name = p[o:o + n]
        o += n
        (n,) = u16(p, o)
        o += 2
        append((name, p[o:o + n]))
        o += n
    return headers, o


def _parse_scope(p):
    """The section 4.1 layout: returns the raw fields and the offset after the headers."""
    u16 = _u16_from
    (n,) = u16(p, 0)
    o = 2 + n
    hv = p[2:o]
    (n,) = u16(p, o)
    o += 2
    method = p[o:o + n]
    o += n
    (n,) = u16(p, o)
    o += 2
    scheme = p[o:o + n]
    o += n
    (n,) = u16(p, o)
    o += 2
    path = p[o:o + n]
    o += n
    (n,) = u16(p, o)
    o += 2
    raw_path = p[o:o + n]
    o += n
    (n,) = u16(p, o)
    o += 2
    query = p[o:o + n]
    o += n
    (n,) = u16(p, o)
    o += 2
    root = p[o:o + n]
    o += n
    (n,) = u16(p, o)
    o += 2
    chost = p[o:o + n]
    o += n
    (cport,) = u16(p, o)
    o += 2
    (n,) = u16(p, o)
    o += 2
    shost = p[o:o + n]
    o += n
    (sport,) = u16(p, o)
    o += 2
    headers, o = _parse_headers(p, o)
    return (hv, method, scheme, path, raw_path, query, root, chost, cport, shost, sport,
            headers, o)


def _scope_fields(raw):
    """The decoded scope fields, in HttpRequest's order after stream and flags."""
    hv, method, scheme, path, raw_path, query, root, chost, cport, shost, sport, headers, _ = raw
    return (hv.decode(), method.decode(), scheme.decode(),
            path.decode("utf-8", "surrogateescape"), raw_path, query,
            root.decode("utf-8", "surrogateescape"),
            (chost.decode(), cport) if chost else None,
            (shost.decode(), sport) if shost else None,
            headers)


def _end(p, o):
    if o != len(p):
        if o > len(p):
            raise _Layout("truncated payload (its fields need %d bytes, it has %d)" % (o, len(p)))
        raise _Layout("%d bytes after the last field" % (len(p) - o))


def _p_hello(sid, flags, p):
    if len(p) != _HELLO.size:
        raise _Layout("a HELLO payload is %d bytes, not %d" % (_HELLO.size, len(p)))
    magic, version, max_frame, max_streams, credit, caps = _HELLO.unpack(p)
    if magic != MAGIC:
        raise ProtocolError(PROTOCOL, "bad HELLO magic %r" % magic)
    return Hello(sid, flags, version, max_frame, max_streams, credit, caps)


def _p_http_request(sid, flags, p, tls=False):
    raw = _parse_scope(p)
    tls, o = _tls_in(p, raw[-1], tls)
    _end(p, o)
    return HttpRequest(sid, flags, *_scope_fields(raw), tls)


def _p_data(sid, flags, p):
    return Data(sid, flags, p)


def _p_http_response(sid, flags, p):
    (status,) = _u16_from(p, 0)
    headers, o = _parse_headers(p, 2)
    _end(p, o)
    return HttpResponse(sid, flags, status, headers)


def _p_trailers(sid, flags, p):
    headers, o = _parse_headers(p, 0)
    _end(p, o)
    return Trailers(sid, flags, headers)


def _p_pathsend(sid, flags, p):
    (n,) = _u16_from(p, 0)
    _end(p, 2 + n)
    return PathSend(sid, flags, p[2:].decode("utf-8", "surrogateescape"))


def _code_reason(p):
    code, n = struct.unpack_from(">HH", p, 0)
    _end(p, 4 + n)
    return code, p[4:].decode()


def _p_disconnect(sid, flags, p):
    return Disconnect(sid, flags, *_code_reason(p))


def _p_ws_connect(sid, flags, p, tls=False):
    raw = _parse_scope(p)
    o = raw[-1]
    (count,) = _u16_from(p, o)
    o += 2
    offers = []
    for _ in range(count):
        (n,) = _u16_from(p, o)
        o += 2
        offers.append(p[o:o + n])
        o += n
    tls, o = _tls_in(p, o, tls)
    _end(p, o)
    return WsConnect(sid, flags, *_scope_fields(raw), [s.decode() for s in offers], tls)


def _p_ws_accept(sid, flags, p):
    (n,) = _u16_from(p, 0)
    sub = p[2:2 + n]
    headers, o = _parse_headers(p, 2 + n)
    _end(p, o)
    return WsAccept(sid, flags, sub.decode() if sub else None, headers)


def _p_ws_message(sid, flags, p):
    return WsMessage(sid, flags, p)


def _p_ws_close(sid, flags, p):
    return WsClose(sid, flags, *_code_reason(p))


def _p_credit(sid, flags, p):
    if len(p) != 4:
        raise _Layout("a CREDIT payload is 4 bytes, not %d" % len(p))
    return Credit(sid, flags, _U32.unpack(p)[0])


def _p_ping(sid, flags, p):
    if len(p) != 8:
        raise _Layout("a PING payload is 8 bytes, not %d" % len(p))
    return Ping(sid, flags, p)


def _p_reset(sid, flags, p):
    if len(p) != 4:
        raise _Layout("a RESET payload is 4 bytes, not %d" % len(p))
    return Reset(sid, flags, _U32.unpack(p)[0])


def _p_goaway(sid, flags, p):
    last, error, n = struct.unpack_from(">IIH", p, 0)
    _end(p, 10 + n)
    return GoAway(sid, flags, last, error, p[10:].decode())


_PARSERS = (
    _p_hello, _p_http_request, _p_data, _p_http_response, _p_trailers, _p_pathsend,
    _p_disconnect, _p_ws_connect, _p_ws_accept, _p_ws_message, _p_ws_close, _p_credit,
    _p_ping, _p_reset, _p_goaway,
)
_N_KNOWN = len(_PARSERS)


class FrameDecoder:
    """Incremental decoder of the frames of one connection.

    max_frame: the largest payload accepted, i.e. the max_frame *this side* announced in its
    HELLO (16384, the protocol's default, until then). It may be changed at any time."""

    __slots__ = ("_buf", "_pos", "max_frame", "_error", "tls")

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self._buf = b""        # bytes (as fed, not copied) or a bytearray accumulating
        self._pos = 0          # start of the first unconsumed frame in _buf
        self.max_frame = max_frame
        self._error = None     # the fatal ProtocolError, once raised
        self.tls = False       # CAP_TLS negotiated: requests end with the tls block

    def feed(self, data):
        """Append bytes received from the peer."""
        if not data:
            return
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            # nothing pending: keep the caller's bytes as they are
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return
        if type(buf) is bytes:
            with memoryview(buf) as mv:
                buf = bytearray(mv[pos:])
            self._buf = buf
        elif pos:
            del buf[:pos]      # O(1) at the front of a bytearray in CPython
        self._pos = 0
        buf += data

    @property
    def buffered(self):
        """The number of bytes fed and not yet returned as frames."""
        return len(self._buf) - self._pos

    def next_frame(self):
        """The next whole frame, or NeedData. Raises ProtocolError (see the module doc)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        start = pos + 9
        if len(buf) < start:
            return NeedData
        lt, flags, sid = _HDR.unpack_from(buf, pos)
        length = lt >> 8
        sid &= MAX_STREAM_ID
        if length > self.max_frame:
            self._error = ProtocolError(
                FRAME_SIZE, "a frame of %d bytes is over max_frame %d" % (length, self.max_frame),
                sid, lt & 0xFF, True)
            raise self._error
        end = start + length
        if len(buf) < end:
            return NeedData
        if type(buf) is bytes:
            p = buf[start:end]
        else:
            with memoryview(buf) as mv:
                p = mv[start:end].tobytes()
        if end == len(buf):
            self._buf = b""
            self._pos = 0
        else:
            self._pos = end
        ftype = lt & 0xFF
        if ftype == DATA:
            return Data(sid, flags, p)
        if ftype >= _N_KNOWN:
            return Unknown(ftype, flags, sid, p)
        try:
            if self.tls and (ftype == HTTP_REQUEST or ftype == WS_CONNECT):
                return _PARSERS[ftype](sid, flags, p, True)
            return _PARSERS[ftype](sid, flags, p)
        except (_Layout, struct.error) as e:
            if isinstance(e, struct.error):
                e = "truncated payload"
            raise ProtocolError(FRAME_SIZE, "%s: %s" % (TYPE_NAMES[ftype], e),
                                sid, ftype) from None
        except UnicodeDecodeError as e:
            raise ProtocolError(PROTOCOL, "%s: a text field is not UTF-8 (%s)"
                                % (TYPE_NAMES[ftype], e.reason), sid, ftype) from None
        except ProtocolError as e:
            e.stream = sid
            e.frame_type = ftype
            raise

    def frames(self):
        """Yield every whole frame buffered now (stops at NeedData)."""
        while True:
            f = self.next_frame()
            if f is NeedData:
                return
            yield f
