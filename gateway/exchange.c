/* SPDX-License-Identifier: MIT */
/* The exchange: request copy, forwarding facts, routing, and the calls between the sides. */
#include "gateway/exchange.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "adapters/http/http_upstream.h"
#include "adapters/asgi/asgi_upstream.h"
#include "adapters/uwsgi/uwsgi_upstream.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/router.h"
#include "gateway/woh.h"
#include "gateway/worker.h"

static uint64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int is_idempotent(struct gw_slice m)
{
    switch (m.len) {
    case 3:
        return memcmp(m.p, "GET", 3) == 0 || memcmp(m.p, "PUT", 3) == 0;
    case 4:
        return memcmp(m.p, "HEAD", 4) == 0;
    case 5:
        return memcmp(m.p, "TRACE", 5) == 0;
    case 6:
        return memcmp(m.p, "DELETE", 6) == 0;
    case 7:
        return memcmp(m.p, "OPTIONS", 7) == 0;
    default:
        return 0;
    }
}

static struct gw_slice put(char **cur, const char *p, size_t n)
{
    struct gw_slice s = {*cur, n};

    memcpy(*cur, p, n);
    *cur += n;
    return s;
}


void gw_client_init(struct gw_client *cl, const struct sockaddr *sa, const struct gw_config *cfg)
{
    memset(cl, 0, sizeof *cl);
    strcpy(cl->ip, "unknown");
    if (sa->sa_family == AF_INET) {
        cl->port = ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, cl->ip,
                  sizeof cl->ip);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        cl->port = ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
        /* Show an IPv4-mapped peer as the IPv4 address it is. */
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            inet_ntop(AF_INET, &a->s6_addr[12], cl->ip, sizeof cl->ip);
        } else {
            inet_ntop(AF_INET6, a, cl->ip, sizeof cl->ip);
            cl->ipv6 = 1;
        }
    }
    cl->iplen = (uint8_t)strlen(cl->ip);
    cl->trusted = (uint8_t)gw_config_is_trusted(cfg, sa);
}

/* Bytes copy_request() writes for |r|: the header array, then the strings. */
static size_t request_size(const struct h1_request *r)
{
    size_t n = r->nheaders * sizeof(struct h1_header) + r->method.len + r->target.len +
               r->path.len + r->authority.len;

    for (size_t i = 0; i < r->nheaders; i++) {
        n += r->headers[i].name.len + r->headers[i].value.len;
        if (GW_SLICE_EQ_LIT(r->headers[i].name, "Connection"))
            n += r->headers[i].value.len + 2; /* joined copy, ", " between */
    }
    return n;
}

/* Copies the request head to |*cur| (aligned for struct h1_header), advancing it. */
static void copy_request(struct gw_req *q, const struct h1_request *r, char **cur)
{
    q->headers = (struct h1_header *)(void *)*cur;
    q->nheaders = r->nheaders;
    *cur += r->nheaders * sizeof(struct h1_header);
    q->method = put(cur, r->method.p, r->method.len);
    q->target = put(cur, r->target.p, r->target.len);
    q->path = put(cur, r->path.p, r->path.len);
    q->host = put(cur, r->authority.p, r->authority.len);
    for (size_t i = 0; i < r->nheaders; i++) {
        q->headers[i].name = put(cur, r->headers[i].name.p, r->headers[i].name.len);
        q->headers[i].value = put(cur, r->headers[i].value.p, r->headers[i].value.len);
    }
    /* Several Connection fields are one list (RFC 9110 §5.3). */
    q->connection.p = *cur;
    q->connection.len = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!GW_SLICE_EQ_LIT(r->headers[i].name, "Connection"))
            continue;
        if (q->connection.len > 0)
            put(cur, ", ", 2);
        put(cur, r->headers[i].value.p, r->headers[i].value.len);
        q->connection.len = (size_t)(*cur - q->connection.p);
    }
    q->minor = r->minor;
    q->chunked = r->body == H1_BODY_CHUNKED;
    q->has_body = q->chunked || (r->body == H1_BODY_LENGTH && r->content_length > 0);
    q->content_length = r->body == H1_BODY_LENGTH ? r->content_length : 0;
    q->idempotent = is_idempotent(r->method);
    q->head = q->method.len == 4 && memcmp(q->method.p, "HEAD", 4) == 0;
}

