/* SPDX-License-Identifier: MIT */
/* The exchange: one request and its response, the one object between a downstream session
 * (h1 today, h2 later) and an upstream driver (http and uwsgi today; asgi later). Both sides
 * see the same small set of calls whichever protocol is on the other side. */
#ifndef GW_EXCHANGE_H
#define GW_EXCHANGE_H

#include <event2/buffer.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "gateway/h1_parse.h"
#include "gateway/util.h"
#include "gateway/ws_codec.h"

struct gw_exchange;
struct gw_tls_info;
struct gw_worker;
struct gw_wsnap;

/* Request bytes the upstream side may hold before the downstream stops reading the client, and
 * response bytes the downstream may hold before the upstream stops reading the server. */
#define GW_BODY_HIWAT (64 * 1024)

/* The request as the upstream sees it. Its bytes live in the exchange's own allocation; slices
 * stay valid for the exchange's life. */
struct gw_req {
    struct gw_slice method;
    struct gw_slice target;      /* as the client sent it (for the log) */
    struct gw_slice path;        /* path to send upstream: origin-form, prefix stripped */
    struct gw_slice host;        /* authority (Host or absolute-form), maybe with :port */
    int minor;                   /* client's HTTP/1.<minor> (1 for HTTP/2) */
    int h2;                      /* the client speaks HTTP/2 */
    struct h1_header *headers;   /* every field the client sent, in order (hop-by-hop too) */
    size_t nheaders;
    struct gw_slice connection;  /* value of the Connection field(s), joined; empty if none */
    int has_body;                /* a body follows (chunked, or Content-Length > 0) */
    int chunked;                 /* the client sent it chunked: its length is unknown */
    uint64_t content_length;     /* when has_body && !chunked */
    int idempotent;              /* RFC 9110 §9.2.2: GET HEAD OPTIONS TRACE PUT DELETE */
    int head;                    /* method is HEAD */
};

/* What every exchange needs to know about its client, computed once per connection by
 * gw_client_init(): the address and the connection's snapshot never change. */
struct gw_client {
    char ip[INET6_ADDRSTRLEN];   /* the address as text; an IPv4-mapped one shows as IPv4;
                                    "unknown" when not IP (unix socket) */
    uint8_t iplen;               /* (the struct is small: one lives in every connection) */
    uint8_t ipv6;                /* |ip| is an IPv6 literal (bracketed in Forwarded) */
    uint8_t trusted;             /* in the snapshot's trusted_proxies */
    uint16_t port;               /* the peer's port; 0 when not IP */
    const struct gw_tls_info *tls; /* the TLS handshake's facts (gateway/tls.h), owned by the
                                      connection; NULL on a cleartext one */
};

/* Fills |cl| for the peer address |sa| under the configuration |cfg|; cl->tls is NULL. */
void gw_client_init(struct gw_client *cl, const struct sockaddr *sa, const struct gw_config *cfg);

/* The forwarding facts computed once per exchange from the client and trusted_proxies. Their
 * bytes live in the exchange's own allocation. */
struct gw_forwarded {
    int trusted;                 /* the peer is a trusted proxy: incoming X-Forwarded-* and
                                    Forwarded are kept and extended */
    struct gw_slice client_ip;   /* the peer's address as text ("::1", "127.0.0.1") */
    uint16_t client_port;        /* the peer's port; 0 when not IP */
    struct gw_slice xff;         /* X-Forwarded-For value to send */
    struct gw_slice proto;       /* X-Forwarded-Proto value ("http") */
    struct gw_slice fhost;       /* X-Forwarded-Host value */
    struct gw_slice forwarded;   /* Forwarded value to send (RFC 7239) */
    struct gw_slice request_id;  /* X-Request-Id: the client's (if sane) or generated */
};

/* A response head, handed from the upstream to the downstream. Borrowed for the call. */
struct gw_resp {
    int status;
    struct gw_slice reason;
    struct h1_header *headers;   /* end-to-end fields only: the upstream drops hop-by-hop */
    size_t nheaders;
    int has_body;                /* 0 for HEAD, 1xx, 204, 304 */
    int64_t content_length;      /* -1 when unknown (chunked or until close) */
    int whole;                   /* the upstream holds the whole response: the body and end()
                                    follow before its callback returns to the loop, so the
                                    downstream may write it all at end() */
};

