/* SPDX-License-Identifier: MIT */
/* The WebSocket session over its carrier (an HTTP/1.1 connection or an HTTP/2 stream): frames
 * in and out, the close handshake and liveness. See ws.h. */
#include "gateway/ws.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/exchange.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/util.h"
#include "gateway/worker.h"

/* Bytes queued to the client above which the session writes at once instead of at the end of
 * the loop turn (as h1 does). */
#define FLUSH_NOW_BYTES (64 * 1024)

/* The carrier, through its ops. */
static struct gw_exchange *x_of(const struct gw_ws *ws)
{
    return ws->car->io->exchange(ws->car);
}

static struct gw_worker *w_of(const struct gw_ws *ws)
{
    return ws->car->io->worker(ws->car);
}

static struct evbuffer *in_of(const struct gw_ws *ws)
{
    return ws->car->io->in(ws->car);
}

static struct evbuffer *out_of(const struct gw_ws *ws)
{
    return ws->car->io->out(ws->car);
}

static enum gw_ws_io_state io_state(const struct gw_ws *ws)
{
    return ws->car->io->state(ws->car);
}

static void io_read(const struct gw_ws *ws, int on)
{
    ws->car->io->read(ws->car, on);
}

static void io_flush(const struct gw_ws *ws, int now)
{
    ws->car->io->flush(ws->car, now);
}

static void io_set_deadline(const struct gw_ws *ws, uint64_t at_ms)
{
    ws->car->io->set_deadline(ws->car, at_ms);
}

static void io_finish(const struct gw_ws *ws)
{
    ws->car->io->finish(ws->car);
}

static void io_abort(const struct gw_ws *ws)
{
    ws->car->io->abort(ws->car);
}

static const struct gw_ws_conf *conf_of(const struct gw_ws *ws)
{
    return &x_of(ws)->route->ws;
}

