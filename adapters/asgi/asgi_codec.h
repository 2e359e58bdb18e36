/* SPDX-License-Identifier: MIT */
/* Sans-I/O codec for the gatehouse ASGI message protocol (adapters/asgi/PROTOCOL.md): frame
 * headers and every payload layout, decoded into slices of the input and encoded into a caller
 * buffer. No allocation, no I/O; the session rules (ids, credits, states) are the caller's. */
#ifndef ASGI_CODEC_H
#define ASGI_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* §2: length (u24) | type (u8) | flags (u8) | R (1 bit) + stream id (u31), big-endian. */
#define ASGI_FRAME_HDR_LEN 9
#define ASGI_MAX_LEN 0xFFFFFFu      /* the largest length a u24 holds */
#define ASGI_STREAM_MAX 0x7FFFFFFFu /* the largest stream id a u31 holds */
/* The longest frame there is: an output buffer this big never makes an encoder fall short. */
#define ASGI_FRAME_MAX_BYTES (ASGI_FRAME_HDR_LEN + ASGI_MAX_LEN)
#define ASGI_STR16_MAX 0xFFFFu /* the longest str16, and the most entries a u16 count holds */

/* §3: HELLO. */
#define ASGI_MAGIC "GHASGI"
#define ASGI_MAGIC_LEN 6
#define ASGI_VERSION 1
#define ASGI_DEFAULT_MAX_FRAME 16384u /* a peer's max_frame until its HELLO arrives */
/* The range of a HELLO's max_frame: the session checks it, the codec does not. */
#define ASGI_MIN_MAX_FRAME 16384u
#define ASGI_MAX_MAX_FRAME ASGI_MAX_LEN
#define ASGI_HELLO_LEN 24 /* 6 + 2 + 4 * 4 */

/* §6, §7: fixed sizes. */
#define ASGI_CREDIT_MAX 0x7FFFFFFFu
#define ASGI_CREDIT_LEN 4
#define ASGI_PING_LEN 8
#define ASGI_RESET_LEN 4

enum asgi_frame_type {
    ASGI_HELLO = 0x00,
    ASGI_HTTP_REQUEST = 0x01,
    ASGI_DATA = 0x02,
    ASGI_HTTP_RESPONSE = 0x03,
    ASGI_TRAILERS = 0x04,
    ASGI_PATHSEND = 0x05,
    ASGI_DISCONNECT = 0x06,
    ASGI_WS_CONNECT = 0x07,
    ASGI_WS_ACCEPT = 0x08,
    ASGI_WS_MESSAGE = 0x09,
    ASGI_WS_CLOSE = 0x0A,
    ASGI_CREDIT = 0x0B,
    ASGI_PING = 0x0C,
    ASGI_RESET = 0x0D,
    ASGI_GOAWAY = 0x0E,
    ASGI_TYPE_LAST = ASGI_GOAWAY, /* types above this are unknown: skip |length| bytes */
};

enum asgi_flag {
    ASGI_F_END = 0x01,
    ASGI_F_MORE = 0x02,
    ASGI_F_TEXT = 0x04,
    ASGI_F_ACK = 0x08,
};

/* §8: the codes RESET and GOAWAY carry. */
enum asgi_error {
    ASGI_ERR_NONE = 0,
    ASGI_ERR_PROTOCOL = 1,
    ASGI_ERR_INTERNAL = 2,
    ASGI_ERR_FLOW = 3,
    ASGI_ERR_FRAME_SIZE = 4,
    ASGI_ERR_REFUSED = 5,
    ASGI_ERR_CANCEL = 6,
    ASGI_ERR_VERSION = 7,
};

/* §3: HELLO capabilities. */
enum asgi_capability {
    ASGI_CAP_WEBSOCKET = 0x1,
    ASGI_CAP_TRAILERS = 0x2,
    ASGI_CAP_PATHSEND = 0x4,
    ASGI_CAP_TLS = 0x8, /* HTTP_REQUEST and WS_CONNECT end with the §4.1 tls block */
};

