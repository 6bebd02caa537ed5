/*
 * test_client.c -- white-box tests of src/svc/client.c over inproc:// nodes
 * and a local registry: calls by address and by name, version-specific
 * names, NOTFOUND, balancing across two nodes, idempotent retries when a node
 * dies mid-run, no retries for non-idempotent calls, the retry budget under a
 * storm of overloads, deadlines (late replies dropped), async callbacks
 * exactly once, destroy with async calls in flight, allocation failures.
 *
 * Tests never assert timings: waits are bounded polls; handlers that must be
 * "slow" block on a gate or sleep far longer than the deadline under test.
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

#include <cmocka.h>

#include "svc/aimsi_regsync.h"
#include "svc/transport/aimsi_transport.h"
#include "svc_echo.h"
#include "testalloc.h"

/* ---- helpers ------------------------------------------------------------------- */

typedef struct cluster {
    aims_registry *reg;
    aims_node *node[3];
    aims_service *svc[3];
    hctx h[3];
    size_t n;
} cluster;

/* Node i listens on inproc://<prefix><i> and hosts `service` (may be NULL). */
static int64_t g_heartbeat_ms = 250;

static void add_node(cluster *cl, const char *prefix, const char *service, int inline_run)
{
    const size_t i = cl->n++;
    char name[64], url[96];
    snprintf(name, sizeof name, "%s%zu", prefix, i);
    snprintf(url, sizeof url, "inproc://%s", name);
    memset(&cl->h[i], 0, sizeof cl->h[i]);
    cl->h[i].tag = (int)i + 1;
    assert_int_equal(aims_node_create(name, &cl->node[i]), AIMS_OK);
    /* Leases of 3 x 250 ms survive a loaded machine; a short drain grace keeps
     * node destroy quick (a local registry tells the client at once). */
    assert_int_equal(
        aims_node_set_param_i64(cl->node[i], AIMS_NODE_HEARTBEAT_MS, g_heartbeat_ms), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(cl->node[i], AIMS_NODE_DRAIN_GRACE_MS, 30), AIMS_OK);
    assert_int_equal(aims_node_listen(cl->node[i], url), AIMS_OK);
    if (cl->reg != NULL) {
        assert_int_equal(aims_node_set_registry(cl->node[i], cl->reg), AIMS_OK);
    }
    if (service != NULL) {
        assert_int_equal(aims_service_add_handler(cl->node[i], service, echo_fn, &cl->h[i],
                                                  &cl->svc[i]),
                         AIMS_OK);
        assert_int_equal(aims_service_set_param_i64(cl->svc[i], AIMS_SERVICE_INLINE, inline_run),
                         AIMS_OK);
        assert_int_equal(aims_service_start(cl->svc[i]), AIMS_OK);
    }
}

static void cluster_fini(cluster *cl)
{
    for (size_t i = 0; i < cl->n; i++) {
        aims_node_destroy(cl->node[i]);
    }
    aims_registry_destroy(cl->reg);
    memset(cl, 0, sizeof(*cl));
}

static float reply_x(const aims_msg *m)
{
    size_t idx = 0;
    assert_int_equal(aims_msg_find(m, "x", &idx), AIMS_OK);
    const void *data = NULL;
    assert_int_equal(aims_msg_get_tensor(m, idx, NULL, NULL, NULL, NULL, &data, NULL), AIMS_OK);
    float x;
    memcpy(&x, data, sizeof x);
    return x;
}

static uint64_t counter(aims_client *c, const char *name, const char *service)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(aims_metrics_prometheus(aims_client_metrics(c), &text, &len), AIMS_OK);
    char key[256];
    snprintf(key, sizeof key, "%s{service=\"%s\"} ", name, service);
    const char *at = strstr(text, key);
    uint64_t v = 0;
    if (at != NULL) {
        v = strtoull(at + strlen(key), NULL, 10);
    }
    aims_free(text);
    return v;
}

/* ---- tests --------------------------------------------------------------------- */

