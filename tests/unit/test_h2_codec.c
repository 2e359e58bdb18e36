/* SPDX-License-Identifier: MIT */
/* Unit tests for the sans-I/O HTTP/2 server codec (gateway/h2_codec.c), driven with real HTTP/2
 * bytes: a client nghttp2 session for valid conversations (its own decoder checks what the
 * codec sends), hand-built frames and HPACK blocks for the bad input and the floods. Every
 * flood is checked at its threshold (no protection) and one past it (protect() once, h2c_recv
 * -1, GOAWAY ENHANCE_YOUR_CALM). */
#include <criterion/criterion.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/h2_codec.h"
#include "gateway/util.h"

#define NOW 1000000u /* a monotonic clock far from 0 */
#define MAXSID 4096

#define FR_DATA 0
#define FR_HEADERS 1
#define FR_PRIORITY 2
#define FR_RST 3
#define FR_SETTINGS 4
#define FR_PING 6
#define FR_GOAWAY 7
#define FR_WINDOW_UPDATE 8
#define FR_CONTINUATION 9
#define FL_END_STREAM 0x1
#define FL_ACK 0x1
#define FL_END_HEADERS 0x4

#define E_NO_ERROR 0x0
#define E_PROTOCOL 0x1
#define E_INTERNAL 0x2
#define E_CALM 0xb

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* ---- byte buffers, frames, HPACK ------------------------------------------------------------ */

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void b_put(struct buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    if (n > 0)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void b_u8(struct buf *b, unsigned v)
{
    uint8_t c = (uint8_t)v;

    b_put(b, &c, 1);
}

static void b_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* A frame: the 9-byte header and |len| bytes of payload. */
static void b_frame(struct buf *b, unsigned type, unsigned flags, uint32_t sid, const void *pl,
                    size_t len)
{
    uint8_t hd[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, (uint8_t)type,
                     (uint8_t)flags, (uint8_t)((sid >> 24) & 0x7f), (uint8_t)(sid >> 16),
                     (uint8_t)(sid >> 8), (uint8_t)sid};

    b_put(b, hd, sizeof hd);
    b_put(b, pl, len);
}

/* An HPACK integer with a |bits|-bit prefix, the first byte ORed with |first| (RFC 7541 §5.1). */
static void hp_int(struct buf *b, unsigned first, unsigned bits, size_t v)
{
    size_t max = ((size_t)1 << bits) - 1;

    if (v < max) {
        b_u8(b, first | (unsigned)v);
        return;
    }
    b_u8(b, first | (unsigned)max);
    v -= max;
    while (v >= 128) {
        b_u8(b, (unsigned)(v & 0x7f) | 0x80);
        v >>= 7;
    }
    b_u8(b, (unsigned)v);
}

static void hp_str(struct buf *b, const char *s, size_t n)
{
    hp_int(b, 0, 7, n);
    b_put(b, s, n);
}

/* A literal field with a new name: |kind| 0x00 without indexing, 0x40 with incremental. */
static void hp_field(struct buf *b, unsigned kind, const char *name, const char *v, size_t vlen)
{
    b_u8(b, kind);
    hp_str(b, name, strlen(name));
    hp_str(b, v, vlen);
}

static void hp_lit(struct buf *b, const char *name, const char *value)
{
    hp_field(b, 0x00, name, value, strlen(value));
}

/* The pseudo-fields of a request. */
static void hp_req(struct buf *b, const char *method, const char *path)
{
    hp_lit(b, ":method", method);
    hp_lit(b, ":scheme", "https");
    hp_lit(b, ":authority", "example.com");
    hp_lit(b, ":path", path);
}

/* A HEADERS frame with a simple GET for |sid|. */
static void b_get(struct buf *b, uint32_t sid, unsigned flags)
{
    struct buf blk = {0};

    hp_req(&blk, "GET", "/");
    b_frame(b, FR_HEADERS, FL_END_HEADERS | flags, sid, blk.p, blk.n);
    b_free(&blk);
}

/* ---- the server side: the codec and what its owner saw ------------------------------------- */

struct rq {
    int32_t sid;
    char *method, *scheme, *authority, *path, *protocol;
    size_t nh;
    char *names[64], *values[64];
    size_t vlens[64];
    int end_stream, too_big;
    int64_t cl;
};

struct srv {
    struct h2c *h;
    struct h2c_limits lim;
    uint64_t now;
    struct rq rq[32];
    size_t nrq;      /* stored (the first 32) */
    size_t requests; /* all request events */
    size_t data[MAXSID];
    unsigned ends[MAXSID], closes[MAXSID];
    uint32_t code[MAXSID];
    unsigned protects;
    enum h2c_protect why;
    unsigned after_protect; /* request/data/end events after protect() */
    int req_rc, data_rc;
    /* The response body source (one stream at a time). */
    const char *body;
    size_t blen, boff;
    int defer; /* body() returns 0 while set */
    unsigned body_calls;
    const struct h1_header *tr;
    size_t ntr;
    struct buf out;
};

static char *dup_slice(struct gw_slice s)
{
    char *p = malloc(s.len + 1);

    cr_assert_not_null(p);
    if (s.len > 0)
        memcpy(p, s.p, s.len);
    p[s.len] = '\0';
    return p;
}

static int s_request(void *ud, int32_t sid, const struct h2c_req *r)
{
    struct srv *s = ud;

    cr_assert(sid > 0 && sid < MAXSID);
    s->requests++;
    if (s->protects > 0)
        s->after_protect++;
    if (s->nrq < GW_ARRAY_LEN(s->rq)) {
        struct rq *q = &s->rq[s->nrq++];

        q->sid = sid;
        q->method = dup_slice(r->method);
        q->scheme = dup_slice(r->scheme);
        q->authority = dup_slice(r->authority);
        q->path = dup_slice(r->path);
        q->protocol = dup_slice(r->protocol);
        q->end_stream = r->end_stream;
        q->too_big = r->too_big;
        q->cl = r->content_length;
        for (size_t i = 0; i < r->nheaders && i < GW_ARRAY_LEN(q->names); i++) {
            q->names[i] = dup_slice(r->headers[i].name);
            q->values[i] = dup_slice(r->headers[i].value);
            q->vlens[i] = r->headers[i].value.len;
            q->nh++;
        }
    }
    return s->req_rc;
}

static int s_data(void *ud, int32_t sid, const uint8_t *p, size_t n)
{
    struct srv *s = ud;

    (void)p;
    cr_assert(sid > 0 && sid < MAXSID);
    cr_assert_eq(s->closes[sid], 0, "data after closed on %d", (int)sid);
    if (s->protects > 0)
        s->after_protect++;
    s->data[sid] += n;
    return s->data_rc;
}

static void s_end(void *ud, int32_t sid)
{
    struct srv *s = ud;

    cr_assert(sid > 0 && sid < MAXSID);
    cr_assert_eq(s->closes[sid], 0, "end after closed on %d", (int)sid);
    if (s->protects > 0)
        s->after_protect++;
    s->ends[sid]++;
}

static void s_closed(void *ud, int32_t sid, uint32_t code)
{
    struct srv *s = ud;

    cr_assert(sid > 0 && sid < MAXSID);
    s->closes[sid]++;
    s->code[sid] = code;
}

static size_t s_body(void *ud, int32_t sid, uint8_t *buf, size_t len, int *eof,
                     const struct h1_header **t, size_t *nt)
{
    struct srv *s = ud;
    size_t n = s->blen - s->boff;

    (void)sid;
    s->body_calls++;
    if (s->defer)
        return 0;
    if (n > len)
        n = len;
    memcpy(buf, s->body + s->boff, n);
    s->boff += n;
    if (s->boff == s->blen) {
        *eof = 1;
        *t = s->tr;
        *nt = s->ntr;
    }
    return n;
}

static void s_protect(void *ud, enum h2c_protect why)
{
    struct srv *s = ud;

    s->protects++;
    s->why = why;
}

static const struct h2c_cbs cbs = {
    .request = s_request,
    .data = s_data,
    .end = s_end,
    .closed = s_closed,
    .body = s_body,
    .protect = s_protect,
};

static const struct h2c_limits default_limits = {
    .header_bytes = 8192,
    .headers = 50,
    .max_concurrent_streams = 10,
    .window = 16384,
    .connection_window = 1 << 20,
    .connect_protocol = 1,
};

static struct srv *srv_new(const struct h2c_limits *lim)
{
    struct srv *s = calloc(1, sizeof *s);

    cr_assert_not_null(s);
    s->lim = lim != NULL ? *lim : default_limits;
    s->now = NOW;
    s->h = h2c_new(&s->lim, &cbs, s);
    cr_assert_not_null(s->h);
    return s;
}

static void srv_free(struct srv *s)
{
    h2c_free(s->h);
    for (size_t i = 0; i < s->nrq; i++) {
        struct rq *q = &s->rq[i];

        free(q->method);
        free(q->scheme);
        free(q->authority);
        free(q->path);
        free(q->protocol);
        for (size_t k = 0; k < q->nh; k++) {
            free(q->names[k]);
            free(q->values[k]);
        }
    }
    b_free(&s->out);
    free(s);
}

static void put(void *arg, const uint8_t *p, size_t n)
{
    b_put(arg, p, n);
}

/* Everything the codec has queued, appended to s->out. */
static void flush(struct srv *s)
{
    cr_assert_eq(h2c_send(s->h, SIZE_MAX, put, &s->out), 0);
}

/* Feeds |n| bytes; returns what h2c_recv returned. */
static long feed(struct srv *s, const void *p, size_t n)
{
    return h2c_recv(s->h, p, n, s->now);
}

static void feed_ok(struct srv *s, const void *p, size_t n)
{
    long r = feed(s, p, n);

    cr_assert_eq(r, (long)n, "h2c_recv returned %ld for %zu bytes", r, n);
}

/* The client preface and an empty SETTINGS, as a raw client starts. */
static void raw_start(struct srv *s)
{
    struct buf b = {0};

    b_put(&b, preface, sizeof preface - 1);
    b_frame(&b, FR_SETTINGS, 0, 0, NULL, 0);
    feed_ok(s, b.p, b.n);
    b_free(&b);
}

/* The frames the codec sent, parsed from s->out. */
struct ofr {
    uint8_t type, flags;
    int32_t sid;
    uint32_t len, code;
};

static size_t out_frames(const struct srv *s, struct ofr *f, size_t max)
{
    size_t at = 0, k = 0;

    while (at + 9 <= s->out.n && k < max) {
        const uint8_t *p = s->out.p + at;
        uint32_t len = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];

        cr_assert_leq(at + 9 + len, s->out.n, "a frame cut short in the output");
        f[k] = (struct ofr){.type = p[3], .flags = p[4], .len = len,
                            .sid = (int32_t)((uint32_t)(p[5] & 0x7f) << 24 |
                                             (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8])};
        if (p[3] == FR_RST && len == 4)
            f[k].code = (uint32_t)p[9] << 24 | (uint32_t)p[10] << 16 | (uint32_t)p[11] << 8 | p[12];
        if (p[3] == FR_GOAWAY && len >= 8)
            f[k].code = (uint32_t)p[13] << 24 | (uint32_t)p[14] << 16 | (uint32_t)p[15] << 8 |
                        p[16];
        if (p[3] == FR_WINDOW_UPDATE && len == 4)
            f[k].code = (uint32_t)(p[9] & 0x7f) << 24 | (uint32_t)p[10] << 16 |
                        (uint32_t)p[11] << 8 | p[12];
        at += 9 + len;
        k++;
    }
    return k;
}

