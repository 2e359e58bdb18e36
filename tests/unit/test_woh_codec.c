/* SPDX-License-Identifier: MIT */
/* Unit tests for the WebSocket-over-HTTP event codec: event lines, the decoding of every event
 * type (content streamed, collected or skipped), bodies split anywhere, where a body may end,
 * every malformed input the decoder refuses, and encode-then-decode round trips. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gateway/util.h"
#include "gateway/woh_codec.h"

/* Criterion may run each test in a freshly started copy of the binary where, under PIE, pointers
 * computed in the parent are meaningless: parameters are indexes into file-scope tables. */
#define INDEX_PARAMS(suite, name, table)                                                           \
    ParameterizedTestParameters(suite, name)                                                       \
    {                                                                                              \
        static size_t idx[GW_ARRAY_LEN(table)];                                                    \
        for (size_t k = 0; k < GW_ARRAY_LEN(idx); k++)                                             \
            idx[k] = k;                                                                            \
        return cr_make_param_array(size_t, idx, GW_ARRAY_LEN(idx));                                \
    }

/* A string literal and its length without the NUL. */
#define L(s) (const uint8_t *)(s), sizeof(s) - 1

/* ---- event lines ---------------------------------------------------------------------------- */

/* woh_event_line into a buffer of '#': the line must be |want| and nothing past it written. */
static void line_is(enum woh_type type, size_t len, const char *want)
{
    char out[WOH_LINE_MAX + 8];
    size_t n;

    memset(out, '#', sizeof out);
    n = woh_event_line(out, type, len);
    cr_assert_eq(n, strlen(want), "%s %zx: %zu bytes for \"%s\"", woh_type_name(type), len, n,
                 want);
    cr_assert(memcmp(out, want, n) == 0, "%s %zx: \"%.*s\", want \"%s\"", woh_type_name(type), len,
              (int)n, out, want);
    cr_assert_leq(n, WOH_LINE_MAX);
    for (size_t i = n; i < sizeof out; i++)
        cr_assert_eq(out[i], '#', "byte %zu written past the line", i);
}

Test(woh_codec, line_each_type_empty)
{
    line_is(WOH_OPEN, 0, "OPEN\r\n");
    line_is(WOH_PING, 0, "PING\r\n");
    line_is(WOH_PONG, 0, "PONG\r\n");
    line_is(WOH_DISCONNECT, 0, "DISCONNECT\r\n");
    /* The types with content keep their size even when it is 0. */
    line_is(WOH_TEXT, 0, "TEXT 0\r\n");
    line_is(WOH_BINARY, 0, "BINARY 0\r\n");
    line_is(WOH_CLOSE, 0, "CLOSE 0\r\n");
}

Test(woh_codec, line_sizes_hex_upper_no_leading_zeros)
{
    line_is(WOH_TEXT, 1, "TEXT 1\r\n");
    line_is(WOH_TEXT, 0xb, "TEXT B\r\n");
    line_is(WOH_TEXT, 0xf, "TEXT F\r\n");
    line_is(WOH_TEXT, 0x10, "TEXT 10\r\n");
    line_is(WOH_BINARY, 0x100, "BINARY 100\r\n");
    line_is(WOH_BINARY, 0xabcdef, "BINARY ABCDEF\r\n");
    line_is(WOH_CLOSE, 2, "CLOSE 2\r\n");
    line_is(WOH_CLOSE, 125, "CLOSE 7D\r\n");
    /* Contentless types with content say its size too. */
    line_is(WOH_OPEN, 1, "OPEN 1\r\n");
    line_is(WOH_PING, 0x10, "PING 10\r\n");
    line_is(WOH_PONG, 0xb, "PONG B\r\n");
    line_is(WOH_DISCONNECT, 0x1000, "DISCONNECT 1000\r\n");
#if SIZE_MAX >= 0xffffffffffffffffu
    line_is(WOH_BINARY, (size_t)0x123456789abcdef0u, "BINARY 123456789ABCDEF0\r\n");
    line_is(WOH_BINARY, SIZE_MAX, "BINARY FFFFFFFFFFFFFFFF\r\n");
    /* The longest line there is. */
    line_is(WOH_DISCONNECT, SIZE_MAX, "DISCONNECT FFFFFFFFFFFFFFFF\r\n");
#endif
    line_is(WOH_TEXT, 0xffffffffu, "TEXT FFFFFFFF\r\n");
}