/* Compression only where the link is slower than zstd. */
static void test_url_compresses(void **state)
{
    (void)state;
    assert_false(aimsi_url_compresses("ipc:///tmp/a.sock"));
    assert_false(aimsi_url_compresses("tcp://127.0.0.1:7000"));
    assert_false(aimsi_url_compresses("tcp://127.9.0.3:7000"));
    assert_false(aimsi_url_compresses("tcp://localhost:7000"));
    assert_false(aimsi_url_compresses("tcp://[::1]:7000"));
    assert_true(aimsi_url_compresses("tcp://10.0.0.7:7000"));
    assert_true(aimsi_url_compresses("tcp://hub.example:7000"));
    assert_true(aimsi_url_compresses("tcp://localhost.example:7000"));
    assert_true(aimsi_url_compresses("quic://10.0.0.7:7000"));
    assert_false(aimsi_url_compresses("tls://127.0.0.1:7000"));
    assert_true(aimsi_url_compresses("tls://10.0.0.7:7000"));
}

static void test_call_addr_inproc(void **state)
{
    (void)state;
    cluster cl = {0};
    add_node(&cl, "ca", "echo", 1);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_req(3.5f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, "inproc://ca0", "echo", "m", req, rep, 0), AIMS_OK);
    assert_true(reply_x(rep) == 3.5f);
    assert_int_equal(reply_tag(rep), 1);
    /* Unknown address: the instance is not there (retryable class). */
    assert_int_equal(aims_client_call_addr(c, "inproc://nobody", "echo", "m", req, rep, 0),
                     AIMS_E_CLOSED);
    assert_true(strstr(aims_client_errmsg(c), "nobody") != NULL);
    /* Unknown service on a live node. */
    assert_int_equal(aims_client_call_addr(c, "inproc://ca0", "other", "m", req, rep, 0),
                     AIMS_E_NOTFOUND);
    /* Misuse. */
    assert_int_equal(aims_client_call_addr(c, "noscheme", "echo", "m", req, rep, 0),
                     AIMS_E_INVAL);
    assert_int_equal(aims_client_call_addr(c, "inproc://ca0", "echo", "m", req, req, 0),
                     AIMS_E_MISUSE);
    /* No registry: by name is a state error. */
    assert_int_equal(aims_client_call(c, "echo", "m", req, rep, 0, 0), AIMS_E_STATE);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_call_by_name_and_versions(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "vn", "model@1", 1);
    add_node(&cl, "vn", "model@2", 1);
    aims_client *c = mk_client(cl.reg);
    aims_msg *req = mk_req(1.0f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(aims_client_call(c, "model@2", "m", req, rep, 0, 0), AIMS_OK);
        assert_int_equal(reply_tag(rep), 2);
        assert_int_equal(aims_client_call(c, "model@1", "m", req, rep, 0, 0), AIMS_OK);
        assert_int_equal(reply_tag(rep), 1);
    }
    int seen[3] = {0};
    for (int i = 0; i < 40; i++) {
        assert_int_equal(aims_client_call(c, "model", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                         AIMS_OK);
        const int t = reply_tag(rep);
        assert_true(t == 1 || t == 2);
        seen[t]++;
    }
    assert_int_equal(seen[1] + seen[2], 40);
    /* No instance. */
    assert_int_equal(aims_client_call(c, "absent", "m", req, rep, 0, 0), AIMS_E_NOTFOUND);
    assert_true(strstr(aims_client_errmsg(c), "absent") != NULL);
    assert_int_equal(aims_client_call(c, "model@3", "m", req, rep, 0, 0), AIMS_E_NOTFOUND);
    /* Handler error: status and text travel back, no retry. */
    cl.h[0].fail_with = AIMS_E_INVAL;
    const int before = atomic_load(&cl.h[0].entered);
    assert_int_equal(aims_client_call(c, "model@1", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                     AIMS_E_INVAL);
    assert_string_equal(aims_msg_error(rep), "told to fail");
    assert_int_equal(atomic_load(&cl.h[0].entered), before + 1);
    assert_true(counter(c, "aims_client_calls_total", "model@2") == 20);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_balancing_spreads(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "bs", "spread", 1);
    add_node(&cl, "bs", "spread", 1);
    /* Round robin: exact halves. */
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN),
                     AIMS_OK);
    aims_msg *req = mk_req(2.0f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(aims_client_call(c, "spread", "m", req, rep, 0, 0), AIMS_OK);
    }
    assert_int_equal(atomic_load(&cl.h[0].entered), 50);
    assert_int_equal(atomic_load(&cl.h[1].entered), 50);
    aims_client_destroy(c);
    /* Default (P2C): both get traffic. */
    c = mk_client(cl.reg);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(aims_client_call(c, "spread", "m", req, rep, 0, 0), AIMS_OK);
    }
    /* Latency-aware: sequential inline calls may all go to the faster one. */
    assert_int_equal(atomic_load(&cl.h[0].entered) + atomic_load(&cl.h[1].entered), 300);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