/* Failure reasons every upstream driver hands to gw_exchange_fail() (string literals, so the
 * pointer may be kept): the same event reads the same in the logs whatever the protocol. */
#define GW_R_REFUSED "upstream refused connection"
#define GW_R_TIMEOUT "upstream timed out"
#define GW_R_CLOSED "upstream closed connection"
#define GW_R_INVALID "invalid response from upstream"
#define GW_R_MID_CLOSED "upstream closed mid-response"
#define GW_R_MID_TIMEOUT "upstream read timed out mid-response"

/* Upstream driver: the exchange calls these. The driver attaches in start() and detaches by
 * calling gw_exchange_resp_end() or gw_exchange_fail(), or when cancel() is called; after that
 * it never touches the exchange again. */
struct gw_upstream_ops {
    /* The head is in x->req; body bytes arrive through req_body(). */
    void (*start)(struct gw_exchange *x);
    /* New bytes are in x->req_body, or x->req_done was set. */
    void (*req_body)(struct gw_exchange *x);
    /* The downstream drained its output: read more of the response. */
    void (*resume)(struct gw_exchange *x);
    /* The client is gone: release everything tied to |x| and forget it. No call back. */
    void (*cancel)(struct gw_exchange *x);

    /* WebSocket (x->ws, after the upstream accepted with gw_exchange_ws_accept()); NULL for a
     * driver that only tunnels (http). A piece of a client message (WS_F_* flags) is lent for
     * the call; returns 1 when the upstream can take no more until it calls
     * gw_exchange_req_drained(). */
    int (*ws_message)(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n);
    /* The client closed the WebSocket with |code| (1005: none; 1006: no close frame) and the
     * UTF-8 |reason|. As cancel(): the upstream forgets |x|, no call back. */
    void (*ws_close)(struct gw_exchange *x, unsigned code, const char *reason, size_t n);
};

/* ws_send() flags for a control frame, sent between the frames of messages. */
#define GW_WS_PING 0x100
#define GW_WS_PONG 0x200

/* Downstream session: the exchange calls these. */
struct gw_downstream_ops {
    void (*head)(struct gw_exchange *x, const struct gw_resp *r);
    /* Takes the |n| bytes at |p|. Returns 1 when the sender should pause until resume(). */
    int (*body)(struct gw_exchange *x, const char *p, size_t n);
    /* Takes every byte of |src|. Returns 1 when the sender should pause until resume(). */
    int (*body_buf)(struct gw_exchange *x, struct evbuffer *src);
    /* The response is complete; |trailers| (may be 0) are borrowed for the call. */
    void (*end)(struct gw_exchange *x, const struct h1_header *trailers, size_t ntrailers);
    /* The upstream failed: answer |status| if no head was sent, else cut the response. */
    void (*fail)(struct gw_exchange *x, int status);
    /* The upstream took bytes from x->req_body: read more of the client's body. */
    void (*req_drained)(struct gw_exchange *x);

    /* WebSocket. The upstream accepted: answer 101 with |subprotocol| (may be empty) and the
     * extra fields |h[0..n)| (borrowed), then carry messages. */
    void (*ws_accept)(struct gw_exchange *x, struct gw_slice subprotocol,
                      const struct h1_header *h, size_t n);
    /* A piece of a message for the client (WS_F_* flags; FIRST on the first piece, FIN on the
     * last), or with GW_WS_PING or GW_WS_PONG a control frame whose payload (at most 125
     * bytes) is |p|, borrowed. Returns 1 when the sender should pause until resume(). */
    int (*ws_send)(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n);
    /* The upstream closes the WebSocket with |code| (valid to send) and |reason|, borrowed. */
    void (*ws_close)(struct gw_exchange *x, unsigned code, const char *reason, size_t n);
};

/* Created and freed by its downstream session, from the worker's loop. One allocation holds
 * the struct, the request copy and the forwarding values. */
struct gw_exchange {
    struct gw_worker *w;
    struct gw_wsnap *snap;                 /* referenced for the exchange's life */
    const struct gw_config *cfg;           /* snap's configuration */
    const struct gw_route_conf *route;     /* NULL until routed */
    void *pool;                            /* the route's per-worker upstream state */
    struct gw_req req;
    const struct gw_forwarded *fwd;        /* in the request's block (a call's: borrowed) */
    struct gw_slice request_id;            /* fwd->request_id, kept for the access log */
    const char *log_ctx;                   /* "conn=N peer=ADDR", borrowed */
    const char *scheme;                    /* "http" or "https" */
    const struct gw_tls_info *tls;         /* the client's TLS facts (gateway/tls.h), borrowed
                                              from its connection; NULL without TLS */

