/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the WebSocket codec. The first byte picks a mode and a configuration:
 * the rest is client bytes fed to the frame input path in chunks of varying sizes the way the
 * glue feeds it (every event checked against the rules of the contract), or a message sent
 * through ws_out_deflate and framed, which must come back whole through the input path, or
 * header fields for the handshake check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/ws_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAX_HDRS 32

/* Scratch sizes the glue might use, all at least the 256 the contract asks for. */
static const size_t scratch_caps[] = {256, 257, 1000, 4096};
static uint8_t scratch[4096];

/* xorshift32: chunk and fragment sizes derived from the input, so runs are reproducible. */
static uint32_t next_rand(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return *r;
}

static size_t chunk_size(uint32_t *r)
{
    uint32_t x = next_rand(r);

    switch (x & 3) {
    case 0:
        return 1;
    case 1:
        return 1 + (x >> 2) % 16;
    case 2:
        return 1 + (x >> 2) % 600;
    default:
        return (size_t)-1; /* all that is left */
    }
}

/* What a consumer of the events knows, to hold the codec to its contract. */
struct watch {
    int open; /* a message is open */
    int text;
    uint32_t utf8;  /* the text so far, validated again here */
    uint64_t bytes; /* the open message's bytes */
    uint64_t max;
    int deflate;
    uint8_t *msg; /* optional: where to collect messages (round trips) */
    size_t msg_len, msg_cap;
    size_t fins;
    int ended; /* a close or an error came */
};

static void check_event(struct watch *w, enum ws_in_type t, const struct ws_in_event *ev,
                        const uint8_t *buf, size_t have, size_t scap)
{
    uint32_t st = WS_UTF8_ACCEPT;

    CHECK(t == ev->type);
    switch (t) {
    case WS_IN_NEED:
        break;
    case WS_IN_DATA:
        if (ev->len != 0) {
            int in_buf = ev->data >= buf && ev->len <= have && ev->data <= buf + have - ev->len;
            int in_scratch =
                ev->data >= scratch && ev->len <= scap && ev->data <= scratch + scap - ev->len;
            CHECK(in_buf || (w->deflate && in_scratch));
        }
        CHECK(((ev->flags & WS_F_FIRST) != 0) == !w->open);
        if (ev->flags & WS_F_FIRST) {
            w->open = 1;
            w->text = (ev->flags & WS_F_TEXT) != 0;
            w->utf8 = WS_UTF8_ACCEPT;
            w->bytes = 0;
        }
        CHECK(((ev->flags & WS_F_TEXT) != 0) == w->text);
        CHECK(ev->len != 0 || (ev->flags & WS_F_FIN));
        w->bytes += ev->len;
        CHECK(w->max == 0 || w->bytes <= w->max);
        /* Byte by byte here, in one go in the codec: both must agree the text is valid. */
        for (size_t i = 0; w->text && i < ev->len; i++)
            CHECK(ws_utf8_feed(&w->utf8, ev->data + i, 1) == 0);
        if (w->msg != NULL && ev->len != 0) {
            CHECK(w->msg_len + ev->len <= w->msg_cap);
            memcpy(w->msg + w->msg_len, ev->data, ev->len);
            w->msg_len += ev->len;
        }
        if (ev->flags & WS_F_FIN) {
            CHECK(!w->text || w->utf8 == WS_UTF8_ACCEPT);
            w->open = 0;
            w->fins++;
        }
        break;
    case WS_IN_PING:
    case WS_IN_PONG:
        CHECK(ev->len <= 125);
        CHECK(ev->len == 0 || (ev->data >= buf && ev->data + ev->len <= buf + have));
        break;
    case WS_IN_CLOSE:
        CHECK(ev->len <= 123);
        CHECK(ev->len == 0 || (ev->data >= buf && ev->data + ev->len <= buf + have));
        CHECK(ev->code == WS_CLOSE_NO_STATUS ? ev->len == 0 : ws_close_code_valid(ev->code));
        CHECK(ws_utf8_feed(&st, ev->data, ev->len) == 0 && st == WS_UTF8_ACCEPT);
        w->ended = 1;
        break;
    case WS_IN_ERROR:
        CHECK(ev->code == WS_CLOSE_PROTOCOL || ev->code == WS_CLOSE_INVALID_DATA ||
              ev->code == WS_CLOSE_TOO_BIG || ev->code == WS_CLOSE_INTERNAL);
        CHECK(ev->why != NULL);
        CHECK(ev->code != WS_CLOSE_TOO_BIG || w->max != 0);
        w->ended = 1;
        break;
    }
}

