/*
 * test_handover.c -- the stream transports' lock-free hand-over of deferred
 * frames (stream_tx.c, "Handing over"; docs/pipelined.md, session 10), on
 * ipc:// and tcp://.
 *
 * Four threads send on one connection at once. Three push every frame as a
 * deferred frame with a link area (the lock-free path); the fourth cycles
 * through the three ways a frame can be sent -- a direct write (what a sync
 * call and a CANCEL do), a deferred frame with a link (pushed), a deferred
 * frame without one (queued under the connection's mutex) -- so pushed
 * frames and mutex-path frames of one thread interleave. Every frame carries
 * (thread, sequence) in its request id; the receiving side checks that each
 * thread's frames arrive complete and in the order that thread sent them (a
 * direct write must not overtake a frame the same thread pushed before it:
 * a CANCEL never overtakes its REQUEST). Every frame goes back through its
 * release hook exactly once (written, or refused when the queue was full and
 * sent again), and the counting allocator balances.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "svc/transport/aimsi_transport.h"
#include "testalloc.h"
#include "tr_raw.h"

#define THREADS 4u
#define PER_THREAD 3000u
#define WAIT_S 120 /* generous: a loaded machine under TSan is slow; never a timing assertion */

static const char *g_tr = "ipc";

static const aims_transport *transport(void)
{
    return strcmp(g_tr, "tcp") == 0 ? aimsi_transport_tcp() : aimsi_transport_ipc();
}

/* ---- the receiving side ----------------------------------------------------------- */

typedef struct sink {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned next[THREADS]; /* next sequence expected per sending thread */
    unsigned got;
    unsigned bad; /* out of order, duplicated, unknown thread or not a frame */
} sink;

static void *s_accept(void *user, void *listener, void *conn)
{
    (void)listener;
    (void)conn;
    return user;
}

