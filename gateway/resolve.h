/* SPDX-License-Identifier: MIT */
/* The addresses of one upstream's servers in one worker thread, for the drivers that keep a
 * server per address (uwsgi, asgi): numeric and unix: servers as written, host names through
 * the worker's evdns_base (/etc/hosts, then resolver.nameservers or /etc/resolv.conf) when the
 * pool is made and again every `resolve` interval. A failed lookup keeps the previous
 * addresses, so a DNS hiccup never takes a working server away. */
#ifndef GW_RESOLVE_H
#define GW_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "config/config.h"

/* Addresses kept per server name (the first of an answer). */
#define GW_RESOLVE_MAX_ADDRS 16

/* The reason of an exchange failed because no server name resolved (static). */
#define GW_R_UNRESOLVED "upstream host name does not resolve"

struct gw_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

struct gw_resolve;

/* Called when a lookup of server |i| ended: |changed| is 1 when its address set changed (the
 * first answer included), 0 when the lookup failed or brought the same set. It may call
 * gw_resolve_free() (the resolver then goes once its own callback unwinds). */
typedef void gw_resolve_cb(void *arg, size_t i, int changed);

/* Creates the resolver of |u|'s servers (|u| borrowed from a snapshot that outlives it);
 * numeric and unix: servers get their address at once (an unusable one is logged and gets
 * none). |dns| may be NULL: names then never resolve. Nothing is looked up before
 * gw_resolve_start(). */
struct gw_resolve *gw_resolve_new(struct event_base *base, struct evdns_base *dns,
                                  const struct gw_upstream_conf *u, gw_resolve_cb *cb, void *arg);

/* Starts the first lookups and the `resolve` timer. |cb| may run within the call (an answer
 * from /etc/hosts, or an immediate error). Returns 0, or -1 when out of memory. */
int gw_resolve_start(struct gw_resolve *r);

/* Cancels the lookups and frees |r|; from inside |cb|, once the callback returns. NULL is a
 * no-op. */
void gw_resolve_free(struct gw_resolve *r);

/* The addresses of server |i| in |*n|: its one address when numeric or unix:, the last
 * answer for a name (none before the first). Valid until the next callback. */
const struct gw_addr *gw_resolve_addrs(const struct gw_resolve *r, size_t i, size_t *n);

/* 1 when server |i| is a host name (resolved), else 0. */
int gw_resolve_named(const struct gw_resolve *r, size_t i);

/* 1 when a host name that has no address yet has a lookup out: an exchange that finds no
 * server may wait for its answer. */
int gw_resolve_waiting(const struct gw_resolve *r);

/* Why server |i| has no address (the last lookup's error, "not resolved yet", ...), or NULL
 * when it has some. The string is static. */
const char *gw_resolve_error(const struct gw_resolve *r, size_t i);

/* Logs under |log_ctx| each host name of |u|'s servers that has no address, with the reason
 * and |suffix|. Returns how many there are. */
size_t gw_resolve_log_unresolved(const struct gw_resolve *r, const struct gw_upstream_conf *u,
                                 const char *log_ctx, const char *suffix);

/* Writes |a| as "IP:PORT", "[IPv6]:PORT" or "unix:PATH" into |buf| (|cap| bytes); returns
 * |buf|. */
const char *gw_addr_format(const struct gw_addr *a, char *buf, size_t cap);

#endif
