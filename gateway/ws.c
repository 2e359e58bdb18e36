/* SPDX-License-Identifier: MIT */
/* The WebSocket session of a client connection: frames in and out, the close handshake and
 * liveness. See ws.h. */
#include "gateway/ws.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/conn.h"
#include "gateway/exchange.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/util.h"
#include "gateway/worker.h"

/* Bytes queued to the client above which the session writes at once instead of at the end of
 * the loop turn (as h1 does). */
#define FLUSH_NOW_BYTES (64 * 1024)

static const struct gw_ws_conf *conf_of(const struct gw_conn *c)
{
    return &c->h1.x->route->ws;
}

static void put_frame(struct gw_conn *c, unsigned op, int fin, int rsv1, const uint8_t *p,
                      size_t n)
{
    uint8_t h[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_header(h, op, fin, rsv1, n);

    evbuffer_add(c->st.out, h, hl);
    if (n > 0)
        evbuffer_add(c->st.out, p, n);
    c->h1.x->bytes_out += hl + n;
}

/* Writes now when much is queued, else at the end of the turn; says whether to pause. */
static int after_out(struct gw_conn *c)
{
    size_t queued = evbuffer_get_length(c->st.out);

    if (queued >= FLUSH_NOW_BYTES) {
        gw_stream_flush(&c->st);
        queued = evbuffer_get_length(c->st.out);
    } else {
        gw_conn_flush_soon(c);
    }
    return queued >= GW_BODY_HIWAT;
}

/* Our close frame; |code| 0 sends one without a status (the answer to a close without one). */
static void send_close(struct gw_conn *c, unsigned code, const char *reason, size_t rlen)
{
    struct gw_ws *ws = c->h1.ws;
    uint8_t p[125];
    size_t n = 0;

    if (ws->close_sent)
        return;
    ws->close_sent = 1;
    ws->close_code = (uint16_t)code;
    if (code != 0)
        n = ws_close_payload(p, code, reason, rlen);
    put_frame(c, WS_OP_CLOSE, 1, 0, p, n);
}

/* The client's side ended: the upstream hears it once, with |code|. */
static void tell_upstream(struct gw_conn *c, unsigned code, const char *reason, size_t n)
{
    struct gw_ws *ws = c->h1.ws;
    struct gw_exchange *x = c->h1.x;

    if (ws->upstream_gone)
        return;
    ws->upstream_gone = 1;
    if (x->up != NULL)
        gw_exchange_ws_closed(x, code, reason, n);
}

/* Reading the client is on unless the upstream or the client's own output holds it back. */
static void update_reading(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;

    if (c->closing || c->lingering || c->write_then_linger || ws->client_eof)
        return;
    gw_stream_read(&c->st, !ws->paused && !ws->out_blocked);
}

/* Reads what waits in the input after reading was held back (nothing new would wake us). */
static void read_pending(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;

    update_reading(c);
    if (!ws->paused && !ws->out_blocked && evbuffer_get_length(c->st.in) > 0) {
        gw_conn_enter(c);
        gw_ws_on_read(c);
        gw_conn_leave(c);
    }
}

/* The upstream detached: what the client sends now is read only to find its close, so
 * nothing holds reading back for the upstream any more. */
static void upstream_left(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;

    ws->upstream_gone = 1;
    if (ws->paused && !ws->tunnel) {
        ws->paused = 0;
        read_pending(c);
    }
}

/* Any byte from the client proves it alive: the ping clock starts again. */
static void alive(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;
    uint64_t every = conf_of(c)->ping_interval_ms;

    ws->pinging = 0;
    if (ws->close_sent || ws->client_eof)
        return;
    if (every > 0) {
        ws->ping_due_ms = gw_now_ms() + every;
        gw_conn_set_deadline(c, ws->ping_due_ms);
    } else {
        gw_conn_set_deadline(c, 0);
    }
}

/* After our close frame the client has close_timeout to answer with its own. */
static void await_client_close(struct gw_conn *c)
{
    gw_conn_set_deadline(c, gw_now_ms() + conf_of(c)->close_timeout_ms);
    gw_conn_flush_soon(c);
}

void gw_ws_start(struct gw_conn *c, int tunnel)
{
    struct gw_ws *ws = gw_xcalloc(1, sizeof *ws);
    const struct gw_exchange *x = c->h1.x;
    const struct gw_ws_conf *wc = &x->route->ws;

    c->h1.ws = ws;
    ws->tunnel = tunnel != 0;
    gw_m_gauge(&c->w->metrics->websockets, 1);
    if (!ws->tunnel) {
        ws->in.conf.max_message = wc->max_message;
        if (x->ws_hs.deflate) {
            ws->deflate = 1;
            ws->in.conf.deflate = 1;
            ws->in.conf.window_bits = x->ws_hs.pmd.client_max_window_bits;
            ws->in.conf.no_context_takeover = x->ws_hs.pmd.client_no_context_takeover;
            ws->out.window_bits = x->ws_hs.pmd.server_max_window_bits;
            ws->out.no_context_takeover = x->ws_hs.pmd.server_no_context_takeover;
        }
    }
    /* Liveness is ours now: no read timeout, pings instead. */
    gw_stream_set_read_timeout(&c->st, 0);
    gw_stream_read(&c->st, 1);
    alive(c);
}

void gw_ws_free(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;

    if (ws == NULL)
        return;
    gw_m_gauge(&c->w->metrics->websockets, -1);
    if (!ws->tunnel) {
        ws_in_free(&ws->in);
        ws_out_free(&ws->out);
    }
    free(ws);
    c->h1.ws = NULL;
}

static void on_client_close(struct gw_conn *c, unsigned code, const uint8_t *reason, size_t n)
{
    /* The usual answer echoes the client's code (RFC 6455 §5.5.1). */
    send_close(c, code == WS_CLOSE_NO_STATUS ? 0 : code, "", 0);
    tell_upstream(c, code, (const char *)reason, n);
    gw_conn_close_after_write(c);
}

static void on_protocol_error(struct gw_conn *c, unsigned code, const char *why)
{
    struct gw_exchange *x = c->h1.x;

    gw_log_ctx(GW_LOG_INFO, c->log_ctx, "websocket: %s; closing with %u", why, code);
    if (x->error == NULL)
        x->error = why;
    send_close(c, code, why, strlen(why));
    tell_upstream(c, code, why, strlen(why));
    /* After failing the connection nothing more of it is read (RFC 6455 §7.1.7). */
    gw_conn_close_after_write(c);
}

/* ---- tunnel ---------------------------------------------------------------------------- */

/* Feeds |n| bytes of one direction to |b|. Returns 1 when the stream is between frames after
 * them, 0 when inside one, -1 when the bytes cannot be frames (a length over 2^63). */
static int bounds_feed(struct ws_bounds *b, const uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t need;

        if (b->left > 0) {
            size_t k = b->left < n ? (size_t)b->left : n;
            b->left -= k;
            p += k;
            n -= k;
            continue;
        }
        b->hdr[b->hlen++] = *p++;
        n--;
        if (b->hlen < 2)
            continue;
        need = 2 + ((b->hdr[1] & 0x7f) == 126 ? 2 : (b->hdr[1] & 0x7f) == 127 ? 8 : 0) +
               ((b->hdr[1] & 0x80) ? 4 : 0);
        if (b->hlen < need)
            continue;
        if ((b->hdr[1] & 0x7f) == 126) {
            b->left = (uint64_t)b->hdr[2] << 8 | b->hdr[3];
        } else if ((b->hdr[1] & 0x7f) == 127) {
            b->left = 0;
            for (int i = 2; i < 10; i++)
                b->left = b->left << 8 | b->hdr[i];
            if (b->left >> 63)
                return -1;
        } else {
            b->left = b->hdr[1] & 0x7f;
        }
        b->hlen = 0;
    }
    return b->left == 0 && b->hlen == 0;
}