static void put_frame(struct gw_ws *ws, unsigned op, int fin, int rsv1, const uint8_t *p,
                      size_t n)
{
    struct evbuffer *out = out_of(ws);
    uint8_t h[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_header(h, op, fin, rsv1, n);

    evbuffer_add(out, h, hl);
    if (n > 0)
        evbuffer_add(out, p, n);
    x_of(ws)->bytes_out += hl + n;
}

/* Writes now when much is queued, else at the end of the turn; says whether to pause. */
static int after_out(struct gw_ws *ws)
{
    io_flush(ws, evbuffer_get_length(out_of(ws)) >= FLUSH_NOW_BYTES);
    return ws->car->io->out_full(ws->car);
}

/* Our close frame; |code| 0 sends one without a status (the answer to a close without one). */
static void send_close(struct gw_ws *ws, unsigned code, const char *reason, size_t rlen)
{
    uint8_t p[125];
    size_t n = 0;

    if (ws->close_sent)
        return;
    ws->close_sent = 1;
    ws->close_code = (uint16_t)code;
    if (code != 0)
        n = ws_close_payload(p, code, reason, rlen);
    put_frame(ws, WS_OP_CLOSE, 1, 0, p, n);
}

/* The client's side ended: the upstream hears it once, with |code|. */
static void tell_upstream(struct gw_ws *ws, unsigned code, const char *reason, size_t n)
{
    struct gw_exchange *x = x_of(ws);

    if (ws->upstream_gone)
        return;
    ws->upstream_gone = 1;
    if (x->up != NULL)
        gw_exchange_ws_closed(x, code, reason, n);
}

/* Reading the client is on unless the upstream or the client's own output holds it back. */
static void update_reading(struct gw_ws *ws)
{
    if (io_state(ws) != GW_WS_IO_OPEN || ws->client_eof)
        return;
    io_read(ws, !ws->paused && !ws->out_blocked);
}

/* Reads what waits in the input after reading was held back (nothing new would wake us). The
 * carrier keeps itself alive around every gw_ws_* call (ws.h): no guard is needed here. */
static void read_pending(struct gw_ws *ws)
{
    update_reading(ws);
    if (!ws->paused && !ws->out_blocked && evbuffer_get_length(in_of(ws)) > 0)
        gw_ws_on_read(ws);
}

/* The upstream detached: what the client sends now is read only to find its close, so
 * nothing holds reading back for the upstream any more. */
static void upstream_left(struct gw_ws *ws)
{
    ws->upstream_gone = 1;
    if (ws->paused && !ws->tunnel) {
        ws->paused = 0;
        read_pending(ws);
    }
}

/* Any byte from the client proves it alive: the ping clock starts again. */
static void alive(struct gw_ws *ws)
{
    uint64_t every = conf_of(ws)->ping_interval_ms;

    ws->pinging = 0;
    if (ws->close_sent || ws->client_eof)
        return;
    io_set_deadline(ws, every > 0 ? gw_now_ms() + every : 0);
}

/* After our close frame the client has close_timeout to answer with its own. */
static void await_client_close(struct gw_ws *ws)
{
    io_set_deadline(ws, gw_now_ms() + conf_of(ws)->close_timeout_ms);
    io_flush(ws, 0);
}

struct gw_ws *gw_ws_new(struct gw_ws_carrier *car, int tunnel)
{
    struct gw_ws *ws = gw_xcalloc(1, sizeof *ws);
    const struct gw_exchange *x = car->io->exchange(car);
    const struct gw_ws_conf *wc = &x->route->ws;

    ws->car = car;
    car->sess = ws;
    ws->tunnel = tunnel != 0;
    gw_m_gauge(&w_of(ws)->metrics->websockets, 1);
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
    /* Liveness is ours now (the carrier dropped its read timeout): pings instead. */
    io_read(ws, 1);
    alive(ws);
    return ws;
}

void gw_ws_free(struct gw_ws *ws)
{
    if (ws == NULL)
        return;
    gw_m_gauge(&w_of(ws)->metrics->websockets, -1);
    if (!ws->tunnel) {
        ws_in_free(&ws->in);
        ws_out_free(&ws->out);
    }
    ws->car->sess = NULL;
    free(ws);
}

static void on_client_close(struct gw_ws *ws, unsigned code, const uint8_t *reason, size_t n)
{
    /* The usual answer echoes the client's code (RFC 6455 §5.5.1). */
    send_close(ws, code == WS_CLOSE_NO_STATUS ? 0 : code, "", 0);
    tell_upstream(ws, code, (const char *)reason, n);
    io_finish(ws);
}

static void on_protocol_error(struct gw_ws *ws, unsigned code, const char *why)
{
    struct gw_exchange *x = x_of(ws);

    gw_log_ctx(GW_LOG_INFO, x->log_ctx, "websocket: %s; closing with %u", why, code);
    if (x->error == NULL)
        x->error = why;
    send_close(ws, code, why, strlen(why));
    tell_upstream(ws, code, why, strlen(why));
    /* After failing the connection nothing more of it is read (RFC 6455 §7.1.7). */
    io_finish(ws);
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

static void tunnel_read(struct gw_ws *ws)
{
    struct gw_exchange *x = x_of(ws);
    struct evbuffer *in = in_of(ws);
    size_t n = evbuffer_get_length(in);

    if (ws->paused || x->up == NULL || x->req_body == NULL || (n == 0 && !ws->client_eof))
        return;
    if (n > 0) {
        alive(ws);
        evbuffer_remove_buffer(in, x->req_body, n);
        x->bytes_in += n;
        if (evbuffer_get_length(x->req_body) >= GW_BODY_HIWAT) {
            ws->paused = 1;
            io_read(ws, 0);
        }
    }
    /* After the client's EOF, its last byte taken: the upstream's side is done too. */
    if (ws->client_eof)
        x->req_done = 1;
    gw_exchange_req_body(x);
}

int gw_ws_on_eof(struct gw_ws *ws)
{
    struct gw_exchange *x = x_of(ws);

    if (!ws->tunnel || ws->client_eof || ws->upstream_gone || x->up == NULL)
        return 0;
    ws->client_eof = 1;
    ws->pinging = 0; /* a half-closed client cannot answer pings */
    io_read(ws, 0);
    io_set_deadline(ws, gw_now_ms() + conf_of(ws)->close_timeout_ms);
    tunnel_read(ws);
    return 1;
}

int gw_ws_tunnel_out(struct gw_ws *ws, struct evbuffer *src)
{
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
    evbuffer_add_buffer(out_of(ws), src);
    x_of(ws)->bytes_out += n;
    return after_out(ws);
}

void gw_ws_tunnel_end(struct gw_ws *ws)
{
    ws->upstream_gone = 1;
    io_finish(ws);
}

void gw_ws_on_read(struct gw_ws *ws)
{
    static uint8_t no_input[1];
    struct gw_exchange *x = x_of(ws);
    struct gw_worker *w = w_of(ws);
    struct evbuffer *in = in_of(ws);
    size_t len = evbuffer_get_length(in), off = 0;
    uint8_t *buf;

    if (ws->tunnel) {
        tunnel_read(ws);
        return;
    }
    if (ws->paused || ws->out_blocked)
        return;
    /* Even with no new byte the decoder may hold inflated output that did not fit before a
     * pause: it is asked again. */
    buf = no_input;
    if (len > 0) {
        alive(ws);
        buf = evbuffer_pullup(in, -1);
        if (buf == NULL) {
            io_abort(ws); /* out of memory */
            return;
        }
    }
    while (io_state(ws) == GW_WS_IO_OPEN && !ws->paused && !ws->out_blocked) {
        struct ws_in_event ev;
        size_t used = 0;
        enum ws_in_type t = ws_in_next(&ws->in, buf + off, len - off, &used, w->ws_scratch,
                                       sizeof w->ws_scratch, &ev);

        off += used;
        if (t == WS_IN_NEED)
            break;
        if (t == WS_IN_DATA) {
            /* After our close, data is read only to find the client's close. */
            if (ws->upstream_gone || ws->close_sent)
                continue;
            if (gw_exchange_ws_message(x, ev.flags, ev.data, ev.len)) {
                ws->paused = 1;
                io_read(ws, 0);
            }
        } else if (t == WS_IN_PING) {
            /* A client that pings without reading the pongs stops being read. */
            if (!ws->close_sent) {
                put_frame(ws, WS_OP_PONG, 1, 0, ev.data, ev.len);
                if (after_out(ws)) {
                    ws->out_blocked = 1;
                    update_reading(ws);
                }
            }
        } else if (t == WS_IN_CLOSE) {
            on_client_close(ws, ev.code, ev.data, ev.len);
            break;
        } else if (t == WS_IN_ERROR) {
            on_protocol_error(ws, ev.code, ev.why);
            break;
        }
    }
    evbuffer_drain(in, off);
    x->bytes_in += off;
}

void gw_ws_resume_reading(struct gw_ws *ws)
{
    struct gw_exchange *x;

    if (!ws->paused || io_state(ws) == GW_WS_IO_GONE)
        return;
    x = x_of(ws);
    if (ws->tunnel && x->req_body != NULL && evbuffer_get_length(x->req_body) >= GW_BODY_HIWAT)
        return;
    ws->paused = 0;
    update_reading(ws);
    gw_ws_on_read(ws);
}

void gw_ws_on_drain(struct gw_ws *ws)
{
    struct gw_exchange *x;

    if (ws->car->io->out_full(ws->car))
        return;
    if (ws->out_blocked) {
        ws->out_blocked = 0;
        read_pending(ws);
    }
    x = x_of(ws);
    if (x != NULL && x->up != NULL)
        gw_exchange_resume(x);
}

void gw_ws_on_deadline(struct gw_ws *ws)
{
    struct gw_exchange *x = x_of(ws);
    uint64_t now = gw_now_ms();
    uint8_t payload[8];

    if (ws->close_sent || ws->client_eof) {
        /* The client did not answer our close in time, or the upstream did not finish after
         * the client's half-close. */
        io_abort(ws);
        return;
    }
    if (evbuffer_get_length(out_of(ws)) > 0 || (ws->tunnel && !at_boundary(ws))) {
        /* Not idle: the client has yet to take what we sent (the send timeout judges that),
         * or an upstream frame is half through. Look again later. */
        alive(ws);
        return;
    }
    /* An upstream that takes nothing (|paused|) holds the client's bytes back, its pongs
     * included: after ping_interval + ping_timeout without progress the connection ends, as
     * a stalled client's would. */
    if (!ws->pinging) {
        /* The payload is the time, so a pong can be told from another endpoint's. */
        for (int i = 0; i < 8; i++)
            payload[i] = (uint8_t)(now >> (56 - 8 * i));
        put_frame(ws, WS_OP_PING, 1, 0, payload, sizeof payload);
        ws->pinging = 1;
        io_set_deadline(ws, now + conf_of(ws)->ping_timeout_ms);
        io_flush(ws, 1);
        return;
    }
    gw_log_ctx(GW_LOG_INFO, x->log_ctx, "%s",
               ws->paused ? "websocket: the upstream took no message for websocket.ping_interval "
                            "+ ping_timeout; closing"
                          : "websocket: no answer to a ping within websocket.ping_timeout; "
                            "closing");
    if (x->error == NULL)
        x->error = ws->paused ? "websocket upstream stalled" : "websocket ping timeout";
    if (!ws->tunnel || at_boundary(ws))
        send_close(ws, WS_CLOSE_INTERNAL, "ping timeout", 12);
    tell_upstream(ws, WS_CLOSE_ABNORMAL, "", 0);
    io_flush(ws, 1);
    io_abort(ws);
}

void gw_ws_drain(struct gw_ws *ws)
{
    /* A carrier already ending (finishing, or gone with its exchange) has nothing to drain. */
    if (ws->close_sent || ws->upstream_gone || io_state(ws) != GW_WS_IO_OPEN)
        return;
    if (ws->tunnel) {
        /* The client's answer to our close reaches the upstream, which then closes too. */
        if (at_boundary(ws))
            send_close(ws, WS_CLOSE_GOING_AWAY, "server shutting down", 20);
        ws->close_sent = 1;
        await_client_close(ws);
        return;
    }
    send_close(ws, WS_CLOSE_GOING_AWAY, "server shutting down", 20);
    tell_upstream(ws, WS_CLOSE_GOING_AWAY, "", 0);
    await_client_close(ws);
    upstream_left(ws);
}

int gw_ws_send(struct gw_ws *ws, unsigned flags, const uint8_t *p, size_t n)
{
    int fin = (flags & WS_F_FIN) != 0;
    unsigned op = ws->out_started ? WS_OP_CONT
                                  : ((flags & WS_F_TEXT) ? WS_OP_TEXT : WS_OP_BINARY);

    if (ws->close_sent || io_state(ws) == GW_WS_IO_GONE)
        return 0;
    if (flags & (GW_WS_PING | GW_WS_PONG)) {
        put_frame(ws, (flags & GW_WS_PING) ? WS_OP_PING : WS_OP_PONG, 1, 0, p,
                  n > 125 ? 125 : n);
        return after_out(ws);
    }
    if (!ws->deflate) {
        put_frame(ws, op, fin, 0, p, n);
        ws->out_started = !fin;
        return after_out(ws);
    }
    {
        struct gw_worker *w = w_of(ws);
        struct evbuffer *tmp = w->ws_tmp, *out;
        size_t off = 0, clen;
        int rc = 0;

        evbuffer_drain(tmp, evbuffer_get_length(tmp));
        for (;;) {
            size_t used = 0, olen = 0;

            rc = ws_out_deflate(&ws->out, p + off, n - off, fin, w->ws_scratch,
                                sizeof w->ws_scratch, &used, &olen);
            if (rc < 0)
                break;
            off += used;
            evbuffer_add(tmp, w->ws_scratch, olen);
            if (off == n && (!fin || rc == 1))
                break;
        }
        if (rc < 0) {
            evbuffer_drain(tmp, evbuffer_get_length(tmp));
            gw_log_ctx(GW_LOG_ERROR, x_of(ws)->log_ctx,
                       "websocket: compression failed (out of memory)");
            gw_ws_upstream_failed(ws);
            return 0;
        }
        clen = evbuffer_get_length(tmp);
        /* A piece that compressed to nothing yet waits for the next: the message's first frame
         * must carry its opcode and RSV1. */
        if (clen == 0 && !fin)
            return after_out(ws);
        {
            uint8_t h[WS_FRAME_HEADER_MAX];
            size_t hl = ws_frame_header(h, op, fin, !ws->out_started, clen);

            out = out_of(ws);
            evbuffer_add(out, h, hl);
            evbuffer_add_buffer(out, tmp);
            x_of(ws)->bytes_out += hl + clen;
        }
        ws->out_started = !fin;
        return after_out(ws);
    }
}

void gw_ws_close(struct gw_ws *ws, unsigned code, const char *reason, size_t n)
{
    if (ws->close_sent || io_state(ws) == GW_WS_IO_GONE) {
        ws->upstream_gone = 1;
        return;
    }
    send_close(ws, code, reason, n);
    await_client_close(ws);
    upstream_left(ws);
}

void gw_ws_upstream_failed(struct gw_ws *ws)
{
    if (ws->close_sent || io_state(ws) == GW_WS_IO_GONE) {
        ws->upstream_gone = 1;
        return;
    }
    if (ws->tunnel) {
        ws->upstream_gone = 1;
        if (at_boundary(ws))
            send_close(ws, WS_CLOSE_INTERNAL, "upstream failed", 15);
        io_flush(ws, 1);
        io_abort(ws);
        return;
    }
    send_close(ws, WS_CLOSE_INTERNAL, "upstream failed", 15);
    await_client_close(ws);
    upstream_left(ws);
}
