/* SPDX-License-Identifier: MIT */
/* WebSocket codec (RFC 6455, RFC 7692): handshake checks, client frame input, server output. */
#define ZLIB_CONST
#include "gateway/ws_codec.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Validator states: WS_UTF8_ACCEPT between characters; otherwise bits 4..5 count the
 * continuation bytes still expected and bits 0..3 name the range the next one must fall in.
 * Only the first continuation byte gets a narrower range than 80..BF, and those ranges are what
 * exclude overlong forms (E0, F0), surrogates (ED) and code points past U+10FFFF (F4). */
#define UTF8_REJECT 0xffu

enum { R_ANY, R_E0, R_ED, R_F0, R_F4 };
static const uint8_t cont_lo[] = {0x80, 0xa0, 0x80, 0x90, 0x80};
static const uint8_t cont_hi[] = {0xbf, 0xbf, 0x9f, 0xbf, 0x8f};

#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t load8(const uint8_t *p)
{
    uint64_t w;

    memcpy(&w, p, sizeof w);
    return w;
}

int ws_utf8_feed(uint32_t *state, const uint8_t *p, size_t n)
{
    uint32_t st = *state;
    size_t i = 0;

    if (st == UTF8_REJECT)
        return -1;
    while (i < n) {
        unsigned c;

        if (st == WS_UTF8_ACCEPT) {
            /* Text is mostly ASCII: skip it a word at a time. */
            while (n - i >= 8 && (load8(p + i) & HIGHS) == 0)
                i += 8;
            if (i == n)
                break;
            c = p[i++];
            if (c < 0x80)
                continue;
            if (c < 0xc2 || c > 0xf4) /* C0, C1: overlong 2-byte forms; F5..: past U+10FFFF */
                goto reject;
            if (c < 0xe0)
                st = 1u << 4;
            else if (c < 0xf0)
                st = 2u << 4 | (c == 0xe0 ? R_E0 : c == 0xed ? R_ED : R_ANY);
            else
                st = 3u << 4 | (c == 0xf0 ? R_F0 : c == 0xf4 ? R_F4 : R_ANY);
        } else {
            unsigned r = st & 0xf;

            c = p[i++];
            if (c < cont_lo[r] || c > cont_hi[r])
                goto reject;
            st = ((st >> 4) - 1) << 4;
        }
    }
    *state = st;
    return 0;
reject:
    *state = UTF8_REJECT;
    return -1;
}

int ws_close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* ---- handshake ------------------------------------------------------------------------------- */

static int hs_fail(const char **why, const char *reason, int status)
{
    *why = reason;
    return status;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    return p;
}

static const char *scan_token(const char *p, const char *end)
{
    while (p < end && is_tchar((unsigned char)*p))
        p++;
    return p;
}

static int b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* 16 bytes in base64 are 22 characters and "==". The unused low bits of the last character
 * are not required to be zero: RFC 4648 §3.5 lets decoders accept them, and browsers never
 * set them anyway. */
