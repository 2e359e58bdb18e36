# SPDX-License-Identifier: MIT
"""Writes the golden vectors of the gateway <-> ASGI app protocol (adapters/asgi/PROTOCOL.md).

Run once from anywhere: /usr/bin/python3 tests/vectors/asgi/make_vectors.py

Every .bin is built here by hand with struct.pack, field by field in the order of
PROTOCOL.md's layouts; the codecs under test are never imported. Next to each one is the
.txt that describes it, written out literally (format: README.md in this directory), so a
reader can check one against the other and both against the spec. The test suites then hold
the C and Python codecs to these files.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(n):
    return struct.pack(">B", n)


def u16(n):
    return struct.pack(">H", n)


def u32(n):
    return struct.pack(">I", n)


def str16(b):
    """PROTOCOL.md section 1: a u16 length, then the bytes."""
    return struct.pack(">H", len(b)) + b


def frame(ftype, flags, stream, payload):
    """PROTOCOL.md section 2: length (u24), type (u8), flags (u8), R (1 bit, 0) + stream (u31)."""
    assert len(payload) < 1 << 24 and stream < 1 << 31
    length_u24 = struct.pack(">I", len(payload))[1:]
    return length_u24 + struct.pack(">BBI", ftype, flags, stream) + payload


def headers(pairs):
    """header_count u16, then name str16, value str16 for each pair."""
    out = u16(len(pairs))
    for name, value in pairs:
        out += str16(name) + str16(value)
    return out


def scope(http_version, method, scheme, path, raw_path, query_string, root_path,
          client_host, client_port, server_host, server_port, header_pairs):
    """The HTTP_REQUEST payload (section 4.1), also the scope part of WS_CONNECT (5.1)."""
    return (str16(http_version) + str16(method) + str16(scheme) + str16(path)
            + str16(raw_path) + str16(query_string) + str16(root_path)
            + str16(client_host) + u16(client_port)
            + str16(server_host) + u16(server_port)
            + headers(header_pairs))


VECTORS = []


def vector(name, data, txt):
    VECTORS.append((name, data, txt.lstrip("\n")))


# -- HELLO (type 0x00, section 3) ------------------------------------------------------------

vector("hello_gateway",
       frame(0x00, 0, 0, b"GHASGI" + u16(1) + u32(65536) + u32(0) + u32(65536) + u32(7)), r"""
# PROTOCOL.md section 12: the gateway's HELLO, version 1, max_frame 65536, no streams,
# initial credit 65536, capabilities WEBSOCKET|TRAILERS|PATHSEND
type 0
flags 0
stream 0
magic "GHASGI"
version 1
max_frame 65536
max_streams 0
initial_credit 65536
capabilities 7
""")

vector("hello_app_ack",
       frame(0x00, 0x08, 0, b"GHASGI" + u16(1) + u32(1048576) + u32(100) + u32(262144)
             + u32(3)), r"""
# the application's answer: ACK, max_frame 1 MiB, 100 streams, credit 256 KiB,
# capabilities WEBSOCKET|TRAILERS (no PATHSEND)
type 0
flags 8
stream 0
magic "GHASGI"
version 1
max_frame 1048576
max_streams 100
initial_credit 262144
capabilities 3
""")

# -- HTTP_REQUEST (type 0x01, section 4.1) ---------------------------------------------------

vector("http_request_get_end",
       frame(0x01, 0x01, 1, scope(
           b"1.1", b"GET", b"https", b"/app/search", b"/app/search", b"q=caf%C3%A9&page=2",
           b"/app", b"203.0.113.7", 54321, b"example.com", 443,
           [(b"host", b"example.com"), (b"accept", b"*/*"), (b"cookie", b"a=1"),
            (b"cookie", b"b=2"), (b"user-agent", b"curl/8.5.0")])), r"""