/* Feeds |p[0..n)| to |s| like the glue: chunks appended to what was left unconsumed, calls until
 * WS_IN_NEED. Each chunk gets a heap copy of exactly the pending bytes, so that ASan sees any
 * read past them. */
static void feed(struct ws_in *s, const uint8_t *p, size_t n, uint32_t rnd, size_t scap,
                 struct watch *w)
{
    uint8_t *pend = malloc(n ? n : 1);
    size_t have = 0, off = 0;

    CHECK(pend != NULL);
    while (off < n && !w->ended) {
        size_t take = chunk_size(&rnd), done = 0;
        uint8_t *buf;

        if (take > n - off)
            take = n - off;
        memcpy(pend + have, p + off, take);
        have += take;
        off += take;
        buf = malloc(have);
        CHECK(buf != NULL);
        memcpy(buf, pend, have);
        for (size_t idle = 0;; idle++) {
            struct ws_in_event ev;
            size_t used = (size_t)-1;
            enum ws_in_type t = ws_in_next(s, buf + done, have - done, &used, scratch, scap, &ev);

            CHECK(used <= have - done);
            check_event(w, t, &ev, buf + done, have - done, scap);
            done += used;
            if (used != 0)
                idle = 0;
            CHECK(idle < ((size_t)1 << 24)); /* output without input is bounded */
            if (t == WS_IN_NEED)
                break;
            if (w->ended) {
                CHECK(s->closed);
                CHECK(ws_in_next(s, buf + done, have - done, &used, scratch, scap, &ev) ==
                      WS_IN_NEED);
                CHECK(used == 0);
                break;
            }
        }
        have -= done;
        memcpy(pend, buf + done, have);
        free(buf);
    }
    ws_in_free(s);
    CHECK(s->z == NULL);
    free(pend);
}

static const uint64_t max_messages[] = {0, 64, 4096, 1 << 20};

static void fuzz_frames(uint8_t sel, const uint8_t *p, size_t n)
{
    struct ws_in s = {0};
    struct watch w = {0};
    uint32_t rnd = 0x9e3779b9u ^ (uint32_t)n;

    if (n < 1)
        return;
    s.conf.deflate = (sel >> 2) & 1;
    s.conf.no_context_takeover = (sel >> 3) & 1;
    s.conf.max_message = max_messages[(sel >> 4) & 3];
    s.conf.window_bits = (uint8_t)(8 + (p[0] & 7));
    rnd ^= (uint32_t)p[0] << 8;
    w.max = s.conf.max_message;
    w.deflate = s.conf.deflate;
    feed(&s, p + 1, n - 1, rnd, scratch_caps[(sel >> 6) & 3], &w);
}

