/* SPDX-License-Identifier: MIT */
/* The access-log JSON format and buffer, and the error-log line format (read back via pipes). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "gateway/log.h"

#define S(lit) ((struct gw_slice){(lit), sizeof(lit) - 1})

/* 2026-11-25T00:47:12.123456Z */
#define T_US INT64_C(1795567632123456)

static struct gw_access_rec full_rec(void)
{
    return (struct gw_access_rec){
        .time_us = T_US,
        .client = S("1.2.3.4:5"),
        .method = S("GET"),
        .target = S("/api/x?q=1"),
        .host = S("example.com"),
        .status = 200,
        .bytes_in = 512,
        .bytes_out = 2048,
        .duration_us = 1234,
        .route = S("api"),
        .server = S("10.0.0.1:8000"),
        .upstream_us = 567,
        .queue_us = -1,
        .request_id = S("abc123"),
    };
}

static const char full_json[] =
    "{\"time\":\"2026-11-25T00:47:12.123Z\",\"client\":\"1.2.3.4:5\",\"method\":\"GET\","
    "\"target\":\"/api/x?q=1\",\"host\":\"example.com\",\"status\":200,\"bytes_in\":512,"
    "\"bytes_out\":2048,\"duration_ms\":1.234,\"upstream\":\"api\","
    "\"server\":\"10.0.0.1:8000\",\"upstream_ms\":0.567,\"request_id\":\"abc123\"}\n";

static struct gw_access_rec escape_rec(void)
{
    return (struct gw_access_rec){
        .time_us = 0,
        .client = S("[::1]:40000"),
        .method = S("P\"T"),
        .target = S("/a\"b\\c\nd\x01\x1f\x7f\xc3\xa9~"),
        .status = 502,
        .duration_us = 5,
        .upstream_us = -1,
        .queue_us = -1,
        .error = S("connect: \"refused\"\r\n"),
    };
}

static const char escape_json[] =
    "{\"time\":\"1970-01-01T00:00:00.000Z\",\"client\":\"[::1]:40000\",\"method\":\"P\\\"T\","
    "\"target\":\"/a\\\"b\\\\c\\u000ad\\u0001\\u001f\\u007f\\u00c3\\u00a9~\",\"host\":\"\","
    "\"status\":502,\"bytes_in\":0,\"bytes_out\":0,\"duration_ms\":0.005,\"upstream\":\"\","
    "\"server\":\"\",\"upstream_ms\":null,\"request_id\":\"\","
    "\"error\":\"connect: \\\"refused\\\"\\u000d\\u000a\"}\n";

static void expect_json(const struct gw_access_rec *r, const char *want);

Test(access_json, queue_time_only_when_queued)
{
    struct gw_access_rec r = full_rec();
    char out[1024];
    size_t n;

    r.queue_us = 1500;
    n = gw_access_format_json(out, sizeof out, &r);
    cr_assert_gt(n, 0);
    out[n] = '\0';
    cr_expect_not_null(strstr(out, "\"upstream_ms\":0.567,\"queue_ms\":1.500,\"request_id\""),
                       "%s", out);
    r.queue_us = -1;
    n = gw_access_format_json(out, sizeof out, &r);
    out[n] = '\0';
    cr_expect_null(strstr(out, "queue_ms"), "%s", out);
}

static void expect_json(const struct gw_access_rec *r, const char *want)
{
    char out[1024];
    size_t want_len = strlen(want);
    size_t n = gw_access_format_json(out, sizeof out, r);

    cr_assert_eq(n, want_len, "got %zu bytes: %.*s", n, (int)n, out);
    cr_assert_arr_eq(out, want, want_len, "got %.*s", (int)n, out);
}

Test(access_json, full_record)
{
    struct gw_access_rec r = full_rec();
    expect_json(&r, full_json);
}

Test(access_json, escapes_and_null_upstream)
{
    struct gw_access_rec r = escape_rec();
    expect_json(&r, escape_json);
}

Test(access_json, output_is_ascii_without_raw_controls)
{
    char in[256], out[4096];
    struct gw_access_rec r = full_rec();

    for (int i = 0; i < 256; i++)
        in[i] = (char)i;
    r.target = (struct gw_slice){in, sizeof in};
    size_t n = gw_access_format_json(out, sizeof out, &r);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i + 1 < n; i++)
        cr_expect(out[i] >= 0x20 && out[i] < 0x7f, "byte %zu is 0x%02x", i, (unsigned char)out[i]);
    cr_expect_eq(out[n - 1], '\n');
}

