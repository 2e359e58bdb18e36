/* SPDX-License-Identifier: MIT */
/* The asgi upstream driver. Each worker thread keeps `connections` long-lived connections to
 * every application server and puts each exchange on the ready one with the fewest streams.
 * Request bodies go to the app as its credit allows; response bodies come back as the
 * gateway's credit allows, and that credit is only given back once the client's side has
 * taken the bytes, so a slow client stops the app's sends, not the gateway's memory. A lost
 * connection (EOF, error, unanswered PING) fails its streams (502 before a head, a cut after)
 * and is reopened with backoff while new exchanges go to the other connections. */
#include "adapters/asgi/asgi_upstream.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

#include "adapters/asgi/asgi_codec.h"
#include "gateway/h1_parse.h"
#include "gateway/log.h"
#include "gateway/tls.h"
#include "gateway/resolve.h"
#include "gateway/stream.h"
#include "gateway/util.h"

#define AS_MAX_FRAME 65536u        /* the max_frame the gateway announces */
#define AS_CREDIT 65536u           /* response bytes an app may send a stream before credit */
#define AS_CREDIT_BATCH 16384u     /* credit goes back in steps of at least this */
#define AS_OUT_HIWAT (256 * 1024)  /* request bodies wait while a connection queues this much */
#define AS_READ_SIZE (64 * 1024)
#define AS_TICK_MS 250             /* timeouts and pings are checked this often */
#define AS_BACKOFF_MIN_MS 50
#define AS_BACKOFF_MAX_MS 5000
#define AS_FILE_STEP (64 * 1024)   /* PATHSEND bytes read per step */
#define AS_CAPS (ASGI_CAP_TRAILERS | ASGI_CAP_PATHSEND | ASGI_CAP_WEBSOCKET | ASGI_CAP_TLS)
#define AS_FULL_LOAD ((size_t)1 << 40) /* load of a full or still connecting connection */

static const char R_HEAD_TOO_LARGE[] = "request head too large for the app's max_frame";
static const char R_RESET[] = "upstream reset the stream";
static const char R_SHORT[] = "upstream response shorter than its Content-Length";
static const char R_PATHSEND[] = "cannot send the file of http.response.pathsend";
static const char R_NO_WS[] = "the app did not offer WEBSOCKET in its HELLO";

/* An intrusive doubly linked list of streams. */
struct as_list {
    struct as_strm *head, *tail;
    size_t n;
};

enum ac_state {
    AC_DOWN = 0,   /* no socket; |retry| may be armed */
    AC_CONNECTING, /* connect(2) in progress */
    AC_HELLO,      /* HELLO sent, waiting for the app's */
    AC_READY,      /* streams may be opened */
    AC_GOAWAY,     /* the app drains: no new streams; closed when the last one ends */
};

/* One long-lived connection to an application server's address. Owns its socket, its events,
 * its label and the id table of its open streams (the streams themselves belong to their
 * exchanges). Allocated on its own and listed in pool->conns; a retired one (its address went
 * out of its name's answer) takes no new stream and, once closed, waits on pool->grave until
 * no callback of the pool is on the stack. */
struct as_conn {
    struct gw_asgi_pool *pool;
    const struct gw_server_conf *conf; /* borrowed from the snapshot */
    struct gw_addr addr;             /* where it connects */
    char *label;                     /* "ADDRESS" or "NAME:PORT (IP:PORT)", for logs */
    struct as_conn *gnext;           /* in pool->grave */
    unsigned idx;                    /* a number in the pool, for logs */
    struct gw_stream s;
    enum ac_state state;
    struct event *kick;              /* opens pending streams, pumps bodies, flushes */
    struct event *retry;             /* reconnects after |backoff_ms| */
    unsigned backoff_ms;
    unsigned fails;                  /* attempts failed in a row: only the first is logged */
    uint64_t gen;                    /* bumped when lost: callers on the stack stop */
    uint32_t next_id;                /* the next stream id to open */
    uint32_t max_frame, max_streams, credit, caps; /* from the app's HELLO */
    uint32_t goaway_last;
    struct as_strm **tab;            /* open streams by id: chained, |tabmask| + 1 buckets */
    size_t tabmask;
    struct as_list open;             /* streams opened on the wire */
    struct as_list pending;          /* assigned, waiting for HELLO or a free stream slot */
    struct as_strm *wants, **wants_tail; /* open streams with body to send, waiting for room */
    uint64_t last_rx_ms;             /* the last byte from the app */
    uint64_t ping_sent_ms;           /* 0: no PING outstanding */
    unsigned kicked : 1;
    unsigned retired : 1;            /* closed once its streams are done, never reopened */
    unsigned buried : 1;             /* on pool->grave */
    unsigned doomed : 1;             /* scratch: to be retired */
};

/* One exchange's state: x->up_ctx while attached. |busy| counts calls into the exchange on
 * the stack; a cancel meanwhile only marks it |dead|, and the caller frees it. */
struct as_strm {
    struct gw_asgi_pool *pool;
    struct gw_exchange *x;           /* NULL once detached */
    struct as_conn *conn;            /* NULL when on no connection */
    struct as_list *list;            /* &conn->open or &conn->pending, or NULL */
    struct as_strm *prev, *next;     /* in |list| */
    struct as_strm *hnext;           /* in conn->tab */
    struct as_strm *wnext;           /* in conn->wants */
    uint32_t id;                     /* 0 until opened */
    uint32_t recv_credit;            /* response payload bytes the app may still send */
    uint32_t owed;                   /* response bytes passed on, credit not yet given back */
    int64_t send_credit;             /* request payload bytes the app will still take */
    int64_t resp_left;               /* bytes the Content-Length still announces; -1 none */
    uint64_t deadline_ms;            /* monotonic; 0: no timeout runs */
    uint64_t req_sent;               /* request body bytes sent */
    struct evbuffer *trailers;       /* payloads of TRAILERS frames with MORE, length-prefixed */
    struct evbuffer *ws_out;         /* WebSocket: the rest of a client message piece that
                                        waits for credit (at most one piece: the client is not
                                        read meanwhile) */
    int fd;                          /* PATHSEND file, -1 */
    unsigned tries;                  /* connections this exchange was refused by */
    unsigned busy;
    unsigned end_sent : 1;           /* END went out with the request */
    unsigned head : 1;               /* HTTP_RESPONSE came */
    unsigned expect_trailers : 1;    /* it had MORE (and TRAILERS was agreed) */
    unsigned no_body : 1;            /* HEAD, 204 or 304: DATA from the app is dropped */
    unsigned paused : 1;             /* the downstream asked us to stop */
    unsigned in_wants : 1;
    unsigned dead : 1;
    unsigned in_pump : 1, pump_again : 1;
    unsigned ws : 1;                 /* a websocket stream (x->ws) */
    unsigned ws_accepted : 1;        /* WS_ACCEPT came: messages flow */
    unsigned ws_in_msg : 1;          /* a message to the client is open: next piece continues */
    unsigned ws_out_text : 1;        /* |ws_out| is a piece of a text message */
    unsigned ws_out_fin : 1;         /* |ws_out| ends its message */
    unsigned ws_out_stalled : 1;     /* the downstream was told to stop reading the client */
    unsigned ws_out_pending : 1;     /* a piece (maybe empty) waits in |ws_out| */
    unsigned ws_in_text : 1;         /* the app's open message is text (latched at its first
                                        piece: every piece must repeat it, §5.3) */
    uint32_t ws_utf8;                /* validator state of the app's text message */
};

/* Owned by the worker's snapshot runtime (see the header). |depth| counts the pool's
 * callbacks on the stack; gw_asgi_pool_free() meanwhile only sets |closing|. */
struct gw_asgi_pool {
    struct event_base *base;
    const struct gw_upstream_conf *u;
    const struct gw_config *cfg;
    struct gw_resolve *names;        /* the servers' addresses */
    struct as_conn **conns;          /* `connections` per address of each server */
    size_t nconns, capconns;
    unsigned next_idx;
    struct as_conn *grave;           /* closed retired connections, freed by pool_leave() */
    struct as_list waiting;          /* streams waiting for a first answer for a name */
    size_t rr;                       /* tie-break cursor among equally loaded connections */
    struct event *tick;
    struct asgi_header *ah;          /* scratch: decoded or encoded header lists, |nh| long */
    struct h1_header *hh;
    struct asgi_str *subs;           /* scratch: offered subprotocols, |nh| long */
    size_t nh;
    char *scratch;                   /* lower-cased request names and the decoded path */
    size_t scratch_cap;
    struct evbuffer *tmp;            /* a DATA payload or a file step on its way */
    unsigned depth;
    int closing;
};

static void conn_kick(struct as_conn *c);
static void conn_lost(struct as_conn *c, const char *why);
static void conn_connect(struct as_conn *c);
static void assign(struct as_strm *st, struct as_conn *avoid, int reopen);
static void pump(struct as_strm *st);
static void ws_pump(struct as_strm *st);
static void file_feed(struct as_strm *st);

/* ---- lists and the id table ------------------------------------------------------------ */

static void list_push(struct as_list *l, struct as_strm *st)
{
    st->prev = l->tail;
    st->next = NULL;
    if (l->tail != NULL)
        l->tail->next = st;
    else
        l->head = st;
    l->tail = st;
    l->n++;
}

static void list_remove(struct as_list *l, struct as_strm *st)
{
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        l->head = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    else
        l->tail = st->prev;
    st->prev = st->next = NULL;
    l->n--;
}

static void tab_insert(struct as_conn *c, struct as_strm *st)
{
    if (c->tab == NULL || c->open.n > c->tabmask) {
        size_t nb = c->tab == NULL ? 16 : (c->tabmask + 1) * 2;
        struct as_strm **t = gw_xcalloc(nb, sizeof *t);

        for (size_t i = 0; c->tab != NULL && i <= c->tabmask; i++) {
            while (c->tab[i] != NULL) {
                struct as_strm *e = c->tab[i];
                c->tab[i] = e->hnext;
                e->hnext = t[e->id & (nb - 1)];
                t[e->id & (nb - 1)] = e;
            }
        }
        free(c->tab);
        c->tab = t;
        c->tabmask = nb - 1;
    }
    st->hnext = c->tab[st->id & c->tabmask];
    c->tab[st->id & c->tabmask] = st;
}

static struct as_strm *tab_find(const struct as_conn *c, uint32_t id)
{
    struct as_strm *st = c->tab != NULL ? c->tab[id & c->tabmask] : NULL;

    while (st != NULL && st->id != id)
        st = st->hnext;
    return st;
}

static void tab_remove(struct as_conn *c, struct as_strm *st)
{
    struct as_strm **pp = &c->tab[st->id & c->tabmask];

    while (*pp != NULL && *pp != st)
        pp = &(*pp)->hnext;
    if (*pp != NULL)
        *pp = st->hnext;
    st->hnext = NULL;
}

