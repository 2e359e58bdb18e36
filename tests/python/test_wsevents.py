# SPDX-License-Identifier: MIT
"""gatehouse.wsevents: the application/websocket-events body format (Pushpin's
WebSocket-over-HTTP) that gatehouse POSTs to a blocking app for a WebSocket, and that the app
answers with. The wire format must match the gateway's codec (gateway/woh_codec.c)."""

import pytest

from gatehouse import wsevents
from gatehouse.wsevents import Event, close_content, decode, encode, is_events, parse_close


# ----------------------------------------------------------------------------------------
# decode: every event type
# ----------------------------------------------------------------------------------------

def test_decode_events_without_content():
    body = b"OPEN\r\nPING\r\nPONG\r\nDISCONNECT\r\n"
    assert decode(body) == [Event("OPEN"), Event("PING"), Event("PONG"), Event("DISCONNECT")]


def test_decode_text_and_binary():
    body = (b"TEXT 6\r\nh\xc3\xa9llo\r\n"
            b"BINARY 4\r\n\x00\xff\r\n\r\n")
    events = decode(body)
    assert events == [Event("TEXT", "h\u00e9llo".encode()), Event("BINARY", b"\x00\xff\r\n")]
    assert events[0].text == "h\u00e9llo"
    assert all(isinstance(e.content, bytes) for e in events)


def test_decode_content_with_crlf_and_event_names_inside():
    # The size, not the content, says where an event ends.
    inner = b"CLOSE 2\r\n\x03\xe8\r\n"
    assert decode(b"BINARY %X\r\n%s\r\nOPEN\r\n" % (len(inner), inner)) == \
        [Event("BINARY", inner), Event("OPEN")]


def test_decode_size_is_hexadecimal_either_case():
    content = b"x" * 26
    assert decode(b"TEXT 1A\r\n" + content + b"\r\n") == [Event("TEXT", content)]
    assert decode(b"TEXT 1a\r\n" + content + b"\r\n") == [Event("TEXT", content)]
    assert decode(b"TEXT 001a\r\n" + content + b"\r\n") == [Event("TEXT", content)]
    # Up to 16 digits.
    assert decode(b"TEXT 000000000000001a\r\n" + content + b"\r\n") == [Event("TEXT", content)]


def test_decode_close_with_code_and_reason():
    events = decode(b"CLOSE 6\r\n\x03\xe8bye!\r\n")   # code 1000, reason "bye!"
    assert events == [Event("CLOSE", b"\x03\xe8bye!")]
    assert parse_close(events[0].content) == (1000, "bye!")


def test_decode_close_without_content():
    for body in (b"CLOSE\r\n", b"CLOSE 0\r\n\r\n"):
        (ev,) = decode(body)
        assert ev == Event("CLOSE", b"")
        assert parse_close(ev.content) == (1005, "")


def test_decode_empty_messages():
    # An empty message may come with a size of 0 or no size at all.
    assert decode(b"TEXT 0\r\n\r\n") == [Event("TEXT", b"")]
    assert decode(b"BINARY 0\r\n\r\n") == [Event("BINARY", b"")]
    assert decode(b"TEXT\r\nBINARY\r\n") == [Event("TEXT", b""), Event("BINARY", b"")]
    assert decode(b"TEXT 0\r\n\r\n")[0].text == ""


def test_decode_empty_body():
    # A keep-alive POST (or an answer with nothing to say) has no events.
    assert decode(b"") == []


def test_decode_ping_pong_content_is_skipped():
    # As the gateway does: a PING or PONG with content is read past, its content dropped.
    assert decode(b"PING 3\r\nabc\r\nPONG 1\r\nz\r\nOPEN\r\n") == \
        [Event("PING"), Event("PONG"), Event("OPEN")]


def test_decode_a_whole_batch_in_order():
    body = encode([("OPEN", b""), ("TEXT", "one"), ("BINARY", b"\x01"), ("PING", b""),
                   ("TEXT", "two"), ("CLOSE", close_content(1001, "away"))])
    assert [e.type for e in decode(body)] == ["OPEN", "TEXT", "BINARY", "PING", "TEXT", "CLOSE"]


# ----------------------------------------------------------------------------------------
# decode: malformed input raises ValueError
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"HELLO\r\n",                  # unknown event
    b"open\r\n",                   # names are upper case
    b"OPEN \r\n",                  # a space and no size
    b"TEXTS 1\r\nx\r\n",
    b" TEXT 1\r\nx\r\n",
    b"\r\n",                       # an empty line is no event
], ids=["unknown", "lowercase", "trailing-space", "longer-name", "leading-space", "empty-line"])
def test_decode_unknown_event(body):
    with pytest.raises(ValueError):
        decode(body)


@pytest.mark.parametrize("size", [
    b"", b"-1", b"+1", b"0x1", b"1_0", b" 1", b"1 ", b"g", b"1.0", b"\xff",
    b"1" + b"0" * 16,              # 17 digits
], ids=["empty", "negative", "plus", "0x", "underscore", "lead-space", "trail-space", "g",
        "dot", "non-ascii", "17-digits"])