static int key_valid(struct gw_slice k)
{
    if (k.len != 24 || k.p[22] != '=' || k.p[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!b64_char(k.p[i]))
            return 0;
    return 1;
}

/* Parameters of one permessage-deflate offer (RFC 7692 §7.1). */
enum { P_SNCT = 1, P_CNCT = 2, P_SMWB = 4, P_CMWB = 8 };

struct pmd_offer {
    int is_pmd;
    int bad;       /* malformed, or an unknown, repeated or out-of-range parameter */
    unsigned seen; /* P_* */
    struct ws_pmd p;
};

/* "8".."15" without leading zeros (RFC 7692 §7.1.2.1); returns the value or -1. */
static int window_bits_value(const char *v, size_t n)
{
    if (n == 1 && (v[0] == '8' || v[0] == '9'))
        return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + (v[1] - '0');
    return -1;
}

static void offer_param(struct pmd_offer *o, struct gw_slice name, int has_value, const char *v,
                        size_t vlen)
{
    unsigned bit;
    int bits = 15;

    if (GW_SLICE_EQ_LIT(name, "server_no_context_takeover")) {
        bit = P_SNCT;
        o->bad |= has_value;
        o->p.server_no_context_takeover = 1;
    } else if (GW_SLICE_EQ_LIT(name, "client_no_context_takeover")) {
        bit = P_CNCT;
        o->bad |= has_value;
        o->p.client_no_context_takeover = 1;
    } else if (GW_SLICE_EQ_LIT(name, "server_max_window_bits")) {
        bit = P_SMWB;
        bits = has_value ? window_bits_value(v, vlen) : -1;
        o->bad |= bits < 0;
        o->p.server_max_window_bits = (uint8_t)bits;
    } else if (GW_SLICE_EQ_LIT(name, "client_max_window_bits")) {
        bit = P_CMWB;
        if (has_value)
            bits = window_bits_value(v, vlen);
        o->bad |= bits < 0;
        o->p.client_max_window_bits = (uint8_t)bits;
    } else {
        o->bad = 1;
        return;
    }
    o->bad |= (o->seen & bit) != 0;
    o->seen |= bit;
}

/* Reads a parameter value at |*pp|: a token or a quoted-string (RFC 6455 §9.1, RFC 9110
 * §5.6.4). Keeps the first |cap| bytes of the unescaped value in |val| and its whole length in
 * |*vlen|. Returns 0, or -1 when there is neither. */
static int read_value(const char **pp, const char *end, char *val, size_t cap, size_t *vlen)
{
    const char *p = *pp;
    size_t n = 0;

    if (p == end)
        return -1;
    if (*p != '"') {
        const char *e = scan_token(p, end);
        if (e == p)
            return -1;
        n = (size_t)(e - p);
        memcpy(val, p, n < cap ? n : cap);
        *pp = e;
        *vlen = n;
        return 0;
    }
    for (p++; p < end && *p != '"'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\\') {
            if (++p == end)
                return -1;
            c = (unsigned char)*p;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return -1;
        if (n < cap)
            val[n] = (char)c;
        n++;
    }
    if (p == end)
        return -1;
    *pp = p + 1;
    *vlen = n;
    return 0;
}

/* Reads the next offer of a Sec-WebSocket-Extensions value at |*pp| into |*o|. Returns 0 at the
 * end of the value. A malformed offer is skipped up to the next comma outside a quoted-string
 * and marked bad, so the offers after it are still read. */
static int next_offer(const char **pp, const char *end, struct pmd_offer *o)
{
    const char *p = *pp, *name;

    memset(o, 0, sizeof *o);
    o->p.server_max_window_bits = o->p.client_max_window_bits = 15;
    while (p < end && (is_ows(*p) || *p == ','))
        p++;
    if (p == end) {
        *pp = p;
        return 0;
    }
    name = p;
    p = scan_token(p, end);
    if (p == name)
        goto malformed;
    o->is_pmd =
        GW_SLICE_EQ_LIT(((struct gw_slice){name, (size_t)(p - name)}), "permessage-deflate");
    for (;;) {
        char val[4] = {0};
        size_t vlen = 0;
        int has_value = 0;

        p = skip_ows(p, end);
        if (p == end || *p == ',')
            break;
        if (*p != ';')
            goto malformed;
        p = skip_ows(p + 1, end);
        name = p;
        p = scan_token(p, end);
        if (p == name)
            goto malformed;
        struct gw_slice pname = {name, (size_t)(p - name)};
        p = skip_ows(p, end);
        if (p < end && *p == '=') {
            p = skip_ows(p + 1, end);
            if (read_value(&p, end, val, sizeof val, &vlen) != 0)
                goto malformed;
            has_value = 1;
        }
        offer_param(o, pname, has_value, val, vlen);
    }
    *pp = p;
    return 1;
malformed:
    o->bad = 1;
    for (int quoted = 0; p < end; p++) {
        if (quoted && *p == '\\' && p + 1 < end)
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == ',')
            break;
    }
    *pp = p;
    return 1;
}