/* Return codes. Encoders return the frame's length (> 0) instead of ASGI_OK. */
enum asgi_rc {
    ASGI_OK = 0,
    ASGI_INCOMPLETE = -1,   /* header decoder: fewer than 9 bytes; not an error */
    ASGI_E_FRAME_SIZE = -2, /* length over max_frame, or a payload that does not match its
                             * type's layout (truncated, trailing bytes): wire FRAME_SIZE */
    ASGI_E_PROTOCOL = -3,   /* HELLO with a bad magic: wire PROTOCOL */
    ASGI_E_TOO_MANY = -4,   /* decoder: more headers or subprotocols than the caller's array */
    ASGI_E_VALUE = -5,      /* encoder: a str16 or count over 65535, or a stream id over 2^31-1 */
    ASGI_E_NOSPACE = -6,    /* encoder: the frame does not fit in |cap| bytes */
};

/* A byte string: |p| need not be NUL-terminated and may be NULL when |len| is 0. Decoded
 * strings are slices of the decoder's input, valid as long as it is. */
struct asgi_str {
    const char *p;
    size_t len;
};

struct asgi_header {
    struct asgi_str name;
    struct asgi_str value;
};

struct asgi_frame_header {
    size_t length;   /* payload bytes after the 9-byte header */
    uint8_t type;    /* enum asgi_frame_type, or an unknown type to skip */
    uint8_t flags;   /* enum asgi_flag bits, as received */
    uint32_t stream; /* R bit masked off on decode */
};

struct asgi_hello { /* §3; the magic is checked on decode and written on encode */
    uint16_t version;
    uint32_t max_frame;
    uint32_t max_streams;
    uint32_t initial_credit;
    uint32_t capabilities;
};

/* §4.1 tls block: the ASGI "tls" scope extension. Encoded and decoded when |block| (the TLS
 * capability was negotiated). */
struct asgi_tls {
    int block;                  /* the block is (to be) on the wire */
    int present;                /* https/wss: the fields below are set */
    uint16_t version;           /* tls_version: 0x0303, 0x0304 */
    uint16_t cipher_suite;      /* IANA id */
    struct asgi_str client_cert_name;  /* RFC 4514 subject; len 0: None */
    struct asgi_str client_cert_error; /* len 0: None */
    struct asgi_str client_cert;       /* PEM; len 0: no certificate (client_cert_chain []) */
};

/* §4.1. |headers| points at the decoder's caller array, or at the encoder's input. */
struct asgi_http_request {
    struct asgi_str http_version, method, scheme, path, raw_path, query_string, root_path;
    struct asgi_str client_host;
    uint16_t client_port;
    struct asgi_str server_host;
    uint16_t server_port;
    const struct asgi_header *headers;
    size_t n_headers;
    struct asgi_tls tls;
};

struct asgi_ws_connect { /* §5.1: the §4.1 scope, then the offered subprotocols */
    struct asgi_http_request scope;
    const struct asgi_str *subprotocols;
    size_t n_subprotocols;
};

struct asgi_http_response { /* §4.3 */
    uint16_t status;
    const struct asgi_header *headers;
    size_t n_headers;
};

struct asgi_trailers { /* §4.4 */
    const struct asgi_header *headers;
    size_t n_headers;
};

struct asgi_pathsend { /* §4.5 */
    struct asgi_str path;
};

struct asgi_close { /* DISCONNECT (§4.6) and WS_CLOSE (§5.4) share this layout */
    uint16_t code;
    struct asgi_str reason;
};

struct asgi_ws_accept { /* §5.2 */
    struct asgi_str subprotocol;
    const struct asgi_header *headers;
    size_t n_headers;
};

struct asgi_credit { /* §6; 0 and overflow are the session's FLOW errors, not the codec's */
    uint32_t increment;
};

struct asgi_ping { /* §7; copied, not sliced */
    uint8_t opaque[ASGI_PING_LEN];
};

struct asgi_reset { /* §8 */
    uint32_t error;
};

struct asgi_goaway { /* §9 */
    uint32_t last_stream;
    uint32_t error;
    struct asgi_str debug;
};