Test(woh_codec, type_names)
{
    cr_expect_str_eq(woh_type_name(WOH_OPEN), "OPEN");
    cr_expect_str_eq(woh_type_name(WOH_TEXT), "TEXT");
    cr_expect_str_eq(woh_type_name(WOH_BINARY), "BINARY");
    cr_expect_str_eq(woh_type_name(WOH_PING), "PING");
    cr_expect_str_eq(woh_type_name(WOH_PONG), "PONG");
    cr_expect_str_eq(woh_type_name(WOH_CLOSE), "CLOSE");
    cr_expect_str_eq(woh_type_name(WOH_DISCONNECT), "DISCONNECT");
    cr_expect_str_eq(woh_type_name((enum woh_type)(WOH_DISCONNECT + 1)), "?");
    cr_expect_str_eq(woh_type_name((enum woh_type)(-1)), "?");
}

/* ---- a recording consumer ------------------------------------------------------------------- */

/* What came out of a body, independent of how it was cut: the pieces of a message are joined
 * into one item, so two runs compare item by item. */
struct item {
    char kind; /* 'M' a TEXT/BINARY message, 'E' an event */
    enum woh_type type;
    size_t off, len; /* M: the content; E CLOSE: the reason; both in rec.bytes */
    unsigned code;   /* E CLOSE */
    unsigned pieces; /* M */
    size_t end;      /* body offset just past the item's last byte consumed */
};

struct rec {
    struct item it[64];
    size_t nit;
    uint8_t bytes[8192]; /* message content and close reasons, in order */
    size_t nbytes;
    int open;               /* a message is open */
    enum woh_in_result end; /* WOH_IN_NEED or WOH_IN_ERROR */
    const char *why;        /* the error's */
    size_t consumed;        /* body bytes used, the error's byte included */
    int done;               /* woh_in_done at the end */
};

static void keep(struct rec *r, const uint8_t *p, size_t n)
{
    cr_assert_leq(r->nbytes + n, sizeof r->bytes);
    if (n != 0)
        memcpy(r->bytes + r->nbytes, p, n);
    r->nbytes += n;
}

/* Checks one result |res| of a call that was given |p[0..n)| and used |used| of it. */
static void record(struct rec *r, enum woh_in_result res, const struct woh_in_event *ev,
                   const uint8_t *p, size_t n, size_t used)
{
    struct item *it;

    cr_assert_leq(used, n);
    r->consumed += used;
    switch (res) {
    case WOH_IN_NEED:
        cr_assert_eq(used, n, "NEED must use every byte given");
        r->end = res;
        break;
    case WOH_IN_ERROR:
        cr_assert_not_null(ev->why);
        r->end = res;
        r->why = ev->why;
        break;
    case WOH_IN_DATA:
        /* The decoder must move: a loop that stops when nothing was consumed (STYLE §9) would
         * otherwise lose the rest of the body. */
        cr_assert_gt(used, 0, "DATA at body offset %zu consumed nothing", r->consumed);
        cr_assert(ev->type == WOH_TEXT || ev->type == WOH_BINARY, "DATA of %d", ev->type);
        cr_assert_eq(ev->first, !r->open, "first=%d with a message %s", ev->first,
                     r->open ? "open" : "closed");
        cr_assert(ev->len != 0 || (ev->first && ev->fin), "an empty piece inside a message");
        cr_assert(ev->len == 0 || (ev->data >= p && ev->data + ev->len <= p + used),
                  "DATA is not a slice of the input used");
        if (ev->first) {
            cr_assert_lt(r->nit, GW_ARRAY_LEN(r->it));
            it = &r->it[r->nit++];
            *it = (struct item){.kind = 'M', .type = ev->type, .off = r->nbytes};
            r->open = 1;
        } else {
            it = &r->it[r->nit - 1];
            cr_assert_eq(it->type, ev->type, "the type changed inside a message");
        }
        keep(r, ev->data, ev->len);
        it->len += ev->len;
        it->pieces++;
        it->end = r->consumed;
        if (ev->fin)
            r->open = 0;
        break;
    case WOH_IN_EVENT:
        cr_assert_gt(used, 0, "EVENT at body offset %zu consumed nothing", r->consumed);
        cr_assert(!r->open, "an event inside a message");
        cr_assert(ev->type != WOH_TEXT && ev->type != WOH_BINARY, "EVENT of a %s",
                  woh_type_name(ev->type));
        cr_assert_lt(r->nit, GW_ARRAY_LEN(r->it));
        it = &r->it[r->nit++];
        *it = (struct item){.kind = 'E', .type = ev->type, .off = r->nbytes, .end = r->consumed};
        if (ev->type == WOH_CLOSE) {
            cr_assert_leq(ev->len, WOH_CLOSE_MAX - 2);
            it->code = ev->code;
            it->len = ev->len;
            keep(r, ev->data, ev->len);
        } else {
            cr_assert_eq(ev->len, 0, "%s with content", woh_type_name(ev->type));
            cr_assert_eq(ev->code, 0);
        }
        break;
    default:
        cr_assert_fail("result %d", res);
    }
}

