/* SPDX-License-Identifier: MIT */
/* Unit tests for the uwsgi codec: exact bytes, size limits, decoder errors, CGI names, golden
 * vectors shared with the Python adapter. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "adapters/uwsgi/uwsgi_codec.h"

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

/* A var from two string literals (lengths without the NUL). */
#define V(k, v)                                                                                    \
    {                                                                                              \
        (k), sizeof(k) - 1, (v), sizeof(v) - 1                                                     \
    }

#define MAX_VARS 512
#define CANARY 0xA5

/* Big enough for any packet plus room to see a write past |cap|. */
static uint8_t buf[UWSGI_MAX_PACKET + 64];
static struct uwsgi_var dec[MAX_VARS];
/* Filler for keys and values up to 64 KiB + 1. */
static char big[UINT16_MAX + 2];

static void fill_big(void)
{
    memset(big, 'x', sizeof big);
}

static int var_eq(const struct uwsgi_var *a, const struct uwsgi_var *b)
{
    return a->key_len == b->key_len && a->val_len == b->val_len &&
           (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0) &&
           (a->val_len == 0 || memcmp(a->val, b->val, a->val_len) == 0);
}

/* First offset where |a| and |b| differ, or |len| when they do not. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t len)
{
    size_t i = 0;

    while (i < len && a[i] == b[i])
        i++;
    return i;
}

/* Decodes |p[0..len)| as one whole packet with room for MAX_VARS vars. */
static int decode_all(const uint8_t *p, size_t len, uint8_t *m1, uint8_t *m2, size_t *n,
                      size_t *used)
{
    return uwsgi_decode(p, len, m1, m2, dec, MAX_VARS, n, used);
}

/* ---- encoder: exact bytes ------------------------------------------------------------------- */

static const struct uwsgi_var known_vars[] = {
    V("REQUEST_METHOD", "GET"),
    V("PATH_INFO", "/a"),
    V("QUERY_STRING", ""),
};

/* 4+14+3 + 4+9+2 + 4+12+0 = 52 = 0x34 bytes of vars. */
static const uint8_t known_packet[] = "\x00\x34\x00\x00"
                                      "\x0e\x00"
                                      "REQUEST_METHOD"
                                      "\x03\x00"
                                      "GET"
                                      "\x09\x00"
                                      "PATH_INFO"
                                      "\x02\x00"
                                      "/a"
                                      "\x0c\x00"
                                      "QUERY_STRING"
                                      "\x00\x00";
#define KNOWN_LEN (sizeof known_packet - 1)

Test(uwsgi_codec, encode_exact_bytes)
{
    size_t written = 0, size = 0;

    cr_assert_eq(KNOWN_LEN, 56);
    cr_assert_eq(uwsgi_vars_size(known_vars, ARRAY_LEN(known_vars), &size), UWSGI_OK);
    cr_expect_eq(size, 52);
    cr_assert_eq(uwsgi_encode(buf, sizeof buf, 0, 0, known_vars, ARRAY_LEN(known_vars), &written),
                 UWSGI_OK);
    cr_assert_eq(written, KNOWN_LEN);
    cr_assert_eq(memcmp(buf, known_packet, KNOWN_LEN), 0, "first difference at byte %zu",
                 first_diff(buf, known_packet, KNOWN_LEN));
}

Test(uwsgi_codec, encode_modifiers_and_little_endian_sizes)
{
    struct uwsgi_var v = {"K", 1, big, 300};
    size_t written = 0;

    fill_big();
    cr_assert_eq(uwsgi_encode(buf, sizeof buf, 5, 7, &v, 1, &written), UWSGI_OK);
    cr_assert_eq(written, 4 + 4 + 1 + 300);
    cr_expect_eq(buf[0], 5, "modifier1");
    cr_expect_eq(buf[1], 0x31, "datasize low byte (305 = 0x0131)");
    cr_expect_eq(buf[2], 0x01, "datasize high byte");
    cr_expect_eq(buf[3], 7, "modifier2");
    cr_expect_eq(buf[4], 1);
    cr_expect_eq(buf[5], 0);
    cr_expect_eq(buf[6], 'K');
    cr_expect_eq(buf[7], 0x2c, "val_len low byte (300 = 0x012c)");
    cr_expect_eq(buf[8], 0x01, "val_len high byte");
}

Test(uwsgi_codec, encode_no_vars)
{
    size_t written = 0;

    cr_assert_eq(uwsgi_encode(buf, 4, 0, 0, NULL, 0, &written), UWSGI_OK);
    cr_assert_eq(written, 4);
    cr_expect_eq(memcmp(buf, "\0\0\0\0", 4), 0);
}

/* ---- round trips ---------------------------------------------------------------------------- */

struct rt_case {
    const char *name;
    uint8_t m1, m2;
    struct uwsgi_var vars[8];
    size_t n;
};

