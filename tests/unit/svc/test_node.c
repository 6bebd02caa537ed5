/*
 * test_node.c -- white-box tests of src/svc/node.c and service.c: local calls
 * (inline and queued), concurrency limits, overload and deadline rejections,
 * handler errors, batching, draining, registry leases (local and through the
 * remote-registry hook), node destroy with queued work, inproc names, the
 * server side of frames over ipc:// and tcp://, and allocation failures.
 *
 * Tests never assert timings: waits are bounded polls, and every ordering the
 * assertions rely on is forced with gates (a handler blocked on a condition).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "svc/aimsi_local.h"
#include "svc/aimsi_svckind.h"
#include "svc/aimsi_regsync.h"
#include "svc/aimsi_node.h"
#include "svc/transport/aimsi_transport.h"
#include "testalloc.h"

/* ---- helpers ------------------------------------------------------------------- */

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A gate handlers block on, and counters of what they saw. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    int entered;   /* handler runs started */
    int running;   /* running now */
    int max_running;
    int calls;
    long sleep_ms; /* each run sleeps this long */
    int use_gate;
} gate;

static void gate_init(gate *g)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void gate_fini(gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_wait_entered(gate *g, int n)
{
    pthread_mutex_lock(&g->mu);
    while (g->entered < n) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Handler: y = x + 1 (f32 scalar "x"); method "fail" returns INVAL with text. */
static aims_status echo_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                           uint64_t deadline_ns)
{
    (void)deadline_ns;
    gate *g = user;
    if (g != NULL) {
        pthread_mutex_lock(&g->mu);
        g->entered++;
        g->calls++;
        g->running++;
        if (g->running > g->max_running) {
            g->max_running = g->running;
        }
        pthread_cond_broadcast(&g->cv);
        while (g->use_gate && !g->open) {
            pthread_cond_wait(&g->cv, &g->mu);
        }
        pthread_mutex_unlock(&g->mu);
        if (g->sleep_ms > 0) {
            nap_ms(g->sleep_ms);
        }
        pthread_mutex_lock(&g->mu);
        g->running--;
        pthread_mutex_unlock(&g->mu);
    }
    if (strcmp(method, "fail") == 0) {
        (void)aims_msg_set_error(reply, "bad x: want a scalar");
        return AIMS_E_INVAL;
    }
    float x = 0.0f;
    size_t idx = 0;
    if (req != NULL && aims_msg_find(req, "x", &idx) == AIMS_OK) {
        const void *data = NULL;
        (void)aims_msg_get_tensor(req, idx, NULL, NULL, NULL, NULL, &data, NULL);
        memcpy(&x, data, sizeof(x));
    }
    const float y = x + 1.0f;
    return aims_msg_add(reply, "y", AIMS_DT_F32, NULL, 0, &y, 0);
}

/* The outcome of one call, filled by the done callback (any thread). */
typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    aims_status st;
    float y;
    int had_reply;
    char err[512];
    pthread_t thread;
} result;

static void res_init(result *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void res_fini(result *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

/* res_init / res_fini over a table of n results. */
static void res_init_all(result *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        res_init(&r[i]);
    }
}

static void res_fini_all(result *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        res_fini(&r[i]);
    }
}

static void on_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    result *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->done++;
    r->st = st;
    r->thread = pthread_self();
    r->had_reply = reply != NULL;
    snprintf(r->err, sizeof(r->err), "%s", err != NULL ? err : "(null)");
    size_t idx = 0;
    if (reply != NULL && aims_msg_find(reply, "y", &idx) == AIMS_OK) {
        const void *data = NULL;
        (void)aims_msg_get_tensor(reply, idx, NULL, NULL, NULL, NULL, &data, NULL);
        memcpy(&r->y, data, sizeof(r->y));
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void res_wait(result *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->done == 0) {
        pthread_cond_wait(&r->cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
}

static aims_msg *mk_req(float x)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, NULL, 0, &x, 0), AIMS_OK);
    return m;
}

static void call_ex(aims_node *n, const char *svc, const char *method, const aims_msg *req,
                    uint64_t deadline, result *r, int no_inline)
{
    const aimsi_local_call c = {svc, method, req, deadline, on_done, r, no_inline, NULL};
    assert_int_equal(aimsi_node_call_local(n, &c), AIMS_OK);
}

static void call(aims_node *n, const char *svc, const char *method, const aims_msg *req,
                 uint64_t deadline, result *r)
{
    call_ex(n, svc, method, req, deadline, r, 0);
}

static aims_node *mk_node(const char *name, int workers)
{
    aims_node *n = NULL;
    assert_int_equal(aims_node_create(name, &n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_WORKERS, workers), AIMS_OK);
    return n;
}

static double stat_of(aims_service *s, aims_service_stat st)
{
    double v = -1;
    assert_int_equal(aims_service_get_stat(s, st, &v), AIMS_OK);
    return v;
}

/* ---- local calls ---------------------------------------------------------------- */

