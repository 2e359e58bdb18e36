/* SPDX-License-Identifier: MIT */
/* The asgi upstream driver: a few long-lived connections to each application server, each
 * carrying many exchanges as streams of the gatehouse ASGI message protocol
 * (adapters/asgi/PROTOCOL.md), with request and response bodies bounded by credits. */
#ifndef GW_ASGI_UPSTREAM_H
#define GW_ASGI_UPSTREAM_H

#include <event2/dns.h>
#include <event2/event.h>

#include "config/config.h"
#include "gateway/exchange.h"

extern const struct gw_upstream_ops gw_asgi_upstream_ops;

/* One asgi upstream's state in one worker thread: `connections` connections per server
 * address (a numeric or unix: server's, or each one its host name resolves to), opened at once
 * and reopened with backoff when lost, and the exchanges on them. Owned by the worker's
 * snapshot runtime; used only from |base|'s thread. */
struct gw_asgi_pool;

/* Creates the pool for |u| (borrowed from a snapshot that outlives the pool) and starts
 * connecting; host names are looked up through |dns| (the thread's; NULL: they never resolve)
 * now and every `resolve`. Returns NULL when no server is usable (logged). */
struct gw_asgi_pool *gw_asgi_pool_new(struct event_base *base, struct evdns_base *dns,
                                      const struct gw_upstream_conf *u,
                                      const struct gw_config *cfg);

/* Closes the pool's connections and frees it; when one of its callbacks is on the stack, the
 * outermost one frees it on the way out. No exchange may still use it. NULL is a no-op. */
void gw_asgi_pool_free(struct gw_asgi_pool *p);

#endif