#define MAXFR 8192
static struct ofr frs[MAXFR];

/* The error code of the last GOAWAY sent, or -1. */
static long goaway_code(const struct srv *s)
{
    size_t n = out_frames(s, frs, MAXFR);
    long code = -1;

    for (size_t i = 0; i < n; i++)
        if (frs[i].type == FR_GOAWAY)
            code = frs[i].code;
    return code;
}

/* The error code of the first RST_STREAM sent for |sid|, or -1. */
static long rst_code(const struct srv *s, int32_t sid)
{
    size_t n = out_frames(s, frs, MAXFR);

    for (size_t i = 0; i < n; i++)
        if (frs[i].type == FR_RST && frs[i].sid == sid)
            return frs[i].code;
    return -1;
}

static size_t count_frames(const struct srv *s, unsigned type, int32_t sid)
{
    size_t n = out_frames(s, frs, MAXFR), k = 0;

    for (size_t i = 0; i < n; i++)
        if (frs[i].type == type && frs[i].sid == sid)
            k++;
    return k;
}

static const char *hdr(const struct rq *q, const char *name)
{
    for (size_t i = 0; i < q->nh; i++)
        if (strcmp(q->names[i], name) == 0)
            return q->values[i];
    return NULL;
}

/* ---- the client side: an nghttp2 client session --------------------------------------------- */

struct cfr {
    uint8_t type, flags;
    int32_t sid;
};

struct cli {
    nghttp2_session *s;
    struct cfr fr[512];
    size_t nfr;
    nghttp2_settings_entry iv[16];
    size_t niv;
    int settings;
    long goaway; /* its code, or -1 */
    char hdrs[8192];
    size_t hlen;
    char data[65536];
    size_t dlen;
    const uint8_t *body; /* the request body it sends */
    size_t blen, boff;
};

static int c_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct cli *c = ud;

    (void)ss;
    if (c->nfr < GW_ARRAY_LEN(c->fr))
        c->fr[c->nfr++] = (struct cfr){f->hd.type, f->hd.flags, f->hd.stream_id};
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->settings++;
        for (size_t i = 0; i < f->settings.niv && c->niv < GW_ARRAY_LEN(c->iv); i++)
            c->iv[c->niv++] = f->settings.iv[i];
    }
    if (f->hd.type == NGHTTP2_GOAWAY)
        c->goaway = f->goaway.error_code;
    return 0;
}

static int c_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct cli *c = ud;
    int n;

    (void)ss;
    (void)flags;
    n = snprintf(c->hdrs + c->hlen, sizeof c->hdrs - c->hlen, "%d %.*s: %.*s\n",
                 (int)f->hd.stream_id, (int)nlen, (const char *)name, (int)vlen,
                 (const char *)value);
    cr_assert(n > 0 && (size_t)n < sizeof c->hdrs - c->hlen);
    c->hlen += (size_t)n;
    return 0;
}

static int c_data(nghttp2_session *ss, uint8_t flags, int32_t sid, const uint8_t *p, size_t n,
                  void *ud)
{
    struct cli *c = ud;

    (void)ss;
    (void)flags;
    (void)sid;
    cr_assert_leq(c->dlen + n, sizeof c->data);
    memcpy(c->data + c->dlen, p, n);
    c->dlen += n;
    return 0;
}

