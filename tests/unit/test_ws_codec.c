/* SPDX-License-Identifier: MIT */
/* Unit tests for the WebSocket codec: the opening handshake and permessage-deflate negotiation,
 * the client frame input path (split anywhere, every close code it can fail with, compressed
 * messages), frame output, deflate round trips and the UTF-8 validator. */
#define ZLIB_CONST
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "gateway/ws_codec.h"

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
#define L(s) (s), sizeof(s) - 1

static int slice_is(struct gw_slice s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

/* ---- handshake ------------------------------------------------------------------------------- */

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define UPG "Upgrade: websocket\r\nConnection: Upgrade\r\n"
#define VER "Sec-WebSocket-Version: 13\r\n"
#define KEYF "Sec-WebSocket-Key: " KEY "\r\n"
#define BASE "Host: a\r\n" UPG KEYF VER

static struct h1_header hs_fields[32];

/* Splits |fields| ("Name: value\r\n" lines, a string literal) into hs_fields; returns the count. */
static size_t hs_split(const char *fields)
{
    size_t n = 0;

    for (const char *p = fields; *p != '\0';) {
        const char *colon = strchr(p, ':'), *eol = strstr(p, "\r\n");
        const char *v = colon + 1;

        cr_assert(colon != NULL && eol != NULL && colon < eol && n < GW_ARRAY_LEN(hs_fields));
        while (*v == ' ')
            v++;
        hs_fields[n].name = (struct gw_slice){p, (size_t)(colon - p)};
        hs_fields[n].value = (struct gw_slice){v, (size_t)(eol - v)};
        n++;
        p = eol + 2;
    }
    return n;
}

static int hs_full(const char *method, int minor, const char *fields,
                   const struct ws_pmd_conf *conf, struct ws_handshake *out, const char **why)
{
    size_t n = hs_split(fields);

    return ws_handshake_check((struct gw_slice){method, strlen(method)}, minor, hs_fields, n, conf,
                              out, why);
}

static const struct ws_pmd_conf pmd_on = {.enabled = 1, .max_window_bits = 15};

static int hs(const char *fields, struct ws_handshake *out)
{
    const char *why;

    return hs_full("GET", 1, fields, &pmd_on, out, &why);
}

/* Runs a handshake with |conf| and returns the Sec-WebSocket-Extensions answer ("" when
 * permessage-deflate was not agreed). */
static const char *pmd_answer(const char *fields, const struct ws_pmd_conf *conf,
                              struct ws_handshake *out)
{
    static char resp[129];
    const char *why;
    size_t n;

    cr_assert_eq(hs_full("GET", 1, fields, conf, out, &why), 0, "%s", why ? why : "-");
    if (!out->deflate)
        return "";
    n = ws_pmd_response(&out->pmd, resp, 128);
    cr_assert_gt(n, 0);
    resp[n] = '\0';
    return resp;
}

Test(ws_codec, handshake_ok)
{
    struct ws_handshake out;
    const char *why = "x";

    cr_assert_eq(hs_full("GET", 1, BASE "Origin: https://example.com\r\n", &pmd_on, &out, &why), 0);
    cr_expect_null(why);
    cr_expect(slice_is(out.key, KEY));
    cr_expect(slice_is(out.origin, "https://example.com"));
    cr_expect_eq(out.deflate, 0, "nothing offered");
    cr_assert_eq(hs(BASE, &out), 0);
    cr_expect_eq(out.origin.len, 0, "no Origin: empty slice");
}

Test(ws_codec, handshake_method_and_version_400)
{
    struct ws_handshake out;
    const char *why = NULL;

    cr_expect_eq(hs_full("POST", 1, BASE, &pmd_on, &out, &why), 400);
    cr_expect_not_null(why);
    cr_expect_eq(hs_full("get", 1, BASE, &pmd_on, &out, &why), 400, "methods are case-sensitive");
    cr_expect_eq(hs_full("GETX", 1, BASE, &pmd_on, &out, &why), 400);
    cr_expect_eq(hs_full("GET", 0, BASE, &pmd_on, &out, &why), 400, "HTTP/1.0");
    /* Checked first: before a missing version (426) and before a missing Upgrade. */
    cr_expect_eq(hs_full("POST", 1, "Host: a\r\n", &pmd_on, &out, &why), 400);
    cr_expect_eq(hs_full("GET", 0, "Host: a\r\n" UPG KEYF, &pmd_on, &out, &why), 400);
}

Test(ws_codec, handshake_upgrade_connection_400)
{
    struct ws_handshake out;

    cr_expect_eq(hs("Connection: Upgrade\r\n" KEYF VER, &out), 400, "no Upgrade");
    cr_expect_eq(hs("Upgrade: h2c\r\nConnection: Upgrade\r\n" KEYF VER, &out), 400);
    cr_expect_eq(hs("Upgrade: websockets\r\nConnection: Upgrade\r\n" KEYF VER, &out), 400);
    cr_expect_eq(hs("Upgrade: websocket\r\n" KEYF VER, &out), 400, "no Connection");
    cr_expect_eq(hs("Upgrade: websocket\r\nConnection: keep-alive\r\n" KEYF VER, &out), 400);
    cr_expect_eq(hs("Upgrade: websocket\r\nConnection: upgrades\r\n" KEYF VER, &out), 400);
    /* Before the version: a request without Upgrade and without version is a 400. */
    cr_expect_eq(hs("Connection: Upgrade\r\n" KEYF, &out), 400);
    cr_expect_eq(hs("Upgrade: websocket\r\n" KEYF, &out), 400);
}

Test(ws_codec, handshake_lists_and_case)
{
    struct ws_handshake out;

    cr_expect_eq(
        hs("Upgrade: foo/1, WebSocket\r\nConnection: keep-alive, UPGRADE\r\n" KEYF VER, &out), 0);
    cr_expect_eq(
        hs("Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n" KEYF VER,
           &out),
        0, "several Connection fields");
    cr_expect_eq(hs("Upgrade: h2c\r\nUpgrade: websocket\r\nConnection: upgrade\r\n" KEYF VER, &out),
                 0, "several Upgrade fields");
    cr_expect_eq(hs("UPGRADE: WEBSOCKET\r\nconnection: upgrade\r\nsec-websocket-key: " KEY
                    "\r\nSEC-WEBSOCKET-VERSION: 13\r\noRiGiN: o\r\n",
                    &out),
                 0, "names are case-insensitive");
    cr_expect(slice_is(out.origin, "o"));
    cr_expect(slice_is(out.key, KEY));
}

Test(ws_codec, handshake_version_426)
{
    struct ws_handshake out;
    const char *why = NULL;

    cr_expect_eq(hs_full("GET", 1, "Host: a\r\n" UPG KEYF, &pmd_on, &out, &why), 426);
    cr_expect_not_null(why);
    cr_expect_eq(hs(UPG KEYF "Sec-WebSocket-Version: 8\r\n", &out), 426);
    cr_expect_eq(hs(UPG KEYF "Sec-WebSocket-Version: 013\r\n", &out), 426);
    cr_expect_eq(hs(UPG KEYF "Sec-WebSocket-Version: 13, 8\r\n", &out), 426);
    cr_expect_eq(hs(UPG KEYF "Sec-WebSocket-Version: \r\n", &out), 426);
    cr_expect_eq(hs(UPG KEYF VER VER, &out), 426, "repeated");
    /* Checked before the key. */
    cr_expect_eq(hs(UPG "Sec-WebSocket-Version: 12\r\n", &out), 426);
}

Test(ws_codec, handshake_key_400)
{
    struct ws_handshake out;

    cr_expect_eq(hs(UPG VER, &out), 400, "missing");
    cr_expect_eq(hs(UPG KEYF KEYF VER, &out), 400, "repeated");
    cr_expect_eq(hs(UPG "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n" VER, &out), 400);
    cr_expect_eq(hs(UPG "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n" VER, &out), 400);
    cr_expect_eq(hs(UPG "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQxx\r\n" VER, &out), 400,
                 "24 characters but 18 bytes");
    cr_expect_eq(hs(UPG "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n" VER, &out), 400);
    cr_expect_eq(hs(UPG "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ===\r\n" VER, &out), 400);
    cr_expect_eq(hs(UPG "Sec-WebSocket-Key: \r\n" VER, &out), 400);
    cr_expect_eq(hs(UPG "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA+/==\r\n" VER, &out), 0);
}

Test(ws_codec, accept_key_rfc_example)
{
    char out[29];

    ws_accept_key((struct gw_slice){L(KEY)}, out);
    cr_expect_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); /* RFC 6455 §1.3 */
}

