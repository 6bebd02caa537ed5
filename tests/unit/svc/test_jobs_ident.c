/*
 * test_jobs_ident.c -- training jobs belong to the identity that submitted
 * them, and in-process callers carry the node's certificate name
 * (src/svc/svc_ident.c, docs/IDENT.md; issue 10).
 *
 * A node with a train service listens on tls:// (PKI made at test time by
 * tests/support/mkcerts.sh with the openssl CLI), plain tcp:// and inproc://.
 * client1.aims submits a job with its own handle; client2.aims, holding the
 * same handle, is refused status, result and cancel (AIMS_E_DENIED, audited
 * with its identity), and so is an anonymous tcp:// caller; client1 and the
 * program itself (inproc) reach the job. A job submitted anonymously stays
 * reachable by its handle alone, from any identity (loopback deployments
 * without TLS behave as before). A handler called in-process on a TLS node
 * sees aims_msg_caller = the node's certificate name, on a plain node "host".
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "svc_echo.h"
#include "testalloc.h"
#include "tls_support.h"
#include <aims/aims_ident.h>
#include <aims/aims_policy.h>

static char g_dir[128];
static const char k_handle[] = "client1-own-handle-0123456789";

typedef struct audit_log {
    pthread_mutex_t mu;
    int denied;
    char denied_identity[160];
    char denied_detail[300];
} audit_log;

static void on_audit(void *user, int64_t unix_ms, aims_audit_action action, const char *identity,
                     const char *peer, const char *resource, aims_status status,
                     const char *detail)
{
    (void)unix_ms, (void)peer, (void)resource, (void)status;
    audit_log *a = user;
    pthread_mutex_lock(&a->mu);
    if (action == AIMS_AUDIT_DENIED) {
        a->denied++;
        snprintf(a->denied_identity, sizeof a->denied_identity, "%s", identity);
        snprintf(a->denied_detail, sizeof a->denied_detail, "%s", detail);
    }
    pthread_mutex_unlock(&a->mu);
}

/* Wait (bounded) until the audit log holds at least `want` denials. */
static int denials_reach(audit_log *a, int want)
{
    for (int i = 0; i < 400; i++) {
        pthread_mutex_lock(&a->mu);
        const int n = a->denied;
        pthread_mutex_unlock(&a->mu);
        if (n >= want) {
            return n;
        }
        nap_ms(5);
    }
    pthread_mutex_lock(&a->mu);
    const int n = a->denied;
    pthread_mutex_unlock(&a->mu);
    return n;
}

/* One call to the train service "trainer": method on job `job`, with the
 * handle (or none), a tiny 2-class training set for submit. *state gets the
 * reply's "state" (-1 when absent). */