static const struct rt_case rt_cases[] = {
    {"empty", 0, 0, {{0}}, 0},
    {"empty_key_and_value", 0, 0, {V("", "")}, 1},
    {"null_pointers_zero_lengths", 0, 0, {{NULL, 0, NULL, 0}, V("A", "")}, 2},
    {"request",
     0,
     0,
     {V("REQUEST_METHOD", "POST"), V("REQUEST_URI", "/x?y=1"), V("PATH_INFO", "/x"),
      V("QUERY_STRING", "y=1"), V("CONTENT_TYPE", "text/plain"), V("CONTENT_LENGTH", "5"),
      V("HTTP_HOST", "example.com")},
     7},
    {"binary_bytes", 0, 0, {V("K\0\xff", "\0\x01\x80\xff\r\n"), V("\xc3\xa9", "caf\xc3\xa9")}, 2},
    {"other_modifiers", 255, 128, {V("a", "b")}, 1},
    {"duplicate_keys", 0, 0, {V("HTTP_X", "1"), V("HTTP_X", "2")}, 2},
};
INDEX_PARAMS(uwsgi_codec, round_trip, rt_cases)

ParameterizedTest(size_t *i, uwsgi_codec, round_trip)
{
    const struct rt_case *c = &rt_cases[*i];
    size_t written = 0, size = 0, n = 0, used = 0;
    uint8_t m1 = 0x11, m2 = 0x22;

    cr_assert_eq(uwsgi_vars_size(c->vars, c->n, &size), UWSGI_OK, "%s", c->name);
    cr_assert_eq(uwsgi_encode(buf, sizeof buf, c->m1, c->m2, c->vars, c->n, &written), UWSGI_OK,
                 "%s", c->name);
    cr_assert_eq(written, 4 + size, "%s", c->name);
    cr_assert_eq(decode_all(buf, written, &m1, &m2, &n, &used), UWSGI_OK, "%s", c->name);
    cr_expect_eq(m1, c->m1, "%s", c->name);
    cr_expect_eq(m2, c->m2, "%s", c->name);
    cr_expect_eq(used, written, "%s", c->name);
    cr_assert_eq(n, c->n, "%s", c->name);
    for (size_t k = 0; k < n; k++) {
        cr_expect(var_eq(&dec[k], &c->vars[k]), "%s: var %zu", c->name, k);
        /* Slices point into the packet, never elsewhere. */
        cr_expect((const uint8_t *)dec[k].key >= buf + 4 &&
                      (const uint8_t *)dec[k].val + dec[k].val_len <= buf + written,
                  "%s: var %zu outside the packet", c->name, k);
    }
}

/* ---- sizes: summed in size_t, refused before narrowing -------------------------------------- */

/* |n| vars with one-byte keys and values of |val_len| bytes each. */
static void same_vars(struct uwsgi_var *v, size_t n, size_t val_len)
{
    fill_big();
    for (size_t k = 0; k < n; k++)
        v[k] = (struct uwsgi_var){"K", 1, big, val_len};
}

Test(uwsgi_codec, total_over_limit_refused_even_when_each_var_fits)
{
    struct uwsgi_var v[2];
    size_t size = 12345, written = 12345;

    /* Each is 4 + 1 + 40000 bytes, fine alone; together 80010. */
    same_vars(v, 2, 40000);
    cr_assert_eq(uwsgi_vars_size(v, 1, &size), UWSGI_OK);
    cr_expect_eq(size, 40005);
    size = 12345;
    cr_expect_eq(uwsgi_vars_size(v, 2, &size), UWSGI_E_TOO_BIG);
    cr_expect_eq(size, 12345, "untouched on failure");
    cr_expect_eq(uwsgi_encode(buf, sizeof buf, 0, 0, v, 2, &written), UWSGI_E_TOO_BIG);
    cr_expect_eq(written, 12345, "untouched on failure");
}

Test(uwsgi_codec, total_that_would_narrow_to_zero_refused)
{
    struct uwsgi_var v[2];
    size_t size = 0, written = 0;

    /* 2 * (4 + 1 + 32763) = 65536: a u16 sum would wrap to 0 and send an empty packet
     * followed by 64 KiB of "body" (CVE-2020-11984's shape). */
    same_vars(v, 2, 32763);
    cr_expect_eq(uwsgi_vars_size(v, 2, &size), UWSGI_E_TOO_BIG);
    cr_expect_eq(uwsgi_encode(buf, sizeof buf, 0, 0, v, 2, &written), UWSGI_E_TOO_BIG);
}

Test(uwsgi_codec, total_of_exactly_65535_accepted)
{
    struct uwsgi_var v[2];
    size_t size = 0, written = 0, n = 0, used = 0;
    uint8_t m1, m2;

    /* (4 + 1 + 32763) + (4 + 1 + 32762) = 65535. */
    same_vars(v, 2, 32763);
    v[1].val_len = 32762;
    cr_assert_eq(uwsgi_vars_size(v, 2, &size), UWSGI_OK);
    cr_expect_eq(size, 65535);
    cr_assert_eq(uwsgi_encode(buf, UWSGI_MAX_PACKET, 0, 0, v, 2, &written), UWSGI_OK);
    cr_assert_eq(written, UWSGI_MAX_PACKET);
    cr_expect_eq(buf[1], 0xff);
    cr_expect_eq(buf[2], 0xff);
    cr_assert_eq(decode_all(buf, written, &m1, &m2, &n, &used), UWSGI_OK);
    cr_expect_eq(n, 2);
    cr_expect_eq(dec[1].val_len, 32762);
    /* One byte more is over. */
    v[1].val_len = 32763;
    cr_expect_eq(uwsgi_vars_size(v, 2, &size), UWSGI_E_TOO_BIG);
    cr_expect_eq(uwsgi_encode(buf, sizeof buf, 0, 0, v, 2, &written), UWSGI_E_TOO_BIG);
}

