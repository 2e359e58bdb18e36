/* SPDX-License-Identifier: MIT */
/* Route matching precedence, upstream path rewriting and the path safety check. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

#include "gateway/router.h"
#include "gateway/util.h"

/* Parameters carry only an index into these static tables: criterion copies parameters into
 * the test process, and an index survives that whatever the address layout. */

struct route_def {
    const char *host; /* as config.c stores it: lower case, no port, NULL for any host */
    const char *path;
    int strip;
};

/* Table 0: the precedence rules. The comment is each route's index. */
static const struct route_def routes_main[] = {
    {NULL, "/", 0},               /* 0 */
    {NULL, "/api", 0},            /* 1 */
    {"example.com", "/", 0},      /* 2 */
    {"example.com", "/api", 0},   /* 3 */
    {"*.example.com", "/", 0},    /* 4 */
    {"*.b.example.com", "/", 0},  /* 5 */
    {NULL, "/api/v1", 0},         /* 6 */
    {"[::1]", "/", 0},            /* 7 */
    {NULL, "/api", 0},            /* 8: same as 1, later in the file */
    {"*.example.com", "/api", 0}, /* 9 */
    {"*.example.com", "/api", 0}, /* 10: same as 9 */
    {"10.0.0.1", "/", 0},         /* 11 */
};

/* Table 1: no root route, a wildcard alone, an IPv6 literal configured without brackets. */
static const struct route_def routes_sparse[] = {
    {NULL, "/api", 0},         /* 0 */
    {"*.example.com", "/", 0}, /* 1 */
    {"::1", "/v6", 0},         /* 2 */
    {"exact.org", "/", 0},     /* 3 */
};

struct table {
    const struct route_def *defs;
    size_t n;
};

static const struct table tables[] = {
    {routes_main, GW_ARRAY_LEN(routes_main)},
    {routes_sparse, GW_ARRAY_LEN(routes_sparse)},
};

#define MAX_ROUTES 16

struct fixture {
    struct gw_upstream_conf up;
    struct gw_route_conf routes[MAX_ROUTES];
    struct gw_config cfg;
};

static void build(struct fixture *f, const struct route_def *defs, size_t n)
{
    cr_assert_leq(n, MAX_ROUTES);
    memset(f, 0, sizeof *f);
    f->up.name = (char *)(uintptr_t) "up";
    for (size_t i = 0; i < n; i++) {
        struct gw_route_conf *r = &f->routes[i];
        r->host = (char *)(uintptr_t)defs[i].host;
        r->host_wildcard = defs[i].host != NULL && strncmp(defs[i].host, "*.", 2) == 0;
        r->path = (char *)(uintptr_t)defs[i].path;
        r->path_len = strlen(defs[i].path);
        r->strip_prefix = defs[i].strip;
        r->upstream = &f->up;
        r->index = i;
    }
    f->cfg.routes = f->routes;
    f->cfg.nroutes = n;
}

struct match_case {
    int table;
    const char *host; /* NULL: no host at all */
    const char *path;
    int want; /* route index, -1 for none */
};

static const struct match_case match_cases[] = {
    /* No host: only any-host routes. */
    {0, NULL, "/", 0},
    {0, "", "/x", 0},
    {0, NULL, "/api/x", 1},
    /* Prefixes on segment boundaries, the longest wins, the earliest breaks ties. */
    {0, "other.org", "/api", 1},
    {0, "other.org", "/api/", 1},
    {0, "other.org", "/api?x=1", 1},
    {0, "other.org", "/apix", 0},
    {0, "other.org", "/api/v1", 6},
    {0, "other.org", "/api/v1/users", 6},
    {0, "other.org", "/api/v1?q", 6},
    {0, "other.org", "/api/v10", 1},
    {0, "other.org", "/", 0},
    {0, "other.org", "/?q=/api", 0},
    /* An exact host beats a longer prefix on any host. */
    {0, "example.com", "/api/v1", 3},
    {0, "example.com", "/x", 2},
    {0, "example.com", "/apix", 2},
    /* Port, case, trailing dot. */
    {0, "example.com:8080", "/api", 3},
    {0, "EXAMPLE.Com", "/api", 3},
    {0, "Example.COM:443", "/", 2},
    {0, "example.com.", "/api", 3},
    {0, "example.com.:8443", "/x", 2},
    {0, "example.com:", "/", 2},
    /* Wildcards: beat any host, not the bare domain, the longest suffix wins. */
    {0, "a.example.com", "/", 4},
    {0, "A.Example.COM:80", "/", 4},
    {0, "a.example.com", "/api/v1", 9},
    {0, "a.example.com", "/apix", 4},
    {0, "a.b.example.com", "/", 5},
    {0, "x.y.b.example.com", "/", 5},
    {0, "x.y.b.example.com", "/api", 5}, /* host before prefix */
    {0, "b.example.com", "/", 4},
    {0, "b.example.com.", "/", 4},
    {0, "notexample.com", "/", 0},
    {0, "example.com.evil.org", "/", 0},
    /* IP literals. */
    {0, "[::1]:8080", "/", 7},
    {0, "[::1]", "/x", 7},
    {0, "[::2]:8080", "/", 0},
    {0, "[::1", "/", 0},
    {0, "10.0.0.1:80", "/", 11},
    {0, "10.0.0.10", "/", 0},
    /* Nothing matches. */
    {1, "other.org", "/", -1},
    {1, "other.org", "/apix", -1},
    {1, "other.org", "/api", 0},
    {1, "example.com", "/", -1},
    {1, "example.com:80", "/", -1},
    {1, "a.example.com", "/", 1},
    {1, "[::1]:443", "/v6/x", 2},
    {1, "[::1]:443", "/v", -1},
    {1, "exact.org", "/", 3},
    {1, "exact.or", "/", -1},
    {1, "exact.orgx", "/", -1},
    {1, "xexact.org", "/", -1},
    {1, NULL, "/x", -1},
};

