/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the ASGI codec: the input is a stream of frames; every payload that
 * decodes must re-encode to the same bytes and decode again to the same fields, every shorter
 * payload of a fixed layout must be refused, and a small list array must agree with a big one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/asgi/asgi_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* A u16 count holds at most 65535 entries: with these arrays no decode says TOO_MANY. */
#define ALL ASGI_STR16_MAX
#define FEW 4

struct frame {
    struct asgi_frame_header h;
    union {
        struct asgi_hello hello;
        struct asgi_http_request req;
        struct asgi_ws_connect wsc;
        struct asgi_http_response resp;
        struct asgi_trailers trailers;
        struct asgi_pathsend pathsend;
        struct asgi_close close;
        struct asgi_ws_accept accept;
        struct asgi_credit credit;
        struct asgi_ping ping;
        struct asgi_reset reset;
        struct asgi_goaway goaway;
        struct asgi_str raw;
    } u;
};

static struct asgi_header headers[2][ALL];
static struct asgi_str subs[2][ALL];
static struct asgi_header few_headers[FEW];
static struct asgi_str few_subs[FEW];
static uint8_t out[ASGI_FRAME_MAX_BYTES];

static int decode_payload(struct frame *f, const uint8_t *p, size_t len, struct asgi_header *hs,
                          size_t max_h, struct asgi_str *ss, size_t max_s)
{
    switch (f->h.type) {
    case ASGI_HELLO:
        return asgi_decode_hello(p, len, &f->u.hello);
    case ASGI_HTTP_REQUEST:
        return asgi_decode_http_request(p, len, &f->u.req, hs, max_h, 0);
    case ASGI_HTTP_RESPONSE:
        return asgi_decode_http_response(p, len, &f->u.resp, hs, max_h);
    case ASGI_TRAILERS:
        return asgi_decode_trailers(p, len, &f->u.trailers, hs, max_h);
    case ASGI_PATHSEND:
        return asgi_decode_pathsend(p, len, &f->u.pathsend);
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        return asgi_decode_close(p, len, &f->u.close);
    case ASGI_WS_CONNECT:
        return asgi_decode_ws_connect(p, len, &f->u.wsc, hs, max_h, ss, max_s, 0);
    case ASGI_WS_ACCEPT:
        return asgi_decode_ws_accept(p, len, &f->u.accept, hs, max_h);
    case ASGI_CREDIT:
        return asgi_decode_credit(p, len, &f->u.credit);
    case ASGI_PING:
        return asgi_decode_ping(p, len, &f->u.ping);
    case ASGI_RESET:
        return asgi_decode_reset(p, len, &f->u.reset);
    case ASGI_GOAWAY:
        return asgi_decode_goaway(p, len, &f->u.goaway);
    default:
        return asgi_decode_raw(p, len, &f->u.raw);
    }
}

static int encode_frame(uint8_t *o, size_t cap, size_t max_frame, const struct frame *f)
{
    uint8_t fl = f->h.flags;
    uint32_t st = f->h.stream;

    switch (f->h.type) {
    case ASGI_HELLO:
        return asgi_encode_hello(o, cap, max_frame, fl, st, &f->u.hello);
    case ASGI_HTTP_REQUEST:
        return asgi_encode_http_request(o, cap, max_frame, fl, st, &f->u.req);
    case ASGI_HTTP_RESPONSE:
        return asgi_encode_http_response(o, cap, max_frame, fl, st, &f->u.resp);
    case ASGI_TRAILERS:
        return asgi_encode_trailers(o, cap, max_frame, fl, st, &f->u.trailers);
    case ASGI_PATHSEND:
        return asgi_encode_pathsend(o, cap, max_frame, fl, st, &f->u.pathsend);
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        return asgi_encode_close(o, cap, max_frame, f->h.type, fl, st, &f->u.close);
    case ASGI_WS_CONNECT:
        return asgi_encode_ws_connect(o, cap, max_frame, fl, st, &f->u.wsc);
    case ASGI_WS_ACCEPT:
        return asgi_encode_ws_accept(o, cap, max_frame, fl, st, &f->u.accept);
    case ASGI_CREDIT:
        return asgi_encode_credit(o, cap, max_frame, fl, st, &f->u.credit);
    case ASGI_PING:
        return asgi_encode_ping(o, cap, max_frame, fl, st, &f->u.ping);
    case ASGI_RESET:
        return asgi_encode_reset(o, cap, max_frame, fl, st, &f->u.reset);
    case ASGI_GOAWAY:
        return asgi_encode_goaway(o, cap, max_frame, fl, st, &f->u.goaway);
    default:
        return asgi_encode_raw(o, cap, max_frame, f->h.type, fl, st, &f->u.raw);
    }
}