Test(uwsgi_codec, key_or_value_over_65535_refused)
{
    struct uwsgi_var key = {big, UINT16_MAX + 1, "v", 1};
    struct uwsgi_var val = {"k", 1, big, UINT16_MAX + 1};
    struct uwsgi_var k_ok = {big, UINT16_MAX - 4, "", 0};
    size_t size = 0, written = 0;

    fill_big();
    /* 65536 as a u16 is 0: narrowing first would encode an empty key. */
    cr_expect_eq(uwsgi_vars_size(&key, 1, &size), UWSGI_E_TOO_BIG);
    cr_expect_eq(uwsgi_encode(buf, sizeof buf, 0, 0, &key, 1, &written), UWSGI_E_TOO_BIG);
    cr_expect_eq(uwsgi_vars_size(&val, 1, &size), UWSGI_E_TOO_BIG);
    cr_expect_eq(uwsgi_encode(buf, sizeof buf, 0, 0, &val, 1, &written), UWSGI_E_TOO_BIG);
    /* The largest key that fits in a packet alone. */
    cr_expect_eq(uwsgi_vars_size(&k_ok, 1, &size), UWSGI_OK);
    cr_expect_eq(size, UINT16_MAX);
    cr_expect_eq(uwsgi_encode(buf, sizeof buf, 0, 0, &k_ok, 1, &written), UWSGI_OK);
}

Test(uwsgi_codec, lengths_that_wrap_size_t_refused)
{
    /* 4 + (SIZE_MAX - 3) + 0 wraps to 0 in size_t; the bytes are never read. */
    struct uwsgi_var v[] = {{"k", SIZE_MAX - 3, "", 0}, {"k", 1, "v", SIZE_MAX}};
    size_t size = 0, written = 0;

    for (size_t k = 0; k < ARRAY_LEN(v); k++) {
        cr_expect_eq(uwsgi_vars_size(&v[k], 1, &size), UWSGI_E_TOO_BIG, "var %zu", k);
        cr_expect_eq(uwsgi_encode(buf, sizeof buf, 0, 0, &v[k], 1, &written), UWSGI_E_TOO_BIG,
                     "var %zu", k);
    }
}

Test(uwsgi_codec, cap_too_small)
{
    size_t written;

    for (size_t cap = 0; cap < KNOWN_LEN; cap++) {
        memset(buf, CANARY, sizeof buf);
        written = 999;
        cr_assert_eq(uwsgi_encode(buf, cap, 0, 0, known_vars, ARRAY_LEN(known_vars), &written),
                     UWSGI_E_TOO_BIG, "cap=%zu", cap);
        cr_expect_eq(written, 999, "cap=%zu", cap);
        for (size_t k = cap; k < KNOWN_LEN + 8; k++)
            cr_assert_eq(buf[k], CANARY, "cap=%zu: byte %zu written", cap, k);
    }
    cr_assert_eq(uwsgi_encode(buf, KNOWN_LEN, 0, 0, known_vars, ARRAY_LEN(known_vars), &written),
                 UWSGI_OK, "exactly enough");
    cr_expect_eq(written, KNOWN_LEN);
    cr_expect_eq(memcmp(buf, known_packet, KNOWN_LEN), 0);
}

/* ---- decoder -------------------------------------------------------------------------------- */

Test(uwsgi_codec, decode_incomplete_at_every_split_point)
{
    static const struct uwsgi_var v[] = {V("REQUEST_METHOD", "GET"), V("", ""), V("K", "")};
    size_t written = 0, n = 99, used = 99;
    uint8_t m1 = 9, m2 = 9;

    cr_assert_eq(uwsgi_encode(buf, sizeof buf, 0, 0, v, ARRAY_LEN(v), &written), UWSGI_OK);
    for (size_t cut = 0; cut < written; cut++) {
        cr_expect_eq(decode_all(buf, cut, &m1, &m2, &n, &used), UWSGI_INCOMPLETE, "cut=%zu", cut);
        cr_expect_eq(used, 99, "cut=%zu: |used| untouched", cut);
    }
    cr_assert_eq(decode_all(buf, written, &m1, &m2, &n, &used), UWSGI_OK);
    cr_expect_eq(n, 3);
    cr_expect_eq(used, written);
}

