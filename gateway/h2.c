/* SPDX-License-Identifier: MIT */
/* The HTTP/2 downstream session: binds gateway/h2_codec.c's events to exchanges. */
#include "gateway/h2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/conn.h"
#include "gateway/exchange.h"
#include "gateway/h2_codec.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/util.h"
#include "gateway/worker.h"
#include "gateway/ws.h"

/* One client stream. Owned by the session from its request head until the codec says it
 * closed (or the connection ends). */
struct gw_h2_stream {
    struct gw_conn *c;
    int32_t sid;
    struct gw_exchange *x;        /* owned until the response is complete, else NULL */
    struct evbuffer *out;         /* response body not yet framed (NULL until needed) */
    char *trailer_block;          /* the response trailers' copy, sent after the body */
    struct h1_header *trailers;   /* into |trailer_block| */
    size_t ntrailers;
    uint64_t held;                /* request bytes handed to the exchange, window not opened */
    uint64_t deadline_ms;         /* while the request body comes: when it times out
                                     (timeouts.body, restarted by each DATA); then, for an
                                     event stream: its heartbeat. 0 = none */
    struct gw_h2_stream *prev, *next;
    struct gw_ws_carrier car;     /* RFC 8441: the WebSocket this stream carries after its
                                     200 (car.sess), else car.sess is NULL */
    struct evbuffer *ws_in;       /* WebSocket bytes from the client not yet consumed */
    uint64_t ws_held;             /* bytes of |ws_in| whose window is not opened yet */
    unsigned ws_reading : 1;      /* the session takes client bytes */
    unsigned ws_finishing : 1;    /* the session ended it: END_STREAM after what is queued */
    unsigned ws_gone : 1;         /* reset: nothing goes out any more */
    unsigned ws_eof : 1;          /* the client ended its side before the session started */
    unsigned resp_ended : 1;      /* the whole body is in |out| */
    unsigned deferred : 1;        /* the codec waits for body bytes (h2c_resume()) */
    unsigned up_paused : 1;       /* the upstream was told to pause: resume when |out| drains */
    unsigned resume_due : 1;      /* |out| drained: resume the upstream after the send */
    unsigned head_request : 1;
    unsigned sse : 1;             /* an event stream (heartbeats when its route has them) */
    unsigned sse_line_start : 1;  /* its last byte sent ended a line */
};

/* Owned by the connection (c->h2) from gw_h2_start() to gw_h2_free(). */
struct gw_h2 {
    struct h2c *codec;
    struct gw_h2_stream *streams; /* every open stream */
    size_t nstreams;
    unsigned in_codec : 1;        /* inside h2c_recv()/h2c_send(): do not re-enter */
    unsigned goaway : 1;          /* GOAWAY sent (idle, reload or drain): open streams finish */
    unsigned draining : 1;        /* the worker drains: event streams and WebSockets ended */
    unsigned out_deferred : 1;    /* streams wait for the connection's output to drain */
    unsigned failed : 1;          /* the codec ended the connection: send what is queued, close */
    unsigned resume_pending : 1;  /* a stream's upstream may read again (after the send) */
};

static void pump(struct gw_conn *c);
static void rearm(struct gw_conn *c);
static void end_event_stream(struct gw_h2_stream *s);
static uint64_t sse_due(const struct gw_h2_stream *s, uint64_t now);

static const struct gw_config *cfg_of(const struct gw_conn *c)
{
    return c->snap->cfg;
}

/* --- streams --- */

static struct gw_h2_stream *stream_new(struct gw_conn *c, int32_t sid)
{
    struct gw_h2 *h = c->h2;
    struct gw_h2_stream *s = gw_xcalloc(1, sizeof *s);

    s->c = c;
    s->sid = sid;
    s->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = s;
    h->streams = s;
    h->nstreams++;
    h2c_set_stream_data(h->codec, sid, s);
    return s;
}

/* Gives the connection's window back for request bytes nobody will take: the exchange is
 * gone with them still buffered. */
static void stream_release_window(struct gw_h2_stream *s)
{
    uint64_t n = s->held + s->ws_held;

    s->held = 0;
    s->ws_held = 0;
    if (n > 0) {
        h2c_consume(s->c->h2->codec, s->sid, (size_t)n);
        gw_conn_flush_soon(s->c);
    }
}

/* Releases the exchange of |s|: the client is gone, or its response is complete. */
static void stream_drop_exchange(struct gw_h2_stream *s, const char *why)
{
    struct gw_exchange *x = s->x;

    if (x == NULL)
        return;
    s->x = NULL;
    stream_release_window(s);
    if (x->up != NULL) {
        if (x->error == NULL && why != NULL)
            x->error = why;
        gw_exchange_cancel(x);
    }
    gw_exchange_free(x);
}

static void stream_free(struct gw_conn *c, struct gw_h2_stream *s)
{
    struct gw_h2 *h = c->h2;

    if (s->car.sess != NULL) {
        struct gw_exchange *x = s->x;

        /* A WebSocket that ends without a close frame reads as 1006 to the app. */
        s->x = NULL;
        if (x != NULL) {
            gw_exchange_ws_closed(x, WS_CLOSE_ABNORMAL, "", 0);
            gw_exchange_free(x);
        }
        gw_ws_free(s->car.sess);
    }
    stream_release_window(s);
    if (s->ws_in != NULL)
        evbuffer_free(s->ws_in);
    stream_drop_exchange(s, s->resp_ended ? NULL : "client reset the stream");
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    h->nstreams--;
    if (s->out != NULL)
        evbuffer_free(s->out);
    free(s->trailer_block);
    free(s);
}

