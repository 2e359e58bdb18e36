/* SPDX-License-Identifier: MIT */
/* Metrics for /metrics (Prometheus text format). Each worker thread owns a struct gw_metrics
 * that only it writes (relaxed atomic stores: no locked instruction on the hot path); the
 * main thread sums the workers' when it renders. Routes and upstreams are labelled through a
 * registry kept by the main thread: a slot per distinct route (host and path) and upstream
 * name, given to each configuration before the workers see it, so the same route keeps its
 * counters across reloads. */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/* Distinct routes and upstreams labelled; the last slot of each counts the rest ("other"),
 * and route slot 0 counts requests that matched no route. */
#define GW_M_ROUTES 64
#define GW_M_UPSTREAMS 64
/* Latency buckets (seconds): 1ms 5ms 10ms 25ms 50ms 100ms 250ms 500ms 1s 2.5s 5s 10s, +Inf. */
#define GW_M_BUCKETS 12

typedef _Atomic uint64_t gw_counter;
typedef _Atomic int64_t gw_gauge;

/* One worker's figures. Written by its thread only; read by the main thread. */
struct gw_metrics {
    gw_counter requests[GW_M_ROUTES][6];          /* by status class: [0] none sent, 1xx..5xx */
    gw_counter latency[GW_M_ROUTES][GW_M_BUCKETS + 1]; /* per bucket, not cumulative */
    gw_counter latency_sum_us[GW_M_ROUTES];
    gw_counter bytes_in[GW_M_ROUTES], bytes_out[GW_M_ROUTES];
    gw_gauge inflight[GW_M_UPSTREAMS];            /* exchanges an upstream driver holds */
    gw_counter queue_wait[GW_M_UPSTREAMS][GW_M_BUCKETS + 1];
    gw_counter queue_wait_sum_us[GW_M_UPSTREAMS];
    gw_gauge connections_http1, connections_h2;
    gw_counter h2_protect[8];                     /* by enum h2c_protect (gateway/h2_codec.h) */
    gw_gauge websockets, sse_streams;
    gw_counter tls_handshakes, tls_handshake_failures; /* finished / failed (timeouts too) */
};

/* Single-writer updates (the owning worker thread only). */
static inline void gw_m_add(gw_counter *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

static inline void gw_m_gauge(gw_gauge *g, int64_t d)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/* Counts one finished exchange on route slot |route| (0: no route) with |status| (0: none
 * sent), taking |duration_us| (not counted in the latency histogram when |long_lived|: a
 * WebSocket or an event stream), the bytes, and |queue_us| (-1: never queued) on upstream slot
 * |upstream|. */
void gw_metrics_exchange(struct gw_metrics *m, unsigned route, unsigned upstream, int status,
                         uint64_t duration_us, int long_lived, uint64_t bytes_in,
                         uint64_t bytes_out, int64_t queue_us);

/* Main thread: gives every route and upstream of |cfg| its slot (metric_slot), registering new
 * labels. Call before the workers see |cfg|. */
void gw_metrics_label(struct gw_config *cfg);

/* What the main thread adds of its own. */
struct gw_metrics_main {
    uint64_t reloads_ok, reloads_failed;
    int last_reload_ok;          /* 1 until a reload fails, then as the last one went */
    uint64_t start_time_s;       /* wall clock, seconds */
    int draining;                /* SIGTERM received */
};

/* Main thread: renders the sum of |n| workers' metrics, the upstreams' gate figures and
 * |mm| as Prometheus text into a malloc'd buffer (*len bytes). Returns it (caller frees). */
char *gw_metrics_render(struct gw_metrics *const *workers, size_t n,
                        const struct gw_config *cfg, const struct gw_metrics_main *mm,
                        size_t *len);

#endif