    struct evbuffer *req_body;             /* decoded request body not yet taken upstream;
                                              NULL when the request has no body */
    int req_done;                          /* the whole request body is in or went through */
    uint64_t req_body_bytes;               /* decoded body bytes received so far */

    const struct gw_downstream_ops *down;
    void *down_ctx;
    const struct gw_upstream_ops *up;      /* NULL when no upstream is attached */
    void *up_ctx;

    int resp_whole;                        /* the head said whole (see struct gw_resp) */

    /* WebSocket: set by gw_exchange_start() when the request is an opening handshake that
     * passed the gateway's checks (RFC 6455 §4.2.1 and the route's origins). |ws_hs| slices
     * point into the request copy. An upstream driver answers it with ws_accept() (asgi), a
     * 101 head and a byte tunnel (http), or an ordinary response (a refusal). */
    int ws;
    struct ws_handshake ws_hs;

    /* For the access log. */
    int status;                            /* status sent to the client */
    int head_sent;
    int timed;                             /* the access log is on: read the clocks below */
    uint64_t start_us;                     /* wall clock, microseconds (a call's: 0) */
    uint64_t up_start_ms;                  /* monotonic; 0 when not reached or not timed */
    uint64_t up_end_ms;                    /* monotonic: the upstream detached */
    const char *server;                    /* upstream server address text, borrowed */
    const char *error;                     /* static reason when the gateway failed it */
    int64_t queue_us;                      /* time spent waiting for a slot of the upstream's
                                              concurrency; -1 when it never asked for one */
    unsigned retry_after_s;                /* with a 503 of the upstream side: Retry-After */
    uint64_t bytes_in, bytes_out;
    int quiet;                             /* a call of the gateway's own: no access log */
    int counted;                           /* in the upstream's in-flight gauge (metrics) */
    int sse;                               /* the response is an event stream: counted in
                                              the open-streams gauge until freed */
    char *block;                           /* owns, when not NULL: the request copy (kept
                                              apart from the struct for a WebSocket
                                              handshake, to be compacted after the 101) */
    char *upath_buf;                       /* req.path.len + 2 bytes of the exchange's block:
                                              req.path when the route strips a prefix */
};

/* Creates an exchange for the parsed request |r| (its slices point into the client's input
 * and are copied). Computes x->fwd from |client| (read during the call only). Returns the
 * exchange (owned by the caller, free with gw_exchange_free()). */
struct gw_exchange *gw_exchange_new(struct gw_worker *w, struct gw_wsnap *snap,
                                    const struct h1_request *r, const struct gw_client *client,
                                    const char *log_ctx, const struct gw_downstream_ops *down,
                                    void *down_ctx);

/* What a call the gateway makes on its own behalf needs (WebSocket-over-HTTP: gateway/woh.c).
 * Everything is borrowed and must outlive the calls made with it. */
struct gw_call {
    struct gw_worker *w;
    struct gw_wsnap *snap;
    const struct gw_route_conf *route;
    void *pool;                            /* the route's per-worker upstream state */
    const struct gw_req *req;              /* the request head to send */
    const struct gw_forwarded *fwd;
    const char *log_ctx;
    const char *scheme;
    const struct gw_tls_info *tls;
};

/* Creates an exchange for a call described by |call|, with no client behind it and no access
 * log line. |body| (not NULL) is the whole request body: its bytes are moved out of it. The
 * caller owns the exchange (gw_exchange_free()) and starts it with gw_exchange_start_call(). */
struct gw_exchange *gw_exchange_new_call(const struct gw_call *call, struct evbuffer *body,
                                         const struct gw_downstream_ops *down, void *down_ctx);

/* Starts the upstream of a call made by gw_exchange_new_call(). Its downstream ops may run
 * before this returns (a failure found at once). */
void gw_exchange_start_call(struct gw_exchange *x);

/* Routes x and starts its upstream. Returns 0, or an HTTP status (404 no route, 400 unsafe
 * path) for the downstream to answer itself; no upstream is attached then. */
int gw_exchange_start(struct gw_exchange *x);

/* Downstream: more decoded request body was added to x->req_body (or x->req_done set). */
void gw_exchange_req_body(struct gw_exchange *x);