def test_decode_bad_size(size):
    with pytest.raises(ValueError):
        decode(b"TEXT " + size + b"\r\nx\r\n")


@pytest.mark.parametrize("body", [
    b"TEXT 5\r\nabc",              # content cut short, no CRLF
    b"TEXT 5\r\nabc\r\n",          # content cut short: its CRLF counted as content
    b"TEXT 5\r\nabcde",            # whole content, no CRLF after it
    b"TEXT 5\r\nabcde\r",          # half the CRLF
    b"TEXT 5\r\nabcdeXY",          # not CRLF after the content
    b"TEXT 3\r\nabcde\r\n",        # more content than the size says
    b"BINARY 10\r\n",              # no content at all
    b"CLOSE 2\r\n\x03",
], ids=["short", "short-crlf", "no-crlf", "half-crlf", "not-crlf", "too-long", "none",
        "close-short"])
def test_decode_cut_content(body):
    with pytest.raises(ValueError):
        decode(body)


@pytest.mark.parametrize("body", [
    b"OPEN",                       # the body ends inside a line
    b"OPEN\n",                     # LF alone
    b"OPEN\r",
    b"OPEN\r\nTEXT",
    b"OPEN\nTEXT 1\r\nx\r\n",
    b"TEXT " + b"0" * 40 + b"\r\n\r\n",   # a line longer than any event line
], ids=["eof", "lf", "cr", "eof-second", "lf-then-event", "long-line"])
def test_decode_missing_crlf(body):
    with pytest.raises(ValueError):
        decode(body)


def test_decode_errors_say_what():
    with pytest.raises(ValueError, match="unknown event"):
        decode(b"NOPE\r\n")
    with pytest.raises(ValueError, match="bad size"):
        decode(b"TEXT z\r\n")
    with pytest.raises(ValueError, match="cut short"):
        decode(b"TEXT 9\r\nab\r\n")
    with pytest.raises(ValueError, match="CRLF"):
        decode(b"OPEN")


# ----------------------------------------------------------------------------------------
# encode
# ----------------------------------------------------------------------------------------

def test_encode_events_without_content():
    assert encode([Event("OPEN"), Event("PING"), Event("PONG"), Event("DISCONNECT")]) == \
        b"OPEN\r\nPING\r\nPONG\r\nDISCONNECT\r\n"


def test_encode_text_binary_close():
    assert encode([Event("TEXT", b"hi")]) == b"TEXT 2\r\nhi\r\n"
    assert encode([Event("BINARY", b"\x00" * 26)]) == b"BINARY 1A\r\n" + b"\x00" * 26 + b"\r\n"
    assert encode([Event("CLOSE", close_content(1000))]) == b"CLOSE 2\r\n\x03\xe8\r\n"


def test_encode_str_content_is_utf8():
    assert encode([("TEXT", "h\u00e9")]) == b"TEXT 3\r\nh\xc3\xa9\r\n"
    assert encode([Event("TEXT", "\u2713".encode())]) == b"TEXT 3\r\n\xe2\x9c\x93\r\n"


def test_encode_pairs_and_one_element_tuples():
    assert encode([("OPEN",), ("TEXT", "a"), ("PING", b"")]) == \
        b"OPEN\r\nTEXT 1\r\na\r\nPING\r\n"


def test_encode_empty_messages_keep_their_size():
    # An empty TEXT, BINARY or CLOSE still carries its (zero) size, as the gateway writes it.
    assert encode([("TEXT", ""), ("BINARY", b""), ("CLOSE", b"")]) == \
        b"TEXT 0\r\n\r\nBINARY 0\r\n\r\nCLOSE 0\r\n\r\n"


def test_encode_bytes_like_content():
    assert encode([("BINARY", bytearray(b"ab")), ("BINARY", memoryview(b"cd"))]) == \
        b"BINARY 2\r\nab\r\nBINARY 2\r\ncd\r\n"


def test_encode_nothing():
    assert encode([]) == b""
    assert encode(iter(())) == b""


def test_encode_takes_any_iterable():
    assert encode(Event("TEXT", str(i).encode()) for i in range(2)) == \
        b"TEXT 1\r\n0\r\nTEXT 1\r\n1\r\n"


def test_encode_unknown_event():
    with pytest.raises(ValueError):
        encode([("HELLO", b"")])
    with pytest.raises(ValueError):
        encode([("text", "lower case")])


def test_encode_large_content():
    big = bytes(range(256)) * 4096    # 1 MiB
    body = encode([("BINARY", big)])
    assert body.startswith(b"BINARY 100000\r\n")
    assert decode(body) == [Event("BINARY", big)]


# ----------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------

