/* SPDX-License-Identifier: MIT */
/* Non-blocking stream sockets over libevent events and evbuffers (see stream.h for why not
 * bufferevents). */
#include "gateway/stream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "gateway/log.h"
#include "gateway/util.h"

#define STREAM_READ_SIZE 16384
/* A read of at most this many bytes is small: it fits libevent's smallest chain (1 KiB with its
 * header), an allocation malloc's per-thread cache serves without touching its bins. */
#define SMALL_READ 976

static void ms_to_tv(uint64_t ms, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* The write event, made at its first use: most client writes go out at once, so an idle
 * connection usually has none. */
static struct event *wev(struct gw_stream *s)
{
    if (s->wev == NULL &&
        (s->wev = event_new(event_get_base(s->rev), s->fd, EV_WRITE | EV_PERSIST, on_writable,
                            s)) == NULL) {
        gw_log_error("out of memory");
        abort();
    }
    return s->wev;
}

static void arm_write(struct gw_stream *s)
{
    if (s->writing)
        return;
    event_add(wev(s), s->has_write_tv ? &s->write_tv : NULL);
    s->writing = 1;
}

static void disarm_write(struct gw_stream *s)
{
    if (!s->writing)
        return;
    event_del(s->wev);
    s->writing = 0;
}

/* Parks an error for delivery from the loop, so no callback runs inside the caller's call. */
static void fail_later(struct gw_stream *s, int err)
{
    s->failed = 1;
    s->err = err;
    event_active(wev(s), EV_WRITE, 1);
}

static void on_read_timer(evutil_socket_t fd, short what, void *arg);

static void arm_read_timer(struct gw_stream *s, uint64_t at_ms, uint64_t now)
{
    struct timeval tv;

    /* Made at the first use: many streams never time a read (a WebSocket client's), and an
     * idle connection should cost little. */
    if (s->tev == NULL &&
        (s->tev = evtimer_new(event_get_base(s->rev), on_read_timer, s)) == NULL) {
        gw_log_error("out of memory");
        abort();
    }
    ms_to_tv(at_ms > now ? at_ms - now : 0, &tv);
    evtimer_add(s->tev, &tv);
    s->tev_at_ms = at_ms;
}

/* Starts the read clock afresh. A later deadline needs no timer work: the armed timer fires
 * early and re-arms (see on_read_timer). */
static void restart_read_clock(struct gw_stream *s)
{
    uint64_t now;

    if (s->read_ms == 0 || !s->reading) {
        s->read_deadline_ms = 0;
        return;
    }
    now = gw_now_ms();
    s->read_deadline_ms = now + s->read_ms;
    if (s->tev_at_ms == 0 || s->read_deadline_ms < s->tev_at_ms)
        arm_read_timer(s, s->read_deadline_ms, now);
}

static void on_read_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_stream *s = arg;
    uint64_t now;

    (void)fd;
    (void)what;
    s->tev_at_ms = 0;
    if (s->read_deadline_ms == 0)
        return;
    now = gw_now_ms();
    if (now < s->read_deadline_ms) {
        arm_read_timer(s, s->read_deadline_ms, now);
        return;
    }
    /* Reported again after another period unless the owner acts, like a persistent event. */
    s->read_deadline_ms = now + s->read_ms;
    arm_read_timer(s, s->read_deadline_ms, now);
    s->on_event(s, GW_STREAM_READ_TIMEOUT, s->arg);
}

/* ---- TLS: SSL_read/SSL_write in place of read(2)/write(2) ---- */

/* The largest TLS record's payload: what one SSL_write makes a record of. */
#define TLS_RECORD 16384

static void tls_handshake(struct gw_stream *s)
{
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        s->tls_hs = 0;
        disarm_write(s);
        /* Bytes that came with the last flight may sit decrypted in OpenSSL already. */
        if (SSL_has_pending(s->ssl))
            event_active(s->rev, EV_READ, 1);
        s->on_event(s, GW_STREAM_TLS_DONE, s->arg);
        return;
    }
    e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        disarm_write(s);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        arm_write(s);
        return;
    }
    s->tls_dead = 1;
    s->err = e == SSL_ERROR_SYSCALL ? errno : 0;
    disarm_write(s);
    s->on_event(s, GW_STREAM_TLS_FAILED, s->arg);
}

