/*
 * test_canary_verdict.c -- when a canary is judged and how one verdict holds
 * for every instance (svc_verdict.c, svc_canary.c; docs/LIFECYCLE.md
 * "Verdicts"), over the transport given as argv[1] (inproc or tcp).
 *
 * Checked: the rule ends a canary without traffic ("insufficient traffic"
 * after the window was extended once); a canary whose window ended with no
 * traffic reaches its verdict when somebody asks its state (a node without a
 * registry, so no tick exists) and on the node's heartbeat tick (nobody asks);
 * two infer instances on two nodes sharing a registry, traffic on one only,
 * end in the same state with one model event; a verdict recorded first is
 * followed by an instance whose own numbers say otherwise, and that instance
 * posts no event of its own. No timing assertions: waits are bounded polls.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "aims/aims.h"
#include "core/aimsi_core.h"
#include "model/aimsi_model.h"
#include "svc/aimsi_life.h"
#include "svc/aimsi_msg.h"
#include "etcd_proc.h"
#include "testalloc.h"

#define N 240
#define D 5
#define K 3
#define CALL_MS 60000
#define POLL_TRIES 3000 /* x 10 ms: 30 s, a loaded sanitizer build is slow, not wrong */

static const char *g_tr = "inproc";
static void *g_bundle; /* a trained MLP's bundle files (plain malloc): D inputs ... */
static size_t g_bundle_len;
static void *g_wide; /* ... and D + 2 inputs (meta version "7") */
static size_t g_wide_len;
static float g_x[N * (D + 2)];
static int32_t g_y[N];
static int g_seq;

static const char POLICY[] = "allow anonymous call blobs/*\n"
                             "allow anonymous deploy blobs\n"
                             "allow anonymous load blobs\n"
                             "allow anonymous weight blobs\n"
                             "allow anonymous rollback blobs\n";

/* Rows of D + 2 columns: a model over the first `cols` of them. */
static void make_data(void)
{
    uint64_t s = 7;
    for (size_t r = 0; r < N; r++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        g_y[r] = (int32_t)((s >> 33) % K);
        for (size_t j = 0; j < D + 2; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            g_x[r * (D + 2) + j] = (float)((j % K) == (size_t)g_y[r]) * 2.0f +
                                   (float)((s >> 33) % 100) / 100.0f;
        }
    }
}

/* A trained MLP over `cols` inputs, bundle meta version `ver`: its file bytes (malloc). */
static void *train_bundle(size_t cols, const char *ver, size_t *len)
{
    float *x = malloc(N * cols * sizeof *x);
    assert_non_null(x);
    for (size_t r = 0; r < N; r++) {
        memcpy(x + r * cols, g_x + r * (D + 2), cols * sizeof *x);
    }
    aims_dataset *ds = NULL, *tds = NULL;
    assert_int_equal(aims_dataset_create_dense(N, cols, x, g_y, &ds), AIMS_OK);
    aims_pipeline *p = NULL;
    assert_int_equal(aims_pipeline_create(&p), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL), AIMS_OK);
    assert_int_equal(aims_pipeline_fit_transform(p, ds, &tds), AIMS_OK);
    aims_model *m = NULL;
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_MLP, cols, K, &m), AIMS_OK);
    assert_int_equal(aims_model_add_dense(m, 8, AIMS_ACT_RELU), AIMS_OK);
    aims_trainer *t = NULL;
    assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 2), AIMS_OK);
    assert_int_equal(aims_trainer_fit(t, tds, NULL), AIMS_OK);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(p, m, &b), AIMS_OK);
    assert_int_equal(aims_bundle_set_meta(b, "version", ver), AIMS_OK);
    void *bytes = NULL;
    assert_int_equal(aimsi_bundle_to_bytes(b, &bytes, len), AIMS_OK);
    void *out = malloc(*len);
    assert_non_null(out);
    memcpy(out, bytes, *len);
    aimsi_free(bytes);
    aims_bundle_destroy(b);
    aims_pipeline_destroy(p);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(tds);
    aims_dataset_destroy(ds);
    free(x);
    return out;
}