Test(ws_codec, pmd_disabled)
{
    static const struct ws_pmd_conf off = {.enabled = 0, .max_window_bits = 15};
    struct ws_handshake out;
    const char *why;

    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate\r\n", &off, &out), "");
    cr_assert_eq(hs_full("GET", 1, BASE "Sec-WebSocket-Extensions: permessage-deflate\r\n", NULL,
                         &out, &why),
                 0);
    cr_expect_eq(out.deflate, 0);
}

Test(ws_codec, pmd_plain_offer)
{
    struct ws_handshake out;

    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate\r\n", &pmd_on, &out),
        "permessage-deflate");
    cr_expect_eq(out.pmd.server_max_window_bits, 15);
    cr_expect_eq(out.pmd.client_max_window_bits, 15);
    cr_expect_eq(out.pmd.server_no_context_takeover, 0);
    cr_expect_eq(out.pmd.client_no_context_takeover, 0);
    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: PerMessage-Deflate\r\n", &pmd_on, &out),
        "permessage-deflate", "extension names are case-insensitive");
}

Test(ws_codec, pmd_browser_offer)
{
    struct ws_handshake out;

    /* What browsers send. */
    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "client_max_window_bits\r\n",
                                &pmd_on, &out),
                     "permessage-deflate");
    cr_expect_eq(out.pmd.client_max_window_bits, 15);
    static const struct ws_pmd_conf small = {.enabled = 1, .max_window_bits = 12};
    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "client_max_window_bits\r\n",
                                &small, &out),
                     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12");
    cr_expect_eq(out.pmd.server_max_window_bits, 12);
    cr_expect_eq(out.pmd.client_max_window_bits, 12);
}

Test(ws_codec, pmd_all_parameters)
{
    struct ws_handshake out;

    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "server_no_context_takeover;client_no_context_takeover ; "
                                     "server_max_window_bits=10; client_max_window_bits = 9\r\n",
                                &pmd_on, &out),
                     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                     "server_max_window_bits=10; client_max_window_bits=9");
    cr_expect_eq(out.pmd.server_no_context_takeover, 1);
    cr_expect_eq(out.pmd.client_no_context_takeover, 1);
    cr_expect_eq(out.pmd.server_max_window_bits, 10);
    cr_expect_eq(out.pmd.client_max_window_bits, 9);
}

Test(ws_codec, pmd_quoted_values)
{
    struct ws_handshake out;

    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                        "client_max_window_bits=\"10\"; server_max_window_bits=\"1\\1\"\r\n",
                   &pmd_on, &out),
        "permessage-deflate; server_max_window_bits=11; client_max_window_bits=10");
    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "server_max_window_bits=\"\"\r\n",
                                &pmd_on, &out),
                     "", "an empty quoted value is out of range");
    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "client_max_window_bits=\"10\r\n",
                                &pmd_on, &out),
                     "", "unterminated quoted-string");
}

Test(ws_codec, pmd_bad_offers_skipped)
{
    static const char *const bad[] = {
        "permessage-deflate; foo",
        "permessage-deflate; foo=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=100",
        "permessage-deflate; client_max_window_bits=1x",
        "permessage-deflate; =10",
        "permessage-deflate;",
        "permessage-deflate x",
        "permessage-deflate; client_max_window_bits=",
        "x-webkit-deflate-frame",
        "; permessage-deflate",
        "\"permessage-deflate\"",
    };
    static char fields[512];
    struct ws_handshake out;

    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        snprintf(fields, sizeof fields, BASE "Sec-WebSocket-Extensions: %s\r\n", bad[i]);
        cr_expect_str_eq(pmd_answer(fields, &pmd_on, &out), "", "%s", bad[i]);
        /* The next acceptable offer wins. */
        snprintf(fields, sizeof fields,
                 BASE "Sec-WebSocket-Extensions: %s, permessage-deflate; "
                      "client_no_context_takeover\r\n",
                 bad[i]);
        cr_expect_str_eq(pmd_answer(fields, &pmd_on, &out),
                         "permessage-deflate; client_no_context_takeover", "%s", bad[i]);
    }
}

Test(ws_codec, pmd_first_acceptable_offer)
{
    struct ws_handshake out;

    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "server_max_window_bits=8, permessage-deflate; "
                                     "server_max_window_bits=9, permessage-deflate\r\n",
                                &pmd_on, &out),
                     "permessage-deflate; server_max_window_bits=9",
                     "a server window of 8 cannot be honoured with zlib: declined");
    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: foo; a=\"x, permessage-deflate\", "
                                     "permessage-deflate; server_no_context_takeover\r\n",
                                &pmd_on, &out),
                     "permessage-deflate; server_no_context_takeover",
                     "a comma inside a quoted-string does not split offers");
    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: foo\r\n"
                                     "Sec-WebSocket-Extensions: permessage-deflate; bar\r\n"
                                     "Sec-WebSocket-Extensions: , permessage-deflate; "
                                     "client_max_window_bits=11\r\n",
                                &pmd_on, &out),
                     "permessage-deflate; client_max_window_bits=11", "several fields, in order");
    cr_expect_str_eq(pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "server_max_window_bits=8\r\n",
                                &pmd_on, &out),
                     "");
}

Test(ws_codec, pmd_window_clamping)
{
    static const struct ws_pmd_conf c10 = {.enabled = 1, .max_window_bits = 10};
    static const struct ws_pmd_conf c9 = {.enabled = 1, .max_window_bits = 9};
    struct ws_handshake out;

    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; "
                        "client_max_window_bits=13\r\n",
                   &c10, &out),
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10");
    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9; "
                        "client_max_window_bits=8\r\n",
                   &c10, &out),
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8",
        "smaller offers stand");
    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate\r\n", &c10, &out),
        "permessage-deflate; server_max_window_bits=10",
        "the client window cannot be limited unless offered");
    cr_expect_eq(out.pmd.client_max_window_bits, 15);
    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8; "
                        "client_max_window_bits\r\n",
                   &c9, &out),
        "");
    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
                   &c9, &out),
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9");
}

