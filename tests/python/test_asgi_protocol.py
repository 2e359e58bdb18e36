# SPDX-License-Identifier: MIT
"""gatehouse.asgi_protocol: the frames of adapters/asgi/PROTOCOL.md against the shared golden
vectors (tests/vectors/asgi/*.bin + .txt, the same files the C codec is held to), incremental
decoding, and the errors of both directions."""

import glob
import os
import random
import struct

import pytest

from gatehouse import asgi_protocol as ap
from gatehouse.asgi_protocol import (Credit, Data, Disconnect, FrameDecoder, GoAway, Hello,
                                     HttpRequest, HttpResponse, NeedData, PathSend, Ping,
                                     ProtocolError, Reset, Trailers, Unknown, WsAccept,
                                     WsClose, WsConnect, WsMessage, encode)

VECTORS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "vectors", "asgi"))

REQUIRED = """hello_gateway hello_app_ack http_request_get_end http_request_post
    http_request_utf8_path data_body data_end_empty http_response_200
    http_response_trailers_more trailers_end pathsend disconnect_http disconnect_ws ws_connect
    ws_accept ws_message_text ws_message_binary_more ws_close credit ping ping_ack reset goaway
    unknown_type""".split()

SCOPE = ["http_version", "method", "scheme", "path", "raw_path", "query_string", "root_path",
         "client_host", "client_port", "server_host", "server_port", "header*"]
LAYOUT = {  # PROTOCOL.md's field order per type; "x*" is a repeated line (a counted list)
    0: ["magic", "version", "max_frame", "max_streams", "initial_credit", "capabilities"],
    1: SCOPE,
    2: ["data"],
    3: ["status", "header*"],
    4: ["header*"],
    5: ["path"],
    6: ["code", "reason"],
    7: SCOPE + ["offer*"],
    8: ["subprotocol", "header*"],
    9: ["data"],
    10: ["code", "reason"],
    11: ["increment"],
    12: ["data"],
    13: ["error"],
    14: ["last_stream", "error", "debug"],
}


# -- the .txt format (tests/vectors/asgi/README.md) ------------------------------------------

def _parse_value(s, i):
    """One token at s[i] (an int or a quoted byte string); returns (value, next index)."""
    if s[i] == '"':
        out = bytearray()
        i += 1
        while True:
            c = s[i]
            if c == '"':
                return bytes(out), i + 1
            if c == "\\":
                e = s[i + 1]
                if e in '\\"':
                    out += e.encode()
                    i += 2
                elif e == "x":
                    out.append(int(s[i + 2:i + 4], 16))
                    i += 4
                else:
                    raise ValueError("bad escape \\%s" % e)
            else:
                assert 0x20 <= ord(c) <= 0x7E, repr(c)
                out += c.encode()
                i += 1
    j = s.find(" ", i)
    j = len(s) if j < 0 else j
    tok = s[i:j]
    assert tok.isdigit() and (tok == "0" or tok[0] != "0"), tok
    return int(tok), j


def parse_txt(path):
    """[(key, [values...]), ...] in file order, comments and blank lines dropped."""
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("ascii")
    lines = []
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        assert rest and not rest.startswith(" ") and not line.endswith(" "), line
        values = []
        i = 0
        while True:
            v, i = _parse_value(rest, i)
            values.append(v)
            if i == len(rest):
                break
            assert rest[i] == " " and rest[i + 1] != " ", line
            i += 1
        assert 1 <= len(values) <= 2, line
        lines.append((key, values))
    return lines


def _check_layout(ftype, keys):
    want = LAYOUT.get(ftype, ["data"])
    i = 0
    for w in want:
        if w.endswith("*"):
            while i < len(keys) and keys[i] == w[:-1]:
                i += 1
        else:
            assert i < len(keys) and keys[i] == w, (ftype, keys, w)
            i += 1
    assert i == len(keys), ("unexpected fields", ftype, keys[i:])