Test(uwsgi_codec, decode_leaves_what_follows_the_packet)
{
    uint8_t in[KNOWN_LEN + 5];
    size_t n = 0, used = 0;
    uint8_t m1, m2;

    /* The request body follows the packet unframed. */
    memcpy(in, known_packet, KNOWN_LEN);
    memcpy(in + KNOWN_LEN, "hello", 5);
    cr_assert_eq(decode_all(in, sizeof in, &m1, &m2, &n, &used), UWSGI_OK);
    cr_expect_eq(used, KNOWN_LEN);
    cr_assert_eq(n, 3);
    cr_expect_eq(dec[2].val_len, 0, "QUERY_STRING stays empty, the body is not in it");
    for (size_t k = 0; k < n; k++)
        cr_expect(var_eq(&dec[k], &known_vars[k]), "var %zu", k);
}

struct proto_case {
    const char *name;
    const char *in;
    size_t len;
    int rc;
    size_t n;
};

#define P(s) (s), sizeof(s) - 1

/* Each error sits next to a valid packet that differs by one length, so both outcomes show.
 * One row per packet: header, then vars. */
/* clang-format off */
static const struct proto_case proto_cases[] = {
    {"one_empty_var", P("\0\x04\0\0" "\0\0\0\0"), UWSGI_OK, 1},
    {"key_len_past_datasize", P("\0\x03\0\0" "\x05\0a"), UWSGI_E_PROTO, 0},
    {"key_len_one_past", P("\0\x05\0\0" "\x02\0k\0\0"), UWSGI_E_PROTO, 0},
    {"key_fits_exactly", P("\0\x05\0\0" "\x01\0k\0\0"), UWSGI_OK, 1},
    {"val_len_past_datasize", P("\0\x07\0\0" "\x01\0k\x05\0ab"), UWSGI_E_PROTO, 0},
    {"val_len_one_past", P("\0\x07\0\0" "\x01\0k\x03\0ab"), UWSGI_E_PROTO, 0},
    {"val_fits_exactly", P("\0\x07\0\0" "\x01\0k\x02\0ab"), UWSGI_OK, 1},
    {"val_len_huge", P("\0\x07\0\0" "\x01\0k\xff\xff" "ab"), UWSGI_E_PROTO, 0},
    {"no_room_for_val_len", P("\0\x04\0\0" "\x01\0k\0"), UWSGI_E_PROTO, 0},
    {"key_without_val_len", P("\0\x03\0\0" "\x01\0k"), UWSGI_E_PROTO, 0},
    {"lone_byte", P("\0\x01\0\0" "\0"), UWSGI_E_PROTO, 0},
    {"byte_after_a_var", P("\0\x05\0\0" "\0\0\0\0\0"), UWSGI_E_PROTO, 0},
    {"bad_second_var", P("\0\x0a\0\0" "\0\0\0\0" "\x01\0a\x09\0b"), UWSGI_E_PROTO, 0},
    {"two_vars", P("\0\x0a\0\0" "\0\0\0\0" "\x01\0a\x01\0b"), UWSGI_OK, 2},
    {"empty_packet", P("\0\0\0\0"), UWSGI_OK, 0},
};
/* clang-format on */
INDEX_PARAMS(uwsgi_codec, decode_lengths, proto_cases)

ParameterizedTest(size_t *i, uwsgi_codec, decode_lengths)
{
    const struct proto_case *c = &proto_cases[*i];
    size_t n = 777, used = 777;
    uint8_t m1 = 9, m2 = 9;

    cr_assert_eq(decode_all((const uint8_t *)c->in, c->len, &m1, &m2, &n, &used), c->rc, "%s",
                 c->name);
    if (c->rc == UWSGI_OK) {
        cr_expect_eq(n, c->n, "%s", c->name);
        cr_expect_eq(used, c->len, "%s", c->name);
        cr_expect_eq(m1, 0, "%s", c->name);
    } else {
        cr_expect_eq(n, 777, "%s: |n| untouched", c->name);
        cr_expect_eq(used, 777, "%s: |used| untouched", c->name);
        cr_expect_eq(m1, 9, "%s: |modifier1| untouched", c->name);
    }
}

Test(uwsgi_codec, decode_too_many_vars)
{
    static const struct uwsgi_var v[] = {V("A", "1"), V("B", "2"), V("C", "3"), V("D", "4"),
                                         V("E", "5")};
    struct uwsgi_var out[5];
    size_t written = 0, n = 99, used = 99;
    uint8_t m1, m2;

    cr_assert_eq(uwsgi_encode(buf, sizeof buf, 0, 0, v, ARRAY_LEN(v), &written), UWSGI_OK);
    for (size_t max = 0; max < ARRAY_LEN(v); max++) {
        cr_expect_eq(uwsgi_decode(buf, written, &m1, &m2, out, max, &n, &used), UWSGI_E_TOO_BIG,
                     "max=%zu", max);
        cr_expect_eq(n, 99, "max=%zu", max);
    }
    cr_assert_eq(uwsgi_decode(buf, written, &m1, &m2, out, ARRAY_LEN(out), &n, &used), UWSGI_OK);
    cr_expect_eq(n, 5);
    cr_expect(var_eq(&out[4], &v[4]));
    /* No vars fit in zero slots. */
    cr_expect_eq(uwsgi_decode((const uint8_t *)"\0\0\0\0", 4, &m1, &m2, NULL, 0, &n, &used),
                 UWSGI_OK);
    cr_expect_eq(n, 0);
}