static void wants_remove(struct as_conn *c, struct as_strm *st)
{
    struct as_strm **pp = &c->wants;

    while (*pp != NULL && *pp != st)
        pp = &(*pp)->wnext;
    if (*pp == NULL)
        return;
    *pp = st->wnext;
    if (c->wants_tail == &st->wnext)
        c->wants_tail = pp;
    st->wnext = NULL;
    st->in_wants = 0;
}

/* ---- pool lifetime ---------------------------------------------------------------------- */

static void conn_destroy(struct as_conn *c)
{
    gw_stream_close(&c->s);
    if (c->kick != NULL)
        event_free(c->kick);
    if (c->retry != NULL)
        event_free(c->retry);
    free(c->tab);
    free(c->label);
    free(c);
}

static void grave_empty(struct gw_asgi_pool *p)
{
    while (p->grave != NULL) {
        struct as_conn *c = p->grave;
        p->grave = c->gnext;
        conn_destroy(c);
    }
}

static void pool_destroy(struct gw_asgi_pool *p)
{
    gw_resolve_free(p->names);
    for (size_t i = 0; i < p->nconns; i++)
        conn_destroy(p->conns[i]);
    grave_empty(p);
    if (p->tick != NULL)
        event_free(p->tick);
    if (p->tmp != NULL)
        evbuffer_free(p->tmp);
    free(p->conns);
    free(p->ah);
    free(p->hh);
    free(p->subs);
    free(p->scratch);
    free(p);
}

static void pool_enter(struct gw_asgi_pool *p)
{
    p->depth++;
}

static void pool_leave(struct gw_asgi_pool *p)
{
    if (--p->depth != 0)
        return;
    grave_empty(p);
    if (p->closing)
        pool_destroy(p);
}

/* ---- writing frames --------------------------------------------------------------------- */

static void put_frame(struct as_conn *c, const uint8_t *f, int n)
{
    if (n > 0)
        evbuffer_add(c->s.out, f, (size_t)n);
    conn_kick(c);
}

static void send_reset(struct as_conn *c, uint32_t id, uint32_t code)
{
    uint8_t f[ASGI_FRAME_HDR_LEN + ASGI_RESET_LEN];
    struct asgi_reset r = {code};

    put_frame(c, f, asgi_encode_reset(f, sizeof f, c->max_frame, 0, id, &r));
}

static void send_credit(struct as_conn *c, uint32_t id, uint32_t inc)
{
    uint8_t f[ASGI_FRAME_HDR_LEN + ASGI_CREDIT_LEN];
    struct asgi_credit r = {inc};

    put_frame(c, f, asgi_encode_credit(f, sizeof f, c->max_frame, 0, id, &r));
}

/* DISCONNECT with |code| (0 for http; the client's close code for a websocket) and the
 * client's |reason| (at most 123 bytes: it came in a close frame). */
static void send_disconnect(struct as_conn *c, uint32_t id, unsigned code, const char *reason,
                            size_t n)
{
    uint8_t f[ASGI_FRAME_HDR_LEN + 4 + 125];
    struct asgi_close r = {(uint16_t)code, {reason, n < 125 ? n : 125}};

    put_frame(c, f, asgi_encode_close(f, sizeof f, c->max_frame, ASGI_DISCONNECT, ASGI_F_END, id,
                                      &r));
}

static void send_goaway(struct as_conn *c, uint32_t code, const char *debug)
{
    uint8_t f[ASGI_FRAME_HDR_LEN + 10 + 128];
    struct asgi_goaway g = {0, code, {debug, strnlen(debug, 128)}};

    put_frame(c, f, asgi_encode_goaway(f, sizeof f, ASGI_MAX_LEN, 0, 0, &g));
}

/* Gives back the credit for what the downstream took, unless it asked to pause. */
static void give_credit(struct as_strm *st, uint32_t min)
{
    if (st->conn == NULL || st->paused || st->owed == 0 || st->owed < min)
        return;
    send_credit(st->conn, st->id, st->owed);
    st->recv_credit += st->owed;
    st->owed = 0;
}

/* ---- the end of a stream ---------------------------------------------------------------- */

/* Takes |st| off its connection. |code|: the RESET to send when the stream is open on the
 * wire and the app may still be at it; pass ASGI_ERR_NONE to send nothing. */
static void unlink_conn(struct as_strm *st, uint32_t code)
{
    struct as_conn *c = st->conn;

    if (c == NULL) {
        /* Off any connection, or on the local list of a conn_lost() in progress. */
        if (st->list != NULL)
            list_remove(st->list, st);
        st->list = NULL;
        return;
    }
    if (st->in_wants)
        wants_remove(c, st);
    if (st->list != NULL)
        list_remove(st->list, st);
    if (st->list == &c->open) {
        tab_remove(c, st);
        if (code != ASGI_ERR_NONE)
            send_reset(c, st->id, code);
    }
    st->list = NULL;
    st->conn = NULL;
    /* A draining app's connection closes with its last stream, and a slot freed may let a
     * pending stream open: both from on_kick(), never under a caller that may still hold
     * slices of the connection's input. */
    if ((c->state == AC_GOAWAY && c->open.n == 0) || c->pending.n > 0)
        conn_kick(c);
}

static void strm_free(struct as_strm *st)
{
    if (st->fd >= 0)
        close(st->fd);
    if (st->trailers != NULL)
        evbuffer_free(st->trailers);
    if (st->ws_out != NULL)
        evbuffer_free(st->ws_out);
    free(st);
}

/* Ends |st| for good: off its connection (with RESET |code| if open), then the exchange is
 * told: |status| 0 means the response is complete (|trailers| borrowed for the call), else
 * gw_exchange_fail(). |st| is gone on return. */
static void strm_end(struct as_strm *st, int status, const char *reason, uint32_t code,
                     const struct h1_header *trailers, size_t ntrailers)
{
    struct gw_exchange *x = st->x;

    unlink_conn(st, code);
    st->x = NULL;
    /* |trailers| may point into st->trailers: it lives until the call is over. */
    st->busy++;
    if (x != NULL && status == 0)
        gw_exchange_resp_end(x, trailers, ntrailers);
    else if (x != NULL)
        gw_exchange_fail(x, status, reason);
    if (--st->busy > 0)
        st->dead = 1; /* the caller on the stack frees it */
    else
        strm_free(st);
}

/* The upstream side failed |st|: 502 before a head (504 for a timeout), a cut after. */
static void strm_fail(struct as_strm *st, int timeout, const char *reason, uint32_t code)
{
    strm_end(st, timeout && !st->head ? 504 : 502, reason, code, NULL, 0);
}

/* After a call into the exchange: returns 1 when |st| was cancelled meanwhile (then freed). */
static int strm_unbusy(struct as_strm *st)
{
    if (--st->busy > 0 || !st->dead)
        return 0;
    strm_free(st);
    return 1;
}

/* A stream error found by the gateway: RESET |code| to the app, 502 or a cut to the client. */
static void stream_error(struct as_strm *st, uint32_t code, const char *what)
{
    if (st->x != NULL)
        gw_log_ctx(GW_LOG_WARN, st->x->log_ctx, "upstream %s: stream %u: %s",
                   st->pool->u->name, (unsigned)st->id, what);
    strm_fail(st, 0, GW_R_INVALID, code);
}

/* The response is complete: checked against its Content-Length, then passed on. */
static void strm_done(struct as_strm *st, const struct h1_header *trailers, size_t ntrailers)
{
    if (st->resp_left > 0) {
        strm_fail(st, 0, R_SHORT, st->end_sent ? ASGI_ERR_NONE : ASGI_ERR_CANCEL);
        return;
    }
    strm_end(st, 0, NULL, st->end_sent ? ASGI_ERR_NONE : ASGI_ERR_CANCEL, trailers, ntrailers);
}

/* ---- the scope ---------------------------------------------------------------------------- */

static size_t hexval(char ch)
{
    return (size_t)(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
}

/* Percent-decodes |p|[0..|n|) into |out| (|n| bytes) as Python's unquote() does: a '%' not
 * followed by two hex digits stays as it is. Returns the length. */
static size_t percent_decode(char *out, const char *p, size_t n)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%' && i + 2 < n && isxdigit((unsigned char)p[i + 1]) &&
            isxdigit((unsigned char)p[i + 2])) {
            out[o++] = (char)(hexval(p[i + 1]) << 4 | hexval(p[i + 2]));
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    return o;
}

/* Copies |p|[0..|n|) to |out| (3 * |n| bytes), each maximal ill-formed UTF-8 subpart replaced
 * by U+FFFD, as Python's bytes.decode("utf-8", "replace") does (the path of the scope is text,
 * and uvicorn decodes it that way). Returns the length. */
static size_t utf8_sanitize(char *out, const unsigned char *p, size_t n)
{
    size_t o = 0, i = 0;

    while (i < n) {
        unsigned char b = p[i];
        unsigned char lo = 0x80, hi = 0xBF;
        size_t need, j;

        if (b < 0x80) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b >= 0xE0 && b <= 0xEF)
            need = 2, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
        else if (b >= 0xF0 && b <= 0xF4)
            need = 3, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
        else
            need = 0;
        j = i + 1;
        if (need > 0 && j < n && p[j] >= lo && p[j] <= hi) {
            j++;
            while (j < n && j < i + 1 + need && p[j] >= 0x80 && p[j] <= 0xBF)
                j++;
        }
        if (need > 0 && j == i + 1 + need) {
            memcpy(out + o, p + i, j - i);
            o += j - i;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        i = j;
    }
    return o;
}

/* Splits an authority "name[:port]" or "[v6][:port]". */
static void split_host(struct gw_slice h, struct gw_slice *name, struct gw_slice *port)
{
    *name = h;
    *port = (struct gw_slice){NULL, 0};
    if (h.len > 0 && h.p[0] == '[') {
        const char *rb = memchr(h.p, ']', h.len);
        if (rb != NULL) {
            name->p = h.p + 1;
            name->len = (size_t)(rb - h.p) - 1;
            if ((size_t)(rb + 1 - h.p) < h.len && rb[1] == ':')
                *port = (struct gw_slice){rb + 2, h.len - (size_t)(rb + 2 - h.p)};
        }
        return;
    }
    const char *colon = h.len > 0 ? memchr(h.p, ':', h.len) : NULL;
    if (colon != NULL) {
        name->len = (size_t)(colon - h.p);
        *port = (struct gw_slice){colon + 1, h.len - name->len - 1};
    }
}

static uint16_t port_value(struct gw_slice s, uint16_t dflt)
{
    unsigned v = 0;

    if (s.len == 0 || s.len > 5)
        return dflt;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return dflt;
        v = v * 10 + (unsigned)(s.p[i] - '0');
    }
    return v <= 65535 ? (uint16_t)v : dflt;
}

static char *scratch(struct gw_asgi_pool *p, size_t n)
{
    if (p->scratch_cap < n) {
        p->scratch = gw_xrealloc(p->scratch, n);
        p->scratch_cap = n;
    }
    return p->scratch;
}

static struct asgi_str astr(struct gw_slice s)
{
    return (struct asgi_str){s.p, s.len};
}

#define ASTR_LIT(lit) ((struct asgi_str){(lit), sizeof(lit) - 1})