/* ---- audit: the canary's own decisions, with their detail ---------------------- */

typedef struct verdicts {
    pthread_mutex_t mu;
    int n;
    aims_audit_action action[32];
    char detail[32][256];
} verdicts;

static void on_audit(void *user, int64_t unix_ms, aims_audit_action action, const char *identity,
                     const char *peer, const char *resource, aims_status status,
                     const char *detail)
{
    (void)unix_ms;
    (void)peer;
    (void)resource;
    verdicts *v = user;
    if (strcmp(identity, "canary") != 0 || status != AIMS_OK) {
        return;
    }
    pthread_mutex_lock(&v->mu);
    if (v->n < 32) {
        v->action[v->n] = action;
        snprintf(v->detail[v->n], sizeof v->detail[0], "%s", detail);
        v->n++;
    }
    pthread_mutex_unlock(&v->mu);
}

/* Verdicts of `action` whose detail holds `part` (NULL: any). */
static int verdict_count(verdicts *v, aims_audit_action action, const char *part)
{
    int k = 0;
    pthread_mutex_lock(&v->mu);
    for (int i = 0; i < v->n; i++) {
        k += v->action[i] == action && (part == NULL || strstr(v->detail[i], part) != NULL);
    }
    pthread_mutex_unlock(&v->mu);
    return k;
}

/* verdict_count, polled until it says `want` (bounded): a tick applies a
 * verdict under the table's lock and audits it after, so a query may see the
 * new state first. */
static int verdicts_become(verdicts *v, aims_audit_action action, const char *part, int want)
{
    int k = verdict_count(v, action, part);
    for (int i = 0; i < POLL_TRIES && k != want; i++) {
        usleep(10000);
        k = verdict_count(v, action, part);
    }
    return k;
}

/* ---- one infer node ------------------------------------------------------------ */

typedef struct inode {
    aims_node *n;
    aims_service *inf;
    aims_bundle *served;
    aims_policy *pol;
    char url[256];
} inode;

/* A node serving "blobs"; registry r (NULL: none) or the registry service at
 * `join` (NULL: none); heartbeat period hb_ms (0: default). */
static void inode_up(inode *x, aims_registry *r, const char *join, int64_t hb_ms, verdicts *v)
{
    memset(x, 0, sizeof *x);
    char name[64], url[128];
    snprintf(name, sizeof name, "verdict%d_%s", g_seq++, g_tr);
    const int tcp = strcmp(g_tr, "tcp") == 0;
    if (tcp) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    } else {
        snprintf(url, sizeof url, "inproc://%s", name);
    }
    assert_int_equal(aims_node_create(name, &x->n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(x->n, AIMS_NODE_DRAIN_GRACE_MS, 10), AIMS_OK);
    if (hb_ms > 0) {
        assert_int_equal(aims_node_set_param_i64(x->n, AIMS_NODE_HEARTBEAT_MS, hb_ms), AIMS_OK);
    }
    assert_int_equal(aims_node_set_audit(x->n, on_audit, v), AIMS_OK);
    if (tcp) { /* lifecycle methods over the wire need a policy that allows them */
        assert_int_equal(aims_policy_create(&x->pol), AIMS_OK);
        assert_int_equal(aims_policy_load_string(x->pol, POLICY, "test"), AIMS_OK);
        assert_int_equal(aims_node_set_policy(x->n, x->pol), AIMS_OK);
    }
    assert_int_equal(aims_node_listen(x->n, url), AIMS_OK);
    if (r != NULL) {
        assert_int_equal(aims_node_set_registry(x->n, r), AIMS_OK);
    }
    if (join != NULL) {
        assert_int_equal(aims_node_join(x->n, join), AIMS_OK);
    }
    assert_int_equal(aims_bundle_parse(g_bundle, g_bundle_len, &x->served), AIMS_OK);
    assert_int_equal(aims_service_add_infer(x->n, "blobs", x->served, &x->inf), AIMS_OK);
    assert_int_equal(aims_service_start(x->inf), AIMS_OK);
    assert_int_equal(aims_node_get_address(x->n, 0, x->url, sizeof x->url, NULL), AIMS_OK);
}

