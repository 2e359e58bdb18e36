/* SPDX-License-Identifier: MIT */
/* The uwsgi upstream driver: one connection per request to a pool of blocking workers, with the
 * request body read whole before dispatch and the response taken off the worker as fast as it
 * writes (memory, then an unlinked temporary file), so that no worker waits on a slow client. */
#ifndef GW_UWSGI_UPSTREAM_H
#define GW_UWSGI_UPSTREAM_H

#include <event2/dns.h>
#include <event2/event.h>

#include "config/config.h"
#include "gateway/exchange.h"
#include "gateway/gate.h"

extern const struct gw_upstream_ops gw_uwsgi_upstream_ops;

/* One uwsgi upstream's state in one worker thread: its servers (numeric, unix: or host names,
 * each address a name resolves to a server of its own) and its reference to the upstream's
 * gate (the concurrency limit and queue every worker shares). Owned by the worker's snapshot
 * runtime; used only from |base|'s thread. */
struct gw_uwsgi_pool;

/* Creates the pool for |u| (borrowed from a snapshot that outlives the pool); host names are
 * looked up through |dns| (the thread's; NULL: they never resolve) now and every `resolve`;
 * queued exchanges are handed their slots through |box|, the thread's. Returns NULL when no
 * server is usable (logged). */
struct gw_uwsgi_pool *gw_uwsgi_pool_new(struct event_base *base, struct evdns_base *dns,
                                        struct gw_gate_box *box, const struct gw_upstream_conf *u);

/* Frees |p|; when one of its callbacks is on the stack, the outermost one frees it on the way
 * out. No exchange may still use it. NULL is a no-op. */
void gw_uwsgi_pool_free(struct gw_uwsgi_pool *p);

#endif
