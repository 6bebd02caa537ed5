/*
 * test_pipe.c -- many async calls in flight on one connection, from several
 * threads at once (goal P14's hot path; argv[1] = inproc | ipc | tcp, meson
 * registers the program once per transport).
 *
 * What it pins down. The I/O thread writes a connection's queue with the
 * connection's mutex released around each writev while senders keep
 * appending (stream_tx.c queue_drain); calls and pendings come from a
 * per-client pool that any thread gives back to (client_pool.c); async
 * replies are handed to done() borrowed from the transport's buffer, sync
 * replies are copied (client_send.c). So: every call of several pipelining
 * threads plus a thread of sync calls gets exactly its own reply, once; an
 * error reply's text reaches done() and the sync caller intact; destroying a
 * client with calls still in flight completes each of them exactly once; and
 * the counting allocator balances after each test (the pool gives all its
 * blocks back at destroy). Runs under TSan with suite svc. No timing asserts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#include <cmocka.h>

#include "svc/transport/aimsi_transport.h"
#include "svc_echo.h"
#include "testalloc.h"

static const char *g_tr = "tcp";
static char g_dir[128];

/* One node serving "pipe" over the transport under test, registered in a
 * local registry, and a client of that registry (svc_echo.h). */
static void rig_up(svc_rig *r, int inline_run)
{
    svc_rig_up(r, g_tr, g_dir, "pp", "pipe", inline_run);
}

/* Shed by the node's admission control under a burst: not an error here. */
static int shed(aims_status st)
{
    return st == AIMS_E_OVERLOADED || st == AIMS_E_TIMEOUT;
}

/* ---- several pipelining threads + sync calls on one connection ------------------ */

enum { GENS = 3, PER_GEN = 800, WINDOW = 32, CALL_CAP = PER_GEN * 16, SYNCS = 60 };

typedef struct gen gen;
typedef struct gcall {
    gen *g;
    float want;
    atomic_int seen; /* done() runs exactly once per call */
} gcall;

struct gen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    aims_client *c;
    int id;
    atomic_int inflight, ok, bad, shed, twice;
    gcall calls[CALL_CAP];
};

static float reply_x(const aims_msg *reply)
{
    size_t i = 0;
    const void *data = NULL;
    float got = -1.0f;
    if (reply != NULL && aims_msg_find(reply, "x", &i) == AIMS_OK &&
        aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
        memcpy(&got, data, sizeof got);
    }
    return got;
}

static void gen_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)error;
    gcall *k = user;
    gen *g = k->g;
    if (atomic_fetch_add(&k->seen, 1) != 0) {
        atomic_fetch_add(&g->twice, 1);
    }
    if (shed(status)) {
        atomic_fetch_add(&g->shed, 1);
    } else if (status == AIMS_OK && reply_x(reply) == k->want) {
        atomic_fetch_add(&g->ok, 1);
    } else {
        atomic_fetch_add(&g->bad, 1);
    }
    /* The count drops under the mutex: gen_run's last wait takes it, so no done()
     * still touches g->cv or g->mu once the generator has seen zero in flight and
     * the test destroys them. */
    pthread_mutex_lock(&g->mu);
    atomic_fetch_sub(&g->inflight, 1);
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Keep WINDOW calls in flight until PER_GEN answered (shed calls go again). */
static void *gen_run(void *arg)
{
    gen *g = arg;
    int next = 0;
    for (;;) {
        const int answered = atomic_load(&g->ok) + atomic_load(&g->bad);
        if (answered >= PER_GEN || next >= CALL_CAP) {
            break;
        }
        while (atomic_load(&g->inflight) < WINDOW && next < CALL_CAP &&
               atomic_load(&g->ok) + atomic_load(&g->bad) + atomic_load(&g->inflight) < PER_GEN) {
            gcall *k = &g->calls[next];
            k->g = g;
            k->want = (float)(g->id * 100000 + next);
            next++;
            atomic_fetch_add(&g->inflight, 1);
            aims_msg *req = mk_msg();
            const uint64_t dims[1] = {1};
            if (aims_msg_add(req, "x", AIMS_DT_F32, dims, 1, &k->want, 0) != AIMS_OK) {
                abort();
            }
            (void)aims_client_call_async(g->c, "pipe", "m", req, AIMS_CALL_IDEMPOTENT, 30000,
                                         gen_done, k);
            aims_msg_destroy(req);
        }
        pthread_mutex_lock(&g->mu);
        if (atomic_load(&g->inflight) >= WINDOW ||
            (atomic_load(&g->inflight) > 0 &&
             atomic_load(&g->ok) + atomic_load(&g->bad) + atomic_load(&g->inflight) >= PER_GEN)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        }
        pthread_mutex_unlock(&g->mu);
    }
    pthread_mutex_lock(&g->mu);
    while (atomic_load(&g->inflight) > 0) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

static void test_threads_and_sync(void **state)
{
    (void)state;
    for (int inl = 1; inl >= 0; inl--) {
        svc_rig r;
        rig_up(&r, inl);
        static gen gens[GENS];
        pthread_t th[GENS];
        for (int i = 0; i < GENS; i++) {
            memset(&gens[i], 0, sizeof gens[i]);
            pthread_mutex_init(&gens[i].mu, NULL);
            pthread_cond_init(&gens[i].cv, NULL);
            gens[i].c = r.c;
            gens[i].id = i + 1;
            assert_int_equal(pthread_create(&th[i], NULL, gen_run, &gens[i]), 0);
        }
        /* Sync calls through the same connection meanwhile: each its own reply. */
        aims_msg *rep = mk_msg();
        for (int k = 0; k < SYNCS; k++) {
            aims_msg *req = mk_req(5000000.0f + (float)k);
            aims_status st = AIMS_E_OVERLOADED;
            for (int t = 0; t < 1000 && shed(st); t++) {
                st = aims_client_call(r.c, "pipe", "m", req, rep, AIMS_CALL_IDEMPOTENT, 30000);
            }
            assert_int_equal(st, AIMS_OK);
            assert_true(reply_x(rep) == 5000000.0f + (float)k);
            assert_int_equal(reply_tag(rep), 0); /* the echo handler's own tag */
            aims_msg_destroy(req);
        }
        aims_msg_destroy(rep);
        for (int i = 0; i < GENS; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
        }
        for (int i = 0; i < GENS; i++) {
            assert_int_equal(atomic_load(&gens[i].ok), PER_GEN);
            assert_int_equal(atomic_load(&gens[i].bad), 0);
            assert_int_equal(atomic_load(&gens[i].twice), 0);
            pthread_cond_destroy(&gens[i].cv);
            pthread_mutex_destroy(&gens[i].mu);
        }
        svc_rig_down(&r);
    }
}

/* ---- an error reply's text, async (borrowed) and sync (copied) ------------------ */

typedef struct err_ctx {
    atomic_int done, right;
} err_ctx;

static void err_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)reply;
    err_ctx *e = user;
    if (status == AIMS_E_INVAL && error != NULL && strstr(error, "told to fail") != NULL) {
        atomic_fetch_add(&e->right, 1);
    }
    atomic_fetch_add(&e->done, 1);
}

