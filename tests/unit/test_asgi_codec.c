/* SPDX-License-Identifier: MIT */
/* Unit tests for the ASGI codec: round trips of every frame type, every decoder and encoder
 * error, the limits (str16, counts, max_frame, u24), and the golden vectors of
 * tests/vectors/asgi/ shared with the Python adapter. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/asgi/asgi_codec.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Criterion may run each test in a freshly started copy of the binary where, under PIE, pointers
 * computed in the parent are meaningless: parameters are indexes into file-scope tables. */
#define INDEX_PARAMS(suite, name, table)                                                           \
    ParameterizedTestParameters(suite, name)                                                       \
    {                                                                                              \
        static size_t idx[ARRAY_LEN(table)];                                                       \
        for (size_t k = 0; k < ARRAY_LEN(idx); k++)                                                \
            idx[k] = k;                                                                            \
        return cr_make_param_array(size_t, idx, ARRAY_LEN(idx));                                   \
    }

/* A string from a literal (length without the NUL), a header from two. */
#define S(lit)                                                                                     \
    {                                                                                              \
        (lit), sizeof(lit) - 1                                                                     \
    }
#define H(n, v)                                                                                    \
    {                                                                                              \
        S(n), S(v)                                                                                 \
    }

#define MAX_HEADERS 256
#define MAX_SUBS 64
#define CANARY 0xA5
/* The largest frame there is, plus room to see a write past the end. */
#define BIG_FRAME ASGI_FRAME_MAX_BYTES

static uint8_t buf[BIG_FRAME + 64];
static uint8_t buf2[BIG_FRAME + 64];
static struct asgi_header dec_headers[MAX_HEADERS];
static struct asgi_str dec_subs[MAX_SUBS];
/* Filler for strings up to 64 KiB + 1. */
static char big[ASGI_STR16_MAX + 2];

/* One frame of any type: a header and the payload struct its type decodes into. */
struct frame {
    struct asgi_frame_header h;
    union {
        struct asgi_hello hello;
        struct asgi_http_request req;
        struct asgi_ws_connect wsc;
        struct asgi_http_response resp;
        struct asgi_trailers trailers;
        struct asgi_pathsend pathsend;
        struct asgi_close close;
        struct asgi_ws_accept accept;
        struct asgi_credit credit;
        struct asgi_ping ping;
        struct asgi_reset reset;
        struct asgi_goaway goaway;
        struct asgi_str raw;
    } u;
};

static int is_raw(uint8_t type)
{
    return type == ASGI_DATA || type == ASGI_WS_MESSAGE || type > ASGI_TYPE_LAST;
}

/* Decodes |p[0..len)| as the payload of |f->h.type| into |f->u|. */
static int decode_payload(struct frame *f, const uint8_t *p, size_t len, size_t max_headers,
                          size_t max_subs)
{
    switch (f->h.type) {
    case ASGI_HELLO:
        return asgi_decode_hello(p, len, &f->u.hello);
    case ASGI_HTTP_REQUEST:
        return asgi_decode_http_request(p, len, &f->u.req, dec_headers, max_headers, 0);
    case ASGI_HTTP_RESPONSE:
        return asgi_decode_http_response(p, len, &f->u.resp, dec_headers, max_headers);
    case ASGI_TRAILERS:
        return asgi_decode_trailers(p, len, &f->u.trailers, dec_headers, max_headers);
    case ASGI_PATHSEND:
        return asgi_decode_pathsend(p, len, &f->u.pathsend);
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        return asgi_decode_close(p, len, &f->u.close);
    case ASGI_WS_CONNECT:
        return asgi_decode_ws_connect(p, len, &f->u.wsc, dec_headers, max_headers, dec_subs,
                                      max_subs, 0);
    case ASGI_WS_ACCEPT:
        return asgi_decode_ws_accept(p, len, &f->u.accept, dec_headers, max_headers);
    case ASGI_CREDIT:
        return asgi_decode_credit(p, len, &f->u.credit);
    case ASGI_PING:
        return asgi_decode_ping(p, len, &f->u.ping);
    case ASGI_RESET:
        return asgi_decode_reset(p, len, &f->u.reset);
    case ASGI_GOAWAY:
        return asgi_decode_goaway(p, len, &f->u.goaway);
    default: /* DATA, WS_MESSAGE, unknown */
        return asgi_decode_raw(p, len, &f->u.raw);
    }
}

/* Encodes |f| (its header's length is ignored) into |out[0..cap)|. */
static int encode_frame(uint8_t *out, size_t cap, size_t max_frame, const struct frame *f)
{
    uint8_t fl = f->h.flags;
    uint32_t st = f->h.stream;

    switch (f->h.type) {
    case ASGI_HELLO:
        return asgi_encode_hello(out, cap, max_frame, fl, st, &f->u.hello);
    case ASGI_HTTP_REQUEST:
        return asgi_encode_http_request(out, cap, max_frame, fl, st, &f->u.req);
    case ASGI_HTTP_RESPONSE:
        return asgi_encode_http_response(out, cap, max_frame, fl, st, &f->u.resp);
    case ASGI_TRAILERS:
        return asgi_encode_trailers(out, cap, max_frame, fl, st, &f->u.trailers);
    case ASGI_PATHSEND:
        return asgi_encode_pathsend(out, cap, max_frame, fl, st, &f->u.pathsend);
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        return asgi_encode_close(out, cap, max_frame, f->h.type, fl, st, &f->u.close);
    case ASGI_WS_CONNECT:
        return asgi_encode_ws_connect(out, cap, max_frame, fl, st, &f->u.wsc);
    case ASGI_WS_ACCEPT:
        return asgi_encode_ws_accept(out, cap, max_frame, fl, st, &f->u.accept);
    case ASGI_CREDIT:
        return asgi_encode_credit(out, cap, max_frame, fl, st, &f->u.credit);
    case ASGI_PING:
        return asgi_encode_ping(out, cap, max_frame, fl, st, &f->u.ping);
    case ASGI_RESET:
        return asgi_encode_reset(out, cap, max_frame, fl, st, &f->u.reset);
    case ASGI_GOAWAY:
        return asgi_encode_goaway(out, cap, max_frame, fl, st, &f->u.goaway);
    default:
        return asgi_encode_raw(out, cap, max_frame, f->h.type, fl, st, &f->u.raw);
    }
}

