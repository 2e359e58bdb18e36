/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the HTTP/2 server codec (gateway/h2_codec.c). Input: a mode byte, a
 * chunking seed, then client bytes. The mode's low two bits put a fixed valid start before
 * them (nothing, the preface and SETTINGS, or those and the SETTINGS ACK); its other bits salt
 * what the owner does. The bytes go to h2c_recv() in chunks of sizes drawn from the seed, at a
 * clock that moves on; after each chunk the owner resumes deferred bodies, consumes held
 * request bytes and calls h2c_send() into a bounded sink. The owner answers some requests
 * (a body through body(), some deferred then resumed, some with trailers, some without a
 * body), refuses or resets others, refuses some data; the target aborts when the codec breaks
 * its contract: a callback for a stream after its closed(), closed() twice, end() twice, a
 * second request() for a stream, body() for a stream without a body, owner events after
 * protect(), protect() twice, h2c_recv() returning neither the size nor -1, or frames out of
 * step in the output. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/h2_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAXST 512
#define SINK_MAX (256 * 1024)

enum plan { P_REFUSE, P_RESET, P_NOW, P_DEFER, P_TRAILERS, P_NO_BODY, P_AFTER_END, P_COUNT };

struct st {
    int32_t sid;
    unsigned requested : 1, refused : 1, ended : 1, closed : 1, responded : 1, has_body : 1,
        defer : 1, want_resume : 1, trailers : 1, wait_end : 1;
    size_t body_left;
    size_t got, held; /* request body bytes, and those not consumed yet */
};

struct owner {
    struct h2c *h;
    uint32_t salt;
    struct st st[MAXST];
    size_t nst;
    unsigned protects;
    size_t requests, ends, closes, data_bytes, consumed;
    int in_codec;
    /* The output sink: only frame boundaries are followed. */
    size_t sunk;
    uint8_t hd[9];
    size_t hd_have;
    size_t skip; /* payload bytes of the current frame still to come */
};

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* xorshift32 for chunk sizes and clock steps. */
static uint32_t next_rand(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return *r;
}

static struct st *find(struct owner *o, int32_t sid, int add)
{
    for (size_t i = 0; i < o->nst; i++)
        if (o->st[i].sid == sid)
            return &o->st[i];
    if (!add || o->nst == MAXST)
        return NULL;
    memset(&o->st[o->nst], 0, sizeof o->st[0]);
    o->st[o->nst].sid = sid;
    return &o->st[o->nst++];
}

static const struct h1_header resp_hdrs[] = {
    {{"Content-Type", 12}, {"text/plain", 10}},
    {{"Connection", 10}, {"close", 5}},
    {{"X-Test", 6}, {"1", 1}},
};
static const struct h1_header trailer_hdrs[] = {
    {{"X-Checksum", 10}, {"abc", 3}},
    {{"Transfer-Encoding", 17}, {"chunked", 7}},
};

static void respond(struct owner *o, struct st *s, int has_body)
{
    if (s->responded || s->closed)
        return;
    s->responded = 1;
    s->has_body = (unsigned)has_body;
    s->body_left = has_body ? 1 + mix(o->salt ^ (uint32_t)s->sid) % 40000 : 0;
    if (h2c_respond(o->h, s->sid, has_body ? 200 : 204, resp_hdrs, 3, has_body) != 0)
        s->has_body = 0;
}

