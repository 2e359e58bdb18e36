/* SPDX-License-Identifier: MIT */
/* The http upstream driver: picks a server, sends the request over a pooled keep-alive
 * HTTP/1.1 connection, streams both bodies with backpressure, retries and tracks health. A
 * WebSocket handshake is forwarded as an upgrade; on a 101 the connection becomes a byte
 * tunnel between the client and the server. */
#include "adapters/http/http_upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "gateway/h1_parse.h"
#include "gateway/log.h"
#include "gateway/tls.h"
#include "gateway/stream.h"
#include "gateway/util.h"

/* Addresses kept per resolved server name. */
#define HU_MAX_ADDRS 16
/* Servers an exchange remembers having tried (the most recent ones). */
#define HU_TRIED_MAX 8
/* Header fields parsed on the stack; a longer response head is parsed again into the heap. */
#define HU_STACK_HDRS 48
/* Connection fields of one response whose listed names are removed. */
/* Interim (1xx) responses accepted before the final one. */
#define HU_MAX_INTERIM 16

/* Static reasons handed to gw_exchange_fail() (it keeps the pointer). */
static const char R_NO_SERVER[] = "no healthy upstream server";
static const char R_NOMEM[] = "out of memory";
static const char R_MID_SEND[] = "upstream send timed out mid-response";

/* The hop-by-hop fields of a WebSocket handshake (RFC 6455 §4.1): the client's own were dropped
 * with the other hop-by-hop fields, as they describe its connection, not this one. */
static const char WS_UPGRADE_FIELDS[] = "Connection: Upgrade\r\nUpgrade: websocket\r\n";

/* One resolved address of a server. */
struct hu_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

struct hu_conn;

/* A pending evdns_getaddrinfo() for one server. Owned by the lookup itself: created when the
 * lookup starts and freed by its callback, which libevent always calls (with EVUTIL_EAI_CANCEL
 * after evdns_getaddrinfo_cancel(), possibly on a later loop turn). The pool sets |pool| to NULL
 * when it goes away first, so the callback then touches nothing but the lookup. */
struct hu_lookup {
    struct gw_http_pool *pool;
    size_t server;
    struct evdns_getaddrinfo_request *req;
};

/* One server of the upstream, in one worker. Owned by its pool (an array entry). */
struct hu_server {
    struct gw_http_pool *pool;
    const struct gw_server_conf *conf;  /* borrowed from the snapshot */
    struct hu_addr *addrs;              /* owned; NULL until resolved */
    size_t naddrs, next_addr;
    struct hu_lookup *lookup;           /* pending lookup, NULL when none */
    unsigned inflight;                  /* exchanges bound to a connection of this server */
    unsigned fails;                     /* consecutive failures */
    uint64_t down_until;                /* gw_now_ms() before which it is skipped; 0 = up */
    unsigned addr_gen;                  /* bumped when the resolved address set changes */
    struct hu_conn *idle;               /* idle keep-alive connections, most recent first */
    size_t nidle;
    unsigned mark;                      /* scratch for selection: tried by this exchange */
};

/* Retry bookkeeping of one exchange, carried from one connection to the next. */
struct hu_retry {
    unsigned tries;                     /* attempts made that count against u->retries */
    unsigned ntried;
    size_t tried[HU_TRIED_MAX];         /* server indices, the most recent HU_TRIED_MAX */
};

/* Response trailers, copied out of the input (one allocation: struct, headers, bytes). */
struct hu_trailers {
    struct h1_header *h;
    size_t n, max;
    char *buf;
    size_t used, cap;
};

enum hu_phase { PH_HEAD = 0, PH_BODY };

/* The state of the one request a connection carries; zeroed when an exchange binds. */
struct hu_job {
    struct hu_retry rt;
    enum hu_phase phase;
    enum h1_body mode;                  /* response body framing, once the head is in */
    uint64_t remaining;                 /* H1_BODY_LENGTH: bytes still to come */
    struct h1_chunked dec;              /* H1_BODY_CHUNKED */
    struct hu_trailers *tr;             /* owned; NULL until a trailer arrives */
    struct evbuffer *replay;            /* owned: on a reused connection, a copy of the body
                                           taken so far (at most GW_BODY_HIWAT) so that a
                                           stale connection can be retried; else NULL */
    uint64_t body_taken;                /* request body bytes moved out of x->req_body */
    unsigned interim;                   /* 1xx responses skipped */
    unsigned head_queued : 1;           /* the request head is in the out buffer */
    unsigned req_sent : 1;              /* the whole request is in the out buffer (a
                                           tunnel's bytes never end: 0 again after a 101) */
    unsigned got_byte : 1;              /* a response byte arrived */
    unsigned paused : 1;                /* the downstream asked us to stop reading */
    unsigned resp_keep_alive : 1;
    unsigned in_pump : 1, pump_again : 1;
    unsigned tunnel : 1;                /* after a 101: bytes pass as they are both ways */
    unsigned shut_wr : 1;               /* tunnel: the client's half-close was passed on */
};

/* One connection to a server. Owned by the pool: while idle it is on its server's idle list;
 * while bound it is x->up_ctx of exactly one exchange (x is borrowed, and dropped the moment
 * the exchange is detached); a closed connection waits on the pool's graveyard until no
 * callback of the pool is on the stack, and is freed there. */
struct hu_conn {
    struct gw_stream s;
    struct hu_server *srv;
    struct hu_conn *prev, *next;        /* idle list, or graveyard (next only) */
    struct gw_exchange *x;              /* NULL unless bound */
    uint64_t served;                    /* responses completed on it */
    uint64_t rto_ms;                    /* the stream's read timeout as last set */
    unsigned addr_gen;                  /* srv->addr_gen when it was opened */
    unsigned fresh : 1;                 /* opened for the current exchange, never reused */
    unsigned connecting : 1;
    unsigned idle : 1;
    unsigned dead : 1;
    unsigned counted : 1;               /* counted in srv->inflight */
    struct hu_job job;
};

/* Owned by the worker's snapshot runtime (see the header). |depth| counts the pool's callbacks
 * on the stack: connections closed meanwhile wait on |grave|, and gw_http_pool_free() called
 * meanwhile only sets |closing|; the outermost callback then does the freeing. */
struct gw_http_pool {
    struct event_base *base;
    struct evdns_base *dns;
    const struct gw_upstream_conf *u;   /* borrowed from the snapshot */
    struct hu_server *servers;
    size_t nservers;
    size_t rr;                          /* balancing cursor */
    struct event *resolve_ev;           /* NULL when every server is numeric or unix */
    struct evbuffer *scratch;           /* a response body piece short of the whole input */
    struct hu_conn *grave;
    size_t nconns;                      /* connections allocated (idle, bound, grave) */
    unsigned depth;
    int closing;
};

static void conn_on_read(struct gw_stream *s, void *arg);
static void conn_on_drain(struct gw_stream *s, void *arg);
static void conn_on_event(struct gw_stream *s, enum gw_stream_what what, void *arg);
static void idle_on_read(struct gw_stream *s, void *arg);
static void idle_on_event(struct gw_stream *s, enum gw_stream_what what, void *arg);
static void dispatch(struct gw_http_pool *p, struct gw_exchange *x, struct hu_retry *rt,
                     int status, const char *reason);
static void pool_destroy(struct gw_http_pool *p);

/* ---- pool guard ------------------------------------------------------------------------ */

static void pool_enter(struct gw_http_pool *p)
{
    p->depth++;
}

static void job_release(struct hu_job *j)
{
    free(j->tr);
    j->tr = NULL;
    if (j->replay != NULL)
        evbuffer_free(j->replay);
    j->replay = NULL;
}

static void conn_free(struct hu_conn *c)
{
    struct gw_http_pool *p = c->srv->pool;

    gw_stream_close(&c->s);
    job_release(&c->job);
    free(c);
    p->nconns--;
}