/* Writes HTTP_REQUEST for |st| onto its connection. Returns 0, or the status to answer (431)
 * when the scope does not fit the app's max_frame. */
static int write_request(struct as_strm *st)
{
    struct gw_asgi_pool *p = st->pool;
    struct as_conn *c = st->conn;
    struct gw_exchange *x = st->x;
    const struct gw_req *q = &x->req;
    const char *qm = memchr(q->path.p, '?', q->path.len);
    struct gw_slice raw = {q->path.p, qm != NULL ? (size_t)(qm - q->path.p) : q->path.len};
    struct gw_slice query = {qm != NULL ? qm + 1 : "", qm != NULL ? q->path.len - raw.len - 1 : 0};
    struct gw_slice hname, hport, client;
    struct asgi_http_request r;
    struct evbuffer_iovec v;
    size_t names = 0, nh = 0, bound;
    char *sp, *dec;
    int peer, https = strcmp(x->scheme, "https") == 0, n;

    for (size_t i = 0; i < q->nheaders; i++)
        names += q->headers[i].name.len;
    sp = scratch(p, names + 4 * raw.len + 1);
    dec = sp + names;
    r.http_version = q->h2 ? ASTR_LIT("2") : q->minor ? ASTR_LIT("1.1") : ASTR_LIT("1.0");
    r.method = astr(q->method);
    r.scheme = (struct asgi_str){x->scheme, strlen(x->scheme)};
    {
        size_t dn = percent_decode(dec, raw.p, raw.len);
        r.path.p = dec + raw.len;
        r.path.len = utf8_sanitize(dec + raw.len, (const unsigned char *)dec, dn);
    }
    r.raw_path = astr(raw);
    r.query_string = astr(query);
    if (x->route->strip_prefix && x->route->path_len > 1)
        r.root_path = (struct asgi_str){x->route->path, x->route->path_len};
    else
        r.root_path = ASTR_LIT("");
    client = gw_exchange_client_addr(x, &peer);
    if (GW_SLICE_EQ_LIT(client, "unknown"))
        client.len = 0; /* a unix socket peer: the scope's client is None */
    r.client_host = astr(client);
    r.client_port = peer ? x->fwd->client_port : 0;
    split_host(q->host, &hname, &hport);
    r.server_host = astr(hname);
    r.server_port = port_value(hport, https ? 443 : 80);

    /* The client's end-to-end fields in order, names lower-cased; the gateway's own after. */
    for (size_t i = 0; i < q->nheaders && nh + 4 < p->nh; i++) {
        struct gw_slice name = q->headers[i].name;

        if (gw_exchange_drop_header(x, name))
            continue;
        for (size_t k = 0; k < name.len; k++)
            sp[k] = (char)((name.p[k] >= 'A' && name.p[k] <= 'Z') ? name.p[k] + 32 : name.p[k]);
        p->ah[nh].name = (struct asgi_str){sp, name.len};
        p->ah[nh].value = astr(q->headers[i].value);
        sp += name.len;
        nh++;
    }
    if (x->fwd->trusted) {
        p->ah[nh++] = (struct asgi_header){ASTR_LIT("x-forwarded-for"), astr(x->fwd->xff)};
        p->ah[nh++] = (struct asgi_header){ASTR_LIT("x-forwarded-proto"), astr(x->fwd->proto)};
        if (x->fwd->fhost.len > 0)
            p->ah[nh++] = (struct asgi_header){ASTR_LIT("x-forwarded-host"), astr(x->fwd->fhost)};
    }
    p->ah[nh++] = (struct asgi_header){ASTR_LIT("x-request-id"), astr(x->fwd->request_id)};
    r.headers = p->ah;
    r.n_headers = nh;
    memset(&r.tls, 0, sizeof r.tls);
    r.tls.block = (c->caps & ASGI_CAP_TLS) != 0;
    if (r.tls.block && x->tls != NULL) {
        const struct gw_tls_info *t = x->tls;

        r.tls.present = 1;
        r.tls.version = t->version;
        r.tls.cipher_suite = t->cipher_id;
        if (t->s_dn != NULL) {
            r.tls.client_cert_name = (struct asgi_str){t->s_dn, strlen(t->s_dn)};
            r.tls.client_cert = (struct asgi_str){t->cert_pem, t->cert_pem_len};
        }
        if (t->verify_error != NULL)
            r.tls.client_cert_error = (struct asgi_str){t->verify_error, strlen(t->verify_error)};
    }

    bound = ASGI_FRAME_HDR_LEN + 9 * 2 + 3 * 2 + r.http_version.len + r.method.len +
            r.scheme.len + r.path.len + r.raw_path.len + r.query_string.len + r.root_path.len +
            r.client_host.len + r.server_host.len + 1 + 4 + 3 * 2 + r.tls.client_cert_name.len +
            r.tls.client_cert_error.len + r.tls.client_cert.len;
    for (size_t i = 0; i < nh; i++)
        bound += 4 + p->ah[i].name.len + p->ah[i].value.len;
    if (st->ws) {
        /* §5.1: no method, ws or wss, then the offered subprotocols (as many as the scratch
         * holds: an app picks among the first few anyway). */
        struct asgi_str *sub = p->subs;
        size_t nsub = 0, room = p->nh;

        r.method = ASTR_LIT("");
        r.scheme = https ? ASTR_LIT("wss") : ASTR_LIT("ws");
        for (size_t i = 0; i < q->nheaders; i++) {
            struct gw_slice tok;
            size_t pos = 0;

            if (!GW_SLICE_EQ_LIT(q->headers[i].name, "Sec-WebSocket-Protocol"))
                continue;
            while (nsub < room && ws_next_token(q->headers[i].value, &pos, &tok)) {
                sub[nsub++] = astr(tok);
                bound += 2 + tok.len;
            }
        }
        bound += 2;
        if (bound > ASGI_FRAME_HDR_LEN + c->max_frame)
            return 431;
        if (evbuffer_reserve_space(c->s.out, (ev_ssize_t)bound, &v, 1) < 1)
            return 503;
        {
            struct asgi_ws_connect wc = {r, sub, nsub};
            n = asgi_encode_ws_connect(v.iov_base, bound, c->max_frame, 0, st->id, &wc);
        }
    } else {
        if (bound > ASGI_FRAME_HDR_LEN + c->max_frame)
            return 431;
        if (evbuffer_reserve_space(c->s.out, (ev_ssize_t)bound, &v, 1) < 1)
            return 503;
        n = asgi_encode_http_request(v.iov_base, bound, c->max_frame,
                                     q->has_body ? 0 : ASGI_F_END, st->id, &r);
    }
    if (n < 0) {
        v.iov_len = 0;
        evbuffer_commit_space(c->s.out, &v, 1);
        return 431;
    }
    v.iov_len = (size_t)n;
    evbuffer_commit_space(c->s.out, &v, 1);
    return 0;
}

/* ---- placing exchanges -------------------------------------------------------------------- */

/* The connection for a new stream: the ready one with the fewest streams (ties in turn), else
 * one still connecting, else (with |reopen|: a new exchange) a connection that is down,
 * reconnected now rather than after its backoff. NULL when none can be had (|avoid| is never
 * chosen). */
static struct as_conn *pick(struct gw_asgi_pool *p, const struct as_conn *avoid, int reopen)
{
    struct as_conn *best = NULL;
    size_t best_load = 0;

    for (size_t k = 0; k < p->nconns; k++) {
        struct as_conn *c = p->conns[(p->rr + k) % p->nconns];
        size_t load = c->open.n + c->pending.n;

        if (c == avoid)
            continue;
        if (c->state == AC_READY) {
            if (load >= c->max_streams)
                load += AS_FULL_LOAD;
        } else if (c->state == AC_CONNECTING || c->state == AC_HELLO) {
            load += 2 * AS_FULL_LOAD;
        } else {
            continue;
        }
        if (best == NULL || load < best_load) {
            best = c;
            best_load = load;
        }
    }
    p->rr++;
    if (best != NULL || !reopen)
        return best;
    for (size_t k = 0; k < p->nconns; k++) {
        struct as_conn *c = p->conns[(p->rr + k) % p->nconns];

        if (c == avoid || c->state != AC_DOWN || c->retired)
            continue;
        event_del(c->retry);
        conn_connect(c);
        if (c->state != AC_DOWN)
            return c;
    }
    return NULL;
}

/* Puts |st| on a connection's pending list; when there is none, on the pool's waiting list
 * while a host name awaits its first answer, else fails it with 502. Its deadline was set
 * once, when the exchange started. */
static void assign(struct as_strm *st, struct as_conn *avoid, int reopen)
{
    struct gw_asgi_pool *p = st->pool;
    struct as_conn *c = pick(p, avoid, reopen);

    if (c == NULL && gw_resolve_waiting(p->names)) {
        st->list = &p->waiting;
        list_push(&p->waiting, st);
        return;
    }
    if (c == NULL) {
        if (p->nconns == 0 && gw_resolve_log_unresolved(p->names, p->u, st->x->log_ctx, "") > 0) {
            strm_end(st, 502, GW_R_UNRESOLVED, ASGI_ERR_NONE, NULL, 0);
            return;
        }
        gw_log_ctx(GW_LOG_WARN, st->x->log_ctx, "upstream %s: no connection to any server",
                   p->u->name);
        strm_end(st, 502, GW_R_REFUSED, ASGI_ERR_NONE, NULL, 0);
        return;
    }
    st->conn = c;
    st->list = &c->pending;
    list_push(&c->pending, st);
    if (c->state == AC_READY)
        conn_kick(c);
}

/* A stream the app did not process (RESET REFUSED, or above its GOAWAY): another connection
 * gets it while nothing of the body has been consumed, else 502. */
static void retry_or_fail(struct as_strm *st)
{
    struct as_conn *c = st->conn;

    if (st->head || st->req_sent > 0 || st->tries >= st->pool->u->retries || st->x == NULL) {
        strm_fail(st, 0, R_RESET, ASGI_ERR_NONE);
        return;
    }
    st->tries++;
    unlink_conn(st, ASGI_ERR_NONE);
    st->id = 0;
    st->end_sent = 0;
    assign(st, c, 0);
}

