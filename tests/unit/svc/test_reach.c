/*
 * test_reach.c -- the registry reachability tracker (src/svc/reach.c) and the
 * client's "why no live instance" message built on it.
 *
 * The tracker must log an unreachable registry once per outage (ERROR, with
 * URL and cause), its recovery once (INFO), stay quiet while failures repeat,
 * and describe the outage for error messages. A client that joined a
 * registry nobody listens on must say so when a call finds no instance.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "svc/aimsi_reach.h"
#include "testalloc.h"

typedef struct log_rec {
    int n_error, n_info;
    char last[600];
} log_rec;

static void on_log(void *user, aims_log_level level, const char *msg)
{
    log_rec *r = user;
    r->n_error += level == AIMS_LOG_ERROR;
    r->n_info += level == AIMS_LOG_INFO;
    snprintf(r->last, sizeof r->last, "%s", msg);
}

static void test_reach_logs_once_per_outage(void **state)
{
    (void)state;
    log_rec rec = {0, 0, ""};
    assert_int_equal(aims_set_log(on_log, &rec, AIMS_LOG_DEBUG), AIMS_OK);
    aimsi_reach r;
    aimsi_reach_init(&r, "node join", "tcp://127.0.0.1:1");
    char buf[512];
    assert_int_equal(aimsi_reach_describe(&r, buf, sizeof buf), 0);
    aimsi_reach_record(&r, AIMS_E_CLOSED, "connect failed");
    aimsi_reach_record(&r, AIMS_E_CLOSED, "connect failed again");
    aimsi_reach_record(&r, AIMS_E_TIMEOUT, "deadline");
    assert_int_equal(rec.n_error, 1);
    assert_non_null(strstr(rec.last, "registry tcp://127.0.0.1:1 unreachable"));
    assert_non_null(strstr(rec.last, "connect failed"));
    assert_true(aimsi_reach_describe(&r, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "unreachable since"));
    assert_non_null(strstr(buf, "3 failed tries"));
    assert_non_null(strstr(buf, "last error: "));
    assert_non_null(strstr(buf, "deadline"));
    aimsi_reach_record(&r, AIMS_OK, "");
    assert_int_equal(rec.n_info, 1);
    assert_non_null(strstr(rec.last, "reachable again"));
    assert_int_equal(aimsi_reach_describe(&r, buf, sizeof buf), 0);
    aimsi_reach_record(&r, AIMS_OK, "");
    aimsi_reach_record(&r, AIMS_E_IO, "down again");
    assert_int_equal(rec.n_error, 2);
    assert_int_equal(rec.n_info, 1);
    aimsi_reach_fini(&r);
    assert_int_equal(aims_set_log(NULL, NULL, AIMS_LOG_OFF), AIMS_OK);
}

static void test_client_explains_empty_view(void **state)
{
    (void)state;
    log_rec rec = {0, 0, ""};
    assert_int_equal(aims_set_log(on_log, &rec, AIMS_LOG_WARN), AIMS_OK);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_SYNC_MS, 20), AIMS_OK);
    assert_int_equal(aims_client_join(c, "tcp://127.0.0.1:1"), AIMS_OK);
    assert_int_equal(rec.n_error, 1); /* the first sync failed during join */
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    assert_int_equal(aims_client_call(c, "infer/x", "predict", req, reply, 0, 200),
                     AIMS_E_NOTFOUND);
    const char *msg = aims_client_errmsg(c);
    if (strstr(msg, "no live instance; registry tcp://127.0.0.1:1 unreachable since") == NULL) {
        print_error("client message: %s\n", msg);
        fail();
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    aims_client_destroy(c);
    assert_int_equal(rec.n_error, 1); /* repeated sync failures stay quiet */
    assert_int_equal(aims_set_log(NULL, NULL, AIMS_LOG_OFF), AIMS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reach_logs_once_per_outage, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_client_explains_empty_view, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
