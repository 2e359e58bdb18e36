/* SPDX-License-Identifier: MIT */
/* Aborting allocators, the monotonic clock and slice helpers. */
#include "gateway/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "gatehouse: out of memory allocating %zu bytes\n", n);
    abort();
}

void *gw_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *gw_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        oom(nmemb * size);
    return p;
}

void *gw_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *gw_xstrndup(const char *p, size_t n)
{
    char *s = gw_xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

uint64_t gw_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

size_t gw_fmt_u64(char *out, uint64_t v, unsigned base)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[24];
    size_t n = 0;

    /* Base 10 two digits at a time: a division by a constant is a multiplication, and the
     * remainder follows from the quotient. */
    if (base == 10) {
        while (v >= 100) {
            uint64_t q = v / 100;
            unsigned r = (unsigned)(v - q * 100);
            tmp[n++] = (char)('0' + r % 10);
            tmp[n++] = (char)('0' + r / 10);
            v = q;
        }
        do {
            tmp[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
    } else {
        do {
            tmp[n++] = digits[v % base];
            v /= base;
        } while (v != 0);
    }
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}
