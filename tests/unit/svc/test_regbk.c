/*
 * test_regbk.c -- registry backend conformance: the same tests through the
 * backend vtable (registry/aimsi_regbk.h) on every backend, chosen by argv[1]:
 *
 *   local    the in-process aims_registry (aimsi_regbk_local_ops; the view is
 *            the registry itself)
 *   service  the "aims.registry" service hosted by a node, joined at aims://
 *   etcd     a real etcd (tests/support/etcd_proc.c) joined at etcd://
 *
 * Each test drives a node session (reg / heartbeat / dereg) and reads a
 * client view (view_open), exactly what aims_node_join and aims_client_join
 * wire up. The etcd run adds the faults only etcd has: the store going away
 * and coming back (the view keeps its last state and resumes its watch
 * event-exact) and a compaction while the view was away (it lists again and
 * converges without reordering). Waits are generous upper bounds, never
 * timing assertions.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "etcd_proc.h"
#include "svc/registry/aimsi_regbk.h"
#include "svc_echo.h"
#include "testalloc.h"
#ifdef HAVE_ETCD
#include "svc/registry/aimsi_etcd.h"
#endif

static const char *g_kind = "local";
static etcd_cluster g_etcd;
static int g_seq;
/* etcd-tls: "?cacert=...&cert=...&key=..." appended to every etcd URL */
static char g_tls_query[600];
static char g_pki[160];

typedef struct fx {
    aims_registry *r;   /* local, service: the authoritative registry */
    aims_node *host;    /* service: the node hosting it */
    char url[1100];
    const aimsi_regbk *bk;
    const aimsi_reg_ops *ops;
    void *ctx;
    aims_registry *view;
    void *vctx;
} fx;

static int is(const char *k)
{
    return strcmp(g_kind, k) == 0;
}

static void fx_init(fx *f)
{
    memset(f, 0, sizeof(*f));
    if (is("local")) {
        assert_int_equal(aims_registry_create(&f->r), AIMS_OK);
        f->ops = &aimsi_regbk_local_ops;
        f->ctx = f->r;
        f->view = f->r;
        return;
    }
    if (is("service")) {
        assert_int_equal(aims_registry_create(&f->r), AIMS_OK);
        assert_int_equal(aims_node_create("reghost", &f->host), AIMS_OK);
        assert_int_equal(aims_node_listen(f->host, "tcp://127.0.0.1:0"), AIMS_OK);
        assert_int_equal(aims_node_host_registry(f->host, f->r), AIMS_OK);
        char addr[256];
        assert_int_equal(aims_node_get_address(f->host, 0, addr, sizeof(addr), NULL), AIMS_OK);
        assert_true(strncmp(addr, "tcp://", 6) == 0);
        snprintf(f->url, sizeof(f->url), "aims://%s", addr + 6);
    } else {
        snprintf(f->url, sizeof(f->url), "etcd://%s/t%d-%d%s", g_etcd.endpoints, (int)getpid(),
                 ++g_seq, g_tls_query);
    }
    assert_int_equal(aimsi_regbk_find(f->url, &f->bk), AIMS_OK);
    assert_int_equal(f->bk->struct_size, sizeof(aimsi_regbk));
    assert_int_equal(f->bk->version, AIMSI_REGBK_VERSION);
    assert_int_equal(f->bk->node_open(f->url, NULL, &f->ops, &f->ctx), AIMS_OK);
    assert_int_equal(aims_registry_create(&f->view), AIMS_OK);
    assert_int_equal(f->bk->view_open(f->url, f->view, 50, NULL, &f->vctx), AIMS_OK);
}

static void fx_fini(fx *f)
{
    if (f->bk != NULL) {
        f->bk->view_close(f->vctx);
        aims_registry_destroy(f->view);
        if (f->ops->release != NULL) {
            f->ops->release(f->ctx);
        }
    }
    aims_node_destroy(f->host);
    aims_registry_destroy(f->r);
}

/* The authoritative side expires leases by sweeping (the hosting node's
 * heartbeat thread does it in a deployment; etcd does it itself). */
static void fx_tick(fx *f)
{
    if (f->r != NULL) {
        aims_registry_sweep(f->r, NULL);
    }
}

static size_t view_count(fx *f, const char *service)
{
    size_t n = 0;
    aims_status rc = aims_registry_lookup(f->view, service, NULL, 0, &n);
    assert_true(rc == AIMS_OK || rc == AIMS_E_RANGE);
    return n;
}

/* Wait (up to timeout_ms) until the view holds n instances of service. */
static int wait_count(fx *f, const char *service, size_t n, int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 20) {
        fx_tick(f);
        if (view_count(f, service) == n) {
            return 1;
        }
        nap_ms(20);
    }
    return view_count(f, service) == n;
}

