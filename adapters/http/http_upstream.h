/* SPDX-License-Identifier: MIT */
/* The http upstream driver: per-worker keep-alive pools of HTTP/1.1 connections to an
 * upstream's servers, streaming request and response bodies with backpressure. */
#ifndef GW_HTTP_UPSTREAM_H
#define GW_HTTP_UPSTREAM_H

#include <event2/dns.h>
#include <event2/event.h>

#include "config/config.h"
#include "gateway/exchange.h"

extern const struct gw_upstream_ops gw_http_upstream_ops;

/* One upstream's state in one worker thread: its servers (addresses, passive health,
 * in-flight counts, idle keep-alive connections), the balancing cursor and the re-resolution
 * timer. Owned by the worker's snapshot runtime; used only from |base|'s thread. */
struct gw_http_pool;

/* Creates the pool for |u| (borrowed from a snapshot that outlives the pool). Numeric servers
 * are ready at once; host names are resolved with |dns| now and every u->resolve_ms. */
struct gw_http_pool *gw_http_pool_new(struct event_base *base, struct evdns_base *dns,
                                      const struct gw_upstream_conf *u);

/* Closes idle connections, cancels timers and lookups, and frees |p|. No exchange may still
 * use it. NULL is a no-op. */
void gw_http_pool_free(struct gw_http_pool *p);

#endif
