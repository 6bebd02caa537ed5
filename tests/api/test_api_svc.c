/*
 * test_api_svc.c -- black-box tests of <aims/aims_svc.h> through libaims.so:
 * nodes, services and clients using nothing but the public API.
 *
 * argv[1] picks the transport the node listens on and the client calls over:
 * "inproc" (inproc://name, in-process dispatch) or "tcp" (tcp://127.0.0.1:0,
 * real sockets on loopback). Every test runs unchanged on both, as STYLE.md
 * asks: calls by name through a shared registry and by address, handler
 * errors and their text, async calls, deadlines, stop/start, and a node and a
 * client that join a registry hosted by another node. Waits are bounded
 * polls, never timing assertions (the one deadline test gives the handler
 * 100 times the call's budget).
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

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

static const char *g_tr = "inproc";
static int g_seq;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A listen URL for a new node named `name` on the chosen transport. */
static void listen_url(const char *name, char *buf, size_t cap)
{
    if (strcmp(g_tr, "tcp") == 0) {
        snprintf(buf, cap, "tcp://127.0.0.1:0");
    } else {
        snprintf(buf, cap, "inproc://%s", name);
    }
}

/* "double": y = 2 * x (f32 [n]); "fail": AIMS_E_INVAL with a text;
 * "slow": sleeps 2 s, then answers. */
static aims_status handler(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                           uint64_t deadline_ns)
{
    (void)deadline_ns;
    atomic_int *calls = user;
    atomic_fetch_add(calls, 1);
    if (strcmp(method, "fail") == 0) {
        aims_msg_set_error(reply, "bad x: the handler said no");
        return AIMS_E_INVAL;
    }
    if (strcmp(method, "slow") == 0) {
        nap_ms(2000);
    }
    size_t ix;
    aims_status rc = aims_msg_find(req, "x", &ix);
    if (rc != AIMS_OK) {
        aims_msg_set_error(reply, "request tensor 'x' is missing");
        return AIMS_E_INVAL;
    }
    aims_dtype dt;
    size_t ndim;
    const uint64_t *dims;
    const void *data;
    size_t bytes;
    rc = aims_msg_get_tensor(req, ix, NULL, &dt, &ndim, &dims, &data, &bytes);
    if (rc != AIMS_OK || dt != AIMS_DT_F32 || ndim != 1) {
        aims_msg_set_error(reply, "x must be f32 [n]");
        return AIMS_E_INVAL;
    }
    void *out;
    rc = aims_msg_alloc(reply, "y", AIMS_DT_F32, dims, 1, &out);
    if (rc != AIMS_OK) {
        return rc;
    }
    for (uint64_t i = 0; i < dims[0]; i++) { /* request data may be unaligned */
        float v;
        memcpy(&v, (const char *)data + i * sizeof(float), sizeof(v));
        v *= 2.0f;
        memcpy((char *)out + i * sizeof(float), &v, sizeof(v));
    }
    return AIMS_OK;
}

typedef struct fx {
    aims_registry *r;
    aims_node *node;
    aims_service *svc;
    aims_client *c;
    atomic_int calls;
    char addr[300];
} fx;

/* A node hosting "echo@1" on the chosen transport, registered in a shared
 * local registry, and a client resolving names through that registry. */
static void fx_init_inline(fx *f, int allow_inline)
{
    memset(f, 0, sizeof(*f));
    char name[64], url[128];
    snprintf(name, sizeof(name), "apisvc%d", ++g_seq);
    listen_url(name, url, sizeof(url));
    assert_int_equal(aims_registry_create(&f->r), AIMS_OK);
    assert_int_equal(aims_node_create(name, &f->node), AIMS_OK);
    assert_int_equal(aims_node_listen(f->node, url), AIMS_OK);
    assert_int_equal(aims_node_get_address(f->node, 0, f->addr, sizeof(f->addr), NULL), AIMS_OK);
    assert_true(strncmp(f->addr, g_tr, strlen(g_tr)) == 0);
    assert_int_equal(aims_node_set_registry(f->node, f->r), AIMS_OK);
    assert_int_equal(aims_service_add_handler(f->node, "echo@1", handler, &f->calls, &f->svc),
                     AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(f->svc, AIMS_SERVICE_INLINE, allow_inline),
                     AIMS_OK);
    assert_int_equal(aims_service_start(f->svc), AIMS_OK);
    assert_int_equal(aims_client_create(&f->c), AIMS_OK);
    assert_int_equal(aims_client_set_registry(f->c, f->r), AIMS_OK);
}

static void fx_init(fx *f)
{
    fx_init_inline(f, 1);
}

static void fx_fini(fx *f)
{
    aims_client_destroy(f->c);
    aims_node_destroy(f->node);
    aims_registry_destroy(f->r);
}

static aims_msg *req_x(float a, float b)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    const float x[2] = {a, b};
    const uint64_t dims[1] = {2};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dims, 1, x, 0), AIMS_OK);
    return m;
}