static int view_has(fx *f, const char *service, const char *address)
{
    aims_instance ids[16];
    size_t n = 0;
    if (aims_registry_lookup(f->view, service, ids, 16, &n) != AIMS_OK) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char buf[300];
        size_t len = 0;
        if (aims_registry_get_address(f->view, ids[i], buf, sizeof(buf), &len) == AIMS_OK &&
            strcmp(buf, address) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- recorded view events ---- */

typedef struct ev_log {
    pthread_mutex_t mu;
    int n;
    char ev[64][80]; /* "+addr" / "-addr" */
} ev_log;

static void on_view_event(void *user, uint64_t revision, aims_event_kind kind, aims_instance id,
                          const char *service, const char *address)
{
    (void)revision, (void)id, (void)service;
    ev_log *l = user;
    pthread_mutex_lock(&l->mu);
    if (l->n < 64) {
        snprintf(l->ev[l->n++], sizeof(l->ev[0]), "%c%s", kind == AIMS_EVENT_PUT ? '+' : '-',
                 address);
    }
    pthread_mutex_unlock(&l->mu);
}

static int log_n(ev_log *l)
{
    pthread_mutex_lock(&l->mu);
    const int n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static int wait_events(fx *f, ev_log *l, int n, int timeout_ms)
{
    for (int t = 0; t < timeout_ms && log_n(l) < n; t += 20) {
        fx_tick(f);
        nap_ms(20);
    }
    return log_n(l) >= n;
}

/* ---- conformance -------------------------------------------------------------------- */

static void test_regbk_register_visible(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    uint64_t id = 0;
    assert_int_equal(f.ops->reg(f.ctx, "svc", "tcp://127.0.0.1:1", 3, 60000, &id), AIMS_OK);
    assert_true(id > 0);
    assert_true(wait_count(&f, "svc", 1, 10000));
    assert_true(view_has(&f, "svc", "tcp://127.0.0.1:1"));
    aims_instance vid;
    size_t n;
    assert_int_equal(aims_registry_lookup(f.view, "svc", &vid, 1, &n), AIMS_OK);
    assert_int_equal(aims_registry_weight(f.view, vid), 3);
    assert_int_equal(f.ops->dereg(f.ctx, id), AIMS_OK);
    assert_true(wait_count(&f, "svc", 0, 10000));
    fx_fini(&f);
}

static void test_regbk_lease_expiry(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    uint64_t keep = 0, lapse = 0;
    assert_int_equal(f.ops->reg(f.ctx, "exp", "tcp://127.0.0.1:2", 1, 60000, &keep), AIMS_OK);
    assert_int_equal(f.ops->reg(f.ctx, "exp", "tcp://127.0.0.1:3", 1, 1000, &lapse), AIMS_OK);
    assert_true(wait_count(&f, "exp", 2, 10000));
    /* No heartbeat: the short lease lapses (etcd rounds tiny TTLs up to its
     * minimum, a few seconds), the long one stays. */
    assert_true(wait_count(&f, "exp", 1, 20000));
    assert_true(view_has(&f, "exp", "tcp://127.0.0.1:2"));
    assert_int_equal(f.ops->dereg(f.ctx, keep), AIMS_OK);
    fx_fini(&f);
}

static void test_regbk_heartbeat_keeps_and_reregisters(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    uint64_t id = 0;
    assert_int_equal(f.ops->reg(f.ctx, "hb", "tcp://127.0.0.1:4", 1, 1000, &id), AIMS_OK);
    assert_true(wait_count(&f, "hb", 1, 10000));
    /* Renew well inside the lease for several lease periods. */
    const uint64_t until = aimsi_now_ns() + 4000000000ull;
    while (aimsi_now_ns() < until) {
        uint64_t io = id;
        assert_int_equal(f.ops->heartbeat(f.ctx, "hb", "tcp://127.0.0.1:4", 1, 1000, &io),
                         AIMS_OK);
        assert_true(io == id);
        fx_tick(&f);
        assert_int_equal(view_count(&f, "hb"), 1);
        nap_ms(200);
    }
    /* The lease is lost behind the node's back: the next heartbeat either
     * registers again itself (new id) or says NOTFOUND (the node then does). */
    assert_int_equal(f.ops->dereg(f.ctx, id), AIMS_OK);
    uint64_t io = id;
    const aims_status rc = f.ops->heartbeat(f.ctx, "hb", "tcp://127.0.0.1:4", 1, 60000, &io);
    assert_true((rc == AIMS_OK && io != id) || rc == AIMS_E_NOTFOUND);
    if (rc == AIMS_E_NOTFOUND) {
        assert_int_equal(f.ops->reg(f.ctx, "hb", "tcp://127.0.0.1:4", 1, 60000, &io), AIMS_OK);
    }
    assert_true(wait_count(&f, "hb", 1, 10000));
    assert_int_equal(f.ops->dereg(f.ctx, io), AIMS_OK);
    assert_true(wait_count(&f, "hb", 0, 10000));
    fx_fini(&f);
}

static void test_regbk_watch_order(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    static ev_log l;
    memset(&l, 0, sizeof(l));
    pthread_mutex_init(&l.mu, NULL);
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(f.view, "wo", aims_registry_revision(f.view),
                                         on_view_event, &l, &w),
                     AIMS_OK);
    uint64_t a = 0, b = 0, c = 0;
    assert_int_equal(f.ops->reg(f.ctx, "wo", "tcp://127.0.0.1:11", 1, 60000, &a), AIMS_OK);
    assert_int_equal(f.ops->reg(f.ctx, "wo", "tcp://127.0.0.1:12", 1, 60000, &b), AIMS_OK);
    assert_int_equal(f.ops->reg(f.ctx, "wo", "tcp://127.0.0.1:13", 1, 60000, &c), AIMS_OK);
    assert_int_equal(f.ops->dereg(f.ctx, b), AIMS_OK);
    assert_true(wait_events(&f, &l, 4, 10000));
    nap_ms(200); /* nothing more may come */
    assert_int_equal(aims_registry_unwatch(f.view, w), AIMS_OK);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.ev[0], "+tcp://127.0.0.1:11");
    assert_string_equal(l.ev[1], "+tcp://127.0.0.1:12");
    assert_string_equal(l.ev[2], "+tcp://127.0.0.1:13");
    assert_string_equal(l.ev[3], "-tcp://127.0.0.1:12");
    assert_int_equal(f.ops->dereg(f.ctx, a), AIMS_OK);
    assert_int_equal(f.ops->dereg(f.ctx, c), AIMS_OK);
    pthread_mutex_destroy(&l.mu);
    fx_fini(&f);
}

/* A node and a client joined through the public entry points: a call by name. */
static void test_regbk_join_end_to_end(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    aims_node *n = NULL;
    static hctx h = {.tag = 7};
    aims_service *s = NULL;
    assert_int_equal(aims_node_create("e2e", &n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_HEARTBEAT_MS, 100), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "tcp://127.0.0.1:0"), AIMS_OK);
    aims_client *c = mk_client(NULL);
    if (is("local")) {
        assert_int_equal(aims_node_set_registry(n, f.r), AIMS_OK);
        assert_int_equal(aims_client_set_registry(c, f.r), AIMS_OK);
    } else {
        assert_int_equal(aims_node_join(n, f.url), AIMS_OK);
        assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_SYNC_MS, 50), AIMS_OK);
        assert_int_equal(aims_client_join(c, f.url), AIMS_OK);
    }
    assert_int_equal(aims_service_add_handler(n, "e2e-echo", echo_fn, &h, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    aims_msg *req = mk_req(2.0f), *rep = mk_msg();
    aims_status rc = AIMS_E_NOTFOUND;
    for (int t = 0; t < 500 && rc != AIMS_OK; t++) {
        fx_tick(&f);
        rc = aims_client_call(c, "e2e-echo", "echo", req, rep, 0, 2000);
        if (rc != AIMS_OK) {
            nap_ms(20);
        }
    }
    assert_int_equal(rc, AIMS_OK);
    assert_int_equal(reply_tag(rep), 7);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    aims_node_destroy(n);
    fx_fini(&f);
}

/* Model routing on every backend: two versions of one model behind one name,
 * served by two nodes joined to the backend. Traffic follows the registry
 * weights (smooth weighted round robin is exact: 90/10 of 100 calls), a
 * version can be called by name, and stopping the new version rolls back
 * with zero failed (idempotent) calls until every call lands on version 1. */
static void test_regbk_version_weights_rollback(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    static hctx h1 = {.tag = 1}, h2 = {.tag = 2};
    aims_node *n[2] = {NULL, NULL};
    aims_service *s[2] = {NULL, NULL};
    const char *names[2] = {"model@1", "model@2"};
    hctx *hs[2] = {&h1, &h2};
    const int64_t weights[2] = {90, 10};
    aims_client *c = mk_client(NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(aims_node_create(i ? "v2" : "v1", &n[i]), AIMS_OK);
        assert_int_equal(aims_node_set_param_i64(n[i], AIMS_NODE_HEARTBEAT_MS, 100), AIMS_OK);
        assert_int_equal(aims_node_listen(n[i], "tcp://127.0.0.1:0"), AIMS_OK);
        if (is("local")) {
            assert_int_equal(aims_node_set_registry(n[i], f.r), AIMS_OK);
        } else {
            assert_int_equal(aims_node_join(n[i], f.url), AIMS_OK);
        }
        assert_int_equal(aims_service_add_handler(n[i], names[i], echo_fn, hs[i], &s[i]),
                         AIMS_OK);
        assert_int_equal(aims_service_set_param_i64(s[i], AIMS_SERVICE_WEIGHT, weights[i]),
                         AIMS_OK);
        assert_int_equal(aims_service_start(s[i]), AIMS_OK);
    }
    if (is("local")) {
        assert_int_equal(aims_client_set_registry(c, f.r), AIMS_OK);
    } else {
        assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_SYNC_MS, 50), AIMS_OK);
        assert_int_equal(aims_client_join(c, f.url), AIMS_OK);
    }
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_WEIGHTED_RR),
                     AIMS_OK);
    /* both versions in the client's view */
    int in_view = 0;
    for (int t = 0; t < 500 && !in_view; t++) {
        fx_tick(&f);
        aims_msg *probe = mk_req(0.0f), *rp = mk_msg();
        in_view = aims_client_call(c, "model@1", "m", probe, rp, AIMS_CALL_IDEMPOTENT, 2000) ==
                      AIMS_OK &&
                  aims_client_call(c, "model@2", "m", probe, rp, AIMS_CALL_IDEMPOTENT, 2000) ==
                      AIMS_OK;
        aims_msg_destroy(probe);
        aims_msg_destroy(rp);
        if (!in_view) {
            nap_ms(20);
        }
    }
    assert_true(in_view);
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 100; i++) {
        assert_int_equal(aims_client_call(c, "model", "m", req, rep, AIMS_CALL_IDEMPOTENT, 2000),
                         AIMS_OK);
        const int tag = reply_tag(rep);
        assert_true(tag == 1 || tag == 2);
        seen[tag]++;
    }
    assert_int_equal(seen[1], 90);
    assert_int_equal(seen[2], 10);
    assert_int_equal(aims_client_call(c, "model@2", "m", req, rep, 0, 2000), AIMS_OK);
    assert_int_equal(reply_tag(rep), 2);
    /* roll back: version 2 leaves; no call fails, and soon all land on 1 */
    assert_int_equal(aims_service_stop(s[1], 2000), AIMS_OK);
    int ones = 0;
    for (int t = 0; t < 2000 && ones < 20; t++) {
        fx_tick(&f);
        assert_int_equal(aims_client_call(c, "model", "m", req, rep, AIMS_CALL_IDEMPOTENT, 2000),
                         AIMS_OK);
        ones = reply_tag(rep) == 1 ? ones + 1 : 0;
        if (ones == 0) {
            nap_ms(5);
        }
    }
    assert_int_equal(ones, 20);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    aims_node_destroy(n[0]);
    aims_node_destroy(n[1]);
    fx_fini(&f);
}

