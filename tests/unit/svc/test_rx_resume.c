/*
 * test_rx_resume.c -- a connection paused for the node's receive budget
 * (AIMS_NODE_RX_BUDGET / RX_PAUSE_MS, src/svc/transport/stream_rx.c) goes on
 * as soon as the budget it needs is given back, in the order the connections
 * paused -- not at the next 1 s sweep.
 *
 * White-box, on tcp:// and ipc://: a stream instance with receive bounds
 * (budget 150 KiB, pause 10 min, rate rules off) and three raw senders of
 * ~195 KiB frames, ids 1, 2, 3:
 *   A sends 150,000 bytes of its frame: its buffer grows to the whole frame
 *     (holding ~131 KiB of budget);
 *   B sends its whole frame (from a thread: it blocks): its first growth
 *     (64 KiB) would overdraw the budget -> paused;
 *   C the same -> paused behind B;
 *   then the rest of A. A is delivered, gives its buffer back, and the I/O
 *   thread resumes B (the whole rest of its frame fits) but not C (B's
 *   reservation leaves no room); B delivered, gives back, C resumed.
 * Asserted on state and order, never on time: frames arrive 1, 2, 3; both
 * resumptions were made by a release (resumed_on_release == 2), none by the
 * sweep (before this change only the sweep resumed: resumed_by_sweep would be
 * 2); nothing paused at the end; every byte of budget given back after
 * destroy; the counting allocator balanced.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "svc/transport/aimsi_transport.h"
#include "svc/transport/aimsi_stream.h"
#include "testalloc.h"
#include "tr_raw.h"

#define WAIT_MS 60000 /* generous (TSan, a loaded machine); never a timing assertion */
#define PAYLOAD 200000u
#define BUDGET (150 * 1024)
#define FIRST_PART 150000u

typedef struct rctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t order[8]; /* request ids in the order on_frame saw them */
    int n_frames;
    int bad;
    aimsi_rx_limits rx;
} rctx;

static void *on_accept(void *user, void *listener, void *conn)
{
    (void)listener;
    (void)conn;
    return user;
}