typedef struct loop_arg {
    aims_client *c;
    atomic_int stop;
    atomic_int ok, failed;
} loop_arg;

static void *call_loop(void *p)
{
    loop_arg *a = p;
    aims_msg *req = mk_req(5.0f), *rep = NULL;
    aims_msg_create(&rep);
    while (!atomic_load(&a->stop)) {
        const aims_status st =
            aims_client_call(a->c, "svc", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0);
        if (st == AIMS_OK) {
            atomic_fetch_add(&a->ok, 1);
        } else {
            if (atomic_fetch_add(&a->failed, 1) == 0) {
                fprintf(stderr, "first failed call: %s: %s\n", aims_strerror(st),
                        aims_client_errmsg(a->c));
            }
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return NULL;
}

static void test_retry_when_node_dies(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "rd", "svc", 0);
    add_node(&cl, "rd", "svc", 0);
    loop_arg a = {0};
    a.c = mk_client(cl.reg);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, call_loop, &a), 0);
    }
    while (atomic_load(&cl.h[1].entered) < 20) {
        nap_ms(1);
    }
    aims_node_destroy(cl.node[1]);
    cl.node[1] = NULL;
    const int at_kill = atomic_load(&a.ok);
    while (atomic_load(&a.ok) < at_kill + 200) {
        nap_ms(1);
    }
    atomic_store(&a.stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(atomic_load(&a.failed), 0);
    aims_client_destroy(a.c);
    cluster_fini(&cl);
}