static void inode_down(inode *x)
{
    aims_node_destroy(x->n);
    aims_bundle_destroy(x->served);
    aims_policy_destroy(x->pol);
}

/* Deploy the bundle as version "2" at pct % with `rule` (canary id `id`, NULL: none). */
static void deploy_at(aims_client *c, const inode *x, uint32_t pct, const char *rule,
                      const char *id)
{
    aims_msg *req = NULL, *rep = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(aimsi_msg_put_bytes(req, "version", "2", 1), AIMS_OK);
    assert_int_equal(aimsi_msg_put_bytes(req, "bundle", g_bundle, g_bundle_len), AIMS_OK);
    assert_int_equal(aimsi_msg_put_i64(req, "percent", pct), AIMS_OK);
    assert_int_equal(aimsi_msg_put_bytes(req, "rule", rule, strlen(rule)), AIMS_OK);
    if (id != NULL) {
        assert_int_equal(aimsi_msg_put_bytes(req, "canary_id", id, strlen(id)), AIMS_OK);
    }
    assert_int_equal(aims_client_call_addr(c, x->url, "blobs", "deploy", req, rep, CALL_MS),
                     AIMS_OK);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
}

/* The canary state of one instance (its "versions" query: a verdict point). */
static aims_canary_state state_at(aims_client *c, const inode *x)
{
    aims_msg *req = NULL, *rep = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, x->url, "blobs", "versions", req, rep, CALL_MS),
                     AIMS_OK);
    int64_t st = -1;
    assert_int_equal(aimsi_msg_int(rep, "canary", &st), AIMS_OK);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return (aims_canary_state)st;
}

/* Poll one instance's state until the canary is decided (bounded). */
static aims_canary_state decided_at(aims_client *c, const inode *x)
{
    aims_canary_state st = AIMS_CANARY_STATE_RUNNING;
    for (int i = 0; i < POLL_TRIES && st == AIMS_CANARY_STATE_RUNNING; i++) {
        usleep(10000);
        st = state_at(c, x);
    }
    return st;
}

static void predict_at(aims_client *c, const inode *x, size_t row)
{
    aims_msg *req = NULL, *rep = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    const uint64_t d[2] = {1, D};
    assert_int_equal(aims_msg_add(req, "x", AIMS_DT_F32, d, 2, g_x + (row % N) * (D + 2), 0),
                     AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, x->url, "blobs", "predict", req, rep, CALL_MS),
                     AIMS_OK);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
}

/* Predicts on one instance until its canary is decided (bounded); its state. */
static aims_canary_state load_until_decided(aims_client *c, const inode *x)
{
    aims_canary_state st = AIMS_CANARY_STATE_RUNNING;
    for (int i = 0; i < POLL_TRIES && st == AIMS_CANARY_STATE_RUNNING; i++) {
        for (size_t k = 0; k < 20; k++) {
            predict_at(c, x, (size_t)i * 20 + k);
        }
        usleep(5000);
        st = state_at(c, x);
    }
    return st;
}

/* How many model records (events) of "blobs" in r hold `part`. */
static int model_records(aims_registry *r, const char *part)
{
    aims_instance ids[16];
    size_t found = 0;
    assert_int_equal(aims_registry_lookup(r, "aims.model/blobs", ids, 16, &found), AIMS_OK);
    int k = 0;
    for (size_t i = 0; i < found && i < 16; i++) {
        char text[512];
        size_t len = 0;
        if (aims_registry_get_address(r, ids[i], text, sizeof text, &len) == AIMS_OK) {
            k += strstr(text, part) != NULL;
        }
    }
    return k;
}

/* Print (never assert) how long since t0 a verdict took: docs/VERDICTS.md's numbers. */
static void report(const char *what, uint64_t t0)
{
    fprintf(stderr, "verdict %s (%s): %.0f ms after the deploy\n", what, g_tr,
            (double)(aimsi_now_ns() - t0) / 1e6);
}

/* model_records, polled until it says `want` (bounded): the event is posted
 * after the verdict's audit and state change, on the deciding thread. */