/* ---- header names -> CGI vars --------------------------------------------------------------- */

struct hv_case {
    const char *name;
    const char *want; /* NULL: dropped */
};

static const struct hv_case hv_cases[] = {
    {"Content-Type", "CONTENT_TYPE"},
    {"content-length", "CONTENT_LENGTH"},
    {"CONTENT-TYPE", "CONTENT_TYPE"},
    {"cOnTeNt-LeNgTh", "CONTENT_LENGTH"},
    {"X-Forwarded-For", "HTTP_X_FORWARDED_FOR"},
    {"x-request-id", "HTTP_X_REQUEST_ID"},
    {"Accept-Encoding", "HTTP_ACCEPT_ENCODING"},
    {"Host", "HTTP_HOST"},
    {"Content-MD5", "HTTP_CONTENT_MD5"},
    {"Content-Typo", "HTTP_CONTENT_TYPO"},
    {"Content-Types", "HTTP_CONTENT_TYPES"},
    {"Content-Lengthy", "HTTP_CONTENT_LENGTHY"},
    {"Contentxtype", "HTTP_CONTENTXTYPE"},
    {"X-1", "HTTP_X_1"},
    {"-", "HTTP__"},
    {"X_Forwarded_For", NULL},
    {"Content_Type", NULL},
    {"x-forwarded_for", NULL},
    {"_", NULL},
    {"", NULL},
    {"X Foo", NULL},
    {"X.Foo", NULL},
    {"X:Foo", NULL},
    {"X=Foo", NULL},
    {"X-Caf\xc3\xa9", NULL},
};
INDEX_PARAMS(uwsgi_codec, header_var, hv_cases)

ParameterizedTest(size_t *i, uwsgi_codec, header_var)
{
    const struct hv_case *c = &hv_cases[*i];
    char out[64];
    size_t got = uwsgi_header_var(out, sizeof out, c->name, strlen(c->name));

    if (c->want == NULL) {
        cr_expect_eq(got, 0, "'%s' must be dropped, got '%.*s'", c->name, (int)got, out);
    } else {
        cr_assert_eq(got, strlen(c->want), "'%s' -> %zu bytes, want '%s'", c->name, got, c->want);
        cr_expect_eq(memcmp(out, c->want, got), 0, "'%s' -> '%.*s', want '%s'", c->name, (int)got,
                     out, c->want);
    }
}

Test(uwsgi_codec, header_var_cap)
{
    static const struct {
        const char *name, *want;
    } t[] = {{"X-A", "HTTP_X_A"}, {"Content-Type", "CONTENT_TYPE"}, {"A", "HTTP_A"}};
    char out[32];

    for (size_t k = 0; k < ARRAY_LEN(t); k++) {
        size_t want = strlen(t[k].want), name_len = strlen(t[k].name);

        for (size_t cap = 0; cap < want; cap++) {
            memset(out, CANARY, sizeof out);
            cr_expect_eq(uwsgi_header_var(out, cap, t[k].name, name_len), 0, "%s cap=%zu",
                         t[k].name, cap);
            for (size_t b = cap; b < sizeof out; b++)
                cr_assert_eq((uint8_t)out[b], CANARY, "%s cap=%zu: byte %zu written", t[k].name,
                             cap, b);
        }
        cr_assert_eq(uwsgi_header_var(out, want, t[k].name, name_len), want, "%s", t[k].name);
        cr_expect_eq(memcmp(out, t[k].want, want), 0, "%s", t[k].name);
    }
}

/* ---- percent-decoding ----------------------------------------------------------------------- */

struct pd_case {
    const char *name;
    const char *src;
    size_t src_len;
    const char *want;
    size_t want_len;
    int has_nul;
};

static const struct pd_case pd_cases[] = {
    {"slash_upper", P("/a%2Fb"), P("/a/b"), 0},
    {"slash_lower", P("/a%2fb"), P("/a/b"), 0},
    {"space", P("/a%20b"), P("/a b"), 0},
    {"plus_stays", P("/a+b"), P("/a+b"), 0},
    {"no_escape", P("/plain/path"), P("/plain/path"), 0},
    {"empty", P(""), P(""), 0},
    {"invalid_zz", P("/%zz"), P("/%zz"), 0},
    {"invalid_second_digit", P("%2g"), P("%2g"), 0},
    {"invalid_first_digit", P("%g2"), P("%g2"), 0},
    {"trailing_percent", P("/a%"), P("/a%"), 0},
    {"trailing_one_digit", P("/a%2"), P("/a%2"), 0},
    {"lone_percent", P("%"), P("%"), 0},
    {"percent_then_escape", P("%%41"), P("%A"), 0},
    {"escaped_percent_not_redecoded", P("%2541"), P("%41"), 0},
    {"consecutive", P("%41%42%43"), P("ABC"), 0},
    {"nul", P("%00"), P("\0"), 1},
    {"nul_inside", P("/a%00.py"), P("/a\0.py"), 1},
    {"utf8_escaped", P("/caf%C3%A9"), P("/caf\xc3\xa9"), 0},
    {"utf8_raw", P("/caf\xc3\xa9"), P("/caf\xc3\xa9"), 0},
    {"high_byte", P("%ff%FF"), P("\xff\xff"), 0},
    /* |len| ends the input even when more bytes follow in memory. */
    {"escape_cut_by_len", "/a%21", 4, P("/a%2"), 0},
    {"percent_cut_by_len", "%41", 1, P("%"), 0},
};
INDEX_PARAMS(uwsgi_codec, percent_decode, pd_cases)

