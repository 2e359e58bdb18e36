/* SPDX-License-Identifier: MIT */
/* WebSocket (RFC 6455, RFC 7692), sans-I/O: the opening handshake's checks and answer, the
 * client frame input path (masking, framing, fragmentation, control frames, UTF-8, message
 * size, permessage-deflate), and server frame output. Bytes in, events out; no socket, no event
 * loop, no logging. The only allocations are zlib's, bounded by the negotiated window. */
#ifndef GW_WS_CODEC_H
#define GW_WS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/h1_parse.h"
#include "gateway/util.h"

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes (RFC 6455 §7.4.1; 1012..1014 from the IANA registry). 1005 and 1006 are never
 * sent: they stand for "no code" and "no close frame" on the receiving side. */
enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005,
    WS_CLOSE_ABNORMAL = 1006,
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_RESTART = 1012,
    WS_CLOSE_BAD_GATEWAY = 1014,
};

/* Returns 1 when |code| may appear in a close frame (1000-1003, 1007-1014, 3000-4999). */
int ws_close_code_valid(unsigned code);

/* ---- handshake (RFC 6455 §4.2) ---------------------------------------------------------- */

/* permessage-deflate parameters (RFC 7692 §7.1), as offered or as agreed. */
struct ws_pmd {
    unsigned server_no_context_takeover : 1;
    unsigned client_no_context_takeover : 1;
    uint8_t server_max_window_bits; /* 8..15; 15 when not given */
    uint8_t client_max_window_bits; /* 8..15; 15 when not given or given without a value */
};

/* What the gateway allows of permessage-deflate (from its configuration). */
struct ws_pmd_conf {
    int enabled;
    uint8_t max_window_bits;        /* 9..15: the largest window either direction may use */
    int no_context_takeover;        /* ask both sides not to keep context between messages */
};

struct ws_handshake {
    struct gw_slice key;            /* Sec-WebSocket-Key, validated (16 bytes in base64) */
    struct gw_slice origin;         /* Origin; empty when absent */
    int deflate;                    /* permessage-deflate agreed; |pmd| holds the parameters */
    struct ws_pmd pmd;
};

/* Checks a client's opening handshake (RFC 6455 §4.2.1) among the request fields |h[0..n)| of
 * a request with |method| and HTTP/1.<minor>, and fills |*out| (slices into |h|). When
 * |pmd_conf| enables it, the first acceptable permessage-deflate offer of
 * Sec-WebSocket-Extensions is agreed (an offer with an unknown or repeated parameter, or a
 * value out of range, is skipped as §5 of RFC 7692 says). Returns 0; 426 when
 * Sec-WebSocket-Version is missing or not 13 (answer with "Sec-WebSocket-Version: 13"); 400
 * for any other fault (not GET, not HTTP/1.1, Upgrade without a "websocket" token, Connection
 * without "upgrade", a missing, repeated or malformed key). |*why| gets a static reason. */
int ws_handshake_check(struct gw_slice method, int minor, const struct h1_header *h, size_t n,
                       const struct ws_pmd_conf *pmd_conf, struct ws_handshake *out,
                       const char **why);

/* Writes Sec-WebSocket-Accept for |key| (base64 of SHA-1 of the key and the RFC's GUID) into
 * |out|: 28 characters and a NUL. */
void ws_accept_key(struct gw_slice key, char out[29]);

/* Writes the Sec-WebSocket-Extensions value answering the agreed |pmd| into |out[0..cap)|
 * without a NUL. Returns its length, or 0 when |cap| is too small (128 is always enough). */
size_t ws_pmd_response(const struct ws_pmd *pmd, char *out, size_t cap);

/* Walks a comma-separated list (Sec-WebSocket-Protocol): sets |*tok| to the next token at or
 * after |*pos| in |list| (OWS trimmed, empty elements skipped) and advances |*pos|. Returns 1,
 * or 0 at the end. */
int ws_next_token(struct gw_slice list, size_t *pos, struct gw_slice *tok);

/* ---- frame input: client to gateway ------------------------------------------------------- */

struct z_stream_s;

/* The input side's configuration, fixed for the connection. */
struct ws_in_conf {
    uint64_t max_message;           /* largest message, after decompression; 0 = none */
    int deflate;                    /* permessage-deflate agreed: RSV1 allowed on messages */
    uint8_t window_bits;            /* the agreed client_max_window_bits */
    int no_context_takeover;        /* the agreed client_no_context_takeover */
};

/* Input state. Zero it, set |conf|, and free with ws_in_free(). Small (64 bytes on LP64) so an
 * idle connection costs little; the inflate stream is allocated at the first compressed
 * message and, under no_context_takeover, freed at the end of each. */
struct ws_in {
    struct ws_in_conf conf;
    uint64_t frame_left;            /* payload bytes of the current data frame still to come */
    uint64_t msg_bytes;             /* bytes of the current message delivered so far */
    struct z_stream_s *z;           /* inflate stream, or NULL */
    uint32_t utf8;                  /* UTF-8 validator state across the text message */
    uint8_t mask[4];
    uint8_t mask_off;               /* 0..3: where in |mask| the next payload byte is */
    uint8_t in_frame;               /* 1: a data frame's header was read; payload follows.
                                       2: a compressed message's payload is in; the 00 00 ff ff
                                       of RFC 7692 §7.2.2 is fed, |frame_left| counting it */
    uint8_t frame_fin;
    uint8_t msg_op;                 /* WS_OP_TEXT or WS_OP_BINARY while a message is open */
    uint8_t msg_deflate;            /* the open message is compressed (RSV1 on its first frame) */
    uint8_t msg_started;            /* a piece of the open message was delivered (FIRST sent) */
    uint8_t closed;                 /* a close frame or an error was returned: stop */
};

