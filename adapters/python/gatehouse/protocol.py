# SPDX-License-Identifier: MIT
"""The uwsgi request packet, sans-I/O: bytes in, events out (no sockets, no clock).

A packet is a 4-byte header -- u8 modifier1, u16 little-endian datasize, u8 modifier2 --
followed by datasize bytes of vars, each var being ``u16le key_len, key, u16le val_len,
value``. For a WSGI request modifier1 and modifier2 are 0. The request body follows the packet
on the same connection and is CONTENT_LENGTH bytes long; reading it is the server's business,
the decoder only hands back whatever bytes it was fed past the packet (``trailing_data``).

    dec = RequestDecoder()
    dec.feed(data)
    event = dec.next_event()      # NeedData, or a Request once the packet is whole

Keys and values stay bytes here; turning them into a WSGI environ (latin-1, PEP 3333) is
wsgi.py's job.
"""

import struct

__all__ = [
    "MAX_DATASIZE",
    "NeedData",
    "ProtocolError",
    "Request",
    "RequestDecoder",
    "encode_request",
]

MAX_DATASIZE = 0xFFFF
_HEADER = struct.Struct("<BHB")
_U16 = struct.Struct("<H")


class ProtocolError(Exception):
    """The peer sent bytes that are not a well-formed uwsgi packet."""


class NeedData:
    """Sentinel returned by RequestDecoder.next_event(): feed more bytes, then ask again.

    The class itself is the event (as h11's NEED_DATA is); it is never instantiated."""

    def __new__(cls):  # pragma: no cover - guard against misuse
        raise TypeError("NeedData is a sentinel; compare with `is NeedData`")


class Request:
    """A complete request packet: its modifiers and its vars in wire order."""

    __slots__ = ("modifier1", "modifier2", "vars")

    def __init__(self, modifier1, modifier2, vars):
        self.modifier1 = modifier1
        self.modifier2 = modifier2
        self.vars = vars  # list of (bytes, bytes)

    def __eq__(self, other):
        if not isinstance(other, Request):
            return NotImplemented
        return (self.modifier1, self.modifier2, self.vars) == (
            other.modifier1,
            other.modifier2,
            other.vars,
        )

    def __repr__(self):
        return "Request(modifier1=%d, modifier2=%d, vars=%r)" % (
            self.modifier1,
            self.modifier2,
            self.vars,
        )


def _as_bytes(x, what):
    if isinstance(x, bytes):
        return x
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        try:
            return x.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("%s %r is not latin-1" % (what, x)) from None
    raise TypeError("%s must be bytes or str, not %s" % (what, type(x).__name__))


def encode_request(vars, modifier1=0, modifier2=0):
    """The packet carrying |vars| (a mapping, or an iterable of (key, value) pairs; bytes, or
    str encoded as latin-1). Raises ValueError when a key, a value or the whole vars block
    does not fit its 16-bit length."""
    if not (0 <= modifier1 <= 255 and 0 <= modifier2 <= 255):
        raise ValueError("modifiers are single bytes")
    items = vars.items() if hasattr(vars, "items") else vars
    parts = []
    size = 0
    for key, value in items:
        k = _as_bytes(key, "key")
        v = _as_bytes(value, "value")
        if len(k) > MAX_DATASIZE:
            raise ValueError("key of %d bytes exceeds %d" % (len(k), MAX_DATASIZE))
        if len(v) > MAX_DATASIZE:
            raise ValueError("value of %r is %d bytes, over %d" % (k[:40], len(v), MAX_DATASIZE))
        parts += (_U16.pack(len(k)), k, _U16.pack(len(v)), v)
        size += 4 + len(k) + len(v)
        if size > MAX_DATASIZE:
            raise ValueError("vars exceed %d bytes" % MAX_DATASIZE)
    return _HEADER.pack(modifier1, size, modifier2) + b"".join(parts)


def _parse_vars(block):
    out = []
    off = 0
    end = len(block)
    while off < end:
        if end - off < 2:
            raise ProtocolError("truncated key length at offset %d" % off)
        (klen,) = _U16.unpack_from(block, off)
        off += 2
        if end - off < klen:
            raise ProtocolError("key of %d bytes overruns the vars block" % klen)
        key = bytes(block[off : off + klen])
        off += klen
        if end - off < 2:
            raise ProtocolError("truncated value length for key %r" % key[:40])
        (vlen,) = _U16.unpack_from(block, off)
        off += 2
        if end - off < vlen:
            raise ProtocolError("value of %d bytes for key %r overruns the vars block"
                                % (vlen, key[:40]))
        out.append((key, bytes(block[off : off + vlen])))
        off += vlen
    return out


class RequestDecoder:
    """Incremental decoder of one request packet (one per connection)."""

    def __init__(self):
        self._buf = bytearray()
        self._request = None

    def feed(self, data):
        """Append bytes received from the peer (past the packet they become trailing_data)."""
        self._buf += data

    def next_event(self):
        """NeedData until the packet is complete, then the Request (again on every later
        call). Raises ProtocolError on malformed vars."""
        if self._request is not None:
            return self._request
        if len(self._buf) < _HEADER.size:
            return NeedData
        modifier1, size, modifier2 = _HEADER.unpack_from(self._buf, 0)
        if len(self._buf) < _HEADER.size + size:
            return NeedData
        block = memoryview(self._buf)[_HEADER.size : _HEADER.size + size]
        try:
            vars = _parse_vars(block)
        finally:
            block.release()
        del self._buf[: _HEADER.size + size]
        self._request = Request(modifier1, modifier2, vars)
        return self._request

    @property
    def trailing_data(self):
        """Bytes fed past the end of the packet (the start of the body), or b"" before the
        packet is complete."""
        if self._request is None:
            return b""
        return bytes(self._buf)
