/* SPDX-License-Identifier: MIT */
/* The uwsgi upstream driver: buffers the request body, waits for a slot of the upstream's
 * concurrency (queued, in order, across all workers), picks the server with the fewest
 * requests in flight, sends the vars packet and the body, then takes the response off the
 * worker into a spool (memory, then a temporary file) and feeds the client at its own pace. */
#include "adapters/uwsgi/uwsgi_upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

#include "adapters/uwsgi/uwsgi_codec.h"
#include "gateway/h1_parse.h"
#include "gateway/log.h"
#include "gateway/tls.h"
#include "gateway/resolve.h"
#include "gateway/stream.h"
#include "gateway/util.h"

/* Header fields parsed on the stack; a longer response head is parsed again into the heap. */
#define UW_STACK_HDRS 48
/* Bytes moved from the spool to the client per step: the client's output stays near
 * GW_BODY_HIWAT whatever the spool holds. */
#define UW_FEED_STEP (64 * 1024)
/* Vars the gateway adds besides one per request header. */
#define UW_FIXED_VARS 32
/* The targets an exchange remembers having tried. */
#define UW_TRIED_BITS 64
/* Finished jobs a pool keeps, with their buffers and events, for the next exchanges. */
#define UW_SPARE_JOBS 64

static const char R_SPOOL[] = "cannot buffer the body (temporary file)";
static const char R_VARS[] = "request head too large for uwsgi (vars over 64 KiB)";
static const char R_NUL[] = "NUL in path";
static const char R_QUEUE_FULL[] = "upstream queue full";
static const char R_QUEUE_TIMEOUT[] = "upstream queue timed out";

/* A body held for one side: the first bytes in memory up to |limit|, the rest in an unlinked
 * temporary file. Bytes go to memory only while the file holds none, so order is kept. */
struct uw_spool {
    struct evbuffer *mem;
    int fd;                 /* -1 until the first spill */
    uint64_t wpos, rpos;    /* file offsets: written up to, read up to */
    size_t limit;
    const char *dir;        /* borrowed from the snapshot */
};

/* One address to balance over: a numeric or unix: server, or one address a server's host name
 * resolves to. Rebuilt when an answer changes, so a job keeps copies, never a pointer. */
struct uw_target {
    const struct gw_server_conf *conf;  /* borrowed from the snapshot */
    struct gw_addr addr;
    atomic_uint *inflight;              /* exchanges connected or connecting, in every worker
                                           (the gate's counter for this address) */
};

/* Owned by the worker's snapshot runtime (see the header). |depth| counts the pool's
 * callbacks on the stack; gw_uwsgi_pool_free() meanwhile only sets |closing|. */
struct gw_uwsgi_pool {
    struct event_base *base;
    struct gw_gate_box *box;            /* the thread's, borrowed */
    struct gw_gate *gate;               /* one reference */
    const struct gw_upstream_conf *u;
    struct gw_resolve *names;           /* the servers' addresses */
    struct uw_target *targets;          /* owned */
    size_t ntargets;
    unsigned gen;                       /* bumped when |targets| is rebuilt */
    struct uw_job *resolving;           /* waiting for a first answer, linked by |rnext| */
    size_t rr;                          /* tie-break cursor among equally loaded targets */
    size_t njobs;
    struct uw_job *spare;               /* up to UW_SPARE_JOBS, linked through |next_spare| */
    size_t nspare;
    unsigned depth;
    int closing;
};

enum uw_phase { UP_BODY = 0, UP_QUEUED, UP_RESOLVE, UP_CONNECT, UP_WAIT_HEAD, UP_RESP };

/* One exchange's state: x->up_ctx while attached. Freed when detached and no callback of it
 * is on the stack (|refs|). Owns its stream, spools, packet and queue timer; |wait| holds a
 * slot of the gate from dispatch until the worker is done (or the exchange detaches). */
struct uw_job {
    struct gw_uwsgi_pool *pool;
    struct uw_job *next_spare;
    struct gw_exchange *x;              /* NULL once detached */
    struct gw_stream s;
    struct gw_gate_waiter wait;
    struct event *qtimer;               /* queue.timeout while queued, timeouts.connect while
                                           waiting for a name; NULL until first needed */
    struct uw_job *rnext;               /* in pool->resolving */
    uint64_t enter_us;                  /* wall clock when it asked the gate for a slot */
    const struct gw_server_conf *srv;   /* the server connected to, while |inflight| is set */
    atomic_uint *inflight;              /* its address's counter, counted while set */
    struct uw_spool req, resp;
    struct evbuffer *tmp;               /* one feed step, or a body piece short of the input */
    uint8_t *packet;                    /* the vars packet, kept until connected */
    size_t packet_len;
    uint64_t tried;                     /* bit i: target i was tried (in |tried_gen|) */
    unsigned tried_gen;
    unsigned attempts;                  /* connects tried: at most one per target */
    enum uw_phase phase;
    enum h1_body mode;                  /* response framing once the head is in */
    uint64_t remaining;                 /* H1_BODY_LENGTH: bytes still to come */
    unsigned refs;
    unsigned open : 1;                  /* |s| holds a socket */
    unsigned dead : 1;                  /* detached: freed when |refs| drops to 0 */
    unsigned streaming : 1;             /* the response passes through unbuffered */
    unsigned paused : 1;                /* the downstream asked us to stop */
    unsigned worker_done : 1;           /* the whole response is in the spool */
    unsigned req_sent : 1;
    unsigned timing_head : 1;           /* the first_byte timeout runs */
    unsigned in_take : 1, take_again : 1, in_feed : 1;
};

/* ---- spool ------------------------------------------------------------------------------ */

static int spool_init(struct uw_spool *sp, size_t limit, const char *dir)
{
    sp->mem = evbuffer_new();
    sp->fd = -1;
    sp->wpos = sp->rpos = 0;
    sp->limit = limit;
    sp->dir = dir;
    return sp->mem != NULL ? 0 : -1;
}

/* Empties |sp| for another exchange, keeping its memory buffer. */
static void spool_reset(struct uw_spool *sp)
{
    evbuffer_drain(sp->mem, evbuffer_get_length(sp->mem));
    if (sp->fd >= 0)
        close(sp->fd);
    sp->fd = -1;
    sp->wpos = sp->rpos = 0;
}

static void spool_free(struct uw_spool *sp)
{
    if (sp->mem != NULL)
        evbuffer_free(sp->mem);
    sp->mem = NULL;
    if (sp->fd >= 0)
        close(sp->fd);
    sp->fd = -1;
}

static uint64_t spool_len(const struct uw_spool *sp)
{
    return evbuffer_get_length(sp->mem) + (sp->wpos - sp->rpos);
}

