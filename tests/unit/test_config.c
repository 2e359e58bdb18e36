/* SPDX-License-Identifier: MIT */
/* Tests of the configuration loader: defaults, every key, ${VAR}, sizes and durations, and the
 * exact file:line:column message of each way a file can be refused. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config.h"
#include "gateway/util.h"

#define LS "listen:\n  - address: \"127.0.0.1:8080\"\n"              /* lines 1-2 */
#define UP "upstreams:\n  web:\n    servers: [\"127.0.0.1:8001\"]\n" /* 3 lines */
#define RT "routes:\n  - upstream: web\n"                            /* 2 lines */

static struct gw_config *load_ok(const char *yaml)
{
    struct gw_config *c = NULL;
    char err[512];
    int rc = gw_config_load_buffer("t.yaml", yaml, strlen(yaml), &c, err, sizeof err);

    cr_assert_eq(rc, 0, "load failed: %s", err);
    cr_assert_not_null(c);
    return c;
}

static const char *load_err(const char *yaml, char *err, size_t errlen)
{
    struct gw_config *c = (struct gw_config *)1;
    int rc = gw_config_load_buffer("t.yaml", yaml, strlen(yaml), &c, err, errlen);

    cr_assert_eq(rc, GW_E_CONFIG, "expected a refusal of:\n%s", yaml);
    cr_assert_null(c);
    return err;
}

Test(config, minimal_file_gets_every_default)
{
    struct gw_config *c = load_ok(LS UP RT);
    const struct gw_upstream_conf *u;
    const struct gw_route_conf *r;
    const struct sockaddr_in *sin;

    cr_expect_str_eq(c->file, "t.yaml");
    cr_expect_gt(c->workers, 0);
    cr_assert_eq(c->nlisten, 1);
    cr_expect_str_eq(c->listen[0].address, "127.0.0.1:8080");
    cr_expect_eq(c->listen[0].backlog, 511);
    cr_expect_eq(c->listen[0].addrlen, sizeof(struct sockaddr_in));
    sin = (const struct sockaddr_in *)&c->listen[0].addr;
    cr_expect_eq(sin->sin_family, AF_INET);
    cr_expect_eq(ntohs(sin->sin_port), 8080);
    cr_expect_eq(ntohl(sin->sin_addr.s_addr), 0x7f000001u);

    cr_expect_eq(c->limits.header_bytes, 16384);
    cr_expect_eq(c->limits.headers, 100);
    cr_expect_eq(c->limits.target_bytes, 8192);
    cr_expect_eq(c->limits.body_bytes, 10u << 20);
    cr_expect_eq(c->timeouts.header_ms, 10000);
    cr_expect_eq(c->timeouts.body_ms, 30000);
    cr_expect_eq(c->timeouts.idle_ms, 60000);
    cr_expect_eq(c->timeouts.send_ms, 60000);
    cr_expect_eq(c->shutdown.delay_ms, 0);
    cr_expect_eq(c->shutdown.timeout_ms, 30000);
    cr_expect_eq(c->ntrusted, 0);
    cr_expect_eq(c->log.access, GW_ACCESS_JSON);
    cr_expect_eq(c->log.level, GW_LOG_INFO);
    cr_expect_eq(c->log.access_buffer, 65536);
    cr_expect_eq(c->log.access_flush_ms, 1000);

    cr_assert_eq(c->nupstreams, 1);
    u = &c->upstreams[0];
    cr_expect_str_eq(u->name, "web");
    cr_expect_eq(u->protocol, GW_PROTO_HTTP);
    cr_expect_eq(u->balance, GW_BALANCE_ROUND_ROBIN);
    cr_expect_eq(u->connect_ms, 5000);
    cr_expect_eq(u->first_byte_ms, 60000);
    cr_expect_eq(u->read_ms, 60000);
    cr_expect_eq(u->send_ms, 60000);
    cr_expect_eq(u->keepalive_conns, 32);
    cr_expect_eq(u->keepalive_ms, 60000);
    cr_expect_eq(u->keepalive_requests, 1000);
    cr_expect_eq(u->retries, 1);
    cr_expect_eq(u->health_fails, 3);
    cr_expect_eq(u->health_cooldown_ms, 10000);
    cr_expect_eq(u->resolve_ms, 30000);
    cr_expect_eq(u->buffer_memory, 1u << 20);
    cr_expect_str_eq(u->buffer_dir, "/tmp");
    cr_expect_eq(u->concurrency, 0);
    cr_expect_eq(u->queue_limit, 512);
    cr_expect_eq(u->queue_timeout_ms, 10000);
    cr_expect_eq(u->retry_after_ms, 1000);
    cr_expect_eq(u->index, 0);
    cr_assert_eq(u->nservers, 1);
    cr_expect_str_eq(u->servers[0].address, "127.0.0.1:8001");
    cr_expect_str_eq(u->servers[0].host, "127.0.0.1");
    cr_expect_eq(u->servers[0].port, 8001);
    cr_expect_null(u->servers[0].unix_path);
    cr_expect_eq(u->servers[0].numeric, 1);

    cr_assert_eq(c->nroutes, 1);
    r = &c->routes[0];
    cr_expect_null(r->host);
    cr_expect_eq(r->host_wildcard, 0);
    cr_expect_str_eq(r->path, "/");
    cr_expect_eq(r->path_len, 1);
    cr_expect_eq(r->strip_prefix, 0);
    cr_expect_eq(r->upstream, &c->upstreams[0]);
    cr_expect_eq(r->index, 0);
    gw_config_unref(c);
}

static const char every_key[] =
    "workers: 3\n"
    "listen:\n"
    "  - address: \"*:8080\"\n"
    "    backlog: 1024\n"
    "  - address: \"[::1]:8443\"\n"
    "limits: { header_bytes: 32k, headers: 50, target_bytes: 4K, body_bytes: 0 }\n"
    "timeouts: { header: 5s, body: 500ms, idle: 2m, send: 1h }\n"
    "shutdown: { delay: 3s, timeout: 45 }\n"
    "trusted_proxies: [\"10.0.0.0/8\", \"127.0.0.1\", \"::1/128\"]\n"
    "log: { access: off, level: warn, access_buffer: 1m, access_flush: 250ms }\n"
    "upstreams:\n"
    "  zeta:\n"
    "    protocol: http\n"
    "    servers: [\"127.0.0.1:8001\", \"web-2:8000\", \"unix:/run/web.sock\", \"[::1]:8001\"]\n"
    "    balance: least_outstanding\n"
    "    timeouts: { connect: 1s, first_byte: 2s, read: 3s, send: 4s }\n"
    "    keepalive: { connections: 0, timeout: 5s, requests: 7 }\n"
    "    retries: 0\n"
    "    health: { fails: 9, cooldown: 0s }\n"
    "    resolve: 1m\n"
    "  alpha:\n"
    "    servers: [\"alpha.internal:80\"]\n"
    "routes:\n"
    "  - match: { host: \"API.Example.com\", path: /api/ }\n"
    "    upstream: alpha\n"
    "    strip_prefix: true\n"
    "  - { match: { host: \"*.example.com\" }, upstream: zeta, strip_prefix: false }\n"
    "  - { match: { path: \"//\" }, upstream: zeta }\n";