static void test_error_text(void **state)
{
    (void)state;
    enum { N = 200 };
    svc_rig r;
    rig_up(&r, 1);
    atomic_store(&r.h.fail_with, AIMS_E_INVAL);
    static err_ctx e;
    atomic_init(&e.done, 0);
    atomic_init(&e.right, 0);
    aims_msg *req = mk_req(1.0f);
    for (int i = 0; i < N; i++) {
        (void)aims_client_call_async(r.c, "pipe", "m", req, 0, 30000, err_done, &e);
    }
    for (int w = 0; w < 60000 && atomic_load(&e.done) < N; w++) {
        nap_ms(1);
    }
    assert_int_equal(atomic_load(&e.done), N);
    assert_int_equal(atomic_load(&e.right), N);
    aims_msg *rep = mk_msg();
    assert_int_equal(aims_client_call(r.c, "pipe", "m", req, rep, 0, 30000), AIMS_E_INVAL);
    assert_non_null(strstr(aims_client_errmsg(r.c), "told to fail"));
    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    svc_rig_down(&r);
}

/* ---- destroy with calls in flight: each completes once, nothing leaks ----------- */

static atomic_int g_fly_done, g_fly_twice;
static atomic_int g_fly_seen[256];

static void fly_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)status;
    (void)reply;
    (void)error;
    atomic_int *seen = user;
    if (atomic_fetch_add(seen, 1) != 0) {
        atomic_fetch_add(&g_fly_twice, 1);
    }
    atomic_fetch_add(&g_fly_done, 1);
}

static void test_destroy_in_flight(void **state)
{
    (void)state;
    svc_rig r;
    rig_up(&r, 0);
    atomic_store(&r.h.sleep_ms, 1); /* on a worker: most calls are still queued */
    atomic_init(&g_fly_done, 0);
    atomic_init(&g_fly_twice, 0);
    aims_msg *req = mk_req(2.0f);
    for (int i = 0; i < 256; i++) {
        atomic_init(&g_fly_seen[i], 0);
        (void)aims_client_call_async(r.c, "pipe", "m", req, AIMS_CALL_IDEMPOTENT, 30000,
                                     fly_done, &g_fly_seen[i]);
    }
    aims_msg_destroy(req);
    aims_client_destroy(r.c); /* fails what is in flight: done runs before it returns */
    r.c = NULL;
    assert_int_equal(atomic_load(&g_fly_done), 256);
    assert_int_equal(atomic_load(&g_fly_twice), 0);
    atomic_store(&r.h.sleep_ms, 0);
    svc_rig_down(&r);
}

/* ---- a retry sends the call's own copy of the request --------------------------- */

/* An async idempotent call keeps a copy of its request for retries, since the
 * caller may free its own as soon as call_async returns: small requests
 * inside the copy's pooled block, bigger ones deep-copied (client.c,
 * copy_request; the limit is 1 KiB of tensor bytes). The handler refuses each
 * request's first attempt with a retryable OVERLOADED, so every reply comes
 * from a retry, i.e. from the copy; requests span both sides of the limit
 * (0 to 1250 bytes in "a" plus two small tensors), and every tensor of every
 * reply must equal what its request was. */
