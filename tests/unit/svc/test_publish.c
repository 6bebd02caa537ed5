/*
 * test_publish.c -- exactly-once publication of model versions
 * (aims_publish.h) on every registry backend, chosen by argv[1]:
 *
 *   local    a client and a node sharing one in-process aims_registry
 *   service  a client and a node joined (aims://) to the registry service a
 *            third node hosts
 *   etcd     a client and a node joined (etcd://) to a real etcd started by
 *            tests/support/etcd_proc.c
 *
 * The race: for 100 versions in a row, a client (aims_client_publish_version)
 * and a node (aims_node_publish_version) are released together by a barrier
 * and publish the same name@version with different owners. Each round,
 * exactly one gets AIMS_OK and the other AIMS_E_EXISTS naming the winner.
 * Which one wins is not asserted (no timing assertions). Then: a winner that
 * publishes again is told it already did, bad arguments are refused alike by
 * every backend, a client or node without a registry gets AIMS_E_STATE.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "etcd_proc.h"
#include "svc/aimsi_news.h"
#include "svc/aimsi_regsync.h"
#include "testalloc.h"

#define ROUNDS 100
#ifdef HAVE_ETCD
#define HAVE_ETCD_TESTS 1u
#else
#define HAVE_ETCD_TESTS 0u
#endif

static const char *g_kind = "local";
static etcd_cluster g_etcd;
static int g_seq;

static int is(const char *k)
{
    return strcmp(g_kind, k) == 0;
}

typedef struct pfx {
    aims_registry *r; /* local, service: the authoritative registry */
    aims_node *host;  /* service: the node hosting it */
    char url[300];
    aims_client *cl;  /* publisher A */
    aims_node *node;  /* publisher B */
} pfx;

static void pfx_init(pfx *f)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(aims_client_create(&f->cl), AIMS_OK);
    assert_int_equal(aims_node_create("publisher", &f->node), AIMS_OK);
    if (is("local")) {
        assert_int_equal(aims_registry_create(&f->r), AIMS_OK);
        assert_int_equal(aims_client_set_registry(f->cl, f->r), AIMS_OK);
        assert_int_equal(aims_node_set_registry(f->node, f->r), AIMS_OK);
        return;
    }
    if (is("service")) {
        assert_int_equal(aims_registry_create(&f->r), AIMS_OK);
        assert_int_equal(aims_node_create("reghost", &f->host), AIMS_OK);
        assert_int_equal(aims_node_listen(f->host, "tcp://127.0.0.1:0"), AIMS_OK);
        assert_int_equal(aims_node_host_registry(f->host, f->r), AIMS_OK);
        char addr[256];
        assert_int_equal(aims_node_get_address(f->host, 0, addr, sizeof(addr), NULL), AIMS_OK);
        snprintf(f->url, sizeof(f->url), "aims://%s", addr + 6);
    } else {
        snprintf(f->url, sizeof(f->url), "etcd://%s/p%d-%d", g_etcd.endpoints, (int)getpid(),
                 ++g_seq);
    }
    assert_int_equal(aims_client_join(f->cl, f->url), AIMS_OK);
    assert_int_equal(aims_node_join(f->node, f->url), AIMS_OK);
}

static void pfx_fini(pfx *f)
{
    aims_client_destroy(f->cl);
    aims_node_destroy(f->node);
    aims_node_destroy(f->host);
    aims_registry_destroy(f->r);
}

/* ---- the race ------------------------------------------------------------------------- */

typedef struct racer {
    pfx *f;
    int is_node;
    const char *version;
    pthread_barrier_t *go;
    aims_status rc;
    char msg[300];
} racer;

static void *race_one(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->go);
    if (r->is_node) {
        r->rc = aims_node_publish_version(r->f->node, "fmnist", r->version, "node-B", "b");
        snprintf(r->msg, sizeof(r->msg), "%s", aims_node_errmsg(r->f->node));
    } else {
        r->rc = aims_client_publish_version(r->f->cl, "fmnist", r->version, "client-A", "a");
        snprintf(r->msg, sizeof(r->msg), "%s", aims_client_errmsg(r->f->cl));
    }
    return NULL;
}