/* A plain reference escaper for the next test. */
static size_t ref_escape(char *out, const unsigned char *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = in[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            p += sprintf(p, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
        } else {
            *p++ = (char)c;
        }
    }
    return (size_t)(p - out);
}

Test(access_json, every_byte_at_every_position)
{
    /* Strings are copied 8 bytes at a time when clean: a byte to escape must be caught in
     * any lane of the word and in the tail. */
    struct gw_access_rec r = full_rec();
    unsigned char in[19];
    char out[1024], want[256];

    for (size_t len = 1; len <= sizeof in; len++) {
        r.target = (struct gw_slice){(const char *)in, len};
        for (unsigned c = 0; c < 256; c++) {
            for (size_t k = 0; k < len; k++) {
                memcpy(in, "abcdefghijklmnopqrs", sizeof in);
                in[k] = (unsigned char)c;
                size_t wn = ref_escape(want, in, len);
                size_t n = gw_access_format_json(out, sizeof out, &r);
                char *t = strstr(out, "\"target\":\"");
                cr_assert_gt(n, 0);
                cr_assert_not_null(t);
                cr_assert_arr_eq(t + 10, want, wn, "len %zu byte 0x%02x at %zu: %.*s", len, c, k,
                                 (int)wn, t + 10);
                cr_assert_eq(t[10 + wn], '"', "len %zu byte 0x%02x at %zu", len, c, k);
            }
        }
    }
}

Test(access_json, random_strings_match_reference)
{
    /* Several bytes to escape in one word, next to each other: borrows and carries between
     * lanes must not hide one. */
    static const unsigned char alphabet[] = {'a',  'Z',  '/',  ' ',  '"',  '\\', 0x00, 0x01, 0x1f,
                                             0x20, 0x21, 0x7e, 0x7f, 0x80, 0xa0, 0xff, 0x5b, 0x23};
    struct gw_access_rec r = full_rec();
    unsigned char in[40];
    char out[1024], want[256];
    uint32_t seed = 12345;

    for (int iter = 0; iter < 20000; iter++) {
        seed = seed * 1664525u + 1013904223u;
        size_t len = (seed >> 8) % (sizeof in + 1);
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1664525u + 1013904223u;
            in[k] = alphabet[(seed >> 16) % sizeof alphabet];
        }
        r.target = (struct gw_slice){(const char *)in, len};
        size_t wn = ref_escape(want, in, len);
        size_t n = gw_access_format_json(out, sizeof out, &r);
        char *t = strstr(out, "\"target\":\"");
        cr_assert_gt(n, 0);
        cr_assert_not_null(t);
        cr_assert_arr_eq(t + 10, want, wn, "iter %d", iter);
        cr_assert_eq(t[10 + wn], '"', "iter %d", iter);
    }
}

Test(access_json, numbers)
{
    struct gw_access_rec r = full_rec();
    char out[1024];

    r.time_us = T_US + 999000 - 123456; /* .999 */
    r.status = 0;
    r.bytes_in = 0;
    r.bytes_out = UINT64_MAX;
    r.duration_us = UINT64_C(12345678901);
    r.upstream_us = 0;
    size_t n = gw_access_format_json(out, sizeof out, &r);
    cr_assert_gt(n, 0);
    out[n] = '\0';
    cr_expect_not_null(strstr(out, "\"time\":\"2026-11-25T00:47:12.999Z\""), "%s", out);
    cr_expect_not_null(strstr(out, "\"status\":0,\"bytes_in\":0,"
                                   "\"bytes_out\":18446744073709551615,"
                                   "\"duration_ms\":12345678.901,"),
                       "%s", out);
    cr_expect_not_null(strstr(out, "\"upstream_ms\":0.000,"), "%s", out);
    /* Every digit count of the integer formatter. */
    uint64_t v = 0;
    char want[32];
    for (int digits = 1; digits <= 20; digits++) {
        v = v * 10 + (uint64_t)(digits % 10);
        r.bytes_in = v;
        n = gw_access_format_json(out, sizeof out, &r);
        cr_assert_gt(n, 0);
        out[n] = '\0';
        snprintf(want, sizeof want, ",\"bytes_in\":%llu,", (unsigned long long)v);
        cr_expect_not_null(strstr(out, want), "%s not in %s", want, out);
    }
}