Test(config, every_key_is_read_back)
{
    struct gw_config *c = load_ok(every_key);
    const struct gw_upstream_conf *u;
    const struct sockaddr_in *sin;
    const struct sockaddr_in6 *sin6;
    struct in6_addr lo6 = IN6ADDR_LOOPBACK_INIT;

    cr_expect_eq(c->workers, 3);
    cr_assert_eq(c->nlisten, 2);
    cr_expect_str_eq(c->listen[0].address, "*:8080");
    cr_expect_eq(c->listen[0].backlog, 1024);
    sin = (const struct sockaddr_in *)&c->listen[0].addr;
    cr_expect_eq(sin->sin_family, AF_INET);
    cr_expect_eq(sin->sin_addr.s_addr, htonl(INADDR_ANY));
    cr_expect_eq(ntohs(sin->sin_port), 8080);
    sin6 = (const struct sockaddr_in6 *)&c->listen[1].addr;
    cr_expect_eq(c->listen[1].addrlen, sizeof(struct sockaddr_in6));
    cr_expect_eq(sin6->sin6_family, AF_INET6);
    cr_expect_eq(ntohs(sin6->sin6_port), 8443);
    cr_expect_eq(memcmp(&sin6->sin6_addr, &lo6, 16), 0);
    cr_expect_eq(c->listen[1].backlog, 511);

    cr_expect_eq(c->limits.header_bytes, 32768);
    cr_expect_eq(c->limits.headers, 50);
    cr_expect_eq(c->limits.target_bytes, 4096);
    cr_expect_eq(c->limits.body_bytes, 0);
    cr_expect_eq(c->timeouts.header_ms, 5000);
    cr_expect_eq(c->timeouts.body_ms, 500);
    cr_expect_eq(c->timeouts.idle_ms, 120000);
    cr_expect_eq(c->timeouts.send_ms, 3600000);
    cr_expect_eq(c->shutdown.delay_ms, 3000);
    cr_expect_eq(c->shutdown.timeout_ms, 45000);
    cr_assert_eq(c->ntrusted, 3);
    cr_expect_eq(c->trusted[0].family, AF_INET);
    cr_expect_eq(c->trusted[0].prefix, 8);
    cr_expect_eq(c->trusted[1].prefix, 32);
    cr_expect_eq(c->trusted[2].family, AF_INET6);
    cr_expect_eq(c->trusted[2].prefix, 128);
    cr_expect_eq(c->log.access, GW_ACCESS_OFF);
    cr_expect_eq(c->log.level, GW_LOG_WARN);
    cr_expect_eq(c->log.access_buffer, 1u << 20);
    cr_expect_eq(c->log.access_flush_ms, 250);

    /* File order of the map, not sorted order. */
    cr_assert_eq(c->nupstreams, 2);
    cr_expect_str_eq(c->upstreams[0].name, "zeta");
    cr_expect_str_eq(c->upstreams[1].name, "alpha");
    cr_expect_eq(c->upstreams[1].index, 1);
    u = &c->upstreams[0];
    cr_expect_eq(u->balance, GW_BALANCE_LEAST_OUTSTANDING);
    cr_expect_eq(u->connect_ms, 1000);
    cr_expect_eq(u->first_byte_ms, 2000);
    cr_expect_eq(u->read_ms, 3000);
    cr_expect_eq(u->send_ms, 4000);
    cr_expect_eq(u->keepalive_conns, 0);
    cr_expect_eq(u->keepalive_ms, 5000);
    cr_expect_eq(u->keepalive_requests, 7);
    cr_expect_eq(u->retries, 0);
    cr_expect_eq(u->health_fails, 9);
    cr_expect_eq(u->health_cooldown_ms, 0);
    cr_expect_eq(u->resolve_ms, 60000);
    cr_assert_eq(u->nservers, 4);
    cr_expect_str_eq(u->servers[1].host, "web-2");
    cr_expect_eq(u->servers[1].port, 8000);
    cr_expect_eq(u->servers[1].numeric, 0);
    cr_expect_str_eq(u->servers[2].address, "unix:/run/web.sock");
    cr_expect_str_eq(u->servers[2].unix_path, "/run/web.sock");
    cr_expect_null(u->servers[2].host);
    cr_expect_eq(u->servers[2].numeric, 0);
    cr_expect_str_eq(u->servers[3].host, "::1");
    cr_expect_eq(u->servers[3].port, 8001);
    cr_expect_eq(u->servers[3].numeric, 1);

    cr_assert_eq(c->nroutes, 3);
    cr_expect_str_eq(c->routes[0].host, "api.example.com");
    cr_expect_eq(c->routes[0].host_wildcard, 0);
    cr_expect_str_eq(c->routes[0].path, "/api");
    cr_expect_eq(c->routes[0].path_len, 4);
    cr_expect_eq(c->routes[0].strip_prefix, 1);
    cr_expect_eq(c->routes[0].upstream, &c->upstreams[1]);
    cr_expect_str_eq(c->routes[1].host, "*.example.com");
    cr_expect_eq(c->routes[1].host_wildcard, 1);
    cr_expect_str_eq(c->routes[1].path, "/");
    cr_expect_eq(c->routes[1].strip_prefix, 0);
    cr_expect_eq(c->routes[1].upstream, &c->upstreams[0]);
    cr_expect_eq(c->routes[1].index, 1);
    cr_expect_str_eq(c->routes[2].path, "/");
    cr_expect_eq(c->routes[2].path_len, 1);
    cr_expect_eq(c->routes[2].index, 2);
    gw_config_unref(c);
}

Test(config, workers_auto_is_the_cpu_count)
{
    struct gw_config *c = load_ok("workers: auto\n" LS UP RT);
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    cr_expect_gt(c->workers, 0);
    cr_expect_eq(c->workers, n < 1 ? 1 : n > 256 ? 256 : (unsigned)n);
    gw_config_unref(c);
}

Test(config, env_expansion)
{
    struct gw_config *c;

    setenv("GW_T_PORT", "9090", 1);
    setenv("GW_T_EMPTY", "", 1);
    unsetenv("GW_T_UNSET");
    setenv("GW_T_YAML", "{a:[1,2]}", 1);
    c = load_ok("listen:\n"
                "  - address: \"127.0.0.1:${GW_T_PORT}\"\n"
                "  - address: \"${GW_T_UNSET:-[::]:8081}\"\n"
                "  - address: \"${GW_T_EMPTY:-*:8082}\"\n"
                "upstreams:\n"
                "  web:\n"
                "    servers: [\"${GW_T_UNSET:-}${GW_T_EMPTY}h:${GW_T_PORT}\"]\n"
                "routes:\n"
                "  - { match: { path: \"/a$$b/$x${GW_T_YAML}\" }, upstream: web }\n");
    cr_expect_str_eq(c->listen[0].address, "127.0.0.1:9090");
    cr_expect_str_eq(c->listen[1].address, "[::]:8081");
    cr_expect_str_eq(c->listen[2].address, "*:8082");
    cr_expect_str_eq(c->upstreams[0].servers[0].host, "h");
    cr_expect_eq(c->upstreams[0].servers[0].port, 9090);
    /* $$ is one '$', a lone '$' stays, and a value cannot inject YAML structure. */
    cr_expect_str_eq(c->routes[0].path, "/a$b/$x{a:[1,2]}", "got %s", c->routes[0].path);
    gw_config_unref(c);
}

Test(config, keys_are_not_expanded)
{
    char err[256];

    setenv("GW_T_KEY", "listen", 1);
    cr_expect_str_eq(load_err("${GW_T_KEY}: []\n" LS UP RT, err, sizeof err),
                     "t.yaml:1:1: unknown key '${GW_T_KEY}' in top level");
}

Test(config, bundled_files_load)
{
    static const char *const files[] = {
        "config/gatehouse.yaml",
        "config/examples/multi-upstream.yaml",
        "config/examples/behind-load-balancer.yaml",
    };

    unsetenv("GATEHOUSE_LISTEN");
    unsetenv("DEMO_HTTP_UPSTREAM");
    unsetenv("DEMO_WSGI_UPSTREAM");
    unsetenv("DEMO_LEGACY_UPSTREAM");
    for (size_t i = 0; i < GW_ARRAY_LEN(files); i++) {
        struct gw_config *c = NULL;
        char err[512];

        cr_expect_eq(gw_config_load_file(files[i], &c, err, sizeof err), 0, "%s", err);
        gw_config_unref(c);
    }
}