static void test_publish_race_exactly_once(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f);
    int wins[2] = {0, 0};
    for (int i = 0; i < ROUNDS; i++) {
        char version[16];
        snprintf(version, sizeof(version), "%d", i + 1);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        racer rr[2] = {{&f, 0, version, &go, AIMS_E_INTERNAL, ""},
                       {&f, 1, version, &go, AIMS_E_INTERNAL, ""}};
        pthread_t th[2];
        for (int k = 0; k < 2; k++) {
            assert_int_equal(pthread_create(&th[k], NULL, race_one, &rr[k]), 0);
        }
        for (int k = 0; k < 2; k++) {
            pthread_join(th[k], NULL);
        }
        pthread_barrier_destroy(&go);
        const int a_won = rr[0].rc == AIMS_OK, b_won = rr[1].rc == AIMS_OK;
        if (a_won + b_won != 1) {
            fail_msg("round %d: client %s (%s), node %s (%s): want exactly one winner", i,
                     aims_status_name(rr[0].rc), rr[0].msg, aims_status_name(rr[1].rc),
                     rr[1].msg);
        }
        const racer *loser = a_won ? &rr[1] : &rr[0];
        assert_int_equal(loser->rc, AIMS_E_EXISTS);
        char want[80];
        snprintf(want, sizeof(want), "fmnist@%s already published by %s", version,
                 a_won ? "client-A" : "node-B");
        if (strstr(loser->msg, want) == NULL) {
            fail_msg("round %d: loser's message \"%s\" lacks \"%s\"", i, loser->msg, want);
        }
        wins[a_won ? 0 : 1]++;
        if (f.r != NULL) {
            char owner[AIMS_PUBLISH_MAX_OWNER + 1], meta[AIMS_PUBLISH_MAX_META + 1];
            assert_int_equal(aims_registry_get_publication(f.r, "fmnist", version, owner,
                                                           sizeof(owner), meta, sizeof(meta)),
                             AIMS_OK);
            assert_string_equal(owner, a_won ? "client-A" : "node-B");
            assert_string_equal(meta, a_won ? "a" : "b");
        }
    }
    printf("# %s: %d rounds, client won %d, node won %d\n", g_kind, ROUNDS, wins[0], wins[1]);
    pfx_fini(&f);
}

/* Publishing again, also by the winner, is refused with the winner's name;
 * another version and another name are independent. */
static void test_publish_again_refused(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f);
    assert_int_equal(aims_client_publish_version(f.cl, "text/fortunes", "7", "job-1", NULL),
                     AIMS_OK);
    assert_int_equal(aims_client_publish_version(f.cl, "text/fortunes", "7", "job-1", NULL),
                     AIMS_E_EXISTS);
    assert_non_null(strstr(aims_client_errmsg(f.cl),
                           "text/fortunes@7 already published by job-1"));
    assert_int_equal(aims_node_publish_version(f.node, "text/fortunes", "7", "job-2", "x"),
                     AIMS_E_EXISTS);
    assert_non_null(strstr(aims_node_errmsg(f.node), "already published by job-1"));
    assert_int_equal(aims_node_publish_version(f.node, "text/fortunes", "8", "job-2", "x"),
                     AIMS_OK);
    assert_int_equal(aims_node_publish_version(f.node, "text/other", "7", "job-2", ""), AIMS_OK);
    pfx_fini(&f);
}

