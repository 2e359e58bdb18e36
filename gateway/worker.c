/* SPDX-License-Identifier: MIT */
/* Worker threads: event loop, SO_REUSEPORT listeners, accept, snapshots, drain. */
#include "gateway/worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adapters/asgi/asgi_upstream.h"
#include "adapters/http/http_upstream.h"
#include "adapters/uwsgi/uwsgi_upstream.h"
#include "gateway/conn.h"
#include "gateway/gate.h"
#include "gateway/h2.h"
#include "gateway/metrics.h"
#include "gateway/util.h"

/* Connections accepted per readiness of a listener, so one busy listener cannot starve the
 * connections already open. */
#define ACCEPT_BATCH 32
#define ACCEPT_PAUSE_MS 500

static void set_nameservers(struct gw_worker *w, const struct gw_config *cfg,
                            const struct gw_config *old);

atomic_int gw_workers_running;

static struct gw_wsnap *wsnap_new(struct gw_worker *w, struct gw_config *cfg)
{
    struct gw_wsnap *s = gw_xcalloc(1, sizeof *s);

    s->cfg = cfg;
    s->refs = 1;
    s->pools = gw_xcalloc(cfg->nupstreams, sizeof *s->pools);
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct gw_upstream_conf *u = &cfg->upstreams[i];

        if (u->protocol == GW_PROTO_UWSGI)
            s->pools[i] = gw_uwsgi_pool_new(w->base, w->dns, w->gate_box, u);
        else if (u->protocol == GW_PROTO_ASGI)
            s->pools[i] = gw_asgi_pool_new(w->base, w->dns, u, cfg);
        else
            s->pools[i] = gw_http_pool_new(w->base, w->dns, u);
    }
    return s;
}

struct gw_wsnap *gw_wsnap_ref(struct gw_wsnap *s)
{
    s->refs++;
    return s;
}

void gw_wsnap_unref(struct gw_wsnap *s)
{
    if (s == NULL || --s->refs > 0)
        return;
    for (size_t i = 0; i < s->cfg->nupstreams; i++) {
        if (s->cfg->upstreams[i].protocol == GW_PROTO_UWSGI)
            gw_uwsgi_pool_free(s->pools[i]);
        else if (s->cfg->upstreams[i].protocol == GW_PROTO_ASGI)
            gw_asgi_pool_free(s->pools[i]);
        else
            gw_http_pool_free(s->pools[i]);
    }
    free(s->pools);
    gw_config_unref(s->cfg);
    free(s);
}

struct h1_header *gw_worker_hdrs(struct gw_worker *w, size_t n)
{
    if (w->hdrs_cap < n) {
        w->hdrs = gw_xrealloc(w->hdrs, n * sizeof *w->hdrs);
        w->hdrs_cap = n;
    }
    return w->hdrs;
}

