/* SPDX-License-Identifier: MIT */
/* Sans-I/O codec for the uwsgi packet (as nginx's uwsgi_pass and uWSGI speak it): vars encoder
 * (whole arrays, or item by item in place), decoder, HTTP header -> CGI var names and
 * PATH_INFO percent-decoding. No allocation, no I/O. */
#ifndef UWSGI_CODEC_H
#define UWSGI_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Wire layout: modifier1 (u8) | datasize (u16 little-endian) | modifier2 (u8), then datasize
 * bytes of vars, each u16le key_len | key | u16le val_len | value. A request is modifier1 0,
 * modifier2 0; its body follows the packet unframed, CONTENT_LENGTH bytes long. */
#define UWSGI_HDR_LEN 4
#define UWSGI_VAR_OVERHEAD 4 /* the two u16 lengths around each key and value */
/* The largest packet there is: an output buffer this big never makes uwsgi_encode() fall short,
 * so UWSGI_E_TOO_BIG from it then means "vars over 64 KiB" (HTTP 431). */
#define UWSGI_MAX_PACKET (UWSGI_HDR_LEN + UINT16_MAX)
/* No var is shorter than its two lengths, so no packet holds more vars than this. */
#define UWSGI_MAX_VARS (UINT16_MAX / UWSGI_VAR_OVERHEAD)

enum uwsgi_rc {
    UWSGI_OK = 0,
    UWSGI_INCOMPLETE = -1, /* decoder: need more bytes; not an error */
    UWSGI_E_TOO_BIG = -2,  /* vars over 64 KiB, output too short, or more vars than room */
    UWSGI_E_PROTO = -3,    /* decoder: a length runs past datasize */
};

/* One CGI-style variable. |key| and |val| need not be NUL-terminated and may be NULL when their
 * length is 0. */
struct uwsgi_var {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
};

/* Stores in |*size| the encoded size of |vars[0..n)| (the packet's datasize, header excluded).
 * The sum is taken in size_t and refused above UINT16_MAX before anything narrows it (cf.
 * CVE-2020-11984), as is any key or value over UINT16_MAX on its own. Returns UWSGI_OK or
 * UWSGI_E_TOO_BIG (|*size| untouched). */
int uwsgi_vars_size(const struct uwsgi_var *vars, size_t n, size_t *size);

/* Encodes the 4-byte header (|modifier1|, datasize, |modifier2|) and |vars[0..n)| into
 * |out[0..cap)| in one pass, and stores 4 + datasize in |*written|. Returns UWSGI_OK, or
 * UWSGI_E_TOO_BIG when the vars are too big (see uwsgi_vars_size()) or |cap| is short; on
 * failure |*written| is untouched, |out[0..cap)| is unspecified and nothing past |cap| is
 * written. */
int uwsgi_encode(uint8_t *out, size_t cap, uint8_t modifier1, uint8_t modifier2,
                 const struct uwsgi_var *vars, size_t n, size_t *written);

/* Builds a packet in place, item by item (a var is two items: its key, then its value), so
 * that values made on the way (a decoded path, a CGI name, a number) are written once,
 * straight into the packet. Owned by the caller; |buf| is borrowed. */
struct uwsgi_writer {
    uint8_t *buf;        /* header, then the vars */
    size_t cap;          /* bytes at |buf| */
    size_t len;          /* bytes written, header included */
    size_t open;         /* offset of the last item's length */
    int too_big;         /* an item did not fit: uwsgi_writer_finish() refuses the packet */
};

/* The item functions are inline: a packet is some forty items, most of them a literal key
 * whose copy the compiler then turns into a few moves. */

/* Starts a packet in |buf[0..cap)| (room for the header is kept). */
static inline void uwsgi_writer_init(struct uwsgi_writer *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = UWSGI_HDR_LEN;
    w->open = 0;
    w->too_big = cap < UWSGI_HDR_LEN;
}

/* Opens an item of at most |max| bytes and returns where they go, or NULL when they may not
 * fit in the buffer (the writer is then too_big; later calls do nothing). Close it with
 * uwsgi_item_end() or uwsgi_item_cancel() before the next item. */