static ssize_t c_read(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t len,
                      uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct cli *c = ud;
    size_t n = c->blen - c->boff;

    (void)ss;
    (void)sid;
    (void)src;
    if (n > len)
        n = len;
    memcpy(buf, c->body + c->boff, n);
    c->boff += n;
    if (c->boff == c->blen)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static struct cli *cli_new(void)
{
    struct cli *c = calloc(1, sizeof *c);
    nghttp2_session_callbacks *cb;

    cr_assert_not_null(c);
    c->goaway = -1;
    cr_assert_eq(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame_recv);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
    cr_assert_eq(nghttp2_session_client_new(&c->s, cb, c), 0);
    nghttp2_session_callbacks_del(cb);
    cr_assert_eq(nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    return c;
}

static void cli_free(struct cli *c)
{
    nghttp2_session_del(c->s);
    free(c);
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(struct srv *s, struct cli *c)
{
    for (int round = 0; round < 1000; round++) {
        const uint8_t *d;
        ssize_t n;
        size_t before = s->out.n;
        int moved = 0;

        while ((n = nghttp2_session_mem_send(c->s, &d)) > 0) {
            feed_ok(s, d, (size_t)n);
            moved = 1;
        }
        cr_assert_geq(n, 0);
        flush(s);
        if (s->out.n > before) {
            n = nghttp2_session_mem_recv(c->s, s->out.p + before, s->out.n - before);
            cr_assert_eq(n, (ssize_t)(s->out.n - before), "client mem_recv: %zd", n);
            moved = 1;
        }
        if (!moved)
            return;
    }
    cr_assert_fail("pump did not settle");
}

/* Sends what the codec has queued to the client. */
static void flush_to(struct srv *s, struct cli *c)
{
    size_t before = s->out.n;
    ssize_t n;

    flush(s);
    n = nghttp2_session_mem_recv(c->s, s->out.p + before, s->out.n - before);
    cr_assert_eq(n, (ssize_t)(s->out.n - before));
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE         \
    }

static int32_t submit(struct cli *c, const nghttp2_nv *nv, size_t n, int body)
{
    nghttp2_data_provider prd = {.read_callback = c_read};
    int32_t sid = nghttp2_submit_request(c->s, NULL, nv, n, body ? &prd : NULL, NULL);

    cr_assert_gt(sid, 0);
    return sid;
}

static int32_t submit_get(struct cli *c, const char *path)
{
    nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "https"),
                       NV(":authority", "example.com"), NV(":path", "/")};

    nv[3].value = (uint8_t *)(uintptr_t)path;
    nv[3].valuelen = strlen(path);
    return submit(c, nv, GW_ARRAY_LEN(nv), 0);
}

/* A connection past the handshake: the client has the server's SETTINGS and ACKed them. */
static void connect_pair(struct srv **s, struct cli **c, const struct h2c_limits *lim)
{
    *s = srv_new(lim);
    *c = cli_new();
    pump(*s, *c);
}

/* ---- the handshake --------------------------------------------------------------------------- */

static uint32_t setting(const struct cli *c, int32_t id, int *found)
{
    *found = 0;
    for (size_t i = 0; i < c->niv; i++)
        if (c->iv[i].settings_id == id) {
            *found = 1;
            return c->iv[i].value;
        }
    return 0;
}

Test(h2_codec, server_settings_advertised)
{
    struct srv *s = srv_new(NULL);
    struct cli *c = cli_new();
    int found;
    uint32_t v;

    /* The codec speaks first: its SETTINGS and connection window go out before any input. */
    cr_assert(h2c_want_write(s->h));
    flush(s);
    cr_assert_gt(s->out.n, 0);
    cr_assert_eq(nghttp2_session_mem_recv(c->s, s->out.p, s->out.n), (ssize_t)s->out.n);
    cr_assert_eq(c->settings, 1);
    v = setting(c, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, &found);
    cr_assert(found && v == 10, "MAX_CONCURRENT_STREAMS %u", v);
    v = setting(c, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, &found);
    cr_assert(found && v == 16384, "INITIAL_WINDOW_SIZE %u", v);
    v = setting(c, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, &found);
    cr_assert(found && v == 8192, "MAX_HEADER_LIST_SIZE %u", v);
    v = setting(c, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, &found);
    cr_assert(found && v == 1, "ENABLE_CONNECT_PROTOCOL %u", v);
    /* The connection window is raised to the configured size. */
    cr_assert_eq(nghttp2_session_get_remote_window_size(c->s), 1 << 20);
    cr_assert_eq(count_frames(s, FR_WINDOW_UPDATE, 0), 1);
    /* The client's ACK and preface are taken. */
    pump(s, c);
    cr_assert_eq(s->protects, 0);
    cr_assert_eq(s->requests, 0);
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, no_connect_protocol_unless_configured)
{
    struct h2c_limits lim = default_limits;
    struct srv *s;
    struct cli *c = cli_new();
    int found;

    lim.connect_protocol = 0;
    s = srv_new(&lim);
    flush(s);
    cr_assert_eq(nghttp2_session_mem_recv(c->s, s->out.p, s->out.n), (ssize_t)s->out.n);
    cr_assert_eq(c->settings, 1);
    setting(c, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, &found);
    cr_assert_not(found);
    cli_free(c);
    srv_free(s);
}

/* ---- requests -------------------------------------------------------------------------------- */

Test(h2_codec, get_request_event)
{
    struct srv *s;
    struct cli *c;
    nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "https"),
                       NV(":authority", "example.com:8443"), NV(":path", "/a/b?q=1"),
                       NV("user-agent", "test/1"), NV("accept", "*/*")};
    int32_t sid;
    const struct rq *q;

    connect_pair(&s, &c, NULL);
    sid = submit(c, nv, GW_ARRAY_LEN(nv), 0);
    pump(s, c);
    cr_assert_eq(s->requests, 1);
    q = &s->rq[0];
    cr_assert_eq(q->sid, sid);
    cr_assert_str_eq(q->method, "GET");
    cr_assert_str_eq(q->scheme, "https");
    cr_assert_str_eq(q->authority, "example.com:8443");
    cr_assert_str_eq(q->path, "/a/b?q=1");
    cr_assert_str_eq(q->protocol, "");
    cr_assert_eq(q->end_stream, 1);
    cr_assert_eq(q->cl, -1);
    cr_assert_eq(q->too_big, 0);
    /* Only the regular fields, in order. */
    cr_assert_eq(q->nh, 2);
    cr_assert_str_eq(q->names[0], "user-agent");
    cr_assert_str_eq(q->values[0], "test/1");
    cr_assert_str_eq(q->names[1], "accept");
    cr_assert_str_eq(q->values[1], "*/*");
    cr_assert_eq(s->ends[sid], 1);
    cr_assert_eq(s->data[sid], 0);
    cr_assert_eq(s->closes[sid], 0, "the response is still due");
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, cookie_crumbs_joined)
{
    struct srv *s;
    struct cli *c;
    nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "https"),
                       NV(":authority", "example.com"), NV(":path", "/"), NV("cookie", "a=1"),
                       NV("x-between", "y"), NV("cookie", "b=2"), NV("cookie", "c=3")};
    const struct rq *q;

    connect_pair(&s, &c, NULL);
    submit(c, nv, GW_ARRAY_LEN(nv), 0);
    pump(s, c);
    cr_assert_eq(s->requests, 1);
    q = &s->rq[0];
    cr_assert_eq(q->nh, 2);
    cr_assert_str_eq(q->names[0], "x-between");
    cr_assert_str_eq(q->names[1], "cookie");
    cr_assert_str_eq(q->values[1], "a=1; b=2; c=3");
    cr_assert_eq(q->vlens[1], strlen("a=1; b=2; c=3"));
    cli_free(c);
    srv_free(s);
}