/* Agrees to the first acceptable permessage-deflate offer among the extension fields. */
static void pmd_negotiate(const struct h1_header *h, size_t n, const struct ws_pmd_conf *conf,
                          struct ws_handshake *out)
{
    /* Outside its documented 9..15 the limit is read as unset (0 and > 15) or clamped. */
    uint8_t max = conf->max_window_bits;
    struct pmd_offer o;

    if (max == 0 || max > 15)
        max = 15;
    else if (max < 9)
        max = 9;
    for (size_t i = 0; i < n; i++) {
        if (!GW_SLICE_EQ_LIT(h[i].name, "sec-websocket-extensions"))
            continue;
        const char *p = h[i].value.p, *end = p + h[i].value.len;
        while (next_offer(&p, end, &o)) {
            uint8_t sbits = o.p.server_max_window_bits < max ? o.p.server_max_window_bits : max;

            /* zlib cannot deflate a raw stream with an 8-bit window (it would use 9, more than
             * agreed): decline such an offer and let a later one win. */
            if (!o.is_pmd || o.bad || sbits < 9)
                continue;
            out->deflate = 1;
            out->pmd.server_max_window_bits = sbits;
            /* Without the parameter in the offer the client cannot be limited (§7.1.2.2). */
            out->pmd.client_max_window_bits = 15;
            if (o.seen & P_CMWB)
                out->pmd.client_max_window_bits =
                    o.p.client_max_window_bits < max ? o.p.client_max_window_bits : max;
            out->pmd.server_no_context_takeover =
                o.p.server_no_context_takeover || conf->no_context_takeover;
            out->pmd.client_no_context_takeover =
                o.p.client_no_context_takeover || conf->no_context_takeover;
            return;
        }
    }
}

int ws_handshake_check(struct gw_slice method, int minor, const struct h1_header *h, size_t n,
                       const struct ws_pmd_conf *pmd_conf, struct ws_handshake *out,
                       const char **why)
{
    int upgrade = 0, connection = 0, origin = 0, version_ok = 0;
    size_t nversion = 0, nkey = 0;

    memset(out, 0, sizeof *out);
    *why = NULL;
    if (method.len != 3 || memcmp(method.p, "GET", 3) != 0)
        return hs_fail(why, "websocket: method is not GET", 400);
    if (minor != 1)
        return hs_fail(why, "websocket: not HTTP/1.1", 400);
    for (size_t i = 0; i < n; i++) {
        struct gw_slice name = h[i].name, v = h[i].value;

        if (GW_SLICE_EQ_LIT(name, "upgrade")) {
            upgrade |= h1_list_has(v, "websocket", 9);
        } else if (GW_SLICE_EQ_LIT(name, "connection")) {
            connection |= h1_list_has(v, "upgrade", 7);
        } else if (GW_SLICE_EQ_LIT(name, "sec-websocket-version")) {
            nversion++;
            version_ok = v.len == 2 && memcmp(v.p, "13", 2) == 0;
        } else if (GW_SLICE_EQ_LIT(name, "sec-websocket-key")) {
            if (nkey++ == 0)
                out->key = v;
        } else if (GW_SLICE_EQ_LIT(name, "origin") && !origin) {
            origin = 1;
            out->origin = v;
        }
    }
    if (!upgrade)
        return hs_fail(why, "websocket: Upgrade without websocket", 400);
    if (!connection)
        return hs_fail(why, "websocket: Connection without upgrade", 400);
    if (nversion != 1 || !version_ok)
        return hs_fail(why, "websocket: Sec-WebSocket-Version is not 13", 426);
    if (nkey != 1)
        return hs_fail(why, "websocket: Sec-WebSocket-Key missing or repeated", 400);
    if (!key_valid(out->key))
        return hs_fail(why, "websocket: Sec-WebSocket-Key is not 16 bytes in base64", 400);
    if (pmd_conf != NULL && pmd_conf->enabled)
        pmd_negotiate(h, n, pmd_conf, out);
    return 0;
}

void ws_accept_key(struct gw_slice key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    /* Only a small allocation can fail here, which the gateway treats as fatal (gw_xmalloc). */
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, key.p, key.len) != 1 ||
        EVP_DigestUpdate(ctx, guid, sizeof guid - 1) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 20)
        abort();
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)out, md, 20);
}