Test(ws_codec, pmd_conf_no_context_takeover)
{
    static const struct ws_pmd_conf nct = {
        .enabled = 1, .max_window_bits = 15, .no_context_takeover = 1};
    struct ws_handshake out;

    cr_expect_str_eq(
        pmd_answer(BASE "Sec-WebSocket-Extensions: permessage-deflate\r\n", &nct, &out),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    cr_expect_eq(out.pmd.server_no_context_takeover, 1);
    cr_expect_eq(out.pmd.client_no_context_takeover, 1);
}

Test(ws_codec, pmd_response_room)
{
    struct ws_pmd all = {1, 1, 8, 8};
    char out[128];
    size_t n = ws_pmd_response(&all, out, sizeof out);

    cr_assert_gt(n, 0);
    cr_expect_eq(ws_pmd_response(&all, out, n - 1), 0);
    cr_expect_eq(ws_pmd_response(&all, out, n), n);
}

Test(ws_codec, next_token)
{
    static const char list[] = " chat , ,superchat.v2,\tx ,";
    struct gw_slice l = {L(list)}, tok;
    size_t pos = 0;

    cr_assert_eq(ws_next_token(l, &pos, &tok), 1);
    cr_expect(slice_is(tok, "chat"));
    cr_assert_eq(ws_next_token(l, &pos, &tok), 1);
    cr_expect(slice_is(tok, "superchat.v2"));
    cr_assert_eq(ws_next_token(l, &pos, &tok), 1);
    cr_expect(slice_is(tok, "x"));
    cr_expect_eq(ws_next_token(l, &pos, &tok), 0);
    cr_expect_eq(ws_next_token(l, &pos, &tok), 0);
    pos = 0;
    cr_expect_eq(ws_next_token((struct gw_slice){L(" , ")}, &pos, &tok), 0);
}

/* ---- frame input: driver --------------------------------------------------------------------- */

#define BIG (1u << 22)
#define MAX_MSGS 64
#define MAX_CTLS 64

/* The client bytes under test; frames are masked with a key that changes per frame. */
static uint8_t wire[BIG];
static size_t wire_len;
static unsigned wire_frames;

static void put_raw(const void *p, size_t n)
{
    cr_assert_leq(wire_len + n, sizeof wire);
    memcpy(wire + wire_len, p, n);
    wire_len += n;
}

/* Appends a masked client frame: |b0| is the first byte (FIN, RSV, opcode); |form| 0 uses the
 * shortest length encoding, 16 or 64 force that one. */
static void put_frame_form(unsigned b0, const void *payload, size_t len, int form)
{
    const uint8_t *pl = payload;
    uint8_t h[14], key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t hl = 2;

    for (int i = 0; i < 4; i++)
        key[i] = (uint8_t)(key[i] ^ (wire_frames * 29u + (unsigned)i));
    wire_frames++;
    h[0] = (uint8_t)b0;
    if (form == 0 && len < 126) {
        h[1] = (uint8_t)(0x80 | len);
    } else if (form != 64 && len <= 0xffff) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    memcpy(h + hl, key, 4);
    put_raw(h, hl + 4);
    cr_assert_leq(wire_len + len, sizeof wire);
    for (size_t i = 0; i < len; i++)
        wire[wire_len + i] = pl[i] ^ key[i & 3];
    wire_len += len;
}

static void put_frame(unsigned b0, const void *payload, size_t len)
{
    put_frame_form(b0, payload, len, 0);
}

static void wire_reset(void)
{
    wire_len = 0;
    wire_frames = 0;
}

struct msg {
    int text;
    size_t off, len; /* into |res_data| */
    size_t pieces;
};

struct ctl {
    enum ws_in_type type;
    unsigned code;
    uint8_t data[125];
    size_t len;
    size_t at; /* message bytes delivered before it */
};

struct res {
    struct msg msg[MAX_MSGS];
    size_t nmsg; /* messages started */
    size_t fins; /* messages ended */
    int open;
    struct ctl ctl[MAX_CTLS];
    size_t nctl;
    enum ws_in_type end; /* WS_IN_CLOSE or WS_IN_ERROR when it stopped, else WS_IN_NEED */
    unsigned code;
    const char *why;
    size_t left; /* bytes never consumed */
    size_t calls;
    size_t stalls; /* DATA events that consumed nothing (output space lacking) */
    size_t max_piece;
};

static uint8_t res_data[BIG];
static size_t res_len;
static uint8_t pend[BIG];
static uint8_t scratch[1 << 16];

static void record(struct res *r, enum ws_in_type t, const struct ws_in_event *ev, size_t used,
                   size_t have, size_t scap)
{
    struct msg *m;
    struct ctl *c;

    cr_assert_eq(t, ev->type);
    switch (t) {
    case WS_IN_NEED:
        break;
    case WS_IN_DATA:
        cr_assert(ev->len == 0 || (ev->data >= pend && ev->data + ev->len <= pend + have) ||
                      (ev->data >= scratch && ev->data + ev->len <= scratch + scap),
                  "data points into the input or the scratch");
        if (ev->flags & WS_F_FIRST) {
            cr_assert(!r->open, "FIRST inside a message");
            cr_assert_lt(r->nmsg, MAX_MSGS);
            m = &r->msg[r->nmsg++];
            m->text = (ev->flags & WS_F_TEXT) != 0;
            m->off = res_len;
            m->len = m->pieces = 0;
            r->open = 1;
        }
        cr_assert(r->open, "a piece without FIRST outside a message");
        m = &r->msg[r->nmsg - 1];
        cr_assert_eq((ev->flags & WS_F_TEXT) != 0, m->text, "TEXT flag changed inside a message");
        cr_assert(ev->len > 0 || (ev->flags & WS_F_FIN), "an empty piece that is not the last");
        cr_assert_leq(res_len + ev->len, sizeof res_data);
        memcpy(res_data + res_len, ev->data, ev->len);
        res_len += ev->len;
        m->len += ev->len;
        m->pieces++;
        if (ev->len > r->max_piece)
            r->max_piece = ev->len;
        if (used == 0)
            r->stalls++;
        if (ev->flags & WS_F_FIN) {
            r->open = 0;
            r->fins++;
        }
        break;
    case WS_IN_PING:
    case WS_IN_PONG:
    case WS_IN_CLOSE:
        cr_assert_lt(r->nctl, MAX_CTLS);
        cr_assert_leq(ev->len, 125);
        c = &r->ctl[r->nctl++];
        c->type = t;
        c->code = ev->code;
        c->len = ev->len;
        c->at = res_len;
        if (ev->len)
            memcpy(c->data, ev->data, ev->len);
        break;
    case WS_IN_ERROR:
        cr_assert_not_null(ev->why);
        break;
    }
    if (t == WS_IN_CLOSE || t == WS_IN_ERROR) {
        r->end = t;
        r->code = ev->code;
        r->why = ev->why;
    }
}

/* Feeds |w[0..n)| to |s| as a caller does: |first| bytes, then |chunk| bytes at a time (0: all
 * that is left), each appended to what the codec left unconsumed, calling until WS_IN_NEED.
 * Stops at a close or an error and checks that the codec then reads nothing more. */
static void drive_split(struct ws_in *s, const uint8_t *w, size_t n, size_t first, size_t chunk,
                        size_t scap, struct res *r)
{
    size_t have = 0, off = 0, take = first;

    memset(r, 0, sizeof *r);
    res_len = 0;
    for (;;) {
        if (take > n - off)
            take = n - off;
        memcpy(pend + have, w + off, take);
        have += take;
        off += take;
        for (;;) {
            struct ws_in_event ev;
            size_t used = 12345;
            enum ws_in_type t = ws_in_next(s, pend, have, &used, scratch, scap, &ev);

            r->calls++;
            cr_assert_leq(used, have);
            record(r, t, &ev, used, have, scap);
            memmove(pend, pend + used, have - used);
            have -= used;
            if (t == WS_IN_NEED)
                break;
            if (t == WS_IN_CLOSE || t == WS_IN_ERROR) {
                r->left = have + n - off;
                cr_assert(s->closed);
                memcpy(pend + have, "\x81\x80\0\0\0\0", 6);
                t = ws_in_next(s, pend, have + 6, &used, scratch, scap, &ev);
                cr_assert_eq(t, WS_IN_NEED, "nothing is read after a close or an error");
                cr_assert_eq(used, 0);
                return;
            }
            cr_assert_lt(r->calls, (size_t)1 << 26, "no progress");
        }
        if (off == n)
            break;
        take = chunk ? chunk : n - off;
    }
    r->left = have;
}

static void drive(struct ws_in *s, const uint8_t *w, size_t n, size_t chunk, size_t scap,
                  struct res *r)
{
    drive_split(s, w, n, chunk ? chunk : n, chunk, scap, r);
}

/* A fresh input state over |conf|, driven over the wire. */
static void run(const struct ws_in_conf *conf, size_t chunk, size_t scap, struct res *r)
{
    struct ws_in s = {.conf = *conf};

    drive(&s, wire, wire_len, chunk, scap, r);
    ws_in_free(&s);
    cr_assert_null(s.z);
}

static int msg_is(const struct res *r, size_t i, const void *want, size_t len)
{
    return i < r->nmsg && r->msg[i].len == len &&
           (len == 0 || memcmp(res_data + r->msg[i].off, want, len) == 0);
}

static const struct ws_in_conf plain = {.max_message = 1 << 20};
static const struct ws_in_conf pmd15 = {.max_message = 1 << 22, .deflate = 1, .window_bits = 15};

/* The RFC 6455 §5.7 example: a masked text frame "Hello". */
static const uint8_t rfc_hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};

Test(ws_codec, in_rfc_masked_hello)
{
    struct ws_in s = {.conf = plain};
    struct ws_in_event ev;
    uint8_t b[sizeof rfc_hello];
    size_t used;

    memcpy(b, rfc_hello, sizeof b);
    cr_assert_eq(ws_in_next(&s, b, sizeof b, &used, scratch, 256, &ev), WS_IN_DATA);
    cr_expect_eq(used, sizeof b);
    cr_expect_eq(ev.flags, WS_F_TEXT | WS_F_FIRST | WS_F_FIN);
    cr_assert_eq(ev.len, 5);
    cr_expect_eq(memcmp(ev.data, "Hello", 5), 0);
    cr_expect_eq(ev.data, b + 6, "unmasked in place");
    cr_expect_eq(ws_in_next(&s, b + used, 0, &used, scratch, 256, &ev), WS_IN_NEED);
    cr_expect_eq(used, 0);
    cr_expect_eq(s.msg_op, 0, "no message open");
}