static int records_become(aims_registry *r, const char *part, int want)
{
    int k = model_records(r, part);
    for (int i = 0; i < POLL_TRIES && k != want; i++) {
        usleep(10000);
        k = model_records(r, part);
    }
    return k;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_canary_rule_insufficient_traffic(void **state)
{
    (void)state;
    aimsi_canary_rule r;
    aimsi_canary_rule_default(&r); /* window 2000 ms, 50 calls */
    const aimsi_canary_win st = {100, 0, 100 * 100000ull};
    const aimsi_canary_win few = {49, 0, 49 * 100000ull};
    const aimsi_canary_win enough = {50, 0, 50 * 100000ull};
    const uint64_t ms = 1000000u;
    char why[200];
    assert_int_equal(aimsi_canary_judge(&r, &st, &few, 1999 * ms, why, sizeof why),
                     AIMSI_CANARY_WAIT);
    assert_null(strstr(why, "extended"));
    /* the window is extended once ... */
    assert_int_equal(aimsi_canary_judge(&r, &st, &few, 2000 * ms, why, sizeof why),
                     AIMSI_CANARY_WAIT);
    assert_non_null(strstr(why, "window extended once"));
    assert_int_equal(aimsi_canary_judge(&r, &st, &few, 3999 * ms, why, sizeof why),
                     AIMSI_CANARY_WAIT);
    /* ... then too few calls keep the stable version */
    assert_int_equal(aimsi_canary_judge(&r, &st, &few, 4000 * ms, why, sizeof why),
                     AIMSI_CANARY_ROLLBACK);
    assert_non_null(strstr(why, "insufficient traffic: 49 of 50 calls"));
    const aimsi_canary_win none = {0, 0, 0};
    assert_int_equal(aimsi_canary_judge(&r, &st, &none, 100000 * ms, why, sizeof why),
                     AIMSI_CANARY_ROLLBACK);
    /* enough calls in the extension: judged as usual */
    assert_int_equal(aimsi_canary_judge(&r, &st, &enough, 3000 * ms, why, sizeof why),
                     AIMSI_CANARY_PROMOTE);
    assert_true(aimsi_canary_id_ok("0123456789abcdefABCDEF01"));
    assert_false(aimsi_canary_id_ok(""));
    assert_false(aimsi_canary_id_ok("a-b"));
    assert_false(aimsi_canary_id_ok("0123456789abcdefABCDEF012"));
}

/* No registry, so no heartbeat thread: only the query can judge. */
static void test_verdict_by_query(void **state)
{
    (void)state;
    verdicts v = {.n = 0};
    pthread_mutex_init(&v.mu, NULL);
    inode x;
    inode_up(&x, NULL, NULL, 0, &v);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    /* no traffic at all: rolled back for insufficient traffic when asked */
    const uint64_t t0 = aimsi_now_ns();
    deploy_at(c, &x, 20, "window_ms=100 min_calls=5", NULL);
    assert_int_equal(decided_at(c, &x), AIMS_CANARY_STATE_ROLLED_BACK);
    report("by query, no traffic, window 100 ms, polled every 10 ms", t0);
    assert_int_equal(verdicts_become(&v, AIMS_AUDIT_MODEL_ROLLBACK, "insufficient traffic", 1),
                     1);
    /* traffic that ended inside the window: promoted when asked after it */
    deploy_at(c, &x, 50, "window_ms=1000 min_calls=5 latency_slack_us=10000000", NULL);
    for (size_t i = 0; i < 40; i++) {
        predict_at(c, &x, i);
    }
    assert_int_equal(decided_at(c, &x), AIMS_CANARY_STATE_PROMOTED);
    assert_int_equal(verdicts_become(&v, AIMS_AUDIT_MODEL_PROMOTE, NULL, 1), 1);
    char *prom = NULL;
    size_t plen = 0;
    assert_int_equal(aims_metrics_prometheus(aims_node_metrics(x.n), &prom, &plen), AIMS_OK);
    assert_non_null(strstr(prom, "aims_canary_decisions_total{service=\"blobs\","
                                 "outcome=\"rolled_back\"} 1"));
    assert_non_null(strstr(prom, "aims_canary_decisions_total{service=\"blobs\","
                                 "outcome=\"promoted\"} 1"));
    aims_free(prom);
    aims_client_destroy(c);
    inode_down(&x);
    pthread_mutex_destroy(&v.mu);
}

/* Nobody asks and no traffic comes: the node's tick decides. */
static void test_verdict_by_tick(void **state)
{
    (void)state;
    verdicts v = {.n = 0};
    pthread_mutex_init(&v.mu, NULL);
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    inode x;
    inode_up(&x, r, NULL, 50, &v);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    const uint64_t t0 = aimsi_now_ns();
    deploy_at(c, &x, 20, "window_ms=100 min_calls=5", NULL);
    const int rolled = verdicts_become(&v, AIMS_AUDIT_MODEL_ROLLBACK, "insufficient traffic", 1);
    report("by tick, no traffic, window 100 ms, heartbeat 50 ms", t0);
    assert_int_equal(rolled, 1);
    assert_int_equal(state_at(c, &x), AIMS_CANARY_STATE_ROLLED_BACK);
    /* recorded in the registry (no id: "verdict") and reported once */
    char owner[160], meta[300];
    assert_int_equal(aims_registry_get_publication(r, "blobs/2", "verdict", owner, sizeof owner,
                                                   meta, sizeof meta),
                     AIMS_OK);
    assert_int_equal(strncmp(owner, "rolled_back ", 12), 0);
    assert_non_null(strstr(meta, "insufficient traffic"));
    assert_int_equal(records_become(r, "action=rollback", 1), 1);
    aims_client_destroy(c);
    inode_down(&x);
    aims_registry_destroy(r);
    pthread_mutex_destroy(&v.mu);
}

/* Two instances, traffic on one: the other follows its verdict. */
static void test_verdict_cluster_wide(void **state)
{
    (void)state;
    verdicts v = {.n = 0};
    pthread_mutex_init(&v.mu, NULL);
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    inode a, b;
    inode_up(&a, r, NULL, 0, &v);
    inode_up(&b, r, NULL, 600000, &v); /* no tick on b: it judges when asked, after a decided */
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_client_set_registry(c, r), AIMS_OK);
    assert_int_equal(aims_client_canary_start(c, "blobs", "2", g_bundle, g_bundle_len, NULL, 50,
                                              "window_ms=1000 min_calls=5 "
                                              "latency_slack_us=10000000",
                                              CALL_MS),
                     AIMS_OK);
    assert_int_equal(load_until_decided(c, &a), AIMS_CANARY_STATE_PROMOTED);
    /* b saw no call: alone it would roll back ("insufficient traffic") */
    assert_int_equal(decided_at(c, &b), AIMS_CANARY_STATE_PROMOTED);
    aims_canary_state all = AIMS_CANARY_STATE_NONE;
    assert_int_equal(aims_client_canary_state(c, "blobs", &all, CALL_MS), AIMS_OK);
    assert_int_equal(all, AIMS_CANARY_STATE_PROMOTED);
    assert_int_equal(verdicts_become(&v, AIMS_AUDIT_MODEL_PROMOTE, NULL, 2), 2);
    assert_int_equal(verdicts_become(&v, AIMS_AUDIT_MODEL_PROMOTE, "following", 1), 1);
    assert_int_equal(verdicts_become(&v, AIMS_AUDIT_MODEL_PROMOTE, "insufficient traffic", 1),
                     1);
    assert_int_equal(verdict_count(&v, AIMS_AUDIT_MODEL_ROLLBACK, NULL), 0);
    assert_int_equal(records_become(r, "action=promote", 1), 1); /* one event, by a */
    assert_int_equal(model_records(r, "action=rollback"), 0);
    aims_client_destroy(c);
    inode_down(&b);
    inode_down(&a);
    aims_registry_destroy(r);
    pthread_mutex_destroy(&v.mu);
}

