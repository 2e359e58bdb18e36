/* SPDX-License-Identifier: MIT */
/* Sans-I/O HTTP/1.x parser (RFC 9112): request and response heads, chunked body framing. */
#include "gateway/h1_parse.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* Character classes, one lookup per byte in the hot loops. */
enum {
    C_TCHAR = 0x01,  /* tchar, RFC 9110 §5.6.2 */
    C_VALUE = 0x02,  /* field-vchar / SP / HTAB / obs-text, RFC 9110 §5.5 */
    C_TARGET = 0x04, /* visible ASCII 0x21..0x7E: request-target and version bytes */
    C_HOST = 0x08,   /* reg-name byte: unreserved / sub-delims (RFC 3986 §3.2.2) */
    C_HEX = 0x10,    /* HEXDIG */
    C_QDTEXT = 0x20, /* qdtext, RFC 9110 §5.6.4 */
};

static const unsigned char cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x22, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x22, 0x2f, 0x06, 0x27, 0x2f, 0x27, 0x2f, 0x2f, 0x2e, 0x2e, 0x2f, 0x2f, 0x2e, 0x2f, 0x2f, 0x26,
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x26, 0x2e, 0x26, 0x2e, 0x26, 0x26,
    0x26, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
    0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x26, 0x06, 0x26, 0x27, 0x2f,
    0x27, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
    0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x26, 0x27, 0x26, 0x2f, 0x00,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
};

#define IS(c, k) (cls[(unsigned char)(c)] & (k))
#define IS_WS(c) ((c) == ' ' || (c) == '\t')

/* RFC 9112 §2.2 lets a server skip "at least one" empty line before the request-line; a few
 * cover every sloppy client, more than that is someone stuffing the connection. */
#define MAX_EMPTY_LINES 4
#define DEFAULT_TRAILER_BYTES 8192
/* Lengths are signed (off_t, ev_off_t) in the code that consumes them. */
#define MAX_LENGTH ((uint64_t)INT64_MAX)

/* SWAR helpers (bit-twiddling "has less / has more than n"): eight bytes per step on the long
 * runs (targets, field values); any flagged word falls back to the byte table. */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t load8(const char *p)
{
    uint64_t w;

    memcpy(&w, p, sizeof w);
    return w;
}

/* Non-zero when some byte of |w| is below 0x20 or is 0x7F (HTAB also trips it: slow path). */
static inline uint64_t word_not_value(uint64_t w)
{
    uint64_t del = w ^ (ONES * 0x7f);

    return ((w - ONES * 0x20) & ~w & HIGHS) | ((del - ONES) & ~del & HIGHS);
}

/* Non-zero when some byte of |w| is outside 0x21..0x7E. */
static inline uint64_t word_not_target(uint64_t w)
{
    return ((w - ONES * 0x21) & ~w & HIGHS) | (((w + ONES) | w) & HIGHS);
}

/* The lowest flagged byte of those masks is exact (borrows and carries only run upwards from a
 * flagged byte), so on little-endian machines it locates the stopping byte directly. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FIRST_FLAGGED(m) ((size_t)__builtin_ctzll(m) >> 3)
#else
#define FIRST_FLAGGED(m) ((size_t)0) /* portable: the byte loop finds it */
#endif

/* Returns the first byte of [p, end) that is not a field-value byte, or |end|. */
static const char *scan_value(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t m = word_not_value(load8(p));
        if (m == 0) {
            p += 8;
            continue;
        }
        const char *stop = p + 8;
        p += FIRST_FLAGGED(m);
        while (p < stop && IS(*p, C_VALUE)) /* HTAB is flagged but valid */
            p++;
        if (p < stop)
            return p;
    }
    while (p < end && IS(*p, C_VALUE))
        p++;
    return p;
}

/* Returns the first byte of [p, end) that is not visible ASCII, or |end|. */
static const char *scan_target(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t m = word_not_target(load8(p));
        if (m != 0) {
            p += FIRST_FLAGGED(m);
            break;
        }
        p += 8;
    }
    while (p < end && IS(*p, C_TARGET))
        p++;
    return p;
}

/* Returns the first byte of [p, end) that is not a tchar, or |end|. Names and methods are
 * short: unrolling saves the bounds checks. */
static const char *scan_token(const char *p, const char *end)
{
    while (end - p >= 4 && IS(p[0], C_TCHAR) && IS(p[1], C_TCHAR) && IS(p[2], C_TCHAR) &&
           IS(p[3], C_TCHAR))
        p += 4;
    while (p < end && IS(*p, C_TCHAR))
        p++;
    return p;
}

