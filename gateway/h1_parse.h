/* SPDX-License-Identifier: MIT */
/* Sans-I/O HTTP/1.x parser (RFC 9112): request heads, response heads, chunked bodies.
 * Bytes in, results out; no allocation, no I/O, no logging. Results are slices of the input. */
#ifndef GW_H1_PARSE_H
#define GW_H1_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/util.h"

/* Return codes. A complete head returns the number of bytes it used (> 0). Every error maps
 * to one HTTP status through h1_status(); the parser fills |err| with a static reason. */
enum h1_rc {
    H1_INCOMPLETE = -1,      /* need more bytes; not an error */
    H1_E_BAD = -2,           /* 400: malformed or ambiguous (smuggling, injection) */
    H1_E_HEADERS_TOO_BIG = -3, /* 431: head over limits.header_bytes */
    H1_E_TOO_MANY_HEADERS = -4, /* 431: more than limits.headers fields */
    H1_E_TARGET_TOO_LONG = -5, /* 414: request-target over limits.target_bytes */
    H1_E_VERSION = -6,       /* 505: HTTP/2+ or an unknown major version */
    H1_E_TE_UNKNOWN = -7,    /* 501: a transfer-coding other than chunked */
    H1_E_METHOD = -8,        /* 501: CONNECT (not proxied by the gateway) */
    H1_E_TOO_LARGE = -9,     /* 413: Content-Length over limits.body_bytes */
};

struct h1_limits {
    size_t header_bytes;  /* whole head, request line included */
    size_t headers;       /* number of header fields */
    size_t target_bytes;  /* request-target length */
    uint64_t body_bytes;  /* largest Content-Length accepted (requests only); 0 = no limit */
};

struct h1_header {
    struct gw_slice name;  /* a valid token, as received (case kept) */
    struct gw_slice value; /* leading and trailing OWS removed */
};

enum h1_body {
    H1_BODY_NONE = 0,   /* no body (no CL/TE, or CL 0, or a response that cannot have one) */
    H1_BODY_LENGTH,     /* Content-Length bytes follow */
    H1_BODY_CHUNKED,    /* chunked transfer-coding; decode with h1_chunked_decode() */
    H1_BODY_UNTIL_CLOSE /* responses only: body ends when the connection closes */
};

enum h1_target_form { H1_TARGET_ORIGIN, H1_TARGET_ABSOLUTE, H1_TARGET_ASTERISK };

struct h1_request {
    struct gw_slice method;     /* a valid token */
    struct gw_slice target;     /* as received */
    enum h1_target_form form;
    struct gw_slice path;       /* origin-form path (query included); from absolute-form too;
                                   "*" for asterisk-form */
    struct gw_slice authority;  /* host[:port]: absolute-form authority, else the Host value */
    int minor;                  /* HTTP/1.<minor>: 0 or 1 */
    struct h1_header *headers;  /* the caller's array, |nheaders| used */
    size_t nheaders;
    enum h1_body body;
    uint64_t content_length;    /* valid when body == H1_BODY_LENGTH */
    unsigned keep_alive : 1;    /* 1.1 without "close", or 1.0 with "keep-alive" */
    unsigned expect_continue : 1; /* Expect: 100-continue (only meaningful with a body) */
    unsigned upgrade : 1;       /* Connection: upgrade together with an Upgrade field */
    const char *err;            /* on error: a short static reason for the log */
};

struct h1_response {
    int status;                 /* 100..999 */
    int minor;
    struct gw_slice reason;
    struct h1_header *headers;
    size_t nheaders;
    enum h1_body body;
    uint64_t content_length;
    unsigned keep_alive : 1;    /* the server lets the connection be reused */
    const char *err;
};

