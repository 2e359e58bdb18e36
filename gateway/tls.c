/* SPDX-License-Identifier: MIT */
/* TLS contexts per listener: certificates by SNI, ALPN, client verification, sessions. */
#include "gateway/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "gateway/log.h"
#include "gateway/util.h"

/* Mozilla "intermediate" (v5.7) for TLS 1.2; TLS 1.3 keeps OpenSSL's suites. */
#define TLS12_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                             \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                             \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                             \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

/* The SSL_CTX_set_tlsext_ticket_keys() layout: name (16), HMAC secret (32), AES key (32). */
#define TICKET_KEYS_LEN 80

struct tls_cert {
    X509 *x;
    EVP_PKEY *key;
    STACK_OF(X509) *chain; /* the rest of the chain file */
    char **names;          /* DNS names of the SAN (or the CN without one), lower case */
    size_t nnames;
};

/* lc->tls->ctx. Lives as long as the snapshot, which every connection accepted under it holds
 * through its handshake (the only time the callbacks below run). */
struct tls_state {
    SSL_CTX *ctx;
    struct tls_cert *certs;
    size_t ncerts;
    int h2; /* ALPN may select "h2" */
};

/* One key for the process's life (made on the main thread at the first load), so a ticket
 * issued before a reload resumes after it. Not rotated. */
static unsigned char ticket_keys[TICKET_KEYS_LEN];
static int ticket_keys_made;

const char *gw_tls_error(char *buf, size_t len, const char *fallback)
{
    unsigned long e, last = 0;
    const char *r;

    while ((e = ERR_get_error()) != 0)
        last = e;
    if (last == 0) {
        snprintf(buf, len, "%s", fallback);
        return buf;
    }
    r = ERR_reason_error_string(last);
    if (r != NULL)
        snprintf(buf, len, "%s", r);
    else
        ERR_error_string_n(last, buf, len);
    return buf;
}

static void cert_free(struct tls_cert *c)
{
    X509_free(c->x);
    EVP_PKEY_free(c->key);
    sk_X509_pop_free(c->chain, X509_free);
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c->names);
}

static void state_free(void *p)
{
    struct tls_state *t = p;

    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    for (size_t i = 0; i < t->ncerts; i++)
        cert_free(&t->certs[i]);
    free(t->certs);
    free(t);
}

static void add_name(struct tls_cert *c, const unsigned char *s, size_t n)
{
    char *p;

    if (n == 0 || memchr(s, '\0', n) != NULL)
        return;
    p = gw_xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    p[n] = '\0';
    c->names = realloc(c->names, (c->nnames + 1) * sizeof *c->names);
    if (c->names == NULL) {
        gw_log_error("out of memory");
        abort();
    }
    c->names[c->nnames++] = p;
}

/* The names SNI matches against: the SAN's DNS names, or the CN when there is no SAN. */
static void collect_names(struct tls_cert *c)
{
    GENERAL_NAMES *san = X509_get_ext_d2i(c->x, NID_subject_alt_name, NULL, NULL);
    X509_NAME *subj;
    int i;

    if (san != NULL) {
        for (i = 0; i < sk_GENERAL_NAME_num(san); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
            if (g->type == GEN_DNS)
                add_name(c, ASN1_STRING_get0_data(g->d.dNSName),
                         (size_t)ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(san);
        if (c->nnames > 0)
            return;
    }
    subj = X509_get_subject_name(c->x);
    i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i >= 0) {
        const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
        add_name(c, ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn));
    }
}

/* Reads the chain file and key of |cc| into |c|. On failure writes the message (at the file
 * that failed) into |err| and returns -1. */