/* Leaves a pool callback; the outermost one frees what was closed and, when asked, the pool.
 * Nothing of the pool may be touched after this call. */
static void pool_leave(struct gw_http_pool *p)
{
    if (--p->depth != 0)
        return;
    while (p->grave != NULL) {
        struct hu_conn *c = p->grave;
        p->grave = c->next;
        conn_free(c);
    }
    if (p->closing)
        pool_destroy(p);
}

/* ---- small helpers ---------------------------------------------------------------------- */

static char *put(char *w, const char *s, size_t n)
{
    memcpy(w, s, n);
    return w + n;
}

#define PUT_LIT(w, lit) put((w), (lit), sizeof(lit) - 1)
#define PUT_SLICE(w, sl) put((w), (sl).p, (sl).len)

/* Writes "NAME: value\r\n" (|prefix| holds "NAME: ") unless |v| is empty. */
static char *put_field(char *w, const char *prefix, size_t plen, struct gw_slice v)
{
    if (v.len == 0)
        return w;
    w = put(w, prefix, plen);
    w = PUT_SLICE(w, v);
    return PUT_LIT(w, "\r\n");
}
#define PUT_FIELD(w, lit, v) put_field((w), (lit), sizeof(lit) - 1, (v))

/* Logs one failure of |x| on |srv|: "upstream NAME server ADDR: WHAT[ (ERRNO)][, retrying]". */
static void log_failure(const struct gw_exchange *x, const struct hu_server *srv, const char *what,
                        int err, int retrying)
{
    /* Not strerror_r: libevent's headers define _GNU_SOURCE, which swaps in the variant that
     * returns a pointer; glibc's strerror is thread-safe for the errnos a socket returns. */
    gw_log_ctx(retrying ? GW_LOG_WARN : GW_LOG_ERROR, x->log_ctx,
               "upstream %s server %s: %s%s%s%s%s", srv->pool->u->name, srv->conf->address, what,
               err ? " (" : "", err ? strerror(err) : "", err ? ")" : "",
               retrying ? ", retrying" : "");
}

/* ---- servers: health and selection -------------------------------------------------------- */

/* A failure that says something about the server (not about this process's resources). */
static int err_is_server_fault(int err)
{
    return err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM;
}

static void server_failed(struct hu_server *srv)
{
    const struct gw_upstream_conf *u = srv->pool->u;

    /* The count stays at the threshold after a cooldown, so that the first failure after it
     * sends the server straight back (a half-open probe); a good head resets it. */
    if (srv->fails < u->health_fails)
        srv->fails++;
    if (u->health_fails == 0 || srv->fails < u->health_fails)
        return;
    srv->down_until = gw_now_ms() + u->health_cooldown_ms;
    gw_log_warn("upstream %s server %s: %u consecutive failures, skipped for %llu ms", u->name,
                srv->conf->address, srv->fails, (unsigned long long)u->health_cooldown_ms);
}

static int server_usable(struct hu_server *srv, uint64_t *now)
{
    if (srv->naddrs == 0)
        return 0;
    if (srv->down_until != 0) {
        if (*now == 0)
            *now = gw_now_ms();
        if (*now < srv->down_until)
            return 0;
        srv->down_until = 0;
    }
    return 1;
}

static struct hu_server *pick(struct gw_http_pool *p, int skip_marked, uint64_t *now)
{
    size_t n = p->nservers, best = SIZE_MAX, i = p->rr;

    for (size_t k = 0; k < n; k++, i = (i + 1 == n) ? 0 : i + 1) {
        struct hu_server *srv = &p->servers[i];
        if ((skip_marked && srv->mark) || !server_usable(srv, now))
            continue;
        if (p->u->balance == GW_BALANCE_ROUND_ROBIN) {
            best = i;
            break;
        }
        /* Strictly fewer wins, so ties go to the first from the cursor: round robin. */
        if (best == SIZE_MAX || srv->inflight < p->servers[best].inflight)
            best = i;
    }
    if (best == SIZE_MAX)
        return NULL;
    p->rr = (best + 1 == n) ? 0 : best + 1;
    return &p->servers[best];
}

/* Chooses a resolved server out of cooldown, avoiding those in |rt| when another exists. */
static struct hu_server *select_server(struct gw_http_pool *p, const struct hu_retry *rt)
{
    uint64_t now = 0;
    struct hu_server *srv;
    unsigned nt = rt->ntried < HU_TRIED_MAX ? rt->ntried : HU_TRIED_MAX;

    if (p->nservers == 0)
        return NULL;
    if (nt == 0)
        return pick(p, 0, &now);
    for (unsigned i = 0; i < nt; i++)
        p->servers[rt->tried[i]].mark = 1;
    srv = pick(p, 1, &now);
    if (srv == NULL)
        srv = pick(p, 0, &now);
    for (unsigned i = 0; i < nt; i++)
        p->servers[rt->tried[i]].mark = 0;
    return srv;
}

static void retry_note(struct hu_retry *rt, const struct hu_server *srv)
{
    rt->tries++;
    rt->tried[rt->ntried % HU_TRIED_MAX] = (size_t)(srv - srv->pool->servers);
    rt->ntried++;
}

/* ---- connections -------------------------------------------------------------------------- */

static void idle_unlink(struct hu_conn *c)
{
    struct hu_server *srv = c->srv;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->idle = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->idle = 0;
    srv->nidle--;
}

/* Drops the exchange binding and the in-flight count. Does not touch the exchange. */
static void conn_unbind(struct hu_conn *c)
{
    if (c->counted) {
        c->srv->inflight--;
        c->counted = 0;
    }
    c->x = NULL;
}

/* Closes |c|: it stops being usable now and is freed when the pool's callbacks unwind. */
static void conn_close(struct hu_conn *c)
{
    struct gw_http_pool *p = c->srv->pool;

    if (c->dead)
        return;
    if (c->idle)
        idle_unlink(c);
    conn_unbind(c);
    c->dead = 1;
    gw_stream_read(&c->s, 0);
    c->next = p->grave;
    p->grave = c;
}

/* Opens a connection to the server's next address. Returns it, or NULL with |*err| set. */
static struct hu_conn *conn_open(struct hu_server *srv, int *err)
{
    struct gw_http_pool *p = srv->pool;
    const struct hu_addr *a = &srv->addrs[srv->next_addr++ % srv->naddrs];
    struct hu_conn *c = gw_xcalloc(1, sizeof *c);

    c->srv = srv;
    c->addr_gen = srv->addr_gen;
    c->fresh = 1;
    c->connecting = 1;
    if (gw_stream_connect(&c->s, p->base, (const struct sockaddr *)&a->ss, a->len,
                          p->u->connect_ms, conn_on_read, conn_on_drain, conn_on_event,
                          c) != 0) {
        *err = errno ? errno : EIO;
        free(c);
        return NULL;
    }
    /* Refill the request body before the socket runs dry, not after. */
    c->s.lowat = GW_BODY_HIWAT / 2;
    p->nconns++;
    return c;
}

/* Sets the read timeout and restarts it (always needed when a wait starts afresh). */
static void rto_restart(struct hu_conn *c, uint64_t ms)
{
    gw_stream_set_read_timeout(&c->s, ms);
    c->rto_ms = ms;
}

/* Sets the read timeout unless it already has that value: the timer restarts on every read
 * anyway, so with the default timeouts all equal this saves a timer update per request. */
static void rto_change(struct hu_conn *c, uint64_t ms)
{
    if (c->rto_ms != ms)
        rto_restart(c, ms);
}

static struct hu_conn *idle_pop(struct hu_server *srv)
{
    struct hu_conn *c = srv->idle;

    if (c == NULL)
        return NULL;
    idle_unlink(c);
    gw_stream_set_cbs(&c->s, conn_on_read, conn_on_drain, conn_on_event, c);
    return c;
}

