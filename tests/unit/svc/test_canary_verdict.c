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
 *
 * "tls": the cluster-wide verdict through a registry service on tls:// with
 * an authorization policy (docs/VERDICTS.md, "Who may record"; PKI made at
 * test time by tests/support/mkcerts.sh): nodes whose certificate identity
 * may register "blobs" record its verdict and follow it; a client or node
 * that may not cannot record one (AIMS_E_DENIED, audited by the registry)
 * and the node's canary still ends on its own verdict.
 *
 * Every cluster case runs in one fixture (cv_setup / cv_teardown): the
 * audited verdicts, a registry, a client, the nodes a case brings up (cv_node)
 * and the node hosting the registry (cv_host, cv_host_tls); teardown takes
 * them down in order.
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
#include "tls_support.h"

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
    char detail[32][512];
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
    char name[64];
} inode;

/* A node serving "blobs"; registry r (NULL: none) or the registry service at
 * `join` (NULL: none), joined with TLS config `tls` (NULL: none); heartbeat
 * period hb_ms (0: default). */
static void inode_up(inode *x, aims_registry *r, const char *join, aims_tls_config *tls,
                     int64_t hb_ms, verdicts *v)
{
    memset(x, 0, sizeof *x);
    char url[128];
    char *const name = x->name;
    snprintf(x->name, sizeof x->name, "verdict%d_%s", g_seq++, g_tr);
    /* "tls": the registry is on tls://, the nodes serve on tcp:// */
    const int tcp = strcmp(g_tr, "tcp") == 0 || strcmp(g_tr, "tls") == 0;
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
    if (tls != NULL) {
        assert_int_equal(aims_node_set_tls(x->n, tls), AIMS_OK);
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

/* ---- the fixture ------------------------------------------------------------------- */

#define CV_NODES 3

/* What the registry host's door audited (every event). */
typedef struct doorlog {
    pthread_mutex_t mu;
    int n;
    aims_audit_action action[256];
    aims_status status[256];
    char identity[256][64];
    char resource[256][96];
    char detail[256][320];
} doorlog;

static void on_door(void *user, int64_t unix_ms, aims_audit_action action, const char *identity,
                    const char *peer, const char *resource, aims_status status,
                    const char *detail)
{
    (void)unix_ms;
    (void)peer;
    doorlog *d = user;
    pthread_mutex_lock(&d->mu);
    if (d->n < 256) {
        d->action[d->n] = action;
        d->status[d->n] = status;
        snprintf(d->identity[d->n], sizeof d->identity[0], "%s", identity);
        snprintf(d->resource[d->n], sizeof d->resource[0], "%s", resource);
        snprintf(d->detail[d->n], sizeof d->detail[0], "%s", detail);
        d->n++;
    }
    pthread_mutex_unlock(&d->mu);
}

/* Door events of `action` with status `st` on `resource` (NULL: any) by
 * `identity` (NULL: anyone). */
static int door_count(doorlog *d, aims_audit_action action, aims_status st, const char *identity,
                      const char *resource)
{
    int k = 0;
    pthread_mutex_lock(&d->mu);

    for (int i = 0; i < d->n; i++) {
        k += d->action[i] == action && d->status[i] == st &&
             (identity == NULL || strcmp(d->identity[i], identity) == 0) &&
             (resource == NULL || strcmp(d->resource[i], resource) == 0);
    }
    pthread_mutex_unlock(&d->mu);
    return k;
}

/* A case's world: the verdicts its nodes audit, a registry (set on nodes by
 * cases that want one, or hosted by `host`), a client, and every node it
 * brought up -- taken down by cv_teardown in that order: client, nodes, host,
 * registry. */
typedef struct cv {
    verdicts v;
    doorlog door; /* the registry host's audit */
    aims_registry *r;
    aims_client *c;
    aims_client *c2; /* a second client (another identity), or NULL */
    aims_node *host;
    aims_policy *host_pol;
    aims_tls_config *tls[6]; /* pki_cfg's */
    int n_tls;
    inode node[CV_NODES];
    int n_nodes;
} cv;

static int cv_setup(void **state)
{
    ta_setup(state);
    cv *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->v.mu, NULL);
    pthread_mutex_init(&f->door.mu, NULL);
    assert_int_equal(aims_registry_create(&f->r), AIMS_OK);
    assert_int_equal(aims_client_create(&f->c), AIMS_OK);
    *state = f;
    return 0;
}

static int cv_teardown(void **state)
{
    cv *f = *state;
    aims_client_destroy(f->c);
    aims_client_destroy(f->c2);
    for (int i = f->n_nodes - 1; i >= 0; i--) {
        inode_down(&f->node[i]);
    }
    aims_node_destroy(f->host);
    aims_policy_destroy(f->host_pol);
    for (int i = 0; i < f->n_tls; i++) {
        aims_tls_config_destroy(f->tls[i]);
    }
    aims_registry_destroy(f->r);
    pthread_mutex_destroy(&f->door.mu);
    pthread_mutex_destroy(&f->v.mu);
    free(f);
    return ta_teardown(state);
}

/* One more node of the case (inode_up's arguments), taken down by cv_teardown. */
static inode *cv_node(cv *f, aims_registry *r, const char *join, aims_tls_config *tls,
                      int64_t hb_ms)
{
    assert_true(f->n_nodes < CV_NODES);
    inode *x = &f->node[f->n_nodes++];
    inode_up(x, r, join, tls, hb_ms, &f->v);
    return x;
}

/* A node hosting f->r on tcp://; the URL nodes join it by into join. */
static void cv_host(cv *f, char *join, size_t cap)
{
    char name[64], addr[256];
    snprintf(name, sizeof name, "verdict_reghost_%s", g_tr);
    assert_int_equal(aims_node_create(name, &f->host), AIMS_OK);
    assert_int_equal(aims_node_listen(f->host, "tcp://127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_node_host_registry(f->host, f->r), AIMS_OK);
    assert_int_equal(aims_node_get_address(f->host, 0, addr, sizeof addr, NULL), AIMS_OK);
    snprintf(join, cap, "aims://%s", addr + 6); /* past "tcp://" */
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
    cv *f = *state;
    inode *x = cv_node(f, NULL, NULL, NULL, 0);
    /* no traffic at all: rolled back for insufficient traffic when asked */
    const uint64_t t0 = aimsi_now_ns();
    deploy_at(f->c, x, 20, "window_ms=100 min_calls=5", NULL);
    assert_int_equal(decided_at(f->c, x), AIMS_CANARY_STATE_ROLLED_BACK);
    report("by query, no traffic, window 100 ms, polled every 10 ms", t0);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_ROLLBACK, "insufficient traffic", 1),
                     1);
    /* traffic that ended inside the window: promoted when asked after it */
    deploy_at(f->c, x, 50, "window_ms=1000 min_calls=5 latency_slack_us=10000000", NULL);
    for (size_t i = 0; i < 40; i++) {
        predict_at(f->c, x, i);
    }
    assert_int_equal(decided_at(f->c, x), AIMS_CANARY_STATE_PROMOTED);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_PROMOTE, NULL, 1), 1);
    char *prom = NULL;
    size_t plen = 0;
    assert_int_equal(aims_metrics_prometheus(aims_node_metrics(x->n), &prom, &plen), AIMS_OK);
    assert_non_null(strstr(prom, "aims_canary_decisions_total{service=\"blobs\","
                                 "outcome=\"rolled_back\"} 1"));
    assert_non_null(strstr(prom, "aims_canary_decisions_total{service=\"blobs\","
                                 "outcome=\"promoted\"} 1"));
    aims_free(prom);
}

