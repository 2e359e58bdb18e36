/* SPDX-License-Identifier: MIT */
/* A non-blocking stream socket with input and output evbuffers, for client and upstream
 * connections alike. It is a thinner bufferevent: one read(2) per readiness, writes attempted
 * at once (not on the next loop turn), EV_WRITE armed only while the socket refuses bytes,
 * persistent events so a keep-alive connection costs no epoll_ctl per request, and a read
 * timeout kept as a deadline that a lazily re-armed timer checks, so neither a read nor a
 * restart of the clock touches libevent's timer heap. */
#ifndef GW_STREAM_H
#define GW_STREAM_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"

enum gw_stream_what {
    GW_STREAM_EOF = 1,           /* the peer closed its side (read returned 0) */
    GW_STREAM_ERROR = 2,         /* a socket error; errno-style code in gw_stream.err */
    GW_STREAM_READ_TIMEOUT = 3,  /* no byte read within the read timeout */
    GW_STREAM_WRITE_TIMEOUT = 4, /* the peer took no byte within the write timeout */
    GW_STREAM_CONNECTED = 5,     /* gw_stream_connect() finished */
    GW_STREAM_TLS_DONE = 6,      /* the TLS handshake finished (gw_stream_start_tls()) */
    GW_STREAM_TLS_FAILED = 7,    /* the TLS handshake failed: the reason is in this thread's
                                    OpenSSL error queue (gw_tls_error()), or |err| */
};

struct ssl_st;

struct gw_stream;
typedef void gw_stream_cb(struct gw_stream *s, void *arg);
typedef void gw_stream_event_cb(struct gw_stream *s, enum gw_stream_what what, void *arg);

/* Embedded in its owner (client conn or upstream connection), which frees it with
 * gw_stream_close(). Callbacks run from the owner's event loop only. */
struct gw_stream {
    int fd;
    int err;                      /* errno of the last GW_STREAM_ERROR */
    struct event *rev;            /* persistent read event, no timeout */
    struct event *tev;            /* read-timeout timer, made at its first use (NULL until
                                     then): may fire early, then re-arms */
    struct event *wev;            /* armed while |out| holds bytes the socket refused; made
                                     at its first use (NULL until then) */
    struct evbuffer *in;          /* bytes read, consumed by on_read */
    struct evbuffer *out;         /* bytes to write */
    gw_stream_cb *on_read;        /* new bytes are in |in| */
    gw_stream_cb *on_drain;       /* |out| fell to |lowat| bytes or fewer after a partial write */
    gw_stream_event_cb *on_event; /* EOF, error, timeout, connected */
    void *arg;
    uint32_t read_size;           /* bytes asked of one read(2); default 16k */
    uint32_t lowat;               /* on_drain threshold; default 0 */
    uint64_t read_ms;             /* read timeout; 0 = none */
    uint64_t read_deadline_ms;    /* monotonic; 0 = the clock is not running */
    uint64_t tev_at_ms;           /* when |tev| fires; 0 = not armed */
    struct timeval write_tv;
    unsigned reading : 1;         /* read event armed */
    unsigned writing : 1;         /* write event armed */
    unsigned connecting : 1;
    unsigned has_write_tv : 1;
    unsigned failed : 1;          /* an error is pending delivery */
    unsigned small_reads : 1;     /* the last read was small: read the next via the stack */
    unsigned tls_hs : 1;          /* TLS handshake in progress */
    unsigned tls_read_blocked : 1; /* SSL_read wants the socket writable first */
    unsigned tls_write_blocked : 1; /* SSL_write wants the socket readable first */
    unsigned tls_dead : 1;        /* a fatal TLS error: no close_notify */
    unsigned tls_rd_end : 2;      /* the read side ended (GW_STREAM_EOF or _ERROR): reported
                                     on every read turn, as a socket's EOF stays readable */
    struct ssl_st *ssl;           /* NULL: plain read(2)/write(2) */
};

/* Sets up |s| around the connected non-blocking socket |fd| (taken over: closed by
 * gw_stream_close(), even on failure). Reading is not enabled. Returns 0 or GW_E_NOMEM. */