static int load_cert(const struct gw_config *cfg, const char *where,
                     const struct gw_tls_cert_conf *cc, struct tls_cert *c, char *err,
                     size_t errlen)
{
    const struct gw_tls_file *bad = &cc->cert;
    const char *what = "cert";
    char reason[256];
    FILE *f;
    X509 *x;

    ERR_clear_error();
    f = fopen(cc->cert.path, "r");
    if (f == NULL) {
        snprintf(reason, sizeof reason, "%s", strerror(errno));
        goto fail;
    }
    c->x = PEM_read_X509_AUX(f, NULL, NULL, NULL);
    if (c->x == NULL) {
        fclose(f);
        gw_tls_error(reason, sizeof reason, "no PEM certificate in the file");
        goto fail;
    }
    c->chain = sk_X509_new_null();
    while (c->chain != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        sk_X509_push(c->chain, x);
    fclose(f);
    ERR_clear_error(); /* the end of the file reads as "no start line" */
    bad = &cc->key;
    what = "key";
    f = fopen(cc->key.path, "r");
    if (f == NULL) {
        snprintf(reason, sizeof reason, "%s", strerror(errno));
        goto fail;
    }
    c->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (c->key == NULL) {
        gw_tls_error(reason, sizeof reason, "no PEM private key in the file");
        goto fail;
    }
    if (X509_check_private_key(c->x, c->key) != 1) {
        ERR_clear_error();
        snprintf(reason, sizeof reason, "the key does not match the certificate %s",
                 cc->cert.path);
        goto fail;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(c->x)) < 0)
        gw_log_warn("%s.cert: certificate %s has expired", where, cc->cert.path);
    collect_names(c);
    return 0;
fail:
    snprintf(err, errlen, "%s:%zu:%zu: %s.%s: cannot load %s: %s", cfg->file, bad->line,
             bad->col, where, what, bad->path, reason);
    return -1;
}

static int pick_cert(const struct tls_state *t, const char *name)
{
    size_t n = strlen(name);
    const char *dot = strchr(name, '.');

    for (size_t i = 0; i < t->ncerts; i++)
        for (size_t j = 0; j < t->certs[i].nnames; j++)
            if (strcasecmp(t->certs[i].names[j], name) == 0)
                return (int)i;
    /* "*.example.com" covers exactly one label: "a.example.com", not "example.com". */
    if (dot == NULL || dot == name)
        return 0;
    for (size_t i = 0; i < t->ncerts; i++)
        for (size_t j = 0; j < t->certs[i].nnames; j++) {
            const char *w = t->certs[i].names[j];
            if (w[0] == '*' && w[1] == '.' && strcasecmp(w + 1, dot) == 0 && n > 0)
                return (int)i;
        }
    return 0;
}

/* After the ClientHello (the SNI name is known): another certificate than the default. */
static int on_cert(SSL *ssl, void *arg)
{
    const struct tls_state *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct tls_cert *c;
    int i;

    if (name == NULL || t->ncerts < 2 || (i = pick_cert(t, name)) == 0)
        return 1;
    c = &t->certs[i];
    return SSL_use_cert_and_key(ssl, c->x, c->key, c->chain, 1) == 1;
}

/* "h2" when the listener allows it and the client offers it, else "http/1.1"; a client that
 * offers neither gets no ALPN and HTTP/1.1 (as nginx). Written out: the nghttp2 1.52 helper
 * needs a const-discarding cast. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct tls_state *t = arg;
    const unsigned char *h11 = NULL;

    (void)ssl;
    for (unsigned int i = 0; i < inlen; i += 1u + in[i]) {
        unsigned int n = in[i];
        const unsigned char *p = in + i + 1;

        if (i + 1u + n > inlen)
            break;
        if (t->h2 && n == 2 && memcmp(p, "h2", 2) == 0) {
            *out = p;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
            h11 = p;
    }
    if (h11 == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    *out = h11;
    *outlen = 8;
    return SSL_TLSEXT_ERR_OK;
}

/* client_verify: optional: the handshake goes on whatever the certificate; the exchange
 * reports FAILED:<reason> (mod_ssl's optional_no_ca). */
static int on_verify_optional(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

static int digest_x509(EVP_MD_CTX *md, const X509 *x)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    return X509_digest(x, EVP_sha256(), d, &n) == 1 && EVP_DigestUpdate(md, d, n) == 1 ? 0 : -1;
}

/* The session id context: a session (by id or ticket, whose keys outlive reloads) resumes
 * only where everything that authenticated it is unchanged, as nginx's
 * ngx_ssl_session_id_context(): the listener, the certificates, the client_verify mode and
 * the client CAs (each loaded certificate's digest, in the store's sorted order). A reload
 * that adds or rotates client_ca, or turns optional into require, refuses older sessions (a
 * full handshake follows). SHA-256: 32 bytes, SSL_MAX_SID_CTX_LENGTH. Called after
 * everything is loaded into |ctx|. */