/* ASCII case-insensitive comparison of |p|[0..|n|) with |lit|, which is lowercase. Inline with
 * an early exit: it runs for every field whose name length matches a known one, and most of
 * those differ in the first byte. Long names, which mostly match when the length does, go a
 * word at a time (the last word overlapping the one before). */
static inline int eq_lower(const char *p, const char *lit, size_t n)
{
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8)
            if (gw_lower8(load8(p + i)) != load8(lit + i))
                return 0;
        return gw_lower8(load8(p + n - 8)) == load8(lit + n - 8);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)p[i];
        c |= (unsigned)(c - 'A' < 26u) << 5;
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

#define EQ_LIT(s, lit) ((s).len == sizeof(lit) - 1 && eq_lower((s).p, (lit), sizeof(lit) - 1))

static inline struct gw_slice slice(const char *p, const char *end)
{
    return (struct gw_slice){p, (size_t)(end - p)};
}

/* What the fields of one head say about framing and connection handling. */
struct fields {
    size_t n;
    size_t max;
    int response;
    unsigned host_count;
    struct gw_slice host;
    unsigned cl_seen : 1;
    unsigned te_seen : 1;
    unsigned te_chunked : 1;      /* chunked appears in the combined list */
    unsigned te_last_chunked : 1; /* ... and is the final coding */
    unsigned te_unknown : 1;      /* some coding other than chunked */
    unsigned te_codings;
    unsigned conn_close : 1;
    unsigned conn_keep_alive : 1;
    unsigned conn_upgrade : 1;
    unsigned upgrade_seen : 1;
    unsigned expect_continue : 1;
    uint64_t cl;
};

static int fail(const char **err, const char *why, int rc)
{
    *err = why;
    return rc;
}

/* host [ ":" port ] with host = IP-literal / IPv4address / reg-name (RFC 3986 §3.2.2). No
 * userinfo (RFC 9110 §4.2.4 forbids it in http URIs), and a non-empty host (§4.2.1). An empty
 * port, legal in RFC 3986, is refused: nothing legitimate sends it and routers would disagree
 * on what it means. */
static int valid_authority(const char *p, const char *end)
{
    if (p == end)
        return 0;
    if (*p == '[') {
        /* IPv6address only: hex, colons and an embedded IPv4 tail. No IPvFuture, no zone. */
        int colon = 0;
        for (p++; p < end && (IS(*p, C_HEX) || *p == ':' || *p == '.'); p++)
            colon |= *p == ':';
        if (p == end || *p != ']' || !colon)
            return 0;
        p++;
    } else {
        const char *h = p;
        for (;;) {
            while (p < end && IS(*p, C_HOST))
                p++;
            /* pct-encoded; a stray "%" then fails the port check below */
            if (end - p < 3 || *p != '%' || !IS(p[1], C_HEX) || !IS(p[2], C_HEX))
                break;
            p += 3;
        }
        if (p == h)
            return 0;
    }
    if (p == end)
        return 1;
    if (*p++ != ':' || p == end || end - p > 5)
        return 0;
    unsigned port = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        port = port * 10 + (unsigned)(*p - '0');
    }
    return port <= 65535;
}

/* Content-Length = 1*DIGIT (RFC 9110 §8.6). A list, even of equal values, is refused: being
 * stricter than the origin is what keeps the two from disagreeing on the body's end. */
static int parse_content_length(struct fields *f, struct gw_slice v, const char **err)
{
    uint64_t n = 0;

    if (f->cl_seen)
        return fail(err, "duplicate Content-Length", H1_E_BAD);
    if (v.len == 0)
        return fail(err, "empty Content-Length", H1_E_BAD);
    for (size_t i = 0; i < v.len; i++) {
        unsigned d = (unsigned)(unsigned char)v.p[i] - '0';
        if (d > 9)
            return fail(err, "invalid Content-Length", H1_E_BAD);
        if (n > (MAX_LENGTH - d) / 10)
            return fail(err, "Content-Length overflow", H1_E_BAD);
        n = n * 10 + d;
    }
    f->cl_seen = 1;
    f->cl = n;
    return 0;
}

/* Transfer-Encoding = #transfer-coding, combined over every field line (RFC 9110 §5.3). Empty
 * list elements are ignored (RFC 9110 §5.6.1.2); each coding must be a bare token; chunked may
 * appear once (RFC 9112 §6.1). */
static int parse_transfer_encoding(struct fields *f, struct gw_slice v, const char **err)
{
    const char *p = v.p, *end = v.p + v.len;

    f->te_seen = 1;
    while (p < end) {
        if (IS_WS(*p) || *p == ',') {
            p++;
            continue;
        }
        const char *t = p;
        p = scan_token(p, end);
        if (p == t)
            return fail(err, "invalid transfer-coding", H1_E_BAD);
        struct gw_slice coding = slice(t, p);
        while (p < end && IS_WS(*p))
            p++;
        if (p < end && *p != ',')
            return fail(err, "invalid transfer-coding", H1_E_BAD);
        f->te_codings++;
        if (EQ_LIT(coding, "chunked")) {
            if (f->te_chunked)
                return fail(err, "chunked applied twice", H1_E_BAD);
            f->te_chunked = 1;
            f->te_last_chunked = 1;
        } else {
            f->te_unknown = 1;
            f->te_last_chunked = 0;
        }
    }
    return 0;
}