/* Opens the pending streams of a ready connection while it has room. */
static void open_pending(struct as_conn *c)
{
    uint64_t gen = c->gen;

    while (c->gen == gen && !c->pool->closing && c->pending.n > 0 && c->state == AC_READY &&
           c->open.n < c->max_streams) {
        struct as_strm *st = c->pending.head;
        struct gw_exchange *x = st->x;
        int status;

        if (c->next_id > ASGI_STREAM_MAX) {
            /* Ids are spent: start a fresh connection once this one's streams are done. */
            c->state = AC_GOAWAY;
            if (c->open.n == 0)
                conn_lost(c, NULL);
            return;
        }
        list_remove(&c->pending, st);
        st->id = c->next_id;
        st->send_credit = c->credit;
        st->recv_credit = AS_CREDIT;
        status = st->ws && !(c->caps & ASGI_CAP_WEBSOCKET) ? 502 : write_request(st);
        if (status != 0) {
            const char *why = status == 431   ? R_HEAD_TOO_LARGE
                              : status == 502 ? R_NO_WS
                                              : "out of memory";

            st->list = NULL;
            st->conn = NULL;
            gw_log_ctx(GW_LOG_WARN, x->log_ctx, "upstream %s: %s", st->pool->u->name, why);
            strm_end(st, status, why, ASGI_ERR_NONE, NULL, 0);
            continue;
        }
        c->next_id++; /* ids go up by one on the wire: a refused request took none */
        st->list = &c->open;
        list_push(&c->open, st);
        tab_insert(c, st);
        x->server = c->conf->address;
        if (x->timed && x->up_start_ms == 0)
            x->up_start_ms = gw_now_ms();
        if (!x->req.has_body) {
            /* A websocket's WS_CONNECT has no END, but no body follows it either. */
            st->end_sent = 1;
            st->deadline_ms = gw_now_ms() + st->pool->u->first_byte_ms;
        } else {
            pump(st);
        }
    }
}

/* ---- the request body --------------------------------------------------------------------- */

/* Sends what the client's body has, as far as the app's credit and the connection's room go. */
static void pump(struct as_strm *st)
{
    if (st->in_pump) {
        st->pump_again = 1;
        return;
    }
    st->in_pump = 1;
    do {
        struct gw_exchange *x = st->x;
        struct as_conn *c = st->conn;
        size_t took = 0, avail = 0;
        int ended = 0;

        st->pump_again = 0;
        if (x == NULL || c == NULL || st->list != &c->open)
            break;
        while (!st->end_sent) {
            size_t n;
            uint8_t hdr[ASGI_FRAME_HDR_LEN];
            struct asgi_frame_header h;
            int end;

            avail = x->req_body != NULL ? evbuffer_get_length(x->req_body) : 0;
            if (avail == 0 && !x->req_done)
                break;
            if (evbuffer_get_length(c->s.out) >= AS_OUT_HIWAT) {
                if (!st->in_wants) {
                    st->in_wants = 1;
                    st->wnext = NULL;
                    *c->wants_tail = st;
                    c->wants_tail = &st->wnext;
                }
                break;
            }
            n = avail < c->max_frame ? avail : c->max_frame;
            if ((int64_t)n > st->send_credit)
                n = (size_t)st->send_credit;
            if (avail > 0 && n == 0)
                break; /* waits for CREDIT */
            end = x->req_done && n == avail;
            h = (struct asgi_frame_header){n, ASGI_DATA, end ? ASGI_F_END : 0, st->id};
            asgi_frame_header_encode(hdr, sizeof hdr, c->max_frame, &h);
            evbuffer_add(c->s.out, hdr, sizeof hdr);
            if (n > 0)
                evbuffer_remove_buffer(x->req_body, c->s.out, n);
            st->send_credit -= (int64_t)n;
            st->req_sent += n;
            took += n;
            if (end)
                st->end_sent = ended = 1;
        }
        conn_kick(c);
        /* Once the head is in, the response's read timeout runs instead. */
        if (!st->head && !(st->end_sent && !ended)) {
            if (ended)
                st->deadline_ms = gw_now_ms() + st->pool->u->first_byte_ms;
            else if (avail > 0 && (took > 0 || st->deadline_ms == 0))
                st->deadline_ms = gw_now_ms() + st->pool->u->send_ms; /* the app must take it */
            else if (avail == 0)
                st->deadline_ms = 0; /* the client's body timeout runs instead */
        }
        if (took > 0) {
            st->busy++;
            gw_exchange_req_drained(x);
            if (strm_unbusy(st))
                return;
        }
    } while (st->pump_again);
    st->in_pump = 0;
}

/* ---- frames from the app ------------------------------------------------------------------ */

/* Turns |n| decoded fields into pool->hh: names lower-cased in place (the payload is the
 * connection's input, writable), each checked so that it can go into a head as is. Returns
 * the count, or -1 when a field is unfit. */
static long to_h1(struct gw_asgi_pool *p, size_t first, size_t n)
{
    for (size_t i = first; i < first + n; i++) {
        struct gw_slice name = {p->ah[i].name.p, p->ah[i].name.len};
        struct gw_slice value = {p->ah[i].value.p, p->ah[i].value.len};
        char *w = (char *)(uintptr_t)name.p;

        if (!h1_field_valid(name, value))
            return -1;
        for (size_t k = 0; k < name.len; k++)
            if (w[k] >= 'A' && w[k] <= 'Z')
                w[k] = (char)(w[k] + 32);
        p->hh[i].name = name;
        p->hh[i].value = value;
    }
    return (long)(first + n);
}

/* Content-Length of a response head: -1 when absent, -2 when malformed or repeated with
 * another value. */
static int64_t content_length(const struct h1_header *h, size_t n)
{
    int64_t cl = -1;

    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;

        if (!GW_SLICE_EQ_LIT(h[i].name, "content-length"))
            continue;
        if (h[i].value.len == 0 || h[i].value.len > 15)
            return -2;
        for (size_t k = 0; k < h[i].value.len; k++) {
            char ch = h[i].value.p[k];
            if (ch < '0' || ch > '9')
                return -2;
            v = v * 10 + (ch - '0');
        }
        if (cl >= 0 && cl != v)
            return -2;
        cl = v;
    }
    return cl;
}

static void on_response(struct as_conn *c, struct as_strm *st, const struct asgi_frame_header *h,
                        uint8_t *pl)
{
    struct gw_asgi_pool *p = c->pool;
    struct asgi_http_response r;
    struct gw_resp resp;
    long n;
    int64_t cl;
    int rc;

    if (st->head) {
        stream_error(st, ASGI_ERR_PROTOCOL,
                     st->ws_accepted ? "HTTP_RESPONSE after WS_ACCEPT" : "a second HTTP_RESPONSE");
        return;
    }
    rc = asgi_decode_http_response(pl, h->length, &r, p->ah, p->nh);
    if (rc != ASGI_OK) {
        stream_error(st, rc == ASGI_E_TOO_MANY ? ASGI_ERR_INTERNAL : ASGI_ERR_FRAME_SIZE,
                     rc == ASGI_E_TOO_MANY ? "response head over limits.headers fields"
                                           : "malformed HTTP_RESPONSE");
        return;
    }
    n = to_h1(p, 0, r.n_headers);
    cl = n < 0 ? -2 : content_length(p->hh, (size_t)n);
    if (r.status < 200 || r.status > 599 || n < 0 || cl == -2) {
        stream_error(st, ASGI_ERR_PROTOCOL,
                     n < 0 ? "invalid response field" : cl == -2 ? "invalid Content-Length"
                                                                  : "invalid status");
        return;
    }
    memset(&resp, 0, sizeof resp);
    resp.status = r.status;
    resp.headers = p->hh;
    resp.nheaders = h1_drop_hop_by_hop(p->hh, (size_t)n);
    resp.has_body = !st->x->req.head && r.status != 204 && r.status != 304;
    if ((h->flags & ASGI_F_END) && resp.has_body) {
        if (cl > 0) {
            stream_error(st, ASGI_ERR_PROTOCOL, "no body after a Content-Length over 0");
            return;
        }
        cl = 0;
    }
    resp.content_length = cl;
    st->resp_left = resp.has_body ? cl : -1;
    st->no_body = !resp.has_body;
    st->head = 1;
    st->expect_trailers = (h->flags & ASGI_F_MORE) && (c->caps & ASGI_CAP_TRAILERS);
    st->deadline_ms = gw_now_ms() + p->u->read_ms;
    st->busy++;
    gw_exchange_resp_head(st->x, &resp);
    if (strm_unbusy(st) || st->x == NULL)
        return;
    if ((h->flags & ASGI_F_END) && !st->expect_trailers)
        strm_done(st, NULL, 0);
}

/* DATA: its payload is still in the connection's input, after the header (already drained). */
static void on_data(struct as_conn *c, struct as_strm *st, const struct asgi_frame_header *h)
{
    struct gw_asgi_pool *p = c->pool;
    uint32_t len = (uint32_t)h->length;
    int paused;

    if (!st->head || st->ws_accepted || ((h->flags & ASGI_F_END) && st->expect_trailers)) {
        evbuffer_drain(c->s.in, len);
        stream_error(st, ASGI_ERR_PROTOCOL, "DATA not allowed here");
        return;
    }
    if (len > st->recv_credit) {
        evbuffer_drain(c->s.in, len);
        stream_error(st, ASGI_ERR_FLOW, "DATA over the credit");
        return;
    }
    if (st->resp_left >= 0 && (int64_t)len > st->resp_left) {
        evbuffer_drain(c->s.in, len);
        stream_error(st, ASGI_ERR_PROTOCOL, "response body longer than its Content-Length");
        return;
    }
    st->recv_credit -= len;
    if (st->no_body) {
        evbuffer_drain(c->s.in, len);
        st->owed += len;
        st->deadline_ms = gw_now_ms() + p->u->read_ms;
        if (h->flags & ASGI_F_END)
            strm_done(st, NULL, 0);
        else
            give_credit(st, AS_CREDIT_BATCH);
        return;
    }
    if (st->resp_left >= 0)
        st->resp_left -= len;
    evbuffer_remove_buffer(c->s.in, p->tmp, len);
    st->busy++;
    paused = gw_exchange_resp_body_buf(st->x, p->tmp);
    evbuffer_drain(p->tmp, evbuffer_get_length(p->tmp));
    if (strm_unbusy(st) || st->x == NULL)
        return;
    st->owed += len;
    if (h->flags & ASGI_F_END) {
        strm_done(st, NULL, 0);
        return;
    }
    if (paused) {
        st->paused = 1;
        st->deadline_ms = 0; /* the client is slow, not the app */
        return;
    }
    st->deadline_ms = gw_now_ms() + p->u->read_ms;
    give_credit(st, AS_CREDIT_BATCH);
}

static void on_trailers(struct as_conn *c, struct as_strm *st, const struct asgi_frame_header *h,
                        uint8_t *pl)
{
    struct gw_asgi_pool *p = c->pool;
    struct asgi_trailers t;
    size_t total = 0;
    long n = 0;

    if (!st->expect_trailers) {
        stream_error(st, ASGI_ERR_PROTOCOL, "TRAILERS not agreed or not announced");
        return;
    }
    if (!(h->flags & ASGI_F_END)) {
        /* more_trailers: kept until the last, within the head's limits */
        uint8_t len4[4] = {(uint8_t)(h->length >> 24), (uint8_t)(h->length >> 16),
                           (uint8_t)(h->length >> 8), (uint8_t)h->length};

        if (st->trailers == NULL)
            st->trailers = evbuffer_new();
        if (st->trailers == NULL ||
            evbuffer_get_length(st->trailers) + h->length > p->cfg->limits.header_bytes) {
            stream_error(st, ASGI_ERR_INTERNAL, "trailers over limits.header_bytes");
            return;
        }
        evbuffer_add(st->trailers, len4, 4);
        evbuffer_add(st->trailers, pl, h->length);
        return;
    }
    if (st->trailers != NULL) {
        uint8_t *b = evbuffer_pullup(st->trailers, -1);
        size_t left = evbuffer_get_length(st->trailers);

        while (left >= 4) {
            size_t len = (size_t)b[0] << 24 | (size_t)b[1] << 16 | (size_t)b[2] << 8 | b[3];
            if (asgi_decode_trailers(b + 4, len, &t, p->ah + total, p->nh - total) != ASGI_OK)
                goto bad;
            total += t.n_headers;
            b += 4 + len;
            left -= 4 + len;
        }
    }
    if (asgi_decode_trailers(pl, h->length, &t, p->ah + total, p->nh - total) != ASGI_OK)
        goto bad;
    total += t.n_headers;
    n = to_h1(p, 0, total);
    if (n < 0)
        goto bad;
    strm_done(st, p->hh, h1_drop_hop_by_hop(p->hh, (size_t)n));
    return;
bad:
    stream_error(st, ASGI_ERR_PROTOCOL, "malformed or too many trailers");
}

