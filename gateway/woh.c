/* SPDX-License-Identifier: MIT */
/* WebSocket-over-HTTP sessions: see woh.h. */
#include "gateway/woh.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "gateway/log.h"
#include "gateway/util.h"
#include "gateway/woh_codec.h"
#include "gateway/worker.h"
#include "gateway/ws_codec.h"

/* Events batched for the next POST above which the client is not read until a POST takes
 * them. A message is always taken whole, so the batch stays under this plus max_message. */
#define BATCH_HIWAT GW_BODY_HIWAT
/* Set-Meta-* fields kept per WebSocket; their bytes are bounded by limits.header_bytes. */
#define META_MAX 16
/* Keep-Alive-Interval is taken from 1 s to a day. */
#define KEEPALIVE_MAX_S 86400u
/* Fields the gateway adds to every POST: Content-Type and Connection-Id. */
#define OWN_FIELDS 2

/* Owned by the WebSocket exchange (x->up_ctx) while it is attached, then by the worker's task
 * list until its last POST is over. Freed when |dead| and no callback of it is on the stack. */
struct gw_woh {
    struct gw_worker_task task;        /* first: the task list hands back this pointer */
    struct gw_call call;               /* what each POST needs; its strings are in |block| */
    struct gw_req req;                 /* the POST's head: the handshake's fields replayed */
    struct gw_forwarded fwd;
    struct gw_exchange *x;             /* the client's exchange; NULL once detached */
    struct gw_exchange *cx;            /* owns: the POST in flight, NULL between POSTs */
    char *block;                       /* owns: the field array (the handshake's, ours, then
                                          META_MAX slots) and every copied string */
    size_t nfixed;                     /* fields before the Meta-* ones */
    char *meta;                        /* owns: names and values of the Meta-* fields */
    size_t nmeta;
    struct evbuffer *batch;            /* events for the next POST */
    struct evbuffer *msg;              /* the client message being put together, or NULL */
    struct event *timer;               /* the next POST: at once, or the keep-alive */
    char *accept;                      /* owns until OPEN: the first answer's fields for the
                                          101 (the array, then the strings) */
    struct h1_header *accept_h;
    size_t naccept;
    struct gw_slice subprotocol;       /* into |accept| */
    uint64_t keepalive_ms;             /* the app's Keep-Alive-Interval; 0: none */
    struct woh_in in;                  /* the answer being read */
    uint32_t utf8;                     /* the app's TEXT being checked */
    unsigned depth;
    char conn_id[33];
    unsigned msg_text : 1;
    unsigned opened : 1;               /* the app answered OPEN: the client has its 101 */
    unsigned passthru : 1;             /* the app refused: its answer goes to the client */
    unsigned refused : 1;              /* the answer in flight is not events: dropped */
    unsigned held : 1;                 /* the client is not read until the batch is taken */
    unsigned paused : 1;               /* the client's output is full: the answer waits, and
                                          no POST starts, until it drains */
    unsigned ended : 1;                /* no more events go to the client */
    unsigned telling : 1;              /* the batch tells the app that the client left */
    unsigned told : 1;                 /* that last POST went out */
    unsigned typed : 1;                /* the answer in flight says it holds events */
    unsigned detached : 1;             /* in the worker's task list */
    unsigned dead : 1;
};

static const struct gw_downstream_ops call_ops;

static const char *upstream_name(const struct gw_woh *s)
{
    return s->call.route->upstream->name;
}

/* ---- life ------------------------------------------------------------------------------- */

static void destroy(struct gw_woh *s)
{
    if (s->detached)
        gw_worker_task_remove(s->call.w, &s->task);
    if (s->cx != NULL) {
        gw_exchange_cancel(s->cx);
        gw_exchange_free(s->cx);
    }
    if (s->timer != NULL)
        event_free(s->timer);
    if (s->batch != NULL)
        evbuffer_free(s->batch);
    if (s->msg != NULL)
        evbuffer_free(s->msg);
    gw_wsnap_unref(s->call.snap);
    free(s->accept);
    free(s->meta);
    free(s->block);
    free(s);
}

static void enter(struct gw_woh *s)
{
    s->depth++;
}

