/*
 * test_svc_matrix.c -- the transport-parametrised service/client suite: the
 * SAME tests run on inproc://, ipc://, tcp:// and tls:// (argv[1]; meson registers
 * the program once per transport). Nodes listen on the transport under test
 * (tcp on 127.0.0.1 port 0, ipc under a mkdtemp directory) and register that
 * address, so calls by name travel over it too. tls:// nodes and clients use
 * certificates made at start-up by tests/support/mkcerts.sh (openssl CLI).
 *
 * Covered: echo, tensors of every dtype and shape, an 8 MiB payload (over the
 * zstd threshold), handler errors, the typed overload error, deadlines,
 * registry-resolved calls over 2 nodes, draining with concurrent callers
 * (zero failed calls), hostile frames (ipc/tcp: raw junk to the node, other
 * clients unaffected). Tests never assert timings.
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
#include <sys/socket.h>

#include <cmocka.h>

#include "svc/transport/aimsi_transport.h"
#include "svc_echo.h"
#include "testalloc.h"
#include "tls_support.h"
#include "tr_raw.h"

static const char *g_tr = "inproc";
static char g_dir[128];
static atomic_int g_seq;
static aims_tls_config *g_node_tls; /* tls: every node serves with it */

/* ---- a cluster on the transport under test --------------------------------------- */

typedef struct cluster {
    aims_registry *reg;
    aims_node *node[2];
    aims_service *svc[2];
    hctx h[2];
    char addr[2][AIMSI_URL_MAX + 1];
    size_t n;
} cluster;

static void listen_url(char *buf, size_t cap, const char *name)
{
    if (strcmp(g_tr, "tcp") == 0 || strcmp(g_tr, "tls") == 0) {
        snprintf(buf, cap, "%s://127.0.0.1:0", g_tr);
    } else if (strcmp(g_tr, "ipc") == 0) {
        snprintf(buf, cap, "ipc://%s/%s.sock", g_dir, name);
    } else {
        snprintf(buf, cap, "inproc://%s", name);
    }
}

typedef struct svc_opts {
    int inline_run;
    int64_t concurrency; /* 0: default */
    int64_t queue_cap;   /* 0: default */
    int64_t weight;      /* 0: default */
} svc_opts;

static void add_node(cluster *cl, const char *service, const svc_opts *o)
{
    const size_t i = cl->n++;
    char name[64], url[AIMSI_URL_MAX + 1];
    snprintf(name, sizeof name, "mx%d_%s", atomic_fetch_add(&g_seq, 1), g_tr);
    listen_url(url, sizeof url, name);
    memset(&cl->h[i], 0, sizeof cl->h[i]);
    cl->h[i].tag = (int)i + 1;
    assert_int_equal(aims_node_create(name, &cl->node[i]), AIMS_OK);
    /* Leases of 3 x 250 ms survive a loaded machine; a short drain grace keeps
     * node destroy quick (a local registry tells the client at once). */
    assert_int_equal(aims_node_set_param_i64(cl->node[i], AIMS_NODE_HEARTBEAT_MS, 250), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(cl->node[i], AIMS_NODE_DRAIN_GRACE_MS, 30), AIMS_OK);
    if (g_node_tls != NULL) {
        assert_int_equal(aims_node_set_tls(cl->node[i], g_node_tls), AIMS_OK);
    }
    assert_int_equal(aims_node_listen(cl->node[i], url), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(cl->node[i], 0, cl->addr[i], sizeof cl->addr[i], &len),
                     AIMS_OK);
    if (cl->reg != NULL) {
        assert_int_equal(aims_node_set_registry(cl->node[i], cl->reg), AIMS_OK);
    }
    assert_int_equal(
        aims_service_add_handler(cl->node[i], service, echo_fn, &cl->h[i], &cl->svc[i]),
        AIMS_OK);
    aims_service *s = cl->svc[i];
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, o ? o->inline_run : 1),
                     AIMS_OK);
    if (o != NULL && o->concurrency > 0) {
        assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, o->concurrency),
                         AIMS_OK);
    }
    if (o != NULL && o->queue_cap > 0) {
        assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_QUEUE_CAP, o->queue_cap),
                         AIMS_OK);
    }
    if (o != NULL && o->weight > 0) {
        assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_WEIGHT, o->weight), AIMS_OK);
    }
    assert_int_equal(aims_service_start(s), AIMS_OK);
}