/* Nobody asks and no traffic comes: the node's tick decides. */
static void test_verdict_by_tick(void **state)
{
    cv *f = *state;
    inode *x = cv_node(f, f->r, NULL, NULL, 50);
    const uint64_t t0 = aimsi_now_ns();
    deploy_at(f->c, x, 20, "window_ms=100 min_calls=5", NULL);
    const int rolled =
        verdicts_become(&f->v, AIMS_AUDIT_MODEL_ROLLBACK, "insufficient traffic", 1);
    report("by tick, no traffic, window 100 ms, heartbeat 50 ms", t0);
    assert_int_equal(rolled, 1);
    assert_int_equal(state_at(f->c, x), AIMS_CANARY_STATE_ROLLED_BACK);
    /* recorded in the registry (no id: "verdict") and reported once */
    char owner[160], meta[300];
    assert_int_equal(aims_registry_get_publication(f->r, "blobs/2", "verdict", owner,
                                                   sizeof owner, meta, sizeof meta),
                     AIMS_OK);
    assert_int_equal(strncmp(owner, "rolled_back ", 12), 0);
    assert_non_null(strstr(meta, "insufficient traffic"));
    assert_int_equal(records_become(f->r, "action=rollback", 1), 1);
}

/* Two instances, traffic on one: the other follows its verdict. */
static void test_verdict_cluster_wide(void **state)
{
    cv *f = *state;
    inode *a = cv_node(f, f->r, NULL, NULL, 0);
    inode *b = cv_node(f, f->r, NULL, NULL, 600000); /* no tick on b: judged when asked */
    assert_int_equal(aims_client_set_registry(f->c, f->r), AIMS_OK);
    assert_int_equal(aims_client_canary_start(f->c, "blobs", "2", g_bundle, g_bundle_len, NULL,
                                              50,
                                              "window_ms=1000 min_calls=5 "
                                              "latency_slack_us=10000000",
                                              CALL_MS),
                     AIMS_OK);
    assert_int_equal(load_until_decided(f->c, a), AIMS_CANARY_STATE_PROMOTED);
    /* b saw no call: alone it would roll back ("insufficient traffic") */
    assert_int_equal(decided_at(f->c, b), AIMS_CANARY_STATE_PROMOTED);
    aims_canary_state all = AIMS_CANARY_STATE_NONE;
    assert_int_equal(aims_client_canary_state(f->c, "blobs", &all, CALL_MS), AIMS_OK);
    assert_int_equal(all, AIMS_CANARY_STATE_PROMOTED);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_PROMOTE, NULL, 2), 2);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_PROMOTE, "following", 1), 1);
    assert_int_equal(
        verdicts_become(&f->v, AIMS_AUDIT_MODEL_PROMOTE, "insufficient traffic", 1), 1);
    assert_int_equal(verdict_count(&f->v, AIMS_AUDIT_MODEL_ROLLBACK, NULL), 0);
    assert_int_equal(records_become(f->r, "action=promote", 1), 1); /* one event, by a */
    assert_int_equal(model_records(f->r, "action=rollback"), 0);
}

