/*
 * test_api_misuse.c -- black-box: API misuse is an error, never a crash.
 *
 * Two promises of aims_core.h, tested through libaims.so only:
 *
 * 1. Every public entry point checks the handle it is given (SQLite's misuse
 *    checks). The calls come from gen_misuse.py, which reads every AIMS_API
 *    prototype at build time, so a function added later is covered without
 *    editing this file. Each is called with four bad handles: NULL, a zeroed
 *    block (magic 0), a block carrying the magic a destroyed handle is left
 *    with, and a live handle of another type. Status calls must return
 *    AIMS_E_MISUSE, getters 0 / NULL, destroy must leave the memory alone.
 *
 * 2. Objects with an errmsg keep the detail of their last failure there.
 *
 * 3. A handle a node or client lends out (aims_node_metrics,
 *    aims_client_metrics) cannot be destroyed by the borrower: the node and
 *    the client keep writing to it after the host's aims_metrics_destroy, and
 *    under ASan a use-after-free or double free would end the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

/* Arguments the generated calls pass besides the bad handle. */
static _Alignas(64) unsigned char g_scratch[65536];
static void *g_slot;
static const char *const g_strs[] = {"x", "x"};

#include "test_api_misuse_calls.h"

/* The magic aimsi_obj_kill leaves in a destroyed handle (src/core/aimsi_core.h). */
#define DEAD_MAGIC 0xdeadbeefu

static void run_all(void *bad, const char *other_type)
{
    for (size_t i = 0; i < sizeof k_misuse / sizeof k_misuse[0]; i++) {
        if (other_type != NULL && strcmp(k_misuse[i].type, other_type) == 0) {
            continue; /* the "wrong" handle is of this type: not misuse here */
        }
        k_misuse[i].run(bad);
    }
}

static void test_misuse_every_entry_point_rejects_bad_handles(void **state)
{
    (void)state;
    size_t calls = 0;
    for (size_t i = 0; i < sizeof k_misuse / sizeof k_misuse[0]; i++) {
        calls += k_misuse[i].calls;
    }
    assert_true(sizeof k_misuse / sizeof k_misuse[0] >= 15); /* every object type */
    assert_true(calls >= 150);

    run_all(NULL, NULL);

    static _Alignas(64) unsigned char zeroed[8192];
    run_all(zeroed, NULL);

    static _Alignas(64) unsigned char dead[8192];
    const uint32_t magic = DEAD_MAGIC;
    memcpy(dead, &magic, sizeof magic);
    run_all(dead, NULL);

    /* A live handle of another type: a registry everywhere, a metrics
     * registry where a registry is expected. */
    aims_registry *reg = NULL;
    aims_metrics *mx = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    assert_int_equal(aims_metrics_create(&mx), AIMS_OK);
    run_all(reg, "aims_registry");
    for (size_t i = 0; i < sizeof k_misuse / sizeof k_misuse[0]; i++) {
        if (strcmp(k_misuse[i].type, "aims_registry") == 0) {
            k_misuse[i].run(mx);
        }
    }
    /* Both survived every destroy call made with them. */
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(reg, "svc", "inproc://a", 1, 60000, &id), AIMS_OK);
    assert_int_equal(aims_metrics_count(mx, "still_alive_total", NULL, 1), AIMS_OK);
    aims_metrics_destroy(mx);
    aims_registry_destroy(reg);
}

static void test_misuse_join_checks_the_handle_before_starting_anything(void **state)
{
    (void)state;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    const size_t live = aims_alloc_live();
    assert_int_equal(aims_client_join((aims_client *)(void *)reg, "inproc://nowhere"),
                     AIMS_E_MISUSE);
    assert_non_null(strstr(aims_errmsg(), "client is aims_registry")); /* names the real type */
    assert_int_equal(aims_node_join((aims_node *)(void *)reg, "inproc://nowhere"), AIMS_E_MISUSE);
    assert_int_equal(aims_node_host_registry((aims_node *)(void *)reg, reg), AIMS_E_MISUSE);
    assert_int_equal(aims_alloc_live(), live); /* nothing allocated, no thread left */
    aims_node *n = NULL;
    assert_int_equal(aims_node_create("misuse", &n), AIMS_OK);
    assert_int_equal(aims_node_host_registry(n, (aims_registry *)(void *)n), AIMS_E_MISUSE);
    assert_non_null(strstr(aims_errmsg(), "registry"));
    aims_node_destroy(n);
    aims_registry_destroy(reg);
}

/* ---- borrowed metrics ----------------------------------------------------- */

static aims_status echo(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                        uint64_t deadline_ns)
{
    (void)user;
    (void)method;
    (void)req;
    (void)deadline_ns;
    const int32_t one = 1;
    return aims_msg_add(reply, "one", AIMS_DT_I32, NULL, 0, &one, 0);
}