/* Reads records until the socket has no more or |read_size| bytes came; what OpenSSL still
 * holds decrypted makes no fd readiness, so the read event is activated for it. */
static void tls_read(struct gw_stream *s)
{
    struct evbuffer_iovec v;
    size_t got = 0;
    int n = 0, e = SSL_ERROR_NONE;

    if (s->tls_rd_end != 0) {
        s->on_event(s, (enum gw_stream_what)s->tls_rd_end, s->arg);
        return;
    }
    while (got < s->read_size) {
        if (evbuffer_reserve_space(s->in, TLS_RECORD, &v, 1) < 1) {
            s->on_event(s, GW_STREAM_ERROR, s->arg);
            return;
        }
        ERR_clear_error();
        n = SSL_read(s->ssl, v.iov_base, (int)(v.iov_len < TLS_RECORD ? v.iov_len : TLS_RECORD));
        if (n <= 0) {
            e = SSL_get_error(s->ssl, n);
            break;
        }
        v.iov_len = (size_t)n;
        evbuffer_commit_space(s->in, &v, 1);
        got += (size_t)n;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        /* Rare (a key update's answer): stop reading until the socket takes bytes. */
        s->tls_read_blocked = 1;
        if (s->reading)
            event_del(s->rev);
        arm_write(s);
    } else if (e == SSL_ERROR_NONE && SSL_has_pending(s->ssl)) {
        event_active(s->rev, EV_READ, 1);
    } else if (e == SSL_ERROR_ZERO_RETURN) {
        s->tls_rd_end = GW_STREAM_EOF;
    } else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL) {
        s->tls_dead = 1;
        s->err = e == SSL_ERROR_SYSCALL && errno != 0 ? errno : EPROTO;
        ERR_clear_error();
        s->tls_rd_end = GW_STREAM_ERROR;
    }
    if (got > 0) {
        /* The end came with the bytes (a request and its close_notify in one segment): the
         * socket may never be readable again, so the next read turn reports it. */
        if (s->tls_rd_end != 0)
            event_active(s->rev, EV_READ, 1);
        s->on_read(s, s->arg); /* may free |s|: nothing after it */
        return;
    }
    if (s->tls_rd_end != 0)
        s->on_event(s, (enum gw_stream_what)s->tls_rd_end, s->arg);
}

/* Writes |out| through SSL_write as far as the socket takes it. Returns 0, or -1 with s->err
 * set on an error. */
static int tls_write(struct gw_stream *s)
{
    size_t left;

    s->tls_write_blocked = 0;
    while ((left = evbuffer_get_length(s->out)) > 0) {
        size_t chunk = left < TLS_RECORD ? left : TLS_RECORD;
        unsigned char *p = evbuffer_pullup(s->out, (ev_ssize_t)chunk);
        int n, e;

        if (p == NULL) {
            s->err = ENOMEM;
            return -1;
        }
        ERR_clear_error();
        n = SSL_write(s->ssl, p, (int)chunk);
        if (n > 0) {
            evbuffer_drain(s->out, (size_t)n);
            continue;
        }
        e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_WANT_READ) {
            s->tls_write_blocked = 1;
            return 0;
        }
        s->tls_dead = 1;
        s->err = e == SSL_ERROR_SYSCALL && errno != 0 ? errno : EPIPE;
        ERR_clear_error();
        return -1;
    }
    return 0;
}

/* SSL_write wants the socket readable (tls_write_blocked): the read event, armed whatever
 * |reading| says and timed by the write timeout, resumes the write. */
static void tls_wait_read_for_write(struct gw_stream *s)
{
    disarm_write(s);
    event_add(s->rev, s->has_write_tv ? &s->write_tv : NULL);
}

/* The blocked write went through: the read event back as |reading| wants it, untimed. */
static void tls_write_unblocked(struct gw_stream *s)
{
    if (s->reading && !s->tls_read_blocked)
        event_remove_timer(s->rev);
    else
        event_del(s->rev);
}

