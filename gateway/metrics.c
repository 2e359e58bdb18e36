/* SPDX-License-Identifier: MIT */
/* Metrics: per-worker figures, the label registry and the Prometheus text. See metrics.h. */
#include "gateway/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gate.h"
#include "gateway/h2_codec.h"
#include "gateway/util.h"

static const uint64_t bucket_us[GW_M_BUCKETS] = {
    1000, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static const char *const bucket_le[GW_M_BUCKETS] = {
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};

static unsigned bucket_of(uint64_t us)
{
    unsigned b = 0;

    while (b < GW_M_BUCKETS && us > bucket_us[b])
        b++;
    return b;
}

void gw_metrics_exchange(struct gw_metrics *m, unsigned route, unsigned upstream, int status,
                         uint64_t duration_us, int long_lived, uint64_t bytes_in,
                         uint64_t bytes_out, int64_t queue_us)
{
    unsigned cls = status >= 100 && status < 600 ? (unsigned)status / 100 : 0;

    gw_m_add(&m->requests[route][cls], 1);
    gw_m_add(&m->bytes_in[route], bytes_in);
    gw_m_add(&m->bytes_out[route], bytes_out);
    if (!long_lived) {
        gw_m_add(&m->latency[route][bucket_of(duration_us)], 1);
        gw_m_add(&m->latency_sum_us[route], duration_us);
    }
    if (queue_us >= 0) {
        gw_m_add(&m->queue_wait[upstream][bucket_of((uint64_t)queue_us)], 1);
        gw_m_add(&m->queue_wait_sum_us[upstream], (uint64_t)queue_us);
    }
}

/* ---- labels (main thread only) ------------------------------------------------------------ */

/* A route slot is a (route, upstream) pair: a reload that points a route elsewhere starts
 * new series instead of moving the old counts to another upstream. */
static char *route_label[GW_M_ROUTES];     /* "host/path" or "/path"; [0] "(none)" */
static char *route_upstream[GW_M_ROUTES];
static char *upstream_label[GW_M_UPSTREAMS];

static unsigned slot(char **labels, size_t n, unsigned first, const char *name)
{
    unsigned i;

    for (i = first; i < n - 1 && labels[i] != NULL; i++)
        if (strcmp(labels[i], name) == 0)
            return i;
    if (i < n - 1) {
        labels[i] = gw_xstrndup(name, strlen(name));
        return i;
    }
    return (unsigned)n - 1; /* "other" */
}

static unsigned route_slot(const char *key, const char *upstream)
{
    unsigned i;

    for (i = 1; i < GW_M_ROUTES - 1 && route_label[i] != NULL; i++)
        if (strcmp(route_label[i], key) == 0 && strcmp(route_upstream[i], upstream) == 0)
            return i;
    if (i == GW_M_ROUTES - 1)
        return i; /* "(other)" */
    route_label[i] = gw_xstrndup(key, strlen(key));
    route_upstream[i] = gw_xstrndup(upstream, strlen(upstream));
    return i;
}

void gw_metrics_label(struct gw_config *cfg)
{
    char key[1024];

    /* Parenthesised: no configured name or path can take these. */
    if (route_label[0] == NULL) {
        route_label[0] = gw_xstrndup("(none)", 6);
        route_upstream[0] = gw_xstrndup("(none)", 6);
        route_label[GW_M_ROUTES - 1] = gw_xstrndup("(other)", 7);
        route_upstream[GW_M_ROUTES - 1] = gw_xstrndup("(other)", 7);
        upstream_label[GW_M_UPSTREAMS - 1] = gw_xstrndup("(other)", 7);
    }
    for (size_t i = 0; i < cfg->nupstreams; i++)
        cfg->upstreams[i].metric_slot =
            slot(upstream_label, GW_M_UPSTREAMS, 0, cfg->upstreams[i].name);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct gw_route_conf *r = &cfg->routes[i];

        snprintf(key, sizeof key, "%s%s", r->host != NULL ? r->host : "", r->path);
        r->metric_slot = route_slot(key, r->upstream->name);
    }
}

/* ---- rendering (main thread) -------------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap *= 2;
        o->p = realloc(o->p, o->cap);
        if (o->p == NULL)
            abort();
    }
}

static uint64_t sum(struct gw_metrics *const *w, size_t n, size_t off)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v += atomic_load_explicit((gw_counter *)(void *)((char *)w[i] + off),
                                  memory_order_relaxed);
    return v;
}

static int64_t gauge(struct gw_metrics *const *w, size_t n, size_t off)
{
    int64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v += atomic_load_explicit((gw_gauge *)(void *)((char *)w[i] + off),
                                  memory_order_relaxed);
    return v;
}

#define OFF(field) offsetof(struct gw_metrics, field)

_Static_assert(H2C_P_COUNT == sizeof((struct gw_metrics *)0)->h2_protect /
                                 sizeof(gw_counter),
               "gw_metrics.h2_protect has one counter per enum h2c_protect");

/* A label value is a configured name or path: escape what the text format needs. */
static void put_label(struct out *o, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            put(o, "\\%c", *s);
        else if (*s == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *s);
    }
}

