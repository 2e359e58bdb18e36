/* SPDX-License-Identifier: MIT */
/* The ASGI message protocol codec (adapters/asgi/PROTOCOL.md): frame headers and payloads,
 * decoded as slices of the input and encoded in two passes (size, then write); libc only. */
#include "adapters/asgi/asgi_codec.h"

#include <string.h>

/* ---- reading -------------------------------------------------------------------------------- */

/* A cursor over one payload. A read past |end| sets |bad| and pins |p| at |end|, so a decoder
 * reads its whole layout straight through and checks once at the end (§8: a payload that does
 * not match its type's layout is FRAME_SIZE, whether short or long). */
struct rd {
    const uint8_t *p, *end;
    int bad;
};

static inline size_t rd_left(const struct rd *r)
{
    return (size_t)(r->end - r->p);
}

static inline int rd_short(struct rd *r, size_t n)
{
    if (rd_left(r) >= n)
        return 0;
    r->bad = 1;
    r->p = r->end;
    return 1;
}

static inline uint16_t rd_u16(struct rd *r)
{
    uint16_t v;

    if (rd_short(r, 2))
        return 0;
    v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return v;
}

static inline uint32_t rd_u32(struct rd *r)
{
    uint32_t v;

    if (rd_short(r, 4))
        return 0;
    v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    return v;
}

static inline struct asgi_str rd_str16(struct rd *r)
{
    size_t n = rd_u16(r);
    struct asgi_str s = {NULL, 0};

    if (rd_short(r, n))
        return s;
    s.p = (const char *)r->p;
    s.len = n;
    r->p += n;
    return s;
}

/* The layout ended exactly at the end of the payload. */
static inline int rd_done(const struct rd *r)
{
    return r->bad || r->p != r->end ? ASGI_E_FRAME_SIZE : ASGI_OK;
}

/* Reads a u16 count of entries of at least |min_entry| bytes each. A count the payload has no
 * room for is malformed (FRAME_SIZE) whatever |max| is; one over |max| is TOO_MANY. */
static inline int rd_count(struct rd *r, size_t min_entry, size_t max, size_t *count)
{
    size_t n = rd_u16(r);

    if (r->bad || n > rd_left(r) / min_entry)
        return ASGI_E_FRAME_SIZE;
    if (n > max)
        return ASGI_E_TOO_MANY;
    *count = n;
    return ASGI_OK;
}

static int rd_headers(struct rd *r, struct asgi_header *hs, size_t max, size_t *n)
{
    size_t count = 0;
    int rc = rd_count(r, 4, max, &count);

    if (rc != ASGI_OK)
        return rc;
    for (size_t i = 0; i < count; i++) {
        hs[i].name = rd_str16(r);
        hs[i].value = rd_str16(r);
    }
    if (r->bad)
        return ASGI_E_FRAME_SIZE;
    *n = count;
    return ASGI_OK;
}

/* §4.1, also the first part of WS_CONNECT. */
static int rd_scope(struct rd *r, struct asgi_http_request *q, struct asgi_header *hs, size_t max)
{
    q->http_version = rd_str16(r);
    q->method = rd_str16(r);
    q->scheme = rd_str16(r);
    q->path = rd_str16(r);
    q->raw_path = rd_str16(r);
    q->query_string = rd_str16(r);
    q->root_path = rd_str16(r);
    q->client_host = rd_str16(r);
    q->client_port = rd_u16(r);
    q->server_host = rd_str16(r);
    q->server_port = rd_u16(r);
    q->headers = hs;
    return rd_headers(r, hs, max, &q->n_headers);
}

/* §4.1 tls block, with the TLS capability. */
static void rd_tls(struct rd *r, struct asgi_tls *t, int tls)
{
    memset(t, 0, sizeof *t);
    if (!tls)
        return;
    t->block = 1;
    if (rd_short(r, 1))
        return;
    t->present = *r->p++;
    if (!t->present)
        return;
    t->version = rd_u16(r);
    t->cipher_suite = rd_u16(r);
    t->client_cert_name = rd_str16(r);
    t->client_cert_error = rd_str16(r);
    t->client_cert = rd_str16(r);
}