static void cluster_fini(cluster *cl)
{
    for (size_t i = 0; i < cl->n; i++) {
        aims_node_destroy(cl->node[i]);
    }
    aims_registry_destroy(cl->reg);
    memset(cl, 0, sizeof(*cl));
}

/* Every tensor of a must be in b, same dtype, shape and bytes. */
static void assert_same_tensors(const aims_msg *a, const aims_msg *b)
{
    for (size_t i = 0; i < aims_msg_num_tensors(a); i++) {
        const char *name;
        aims_dtype dt, dt2;
        size_t nd, nd2, bytes, bytes2;
        const uint64_t *dims, *dims2;
        const void *data, *data2;
        assert_int_equal(aims_msg_get_tensor(a, i, &name, &dt, &nd, &dims, &data, &bytes), AIMS_OK);
        size_t j = 0;
        assert_int_equal(aims_msg_find(b, name, &j), AIMS_OK);
        assert_int_equal(aims_msg_get_tensor(b, j, NULL, &dt2, &nd2, &dims2, &data2, &bytes2), AIMS_OK);
        assert_int_equal(dt, dt2);
        assert_int_equal(nd, nd2);
        for (size_t d = 0; d < nd; d++) {
            assert_int_equal(dims[d], dims2[d]);
        }
        assert_int_equal(bytes, bytes2);
        if (bytes > 0) {
            assert_memory_equal(data, data2, bytes);
        }
    }
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_echo(void **state)
{
    (void)state;
    cluster cl = {0};
    add_node(&cl, "echo", NULL);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_req(4.25f), *rep = mk_msg();
    for (int i = 0; i < 20; i++) {
        assert_int_equal(aims_client_call_addr(c, cl.addr[0], "echo", "m", req, rep, 0), AIMS_OK);
        assert_same_tensors(req, rep);
        assert_int_equal(reply_tag(rep), 1);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_every_dtype(void **state)
{
    (void)state;
    cluster cl = {0};
    add_node(&cl, "types", NULL);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_msg(), *rep = mk_msg();
    const float f[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e30f, -1e-30f};
    const int32_t i32[4] = {-1, 0, 7, 2147483647};
    const uint8_t u8[5] = {0, 1, 127, 128, 255};
    const int64_t i64[4] = {INT64_MIN, -1, 0, INT64_MAX};
    const char text[] = "h\xc3\xa9llo\nworld";
    const uint64_t d23[2] = {2, 3}, d4[1] = {4}, d5[1] = {5}, d22[2] = {2, 2};
    const uint64_t dt[1] = {sizeof text - 1}, d0[1] = {0}, d1111[4] = {1, 1, 1, 1};
    const float scalar = 9.0f;
    assert_int_equal(aims_msg_add(req, "f32", AIMS_DT_F32, d23, 2, f, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "i32", AIMS_DT_I32, d4, 1, i32, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "u8", AIMS_DT_U8, d5, 1, u8, AIMS_MSG_BORROW), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "i64", AIMS_DT_I64, d22, 2, i64, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "text", AIMS_DT_BYTES, dt, 1, text, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "empty", AIMS_DT_F32, d0, 1, NULL, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "scalar", AIMS_DT_F32, NULL, 0, &scalar, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "four_d", AIMS_DT_U8, d1111, 4, u8, 0), AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "types", "m", req, rep, 0), AIMS_OK);
    assert_int_equal(aims_msg_num_tensors(rep), aims_msg_num_tensors(req) + 1);
    assert_same_tensors(req, rep);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_big_payload(void **state)
{
    (void)state;
    cluster cl = {0};
    add_node(&cl, "big", NULL);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_msg(), *rep = mk_msg();
    const uint64_t n = (8u << 20) / sizeof(float);
    float *x = NULL;
    assert_int_equal(aims_msg_alloc(req, "x", AIMS_DT_F32, &n, 1, (void **)&x), AIMS_OK);
    for (uint64_t i = 0; i < n; i++) {
        x[i] = (float)(i % 1000) * 0.5f; /* compressible: zstd kicks in on the wire */
    }
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "big", "m", req, rep, 30000), AIMS_OK);
    assert_same_tensors(req, rep);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_handler_error(void **state)
{
    (void)state;
    cluster cl = {0};
    add_node(&cl, "err", NULL);
    atomic_store(&cl.h[0].fail_with, AIMS_E_INVAL);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "err", "m", req, rep, 0), AIMS_E_INVAL);
    assert_string_equal(aims_msg_error(rep), "told to fail");
    assert_true(strstr(aims_client_errmsg(c), "told to fail") != NULL);
    /* Unknown service on a live node. */
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "nope", "m", req, rep, 0),
                     AIMS_E_NOTFOUND);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

