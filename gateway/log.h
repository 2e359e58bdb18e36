/* SPDX-License-Identifier: MIT */
/* Error log (stderr, levels) and the access log (one JSON line per exchange, stdout, buffered
 * per worker thread and flushed by size or by time). */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "gateway/util.h"

/* Sets the lowest level the error log prints (process-wide; atomically read). */
void gw_log_set_level(enum gw_log_level lvl);

/* Returns 1 when lines of |lvl| are printed. */
int gw_log_enabled(enum gw_log_level lvl);

/* Writes one error-log line to stderr: "TIME LEVEL [CTX ]FILE:LINE: MESSAGE". |ctx| is a
 * connection prefix such as "conn=12 peer=127.0.0.1:5000" or NULL. Thread-safe; one write(2). */
void gw_log_(enum gw_log_level lvl, const char *ctx, const char *file, int line,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define gw_log_error(...) gw_log_(GW_LOG_ERROR, NULL, __FILE__, __LINE__, __VA_ARGS__)
#define gw_log_warn(...) gw_log_(GW_LOG_WARN, NULL, __FILE__, __LINE__, __VA_ARGS__)
#define gw_log_info(...) gw_log_(GW_LOG_INFO, NULL, __FILE__, __LINE__, __VA_ARGS__)
#define gw_log_ctx(lvl, ctx, ...) gw_log_((lvl), (ctx), __FILE__, __LINE__, __VA_ARGS__)
#ifdef NDEBUG
#define gw_log_debug(...) ((void)0)
#else
#define gw_log_debug(...) gw_log_(GW_LOG_DEBUG, NULL, __FILE__, __LINE__, __VA_ARGS__)
#endif

/* Logs every queued OpenSSL error at |lvl| after the line "|what|". */
void gw_log_ssl_errors(enum gw_log_level lvl, const char *what);

/* One access-log record; slices are borrowed for the call. */
struct gw_access_rec {
    int64_t time_us;           /* wall clock at the end of the exchange, microseconds */
    struct gw_slice client;    /* "ip:port" */
    struct gw_slice method;
    struct gw_slice target;    /* as the client sent it */
    struct gw_slice host;
    struct gw_slice protocol;  /* "HTTP/1.1", "HTTP/2.0"; empty: key left out */
    int status;                /* 0 when no response was sent */
    uint64_t bytes_in;         /* request bytes from the client, head included */
    uint64_t bytes_out;        /* response bytes to the client, head included */
    uint64_t duration_us;
    struct gw_slice route;     /* upstream name, empty when none */
    struct gw_slice server;    /* upstream server address, empty when none */
    int64_t upstream_us;       /* -1 when no upstream answered */
    int64_t queue_us;          /* time queued for the upstream's concurrency; -1: key left out */
    struct gw_slice request_id;
    struct gw_slice error;     /* why the gateway failed the exchange, empty when it did not */
};

/* Formats |r| as one JSON object and a '\n' into |out| (|cap| bytes). Strings are escaped
 * (quotes, backslashes, control and non-ASCII bytes as \u00XX). Returns the length, or 0 when
 * |cap| is too small. Keys: time, client, method, target, host, protocol (only when set),
 * status, bytes_in, bytes_out,
 * duration_ms, upstream, server, upstream_ms (null when -1), queue_ms (only when >= 0),
 * request_id, error (only if set). */
size_t gw_access_format_json(char *out, size_t cap, const struct gw_access_rec *r);

/* A per-worker access-log buffer. Owned by its worker; not thread-safe. */
struct gw_access_log;

/* Creates a buffer of |cap| bytes that writes to |fd|. */
struct gw_access_log *gw_access_log_new(int fd, size_t cap);

/* Appends |r| (formatted as JSON); flushes first when it would not fit. */
void gw_access_log_write(struct gw_access_log *l, const struct gw_access_rec *r);

/* Writes out what is buffered, whole lines, under a process-wide lock so lines of different
 * workers never interleave. Returns 1 when something was buffered, else 0. */
int gw_access_log_flush(struct gw_access_log *l);

/* Flushes and frees |l|. NULL is a no-op. */
void gw_access_log_free(struct gw_access_log *l);

#endif