/* A client-supplied request id is kept only when it is short and plainly printable. */
static int request_id_ok(struct gw_slice v)
{
    if (v.len == 0 || v.len > 128)
        return 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '-' || ch == '_' || ch == '.' || ch == ':' || ch == '+' || ch == '/' ||
              ch == '='))
            return 0;
    }
    return 1;
}

/* Joins every field |name| into |cur| ("a, b"); returns the slice (empty when none). */
static struct gw_slice join_fields(const struct gw_req *q, const char *name, size_t nlen,
                                   char **cur)
{
    struct gw_slice s = {*cur, 0};

    for (size_t i = 0; i < q->nheaders; i++) {
        if (!gw_slice_eq_ci(q->headers[i].name, name, nlen))
            continue;
        if (s.len > 0)
            put(cur, ", ", 2);
        put(cur, q->headers[i].value.p, q->headers[i].value.len);
        s.len = (size_t)(*cur - s.p);
    }
    return s;
}

static size_t fields_len(const struct h1_request *r, const char *name, size_t nlen)
{
    size_t n = 0;

    for (size_t i = 0; i < r->nheaders; i++)
        if (gw_slice_eq_ci(r->headers[i].name, name, nlen))
            n += r->headers[i].value.len + 2;
    return n;
}

/* Bytes compute_forwarded() may write for |r| from |cl| (an upper bound). */
static size_t forwarded_size(const struct h1_request *r, const struct gw_client *cl,
                             const char *scheme)
{
    size_t need = 3 * (size_t)cl->iplen + 2 * r->authority.len + 128 + 33 + 2 * strlen(scheme);

    if (cl->trusted)
        need += fields_len(r, "X-Forwarded-For", 15) + fields_len(r, "X-Forwarded-Proto", 17) +
                fields_len(r, "X-Forwarded-Host", 16) + fields_len(r, "Forwarded", 9);
    return need + 2 * r->authority.len + 64; /* escaping in Forwarded */
}

/* Writes |key| and the value |v| as an RFC 7239 parameter value: a token stays bare; anything
 * else (IPv6, host:port) becomes a quoted-string (§6), with a quoted-pair before '"' and '\'
 * (RFC 9110 §5.6.4). */
static void put_param(char **cur, const char *key, size_t klen, struct gw_slice v, int ipv6)
{
    /* 1: the byte makes the value a quoted-string; 2: it also takes a quoted-pair. */
    static const unsigned char cls[256] = {[':'] = 1, ['['] = 1, ['"'] = 3, ['\\'] = 3};
    const char *end = v.p + v.len;
    unsigned seen = 0;
    int quote, escape;

    for (const char *p = v.p; p < end; p++)
        seen |= cls[(unsigned char)*p];
    quote = ipv6 || seen != 0;
    escape = (seen & 2) != 0;
    put(cur, key, klen);
    if (quote)
        put(cur, "\"", 1);
    if (ipv6)
        put(cur, "[", 1);
    if (!escape) {
        put(cur, v.p, v.len);
    } else {
        for (const char *p = v.p; p < end; p++) {
            if (*p == '"' || *p == '\\')
                put(cur, "\\", 1);
            put(cur, p, 1);
        }
    }
    if (ipv6)
        put(cur, "]", 1);
    if (quote)
        put(cur, "\"", 1);
}

