/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the uwsgi codec: every packet that decodes must re-encode to the same
 * bytes; header names and percent-decoding are fed the decoded keys and values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/uwsgi/uwsgi_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Room for the most vars a packet can hold, so that a full decode never says TOO_BIG. */
static struct uwsgi_var vars[UWSGI_MAX_VARS];
static struct uwsgi_var few[8];
static uint8_t packet[UWSGI_MAX_PACKET];

/* Heap copy of exactly |len| bytes, so that ASan sees any read past a slice's end. */
static char *dup_exact(const char *p, size_t len)
{
    char *q = malloc(len ? len : 1);

    CHECK(q != NULL);
    if (len)
        memcpy(q, p, len);
    return q;
}

static void check_header_var(const char *key, size_t len)
{
    char out[5 + 64];
    char *k = dup_exact(key, len);
    size_t got = uwsgi_header_var(out, sizeof out, k, len);

    /* Either dropped or a CGI name of the right length made of [A-Z0-9_]. */
    CHECK(got == 0 || got == len || got == len + 5);
    for (size_t i = 0; i < got; i++)
        CHECK((out[i] >= 'A' && out[i] <= 'Z') || (out[i] >= '0' && out[i] <= '9') ||
              out[i] == '_');
    if (got == len + 5)
        CHECK(memcmp(out, "HTTP_", 5) == 0);
    free(k);
}

static void check_percent_decode(const char *val, size_t len)
{
    char *v = dup_exact(val, len);
    char *out = malloc(len ? len : 1);
    int nul = -1, nul2 = -1;
    size_t got, got2;

    CHECK(out != NULL);
    got = uwsgi_percent_decode(out, v, len, &nul);
    CHECK(got <= len);
    CHECK(nul == 0 || nul == 1);
    if (nul == 0)
        CHECK(got == 0 || memchr(out, 0, got) == NULL || memchr(v, 0, len) != NULL);
    else
        CHECK(memchr(out, 0, got) != NULL);
    /* In place agrees with out of place. */
    got2 = uwsgi_percent_decode(v, v, len, &nul2);
    CHECK(got2 == got && nul2 == nul && (got == 0 || memcmp(v, out, got) == 0));
    free(out);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    while (off < size) {
        const uint8_t *in = data + off;
        size_t len = size - off, n = 0, used = 0, vsize = 0, written = 0, nf = 0, usedf = 0;
        uint8_t m1 = 0, m2 = 0, f1, f2;
        int rc = uwsgi_decode(in, len, &m1, &m2, vars, UWSGI_MAX_VARS, &n, &used);

        CHECK(rc == UWSGI_OK || rc == UWSGI_INCOMPLETE || rc == UWSGI_E_PROTO);
        if (rc != UWSGI_OK)
            break;
        CHECK(used >= UWSGI_HDR_LEN && used <= len && n <= UWSGI_MAX_VARS);
        for (size_t i = 0; i < n; i++) {
            const uint8_t *k = (const uint8_t *)vars[i].key, *v = (const uint8_t *)vars[i].val;

            CHECK(k >= in + UWSGI_HDR_LEN && k + vars[i].key_len <= in + used);
            CHECK(v >= in + UWSGI_HDR_LEN && v + vars[i].val_len <= in + used);
        }

        /* Re-encoding what decoded gives back the packet byte for byte. */
        CHECK(uwsgi_vars_size(vars, n, &vsize) == UWSGI_OK && vsize + UWSGI_HDR_LEN == used);
        CHECK(uwsgi_encode(packet, sizeof packet, m1, m2, vars, n, &written) == UWSGI_OK);
        CHECK(written == used && memcmp(packet, in, used) == 0);
        /* One byte short of room is refused. */
        CHECK(uwsgi_encode(packet, used - 1, m1, m2, vars, n, &written) == UWSGI_E_TOO_BIG);

        /* A small var array agrees with the big one. */
        rc = uwsgi_decode(in, len, &f1, &f2, few, sizeof few / sizeof few[0], &nf, &usedf);
        if (n <= sizeof few / sizeof few[0])
            CHECK(rc == UWSGI_OK && nf == n && usedf == used);
        else
            CHECK(rc == UWSGI_E_TOO_BIG);

        for (size_t i = 0; i < n && i < 64; i++) {
            check_header_var(vars[i].key, vars[i].key_len < 64 ? vars[i].key_len : 64);
            check_percent_decode(vars[i].val, vars[i].val_len);
        }

        /* Every shorter prefix is incomplete. Checked for small packets only, to stay fast. */
        if (used <= 64)
            for (size_t cut = 0; cut < used; cut++)
                CHECK(uwsgi_decode(in, cut, &f1, &f2, few, 1, &nf, &usedf) == UWSGI_INCOMPLETE);
        off += used; /* used >= 4: the loop always moves */
    }
    return 0;
}