Test(ws_codec, in_unmasked_frame_1002)
{
    static const uint8_t unmasked[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    struct ws_in s = {.conf = plain};
    struct ws_in_event ev;
    uint8_t b[sizeof unmasked];
    size_t used;

    memcpy(b, unmasked, sizeof b);
    cr_assert_eq(ws_in_next(&s, b, 2, &used, scratch, 256, &ev), WS_IN_ERROR,
                 "known from the first two bytes");
    cr_expect_eq(ev.code, WS_CLOSE_PROTOCOL);
    cr_expect(s.closed);
    cr_expect_eq(ws_in_next(&s, b, sizeof b, &used, scratch, 256, &ev), WS_IN_NEED);
    cr_expect_eq(used, 0);
}

Test(ws_codec, in_header_consumed_only_whole)
{
    static const uint8_t payload[300] = {1};
    struct ws_in s = {.conf = plain};
    struct ws_in_event ev;
    size_t used;

    wire_reset();
    put_frame_form(0x82, payload, 300, 64); /* a 14-byte header */
    for (size_t cut = 0; cut < 14; cut++) {
        memcpy(pend, wire, wire_len);
        cr_assert_eq(ws_in_next(&s, pend, cut, &used, scratch, 256, &ev), WS_IN_NEED, "cut=%zu",
                     cut);
        cr_assert_eq(used, 0, "cut=%zu", cut);
    }
    memcpy(pend, wire, wire_len);
    cr_assert_eq(ws_in_next(&s, pend, 14, &used, scratch, 256, &ev), WS_IN_NEED);
    cr_expect_eq(used, 14, "a data frame's header is consumed before its payload");
    cr_assert_eq(ws_in_next(&s, pend + 14, 100, &used, scratch, 256, &ev), WS_IN_DATA);
    cr_expect_eq(used, 100);
    cr_expect_eq(ev.flags, WS_F_FIRST);
    cr_assert_eq(ws_in_next(&s, pend + 114, 200, &used, scratch, 256, &ev), WS_IN_DATA);
    cr_expect_eq(ev.flags, WS_F_FIN);
    cr_expect_eq(ev.len, 200);
}

Test(ws_codec, in_control_consumed_only_whole)
{
    struct ws_in s = {.conf = plain};
    struct ws_in_event ev;
    size_t used;

    wire_reset();
    put_frame(0x89, "ping!", 5);
    memcpy(pend, wire, wire_len);
    for (size_t cut = 0; cut < wire_len; cut++) {
        cr_assert_eq(ws_in_next(&s, pend, cut, &used, scratch, 256, &ev), WS_IN_NEED);
        cr_assert_eq(used, 0, "cut=%zu", cut);
    }
    cr_assert_eq(ws_in_next(&s, pend, wire_len, &used, scratch, 256, &ev), WS_IN_PING);
    cr_expect_eq(used, wire_len);
    cr_assert_eq(ev.len, 5);
    cr_expect_eq(memcmp(ev.data, "ping!", 5), 0);
}

Test(ws_codec, in_lengths_7_16_64)
{
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70001};
    static uint8_t payload[70001];
    struct res r;

    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7 + (i >> 8));
    for (size_t k = 0; k < GW_ARRAY_LEN(sizes); k++) {
        for (int form = 0; form <= 64; form += form == 0 ? 16 : 48) {
            wire_reset();
            put_frame_form(0x82, payload, sizes[k], form);
            run(&plain, 0, 256, &r);
            cr_assert_eq(r.end, WS_IN_NEED, "size %zu form %d: %s", sizes[k], form,
                         r.why ? r.why : "-");
            cr_expect_eq(r.fins, 1);
            cr_expect(msg_is(&r, 0, payload, sizes[k]), "size %zu form %d", sizes[k], form);
            cr_expect_eq(r.left, 0);
        }
    }
    /* Byte by byte, the payload comes out in one-byte pieces, unmasked right. */
    wire_reset();
    put_frame(0x82, payload, 70001);
    run(&plain, 1, 256, &r);
    cr_expect(msg_is(&r, 0, payload, 70001));
    cr_expect_eq(r.msg[0].pieces, 70001);
}

Test(ws_codec, in_top_bit_length_1002)
{
    static const uint8_t f[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    struct res r;

    wire_reset();
    put_raw(f, sizeof f);
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_ERROR);
    cr_expect_eq(r.code, WS_CLOSE_PROTOCOL);
    /* 2^63 - 1 is a length; with no limit it is only waited for. */
    static const struct ws_in_conf nolimit = {0};
    static const uint8_t g[] = {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 1,    2,    3,    4};
    wire_reset();
    put_raw(g, sizeof g);
    run(&nolimit, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED);
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.code, WS_CLOSE_TOO_BIG);
}

Test(ws_codec, in_non_minimal_lengths_accepted)
{
    struct res r;

    wire_reset();
    put_frame_form(0x81, "abc", 3, 16);
    put_frame_form(0x81, "de", 2, 64);
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED);
    cr_expect_eq(r.fins, 2);
    cr_expect(msg_is(&r, 0, "abc", 3));
    cr_expect(msg_is(&r, 1, "de", 2));
    /* Not for control frames: an extended length there is over 125 or not minimal. */
    wire_reset();
    put_frame_form(0x89, "p", 1, 16);
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.code, WS_CLOSE_PROTOCOL);
}

/* A stream with every kind of event: a text message in three fragments with a ping and a pong
 * between them and UTF-8 characters cut by the fragment boundaries, a binary message with a
 * 16-bit length, an empty text message, a close. */
static void mixed_stream(void)
{
    static uint8_t bin[300];

    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (uint8_t)(255 - i);
    wire_reset();
    put_frame(0x01, L("caf\xc3"));
    put_frame(0x89, L("are you there?"));
    put_frame(0x00, L("\xa9 \xe2\x82"));
    put_frame(0x8a, L(""));
    put_frame(0x80, L("\xac \xf0\x9f\x98\x80!"));
    put_frame(0x82, bin, sizeof bin);
    put_frame(0x81, L(""));
    put_frame(0x88, L("\x03\xe8"
                      "bye \xc3\xa9"));
}

static void check_mixed(const struct res *r, size_t chunk)
{
    static const char text[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80!";

    cr_assert_eq(r->end, WS_IN_CLOSE, "chunk %zu: %s", chunk, r->why ? r->why : "-");
    cr_assert_eq(r->nmsg, 3, "chunk %zu", chunk);
    cr_expect_eq(r->fins, 3);
    cr_expect(r->msg[0].text && msg_is(r, 0, text, sizeof text - 1), "chunk %zu", chunk);
    cr_expect(!r->msg[1].text && r->msg[1].len == 300, "chunk %zu", chunk);
    cr_expect(res_data[r->msg[1].off] == 255 && res_data[r->msg[1].off + 299] == 255 - 299 % 256);
    cr_expect(r->msg[2].text && r->msg[2].len == 0 && r->msg[2].pieces == 1);
    cr_assert_eq(r->nctl, 3);
    cr_expect_eq(r->ctl[0].type, WS_IN_PING);
    cr_expect_eq(r->ctl[0].at, 4, "between the fragments");
    cr_expect(r->ctl[0].len == 14 && memcmp(r->ctl[0].data, "are you there?", 14) == 0);
    cr_expect_eq(r->ctl[1].type, WS_IN_PONG);
    cr_expect_eq(r->ctl[1].len, 0);
    cr_expect_eq(r->ctl[2].type, WS_IN_CLOSE);
    cr_expect_eq(r->ctl[2].code, 1000);
    cr_expect(r->ctl[2].len == 6 && memcmp(r->ctl[2].data, "bye \xc3\xa9", 6) == 0);
    cr_expect_eq(r->left, 0);
}

Test(ws_codec, in_mixed_stream_every_chunk_size)
{
    struct res r;

    mixed_stream();
    for (size_t chunk = 0; chunk <= wire_len; chunk++) {
        run(&plain, chunk, 256, &r);
        check_mixed(&r, chunk);
    }
}

Test(ws_codec, in_mixed_stream_split_at_every_byte)
{
    struct res r;

    mixed_stream();
    for (size_t cut = 0; cut <= wire_len; cut++) {
        struct ws_in s = {.conf = plain};

        drive_split(&s, wire, wire_len, cut, 0, 256, &r);
        check_mixed(&r, cut);
        ws_in_free(&s);
    }
}

Test(ws_codec, in_empty_frames)
{
    struct res r;

    wire_reset();
    put_frame(0x81, L(""));
    put_frame(0x02, L(""));
    put_frame(0x00, L("ab"));
    put_frame(0x00, L(""));
    put_frame(0x80, L(""));
    for (size_t chunk = 0; chunk < 2; chunk++) {
        run(&plain, chunk, 256, &r);
        cr_assert_eq(r.end, WS_IN_NEED);
        cr_assert_eq(r.fins, 2);
        cr_expect(r.msg[0].text && r.msg[0].len == 0 && r.msg[0].pieces == 1,
                  "an empty message is one FIRST|FIN piece");
        cr_expect(msg_is(&r, 1, "ab", 2));
        cr_expect_eq(r.msg[1].pieces, 2 + chunk, "\"ab\", then an empty FIN piece");
    }
}

Test(ws_codec, in_utf8_across_fragments)
{
    static const char *const good[][3] = {
        {"\xc3", "\xa9", ""},
        {"\xe2", "\x82", "\xac"},
        {"\xf0\x9f", "\x98", "\x80"},
        {"a\xf4\x8f", "\xbf\xbf", "z"},
    };
    static const char *const bad[][3] = {
        {"\xc3", "(", ""},        {"\xe0", "\x80", "\x80"},
        {"\xed", "\xa0\x80", ""}, {"\xf4\x90", "\x80", "\x80"},
        {"ok", "\xe2\x82", ""}, /* ends inside a character */
        {"\xf0\x9f\x98", "", ""},
    };
    struct res r;

    for (size_t i = 0; i < GW_ARRAY_LEN(good); i++) {
        wire_reset();
        put_frame(0x01, good[i][0], strlen(good[i][0]));
        put_frame(0x00, good[i][1], strlen(good[i][1]));
        put_frame(0x80, good[i][2], strlen(good[i][2]));
        run(&plain, 1, 256, &r);
        cr_expect_eq(r.end, WS_IN_NEED, "good %zu: %s", i, r.why ? r.why : "-");
        cr_expect_eq(r.fins, 1, "good %zu", i);
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        wire_reset();
        put_frame(0x01, bad[i][0], strlen(bad[i][0]));
        put_frame(0x00, bad[i][1], strlen(bad[i][1]));
        put_frame(0x80, bad[i][2], strlen(bad[i][2]));
        run(&plain, 0, 256, &r);
        cr_expect_eq(r.end, WS_IN_ERROR, "bad %zu", i);
        cr_expect_eq(r.code, WS_CLOSE_INVALID_DATA, "bad %zu", i);
        cr_expect_eq(r.fins, 0, "bad %zu: the message never ends", i);
    }
    /* Binary messages are not checked. */
    wire_reset();
    put_frame(0x82, L("\xff\xc0\x80"));
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED);
}