ROUND_TRIP = [
    Event("OPEN"),
    Event("TEXT", "plain".encode()),
    Event("TEXT", "\u00e9\u2713\U0001F600 with\r\nCRLF and TEXT 5\r\n inside".encode()),
    Event("TEXT", b""),
    Event("BINARY", bytes(range(256))),
    Event("BINARY", b""),
    Event("BINARY", b"\r\n"),
    Event("PING"),
    Event("PONG"),
    Event("CLOSE", close_content(4000, "app says bye")),
    Event("CLOSE", b""),
    Event("DISCONNECT"),
]


def test_round_trip_every_event():
    assert decode(encode(ROUND_TRIP)) == ROUND_TRIP


@pytest.mark.parametrize("ev", ROUND_TRIP, ids=lambda e: e.type)
def test_round_trip_one_by_one(ev):
    assert decode(encode([ev])) == [ev]
    # Re-encoding what was decoded gives the same bytes.
    assert encode(decode(encode([ev]))) == encode([ev])


@pytest.mark.parametrize("n", [0, 1, 15, 16, 255, 256, 4095, 4096, 65536])
def test_round_trip_sizes(n):
    content = b"\xab" * n
    body = encode([("BINARY", content), ("OPEN", b"")])
    assert body.startswith(b"BINARY %X\r\n" % n)
    assert decode(body) == [Event("BINARY", content), Event("OPEN")]


def test_decode_of_a_concatenation_is_the_concatenation():
    a, b = ROUND_TRIP[:5], ROUND_TRIP[5:]
    assert decode(encode(a) + encode(b)) == a + b


# ----------------------------------------------------------------------------------------
# CLOSE helpers
# ----------------------------------------------------------------------------------------

def test_close_content():
    assert close_content() == b"\x03\xe8"
    assert close_content(1001) == b"\x03\xe9"
    assert close_content(4000, "bye") == b"\x0f\xa0bye"
    assert close_content(1000, "\u00e9") == b"\x03\xe8\xc3\xa9"


def test_parse_close():
    assert parse_close(b"\x03\xe8") == (1000, "")
    assert parse_close(b"\x0f\xa0bye") == (4000, "bye")
    assert parse_close(b"\x03\xe8\xc3\xa9") == (1000, "\u00e9")
    assert parse_close(b"") == (1005, "")
    assert parse_close(b"\x03") == (1005, "")        # one byte is no code
    # A reason that is not UTF-8 does not raise.
    code, reason = parse_close(b"\x03\xe8\xff")
    assert code == 1000 and isinstance(reason, str)


@pytest.mark.parametrize("code,reason", [(1000, ""), (1001, "going away"), (1011, "oops"),
                                         (3000, "\u2713"), (4999, "x" * 100)])
def test_close_round_trip(code, reason):
    (ev,) = decode(encode([Event("CLOSE", close_content(code, reason))]))
    assert ev.type == "CLOSE" and parse_close(ev.content) == (code, reason)


def test_close_content_fits_a_close_frame():
    # A close frame's payload is at most 125 bytes (RFC 6455 5.5): the gateway refuses a
    # longer CLOSE, so a long reason is cut, on a character boundary.
    c = close_content(1000, "x" * 200)
    assert len(c) == 125 and parse_close(c) == (1000, "x" * 123)
    c = close_content(1000, "\u00e9" * 100)   # 2 bytes each: 61 fit in 123
    assert len(c) == 124 and parse_close(c) == (1000, "\u00e9" * 61)
    c = close_content(1000, "\u2713" * 50)    # 3 bytes each: 41 fit
    assert len(c) == 125 and parse_close(c) == (1000, "\u2713" * 41)


def test_close_content_bad_code():
    for code in (-1, 0, 999, 5000, 65536):
        with pytest.raises(ValueError):
            close_content(code)


# ----------------------------------------------------------------------------------------
# is_events, Event, constants
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ct,ok", [
    ("application/websocket-events", True),
    ("Application/WebSocket-Events", True),
    ("application/websocket-events; charset=utf-8", True),
    ("  application/websocket-events ;x=y", True),
    ("", False),
    ("application/json", False),
    ("application/websocket-events-x", False),
    ("text/plain; application/websocket-events", False),
])
def test_is_events(ct, ok):
    assert is_events({"CONTENT_TYPE": ct}) is ok


def test_is_events_without_content_type():
    assert is_events({}) is False
    assert is_events({"HTTP_CONTENT_TYPE": wsevents.CONTENT_TYPE}) is False   # WSGI's key


def test_constants_and_event():
    assert wsevents.CONTENT_TYPE == "application/websocket-events"
    assert set(wsevents.TYPES) == {"OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE",
                                   "DISCONNECT"}
    ev = Event("OPEN")
    assert ev.content == b"" and ev.type == "OPEN" and ev == ("OPEN", b"")
    assert Event("TEXT", b"\xc3\xa9").text == "\u00e9"
    with pytest.raises(UnicodeDecodeError):
        Event("TEXT", b"\xff").text