static int str_eq(const struct asgi_str *a, const struct asgi_str *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

/* Names the first field where the lists differ, or returns NULL. */
static const char *headers_diff(const struct asgi_header *a, size_t na, const struct asgi_header *b,
                                size_t nb)
{
    if (na != nb)
        return "header count";
    for (size_t i = 0; i < na; i++)
        if (!str_eq(&a[i].name, &b[i].name) || !str_eq(&a[i].value, &b[i].value))
            return "a header";
    return NULL;
}

static const char *scope_diff(const struct asgi_http_request *a, const struct asgi_http_request *b)
{
    static const struct {
        size_t off;
        const char *name;
    } strs[] = {
        {offsetof(struct asgi_http_request, http_version), "http_version"},
        {offsetof(struct asgi_http_request, method), "method"},
        {offsetof(struct asgi_http_request, scheme), "scheme"},
        {offsetof(struct asgi_http_request, path), "path"},
        {offsetof(struct asgi_http_request, raw_path), "raw_path"},
        {offsetof(struct asgi_http_request, query_string), "query_string"},
        {offsetof(struct asgi_http_request, root_path), "root_path"},
        {offsetof(struct asgi_http_request, client_host), "client_host"},
        {offsetof(struct asgi_http_request, server_host), "server_host"},
    };

    for (size_t i = 0; i < ARRAY_LEN(strs); i++)
        if (!str_eq((const struct asgi_str *)(const void *)((const char *)a + strs[i].off),
                    (const struct asgi_str *)(const void *)((const char *)b + strs[i].off)))
            return strs[i].name;
    if (a->client_port != b->client_port)
        return "client_port";
    if (a->server_port != b->server_port)
        return "server_port";
    return headers_diff(a->headers, a->n_headers, b->headers, b->n_headers);
}

static const char *hello_diff(const struct asgi_hello *a, const struct asgi_hello *b)
{
    if (a->version != b->version)
        return "version";
    if (a->max_frame != b->max_frame)
        return "max_frame";
    if (a->max_streams != b->max_streams)
        return "max_streams";
    if (a->initial_credit != b->initial_credit)
        return "initial_credit";
    return a->capabilities != b->capabilities ? "capabilities" : NULL;
}

/* Names the first field where |a| and |b| differ (header length aside), or returns NULL. */
static const char *frame_diff(const struct frame *a, const struct frame *b)
{
    if (a->h.type != b->h.type)
        return "type";
    if (a->h.flags != b->h.flags)
        return "flags";
    if (a->h.stream != b->h.stream)
        return "stream";
    switch (a->h.type) {
    case ASGI_HELLO:
        return hello_diff(&a->u.hello, &b->u.hello);
    case ASGI_HTTP_REQUEST:
        return scope_diff(&a->u.req, &b->u.req);
    case ASGI_HTTP_RESPONSE:
        if (a->u.resp.status != b->u.resp.status)
            return "status";
        return headers_diff(a->u.resp.headers, a->u.resp.n_headers, b->u.resp.headers,
                            b->u.resp.n_headers);
    case ASGI_TRAILERS:
        return headers_diff(a->u.trailers.headers, a->u.trailers.n_headers, b->u.trailers.headers,
                            b->u.trailers.n_headers);
    case ASGI_PATHSEND:
        return str_eq(&a->u.pathsend.path, &b->u.pathsend.path) ? NULL : "path";
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        if (a->u.close.code != b->u.close.code)
            return "code";
        return str_eq(&a->u.close.reason, &b->u.close.reason) ? NULL : "reason";
    case ASGI_WS_CONNECT: {
        const char *d = scope_diff(&a->u.wsc.scope, &b->u.wsc.scope);

        if (d != NULL)
            return d;
        if (a->u.wsc.n_subprotocols != b->u.wsc.n_subprotocols)
            return "subprotocol count";
        for (size_t i = 0; i < a->u.wsc.n_subprotocols; i++)
            if (!str_eq(&a->u.wsc.subprotocols[i], &b->u.wsc.subprotocols[i]))
                return "a subprotocol";
        return NULL;
    }
    case ASGI_WS_ACCEPT:
        if (!str_eq(&a->u.accept.subprotocol, &b->u.accept.subprotocol))
            return "subprotocol";
        return headers_diff(a->u.accept.headers, a->u.accept.n_headers, b->u.accept.headers,
                            b->u.accept.n_headers);
    case ASGI_CREDIT:
        return a->u.credit.increment != b->u.credit.increment ? "increment" : NULL;
    case ASGI_PING:
        return memcmp(a->u.ping.opaque, b->u.ping.opaque, ASGI_PING_LEN) != 0 ? "ping" : NULL;
    case ASGI_RESET:
        return a->u.reset.error != b->u.reset.error ? "error" : NULL;
    case ASGI_GOAWAY:
        if (a->u.goaway.last_stream != b->u.goaway.last_stream)
            return "last_stream";
        if (a->u.goaway.error != b->u.goaway.error)
            return "error";
        return str_eq(&a->u.goaway.debug, &b->u.goaway.debug) ? NULL : "debug";
    default:
        return str_eq(&a->u.raw, &b->u.raw) ? NULL : "data";
    }
}

/* The header list and subprotocol list of |f| (NULL and 0 for types without them). */
static size_t frame_headers(const struct frame *f, const struct asgi_header **hs)
{
    switch (f->h.type) {
    case ASGI_HTTP_REQUEST:
        *hs = f->u.req.headers;
        return f->u.req.n_headers;
    case ASGI_WS_CONNECT:
        *hs = f->u.wsc.scope.headers;
        return f->u.wsc.scope.n_headers;
    case ASGI_HTTP_RESPONSE:
        *hs = f->u.resp.headers;
        return f->u.resp.n_headers;
    case ASGI_TRAILERS:
        *hs = f->u.trailers.headers;
        return f->u.trailers.n_headers;
    case ASGI_WS_ACCEPT:
        *hs = f->u.accept.headers;
        return f->u.accept.n_headers;
    default:
        *hs = NULL;
        return 0;
    }
}

/* First offset where |a| and |b| differ, or |len| when they do not. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t len)
{
    size_t i = 0;

    while (i < len && a[i] == b[i])
        i++;
    return i;
}

/* ---- the frames every generic test runs over ------------------------------------------------ */

static const struct asgi_header hs_request[] = {
    H("host", "example.com"),
    H("accept", "*/*"),
    H("cookie", "a=1"),
    H("cookie", "b=2"),
    H("content-type", "application/x-www-form-urlencoded"),
};
static const struct asgi_header hs_binary[] = {
    H("x-bin", "\0\x01\x80\xff\r\n"),
    H("", ""),
    H("x-caf\xc3\xa9", "\xe9t\xe9"),
};
static const struct asgi_header hs_response[] = {
    H("Content-Type", "text/plain"),
    H("Set-Cookie", "a=1"),
    H("Set-Cookie", "b=2"),
};
static const struct asgi_header hs_one[] = {H("x-server", "gatehouse")};
static const struct asgi_str subs3[] = {S("chat"), S("superchat"), S("")};

#define SCOPE_FULL                                                                                 \
    S("1.1"), S("POST"), S("https"), S("/app/caf\xc3\xa9"), S("/app/caf%C3%A9"), S("q=1&r=%FF"),   \
        S("/app"), S("203.0.113.7"), 54321, S("example.com"), 443

struct rt_case {
    const char *name;
    struct frame f;
};

/* clang-format off */
static const struct rt_case rt_cases[] = {
    {"hello_gateway", {{0, ASGI_HELLO, 0, 0}, .u.hello = {1, 65536, 0, 65536, 7}}},
    {"hello_ack_extremes", {{0, ASGI_HELLO, ASGI_F_ACK, 0},
        .u.hello = {UINT16_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX}}},
    {"http_request_full", {{0, ASGI_HTTP_REQUEST, 0, 1},
        .u.req = {SCOPE_FULL, hs_request, ARRAY_LEN(hs_request), {0}}}},
    {"http_request_empty", {{0, ASGI_HTTP_REQUEST, ASGI_F_END, 2},
        .u.req = {{0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, 0, {0}, 0, NULL, 0, {0}}}},
    {"http_request_binary", {{0, ASGI_HTTP_REQUEST, ASGI_F_END, ASGI_STREAM_MAX},
        .u.req = {S("2"), S("GET"), S("http"), S("/\0x"), S("/%00x"), S("\xff"), S(""), S("::1"),
                  UINT16_MAX, S(""), 0, hs_binary, ARRAY_LEN(hs_binary), {0}}}},
    {"ws_connect", {{0, ASGI_WS_CONNECT, 0, 13},
        .u.wsc = {{S("1.1"), S(""), S("wss"), S("/ws"), S("/ws"), S("room=1"), S(""),
                   S("198.51.100.2"), 40000, S("example.com"), 443, hs_one, 1, {0}},
                  subs3, ARRAY_LEN(subs3)}}},
    {"ws_connect_bare", {{0, ASGI_WS_CONNECT, 0, 15},
        .u.wsc = {{S("2"), S(""), S("ws"), S("/"), S("/"), S(""), S(""), S(""), 0, S(""), 0,
                   NULL, 0, {0}}, NULL, 0}}},
    {"data", {{0, ASGI_DATA, 0, 3}, .u.raw = S("name=gate\0house\xff&x=1")}},
    {"data_end_empty", {{0, ASGI_DATA, ASGI_F_END, 3}, .u.raw = {NULL, 0}}},
    {"http_response", {{0, ASGI_HTTP_RESPONSE, ASGI_F_MORE, 1},
        .u.resp = {200, hs_response, ARRAY_LEN(hs_response)}}},
    {"http_response_204_end", {{0, ASGI_HTTP_RESPONSE, ASGI_F_END, 1}, .u.resp = {204, NULL, 0}}},
    {"trailers_more", {{0, ASGI_TRAILERS, ASGI_F_MORE, 7},
        .u.trailers = {hs_binary, ARRAY_LEN(hs_binary)}}},
    {"trailers_end_empty", {{0, ASGI_TRAILERS, ASGI_F_END, 7}, .u.trailers = {NULL, 0}}},
    {"pathsend", {{0, ASGI_PATHSEND, ASGI_F_END, 9}, .u.pathsend = {S("/srv/files/a b.bin")}}},
    {"pathsend_empty", {{0, ASGI_PATHSEND, ASGI_F_END, 9}, .u.pathsend = {S("")}}},
    {"disconnect", {{0, ASGI_DISCONNECT, ASGI_F_END, 11},
        .u.close = {1006, S("gone \xe2\x80\x94 away")}}},
    {"disconnect_http", {{0, ASGI_DISCONNECT, ASGI_F_END, 11}, .u.close = {0, S("")}}},
    {"ws_accept", {{0, ASGI_WS_ACCEPT, 0, 13}, .u.accept = {S("chat"), hs_one, 1}}},
    {"ws_accept_none", {{0, ASGI_WS_ACCEPT, 0, 13}, .u.accept = {S(""), NULL, 0}}},
    {"ws_message_text_more", {{0, ASGI_WS_MESSAGE, ASGI_F_TEXT | ASGI_F_MORE, 13},
        .u.raw = S("h\xc3\xa9llo")}},
    {"ws_close", {{0, ASGI_WS_CLOSE, ASGI_F_END, 13}, .u.close = {1000, S("bye")}}},
    {"credit_max", {{0, ASGI_CREDIT, 0, ASGI_STREAM_MAX}, .u.credit = {ASGI_CREDIT_MAX}}},
    {"credit_zero_and_all_flags", {{0, ASGI_CREDIT, 0xff, 1}, .u.credit = {0}}},
    {"ping", {{0, ASGI_PING, 0, 0}, .u.ping = {{1, 2, 3, 4, 5, 6, 7, 8}}}},
    {"ping_ack", {{0, ASGI_PING, ASGI_F_ACK, 0}, .u.ping = {{0, 0xff, 0, 0x80, 0, 0, 0, 0}}}},
    {"reset", {{0, ASGI_RESET, 0, 5}, .u.reset = {ASGI_ERR_CANCEL}}},
    {"reset_unknown_code", {{0, ASGI_RESET, 0, 5}, .u.reset = {UINT32_MAX}}},
    {"goaway", {{0, ASGI_GOAWAY, 0, 0}, .u.goaway = {41, ASGI_ERR_NONE, S("draining")}}},
    {"goaway_unmasked", {{0, ASGI_GOAWAY, 0, 0}, .u.goaway = {UINT32_MAX, UINT32_MAX, S("")}}},
    {"unknown_7f", {{0, 0x7f, 0, 3}, .u.raw = S("future\0frame\xff")}},
    {"unknown_ff_empty", {{0, 0xff, 0xff, 0}, .u.raw = {NULL, 0}}},
};
/* clang-format on */

/* Encodes rt case |c| into |buf| (with no limit) and returns the frame's length. */
static size_t encode_case(const struct rt_case *c)
{
    int n = encode_frame(buf, sizeof buf, ASGI_MAX_LEN, &c->f);

    cr_assert_geq(n, ASGI_FRAME_HDR_LEN, "%s: encode returned %d", c->name, n);
    return (size_t)n;
}

/* ---- round trips ---------------------------------------------------------------------------- */

INDEX_PARAMS(asgi_codec, round_trip, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, round_trip)
{
    const struct rt_case *c = &rt_cases[*i];
    size_t n = encode_case(c);
    struct frame d;
    const struct asgi_header *hs;
    size_t nh;
    const char *diff;
    int n2;

    memset(&d, 0, sizeof d);
    cr_assert_eq(asgi_frame_header_decode(buf, n, ASGI_MAX_LEN, &d.h), ASGI_OK, "%s", c->name);
    cr_expect_eq(d.h.length, n - ASGI_FRAME_HDR_LEN, "%s", c->name);
    cr_expect_eq(d.h.type, c->f.h.type, "%s", c->name);
    cr_expect_eq(d.h.flags, c->f.h.flags, "%s", c->name);
    cr_expect_eq(d.h.stream, c->f.h.stream, "%s", c->name);
    cr_expect_eq(buf[5] & 0x80, 0, "%s: R sent as 0", c->name);
    cr_assert_eq(decode_payload(&d, buf + ASGI_FRAME_HDR_LEN, d.h.length, MAX_HEADERS, MAX_SUBS),
                 ASGI_OK, "%s", c->name);
    diff = frame_diff(&d, &c->f);
    cr_assert_null(diff, "%s: %s differs", c->name, diff);

    /* Decoded strings are slices of the payload, never elsewhere. */
    nh = frame_headers(&d, &hs);
    for (size_t k = 0; k < nh; k++) {
        const uint8_t *np = (const uint8_t *)hs[k].name.p, *vp = (const uint8_t *)hs[k].value.p;

        cr_expect(np >= buf + ASGI_FRAME_HDR_LEN && np + hs[k].name.len <= buf + n,
                  "%s: header %zu name outside the payload", c->name, k);
        cr_expect(vp >= buf + ASGI_FRAME_HDR_LEN && vp + hs[k].value.len <= buf + n,
                  "%s: header %zu value outside the payload", c->name, k);
    }

    /* What decoded encodes back to the same bytes. */
    n2 = encode_frame(buf2, sizeof buf2, ASGI_MAX_LEN, &d);
    cr_assert_eq(n2, (int)n, "%s", c->name);
    cr_expect_eq(memcmp(buf, buf2, n), 0, "%s: first difference at byte %zu", c->name,
                 first_diff(buf, buf2, n));
}

Test(asgi_codec, hello_exact_bytes_of_protocol_section_12)
{
    static const uint8_t want[] = {
        0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 'G',  'H',
        'A',  'S',  'G',  'I',  0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
    };
    size_t n = encode_case(&rt_cases[0]);

    cr_assert_eq(n, sizeof want);
    cr_expect_eq(memcmp(buf, want, n), 0, "first difference at byte %zu", first_diff(buf, want, n));
}

Test(asgi_codec, big_endian_everywhere)
{
    struct asgi_goaway g = {0x01020304, 0x05060708, {"abc", 3}};
    static const uint8_t want[] = {0x00, 0x00, 0x0d, ASGI_GOAWAY, 0x00, 0x0a, 0x0b, 0x0c,
                                   0x0d, 1,    2,    3,           4,    5,    6,    7,
                                   8,    0x00, 0x03, 'a',         'b',  'c'};

    cr_assert_eq(asgi_encode_goaway(buf, sizeof buf, ASGI_MAX_LEN, 0, 0x0a0b0c0d, &g),
                 (int)sizeof want);
    cr_expect_eq(memcmp(buf, want, sizeof want), 0, "first difference at byte %zu",
                 first_diff(buf, want, sizeof want));
}

/* ---- decoder errors ------------------------------------------------------------------------- */

INDEX_PARAMS(asgi_codec, truncated_at_every_byte, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, truncated_at_every_byte)
{
    const struct rt_case *c = &rt_cases[*i];
    size_t n = encode_case(c), plen = n - ASGI_FRAME_HDR_LEN;
    struct frame d, before;

    /* The header: incomplete until all 9 bytes are there, and |*h| untouched. */
    memset(&d, 0x5a, sizeof d);
    before = d;
    for (size_t cut = 0; cut < ASGI_FRAME_HDR_LEN; cut++) {
        cr_expect_eq(asgi_frame_header_decode(buf, cut, ASGI_MAX_LEN, &d.h), ASGI_INCOMPLETE,
                     "%s: cut=%zu", c->name, cut);
        cr_expect_eq(memcmp(&d.h, &before.h, sizeof d.h), 0, "%s: cut=%zu: |*h| written", c->name,
                     cut);
    }
    cr_assert_eq(asgi_frame_header_decode(buf, ASGI_FRAME_HDR_LEN, ASGI_MAX_LEN, &d.h), ASGI_OK);

    /* The payload: any prefix of a fixed layout is malformed; raw payloads have no layout. */
    for (size_t cut = 0; cut < plen; cut++) {
        int rc;

        memset(&d.u, 0x5a, sizeof d.u);
        before = d;
        rc = decode_payload(&d, buf + ASGI_FRAME_HDR_LEN, cut, MAX_HEADERS, MAX_SUBS);
        if (is_raw(c->f.h.type)) {
            cr_expect_eq(rc, ASGI_OK, "%s: cut=%zu", c->name, cut);
            cr_expect_eq(d.u.raw.len, cut, "%s: cut=%zu", c->name, cut);
        } else {
            cr_expect_eq(rc, ASGI_E_FRAME_SIZE, "%s: cut=%zu", c->name, cut);
            cr_expect_eq(memcmp(&d.u, &before.u, sizeof d.u), 0, "%s: cut=%zu: |*out| written",
                         c->name, cut);
        }
    }
}

INDEX_PARAMS(asgi_codec, trailing_bytes, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, trailing_bytes)
{
    const struct rt_case *c = &rt_cases[*i];
    size_t n = encode_case(c), plen = n - ASGI_FRAME_HDR_LEN;
    struct frame d;

    memset(&d, 0, sizeof d);
    d.h = c->f.h;
    /* A zero byte is the likeliest to pass for an empty field. */
    memset(buf + n, 0, 16);
    for (size_t extra = 1; extra <= 16; extra++) {
        int rc = decode_payload(&d, buf + ASGI_FRAME_HDR_LEN, plen + extra, MAX_HEADERS, MAX_SUBS);

        if (is_raw(c->f.h.type))
            cr_expect_eq(rc, ASGI_OK, "%s: +%zu", c->name, extra);
        else
            cr_expect_eq(rc, ASGI_E_FRAME_SIZE, "%s: +%zu bytes", c->name, extra);
    }
}

INDEX_PARAMS(asgi_codec, too_many_entries, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, too_many_entries)
{
    const struct rt_case *c = &rt_cases[*i];
    size_t n = encode_case(c), plen = n - ASGI_FRAME_HDR_LEN, nh, ns = 0;
    const struct asgi_header *hs;
    struct frame d;

    memset(&d, 0, sizeof d);
    d.h = c->f.h;
    nh = frame_headers(&c->f, &hs);
    if (c->f.h.type == ASGI_WS_CONNECT)
        ns = c->f.u.wsc.n_subprotocols;
    for (size_t max = 0; max < nh; max++)
        cr_expect_eq(decode_payload(&d, buf + ASGI_FRAME_HDR_LEN, plen, max, MAX_SUBS),
                     ASGI_E_TOO_MANY, "%s: max_headers=%zu", c->name, max);
    for (size_t max = 0; max < ns; max++)
        cr_expect_eq(decode_payload(&d, buf + ASGI_FRAME_HDR_LEN, plen, nh, max), ASGI_E_TOO_MANY,
                     "%s: max_subprotocols=%zu", c->name, max);
    /* Exactly enough room; NULL arrays are fine when nothing goes in them. */
    cr_expect_eq(decode_payload(&d, buf + ASGI_FRAME_HDR_LEN, plen, nh, ns), ASGI_OK, "%s",
                 c->name);
    cr_expect_null(frame_diff(&d, &c->f), "%s", c->name);
}

Test(asgi_codec, count_without_room_is_frame_size_not_too_many)
{
    /* HTTP_RESPONSE 200 with 0xffff headers announced in a 4-byte payload: malformed, whatever
     * the caller's capacity. */
    static const uint8_t no_room[] = {0x00, 0xc8, 0xff, 0xff};
    /* One header announced and present (empty name and value): too many for 0 slots. */
    static const uint8_t one[] = {0x00, 0xc8, 0x00, 0x01, 0, 0, 0, 0};
    /* Three bytes where a header needs four. */
    static const uint8_t short_one[] = {0x00, 0xc8, 0x00, 0x01, 0, 0, 0};
    struct asgi_http_response r;

    cr_expect_eq(asgi_decode_http_response(no_room, sizeof no_room, &r, NULL, 0),
                 ASGI_E_FRAME_SIZE);
    cr_expect_eq(asgi_decode_http_response(no_room, sizeof no_room, &r, dec_headers, MAX_HEADERS),
                 ASGI_E_FRAME_SIZE);
    cr_expect_eq(asgi_decode_http_response(one, sizeof one, &r, NULL, 0), ASGI_E_TOO_MANY);
    cr_expect_eq(asgi_decode_http_response(short_one, sizeof short_one, &r, NULL, 0),
                 ASGI_E_FRAME_SIZE);
    cr_assert_eq(asgi_decode_http_response(one, sizeof one, &r, dec_headers, 1), ASGI_OK);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.n_headers, 1);
    cr_expect_eq(r.headers, dec_headers);
    cr_expect_eq(r.headers[0].name.len + r.headers[0].value.len, 0);
}

Test(asgi_codec, subprotocol_count_without_room)
{
    struct asgi_ws_connect w = {
        {S("1.1"), S(""), S("ws"), S("/"), S("/"), S(""), S(""), S(""), 0, S(""), 0, NULL, 0, {0}},
        subs3,
        ARRAY_LEN(subs3)};
    struct asgi_ws_connect out;
    int n = asgi_encode_ws_connect(buf, sizeof buf, ASGI_MAX_LEN, 0, 1, &w);
    size_t plen = (size_t)n - ASGI_FRAME_HDR_LEN;
    /* The subprotocol count sits after "chat" (6) "superchat" (11) "" (2) and its own 2. */
    size_t at = (size_t)n - 21;

    cr_assert_gt(n, 0);
    cr_assert_eq(buf[at], 0);
    cr_assert_eq(buf[at + 1], 3);
    buf[at] = 0xff; /* 0xff03 subprotocols in 19 bytes */
    cr_expect_eq(asgi_decode_ws_connect(buf + ASGI_FRAME_HDR_LEN, plen, &out, NULL, 0, NULL, 0, 0),
                 ASGI_E_FRAME_SIZE);
    buf[at] = 0;
    buf[at + 1] = 10; /* 10 need 20 bytes at least: 19 is too few */
    cr_expect_eq(
        asgi_decode_ws_connect(buf + ASGI_FRAME_HDR_LEN, plen, &out, NULL, 0, dec_subs, MAX_SUBS, 0),
        ASGI_E_FRAME_SIZE);
    buf[at + 1] = 4; /* room for 4 by count, but the strings run out */
    cr_expect_eq(
        asgi_decode_ws_connect(buf + ASGI_FRAME_HDR_LEN, plen, &out, NULL, 0, dec_subs, MAX_SUBS, 0),
        ASGI_E_FRAME_SIZE);
    cr_expect_eq(asgi_decode_ws_connect(buf + ASGI_FRAME_HDR_LEN, plen, &out, NULL, 0, dec_subs, 3, 0),
                 ASGI_E_TOO_MANY);
}

Test(asgi_codec, hello_bad_magic_is_protocol)
{
    struct asgi_hello h = {0}, good = {1, 65536, 0, 65536, 7};
    size_t n = encode_case(&rt_cases[0]);
    uint8_t *p = buf + ASGI_FRAME_HDR_LEN;

    cr_assert_eq(n, ASGI_FRAME_HDR_LEN + ASGI_HELLO_LEN);
    for (size_t k = 0; k < ASGI_MAGIC_LEN; k++) {
        p[k] ^= 0x20; /* "gHASGI" and so on: the magic is case-sensitive */
        memset(&h, 0x5a, sizeof h);
        cr_expect_eq(asgi_decode_hello(p, ASGI_HELLO_LEN, &h), ASGI_E_PROTOCOL, "byte %zu", k);
        cr_expect_eq(h.version, 0x5a5a, "byte %zu: |*out| untouched", k);
        /* The layout is checked first: a bad length wins over a bad magic. */
        cr_expect_eq(asgi_decode_hello(p, ASGI_HELLO_LEN - 1, &h), ASGI_E_FRAME_SIZE);
        cr_expect_eq(asgi_decode_hello(p, ASGI_HELLO_LEN + 1, &h), ASGI_E_FRAME_SIZE);
        p[k] ^= 0x20;
    }
    cr_assert_eq(asgi_decode_hello(p, ASGI_HELLO_LEN, &h), ASGI_OK);
    cr_expect_null(hello_diff(&h, &good));
    /* Version, max_frame range and capabilities are the session's to judge. */
    memset(p + 6, 0, ASGI_HELLO_LEN - 6);
    cr_expect_eq(asgi_decode_hello(p, ASGI_HELLO_LEN, &h), ASGI_OK);
    cr_expect_eq(h.version, 0);
    cr_expect_eq(h.max_frame, 0);
}

/* ---- frame header --------------------------------------------------------------------------- */

Test(asgi_codec, header_decode_masks_r_and_keeps_flags)
{
    static const uint8_t in[] = {0x00, 0x00, 0x00, 0x05, 0xff, 0x80, 0x00, 0x00, 0x07};
    static const uint8_t all[] = {0xff, 0xff, 0xff, 0xee, 0x10, 0xff, 0xff, 0xff, 0xff};
    struct asgi_frame_header h;

    cr_assert_eq(asgi_frame_header_decode(in, sizeof in, ASGI_MAX_LEN, &h), ASGI_OK);
    cr_expect_eq(h.length, 0);
    cr_expect_eq(h.type, ASGI_PATHSEND);
    cr_expect_eq(h.flags, 0xff, "flags are as received; the session ignores unused ones");
    cr_expect_eq(h.stream, 7, "R ignored");
    cr_assert_eq(asgi_frame_header_decode(all, sizeof all, SIZE_MAX, &h), ASGI_OK);
    cr_expect_eq(h.length, ASGI_MAX_LEN);
    cr_expect_eq(h.type, 0xee, "unknown types decode, for the caller to skip");
    cr_expect_eq(h.flags, 0x10);
    cr_expect_eq(h.stream, ASGI_STREAM_MAX);
}

Test(asgi_codec, header_decode_max_frame)
{
    static const uint8_t in[] = {0x00, 0x40, 0x00, ASGI_DATA, 0, 0, 0, 0, 1}; /* 16384 */
    struct asgi_frame_header h = {777, 7, 7, 7};

    cr_expect_eq(asgi_frame_header_decode(in, sizeof in, ASGI_DEFAULT_MAX_FRAME, &h), ASGI_OK);
    cr_expect_eq(h.length, 16384);
    h.length = 777;
    cr_expect_eq(asgi_frame_header_decode(in, sizeof in, ASGI_DEFAULT_MAX_FRAME - 1, &h),
                 ASGI_E_FRAME_SIZE);
    cr_expect_eq(h.length, 777, "untouched on error");
    cr_expect_eq(asgi_frame_header_decode(in, sizeof in, 0, &h), ASGI_E_FRAME_SIZE);
    /* Incomplete wins: nothing is judged before 9 bytes are there. */
    cr_expect_eq(asgi_frame_header_decode(in, 8, 0, &h), ASGI_INCOMPLETE);
    /* An empty payload fits any max_frame. */
    cr_expect_eq(asgi_frame_header_decode((const uint8_t *)"\0\0\0\x02\0\0\0\0\x01", 9, 0, &h),
                 ASGI_OK);
}

Test(asgi_codec, header_encode)
{
    struct asgi_frame_header h = {ASGI_MAX_LEN, ASGI_WS_MESSAGE, ASGI_F_TEXT, ASGI_STREAM_MAX};
    static const uint8_t want[] = {0xff, 0xff, 0xff, 0x09, 0x04, 0x7f, 0xff, 0xff, 0xff};

    memset(buf, CANARY, 32);
    cr_assert_eq(asgi_frame_header_encode(buf, 9, ASGI_MAX_LEN, &h), ASGI_FRAME_HDR_LEN);
    cr_expect_eq(memcmp(buf, want, 9), 0);
    cr_expect_eq(buf[9], CANARY);

    memset(buf, CANARY, 32);
    h.stream = ASGI_STREAM_MAX + 1u;
    cr_expect_eq(asgi_frame_header_encode(buf, 32, SIZE_MAX, &h), ASGI_E_VALUE);
    h.stream = UINT32_MAX;
    cr_expect_eq(asgi_frame_header_encode(buf, 32, SIZE_MAX, &h), ASGI_E_VALUE);
    h.stream = 1;
    h.length = (size_t)ASGI_MAX_LEN + 1;
    cr_expect_eq(asgi_frame_header_encode(buf, 32, SIZE_MAX, &h), ASGI_E_FRAME_SIZE, "u24");
    h.length = SIZE_MAX;
    cr_expect_eq(asgi_frame_header_encode(buf, 32, SIZE_MAX, &h), ASGI_E_FRAME_SIZE);
    h.length = 16385;
    cr_expect_eq(asgi_frame_header_encode(buf, 32, 16384, &h), ASGI_E_FRAME_SIZE, "max_frame");
    h.length = 16384;
    for (size_t cap = 0; cap < ASGI_FRAME_HDR_LEN; cap++)
        cr_expect_eq(asgi_frame_header_encode(buf, cap, 16384, &h), ASGI_E_NOSPACE, "cap=%zu", cap);
    for (size_t k = 0; k < 32; k++)
        cr_assert_eq(buf[k], CANARY, "byte %zu written on failure", k);
    /* The order: VALUE, then FRAME_SIZE, then NOSPACE. */
    h.stream = UINT32_MAX;
    h.length = SIZE_MAX;
    cr_expect_eq(asgi_frame_header_encode(buf, 0, 0, &h), ASGI_E_VALUE);
    h.stream = 1;
    cr_expect_eq(asgi_frame_header_encode(buf, 0, 0, &h), ASGI_E_FRAME_SIZE);
}

Test(asgi_codec, stream_of_frames_skips_unknown_types)
{
    static const size_t pick[] = {0, 2, 29, 7, 30, 23, 27};
    size_t off = 0, k = 0;

    cr_assert_eq(rt_cases[29].f.h.type, 0x7f);
    cr_assert_eq(rt_cases[30].f.h.type, 0xff);
    for (size_t j = 0; j < ARRAY_LEN(pick); j++) {
        int n = encode_frame(buf2 + off, sizeof buf2 - off, ASGI_MAX_LEN, &rt_cases[pick[j]].f);

        cr_assert_gt(n, 0);
        off += (size_t)n;
    }
    for (size_t pos = 0; pos < off; k++) {
        struct frame d;

        memset(&d, 0, sizeof d);
        cr_assert_eq(asgi_frame_header_decode(buf2 + pos, off - pos, ASGI_MAX_LEN, &d.h), ASGI_OK);
        cr_assert_leq(d.h.length, off - pos - ASGI_FRAME_HDR_LEN);
        if (d.h.type <= ASGI_TYPE_LAST) {
            cr_assert_eq(decode_payload(&d, buf2 + pos + ASGI_FRAME_HDR_LEN, d.h.length,
                                        MAX_HEADERS, MAX_SUBS),
                         ASGI_OK, "frame %zu", k);
            cr_expect_null(frame_diff(&d, &rt_cases[pick[k]].f), "frame %zu", k);
        } else {
            cr_expect_eq(d.h.type, rt_cases[pick[k]].f.h.type);
        }
        pos += ASGI_FRAME_HDR_LEN + d.h.length; /* the unknown ones: just skipped */
    }
    cr_expect_eq(k, ARRAY_LEN(pick));
}

/* ---- encoder limits ------------------------------------------------------------------------- */

INDEX_PARAMS(asgi_codec, cap_too_small, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, cap_too_small)
{
    const struct rt_case *c = &rt_cases[*i];
    size_t n = encode_case(c);

    memcpy(buf2, buf, n);
    for (size_t cap = 0; cap < n; cap++) {
        memset(buf, CANARY, n + 8);
        cr_assert_eq(encode_frame(buf, cap, ASGI_MAX_LEN, &c->f), ASGI_E_NOSPACE, "%s: cap=%zu",
                     c->name, cap);
        for (size_t k = 0; k < n + 8; k++)
            cr_assert_eq(buf[k], CANARY, "%s: cap=%zu: byte %zu written", c->name, cap, k);
    }
    cr_assert_eq(encode_frame(buf, n, ASGI_MAX_LEN, &c->f), (int)n, "%s: exactly enough", c->name);
    cr_expect_eq(memcmp(buf, buf2, n), 0, "%s", c->name);
}

INDEX_PARAMS(asgi_codec, max_frame, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, max_frame)
{
    const struct rt_case *c = &rt_cases[*i];
    size_t n = encode_case(c), plen = n - ASGI_FRAME_HDR_LEN;
    struct asgi_frame_header h;

    cr_expect_eq(encode_frame(buf2, sizeof buf2, plen, &c->f), (int)n, "%s: max_frame = payload",
                 c->name);
    cr_expect_eq(asgi_frame_header_decode(buf, n, plen, &h), ASGI_OK, "%s", c->name);
    if (plen > 0) {
        cr_expect_eq(encode_frame(buf2, sizeof buf2, plen - 1, &c->f), ASGI_E_FRAME_SIZE, "%s",
                     c->name);
        cr_expect_eq(asgi_frame_header_decode(buf, n, plen - 1, &h), ASGI_E_FRAME_SIZE, "%s",
                     c->name);
        /* FRAME_SIZE comes before NOSPACE. */
        cr_expect_eq(encode_frame(buf2, 0, plen - 1, &c->f), ASGI_E_FRAME_SIZE, "%s", c->name);
    }
}

INDEX_PARAMS(asgi_codec, stream_over_31_bits, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, stream_over_31_bits)
{
    const struct rt_case *c = &rt_cases[*i];
    struct frame f = c->f;

    f.h.stream = ASGI_STREAM_MAX + 1u;
    memset(buf, CANARY, 64);
    /* VALUE comes before FRAME_SIZE and NOSPACE. */
    cr_expect_eq(encode_frame(buf, 0, 0, &f), ASGI_E_VALUE, "%s", c->name);
    cr_expect_eq(encode_frame(buf, sizeof buf, ASGI_MAX_LEN, &f), ASGI_E_VALUE, "%s", c->name);
    cr_expect_eq(buf[0], CANARY, "%s", c->name);
}

/* Mutable copies of a case's lists, so that each string can be swapped for a long one. */
static struct asgi_header mut_headers[MAX_HEADERS];
static struct asgi_str mut_subs[MAX_SUBS];

/* Points |out[]| at every str16 field of |f| (after moving its lists to the mutable copies);
 * returns how many. Raw payloads are not str16s. */
static size_t str16_fields(struct frame *f, struct asgi_str **out)
{
    size_t n = 0;
    struct asgi_http_request *q = NULL;
    const struct asgi_header **hs = NULL;
    size_t *nh = NULL;

    switch (f->h.type) {
    case ASGI_HTTP_REQUEST:
        q = &f->u.req;
        break;
    case ASGI_WS_CONNECT:
        q = &f->u.wsc.scope;
        if (f->u.wsc.n_subprotocols != 0)
            memcpy(mut_subs, f->u.wsc.subprotocols, f->u.wsc.n_subprotocols * sizeof *mut_subs);
        f->u.wsc.subprotocols = mut_subs;
        for (size_t k = 0; k < f->u.wsc.n_subprotocols; k++)
            out[n++] = &mut_subs[k];
        break;
    case ASGI_HTTP_RESPONSE:
        hs = &f->u.resp.headers;
        nh = &f->u.resp.n_headers;
        break;
    case ASGI_TRAILERS:
        hs = &f->u.trailers.headers;
        nh = &f->u.trailers.n_headers;
        break;
    case ASGI_WS_ACCEPT:
        out[n++] = &f->u.accept.subprotocol;
        hs = &f->u.accept.headers;
        nh = &f->u.accept.n_headers;
        break;
    case ASGI_PATHSEND:
        out[n++] = &f->u.pathsend.path;
        break;
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        out[n++] = &f->u.close.reason;
        break;
    case ASGI_GOAWAY:
        out[n++] = &f->u.goaway.debug;
        break;
    default:
        break;
    }
    if (q != NULL) {
        struct asgi_str *s[] = {&q->http_version, &q->method,      &q->scheme,
                                &q->path,         &q->raw_path,    &q->query_string,
                                &q->root_path,    &q->client_host, &q->server_host};

        for (size_t k = 0; k < ARRAY_LEN(s); k++)
            out[n++] = s[k];
        hs = &q->headers;
        nh = &q->n_headers;
    }
    if (hs != NULL) {
        if (*nh != 0)
            memcpy(mut_headers, *hs, *nh * sizeof *mut_headers);
        *hs = mut_headers;
        for (size_t k = 0; k < *nh; k++) {
            out[n++] = &mut_headers[k].name;
            out[n++] = &mut_headers[k].value;
        }
    }
    return n;
}

INDEX_PARAMS(asgi_codec, str16_limit_in_every_field, rt_cases)

ParameterizedTest(size_t *i, asgi_codec, str16_limit_in_every_field)
{
    const struct rt_case *c = &rt_cases[*i];
    struct frame f = c->f, d;
    struct asgi_str *fields[64];
    size_t nf = str16_fields(&f, fields);

    memset(big, 'x', sizeof big);
    for (size_t k = 0; k < nf; k++) {
        struct asgi_str keep = *fields[k];
        int n;

        /* 65536 would narrow to a length of 0 and send the bytes as the next fields. */
        *fields[k] = (struct asgi_str){big, ASGI_STR16_MAX + 1};
        cr_expect_eq(encode_frame(buf, sizeof buf, SIZE_MAX, &f), ASGI_E_VALUE, "%s: field %zu",
                     c->name, k);
        /* VALUE wins over FRAME_SIZE and NOSPACE. */
        cr_expect_eq(encode_frame(buf, 0, 0, &f), ASGI_E_VALUE, "%s: field %zu", c->name, k);
        *fields[k] = (struct asgi_str){big, SIZE_MAX};
        cr_expect_eq(encode_frame(buf, sizeof buf, SIZE_MAX, &f), ASGI_E_VALUE, "%s: field %zu",
                     c->name, k);
        /* 65535 is the longest, and round-trips. */
        *fields[k] = (struct asgi_str){big, ASGI_STR16_MAX};
        n = encode_frame(buf, sizeof buf, ASGI_MAX_LEN, &f);
        cr_assert_gt(n, (int)ASGI_STR16_MAX, "%s: field %zu: %d", c->name, k, n);
        memset(&d, 0, sizeof d);
        cr_assert_eq(asgi_frame_header_decode(buf, (size_t)n, ASGI_MAX_LEN, &d.h), ASGI_OK);
        cr_assert_eq(
            decode_payload(&d, buf + ASGI_FRAME_HDR_LEN, d.h.length, MAX_HEADERS, MAX_SUBS),
            ASGI_OK, "%s: field %zu", c->name, k);
        cr_expect_null(frame_diff(&d, &f), "%s: field %zu", c->name, k);
        /* And not over a max_frame one byte short of it. */
        cr_expect_eq(encode_frame(buf, sizeof buf, d.h.length - 1, &f), ASGI_E_FRAME_SIZE, "%s",
                     c->name);
        *fields[k] = keep;
    }
}

Test(asgi_codec, counts_over_65535_refused_without_reading_the_list)
{
    struct asgi_http_response r = {200, NULL, ASGI_STR16_MAX + 1};
    struct asgi_trailers t = {NULL, SIZE_MAX};
    struct asgi_ws_accept a = {S(""), NULL, ASGI_STR16_MAX + 1};
    struct asgi_http_request q = {
        S("1.1"), S("GET"), S("http"),         S("/"), S("/"), S(""), S(""), S(""), 0, S(""),
        0,        NULL,     ASGI_STR16_MAX + 1, {0}};
    struct asgi_ws_connect w = {q, NULL, 0};

    cr_expect_eq(asgi_encode_http_response(buf, sizeof buf, SIZE_MAX, 0, 1, &r), ASGI_E_VALUE);
    cr_expect_eq(asgi_encode_trailers(buf, sizeof buf, SIZE_MAX, 0, 1, &t), ASGI_E_VALUE);
    cr_expect_eq(asgi_encode_ws_accept(buf, sizeof buf, SIZE_MAX, 0, 1, &a), ASGI_E_VALUE);
    cr_expect_eq(asgi_encode_http_request(buf, sizeof buf, SIZE_MAX, 0, 1, &q), ASGI_E_VALUE);
    cr_expect_eq(asgi_encode_ws_connect(buf, sizeof buf, SIZE_MAX, 0, 1, &w), ASGI_E_VALUE);
    w.scope.n_headers = 0;
    w.n_subprotocols = ASGI_STR16_MAX + 1;
    cr_expect_eq(asgi_encode_ws_connect(buf, sizeof buf, SIZE_MAX, 0, 1, &w), ASGI_E_VALUE);
}

Test(asgi_codec, count_of_65535_accepted)
{
    static struct asgi_header many[ASGI_STR16_MAX];
    static struct asgi_header back[ASGI_STR16_MAX];
    struct asgi_trailers t = {many, ASGI_STR16_MAX}, d;
    int n;

    /* 65535 empty headers: 2 + 4 * 65535 bytes. */
    n = asgi_encode_trailers(buf, sizeof buf, ASGI_MAX_LEN, ASGI_F_END, 1, &t);
    cr_assert_eq(n, ASGI_FRAME_HDR_LEN + 2 + 4 * ASGI_STR16_MAX);
    cr_expect_eq(buf[ASGI_FRAME_HDR_LEN], 0xff);
    cr_expect_eq(buf[ASGI_FRAME_HDR_LEN + 1], 0xff);
    cr_assert_eq(asgi_decode_trailers(buf + ASGI_FRAME_HDR_LEN, (size_t)n - ASGI_FRAME_HDR_LEN, &d,
                                      back, ASGI_STR16_MAX),
                 ASGI_OK);
    cr_expect_eq(d.n_headers, ASGI_STR16_MAX);
    cr_expect_eq(asgi_decode_trailers(buf + ASGI_FRAME_HDR_LEN, (size_t)n - ASGI_FRAME_HDR_LEN, &d,
                                      back, ASGI_STR16_MAX - 1),
                 ASGI_E_TOO_MANY);
}

Test(asgi_codec, payload_of_exactly_u24_and_one_over)
{
    static struct asgi_header hs[128];
    struct asgi_http_response r = {200, hs, ARRAY_LEN(hs)};
    struct asgi_http_response d;
    static struct asgi_header back[128];
    int n;

    memset(big, 'x', sizeof big);
    /* 2 + 2 + 127 * (4 + 65535 + 65535) + (4 + 65535 + 65274) = 2^24 - 1. */
    for (size_t k = 0; k < ARRAY_LEN(hs); k++)
        hs[k] = (struct asgi_header){{big, ASGI_STR16_MAX}, {big, ASGI_STR16_MAX}};
    hs[127].value.len = 65274;
    n = asgi_encode_http_response(buf, sizeof buf, SIZE_MAX, 0, 1, &r);
    cr_assert_eq(n, BIG_FRAME);
    cr_expect_eq(buf[0] & buf[1] & buf[2], 0xff);
    cr_assert_eq(asgi_decode_http_response(buf + ASGI_FRAME_HDR_LEN, ASGI_MAX_LEN, &d, back, 128),
                 ASGI_OK);
    cr_expect_eq(d.headers[127].value.len, 65274);
    cr_expect_eq(asgi_encode_http_response(buf, BIG_FRAME - 1, SIZE_MAX, 0, 1, &r), ASGI_E_NOSPACE);
    /* One byte more does not fit a u24, whatever max_frame and cap say. */
    hs[127].value.len = 65275;
    cr_expect_eq(asgi_encode_http_response(buf, sizeof buf, SIZE_MAX, 0, 1, &r), ASGI_E_FRAME_SIZE);
    /* Far over: the sum saturates instead of wrapping. */
    hs[127].value.len = ASGI_STR16_MAX;
    cr_expect_eq(asgi_encode_http_response(buf, sizeof buf, SIZE_MAX, 0, 1, &r), ASGI_E_FRAME_SIZE);
}

Test(asgi_codec, raw_payload_limits)
{
    static char payload[ASGI_MAX_LEN + 1];
    struct asgi_str s = {payload, ASGI_MAX_LEN};
    struct asgi_frame_header h;

    memset(payload, 'd', sizeof payload);
    cr_assert_eq(asgi_encode_raw(buf, sizeof buf, SIZE_MAX, ASGI_DATA, 0, 1, &s), BIG_FRAME);
    cr_assert_eq(asgi_frame_header_decode(buf, BIG_FRAME, ASGI_MAX_LEN, &h), ASGI_OK);
    cr_expect_eq(h.length, ASGI_MAX_LEN);
    s.len = (size_t)ASGI_MAX_LEN + 1;
    cr_expect_eq(asgi_encode_raw(buf, sizeof buf, SIZE_MAX, ASGI_DATA, 0, 1, &s),
                 ASGI_E_FRAME_SIZE);
    s.len = SIZE_MAX;
    cr_expect_eq(asgi_encode_raw(buf, sizeof buf, SIZE_MAX, ASGI_WS_MESSAGE, 0, 1, &s),
                 ASGI_E_FRAME_SIZE);
    /* The peer's max_frame: a DATA piece over it must be split by the caller. */
    s.len = ASGI_DEFAULT_MAX_FRAME + 1;
    cr_expect_eq(asgi_encode_raw(buf, sizeof buf, ASGI_DEFAULT_MAX_FRAME, ASGI_DATA, 0, 1, &s),
                 ASGI_E_FRAME_SIZE);
    s.len = ASGI_DEFAULT_MAX_FRAME;
    cr_expect_eq(asgi_encode_raw(buf, sizeof buf, ASGI_DEFAULT_MAX_FRAME, ASGI_DATA, 0, 1, &s),
                 (int)(ASGI_FRAME_HDR_LEN + ASGI_DEFAULT_MAX_FRAME));
}

Test(asgi_codec, close_encoder_takes_only_its_two_types)
{
    struct asgi_close c = {1000, S("bye")};

    cr_expect_gt(asgi_encode_close(buf, sizeof buf, ASGI_MAX_LEN, ASGI_DISCONNECT, 0, 1, &c), 0);
    cr_expect_gt(asgi_encode_close(buf, sizeof buf, ASGI_MAX_LEN, ASGI_WS_CLOSE, 0, 1, &c), 0);
    cr_expect_eq(asgi_encode_close(buf, sizeof buf, ASGI_MAX_LEN, ASGI_RESET, 0, 1, &c),
                 ASGI_E_VALUE);
    cr_expect_eq(asgi_encode_close(buf, sizeof buf, ASGI_MAX_LEN, 0x7f, 0, 1, &c), ASGI_E_VALUE);
}

/* ---- golden vectors (tests/vectors/asgi/, shared with the Python tests) --------------------- */

#define VEC_DIR "tests/vectors/asgi/"
#define MAX_VECTORS 256
#define MAX_ITEMS 512

static char vec_names[MAX_VECTORS][128];
static size_t n_vec_names;

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Lists the stems of VEC_DIR's .txt files, sorted, so that the parent and each test process
 * agree on the indexes. */
static size_t list_vectors(void)
{
    DIR *d = opendir(VEC_DIR);
    struct dirent *e;

    n_vec_names = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL && n_vec_names < MAX_VECTORS) {
        size_t len = strlen(e->d_name);

        if (e->d_name[0] == '.' || len < 5 || len - 4 >= sizeof vec_names[0] ||
            strcmp(e->d_name + len - 4, ".txt") != 0)
            continue;
        memcpy(vec_names[n_vec_names], e->d_name, len - 4);
        vec_names[n_vec_names][len - 4] = '\0';
        n_vec_names++;
    }
    closedir(d);
    qsort(vec_names, n_vec_names, sizeof vec_names[0], name_cmp);
    return n_vec_names;
}

