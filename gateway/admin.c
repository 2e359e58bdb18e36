/* SPDX-License-Identifier: MIT */
/* The admin listener and the --healthcheck client. See admin.h. */
#include "gateway/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/h1_parse.h"
#include "gateway/log.h"
#include "gateway/util.h"

#define ADMIN_CONNS_MAX 32     /* at the limit, the oldest connection makes room */
#define ADMIN_HEAD_MAX 4096    /* a request head larger than this is refused (431) */
#define ADMIN_DEADLINE_MS 2000 /* from accept: to send the head and take the answer, in all
                                  (a probe's timeout is a few seconds) */
#define ADMIN_PAUSE_MS 100     /* out of file descriptors: accepting stops this long */

struct admin_conn;

/* Owned by main.c (gw_admin_start / gw_admin_free). */
struct gw_admin {
    struct event_base *base;
    int fd;
    struct event *accept_ev;
    struct gw_admin_view view;
    struct admin_conn *conns;   /* newest first */
    size_t nconns;
    struct event *pause_ev;     /* re-enables accepting after running out of descriptors */
    int paused;
};

/* Owned by the admin's list; freed when answered and written, or timed out. */
struct admin_conn {
    struct gw_admin *a;
    struct admin_conn *prev, *next;
    int fd;
    struct event *ev;
    struct event *deadline;     /* ADMIN_DEADLINE_MS after accept: the connection goes */
    char in[ADMIN_HEAD_MAX];
    size_t inlen;
    char *out;                  /* the whole answer, malloc'd */
    size_t outlen, outoff;
    int head_only;              /* HEAD: the answer's head alone */
};

static void on_accept(evutil_socket_t fd, short what, void *arg);

static void conn_free(struct admin_conn *c)
{
    struct gw_admin *a = c->a;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    a->nconns--;
    event_free(c->ev);
    event_free(c->deadline);
    close(c->fd);
    free(c->out);
    free(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct admin_conn *c = arg;
    ssize_t n;

    (void)fd;
    (void)what;
    n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    c->outoff += (size_t)n;
    if (c->outoff == c->outlen)
        conn_free(c);
}

/* Queues the answer and switches the connection to writing it. */
static void answer(struct admin_conn *c, int status, const char *reason, const char *ctype,
                   const char *body, size_t blen)
{
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                      status, reason, ctype, blen);

    if (c->head_only)
        blen = 0;
    c->out = gw_xmalloc((size_t)hn + blen);
    memcpy(c->out, head, (size_t)hn);
    if (blen > 0)
        memcpy(c->out + hn, body, blen);
    c->outlen = (size_t)hn + blen;
    event_free(c->ev);
    c->ev = event_new(c->a->base, c->fd, EV_WRITE | EV_PERSIST, on_write, c);
    if (c->ev == NULL || event_add(c->ev, NULL) != 0) {
        gw_log_error("admin: out of memory");
        abort();
    }
}

static void answer_text(struct admin_conn *c, int status, const char *reason, const char *text)
{
    answer(c, status, reason, "text/plain; charset=utf-8", text, strlen(text));
}

static void route(struct admin_conn *c, const struct h1_request *r)
{
    const struct gw_admin_view *v = &c->a->view;
    struct gw_slice path = r->path;
    const char *q = memchr(path.p, '?', path.len);

    if (q != NULL)
        path.len = (size_t)(q - path.p);
    if (GW_SLICE_EQ_LIT(path, "/healthz")) {
        answer_text(c, 200, "OK", "ok\n");
    } else if (GW_SLICE_EQ_LIT(path, "/readyz")) {
        if (v->main->draining)
            answer_text(c, 503, "Service Unavailable", "draining\n");
        else
            answer_text(c, 200, "OK", "ready\n");
    } else if (GW_SLICE_EQ_LIT(path, "/metrics")) {
        size_t len;
        char *body = gw_metrics_render(v->workers, v->nworkers, *v->cfg, v->main, &len);

        answer(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, len);
        free(body);
    } else {
        answer_text(c, 404, "Not Found", "not found: /healthz, /readyz, /metrics\n");
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct admin_conn *c = arg;
    struct h1_limits lim = {.header_bytes = ADMIN_HEAD_MAX, .headers = 32,
                            .target_bytes = 1024, .body_bytes = 0};
    struct h1_header hdrs[32];
    struct h1_request r;
    ssize_t n;
    int rc;

    (void)fd;
    (void)what;
    n = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    c->inlen += (size_t)n;
    rc = h1_parse_request(c->in, c->inlen, &lim, hdrs, 32, &r);
    if (rc == H1_INCOMPLETE && c->inlen < sizeof c->in)
        return;
    if (rc == H1_INCOMPLETE) {
        gw_log_info("admin: request head over %d bytes: 431", ADMIN_HEAD_MAX);
        answer_text(c, 431, "Request Header Fields Too Large", "request head too large\n");
        return;
    }
    if (rc < 0) {
        gw_log_info("admin: malformed request (%s): 400", r.err != NULL ? r.err : "?");
        answer_text(c, 400, "Bad Request", "bad request\n");
        return;
    }
    if (!GW_SLICE_EQ_LIT(r.method, "GET") && !GW_SLICE_EQ_LIT(r.method, "HEAD")) {
        gw_log_info("admin: method %.*s: 405", (int)r.method.len, r.method.p);
        answer_text(c, 405, "Method Not Allowed", "GET only\n");
        return;
    }
    c->head_only = GW_SLICE_EQ_LIT(r.method, "HEAD");
    route(c, &r);
}

static void on_pause_end(evutil_socket_t fd, short what, void *arg)
{
    struct gw_admin *a = arg;

    (void)fd;
    (void)what;
    a->paused = 0;
    event_add(a->accept_ev, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct gw_admin *a = arg;
    struct timeval tv = {ADMIN_DEADLINE_MS / 1000, ADMIN_DEADLINE_MS % 1000 * 1000};

    (void)what;
    for (int k = 0; k < 16; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct admin_conn *c;

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Level-triggered: without a pause the loop would spin on the error. */
                struct timeval p = {0, ADMIN_PAUSE_MS * 1000};

                if (!a->paused)
                    gw_log_warn("admin: accept: %s; pausing %d ms", strerror(errno),
                                ADMIN_PAUSE_MS);
                a->paused = 1;
                event_del(a->accept_ev);
                evtimer_add(a->pause_ev, &p);
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                gw_log_warn("admin: accept: %s", strerror(errno));
            }
            return;
        }
        /* A slow or stuck client must not keep the probes out: the oldest makes room. */
        if (a->nconns >= ADMIN_CONNS_MAX) {
            struct admin_conn *old = a->conns;

            while (old->next != NULL)
                old = old->next;
            conn_free(old);
        }
        c = gw_xcalloc(1, sizeof *c);
        c->a = a;
        c->fd = fd;
        c->ev = event_new(a->base, fd, EV_READ | EV_PERSIST, on_read, c);
        c->deadline = evtimer_new(a->base, on_deadline, c);
        if (c->ev == NULL || c->deadline == NULL || event_add(c->ev, NULL) != 0 ||
            evtimer_add(c->deadline, &tv) != 0) {
            gw_log_error("admin: out of memory");
            abort();
        }
        c->next = a->conns;
        if (a->conns != NULL)
            a->conns->prev = c;
        a->conns = c;
        a->nconns++;
    }
}

struct gw_admin *gw_admin_start(struct event_base *base, const struct gw_listen_conf *l,
                                const struct gw_admin_view *view)
{
    struct gw_admin *a;
    int one = 1, fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) != 0 ||
        listen(fd, l->backlog) != 0) {
        gw_log_error("admin.address %s: cannot listen: %s", l->address, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    a = gw_xcalloc(1, sizeof *a);
    a->base = base;
    a->fd = fd;
    a->view = *view;
    a->accept_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, a);
    a->pause_ev = evtimer_new(base, on_pause_end, a);
    if (a->accept_ev == NULL || a->pause_ev == NULL || event_add(a->accept_ev, NULL) != 0) {
        gw_log_error("admin: out of memory");
        abort();
    }
    gw_log_info("admin listener on %s (/healthz /readyz /metrics)", l->address);
    return a;
}

