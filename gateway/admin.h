/* SPDX-License-Identifier: MIT */
/* The admin listener (admin.address), on the main thread's loop: GET /healthz (the process
 * runs its loop: 200), /readyz (200 while serving, 503 once SIGTERM came, so load balancers
 * stop sending during shutdown.delay), /metrics (Prometheus text). One short request per
 * connection, answered and closed; a few connections at a time. */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <event2/event.h>
#include <stddef.h>

#include "config/config.h"
#include "gateway/metrics.h"

struct gw_admin;

/* What the listener reads when it answers; owned by the caller, read on the main thread. */
struct gw_admin_view {
    struct gw_metrics *const *workers;   /* every worker's figures */
    size_t nworkers;
    const struct gw_config *const *cfg;  /* the running configuration (changes at reload) */
    const struct gw_metrics_main *main;  /* reloads, draining */
};

/* Opens the listener on |l| in |base|. Returns it, or NULL (logged). */
struct gw_admin *gw_admin_start(struct event_base *base, const struct gw_listen_conf *l,
                                const struct gw_admin_view *view);

/* Closes the listener and every admin connection. NULL is a no-op. */
void gw_admin_free(struct gw_admin *a);

/* `gatehouse --healthcheck [URL]`: GET |url| (http://IP:PORT/PATH; NULL: the default
 * http://127.0.0.1:9901/healthz) within 3 s. Returns 0 when the answer is 200, else 1 (a line
 * on stderr says why). */
int gw_admin_healthcheck(const char *url);

#endif
