/* SPDX-License-Identifier: MIT */
/* gw_stream glue tests over socketpairs and loopback: reads, EOF, partial writes and drain,
 * timeouts (set and cleared), deferred write errors, connect. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gateway/stream.h"

struct probe {
    int reads, drains, events[8];
    enum gw_stream_what last;
    size_t bytes;
};

static void on_read(struct gw_stream *s, void *arg)
{
    struct probe *p = arg;

    p->reads++;
    p->bytes += evbuffer_get_length(s->in);
    evbuffer_drain(s->in, evbuffer_get_length(s->in));
}

static void on_drain(struct gw_stream *s, void *arg)
{
    struct probe *p = arg;

    (void)s;
    p->drains++;
}

static void on_event(struct gw_stream *s, enum gw_stream_what what, void *arg)
{
    struct probe *p = arg;

    (void)s;
    p->events[what]++;
    p->last = what;
}

/* Runs the loop for about |ms| milliseconds. */
static void spin(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static struct event_base *base;
static struct gw_stream st;
static struct probe pr;
static int peer;

static void setup_pair(void)
{
    int sv[2];

    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    base = event_base_new();
    memset(&pr, 0, sizeof pr);
    cr_assert_eq(gw_stream_init(&st, base, sv[0], on_read, on_drain, on_event, &pr), 0);
    peer = sv[1];
}

static void teardown_pair(void)
{
    gw_stream_close(&st);
    if (peer >= 0)
        close(peer);
    event_base_free(base);
}

TestSuite(stream, .init = setup_pair, .fini = teardown_pair, .timeout = 10);

Test(stream, reads_only_when_enabled)
{
    cr_assert_eq(write(peer, "hello", 5), 5);
    spin(base, 30);
    cr_expect_eq(pr.reads, 0, "reading is off until gw_stream_read(s, 1)");
    gw_stream_read(&st, 1);
    spin(base, 30);
    cr_expect_eq(pr.reads, 1);
    cr_expect_eq(pr.bytes, 5);
}

Test(stream, eof_is_reported)
{
    gw_stream_read(&st, 1);
    close(peer);
    peer = -1;
    spin(base, 30);
    /* Level-triggered: reported until the owner stops reading or closes. */
    cr_expect_geq(pr.events[GW_STREAM_EOF], 1);
    cr_expect_eq(pr.reads, 0);
}

Test(stream, flush_writes_at_once_without_drain_callback)
{
    evbuffer_add(st.out, "abc", 3);
    gw_stream_flush(&st);
    cr_expect_eq(evbuffer_get_length(st.out), 0, "written inside the call");
    cr_expect_eq(st.writing, 0, "no write event armed when everything went");
    spin(base, 20);
    cr_expect_eq(pr.drains, 0);
}

Test(stream, partial_write_arms_and_drains)
{
    static char big[4 << 20];
    char sink[65536];
    size_t got = 0;

    evbuffer_add(st.out, big, sizeof big);
    gw_stream_flush(&st);
    cr_assert_gt(evbuffer_get_length(st.out), 0, "a socketpair cannot take 4 MiB at once");
    cr_expect_eq(st.writing, 1);
    for (int i = 0; i < 2000 && got < sizeof big; i++) {
        ssize_t n = read(peer, sink, sizeof sink);
        if (n > 0)
            got += (size_t)n;
        spin(base, 1);
    }
    cr_expect_eq(got, sizeof big);
    cr_expect_eq(evbuffer_get_length(st.out), 0);
    cr_expect_geq(pr.drains, 1, "on_drain after the socket took the rest");
    cr_expect_eq(st.writing, 0);
}

/* Regression: a flush that empties |out| while the write event is armed (a drain is owed to
 * the owner) must still deliver on_drain, or the owner waits forever. */
Test(stream, flush_that_empties_an_armed_buffer_still_drains)
{
    static char big[4 << 20];
    char sink[65536];

    evbuffer_add(st.out, big, sizeof big);
    gw_stream_flush(&st);
    cr_assert_eq(st.writing, 1, "partial write arms the event");
    /* The peer reads everything without the loop running, then one more flush empties it. */
    for (int i = 0; i < 4000 && evbuffer_get_length(st.out) > 0; i++) {
        while (read(peer, sink, sizeof sink) > 0)
            ;
        gw_stream_flush(&st);
    }
    cr_assert_eq(evbuffer_get_length(st.out), 0);
    cr_expect_eq(pr.drains, 0, "not from inside the call");
    spin(base, 20);
    cr_expect_eq(pr.drains, 1, "delivered from the loop");
    cr_expect_eq(st.writing, 0);
}

Test(stream, read_timeout_fires)
{
    gw_stream_read(&st, 1);
    gw_stream_set_read_timeout(&st, 40);
    spin(base, 150);
    cr_expect_geq(pr.events[GW_STREAM_READ_TIMEOUT], 1);
}

/* Regression: event_add(ev, NULL) keeps a pending timeout; clearing must really clear. */
Test(stream, read_timeout_cleared_while_reading)
{
    gw_stream_read(&st, 1);
    gw_stream_set_read_timeout(&st, 40);
    gw_stream_set_read_timeout(&st, 0);
    spin(base, 150);
    cr_expect_eq(pr.events[GW_STREAM_READ_TIMEOUT], 0);
}

Test(stream, read_timeout_restarts_on_reads)
{
    gw_stream_read(&st, 1);
    gw_stream_set_read_timeout(&st, 80);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(write(peer, "x", 1), 1);
        spin(base, 30);
    }
    cr_expect_eq(pr.events[GW_STREAM_READ_TIMEOUT], 0, "each read restarts the clock");
    cr_expect_eq(pr.bytes, 6);
}