static void test_not_idempotent_not_retried(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "ni", "busy", 1);
    cl.h[0].fail_with = AIMS_E_OVERLOADED;
    aims_client *c = mk_client(cl.reg);
    aims_msg *req = mk_req(1.0f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(aims_client_call(c, "busy", "m", req, rep, 0, 0), AIMS_E_OVERLOADED);
    assert_int_equal(atomic_load(&cl.h[0].entered), 1);
    /* Idempotent: max_attempts (3) tries (the bucket starts with retry_min tokens). */
    assert_int_equal(aims_client_call(c, "busy", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                     AIMS_E_OVERLOADED);
    assert_int_equal(atomic_load(&cl.h[0].entered), 4);
    assert_true(counter(c, "aims_client_retries_total", "busy") == 2);
    /* Handler errors are never retried. */
    cl.h[0].fail_with = AIMS_E_INVAL;
    assert_int_equal(aims_client_call(c, "busy", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                     AIMS_E_INVAL);
    assert_int_equal(atomic_load(&cl.h[0].entered), 5);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_retry_budget_storm(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "st", "storm", 1);
    add_node(&cl, "st", "storm", 1);
    cl.h[0].fail_with = AIMS_E_OVERLOADED;
    cl.h[1].fail_with = AIMS_E_OVERLOADED;
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_RETRY_MIN, 0), AIMS_OK);
    assert_int_equal(aims_client_set_param_f64(c, AIMS_CLIENT_RETRY_BUDGET, 0.1), AIMS_OK);
    aims_msg *req = mk_req(1.0f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    const int n = 300;
    for (int i = 0; i < n; i++) {
        assert_int_equal(aims_client_call(c, "storm", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                         AIMS_E_OVERLOADED);
    }
    const int runs = atomic_load(&cl.h[0].entered) + atomic_load(&cl.h[1].entered);
    /* Without a budget: 3 x n. With 10 %: at most n + 0.1 n (+1 for rounding). */
    assert_true(runs <= n + n / 10 + 1);
    assert_true(runs > n);
    const uint64_t retries = counter(c, "aims_client_retries_total", "storm");
    const uint64_t denied = counter(c, "aims_client_retries_denied_total", "storm");
    assert_int_equal((int)retries, runs - n);
    assert_true(denied >= (uint64_t)(n - n / 10 - 1));
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_deadline_and_late_reply(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "dl", "slow", 0);
    cl.h[0].sleep_ms = 300;
    aims_client *c = mk_client(cl.reg);
    aims_msg *req = mk_req(1.0f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    /* TIMEOUT is never retried, even for idempotent calls. */
    assert_int_equal(aims_client_call(c, "slow", "m", req, rep, AIMS_CALL_IDEMPOTENT, 30),
                     AIMS_E_TIMEOUT);
    assert_int_equal(aims_msg_num_tensors(rep), 0);
    /* The late reply arrives into nothing; the next call works. */
    cl.h[0].sleep_ms = 0;
    nap_ms(400);
    assert_int_equal(aims_client_call(c, "slow", "m", req, rep, 0, 0), AIMS_OK);
    assert_int_equal(reply_tag(rep), 1);
    /* The first request may have been rejected unrun (its deadline passed in the queue). */
    assert_true(atomic_load(&cl.h[0].entered) >= 1 && atomic_load(&cl.h[0].entered) <= 2);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

/* Async completions: one slot per call counts its callbacks. */
typedef struct async_box {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int per[64];
    aims_status st[64];
    float x[64];
} async_box;

typedef struct async_ref {
    async_box *box;
    int i;
} async_ref;

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    async_ref *r = user;
    async_box *b = r->box;
    assert_non_null(error);
    pthread_mutex_lock(&b->mu);
    b->per[r->i]++;
    b->st[r->i] = st;
    if (st == AIMS_OK && reply != NULL) {
        b->x[r->i] = reply_x(reply);
    }
    b->done++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void box_wait(async_box *b, int n)
{
    pthread_mutex_lock(&b->mu);
    while (b->done < n) {
        pthread_cond_wait(&b->cv, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
}

static void test_async_exactly_once(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "as", "aecho", 0);
    add_node(&cl, "as", "aecho", 1);
    aims_client *c = mk_client(cl.reg);
    async_box b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    async_ref refs[64];
    for (int i = 0; i < 64; i++) {
        refs[i].box = &b;
        refs[i].i = i;
        aims_msg *req = mk_req((float)i);
        /* The request may die right after the call returns. */
        assert_int_equal(aims_client_call_async(c, "aecho", "m", req,
                                                i % 2 ? AIMS_CALL_IDEMPOTENT : 0, 0, on_done,
                                                &refs[i]),
                         AIMS_OK);
        aims_msg_destroy(req);
    }
    box_wait(&b, 64);
    nap_ms(20);
    for (int i = 0; i < 64; i++) {
        assert_int_equal(b.per[i], 1);
        assert_int_equal(b.st[i], AIMS_OK);
        assert_true(b.x[i] == (float)i);
    }
    /* Failure to start: done runs before the call returns, with the status. */
    aims_msg *req = mk_req(1.0f);
    b.done = 0;
    b.per[0] = 0;
    assert_int_equal(aims_client_call_async(c, "nothing", "m", req, 0, 0, on_done, &refs[0]),
                     AIMS_E_NOTFOUND);
    assert_int_equal(b.per[0], 1);
    assert_int_equal(b.st[0], AIMS_E_NOTFOUND);
    /* Async deadline: TIMEOUT exactly once; the late reply is dropped. */
    cl.h[0].sleep_ms = 200;
    cl.h[1].sleep_ms = 200;
    b.done = 0;
    b.per[1] = 0;
    aims_service_stop(cl.svc[1], 1000);
    nap_ms(10);
    assert_int_equal(aims_client_call_async(c, "aecho", "m", req, 0, 20, on_done, &refs[1]),
                     AIMS_OK);
    box_wait(&b, 1);
    assert_int_equal(b.st[1], AIMS_E_TIMEOUT);
    nap_ms(300);
    assert_int_equal(b.per[1], 1);
    aims_msg_destroy(req);
    aims_client_destroy(c);
    cluster_fini(&cl);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
}

static void test_async_retry(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "ar", "aretry", 0);
    add_node(&cl, "ar", "aretry", 0);
    atomic_store(&cl.h[0].fail_with, AIMS_E_OVERLOADED);
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN),
                     AIMS_OK);
    /* Concurrent picks share the RR turn: allow for a retry drawn back onto node 0. */
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_MAX_ATTEMPTS, 6), AIMS_OK);
    /* ... and for the first attempts it pushes onto node 0: a budget that covers all. */
    assert_int_equal(aims_client_set_param_f64(c, AIMS_CLIENT_RETRY_BUDGET, 1.0), AIMS_OK);
    async_box b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    async_ref refs[20];
    for (int i = 0; i < 20; i++) {
        refs[i].box = &b;
        refs[i].i = i;
        aims_msg *req = mk_req((float)i);
        assert_int_equal(aims_client_call_async(c, "aretry", "m", req, AIMS_CALL_IDEMPOTENT, 0,
                                                on_done, &refs[i]),
                         AIMS_OK);
        aims_msg_destroy(req); /* retries use the client's copy */
    }
    box_wait(&b, 20);
    for (int i = 0; i < 20; i++) {
        if (b.st[i] != AIMS_OK) {
            fprintf(stderr, "call %d: %s; retries %llu denied %llu; node calls %d/%d\n", i,
                    aims_strerror(b.st[i]),
                    (unsigned long long)counter(c, "aims_client_retries_total", "aretry"),
                    (unsigned long long)counter(c, "aims_client_retries_denied_total", "aretry"),
                    atomic_load(&cl.h[0].entered), atomic_load(&cl.h[1].entered));
        }
        assert_int_equal(b.per[i], 1);
        assert_int_equal(b.st[i], AIMS_OK);
        assert_true(b.x[i] == (float)i);
    }
    assert_true(atomic_load(&cl.h[0].entered) > 0);
    assert_true(counter(c, "aims_client_retries_total", "aretry") > 0);
    aims_client_destroy(c);
    cluster_fini(&cl);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
}