ParameterizedTest(size_t *i, uwsgi_codec, percent_decode)
{
    const struct pd_case *c = &pd_cases[*i];
    char out[64], inplace[64];
    int nul = !c->has_nul;
    size_t got;

    memset(out, CANARY, sizeof out);
    got = uwsgi_percent_decode(out, c->src, c->src_len, &nul);
    cr_assert_eq(got, c->want_len, "%s: got %zu bytes '%.*s'", c->name, got, (int)got, out);
    cr_expect_eq(memcmp(out, c->want, got), 0, "%s: got '%.*s'", c->name, (int)got, out);
    cr_expect_eq(nul, c->has_nul, "%s: has_nul", c->name);
    for (size_t b = c->src_len; b < sizeof out; b++)
        cr_assert_eq((uint8_t)out[b], CANARY, "%s: byte %zu written past len", c->name, b);

    /* In place gives the same result. */
    memcpy(inplace, c->src, c->src_len);
    nul = !c->has_nul;
    got = uwsgi_percent_decode(inplace, inplace, c->src_len, &nul);
    cr_assert_eq(got, c->want_len, "%s: in place", c->name);
    cr_expect_eq(memcmp(inplace, c->want, got), 0, "%s: in place '%.*s'", c->name, (int)got,
                 inplace);
    cr_expect_eq(nul, c->has_nul, "%s: in place has_nul", c->name);
}

/* ---- golden vectors (tests/vectors/uwsgi/, shared with the Python tests) -------------------- */

#define VEC_DIR "tests/vectors/uwsgi/"

static const char *const vec_names[] = {
    "get_query",
    "post_content_length",
    "many_headers",
    "long_values",
};

static uint8_t file_buf[UWSGI_MAX_PACKET + 1];
static char json_buf[4 * UWSGI_MAX_PACKET];
static char arena[UWSGI_MAX_PACKET];
static struct uwsgi_var json_vars[MAX_VARS];

/* Reads the whole file at |path| into |out[0..cap)|; fails the test if it does not fit. */
static size_t read_file(const char *path, void *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t len;

    cr_assert_not_null(f, "cannot open %s (criterion must run from the repo root)", path);
    len = fread(out, 1, cap, f);
    cr_assert(!ferror(f), "%s: read error", path);
    cr_assert_eq(fgetc(f), EOF, "%s: over %zu bytes", path, cap);
    fclose(f);
    return len;
}

/* A tiny reader for exactly the vectors' shape: {"modifier1": N, "modifier2": N, "vars":
 * [["key", "value"], ...]}. Strings are unescaped into |arena|. Any surprise fails the test. */
struct jr {
    const char *start, *p, *end, *file;
    size_t used; /* of |arena| */
};

static void j_ws(struct jr *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static void j_expect(struct jr *j, char c)
{
    j_ws(j);
    cr_assert(j->p < j->end && *j->p == c, "%s: expected '%c' at offset %td", j->file, c,
              j->p - j->start);
    j->p++;
}

/* Consumes |c| if it is next. */
static int j_accept(struct jr *j, char c)
{
    j_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

static int hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void j_string(struct jr *j, const char **s, size_t *len)
{
    char *out = arena + j->used;

    j_expect(j, '"');
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;

        cr_assert((unsigned char)c >= 0x20 && (unsigned char)c < 0x80,
                  "%s: raw byte 0x%02x in a string (vectors are ASCII)", j->file, (unsigned char)c);
        if (c == '\\') {
            cr_assert(j->p < j->end, "%s: truncated escape", j->file);
            c = *j->p++;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                int v = 0;

                cr_assert(j->end - j->p >= 4, "%s: truncated \\u", j->file);
                for (int k = 0; k < 4; k++) {
                    int d = hexdig(j->p[k]);

                    cr_assert(d >= 0, "%s: bad \\u escape", j->file);
                    v = v * 16 + d;
                }
                /* Values are bytes: only \u0000-\u00ff stand for one. */
                cr_assert(v <= 0xff, "%s: \\u%04x is not a byte", j->file, (unsigned)v);
                c = (char)v;
                j->p += 4;
                break;
            }
            default:
                cr_assert_fail("%s: bad escape \\%c", j->file, c);
            }
        }
        cr_assert(j->used < sizeof arena, "%s: strings over %zu bytes", j->file, sizeof arena);
        arena[j->used++] = c;
    }
    cr_assert(j->p < j->end, "%s: unterminated string", j->file);
    j->p++;
    *s = out;
    *len = (size_t)(arena + j->used - out);
}