static void leave(struct gw_woh *s)
{
    if (--s->depth == 0 && s->dead)
        destroy(s);
}

/* Done: freed once the outermost callback returns. */
static void finish(struct gw_woh *s)
{
    s->dead = 1;
}

static void abort_task(struct gw_worker_task *t)
{
    struct gw_woh *s = (struct gw_woh *)(void *)t;

    gw_worker_task_remove(s->call.w, t);
    s->detached = 0;
    s->dead = 1;
    if (s->depth == 0)
        destroy(s);
}

/* The client's exchange lets go of the session (or the session of it); from now on the worker
 * holds the session until its last POST is over. */
static void detach_client(struct gw_woh *s)
{
    s->x = NULL;
    if (!s->detached) {
        s->detached = 1;
        s->task.abort = abort_task;
        gw_worker_task_add(s->call.w, &s->task);
    }
}

/* Fields of the handshake that a POST does not replay: hop-by-hop and the gateway's own, the
 * handshake's WebSocket fields (the gateway's business), a body's, and Meta-* (only the app
 * binds metadata, through Set-Meta-*: a client must not spoof it). */
static int replayed(const struct gw_exchange *x, struct gw_slice name)
{
    if (gw_exchange_drop_header(x, name))
        return 0;
    if (GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Key") ||
        GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Version") ||
        GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Extensions") ||
        GW_SLICE_EQ_LIT(name, "Content-Type") || GW_SLICE_EQ_LIT(name, "Content-Length") ||
        GW_SLICE_EQ_LIT(name, "Connection-Id"))
        return 0;
    return !(name.len >= 5 && gw_slice_eq_ci((struct gw_slice){name.p, 5}, "Meta-", 5));
}

static struct gw_slice put(char **cur, struct gw_slice v)
{
    struct gw_slice s = {*cur, v.len};

    if (v.len > 0)
        memcpy(*cur, v.p, v.len);
    *cur += v.len;
    return s;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

/* 32 hex digits from the kernel's generator: a Connection-Id must not be guessable from the
 * request ids the gateway hands out (those come from a fast, predictable generator). */
static void new_connection_id(struct gw_worker *w, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[16];

    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        gw_worker_request_id(w, out); /* the pool not ready yet (early boot): still unique */
        return;
    }
    for (size_t i = 0; i < sizeof r; i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 0xf];
    }
    out[32] = '\0';
}

/* A session for the WebSocket exchange |x|, with copies of all its POSTs need (the client's
 * exchange may go before the app has been told). */
static struct gw_woh *session_new(struct gw_exchange *x)
{
    const struct gw_req *q = &x->req;
    const struct gw_forwarded *f = x->fwd;
    struct gw_woh *s = gw_xcalloc(1, sizeof *s);
    size_t nkeep = 0, bytes, ctx_len = x->log_ctx != NULL ? strlen(x->log_ctx) : 0;
    struct h1_header *h;
    char *cur;

    bytes = q->target.len + q->path.len + q->host.len + ctx_len + 1 + f->client_ip.len +
            f->xff.len + f->proto.len + f->fhost.len + f->forwarded.len + f->request_id.len;
    for (size_t i = 0; i < q->nheaders; i++) {
        if (!replayed(x, q->headers[i].name))
            continue;
        nkeep++;
        bytes += q->headers[i].name.len + q->headers[i].value.len;
    }
    s->nfixed = nkeep + OWN_FIELDS;
    s->block = gw_xmalloc((s->nfixed + META_MAX) * sizeof *h + bytes);
    h = (struct h1_header *)(void *)s->block;
    cur = s->block + (s->nfixed + META_MAX) * sizeof *h;
    new_connection_id(x->w, s->conn_id);

