/*
 * test_ident.c -- who is calling (include/aims/aims_ident.h): a handler reads
 * the caller's identity with aims_msg_caller over tls:// (the client
 * certificate's name; PKI made at test time by tests/support/mkcerts.sh with
 * the openssl CLI), ipc:// (uid via SO_PEERCRED), tcp:// ("anonymous"),
 * inproc:// ("host") and with a bearer token ("jwt:<sub>"); a client attaches
 * its token to every call with aims_client_set_token (a policy requiring a
 * JWT admits it, renewal and removal take effect on the next call); and a
 * remote bundle swap ("swap" method of an infer service) is denied without a
 * policy rule and allowed, audited as model_swap, with one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "svc_echo.h"
#include "testalloc.h"
#include "tls_support.h"
#include "jwt_support.h"
#include <aims/aims_ident.h>

static char g_dir[128];
static const char k_key[] = "an HS256 key of at least 32 bytes!!";

/* The handler under test: replies "caller" = aims_msg_caller(req), and checks
 * that another message is nobody. */
static aims_status who_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                          uint64_t deadline_ns)
{
    (void)user, (void)method, (void)deadline_ns;
    const char *who = aims_msg_caller(req);
    if (strcmp(aims_msg_caller(reply), "") != 0 || strcmp(aims_msg_caller(NULL), "") != 0) {
        return AIMS_E_INTERNAL;
    }
    const uint64_t d[1] = {strlen(who)};
    return aims_msg_add(reply, "caller", AIMS_DT_BYTES, d, 1, who, 0);
}