static size_t *indices(size_t n)
{
    size_t *idx = cr_malloc(n * sizeof *idx);

    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    return idx;
}

static void free_indices(struct criterion_test_params *crp)
{
    cr_free(crp->params);
}

ParameterizedTestParameters(router, match)
{
    size_t n = GW_ARRAY_LEN(match_cases);
    return cr_make_param_array(size_t, indices(n), n, free_indices);
}

ParameterizedTest(size_t *i, router, match)
{
    const struct match_case *tc = &match_cases[*i];
    const struct table *t = &tables[tc->table];
    struct fixture f;

    build(&f, t->defs, t->n);
    const struct gw_route_conf *r = gw_route_match(
        &f.cfg, tc->host, tc->host ? strlen(tc->host) : 0, tc->path, strlen(tc->path));
    int got = r == NULL ? -1 : (int)r->index;
    cr_expect_eq(got, tc->want, "case %zu: host=%s path=%s: got %d, want %d", *i,
                 tc->host ? tc->host : "(null)", tc->path, got, tc->want);
}

Test(router, no_routes)
{
    struct gw_config cfg;

    memset(&cfg, 0, sizeof cfg);
    cr_expect_null(gw_route_match(&cfg, "a", 1, "/", 1));
}

Test(router, host_is_not_read_past_its_length)
{
    static const struct route_def defs[] = {{"example.com", "/", 0}};
    struct fixture f;

    build(&f, defs, 1);
    /* "example.com" is the first 11 bytes of a longer buffer. */
    cr_expect_not_null(gw_route_match(&f.cfg, "example.comXX", 11, "/", 1));
    cr_expect_null(gw_route_match(&f.cfg, "example.comXX", 10, "/", 1));
    /* Same for the path: "/api" is a prefix of the buffer but the path is "/ap". */
    static const struct route_def api[] = {{NULL, "/api", 0}};
    build(&f, api, 1);
    cr_expect_null(gw_route_match(&f.cfg, NULL, 0, "/api", 3));
}

Test(router, tie_break_uses_file_index)
{
    /* Two equal routes stored out of file order: the lower index wins. */
    static const struct route_def defs[] = {{NULL, "/a", 0}, {NULL, "/a", 0}};
    struct fixture f;

    build(&f, defs, 2);
    f.routes[0].index = 7;
    f.routes[1].index = 3;
    const struct gw_route_conf *r = gw_route_match(&f.cfg, NULL, 0, "/a", 2);
    cr_assert_not_null(r);
    cr_expect_eq(r->index, 3);
}

struct upath_case {
    const char *prefix;
    int strip;
    const char *path;
    const char *want;
};

static const struct upath_case upath_cases[] = {
    {"/api", 0, "/api/x?q", "/api/x?q"},
    {"/api", 0, "/api", "/api"},
    {"/api", 1, "/api/x?q", "/x?q"},
    {"/api", 1, "/api/x/y", "/x/y"},
    {"/api", 1, "/api", "/"},
    {"/api", 1, "/api/", "/"},
    {"/api", 1, "/api?q", "/?q"},
    {"/api", 1, "/api?q=/a/b", "/?q=/a/b"},
    {"/api/v1", 1, "/api/v1/users?id=1", "/users?id=1"},
    {"/", 0, "/x?q", "/x?q"},
    {"/", 1, "/x?q", "/x?q"},
    {"/", 1, "/", "/"},
    {"/", 1, "/?q", "/?q"},
};

ParameterizedTestParameters(router, upstream_path)
{
    size_t n = GW_ARRAY_LEN(upath_cases);
    return cr_make_param_array(size_t, indices(n), n, free_indices);
}