static inline char *uwsgi_item_begin(struct uwsgi_writer *w, size_t max)
{
    /* len <= cap always, so cap - len cannot wrap; the 16-bit limits wait for the end. */
    if (w->too_big || max > w->cap - w->len || 2 > w->cap - w->len - max) {
        w->too_big = 1;
        return NULL;
    }
    w->open = w->len;
    w->len += 2;
    return (char *)w->buf + w->len;
}

/* Closes the open item at |len| bytes, at most the |max| it was opened with. */
static inline void uwsgi_item_end(struct uwsgi_writer *w, size_t len)
{
    if (w->too_big)
        return;
    if (len > UINT16_MAX) {
        w->too_big = 1;
        return;
    }
    w->buf[w->open] = (uint8_t)(len & 0xff);
    w->buf[w->open + 1] = (uint8_t)(len >> 8);
    w->len += len;
}

/* Drops the open item, as if it had not been begun. */
static inline void uwsgi_item_cancel(struct uwsgi_writer *w)
{
    if (!w->too_big)
        w->len = w->open;
}

/* Appends the item |p[0..len)| (|p| may be NULL when |len| is 0). */
static inline void uwsgi_item(struct uwsgi_writer *w, const char *p, size_t len)
{
    char *dst = uwsgi_item_begin(w, len);

    if (dst != NULL) {
        if (len != 0)
            memcpy(dst, p, len);
        uwsgi_item_end(w, len);
    }
}

/* Writes the header (|modifier1|, datasize, |modifier2|) and stores the packet's length in
 * |*written|. Returns UWSGI_OK, or UWSGI_E_TOO_BIG when an item did not fit, an item is over
 * UINT16_MAX bytes or the vars are (datasize is summed in size_t and checked before it is
 * narrowed, cf. CVE-2020-11984); |*written| is then untouched. */
int uwsgi_writer_finish(struct uwsgi_writer *w, uint8_t modifier1, uint8_t modifier2,
                        size_t *written);

/* Parses one whole packet at the start of |in[0..len)|; bytes after it (a request body, the
 * next packet) are left alone. Returns UWSGI_INCOMPLETE until 4 + datasize bytes are there;
 * UWSGI_E_PROTO when a length runs past datasize, or 1 byte is left where a length should
 * start; UWSGI_E_TOO_BIG when there are more than |max| vars. On UWSGI_OK fills
 * |*modifier1|, |*modifier2|, |vars[0..*n)| (slices into |in|, valid as long as |in| is) and
 * |*used| = 4 + datasize; on any other return those outputs are untouched, except that
 * |vars[0..max)| may have been overwritten. Any modifier is accepted: the caller decides
 * whether its packets carry vars. */
int uwsgi_decode(const uint8_t *in, size_t len, uint8_t *modifier1, uint8_t *modifier2,
                 struct uwsgi_var *vars, size_t max, size_t *n, size_t *used);

/* Writes the CGI variable name for HTTP header |name[0..name_len)| into |out[0..cap)|, not
 * NUL-terminated: "X-Forwarded-For" -> "HTTP_X_FORWARDED_FOR"; Content-Type and Content-Length
 * (any case) -> "CONTENT_TYPE" and "CONTENT_LENGTH". Returns the length written, or 0 when the
 * header must be dropped: |name| is empty or holds a byte other than A-Z, a-z, 0-9 and '-'
 * (an '_' above all, so that X_Forwarded_For cannot pose as X-Forwarded-For), or |cap| is
 * short; |out[0..cap)| is then unspecified. */
size_t uwsgi_header_var(char *out, size_t cap, const char *name, size_t name_len);

/* Percent-decodes |src[0..len)| into |out| (room for at least |len| bytes; |out| == |src|
 * decodes in place): "%2F" and "%2f" -> '/'; a '%' without two hex digits after it is copied
 * as is; '+' stays '+' (this is for PATH_INFO, not form data). Returns the decoded length and
 * sets |*has_nul| to 1 when a %00 was decoded, else to 0, so the caller can refuse it. */
size_t uwsgi_percent_decode(char *out, const char *src, size_t len, int *has_nul);

#endif