static void test_regbk_bad_urls(void **state)
{
    (void)state;
    const aimsi_regbk *b = NULL;
    assert_int_equal(aimsi_regbk_find("no-scheme", &b), AIMS_E_INVAL);
    assert_int_equal(aimsi_regbk_find("aims://127.0.0.1:1", &b), AIMS_OK);
    assert_string_equal(b->scheme, "aims");
    assert_int_equal(aimsi_regbk_find("tcp://127.0.0.1:1", &b), AIMS_OK);
    assert_string_equal(b->scheme, "aims");
#ifdef HAVE_ETCD
    assert_int_equal(aimsi_regbk_find("etcd://127.0.0.1:1/x", &b), AIMS_OK);
    assert_string_equal(b->scheme, "etcd");
    const aimsi_reg_ops *ops;
    void *ctx;
    assert_int_equal(b->node_open("etcd:///x", NULL, &ops, &ctx), AIMS_E_INVAL);
    assert_int_equal(b->node_open("etcd://hostnoport/x", NULL, &ops, &ctx), AIMS_E_INVAL);
    assert_int_equal(b->node_open("etcd://a:1,,b:2/x", NULL, &ops, &ctx), AIMS_E_INVAL);
    /* Nothing listens there: registering fails, it does not hang. */
    assert_int_equal(b->node_open("etcd://127.0.0.1:1/x", NULL, &ops, &ctx), AIMS_OK);
    uint64_t id;
    assert_int_equal(ops->reg(ctx, "s", "tcp://127.0.0.1:1", 1, 1000, &id), AIMS_E_IO);
    ops->release(ctx);
#else
    assert_int_equal(aimsi_regbk_find("etcd://127.0.0.1:1/x", &b), AIMS_E_UNSUPPORTED);
    assert_non_null(strstr(aims_errmsg(), "built without etcd"));
#endif
}