static int on_request(void *ud, int32_t sid, const struct h2c_req *r)
{
    struct owner *o = ud;
    struct st *s = find(o, sid, 1);

    CHECK(o->in_codec);
    CHECK(o->protects == 0);
    CHECK(sid > 0 && (sid & 1) == 1);
    o->requests++;
    if (s == NULL)
        return -1;
    CHECK(!s->requested && !s->closed);
    s->requested = 1;
    CHECK(r->too_big || r->method.len > 0);
    CHECK(r->nheaders == 0 || r->headers != NULL);
    for (size_t i = 0; i < r->nheaders; i++) {
        struct gw_slice n = r->headers[i].name;

        CHECK(n.len > 0 && n.p[0] != ':');
        for (size_t k = 0; k < n.len; k++)
            CHECK(!(n.p[k] >= 'A' && n.p[k] <= 'Z'));
    }
    if (r->too_big) {
        respond(o, s, 0);
        return 0;
    }
    switch ((enum plan)(mix(o->salt + (uint32_t)sid) % P_COUNT)) {
    case P_REFUSE:
        s->refused = 1;
        return -1;
    case P_RESET:
        h2c_reset(o->h, sid, 8 /* CANCEL */);
        break;
    case P_NOW:
        respond(o, s, 1);
        break;
    case P_DEFER:
        s->defer = 1;
        respond(o, s, 1);
        break;
    case P_TRAILERS:
        s->trailers = 1;
        respond(o, s, 1);
        break;
    case P_NO_BODY:
        respond(o, s, 0);
        break;
    default:
        s->wait_end = 1;
        s->trailers = (unsigned)(sid & 2) != 0;
        break;
    }
    return 0;
}

static int on_data(void *ud, int32_t sid, const uint8_t *p, size_t n)
{
    struct owner *o = ud;
    struct st *s = find(o, sid, 0);

    CHECK(o->in_codec);
    CHECK(o->protects == 0);
    CHECK(n == 0 || p != NULL);
    if (s == NULL)
        return 0;
    CHECK(s->requested && !s->refused && !s->closed && !s->ended);
    s->got += n;
    o->data_bytes += n;
    if (n > 0 && mix(o->salt ^ (uint32_t)(sid * 31) ^ (uint32_t)s->got) % 64 == 0) {
        /* The owner refuses these bytes: the codec gives their window back itself. */
        return -1;
    }
    s->held += n;
    return 0;
}

static void on_end(void *ud, int32_t sid)
{
    struct owner *o = ud;
    struct st *s = find(o, sid, 0);

    CHECK(o->in_codec);
    CHECK(o->protects == 0);
    o->ends++;
    if (s == NULL)
        return;
    CHECK(s->requested && !s->refused && !s->closed && !s->ended);
    s->ended = 1;
    if (s->wait_end)
        respond(o, s, 1);
}

static void on_closed(void *ud, int32_t sid, uint32_t code)
{
    struct owner *o = ud;
    struct st *s = find(o, sid, 1);

    (void)code;
    CHECK(o->in_codec);
    CHECK(sid > 0);
    o->closes++;
    if (s == NULL)
        return;
    CHECK(!s->closed);
    s->closed = 1;
    /* What it held is let go: the window comes back through the connection. */
    if (s->held > 0) {
        o->consumed += s->held;
        h2c_consume(o->h, sid, s->held);
        s->held = 0;
    }
}

static size_t on_body(void *ud, int32_t sid, uint8_t *buf, size_t len, int *eof,
                      const struct h1_header **t, size_t *nt)
{
    struct owner *o = ud;
    struct st *s = find(o, sid, 0);
    size_t n;

    CHECK(o->in_codec);
    CHECK(buf != NULL && eof != NULL && t != NULL && nt != NULL);
    CHECK(s != NULL && s->responded && s->has_body && !s->closed);
    if (s->defer) {
        s->defer = 0;
        s->want_resume = 1;
        return 0;
    }
    n = s->body_left < len ? s->body_left : len;
    if (n > 4096)
        n = 4096;
    memset(buf, 'b', n);
    s->body_left -= n;
    if (s->body_left == 0) {
        *eof = 1;
        if (s->trailers) {
            *t = trailer_hdrs;
            *nt = 2;
        }
    } else if ((mix(o->salt ^ (uint32_t)s->body_left) & 3) == 0) {
        s->defer = 1; /* the next call waits */
    }
    return n;
}

static void on_protect(void *ud, enum h2c_protect why)
{
    struct owner *o = ud;

    CHECK(o->in_codec);
    CHECK((unsigned)why < H2C_P_COUNT);
    CHECK(gw_h2c_protect_name(why)[0] != 'u');
    CHECK(o->protects == 0);
    o->protects++;
}

static const struct h2c_cbs cbs = {
    .request = on_request,
    .data = on_data,
    .end = on_end,
    .closed = on_closed,
    .body = on_body,
    .protect = on_protect,
};