void gw_worker_request_id(struct gw_worker *w, char out[33])
{
    for (int half = 0; half < 2; half++) {
        /* xorshift128+: fast and unpredictable enough for ids that only need to be unique. */
        uint64_t s1 = w->rng[0], s0 = w->rng[1], r;
        w->rng[0] = s0;
        s1 ^= s1 << 23;
        w->rng[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
        r = w->rng[1] + s0;
        /* The nibbles low first, two per table lookup. */
        for (int i = 0; i < 8; i++)
            memcpy(out + half * 16 + 2 * i, w->hex_pairs[(r >> (i * 8)) & 0xff], 2);
    }
    out[32] = '\0';
}

void gw_worker_conn_added(struct gw_worker *w, struct gw_conn *c)
{
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    gw_m_gauge(&w->metrics->connections_http1, 1);
}

void gw_worker_conn_removed(struct gw_worker *w, struct gw_conn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    w->nconns--;
    gw_m_gauge(&w->metrics->connections_http1, -1);
    if (w->draining && w->nconns == 0 && w->tasks == NULL)
        event_base_loopexit(w->base, NULL);
}

void gw_worker_flush_soon(struct gw_worker *w, struct gw_conn *c)
{
    if (w->flush_head == NULL)
        event_active(w->flush_ev, EV_WRITE, 1);
    c->flush_next = w->flush_head;
    w->flush_head = c;
}

/* Takes the flush list; each connection's guard is left (a closed one is freed then). */
static void run_flushes(struct gw_worker *w, int write)
{
    struct gw_conn *c;

    while ((c = w->flush_head) != NULL) {
        w->flush_head = c->flush_next;
        c->flush_next = NULL;
        c->flush_pending = 0;
        if (write && !c->closing) {
            if (c->h2 != NULL)
                gw_h2_flush(c);
            else
                gw_stream_flush(&c->st);
        }
        gw_conn_leave(c);
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_flushes(arg, 1);
}

void gw_worker_task_add(struct gw_worker *w, struct gw_worker_task *t)
{
    t->prev = NULL;
    t->next = w->tasks;
    if (w->tasks != NULL)
        w->tasks->prev = t;
    w->tasks = t;
}

void gw_worker_task_remove(struct gw_worker *w, struct gw_worker_task *t)
{
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        w->tasks = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    if (w->draining && w->nconns == 0 && w->tasks == NULL)
        event_base_loopexit(w->base, NULL);
}

/* Out of file descriptors the listener stays readable: stop watching it for a while instead
 * of spinning (and logging) on every loop turn, as nginx does. */
static void pause_accepting(struct gw_worker *w, int err)
{
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};

    if (w->accept_paused)
        return;
    gw_log_error("worker %u: accept: %s; not accepting for %d ms (raise the open files limit)",
                 w->id, strerror(err), ACCEPT_PAUSE_MS);
    w->accept_paused = 1;
    for (size_t j = 0; j < w->nlisteners; j++)
        if (w->listeners[j].ev != NULL)
            event_del(w->listeners[j].ev);
    evtimer_add(w->accept_timer, &tv);
}

static void on_accept_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;

    (void)fd;
    (void)what;
    w->accept_paused = 0;
    if (w->draining)
        return;
    for (size_t j = 0; j < w->nlisteners; j++)
        if (w->listeners[j].ev != NULL)
            event_add(w->listeners[j].ev, NULL);
}

/* The configuration of the listener on |fd|, found by address in the current snapshot (during
 * a reload the listener arrays change before the snapshot does), or NULL when the snapshot no
 * longer has it: its TLS settings, if any, are gone with it, so its last queued connections
 * are closed rather than served as something else (a TLS client answered in cleartext). */
static const struct gw_listen_conf *listen_conf(const struct gw_worker *w, int fd)
{
    const struct gw_config *cfg = w->snap->cfg;

    for (size_t j = 0; j < w->nlisteners; j++) {
        if (w->listeners[j].fd != fd || w->listeners[j].address == NULL)
            continue;
        for (size_t i = 0; i < cfg->nlisten; i++)
            if (strcmp(cfg->listen[i].address, w->listeners[j].address) == 0)
                return &cfg->listen[i];
    }
    return NULL;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;

    (void)what;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        const struct gw_listen_conf *lc;

        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(w, errno);
            return;
        }
        lc = listen_conf(w, fd);
        if (lc == NULL) {
            gw_log_debug("worker %u: connection on a removed listener closed", w->id);
            close(cfd);
            continue;
        }
        gw_conn_new(w, cfd, (struct sockaddr *)&ss, len, lc);
    }
}