/* ---- etcd faults ------------------------------------------------------------------- */

#ifdef HAVE_ETCD
static ev_log g_fl;

/* Restart the single member on another client port (the view's endpoint
 * stays dark), run `away` against that port, then restart it where it was. */
static void etcd_away(fx *f, void (*away)(const char *alt_url, fx *f))
{
    etcd_member_stop(&g_etcd, 0, SIGKILL);
    const int port = g_etcd.m[0].client_port;
    int ok = -1;
    for (int tries = 0; tries < 5 && ok != 0; tries++) {
        etcd_member_stop(&g_etcd, 0, SIGKILL); /* a failed try: bound by someone else */
        g_etcd.m[0].client_port = etcd_free_port();
        ok = etcd_member_restart(&g_etcd, 0);
    }
    if (ok != 0) {
        g_etcd.m[0].client_port = port;
        (void)etcd_member_restart(&g_etcd, 0);
    }
    assert_int_equal(ok, 0);
    char alt[300];
    const char *prefix = strrchr(f->url, '/');
    snprintf(alt, sizeof(alt), "etcd://127.0.0.1:%d%s", g_etcd.m[0].client_port, prefix);
    away(alt, f);
    etcd_member_stop(&g_etcd, 0, SIGKILL);
    g_etcd.m[0].client_port = port;
    assert_int_equal(etcd_member_restart(&g_etcd, 0), 0);
}

