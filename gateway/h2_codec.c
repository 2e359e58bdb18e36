/* SPDX-License-Identifier: MIT */
/* HTTP/2 server framing over nghttp2, sans I/O (see h2_codec.h). */
#include "gateway/h2_codec.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

/* The bytes one header field costs against the header list limit (RFC 9113 §6.5.2). */
#define FIELD_OVERHEAD 32

/* The field being gathered: offsets into |hb| (it may move as it grows). */
struct field {
    uint32_t name, nlen, value, vlen;
};

/* Owned by its connection's owner (h2c_new .. h2c_free). */
struct h2c {
    nghttp2_session *s;
    struct h2c_limits lim;
    const struct h2c_cbs *cbs;
    void *ud;
    /* The head being gathered: header blocks are never interleaved (RFC 9113 §6.10), so one
     * buffer per connection serves every stream. Grows up to lim.header_bytes. */
    char *hb;
    size_t hb_len, hb_cap;
    struct field *f;                 /* lim.headers + 6 entries (pseudo-fields too) */
    size_t nf;
    size_t list_bytes;               /* decoded size of the block so far */
    int32_t block_sid;               /* the stream whose request head is being gathered */
    int too_big;
    int trailers;                    /* the block is trailers: counted, not kept */
    /* Flood accounting. */
    uint64_t window_start_ms;
    unsigned count[H2C_P_COUNT];
    unsigned continuations;          /* CONTINUATION frames of the current block */
    size_t block_bytes;              /* encoded bytes of the current block */
    int flood;                       /* a protection ended the session */
    int clock_started;               /* |window_start_ms| holds a time */
    unsigned big_heads;              /* heads over the limits, on the whole connection */
    struct h1_header *scratch;       /* lim.headers + 1 entries, for the request event */
    uint64_t now_ms;
};

const char *gw_h2c_protect_name(enum h2c_protect why)
{
    static const char *const names[H2C_P_COUNT] = {
        "rapid_reset", "continuation", "settings", "ping",
        "priority", "empty_data", "header_list", "streams",
    };
    return (unsigned)why < H2C_P_COUNT ? names[why] : "unknown";
}

/* Ends the session for |why|: GOAWAY(ENHANCE_YOUR_CALM), and nghttp2 stops reading. */
static void flood(struct h2c *h, enum h2c_protect why)
{
    if (h->flood)
        return;
    h->flood = 1;
    nghttp2_session_terminate_session(h->s, NGHTTP2_ENHANCE_YOUR_CALM);
    if (h->cbs->protect != NULL)
        h->cbs->protect(h->ud, why);
}

/* Counts one frame of kind |why| in the current window; returns 1 when that ended the
 * session. */