/* Feeds one part of a body the way the glue does: calls until NEED or ERROR. Returns 0 after an
 * ERROR. */
static int feed(struct woh_in *d, const uint8_t *p, size_t n, struct rec *r)
{
    for (;;) {
        struct woh_in_event ev;
        size_t used = (size_t)-1;
        enum woh_in_result res;

        memset(&ev, 0x5a, sizeof ev);
        res = woh_in_next(d, p, n, &used, &ev);
        record(r, res, &ev, p, n, used);
        p += used;
        n -= used;
        if (res == WOH_IN_ERROR)
            return 0;
        if (res == WOH_IN_NEED)
            return 1;
    }
}

/* Decodes |p[0..n)| in chunks of |chunk| bytes (0: whole). */
static void run(const uint8_t *p, size_t n, size_t chunk, struct rec *r)
{
    struct woh_in d = {0};
    size_t off = 0;

    memset(r, 0, sizeof *r);
    if (chunk == 0)
        chunk = n ? n : 1;
    do {
        size_t k = n - off < chunk ? n - off : chunk;

        if (!feed(&d, p + off, k, r))
            break;
        off += k;
    } while (off < n);
    r->done = woh_in_done(&d);
}

/* Decodes |p[0..n)| as two parts cut at |cut|. */
static void run_cut(const uint8_t *p, size_t n, size_t cut, struct rec *r)
{
    struct woh_in d = {0};

    memset(r, 0, sizeof *r);
    if (feed(&d, p, cut, r))
        feed(&d, p + cut, n - cut, r);
    r->done = woh_in_done(&d);
}

static int item_bytes_are(const struct rec *r, size_t i, const void *want, size_t len)
{
    return r->it[i].len == len && memcmp(r->bytes + r->it[i].off, want, len) == 0;
}

/* Expects the body to decode to exactly one item and end where an event may end. */
static const struct item *one(const uint8_t *p, size_t n, struct rec *r)
{
    run(p, n, 0, r);
    cr_assert_eq(r->end, WOH_IN_NEED, "%.*s: %s", (int)n, (const char *)p, r->why ? r->why : "-");
    cr_assert_eq(r->nit, 1, "%.*s: %zu items", (int)n, (const char *)p, r->nit);
    cr_assert_eq(r->consumed, n);
    cr_assert(r->done, "%.*s: not done", (int)n, (const char *)p);
    cr_assert(!r->open);
    return &r->it[0];
}

/* ---- decoding each event -------------------------------------------------------------------- */

Test(woh_codec, in_contentless_events)
{
    static const struct {
        const char *line;
        enum woh_type type;
    } cases[] = {
        {"OPEN\r\n", WOH_OPEN},
        {"PING\r\n", WOH_PING},
        {"PONG\r\n", WOH_PONG},
        {"DISCONNECT\r\n", WOH_DISCONNECT},
    };
    struct rec r;

    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        const struct item *it = one((const uint8_t *)cases[i].line, strlen(cases[i].line), &r);

        cr_expect_eq(it->kind, 'E', "%s", cases[i].line);
        cr_expect_eq(it->type, cases[i].type, "%s", cases[i].line);
        cr_expect_eq(it->len, 0);
        cr_expect_eq(it->end, strlen(cases[i].line), "the event comes with its line");
    }
}

Test(woh_codec, in_text_and_binary)
{
    struct rec r;
    const struct item *it;

    it = one(L("TEXT 5\r\nhello\r\n"), &r);
    cr_expect(it->kind == 'M' && it->type == WOH_TEXT && it->pieces == 1);
    cr_expect(item_bytes_are(&r, 0, "hello", 5));
    /* Content is counted, not scanned: CR, LF and NUL inside it are data. */
    it = one(L("BINARY 6\r\n\r\n\0\xff\r\n\r\n"), &r);
    cr_expect(it->kind == 'M' && it->type == WOH_BINARY && it->pieces == 1);
    cr_expect(item_bytes_are(&r, 0, "\r\n\0\xff\r\n", 6));
    /* Lower-case hex, leading zeros and all 16 digits are taken. */
    it = one(L("TEXT b\r\nhello world\r\n"), &r);
    cr_expect(it->type == WOH_TEXT && item_bytes_are(&r, 0, "hello world", 11));
    it = one(L("TEXT 0000000000000003\r\nabc\r\n"), &r);
    cr_expect(it->type == WOH_TEXT && item_bytes_are(&r, 0, "abc", 3));
    it = one(L("BINARY 1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"), &r);
    cr_expect(item_bytes_are(&r, 0, "abcdefghijklmnopqrstuvwxyz", 26));
}