/* Splits a comma-separated list: returns the next non-empty element with OWS trimmed, or an
 * empty slice at the end (RFC 9110 §5.6.1). */
static struct gw_slice list_next(const char **pp, const char *end)
{
    const char *p = *pp;

    while (p < end && (IS_WS(*p) || *p == ','))
        p++;
    const char *e = p;
    while (e < end && *e != ',')
        e++;
    *pp = e;
    while (e > p && IS_WS(e[-1]))
        e--;
    return slice(p, e);
}

/* Connection options we act on (RFC 9112 §9.3 and §9.6, RFC 9110 §7.8); several field lines
 * combine. */
static void parse_connection(struct fields *f, struct gw_slice v)
{
    const char *p = v.p, *end = v.p + v.len;

    for (struct gw_slice e = list_next(&p, end); e.len != 0; e = list_next(&p, end)) {
        f->conn_close |= EQ_LIT(e, "close");
        f->conn_keep_alive |= EQ_LIT(e, "keep-alive");
        f->conn_upgrade |= EQ_LIT(e, "upgrade");
    }
}

/* Records what the framing-relevant fields say; dispatch on the name's length keeps the common
 * fields (Accept, User-Agent, Cookie...) to at most one comparison. */
static int field_semantics(struct fields *f, struct gw_slice name, struct gw_slice value,
                           const char **err)
{
    switch (name.len) {
    case 4:
        if (!f->response && EQ_LIT(name, "host")) {
            /* RFC 9112 §3.2: more than one Host, or an invalid one, is a 400. */
            if (++f->host_count > 1)
                return fail(err, "duplicate Host", H1_E_BAD);
            if (!valid_authority(value.p, value.p + value.len))
                return fail(err, "invalid Host", H1_E_BAD);
            f->host = value;
        }
        break;
    case 6:
        if (!f->response && EQ_LIT(name, "expect") && h1_list_has(value, "100-continue", 12))
            f->expect_continue = 1;
        break;
    case 7:
        if (EQ_LIT(name, "upgrade"))
            f->upgrade_seen = 1;
        break;
    case 10:
        if (EQ_LIT(name, "connection"))
            parse_connection(f, value);
        break;
    case 14:
        if (EQ_LIT(name, "content-length"))
            return parse_content_length(f, value, err);
        break;
    case 17:
        if (EQ_LIT(name, "transfer-encoding"))
            return parse_transfer_encoding(f, value, err);
        break;
    default:
        break;
    }
    return 0;
}

/* Parses one field line starting at |p|: field-name ":" OWS field-value OWS CRLF (RFC 9112 §5).
 * On success stores the trimmed name and value in |h|, sets |*next| past the CRLF and returns 0;
 * returns H1_INCOMPLETE when |end| cuts the line, or H1_E_BAD. |ws_before_colon| accepts
 * whitespace between name and colon, which RFC 9112 §5.1 lets a proxy strip from responses (the
 * name slice excludes it); in requests it is the classic smuggling vector and is refused. */
static int field_line(const char *p, const char *end, int ws_before_colon, struct h1_header *h,
                      const char **next, const char **err)
{
    const char *name = p;

    p = scan_token(p, end);
    if (p == end)
        return H1_INCOMPLETE;
    const char *name_end = p;
    if (*p != ':') {
        if (p == name) {
            if (IS_WS(*p))
                return fail(err, "obs-fold", H1_E_BAD); /* RFC 9112 §5.2 */
            if (*p == '\n')
                return fail(err, "bare LF", H1_E_BAD);
            return fail(err, "invalid character in field name", H1_E_BAD);
        }
        if (!IS_WS(*p))
            return fail(err, "invalid character in field name", H1_E_BAD);
        if (!ws_before_colon)
            return fail(err, "space before colon", H1_E_BAD);
        while (p < end && IS_WS(*p))
            p++;
        if (p == end)
            return H1_INCOMPLETE;
        if (*p != ':')
            return fail(err, "invalid character in field name", H1_E_BAD);
    }
    if (p == name)
        return fail(err, "empty field name", H1_E_BAD);
    p++;
    while (p < end && IS_WS(*p))
        p++;
    const char *value = p;
    p = scan_value(p, end);
    if (p == end)
        return H1_INCOMPLETE;
    if (*p != '\r') {
        if (*p == '\n')
            return fail(err, "bare LF", H1_E_BAD);
        if (*p == '\0')
            return fail(err, "NUL in field value", H1_E_BAD);
        return fail(err, "control character in field value", H1_E_BAD);
    }
    if (p + 1 == end)
        return H1_INCOMPLETE;
    if (p[1] != '\n')
        return fail(err, "bare CR", H1_E_BAD);
    const char *value_end = p;
    while (value_end > value && IS_WS(value_end[-1]))
        value_end--;
    h->name = slice(name, name_end);
    h->value = slice(value, value_end);
    *next = p + 2;
    return 0;
}