static int spool_open(struct uw_spool *sp)
{
    char path[1100];
    int n = snprintf(path, sizeof path, "%s/gatehouse-XXXXXX", sp->dir);

    if (n < 0 || (size_t)n >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    sp->fd = mkstemp(path);
    if (sp->fd < 0)
        return -1;
    /* Unlinked at once: the bytes vanish with the descriptor, whatever happens next. */
    unlink(path);
    fcntl(sp->fd, F_SETFD, FD_CLOEXEC);
    return 0;
}

/* Moves |n| bytes (at most what it holds) from |src| into |sp|. Returns 0, or -1 with errno. */
static int spool_add(struct uw_spool *sp, struct evbuffer *src, size_t n)
{
    size_t have = evbuffer_get_length(src);

    if (n > have)
        n = have;
    if (n == 0)
        return 0;
    if (sp->wpos == sp->rpos && evbuffer_get_length(sp->mem) + n <= sp->limit)
        return evbuffer_remove_buffer(src, sp->mem, n) == (int)n ? 0 : -1;
    if (sp->fd < 0 && spool_open(sp) != 0)
        return -1;
    while (n > 0) {
        struct evbuffer_iovec v;
        size_t k;
        ssize_t w;

        if (evbuffer_peek(src, (ev_ssize_t)n, NULL, &v, 1) < 1)
            return -1;
        k = v.iov_len < n ? v.iov_len : n;
        w = pwrite(sp->fd, v.iov_base, k, (off_t)sp->wpos);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        sp->wpos += (uint64_t)w;
        evbuffer_drain(src, (size_t)w);
        n -= (size_t)w;
    }
    return 0;
}

/* Moves up to |max| bytes from the front of |sp| to |dst|. Returns the count, or -1. */
static ev_ssize_t spool_take(struct uw_spool *sp, struct evbuffer *dst, size_t max)
{
    size_t m = evbuffer_get_length(sp->mem);
    struct evbuffer_iovec v;
    ssize_t r;

    if (m > 0)
        return evbuffer_remove_buffer(sp->mem, dst, m < max ? m : max);
    if (sp->wpos == sp->rpos || max == 0)
        return 0;
    if (max > UW_FEED_STEP)
        max = UW_FEED_STEP;
    if (sp->wpos - sp->rpos < max)
        max = (size_t)(sp->wpos - sp->rpos);
    if (evbuffer_reserve_space(dst, (ev_ssize_t)max, &v, 1) < 1)
        return -1;
    do
        r = pread(sp->fd, v.iov_base, max, (off_t)sp->rpos);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return -1;
    v.iov_len = (size_t)r;
    evbuffer_commit_space(dst, &v, 1);
    sp->rpos += (uint64_t)r;
    if (sp->rpos == sp->wpos) {
        /* Empty again: memory first from here on; give the disk space back. */
        sp->rpos = sp->wpos = 0;
        if (ftruncate(sp->fd, 0) != 0)
            gw_log_warn("uwsgi: cannot truncate a spool file (%s)", strerror(errno));
    }
    return (ev_ssize_t)r;
}

/* ---- pool and job guards ---------------------------------------------------------------- */

static void job_destroy(struct uw_job *j)
{
    gw_stream_close(&j->s);
    spool_free(&j->req);
    spool_free(&j->resp);
    if (j->tmp != NULL)
        evbuffer_free(j->tmp);
    if (j->qtimer != NULL)
        event_free(j->qtimer);
    free(j->packet);
    free(j);
}

static void pool_destroy(struct gw_uwsgi_pool *p)
{
    while (p->spare != NULL) {
        struct uw_job *j = p->spare;
        p->spare = j->next_spare;
        job_destroy(j);
    }
    if (p->njobs != 0)
        gw_log_error("upstream %s: pool freed with %zu exchanges still attached", p->u->name,
                     p->njobs);
    gw_resolve_free(p->names);
    gw_gate_detach(p->gate);
    free(p->targets);
    free(p);
}

/* A finished job goes back to its pool's spares (allocations kept, state cleared), unless
 * the pool is closing or has enough. */
static void job_free(struct uw_job *j)
{
    struct gw_uwsgi_pool *p = j->pool;
    struct uw_job keep;

    p->njobs--;
    if (p->closing || p->nspare >= UW_SPARE_JOBS || j->req.mem == NULL ||
        j->resp.mem == NULL || j->tmp == NULL) {
        job_destroy(j);
        return;
    }
    gw_stream_park(&j->s);
    spool_reset(&j->req);
    spool_reset(&j->resp);
    evbuffer_drain(j->tmp, evbuffer_get_length(j->tmp));
    free(j->packet);
    keep = (struct uw_job){.pool = p, .s = j->s, .req = j->req, .resp = j->resp,
                           .tmp = j->tmp, .qtimer = j->qtimer, .next_spare = p->spare};
    *j = keep;
    p->spare = j;
    p->nspare++;
}

/* A job for a new exchange: a spare, or a new one with its buffers. NULL when out of
 * memory. */
static struct uw_job *job_new(struct gw_uwsgi_pool *p)
{
    const struct gw_upstream_conf *u = p->u;
    struct uw_job *j = p->spare;

    if (j != NULL) {
        p->spare = j->next_spare;
        p->nspare--;
        j->next_spare = NULL;
        return j;
    }
    j = gw_xcalloc(1, sizeof *j);
    j->pool = p;
    j->s.fd = -1;
    j->req.fd = j->resp.fd = -1;
    if (spool_init(&j->req, u->buffer_memory, u->buffer_dir) != 0 ||
        spool_init(&j->resp, u->buffer_memory, u->buffer_dir) != 0 ||
        (j->tmp = evbuffer_new()) == NULL) {
        job_destroy(j);
        return NULL;
    }
    return j;
}

static void job_enter(struct uw_job *j)
{
    j->refs++;
    j->pool->depth++;
}

/* Leaves a callback of |j|; nothing of |j| or its pool may be touched after. */
static void job_leave(struct uw_job *j)
{
    struct gw_uwsgi_pool *p = j->pool;

    if (--j->refs == 0 && j->dead)
        job_free(j);
    if (--p->depth == 0 && p->closing)
        pool_destroy(p);
}

/* Closes the worker connection (the worker sees the close) and frees its server count. */
static void close_worker(struct uw_job *j)
{
    if (j->open) {
        gw_stream_park(&j->s);
        j->open = 0;
    }
    if (j->inflight != NULL) {
        atomic_fetch_sub_explicit(j->inflight, 1, memory_order_relaxed);
        j->inflight = NULL;
        j->srv = NULL;
    }
}

/* The worker is done with the exchange: its slot goes to the next in the queue. */
static void release_worker(struct uw_job *j)
{
    close_worker(j);
    if (j->qtimer != NULL)
        event_del(j->qtimer);
    gw_gate_leave(&j->wait);
}

/* Takes |j| off the list of exchanges waiting for a name. */
static void resolving_remove(struct uw_job *j)
{
    struct uw_job **pp = &j->pool->resolving;

    if (j->phase != UP_RESOLVE)
        return;
    while (*pp != NULL && *pp != j)
        pp = &(*pp)->rnext;
    if (*pp != NULL)
        *pp = j->rnext;
    j->rnext = NULL;
    j->phase = UP_CONNECT;
}

static void detach(struct uw_job *j)
{
    resolving_remove(j);
    release_worker(j);
    j->x = NULL;
    j->dead = 1;
}

static void finish(struct uw_job *j)
{
    struct gw_exchange *x = j->x;

    detach(j);
    gw_exchange_resp_end(x, NULL, 0);
}

static void fail(struct uw_job *j, int status, const char *reason, const char *what, int err)
{
    struct gw_exchange *x = j->x;

    gw_log_ctx(GW_LOG_ERROR, x->log_ctx, "upstream %s server %s: %s%s%s%s", j->pool->u->name,
               j->srv != NULL ? j->srv->address : "-", what, err ? " (" : "",
               err ? strerror(err) : "", err ? ")" : "");
    detach(j);
    gw_exchange_fail(x, status, reason);
}

/* ---- the vars packet -------------------------------------------------------------------- */

/* Bytes of packet allowed for each var the gateway adds itself: two lengths, a key of at most
 * 32 bytes and a short value (a number, "on", a port, "HTTP/1.1"). */
#define UW_FIXED_VAR_BYTES (4 + 32 + 32)

static void var(struct uwsgi_writer *w, const char *key, size_t key_len, const char *val,
                size_t val_len)
{
    uwsgi_item(w, key, key_len);
    uwsgi_item(w, val, val_len);
}

#define VAR(w, lit, p, n) var((w), (lit), sizeof(lit) - 1, (p), (n))
#define VAR_SLICE(w, lit, s) var((w), (lit), sizeof(lit) - 1, (s).p, (s).len)

/* A decimal var, after |prefix| ("" or "t="). */
static void var_u64(struct uwsgi_writer *w, const char *key, size_t key_len, uint64_t v,
                    const char *prefix)
{
    size_t n = strlen(prefix);
    char *p;

    uwsgi_item(w, key, key_len);
    p = uwsgi_item_begin(w, n + 20);
    if (p == NULL)
        return;
    memcpy(p, prefix, n);
    uwsgi_item_end(w, n + gw_fmt_u64(p + n, v, 10));
}

#define VAR_U64(w, lit, v, prefix) var_u64((w), (lit), sizeof(lit) - 1, (v), (prefix))

/* The value of every field named like field |first| (the first of its name), joined with
 * |sep|, as one item. */
static void var_joined(struct uwsgi_writer *w, const struct gw_req *q, size_t first,
                       const char *sep, size_t seplen)
{
    struct gw_slice name = q->headers[first].name;
    size_t max = 0, n = 0;
    char *p;

    for (size_t i = first; i < q->nheaders; i++)
        if (gw_slice_eq_ci(q->headers[i].name, name.p, name.len))
            max += q->headers[i].value.len + seplen;
    p = uwsgi_item_begin(w, max);
    if (p == NULL)
        return;
    for (size_t i = first; i < q->nheaders; i++) {
        if (!gw_slice_eq_ci(q->headers[i].name, name.p, name.len))
            continue;
        if (n > 0) {
            memcpy(p + n, sep, seplen);
            n += seplen;
        }
        memcpy(p + n, q->headers[i].value.p, q->headers[i].value.len);
        n += q->headers[i].value.len;
    }
    uwsgi_item_end(w, n);
}

static uint64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Adds SERVER_NAME and SERVER_PORT from the request's authority. */
static void server_vars(struct uwsgi_writer *w, const struct gw_exchange *x)
{
    struct gw_slice h = x->req.host, name = h, port = {NULL, 0};
    int https = strcmp(x->scheme, "https") == 0;

    if (h.len > 0 && h.p[0] == '[') {
        const char *rb = memchr(h.p, ']', h.len);
        if (rb != NULL) {
            name.len = (size_t)(rb + 1 - h.p);
            if ((size_t)(rb + 1 - h.p) < h.len && rb[1] == ':')
                port = (struct gw_slice){rb + 2, h.len - (size_t)(rb + 2 - h.p)};
        }
    } else {
        const char *colon = h.len > 0 ? memchr(h.p, ':', h.len) : NULL;
        if (colon != NULL) {
            name.len = (size_t)(colon - h.p);
            port = (struct gw_slice){colon + 1, h.len - name.len - 1};
        }
    }
    /* Without a Host the listener's address would do; the exchange does not carry it. */
    if (name.len == 0)
        name = (struct gw_slice){"localhost", 9};
    if (port.len == 0)
        port = https ? (struct gw_slice){"443", 3} : (struct gw_slice){"80", 2};
    VAR_SLICE(w, "SERVER_NAME", name);
    VAR_SLICE(w, "SERVER_PORT", port);
}

/* Adds an HTTP_* var for each request field, repeated fields joined into their first. */
static void header_vars(struct uwsgi_writer *w, const struct gw_exchange *x)
{
    const struct gw_req *q = &x->req;

    for (size_t i = 0; i < q->nheaders; i++) {
        struct gw_slice name = q->headers[i].name;
        size_t k, vn;
        int seen = 0;
        char *key;

        /* X-Request-Start is the gateway's to say (below). */
        if (gw_exchange_drop_header(x, name) || GW_SLICE_EQ_LIT(name, "Content-Length") ||
            GW_SLICE_EQ_LIT(name, "X-Request-Start"))
            continue;
        for (k = 0; k < i && !seen; k++)
            seen = gw_slice_eq_ci(q->headers[k].name, name.p, name.len);
        if (seen)
            continue; /* joined with its first occurrence */
        key = uwsgi_item_begin(w, name.len + 5);
        if (key == NULL)
            return;
        vn = uwsgi_header_var(key, name.len + 5, name.p, name.len);
        if (vn == 0) {
            uwsgi_item_cancel(w); /* an underscore or other odd byte: dropped */
            continue;
        }
        uwsgi_item_end(w, vn);
        if (GW_SLICE_EQ_LIT(name, "Cookie"))
            var_joined(w, q, i, "; ", 2);
        else
            var_joined(w, q, i, ", ", 2);
    }
}

/* The length of |s| (NULL: 0). */
static size_t slen(const char *s)
{
    return s != NULL ? strlen(s) : 0;
}

/* mod_ssl's names for the TLS facts of a TLS client (SSL_CLIENT_* with a certificate). */
static void tls_vars(struct uwsgi_writer *w, const struct gw_tls_info *t)
{
    VAR(w, "SSL_PROTOCOL", t->protocol, strlen(t->protocol));
    VAR(w, "SSL_CIPHER", t->cipher, strlen(t->cipher));
    VAR(w, "SSL_CLIENT_VERIFY", t->verify, strlen(t->verify));
    if (t->s_dn == NULL)
        return;
    VAR(w, "SSL_CLIENT_S_DN", t->s_dn, strlen(t->s_dn));
    VAR(w, "SSL_CLIENT_I_DN", t->i_dn, strlen(t->i_dn));
    VAR(w, "SSL_CLIENT_M_SERIAL", t->serial, strlen(t->serial));
    VAR(w, "SSL_CLIENT_CERT", t->cert_pem, t->cert_pem_len);
}

/* A bound of the packet's size for x: every var the gateway may add, at its longest. */
static size_t packet_bound(const struct gw_exchange *x)
{
    const struct gw_req *q = &x->req;
    const struct gw_forwarded *f = x->fwd;
    size_t n = UWSGI_HDR_LEN + UW_FIXED_VARS * UW_FIXED_VAR_BYTES + q->method.len +
               q->target.len + 2 * q->path.len + x->route->path_len + 2 * q->host.len +
               f->client_ip.len + f->xff.len + f->proto.len + f->fhost.len +
               f->forwarded.len + f->request_id.len;

    if (x->tls != NULL) {
        const struct gw_tls_info *t = x->tls;

        n += 8 * (UWSGI_VAR_OVERHEAD + 20) + slen(t->protocol) + slen(t->cipher) +
             slen(t->verify) + slen(t->s_dn) + slen(t->i_dn) + slen(t->serial) +
             t->cert_pem_len;
    }
    /* Each field: its CGI name ("HTTP_" + name), its value and a separator, two lengths. */
    for (size_t i = 0; i < q->nheaders; i++)
        n += UWSGI_VAR_OVERHEAD + 5 + q->headers[i].name.len + q->headers[i].value.len + 2;
    return n;
}

/* Builds the packet for x into j->packet. Returns 0, or the HTTP status to fail with. */
static int build_packet(struct uw_job *j, const char **reason)
{
    const struct gw_exchange *x = j->x;
    const struct gw_req *q = &x->req;
    const struct gw_route_conf *rt = x->route;
    size_t cap = packet_bound(x), written;
    struct uwsgi_writer w;
    struct gw_slice path = q->path, query = {"", 0}, addr;
    const char *qm;
    char *p;
    int has_nul = 0, peer_addr;

    j->packet = gw_xmalloc(cap);
    uwsgi_writer_init(&w, j->packet, cap);
    qm = memchr(path.p, '?', path.len);
    if (qm != NULL) {
        query = (struct gw_slice){qm + 1, path.len - (size_t)(qm + 1 - path.p)};
        path.len = (size_t)(qm - path.p);
    }
    VAR_SLICE(&w, "REQUEST_METHOD", q->method);
    VAR_SLICE(&w, "REQUEST_URI", q->target);
    uwsgi_item(&w, "PATH_INFO", 9);
    p = uwsgi_item_begin(&w, path.len);
    if (p != NULL)
        uwsgi_item_end(&w, uwsgi_percent_decode(p, path.p, path.len, &has_nul));
    VAR_SLICE(&w, "QUERY_STRING", query);
    if (rt->strip_prefix && !(rt->path_len == 1 && rt->path[0] == '/'))
        VAR(&w, "SCRIPT_NAME", rt->path, rt->path_len);
    else
        VAR(&w, "SCRIPT_NAME", "", 0);
    if (q->h2)
        VAR(&w, "SERVER_PROTOCOL", "HTTP/2", 6);
    else
        VAR(&w, "SERVER_PROTOCOL", q->minor ? "HTTP/1.1" : "HTTP/1.0", 8);
    if (q->has_body || spool_len(&j->req) > 0 || q->method.len != 3 ||
        memcmp(q->method.p, "GET", 3) != 0)
        VAR_U64(&w, "CONTENT_LENGTH", spool_len(&j->req), "");
    addr = gw_exchange_client_addr(x, &peer_addr);
    VAR_SLICE(&w, "REMOTE_ADDR", addr);
    if (peer_addr && x->fwd->client_port != 0)
        VAR_U64(&w, "REMOTE_PORT", x->fwd->client_port, "");
    server_vars(&w, x);
    VAR(&w, "REQUEST_SCHEME", x->scheme, strlen(x->scheme));
    if (strcmp(x->scheme, "https") == 0)
        VAR(&w, "HTTPS", "on", 2);
    if (x->tls != NULL)
        tls_vars(&w, x->tls);
    header_vars(&w, x);
    VAR_SLICE(&w, "HTTP_X_FORWARDED_FOR", x->fwd->xff);
    VAR_SLICE(&w, "HTTP_X_FORWARDED_PROTO", x->fwd->proto);
    if (x->fwd->fhost.len > 0)
        VAR_SLICE(&w, "HTTP_X_FORWARDED_HOST", x->fwd->fhost);
    VAR_SLICE(&w, "HTTP_FORWARDED", x->fwd->forwarded);
    VAR_SLICE(&w, "HTTP_X_REQUEST_ID", x->fwd->request_id);
    /* When the request was whole and about to ask for a slot: the app's "now - t" is the
     * time it spent queued (the convention of X-Request-Start readers such as APM agents). */
    VAR_U64(&w, "HTTP_X_REQUEST_START", j->enter_us, "t=");

    if (has_nul) {
        *reason = R_NUL;
        return 400;
    }
    if (uwsgi_writer_finish(&w, 0, 0, &written) != UWSGI_OK) {
        *reason = R_VARS;
        return 431;
    }
    j->packet_len = written;
    return 0;
}

/* ---- connecting ------------------------------------------------------------------------- */

static void on_read(struct gw_stream *s, void *arg);
static void on_drain(struct gw_stream *s, void *arg);
static void on_event(struct gw_stream *s, enum gw_stream_what what, void *arg);
static void on_connected(struct uw_job *j);

/* The untried target with the fewest exchanges in flight; ties go round the cursor. */
static struct uw_target *pick(struct uw_job *j, size_t *idx)
{
    struct gw_uwsgi_pool *p = j->pool;
    struct uw_target *best = NULL;

    for (size_t k = 0; k < p->ntargets; k++) {
        size_t i = (p->rr + k) % p->ntargets;
        struct uw_target *t = &p->targets[i];

        if (i < UW_TRIED_BITS && (j->tried >> i & 1))
            continue;
        if (best == NULL || atomic_load_explicit(t->inflight, memory_order_relaxed) <
                                atomic_load_explicit(best->inflight, memory_order_relaxed)) {
            best = t;
            *idx = i;
        }
    }
    if (best != NULL)
        p->rr = (*idx + 1) % p->ntargets;
    return best;
}

static void on_queue_timeout(evutil_socket_t fd, short what, void *arg);

/* No target is left but a host name has its first lookup out: |j| waits for the answer, at
 * most timeouts.connect (its slot stays held, as while connecting). */
static void wait_for_names(struct uw_job *j)
{
    struct gw_uwsgi_pool *p = j->pool;
    struct timeval tv;

    j->phase = UP_RESOLVE;
    j->rnext = p->resolving;
    p->resolving = j;
    if (j->qtimer == NULL)
        j->qtimer = evtimer_new(p->base, on_queue_timeout, j);
    if (j->qtimer != NULL && evtimer_pending(j->qtimer, NULL))
        return; /* woken once already: the first deadline stands */
    tv.tv_sec = (time_t)(p->u->connect_ms / 1000);
    tv.tv_usec = (suseconds_t)(p->u->connect_ms % 1000 * 1000);
    if (j->qtimer == NULL || evtimer_add(j->qtimer, &tv) != 0) {
        fail(j, 502, GW_R_REFUSED, "cannot arm the resolve timer (out of memory)", 0);
        return;
    }
}

/* Connects to the next target; when none is left waits for a first answer for a host name,
 * or fails x with |status| and |reason| (the failure that led here), or 502 when nothing could
 * be tried at all. */
static void connect_next(struct uw_job *j, int status, const char *reason)
{
    struct gw_uwsgi_pool *p = j->pool;
    struct gw_exchange *x = j->x;
    int now = 0;

    /* The targets were rebuilt since the last try: indices mean other addresses now. */
    if (j->tried_gen != p->gen) {
        j->tried = 0;
        j->tried_gen = p->gen;
    }
    while (j->attempts < p->ntargets) {
        size_t idx = 0;
        struct uw_target *t = pick(j, &idx);

        if (t == NULL)
            break;
        j->attempts++;
        if (idx < UW_TRIED_BITS)
            j->tried |= (uint64_t)1 << idx;
        x->server = t->conf->address;
        if (gw_stream_connect_now(&j->s, p->base, (const struct sockaddr *)&t->addr.ss,
                                  t->addr.len, p->u->connect_ms, on_read, on_drain, on_event, j,
                                  &now) != 0) {
            int err = errno;
            gw_log_ctx(GW_LOG_WARN, x->log_ctx, "upstream %s server %s: connect failed (%s)",
                       p->u->name, t->conf->address, strerror(err));
            status = 502;
            reason = GW_R_REFUSED;
            continue;
        }
        j->open = 1;
        j->srv = t->conf;
        j->inflight = t->inflight;
        atomic_fetch_add_explicit(j->inflight, 1, memory_order_relaxed);
        j->s.lowat = GW_BODY_HIWAT / 2;
        j->phase = UP_CONNECT;
        /* A unix socket connects within the call: the packet goes out in this loop turn,
         * before the worker, woken in accept(), asks for it. */
        if (now)
            on_connected(j);
        return;
    }
    if (gw_resolve_waiting(p->names)) {
        wait_for_names(j);
        return;
    }
    if (gw_resolve_log_unresolved(p->names, p->u, x->log_ctx, "") > 0 && j->attempts == 0) {
        status = 502;
        reason = GW_R_UNRESOLVED;
    } else {
        gw_log_ctx(GW_LOG_ERROR, x->log_ctx, "upstream %s: no server left to try", p->u->name);
    }
    detach(j);
    gw_exchange_fail(x, status, reason);
}

/* Puts the time since dispatch into the access log (a stepped clock counts as 0). */
static void note_queue_time(struct uw_job *j)
{
    uint64_t now = wall_us();

    j->x->queue_us = now > j->enter_us ? (int64_t)(now - j->enter_us) : 0;
}

/* Holds a slot: connect. */
static void send_off(struct uw_job *j)
{
    j->phase = UP_CONNECT;
    note_queue_time(j);
    if (j->x->timed && j->x->up_start_ms == 0)
        j->x->up_start_ms = gw_now_ms();
    connect_next(j, 502, GW_R_REFUSED);
}

static struct uw_job *job_of(struct gw_gate_waiter *w)
{
    return (struct uw_job *)(void *)((char *)w - offsetof(struct uw_job, wait));
}

/* A slot freed up for a queued exchange (on its own thread). */
static void on_granted(struct gw_gate_waiter *w)
{
    struct uw_job *j = job_of(w);

    job_enter(j);
    event_del(j->qtimer);
    /* A detached job has left the gate, so no grant can reach it; the check is cheap. */
    if (j->x != NULL && j->phase == UP_QUEUED)
        send_off(j);
    else
        gw_gate_leave(&j->wait);
    job_leave(j);
}

/* Answers 503 with Retry-After: no slot for |j| now (|what| says why, for the log). */
static void fail_busy(struct uw_job *j, const char *reason, const char *what)
{
    struct gw_exchange *x = j->x;
    uint64_t ra = j->pool->u->retry_after_ms;

    gw_log_ctx(GW_LOG_WARN, x->log_ctx, "upstream %s: %s; answering 503", j->pool->u->name,
               what);
    x->retry_after_s = (unsigned)((ra + 999) / 1000);
    note_queue_time(j);
    detach(j);
    gw_exchange_fail(x, 503, reason);
}

static void on_queue_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct uw_job *j = arg;

    (void)fd;
    (void)what;
    job_enter(j);
    if (j->x != NULL && j->phase == UP_RESOLVE) {
        struct gw_exchange *x = j->x;

        resolving_remove(j);
        gw_resolve_log_unresolved(j->pool->names, j->pool->u, x->log_ctx,
                                  " (no answer within timeouts.connect)");
        detach(j);
        gw_exchange_fail(x, 504, GW_R_TIMEOUT);
    } else if (j->x != NULL && j->phase == UP_QUEUED && gw_gate_unqueue(&j->wait)) {
        /* Granted meanwhile: on_granted() is on its way through the box; let it run. */
        fail_busy(j, R_QUEUE_TIMEOUT, "no slot within queue.timeout");
    }
    job_leave(j);
}