/* An instance whose node is gone but which is still registered: calls retry
 * elsewhere, and passive health ejects it so retries stop. */
static void test_health_ejects_dead_instance(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "he", "ghosted", 1);
    aims_instance ghost = 0;
    assert_int_equal(
        aims_registry_register(cl.reg, "ghosted", "inproc://he_ghost", 100, 60000, &ghost),
        AIMS_OK);
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN),
                     AIMS_OK);
    aims_msg *req = mk_req(1.0f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(aims_client_call(c, "ghosted", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                         AIMS_OK);
    }
    /* 5 consecutive failures eject (AIMS_HEALTH default); RR stops picking it. */
    assert_true(counter(c, "aims_client_retries_total", "ghosted") <= 6);
    assert_int_equal(atomic_load(&cl.h[0].entered), 100);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

/* A remote registry's mirror that suddenly lists nothing (it restarted empty)
 * does not make the client forget the instances it knows. */
static void test_mirror_keeps_last_view(void **state)
{
    (void)state;
    cluster cl = {0};
    add_node(&cl, "mv", "kept", 1);
    aims_registry *mirror = NULL;
    assert_int_equal(aims_registry_create(&mirror), AIMS_OK);
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(mirror, "kept", "inproc://mv0", 100, 60000, &id),
                     AIMS_OK);
    aims_client *c = mk_client(NULL);
    assert_int_equal(aimsi_client_adopt_registry(c, mirror, NULL, NULL), AIMS_OK);
    assert_int_equal(aimsi_client_adopt_registry(c, mirror, NULL, NULL), AIMS_E_STATE);
    assert_int_equal(aims_client_set_registry(c, mirror), AIMS_E_STATE);
    aims_msg *req = mk_req(1.0f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(aims_client_call(c, "kept", "m", req, rep, 0, 0), AIMS_OK);
    assert_int_equal(aims_registry_deregister(mirror, id), AIMS_OK);
    assert_int_equal(aims_client_call(c, "kept", "m", req, rep, 0, 0), AIMS_OK);
    assert_int_equal(reply_tag(rep), 1);
    /* A name it never saw is still NOTFOUND. */
    assert_int_equal(aims_client_call(c, "never", "m", req, rep, 0, 0), AIMS_E_NOTFOUND);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c); /* destroys the adopted mirror */
    cluster_fini(&cl);
}