Test(woh_codec, in_message_pieces_first_fin)
{
    struct woh_in d = {0};
    struct woh_in_event ev;
    size_t used;

    cr_assert_eq(woh_in_next(&d, L("TEXT 5\r\n"), &used, &ev), WOH_IN_NEED);
    cr_assert_eq(used, 8);
    cr_assert(!woh_in_done(&d));
    cr_assert_eq(woh_in_next(&d, L("hel"), &used, &ev), WOH_IN_DATA);
    cr_expect(used == 3 && ev.len == 3 && memcmp(ev.data, "hel", 3) == 0);
    cr_expect(ev.type == WOH_TEXT && ev.first == 1 && ev.fin == 0);
    cr_assert_eq(woh_in_next(&d, L("l"), &used, &ev), WOH_IN_DATA);
    cr_expect(used == 1 && ev.len == 1 && ev.data[0] == 'l');
    cr_expect(ev.first == 0 && ev.fin == 0);
    cr_assert_eq(woh_in_next(&d, L("o\r\nPING\r\n"), &used, &ev), WOH_IN_DATA);
    cr_expect(used == 1 && ev.len == 1 && ev.data[0] == 'o');
    cr_expect(ev.first == 0 && ev.fin == 1);
    cr_assert(!woh_in_done(&d), "the CRLF is still to come");
    cr_assert_eq(woh_in_next(&d, L("\r\nPING\r\n"), &used, &ev), WOH_IN_EVENT);
    cr_expect(used == 8 && ev.type == WOH_PING);
    cr_assert(woh_in_done(&d));
}

Test(woh_codec, in_empty_messages)
{
    struct woh_in d = {0};
    struct woh_in_event ev;
    size_t used;
    struct rec r;
    const struct item *it;

    /* "TEXT\r\n": one piece of 0 bytes, first and fin, and nothing more to come. */
    cr_assert_eq(woh_in_next(&d, L("TEXT\r\nPING\r\n"), &used, &ev), WOH_IN_DATA);
    cr_expect(used == 6 && ev.type == WOH_TEXT && ev.len == 0 && ev.first && ev.fin);
    cr_expect(woh_in_done(&d));
    cr_assert_eq(woh_in_next(&d, L("PING\r\n"), &used, &ev), WOH_IN_EVENT);
    cr_expect_eq(ev.type, WOH_PING);
    /* "TEXT 0\r\n\r\n": the same piece, then the (empty) content's CRLF. */
    memset(&d, 0, sizeof d);
    cr_assert_eq(woh_in_next(&d, L("TEXT 0\r\n\r\n"), &used, &ev), WOH_IN_DATA);
    cr_expect(used == 8 && ev.type == WOH_TEXT && ev.len == 0 && ev.first && ev.fin);
    cr_expect(!woh_in_done(&d));
    cr_assert_eq(woh_in_next(&d, L("\r\n"), &used, &ev), WOH_IN_NEED);
    cr_expect_eq(used, 2);
    cr_expect(woh_in_done(&d));

    it = one(L("BINARY\r\n"), &r);
    cr_expect(it->kind == 'M' && it->type == WOH_BINARY && it->len == 0 && it->pieces == 1);
    it = one(L("BINARY 0\r\n\r\n"), &r);
    cr_expect(it->kind == 'M' && it->type == WOH_BINARY && it->len == 0 && it->pieces == 1);
    cr_expect_eq(it->end, 10);
    it = one(L("TEXT 00\r\n\r\n"), &r);
    cr_expect(it->kind == 'M' && it->type == WOH_TEXT && it->len == 0 && it->pieces == 1);
}

