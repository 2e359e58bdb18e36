/* SPDX-License-Identifier: MIT */
/* Client connections: accept set-up, the callback guard, deadlines and the close path. */
#include "gateway/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/exchange.h"
#include "gateway/h2.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/tls.h"
#include "gateway/util.h"
#include "gateway/worker.h"

/* How long a lingering close waits for the client to stop sending (nginx: lingering_time). */
#define LINGER_MS 2000

/* The HTTP/2 connection preface (RFC 9113 §3.4): an h2c client by prior knowledge opens
 * with it. */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof h2_preface - 1)

static void conn_free(struct gw_conn *c)
{
    if (c->h2 != NULL)
        gw_h2_free(c);
    gw_h1_free(c);
    gw_stream_close(&c->st);
    free((void *)(uintptr_t)c->client.tls); /* owned here, lent to the exchanges */
    if (c->timer != NULL)
        event_free(c->timer);
    gw_worker_conn_removed(c->w, c);
    gw_wsnap_unref(c->snap);
    free(c);
}

void gw_conn_leave(struct gw_conn *c)
{
    if (--c->refs == 0 && c->closing)
        conn_free(c);
}

void gw_conn_close(struct gw_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    /* Stop every source of callbacks now; the memory goes when the last guard drops. */
    gw_stream_read(&c->st, 0);
    event_del(c->timer);
    if (c->h2 != NULL)
        gw_h2_on_gone(c);
    else
        gw_h1_on_gone(c);
    if (c->refs == 0)
        conn_free(c);
}

static void arm_timer(struct gw_conn *c, uint64_t at_ms)
{
    uint64_t now = gw_now_ms();
    struct timeval tv;
    uint64_t d = at_ms > now ? at_ms - now : 0;

    tv.tv_sec = (time_t)(d / 1000);
    tv.tv_usec = (suseconds_t)((d % 1000) * 1000);
    evtimer_add(c->timer, &tv);
    c->timer_ms = at_ms;
}

void gw_conn_set_deadline(struct gw_conn *c, uint64_t deadline_ms)
{
    c->deadline_ms = deadline_ms;
    /* A later deadline needs no timer work: the armed timer fires early and re-arms. */
    if (deadline_ms != 0 && (c->timer_ms == 0 || deadline_ms < c->timer_ms))
        arm_timer(c, deadline_ms);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_conn *c = arg;
    uint64_t now = gw_now_ms();

    (void)fd;
    (void)what;
    c->timer_ms = 0;
    if (c->deadline_ms == 0)
        return;
    if (now < c->deadline_ms) {
        arm_timer(c, c->deadline_ms);
        return;
    }
    c->deadline_ms = 0;
    gw_conn_enter(c);
    if (c->tls_hs) {
        gw_m_add(&c->w->metrics->tls_handshake_failures, 1);
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "TLS handshake timed out (timeouts.header)");
        gw_conn_close(c);
    } else if (c->lingering)
        gw_conn_close(c);
    else if (c->h2 != NULL)
        gw_h2_on_deadline(c);
    else
        gw_h1_on_deadline(c);
    gw_conn_leave(c);
}

void gw_conn_flush_soon(struct gw_conn *c)
{
    if (c->flush_pending || c->closing)
        return;
    c->flush_pending = 1;
    gw_conn_enter(c); /* left by the worker's flush: the conn outlives its turn in the list */
    gw_worker_flush_soon(c->w, c);
}

static void start_linger(struct gw_conn *c)
{
    c->lingering = 1;
    gw_stream_shutdown_write(&c->st); /* a TLS close_notify first */
    gw_stream_read(&c->st, 1);
    gw_conn_set_deadline(c, gw_now_ms() + LINGER_MS);
}

