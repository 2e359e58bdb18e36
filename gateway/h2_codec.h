/* SPDX-License-Identifier: MIT */
/* The server side of HTTP/2 framing, sans I/O: bytes in, request events out, response frames
 * out as bytes. nghttp2 (1.52) does the framing, HPACK and the RFC 9113 checks; this layer
 * gathers request heads within the configured limits, keeps flow control in the caller's
 * hands (a stream's window opens only for bytes the caller passed on), and guards against
 * the known floods, which nghttp2 1.52 does not all bound by itself. No sockets: gateway/h2.c
 * binds it to a connection, tests/fuzz/fuzz_h2_codec.c feeds it bytes. */
#ifndef GW_H2_CODEC_H
#define GW_H2_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/h1_parse.h"
#include "gateway/util.h"

/* The floods the codec answers with GOAWAY(ENHANCE_YOUR_CALM), and the other reasons it ends
 * a connection; gw_h2c_protect_name() names each for logs and metrics. */
enum h2c_protect {
    H2C_P_RAPID_RESET = 0, /* client RST_STREAMs (CVE-2023-44487) */
    H2C_P_CONTINUATION,    /* a header block in too many CONTINUATION frames, or too big */
    H2C_P_SETTINGS,        /* SETTINGS frames */
    H2C_P_PING,            /* PING frames */
    H2C_P_PRIORITY,        /* PRIORITY frames */
    H2C_P_EMPTY_DATA,      /* DATA frames with no payload and no END_STREAM */
    H2C_P_HEADER_LIST,     /* requests whose decoded header list passed the limit (HPACK
                              bombs): each answered 431, too many end the connection */
    H2C_P_STREAMS,         /* streams opened past SETTINGS_MAX_CONCURRENT_STREAMS */
    H2C_P_COUNT
};

/* Per connection, within one window of H2C_FLOOD_WINDOW_MS (the counts restart each window),
 * more than these many frames of a kind end the connection. Browsers stay far below: a page
 * load cancels tens of streams, not hundreds, and sends a few SETTINGS and PINGs. */
#define H2C_FLOOD_WINDOW_MS 10000
#define H2C_MAX_RESETS 200
#define H2C_MAX_SETTINGS 100
#define H2C_MAX_PINGS 100
#define H2C_MAX_PRIORITY 500
#define H2C_MAX_EMPTY_DATA 100
/* Not windowed: per header block (below the limit of 8 that Debian's nghttp2 1.52 enforces
 * itself since CVE-2024-28182, so that the flood is ours to count), and per connection. */
#define H2C_MAX_CONTINUATIONS 7
#define H2C_MAX_BIG_HEADERS 10

/* The limits of one connection, from the configuration. */
struct h2c_limits {
    size_t header_bytes;             /* a header block, encoded, and a head, decoded */
    size_t headers;                  /* fields in a head */
    uint32_t max_concurrent_streams;
    uint32_t window;                 /* each stream's receive window */
    uint32_t connection_window;
    int connect_protocol;            /* advertise RFC 8441 extended CONNECT */
};

/* A request head, lent for the call. Field names are lower case (HTTP/2 requires it). Cookie
 * fields come joined into one (RFC 9113 §8.2.3). */
struct h2c_req {
    struct gw_slice method, scheme, authority, path, protocol; /* empty when absent */
    struct h1_header *headers;       /* the regular fields, in order */
    size_t nheaders;
    int end_stream;                  /* no body follows */
    int64_t content_length;          /* -1 when not given */
    int too_big;                     /* the head passed a limit: answer 431 (already counted) */
};

/* What the codec tells its owner. Each gets the owner's |ud|. Calls come only from inside
 * h2c_recv() and h2c_send(); a callback must not call h2c_recv() or h2c_send(). */