/* Puts the finished connection |c| on its server's idle list. Returns 0, or -1 when there is
 * no room (the caller closes it). */
static int idle_push(struct hu_conn *c)
{
    struct hu_server *srv = c->srv;
    const struct gw_upstream_conf *u = srv->pool->u;

    if (srv->pool->closing || srv->nidle >= u->keepalive_conns)
        return -1;
    c->fresh = 0;
    job_release(&c->job);
    memset(&c->job, 0, sizeof c->job);
    /* Reading stays on while idle: the server closing it (EOF) or sending anything unasked
     * must close it now, not fail the next request that picks it. */
    gw_stream_set_cbs(&c->s, idle_on_read, NULL, idle_on_event, c);
    rto_change(c, u->keepalive_ms);
    gw_stream_read(&c->s, 1);
    c->idle = 1;
    c->prev = NULL;
    c->next = srv->idle;
    if (srv->idle != NULL)
        srv->idle->prev = c;
    srv->idle = c;
    srv->nidle++;
    return 0;
}

static void conn_bind(struct hu_conn *c, struct gw_exchange *x, const struct hu_retry *rt)
{
    memset(&c->job, 0, sizeof c->job);
    c->job.rt = *rt;
    c->x = x;
    c->counted = 1;
    c->srv->inflight++;
    x->up_ctx = c;
    x->server = c->srv->conf->address;
    if (x->timed && x->up_start_ms == 0)
        x->up_start_ms = gw_now_ms();
}

/* ---- the request ------------------------------------------------------------------------ */

static int is_framing_field(struct gw_slice n)
{
    switch (n.len) {
    case 4:
        return GW_SLICE_EQ_LIT(n, "host");
    case 6:
        return GW_SLICE_EQ_LIT(n, "expect");
    case 14:
        return GW_SLICE_EQ_LIT(n, "content-length");
    case 17:
        return GW_SLICE_EQ_LIT(n, "transfer-encoding");
    default:
        return 0;
    }
}

/* The X-SSL-Client-* fields (nginx's $ssl_client_verify, _s_dn, _escaped_cert), when the
 * upstream sets tls_client_headers. A client's own fields of these names are always dropped
 * (gw_exchange_drop_header()). */
static const struct gw_tls_info *tls_headers(const struct hu_conn *c)
{
    return c->srv->pool->u->tls_client_headers ? c->x->tls : NULL;
}

static size_t tls_headers_size(const struct gw_tls_info *t)
{
    if (t == NULL)
        return 0;
    return 80 + strlen(t->verify) + (t->s_dn != NULL ? strlen(t->s_dn) : 0) +
           3 * t->cert_pem_len;
}

static char *put_tls_headers(char *w, const struct gw_tls_info *t)
{
    static const char hex[] = "0123456789ABCDEF";

    w = PUT_LIT(w, "X-SSL-Client-Verify: ");
    w = put(w, t->verify, strlen(t->verify));
    w = PUT_LIT(w, "\r\n");
    if (t->s_dn == NULL)
        return w;
    w = PUT_LIT(w, "X-SSL-Client-S-DN: ");
    w = put(w, t->s_dn, strlen(t->s_dn));
    w = PUT_LIT(w, "\r\nX-SSL-Client-Cert: ");
    for (size_t i = 0; i < t->cert_pem_len; i++) {
        unsigned char ch = (unsigned char)t->cert_pem[i];

        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *w++ = (char)ch;
        } else {
            *w++ = '%';
            *w++ = hex[ch >> 4];
            *w++ = hex[ch & 15];
        }
    }
    return PUT_LIT(w, "\r\n");
}

/* Serialises the request head into the out buffer with one reserve/commit: an upper bound
 * is summed first (cheap), then every field is copied once. Returns 0 or -1 (no memory). */
static int write_head(struct hu_conn *c)
{
    const struct gw_exchange *x = c->x;
    const struct gw_req *r = &x->req;
    const struct gw_forwarded *f = x->fwd;
    struct evbuffer_iovec v;
    size_t cap;
    char *w;
    int had_cl = 0;

    cap = r->method.len + r->path.len + r->host.len + f->xff.len + f->proto.len + f->fhost.len +
          f->forwarded.len + f->request_id.len + sizeof WS_UPGRADE_FIELDS + 256 +
          tls_headers_size(tls_headers(c));
    for (size_t i = 0; i < r->nheaders; i++)
        cap += r->headers[i].name.len + r->headers[i].value.len + 4;
    if (evbuffer_reserve_space(c->s.out, (ev_ssize_t)cap, &v, 1) < 1 || v.iov_len < cap)
        return -1;
    w = v.iov_base;
    w = PUT_SLICE(w, r->method);
    *w++ = ' ';
    w = PUT_SLICE(w, r->path);
    w = PUT_LIT(w, " HTTP/1.1\r\nHost: ");
    w = PUT_SLICE(w, r->host);
    w = PUT_LIT(w, "\r\n");
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct h1_header *h = &r->headers[i];
        if (is_framing_field(h->name)) {
            had_cl |= h->name.len == 14;
            continue;
        }
        if (gw_exchange_drop_header(x, h->name))
            continue;
        w = PUT_SLICE(w, h->name);
        w = PUT_LIT(w, ": ");
        w = PUT_SLICE(w, h->value);
        w = PUT_LIT(w, "\r\n");
    }
    w = PUT_FIELD(w, "X-Forwarded-For: ", f->xff);
    w = PUT_FIELD(w, "X-Forwarded-Proto: ", f->proto);
    w = PUT_FIELD(w, "X-Forwarded-Host: ", f->fhost);
    w = PUT_FIELD(w, "Forwarded: ", f->forwarded);
    w = PUT_FIELD(w, "X-Request-Id: ", f->request_id);
    if (tls_headers(c) != NULL)
        w = put_tls_headers(w, tls_headers(c));
    if (x->ws)
        w = PUT_LIT(w, WS_UPGRADE_FIELDS);
    if (r->has_body && r->chunked) {
        w = PUT_LIT(w, "Transfer-Encoding: chunked\r\n");
    } else if (r->has_body || had_cl) {
        /* An explicit "Content-Length: 0" is kept: some servers answer 411 without it. */
        w = PUT_LIT(w, "Content-Length: ");
        w += gw_fmt_u64(w, r->has_body ? r->content_length : 0, 10);
        w = PUT_LIT(w, "\r\n");
    }
    w = PUT_LIT(w, "\r\n");
    v.iov_len = (size_t)(w - (char *)v.iov_base);
    return evbuffer_commit_space(c->s.out, &v, 1) == 0 ? 0 : -1;
}

/* Copies the first |n| bytes of |src| to the replay buffer. Returns 0, or -1 when they would
 * take it over GW_BODY_HIWAT or cannot be copied. */
static int replay_add(struct hu_job *j, struct evbuffer *src, size_t n)
{
    struct evbuffer_iovec v[16];
    int nv;

    if (evbuffer_get_length(j->replay) + n > GW_BODY_HIWAT)
        return -1;
    nv = evbuffer_peek(src, (ev_ssize_t)n, NULL, v, 16);
    if (nv < 0 || nv > 16)
        return -1;
    for (int i = 0; i < nv && n > 0; i++) {
        size_t k = v[i].iov_len < n ? v[i].iov_len : n;
        if (evbuffer_add(j->replay, v[i].iov_base, k) != 0)
            return -1;
        n -= k;
    }
    return n == 0 ? 0 : -1;
}

/* Bytes waiting in x->req_body. A tunnel may start before the downstream created it. */
static size_t req_pending(const struct gw_exchange *x)
{
    return x->req_body != NULL ? evbuffer_get_length(x->req_body) : 0;
}