static size_t put(char *out, size_t n, const char *s)
{
    size_t k = strlen(s);

    memcpy(out + n, s, k);
    return n + k;
}

static size_t put_bits(char *out, size_t n, unsigned bits)
{
    if (bits >= 10)
        out[n++] = (char)('0' + bits / 10);
    out[n++] = (char)('0' + bits % 10);
    return n;
}

size_t ws_pmd_response(const struct ws_pmd *pmd, char *out, size_t cap)
{
    char tmp[128];
    size_t n = put(tmp, 0, "permessage-deflate");

    if (pmd->server_no_context_takeover)
        n = put(tmp, n, "; server_no_context_takeover");
    if (pmd->client_no_context_takeover)
        n = put(tmp, n, "; client_no_context_takeover");
    if (pmd->server_max_window_bits < 15)
        n = put_bits(tmp, put(tmp, n, "; server_max_window_bits="), pmd->server_max_window_bits);
    /* Below 15 only when the client offered the parameter (the negotiation's rule). */
    if (pmd->client_max_window_bits < 15)
        n = put_bits(tmp, put(tmp, n, "; client_max_window_bits="), pmd->client_max_window_bits);
    if (n > cap)
        return 0;
    memcpy(out, tmp, n);
    return n;
}

int ws_next_token(struct gw_slice list, size_t *pos, struct gw_slice *tok)
{
    size_t i = *pos, start, end;

    while (i < list.len && (is_ows(list.p[i]) || list.p[i] == ','))
        i++;
    if (i >= list.len) {
        *pos = list.len;
        return 0;
    }
    start = i;
    while (i < list.len && list.p[i] != ',')
        i++;
    end = i;
    while (end > start && is_ows(list.p[end - 1]))
        end--;
    *tok = (struct gw_slice){list.p + start, end - start};
    *pos = i;
    return 1;
}

/* ---- frame input ----------------------------------------------------------------------------- */

/* |in_frame|: reading a frame header, a data frame's payload, or (compressed messages) feeding
 * the 00 00 ff ff that RFC 7692 §7.2.2 appends, |frame_left| then counting its bytes. */
enum { IN_HEADER = 0, IN_PAYLOAD = 1, IN_TAIL = 2 };

/* What one step of ws_in_next() did. */
enum { STEP_AGAIN, STEP_NEED, STEP_EVENT };

static const uint8_t deflate_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* XORs |p[0..n)| with |mask| from |mask[off]| on; returns the offset for the next byte. */
static uint8_t unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned off)
{
    size_t i = 0;

    if (n >= 16) {
        uint8_t k[8];
        uint64_t kw, w;

        for (unsigned j = 0; j < 8; j++)
            k[j] = mask[(off + j) & 3];
        memcpy(&kw, k, sizeof kw);
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, p + i, sizeof w);
            w ^= kw;
            memcpy(p + i, &w, sizeof w);
        }
    }
    for (; i < n; i++)
        p[i] ^= mask[(off + i) & 3];
    return (uint8_t)((off + n) & 3);
}

static void in_zfree(struct ws_in *s)
{
    inflateEnd(s->z); /* NULL-safe, as is free() */
    free(s->z);
    s->z = NULL;
}

static int in_fail(struct ws_in *s, struct ws_in_event *ev, unsigned code, const char *why)
{
    s->closed = 1;
    in_zfree(s);
    ev->type = WS_IN_ERROR;
    ev->code = code;
    ev->why = why;
    return STEP_EVENT;
}

static int inflate_open(struct ws_in *s)
{
    /* zlib cannot deflate a raw stream with an 8-bit window, so zlib-based clients that agreed
     * to 8 send 9-bit distances: a 9-bit window reads both. */
    int bits = s->conf.window_bits == 8 ? 9 : s->conf.window_bits;
    z_stream *z = calloc(1, sizeof *z);

    if (z == NULL)
        return -1;
    if (inflateInit2(z, -bits) != Z_OK) {
        free(z);
        return -1;
    }
    s->z = z;
    return 0;
}

