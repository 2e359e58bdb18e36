/* SPDX-License-Identifier: MIT */
/* gatehouse: command line, configuration load, worker threads, signals (drain, reload). */
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "gateway/admin.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/tls.h"
#include "gateway/util.h"
#include "gateway/worker.h"

#define GW_VERSION "0.1.0"

struct gw_main {
    const char *config_path;
    struct gw_config *cfg;        /* the running configuration (one reference) */
    struct gw_worker *workers;
    unsigned nworkers;
    struct event_base *base;
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *drain_timer;    /* shutdown.delay, then shutdown.timeout */
    struct event *poll_timer;     /* checks whether the workers have finished */
    int stopping;                 /* 0 running, 1 delaying, 2 draining, 3 stopped hard */
    struct gw_metrics **wm;       /* each worker's figures, for the admin listener */
    struct gw_metrics_main mm;
    struct gw_admin *admin;       /* NULL without admin.address */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: gatehouse [-c FILE] [--check] [--healthcheck [URL]] [--version]\n"
               "  -c, --config FILE  configuration file (default config/gatehouse.yaml)\n"
               "      --check        validate the configuration and exit\n"
               "      --healthcheck [URL]\n"
               "                     GET URL (default: /healthz on the configuration's\n"
               "                     admin.address, else http://127.0.0.1:9901/healthz); exit 0\n"
               "                     when it answers 200, 1 otherwise (for HEALTHCHECK)\n"
               "  -v, --version      print the version and exit\n");
}

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Opens the listening sockets of |cfg| for one worker. An address already open under |old| is
 * kept by the worker (-1) instead of opening a second socket. Returns 0, or -1 (all closed). */
static int open_listeners(const struct gw_config *cfg, const struct gw_config *old, int *fds)
{
    for (size_t i = 0; i < cfg->nlisten; i++) {
        fds[i] = -1;
        if (old != NULL) {
            int kept = 0;
            for (size_t j = 0; j < old->nlisten && !kept; j++)
                kept = strcmp(old->listen[j].address, cfg->listen[i].address) == 0;
            if (kept)
                continue;
        }
        fds[i] = gw_listen_socket(&cfg->listen[i]);
        if (fds[i] < 0) {
            close_fds(fds, i);
            return -1;
        }
    }
    return 0;
}

static void reload(struct gw_main *m)
{
    char err[1024];
    struct gw_config *cfg;
    int **fds;

    gw_log_info("SIGHUP: reloading %s", m->config_path);
    m->mm.last_reload_ok = 0;
    m->mm.reloads_failed++;
    if (gw_config_load_file(m->config_path, &cfg, err, sizeof err) != 0) {
        gw_log_error("reload refused, keeping the running configuration: %s", err);
        return;
    }
    /* Certificates are read again: the new snapshot carries new contexts. */
    if (gw_tls_load(cfg, err, sizeof err) != 0) {
        gw_log_error("reload refused, keeping the running configuration: %s", err);
        gw_config_unref(cfg);
        return;
    }
    if ((cfg->admin.address == NULL) != (m->cfg->admin.address == NULL) ||
        (cfg->admin.address != NULL && strcmp(cfg->admin.address, m->cfg->admin.address) != 0))
        gw_log_warn("reload: admin.address takes effect only after a restart");
    if (cfg->workers != m->nworkers)
        gw_log_warn("reload: workers %u -> %u takes effect only after a restart", m->nworkers,
                    cfg->workers);
    fds = gw_xcalloc(m->nworkers, sizeof *fds);
    for (unsigned i = 0; i < m->nworkers; i++) {
        fds[i] = gw_xcalloc(cfg->nlisten, sizeof **fds);
        if (open_listeners(cfg, m->cfg, fds[i]) != 0) {
            gw_log_error("reload refused, keeping the running configuration: cannot listen");
            for (unsigned j = 0; j < i; j++) {
                close_fds(fds[j], cfg->nlisten);
                free(fds[j]);
            }
            free(fds[i]);
            free(fds);
            gw_config_unref(cfg);
            return;
        }
    }
    gw_log_set_level(cfg->log.level);
    gw_metrics_label(cfg);
    for (unsigned i = 0; i < m->nworkers; i++)
        gw_worker_post(&m->workers[i], GW_CMD_RELOAD, gw_config_ref(cfg), fds[i], cfg->nlisten);
    free(fds);
    gw_config_unref(m->cfg);
    m->cfg = cfg;
    m->mm.reloads_failed--;
    m->mm.reloads_ok++;
    m->mm.last_reload_ok = 1;
    gw_log_info("configuration reloaded");
}

