/* SPDX-License-Identifier: MIT */
/* Concurrency gates: a slot count and a FIFO queue per upstream name, shared by all workers. */
#include "gateway/gate.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "gateway/log.h"
#include "gateway/util.h"

/* A server's shared in-flight count; kept as long as its gate, whatever reloads remove. */
struct gate_server {
    struct gate_server *next;
    atomic_uint inflight;
    char address[];
};

/* Owned by the registry; freed by the last detach. */
struct gw_gate {
    struct gw_gate *next;                /* in the registry */
    long refs;
    unsigned limit;                      /* 0: no limit */
    unsigned inflight;                   /* slots held or granted */
    size_t queue_limit;
    size_t queued;
    struct gw_gate_waiter *head, *tail;  /* oldest first */
    struct gate_server *servers;
    char name[];
};

/* Owned by its worker thread. |fd| is written by any thread under the mutex (a box is freed
 * only once no waiter of its thread is left, so no writer can be on its way); |kick| wakes
 * the box from its own thread without a system call. */
struct gw_gate_box {
    int fd;
    struct event *ev;
    struct event *kick;
    struct gw_gate_waiter *head, *tail;  /* granted, oldest first */
};

static pthread_mutex_t gates_mu = PTHREAD_MUTEX_INITIALIZER;
static struct gw_gate *gates;

/* ---- lists (under gates_mu) ------------------------------------------------------------- */

static void list_push(struct gw_gate_waiter **head, struct gw_gate_waiter **tail,
                      struct gw_gate_waiter *w)
{
    w->next = NULL;
    w->prev = *tail;
    if (*tail != NULL)
        (*tail)->next = w;
    else
        *head = w;
    *tail = w;
}

static void list_remove(struct gw_gate_waiter **head, struct gw_gate_waiter **tail,
                        struct gw_gate_waiter *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        *tail = w->prev;
    w->prev = w->next = NULL;
}

/* Hands free slots to the oldest waiters, waking their threads; |here| is the caller's
 * box (NULL when unknown), woken without the eventfd. */
static void admit(struct gw_gate *g, struct gw_gate_box *here)
{
    while (g->head != NULL && (g->limit == 0 || g->inflight < g->limit)) {
        struct gw_gate_waiter *w = g->head;
        struct gw_gate_box *b = w->box;
        uint64_t one = 1;

        list_remove(&g->head, &g->tail, w);
        g->queued--;
        g->inflight++;
        w->state = GW_WAIT_GRANTED;
        list_push(&b->head, &b->tail, w);
        if (b == here) {
            event_active(b->kick, 0, 0);
            continue;
        }
        /* EAGAIN: the counter is near its maximum, so the thread has wake-ups pending. */
        if (write(b->fd, &one, sizeof one) < 0 && errno != EAGAIN)
            gw_log_error("gate %s: cannot wake a worker (%s)", g->name, strerror(errno));
    }
}

/* ---- boxes ------------------------------------------------------------------------------ */

/* Runs the granted() callbacks of the box's waiters. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct gw_gate_box *b = arg;

    (void)fd;
    (void)what;
    /* One at a time: a granted() callback may give its slot back and grant the next one. */
    for (;;) {
        struct gw_gate_waiter *w;

        pthread_mutex_lock(&gates_mu);
        w = b->head;
        if (w != NULL) {
            list_remove(&b->head, &b->tail, w);
            w->state = GW_WAIT_HOLDING;
        }
        pthread_mutex_unlock(&gates_mu);
        if (w == NULL)
            return;
        w->granted(w);
    }
}

static void on_box(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;

    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
        gw_log_error("gate: box read: %s", strerror(errno));
    on_kick(fd, what, arg);
}

struct gw_gate_box *gw_gate_box_new(struct event_base *base)
{
    struct gw_gate_box *b = gw_xcalloc(1, sizeof *b);

    b->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->fd < 0) {
        free(b);
        return NULL;
    }
    b->ev = event_new(base, b->fd, EV_READ | EV_PERSIST, on_box, b);
    b->kick = event_new(base, -1, 0, on_kick, b);
    if (b->ev == NULL || b->kick == NULL || event_add(b->ev, NULL) != 0) {
        gw_gate_box_free(b);
        return NULL;
    }
    return b;
}

void gw_gate_box_free(struct gw_gate_box *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&gates_mu);
    if (b->head != NULL)
        gw_log_error("gate: a worker's box freed with waiters in it");
    pthread_mutex_unlock(&gates_mu);
    if (b->ev != NULL)
        event_free(b->ev);
    if (b->kick != NULL)
        event_free(b->kick);
    close(b->fd);
    free(b);
}

/* ---- gates ------------------------------------------------------------------------------ */

struct gw_gate *gw_gate_attach(const char *name, unsigned limit, size_t queue_limit)
{
    struct gw_gate *g;
    size_t n = strlen(name);