/* The whole request body is in the spool: build the packet (a request the worker would
 * refuse is refused before it waits), then ask the upstream's gate for a slot. */
static void dispatch(struct uw_job *j)
{
    struct gw_uwsgi_pool *p = j->pool;
    struct timeval tv;
    const char *reason = NULL;
    int status;

    j->enter_us = wall_us();
    status = build_packet(j, &reason);
    if (status != 0) {
        struct gw_exchange *x = j->x;
        gw_log_ctx(GW_LOG_INFO, x->log_ctx, "upstream %s: %s", p->u->name, reason);
        detach(j);
        gw_exchange_fail(x, status, reason);
        return;
    }
    switch (gw_gate_enter(p->gate, &j->wait, p->box, on_granted)) {
    case GW_GATE_PASS:
        send_off(j);
        return;
    case GW_GATE_FULL:
        fail_busy(j, R_QUEUE_FULL, "queue full (queue.limit)");
        return;
    case GW_GATE_QUEUED:
        break;
    }
    j->phase = UP_QUEUED;
    if (j->qtimer == NULL)
        j->qtimer = evtimer_new(p->base, on_queue_timeout, j);
    tv.tv_sec = (time_t)(p->u->queue_timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)(p->u->queue_timeout_ms % 1000 * 1000);
    if (j->qtimer == NULL || evtimer_add(j->qtimer, &tv) != 0)
        fail_busy(j, R_QUEUE_FULL, "cannot arm the queue timer (out of memory)");
}