static void test_inline_and_queued(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-inline", 2);
    aims_service *fast = NULL;
    aims_service *slow = NULL;
    assert_int_equal(aims_service_add_handler(n, "echo@1", echo_fn, NULL, &fast), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "queued", echo_fn, NULL, &slow), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(slow, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_start(fast), AIMS_OK);
    assert_int_equal(aims_service_start(slow), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(fast, AIMS_SERVICE_INLINE, 0), AIMS_E_STATE);

    aims_msg *req = mk_req(41.0f);
    /* inline: done has run on this thread before the call returns; "echo"
     * resolves to the only version echo@1 */
    for (int i = 0; i < 3; i++) {
        result r;
        res_init(&r);
        call(n, i == 0 ? "echo" : "echo@1", "predict", req, 0, &r);
        assert_int_equal(r.done, 1);
        assert_int_equal(r.st, AIMS_OK);
        assert_true(pthread_equal(r.thread, pthread_self()));
        assert_true(r.y == 42.0f);
        res_fini(&r);
    }
    /* queued: runs on a worker */
    result q;
    res_init(&q);
    call(n, "queued", "predict", req, 0, &q);
    res_wait(&q);
    assert_int_equal(q.st, AIMS_OK);
    assert_false(pthread_equal(q.thread, pthread_self()));
    assert_true(q.y == 42.0f);
    res_fini(&q);
    /* unknown service */
    result u;
    res_init(&u);
    call(n, "nope", "predict", req, 0, &u);
    assert_int_equal(u.st, AIMS_E_NOTFOUND);
    assert_non_null(strstr(u.err, "no service nope on node n-inline"));
    res_fini(&u);

    assert_true(stat_of(fast, AIMS_SERVICE_STAT_REQUESTS) == 3.0);
    assert_true(stat_of(slow, AIMS_SERVICE_STAT_REQUESTS) == 1.0);
    assert_true(stat_of(fast, AIMS_SERVICE_STAT_P50_NS) > 0.0);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(aims_metrics_prometheus(aims_node_metrics(n), &text, &len), AIMS_OK);
    assert_non_null(strstr(text, "aims_svc_requests_total{service=\"echo@1\",node=\"n-inline\"} 3"));
    aims_free(text);
    aims_msg_destroy(req);
    aims_node_destroy(n);
}

static void test_handler_error(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-err", 1);
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(n, "e", echo_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    for (int inl = 1; inl >= 0; inl--) {
        result r;
        res_init(&r);
        call(n, "e", "fail", NULL, 0, &r);
        res_wait(&r);
        assert_int_equal(r.st, AIMS_E_INVAL);
        assert_string_equal(r.err, "bad x: want a scalar");
        res_fini(&r);
    }
    assert_true(stat_of(s, AIMS_SERVICE_STAT_ERRORS) == 2.0);
    /* not started -> CLOSED */
    aims_service *idle = NULL;
    assert_int_equal(aims_service_add_handler(n, "idle", echo_fn, NULL, &idle), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "idle", echo_fn, NULL, &idle), AIMS_E_EXISTS);
    assert_int_equal(aims_service_add_handler(n, "@bad", echo_fn, NULL, &idle), AIMS_E_INVAL);
    result c;
    res_init(&c);
    call(n, "idle", "x", NULL, 0, &c);
    assert_int_equal(c.st, AIMS_E_CLOSED);
    res_fini(&c);
    aims_node_destroy(n);
}

typedef struct hammer {
    aims_node *n;
    const char *svc;
    int calls;
    int ok;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    aims_msg *req = NULL;
    (void)aims_msg_create(&req);
    for (int i = 0; i < h->calls; i++) {
        result r;
        res_init(&r);
        const aimsi_local_call c = {h->svc, "predict", req, 0, on_done, &r, 0, NULL};
        if (aimsi_node_call_local(h->n, &c) == AIMS_OK) {
            res_wait(&r);
            h->ok += r.st == AIMS_OK;
        }
        res_fini(&r);
    }
    aims_msg_destroy(req);
    return NULL;
}

static void test_concurrency_limit(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-conc", 4);
    for (int inl = 0; inl < 2; inl++) {
        gate g;
        gate_init(&g);
        g.sleep_ms = 2;
        aims_service *s = NULL;
        const char *name = inl ? "conc-inline" : "conc-queued";
        assert_int_equal(aims_service_add_handler(n, name, echo_fn, &g, &s), AIMS_OK);
        assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, 2), AIMS_OK);
        assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, inl), AIMS_OK);
        assert_int_equal(aims_service_start(s), AIMS_OK);
        pthread_t th[4];
        hammer h[4];
        for (int i = 0; i < 4; i++) {
            h[i] = (hammer){n, name, 10, 0};
            assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
        }
        int ok = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ok += h[i].ok;
        }
        assert_int_equal(ok, 40);
        assert_int_equal(g.calls, 40);
        assert_true(g.max_running <= 2);
        assert_int_equal(aims_service_stop(s, 1000), AIMS_OK);
        gate_fini(&g);
    }
    aims_node_destroy(n);
}