static size_t read_file(const char *path, void *dst, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    cr_assert_not_null(f, "cannot open %s (criterion must run from the repo root)", path);
    n = fread(dst, 1, cap, f);
    cr_assert(feof(f) && !ferror(f), "%s: read error or over %zu bytes", path, cap);
    fclose(f);
    return n;
}

/* One line of a .txt: a key and one or two values, each a number or a string. */
struct val {
    int is_str;
    uint64_t num;
    struct asgi_str s;
};

struct item {
    char key[32];
    int nvals;
    struct val v[2];
    int line;
};

static uint8_t vec_bin[1 << 20];
static char vec_txt[1 << 20];
static char arena[1 << 20];
static struct item txt_items[MAX_ITEMS];
static struct item want_items[MAX_ITEMS];

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses the .txt format of tests/vectors/asgi/README.md, strictly: tokens separated by one
 * space, strings with \\, \" and \xHH only, decimal numbers without leading zeros. */
static size_t parse_txt(const char *name, const char *p, size_t len)
{
    const char *end = p + len;
    size_t n = 0, used = 0;
    int line = 0;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        struct item *it;
        size_t klen = 0;

        line++;
        cr_assert_not_null(eol, "%s.txt:%d: no newline at the end", name, line);
        if (p == eol || *p == '#') {
            p = eol + 1;
            continue;
        }
        cr_assert_lt(n, MAX_ITEMS, "%s.txt: too many lines", name);
        it = &txt_items[n++];
        memset(it, 0, sizeof *it);
        it->line = line;
        while (p + klen < eol && p[klen] != ' ') {
            char c = p[klen];

            cr_assert((c >= 'a' && c <= 'z') || c == '_', "%s.txt:%d: bad key", name, line);
            klen++;
        }
        cr_assert(klen > 0 && klen < sizeof it->key, "%s.txt:%d: bad key", name, line);
        memcpy(it->key, p, klen);
        p += klen;
        while (p < eol) {
            struct val *v;

            cr_assert(*p == ' ' && p + 1 < eol && p[1] != ' ',
                      "%s.txt:%d: values are separated by exactly one space", name, line);
            p++;
            cr_assert_lt(it->nvals, 2, "%s.txt:%d: more than two values", name, line);
            v = &it->v[it->nvals++];
            if (*p == '"') {
                v->is_str = 1;
                v->s.p = arena + used;
                p++;
                for (;;) {
                    char c;

                    cr_assert_lt(p, eol, "%s.txt:%d: unterminated string", name, line);
                    c = *p++;
                    if (c == '"')
                        break;
                    if (c == '\\') {
                        cr_assert_lt(p, eol, "%s.txt:%d: lone backslash", name, line);
                        c = *p++;
                        if (c == 'x') {
                            int hi, lo;

                            cr_assert(eol - p >= 2, "%s.txt:%d: short \\x", name, line);
                            hi = hexval(p[0]);
                            lo = hexval(p[1]);
                            cr_assert(hi >= 0 && lo >= 0, "%s.txt:%d: bad \\x", name, line);
                            c = (char)(hi << 4 | lo);
                            p += 2;
                        } else {
                            cr_assert(c == '\\' || c == '"', "%s.txt:%d: unknown escape \\%c", name,
                                      line, c);
                        }
                    } else {
                        cr_assert(c >= 0x20 && c <= 0x7e, "%s.txt:%d: raw byte 0x%02x", name, line,
                                  (unsigned char)c);
                    }
                    cr_assert_lt(used, sizeof arena, "%s.txt: strings too long", name);
                    arena[used++] = c;
                }
                v->s.len = (size_t)(arena + used - v->s.p);
                cr_assert(p == eol || *p == ' ', "%s.txt:%d: junk after a string", name, line);
            } else {
                const char *start = p;

                while (p < eol && *p >= '0' && *p <= '9') {
                    cr_assert(v->num <= (UINT64_MAX - 9) / 10, "%s.txt:%d: number too big", name,
                              line);
                    v->num = v->num * 10 + (uint64_t)(*p++ - '0');
                }
                cr_assert(p > start && (p == eol || *p == ' '), "%s.txt:%d: bad number", name,
                          line);
                cr_assert(*start != '0' || p - start == 1, "%s.txt:%d: leading zero", name, line);
            }
        }
        cr_assert_gt(it->nvals, 0, "%s.txt:%d: a key without a value", name, line);
        p = eol + 1;
    }
    return n;
}