/* Call who/m at addr; on success copy the "caller" reply into out. */
static aims_status ask(aims_client *c, const char *addr, char *out, size_t cap)
{
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    out[0] = '\0';
    aims_status rc = aims_client_call_addr(c, addr, "who", "m", req, rep, 5000);
    if (rc == AIMS_OK) {
        size_t i = 0;
        const void *data = NULL;
        size_t bytes = 0;
        assert_int_equal(aims_msg_find(rep, "caller", &i), AIMS_OK);
        assert_int_equal(aims_msg_get_tensor(rep, i, NULL, NULL, NULL, NULL, &data, &bytes),
                         AIMS_OK);
        assert_true(bytes < cap);
        memcpy(out, data, bytes);
        out[bytes] = '\0';
        assert_int_not_equal(aims_msg_find(rep, "$auth", &i), AIMS_OK);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

static aims_node *who_node(const char *name, aims_tls_config *tls, const char *url, char *addr,
                           size_t cap)
{
    aims_node *n = NULL;
    aims_service *s = NULL;
    assert_int_equal(aims_node_create(name, &n), AIMS_OK);
    if (tls != NULL) {
        assert_int_equal(aims_node_set_tls(n, tls), AIMS_OK);
    }
    assert_int_equal(aims_node_listen(n, url), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(n, 0, addr, cap, &len), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "who", who_fn, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    return n;
}

static void make_jwt(char *tok, size_t cap, const char *sub, long long exp_delta)
{
    char pl[256], h[64], p[400];
    snprintf(pl, sizeof pl, "{\"sub\":\"%s\",\"exp\":%lld}", sub,
             (long long)time(NULL) + exp_delta);
    const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    jwt_b64url((const unsigned char *)hdr, strlen(hdr), h);
    jwt_b64url((const unsigned char *)pl, strlen(pl), p);
    const int len = snprintf(tok, cap, "%s.%s", h, p);
    assert_true(len > 0 && (size_t)len + 46 < cap);
    assert_true(jwt_hs256_append(tok, (size_t)len, k_key, strlen(k_key)) > 0);
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_caller_tls_ipc_tcp_inproc(void **state)
{
    (void)state;
    char who[256], a_tls[256], a_ipc[256], a_tcp[256], url[200];
    aims_tls_config *ncfg = tls_cfg(g_dir, "node");
    aims_tls_config *ccfg = tls_cfg(g_dir, "client");
    assert_non_null(ncfg);
    assert_non_null(ccfg);
    aims_node *nt = who_node("id-tls", ncfg, "tls://127.0.0.1:0", a_tls, sizeof a_tls);
    snprintf(url, sizeof url, "ipc://%s/who.sock", g_dir);
    aims_node *ni = who_node("id-ipc", NULL, url, a_ipc, sizeof a_ipc);
    aims_node *nc = who_node("id-tcp", NULL, "tcp://127.0.0.1:0", a_tcp, sizeof a_tcp);
    aims_node *nl = who_node("id-inproc", NULL, "inproc://id-inproc", url, sizeof url);
    aims_client *c = mk_client(NULL);
    assert_int_equal(aims_client_set_tls(c, ccfg), AIMS_OK);
    /* tls://: the verified client certificate's name */
    assert_int_equal(ask(c, a_tls, who, sizeof who), AIMS_OK);
    assert_string_equal(who, "client1.aims");
    /* ipc://: the kernel's uid */
    char uid[32];
    snprintf(uid, sizeof uid, "uid:%u", (unsigned)getuid());
    assert_int_equal(ask(c, a_ipc, who, sizeof who), AIMS_OK);
    assert_string_equal(who, uid);
    /* tcp://: nobody in particular; a token without a policy proves nothing */
    assert_int_equal(ask(c, a_tcp, who, sizeof who), AIMS_OK);
    assert_string_equal(who, "anonymous");
    char tok[1024];
    make_jwt(tok, sizeof tok, "alice", 600);
    assert_int_equal(aims_client_set_token(c, tok), AIMS_OK);
    assert_int_equal(ask(c, a_tcp, who, sizeof who), AIMS_OK);
    assert_string_equal(who, "anonymous");
    /* inproc://: the program itself, token or not */
    assert_int_equal(ask(c, url, who, sizeof who), AIMS_OK);
    assert_string_equal(who, "host");
    aims_client_destroy(c);
    aims_node_destroy(nl);
    aims_node_destroy(nc);
    aims_node_destroy(ni);
    aims_node_destroy(nt);
    aims_tls_config_destroy(ncfg);
    aims_tls_config_destroy(ccfg);
}

/* A policy that admits only alice's token; the client attaches it itself. */
static void test_client_token_and_jwt_caller(void **state)
{
    (void)state;
    char who[256], addr[256], tok[1024];
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_load_string(p, "allow jwt:alice call who/*\n", "id.policy"),
                     AIMS_OK);
    assert_int_equal(aims_policy_set_jwt_hs256(p, k_key, strlen(k_key)), AIMS_OK);
    aims_node *n = who_node("id-jwt", NULL, "tcp://127.0.0.1:0", addr, sizeof addr);
    assert_int_equal(aims_node_set_policy(n, p), AIMS_OK);
    aims_client *c = mk_client(NULL);
    assert_int_equal(ask(c, addr, who, sizeof who), AIMS_E_DENIED);
    make_jwt(tok, sizeof tok, "alice", 600);
    assert_int_equal(aims_client_set_token(c, tok), AIMS_OK);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ask(c, addr, who, sizeof who), AIMS_OK);
        assert_string_equal(who, "jwt:alice");
    }
    /* renewal: the next call carries the new token (bob has no rule) */
    make_jwt(tok, sizeof tok, "bob", 600);
    assert_int_equal(aims_client_set_token(c, tok), AIMS_OK);
    assert_int_equal(ask(c, addr, who, sizeof who), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "no rule allows"));
    /* an expired token is refused with the reason */
    make_jwt(tok, sizeof tok, "alice", -3600);
    assert_int_equal(aims_client_set_token(c, tok), AIMS_OK);
    assert_int_equal(ask(c, addr, who, sizeof who), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "expired"));
    make_jwt(tok, sizeof tok, "alice", 600);
    assert_int_equal(aims_client_set_token(c, tok), AIMS_OK);
    assert_int_equal(ask(c, addr, who, sizeof who), AIMS_OK);
    /* removal */
    assert_int_equal(aims_client_set_token(c, NULL), AIMS_OK);
    assert_int_equal(ask(c, addr, who, sizeof who), AIMS_E_DENIED);
    /* bad input */
    assert_int_equal(aims_client_set_token(c, "a b"), AIMS_E_INVAL);
    assert_non_null(strstr(aims_client_errmsg(c), "not printable"));
    assert_int_equal(aims_client_set_token(NULL, tok), AIMS_E_MISUSE);
    char *big = malloc(9000);
    assert_non_null(big);
    memset(big, 'a', 8999);
    big[8999] = '\0';
    assert_int_equal(aims_client_set_token(c, big), AIMS_E_INVAL);
    free(big);
    aims_client_destroy(c);
    aims_node_destroy(n);
    aims_policy_destroy(p);
}