static void test_publish_bad_args(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f);
    assert_int_equal(aims_client_publish_version(f.cl, "m", "1/2", "o", NULL), AIMS_E_INVAL);
    assert_non_null(strstr(aims_client_errmsg(f.cl), "version"));
    assert_int_equal(aims_client_publish_version(f.cl, "m@1", "2", "o", NULL), AIMS_E_INVAL);
    assert_int_equal(aims_client_publish_version(f.cl, "", "2", "o", NULL), AIMS_E_INVAL);
    assert_int_equal(aims_node_publish_version(f.node, "m", "1", "two\nlines", NULL),
                     AIMS_E_INVAL);
    assert_int_equal(aims_node_publish_version(f.node, "m", "1", "", NULL), AIMS_E_INVAL);
    assert_int_equal(aims_client_publish_version(f.cl, "m", NULL, "o", NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_client_publish_version(NULL, "m", "1", "o", NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_node_publish_version(NULL, "m", "1", "o", NULL), AIMS_E_MISUSE);
    char big[AIMS_PUBLISH_MAX_META + 2];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(aims_client_publish_version(f.cl, "m", "1", "o", big), AIMS_E_INVAL);
    big[AIMS_PUBLISH_MAX_META] = '\0'; /* the largest meta is fine */
    assert_int_equal(aims_client_publish_version(f.cl, "m", "1", "o", big), AIMS_OK);
    /* nothing published by the refused calls */
    assert_int_equal(aims_client_publish_version(f.cl, "m", "2", "o", NULL), AIMS_OK);
    pfx_fini(&f);
}

static void test_publish_without_registry(void **state)
{
    (void)state;
    aims_client *c = NULL;
    aims_node *n = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_node_create("lonely", &n), AIMS_OK);
    assert_int_equal(aims_client_publish_version(c, "m", "1", "o", NULL), AIMS_E_STATE);
    assert_non_null(strstr(aims_client_errmsg(c), "no registry"));
    assert_int_equal(aims_node_publish_version(n, "m", "1", "o", NULL), AIMS_E_STATE);
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    char owner[4];
    assert_int_equal(aims_registry_get_publication(r, "m", "1", owner, sizeof(owner), NULL, 0),
                     AIMS_E_NOTFOUND);
    assert_int_equal(aims_registry_publish(r, "m", "1", "long-owner", NULL), AIMS_OK);
    assert_int_equal(aims_registry_get_publication(r, "m", "1", owner, sizeof(owner), NULL, 0),
                     AIMS_E_RANGE);
    assert_int_equal(aims_registry_publish(NULL, "m", "1", "o", NULL), AIMS_E_MISUSE);
    aims_registry_destroy(r);
    aims_client_destroy(c);
    aims_node_destroy(n);
}

/* ---- event records (svc_news.c) through the node's backend ---------------------------- */

/* Wait (<= 20 s) until the client's view holds `want` live instances of
 * `service`; with want == 1, that one's text must become `text`. */
static void view_wait(pfx *f, const char *service, size_t want, const char *text)
{
    aims_registry *view = aimsi_client_registry(f->cl);
    assert_non_null(view);
    char got[300] = "";
    size_t n = 99;
    for (int i = 0; i < 2000; i++) {
        aims_instance ids[4];
        assert_int_equal(aims_registry_lookup(view, service, ids, 4, &n), AIMS_OK);
        got[0] = '\0';
        if (n == 1) {
            size_t len = 0;
            assert_int_equal(aims_registry_get_address(view, ids[0], got, sizeof(got), &len),
                             AIMS_OK);
        }
        if (n == want && (want != 1 || strcmp(got, text) == 0)) {
            return;
        }
        usleep(10000);
    }
    fail_msg("%s: %zu instances (want %zu), text '%s' (want '%s')", service, n, want, got,
             want == 1 ? text : "");
}

/* A job's states and a model step are registry records on every backend: the
 * latest state of a subject is its one live record, as every client sees it. */