/* A sync call on its own thread. */
typedef struct tcall {
    aims_client *c;
    const char *addr;
    const char *service;
    float x;
    aims_status st;
    pthread_t th;
} tcall;

static void *tcall_main(void *p)
{
    tcall *t = p;
    aims_msg *req = mk_req(t->x), *rep = mk_msg();
    t->st = aims_client_call_addr(t->c, t->addr, t->service, "m", req, rep, 20000);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return NULL;
}

static void test_overload(void **state)
{
    (void)state;
    cluster cl = {0};
    const svc_opts o = {0, 1, 1, 0}; /* queued only, 1 running, 1 waiting */
    add_node(&cl, "busy", &o);
    atomic_store(&cl.h[0].gate_closed, 1);
    aims_client *c = mk_client(NULL);
    tcall t[2];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 2; i++) {
        t[i].c = c;
        t[i].addr = cl.addr[0];
        t[i].service = "busy";
        assert_int_equal(pthread_create(&t[i].th, NULL, tcall_main, &t[i]), 0);
        if (i == 0) {
            while (atomic_load(&cl.h[0].entered) < 1) {
                nap_ms(1);
            }
        }
    }
    /* Wait until the second one is queued: then a third is refused, typed. */
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    aims_status st = AIMS_OK;
    for (int tries = 0; tries < 5000; tries++) {
        double queued = 0;
        assert_int_equal(aims_service_get_stat(cl.svc[0], AIMS_SERVICE_STAT_QUEUED, &queued), AIMS_OK);
        if (queued >= 1) {
            st = aims_client_call_addr(c, cl.addr[0], "busy", "m", req, rep, 0);
            break;
        }
        nap_ms(1);
    }
    assert_int_equal(st, AIMS_E_OVERLOADED);
    assert_true(strstr(aims_client_errmsg(c), "retry after") != NULL);
    atomic_store(&cl.h[0].gate_closed, 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i].th, NULL);
        assert_int_equal(t[i].st, AIMS_OK);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_deadline(void **state)
{
    (void)state;
    cluster cl = {0};
    const svc_opts o = {0, 0, 0, 0};
    add_node(&cl, "slow", &o);
    atomic_store(&cl.h[0].sleep_ms, 300);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "slow", "m", req, rep, 30),
                     AIMS_E_TIMEOUT);
    atomic_store(&cl.h[0].sleep_ms, 0);
    nap_ms(350); /* the late reply lands on a call nobody waits for */
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "slow", "m", req, rep, 0), AIMS_OK);
    assert_int_equal(reply_tag(rep), 1);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_registry_two_nodes(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "pair", NULL);
    add_node(&cl, "pair", NULL);
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN),
                     AIMS_OK);
    aims_msg *req = mk_req(2.0f), *rep = mk_msg();
    int seen[3] = {0};
    for (int i = 0; i < 40; i++) {
        assert_int_equal(aims_client_call(c, "pair", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                         AIMS_OK);
        const int t = reply_tag(rep);
        assert_true(t == 1 || t == 2);
        seen[t]++;
    }
    assert_int_equal(seen[1], 20);
    assert_int_equal(seen[2], 20);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

typedef struct loop_arg {
    aims_client *c;
    atomic_int stop;
    atomic_int ok, failed;
    _Atomic aims_status last;
    const char *service; /* NULL: "drain" */
} loop_arg;

static void *call_loop(void *p)
{
    loop_arg *a = p;
    aims_msg *req = mk_req(5.0f), *rep = mk_msg();
    while (!atomic_load(&a->stop)) {
        const aims_status st =
            aims_client_call(a->c, a->service != NULL ? a->service : "drain", "m", req, rep,
                             AIMS_CALL_IDEMPOTENT, 0);
        if (st == AIMS_OK) {
            atomic_fetch_add(&a->ok, 1);
        } else {
            atomic_store(&a->last, st);
            if (atomic_fetch_add(&a->failed, 1) == 0) {
                fprintf(stderr, "drain: first failed call: %s\n", aims_client_errmsg(a->c));
            }
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return NULL;
}

static void test_drain_zero_failures(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    const svc_opts o = {0, 0, 0, 0};
    add_node(&cl, "drain", &o);
    add_node(&cl, "drain", &o);
    atomic_store(&cl.h[1].sleep_ms, 1);
    loop_arg a;
    memset(&a, 0, sizeof a);
    a.c = mk_client(cl.reg);
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, call_loop, &a), 0);
    }
    while (atomic_load(&cl.h[1].calls) < 20) {
        nap_ms(1);
    }
    assert_int_equal(aims_service_stop(cl.svc[1], 2000), AIMS_OK);
    const int after = atomic_load(&a.ok);
    while (atomic_load(&a.ok) < after + 100) {
        nap_ms(1);
    }
    /* And back: it rejoins the registry and gets traffic again. */
    assert_int_equal(aims_service_start(cl.svc[1]), AIMS_OK);
    const int back = atomic_load(&cl.h[1].calls);
    for (int tries = 0; tries < 5000 && atomic_load(&cl.h[1].calls) == back; tries++) {
        nap_ms(1);
    }
    atomic_store(&a.stop, 1);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
    }
    if (atomic_load(&a.failed) != 0) {
        fprintf(stderr, "drain: %d failed calls, last %s: %s\n", atomic_load(&a.failed),
                aims_strerror(atomic_load(&a.last)), "see above");
    }
    assert_int_equal(atomic_load(&a.failed), 0);
    assert_true(atomic_load(&cl.h[1].calls) > back);
    aims_client_destroy(a.c);
    cluster_fini(&cl);
}