/* Parses field lines up to and including the empty line. Returns 0 with |*pp| past it,
 * H1_INCOMPLETE, or an error. */
/* Transfer-Encoding rules shared by requests and responses. RFC 9112 §6.1: TE in 1.0 is
 * faulty framing; §6.3 (3): TE together with CL is how requests are smuggled. */
static int check_te_framing(const struct fields *f, int minor, const char **err)
{
    if (!f->te_seen)
        return 0;
    if (minor == 0)
        return fail(err, "Transfer-Encoding in HTTP/1.0", H1_E_BAD);
    if (f->cl_seen)
        return fail(err, "Content-Length with Transfer-Encoding", H1_E_BAD);
    if (f->te_codings == 0)
        return fail(err, "empty Transfer-Encoding", H1_E_BAD);
    return 0;
}

static int parse_fields(const char **pp, const char *end, struct h1_header *hdrs, struct fields *f,
                        const char **err)
{
    const char *p = *pp;

    for (;;) {
        if (p == end)
            return H1_INCOMPLETE;
        if (*p == '\r') {
            if (p + 1 == end)
                return H1_INCOMPLETE;
            if (p[1] != '\n')
                return fail(err, "bare CR", H1_E_BAD);
            *pp = p + 2;
            return 0;
        }
        if (f->n == f->max)
            return fail(err, "too many header fields", H1_E_TOO_MANY_HEADERS);
        struct h1_header *h = &hdrs[f->n];
        int rc = field_line(p, end, f->response, h, &p, err);
        if (rc != 0)
            return rc;
        f->n++;
        rc = field_semantics(f, h->name, h->value, err);
        if (rc != 0)
            return rc;
    }
}

/* absolute-form (RFC 9112 §3.2.2): only http and https, a valid authority, then the path.
 * "http://host?q" is refused: its origin-form "/?q" cannot be a slice of the input. */
static int parse_absolute(struct gw_slice t, struct gw_slice *authority, struct gw_slice *path)
{
    size_t skip;

    if (t.len > 7 && eq_lower(t.p, "http://", 7))
        skip = 7;
    else if (t.len > 8 && eq_lower(t.p, "https://", 8))
        skip = 8;
    else
        return 0;
    const char *a = t.p + skip, *end = t.p + t.len, *e = a;
    while (e < end && *e != '/' && *e != '?' && *e != '#')
        e++;
    if ((e < end && *e != '/') || !valid_authority(a, e))
        return 0;
    *authority = slice(a, e);
    *path = e < end ? slice(e, end) : (struct gw_slice){"/", 1};
    return 1;
}

/* A zero limit, like a NULL |lim|, means "no limit", as body_bytes documents; |max_hdrs| still
 * bounds the fields and INT_MAX the head, whose length is returned as an int. */
static const struct h1_limits no_limits;

static size_t fields_max(const struct h1_limits *lim, size_t max_hdrs)
{
    return lim->headers != 0 && lim->headers < max_hdrs ? lim->headers : max_hdrs;
}

static size_t head_max(const struct h1_limits *lim)
{
    return lim->header_bytes != 0 && lim->header_bytes < INT_MAX ? lim->header_bytes : INT_MAX;
}

/* Bytes we may look at: a head longer than the limit is refused before it is complete. */
static const char *scan_end(const char *buf, size_t len, const struct h1_limits *lim)
{
    return buf + (len > head_max(lim) ? head_max(lim) : len);
}

static int need_more(size_t len, const struct h1_limits *lim, const char **err)
{
    if (len > head_max(lim))
        return fail(err, "head too big", H1_E_HEADERS_TOO_BIG);
    return H1_INCOMPLETE;
}

int h1_parse_request(const char *buf, size_t len, const struct h1_limits *lim,
                     struct h1_header *hdrs, size_t max_hdrs, struct h1_request *out)
{
    if (lim == NULL)
        lim = &no_limits;
    const char *p = buf, *end = scan_end(buf, len, lim);
    const char **err = &out->err;
    struct fields f = {.max = fields_max(lim, max_hdrs)};
    int rc;