static void test_news_records(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f);
    aimsi_job_news jn = {0};
    aimsi_news_job_step(f.node, "train.x", "job 1", 5, 0, 0, NAN, 0, "", &jn); /* queued */
    aimsi_news_job_step(f.node, "train.x", "job 1", 5, 1, 0, NAN, 0, "", &jn); /* running */
    aimsi_news_job_step(f.node, "train.x", "job 1", 5, 1, 1, 0.5f, 0, "", &jn); /* progress */
    aimsi_news_job_step(f.node, "train.x", "job 1", 5, 2, 1, 0.25f, 0,
                        "published x@1 by job 1", &jn); /* done */
    assert_true(jn.id != 0 && jn.posted && jn.state == 2 && jn.epoch == 1);
    view_wait(&f, "aims.job/train.x/job_1", 1,
              "state=done epoch=1 loss=0.25 node=publisher detail=published x@1 by job 1 "
              "job=job 1");
    const uint64_t id = aimsi_news_model(f.node, "blobs", AIMS_AUDIT_MODEL_PROMOTE, "blobs@2",
                                         "canary", "ok\nfine");
    assert_true(id != 0);
    view_wait(&f, "aims.model/blobs", 1, "action=promote version=blobs@2 by=canary detail=ok fine");
    aimsi_news_drop(f.node, id);
    view_wait(&f, "aims.model/blobs", 0, NULL);
    /* the watcher's classification of records */
    char subj[64];
    assert_int_equal(aimsi_news_kind("aims.job/train.x/job_1", subj, sizeof(subj)),
                     AIMS_EVENT_JOB);
    assert_string_equal(subj, "train.x");
    assert_int_equal(aimsi_news_kind("aims.model/blobs@2", subj, sizeof(subj)), AIMS_EVENT_MODEL);
    assert_string_equal(subj, "blobs@2");
    assert_int_equal(aimsi_news_kind("blobs@2", subj, sizeof(subj)), 0);
    /* what one post costs on this backend (printed, never asserted) */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int e = 2; e < 52; e++) {
        aimsi_news_job_step(f.node, "train.x", "job 2", 5, 1, e, 0.1f, 0, "", &jn);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("# news post (register + remove) on %s: %.1f us\n", g_kind,
           ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 50e3);
    aimsi_news_drop(f.node, jn.id);
    pfx_fini(&f);
}

#ifdef HAVE_ETCD
/* etcd holds the record where docs/PUBLISH.md says, readable by etcdctl. */
static void test_publish_etcd_layout(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f);
    assert_int_equal(aims_client_publish_version(f.cl, "fmnist", "42", "job-x", "acc=0.85"),
                     AIMS_OK);
    const char *prefix = strrchr(f.url, '/') + 1;
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "get /%s/pub/fmnist/42 --print-value-only | grep -q "
             "'\"owner\":\"job-x\"'", prefix);
    assert_int_equal(etcd_ctl(&g_etcd, cmd), 0);
    /* a record written by hand (an operator) counts as published */
    snprintf(cmd, sizeof(cmd), "put /%s/pub/fmnist/43 '{\"owner\":\"ops\"}' >/dev/null", prefix);
    assert_int_equal(etcd_ctl(&g_etcd, cmd), 0);
    assert_int_equal(aims_node_publish_version(f.node, "fmnist", "43", "job-y", NULL),
                     AIMS_E_EXISTS);
    assert_non_null(strstr(aims_node_errmsg(f.node), "fmnist@43 already published by ops"));
    pfx_fini(&f);
}
#endif

int main(int argc, char **argv)
{
    if (argc > 1) {
        g_kind = argv[1];
    }
    signal(SIGPIPE, SIG_IGN);
    if (is("etcd")) {
#ifndef HAVE_ETCD
        printf("# built without etcd: skipped\n");
        return 77;
#else
        const int st = etcd_test_start(&g_etcd, NULL, 0);
        if (st != 0) {
            return st;
        }
#endif
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_race_exactly_once, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_publish_again_refused, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_publish_bad_args, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_publish_without_registry, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_news_records, ta_setup, ta_teardown),
#ifdef HAVE_ETCD
        cmocka_unit_test_setup_teardown(test_publish_etcd_layout, ta_setup, ta_teardown),
#endif
    };
    /* the etcd layout test (last) only means something on etcd */
    const size_t n = sizeof(tests) / sizeof(tests[0]) - (is("etcd") ? 0 : HAVE_ETCD_TESTS);
    const int rc = _cmocka_run_group_tests(g_kind, tests, n, NULL, NULL);
#ifdef HAVE_ETCD
    if (is("etcd")) {
        etcd_test_stop(&g_etcd, NULL);
    }
#endif
    return rc;
}