static void away_churn(const char *alt, fx *f)
{
    (void)f;
    const aimsi_reg_ops *ops;
    void *ctx;
    assert_int_equal(aimsi_regbk_etcd()->node_open(alt, NULL, &ops, &ctx), AIMS_OK);
    uint64_t e = 0;
    assert_int_equal(ops->reg(ctx, "flt", "tcp://127.0.0.1:22", 1, 60000, &e), AIMS_OK);
    assert_int_equal(ops->dereg(ctx, e), AIMS_OK);
    ops->release(ctx);
}

static void away_compact(const char *alt, fx *f)
{
    (void)f;
    const aimsi_reg_ops *ops;
    void *ctx;
    assert_int_equal(aimsi_regbk_etcd()->node_open(alt, NULL, &ops, &ctx), AIMS_OK);
    uint64_t g = 0, h = 0;
    assert_int_equal(ops->reg(ctx, "flt", "tcp://127.0.0.1:23", 1, 60000, &g), AIMS_OK);
    assert_int_equal(ops->dereg(ctx, g), AIMS_OK);
    assert_int_equal(ops->reg(ctx, "flt", "tcp://127.0.0.1:24", 1, 60000, &h), AIMS_OK);
    ops->release(ctx);
    /* Compact everything up to now: the view's resume revision is gone. */
    aimsi_etcd *e = NULL;
    assert_int_equal(aimsi_etcd_create(alt, &e), AIMS_OK);
    cJSON *body = cJSON_CreateObject(), *reply = NULL;
    cJSON_AddItemToObject(body, "key", aimsi_etcd_b64("/", 1));
    assert_int_equal(aimsi_etcd_call(e, "kv/range", body, &reply, 2000), AIMS_OK);
    const int64_t rev =
        aimsi_etcd_i64(cJSON_GetObjectItemCaseSensitive(reply, "header"), "revision", 0);
    cJSON_Delete(reply);
    cJSON_Delete(body);
    body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "revision", aimsi_etcd_i64_item(rev));
    assert_int_equal(aimsi_etcd_call(e, "kv/compaction", body, &reply, 2000), AIMS_OK);
    cJSON_Delete(reply);
    cJSON_Delete(body);
    aimsi_etcd_destroy(e);
}