    *out = (struct h1_request){.headers = hdrs};

    for (int empty = 0;; empty++) {
        if (p == end)
            goto more;
        if (*p != '\r')
            break;
        if (empty == MAX_EMPTY_LINES)
            return fail(err, "too many empty lines", H1_E_BAD);
        if (p + 1 == end)
            goto more;
        if (p[1] != '\n')
            return fail(err, "bare CR", H1_E_BAD);
        p += 2;
    }

    /* request-line = method SP request-target SP HTTP-version CRLF, single SPs (RFC 9112 §3) */
    const char *method = p;
    p = scan_token(p, end);
    if (p == end)
        goto more;
    if (*p != ' ' || p == method)
        return fail(err, *p == '\n' ? "bare LF" : "invalid method", H1_E_BAD);
    out->method = slice(method, p);
    /* Authority-form is a tunnel request; the gateway does not tunnel (RFC 9110 §9.3.6). */
    if (out->method.len == 7 && memcmp(method, "CONNECT", 7) == 0)
        return fail(err, "CONNECT not supported", H1_E_METHOD);

    const char *target = ++p;
    const char *tend = end;
    if (lim->target_bytes != 0 && (size_t)(end - target) > lim->target_bytes)
        tend = target + lim->target_bytes + 1;
    p = scan_target(target, tend);
    if (lim->target_bytes != 0 && (size_t)(p - target) > lim->target_bytes)
        return fail(err, "request-target too long", H1_E_TARGET_TOO_LONG);
    if (p == end)
        goto more;
    if (*p != ' ' || p == target)
        return fail(err, *p == '\n' ? "bare LF" : "invalid request-target", H1_E_BAD);
    out->target = slice(target, p);

    const char *version = ++p;
    if (end - p >= 10 && memcmp(p, "HTTP/1.", 7) == 0 && (p[7] == '1' || p[7] == '0') &&
        p[8] == '\r' && p[9] == '\n') {
        p += 8; /* the common case skips the byte loop; the checks below still run */
    } else {
        while (p < end && IS(*p, C_TARGET))
            p++;
    }
    if (p == end)
        goto more;
    if (*p != '\r')
        return fail(err, *p == '\n' ? "bare LF" : "invalid request-line", H1_E_BAD);
    if (p + 1 == end)
        goto more;
    if (p[1] != '\n')
        return fail(err, "bare CR", H1_E_BAD);
    if (p == version)
        return fail(err, "missing HTTP version", H1_E_BAD);
    /* HTTP-version is case-sensitive (RFC 9112 §2.3); anything but 1.0/1.1 on an otherwise
     * well-formed line is answered 505. */
    if (p - version != 8 || memcmp(version, "HTTP/1.", 7) != 0 ||
        (version[7] != '0' && version[7] != '1'))
        return fail(err, "unsupported HTTP version", H1_E_VERSION);
    out->minor = version[7] - '0';
    p += 2;

    /* RFC 9112 §3.2 */
    if (*target == '/') {
        out->form = H1_TARGET_ORIGIN;
        out->path = out->target;
    } else if (out->target.len == 1 && *target == '*') {
        if (out->method.len != 7 || memcmp(method, "OPTIONS", 7) != 0)
            return fail(err, "asterisk-form without OPTIONS", H1_E_BAD);
        out->form = H1_TARGET_ASTERISK;
        out->path = out->target;
    } else if (parse_absolute(out->target, &out->authority, &out->path)) {
        out->form = H1_TARGET_ABSOLUTE;
    } else {
        return fail(err, "invalid request-target", H1_E_BAD);
    }

    rc = parse_fields(&p, end, hdrs, &f, err);
    if (rc == H1_INCOMPLETE)
        goto more;
    if (rc != 0)
        return rc;
    out->nheaders = f.n;

    rc = check_te_framing(&f, out->minor, err);
    if (rc != 0)
        return rc;
    if (out->minor == 1 && f.host_count == 0)
        return fail(err, "missing Host", H1_E_BAD);
    if (f.te_seen) {
        /* We decode only chunked; anything else would have to be passed on blind. */
        if (f.te_unknown)
            return fail(err, "unsupported transfer-coding", H1_E_TE_UNKNOWN);
        out->body = H1_BODY_CHUNKED;
    } else if (f.cl_seen && f.cl > 0) {
        if (lim->body_bytes != 0 && f.cl > lim->body_bytes)
            return fail(err, "Content-Length over limit", H1_E_TOO_LARGE);
        out->body = H1_BODY_LENGTH;
        out->content_length = f.cl;
    }
    if (out->form != H1_TARGET_ABSOLUTE)
        out->authority = f.host_count ? f.host : (struct gw_slice){"", 0};
    out->keep_alive = !f.conn_close && (out->minor == 1 || f.conn_keep_alive);
    /* RFC 9110 §10.1.1 and §7.8: 100-continue and Upgrade are ignored in 1.0 requests. */
    out->expect_continue = out->minor == 1 && f.expect_continue;
    out->upgrade = out->minor == 1 && f.conn_upgrade && f.upgrade_seen;
    return (int)(p - buf);

more:
    return need_more(len, lim, err);
}