static void tls_on_readable(struct gw_stream *s, short what)
{
    int drained = 0;

    if (s->tls_hs) {
        tls_handshake(s);
        return;
    }
    if (s->tls_write_blocked) {
        if (what & EV_TIMEOUT) {
            s->on_event(s, GW_STREAM_WRITE_TIMEOUT, s->arg);
            return;
        }
        if (tls_write(s) != 0) {
            tls_write_unblocked(s);
            fail_later(s, s->err);
            return;
        }
        if (s->tls_write_blocked) {
            tls_wait_read_for_write(s);
        } else {
            tls_write_unblocked(s);
            if (evbuffer_get_length(s->out) > 0)
                arm_write(s);
            drained = evbuffer_get_length(s->out) <= s->lowat && s->on_drain != NULL;
        }
    }
    /* An activation for pending bytes may come after reading was turned off. */
    if (s->reading && !s->tls_read_blocked) {
        if (!drained) {
            tls_read(s); /* may free |s| */
            return;
        }
        event_active(s->rev, EV_READ, 1); /* the read on the next turn: on_drain first */
    }
    if (drained)
        s->on_drain(s, s->arg); /* may free |s|: nothing after it */
}

int gw_stream_start_tls(struct gw_stream *s, SSL *ssl)
{
    if (SSL_set_fd(ssl, s->fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return GW_E_NOMEM;
    }
    SSL_set_accept_state(ssl);
    s->ssl = ssl;
    s->tls_hs = 1;
    s->small_reads = 0;
    return 0;
}

static void tls_close_notify(struct gw_stream *s)
{
    if (s->ssl == NULL || s->tls_dead || SSL_in_init(s->ssl))
        return;
    /* One call sends close_notify; waiting for the peer's would cost a round trip. */
    ERR_clear_error();
    SSL_shutdown(s->ssl);
    ERR_clear_error();
    s->tls_dead = 1; /* sent once */
}

void gw_stream_shutdown_write(struct gw_stream *s)
{
    tls_close_notify(s);
    shutdown(s->fd, SHUT_WR);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct gw_stream *s = arg;
    struct evbuffer_iovec v;
    ssize_t n;

    /* Any readiness restarts the clock; the timer itself is left alone. */
    if (s->read_deadline_ms != 0)
        s->read_deadline_ms = gw_now_ms() + s->read_ms;
    if (s->ssl != NULL) {
        tls_on_readable(s, what);
        return;
    }
    /* One read per readiness: with level-triggered epoll, bytes left behind are reported
     * again, so a read that would only return EAGAIN is never made. */
    if (s->small_reads) {
        /* After a small read, expect another: read on the stack and copy the bytes into a
         * chain of their size, which malloc serves from its per-thread cache, instead of
         * reserving a 32 KiB chain (a trip through malloc's bins and back per read). */
        char buf[STREAM_READ_SIZE];

        n = read(fd, buf, s->read_size < sizeof buf ? s->read_size : sizeof buf);
        if (n > 0) {
            if (evbuffer_add(s->in, buf, (size_t)n) != 0) {
                s->on_event(s, GW_STREAM_ERROR, s->arg);
                return;
            }
            s->small_reads = (size_t)n <= SMALL_READ;
            s->on_read(s, s->arg);
            return;
        }
    } else {
        /* Streaming: read straight into the buffer; the chains move on without a copy. */
        if (evbuffer_reserve_space(s->in, (ev_ssize_t)s->read_size, &v, 1) < 1) {
            s->on_event(s, GW_STREAM_ERROR, s->arg);
            return;
        }
        n = read(fd, v.iov_base, v.iov_len < s->read_size ? v.iov_len : s->read_size);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(s->in, &v, 1);
            s->small_reads = (size_t)n <= SMALL_READ;
            s->on_read(s, s->arg);
            return;
        }
    }
    if (n == 0) {
        s->on_event(s, GW_STREAM_EOF, s->arg);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    s->err = errno;
    s->on_event(s, GW_STREAM_ERROR, s->arg);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct gw_stream *s = arg;
    int err = 0;
    socklen_t len = sizeof err;

    if (s->failed) {
        s->failed = 0;
        disarm_write(s);
        s->on_event(s, GW_STREAM_ERROR, s->arg);
        return;
    }
    if (what & EV_TIMEOUT) {
        s->on_event(s, GW_STREAM_WRITE_TIMEOUT, s->arg);
        return;
    }
    if (s->connecting) {
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            s->err = err;
            disarm_write(s);
            s->on_event(s, GW_STREAM_ERROR, s->arg);
            return;
        }
        s->connecting = 0;
        disarm_write(s);
        s->on_event(s, GW_STREAM_CONNECTED, s->arg);
        return;
    }
    if (s->ssl != NULL) {
        if (s->tls_hs) {
            tls_handshake(s);
            return;
        }
        if (s->tls_read_blocked) {
            s->tls_read_blocked = 0;
            if (s->reading)
                event_add(s->rev, NULL);
            event_active(s->rev, EV_READ, 1);
        }
        if (tls_write(s) != 0) {
            disarm_write(s);
            s->on_event(s, GW_STREAM_ERROR, s->arg);
            return;
        }
        if (s->tls_write_blocked) {
            tls_wait_read_for_write(s); /* the read event resumes the write */
            return;
        }
    } else if (evbuffer_get_length(s->out) > 0 && evbuffer_write(s->out, fd) < 0 &&
               errno != EAGAIN && errno != EINTR) {
        s->err = errno;
        disarm_write(s);
        s->on_event(s, GW_STREAM_ERROR, s->arg);
        return;
    }
    if (evbuffer_get_length(s->out) == 0)
        disarm_write(s);
    if (evbuffer_get_length(s->out) <= s->lowat && s->on_drain != NULL)
        s->on_drain(s, s->arg);
}