Test(woh_codec, in_close)
{
    struct rec r;
    const struct item *it;

    it = one(L("CLOSE 5\r\n\003\350bye\r\n"), &r); /* 03 E8: 1000 */
    cr_expect(it->kind == 'E' && it->type == WOH_CLOSE && it->code == 1000);
    cr_expect(item_bytes_are(&r, 0, "bye", 3));
    it = one(L("CLOSE 2\r\n\x0f\xa0\r\n"), &r);
    cr_expect(it->type == WOH_CLOSE && it->code == 4000 && it->len == 0);
    /* No content or empty content: no status (1005). */
    it = one(L("CLOSE\r\n"), &r);
    cr_expect(it->type == WOH_CLOSE && it->code == 1005 && it->len == 0);
    cr_expect_eq(it->end, 7);
    it = one(L("CLOSE 0\r\n\r\n"), &r);
    cr_expect(it->type == WOH_CLOSE && it->code == 1005 && it->len == 0);
    /* The reason may hold CRLF. */
    it = one(L("CLOSE 6\r\n\x03\xe9\r\n\r\n\r\n"), &r);
    cr_expect(it->code == 1001 && item_bytes_are(&r, 0, "\r\n\r\n", 4));
}

Test(woh_codec, in_close_largest)
{
    uint8_t body[200];
    size_t n = 0;
    struct rec r;
    const struct item *it;

    memcpy(body, "CLOSE 7D\r\n\x03\xea", 12);
    n = 12;
    for (size_t i = 0; i < WOH_CLOSE_MAX - 2; i++)
        body[n++] = (uint8_t)('a' + i % 26);
    memcpy(body + n, "\r\n", 2);
    n += 2;
    for (size_t chunk = 0; chunk < 20; chunk++) {
        run(body, n, chunk, &r);
        cr_assert_eq(r.end, WOH_IN_NEED, "chunk %zu: %s", chunk, r.why ? r.why : "-");
        cr_assert_eq(r.nit, 1, "chunk %zu", chunk);
        it = &r.it[0];
        cr_expect(it->type == WOH_CLOSE && it->code == 1002, "chunk %zu", chunk);
        cr_expect(item_bytes_are(&r, 0, body + 12, WOH_CLOSE_MAX - 2), "chunk %zu", chunk);
        cr_expect(r.done);
    }
}

Test(woh_codec, in_contentless_with_content_skipped)
{
    static const struct {
        const char *body;
        size_t len;
        enum woh_type type;
    } cases[] = {
        {"OPEN 0\r\n\r\n", 10, WOH_OPEN},
        {"OPEN 3\r\nabc\r\n", 13, WOH_OPEN},
        {"PING 4\r\nPING\r\n", 14, WOH_PING},
        {"PONG 10\r\n0123456789abcdef\r\n", 27, WOH_PONG},
        {"DISCONNECT 2\r\n\r\n\r\n", 18, WOH_DISCONNECT},
    };
    struct rec r;

    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        for (size_t chunk = 0; chunk < 6; chunk++) {
            const struct item *it;

            run((const uint8_t *)cases[i].body, cases[i].len, chunk, &r);
            cr_assert_eq(r.end, WOH_IN_NEED, "case %zu chunk %zu: %s", i, chunk,
                         r.why ? r.why : "-");
            cr_assert_eq(r.nit, 1, "case %zu chunk %zu", i, chunk);
            it = &r.it[0];
            cr_expect(it->kind == 'E' && it->type == cases[i].type && it->len == 0,
                      "case %zu chunk %zu", i, chunk);
            cr_expect(r.done && r.consumed == cases[i].len, "case %zu chunk %zu", i, chunk);
        }
    }
}

/* ---- bodies of several events, split anywhere ----------------------------------------------- */

/* Every kind of event; the offsets where each ends are where a body may end. */
static const char multi[] = "OPEN\r\n"
                            "TEXT 5\r\nhello\r\n"
                            "PING\r\n"
                            "BINARY 6\r\n\r\n\0\xff\r\n\r\n"
                            "TEXT\r\n"
                            "PONG 3\r\nabc\r\n"
                            "TEXT 0\r\n\r\n"
                            "OPEN 0\r\n\r\n"
                            "TEXT b\r\nhello world\r\n"
                            "BINARY 14\r\n0123456789abcdef0123\r\n"
                            "CLOSE\r\n"
                            "CLOSE 0\r\n\r\n"
                            "CLOSE 7\r\n\003\350bye\r\n\r\n"
                            "DISCONNECT\r\n";
static const size_t multi_ends[] = {6, 21, 27, 45, 51, 64, 74, 84, 105, 138, 145, 156, 174, 186};