# GET with a query and a root_path, client and server known, a repeated header;
# END: no body
type 1
flags 1
stream 1
http_version "1.1"
method "GET"
scheme "https"
path "/app/search"
raw_path "/app/search"
query_string "q=caf%C3%A9&page=2"
root_path "/app"
client_host "203.0.113.7"
client_port 54321
server_host "example.com"
server_port 443
header "host" "example.com"
header "accept" "*/*"
header "cookie" "a=1"
header "cookie" "b=2"
header "user-agent" "curl/8.5.0"
""")

vector("http_request_post",
       frame(0x01, 0, 3, scope(
           b"1.0", b"POST", b"http", b"/upload", b"/upload", b"", b"", b"", 0,
           b"127.0.0.1", 8080,
           [(b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"21")])), r"""
# POST, body follows in DATA (no END); no query, no root_path; client unknown
# (empty host, port 0: client is None)
type 1
flags 0
stream 3
http_version "1.0"
method "POST"
scheme "http"
path "/upload"
raw_path "/upload"
query_string ""
root_path ""
client_host ""
client_port 0
server_host "127.0.0.1"
server_port 8080
header "content-type" "application/x-www-form-urlencoded"
header "content-length" "21"
""")

vector("http_request_utf8_path",
       frame(0x01, 0x01, 5, scope(
           b"2", b"GET", b"https", "/café/naïve file".encode("utf-8"),
           b"/caf%C3%A9/na%C3%AFve%20file", b"x=%FF", b"", b"::1", 50000, b"", 0,
           [(b"x-latin1", b"\xe9t\xe9"), (b"x-empty", b"")])), r"""
# HTTP/2 GET: path percent-decoded to UTF-8, raw_path as received; a header value that is
# not UTF-8 and an empty one; server unknown (server is None)
type 1
flags 1
stream 5
http_version "2"
method "GET"
scheme "https"
path "/caf\xC3\xA9/na\xC3\xAFve file"
raw_path "/caf%C3%A9/na%C3%AFve%20file"
query_string "x=%FF"
root_path ""
client_host "::1"
client_port 50000
server_host ""
server_port 0
header "x-latin1" "\xE9t\xE9"
header "x-empty" ""
""")

# -- DATA (type 0x02, sections 4.2, 4.3, 5) --------------------------------------------------

vector("data_body", frame(0x02, 0, 3, b"name=gate\x00house\xff&x=1"), r"""
# a piece of the request body of stream 3 (not the last): raw bytes
type 2
flags 0
stream 3
data "name=gate\x00house\xFF&x=1"
""")

vector("data_end_empty", frame(0x02, 0x01, 3, b""), r"""
# the end of the body: an empty payload with END
type 2
flags 1
stream 3
data ""
""")

# -- HTTP_RESPONSE (type 0x03, section 4.3) --------------------------------------------------

vector("http_response_200",
       frame(0x03, 0, 1, u16(200) + headers(
           [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"5"),
            (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")])), r"""
# http.response.start 200; body follows in DATA; header names in any case, repeats kept
type 3
flags 0
stream 1
status 200
header "content-type" "text/plain; charset=utf-8"
header "content-length" "5"
header "Set-Cookie" "a=1"
header "set-cookie" "b=2"
""")

vector("http_response_trailers_more",
       frame(0x03, 0x02, 7, u16(200) + headers(
           [(b"content-type", b"application/grpc"), (b"trailer", b"grpc-status")])), r"""
# http.response.start with trailers: true (MORE): TRAILERS will end the stream
type 3
flags 2
stream 7
status 200
header "content-type" "application/grpc"
header "trailer" "grpc-status"
""")

vector("http_response_empty_end", frame(0x03, 0x01, 9, u16(204) + headers([])), r"""
# 204 without headers and without a body (END)
type 3
flags 1
stream 9
status 204
""")

vector("http_response_escapes",
       frame(0x03, 0, 3, u16(404) + headers(
           [(b"etag", b'"v1"'), (b"x-path", b"C:\\dir\\f"), (b"x-tab", b"a\tb\x7f")])),
       r"""