int gw_stream_init(struct gw_stream *s, struct event_base *base, int fd, gw_stream_cb *on_read,
                   gw_stream_cb *on_drain, gw_stream_event_cb *on_event, void *arg);

/* Makes |s| (set up by gw_stream_init(), nothing read yet) a TLS server stream: SSL_read and
 * SSL_write replace read(2) and write(2). Takes ownership of |ssl|, even on failure (freed by
 * gw_stream_close()). The handshake is driven by readiness once reading is on (the caller
 * turns it on), and ends in on_event(GW_STREAM_TLS_DONE) or (GW_STREAM_TLS_FAILED). Returns 0
 * or GW_E_NOMEM. */
int gw_stream_start_tls(struct gw_stream *s, struct ssl_st *ssl);

/* Ends the write side: a TLS stream first sends close_notify (not waiting for the peer's),
 * then the socket is shut for writing. */
void gw_stream_shutdown_write(struct gw_stream *s);

/* Opens a non-blocking socket to |sa| and starts connecting. |s| must be zeroed, closed or
 * parked (gw_stream_park(): its allocations are reused). On success |s| is set up as by
 * gw_stream_init() and on_event(GW_STREAM_CONNECTED) or (GW_STREAM_ERROR) follows, or a write
 * timeout when |timeout_ms| passes first. Returns 0, or -1 with errno when the connect failed at
 * once (|s| is then left as it came: closed or parked). */
int gw_stream_connect(struct gw_stream *s, struct event_base *base, const struct sockaddr *sa,
                      socklen_t salen, uint64_t timeout_ms, gw_stream_cb *on_read,
                      gw_stream_cb *on_drain, gw_stream_event_cb *on_event, void *arg);

/* As gw_stream_connect(), except that a connect completing within the call (a unix socket
 * whose listener has room) sets |*now| to 1 and is not reported: |s| is connected on return
 * and the caller goes on at once, saving a loop turn. Otherwise |*now| is 0. */
int gw_stream_connect_now(struct gw_stream *s, struct event_base *base,
                          const struct sockaddr *sa, socklen_t salen, uint64_t timeout_ms,
                          gw_stream_cb *on_read, gw_stream_cb *on_drain,
                          gw_stream_event_cb *on_event, void *arg, int *now);

/* Fills |ss| and |*len| with the address of server |sc| when it is numeric or unix: (as
 * loaded: the port is set, a unix path fits). Returns 0, or -1 for a host name or an address
 * that cannot be made (the caller logs it). */
int gw_server_sockaddr(const struct gw_server_conf *sc, struct sockaddr_storage *ss,
                       socklen_t *len);

/* Turns reading on or off. Off is how a side applies backpressure. */
void gw_stream_read(struct gw_stream *s, int on);

/* Sets the read timeout (0 = none); it restarts on every read and on this call. */
void gw_stream_set_read_timeout(struct gw_stream *s, uint64_t ms);

/* Sets the write timeout (0 = none), counted while bytes wait for the socket. */
void gw_stream_set_write_timeout(struct gw_stream *s, uint64_t ms);

/* Writes |out| now as far as the socket takes it and arms EV_WRITE for the rest. A write error
 * is delivered later as on_event(GW_STREAM_ERROR), never from inside this call. */
void gw_stream_flush(struct gw_stream *s);

/* Re-targets the callbacks and |arg| (an idle upstream connection changing hands). */
void gw_stream_set_cbs(struct gw_stream *s, gw_stream_cb *on_read, gw_stream_cb *on_drain,
                       gw_stream_event_cb *on_event, void *arg);

/* Closes the socket but keeps the events and buffers (emptied) for the next
 * gw_stream_connect() on |s|, so one-shot upstream connections allocate nothing. A parked
 * stream holds no fd; gw_stream_close() frees it. Safe on a zeroed or closed stream. */
void gw_stream_park(struct gw_stream *s);

/* Closes the socket and frees events and buffers. Safe on a zeroed, parked or closed
 * stream. */
void gw_stream_close(struct gw_stream *s);

#endif