/* Follows the frame headers through the output. */
static void put(void *arg, const uint8_t *p, size_t n)
{
    struct owner *o = arg;

    CHECK(n > 0);
    o->sunk += n;
    CHECK(o->sunk <= SINK_MAX * 64);
    while (n > 0) {
        if (o->skip > 0) {
            size_t k = o->skip < n ? o->skip : n;

            o->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        o->hd[o->hd_have++] = *p++;
        n--;
        if (o->hd_have == 9) {
            uint32_t len = (uint32_t)o->hd[0] << 16 | (uint32_t)o->hd[1] << 8 | o->hd[2];

            CHECK(o->hd[3] <= 9);  /* a server sends standard frames */
            CHECK(o->hd[3] != 5);  /* no PUSH_PROMISE */
            CHECK(o->hd[3] != 9);  /* CONTINUATION: never for small heads */
            CHECK(len <= 16384);   /* the server never raises its frame size */
            o->skip = len;
            o->hd_have = 0;
        }
    }
}

static void after_chunk(struct owner *o, uint32_t *r)
{
    for (size_t i = 0; i < o->nst; i++) {
        struct st *s = &o->st[i];

        if (s->closed)
            continue;
        if (s->want_resume) {
            s->want_resume = 0;
            h2c_resume(o->h, s->sid);
        }
        if (s->held > 0 && (next_rand(r) & 1)) {
            o->consumed += s->held;
            h2c_consume(o->h, s->sid, s->held);
            s->held = 0;
        }
    }
    o->in_codec = 1;
    CHECK(h2c_send(o->h, 1 + next_rand(r) % SINK_MAX, put, o) == 0);
    o->in_codec = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t start[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                   "\x00\x00\x00\x04\x00\x00\x00\x00\x00"  /* SETTINGS */
                                   "\x00\x00\x00\x04\x01\x00\x00\x00\x00"; /* its ACK */
    static const struct h2c_limits lim = {
        .header_bytes = 4096,
        .headers = 32,
        .max_concurrent_streams = 16,
        .window = 16384,
        .connection_window = 1 << 18,
        .connect_protocol = 1,
    };
    struct owner *o;
    uint32_t r;
    uint64_t now = 1000;
    int dead = 0;

    if (size < 2)
        return 0;
    o = calloc(1, sizeof *o);
    CHECK(o != NULL);
    o->salt = mix(data[0] >> 2);
    r = 0x9e3779b9u ^ ((uint32_t)data[1] << 8 | data[0]);
    o->h = h2c_new(&lim, &cbs, o);
    CHECK(o->h != NULL);
    switch (data[0] & 3) {
    case 0:
        break;
    case 1:
        o->in_codec = 1;
        CHECK(h2c_recv(o->h, start, 24 + 9, now) == 24 + 9);
        o->in_codec = 0;
        break;
    default:
        o->in_codec = 1;
        CHECK(h2c_recv(o->h, start, sizeof start - 1, now) == (long)sizeof start - 1);
        o->in_codec = 0;
        break;
    }
    data += 2;
    size -= 2;
    while (size > 0 && !dead) {
        uint32_t x = next_rand(&r);
        size_t n = (x & 3) == 0 ? size : 1 + (x >> 2) % 64;
        long got;

        if (n > size)
            n = size;
        o->in_codec = 1;
        got = h2c_recv(o->h, data, n, now);
        o->in_codec = 0;
        CHECK(got == -1 || got == (long)n);
        if (got < 0)
            dead = 1;
        else if (o->protects > 0)
            abort(); /* protect() said the connection ends, h2c_recv() did not */
        data += n;
        size -= n;
        now += (x >> 8) % 700;
        after_chunk(o, &r);
    }
    /* Flush what is left; the session's end is consistent. */
    after_chunk(o, &r);
    (void)h2c_want_write(o->h);
    (void)h2c_done(o->h);
    CHECK(o->consumed <= o->data_bytes);
    for (size_t i = 0; i < o->nst; i++) {
        const struct st *s = &o->st[i];

        CHECK(s->got >= s->held);
        if (s->refused)
            CHECK(s->got == 0 || s->closed);
    }
    h2c_free(o->h);
    free(o);
    return 0;
}