int h1_parse_response(const char *buf, size_t len, const struct h1_limits *lim,
                      struct h1_header *hdrs, size_t max_hdrs, int head_request,
                      struct h1_response *out)
{
    if (lim == NULL)
        lim = &no_limits;
    const char *p = buf, *end = scan_end(buf, len, lim);
    const char **err = &out->err;
    struct fields f = {.max = fields_max(lim, max_hdrs), .response = 1};
    int rc;

    *out = (struct h1_response){.headers = hdrs};

    /* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF (RFC 9112 §4) */
    const char *version = p;
    while (p < end && IS(*p, C_TARGET))
        p++;
    if (p == end)
        goto more;
    if (*p != ' ')
        return fail(err, "invalid status-line", H1_E_BAD);
    if (p - version != 8 || memcmp(version, "HTTP/", 5) != 0 || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
        return fail(err, "invalid HTTP version", H1_E_BAD);
    if (version[5] != '1' || version[7] > '1')
        return fail(err, "unsupported HTTP version", H1_E_VERSION);
    out->minor = version[7] - '0';
    p++;
    for (int i = 0; i < 3; i++, p++) {
        if (p == end)
            goto more;
        if (*p < '0' || *p > '9')
            return fail(err, "invalid status code", H1_E_BAD);
        out->status = out->status * 10 + (*p - '0');
    }
    if (out->status < 100)
        return fail(err, "invalid status code", H1_E_BAD);
    if (p == end)
        goto more;
    const char *reason = p;
    /* Some servers drop the SP before an empty reason; harmless, so tolerated. */
    if (*p == ' ') {
        reason = ++p;
        p = scan_value(p, end);
    } else if (*p != '\r') {
        return fail(err, "invalid status-line", H1_E_BAD);
    }
    if (p == end)
        goto more;
    if (*p != '\r')
        return fail(err, *p == '\n' ? "bare LF" : "invalid reason-phrase", H1_E_BAD);
    if (p + 1 == end)
        goto more;
    if (p[1] != '\n')
        return fail(err, "bare CR", H1_E_BAD);
    out->reason = slice(reason, p);
    p += 2;

    rc = parse_fields(&p, end, hdrs, &f, err);
    if (rc == H1_INCOMPLETE)
        goto more;
    if (rc != 0)
        return rc;
    out->nheaders = f.n;

    /* As a proxy we must not guess at framing the next hop might read differently. */
    rc = check_te_framing(&f, out->minor, err);
    if (rc != 0)
        return rc;
    out->content_length = f.cl;
    out->keep_alive = !f.conn_close && (out->minor == 1 || f.conn_keep_alive);
    /* RFC 9112 §6.3, in order */
    if (head_request || out->status < 200 || out->status == 204 || out->status == 304)
        out->body = H1_BODY_NONE;
    else if (f.te_seen)
        out->body = f.te_last_chunked ? H1_BODY_CHUNKED : H1_BODY_UNTIL_CLOSE;
    else if (f.cl_seen)
        out->body = f.cl > 0 ? H1_BODY_LENGTH : H1_BODY_NONE;
    else
        out->body = H1_BODY_UNTIL_CLOSE;
    if (out->body == H1_BODY_UNTIL_CLOSE)
        out->keep_alive = 0;
    return (int)(p - buf);

more:
    return need_more(len, lim, err);
}

int h1_status(int rc)
{
    switch (rc) {
    case H1_E_HEADERS_TOO_BIG:
    case H1_E_TOO_MANY_HEADERS:
        return 431;
    case H1_E_TARGET_TOO_LONG:
        return 414;
    case H1_E_VERSION:
        return 505;
    case H1_E_TE_UNKNOWN:
    case H1_E_METHOD:
        return 501;
    case H1_E_TOO_LARGE:
        return 413;
    default:
        return 400;
    }
}

/* Chunked decoder states (RFC 9112 §7.1). The size line is walked byte by byte so that no
 * input is ever held back; only an incomplete trailer line is left unconsumed. */
enum {
    CS_SIZE = 0,    /* chunk-size digits */
    CS_SIZE_WS,     /* BWS after the size or a value: only ";" may follow */
    CS_EXT_NAME0,   /* after ";": BWS then chunk-ext-name */
    CS_EXT_NAME,    /* in chunk-ext-name */
    CS_EXT_NAME_WS, /* BWS after the name: "=" or ";" */
    CS_EXT_VAL0,    /* after "=": BWS then token or quoted-string */
    CS_EXT_VAL,     /* in a token value */
    CS_EXT_QVAL,    /* in a quoted-string */
    CS_EXT_QESC,    /* after a backslash in a quoted-string */
    CS_EXT_QEND,    /* after the closing quote */
    CS_SIZE_LF,     /* CR of the size line seen */
    CS_DATA,
    CS_DATA_CR,
    CS_DATA_LF,
    CS_TRAILER, /* at the start of a trailer line or of the final CRLF */
    CS_FINAL_LF,
    CS_DONE,
};

static int chunk_fail(struct h1_chunked *d, const char *why, int rc)
{
    d->err = why;
    d->state = rc; /* sticky: later calls return the same error */
    return rc;
}

/* After a size, extension name or value: ";" starts another extension, CR ends the line,
 * whitespace may only precede ";". */
static int ext_delim(unsigned char c)
{
    switch (c) {
    case ';':
        return CS_EXT_NAME0;
    case '\r':
        return CS_SIZE_LF;
    case ' ':
    case '\t':
        return CS_SIZE_WS;
    default:
        return -1;
    }
}

int h1_chunked_decode(struct h1_chunked *d, const char *in, size_t len, size_t *used,
                      struct gw_slice *data)
{
    const char *p = in, *end = in + len;
    size_t max = d->max_trailer_bytes != 0 ? d->max_trailer_bytes : DEFAULT_TRAILER_BYTES;
    int next;

