# SPDX-License-Identifier: MIT
"""gatehouse.protocol: the uwsgi request packet against the shared golden vectors
(tests/vectors/uwsgi/*.bin + .json, the same bytes the C codec is held to), incremental
decoding at every split point, and the errors."""

import glob
import json
import os
import struct

import pytest

from gatehouse.protocol import (NeedData, ProtocolError, Request, RequestDecoder,
                                encode_request)

VECTORS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "vectors", "uwsgi"))


def _vector_files():
    return sorted(glob.glob(os.path.join(VECTORS, "*.bin")))


def _decode_all(data):
    dec = RequestDecoder()
    dec.feed(data)
    return dec, dec.next_event()


def _as_bytes(x):
    return x.encode("latin-1") if isinstance(x, str) else bytes(x)


def test_vectors_exist():
    assert _vector_files(), "no golden vectors in %s" % VECTORS


def _load_vector(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path[:-4] + ".json", encoding="utf-8") as f:
        spec = json.load(f)
    return data, spec


@pytest.mark.parametrize("path", _vector_files() or [None],
                         ids=lambda p: os.path.basename(p) if p else "none")
def test_vector(path):
    if path is None:
        pytest.fail("no golden vectors in %s" % VECTORS)
    data, spec = _load_vector(path)
    if spec.get("error") or spec.get("valid") is False:
        with pytest.raises(ProtocolError):
            dec, ev = _decode_all(data)
            assert ev is not NeedData, "an invalid vector must fail, not wait for more"
        return
    pairs = [(_as_bytes(k), _as_bytes(v)) for k, v in spec["vars"]]
    dec, ev = _decode_all(data)
    assert isinstance(ev, Request), path
    assert ev.modifier1 == spec["modifier1"]
    assert ev.modifier2 == spec["modifier2"]
    assert ev.vars == pairs
    packet_len = 4 + struct.unpack_from("<H", data, 1)[0]
    assert dec.trailing_data == data[packet_len:]
    assert encode_request(pairs, spec["modifier1"], spec["modifier2"]) == data[:packet_len]
    for cut in range(packet_len):
        d = RequestDecoder()
        d.feed(data[:cut])
        assert d.next_event() is NeedData, "cut=%d" % cut
        d.feed(data[cut:])
        assert d.next_event() == ev


SAMPLE = [(b"REQUEST_METHOD", b"POST"), (b"PATH_INFO", b"/caf\xe9"), (b"QUERY_STRING", b""),
          (b"HTTP_X_A", b"1"), (b"HTTP_X_A", b"2"), (b"", b"empty key")]


def test_encode_layout():
    pkt = encode_request([(b"AB", b"cde")], modifier1=0, modifier2=0)
    assert pkt == b"\x00\x09\x00\x00" + b"\x02\x00AB" + b"\x03\x00cde"
    assert encode_request({"K": "v"}, 5, 7)[:4] == b"\x05\x06\x00\x07"
    assert encode_request([]) == b"\x00\x00\x00\x00"


def test_str_is_latin1():
    assert encode_request([("PATH_INFO", "/caf\xe9")]) == encode_request(
        [(b"PATH_INFO", b"/caf\xe9")])
    with pytest.raises(ValueError):
        encode_request([("PATH_INFO", "/\u20ac")])


def test_roundtrip_every_split_point_with_body():
    body = b"hello=world"
    data = encode_request(SAMPLE) + body
    for cut in range(len(data) + 1):
        dec = RequestDecoder()
        dec.feed(data[:cut])
        ev = dec.next_event()
        if cut < len(data) - len(body):
            assert ev is NeedData, cut
            assert dec.trailing_data == b""
            dec.feed(data[cut:])
            ev = dec.next_event()
        else:
            dec.feed(data[cut:])
        assert ev == Request(0, 0, SAMPLE)
        assert dec.trailing_data == body
        assert dec.next_event() is ev  # stays complete


def test_one_byte_at_a_time():
    data = encode_request(SAMPLE, 0, 0)
    dec = RequestDecoder()
    events = []
    for i in range(len(data)):
        dec.feed(data[i:i + 1])
        events.append(dec.next_event())
    assert all(e is NeedData for e in events[:-1])
    assert events[-1] == Request(0, 0, SAMPLE)


def test_limits():
    ok = [(b"K", b"v" * (65535 - 4 - 1))]
    assert len(encode_request(ok)) == 4 + 65535
    with pytest.raises(ValueError):
        encode_request([(b"K", b"v" * (65535 - 4))])  # datasize 65536
    with pytest.raises(ValueError):
        encode_request([(b"K", b"v" * 65536)])
    with pytest.raises(ValueError):
        encode_request([(b"K" * 65536, b"")])
    with pytest.raises(ValueError):
        encode_request([(b"A", b"x" * 40000), (b"B", b"y" * 40000)])
    with pytest.raises(TypeError):
        encode_request([(b"A", 1)])
    dec, ev = _decode_all(encode_request(ok))
    assert ev.vars == ok


@pytest.mark.parametrize("block", [
    b"\x01",                          # half a key length
    b"\x05\x00AB",                    # key overruns
    b"\x02\x00AB",                    # no value length
    b"\x02\x00AB\x01",                # half a value length
    b"\x02\x00AB\x09\x00xyz",         # value overruns
    b"\x01\x00A\x01\x00a\x03",        # trailing garbage after a good pair
])
def test_malformed_vars(block):
    data = struct.pack("<BHB", 0, len(block), 0) + block + b"body"
    dec = RequestDecoder()
    dec.feed(data)
    with pytest.raises(ProtocolError):
        dec.next_event()


def test_header_only_waits():
    dec = RequestDecoder()
    dec.feed(b"\x00\x10\x00")
    assert dec.next_event() is NeedData
    dec.feed(b"\x00")
    assert dec.next_event() is NeedData  # 16 bytes of vars announced, none yet