/* Moves request body bytes into the out buffer up to GW_BODY_HIWAT pending, framing them when
 * chunked, and marks the request sent once it all went; a tunnel's bytes go as they are and
 * never end. Returns the body bytes taken, or -1 when out of memory. */
static ev_ssize_t move_body(struct hu_conn *c)
{
    struct gw_exchange *x = c->x;
    struct hu_job *j = &c->job;
    struct evbuffer *out = c->s.out;
    size_t pending = evbuffer_get_length(out), took = 0;
    int chunked = x->req.chunked;

    while (pending < GW_BODY_HIWAT) {
        size_t n = req_pending(x), room = GW_BODY_HIWAT - pending;
        char line[24];
        int moved;

        if (n > room)
            n = room;
        if (!chunked && !j->tunnel && n > x->req.content_length - j->body_taken)
            n = (size_t)(x->req.content_length - j->body_taken);
        if (n == 0)
            break;
        if (chunked) {
            size_t ll = gw_fmt_u64(line, n, 16);
            line[ll++] = '\r';
            line[ll++] = '\n';
            if (evbuffer_add(out, line, ll) != 0)
                return -1;
            pending += ll + 2;
        }
        if (j->replay != NULL && replay_add(j, x->req_body, n) != 0) {
            evbuffer_free(j->replay); /* too much to keep: a stale connection is a failure */
            j->replay = NULL;
        }
        moved = evbuffer_remove_buffer(x->req_body, out, n);
        if (moved < 0 || (size_t)moved != n)
            return -1;
        if (chunked && evbuffer_add(out, "\r\n", 2) != 0)
            return -1;
        pending += n;
        took += n;
        j->body_taken += n;
    }
    if (j->tunnel)
        return (ev_ssize_t)took;
    if (chunked ? x->req_done && evbuffer_get_length(x->req_body) == 0
                : j->body_taken >= x->req.content_length) {
        /* Request trailers are not forwarded: the last chunk has none. */
        if (chunked && evbuffer_add(out, "0\r\n\r\n", 5) != 0)
            return -1;
        j->req_sent = 1;
        /* The wait for the first byte starts once the whole request is out: a slow client
         * upload is the downstream's body timeout's business, not the server's. */
        if (!j->got_byte)
            rto_restart(c, c->srv->pool->u->first_byte_ms);
    }
    return (ev_ssize_t)took;
}

enum hu_fail {
    F_CONNECT,      /* connect failed: refused, unreachable */
    F_CONNECT_TIMEOUT,
    F_FIRST_BYTE,   /* no response byte within first_byte_ms */
    F_READ_TIMEOUT, /* no byte within read_ms after the first */
    F_SEND_TIMEOUT, /* the server took no request byte within send_ms */
    F_CLOSED,       /* EOF or a socket error after connecting */
    F_PROTO,        /* not a valid HTTP/1 response */
    F_NOMEM,
};

static void conn_fail(struct hu_conn *c, enum hu_fail kind, int err, const char *what);

/* The client half-closed the tunnel: pass that on once every byte it sent went out, so that
 * the server reads them all and may still answer (a WebSocket server's closing frame). */
static void tunnel_half_close(struct hu_conn *c)
{
    struct hu_job *j = &c->job;

    if (j->shut_wr || !c->x->req_done || req_pending(c->x) > 0 ||
        evbuffer_get_length(c->s.out) > 0)
        return;
    j->shut_wr = 1;
    if (shutdown(c->s.fd, SHUT_WR) != 0)
        conn_fail(c, F_CLOSED, errno, "cannot pass the client's half-close on");
}

/* Sends what can be sent of the request body (or tunnel bytes) and tells the downstream.
 * Re-entrant calls (the downstream pushing more from inside req_drained) only ask the outer
 * loop to go again. */
static void pump_body(struct hu_conn *c)
{
    struct gw_exchange *x = c->x;
    struct hu_job *j = &c->job;

    if (j->in_pump) {
        j->pump_again = 1;
        return;
    }
    j->in_pump = 1;
    do {
        ev_ssize_t took = 0;
        size_t queued;
        int wrote;

        j->pump_again = 0;
        if (!j->req_sent)
            took = move_body(c);
        if (took < 0) {
            conn_fail(c, F_NOMEM, ENOMEM, "cannot queue the request body");
            return;
        }
        queued = evbuffer_get_length(c->s.out);
        gw_stream_flush(&c->s);
        wrote = evbuffer_get_length(c->s.out) < queued;
        if (took > 0) {
            gw_exchange_req_drained(x);
            if (c->x != x)
                return; /* cancelled from inside */
        }
        /* A socket that takes everything at once reports no drain later: while bytes move,
         * keep moving them, or a full x->req_body would wait forever. */
        if ((took > 0 || wrote) && !j->req_sent &&
            evbuffer_get_length(c->s.out) < GW_BODY_HIWAT && req_pending(x) > 0)
            j->pump_again = 1;
    } while (j->pump_again);
    j->in_pump = 0;
    if (j->tunnel)
        tunnel_half_close(c);
}

/* The connection is ready (connected, or taken from the idle list): send the head and what
 * there is of the body. */
static void begin_request(struct hu_conn *c)
{
    if (write_head(c) != 0) {
        conn_fail(c, F_NOMEM, ENOMEM, "cannot queue the request head");
        return;
    }
    c->job.head_queued = 1;
    if (!c->x->req.has_body) {
        c->job.req_sent = 1;
        rto_restart(c, c->srv->pool->u->first_byte_ms);
        gw_stream_read(&c->s, 1);
        gw_stream_flush(&c->s);
        return;
    }
    /* A reused connection may turn out stale: keep what is sent of the body (bounded) to
     * send it again. Without memory it simply cannot be retried. */
    if (!c->fresh && c->x->req.idempotent)
        c->job.replay = evbuffer_new();
    /* No read timeout until the whole request is out (move_body then arms first_byte_ms);
     * reading stays on so that an early answer (413, 401) is seen. */
    rto_restart(c, 0);
    gw_stream_read(&c->s, 1);
    pump_body(c);
}

/* Binds |x| to a connection of |srv| (an idle one when |allow_idle|) and starts the request.
 * Returns 0, or an errno when the connect failed at once (logged by the caller; the health
 * failure is already counted). */
static int attempt(struct gw_exchange *x, const struct hu_retry *rt, struct hu_server *srv,
                   int allow_idle)
{
    struct hu_conn *c = allow_idle ? idle_pop(srv) : NULL;
    int err = 0;

    if (c != NULL) {
        conn_bind(c, x, rt);
        begin_request(c);
        return 0;
    }
    c = conn_open(srv, &err);
    if (c == NULL) {
        if (err_is_server_fault(err))
            server_failed(srv);
        return err;
    }
    /* The head is written on GW_STREAM_CONNECTED: a connect failure then leaves x->req_body
     * untouched, so any request may go to another server. */
    conn_bind(c, x, rt);
    return 0;
}

/* Finds a server for |x| and binds it, retrying immediate connect failures within
 * u->retries; else fails |x| (503 when nothing was tried, else |status| and |reason|, the
 * failure that led here). */
static void dispatch(struct gw_http_pool *p, struct gw_exchange *x, struct hu_retry *rt,
                     int status, const char *reason)
{
    for (;;) {
        struct hu_server *srv = select_server(p, rt);
        int err;

        if (srv == NULL) {
            if (rt->tries == 0) {
                gw_log_ctx(GW_LOG_ERROR, x->log_ctx, "upstream %s: %s", p->u->name,
                           R_NO_SERVER);
                gw_exchange_fail(x, 503, R_NO_SERVER);
            } else {
                gw_log_ctx(GW_LOG_ERROR, x->log_ctx, "upstream %s: no server left to retry",
                           p->u->name);
                gw_exchange_fail(x, status, reason);
            }
            return;
        }
        retry_note(rt, srv);
        err = attempt(x, rt, srv, 1);
        if (err == 0)
            return;
        log_failure(x, srv, "connect failed", err, rt->tries <= p->u->retries);
        if (rt->tries > p->u->retries) {
            gw_exchange_fail(x, 502, GW_R_REFUSED);
            return;
        }
        status = 502;
        reason = GW_R_REFUSED;
    }
}