/* ---- sizing and writing --------------------------------------------------------------------- */

/* A payload's size, summed in size_t and pinned at ASGI_MAX_LEN + 1 once over it: each step adds
 * at most 2 + 65535, so the sum never wraps, even with a 32-bit size_t. |bad| marks a value that
 * does not fit its field. */
struct sz {
    size_t total;
    int bad;
};

static inline void sz_add(struct sz *s, size_t n)
{
    s->total += n;
    if (s->total > ASGI_MAX_LEN)
        s->total = (size_t)ASGI_MAX_LEN + 1;
}

static inline void sz_str(struct sz *s, const struct asgi_str *str)
{
    if (str->len > ASGI_STR16_MAX)
        s->bad = 1;
    else
        sz_add(s, 2 + str->len);
}

/* Returns whether the |n| entries of a u16-counted list may be looked at. */
static inline int sz_count(struct sz *s, size_t n)
{
    if (n > ASGI_STR16_MAX) {
        s->bad = 1;
        return 0;
    }
    sz_add(s, 2);
    return 1;
}

static void sz_headers(struct sz *s, const struct asgi_header *hs, size_t n)
{
    if (!sz_count(s, n))
        return;
    for (size_t i = 0; i < n; i++) {
        sz_str(s, &hs[i].name);
        sz_str(s, &hs[i].value);
    }
}

static void sz_scope(struct sz *s, const struct asgi_http_request *q)
{
    sz_str(s, &q->http_version);
    sz_str(s, &q->method);
    sz_str(s, &q->scheme);
    sz_str(s, &q->path);
    sz_str(s, &q->raw_path);
    sz_str(s, &q->query_string);
    sz_str(s, &q->root_path);
    sz_str(s, &q->client_host);
    sz_add(s, 2);
    sz_str(s, &q->server_host);
    sz_add(s, 2);
    sz_headers(s, q->headers, q->n_headers);
}

static void sz_tls(struct sz *s, const struct asgi_tls *t)
{
    if (!t->block)
        return;
    sz_add(s, 1);
    if (!t->present)
        return;
    sz_add(s, 4);
    sz_str(s, &t->client_cert_name);
    sz_str(s, &t->client_cert_error);
    sz_str(s, &t->client_cert);
}

/* The writers below run after sizing: every value fits its field and the frame fits |cap|. */

static inline uint8_t *put_u16(uint8_t *o, size_t v)
{
    o[0] = (uint8_t)(v >> 8);
    o[1] = (uint8_t)(v & 0xff);
    return o + 2;
}

static inline uint8_t *put_u32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 24);
    o[1] = (uint8_t)(v >> 16 & 0xff);
    o[2] = (uint8_t)(v >> 8 & 0xff);
    o[3] = (uint8_t)(v & 0xff);
    return o + 4;
}

/* memcpy's pointers must be valid even for 0 bytes, and an empty string may carry NULL. */
static inline uint8_t *put_bytes(uint8_t *o, const char *p, size_t len)
{
    if (len != 0)
        memcpy(o, p, len);
    return o + len;
}

static inline uint8_t *put_str(uint8_t *o, const struct asgi_str *s)
{
    return put_bytes(put_u16(o, s->len), s->p, s->len);
}

static uint8_t *put_headers(uint8_t *o, const struct asgi_header *hs, size_t n)
{
    o = put_u16(o, n);
    for (size_t i = 0; i < n; i++) {
        o = put_str(o, &hs[i].name);
        o = put_str(o, &hs[i].value);
    }
    return o;
}

static uint8_t *put_tls(uint8_t *o, const struct asgi_tls *t)
{
    if (!t->block)
        return o;
    *o++ = (uint8_t)(t->present != 0);
    if (!t->present)
        return o;
    o = put_u16(o, t->version);
    o = put_u16(o, t->cipher_suite);
    o = put_str(o, &t->client_cert_name);
    o = put_str(o, &t->client_cert_error);
    return put_str(o, &t->client_cert);
}