static void msg_end(struct ws_in *s)
{
    if (s->msg_deflate && s->conf.no_context_takeover)
        in_zfree(s); /* an idle connection keeps no window */
    s->in_frame = IN_HEADER;
    s->msg_op = 0;
    s->msg_deflate = 0;
    s->msg_started = 0;
    s->msg_bytes = 0;
    s->utf8 = WS_UTF8_ACCEPT;
}

static int deliver(struct ws_in *s, const uint8_t *p, size_t n, int fin, struct ws_in_event *ev)
{
    if (fin && s->msg_op == WS_OP_TEXT && s->utf8 != WS_UTF8_ACCEPT)
        return in_fail(s, ev, WS_CLOSE_INVALID_DATA, "text message ends inside a character");
    ev->type = WS_IN_DATA;
    ev->data = p;
    ev->len = n;
    ev->flags = (s->msg_op == WS_OP_TEXT ? WS_F_TEXT : 0u) | (s->msg_started ? 0u : WS_F_FIRST) |
                (fin ? WS_F_FIN : 0u);
    s->msg_started = 1;
    if (fin)
        msg_end(s);
    return STEP_EVENT;
}

static int in_control(struct ws_in *s, unsigned op, const uint8_t *p, size_t n,
                      struct ws_in_event *ev)
{
    uint32_t st = WS_UTF8_ACCEPT;
    unsigned code = WS_CLOSE_NO_STATUS;

    if (op == WS_OP_PING || op == WS_OP_PONG) {
        ev->type = op == WS_OP_PING ? WS_IN_PING : WS_IN_PONG;
        ev->data = p;
        ev->len = n;
        return STEP_EVENT;
    }
    /* RFC 6455 §5.5.1: no payload, or a code and a UTF-8 reason. */
    if (n == 1)
        return in_fail(s, ev, WS_CLOSE_PROTOCOL, "close payload of 1 byte");
    if (n >= 2) {
        code = (unsigned)p[0] << 8 | p[1];
        if (!ws_close_code_valid(code))
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "invalid close code");
        if (ws_utf8_feed(&st, p + 2, n - 2) != 0 || st != WS_UTF8_ACCEPT)
            return in_fail(s, ev, WS_CLOSE_INVALID_DATA, "close reason is not UTF-8");
        p += 2;
        n -= 2;
    }
    ev->type = WS_IN_CLOSE;
    ev->code = code;
    ev->data = p;
    ev->len = n;
    s->closed = 1;
    in_zfree(s);
    return STEP_EVENT;
}

/* Reads a frame header at |buf + *pos| (RFC 6455 §5.2): a control frame together with its
 * payload, a data frame's header alone. Faults in the first two bytes are reported before the
 * rest of the header is in. */