/* The labels of a route slot: route="...",upstream="..." (escaped), into |o|. */
static void put_route(struct out *o, unsigned r)
{
    put(o, "route=\"");
    put_label(o, route_label[r]);
    put(o, "\",upstream=\"");
    put_label(o, route_upstream[r]);
    put(o, "\"");
}

static void put_upstream(struct out *o, unsigned u)
{
    put(o, "upstream=\"");
    put_label(o, upstream_label[u]);
    put(o, "\"");
}

/* A histogram series; |labels| writes its labels. Left out until its first observation. */
static void histogram(struct out *o, const char *name, void (*labels)(struct out *, unsigned),
                      unsigned slot_, struct gw_metrics *const *w, size_t n, size_t first_off,
                      size_t sum_off)
{
    uint64_t cum = 0, total = 0;

    for (unsigned b = 0; b <= GW_M_BUCKETS; b++)
        total += sum(w, n, first_off + b * sizeof(gw_counter));
    if (total == 0)
        return;
    for (unsigned b = 0; b <= GW_M_BUCKETS; b++) {
        cum += sum(w, n, first_off + b * sizeof(gw_counter));
        put(o, "%s_bucket{", name);
        labels(o, slot_);
        put(o, ",le=\"%s\"} %" PRIu64 "\n", b < GW_M_BUCKETS ? bucket_le[b] : "+Inf", cum);
    }
    put(o, "%s_sum{", name);
    labels(o, slot_);
    put(o, "} %.6f\n", (double)sum(w, n, sum_off) / 1e6);
    put(o, "%s_count{", name);
    labels(o, slot_);
    put(o, "} %" PRIu64 "\n", cum);
}