/* Writes the forwarding values to |*cur| (forwarded_size() bytes), advancing it, into |f|. */
static void compute_forwarded(struct gw_exchange *x, struct gw_forwarded *f,
                              const struct gw_client *cl, char **cur)
{
    const struct gw_req *q = &x->req;
    struct gw_slice in_id = {NULL, 0};

    f->trusted = cl->trusted;
    f->client_ip = put(cur, cl->ip, cl->iplen);
    f->client_port = cl->port;

    f->xff.p = *cur;
    if (f->trusted && join_fields(q, "X-Forwarded-For", 15, cur).len > 0)
        put(cur, ", ", 2);
    put(cur, cl->ip, cl->iplen);
    f->xff.len = (size_t)(*cur - f->xff.p);

    f->proto = f->trusted ? join_fields(q, "X-Forwarded-Proto", 17, cur) : (struct gw_slice){0};
    if (f->proto.len == 0)
        f->proto = put(cur, x->scheme, strlen(x->scheme));
    f->fhost = f->trusted ? join_fields(q, "X-Forwarded-Host", 16, cur) : (struct gw_slice){0};
    if (f->fhost.len == 0)
        f->fhost = put(cur, q->host.p, q->host.len);

    f->forwarded.p = *cur;
    if (f->trusted && join_fields(q, "Forwarded", 9, cur).len > 0)
        put(cur, ", ", 2);
    put_param(cur, "for=", 4, (struct gw_slice){cl->ip, cl->iplen}, cl->ipv6);
    put(cur, ";proto=", 7);
    put(cur, x->scheme, strlen(x->scheme));
    if (q->host.len > 0) {
        put(cur, ";", 1);
        put_param(cur, "host=", 5, q->host, 0);
    }
    f->forwarded.len = (size_t)(*cur - f->forwarded.p);

    for (size_t i = 0; i < q->nheaders; i++)
        if (GW_SLICE_EQ_LIT(q->headers[i].name, "X-Request-Id"))
            in_id = q->headers[i].value;
    if (request_id_ok(in_id)) {
        f->request_id = put(cur, in_id.p, in_id.len);
    } else {
        char id[33];
        gw_worker_request_id(x->w, id);
        f->request_id = put(cur, id, 32);
    }
}

/* A request that asks for a WebSocket in any way is judged as an opening handshake, never
 * forwarded as a plain request that the upstream might half understand. */
static int wants_websocket(const struct h1_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct gw_slice name = h[i].name;

        if (GW_SLICE_EQ_LIT(name, "Upgrade") && h1_list_has(h[i].value, "websocket", 9))
            return 1;
        if (GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Key") ||
            GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Version"))
            return 1;
    }
    return 0;
}

struct gw_exchange *gw_exchange_new(struct gw_worker *w, struct gw_wsnap *snap,
                                    const struct h1_request *r, const struct gw_client *client,
                                    const char *log_ctx, const struct gw_downstream_ops *down,
                                    void *down_ctx)
{
    const char *scheme = client->tls != NULL ? "https" : "http";
    /* One block: the struct, the request copy (its header array first, aligned by the
     * struct's size), the forwarding values, and room for a prefix-stripped path. A WebSocket
     * handshake's copy is a block of its own, freed after the 101 (gw_exchange_ws_compact())
     * so that an idle WebSocket does not keep it. */
    size_t req_size = request_size(r), fwd_size = forwarded_size(r, client, scheme);
    size_t copy = sizeof(struct gw_forwarded) + req_size + fwd_size + r->path.len + 2;
    int apart = wants_websocket(r->headers, r->nheaders);
    struct gw_exchange *x = gw_xmalloc(sizeof *x + (apart ? 0 : copy));
    struct gw_forwarded *fwd;
    char *cur;

    memset(x, 0, sizeof *x);
    if (apart)
        x->block = gw_xmalloc(copy);
    cur = apart ? x->block : (char *)(x + 1);
    /* The forwarding values' struct first: the header array after it stays aligned. */
    fwd = (struct gw_forwarded *)(void *)cur;
    cur += sizeof *fwd;
    /* The monotonic clocks are read only for the access log; the start for the metrics too. */
    x->timed = snap->cfg->log.access != GW_ACCESS_OFF;
    x->queue_us = -1;
    x->start_us = wall_us();
    x->w = w;
    x->snap = gw_wsnap_ref(snap);
    x->cfg = snap->cfg;
    x->log_ctx = log_ctx;
    x->scheme = scheme;
    x->tls = client->tls;
    x->down = down;
    x->down_ctx = down_ctx;
    copy_request(&x->req, r, &cur);
    compute_forwarded(x, fwd, client, &cur);
    x->fwd = fwd;
    x->request_id = fwd->request_id;
    x->upath_buf = cur;
    if (x->req.has_body) {
        x->req_body = evbuffer_new();
        if (x->req_body == NULL) {
            gw_log_error("out of memory");
            abort();
        }
    }
    return x;
}