/* Between two of the upstream's frames and with nothing of ours queued: our own frame may go. */
static int at_boundary(const struct gw_ws *ws)
{
    return !ws->bad_bounds && ws->up_bounds.left == 0 && ws->up_bounds.hlen == 0;
}

static void tunnel_read(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;
    struct gw_exchange *x = c->h1.x;
    size_t n = evbuffer_get_length(c->st.in);

    if (ws->paused || x->up == NULL || x->req_body == NULL || (n == 0 && !ws->client_eof))
        return;
    if (n > 0) {
        alive(c);
        evbuffer_remove_buffer(c->st.in, x->req_body, n);
        x->bytes_in += n;
        if (evbuffer_get_length(x->req_body) >= GW_BODY_HIWAT) {
            ws->paused = 1;
            gw_stream_read(&c->st, 0);
        }
    }
    /* After the client's EOF, its last byte taken: the upstream's side is done too. */
    if (ws->client_eof)
        x->req_done = 1;
    gw_exchange_req_body(x);
}

int gw_ws_on_eof(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;
    struct gw_exchange *x = c->h1.x;

    if (!ws->tunnel || ws->client_eof || ws->upstream_gone || x->up == NULL)
        return 0;
    ws->client_eof = 1;
    ws->pinging = 0; /* a half-closed client cannot answer pings */
    gw_stream_read(&c->st, 0);
    gw_conn_set_deadline(c, gw_now_ms() + conf_of(c)->close_timeout_ms);
    tunnel_read(c);
    return 1;
}