char *gw_metrics_render(struct gw_metrics *const *w, size_t n, const struct gw_config *cfg,
                        const struct gw_metrics_main *mm, size_t *len)
{
    static const char *const cls[6] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    struct out o = {gw_xmalloc(16384), 0, 16384};

    put(&o, "# HELP gatehouse_requests_total Requests answered, by route, upstream and status "
            "class (none: the client left before any status).\n"
            "# TYPE gatehouse_requests_total counter\n");
    for (unsigned r = 0; r < GW_M_ROUTES; r++) {
        if (route_label[r] == NULL)
            continue;
        for (unsigned c = 0; c < 6; c++) {
            uint64_t v = sum(w, n, OFF(requests[r][c]));
            if (v == 0)
                continue;
            put(&o, "gatehouse_requests_total{");
            put_route(&o, r);
            put(&o, ",code=\"%s\"} %" PRIu64 "\n", cls[c], v);
        }
    }
    put(&o, "# HELP gatehouse_request_duration_seconds Time from the request's head to the end "
            "of its response, by route (WebSockets and event streams not included).\n"
            "# TYPE gatehouse_request_duration_seconds histogram\n");
    for (unsigned r = 0; r < GW_M_ROUTES; r++)
        if (route_label[r] != NULL)
            histogram(&o, "gatehouse_request_duration_seconds", put_route, r, w, n,
                      OFF(latency[r][0]), OFF(latency_sum_us[r]));
    put(&o, "# HELP gatehouse_received_bytes_total Bytes received from clients, by route.\n"
            "# TYPE gatehouse_received_bytes_total counter\n");
    for (unsigned r = 0; r < GW_M_ROUTES; r++) {
        if (route_label[r] == NULL)
            continue;
        put(&o, "gatehouse_received_bytes_total{");
        put_route(&o, r);
        put(&o, "} %" PRIu64 "\n", sum(w, n, OFF(bytes_in[r])));
    }
    put(&o, "# HELP gatehouse_sent_bytes_total Bytes sent to clients, by route.\n"
            "# TYPE gatehouse_sent_bytes_total counter\n");
    for (unsigned r = 0; r < GW_M_ROUTES; r++) {
        if (route_label[r] == NULL)
            continue;
        put(&o, "gatehouse_sent_bytes_total{");
        put_route(&o, r);
        put(&o, "} %" PRIu64 "\n", sum(w, n, OFF(bytes_out[r])));
    }
    put(&o, "# HELP gatehouse_upstream_in_flight Exchanges an upstream is serving now, queued "
            "ones included.\n# TYPE gatehouse_upstream_in_flight gauge\n");
    for (unsigned u = 0; u < GW_M_UPSTREAMS; u++) {
        if (upstream_label[u] == NULL)
            continue;
        put(&o, "gatehouse_upstream_in_flight{");
        put_upstream(&o, u);
        put(&o, "} %" PRId64 "\n", gauge(w, n, OFF(inflight[u])));
    }
    /* Each metric's samples form one group (the text format's rule): two passes. */
    for (int pass = 0; pass < 2; pass++) {
        put(&o, pass == 0 ? "# HELP gatehouse_upstream_slots_in_use Slots of a uwsgi upstream's "
                            "concurrency limit held now.\n"
                            "# TYPE gatehouse_upstream_slots_in_use gauge\n"
                          : "# HELP gatehouse_upstream_queue_depth Requests waiting for a slot "
                            "of a uwsgi upstream.\n# TYPE gatehouse_upstream_queue_depth gauge\n");
        for (size_t i = 0; cfg != NULL && i < cfg->nupstreams; i++) {
            unsigned inflight;
            size_t queued;

            if (!gw_gate_counts_by_name(cfg->upstreams[i].name, &inflight, &queued))
                continue;
            put(&o, pass == 0 ? "gatehouse_upstream_slots_in_use{upstream=\""
                              : "gatehouse_upstream_queue_depth{upstream=\"");
            put_label(&o, cfg->upstreams[i].name);
            if (pass == 0)
                put(&o, "\"} %u\n", inflight);
            else
                put(&o, "\"} %zu\n", queued);
        }
    }
    put(&o, "# HELP gatehouse_upstream_queue_wait_seconds Time requests waited for a slot of "
            "a uwsgi upstream.\n# TYPE gatehouse_upstream_queue_wait_seconds histogram\n");
    for (unsigned u = 0; u < GW_M_UPSTREAMS; u++)
        if (upstream_label[u] != NULL)
            histogram(&o, "gatehouse_upstream_queue_wait_seconds", put_upstream, u, w, n,
                      OFF(queue_wait[u][0]), OFF(queue_wait_sum_us[u]));
    put(&o, "# HELP gatehouse_connections Open client connections, by protocol.\n"
            "# TYPE gatehouse_connections gauge\n"
            "gatehouse_connections{protocol=\"http1\"} %" PRId64 "\n"
            "gatehouse_connections{protocol=\"h2\"} %" PRId64 "\n"
            "# HELP gatehouse_websockets Open WebSockets.\n# TYPE gatehouse_websockets gauge\n"
            "gatehouse_websockets %" PRId64 "\n"
            "# HELP gatehouse_sse_streams Open Server-Sent Events responses.\n"
            "# TYPE gatehouse_sse_streams gauge\ngatehouse_sse_streams %" PRId64 "\n",
        gauge(w, n, OFF(connections_http1)), gauge(w, n, OFF(connections_h2)),
        gauge(w, n, OFF(websockets)),
        gauge(w, n, OFF(sse_streams)));
    put(&o, "# HELP gatehouse_tls_handshakes_total TLS handshakes completed.\n"
            "# TYPE gatehouse_tls_handshakes_total counter\ngatehouse_tls_handshakes_total %" PRIu64
            "\n# HELP gatehouse_tls_handshake_failures_total TLS handshakes failed or timed "
            "out.\n# TYPE gatehouse_tls_handshake_failures_total counter\n"
            "gatehouse_tls_handshake_failures_total %" PRIu64 "\n",
        sum(w, n, OFF(tls_handshakes)), sum(w, n, OFF(tls_handshake_failures)));
    put(&o, "# HELP gatehouse_http2_protections_total HTTP/2 connections ended by a flood "
            "protection, by kind.\n# TYPE gatehouse_http2_protections_total counter\n");
    for (unsigned k = 0; k < H2C_P_COUNT; k++)
        put(&o, "gatehouse_http2_protections_total{kind=\"%s\"} %" PRIu64 "\n",
            gw_h2c_protect_name(k), sum(w, n, OFF(h2_protect[k])));
    put(&o, "# HELP gatehouse_config_reloads_total Configuration reloads (SIGHUP), by result.\n"
            "# TYPE gatehouse_config_reloads_total counter\n"
            "gatehouse_config_reloads_total{result=\"ok\"} %" PRIu64 "\n"
            "gatehouse_config_reloads_total{result=\"failed\"} %" PRIu64 "\n"
            "# HELP gatehouse_config_last_reload_successful 1 unless the last reload failed.\n"
            "# TYPE gatehouse_config_last_reload_successful gauge\n"
            "gatehouse_config_last_reload_successful %d\n"
            "# HELP gatehouse_draining 1 once SIGTERM was received.\n"
            "# TYPE gatehouse_draining gauge\ngatehouse_draining %d\n"
            "# HELP gatehouse_start_time_seconds When the process started (Unix time).\n"
            "# TYPE gatehouse_start_time_seconds gauge\n"
            "gatehouse_start_time_seconds %" PRIu64 "\n",
        mm->reloads_ok, mm->reloads_failed, mm->last_reload_ok, mm->draining,
        mm->start_time_s);
    *len = o.len;
    return o.p;
}