/* |s| lies inside |p[0..len)|. */
static void check_slice(const struct asgi_str *s, const uint8_t *p, size_t len)
{
    const uint8_t *q = (const uint8_t *)s->p;

    CHECK(s->len <= len);
    if (s->len != 0)
        CHECK(q >= p && (size_t)(q - p) <= len - s->len);
}

static int str_eq(const struct asgi_str *a, const struct asgi_str *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static int headers_eq(const struct asgi_header *a, size_t na, const struct asgi_header *b,
                      size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(&a[i].name, &b[i].name) || !str_eq(&a[i].value, &b[i].value))
            return 0;
    return 1;
}

static int scope_eq(const struct asgi_http_request *a, const struct asgi_http_request *b)
{
    return str_eq(&a->http_version, &b->http_version) && str_eq(&a->method, &b->method) &&
           str_eq(&a->scheme, &b->scheme) && str_eq(&a->path, &b->path) &&
           str_eq(&a->raw_path, &b->raw_path) && str_eq(&a->query_string, &b->query_string) &&
           str_eq(&a->root_path, &b->root_path) && str_eq(&a->client_host, &b->client_host) &&
           a->client_port == b->client_port && str_eq(&a->server_host, &b->server_host) &&
           a->server_port == b->server_port &&
           headers_eq(a->headers, a->n_headers, b->headers, b->n_headers);
}

static int frame_eq(const struct frame *a, const struct frame *b)
{
    if (a->h.type != b->h.type || a->h.flags != b->h.flags || a->h.stream != b->h.stream ||
        a->h.length != b->h.length)
        return 0;
    switch (a->h.type) {
    case ASGI_HELLO:
        return a->u.hello.version == b->u.hello.version &&
               a->u.hello.max_frame == b->u.hello.max_frame &&
               a->u.hello.max_streams == b->u.hello.max_streams &&
               a->u.hello.initial_credit == b->u.hello.initial_credit &&
               a->u.hello.capabilities == b->u.hello.capabilities;
    case ASGI_HTTP_REQUEST:
        return scope_eq(&a->u.req, &b->u.req);
    case ASGI_HTTP_RESPONSE:
        return a->u.resp.status == b->u.resp.status &&
               headers_eq(a->u.resp.headers, a->u.resp.n_headers, b->u.resp.headers,
                          b->u.resp.n_headers);
    case ASGI_TRAILERS:
        return headers_eq(a->u.trailers.headers, a->u.trailers.n_headers, b->u.trailers.headers,
                          b->u.trailers.n_headers);
    case ASGI_PATHSEND:
        return str_eq(&a->u.pathsend.path, &b->u.pathsend.path);
    case ASGI_DISCONNECT:
    case ASGI_WS_CLOSE:
        return a->u.close.code == b->u.close.code && str_eq(&a->u.close.reason, &b->u.close.reason);
    case ASGI_WS_CONNECT:
        if (!scope_eq(&a->u.wsc.scope, &b->u.wsc.scope) ||
            a->u.wsc.n_subprotocols != b->u.wsc.n_subprotocols)
            return 0;
        for (size_t i = 0; i < a->u.wsc.n_subprotocols; i++)
            if (!str_eq(&a->u.wsc.subprotocols[i], &b->u.wsc.subprotocols[i]))
                return 0;
        return 1;
    case ASGI_WS_ACCEPT:
        return str_eq(&a->u.accept.subprotocol, &b->u.accept.subprotocol) &&
               headers_eq(a->u.accept.headers, a->u.accept.n_headers, b->u.accept.headers,
                          b->u.accept.n_headers);
    case ASGI_CREDIT:
        return a->u.credit.increment == b->u.credit.increment;
    case ASGI_PING:
        return memcmp(a->u.ping.opaque, b->u.ping.opaque, ASGI_PING_LEN) == 0;
    case ASGI_RESET:
        return a->u.reset.error == b->u.reset.error;
    case ASGI_GOAWAY:
        return a->u.goaway.last_stream == b->u.goaway.last_stream &&
               a->u.goaway.error == b->u.goaway.error &&
               str_eq(&a->u.goaway.debug, &b->u.goaway.debug);
    default:
        return str_eq(&a->u.raw, &b->u.raw);
    }
}

/* The number of headers and subprotocols a decoded frame holds. */
static void list_sizes(const struct frame *f, size_t *nh, size_t *ns)
{
    *nh = *ns = 0;
    switch (f->h.type) {
    case ASGI_HTTP_REQUEST:
        *nh = f->u.req.n_headers;
        break;
    case ASGI_WS_CONNECT:
        *nh = f->u.wsc.scope.n_headers;
        *ns = f->u.wsc.n_subprotocols;
        break;
    case ASGI_HTTP_RESPONSE:
        *nh = f->u.resp.n_headers;
        break;
    case ASGI_TRAILERS:
        *nh = f->u.trailers.n_headers;
        break;
    case ASGI_WS_ACCEPT:
        *nh = f->u.accept.n_headers;
        break;
    default:
        break;
    }
}