static struct evbuffer *stream_out(struct gw_h2_stream *s)
{
    if (s->out == NULL && (s->out = evbuffer_new()) == NULL) {
        gw_log_error("out of memory");
        abort();
    }
    return s->out;
}

/* Response bytes were added to |s|: frame them on the next flush. */
static void stream_more(struct gw_h2_stream *s)
{
    if (s->deferred) {
        s->deferred = 0;
        h2c_resume(s->c->h2->codec, s->sid);
    }
    gw_conn_flush_soon(s->c);
}

/* Opens the windows for the WebSocket bytes the session took. */
static void ws_consumed(struct gw_h2_stream *s)
{
    size_t left = s->ws_in != NULL ? evbuffer_get_length(s->ws_in) : 0;

    if (s->ws_held > left) {
        h2c_consume(s->c->h2->codec, s->sid, (size_t)(s->ws_held - left));
        s->ws_held = left;
        gw_conn_flush_soon(s->c);
    }
}

/* Opens the windows for the request bytes the upstream took from the exchange. */
static void stream_consumed(struct gw_h2_stream *s)
{
    struct gw_exchange *x = s->x;
    size_t left = x != NULL && x->req_body != NULL ? evbuffer_get_length(x->req_body) : 0;

    if (s->held > left) {
        h2c_consume(s->c->h2->codec, s->sid, (size_t)(s->held - left));
        s->held = left;
        gw_conn_flush_soon(s->c);
    }
}

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

/* Queues the gateway's own short answer on |s|. Returns the bytes of its body. */
static size_t answer(struct gw_h2_stream *s, int status, unsigned retry_after)
{
    char body[64], ra[16];
    struct h1_header hd[3];
    size_t n = 0;
    int len = snprintf(body, sizeof body, "%d %s\n", status, status_text(status));

    hd[n++] = (struct h1_header){{"content-type", 12}, {"text/plain", 10}};
    if (retry_after > 0) {
        int rl = snprintf(ra, sizeof ra, "%u", retry_after);
        hd[n++] = (struct h1_header){{"retry-after", 11}, {ra, (size_t)rl}};
    } else if (status == 426) {
        hd[n++] = (struct h1_header){{"sec-websocket-version", 21}, {"13", 2}};
    }
    if (s->head_request)
        len = 0;
    evbuffer_add(stream_out(s), body, (size_t)len);
    s->resp_ended = 1;
    if (h2c_respond(s->c->h2->codec, s->sid, status, hd, n, len > 0) != 0)
        h2c_reset(s->c->h2->codec, s->sid, 2 /* INTERNAL_ERROR */);
    gw_conn_flush_soon(s->c);
    return (size_t)len;
}

/* The gateway answers |status| for the exchange of |s| (no head sent yet), or resets a started
 * response. */
static void answer_locally(struct gw_h2_stream *s, int status, const char *reason)
{
    struct gw_exchange *x = s->x;

    if (x->up != NULL)
        gw_exchange_cancel(x);
    if (x->error == NULL)
        x->error = reason;
    if (x->head_sent) {
        gw_log_ctx(GW_LOG_INFO, s->c->log_ctx, "%s after the response began; resetting stream %d",
                   reason, (int)s->sid);
        h2c_reset(s->c->h2->codec, s->sid, 2 /* INTERNAL_ERROR */);
        s->resp_ended = 1;
    } else {
        gw_log_ctx(GW_LOG_INFO, s->c->log_ctx, "%d %s: %s %.*s", status, status_text(status),
                   reason, (int)x->req.target.len, x->req.target.p);
        x->status = status;
        x->head_sent = 1;
        x->bytes_out += answer(s, status, x->retry_after_s);
    }
    s->x = NULL;
    stream_release_window(s);
    gw_exchange_free(x);
    gw_conn_flush_soon(s->c);
}

/* --- the codec's events --- */

/* Fills |q| (an HTTP/1.1-shaped request the exchange understands) from the HTTP/2 head |r|.
 * Returns 0 or the status to answer. */