int gw_ws_tunnel_out(struct gw_conn *c, struct evbuffer *src)
{
    struct gw_ws *ws = c->h1.ws;
    size_t n = evbuffer_get_length(src);

    if (!ws->bad_bounds) {
        struct evbuffer_iovec v[8];
        struct evbuffer_ptr ptr;
        int nv;

        /* Walk every chunk of |src|, eight at a time, to follow the frames. */
        evbuffer_ptr_set(src, &ptr, 0, EVBUFFER_PTR_SET);
        while (ptr.pos < (ev_off_t)n && !ws->bad_bounds) {
            nv = evbuffer_peek(src, -1, &ptr, v, 8);
            if (nv > 8)
                nv = 8;
            for (int i = 0; i < nv; i++) {
                if (bounds_feed(&ws->up_bounds, v[i].iov_base, v[i].iov_len) < 0)
                    ws->bad_bounds = 1;
                evbuffer_ptr_set(src, &ptr, v[i].iov_len, EVBUFFER_PTR_ADD);
            }
        }
    }
    evbuffer_add_buffer(c->st.out, src);
    c->h1.x->bytes_out += n;
    return after_out(c);
}

void gw_ws_tunnel_end(struct gw_conn *c)
{
    c->h1.ws->upstream_gone = 1;
    gw_conn_close_after_write(c);
}

void gw_ws_on_read(struct gw_conn *c)
{
    static uint8_t no_input[1];
    struct gw_ws *ws = c->h1.ws;
    struct gw_exchange *x = c->h1.x;
    size_t len = evbuffer_get_length(c->st.in), off = 0;
    uint8_t *buf;

    if (ws->tunnel) {
        tunnel_read(c);
        return;
    }
    if (ws->paused || ws->out_blocked)
        return;
    /* Even with no new byte the decoder may hold inflated output that did not fit before a
     * pause: it is asked again. */
    buf = no_input;
    if (len > 0) {
        alive(c);
        buf = evbuffer_pullup(c->st.in, -1);
        if (buf == NULL) {
            gw_conn_close(c); /* out of memory */
            return;
        }
    }
    while (!c->closing && !c->lingering && !c->write_then_linger && !ws->paused &&
           !ws->out_blocked) {
        struct ws_in_event ev;
        size_t used = 0;
        enum ws_in_type t = ws_in_next(&ws->in, buf + off, len - off, &used, c->w->ws_scratch,
                                       sizeof c->w->ws_scratch, &ev);

        off += used;
        if (t == WS_IN_NEED)
            break;
        if (t == WS_IN_DATA) {
            /* After our close, data is read only to find the client's close. */
            if (ws->upstream_gone || ws->close_sent)
                continue;
            if (gw_exchange_ws_message(x, ev.flags, ev.data, ev.len)) {
                ws->paused = 1;
                gw_stream_read(&c->st, 0);
            }
        } else if (t == WS_IN_PING) {
            /* A client that pings without reading the pongs stops being read. */
            if (!ws->close_sent) {
                put_frame(c, WS_OP_PONG, 1, 0, ev.data, ev.len);
                if (after_out(c)) {
                    ws->out_blocked = 1;
                    update_reading(c);
                }
            }
        } else if (t == WS_IN_CLOSE) {
            on_client_close(c, ev.code, ev.data, ev.len);
            break;
        } else if (t == WS_IN_ERROR) {
            on_protocol_error(c, ev.code, ev.why);
            break;
        }
    }
    evbuffer_drain(c->st.in, off);
    x->bytes_in += off;
}