static void on_read(struct gw_stream *s, void *arg)
{
    struct gw_conn *c = arg;

    if (c->lingering || c->write_then_linger) {
        evbuffer_drain(s->in, evbuffer_get_length(s->in));
        return;
    }
    gw_conn_enter(c);
    if (c->h2_sniff) {
        /* Prior knowledge: an HTTP/2 client opens with the preface; anything else is
         * HTTP/1.1. A prefix of the preface waits for more bytes. */
        char head[H2_PREFACE_LEN];
        size_t n = evbuffer_get_length(s->in);

        if (n > H2_PREFACE_LEN)
            n = H2_PREFACE_LEN;
        evbuffer_copyout(s->in, head, n);
        if (memcmp(head, h2_preface, n) != 0) {
            c->h2_sniff = 0;
        } else if (n == H2_PREFACE_LEN) {
            c->h2_sniff = 0;
            gw_conn_start_session(c, 1);
            gw_conn_leave(c);
            return;
        } else {
            gw_conn_leave(c);
            return;
        }
    }
    if (c->h2 != NULL)
        gw_h2_on_read(c);
    else
        gw_h1_on_read(c);
    gw_conn_leave(c);
}

static void on_drain(struct gw_stream *s, void *arg)
{
    struct gw_conn *c = arg;

    if (c->write_then_linger) {
        if (evbuffer_get_length(s->out) == 0) {
            c->write_then_linger = 0;
            start_linger(c);
        }
        return;
    }
    gw_conn_enter(c);
    if (c->h2 != NULL)
        gw_h2_on_drain(c);
    else
        gw_h1_on_drain(c);
    gw_conn_leave(c);
}

/* The TLS handshake ended: start the session ALPN chose, or close. */
static void on_tls_handshake(struct gw_conn *c, enum gw_stream_what what)
{
    char reason[256];

    c->tls_hs = 0;
    if (what == GW_STREAM_TLS_FAILED) {
        gw_m_add(&c->w->metrics->tls_handshake_failures, 1);
        if (c->st.err != 0)
            snprintf(reason, sizeof reason, "%s", strerror(c->st.err));
        gw_tls_error(reason, sizeof reason,
                     c->st.err != 0 ? reason : "connection closed by the client");
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "TLS handshake failed: %s", reason);
        gw_conn_close(c);
        return;
    }
    gw_m_add(&c->w->metrics->tls_handshakes, 1);
    c->client.tls = gw_tls_info_new(c->st.ssl);
    gw_conn_set_deadline(c, 0);
    gw_conn_start_session(c, gw_tls_alpn_h2(c->st.ssl));
}

static void on_event(struct gw_stream *s, enum gw_stream_what what, void *arg)
{
    struct gw_conn *c = arg;

    (void)s;
    if (what == GW_STREAM_TLS_DONE || what == GW_STREAM_TLS_FAILED) {
        gw_conn_enter(c);
        on_tls_handshake(c, what);
        gw_conn_leave(c);
        return;
    }
    if (what == GW_STREAM_EOF && c->write_then_linger) {
        /* The client half-closed; still deliver the response we are writing. */
        gw_stream_read(&c->st, 0);
        return;
    }
    gw_conn_enter(c);
    if (what == GW_STREAM_EOF && !c->lingering && c->h2 == NULL && gw_h1_on_eof(c)) {
        gw_conn_leave(c);
        return;
    }
    if (what == GW_STREAM_ERROR && !c->lingering && (c->h2 != NULL || c->h1.state != GW_H1_HEAD))
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "client connection error: %s", strerror(c->st.err));
    else if (what == GW_STREAM_WRITE_TIMEOUT)
        gw_log_ctx(GW_LOG_INFO, c->log_ctx, "client send timeout");
    else if (what == GW_STREAM_READ_TIMEOUT && !c->lingering) {
        if (c->h2 != NULL)
            gw_h2_on_deadline(c);
        else
            gw_h1_on_deadline(c);
        gw_conn_leave(c);
        return;
    }
    gw_conn_close(c);
    gw_conn_leave(c);
}

void gw_conn_adopt_snapshot(struct gw_conn *c)
{
    struct gw_wsnap *old = c->snap;

    const struct gw_tls_info *tls = c->client.tls;

    c->snap = gw_wsnap_ref(c->w->snap);
    gw_wsnap_unref(old);
    /* trusted_proxies and the send timeout may have changed with it. */
    gw_client_init(&c->client, &c->peer.sa, c->snap->cfg);
    c->client.tls = tls;
    gw_stream_set_write_timeout(&c->st, c->snap->cfg->timeouts.send_ms);
}