def expected_frame(lines):
    """The frame a .txt describes, built from its fields (not from the .bin)."""
    assert [k for k, _ in lines[:3]] == ["type", "flags", "stream"]
    ftype, flags, stream = (v[0] for _, v in lines[:3])
    body = lines[3:]
    _check_layout(ftype, [k for k, _ in body])
    one = {}
    headers, offers = [], []
    for key, values in body:
        if key == "header":
            headers.append(tuple(values))
        elif key == "offer":
            offers.append(values[0].decode())
        else:
            assert len(values) == 1 and key not in one, key
            one[key] = values[0]

    def addr(host, port):
        if not host:
            assert port == 0, "an unknown host has port 0 in the vectors"
            return None
        return (host.decode(), port)

    def scope():
        return dict(http_version=one["http_version"].decode(), method=one["method"].decode(),
                    scheme=one["scheme"].decode(),
                    path=one["path"].decode("utf-8", "surrogateescape"),
                    raw_path=one["raw_path"], query_string=one["query_string"],
                    root_path=one["root_path"].decode("utf-8", "surrogateescape"),
                    client=addr(one["client_host"], one["client_port"]),
                    server=addr(one["server_host"], one["server_port"]), headers=headers)

    common = dict(stream=stream, flags=flags)
    if ftype == 0:
        assert one["magic"] == b"GHASGI"
        return Hello(**common, version=one["version"], max_frame=one["max_frame"],
                     max_streams=one["max_streams"], initial_credit=one["initial_credit"],
                     capabilities=one["capabilities"])
    if ftype == 1:
        return HttpRequest(**common, **scope())
    if ftype == 2:
        return Data(**common, data=one["data"])
    if ftype == 3:
        return HttpResponse(**common, status=one["status"], headers=headers)
    if ftype == 4:
        return Trailers(**common, headers=headers)
    if ftype == 5:
        return PathSend(**common, path=one["path"].decode("utf-8", "surrogateescape"))
    if ftype == 6:
        return Disconnect(**common, code=one["code"], reason=one["reason"].decode())
    if ftype == 7:
        return WsConnect(**common, **scope(), subprotocols=offers)
    if ftype == 8:
        return WsAccept(**common, subprotocol=one["subprotocol"].decode() or None,
                        headers=headers)
    if ftype == 9:
        return WsMessage(**common, data=one["data"])
    if ftype == 10:
        return WsClose(**common, code=one["code"], reason=one["reason"].decode())
    if ftype == 11:
        return Credit(**common, increment=one["increment"])
    if ftype == 12:
        return Ping(**common, data=one["data"])
    if ftype == 13:
        return Reset(**common, error=one["error"])
    if ftype == 14:
        return GoAway(**common, last_stream=one["last_stream"], error=one["error"],
                      debug=one["debug"].decode())
    return Unknown(type=ftype, flags=flags, stream=stream, payload=one["data"])


def _names():
    return sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(VECTORS, "*.bin")))


def _load(name):
    with open(os.path.join(VECTORS, name + ".bin"), "rb") as f:
        data = f.read()
    return data, expected_frame(parse_txt(os.path.join(VECTORS, name + ".txt")))


def _all_vectors():
    return [_load(n) for n in _names()]


def _decode_one(data, **kw):
    dec = FrameDecoder(**kw)
    dec.feed(data)
    frame = dec.next_frame()
    assert dec.next_frame() is NeedData
    assert dec.buffered == 0
    return frame


def _frame_bytes(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, stream) \
        + payload


# -- the vectors -----------------------------------------------------------------------------

def test_vectors_complete():
    names = _names()
    assert set(REQUIRED) <= set(names), set(REQUIRED) - set(names)
    txts = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(VECTORS, "*.txt")))
    assert txts == names
    for name in names:
        data, _ = _load(name)
        (lt,) = struct.unpack_from(">I", data)
        assert lt >> 8 == len(data) - 9, name
        assert data[5] & 0x80 == 0, "R bit set in " + name


