/* SPDX-License-Identifier: MIT */
/* The WebSocket session, over a carrier: an HTTP/1.1 connection after its 101, or (RFC 8441)
 * an HTTP/2 stream after its 200 to an extended CONNECT. Two forms:
 * - terminated (asgi upstreams): client frames are read with ws_codec and handed to the
 *   exchange's upstream as message pieces; the upstream's pieces are framed to the client; the
 *   gateway answers pings, runs the close handshake and owns liveness;
 * - tunnel (http upstreams that answered 101 themselves): bytes pass both ways unchanged, and
 *   the gateway still owns liveness by slipping its own pings in between the upstream's frames
 *   (the client's pongs go through: unsolicited pongs are allowed, RFC 6455 §5.5.3).
 * The session knows nothing of its carrier but the ops below (struct gw_ws_io). */
#ifndef GW_WS_H
#define GW_WS_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/ws_codec.h"

struct evbuffer;
struct gw_exchange;
struct gw_worker;
struct gw_ws;
struct gw_ws_carrier;

/* What gw_ws_io.state() reports. */
enum gw_ws_io_state {
    GW_WS_IO_OPEN = 0,      /* bytes flow both ways */
    GW_WS_IO_FINISHING,     /* finish() was called: what is queued goes out, nothing is read */
    GW_WS_IO_GONE,          /* abort() was called, or the carrier ended (client error, send
                               timeout): nothing goes out any more */
};

/* What carries a WebSocket's bytes, implemented by the carrier (h1.c: the connection; h2: the
 * stream). Every op gets the carrier's handle |car| (embedded in the carrier's object, which
 * the op finds around it with offsetof).
 *
 * Re-entrancy: no op frees the session or the carrier before it returns; abort() and
 * finish() only mark. The carrier frees the session (gw_ws_free()) only when no gw_ws_* call
 * is on the stack, and makes every gw_ws_* call with itself kept alive for the call (h1: in
 * the connection's guard): a call may reach abort(), and through the upstream other gw_ws_*
 * calls. */
struct gw_ws_io {
    /* The exchange of the handshake (the carrier's), or NULL once the carrier dropped it
     * (the client is gone). */
    struct gw_exchange *(*exchange)(struct gw_ws_carrier *car);
    struct gw_worker *(*worker)(struct gw_ws_carrier *car);
    /* Client bytes received and not yet consumed; bytes queued for the client. */
    struct evbuffer *(*in)(struct gw_ws_carrier *car);
    struct evbuffer *(*out)(struct gw_ws_carrier *car);
    enum gw_ws_io_state (*state)(struct gw_ws_carrier *car);
    /* Deliver client bytes (gw_ws_on_read()) or stop reading (backpressure). */
    void (*read)(struct gw_ws_carrier *car, int on);
    /* Bytes were added to out(): with |now|, write as much as the client takes at once (a
     * write error is reported later, never from inside the call); else within this loop
     * turn. */
    void (*flush)(struct gw_ws_carrier *car, int now);
    /* The client takes too little: more output waits for gw_ws_on_drain(). */
    int (*out_full)(struct gw_ws_carrier *car);
    /* The one deadline (absolute, monotonic ms; 0 clears): when it passes, the carrier calls
     * gw_ws_on_deadline(). Setting it again replaces it. */
    void (*set_deadline)(struct gw_ws_carrier *car, uint64_t at_ms);
    /* Write what is queued, then end, reading nothing more (h1: lingering close; h2:
     * END_STREAM after the queued DATA). */
    void (*finish)(struct gw_ws_carrier *car);
    /* End now (h1: close the connection; h2: RST_STREAM). Callers flush(now) first when the
     * queued bytes should have their chance. */
    void (*abort)(struct gw_ws_carrier *car);
};

/* The carrier's handle on its session, embedded in the carrier's own object (gw_h1, an h2
 * stream). The session keeps one pointer to it, not an ops table and a context: an idle
 * WebSocket stays within its malloc size class. */
struct gw_ws_carrier {
    const struct gw_ws_io *io;    /* set by the carrier before gw_ws_new() */
    struct gw_ws *sess;           /* the session (owned) from gw_ws_new() to gw_ws_free() */
};

/* Follows frame boundaries in one direction of a tunnel without changing a byte. */
struct ws_bounds {
    uint64_t left;                /* payload bytes of the current frame still to pass */
    uint8_t hdr[14];              /* the current frame header, while incomplete */
    uint8_t hlen;
};

/* Owned by its carrier (gw_ws_carrier.sess) from the 101 (or 200) until the carrier ends. */
struct gw_ws {
    union {                       /* one form or the other: an idle WebSocket costs little */
        struct {
            struct ws_in in;      /* terminated: the client frame decoder */
            struct ws_out out;    /* terminated with permessage-deflate: the compressor */
        };
        struct ws_bounds up_bounds; /* tunnel: where the upstream's frames end, so that our
                                       pings go between them */
    };
    struct gw_ws_carrier *car;    /* the carrier (its handle); its one deadline says when to
                                     ping, or with |pinging| when to give up */
    uint16_t close_code;          /* what we sent in our close frame */
    unsigned tunnel : 1;
    unsigned deflate : 1;         /* permessage-deflate agreed (terminated only) */
    unsigned pinging : 1;         /* a ping is out: the client has until the deadline */
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

/* Starts the session on the carrier |car| (car->io set), whose exchange's answer (101, or
 * 200) is queued. |tunnel|: the upstream speaks WebSocket itself. The carrier has no read
 * timeout any more (liveness is the session's). Sets car->sess and returns it. */
struct gw_ws *gw_ws_new(struct gw_ws_carrier *car, int tunnel);

/* Carrier events: new client bytes in in(), out() drained (below the carrier's low-water
 * mark), the deadline passed. */
void gw_ws_on_read(struct gw_ws *ws);
void gw_ws_on_drain(struct gw_ws *ws);
void gw_ws_on_deadline(struct gw_ws *ws);

/* The client half-closed (h1: EOF; h2: END_STREAM). In a tunnel whose upstream is still
 * there, the upstream gets the client's last bytes and then EOF, and has close_timeout to
 * finish: returns 1. Otherwise returns 0 (the carrier ends). */
int gw_ws_on_eof(struct gw_ws *ws);

/* The worker drains: close with 1001 (terminated) or at the next frame boundary (tunnel). */
void gw_ws_drain(struct gw_ws *ws);

/* Frees the session state (not the exchange) and clears car->sess. NULL is a no-op. */
void gw_ws_free(struct gw_ws *ws);

/* The exchange's downstream calls while the session runs (from the carrier's ops). */
int gw_ws_send(struct gw_ws *ws, unsigned flags, const uint8_t *p, size_t n);
void gw_ws_close(struct gw_ws *ws, unsigned code, const char *reason, size_t n);
void gw_ws_upstream_failed(struct gw_ws *ws);
/* Tunnel: upstream bytes for the client (|src| is emptied); returns 1 to pause the
 * upstream. */
int gw_ws_tunnel_out(struct gw_ws *ws, struct evbuffer *src);
/* Tunnel: the upstream closed; end the carrier once written. */
void gw_ws_tunnel_end(struct gw_ws *ws);
/* The upstream can take client messages again. */
void gw_ws_resume_reading(struct gw_ws *ws);

#endif
