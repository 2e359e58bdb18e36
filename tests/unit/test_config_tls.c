/* SPDX-License-Identifier: MIT */
/* The listeners' tls: keys, http2: against tls, an http upstream's tls_client_headers, and
 * gw_tls_load()'s file:line:column messages for files it cannot read. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "gateway/tls.h"
#include "gateway/util.h"

#define UP "upstreams:\n  web:\n    servers: [\"127.0.0.1:8001\"]\n" /* 3 lines */
#define RT "routes:\n  - upstream: web\n"                            /* 2 lines */
#define TLS1 "    tls:\n      certificates:\n        - { cert: /c.pem, key: /c.key }\n"

static struct gw_config *load_ok(const char *yaml)
{
    struct gw_config *c = NULL;
    char err[512];
    int rc = gw_config_load_buffer("t.yaml", yaml, strlen(yaml), &c, err, sizeof err);

    cr_assert_eq(rc, 0, "load failed: %s", err);
    return c;
}

Test(config_tls, defaults_and_every_key)
{
    static const char y[] = "listen:\n"
                            "  - address: \"127.0.0.1:8080\"\n"
                            "  - address: \"127.0.0.1:8443\"\n" TLS1
                            "  - address: \"127.0.0.1:9443\"\n"
                            "    http2: off\n"
                            "    tls:\n"
                            "      certificates:\n"
                            "        - { cert: /a.pem, key: /a.key }\n"
                            "        - cert: /b.pem\n"
                            "          key: /b.key\n"
                            "      client_ca: /ca.pem\n"
                            "      client_verify: optional\n"
                            "      session_tickets: false\n"
                            "  - address: \"127.0.0.1:9444\"\n"
                            "    http2: on\n"
                            "    tls:\n"
                            "      certificates: [{ cert: /a.pem, key: /a.key }]\n"
                            "      client_ca: /ca.pem\n" UP "    tls_client_headers: true\n" RT;
    struct gw_config *c = load_ok(y);
    const struct gw_tls_conf *t;

    cr_assert_eq(c->nlisten, 4);
    cr_expect_null(c->listen[0].tls);
    t = c->listen[1].tls;
    cr_assert_not_null(t);
    cr_expect_eq(t->ncerts, 1);
    cr_expect_str_eq(t->certs[0].cert.path, "/c.pem");
    cr_expect_eq(t->certs[0].cert.line, 6);
    cr_expect_eq(t->certs[0].cert.col, 19);
    cr_expect_str_eq(t->certs[0].key.path, "/c.key");
    cr_expect_null(t->client_ca.path);
    cr_expect_eq(t->client_verify, GW_TLS_VERIFY_NONE);
    cr_expect_eq(t->session_tickets, 1);
    cr_expect_null(t->ctx);
    cr_expect_eq(c->listen[1].http2, GW_H2_UNSET);
    t = c->listen[2].tls;
    cr_expect_eq(t->ncerts, 2);
    cr_expect_str_eq(t->certs[1].cert.path, "/b.pem");
    cr_expect_str_eq(t->certs[1].key.path, "/b.key");
    cr_expect_str_eq(t->client_ca.path, "/ca.pem");
    cr_expect_eq(t->client_verify, GW_TLS_VERIFY_OPTIONAL);
    cr_expect_eq(t->session_tickets, 0);
    cr_expect_eq(c->listen[2].http2, GW_H2_OFF);
    cr_expect_eq(c->listen[3].tls->client_verify, GW_TLS_VERIFY_REQUIRE); /* with client_ca */
    cr_expect_eq(c->listen[3].http2, GW_H2_ON);
    cr_expect_eq(c->upstreams[0].tls_client_headers, 1);
    gw_config_unref(c);
}

Test(config_tls, tls_client_headers_defaults_off)
{
    struct gw_config *c = load_ok("listen:\n  - address: \"127.0.0.1:8080\"\n" UP RT);

    cr_expect_eq(c->upstreams[0].tls_client_headers, 0);
    gw_config_unref(c);
}

struct bad_case {
    const char *yaml;
    const char *msg;
};