/* PATHSEND: the app is done with the stream; the gateway sends the file from here on. */
static void on_pathsend(struct as_conn *c, struct as_strm *st, const struct asgi_frame_header *h,
                        uint8_t *pl)
{
    struct asgi_pathsend ps;
    char path[4096];
    struct stat sb;
    int fd;

    if (!st->head || st->ws_accepted || st->expect_trailers || !(c->caps & ASGI_CAP_PATHSEND) ||
        !(h->flags & ASGI_F_END)) {
        stream_error(st, ASGI_ERR_PROTOCOL, "PATHSEND not allowed here");
        return;
    }
    if (asgi_decode_pathsend(pl, h->length, &ps) != ASGI_OK || ps.path.len == 0 ||
        ps.path.p[0] != '/' || ps.path.len >= sizeof path ||
        memchr(ps.path.p, '\0', ps.path.len) != NULL) {
        stream_error(st, ASGI_ERR_FRAME_SIZE, "malformed PATHSEND (not an absolute path)");
        return;
    }
    if (st->no_body) {
        strm_done(st, NULL, 0); /* HEAD, 204, 304: the file is not sent */
        return;
    }
    memcpy(path, ps.path.p, ps.path.len);
    path[ps.path.len] = '\0';
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        gw_log_ctx(GW_LOG_ERROR, st->x->log_ctx, "upstream %s: pathsend %s: %s",
                   c->pool->u->name, path, fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        strm_fail(st, 0, R_PATHSEND, st->end_sent ? ASGI_ERR_NONE : ASGI_ERR_CANCEL);
        return;
    }
    st->fd = fd;
    unlink_conn(st, st->end_sent ? ASGI_ERR_NONE : ASGI_ERR_CANCEL);
    st->deadline_ms = 0;
    file_feed(st);
}

/* Passes the PATHSEND file on in steps, as fast as the client takes it. */
static void file_feed(struct as_strm *st)
{
    struct gw_asgi_pool *p = st->pool;

    while (st->x != NULL) {
        size_t step = AS_FILE_STEP;
        int n, paused;

        if (st->resp_left >= 0 && (uint64_t)st->resp_left < step)
            step = (size_t)st->resp_left;
        n = step > 0 ? evbuffer_read(p->tmp, st->fd, (int)step) : 0;
        if (n < 0) {
            gw_log_ctx(GW_LOG_ERROR, st->x->log_ctx, "upstream %s: pathsend read: %s",
                       p->u->name, strerror(errno));
            evbuffer_drain(p->tmp, evbuffer_get_length(p->tmp));
            strm_fail(st, 0, R_PATHSEND, ASGI_ERR_NONE);
            return;
        }
        if (n == 0) {
            strm_done(st, NULL, 0);
            return;
        }
        if (st->resp_left >= 0)
            st->resp_left -= n;
        st->busy++;
        paused = gw_exchange_resp_body_buf(st->x, p->tmp);
        evbuffer_drain(p->tmp, evbuffer_get_length(p->tmp));
        if (strm_unbusy(st) || st->x == NULL)
            return;
        if (paused) {
            st->paused = 1;
            return;
        }
    }
}

static void on_reset(struct as_strm *st, const struct asgi_frame_header *h, const uint8_t *pl)
{
    struct asgi_reset r;

    if (asgi_decode_reset(pl, h->length, &r) != ASGI_OK) {
        stream_error(st, ASGI_ERR_FRAME_SIZE, "malformed RESET");
        return;
    }
    /* The app is done with the stream: no RESET goes back. */
    if (r.error == ASGI_ERR_REFUSED && !st->head) {
        retry_or_fail(st);
        return;
    }
    if (st->x != NULL)
        gw_log_ctx(GW_LOG_INFO, st->x->log_ctx, "upstream %s: stream %u reset by the app (%u)",
                   st->pool->u->name, (unsigned)st->id, (unsigned)r.error);
    strm_fail(st, 0, R_RESET, ASGI_ERR_NONE);
}

static void on_credit(struct as_strm *st, const struct asgi_frame_header *h, const uint8_t *pl)
{
    struct asgi_credit cr;

    if (asgi_decode_credit(pl, h->length, &cr) != ASGI_OK) {
        stream_error(st, ASGI_ERR_FRAME_SIZE, "malformed CREDIT");
        return;
    }
    if (cr.increment == 0 || st->send_credit + cr.increment > (int64_t)ASGI_CREDIT_MAX) {
        stream_error(st, ASGI_ERR_FLOW, "CREDIT of 0 or over 2^31-1");
        return;
    }
    st->send_credit += cr.increment;
    if (st->ws)
        ws_pump(st);
    else if (!st->end_sent)
        pump(st);
}

/* ---- websocket streams (§5) -------------------------------------------------------------- */

/* Sends the client message piece waiting in st->ws_out as far as the app's credit goes; once
 * it is all out, the downstream may read the client again. */
static void ws_pump(struct as_strm *st)
{
    struct as_conn *c = st->conn;

    if (c == NULL || st->list != &c->open || st->x == NULL)
        return;
    while (st->ws_out_pending) {
        size_t avail = evbuffer_get_length(st->ws_out);
        size_t n = avail < c->max_frame ? avail : c->max_frame;
        uint8_t hdr[ASGI_FRAME_HDR_LEN];
        struct asgi_frame_header h;
        int last;

        if (avail == 0 && !st->ws_out_fin) {
            st->ws_out_pending = 0; /* an empty middle piece says nothing */
            break;
        }
        if ((int64_t)n > st->send_credit)
            n = (size_t)st->send_credit;
        if (avail > 0 && n == 0)
            break; /* waits for CREDIT */
        last = n == avail;
        h = (struct asgi_frame_header){n, ASGI_WS_MESSAGE,
                                       (uint8_t)((st->ws_out_text ? ASGI_F_TEXT : 0) |
                                                 (last && st->ws_out_fin ? 0 : ASGI_F_MORE)),
                                       st->id};
        asgi_frame_header_encode(hdr, sizeof hdr, c->max_frame, &h);
        evbuffer_add(c->s.out, hdr, sizeof hdr);
        if (n > 0)
            evbuffer_remove_buffer(st->ws_out, c->s.out, n);
        st->send_credit -= (int64_t)n;
        if (last)
            st->ws_out_pending = 0;
    }
    conn_kick(c);
    if (!st->ws_out_pending && st->ws_out_stalled) {
        st->ws_out_stalled = 0;
        st->busy++;
        gw_exchange_req_drained(st->x);
        strm_unbusy(st);
    }
}

/* The app ended the websocket with WS_CLOSE (or refused it before accepting). */
static void ws_end(struct as_strm *st, unsigned code, const char *reason, size_t n)
{
    struct gw_exchange *x = st->x;

    unlink_conn(st, ASGI_ERR_NONE);
    st->x = NULL;
    st->busy++;
    if (x != NULL)
        gw_exchange_ws_close(x, code, reason, n);
    if (--st->busy > 0)
        st->dead = 1;
    else
        strm_free(st);
}

static void on_ws_accept(struct as_conn *c, struct as_strm *st, const struct asgi_frame_header *h,
                         uint8_t *pl)
{
    struct gw_asgi_pool *p = c->pool;
    static const struct gw_slice proto_name = {"Sec-WebSocket-Protocol", 22};
    struct asgi_ws_accept a;
    struct gw_slice sub;
    long n;
    int rc;

    if (!st->ws || st->head) {
        stream_error(st, ASGI_ERR_PROTOCOL, "WS_ACCEPT not allowed here");
        return;
    }
    rc = asgi_decode_ws_accept(pl, h->length, &a, p->ah, p->nh);
    if (rc != ASGI_OK) {
        stream_error(st, rc == ASGI_E_TOO_MANY ? ASGI_ERR_INTERNAL : ASGI_ERR_FRAME_SIZE,
                     rc == ASGI_E_TOO_MANY ? "WS_ACCEPT over limits.headers fields"
                                           : "malformed WS_ACCEPT");
        return;
    }
    sub = (struct gw_slice){a.subprotocol.p, a.subprotocol.len};
    n = to_h1(p, 0, a.n_headers);
    if (n < 0 || (sub.len > 0 && !h1_field_valid(proto_name, sub))) {
        stream_error(st, ASGI_ERR_PROTOCOL, "invalid WS_ACCEPT field");
        return;
    }
    if (sub.len > 0 && !gw_exchange_ws_offered(st->x, sub)) {
        stream_error(st, ASGI_ERR_PROTOCOL,
                     "WS_ACCEPT with a subprotocol the client did not offer");
        return;
    }
    st->ws_accepted = 1;
    st->head = 1;
    st->deadline_ms = 0; /* a websocket lives as long as both ends want; pings watch it */
    st->busy++;
    gw_exchange_ws_accept(st->x, sub, p->hh, (size_t)n);
    strm_unbusy(st);
}

static void on_ws_message(struct as_strm *st, const struct asgi_frame_header *h,
                          const uint8_t *pl)
{
    uint32_t len = (uint32_t)h->length;
    unsigned flags = 0;
    int paused;

    if (!st->ws_accepted) {
        stream_error(st, ASGI_ERR_PROTOCOL, "WS_MESSAGE before WS_ACCEPT");
        return;
    }
    if (len > st->recv_credit) {
        stream_error(st, ASGI_ERR_FLOW, "WS_MESSAGE over the credit");
        return;
    }
    if (!st->ws_in_msg) {
        flags |= WS_F_FIRST;
        st->ws_utf8 = WS_UTF8_ACCEPT;
        st->ws_in_text = (h->flags & ASGI_F_TEXT) != 0;
    } else if (st->ws_in_text != ((h->flags & ASGI_F_TEXT) != 0)) {
        stream_error(st, ASGI_ERR_PROTOCOL, "a WS_MESSAGE piece that changes TEXT");
        return;
    }
    if (h->flags & ASGI_F_TEXT) {
        flags |= WS_F_TEXT;
        /* The client would fail the connection on bad text (1007): catch it here instead. */
        if (ws_utf8_feed(&st->ws_utf8, pl, len) != 0 ||
            (!(h->flags & ASGI_F_MORE) && st->ws_utf8 != WS_UTF8_ACCEPT)) {
            stream_error(st, ASGI_ERR_PROTOCOL, "a text WS_MESSAGE that is not UTF-8");
            return;
        }
    }
    if (!(h->flags & ASGI_F_MORE))
        flags |= WS_F_FIN;
    st->ws_in_msg = (h->flags & ASGI_F_MORE) != 0;
    st->recv_credit -= len;
    st->busy++;
    paused = gw_exchange_ws_send(st->x, flags, pl, len);
    if (strm_unbusy(st) || st->x == NULL)
        return;
    st->owed += len;
    if (paused) {
        st->paused = 1;
        return;
    }
    give_credit(st, AS_CREDIT_BATCH);
}

