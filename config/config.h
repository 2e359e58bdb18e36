/* SPDX-License-Identifier: MIT */
/* The configuration: YAML (libyaml) loaded into a validated, immutable, reference-counted
 * snapshot. Built completely before use; shared read-only by every worker thread. */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum gw_log_level { GW_LOG_DEBUG = 0, GW_LOG_INFO, GW_LOG_WARN, GW_LOG_ERROR };

enum gw_access_format { GW_ACCESS_OFF = 0, GW_ACCESS_JSON };

enum gw_protocol { GW_PROTO_HTTP = 0, GW_PROTO_UWSGI, GW_PROTO_ASGI };

enum gw_balance { GW_BALANCE_ROUND_ROBIN = 0, GW_BALANCE_LEAST_OUTSTANDING };

/* A listener's http2: key. Unset means on with TLS (ALPN offers h2) and off without. */
enum gw_h2_mode { GW_H2_UNSET = 0, GW_H2_OFF, GW_H2_ON, GW_H2_PRIOR_KNOWLEDGE };

/* tls.client_verify. NONE: no client_ca (client certificates are not asked for). */
enum gw_tls_verify { GW_TLS_VERIFY_NONE = 0, GW_TLS_VERIFY_REQUIRE, GW_TLS_VERIFY_OPTIONAL };

/* A file named in tls:, with where it was written (for "file:line:column" messages of the
 * gateway code that reads it: the loader itself never opens it). */
struct gw_tls_file {
    char *path;
    size_t line, col;
};

/* A listener's tls: mapping. The loader only parses it; gateway/tls.c reads the files and
 * builds |ctx| on the main thread after the load (gw_tls_load()), and the snapshot frees
 * |ctx| through |ctx_free| (config/ does not depend on OpenSSL). */
struct gw_tls_cert_conf {
    struct gw_tls_file cert;      /* PEM chain: the certificate first */
    struct gw_tls_file key;
};

struct gw_tls_conf {
    struct gw_tls_cert_conf *certs; /* certificates: chosen by SNI, the first is the default */
    size_t ncerts;
    struct gw_tls_file client_ca; /* path NULL: client certificates are not asked for */
    enum gw_tls_verify client_verify; /* require (the default with client_ca) or optional */
    int session_tickets;          /* default true */
    void *ctx;                    /* the built contexts (gateway/tls.c), NULL until built */
    void (*ctx_free)(void *ctx);
};

struct gw_listen_conf {
    char *address;                /* as written, after ${VAR} expansion */
    struct sockaddr_storage addr; /* numeric IPv4/IPv6 address and port */
    socklen_t addrlen;
    int backlog;                  /* default 511 */
    enum gw_h2_mode http2;        /* http2: off, on (TLS: ALPN h2) or prior_knowledge (h2c:
                                     a client that opens with the HTTP/2 preface) */
    struct gw_tls_conf *tls;      /* tls: NULL for a cleartext listener */
    size_t line, col;             /* where the listener's mapping starts */
};

/* One upstream server: "host:port", "[v6]:port" or "unix:/path". */
struct gw_server_conf {
    char *address;    /* as written */
    char *host;       /* NULL for unix; a name or a numeric address */
    uint16_t port;
    char *unix_path;  /* NULL unless unix: */
    int numeric;      /* host is a literal address: never resolved */
};