static aims_status job_call(aims_client *c, const char *addr, const char *method,
                            const char *job, const char *handle, int32_t *state)
{
    aims_msg *req = mk_msg(), *rep = mk_msg();
    const uint64_t jd[1] = {strlen(job)};
    assert_int_equal(aims_msg_add(req, "job", AIMS_DT_BYTES, jd, 1, job, 0), AIMS_OK);
    if (handle != NULL) {
        const uint64_t hd[1] = {strlen(handle)};
        assert_int_equal(aims_msg_add(req, "handle", AIMS_DT_BYTES, hd, 1, handle, 0), AIMS_OK);
    }
    if (strcmp(method, "submit") == 0) {
        float x[8 * 2];
        int32_t y[8];
        for (int i = 0; i < 8; i++) {
            y[i] = i % 2;
            x[2 * i] = (float)y[i];
            x[2 * i + 1] = 1.0f - (float)y[i];
        }
        const uint64_t xd[2] = {8, 2}, yd[1] = {8};
        const char *spec = "kind=softmax\nclasses=2\nepochs=1";
        const uint64_t sd[1] = {strlen(spec)};
        assert_int_equal(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, x, 0), AIMS_OK);
        assert_int_equal(aims_msg_add(req, "y", AIMS_DT_I32, yd, 1, y, 0), AIMS_OK);
        assert_int_equal(aims_msg_add(req, "spec", AIMS_DT_BYTES, sd, 1, spec, 0), AIMS_OK);
    }
    const aims_status rc = aims_client_call_addr(c, addr, "trainer", method, req, rep, 20000);
    if (state != NULL) {
        *state = -1;
        size_t i = 0;
        const void *data = NULL;
        if (rc == AIMS_OK && aims_msg_find(rep, "state", &i) == AIMS_OK &&
            aims_msg_get_tensor(rep, i, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
            memcpy(state, data, sizeof *state);
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

/* Poll status as the owner until the job leaves queued/running (bounded). */
static int32_t wait_job(aims_client *c, const char *addr, const char *job, const char *handle)
{
    int32_t st = -1;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(job_call(c, addr, "status", job, handle, &st), AIMS_OK);
        if (st >= 2) {
            break;
        }
        nap_ms(10);
    }
    return st;
}

typedef struct jnode {
    aims_node *n;
    aims_service *tr;
    aims_tls_config *ncfg;
    audit_log log;
    char tls[256], tcp[256];
} jnode;

static void jnode_up(jnode *j)
{
    memset(j, 0, sizeof *j);
    pthread_mutex_init(&j->log.mu, NULL);
    j->ncfg = tls_cfg(g_dir, "node");
    assert_non_null(j->ncfg);
    assert_int_equal(aims_node_create("jobs", &j->n), AIMS_OK);
    assert_int_equal(aims_node_set_audit(j->n, on_audit, &j->log), AIMS_OK);
    assert_int_equal(aims_node_set_tls(j->n, j->ncfg), AIMS_OK);
    assert_int_equal(aims_node_listen(j->n, "tls://127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_node_listen(j->n, "tcp://127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_node_listen(j->n, "inproc://jobs-ident"), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(j->n, 0, j->tls, sizeof j->tls, &len), AIMS_OK);
    assert_int_equal(aims_node_get_address(j->n, 1, j->tcp, sizeof j->tcp, &len), AIMS_OK);
    assert_int_equal(aims_service_add_train(j->n, "trainer", NULL, &j->tr), AIMS_OK);
    assert_int_equal(aims_service_start(j->tr), AIMS_OK);
}

static void jnode_down(jnode *j)
{
    aims_node_destroy(j->n);
    aims_tls_config_destroy(j->ncfg);
    pthread_mutex_destroy(&j->log.mu);
}

static aims_client *client_as(aims_tls_config *cfg)
{
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    if (cfg != NULL) {
        assert_int_equal(aims_client_set_tls(c, cfg), AIMS_OK);
    }
    return c;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_job_bound_to_submitter(void **state)
{
    (void)state;
    jnode j;
    jnode_up(&j);
    aims_tls_config *c1cfg = tls_cfg(g_dir, "client"), *c2cfg = tls_cfg(g_dir, "client2");
    assert_non_null(c1cfg);
    assert_non_null(c2cfg);
    aims_client *c1 = client_as(c1cfg), *c2 = client_as(c2cfg), *anon = client_as(NULL);
    int32_t st = -1;
    assert_int_equal(job_call(c1, j.tls, "submit", "job-1", k_handle, &st), AIMS_OK);
    assert_true(st >= 0);

    /* another certificate holding the very handle: refused and audited */
    const int before = denials_reach(&j.log, 0);
    assert_int_equal(job_call(c2, j.tls, "status", "job-1", k_handle, NULL), AIMS_E_DENIED);
    assert_non_null(strstr(aims_client_errmsg(c2), "not the identity that submitted it"));
    assert_int_equal(job_call(c2, j.tls, "result", "job-1", k_handle, NULL), AIMS_E_DENIED);
    assert_int_equal(job_call(c2, j.tls, "cancel", "job-1", k_handle, NULL), AIMS_E_DENIED);
    assert_true(denials_reach(&j.log, before + 3) >= before + 3);
    pthread_mutex_lock(&j.log.mu);
    assert_string_equal(j.log.denied_identity, "client2.aims");
    assert_non_null(strstr(j.log.denied_detail, "job-1"));
    pthread_mutex_unlock(&j.log.mu);
    /* an anonymous tcp:// caller with the handle: refused too */
    assert_int_equal(job_call(anon, j.tcp, "status", "job-1", k_handle, NULL), AIMS_E_DENIED);
    /* a retried submit from another identity learns the state, never the job */
    assert_int_equal(job_call(c2, j.tls, "submit", "job-1", k_handle, &st), AIMS_OK);
    assert_int_equal(job_call(c2, j.tls, "status", "job-1", k_handle, NULL), AIMS_E_DENIED);

    /* the owner, with its handle: status, then the result once done */
    assert_int_equal(wait_job(c1, j.tls, "job-1", k_handle), 2);
    assert_int_equal(job_call(c1, j.tls, "result", "job-1", k_handle, NULL), AIMS_OK);
    /* the owner without the handle: the handle rule stays */
    assert_int_equal(job_call(c1, j.tls, "status", "job-1", NULL, NULL), AIMS_E_DENIED);
    /* the program itself (inproc://), with the handle */
    aims_client *host = client_as(NULL);
    assert_int_equal(job_call(host, "inproc://jobs-ident", "status", "job-1", k_handle, &st),
                     AIMS_OK);
    assert_int_equal(st, 2);

    /* an anonymous submit: its handle alone reaches it, from any identity */
    assert_int_equal(job_call(anon, j.tcp, "submit", "job-anon", k_handle, &st), AIMS_OK);
    assert_int_equal(wait_job(c2, j.tls, "job-anon", k_handle), 2);
    assert_int_equal(job_call(c1, j.tls, "result", "job-anon", k_handle, NULL), AIMS_OK);

    aims_client_destroy(host);
    aims_client_destroy(anon);
    aims_client_destroy(c2);
    aims_client_destroy(c1);
    aims_tls_config_destroy(c2cfg);
    aims_tls_config_destroy(c1cfg);
    jnode_down(&j);
}

/* A policy admin still reaches any job (the "$admin" mark of the door). */
static void test_job_admin_overrides_owner(void **state)
{
    (void)state;
    jnode j;
    jnode_up(&j);
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_load_string(p, "admin client2.aims\n"
                                                "allow client1.aims train trainer\n"
                                                "allow client1.aims jobs trainer\n",
                                             "jobs.policy"),
                     AIMS_OK);
    assert_int_equal(aims_node_set_policy(j.n, p), AIMS_OK);
    aims_tls_config *c1cfg = tls_cfg(g_dir, "client"), *c2cfg = tls_cfg(g_dir, "client2");
    aims_client *c1 = client_as(c1cfg), *c2 = client_as(c2cfg);
    int32_t st = -1;
    assert_int_equal(job_call(c1, j.tls, "submit", "job-2", NULL, &st), AIMS_OK);
    /* the admin needs neither handle nor ownership */
    assert_int_equal(job_call(c2, j.tls, "cancel", "job-2", NULL, NULL), AIMS_OK);
    assert_true(wait_job(c2, j.tls, "job-2", NULL) >= 2);
    aims_client_destroy(c2);
    aims_client_destroy(c1);
    aims_tls_config_destroy(c2cfg);
    aims_tls_config_destroy(c1cfg);
    jnode_down(&j);
    aims_policy_destroy(p);
}

/* The handler under test replies "caller" = aims_msg_caller(req). */
static aims_status who_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                          uint64_t deadline_ns)
{
    (void)user, (void)method, (void)deadline_ns;
    const char *who = aims_msg_caller(req);
    const uint64_t d[1] = {strlen(who)};
    return aims_msg_add(reply, "caller", AIMS_DT_BYTES, d, 1, who, 0);
}

static void ask_inproc(const char *url, char *out, size_t cap)
{
    aims_client *c = client_as(NULL);
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    assert_int_equal(aims_client_call_addr(c, url, "who", "m", req, rep, 5000), AIMS_OK);
    size_t i = 0;
    const void *data = NULL;
    size_t bytes = 0;
    assert_int_equal(aims_msg_find(rep, "caller", &i), AIMS_OK);
    assert_int_equal(aims_msg_get_tensor(rep, i, NULL, NULL, NULL, NULL, &data, &bytes), AIMS_OK);
    assert_true(bytes < cap);
    memcpy(out, data, bytes);
    out[bytes] = '\0';
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
}

static void test_inproc_caller_is_node_certificate(void **state)
{
    (void)state;
    aims_tls_config *ncfg = tls_cfg(g_dir, "node");
    assert_non_null(ncfg);
    aims_node *tn = NULL, *pn = NULL;
    aims_service *s = NULL;
    assert_int_equal(aims_node_create("who-tls", &tn), AIMS_OK);
    assert_int_equal(aims_node_set_tls(tn, ncfg), AIMS_OK);
    assert_int_equal(aims_node_listen(tn, "inproc://who-tls"), AIMS_OK);
    assert_int_equal(aims_service_add_handler(tn, "who", who_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(aims_node_create("who-plain", &pn), AIMS_OK);
    assert_int_equal(aims_node_listen(pn, "inproc://who-plain"), AIMS_OK);
    assert_int_equal(aims_service_add_handler(pn, "who", who_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    char who[256];
    ask_inproc("inproc://who-tls", who, sizeof who);
    assert_string_equal(who, aims_tls_config_identity(ncfg));
    assert_string_equal(who, "node1.aims");
    ask_inproc("inproc://who-plain", who, sizeof who);
    assert_string_equal(who, "host");
    aims_node_destroy(pn);
    aims_node_destroy(tn);
    aims_tls_config_destroy(ncfg);
}

int main(void)
{
    if (tls_temp_pki(g_dir, sizeof g_dir, "jobsid") != 0) {
        return 1;
    }
    ta_install();
    (void)echo_fn, (void)reply_tag, (void)mk_client; /* svc_echo.h helpers not needed here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_job_bound_to_submitter, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_job_admin_overrides_owner, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_inproc_caller_is_node_certificate, ta_setup,
                                        ta_teardown),
    };
    const int rc = cmocka_run_group_tests_name("jobs_ident", tests, NULL, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    const int sr = system(cmd);
    (void)sr;
    return rc;
}