static int origin_allowed(const struct gw_ws_conf *wc, struct gw_slice origin)
{
    /* Only browsers send Origin, and they cannot forge it: the list guards their users. */
    if (wc->any_origin || origin.len == 0)
        return 1;
    for (size_t i = 0; i < wc->norigins; i++)
        if (strlen(wc->origins[i]) == origin.len &&
            strncasecmp(wc->origins[i], origin.p, origin.len) == 0)
            return 1;
    return 0;
}

/* Checks the opening handshake of a WebSocket request for |route|. Returns 0 (x->ws set) or the
 * status to answer, with x->error. */
static int websocket_check(struct gw_exchange *x, const struct gw_route_conf *route)
{
    const struct gw_ws_conf *wc = &route->ws;
    struct ws_pmd_conf pmd = {0};
    int status;

    if (x->req.has_body) {
        x->error = "websocket handshake with a body";
        return 400;
    }
    /* An http upstream speaks WebSocket itself and agrees its extensions with the client. */
    pmd.enabled = wc->deflate && route->upstream->protocol != GW_PROTO_HTTP;
    pmd.max_window_bits = (uint8_t)wc->deflate_window_bits;
    pmd.no_context_takeover = wc->deflate_no_context_takeover;
    status = ws_handshake_check(x->req.method, x->req.minor, x->req.headers, x->req.nheaders,
                                &pmd, &x->ws_hs, &x->error);
    if (status != 0)
        return status;
    if (!origin_allowed(wc, x->ws_hs.origin)) {
        x->error = "websocket origin not allowed";
        return 403;
    }
    x->ws = 1;
    return 0;
}

static const struct gw_upstream_ops *driver_of(const struct gw_route_conf *route)
{
    switch (route->upstream->protocol) {
    case GW_PROTO_UWSGI:
        return &gw_uwsgi_upstream_ops;
    case GW_PROTO_ASGI:
        return &gw_asgi_upstream_ops;
    default:
        return &gw_http_upstream_ops;
    }
}

int gw_exchange_start(struct gw_exchange *x)
{
    const struct gw_route_conf *route;
    struct gw_slice path = x->req.path;

    if (!(path.len == 1 && path.p[0] == '*') && !gw_path_is_safe(path.p, path.len)) {
        x->error = "unsafe path (dot segment)";
        return 400;
    }
    route = gw_route_match(x->cfg, x->req.host.p, x->req.host.len, path.p, path.len);
    if (route == NULL) {
        x->error = "no route";
        return 404;
    }
    x->route = route;
    if (route->strip_prefix) {
        /* The stripped path is never longer than the original plus the leading '/'. */
        size_t n = gw_route_upstream_path(route, path.p, path.len, x->upath_buf, path.len + 2);
        x->req.path.p = x->upath_buf;
        x->req.path.len = n;
    }
    if (wants_websocket(x->req.headers, x->req.nheaders)) {
        int status = websocket_check(x, route);
        if (status != 0)
            return status;
    }
    x->pool = x->snap->pools[route->upstream->index];
    if (x->pool == NULL) {
        x->error = "upstream pool unavailable (out of memory at reload)";
        return 503;
    }
    /* A blocking pool cannot hold a WebSocket: it gets one short request per batch. */
    x->up = x->ws && route->upstream->protocol == GW_PROTO_UWSGI ? &gw_woh_upstream_ops
                                                                 : driver_of(route);
    x->counted = 1;
    gw_m_gauge(&x->w->metrics->inflight[route->upstream->metric_slot], 1);
    x->up->start(x);
    return 0;
}