static void check_multi(const struct rec *r, const char *how, size_t k)
{
    static const struct {
        char kind;
        enum woh_type type;
        const char *bytes;
        size_t len;
        unsigned code;
    } want[] = {
        {'E', WOH_OPEN, "", 0, 0},
        {'M', WOH_TEXT, "hello", 5, 0},
        {'E', WOH_PING, "", 0, 0},
        {'M', WOH_BINARY, "\r\n\0\xff\r\n", 6, 0},
        {'M', WOH_TEXT, "", 0, 0},
        {'E', WOH_PONG, "", 0, 0},
        {'M', WOH_TEXT, "", 0, 0},
        {'E', WOH_OPEN, "", 0, 0},
        {'M', WOH_TEXT, "hello world", 11, 0},
        {'M', WOH_BINARY, "0123456789abcdef0123", 20, 0},
        {'E', WOH_CLOSE, "", 0, 1005},
        {'E', WOH_CLOSE, "", 0, 1005},
        {'E', WOH_CLOSE, "bye\r\n", 5, 1000},
        {'E', WOH_DISCONNECT, "", 0, 0},
    };
    size_t total = 0;

    cr_assert_eq(r->end, WOH_IN_NEED, "%s %zu: %s", how, k, r->why ? r->why : "-");
    cr_assert_eq(r->nit, GW_ARRAY_LEN(want), "%s %zu: %zu items", how, k, r->nit);
    for (size_t i = 0; i < GW_ARRAY_LEN(want); i++) {
        const struct item *it = &r->it[i];

        cr_assert_eq(it->kind, want[i].kind, "%s %zu: item %zu", how, k, i);
        cr_assert_eq(it->type, want[i].type, "%s %zu: item %zu", how, k, i);
        cr_assert(item_bytes_are(r, i, want[i].bytes, want[i].len), "%s %zu: item %zu", how, k, i);
        cr_assert_eq(it->code, want[i].code, "%s %zu: item %zu", how, k, i);
        total += want[i].len;
    }
    /* The content, pieces joined, is the same however the body was cut. */
    cr_assert_eq(r->nbytes, total, "%s %zu", how, k);
    cr_assert_eq(r->consumed, sizeof multi - 1);
    cr_assert(r->done, "%s %zu", how, k);
}

Test(woh_codec, in_multi_whole)
{
    struct rec r;

    cr_assert_eq(multi_ends[GW_ARRAY_LEN(multi_ends) - 1], sizeof multi - 1);
    run(L(multi), 0, &r);
    check_multi(&r, "whole", 0);
    /* Whole, every message is one piece. */
    for (size_t i = 0; i < r.nit; i++)
        if (r.it[i].kind == 'M')
            cr_expect_eq(r.it[i].pieces, 1, "item %zu", i);
}

Test(woh_codec, in_multi_every_two_part_cut)
{
    struct rec r;

    for (size_t cut = 0; cut <= sizeof multi - 1; cut++) {
        run_cut(L(multi), cut, &r);
        check_multi(&r, "cut", cut);
    }
}

Test(woh_codec, in_multi_every_chunk_size)
{
    struct rec r;

    for (size_t chunk = 1; chunk <= sizeof multi - 1; chunk++) {
        run(L(multi), chunk, &r);
        check_multi(&r, "chunk", chunk);
    }
}

Test(woh_codec, in_multi_byte_by_byte_pieces)
{
    struct rec r;

    run(L(multi), 1, &r);
    check_multi(&r, "chunk", 1);
    /* One piece per byte, an empty message being one piece. */
    cr_expect_eq(r.it[1].pieces, 5);
    cr_expect_eq(r.it[3].pieces, 6);
    cr_expect_eq(r.it[4].pieces, 1);
    cr_expect_eq(r.it[6].pieces, 1);
    cr_expect_eq(r.it[9].pieces, 20);
}

/* woh_in_done, byte by byte: true exactly where an event ended. */
Test(woh_codec, in_done_only_between_events)
{
    struct woh_in d = {0};
    struct rec r;
    size_t next_end = 0;

    memset(&r, 0, sizeof r);
    cr_assert(woh_in_done(&d), "an empty body is done");
    for (size_t i = 0; i < sizeof multi - 1; i++) {
        int at_end;

        cr_assert(feed(&d, (const uint8_t *)multi + i, 1, &r));
        at_end = next_end < GW_ARRAY_LEN(multi_ends) && multi_ends[next_end] == i + 1;
        cr_assert_eq(woh_in_done(&d), at_end, "after byte %zu", i);
        if (at_end)
            next_end++;
    }
    cr_assert_eq(next_end, GW_ARRAY_LEN(multi_ends));
    r.done = woh_in_done(&d);
    check_multi(&r, "byte", 1);
}