static void set_timer(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    event_add(ev, &tv);
}

static void begin_drain(struct gw_main *m)
{
    m->stopping = 2;
    gw_log_info("draining: no new connections, finishing in-flight requests (%llu ms at most)",
                (unsigned long long)m->cfg->shutdown.timeout_ms);
    for (unsigned i = 0; i < m->nworkers; i++)
        gw_worker_post(&m->workers[i], GW_CMD_DRAIN, NULL, NULL, 0);
    set_timer(m->drain_timer, m->cfg->shutdown.timeout_ms);
}

static void stop_hard(struct gw_main *m, const char *why)
{
    m->stopping = 3;
    gw_log_warn("%s: closing the remaining connections", why);
    for (unsigned i = 0; i < m->nworkers; i++)
        gw_worker_post(&m->workers[i], GW_CMD_STOP, NULL, NULL, 0);
}

static void on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_main *m = arg;

    (void)fd;
    (void)what;
    if (m->stopping == 1)
        begin_drain(m);
    else if (m->stopping == 2)
        stop_hard(m, "shutdown.timeout passed");
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct gw_main *m = arg;

    (void)fd;
    (void)what;
    if (atomic_load(&gw_workers_running) == 0)
        event_base_loopexit(m->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct gw_main *m = arg;

    (void)what;
    if (sig == SIGHUP) {
        if (m->stopping == 0)
            reload(m);
        return;
    }
    if (m->stopping >= 2) {
        stop_hard(m, "second signal");
        return;
    }
    if (m->stopping == 1) {
        stop_hard(m, "second signal"); /* during shutdown.delay, as during the drain */
        return;
    }
    gw_log_info("%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    m->stopping = 1;
    m->mm.draining = 1; /* /readyz fails from now on, through shutdown.delay */
    set_timer(m->poll_timer, 50);
    if (m->cfg->shutdown.delay_ms > 0)
        set_timer(m->drain_timer, m->cfg->shutdown.delay_ms);
    else
        begin_drain(m);
}

static int run(struct gw_main *m)
{
    int rc = 0;
    unsigned started = 0;

    m->nworkers = m->cfg->workers;
    m->workers = gw_xcalloc(m->nworkers, sizeof *m->workers);
    m->wm = gw_xcalloc(m->nworkers, sizeof *m->wm);
    m->mm.last_reload_ok = 1;
    m->mm.start_time_s = (uint64_t)time(NULL);
    gw_metrics_label(m->cfg);
    for (unsigned i = 0; i < m->nworkers; i++) {
        int *fds = gw_xcalloc(m->cfg->nlisten, sizeof *fds);
        if (open_listeners(m->cfg, NULL, fds) != 0 ||
            gw_worker_init(&m->workers[i], i, m->cfg, fds) != 0) {
            free(fds);
            gw_log_error("cannot start worker %u", i);
            rc = 1;
            break;
        }
        free(fds);
        m->wm[i] = m->workers[i].metrics;
    }
    m->base = event_base_new();
    if (m->base == NULL)
        return 1;
    m->sig_term = evsignal_new(m->base, SIGTERM, on_signal, m);
    m->sig_int = evsignal_new(m->base, SIGINT, on_signal, m);
    m->sig_hup = evsignal_new(m->base, SIGHUP, on_signal, m);
    m->drain_timer = evtimer_new(m->base, on_drain_timer, m);
    m->poll_timer = event_new(m->base, -1, EV_PERSIST, on_poll, m);
    if (m->sig_term == NULL || m->sig_int == NULL || m->sig_hup == NULL ||
        m->drain_timer == NULL || m->poll_timer == NULL || event_add(m->sig_term, NULL) != 0 ||
        event_add(m->sig_int, NULL) != 0 || event_add(m->sig_hup, NULL) != 0)
        rc = 1;
    if (rc == 0 && m->cfg->admin.address != NULL) {
        struct gw_admin_view view = {
            .workers = m->wm,
            .nworkers = m->nworkers,
            .cfg = (const struct gw_config *const *)&m->cfg,
            .main = &m->mm,
        };
        m->admin = gw_admin_start(m->base, &m->cfg->admin, &view);
        if (m->admin == NULL)
            rc = 1;
    }
    for (unsigned i = 0; rc == 0 && i < m->nworkers; i++) {
        if (gw_worker_start(&m->workers[i]) != 0) {
            gw_log_error("cannot start worker thread %u", i);
            rc = 1;
            break;
        }
        started++;
    }
    if (rc == 0) {
        for (size_t i = 0; i < m->cfg->nlisten; i++)
            gw_log_info("listening on %s (%u workers)", m->cfg->listen[i].address, m->nworkers);
        event_base_dispatch(m->base);
    } else {
        for (unsigned i = 0; i < started; i++)
            gw_worker_post(&m->workers[i], GW_CMD_STOP, NULL, NULL, 0);
    }
    gw_admin_free(m->admin);
    for (unsigned i = 0; i < started; i++)
        gw_worker_join(&m->workers[i]);
    free(m->workers);
    free(m->wm);
    event_free(m->sig_term);
    event_free(m->sig_int);
    event_free(m->sig_hup);
    event_free(m->drain_timer);
    event_free(m->poll_timer);
    event_base_free(m->base);
    if (rc == 0)
        gw_log_info("stopped");
    return rc;
}

/* --healthcheck without a URL asks the configuration's admin.address (127.0.0.1 for a
 * wildcard), or the default one when the file cannot be read. */
static int healthcheck_main(const char *config_path, const char *url)
{
    char err[1024], buf[128];
    struct gw_config *cfg = NULL;
    int rc;

    if (url == NULL && gw_config_load_file(config_path, &cfg, err, sizeof err) == 0 &&
        cfg->admin.address != NULL) {
        const char *a = cfg->admin.address;
        if (strncmp(a, "*:", 2) == 0)
            snprintf(buf, sizeof buf, "http://127.0.0.1:%s/healthz", a + 2);
        else if (strncmp(a, "[::]:", 5) == 0)
            snprintf(buf, sizeof buf, "http://[::1]:%s/healthz", a + 5);
        else if (strncmp(a, "0.0.0.0:", 8) == 0)
            snprintf(buf, sizeof buf, "http://127.0.0.1:%s/healthz", a + 8);
        else
            snprintf(buf, sizeof buf, "http://%s/healthz", a);
        url = buf;
    }
    rc = gw_admin_healthcheck(url);
    gw_config_unref(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    struct gw_main m;
    char err[1024];
    int check = 0, healthcheck = 0, rc;
    const char *health_url = NULL;

    memset(&m, 0, sizeof m);
    m.config_path = "config/gatehouse.yaml";
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            m.config_path = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--healthcheck") == 0) {
            healthcheck = 1;
            if (i + 1 < argc && strncmp(argv[i + 1], "http://", 7) == 0)
                health_url = argv[++i];
        } else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("gatehouse %s\n", GW_VERSION);
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "gatehouse: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (healthcheck)
        return healthcheck_main(m.config_path, health_url);
    if (gw_config_load_file(m.config_path, &m.cfg, err, sizeof err) != 0 ||
        gw_tls_load(m.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        gw_config_unref(m.cfg);
        return 1;
    }
    if (check) {
        printf("%s: configuration ok\n", m.config_path);
        gw_config_unref(m.cfg);
        return 0;
    }
    /* A peer closing mid-write must be an error return, not a signal that kills us. */
    signal(SIGPIPE, SIG_IGN);
    gw_log_set_level(m.cfg->log.level);
    rc = run(&m);
    gw_config_unref(m.cfg);
    return rc;
}