/* ---- frame header --------------------------------------------------------------------------- */

/* Decodes the frame header at the start of |in[0..len)| into |*h|, with the R bit masked off.
 * Any type is accepted: an unknown one is skipped by the caller (9 + h->length bytes). Returns
 * ASGI_INCOMPLETE while |len| < 9, ASGI_E_FRAME_SIZE when the length is over |max_frame| (the
 * max_frame this side announced), else ASGI_OK; |*h| is only written on ASGI_OK. */
int asgi_frame_header_decode(const uint8_t *in, size_t len, size_t max_frame,
                             struct asgi_frame_header *h);

/* Writes |h| as 9 bytes into |out[0..cap)| with R = 0. Returns 9; ASGI_E_VALUE when h->stream is
 * over 2^31-1, ASGI_E_FRAME_SIZE when h->length is over |max_frame| (the peer's) or 2^24-1,
 * ASGI_E_NOSPACE when |cap| < 9 (checked in that order); nothing is written on failure. For
 * DATA and WS_MESSAGE the caller may send the payload from where it lies after this header. */
int asgi_frame_header_encode(uint8_t *out, size_t cap, size_t max_frame,
                             const struct asgi_frame_header *h);

/* ---- payloads ------------------------------------------------------------------------------- */

/* Payload decoders take exactly one frame's payload, |p[0..len)| with |len| = h.length. They
 * return ASGI_OK, or ASGI_E_FRAME_SIZE when the payload is truncated or has bytes after its
 * layout. Those with lists check each count as it is read: one the rest of the payload has no
 * room for (4 bytes a header, 2 a subprotocol) is ASGI_E_FRAME_SIZE, else one over the caller's
 * |max| is ASGI_E_TOO_MANY (the entries are not read). On error |*out| is untouched but the
 * caller's arrays may have been written. Flags and stream ids are the caller's to check. */

/* HELLO: exactly 24 bytes (else ASGI_E_FRAME_SIZE) starting with "GHASGI" (else
 * ASGI_E_PROTOCOL). Version, max_frame range and capabilities are not checked. */
int asgi_decode_hello(const uint8_t *p, size_t len, struct asgi_hello *out);

/* HTTP_REQUEST: headers go into |headers[0..max_headers)|, and out->headers points at them.
 * |tls|: the TLS capability was negotiated, so the payload ends with the tls block. */
int asgi_decode_http_request(const uint8_t *p, size_t len, struct asgi_http_request *out,
                             struct asgi_header *headers, size_t max_headers, int tls);

/* WS_CONNECT: as HTTP_REQUEST, then the offered subprotocols into |subprotocols[0..max_sub)|,
 * then with |tls| the tls block. */
int asgi_decode_ws_connect(const uint8_t *p, size_t len, struct asgi_ws_connect *out,
                           struct asgi_header *headers, size_t max_headers,
                           struct asgi_str *subprotocols, size_t max_sub, int tls);

/* HTTP_RESPONSE: status, then headers into |headers[0..max_headers)|. */
int asgi_decode_http_response(const uint8_t *p, size_t len, struct asgi_http_response *out,
                              struct asgi_header *headers, size_t max_headers);

/* TRAILERS: headers into |headers[0..max_headers)|. */
int asgi_decode_trailers(const uint8_t *p, size_t len, struct asgi_trailers *out,
                         struct asgi_header *headers, size_t max_headers);

/* PATHSEND: one str16. */
int asgi_decode_pathsend(const uint8_t *p, size_t len, struct asgi_pathsend *out);

/* DISCONNECT and WS_CLOSE: code u16, reason str16. */
int asgi_decode_close(const uint8_t *p, size_t len, struct asgi_close *out);

/* WS_ACCEPT: subprotocol, then headers into |headers[0..max_headers)|. */
int asgi_decode_ws_accept(const uint8_t *p, size_t len, struct asgi_ws_accept *out,
                          struct asgi_header *headers, size_t max_headers);

/* CREDIT: exactly 4 bytes. The increment is not range-checked (a 0 is the session's FLOW). */
int asgi_decode_credit(const uint8_t *p, size_t len, struct asgi_credit *out);