/* Allocation failures in set_token leave the client as it was. */
static aims_status token_op(void *ctx)
{
    (void)ctx;
    aims_client *c = NULL;
    aims_status rc = aims_client_create(&c);
    if (rc == AIMS_OK) {
        rc = aims_client_set_token(c, "aaa.bbb.ccc");
        if (rc == AIMS_OK) {
            rc = aims_client_set_token(c, "ddd.eee.fff");
        }
        aims_client_destroy(c);
    }
    return rc;
}

static void test_token_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("client token", token_op, NULL);
}

/* ---- remote swap ---------------------------------------------------------------------- */

typedef struct swap_log {
    pthread_mutex_t mu;
    int swaps, denied;
    char last[256];
} swap_log;

static void on_audit(void *user, int64_t unix_ms, aims_audit_action action, const char *identity,
                     const char *peer, const char *resource, aims_status status,
                     const char *detail)
{
    (void)unix_ms, (void)peer, (void)detail;
    swap_log *l = user;
    pthread_mutex_lock(&l->mu);
    if (action == AIMS_AUDIT_MODEL_SWAP && status == AIMS_OK) {
        l->swaps++;
    } else if (action == AIMS_AUDIT_DENIED) {
        l->denied++;
    }
    snprintf(l->last, sizeof l->last, "%s %s %s", aims_audit_action_name(action), identity,
             resource);
    pthread_mutex_unlock(&l->mu);
}

/* A trained 2-class logistic bundle on 4 features with meta version. */
static aims_bundle *tiny_bundle(const char *version)
{
    float x[64 * 4];
    int32_t y[64];
    for (int r = 0; r < 64; r++) {
        y[r] = r % 2;
        for (int j = 0; j < 4; j++) {
            x[r * 4 + j] = (float)((r % 2) * 2 - 1) + 0.01f * (float)j;
        }
    }
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_dense(64, 4, x, y, &ds), AIMS_OK);
    aims_model *m = NULL;
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_LOGISTIC, 4, 1, &m), AIMS_OK);
    aims_trainer *t = NULL;
    assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 2), AIMS_OK);
    assert_int_equal(aims_trainer_fit(t, ds, NULL), AIMS_OK);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(NULL, m, &b), AIMS_OK);
    assert_int_equal(aims_bundle_set_meta(b, "version", version), AIMS_OK);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
    return b;
}

/* The bytes of a saved bundle (malloc'd). */
static void *bundle_file(const aims_bundle *b, size_t *len)
{
    char path[] = "/tmp/aims-ident-XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(aims_bundle_save(b, path), AIMS_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(*len);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    unlink(path);
    return buf;
}