/* A started service `name` on n running echo_fn behind gate g (gate_init'd
 * here, closed), one call at a time on the workers; queue_cap > 0 sets
 * AIMS_SERVICE_QUEUE_CAP. */
static aims_service *gated_one(aims_node *n, const char *name, gate *g, int64_t queue_cap)
{
    gate_init(g);
    g->use_gate = 1;
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(n, name, echo_fn, g, &s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, 1), AIMS_OK);
    if (queue_cap > 0) {
        assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_QUEUE_CAP, queue_cap),
                         AIMS_OK);
    }
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    return s;
}

static void test_queue_full(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-full", 1);
    gate g;
    aims_service *s = gated_one(n, "full", &g, 2);
    aims_msg *req = mk_req(1.0f);
    result r[5];
    res_init_all(r, 5);
    call(n, "full", "predict", req, 0, &r[0]);
    gate_wait_entered(&g, 1); /* r0 runs; the queue is empty again */
    call(n, "full", "predict", req, 0, &r[1]);
    call(n, "full", "predict", req, 0, &r[2]);
    call(n, "full", "predict", req, 0, &r[3]); /* queue holds 2: rejected */
    call(n, "full", "predict", req, 0, &r[4]);
    for (int i = 3; i < 5; i++) {
        assert_int_equal(r[i].done, 1);
        assert_int_equal(r[i].st, AIMS_E_OVERLOADED);
        assert_false(r[i].had_reply);
        assert_non_null(strstr(r[i].err, "service full overloaded: queue full (2 waiting)"));
        assert_non_null(strstr(r[i].err, "retry after "));
    }
    assert_true(stat_of(s, AIMS_SERVICE_STAT_QUEUED) == 2.0);
    assert_true(stat_of(s, AIMS_SERVICE_STAT_REJECTED) == 2.0);
    gate_open(&g);
    for (int i = 0; i < 3; i++) {
        res_wait(&r[i]);
        assert_int_equal(r[i].st, AIMS_OK);
    }
    res_fini_all(r, 5);
    aims_msg_destroy(req);
    aims_node_destroy(n);
    gate_fini(&g);
}

static void test_deadline(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-dl", 1);
    gate g;
    gate_init(&g);
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(n, "dl", echo_fn, &g, &s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, 1), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    aims_msg *req = mk_req(1.0f);
    /* already expired: rejected before running, inline or not */
    result r;
    res_init(&r);
    call(n, "dl", "predict", req, aimsi_now_ns() - 1, &r);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.st, AIMS_E_TIMEOUT);
    res_fini(&r);
    assert_int_equal(g.calls, 0);
    /* expires while queued behind a blocked call: never runs */
    g.use_gate = 1;
    result first;
    res_init(&first);
    pthread_t th;
    hammer h = {n, "dl", 1, 0};
    assert_int_equal(pthread_create(&th, NULL, hammer_main, &h), 0); /* runs inline there */
    gate_wait_entered(&g, 1);
    result late;
    res_init(&late);
    call(n, "dl", "predict", req, aimsi_now_ns() + 20000000u, &late); /* queued: slot busy */
    nap_ms(40);
    gate_open(&g);
    res_wait(&late);
    pthread_join(th, NULL);
    assert_int_equal(h.ok, 1);
    assert_int_equal(late.st, AIMS_E_TIMEOUT);
    assert_int_equal(g.calls, 1);
    assert_true(stat_of(s, AIMS_SERVICE_STAT_REJECTED) == 2.0);
    res_fini(&late);
    res_fini(&first);
    aims_msg_destroy(req);
    aims_node_destroy(n);
    gate_fini(&g);
}

static void test_deadline_estimate(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-est", 1);
    gate g;
    gate_init(&g);
    g.sleep_ms = 20; /* every run takes >= 20 ms, so the EWMA is >= 20 ms */
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(n, "est", echo_fn, &g, &s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    aims_msg *req = mk_req(1.0f);
    result warm;
    res_init(&warm);
    call(n, "est", "predict", req, 0, &warm);
    res_wait(&warm);
    assert_int_equal(warm.st, AIMS_OK);
    res_fini(&warm);
    /* 5 ms left but one run takes ~20 ms: refused at once, never run */
    result r;
    res_init(&r);
    call(n, "est", "predict", req, aimsi_now_ns() + 5000000u, &r);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.st, AIMS_E_TIMEOUT);
    assert_non_null(strstr(r.err, "cannot meet the deadline"));
    res_fini(&r);
    assert_int_equal(g.calls, 1);
    aims_msg_destroy(req);
    aims_node_destroy(n);
    gate_fini(&g);
}

/* ---- batching ----------------------------------------------------------------- */

typedef struct batch_impl {
    pthread_mutex_t mu;
    size_t sizes[64];
    size_t n_batches;
    gate *g;
    int stopped;
} batch_impl;