Test(ws_codec, in_close_codes)
{
    static const unsigned ok[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                  1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const unsigned bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535};
    uint8_t p[2];
    struct res r;

    for (size_t i = 0; i < GW_ARRAY_LEN(ok); i++) {
        p[0] = (uint8_t)(ok[i] >> 8);
        p[1] = (uint8_t)ok[i];
        wire_reset();
        put_frame(0x88, p, 2);
        run(&plain, 0, 256, &r);
        cr_expect_eq(r.end, WS_IN_CLOSE, "%u", ok[i]);
        cr_expect_eq(r.code, ok[i]);
        cr_expect_eq(r.ctl[0].len, 0, "no reason");
        cr_expect(ws_close_code_valid(ok[i]));
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        p[0] = (uint8_t)(bad[i] >> 8);
        p[1] = (uint8_t)bad[i];
        wire_reset();
        put_frame(0x88, p, 2);
        run(&plain, 0, 256, &r);
        cr_expect_eq(r.end, WS_IN_ERROR, "%u", bad[i]);
        cr_expect_eq(r.code, WS_CLOSE_PROTOCOL, "%u", bad[i]);
        cr_expect_not(ws_close_code_valid(bad[i]));
    }
    wire_reset();
    put_frame(0x88, L(""));
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_CLOSE);
    cr_expect_eq(r.code, WS_CLOSE_NO_STATUS, "empty close: 1005");
    /* A close inside a fragmented message ends everything. */
    wire_reset();
    put_frame(0x01, L("part"));
    put_frame(0x88, L("\x0f\xa0"
                      "why"));
    put_frame(0x80, L("rest"));
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_CLOSE);
    cr_expect_eq(r.code, 4000);
    cr_expect_eq(r.fins, 0);
    cr_expect_eq(r.left, 6 + 4);
}

/* Frames that break the protocol, and the close code each one earns. */
struct bad_case {
    const char *name;
    unsigned code;
    int deflate;
    uint64_t max;
    size_t nf;
    struct {
        unsigned b0;
        const char *p;
        size_t len;
    } f[3];
};

#define F(b0, s)                                                                                   \
    {                                                                                              \
        (b0), (s), sizeof(s) - 1                                                                   \
    }

static const struct bad_case bad_cases[] = {
    {"rsv2", 1002, 0, 0, 1, {F(0xa1, "x")}},
    {"rsv3", 1002, 1, 0, 1, {F(0x91, "x")}},
    {"rsv1 without deflate", 1002, 0, 0, 1, {F(0xc1, "x")}},
    {"rsv1 on a continuation", 1002, 1, 0, 2, {F(0x41, "\xf2\x48"), F(0xc0, "\xcd")}},
    {"rsv1 on a ping", 1002, 1, 0, 1, {F(0xc9, "")}},
    {"rsv1 on a close", 1002, 1, 0, 1, {F(0xc8, "")}},
    {"opcode 3", 1002, 0, 0, 1, {F(0x83, "")}},
    {"opcode 7", 1002, 0, 0, 1, {F(0x87, "")}},
    {"opcode b", 1002, 0, 0, 1, {F(0x8b, "")}},
    {"opcode f", 1002, 0, 0, 1, {F(0x8f, "")}},
    {"fragmented ping", 1002, 0, 0, 1, {F(0x09, "")}},
    {"fragmented close", 1002, 0, 0, 1, {F(0x08, "")}},
    {"continuation first", 1002, 0, 0, 1, {F(0x80, "x")}},
    {"continuation after the end", 1002, 0, 0, 2, {F(0x81, "x"), F(0x80, "y")}},
    {"text inside a message", 1002, 0, 0, 2, {F(0x01, "a"), F(0x81, "b")}},
    {"binary inside a message", 1002, 0, 0, 2, {F(0x02, "a"), F(0x82, "b")}},
    {"close of 1 byte", 1002, 0, 0, 1, {F(0x88, "\x03")}},
    {"close code 1005", 1002, 0, 0, 1, {F(0x88, "\x03\xed")}},
    {"text not UTF-8", 1007, 0, 0, 1, {F(0x81, "a\xff")}},
    {"text overlong", 1007, 0, 0, 1, {F(0x81, "\xc0\x80")}},
    {"text surrogate", 1007, 0, 0, 1, {F(0x81, "\xed\xa0\x80")}},
    {"text past U+10FFFF", 1007, 0, 0, 1, {F(0x81, "\xf4\x90\x80\x80")}},
    {"text cut at FIN", 1007, 0, 0, 1, {F(0x81, "\xe2\x82")}},
    {"close reason not UTF-8", 1007, 0, 0, 1, {F(0x88, "\x03\xe8\xff")}},
    {"close reason cut", 1007, 0, 0, 1, {F(0x88, "\x03\xe8\xc3")}},
    {"compressed garbage", 1007, 1, 0, 1, {F(0xc2, "\xff\xff\xff")}},
    {"compressed text not UTF-8", 1007, 1, 0, 1, {F(0xc1, "\x00\x01\x00\xfe\xff\xff")}},
    {"too big", 1009, 0, 4, 1, {F(0x81, "hello")}},
    {"too big in fragments", 1009, 0, 4, 2, {F(0x01, "hel"), F(0x80, "lo")}},
    {"too big inflated", 1009, 1, 4, 1, {F(0xc1, "\xf2\x48\xcd\xc9\xc9\x07\x00")}},
};
INDEX_PARAMS(ws_codec, in_bad_frames, bad_cases)

ParameterizedTest(size_t *i, ws_codec, in_bad_frames)
{
    const struct bad_case *c = &bad_cases[*i];
    struct ws_in_conf conf = {.max_message = c->max, .deflate = c->deflate, .window_bits = 15};
    struct res r;

    wire_reset();
    for (size_t k = 0; k < c->nf; k++)
        put_frame(c->f[k].b0, c->f[k].p, c->f[k].len);
    for (size_t chunk = 0; chunk < 3; chunk++) {
        run(&conf, chunk, 256, &r);
        cr_expect_eq(r.end, WS_IN_ERROR, "%s", c->name);
        cr_expect_eq(r.code, c->code, "%s: %s", c->name, r.why ? r.why : "-");
    }
}

