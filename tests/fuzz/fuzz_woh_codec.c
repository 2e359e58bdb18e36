/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the WebSocket-over-HTTP event codec. The first byte picks a mode and,
 * with the input's size, the chunk sizes: the rest is either a body decoded in chunks of varying
 * sizes the way the glue feeds it, every result held to the contract and the whole compared with
 * a plain one-pass decoder written here from the format; or material for events written with
 * woh_event_line, which must decode to exactly those events. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/woh_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* xorshift32: chunk sizes derived from the input, so runs are reproducible. */
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

    switch (x & 7) {
    case 0:
        return 0; /* a call with nothing: must say NEED and use nothing */
    case 1:
    case 2:
        return 1;
    case 3:
    case 4:
        return 1 + (x >> 3) % 16;
    case 5:
        return 1 + (x >> 3) % 300;
    default:
        return (size_t)-1; /* all that is left */
    }
}

/* What a body decoded to, however it was cut: the pieces of a message joined into one item. */
struct item {
    char kind; /* 'M' a TEXT/BINARY message, 'E' an event */
    uint8_t type;
    uint8_t complete; /* M: the fin piece came */
    unsigned code;    /* E CLOSE */
    size_t off, len;  /* M: the content, E CLOSE: the reason; in out.bytes */
};

struct out {
    struct item *it;
    size_t nit, itcap;
    uint8_t *bytes;
    size_t nbytes, bcap;
    int end; /* WOH_IN_NEED or WOH_IN_ERROR */
    const char *why;
    size_t consumed;
    int done;
};

static struct item *add_item(struct out *o, char kind, unsigned type)
{
    if (o->nit == o->itcap) {
        o->itcap = o->itcap * 2 + 16;
        o->it = realloc(o->it, o->itcap * sizeof *o->it);
        CHECK(o->it != NULL);
    }
    o->it[o->nit] = (struct item){.kind = kind, .type = (uint8_t)type, .off = o->nbytes};
    return &o->it[o->nit++];
}

static void add_bytes(struct out *o, const uint8_t *p, size_t n)
{
    if (o->nbytes + n > o->bcap) {
        o->bcap = (o->nbytes + n) * 2 + 64;
        o->bytes = realloc(o->bytes, o->bcap);
        CHECK(o->bytes != NULL);
    }
    if (n != 0)
        memcpy(o->bytes + o->nbytes, p, n);
    o->nbytes += n;
}

static void out_free(struct out *o)
{
    free(o->it);
    free(o->bytes);
}

/* ---- the codec, fed in chunks --------------------------------------------------------------- */

/* Holds one result to the contract and records it. |p[0..n)| was given, |used| taken. */
static void take(struct out *o, int open_before, enum woh_in_result r,
                 const struct woh_in_event *ev, const uint8_t *p, size_t n, size_t used)
{
    struct item *it;

    CHECK(used <= n);
    o->consumed += used;
    switch (r) {
    case WOH_IN_NEED:
        CHECK(used == n);
        break;
    case WOH_IN_ERROR:
        CHECK(ev->why != NULL);
        o->end = WOH_IN_ERROR;
        o->why = ev->why;
        break;
    case WOH_IN_DATA:
        CHECK(used > 0); /* progress: a loop that stops on "nothing consumed" must not lose bytes */
        CHECK(ev->type == WOH_TEXT || ev->type == WOH_BINARY);
        CHECK(ev->first == !open_before);
        CHECK(ev->fin == 0 || ev->fin == 1);
        CHECK(ev->len != 0 || (ev->first && ev->fin));
        CHECK(ev->len == 0 || (ev->data >= p && ev->data + ev->len <= p + used));
        if (ev->first) {
            it = add_item(o, 'M', ev->type);
        } else {
            CHECK(o->nit > 0);
            it = &o->it[o->nit - 1];
            CHECK(it->kind == 'M' && it->type == ev->type && !it->complete);
        }
        add_bytes(o, ev->data, ev->len);
        it->len += ev->len;
        it->complete = (uint8_t)ev->fin;
        break;
    case WOH_IN_EVENT:
        CHECK(used > 0);
        CHECK(!open_before);
        CHECK(ev->type == WOH_OPEN || ev->type == WOH_PING || ev->type == WOH_PONG ||
              ev->type == WOH_CLOSE || ev->type == WOH_DISCONNECT);
        it = add_item(o, 'E', ev->type);
        if (ev->type == WOH_CLOSE) {
            CHECK(ev->len <= WOH_CLOSE_MAX - 2);
            CHECK(ev->len == 0 || ev->data != NULL);
            CHECK(ev->code <= 0xffff);
            it->code = ev->code;
            it->len = ev->len;
            add_bytes(o, ev->data, ev->len);
        } else {
            CHECK(ev->len == 0 && ev->code == 0);
        }
        break;
    default:
        CHECK(0);
    }
}

/* Decodes |p[0..n)| in chunks drawn from |rnd|, each an exact heap copy so that ASan sees any
 * read past it; stops at the first error. */
