/* SPDX-License-Identifier: MIT */
/* Unit tests for the sans-I/O HTTP/1.x parser: heads, smuggling vectors, chunked framing. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

#include "gateway/h1_parse.h"

#define MAX_HDRS 64

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

/* Small limits so that the over-limit cases stay short. */
static const struct h1_limits lim = {
    .header_bytes = 1024,
    .headers = 16,
    .target_bytes = 256,
    .body_bytes = 1000000,
};

static struct h1_header hdrs[MAX_HDRS];

static int req_n(const char *s, size_t n, struct h1_request *out)
{
    return h1_parse_request(s, n, &lim, hdrs, MAX_HDRS, out);
}

static int req(const char *s, struct h1_request *out)
{
    return req_n(s, strlen(s), out);
}

static int resp(const char *s, int head, struct h1_response *out)
{
    return h1_parse_response(s, strlen(s), &lim, hdrs, MAX_HDRS, head, out);
}

static int slice_is(struct gw_slice s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

#define A10 "aaaaaaaaaa"
#define A50 A10 A10 A10 A10 A10
#define A100 A50 A50
#define A300 A100 A100 A100
#define X4 "X: y\r\nX: y\r\nX: y\r\nX: y\r\n"
#define X16 X4 X4 X4 X4
#define GET "GET / HTTP/1.1\r\nHost: a\r\n"
#define POST "POST / HTTP/1.1\r\nHost: a\r\n"

/* ---- split points -------------------------------------------------------------------------- */

struct split_case {
    const char *name;
    const char *head; /* a complete head, possibly followed by body bytes */
};

static const struct split_case split_cases[] = {
    {"get", "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"},
    {"post_cl", "POST /form HTTP/1.1\r\nHost: a:8080\r\nContent-Length: 5\r\n\r\nhello"},
    {"chunked", "PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
    {"absolute", "GET http://example.com:81/p?x HTTP/1.1\r\nHost: other\r\n\r\n"},
    {"http10", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
    {"leading_crlf", "\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"},
};
INDEX_PARAMS(h1_parse_request, incomplete_at_every_split_point, split_cases)

ParameterizedTest(size_t *i, h1_parse_request, incomplete_at_every_split_point)
{
    const struct split_case *c = &split_cases[*i];
    const char *line = c->head + strspn(c->head, "\r\n");
    size_t head_len = (size_t)(strstr(line, "\r\n\r\n") + 4 - c->head);
    struct h1_request out;

    for (size_t cut = 0; cut < head_len; cut++)
        cr_expect_eq(req_n(c->head, cut, &out), H1_INCOMPLETE, "%s: cut=%zu err=%s", c->name, cut,
                     out.err ? out.err : "-");
    cr_assert_eq(req_n(c->head, head_len, &out), (int)head_len, "%s: err=%s", c->name,
                 out.err ? out.err : "-");
    /* Body bytes that follow the head are not part of it. */
    cr_assert_eq(req(c->head, &out), (int)head_len, "%s", c->name);
}

/* ---- valid requests -------------------------------------------------------------------------- */

Test(h1_parse_request, get_fields)
{
    static const char s[] = "GET /a/b?c=d HTTP/1.1\r\nHost: Example.COM\r\nUser-Agent:  x/1 \t\r\n"
                            "X-Empty:\r\nAccept: */*\r\n\r\n";
    struct h1_request out;

    cr_assert_eq(req(s, &out), (int)sizeof s - 1);
    cr_expect(slice_is(out.method, "GET"));
    cr_expect(slice_is(out.target, "/a/b?c=d"));
    cr_expect(slice_is(out.path, "/a/b?c=d"));
    cr_expect_eq(out.form, H1_TARGET_ORIGIN);
    cr_expect(slice_is(out.authority, "Example.COM"));
    cr_expect_eq(out.minor, 1);
    cr_expect_eq(out.headers, hdrs);
    cr_assert_eq(out.nheaders, 4);
    cr_expect(slice_is(hdrs[1].name, "User-Agent"));
    cr_expect(slice_is(hdrs[1].value, "x/1"), "OWS is trimmed on both sides");
    cr_expect(slice_is(hdrs[2].name, "X-Empty"));
    cr_expect_eq(hdrs[2].value.len, 0);
    cr_expect_eq(out.body, H1_BODY_NONE);
    cr_expect_eq(out.keep_alive, 1);
    cr_expect_eq(out.expect_continue, 0);
    cr_expect_eq(out.upgrade, 0);
    cr_expect_null(out.err);
}

Test(h1_parse_request, post_content_length)
{
    struct h1_request out;

    cr_assert_gt(req(POST "Content-Length:  5 \r\n\r\n", &out), 0, "OWS around CL is fine");
    cr_expect_eq(out.body, H1_BODY_LENGTH);
    cr_expect_eq(out.content_length, 5);
    cr_assert_gt(req(POST "Content-Length: 007\r\n\r\n", &out), 0);
    cr_expect_eq(out.content_length, 7);
    cr_assert_gt(req(POST "Content-Length: 0\r\n\r\n", &out), 0);
    cr_expect_eq(out.body, H1_BODY_NONE, "CL 0 is no body");
    cr_assert_gt(req(POST "Content-Length: 1000000\r\n\r\n", &out), 0, "exactly the limit");
    cr_expect_eq(out.content_length, 1000000);
}

Test(h1_parse_request, body_limit_zero_means_unlimited)
{
    static const char s[] = POST "Content-Length: 9223372036854775807\r\n\r\n";
    const struct h1_limits l = {.header_bytes = 1024, .headers = 16, .target_bytes = 256};
    struct h1_request out;

    cr_assert_gt(h1_parse_request(s, sizeof s - 1, &l, hdrs, MAX_HDRS, &out), 0);
    cr_expect_eq(out.content_length, UINT64_C(9223372036854775807));
}

Test(h1_parse_request, chunked_transfer_encoding)
{
    struct h1_request out;

    cr_assert_gt(req(POST "Transfer-Encoding: chunked\r\n\r\n", &out), 0);
    cr_expect_eq(out.body, H1_BODY_CHUNKED);
    cr_assert_gt(req(POST "Transfer-Encoding: ChUnKeD\r\n\r\n", &out), 0, "case-insensitive");
    cr_expect_eq(out.body, H1_BODY_CHUNKED);
    cr_assert_gt(req(POST "Transfer-Encoding: , chunked ,\r\n\r\n", &out), 0,
                 "empty list elements are ignored (RFC 9110 5.6.1.2)");
    cr_expect_eq(out.body, H1_BODY_CHUNKED);
}

Test(h1_parse_request, absolute_form)
{
    struct h1_request out;

    cr_assert_gt(req("GET http://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n", &out),
                 0);
    cr_expect_eq(out.form, H1_TARGET_ABSOLUTE);
    cr_expect(slice_is(out.authority, "Example.com:8080"));
    cr_expect(slice_is(out.path, "/p?q=1"));
    cr_expect(slice_is(out.target, "http://Example.com:8080/p?q=1"));

    cr_assert_gt(req("GET HTTPS://a HTTP/1.1\r\nHost: a\r\n\r\n", &out), 0);
    cr_expect(slice_is(out.authority, "a"));
    cr_expect(slice_is(out.path, "/"), "empty path defaults to /");
}

Test(h1_parse_request, asterisk_form)
{
    struct h1_request out;

    cr_assert_gt(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &out), 0);
    cr_expect_eq(out.form, H1_TARGET_ASTERISK);
    cr_expect(slice_is(out.path, "*"));
}

Test(h1_parse_request, http10)
{
    struct h1_request out;

    cr_assert_gt(req("GET / HTTP/1.0\r\n\r\n", &out), 0, "Host optional in 1.0");
    cr_expect_eq(out.minor, 0);
    cr_expect_eq(out.keep_alive, 0);
    cr_expect_eq(out.authority.len, 0);
    cr_expect_not_null(out.authority.p);
    cr_assert_gt(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n", &out), 0);
    cr_expect_eq(out.keep_alive, 1);
    cr_expect(slice_is(out.authority, "h"));
    cr_assert_gt(req("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &out), 0);
    cr_expect_eq(out.keep_alive, 0);
    cr_assert_gt(req("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n"
                     "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                     &out),
                 0);
    cr_expect_eq(out.expect_continue, 0, "ignored in 1.0 (RFC 9110 10.1.1)");
    cr_expect_eq(out.upgrade, 0, "ignored in 1.0 (RFC 9110 7.8)");
}

Test(h1_parse_request, connection_flags)
{
    struct h1_request out;

    cr_assert_gt(req(GET "Connection: foo ,  CLOSE\t\r\n\r\n", &out), 0);
    cr_expect_eq(out.keep_alive, 0);
    cr_assert_gt(req(GET "Connection: x\r\nConnection: close\r\n\r\n", &out), 0);
    cr_expect_eq(out.keep_alive, 0, "several Connection fields combine");
    cr_assert_gt(req(GET "Connection: closed\r\n\r\n", &out), 0);
    cr_expect_eq(out.keep_alive, 1);
    cr_assert_gt(req(GET "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", &out), 0);
    cr_expect_eq(out.upgrade, 1);
    cr_expect_eq(out.keep_alive, 1);
    cr_assert_gt(req(GET "Connection: upgrade\r\n\r\n", &out), 0);
    cr_expect_eq(out.upgrade, 0, "no Upgrade field");
    cr_assert_gt(req(GET "Upgrade: websocket\r\n\r\n", &out), 0);
    cr_expect_eq(out.upgrade, 0, "Upgrade not listed in Connection");
}

Test(h1_parse_request, expect_continue)
{
    struct h1_request out;

    cr_assert_gt(req(POST "Expect: 100-Continue\r\nContent-Length: 3\r\n\r\n", &out), 0);
    cr_expect_eq(out.expect_continue, 1);
    cr_assert_gt(req(POST "Expect: 200-ok\r\nContent-Length: 3\r\n\r\n", &out), 0);
    cr_expect_eq(out.expect_continue, 0);
}

Test(h1_parse_request, lenient_bytes_that_are_valid)
{
    static const char s[] = GET "X-Obs: caf\xc3\xa9\tbar\xff\r\nX-Tok: !#$%&'*+-.^_`|~\r\n\r\n";
    struct h1_request out;

    cr_assert_eq(req(s, &out), (int)sizeof s - 1, "obs-text and HTAB in values");
    cr_expect(slice_is(hdrs[1].value, "caf\xc3\xa9\tbar\xff"));
    cr_assert_gt(req("get / HTTP/1.1\r\nHost: a\r\n\r\n", &out), 0, "any token is a method");
    cr_expect(slice_is(out.method, "get"));
    cr_assert_gt(req("\r\n\r\n\r\n\r\n" GET "\r\n", &out), 0, "four empty lines skipped");
}

struct host_case {
    const char *host;
    int ok;
};

static const struct host_case host_cases[] = {
    {"example.com", 1},
    {"example.com:443", 1},
    {"127.0.0.1:80", 1},
    {"[::1]", 1},
    {"[2001:db8::1]:8443", 1},
    {"[::ffff:1.2.3.4]", 1},
    {"a_b-c~d.", 1},
    {"a%41b", 1},
    {"", 0},
    {"a b", 0},
    {"user@a", 0},
    {"a/b", 0},
    {"a:", 0},
    {"a:99999", 0},
    {"a:123456", 0},
    {"a:8x", 0},
    {"[::1", 0},
    {"[]", 0},
    {"[v1.x]", 0},
    {"::1", 0},
    {"a%4", 0},
    {"a%zz", 0},
    {":80", 0},
    {"a\"b", 0},
    {"[::1]x", 0},
    {"a?b", 0},
};
INDEX_PARAMS(h1_parse_request, host_values, host_cases)

ParameterizedTest(size_t *i, h1_parse_request, host_values)
{
    const struct host_case *c = &host_cases[*i];
    char buf[256];
    struct h1_request out;
    int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", c->host);
    int rc = req(buf, &out);

    if (c->ok) {
        cr_assert_eq(rc, n, "Host '%s': err=%s", c->host, out.err ? out.err : "-");
        cr_expect(slice_is(out.authority, c->host));
    } else {
        cr_assert_eq(rc, H1_E_BAD, "Host '%s'", c->host);
        cr_expect_not_null(out.err);
    }
}

Test(h1_parse_request, absolute_form_validates_host_field_too)
{
    struct h1_request out;

    cr_expect_eq(req("GET http://a/ HTTP/1.1\r\nHost: b c\r\n\r\n", &out), H1_E_BAD);
    cr_expect_eq(req("GET http://a/ HTTP/1.1\r\n\r\n", &out), H1_E_BAD, "Host still required");
    cr_expect_gt(req("GET http://a/ HTTP/1.0\r\n\r\n", &out), 0);
    cr_expect(slice_is(out.authority, "a"));
}

/* ---- rejected requests ----------------------------------------------------------------------- */

struct bad_case {
    const char *name;
    const char *in;
    size_t len;
    int rc;
    int status;
};

#define BAD(name, s, rc, st)                                                                       \
    {                                                                                              \
        name, s, sizeof(s) - 1, rc, st                                                             \
    }

static const struct bad_case req_bad_cases[] = {
    /* framing: RFC 9112 §6 */
    BAD("cl_and_te", POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", H1_E_BAD, 400),
    BAD("te_and_cl", POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", H1_E_BAD, 400),
    BAD("te_gzip_and_cl", POST "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n", H1_E_BAD,
        400),
    BAD("dup_cl", POST "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", H1_E_BAD, 400),
    BAD("dup_cl_diff", POST "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_list", POST "Content-Length: 1,1\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_list_ows", POST "Content-Length: 1, 1\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_plus", POST "Content-Length: +5\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_minus", POST "Content-Length: -1\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_empty", POST "Content-Length:\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_inner_space", POST "Content-Length: 5 5\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_hex", POST "Content-Length: 0x10\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_huge", POST "Content-Length: 99999999999999999999999\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_2p64", POST "Content-Length: 18446744073709551616\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_2p63", POST "Content-Length: 9223372036854775808\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_over_limit", POST "Content-Length: 1000001\r\n\r\n", H1_E_TOO_LARGE, 413),
    BAD("cl_max_over_limit", POST "Content-Length: 9223372036854775807\r\n\r\n", H1_E_TOO_LARGE,
        413),
    BAD("te_gzip", POST "Transfer-Encoding: gzip\r\n\r\n", H1_E_TE_UNKNOWN, 501),
    BAD("te_chunked_gzip", POST "Transfer-Encoding: chunked, gzip\r\n\r\n", H1_E_TE_UNKNOWN, 501),
    BAD("te_gzip_chunked", POST "Transfer-Encoding: gzip, chunked\r\n\r\n", H1_E_TE_UNKNOWN, 501),
    BAD("te_identity", POST "Transfer-Encoding: identity\r\n\r\n", H1_E_TE_UNKNOWN, 501),
    BAD("te_xchunked", POST "Transfer-Encoding: xchunked\r\n\r\n", H1_E_TE_UNKNOWN, 501),
    BAD("te_chunked_twice", POST "Transfer-Encoding: chunked, chunked\r\n\r\n", H1_E_BAD, 400),
    BAD("te_chunked_two_fields",
        POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", H1_E_BAD, 400),
    BAD("te_chunked_then_field_gzip",
        POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", H1_E_TE_UNKNOWN, 501),
    BAD("te_empty", POST "Transfer-Encoding:\r\n\r\n", H1_E_BAD, 400),
    BAD("te_commas_only", POST "Transfer-Encoding: , ,\r\n\r\n", H1_E_BAD, 400),
    BAD("te_param", POST "Transfer-Encoding: chunked;q=1\r\n\r\n", H1_E_BAD, 400),
    BAD("te_quoted", POST "Transfer-Encoding: \"chunked\"\r\n\r\n", H1_E_BAD, 400),
    BAD("te_space_inside", POST "Transfer-Encoding: chun ked\r\n\r\n", H1_E_BAD, 400),
    BAD("te_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", H1_E_BAD, 400),
    BAD("te_http10_with_cl",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", H1_E_BAD,
        400),
    /* field syntax: RFC 9112 §5 */
    BAD("obs_fold", GET "X-A: b\r\n c\r\n\r\n", H1_E_BAD, 400),
    BAD("obs_fold_tab", GET "X-A: b\r\n\tc\r\n\r\n", H1_E_BAD, 400),
    BAD("ws_before_first_field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", H1_E_BAD, 400),
    BAD("space_before_colon", GET "Content-Length : 5\r\n\r\n", H1_E_BAD, 400),
    BAD("tab_before_colon", GET "Transfer-Encoding\t: chunked\r\n\r\n", H1_E_BAD, 400),
    BAD("empty_name", GET ": x\r\n\r\n", H1_E_BAD, 400),
    BAD("paren_in_name", GET "X(A): x\r\n\r\n", H1_E_BAD, 400),
    BAD("no_colon", GET "X-A\r\n\r\n", H1_E_BAD, 400),
    BAD("nul_in_value", GET "X-A: a\0b\r\n\r\n", H1_E_BAD, 400),
    BAD("nul_in_name", GET "X\0A: b\r\n\r\n", H1_E_BAD, 400),
    BAD("del_in_value", GET "X-A: a\x7f\r\n\r\n", H1_E_BAD, 400),
    BAD("ctl_in_value", GET "X-A: a\x01\r\n\r\n", H1_E_BAD, 400),
    BAD("esc_in_long_value", GET "X-A: aaaaaaaaaaaaaaaaaaaaaa\x1b aaaaaaaaaaaa\r\n\r\n", H1_E_BAD,
        400),
    BAD("bare_lf_request_line", "GET / HTTP/1.1\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_lf_header", GET "X-A: b\nX-B: c\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_lf_end_of_head", GET "\n", H1_E_BAD, 400),
    BAD("bare_lf_leading", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_cr_value", GET "X-A: b\rc\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_cr_request_line", "GET / HTTP/1.1\rHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_cr_end_of_head", GET "\rX\r\n", H1_E_BAD, 400),
    BAD("bare_cr_leading", "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("cr_in_target", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("too_many_empty_lines", "\r\n\r\n\r\n\r\n\r\n" GET "\r\n", H1_E_BAD, 400),
    /* request-line: RFC 9112 §3 */
    BAD("bad_method_char", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("empty_method", " / HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("double_space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("tab_separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("trailing_space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("no_version", "GET /\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("empty_version", "GET / \r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("lowercase_version", "GET / http/1.1\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("http2", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("http3", "GET / HTTP/3\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("http12", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("http09", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("httx", "GET / HTTX/1.1\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("http1", "GET / HTTP/1\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("http11x", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", H1_E_VERSION, 505),
    BAD("target_space", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("target_ctl", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("target_del", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("target_high", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("target_nul", "GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("target_relative", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("target_too_long", "GET /" A300 " HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_TARGET_TOO_LONG, 414),
    BAD("connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", H1_E_METHOD, 501),
    BAD("asterisk_get", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("absolute_ftp", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("absolute_no_host", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("absolute_bare_scheme", "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("absolute_userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    BAD("absolute_query_no_path", "GET http://a?x HTTP/1.1\r\nHost: a\r\n\r\n", H1_E_BAD, 400),
    /* Host: RFC 9112 §3.2 */
    BAD("missing_host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", H1_E_BAD, 400),
    BAD("two_hosts", GET "Host: a\r\n\r\n", H1_E_BAD, 400),
    BAD("two_hosts_http10", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", H1_E_BAD, 400),
    BAD("bad_host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", H1_E_BAD, 400),
    BAD("bad_host_http10", "GET / HTTP/1.0\r\nHost: a/b\r\n\r\n", H1_E_BAD, 400),
    /* limits */
    BAD("too_many_headers", GET X16 "\r\n", H1_E_TOO_MANY_HEADERS, 431),
    BAD("head_too_big", GET "X-Big: " A300 A300 A300 A300 "\r\n\r\n", H1_E_HEADERS_TOO_BIG, 431),
};
INDEX_PARAMS(h1_parse_request, rejects, req_bad_cases)

ParameterizedTest(size_t *i, h1_parse_request, rejects)
{
    const struct bad_case *c = &req_bad_cases[*i];
    struct h1_request out;
    int rc = req_n(c->in, c->len, &out);

    cr_assert_eq(rc, c->rc, "%s: rc=%d want %d (err=%s)", c->name, rc, c->rc,
                 out.err ? out.err : "-");
    cr_expect_eq(h1_status(rc), c->status, "%s", c->name);
    cr_expect_not_null(out.err, "%s: no reason", c->name);
}

/* The value and target scanners look at eight bytes at a time: put each byte class at every
 * offset of a long run so that every lane of the word and the byte-wise tail are exercised. */
Test(h1_parse_request, every_byte_at_every_offset_of_a_value)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    char buf[128];
    struct h1_request out;

    for (int b = 0; b < 256; b++) {
        int ok = b == '\t' || (b >= 0x20 && b != 0x7f);
        for (size_t at = 0; at < 40; at++) {
            memcpy(buf, pre, sizeof pre - 1);
            memset(buf + sizeof pre - 1, 'v', 40);
            buf[sizeof pre - 1 + at] = (char)b;
            memcpy(buf + sizeof pre - 1 + 40, "\r\n\r\n", 4);
            size_t n = sizeof pre - 1 + 44;
            int rc = req_n(buf, n, &out);
            if (ok)
                cr_assert_eq(rc, (int)n, "byte 0x%02x at %zu: %s", b, at, out.err);
            else
                cr_assert_eq(rc, H1_E_BAD, "byte 0x%02x at %zu", b, at);
        }
    }
}

Test(h1_parse_request, every_byte_at_every_offset_of_a_target)
{
    char buf[128];
    struct h1_request out;

    for (int b = 0; b < 256; b++) {
        int ok = b >= 0x21 && b <= 0x7e;
        for (size_t at = 1; at < 40; at++) {
            memcpy(buf, "GET ", 4);
            buf[4] = '/';
            memset(buf + 5, 't', 39);
            buf[4 + at] = (char)b;
            static const char rest[] = " HTTP/1.1\r\nHost: a\r\n\r\n";
            memcpy(buf + 44, rest, sizeof rest - 1);
            size_t n = 44 + sizeof rest - 1;
            int rc = req_n(buf, n, &out);
            if (ok)
                cr_assert_eq(rc, (int)n, "byte 0x%02x at %zu: %s", b, at, out.err);
            else
                cr_assert_eq(rc, H1_E_BAD, "byte 0x%02x at %zu", b, at);
        }
    }
}

Test(h1_parse_request, error_reasons)
{
    struct h1_request out;

    cr_assert_eq(req(POST "Content-Length: 1\r\nContent-Length: 1\r\n\r\n", &out), H1_E_BAD);
    cr_expect_str_eq(out.err, "duplicate Content-Length");
    cr_assert_eq(req(GET "X: a\r\n b\r\n\r\n", &out), H1_E_BAD);
    cr_expect_str_eq(out.err, "obs-fold");
    cr_assert_eq(req(GET "X: a\n\r\n", &out), H1_E_BAD);
    cr_expect_str_eq(out.err, "bare LF");
    cr_assert_eq(req(GET "X : a\r\n\r\n", &out), H1_E_BAD);
    cr_expect_str_eq(out.err, "space before colon");
    cr_assert_eq(req("GET / HTTP/1.1\r\n\r\n", &out), H1_E_BAD);
    cr_expect_str_eq(out.err, "missing Host");
}

Test(h1_parse_request, errors_found_before_the_head_is_complete)
{
    struct h1_request out;

    /* Each of these is a prefix that no further bytes can make valid. */
    cr_expect_eq(req("GET /" A300, &out), H1_E_TARGET_TOO_LONG);
    cr_expect_eq(req(GET "X-Big: " A300 A300 A300 A300, &out), H1_E_HEADERS_TOO_BIG);
    cr_expect_eq(req(GET X16 "X", &out), H1_E_TOO_MANY_HEADERS);
    cr_expect_eq(req(POST "Content-Length: 1\r\nContent-Length: 1\r\n", &out), H1_E_BAD);
    cr_expect_eq(req(GET "X: a\r\n ", &out), H1_E_BAD);
    cr_expect_eq(req(GET "X : ", &out), H1_E_BAD);
    cr_expect_eq(req_n(GET "X: a\0", sizeof(GET "X: a\0") - 1, &out), H1_E_BAD);
    cr_expect_eq(req("CONNECT ", &out), H1_E_METHOD);
    cr_expect_eq(req("GET / HTTP/1.1\rX", &out), H1_E_BAD);
}

Test(h1_parse_request, header_bytes_limit_is_exact)
{
    static const char s[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct h1_limits l = {.header_bytes = sizeof s - 1, .headers = 4, .target_bytes = 8};
    struct h1_request out;

    cr_expect_eq(h1_parse_request(s, sizeof s - 1, &l, hdrs, MAX_HDRS, &out), (int)sizeof s - 1);
    l.header_bytes--;
    cr_expect_eq(h1_parse_request(s, sizeof s - 1, &l, hdrs, MAX_HDRS, &out), H1_E_HEADERS_TOO_BIG);
    cr_expect_eq(h1_parse_request(s, sizeof s - 2, &l, hdrs, MAX_HDRS, &out), H1_INCOMPLETE,
                 "not over the limit yet");
}

Test(h1_parse_request, target_bytes_limit_is_exact)
{
    static const char s[] = "GET /234567 HTTP/1.1\r\nHost: a\r\n\r\n";
    struct h1_limits l = {.header_bytes = 1024, .headers = 4, .target_bytes = 7};
    struct h1_request out;

    cr_expect_eq(h1_parse_request(s, sizeof s - 1, &l, hdrs, MAX_HDRS, &out), (int)sizeof s - 1);
    l.target_bytes = 6;
    cr_expect_eq(h1_parse_request(s, sizeof s - 1, &l, hdrs, MAX_HDRS, &out), H1_E_TARGET_TOO_LONG);
    cr_expect_eq(h1_parse_request(s, 11, &l, hdrs, MAX_HDRS, &out), H1_E_TARGET_TOO_LONG,
                 "seen 7 target bytes, head incomplete");
    cr_expect_eq(h1_parse_request(s, 10, &l, hdrs, MAX_HDRS, &out), H1_INCOMPLETE);
}

Test(h1_parse_request, null_limits_mean_only_the_array_bounds)
{
    static const char s[] = "GET /" A300 " HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n";
    struct h1_request out;
    struct h1_response rout;

    cr_expect_eq(h1_parse_request(s, sizeof s - 1, NULL, hdrs, 2, &out), (int)sizeof s - 1);
    cr_expect_eq(h1_parse_request(s, sizeof s - 1, NULL, hdrs, 1, &out), H1_E_TOO_MANY_HEADERS);
    cr_expect_eq(h1_parse_response("HTTP/1.1 200 OK\r\n\r\n", 19, NULL, NULL, 0, 0, &rout), 19);
}

Test(h1_parse_request, header_count_is_min_of_limit_and_array)
{
    static const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    struct h1_limits l = {.header_bytes = 1024, .headers = 3, .target_bytes = 8};
    struct h1_request out;

    cr_expect_eq(h1_parse_request(s, sizeof s - 1, &l, hdrs, 3, &out), (int)sizeof s - 1);
    cr_expect_eq(out.nheaders, 3);
    cr_expect_eq(h1_parse_request(s, sizeof s - 1, &l, hdrs, 2, &out), H1_E_TOO_MANY_HEADERS);
    l.headers = 2;
    cr_expect_eq(h1_parse_request(s, sizeof s - 1, &l, hdrs, MAX_HDRS, &out),
                 H1_E_TOO_MANY_HEADERS);
}

/* ---- responses ------------------------------------------------------------------------------- */

Test(h1_parse_response, status_line)
{
    static const char s[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nServer: x\r\n\r\nabc";
    struct h1_response out;

    cr_assert_eq(resp(s, 0, &out), (int)sizeof s - 4);
    cr_expect_eq(out.status, 404);
    cr_expect_eq(out.minor, 1);
    cr_expect(slice_is(out.reason, "Not Found"));
    cr_expect_eq(out.nheaders, 2);
    cr_expect(slice_is(hdrs[1].value, "x"));
    cr_expect_eq(out.body, H1_BODY_LENGTH);
    cr_expect_eq(out.content_length, 3);
    cr_expect_eq(out.keep_alive, 1);

    cr_assert_gt(resp("HTTP/1.0 200\r\n\r\n", 0, &out), 0, "SP before empty reason missing");
    cr_expect_eq(out.status, 200);
    cr_expect_eq(out.minor, 0);
    cr_expect_eq(out.reason.len, 0);
    cr_assert_gt(resp("HTTP/1.1 999 \r\n\r\n", 0, &out), 0, "empty reason");
    cr_expect_eq(out.status, 999);
    cr_expect_eq(out.reason.len, 0);
    cr_assert_gt(resp("HTTP/1.1 200 A \t b\x80\r\n\r\n", 0, &out), 0);
    cr_expect(slice_is(out.reason, "A \t b\x80"));
}

Test(h1_parse_response, incomplete_at_every_split_point)
{
    static const char s[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n";
    struct h1_response out;

    for (size_t cut = 0; cut < sizeof s - 1; cut++)
        cr_expect_eq(h1_parse_response(s, cut, &lim, hdrs, MAX_HDRS, 0, &out), H1_INCOMPLETE,
                     "cut=%zu", cut);
    cr_assert_eq(resp(s, 0, &out), (int)sizeof s - 1);
    cr_expect_eq(out.body, H1_BODY_CHUNKED);
}

struct body_case {
    const char *name;
    const char *in;
    int head;
    enum h1_body body;
    int keep_alive;
    uint64_t cl;
};

static const struct body_case resp_body_cases[] = {
    {"cl", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, H1_BODY_LENGTH, 1, 10},
    {"cl0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, H1_BODY_NONE, 1, 0},
    {"head", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 1, H1_BODY_NONE, 1, 10},
    {"head_chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, H1_BODY_NONE, 1,
     0},
    {"head_no_length", "HTTP/1.1 200 OK\r\n\r\n", 1, H1_BODY_NONE, 1, 0},
    {"204", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 0, H1_BODY_NONE, 1, 10},
    {"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0, H1_BODY_NONE, 1, 10},
    {"100", "HTTP/1.1 100 Continue\r\n\r\n", 0, H1_BODY_NONE, 1, 0},
    {"101",
     "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
     "Upgrade: websocket\r\n\r\n",
     0, H1_BODY_NONE, 1, 0},
    {"103", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 0, H1_BODY_NONE, 1, 0},
    {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, H1_BODY_CHUNKED, 1, 0},
    {"gzip_chunked",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
     "Transfer-Encoding: chunked\r\n\r\n",
     0, H1_BODY_CHUNKED, 1, 0},
    {"te_not_chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, H1_BODY_UNTIL_CLOSE,
     0, 0},
    {"chunked_then_gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0,
     H1_BODY_UNTIL_CLOSE, 0, 0},
    {"until_close", "HTTP/1.1 200 OK\r\n\r\n", 0, H1_BODY_UNTIL_CLOSE, 0, 0},
    {"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", 0,
     H1_BODY_LENGTH, 0, 1},
    {"http10", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 0, H1_BODY_LENGTH, 0, 1},
    {"http10_keep_alive",
     "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
     "Content-Length: 1\r\n\r\n",
     0, H1_BODY_LENGTH, 1, 1},
    {"http10_until_close", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 0,
     H1_BODY_UNTIL_CLOSE, 0, 0},
    {"space_before_colon", "HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\n", 0, H1_BODY_LENGTH, 1,
     4},
    {"no_body_limit", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\n", 0,
     H1_BODY_LENGTH, 1, UINT64_C(9223372036854775807)},
    {"dup_host_ok", "HTTP/1.1 200 OK\r\nHost: a b\r\nHost: c\r\nContent-Length: 1\r\n\r\n", 0,
     H1_BODY_LENGTH, 1, 1},
};
INDEX_PARAMS(h1_parse_response, body_kinds, resp_body_cases)

ParameterizedTest(size_t *i, h1_parse_response, body_kinds)
{
    const struct body_case *c = &resp_body_cases[*i];
    struct h1_response out;
    int rc = resp(c->in, c->head, &out);

    cr_assert_eq(rc, (int)strlen(c->in), "%s: rc=%d err=%s", c->name, rc, out.err ? out.err : "-");
    cr_expect_eq(out.body, c->body, "%s: body %d", c->name, out.body);
    cr_expect_eq(out.keep_alive, c->keep_alive, "%s", c->name);
    cr_expect_eq(out.content_length, c->cl, "%s", c->name);
}

static const struct bad_case resp_bad_cases[] = {
    BAD("status_099", "HTTP/1.1 099 X\r\n\r\n", H1_E_BAD, 400),
    BAD("status_000", "HTTP/1.1 000 X\r\n\r\n", H1_E_BAD, 400),
    BAD("status_2digits", "HTTP/1.1 20 OK\r\n\r\n", H1_E_BAD, 400),
    BAD("status_4digits", "HTTP/1.1 2000 OK\r\n\r\n", H1_E_BAD, 400),
    BAD("status_alpha", "HTTP/1.1 2x0 OK\r\n\r\n", H1_E_BAD, 400),
    BAD("status_missing", "HTTP/1.1\r\n\r\n", H1_E_BAD, 400),
    BAD("double_space", "HTTP/1.1  200 OK\r\n\r\n", H1_E_BAD, 400),
    BAD("http2", "HTTP/2.0 200 OK\r\n\r\n", H1_E_VERSION, 505),
    BAD("http12", "HTTP/1.2 200 OK\r\n\r\n", H1_E_VERSION, 505),
    BAD("lowercase", "http/1.1 200 OK\r\n\r\n", H1_E_BAD, 400),
    BAD("garbage", "<html> 200 OK\r\n\r\n", H1_E_BAD, 400),
    BAD("http1", "HTTP/1 200 OK\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_lf_status", "HTTP/1.1 200 OK\nX: y\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_cr_reason", "HTTP/1.1 200 O\rK\r\n\r\n", H1_E_BAD, 400),
    BAD("ctl_reason", "HTTP/1.1 200 O\x01K\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_and_te", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        H1_E_BAD, 400),
    BAD("cl_and_te_204",
        "HTTP/1.1 204 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", H1_E_BAD,
        400),
    BAD("dup_cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", H1_E_BAD,
        400),
    BAD("cl_list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", H1_E_BAD, 400),
    BAD("cl_sign", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", H1_E_BAD, 400),
    BAD("te_chunked_twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        H1_E_BAD, 400),
    BAD("te_http10", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", H1_E_BAD, 400),
    BAD("te_empty", "HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n", H1_E_BAD, 400),
    BAD("nul", "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_cr", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", H1_E_BAD, 400),
    BAD("bare_lf", "HTTP/1.1 200 OK\r\nX: a\n\r\n", H1_E_BAD, 400),
    BAD("obs_fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", H1_E_BAD, 400),
    BAD("space_in_name", "HTTP/1.1 200 OK\r\nX Y: a\r\n\r\n", H1_E_BAD, 400),
    BAD("too_many_headers", "HTTP/1.1 200 OK\r\n" X16 "X: y\r\n\r\n", H1_E_TOO_MANY_HEADERS, 431),
    BAD("head_too_big", "HTTP/1.1 200 OK\r\nX: " A300 A300 A300 A300 "\r\n\r\n",
        H1_E_HEADERS_TOO_BIG, 431),
};
INDEX_PARAMS(h1_parse_response, rejects, resp_bad_cases)

ParameterizedTest(size_t *i, h1_parse_response, rejects)
{
    const struct bad_case *c = &resp_bad_cases[*i];
    struct h1_response out;
    int rc = h1_parse_response(c->in, c->len, &lim, hdrs, MAX_HDRS, 0, &out);

    cr_assert_eq(rc, c->rc, "%s: rc=%d want %d (err=%s)", c->name, rc, c->rc,
                 out.err ? out.err : "-");
    cr_expect_eq(h1_status(rc), c->status, "%s", c->name);
    cr_expect_not_null(out.err, "%s: no reason", c->name);
}

/* ---- chunked --------------------------------------------------------------------------------- */

struct sink {
    char body[16384];
    size_t body_len;
    char trailers[16384]; /* trailer lines joined with '|' */
    size_t trailers_len;
    int ntrailers;
    size_t consumed; /* bytes the decoder consumed in total */
};

/* Feeds |in| to |d| as glue over an evbuffer would: a first piece of |first| bytes, then pieces
 * of |step| bytes (0: the rest at once); unconsumed bytes stay in front of the next piece.
 * Returns the last event or error. */
static int feed(struct h1_chunked *d, const char *in, size_t len, size_t first, size_t step,
                struct sink *s)
{
    static char buf[32768];
    size_t have = 0, off = 0;
    int first_piece = 1;

    memset(s, 0, sizeof *s);
    cr_assert_leq(len, sizeof buf);
    for (;;) {
        size_t n = len - off;
        if (first_piece && first < n)
            n = first;
        else if (!first_piece && step != 0 && step < n)
            n = step;
        first_piece = 0;
        memcpy(buf + have, in + off, n);
        have += n;
        off += n;
        for (;;) {
            size_t used = 12345;
            struct gw_slice data = {0};
            int rc = h1_chunked_decode(d, buf, have, &used, &data);
            cr_assert_leq(used, have);
            if (rc == H1_CHUNK_DATA) {
                cr_assert_gt(data.len, 0);
                cr_assert(data.p >= buf && data.p + data.len <= buf + used);
                cr_assert_leq(s->body_len + data.len, sizeof s->body);
                memcpy(s->body + s->body_len, data.p, data.len);
                s->body_len += data.len;
            } else if (rc == H1_CHUNK_TRAILER) {
                cr_assert_leq(s->trailers_len + data.len + 1, sizeof s->trailers);
                if (s->ntrailers++)
                    s->trailers[s->trailers_len++] = '|';
                memcpy(s->trailers + s->trailers_len, data.p, data.len);
                s->trailers_len += data.len;
            }
            s->consumed += used;
            memmove(buf, buf + used, have - used);
            have -= used;
            if (rc < 0 || rc == H1_CHUNK_DONE)
                return rc;
            if (rc == H1_CHUNK_NEED)
                break;
        }
        if (off == len)
            return H1_CHUNK_NEED;
    }
}

static int decode(const char *in, size_t len, size_t max_trailer, struct sink *s)
{
    struct h1_chunked d = {.max_trailer_bytes = max_trailer};

    return feed(&d, in, len, len, 0, s);
}

#define DECODE(lit, max, s) decode(lit, sizeof(lit) - 1, max, s)

static int sink_body_is(const struct sink *s, const char *want)
{
    return s->body_len == strlen(want) && memcmp(s->body, want, s->body_len) == 0;
}

static int sink_trailers_are(const struct sink *s, const char *want)
{
    return s->trailers_len == strlen(want) && memcmp(s->trailers, want, s->trailers_len) == 0;
}

Test(h1_parse_chunked, simple)
{
    static const char s[] = "5\r\nhello\r\n6\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\n";
    struct sink k;

    cr_assert_eq(DECODE(s, 0, &k), H1_CHUNK_DONE, "%s", k.body);
    cr_expect(sink_body_is(&k, "hello world0123456789"));
    cr_expect_eq(k.ntrailers, 0);
    cr_expect_eq(k.consumed, sizeof s - 1);
}

Test(h1_parse_chunked, events_one_at_a_time)
{
    static const char s[] = "3\r\nabc\r\n0\r\nX: 1\r\n\r\nGET";
    struct h1_chunked d = {0};
    struct gw_slice data;
    size_t used, off = 0;

    cr_assert_eq(h1_chunked_decode(&d, s + off, sizeof s - 1 - off, &used, &data), H1_CHUNK_DATA);
    cr_expect_eq(used, 6);
    cr_expect(slice_is(data, "abc"));
    off += used;
    cr_assert_eq(h1_chunked_decode(&d, s + off, sizeof s - 1 - off, &used, &data),
                 H1_CHUNK_TRAILER);
    cr_expect(slice_is(data, "X: 1"));
    off += used;
    cr_expect_eq(off, 17);
    cr_assert_eq(h1_chunked_decode(&d, s + off, sizeof s - 1 - off, &used, &data), H1_CHUNK_DONE);
    cr_expect_eq(used, 2, "pipelined bytes after the body are left alone");
    off += used;
    cr_assert_eq(h1_chunked_decode(&d, s + off, sizeof s - 1 - off, &used, &data), H1_CHUNK_DONE);
    cr_expect_eq(used, 0, "DONE is sticky and consumes nothing");
    cr_expect_eq(h1_chunked_decode(&d, "", 0, &used, &data), H1_CHUNK_DONE);
}

Test(h1_parse_chunked, need_consumes_everything_outside_trailers)
{
    struct h1_chunked d = {0};
    struct gw_slice data;
    size_t used = 99;

    cr_expect_eq(h1_chunked_decode(&d, "", 0, &used, &data), H1_CHUNK_NEED);
    cr_expect_eq(used, 0);
    cr_expect_eq(h1_chunked_decode(&d, "1f;a=\"b", 7, &used, &data), H1_CHUNK_NEED);
    cr_expect_eq(used, 7);
    cr_expect_eq(h1_chunked_decode(&d, "\"\r", 2, &used, &data), H1_CHUNK_NEED);
    cr_expect_eq(used, 2);
    cr_expect_eq(h1_chunked_decode(&d, "\nabc", 4, &used, &data), H1_CHUNK_DATA);
    cr_expect_eq(used, 4);
    cr_expect(slice_is(data, "abc"));
    cr_expect_eq(d.remaining, 28);
}

Test(h1_parse_chunked, uppercase_hex_and_leading_zeros)
{
    static const char s[] = "0000000000000003\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n";
    struct sink k;

    cr_assert_eq(DECODE(s, 0, &k), H1_CHUNK_DONE);
    cr_expect(sink_body_is(&k, "abc0123456789"));
}

Test(h1_parse_chunked, extensions_are_skipped)
{
    static const char s[] = "5;a=b;c;d=\"q \\\" x\" ; e = f\r\nhello\r\n"
                            "1 ;x=\"\"\r\n!\r\n0;last=\"\\\\\"\r\n\r\n";
    struct sink k;

    cr_assert_eq(DECODE(s, 0, &k), H1_CHUNK_DONE);
    cr_expect(sink_body_is(&k, "hello!"));
}

Test(h1_parse_chunked, trailers_are_reported)
{
    static const char s[] = "2\r\nhi\r\n0\r\nX-Sum: abc\r\nY:1 \r\nz: \xff\r\n\r\n";
    struct sink k;

    cr_assert_eq(DECODE(s, 0, &k), H1_CHUNK_DONE);
    cr_expect(sink_body_is(&k, "hi"));
    cr_expect_eq(k.ntrailers, 3);
    cr_expect(sink_trailers_are(&k, "X-Sum: abc|Y:1 |z: \xff"), "%.*s", (int)k.trailers_len,
              k.trailers);
}

struct chunk_split_case {
    const char *name;
    const char *in;
    const char *body;
    const char *trailers;
};

static const struct chunk_split_case chunk_split_cases[] = {
    {"plain", "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n", "hello world", ""},
    {"ext", "3;n=v;q=\"a\\\"b\"\r\nabc\r\n0;z\r\n\r\n", "abc", ""},
    {"ext_ws", "3 ; n ; v = tok ;w= \"\" ; x\r\nabc\r\n0\t;z\r\n\r\n", "abc", ""},
    {"trailers", "4\r\nwiki\r\n0\r\nExpires: never\r\nX-Y: \"z\"\r\n\r\n", "wiki",
     "Expires: never|X-Y: \"z\""},
    {"empty", "0\r\n\r\n", "", ""},
};
INDEX_PARAMS(h1_parse_chunked, every_split_point, chunk_split_cases)

ParameterizedTest(size_t *i, h1_parse_chunked, every_split_point)
{
    const struct chunk_split_case *c = &chunk_split_cases[*i];
    size_t len = strlen(c->in);
    struct sink k;

    for (size_t cut = 0; cut <= len; cut++) {
        struct h1_chunked d = {0};
        int rc = feed(&d, c->in, len, cut, 0, &k);
        cr_assert_eq(rc, H1_CHUNK_DONE, "%s: cut=%zu rc=%d err=%s", c->name, cut, rc,
                     d.err ? d.err : "-");
        cr_expect(sink_body_is(&k, c->body), "%s: cut=%zu", c->name, cut);
        cr_expect(sink_trailers_are(&k, c->trailers), "%s: cut=%zu", c->name, cut);
        cr_expect_eq(k.consumed, len, "%s: cut=%zu", c->name, cut);
    }
    struct h1_chunked d = {0};
    cr_assert_eq(feed(&d, c->in, len, 1, 1, &k), H1_CHUNK_DONE, "%s: byte by byte", c->name);
    cr_expect(sink_body_is(&k, c->body), "%s: byte by byte", c->name);
    cr_expect(sink_trailers_are(&k, c->trailers), "%s: byte by byte", c->name);
}

struct chunk_bad_case {
    const char *name;
    const char *in;
    size_t len;
    size_t max_trailer;
    int rc;
};

#define CBAD(name, s, max, rc)                                                                     \
    {                                                                                              \
        name, s, sizeof(s) - 1, max, rc                                                            \
    }

static const struct chunk_bad_case chunk_bad_cases[] = {
    CBAD("size_g", "g\r\n", 0, H1_E_BAD),
    CBAD("size_minus", "-1\r\n", 0, H1_E_BAD),
    CBAD("size_plus", "+1\r\n", 0, H1_E_BAD),
    CBAD("size_leading_space", " 5\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("size_0x", "0x5\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("size_empty", "\r\n", 0, H1_E_BAD),
    CBAD("size_trailing_space", "5 \r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("size_bare_lf", "5\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("size_bare_cr", "5\rhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("size_nul", "5\0\r\nhello\r\n", 0, H1_E_BAD),
    CBAD("size_2p63", "8000000000000000\r\n", 0, H1_E_BAD),
    CBAD("size_2p64", "10000000000000000\r\n", 0, H1_E_BAD),
    CBAD("size_17_digits", "00000000000000001\r\nx\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("size_huge", "ffffffffffffffffffffffff\r\n", 0, H1_E_BAD),
    CBAD("data_no_crlf", "5\r\nhelloX\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("data_bare_lf", "5\r\nhello\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("data_cr_x", "5\r\nhello\rX0\r\n\r\n", 0, H1_E_BAD),
    CBAD("data_x_lf", "5\r\nhelloX\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("data_too_long", "3\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_no_name", "5;\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_no_value", "5;a=\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_bad_char", "5;a@b\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_unterminated_quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_ctl_in_quote", "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_ctl_quoted_pair", "5;a=\"\\\x01\"\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_cr_quoted_pair", "5;a=\"\\\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_after_quote", "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_trailing_ws", "5;a \r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_name_ws_name", "5;a b\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_value_ws_value", "5;a=b c\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_bad_value_char", "5;a=b@\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_double_semicolon", "5;;a\r\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_lf", "5;a\nhello\r\n0\r\n\r\n", 0, H1_E_BAD),
    CBAD("ext_too_long", "5;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n", 16,
         H1_E_BAD),
    CBAD("size_line_too_long_digits", "0000000000000005\r\nhello\r\n0\r\n\r\n", 8, H1_E_BAD),
    CBAD("trailer_space_before_colon", "0\r\nX : y\r\n\r\n", 0, H1_E_BAD),
    CBAD("trailer_obs_fold", "0\r\nX: y\r\n z\r\n\r\n", 0, H1_E_BAD),
    CBAD("trailer_bare_lf", "0\r\nX: y\n\r\n", 0, H1_E_BAD),
    CBAD("trailer_nul", "0\r\nX: \0\r\n\r\n", 0, H1_E_BAD),
    CBAD("trailer_no_colon", "0\r\nXY\r\n\r\n", 0, H1_E_BAD),
    CBAD("final_bare_cr", "0\r\n\rX", 0, H1_E_BAD),
    CBAD("final_bare_lf", "0\r\n\n", 0, H1_E_BAD),
    CBAD("trailers_over_limit", "0\r\nA: 12345678\r\nB: 12345678\r\nC: 12345678\r\n\r\n", 32,
         H1_E_HEADERS_TOO_BIG),
    CBAD("trailer_line_over_limit", "0\r\nA: " A50 "\r\n\r\n", 32, H1_E_HEADERS_TOO_BIG),
    CBAD("trailer_over_limit_incomplete", "0\r\nA: " A50, 32, H1_E_HEADERS_TOO_BIG),
};
INDEX_PARAMS(h1_parse_chunked, rejects, chunk_bad_cases)

ParameterizedTest(size_t *i, h1_parse_chunked, rejects)
{
    const struct chunk_bad_case *c = &chunk_bad_cases[*i];
    struct sink k;

    for (size_t step = 0; step <= 1; step++) {
        struct h1_chunked d = {.max_trailer_bytes = c->max_trailer};
        int rc = feed(&d, c->in, c->len, step ? 1 : c->len, step, &k);
        cr_assert_eq(rc, c->rc, "%s (step %zu): rc=%d err=%s", c->name, step, rc,
                     d.err ? d.err : "-");
        cr_expect_not_null(d.err, "%s", c->name);

        size_t used = 7;
        struct gw_slice data;
        cr_expect_eq(h1_chunked_decode(&d, "0\r\n\r\n", 5, &used, &data), c->rc,
                     "%s: errors are sticky", c->name);
        cr_expect_eq(used, 0);
    }
}

Test(h1_parse_chunked, largest_size_accepted)
{
    struct h1_chunked d = {0};
    struct gw_slice data;
    size_t used;

    cr_expect_eq(h1_chunked_decode(&d, "7fffffffffffffff\r\nab", 20, &used, &data), H1_CHUNK_DATA);
    cr_expect_eq(d.remaining, UINT64_C(0x7fffffffffffffff) - 2);
    cr_expect_eq(h1_chunked_decode(&d, "ab", 2, &used, &data), H1_CHUNK_DATA);
}

Test(h1_parse_chunked, trailer_limit)
{
    /* Exactly at the limit: 13 + 13 trailer bytes (CRLFs included). */
    static const char ok[] = "0\r\nA: 12345678\r\nB: 12345678\r\n\r\n";
    static char big[9300];
    struct sink k;

    cr_expect_eq(DECODE(ok, 26, &k), H1_CHUNK_DONE);
    cr_expect_eq(k.ntrailers, 2);
    cr_expect_eq(DECODE(ok, 25, &k), H1_E_HEADERS_TOO_BIG);

    /* 0 selects the 8192-byte default. */
    memcpy(big, "0\r\nX: ", 6);
    memset(big + 6, 'v', 8000);
    memcpy(big + 8006, "\r\n\r\n", 4);
    cr_expect_eq(decode(big, 8010, 0, &k), H1_CHUNK_DONE);
    memset(big + 6, 'v', 9000);
    memcpy(big + 9006, "\r\n\r\n", 4);
    cr_expect_eq(decode(big, 9010, 0, &k), H1_E_HEADERS_TOO_BIG);
}

Test(h1_parse_chunked, incomplete_trailer_is_left_unconsumed)
{
    struct h1_chunked d = {0};
    struct gw_slice data;
    size_t used;

    cr_assert_eq(h1_chunked_decode(&d, "0\r\nX-A: b", 9, &used, &data), H1_CHUNK_NEED);
    cr_expect_eq(used, 3);
    cr_assert_eq(h1_chunked_decode(&d, "X-A: bc\r", 8, &used, &data), H1_CHUNK_NEED);
    cr_expect_eq(used, 0);
    cr_assert_eq(h1_chunked_decode(&d, "X-A: bc\r\n\r", 10, &used, &data), H1_CHUNK_TRAILER);
    cr_expect_eq(used, 9);
    cr_expect(slice_is(data, "X-A: bc"));
    cr_assert_eq(h1_chunked_decode(&d, "\r", 1, &used, &data), H1_CHUNK_NEED);
    cr_expect_eq(used, 1);
    cr_assert_eq(h1_chunked_decode(&d, "\n", 1, &used, &data), H1_CHUNK_DONE);
    cr_expect_eq(used, 1);
}

/* ---- helpers --------------------------------------------------------------------------------- */

Test(h1_parse_helpers, status_mapping)
{
    cr_expect_eq(h1_status(H1_E_BAD), 400);
    cr_expect_eq(h1_status(H1_E_HEADERS_TOO_BIG), 431);
    cr_expect_eq(h1_status(H1_E_TOO_MANY_HEADERS), 431);
    cr_expect_eq(h1_status(H1_E_TARGET_TOO_LONG), 414);
    cr_expect_eq(h1_status(H1_E_VERSION), 505);
    cr_expect_eq(h1_status(H1_E_TE_UNKNOWN), 501);
    cr_expect_eq(h1_status(H1_E_METHOD), 501);
    cr_expect_eq(h1_status(H1_E_TOO_LARGE), 413);
    cr_expect_eq(h1_status(-100), 400);
    cr_expect_eq(h1_status(H1_INCOMPLETE), 400);
}

static struct gw_slice S(const char *s) {
    return (struct gw_slice){s, strlen(s)};
}

Test(h1_parse_helpers, hop_by_hop)
{
    static const char *const yes[] = {"Connection", "keep-alive",        "PROXY-CONNECTION", "te",
                                      "Trailer",    "Transfer-Encoding", "upgrade"};
    static const char *const no[] = {
        "Host", "Content-Length", "Trailers", "T", "Connections", "Upgrade-Insecure-Requests", "",
        "tE2"};

    for (size_t i = 0; i < GW_ARRAY_LEN(yes); i++)
        cr_expect_eq(h1_is_hop_by_hop(S(yes[i])), 1, "%s", yes[i]);
    for (size_t i = 0; i < GW_ARRAY_LEN(no); i++)
        cr_expect_eq(h1_is_hop_by_hop(S(no[i])), 0, "%s", no[i]);
}

Test(h1_parse_helpers, drop_hop_by_hop)
{
    struct h1_header h[] = {
        {S("Content-Type"), S("text/plain")}, {S("Connection"), S("keep-alive")},
        {S("X-Secret"), S("1")},              {S("Keep-Alive"), S("timeout=5")},
        {S("connection"), S(" x-secret ,")},  {S("X-Kept"), S("2")},
        {S("Transfer-Encoding"), S("chunked")}, {S("x-SECRET"), S("3")},
    };
    size_t n = h1_drop_hop_by_hop(h, GW_ARRAY_LEN(h));

    cr_assert_eq(n, 2);
    cr_expect_eq(gw_slice_eq_ci(h[0].name, "content-type", 12), 1);
    cr_expect_eq(gw_slice_eq_ci(h[1].name, "x-kept", 6), 1);
    cr_expect_eq(h1_drop_hop_by_hop(h, 0), 0);
}

Test(h1_parse_helpers, drop_hop_by_hop_honours_a_bounded_number_of_connection_fields)
{
    struct h1_header h[H1_MAX_CONN_FIELDS + 3];
    size_t n = 0;

    for (size_t i = 0; i < H1_MAX_CONN_FIELDS; i++)
        h[n++] = (struct h1_header){S("Connection"), S("a")};
    h[n++] = (struct h1_header){S("Connection"), S("b")};
    h[n++] = (struct h1_header){S("A"), S("1")};
    h[n++] = (struct h1_header){S("B"), S("2")};
    n = h1_drop_hop_by_hop(h, n);
    /* Every Connection field goes; only the first eight are read for names. */
    cr_assert_eq(n, 1);
    cr_expect_eq(gw_slice_eq_ci(h[0].name, "b", 1), 1);
}

Test(h1_parse_helpers, list_has)
{
    cr_expect_eq(h1_list_has(S("close"), "close", 5), 1);
    cr_expect_eq(h1_list_has(S("  Keep-Alive , Upgrade\t"), "upgrade", 7), 1);
    cr_expect_eq(h1_list_has(S("a,,b, ,close"), "close", 5), 1);
    cr_expect_eq(h1_list_has(S("keep-alive"), "keep-alive", 10), 1);
    cr_expect_eq(h1_list_has(S("closed"), "close", 5), 0);
    cr_expect_eq(h1_list_has(S("xclose"), "close", 5), 0);
    cr_expect_eq(h1_list_has(S("clo se"), "close", 5), 0);
    cr_expect_eq(h1_list_has(S(""), "close", 5), 0);
    cr_expect_eq(h1_list_has((struct gw_slice){NULL, 0}, "close", 5), 0);
    cr_expect_eq(h1_list_has(S(" , "), "", 0), 0);
}