@pytest.mark.parametrize("name", _names())
def test_vector_decodes_to_its_txt(name):
    data, want = _load(name)
    got = _decode_one(data, max_frame=ap.MAX_PAYLOAD)
    assert got == want
    assert type(got) is type(want)


@pytest.mark.parametrize("name", _names())
def test_vector_reencodes(name):
    data, want = _load(name)
    assert encode(want) == data
    assert encode(_decode_one(data)) == data


def test_section_12_example():
    data, hello = _load("hello_gateway")
    assert data.hex() == ("000018000000000000" "474841534749" "0001" "00010000" "00000000"
                          "00010000" "00000007")
    assert hello.capabilities == ap.CAP_WEBSOCKET | ap.CAP_TRAILERS | ap.CAP_PATHSEND


def test_utf8_path_is_text_raw_path_bytes():
    _, req = _load("http_request_utf8_path")
    assert req.path == "/café/naïve file"
    assert req.raw_path == b"/caf%C3%A9/na%C3%AFve%20file"
    assert req.headers[0] == (b"x-latin1", b"\xe9t\xe9")
    assert req.server is None and req.client == ("::1", 50000)
    got = _decode_one(_load("http_request_post")[0])
    assert got.client is None and got.server == ("127.0.0.1", 8080)


# -- incremental decoding --------------------------------------------------------------------

def _stream_of_all():
    pairs = _all_vectors()
    return b"".join(d for d, _ in pairs), [f for _, f in pairs]


def _drain(dec, out):
    while (f := dec.next_frame()) is not NeedData:
        out.append(f)


def test_byte_by_byte():
    data, want = _stream_of_all()
    dec = FrameDecoder()
    got = []
    for i in range(len(data)):
        dec.feed(data[i:i + 1])
        _drain(dec, got)
    assert got == want
    assert dec.buffered == 0


def test_all_in_one_feed():
    data, want = _stream_of_all()
    dec = FrameDecoder()
    dec.feed(data)
    assert list(dec.frames()) == want
    assert dec.next_frame() is NeedData


@pytest.mark.parametrize("seed", range(5))
def test_random_chunks(seed):
    data, want = _stream_of_all()
    rnd = random.Random(seed)
    dec = FrameDecoder()
    got = []
    i = 0
    while i < len(data):
        n = rnd.randint(1, 200)
        chunk = data[i:i + n]
        dec.feed(bytearray(chunk) if rnd.random() < 0.3 else chunk)
        i += n
        _drain(dec, got)
    assert got == want


def test_every_split_of_each_vector():
    for data, want in _all_vectors():
        for k in range(len(data) + 1):
            dec = FrameDecoder()
            dec.feed(data[:k])
            if k < len(data):
                assert dec.next_frame() is NeedData
            dec.feed(data[k:])
            assert dec.next_frame() == want


def test_decoded_payloads_are_bytes():
    dec = FrameDecoder()
    dec.feed(bytearray(_load("data_body")[0]) + _load("ws_message_text")[0][:5])
    f = dec.next_frame()
    assert type(f.data) is bytes
    dec.feed(_load("ws_message_text")[0][5:])
    f = dec.next_frame()
    assert type(f.data) is bytes and f.flags == ap.FLAG_TEXT


# -- decoding errors -------------------------------------------------------------------------

def test_frame_over_max_frame_is_fatal():
    dec = FrameDecoder()
    dec.feed(b"\x00\x40\x01\x02\x00\x00\x00\x00\x01")  # a header alone: DATA of 16385
    with pytest.raises(ProtocolError) as e:
        dec.next_frame()
    assert e.value.code == ap.FRAME_SIZE and e.value.fatal and e.value.stream == 1
    dec.feed(b"x" * 16385)
    with pytest.raises(ProtocolError):       # the decoder stays failed
        dec.next_frame()


