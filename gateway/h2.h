/* SPDX-License-Identifier: MIT */
/* The HTTP/2 downstream session (nghttp2): each client stream is an exchange to any kind of
 * upstream, with request and response bodies streamed under flow control tied to the
 * upstream's pace, trailers, event streams, RFC 8441 WebSockets, GOAWAY on drain and the
 * flood protections. The frame-level work is gateway/h2_codec.c; this file binds its events
 * to exchanges and the connection. */
#ifndef GW_H2_H
#define GW_H2_H

struct gw_conn;

/* The session's side of the exchange interface. */
extern const struct gw_downstream_ops gw_h2_downstream_ops;

/* Starts HTTP/2 on |c| (ALPN h2, or the h2c preface is in c->st.in): sends the server's
 * SETTINGS and processes what the client already sent. */
void gw_h2_start(struct gw_conn *c);

/* Connection callbacks, called through the conn's guard. */
void gw_h2_on_read(struct gw_conn *c);
void gw_h2_on_drain(struct gw_conn *c);
void gw_h2_on_deadline(struct gw_conn *c);
/* The connection is closing: cancel every stream's exchange. */
void gw_h2_on_gone(struct gw_conn *c);
/* Frees the session (connection teardown). */
void gw_h2_free(struct gw_conn *c);

/* The worker drains: GOAWAY, let the open streams finish, then close. */
void gw_h2_drain(struct gw_conn *c);

/* The configuration was reloaded: GOAWAY, so that the client's next streams go to a new
 * connection (new certificates, listener settings); the open ones finish. */
void gw_h2_reloaded(struct gw_conn *c);

/* Frames and writes what the streams have (the worker's deferred flush of |c|). */
void gw_h2_flush(struct gw_conn *c);

#endif
