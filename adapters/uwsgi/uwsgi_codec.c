/* SPDX-License-Identifier: MIT */
/* The uwsgi packet codec: encodes the request vars the gateway sends, decodes them for tests,
 * maps header names to CGI vars and percent-decodes PATH_INFO; libc only. */
#include "adapters/uwsgi/uwsgi_codec.h"

#include <string.h>

/* Header name byte -> CGI name byte; 0 drops the header. Only letters, digits and '-' pass:
 * '_' would let "X_Forwarded_For" collide with "X-Forwarded-For" once '-' becomes '_', and
 * the rest (nginx's ignore_invalid_headers) has no business in a CGI name. Bytes >= 0x80: 0. */
/* clang-format off */
static const unsigned char cgi_char[256] = {
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   '_', 0,   0,
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 0,   0,   0,   0,   0,   0,
    0,   'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 0,   0,   0,   0,   0,
    0,   'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 0,   0,   0,   0,   0,
};

/* Hex digit -> value; 16 marks a byte that is not one. */
static const unsigned char hex_val[256] = {
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  16, 16, 16, 16, 16, 16,
    16, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
};
/* clang-format on */

/* Callers have checked |v| <= UINT16_MAX. */
static inline void put_u16le(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static inline size_t get_u16le(const uint8_t *p)
{
    return (size_t)p[0] | (size_t)p[1] << 8;
}

/* memcpy's pointers must be valid even for 0 bytes, and an empty var may carry NULL. */
static inline void copy(uint8_t *dst, const char *src, size_t len)
{
    if (len != 0)
        memcpy(dst, src, len);
}

int uwsgi_vars_size(const struct uwsgi_var *vars, size_t n, size_t *size)
{
    size_t total = 0;

    for (size_t i = 0; i < n; i++) {
        if (vars[i].key_len > UINT16_MAX || vars[i].val_len > UINT16_MAX)
            return UWSGI_E_TOO_BIG;
        /* Cannot wrap: total <= UINT16_MAX here and each term is at most UINT16_MAX + 2. */
        total += UWSGI_VAR_OVERHEAD + vars[i].key_len + vars[i].val_len;
        if (total > UINT16_MAX)
            return UWSGI_E_TOO_BIG;
    }
    *size = total;
    return UWSGI_OK;
}

int uwsgi_writer_finish(struct uwsgi_writer *w, uint8_t modifier1, uint8_t modifier2,
                        size_t *written)
{
    size_t datasize;

    if (w->too_big)
        return UWSGI_E_TOO_BIG;
    datasize = w->len - UWSGI_HDR_LEN;
    if (datasize > UINT16_MAX)
        return UWSGI_E_TOO_BIG;
    w->buf[0] = modifier1;
    put_u16le(w->buf + 1, datasize);
    w->buf[3] = modifier2;
    *written = w->len;
    return UWSGI_OK;
}

int uwsgi_encode(uint8_t *out, size_t cap, uint8_t modifier1, uint8_t modifier2,
                 const struct uwsgi_var *vars, size_t n, size_t *written)
{
    struct uwsgi_writer w;

    /* Past UWSGI_MAX_PACKET the datasize check refuses anyway: stop writing there. */
    uwsgi_writer_init(&w, out, cap < UWSGI_MAX_PACKET ? cap : UWSGI_MAX_PACKET);
    for (size_t i = 0; i < n && !w.too_big; i++) {
        uwsgi_item(&w, vars[i].key, vars[i].key_len);
        uwsgi_item(&w, vars[i].val, vars[i].val_len);
    }
    return uwsgi_writer_finish(&w, modifier1, modifier2, written);
}

int uwsgi_decode(const uint8_t *in, size_t len, uint8_t *modifier1, uint8_t *modifier2,
                 struct uwsgi_var *vars, size_t max, size_t *n, size_t *used)
{
    const uint8_t *p, *end;
    size_t datasize, count = 0;

    if (len < UWSGI_HDR_LEN)
        return UWSGI_INCOMPLETE;
    datasize = get_u16le(in + 1);
    if (len - UWSGI_HDR_LEN < datasize)
        return UWSGI_INCOMPLETE;
    p = in + UWSGI_HDR_LEN;
    end = p + datasize;
    /* The vars must tile datasize exactly: anything left over is a truncated var. */
    while (p != end) {
        size_t kl, vl;
        const uint8_t *key;

        if ((size_t)(end - p) < 2)
            return UWSGI_E_PROTO;
        kl = get_u16le(p);
        p += 2;
        /* The key and the value's length field must both fit. */
        if ((size_t)(end - p) < kl + 2)
            return UWSGI_E_PROTO;
        key = p;
        p += kl;
        vl = get_u16le(p);
        p += 2;
        if ((size_t)(end - p) < vl)
            return UWSGI_E_PROTO;
        if (count == max)
            return UWSGI_E_TOO_BIG;
        vars[count].key = (const char *)key;
        vars[count].key_len = kl;
        vars[count].val = (const char *)p;
        vars[count].val_len = vl;
        count++;
        p += vl;
    }
    *modifier1 = in[0];
    *modifier2 = in[3];
    *n = count;
    *used = UWSGI_HDR_LEN + datasize;
    return UWSGI_OK;
}

/* Whether |name| is Content-Type or Content-Length in any case: CGI (RFC 3875 §4.1.2, §4.1.3)
 * names these two without the HTTP_ prefix. */
static int is_content_header(const char *name, size_t len)
{
    static const char type[] = "CONTENT_TYPE", length[] = "CONTENT_LENGTH";
    const char *want;

    if (len == sizeof type - 1)
        want = type;
    else if (len == sizeof length - 1)
        want = length;
    else
        return 0;
    for (size_t i = 0; i < len; i++)
        if (cgi_char[(unsigned char)name[i]] != (unsigned char)want[i])
            return 0;
    return 1;
}

size_t uwsgi_header_var(char *out, size_t cap, const char *name, size_t name_len)
{
    static const char http[] = "HTTP_";
    size_t prefix;

    if (name_len == 0)
        return 0;
    prefix = is_content_header(name, name_len) ? 0 : sizeof http - 1;
    if (cap < prefix || name_len > cap - prefix)
        return 0;
    memcpy(out, http, prefix);
    out += prefix;
    for (size_t i = 0; i < name_len; i++) {
        unsigned char c = cgi_char[(unsigned char)name[i]];

        if (c == 0)
            return 0;
        out[i] = (char)c;
    }
    return prefix + name_len;
}

size_t uwsgi_percent_decode(char *out, const char *src, size_t len, int *has_nul)
{
    size_t i = 0, o = 0;
    int nul = 0;

    while (i < len) {
        /* Copy the run up to the next '%' in one go: most paths have no escape at all. */
        const char *pct = memchr(src + i, '%', len - i);
        size_t run = pct != NULL ? (size_t)(pct - (src + i)) : len - i;

        /* memmove: decoding in place, the output trails the input. */
        if (run != 0 && out + o != src + i)
            memmove(out + o, src + i, run);
        o += run;
        i += run;
        if (i == len)
            break;
        if (len - i >= 3) {
            unsigned hi = hex_val[(unsigned char)src[i + 1]];
            unsigned lo = hex_val[(unsigned char)src[i + 2]];

            if ((hi | lo) < 16) {
                unsigned char c = (unsigned char)(hi << 4 | lo);

                nul |= c == 0;
                out[o++] = (char)c;
                i += 3;
                continue;
            }
        }
        /* Not an escape: keep the '%' and look at what follows as ordinary bytes. */
        out[o++] = '%';
        i++;
    }
    *has_nul = nul;
    return o;
}
