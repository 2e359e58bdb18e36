/* SPDX-License-Identifier: MIT */
/* A client connection: owns its socket stream, its timers and its session, and the close
 * path. Created on accept and freed only from its worker's loop. */
#ifndef GW_CONN_H
#define GW_CONN_H

#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gateway/h1.h"
#include "gateway/stream.h"

struct gw_h2;
struct gw_listen_conf;
struct gw_worker;
struct gw_wsnap;

/* Owned by its worker (on the worker's list) from accept to conn_free. Callbacks enter
 * through a guard (refs); gw_conn_close() only marks, and the last guard frees. */
struct gw_conn {
    uint64_t id;
    struct gw_worker *w;
    struct gw_wsnap *snap;            /* the configuration the connection was accepted under */
    struct gw_stream st;
    union {                           /* the peer's address (a unix peer: its family only) */
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    char log_ctx[INET6_ADDRSTRLEN + 40];  /* "conn=N peer=ADDR" for error-log lines (85 bytes
                                             at most, with the NUL); ADDR
                                             ("ip:port", "[ip]:port", "unix") at |peer_at| */
    uint8_t peer_at;
    struct gw_client client;          /* what exchanges need of the peer, under |snap| */
    struct event *timer;              /* lazy deadline timer (header, idle, linger) */
    uint64_t deadline_ms;             /* monotonic; 0 = none */
    uint64_t timer_ms;                /* when |timer| fires; 0 = not armed */
    struct gw_conn *flush_next;       /* in the worker's flush list while |flush_pending| */
    struct gw_conn *prev, *next;      /* the worker's list */
    int refs;
    unsigned closing : 1;             /* free when the last guard drops */
    unsigned lingering : 1;           /* write side shut; discarding input until EOF/timeout */
    unsigned write_then_linger : 1;   /* last response still being written, then linger */
    unsigned flush_pending : 1;       /* in the worker's flush list, holding a guard */
    unsigned h2_sniff : 1;            /* h2c by prior knowledge: the first bytes decide */
    unsigned tls_hs : 1;              /* TLS handshake in progress: no session yet */
    struct gw_h2 *h2;                 /* the HTTP/2 session (owned) once started, else NULL:
                                         then |h1| runs the connection */
    struct gw_h1 h1;
};

/* The peer's address as text ("ip:port", "[ip]:port" or "unix"). */
static inline const char *gw_conn_peer_text(const struct gw_conn *c)
{
    return c->log_ctx + c->peer_at;
}

/* Takes over the socket |fd| accepted on the listener |lc| (read during the call) from
 * |peer| and starts its session. Returns the connection, or NULL (fd closed, logged). */
struct gw_conn *gw_conn_new(struct gw_worker *w, int fd, const struct sockaddr *peer,
                            socklen_t peerlen, const struct gw_listen_conf *lc);

/* Starts the connection's session: HTTP/2 when |h2| (ALPN chose h2, or the h2c preface
 * came), else HTTP/1.1. Bytes already in c->st.in are processed. */
void gw_conn_start_session(struct gw_conn *c, int h2);

/* The worker starts draining: each session finishes in its own way (GOAWAY on h2). */
void gw_conn_drain(struct gw_conn *c);

/* Marks |c| for closing; it is freed once no callback of it is on the stack. */
void gw_conn_close(struct gw_conn *c);

/* Writes what is queued, then closes: shuts the write side and discards input for a short
 * while, so the client reads the response instead of a reset (lingering close). */
void gw_conn_close_after_write(struct gw_conn *c);

/* Moves |c| to its worker's current configuration snapshot (between requests, after a
 * reload). */
void gw_conn_adopt_snapshot(struct gw_conn *c);

/* Sets the deadline (absolute, monotonic ms; 0 clears). Cheap: the timer re-arms lazily. */
void gw_conn_set_deadline(struct gw_conn *c, uint64_t deadline_ms);

/* Schedules one flush of c->st.out later in this loop turn (through the worker, which
 * flushes every connection that asked in one callback). */
void gw_conn_flush_soon(struct gw_conn *c);

/* Enters a callback of |c| (guard); gw_conn_leave() frees it if it was closed meanwhile. */
static inline void gw_conn_enter(struct gw_conn *c)
{
    c->refs++;
}
void gw_conn_leave(struct gw_conn *c);

#endif