    s->req.method = (struct gw_slice){"POST", 4};
    s->req.target = put(&cur, q->target);
    s->req.path = put(&cur, q->path);
    s->req.host = put(&cur, q->host);
    s->req.minor = 1;
    s->req.headers = h;
    nkeep = 0;
    for (size_t i = 0; i < q->nheaders; i++) {
        if (!replayed(x, q->headers[i].name))
            continue;
        h[nkeep].name = put(&cur, q->headers[i].name);
        h[nkeep].value = put(&cur, q->headers[i].value);
        nkeep++;
    }
    h[nkeep].name = (struct gw_slice){"Content-Type", 12};
    h[nkeep++].value = (struct gw_slice){WOH_CONTENT_TYPE, sizeof WOH_CONTENT_TYPE - 1};
    h[nkeep].name = (struct gw_slice){"Connection-Id", 13};
    h[nkeep++].value = (struct gw_slice){s->conn_id, 32};
    s->req.nheaders = nkeep;
    s->req.connection = (struct gw_slice){"", 0};

    s->fwd = *f;
    s->fwd.client_ip = put(&cur, f->client_ip);
    s->fwd.xff = put(&cur, f->xff);
    s->fwd.proto = put(&cur, f->proto);
    s->fwd.fhost = put(&cur, f->fhost);
    s->fwd.forwarded = put(&cur, f->forwarded);
    s->fwd.request_id = put(&cur, f->request_id);

    s->call.w = x->w;
    s->call.snap = gw_wsnap_ref(x->snap);
    s->call.route = x->route;
    s->call.pool = x->pool;
    s->call.req = &s->req;
    s->call.fwd = &s->fwd;
    s->call.log_ctx = cur;
    put(&cur, (struct gw_slice){x->log_ctx, ctx_len});
    *cur = '\0';
    s->call.scheme = x->scheme;
    s->call.tls = x->tls;
    s->x = x;
    s->batch = evbuffer_new();
    s->timer = evtimer_new(x->w->base, on_timer, s);
    if (s->batch == NULL || s->timer == NULL) {
        gw_log_error("out of memory");
        abort();
    }
    return s;
}

/* ---- POSTs ------------------------------------------------------------------------------ */

/* Sends the batch (maybe empty: a keep-alive) as the next POST. */
static void post(struct gw_woh *s)
{
    struct gw_exchange *cx = gw_exchange_new_call(&s->call, s->batch, &call_ops, s);

    memset(&s->in, 0, sizeof s->in);
    s->refused = 0;
    s->typed = 0;
    s->told = s->telling;
    s->cx = cx;
    gw_exchange_start_call(cx);
    /* The batch is taken: the client may be read again. */
    if (s->held && s->x != NULL) {
        s->held = 0;
        gw_exchange_req_drained(s->x);
    }
}

static void arm(struct gw_woh *s, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};

    evtimer_add(s->timer, &tv);
}

/* After a POST: the next one at once when events wait (they came in while it was out),
 * else at the keep-alive. */
static void next(struct gw_woh *s)
{
    if (s->x == NULL) {
        /* Only an app that accepted has anything to be told, and only once. */
        if (s->telling && !s->told && s->opened)
            post(s);
        else
            finish(s);
        return;
    }
    /* A client that does not read gets nothing more: its batch fills, and then it is not
     * read either (backpressure both ways, as for the other upstreams). */
    if (s->paused)
        return;
    if (evbuffer_get_length(s->batch) > 0)
        post(s);
    else if (s->keepalive_ms > 0)
        arm(s, s->keepalive_ms);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_woh *s = arg;

    (void)fd;
    (void)what;
    enter(s);
    /* An empty batch when the timer fires is the keep-alive's turn: an empty POST. */
    if (s->cx == NULL && !s->dead && s->x != NULL && s->opened && !s->ended && !s->paused &&
        (evbuffer_get_length(s->batch) > 0 || s->keepalive_ms > 0))
        post(s);
    leave(s);
}

/* From now on the app hears nothing but one last POST: DISCONNECT (1006) or CLOSE with the
 * client's code and reason; what the client sent after its last message is dropped. */