/* Takes what the client sent so far into the request spool; dispatches once it is whole. */
static void take_body(struct uw_job *j)
{
    struct gw_exchange *x;

    if (j->in_take) {
        j->take_again = 1; /* req_drained() read more of the client and called back */
        return;
    }
    j->in_take = 1;
    do {
        size_t n;

        j->take_again = 0;
        x = j->x;
        if (x == NULL || x->req_body == NULL)
            break;
        n = evbuffer_get_length(x->req_body);
        if (n == 0)
            break;
        if (spool_add(&j->req, x->req_body, n) != 0) {
            j->in_take = 0;
            fail(j, 503, R_SPOOL, "cannot buffer the request body", errno);
            return;
        }
        gw_exchange_req_drained(x);
    } while (j->take_again && j->x != NULL);
    j->in_take = 0;
    x = j->x;
    if (x == NULL || j->phase != UP_BODY)
        return;
    if (x->req_body == NULL || (x->req_done && evbuffer_get_length(x->req_body) == 0))
        dispatch(j);
}

/* ---- sending ---------------------------------------------------------------------------- */

static void pump_request(struct uw_job *j)
{
    struct evbuffer *out = j->s.out;

    /* A flush that empties |out| arms nothing, so no drain callback would follow: refill
     * until the socket pushes back (EV_WRITE armed) or the body is all out. */
    for (;;) {
        while (!j->req_sent && evbuffer_get_length(out) < GW_BODY_HIWAT) {
            if (spool_len(&j->req) == 0) {
                j->req_sent = 1;
                break;
            }
            if (spool_take(&j->req, out, GW_BODY_HIWAT - evbuffer_get_length(out)) < 0) {
                fail(j, 502, R_SPOOL, "cannot read the request body back", errno);
                return;
            }
        }
        gw_stream_flush(&j->s);
        if (j->req_sent && !j->s.writing && !j->timing_head && j->phase == UP_WAIT_HEAD) {
            j->timing_head = 1;
            gw_stream_set_read_timeout(&j->s, j->pool->u->first_byte_ms);
        }
        if (j->req_sent || j->s.writing || j->s.failed)
            return;
    }
}