# the .txt escapes: a quote, backslashes, a tab and DEL written as \xHH
type 3
flags 0
stream 3
status 404
header "etag" "\"v1\""
header "x-path" "C:\\dir\\f"
header "x-tab" "a\x09b\x7F"
""")

# -- TRAILERS (type 0x04, section 4.4) -------------------------------------------------------

vector("trailers_end",
       frame(0x04, 0x01, 7, headers([(b"grpc-status", b"0"), (b"grpc-message", b"")])), r"""
# the last http.response.trailers (END)
type 4
flags 1
stream 7
header "grpc-status" "0"
header "grpc-message" ""
""")

vector("trailers_more", frame(0x04, 0x02, 7, headers([(b"x-checksum", b"abc123")])), r"""
# http.response.trailers with more_trailers: true (MORE)
type 4
flags 2
stream 7
header "x-checksum" "abc123"
""")

# -- PATHSEND (type 0x05, section 4.5) -------------------------------------------------------

vector("pathsend", frame(0x05, 0x01, 9, str16(b"/srv/static/index.html")), r"""
# http.response.pathsend: the gateway sends the file as the body; carries END
type 5
flags 1
stream 9
path "/srv/static/index.html"
""")

# -- DISCONNECT (type 0x06, section 4.6) -----------------------------------------------------

vector("disconnect_http", frame(0x06, 0x01, 11, u16(0) + str16(b"")), r"""
# the http client went away: code 0, empty reason, END
type 6
flags 1
stream 11
code 0
reason ""
""")

vector("disconnect_ws", frame(0x06, 0x01, 13, u16(1001) + str16("au revoir ✓".encode())),
       r"""
# the WebSocket client closed with 1001 and a UTF-8 reason
type 6
flags 1
stream 13
code 1001
reason "au revoir \xE2\x9C\x93"
""")

# -- WS_CONNECT (type 0x07, section 5.1) -----------------------------------------------------

vector("ws_connect",
       frame(0x07, 0, 13, scope(
           b"1.1", b"", b"wss", b"/ws/chat", b"/ws/chat", b"room=1", b"", b"198.51.100.2",
           40000, b"example.com", 443,
           [(b"host", b"example.com"), (b"origin", b"https://example.com"),
            (b"sec-websocket-protocol", b"chat, superchat")])
             + u16(2) + str16(b"chat") + str16(b"superchat")), r"""
# websocket.connect: the scope (method empty, scheme wss), then two offered subprotocols
type 7
flags 0
stream 13
http_version "1.1"
method ""
scheme "wss"
path "/ws/chat"
raw_path "/ws/chat"
query_string "room=1"
root_path ""
client_host "198.51.100.2"
client_port 40000
server_host "example.com"
server_port 443
header "host" "example.com"
header "origin" "https://example.com"
header "sec-websocket-protocol" "chat, superchat"
offer "chat"
offer "superchat"
""")

vector("ws_connect_no_offer",
       frame(0x07, 0, 15, scope(
           b"2", b"", b"ws", b"/ws", b"/ws", b"", b"/api", b"10.0.0.1", 1234, b"10.0.0.2", 80,
           []) + u16(0)), r"""
# websocket.connect over HTTP/2, no headers, no subprotocol offered
type 7
flags 0
stream 15
http_version "2"
method ""
scheme "ws"
path "/ws"
raw_path "/ws"
query_string ""
root_path "/api"
client_host "10.0.0.1"
client_port 1234
server_host "10.0.0.2"
server_port 80
""")

# -- WS_ACCEPT (type 0x08, section 5.2) ------------------------------------------------------

vector("ws_accept",
       frame(0x08, 0, 13, str16(b"chat") + headers([(b"x-server", b"gatehouse")])), r"""