static uint8_t j_byte(struct jr *j)
{
    unsigned v = 0;
    int digits = 0;

    j_ws(j);
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9' && digits < 4) {
        v = v * 10 + (unsigned)(*j->p++ - '0');
        digits++;
    }
    cr_assert(digits > 0 && v <= 255, "%s: modifier is not a number 0-255", j->file);
    return (uint8_t)v;
}

static size_t j_vectors(struct jr *j, uint8_t *m1, uint8_t *m2)
{
    int seen_m1 = 0, seen_m2 = 0, seen_vars = 0;
    size_t n = 0;

    j_expect(j, '{');
    do {
        const char *key;
        size_t key_len;

        j_string(j, &key, &key_len);
        j_expect(j, ':');
        if (key_len == 9 && memcmp(key, "modifier1", 9) == 0) {
            *m1 = j_byte(j);
            seen_m1++;
        } else if (key_len == 9 && memcmp(key, "modifier2", 9) == 0) {
            *m2 = j_byte(j);
            seen_m2++;
        } else if (key_len == 4 && memcmp(key, "vars", 4) == 0) {
            seen_vars++;
            j_expect(j, '[');
            if (!j_accept(j, ']')) {
                do {
                    cr_assert(n < MAX_VARS, "%s: over %d vars", j->file, MAX_VARS);
                    j_expect(j, '[');
                    j_string(j, &json_vars[n].key, &json_vars[n].key_len);
                    j_expect(j, ',');
                    j_string(j, &json_vars[n].val, &json_vars[n].val_len);
                    j_expect(j, ']');
                    n++;
                } while (j_accept(j, ','));
                j_expect(j, ']');
            }
        } else {
            cr_assert_fail("%s: unknown key '%.*s'", j->file, (int)key_len, key);
        }
    } while (j_accept(j, ','));
    j_expect(j, '}');
    j_ws(j);
    cr_assert(j->p == j->end, "%s: bytes after the object", j->file);
    cr_assert(seen_m1 == 1 && seen_m2 == 1 && seen_vars == 1,
              "%s: needs modifier1, modifier2 and vars once each", j->file);
    return n;
}

INDEX_PARAMS(uwsgi_codec, golden_vector, vec_names)

ParameterizedTest(size_t *i, uwsgi_codec, golden_vector)
{
    const char *name = vec_names[*i];
    char path[256];
    struct jr j;
    size_t bin_len, json_len, nj, n = 0, used = 0, size = 0, written = 0;
    uint8_t jm1 = 0, jm2 = 0, m1 = 0, m2 = 0;

    snprintf(path, sizeof path, VEC_DIR "%s.bin", name);
    bin_len = read_file(path, file_buf, sizeof file_buf);
    snprintf(path, sizeof path, VEC_DIR "%s.json", name);
    json_len = read_file(path, json_buf, sizeof json_buf);
    j = (struct jr){json_buf, json_buf, json_buf + json_len, path, 0};
    nj = j_vectors(&j, &jm1, &jm2);

    /* The .bin decodes to exactly the .json's vars, as one whole packet. */
    cr_assert_eq(decode_all(file_buf, bin_len, &m1, &m2, &n, &used), UWSGI_OK, "%s", name);
    cr_expect_eq(used, bin_len, "%s: the file is one packet", name);
    cr_expect_eq(m1, jm1, "%s", name);
    cr_expect_eq(m2, jm2, "%s", name);
    cr_assert_eq(n, nj, "%s: %zu vars in .bin, %zu in .json", name, n, nj);
    for (size_t k = 0; k < n; k++)
        cr_expect(var_eq(&dec[k], &json_vars[k]), "%s: var %zu (%.*s)", name, k,
                  (int)json_vars[k].key_len, json_vars[k].key);

    /* And the .json's vars encode to exactly the .bin. */
    cr_assert_eq(uwsgi_vars_size(json_vars, nj, &size), UWSGI_OK, "%s", name);
    cr_expect_eq(size + 4, bin_len, "%s", name);
    cr_assert_eq(uwsgi_encode(buf, sizeof buf, jm1, jm2, json_vars, nj, &written), UWSGI_OK, "%s",
                 name);
    cr_assert_eq(written, bin_len, "%s", name);
    cr_expect_eq(memcmp(buf, file_buf, bin_len), 0, "%s: first difference at byte %zu", name,
                 first_diff(buf, file_buf, bin_len));
}

Test(uwsgi_codec, golden_vectors_all_listed)
{
    DIR *d = opendir(VEC_DIR);
    struct dirent *e;
    size_t files = 0;

    cr_assert_not_null(d, "cannot open " VEC_DIR " (criterion must run from the repo root)");
    while ((e = readdir(d)) != NULL) {
        const char *dot = strrchr(e->d_name, '.');
        size_t stem, k;

        if (e->d_name[0] == '.')
            continue;
        cr_assert_not_null(dot, VEC_DIR "%s: no extension", e->d_name);
        cr_assert(strcmp(dot, ".bin") == 0 || strcmp(dot, ".json") == 0,
                  VEC_DIR "%s: only .bin and .json belong here", e->d_name);
        stem = (size_t)(dot - e->d_name);
        for (k = 0; k < ARRAY_LEN(vec_names); k++)
            if (strlen(vec_names[k]) == stem && memcmp(vec_names[k], e->d_name, stem) == 0)
                break;
        cr_expect_lt(k, ARRAY_LEN(vec_names), VEC_DIR "%s: add it to vec_names", e->d_name);
        files++;
    }
    closedir(d);
    cr_expect_eq(files, 2 * ARRAY_LEN(vec_names), "every vector is a .bin and a .json");
}