static void tell_app(struct gw_woh *s, unsigned code, const char *reason, size_t n)
{
    s->ended = 1;
    if (s->telling)
        return;
    s->telling = 1;
    if (s->msg != NULL) {
        evbuffer_free(s->msg); /* half a message: never whole now */
        s->msg = NULL;
    }
    if (code == WS_CLOSE_ABNORMAL) {
        evbuffer_add(s->batch, "DISCONNECT\r\n", 12);
    } else {
        char line[WOH_LINE_MAX];
        uint8_t c[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        size_t rl = n > WOH_CLOSE_MAX - 2 ? WOH_CLOSE_MAX - 2 : n;
        int with_code = code != WS_CLOSE_NO_STATUS;

        /* No code (1005) is a CLOSE with empty content. */
        evbuffer_add(s->batch, line, woh_event_line(line, WOH_CLOSE, with_code ? 2 + rl : 0));
        if (with_code) {
            evbuffer_add(s->batch, c, 2);
            evbuffer_add(s->batch, reason, rl);
        }
        evbuffer_add(s->batch, WOH_EVENT_END, 2);
    }
}

/* The client's side is over (|why| for the log): 502 before the 101, 1011 after it. An app
 * that accepted hears DISCONNECT, unless it is the one that ended things (|tell| 0). */
static void fail_client(struct gw_woh *s, int status, const char *why, int tell)
{
    struct gw_exchange *x = s->x;

    if (tell && s->opened && !s->ended)
        tell_app(s, WS_CLOSE_ABNORMAL, "", 0);
    s->ended = 1;
    if (x == NULL)
        return;
    detach_client(s);
    gw_exchange_fail(x, status, why);
}

/* The app's answer is not what the protocol allows: logged; the client's side fails. */
static void bad_answer(struct gw_woh *s, const char *why)
{
    gw_log_ctx(GW_LOG_WARN, s->call.log_ctx, "upstream %s: websocket-over-http: %s",
               upstream_name(s), why);
    s->refused = 1;
    fail_client(s, 502, why, 1);
}

/* ---- the app's answer ------------------------------------------------------------------- */

/* Fields of the app's first answer that are about the POST itself, not the 101. */
static int post_only(struct gw_slice name)
{
    return GW_SLICE_EQ_LIT(name, "Content-Type") || GW_SLICE_EQ_LIT(name, "Content-Length") ||
           GW_SLICE_EQ_LIT(name, "Keep-Alive-Interval") ||
           GW_SLICE_EQ_LIT(name, "Sec-WebSocket-Extensions") ||
           (name.len > 9 && gw_slice_eq_ci((struct gw_slice){name.p, 9}, "Set-Meta-", 9));
}

/* Keeps the first answer's fields for the 101, which goes out at its OPEN. */
static void keep_accept_fields(struct gw_woh *s, const struct gw_resp *r)
{
    size_t n = 0, bytes = 0;
    char *cur;

    for (size_t i = 0; i < r->nheaders; i++) {
        if (post_only(r->headers[i].name))
            continue;
        n++;
        bytes += r->headers[i].name.len + r->headers[i].value.len;
    }
    s->accept = gw_xmalloc(n * sizeof *s->accept_h + bytes + 1);
    s->accept_h = (struct h1_header *)(void *)s->accept;
    cur = s->accept + n * sizeof *s->accept_h;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct h1_header *f = &r->headers[i];

        if (post_only(f->name))
            continue;
        if (GW_SLICE_EQ_LIT(f->name, "Sec-WebSocket-Protocol")) {
            s->subprotocol = put(&cur, f->value);
            continue;
        }
        s->accept_h[s->naccept].name = put(&cur, f->name);
        s->accept_h[s->naccept].value = put(&cur, f->value);
        s->naccept++;
    }
}

static int is_set_meta(struct gw_slice name)
{
    return name.len > 9 && gw_slice_eq_ci((struct gw_slice){name.p, 9}, "Set-Meta-", 9);
}

/* 1 when one of r->headers[0..upto) is Set-Meta-|name|. */
static int meta_named(const struct gw_resp *r, size_t upto, struct gw_slice name)
{
    for (size_t i = 0; i < upto; i++) {
        struct gw_slice h = r->headers[i].name;

        if (is_set_meta(h) && h.len - 9 == name.len &&
            gw_slice_eq_ci((struct gw_slice){h.p + 9, name.len}, name.p, name.len))
            return 1;
    }
    return 0;
}

/* Set-Meta-Name: value binds "Meta-Name: value" to every later POST (an empty value unbinds
 * it). At most META_MAX fields and limits.header_bytes bytes; more is dropped with a line. */