Test(config, default_file_is_the_demo)
{
    struct gw_config *c = NULL;
    char err[512];

    unsetenv("GATEHOUSE_LISTEN");
    unsetenv("DEMO_HTTP_UPSTREAM");
    unsetenv("DEMO_WSGI_UPSTREAM");
    unsetenv("DEMO_LEGACY_UPSTREAM");
    unsetenv("DEMO_ASGI_UPSTREAM");
    cr_assert_eq(gw_config_load_file("config/gatehouse.yaml", &c, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(c->listen[0].address, "127.0.0.1:8080");
    cr_assert_eq(c->nupstreams, 4);
    cr_expect_str_eq(c->upstreams[0].name, "demo");
    cr_expect_str_eq(c->upstreams[0].servers[0].address, "127.0.0.1:8001");
    for (size_t i = 1; i < 3; i++) {
        cr_expect_eq(c->upstreams[i].protocol, GW_PROTO_UWSGI);
        cr_expect_eq(c->upstreams[i].concurrency, 2);
    }
    cr_expect_str_eq(c->upstreams[1].name, "wsgi");
    cr_expect_str_eq(c->upstreams[1].servers[0].unix_path, "/tmp/gatehouse-demo/wsgi.sock");
    cr_expect_str_eq(c->upstreams[2].name, "legacy");
    cr_expect_str_eq(c->upstreams[3].name, "asgi");
    cr_expect_eq(c->upstreams[3].protocol, GW_PROTO_ASGI);
    cr_expect_str_eq(c->upstreams[3].servers[0].unix_path, "/tmp/gatehouse-demo/asgi.sock");
    cr_assert_eq(c->nroutes, 5);
    cr_expect_str_eq(c->routes[0].path, "/http");
    cr_expect_str_eq(c->routes[1].path, "/wsgi");
    cr_expect_str_eq(c->routes[2].path, "/legacy");
    cr_expect_str_eq(c->routes[3].path, "/asgi");
    for (size_t i = 0; i < 4; i++)
        cr_expect_eq(c->routes[i].strip_prefix, 1);
    cr_expect_str_eq(c->routes[4].path, "/");
    cr_expect_eq(c->routes[4].strip_prefix, 0);
    gw_config_unref(c);
}

Test(config, load_file_errors)
{
    struct gw_config *c = (struct gw_config *)1;
    char err[256];

    cr_expect_eq(gw_config_load_file("/nonexistent/gw.yaml", &c, err, sizeof err), GW_E_CONFIG);
    cr_expect_null(c);
    cr_expect_str_eq(err, "/nonexistent/gw.yaml: cannot read: No such file or directory");
    cr_expect_eq(gw_config_load_file("/tmp", &c, err, sizeof err), GW_E_CONFIG);
    cr_expect_str_eq(err, "/tmp: cannot read: Is a directory");
}

Test(config, load_file_names_the_file_in_messages)
{
    char path[] = "/tmp/gw_cfg_XXXXXX";
    struct gw_config *c = NULL;
    char err[256], want[300];
    int fd = mkstemp(path);
    FILE *f;

    cr_assert_geq(fd, 0);
    f = fdopen(fd, "w");
    fputs(LS UP RT, f);
    fclose(f);
    cr_expect_eq(gw_config_load_file(path, &c, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(c->file, path);
    gw_config_unref(c);

    f = fopen(path, "w");
    fputs(LS UP RT "bogus: 1\n", f);
    fclose(f);
    cr_expect_eq(gw_config_load_file(path, &c, err, sizeof err), GW_E_CONFIG);
    snprintf(want, sizeof want, "%s:8:1: unknown key 'bogus' in top level", path);
    cr_expect_str_eq(err, want);
    unlink(path);
}

Test(config, size_and_depth_caps)
{
    size_t big = (1u << 20) + 1, n = 40;
    char *data = malloc(big);
    struct gw_config *c = (struct gw_config *)1;
    char err[256], deep[200];

    memset(data, ' ', big);
    cr_expect_eq(gw_config_load_buffer("t.yaml", data, big, &c, err, sizeof err), GW_E_CONFIG);
    cr_expect_str_eq(err, "t.yaml: too large (1048577 bytes, limit 1 MiB)");
    cr_expect_null(c);
    free(data);

    memset(deep, 0, sizeof deep);
    memcpy(deep, "a: ", 3);
    memset(deep + 3, '[', n);
    cr_expect_str_eq(load_err(deep, err, sizeof err), "t.yaml:1:35: nesting deeper than 32 levels");
}

Test(config, error_buffer_is_optional_and_truncated)
{
    struct gw_config *c = (struct gw_config *)1;
    char err[12];

    cr_expect_eq(gw_config_load_buffer("t.yaml", "x: 1\n", 5, &c, NULL, 0), GW_E_CONFIG);
    cr_expect_null(c);
    cr_expect_eq(gw_config_load_buffer("t.yaml", "x: 1\n", 5, &c, err, sizeof err), GW_E_CONFIG);
    cr_expect_str_eq(err, "t.yaml:1:1:");
}

Test(config, ref_and_unref)
{
    struct gw_config *c = load_ok(LS UP RT);

    cr_expect_eq(atomic_load(&c->refs), 1);
    cr_expect_eq(gw_config_ref(c), c);
    cr_expect_eq(atomic_load(&c->refs), 2);
    gw_config_unref(c);
    cr_expect_eq(atomic_load(&c->refs), 1);
    cr_expect_str_eq(c->upstreams[0].name, "web"); /* still alive */
    gw_config_unref(c);                            /* freed: ASan would see a leak otherwise */
    gw_config_unref(NULL);
}

/* ---- gw_config_is_trusted ---- */

static int trusted(const struct gw_config *c, const char *ip)
{
    struct sockaddr_storage ss = {0};

    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        s6->sin6_family = AF_INET6;
        cr_assert_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1, "%s", ip);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

        s4->sin_family = AF_INET;
        cr_assert_eq(inet_pton(AF_INET, ip, &s4->sin_addr), 1, "%s", ip);
    }
    return gw_config_is_trusted(c, (const struct sockaddr *)&ss);
}

Test(config, resolver_nameservers_normalised)
{
    struct gw_config *c = load_ok(LS UP RT "resolver:\n  nameservers: [\"10.0.0.2\", "
                                           "\"127.0.0.1:5353\", \"::1\", \"[::1]:5300\"]\n");

    cr_assert_eq(c->resolver.nnameservers, 4);
    cr_expect_str_eq(c->resolver.nameservers[0], "10.0.0.2:53");
    cr_expect_str_eq(c->resolver.nameservers[1], "127.0.0.1:5353");
    cr_expect_str_eq(c->resolver.nameservers[2], "[::1]:53");
    cr_expect_str_eq(c->resolver.nameservers[3], "[::1]:5300");
    gw_config_unref(c);
    c = load_ok(LS UP RT);
    cr_expect_eq(c->resolver.nnameservers, 0, "default: /etc/resolv.conf");
    gw_config_unref(c);
}

Test(config, is_trusted)
{
    struct gw_config *c = load_ok(LS UP RT "trusted_proxies: [\"10.1.2.3/8\", \"192.168.1.7\", "
                                           "\"172.16.0.0/12\", \"::1/128\", \"2001:db8::/33\"]\n");
    struct sockaddr_un su = {.sun_family = AF_UNIX};

    cr_expect_eq(c->trusted[0].addr[1], 0, "host bits are zeroed");
    cr_expect_eq(trusted(c, "10.0.0.1"), 1);
    cr_expect_eq(trusted(c, "10.255.255.255"), 1);
    cr_expect_eq(trusted(c, "11.0.0.1"), 0);
    cr_expect_eq(trusted(c, "192.168.1.7"), 1);
    cr_expect_eq(trusted(c, "192.168.1.8"), 0);
    cr_expect_eq(trusted(c, "172.31.255.1"), 1);
    cr_expect_eq(trusted(c, "172.32.0.1"), 0);
    cr_expect_eq(trusted(c, "::1"), 1);
    cr_expect_eq(trusted(c, "::2"), 0);
    cr_expect_eq(trusted(c, "2001:db8:7fff::1"), 1);
    cr_expect_eq(trusted(c, "2001:db8:8000::1"), 0);
    cr_expect_eq(trusted(c, "::ffff:10.9.8.7"), 1);
    cr_expect_eq(trusted(c, "::ffff:192.168.1.7"), 1);
    cr_expect_eq(trusted(c, "::ffff:11.0.0.1"), 0);
    cr_expect_eq(trusted(c, "::a09:807"), 0, "IPv4-compatible is not mapped");
    cr_expect_eq(gw_config_is_trusted(c, (const struct sockaddr *)&su), 0);
    cr_expect_eq(gw_config_is_trusted(c, NULL), 0);
    gw_config_unref(c);

    c = load_ok(LS UP RT "trusted_proxies: [\"0.0.0.0/0\"]\n");
    cr_expect_eq(trusted(c, "203.0.113.9"), 1);
    cr_expect_eq(trusted(c, "::ffff:203.0.113.9"), 1);
    cr_expect_eq(trusted(c, "2001:db8::1"), 0);
    gw_config_unref(c);

    c = load_ok(LS UP RT "trusted_proxies: [\"::ffff:0:0/96\"]\n");
    cr_expect_eq(trusted(c, "203.0.113.9"), 1, "mapped IPv6 entries match IPv4 peers");
    gw_config_unref(c);

    c = load_ok(LS UP RT);
    cr_expect_eq(trusted(c, "127.0.0.1"), 0, "nobody is trusted by default");
    gw_config_unref(c);
}

/* ---- sizes and durations ---- */

struct num_case {
    const char *text;
    int rc;
    uint64_t value;
};

/* Criterion runs each parameterized test in a fresh process of this binary, where the
 * parent's pointers mean nothing (ASLR): the parameters are indices into these file-scope
 * tables, which every process has at its own addresses. */
static const struct num_case size_cases[] = {
    {"0", 0, 0},
    {"512", 0, 512},
    {"16k", 0, 16384},
    {"16K", 0, 16384},
    {"10m", 0, 10485760},
    {"10M", 0, 10485760},
    {"1g", 0, 1073741824},
    {"2G", 0, 2147483648u},
    {"007k", 0, 7168},
    {"18446744073709551615", 0, UINT64_MAX},
    {"17179869183g", 0, 17179869183ull << 30},
    {"17179869184g", -1, 0},
    {"18446744073709551616", -1, 0},
    {"99999999999999999999999", -1, 0},
    {"", -1, 0},
    {"k", -1, 0},
    {"-1", -1, 0},
    {"+1", -1, 0},
    {" 1", -1, 0},
    {"1 ", -1, 0},
    {"1.5k", -1, 0},
    {"1kb", -1, 0},
    {"1KiB", -1, 0},
    {"1t", -1, 0},
    {"0x10", -1, 0},
};

ParameterizedTestParameters(config, parse_size)
{
    static size_t idx[GW_ARRAY_LEN(size_cases)];

    for (size_t i = 0; i < GW_ARRAY_LEN(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, GW_ARRAY_LEN(idx));
}

ParameterizedTest(size_t *i, config, parse_size)
{
    const struct num_case *tc = &size_cases[*i];
    uint64_t v = 12345;

    cr_assert_eq(gw_parse_size(tc->text, &v), tc->rc, "'%s'", tc->text);
    cr_assert_eq(v, tc->rc == 0 ? tc->value : 12345, "'%s' -> %llu", tc->text,
                 (unsigned long long)v);
}

static const struct num_case duration_cases[] = {
    {"0", 0, 0},
    {"30", 0, 30000},
    {"500ms", 0, 500},
    {"500MS", 0, 500},
    {"30s", 0, 30000},
    {"5m", 0, 300000},
    {"1h", 0, 3600000},
    {"0s", 0, 0},
    {"18446744073709551615ms", 0, UINT64_MAX},
    {"18446744073709551s", 0, 18446744073709551000ull},
    {"18446744073709552s", -1, 0},
    {"5124095576030432h", -1, 0},
    {"", -1, 0},
    {"s", -1, 0},
    {"5x", -1, 0},
    {"-1s", -1, 0},
    {"1.5s", -1, 0},
    {"1d", -1, 0},
    {"1sec", -1, 0},
    {"1 s", -1, 0},
    {"1msx", -1, 0},
    {"1us", -1, 0},
};

ParameterizedTestParameters(config, parse_duration)
{
    static size_t idx[GW_ARRAY_LEN(duration_cases)];

    for (size_t i = 0; i < GW_ARRAY_LEN(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, GW_ARRAY_LEN(idx));
}

ParameterizedTest(size_t *i, config, parse_duration)
{
    const struct num_case *tc = &duration_cases[*i];
    uint64_t v = 12345;

    cr_assert_eq(gw_parse_duration(tc->text, &v), tc->rc, "'%s'", tc->text);
    cr_assert_eq(v, tc->rc == 0 ? tc->value : 12345, "'%s' -> %llu", tc->text,
                 (unsigned long long)v);
}

/* Sizes and durations as they go through a file, where ranges apply. */
Test(config, sizes_and_durations_in_a_file)
{
    struct gw_config *c = load_ok(LS UP RT "limits: { header_bytes: 1k, body_bytes: 1g }\n"
                                           "timeouts: { header: 1ms, idle: 24h, send: 90 }\n");

    cr_expect_eq(c->limits.header_bytes, 1024);
    cr_expect_eq(c->limits.body_bytes, 1u << 30);
    cr_expect_eq(c->timeouts.header_ms, 1);
    cr_expect_eq(c->timeouts.idle_ms, 86400000);
    cr_expect_eq(c->timeouts.send_ms, 90000);
    gw_config_unref(c);
}

/* ---- refused files: the exact message ---- */

struct bad_case {
    const char *yaml;
    const char *msg;
};

static const struct bad_case bad_cases[] = {
    /* unknown keys */
    {"listne: []\n" LS UP RT, "t.yaml:1:1: unknown key 'listne' in top level"},
    {LS "limits: { headerz: 1 }\n" UP RT, "t.yaml:3:11: unknown key 'headerz' in limits"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    keepalive: { conns: 1 }\n" RT,
     "t.yaml:6:18: unknown key 'conns' in upstreams.web.keepalive"},
    {LS UP "routes:\n  - { match: { host: a, port: 1 }, upstream: web }\n",
     "t.yaml:7:25: unknown key 'port' in routes[0].match"},
    /* wrong types */
    {"- a\n", "t.yaml:1:1: expected a mapping, got a sequence"},
    {"hello\n", "t.yaml:1:1: expected a mapping, got a scalar"},
    {"listen: \"127.0.0.1:8080\"\n" UP RT, "t.yaml:1:9: listen: expected a sequence, got a scalar"},
    {LS "limits: [1]\n" UP RT, "t.yaml:3:9: limits: expected a mapping, got a sequence"},
    {LS "limits:\n" UP RT, "t.yaml:3:8: limits: expected a mapping, got an empty value"},
    {LS "limits: { headers: [1] }\n" UP RT,
     "t.yaml:3:20: limits.headers: expected a scalar, got a sequence"},
    {"listen:\n  - \"127.0.0.1:8080\"\n" UP RT,
     "t.yaml:2:5: listen[0]: expected a mapping, got a scalar"},
    {LS "workers: ~\n" UP RT, "t.yaml:3:10: workers: missing value"},
    {LS "? [a]\n: 1\n" UP RT, "t.yaml:3:3: expected a scalar key, got a sequence"},
    /* dangling upstream */
    {LS UP "routes:\n  - upstream: api\n",
     "t.yaml:7:15: routes[0].upstream: unknown upstream 'api'"},
    {LS UP "routes:\n  - upstream: web\n  - { match: { path: /x }, upstream: Web }\n",
     "t.yaml:8:38: routes[1].upstream: unknown upstream 'Web'"},
    /* listen addresses */
    {"listen:\n  - address: \"1.2.3:80\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: invalid address '1.2.3:80' "
     "(expected IP:PORT, [IPv6]:PORT or *:PORT)"},
    {"listen:\n  - address: \"localhost:80\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: invalid address 'localhost:80' "
     "(expected IP:PORT, [IPv6]:PORT or *:PORT)"},
    {"listen:\n  - address: \"::1:80\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: invalid address '::1:80' "
     "(expected IP:PORT, [IPv6]:PORT or *:PORT)"},
    {"listen:\n  - address: \"127.0.0.1:70000\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: invalid port in '127.0.0.1:70000' (expected 1..65535)"},
    {"listen:\n  - address: \"[::1]:0\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: invalid port in '[::1]:0' (expected 1..65535)"},
    {"listen:\n  - address: \"*:80\"\n  - address: \"0.0.0.0:80\"\n" UP RT,
     "t.yaml:3:5: listen[1]: duplicate listen address '0.0.0.0:80' (same as listen[0])"},
    {"listen: []\n" UP RT, "t.yaml:1:9: listen: at least one listener is required"},
    {"listen:\n  - backlog: 5\n" UP RT, "t.yaml:2:5: missing required key 'address' in listen[0]"},
    /* server addresses */
    {LS "upstreams:\n  web:\n    servers: [\"web 1:80\"]\n" RT,
     "t.yaml:5:15: upstreams.web.servers[0]: invalid server address 'web 1:80' "
     "(expected HOST:PORT, [IPv6]:PORT or unix:/path)"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\", web-2]\n" RT,
     "t.yaml:5:22: upstreams.web.servers[1]: invalid server address 'web-2' "
     "(expected HOST:PORT, [IPv6]:PORT or unix:/path)"},
    {LS "upstreams:\n  web:\n    servers: [\"10.1:80\"]\n" RT,
     "t.yaml:5:15: upstreams.web.servers[0]: invalid server address '10.1:80' "
     "(expected HOST:PORT, [IPv6]:PORT or unix:/path)"},
    {LS "upstreams:\n  web:\n    servers: [\"unix:\"]\n" RT,
     "t.yaml:5:15: upstreams.web.servers[0]: invalid server address 'unix:' "
     "(expected HOST:PORT, [IPv6]:PORT or unix:/path)"},
    {LS "upstreams:\n  web:\n    servers: [\"web:0\"]\n" RT,
     "t.yaml:5:15: upstreams.web.servers[0]: invalid port in 'web:0' (expected 1..65535)"},
    {LS "upstreams:\n  web:\n    servers: [\"web:http\"]\n" RT,
     "t.yaml:5:15: upstreams.web.servers[0]: invalid port in 'web:http' (expected 1..65535)"},
    {LS "upstreams:\n  web:\n    servers: []\n" RT,
     "t.yaml:5:14: upstreams.web.servers: at least one server is required"},
    {LS "upstreams:\n  web: { balance: round_robin }\n" RT,
     "t.yaml:4:8: missing required key 'servers' in upstreams.web"},
    /* CIDRs */
    {LS "trusted_proxies: [\"10.0.0.0/33\"]\n" UP RT,
     "t.yaml:3:19: trusted_proxies[0]: invalid CIDR '10.0.0.0/33' "
     "(expected ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.0/8)"},
    {LS "trusted_proxies: [\"::1/129\"]\n" UP RT,
     "t.yaml:3:19: trusted_proxies[0]: invalid CIDR '::1/129' "
     "(expected ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.0/8)"},
    {LS "trusted_proxies: [10.0.0.0/8, 10.0.0/8]\n" UP RT,
     "t.yaml:3:31: trusted_proxies[1]: invalid CIDR '10.0.0/8' "
     "(expected ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.0/8)"},
    {LS "trusted_proxies: [\"10.0.0.0/\"]\n" UP RT,
     "t.yaml:3:19: trusted_proxies[0]: invalid CIDR '10.0.0.0/' "
     "(expected ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.0/8)"},
    /* resolver */
    {LS "resolver: { nameservers: [\"dns.local:53\"] }\n" UP RT,
     "t.yaml:3:27: resolver.nameservers[0]: invalid name server 'dns.local:53' "
     "(expected IP, IP:PORT or [IPv6]:PORT)"},
    {LS "resolver: { nameservers: [\"127.0.0.1:0\"] }\n" UP RT,
     "t.yaml:3:27: resolver.nameservers[0]: invalid name server '127.0.0.1:0' "
     "(expected IP, IP:PORT or [IPv6]:PORT)"},
    /* sizes, durations, numbers, booleans, enumerations */
    {LS "limits: { body_bytes: 10x }\n" UP RT,
     "t.yaml:3:23: limits.body_bytes: invalid size '10x' (examples: 512, 16k, 10m, 1g)"},
    {LS "limits: { header_bytes: 512 }\n" UP RT,
     "t.yaml:3:25: limits.header_bytes: 512 is out of range (1k..16m)"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    timeouts: { connect: 5x }\n" RT,
     "t.yaml:6:26: upstreams.web.timeouts.connect: invalid duration '5x' "
     "(examples: 500ms, 30s, 5m)"},
    {LS "timeouts: { header: 0s }\n" UP RT,
     "t.yaml:3:21: timeouts.header: 0s is out of range (1ms..24h)"},
    {LS "timeouts: { idle: 25h }\n" UP RT,
     "t.yaml:3:19: timeouts.idle: 25h is out of range (1ms..24h)"},
    {LS "limits: { headers: 0 }\n" UP RT,
     "t.yaml:3:20: limits.headers: 0 is out of range (1..10000)"},
    {LS "limits: { headers: -1 }\n" UP RT, "t.yaml:3:20: limits.headers: invalid integer '-1'"},
    {"workers: 0\n" LS UP RT,
     "t.yaml:1:10: workers: invalid value '0' (expected auto or an integer 1..256)"},
    {"workers: 257\n" LS UP RT,
     "t.yaml:1:10: workers: invalid value '257' (expected auto or an integer 1..256)"},
    {LS UP "routes:\n  - { upstream: web, strip_prefix: yes }\n",
     "t.yaml:7:36: routes[0].strip_prefix: expected true or false, got 'yes'"},
    {LS "log: { level: verbose }\n" UP RT,
     "t.yaml:3:15: log.level: invalid value 'verbose' (expected debug, info, warn or error)"},
    {LS "log: { access: text }\n" UP RT,
     "t.yaml:3:16: log.access: invalid value 'text' (expected json or off)"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    balance: random\n" RT,
     "t.yaml:6:14: upstreams.web.balance: invalid value 'random' "
     "(expected round_robin or least_outstanding)"},
    /* environment */
    {"listen:\n  - address: \"${GATEHOUSE_TEST_UNSET}\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: environment variable GATEHOUSE_TEST_UNSET is not set"},
    {"listen:\n  - address: \"${GATEHOUSE_TEST_UNSET\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: malformed variable reference in "
     "'${GATEHOUSE_TEST_UNSET' (expected ${NAME} or ${NAME:-default})"},
    {"listen:\n  - address: \"${1X}\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: malformed variable reference in "
     "'${1X}' (expected ${NAME} or ${NAME:-default})"},
    {"listen:\n  - address: \"${X-1}\"\n" UP RT,
     "t.yaml:2:14: listen[0].address: malformed variable reference in "
     "'${X-1}' (expected ${NAME} or ${NAME:-default})"},
    /* duplicates */
    {LS "limits: { headers: 1, headers: 2 }\n" UP RT,
     "t.yaml:3:23: duplicate key 'headers' in limits"},
    {LS LS UP RT, "t.yaml:3:1: duplicate key 'listen' in top level"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n  web:\n    servers: [\"b:1\"]\n" RT,
     "t.yaml:6:3: upstreams: duplicate upstream 'web'"},
    {LS UP "routes:\n  - { match: { path: /api/ }, upstream: web }\n"
           "  - { match: { path: /api }, upstream: web }\n",
     "t.yaml:8:5: routes[1]: duplicate route (same host and path as routes[0])"},
    {LS UP "routes:\n  - { match: { host: A.com }, upstream: web }\n"
           "  - { match: { host: b.com }, upstream: web }\n"
           "  - { match: { host: a.COM, path: / }, upstream: web }\n",
     "t.yaml:9:5: routes[2]: duplicate route (same host and path as routes[0])"},
    /* YAML itself */
    {"", "t.yaml:1:1: empty configuration (expected a mapping with listen, upstreams and "
         "routes)"},
    {"# nothing\n", "t.yaml:1:1: empty configuration (expected a mapping with listen, "
                    "upstreams and routes)"},
    {LS "upstreams:\n  web: &w\n    servers: [\"a:1\"]\n  web2: *w\n" RT,
     "t.yaml:6:9: YAML aliases are not supported ('*w'): repeat the value instead"},
    {"listen: [\n", "t.yaml:2:1: invalid YAML: did not find expected node content "
                    "(while parsing a flow node at 2:1)"},
    {LS UP "routes:\n  - { match: { host: *.example.com }, upstream: web }\n",
     "t.yaml:7:23: invalid YAML: did not find expected alphabetic or numeric character "
     "(while scanning an alias at 7:22); quote values that start with '*'"},
    {"a: b: c\n", "t.yaml:1:5: invalid YAML: mapping values are not allowed in this "
                  "context"},
    {"a: \"\\0\"\n", "t.yaml:1:4: NUL characters are not allowed"},
    {"a: \xff\n", "t.yaml:1:4: invalid YAML: invalid leading UTF-8 octet (byte 0xFF)"},
    {LS UP RT "---\n" LS, "t.yaml:8:1: only one YAML document is allowed"},
    /* missing sections */
    {UP RT, "t.yaml:1:1: missing required key 'listen' in top level"},
    {LS RT, "t.yaml:1:1: missing required key 'upstreams' in top level"},
    {LS UP, "t.yaml:1:1: missing required key 'routes' in top level"},
    {LS "upstreams: {}\n" RT, "t.yaml:3:12: upstreams: at least one upstream is required"},
    {LS UP "routes: []\n", "t.yaml:6:9: routes: at least one route is required"},
    {LS UP "routes:\n  - { strip_prefix: true }\n",
     "t.yaml:7:5: missing required key 'upstream' in routes[0]"},
    /* routes */
    {LS UP "routes:\n  - { match: { host: \"example.com:8080\" }, upstream: web }\n",
     "t.yaml:7:22: routes[0].match.host: host 'example.com:8080' must not include a port"},
    {LS UP "routes:\n  - { match: { host: \"a.*.com\" }, upstream: web }\n",
     "t.yaml:7:22: routes[0].match.host: invalid host 'a.*.com' "
     "(expected a name such as api.example.com or *.example.com)"},
    {LS UP "routes:\n  - { match: { path: api }, upstream: web }\n",
     "t.yaml:7:22: routes[0].match.path: invalid path 'api' (must start with '/')"},
    {LS UP "routes:\n  - { match: { path: \"/a?b\" }, upstream: web }\n",
     "t.yaml:7:22: routes[0].match.path: invalid path '/a?b' "
     "(no spaces, control characters, '?' or '#')"},
    /* admin */
    {LS "admin: { address: \"localhost:9901\" }\n" UP RT,
     "t.yaml:3:19: admin.address: invalid address 'localhost:9901' (expected IP:PORT, "
     "[IPv6]:PORT or *:PORT)"},
    {LS "admin: { port: 9901 }\n" UP RT, "t.yaml:3:10: unknown key 'port' in admin"},
    {LS "admin: {}\n" UP RT, "t.yaml:3:8: missing required key 'address' in admin"},
    /* upstreams */
    {LS "upstreams:\n  web:\n    protocol: fcgi\n    servers: [\"a:1\"]\n" RT,
     "t.yaml:5:15: upstreams.web.protocol: unknown protocol 'fcgi' (supported: http, uwsgi, asgi)"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    connections: 2\n" RT,
     "t.yaml:6:18: upstreams.web.connections: connections applies to asgi upstreams only"},
    {LS "upstreams:\n  web:\n    protocol: uwsgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    ping: { interval: 1s }\n" RT,
     "t.yaml:7:11: upstreams.web.ping: ping applies to asgi upstreams only"},
    {LS "upstreams:\n  web:\n    protocol: asgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    connections: 0\n" RT,
     "t.yaml:7:18: upstreams.web.connections: 0 is out of range (1..64)"},
    {LS "upstreams:\n  web:\n    protocol: asgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    ping: { timeout: 10ms }\n" RT,
     "t.yaml:7:22: upstreams.web.ping.timeout: 10ms is out of range (100ms..24h)"},
    {LS "upstreams:\n  web:\n    protocol: asgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    concurrency: 4\n" RT,
     "t.yaml:7:18: upstreams.web.concurrency: concurrency applies to uwsgi upstreams only"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    buffer: { memory: 1m }\n" RT,
     "t.yaml:6:13: upstreams.web.buffer: buffer applies to uwsgi upstreams only (http "
     "upstreams stream both ways)"},
    {LS "upstreams:\n  web:\n    protocol: uwsgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    buffer: { memory: 2g }\n" RT,
     "t.yaml:7:23: upstreams.web.buffer.memory: 2g is out of range (0..1g)"},
    {LS "upstreams:\n  web:\n    protocol: uwsgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    buffer: { dir: tmp }\n" RT,
     "t.yaml:7:20: upstreams.web.buffer.dir: buffer directory must be an absolute path"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    concurrency: 4\n" RT,
     "t.yaml:6:18: upstreams.web.concurrency: concurrency applies to uwsgi upstreams only"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    queue: { limit: 4 }\n" RT,
     "t.yaml:6:12: upstreams.web.queue: queue applies to uwsgi upstreams only"},
    {LS "upstreams:\n  web:\n    protocol: uwsgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    concurrency: -1\n" RT,
     "t.yaml:7:18: upstreams.web.concurrency: invalid integer '-1'"},
    {LS "upstreams:\n  web:\n    protocol: uwsgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    queue: { timeout: 0s }\n" RT,
     "t.yaml:7:23: upstreams.web.queue.timeout: 0s is out of range (1ms..24h)"},
    {LS "upstreams:\n  web:\n    protocol: uwsgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    queue: { retry_after: 500ms }\n" RT,
     "t.yaml:7:27: upstreams.web.queue.retry_after: 500ms is out of range (1s..24h)"},
    {LS "upstreams:\n  web:\n    protocol: uwsgi\n    servers: [\"127.0.0.1:1\"]\n"
        "    queue: { size: 4 }\n" RT,
     "t.yaml:7:14: unknown key 'size' in upstreams.web.queue"},
    {LS "sse: { heartbeat: soon }\n" UP RT,
     "t.yaml:3:19: sse.heartbeat: invalid duration 'soon' (examples: 500ms, 30s, 5m)"},
    {LS UP "routes:\n  - { upstream: web, sse: { ping: 1s } }\n",
     "t.yaml:7:29: unknown key 'ping' in routes[0].sse"},
    /* websocket */
    {LS "websocket: { ping_timeout: 0s }\n" UP RT,
     "t.yaml:3:28: websocket.ping_timeout: must be more than 0 while ping_interval is 30s "
     "(ping_interval: 0 turns pings off)"},
    {LS "websocket: { ping_interval: 0, ping_timeout: 0 }\n" UP
        "routes:\n  - { upstream: web, websocket: { ping_interval: 10s } }\n",
     "t.yaml:8:50: routes[0].websocket.ping_interval: 10s needs a ping_timeout more than 0 "
     "(the top level's is 0s): set one here"},
    {LS UP "routes:\n  - { upstream: web, websocket: { ping_timeout: 0s } }\n",
     "t.yaml:7:49: routes[0].websocket.ping_timeout: must be more than 0 while ping_interval is "
     "30s (ping_interval: 0 turns pings off)"},
    {LS "websocket: { ping_interval: 25h }\n" UP RT,
     "t.yaml:3:29: websocket.ping_interval: 25h is out of range (0s..24h)"},
    {LS "websocket: { close_timeout: 0s }\n" UP RT,
     "t.yaml:3:29: websocket.close_timeout: 0s is out of range (1ms..24h)"},
    {LS "websocket: { max_message: 0 }\n" UP RT,
     "t.yaml:3:27: websocket.max_message: 0 is out of range (1..1g)"},
    {LS "websocket: { max_message: 2g }\n" UP RT,
     "t.yaml:3:27: websocket.max_message: 2g is out of range (1..1g)"},
    {LS "websocket: { max_message: 1mb }\n" UP RT,
     "t.yaml:3:27: websocket.max_message: invalid size '1mb' (examples: 512, 16k, 10m, 1g)"},
    {LS "websocket: { deflate_window_bits: 8 }\n" UP RT,
     "t.yaml:3:35: websocket.deflate_window_bits: 8 is out of range (9..15)"},
    {LS UP "routes:\n  - { upstream: web, websocket: { deflate_window_bits: 16 } }\n",
     "t.yaml:7:56: routes[0].websocket.deflate_window_bits: 16 is out of range (9..15)"},
    {LS "websocket: { deflate: yes }\n" UP RT,
     "t.yaml:3:23: websocket.deflate: expected true or false, got 'yes'"},
    {LS "websocket: { deflate_no_context_takeover: 1 }\n" UP RT,
     "t.yaml:3:43: websocket.deflate_no_context_takeover: expected true or false, got '1'"},
    {LS "websocket: { origins: \"*\" }\n" UP RT,
     "t.yaml:3:23: websocket.origins: expected a sequence, got a scalar"},
    {LS "websocket: { origins: [\"https://app.example.com/\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: origin 'https://app.example.com/' must not end with "
     "'/' (browsers send scheme://host[:port], with no path)"},
    {LS "websocket: { origins: [\"https://a.io\", \"https://b.io/app\"] }\n" UP RT,
     "t.yaml:3:40: websocket.origins[1]: origin 'https://b.io/app' must not have a path, "
     "query or fragment (browsers send scheme://host[:port] only)"},
    {LS "websocket: { origins: [\"https://b.io?x=1\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: origin 'https://b.io?x=1' must not have a path, "
     "query or fragment (browsers send scheme://host[:port] only)"},
    {LS "websocket: { origins: [\"ws://a.io\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid origin 'ws://a.io' "
     "(expected \"*\", http://HOST[:PORT] or https://HOST[:PORT])"},
    {LS "websocket: { origins: [app.example.com] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid origin 'app.example.com' "
     "(expected \"*\", http://HOST[:PORT] or https://HOST[:PORT])"},
    {LS "websocket: { origins: [\"null\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid origin 'null' "
     "(expected \"*\", http://HOST[:PORT] or https://HOST[:PORT])"},
    {LS "websocket: { origins: [\"https://*.example.com\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid origin 'https://*.example.com' "
     "(expected \"*\", http://HOST[:PORT] or https://HOST[:PORT])"},
    {LS "websocket: { origins: [\"https://user@a.io\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid origin 'https://user@a.io' "
     "(expected \"*\", http://HOST[:PORT] or https://HOST[:PORT])"},
    {LS "websocket: { origins: [\"http://10.1:80\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid origin 'http://10.1:80' "
     "(expected \"*\", http://HOST[:PORT] or https://HOST[:PORT])"},
    {LS "websocket: { origins: [\"http://[::1\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid origin 'http://[::1' "
     "(expected \"*\", http://HOST[:PORT] or https://HOST[:PORT])"},
    {LS "websocket: { origins: [\"https://a.io:0\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid port in origin 'https://a.io:0' "
     "(expected 1..65535)"},
    {LS "websocket: { origins: [\"https://a.io:\"] }\n" UP RT,
     "t.yaml:3:24: websocket.origins[0]: invalid port in origin 'https://a.io:' "
     "(expected 1..65535)"},
    {LS "websocket: { origins: [~] }\n" UP RT, "t.yaml:3:24: websocket.origins[0]: missing value"},
    {LS UP "routes:\n  - upstream: web\n    websocket:\n"
           "      origins: [\"*\", \"https://a.io/\"]\n",
     "t.yaml:9:22: routes[0].websocket.origins[1]: origin 'https://a.io/' must not end with '/' "
     "(browsers send scheme://host[:port], with no path)"},
    {LS "websocket: { ping: 1s }\n" UP RT, "t.yaml:3:14: unknown key 'ping' in websocket"},
    {LS UP "routes:\n  - { upstream: web, websocket: { heartbeat: 1s } }\n",
     "t.yaml:7:35: unknown key 'heartbeat' in routes[0].websocket"},
    {LS "websocket: [1]\n" UP RT, "t.yaml:3:12: websocket: expected a mapping, got a sequence"},
    {LS "websocket: { deflate: true, deflate: false }\n" UP RT,
     "t.yaml:3:29: duplicate key 'deflate' in websocket"},
    {LS "upstreams:\n  \"my web\":\n    servers: [\"a:1\"]\n" RT,
     "t.yaml:4:3: upstreams: invalid upstream name 'my web' "
     "(letters, digits, '_' and '-' only)"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    retries: 17\n" RT,
     "t.yaml:6:14: upstreams.web.retries: 17 is out of range (0..16)"},
    {LS "upstreams:\n  web:\n    servers: [\"a:1\"]\n    resolve: 500ms\n" RT,
     "t.yaml:6:14: upstreams.web.resolve: 500ms is out of range (1s..24h)"},
};

Test(config, uwsgi_upstream)
{
    static const char y[] = LS "upstreams:\n  app:\n    protocol: uwsgi\n"
                               "    servers: [\"unix:/run/app.sock\", \"127.0.0.1:9000\"]\n"
                               "    buffer: { memory: 64k, dir: /var/tmp }\n"
                               "    concurrency: 8\n"
                               "    queue: { limit: 0, timeout: 250ms, retry_after: 2500ms }\n"
                               "routes:\n  - upstream: app\n";
    struct gw_config *c = load_ok(y);
    const struct gw_upstream_conf *u = &c->upstreams[0];

    cr_expect_eq(u->protocol, GW_PROTO_UWSGI);
    cr_expect_eq(u->nservers, 2);
    cr_expect_eq(u->buffer_memory, 64u << 10);
    cr_expect_str_eq(u->buffer_dir, "/var/tmp");
    cr_expect_eq(u->concurrency, 8);
    cr_expect_eq(u->queue_limit, 0);
    cr_expect_eq(u->queue_timeout_ms, 250);
    cr_expect_eq(u->retry_after_ms, 2500);
    gw_config_unref(c);
}

Test(config, sse_heartbeat)
{
    static const char y[] = LS "sse: { heartbeat: 5s }\n" UP
                               "routes:\n  - { match: { path: /a/ }, upstream: web, "
                               "sse: { heartbeat: 0s } }\n  - upstream: web\n";
    static const char d[] = LS UP RT;
    struct gw_config *c = load_ok(y);

    cr_expect_eq(c->sse.heartbeat_ms, 5000);
    cr_expect_eq(c->routes[0].sse_heartbeat_ms, 0);
    cr_expect_eq(c->routes[1].sse_heartbeat_ms, 5000);
    gw_config_unref(c);
    c = load_ok(d);
    cr_expect_eq(c->sse.heartbeat_ms, 15000);
    cr_expect_eq(c->routes[0].sse_heartbeat_ms, 15000);
    gw_config_unref(c);
}

static void expect_ws_defaults(const struct gw_ws_conf *ws)
{
    cr_expect_eq(ws->ping_interval_ms, 30000);
    cr_expect_eq(ws->ping_timeout_ms, 10000);
    cr_expect_eq(ws->close_timeout_ms, 5000);
    cr_expect_eq(ws->max_message, 1048576);
    cr_expect_null(ws->origins);
    cr_expect_eq(ws->norigins, 0);
    cr_expect_eq(ws->any_origin, 1);
    cr_expect_eq(ws->deflate, 1);
    cr_expect_eq(ws->deflate_window_bits, 15);
    cr_expect_eq(ws->deflate_no_context_takeover, 0);
}

Test(config, websocket_defaults)
{
    struct gw_config *c = load_ok(LS UP RT);

    expect_ws_defaults(&c->websocket);
    expect_ws_defaults(&c->routes[0].ws);
    gw_config_unref(c);
}

/* Every key at the top level; a route without websocket gets all of it, origins included (as
 * its own copy, which ASan checks is freed once). */
Test(config, websocket_top_level)
{
    static const char y[] =
        LS "websocket:\n"
           "  ping_interval: 1m\n"
           "  ping_timeout: 1500ms\n"
           "  close_timeout: 2s\n"
           "  max_message: 64k\n"
           "  origins: [\"https://app.example.com\", \"http://localhost:3000\"]\n"
           "  deflate: false\n"
           "  deflate_window_bits: 9\n"
           "  deflate_no_context_takeover: true\n" UP RT;
    struct gw_config *c = load_ok(y);
    const struct gw_ws_conf *ws = &c->websocket, *rw = &c->routes[0].ws;

    cr_expect_eq(ws->ping_interval_ms, 60000);
    cr_expect_eq(ws->ping_timeout_ms, 1500);
    cr_expect_eq(ws->close_timeout_ms, 2000);
    cr_expect_eq(ws->max_message, 65536);
    cr_expect_eq(ws->any_origin, 0);
    cr_assert_eq(ws->norigins, 2);
    cr_expect_str_eq(ws->origins[0], "https://app.example.com");
    cr_expect_str_eq(ws->origins[1], "http://localhost:3000");
    cr_expect_eq(ws->deflate, 0);
    cr_expect_eq(ws->deflate_window_bits, 9);
    cr_expect_eq(ws->deflate_no_context_takeover, 1);

    cr_expect_eq(rw->ping_interval_ms, 60000);
    cr_expect_eq(rw->ping_timeout_ms, 1500);
    cr_expect_eq(rw->close_timeout_ms, 2000);
    cr_expect_eq(rw->max_message, 65536);
    cr_expect_eq(rw->any_origin, 0);
    cr_assert_eq(rw->norigins, 2);
    cr_expect_neq(rw->origins, ws->origins, "the route owns a copy");
    cr_expect_neq(rw->origins[0], ws->origins[0]);
    cr_expect_str_eq(rw->origins[0], "https://app.example.com");
    cr_expect_str_eq(rw->origins[1], "http://localhost:3000");
    cr_expect_eq(rw->deflate, 0);
    cr_expect_eq(rw->deflate_window_bits, 9);
    cr_expect_eq(rw->deflate_no_context_takeover, 1);
    gw_config_unref(c);
}

static const char ws_routes[] =
    "  - match: { path: /a/ }\n"
    "    upstream: web\n"
    "    websocket: { ping_interval: 0, max_message: 16m, deflate: false }\n"
    "  - match: { path: /b/ }\n"
    "    upstream: web\n"
    "    websocket: { origins: [\"https://b.example.com\"], deflate_window_bits: 12 }\n"
    "  - { match: { path: /c/ }, upstream: web, websocket: { origins: [\"*\"] } }\n"
    "  - { match: { path: /d/ }, upstream: web, websocket: { origins: [] } }\n"
    "  - upstream: web\n";

static void expect_ws_routes(const struct gw_config *c)
{
    const struct gw_ws_conf *a = &c->routes[0].ws, *b = &c->routes[1].ws;
    const struct gw_ws_conf *any = &c->routes[2].ws, *none = &c->routes[3].ws;
    const struct gw_ws_conf *rest = &c->routes[4].ws;

    cr_assert_eq(c->nroutes, 5);
    cr_expect_eq(c->websocket.ping_interval_ms, 20000);
    cr_expect_eq(c->websocket.ping_timeout_ms, 3000);
    cr_assert_eq(c->websocket.norigins, 2);

    /* Keys the route sets, then the top level's for the rest, origins included. */
    cr_expect_eq(a->ping_interval_ms, 0);
    cr_expect_eq(a->max_message, 16u << 20);
    cr_expect_eq(a->deflate, 0);
    cr_expect_eq(a->ping_timeout_ms, 3000);
    cr_expect_eq(a->close_timeout_ms, 5000);
    cr_expect_eq(a->deflate_window_bits, 10);
    cr_expect_eq(a->deflate_no_context_takeover, 1);
    cr_expect_eq(a->any_origin, 0);
    cr_assert_eq(a->norigins, 2);
    cr_expect_str_eq(a->origins[0], "https://example.com");
    cr_expect_str_eq(a->origins[1], "https://www.example.com");

    /* A route's origins replace the top level's list, never add to it. */
    cr_expect_eq(b->ping_interval_ms, 20000);
    cr_expect_eq(b->deflate_window_bits, 12);
    cr_expect_eq(b->deflate, 1);
    cr_expect_eq(b->any_origin, 0);
    cr_assert_eq(b->norigins, 1);
    cr_expect_str_eq(b->origins[0], "https://b.example.com");

    cr_expect_eq(any->any_origin, 1);
    cr_expect_null(any->origins);
    cr_expect_eq(any->norigins, 0);
    cr_expect_eq(any->deflate_window_bits, 10);

    cr_expect_eq(none->any_origin, 0, "[] allows only requests without Origin");
    cr_expect_null(none->origins);
    cr_expect_eq(none->norigins, 0);

    cr_expect_eq(rest->ping_interval_ms, 20000);
    cr_expect_eq(rest->max_message, 1u << 20);
    cr_assert_eq(rest->norigins, 2);
    cr_expect_str_eq(rest->origins[1], "https://www.example.com");
}

Test(config, websocket_route_overrides_key_by_key)
{
    static const char top[] = "websocket:\n"
                              "  ping_interval: 20s\n"
                              "  ping_timeout: 3s\n"
                              "  deflate_window_bits: 10\n"
                              "  deflate_no_context_takeover: true\n"
                              "  origins: [\"https://example.com\", \"https://www.example.com\"]\n";
    char y[2048];
    struct gw_config *c;

    snprintf(y, sizeof y, "%s%s%sroutes:\n%s", LS, top, UP, ws_routes);
    c = load_ok(y);
    expect_ws_routes(c);
    gw_config_unref(c);
    /* The top level is read before the routes wherever it is in the file. */
    snprintf(y, sizeof y, "%s%sroutes:\n%s%s", LS, UP, ws_routes, top);
    c = load_ok(y);
    expect_ws_routes(c);
    gw_config_unref(c);
}

Test(config, websocket_after_routes_in_the_file)
{
    static const char y[] =
        LS UP RT "websocket: { ping_interval: 0, origins: [\"https://x.io\"] }\n"
                 "sse: { heartbeat: 1s }\n";
    struct gw_config *c = load_ok(y);

    cr_expect_eq(c->routes[0].ws.ping_interval_ms, 0);
    cr_assert_eq(c->routes[0].ws.norigins, 1);
    cr_expect_str_eq(c->routes[0].ws.origins[0], "https://x.io");
    cr_expect_eq(c->routes[0].ws.any_origin, 0);
    cr_expect_eq(c->routes[0].sse_heartbeat_ms, 1000);
    gw_config_unref(c);
}

/* Entries are stored as browsers serialize Origin, so the gateway can compare bytes. */
Test(config, websocket_origins_canonical)
{
    static const char y[] = LS "websocket:\n  origins:\n"
                               "    - \"HTTPS://App.Example.COM\"\n"
                               "    - \"https://a.example.com:443\"\n"
                               "    - \"http://a.example.com:80\"\n"
                               "    - \"http://a.example.com:443\"\n"
                               "    - \"https://a.example.com:08443\"\n"
                               "    - \"http://127.0.0.1:8080\"\n"
                               "    - \"https://[0:0::1]\"\n"
                               "    - \"http://[2001:DB8::A]:8080\"\n"
                               "    - \"https://my_host-1.internal\"\n" UP RT;
    static const char *const want[] = {
        "https://app.example.com",
        "https://a.example.com",
        "http://a.example.com",
        "http://a.example.com:443",
        "https://a.example.com:8443",
        "http://127.0.0.1:8080",
        "https://[::1]",
        "http://[2001:db8::a]:8080",
        "https://my_host-1.internal",
    };
    struct gw_config *c = load_ok(y);

    cr_assert_eq(c->websocket.norigins, GW_ARRAY_LEN(want));
    for (size_t i = 0; i < GW_ARRAY_LEN(want); i++)
        cr_expect_str_eq(c->websocket.origins[i], want[i], "[%zu]", i);
    gw_config_unref(c);

    /* "*" anywhere allows every origin; the other entries are still checked. */
    c = load_ok(LS "websocket: { origins: [\"https://a.io\", \"*\"] }\n" UP RT);
    cr_expect_eq(c->websocket.any_origin, 1);
    cr_expect_null(c->websocket.origins);
    cr_expect_eq(c->routes[0].ws.any_origin, 1);
    cr_expect_null(c->routes[0].ws.origins);
    gw_config_unref(c);
}

Test(config, admin_listener)
{
    struct gw_config *c = load_ok(LS "admin: { address: \"127.0.0.1:9901\" }\n" UP RT);

    cr_expect_str_eq(c->admin.address, "127.0.0.1:9901");
    cr_expect_eq(c->admin.addr.ss_family, AF_INET);
    gw_config_unref(c);
    c = load_ok(LS UP RT);
    cr_expect_null(c->admin.address, "no admin mapping, no admin listener");
    gw_config_unref(c);
}

Test(config, asgi_upstream)
{
    static const char y[] = LS "upstreams:\n  app:\n    protocol: asgi\n"
                               "    servers: [\"unix:/run/app.sock\", \"[::1]:9000\"]\n"
                               "    connections: 3\n"
                               "    ping: { interval: 2s, timeout: 1500ms }\n"
                               "routes:\n  - upstream: app\n";
    static const char d[] = LS "upstreams:\n  app:\n    protocol: asgi\n"
                               "    servers: [\"127.0.0.1:9000\"]\n"
                               "routes:\n  - upstream: app\n";
    struct gw_config *c = load_ok(y);
    const struct gw_upstream_conf *u = &c->upstreams[0];

    cr_expect_eq(u->protocol, GW_PROTO_ASGI);
    cr_expect_eq(u->nservers, 2);
    cr_expect_eq(u->connections, 3);
    cr_expect_eq(u->ping_interval_ms, 2000);
    cr_expect_eq(u->ping_timeout_ms, 1500);
    gw_config_unref(c);
    c = load_ok(d);
    cr_expect_eq(c->upstreams[0].connections, 4);
    cr_expect_eq(c->upstreams[0].ping_interval_ms, 10000);
    cr_expect_eq(c->upstreams[0].ping_timeout_ms, 5000);
    gw_config_unref(c);
}

/* Container service names work for every protocol: the uwsgi and asgi drivers resolve them. */
Test(config, host_names_for_uwsgi_and_asgi_servers)
{
    static const char y[] = LS "upstreams:\n"
                               "  app:\n    protocol: uwsgi\n"
                               "    servers: [\"unix:/a\", \"app-1:9000\"]\n    resolve: 5s\n"
                               "  api:\n    protocol: asgi\n    servers: [\"api.internal:9001\"]\n"
                               "routes:\n  - upstream: app\n";
    struct gw_config *c = load_ok(y);

    cr_assert_eq(c->nupstreams, 2);
    cr_expect_str_eq(c->upstreams[0].servers[1].host, "app-1");
    cr_expect_eq(c->upstreams[0].servers[1].port, 9000);
    cr_expect_eq(c->upstreams[0].servers[1].numeric, 0);
    cr_expect_eq(c->upstreams[0].resolve_ms, 5000);
    cr_expect_str_eq(c->upstreams[1].servers[0].host, "api.internal");
    cr_expect_eq(c->upstreams[1].servers[0].numeric, 0);
    gw_config_unref(c);
}

ParameterizedTestParameters(config, refused)
{
    static size_t idx[GW_ARRAY_LEN(bad_cases)];

    for (size_t i = 0; i < GW_ARRAY_LEN(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, GW_ARRAY_LEN(idx));
}

ParameterizedTest(size_t *i, config, refused)
{
    const struct bad_case *tc = &bad_cases[*i];
    char err[512];

    unsetenv("GATEHOUSE_TEST_UNSET");
    load_err(tc->yaml, err, sizeof err);
    cr_assert_str_eq(err, tc->msg, "for:\n%s\ngot:      %s\nexpected: %s", tc->yaml, err, tc->msg);
}