/* ---- the in-place writer ------------------------------------------------------------------ */

Test(uwsgi_writer, items_made_in_place_decode_as_vars)
{
    struct uwsgi_writer w;
    struct uwsgi_var v[4];
    size_t written = 0, n = 0, used = 0;
    uint8_t m1 = 9, m2 = 9;
    char *p;

    uwsgi_writer_init(&w, buf, sizeof buf);
    uwsgi_item(&w, "PATH_INFO", 9);
    p = uwsgi_item_begin(&w, 10);
    cr_assert_not_null(p);
    memcpy(p, "/a", 2);
    uwsgi_item_end(&w, 2); /* less than announced */
    p = uwsgi_item_begin(&w, 20);
    memcpy(p, "HTTP_X_DROPPED", 14);
    uwsgi_item_cancel(&w);
    uwsgi_item(&w, "EMPTY", 5);
    uwsgi_item(&w, NULL, 0);
    cr_assert_eq(uwsgi_writer_finish(&w, 0, 0, &written), UWSGI_OK);
    cr_expect_eq(written, 4 + (2 + 9 + 2 + 2) + (2 + 5 + 2));
    cr_assert_eq(uwsgi_decode(buf, written, &m1, &m2, v, 4, &n, &used), UWSGI_OK);
    cr_assert_eq(n, 2);
    cr_expect_eq(used, written);
    cr_expect_eq(m1, 0);
    cr_expect_eq(v[0].val_len, 2);
    cr_expect_arr_eq(v[0].val, "/a", 2);
    cr_expect_eq(v[1].key_len, 5);
    cr_expect_eq(v[1].val_len, 0);
}

Test(uwsgi_writer, short_buffer_refuses_and_writes_nothing_past_it)
{
    struct uwsgi_writer w;
    size_t written = 777;

    memset(buf, 0xAA, 64);
    uwsgi_writer_init(&w, buf, 16);
    uwsgi_item(&w, "0123456789", 10); /* 4 + 2 + 10 = 16: fits exactly */
    cr_expect_eq(w.too_big, 0);
    cr_expect_null(uwsgi_item_begin(&w, 0), "not even the two length bytes are left");
    uwsgi_item(&w, "x", 1);
    uwsgi_item_end(&w, 1);
    uwsgi_item_cancel(&w);
    cr_expect_eq(uwsgi_writer_finish(&w, 0, 0, &written), UWSGI_E_TOO_BIG);
    cr_expect_eq(written, 777);
    cr_expect_eq(buf[16], 0xAA);
    uwsgi_writer_init(&w, buf, 3);
    cr_expect_eq(uwsgi_writer_finish(&w, 0, 0, &written), UWSGI_E_TOO_BIG, "no room for the header");
}

Test(uwsgi_writer, datasize_and_item_limits_checked_before_narrowing)
{
    static uint8_t big_out[3 * 65536];
    struct uwsgi_writer w;
    size_t written = 0;
    char *p;

    /* One item of 65536 bytes fits the buffer but not its 16-bit length. */
    uwsgi_writer_init(&w, big_out, sizeof big_out);
    p = uwsgi_item_begin(&w, 65536);
    cr_assert_not_null(p);
    memset(p, 'v', 65536);
    uwsgi_item_end(&w, 65536);
    cr_expect_eq(uwsgi_writer_finish(&w, 0, 0, &written), UWSGI_E_TOO_BIG);
    /* Items of legal sizes adding up to 65536 bytes of vars: refused, not wrapped to 0. */
    uwsgi_writer_init(&w, big_out, sizeof big_out);
    fill_big();
    uwsgi_item(&w, "K", 1);
    uwsgi_item(&w, big, 32763);
    uwsgi_item(&w, "K", 1);
    uwsgi_item(&w, big, 32763);
    cr_expect_eq(w.len - 4, 65536);
    cr_expect_eq(uwsgi_writer_finish(&w, 0, 0, &written), UWSGI_E_TOO_BIG);
    /* One byte less is the largest packet there is. */
    uwsgi_writer_init(&w, big_out, sizeof big_out);
    uwsgi_item(&w, "K", 1);
    uwsgi_item(&w, big, 32763);
    uwsgi_item(&w, "K", 1);
    uwsgi_item(&w, big, 32762);
    cr_expect_eq(uwsgi_writer_finish(&w, 0, 0, &written), UWSGI_OK);
    cr_expect_eq(written, UWSGI_MAX_PACKET);
    cr_expect_eq(big_out[1] | big_out[2] << 8, 65535);
}