/* Two nodes joined to the remote registry at `join` (only the heartbeat
 * ticks record there, svc_verdict.c), one canary id "j1" on both, traffic on
 * the first: both end promoted, the second by following. */
static void two_joined(const char *join, verdicts *v)
{
    inode a, b;
    inode_up(&a, NULL, join, 100, v);
    inode_up(&b, NULL, join, 100, v);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    /* one canary id on both, as aims_client_canary_start sends it */
    const char *rule = "window_ms=1000 min_calls=5 latency_slack_us=10000000";
    deploy_at(c, &a, 50, rule, "j1");
    deploy_at(c, &b, 50, rule, "j1");
    const uint64_t t0 = aimsi_now_ns();
    assert_int_equal(load_until_decided(c, &a), AIMS_CANARY_STATE_PROMOTED);
    report("joined: first instance (traffic), window 1000 ms, heartbeat 100 ms", t0);
    assert_int_equal(decided_at(c, &b), AIMS_CANARY_STATE_PROMOTED);
    report("joined: second instance follows (no traffic)", t0);
    assert_int_equal(verdicts_become(v, AIMS_AUDIT_MODEL_PROMOTE, NULL, 2), 2);
    assert_int_equal(verdicts_become(v, AIMS_AUDIT_MODEL_PROMOTE, "following", 1), 1);
    aims_client_destroy(c);
    inode_down(&b);
    inode_down(&a);
}