static void decode(const uint8_t *p, size_t n, uint32_t rnd, struct out *o)
{
    struct woh_in d = {0};
    size_t off = 0;
    int open = 0;

    o->end = WOH_IN_NEED;
    CHECK(woh_in_done(&d));
    do {
        size_t take_n = chunk_size(&rnd), left;
        uint8_t *buf, *q;

        if (take_n > n - off)
            take_n = n - off;
        buf = malloc(take_n ? take_n : 1);
        CHECK(buf != NULL);
        if (take_n != 0)
            memcpy(buf, p + off, take_n);
        off += take_n;
        q = buf;
        left = take_n;
        for (;;) {
            struct woh_in_event ev;
            size_t used = (size_t)-1;
            enum woh_in_result r = woh_in_next(&d, q, left, &used, &ev);

            take(o, open, r, &ev, q, left, used);
            if (r == WOH_IN_DATA)
                open = !ev.fin;
            /* woh_in_done only where an event ended, never inside a message. */
            CHECK(!woh_in_done(&d) || !open);
            q += used;
            left -= used;
            if (r == WOH_IN_NEED || r == WOH_IN_ERROR)
                break;
        }
        free(buf);
    } while (off < n && o->end != WOH_IN_ERROR);
    o->done = o->end == WOH_IN_NEED && woh_in_done(&d);
}

/* ---- a one-pass decoder of the whole body, from the format ---------------------------------- */

static const char *const names[] = {"OPEN", "TEXT",  "BINARY",    "PING",
                                    "PONG", "CLOSE", "DISCONNECT"};