static void on_ws_close(struct as_strm *st, const struct asgi_frame_header *h, const uint8_t *pl)
{
    struct asgi_close cl;
    uint32_t u = WS_UTF8_ACCEPT;
    size_t rlen;

    if (!st->ws || (st->head && !st->ws_accepted)) {
        stream_error(st, ASGI_ERR_PROTOCOL, "WS_CLOSE not allowed here");
        return;
    }
    if (asgi_decode_close(pl, h->length, &cl) != ASGI_OK) {
        stream_error(st, ASGI_ERR_FRAME_SIZE, "malformed WS_CLOSE");
        return;
    }
    if (!ws_close_code_valid(cl.code)) {
        stream_error(st, ASGI_ERR_PROTOCOL, "WS_CLOSE with a code that may not be sent");
        return;
    }
    rlen = cl.reason.len;
    if (ws_utf8_feed(&u, (const uint8_t *)cl.reason.p, rlen) != 0 || u != WS_UTF8_ACCEPT)
        rlen = 0; /* a reason is only a courtesy: drop one that is not text */
    ws_end(st, cl.code, cl.reason.p, rlen);
}

/* ---- the connection ----------------------------------------------------------------------- */

static void conn_error(struct as_conn *c, uint32_t code, const char *what)
{
    send_goaway(c, code, what);
    gw_stream_flush(&c->s);
    conn_lost(c, what);
}

static void on_hello(struct as_conn *c, const struct asgi_frame_header *h, const uint8_t *pl)
{
    struct gw_asgi_pool *p = c->pool;
    struct asgi_hello hello;
    const char *bad = NULL;
    uint32_t code = ASGI_ERR_PROTOCOL;
    int rc = asgi_decode_hello(pl, h->length, &hello);

    if (rc != ASGI_OK || !(h->flags & ASGI_F_ACK) || h->stream != 0)
        bad = "malformed HELLO", code = rc == ASGI_E_FRAME_SIZE ? ASGI_ERR_FRAME_SIZE : code;
    else if (hello.version != ASGI_VERSION)
        bad = "the app speaks another protocol version", code = ASGI_ERR_VERSION;
    else if (hello.max_frame < ASGI_MIN_MAX_FRAME || hello.max_frame > ASGI_MAX_MAX_FRAME ||
             hello.initial_credit > ASGI_CREDIT_MAX || hello.max_streams == 0)
        bad = "HELLO limits out of range";
    if (bad != NULL) {
        conn_error(c, code, bad);
        return;
    }
    c->max_frame = hello.max_frame;
    c->max_streams = hello.max_streams;
    c->credit = hello.initial_credit;
    c->caps = hello.capabilities & AS_CAPS;
    c->state = AC_READY;
    c->next_id = 1;
    c->backoff_ms = 0;
    if (c->fails > 0)
        gw_log_info("upstream %s: connection %u to %s is back", p->u->name, c->idx,
                    c->label);
    c->fails = 0;
    gw_stream_set_read_timeout(&c->s, 0); /* PINGs watch a ready connection */
    conn_kick(c);
}

static void on_ping(struct as_conn *c, const struct asgi_frame_header *h, const uint8_t *pl)
{
    struct asgi_ping ping;
    uint8_t f[ASGI_FRAME_HDR_LEN + ASGI_PING_LEN];

    if (h->stream != 0) {
        conn_error(c, ASGI_ERR_PROTOCOL, "PING on a stream");
        return;
    }
    if (asgi_decode_ping(pl, h->length, &ping) != ASGI_OK) {
        conn_error(c, ASGI_ERR_FRAME_SIZE, "malformed PING");
        return;
    }
    if (h->flags & ASGI_F_ACK) {
        c->ping_sent_ms = 0;
        return;
    }
    /* An app that pings but does not read gets no answers past this (the PINGs are its). */
    if (evbuffer_get_length(c->s.out) >= 4 * AS_OUT_HIWAT)
        return;
    put_frame(c, f, asgi_encode_ping(f, sizeof f, c->max_frame, ASGI_F_ACK, 0, &ping));
}

/* The first open stream above |last|, or NULL. */
static struct as_strm *above(struct as_conn *c, uint32_t last)
{
    for (struct as_strm *st = c->open.head; st != NULL; st = st->next)
        if (st->id > last)
            return st;
    return NULL;
}

static void on_goaway(struct as_conn *c, const struct asgi_frame_header *h, const uint8_t *pl)
{
    struct gw_asgi_pool *p = c->pool;
    struct asgi_goaway g;
    uint64_t gen = c->gen;
    struct as_strm *st;
    char why[160];

    if (h->stream != 0 || asgi_decode_goaway(pl, h->length, &g) != ASGI_OK) {
        conn_error(c, h->stream != 0 ? ASGI_ERR_PROTOCOL : ASGI_ERR_FRAME_SIZE,
                   "malformed GOAWAY");
        return;
    }
    if (g.error != ASGI_ERR_NONE || c->state == AC_HELLO) {
        /* Streams it never saw may go elsewhere before the rest fail with the connection. */
        while (!p->closing && c->gen == gen && (st = above(c, g.last_stream)) != NULL)
            retry_or_fail(st);
        if (c->gen != gen || p->closing)
            return;
        snprintf(why, sizeof why, "the app sent GOAWAY %u (%.*s)", (unsigned)g.error,
                 (int)(g.debug.len > 100 ? 100 : g.debug.len), g.debug.p);
        conn_lost(c, why);
        return;
    }
    gw_log_info("upstream %s: connection %u to %s: the app drains", p->u->name, c->idx,
                c->label);
    c->state = AC_GOAWAY;
    c->goaway_last = g.last_stream;
    /* Streams it never saw go elsewhere; those it has finish here. */
    while (!p->closing && c->gen == gen && (st = above(c, g.last_stream)) != NULL)
        retry_or_fail(st);
    while (!p->closing && c->gen == gen && (st = c->pending.head) != NULL) {
        unlink_conn(st, ASGI_ERR_NONE);
        assign(st, c, 0);
    }
    if (c->gen == gen)
        conn_kick(c); /* closes it when no stream is left */
}

/* One whole frame (header and payload) is at the start of the input: handle and consume it. */
static void on_frame(struct as_conn *c, const struct asgi_frame_header *h)
{
    size_t whole = ASGI_FRAME_HDR_LEN + h->length;
    struct as_strm *st = NULL;
    uint8_t *pl;

    if (h->type == ASGI_DATA || h->type == ASGI_HTTP_RESPONSE || h->type == ASGI_TRAILERS ||
        h->type == ASGI_PATHSEND || h->type == ASGI_RESET || h->type == ASGI_CREDIT ||
        h->type == ASGI_WS_ACCEPT || h->type == ASGI_WS_MESSAGE || h->type == ASGI_WS_CLOSE) {
        if (c->state == AC_HELLO || h->stream == 0 || h->stream >= c->next_id) {
            conn_error(c, ASGI_ERR_PROTOCOL, "a stream frame for a stream never opened");
            return;
        }
        st = tab_find(c, h->stream);
        if (st == NULL) {
            evbuffer_drain(c->s.in, whole); /* a stream that has ended: late frames go */
            return;
        }
        if (h->type == ASGI_DATA) {
            evbuffer_drain(c->s.in, ASGI_FRAME_HDR_LEN);
            on_data(c, st, h);
            return;
        }
    }
    pl = evbuffer_pullup(c->s.in, (ev_ssize_t)whole);
    if (pl == NULL) {
        conn_lost(c, "out of memory");
        return;
    }
    pl += ASGI_FRAME_HDR_LEN;
    if (c->state == AC_HELLO && h->type != ASGI_HELLO && h->type != ASGI_GOAWAY) {
        conn_error(c, ASGI_ERR_PROTOCOL, "a frame before HELLO");
        return;
    }
    switch (h->type) {
    case ASGI_HELLO:
        if (c->state != AC_HELLO)
            conn_error(c, ASGI_ERR_PROTOCOL, "HELLO after the handshake");
        else
            on_hello(c, h, pl);
        break;
    case ASGI_PING:
        on_ping(c, h, pl);
        break;
    case ASGI_GOAWAY:
        on_goaway(c, h, pl);
        break;
    case ASGI_HTTP_RESPONSE:
        on_response(c, st, h, pl);
        break;
    case ASGI_TRAILERS:
        on_trailers(c, st, h, pl);
        break;
    case ASGI_PATHSEND:
        on_pathsend(c, st, h, pl);
        break;
    case ASGI_RESET:
        on_reset(st, h, pl);
        break;
    case ASGI_CREDIT:
        on_credit(st, h, pl);
        break;
    case ASGI_WS_ACCEPT:
        on_ws_accept(c, st, h, pl);
        break;
    case ASGI_WS_MESSAGE:
        on_ws_message(st, h, pl);
        break;
    case ASGI_WS_CLOSE:
        on_ws_close(st, h, pl);
        break;
    case ASGI_HTTP_REQUEST:
    case ASGI_DISCONNECT:
    case ASGI_WS_CONNECT:
        /* The gateway's frames: an error of that stream when it is one of ours, else of the
         * connection. */
        if (h->stream == 0 || h->stream >= c->next_id) {
            conn_error(c, ASGI_ERR_PROTOCOL, "a frame the app may not send");
            return;
        }
        st = tab_find(c, h->stream);
        if (st != NULL) {
            stream_error(st, ASGI_ERR_PROTOCOL, "a frame the app may not send");
            if (c->state == AC_DOWN)
                return;
        }
        break;
    default:
        break; /* a later version's frame: skipped (section 2) */
    }
    /* A handler that lost the connection parked its input already. */
    if (c->state != AC_DOWN)
        evbuffer_drain(c->s.in, whole);
}

static void on_read(struct gw_stream *s, void *arg)
{
    struct as_conn *c = arg;
    struct gw_asgi_pool *p = c->pool;
    uint64_t gen = c->gen;

    pool_enter(p);
    c->last_rx_ms = gw_now_ms();
    while (!p->closing && c->gen == gen) {
        size_t len = evbuffer_get_length(s->in);
        struct asgi_frame_header h;

        if (len < ASGI_FRAME_HDR_LEN)
            break;
        if (asgi_frame_header_decode(evbuffer_pullup(s->in, ASGI_FRAME_HDR_LEN),
                                     ASGI_FRAME_HDR_LEN, AS_MAX_FRAME, &h) != ASGI_OK) {
            conn_error(c, ASGI_ERR_FRAME_SIZE, "a frame over the gateway's max_frame");
            break;
        }
        if (len < ASGI_FRAME_HDR_LEN + h.length)
            break;
        on_frame(c, &h);
    }
    pool_leave(p);
}