/* An empty first cookie crumb: the joined value is exactly the bytes joined, its length
 * counting a separator only where one was written (it once came 2 stale bytes long). */
Test(h2_codec, cookie_empty_first_crumb)
{
    struct srv *s;
    struct cli *c;
    nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "https"),
                       NV(":authority", "example.com"), NV(":path", "/"), NV("cookie", ""),
                       NV("cookie", "a=1")};
    const char *v;

    connect_pair(&s, &c, NULL);
    submit(c, nv, GW_ARRAY_LEN(nv), 0);
    pump(s, c);
    cr_assert_eq(s->requests, 1);
    v = hdr(&s->rq[0], "cookie");
    cr_assert_not_null(v);
    /* The join of "" and "a=1" is "; a=1" (or "a=1"): never bytes that were not sent. */
    cr_assert_eq(s->rq[0].nh, 1);
    cr_expect(s->rq[0].vlens[0] == strlen(v) &&
                  (strcmp(v, "; a=1") == 0 || strcmp(v, "a=1") == 0),
              "joined cookie is \"%s\" in %zu bytes", v, s->rq[0].vlens[0]);
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, post_body_and_window)
{
    static uint8_t body[100000];
    struct srv *s;
    struct cli *c;
    nghttp2_nv nv[] = {NV(":method", "POST"), NV(":scheme", "https"),
                       NV(":authority", "example.com"), NV(":path", "/up"),
                       NV("content-length", "100000")};
    int32_t sid;
    size_t taken = 0, wu;

    memset(body, 'x', sizeof body);
    connect_pair(&s, &c, NULL);
    c->body = body;
    c->blen = sizeof body;
    sid = submit(c, nv, GW_ARRAY_LEN(nv), 1);
    pump(s, c);
    cr_assert_eq(s->requests, 1);
    cr_assert_eq(s->rq[0].cl, 100000);
    cr_assert_eq(s->rq[0].end_stream, 0);
    cr_assert_eq(s->rq[0].nh, 1);
    cr_assert_str_eq(s->rq[0].names[0], "content-length");
    /* Without h2c_consume the stream window (16384) is all the client may send. */
    cr_assert_eq(s->data[sid], 16384);
    cr_assert_eq(nghttp2_session_get_stream_remote_window_size(c->s, sid), 0);
    pump(s, c);
    pump(s, c);
    cr_assert_eq(s->data[sid], 16384);
    cr_assert_eq(nghttp2_session_get_stream_remote_window_size(c->s, sid), 0);
    cr_assert_eq(s->ends[sid], 0);
    /* Consuming opens the window: WINDOW_UPDATE frames go out, the body flows on. */
    wu = count_frames(s, FR_WINDOW_UPDATE, sid);
    cr_assert_eq(wu, 0);
    while (s->ends[sid] == 0) {
        size_t got = s->data[sid];

        h2c_consume(s->h, sid, got - taken);
        taken = got;
        flush_to(s, c);
        cr_assert_gt(count_frames(s, FR_WINDOW_UPDATE, sid), wu, "no WINDOW_UPDATE after consume");
        wu = count_frames(s, FR_WINDOW_UPDATE, sid);
        pump(s, c);
        cr_assert_gt(s->data[sid], got, "no progress after a WINDOW_UPDATE");
    }
    cr_assert_eq(s->data[sid], sizeof body);
    cr_assert_eq(s->ends[sid], 1);
    cr_assert_eq(s->protects, 0);
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, extended_connect)
{
    struct srv *s;
    struct cli *c;
    nghttp2_nv nv[] = {NV(":method", "CONNECT"), NV(":protocol", "websocket"),
                       NV(":scheme", "https"), NV(":authority", "example.com"),
                       NV(":path", "/chat"), NV("sec-websocket-version", "13")};
    int32_t sid;
    const struct rq *q;

    connect_pair(&s, &c, NULL);
    sid = submit(c, nv, GW_ARRAY_LEN(nv), 0);
    /* nghttp2_submit_request with no data provider sets END_STREAM: fine for the check. */
    pump(s, c);
    cr_assert_eq(s->requests, 1, "no request event (rst %ld)", rst_code(s, sid));
    q = &s->rq[0];
    cr_assert_str_eq(q->method, "CONNECT");
    cr_assert_str_eq(q->protocol, "websocket");
    cr_assert_str_eq(q->path, "/chat");
    cr_assert_str_eq(q->authority, "example.com");
    cr_assert_eq(q->nh, 1);
    cr_assert_str_eq(q->names[0], "sec-websocket-version");
    cli_free(c);
    srv_free(s);
}

/* ---- responses ------------------------------------------------------------------------------- */

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        {(n), sizeof(n) - 1}, { (v), sizeof(v) - 1 }                                               \
    }