static int hexval(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void ref_fail(struct out *o, const char *why, size_t at)
{
    o->end = WOH_IN_ERROR;
    o->why = why;
    o->consumed = at;
}

static void ref_decode(const uint8_t *p, size_t n, struct out *o)
{
    size_t pos = 0;

    o->end = WOH_IN_NEED;
    o->consumed = n;
    for (;;) {
        size_t j = pos, name_len, len, digits;
        const uint8_t *sp;
        uint64_t v = 0, avail;
        int t;

        if (pos == n) {
            o->done = 1;
            return;
        }
        while (j < n && p[j] != '\n') {
            if (j - pos >= WOH_LINE_MAX - 1) {
                ref_fail(o, "event line too long", j + 1);
                return;
            }
            j++;
        }
        if (j == n)
            return; /* inside a line */
        if (j == pos || p[j - 1] != '\r') {
            ref_fail(o, "event line not ended by CRLF", j + 1);
            return;
        }
        len = j - 1 - pos;
        sp = memchr(p + pos, ' ', len);
        name_len = sp != NULL ? (size_t)(sp - (p + pos)) : len;
        for (t = 0; t < 7; t++)
            if (strlen(names[t]) == name_len && memcmp(names[t], p + pos, name_len) == 0)
                break;
        if (t == 7) {
            ref_fail(o, "unknown event", j + 1);
            return;
        }
        if (sp == NULL) {
            pos = j + 1;
            if (t == WOH_TEXT || t == WOH_BINARY)
                add_item(o, 'M', (unsigned)t)->complete = 1;
            else
                add_item(o, 'E', (unsigned)t)->code = t == WOH_CLOSE ? 1005 : 0;
            continue;
        }
        digits = len - name_len - 1;
        if (digits == 0 || digits > 16) {
            ref_fail(o, "bad event size", j + 1);
            return;
        }
        for (size_t k = 0; k < digits; k++) {
            int h = hexval(sp[1 + k]);

            if (h < 0) {
                ref_fail(o, "bad event size", j + 1);
                return;
            }
            v = v << 4 | (uint64_t)h;
        }
        if (t == WOH_CLOSE && (v == 1 || v > WOH_CLOSE_MAX)) {
            ref_fail(o, "bad CLOSE size", j + 1);
            return;
        }
        pos = j + 1;
        avail = n - pos < v ? n - pos : v;
        if (t == WOH_TEXT || t == WOH_BINARY) {
            if (avail > 0 || v == 0) {
                struct item *it = add_item(o, 'M', (unsigned)t);

                add_bytes(o, p + pos, (size_t)avail);
                it->len = (size_t)avail;
                it->complete = avail == v;
            }
        } else if (avail == v) {
            struct item *it = add_item(o, 'E', (unsigned)t);

            if (t == WOH_CLOSE) {
                it->code = v >= 2 ? (unsigned)p[pos] << 8 | p[pos + 1] : 1005;
                it->len = v >= 2 ? (size_t)v - 2 : 0;
                add_bytes(o, p + pos + (v >= 2 ? 2 : 0), it->len);
            }
        }
        pos += (size_t)avail;
        if (avail < v || pos == n)
            return; /* inside the content or before its CRLF */
        if (p[pos] != '\r') {
            ref_fail(o, "event content not followed by CRLF", pos + 1);
            return;
        }
        if (++pos == n)
            return;
        if (p[pos] != '\n') {
            ref_fail(o, "event content not followed by CRLF", pos + 1);
            return;
        }
        pos++;
    }
}

static void same(const struct out *a, const struct out *b)
{
    CHECK(a->end == b->end);
    CHECK(a->end != WOH_IN_ERROR || strcmp(a->why, b->why) == 0);
    CHECK(a->consumed == b->consumed);
    CHECK(a->done == b->done);
    CHECK(a->nit == b->nit);
    for (size_t i = 0; i < a->nit; i++) {
        const struct item *x = &a->it[i], *y = &b->it[i];

        CHECK(x->kind == y->kind && x->type == y->type && x->code == y->code);
        CHECK(x->complete == y->complete && x->len == y->len);
        CHECK(x->len == 0 || memcmp(a->bytes + x->off, b->bytes + y->off, x->len) == 0);
    }
    CHECK(a->nbytes == b->nbytes);
}

static void fuzz_decode(uint32_t rnd, const uint8_t *p, size_t n)
{
    struct out got = {0}, want = {0};

    decode(p, n, rnd, &got);
    ref_decode(p, n, &want);
    same(&got, &want);
    out_free(&got);
    out_free(&want);
}

/* ---- events written, then read -------------------------------------------------------------- */

/* Checks woh_event_line's line for |type| and |len|: the name, a space and upper-case hex
 * without leading zeros when there is a size, CRLF. Returns 1 when the line has a size. */
static int check_line(const char *line, size_t n, enum woh_type type, size_t len)
{
    size_t name_len = strlen(names[type]);
    uint64_t v = 0;

    CHECK(n <= WOH_LINE_MAX && n >= name_len + 2);
    CHECK(memcmp(line, names[type], name_len) == 0);
    CHECK(line[n - 2] == '\r' && line[n - 1] == '\n');
    if (n == name_len + 2) {
        CHECK(len == 0 && type != WOH_TEXT && type != WOH_BINARY && type != WOH_CLOSE);
        return 0;
    }
    CHECK(line[name_len] == ' ' && n - name_len - 3 >= 1 && n - name_len - 3 <= 16);
    CHECK(line[name_len + 1] != '0' || n == name_len + 4);
    for (size_t i = name_len + 1; i < n - 2; i++) {
        int h = hexval((uint8_t)line[i]);

        CHECK(h >= 0 && !(line[i] >= 'a' && line[i] <= 'f'));
        v = v << 4 | (uint64_t)h;
    }
    CHECK(v == len);
    return 1;
}

/* Events from the input: a byte picks the type and a size (from the next two bytes when its top
 * bit is set), the content follows. CLOSE sizes are made 0 or 2..125. */
static void fuzz_round_trip(uint32_t rnd, const uint8_t *q, size_t m)
{
    struct out got = {0}, want = {0};
    uint8_t *body = NULL;
    size_t blen = 0, bcap = 0, i = 0;

    while (i < m) {
        uint8_t b = q[i++];
        enum woh_type type = (enum woh_type)(b % 7);
        size_t len = (b >> 3) & 0xf, avail;
        char line[WOH_LINE_MAX];
        size_t ln;
        int sized;

        if ((b & 0x80) && m - i >= 2) {
            len = (size_t)q[i] << 8 | q[i + 1];
            i += 2;
        }
        avail = m - i;
        if (len > avail)
            len = avail;
        if (type == WOH_CLOSE) {
            if (len > WOH_CLOSE_MAX)
                len = WOH_CLOSE_MAX;
            if (len == 1)
                len = 0;
        }
        ln = woh_event_line(line, type, len);
        sized = check_line(line, ln, type, len);
        if (blen + ln + len + 2 > bcap) {
            bcap = (blen + ln + len + 2) * 2;
            body = realloc(body, bcap);
            CHECK(body != NULL);
        }
        memcpy(body + blen, line, ln);
        blen += ln;
        if (sized) {
            if (len != 0)
                memcpy(body + blen, q + i, len);
            memcpy(body + blen + len, WOH_EVENT_END, 2);
            blen += len + 2;
        }
        /* What must come out. */
        if (type == WOH_TEXT || type == WOH_BINARY) {
            struct item *it = add_item(&want, 'M', type);

            add_bytes(&want, q + i, len);
            it->len = len;
            it->complete = 1;
        } else {
            struct item *it = add_item(&want, 'E', type);

            if (type == WOH_CLOSE) {
                it->code = len >= 2 ? (unsigned)q[i] << 8 | q[i + 1] : 1005;
                it->len = len >= 2 ? len - 2 : 0;
                add_bytes(&want, q + i + (len >= 2 ? 2 : 0), it->len);
            }
        }
        i += len;
    }
    want.end = WOH_IN_NEED;
    want.consumed = blen;
    want.done = 1;
    decode(body, blen, rnd, &got);
    same(&got, &want);
    /* And the one-pass decoder agrees, which keeps it honest. */
    out_free(&want);
    memset(&want, 0, sizeof want);
    ref_decode(body, blen, &want);
    same(&got, &want);
    out_free(&got);
    out_free(&want);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t rnd;

    if (size == 0)
        return 0;
    rnd = 0x9e3779b9u ^ (uint32_t)data[0] << 8 ^ (uint32_t)size;
    if (rnd == 0)
        rnd = 1;
    if (data[0] & 1)
        fuzz_round_trip(rnd, data + 1, size - 1);
    else
        fuzz_decode(rnd, data + 1, size - 1);
    return 0;
}