static void batch_run(void *impl, aimsi_work *const *items, size_t n)
{
    batch_impl *b = impl;
    pthread_mutex_lock(&b->mu);
    if (b->n_batches < 64) {
        b->sizes[b->n_batches] = n;
    }
    b->n_batches++;
    pthread_mutex_unlock(&b->mu);
    if (b->n_batches == 1) {
        /* the first batch blocks so the rest piles up */
        (void)echo_fn(b->g, "x", NULL, items[0]->reply, 0);
        items[0]->status = AIMS_OK;
        for (size_t i = 1; i < n; i++) {
            items[i]->status = AIMS_OK;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        items[i]->status = AIMS_OK;
    }
}

static void batch_stop(void *impl)
{
    ((batch_impl *)impl)->stopped++;
}

static void batch_destroy(void *impl)
{
    batch_impl *b = impl;
    pthread_mutex_destroy(&b->mu);
    aimsi_free(b);
}

static const aimsi_svc_kind batch_kind = {"test-batch", 1, 0, batch_run, batch_stop,
                                          batch_destroy, NULL};

static void test_batching(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-batch", 2);
    gate g;
    gate_init(&g);
    g.use_gate = 1;
    batch_impl *b = aimsi_calloc(1, sizeof(*b));
    assert_non_null(b);
    pthread_mutex_init(&b->mu, NULL);
    b->g = &g;
    aims_service *s = NULL;
    assert_int_equal(aimsi_service_add(n, "batcher", &batch_kind, b, &s), AIMS_OK);
    assert_ptr_equal(aimsi_service_impl(s, &batch_kind), b);
    assert_null(aimsi_service_impl(s, NULL));
    assert_string_equal(aimsi_service_name(s), "batcher");
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_BATCH_MAX, 8), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_BATCH_DELAY_US, 1000), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, 1), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    aims_msg *req = mk_req(1.0f);
    result r[21];
    res_init_all(r, 21);
    /* Async-style calls (no_inline) queue; a worker takes the first alone. */
    call_ex(n, "batcher", "predict", req, 0, &r[0], 1);
    assert_int_equal(r[0].done, 0);
    gate_wait_entered(&g, 1);
    for (int i = 1; i < 21; i++) {
        call_ex(n, "batcher", "predict", req, 0, &r[i], 1);
    }
    gate_open(&g);
    for (int i = 0; i < 21; i++) {
        res_wait(&r[i]);
        assert_int_equal(r[i].st, AIMS_OK);
        res_fini(&r[i]);
    }
    size_t total = 0;
    size_t biggest = 0;
    for (size_t i = 0; i < b->n_batches; i++) {
        total += b->sizes[i];
        biggest = b->sizes[i] > biggest ? b->sizes[i] : biggest;
    }
    assert_int_equal(total, 21);
    assert_int_equal(biggest, 8); /* 20 were waiting: full batches */
    assert_true(stat_of(s, AIMS_SERVICE_STAT_BATCH_ROWS) == 21.0);
    /* Idle service, a caller that may wait: a batch of one on the caller's
     * thread (no hand-off, no batch delay). */
    g.use_gate = 0;
    while (stat_of(s, AIMS_SERVICE_STAT_INFLIGHT) != 0.0) { /* the worker releases its slot */
        usleep(1000);
    }
    const size_t before = b->n_batches;
    result one;
    res_init(&one);
    call(n, "batcher", "predict", req, 0, &one);
    assert_int_equal(one.done, 1);
    assert_int_equal(one.st, AIMS_OK);
    res_fini(&one);
    assert_int_equal(b->n_batches, before + 1);
    assert_int_equal(b->sizes[before], 1);
    assert_int_equal(aims_service_stop(s, 1000), AIMS_OK);
    assert_int_equal(b->stopped, 1);
    aims_msg_destroy(req);
    aims_node_destroy(n);
    gate_fini(&g);
}

/* ---- draining ------------------------------------------------------------------- */

typedef struct stopper {
    aims_service *s;
    aims_status st;
} stopper;

static void *stop_main(void *arg)
{
    stopper *p = arg;
    p->st = aims_service_stop(p->s, 10000);
    return NULL;
}

static void test_drain(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-drain", 2);
    gate g;
    aims_service *s = gated_one(n, "dr", &g, 0);
    aims_msg *req = mk_req(1.0f);
    result r[4];
    res_init_all(r, 4);
    call(n, "dr", "predict", req, 0, &r[0]);
    gate_wait_entered(&g, 1);
    call(n, "dr", "predict", req, 0, &r[1]);
    call(n, "dr", "predict", req, 0, &r[2]);
    stopper p = {s, AIMS_E_INTERNAL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stop_main, &p), 0);
    while (atomic_load(&s->state) != AIMSI_SVC_CLOSING) {
        nap_ms(1);
    }
    call(n, "dr", "predict", req, 0, &r[3]);
    assert_int_equal(r[3].done, 1);
    assert_int_equal(r[3].st, AIMS_E_CLOSED);
    gate_open(&g);
    pthread_join(th, NULL);
    assert_int_equal(p.st, AIMS_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].done, 1);
        assert_int_equal(r[i].st, AIMS_OK);
    }
    res_fini_all(r, 4);
    assert_int_equal(aims_service_stop(s, 10), AIMS_E_STATE);
    /* restart works */
    assert_int_equal(aims_service_start(s), AIMS_OK);
    result again;
    res_init(&again);
    call(n, "dr", "predict", req, 0, &again);
    res_wait(&again);
    assert_int_equal(again.st, AIMS_OK);
    res_fini(&again);
    aims_msg_destroy(req);
    aims_node_destroy(n);
    gate_fini(&g);
}

