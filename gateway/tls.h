/* SPDX-License-Identifier: MIT */
/* TLS termination: SSL_CTX building per listener (certificates chosen by SNI, client
 * verification, session cache and tickets whose keys outlive reloads), the ALPN selector, and
 * what a finished handshake tells the exchanges about the client. */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct ssl_st;

/* What exchanges see of a TLS client, computed once when the handshake finishes. One
 * allocation (strings after the struct), owned by the connection; NULL on a cleartext one. */
struct gw_tls_info {
    uint16_t version;        /* wire version: 0x0303 TLS 1.2, 0x0304 TLS 1.3 */
    uint16_t cipher_id;      /* IANA cipher suite id (0x1301 TLS_AES_128_GCM_SHA256) */
    const char *protocol;    /* "TLSv1.2", "TLSv1.3" (OpenSSL's static names) */
    const char *cipher;      /* OpenSSL's name ("TLS_AES_128_GCM_SHA256"), static */
    const char *verify;      /* mod_ssl's SSL_CLIENT_VERIFY: "SUCCESS", "FAILED:<reason>" or
                                "NONE" (no certificate) */
    const char *verify_error; /* NULL, or the reason a presented certificate failed */
    /* The client certificate's facts; NULL (len 0) when none was presented. DNs are RFC 4514
     * strings ("CN=alice,O=Example"), the serial upper-case hex. */
    const char *s_dn, *i_dn, *serial, *cert_pem;
    size_t cert_pem_len;
};

/* Builds the SSL contexts of every TLS listener of |cfg| (main thread, before the snapshot
 * is shared): reads the certificate, key and CA files, and stores each in lc->tls->ctx, freed
 * with the snapshot. Session ticket keys are the process's, so tickets issued before a reload
 * still resume after it, where the listener's certificates and client verification (mode and
 * CAs) are unchanged: the session id context covers them. Returns 0, or GW_E_CONFIG with
 * "file:line:column: listen[i].tls...: cannot load PATH: reason" in |err| (nothing is kept
 * built then). Expired certificates load, with a warning. */
int gw_tls_load(struct gw_config *cfg, char *err, size_t errlen);

/* A new server SSL for a connection accepted on |lc| (lc->tls->ctx built), which holds its
 * own reference to the context, so it outlives a reload. NULL when out of memory. */
struct ssl_st *gw_tls_new_ssl(const struct gw_listen_conf *lc);

/* 1 when the finished handshake of |ssl| selected "h2" by ALPN. */
int gw_tls_alpn_h2(const struct ssl_st *ssl);

/* Computes the gw_tls_info of the finished handshake of |ssl| (owned by the caller: free()). */
struct gw_tls_info *gw_tls_info_new(struct ssl_st *ssl);

/* Drains this thread's OpenSSL error queue into |buf| (the last reason, e.g. "wrong version
 * number"), or |fallback| when it is empty. Returns |buf|. */
const char *gw_tls_error(char *buf, size_t len, const char *fallback);

#endif