static void on_drain(struct gw_stream *s, void *arg)
{
    struct as_conn *c = arg;

    (void)s;
    if (c->wants != NULL)
        conn_kick(c);
}

static void conn_connected(struct as_conn *c)
{
    struct gw_asgi_pool *p = c->pool;
    struct asgi_hello hello = {ASGI_VERSION, AS_MAX_FRAME, 0, AS_CREDIT, AS_CAPS};
    uint8_t f[ASGI_FRAME_HDR_LEN + ASGI_HELLO_LEN];

    c->state = AC_HELLO;
    c->max_frame = ASGI_DEFAULT_MAX_FRAME;
    c->s.read_size = AS_READ_SIZE;
    c->s.lowat = AS_OUT_HIWAT / 2;
    c->last_rx_ms = gw_now_ms();
    c->ping_sent_ms = 0;
    gw_stream_set_read_timeout(&c->s, p->u->connect_ms); /* the app's HELLO */
    gw_stream_set_write_timeout(&c->s, p->u->send_ms);
    put_frame(c, f, asgi_encode_hello(f, sizeof f, ASGI_MAX_LEN, 0, 0, &hello));
    gw_stream_read(&c->s, 1);
}

static void on_event(struct gw_stream *s, enum gw_stream_what what, void *arg)
{
    struct as_conn *c = arg;
    struct gw_asgi_pool *p = c->pool;
    char why[96];

    pool_enter(p);
    switch (what) {
    case GW_STREAM_CONNECTED:
        conn_connected(c);
        break;
    case GW_STREAM_EOF:
        conn_lost(c, c->state == AC_HELLO ? "closed before HELLO" : "closed by the app");
        break;
    case GW_STREAM_READ_TIMEOUT:
        conn_lost(c, "no HELLO within timeouts.connect");
        break;
    case GW_STREAM_WRITE_TIMEOUT:
        conn_lost(c, c->state == AC_CONNECTING ? "connect timed out"
                                               : "the app took no byte within timeouts.send");
        break;
    case GW_STREAM_ERROR:
    default:
        snprintf(why, sizeof why, "%s", strerror(s->err));
        conn_lost(c, why);
        break;
    }
    pool_leave(p);
}

static void conn_connect(struct as_conn *c)
{
    struct gw_asgi_pool *p = c->pool;
    int now = 0;

    c->state = AC_CONNECTING;
    c->gen++;
    if (gw_stream_connect_now(&c->s, p->base, (const struct sockaddr *)&c->addr.ss, c->addr.len,
                              p->u->connect_ms, on_read, on_drain, on_event, c, &now) != 0) {
        char why[96];

        c->state = AC_DOWN;
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        conn_lost(c, why);
        return;
    }
    if (now)
        conn_connected(c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct as_conn *c = arg;

    (void)fd;
    (void)what;
    pool_enter(c->pool);
    if (c->state == AC_DOWN && !c->retired)
        conn_connect(c);
    pool_leave(c->pool);
}

/* Takes a closed retired connection out of the pool; it is freed once no callback of the
 * pool is on the stack (callers may still look at it). */
static void conn_bury(struct as_conn *c)
{
    struct gw_asgi_pool *p = c->pool;

    if (c->buried)
        return;
    for (size_t i = 0; i < p->nconns; i++) {
        if (p->conns[i] == c) {
            memmove(&p->conns[i], &p->conns[i + 1], (p->nconns - i - 1) * sizeof *p->conns);
            p->nconns--;
            break;
        }
    }
    event_del(c->retry);
    c->buried = 1;
    c->gnext = p->grave;
    p->grave = c;
}

/* The connection is gone (|why|; NULL: a drained one closing): its open streams fail, its
 * pending ones go elsewhere, and it is reopened after the backoff (a retired one is buried
 * instead). */
static void conn_lost(struct as_conn *c, const char *why)
{
    struct gw_asgi_pool *p = c->pool;
    struct as_list open = c->open, pending = c->pending;
    struct timeval tv;
    struct as_strm *st;

    if (why != NULL && (c->fails++ == 0 || c->state >= AC_HELLO))
        gw_log_warn("upstream %s: connection %u to %s: %s%s", p->u->name, c->idx,
                    c->label, why,
                    open.n > 0 ? "; failing its streams" : "; reconnecting");
    c->state = AC_DOWN;
    c->gen++;
    gw_stream_park(&c->s);
    c->open = (struct as_list){NULL, NULL, 0};
    c->pending = (struct as_list){NULL, NULL, 0};
    c->wants = NULL;
    c->wants_tail = &c->wants;
    if (c->tab != NULL)
        memset(c->tab, 0, (c->tabmask + 1) * sizeof *c->tab);
    for (st = open.head; st != NULL; st = st->next)
        st->list = &open, st->conn = NULL, st->in_wants = 0, st->wnext = NULL;
    for (st = pending.head; st != NULL; st = st->next)
        st->list = &pending, st->conn = NULL;

    /* A drained connection comes back at once; a failed one after a growing pause. */
    c->backoff_ms = why == NULL ? 0
                    : c->backoff_ms == 0 ? AS_BACKOFF_MIN_MS
                    : c->backoff_ms * 2 > AS_BACKOFF_MAX_MS ? AS_BACKOFF_MAX_MS
                                                             : c->backoff_ms * 2;
    tv.tv_sec = c->backoff_ms / 1000;
    tv.tv_usec = (c->backoff_ms % 1000) * 1000;
    if (c->retired)
        conn_bury(c);
    else if (!p->closing)
        evtimer_add(c->retry, &tv);

    /* The lists were taken whole: each stream is handled once, and one that a callback
     * cancels meanwhile leaves these lists through unlink_conn(). Pending streams get
     * another connection within `retries`, never one reopened for them (no storm of
     * connects while the app is down). */
    while ((st = open.head) != NULL) {
        list_remove(&open, st);
        st->list = NULL;
        strm_fail(st, 0, st->head ? GW_R_MID_CLOSED : GW_R_CLOSED, ASGI_ERR_NONE);
    }
    while ((st = pending.head) != NULL) {
        list_remove(&pending, st);
        st->list = NULL;
        if (st->tries++ < p->u->retries)
            assign(st, c, 0);
        else
            strm_end(st, 502, why != NULL ? GW_R_REFUSED : R_RESET, ASGI_ERR_NONE, NULL, 0);
    }
}

/* Deferred work of a connection, once per loop turn: a drained connection closes, pending
 * streams open, bodies waiting for room go on, and the output is written in one go. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct as_conn *c = arg;
    struct gw_asgi_pool *p = c->pool;
    uint64_t gen = c->gen;

    (void)fd;
    (void)what;
    c->kicked = 0;
    pool_enter(p);
    if (c->state == AC_GOAWAY && c->open.n == 0) {
        gw_stream_flush(&c->s);
        conn_lost(c, NULL);
    } else if (c->state == AC_READY || c->state == AC_GOAWAY) {
        open_pending(c);
        while (!p->closing && c->gen == gen && c->wants != NULL &&
               evbuffer_get_length(c->s.out) < AS_OUT_HIWAT) {
            struct as_strm *st = c->wants;

            c->wants = st->wnext;
            if (c->wants == NULL)
                c->wants_tail = &c->wants;
            st->wnext = NULL;
            st->in_wants = 0;
            pump(st);
        }
        if (!p->closing && c->gen == gen) {
            gw_stream_flush(&c->s);
            /* A flush that took everything arms no drain callback: the streams still
             * waiting for room go on at the next turn. */
            if (c->wants != NULL && evbuffer_get_length(c->s.out) < AS_OUT_HIWAT)
                conn_kick(c);
        }
    } else if (c->state == AC_HELLO) {
        gw_stream_flush(&c->s);
    }
    pool_leave(p);
}

static void conn_kick(struct as_conn *c)
{
    if (c->kicked)
        return;
    c->kicked = 1;
    event_active(c->kick, EV_WRITE, 1);
}

/* The first stream of |c| past its deadline at |now|, or NULL. */
static struct as_strm *expired(struct as_conn *c, uint64_t now)
{
    for (struct as_strm *st = c->open.head; st != NULL; st = st->next)
        if (st->deadline_ms != 0 && now >= st->deadline_ms)
            return st;
    for (struct as_strm *st = c->pending.head; st != NULL; st = st->next)
        if (st->deadline_ms != 0 && now >= st->deadline_ms)
            return st;
    return NULL;
}

/* Timeouts of streams, and PINGs of connections: idle ones are pinged, and one that leaves a
 * PING unanswered past ping.timeout is lost. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct gw_asgi_pool *p = arg;
    uint64_t now = gw_now_ms();

    (void)fd;
    (void)what;
    pool_enter(p);
    /* Waiting for a first answer for a name: timeouts.connect (the deadline adds first_byte). */
    for (struct as_strm *st = p->waiting.head; st != NULL && !p->closing;) {
        struct as_strm *next = st->next;

        if (now + p->u->first_byte_ms >= st->deadline_ms) {
            if (st->x != NULL)
                gw_resolve_log_unresolved(p->names, p->u, st->x->log_ctx,
                                          " (no answer within timeouts.connect)");
            strm_fail(st, 1, GW_R_TIMEOUT, ASGI_ERR_NONE);
            next = p->waiting.head; /* failing one may have ended others: start over */
        }
        st = next;
    }
    for (size_t i = 0; i < p->nconns && !p->closing; i++) {
        struct as_conn *c = p->conns[i];
        struct as_strm *st;

        if (c->state == AC_READY || c->state == AC_GOAWAY) {
            if (c->ping_sent_ms != 0 && now - c->ping_sent_ms >= p->u->ping_timeout_ms) {
                conn_lost(c, "PING unanswered within ping.timeout");
                continue;
            }
            if (c->ping_sent_ms == 0 && now - c->last_rx_ms >= p->u->ping_interval_ms) {
                struct asgi_ping ping;
                uint8_t f[ASGI_FRAME_HDR_LEN + ASGI_PING_LEN];

                memcpy(ping.opaque, &now, sizeof ping.opaque);
                put_frame(c, f, asgi_encode_ping(f, sizeof f, c->max_frame, 0, 0, &ping));
                c->ping_sent_ms = now;
            }
        }
        while (!p->closing && (st = expired(c, now)) != NULL) {
            if (st->x != NULL)
                gw_log_ctx(GW_LOG_WARN, st->x->log_ctx, "upstream %s: %s", p->u->name,
                           st->head ? GW_R_MID_TIMEOUT : GW_R_TIMEOUT);
            strm_fail(st, 1, st->head ? GW_R_MID_TIMEOUT : GW_R_TIMEOUT,
                      st->list == &c->open ? ASGI_ERR_CANCEL : ASGI_ERR_NONE);
        }
    }
    pool_leave(p);
}