/* The allocations of a parked stream (all NULL for a new one), reused by stream_setup(). */
struct parked {
    struct event *rev, *wev, *tev;
    struct evbuffer *in, *out;
};

static struct parked unpark(struct gw_stream *s)
{
    struct parked p = {s->rev, s->wev, s->tev, s->in, s->out};

    memset(s, 0, sizeof *s);
    s->fd = -1;
    return p;
}

static int stream_setup(struct gw_stream *s, struct event_base *base, int fd,
                        gw_stream_cb *on_read, gw_stream_cb *on_drain,
                        gw_stream_event_cb *on_event, void *arg, const struct parked *p)
{
    memset(s, 0, sizeof *s);
    s->fd = fd;
    s->read_size = STREAM_READ_SIZE;
    s->small_reads = 1; /* request and response heads come first */
    if (p->rev != NULL) {
        /* Parked: none of its events is pending, so they may be assigned again. */
        s->rev = p->rev;
        s->wev = p->wev;
        s->tev = p->tev;
        s->in = p->in;
        s->out = p->out;
        event_assign(s->rev, base, fd, EV_READ | EV_PERSIST, on_readable, s);
        if (s->wev != NULL)
            event_assign(s->wev, base, fd, EV_WRITE | EV_PERSIST, on_writable, s);
        if (s->tev != NULL)
            evtimer_assign(s->tev, base, on_read_timer, s);
    } else {
        s->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, s);
        s->in = evbuffer_new();
        s->out = evbuffer_new();
    }
    if (s->rev == NULL || s->in == NULL || s->out == NULL) {
        s->fd = -1; /* closed below, not by gw_stream_close() */
        gw_stream_close(s);
        close(fd);
        return GW_E_NOMEM;
    }
    gw_stream_set_cbs(s, on_read, on_drain, on_event, arg);
    return 0;
}

int gw_stream_init(struct gw_stream *s, struct event_base *base, int fd, gw_stream_cb *on_read,
                   gw_stream_cb *on_drain, gw_stream_event_cb *on_event, void *arg)
{
    static const struct parked none;

    return stream_setup(s, base, fd, on_read, on_drain, on_event, arg, &none);
}