Test(access_json, time_cache_follows_seconds)
{
    struct gw_access_rec r = full_rec();
    char out[1024];
    static const char *const want[] = {"2026-11-25T00:47:12.123Z", "2026-11-25T00:47:13.123Z",
                                       "2026-11-25T00:47:12.999Z", "1999-12-31T23:59:59.000Z",
                                       "1969-12-31T23:59:59.999Z"};
    const int64_t times[] = {T_US, T_US + 1000000, T_US + 876000, INT64_C(946684799000000), -1000};

    for (size_t i = 0; i < GW_ARRAY_LEN(times); i++) {
        r.time_us = times[i];
        size_t n = gw_access_format_json(out, sizeof out, &r);
        cr_assert_gt(n, 33);
        cr_expect_arr_eq(out + 9, want[i], 24, "case %zu: %.24s", i, out + 9);
    }
}

/* Every capacity below the exact length is refused without writing past it; the exact length
 * is accepted. Covers the measured path as well as the worst-case bound fast path. */
static void expect_exact_cap(const struct gw_access_rec *r, const char *want)
{
    size_t len = strlen(want);
    char *out = malloc(len + 16);

    cr_assert_not_null(out);
    for (size_t cap = 0; cap < len; cap++) {
        memset(out, 'Z', len + 16);
        cr_assert_eq(gw_access_format_json(out, cap, r), 0, "cap %zu of %zu", cap, len);
    }
    memset(out, 'Z', len + 16);
    cr_assert_eq(gw_access_format_json(out, len, r), len);
    cr_expect_arr_eq(out, want, len);
    cr_expect_eq(out[len], 'Z');
    free(out);
}

static const char queued_json[] =
    "{\"time\":\"2026-11-25T00:47:12.123Z\",\"client\":\"1.2.3.4:5\",\"method\":\"GET\","
    "\"target\":\"/api/x?q=1\",\"host\":\"example.com\",\"status\":200,\"bytes_in\":512,"
    "\"bytes_out\":2048,\"duration_ms\":1.234,\"upstream\":\"api\","
    "\"server\":\"10.0.0.1:8000\",\"upstream_ms\":0.567,\"queue_ms\":12345.678,"
    "\"request_id\":\"abc123\"}\n";

Test(access_json, cap_too_small)
{
    struct gw_access_rec full = full_rec(), esc = escape_rec(), queued = full_rec();

    queued.queue_us = 12345678;
    expect_exact_cap(&full, full_json);
    expect_exact_cap(&esc, escape_json);
    expect_exact_cap(&queued, queued_json);
}

/* Reads what the pipe holds (its read end is non-blocking). */
static size_t drain(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    return n;
}

static void make_pipe(int p[2])
{
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
}

Test(access_log, buffers_until_flush)
{
    int p[2];
    char got[4096];
    struct gw_access_rec r = full_rec();
    size_t len = sizeof full_json - 1;

    make_pipe(p);
    struct gw_access_log *l = gw_access_log_new(p[1], 4096);
    cr_assert_not_null(l);
    gw_access_log_write(l, &r);
    gw_access_log_write(l, &r);
    cr_expect_eq(drain(p[0], got, sizeof got), 0, "nothing is written before a flush");
    cr_expect_eq(gw_access_log_flush(l), 1);
    cr_assert_eq(drain(p[0], got, sizeof got), 2 * len);
    cr_expect_arr_eq(got, full_json, len);
    cr_expect_arr_eq(got + len, full_json, len);
    cr_expect_eq(gw_access_log_flush(l), 0, "empty buffer");
    gw_access_log_free(l);
    cr_expect_eq(drain(p[0], got, sizeof got), 0);
    close(p[0]);
    close(p[1]);
}

Test(access_log, flushes_when_full_and_on_free)
{
    int p[2];
    char got[4096];
    struct gw_access_rec r = full_rec(), e = escape_rec();
    size_t len = sizeof full_json - 1, elen = sizeof escape_json - 1;

    make_pipe(p);
    /* Room for two records of |len| bytes, not three. */
    struct gw_access_log *l = gw_access_log_new(p[1], 2 * len + 10);
    cr_assert_not_null(l);
    gw_access_log_write(l, &r);
    gw_access_log_write(l, &r);
    cr_expect_eq(drain(p[0], got, sizeof got), 0);
    gw_access_log_write(l, &e); /* does not fit: the first two go out */
    cr_assert_eq(drain(p[0], got, sizeof got), 2 * len);
    cr_expect_arr_eq(got + len, full_json, len);
    gw_access_log_free(l);
    cr_assert_eq(drain(p[0], got, sizeof got), elen);
    cr_expect_arr_eq(got, escape_json, elen);
    close(p[0]);
    close(p[1]);
}