# websocket.accept with a subprotocol and one extra header
type 8
flags 0
stream 13
subprotocol "chat"
header "x-server" "gatehouse"
""")

vector("ws_accept_none", frame(0x08, 0, 15, str16(b"") + headers([])), r"""
# websocket.accept without a subprotocol ("" for none) and without headers
type 8
flags 0
stream 15
subprotocol ""
""")

# -- WS_MESSAGE (type 0x09, section 5.3) -----------------------------------------------------

vector("ws_message_text", frame(0x09, 0x04, 13, "héllo".encode("utf-8")), r"""
# a whole text message (TEXT): UTF-8 bytes
type 9
flags 4
stream 13
data "h\xC3\xA9llo"
""")

vector("ws_message_binary_more", frame(0x09, 0x02, 13, b"\x00\x01\x02\xff\xfe"), r"""
# the first piece of a binary message (MORE: more pieces follow)
type 9
flags 2
stream 13
data "\x00\x01\x02\xFF\xFE"
""")

# -- WS_CLOSE (type 0x0A, section 5.4) -------------------------------------------------------

vector("ws_close", frame(0x0A, 0x01, 13, u16(1000) + str16(b"bye")), r"""
# websocket.close 1000 "bye" from the app; carries END
type 10
flags 1
stream 13
code 1000
reason "bye"
""")

# -- CREDIT (type 0x0B, section 6) -----------------------------------------------------------

vector("credit", frame(0x0B, 0, 3, u32(65536)), r"""
# 64 KiB of credit back on stream 3
type 11
flags 0
stream 3
increment 65536
""")

vector("credit_max", frame(0x0B, 0, 2147483647, u32(2147483647)), r"""
# the largest increment, on the largest stream id
type 11
flags 0
stream 2147483647
increment 2147483647
""")

# -- PING (type 0x0C, section 7) -------------------------------------------------------------

vector("ping", frame(0x0C, 0, 0, b"gh\x00\x01ping"), r"""
# a PING: 8 opaque bytes on stream 0
type 12
flags 0
stream 0
data "gh\x00\x01ping"
""")

vector("ping_ack", frame(0x0C, 0x08, 0, b"gh\x00\x01ping"), r"""
# its answer: the same bytes with ACK
type 12
flags 8
stream 0
data "gh\x00\x01ping"
""")

# -- RESET (type 0x0D, section 8) ------------------------------------------------------------

vector("reset", frame(0x0D, 0, 5, u32(6)), r"""
# RESET CANCEL (6) on stream 5
type 13
flags 0
stream 5
error 6
""")

# -- GOAWAY (type 0x0E, section 9) -----------------------------------------------------------

vector("goaway", frame(0x0E, 0, 0, u32(13) + u32(0) + str16(b"draining")), r"""
# a draining application: last stream 13, NONE, debug text
type 14
flags 0
stream 0
last_stream 13
error 0
debug "draining"
""")

vector("goaway_version", frame(0x0E, 0, 0, u32(0) + u32(7) + str16(b"1")), r"""
# refusing the offered version: VERSION (7), the highest version spoken as debug text
type 14
flags 0
stream 0
last_stream 0
error 7
debug "1"
""")

# -- an unknown type (section 2: ignored, payload skipped) -----------------------------------

vector("unknown_type", frame(0x7F, 0, 3, b"future\x00frame\xff"), r"""
# type 0x7f is not in version 1: a decoder skips it (or returns it as unknown)
type 127
flags 0
stream 3
data "future\x00frame\xFF"
""")


def _check_section_12():
    """hello_gateway must be byte for byte the example printed in PROTOCOL.md section 12."""
    example = bytes.fromhex(
        "00 00 18 00 00 00 00 00 00"
        " 47 48 41 53 47 49"
        " 00 01"
        " 00 01 00 00"
        " 00 00 00 00"
        " 00 01 00 00"
        " 00 00 00 07")
    data = dict((n, d) for n, d, _ in VECTORS)["hello_gateway"]
    assert data == example, data.hex(" ")


def main():
    _check_section_12()
    names = set()
    for name, data, txt in VECTORS:
        assert name not in names, name
        names.add(name)
        with open(os.path.join(HERE, name + ".bin"), "wb") as f:
            f.write(data)
        with open(os.path.join(HERE, name + ".txt"), "w", encoding="ascii", newline="\n") as f:
            f.write(txt)
    print("wrote %d vectors to %s" % (len(VECTORS), HERE))


if __name__ == "__main__":
    main()