static void test_destroy_with_pending_async(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "dp", "slowa", 0);
    cl.h[0].sleep_ms = 100;
    aims_client *c = mk_client(cl.reg);
    async_box b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    async_ref refs[6];
    aims_msg *req = mk_req(1.0f);
    for (int i = 0; i < 6; i++) {
        refs[i].box = &b;
        refs[i].i = i;
        assert_int_equal(
            aims_client_call_async(c, "slowa", "m", req, 0, 10000, on_done, &refs[i]), AIMS_OK);
    }
    aims_client_destroy(c);
    assert_int_equal(b.done, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(b.per[i], 1);
        assert_int_equal(b.st[i], AIMS_E_CLOSED);
    }
    aims_msg_destroy(req);
    cluster_fini(&cl);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
}

static void test_params_and_misuse(void **state)
{
    (void)state;
    aims_client *c = mk_client(NULL);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_MAX_ATTEMPTS, 0), AIMS_E_RANGE);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_RETRY_BUDGET, 1),
                     AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_client_set_param_f64(c, AIMS_CLIENT_RETRY_BUDGET, 0.5), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_NODE_WORKERS, 1), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_client_create(NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_client_set_registry(c, NULL), AIMS_E_MISUSE);
    assert_non_null(aims_client_metrics(c));
    assert_null(aims_client_metrics(NULL));
    assert_string_equal(aims_client_errmsg(NULL), "");
    aims_client_destroy(c);
    aims_client_destroy(NULL);
}

typedef struct fail_ctx {
    aims_registry *reg;
    aims_msg *req;
} fail_ctx;

static aims_status create_and_call(void *p)
{
    fail_ctx *f = p;
    aims_client *c = NULL;
    aims_msg *rep = NULL;
    aims_status rc = aims_client_create(&c);
    if (rc == AIMS_OK) {
        rc = aims_client_set_registry(c, f->reg);
    }
    if (rc == AIMS_OK) {
        rc = aims_msg_create(&rep);
    }
    if (rc == AIMS_OK) {
        rc = aims_client_call(c, "af", "m", f->req, rep, 0, 0);
    }
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    return rc;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    /* No heartbeat during the loop: its allocations would take injected failures. */
    g_heartbeat_ms = 3600000;
    add_node(&cl, "af", "af", 1);
    g_heartbeat_ms = 250;
    fail_ctx f = {cl.reg, mk_req(1.0f)};
    /* Warm the node (its metrics create counters on first use, errors too). */
    assert_int_equal(create_and_call(&f), AIMS_OK);
    cl.h[0].fail_with = AIMS_E_NOMEM;
    assert_int_equal(create_and_call(&f), AIMS_E_NOMEM);
    cl.h[0].fail_with = AIMS_OK;
    ta_fail_loop("client create + first call", create_and_call, &f);
    aims_msg_destroy(f.req);
    cluster_fini(&cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_url_compresses, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_call_addr_inproc, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_call_by_name_and_versions, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancing_spreads, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_retry_when_node_dies, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_not_idempotent_not_retried, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget_storm, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_and_late_reply, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_async_exactly_once, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_async_retry, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_ejects_dead_instance, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_mirror_keeps_last_view, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_with_pending_async, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_params_and_misuse, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