void gw_conn_close_after_write(struct gw_conn *c)
{
    gw_stream_read(&c->st, 0);
    gw_stream_set_read_timeout(&c->st, 0);
    c->deadline_ms = 0;
    gw_stream_flush(&c->st);
    if (evbuffer_get_length(c->st.out) == 0) {
        start_linger(c);
        return;
    }
    /* on_drain starts the linger once the last byte is written. */
    c->write_then_linger = 1;
}

static void format_peer(struct gw_conn *c)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int n = snprintf(c->log_ctx, sizeof c->log_ctx, "conn=%llu peer=", (unsigned long long)c->id);
    size_t room = sizeof c->log_ctx - (size_t)n;

    c->peer_at = (uint8_t)n;
    if (c->peer.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &c->peer.in.sin_addr, ip, sizeof ip);
        snprintf(c->log_ctx + n, room, "%s:%u", ip, ntohs(c->peer.in.sin_port));
    } else if (c->peer.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &c->peer.in6.sin6_addr, ip, sizeof ip);
        snprintf(c->log_ctx + n, room, "[%s]:%u", ip, ntohs(c->peer.in6.sin6_port));
    } else {
        snprintf(c->log_ctx + n, room, "unix");
    }
}

void gw_conn_start_session(struct gw_conn *c, int h2)
{
    if (h2)
        gw_h2_start(c);
    else
        gw_h1_start(c);
}

void gw_conn_drain(struct gw_conn *c)
{
    if (c->h2 != NULL)
        gw_h2_drain(c);
    else
        gw_h1_drain(c);
}

struct gw_conn *gw_conn_new(struct gw_worker *w, int fd, const struct sockaddr *peer,
                            socklen_t peerlen, const struct gw_listen_conf *lc)
{
    struct gw_conn *c = gw_xcalloc(1, sizeof *c);
    int one = 1;

    c->w = w;
    c->id = w->next_conn_id++;
    c->snap = gw_wsnap_ref(w->snap);
    if (peerlen > sizeof c->peer)
        peerlen = sizeof c->peer;
    memcpy(&c->peer, peer, peerlen);
    format_peer(c);
    gw_client_init(&c->client, &c->peer.sa, c->snap->cfg);
    if (peer->sa_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->timer = evtimer_new(w->base, on_timer, c);
    if (c->timer == NULL) {
        close(fd); /* gw_stream_init() owns it only once called */
        fd = -1;
    }
    if (fd < 0 || gw_stream_init(&c->st, w->base, fd, on_read, on_drain, on_event, c) != 0) {
        gw_log_ctx(GW_LOG_ERROR, c->log_ctx, "cannot set up connection: out of memory");
        if (c->timer != NULL)
            event_free(c->timer);
        gw_wsnap_unref(c->snap);
        free(c);
        return NULL;
    }
    gw_stream_set_write_timeout(&c->st, c->snap->cfg->timeouts.send_ms);
    /* Resume the sender at half the high-water mark, not at empty: the socket keeps bytes to
     * send while the next ones are fetched, instead of idling a round trip each time. */
    c->st.lowat = GW_BODY_HIWAT / 2;
    gw_worker_conn_added(w, c);
    if (lc->tls != NULL && lc->tls->ctx != NULL) {
        /* The handshake runs under timeouts.header; on_tls_handshake() starts the session. */
        struct ssl_st *ssl = gw_tls_new_ssl(lc);

        if (ssl == NULL || gw_stream_start_tls(&c->st, ssl) != 0) {
            gw_log_ctx(GW_LOG_ERROR, c->log_ctx, "cannot set up TLS: out of memory");
            gw_conn_close(c);
            return NULL;
        }
        c->tls_hs = 1;
        gw_stream_read(&c->st, 1);
        gw_conn_set_deadline(c, gw_now_ms() + c->snap->cfg->timeouts.header_ms);
        return c;
    }
    c->h2_sniff = lc->http2 == GW_H2_PRIOR_KNOWLEDGE;
    gw_conn_start_session(c, 0);
    return c;
}