/* Parses a request head from |buf|[0..|len|) into |out|, storing header fields in |hdrs|
 * (|max_hdrs| entries; more than min(|max_hdrs|, |lim|->headers) is H1_E_TOO_MANY_HEADERS).
 * Leading empty lines (RFC 9112 §2.2) are skipped. Returns the head's length including the final
 * CRLF, H1_INCOMPLETE, or a negative enum h1_rc (|out|->err says why). Requires: Host present
 * exactly once for 1.1 (absolute-form authority wins over it); CL and TE never together; one
 * valid CL; TE ending in chunked; no obs-fold, no bare CR/LF, no NUL or CTLs, no space before
 * the colon, token names and methods. */
int h1_parse_request(const char *buf, size_t len, const struct h1_limits *lim,
                     struct h1_header *hdrs, size_t max_hdrs, struct h1_request *out);

/* Parses a response head like h1_parse_request(). |head_request| says the request was HEAD:
 * with 1xx, 204 and 304 the body is then H1_BODY_NONE whatever the fields say. A body with
 * neither CL nor chunked is H1_BODY_UNTIL_CLOSE (and keep_alive is 0). */
int h1_parse_response(const char *buf, size_t len, const struct h1_limits *lim,
                      struct h1_header *hdrs, size_t max_hdrs, int head_request,
                      struct h1_response *out);

/* Maps a negative enum h1_rc to the HTTP status the gateway answers (400 for unknown codes). */
int h1_status(int rc);

/* Streaming chunked-body decoder state; zero-initialise, set |max_trailer_bytes|. */
struct h1_chunked {
    int state;
    uint64_t remaining;        /* bytes left in the current chunk */
    size_t line_bytes;         /* bytes seen of the current size or trailer line */
    size_t trailer_bytes;      /* total trailer bytes seen */
    size_t max_trailer_bytes;  /* limit on the trailer section (and on one size line) */
    const char *err;
};

enum h1_chunk_ev {
    H1_CHUNK_NEED = 0,    /* need more; input past |*used| (an incomplete trailer line,
                             bounded by max_trailer_bytes) must be fed again */
    H1_CHUNK_DATA = 1,    /* |*data| is a piece of body */
    H1_CHUNK_TRAILER = 2, /* |*data| is one trailer field line "name: value" (no CRLF), validated */
    H1_CHUNK_DONE = 3,    /* last-chunk and trailer section complete; stop feeding */
};

/* Decodes chunked framing from |in|[0..|len|). Sets |*used| to the bytes consumed and returns
 * one event (a DATA or TRAILER slice points into |in|), or a negative enum h1_rc (H1_E_BAD for
 * malformed sizes, overflow, bad extensions or CRLF; H1_E_HEADERS_TOO_BIG for trailers over the
 * limit). Call again with the unconsumed rest until it returns H1_CHUNK_NEED or DONE. Input may
 * be split anywhere. */
int h1_chunked_decode(struct h1_chunked *d, const char *in, size_t len, size_t *used,
                      struct gw_slice *data);

/* Returns 1 when |name| is a token and |value| holds only field-vchar, SP, HTAB and obs-text
 * (no CR, LF or NUL), so the pair can be written into a head as is; else 0. For fields from
 * upstreams whose protocol does not frame them as HTTP text (asgi). */
int h1_field_valid(struct gw_slice name, struct gw_slice value);

/* Returns 1 when |name| is a hop-by-hop field (RFC 9110 §7.6.1: Connection, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade), else 0. */
int h1_is_hop_by_hop(struct gw_slice name);

/* Returns 1 when the comma-separated |list| contains |token| (case-insensitive), else 0. */
int h1_list_has(struct gw_slice list, const char *token, size_t token_len);

/* Connection fields whose options h1_drop_hop_by_hop() honours; more are still removed. */
#define H1_MAX_CONN_FIELDS 8

/* Removes, in place and keeping the order, the hop-by-hop fields of |h| and the fields the
 * first H1_MAX_CONN_FIELDS Connection fields name (RFC 9110 §7.6.1). Returns the count kept. */
size_t h1_drop_hop_by_hop(struct h1_header *h, size_t n);

#endif