/* PING: exactly 8 bytes, copied into out->opaque. */
int asgi_decode_ping(const uint8_t *p, size_t len, struct asgi_ping *out);

/* RESET: exactly 4 bytes. Any code is accepted. */
int asgi_decode_reset(const uint8_t *p, size_t len, struct asgi_reset *out);

/* GOAWAY: last_stream u32 (not masked), error u32, debug str16. */
int asgi_decode_goaway(const uint8_t *p, size_t len, struct asgi_goaway *out);

/* DATA, WS_MESSAGE and unknown types: the whole payload as one slice. Always ASGI_OK. */
int asgi_decode_raw(const uint8_t *p, size_t len, struct asgi_str *out);

/* Encoders write the 9-byte header (|type| implied, |flags| and |stream| as given, R = 0) and the
 * payload into |out[0..cap)| and return the frame's length, 9 + payload. They first size the
 * payload in size_t (saturating above 2^24-1, so nothing wraps) and fail before writing anything:
 * ASGI_E_VALUE when a str16 or a count is over 65535 or |stream| over 2^31-1, else
 * ASGI_E_FRAME_SIZE when the payload is over |max_frame| (the peer's; pass ASGI_MAX_LEN for
 * none) or 2^24-1, else ASGI_E_NOSPACE when the frame is over |cap|. Frames are at most
 * 9 + 2^24-1 bytes (ASGI_FRAME_MAX_BYTES), so the length always fits an int. Stream ids and
 * flags are not judged: the session picks them. */

/* HELLO: "GHASGI" then |in|'s fields (stream 0; ACK on the application's answer). */
int asgi_encode_hello(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                      const struct asgi_hello *in);
/* HTTP_REQUEST: the scope, then in->headers[0..in->n_headers) (NULL when 0). */
int asgi_encode_http_request(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                             uint32_t stream, const struct asgi_http_request *in);
/* WS_CONNECT: the scope, then in->subprotocols[0..in->n_subprotocols) (NULL when 0). */
int asgi_encode_ws_connect(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                           uint32_t stream, const struct asgi_ws_connect *in);
/* HTTP_RESPONSE: status, then in->headers[0..in->n_headers) (NULL when 0). */
int asgi_encode_http_response(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                              uint32_t stream, const struct asgi_http_response *in);
/* TRAILERS: in->headers[0..in->n_headers) (NULL when 0). */
int asgi_encode_trailers(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                         const struct asgi_trailers *in);
/* PATHSEND: one str16. */
int asgi_encode_pathsend(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                         const struct asgi_pathsend *in);
/* DISCONNECT or WS_CLOSE, as |type| says (any other |type|: ASGI_E_VALUE): code, reason. */
int asgi_encode_close(uint8_t *out, size_t cap, size_t max_frame, uint8_t type, uint8_t flags,
                      uint32_t stream, const struct asgi_close *in);
/* WS_ACCEPT: subprotocol, then in->headers[0..in->n_headers) (NULL when 0). */
int asgi_encode_ws_accept(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                          uint32_t stream, const struct asgi_ws_accept *in);
/* CREDIT: the increment, not range-checked (the session keeps it in 1 .. 2^31-1). */
int asgi_encode_credit(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                       const struct asgi_credit *in);
/* PING: the 8 opaque bytes (stream 0; ACK on the answer). */
int asgi_encode_ping(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                     const struct asgi_ping *in);
/* RESET: the error code. */
int asgi_encode_reset(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                      const struct asgi_reset *in);
/* GOAWAY: last_stream, error, debug (stream 0). */
int asgi_encode_goaway(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                       const struct asgi_goaway *in);
/* DATA, WS_MESSAGE or an unknown |type|: |in| copied as the payload. To avoid the copy, encode
 * the header with asgi_frame_header_encode() and send the bytes after it. */
int asgi_encode_raw(uint8_t *out, size_t cap, size_t max_frame, uint8_t type, uint8_t flags,
                    uint32_t stream, const struct asgi_str *in);

#endif