/* Open a raw socket to a tcp:// or ipc:// address. */
/* Two versions of one model behind one name: traffic follows the registry
 * weights (smooth WRR is exact), a version can be asked for by name, and
 * stopping the new version is an instant rollback (no failed call). */
static void test_version_weights_rollback(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    const svc_opts v1 = {1, 0, 0, 90}, v2 = {1, 0, 0, 10};
    add_node(&cl, "model@1", &v1);
    add_node(&cl, "model@2", &v2);
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_WEIGHTED_RR),
                     AIMS_OK);
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    int seen[3] = {0};
    for (int i = 0; i < 100; i++) {
        assert_int_equal(aims_client_call(c, "model", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                         AIMS_OK);
        seen[reply_tag(rep)]++;
    }
    assert_int_equal(seen[1], 90);
    assert_int_equal(seen[2], 10);
    assert_int_equal(aims_client_call(c, "model@2", "m", req, rep, 0, 0), AIMS_OK);
    assert_int_equal(reply_tag(rep), 2);
    assert_int_equal(aims_service_stop(cl.svc[1], 1000), AIMS_OK); /* roll back */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(aims_client_call(c, "model", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                         AIMS_OK);
        assert_int_equal(reply_tag(rep), 1);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

/* The seed's load-balance degree from the services' own busy counters. */
static void test_balance_degree(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    const svc_opts o = {0, 1, 0, 0};
    add_node(&cl, "bal", &o);
    add_node(&cl, "bal", &o);
    atomic_store(&cl.h[0].sleep_ms, 1);
    atomic_store(&cl.h[1].sleep_ms, 1);
    aims_client *c = mk_client(cl.reg);
    double degree = -1, umax = -1;
    /* idle: nobody worked, degree 0 */
    assert_int_equal(aims_client_balance_degree(c, "bal", 20, &degree, &umax), AIMS_OK);
    assert_true(degree >= 0.0 && degree <= 1.0);
    loop_arg la;
    memset(&la, 0, sizeof la);
    la.c = c;
    la.service = "bal";
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, call_loop, &la), 0);
    assert_int_equal(aims_client_balance_degree(c, "bal", 300, &degree, &umax), AIMS_OK);
    atomic_store(&la.stop, 1);
    pthread_join(th, NULL);
    assert_true(degree > 0.0 && degree <= 1.0);
    assert_true(umax > 0.0);
    assert_int_equal(aims_client_balance_degree(c, "nobody", 10, &degree, NULL),
                     AIMS_E_NOTFOUND);
    assert_int_equal(aims_client_balance_degree(c, "bal", 0, &degree, NULL), AIMS_E_RANGE);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

/* An instance that is registered but dead is ejected by passive failures and
 * then probed actively ("$ping") by the client; calls keep succeeding on the
 * live one meanwhile. */
static void test_active_probe(void **state)
{
    (void)state;
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    add_node(&cl, "probe", NULL);
    char dead[AIMSI_URL_MAX + 1];
    if (strcmp(g_tr, "tcp") == 0 || strcmp(g_tr, "tls") == 0) {
        snprintf(dead, sizeof dead, "%s://127.0.0.1:1", g_tr);
    } else if (strcmp(g_tr, "ipc") == 0) {
        snprintf(dead, sizeof dead, "ipc://%s/nobody.sock", g_dir);
    } else {
        snprintf(dead, sizeof dead, "inproc://nobody_%d", atomic_fetch_add(&g_seq, 1));
    }
    aims_instance ghost = 0;
    assert_int_equal(aims_registry_register(cl.reg, "probe", dead, 1, 60000, &ghost), AIMS_OK);
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN),
                     AIMS_OK);
    aims_msg *req = mk_req(3.0f), *rep = mk_msg();
    int probed = 0;
    for (int i = 0; i < 1000 && !probed; i++) {
        assert_int_equal(aims_client_call(c, "probe", "m", req, rep, AIMS_CALL_IDEMPOTENT, 0),
                         AIMS_OK);
        assert_int_equal(reply_tag(rep), 1);
        char *text = NULL;
        size_t len = 0;
        assert_int_equal(aims_metrics_prometheus(aims_client_metrics(c), &text, &len), AIMS_OK);
        probed = strstr(text, "aims_client_probes_failed_total") != NULL;
        aims_free(text);
        nap_ms(10);
    }
    assert_true(probed);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static void test_hostile_frames(void **state)
{
    (void)state;
    if (strcmp(g_tr, "inproc") == 0) {
        skip();
    }
    cluster cl = {0};
    add_node(&cl, "tough", NULL);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_req(3.0f), *rep = mk_msg();
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "tough", "m", req, rep, 0), AIMS_OK);
    /* Junk, a bad magic, a header claiming a huge frame, a truncated frame. */
    uint8_t junk[256];
    for (size_t i = 0; i < sizeof junk; i++) {
        junk[i] = (uint8_t)(i * 37u + 11u);
    }
    uint8_t hdr[44];
    memset(hdr, 0xff, sizeof hdr);
    memcpy(hdr, "AIMF", 4);
    for (int round = 0; round < 3; round++) {
        const int fd = tr_raw_connect(cl.addr[0]);
        const void *what = round == 1 ? (const void *)hdr : (const void *)junk;
        const size_t len = round == 1 ? sizeof hdr : (round == 0 ? sizeof junk : 20);
        ssize_t w = write(fd, what, len);
        (void)w;
        /* Other clients are unaffected while the junk connection is open. */
        assert_int_equal(aims_client_call_addr(c, cl.addr[0], "tough", "m", req, rep, 0),
                         AIMS_OK);
        assert_int_equal(reply_tag(rep), 1);
        close(fd);
    }
    assert_int_equal(aims_client_call_addr(c, cl.addr[0], "tough", "m", req, rep, 0), AIMS_OK);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