static int make_request(struct gw_conn *c, const struct h2c_req *r, struct h1_request *q)
{
    struct gw_slice authority = r->authority;
    int websocket = 0;

    memset(q, 0, sizeof *q);
    if (r->protocol.len > 0) {
        if (!GW_SLICE_EQ_LIT(r->protocol, "websocket"))
            return 501; /* an extended CONNECT for another protocol */
        websocket = 1;
    } else if (GW_SLICE_EQ_LIT(r->method, "CONNECT")) {
        return 405; /* plain CONNECT: the gateway is no forward proxy */
    }
    if (r->path.len == 0 || r->method.len == 0)
        return 400;
    for (size_t i = 0; i < r->nheaders && authority.len == 0; i++)
        if (GW_SLICE_EQ_LIT(r->headers[i].name, "host"))
            authority = r->headers[i].value;
    if (authority.len == 0)
        return 400;
    q->method = r->method;
    if (websocket) {
        /* RFC 8441 §5: the extended CONNECT is the opening handshake of RFC 6455 in HTTP/2
         * form. It is given the HTTP/1.1 form the exchange and every upstream driver know (an
         * http upstream gets a real upgrade request: it needs a key); the client gets a 200
         * without the accept field, whose key it never sent. */
        struct h1_header *hd = gw_worker_hdrs(c->w, r->nheaders + 3);

        memcpy(hd, r->headers, r->nheaders * sizeof *hd);
        hd[r->nheaders] = (struct h1_header){{"upgrade", 7}, {"websocket", 9}};
        hd[r->nheaders + 1] = (struct h1_header){{"connection", 10}, {"upgrade", 7}};
        hd[r->nheaders + 2] =
            (struct h1_header){{"sec-websocket-key", 17}, {"dGhlIHNhbXBsZSBub25jZQ==", 24}};
        q->method = (struct gw_slice){"GET", 3};
        q->headers = hd;
        q->nheaders = r->nheaders + 3;
    }
    q->target = r->path;
    q->path = r->path;
    q->form = r->path.len == 1 && r->path.p[0] == '*' ? H1_TARGET_ASTERISK : H1_TARGET_ORIGIN;
    q->authority = authority;
    q->minor = 1;
    if (!websocket) {
        q->headers = r->headers;
        q->nheaders = r->nheaders;
    }
    q->keep_alive = 1;
    if (r->end_stream || websocket) {
        q->body = H1_BODY_NONE;
    } else if (r->content_length >= 0) {
        q->body = H1_BODY_LENGTH;
        q->content_length = (uint64_t)r->content_length;
    } else {
        q->body = H1_BODY_CHUNKED; /* its length is unknown, as a chunked body's */
    }
    return 0;
}

static int on_request(void *ud, int32_t sid, const struct h2c_req *r)
{
    struct gw_conn *c = ud;
    struct gw_h2_stream *s = stream_new(c, sid);
    struct h1_request q;
    struct gw_exchange *x;
    int status;

    s->head_request = GW_SLICE_EQ_LIT(r->method, "HEAD");
    if (r->too_big) {
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "refused request on stream %d: 431 header list over "
                   "limits.header_bytes", (int)sid);
        answer(s, 431, 0);
        return 0;
    }
    status = make_request(c, r, &q);
    if (status != 0) {
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "refused request on stream %d: %d", (int)sid, status);
        answer(s, status, 0);
        return 0;
    }
    /* Each stream takes the worker's current configuration: a reload applies to the next
     * stream, as it does to the next request of an HTTP/1.1 connection. */
    x = gw_exchange_new(c->w, c->w->snap, &q, &c->client, c->log_ctx, &gw_h2_downstream_ops, s);
    x->req.h2 = 1;
    x->req_done = r->end_stream;
    s->x = x;
    if (!x->req_done)
        s->deadline_ms = gw_now_ms() + cfg_of(c)->timeouts.body_ms;
    status = gw_exchange_start(x);
    if (status != 0 && s->x == x)
        answer_locally(s, status, x->error != NULL ? x->error : "refused by the router");
    return 0;
}

static int on_data(void *ud, int32_t sid, const uint8_t *p, size_t n)
{
    struct gw_conn *c = ud;
    struct gw_h2_stream *s = h2c_stream_data(c->h2->codec, sid);
    struct gw_exchange *x = s != NULL ? s->x : NULL;
    uint64_t limit = cfg_of(c)->limits.body_bytes;

    if (s != NULL && x != NULL && x->ws) {
        /* WebSocket frames: the session takes them (its window opens as it does), or they
         * wait, within the window, for its start. */
        if (s->ws_in == NULL && (s->ws_in = evbuffer_new()) == NULL)
            return -1;
        evbuffer_add(s->ws_in, p, n);
        s->ws_held += n;
        if (s->car.sess != NULL && s->ws_reading)
            gw_ws_on_read(s->car.sess);
        ws_consumed(s);
        return 0;
    }
    if (x == NULL || x->req_body == NULL || x->req_done) {
        /* Nobody takes these bytes (the answer came first): the window opens at once. */
        h2c_consume(c->h2->codec, sid, n);
        return 0;
    }
    evbuffer_add(x->req_body, p, n);
    s->deadline_ms = gw_now_ms() + cfg_of(c)->timeouts.body_ms;
    s->held += n;
    x->req_body_bytes += n;
    x->bytes_in += n;
    if (limit != 0 && x->req_body_bytes > limit) {
        answer_locally(s, 413, "request body over limits.body_bytes");
        return 0;
    }
    if (x->up != NULL)
        gw_exchange_req_body(x);
    if (s->x == x)
        stream_consumed(s);
    return 0;
}

static void on_end(void *ud, int32_t sid)
{
    struct gw_conn *c = ud;
    struct gw_h2_stream *s = h2c_stream_data(c->h2->codec, sid);
    struct gw_exchange *x = s != NULL ? s->x : NULL;

    if (s != NULL && s->car.sess == NULL && x != NULL && x->ws) {
        s->ws_eof = 1; /* told to the session when it starts */
        return;
    }
    if (s != NULL && s->car.sess != NULL) {
        /* The client half-closed its WebSocket. */
        if (!gw_ws_on_eof(s->car.sess) && !s->ws_finishing) {
            s->ws_finishing = 1;
            s->resp_ended = 1;
            stream_more(s);
        }
        return;
    }
    if (x == NULL || x->req_done)
        return;
    x->req_done = 1;
    s->deadline_ms = s->sse ? sse_due(s, gw_now_ms()) : 0;
    if (x->up != NULL)
        gw_exchange_req_body(x);
    if (s->x == x)
        stream_consumed(s);
}

