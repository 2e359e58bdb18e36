/* SPDX-License-Identifier: MIT */
/* The error log (one write(2) per line to stderr) and the buffered JSON access log. */
#include "gateway/log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#define LOG_LINE_MAX 2048
#define LOG_CTX_MAX 256   /* keeps room for the message whatever the ctx */
#define TIME_LEN 24       /* "2026-11-25T00:47:12.123Z" */
#define FLUSH_POLL_MS 100 /* how long a flush may wait to finish a half-written line */
#define FLUSH_POLL_TRIES 10

static _Atomic int log_level = GW_LOG_INFO;

/* Serializes access-log writes of all workers: whole lines from one thread at a time. */
static pthread_mutex_t access_lock = PTHREAD_MUTEX_INITIALIZER;

struct gw_access_log {
    int fd;
    size_t cap;
    size_t len;
    uint64_t dropped; /* lines lost to EAGAIN or write errors */
    char buf[];
};

static const char digit_pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
                                  "31323334353637383940414243444546474849505152535455565758596061"
                                  "62636465666768697071727374757677787980818283848586878889909192"
                                  "93949596979899";

static unsigned digits_u64(uint64_t v)
{
    unsigned n = 1;

    for (; v >= 10000; v /= 10000)
        n += 4;
    return n + (v >= 10) + (v >= 100) + (v >= 1000);
}

/* Writes |v| in decimal at |p| and returns the end. At most 20 bytes. Digits are written in
 * place, back to front, so no variable-length memcpy() call is needed. */
static char *put_u64(char *p, uint64_t v)
{
    char *end = p + digits_u64(v);
    char *t = end;

    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        *--t = digit_pairs[d + 1];
        *--t = digit_pairs[d];
    }
    if (v >= 10) {
        *--t = digit_pairs[v * 2 + 1];
        *--t = digit_pairs[v * 2];
    } else {
        *--t = (char)('0' + v);
    }
    return end;
}

static char *put_2d(char *p, unsigned v)
{
    p[0] = digit_pairs[v * 2];
    p[1] = digit_pairs[v * 2 + 1];
    return p + 2;
}

static char *put_status(char *p, int status)
{
    if (status >= 0)
        return put_u64(p, (uint64_t)status);
    *p++ = '-';
    return put_u64(p, 0 - (uint64_t)status); /* the magnitude, INT_MIN included */
}

/* Writes "<v/1000>.<v%1000, 3 digits>": milliseconds from microseconds. */
static char *put_ms(char *p, uint64_t us)
{
    unsigned frac = (unsigned)(us % 1000);

    p = put_u64(p, us / 1000);
    *p++ = '.';
    *p++ = (char)('0' + frac / 100);
    return put_2d(p, frac % 100);
}

/* Writes the TIME_LEN bytes of |us| (microseconds since the epoch, UTC) at |p|. The part up
 * to the seconds is cached per thread: gmtime_r() costs more than the rest of a record. */
static char *put_time(char *p, int64_t us)
{
    static _Thread_local int64_t cached_sec = INT64_MIN;
    static _Thread_local char cached[19];
    int64_t sec = us / 1000000;
    int64_t rem = us % 1000000;

    if (rem < 0) { /* floor, so times before 1970 stay well-formed */
        rem += 1000000;
        sec--;
    }
    if (sec != cached_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        char *q = cached;

        if (gmtime_r(&t, &tm) == NULL)
            memset(&tm, 0, sizeof tm);
        unsigned year =
            (tm.tm_year >= -1900 && tm.tm_year <= 9999 - 1900) ? (unsigned)(tm.tm_year + 1900) : 0;
        q = put_2d(q, year / 100);
        q = put_2d(q, year % 100);
        *q++ = '-';
        q = put_2d(q, (unsigned)tm.tm_mon + 1);
        *q++ = '-';
        q = put_2d(q, (unsigned)tm.tm_mday);
        *q++ = 'T';
        q = put_2d(q, (unsigned)tm.tm_hour);
        *q++ = ':';
        q = put_2d(q, (unsigned)tm.tm_min);
        *q++ = ':';
        put_2d(q, (unsigned)tm.tm_sec % 100); /* a leap second stays two digits */
        cached_sec = sec;
    }
    memcpy(p, cached, sizeof cached);
    p += sizeof cached;
    unsigned ms = (unsigned)(rem / 1000);
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    p = put_2d(p, ms % 100);
    *p++ = 'Z';
    return p;
}

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void gw_log_set_level(enum gw_log_level lvl)
{
    atomic_store_explicit(&log_level, (int)lvl, memory_order_relaxed);
}

