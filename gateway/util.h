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

/* ASCII case-insensitive comparison of |a| with |b|[0..|n|). */
int gw_slice_eq_ci(struct gw_slice a, const char *b, size_t n);

#define GW_SLICE_EQ_LIT(s, lit) gw_slice_eq_ci((s), (lit), sizeof(lit) - 1)

#endif