static int count(struct h2c *h, enum h2c_protect why, unsigned max)
{
    if (h->now_ms - h->window_start_ms >= H2C_FLOOD_WINDOW_MS) {
        h->window_start_ms = h->now_ms;
        memset(h->count, 0, sizeof h->count);
    }
    if (++h->count[why] <= max)
        return 0;
    flood(h, why);
    return 1;
}

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    struct h2c *h = ud;

    (void)s;
    if (hd->type == NGHTTP2_HEADERS) {
        h->continuations = 0;
        h->block_bytes = hd->length;
    } else if (hd->type == NGHTTP2_CONTINUATION) {
        h->block_bytes += hd->length;
        if (++h->continuations > H2C_MAX_CONTINUATIONS || h->block_bytes > h->lim.header_bytes) {
            flood(h, H2C_P_CONTINUATION);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *fr, void *ud)
{
    struct h2c *h = ud;

    (void)s;
    h->hb_len = 0;
    h->nf = 0;
    h->list_bytes = 0;
    h->too_big = 0;
    h->block_sid = fr->hd.stream_id;
    h->trailers = fr->hd.type != NGHTTP2_HEADERS || fr->headers.cat != NGHTTP2_HCAT_REQUEST;
    return 0;
}

/* Makes room for |n| more bytes in the gather buffer, which holds at most twice
 * lim.header_bytes (the fields, and the joined cookie). Returns 0 or -1. */
static int hb_reserve(struct h2c *h, size_t n)
{
    size_t cap = h->hb_cap ? h->hb_cap : 512, max = 2 * h->lim.header_bytes;
    char *nb;

    if (h->hb_len + n <= h->hb_cap)
        return 0;
    while (cap < h->hb_len + n)
        cap *= 2;
    if (cap > max)
        cap = max;
    if (cap < h->hb_len + n || (nb = realloc(h->hb, cap)) == NULL)
        return -1;
    h->hb = nb;
    h->hb_cap = cap;
    return 0;
}

/* Appends |n| bytes to the gather buffer; returns their offset, or -1 past the limit. */
static long hb_put(struct h2c *h, const uint8_t *p, size_t n)
{
    size_t at = h->hb_len;

    if (hb_reserve(h, n) != 0)
        return -1;
    if (n > 0)
        memcpy(h->hb + at, p, n);
    h->hb_len += n;
    return (long)at;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct h2c *h = ud;
    long no, vo;

    (void)s;
    (void)fr;
    (void)flags;
    h->list_bytes += nlen + vlen + FIELD_OVERHEAD;
    if (h->trailers || h->too_big)
        return 0;
    if (h->list_bytes > h->lim.header_bytes || h->nf >= h->lim.headers + 6 ||
        h->hb_len + nlen + vlen > h->lim.header_bytes) {
        h->too_big = 1;
        return 0;
    }
    no = hb_put(h, name, nlen);
    vo = no < 0 ? -1 : hb_put(h, value, vlen);
    if (vo < 0) {
        h->too_big = 1;
        return 0;
    }
    h->f[h->nf++] = (struct field){(uint32_t)no, (uint32_t)nlen, (uint32_t)vo, (uint32_t)vlen};
    return 0;
}

static struct gw_slice slice_of(const struct h2c *h, uint32_t off, uint32_t len)
{
    return (struct gw_slice){h->hb + off, len};
}

/* Counts a head over the limits; returns 1 when that ended the session. */
static int big_head(struct h2c *h)
{
    if (++h->big_heads < H2C_MAX_BIG_HEADERS)
        return 0;
    flood(h, H2C_P_HEADER_LIST);
    return 1;
}

/* Builds the request event from the gathered block and hands it over. */
static int deliver_request(struct h2c *h, const nghttp2_frame *fr)
{
    struct h2c_req r;
    size_t cookie_len = 0, ncookies = 0, crumbs = 0, n = 0, at;

    memset(&r, 0, sizeof r);
    r.content_length = -1;
    r.end_stream = (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    r.headers = h->scratch;
    /* Cookie crumbs are joined with "; " into one field (RFC 9113 §8.2.3) at the end of the
     * buffer, made room for first: the slices below must not move. */
    for (size_t i = 0; i < h->nf && !h->too_big; i++)
        if (h->f[i].nlen == 6 && memcmp(h->hb + h->f[i].name, "cookie", 6) == 0)
            cookie_len += h->f[i].vlen + (ncookies++ > 0 ? 2 : 0);
    at = h->hb_len;
    if (!h->too_big && ncookies > 0 && hb_reserve(h, cookie_len) != 0)
        h->too_big = 1;
    for (size_t i = 0; i < h->nf && !h->too_big; i++) {
        struct gw_slice nm = slice_of(h, h->f[i].name, h->f[i].nlen);
        struct gw_slice v = slice_of(h, h->f[i].value, h->f[i].vlen);

        if (nm.len > 0 && nm.p[0] == ':') {
            if (GW_SLICE_EQ_LIT(nm, ":method"))
                r.method = v;
            else if (GW_SLICE_EQ_LIT(nm, ":scheme"))
                r.scheme = v;
            else if (GW_SLICE_EQ_LIT(nm, ":authority"))
                r.authority = v;
            else if (GW_SLICE_EQ_LIT(nm, ":path"))
                r.path = v;
            else if (GW_SLICE_EQ_LIT(nm, ":protocol"))
                r.protocol = v;
            continue;
        }
        if (GW_SLICE_EQ_LIT(nm, "cookie")) {
            if (crumbs++ > 0)
                hb_put(h, (const uint8_t *)"; ", 2);
            hb_put(h, (const uint8_t *)v.p, v.len);
            continue;
        }
        if (n >= h->lim.headers) {
            h->too_big = 1;
            break;
        }
        if (GW_SLICE_EQ_LIT(nm, "content-length")) {
            uint64_t cl = 0;
            for (size_t k = 0; k < v.len && cl < ((uint64_t)1 << 60); k++)
                cl = cl * 10 + (uint64_t)(v.p[k] - '0'); /* digits: nghttp2 checked */
            r.content_length = (int64_t)cl;
        }
        h->scratch[n].name = nm;
        h->scratch[n].value = v;
        n++;
    }
    if (ncookies > 0 && !h->too_big) {
        if (n >= h->lim.headers) {
            h->too_big = 1;
        } else {
            h->scratch[n].name = (struct gw_slice){"cookie", 6};
            h->scratch[n].value = slice_of(h, (uint32_t)at, (uint32_t)cookie_len);
            n++;
        }
    }
    if (h->too_big) {
        if (big_head(h))
            return 0;
        memset(&r, 0, sizeof r);
        r.content_length = -1;
        r.end_stream = (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        r.headers = h->scratch;
        r.too_big = 1;
        n = 0;
    }
    r.nheaders = n;
    return h->cbs->request(h->ud, fr->hd.stream_id, &r);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *ud)
{
    struct h2c *h = ud;
    int end = (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    switch (fr->hd.type) {
    case NGHTTP2_HEADERS:
        if (fr->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (deliver_request(h, fr) != 0) {
                nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, fr->hd.stream_id,
                                          NGHTTP2_INTERNAL_ERROR);
                return 0;
            }
        }
        if (end && !h->flood)
            h->cbs->end(h->ud, fr->hd.stream_id);
        break;
    case NGHTTP2_DATA:
        if (fr->hd.length == 0 && !end && count(h, H2C_P_EMPTY_DATA, H2C_MAX_EMPTY_DATA))
            return 0;
        if (end)
            h->cbs->end(h->ud, fr->hd.stream_id);
        break;
    case NGHTTP2_SETTINGS:
        if (!(fr->hd.flags & NGHTTP2_FLAG_ACK))
            count(h, H2C_P_SETTINGS, H2C_MAX_SETTINGS);
        break;
    case NGHTTP2_PING:
        if (!(fr->hd.flags & NGHTTP2_FLAG_ACK))
            count(h, H2C_P_PING, H2C_MAX_PINGS);
        break;
    case NGHTTP2_PRIORITY:
        count(h, H2C_P_PRIORITY, H2C_MAX_PRIORITY);
        break;
    case NGHTTP2_RST_STREAM:
        count(h, H2C_P_RAPID_RESET, H2C_MAX_RESETS);
        break;
    default:
        break;
    }
    return 0;
}

/* Counts resets the client provoked, and nghttp2's own refusal of a stream past the
 * acknowledged SETTINGS_MAX_CONCURRENT_STREAMS (a connection error: its GOAWAY's debug data is
 * the only sign of which check fired). Then, a response complete before its request (a
 * refusal, or an answer that did not wait for the body) gets RST_STREAM(NO_ERROR), which tells
 * the client to stop sending (RFC 9113 §8.1). */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *fr, void *ud)
{
    static const char streams[] = "max concurrent streams exceeded";
    const size_t slen = sizeof streams - 1;
    struct h2c *h = ud;

    if (fr->hd.type == NGHTTP2_GOAWAY && !h->flood && fr->goaway.opaque_data_len >= slen &&
        memcmp(fr->goaway.opaque_data + fr->goaway.opaque_data_len - slen, streams, slen) == 0) {
        h->flood = 1;
        if (h->cbs->protect != NULL)
            h->cbs->protect(h->ud, H2C_P_STREAMS);
    }
    /* A connection error nghttp2 answered itself: the owner logs it (floods log their own). */
    if (fr->hd.type == NGHTTP2_GOAWAY && fr->goaway.error_code != NGHTTP2_NO_ERROR &&
        !h->flood && h->cbs->error != NULL)
        h->cbs->error(h->ud, 0, fr->goaway.error_code, fr->goaway.opaque_data,
                      fr->goaway.opaque_data_len);
    /* Resets the client provoked (a malformed request, a window or state violation): logged,
     * and since they cost the server as much as its own, counted with them (MadeYouReset,
     * CVE-2025-8671). */
    if (fr->hd.type == NGHTTP2_RST_STREAM && fr->rst_stream.error_code != NGHTTP2_NO_ERROR &&
        fr->rst_stream.error_code != NGHTTP2_REFUSED_STREAM &&
        fr->rst_stream.error_code != NGHTTP2_INTERNAL_ERROR &&
        fr->rst_stream.error_code != NGHTTP2_CANCEL && !h->flood) {
        if (h->cbs->error != NULL)
            h->cbs->error(h->ud, fr->hd.stream_id, fr->rst_stream.error_code, NULL, 0);
        if (count(h, H2C_P_RAPID_RESET, H2C_MAX_RESETS))
            return 0;
    }
    if ((fr->hd.type == NGHTTP2_HEADERS || fr->hd.type == NGHTTP2_DATA) &&
        (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(s, fr->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, fr->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *p,
                         size_t n, void *ud)
{
    struct h2c *h = ud;

    (void)flags;
    if (h->flood)
        return 0;
    if (h->cbs->data(h->ud, sid, p, n) != 0) {
        /* Nobody takes these bytes: the connection's window gets them back at once. */
        nghttp2_session_consume(s, sid, n);
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    struct h2c *h = ud;

    (void)s;
    if (h != NULL)
        h->cbs->closed(h->ud, sid, code);
    return 0;
}

static int submit_trailers(nghttp2_session *s, int32_t sid, const struct h1_header *hdrs,
                           size_t n);

static int send_data(nghttp2_session *s, nghttp2_frame *fr, const uint8_t *hd, size_t len,
                     nghttp2_data_source *src, void *ud)
{
    struct h2c *h = ud;

    (void)s;
    (void)src;
    h->cbs->send_data(h->ud, fr->hd.stream_id, hd, len);
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct h2c *h = ud;
    const struct h1_header *t = NULL;
    size_t n, nt = 0;
    int eof = 0;

    (void)src;
    n = h->cbs->body(h->ud, sid, h->cbs->send_data != NULL ? NULL : buf, len, &eof, &t, &nt);
    if (n == 0 && !eof)
        return NGHTTP2_ERR_DEFERRED;
    if (h->cbs->send_data != NULL && n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        /* Trailers are submitted here, after the last DATA frame is decided: a HEADERS frame
         * queued earlier would overtake the body. */
        if (nt > 0 && submit_trailers(s, sid, t, nt) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

struct h2c *h2c_new(const struct h2c_limits *lim, const struct h2c_cbs *cbs, void *ud)
{
    struct h2c *h = calloc(1, sizeof *h);
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[4];
    size_t niv = 0;
    int rc;

    if (h == NULL)
        return NULL;
    h->lim = *lim;
    h->cbs = cbs;
    h->ud = ud;
    h->f = calloc(lim->headers + 6, sizeof *h->f);
    h->scratch = calloc(lim->headers + 1, sizeof *h->scratch);
    if (h->f == NULL || h->scratch == NULL || nghttp2_session_callbacks_new(&cb) != 0 ||
        nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    if (cbs->send_data != NULL)
        nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    /* Windows open only for what the owner passed on (h2c_consume). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    rc = nghttp2_session_server_new2(&h->s, cb, h, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    cb = NULL;
    opt = NULL;
    if (rc != 0)
        goto fail;
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                         lim->max_concurrent_streams};
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim->window};
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                         (uint32_t)lim->header_bytes};
    if (lim->connect_protocol)
        iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1};
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)lim->connection_window) != 0)
        goto fail;
    return h;
fail:
    if (cb != NULL)
        nghttp2_session_callbacks_del(cb);
    if (opt != NULL)
        nghttp2_option_del(opt);
    h2c_free(h);
    return NULL;
}

void h2c_free(struct h2c *h)
{
    if (h == NULL)
        return;
    if (h->s != NULL) {
        /* Freeing the session calls on_stream_close for open streams: not wanted here. */
        nghttp2_session_set_user_data(h->s, NULL);
        nghttp2_session_del(h->s);
    }
    free(h->hb);
    free(h->f);
    free(h->scratch);
    free(h);
}

long h2c_recv(struct h2c *h, const uint8_t *p, size_t n, uint64_t now_ms)
{
    ssize_t rc;

    h->now_ms = now_ms;
    if (!h->clock_started) {
        h->clock_started = 1;
        h->window_start_ms = now_ms;
    }
    if (h->flood)
        return -1;
    rc = nghttp2_session_mem_recv(h->s, p, n);
    if (h->flood)
        return -1;
    if (rc < 0) {
        /* A connection error nghttp2 did not answer itself (a bad preface, a callback's
         * failure): say so before closing. */
        uint32_t code = rc == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? NGHTTP2_PROTOCOL_ERROR
                                                           : NGHTTP2_INTERNAL_ERROR;
        if (rc == NGHTTP2_ERR_FLOODED) {
            code = NGHTTP2_ENHANCE_YOUR_CALM; /* nghttp2's own bound on unacknowledged acks */
        } else if (rc == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
            /* Debian's nghttp2 caps CONTINUATIONs itself (CVE-2024-28182), above ours: only
             * reachable if the two limits ever cross. */
            flood(h, H2C_P_CONTINUATION);
            return -1;
        }
        nghttp2_session_terminate_session(h->s, code);
        return -1;
    }
    return (long)rc;
}

int h2c_send(struct h2c *h, size_t max, void (*put)(void *arg, const uint8_t *p, size_t n),
             void *arg)
{
    size_t sent = 0;

    while (sent < max) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->s, &data);

        if (n < 0)
            return -1;
        if (n == 0)
            break;
        put(arg, data, (size_t)n);
        sent += (size_t)n;
    }
    return 0;
}

int h2c_want_write(const struct h2c *h)
{
    return nghttp2_session_want_write(h->s);
}

int h2c_done(const struct h2c *h)
{
    return !nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s);
}

/* Fields a response must not carry over HTTP/2 (RFC 9113 §8.2.2). */
static int connection_specific(struct gw_slice n)
{
    return GW_SLICE_EQ_LIT(n, "connection") || GW_SLICE_EQ_LIT(n, "keep-alive") ||
           GW_SLICE_EQ_LIT(n, "proxy-connection") || GW_SLICE_EQ_LIT(n, "transfer-encoding") ||
           GW_SLICE_EQ_LIT(n, "upgrade");
}

/* Fills |nv| from |hdrs| with lower-cased names written to |low| (sized for them). Returns
 * the entries filled. */
static size_t to_nv(nghttp2_nv *nv, char *low, const struct h1_header *hdrs, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        struct gw_slice nm = hdrs[i].name;

        if (connection_specific(nm))
            continue;
        for (size_t j = 0; j < nm.len; j++) {
            char ch = nm.p[j];
            low[j] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        nv[k].name = (uint8_t *)low;
        nv[k].namelen = nm.len;
        nv[k].value = (uint8_t *)(uintptr_t)hdrs[i].value.p;
        nv[k].valuelen = hdrs[i].value.len;
        nv[k].flags = NGHTTP2_NV_FLAG_NONE;
        low += nm.len;
        k++;
    }
    return k;
}

static size_t names_len(const struct h1_header *hdrs, size_t n)
{
    size_t len = 0;

    for (size_t i = 0; i < n; i++)
        len += hdrs[i].name.len;
    return len;
}

/* Fields of a head or trailers that fit these go through the stack, not malloc: nghttp2 copies
 * them anyway. */
#define STACK_FIELDS 32
#define STACK_NAMES 1024

/* Submits |hdrs[0..n)| on |sid|: a response head with |status| and |prd| (NULL: no body), or
 * with |status| 0 trailers. Returns 0 or -1. */
static int submit_fields(nghttp2_session *s, int32_t sid, int status, const struct h1_header *hdrs,
                         size_t n, const nghttp2_data_provider *prd)
{
    nghttp2_nv nv_stack[STACK_FIELDS], *nv = nv_stack;
    char low_stack[STACK_NAMES], *low = low_stack, st[4];
    size_t names = names_len(hdrs, n), k = 0;
    int rc = -1;

    if (n + 1 > STACK_FIELDS)
        nv = malloc((n + 1) * sizeof *nv);
    if (names > STACK_NAMES)
        low = malloc(names);
    if (nv != NULL && low != NULL) {
        if (status != 0) {
            st[0] = (char)('0' + status / 100 % 10);
            st[1] = (char)('0' + status / 10 % 10);
            st[2] = (char)('0' + status % 10);
            nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3,
                                   NGHTTP2_NV_FLAG_NONE};
        }
        k += to_nv(nv + k, low, hdrs, n);
        if (status != 0)
            rc = nghttp2_submit_response(s, sid, nv, k, prd) == 0 ? 0 : -1;
        else
            rc = nghttp2_submit_trailer(s, sid, nv, k) == 0 ? 0 : -1;
    }
    if (nv != nv_stack)
        free(nv);
    if (low != low_stack)
        free(low);
    return rc;
}

int h2c_respond(struct h2c *h, int32_t sid, int status, const struct h1_header *hdrs, size_t n,
                int has_body)
{
    nghttp2_data_provider prd = {.read_callback = read_body};

    return submit_fields(h->s, sid, status, hdrs, n, has_body ? &prd : NULL);
}

static int submit_trailers(nghttp2_session *s, int32_t sid, const struct h1_header *hdrs,
                           size_t n)
{
    return submit_fields(s, sid, 0, hdrs, n, NULL);
}

void h2c_resume(struct h2c *h, int32_t sid)
{
    nghttp2_session_resume_data(h->s, sid);
}

void h2c_consume(struct h2c *h, int32_t sid, size_t n)
{
    if (n == 0)
        return;
    if (nghttp2_session_consume(h->s, sid, n) != 0)
        nghttp2_session_consume_connection(h->s, n);
}

void h2c_set_stream_data(struct h2c *h, int32_t sid, void *data)
{
    nghttp2_session_set_stream_user_data(h->s, sid, data);
}

void *h2c_stream_data(const struct h2c *h, int32_t sid)
{
    return nghttp2_session_get_stream_user_data(h->s, sid);
}

void h2c_reset(struct h2c *h, int32_t sid, uint32_t code)
{
    nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, sid, code);
}

void h2c_goaway(struct h2c *h)
{
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
}