static void on_closed(void *ud, int32_t sid, uint32_t code)
{
    struct gw_conn *c = ud;
    struct gw_h2_stream *s = h2c_stream_data(c->h2->codec, sid);

    if (s == NULL)
        return;
    if (code != 0 && s->x != NULL)
        gw_log_ctx(GW_LOG_DEBUG, c->log_ctx, "stream %d reset (code %u)", (int)sid, code);
    h2c_set_stream_data(c->h2->codec, sid, NULL);
    stream_free(c, s);
    rearm(c);
}

/* The codec asks for a DATA frame's worth: says how many body bytes wait (copied later, in
 * on_send_data()). */
static size_t on_body(void *ud, int32_t sid, uint8_t *buf, size_t len, int *eof,
                      const struct h1_header **t, size_t *nt)
{
    struct gw_conn *c = ud;
    struct gw_h2_stream *s = h2c_stream_data(c->h2->codec, sid);
    size_t have, n;

    (void)buf;
    if (s == NULL || s->ws_gone) {
        *eof = 1;
        return 0;
    }
    if (evbuffer_get_length(c->st.out) >= GW_BODY_HIWAT) {
        /* The connection's output is full: wait for it (pump() resumes the deferred). */
        s->deferred = 1;
        c->h2->out_deferred = 1;
        return 0;
    }
    have = s->out != NULL ? evbuffer_get_length(s->out) : 0;
    n = have < len ? have : len;
    if (n < have)
        return n;
    if (s->resp_ended) {
        *eof = 1;
        *t = s->trailers;
        *nt = s->ntrailers;
        return n;
    }
    if (n == 0)
        s->deferred = 1;
    return n;
}

/* Writes a DATA frame: its header, then its bytes moved from the stream's buffer. */
static void on_send_data(void *ud, int32_t sid, const uint8_t *hd, size_t n)
{
    struct gw_conn *c = ud;
    struct gw_h2_stream *s = h2c_stream_data(c->h2->codec, sid);

    evbuffer_add(c->st.out, hd, 9);
    if (s == NULL || s->out == NULL)
        return; /* cannot be: the codec asked on_body() first */
    evbuffer_remove_buffer(s->out, c->st.out, n);
    if (s->up_paused && evbuffer_get_length(s->out) < GW_BODY_HIWAT / 2) {
        s->up_paused = 0;
        s->resume_due = 1;
        c->h2->resume_pending = 1;
    }
}

static void on_protect(void *ud, enum h2c_protect why)
{
    struct gw_conn *c = ud;

    gw_log_ctx(GW_LOG_WARN, c->log_ctx, "http2: %s flood; closing the connection",
               gw_h2c_protect_name(why));
    gw_m_add(&c->w->metrics->h2_protect[why], 1);
}

static const char *h2_error_name(uint32_t code)
{
    static const char *const names[] = {
        "NO_ERROR",          "PROTOCOL_ERROR",   "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",  "REFUSED_STREAM",   "CANCEL",
        "COMPRESSION_ERROR", "CONNECT_ERROR",    "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
    };
    return code < sizeof names / sizeof names[0] ? names[code] : "unknown error";
}

static void on_error(void *ud, int32_t sid, uint32_t code, const uint8_t *debug, size_t n)
{
    struct gw_conn *c = ud;

    if (sid == 0)
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "http2: connection error %s (%.*s); closing",
                   h2_error_name(code), (int)(n > 200 ? 200 : n), (const char *)debug);
    else
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "http2: stream %d reset: %s", (int)sid,
                   h2_error_name(code));
}

static const struct h2c_cbs codec_cbs = {
    .request = on_request,
    .data = on_data,
    .end = on_end,
    .closed = on_closed,
    .body = on_body,
    .send_data = on_send_data,
    .error = on_error,
    .protect = on_protect,
};

/* --- the connection --- */

static void put_out(void *arg, const uint8_t *p, size_t n)
{
    evbuffer_add(arg, p, n);
}

/* The upstreams of streams whose output drained may read again. */
static void run_resumes(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;
    struct gw_h2_stream *s, *next;

    h->resume_pending = 0;
    for (s = h->streams; s != NULL; s = next) {
        next = s->next;
        if (!s->resume_due)
            continue;
        s->resume_due = 0;
        if (s->car.sess != NULL)
            gw_ws_on_drain(s->car.sess);
        else if (s->x != NULL && s->x->up != NULL)
            gw_exchange_resume(s->x);
    }
}

/* Frames what the streams have for the client, as far as the connection's output has room,
 * writes it, and closes the connection once the session is over. */