int gw_listen_socket(const struct gw_listen_conf *l)
{
    int one = 1;
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        gw_log_error("listen %s: socket: %s", l->address, strerror(errno));
        return -1;
    }
    if (l->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) != 0 ||
        listen(fd, l->backlog) != 0) {
        gw_log_error("listen %s: %s", l->address, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int add_listener(struct gw_worker *w, struct gw_listener *l, int fd, const char *address)
{
    l->fd = fd;
    l->address = gw_xstrndup(address, strlen(address));
    l->ev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_accept, w);
    if (l->ev == NULL || (!w->accept_paused && event_add(l->ev, NULL) != 0)) {
        gw_log_error("listen %s: cannot watch the socket", address);
        return GW_E_NOMEM;
    }
    return 0;
}

/* Takes the connections already queued on |l| before closing it: with SO_REUSEPORT each socket
 * has its own queue, and closing it would reset them. */
static void close_listener(struct gw_worker *w, struct gw_listener *l)
{
    if (l->ev != NULL) {
        on_accept(l->fd, EV_READ, w);
        event_free(l->ev);
    }
    if (l->fd >= 0)
        close(l->fd);
    free(l->address);
    l->ev = NULL;
    l->fd = -1;
    l->address = NULL;
}

/* Installs the listeners of a new snapshot: kept where the address is unchanged (the main
 * thread passes -1), new sockets elsewhere, the rest closed. */
static void swap_listeners(struct gw_worker *w, const struct gw_config *cfg, int *fds)
{
    struct gw_listener *nl = gw_xcalloc(cfg->nlisten, sizeof *nl);

    for (size_t i = 0; i < cfg->nlisten; i++) {
        nl[i].fd = -1;
        if (fds[i] >= 0) {
            add_listener(w, &nl[i], fds[i], cfg->listen[i].address);
            continue;
        }
        for (size_t j = 0; j < w->nlisteners; j++) {
            if (w->listeners[j].address != NULL &&
                strcmp(w->listeners[j].address, cfg->listen[i].address) == 0) {
                nl[i] = w->listeners[j];
                w->listeners[j].ev = NULL;
                w->listeners[j].fd = -1;
                w->listeners[j].address = NULL;
                break;
            }
        }
        if (nl[i].address == NULL) {
            /* Should not happen (gw_worker_post carries sockets over); never leave a
             * configured address without a socket if it does. */
            int fd = gw_listen_socket(&cfg->listen[i]);
            if (fd >= 0)
                add_listener(w, &nl[i], fd, cfg->listen[i].address);
        }
    }
    for (size_t j = 0; j < w->nlisteners; j++)
        close_listener(w, &w->listeners[j]);
    free(w->listeners);
    w->listeners = nl;
    w->nlisteners = cfg->nlisten;
}

/* HTTP/2 connections are told to go (GOAWAY) after a reload; HTTP/1.1 ones take the new
 * configuration at their next request. */
static void reload_conns(struct gw_worker *w)
{
    struct gw_conn *c, *next;

    for (c = w->conns; c != NULL; c = next) {
        gw_conn_enter(c);
        if (c->h2 != NULL && !c->closing)
            gw_h2_reloaded(c);
        next = c->next;
        gw_conn_leave(c);
    }
}

static void start_drain(struct gw_worker *w)
{
    struct gw_conn *c, *next;

    if (w->draining)
        return;
    w->draining = 1;
    for (size_t j = 0; j < w->nlisteners; j++)
        close_listener(w, &w->listeners[j]);
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        gw_conn_enter(c);
        gw_conn_drain(c);
        next = c->next;
        gw_conn_leave(c);
    }
    if (w->nconns == 0 && w->tasks == NULL)
        event_base_loopexit(w->base, NULL);
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    uint64_t v;
    unsigned cmds;
    struct gw_config *cfg;
    int *fds;

    (void)what;
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
        gw_log_error("worker %u: notify read: %s", w->id, strerror(errno));
    pthread_mutex_lock(&w->lock);
    cmds = w->cmds;
    cfg = w->pending_cfg;
    fds = w->pending_fds;
    w->cmds = 0;
    w->pending_cfg = NULL;
    w->pending_fds = NULL;
    pthread_mutex_unlock(&w->lock);

    if ((cmds & GW_CMD_RELOAD) && cfg != NULL) {
        struct gw_wsnap *old = w->snap;
        if (!w->draining)
            swap_listeners(w, cfg, fds);
        else
            for (size_t i = 0; i < cfg->nlisten; i++)
                if (fds[i] >= 0)
                    close(fds[i]);
        set_nameservers(w, cfg, old->cfg);
        w->snap = wsnap_new(w, cfg);
        gw_wsnap_unref(old);
        free(fds);
        gw_access_log_flush(w->alog);
        reload_conns(w);
    }
    if (cmds & GW_CMD_DRAIN)
        start_drain(w);
    if (cmds & GW_CMD_STOP)
        event_base_loopbreak(w->base);
}

static int same_nameservers(const struct gw_config *a, const struct gw_config *b)
{
    if (a->resolver.nnameservers != b->resolver.nnameservers)
        return 0;
    for (size_t i = 0; i < a->resolver.nnameservers; i++)
        if (strcmp(a->resolver.nameservers[i], b->resolver.nameservers[i]) != 0)
            return 0;
    return 1;
}

/* Points the worker's resolver at resolver.nameservers, or back at /etc/resolv.conf when the
 * list is empty. |old| is the previous snapshot (NULL at start, where resolv.conf is loaded). */