def test_max_frame_exact_and_raised():
    body = b"y" * 16384
    assert _decode_one(_frame_bytes(2, 0, 1, body)) == Data(1, 0, body)
    big = _frame_bytes(2, 1, 1, b"z" * 70000)
    dec = FrameDecoder()
    dec.max_frame = 1 << 20                  # after our HELLO announced 1 MiB
    dec.feed(big)
    assert dec.next_frame() == Data(1, 1, b"z" * 70000)
    with pytest.raises(ProtocolError) as e:
        _decode_one(_frame_bytes(2, 0, 1, b"z" * 70000), max_frame=65536)
    assert e.value.code == ap.FRAME_SIZE


def _laid_out_names():
    """The vectors whose payload has a layout (DATA, WS_MESSAGE and unknown types take any)."""
    return [n for n in _names() if _load(n)[1].type in LAYOUT
            and _load(n)[1].type not in (ap.DATA, ap.WS_MESSAGE)]


@pytest.mark.parametrize("name", _laid_out_names())
def test_truncated_payload(name):
    data, want = _load(name)
    payload = data[9:]
    follow = _load("credit")[0]
    for k in range(len(payload)):
        dec = FrameDecoder()
        dec.feed(_frame_bytes(want.type, want.flags, want.stream, payload[:k]) + follow)
        with pytest.raises(ProtocolError) as e:
            dec.next_frame()
        assert e.value.code == ap.FRAME_SIZE, (k, e.value)
        assert not e.value.fatal and e.value.stream == want.stream
        assert e.value.frame_type == want.type
        assert dec.next_frame() == Credit(3, 0, 65536)   # the bad frame was consumed


@pytest.mark.parametrize("name", _laid_out_names())
def test_trailing_payload_bytes(name):
    data, want = _load(name)
    for extra in (b"\x00", b"\x00\x00", b"junk-after-the-last-field"):
        bad = _frame_bytes(want.type, want.flags, want.stream, data[9:] + extra)
        with pytest.raises(ProtocolError) as e:
            _decode_one(bad)
        assert e.value.code == ap.FRAME_SIZE and not e.value.fatal


def test_hello_bad_magic():
    data = bytearray(_load("hello_gateway")[0])
    data[9:15] = b"GHWSGI"
    with pytest.raises(ProtocolError) as e:
        _decode_one(bytes(data))
    assert e.value.code == ap.PROTOCOL and e.value.stream == 0
    assert e.value.frame_type == ap.HELLO


def test_hello_is_exactly_24_bytes():
    data = _load("hello_gateway")[0]
    with pytest.raises(ProtocolError) as e:
        _decode_one(_frame_bytes(0, 0, 0, data[9:] + b"\x00\x00\x00\x00"))
    assert e.value.code == ap.FRAME_SIZE


def test_ping_is_exactly_8_bytes():
    for n in (0, 7, 9, 16):
        with pytest.raises(ProtocolError) as e:
            _decode_one(_frame_bytes(12, 0, 0, bytes(n)))
        assert e.value.code == ap.FRAME_SIZE


def test_r_bit_is_masked():
    data = bytearray(_load("data_body")[0])
    data[5] |= 0x80
    f = _decode_one(bytes(data))
    assert f.stream == 3
    assert encode(f) == _load("data_body")[0]    # and sent as 0


def test_unknown_type_skipped():
    unknown = _load("unknown_type")[0]
    dec = FrameDecoder()
    dec.feed(unknown + _load("credit")[0] + _frame_bytes(0xFF, 0x0F, 9, b""))
    f = dec.next_frame()
    assert isinstance(f, Unknown) and (f.type, f.flags, f.stream) == (0x7F, 0, 3)
    assert f.payload == b"future\x00frame\xff"
    assert dec.next_frame() == Credit(3, 0, 65536)
    assert dec.next_frame() == Unknown(0xFF, 0x0F, 9, b"")
    assert dec.next_frame() is NeedData


def test_unused_flags_kept_and_ignored():
    f = _decode_one(_frame_bytes(11, 0xF0, 3, struct.pack(">I", 5)))
    assert f == Credit(3, 0xF0, 5)