static void s_frame(void *conn_user, const void *frame, size_t len)
{
    sink *s = conn_user;
    uint64_t id = 0;
    const uint8_t type = len >= AIMSI_FRAME_HEADER ? aimsi_frame_peek_id(frame, &id) : 0;
    const unsigned th = (unsigned)(id >> 32);
    const unsigned seq = (unsigned)(id & 0xffffffffu);
    pthread_mutex_lock(&s->mu);
    if (type != AIMSI_FRAME_REQUEST || th >= THREADS || seq != s->next[th]) {
        s->bad++;
    } else {
        s->next[th]++;
    }
    s->got++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void s_close(void *conn_user, aims_status why)
{
    (void)conn_user;
    (void)why;
}

/* The sending side's hooks: it receives nothing. */
static void c_frame(void *conn_user, const void *frame, size_t len)
{
    (void)conn_user;
    (void)frame;
    (void)len;
}

/* ---- the sending side -------------------------------------------------------------- */

static atomic_uint g_made;     /* frames built */
static atomic_uint g_released; /* frames given back through their release hook */
static atomic_uint g_full;     /* sends refused with AIMS_E_OVERLOADED (then sent again) */

static void release(void *ctx, void *frame)
{
    (void)ctx;
    atomic_fetch_add(&g_released, 1);
    aimsi_free(frame);
}

typedef struct sender {
    const aims_transport *t;
    void *inst;
    void *conn;
    unsigned th;
    int failed; /* a send failed for another reason than a full queue */
} sender;

/* A REQUEST frame with id (th, seq) and some payload, in a block with
 * AIMSI_FRAME_LINK bytes behind it; *link points there. */
static void *make(unsigned th, unsigned seq, size_t *len, void **link)
{
    uint8_t data[200];
    const size_t n = (size_t)((seq * 7u + th) % sizeof data);
    memset(data, (int)(seq & 0xffu), n);
    size_t fl = 0;
    void *f = tr_raw_frame(AIMSI_FRAME_REQUEST, ((uint64_t)th << 32) | seq, "svc", "m",
                           AIMSI_DT_BYTES, "b", data, n, &fl);
    if (f == NULL) {
        return NULL;
    }
    const size_t at = (fl + 7u) & ~(size_t)7u;
    uint8_t *blk = aimsi_malloc(at + AIMSI_FRAME_LINK);
    if (blk != NULL) {
        memcpy(blk, f, fl);
        atomic_fetch_add(&g_made, 1);
    }
    aimsi_free(f);
    *len = fl;
    *link = blk != NULL ? blk + at : NULL;
    return blk;
}

static void *sender_main(void *arg)
{
    sender *sd = arg;
    for (unsigned seq = 0; seq < PER_THREAD && !sd->failed;) {
        size_t len = 0;
        void *link = NULL;
        void *f = make(sd->th, seq, &len, &link);
        if (f == NULL) {
            sd->failed = 1;
            break;
        }
        /* Thread 0 cycles: direct write / pushed / queued under the mutex. */
        const unsigned way = sd->th == 0 ? seq % 3u : 1u;
        aimsi_transport_tl_defer = way != 0;
        aimsi_transport_tl_release.fn = release;
        aimsi_transport_tl_release.ctx = NULL;
        aimsi_transport_tl_release.link = way == 1 ? link : NULL;
        const aims_status rc = sd->t->send(sd->inst, sd->conn, f, len);
        aimsi_transport_tl_defer = 0;
        aimsi_transport_tl_release.fn = NULL;
        aimsi_transport_tl_release.link = NULL;
        if (rc == AIMS_E_OVERLOADED) {
            atomic_fetch_add(&g_full, 1); /* the frame was given back: build it again */
            usleep(1000);
            continue;
        }
        if (rc != AIMS_OK) {
            sd->failed = 1;
            break;
        }
        seq++;
    }
    return NULL;
}

/* A listening instance (the sink) and a dialing one with one connection. */
typedef struct pair {
    const aims_transport *t;
    sink s;
    char dir[32];
    void *srv, *cli, *listener, *conn;
} pair;

static void pair_open(pair *pr)
{
    memset(pr, 0, sizeof *pr);
    pthread_mutex_init(&pr->s.mu, NULL);
    pthread_cond_init(&pr->s.cv, NULL);
    snprintf(pr->dir, sizeof pr->dir, "/tmp/aims-handover-XXXXXX");
    assert_non_null(mkdtemp(pr->dir));
    pr->t = transport();
    const aims_transport *t = pr->t;
    const aims_transport_hooks sh = {&pr->s, s_accept, s_frame, s_close};
    const aims_transport_hooks ch = {NULL, NULL, c_frame, s_close};
    assert_int_equal(t->create(t->factory_user, &sh, (uint64_t)1 << 20, &pr->srv), AIMS_OK);
    assert_int_equal(t->create(t->factory_user, &ch, (uint64_t)1 << 20, &pr->cli), AIMS_OK);
    char url[160], bound[AIMSI_URL_MAX];
    if (strcmp(g_tr, "tcp") == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    } else {
        snprintf(url, sizeof url, "ipc://%s/s.sock", pr->dir);
    }
    assert_int_equal(t->listen(pr->srv, url, 0, bound, sizeof bound, &pr->listener), AIMS_OK);
    assert_int_equal(t->dial(pr->cli, bound, NULL, &pr->conn), AIMS_OK);
}

/* Close the connection and destroy the sending instance (frames still
 * waiting are given back then), then the sink. */
static void pair_close(pair *pr)
{
    pr->t->close(pr->cli, pr->conn);
    pr->t->destroy(pr->cli);
    pr->t->unlisten(pr->srv, pr->listener);
    pr->t->destroy(pr->srv);
    char path[160];
    snprintf(path, sizeof path, "%s/s.sock", pr->dir);
    unlink(path);
    rmdir(pr->dir);
    pthread_cond_destroy(&pr->s.cv);
    pthread_mutex_destroy(&pr->s.mu);
}

static void test_handover_order(void **state)
{
    (void)state;
    atomic_store(&g_made, 0);
    atomic_store(&g_released, 0);
    atomic_store(&g_full, 0);
    static pair pr;
    pair_open(&pr);
    pthread_t thr[THREADS];
    sender sd[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        sd[i] = (sender){pr.t, pr.cli, pr.conn, i, 0};
        assert_int_equal(pthread_create(&thr[i], NULL, sender_main, &sd[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(thr[i], NULL);
        assert_int_equal(sd[i].failed, 0);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_S;
    pthread_mutex_lock(&pr.s.mu);
    while (pr.s.got < THREADS * PER_THREAD &&
           pthread_cond_timedwait(&pr.s.cv, &pr.s.mu, &ts) == 0) {
    }
    const unsigned got = pr.s.got, bad = pr.s.bad;
    unsigned next[THREADS];
    memcpy(next, pr.s.next, sizeof next);
    pthread_mutex_unlock(&pr.s.mu);
    assert_int_equal(bad, 0);
    assert_int_equal(got, THREADS * PER_THREAD);
    for (unsigned i = 0; i < THREADS; i++) {
        assert_int_equal(next[i], PER_THREAD);
    }
    pair_close(&pr);
    /* Every frame built went back through its hook once (written or refused). */
    assert_int_equal(atomic_load(&g_released), atomic_load(&g_made));
    print_message("%s: %u frames, %u sends refused (queue full) and repeated\n", g_tr, got,
                  atomic_load(&g_full));
}

/* Pushing to a connection that is closed, and frames handed over but not
 * yet written when the connection is closed and its instance destroyed: each
 * goes back through its hook once, nothing leaks. */
static void test_handover_close_with_frames_waiting(void **state)
{
    (void)state;
    atomic_store(&g_made, 0);
    atomic_store(&g_released, 0);
    static pair pr;
    pair_open(&pr);
    for (unsigned seq = 0; seq < 200; seq++) {
        size_t len = 0;
        void *link = NULL;
        void *f = make(0, seq, &len, &link);
        assert_non_null(f);
        aimsi_transport_tl_defer = 1;
        aimsi_transport_tl_release.fn = release;
        aimsi_transport_tl_release.link = link;
        const aims_status rc = pr.t->send(pr.cli, pr.conn, f, len);
        aimsi_transport_tl_defer = 0;
        aimsi_transport_tl_release.fn = NULL;
        aimsi_transport_tl_release.link = NULL;
        assert_int_equal(rc, AIMS_OK);
    }
    pair_close(&pr); /* some may still wait in the inbox or the queue */
    assert_int_equal(atomic_load(&g_released), atomic_load(&g_made));
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        g_tr = argv[1];
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handover_order, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_handover_close_with_frames_waiting, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