/* Two nodes joined to the remote registry at `join` (only the heartbeat
 * ticks record there, svc_verdict.c), with TLS configs ta / tb (NULL: none),
 * one canary id on both, traffic on the first: both end promoted, the second
 * by following. */
static void two_joined(cv *f, const char *join, aims_tls_config *ta, aims_tls_config *tb,
                       const char *id)
{
    inode *a = cv_node(f, NULL, join, ta, 100);
    inode *b = cv_node(f, NULL, join, tb, 100);
    /* one canary id on both, as aims_client_canary_start sends it */
    const char *rule = "window_ms=1000 min_calls=5 latency_slack_us=10000000";
    deploy_at(f->c, a, 50, rule, id);
    deploy_at(f->c, b, 50, rule, id);
    const uint64_t t0 = aimsi_now_ns();
    assert_int_equal(load_until_decided(f->c, a), AIMS_CANARY_STATE_PROMOTED);
    report("joined: first instance (traffic), window 1000 ms, heartbeat 100 ms", t0);
    assert_int_equal(decided_at(f->c, b), AIMS_CANARY_STATE_PROMOTED);
    report("joined: second instance follows (no traffic)", t0);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_PROMOTE, NULL, 2), 2);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_PROMOTE, "following", 1), 1);
}

/* Through the registry service (aims://). */
static void test_verdict_cluster_wide_joined(void **state)
{
    cv *f = *state;
    char join[300];
    cv_host(f, join, sizeof join);
    two_joined(f, join, NULL, NULL, "j1");
    char owner[160];
    assert_int_equal(aims_registry_get_publication(f->r, "blobs/2", "verdict-j1", owner,
                                                   sizeof owner, NULL, 0),
                     AIMS_OK);
    assert_int_equal(strncmp(owner, "promoted verdict", 16), 0);
    assert_int_equal(records_become(f->r, "action=promote", 1), 1);
    assert_int_equal(model_records(f->r, "action=rollback"), 0);
}

#ifdef HAVE_ETCD
static etcd_cluster g_etcd;