Test(h2_codec, response_deferred_body_and_trailers)
{
    static const struct h1_header hd[] = {
        HDR("Content-Type", "text/plain"), HDR("Connection", "keep-alive"),
        HDR("X-Mixed-Case", "Value Kept"), HDR("Transfer-Encoding", "chunked"),
        HDR("Keep-Alive", "timeout=5"), HDR("Upgrade", "h2c"), HDR("Proxy-Connection", "x")};
    static const struct h1_header tr[] = {HDR("X-Checksum", "abc"), HDR("Connection", "close")};
    struct srv *s;
    struct cli *c;
    int32_t sid;
    size_t i, data_at = 0, trailers_at = 0, nheaders = 0;

    connect_pair(&s, &c, NULL);
    sid = submit_get(c, "/r");
    pump(s, c);
    cr_assert_eq(s->requests, 1);
    s->defer = 1;
    cr_assert_eq(h2c_respond(s->h, sid, 200, hd, GW_ARRAY_LEN(hd), 1), 0);
    pump(s, c);
    cr_assert_gt(s->body_calls, 0);
    cr_assert_eq(c->dlen, 0, "no DATA while deferred");
    cr_assert_eq(s->closes[sid], 0);
    /* The body arrives: resume. */
    s->defer = 0;
    s->body = "hello, world";
    s->blen = strlen(s->body);
    s->tr = tr;
    s->ntr = GW_ARRAY_LEN(tr);
    h2c_resume(s->h, sid);
    pump(s, c);
    cr_assert_eq(c->dlen, 12);
    cr_assert(memcmp(c->data, "hello, world", 12) == 0);
    /* HEADERS, DATA (no END_STREAM), HEADERS (the trailers, END_STREAM). */
    for (i = 0; i < c->nfr; i++) {
        const struct cfr *f = &c->fr[i];

        if (f->sid != sid)
            continue;
        if (f->type == NGHTTP2_HEADERS) {
            nheaders++;
            if (nheaders == 2)
                trailers_at = i;
            if (nheaders == 1)
                cr_assert_not(f->flags & NGHTTP2_FLAG_END_STREAM);
            else
                cr_assert(f->flags & NGHTTP2_FLAG_END_STREAM, "trailers without END_STREAM");
        } else if (f->type == NGHTTP2_DATA) {
            data_at = i;
            cr_assert_not(f->flags & NGHTTP2_FLAG_END_STREAM, "END_STREAM on DATA");
        }
    }
    cr_assert_eq(nheaders, 2);
    cr_assert_gt(trailers_at, data_at, "trailers before DATA");
    c->hdrs[c->hlen] = '\0';
    cr_assert(strstr(c->hdrs, ":status: 200\n") != NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, " content-type: text/plain\n") != NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, " x-mixed-case: Value Kept\n") != NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, " x-checksum: abc\n") != NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, "onnection") == NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, "ransfer-") == NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, "eep-") == NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, "pgrade") == NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, "Content") == NULL, "names are lowered: %s", c->hdrs);
    cr_assert_eq(s->closes[sid], 1);
    cr_assert_eq(s->code[sid], 0);
    cr_assert_eq(rst_code(s, sid), -1, "no RST_STREAM: the request had ended");
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, response_without_body)
{
    static const struct h1_header hd[] = {HDR("Location", "/x")};
    struct srv *s;
    struct cli *c;
    int32_t sid;

    connect_pair(&s, &c, NULL);
    sid = submit_get(c, "/");
    pump(s, c);
    cr_assert_eq(h2c_respond(s->h, sid, 302, hd, 1, 0), 0);
    pump(s, c);
    cr_assert_eq(s->body_calls, 0);
    cr_assert_eq(c->nfr > 0 ? c->fr[c->nfr - 1].type : 99, NGHTTP2_HEADERS);
    cr_assert(c->fr[c->nfr - 1].flags & NGHTTP2_FLAG_END_STREAM);
    c->hdrs[c->hlen] = '\0';
    cr_assert(strstr(c->hdrs, ":status: 302\n") != NULL, "%s", c->hdrs);
    cr_assert(strstr(c->hdrs, " location: /x\n") != NULL, "%s", c->hdrs);
    cr_assert_eq(s->closes[sid], 1);
    cr_assert_eq(s->code[sid], 0);
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, response_before_request_end_resets_no_error)
{
    static uint8_t body[50000];
    struct srv *s;
    struct cli *c;
    nghttp2_nv nv[] = {NV(":method", "POST"), NV(":scheme", "https"),
                       NV(":authority", "example.com"), NV(":path", "/up"),
                       NV("content-length", "50000")};
    int32_t sid;
    size_t n, i, end_at = 0, rst_at = 0;

    connect_pair(&s, &c, NULL);
    c->body = body;
    c->blen = sizeof body;
    sid = submit(c, nv, GW_ARRAY_LEN(nv), 1);
    pump(s, c);
    cr_assert_eq(s->data[sid], 16384);
    s->body = "too big";
    s->blen = 7;
    cr_assert_eq(h2c_respond(s->h, sid, 413, NULL, 0, 1), 0);
    flush(s);
    n = out_frames(s, frs, MAXFR);
    for (i = 0; i < n; i++) {
        if (frs[i].sid != sid)
            continue;
        if ((frs[i].type == FR_DATA || frs[i].type == FR_HEADERS) &&
            (frs[i].flags & FL_END_STREAM))
            end_at = i + 1;
        if (frs[i].type == FR_RST)
            rst_at = i + 1;
    }
    cr_assert_gt(end_at, 0, "no END_STREAM");
    cr_assert_gt(rst_at, end_at, "RST_STREAM missing or before END_STREAM");
    cr_assert_eq(rst_code(s, sid), E_NO_ERROR);
    cr_assert_eq(s->closes[sid], 1);
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, request_rejected_by_owner)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};

    raw_start(s);
    s->req_rc = -1;
    b_get(&b, 1, FL_END_STREAM);
    feed_ok(s, b.p, b.n);
    flush(s);
    cr_assert_eq(s->requests, 1);
    cr_assert_eq(rst_code(s, 1), E_INTERNAL);
    cr_assert_eq(s->ends[1], 0, "end() for a stream the owner refused");
    cr_assert_eq(s->closes[1], 1);
    b_free(&b);
    srv_free(s);
}

Test(h2_codec, free_with_open_streams_no_closed)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};

    raw_start(s);
    b_get(&b, 1, 0);
    b_get(&b, 3, FL_END_STREAM);
    feed_ok(s, b.p, b.n);
    cr_assert_eq(s->requests, 2);
    h2c_free(s->h);
    s->h = NULL;
    cr_assert_eq(s->closes[1] + s->closes[3], 0);
    b_free(&b);
    srv_free(s);
}

/* ---- heads over the limits (HPACK bomb) ----------------------------------------------------- */

/* The first block puts one 4000-byte field in the dynamic table (index 62), every block refers
 * to it three times: ~12 KB decoded from a few bytes, over header_bytes (8192). */
static void b_bomb(struct buf *b, uint32_t sid, int first)
{
    static char big[4000];
    struct buf blk = {0};

    memset(big, 'a', sizeof big);
    hp_req(&blk, "GET", "/");
    if (first)
        hp_field(&blk, 0x40, "x-bomb", big, sizeof big);
    for (int i = 0; i < 3; i++)
        b_u8(&blk, 0x80 | 62);
    b_frame(b, FR_HEADERS, FL_END_HEADERS | FL_END_STREAM, sid, blk.p, blk.n);
    b_free(&blk);
}

Test(h2_codec, hpack_bomb_too_big_then_protect)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};
    uint32_t sid = 1;

    raw_start(s);
    for (int i = 0; i < H2C_MAX_BIG_HEADERS - 1; i++, sid += 2) {
        b.n = 0;
        b_bomb(&b, sid, i == 0);
        cr_assert_lt(b.n, i == 0 ? 4200u : 120u);
        feed_ok(s, b.p, b.n);
        cr_assert_eq(s->requests, (size_t)i + 1);
        cr_assert_eq(s->rq[i].too_big, 1);
        cr_assert_eq(s->rq[i].nh, 0);
        cr_assert_eq(s->rq[i].end_stream, 1);
        /* The owner answers 431. */
        cr_assert_eq(h2c_respond(s->h, (int32_t)sid, 431, NULL, 0, 0), 0);
    }
    flush(s);
    cr_assert_eq(s->protects, 0);
    cr_assert_eq(goaway_code(s), -1);
    /* The Nth ends the connection. */
    b.n = 0;
    b_bomb(&b, sid, 0);
    cr_assert_eq(feed(s, b.p, b.n), -1);
    cr_assert_eq(s->protects, 1);
    cr_assert_eq(s->why, H2C_P_HEADER_LIST);
    cr_assert_eq(s->requests, H2C_MAX_BIG_HEADERS - 1, "a request event for the Nth");
    flush(s);
    cr_assert_eq(goaway_code(s), E_CALM);
    b_free(&b);
    srv_free(s);
}

/* A head just under the limit is delivered whole. */
Test(h2_codec, head_at_limit_delivered)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0}, blk = {0};
    static char v[4000];

    memset(v, 'v', sizeof v);
    raw_start(s);
    hp_req(&blk, "GET", "/");
    hp_field(&blk, 0x00, "x-a", v, sizeof v);
    hp_field(&blk, 0x00, "x-b", v, 3000);
    b_frame(&b, FR_HEADERS, FL_END_HEADERS | FL_END_STREAM, 1, blk.p, blk.n);
    feed_ok(s, b.p, b.n);
    cr_assert_eq(s->requests, 1);
    cr_assert_eq(s->rq[0].too_big, 0);
    cr_assert_eq(s->rq[0].nh, 2);
    cr_assert_eq(s->rq[0].vlens[0], 4000);
    cr_assert_eq(s->rq[0].vlens[1], 3000);
    b_free(&b);
    b_free(&blk);
    srv_free(s);
}