def test_invalid_utf8_text_is_protocol():
    req = HttpRequest(stream=1, method="GET")
    data = bytearray(encode(req))
    at = data.index(b"GET")
    data[at] = 0xFF
    with pytest.raises(ProtocolError) as e:
        _decode_one(bytes(data))
    assert e.value.code == ap.PROTOCOL and e.value.stream == 1 and not e.value.fatal
    bad = _frame_bytes(10, 1, 5, struct.pack(">HH", 1000, 2) + b"\xc3(")
    with pytest.raises(ProtocolError) as e:
        _decode_one(bad)
    assert e.value.code == ap.PROTOCOL


def test_non_utf8_path_survives():
    req = HttpRequest(stream=7, path="/a\udcffb", raw_path=b"/a%FFb", root_path="/\udcfe",
                      client=("1.2.3.4", 5), server=None, headers=[(b"h", b"\xff")])
    data = encode(req)
    assert b"/a\xffb" in data and b"/\xfe" in data
    assert _decode_one(data) == req
    ps = PathSend(stream=7, path="/srv/\udce9t\udce9")
    assert _decode_one(encode(ps)) == ps
    assert b"/srv/\xe9t\xe9" in encode(ps)


def test_decoder_continues_after_stream_error():
    dec = FrameDecoder()
    dec.feed(_frame_bytes(13, 0, 5, b"\x00\x00\x06") + _load("goaway")[0])
    with pytest.raises(ProtocolError) as e:
        dec.next_frame()
    assert (e.value.code, e.value.stream, e.value.frame_type) == (ap.FRAME_SIZE, 5, ap.RESET)
    assert dec.next_frame() == GoAway(0, 0, 13, 0, "draining")


def test_huge_count_small_payload():
    p = struct.pack(">HH", 200, 0xFFFF) + struct.pack(">H", 1) + b"a"
    with pytest.raises(ProtocolError) as e:
        _decode_one(_frame_bytes(3, 0, 1, p))
    assert e.value.code == ap.FRAME_SIZE


# -- encoding errors -------------------------------------------------------------------------

BIG = "x" * 65536


@pytest.mark.parametrize("frame", [
    HttpRequest(stream=1, path=BIG),
    HttpRequest(stream=1, raw_path=BIG.encode()),
    HttpRequest(stream=1, query_string=BIG.encode()),
    HttpRequest(stream=1, client=(BIG, 1)),
    HttpRequest(stream=1, headers=[(b"a", BIG.encode())]),
    HttpRequest(stream=1, headers=[(BIG.encode(), b"")]),
    HttpRequest(stream=1, client=("h", 65536)),
    HttpRequest(stream=1, server=("h", -1)),
    HttpRequest(stream=1, headers=[(b"a", b"b")] * 65536),
    HttpResponse(stream=1, status=65536),
    HttpResponse(stream=1, status=-1),
    Trailers(stream=1, headers=[(b"a", BIG.encode())]),
    PathSend(stream=1, path="/" + BIG),
    Disconnect(stream=1, code=70000),
    Disconnect(stream=1, reason="é" * 32768),           # 65536 bytes in UTF-8
    WsConnect(stream=1, subprotocols=[BIG]),
    WsAccept(stream=1, subprotocol=BIG),
    WsClose(stream=1, reason=BIG),
    WsClose(stream=1, code=65536),
    Credit(stream=1, increment=1 << 32),
    Credit(stream=1, increment=-1),
    Ping(data=b"1234567"),
    Reset(stream=1, error=1 << 32),
    GoAway(debug=BIG),
    GoAway(last_stream=1 << 32),
    Hello(max_frame=1 << 32),
    Hello(version=65536),
    Data(stream=1, data=bytes(ap.MAX_PAYLOAD + 1)),
    Data(stream=1 << 31),
    Data(stream=-1),
    Data(stream=1, flags=256),
    Unknown(type=256),
    HttpRequest(stream=1, method="G\udcffT"),           # not encodable as UTF-8
], ids=lambda f: type(f).__name__)
def test_encoder_refuses_what_does_not_fit(frame):
    with pytest.raises(ValueError):
        encode(frame)