static int in_header(struct ws_in *s, uint8_t *buf, size_t len, size_t *pos, struct ws_in_event *ev)
{
    uint8_t *p = buf + *pos;
    size_t n = len - *pos, hl = 6;

    if (n < 2)
        return STEP_NEED;
    unsigned op = p[0] & 0x0f, fin = p[0] >> 7, rsv1 = (p[0] >> 6) & 1;
    uint64_t plen = p[1] & 0x7f;
    int control = op >= WS_OP_CLOSE;

    if (p[0] & 0x30)
        return in_fail(s, ev, WS_CLOSE_PROTOCOL, "RSV2 or RSV3 set");
    if (!(p[1] & 0x80))
        return in_fail(s, ev, WS_CLOSE_PROTOCOL, "client frame not masked"); /* §5.1 */
    if (op > WS_OP_BINARY && op != WS_OP_CLOSE && op != WS_OP_PING && op != WS_OP_PONG)
        return in_fail(s, ev, WS_CLOSE_PROTOCOL, "unknown opcode");
    if (control) {
        if (!fin)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "fragmented control frame");
        if (plen > 125)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "control frame over 125 bytes");
        if (rsv1)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "RSV1 on a control frame");
    } else if (op == WS_OP_CONT) {
        if (!s->msg_op)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "continuation outside a message");
        if (rsv1)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "RSV1 on a continuation frame");
    } else {
        if (s->msg_op)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
        if (rsv1 && !s->conf.deflate)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "RSV1 without permessage-deflate");
    }
    if (plen == 126)
        hl += 2;
    else if (plen == 127)
        hl += 8;
    if (n < hl)
        return STEP_NEED;
    /* Data frame lengths in a longer form than needed are accepted: §5.2 binds the sender,
     * and refusing them would protect nothing, the length itself being checked the same either
     * way. (A control frame with an extended length was refused above: over 125 or not
     * minimal, §5.5.) */
    if (plen == 126) {
        plen = (uint64_t)p[2] << 8 | p[3];
    } else if (plen == 127) {
        plen = 0;
        for (size_t i = 2; i < 10; i++)
            plen = plen << 8 | p[i];
        if (plen >> 63)
            return in_fail(s, ev, WS_CLOSE_PROTOCOL, "64-bit length with the top bit set");
    }
    const uint8_t *mask = p + hl - 4;
    if (control) {
        if (n - hl < plen)
            return STEP_NEED;
        unmask(p + hl, (size_t)plen, mask, 0);
        *pos += hl + (size_t)plen;
        return in_control(s, op, p + hl, (size_t)plen, ev);
    }
    if (op != WS_OP_CONT) {
        s->msg_op = (uint8_t)op;
        s->msg_deflate = (uint8_t)rsv1;
        s->msg_started = 0;
        s->msg_bytes = 0;
        s->utf8 = WS_UTF8_ACCEPT;
    }
    /* Uncompressed, the header says whether the message will be too big: refuse it now. */
    if (!s->msg_deflate && s->conf.max_message != 0 && plen > s->conf.max_message - s->msg_bytes)
        return in_fail(s, ev, WS_CLOSE_TOO_BIG, "message over max_message");
    if (s->msg_deflate && s->z == NULL && inflate_open(s) != 0)
        return in_fail(s, ev, WS_CLOSE_INTERNAL, "out of memory for inflate");
    /* total_in is only zlib's statistic: from 0 at each message, it tells at the end whether
     * the message brought any compressed byte (see in_inflate). */
    if (s->msg_deflate && op != WS_OP_CONT)
        s->z->total_in = 0;
    memcpy(s->mask, mask, 4);
    s->mask_off = 0;
    s->frame_left = plen;
    s->frame_fin = (uint8_t)fin;
    s->in_frame = IN_PAYLOAD;
    *pos += hl;
    return STEP_AGAIN;
}

/* Delivers what is in of an uncompressed data frame's payload. */
static int in_plain(struct ws_in *s, uint8_t *buf, size_t len, size_t *pos, struct ws_in_event *ev)
{
    uint8_t *p = buf + *pos;
    size_t take = len - *pos;
    int fin;

    if (take > s->frame_left)
        take = (size_t)s->frame_left;
    if (take == 0 && s->frame_left != 0)
        return STEP_NEED;
    s->mask_off = unmask(p, take, s->mask, s->mask_off);
    if (s->msg_op == WS_OP_TEXT && ws_utf8_feed(&s->utf8, p, take) != 0)
        return in_fail(s, ev, WS_CLOSE_INVALID_DATA, "text message is not UTF-8");
    s->frame_left -= take;
    s->msg_bytes += take;
    *pos += take;
    fin = s->frame_left == 0 && s->frame_fin;
    if (s->frame_left == 0)
        s->in_frame = IN_HEADER;
    if (take == 0 && !fin)
        return STEP_AGAIN; /* an empty non-final frame: nothing to say */
    return deliver(s, p, take, fin, ev);
}

/* Inflates what is in of a compressed message into |scratch| (RFC 7692 §7.2.2). The output is
 * bounded by |cap| and by what is left of max_message, so a small input that inflates to a lot
 * is refused after at most one scratch buffer more than the limit. */