/* Builds the item list the decoded frame should match. */
struct wb {
    size_t n;
};

static struct val *want_add(struct wb *w, const char *key, int nvals)
{
    struct item *it;

    cr_assert_lt(w->n, MAX_ITEMS);
    it = &want_items[w->n++];
    memset(it, 0, sizeof *it);
    snprintf(it->key, sizeof it->key, "%s", key);
    it->nvals = nvals;
    return it->v;
}

static void want_num(struct wb *w, const char *key, uint64_t num)
{
    want_add(w, key, 1)->num = num;
}

static void want_str(struct wb *w, const char *key, struct asgi_str s)
{
    struct val *v = want_add(w, key, 1);

    v->is_str = 1;
    v->s = s;
}

static void want_headers(struct wb *w, const struct asgi_header *hs, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        struct val *v = want_add(w, "header", 2);

        v[0].is_str = v[1].is_str = 1;
        v[0].s = hs[k].name;
        v[1].s = hs[k].value;
    }
}

static void want_scope(struct wb *w, const struct asgi_http_request *q)
{
    want_str(w, "http_version", q->http_version);
    want_str(w, "method", q->method);
    want_str(w, "scheme", q->scheme);
    want_str(w, "path", q->path);
    want_str(w, "raw_path", q->raw_path);
    want_str(w, "query_string", q->query_string);
    want_str(w, "root_path", q->root_path);
    want_str(w, "client_host", q->client_host);
    want_num(w, "client_port", q->client_port);
    want_str(w, "server_host", q->server_host);
    want_num(w, "server_port", q->server_port);
    want_headers(w, q->headers, q->n_headers);
}

