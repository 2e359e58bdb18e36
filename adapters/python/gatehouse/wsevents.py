# SPDX-License-Identifier: MIT
"""WebSocket-over-HTTP events, the body format of the POSTs gatehouse makes to a blocking app
for a WebSocket (Pushpin's ``application/websocket-events``). Standard library only.

A uwsgi route that receives a WebSocket handshake turns the WebSocket into short POSTs to the
original path, each carrying the client's events since the last one; the app answers with its
own events. See adapters/uwsgi/WEBSOCKET.md. A minimal Flask echo::

    from gatehouse import wsevents

    @app.post("/ws")
    def ws():
        out = []
        for ev in wsevents.decode(request.get_data()):
            if ev.type == "OPEN":
                out.append(wsevents.Event("OPEN"))
            elif ev.type in ("TEXT", "BINARY"):
                out.append(ev)                      # echo
            elif ev.type == "CLOSE":
                out.append(ev)                      # answer the client's close
        return wsevents.encode(out), {"Content-Type": wsevents.CONTENT_TYPE}
"""

from typing import Iterable, List, NamedTuple, Tuple, Union

CONTENT_TYPE = "application/websocket-events"

TYPES = ("OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT")
_WITH_CONTENT = ("TEXT", "BINARY", "CLOSE")
_MAX_LINE = 32
_CLOSE_REASON_MAX = 123      # a close frame's payload is at most 125 bytes (RFC 6455 5.5)


class Event(NamedTuple):
    """One event: its |type| (one of TYPES) and its |content| (bytes; for TEXT, UTF-8)."""
    type: str
    content: bytes = b""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")


def decode(body: bytes) -> List[Event]:
    """The events of a request body. Raises ValueError on malformed input (an unknown event,
    a bad size, content cut short or not followed by CRLF)."""
    events = []
    pos, n = 0, len(body)
    while pos < n:
        eol = body.find(b"\r\n", pos, pos + _MAX_LINE)
        if eol < 0:
            raise ValueError("event line without CRLF at byte %d" % pos)
        line = body[pos:eol].decode("latin-1")
        pos = eol + 2
        name, sep, size = line.partition(" ")
        if name not in TYPES:
            raise ValueError("unknown event %r" % name)
        content = b""
        if sep:
            if not size or len(size) > 16 or any(c not in "0123456789abcdefABCDEF" for c in size):
                raise ValueError("bad size %r" % size)
            k = int(size, 16)
            if pos + k + 2 > n or body[pos + k:pos + k + 2] != b"\r\n":
                raise ValueError("%s content cut short or not followed by CRLF" % name)
            content = body[pos:pos + k]
            pos += k + 2
        events.append(Event(name, content if name in _WITH_CONTENT else b""))
    return events


def encode(events: Iterable[Union[Event, Tuple[str, Union[bytes, str]]]]) -> bytes:
    """The body for |events| (Event or (type, content) pairs; str content is UTF-8)."""
    out = bytearray()
    for ev in events:
        kind, content = ev[0], ev[1] if len(ev) > 1 else b""
        if kind not in TYPES:
            raise ValueError("unknown event %r" % kind)
        if isinstance(content, str):
            content = content.encode("utf-8")
        if content or kind in _WITH_CONTENT:
            out += b"%s %X\r\n" % (kind.encode(), len(content))
            out += content
            out += b"\r\n"
        else:
            out += kind.encode() + b"\r\n"
    return bytes(out)


def close_content(code: int = 1000, reason: str = "") -> bytes:
    """The content of a CLOSE event: the code (2 bytes, big-endian) and the UTF-8 reason, cut
    on a character boundary to fit a close frame (125 bytes in all: the gateway refuses a
    longer CLOSE). Raises ValueError for a code outside 1000-4999."""
    if not 1000 <= code <= 4999:
        raise ValueError("close code %r is not in 1000-4999" % (code,))
    raw = reason.encode("utf-8")
    if len(raw) > _CLOSE_REASON_MAX:
        raw = raw[:_CLOSE_REASON_MAX].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + raw


def parse_close(content: bytes) -> Tuple[int, str]:
    """(code, reason) of a CLOSE event's content; (1005, "") when it has none."""
    if len(content) < 2:
        return 1005, ""
    return int.from_bytes(content[:2], "big"), content[2:].decode("utf-8", "replace")


def is_events(environ) -> bool:
    """Whether a WSGI request carries WebSocket events (its Content-Type says so)."""
    ct = environ.get("CONTENT_TYPE", "")
    return ct.split(";", 1)[0].strip().lower() == CONTENT_TYPE