/* Downstream: the client drained its output; the upstream may read again. */
void gw_exchange_resume(struct gw_exchange *x);

/* Downstream: the client went away. Cancels the upstream if attached. */
void gw_exchange_cancel(struct gw_exchange *x);

/* Upstream: the response head. */
void gw_exchange_resp_head(struct gw_exchange *x, const struct gw_resp *r);

/* Upstream: body bytes. Return 1 when the upstream should stop reading until resume(). */
int gw_exchange_resp_body(struct gw_exchange *x, const char *p, size_t n);
int gw_exchange_resp_body_buf(struct gw_exchange *x, struct evbuffer *src);

/* Upstream: the response is complete. Detaches the upstream; it must not touch |x| after. */
void gw_exchange_resp_end(struct gw_exchange *x, const struct h1_header *trailers,
                          size_t ntrailers);

/* Upstream: failed with |status| (502, 503, 504) for |reason| (static string, logged).
 * Detaches the upstream; it must not touch |x| after. */
void gw_exchange_fail(struct gw_exchange *x, int status, const char *reason);

/* Upstream: bytes were taken from x->req_body; the downstream may read more. For a
 * WebSocket: the upstream can take client messages again. */
void gw_exchange_req_drained(struct gw_exchange *x);

/* Upstream, before accepting: 1 when the client offered |proto| in Sec-WebSocket-Protocol
 * (an app must choose among those, RFC 6455 §4.2.2). Reads the handshake's fields, so only
 * before gw_exchange_ws_accept(). */
int gw_exchange_ws_offered(const struct gw_exchange *x, struct gw_slice proto);

/* Upstream: accepts the WebSocket x->ws (see gw_downstream_ops.ws_accept). */
void gw_exchange_ws_accept(struct gw_exchange *x, struct gw_slice subprotocol,
                           const struct h1_header *h, size_t n);

/* Upstream: a piece of a message for the client. Returns 1 when the upstream should stop
 * until resume(). */
int gw_exchange_ws_send(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n);

/* Upstream: closes the WebSocket with |code| and |reason|. Detaches the upstream, as
 * gw_exchange_resp_end() does. */
void gw_exchange_ws_close(struct gw_exchange *x, unsigned code, const char *reason, size_t n);

/* Downstream: a piece of a client message (see gw_upstream_ops.ws_message). Returns 1 when
 * the downstream should stop reading the client until req_drained(). */
int gw_exchange_ws_message(struct gw_exchange *x, unsigned flags, const uint8_t *p, size_t n);

/* Downstream: the client closed the WebSocket (see gw_upstream_ops.ws_close). Detaches the
 * upstream. */
void gw_exchange_ws_closed(struct gw_exchange *x, unsigned code, const char *reason, size_t n);

/* Returns 1 when the response head |r| says Content-Type: text/event-stream (parameters
 * allowed). */
int gw_resp_is_event_stream(const struct gw_resp *r);

/* The last byte of |src| (not empty): an event stream's sender notes whether a line ended. */
char gw_evbuffer_last_byte(struct evbuffer *src);

/* Returns 1 for a field of an upstream's WebSocket answer that the downstream writes itself
 * (the accept key, subprotocol, extensions) or that does not go to the client (hop-by-hop,
 * Content-Length). */
int gw_ws_own_field(struct gw_slice name);

/* Returns 1 when the client header |name| must not be forwarded upstream: hop-by-hop, named in
 * the Connection field, or an X-Forwarded-*, Forwarded or X-Request-Id field that the gateway
 * rewrites itself. */
int gw_exchange_drop_header(const struct gw_exchange *x, struct gw_slice name);

/* The client's address: the peer's, or behind a trusted proxy the left-most X-Forwarded-For
 * entry. Sets |*peer| when it is the peer's own (so x->fwd->client_port applies). */
struct gw_slice gw_exchange_client_addr(const struct gw_exchange *x, int *peer);

/* Downstream, after the 101 went out: keeps of the handshake's copy only what the access log
 * reads (method, target, host, request id) and frees the rest, the header copy first of all,
 * so that an idle WebSocket costs little. The request's other slices become empty. */
void gw_exchange_ws_compact(struct gw_exchange *x);

/* Writes the access-log line, releases the snapshot and frees |x|. The upstream must be
 * detached. NULL is a no-op. */
void gw_exchange_free(struct gw_exchange *x);

#endif