static void test_etcd_outage_resume_and_compaction(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    memset(&g_fl, 0, sizeof(g_fl));
    pthread_mutex_init(&g_fl.mu, NULL);
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(f.view, "flt", aims_registry_revision(f.view),
                                         on_view_event, &g_fl, &w),
                     AIMS_OK);
    uint64_t a = 0;
    assert_int_equal(f.ops->reg(f.ctx, "flt", "tcp://127.0.0.1:21", 1, 60000, &a), AIMS_OK);
    assert_true(wait_events(&f, &g_fl, 1, 10000));

    /* 1. Away without compaction: the view keeps its last state meanwhile and
     * replays what it missed event by event (a put and a delete it never saw
     * as state). */
    etcd_away(&f, away_churn);
    assert_true(view_has(&f, "flt", "tcp://127.0.0.1:21"));
    assert_true(wait_events(&f, &g_fl, 3, 20000));
    assert_string_equal(g_fl.ev[0], "+tcp://127.0.0.1:21");
    assert_string_equal(g_fl.ev[1], "+tcp://127.0.0.1:22");
    assert_string_equal(g_fl.ev[2], "-tcp://127.0.0.1:22");

    /* 2. Away with a compaction: the view lists again and converges: the
     * put+delete of :23 leaves no trace, :24 arrives, nothing reorders. */
    etcd_away(&f, away_compact);
    assert_true(wait_events(&f, &g_fl, 4, 20000));
    nap_ms(300);
    assert_int_equal(log_n(&g_fl), 4);
    assert_string_equal(g_fl.ev[3], "+tcp://127.0.0.1:24");
    assert_true(view_has(&f, "flt", "tcp://127.0.0.1:21"));
    assert_int_equal(view_count(&f, "flt"), 2);

    /* 3. The watch is live again: a new registration and a removal arrive in order. */
    uint64_t d = 0;
    assert_int_equal(f.ops->reg(f.ctx, "flt", "tcp://127.0.0.1:25", 1, 60000, &d), AIMS_OK);
    assert_int_equal(f.ops->dereg(f.ctx, a), AIMS_OK);
    assert_true(wait_events(&f, &g_fl, 6, 10000));
    assert_string_equal(g_fl.ev[4], "+tcp://127.0.0.1:25");
    assert_string_equal(g_fl.ev[5], "-tcp://127.0.0.1:21");
    assert_int_equal(aims_registry_unwatch(f.view, w), AIMS_OK);
    pthread_mutex_destroy(&g_fl.mu);
    fx_fini(&f);
}

/* Weights live in etcd: a heartbeat with a new weight rewrites the key, in a
 * transaction against the revision of the node's last write. */
static void test_etcd_weight_change(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    uint64_t id = 0;
    assert_int_equal(f.ops->reg(f.ctx, "wt", "tcp://127.0.0.1:31", 2, 60000, &id), AIMS_OK);
    assert_true(wait_count(&f, "wt", 1, 10000));
    uint64_t io = id;
    assert_int_equal(f.ops->heartbeat(f.ctx, "wt", "tcp://127.0.0.1:31", 9, 60000, &io), AIMS_OK);
    assert_true(io == id);
    aims_instance vid = 0;
    size_t n = 0;
    uint32_t wgt = 0;
    for (int t = 0; t < 500 && wgt != 9; t++) {
        assert_int_equal(aims_registry_lookup(f.view, "wt", &vid, 1, &n), AIMS_OK);
        wgt = aims_registry_weight(f.view, vid);
        if (wgt != 9) {
            nap_ms(20);
        }
    }
    assert_int_equal(wgt, 9);

    /* Another writer (an operator) sets weight 5 on the key: the node's next
     * weight change, written against the revision it last wrote, loses and
     * says so; the operator's value stands. A change after that (from the
     * new revision) wins again. */
    aimsi_etcd *e = NULL;
    assert_int_equal(aimsi_etcd_create(f.url, &e), AIMS_OK);
    char key[300];
    snprintf(key, sizeof(key), "%ssvc/wt/%016llx", aimsi_etcd_prefix(e), (unsigned long long)id);
    const char *val = "{\"service\":\"wt\",\"address\":\"tcp://127.0.0.1:31\",\"weight\":5}";
    cJSON *body = cJSON_CreateObject(), *reply = NULL;
    cJSON_AddItemToObject(body, "key", aimsi_etcd_b64(key, strlen(key)));
    cJSON_AddItemToObject(body, "value", aimsi_etcd_b64(val, strlen(val)));
    cJSON_AddItemToObject(body, "lease", aimsi_etcd_i64_item((int64_t)id));
    assert_int_equal(aimsi_etcd_call(e, "kv/put", body, &reply, 2000), AIMS_OK);
    cJSON_Delete(body);
    cJSON_Delete(reply);
    aimsi_etcd_destroy(e);
    io = id;
    assert_int_equal(f.ops->heartbeat(f.ctx, "wt", "tcp://127.0.0.1:31", 7, 60000, &io),
                     AIMS_E_EXISTS);
    assert_non_null(strstr(aims_errmsg(), "changed by another writer"));
    /* The same weight again is not retried (the node took the other write as its base). */
    assert_int_equal(f.ops->heartbeat(f.ctx, "wt", "tcp://127.0.0.1:31", 7, 60000, &io), AIMS_OK);
    for (int t = 0; t < 500 && wgt != 5; t++) {
        assert_int_equal(aims_registry_lookup(f.view, "wt", &vid, 1, &n), AIMS_OK);
        wgt = aims_registry_weight(f.view, vid);
        if (wgt != 5) {
            nap_ms(20);
        }
    }
    assert_int_equal(wgt, 5);
    assert_int_equal(f.ops->heartbeat(f.ctx, "wt", "tcp://127.0.0.1:31", 3, 60000, &io), AIMS_OK);
    for (int t = 0; t < 500 && wgt != 3; t++) {
        assert_int_equal(aims_registry_lookup(f.view, "wt", &vid, 1, &n), AIMS_OK);
        wgt = aims_registry_weight(f.view, vid);
        if (wgt != 3) {
            nap_ms(20);
        }
    }
    assert_int_equal(wgt, 3);
    assert_int_equal(f.ops->dereg(f.ctx, id), AIMS_OK);
    fx_fini(&f);
}

