/* SPDX-License-Identifier: MIT */
/* Upstream server names resolved per worker, again every `resolve` interval (uwsgi, asgi). */
#include "gateway/resolve.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <event2/util.h>

#include "gateway/log.h"
#include "gateway/stream.h"
#include "gateway/util.h"

static const char E_NOT_YET[] = "not resolved yet";
static const char E_NO_RESOLVER[] = "no resolver";
static const char E_NO_ADDRESS[] = "no usable address";
static const char E_UNUSABLE[] = "not a usable address";

struct rs_lookup;

/* One server of the upstream. |err| says why it has no address (NULL when it has some). */
struct rs_server {
    const struct gw_server_conf *conf;  /* borrowed from the snapshot */
    struct gw_addr *addrs;              /* owned */
    size_t naddrs;
    struct rs_lookup *lookup;           /* pending lookup, NULL when none */
    const char *err;                    /* static */
    int named;
};

/* A pending evdns_getaddrinfo() for one server. Owned by the lookup itself: created when it
 * starts and freed by its callback, which libevent always calls (with EVUTIL_EAI_CANCEL after
 * evdns_getaddrinfo_cancel(), possibly on a later loop turn). The resolver sets |r| to NULL
 * when it goes away first, so the callback then touches nothing but the lookup. */
struct rs_lookup {
    struct gw_resolve *r;
    size_t server;
    struct evdns_getaddrinfo_request *req;
};

/* |depth| counts its callbacks on the stack; gw_resolve_free() meanwhile only sets
 * |closing|. */
struct gw_resolve {
    struct event_base *base;
    struct evdns_base *dns;
    const struct gw_upstream_conf *u;
    gw_resolve_cb *cb;
    void *arg;
    struct rs_server *servers;
    size_t nservers;
    struct event *timer;                /* NULL when no server is a name */
    unsigned depth;
    int closing;
};

static void destroy(struct gw_resolve *r)
{
    for (size_t i = 0; i < r->nservers; i++) {
        struct rs_server *s = &r->servers[i];

        if (s->lookup != NULL) {
            struct rs_lookup *lk = s->lookup;
            /* Orphan first: the callback may run inside the cancel or on a later turn. */
            s->lookup = NULL;
            lk->r = NULL;
            if (lk->req != NULL)
                evdns_getaddrinfo_cancel(lk->req);
        }
        free(s->addrs);
    }
    if (r->timer != NULL)
        event_free(r->timer);
    free(r->servers);
    free(r);
}

static void enter(struct gw_resolve *r)
{
    r->depth++;
}

static void leave(struct gw_resolve *r)
{
    if (--r->depth == 0 && r->closing)
        destroy(r);
}

const char *gw_addr_format(const struct gw_addr *a, char *buf, size_t cap)
{
    if (a->ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)(const void *)&a->ss;
        snprintf(buf, cap, "unix:%s", un->sun_path);
        return buf;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)&a->ss;
        char ip[INET6_ADDRSTRLEN];

        if (inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip) == NULL)
            snprintf(ip, sizeof ip, "?");
        snprintf(buf, cap, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)&a->ss;
        char ip[INET_ADDRSTRLEN];

        if (inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip) == NULL)
            snprintf(ip, sizeof ip, "?");
        snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    }
    return buf;
}

/* "A, B, C and 2 more" for a log line. */
static void format_set(const struct gw_addr *a, size_t n, char *buf, size_t cap)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && i < 3; i++) {
        char one[64];
        int k = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "",
                         gw_addr_format(&a[i], one, sizeof one));
        if (k < 0 || (size_t)k >= cap - used)
            return;
        used += (size_t)k;
    }
    if (n > 3)
        snprintf(buf + used, cap - used, " and %zu more", n - 3);
}