static float y_at(const aims_msg *reply, size_t i)
{
    size_t iy;
    assert_int_equal(aims_msg_find(reply, "y", &iy), AIMS_OK);
    const void *data;
    size_t bytes;
    assert_int_equal(aims_msg_get_tensor(reply, iy, NULL, NULL, NULL, NULL, &data, &bytes), AIMS_OK);
    assert_true(bytes >= (i + 1) * sizeof(float));
    float v;
    memcpy(&v, (const char *)data + i * sizeof(float), sizeof(v)); /* may be unaligned */
    return v;
}

static void test_client_call_by_name_and_address(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    aims_msg *req = req_x(1.5f, -4.0f), *reply = NULL;
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);

    assert_int_equal(aims_client_call(f.c, "echo", "double", req, reply, 0, 5000), AIMS_OK);
    assert_true(y_at(reply, 0) == 3.0f && y_at(reply, 1) == -8.0f);
    assert_int_equal(aims_client_call(f.c, "echo@1", "double", req, reply, 0, 5000), AIMS_OK);
    assert_true(y_at(reply, 1) == -8.0f);
    assert_int_equal(aims_client_call_addr(f.c, f.addr, "echo@1", "double", req, reply, 5000),
                     AIMS_OK);
    assert_true(y_at(reply, 0) == 3.0f);
    assert_string_equal(aims_msg_error(reply), "");

    /* Over a socket the reply can reach the client before the service has
     * finished its bookkeeping: wait for the count, bounded. */
    double n = 0;
    for (int t = 0; t < 5000 && n < 3.0; t += 10) {
        assert_int_equal(aims_service_get_stat(f.svc, AIMS_SERVICE_STAT_REQUESTS, &n), AIMS_OK);
        if (n < 3.0) {
            nap_ms(10);
        }
    }
    if (n != 3.0) {
        fail_msg("requests counted: %g, expected 3", n);
    }
    assert_int_equal(atomic_load(&f.calls), 3);

    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    fx_fini(&f);
}

static void test_client_call_reports_handler_and_name_errors(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    aims_msg *req = req_x(1, 2), *reply = NULL;
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);

    /* The handler's status and text reach the caller. */
    assert_int_equal(aims_client_call(f.c, "echo", "fail", req, reply, 0, 5000), AIMS_E_INVAL);
    assert_non_null(strstr(aims_msg_error(reply), "the handler said no"));
    double errs = 0;
    for (int t = 0; t < 5000 && errs < 1.0; t += 10) {
        assert_int_equal(aims_service_get_stat(f.svc, AIMS_SERVICE_STAT_ERRORS, &errs), AIMS_OK);
        if (errs < 1.0) {
            nap_ms(10);
        }
    }
    assert_true(errs == 1.0);

    /* A request the handler rejects, then a name nobody registered. */
    aims_msg *empty = NULL;
    assert_int_equal(aims_msg_create(&empty), AIMS_OK);
    assert_int_equal(aims_client_call(f.c, "echo", "double", empty, reply, 0, 5000),
                     AIMS_E_INVAL);
    assert_non_null(strstr(aims_msg_error(reply), "'x' is missing"));
    const aims_status rc = aims_client_call(f.c, "nobody", "double", req, reply, 0, 5000);
    assert_int_equal(rc, AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_client_errmsg(f.c), "nobody"));
    /* A version the registry does not hold is another name. */
    assert_int_equal(aims_client_call(f.c, "echo@2", "double", req, reply, 0, 5000),
                     AIMS_E_NOTFOUND);

    aims_msg_destroy(empty);
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    fx_fini(&f);
}

typedef struct async_box {
    atomic_int done, ok;
} async_box;

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    async_box *b = user;
    if (st == AIMS_OK && reply != NULL && error != NULL && error[0] == 0) {
        size_t iy;
        if (aims_msg_find(reply, "y", &iy) == AIMS_OK) {
            atomic_fetch_add(&b->ok, 1);
        }
    }
    atomic_fetch_add(&b->done, 1);
}

static void test_client_call_async_completes_every_call(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    async_box box;
    atomic_init(&box.done, 0);
    atomic_init(&box.ok, 0);
    aims_msg *req = req_x(1, 2);
    enum { N = 32 };
    for (int i = 0; i < N; i++) {
        assert_int_equal(
            aims_client_call_async(f.c, "echo", "double", req, 0, 5000, on_done, &box), AIMS_OK);
    }
    aims_msg_destroy(req); /* copied by the calls that still need it */
    for (int t = 0; t < 10000 && atomic_load(&box.done) < N; t += 10) {
        nap_ms(10);
    }
    assert_int_equal(atomic_load(&box.done), N);
    assert_int_equal(atomic_load(&box.ok), N);
    fx_fini(&f);
}