static int in_inflate(struct ws_in *s, uint8_t *buf, size_t len, size_t *pos, uint8_t *scratch,
                      size_t cap, struct ws_in_event *ev)
{
    z_stream *z = s->z;
    size_t room = cap, out;
    int fin = 0;

    if (s->conf.max_message != 0 && s->conf.max_message - s->msg_bytes < room)
        room = (size_t)(s->conf.max_message - s->msg_bytes) + 1; /* one more shows the excess */
    if (room > UINT_MAX)
        room = UINT_MAX;
    z->next_out = scratch;
    z->avail_out = (uInt)room;
    while (z->avail_out != 0) {
        int tail = s->in_frame == IN_TAIL;
        size_t avail, in;
        uint8_t *p = buf + *pos;

        if (tail) {
            avail = (size_t)s->frame_left;
            z->next_in = deflate_tail + 4 - avail;
        } else {
            avail = len - *pos;
            if (avail > s->frame_left)
                avail = (size_t)s->frame_left;
            /* Unmasked in place, and masked back when inflate does not take it: no more at a
             * time than the output room, which inflate rarely fills with less input. */
            if (avail > z->avail_out)
                avail = z->avail_out;
            unmask(p, avail, s->mask, s->mask_off);
            z->next_in = p;
        }
        z->avail_in = (uInt)avail;
        int rc = inflate(z, Z_SYNC_FLUSH);
        in = avail - z->avail_in;
        if (!tail) {
            unmask(p + in, avail - in, s->mask, (unsigned)((s->mask_off + in) & 3)); /* re-mask */
            s->mask_off = (uint8_t)((s->mask_off + in) & 3);
            *pos += in;
        }
        s->frame_left -= in;
        if (rc == Z_STREAM_END) {
            /* The client ended its stream with a BFINAL block (RFC 7692's examples show one):
             * what follows starts a new stream, and the tail belongs to none. */
            if (inflateReset(z) != Z_OK)
                return in_fail(s, ev, WS_CLOSE_INTERNAL, "inflateReset failed");
            if (tail)
                s->frame_left = 0;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            return in_fail(s, ev, WS_CLOSE_INVALID_DATA, "compressed data does not inflate");
        } else if (in == 0 && avail != 0 && z->avail_out != 0) {
            return in_fail(s, ev, WS_CLOSE_INVALID_DATA, "inflate makes no progress");
        }
        if (!tail && s->frame_left == 0) {
            if (!s->frame_fin) {
                s->in_frame = IN_HEADER;
                break;
            }
            /* The tail completes the empty stored block the client's flush began. With no
             * compressed byte since the message began or its stream ended (BFINAL), there is
             * no such block and the tail would leave the stream inside a bogus one. */
            s->in_frame = IN_TAIL;
            s->frame_left = z->total_in == 0 ? 0 : sizeof deflate_tail;
            continue;
        }
        if (tail) {
            fin = s->frame_left == 0 && z->avail_out != 0;
            break;
        }
        if (avail == 0)
            break;
    }
    out = room - z->avail_out;
    s->msg_bytes += out;
    if (s->conf.max_message != 0 && s->msg_bytes > s->conf.max_message)
        return in_fail(s, ev, WS_CLOSE_TOO_BIG, "message over max_message once inflated");
    if (s->msg_op == WS_OP_TEXT && ws_utf8_feed(&s->utf8, scratch, out) != 0)
        return in_fail(s, ev, WS_CLOSE_INVALID_DATA, "text message is not UTF-8");
    if (out == 0 && !fin)
        return s->in_frame == IN_HEADER ? STEP_AGAIN : STEP_NEED;
    return deliver(s, scratch, out, fin, ev);
}

enum ws_in_type ws_in_next(struct ws_in *s, uint8_t *buf, size_t len, size_t *used,
                           uint8_t *scratch, size_t scratch_cap, struct ws_in_event *ev)
{
    size_t pos = 0;
    int r;

    memset(ev, 0, sizeof *ev);
    *used = 0;
    if (s->closed)
        return WS_IN_NEED;
    do {
        if (s->in_frame == IN_HEADER)
            r = in_header(s, buf, len, &pos, ev);
        else if (s->msg_deflate)
            r = in_inflate(s, buf, len, &pos, scratch, scratch_cap, ev);
        else
            r = in_plain(s, buf, len, &pos, ev);
    } while (r == STEP_AGAIN);
    *used = pos;
    return r == STEP_NEED ? WS_IN_NEED : ev->type;
}