static int fail_is_timeout(enum hu_fail kind)
{
    return kind == F_CONNECT_TIMEOUT || kind == F_FIRST_BYTE || kind == F_READ_TIMEOUT ||
           kind == F_SEND_TIMEOUT;
}

/* The connection failed while bound: log it once, count it against the server when it says
 * something about the server, then retry (stale keep-alive, or a failure before any response
 * byte that may be retried) or fail the exchange. |c| is closed. */
static void conn_fail(struct hu_conn *c, enum hu_fail kind, int err, const char *what)
{
    struct gw_exchange *x = c->x;
    struct hu_server *srv = c->srv;
    struct gw_http_pool *p = srv->pool;
    const struct gw_upstream_conf *u = p->u;
    struct hu_job *j = &c->job;
    struct hu_retry rt = j->rt;
    int head_passed = j->phase != PH_HEAD, untouched = !j->got_byte && !head_passed;
    int status, retry, e;
    const char *reason;

    if (head_passed) {
        status = 502;
        reason = kind == F_READ_TIMEOUT   ? GW_R_MID_TIMEOUT
                 : kind == F_SEND_TIMEOUT ? R_MID_SEND
                 : kind == F_PROTO        ? GW_R_INVALID
                 : kind == F_NOMEM        ? R_NOMEM
                                          : GW_R_MID_CLOSED;
    } else {
        status = fail_is_timeout(kind) ? 504 : 502;
        reason = fail_is_timeout(kind) ? GW_R_TIMEOUT
                 : kind == F_CONNECT   ? GW_R_REFUSED
                 : kind == F_PROTO     ? GW_R_INVALID
                 : kind == F_NOMEM     ? R_NOMEM
                                       : GW_R_CLOSED;
    }

    /* A reused connection the server closed while we picked it: not the server's fault and
     * not a try. Only an idempotent request goes again: the server may have acted on a POST
     * before closing (RFC 9110 §9.2.2). Body bytes already taken go back in front of
     * x->req_body from the replay copy; without one (too much sent) it cannot be retried. */
    if (!c->fresh && kind == F_CLOSED && untouched && x->req.idempotent &&
        (j->body_taken == 0 ||
         (j->replay != NULL && evbuffer_get_length(j->replay) == j->body_taken &&
          evbuffer_prepend_buffer(x->req_body, j->replay) == 0))) {
        gw_log_ctx(GW_LOG_DEBUG, x->log_ctx, "upstream %s server %s: stale keep-alive "
                   "connection, retrying on a new one", u->name, srv->conf->address);
        conn_close(c);
        e = attempt(x, &rt, srv, 0);
        if (e == 0)
            return;
        retry = rt.tries <= u->retries;
        log_failure(x, srv, "connect failed", e, retry);
        if (retry)
            dispatch(p, x, &rt, 502, GW_R_REFUSED);
        else
            gw_exchange_fail(x, 502, GW_R_REFUSED);
        return;
    }

    if (untouched && ((kind == F_CONNECT && err_is_server_fault(err)) ||
                      kind == F_CONNECT_TIMEOUT || kind == F_FIRST_BYTE ||
                      (kind == F_CLOSED && c->fresh)))
        server_failed(srv);
    /* Before connecting nothing reached the server; after, only a request that is safe to
     * repeat and has no body to replay may go again. */
    retry = untouched && rt.tries <= u->retries && kind != F_NOMEM &&
            (kind == F_CONNECT || kind == F_CONNECT_TIMEOUT ||
             (x->req.idempotent && !x->req.has_body));
    log_failure(x, srv, what, err, retry);
    conn_close(c);
    if (retry)
        dispatch(p, x, &rt, status, reason);
    else
        gw_exchange_fail(x, status, reason);
}

/* ---- the response ------------------------------------------------------------------------- */

/* The response is complete: detach first (the downstream may free |x| inside resp_end), then
 * keep the connection for the next request or close it. */
static void conn_finish(struct hu_conn *c)
{
    struct gw_exchange *x = c->x;
    const struct gw_upstream_conf *u = c->srv->pool->u;
    struct hu_trailers *tr = c->job.tr;
    int reuse = c->job.resp_keep_alive && c->job.req_sent &&
                evbuffer_get_length(c->s.out) == 0 && evbuffer_get_length(c->s.in) == 0;

    c->served++;
    if (u->keepalive_requests != 0 && c->served >= u->keepalive_requests)
        reuse = 0;
    /* Busy while its server's name moved: it still goes to where the service was. */
    if (c->addr_gen != c->srv->addr_gen)
        reuse = 0;
    c->job.tr = NULL;
    conn_unbind(c);
    gw_exchange_resp_end(x, tr != NULL ? tr->h : NULL, tr != NULL ? tr->n : 0);
    free(tr);
    if (!reuse || idle_push(c) != 0)
        conn_close(c);
}

static void trailer_add(struct hu_conn *c, struct gw_slice line)
{
    struct hu_trailers *tr = c->job.tr;
    const struct gw_config *cfg = c->x->cfg;
    const char *colon = memchr(line.p, ':', line.len);
    struct gw_slice name, value;

    if (colon == NULL)
        return; /* the decoder validated the line; defensive */
    name.p = line.p;
    name.len = (size_t)(colon - line.p);
    value.p = colon + 1;
    value.len = line.len - name.len - 1;
    while (value.len > 0 && (value.p[0] == ' ' || value.p[0] == '\t')) {
        value.p++;
        value.len--;
    }
    while (value.len > 0 && (value.p[value.len - 1] == ' ' || value.p[value.len - 1] == '\t'))
        value.len--;
    if (h1_is_hop_by_hop(name) || GW_SLICE_EQ_LIT(name, "content-length"))
        return;
    if (tr == NULL) {
        size_t max = cfg->limits.headers, cap = cfg->limits.header_bytes;
        char *m = gw_xmalloc(sizeof *tr + max * sizeof *tr->h + cap);
        tr = (struct hu_trailers *)(void *)m;
        tr->h = (struct h1_header *)(void *)(m + sizeof *tr);
        tr->buf = m + sizeof *tr + max * sizeof *tr->h;
        tr->n = tr->used = 0;
        tr->max = max;
        tr->cap = cap;
        c->job.tr = tr;
    }
    /* Bounded by the decoder's trailer byte limit (header_bytes); checked anyway. */
    if (tr->n >= tr->max || name.len + value.len > tr->cap - tr->used)
        return;
    tr->h[tr->n].name.p = memcpy(tr->buf + tr->used, name.p, name.len);
    tr->h[tr->n].name.len = name.len;
    tr->used += name.len;
    tr->h[tr->n].value.p = value.len ? memcpy(tr->buf + tr->used, value.p, value.len) : "";
    tr->h[tr->n].value.len = value.len;
    tr->used += value.len;
    tr->n++;
}

static void pause_reading(struct hu_conn *c)
{
    c->job.paused = 1;
    gw_stream_read(&c->s, 0);
}