/* ---- the response ----------------------------------------------------------------------- */

/* Rewrites a CGI "Status: 200 OK" first line, or uWSGI's "HTTP/2 200 OK", into an HTTP/1.1
 * status line. Returns 1 when the input
 * starts with a status line now, 0 when more bytes are needed, -1 when it is garbage. */
static int cgi_status(struct uw_job *j, size_t max_head)
{
    struct evbuffer *in = j->s.in;
    struct evbuffer_ptr eol;
    size_t len = evbuffer_get_length(in), eol_len = 0, n;
    char first[7], *line;

    if (evbuffer_copyout(in, first, len < 7 ? len : 7) < 0)
        return -1;
    if (len < 7) {
        /* Too short to tell unless it already differs from both forms. */
        return (first[0] == 'H' || first[0] == 'S' || first[0] == 's') ? 0 : 1;
    }
    if (memcmp(first, "HTTP/2", 6) == 0 && (first[6] == ' ' || first[6] == '.')) {
        /* uWSGI answers with the SERVER_PROTOCOL it was given ("HTTP/2" for an HTTP/2
         * client): the status line is read as HTTP/1.1's, as nginx reads it. */
        size_t vlen = first[6] == ' ' ? 6 : 8;
        char head[8];

        if (len < vlen + 1 || evbuffer_copyout(in, head, vlen + 1) < 0)
            return 0;
        if (head[vlen] != ' ')
            return -1;
        evbuffer_drain(in, vlen);
        return evbuffer_prepend(in, "HTTP/1.1", 8) == 0 ? 1 : -1;
    }
    if (!(memcmp(first, "Status:", 7) == 0 || memcmp(first, "status:", 7) == 0))
        return 1;
    eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
    if (eol.pos < 0)
        return len > max_head ? -1 : 0;
    n = (size_t)eol.pos;
    line = (char *)evbuffer_pullup(in, (ev_ssize_t)(n + eol_len));
    if (line == NULL || n > 256)
        return -1;
    {
        char out[300];
        size_t v = 7, k;

        while (v < n && (line[v] == ' ' || line[v] == '\t'))
            v++;
        k = (size_t)snprintf(out, sizeof out, "HTTP/1.1 %.*s%s\r\n", (int)(n - v), line + v,
                             memchr(line + v, ' ', n - v) != NULL ? "" : " ");
        evbuffer_drain(in, n + eol_len);
        if (evbuffer_prepend(in, out, k) != 0)
            return -1;
    }
    return 1;
}