static void test_destroy_with_queued(void **state)
{
    (void)state;
    aims_node *n = mk_node("n-dq", 1);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_DRAIN_MS, 30), AIMS_OK);
    gate g;
    gate_init(&g);
    g.sleep_ms = 5;
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(n, "dq", echo_fn, &g, &s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    aims_msg *req = mk_req(1.0f);
    result r[30];
    for (int i = 0; i < 30; i++) {
        res_init(&r[i]);
        call(n, "dq", "predict", req, 0, &r[i]);
    }
    aims_node_destroy(n);
    int ok = 0;
    for (int i = 0; i < 30; i++) {
        assert_int_equal(r[i].done, 1); /* every call completed exactly once */
        assert_true(r[i].st == AIMS_OK || r[i].st == AIMS_E_CLOSED);
        ok += r[i].st == AIMS_OK;
        res_fini(&r[i]);
    }
    assert_int_equal(ok, g.calls);
    aims_msg_destroy(req);
    gate_fini(&g);
}

/* ---- inproc names ------------------------------------------------------------------- */

static void test_inproc_names(void **state)
{
    (void)state;
    aims_node *a = mk_node("a", 1);
    aims_node *b = mk_node("b", 1);
    assert_int_equal(aims_node_listen(a, "inproc://shared"), AIMS_OK);
    assert_int_equal(aims_node_listen(b, "inproc://shared"), AIMS_E_EXISTS);
    assert_int_equal(aims_node_listen(b, "inproc://bad name"), AIMS_E_INVAL);
    assert_int_equal(aims_node_listen(b, "nope://x"), AIMS_E_UNSUPPORTED);
    char buf[64];
    size_t len = 0;
    assert_int_equal(aims_node_get_address(a, 0, buf, sizeof(buf), &len), AIMS_OK);
    assert_string_equal(buf, "inproc://shared");
    assert_int_equal(aims_node_get_address(a, 0, buf, 4, &len), AIMS_E_RANGE);
    assert_int_equal(len, strlen("inproc://shared"));
    assert_int_equal(aims_node_get_address(a, 1, buf, sizeof(buf), &len), AIMS_E_RANGE);
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(a, "svc", echo_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);

    aims_node *found = NULL;
    assert_int_equal(aimsi_inproc_find("shared", &found), AIMS_OK);
    assert_ptr_equal(found, a);
    assert_int_equal(aimsi_inproc_find("other", &found), AIMS_E_NOTFOUND);
    aims_node_destroy(a);
    /* the reference keeps the node readable: calls now fail cleanly */
    result r;
    res_init(&r);
    call(found, "svc", "predict", NULL, 0, &r);
    assert_int_equal(r.st, AIMS_E_CLOSED);
    res_fini(&r);
    aimsi_node_unref(found);
    assert_int_equal(aimsi_inproc_find("shared", &found), AIMS_E_NOTFOUND);
    assert_int_equal(aims_node_listen(b, "inproc://shared"), AIMS_OK);
    aims_node_destroy(b);
}

/* ---- registry -------------------------------------------------------------------- */

static size_t live(aims_registry *r, const char *name)
{
    size_t cnt = 0;
    aims_instance ids[4];
    assert_int_equal(aims_registry_lookup(r, name, ids, 4, &cnt), AIMS_OK);
    return cnt;
}

static void test_registry_local(void **state)
{
    (void)state;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    aims_node *n = mk_node("n-reg", 1);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_HEARTBEAT_MS, 20), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_DRAIN_GRACE_MS, 1), AIMS_OK);
    assert_int_equal(aims_node_set_registry(n, reg), AIMS_OK);
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(n, "reg-svc@2", echo_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_E_STATE); /* no address yet */
    assert_int_equal(aims_node_listen(n, "inproc://n-reg"), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    aims_instance id = 0;
    size_t cnt = 0;
    assert_int_equal(aims_registry_lookup(reg, "reg-svc", &id, 1, &cnt), AIMS_OK);
    assert_int_equal(cnt, 1);
    char addr[64];
    assert_int_equal(aims_registry_get_address(reg, id, addr, sizeof(addr), &cnt), AIMS_OK);
    assert_string_equal(addr, "inproc://n-reg");
    assert_int_equal(aims_registry_weight(reg, id), 100);
    /* several lease lengths (3 x 20 ms) later the heartbeats kept it alive */
    nap_ms(250);
    assert_int_equal(live(reg, "reg-svc@2"), 1);
    assert_int_equal(aims_service_stop(s, 1000), AIMS_OK);
    assert_int_equal(live(reg, "reg-svc"), 0);
    aims_node_destroy(n);
    aims_registry_destroy(reg);
}