/* tls: fresh configs per test (the teardown checks every block is freed). */
static int mx_setup(void **state)
{
    ta_setup(state);
    if (strcmp(g_tr, "tls") == 0) {
        g_node_tls = tls_cfg(g_dir, "node");
        g_client_tls = tls_cfg(g_dir, "client");
        return g_node_tls != NULL && g_client_tls != NULL ? 0 : -1;
    }
    return 0;
}

static int mx_teardown(void **state)
{
    aims_tls_config_destroy(g_node_tls);
    aims_tls_config_destroy(g_client_tls);
    g_node_tls = g_client_tls = NULL;
    return ta_teardown(state);
}

/* Many async calls started back to back, so one read on the node brings many
 * frames and their replies go out corked (stream_tx.c): every call completes
 * once, with its own payload, inline handler or worker. A burst that queues
 * longer than the service's target under sustained overload is shed with
 * AIMS_E_OVERLOADED (svc_admit.c, by design: requests batched by the client's
 * I/O thread arrive together), and a try that waits past the client's
 * per-try timeout ends AIMS_E_TIMEOUT; such a call is started again, as a
 * caller would, so every call still ends with its own reply. */
typedef struct pipe_ctx {
    atomic_int done, ok, mismatched, shed;
    aims_client *c;
} pipe_ctx;