Test(ws_codec, in_big_control_frames_1002)
{
    static const char p126[126] = {0};
    struct res r;

    wire_reset();
    put_frame(0x89, p126, 126);
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.code, WS_CLOSE_PROTOCOL);
    wire_reset();
    put_frame(0x8a, p126, 125);
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED, "125 is the largest control payload");
    cr_expect_eq(r.ctl[0].len, 125);
    /* Known at the second byte, before the extended length arrives. */
    static const uint8_t hdr[] = {0x88, 0xfe};
    wire_reset();
    put_raw(hdr, sizeof hdr);
    run(&plain, 0, 256, &r);
    cr_expect_eq(r.code, WS_CLOSE_PROTOCOL);
}

Test(ws_codec, in_max_message_refused_at_the_header)
{
    static const struct ws_in_conf small = {.max_message = 10};
    struct res r;

    wire_reset();
    put_frame(0x81, L("0123456789"));
    run(&small, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED, "exactly the limit");
    cr_expect_eq(r.fins, 1);
    /* Only the header of an 11-byte frame: refused without waiting for the payload. */
    wire_reset();
    put_frame(0x82, L("0123456789a"));
    wire_len = 6;
    run(&small, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_ERROR);
    cr_expect_eq(r.code, WS_CLOSE_TOO_BIG);
    /* Fragments: the second header pushes the message over. */
    wire_reset();
    put_frame(0x02, L("01234"));
    put_frame(0x80, L("56789a"));
    wire_len -= 6;
    run(&small, 0, 256, &r);
    cr_expect_eq(r.code, WS_CLOSE_TOO_BIG);
    cr_expect_eq(r.msg[0].len, 5);
    /* The limit is per message. */
    wire_reset();
    put_frame(0x81, L("0123456789"));
    put_frame(0x01, L("01234"));
    put_frame(0x89, L("ping"));
    put_frame(0x80, L("56789"));
    run(&small, 1, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED);
    cr_expect_eq(r.fins, 2);
}

Test(ws_codec, in_reuse_after_free)
{
    struct ws_in s = {.conf = plain};
    struct res r;

    wire_reset();
    put_frame(0x88, L(""));
    drive(&s, wire, wire_len, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_CLOSE);
    ws_in_free(&s);
    memset(&s, 0, sizeof s);
    s.conf = plain;
    drive(&s, rfc_hello, sizeof rfc_hello, 0, 256, &r);
    cr_expect(msg_is(&r, 0, "Hello", 5));
    ws_in_free(&s);
}

/* ---- compressed input ------------------------------------------------------------------------ */

/* Compresses |n| bytes as one permessage-deflate message with zlib directly (not the codec):
 * raw deflate, a sync flush, the 00 00 ff ff removed. |z| carries the context between calls. */
static size_t zcompress(z_stream *z, const void *in, size_t n, uint8_t *out, size_t cap)
{
    z->next_in = in;
    z->avail_in = (uInt)n;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    cr_assert_eq(deflate(z, Z_SYNC_FLUSH), Z_OK);
    cr_assert_eq(z->avail_in, 0);
    cr_assert_neq(z->avail_out, 0);
    size_t len = cap - z->avail_out;
    cr_assert(len >= 4 && memcmp(out + len - 4, "\x00\x00\xff\xff", 4) == 0);
    return len - 4;
}