enum ws_in_type {
    WS_IN_NEED = 0,   /* no complete event in the input: feed more (bytes past |*used| again) */
    WS_IN_DATA,       /* a piece of a message: |data|, |len|, |flags| */
    WS_IN_PING,       /* a ping with its payload (0..125 bytes): answer with a pong */
    WS_IN_PONG,       /* a pong with its payload */
    WS_IN_CLOSE,      /* a valid close: |code| (1005 when the frame had none) and |data|,|len|
                         the reason (valid UTF-8). Nothing more is read. */
    WS_IN_ERROR,      /* the client broke the protocol: close with |code| (1002, 1007 or 1009;
                         1011 when memory for the inflate stream ran out); |why| says why.
                         Nothing more is read. */
};

/* Flags of a WS_IN_DATA piece (and of a message piece sent to the client). */
#define WS_F_TEXT 0x1   /* the message is text (valid UTF-8, checked as it goes) */
#define WS_F_FIRST 0x2  /* the first piece of its message */
#define WS_F_FIN 0x4    /* the last piece of its message (may have |len| 0) */

struct ws_in_event {
    enum ws_in_type type;
    unsigned flags;
    const uint8_t *data;            /* into the caller's |buf| or |scratch| */
    size_t len;
    unsigned code;
    const char *why;                /* static, for WS_IN_ERROR */
};

/* Reads the next event from the client bytes |buf[0..len)|. Payloads are unmasked in place, so
 * |buf| is written. Sets |*used| to the bytes consumed (a frame header and a control frame are
 * consumed only whole, so the caller keeps the rest and calls again with more). Compressed
 * message data is inflated into |scratch[0..scratch_cap)| (scratch_cap >= 256); a DATA event
 * then points there and may have consumed no input when only output space was lacking. Call
 * again while it returns something other than WS_IN_NEED. Enforces: client frames masked,
 * RSV2/RSV3 clear and RSV1 only on the first frame of a message when deflate was agreed,
 * no unknown opcodes, control frames unfragmented and at most 125 bytes, continuation only
 * inside a message and a new message only outside one (1002); text and close reasons valid
 * UTF-8, also across fragments, and a compressed stream that inflates (1007); max_message
 * (1009); close payloads of 0 or 2+ bytes with a valid code (1002). Returns the event's type;
 * the event is in |*ev|. Returns WS_IN_NEED for ever after a WS_IN_CLOSE or WS_IN_ERROR. */
enum ws_in_type ws_in_next(struct ws_in *s, uint8_t *buf, size_t len, size_t *used,
                           uint8_t *scratch, size_t scratch_cap, struct ws_in_event *ev);

/* Frees the inflate stream, if any. The struct may be zeroed and reused after. */
void ws_in_free(struct ws_in *s);

/* ---- frame output: gateway to client ------------------------------------------------------ */

/* Largest frame header the gateway writes (unmasked: 2 + 8). */
#define WS_FRAME_HEADER_MAX 10

/* Writes an unmasked frame header (server to client) for |opcode| with FIN and RSV1 as given and
 * a payload of |len| bytes into |out|. Returns its length (2, 4 or 10). */
size_t ws_frame_header(uint8_t out[WS_FRAME_HEADER_MAX], unsigned opcode, int fin, int rsv1,
                       uint64_t len);

/* Writes a close frame's payload: |code| (big-endian) then |reason| cut to 123 bytes at a UTF-8
 * boundary. Returns its length (2..125). |code| must be valid to send. */
size_t ws_close_payload(uint8_t out[125], unsigned code, const char *reason, size_t reason_len);

/* Output compression state for one connection (RFC 7692 §7.2.1). Zero it, set |window_bits| and
 * |no_context_takeover| from the agreed server_* parameters, and free with ws_out_free(). */
struct ws_out {
    uint8_t window_bits;
    int no_context_takeover;
    struct z_stream_s *z;           /* deflate stream, allocated at the first message */
    uint8_t hold[4];                /* the last output bytes held back: a message's compressed
                                       form must not end with the 00 00 ff ff of the flush */
    uint8_t nhold;
};

/* Compresses a piece of a message: |in[0..in_len)|, the last piece when |fin|. Writes compressed
 * bytes to |out[0..cap)| (cap >= 64), sets |*in_used| and |*out_len|. Call again with the rest
 * of the input until it has taken all of it and, when |fin|, until it returns 1: the message's
 * compressed form is then complete (the trailing 00 00 ff ff removed). Returns 0 while more
 * output may follow, 1 when done with a |fin| piece, -1 when zlib fails (out of memory). */
int ws_out_deflate(struct ws_out *o, const uint8_t *in, size_t in_len, int fin, uint8_t *out,
                   size_t cap, size_t *in_used, size_t *out_len);

/* Frees the deflate stream, if any. */
void ws_out_free(struct ws_out *o);

/* ---- UTF-8 ------------------------------------------------------------------------------ */

#define WS_UTF8_ACCEPT 0u

/* Feeds |p[0..n)| to the incremental UTF-8 validator in |*state| (start at WS_UTF8_ACCEPT).
 * Returns 0, or -1 at the first invalid byte (overlong forms, surrogates and code points over
 * U+10FFFF are invalid); a sequence may be split across calls. The text is complete and valid
 * when |*state| is WS_UTF8_ACCEPT at its end. */
int ws_utf8_feed(uint32_t *state, const uint8_t *p, size_t n);

#endif