def test_encoder_limits_are_inclusive():
    assert len(encode(Data(stream=1, data=bytes(ap.MAX_PAYLOAD)))) == 9 + ap.MAX_PAYLOAD
    f = HttpResponse(stream=ap.MAX_STREAM_ID, flags=255, status=65535,
                     headers=[(b"a", b"v" * 65535)])
    assert _decode_one(encode(f), max_frame=ap.MAX_PAYLOAD) == f
    assert encode(WsAccept(stream=1, subprotocol="x" * 65535))


def test_encoder_max_frame():
    encode(Data(stream=1, data=bytes(16384)), max_frame=16384)
    with pytest.raises(ValueError):
        encode(Data(stream=1, data=bytes(16385)), max_frame=16384)


def test_encoder_wants_bytes_for_bytes_fields():
    for f in (HttpResponse(stream=1, headers=[("content-type", b"x")]),
              HttpResponse(stream=1, headers=[(b"content-type", "x")]),
              HttpRequest(stream=1, raw_path="/"),
              Data(stream=1, data="text")):
        with pytest.raises(TypeError):
            encode(f)


def test_encoder_takes_bytes_like():
    f = Data(stream=1, flags=1, data=memoryview(b"abc"))
    assert encode(f) == _frame_bytes(2, 1, 1, b"abc")
    h = HttpResponse(stream=1, headers=[(bytearray(b"a"), memoryview(b"b"))])
    assert encode(h) == _frame_bytes(3, 0, 1, b"\x00\xc8\x00\x01\x00\x01a\x00\x01b")


def test_frame_header():
    assert ap.frame_header(ap.DATA, ap.FLAG_END, 3, 5) == b"\x00\x00\x05\x02\x01\x00\x00\x00\x03"
    with pytest.raises(ValueError):
        ap.frame_header(ap.DATA, 0, 1, ap.MAX_PAYLOAD + 1)


# -- the tls block (CAP_TLS, section 4.1) ------------------------------------------------------

def test_tls_block_round_trip():
    t = ap.Tls(True, 0x0304, 0x1301, "O=Example,CN=alice", "", "-----BEGIN CERTIFICATE-----\n")
    for frame in (ap.HttpRequest(1, 0, headers=[(b"host", b"a")], tls=t),
                  ap.HttpRequest(3, ap.FLAG_END, tls=ap.Tls()),
                  ap.WsConnect(5, 0, scheme="wss", subprotocols=["chat"], tls=t)):
        data = ap.encode(frame)
        dec = FrameDecoder()
        dec.tls = True
        dec.feed(data)
        assert dec.next_frame() == frame
        # without CAP_TLS the block is trailing bytes
        with pytest.raises(ProtocolError) as e:
            _decode_one(data)
        assert e.value.code == ap.FRAME_SIZE


def test_tls_block_layout():
    data = ap.encode(ap.HttpRequest(1, ap.FLAG_END, tls=ap.Tls(True, 0x0303, 0xC02F, "CN=x",
                                                                 "bad", "P")))
    assert data.endswith(b"\x01\x03\x03\xc0\x2f\x00\x04CN=x\x00\x03bad\x00\x01P")
    plain = ap.encode(ap.HttpRequest(1, ap.FLAG_END, tls=ap.Tls()))
    assert len(plain) == len(ap.encode(ap.HttpRequest(1, ap.FLAG_END))) + 1
    assert plain.endswith(b"\x00\x00\x00")       # header count 0, then tls_present 0


def test_tls_block_missing_with_cap_tls():
    dec = FrameDecoder()
    dec.tls = True
    dec.feed(ap.encode(ap.HttpRequest(1, ap.FLAG_END)))
    with pytest.raises(ProtocolError) as e:
        dec.next_frame()
    assert e.value.code == ap.FRAME_SIZE