Test(access_log, record_larger_than_buffer)
{
    int p[2];
    char got[4096];
    struct gw_access_rec r = full_rec(), e = escape_rec();
    size_t len = sizeof full_json - 1, elen = sizeof escape_json - 1;

    make_pipe(p);
    struct gw_access_log *l = gw_access_log_new(p[1], len + 1);
    cr_assert_not_null(l);
    gw_access_log_write(l, &r); /* buffered */
    gw_access_log_write(l, &e); /* larger than the buffer: flush, then written directly */
    cr_assert_eq(drain(p[0], got, sizeof got), len + elen);
    cr_expect_arr_eq(got, full_json, len);
    cr_expect_arr_eq(got + len, escape_json, elen);
    cr_expect_eq(gw_access_log_flush(l), 0);
    gw_access_log_free(l);

    /* A zero-byte buffer writes every record straight through. */
    l = gw_access_log_new(p[1], 0);
    cr_assert_not_null(l);
    gw_access_log_write(l, &r);
    cr_assert_eq(drain(p[0], got, sizeof got), len);
    cr_expect_arr_eq(got, full_json, len);
    gw_access_log_free(l);
    close(p[0]);
    close(p[1]);
}

Test(access_log, full_pipe_drops_instead_of_blocking)
{
    int p[2];
    static char got[1 << 20];
    struct gw_access_rec r = full_rec();
    size_t len = sizeof full_json - 1, fill = 0;

    make_pipe(p);
    cr_assert_eq(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
    memset(got, 'x', 4096);
    for (;;) {
        ssize_t w = write(p[1], got, 4096);
        if (w < 0)
            break;
        fill += (size_t)w;
    }
    cr_assert_eq(errno, EAGAIN);
    struct gw_access_log *l = gw_access_log_new(p[1], 4096);
    gw_access_log_write(l, &r);
    gw_access_log_write(l, &r);
    cr_expect_eq(gw_access_log_flush(l), 1); /* returns: the lines are dropped */
    size_t n = drain(p[0], got, sizeof got);
    cr_expect_eq(n, fill);
    cr_expect_eq(memchr(got, '{', n), NULL, "nothing of the dropped lines");
    /* The log works again once the reader caught up. */
    gw_access_log_write(l, &r);
    gw_access_log_free(l);
    cr_assert_eq(drain(p[0], got, sizeof got), len);
    cr_expect_arr_eq(got, full_json, len);
    close(p[0]);
    close(p[1]);
}

Test(access_log, free_null)
{
    gw_access_log_free(NULL);
}

/* Runs the error log into a pipe and returns what it wrote (NUL-terminated in |buf|). */
struct capture {
    int p[2];
    int saved;
};

static void capture_start(struct capture *c)
{
    make_pipe(c->p);
    c->saved = dup(STDERR_FILENO);
    cr_assert_geq(c->saved, 0);
    cr_assert_eq(dup2(c->p[1], STDERR_FILENO), STDERR_FILENO);
}

static size_t capture_end(struct capture *c, char *buf, size_t cap)
{
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    size_t n = drain(c->p[0], buf, cap - 1);
    buf[n] = '\0';
    close(c->p[0]);
    close(c->p[1]);
    return n;
}

/* Checks "YYYY-MM-DDTHH:MM:SS.mmmZ " at |s|. */
static void expect_timestamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ ";

    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd')
            cr_expect(s[i] >= '0' && s[i] <= '9', "byte %zu of %.25s", i, s);
        else
            cr_expect_eq(s[i], shape[i], "byte %zu of %.25s", i, s);
    }
}

