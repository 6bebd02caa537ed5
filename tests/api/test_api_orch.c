/*
 * test_api_orch.c -- black-box tests of the registry and health tracker of
 * aims_orch.h through libaims.so: a host's view of discovery with leases and
 * watches, fed into outlier ejection, on a simulated clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <aims/aims.h>
#include <aims/aims_orch.h>

#include "testalloc.h"

#define MS 1000000ull

static uint64_t sim_clock(void *user)
{
    return *(const uint64_t *)user;
}

typedef struct view {
    uint64_t last_rev;
    int puts, deletes, expires;
    aims_instance ids[16];
    size_t n;
} view;

/* A client-side view kept current from watch events. */
static void view_apply(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                       const char *service, const char *address)
{
    view *const v = user;
    assert_true(rev > v->last_rev);
    assert_non_null(strstr(service, "infer"));
    assert_true(address[0] != '\0');
    v->last_rev = rev;
    if (kind == AIMS_EVENT_PUT) {
        v->puts++;
        for (size_t i = 0; i < v->n; i++) {
            if (v->ids[i] == id) {
                return;
            }
        }
        v->ids[v->n++] = id;
        return;
    }
    v->deletes += kind == AIMS_EVENT_DELETE;
    v->expires += kind == AIMS_EVENT_EXPIRE;
    for (size_t i = 0; i < v->n; i++) {
        if (v->ids[i] == id) {
            v->ids[i] = v->ids[--v->n];
            return;
        }
    }
}

static void test_api_registry_discovery_with_leases(void **state)
{
    (void)state;
    uint64_t now = 0;
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    assert_int_equal(aims_registry_set_clock(r, sim_clock, &now), AIMS_OK);
    aims_instance a = 0;
    aims_instance b = 0;
    aims_instance t = 0;
    assert_int_equal(aims_registry_register(r, "infer@1", "inproc://a", 1, 300, &a), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "infer@2", "inproc://b", 3, 300, &b), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "train", "inproc://t", 1, 300, &t), AIMS_OK);

    /* a late client: lookup, then watch from the lookup's revision */
    aims_instance ids[4];
    size_t n = 0;
    assert_int_equal(aims_registry_lookup(r, "infer", ids, 4, &n), AIMS_OK);
    assert_int_equal(n, 2);
    view v = {0};
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(r, "infer", 0, view_apply, &v, &w), AIMS_OK);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.puts, 2);

    /* b heartbeats, a does not: a expires at 300 ms */
    now = 200 * MS;
    assert_int_equal(aims_registry_heartbeat(r, b), AIMS_OK);
    assert_int_equal(aims_registry_heartbeat(r, t), AIMS_OK);
    now = 300 * MS;
    assert_int_equal(aims_registry_lookup(r, "infer", ids, 4, &n), AIMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], b);
    assert_int_equal(v.expires, 1);
    assert_int_equal(v.n, 1);
    assert_int_equal(v.ids[0], b);

    char addr[32];
    size_t len = 0;
    assert_int_equal(aims_registry_get_address(r, b, addr, sizeof(addr), &len), AIMS_OK);
    assert_string_equal(addr, "inproc://b");
    assert_int_equal(aims_registry_weight(r, b), 3);
    assert_int_equal(aims_registry_get_address(r, a, addr, sizeof(addr), &len), AIMS_E_NOTFOUND);

    assert_int_equal(aims_registry_deregister(r, b), AIMS_OK);
    assert_int_equal(v.deletes, 1);
    assert_int_equal(v.n, 0);
    assert_int_equal(aims_registry_revision(r), 5);
    assert_int_equal(aims_registry_unwatch(r, w), AIMS_OK);
    aims_registry_destroy(r);
}

typedef struct flips {
    int n;
    aims_health_state last;
} flips;

static void flip(void *user, aims_instance id, aims_health_state from, aims_health_state to)
{
    (void)id;
    flips *const f = user;
    assert_int_not_equal(from, to);
    f->n++;
    f->last = to;
}

static void test_api_health_ejects_and_returns(void **state)
{
    (void)state;
    uint64_t now = 0;
    aims_health *h = NULL;
    assert_int_equal(aims_health_create(&h), AIMS_OK);
    assert_int_equal(aims_health_set_clock(h, sim_clock, &now), AIMS_OK);
    flips f = {0};
    assert_int_equal(aims_health_set_change_fn(h, flip, &f), AIMS_OK);
    for (aims_instance i = 1; i <= 3; i++) {
        assert_int_equal(aims_health_add(h, i), AIMS_OK);
    }
    for (int i = 0; i < 5; i++) { /* Envoy's default: 5 consecutive failures */
        assert_int_equal(aims_health_report(h, 2, 0), AIMS_OK);
    }
    assert_int_equal(aims_health_state_of(h, 2), AIMS_HEALTH_STATE_EJECTED);
    assert_int_equal(f.n, 1);
    assert_int_equal(aims_health_is_in_panic(h), 0); /* 2 of 3 healthy */
    now = 30000 * MS; /* default base ejection: 30 s */
    assert_int_equal(aims_health_state_of(h, 2), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(f.n, 2);
    assert_int_equal(f.last, AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_FAILURES, 1), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_MAX_EJECTED_PCT, 100), AIMS_OK);
    assert_int_equal(aims_health_report(h, 1, 0), AIMS_OK);
    assert_int_equal(aims_health_report(h, 3, 0), AIMS_OK);
    assert_int_equal(aims_health_is_in_panic(h), 1);
    aims_health_destroy(h);
}

static aims_status op_setup(void *ctx)
{
    (void)ctx;
    aims_registry *r = NULL;
    aims_health *h = NULL;
    aims_status st = aims_registry_create(&r);
    if (st == AIMS_OK) {
        st = aims_health_create(&h);
    }
    view v = {0};
    uint64_t w = 0;
    for (int i = 0; i < 10 && st == AIMS_OK; i++) {
        aims_instance id = 0;
        st = aims_registry_register(r, "infer", "inproc://x", 1, 1000, &id);
        if (st == AIMS_OK) {
            st = aims_health_add(h, id);
        }
    }
    if (st == AIMS_OK) {
        st = aims_registry_watch(r, NULL, 0, view_apply, &v, &w);
    }
    aims_health_destroy(h);
    aims_registry_destroy(r);
    return st;
}

static void test_api_orch_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("orch_setup", op_setup, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_api_registry_discovery_with_leases, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_health_ejects_and_returns, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_orch_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