static uint8_t *put_scope(uint8_t *o, const struct asgi_http_request *q)
{
    o = put_str(o, &q->http_version);
    o = put_str(o, &q->method);
    o = put_str(o, &q->scheme);
    o = put_str(o, &q->path);
    o = put_str(o, &q->raw_path);
    o = put_str(o, &q->query_string);
    o = put_str(o, &q->root_path);
    o = put_str(o, &q->client_host);
    o = put_u16(o, q->client_port);
    o = put_str(o, &q->server_host);
    o = put_u16(o, q->server_port);
    return put_headers(o, q->headers, q->n_headers);
}

/* §2. Callers have checked |length| <= 2^24-1 and |stream| <= 2^31-1 (so R is 0). */
static inline void put_header(uint8_t *o, size_t length, uint8_t type, uint8_t flags,
                              uint32_t stream)
{
    o[0] = (uint8_t)(length >> 16);
    o[1] = (uint8_t)(length >> 8 & 0xff);
    o[2] = (uint8_t)(length & 0xff);
    o[3] = type;
    o[4] = flags;
    put_u32(o + 5, stream);
}

/* Checks a sized payload against its fields, |max_frame| and |cap| (in the order the header
 * promises), then writes the frame header. Returns ASGI_OK or the error. */
static int frame_begin(uint8_t *out, size_t cap, size_t max_frame, uint8_t type, uint8_t flags,
                       uint32_t stream, const struct sz *s)
{
    if (s->bad || stream > ASGI_STREAM_MAX)
        return ASGI_E_VALUE;
    if (s->total > ASGI_MAX_LEN || s->total > max_frame)
        return ASGI_E_FRAME_SIZE;
    if (cap < ASGI_FRAME_HDR_LEN || s->total > cap - ASGI_FRAME_HDR_LEN)
        return ASGI_E_NOSPACE;
    put_header(out, s->total, type, flags, stream);
    return ASGI_OK;
}

/* The frame's length as the encoders return it: at most 9 + 2^24-1, which fits an int. */
static inline int frame_len(const struct sz *s)
{
    return (int)(ASGI_FRAME_HDR_LEN + s->total);
}

/* ---- frame header --------------------------------------------------------------------------- */

int asgi_frame_header_decode(const uint8_t *in, size_t len, size_t max_frame,
                             struct asgi_frame_header *h)
{
    size_t length;

    if (len < ASGI_FRAME_HDR_LEN)
        return ASGI_INCOMPLETE;
    length = (size_t)in[0] << 16 | (size_t)in[1] << 8 | in[2];
    if (length > max_frame)
        return ASGI_E_FRAME_SIZE;
    h->length = length;
    h->type = in[3];
    h->flags = in[4];
    /* §2: receivers ignore R. */
    h->stream = ((uint32_t)in[5] << 24 | (uint32_t)in[6] << 16 | (uint32_t)in[7] << 8 | in[8]) &
                ASGI_STREAM_MAX;
    return ASGI_OK;
}

int asgi_frame_header_encode(uint8_t *out, size_t cap, size_t max_frame,
                             const struct asgi_frame_header *h)
{
    if (h->stream > ASGI_STREAM_MAX)
        return ASGI_E_VALUE;
    if (h->length > ASGI_MAX_LEN || h->length > max_frame)
        return ASGI_E_FRAME_SIZE;
    if (cap < ASGI_FRAME_HDR_LEN)
        return ASGI_E_NOSPACE;
    put_header(out, h->length, h->type, h->flags, h->stream);
    return ASGI_FRAME_HDR_LEN;
}

/* ---- payload decoders ----------------------------------------------------------------------- */

int asgi_decode_hello(const uint8_t *p, size_t len, struct asgi_hello *out)
{
    struct rd r = {p, p + len, 0};
    struct asgi_hello h;

    /* The layout first: a short or long HELLO is FRAME_SIZE even when its magic is also bad. */
    if (len != ASGI_HELLO_LEN)
        return ASGI_E_FRAME_SIZE;
    if (memcmp(p, ASGI_MAGIC, ASGI_MAGIC_LEN) != 0)
        return ASGI_E_PROTOCOL;
    r.p += ASGI_MAGIC_LEN;
    h.version = rd_u16(&r);
    h.max_frame = rd_u32(&r);
    h.max_streams = rd_u32(&r);
    h.initial_credit = rd_u32(&r);
    h.capabilities = rd_u32(&r);
    *out = h;
    return ASGI_OK;
}