static void call_once(aims_client *c, const char *addr)
{
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, addr, "echo", "run", req, reply, 5000), AIMS_OK);
    assert_int_equal(aims_msg_num_tensors(reply), 1);
    aims_msg_destroy(reply);
    aims_msg_destroy(req);
}

static void test_metrics_borrowed_from_node_and_client_cannot_be_destroyed(void **state)
{
    (void)state;
    aims_node *n = NULL;
    aims_service *s = NULL;
    assert_int_equal(aims_node_create("owner", &n), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "echo", echo, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "inproc://misuse-owner"), AIMS_OK);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);

    aims_metrics *nmx = aims_node_metrics(n);
    aims_metrics *cmx = aims_client_metrics(c);
    assert_non_null(nmx);
    assert_non_null(cmx);
    const size_t live = aims_alloc_live();
    aims_metrics_destroy(nmx); /* refused: the node owns it */
    /* Checked at the end, so that without the refusal ASan reports the
     * use-after-free below rather than this test stopping early. */
    const int refused = strstr(aims_errmsg(), "belongs to a node or client") != NULL;
    aims_metrics_destroy(cmx); /* refused: the client owns it */
    const size_t live_after = aims_alloc_live();

    /* The owners go on writing to them, and the host can still read them. */
    call_once(c, "inproc://misuse-owner");
    call_once(c, "inproc://misuse-owner");
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(aims_metrics_prometheus(cmx, &text, &len), AIMS_OK);
    assert_non_null(strstr(text, "aims_client_calls_total"));
    aims_free(text);
    assert_int_equal(aims_metrics_prometheus(nmx, &text, &len), AIMS_OK);
    assert_true(len > 0);
    aims_free(text);

    aims_client_destroy(c); /* the owners free them, once */
    aims_node_destroy(n);
    assert_true(refused);
    assert_int_equal(live_after, live);
}

static void test_metrics_host_created_is_the_hosts_to_destroy(void **state)
{
    (void)state;
    const size_t live = aims_alloc_live();
    aims_metrics *mx = NULL;
    assert_int_equal(aims_metrics_create(&mx), AIMS_OK);
    assert_int_equal(aims_metrics_count(mx, "x_total", NULL, 1), AIMS_OK);
    aims_metrics_destroy(mx);
    assert_int_equal(aims_alloc_live(), live);
}

/* ---- per-handle error text ------------------------------------------------- */

static void test_errmsg_loadopts_bundle_service_name_the_problem(void **state)
{
    (void)state;
    aims_loadopts *opts = NULL;
    assert_int_equal(aims_loadopts_create(&opts), AIMS_OK);
    assert_string_equal(aims_loadopts_errmsg(opts), "");
    assert_int_equal(aims_loadopts_set_param_i64(opts, AIMS_LOAD_HEADER, 7), AIMS_E_RANGE);
    assert_non_null(strstr(aims_loadopts_errmsg(opts), "header"));
    aims_loadopts_destroy(opts);

    aims_model *m = NULL;
    aims_bundle *b = NULL;
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 2, 2, &m), AIMS_OK);
    {
        const float x[8] = {0, 1, 1, 0, 0, 2, 2, 0};
        const int32_t y[4] = {0, 1, 0, 1};
        aims_dataset *ds = NULL;
        aims_trainer *t = NULL;
        assert_int_equal(aims_dataset_create_dense(4, 2, x, y, &ds), AIMS_OK);
        assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
        assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 1), AIMS_OK);
        assert_int_equal(aims_trainer_fit(t, ds, NULL), AIMS_OK);
        aims_trainer_destroy(t);
        aims_dataset_destroy(ds);
    }
    assert_int_equal(aims_bundle_create(NULL, m, &b), AIMS_OK);
    assert_string_equal(aims_bundle_errmsg(b), "");
    assert_int_equal(aims_bundle_set_meta(b, "", "v"), AIMS_E_INVAL);
    assert_non_null(strstr(aims_bundle_errmsg(b), "key must be"));
    aims_bundle_destroy(b);
    aims_model_destroy(m);

    aims_node *n = NULL;
    aims_service *s = NULL;
    assert_int_equal(aims_node_create("errmsg", &n), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "echo", echo, NULL, &s), AIMS_OK);
    assert_string_equal(aims_service_errmsg(s), "");
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_QUEUE_CAP, 8), AIMS_E_STATE);
    assert_non_null(strstr(aims_service_errmsg(s), "before start"));
    aims_node_destroy(n);

    /* Bad handles give "" rather than NULL or a crash. */
    assert_string_equal(aims_loadopts_errmsg(NULL), "");
    assert_string_equal(aims_bundle_errmsg(NULL), "");
    assert_string_equal(aims_service_errmsg(NULL), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_misuse_every_entry_point_rejects_bad_handles,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_misuse_join_checks_the_handle_before_starting_anything,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(
            test_metrics_borrowed_from_node_and_client_cannot_be_destroyed, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_host_created_is_the_hosts_to_destroy,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_errmsg_loadopts_bundle_service_name_the_problem,
                                        ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