enum { RC_N = 120 };

typedef struct rc_ctx {
    atomic_int first[RC_N];
    atomic_int entered, done, ok, twice;
    atomic_int seen[RC_N];
} rc_ctx;

static int rc_id(const aims_msg *m)
{
    size_t i = 0;
    const void *data = NULL;
    int32_t id = -1;
    if (m != NULL && aims_msg_find(m, "id", &i) == AIMS_OK &&
        aims_msg_get_tensor(m, i, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
        memcpy(&id, data, sizeof id);
    }
    return id >= 0 && id < RC_N ? id : -1;
}

static size_t rc_alen(int id)
{
    return (size_t)(id % 6) * 250u;
}

static aims_msg *rc_req(int id)
{
    unsigned char a[1250];
    float b[3];
    for (size_t j = 0; j < sizeof a; j++) {
        a[j] = (unsigned char)(id * 7 + (int)j);
    }
    for (int k = 0; k < 3; k++) {
        b[k] = (float)id + 0.5f * (float)k;
    }
    aims_msg *m = mk_msg();
    const int32_t v = id;
    const uint64_t da[1] = {rc_alen(id)}, db[1] = {3};
    assert_int_equal(aims_msg_add(m, "id", AIMS_DT_I32, NULL, 0, &v, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "a", AIMS_DT_U8, da, 1, a, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "b", AIMS_DT_F32, db, 1, b, 0), AIMS_OK);
    return m;
}

static aims_status rc_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                         uint64_t deadline_ns)
{
    (void)method;
    (void)deadline_ns;
    rc_ctx *x = user;
    atomic_fetch_add(&x->entered, 1);
    const int id = rc_id(req);
    if (id >= 0 && atomic_exchange(&x->first[id], 1) == 0) {
        aims_msg_set_error(reply, "first attempt refused; retry after 0 ms");
        return AIMS_E_OVERLOADED;
    }
    return echo_tensors(req, reply);
}

/* The reply is exactly what rc_req(id) held. */
static int rc_same(const aims_msg *reply, int id)
{
    aims_msg *want = rc_req(id);
    int same = aims_msg_num_tensors(reply) == aims_msg_num_tensors(want);
    for (size_t i = 0; same && i < aims_msg_num_tensors(want); i++) {
        const char *n1, *n2;
        aims_dtype t1, t2;
        const void *d1, *d2;
        size_t b1, b2;
        same = aims_msg_get_tensor(want, i, &n1, &t1, NULL, NULL, &d1, &b1) == AIMS_OK &&
               aims_msg_get_tensor(reply, i, &n2, &t2, NULL, NULL, &d2, &b2) == AIMS_OK &&
               strcmp(n1, n2) == 0 && t1 == t2 && b1 == b2 && (b1 == 0 || memcmp(d1, d2, b1) == 0);
    }
    aims_msg_destroy(want);
    return same;
}

static void rc_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)error;
    rc_ctx *x = user;
    const int id = rc_id(reply);
    if (status == AIMS_OK && id >= 0 && rc_same(reply, id)) {
        if (atomic_fetch_add(&x->seen[id], 1) != 0) {
            atomic_fetch_add(&x->twice, 1);
        }
        atomic_fetch_add(&x->ok, 1);
    }
    atomic_fetch_add(&x->done, 1);
}

static void test_retry_uses_request_copy(void **state)
{
    (void)state;
    svc_rig r;
    rig_up(&r, 1);
    static rc_ctx x;
    memset(&x, 0, sizeof x);
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(r.node, "copies", rc_fn, &x, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(aims_client_set_param_f64(r.c, AIMS_CLIENT_RETRY_BUDGET, 10.0), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(r.c, AIMS_CLIENT_RETRY_MIN, 1000000), AIMS_OK);
    for (int id = 0; id < RC_N; id++) {
        aims_msg *req = rc_req(id);
        (void)aims_client_call_async(r.c, "copies", "m", req, AIMS_CALL_IDEMPOTENT, 30000,
                                     rc_done, &x);
        aims_msg_destroy(req); /* the retry must not need it */
    }
    for (int w = 0; w < 60000 && atomic_load(&x.done) < RC_N; w++) {
        nap_ms(1);
    }
    assert_int_equal(atomic_load(&x.done), RC_N);
    assert_int_equal(atomic_load(&x.ok), RC_N);
    assert_int_equal(atomic_load(&x.twice), 0);
    assert_true(atomic_load(&x.entered) >= 2 * RC_N); /* every reply came from a retry */
    svc_rig_down(&r);
}

int main(int argc, char **argv)
{
    if (svc_transport_arg(argc, argv, &g_tr, "inproc|ipc|tcp") != 0) {
        return 2;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/aims_pp_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_threads_and_sync, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_error_text, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_flight, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_retry_uses_request_copy, ta_setup, ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "pipe_%s", g_tr);
    const int rc = cmocka_run_group_tests_name(group, tests, NULL, NULL);
    rmdir(g_dir);
    return rc;
}