struct h2c_cbs {
    /* A request head on a new stream |sid|. Returns 0, or -1 to reset the stream. */
    int (*request)(void *ud, int32_t sid, const struct h2c_req *r);
    /* Request body bytes of |sid|, lent. The stream's window does not open for them until the
     * owner calls h2c_consume(). Returns 0, or -1 to reset the stream (the codec then gives
     * the bytes back to the connection's window itself: do not consume them). */
    int (*data)(void *ud, int32_t sid, const uint8_t *p, size_t n);
    /* The request of |sid| is complete (END_STREAM; trailers were dropped). */
    void (*end)(void *ud, int32_t sid);
    /* Stream |sid| is closed (both sides done, or reset by either side, or the connection
     * ended): |code| is its HTTP/2 error code (0 when it ended normally). Last call for it.
     * It also comes for streams that never had a request(): a malformed head (RST_STREAM
     * PROTOCOL_ERROR) or one refused before the client acknowledged the settings. */
    void (*closed)(void *ud, int32_t sid, uint32_t code);
    /* Response body of |sid| for a DATA frame: copies at most |len| bytes to |buf| and returns
     * their number; sets *eof when the body ends with them, and then may point *t at |*nt|
     * trailer fields (lent until the call returns) to send after it. Returns 0 with *eof
     * unset to wait for h2c_resume(). */
    size_t (*body)(void *ud, int32_t sid, uint8_t *buf, size_t len, int *eof,
                   const struct h1_header **t, size_t *nt);
    /* Optional. When set, body() is called with |buf| NULL and only says how many bytes it
     * has (it copies nothing), and the codec later calls send_data() in order with the
     * frame's 9-byte header |hd|: the owner writes it, then |n| body bytes of |sid|, to its
     * output, with no copy through the codec (RFC 9113 DATA frames without padding). */
    void (*send_data)(void *ud, int32_t sid, const uint8_t *hd, size_t n);
    /* Optional: the client broke the protocol and nghttp2 answered it: with |sid| 0 a
     * connection error (its GOAWAY went out, with the |debug| text, lent), else a stream error
     * (RST_STREAM). |code| is the HTTP/2 error code. For the log. */
    void (*error)(void *ud, int32_t sid, uint32_t code, const uint8_t *debug, size_t n);
    /* The codec ends the connection for |why| (a flood: GOAWAY ENHANCE_YOUR_CALM is queued). */
    void (*protect)(void *ud, enum h2c_protect why);
};

struct h2c;

/* Creates a server session and queues the server's SETTINGS and connection window. Returns
 * NULL when out of memory. */
struct h2c *h2c_new(const struct h2c_limits *lim, const struct h2c_cbs *cbs, void *ud);

/* Frees the session. The owner's streams get no closed() call. */
void h2c_free(struct h2c *h);

/* Feeds |n| bytes the client sent (the connection preface first); |now_ms| is the monotonic
 * clock the flood windows count in. Returns the bytes consumed (all of them), or -1 when the
 * connection must end at once: a flood, a bad preface or a fatal error (a GOAWAY is queued:
 * send it with h2c_send(), then close). A connection error nghttp2 answers itself (RFC 9113
 * §5.4.1) returns normally: its GOAWAY is queued, and h2c_done() is true once it is sent. */
long h2c_recv(struct h2c *h, const uint8_t *p, size_t n, uint64_t now_ms);

/* Serializes queued frames: calls |put| with each run of bytes until |max| bytes were put or
 * nothing is left. Returns 0, or -1 on a fatal error. */
int h2c_send(struct h2c *h, size_t max, void (*put)(void *arg, const uint8_t *p, size_t n),
             void *arg);

/* 1 while the session has frames to send. */
int h2c_want_write(const struct h2c *h);

/* 1 once the session is over: a GOAWAY went out or came in, and no stream is open. */
int h2c_done(const struct h2c *h);

/* Queues a response head for |sid|: |status| and |hdrs[0..n)| (any case; connection-specific
 * fields are dropped, names lowered). With |has_body| the body comes through cbs->body.
 * Returns 0, or -1 (the stream is gone). */
int h2c_respond(struct h2c *h, int32_t sid, int status, const struct h1_header *hdrs, size_t n,
                int has_body);

/* More of |sid|'s response body is ready (body() had returned 0). */
void h2c_resume(struct h2c *h, int32_t sid);

/* |n| request body bytes of |sid| were passed on: open the windows for as many. */
void h2c_consume(struct h2c *h, int32_t sid, size_t n);

/* Attaches the owner's |data| to the open stream |sid| (NULL detaches); h2c_stream_data()
 * returns it, or NULL for a stream that is not open. */
void h2c_set_stream_data(struct h2c *h, int32_t sid, void *data);
void *h2c_stream_data(const struct h2c *h, int32_t sid);

/* Resets |sid| with |code| (an HTTP/2 error code). */
void h2c_reset(struct h2c *h, int32_t sid, uint32_t code);

/* Queues a GOAWAY(NO_ERROR) naming the last stream the session took: streams open finish,
 * no new one starts. */
void h2c_goaway(struct h2c *h);

/* The name of |why| ("rapid_reset", ...). */
const char *gw_h2c_protect_name(enum h2c_protect why);

#endif