Test(stream, write_error_is_deferred_to_the_loop)
{
    close(peer);
    peer = -1;
    evbuffer_add(st.out, "abc", 3);
    gw_stream_flush(&st);
    cr_expect_eq(pr.events[GW_STREAM_ERROR], 0, "never from inside gw_stream_flush()");
    spin(base, 30);
    cr_expect_eq(pr.events[GW_STREAM_ERROR], 1);
    cr_expect_eq(st.err, EPIPE);
}

Test(stream, write_timeout_when_peer_stops_reading)
{
    static char big[4 << 20];

    gw_stream_set_write_timeout(&st, 50);
    evbuffer_add(st.out, big, sizeof big);
    gw_stream_flush(&st);
    spin(base, 200);
    cr_expect_geq(pr.events[GW_STREAM_WRITE_TIMEOUT], 1);
}

/* Binds |lfd| to a free loopback port, listens, and stores the address in |sin|. */
static void listen_loopback(int lfd, struct sockaddr_in *sin)
{
    socklen_t len = sizeof *sin;

    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(lfd, (struct sockaddr *)sin, sizeof *sin), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)sin, &len), 0);
}

Test(stream, connect_succeeds_and_refuses)
{
    struct sockaddr_in sin;
    struct gw_stream cs = {.fd = -1};
    struct probe cp;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);

    listen_loopback(lfd, &sin);

    memset(&cp, 0, sizeof cp);
    cr_assert_eq(gw_stream_connect(&cs, base, (struct sockaddr *)&sin, sizeof sin, 1000, on_read,
                                   on_drain, on_event, &cp),
                 0);
    cr_expect_eq(cp.events[GW_STREAM_CONNECTED], 0, "reported from the loop, not the call");
    spin(base, 50);
    cr_expect_eq(cp.events[GW_STREAM_CONNECTED], 1);
    gw_stream_close(&cs);

    close(lfd); /* nobody listens on the port any more */
    memset(&cp, 0, sizeof cp);
    if (gw_stream_connect(&cs, base, (struct sockaddr *)&sin, sizeof sin, 1000, on_read,
                          on_drain, on_event, &cp) == 0) {
        spin(base, 50);
        cr_expect_eq(cp.events[GW_STREAM_ERROR], 1);
        cr_expect_eq(cs.err, ECONNREFUSED);
        gw_stream_close(&cs);
    } else {
        cr_expect_eq(errno, ECONNREFUSED);
    }
}