/* H2C_MAX_BIG_HEADERS counts over the whole connection: a flood window ending (which clears
 * the windowed counts) does not forgive the heads before it. */
Test(h2_codec, big_heads_counted_per_connection)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};
    uint32_t sid = 1;
    uint8_t ping[8] = {0};
    int i;

    raw_start(s);
    for (i = 0; i < H2C_MAX_BIG_HEADERS - 1; i++, sid += 2) {
        b.n = 0;
        b_bomb(&b, sid, i == 0);
        feed_ok(s, b.p, b.n);
    }
    s->now += H2C_FLOOD_WINDOW_MS;
    b.n = 0;
    b_frame(&b, FR_PING, 0, 0, ping, 8);
    feed_ok(s, b.p, b.n);
    b.n = 0;
    b_bomb(&b, sid, 0);
    feed(s, b.p, b.n);
    cr_expect_eq(s->protects, 1, "the %dth big head over the connection was not refused",
                 H2C_MAX_BIG_HEADERS);
    b_free(&b);
    srv_free(s);
}

/* ---- floods ---------------------------------------------------------------------------------- */

enum fkind { F_RESET, F_SETTINGS, F_PING, F_PRIORITY, F_EMPTY_DATA, F_CONTINUATION };

/* Appends the |i|th frame of a flood of |kind| (0-based). Streams for resets: 1, 3, 5, ... */
static void flood_frame(struct buf *b, enum fkind kind, unsigned i, int last)
{
    static const uint8_t ping[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    static const uint8_t prio[5] = {0, 0, 0, 0, 15};
    static const uint8_t cancel[4] = {0, 0, 0, 8};

    switch (kind) {
    case F_RESET:
        b_get(b, 2 * i + 1, 0);
        b_frame(b, FR_RST, 0, 2 * i + 1, cancel, 4);
        break;
    case F_SETTINGS:
        b_frame(b, FR_SETTINGS, 0, 0, NULL, 0);
        break;
    case F_PING:
        b_frame(b, FR_PING, 0, 0, ping, 8);
        break;
    case F_PRIORITY:
        b_frame(b, FR_PRIORITY, 0, 2 * (i % 50) + 1, prio, 5);
        break;
    case F_EMPTY_DATA:
        b_frame(b, FR_DATA, 0, 1, NULL, 0);
        break;
    case F_CONTINUATION: {
        struct buf f = {0};

        hp_lit(&f, "x-c", "1");
        b_frame(b, FR_CONTINUATION, last ? FL_END_HEADERS : 0, 1, f.p, f.n);
        b_free(&f);
        break;
    }
    }
}

/* Runs a flood of |n| frames of |kind| (the preface's SETTINGS counts as one) at the clock,
 * frame by frame; returns the index of the first h2c_recv that said -1, or -1. */
static long run_flood(struct srv *s, enum fkind kind, unsigned n, int start)
{
    struct buf b = {0};
    long failed = -1;

    if (start) {
        raw_start(s);
        if (kind == F_EMPTY_DATA) {
            b_get(&b, 1, 0);
            feed_ok(s, b.p, b.n);
        }
        if (kind == F_CONTINUATION) {
            struct buf blk = {0};

            hp_req(&blk, "GET", "/");
            b.n = 0;
            b_frame(&b, FR_HEADERS, FL_END_STREAM, 1, blk.p, blk.n);
            feed_ok(s, b.p, b.n);
            b_free(&blk);
        }
    }
    for (unsigned i = 0; i < n; i++) {
        long r;

        b.n = 0;
        flood_frame(&b, kind, i, i + 1 == n);
        r = feed(s, b.p, b.n);
        if (r < 0 && failed < 0)
            failed = i;
        if (r >= 0)
            cr_assert_eq(r, (long)b.n);
    }
    b_free(&b);
    return failed;
}

struct fcase {
    enum fkind kind;
    unsigned max;          /* frames allowed */
    unsigned preface_adds; /* frames of the kind raw_start already sent */
    enum h2c_protect why;
};

static const struct fcase fcases[] = {
    {F_RESET, H2C_MAX_RESETS, 0, H2C_P_RAPID_RESET},
    {F_SETTINGS, H2C_MAX_SETTINGS, 1, H2C_P_SETTINGS},
    {F_PING, H2C_MAX_PINGS, 0, H2C_P_PING},
    {F_PRIORITY, H2C_MAX_PRIORITY, 0, H2C_P_PRIORITY},
    {F_EMPTY_DATA, H2C_MAX_EMPTY_DATA, 0, H2C_P_EMPTY_DATA},
    {F_CONTINUATION, H2C_MAX_CONTINUATIONS, 0, H2C_P_CONTINUATION},
};

static void flood_under(const struct fcase *fc)
{
    struct srv *s = srv_new(NULL);
    long failed = run_flood(s, fc->kind, fc->max - fc->preface_adds, 1);

    cr_assert_eq(failed, -1, "%s: h2c_recv -1 at frame %ld, under the limit",
                 gw_h2c_protect_name(fc->why), failed);
    cr_assert_eq(s->protects, 0, "%s: protected under the limit", gw_h2c_protect_name(fc->why));
    flush(s);
    cr_assert_eq(goaway_code(s), -1);
    if (fc->kind == F_CONTINUATION) {
        cr_assert_eq(s->requests, 1, "the block in %u CONTINUATIONs is a request", fc->max);
        cr_assert_eq(s->rq[0].nh, fc->max);
    }
    srv_free(s);
}

static void flood_over(const struct fcase *fc)
{
    struct srv *s = srv_new(NULL);
    unsigned n = fc->max + 1 - fc->preface_adds;
    long failed = run_flood(s, fc->kind, n, 1);
    size_t requests = s->requests;

    flush(s);
    cr_assert_eq(failed, (long)n - 1, "%s: h2c_recv -1 at frame %ld of %u",
                 gw_h2c_protect_name(fc->why), failed, n);
    cr_assert_eq(s->protects, 1, "%s: protect() %u times, GOAWAY code %ld",
                 gw_h2c_protect_name(fc->why), s->protects, goaway_code(s));
    cr_assert_eq(s->why, fc->why, "protect(%s), want %s", gw_h2c_protect_name(s->why),
                 gw_h2c_protect_name(fc->why));
    cr_assert_eq(goaway_code(s), E_CALM, "%s: GOAWAY %ld", gw_h2c_protect_name(fc->why),
                 goaway_code(s));
    /* More of it: still -1, no second protect(), no owner event. */
    cr_assert_eq(run_flood(s, fc->kind, 3, 0), 0);
    cr_assert_eq(s->protects, 1);
    cr_assert_eq(s->requests, requests);
    cr_assert_eq(s->after_protect, 0, "%u events after protect()", s->after_protect);
    srv_free(s);
}

Test(h2_codec, flood_rapid_reset_under) { flood_under(&fcases[0]); }
Test(h2_codec, flood_rapid_reset_over) { flood_over(&fcases[0]); }
Test(h2_codec, flood_settings_under) { flood_under(&fcases[1]); }
Test(h2_codec, flood_settings_over) { flood_over(&fcases[1]); }
Test(h2_codec, flood_ping_under) { flood_under(&fcases[2]); }
Test(h2_codec, flood_ping_over) { flood_over(&fcases[2]); }
Test(h2_codec, flood_priority_under) { flood_under(&fcases[3]); }
Test(h2_codec, flood_priority_over) { flood_over(&fcases[3]); }
Test(h2_codec, flood_empty_data_under) { flood_under(&fcases[4]); }
Test(h2_codec, flood_empty_data_over) { flood_over(&fcases[4]); }
Test(h2_codec, flood_continuation_under) { flood_under(&fcases[5]); }
Test(h2_codec, flood_continuation_over) { flood_over(&fcases[5]); }

/* A header block whose CONTINUATIONs carry more than header_bytes, in few frames. */
Test(h2_codec, continuation_block_too_big)
{
    struct srv *s = srv_new(NULL);
    struct buf blk = {0}, b = {0};
    static char v[9000];
    size_t at = 0;
    unsigned k = 0;

    memset(v, 'c', sizeof v);
    raw_start(s);
    hp_req(&blk, "GET", "/");
    hp_field(&blk, 0x00, "x-a", v, sizeof v);
    while (at < blk.n) {
        size_t len = blk.n - at < 3000 ? blk.n - at : 3000;
        int lastf = at + len == blk.n;

        b.n = 0;
        b_frame(&b, k == 0 ? FR_HEADERS : FR_CONTINUATION,
                (k == 0 ? FL_END_STREAM : 0) | (lastf ? FL_END_HEADERS : 0), 1, blk.p + at, len);
        if (feed(s, b.p, b.n) < 0)
            break;
        at += len;
        k++;
    }
    cr_assert_lt(at, blk.n, "the whole block was taken");
    cr_assert_eq(s->protects, 1);
    cr_assert_eq(s->why, H2C_P_CONTINUATION);
    cr_assert_eq(s->requests, 0);
    flush(s);
    cr_assert_eq(goaway_code(s), E_CALM);
    b_free(&b);
    b_free(&blk);
    srv_free(s);
}

Test(h2_codec, flood_window_restarts)
{
    struct srv *s = srv_new(NULL);

    cr_assert_eq(run_flood(s, F_PING, H2C_MAX_PINGS, 1), -1);
    s->now += H2C_FLOOD_WINDOW_MS;
    cr_assert_eq(run_flood(s, F_PING, H2C_MAX_PINGS, 0), -1);
    cr_assert_eq(s->protects, 0);
    /* Within the new window one more is one too many. */
    s->now += H2C_FLOOD_WINDOW_MS - 1;
    cr_assert_eq(run_flood(s, F_PING, 1, 0), 0);
    cr_assert_eq(s->protects, 1);
    cr_assert_eq(s->why, H2C_P_PING);
    srv_free(s);
}

Test(h2_codec, flood_window_not_restarted_early)
{
    struct srv *s = srv_new(NULL);

    cr_assert_eq(run_flood(s, F_PING, H2C_MAX_PINGS, 1), -1);
    s->now += H2C_FLOOD_WINDOW_MS - 1;
    cr_assert_eq(run_flood(s, F_PING, 1, 0), 0);
    cr_assert_eq(s->protects, 1);
    srv_free(s);
}

/* A clock that reads 0 at the first call still starts the flood window there: 0 is a time,
 * not "no window yet". */
Test(h2_codec, flood_window_restarts_from_clock_zero)
{
    struct srv *s = srv_new(NULL);

    s->now = 0;
    cr_assert_eq(run_flood(s, F_PING, H2C_MAX_PINGS, 1), -1);
    s->now = H2C_FLOOD_WINDOW_MS;
    run_flood(s, F_PING, H2C_MAX_PINGS, 0);
    cr_expect_eq(s->protects, 0, "PINGs of the first window counted in the second");
    srv_free(s);
}

/* ---- connection and stream errors ------------------------------------------------------------ */

Test(h2_codec, bad_preface)
{
    struct srv *s = srv_new(NULL);
    static const char h1[] = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

    cr_assert_eq(feed(s, h1, sizeof h1 - 1), -1);
    flush(s);
    cr_assert_eq(goaway_code(s), E_PROTOCOL);
    cr_assert_eq(s->requests, 0);
    cr_assert_eq(s->protects, 0);
    srv_free(s);
}

/* DATA on stream 0 is a connection error (RFC 9113 §6.1): a GOAWAY(PROTOCOL_ERROR) is queued
 * and h2c_recv says -1, as h2_codec.h promises for every connection error, not only the
 * ones nghttp2_session_mem_recv() returns as negative codes. */
Test(h2_codec, data_on_stream_zero)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};
    long r;

    raw_start(s);
    b_frame(&b, FR_DATA, 0, 0, "abc", 3);
    r = feed(s, b.p, b.n);
    flush(s);
    cr_assert_eq(goaway_code(s), E_PROTOCOL);
    cr_expect(r == -1 || r == (long)b.n, "h2c_recv returned %ld", r);
    cr_assert_not(h2c_want_write(s->h));
    cr_assert(h2c_done(s->h));
    b_free(&b);
    srv_free(s);
}