static void test_client_call_times_out_on_slow_handler(void **state)
{
    (void)state;
    fx f;
    /* Not inline: an inproc call run on the caller's own thread (the default
     * when a slot is free) cannot be abandoned at its deadline; the handler
     * sees deadline_ns and must check it itself. */
    fx_init_inline(&f, 0);
    aims_msg *req = req_x(1, 2), *reply = NULL;
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    assert_int_equal(aims_client_call(f.c, "echo", "slow", req, reply, 0, 20), AIMS_E_TIMEOUT);
    /* The node is fine afterwards. */
    assert_int_equal(aims_client_call(f.c, "echo", "double", req, reply, 0, 5000), AIMS_OK);
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    fx_fini(&f);
}

static void test_service_stop_leaves_registry_and_restarts(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    aims_msg *req = req_x(1, 2), *reply = NULL;
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    size_t n = 0;
    assert_int_equal(aims_registry_lookup(f.r, "echo", NULL, 0, &n), AIMS_E_RANGE);
    assert_int_equal(n, 1);

    assert_int_equal(aims_service_stop(f.svc, 5000), AIMS_OK);
    assert_int_equal(aims_registry_lookup(f.r, "echo", NULL, 0, &n), AIMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(aims_client_call(f.c, "echo", "double", req, reply, 0, 2000),
                     AIMS_E_NOTFOUND);
    /* By address the node answers that the service does not run. */
    assert_true(aims_client_call_addr(f.c, f.addr, "echo@1", "double", req, reply, 2000) !=
                AIMS_OK);

    assert_int_equal(aims_service_start(f.svc), AIMS_OK);
    assert_int_equal(aims_client_call(f.c, "echo", "double", req, reply, 0, 5000), AIMS_OK);
    assert_true(y_at(reply, 1) == 4.0f);
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    fx_fini(&f);
}

static void test_node_join_hosted_registry(void **state)
{
    (void)state;
    char name[64], url[128], reg_addr[300];
    /* The registry's home. */
    aims_registry *r = NULL;
    aims_node *home = NULL;
    snprintf(name, sizeof(name), "apireg%d", ++g_seq);
    listen_url(name, url, sizeof(url));
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    assert_int_equal(aims_node_create(name, &home), AIMS_OK);
    assert_int_equal(aims_node_listen(home, url), AIMS_OK);
    assert_int_equal(aims_node_host_registry(home, r), AIMS_OK);
    assert_int_equal(aims_node_get_address(home, 0, reg_addr, sizeof(reg_addr), NULL), AIMS_OK);

    /* A worker node joins it and serves echo. */
    aims_node *worker = NULL;
    aims_service *svc = NULL;
    atomic_int calls;
    atomic_init(&calls, 0);
    snprintf(name, sizeof(name), "apiwrk%d", ++g_seq);
    listen_url(name, url, sizeof(url));
    assert_int_equal(aims_node_create(name, &worker), AIMS_OK);
    assert_int_equal(aims_node_listen(worker, url), AIMS_OK);
    assert_int_equal(aims_node_join(worker, reg_addr), AIMS_OK);
    assert_int_equal(aims_service_add_handler(worker, "echo", handler, &calls, &svc), AIMS_OK);
    assert_int_equal(aims_service_start(svc), AIMS_OK);
    size_t n = 0;
    assert_int_equal(aims_registry_lookup(r, "echo", NULL, 0, &n), AIMS_E_RANGE);
    assert_int_equal(n, 1);

    /* A client joins the same registry and finds echo by name. */
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_SYNC_MS, 20), AIMS_OK);
    assert_int_equal(aims_client_join(c, reg_addr), AIMS_OK);
    aims_msg *req = req_x(3, 4), *reply = NULL;
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    aims_status rc = AIMS_E_NOTFOUND;
    for (int t = 0; t < 10000 && rc != AIMS_OK; t += 20) {
        rc = aims_client_call(c, "echo", "double", req, reply, 0, 5000);
        if (rc != AIMS_OK) {
            nap_ms(20);
        }
    }
    assert_int_equal(rc, AIMS_OK);
    assert_true(y_at(reply, 0) == 6.0f && y_at(reply, 1) == 8.0f);

    /* Stopping the service removes it from the hosted registry. */
    assert_int_equal(aims_service_stop(svc, 5000), AIMS_OK);
    assert_int_equal(aims_registry_lookup(r, "echo", NULL, 0, &n), AIMS_OK);
    assert_int_equal(n, 0);

    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    aims_client_destroy(c);
    aims_node_destroy(worker);
    aims_node_destroy(home);
    aims_registry_destroy(r);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        g_tr = argv[1];
    }
    if (strcmp(g_tr, "inproc") != 0 && strcmp(g_tr, "tcp") != 0) {
        fprintf(stderr, "usage: %s inproc|tcp\n", argv[0]);
        return 2;
    }
    ta_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_client_call_by_name_and_address, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_client_call_reports_handler_and_name_errors,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_client_call_async_completes_every_call, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_client_call_times_out_on_slow_handler, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_service_stop_leaves_registry_and_restarts,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_node_join_hosted_registry, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