static void set_nameservers(struct gw_worker *w, const struct gw_config *cfg,
                            const struct gw_config *old)
{
    if (w->dns == NULL || (old == NULL && cfg->resolver.nnameservers == 0) ||
        (old != NULL && same_nameservers(cfg, old)))
        return;
    evdns_base_clear_nameservers_and_suspend(w->dns);
    for (size_t i = 0; i < cfg->resolver.nnameservers; i++)
        if (evdns_base_nameserver_ip_add(w->dns, cfg->resolver.nameservers[i]) != 0)
            gw_log_error("worker %u: resolver: cannot use name server %s", w->id,
                         cfg->resolver.nameservers[i]);
    if (cfg->resolver.nnameservers == 0 &&
        evdns_base_resolv_conf_parse(w->dns, DNS_OPTION_NAMESERVERS, "/etc/resolv.conf") != 0)
        gw_log_warn("worker %u: resolver: no usable name server in /etc/resolv.conf", w->id);
    evdns_base_resume(w->dns);
}

static void on_alog_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;

    (void)fd;
    (void)what;
    gw_access_log_flush(w->alog);
}

int gw_worker_init(struct gw_worker *w, unsigned id, struct gw_config *cfg, const int *fds)
{
    struct timeval tv;
    int efd;

    memset(w, 0, sizeof *w);
    w->id = id;
    w->next_conn_id = ((uint64_t)id << 40) + 1;
    if (getrandom(w->rng, sizeof w->rng, 0) != (ssize_t)sizeof w->rng)
        w->rng[0] = gw_now_ms() ^ (uint64_t)(uintptr_t)w, w->rng[1] = 0x9e3779b97f4a7c15ull;
    w->rng[1] |= 1;
    for (int b = 0; b < 256; b++) {
        w->hex_pairs[b][0] = "0123456789abcdef"[b & 15];
        w->hex_pairs[b][1] = "0123456789abcdef"[b >> 4];
    }
    pthread_mutex_init(&w->lock, NULL);
    w->base = event_base_new();
    if (w->base == NULL)
        return GW_E_NOMEM;
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (w->dns == NULL) {
        gw_log_warn("worker %u: no name servers from /etc/resolv.conf; host names of upstream "
                    "servers will not resolve",
                    id);
        w->dns = evdns_base_new(w->base, 0);
    }
    set_nameservers(w, cfg, NULL);
    w->accept_timer = evtimer_new(w->base, on_accept_timer, w);
    w->flush_ev = event_new(w->base, -1, 0, on_flush, w);
    w->ws_tmp = evbuffer_new();
    if (w->accept_timer == NULL || w->flush_ev == NULL || w->ws_tmp == NULL)
        return GW_E_NOMEM;
    w->gate_box = gw_gate_box_new(w->base);
    if (w->gate_box == NULL)
        return GW_E_NOMEM;
    w->metrics = gw_xcalloc(1, sizeof *w->metrics);
    gw_config_ref(cfg);
    w->snap = wsnap_new(w, cfg);
    w->alog = gw_access_log_new(STDOUT_FILENO, cfg->log.access_buffer);
    w->alog_timer = event_new(w->base, -1, EV_PERSIST, on_alog_timer, w);
    tv.tv_sec = (time_t)(cfg->log.access_flush_ms / 1000);
    tv.tv_usec = (suseconds_t)(cfg->log.access_flush_ms % 1000 * 1000);
    if (w->alog_timer == NULL || event_add(w->alog_timer, &tv) != 0)
        return GW_E_NOMEM;
    /* An eventfd rather than event_active() from the main thread: that would need libevent's
     * locks in every base, a mutex on every event operation of the hot path. */
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0)
        return GW_E_IO;
    w->notify = event_new(w->base, efd, EV_READ | EV_PERSIST, on_notify, w);
    if (w->notify == NULL || event_add(w->notify, NULL) != 0)
        return GW_E_NOMEM;
    w->listeners = gw_xcalloc(cfg->nlisten, sizeof *w->listeners);
    w->nlisteners = cfg->nlisten;
    for (size_t i = 0; i < cfg->nlisten; i++)
        if (add_listener(w, &w->listeners[i], fds[i], cfg->listen[i].address) != 0)
            return GW_E_NOMEM;
    return 0;
}