    *used = 0;
    if (d->state < 0)
        return d->state;
    if (d->state == CS_DONE)
        return H1_CHUNK_DONE;

    while (p < end) {
        unsigned char c = (unsigned char)*p;

        if (d->state <= CS_SIZE_LF && ++d->line_bytes > max)
            return chunk_fail(d, "chunk size line too long", H1_E_BAD);

        switch (d->state) {
        case CS_SIZE:
            if (IS(c, C_HEX)) {
                /* line_bytes counts the digits so far while in this state */
                if (d->line_bytes > 16 || d->remaining > (MAX_LENGTH >> 4))
                    return chunk_fail(d, "chunk size overflow", H1_E_BAD);
                d->remaining =
                    d->remaining * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
                break;
            }
            if (d->line_bytes == 1 || (next = ext_delim(c)) < 0)
                return chunk_fail(d, "invalid chunk size", H1_E_BAD);
            d->state = next;
            break;
        case CS_SIZE_WS:
            if (c == ';')
                d->state = CS_EXT_NAME0;
            else if (!IS_WS(c))
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            break;
        case CS_EXT_NAME0:
            if (IS(c, C_TCHAR))
                d->state = CS_EXT_NAME;
            else if (!IS_WS(c))
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            break;
        case CS_EXT_NAME:
            if (IS(c, C_TCHAR))
                break;
            if (c == '=')
                d->state = CS_EXT_VAL0;
            else if (IS_WS(c))
                d->state = CS_EXT_NAME_WS;
            else if ((next = ext_delim(c)) >= 0)
                d->state = next;
            else
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            break;
        case CS_EXT_NAME_WS:
            if (c == '=')
                d->state = CS_EXT_VAL0;
            else if (c == ';')
                d->state = CS_EXT_NAME0;
            else if (!IS_WS(c))
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            break;
        case CS_EXT_VAL0:
            if (IS(c, C_TCHAR))
                d->state = CS_EXT_VAL;
            else if (c == '"')
                d->state = CS_EXT_QVAL;
            else if (!IS_WS(c))
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            break;
        case CS_EXT_VAL:
            if (IS(c, C_TCHAR))
                break;
            if ((next = ext_delim(c)) < 0)
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            d->state = next;
            break;
        case CS_EXT_QVAL:
            if (c == '"')
                d->state = CS_EXT_QEND;
            else if (c == '\\')
                d->state = CS_EXT_QESC;
            else if (!IS(c, C_QDTEXT))
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            break;
        case CS_EXT_QESC:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!IS(c, C_VALUE))
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            d->state = CS_EXT_QVAL;
            break;
        case CS_EXT_QEND:
            if ((next = ext_delim(c)) < 0)
                return chunk_fail(d, "invalid chunk extension", H1_E_BAD);
            d->state = next;
            break;
        case CS_SIZE_LF:
            if (c != '\n')
                return chunk_fail(d, "bare CR in chunk size line", H1_E_BAD);
            d->line_bytes = 0;
            d->state = d->remaining == 0 ? CS_TRAILER : CS_DATA;
            break;
        case CS_DATA: {
            size_t n = (size_t)(end - p);
            if (n > d->remaining)
                n = (size_t)d->remaining;
            data->p = p;
            data->len = n;
            d->remaining -= n;
            if (d->remaining == 0)
                d->state = CS_DATA_CR;
            *used = (size_t)(p + n - in);
            return H1_CHUNK_DATA;
        }
        case CS_DATA_CR:
            if (c != '\r')
                return chunk_fail(d, "missing CRLF after chunk data", H1_E_BAD);
            d->state = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (c != '\n')
                return chunk_fail(d, "missing CRLF after chunk data", H1_E_BAD);
            d->state = CS_SIZE;
            break;
        case CS_TRAILER: {
            if (c == '\r') {
                d->state = CS_FINAL_LF;
                break;
            }
            /* A trailer line is reported whole, so an incomplete one stays unconsumed; the
             * budget bounds how much the caller has to hold back. */
            size_t budget = max - d->trailer_bytes;
            const char *lend = (size_t)(end - p) > budget ? p + budget : end;
            const char *err = NULL, *nextp;
            struct h1_header h;
            int rc = field_line(p, lend, 0, &h, &nextp, &err);
            if (rc == H1_INCOMPLETE) {
                if (lend < end)
                    return chunk_fail(d, "trailer section too big", H1_E_HEADERS_TOO_BIG);
                *used = (size_t)(p - in);
                return H1_CHUNK_NEED;
            }
            if (rc != 0)
                return chunk_fail(d, err, rc);
            d->trailer_bytes += (size_t)(nextp - p);
            data->p = p;
            data->len = (size_t)(nextp - 2 - p);
            *used = (size_t)(nextp - in);
            return H1_CHUNK_TRAILER;
        }
        case CS_FINAL_LF:
            if (c != '\n')
                return chunk_fail(d, "bare CR after trailer section", H1_E_BAD);
            d->state = CS_DONE;
            *used = (size_t)(p + 1 - in);
            return H1_CHUNK_DONE;
        default:
            return chunk_fail(d, "invalid decoder state", H1_E_BAD);
        }
        p++;
    }
    *used = len;
    return H1_CHUNK_NEED;
}