typedef struct fake_remote {
    aims_registry *reg;
    _Atomic int regs, beats, deregs;
} fake_remote;

static aims_status fr_reg(void *ctx, const char *service, const char *address, uint32_t weight,
                          uint64_t ttl_ms, uint64_t *out_id)
{
    fake_remote *f = ctx;
    atomic_fetch_add(&f->regs, 1);
    return aims_registry_register(f->reg, service, address, weight, ttl_ms, out_id);
}

static aims_status fr_beat(void *ctx, const char *service, const char *address, uint32_t weight,
                           uint64_t ttl_ms, uint64_t *io_id)
{
    fake_remote *f = ctx;
    (void)service;
    (void)address;
    (void)weight;
    (void)ttl_ms;
    atomic_fetch_add(&f->beats, 1);
    return aims_registry_heartbeat(f->reg, *io_id);
}

static aims_status fr_dereg(void *ctx, uint64_t id)
{
    fake_remote *f = ctx;
    atomic_fetch_add(&f->deregs, 1);
    return aims_registry_deregister(f->reg, id);
}

static _Atomic int fr_released;

static void fr_release(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&fr_released, 1);
}

static const aimsi_reg_ops fr_ops = {fr_reg, fr_beat, fr_dereg, fr_release, NULL};

static uint64_t frozen_clock(void *user)
{
    (void)user;
    return 1000000000u;
}

static void test_registry_remote_hook(void **state)
{
    (void)state;
    fake_remote f;
    memset(&f, 0, sizeof(f));
    assert_int_equal(aims_registry_create(&f.reg), AIMS_OK);
    assert_int_equal(aims_registry_set_clock(f.reg, frozen_clock, NULL), AIMS_OK);
    aims_node *n = mk_node("n-remote", 1);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_HEARTBEAT_MS, 10), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_DRAIN_GRACE_MS, 1), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "inproc://n-remote"), AIMS_OK);
    assert_int_equal(aimsi_node_set_remote_registry(n, &fr_ops, &f), AIMS_OK);
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(n, "remote-svc", echo_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(atomic_load(&f.regs), 1);
    assert_int_equal(live(f.reg, "remote-svc"), 1);
    for (int i = 0; i < 5000 && atomic_load(&f.beats) < 3; i++) {
        nap_ms(1);
    }
    assert_true(atomic_load(&f.beats) >= 3);
    assert_int_equal(aims_service_stop(s, 1000), AIMS_OK);
    assert_int_equal(atomic_load(&f.deregs), 1);
    assert_int_equal(live(f.reg, "remote-svc"), 0);
    /* installing the same ops again releases nothing; destroy releases once */
    assert_int_equal(aimsi_node_set_remote_registry(n, &fr_ops, &f), AIMS_OK);
    assert_int_equal(atomic_load(&fr_released), 0);
    aims_node_destroy(n);
    assert_int_equal(atomic_load(&fr_released), 1);
    aims_registry_destroy(f.reg);
}

/* ---- frames over ipc:// and tcp:// --------------------------------------------- */

typedef struct rawc {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int frames;
    int closed;
    aimsi_frame_hdr last;
    float y;
    char msg[256];
} rawc;

static void *rc_accept(void *user, void *listener, void *conn)
{
    (void)user;
    (void)listener;
    (void)conn;
    return NULL;
}

static void rc_frame(void *conn_user, const void *frame, size_t len)
{
    rawc *c = conn_user;
    aimsi_frame f;
    if (aimsi_frame_decode(frame, len, 1u << 20, &f) != AIMS_OK) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->last = f.hdr;
    c->y = 0.0f;
    c->msg[0] = '\0';
    if (f.hdr.type == AIMSI_FRAME_REPLY && f.n_tensors == 1 && f.tensors[0].bytes == 4) {
        memcpy(&c->y, f.tensors[0].data, 4);
    }
    if (f.hdr.type == AIMSI_FRAME_ERROR) {
        snprintf(c->msg, sizeof(c->msg), "%.*s", (int)f.message_len, f.message);
    }
    c->frames++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    aimsi_frame_release(&f);
}

static void rc_close(void *conn_user, aims_status why)
{
    (void)why;
    rawc *c = conn_user;
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* What the I/O thread saw, copied under the lock. */
typedef struct rsnap {
    int closed;
    aimsi_frame_hdr last;
    float y;
    char msg[256];
} rsnap;

/* Wait until `frames` reached n or the connection closed (bounded: 10 s);
 * snapshot the state into *out. */
static int rc_wait(rawc *c, int n, rsnap *out)
{
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&c->mu);
        const int done = c->frames >= n || c->closed;
        out->closed = c->closed;
        out->last = c->last;
        out->y = c->y;
        memcpy(out->msg, c->msg, sizeof(out->msg));
        pthread_mutex_unlock(&c->mu);
        if (done) {
            return 1;
        }
        nap_ms(1);
    }
    return 0;
}