struct gw_upstream_conf {
    char *name;
    enum gw_protocol protocol;
    struct gw_server_conf *servers;
    size_t nservers;
    enum gw_balance balance;      /* default round_robin */
    uint64_t connect_ms;          /* timeouts.connect, default 5s */
    uint64_t first_byte_ms;       /* timeouts.first_byte, default 60s */
    uint64_t read_ms;             /* timeouts.read: idle between response reads, default 60s */
    uint64_t send_ms;             /* timeouts.send: upstream not taking request bytes, 60s */
    size_t keepalive_conns;       /* keepalive.connections: idle kept per server and worker, 32 */
    uint64_t keepalive_ms;        /* keepalive.timeout: idle connection lifetime, 60s */
    uint64_t keepalive_requests;  /* keepalive.requests: requests per connection, 1000 */
    unsigned retries;             /* retries: other servers tried for idempotent requests, 1 */
    unsigned health_fails;        /* health.fails: consecutive failures before cooldown, 3 */
    uint64_t health_cooldown_ms;  /* health.cooldown, 10s */
    uint64_t resolve_ms;          /* resolve: host name re-resolution interval, 30s */
    size_t buffer_memory;         /* buffer.memory (uwsgi): bytes of a request or response body
                                     held in memory before the rest spills to a file, 1m */
    char *buffer_dir;             /* buffer.dir (uwsgi): where spill files are made, "/tmp" */
    unsigned concurrency;         /* concurrency (uwsgi): requests in flight to the upstream,
                                     across all workers; 0 (the default) = no limit */
    size_t queue_limit;           /* queue.limit (uwsgi): requests waiting for a slot, 512 */
    uint64_t queue_timeout_ms;    /* queue.timeout (uwsgi): longest wait before a 503, 10s */
    unsigned metric_slot;         /* its label in /metrics (gateway/metrics.c sets it) */
    uint64_t retry_after_ms;      /* queue.retry_after (uwsgi): that 503's Retry-After, 1s
                                     (sent in whole seconds, rounded up) */
    unsigned connections;         /* connections (asgi): long-lived connections per server and
                                     worker thread, 4 */
    uint64_t ping_interval_ms;    /* ping.interval (asgi): PING a connection idle this long, 10s */
    uint64_t ping_timeout_ms;     /* ping.timeout (asgi): an unanswered PING kills it, 5s */
    int tls_client_headers;       /* tls_client_headers (http): send X-SSL-Client-Verify,
                                     -S-DN and -Cert of a TLS client; default false */
    size_t index;                 /* position in gw_config.upstreams */
};

/* websocket: settings; the top level's, or a route's (its keys over the top level's). Each
 * instance owns its |origins| array and strings: a route starts from a deep copy of the top
 * level's list and its own list replaces that copy, so every array is freed exactly once. */
struct gw_ws_conf {
    uint64_t ping_interval_ms;   /* ping an idle client this often; 0 = never. Default 30s */
    uint64_t ping_timeout_ms;    /* close (1011) when no pong or byte arrives this long after a
                                    ping. Default 10s; more than 0 when ping_interval is */
    uint64_t close_timeout_ms;   /* after our close frame, wait this long for the client's.
                                    Default 5s */
    uint64_t max_message;        /* largest client message in bytes, after decompression (1009
                                    above). Default 1m (1048576); 1..1g (a limit is required) */
    char **origins;              /* allowed Origin values, lower case, exact
                                    "scheme://host[:port]" as browsers send them (no default
                                    port); NULL with any_origin, and for [] (then only
                                    requests without Origin pass) */
    size_t norigins;
    int any_origin;              /* origins contains "*" (the default ["*"]) */
    int deflate;                 /* accept permessage-deflate offers. Default true */
    unsigned deflate_window_bits; /* 9..15: largest window either side may use. Default 15 */
    int deflate_no_context_takeover; /* ask both sides not to keep context between messages
                                        (less memory per connection). Default false */
};

struct gw_route_conf {
    char *host;            /* NULL: any host. Lower case, no port. For "*.x.com": "*.x.com" */
    int host_wildcard;     /* host starts with "*." */
    char *path;            /* prefix, starts with '/', no trailing '/' except the root "/" */
    size_t path_len;
    int strip_prefix;      /* remove |path| from the path sent upstream */
    struct gw_upstream_conf *upstream; /* points into gw_config.upstreams */
    uint64_t sse_heartbeat_ms; /* sse.heartbeat: the top level's unless the route sets it */
    struct gw_ws_conf ws;  /* websocket: the top level's, with the route's keys over it */
    size_t index;          /* position in the file, the last tie-break */
    unsigned metric_slot;  /* its label in /metrics (gateway/metrics.c sets it) */
};