int h1_field_valid(struct gw_slice name, struct gw_slice value)
{
    if (name.len == 0 || scan_token(name.p, name.p + name.len) != name.p + name.len)
        return 0;
    for (size_t i = 0; i < value.len; i++)
        if (!IS(value.p[i], C_VALUE))
            return 0;
    return 1;
}

int h1_is_hop_by_hop(struct gw_slice name)
{
    switch (name.len) {
    case 2:
        return EQ_LIT(name, "te");
    case 7:
        return EQ_LIT(name, "trailer") || EQ_LIT(name, "upgrade");
    case 10:
        return EQ_LIT(name, "connection") || EQ_LIT(name, "keep-alive");
    case 16:
        return EQ_LIT(name, "proxy-connection");
    case 17:
        return EQ_LIT(name, "transfer-encoding");
    default:
        return 0;
    }
}

int h1_list_has(struct gw_slice list, const char *token, size_t token_len)
{
    if (list.len == 0 || token_len == 0)
        return 0;
    const char *p = list.p, *end = list.p + list.len;

    for (struct gw_slice e = list_next(&p, end); e.len != 0; e = list_next(&p, end))
        if (gw_slice_eq_ci(e, token, token_len))
            return 1;
    return 0;
}

/* Returns 1 when every option the Connection value |list| names is itself a hop-by-hop field
 * ("keep-alive", the usual one), so that the list removes nothing more. */
static int names_only_hop_by_hop(struct gw_slice list)
{
    const char *p = list.p, *end = list.p + list.len;

    for (struct gw_slice e = list_next(&p, end); e.len != 0; e = list_next(&p, end))
        if (!h1_is_hop_by_hop(e))
            return 0;
    return 1;
}

size_t h1_drop_hop_by_hop(struct h1_header *h, size_t n)
{
    struct gw_slice conn[H1_MAX_CONN_FIELDS];
    size_t nseen = 0, nconn = 0, kept = 0;

    /* Connection fields naming only hop-by-hop fields need no lookup per field. */
    for (size_t i = 0; i < n; i++)
        if (EQ_LIT(h[i].name, "connection") && nseen++ < H1_MAX_CONN_FIELDS &&
            !names_only_hop_by_hop(h[i].value))
            conn[nconn++] = h[i].value;
    for (size_t i = 0; i < n; i++) {
        int keep = !h1_is_hop_by_hop(h[i].name);
        for (size_t k = 0; keep && k < nconn; k++)
            if (h1_list_has(conn[k], h[i].name.p, h[i].name.len))
                keep = 0;
        if (keep)
            h[kept++] = h[i];
    }
    return kept;
}
