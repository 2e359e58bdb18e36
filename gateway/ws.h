/* SPDX-License-Identifier: MIT */
/* The WebSocket session of a client connection after its 101. Two forms:
 * - terminated (asgi upstreams): client frames are read with ws_codec and handed to the
 *   exchange's upstream as message pieces; the upstream's pieces are framed to the client; the
 *   gateway answers pings, runs the close handshake and owns liveness;
 * - tunnel (http upstreams that answered 101 themselves): bytes pass both ways unchanged, and
 *   the gateway still owns liveness by slipping its own pings in between the upstream's frames
 *   (the client's pongs go through: unsolicited pongs are allowed, RFC 6455 §5.5.3). */
#ifndef GW_WS_H
#define GW_WS_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/ws_codec.h"

struct gw_conn;
struct gw_exchange;
struct evbuffer;

/* Follows frame boundaries in one direction of a tunnel without changing a byte. */
struct ws_bounds {
    uint64_t left;                /* payload bytes of the current frame still to pass */
    uint8_t hdr[14];              /* the current frame header, while incomplete */
    uint8_t hlen;
};

/* Owned by the h1 session (gw_h1.ws) from the 101 until the connection is freed. */
struct gw_ws {
    union {                       /* one form or the other: an idle WebSocket costs little */
        struct {
            struct ws_in in;      /* terminated: the client frame decoder */
            struct ws_out out;    /* terminated with permessage-deflate: the compressor */
        };
        struct ws_bounds up_bounds; /* tunnel: where the upstream's frames end, so that our
                                       pings go between them */
    };
    uint64_t ping_due_ms;         /* monotonic: when to ping (or give up, with |pinging|) */
    uint16_t close_code;          /* what we sent in our close frame */
    unsigned tunnel : 1;
    unsigned deflate : 1;         /* permessage-deflate agreed (terminated only) */
    unsigned pinging : 1;         /* a ping is out: the client has until ping_due_ms */
    unsigned paused : 1;          /* the upstream took no more: client reading stopped */
    unsigned out_blocked : 1;     /* our answers (pongs) wait for the client: reading stopped */
    unsigned out_started : 1;     /* the message to the client has its first frame out */
    unsigned close_sent : 1;
    unsigned upstream_gone : 1;   /* the upstream detached (closed, failed or told) */
    unsigned bad_bounds : 1;      /* tunnel: the upstream's bytes are not frames we can follow:
                                     nothing is slipped in any more */
    unsigned client_eof : 1;      /* tunnel: the client half-closed; the upstream finishes
                                     within close_timeout */
};

/* Starts the session on |c| whose 101 head is queued, for the exchange c->h1.x. |tunnel|: the
 * upstream speaks WebSocket itself. */
void gw_ws_start(struct gw_conn *c, int tunnel);

/* Connection callbacks, through the conn's guard (dispatched by the h1 session). */
void gw_ws_on_read(struct gw_conn *c);
void gw_ws_on_drain(struct gw_conn *c);
void gw_ws_on_deadline(struct gw_conn *c);

/* The client half-closed (EOF). In a tunnel whose upstream is still there, the upstream gets
 * the client's last bytes and then EOF, and has close_timeout to finish: returns 1. Otherwise
 * returns 0 (the connection closes). */
int gw_ws_on_eof(struct gw_conn *c);

/* The worker drains: close with 1001 (terminated) or at the next frame boundary (tunnel). */
void gw_ws_drain(struct gw_conn *c);

/* Frees the session state (not the exchange). */
void gw_ws_free(struct gw_conn *c);

/* The exchange's downstream calls while the session runs (from the h1 ops). */
int gw_ws_send(struct gw_conn *c, unsigned flags, const uint8_t *p, size_t n);
void gw_ws_close(struct gw_conn *c, unsigned code, const char *reason, size_t n);
void gw_ws_upstream_failed(struct gw_conn *c);
/* Tunnel: upstream bytes for the client (|src| is emptied); returns 1 to pause the
 * upstream. */
int gw_ws_tunnel_out(struct gw_conn *c, struct evbuffer *src);
/* Tunnel: the upstream closed; close the client once written. */
void gw_ws_tunnel_end(struct gw_conn *c);
/* The upstream can take client messages again. */
void gw_ws_resume_reading(struct gw_conn *c);

#endif