int gw_log_enabled(enum gw_log_level lvl)
{
    return (int)lvl >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *level_name(enum gw_log_level lvl)
{
    switch (lvl) {
    case GW_LOG_DEBUG:
        return "debug";
    case GW_LOG_INFO:
        return "info";
    case GW_LOG_WARN:
        return "warn";
    case GW_LOG_ERROR:
        return "error";
    }
    return "?";
}

static char *put_cstr(char *p, const char *s, size_t max)
{
    size_t n = strnlen(s, max);

    memcpy(p, s, n);
    return p + n;
}

void gw_log_(enum gw_log_level lvl, const char *ctx, const char *file, int line, const char *fmt,
             ...)
{
    char buf[LOG_LINE_MAX];
    char *p = buf;
    int saved_errno = errno; /* callers log then test errno */
    va_list ap;

    if (!gw_log_enabled(lvl))
        return;
    p = put_time(p, wall_us());
    *p++ = ' ';
    p = put_cstr(p, level_name(lvl), 8);
    *p++ = ' ';
    char *text = p; /* from here on, bytes may come from clients */
    if (ctx != NULL) {
        p = put_cstr(p, ctx, LOG_CTX_MAX);
        *p++ = ' ';
    }
    const char *base = strrchr(file, '/');
    p = put_cstr(p, base != NULL ? base + 1 : file, LOG_CTX_MAX);
    *p++ = ':';
    p = put_u64(p, line > 0 ? (uint64_t)line : 0);
    *p++ = ':';
    *p++ = ' ';

    /* Room for the message, keeping 4 bytes for "...\n". */
    size_t room = (size_t)(buf + sizeof buf - p) - 4;
    va_start(ap, fmt);
    int n = vsnprintf(p, room + 1, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n;
    int truncated = len > room;
    if (truncated)
        len = room;
    p += len;
    /* A client-controlled string must not be able to end the line and start a forged one. */
    for (char *q = text; q < p; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            *q = '?';
    if (truncated) {
        memcpy(p, "...", 3);
        p += 3;
    }
    *p++ = '\n';

    ssize_t w;
    do
        w = write(STDERR_FILENO, buf, (size_t)(p - buf));
    while (w < 0 && errno == EINTR);
    errno = saved_errno;
}

void gw_log_ssl_errors(enum gw_log_level lvl, const char *what)
{
    unsigned long e;
    char msg[256];

    /* Drained even when not printed, so stale errors are not blamed on a later failure. */
    if (!gw_log_enabled(lvl)) {
        ERR_clear_error();
        return;
    }
    gw_log_(lvl, NULL, __FILE__, __LINE__, "%s", what);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, msg, sizeof msg);
        gw_log_(lvl, NULL, __FILE__, __LINE__, "  openssl: %s", msg);
    }
}

/* How a byte goes into a JSON string: 0 as is, 1 as \u00XX, 2 after a backslash. Control and
 * non-ASCII bytes are escaped so the log stays ASCII whatever clients send. */
static unsigned json_esc(unsigned char c)
{
    if (c < 0x20 || c >= 0x7f)
        return 1;
    return c == '"' || c == '\\' ? 2 : 0;
}

static const char hex_digits[] = "0123456789abcdef";

/* Every key and punctuation byte of a record but the optional error, in the order written. */
#define JSON_SKELETON                                                                              \
    "{\"time\":\"\",\"client\":,\"method\":,\"target\":,\"host\":,\"status\":,\"bytes_in\":,"      \
    "\"bytes_out\":,\"duration_ms\":,\"upstream\":,\"server\":,\"upstream_ms\":,"                  \
    "\"request_id\":}\n"
#define JSON_ERROR_KEY ",\"error\":"
#define JSON_QUEUE_KEY ",\"queue_ms\":"
#define JSON_PROTOCOL_KEY ",\"protocol\":"
/* Bytes a record needs besides its string contents: the skeleton, the optional keys, the
 * quotes of 9 strings, the time, status (an int), two uint64 counters, three
 * "<uint64/1000>.ddd". */
#define JSON_FIXED_MAX                                                                             \
    (sizeof JSON_SKELETON - 1 + sizeof JSON_ERROR_KEY - 1 + sizeof JSON_QUEUE_KEY - 1 +          \
     sizeof JSON_PROTOCOL_KEY - 1 + 9 * 2 + TIME_LEN + 11 + 2 * 20 + 3 * 21)
/* An escaped byte takes at most 6 bytes ("\u00XX"). */
#define JSON_ESC_MAX 6

/* Returns nonzero when one of the 8 bytes of |x| needs escaping (json_esc() != 0). False
 * positives are allowed, false negatives are not: the caller then looks byte by byte. A byte's
 * high bit ends up set when it is >= 0x80 (x), < 0x20 (x - 0x20 borrows), '"' or '\\' (the
 * XOR is 0 and 0 - 1 borrows) or 0x7f (x + 1). Borrows and carries that cross into the next
 * byte only ever leave a byte that is flagged itself, so they add false positives only. */
static uint64_t word_needs_escape(uint64_t x)
{
    const uint64_t ones = UINT64_C(0x0101010101010101);
    uint64_t q = x ^ (ones * '"');
    uint64_t b = x ^ (ones * '\\');

    return (x | (x - ones * 0x20) | (q - ones) | (b - ones) | (x + ones)) & (ones * 0x80);
}

static char *put_esc_byte(char *p, unsigned char c)
{
    if (json_esc(c) == 2) {
        *p++ = '\\';
        *p++ = (char)c;
    } else {
        memcpy(p, "\\u00", 4);
        p[4] = hex_digits[c >> 4];
        p[5] = hex_digits[c & 15];
        p += 6;
    }
    return p;
}

static char *put_bytes(char *p, const unsigned char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (json_esc(in[i]) == 0)
            *p++ = (char)in[i];
        else
            p = put_esc_byte(p, in[i]);
    }
    return p;
}