/* Hands over the body bytes in the input. Stops when paused, finished or detached. */
static void deliver_body(struct hu_conn *c)
{
    struct gw_exchange *x = c->x;
    struct hu_job *j = &c->job;
    struct evbuffer *in = c->s.in;

    while (c->x == x && !j->paused) {
        size_t avail = evbuffer_get_length(in);
        int rc;

        if (j->mode == H1_BODY_LENGTH) {
            struct evbuffer *scratch = c->srv->pool->scratch;
            if (avail == 0)
                return;
            if (avail <= j->remaining) {
                j->remaining -= avail;
                rc = gw_exchange_resp_body_buf(x, in);
            } else {
                /* More than the response: the rest is junk and the connection not reused. */
                if (evbuffer_remove_buffer(in, scratch, (size_t)j->remaining) !=
                    (int)j->remaining) {
                    evbuffer_drain(scratch, evbuffer_get_length(scratch));
                    conn_fail(c, F_NOMEM, ENOMEM, "cannot move the response body");
                    return;
                }
                j->remaining = 0;
                rc = gw_exchange_resp_body_buf(x, scratch);
                evbuffer_drain(scratch, evbuffer_get_length(scratch));
            }
            if (c->x != x)
                return;
            if (j->remaining == 0) {
                conn_finish(c);
                return;
            }
            if (rc == 1)
                pause_reading(c);
            return;
        }

        if (j->mode == H1_BODY_UNTIL_CLOSE) {
            if (avail == 0)
                return;
            rc = gw_exchange_resp_body_buf(x, in);
            if (c->x == x && rc == 1)
                pause_reading(c);
            return;
        }

        /* Chunked: decode the input in place, extent by extent. */
        {
            struct evbuffer_iovec v[8];
            int nv, done = 0, stop = 0, join = 0;
            size_t consumed = 0;

        again:
            nv = evbuffer_peek(in, -1, NULL, v, 8);
            consumed = 0;
            if (nv <= 0)
                return;
            if (nv > 8)
                nv = 8;
            for (int i = 0; i < nv && !done && !stop && !join; i++) {
                const char *base = v[i].iov_base;
                size_t len = v[i].iov_len, off = 0;

                while (off < len) {
                    struct gw_slice data = {0};
                    size_t used = 0;
                    int ev = h1_chunked_decode(&j->dec, base + off, len - off, &used, &data);

                    off += used;
                    if (ev < 0) {
                        evbuffer_drain(in, consumed + off);
                        conn_fail(c, F_PROTO, 0, j->dec.err ? j->dec.err : "bad chunked body");
                        return;
                    }
                    if (ev == H1_CHUNK_DATA) {
                        rc = gw_exchange_resp_body(x, data.p, data.len);
                        if (c->x != x)
                            return; /* cancelled: the input dies with the connection */
                        if (rc == 1) {
                            stop = 1;
                            break;
                        }
                    } else if (ev == H1_CHUNK_TRAILER) {
                        trailer_add(c, data);
                    } else if (ev == H1_CHUNK_DONE) {
                        done = 1;
                        break;
                    } else if (ev == H1_CHUNK_NEED) {
                        /* An incomplete trailer line stays unconsumed and must be fed again
                         * with what follows it: make the rest contiguous. */
                        join = off < len && i + 1 < nv;
                        break;
                    }
                }
                consumed += off;
            }
            evbuffer_drain(in, consumed);
            if (join) {
                /* Bounded: the unconsumed line is at most max_trailer_bytes. */
                evbuffer_pullup(in, -1);
                join = 0;
                goto again;
            }
            if (done) {
                conn_finish(c);
                return;
            }
            if (stop) {
                pause_reading(c);
                return;
            }
            if (consumed == 0)
                return;
        }
    }
}

/* A 101 answers only a WebSocket handshake, and must switch to websocket (RFC 6455 §4.1):
 * the downstream announces that protocol to the client itself. */
static int switch_ok(const struct gw_exchange *x, const struct h1_header *h, size_t n)
{
    if (!x->ws)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (GW_SLICE_EQ_LIT(h[i].name, "upgrade") && h1_list_has(h[i].value, "websocket", 9))
            return 1;
    return 0;
}

/* Parses the response head from the input. Returns 1 when the body phase (or the tunnel)
 * began and the exchange is still bound, else 0 (need more, finished, failed or cancelled). */
static int parse_head(struct hu_conn *c)
{
    struct gw_exchange *x = c->x;
    struct hu_job *j = &c->job;
    struct evbuffer *in = c->s.in;
    const struct gw_config *cfg = x->cfg;
    struct h1_limits lim = {
        .header_bytes = cfg->limits.header_bytes,
        .headers = cfg->limits.headers,
        .target_bytes = cfg->limits.header_bytes,
        .body_bytes = 0,
    };
    struct h1_header stack_hdrs[HU_STACK_HDRS];

    for (;;) {
        size_t len = evbuffer_get_length(in);
        struct h1_header *hdrs = stack_hdrs, *heap = NULL;
        struct h1_response resp;
        struct gw_resp r;
        enum h1_body mode;
        const char *p;
        int rc;

        if (len == 0)
            return 0;
        if (len > lim.header_bytes)
            len = lim.header_bytes;
        p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
        if (p == NULL) {
            conn_fail(c, F_NOMEM, ENOMEM, "cannot pull up the response head");
            return 0;
        }
        rc = h1_parse_response(p, len, &lim, hdrs, HU_STACK_HDRS, x->req.head, &resp);
        if (rc == H1_E_TOO_MANY_HEADERS && lim.headers > HU_STACK_HDRS) {
            heap = gw_xmalloc(lim.headers * sizeof *heap);
            hdrs = heap;
            rc = h1_parse_response(p, len, &lim, hdrs, lim.headers, x->req.head, &resp);
        }
        if (rc == H1_INCOMPLETE && len < lim.header_bytes)
            return 0;
        if (rc < 0 || (resp.status == 101 && !switch_ok(x, hdrs, resp.nheaders))) {
            free(heap);
            conn_fail(c, F_PROTO, 0,
                      rc == H1_INCOMPLETE ? "response head too large"
                      : rc < 0            ? (resp.err ? resp.err : "malformed response head")
                      : !x->ws            ? "101 Switching Protocols was not asked for"
                                          : "101 Switching Protocols not to websocket");
            return 0;
        }
        if (resp.status < 200 && resp.status != 101) {
            /* Interim (100, 102, 103, ...): the gateway answers 100-continue itself and does
             * not relay the others. */
            free(heap);
            evbuffer_drain(in, (size_t)rc);
            if (++j->interim > HU_MAX_INTERIM) {
                conn_fail(c, F_PROTO, 0, "too many interim responses");
                return 0;
            }
            continue;
        }

        c->srv->fails = 0;
        /* After a 101 the server's bytes are a body that runs until it closes: the
         * connection is never reused. */
        mode = resp.status == 101 ? H1_BODY_UNTIL_CLOSE : resp.body;
        j->phase = PH_BODY;
        j->mode = mode;
        j->remaining = mode == H1_BODY_LENGTH ? resp.content_length : 0;
        j->resp_keep_alive = resp.keep_alive && mode != H1_BODY_UNTIL_CLOSE;
        j->dec.max_trailer_bytes = lim.header_bytes;
        if (resp.status == 101) {
            /* Set before the head goes down: the downstream may hand over client bytes from
             * inside it. Its request was done (no body); from here req_done means that the
             * client half-closed. */
            j->tunnel = 1;
            j->req_sent = 0;
            x->req_done = 0;
            /* An idle WebSocket is the gateway's pings' business downstream; timeouts.read
             * would cut every quiet one. The send timeout still guards a stuck server. */
            rto_change(c, 0);
        }

        r.status = resp.status;
        r.reason = resp.reason;
        r.headers = hdrs;
        r.nheaders = h1_drop_hop_by_hop(hdrs, resp.nheaders);
        r.has_body = mode != H1_BODY_NONE;
        /* Without a body the length is 0 only when the server said so (Content-Length: 0);
         * for HEAD, 204 and 304 it is unknown here (the field itself is passed on). */
        if (mode == H1_BODY_LENGTH)
            r.content_length = (int64_t)resp.content_length;
        else if (r.has_body || x->req.head || resp.status == 204 || resp.status == 304)
            r.content_length = -1;
        else
            r.content_length = 0;
        /* Nothing more to come, or all of it already read: the body and the end follow in
         * this callback (see deliver_body), and the client gets one write. */
        r.whole = mode == H1_BODY_NONE ||
                  (mode == H1_BODY_LENGTH &&
                   evbuffer_get_length(in) - (size_t)rc >= resp.content_length);
        gw_exchange_resp_head(x, &r);
        free(heap);
        if (c->x != x)
            return 0;
        /* The slices pointed into the input: drained only now. */
        evbuffer_drain(in, (size_t)rc);
        if (j->mode == H1_BODY_NONE) {
            conn_finish(c);
            return 0;
        }
        return 1;
    }
}