/* Notes whether the body must stream through; removes hop-by-hop fields (and those the
 * Connection field names) in place. */
static size_t filter_headers(struct uw_job *j, struct h1_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (GW_SLICE_EQ_LIT(h[i].name, "Content-Type") && h[i].value.len >= 17 &&
            gw_slice_eq_ci((struct gw_slice){h[i].value.p, 17}, "text/event-stream", 17))
            j->streaming = 1;
        if (GW_SLICE_EQ_LIT(h[i].name, "X-Accel-Buffering") &&
            GW_SLICE_EQ_LIT(h[i].value, "no"))
            j->streaming = 1;
    }
    return h1_drop_hop_by_hop(h, n);
}

static void feed(struct uw_job *j);
static void relay(struct uw_job *j);

/* Parses the response head. Returns 1 when the body phase began, else 0. */
static int parse_head(struct uw_job *j)
{
    struct gw_exchange *x = j->x;
    struct evbuffer *in = j->s.in;
    const struct gw_config *cfg = x->cfg;
    struct h1_limits lim = {
        .header_bytes = cfg->limits.header_bytes,
        .headers = cfg->limits.headers,
        .target_bytes = cfg->limits.header_bytes,
        .body_bytes = 0,
    };
    struct h1_header stack_hdrs[UW_STACK_HDRS], *hdrs = stack_hdrs, *heap = NULL;
    struct h1_response resp;
    struct gw_resp r;
    size_t len;
    const char *p;
    int rc;

    for (;;) {
        rc = cgi_status(j, lim.header_bytes);
        if (rc <= 0) {
            if (rc < 0)
                fail(j, 502, GW_R_INVALID, "malformed CGI Status line", 0);
            return 0;
        }
        len = evbuffer_get_length(in);
        if (len > lim.header_bytes)
            len = lim.header_bytes;
        p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
        if (p == NULL) {
            fail(j, 502, GW_R_INVALID, "cannot pull up the response head", ENOMEM);
            return 0;
        }
        rc = h1_parse_response(p, len, &lim, hdrs, UW_STACK_HDRS, x->req.head, &resp);
        if (rc == H1_E_TOO_MANY_HEADERS && lim.headers > UW_STACK_HDRS) {
            heap = gw_xmalloc(lim.headers * sizeof *heap);
            hdrs = heap;
            rc = h1_parse_response(p, len, &lim, hdrs, lim.headers, x->req.head, &resp);
        }
        if (rc == H1_INCOMPLETE && len < lim.header_bytes) {
            free(heap);
            return 0;
        }
        if (rc < 0 || resp.status == 101 || resp.body == H1_BODY_CHUNKED) {
            free(heap);
            fail(j, 502, GW_R_INVALID,
                 rc == H1_INCOMPLETE   ? "response head too large"
                 : rc < 0              ? (resp.err ? resp.err : "malformed response head")
                 : resp.status == 101 ? "101 Switching Protocols from a uwsgi server"
                                       : "chunked response from a uwsgi server",
                 0);
            return 0;
        }
        if (resp.status < 200) {
            /* Interim responses are not relayed (the gateway answers 100-continue). */
            free(heap);
            heap = NULL;
            hdrs = stack_hdrs;
            evbuffer_drain(in, (size_t)rc);
            continue;
        }
        break;
    }
    j->phase = UP_RESP;
    j->mode = resp.body;
    j->remaining = resp.body == H1_BODY_LENGTH ? resp.content_length : 0;
    r.status = resp.status;
    r.reason = resp.reason;
    r.headers = hdrs;
    r.nheaders = filter_headers(j, hdrs, resp.nheaders);
    r.has_body = resp.body != H1_BODY_NONE;
    if (resp.body == H1_BODY_LENGTH)
        r.content_length = (int64_t)resp.content_length;
    else if (r.has_body || x->req.head || resp.status == 204 || resp.status == 304)
        r.content_length = -1;
    else
        r.content_length = 0;
    r.whole = 0;
    gw_exchange_resp_head(x, &r);
    free(heap);
    if (j->x != x)
        return 0;
    evbuffer_drain(in, (size_t)rc);
    if (j->mode == H1_BODY_NONE) {
        finish(j);
        return 0;
    }
    gw_stream_set_read_timeout(&j->s, j->pool->u->read_ms);
    return 1;
}

