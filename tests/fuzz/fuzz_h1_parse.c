/* SPDX-License-Identifier: MIT */
/* libFuzzer target for h1_parse: request heads, response heads and the chunked decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/h1_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HDRS 32

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Heap copy of exactly |len| bytes, so that ASan sees any read past a prefix's end. */
static char *dup_exact(const char *p, size_t len)
{
    char *q = malloc(len ? len : 1);

    CHECK(q != NULL);
    memcpy(q, p, len);
    return q;
}

static void check_slice(struct gw_slice s, const char *buf, size_t len)
{
    if (s.len != 0)
        CHECK(s.p >= buf && s.len <= len && s.p + s.len <= buf + len);
}

static void check_headers(const struct h1_header *h, size_t n, const char *buf, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        CHECK(h[i].name.len > 0);
        check_slice(h[i].name, buf, len);
        check_slice(h[i].value, buf, len);
    }
}

static struct h1_limits limits_from(uint8_t sel)
{
    /* Small limits half the time so the over-limit paths get reached. */
    if (sel & 1)
        return (struct h1_limits){.header_bytes = 32u + (sel >> 1) * 8u,
                                  .headers = (sel >> 4) & 7u,
                                  .target_bytes = 8u + (sel >> 2),
                                  .body_bytes = sel};
    return (struct h1_limits){.header_bytes = 8192, .headers = MAX_HDRS, .target_bytes = 2048};
}

static void fuzz_request(const char *buf, size_t len, const struct h1_limits *lim)
{
    struct h1_header hdrs[MAX_HDRS];
    struct h1_request out;
    int rc = h1_parse_request(buf, len, lim, hdrs, MAX_HDRS, &out);

    if (rc < 0) {
        CHECK(rc == H1_INCOMPLETE || out.err != NULL);
        return;
    }
    CHECK(rc > 0 && (size_t)rc <= len && out.err == NULL);
    CHECK(out.nheaders <= MAX_HDRS && out.method.len > 0 && out.target.len > 0);
    CHECK(out.minor == 0 || out.minor == 1);
    check_slice(out.method, buf, len);
    check_slice(out.target, buf, len);
    check_slice(out.authority, buf, len);
    check_headers(hdrs, out.nheaders, buf, len);
    CHECK(out.body != H1_BODY_UNTIL_CLOSE);
    CHECK(out.body != H1_BODY_LENGTH || out.content_length > 0);

    /* The head ends exactly at |rc|: one byte less is incomplete, the bytes after it are not
     * looked at. */
    char *cut = dup_exact(buf, (size_t)rc);
    CHECK(h1_parse_request(cut, (size_t)rc - 1, lim, hdrs, MAX_HDRS, &out) == H1_INCOMPLETE);
    CHECK(h1_parse_request(cut, (size_t)rc, lim, hdrs, MAX_HDRS, &out) == rc);
    free(cut);
}

static void fuzz_response(const char *buf, size_t len, const struct h1_limits *lim, int head)
{
    struct h1_header hdrs[MAX_HDRS];
    struct h1_response out;
    int rc = h1_parse_response(buf, len, lim, hdrs, MAX_HDRS, head, &out);

    if (rc < 0) {
        CHECK(rc == H1_INCOMPLETE || out.err != NULL);
        return;
    }
    CHECK(rc > 0 && (size_t)rc <= len && out.err == NULL);
    CHECK(out.status >= 100 && out.status <= 999 && out.nheaders <= MAX_HDRS);
    check_slice(out.reason, buf, len);
    check_headers(hdrs, out.nheaders, buf, len);
    CHECK(out.body != H1_BODY_UNTIL_CLOSE || !out.keep_alive);

    char *cut = dup_exact(buf, (size_t)rc);
    CHECK(h1_parse_response(cut, (size_t)rc - 1, lim, hdrs, MAX_HDRS, head, &out) == H1_INCOMPLETE);
    CHECK(h1_parse_response(cut, (size_t)rc, lim, hdrs, MAX_HDRS, head, &out) == rc);
    free(cut);
}