/* A growable byte string for the round trip's wire. */
struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static void add(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        CHECK(b->p != NULL);
    }
    if (n != 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Appends a client frame masked with a key drawn from |rnd|. */
static void add_frame(struct bytes *b, unsigned b0, const uint8_t *p, size_t n, uint32_t *rnd)
{
    uint8_t h[WS_FRAME_HEADER_MAX + 4], key[4];
    size_t hl = ws_frame_header(h, b0 & 0x0f, (b0 & 0x80) != 0, (b0 & 0x40) != 0, n);
    uint32_t k = next_rand(rnd);

    h[1] |= 0x80; /* the mask bit: ws_frame_header writes server frames */
    memcpy(key, &k, 4);
    memcpy(h + hl, key, 4);
    add(b, h, hl + 4);
    add(b, p, n);
    for (size_t i = 0; i < n; i++)
        b->p[b->len - n + i] ^= key[i & 3];
}

/* Sends the message |m[0..n)| through ws_out_deflate (when |sel| asks for deflate) in pieces,
 * frames it with pings between the fragments, and feeds it to the input path: it must come out
 * the same, twice (the second time with the compression context of the first). */
static void fuzz_round_trip(uint8_t sel, const uint8_t *m, size_t n)
{
    int deflate = (sel >> 2) & 1, nct = (sel >> 3) & 1;
    uint8_t bits = (uint8_t)(8 + ((sel >> 4) & 7));
    struct ws_out o = {.window_bits = bits, .no_context_takeover = nct};
    struct ws_in s = {
        .conf = {.deflate = deflate, .window_bits = bits, .no_context_takeover = nct}};
    struct watch w = {.deflate = deflate, .msg_cap = 2 * n};
    struct bytes wire = {0}, comp = {0};
    uint32_t rnd = 0x2545f491u ^ (uint32_t)n ^ (uint32_t)sel << 24;
    uint32_t st = WS_UTF8_ACCEPT;
    unsigned op = ws_utf8_feed(&st, m, n) == 0 && st == WS_UTF8_ACCEPT ? WS_OP_TEXT : WS_OP_BINARY;
    uint8_t out[512];

    w.msg = malloc(w.msg_cap ? w.msg_cap : 1);
    CHECK(w.msg != NULL);
    for (int round = 0; round < 2; round++) {
        const uint8_t *payload = m;
        size_t plen = n, off = 0;

        comp.len = 0;
        if (deflate) {
            size_t cap = 64 + next_rand(&rnd) % (sizeof out - 64);
            int rc = 0;

            /* Input pieces of random sizes; only the last one is |fin|. */
            do {
                size_t k = next_rand(&rnd) % 300, used, olen;
                int fin;

                if (k > n - off)
                    k = n - off;
                fin = off + k == n;
                rc = ws_out_deflate(&o, m + off, k, fin, out, cap, &used, &olen);
                CHECK(rc >= 0 && used <= k && olen <= cap);
                CHECK(rc == 0 || (fin && used == k));
                add(&comp, out, olen);
                off += used;
            } while (off < n || rc != 1);
            CHECK(comp.len > 0);
            CHECK(comp.len < 4 || memcmp(comp.p + comp.len - 4, "\x00\x00\xff\xff", 4) != 0);
            payload = comp.p;
            plen = comp.len;
        }
        /* Fragments of random sizes (empty ones too), a ping now and then between them. */
        off = 0;
        for (int first = 1;; first = 0) {
            size_t k = next_rand(&rnd) % 200;
            unsigned b0;

            if (k > plen - off)
                k = plen - off;
            b0 =
                (first ? op | (deflate ? 0x40u : 0u) : WS_OP_CONT) | (off + k == plen ? 0x80u : 0u);
            add_frame(&wire, b0, payload + off, k, &rnd);
            off += k;
            if (b0 & 0x80)
                break;
            if (next_rand(&rnd) % 4 == 0)
                add_frame(&wire, 0x80 | WS_OP_PING, m, n < 125 ? n : 125, &rnd);
        }
    }
    feed(&s, wire.p, wire.len, rnd, scratch_caps[sel >> 6], &w);
    CHECK(!w.ended && !w.open && w.fins == 2);
    CHECK(w.msg_len == 2 * n);
    CHECK(n == 0 || (memcmp(w.msg, m, n) == 0 && memcmp(w.msg + n, m, n) == 0));
    ws_out_free(&o);
    free(wire.p);
    free(comp.p);
    free(w.msg);
}

/* Header fields from "name:value" lines; the first byte picks the method, the version and the
 * permessage-deflate configuration. */
static void fuzz_handshake(uint8_t sel, const uint8_t *p, size_t n)
{
    char *copy = malloc(n ? n : 1);
    struct h1_header h[MAX_HDRS];
    struct ws_pmd_conf conf = {.enabled = (sel >> 2) & 1,
                               .max_window_bits = (uint8_t)(8 + ((sel >> 3) & 7)),
                               .no_context_takeover = (sel >> 6) & 1};
    struct ws_handshake out;
    const char *why = NULL;
    size_t nh = 0;

    CHECK(copy != NULL);
    if (n != 0)
        memcpy(copy, p, n);
    for (size_t i = 0; i < n && nh < MAX_HDRS;) {
        size_t e = i, c;

        while (e < n && copy[e] != '\n')
            e++;
        for (c = i; c < e && copy[c] != ':'; c++)
            ;
        size_t v = c < e ? c + 1 : e, ve = e;

        /* Values come trimmed of OWS, as h1_parse gives them. */
        while (v < ve && (copy[v] == ' ' || copy[v] == '\t'))
            v++;
        while (ve > v && (copy[ve - 1] == ' ' || copy[ve - 1] == '\t'))
            ve--;
        h[nh].name = (struct gw_slice){copy + i, c - i};
        h[nh].value = (struct gw_slice){copy + v, ve - v};
        nh++;
        i = e + 1;
    }
    int rc = ws_handshake_check((struct gw_slice){sel & 0x80 ? "POST" : "GET", sel & 0x80 ? 4 : 3},
                                1, h, nh, &conf, &out, &why);
    CHECK(rc == 0 || rc == 400 || rc == 426);
    CHECK((rc == 0) == (why == NULL));
    if (rc == 0) {
        char accept[29], resp[128];
        size_t len;

        CHECK(out.key.len == 24 && out.key.p >= copy && out.key.p + 24 <= copy + n);
        ws_accept_key(out.key, accept);
        CHECK(strlen(accept) == 28);
        CHECK(out.deflate == 0 || conf.enabled);
        if (out.deflate) {
            uint8_t max = conf.max_window_bits < 9 ? 9 : conf.max_window_bits;

            CHECK(out.pmd.server_max_window_bits >= 9 && out.pmd.server_max_window_bits <= max);
            CHECK(out.pmd.client_max_window_bits >= 8 && out.pmd.client_max_window_bits <= 15);
            CHECK(out.pmd.client_max_window_bits == 15 || out.pmd.client_max_window_bits <= max);
            CHECK(!conf.no_context_takeover ||
                  (out.pmd.server_no_context_takeover && out.pmd.client_no_context_takeover));
            len = ws_pmd_response(&out.pmd, resp, sizeof resp);
            CHECK(len >= 18 && memcmp(resp, "permessage-deflate", 18) == 0);
            CHECK(ws_pmd_response(&out.pmd, resp, len - 1) == 0);
        }
    }
    /* The list walker over every value: trimmed, comma-free tokens inside the value. */
    for (size_t i = 0; i < nh; i++) {
        struct gw_slice tok;
        size_t pos = 0, last = 0;

        while (ws_next_token(h[i].value, &pos, &tok)) {
            CHECK(tok.len > 0 && tok.p >= h[i].value.p + last &&
                  tok.p + tok.len <= h[i].value.p + h[i].value.len);
            CHECK(memchr(tok.p, ',', tok.len) == NULL);
            CHECK(tok.p[0] != ' ' && tok.p[0] != '\t' && tok.p[tok.len - 1] != ' ' &&
                  tok.p[tok.len - 1] != '\t');
            CHECK(pos > last);
            last = pos;
        }
    }
    /* A close reason from the input: whole characters only, at most 123 bytes. */
    {
        uint8_t cp[125];
        uint32_t st = WS_UTF8_ACCEPT;
        size_t len = ws_close_payload(cp, WS_CLOSE_NORMAL, copy, n);

        CHECK(len >= 2 && len <= 125 && cp[0] == 0x03 && cp[1] == 0xe8);
        CHECK(ws_utf8_feed(&st, cp + 2, len - 2) == 0 && st == WS_UTF8_ACCEPT);
        CHECK(memcmp(cp + 2, copy, len - 2) == 0);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] & 3) {
    case 0:
    case 1:
        fuzz_frames(data[0], data + 1, size - 1);
        break;
    case 2:
        fuzz_round_trip(data[0], data + 1, size - 1);
        break;
    default:
        fuzz_handshake(data[0], data + 1, size - 1);
        break;
    }
    return 0;
}