int asgi_decode_http_request(const uint8_t *p, size_t len, struct asgi_http_request *out,
                             struct asgi_header *headers, size_t max_headers, int tls)
{
    struct rd r = {p, p + len, 0};
    struct asgi_http_request q;
    int rc = rd_scope(&r, &q, headers, max_headers);

    if (rc == ASGI_OK) {
        rd_tls(&r, &q.tls, tls);
        rc = rd_done(&r);
    }
    if (rc == ASGI_OK)
        *out = q;
    return rc;
}

int asgi_decode_ws_connect(const uint8_t *p, size_t len, struct asgi_ws_connect *out,
                           struct asgi_header *headers, size_t max_headers,
                           struct asgi_str *subprotocols, size_t max_sub, int tls)
{
    struct rd r = {p, p + len, 0};
    struct asgi_ws_connect w;
    size_t n = 0;
    int rc = rd_scope(&r, &w.scope, headers, max_headers);

    if (rc == ASGI_OK)
        rc = rd_count(&r, 2, max_sub, &n);
    if (rc != ASGI_OK)
        return rc;
    for (size_t i = 0; i < n; i++)
        subprotocols[i] = rd_str16(&r);
    rd_tls(&r, &w.scope.tls, tls);
    rc = rd_done(&r);
    if (rc == ASGI_OK) {
        w.subprotocols = subprotocols;
        w.n_subprotocols = n;
        *out = w;
    }
    return rc;
}

int asgi_decode_http_response(const uint8_t *p, size_t len, struct asgi_http_response *out,
                              struct asgi_header *headers, size_t max_headers)
{
    struct rd r = {p, p + len, 0};
    struct asgi_http_response s;
    int rc;

    s.status = rd_u16(&r);
    s.headers = headers;
    rc = rd_headers(&r, headers, max_headers, &s.n_headers);
    if (rc == ASGI_OK)
        rc = rd_done(&r);
    if (rc == ASGI_OK)
        *out = s;
    return rc;
}

int asgi_decode_trailers(const uint8_t *p, size_t len, struct asgi_trailers *out,
                         struct asgi_header *headers, size_t max_headers)
{
    struct rd r = {p, p + len, 0};
    struct asgi_trailers t;
    int rc;

    t.headers = headers;
    rc = rd_headers(&r, headers, max_headers, &t.n_headers);
    if (rc == ASGI_OK)
        rc = rd_done(&r);
    if (rc == ASGI_OK)
        *out = t;
    return rc;
}

int asgi_decode_pathsend(const uint8_t *p, size_t len, struct asgi_pathsend *out)
{
    struct rd r = {p, p + len, 0};
    struct asgi_str path = rd_str16(&r);
    int rc = rd_done(&r);

    if (rc == ASGI_OK)
        out->path = path;
    return rc;
}

int asgi_decode_close(const uint8_t *p, size_t len, struct asgi_close *out)
{
    struct rd r = {p, p + len, 0};
    struct asgi_close c;
    int rc;

    c.code = rd_u16(&r);
    c.reason = rd_str16(&r);
    rc = rd_done(&r);
    if (rc == ASGI_OK)
        *out = c;
    return rc;
}

int asgi_decode_ws_accept(const uint8_t *p, size_t len, struct asgi_ws_accept *out,
                          struct asgi_header *headers, size_t max_headers)
{
    struct rd r = {p, p + len, 0};
    struct asgi_ws_accept a;
    int rc;

    a.subprotocol = rd_str16(&r);
    a.headers = headers;
    rc = rd_headers(&r, headers, max_headers, &a.n_headers);
    if (rc == ASGI_OK)
        rc = rd_done(&r);
    if (rc == ASGI_OK)
        *out = a;
    return rc;
}

/* A payload that is one u32. */
static int decode_u32(const uint8_t *p, size_t len, uint32_t *out)
{
    struct rd r = {p, p + len, 0};
    uint32_t v = rd_u32(&r);
    int rc = rd_done(&r);

    if (rc == ASGI_OK)
        *out = v;
    return rc;
}