/* Through the registry service (aims://). */
static void test_verdict_cluster_wide_joined(void **state)
{
    (void)state;
    verdicts v = {.n = 0};
    pthread_mutex_init(&v.mu, NULL);
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    aims_node *host = NULL;
    char name[64], addr[256], join[300];
    snprintf(name, sizeof name, "verdict_reghost_%s", g_tr);
    assert_int_equal(aims_node_create(name, &host), AIMS_OK);
    assert_int_equal(aims_node_listen(host, "tcp://127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_node_host_registry(host, r), AIMS_OK);
    assert_int_equal(aims_node_get_address(host, 0, addr, sizeof addr, NULL), AIMS_OK);
    snprintf(join, sizeof join, "aims://%s", addr + 6); /* past "tcp://" */
    two_joined(join, &v);
    char owner[160];
    assert_int_equal(aims_registry_get_publication(r, "blobs/2", "verdict-j1", owner,
                                                   sizeof owner, NULL, 0),
                     AIMS_OK);
    assert_int_equal(strncmp(owner, "promoted verdict", 16), 0);
    assert_int_equal(records_become(r, "action=promote", 1), 1);
    assert_int_equal(model_records(r, "action=rollback"), 0);
    aims_node_destroy(host);
    aims_registry_destroy(r);
    pthread_mutex_destroy(&v.mu);
}

#ifdef HAVE_ETCD
static etcd_cluster g_etcd;

/* Through etcd: the record is the key <prefix>pub/blobs/2/verdict-j1. */
static void test_verdict_cluster_wide_etcd(void **state)
{
    (void)state;
    verdicts v = {.n = 0};
    pthread_mutex_init(&v.mu, NULL);
    char join[400], cmd[600];
    snprintf(join, sizeof join, "etcd://%s/cv%d", g_etcd.endpoints, (int)getpid());
    two_joined(join, &v);
    snprintf(cmd, sizeof cmd, "get /cv%d/pub/blobs/2/verdict-j1 --print-value-only | grep -q "
             "'\"owner\":\"promoted verdict'", (int)getpid());
    assert_int_equal(etcd_ctl(&g_etcd, cmd), 0);
    /* one model event of the verdict: one news record holds action=promote */
    snprintf(cmd, sizeof cmd, "get --prefix /cv%d/ --print-value-only | grep -c "
             "'action=promote' | grep -qx 1", (int)getpid());
    int st = etcd_ctl(&g_etcd, cmd); /* posted after the verdict: polled (bounded) */
    for (int i = 0; i < 100 && st != 0; i++) {
        usleep(100000);
        st = etcd_ctl(&g_etcd, cmd);
    }
    assert_int_equal(st, 0);
    pthread_mutex_destroy(&v.mu);
}
#endif

/* A verdict recorded first wins over the instance's own numbers. */
static void test_verdict_recorded_first_wins(void **state)
{
    (void)state;
    verdicts v = {.n = 0};
    pthread_mutex_init(&v.mu, NULL);
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    assert_int_equal(aims_registry_publish(r, "blobs/2", "verdict-t1", "rolled_back ops",
                                           "by hand"),
                     AIMS_OK);
    inode x;
    inode_up(&x, r, NULL, 0, &v);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    /* another canary id is a fresh verdict: this good one is promoted */
    deploy_at(c, &x, 50, "window_ms=1000 min_calls=5 latency_slack_us=10000000", "t0");
    assert_int_equal(load_until_decided(c, &x), AIMS_CANARY_STATE_PROMOTED);
    /* the same good model under the recorded id follows "rolled_back ops" */
    inode y;
    inode_up(&y, r, NULL, 0, &v);
    deploy_at(c, &y, 50, "window_ms=1000 min_calls=5 latency_slack_us=10000000", "t1");
    assert_int_equal(load_until_decided(c, &y), AIMS_CANARY_STATE_ROLLED_BACK);
    assert_int_equal(verdicts_become(&v, AIMS_AUDIT_MODEL_ROLLBACK, "rolled_back ops", 1), 1);
    assert_int_equal(model_records(r, "action=rollback"), 0); /* not ours to report */
    assert_int_equal(records_become(r, "action=promote", 1), 1); /* x's, under id t0 */
    aims_client_destroy(c);
    inode_down(&y);
    inode_down(&x);
    aims_registry_destroy(r);
    pthread_mutex_destroy(&v.mu);
}

/* ---- the HTTP door describes the version serving now ---------------------------- */

/* A lifecycle request to one instance: method with "version" (NULL: none) and
 * "weight" (< 0: none) or the wide bundle (bundle != 0). */
static void ctl_at(aims_client *c, const inode *x, const char *method, const char *ver,
                   int64_t weight, int bundle)
{
    aims_msg *req = NULL, *rep = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    if (ver != NULL) {
        assert_int_equal(aimsi_msg_put_bytes(req, "version", ver, strlen(ver)), AIMS_OK);
    }
    if (weight >= 0) {
        assert_int_equal(aimsi_msg_put_i64(req, "weight", weight), AIMS_OK);
    }
    if (bundle) {
        assert_int_equal(aimsi_msg_put_bytes(req, "bundle", g_wide, g_wide_len), AIMS_OK);
    }
    assert_int_equal(aims_client_call_addr(c, x->url, "blobs", method, req, rep, CALL_MS),
                     AIMS_OK);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
}

/* curl: the HTTP status of `method` url+path (POST with body "{}"); body into out. */
static int curl(const char *method, const char *url, const char *path, char *out, size_t cap)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "curl -s -m 20 %s -w '\\n%%{http_code}' '%s%s'",
             strcmp(method, "POST") == 0 ? "-d '{}'" : "", url, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char buf[1 << 15];
    const size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    assert_int_equal(pclose(p), 0);
    char *nl = strrchr(buf, '\n');
    assert_non_null(nl);
    *nl = '\0';
    const size_t len = strlen(buf) < cap ? strlen(buf) : cap - 1;
    memcpy(out, buf, len);
    out[len] = '\0';
    return atoi(nl + 1);
}

/* GET /v2/models/blobs[/versions/V]: 200, input width `cols` and bundle version `bv`. */
static void described(const char *url, const char *path, size_t cols, const char *bv)
{
    char body[8192], want[96];
    assert_int_equal(curl("GET", url, path, body, sizeof body), 200);
    snprintf(want, sizeof want, "\"datatype\":\"FP32\",\"shape\":[-1,%zu]", cols);
    if (strstr(body, want) == NULL) {
        fprintf(stderr, "GET %s: %s\n", path, body);
    }
    assert_non_null(strstr(body, want));
    snprintf(want, sizeof want, "\"bundle_version\":\"%s\"", bv);
    assert_non_null(strstr(body, want));
}

static void test_http_describes_serving_version(void **state)
{
    (void)state;
    aims_node *probe = NULL;
    aims_http *h = NULL;
    assert_int_equal(aims_node_create("verdict_probe", &probe), AIMS_OK);
    const aims_status hs = aims_http_create(probe, &h);
    aims_http_destroy(h);
    aims_node_destroy(probe);
    if (hs == AIMS_E_UNSUPPORTED) {
        skip(); /* built without the HTTP door */
    }
    verdicts v = {.n = 0};
    pthread_mutex_init(&v.mu, NULL);
    inode x;
    inode_up(&x, NULL, NULL, 0, &v);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_http_create(x.n, &h), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    char url[128], body[8192];
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    described(url, "/v2/models/blobs", D, "1");
    assert_int_equal(curl("GET", url, "/v2/models/blobs/versions/2", body, sizeof body), 404);
    /* loaded without traffic: the default stays, the version is described by name */
    ctl_at(c, &x, "load", "2", 0, 1);
    described(url, "/v2/models/blobs", D, "1");
    described(url, "/v2/models/blobs/versions/2", D + 2, "7");
    described(url, "/v2/models/blobs/versions/1", D, "1");
    assert_int_equal(curl("GET", url, "/v2/models/blobs", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"versions\":[\"1\",\"2\"]"));
    /* all traffic to 2: the model is described by 2 now */
    ctl_at(c, &x, "weight", "2", 100, 0);
    ctl_at(c, &x, "weight", "1", 0, 0);
    described(url, "/v2/models/blobs", D + 2, "7");
    /* rolled back: by 1 again */
    ctl_at(c, &x, "rollback", NULL, -1, 0);
    described(url, "/v2/models/blobs", D, "1");
    /* a version inside the model takes no calls by name */
    assert_int_equal(curl("POST", url, "/v2/models/blobs/versions/2/infer", body, sizeof body),
                     404);
    assert_non_null(strstr(body, "served by weight"));
    aims_http_destroy(h);
    aims_client_destroy(c);
    inode_down(&x);
    pthread_mutex_destroy(&v.mu);
}

static int group_setup(void **state)
{
    (void)state;
    make_data();
    g_bundle = train_bundle(D, "1", &g_bundle_len);
    g_wide = train_bundle(D + 2, "7", &g_wide_len);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_bundle);
    free(g_wide);
    return 0;
}