void gw_ws_resume_reading(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;

    if (!ws->paused || c->closing)
        return;
    if (ws->tunnel && c->h1.x->req_body != NULL &&
        evbuffer_get_length(c->h1.x->req_body) >= GW_BODY_HIWAT)
        return;
    ws->paused = 0;
    update_reading(c);
    gw_conn_enter(c);
    gw_ws_on_read(c);
    gw_conn_leave(c);
}

void gw_ws_on_drain(struct gw_conn *c)
{
    struct gw_exchange *x = c->h1.x;
    struct gw_ws *ws = c->h1.ws;

    if (evbuffer_get_length(c->st.out) >= GW_BODY_HIWAT)
        return;
    if (ws->out_blocked) {
        ws->out_blocked = 0;
        read_pending(c);
    }
    if (x != NULL && x->up != NULL)
        gw_exchange_resume(x);
}

void gw_ws_on_deadline(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;
    struct gw_exchange *x = c->h1.x;
    uint64_t now = gw_now_ms();
    uint8_t payload[8];

    if (ws->close_sent || ws->client_eof) {
        /* The client did not answer our close in time, or the upstream did not finish after
         * the client's half-close. */
        gw_conn_close(c);
        return;
    }
    if (evbuffer_get_length(c->st.out) > 0 || (ws->tunnel && !at_boundary(ws))) {
        /* Not idle: the client has yet to take what we sent (the send timeout judges that),
         * or an upstream frame is half through. Look again later. */
        alive(c);
        return;
    }
    /* An upstream that takes nothing (|paused|) holds the client's bytes back, its pongs
     * included: after ping_interval + ping_timeout without progress the connection ends, as
     * a stalled client's would. */
    if (!ws->pinging) {
        /* The payload is the time, so a pong can be told from another endpoint's. */
        for (int i = 0; i < 8; i++)
            payload[i] = (uint8_t)(now >> (56 - 8 * i));
        put_frame(c, WS_OP_PING, 1, 0, payload, sizeof payload);
        ws->pinging = 1;
        ws->ping_due_ms = now + conf_of(c)->ping_timeout_ms;
        gw_conn_set_deadline(c, ws->ping_due_ms);
        gw_stream_flush(&c->st);
        return;
    }
    gw_log_ctx(GW_LOG_INFO, c->log_ctx, "%s",
               ws->paused ? "websocket: the upstream took no message for websocket.ping_interval "
                            "+ ping_timeout; closing"
                          : "websocket: no answer to a ping within websocket.ping_timeout; "
                            "closing");
    if (x->error == NULL)
        x->error = ws->paused ? "websocket upstream stalled" : "websocket ping timeout";
    if (!ws->tunnel || at_boundary(ws))
        send_close(c, WS_CLOSE_INTERNAL, "ping timeout", 12);
    tell_upstream(c, WS_CLOSE_ABNORMAL, "", 0);
    gw_stream_flush(&c->st);
    gw_conn_close(c);
}