Test(error_log, line_format)
{
    struct capture c;
    char got[4096];

    capture_start(&c);
    gw_log_(GW_LOG_ERROR, "conn=12 peer=1.2.3.4:5", "gateway/h1.c", 123, "bad %s %d", "thing", 7);
    gw_log_(GW_LOG_WARN, NULL, "main.c", 9, "plain");
    size_t n = capture_end(&c, got, sizeof got);

    static const char l1[] = "error conn=12 peer=1.2.3.4:5 h1.c:123: bad thing 7\n";
    static const char l2[] = "warn main.c:9: plain\n";
    cr_assert_eq(n, 25 + sizeof l1 - 1 + 25 + sizeof l2 - 1, "%s", got);
    expect_timestamp(got);
    cr_expect_arr_eq(got + 25, l1, sizeof l1 - 1, "%s", got);
    expect_timestamp(got + 25 + sizeof l1 - 1);
    cr_expect_arr_eq(got + 50 + sizeof l1 - 1, l2, sizeof l2 - 1, "%s", got);
}

Test(error_log, control_chars_cannot_forge_lines)
{
    struct capture c;
    char got[4096];

    capture_start(&c);
    gw_log_error("host %s", "evil\n2026-01-01T00:00:00.000Z error x.c:1: forged\r\t\x1b[0m");
    size_t n = capture_end(&c, got, sizeof got);

    cr_assert_gt(n, 25);
    cr_expect_eq(memchr(got, '\n', n), got + n - 1, "one line: %s", got);
    cr_expect_not_null(
        strstr(got, " host evil?2026-01-01T00:00:00.000Z error x.c:1: forged???[0m\n"), "%s", got);
    cr_expect_not_null(strstr(got, " error test_log.c:"), "%s", got);
}

Test(error_log, long_message_truncated)
{
    struct capture c;
    static char got[8192], msg[5001];

    memset(msg, 'a', 5000);
    capture_start(&c);
    gw_log_info("%s", msg);
    size_t n = capture_end(&c, got, sizeof got);

    cr_expect_eq(n, 2048);
    cr_expect_arr_eq(got + n - 5, "a...\n", 5, "%s", got + n - 5);
    cr_expect_not_null(strstr(got, " info test_log.c:"));
}

Test(error_log, levels)
{
    struct capture c;
    char got[4096];

    cr_expect_eq(gw_log_enabled(GW_LOG_DEBUG), 0, "info by default");
    cr_expect_eq(gw_log_enabled(GW_LOG_INFO), 1);
    capture_start(&c);
    gw_log_(GW_LOG_DEBUG, NULL, "a.c", 1, "hidden");
    gw_log_set_level(GW_LOG_WARN);
    gw_log_info("hidden too");
    gw_log_warn("shown");
    gw_log_set_level(GW_LOG_DEBUG);
    gw_log_(GW_LOG_DEBUG, NULL, "a.c", 2, "debug shown");
    size_t n = capture_end(&c, got, sizeof got);

    cr_expect_null(strstr(got, "hidden"), "%s", got);
    cr_expect_not_null(strstr(got, " warn test_log.c:"), "%s", got);
    cr_expect_not_null(strstr(got, " debug a.c:2: debug shown\n"), "%s", got);
    cr_expect_gt(n, 0);
}

Test(error_log, errno_is_preserved)
{
    struct capture c;
    char got[256];

    capture_start(&c);
    errno = ECONNRESET;
    gw_log_error("x");
    cr_expect_eq(errno, ECONNRESET);
    capture_end(&c, got, sizeof got);
}

Test(error_log, ssl_errors_drained)
{
    struct capture c;
    char got[4096];

    ERR_raise(ERR_LIB_USER, 41);
    ERR_raise(ERR_LIB_USER, 42);
    capture_start(&c);
    gw_log_ssl_errors(GW_LOG_ERROR, "tls: cannot load cert.pem");
    size_t n = capture_end(&c, got, sizeof got);

    cr_expect_eq(ERR_peek_error(), 0);
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += got[i] == '\n';
    cr_expect_eq(lines, 3, "%s", got);
    cr_expect_not_null(strstr(got, " error log.c:"), "%s", got);
    cr_expect_not_null(strstr(got, ": tls: cannot load cert.pem\n"), "%s", got);
    cr_expect_not_null(strstr(got, "openssl: error:"), "%s", got);
}

Test(error_log, ssl_errors_drained_when_level_hidden)
{
    struct capture c;
    char got[256];

    ERR_raise(ERR_LIB_USER, 41);
    capture_start(&c);
    gw_log_ssl_errors(GW_LOG_DEBUG, "hidden");
    size_t n = capture_end(&c, got, sizeof got);

    cr_expect_eq(n, 0, "%s", got);
    cr_expect_eq(ERR_peek_error(), 0);
}