/* Writes the quoted, escaped |s| at |p|; the caller made room for json_str_len(|s|) bytes.
 * Clean 8-byte words are copied whole. A partial last word is checked as the string's last 8
 * bytes and rewrites the overlap, so nothing is read or written out of bounds. */
static char *put_json_str(char *p, struct gw_slice s)
{
    const unsigned char *in = (const unsigned char *)s.p;
    size_t i = 0;
    uint64_t w, dirty = 1;

    *p++ = '"';
    if (s.len == 0) { /* s.p may be NULL */
        *p++ = '"';
        return p;
    }
    for (; i + 8 <= s.len; i += 8) {
        memcpy(&w, in + i, 8);
        dirty = word_needs_escape(w);
        if (dirty == 0) {
            memcpy(p, &w, 8);
            p += 8;
        } else {
            p = put_bytes(p, in + i, 8);
        }
    }
    if (i < s.len && dirty == 0) {
        size_t back = 8 - (s.len - i); /* bytes of the previous, verbatim word */
        memcpy(&w, in + s.len - 8, 8);
        if (word_needs_escape(w) == 0) {
            memcpy(p - back, &w, 8);
            p += 8 - back;
            i = s.len;
        }
    }
    p = put_bytes(p, in + i, s.len - i);
    *p++ = '"';
    return p;
}

/* Exact length of put_json_str(|s|). */
static size_t json_str_len(struct gw_slice s)
{
    static const unsigned char extra[3] = {0, 5, 1}; /* indexed by json_esc() */
    const unsigned char *in = (const unsigned char *)s.p;
    size_t n = s.len + 2;

    for (size_t i = 0; i < s.len; i++)
        n += extra[json_esc(in[i])];
    return n;
}

#define PUT_LIT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

/* Writes the record; |out| has room for access_json_bound(|r|) bytes. */
static size_t format_json(char *out, const struct gw_access_rec *r)
{
    char *p = out;

    p = PUT_LIT(p, "{\"time\":\"");
    p = put_time(p, r->time_us);
    p = PUT_LIT(p, "\",\"client\":");
    p = put_json_str(p, r->client);
    p = PUT_LIT(p, ",\"method\":");
    p = put_json_str(p, r->method);
    p = PUT_LIT(p, ",\"target\":");
    p = put_json_str(p, r->target);
    p = PUT_LIT(p, ",\"host\":");
    p = put_json_str(p, r->host);
    if (r->protocol.len > 0) {
        p = PUT_LIT(p, JSON_PROTOCOL_KEY);
        p = put_json_str(p, r->protocol);
    }
    p = PUT_LIT(p, ",\"status\":");
    p = put_status(p, r->status);
    p = PUT_LIT(p, ",\"bytes_in\":");
    p = put_u64(p, r->bytes_in);
    p = PUT_LIT(p, ",\"bytes_out\":");
    p = put_u64(p, r->bytes_out);
    p = PUT_LIT(p, ",\"duration_ms\":");
    p = put_ms(p, r->duration_us);
    p = PUT_LIT(p, ",\"upstream\":");
    p = put_json_str(p, r->route);
    p = PUT_LIT(p, ",\"server\":");
    p = put_json_str(p, r->server);
    p = PUT_LIT(p, ",\"upstream_ms\":");
    if (r->upstream_us < 0)
        p = PUT_LIT(p, "null");
    else
        p = put_ms(p, (uint64_t)r->upstream_us);
    if (r->queue_us >= 0) {
        p = PUT_LIT(p, JSON_QUEUE_KEY);
        p = put_ms(p, (uint64_t)r->queue_us);
    }
    p = PUT_LIT(p, ",\"request_id\":");
    p = put_json_str(p, r->request_id);
    if (r->error.len > 0) {
        p = PUT_LIT(p, JSON_ERROR_KEY);
        p = put_json_str(p, r->error);
    }
    p = PUT_LIT(p, "}\n");
    return (size_t)(p - out);
}