static aims_status remote_swap(aims_client *c, const char *addr, const void *bytes, size_t len)
{
    aims_msg *req = mk_msg(), *rep = mk_msg();
    const uint64_t d[1] = {len};
    assert_int_equal(aims_msg_add(req, "bundle", AIMS_DT_BYTES, d, 1, bytes, 0), AIMS_OK);
    const aims_status rc = aims_client_call_addr(c, addr, "infer.tiny", "swap", req, rep, 10000);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

/* The version the infer service serves now ("info" method). */
static int served_has(aims_client *c, const char *addr, const char *version)
{
    aims_msg *req = mk_msg(), *rep = mk_msg();
    assert_int_equal(aims_client_call_addr(c, addr, "infer.tiny", "info", req, rep, 5000),
                     AIMS_OK);
    int hit = 0;
    for (size_t i = 0; i < aims_msg_num_tensors(rep); i++) {
        const void *data = NULL;
        size_t bytes = 0;
        aims_dtype dt = 0;
        assert_int_equal(aims_msg_get_tensor(rep, i, NULL, &dt, NULL, NULL, &data, &bytes),
                         AIMS_OK);
        if (dt == AIMS_DT_BYTES && bytes == strlen(version) && memcmp(data, version, bytes) == 0) {
            hit = 1;
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return hit;
}

static void test_remote_swap_enforced(void **state)
{
    (void)state;
    aims_bundle *v1 = tiny_bundle("v1"), *v2 = tiny_bundle("v2"), *v3 = tiny_bundle("v3");
    size_t l2 = 0, l3 = 0;
    void *b2 = bundle_file(v2, &l2), *b3 = bundle_file(v3, &l3);
    swap_log log;
    memset(&log, 0, sizeof log);
    pthread_mutex_init(&log.mu, NULL);
    aims_node *n = NULL;
    aims_service *s = NULL;
    char addr[256], tok[1024];
    size_t len = 0;
    assert_int_equal(aims_node_create("id-swap", &n), AIMS_OK);
    assert_int_equal(aims_node_set_audit(n, on_audit, &log), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "tcp://127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_node_get_address(n, 0, addr, sizeof addr, &len), AIMS_OK);
    assert_int_equal(aims_service_add_infer(n, "infer.tiny", v1, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    aims_client *c = mk_client(NULL);
    assert_true(served_has(c, addr, "v1"));
    /* no policy: a remote swap is refused (and audited), the model stays */
    assert_int_equal(remote_swap(c, addr, b2, l2), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "needs a policy allowing 'swap'"));
    assert_true(served_has(c, addr, "v1"));
    /* a policy: alice may call, only ops may swap */
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_load_string(p, "allow jwt:* call infer.tiny/*\n"
                                                "allow jwt:ops swap infer.*\n", "swap.policy"),
                     AIMS_OK);
    assert_int_equal(aims_policy_set_jwt_hs256(p, k_key, strlen(k_key)), AIMS_OK);
    assert_int_equal(aims_node_set_policy(n, p), AIMS_OK);
    make_jwt(tok, sizeof tok, "alice", 600);
    assert_int_equal(aims_client_set_token(c, tok), AIMS_OK);
    assert_int_equal(remote_swap(c, addr, b2, l2), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "no rule allows"));
    assert_true(served_has(c, addr, "v1"));
    pthread_mutex_lock(&log.mu);
    assert_non_null(strstr(log.last, "denied jwt:alice infer.tiny"));
    pthread_mutex_unlock(&log.mu);
    /* ops swaps twice (the second frees the bundle the first installed) */
    make_jwt(tok, sizeof tok, "ops", 600);
    assert_int_equal(aims_client_set_token(c, tok), AIMS_OK);
    assert_int_equal(remote_swap(c, addr, b2, l2), AIMS_OK);
    assert_true(served_has(c, addr, "v2"));
    assert_int_equal(remote_swap(c, addr, b3, l3), AIMS_OK);
    assert_true(served_has(c, addr, "v3"));
    /* garbage is refused by the service, the model stays */
    assert_int_equal(remote_swap(c, addr, "not a bundle", 12), AIMS_E_CORRUPT);
    assert_true(served_has(c, addr, "v3"));
    pthread_mutex_lock(&log.mu);
    assert_int_equal(log.swaps, 2);
    assert_true(log.denied >= 2);
    pthread_mutex_unlock(&log.mu);
    aims_client_destroy(c);
    aims_node_destroy(n);
    aims_policy_destroy(p);
    aims_bundle_destroy(v1);
    aims_bundle_destroy(v2);
    aims_bundle_destroy(v3);
    free(b2);
    free(b3);
    pthread_mutex_destroy(&log.mu);
}

int main(void)
{
    if (tls_temp_pki(g_dir, sizeof g_dir, "ident") != 0) {
        return 1;
    }
    ta_install();
    (void)echo_fn, (void)reply_tag; /* svc_echo.h helpers this file does not need */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_caller_tls_ipc_tcp_inproc, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_client_token_and_jwt_caller, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_token_alloc_failures, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_remote_swap_enforced, ta_setup, ta_teardown),
    };
    const int rc = cmocka_run_group_tests_name("ident", tests, NULL, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    const int sr = system(cmd);
    (void)sr;
    return rc;
}