typedef struct pipe_call {
    pipe_ctx *ctx;
    float want;
    int retries;
} pipe_call;

static void pipe_done(void *user, aims_status status, const aims_msg *reply, const char *error);

/* Shed by the service (OVERLOADED), or a try abandoned by the client's
 * per-try timeout (client_try.c) while it waited behind the burst on a loaded
 * machine (TIMEOUT, one instance: nowhere else to retry). */
static int pipe_shed(aims_status status)
{
    return status == AIMS_E_OVERLOADED || status == AIMS_E_TIMEOUT;
}

/* Note one outcome; returns 0 when the call was started again (shed). */
static int pipe_note(pipe_call *pc, aims_status status, const aims_msg *reply)
{
    if (pipe_shed(status) && pc->ctx->c != NULL && pc->retries < 1000) {
        pc->retries++;
        atomic_fetch_add(&pc->ctx->shed, 1);
        aims_msg *req = mk_req(pc->want);
        (void)aims_client_call_async(pc->ctx->c, "pipe", "m", req, AIMS_CALL_IDEMPOTENT, 30000,
                                     pipe_done, pc);
        aims_msg_destroy(req);
        return 0;
    }
    size_t i = 0;
    const void *data = NULL;
    float got = -1.0f;
    if (status == AIMS_OK && reply != NULL && aims_msg_find(reply, "x", &i) == AIMS_OK &&
        aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
        memcpy(&got, data, sizeof got);
        atomic_fetch_add(&pc->ctx->ok, 1);
        if (got != pc->want) {
            atomic_fetch_add(&pc->ctx->mismatched, 1);
        }
    }
    atomic_fetch_add(&pc->ctx->done, 1);
    return 1;
}

static void pipe_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)error;
    (void)pipe_note(user, status, reply);
}