ParameterizedTest(size_t *i, router, upstream_path)
{
    const struct upath_case *tc = &upath_cases[*i];
    struct route_def def = {NULL, tc->prefix, tc->strip};
    struct fixture f;
    char out[64];
    size_t want = strlen(tc->want), plen = strlen(tc->path);

    build(&f, &def, 1);
    cr_assert_eq(gw_route_match(&f.cfg, NULL, 0, tc->path, plen), &f.routes[0]);
    size_t n = gw_route_upstream_path(&f.routes[0], tc->path, plen, out, sizeof out);
    cr_assert_eq(n, want, "case %zu: got %zu bytes, want %zu", *i, n, want);
    cr_expect_arr_eq(out, tc->want, want, "case %zu: got %.*s, want %s", *i, (int)n, out, tc->want);
    /* Exactly |want| bytes fit; one fewer is refused without writing past |cap|. */
    memset(out, 'Z', sizeof out);
    cr_expect_eq(gw_route_upstream_path(&f.routes[0], tc->path, plen, out, want), want);
    cr_expect_eq(out[want], 'Z');
    cr_expect_eq(gw_route_upstream_path(&f.routes[0], tc->path, plen, out, want - 1), 0, "case %zu",
                 *i);
}

Test(router, upstream_path_zero_cap)
{
    static const struct route_def defs[] = {{NULL, "/api", 1}};
    struct fixture f;
    char out[1];

    build(&f, defs, 1);
    cr_expect_eq(gw_route_upstream_path(&f.routes[0], "/api", 4, out, 0), 0);
    cr_expect_eq(gw_route_upstream_path(&f.routes[0], "/api", 4, out, 1), 1);
    cr_expect_eq(out[0], '/');
}

struct safe_case {
    const char *path;
    int want;
};

static const struct safe_case safe_cases[] = {
    {"/", 1},
    {"", 0},
    {"a", 0},
    {"?x", 0},
    {"/a/b", 1},
    {"//a//b/", 1},
    {"/.", 0},
    {"/..", 0},
    {"/./", 0},
    {"/../", 0},
    {"/a/./b", 0},
    {"/a/../b", 0},
    {"/a/..", 0},
    {"/a/.", 0},
    {"/..?x", 0},
    {"/.?x", 0},
    {"/a/%2e/b", 0},
    {"/a/%2E/b", 0},
    {"/%2e%2e", 0},
    {"/%2E%2e/x", 0},
    {"/.%2e/x", 0},
    {"/%2e./x", 0},
    {"/a/%2e%2E", 0},
    {"/a/..%2fetc", 0},
    {"/a/..%2Fetc", 0},
    {"/a%2f..%2fb", 0},
    {"/%a/..", 0},
    {"/...", 1},
    {"/....", 1},
    {"/.a", 1},
    {"/a.", 1},
    {"/a..b", 1},
    {"/..a", 1},
    {"/.%2e.", 1},
    {"/%2e%2e%2e", 1},
    {"/%2e1", 1},
    {"/%2ex", 1},
    {"/a.html", 1},
    {"/a/b/.well-known/x", 1},
    {"/?x=/../", 1},
    {"/a?..", 1},
    {"/a?/./", 1},
    {"/a%00b", 0},
    {"/%00", 0},
    {"/a?x=%00", 1},
    {"/%0", 1},
    {"/%2", 1},
    {"/%", 1},
    {"/%2f", 1},
    {"/%252e%252e", 1},
    {"/a%2fb", 1},
    {"/%41", 1},
};

ParameterizedTestParameters(router, path_is_safe)
{
    size_t n = GW_ARRAY_LEN(safe_cases);
    return cr_make_param_array(size_t, indices(n), n, free_indices);
}

ParameterizedTest(size_t *i, router, path_is_safe)
{
    const struct safe_case *tc = &safe_cases[*i];

    cr_expect_eq(gw_path_is_safe(tc->path, strlen(tc->path)), tc->want, "case %zu: %s", *i,
                 tc->path);
}

Test(router, path_is_safe_raw_nul_and_length)
{
    static const char nul[] = "/a\0b";
    cr_expect_eq(gw_path_is_safe(nul, sizeof nul - 1), 0);
    /* Only |len| bytes count: "/.." cut to "/." is still unsafe, "/a.." cut to "/a" is safe,
     * "/.x" cut to "/." is unsafe. */
    cr_expect_eq(gw_path_is_safe("/..", 2), 0);
    cr_expect_eq(gw_path_is_safe("/a..", 2), 1);
    cr_expect_eq(gw_path_is_safe("/.x", 2), 0);
    /* A "%2e" cut short is not a dot. */
    cr_expect_eq(gw_path_is_safe("/%2e", 3), 1);
    cr_expect_eq(gw_path_is_safe("/%00", 3), 1);
}