/* What a decode run produced, in a form that does not depend on how the input was split. */
struct outcome {
    int rc;
    uint64_t body_hash;
    uint64_t body_len;
    uint64_t trailer_hash;
    size_t consumed;
};

static uint64_t fnv(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * UINT64_C(0x100000001b3);
    return h;
}

/* Feeds |in| in pieces cycling through |sizes| (none: all at once), re-presenting what the
 * decoder left unconsumed in front of the next piece, each call on an exact-size copy. */
static struct outcome decode(const char *in, size_t len, const uint8_t *sizes, size_t nsizes,
                             size_t max_trailer)
{
    struct h1_chunked d = {.max_trailer_bytes = max_trailer};
    struct outcome o = {.body_hash = UINT64_C(0xcbf29ce484222325), .trailer_hash = 1};
    size_t off = 0, avail = nsizes ? 0 : len, k = 0;

    for (;;) {
        size_t n = avail - off;
        char *win = dup_exact(in + off, n);
        size_t used = (size_t)-1;
        struct gw_slice s = {0};
        int rc = h1_chunked_decode(&d, win, n, &used, &s);

        CHECK(used <= n);
        if (rc == H1_CHUNK_DATA || rc == H1_CHUNK_TRAILER) {
            CHECK(used > 0 && s.p >= win && s.p + s.len <= win + used);
            if (rc == H1_CHUNK_DATA) {
                CHECK(s.len > 0);
                o.body_hash = fnv(o.body_hash, s.p, s.len);
                o.body_len += s.len;
            } else {
                o.trailer_hash = fnv(o.trailer_hash, s.p, s.len) * 31;
            }
        }
        free(win);
        off += used;
        if (rc < 0 || rc == H1_CHUNK_DONE) {
            CHECK(rc == H1_CHUNK_DONE || d.err != NULL);
            /* Both are sticky and consume nothing. */
            CHECK(h1_chunked_decode(&d, "0\r\n\r\n", 5, &used, &s) == rc && used == 0);
            o.rc = rc;
            break;
        }
        if (rc == H1_CHUNK_NEED) {
            if (avail == len) {
                o.rc = rc;
                break;
            }
            size_t piece = sizes[k++ % nsizes] + 1u;
            avail = piece < len - avail ? avail + piece : len;
        }
    }
    o.consumed = off;
    return o;
}

static void fuzz_chunked(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t max_trailer = data[0] < 128 ? data[0] : 0; /* small limits, or the default */
    size_t nsizes = data[1] & 15u;
    data += 2;
    size -= 2;
    if (nsizes > size)
        nsizes = size;
    const uint8_t *sizes = data;
    const char *in = (const char *)data + nsizes;
    size_t len = size - nsizes;

    struct outcome whole = decode(in, len, NULL, 0, max_trailer);
    uint8_t ones = 0;
    struct outcome pieces =
        decode(in, len, nsizes ? sizes : &ones, nsizes ? nsizes : 1, max_trailer);

    /* The decoder's result must not depend on where the input was split. */
    CHECK(whole.rc == pieces.rc);
    CHECK(whole.body_hash == pieces.body_hash && whole.body_len == pieces.body_len);
    CHECK(whole.trailer_hash == pieces.trailer_hash);
    if (whole.rc >= 0)
        CHECK(whole.consumed == pieces.consumed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0] % 3, sel = data[1];
    const char *buf = (const char *)data + 2;
    size_t len = size - 2;
    struct h1_limits lim = limits_from(sel);

    switch (mode) {
    case 0:
        fuzz_request(buf, len, &lim);
        break;
    case 1:
        fuzz_response(buf, len, &lim, sel >> 7);
        break;
    default:
        fuzz_chunked(data + 1, size - 1);
        break;
    }
    return 0;
}