/* Streaming: passes what was read straight to the client; stops reading when it is slow. */
static void relay(struct uw_job *j)
{
    struct evbuffer *in = j->s.in;
    size_t n = evbuffer_get_length(in);
    int pause;

    if (j->mode == H1_BODY_LENGTH && n > j->remaining)
        n = (size_t)j->remaining;
    if (n > 0) {
        if (n == evbuffer_get_length(in)) {
            pause = gw_exchange_resp_body_buf(j->x, in);
        } else {
            evbuffer_remove_buffer(in, j->tmp, n);
            pause = gw_exchange_resp_body_buf(j->x, j->tmp);
        }
        if (j->x == NULL)
            return;
        j->remaining -= j->mode == H1_BODY_LENGTH ? n : 0;
        if (pause) {
            j->paused = 1;
            gw_stream_read(&j->s, 0);
        }
    }
    if (j->mode == H1_BODY_LENGTH && j->remaining == 0)
        finish(j);
}

/* Buffered: takes everything the worker wrote into the spool. */
static int absorb(struct uw_job *j)
{
    struct evbuffer *in = j->s.in;
    size_t n = evbuffer_get_length(in);

    if (j->mode == H1_BODY_LENGTH && n > j->remaining)
        n = (size_t)j->remaining;
    if (spool_add(&j->resp, in, n) != 0) {
        fail(j, 502, R_SPOOL, "cannot buffer the response body", errno);
        return -1;
    }
    if (j->mode == H1_BODY_LENGTH) {
        j->remaining -= n;
        if (j->remaining == 0) {
            /* All there is: the worker and its slot are free now, whatever the client
             * does. */
            j->worker_done = 1;
            release_worker(j);
        }
    }
    return 0;
}

/* Buffered: feeds the client from the spool until it pushes back; ends the response once
 * the worker is done and the spool is empty. */
static void feed(struct uw_job *j)
{
    if (j->in_feed)
        return;
    j->in_feed = 1;
    while (j->x != NULL && !j->paused && spool_len(&j->resp) > 0) {
        int pause;

        if (spool_take(&j->resp, j->tmp, UW_FEED_STEP) < 0) {
            j->in_feed = 0;
            fail(j, 502, R_SPOOL, "cannot read the response body back", errno);
            return;
        }
        pause = gw_exchange_resp_body_buf(j->x, j->tmp);
        if (pause)
            j->paused = 1;
    }
    j->in_feed = 0;
    if (j->x != NULL && j->worker_done && spool_len(&j->resp) == 0)
        finish(j);
}

static void on_read(struct gw_stream *s, void *arg)
{
    struct uw_job *j = arg;

    (void)s;
    job_enter(j);
    if (j->x != NULL && j->phase == UP_WAIT_HEAD && parse_head(j) == 0) {
        job_leave(j);
        return;
    }
    if (j->x != NULL && j->phase == UP_RESP) {
        if (j->streaming) {
            if (!j->paused)
                relay(j);
        } else if (absorb(j) == 0) {
            feed(j);
        }
    }
    job_leave(j);
}

static void on_drain(struct gw_stream *s, void *arg)
{
    struct uw_job *j = arg;

    (void)s;
    job_enter(j);
    if (j->x != NULL && j->open && (!j->req_sent || !j->timing_head))
        pump_request(j);
    job_leave(j);
}

static void on_connected(struct uw_job *j)
{
    const struct gw_upstream_conf *u = j->pool->u;

    j->phase = UP_WAIT_HEAD;
    gw_stream_set_write_timeout(&j->s, u->send_ms);
    /* No read timeout while the request goes out (timeouts.send covers a worker that does
     * not take it); pump_request() arms first_byte once it is all written. */
    gw_stream_read(&j->s, 1);
    evbuffer_add(j->s.out, j->packet, j->packet_len);
    free(j->packet);
    j->packet = NULL;
    pump_request(j);
}

/* A connect that failed or timed out: the next server, if any. */
static void connect_failed(struct uw_job *j, int timeout, int err)
{
    gw_log_ctx(GW_LOG_WARN, j->x->log_ctx, "upstream %s server %s: connect %s%s%s%s",
               j->pool->u->name, j->srv->address, timeout ? "timed out" : "failed",
               err ? " (" : "", err ? strerror(err) : "", err ? ")" : "");
    close_worker(j);
    connect_next(j, timeout ? 504 : 502, timeout ? GW_R_TIMEOUT : GW_R_REFUSED);
}