static void bad_head(void (*build)(struct buf *))
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0}, blk = {0};

    raw_start(s);
    build(&blk);
    b_frame(&b, FR_HEADERS, FL_END_HEADERS | FL_END_STREAM, 1, blk.p, blk.n);
    feed_ok(s, b.p, b.n);
    flush(s);
    cr_assert_eq(s->requests, 0, "a request event for a malformed head");
    cr_assert_eq(rst_code(s, 1), E_PROTOCOL);
    cr_assert_eq(goaway_code(s), -1);
    cr_assert_eq(s->protects, 0);
    cr_assert_leq(s->closes[1], 1);
    /* The connection goes on. */
    b.n = 0;
    b_get(&b, 3, FL_END_STREAM);
    feed_ok(s, b.p, b.n);
    cr_assert_eq(s->requests, 1);
    cr_assert_eq(s->rq[0].sid, 3);
    cr_assert_str_eq(s->rq[0].path, "/");
    cr_assert_eq(s->ends[3], 1);
    b_free(&b);
    b_free(&blk);
    srv_free(s);
}

static void head_no_path(struct buf *b)
{
    hp_lit(b, ":method", "GET");
    hp_lit(b, ":scheme", "https");
    hp_lit(b, ":authority", "example.com");
}

static void head_upper(struct buf *b)
{
    hp_req(b, "GET", "/");
    hp_lit(b, "X-Upper", "1");
}

static void head_connection(struct buf *b)
{
    hp_req(b, "GET", "/");
    hp_lit(b, "connection", "keep-alive");
}

static void head_pseudo_after_regular(struct buf *b)
{
    hp_lit(b, ":method", "GET");
    hp_lit(b, "accept", "*/*");
    hp_lit(b, ":scheme", "https");
    hp_lit(b, ":authority", "example.com");
    hp_lit(b, ":path", "/");
}

static void head_unknown_pseudo(struct buf *b)
{
    hp_req(b, "GET", "/");
    hp_lit(b, ":foo", "1");
}

Test(h2_codec, bad_head_missing_path) { bad_head(head_no_path); }
Test(h2_codec, bad_head_uppercase_name) { bad_head(head_upper); }
Test(h2_codec, bad_head_connection_field) { bad_head(head_connection); }
Test(h2_codec, bad_head_pseudo_after_regular) { bad_head(head_pseudo_after_regular); }
Test(h2_codec, bad_head_unknown_pseudo) { bad_head(head_unknown_pseudo); }

