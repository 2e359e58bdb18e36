/* SPDX-License-Identifier: MIT */
/* The HTTP/1.1 downstream session: reads requests off a client connection with h1_parse,
 * turns each into an exchange, and writes the responses back in order. */
#ifndef GW_H1_H
#define GW_H1_H

#include <stdint.h>

#include "gateway/exchange.h"
#include "gateway/h1_parse.h"
#include "gateway/ws.h"

struct gw_conn;
struct gw_exchange;

enum gw_h1_state {
    GW_H1_HEAD = 0,   /* waiting for (the rest of) a request head */
    GW_H1_BODY,       /* reading the request body into the exchange */
    GW_H1_WAIT,       /* request read; the response is still coming */
    GW_H1_CLOSING,    /* last response queued; close once written */
    GW_H1_WS,         /* after a 101: the connection carries a WebSocket (gateway/ws.c) */
};

/* Embedded in struct gw_conn; lives and dies with it. */
struct gw_h1 {
    enum gw_h1_state state;
    enum h1_body body;            /* framing of the current request body */
    struct gw_exchange *x;        /* the exchange in progress (owned), or NULL */
    struct gw_ws_carrier ws;      /* in GW_H1_WS: the connection carries the WebSocket
                                     session ws.sess (owned) */
    uint64_t body_left;           /* H1_BODY_LENGTH: bytes still to read */
    struct h1_chunked chunked;    /* H1_BODY_CHUNKED decoder */
    unsigned keep_alive : 1;      /* the connection may serve another request */
    unsigned req_done : 1;        /* the current request body is complete */
    unsigned resp_done : 1;       /* the current response is complete */
    unsigned resp_chunked : 1;    /* the response body is chunk-encoded to the client */
    unsigned resp_close : 1;      /* the response is delimited by closing the connection */
    unsigned paused : 1;          /* client reading stopped: the exchange's body is full */
    unsigned head_request : 1;
    unsigned minor : 1;           /* client's HTTP/1.<minor> */
    unsigned head_started : 1;    /* bytes of the next head arrived: the header clock runs */
    unsigned in_process : 1;      /* process() is on the stack: do not re-enter it */
    unsigned out_blocked : 1;     /* no new request until the client drains our output */
    unsigned sse : 1;             /* the response is text/event-stream with heartbeats on */
    unsigned sse_line_start : 1;  /* its last byte sent ended a line: a comment may follow */
    unsigned requests;            /* requests served on this connection */
};

/* The session's side of the exchange interface. */
extern const struct gw_downstream_ops gw_h1_downstream_ops;

/* Starts the session on a freshly accepted connection. */
void gw_h1_start(struct gw_conn *c);

/* Connection callbacks, called through the conn's guard. */
void gw_h1_on_read(struct gw_conn *c);
void gw_h1_on_drain(struct gw_conn *c);
/* The client closed, failed, or a timeout fired: cancel the exchange in progress. */
void gw_h1_on_gone(struct gw_conn *c);
/* The header/idle deadline passed. */
void gw_h1_on_deadline(struct gw_conn *c);
/* The client half-closed: returns 1 when the session goes on (a WebSocket tunnel finishing
 * its upstream's side), 0 when the connection should close. */
int gw_h1_on_eof(struct gw_conn *c);
/* Frees the session's exchange if any (connection teardown). */
void gw_h1_free(struct gw_conn *c);

/* The worker starts draining: close the connection if idle, else after the response. */
void gw_h1_drain(struct gw_conn *c);

#endif