Test(stream, a_parked_stream_connects_again_with_its_allocations)
{
    struct sockaddr_in sin;
    struct gw_stream cs = {.fd = -1};
    struct probe cp;
    struct event *rev;
    struct evbuffer *in;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);

    listen_loopback(lfd, &sin);
    for (int round = 0; round < 3; round++) {
        memset(&cp, 0, sizeof cp);
        cr_assert_eq(gw_stream_connect(&cs, base, (struct sockaddr *)&sin, sizeof sin, 1000,
                                       on_read, on_drain, on_event, &cp),
                     0);
        if (round == 0) {
            rev = cs.rev;
            in = cs.in;
        }
        cr_expect_eq(cs.rev, rev, "round %d reuses the events", round);
        cr_expect_eq(cs.in, in, "round %d reuses the buffers", round);
        evbuffer_add(cs.out, "x", 1);
        spin(base, 50);
        cr_expect_eq(cp.events[GW_STREAM_CONNECTED], 1, "round %d", round);
        gw_stream_park(&cs);
        cr_expect_eq(cs.fd, -1);
        cr_expect_eq(evbuffer_get_length(cs.out), 0);
        /* Parked: nothing of it fires any more. */
        spin(base, 20);
        cr_expect_eq(cp.events[GW_STREAM_ERROR] + cp.events[GW_STREAM_EOF], 0);
        int afd = accept(lfd, NULL, NULL);
        cr_assert_geq(afd, 0);
        close(afd);
    }
    gw_stream_close(&cs);
    cr_expect_null(cs.rev);
    close(lfd);
}

Test(stream, a_unix_connect_that_completes_at_once_is_ready_on_return)
{
    struct sockaddr_un sun;
    struct gw_stream cs = {.fd = -1};
    struct probe cp;
    char got[8] = {0};
    int now = -1, afd, lfd = socket(AF_UNIX, SOCK_STREAM, 0);

    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof sun.sun_path, "/tmp/gw-test-stream-%d.sock", (int)getpid());
    unlink(sun.sun_path);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sun, sizeof sun), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    memset(&cp, 0, sizeof cp);
    cr_assert_eq(gw_stream_connect_now(&cs, base, (struct sockaddr *)&sun, sizeof sun, 1000,
                                       on_read, on_drain, on_event, &cp, &now),
                 0);
    cr_expect_eq(now, 1);
    cr_expect_eq(cs.connecting, 0);
    evbuffer_add(cs.out, "now", 3);
    gw_stream_flush(&cs);
    afd = accept(lfd, NULL, NULL);
    cr_assert_geq(afd, 0);
    cr_expect_eq(read(afd, got, sizeof got), 3);
    cr_expect_str_eq(got, "now");
    spin(base, 20);
    cr_expect_eq(cp.events[GW_STREAM_CONNECTED], 0, "not reported: the caller knew at once");
    close(afd);
    gw_stream_close(&cs);
    close(lfd);
    unlink(sun.sun_path);
}

Test(stream, close_is_idempotent_and_safe_on_zeroed)
{
    struct gw_stream z;
    int p[2];

    /* Make fd 0 ours (CI may run with no stdin), then check a zeroed stream leaves it open. */
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(dup2(p[0], 0), 0);
    memset(&z, 0, sizeof z);
    gw_stream_close(&z); /* must not close fd 0, which a zeroed stream does not own */
    gw_stream_close(&z);
    cr_expect_neq(fcntl(0, F_GETFD), -1, "fd 0 still open");
}