static void pump(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;

    if (h == NULL || h->in_codec || c->closing || c->lingering || c->write_then_linger)
        return;
    for (int round = 0; round < 16; round++) {
        size_t queued = evbuffer_get_length(c->st.out), before;

        if (queued >= GW_BODY_HIWAT) {
            gw_stream_flush(&c->st);
            queued = evbuffer_get_length(c->st.out);
            if (queued >= GW_BODY_HIWAT)
                break; /* the socket is full: gw_h2_on_drain() comes back */
        }
        for (struct gw_h2_stream *s = h->streams; s != NULL; s = s->next) {
            if (s->ws_held > 0)
                ws_consumed(s);
            if (h->out_deferred && s->deferred &&
                ((s->out != NULL && evbuffer_get_length(s->out) > 0) || s->resp_ended)) {
                s->deferred = 0;
                h2c_resume(h->codec, s->sid);
            }
        }
        h->out_deferred = 0;
        before = queued;
        h->in_codec = 1;
        if (h2c_send(h->codec, GW_BODY_HIWAT - queued, put_out, c->st.out) != 0)
            h->failed = 1;
        h->in_codec = 0;
        if (h->failed)
            break;
        if (h->resume_pending) {
            run_resumes(c);
            if (c->closing)
                return;
        } else if (evbuffer_get_length(c->st.out) == before || !h2c_want_write(h->codec)) {
            break;
        }
    }
    gw_stream_flush(&c->st);
    if (h->failed || h2c_done(h->codec)) {
        gw_conn_close_after_write(c);
        return;
    }
    /* More to frame, and the socket took everything (no drain callback will come). */
    if (h2c_want_write(h->codec) && evbuffer_get_length(c->st.out) < GW_BODY_HIWAT)
        gw_conn_flush_soon(c);
    rearm(c);
}

/* Sets the connection's deadline: the earliest heartbeat of an event stream, else the idle
 * timeout while no stream is open. */
static void rearm(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;
    uint64_t at = 0;

    if (h == NULL || c->closing || c->lingering || c->write_then_linger)
        return;
    for (const struct gw_h2_stream *s = h->streams; s != NULL; s = s->next)
        if (s->deadline_ms != 0 && (at == 0 || s->deadline_ms < at))
            at = s->deadline_ms;
    if (h->nstreams == 0)
        at = gw_now_ms() + cfg_of(c)->timeouts.idle_ms;
    gw_conn_set_deadline(c, at);
}

void gw_h2_start(struct gw_conn *c)
{
    const struct gw_config *cfg = cfg_of(c);
    struct h2c_limits lim = {
        .header_bytes = cfg->limits.header_bytes,
        .headers = cfg->limits.headers,
        .max_concurrent_streams = cfg->http2.max_concurrent_streams,
        .window = cfg->http2.window,
        .connection_window = cfg->http2.connection_window,
        .connect_protocol = 1,
    };
    struct gw_h2 *h = gw_xcalloc(1, sizeof *h);

    c->h2 = h;
    gw_m_gauge(&c->w->metrics->connections_http1, -1);
    gw_m_gauge(&c->w->metrics->connections_h2, 1);
    h->codec = h2c_new(&lim, &codec_cbs, c);
    if (h->codec == NULL) {
        gw_log_ctx(GW_LOG_ERROR, c->log_ctx, "cannot start HTTP/2: out of memory");
        gw_conn_close(c);
        return;
    }
    gw_stream_read(&c->st, 1);
    gw_stream_set_read_timeout(&c->st, 0);
    if (evbuffer_get_length(c->st.in) > 0)
        gw_h2_on_read(c);
    else
        pump(c);
    if (c->w->draining && !c->closing)
        gw_h2_drain(c);
}

void gw_h2_on_read(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;

    if (h->failed || h->in_codec)
        return;
    while (evbuffer_get_length(c->st.in) > 0 && !c->closing) {
        struct evbuffer_iovec v;
        long n;

        if (evbuffer_peek(c->st.in, -1, NULL, &v, 1) < 1)
            break;
        h->in_codec = 1;
        n = h2c_recv(h->codec, v.iov_base, v.iov_len, gw_now_ms());
        h->in_codec = 0;
        if (n < 0) {
            gw_log_ctx(GW_LOG_INFO, c->log_ctx, "http2: connection error; closing");
            h->failed = 1;
            evbuffer_drain(c->st.in, evbuffer_get_length(c->st.in));
            gw_stream_read(&c->st, 0);
            break;
        }
        evbuffer_drain(c->st.in, v.iov_len);
    }
    if (!c->closing)
        pump(c);
}

void gw_h2_on_drain(struct gw_conn *c)
{
    pump(c);
}

/* Flushes the session's frames (the worker's deferred flush). */
void gw_h2_flush(struct gw_conn *c)
{
    pump(c);
}

/* When the event stream |s| is due a heartbeat, counting from |now|; 0: never. */
static uint64_t sse_due(const struct gw_h2_stream *s, uint64_t now)
{
    uint64_t every = s->x != NULL && s->x->route != NULL ? s->x->route->sse_heartbeat_ms : 0;

    return every > 0 ? now + every : 0;
}

/* Sends an idle event stream a comment line, as HTTP/1.1 does (see h1.c). */
static void sse_heartbeat(struct gw_h2_stream *s, uint64_t now)
{
    if (s->sse_line_start && (s->out == NULL || evbuffer_get_length(s->out) == 0) &&
        s->x != NULL) {
        evbuffer_add(stream_out(s), ":\n", 2);
        s->x->bytes_out += 2;
        stream_more(s);
    }
    s->deadline_ms = sse_due(s, now);
}