/* Start n async calls back to back on one node (inline handler or worker),
 * each with mk(want) for its own `want`, and check every one completes once
 * with its own payload. */
static void run_burst(int inl, int n, pipe_call *calls, float offset, aims_msg *(*mk)(float))
{
    cluster cl = {0};
    assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
    const svc_opts o = {inl, 0, 4096, 0};
    add_node(&cl, "pipe", &o);
    aims_client *c = mk_client(cl.reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_MAX_PENDING, 4096), AIMS_OK);
    static pipe_ctx ctx;
    atomic_init(&ctx.done, 0);
    atomic_init(&ctx.ok, 0);
    atomic_init(&ctx.mismatched, 0);
    atomic_init(&ctx.shed, 0);
    ctx.c = c;
    for (int i = 0; i < n; i++) {
        calls[i].ctx = &ctx;
        calls[i].want = (float)i + offset;
        calls[i].retries = 0;
        aims_msg *req = mk(calls[i].want);
        (void)aims_client_call_async(c, "pipe", "m", req, AIMS_CALL_IDEMPOTENT, 30000, pipe_done,
                                     &calls[i]);
        aims_msg_destroy(req);
    }
    for (int w = 0; w < 60000 && atomic_load(&ctx.done) < n; w++) {
        nap_ms(1);
    }
    assert_int_equal(atomic_load(&ctx.done), n);
    assert_int_equal(atomic_load(&ctx.ok), n);
    assert_int_equal(atomic_load(&ctx.mismatched), 0);
    aims_client_destroy(c);
    cluster_fini(&cl);
}

static aims_msg *mk_small_req(float want)
{
    return mk_req(want);
}

static void test_pipelined_async(void **state)
{
    (void)state;
    enum { N = 512 };
    static pipe_call calls[N];
    for (int inl = 1; inl >= 0; inl--) {
        run_burst(inl, N, calls, 0.5f, mk_small_req);
    }
}

/* A burst of bigger frames (192 x 32 KiB) started back to back: the node's
 * reads fill their 64 KiB buffer over and over, so the read loop stops at
 * READS_PER_EVENT with bytes still waiting. On tcp:// and ipc:// they wait in
 * the socket (epoll reports them again); tls:// reads ahead, so some wait
 * inside OpenSSL where epoll cannot see them, and the stream core must come
 * back for them on its own (stream_rx.c, inst->again). Every call completes
 * with its own payload; a stall shows as done < N. */
static aims_msg *mk_big_req(float want)
{
    enum { FLOATS = 8192 };
    static float row[FLOATS];
    for (size_t k = 0; k < FLOATS; k++) {
        row[k] = (float)k;
    }
    row[0] = want;
    aims_msg *m = mk_msg();
    const uint64_t dims[1] = {FLOATS};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dims, 1, row, 0), AIMS_OK);
    return m;
}

static void test_pipelined_big_burst(void **state)
{
    (void)state;
    enum { N = 192 };
    static pipe_call calls[N];
    run_burst(1, N, calls, 0.75f, mk_big_req);
}

/* A window refilled from the completions (they may run on the I/O thread,
 * whose sends are deferred too: stream_tx.c) while sync calls go through the
 * same connection: every async call and every sync call gets its own reply,
 * and nothing stalls in the deferred queue (a stall shows as done < N). */
typedef struct refill_ctx {
    pipe_ctx pc;
    aims_client *c;
    atomic_int started;
} refill_ctx;

enum { REFILL_N = 2048, REFILL_W = 32 };
static refill_ctx g_refill;
static pipe_call g_refill_calls[REFILL_N];

static void refill_next(void);

static void refill_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)error;
    pipe_call *pc = user;
    if (pipe_shed(status) && pc->retries < 1000) {
        pc->retries++; /* shed: the same call again, the window slot stays taken */
        aims_msg *req = mk_req(pc->want);
        (void)aims_client_call_async(g_refill.c, "pipe", "m", req, AIMS_CALL_IDEMPOTENT, 30000,
                                     refill_done, pc);
        aims_msg_destroy(req);
        return;
    }
    (void)pipe_note(pc, status, reply);
    refill_next();
}