/* etcd auth: credentials in the URL are traded for a token; wrong or
 * missing credentials fail with etcd's reason. Runs last: it turns auth on
 * for the shared test etcd. */
static void test_etcd_auth(void **state)
{
    (void)state;
    assert_int_equal(etcd_ctl(&g_etcd, "user add root:rootpw"), 0);
    assert_int_equal(etcd_ctl(&g_etcd, "user add aims:s3cr:et"), 0);
    assert_int_equal(etcd_ctl(&g_etcd, "role add aims"), 0);
    assert_int_equal(etcd_ctl(&g_etcd, "role grant-permission aims --prefix=true readwrite /au/"),
                     0);
    assert_int_equal(etcd_ctl(&g_etcd, "user grant-role aims aims"), 0);
    assert_int_equal(etcd_ctl(&g_etcd, "auth enable"), 0);
    const aimsi_regbk *b = aimsi_regbk_etcd();
    char url[1000];
    const aimsi_reg_ops *ops;
    void *ctx;
    uint64_t id = 0;
    /* No credentials, wrong password: refused with etcd's reason. */
    snprintf(url, sizeof(url), "etcd://%s/au%s", g_etcd.endpoints, g_tls_query);
    assert_int_equal(b->node_open(url, NULL, &ops, &ctx), AIMS_OK);
    assert_int_not_equal(ops->reg(ctx, "a", "tcp://127.0.0.1:41", 1, 60000, &id), AIMS_OK);
    ops->release(ctx);
    snprintf(url, sizeof(url), "etcd://aims:wrong@%s/au%s", g_etcd.endpoints, g_tls_query);
    assert_int_equal(b->node_open(url, NULL, &ops, &ctx), AIMS_OK);
    assert_int_not_equal(ops->reg(ctx, "a", "tcp://127.0.0.1:41", 1, 60000, &id), AIMS_OK);
    assert_non_null(strstr(aims_errmsg(), "authentication as 'aims' failed"));
    ops->release(ctx);
    /* The right ones (a password holding ':'): register, heartbeat, watch. */
    snprintf(url, sizeof(url), "etcd://aims:s3cr:et@%s/au%s", g_etcd.endpoints, g_tls_query);
    assert_int_equal(b->node_open(url, NULL, &ops, &ctx), AIMS_OK);
    aims_registry *view = NULL;
    void *vctx = NULL;
    assert_int_equal(aims_registry_create(&view), AIMS_OK);
    assert_int_equal(b->view_open(url, view, 50, NULL, &vctx), AIMS_OK);
    assert_int_equal(ops->reg(ctx, "a", "tcp://127.0.0.1:41", 1, 60000, &id), AIMS_OK);
    uint64_t io = id;
    assert_int_equal(ops->heartbeat(ctx, "a", "tcp://127.0.0.1:41", 1, 60000, &io), AIMS_OK);
    size_t n = 0;
    for (int t = 0; t < 500 && n != 1; t++) {
        assert_true(aims_registry_lookup(view, "a", NULL, 0, &n) == AIMS_OK || n > 0);
        if (n != 1) {
            nap_ms(20);
        }
    }
    assert_int_equal(n, 1);
    assert_int_equal(ops->dereg(ctx, id), AIMS_OK);
    b->view_close(vctx);
    aims_registry_destroy(view);
    ops->release(ctx);
    assert_int_equal(etcd_ctl(&g_etcd, "--user root:rootpw auth disable"), 0);
}
#endif

#ifdef HAVE_ETCD
/* TLS to etcd: a client without a certificate, or trusting another CA, or
 * asking for plain http of a TLS member, is refused; options are checked. */