/* Through etcd: the record is the key <prefix>pub/blobs/2/verdict-j1. */
static void test_verdict_cluster_wide_etcd(void **state)
{
    cv *f = *state;
    char join[400], cmd[600];
    snprintf(join, sizeof join, "etcd://%s/cv%d", g_etcd.endpoints, (int)getpid());
    two_joined(f, join, NULL, NULL, "j1");
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
}
#endif

/* A verdict recorded first wins over the instance's own numbers. */
static void test_verdict_recorded_first_wins(void **state)
{
    cv *f = *state;
    assert_int_equal(aims_registry_publish(f->r, "blobs/2", "verdict-t1", "rolled_back ops",
                                           "by hand"),
                     AIMS_OK);
    inode *x = cv_node(f, f->r, NULL, NULL, 0);
    /* another canary id is a fresh verdict: this good one is promoted */
    deploy_at(f->c, x, 50, "window_ms=1000 min_calls=5 latency_slack_us=10000000", "t0");
    assert_int_equal(load_until_decided(f->c, x), AIMS_CANARY_STATE_PROMOTED);
    /* the same good model under the recorded id follows "rolled_back ops" */
    inode *y = cv_node(f, f->r, NULL, NULL, 0);
    deploy_at(f->c, y, 50, "window_ms=1000 min_calls=5 latency_slack_us=10000000", "t1");
    assert_int_equal(load_until_decided(f->c, y), AIMS_CANARY_STATE_ROLLED_BACK);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_ROLLBACK, "rolled_back ops", 1), 1);
    assert_int_equal(model_records(f->r, "action=rollback"), 0); /* not ours to report */
    assert_int_equal(records_become(f->r, "action=promote", 1), 1); /* x's, under id t0 */
}

/* ---- "tls": who may record a verdict (a policy on the registry) --------------------- */

static char g_pki[64]; /* the test PKI (mkcerts.sh), made by main_tls */

/* A TLS config with the PKI's certificate `who` ("node", "client", "client2"),
 * released by cv_teardown. */
static aims_tls_config *pki_cfg(cv *f, const char *who)
{
    assert_true(f->n_tls < 6);
    aims_tls_config *cfg = tls_cfg(g_pki, who);
    assert_non_null(cfg);
    f->tls[f->n_tls++] = cfg;
    return cfg;
}

/* A node hosting f->r on tls:// (certificate node1.aims) with the policy
 * `rules`, its door audited into f->door; the URL nodes join it by into join. */