int asgi_decode_credit(const uint8_t *p, size_t len, struct asgi_credit *out)
{
    return decode_u32(p, len, &out->increment);
}

int asgi_decode_reset(const uint8_t *p, size_t len, struct asgi_reset *out)
{
    return decode_u32(p, len, &out->error);
}

int asgi_decode_ping(const uint8_t *p, size_t len, struct asgi_ping *out)
{
    if (len != ASGI_PING_LEN)
        return ASGI_E_FRAME_SIZE;
    memcpy(out->opaque, p, ASGI_PING_LEN);
    return ASGI_OK;
}

int asgi_decode_goaway(const uint8_t *p, size_t len, struct asgi_goaway *out)
{
    struct rd r = {p, p + len, 0};
    struct asgi_goaway g;
    int rc;

    g.last_stream = rd_u32(&r);
    g.error = rd_u32(&r);
    g.debug = rd_str16(&r);
    rc = rd_done(&r);
    if (rc == ASGI_OK)
        *out = g;
    return rc;
}

int asgi_decode_raw(const uint8_t *p, size_t len, struct asgi_str *out)
{
    out->p = (const char *)p;
    out->len = len;
    return ASGI_OK;
}

/* ---- payload encoders ----------------------------------------------------------------------- */

int asgi_encode_hello(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                      const struct asgi_hello *in)
{
    struct sz s = {ASGI_HELLO_LEN, 0};
    uint8_t *o;
    int rc = frame_begin(out, cap, max_frame, ASGI_HELLO, flags, stream, &s);

    if (rc != ASGI_OK)
        return rc;
    o = put_bytes(out + ASGI_FRAME_HDR_LEN, ASGI_MAGIC, ASGI_MAGIC_LEN);
    o = put_u16(o, in->version);
    o = put_u32(o, in->max_frame);
    o = put_u32(o, in->max_streams);
    o = put_u32(o, in->initial_credit);
    put_u32(o, in->capabilities);
    return frame_len(&s);
}