/* "etcd": the cluster-wide verdict through a real etcd (nodes on inproc). */
static int main_etcd(void)
{
#ifndef HAVE_ETCD
    printf("# built without etcd: skipped\n");
    return 77;
#else
    signal(SIGPIPE, SIG_IGN);
    const int st = etcd_test_start(&g_etcd, NULL, 0);
    if (st != 0) {
        return st;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verdict_cluster_wide_etcd, ta_setup, ta_teardown),
    };
    const int rc = cmocka_run_group_tests_name("canary_verdict_etcd", tests, group_setup,
                                               group_teardown);
    etcd_test_stop(&g_etcd, NULL);
    return rc;
#endif
}

/* Canary decisions are logged at INFO with their reason: show them. */
static void log_line(void *user, aims_log_level level, const char *msg)
{
    (void)user;
    if (level >= AIMS_LOG_INFO && strncmp(msg, "canary ", 7) == 0) {
        fprintf(stderr, "log: %s\n", msg);
    }
}

int main(int argc, char **argv)
{
    (void)aims_set_log(log_line, NULL, AIMS_LOG_INFO);
    if (argc > 1 && strcmp(argv[1], "etcd") == 0) {
        g_tr = "etcd"; /* nodes on inproc:// (inode_up), names and reports say etcd */
        return main_etcd();
    }
    if (argc > 1) {
        g_tr = argv[1];
    }
    if (strcmp(g_tr, "inproc") != 0 && strcmp(g_tr, "tcp") != 0) {
        fprintf(stderr, "usage: %s inproc|tcp|etcd\n", argv[0]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_canary_rule_insufficient_traffic, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_by_query, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_by_tick, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_cluster_wide, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_cluster_wide_joined, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_recorded_first_wins, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_http_describes_serving_version, ta_setup,
                                        ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "canary_verdict_%s", g_tr);
    return cmocka_run_group_tests_name(group, tests, group_setup, group_teardown);
}
