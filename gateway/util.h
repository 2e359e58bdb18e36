/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every room: slices, aborting allocators, clocks. */
#ifndef GW_UTIL_H
#define GW_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A borrowed (pointer, length) view. It dies with the buffer it points into. */
struct gw_slice {
    const char *p;
    size_t len;
};

#define GW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Error codes of the gateway's int-returning functions: 0 is success. */
enum gw_err {
    GW_OK = 0,
    GW_E_NOMEM = -1,
    GW_E_CONFIG = -2,
    GW_E_IO = -3,
    GW_E_PROTO = -4,
    GW_E_LIMIT = -5,
};

/* Allocators for small fixed-size objects: they abort the process on failure (h2o, Redis).
 * Size-dependent allocations must be bounded by a configured limit before calling them. */
void *gw_xmalloc(size_t n);
void *gw_xcalloc(size_t nmemb, size_t size);
void *gw_xrealloc(void *p, size_t n);
/* Returns a NUL-terminated copy of |p|[0..|n|). */
char *gw_xstrndup(const char *p, size_t n);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t gw_now_ms(void);

/* Writes |v| in |base| (10 or 16, lower-case digits) to |out| without a NUL; returns the digits
 * written (at most 20). For the hot path, where snprintf costs far more than the bytes. */
size_t gw_fmt_u64(char *out, uint64_t v, unsigned base);

/* Reads 8 bytes at |p|, unaligned. */
static inline uint64_t gw_load8(const char *p)
{
    uint64_t w;

    memcpy(&w, p, sizeof w);
    return w;
}

/* Lower-cases the ASCII letters among the 8 bytes of |w| and leaves every other byte alone (in
 * either byte order). Per byte: adding 0x3F (0x80 - 'A') to its low 7 bits sets bit 7 from 'A'
 * up, adding 0x25 (0x80 - 'Z' - 1) from past 'Z' up, neither carries into the next byte, and a
 * byte with its own bit 7 set is no letter; bit 7 shifted down by 2 is the case bit 0x20. */
static inline uint64_t gw_lower8(uint64_t w)
{
    uint64_t low7 = w & UINT64_C(0x7f7f7f7f7f7f7f7f);
    uint64_t from_a = low7 + UINT64_C(0x3f3f3f3f3f3f3f3f);
    uint64_t past_z = low7 + UINT64_C(0x2525252525252525);

    return w | ((from_a & ~past_z & ~w & UINT64_C(0x8080808080808080)) >> 2);
}

/* ASCII case-insensitive comparison of |a| with |b|[0..|n|). Inline: most calls compare with
 * a literal of another length and end at the first test; names of 8 bytes and more (the
 * common fields) go a word at a time, the last word overlapping the one before. */
static inline int gw_slice_eq_ci(struct gw_slice a, const char *b, size_t n)
{
    if (a.len != n)
        return 0;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8)
            if (gw_lower8(gw_load8(a.p + i)) != gw_lower8(gw_load8(b + i)))
                return 0;
        return gw_lower8(gw_load8(a.p + n - 8)) == gw_lower8(gw_load8(b + n - 8));
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

#define GW_SLICE_EQ_LIT(s, lit) gw_slice_eq_ci((s), (lit), sizeof(lit) - 1)

#endif