static void cv_host_tls(cv *f, const char *rules, char *join, size_t cap)
{
    assert_int_equal(aims_node_create("verdict_reghost_tls", &f->host), AIMS_OK);
    assert_int_equal(aims_node_set_tls(f->host, pki_cfg(f, "node")), AIMS_OK);
    assert_int_equal(aims_policy_create(&f->host_pol), AIMS_OK);
    assert_int_equal(aims_policy_load_string(f->host_pol, rules, "registry.policy"), AIMS_OK);
    assert_int_equal(aims_node_set_policy(f->host, f->host_pol), AIMS_OK);
    assert_int_equal(aims_node_set_audit(f->host, on_door, &f->door), AIMS_OK);
    assert_int_equal(aims_node_listen(f->host, "tls://127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_node_host_registry(f->host, f->r), AIMS_OK);
    assert_int_equal(aims_node_get_address(f->host, 0, join, cap, NULL), AIMS_OK);
}

/* A node joined with the certificate `who`. */
static inode *cv_node_as(cv *f, const char *join, const char *who)
{
    return cv_node(f, NULL, join, pki_cfg(f, who), 100);
}

/* Both nodes' identities may register "blobs" (exactly that name): the
 * verdict record "blobs/2@verdict-p1" and the model event
 * "aims.model/blobs" are theirs too, so the first verdict is recorded and the
 * second node follows it -- and the registry refused nothing. */
static void test_verdict_policy_registrant_records(void **state)
{
    cv *f = *state;
    char join[300];
    cv_host_tls(f,
                "allow *.aims join aims.registry\n"
                "allow client1.aims register blobs\n"
                "allow client2.aims register blobs\n",
                join, sizeof join);
    assert_int_equal(strncmp(join, "tls://", 6), 0);
    two_joined(f, join, pki_cfg(f, "client"), pki_cfg(f, "client2"), "p1");
    char owner[160], meta[300];
    assert_int_equal(aims_registry_get_publication(f->r, "blobs/2", "verdict-p1", owner,
                                                   sizeof owner, meta, sizeof meta),
                     AIMS_OK);
    assert_int_equal(strncmp(owner, "promoted verdict", 16), 0);
    assert_int_equal(records_become(f->r, "action=promote", 1), 1);
    assert_int_equal(model_records(f->r, "action=rollback"), 0);
    /* the record was admitted once (the second writer: "already published") */
    assert_int_equal(door_count(&f->door, AIMS_AUDIT_REGISTER, AIMS_OK, NULL,
                                "blobs/2@verdict-p1"),
                     1);
    assert_int_equal(door_count(&f->door, AIMS_AUDIT_DENIED, AIMS_E_DENIED, NULL, NULL), 0);
}

/* client2.aims may register "other", not "blobs": it cannot record a verdict
 * of "blobs" -- neither by hand through a client nor from a node serving
 * "blobs" (whose registration is refused too, so it serves alone). Both
 * refusals are AIMS_E_DENIED naming the rule, and audited by the registry;
 * that node's canary still ends on its own verdict, and the allowed node's
 * verdict is the one recorded. */
static void test_verdict_policy_forged_refused(void **state)
{
    cv *f = *state;
    char join[300];
    cv_host_tls(f,
                "allow *.aims join aims.registry\n"
                "allow client1.aims register blobs\n"
                "allow client2.aims register other\n",
                join, sizeof join);
    /* a forged verdict by hand */
    assert_int_equal(aims_client_create(&f->c2), AIMS_OK);
    aims_client *forger = f->c2;
    assert_int_equal(aims_client_set_tls(forger, pki_cfg(f, "client2")), AIMS_OK);
    assert_int_equal(aims_client_join(forger, join), AIMS_OK);
    assert_int_equal(aims_client_publish_version(forger, "blobs/2", "verdict-f1",
                                                 "rolled_back forger", "forged"),
                     AIMS_E_DENIED);
    const char *why = aims_client_errmsg(forger);
    if (strstr(why, "may not register 'blobs/2@verdict-f1' nor on its service 'blobs'") ==
        NULL) {
        fprintf(stderr, "forged verdict refused with: %s\n", why);
    }
    assert_non_null(
        strstr(why, "may not register 'blobs/2@verdict-f1' nor on its service 'blobs'"));
    assert_true(door_count(&f->door, AIMS_AUDIT_DENIED, AIMS_E_DENIED, "client2.aims",
                           "blobs/2@verdict-f1") >= 1);
    /* its own verdict for another's service, from a node */
    inode *a = cv_node_as(f, join, "client");
    inode *b = cv_node_as(f, join, "client2");
    const char *rule = "window_ms=1000 min_calls=5 latency_slack_us=10000000";
    deploy_at(f->c, a, 50, rule, "f1");
    deploy_at(f->c, b, 50, rule, "f1");
    assert_int_equal(load_until_decided(f->c, a), AIMS_CANARY_STATE_PROMOTED);
    /* b, no traffic: its own verdict, not recorded, not the recorded one */
    assert_int_equal(decided_at(f->c, b), AIMS_CANARY_STATE_ROLLED_BACK);
    assert_int_equal(verdicts_become(&f->v, AIMS_AUDIT_MODEL_ROLLBACK,
                                     "not recorded cluster-wide (AIMS_E_DENIED", 1),
                     1);
    assert_int_equal(verdict_count(&f->v, AIMS_AUDIT_MODEL_ROLLBACK,
                                   "may not register 'blobs/2@verdict-f1'"),
                     1);
    assert_int_equal(verdict_count(&f->v, AIMS_AUDIT_MODEL_PROMOTE, "following"), 0);
    char owner[160];
    assert_int_equal(aims_registry_get_publication(f->r, "blobs/2", "verdict-f1", owner,
                                                   sizeof owner, NULL, 0),
                     AIMS_OK);
    assert_int_equal(strncmp(owner, "promoted verdict", 16), 0);
    assert_string_equal(owner + 9, a->name);
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
    cv *f = *state;
    aims_node *probe = NULL;
    aims_http *h = NULL;
    assert_int_equal(aims_node_create("verdict_probe", &probe), AIMS_OK);
    const aims_status hs = aims_http_create(probe, &h);
    aims_http_destroy(h);
    aims_node_destroy(probe);
    if (hs == AIMS_E_UNSUPPORTED) {
        skip(); /* built without the HTTP door */
    }
    inode *x = cv_node(f, NULL, NULL, NULL, 0);
    assert_int_equal(aims_http_create(x->n, &h), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    char url[128], body[8192];
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    described(url, "/v2/models/blobs", D, "1");
    assert_int_equal(curl("GET", url, "/v2/models/blobs/versions/2", body, sizeof body), 404);
    /* loaded without traffic: the default stays, the version is described by name */
    ctl_at(f->c, x, "load", "2", 0, 1);
    described(url, "/v2/models/blobs", D, "1");
    described(url, "/v2/models/blobs/versions/2", D + 2, "7");
    described(url, "/v2/models/blobs/versions/1", D, "1");
    assert_int_equal(curl("GET", url, "/v2/models/blobs", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"versions\":[\"1\",\"2\"]"));
    /* all traffic to 2: the model is described by 2 now */
    ctl_at(f->c, x, "weight", "2", 100, 0);
    ctl_at(f->c, x, "weight", "1", 0, 0);
    described(url, "/v2/models/blobs", D + 2, "7");
    /* rolled back: by 1 again */
    ctl_at(f->c, x, "rollback", NULL, -1, 0);
    described(url, "/v2/models/blobs", D, "1");
    /* a version inside the model takes no calls by name */
    assert_int_equal(curl("POST", url, "/v2/models/blobs/versions/2/infer", body, sizeof body),
                     404);
    assert_non_null(strstr(body, "served by weight"));
    aims_http_destroy(h);
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
        cmocka_unit_test_setup_teardown(test_verdict_cluster_wide_etcd, cv_setup, cv_teardown),
    };
    const int rc = cmocka_run_group_tests_name("canary_verdict_etcd", tests, group_setup,
                                               group_teardown);
    etcd_test_stop(&g_etcd, NULL);
    return rc;
#endif
}

/* "tls": who may record a verdict, through a registry on tls:// with a policy. */
static int main_tls(void)
{
    aims_tls_config *probe = NULL;
    const aims_status ts = aims_tls_config_create(&probe);
    aims_tls_config_destroy(probe);
    if (ts == AIMS_E_UNSUPPORTED) {
        printf("# built without TLS: skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_pki, sizeof g_pki, "/tmp/aims_verdict_pki_XXXXXX");
    if (mkdtemp(g_pki) == NULL || tls_make_pki(g_pki) != 0) {
        fprintf(stderr, "cannot make the test PKI with tests/support/mkcerts.sh\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verdict_policy_registrant_records, cv_setup,
                                        cv_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_policy_forged_refused, cv_setup,
                                        cv_teardown),
    };
    const int rc = cmocka_run_group_tests_name("canary_verdict_tls", tests, group_setup,
                                               group_teardown);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_pki);
    const int sr = system(cmd);
    (void)sr;
    return rc;
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
    if (argc > 1 && strcmp(argv[1], "tls") == 0) {
        g_tr = "tls"; /* nodes on tcp:// (inode_up), the registry on tls:// */
        return main_tls();
    }
    if (argc > 1) {
        g_tr = argv[1];
    }
    if (strcmp(g_tr, "inproc") != 0 && strcmp(g_tr, "tcp") != 0) {
        fprintf(stderr, "usage: %s inproc|tcp|etcd|tls\n", argv[0]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_canary_rule_insufficient_traffic, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_by_query, cv_setup, cv_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_by_tick, cv_setup, cv_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_cluster_wide, cv_setup, cv_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_cluster_wide_joined, cv_setup,
                                        cv_teardown),
        cmocka_unit_test_setup_teardown(test_verdict_recorded_first_wins, cv_setup,
                                        cv_teardown),
        cmocka_unit_test_setup_teardown(test_http_describes_serving_version, cv_setup,
                                        cv_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "canary_verdict_%s", g_tr);
    return cmocka_run_group_tests_name(group, tests, group_setup, group_teardown);
}