void ws_in_free(struct ws_in *s)
{
    in_zfree(s);
}

/* ---- frame output ---------------------------------------------------------------------------- */

size_t ws_frame_header(uint8_t out[WS_FRAME_HEADER_MAX], unsigned opcode, int fin, int rsv1,
                       uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80u : 0u) | (rsv1 ? 0x40u : 0u) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (unsigned i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t ws_close_payload(uint8_t out[125], unsigned code, const char *reason, size_t reason_len)
{
    const uint8_t *r = (const uint8_t *)reason;
    uint32_t st = WS_UTF8_ACCEPT;
    size_t n = 0;

    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    /* The longest run of whole characters that fits: a cut character (or a stray byte) would
     * make the client fail the connection with 1007 instead of reading the reason. */
    for (size_t i = 0; i < reason_len && i < 123; i++) {
        if (ws_utf8_feed(&st, r + i, 1) != 0)
            break;
        if (st == WS_UTF8_ACCEPT)
            n = i + 1;
    }
    if (n != 0) /* |reason| may be NULL when empty */
        memcpy(out + 2, reason, n);
    return 2 + n;
}

static int deflate_open(struct ws_out *o)
{
    /* zlib refuses a raw 8-bit window; the negotiation never agrees to 8 for this reason. */
    int bits = o->window_bits == 8 ? 9 : o->window_bits;
    z_stream *z = calloc(1, sizeof *z);

    if (z == NULL)
        return -1;
    if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(z);
        return -1;
    }
    o->z = z;
    return 0;
}

int ws_out_deflate(struct ws_out *o, const uint8_t *in, size_t in_len, int fin, uint8_t *out,
                   size_t cap, size_t *in_used, size_t *out_len)
{
    size_t give = in_len < UINT_MAX ? in_len : UINT_MAX;
    size_t room = cap - o->nhold < UINT_MAX ? cap - o->nhold : UINT_MAX;
    size_t total;
    z_stream *z;

    *in_used = *out_len = 0;
    if (o->z == NULL && deflate_open(o) != 0)
        return -1;
    z = o->z;
    /* The bytes held back last time come first. */
    memcpy(out, o->hold, o->nhold);
    z->next_in = in;
    z->avail_in = (uInt)give;
    z->next_out = out + o->nhold;
    z->avail_out = (uInt)room;
    int flush = fin && give == in_len ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    int rc = deflate(z, flush);
    if (rc != Z_OK && rc != Z_BUF_ERROR)
        return -1;
    *in_used = give - z->avail_in;
    total = (size_t)(z->next_out - out);
    if (flush == Z_SYNC_FLUSH && z->avail_in == 0 && z->avail_out != 0) {
        /* The flush is complete (zlib's rule: output space was left over). §7.2.1: drop the
         * 00 00 ff ff it ended with. zlib writes nothing for a second flush with no input in
         * between (an empty message after another): 0x00 is the empty message then. */
        if (total >= 4 && memcmp(out + total - 4, deflate_tail, 4) == 0)
            total -= 4;
        if (total == 0)
            out[total++] = 0x00;
        o->nhold = 0;
        if (o->no_context_takeover && deflateReset(z) != Z_OK)
            return -1;
        *out_len = total;
        return 1;
    }
    /* Hold back the last 4 bytes: they may be the tail to drop. */
    o->nhold = (uint8_t)(total < 4 ? total : 4);
    memcpy(o->hold, out + total - o->nhold, o->nhold);
    *out_len = total - o->nhold;
    return 0;
}

void ws_out_free(struct ws_out *o)
{
    deflateEnd(o->z); /* NULL-safe, as is free() */
    free(o->z);
    o->z = NULL;
}