static const struct bad_case bad_cases[] = {
    {"listen:\n  - address: \"127.0.0.1:8080\"\n    http2: on\n" UP RT,
     "t.yaml:3:12: listen[0].http2: on needs tls (HTTP/2 is chosen by ALPN); for cleartext "
     "HTTP/2 use prior_knowledge"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n    http2: prior_knowledge\n" TLS1 UP RT,
     "t.yaml:3:12: listen[0].http2: prior_knowledge is for cleartext listeners; with tls use "
     "on (ALPN)"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n    tls: {}\n" UP RT,
     "t.yaml:3:10: missing required key 'certificates' in listen[0].tls"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n    tls: { certificates: [] }\n" UP RT,
     "t.yaml:3:26: listen[0].tls.certificates: at least one certificate is required"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n    tls: { certificates: [{ cert: /a }] }\n" UP
         RT,
     "t.yaml:3:27: missing required key 'key' in listen[0].tls.certificates[0]"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n    tls: { certificates: [{ cert: /a, key: "
     "/k, chain: /c }] }\n" UP RT,
     "t.yaml:3:48: unknown key 'chain' in listen[0].tls.certificates[0]"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n" TLS1 "      client_verify: require\n" UP RT,
     "t.yaml:6:22: listen[0].tls: client_verify needs client_ca (the CAs to verify against)"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n" TLS1
     "      client_ca: /ca.pem\n      client_verify: maybe\n" UP RT,
     "t.yaml:7:22: listen[0].tls.client_verify: invalid value 'maybe' (expected require or "
     "optional)"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n" TLS1 "      session_tickets: yes\n" UP RT,
     "t.yaml:6:24: listen[0].tls.session_tickets: expected true or false, got 'yes'"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\n" TLS1 "      client_ca:\n" UP RT,
     "t.yaml:6:17: listen[0].tls.client_ca: missing value"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\nupstreams:\n  web:\n    protocol: uwsgi\n"
     "    servers: [\"127.0.0.1:8001\"]\n    tls_client_headers: true\n" RT,
     "t.yaml:7:25: upstreams.web.tls_client_headers: tls_client_headers applies to http "
     "upstreams only (uwsgi and asgi get the TLS facts as SSL_* vars and the tls scope "
     "extension)"},
};

ParameterizedTestParameters(config_tls, refused)
{
    static size_t idx[GW_ARRAY_LEN(bad_cases)];

    for (size_t i = 0; i < GW_ARRAY_LEN(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, GW_ARRAY_LEN(idx));
}

ParameterizedTest(size_t *i, config_tls, refused)
{
    const struct bad_case *tc = &bad_cases[*i];
    struct gw_config *c = NULL;
    char err[512];
    int rc = gw_config_load_buffer("t.yaml", tc->yaml, strlen(tc->yaml), &c, err, sizeof err);

    cr_assert_eq(rc, GW_E_CONFIG, "expected a refusal of:\n%s", tc->yaml);
    cr_assert_null(c);
    cr_assert_str_eq(err, tc->msg, "for:\n%s\ngot:      %s\nexpected: %s", tc->yaml, err, tc->msg);
}

/* The loader never opens the files; gw_tls_load() does, and names the key at its place. */
Test(config_tls, load_names_the_missing_file)
{
    static const char y[] = "listen:\n"
                            "  - address: \"127.0.0.1:8080\"\n"
                            "  - address: \"127.0.0.1:8443\"\n"
                            "    tls:\n"
                            "      certificates:\n"
                            "        - { cert: /nonexistent/gh-site.pem, key: /x.key }\n" UP RT;
    struct gw_config *c = load_ok(y);
    char err[512];

    cr_assert_eq(gw_tls_load(c, err, sizeof err), GW_E_CONFIG);
    cr_expect_str_eq(err, "t.yaml:6:19: listen[1].tls.certificates[0].cert: cannot load "
                          "/nonexistent/gh-site.pem: No such file or directory");
    cr_expect_null(c->listen[1].tls->ctx);
    gw_config_unref(c);
}

Test(config_tls, load_without_tls_listeners_is_a_no_op)
{
    struct gw_config *c = load_ok("listen:\n  - address: \"127.0.0.1:8080\"\n" UP RT);
    char err[512];

    cr_expect_eq(gw_tls_load(c, err, sizeof err), 0);
    gw_config_unref(c);
}