/* An upper bound of the formatted length, computed from lengths alone. */
static size_t access_json_bound(const struct gw_access_rec *r)
{
    return JSON_FIXED_MAX +
           JSON_ESC_MAX * (r->client.len + r->method.len + r->target.len + r->host.len +
                           r->protocol.len +
                           r->route.len + r->server.len + r->request_id.len + r->error.len);
}

size_t gw_access_format_json(char *out, size_t cap, const struct gw_access_rec *r)
{
    /* Nearly every record fits the worst-case bound; only near a full buffer are the strings
     * measured exactly. */
    if (cap >= access_json_bound(r))
        return format_json(out, r);

    char num[24];
    size_t need = sizeof JSON_SKELETON - 1 + TIME_LEN + json_str_len(r->client) +
                  json_str_len(r->method) + json_str_len(r->target) + json_str_len(r->host) +
                  json_str_len(r->route) + json_str_len(r->server) + json_str_len(r->request_id);
    if (r->error.len > 0)
        need += sizeof JSON_ERROR_KEY - 1 + json_str_len(r->error);
    need += (size_t)(put_status(num, r->status) - num);
    need += (size_t)(put_u64(num, r->bytes_in) - num);
    need += (size_t)(put_u64(num, r->bytes_out) - num);
    need += (size_t)(put_ms(num, r->duration_us) - num);
    need += r->upstream_us < 0 ? 4 : (size_t)(put_ms(num, (uint64_t)r->upstream_us) - num);
    if (r->queue_us >= 0)
        need += sizeof JSON_QUEUE_KEY - 1 + (size_t)(put_ms(num, (uint64_t)r->queue_us) - num);
    if (cap < need)
        return 0;
    return format_json(out, r);
}

struct gw_access_log *gw_access_log_new(int fd, size_t cap)
{
    struct gw_access_log *l = malloc(sizeof *l + cap);

    if (l == NULL)
        return NULL;
    l->fd = fd;
    l->cap = cap;
    l->len = 0;
    l->dropped = 0;
    return l;
}

static size_t count_lines(const char *p, size_t n)
{
    size_t lines = 0;

    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        lines++;
    return lines;
}

/* Writes |n| bytes of whole lines to |fd|; the caller holds access_lock. Returns the number
 * of lines dropped. On EAGAIN or an error the rest is dropped rather than waited for, except
 * that a half-written line gets a short, bounded wait: an unfinished line would glue itself
 * to the next writer's first line. */
static uint64_t write_lines(int fd, const char *p, size_t n)
{
    size_t off = 0;
    int tries = 0;

    while (off < n) {
        ssize_t w = write(fd, p + off, n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        int mid_line = off > 0 && p[off - 1] != '\n';
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && mid_line &&
            tries++ < FLUSH_POLL_TRIES) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            (void)poll(&pfd, 1, FLUSH_POLL_MS);
            continue;
        }
        if (mid_line) { /* best effort: end the torn line */
            ssize_t ignored = write(fd, "\n", 1);
            (void)ignored;
        }
        return count_lines(p + off, n - off);
    }
    return 0;
}

int gw_access_log_flush(struct gw_access_log *l)
{
    if (l == NULL || l->len == 0)
        return 0;
    pthread_mutex_lock(&access_lock);
    l->dropped += write_lines(l->fd, l->buf, l->len);
    pthread_mutex_unlock(&access_lock);
    l->len = 0;
    return 1;
}

void gw_access_log_write(struct gw_access_log *l, const struct gw_access_rec *r)
{
    size_t n = gw_access_format_json(l->buf + l->len, l->cap - l->len, r);

    if (n > 0) {
        l->len += n;
        return;
    }
    if (l->len > 0) {
        gw_access_log_flush(l);
        n = gw_access_format_json(l->buf, l->cap, r);
        if (n > 0) {
            l->len = n;
            return;
        }
    }
    /* Larger than the whole buffer: format aside and write it straight through. */
    size_t cap = access_json_bound(r);
    char *tmp = malloc(cap);
    if (tmp == NULL) {
        l->dropped++;
        return;
    }
    n = format_json(tmp, r);
    pthread_mutex_lock(&access_lock);
    l->dropped += write_lines(l->fd, tmp, n);
    pthread_mutex_unlock(&access_lock);
    free(tmp);
}

void gw_access_log_free(struct gw_access_log *l)
{
    if (l == NULL)
        return;
    gw_access_log_flush(l);
    free(l);
}
