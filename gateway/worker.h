/* SPDX-License-Identifier: MIT */
/* Worker threads: each owns an event_base, its SO_REUSEPORT listening sockets and every
 * connection it accepts, for that connection's whole life. */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config/config.h"
#include "gateway/h1_parse.h"
#include "gateway/log.h"

struct gw_conn;
struct gw_gate_box;

/* A worker's runtime view of one configuration snapshot: the snapshot plus the per-worker
 * upstream state built from it. Referenced by the worker while current and by every exchange
 * and connection started under it; freed (pools closed) by the last unref, on the worker. */
struct gw_wsnap {
    struct gw_config *cfg;     /* one reference */
    void **pools;              /* [cfg->nupstreams]: the protocol driver's per-worker state */
    long refs;                 /* worker-local, no atomics: only the owning thread touches it */
};

struct gw_wsnap *gw_wsnap_ref(struct gw_wsnap *s);
void gw_wsnap_unref(struct gw_wsnap *s);

/* Work a worker must see finished, or free, before its loop ends although no connection holds
 * it (a WebSocket-over-HTTP session telling the app its client left). Linked into the worker's
 * list by its owner, which unlinks it when done. */
struct gw_worker_task {
    struct gw_worker_task *prev, *next;
    /* The loop ended: free the task now (it unlinks itself). */
    void (*abort)(struct gw_worker_task *t);
};

struct gw_listener {
    int fd;
    struct event *ev;
    char *address;             /* as configured, to match listeners across reloads */
};

/* Messages from the main thread; read under |lock| in the worker's notify callback. */
enum gw_worker_cmd { GW_CMD_NONE = 0, GW_CMD_RELOAD = 1, GW_CMD_DRAIN = 2, GW_CMD_STOP = 4 };

struct gw_worker {
    unsigned id;
    pthread_t thread;
    struct event_base *base;
    struct evdns_base *dns;
    struct gw_wsnap *snap;             /* current snapshot: new connections use it */
    struct gw_listener *listeners;
    size_t nlisteners;
    struct gw_conn *conns;             /* every open client connection (doubly linked) */
    size_t nconns;
    struct gw_worker_task *tasks;      /* detached work still running (doubly linked) */
    struct gw_conn *flush_head;        /* connections to flush at the end of this turn */
    struct event *flush_ev;            /* active while |flush_head| is not empty */
    uint64_t next_conn_id;             /* conn ids are id * 2^40 + n: unique across workers */
    uint64_t rng[2];                   /* xorshift128+ state for request ids */
    char hex_pairs[256][2];            /* a byte's two hex digits, low nibble first */
    struct h1_header *hdrs;            /* scratch for parsing heads, cfg->limits.headers long */
    size_t hdrs_cap;
    uint8_t ws_scratch[16384];         /* WebSocket (de)compression output, used within a call */
    struct evbuffer *ws_tmp;           /* one compressed frame being built, within a call */
    struct gw_access_log *alog;
    struct event *alog_timer;
    struct event *accept_timer;        /* re-enables accepting after running out of fds */
    int accept_paused;
    int draining;                      /* no keep-alive, no accept */

    struct gw_gate_box *gate_box;      /* where this thread's queued exchanges get slots */
    struct gw_metrics *metrics;        /* owned: this thread's figures for /metrics */
    struct event *notify;              /* activated by the main thread */
    pthread_mutex_t lock;              /* guards the fields below */
    unsigned cmds;                     /* enum gw_worker_cmd bits */
    struct gw_config *pending_cfg;     /* for GW_CMD_RELOAD, one reference */
    int *pending_fds;                  /* for GW_CMD_RELOAD: listening sockets, one per */
    size_t npending_fds;               /* pending_cfg->listen entry, -1 = keep the old one */
};

/* Creates worker |id| with configuration |cfg| (referenced) and the listening sockets |fds|
 * (one per cfg->listen entry, taken over). Returns 0 or a negative enum gw_err. */
int gw_worker_init(struct gw_worker *w, unsigned id, struct gw_config *cfg, const int *fds);

/* Starts the worker's thread. Returns 0 or GW_E_IO. */
int gw_worker_start(struct gw_worker *w);

/* From the main thread: posts a command (with |cfg| and |fds| for GW_CMD_RELOAD, taken over). */
void gw_worker_post(struct gw_worker *w, enum gw_worker_cmd cmd, struct gw_config *cfg,
                    int *fds, size_t nfds);

/* Number of worker threads still running their loop. */
extern atomic_int gw_workers_running;

/* Joins the thread and frees what is left of the worker (its loop freed its connections). */
void gw_worker_join(struct gw_worker *w);

/* Opens a listening socket for |l| with SO_REUSEPORT. Returns the fd or -1 (logged). */
int gw_listen_socket(const struct gw_listen_conf *l);

/* Links |t| into the worker's tasks: a drain waits for it as for a connection. */
void gw_worker_task_add(struct gw_worker *w, struct gw_worker_task *t);
/* Unlinks |t|; the last one gone ends a drain that has no connection left. */
void gw_worker_task_remove(struct gw_worker *w, struct gw_worker_task *t);

/* Adds |c| (which holds a guard for it) to the connections flushed at the end of this loop
 * turn, all in one callback. */
void gw_worker_flush_soon(struct gw_worker *w, struct gw_conn *c);

/* Returns the worker's header scratch array, grown to at least |n| entries (n is bounded by
 * limits.headers). */
struct h1_header *gw_worker_hdrs(struct gw_worker *w, size_t n);

/* Returns the next request id (32 hex digits) into |out| (33 bytes). */
void gw_worker_request_id(struct gw_worker *w, char out[33]);

/* The worker's conn list and counters: called by conn.c when a connection opens and closes. */
void gw_worker_conn_added(struct gw_worker *w, struct gw_conn *c);
void gw_worker_conn_removed(struct gw_worker *w, struct gw_conn *c);

#endif