static void on_event(struct gw_stream *s, enum gw_stream_what what, void *arg)
{
    struct uw_job *j = arg;
    int head = j->phase == UP_RESP;

    job_enter(j);
    if (j->x == NULL) {
        close_worker(j);
        job_leave(j);
        return;
    }
    switch (what) {
    case GW_STREAM_CONNECTED:
        on_connected(j);
        break;
    case GW_STREAM_EOF:
        if (!head) {
            fail(j, 502, GW_R_CLOSED, "closed before a complete response head", 0);
        } else if (j->mode == H1_BODY_LENGTH && j->remaining > 0) {
            fail(j, 502, GW_R_MID_CLOSED, "closed mid-response", 0);
        } else {
            j->worker_done = 1;
            release_worker(j);
            if (j->streaming)
                finish(j);
            else
                feed(j);
        }
        break;
    case GW_STREAM_ERROR:
        if (j->phase == UP_CONNECT)
            connect_failed(j, 0, s->err);
        else
            fail(j, 502, head ? GW_R_MID_CLOSED : GW_R_CLOSED, "connection error", s->err);
        break;
    case GW_STREAM_WRITE_TIMEOUT:
        if (j->phase == UP_CONNECT)
            connect_failed(j, 1, 0);
        else
            fail(j, 504, GW_R_TIMEOUT, "request not taken within timeouts.send", 0);
        break;
    case GW_STREAM_READ_TIMEOUT:
        if (!head)
            fail(j, 504, GW_R_TIMEOUT, "no response within timeouts.first_byte", 0);
        else
            fail(j, 504, GW_R_MID_TIMEOUT, "response stalled beyond timeouts.read", 0);
        break;
    case GW_STREAM_TLS_DONE:
    case GW_STREAM_TLS_FAILED:
        break; /* client streams only */
    }
    job_leave(j);
}

/* ---- exchange ops ----------------------------------------------------------------------- */

static void up_start(struct gw_exchange *x)
{
    struct gw_uwsgi_pool *p = x->pool;
    struct uw_job *j = job_new(p);

    if (j == NULL) {
        gw_log_ctx(GW_LOG_ERROR, x->log_ctx, "upstream %s: out of memory", p->u->name);
        gw_exchange_fail(x, 503, R_SPOOL);
        return;
    }
    j->x = x;
    p->njobs++;
    x->up_ctx = j;
    job_enter(j);
    take_body(j);
    job_leave(j);
}

static void up_req_body(struct gw_exchange *x)
{
    struct uw_job *j = x->up_ctx;

    job_enter(j);
    if (j->x == x && j->phase == UP_BODY)
        take_body(j);
    job_leave(j);
}

static void up_resume(struct gw_exchange *x)
{
    struct uw_job *j = x->up_ctx;

    job_enter(j);
    if (j->x == x && j->paused) {
        j->paused = 0;
        if (j->streaming) {
            if (j->open)
                gw_stream_read(&j->s, 1);
        } else {
            feed(j);
        }
    }
    job_leave(j);
}

static void up_cancel(struct gw_exchange *x)
{
    struct uw_job *j = x->up_ctx;

    job_enter(j);
    /* Closing the connection is how the worker learns (gatehouse.disconnected()). */
    detach(j);
    job_leave(j);
}

const struct gw_upstream_ops gw_uwsgi_upstream_ops = {
    .start = up_start,
    .req_body = up_req_body,
    .resume = up_resume,
    .cancel = up_cancel,
};

/* ---- pool ------------------------------------------------------------------------------- */

/* Rebuilds the targets from the servers' addresses. A numeric or unix: server counts under
 * its address as written, an address a name resolves to under its numeric form: the gate's
 * counters are per address across workers and reloads, so every thread agrees on them. */
static void targets_build(struct gw_uwsgi_pool *p)
{
    const struct gw_upstream_conf *u = p->u;
    struct uw_target *t;
    size_t n = 0, k = 0;

    for (size_t i = 0; i < u->nservers; i++) {
        size_t m;
        gw_resolve_addrs(p->names, i, &m);
        n += m;
    }
    t = n > 0 ? gw_xcalloc(n, sizeof *t) : NULL;
    for (size_t i = 0; i < u->nservers; i++) {
        size_t m;
        const struct gw_addr *a = gw_resolve_addrs(p->names, i, &m);

        for (size_t e = 0; e < m; e++, k++) {
            char key[128];

            t[k].conf = &u->servers[i];
            t[k].addr = a[e];
            t[k].inflight = gw_gate_server_counter(
                p->gate, gw_resolve_named(p->names, i) ? gw_addr_format(&a[e], key, sizeof key)
                                                       : u->servers[i].address);
        }
    }
    free(p->targets);
    p->targets = t;
    p->ntargets = n;
    p->rr = 0;
    p->gen++;
}

/* A lookup ended: the targets follow a changed answer (jobs in flight keep their address and
 * counter), and the exchanges waiting for a first answer try again. */
static void on_names(void *arg, size_t i, int changed)
{
    struct gw_uwsgi_pool *p = arg;
    struct uw_job **held, *j;
    size_t n = 0, k = 0;

    (void)i;
    p->depth++;
    if (changed)
        targets_build(p);
    /* Taken whole and held: a job failed below may end others of the list (one client), and
     * one that waits again goes back on the pool's list, relinked. */
    for (j = p->resolving; j != NULL; j = j->rnext)
        n++;
    held = n > 0 ? gw_xmalloc(n * sizeof *held) : NULL;
    for (j = p->resolving; j != NULL; j = j->rnext) {
        job_enter(j);
        held[k++] = j;
    }
    p->resolving = NULL;
    for (k = 0; k < n; k++) {
        j = held[k];
        j->rnext = NULL;
        if (j->x != NULL && j->phase == UP_RESOLVE) {
            j->phase = UP_CONNECT;
            connect_next(j, 502, GW_R_REFUSED);
            if (j->phase != UP_RESOLVE && j->qtimer != NULL)
                event_del(j->qtimer);
        }
    }
    for (k = 0; k < n; k++)
        job_leave(held[k]);
    free(held);
    if (--p->depth == 0 && p->closing)
        pool_destroy(p);
}

struct gw_uwsgi_pool *gw_uwsgi_pool_new(struct event_base *base, struct evdns_base *dns,
                                        struct gw_gate_box *box,
                                        const struct gw_upstream_conf *u)
{
    struct gw_uwsgi_pool *p = gw_xcalloc(1, sizeof *p);
    int named = 0;

    p->base = base;
    p->box = box;
    p->u = u;
    p->gate = gw_gate_attach(u->name, u->concurrency, u->queue_limit);
    p->names = gw_resolve_new(base, dns, u, on_names, p);
    targets_build(p);
    for (size_t i = 0; i < u->nservers; i++)
        named |= gw_resolve_named(p->names, i);
    /* Through the guard: an answer from /etc/hosts comes within the call. */
    p->depth++;
    if (gw_resolve_start(p->names) != 0) {
        gw_log_error("upstream %s: cannot start resolving (out of memory)", u->name);
        named = 0;
    }
    p->depth--;
    if (p->ntargets == 0 && !named) {
        gw_log_error("upstream %s: no usable server", u->name);
        pool_destroy(p);
        return NULL;
    }
    return p;
}

void gw_uwsgi_pool_free(struct gw_uwsgi_pool *p)
{
    if (p == NULL)
        return;
    p->closing = 1;
    if (p->depth == 0)
        pool_destroy(p);
}