void gw_h2_on_deadline(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;
    uint64_t now = gw_now_ms();
    struct gw_h2_stream *s, *next;

    if (h->nstreams == 0) {
        /* Idle: say goodbye properly, then close. */
        h->goaway = 1;
        h2c_goaway(h->codec);
        pump(c);
        if (!c->closing && !c->lingering && !c->write_then_linger)
            gw_conn_close_after_write(c);
        return;
    }
    for (s = h->streams; s != NULL; s = next) {
        next = s->next;
        if (s->deadline_ms == 0 || s->deadline_ms > now)
            continue;
        if (s->car.sess != NULL) {
            s->deadline_ms = 0;
            gw_ws_on_deadline(s->car.sess);
        } else if (s->x != NULL && !s->x->req_done) {
            s->deadline_ms = 0;
            answer_locally(s, 408, "request body not received in time (timeouts.body)");
        } else if (s->sse && c->w->draining) {
            end_event_stream(s);
        } else if (s->sse) {
            sse_heartbeat(s, now);
        } else {
            s->deadline_ms = 0;
        }
    }
    pump(c);
}

void gw_h2_on_gone(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;

    while (h->streams != NULL) {
        struct gw_h2_stream *s = h->streams;

        if (s->x != NULL && s->x->error == NULL && !s->resp_ended)
            s->x->error = "client closed connection";
        h2c_set_stream_data(h->codec, s->sid, NULL);
        stream_free(c, s);
    }
}

void gw_h2_free(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;

    gw_h2_on_gone(c);
    h2c_free(h->codec);
    free(h);
    c->h2 = NULL;
    /* The worker counts the connection out as HTTP/1.1 (it was counted in as one). */
    gw_m_gauge(&c->w->metrics->connections_h2, -1);
    gw_m_gauge(&c->w->metrics->connections_http1, 1);
}

/* An event stream never ends by itself: during a drain it ends as a complete response. */
static void end_event_stream(struct gw_h2_stream *s)
{
    stream_drop_exchange(s, NULL);
    s->resp_ended = 1;
    s->deadline_ms = 0;
    stream_more(s);
}

void gw_h2_drain(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;
    struct gw_h2_stream *s, *next;

    if (h->draining)
        return;
    h->draining = 1;
    if (!h->goaway)
        h2c_goaway(h->codec);
    h->goaway = 1;
    for (s = h->streams; s != NULL; s = next) {
        next = s->next;
        if (s->car.sess != NULL)
            gw_ws_drain(s->car.sess);
        else if (s->sse && s->x != NULL && s->x->head_sent)
            end_event_stream(s);
    }
    pump(c);
}

void gw_h2_reloaded(struct gw_conn *c)
{
    struct gw_h2 *h = c->h2;

    if (h->goaway)
        return;
    h->goaway = 1;
    h2c_goaway(h->codec);
    pump(c);
}

/* --- the exchange's downstream side --- */

static void ws_begin(struct gw_h2_stream *s, int tunnel);

/* Answers the extended CONNECT with 200: |sub| and |ext| (may be empty) and the fields of
 * |h[0..n)| that are not the gateway's own. Returns 0 or -1. */
static int ws_respond(struct gw_h2_stream *s, struct gw_slice sub, struct gw_slice ext,
                      const struct h1_header *h, size_t n)
{
    struct h1_header *hd = gw_worker_hdrs(s->c->w, n + 2);
    size_t k = 0;

    if (sub.len > 0)
        hd[k++] = (struct h1_header){{"sec-websocket-protocol", 22}, sub};
    if (ext.len > 0)
        hd[k++] = (struct h1_header){{"sec-websocket-extensions", 24}, ext};
    for (size_t i = 0; i < n; i++)
        if (!gw_ws_own_field(h[i].name))
            hd[k++] = h[i];
    return h2c_respond(s->c->h2->codec, s->sid, 200, hd, k, 1);
}

static void down_head(struct gw_exchange *x, const struct gw_resp *r)
{
    struct gw_h2_stream *s = x->down_ctx;
    struct gw_conn *c = s->c;
    int has_body = r->has_body && !s->head_request;

    if (r->status == 101 && x->ws) {
        /* An http upstream accepted the upgrade itself: the stream becomes a tunnel. Its
         * extensions and subprotocol go to the client as it answered them. */
        struct gw_slice none = {"", 0}, sub = none, ext = none;

        for (size_t i = 0; i < r->nheaders; i++) {
            if (GW_SLICE_EQ_LIT(r->headers[i].name, "Sec-WebSocket-Protocol"))
                sub = r->headers[i].value;
            else if (GW_SLICE_EQ_LIT(r->headers[i].name, "Sec-WebSocket-Extensions"))
                ext = r->headers[i].value;
        }
        if (ws_respond(s, sub, ext, r->headers, r->nheaders) != 0) {
            answer_locally(s, 502, "cannot send the response head");
            return;
        }
        x->status = 200;
        x->head_sent = 1;
        if (x->req_body == NULL && (x->req_body = evbuffer_new()) == NULL) {
            gw_log_error("out of memory");
            abort();
        }
        x->req_done = 0; /* from now on: the client half-closed */
        ws_begin(s, 1);
        return;
    }

    if (r->content_length < 0 && has_body && gw_resp_is_event_stream(r) && !x->sse) {
        x->sse = 1;
        gw_m_gauge(&c->w->metrics->sse_streams, 1);
    }
    s->sse = x->sse;
    s->sse_line_start = 1;
    if (h2c_respond(c->h2->codec, s->sid, r->status, r->headers, r->nheaders, has_body) != 0) {
        answer_locally(s, 502, "cannot send the response head");
        return;
    }
    x->status = r->status;
    x->head_sent = 1;
    if (s->sse && x->req_done) {
        if (c->w->draining)
            s->deadline_ms = gw_now_ms(); /* it ends at once, from the loop */
        else
            s->deadline_ms = sse_due(s, gw_now_ms());
        rearm(c);
    }
    if (!has_body)
        s->resp_ended = 1;
    gw_conn_flush_soon(c);
}