static void send_req(aimsi_tslot *slot, void *conn, uint8_t type, uint64_t id, const char *svc,
                     const char *method, float x)
{
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof(h));
    h.type = type;
    h.request_id = id;
    snprintf(h.service, sizeof(h.service), "%s", svc);
    snprintf(h.method, sizeof(h.method), "%s", method);
    aimsi_tensor t;
    memset(&t, 0, sizeof(t));
    t.dtype = AIMSI_DT_F32;
    strcpy(t.name, "x");
    t.data = &x;
    t.bytes = 4;
    aimsi_buf b;
    aimsi_buf_init(&b);
    assert_int_equal(aimsi_frame_encode(&h, &t, type == AIMSI_FRAME_REQUEST ? 1 : 0, NULL, 0, &b),
                     AIMS_OK);
    size_t len = 0;
    void *bytes = aimsi_buf_take(&b, &len);
    assert_int_equal(slot->vt.send(slot->inst, conn, bytes, len), AIMS_OK);
}

static void frames_on(const char *url)
{
    aims_node *n = mk_node("n-frames", 2);
    aims_service *s = NULL;
    aims_service *q = NULL;
    assert_int_equal(aims_service_add_handler(n, "echo@3", echo_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "queued", echo_fn, NULL, &q), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(q, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(aims_service_start(q), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_CONN_INFLIGHT, 1), AIMS_OK);
    assert_int_equal(aims_node_listen(n, url), AIMS_OK);
    char addr[AIMSI_URL_MAX];
    assert_int_equal(aims_node_get_address(n, 0, addr, sizeof(addr), NULL), AIMS_OK);

    const aims_transport_hooks hooks = {NULL, rc_accept, rc_frame, rc_close};
    aimsi_ttable tt;
    aimsi_ttable_init(&tt, &hooks, 1u << 20);
    aimsi_tslot *slot = NULL;
    assert_int_equal(aimsi_ttable_get(&tt, addr, &slot), AIMS_OK);
    rawc good;
    rawc bad;
    memset(&good, 0, sizeof(good));
    memset(&bad, 0, sizeof(bad));
    pthread_mutex_init(&good.mu, NULL);
    pthread_cond_init(&good.cv, NULL);
    pthread_mutex_init(&bad.mu, NULL);
    pthread_cond_init(&bad.cv, NULL);
    rsnap gs;
    rsnap bs;
    void *gc = NULL;
    void *bc = NULL;
    assert_int_equal(slot->vt.dial(slot->inst, addr, &good, &gc), AIMS_OK);
    assert_int_equal(slot->vt.dial(slot->inst, addr, &bad, &bc), AIMS_OK);

    /* request -> reply, on the inline and the queued path */
    send_req(slot, gc, AIMSI_FRAME_REQUEST, 7, "echo", "predict", 1.5f);
    assert_true(rc_wait(&good, 1, &gs));
    assert_int_equal(gs.last.type, AIMSI_FRAME_REPLY);
    assert_int_equal(gs.last.request_id, 7);
    assert_true(gs.y == 2.5f);
    send_req(slot, gc, AIMSI_FRAME_REQUEST, 8, "queued", "predict", 2.0f);
    assert_true(rc_wait(&good, 2, &gs));
    assert_int_equal(gs.last.type, AIMSI_FRAME_REPLY);
    assert_int_equal(gs.last.request_id, 8);
    assert_true(gs.y == 3.0f);
    /* ping, unknown service, handler error */
    send_req(slot, gc, AIMSI_FRAME_PING, 9, "", "", 0.0f);
    assert_true(rc_wait(&good, 3, &gs));
    assert_int_equal(gs.last.type, AIMSI_FRAME_PONG);
    assert_int_equal(gs.last.request_id, 9);
    send_req(slot, gc, AIMSI_FRAME_REQUEST, 10, "missing", "predict", 0.0f);
    assert_true(rc_wait(&good, 4, &gs));
    assert_int_equal(gs.last.type, AIMSI_FRAME_ERROR);
    assert_int_equal(gs.last.status, AIMS_E_NOTFOUND);
    assert_string_equal(gs.msg, "no service missing on node n-frames");
    send_req(slot, gc, AIMSI_FRAME_REQUEST, 11, "echo@3", "fail", 0.0f);
    assert_true(rc_wait(&good, 5, &gs));
    assert_int_equal(gs.last.status, AIMS_E_INVAL);
    assert_string_equal(gs.msg, "bad x: want a scalar");

    /* a hostile frame (a REPLY sent to a server) closes only that connection */
    send_req(slot, bc, AIMSI_FRAME_REPLY, 1, "", "", 0.0f);
    assert_true(rc_wait(&bad, 1, &bs));
    assert_int_equal(bs.closed, 1);
    send_req(slot, gc, AIMSI_FRAME_REQUEST, 12, "echo", "predict", 5.0f);
    assert_true(rc_wait(&good, 6, &gs));
    assert_int_equal(gs.last.request_id, 12);
    assert_true(gs.y == 6.0f);
    assert_int_equal(gs.closed, 0);

    /* raw garbage (bad magic) also closes only its connection */
    rawc junk;
    rsnap js;
    memset(&junk, 0, sizeof(junk));
    pthread_mutex_init(&junk.mu, NULL);
    pthread_cond_init(&junk.cv, NULL);
    void *jc = NULL;
    assert_int_equal(slot->vt.dial(slot->inst, addr, &junk, &jc), AIMS_OK);
    uint8_t *garbage = aimsi_malloc(64);
    assert_non_null(garbage);
    memset(garbage, 0xA5, 64);
    (void)slot->vt.send(slot->inst, jc, garbage, 64);
    assert_true(rc_wait(&junk, 1, &js));
    assert_int_equal(js.closed, 1);

    /* per-connection in-flight cap: a blocked queued call holds the only slot */
    gate g;
    gate_init(&g);
    g.use_gate = 1;
    aims_service *blk = NULL;
    assert_int_equal(aims_service_add_handler(n, "blocked", echo_fn, &g, &blk), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(blk, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_start(blk), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_CONN_INFLIGHT, 2), AIMS_E_STATE);
    send_req(slot, gc, AIMSI_FRAME_REQUEST, 13, "blocked", "predict", 1.0f);
    gate_wait_entered(&g, 1);
    send_req(slot, gc, AIMSI_FRAME_REQUEST, 14, "echo", "predict", 1.0f);
    assert_true(rc_wait(&good, 7, &gs));
    assert_int_equal(gs.last.request_id, 14);
    assert_int_equal(gs.last.status, AIMS_E_OVERLOADED);
    gate_open(&g);
    assert_true(rc_wait(&good, 8, &gs));
    assert_int_equal(gs.last.request_id, 13);
    assert_int_equal(gs.last.type, AIMSI_FRAME_REPLY);

    aims_node_destroy(n);
    gate_fini(&g);
    pthread_mutex_destroy(&junk.mu);
    pthread_cond_destroy(&junk.cv);
    aimsi_ttable_fini(&tt);
    pthread_mutex_destroy(&good.mu);
    pthread_cond_destroy(&good.cv);
    pthread_mutex_destroy(&bad.mu);
    pthread_cond_destroy(&bad.cv);
}

static void test_frames_ipc(void **state)
{
    (void)state;
    char dir[] = "/tmp/aims-node-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char url[128];
    snprintf(url, sizeof(url), "ipc://%s/n.sock", dir);
    frames_on(url);
    char path[128];
    snprintf(path, sizeof(path), "%s/n.sock", dir);
    (void)unlink(path);
    (void)rmdir(dir);
}

static void test_frames_tcp(void **state)
{
    (void)state;
    frames_on("tcp://127.0.0.1:0");
    /* plain tcp on a non-loopback address needs AIMS_NODE_INSECURE (nothing is sent) */
    aims_node *n = mk_node("n-insecure", 1);
    assert_int_not_equal(aims_node_listen(n, "tcp://0.0.0.0:0"), AIMS_OK);
    aims_node_destroy(n);
}

/* ---- allocation failures ----------------------------------------------------------- */

typedef struct fl_ctx {
    int unused;
} fl_ctx;

static void fl_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    (void)reply;
    (void)err;
    *(aims_status *)ctx = st;
}