/* ---- exchange ops ------------------------------------------------------------------------- */

static void up_start(struct gw_exchange *x)
{
    struct gw_asgi_pool *p = x->pool;
    struct as_strm *st = gw_xcalloc(1, sizeof *st);

    st->pool = p;
    st->x = x;
    st->fd = -1;
    st->resp_left = -1;
    st->ws = x->ws != 0;
    x->up_ctx = st;
    st->deadline_ms = gw_now_ms() + p->u->connect_ms + p->u->first_byte_ms;
    pool_enter(p);
    assign(st, NULL, 1);
    pool_leave(p);
}

static void up_req_body(struct gw_exchange *x)
{
    struct as_strm *st = x->up_ctx;

    pool_enter(st->pool);
    if (st->conn != NULL && st->list == &st->conn->open)
        pump(st);
    pool_leave(st->pool);
}

static void up_resume(struct gw_exchange *x)
{
    struct as_strm *st = x->up_ctx;
    struct gw_asgi_pool *p = st->pool;

    pool_enter(p);
    if (st->paused) {
        st->paused = 0;
        if (st->fd >= 0) {
            file_feed(st);
        } else {
            if (!st->ws_accepted)
                st->deadline_ms = gw_now_ms() + p->u->read_ms;
            give_credit(st, 1);
        }
    }
    pool_leave(p);
}

static void up_cancel(struct gw_exchange *x)
{
    struct as_strm *st = x->up_ctx;
    struct gw_asgi_pool *p = st->pool;
    struct as_conn *c = st->conn;

    pool_enter(p);
    /* The app hears of it as http.disconnect; its later frames for the stream are dropped. */
    if (c != NULL && st->list == &c->open)
        send_disconnect(c, st->id, st->ws ? WS_CLOSE_ABNORMAL : 0, NULL, 0);
    unlink_conn(st, ASGI_ERR_NONE);
    st->x = NULL;
    if (st->busy > 0)
        st->dead = 1;
    else
        strm_free(st);
    pool_leave(p);
}

static int up_ws_message(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n)
{
    struct as_strm *st = x->up_ctx;
    int stalled;

    if (st->ws_out == NULL && (st->ws_out = evbuffer_new()) == NULL)
        return 0; /* out of memory: the piece is lost, and the ping or the app notices */
    pool_enter(st->pool);
    evbuffer_add(st->ws_out, p, n);
    st->ws_out_pending = 1;
    st->ws_out_text = (flags & WS_F_TEXT) != 0;
    st->ws_out_fin = (flags & WS_F_FIN) != 0;
    ws_pump(st);
    /* One piece waits at most: the client is not read until it is out. */
    stalled = st->ws_out_pending;
    st->ws_out_stalled = (unsigned)stalled;
    pool_leave(st->pool);
    return stalled;
}

static void up_ws_close(struct gw_exchange *x, unsigned code, const char *reason, size_t n)
{
    struct as_strm *st = x->up_ctx;
    struct gw_asgi_pool *p = st->pool;
    struct as_conn *c = st->conn;

    pool_enter(p);
    /* §5.4: the app hears the client's close as DISCONNECT with its code and reason. */
    if (c != NULL && st->list == &c->open)
        send_disconnect(c, st->id, code, reason, n);
    unlink_conn(st, ASGI_ERR_NONE);
    st->x = NULL;
    if (st->busy > 0)
        st->dead = 1;
    else
        strm_free(st);
    pool_leave(p);
}

const struct gw_upstream_ops gw_asgi_upstream_ops = {
    .start = up_start,
    .req_body = up_req_body,
    .resume = up_resume,
    .cancel = up_cancel,
    .ws_message = up_ws_message,
    .ws_close = up_ws_close,
};

/* ---- pool --------------------------------------------------------------------------------- */

/* A new connection of server |sc| to |a|, listed in the pool; not connected yet. NULL when out
 * of memory. */
static struct as_conn *conn_add(struct gw_asgi_pool *p, const struct gw_server_conf *sc,
                                const struct gw_addr *a, int named)
{
    struct as_conn *c = gw_xcalloc(1, sizeof *c);
    char ip[128];
    size_t n;

    c->pool = p;
    c->conf = sc;
    c->addr = *a;
    c->idx = p->next_idx++;
    c->wants_tail = &c->wants;
    if (named) {
        gw_addr_format(a, ip, sizeof ip);
        n = strlen(sc->address) + strlen(ip) + 4;
        c->label = gw_xmalloc(n);
        snprintf(c->label, n, "%s (%s)", sc->address, ip);
    } else {
        c->label = gw_xstrndup(sc->address, strlen(sc->address));
    }
    c->kick = event_new(p->base, -1, 0, on_kick, c);
    c->retry = evtimer_new(p->base, on_retry, c);
    if (c->kick == NULL || c->retry == NULL) {
        conn_destroy(c);
        return NULL;
    }
    if (p->nconns == p->capconns) {
        p->capconns = p->capconns ? 2 * p->capconns : 8;
        p->conns = gw_xrealloc(p->conns, p->capconns * sizeof *p->conns);
    }
    p->conns[p->nconns++] = c;
    return c;
}

/* |c|'s address left its name's answer: it takes no new stream, its waiting ones go to the
 * other connections, and it closes once its open streams are done (at once when it has none),
 * never to be reopened. */
static void conn_retire(struct as_conn *c)
{
    struct gw_asgi_pool *p = c->pool;
    uint64_t gen = c->gen;
    struct as_strm *st;

    c->retired = 1;
    event_del(c->retry);
    gw_log_info("upstream %s: connection %u to %s: the address is gone from the answer; "
                "closing it%s",
                p->u->name, c->idx, c->label, c->open.n > 0 ? " once its streams are done" : "");
    if (c->state == AC_DOWN) {
        conn_bury(c);
        return;
    }
    if (c->state == AC_READY)
        c->state = AC_GOAWAY; /* as when the app drains: no new streams here */
    while (!p->closing && c->gen == gen && (st = c->pending.head) != NULL) {
        unlink_conn(st, ASGI_ERR_NONE);
        assign(st, c, 0);
    }
    if (p->closing || c->gen != gen)
        return;
    if (c->state != AC_GOAWAY)
        conn_lost(c, NULL); /* connecting, or waiting for HELLO: nothing of it is in use */
    else
        conn_kick(c);       /* on_kick() closes it when no stream is left */
}

static int addr_eq(const struct gw_addr *a, const struct gw_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Makes server |i|'s connections follow its addresses: `connections` new ones to each new
 * address (first, so that streams moved off retired ones find them), and those to an address
 * that went are retired. */
static void server_sync(struct gw_asgi_pool *p, size_t i)
{
    const struct gw_server_conf *sc = &p->u->servers[i];
    size_t n, first = p->nconns;
    const struct gw_addr *a = gw_resolve_addrs(p->names, i, &n);
    int named = gw_resolve_named(p->names, i);
    struct as_conn *c;

    for (size_t e = 0; e < n; e++) {
        int have = 0;

        for (size_t k = 0; k < p->nconns && !have; k++)
            have = p->conns[k]->conf == sc && !p->conns[k]->retired &&
                   addr_eq(&p->conns[k]->addr, &a[e]);
        for (unsigned k = 0; !have && k < p->u->connections; k++)
            if (conn_add(p, sc, &a[e], named) == NULL)
                gw_log_error("upstream %s server %s: cannot add a connection (out of memory)",
                             p->u->name, sc->address);
    }
    /* Marked first, retired after: retiring calls into exchanges, which may bury others. */
    for (size_t k = 0; k < p->nconns; k++) {
        int keep = 0;

        c = p->conns[k];
        if (c->conf != sc || c->retired)
            continue;
        for (size_t e = 0; e < n && !keep; e++)
            keep = addr_eq(&c->addr, &a[e]);
        c->doomed = !keep;
    }
    for (size_t k = first; k < p->nconns && !p->closing; k++)
        if (p->conns[k]->state == AC_DOWN && !p->conns[k]->retired && !p->conns[k]->doomed &&
            p->conns[k]->conf == sc)
            conn_connect(p->conns[k]);
    for (;;) {
        c = NULL;
        for (size_t k = 0; k < p->nconns && c == NULL; k++)
            if (p->conns[k]->doomed)
                c = p->conns[k];
        if (c == NULL || p->closing)
            break;
        c->doomed = 0;
        conn_retire(c);
    }
}

/* A lookup ended: the connections follow a changed answer, and the streams that wait for a
 * first answer try again (or fail, when no name is left to wait for). */
static void on_names(void *arg, size_t i, int changed)
{
    struct gw_asgi_pool *p = arg;
    struct as_list w = p->waiting;
    struct as_strm *st;

    pool_enter(p);
    if (changed)
        server_sync(p, i);
    /* Taken whole, as conn_lost() does: a stream cancelled meanwhile leaves this list. */
    p->waiting = (struct as_list){NULL, NULL, 0};
    for (st = w.head; st != NULL; st = st->next)
        st->list = &w;
    while (!p->closing && (st = w.head) != NULL) {
        list_remove(&w, st);
        st->list = NULL;
        assign(st, NULL, 1);
    }
    pool_leave(p);
}

struct gw_asgi_pool *gw_asgi_pool_new(struct event_base *base, struct evdns_base *dns,
                                      const struct gw_upstream_conf *u,
                                      const struct gw_config *cfg)
{
    struct gw_asgi_pool *p = gw_xcalloc(1, sizeof *p);
    struct timeval tick = {0, AS_TICK_MS * 1000};
    int named = 0;

    p->base = base;
    p->u = u;
    p->cfg = cfg;
    p->nh = cfg->limits.headers + 8;
    p->ah = gw_xcalloc(p->nh, sizeof *p->ah);
    p->hh = gw_xcalloc(p->nh, sizeof *p->hh);
    p->subs = gw_xcalloc(p->nh, sizeof *p->subs);
    p->tmp = evbuffer_new();
    p->tick = event_new(base, -1, EV_PERSIST, on_tick, p);
    p->names = gw_resolve_new(base, dns, u, on_names, p);
    if (p->tmp == NULL || p->tick == NULL) {
        gw_log_error("upstream %s: no usable server", u->name);
        pool_destroy(p);
        return NULL;
    }
    event_add(p->tick, &tick);
    /* Through the guard: connects may fail at once, and an answer from /etc/hosts comes
     * within gw_resolve_start(). */
    pool_enter(p);
    for (size_t i = 0; i < u->nservers; i++) {
        named |= gw_resolve_named(p->names, i);
        server_sync(p, i);
    }
    if (gw_resolve_start(p->names) != 0) {
        gw_log_error("upstream %s: cannot start resolving (out of memory)", u->name);
        named = 0;
    }
    pool_leave(p);
    if (p->nconns == 0 && !named) {
        gw_log_error("upstream %s: no usable server", u->name);
        pool_destroy(p);
        return NULL;
    }
    return p;
}

void gw_asgi_pool_free(struct gw_asgi_pool *p)
{
    if (p == NULL)
        return;
    p->closing = 1;
    if (p->depth == 0)
        pool_destroy(p);
}