static void conn_process(struct hu_conn *c)
{
    struct hu_job *j = &c->job;

    if (j->phase == PH_HEAD) {
        if (evbuffer_get_length(c->s.in) == 0)
            return;
        if (!j->got_byte) {
            j->got_byte = 1;
            if (j->replay != NULL) {
                evbuffer_free(j->replay); /* past the point of retrying */
                j->replay = NULL;
            }
            rto_change(c, c->srv->pool->u->read_ms);
        }
        if (!parse_head(c))
            return;
    }
    deliver_body(c);
}

/* ---- stream callbacks ---------------------------------------------------------------------- */

static void conn_on_read(struct gw_stream *s, void *arg)
{
    struct hu_conn *c = arg;
    struct gw_http_pool *p = c->srv->pool;

    (void)s;
    pool_enter(p);
    if (!c->dead && c->x != NULL && !c->job.paused)
        conn_process(c);
    pool_leave(p);
}

static void conn_on_drain(struct gw_stream *s, void *arg)
{
    struct hu_conn *c = arg;
    struct gw_http_pool *p = c->srv->pool;

    (void)s;
    pool_enter(p);
    if (!c->dead && c->x != NULL && c->job.head_queued && !c->job.req_sent)
        pump_body(c);
    pool_leave(p);
}

static void conn_on_event(struct gw_stream *s, enum gw_stream_what what, void *arg)
{
    struct hu_conn *c = arg;
    struct gw_http_pool *p = c->srv->pool;
    struct hu_job *j = &c->job;

    pool_enter(p);
    if (c->dead || c->x == NULL) {
        /* Not bound: nothing waits on it. */
        conn_close(c);
        pool_leave(p);
        return;
    }
    switch (what) {
    case GW_STREAM_CONNECTED:
        c->connecting = 0;
        gw_stream_set_write_timeout(s, p->u->send_ms);
        begin_request(c);
        break;
    case GW_STREAM_EOF:
        if (j->phase == PH_BODY && j->mode == H1_BODY_UNTIL_CLOSE) {
            j->resp_keep_alive = 0;
            conn_finish(c);
        } else {
            conn_fail(c, F_CLOSED, 0, j->got_byte ? "closed mid-response" : "connection closed");
        }
        break;
    case GW_STREAM_ERROR:
        if (c->connecting)
            conn_fail(c, F_CONNECT, s->err, "connect failed");
        else
            conn_fail(c, F_CLOSED, s->err, "connection error");
        break;
    case GW_STREAM_READ_TIMEOUT:
        if (!j->got_byte)
            conn_fail(c, F_FIRST_BYTE, 0, "no response within timeouts.first_byte");
        else
            conn_fail(c, F_READ_TIMEOUT, 0, "response stalled beyond timeouts.read");
        break;
    case GW_STREAM_WRITE_TIMEOUT:
        if (c->connecting)
            conn_fail(c, F_CONNECT_TIMEOUT, 0, "connect timed out");
        else
            conn_fail(c, F_SEND_TIMEOUT, 0,
                      j->tunnel ? "tunnel bytes not taken within timeouts.send"
                                : "request not taken within timeouts.send");
        break;
    case GW_STREAM_TLS_DONE:
    case GW_STREAM_TLS_FAILED:
        break; /* client streams only */
    }
    pool_leave(p);
}

static void idle_on_read(struct gw_stream *s, void *arg)
{
    struct hu_conn *c = arg;
    struct gw_http_pool *p = c->srv->pool;

    /* Nothing was asked: a byte now is a protocol error or a stray response. */
    (void)s;
    pool_enter(p);
    conn_close(c);
    pool_leave(p);
}

static void idle_on_event(struct gw_stream *s, enum gw_stream_what what, void *arg)
{
    struct hu_conn *c = arg;
    struct gw_http_pool *p = c->srv->pool;

    /* EOF, error or keepalive_ms without use: the connection is done. */
    (void)s;
    (void)what;
    pool_enter(p);
    conn_close(c);
    pool_leave(p);
}

/* ---- exchange ops -------------------------------------------------------------------------- */

static void up_start(struct gw_exchange *x)
{
    struct gw_http_pool *p = x->pool;
    struct hu_retry rt;

    memset(&rt, 0, sizeof rt);
    pool_enter(p);
    dispatch(p, x, &rt, 503, R_NO_SERVER);
    pool_leave(p);
}

static void up_req_body(struct gw_exchange *x)
{
    struct hu_conn *c = x->up_ctx;
    struct gw_http_pool *p = c->srv->pool;

    pool_enter(p);
    /* Before the head is queued (still connecting) the body waits in x->req_body. */
    if (!c->dead && c->x == x && c->job.head_queued && !c->job.req_sent)
        pump_body(c);
    pool_leave(p);
}

static void up_resume(struct gw_exchange *x)
{
    struct hu_conn *c = x->up_ctx;
    struct gw_http_pool *p = c->srv->pool;

    pool_enter(p);
    if (!c->dead && c->x == x && c->job.paused) {
        c->job.paused = 0;
        /* What was read before the pause goes first. */
        deliver_body(c);
        if (!c->dead && c->x == x && !c->job.paused)
            gw_stream_read(&c->s, 1);
    }
    pool_leave(p);
}

static void up_cancel(struct gw_exchange *x)
{
    struct hu_conn *c = x->up_ctx;
    struct gw_http_pool *p = c->srv->pool;

    pool_enter(p);
    /* Mid-exchange the connection's state is unknown: it is never reused. */
    conn_close(c);
    pool_leave(p);
}

const struct gw_upstream_ops gw_http_upstream_ops = {
    .start = up_start,
    .req_body = up_req_body,
    .resume = up_resume,
    .cancel = up_cancel,
};

/* ---- name resolution ------------------------------------------------------------------------ */