/* The fields of |f| in PROTOCOL.md's layout order, as the .txt names them. */
static size_t want_frame(const struct frame *f)
{
    struct wb w = {0};

    want_num(&w, "type", f->h.type);
    want_num(&w, "flags", f->h.flags);
    want_num(&w, "stream", f->h.stream);
    switch (f->h.type) {
    case ASGI_HELLO:
        want_str(&w, "magic", (struct asgi_str)S(ASGI_MAGIC));
        want_num(&w, "version", f->u.hello.version);
        want_num(&w, "max_frame", f->u.hello.max_frame);
        want_num(&w, "max_streams", f->u.hello.max_streams);
        want_num(&w, "initial_credit", f->u.hello.initial_credit);
        want_num(&w, "capabilities", f->u.hello.capabilities);
        break;
    case ASGI_HTTP_REQUEST:
        want_scope(&w, &f->u.req);
        break;
    case ASGI_HTTP_RESPONSE:
        want_num(&w, "status", f->u.resp.status);
        want_headers(&w, f->u.resp.headers, f->u.resp.n_headers);
        break;
    case ASGI_TRAILERS:
        want_headers(&w, f->u.trailers.headers, f->u.trailers.n_headers);
        break;
    case ASGI_PATHSEND:
        want_str(&w, "path", f->u.pathsend.path);
        break;
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        want_num(&w, "code", f->u.close.code);
        want_str(&w, "reason", f->u.close.reason);
        break;
    case ASGI_WS_CONNECT:
        want_scope(&w, &f->u.wsc.scope);
        for (size_t k = 0; k < f->u.wsc.n_subprotocols; k++)
            want_str(&w, "offer", f->u.wsc.subprotocols[k]);
        break;
    case ASGI_WS_ACCEPT:
        want_str(&w, "subprotocol", f->u.accept.subprotocol);
        want_headers(&w, f->u.accept.headers, f->u.accept.n_headers);
        break;
    case ASGI_CREDIT:
        want_num(&w, "increment", f->u.credit.increment);
        break;
    case ASGI_PING:
        want_str(&w, "data", (struct asgi_str){(const char *)f->u.ping.opaque, ASGI_PING_LEN});
        break;
    case ASGI_RESET:
        want_num(&w, "error", f->u.reset.error);
        break;
    case ASGI_GOAWAY:
        want_num(&w, "last_stream", f->u.goaway.last_stream);
        want_num(&w, "error", f->u.goaway.error);
        want_str(&w, "debug", f->u.goaway.debug);
        break;
    default:
        want_str(&w, "data", f->u.raw);
        break;
    }
    return w.n;
}