/* The upstream let go of |x|: it leaves the in-flight gauge. */
static void detached(struct gw_exchange *x)
{
    if (!x->counted)
        return;
    x->counted = 0;
    gw_m_gauge(&x->w->metrics->inflight[x->route->upstream->metric_slot], -1);
}

struct gw_exchange *gw_exchange_new_call(const struct gw_call *call, struct evbuffer *body,
                                         const struct gw_downstream_ops *down, void *down_ctx)
{
    struct gw_exchange *x = gw_xcalloc(1, sizeof *x);

    x->quiet = 1;
    x->queue_us = -1;
    x->w = call->w;
    x->snap = gw_wsnap_ref(call->snap);
    x->cfg = call->snap->cfg;
    x->route = call->route;
    x->pool = call->pool;
    x->req = *call->req;
    x->fwd = call->fwd;
    x->request_id = call->fwd->request_id;
    x->log_ctx = call->log_ctx;
    x->scheme = call->scheme;
    x->tls = call->tls;
    x->down = down;
    x->down_ctx = down_ctx;
    x->req_body = evbuffer_new();
    if (x->req_body == NULL || evbuffer_add_buffer(x->req_body, body) != 0) {
        gw_log_error("out of memory");
        abort();
    }
    x->req.content_length = evbuffer_get_length(x->req_body);
    x->req.has_body = x->req.content_length > 0;
    x->req.chunked = 0;
    x->req_done = 1;
    return x;
}

void gw_exchange_start_call(struct gw_exchange *x)
{
    x->up = driver_of(x->route);
    x->up->start(x);
}

void gw_exchange_req_body(struct gw_exchange *x)
{
    if (x->up != NULL)
        x->up->req_body(x);
}

void gw_exchange_resume(struct gw_exchange *x)
{
    if (x->up != NULL)
        x->up->resume(x);
}

void gw_exchange_cancel(struct gw_exchange *x)
{
    const struct gw_upstream_ops *up = x->up;

    x->up = NULL;
    detached(x);
    if (up != NULL)
        up->cancel(x);
    x->up_ctx = NULL;
}

void gw_exchange_resp_head(struct gw_exchange *x, const struct gw_resp *r)
{
    x->resp_whole = r->whole;
    x->down->head(x, r);
}

int gw_exchange_resp_body(struct gw_exchange *x, const char *p, size_t n)
{
    return x->down->body(x, p, n);
}

int gw_exchange_resp_body_buf(struct gw_exchange *x, struct evbuffer *src)
{
    return x->down->body_buf(x, src);
}

void gw_exchange_resp_end(struct gw_exchange *x, const struct h1_header *trailers,
                          size_t ntrailers)
{
    x->up = NULL;
    detached(x);
    x->up_ctx = NULL;
    if (x->timed)
        x->up_end_ms = gw_now_ms();
    x->down->end(x, trailers, ntrailers);
}

void gw_exchange_fail(struct gw_exchange *x, int status, const char *reason)
{
    x->up = NULL;
    detached(x);
    x->up_ctx = NULL;
    if (x->timed)
        x->up_end_ms = gw_now_ms();
    if (x->error == NULL)
        x->error = reason;
    x->down->fail(x, status);
}

void gw_exchange_req_drained(struct gw_exchange *x)
{
    x->down->req_drained(x);
}

int gw_exchange_ws_offered(const struct gw_exchange *x, struct gw_slice proto)
{
    for (size_t i = 0; i < x->req.nheaders; i++) {
        struct gw_slice tok;
        size_t pos = 0;

        if (!GW_SLICE_EQ_LIT(x->req.headers[i].name, "Sec-WebSocket-Protocol"))
            continue;
        while (ws_next_token(x->req.headers[i].value, &pos, &tok))
            if (tok.len == proto.len && memcmp(tok.p, proto.p, proto.len) == 0)
                return 1;
    }
    return 0;
}