/* Both connects; |now| NULL: every completion is reported from the loop. */
static int stream_connect(struct gw_stream *s, struct event_base *base, const struct sockaddr *sa,
                          socklen_t salen, uint64_t timeout_ms, gw_stream_cb *on_read,
                          gw_stream_cb *on_drain, gw_stream_event_cb *on_event, void *arg,
                          int *now)
{
    int one = 1, fd, saved, rc = -1;
    struct parked p = unpark(s);

    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && sa->sa_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd >= 0)
        rc = connect(fd, sa, salen);
    if (fd < 0 || (rc != 0 && errno != EINPROGRESS)) {
        saved = errno;
        if (fd >= 0)
            close(fd);
        /* Still parked: the allocations stay for the next try. */
        s->rev = p.rev;
        s->wev = p.wev;
        s->tev = p.tev;
        s->in = p.in;
        s->out = p.out;
        errno = saved;
        return -1;
    }
    if (stream_setup(s, base, fd, on_read, on_drain, on_event, arg, &p) != 0) {
        errno = ENOMEM;
        return -1;
    }
    if (now != NULL) {
        *now = rc == 0;
        if (rc == 0)
            return 0;
    }
    /* Completion (even an immediate one) is reported by writability, from the loop. */
    s->connecting = 1;
    if (timeout_ms > 0) {
        struct timeval tv;
        ms_to_tv(timeout_ms, &tv);
        event_add(wev(s), &tv);
    } else {
        event_add(wev(s), NULL);
    }
    s->writing = 1;
    return 0;
}

int gw_stream_connect(struct gw_stream *s, struct event_base *base, const struct sockaddr *sa,
                      socklen_t salen, uint64_t timeout_ms, gw_stream_cb *on_read,
                      gw_stream_cb *on_drain, gw_stream_event_cb *on_event, void *arg)
{
    return stream_connect(s, base, sa, salen, timeout_ms, on_read, on_drain, on_event, arg,
                          NULL);
}

int gw_stream_connect_now(struct gw_stream *s, struct event_base *base,
                          const struct sockaddr *sa, socklen_t salen, uint64_t timeout_ms,
                          gw_stream_cb *on_read, gw_stream_cb *on_drain,
                          gw_stream_event_cb *on_event, void *arg, int *now)
{
    return stream_connect(s, base, sa, salen, timeout_ms, on_read, on_drain, on_event, arg,
                          now);
}

void gw_stream_read(struct gw_stream *s, int on)
{
    if (on && !s->reading) {
        s->reading = 1;
        if (s->ssl == NULL) {
            event_add(s->rev, NULL);
        } else if (!s->tls_read_blocked) {
            event_add(s->rev, NULL); /* keeps the timer of a blocked write */
            /* Decrypted bytes, or an end already read, make no fd readiness. */
            if (SSL_has_pending(s->ssl) || s->tls_rd_end != 0)
                event_active(s->rev, EV_READ, 1);
        }
        restart_read_clock(s);
    } else if (!on && s->reading) {
        /* An activation for pending TLS bytes goes too; a blocked TLS write keeps the
         * event armed (tls_on_readable reads nothing while |reading| is off). */
        if (s->ssl == NULL || !s->tls_write_blocked)
            event_del(s->rev);
        s->reading = 0;
        s->read_deadline_ms = 0; /* an armed timer then finds nothing to do */
    }
}

void gw_stream_set_read_timeout(struct gw_stream *s, uint64_t ms)
{
    s->read_ms = ms;
    restart_read_clock(s);
}

void gw_stream_set_write_timeout(struct gw_stream *s, uint64_t ms)
{
    s->has_write_tv = ms > 0;
    ms_to_tv(ms, &s->write_tv);
    if (s->ssl != NULL && s->tls_write_blocked) {
        if (s->has_write_tv)
            event_add(s->rev, &s->write_tv);
        else
            event_remove_timer(s->rev);
        return;
    }
    if (!s->writing || s->connecting)
        return;
    if (s->has_write_tv)
        event_add(s->wev, &s->write_tv);
    else
        event_remove_timer(s->wev);
}

