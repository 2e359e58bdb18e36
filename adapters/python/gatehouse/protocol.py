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
    """A complete request packet: its modifiers and its vars in wire order.

    A decoded packet keeps its checked vars block and splits it only when asked: the server
    wants text (text_vars()), tests and tools want the byte pairs (vars)."""

    __slots__ = ("modifier1", "modifier2", "_vars", "_block", "_text")

    def __init__(self, modifier1, modifier2, vars=None, block=None, text=None):
        self.modifier1 = modifier1
        self.modifier2 = modifier2
        self._vars = vars  # list of (bytes, bytes), or None until asked
        self._block = block  # the checked vars block (bytes), when decoded
        self._text = text  # its environ strings, when decoded

    @property
    def vars(self):
        """The vars as a list of (key, value) bytes pairs, in wire order."""
        if self._vars is None:
            self._vars = _split_vars(self._block)
        return self._vars

    def text_vars(self):
        """The vars as a dict of latin-1 str (PEP 3333's environ strings); a repeated key keeps
        its last value; an empty key is skipped."""
        if self._text is None:
            return {k.decode("latin-1"): v.decode("latin-1") for k, v in self._vars if k}
        return dict(self._text)

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


def _split_vars(block):
    """The (key, value) bytes pairs of a checked block."""
    out = []
    off = 0
    end = len(block)
    while off < end:
        klen = block[off] | block[off + 1] << 8
        key_at = off + 2
        off = key_at + klen
        vlen = block[off] | block[off + 1] << 8
        val_at = off + 2
        off = val_at + vlen
        out.append((block[key_at:key_at + klen], block[val_at:off]))
    return out


def _text_vars(block):
    """Checks |block| (bytes) and returns its vars as environ strings: one latin-1 decode,
    then str slices; lengths are read with indexing, not struct (this runs per request).
    Raises ProtocolError when a length runs past the block."""
    text = block.decode("latin-1")
    env = {}
    off = 0
    end = len(block)
    while off < end:
        if end - off < 2:
            raise ProtocolError("truncated key length at offset %d" % off)
        klen = block[off] | block[off + 1] << 8
        key_at = off + 2
        off = key_at + klen
        if end - off < 2:
            raise ProtocolError("key of %d bytes at offset %d leaves no value length"
                                % (klen, key_at - 2))
        vlen = block[off] | block[off + 1] << 8
        val_at = off + 2
        off = val_at + vlen
        if off > end:
            raise ProtocolError("value of %d bytes for key %r overruns the vars block"
                                % (vlen, text[key_at:key_at + min(klen, 40)]))
        if klen:
            env[text[key_at:key_at + klen]] = text[val_at:off]
    return env


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
        block = bytes(self._buf[_HEADER.size : _HEADER.size + size])
        text = _text_vars(block)
        del self._buf[: _HEADER.size + size]
        self._request = Request(modifier1, modifier2, block=block, text=text)
        return self._request

    @property
    def trailing_data(self):
        """Bytes fed past the end of the packet (the start of the body), or b"" before the
        packet is complete."""
        if self._request is None:
            return b""
        return bytes(self._buf)