static void on_frame(void *conn_user, const void *frame, size_t len)
{
    rctx *x = conn_user;
    aimsi_frame f;
    uint64_t id = 0;
    int ok = aimsi_frame_decode(frame, len, (size_t)1 << 30, &f) == AIMS_OK;
    if (ok) {
        id = f.hdr.request_id;
        ok = f.n_tensors == 1 && f.tensors[0].bytes == PAYLOAD;
        aimsi_frame_release(&f);
    }
    pthread_mutex_lock(&x->mu);
    if (!ok) {
        x->bad++;
    }
    if (x->n_frames < 8) {
        x->order[x->n_frames] = id;
    }
    x->n_frames++;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static void on_close(void *conn_user, aims_status why)
{
    (void)conn_user;
    (void)why;
}

/* A REQUEST frame of PAYLOAD bytes (one U8 tensor); aimsi_malloc'd. */
static uint8_t *make_frame(uint64_t id, size_t *out_len)
{
    uint8_t *data = malloc(PAYLOAD);
    assert_non_null(data);
    memset(data, (int)id, PAYLOAD);
    uint8_t *f = tr_raw_frame(AIMSI_FRAME_REQUEST, id, "big", "m", AIMSI_DT_U8, "x", data,
                              PAYLOAD, out_len);
    free(data);
    assert_non_null(f);
    return f;
}

typedef struct sender {
    pthread_t th;
    int fd;
    const uint8_t *p;
    size_t n;
    int rc;
} sender;

static void *sender_main(void *arg)
{
    sender *s = arg;
    s->rc = tr_raw_send_all(s->fd, s->p, s->n);
    return NULL;
}

/* Wait until *v == want (an atomic the I/O thread writes). */
static int wait_i64(_Atomic int64_t *v, int64_t want)
{
    for (int i = 0; i < WAIT_MS; i++) {
        if (atomic_load(v) == want) {
            return 1;
        }
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int frames_at_least(rctx *x, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&x->mu);
    while (x->n_frames < n) {
        if (pthread_cond_timedwait(&x->cv, &x->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    const int ok = x->n_frames >= n;
    pthread_mutex_unlock(&x->mu);
    return ok;
}

static void resume_in_order(const aims_transport *t)
{
    rctx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    x->rx.budget = BUDGET;
    x->rx.pause_ms = 600000; /* never the reason here */
    char dir[] = "/tmp/aims-rxr-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const aims_transport_hooks h = {x, on_accept, on_frame, on_close};
    void *srv = NULL;
    assert_int_equal(t->create(t->factory_user, &h, (uint64_t)1 << 20, &srv), AIMS_OK);
    aimsi_stream_set_rx(srv, &x->rx);
    char url[128];
    char bound[AIMSI_URL_MAX];
    void *listener = NULL;
    if (strcmp(t->scheme, "tcp") == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    } else {
        snprintf(url, sizeof url, "ipc://%s/s.sock", dir);
    }
    assert_int_equal(t->listen(srv, url, 0, bound, sizeof bound, &listener), AIMS_OK);

    size_t len[3];
    uint8_t *fr[3];
    for (int i = 0; i < 3; i++) {
        fr[i] = make_frame((uint64_t)i + 1, &len[i]);
    }
    /* A frame of len bytes reserves len - 64 KiB once its buffer is whole. */
    const int64_t whole = (int64_t)len[0] - (64 * 1024);
    assert_true(whole <= BUDGET && whole + 64 * 1024 > BUDGET && 2 * whole > BUDGET);

    const int fa = tr_raw_connect(bound);
    assert_int_equal(tr_raw_send_all(fa, fr[0], FIRST_PART), 0);
    assert_true(wait_i64(&x->rx.held, whole)); /* A: the whole frame reserved */

    sender sb = {.fd = tr_raw_connect(bound), .p = fr[1], .n = len[1]};
    assert_int_equal(pthread_create(&sb.th, NULL, sender_main, &sb), 0);
    assert_true(wait_i64(&x->rx.paused, 1)); /* B paused: its growth would overdraw */
    sender sc = {.fd = tr_raw_connect(bound), .p = fr[2], .n = len[2]};
    assert_int_equal(pthread_create(&sc.th, NULL, sender_main, &sc), 0);
    assert_true(wait_i64(&x->rx.paused, 2)); /* C paused behind B */
    pthread_mutex_lock(&x->mu);
    const int early = x->n_frames;
    pthread_mutex_unlock(&x->mu);
    assert_int_equal(early, 0);

    assert_int_equal(tr_raw_send_all(fa, fr[0] + FIRST_PART, len[0] - FIRST_PART), 0);
    assert_true(frames_at_least(x, 3));
    pthread_join(sb.th, NULL);
    pthread_join(sc.th, NULL);
    assert_int_equal(sb.rc, 0);
    assert_int_equal(sc.rc, 0);

    pthread_mutex_lock(&x->mu);
    assert_int_equal(x->n_frames, 3);
    assert_int_equal(x->bad, 0);
    assert_int_equal(x->order[0], 1); /* A, then the paused ones in the order they paused */
    assert_int_equal(x->order[1], 2);
    assert_int_equal(x->order[2], 3);
    pthread_mutex_unlock(&x->mu);
    assert_int_equal(atomic_load(&x->rx.paused), 0);
    assert_int_equal(atomic_load(&x->rx.resumed_on_release), 2);
    assert_int_equal(atomic_load(&x->rx.resumed_by_sweep), 0);

    close(fa);
    close(sb.fd);
    close(sc.fd);
    t->destroy(srv);
    assert_int_equal(atomic_load(&x->rx.held), 0);
    for (int i = 0; i < 3; i++) {
        aimsi_free(fr[i]);
    }
    char path[160];
    snprintf(path, sizeof path, "%s/s.sock", dir);
    unlink(path);
    rmdir(dir);
    pthread_cond_destroy(&x->cv);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

static void test_rx_resume_on_release_tcp(void **state)
{
    (void)state;
    resume_in_order(aimsi_transport_tcp());
}

static void test_rx_resume_on_release_ipc(void **state)
{
    (void)state;
    resume_in_order(aimsi_transport_ipc());
}

#define T(x) cmocka_unit_test_setup_teardown(x, ta_setup, ta_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_rx_resume_on_release_tcp),
        T(test_rx_resume_on_release_ipc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