static void lookup_on_result(int result, struct evutil_addrinfo *res, void *arg)
{
    struct rs_lookup *lk = arg;
    struct gw_resolve *r = lk->r;
    struct rs_server *s;
    struct gw_addr addrs[GW_RESOLVE_MAX_ADDRS];
    size_t n = 0, i;
    int changed = 0;

    if (r == NULL) {
        /* The resolver went first (EVUTIL_EAI_CANCEL): only the lookup is left to free. */
        if (res != NULL)
            evutil_freeaddrinfo(res);
        free(lk);
        return;
    }
    i = lk->server;
    s = &r->servers[i];
    if (s->lookup == lk)
        s->lookup = NULL;
    free(lk);
    if (result == EVUTIL_EAI_CANCEL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    for (const struct evutil_addrinfo *ai = res; ai != NULL && n < GW_RESOLVE_MAX_ADDRS;
         ai = ai->ai_next) {
        int dup = 0;

        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof addrs[n].ss)
            continue;
        /* One server per address: /etc/hosts may list one twice. */
        for (size_t k = 0; k < n && !dup; k++)
            dup = addrs[k].len == ai->ai_addrlen &&
                  memcmp(&addrs[k].ss, ai->ai_addr, ai->ai_addrlen) == 0;
        if (dup)
            continue;
        memset(&addrs[n].ss, 0, sizeof addrs[n].ss);
        memcpy(&addrs[n].ss, ai->ai_addr, ai->ai_addrlen);
        addrs[n].len = (socklen_t)ai->ai_addrlen;
        n++;
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (result != 0 || n == 0) {
        const char *why = result != 0 ? evutil_gai_strerror(result) : E_NO_ADDRESS;

        gw_log_warn("upstream %s server %s: cannot resolve %s: %s%s", r->u->name, s->conf->address,
                    s->conf->host, why, s->naddrs ? " (keeping the previous addresses)" : "");
        if (s->naddrs == 0)
            s->err = why;
    } else {
        char text[256];

        changed = n != s->naddrs;
        /* Compared as sets: round-robin DNS rotates the order of the same addresses. */
        for (size_t a = 0; a < n && !changed; a++) {
            int found = 0;
            for (size_t k = 0; k < s->naddrs && !found; k++)
                found = addrs[a].len == s->addrs[k].len &&
                        memcmp(&addrs[a].ss, &s->addrs[k].ss, addrs[a].len) == 0;
            changed = !found;
        }
        if (changed) {
            format_set(addrs, n, text, sizeof text);
            if (s->naddrs > 0)
                gw_log_info("upstream %s server %s: %s now resolves to %s", r->u->name,
                            s->conf->address, s->conf->host, text);
            else
                gw_log_debug("upstream %s server %s: %s resolves to %s", r->u->name,
                             s->conf->address, s->conf->host, text);
            free(s->addrs);
            s->addrs = gw_xmalloc(n * sizeof *s->addrs);
            memcpy(s->addrs, addrs, n * sizeof *s->addrs);
            s->naddrs = n;
        }
        s->err = NULL;
    }
    /* Last: the owner may free the resolver (it goes when this callback unwinds). */
    if (!r->closing) {
        enter(r);
        r->cb(r->arg, i, changed);
        leave(r);
    }
}

static void server_resolve(struct gw_resolve *r, size_t i)
{
    struct rs_server *s = &r->servers[i];
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;
    struct rs_lookup *lk;
    char port[8];

    if (s->lookup != NULL)
        return; /* the previous lookup is still out */
    if (r->dns == NULL) {
        gw_log_error("upstream %s server %s: no resolver to look up %s", r->u->name,
                     s->conf->address, s->conf->host);
        s->err = E_NO_RESOLVER;
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof port, "%u", (unsigned)s->conf->port);
    lk = gw_xcalloc(1, sizeof *lk);
    lk->r = r;
    lk->server = i;
    s->lookup = lk;
    /* The callback may run before this returns (hosts file, cache, immediate error); it then
     * freed |lk| and cleared s->lookup, and NULL comes back. */
    req = evdns_getaddrinfo(r->dns, s->conf->host, port, &hints, lookup_on_result, lk);
    if (s->lookup == lk) {
        if (req != NULL) {
            lk->req = req;
        } else {
            s->lookup = NULL;
            free(lk);
        }
    }
}

static void resolve_all(struct gw_resolve *r)
{
    for (size_t i = 0; i < r->nservers && !r->closing; i++)
        if (r->servers[i].named)
            server_resolve(r, i);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_resolve *r = arg;

    (void)fd;
    (void)what;
    enter(r);
    resolve_all(r);
    leave(r);
}

struct gw_resolve *gw_resolve_new(struct event_base *base, struct evdns_base *dns,
                                  const struct gw_upstream_conf *u, gw_resolve_cb *cb, void *arg)
{
    struct gw_resolve *r = gw_xcalloc(1, sizeof *r);

    r->base = base;
    r->dns = dns;
    r->u = u;
    r->cb = cb;
    r->arg = arg;
    r->nservers = u->nservers;
    r->servers = gw_xcalloc(u->nservers, sizeof *r->servers);
    for (size_t i = 0; i < u->nservers; i++) {
        struct rs_server *s = &r->servers[i];
        const struct gw_server_conf *sc = &u->servers[i];
        struct gw_addr a;

        s->conf = sc;
        if (sc->unix_path == NULL && !sc->numeric) {
            s->named = 1;
            s->err = E_NOT_YET;
            continue;
        }
        memset(&a, 0, sizeof a);
        if (gw_server_sockaddr(sc, &a.ss, &a.len) != 0) {
            /* The loader checked it; anything else is a bug worth a line. */
            gw_log_error("upstream %s server %s: not a usable address", u->name, sc->address);
            s->err = E_UNUSABLE;
            continue;
        }
        s->addrs = gw_xmalloc(sizeof *s->addrs);
        s->addrs[0] = a;
        s->naddrs = 1;
    }
    return r;
}

int gw_resolve_start(struct gw_resolve *r)
{
    int named = 0;

    for (size_t i = 0; i < r->nservers; i++)
        named |= r->servers[i].named;
    if (!named)
        return 0;
    if (r->u->resolve_ms != 0) {
        struct timeval tv = {
            .tv_sec = (time_t)(r->u->resolve_ms / 1000),
            .tv_usec = (suseconds_t)(r->u->resolve_ms % 1000 * 1000),
        };
        r->timer = event_new(r->base, -1, EV_PERSIST, on_timer, r);
        if (r->timer == NULL || event_add(r->timer, &tv) != 0)
            return -1;
    }
    enter(r);
    resolve_all(r);
    leave(r);
    return 0;
}

void gw_resolve_free(struct gw_resolve *r)
{
    if (r == NULL)
        return;
    r->closing = 1;
    if (r->depth == 0)
        destroy(r);
}

const struct gw_addr *gw_resolve_addrs(const struct gw_resolve *r, size_t i, size_t *n)
{
    *n = r->servers[i].naddrs;
    return r->servers[i].addrs;
}

int gw_resolve_named(const struct gw_resolve *r, size_t i)
{
    return r->servers[i].named;
}

int gw_resolve_waiting(const struct gw_resolve *r)
{
    for (size_t i = 0; i < r->nservers; i++)
        if (r->servers[i].naddrs == 0 && r->servers[i].lookup != NULL)
            return 1;
    return 0;
}

const char *gw_resolve_error(const struct gw_resolve *r, size_t i)
{
    return r->servers[i].naddrs > 0 ? NULL : r->servers[i].err;
}

size_t gw_resolve_log_unresolved(const struct gw_resolve *r, const struct gw_upstream_conf *u,
                                 const char *log_ctx, const char *suffix)
{
    size_t n = 0;

    for (size_t i = 0; i < u->nservers; i++) {
        const char *err = gw_resolve_error(r, i);

        if (err == NULL || !gw_resolve_named(r, i))
            continue;
        gw_log_ctx(GW_LOG_ERROR, log_ctx, "upstream %s server %s: cannot resolve %s: %s%s",
                   u->name, u->servers[i].address, u->servers[i].host, err, suffix);
        n++;
    }
    return n;
}