Test(h2_codec, streams_past_max_concurrent)
{
    struct h2c_limits lim = default_limits;
    struct srv *s;
    struct buf b = {0};
    long r = 0;
    uint32_t sid;

    lim.max_concurrent_streams = 2;
    s = srv_new(&lim);
    raw_start(s);
    b_frame(&b, FR_SETTINGS, FL_ACK, 0, NULL, 0);
    feed_ok(s, b.p, b.n);
    for (sid = 1; sid <= 5 && r >= 0; sid += 2) {
        b.n = 0;
        b_get(&b, sid, 0);
        r = feed(s, b.p, b.n);
    }
    /* nghttp2 answers the third stream with a connection error; the codec names it once its
     * GOAWAY is out (h2c_recv may have returned the size: see data_on_stream_zero). */
    flush(s);
    cr_assert_eq(s->requests, 2);
    cr_assert_eq(s->protects, 1, "protect() %u times; GOAWAY %ld", s->protects, goaway_code(s));
    cr_assert_eq(s->why, H2C_P_STREAMS);
    cr_assert_eq(goaway_code(s), E_PROTOCOL);
    /* Nothing more is taken. */
    b.n = 0;
    b_get(&b, 7, FL_END_STREAM);
    cr_assert_eq(feed(s, b.p, b.n), -1);
    cr_assert_eq(s->requests, 2);
    cr_assert_eq(s->protects, 1);
    b_free(&b);
    srv_free(s);
}

/* Before the client ACKed the SETTINGS, a stream past the limit is refused, nothing more. */
Test(h2_codec, streams_past_max_concurrent_before_ack)
{
    struct h2c_limits lim = default_limits;
    struct srv *s;
    struct buf b = {0};

    lim.max_concurrent_streams = 2;
    s = srv_new(&lim);
    raw_start(s);
    for (uint32_t sid = 1; sid <= 5; sid += 2)
        b_get(&b, sid, 0);
    feed_ok(s, b.p, b.n);
    flush(s);
    cr_assert_eq(s->requests, 2);
    cr_assert_eq(s->protects, 0);
    cr_assert_eq(rst_code(s, 5), NGHTTP2_REFUSED_STREAM);
    cr_assert_eq(goaway_code(s), -1);
    b_free(&b);
    srv_free(s);
}

Test(h2_codec, owner_reset_and_data_refused)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};

    raw_start(s);
    b_get(&b, 1, 0);
    b_frame(&b, FR_DATA, 0, 1, "abcd", 4);
    s->data_rc = -1;
    feed_ok(s, b.p, b.n);
    flush(s);
    cr_assert_eq(s->data[1], 4);
    cr_assert_eq(rst_code(s, 1), E_INTERNAL);
    cr_assert_eq(s->closes[1], 1);
    /* h2c_reset from the owner. */
    b.n = 0;
    b_get(&b, 3, 0);
    feed_ok(s, b.p, b.n);
    h2c_reset(s->h, 3, NGHTTP2_CANCEL);
    flush(s);
    cr_assert_eq(rst_code(s, 3), NGHTTP2_CANCEL);
    cr_assert_eq(s->closes[3], 1);
    cr_assert_eq(s->code[3], NGHTTP2_CANCEL);
    b_free(&b);
    srv_free(s);
}

Test(h2_codec, goaway_no_error_lets_streams_finish)
{
    struct srv *s;
    struct cli *c;
    int32_t sid;

    connect_pair(&s, &c, NULL);
    sid = submit_get(c, "/");
    pump(s, c);
    h2c_goaway(s->h);
    pump(s, c);
    cr_assert_eq(c->goaway, 0);
    cr_assert_not(h2c_done(s->h));
    cr_assert_eq(h2c_respond(s->h, sid, 204, NULL, 0, 0), 0);
    pump(s, c);
    cr_assert_eq(s->closes[sid], 1);
    cr_assert(h2c_done(s->h));
    cli_free(c);
    srv_free(s);
}

Test(h2_codec, stream_data_attach)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};
    int x;

    raw_start(s);
    b_get(&b, 1, 0);
    feed_ok(s, b.p, b.n);
    cr_assert_null(h2c_stream_data(s->h, 1));
    h2c_set_stream_data(s->h, 1, &x);
    cr_assert_eq(h2c_stream_data(s->h, 1), &x);
    cr_assert_null(h2c_stream_data(s->h, 3));
    cr_assert_str_eq(gw_h2c_protect_name(H2C_P_RAPID_RESET), "rapid_reset");
    cr_assert_str_eq(gw_h2c_protect_name(H2C_P_STREAMS), "streams");
    cr_assert_str_eq(gw_h2c_protect_name(H2C_P_COUNT), "unknown");
    b_free(&b);
    srv_free(s);
}

/* A flood in the middle of a chunk: nothing after it reaches the owner. */
Test(h2_codec, flood_mid_chunk_stops_events)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};
    static const uint8_t ping[8] = {0};

    raw_start(s);
    b_get(&b, 1, 0);
    for (int i = 0; i <= H2C_MAX_PINGS; i++)
        b_frame(&b, FR_PING, 0, 0, ping, 8);
    b_frame(&b, FR_DATA, FL_END_STREAM, 1, "abc", 3);
    b_get(&b, 3, FL_END_STREAM);
    cr_assert_eq(feed(s, b.p, b.n), -1);
    cr_assert_eq(s->protects, 1);
    cr_assert_eq(s->why, H2C_P_PING);
    cr_assert_eq(s->requests, 1);
    cr_assert_eq(s->after_protect, 0, "%u owner events after protect()", s->after_protect);
    b_free(&b);
    srv_free(s);
}

/* The owner refused the request (request() -1): DATA already on the wire for the stream must not
 * reach it, nor end(). */
Test(h2_codec, refused_request_gets_no_data)
{
    struct srv *s = srv_new(NULL);
    struct buf b = {0};

    raw_start(s);
    s->req_rc = -1;
    b_get(&b, 1, 0);
    b_frame(&b, FR_DATA, 0, 1, "abc", 3);
    b_frame(&b, FR_DATA, FL_END_STREAM, 1, "def", 3);
    feed_ok(s, b.p, b.n);
    flush(s);
    cr_assert_eq(rst_code(s, 1), E_INTERNAL);
    cr_expect_eq(s->data[1], 0, "data() got %zu bytes of a refused stream", s->data[1]);
    cr_expect_eq(s->ends[1], 0, "end() for a refused stream");
    b_free(&b);
    srv_free(s);
}

/* data() said -1: the stream is reset, and the bytes it refused must not stay charged to the
 * connection window (the owner will never h2c_consume() them). Four refused 16 KB bodies
 * with the default 65535-byte connection window: the fifth stream must still be able to send. */
Test(h2_codec, refused_data_returns_connection_window)
{
    static uint8_t body[16384];
    struct h2c_limits lim = default_limits;
    struct srv *s;
    struct cli *c;
    nghttp2_nv nv[] = {NV(":method", "POST"), NV(":scheme", "https"),
                       NV(":authority", "example.com"), NV(":path", "/up")};
    int32_t sid = 0;

    lim.connection_window = 65535;
    lim.max_concurrent_streams = 100;
    connect_pair(&s, &c, &lim);
    s->data_rc = -1;
    for (int i = 0; i < 5; i++) {
        c->body = body;
        c->blen = sizeof body;
        c->boff = 0;
        sid = submit(c, nv, GW_ARRAY_LEN(nv), 1);
        pump(s, c);
    }
    cr_expect_eq(s->data[sid], sizeof body, "the 5th stream got %zu bytes; client connection "
                 "window %d", s->data[sid], nghttp2_session_get_remote_window_size(c->s));
    cli_free(c);
    srv_free(s);
}