    pthread_mutex_lock(&gates_mu);
    for (g = gates; g != NULL; g = g->next)
        if (strcmp(g->name, name) == 0)
            break;
    if (g == NULL) {
        g = gw_xcalloc(1, sizeof *g + n + 1);
        memcpy(g->name, name, n + 1);
        g->next = gates;
        gates = g;
    }
    g->refs++;
    /* The newest configuration's limits apply to every exchange from here on. */
    g->limit = limit;
    g->queue_limit = queue_limit;
    admit(g, NULL);
    pthread_mutex_unlock(&gates_mu);
    return g;
}

void gw_gate_detach(struct gw_gate *g)
{
    struct gw_gate **pp;

    if (g == NULL)
        return;
    pthread_mutex_lock(&gates_mu);
    if (--g->refs > 0) {
        pthread_mutex_unlock(&gates_mu);
        return;
    }
    for (pp = &gates; *pp != g; pp = &(*pp)->next)
        ;
    *pp = g->next;
    if (g->head != NULL || g->inflight != 0)
        gw_log_error("gate %s: freed with %u in flight and %zu queued", g->name, g->inflight,
                     g->queued);
    pthread_mutex_unlock(&gates_mu);
    while (g->servers != NULL) {
        struct gate_server *s = g->servers;
        g->servers = s->next;
        free(s);
    }
    free(g);
}

atomic_uint *gw_gate_server_counter(struct gw_gate *g, const char *address)
{
    struct gate_server *s;
    size_t n = strlen(address);

    pthread_mutex_lock(&gates_mu);
    for (s = g->servers; s != NULL; s = s->next)
        if (strcmp(s->address, address) == 0)
            break;
    if (s == NULL) {
        s = gw_xcalloc(1, sizeof *s + n + 1);
        atomic_init(&s->inflight, 0);
        memcpy(s->address, address, n + 1);
        s->next = g->servers;
        g->servers = s;
    }
    pthread_mutex_unlock(&gates_mu);
    return &s->inflight;
}

enum gw_gate_rc gw_gate_enter(struct gw_gate *g, struct gw_gate_waiter *w,
                              struct gw_gate_box *box, void (*granted)(struct gw_gate_waiter *))
{
    enum gw_gate_rc rc;

    w->gate = g;
    w->box = box;
    w->granted = granted;
    w->prev = w->next = NULL;
    pthread_mutex_lock(&gates_mu);
    /* Waiters go first: a newcomer never overtakes the queue, even when a slot just freed. */
    if (g->head == NULL && (g->limit == 0 || g->inflight < g->limit)) {
        g->inflight++;
        w->state = GW_WAIT_HOLDING;
        rc = GW_GATE_PASS;
    } else if (g->queued < g->queue_limit) {
        list_push(&g->head, &g->tail, w);
        g->queued++;
        w->state = GW_WAIT_QUEUED;
        rc = GW_GATE_QUEUED;
    } else {
        w->state = GW_WAIT_NONE;
        rc = GW_GATE_FULL;
    }
    pthread_mutex_unlock(&gates_mu);
    return rc;
}

int gw_gate_unqueue(struct gw_gate_waiter *w)
{
    int removed = 0;

    pthread_mutex_lock(&gates_mu);
    if (w->state == GW_WAIT_QUEUED) {
        list_remove(&w->gate->head, &w->gate->tail, w);
        w->gate->queued--;
        w->state = GW_WAIT_NONE;
        removed = 1;
    }
    pthread_mutex_unlock(&gates_mu);
    return removed;
}

void gw_gate_leave(struct gw_gate_waiter *w)
{
    struct gw_gate *g = w->gate;

    if (g == NULL)
        return; /* never entered */
    pthread_mutex_lock(&gates_mu);
    switch (w->state) {
    case GW_WAIT_QUEUED:
        list_remove(&g->head, &g->tail, w);
        g->queued--;
        break;
    case GW_WAIT_GRANTED:
        list_remove(&w->box->head, &w->box->tail, w);
        g->inflight--;
        admit(g, w->box);
        break;
    case GW_WAIT_HOLDING:
        g->inflight--;
        admit(g, w->box);
        break;
    case GW_WAIT_NONE:
        break;
    }
    w->state = GW_WAIT_NONE;
    pthread_mutex_unlock(&gates_mu);
}

void gw_gate_counts(struct gw_gate *g, unsigned *inflight, size_t *queued)
{
    pthread_mutex_lock(&gates_mu);
    *inflight = g->inflight;
    *queued = g->queued;
    pthread_mutex_unlock(&gates_mu);
}

int gw_gate_counts_by_name(const char *name, unsigned *inflight, size_t *queued)
{
    struct gw_gate *g;

    pthread_mutex_lock(&gates_mu);
    for (g = gates; g != NULL && strcmp(g->name, name) != 0; g = g->next)
        ;
    if (g != NULL) {
        *inflight = g->inflight;
        *queued = g->queued;
    }
    pthread_mutex_unlock(&gates_mu);
    return g != NULL;
}