static void update_meta(struct gw_woh *s, const struct gw_resp *r)
{
    struct h1_header next_h[META_MAX], *cur_meta = s->req.headers + s->nfixed;
    size_t n = 0, bytes = 0, limit = s->call.snap->cfg->limits.header_bytes, set = 0;
    char *buf, *cur;

    for (size_t i = 0; i < r->nheaders; i++)
        set += is_set_meta(r->headers[i].name);
    if (set == 0)
        return;
    /* The answer's fields (the first of a name wins), then the old ones it leaves alone. */
    for (size_t i = 0; i < r->nheaders + s->nmeta; i++) {
        struct gw_slice name, value;

        if (i < r->nheaders) {
            if (!is_set_meta(r->headers[i].name))
                continue;
            name = (struct gw_slice){r->headers[i].name.p + 9, r->headers[i].name.len - 9};
            value = r->headers[i].value;
            if (meta_named(r, i, name) || value.len == 0)
                continue;
        } else {
            const struct h1_header *old = &cur_meta[i - r->nheaders];

            name = (struct gw_slice){old->name.p + 5, old->name.len - 5};
            value = old->value;
            if (meta_named(r, r->nheaders, name))
                continue;
        }
        if (n == META_MAX || bytes + 5 + name.len + value.len > limit) {
            gw_log_ctx(GW_LOG_WARN, s->call.log_ctx,
                       "upstream %s: websocket-over-http: Set-Meta-%.*s dropped (over %d "
                       "fields or limits.header_bytes)",
                       upstream_name(s), (int)name.len, name.p, META_MAX);
            continue;
        }
        next_h[n].name = name;
        next_h[n].value = value;
        bytes += 5 + name.len + value.len;
        n++;
    }
    /* |next_h| points into the answer and the old buffer: copy, then let the old one go. */
    buf = gw_xmalloc(bytes + 1);
    cur = buf;
    for (size_t i = 0; i < n; i++) {
        struct gw_slice name = {cur, 5 + next_h[i].name.len};

        memcpy(cur, "Meta-", 5);
        cur += 5;
        put(&cur, next_h[i].name);
        cur_meta[i].name = name;
        cur_meta[i].value = put(&cur, next_h[i].value);
    }
    free(s->meta);
    s->meta = buf;
    s->nmeta = n;
    s->req.nheaders = s->nfixed + n;
}

static void update_keepalive(struct gw_woh *s, const struct gw_resp *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        struct gw_slice v = r->headers[i].value;
        uint64_t secs = 0;

        if (!GW_SLICE_EQ_LIT(r->headers[i].name, "Keep-Alive-Interval"))
            continue;
        for (size_t k = 0; k < v.len && secs <= KEEPALIVE_MAX_S; k++) {
            if (v.p[k] < '0' || v.p[k] > '9') {
                secs = KEEPALIVE_MAX_S + 1;
                break;
            }
            secs = secs * 10 + (uint64_t)(v.p[k] - '0');
        }
        if (v.len == 0 || secs > KEEPALIVE_MAX_S) {
            gw_log_ctx(GW_LOG_WARN, s->call.log_ctx,
                       "upstream %s: websocket-over-http: Keep-Alive-Interval \"%.*s\" ignored "
                       "(seconds, up to %u)",
                       upstream_name(s), (int)v.len, v.p, KEEPALIVE_MAX_S);
            continue;
        }
        s->keepalive_ms = secs * 1000;
    }
}

static int is_events(const struct gw_resp *r)
{
    static const char ct[] = WOH_CONTENT_TYPE;

    for (size_t i = 0; i < r->nheaders; i++) {
        struct gw_slice v = r->headers[i].value;

        if (!GW_SLICE_EQ_LIT(r->headers[i].name, "Content-Type"))
            continue;
        return v.len >= sizeof ct - 1 && gw_slice_eq_ci(v, ct, sizeof ct - 1) &&
               (v.len == sizeof ct - 1 || v.p[sizeof ct - 1] == ';' ||
                v.p[sizeof ct - 1] == ' ');
    }
    return 0;
}