struct gw_cidr {
    int family;            /* AF_INET or AF_INET6 */
    uint8_t addr[16];      /* network address, host bits zeroed */
    unsigned prefix;
};

struct gw_config {
    _Atomic long refs;
    char *file;                   /* the path it was loaded from */
    unsigned workers;             /* "auto" resolved to the number of online CPUs */
    struct gw_listen_conf *listen;
    size_t nlisten;
    struct {
        size_t header_bytes;      /* 16k */
        size_t headers;           /* 100 */
        size_t target_bytes;      /* 8k */
        uint64_t body_bytes;      /* 10m; 0 = unlimited */
    } limits;
    struct {
        uint64_t header_ms;       /* 10s: whole request head */
        uint64_t body_ms;         /* 30s: idle between request body reads */
        uint64_t idle_ms;         /* 60s: keep-alive idle */
        uint64_t send_ms;         /* 60s: client not taking response bytes */
    } timeouts;
    struct {
        uint64_t delay_ms;        /* 0s */
        uint64_t timeout_ms;      /* 30s */
    } shutdown;
    struct gw_listen_conf admin;  /* admin.address: /healthz /readyz /metrics; address NULL:
                                     no admin listener */
    struct gw_cidr *trusted;      /* trusted_proxies */
    size_t ntrusted;
    struct {
        enum gw_access_format access; /* json */
        enum gw_log_level level;      /* info */
        size_t access_buffer;         /* 64k */
        uint64_t access_flush_ms;     /* 1s */
    } log;
    struct {
        uint64_t heartbeat_ms;    /* 15s: a comment line to an idle SSE client; 0 = none */
    } sse;
    struct gw_ws_conf websocket;  /* websocket: routes start from it */
    struct {
        uint32_t max_concurrent_streams; /* 128: SETTINGS_MAX_CONCURRENT_STREAMS */
        uint32_t window;          /* 256k: each stream's receive window (request body bytes
                                     the gateway holds per stream) */
        uint32_t connection_window; /* 1m: the connection's receive window */
    } http2;
    struct {
        char **nameservers;       /* "IP:PORT" each; none = those of /etc/resolv.conf */
        size_t nnameservers;
    } resolver;
    struct gw_upstream_conf *upstreams;
    size_t nupstreams;
    struct gw_route_conf *routes;
    size_t nroutes;
};

/* Loads and validates |path|. On success stores a snapshot with one reference in |*out| and
 * returns 0. On failure returns GW_E_CONFIG and writes "file:line:column: message" (or
 * "file: message") into |err| (|errlen| bytes, always NUL-terminated). */
int gw_config_load_file(const char *path, struct gw_config **out, char *err, size_t errlen);

/* Same as gw_config_load_file() for |len| bytes of YAML in |data|; |name| stands for the file
 * name in messages. Never reads files; environment variables are read with getenv(). */
int gw_config_load_buffer(const char *name, const char *data, size_t len,
                          struct gw_config **out, char *err, size_t errlen);

/* Adds a reference (thread-safe) and returns |c|. */
struct gw_config *gw_config_ref(struct gw_config *c);

/* Drops a reference (thread-safe); the last one frees the snapshot. NULL is a no-op. */
void gw_config_unref(struct gw_config *c);

/* Parses "16k", "10m", "1g", "512" (bytes) into |*out|. Returns 0 or -1. */
int gw_parse_size(const char *s, uint64_t *out);

/* Parses "500ms", "30s", "5m", "1h" (a bare number is seconds) into milliseconds. 0 or -1. */
int gw_parse_duration(const char *s, uint64_t *out);

/* Returns 1 when the address |sa| lies in one of the snapshot's trusted_proxies, else 0. */
int gw_config_is_trusted(const struct gw_config *c, const struct sockaddr *sa);

#endif