static int session_id_context(SSL_CTX *ctx, const struct gw_listen_conf *lc,
                              const struct tls_state *t, unsigned char *sid,
                              unsigned int *sidlen)
{
    const struct gw_tls_conf *tc = lc->tls;
    unsigned char mode = (unsigned char)(tc->client_ca.path != NULL ? tc->client_verify
                                                                    : GW_TLS_VERIFY_NONE);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = -1;

    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, lc->address, strlen(lc->address) + 1) != 1 ||
        EVP_DigestUpdate(md, &mode, 1) != 1)
        goto done;
    for (size_t i = 0; i < t->ncerts; i++)
        if (digest_x509(md, t->certs[i].x) != 0)
            goto done;
    if (tc->client_ca.path != NULL) {
        STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));

        for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
            const X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

            if (x != NULL && digest_x509(md, x) != 0)
                goto done;
        }
    }
    if (EVP_DigestFinal_ex(md, sid, sidlen) == 1 && *sidlen <= SSL_MAX_SID_CTX_LENGTH)
        rc = 0;
done:
    EVP_MD_CTX_free(md);
    return rc;
}

static int build(const struct gw_config *cfg, size_t li, struct tls_state **out, char *err,
                 size_t errlen)
{
    const struct gw_listen_conf *lc = &cfg->listen[li];
    const struct gw_tls_conf *tc = lc->tls;
    struct tls_state *t = gw_xcalloc(1, sizeof *t);
    unsigned char sid[EVP_MAX_MD_SIZE];
    unsigned int sidlen = 0;
    char where[96], reason[256];
    SSL_CTX *ctx;

    t->h2 = lc->http2 != GW_H2_OFF;
    t->certs = gw_xcalloc(tc->ncerts, sizeof *t->certs);
    for (size_t i = 0; i < tc->ncerts; i++) {
        t->ncerts++;
        snprintf(where, sizeof where, "listen[%zu].tls.certificates[%zu]", li, i);
        if (load_cert(cfg, where, &tc->certs[i], &t->certs[i], err, errlen) != 0)
            goto fail;
    }
    ERR_clear_error();
    ctx = t->ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_use_cert_and_key(ctx, t->certs[0].x, t->certs[0].key, t->certs[0].chain, 1) !=
            1)
        goto fail_ssl;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_cert_cb(ctx, on_cert, t);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, t);
    /* One cache per listener, shared by every worker (OpenSSL locks it). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    if (tc->session_tickets) {
        if (SSL_CTX_set_tlsext_ticket_keys(ctx, ticket_keys, sizeof ticket_keys) != 1)
            goto fail_ssl;
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    if (tc->client_ca.path != NULL) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(tc->client_ca.path);

        if (names == NULL || SSL_CTX_load_verify_file(ctx, tc->client_ca.path) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            if (access(tc->client_ca.path, R_OK) != 0)
                snprintf(reason, sizeof reason, "%s", strerror(errno));
            else
                gw_tls_error(reason, sizeof reason, "no PEM certificate in the file");
            snprintf(err, errlen, "%s:%zu:%zu: listen[%zu].tls.client_ca: cannot load %s: %s",
                     cfg->file, tc->client_ca.line, tc->client_ca.col, li, tc->client_ca.path,
                     reason);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        if (tc->client_verify == GW_TLS_VERIFY_OPTIONAL)
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify_optional);
        else
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (session_id_context(ctx, lc, t, sid, &sidlen) != 0 ||
        SSL_CTX_set_session_id_context(ctx, sid, sidlen) != 1)
        goto fail_ssl;
    *out = t;
    return 0;
fail_ssl:
    snprintf(err, errlen, "%s:%zu:%zu: listen[%zu].tls: cannot set up TLS: %s", cfg->file,
             lc->line, lc->col, li, gw_tls_error(reason, sizeof reason, "unknown error"));
fail:
    state_free(t);
    return GW_E_CONFIG;
}

int gw_tls_load(struct gw_config *cfg, char *err, size_t errlen)
{
    struct tls_state **built = gw_xcalloc(cfg->nlisten + 1, sizeof *built);
    int rc = 0;

    if (!ticket_keys_made) {
        if (RAND_bytes(ticket_keys, sizeof ticket_keys) != 1) {
            snprintf(err, errlen, "%s: cannot make TLS ticket keys", cfg->file);
            free(built);
            return GW_E_CONFIG;
        }
        ticket_keys_made = 1;
    }
    for (size_t i = 0; i < cfg->nlisten && rc == 0; i++)
        if (cfg->listen[i].tls != NULL)
            rc = build(cfg, i, &built[i], err, errlen);
    for (size_t i = 0; i < cfg->nlisten; i++) {
        if (built[i] == NULL)
            continue;
        if (rc != 0) {
            state_free(built[i]);
            continue;
        }
        cfg->listen[i].tls->ctx = built[i];
        cfg->listen[i].tls->ctx_free = state_free;
    }
    free(built);
    return rc;
}

SSL *gw_tls_new_ssl(const struct gw_listen_conf *lc)
{
    const struct tls_state *t = lc->tls->ctx;

    return SSL_new(t->ctx); /* takes its own reference to the context */
}