void gw_exchange_ws_accept(struct gw_exchange *x, struct gw_slice subprotocol,
                           const struct h1_header *h, size_t n)
{
    x->down->ws_accept(x, subprotocol, h, n);
}

int gw_exchange_ws_send(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n)
{
    return x->down->ws_send(x, flags, p, n);
}

void gw_exchange_ws_close(struct gw_exchange *x, unsigned code, const char *reason, size_t n)
{
    x->up = NULL;
    detached(x);
    x->up_ctx = NULL;
    if (x->timed)
        x->up_end_ms = gw_now_ms();
    x->down->ws_close(x, code, reason, n);
}

int gw_exchange_ws_message(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n)
{
    return x->up != NULL ? x->up->ws_message(x, flags, p, n) : 0;
}

void gw_exchange_ws_closed(struct gw_exchange *x, unsigned code, const char *reason, size_t n)
{
    const struct gw_upstream_ops *up = x->up;

    x->up = NULL;
    detached(x);
    if (up != NULL) {
        if (up->ws_close != NULL)
            up->ws_close(x, code, reason, n);
        else
            up->cancel(x);
    }
    x->up_ctx = NULL;
    if (x->timed && x->up_end_ms == 0)
        x->up_end_ms = gw_now_ms();
}

int gw_resp_is_event_stream(const struct gw_resp *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        struct gw_slice v = r->headers[i].value;

        if (!GW_SLICE_EQ_LIT(r->headers[i].name, "Content-Type"))
            continue;
        if (v.len > 17)
            v.len = v.p[17] == ';' || v.p[17] == ' ' || v.p[17] == '\t' ? 17 : v.len;
        return GW_SLICE_EQ_LIT(v, "text/event-stream");
    }
    return 0;
}