void gw_admin_free(struct gw_admin *a)
{
    if (a == NULL)
        return;
    while (a->conns != NULL)
        conn_free(a->conns);
    event_free(a->accept_ev);
    event_free(a->pause_ev);
    close(a->fd);
    free(a);
}

/* ---- --healthcheck ------------------------------------------------------------------------ */

/* Waits for |events| on |fd| until |deadline_ms|. Returns 1 when ready. */
static int wait_fd(int fd, short events, uint64_t deadline_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    uint64_t now = gw_now_ms();

    return now < deadline_ms && poll(&p, 1, (int)(deadline_ms - now)) == 1;
}

int gw_admin_healthcheck(const char *url)
{
    char host[64], path[512], req[700], resp[256];
    unsigned port = 0;
    struct sockaddr_storage ss;
    socklen_t sslen;
    uint64_t deadline = gw_now_ms() + 2000; /* under the usual 3 s HEALTHCHECK timeout */
    size_t got = 0;
    int fd, n, status = 0;

    if (url == NULL)
        url = "http://127.0.0.1:9901/healthz";
    memset(&ss, 0, sizeof ss);
    path[0] = '/';
    path[1] = '\0';
    if (sscanf(url, "http://[%63[0-9a-fA-F:.]]:%u%511s", host, &port, path) >= 2) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            port = 0;
        sslen = sizeof *s6;
    } else if (sscanf(url, "http://%63[0-9.]:%u%511s", host, &port, path) >= 2) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            port = 0;
        sslen = sizeof *s4;
    } else {
        sslen = 0;
    }
    if (port == 0 || port > 65535 || path[0] != '/') {
        fprintf(stderr, "gatehouse: --healthcheck: expected http://IP:PORT/PATH, got '%s'\n",
                url);
        return 1;
    }
    errno = 0;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && (connect(fd, (struct sockaddr *)&ss, sslen) == 0 || errno == EINPROGRESS)) {
        socklen_t el = sizeof status;

        errno = ETIMEDOUT;
        if (wait_fd(fd, POLLOUT, deadline) &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &status, &el) == 0)
            errno = status;
    }
    if (fd < 0 || errno != 0) {
        fprintf(stderr, "gatehouse: --healthcheck: cannot connect to %s: %s\n", url,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    status = 0;
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nConnection: close\r\n\r\n", path,
                 ss.ss_family == AF_INET6 ? "[" : "", host, ss.ss_family == AF_INET6 ? "]" : "",
                 port);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        fprintf(stderr, "gatehouse: --healthcheck: %s: cannot send: %s\n", url, strerror(errno));
        close(fd);
        return 1;
    }
    while (got < sizeof resp - 1 && wait_fd(fd, POLLIN, deadline)) {
        ssize_t k = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
        resp[got] = '\0';
        if (strstr(resp, "\r\n") != NULL)
            break;
    }
    close(fd);
    resp[got] = '\0';
    if (sscanf(resp, "HTTP/1.%*[01] %d", &status) != 1) {
        fprintf(stderr, "gatehouse: --healthcheck: %s: no HTTP answer%s\n", url,
                got == 0 && gw_now_ms() >= deadline ? " within 2 s" : "");
        return 1;
    }
    if (status != 200) {
        fprintf(stderr, "gatehouse: --healthcheck: %s answered %d\n", url, status);
        return 1;
    }
    return 0;
}