static void call_head(struct gw_exchange *cx, const struct gw_resp *r)
{
    struct gw_woh *s = cx->down_ctx;

    enter(s);
    if (s->x != NULL && !s->opened) {
        s->x->server = cx->server;
        s->x->queue_us = cx->queue_us;
    }
    if (r->status != 200) {
        if (!s->opened && s->x != NULL) {
            /* A refusal: the client gets the app's answer as it is. */
            s->passthru = 1;
            gw_exchange_resp_head(s->x, r);
        } else if (!s->ended) {
            gw_log_ctx(GW_LOG_WARN, s->call.log_ctx,
                       "upstream %s: websocket-over-http: status %d to a POST of events; "
                       "closing the websocket",
                       upstream_name(s), r->status);
            s->refused = 1;
            fail_client(s, 502, "upstream refused websocket events", 1);
        } else {
            gw_log_ctx(GW_LOG_WARN, s->call.log_ctx,
                       "upstream %s: websocket-over-http: status %d to the last POST (the "
                       "client had left)",
                       upstream_name(s), r->status);
            s->refused = 1;
        }
        leave(s);
        return;
    }
    if (!s->opened && s->x != NULL) {
        if (!is_events(r)) {
            bad_answer(s, "answer to OPEN is not " WOH_CONTENT_TYPE);
            leave(s);
            return;
        }
        keep_accept_fields(s, r);
    }
    s->typed = (unsigned)is_events(r);
    update_meta(s, r);
    update_keepalive(s, r);
    leave(s);
}

/* OPEN, first in the first answer: the client gets its 101. */
static void accept_client(struct gw_woh *s)
{
    s->opened = 1;
    if (s->x == NULL)
        return;
    if (s->subprotocol.len > 0 && !gw_exchange_ws_offered(s->x, s->subprotocol)) {
        bad_answer(s, "the app chose a subprotocol the client did not offer");
        return;
    }
    gw_exchange_ws_accept(s->x, s->subprotocol, s->accept_h, s->naccept);
    free(s->accept);
    s->accept = NULL;
    s->accept_h = NULL;
    s->naccept = 0;
}

/* Acts on one event of the app's answer. Returns 1 when the client asks to pause. */
static int on_event(struct gw_woh *s, enum woh_in_result r, const struct woh_in_event *ev)
{
    struct gw_exchange *x = s->x;
    unsigned flags;

    if (!s->opened) {
        if (r == WOH_IN_EVENT && ev->type == WOH_OPEN)
            accept_client(s);
        else
            bad_answer(s, "the first event of the answer to OPEN is not OPEN");
        return 0;
    }
    if (x == NULL || s->ended)
        return 0; /* the client is gone or closing: what the app sends is dropped */
    if (r == WOH_IN_DATA) {
        flags = (ev->type == WOH_TEXT ? WS_F_TEXT : 0) | (ev->first ? WS_F_FIRST : 0) |
                (ev->fin ? WS_F_FIN : 0);
        if (ev->type == WOH_TEXT) {
            if (ev->first)
                s->utf8 = WS_UTF8_ACCEPT;
            if (ws_utf8_feed(&s->utf8, ev->data, ev->len) != 0 ||
                (ev->fin && s->utf8 != WS_UTF8_ACCEPT)) {
                bad_answer(s, "a TEXT event that is not UTF-8");
                return 0;
            }
        }
        return gw_exchange_ws_send(x, flags, ev->data, ev->len);
    }
    switch (ev->type) {
    case WOH_PING:
        return gw_exchange_ws_send(x, GW_WS_PING, (const uint8_t *)"", 0);
    case WOH_PONG:
        return gw_exchange_ws_send(x, GW_WS_PONG, (const uint8_t *)"", 0);
    case WOH_CLOSE: {
        uint32_t u = WS_UTF8_ACCEPT;

        if ((ev->code != WS_CLOSE_NO_STATUS && !ws_close_code_valid(ev->code)) ||
            ws_utf8_feed(&u, ev->data, ev->len) != 0 || u != WS_UTF8_ACCEPT) {
            bad_answer(s, "a CLOSE event with an invalid code or a reason not UTF-8");
            return 0;
        }
        s->ended = 1;
        detach_client(s);
        gw_exchange_ws_close(x, ev->code == WS_CLOSE_NO_STATUS ? 0 : ev->code,
                             (const char *)ev->data, ev->len);
        return 0;
    }
    case WOH_DISCONNECT:
        fail_client(s, 502, "upstream sent DISCONNECT", 0);
        return 0;
    default: /* a later OPEN says nothing new */
        return 0;
    }
}