static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;
    struct gw_conn *c;

    event_base_dispatch(w->base);
    /* Everything the worker owns is freed on its own thread, as the design requires. */
    for (size_t j = 0; j < w->nlisteners; j++)
        close_listener(w, &w->listeners[j]);
    /* Flushes still owed hold guards: drop them so that each close below frees its conn. */
    run_flushes(w, 0);
    while ((c = w->conns) != NULL) {
        gw_conn_enter(c);
        gw_conn_close(c);
        gw_conn_leave(c);
    }
    /* Closing the connections may have detached more tasks (a WebSocket-over-HTTP session
     * may even have sent its last POST): the loop has ended, so all go now, cancelled. */
    while (w->tasks != NULL)
        w->tasks->abort(w->tasks);
    gw_access_log_flush(w->alog);
    gw_wsnap_unref(w->snap);
    w->snap = NULL;
    /* A DNS lookup cancelled by the pools above frees itself from a deferred callback: give
     * it one turn of the loop, with nothing else of ours left to run. */
    event_del(w->notify);
    event_del(w->alog_timer);
    event_del(w->accept_timer);
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    gw_gate_box_free(w->gate_box);
    w->gate_box = NULL;
    atomic_fetch_sub(&gw_workers_running, 1);
    return NULL;
}

int gw_worker_start(struct gw_worker *w)
{
    atomic_fetch_add(&gw_workers_running, 1);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        atomic_fetch_sub(&gw_workers_running, 1);
        return GW_E_IO;
    }
    return 0;
}

void gw_worker_post(struct gw_worker *w, enum gw_worker_cmd cmd, struct gw_config *cfg,
                    int *fds, size_t nfds)
{
    uint64_t one = 1;
    struct gw_config *old_cfg;
    int *old_fds;
    size_t old_n;

    pthread_mutex_lock(&w->lock);
    w->cmds |= (unsigned)cmd;
    old_cfg = w->pending_cfg;
    old_fds = w->pending_fds;
    old_n = w->npending_fds;
    if (cmd == GW_CMD_RELOAD) {
        /* The newer reload was prepared against the older one, so it marks the addresses
         * that one added as kept (-1): hand their sockets over instead of closing them. */
        for (size_t i = 0; old_fds != NULL && i < nfds; i++) {
            for (size_t j = 0; fds[i] < 0 && j < old_n; j++) {
                if (old_fds[j] >= 0 &&
                    strcmp(old_cfg->listen[j].address, cfg->listen[i].address) == 0) {
                    fds[i] = old_fds[j];
                    old_fds[j] = -1;
                }
            }
        }
        w->pending_cfg = cfg;
        w->pending_fds = fds;
        w->npending_fds = nfds;
    } else {
        old_cfg = NULL;
        old_fds = NULL;
    }
    pthread_mutex_unlock(&w->lock);
    /* A reload not yet taken by the worker is replaced by the newer one. */
    if (old_fds != NULL)
        for (size_t i = 0; i < old_n; i++)
            if (old_fds[i] >= 0)
                close(old_fds[i]);
    free(old_fds);
    gw_config_unref(old_cfg);
    if (write(event_get_fd(w->notify), &one, sizeof one) < 0)
        gw_log_error("worker %u: notify: %s", w->id, strerror(errno));
}

void gw_worker_join(struct gw_worker *w)
{
    pthread_join(w->thread, NULL);
    free(w->listeners);
    gw_config_unref(w->pending_cfg);
    if (w->pending_fds != NULL)
        for (size_t i = 0; i < w->npending_fds; i++)
            if (w->pending_fds[i] >= 0)
                close(w->pending_fds[i]);
    free(w->pending_fds);
    if (w->notify != NULL) {
        close(event_get_fd(w->notify));
        event_free(w->notify);
    }
    if (w->alog_timer != NULL)
        event_free(w->alog_timer);
    if (w->accept_timer != NULL)
        event_free(w->accept_timer);
    if (w->flush_ev != NULL)
        event_free(w->flush_ev);
    gw_access_log_free(w->alog);
    gw_gate_box_free(w->gate_box); /* only left when the thread never ran */
    if (w->dns != NULL)
        evdns_base_free(w->dns, 0);
    free(w->hdrs);
    free(w->metrics);
    if (w->ws_tmp != NULL)
        evbuffer_free(w->ws_tmp);
    event_base_free(w->base);
    pthread_mutex_destroy(&w->lock);
}