static void lookup_on_result(int result, struct evutil_addrinfo *res, void *arg)
{
    struct hu_lookup *lk = arg;
    struct gw_http_pool *p = lk->pool;
    struct hu_server *srv;
    struct hu_addr addrs[HU_MAX_ADDRS];
    size_t n = 0;

    if (p == NULL) {
        /* The pool went first (EVUTIL_EAI_CANCEL): only the lookup is left to free. */
        if (res != NULL)
            evutil_freeaddrinfo(res);
        free(lk);
        return;
    }
    srv = &p->servers[lk->server];
    if (srv->lookup == lk)
        srv->lookup = NULL;
    free(lk);
    if (result == EVUTIL_EAI_CANCEL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    pool_enter(p);
    for (const struct evutil_addrinfo *ai = res; ai != NULL && n < HU_MAX_ADDRS;
         ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof addrs[n].ss)
            continue;
        memcpy(&addrs[n].ss, ai->ai_addr, ai->ai_addrlen);
        addrs[n].len = (socklen_t)ai->ai_addrlen;
        n++;
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (result != 0 || n == 0) {
        /* The old addresses stay: a DNS hiccup must not take a working server away. */
        gw_log_warn("upstream %s server %s: cannot resolve %s: %s%s", p->u->name,
                    srv->conf->address, srv->conf->host,
                    result != 0 ? evutil_gai_strerror(result) : "no usable address",
                    srv->naddrs ? " (keeping the previous addresses)" : "");
    } else {
        int changed = n != srv->naddrs;

        /* Compared as sets: round-robin DNS rotates the order of the same addresses. */
        for (size_t i = 0; i < n && !changed; i++) {
            int found = 0;
            for (size_t k = 0; k < srv->naddrs && !found; k++)
                found = addrs[i].len == srv->addrs[k].len &&
                        memcmp(&addrs[i].ss, &srv->addrs[k].ss, addrs[i].len) == 0;
            changed = !found;
        }
        /* The service moved (a container came back elsewhere): kept connections go to where
         * it was, so they go; new ones follow the answer. */
        if (changed && srv->naddrs > 0) {
            gw_log_info("upstream %s server %s: %s now resolves elsewhere; closing %zu idle "
                        "connections",
                        p->u->name, srv->conf->address, srv->conf->host, srv->nidle);
            while (srv->idle != NULL)
                conn_close(srv->idle);
            /* Busy ones are retired when they finish; the old address's failures say
             * nothing about the new one. */
            srv->addr_gen++;
            srv->fails = 0;
            srv->down_until = 0;
        }
        free(srv->addrs);
        srv->addrs = gw_xmalloc(n * sizeof *srv->addrs);
        memcpy(srv->addrs, addrs, n * sizeof *srv->addrs);
        srv->naddrs = n;
        srv->next_addr = 0;
    }
    pool_leave(p);
}

static void server_resolve(struct hu_server *srv)
{
    struct gw_http_pool *p = srv->pool;
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;
    struct hu_lookup *lk;
    char port[8];

    if (srv->lookup != NULL)
        return; /* the previous lookup is still out */
    if (p->dns == NULL) {
        gw_log_error("upstream %s server %s: no resolver to look up %s", p->u->name,
                     srv->conf->address, srv->conf->host);
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof port, "%u", (unsigned)srv->conf->port);
    lk = gw_xcalloc(1, sizeof *lk);
    lk->pool = p;
    lk->server = (size_t)(srv - p->servers);
    srv->lookup = lk;
    /* The callback may run before this returns (hosts file, cache, immediate error); it then
     * freed |lk| and cleared srv->lookup, and NULL comes back. */
    req = evdns_getaddrinfo(p->dns, srv->conf->host, port, &hints, lookup_on_result, lk);
    if (srv->lookup != NULL) {
        if (req != NULL) {
            lk->req = req;
        } else {
            srv->lookup = NULL;
            free(lk);
        }
    }
}

static void pool_on_resolve_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_http_pool *p = arg;

    (void)fd;
    (void)what;
    pool_enter(p);
    for (size_t i = 0; i < p->nservers; i++)
        if (p->servers[i].conf->unix_path == NULL && !p->servers[i].conf->numeric)
            server_resolve(&p->servers[i]);
    pool_leave(p);
}

/* ---- pool ------------------------------------------------------------------------------------ */

static void server_set_addr(struct hu_server *srv, const void *sa, socklen_t len)
{
    srv->addrs = gw_xcalloc(1, sizeof *srv->addrs);
    memcpy(&srv->addrs[0].ss, sa, len);
    srv->addrs[0].len = len;
    srv->naddrs = 1;
}

/* Unix and numeric servers get their one address at once; names are resolved later. Returns
 * 1 for a name, else 0. */
static int server_init(struct gw_http_pool *p, struct hu_server *srv,
                       const struct gw_server_conf *sc)
{
    srv->pool = p;
    srv->conf = sc;
    if (sc->unix_path != NULL) {
        struct sockaddr_un sa_un;
        size_t n = strlen(sc->unix_path);
        memset(&sa_un, 0, sizeof sa_un);
        if (n >= sizeof sa_un.sun_path) {
            gw_log_error("upstream %s server %s: unix socket path too long", p->u->name,
                         sc->address);
            return 0;
        }
        sa_un.sun_family = AF_UNIX;
        memcpy(sa_un.sun_path, sc->unix_path, n + 1);
        server_set_addr(srv, &sa_un, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1));
        return 0;
    }
    if (sc->numeric) {
        struct sockaddr_storage ss;
        int len = (int)sizeof ss;
        char text[80];
        int tn = snprintf(text, sizeof text, strchr(sc->host, ':') ? "[%s]:%u" : "%s:%u",
                          sc->host, (unsigned)sc->port);
        if (tn < 0 || (size_t)tn >= sizeof text ||
            evutil_parse_sockaddr_port(text, (struct sockaddr *)&ss, &len) != 0) {
            gw_log_error("upstream %s server %s: not a numeric address", p->u->name,
                         sc->address);
            return 0;
        }
        server_set_addr(srv, &ss, (socklen_t)len);
        return 0;
    }
    return 1;
}

struct gw_http_pool *gw_http_pool_new(struct event_base *base, struct evdns_base *dns,
                                      const struct gw_upstream_conf *u)
{
    struct gw_http_pool *p = gw_xcalloc(1, sizeof *p);
    size_t named = 0;

    p->base = base;
    p->dns = dns;
    p->u = u;
    p->nservers = u->nservers;
    p->servers = gw_xcalloc(u->nservers, sizeof *p->servers);
    p->scratch = evbuffer_new();
    if (p->scratch == NULL)
        goto fail;
    for (size_t i = 0; i < u->nservers; i++)
        named += (size_t)server_init(p, &p->servers[i], &u->servers[i]);
    if (named == 0)
        return p;
    if (u->resolve_ms != 0) {
        struct timeval tv = {
            .tv_sec = (time_t)(u->resolve_ms / 1000),
            .tv_usec = (suseconds_t)(u->resolve_ms % 1000 * 1000),
        };
        p->resolve_ev = event_new(base, -1, EV_PERSIST, pool_on_resolve_timer, p);
        if (p->resolve_ev == NULL || event_add(p->resolve_ev, &tv) != 0)
            goto fail;
    }
    /* Through the guard: an immediate answer must not free anything under us. */
    pool_enter(p);
    for (size_t i = 0; i < p->nservers; i++)
        if (u->servers[i].unix_path == NULL && !u->servers[i].numeric)
            server_resolve(&p->servers[i]);
    pool_leave(p);
    return p;
fail:
    gw_log_error("upstream %s: cannot create the connection pool (out of memory)", u->name);
    pool_destroy(p);
    return NULL;
}

static void pool_destroy(struct gw_http_pool *p)
{
    for (size_t i = 0; i < p->nservers; i++) {
        struct hu_server *srv = &p->servers[i];

        while (srv->idle != NULL) {
            struct hu_conn *c = srv->idle;
            idle_unlink(c);
            conn_free(c);
        }
        if (srv->lookup != NULL) {
            struct hu_lookup *lk = srv->lookup;
            /* Orphan first: the callback may run inside the cancel or on a later turn. */
            srv->lookup = NULL;
            lk->pool = NULL;
            if (lk->req != NULL)
                evdns_getaddrinfo_cancel(lk->req);
        }
        free(srv->addrs);
    }
    while (p->grave != NULL) {
        struct hu_conn *c = p->grave;
        p->grave = c->next;
        conn_free(c);
    }
    if (p->nconns != 0)
        gw_log_error("upstream %s: pool freed with %zu connections still bound", p->u->name,
                     p->nconns);
    if (p->resolve_ev != NULL)
        event_free(p->resolve_ev);
    if (p->scratch != NULL)
        evbuffer_free(p->scratch);
    free(p->servers);
    free(p);
}

void gw_http_pool_free(struct gw_http_pool *p)
{
    if (p == NULL)
        return;
    p->closing = 1;
    /* From inside one of the pool's callbacks (a snapshot's last exchange ending in
     * resp_end), the outermost callback frees it on the way out. */
    if (p->depth == 0)
        pool_destroy(p);
}