/* ---- errors --------------------------------------------------------------------------------- */

struct bad_case {
    const char *name;
    const char *body;
    size_t len;
    const char *why;
    size_t at;    /* body bytes consumed, the one in error included */
    size_t items; /* events before the error */
};

#define B(s) (s), sizeof(s) - 1

static const struct bad_case bad_cases[] = {
    {"unknown name", B("FOO\r\n"), "unknown event", 5, 0},
    {"lower-case name", B("text 1\r\na\r\n"), "unknown event", 8, 0},
    {"mixed-case name", B("Open\r\n"), "unknown event", 6, 0},
    {"name prefix", B("OPE\r\n"), "unknown event", 5, 0},
    {"name too long", B("OPENX\r\n"), "unknown event", 7, 0},
    {"leading space", B(" OPEN\r\n"), "unknown event", 7, 0},
    {"tab for space", B("TEXT\t1\r\n"), "unknown event", 8, 0},
    {"empty line", B("\r\n"), "unknown event", 2, 0},
    {"NUL in name", B("OP\0EN\r\n"), "unknown event", 7, 0},
    {"after an event", B("OPEN\r\nPUNG\r\n"), "unknown event", 12, 1},
    {"bad hex", B("TEXT 1g\r\n"), "bad event size", 9, 0},
    {"hex prefix", B("TEXT 0x1\r\n"), "bad event size", 10, 0},
    {"sign", B("TEXT -1\r\n"), "bad event size", 9, 0},
    {"empty size", B("TEXT \r\n"), "bad event size", 7, 0},
    {"empty size, contentless", B("PING \r\n"), "bad event size", 7, 0},
    {"two spaces", B("TEXT  1\r\n"), "bad event size", 9, 0},
    {"trailing space", B("TEXT 1 \r\n"), "bad event size", 9, 0},
    {"17 hex digits", B("TEXT 00000000000000001\r\n"), "bad event size", 24, 0},
    {"LF without CR", B("OPEN\n"), "event line not ended by CRLF", 5, 0},
    {"bare LF", B("\n"), "event line not ended by CRLF", 1, 0},
    {"LF without CR after a message", B("TEXT 1\r\na\r\nPING\n"), "event line not ended by CRLF",
     16, 1},
    {"content then no CRLF", B("TEXT 1\r\nab\r\n"), "event content not followed by CRLF", 10, 1},
    {"content then CR only", B("TEXT 1\r\na\rX"), "event content not followed by CRLF", 11, 1},
    {"content then LF", B("BINARY 1\r\na\n"), "event content not followed by CRLF", 12, 1},
    {"empty content then no CRLF", B("TEXT 0\r\nOPEN\r\n"), "event content not followed by CRLF", 9,
     1},
    {"skipped content then no CRLF", B("PING 1\r\nxy"), "event content not followed by CRLF", 10,
     1},
    {"close content then no CRLF", B("CLOSE 2\r\n\x03\xe8X"), "event content not followed by CRLF",
     12, 1},
    {"CLOSE of 1 byte", B("CLOSE 1\r\n\x03\r\n"), "bad CLOSE size", 9, 0},
    {"CLOSE of 126 bytes", B("CLOSE 7E\r\n"), "bad CLOSE size", 10, 0},
    {"CLOSE of 2^64-1 bytes", B("CLOSE FFFFFFFFFFFFFFFF\r\n"), "bad CLOSE size", 24, 0},
    /* The line has room for WOH_LINE_MAX bytes, CRLF included: the 32nd byte without LF is
     * refused; a 32-byte line is parsed (and here refused for its size). */
    {"line over WOH_LINE_MAX", B("DISCONNECT 000000000000000000000\r\n"), "event line too long", 32,
     0},
    {"line of WOH_LINE_MAX", B("DISCONNECT 0000000000000000000\r\n"), "bad event size", 32, 0},
    {"garbage without LF", B("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "event line too long", 32,
     0},
};
INDEX_PARAMS(woh_codec, in_bad_bodies, bad_cases)

ParameterizedTest(size_t *i, woh_codec, in_bad_bodies)
{
    const struct bad_case *c = &bad_cases[*i];
    struct rec r;

    /* The same error at the same byte, fed whole, byte by byte or in pairs. */
    for (size_t chunk = 0; chunk < 3; chunk++) {
        run((const uint8_t *)c->body, c->len, chunk, &r);
        cr_assert_eq(r.end, WOH_IN_ERROR, "%s, chunk %zu", c->name, chunk);
        cr_expect_str_eq(r.why, c->why, "%s, chunk %zu", c->name, chunk);
        cr_expect_eq(r.consumed, c->at, "%s, chunk %zu", c->name, chunk);
        cr_expect_eq(r.nit, c->items, "%s, chunk %zu", c->name, chunk);
    }
}

/* Just under the limits: taken. */
Test(woh_codec, in_limits_taken)
{
    struct woh_in d = {0};
    struct woh_in_event ev;
    size_t used;

    /* 31 bytes without LF: still a line in the making. */
    cr_assert_eq(woh_in_next(&d, L("DISCONNECT 00000000000000000000"), &used, &ev), WOH_IN_NEED);
    cr_expect_eq(used, 31);
    /* The largest size there is, streamed: the decoder only counts. */
    memset(&d, 0, sizeof d);
    cr_assert_eq(woh_in_next(&d, L("BINARY FFFFFFFFFFFFFFFF\r\nabc"), &used, &ev), WOH_IN_DATA);
    cr_expect(used == 28 && ev.len == 3 && ev.first && !ev.fin);
    cr_expect_eq(d.left, UINT64_MAX - 3);
}

/* ---- round trips ---------------------------------------------------------------------------- */

static uint8_t rt_body[16384];
static size_t rt_len;

static void rt_add(const void *p, size_t n)
{
    cr_assert_leq(rt_len + n, sizeof rt_body);
    if (n > 0) /* memcpy's pointers must be valid even for 0 bytes (UBSan) */
        memcpy(rt_body + rt_len, p, n);
    rt_len += n;
}

/* Appends the event |type| with |content[0..n)| as the gateway writes it. */
static void rt_event(enum woh_type type, const void *content, size_t n)
{
    char line[WOH_LINE_MAX];

    rt_add(line, woh_event_line(line, type, n));
    if (n != 0 || type == WOH_TEXT || type == WOH_BINARY || type == WOH_CLOSE) {
        rt_add(content, n);
        rt_add(WOH_EVENT_END, 2);
    }
}

Test(woh_codec, round_trip)
{
    static uint8_t big[0x1234];
    static const size_t sizes[] = {0, 1, 0xb, 0x10, 0xff, 0x100, 0x1234};
    struct rec r;
    size_t nmsg = 0, content = 0;

    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + (i >> 8));
    big[0] = '\r';
    big[1] = '\n';
    rt_len = 0;
    rt_event(WOH_OPEN, NULL, 0);
    for (size_t s = 0; s < GW_ARRAY_LEN(sizes); s++) {
        rt_event(s & 1 ? WOH_BINARY : WOH_TEXT, big, sizes[s]);
        nmsg++;
        content += sizes[s];
    }
    rt_event(WOH_PING, big, 5); /* content the receiver ignores */
    rt_event(WOH_PONG, NULL, 0);
    rt_event(WOH_CLOSE, "\003\350done", 6);
    rt_event(WOH_CLOSE, NULL, 0);

    for (size_t chunk = 0; chunk < 40; chunk += chunk < 4 ? 1 : 7) {
        size_t m = 0, off = 0;

        run(rt_body, rt_len, chunk, &r);
        cr_assert_eq(r.end, WOH_IN_NEED, "chunk %zu: %s", chunk, r.why ? r.why : "-");
        cr_assert(r.done && r.consumed == rt_len);
        cr_assert_eq(r.nit, 1 + nmsg + 4, "chunk %zu", chunk);
        cr_expect(r.it[0].kind == 'E' && r.it[0].type == WOH_OPEN);
        for (size_t s = 0; s < GW_ARRAY_LEN(sizes); s++) {
            const struct item *it = &r.it[1 + s];

            cr_assert_eq(it->kind, 'M');
            cr_expect_eq(it->type, s & 1 ? WOH_BINARY : WOH_TEXT);
            cr_assert(item_bytes_are(&r, 1 + s, big, sizes[s]), "chunk %zu size %zx", chunk,
                      sizes[s]);
            m++;
        }
        off = 1 + m;
        cr_expect(r.it[off].kind == 'E' && r.it[off].type == WOH_PING && r.it[off].len == 0);
        cr_expect(r.it[off + 1].type == WOH_PONG);
        cr_expect(r.it[off + 2].type == WOH_CLOSE && r.it[off + 2].code == 1000);
        cr_expect(item_bytes_are(&r, off + 2, "done", 4));
        cr_expect(r.it[off + 3].type == WOH_CLOSE && r.it[off + 3].code == 1005);
        cr_expect_eq(r.nbytes, content + 4);
    }
}