static int is_raw(uint8_t type)
{
    return type == ASGI_DATA || type == ASGI_WS_MESSAGE || type > ASGI_TYPE_LAST;
}

static void check_frame(const uint8_t *frame, const struct asgi_frame_header *h)
{
    const uint8_t *p = frame + ASGI_FRAME_HDR_LEN;
    struct frame f, g, small;
    struct asgi_frame_header h2;
    size_t nh, ns;
    int rc, n, rc_small;

    memset(&f, 0, sizeof f);
    f.h = *h;
    g = small = f;
    rc = decode_payload(&f, p, h->length, headers[0], ALL, subs[0], ALL);
    CHECK(rc == ASGI_OK || rc == ASGI_E_FRAME_SIZE || (rc == ASGI_E_PROTOCOL && h->type == 0));
    CHECK(rc == ASGI_OK || !is_raw(h->type));

    /* A small array says TOO_MANY exactly when a list does not fit it. */
    rc_small = decode_payload(&small, p, h->length, few_headers, FEW, few_subs, FEW);
    if (rc != ASGI_OK) {
        CHECK(rc_small == rc || rc_small == ASGI_E_TOO_MANY);
        return;
    }
    list_sizes(&f, &nh, &ns);
    if (nh <= FEW && ns <= FEW)
        CHECK(rc_small == ASGI_OK && frame_eq(&small, &f));
    else
        CHECK(rc_small == ASGI_E_TOO_MANY);

    if (h->type == ASGI_HTTP_REQUEST || h->type == ASGI_WS_CONNECT) {
        const struct asgi_http_request *q = h->type == ASGI_WS_CONNECT ? &f.u.wsc.scope : &f.u.req;

        check_slice(&q->path, p, h->length);
        check_slice(&q->server_host, p, h->length);
        for (size_t i = 0; i < q->n_headers; i++) {
            check_slice(&q->headers[i].name, p, h->length);
            check_slice(&q->headers[i].value, p, h->length);
        }
    }

    /* Re-encoding gives back the frame, R bit aside (it is sent as 0). */
    n = encode_frame(out, sizeof out, h->length, &f);
    CHECK(n >= 0 && (size_t)n == ASGI_FRAME_HDR_LEN + h->length);
    CHECK(memcmp(out, frame, 5) == 0 && out[5] == (frame[5] & 0x7f));
    CHECK(memcmp(out + 6, frame + 6, (size_t)n - 6) == 0);
    /* One byte short of room, or of max_frame, is refused. */
    CHECK(encode_frame(out, (size_t)n - 1, h->length, &f) == ASGI_E_NOSPACE);
    if (h->length > 0)
        CHECK(encode_frame(out, sizeof out, h->length - 1, &f) == ASGI_E_FRAME_SIZE);

    /* And decoding the re-encoded frame gives the same fields. */
    CHECK(asgi_frame_header_decode(out, (size_t)n, h->length, &h2) == ASGI_OK);
    g.h = h2;
    CHECK(decode_payload(&g, out + ASGI_FRAME_HDR_LEN, h2.length, headers[1], ALL, subs[1], ALL) ==
          ASGI_OK);
    CHECK(frame_eq(&f, &g));

    /* Every shorter payload of a fixed layout is malformed (small payloads, to stay fast). */
    if (!is_raw(h->type) && h->length <= 128)
        for (size_t cut = 0; cut < h->length; cut++)
            CHECK(decode_payload(&g, out + ASGI_FRAME_HDR_LEN, cut, headers[1], ALL, subs[1],
                                 ALL) == ASGI_E_FRAME_SIZE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    while (off < size) {
        struct asgi_frame_header h, hl;
        int rc = asgi_frame_header_decode(data + off, size - off, ASGI_MAX_LEN, &h);

        CHECK(rc == ASGI_OK || rc == ASGI_INCOMPLETE);
        if (rc == ASGI_INCOMPLETE) {
            CHECK(size - off < ASGI_FRAME_HDR_LEN);
            break;
        }
        CHECK(h.stream <= ASGI_STREAM_MAX);
        /* A smaller max_frame refuses exactly the longer frames. */
        rc = asgi_frame_header_decode(data + off, size - off, ASGI_DEFAULT_MAX_FRAME, &hl);
        CHECK(h.length > ASGI_DEFAULT_MAX_FRAME ? rc == ASGI_E_FRAME_SIZE : rc == ASGI_OK);
        rc = asgi_frame_header_decode(data + off, size - off, 16, &hl);
        CHECK(h.length > 16 ? rc == ASGI_E_FRAME_SIZE : rc == ASGI_OK);
        if (size - off - ASGI_FRAME_HDR_LEN < h.length)
            break; /* the glue would wait for more bytes */
        check_frame(data + off, &h);
        off += ASGI_FRAME_HDR_LEN + h.length; /* unknown types too: skipped */
    }
    return 0;
}