int asgi_encode_http_request(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                             uint32_t stream, const struct asgi_http_request *in)
{
    struct sz s = {0, 0};
    int rc;

    sz_scope(&s, in);
    sz_tls(&s, &in->tls);
    rc = frame_begin(out, cap, max_frame, ASGI_HTTP_REQUEST, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    put_tls(put_scope(out + ASGI_FRAME_HDR_LEN, in), &in->tls);
    return frame_len(&s);
}

int asgi_encode_ws_connect(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                           uint32_t stream, const struct asgi_ws_connect *in)
{
    struct sz s = {0, 0};
    uint8_t *o;
    int rc;

    sz_scope(&s, &in->scope);
    if (sz_count(&s, in->n_subprotocols))
        for (size_t i = 0; i < in->n_subprotocols; i++)
            sz_str(&s, &in->subprotocols[i]);
    sz_tls(&s, &in->scope.tls);
    rc = frame_begin(out, cap, max_frame, ASGI_WS_CONNECT, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    o = put_scope(out + ASGI_FRAME_HDR_LEN, &in->scope);
    o = put_u16(o, in->n_subprotocols);
    for (size_t i = 0; i < in->n_subprotocols; i++)
        o = put_str(o, &in->subprotocols[i]);
    put_tls(o, &in->scope.tls);
    return frame_len(&s);
}

int asgi_encode_http_response(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                              uint32_t stream, const struct asgi_http_response *in)
{
    struct sz s = {2, 0};
    int rc;

    sz_headers(&s, in->headers, in->n_headers);
    rc = frame_begin(out, cap, max_frame, ASGI_HTTP_RESPONSE, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    put_headers(put_u16(out + ASGI_FRAME_HDR_LEN, in->status), in->headers, in->n_headers);
    return frame_len(&s);
}

int asgi_encode_trailers(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                         const struct asgi_trailers *in)
{
    struct sz s = {0, 0};
    int rc;

    sz_headers(&s, in->headers, in->n_headers);
    rc = frame_begin(out, cap, max_frame, ASGI_TRAILERS, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    put_headers(out + ASGI_FRAME_HDR_LEN, in->headers, in->n_headers);
    return frame_len(&s);
}

int asgi_encode_pathsend(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                         const struct asgi_pathsend *in)
{
    struct sz s = {0, 0};
    int rc;

    sz_str(&s, &in->path);
    rc = frame_begin(out, cap, max_frame, ASGI_PATHSEND, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    put_str(out + ASGI_FRAME_HDR_LEN, &in->path);
    return frame_len(&s);
}

int asgi_encode_close(uint8_t *out, size_t cap, size_t max_frame, uint8_t type, uint8_t flags,
                      uint32_t stream, const struct asgi_close *in)
{
    struct sz s = {2, 0};
    int rc;

    if (type != ASGI_DISCONNECT && type != ASGI_WS_CLOSE)
        s.bad = 1;
    sz_str(&s, &in->reason);
    rc = frame_begin(out, cap, max_frame, type, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    put_str(put_u16(out + ASGI_FRAME_HDR_LEN, in->code), &in->reason);
    return frame_len(&s);
}

int asgi_encode_ws_accept(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags,
                          uint32_t stream, const struct asgi_ws_accept *in)
{
    struct sz s = {0, 0};
    int rc;

    sz_str(&s, &in->subprotocol);
    sz_headers(&s, in->headers, in->n_headers);
    rc = frame_begin(out, cap, max_frame, ASGI_WS_ACCEPT, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    put_headers(put_str(out + ASGI_FRAME_HDR_LEN, &in->subprotocol), in->headers, in->n_headers);
    return frame_len(&s);
}

/* A payload that is one u32. */
static int encode_u32(uint8_t *out, size_t cap, size_t max_frame, uint8_t type, uint8_t flags,
                      uint32_t stream, uint32_t v)
{
    struct sz s = {4, 0};
    int rc = frame_begin(out, cap, max_frame, type, flags, stream, &s);

    if (rc != ASGI_OK)
        return rc;
    put_u32(out + ASGI_FRAME_HDR_LEN, v);
    return frame_len(&s);
}

int asgi_encode_credit(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                       const struct asgi_credit *in)
{
    return encode_u32(out, cap, max_frame, ASGI_CREDIT, flags, stream, in->increment);
}

int asgi_encode_reset(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                      const struct asgi_reset *in)
{
    return encode_u32(out, cap, max_frame, ASGI_RESET, flags, stream, in->error);
}

int asgi_encode_ping(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                     const struct asgi_ping *in)
{
    struct sz s = {ASGI_PING_LEN, 0};
    int rc = frame_begin(out, cap, max_frame, ASGI_PING, flags, stream, &s);

    if (rc != ASGI_OK)
        return rc;
    memcpy(out + ASGI_FRAME_HDR_LEN, in->opaque, ASGI_PING_LEN);
    return frame_len(&s);
}

int asgi_encode_goaway(uint8_t *out, size_t cap, size_t max_frame, uint8_t flags, uint32_t stream,
                       const struct asgi_goaway *in)
{
    struct sz s = {8, 0};
    uint8_t *o;
    int rc;

    sz_str(&s, &in->debug);
    rc = frame_begin(out, cap, max_frame, ASGI_GOAWAY, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    o = put_u32(out + ASGI_FRAME_HDR_LEN, in->last_stream);
    o = put_u32(o, in->error);
    put_str(o, &in->debug);
    return frame_len(&s);
}

int asgi_encode_raw(uint8_t *out, size_t cap, size_t max_frame, uint8_t type, uint8_t flags,
                    uint32_t stream, const struct asgi_str *in)
{
    struct sz s = {0, 0};
    int rc;

    /* Not sz_add(): a raw payload may be any size_t, and pinning keeps it from wrapping too. */
    s.total = in->len > ASGI_MAX_LEN ? (size_t)ASGI_MAX_LEN + 1 : in->len;
    rc = frame_begin(out, cap, max_frame, type, flags, stream, &s);
    if (rc != ASGI_OK)
        return rc;
    put_bytes(out + ASGI_FRAME_HDR_LEN, in->p, in->len);
    return frame_len(&s);
}