static aims_status fail_op(void *ctx)
{
    (void)ctx;
    aims_registry *reg = NULL;
    AIMSI_TRY(aims_registry_create(&reg));
    aims_node *n = NULL;
    aims_status st = aims_node_create("n-fail", &n);
    if (st != AIMS_OK) {
        aims_registry_destroy(reg);
        return st;
    }
    (void)aims_node_set_param_i64(n, AIMS_NODE_HEARTBEAT_MS, 10);
    (void)aims_node_set_param_i64(n, AIMS_NODE_DRAIN_GRACE_MS, 1);
    aims_service *s = NULL;
    st = aims_node_listen(n, "inproc://n-fail");
    if (st == AIMS_OK) {
        st = aims_node_set_registry(n, reg);
    }
    if (st == AIMS_OK) {
        st = aims_service_add_handler(n, "f", echo_fn, NULL, &s);
    }
    if (st == AIMS_OK) {
        st = aims_service_start(s);
    }
    aims_msg *req = NULL;
    if (st == AIMS_OK) {
        st = aims_msg_create(&req);
    }
    if (st == AIMS_OK) {
        aims_status got = AIMS_E_INTERNAL;
        const aimsi_local_call c = {"f", "predict", req, 0, fl_done, &got, 0, NULL};
        st = aimsi_node_call_local(n, &c);
        if (st == AIMS_OK) {
            st = got;
        }
    }
    aims_msg_destroy(req);
    aims_node_destroy(n);
    aims_registry_destroy(reg);
    return st;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    fl_ctx c = {0};
    ta_fail_loop("node create + add + start + call + destroy", fail_op, &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_inline_and_queued, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_handler_error, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_concurrency_limit, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_queue_full, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_deadline, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_estimate, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_batching, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_drain, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_with_queued, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_inproc_names, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_local, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_remote_hook, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_frames_ipc, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_frames_tcp, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