static void test_etcd_tls_refusals(void **state)
{
    (void)state;
    const aimsi_regbk *b = aimsi_regbk_etcd();
    const aimsi_reg_ops *ops;
    void *ctx;
    uint64_t id = 0;
    char url[1400];
    /* no client certificate: the handshake fails (--client-cert-auth) */
    snprintf(url, sizeof(url), "etcd://%s/tls-no?cacert=%s/ca.pem", g_etcd.endpoints, g_pki);
    assert_int_equal(b->node_open(url, NULL, &ops, &ctx), AIMS_OK);
    assert_int_not_equal(ops->reg(ctx, "a", "tcp://127.0.0.1:41", 1, 60000, &id), AIMS_OK);
    ops->release(ctx);
    /* the server is not signed by the CA we trust */
    snprintf(url, sizeof(url), "etcd://%s/tls-no?cacert=%s/other-ca.pem&cert=%s/client.pem&"
             "key=%s/client.key", g_etcd.endpoints, g_pki, g_pki, g_pki);
    assert_int_equal(b->node_open(url, NULL, &ops, &ctx), AIMS_OK);
    assert_int_not_equal(ops->reg(ctx, "a", "tcp://127.0.0.1:41", 1, 60000, &id), AIMS_OK);
    ops->release(ctx);
    /* plain http to a TLS member */
    snprintf(url, sizeof(url), "etcd://%s/tls-no", g_etcd.endpoints);
    assert_int_equal(b->node_open(url, NULL, &ops, &ctx), AIMS_OK);
    assert_int_not_equal(ops->reg(ctx, "a", "tcp://127.0.0.1:41", 1, 60000, &id), AIMS_OK);
    ops->release(ctx);
    /* options are checked */
    assert_int_equal(b->node_open("etcd://127.0.0.1:1/x?cafile=/x", NULL, &ops, &ctx),
                     AIMS_E_INVAL);
    assert_int_equal(b->node_open("etcd://127.0.0.1:1/x?cert=/x", NULL, &ops, &ctx),
                     AIMS_E_INVAL);
    assert_int_equal(b->node_open("etcd://127.0.0.1:1?cacert=", NULL, &ops, &ctx),
                     AIMS_E_INVAL);
    /* with the right files everything works (the conformance group above ran
     * over TLS); and without a prefix the query still parses */
    snprintf(url, sizeof(url), "etcd://%s%s", g_etcd.endpoints, g_tls_query);
    assert_int_equal(b->node_open(url, NULL, &ops, &ctx), AIMS_OK);
    assert_int_equal(ops->reg(ctx, "tls-ok", "tcp://127.0.0.1:42", 1, 60000, &id), AIMS_OK);
    assert_int_equal(ops->dereg(ctx, id), AIMS_OK);
    ops->release(ctx);
}
#endif

int main(int argc, char **argv)
{
    if (argc > 1) {
        g_kind = argv[1];
    }
    signal(SIGPIPE, SIG_IGN);
    const int tls = is("etcd-tls");
    if (tls || is("etcd")) {
#ifndef HAVE_ETCD
        printf("# built without etcd: skipped\n");
        return 77;
#else
        const int st = etcd_test_start(&g_etcd, tls ? g_pki : NULL, tls ? sizeof(g_pki) : 0);
        if (st != 0) {
            return st;
        }
        if (tls) {
            snprintf(g_tls_query, sizeof(g_tls_query), "?cacert=%s/ca.pem&cert=%s/gw.pem&"
                     "key=%s/gw.key", g_pki, g_pki, g_pki);
            g_kind = "etcd"; /* the same tests as on etcd, over TLS */
        }
#endif
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_regbk_register_visible, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_regbk_lease_expiry, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_regbk_heartbeat_keeps_and_reregisters, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_regbk_watch_order, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_regbk_join_end_to_end, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_regbk_version_weights_rollback, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_regbk_bad_urls, ta_setup, ta_teardown),
    };
    int rc = cmocka_run_group_tests_name(tls ? "etcd over TLS" : g_kind, tests, NULL, NULL);
#ifdef HAVE_ETCD
    if (is("etcd")) {
        /* over TLS the outage test (it restarts the member on another port;
         * covered by the plain run) gives way to the TLS refusals */
        const struct CMUnitTest faults[] = {
            cmocka_unit_test_setup_teardown(test_etcd_weight_change, ta_setup, ta_teardown),
            cmocka_unit_test_setup_teardown(test_etcd_outage_resume_and_compaction, ta_setup,
                                            ta_teardown),
            cmocka_unit_test_setup_teardown(test_etcd_auth, ta_setup, ta_teardown),
        };
        const struct CMUnitTest tls_faults[] = {
            cmocka_unit_test_setup_teardown(test_etcd_weight_change, ta_setup, ta_teardown),
            cmocka_unit_test_setup_teardown(test_etcd_tls_refusals, ta_setup, ta_teardown),
            cmocka_unit_test_setup_teardown(test_etcd_auth, ta_setup, ta_teardown),
        };
        rc += tls ? cmocka_run_group_tests_name("etcd faults over TLS", tls_faults, NULL, NULL)
                  : cmocka_run_group_tests_name("etcd faults", faults, NULL, NULL);
        etcd_test_stop(&g_etcd, tls ? g_pki : NULL);
    }
#endif
    return rc;
}
