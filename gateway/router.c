/* SPDX-License-Identifier: MIT */
/* Route matching: a linear scan over the snapshot's routes that rejects early, no allocation. */
#include "gateway/router.h"

#include <string.h>

/* Host ranks: an exact host beats every wildcard, whose rank is its suffix length, which beats
 * a route for any host. */
#define RANK_ANY 0
#define RANK_EXACT ((size_t)-1)

/* The request's host reduced to what route hosts are compared with: no port, no brackets,
 * no trailing dot. Case is left alone; comparisons fold it. */
struct req_host {
    const char *p;
    size_t len;
    int bracketed; /* was an "[v6]" literal */
};

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

static struct req_host host_normalize(const char *host, size_t len)
{
    struct req_host h = {host, len, 0};

    if (host == NULL || len == 0)
        return (struct req_host){NULL, 0, 0};
    if (host[0] == '[') {
        const char *end = memchr(host, ']', len);
        if (end == NULL)
            return (struct req_host){NULL, 0, 0}; /* malformed literal: only any-host routes */
        h.p = host + 1;
        h.len = (size_t)(end - h.p);
        h.bracketed = 1;
        return h;
    }
    /* A second ':' means a bare IPv6 address (no port can be told apart): keep it whole. */
    const char *colon = memchr(host, ':', len);
    if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - host)) == NULL)
        h.len = (size_t)(colon - host);
    /* "example.com." is the same name written fully qualified (RFC 1034 §3.1). */
    if (h.len > 0 && h.p[h.len - 1] == '.')
        h.len--;
    return h;
}

/* Compares the request host with the lower-case, NUL-terminated |rh| for equality without
 * strlen(): the first differing byte rejects. */
static int host_eq(const struct req_host *h, const char *rh)
{
    size_t i;

    for (i = 0; i < h->len; i++)
        if (rh[i] == '\0' || lower((unsigned char)h->p[i]) != (unsigned char)rh[i])
            return 0;
    return rh[i] == '\0';
}

/* IPv6 literals may be configured with or without their brackets. */
static int host_exact(const struct req_host *h, const char *rh)
{
    if (h->bracketed && rh[0] == '[') {
        size_t n = strlen(rh);
        if (n < 2 || rh[n - 1] != ']' || n - 2 != h->len)
            return 0;
        for (size_t i = 0; i < h->len; i++)
            if (lower((unsigned char)h->p[i]) != (unsigned char)rh[i + 1])
                return 0;
        return 1;
    }
    return host_eq(h, rh);
}

/* |suffix| is ".example.com" (the wildcard without its '*'); at least one byte must precede
 * it, so "*.example.com" never matches "example.com" or ".example.com". */
static int host_wild(const struct req_host *h, const char *suffix, size_t n)
{
    if (h->bracketed || h->len <= n)
        return 0;
    const char *p = h->p + (h->len - n);
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)p[i]) != (unsigned char)suffix[i])
            return 0;
    return 1;
}

/* Prefix match on segment boundaries: "/api" takes "/api", "/api/x", "/api?q", not "/apix".
 * The root "/" takes every path. */
static int path_match(const struct gw_route_conf *r, const char *path, size_t path_len)
{
    size_t n = r->path_len;

    /* Both start with '/': the byte after it rejects most routes without a memcmp() call. */
    if (path_len < n || (n > 1 && path[1] != r->path[1]) || memcmp(path, r->path, n) != 0)
        return 0;
    return n == 1 || path_len == n || path[n] == '/' || path[n] == '?';
}

const struct gw_route_conf *gw_route_match(const struct gw_config *c, const char *host,
                                           size_t host_len, const char *path, size_t path_len)
{
    const struct gw_route_conf *best = NULL;
    size_t best_rank = 0;
    struct req_host h = host_normalize(host, host_len);

    if (path == NULL || path_len == 0 || path[0] != '/')
        return NULL;
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct gw_route_conf *r = &c->routes[i];
        size_t rank, wild_len = 0;

        if (r->host == NULL)
            rank = RANK_ANY;
        else if (h.len == 0)
            continue;
        else if (r->host_wildcard)
            rank = wild_len = strlen(r->host + 1);
        else
            rank = RANK_EXACT;
        /* Skip what could not beat the best so far before comparing any bytes. */
        if (best != NULL) {
            if (rank < best_rank)
                continue;
            if (rank == best_rank && (r->path_len < best->path_len ||
                                      (r->path_len == best->path_len && r->index > best->index)))
                continue;
        }
        if (!path_match(r, path, path_len))
            continue;
        if (rank == RANK_EXACT && !host_exact(&h, r->host))
            continue;
        if (wild_len > 0 && !host_wild(&h, r->host + 1, wild_len))
            continue;
        best = r;
        best_rank = rank;
    }
    return best;
}

size_t gw_route_upstream_path(const struct gw_route_conf *r, const char *path, size_t path_len,
                              char *out, size_t cap)
{
    const char *rest = path;
    size_t rest_len = path_len;

    if (r->strip_prefix && path_len >= r->path_len) {
        rest = path + r->path_len;
        rest_len = path_len - r->path_len;
    }
    /* What is left after the prefix is "", "/...", "?..." or, for the root route, "x...":
     * every form but the first needs its '/' back. */
    size_t slash = (rest_len == 0 || rest[0] != '/');
    if (cap < slash + rest_len)
        return 0;
    out[0] = '/';
    if (rest_len > 0)
        memcpy(out + slash, rest, rest_len);
    return slash + rest_len;
}

/* Returns 1 when the three bytes at |p| are "%2e" or "%2E". */
static int is_pct_dot(const char *p)
{
    return p[0] == '%' && p[1] == '2' && (p[2] | 0x20) == 'e';
}

int gw_path_is_safe(const char *path, size_t path_len)
{
    size_t dots = 0;   /* dots seen in the current segment */
    int only_dots = 1; /* the current segment holds nothing else */

    if (path_len == 0 || path[0] != '/')
        return 0;
    for (size_t i = 1;;) {
        int end = (i == path_len || path[i] == '?');
        /* "%2f" ends a segment for this check: upstreams that decode it (WSGI's PATH_INFO is
         * decoded) would otherwise see "/a/../b" in "/a/..%2fb". */
        int pct_slash = !end && path_len - i >= 3 && path[i] == '%' && path[i + 1] == '2' &&
                        (path[i + 2] | 0x20) == 'f';

        if (end || path[i] == '/' || pct_slash) {
            if (only_dots && (dots == 1 || dots == 2))
                return 0;
            if (end)
                return 1;
            dots = 0;
            only_dots = 1;
            i += pct_slash ? 3 : 1;
            continue;
        }
        if (path[i] == '.') {
            dots++;
            i++;
        } else if (path_len - i >= 3 && is_pct_dot(path + i)) {
            dots++;
            i += 3;
        } else if (path_len - i >= 3 && path[i] == '%' && path[i + 1] == '0' &&
                   path[i + 2] == '0') {
            return 0; /* a NUL would cut the path short in C upstreams */
        } else {
            if (path[i] == '\0')
                return 0;
            only_dots = 0;
            i++;
        }
    }
}