static void refill_next(void)
{
    const int i = atomic_fetch_add(&g_refill.started, 1);
    if (i >= REFILL_N) {
        return;
    }
    g_refill_calls[i].ctx = &g_refill.pc;
    g_refill_calls[i].want = (float)i + 0.25f;
    g_refill_calls[i].retries = 0;
    aims_msg *req = mk_req(g_refill_calls[i].want);
    (void)aims_client_call_async(g_refill.c, "pipe", "m", req, AIMS_CALL_IDEMPOTENT, 30000,
                                 refill_done, &g_refill_calls[i]);
    aims_msg_destroy(req);
}

static void test_pipelined_refill_and_sync(void **state)
{
    (void)state;
    for (int inl = 1; inl >= 0; inl--) {
        cluster cl = {0};
        assert_int_equal(aims_registry_create(&cl.reg), AIMS_OK);
        const svc_opts o = {inl, 0, 4096, 0};
        add_node(&cl, "pipe", &o);
        aims_client *c = mk_client(cl.reg);
        memset(&g_refill, 0, sizeof g_refill);
        g_refill.c = c;
        atomic_init(&g_refill.pc.done, 0);
        atomic_init(&g_refill.pc.ok, 0);
        atomic_init(&g_refill.pc.mismatched, 0);
        atomic_init(&g_refill.pc.shed, 0);
        atomic_init(&g_refill.started, 0);
        for (int i = 0; i < REFILL_W; i++) {
            refill_next();
        }
        aims_msg *rep = mk_msg();
        for (int k = 0; k < 50; k++) {
            aims_msg *req = mk_req(1000000.0f + (float)k);
            aims_status st = AIMS_E_OVERLOADED;
            for (int t = 0; t < 1000 && pipe_shed(st); t++) {
                st = aims_client_call(c, "pipe", "m", req, rep, AIMS_CALL_IDEMPOTENT, 30000);
            }
            assert_int_equal(st, AIMS_OK);
            assert_same_tensors(req, rep);
            aims_msg_destroy(req);
        }
        aims_msg_destroy(rep);
        for (int w = 0; w < 60000 && atomic_load(&g_refill.pc.done) < REFILL_N; w++) {
            nap_ms(1);
        }
        assert_int_equal(atomic_load(&g_refill.pc.done), REFILL_N);
        assert_int_equal(atomic_load(&g_refill.pc.ok), REFILL_N);
        assert_int_equal(atomic_load(&g_refill.pc.mismatched), 0);
        aims_client_destroy(c);
        cluster_fini(&cl);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        g_tr = argv[1];
    }
    if (strcmp(g_tr, "inproc") != 0 && strcmp(g_tr, "ipc") != 0 && strcmp(g_tr, "tcp") != 0 &&
        strcmp(g_tr, "tls") != 0) {
        fprintf(stderr, "usage: %s inproc|ipc|tcp|tls\n", argv[0]);
        return 2;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/aims_mx_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        return 1;
    }
    if (strcmp(g_tr, "tls") == 0 && tls_make_pki(g_dir) != 0) {
        fprintf(stderr, "cannot make the test PKI with tests/support/mkcerts.sh\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_async, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_refill_and_sync, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_big_burst, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_every_dtype, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_big_payload, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_handler_error, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_overload, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_deadline, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_registry_two_nodes, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_drain_zero_failures, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_version_weights_rollback, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_balance_degree, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_active_probe, mx_setup, mx_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_frames, mx_setup, mx_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "svc_matrix_%s", g_tr);
    const int rc = cmocka_run_group_tests_name(group, tests, NULL, NULL);
    if (strcmp(g_tr, "tls") == 0) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        const int sr = system(cmd);
        (void)sr;
    }
    rmdir(g_dir);
    return rc;
}