void gw_stream_flush(struct gw_stream *s)
{
    if (s->connecting || s->failed || evbuffer_get_length(s->out) == 0)
        return;
    if (s->ssl != NULL) {
        if (s->tls_write_blocked)
            return; /* the read event resumes the write */
        if (s->tls_hs || s->tls_read_blocked) {
            arm_write(s);
            return;
        }
        if (tls_write(s) != 0) {
            fail_later(s, s->err);
            return;
        }
        if (s->tls_write_blocked) {
            tls_wait_read_for_write(s);
            return;
        }
    } else if (evbuffer_write(s->out, s->fd) < 0 && errno != EAGAIN && errno != EINTR) {
        fail_later(s, errno);
        return;
    }
    if (evbuffer_get_length(s->out) > 0)
        arm_write(s);
    else if (s->writing)
        /* The owner may be waiting for the drain that the armed event promised: deliver it
         * from the loop (on_writable finds |out| empty, disarms and calls on_drain). */
        event_active(s->wev, EV_WRITE, 1);
}

void gw_stream_set_cbs(struct gw_stream *s, gw_stream_cb *on_read, gw_stream_cb *on_drain,
                       gw_stream_event_cb *on_event, void *arg)
{
    s->on_read = on_read;
    s->on_drain = on_drain;
    s->on_event = on_event;
    s->arg = arg;
}

void gw_stream_park(struct gw_stream *s)
{
    struct parked p;

    if (s->rev == NULL || s->in == NULL || s->out == NULL) {
        gw_stream_close(s);
        return;
    }
    if (s->fd < 0)
        return; /* parked already */
    if (s->ssl != NULL) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    /* Only what may be pending: an event_del() costs even when there is nothing to remove.
     * |wev| may carry an activation (a pending error, an owed drain) without |writing|. */
    if (s->reading || s->tls_write_blocked)
        event_del(s->rev);
    if (s->wev != NULL)
        event_del(s->wev);
    if (s->tev_at_ms != 0)
        event_del(s->tev);
    close(s->fd);
    if (evbuffer_get_length(s->in) > 0)
        evbuffer_drain(s->in, evbuffer_get_length(s->in));
    if (evbuffer_get_length(s->out) > 0)
        evbuffer_drain(s->out, evbuffer_get_length(s->out));
    p = unpark(s);
    s->rev = p.rev;
    s->wev = p.wev;
    s->tev = p.tev;
    s->in = p.in;
    s->out = p.out;
}

void gw_stream_close(struct gw_stream *s)
{
    /* rev is set by every successful setup: a zeroed stream owns no fd (fd 0 is not ours). */
    if (s->rev == NULL && s->wev == NULL && s->tev == NULL && s->in == NULL && s->out == NULL)
        return;
    if (s->ssl != NULL) {
        tls_close_notify(s);
        SSL_free(s->ssl); /* before close(): the SSL's BIO writes to the fd */
    }
    if (s->rev != NULL)
        event_free(s->rev);
    if (s->wev != NULL)
        event_free(s->wev);
    if (s->tev != NULL)
        event_free(s->tev);
    if (s->in != NULL)
        evbuffer_free(s->in);
    if (s->out != NULL)
        evbuffer_free(s->out);
    if (s->rev != NULL && s->fd >= 0)
        close(s->fd);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

int gw_server_sockaddr(const struct gw_server_conf *sc, struct sockaddr_storage *ss,
                       socklen_t *len)
{
    if (sc->unix_path != NULL) {
        struct sockaddr_un sa_un;
        size_t n = strlen(sc->unix_path);

        memset(&sa_un, 0, sizeof sa_un);
        if (n >= sizeof sa_un.sun_path)
            return -1;
        sa_un.sun_family = AF_UNIX;
        memcpy(sa_un.sun_path, sc->unix_path, n + 1);
        memcpy(ss, &sa_un, sizeof sa_un);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    if (sc->numeric) {
        char text[80];
        int n = (int)sizeof *ss;
        int tn = snprintf(text, sizeof text, strchr(sc->host, ':') ? "[%s]:%u" : "%s:%u",
                          sc->host, (unsigned)sc->port);

        if (tn < 0 || (size_t)tn >= sizeof text ||
            evutil_parse_sockaddr_port(text, (struct sockaddr *)ss, &n) != 0)
            return -1;
        *len = (socklen_t)n;
        return 0;
    }
    return -1;
}
