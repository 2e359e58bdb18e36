#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus of tests/fuzz/fuzz_h2_codec.c: real client conversations made with
python3-h2. Each file is the target's two leading bytes (mode 1: the target puts the preface
and an empty SETTINGS first; the chunking seed) and then the client's frames after its own
preface and SETTINGS, including its ACK of the server's SETTINGS.

Usage: tests/fuzz/gen_h2_codec_corpus.py [outdir]   (default tests/fuzz/corpus/fuzz_h2_codec)
"""
import os
import struct
import sys

import h2.config
import h2.connection
import h2.settings

# The server's SETTINGS as the codec sends them (ENABLE_CONNECT_PROTOCOL among them).
SERVER_SETTINGS = {
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 16,
    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 4096,
    h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
}


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def client():
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding="utf-8"))
    c.initiate_connection()
    start = c.data_to_send()
    # Drop the preface (24 bytes) and the client's SETTINGS: the target's mode 1 sends those.
    n = int.from_bytes(start[24:27], "big")
    assert len(start) >= 24 + 9 + n
    rest = start[24 + 9 + n:]
    payload = b"".join(struct.pack(">HI", k, v) for k, v in SERVER_SETTINGS.items())
    c.receive_data(frame(4, 0, 0, payload))
    return c, rest + c.data_to_send()


def req(path, method="GET", extra=()):
    return [(":method", method), (":scheme", "https"), (":authority", "example.com"),
            (":path", path)] + list(extra)


def conv_get():
    c, out = client()
    c.send_headers(1, req("/", extra=[("user-agent", "seed/1"), ("accept", "*/*")]),
                   end_stream=True)
    c.send_headers(3, req("/b?x=1", extra=[("cookie", "a=1"), ("cookie", "b=2")]),
                   end_stream=True)
    return out + c.data_to_send()


def conv_post():
    c, out = client()
    body = b"x" * 3000
    c.send_headers(1, req("/up", "POST", [("content-length", str(len(body)))]))
    c.send_data(1, body[:1000])
    c.send_data(1, body[1000:], end_stream=True)
    return out + c.data_to_send()


def conv_post_trailers():
    c, out = client()
    c.send_headers(1, req("/up", "POST", [("content-type", "application/grpc"),
                                          ("te", "trailers")]))
    c.send_data(1, b"\x00\x00\x00\x00\x05hello")
    c.send_headers(1, [("grpc-status", "0")], end_stream=True)
    return out + c.data_to_send()


def conv_connect():
    c, out = client()
    c.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                       (":scheme", "https"), (":authority", "example.com"),
                       (":path", "/chat"), ("sec-websocket-version", "13")])
    c.send_data(1, b"\x81\x85\x00\x00\x00\x00hello")
    c.end_stream(1)
    return out + c.data_to_send()


def conv_reset_ping():
    c, out = client()
    for sid in (1, 3, 5):
        c.send_headers(sid, req("/r%d" % sid))
    c.reset_stream(3, 8)
    c.ping(b"12345678")
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    c.increment_flow_control_window(1 << 16)
    c.send_data(1, b"abc", end_stream=True)
    c.end_stream(5)
    return out + c.data_to_send()


def conv_continuation():
    # A head split into HEADERS and two CONTINUATIONs, then a PRIORITY and an empty DATA.
    c, out = client()
    blk = c.encoder.encode(req("/cont", extra=[("x-a", "1" * 40), ("x-b", "2" * 40)]))
    third = len(blk) // 3
    out += frame(1, 0x1, 1, blk[:third])
    out += frame(9, 0, 1, blk[third:2 * third])
    out += frame(9, 0x4, 1, blk[2 * third:])
    out += frame(2, 0, 3, struct.pack(">IB", 0, 15))
    blk = c.encoder.encode(req("/d", "POST"))
    out += frame(1, 0x4, 3, blk)
    out += frame(0, 0, 3, b"")
    out += frame(0, 0x1, 3, b"z")
    return out


def conv_goaway():
    c, out = client()
    c.send_headers(1, req("/"), end_stream=True)
    c.close_connection()
    return out + c.data_to_send()


def conv_ping_flood():
    # One PING past the codec's limit (H2C_MAX_PINGS 100), after a request.
    c, out = client()
    c.send_headers(1, req("/"), end_stream=True)
    out += c.data_to_send()
    return out + b"".join(frame(6, 0, 0, struct.pack(">Q", i)) for i in range(101))


def conv_hpack_bomb():
    # A 3000-byte field put in the dynamic table (index 62), then heads that name it twice:
    # each decodes past limits.header_bytes (4096 in the target); the 10th ends the connection.
    c, out = client()
    big = b"a" * 3000
    lit = b"\x40\x06x-bomb" + b"\x7f" + bytes([(3000 - 127) & 0x7f | 0x80, (3000 - 127) >> 7])
    for i in range(11):
        # Literals without indexing: the encoder's table stays as the server sees it.
        blk = b"".join(b"\x00" + bytes([len(n)]) + n.encode() + bytes([len(v)]) + v.encode()
                       for n, v in req("/b%d" % i))
        blk += (lit + big if i == 0 else b"") + b"\xbe\xbe"
        out += frame(1, 0x5, 2 * i + 1, blk)
    return out


CONVS = {
    "ping_flood": conv_ping_flood, "hpack_bomb": conv_hpack_bomb,
    "get": conv_get, "post": conv_post, "post_trailers": conv_post_trailers,
    "connect": conv_connect, "reset_ping": conv_reset_ping,
    "continuation": conv_continuation, "goaway": conv_goaway,
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/fuzz_h2_codec"
    os.makedirs(out, exist_ok=True)
    for i, (name, fn) in enumerate(CONVS.items()):
        data = fn()
        # Mode 1, owner salt i; the seed byte 0x03 mostly cuts into small chunks.
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([1 | (i << 2), 0x03]) + data)


if __name__ == "__main__":
    main()