ParameterizedTestParameters(asgi_vectors, vector)
{
    static size_t idx[MAX_VECTORS];
    size_t n = list_vectors();

    for (size_t k = 0; k < n; k++)
        idx[k] = k;
    return cr_make_param_array(size_t, idx, n);
}

ParameterizedTest(size_t *i, asgi_vectors, vector)
{
    const char *name;
    char path[256];
    size_t bin_len, txt_len, nt, nw;
    struct frame d;
    int n;

    cr_assert_lt(*i, list_vectors(), VEC_DIR " changed while the tests ran");
    name = vec_names[*i];
    snprintf(path, sizeof path, VEC_DIR "%s.bin", name);
    bin_len = read_file(path, vec_bin, sizeof vec_bin);
    snprintf(path, sizeof path, VEC_DIR "%s.txt", name);
    txt_len = read_file(path, vec_txt, sizeof vec_txt);
    nt = parse_txt(name, vec_txt, txt_len);

    /* The .bin is exactly one frame, and decodes. */
    memset(&d, 0, sizeof d);
    cr_assert_eq(asgi_frame_header_decode(vec_bin, bin_len, ASGI_MAX_LEN, &d.h), ASGI_OK, "%s",
                 name);
    cr_assert_eq(ASGI_FRAME_HDR_LEN + d.h.length, bin_len, "%s: the file is one frame", name);
    cr_assert_eq(vec_bin[5] & 0x80, 0, "%s: R set (the encoder could not give these bytes back)",
                 name);
    cr_assert_eq(
        decode_payload(&d, vec_bin + ASGI_FRAME_HDR_LEN, d.h.length, MAX_HEADERS, MAX_SUBS),
        ASGI_OK, "%s", name);

    /* Every field, in order, is the .txt's; counts are the number of lines. */
    nw = want_frame(&d);
    for (size_t k = 0; k < nt && k < nw; k++) {
        const struct item *t = &txt_items[k], *w = &want_items[k];

        cr_assert_str_eq(t->key, w->key, "%s.txt:%d: '%s' where the frame has '%s'", name, t->line,
                         t->key, w->key);
        cr_assert_eq(t->nvals, w->nvals, "%s.txt:%d: %s: %d values, want %d", name, t->line, t->key,
                     t->nvals, w->nvals);
        for (int v = 0; v < t->nvals; v++) {
            cr_assert_eq(t->v[v].is_str, w->v[v].is_str, "%s.txt:%d: %s: string vs number", name,
                         t->line, t->key);
            if (w->v[v].is_str)
                cr_expect(str_eq(&t->v[v].s, &w->v[v].s),
                          "%s.txt:%d: %s: .txt has \"%.*s\" (%zu bytes), .bin \"%.*s\" (%zu)", name,
                          t->line, t->key, (int)t->v[v].s.len, t->v[v].s.p, t->v[v].s.len,
                          (int)w->v[v].s.len, w->v[v].s.p, w->v[v].s.len);
            else
                cr_expect_eq(t->v[v].num, w->v[v].num, "%s.txt:%d: %s: .txt %llu, .bin %llu", name,
                             t->line, t->key, (unsigned long long)t->v[v].num,
                             (unsigned long long)w->v[v].num);
        }
    }
    cr_assert_eq(nt, nw, "%s: %zu lines in .txt, %zu fields in .bin (next: '%s')", name, nt, nw,
                 nt < nw ? want_items[nt].key : txt_items[nw].key);

    /* What decoded encodes back to the .bin, byte for byte. */
    n = encode_frame(buf, sizeof buf, ASGI_MAX_LEN, &d);
    cr_assert_eq(n, (int)bin_len, "%s: encoded %d bytes, .bin has %zu", name, n, bin_len);
    cr_expect_eq(memcmp(buf, vec_bin, bin_len), 0, "%s: first difference at byte %zu", name,
                 first_diff(buf, vec_bin, bin_len));
}

Test(asgi_vectors, present_and_paired)
{
    DIR *d = opendir(VEC_DIR);
    struct dirent *e;
    size_t bins = 0, n = list_vectors();

    cr_assert_not_null(d, "cannot open " VEC_DIR " (criterion must run from the repo root)");
    cr_expect_gt(n, 0, VEC_DIR " holds no vector");
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name), k;

        if (len < 5 || strcmp(e->d_name + len - 4, ".bin") != 0)
            continue;
        bins++;
        for (k = 0; k < n; k++)
            if (strlen(vec_names[k]) == len - 4 && memcmp(vec_names[k], e->d_name, len - 4) == 0)
                break;
        cr_expect_lt(k, n, VEC_DIR "%s has no .txt", e->d_name);
    }
    closedir(d);
    cr_expect_eq(bins, n, "every .txt has its .bin");
}
