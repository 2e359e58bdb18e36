/* SPDX-License-Identifier: MIT */
/* An upstream's concurrency limit and its FIFO queue, shared by every worker thread and by
 * every configuration snapshot that names the upstream, so a reload never doubles the limit.
 *
 * One process-wide mutex guards every gate, queue and box: it is taken twice per exchange
 * (enter and leave), never on the hot path of bytes. A slot freed on one thread goes to the
 * oldest waiter, whichever thread it lives on: the waiter moves to its thread's box and that
 * thread is woken through an eventfd (libevent's own locking stays off). */
#ifndef GW_GATE_H
#define GW_GATE_H

#include <event2/event.h>
#include <stdatomic.h>
#include <stddef.h>

struct gw_gate;
struct gw_gate_box;

enum gw_wait_state {
    GW_WAIT_NONE = 0, /* holds nothing */
    GW_WAIT_QUEUED,   /* in the gate's queue */
    GW_WAIT_GRANTED,  /* given a slot, in its box until its thread calls granted() */
    GW_WAIT_HOLDING   /* holds a slot */
};

/* One exchange's place at a gate, embedded in the driver's per-exchange state and owned by
 * it. The fields are the gate's (under its mutex); the owner sets none of them. */
struct gw_gate_waiter {
    struct gw_gate_waiter *prev, *next;  /* in the gate's queue or in the box's list */
    struct gw_gate *gate;
    struct gw_gate_box *box;
    void (*granted)(struct gw_gate_waiter *w);
    enum gw_wait_state state;
};

/* Creates the box of the worker thread whose loop is |base|: where that thread's waiters are
 * handed their slots. Returns NULL when out of memory or file descriptors. */
struct gw_gate_box *gw_gate_box_new(struct event_base *base);

/* Frees |b|, on its thread, once no waiter of the thread is left. NULL is a no-op. */
void gw_gate_box_free(struct gw_gate_box *b);

/* Returns the gate named |name| (an upstream name), created on first use, with one more
 * reference, and sets its limits: |limit| slots (0: no limit) and |queue_limit| waiters. A
 * raised limit admits waiters at once. Thread-safe. */
struct gw_gate *gw_gate_attach(const char *name, unsigned limit, size_t queue_limit);

/* Drops a reference; the last one frees the gate (no waiter may be left). NULL is a no-op. */
void gw_gate_detach(struct gw_gate *g);

/* The shared in-flight counter of the server |address| at |g|, for balancing across
 * threads. Valid as long as the caller holds its reference to |g|. */
atomic_uint *gw_gate_server_counter(struct gw_gate *g, const char *address);

enum gw_gate_rc {
    GW_GATE_PASS = 0, /* a slot was free: |w| holds it now */
    GW_GATE_QUEUED,   /* |w| waits; granted(w) will be called on its box's thread */
    GW_GATE_FULL      /* no slot and the queue is full: |w| holds nothing */
};

/* Asks |g| for a slot for |w| (state NONE), from the thread of |box|. */
enum gw_gate_rc gw_gate_enter(struct gw_gate *g, struct gw_gate_waiter *w,
                              struct gw_gate_box *box, void (*granted)(struct gw_gate_waiter *));

/* Takes a queued |w| out of the queue (its wait timed out). Returns 1 when it was still
 * queued and now holds nothing, 0 when a slot was granted meanwhile: granted(w) follows. */
int gw_gate_unqueue(struct gw_gate_waiter *w);

/* Gives back whatever |w| holds: leaves the queue, or returns its slot (to the oldest
 * waiter, if any). Safe in every state, and again after; |w| holds nothing after. Called on
 * the owner's thread. */
void gw_gate_leave(struct gw_gate_waiter *w);

/* Counts for tests and metrics, read under the mutex: slots taken and waiters queued. */
void gw_gate_counts(struct gw_gate *g, unsigned *inflight, size_t *queued);

/* Sets the slots in use and the waiters of the gate named |name| (for /metrics), without
 * changing it. Returns 0 when no gate has that name (no uwsgi upstream of that name). Thread
 * safe. */
int gw_gate_counts_by_name(const char *name, unsigned *inflight, size_t *queued);

#endif
