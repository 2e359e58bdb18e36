/* SPDX-License-Identifier: MIT */
/* The ASGI codec's tls block (PROTOCOL.md §4.1, TLS capability): encoded after the scope of
 * HTTP_REQUEST and after the subprotocols of WS_CONNECT, decoded only when negotiated. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "adapters/asgi/asgi_codec.h"

#define S(lit) {(lit), sizeof(lit) - 1}
#define SCOPE S("1.1"), S("GET"), S("https"), S("/"), S("/"), S(""), S(""), S(""), 0, S(""), 0

static const struct asgi_tls tls_alice = {1, 1, 0x0304, 0x1301, S("O=Example,CN=alice"), S(""),
                                          S("-----BEGIN CERTIFICATE-----\n")};

Test(asgi_tls, http_request_round_trip_and_layout)
{
    struct asgi_http_request q = {SCOPE, NULL, 0, tls_alice}, out;
    static const uint8_t tail[] = "\x01\x03\x04\x13\x01\x00\x12O=Example,CN=alice\x00\x00"
                                  "\x00\x1c-----BEGIN CERTIFICATE-----\n";
    uint8_t buf[512];
    int n = asgi_encode_http_request(buf, sizeof buf, 16384, ASGI_F_END, 1, &q);
    size_t plen;

    cr_assert_gt(n, 0);
    plen = (size_t)n - ASGI_FRAME_HDR_LEN;
    cr_assert(memcmp(buf + n - (sizeof tail - 1), tail, sizeof tail - 1) == 0);
    cr_assert_eq(asgi_decode_http_request(buf + ASGI_FRAME_HDR_LEN, plen, &out, NULL, 0, 1),
                 ASGI_OK);
    cr_expect_eq(out.tls.block, 1);
    cr_expect_eq(out.tls.present, 1);
    cr_expect_eq(out.tls.version, 0x0304);
    cr_expect_eq(out.tls.cipher_suite, 0x1301);
    cr_expect_eq(out.tls.client_cert_name.len, 18);
    cr_expect(memcmp(out.tls.client_cert_name.p, "O=Example,CN=alice", 18) == 0);
    cr_expect_eq(out.tls.client_cert_error.len, 0);
    cr_expect_eq(out.tls.client_cert.len, 28);
    /* Without the capability the block is trailing bytes. */
    cr_expect_eq(asgi_decode_http_request(buf + ASGI_FRAME_HDR_LEN, plen, &out, NULL, 0, 0),
                 ASGI_E_FRAME_SIZE);
    /* Every truncation is refused. */
    for (size_t cut = plen - sizeof tail + 1; cut < plen; cut++)
        cr_expect_eq(asgi_decode_http_request(buf + ASGI_FRAME_HDR_LEN, cut, &out, NULL, 0, 1),
                     ASGI_E_FRAME_SIZE, "cut=%zu", cut);
}

Test(asgi_tls, cleartext_is_one_byte_and_no_block_is_none)
{
    struct asgi_http_request q = {SCOPE, NULL, 0, {1, 0, 0, 0, {0}, {0}, {0}}}, out;
    uint8_t a[256], b[256];
    int na = asgi_encode_http_request(a, sizeof a, 16384, 0, 1, &q), nb;

    q.tls.block = 0;
    nb = asgi_encode_http_request(b, sizeof b, 16384, 0, 1, &q);
    cr_assert_eq(na, nb + 1);
    cr_expect_eq(a[na - 1], 0);
    cr_expect_eq(asgi_decode_http_request(a + ASGI_FRAME_HDR_LEN, (size_t)na - 9, &out, NULL, 0,
                                          1),
                 ASGI_OK);
    cr_expect_eq(out.tls.block, 1);
    cr_expect_eq(out.tls.present, 0);
    cr_expect_eq(asgi_decode_http_request(b + ASGI_FRAME_HDR_LEN, (size_t)nb - 9, &out, NULL, 0,
                                          1),
                 ASGI_E_FRAME_SIZE); /* the block is required with the capability */
}

Test(asgi_tls, ws_connect_block_after_subprotocols)
{
    struct asgi_str subs[1] = {S("chat")}, dsubs[2];
    struct asgi_ws_connect w = {{SCOPE, NULL, 0, tls_alice}, subs, 1}, out;
    uint8_t buf[512];
    int n = asgi_encode_ws_connect(buf, sizeof buf, 16384, 0, 3, &w);

    cr_assert_gt(n, 0);
    cr_assert_eq(asgi_decode_ws_connect(buf + ASGI_FRAME_HDR_LEN, (size_t)n - 9, &out, NULL, 0,
                                        dsubs, 2, 1),
                 ASGI_OK);
    cr_expect_eq(out.n_subprotocols, 1);
    cr_expect_eq(out.scope.tls.present, 1);
    cr_expect_eq(out.scope.tls.version, 0x0304);
}