static void zopen(z_stream *z, int bits)
{
    memset(z, 0, sizeof *z);
    cr_assert_eq(deflateInit2(z, 9, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
}

/* Splits a compressed payload into frames of |frag| bytes (0: one frame), RSV1 on the first. */
static void put_compressed(unsigned op, const uint8_t *p, size_t n, size_t frag)
{
    size_t off = 0;

    if (frag == 0)
        frag = n ? n : 1;
    do {
        size_t k = n - off < frag ? n - off : frag;
        unsigned b0 = (off == 0 ? (0x40 | op) : 0) | (off + k == n ? 0x80 : 0);
        put_frame(b0, p + off, k);
        off += k;
    } while (off < n);
}

/* RFC 7692 §7.2.3 examples. */
static const uint8_t hello_block[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
static const uint8_t hello_again[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
static const uint8_t hello_stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                       0x65, 0x6c, 0x6c, 0x6f, 0x00};
static const uint8_t hello_bfinal[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};

Test(ws_codec, in_rfc7692_examples)
{
    struct res r;

    wire_reset();
    put_compressed(WS_OP_TEXT, hello_block, sizeof hello_block, 0);
    put_compressed(WS_OP_TEXT, hello_again, sizeof hello_again, 0); /* shares the window */
    put_compressed(WS_OP_TEXT, hello_stored, sizeof hello_stored, 0);
    put_compressed(WS_OP_TEXT, hello_block, sizeof hello_block, 3); /* fragmented */
    put_compressed(WS_OP_BINARY, hello_bfinal, sizeof hello_bfinal, 0);
    put_compressed(WS_OP_TEXT, hello_block, sizeof hello_block, 0); /* after a BFINAL */
    put_frame(0x81, L("plain"));
    for (size_t chunk = 0; chunk <= wire_len; chunk++) {
        run(&pmd15, chunk, 256, &r);
        cr_assert_eq(r.end, WS_IN_NEED, "chunk %zu: %s", chunk, r.why ? r.why : "-");
        cr_assert_eq(r.fins, 7, "chunk %zu", chunk);
        for (size_t i = 0; i < 6; i++)
            cr_expect(msg_is(&r, i, "Hello", 5), "chunk %zu message %zu", chunk, i);
        cr_expect(!r.msg[4].text && r.msg[5].text);
        cr_expect(msg_is(&r, 6, "plain", 5));
    }
}

Test(ws_codec, in_context_takeover_and_not)
{
    static const struct ws_in_conf nct = {
        .deflate = 1, .window_bits = 15, .no_context_takeover = 1};
    struct ws_in s = {.conf = pmd15};
    struct res r;

    wire_reset();
    put_compressed(WS_OP_TEXT, hello_block, sizeof hello_block, 0);
    drive(&s, wire, wire_len, 0, 256, &r);
    cr_expect_not_null(s.z, "the window is kept between messages");
    ws_in_free(&s);

    s = (struct ws_in){.conf = nct};
    drive(&s, wire, wire_len, 0, 256, &r);
    cr_expect(msg_is(&r, 0, "Hello", 5));
    cr_expect_null(s.z, "freed at the end of each message");
    /* Under no_context_takeover the second RFC message refers to nothing. */
    wire_reset();
    put_compressed(WS_OP_TEXT, hello_again, sizeof hello_again, 0);
    drive(&s, wire, wire_len, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_ERROR);
    cr_expect_eq(r.code, WS_CLOSE_INVALID_DATA);
    cr_expect_null(s.z);
    ws_in_free(&s);
}

Test(ws_codec, in_compressed_zlib_messages)
{
    static uint8_t msg[200000], comp[250000];
    static const size_t sizes[] = {0, 1, 255, 256, 257, 5000, 200000};
    z_stream z;
    struct res r;

    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)('a' + (i * i / 7 + i / 1000) % 26);
    zopen(&z, 15);
    wire_reset();
    for (size_t k = 0; k < GW_ARRAY_LEN(sizes); k++) {
        size_t n = zcompress(&z, msg, sizes[k], comp, sizeof comp);
        put_compressed(WS_OP_TEXT, comp, n, k % 2 ? 0 : 1000);
    }
    deflateEnd(&z);
    for (size_t scap = 256; scap <= 65536; scap *= 16) {
        run(&pmd15, 0, scap, &r);
        cr_assert_eq(r.end, WS_IN_NEED, "%s", r.why ? r.why : "-");
        cr_assert_eq(r.fins, GW_ARRAY_LEN(sizes));
        for (size_t k = 0; k < GW_ARRAY_LEN(sizes); k++)
            cr_expect(msg_is(&r, k, msg, sizes[k]), "scratch %zu message %zu", scap, k);
        cr_expect_leq(r.max_piece, scap);
    }
    run(&pmd15, 1, 256, &r);
    cr_expect_eq(r.fins, GW_ARRAY_LEN(sizes));
    cr_expect(msg_is(&r, 6, msg, 200000));
    run(&pmd15, 4093, 256, &r);
    cr_expect_eq(r.fins, GW_ARRAY_LEN(sizes));
    cr_expect(msg_is(&r, 6, msg, 200000));
}

Test(ws_codec, in_output_bound_pieces)
{
    static uint8_t msg[100000], comp[4096];
    z_stream z;
    struct res r;

    memset(msg, 'z', sizeof msg);
    zopen(&z, 15);
    size_t n = zcompress(&z, msg, sizeof msg, comp, sizeof comp);
    deflateEnd(&z);
    wire_reset();
    put_compressed(WS_OP_TEXT, comp, n, 0);
    run(&pmd15, 0, 256, &r);
    cr_assert_eq(r.end, WS_IN_NEED);
    cr_expect(msg_is(&r, 0, msg, sizeof msg));
    cr_expect_eq(r.max_piece, 256);
    cr_expect_gt(r.stalls, 100, "pieces of pending output consume no input");
}

Test(ws_codec, in_zip_bomb_stops_at_max_message)
{
    static uint8_t zeros[1 << 16], comp[1 << 20];
    static const struct ws_in_conf conf = {.max_message = 100000, .deflate = 1, .window_bits = 15};
    z_stream z;
    size_t n = 0;
    struct res r;

    /* 64 MiB of zeros deflate to about 64 KiB. */
    zopen(&z, 15);
    z.next_out = comp;
    z.avail_out = sizeof comp;
    for (int i = 0; i < 1024; i++) {
        z.next_in = zeros;
        z.avail_in = sizeof zeros;
        cr_assert_eq(deflate(&z, i == 1023 ? Z_SYNC_FLUSH : Z_NO_FLUSH), Z_OK);
        cr_assert_eq(z.avail_in, 0);
    }
    n = sizeof comp - z.avail_out - 4;
    deflateEnd(&z);
    wire_reset();
    put_compressed(WS_OP_BINARY, comp, n, 0);
    run(&conf, 0, 4096, &r);
    cr_expect_eq(r.end, WS_IN_ERROR);
    cr_expect_eq(r.code, WS_CLOSE_TOO_BIG);
    cr_expect_leq(r.msg[0].len, 100000, "nothing past the limit is delivered");
    cr_expect_leq(r.calls, 100000 / 4096 + 3, "stopped early");

    /* Exactly the limit is fine. */
    static const struct ws_in_conf five = {.max_message = 5, .deflate = 1, .window_bits = 15};
    wire_reset();
    put_compressed(WS_OP_TEXT, hello_block, sizeof hello_block, 0);
    run(&five, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED);
    cr_expect(msg_is(&r, 0, "Hello", 5));
}

Test(ws_codec, in_window_bits_enforced)
{
    static uint8_t msg[3000], comp[8192];
    static const struct ws_in_conf w9 = {.deflate = 1, .window_bits = 9};
    static const struct ws_in_conf w8 = {.deflate = 1, .window_bits = 8};
    z_stream z;
    struct res r;

    /* 1000 pseudo-random bytes three times: matches 1000 bytes back. */
    for (size_t i = 0; i < 1000; i++)
        msg[i] = msg[i + 1000] = msg[i + 2000] = (uint8_t)(i * 2654435761u >> 13);
    zopen(&z, 15);
    size_t n = zcompress(&z, msg, sizeof msg, comp, sizeof comp);
    deflateEnd(&z);
    wire_reset();
    put_compressed(WS_OP_BINARY, comp, n, 0);
    run(&w9, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_ERROR, "a distance past the agreed window");
    cr_expect_eq(r.code, WS_CLOSE_INVALID_DATA);

    /* A zlib client cannot deflate with 8 bits and uses 9: accepted under an agreed 8. */
    zopen(&z, 9);
    n = zcompress(&z, msg, sizeof msg, comp, sizeof comp);
    deflateEnd(&z);
    wire_reset();
    put_compressed(WS_OP_BINARY, comp, n, 0);
    run(&w8, 0, 256, &r);
    cr_expect_eq(r.end, WS_IN_NEED, "%s", r.why ? r.why : "-");
    cr_expect(msg_is(&r, 0, msg, sizeof msg));
}

Test(ws_codec, in_compressed_with_interleaved_control)
{
    static uint8_t comp[256];
    z_stream z;
    struct res r;

    zopen(&z, 15);
    size_t n =
        zcompress(&z, L("a compressed message in pieces, pieces, pieces"), comp, sizeof comp);
    deflateEnd(&z);
    wire_reset();
    put_frame(0x41, comp, 4);
    put_frame(0x89, L("1"));
    put_frame(0x00, comp + 4, 5);
    put_frame(0x8a, L("2"));
    put_frame(0x00, L(""));
    put_frame(0x80, comp + 9, n - 9);
    for (size_t chunk = 0; chunk <= wire_len; chunk++) {
        run(&pmd15, chunk, 256, &r);
        cr_assert_eq(r.end, WS_IN_NEED, "%s", r.why ? r.why : "-");
        cr_expect(msg_is(&r, 0, L("a compressed message in pieces, pieces, pieces")));
        cr_expect_eq(r.nctl, 2);
    }
}

Test(ws_codec, in_compressed_empty_messages)
{
    struct res r;

    wire_reset();
    put_compressed(WS_OP_TEXT, (const uint8_t *)"", 0, 0); /* no payload at all */
    put_compressed(WS_OP_TEXT, (const uint8_t *)"\x00", 1, 0);
    put_compressed(WS_OP_TEXT, hello_block, sizeof hello_block, 0);
    put_compressed(WS_OP_BINARY, (const uint8_t *)"", 0, 0);
    put_compressed(WS_OP_TEXT, (const uint8_t *)"\x00", 1, 0);
    put_compressed(WS_OP_TEXT, hello_again, sizeof hello_again, 0);
    run(&pmd15, 1, 256, &r);
    cr_assert_eq(r.end, WS_IN_NEED, "%s", r.why ? r.why : "-");
    cr_assert_eq(r.fins, 6);
    cr_expect(msg_is(&r, 0, "", 0) && msg_is(&r, 1, "", 0) && msg_is(&r, 3, "", 0) &&
              msg_is(&r, 4, "", 0));
    cr_expect(msg_is(&r, 2, "Hello", 5) && msg_is(&r, 5, "Hello", 5));
}

/* ---- output ---------------------------------------------------------------------------------- */

Test(ws_codec, frame_header_sizes)
{
    static const struct {
        uint64_t len;
        size_t size;
    } cases[] = {{0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {UINT64_C(1) << 40, 10}};
    uint8_t h[WS_FRAME_HEADER_MAX];

    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++)
        cr_expect_eq(ws_frame_header(h, WS_OP_BINARY, 1, 0, cases[i].len), cases[i].size);
    cr_assert_eq(ws_frame_header(h, WS_OP_TEXT, 1, 1, 5), 2);
    cr_expect(h[0] == 0xc1 && h[1] == 5);
    cr_assert_eq(ws_frame_header(h, WS_OP_CONT, 0, 0, 300), 4);
    cr_expect(h[0] == 0x00 && h[1] == 126 && h[2] == 1 && h[3] == 44);
    cr_assert_eq(ws_frame_header(h, WS_OP_PONG, 1, 0, 0x0102030405ull), 10);
    cr_expect_eq(memcmp(h, "\x8a\x7f\x00\x00\x00\x01\x02\x03\x04\x05", 10), 0);
}

Test(ws_codec, close_payload)
{
    static char reason[300];
    uint8_t out[125];
    size_t n;

    cr_assert_eq(ws_close_payload(out, 1000, NULL, 0), 2);
    cr_expect(out[0] == 0x03 && out[1] == 0xe8);
    cr_assert_eq(ws_close_payload(out, 4321, L("going away")), 12);
    cr_expect(out[0] == 0x10 && out[1] == 0xe1 && memcmp(out + 2, "going away", 10) == 0);
    memset(reason, 'x', sizeof reason);
    cr_expect_eq(ws_close_payload(out, 1011, reason, sizeof reason), 125);
    /* 2-byte characters: 61 of them fit in 123 bytes, the 62nd would be cut. */
    for (size_t i = 0; i + 1 < sizeof reason; i += 2)
        memcpy(reason + i, "\xc3\xa9", 2);
    cr_expect_eq(ws_close_payload(out, 1011, reason, 200), 2 + 122);
    /* 4-byte characters after one ASCII byte: 30 fit after it (121 bytes). */
    reason[0] = 'a';
    for (size_t i = 1; i + 4 <= sizeof reason; i += 4)
        memcpy(reason + i, "\xf0\x9f\x98\x80", 4);
    n = ws_close_payload(out, 1011, reason, 200);
    cr_expect_eq(n, 2 + 121);
    uint32_t st = WS_UTF8_ACCEPT;
    cr_expect(ws_utf8_feed(&st, out + 2, n - 2) == 0 && st == WS_UTF8_ACCEPT);
    /* Exactly 123 bytes stay whole; a stray byte ends the reason. */
    memset(reason, 'y', 123);
    cr_expect_eq(ws_close_payload(out, 1000, reason, 123), 125);
    cr_expect_eq(ws_close_payload(out, 1000,
                                  L("ok\xff"
                                    "more")),
                 4);
    cr_expect_eq(ws_close_payload(out, 1000, L("ok\xe2\x82")), 4);
}

/* Compresses a message with the codec in pieces of |piece| input bytes and |cap| output bytes;
 * returns the compressed length. */
static size_t out_compress(struct ws_out *o, const uint8_t *m, size_t n, size_t piece, size_t cap,
                           uint8_t *dst, size_t dst_cap)
{
    size_t off = 0, len = 0;
    uint8_t buf[4096];

    cr_assert_leq(cap, sizeof buf);
    if (piece == 0)
        piece = n ? n : 1;
    for (;;) {
        size_t k = n - off < piece ? n - off : piece;
        int fin = off + k == n, rc;
        size_t taken = 0;

        do {
            size_t in_used, out_len;

            rc = ws_out_deflate(o, m + off + taken, k - taken, fin, buf, cap, &in_used, &out_len);
            cr_assert_neq(rc, -1);
            cr_assert_leq(out_len, cap);
            cr_assert_leq(in_used, k - taken);
            cr_assert_leq(len + out_len, dst_cap);
            memcpy(dst + len, buf, out_len);
            len += out_len;
            taken += in_used;
        } while (taken < k || (fin && rc != 1));
        off += k;
        if (fin)
            return len;
    }
}

Test(ws_codec, out_deflate_round_trip)
{
    static uint8_t msg[150000], comp[200000];
    static const size_t sizes[] = {0, 1, 3, 64, 1000, 150000, 0, 5};
    static const size_t caps[] = {64, 65, 100, 4096};
    struct res r;

    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i % 3 ? 'a' + (i * 31 % 17) : i * 2654435761u >> 24);
    for (int nct = 0; nct <= 1; nct++) {
        for (size_t c = 0; c < GW_ARRAY_LEN(caps); c++) {
            struct ws_out o = {.window_bits = (uint8_t)(c == 0 ? 8 : 15 - c),
                               .no_context_takeover = nct};
            struct ws_in_conf conf = {
                .deflate = 1, .window_bits = o.window_bits, .no_context_takeover = nct};

            wire_reset();
            for (size_t k = 0; k < GW_ARRAY_LEN(sizes); k++) {
                size_t n = out_compress(&o, msg, sizes[k], 777 * c, caps[c], comp, sizeof comp);
                cr_assert_gt(n, 0, "never empty");
                cr_expect(n < 4 || memcmp(comp + n - 4, "\x00\x00\xff\xff", 4) != 0,
                          "the flush tail is removed");
                put_compressed(WS_OP_BINARY, comp, n, 3000);
            }
            ws_out_free(&o);
            cr_expect_null(o.z);
            run(&conf, 1001, 256, &r);
            cr_assert_eq(r.end, WS_IN_NEED, "nct %d cap %zu: %s", nct, caps[c],
                         r.why ? r.why : "-");
            cr_assert_eq(r.fins, GW_ARRAY_LEN(sizes));
            for (size_t k = 0; k < GW_ARRAY_LEN(sizes); k++)
                cr_expect(msg_is(&r, k, msg, sizes[k]), "nct %d cap %zu message %zu", nct, caps[c],
                          k);
        }
    }
}

Test(ws_codec, out_deflate_empty_and_context)
{
    static uint8_t a[64], b[64];
    struct ws_out o = {.window_bits = 15};
    size_t n1, n2;

    /* The empty message is 0x00, first in the stream and right after another message. */
    cr_assert_eq(out_compress(&o, (const uint8_t *)"", 0, 0, 64, a, sizeof a), 1);
    cr_expect_eq(a[0], 0x00);
    cr_assert_eq(out_compress(&o, (const uint8_t *)"", 0, 0, 64, a, sizeof a), 1);
    cr_expect_eq(a[0], 0x00);
    n1 = out_compress(&o, (const uint8_t *)"Hello", 5, 0, 64, a, sizeof a);
    n2 = out_compress(&o, (const uint8_t *)"Hello", 5, 0, 64, b, sizeof b);
    cr_expect_lt(n2, n1, "the second refers to the first");
    ws_out_free(&o);

    o = (struct ws_out){.window_bits = 15, .no_context_takeover = 1};
    n1 = out_compress(&o, (const uint8_t *)"Hello", 5, 0, 64, a, sizeof a);
    n2 = out_compress(&o, (const uint8_t *)"Hello", 5, 0, 64, b, sizeof b);
    cr_expect(n1 == n2 && memcmp(a, b, n1) == 0, "each message stands alone");
    cr_expect_eq(n1, sizeof hello_block);
    ws_out_free(&o);
    ws_out_free(&o);
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

Test(ws_codec, utf8_edges)
{
    static const struct {
        const char *s;
        size_t len;
        int ok;
    } cases[] = {
        {L(""), 1},
        {L("plain ASCII text, long enough for the word loop"), 1},
        {L("\x00\x7f"), 1},
        {L("\xc2\x80"), 1},
        {L("\xdf\xbf"), 1},
        {L("\xe0\xa0\x80"), 1},
        {L("\xed\x9f\xbf"), 1},
        {L("\xee\x80\x80"), 1},
        {L("\xef\xbf\xbf"), 1},
        {L("\xf0\x90\x80\x80"), 1},
        {L("\xf4\x8f\xbf\xbf"), 1}, /* U+10FFFF */
        {L("\xf4\x90\x80\x80"), 0}, /* U+110000 */
        {L("\xed\xa0\x80"), 0},     /* U+D800 */
        {L("\xed\xbf\xbf"), 0},     /* U+DFFF */
        {L("\xc0\x80"), 0},
        {L("\xc1\xbf"), 0},
        {L("\xe0\x80\x80"), 0},
        {L("\xe0\x9f\xbf"), 0},
        {L("\xf0\x80\x80\x80"), 0},
        {L("\xf0\x8f\xbf\xbf"), 0},
        {L("\xf5\x80\x80\x80"), 0},
        {L("\xf8\x88\x80\x80\x80"), 0},
        {L("\xfe"), 0},
        {L("\xff"), 0},
        {L("\x80"), 0},
        {L("\xbf"), 0},
        {L("a\xc3\x28"), 0},
        {L("\xe2\x82\x28"), 0},
        {L("0123456789abcdef\xc3"), 0}, /* incomplete: not ACCEPT at the end */
        {L("\xf0\x9f\x98"), 0},
    };

    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        uint32_t st = WS_UTF8_ACCEPT, st1 = WS_UTF8_ACCEPT;
        int rc = ws_utf8_feed(&st, p, cases[i].len), rc1 = 0;

        cr_expect_eq(rc == 0 && st == WS_UTF8_ACCEPT, cases[i].ok, "case %zu", i);
        for (size_t k = 0; k < cases[i].len && rc1 == 0; k++)
            rc1 = ws_utf8_feed(&st1, p + k, 1);
        cr_expect_eq(rc1 == 0 && st1 == WS_UTF8_ACCEPT, cases[i].ok, "case %zu byte by byte", i);
    }
}

Test(ws_codec, utf8_reject_is_final)
{
    uint32_t st = WS_UTF8_ACCEPT;

    cr_expect_eq(ws_utf8_feed(&st, (const uint8_t *)"\xff", 1), -1);
    cr_expect_eq(ws_utf8_feed(&st, (const uint8_t *)"a", 1), -1);
    cr_expect_eq(ws_utf8_feed(&st, (const uint8_t *)"", 0), -1);
    st = WS_UTF8_ACCEPT;
    cr_expect_eq(ws_utf8_feed(&st, (const uint8_t *)"\xe2", 1), 0);
    cr_expect_neq(st, WS_UTF8_ACCEPT);
    cr_expect_eq(ws_utf8_feed(&st, (const uint8_t *)"\x82\xac", 2), 0);
    cr_expect_eq(st, WS_UTF8_ACCEPT);
}

Test(ws_codec, utf8_every_code_point)
{
    uint8_t b[4];
    size_t n;

    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        uint32_t st = WS_UTF8_ACCEPT;

        if (cp < 0x80) {
            b[0] = (uint8_t)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (uint8_t)(0xc0 | cp >> 6);
            b[1] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (uint8_t)(0xe0 | cp >> 12);
            b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
            b[2] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 3;
        } else {
            b[0] = (uint8_t)(0xf0 | cp >> 18);
            b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
            b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
            b[3] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 4;
        }
        int ok = ws_utf8_feed(&st, b, n) == 0 && st == WS_UTF8_ACCEPT;
        cr_assert_eq(ok, !(cp >= 0xd800 && cp <= 0xdfff), "U+%04X", (unsigned)cp);
    }
}