static int after_body(struct gw_h2_stream *s)
{
    int full = evbuffer_get_length(s->out) >= GW_BODY_HIWAT;

    if (full)
        s->up_paused = 1;
    stream_more(s);
    return full;
}

static void sse_seen(struct gw_h2_stream *s, char last)
{
    s->sse_line_start = last == '\n';
    if (!s->c->w->draining && s->x->req_done)
        s->deadline_ms = sse_due(s, gw_now_ms());
}

static int down_body(struct gw_exchange *x, const char *p, size_t n)
{
    struct gw_h2_stream *s = x->down_ctx;

    if (s->car.sess != NULL) {
        struct evbuffer *tmp = s->c->w->ws_tmp;

        evbuffer_drain(tmp, evbuffer_get_length(tmp));
        evbuffer_add(tmp, p, n);
        return gw_ws_tunnel_out(s->car.sess, tmp);
    }
    if (n == 0 || s->head_request)
        return 0;
    if (s->sse)
        sse_seen(s, p[n - 1]);
    evbuffer_add(stream_out(s), p, n);
    x->bytes_out += n;
    return after_body(s);
}

static int down_body_buf(struct gw_exchange *x, struct evbuffer *src)
{
    struct gw_h2_stream *s = x->down_ctx;
    size_t n = evbuffer_get_length(src);

    if (s->car.sess != NULL)
        return gw_ws_tunnel_out(s->car.sess, src);
    if (n == 0)
        return 0;
    if (s->head_request) {
        evbuffer_drain(src, n);
        return 0;
    }
    if (s->sse)
        sse_seen(s, gw_evbuffer_last_byte(src));
    evbuffer_add_buffer(stream_out(s), src);
    x->bytes_out += n;
    return after_body(s);
}

/* Keeps a copy of |t[0..n)| on |s| for the trailing HEADERS. */
static void keep_trailers(struct gw_h2_stream *s, const struct h1_header *t, size_t n)
{
    size_t bytes = n * sizeof *t, at;

    for (size_t i = 0; i < n; i++)
        bytes += t[i].name.len + t[i].value.len;
    s->trailer_block = gw_xmalloc(bytes);
    s->trailers = (struct h1_header *)(void *)s->trailer_block;
    at = n * sizeof *t;
    for (size_t i = 0; i < n; i++) {
        char *p = s->trailer_block + at;

        memcpy(p, t[i].name.p, t[i].name.len);
        memcpy(p + t[i].name.len, t[i].value.p, t[i].value.len);
        s->trailers[i].name = (struct gw_slice){p, t[i].name.len};
        s->trailers[i].value = (struct gw_slice){p + t[i].name.len, t[i].value.len};
        at += t[i].name.len + t[i].value.len;
    }
    s->ntrailers = n;
}

static void down_end(struct gw_exchange *x, const struct h1_header *trailers, size_t ntrailers)
{
    struct gw_h2_stream *s = x->down_ctx;

    if (s->car.sess != NULL) {
        gw_ws_tunnel_end(s->car.sess);
        return;
    }
    if (ntrailers > 0 && !s->resp_ended && !s->head_request)
        keep_trailers(s, trailers, ntrailers);
    s->resp_ended = 1;
    s->deadline_ms = 0;
    s->x = NULL;
    stream_release_window(s);
    gw_exchange_free(x);
    stream_more(s);
}

static void down_fail(struct gw_exchange *x, int status)
{
    struct gw_h2_stream *s = x->down_ctx;

    if (s->car.sess != NULL) {
        gw_log_ctx(GW_LOG_INFO, s->c->log_ctx, "websocket: %s; closing with 1011",
                   x->error != NULL ? x->error : "upstream failed");
        gw_ws_upstream_failed(s->car.sess);
        return;
    }
    answer_locally(s, status, x->error != NULL ? x->error : "upstream failed");
}

static void down_req_drained(struct gw_exchange *x)
{
    struct gw_h2_stream *s = x->down_ctx;

    if (s->car.sess != NULL)
        gw_ws_resume_reading(s->car.sess);
    else
        stream_consumed(s);
}

static void down_ws_accept(struct gw_exchange *x, struct gw_slice subprotocol,
                           const struct h1_header *h, size_t n)
{
    struct gw_h2_stream *s = x->down_ctx;
    char ext[128];
    size_t elen = 0;

    if (x->ws_hs.deflate)
        elen = ws_pmd_response(&x->ws_hs.pmd, ext, sizeof ext);
    if (ws_respond(s, subprotocol, (struct gw_slice){ext, elen}, h, n) != 0) {
        answer_locally(s, 502, "cannot send the response head");
        return;
    }
    x->status = 200;
    x->head_sent = 1;
    ws_begin(s, 0);
}

static int down_ws_send(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n)
{
    struct gw_h2_stream *s = x->down_ctx;

    return gw_ws_send(s->car.sess, flags, p, n);
}