/* Reads events from |p[0..n)|. Returns 1 when the client asks to pause. */
static int feed(struct gw_woh *s, const uint8_t *p, size_t n)
{
    int pause = 0;

    if (n > 0 && !s->typed) {
        bad_answer(s, "an answer with a body that is not " WOH_CONTENT_TYPE);
        return 0;
    }
    while (n > 0 && !s->refused) {
        struct woh_in_event ev;
        size_t used = 0;
        enum woh_in_result r = woh_in_next(&s->in, p, n, &used, &ev);

        p += used;
        n -= used;
        if (r == WOH_IN_NEED)
            break;
        if (r == WOH_IN_ERROR) {
            bad_answer(s, ev.why);
            break;
        }
        pause |= on_event(s, r, &ev);
    }
    /* Once the client is gone or closing, the rest of the answer is dropped at full speed:
     * nothing would ever resume it. */
    if (s->x == NULL || s->ended)
        return 0;
    if (pause)
        s->paused = 1;
    return pause;
}

static int call_body(struct gw_exchange *cx, const char *p, size_t n)
{
    struct gw_woh *s = cx->down_ctx;
    int pause = 0;

    enter(s);
    if (s->passthru)
        s->paused = (unsigned)(pause = s->x != NULL ? gw_exchange_resp_body(s->x, p, n) : 0);
    else if (!s->refused)
        pause = feed(s, (const uint8_t *)p, n);
    leave(s);
    return pause;
}

static int call_body_buf(struct gw_exchange *cx, struct evbuffer *src)
{
    struct gw_woh *s = cx->down_ctx;
    int pause = 0;

    enter(s);
    if (s->passthru && s->x != NULL) {
        pause = gw_exchange_resp_body_buf(s->x, src);
        s->paused = (unsigned)pause;
    } else if (!s->passthru && !s->refused) {
        struct evbuffer_iovec v[8];
        struct evbuffer_ptr ptr;
        size_t len = evbuffer_get_length(src);

        evbuffer_ptr_set(src, &ptr, 0, EVBUFFER_PTR_SET);
        while (ptr.pos < (ev_off_t)len && !s->refused) {
            int nv = evbuffer_peek(src, -1, &ptr, v, 8);

            if (nv > 8)
                nv = 8;
            for (int i = 0; i < nv && !s->refused; i++) {
                pause |= feed(s, v[i].iov_base, v[i].iov_len);
                evbuffer_ptr_set(src, &ptr, v[i].iov_len, EVBUFFER_PTR_ADD);
            }
        }
    }
    evbuffer_drain(src, evbuffer_get_length(src));
    leave(s);
    return pause;
}

static void call_end(struct gw_exchange *cx, const struct h1_header *trailers, size_t ntrailers)
{
    struct gw_woh *s = cx->down_ctx;

    enter(s);
    s->cx = NULL;
    if (s->passthru) {
        struct gw_exchange *x = s->x;

        s->ended = 1;
        if (x != NULL) {
            detach_client(s);
            gw_exchange_resp_end(x, trailers, ntrailers);
        }
        finish(s);
    } else {
        if (!s->refused && !woh_in_done(&s->in))
            bad_answer(s, "the answer ends inside an event");
        else if (!s->refused && !s->opened)
            bad_answer(s, "an answer to OPEN without OPEN");
        next(s);
    }
    gw_exchange_free(cx);
    leave(s);
}

static void call_fail(struct gw_exchange *cx, int status)
{
    struct gw_woh *s = cx->down_ctx;
    struct gw_exchange *x = s->x;

    enter(s);
    s->cx = NULL;
    if (x != NULL) {
        if (!s->opened) {
            x->server = cx->server;
            x->queue_us = cx->queue_us;
            x->retry_after_s = cx->retry_after_s;
        }
        /* Before the 101 the client gets the status (502, 503 or 504); after it, 1011. */
        fail_client(s, s->opened ? 502 : status, cx->error, 1);
    } else if (s->telling && s->told) {
        gw_log_ctx(GW_LOG_WARN, s->call.log_ctx,
                   "upstream %s: websocket-over-http: the last POST (the client had left) "
                   "failed: %s",
                   upstream_name(s), cx->error != NULL ? cx->error : "upstream failed");
    }
    gw_exchange_free(cx);
    next(s);
    leave(s);
}