void gw_ws_drain(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;

    if (ws->close_sent || ws->upstream_gone || c->write_then_linger || c->lingering)
        return;
    if (ws->tunnel) {
        /* The client's answer to our close reaches the upstream, which then closes too. */
        if (at_boundary(ws))
            send_close(c, WS_CLOSE_GOING_AWAY, "server shutting down", 20);
        ws->close_sent = 1;
        await_client_close(c);
        return;
    }
    send_close(c, WS_CLOSE_GOING_AWAY, "server shutting down", 20);
    tell_upstream(c, WS_CLOSE_GOING_AWAY, "", 0);
    await_client_close(c);
    upstream_left(c);
}

int gw_ws_send(struct gw_conn *c, unsigned flags, const uint8_t *p, size_t n)
{
    struct gw_ws *ws = c->h1.ws;
    int fin = (flags & WS_F_FIN) != 0;
    unsigned op = ws->out_started ? WS_OP_CONT
                                  : ((flags & WS_F_TEXT) ? WS_OP_TEXT : WS_OP_BINARY);

    if (ws->close_sent || c->closing)
        return 0;
    if (flags & (GW_WS_PING | GW_WS_PONG)) {
        put_frame(c, (flags & GW_WS_PING) ? WS_OP_PING : WS_OP_PONG, 1, 0, p, n > 125 ? 125 : n);
        return after_out(c);
    }
    if (!ws->deflate) {
        put_frame(c, op, fin, 0, p, n);
        ws->out_started = !fin;
        return after_out(c);
    }
    {
        struct evbuffer *tmp = c->w->ws_tmp;
        size_t off = 0, clen;
        int rc = 0;

        evbuffer_drain(tmp, evbuffer_get_length(tmp));
        for (;;) {
            size_t used = 0, olen = 0;

            rc = ws_out_deflate(&ws->out, p + off, n - off, fin, c->w->ws_scratch,
                                sizeof c->w->ws_scratch, &used, &olen);
            if (rc < 0)
                break;
            off += used;
            evbuffer_add(tmp, c->w->ws_scratch, olen);
            if (off == n && (!fin || rc == 1))
                break;
        }
        if (rc < 0) {
            evbuffer_drain(tmp, evbuffer_get_length(tmp));
            gw_log_ctx(GW_LOG_ERROR, c->log_ctx, "websocket: compression failed (out of memory)");
            gw_ws_upstream_failed(c);
            return 0;
        }
        clen = evbuffer_get_length(tmp);
        /* A piece that compressed to nothing yet waits for the next: the message's first frame
         * must carry its opcode and RSV1. */
        if (clen == 0 && !fin)
            return after_out(c);
        {
            uint8_t h[WS_FRAME_HEADER_MAX];
            size_t hl = ws_frame_header(h, op, fin, !ws->out_started, clen);

            evbuffer_add(c->st.out, h, hl);
            evbuffer_add_buffer(c->st.out, tmp);
            c->h1.x->bytes_out += hl + clen;
        }
        ws->out_started = !fin;
        return after_out(c);
    }
}

void gw_ws_close(struct gw_conn *c, unsigned code, const char *reason, size_t n)
{
    struct gw_ws *ws = c->h1.ws;

    if (ws->close_sent || c->closing) {
        ws->upstream_gone = 1;
        return;
    }
    send_close(c, code, reason, n);
    await_client_close(c);
    upstream_left(c);
}

void gw_ws_upstream_failed(struct gw_conn *c)
{
    struct gw_ws *ws = c->h1.ws;

    if (ws->close_sent || c->closing) {
        ws->upstream_gone = 1;
        return;
    }
    if (ws->tunnel) {
        ws->upstream_gone = 1;
        if (at_boundary(ws))
            send_close(c, WS_CLOSE_INTERNAL, "upstream failed", 15);
        gw_stream_flush(&c->st);
        gw_conn_close(c);
        return;
    }
    send_close(c, WS_CLOSE_INTERNAL, "upstream failed", 15);
    await_client_close(c);
    upstream_left(c);
}