static void down_ws_close(struct gw_exchange *x, unsigned code, const char *reason, size_t n)
{
    struct gw_h2_stream *s = x->down_ctx;

    if (s->car.sess != NULL)
        gw_ws_close(s->car.sess, code, reason, n);
    else /* the app refused before accepting */
        answer_locally(s, 403, "websocket refused by the upstream");
}

const struct gw_downstream_ops gw_h2_downstream_ops = {
    .head = down_head,
    .body = down_body,
    .body_buf = down_body_buf,
    .end = down_end,
    .fail = down_fail,
    .req_drained = down_req_drained,
    .ws_accept = down_ws_accept,
    .ws_send = down_ws_send,
    .ws_close = down_ws_close,
};

/* --- the WebSocket carrier: a stream after its 200 (RFC 8441) --- */

static struct gw_h2_stream *ws_stream(struct gw_ws_carrier *car)
{
    return (struct gw_h2_stream *)(void *)((char *)car - offsetof(struct gw_h2_stream, car));
}

static struct gw_exchange *ws_io_exchange(struct gw_ws_carrier *car)
{
    return ws_stream(car)->x;
}

static struct gw_worker *ws_io_worker(struct gw_ws_carrier *car)
{
    return ws_stream(car)->c->w;
}

static struct evbuffer *ws_io_in(struct gw_ws_carrier *car)
{
    struct gw_h2_stream *s = ws_stream(car);

    if (s->ws_in == NULL && (s->ws_in = evbuffer_new()) == NULL) {
        gw_log_error("out of memory");
        abort();
    }
    return s->ws_in;
}

static struct evbuffer *ws_io_out(struct gw_ws_carrier *car)
{
    return stream_out(ws_stream(car));
}

static enum gw_ws_io_state ws_io_state(struct gw_ws_carrier *car)
{
    const struct gw_h2_stream *s = ws_stream(car);

    if (s->ws_gone || s->c->closing)
        return GW_WS_IO_GONE;
    return s->ws_finishing ? GW_WS_IO_FINISHING : GW_WS_IO_OPEN;
}

/* Reading off leaves the client's bytes in |ws_in|: its window stays shut for them. */
static void ws_io_read(struct gw_ws_carrier *car, int on)
{
    struct gw_h2_stream *s = ws_stream(car);

    s->ws_reading = on != 0;
    if (on)
        gw_conn_flush_soon(s->c); /* the pump opens the window for what it took */
}

/* Never frames from here: a send may close streams, and a gw_ws_* call is on the stack. */
static void ws_io_flush(struct gw_ws_carrier *car, int now)
{
    (void)now;
    stream_more(ws_stream(car));
}

/* Full: the session waits for gw_ws_on_drain(), called once the codec took half of it. */
static int ws_io_out_full(struct gw_ws_carrier *car)
{
    struct gw_h2_stream *s = ws_stream(car);

    if (s->out == NULL || evbuffer_get_length(s->out) < GW_BODY_HIWAT)
        return 0;
    s->up_paused = 1;
    return 1;
}

static void ws_io_set_deadline(struct gw_ws_carrier *car, uint64_t at_ms)
{
    struct gw_h2_stream *s = ws_stream(car);

    s->deadline_ms = at_ms;
    rearm(s->c);
}

static void ws_io_finish(struct gw_ws_carrier *car)
{
    struct gw_h2_stream *s = ws_stream(car);

    if (s->ws_finishing)
        return;
    s->ws_finishing = 1;
    s->ws_reading = 0;
    s->resp_ended = 1;
    stream_more(s);
}

static void ws_io_abort(struct gw_ws_carrier *car)
{
    struct gw_h2_stream *s = ws_stream(car);

    if (s->ws_gone)
        return;
    s->ws_gone = 1;
    s->ws_reading = 0;
    h2c_reset(s->c->h2->codec, s->sid, 8 /* CANCEL */);
    gw_conn_flush_soon(s->c);
}

static const struct gw_ws_io ws_io = {
    .exchange = ws_io_exchange,
    .worker = ws_io_worker,
    .in = ws_io_in,
    .out = ws_io_out,
    .state = ws_io_state,
    .read = ws_io_read,
    .flush = ws_io_flush,
    .out_full = ws_io_out_full,
    .set_deadline = ws_io_set_deadline,
    .finish = ws_io_finish,
    .abort = ws_io_abort,
};

/* The 200 is queued: the stream carries the WebSocket from now on. */
static void ws_begin(struct gw_h2_stream *s, int tunnel)
{
    struct gw_ws *ws;

    s->car.io = &ws_io;
    s->ws_reading = 1;
    s->deadline_ms = 0;
    ws = gw_ws_new(&s->car, tunnel);
    gw_exchange_ws_compact(s->x);
    if (s->c->w->draining)
        gw_ws_drain(ws);
    stream_more(s);
    /* Frames the client sent right behind its CONNECT are already here. */
    if (s->ws_in != NULL && evbuffer_get_length(s->ws_in) > 0 && s->ws_reading)
        gw_ws_on_read(ws);
    if (s->ws_eof && s->car.sess != NULL && !gw_ws_on_eof(ws) && !s->ws_finishing) {
        s->ws_finishing = 1;
        s->resp_ended = 1;
        stream_more(s);
    }
}