static void call_req_drained(struct gw_exchange *cx)
{
    (void)cx; /* the body was whole from the start */
}

static const struct gw_downstream_ops call_ops = {
    .head = call_head,
    .body = call_body,
    .body_buf = call_body_buf,
    .end = call_end,
    .fail = call_fail,
    .req_drained = call_req_drained,
};

/* ---- the client's side ------------------------------------------------------------------ */

/* The client left with |code| (1006: without a close frame): the app hears it as CLOSE or
 * DISCONNECT in one last POST, after the one in flight (the OPEN itself, maybe: if the app
 * accepts, it is told at once that the client has gone). */
static void client_left(struct gw_woh *s, unsigned code, const char *reason, size_t n)
{
    detach_client(s);
    if (s->ended) {
        /* The app ended things itself, or was told already. */
        if (s->cx == NULL)
            finish(s);
        return;
    }
    tell_app(s, code, reason, n);
    if (s->cx != NULL) {
        /* Its answer is read (and dropped) at full speed; then the last POST. */
        if (s->paused) {
            s->paused = 0;
            gw_exchange_resume(s->cx);
        }
        return;
    }
    next(s);
}

static void up_start(struct gw_exchange *x)
{
    struct gw_woh *s = session_new(x);

    x->up_ctx = s;
    evbuffer_add(s->batch, "OPEN\r\n", 6);
    enter(s);
    post(s);
    leave(s);
}

static void up_req_body(struct gw_exchange *x)
{
    (void)x; /* a handshake has no body */
}

static void up_resume(struct gw_exchange *x)
{
    struct gw_woh *s = x->up_ctx;

    enter(s);
    if (s->paused) {
        s->paused = 0;
        if (s->cx != NULL)
            gw_exchange_resume(s->cx);
        else
            next(s);
    }
    leave(s);
}

static void up_cancel(struct gw_exchange *x)
{
    struct gw_woh *s = x->up_ctx;

    enter(s);
    client_left(s, WS_CLOSE_ABNORMAL, "", 0);
    leave(s);
}

static int up_ws_message(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n)
{
    struct gw_woh *s = x->up_ctx;
    char line[WOH_LINE_MAX];
    size_t len;

    if (s->ended)
        return 0;
    if (flags & WS_F_FIRST) {
        if (s->msg == NULL && (s->msg = evbuffer_new()) == NULL) {
            gw_log_error("out of memory");
            abort();
        }
        s->msg_text = (flags & WS_F_TEXT) != 0;
    }
    if (s->msg == NULL)
        return 0;
    evbuffer_add(s->msg, p, n);
    if (!(flags & WS_F_FIN))
        return 0;
    len = evbuffer_get_length(s->msg);
    evbuffer_add(s->batch, line, woh_event_line(line, s->msg_text ? WOH_TEXT : WOH_BINARY, len));
    evbuffer_add_buffer(s->batch, s->msg);
    evbuffer_add(s->batch, WOH_EVENT_END, 2);
    evbuffer_free(s->msg);
    s->msg = NULL;
    if (s->cx == NULL)
        /* At the end of this loop turn, so that what the client sent together goes
         * together. */
        arm(s, 0);
    if (evbuffer_get_length(s->batch) >= BATCH_HIWAT) {
        s->held = 1;
        return 1;
    }
    return 0;
}

static void up_ws_close(struct gw_exchange *x, unsigned code, const char *reason, size_t n)
{
    struct gw_woh *s = x->up_ctx;

    enter(s);
    client_left(s, code, reason, n);
    leave(s);
}

const struct gw_upstream_ops gw_woh_upstream_ops = {
    .start = up_start,
    .req_body = up_req_body,
    .resume = up_resume,
    .cancel = up_cancel,
    .ws_message = up_ws_message,
    .ws_close = up_ws_close,
};