int gw_tls_alpn_h2(const SSL *ssl)
{
    const unsigned char *p;
    unsigned int n;

    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

/* The bytes of a memory BIO as a NUL-terminated string in |*cur|; advances |*cur|. */
static const char *take(BIO *b, char **cur)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = *cur;

    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    *cur += n + 1;
    return s;
}

struct gw_tls_info *gw_tls_info_new(SSL *ssl)
{
    const SSL_CIPHER *ci = SSL_get_current_cipher(ssl);
    X509 *peer = SSL_get1_peer_certificate(ssl);
    BIO *s_dn = NULL, *i_dn = NULL, *pem = NULL;
    char *serial = NULL, *cur, failed[160];
    const char *verify = "NONE";
    size_t extra = 0;
    struct gw_tls_info *info;
    long vr;

    if (peer != NULL) {
        ASN1_INTEGER *sn = X509_get_serialNumber(peer);
        BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);

        s_dn = BIO_new(BIO_s_mem());
        i_dn = BIO_new(BIO_s_mem());
        pem = BIO_new(BIO_s_mem());
        serial = bn != NULL ? BN_bn2hex(bn) : NULL;
        BN_free(bn);
        if (s_dn == NULL || i_dn == NULL || pem == NULL || serial == NULL ||
            X509_NAME_print_ex(s_dn, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) < 0 ||
            X509_NAME_print_ex(i_dn, X509_get_issuer_name(peer), 0, XN_FLAG_RFC2253) < 0 ||
            PEM_write_bio_X509(pem, peer) != 1) {
            gw_log_error("out of memory");
            abort();
        }
        extra = (size_t)BIO_pending(s_dn) + (size_t)BIO_pending(i_dn) +
                (size_t)BIO_pending(pem) + strlen(serial) + 4;
        vr = SSL_get_verify_result(ssl);
        if (vr == X509_V_OK) {
            verify = "SUCCESS";
        } else {
            snprintf(failed, sizeof failed, "FAILED:%s", X509_verify_cert_error_string(vr));
            verify = failed;
        }
    }
    extra += strlen(verify) + 1;
    info = gw_xcalloc(1, sizeof *info + extra);
    cur = (char *)(info + 1);
    info->version = (uint16_t)SSL_version(ssl);
    info->protocol = SSL_get_version(ssl);
    info->cipher = ci != NULL ? SSL_CIPHER_get_name(ci) : "";
    info->cipher_id = ci != NULL ? (uint16_t)SSL_CIPHER_get_protocol_id(ci) : 0;
    memcpy(cur, verify, strlen(verify) + 1);
    info->verify = cur;
    cur += strlen(verify) + 1;
    if (peer != NULL) {
        if (strncmp(info->verify, "FAILED:", 7) == 0)
            info->verify_error = info->verify + 7;
        info->s_dn = take(s_dn, &cur);
        info->i_dn = take(i_dn, &cur);
        info->cert_pem = take(pem, &cur);
        info->cert_pem_len = strlen(info->cert_pem);
        memcpy(cur, serial, strlen(serial) + 1);
        info->serial = cur;
    }
    BIO_free(s_dn);
    BIO_free(i_dn);
    BIO_free(pem);
    OPENSSL_free(serial);
    X509_free(peer);
    return info;
}