char gw_evbuffer_last_byte(struct evbuffer *src)
{
    struct evbuffer_ptr last;
    char ch = 0;

    evbuffer_ptr_set(src, &last, evbuffer_get_length(src) - 1, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(src, &last, &ch, 1);
    return ch;
}

int gw_ws_own_field(struct gw_slice name)
{
    return h1_is_hop_by_hop(name) || GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Accept") ||
           GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Protocol") ||
           GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Extensions") ||
           GW_SLICE_EQ_LIT(name, "Content-Length");
}

struct gw_slice gw_exchange_client_addr(const struct gw_exchange *x, int *peer)
{
    struct gw_slice addr = x->fwd->client_ip;

    *peer = 1;
    if (x->fwd->trusted) {
        const char *comma = memchr(x->fwd->xff.p, ',', x->fwd->xff.len);
        struct gw_slice first = {x->fwd->xff.p,
                                 comma != NULL ? (size_t)(comma - x->fwd->xff.p) : x->fwd->xff.len};
        while (first.len > 0 && (first.p[0] == ' ' || first.p[0] == '\t')) {
            first.p++;
            first.len--;
        }
        while (first.len > 0 && (first.p[first.len - 1] == ' ' || first.p[first.len - 1] == '\t'))
            first.len--;
        if (first.len > 0) {
            *peer = first.len == addr.len && memcmp(first.p, addr.p, addr.len) == 0;
            addr = first;
        }
    }
    return addr;
}

int gw_exchange_drop_header(const struct gw_exchange *x, struct gw_slice name)
{
    if (name.len == 0)
        return 1;
    switch (name.p[0] | 0x20) {
    case 'x':
        if (GW_SLICE_EQ_LIT(name, "X-Forwarded-For") ||
            GW_SLICE_EQ_LIT(name, "X-Forwarded-Proto") ||
            GW_SLICE_EQ_LIT(name, "X-Forwarded-Host") || GW_SLICE_EQ_LIT(name, "X-Request-Id"))
            return 1;
        /* The gateway's own TLS facts (tls_client_headers): never the client's word. */
        if (name.len >= 13 && gw_slice_eq_ci((struct gw_slice){name.p, 13}, "X-SSL-Client-", 13))
            return 1;
        break;
    case 'f':
        if (GW_SLICE_EQ_LIT(name, "Forwarded"))
            return 1;
        break;
    case 'c': case 'k': case 'p': case 't': case 'u':
        if (h1_is_hop_by_hop(name))
            return 1;
        break;
    default:
        break;
    }
    return x->req.connection.len > 0 && h1_list_has(x->req.connection, name.p, name.len);
}

void gw_exchange_free(struct gw_exchange *x)
{
    if (x == NULL)
        return;
    if (!x->quiet) {
        uint64_t now = wall_us();
        const struct gw_route_conf *rt = x->route;

        detached(x); /* freed with the upstream still attached: the caller cancelled it */
        if (x->sse)
            gw_m_gauge(&x->w->metrics->sse_streams, -1);
        gw_metrics_exchange(x->w->metrics, rt != NULL ? rt->metric_slot : 0,
                            rt != NULL ? rt->upstream->metric_slot : 0,
                            x->head_sent ? x->status : 0,
                            now > x->start_us ? now - x->start_us : 0, x->ws || x->sse,
                            x->bytes_in, x->bytes_out, x->queue_us);
    }
    if (!x->quiet && x->cfg->log.access != GW_ACCESS_OFF && x->w->alog != NULL) {
        struct gw_access_rec r;
        uint64_t now = wall_us();
        const char *server = x->server != NULL ? x->server : "";
        const char *route = x->route != NULL ? x->route->upstream->name : "";

        r.time_us = (int64_t)now;
        r.client.p = x->log_ctx != NULL ? strstr(x->log_ctx, "peer=") : NULL;
        r.client.p = r.client.p != NULL ? r.client.p + 5 : "";
        r.client.len = strlen(r.client.p);
        r.method = x->req.method;
        r.target = x->req.target;
        r.host = x->req.host;
        r.protocol = x->req.h2      ? (struct gw_slice){"HTTP/2.0", 8}
                     : x->req.minor ? (struct gw_slice){"HTTP/1.1", 8}
                                    : (struct gw_slice){"HTTP/1.0", 8};
        r.status = x->head_sent ? x->status : 0;
        r.bytes_in = x->bytes_in;
        r.bytes_out = x->bytes_out;
        /* A step of the wall clock must not turn into a huge duration. */
        r.duration_us = now > x->start_us ? now - x->start_us : 0;
        r.route.p = route;
        r.route.len = strlen(route);
        r.server.p = server;
        r.server.len = strlen(server);
        r.upstream_us = x->up_start_ms != 0 && x->up_end_ms >= x->up_start_ms
                            ? (int64_t)(x->up_end_ms - x->up_start_ms) * 1000
                            : -1;
        r.queue_us = x->queue_us;
        r.request_id = x->request_id;
        r.error.p = x->error != NULL ? x->error : "";
        r.error.len = strlen(r.error.p);
        gw_access_log_write(x->w->alog, &r);
    }
    if (x->req_body != NULL)
        evbuffer_free(x->req_body);
    gw_wsnap_unref(x->snap);
    free(x->block);
    free(x);
}

void gw_exchange_ws_compact(struct gw_exchange *x)
{
    static const struct gw_forwarded no_forwarding;
    struct gw_req *q = &x->req;
    char *b, *cur;

    if (x->block == NULL)
        return;
    b = gw_xmalloc(q->target.len + q->host.len + x->request_id.len + 1);
    cur = b;
    q->method = (struct gw_slice){"GET", 3};
    q->target = put(&cur, q->target.p, q->target.len);
    q->host = put(&cur, q->host.p, q->host.len);
    x->request_id = put(&cur, x->request_id.p, x->request_id.len);
    /* Nothing else of the copy is read after the 101; its scalars stay. */
    q->path = q->connection = (struct gw_slice){"", 0};
    q->headers = NULL;
    q->nheaders = 0;
    x->fwd = &no_forwarding;
    x->ws_hs.key = x->ws_hs.origin = (struct gw_slice){"", 0};
    x->upath_buf = NULL;
    free(x->block);
    x->block = b;
}
