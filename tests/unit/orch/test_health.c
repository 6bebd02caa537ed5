/*
 * test_health.c -- white-box tests of src/orch/health.c on a fake clock:
 * consecutive-failure ejection, growing and capped ejection times, decay of
 * the multiplier, the ejected-share cap, panic, callbacks (once per change,
 * re-entrant, concurrent callers), the client's success report with its
 * lock-free shortcut, and allocation failures.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orch/aimsi_orch.h"
#include "testalloc.h"

#define MS 1000000ull

static uint64_t fake_clock(void *user)
{
    return atomic_load((_Atomic uint64_t *)user);
}

typedef struct changes {
    int to_ejected;
    int to_healthy;
    aims_instance last_id;
    aims_health_state last_from, last_to;
} changes;

static void on_change(void *user, aims_instance id, aims_health_state from,
                      aims_health_state to)
{
    changes *const c = user;
    c->last_id = id;
    c->last_from = from;
    c->last_to = to;
    if (to == AIMS_HEALTH_STATE_EJECTED) {
        assert_int_equal(from, AIMS_HEALTH_STATE_HEALTHY);
        c->to_ejected++;
    } else {
        assert_int_equal(from, AIMS_HEALTH_STATE_EJECTED);
        c->to_healthy++;
    }
}

/* Tracker on a fake clock with n instances (ids 1..n) and a change counter. */
static aims_health *mk(_Atomic uint64_t *clk, changes *c, size_t n)
{
    aims_health *h = NULL;
    assert_int_equal(aims_health_create(&h), AIMS_OK);
    assert_int_equal(aims_health_set_clock(h, fake_clock, clk), AIMS_OK);
    assert_int_equal(aims_health_set_change_fn(h, on_change, c), AIMS_OK);
    for (size_t i = 1; i <= n; i++) {
        assert_int_equal(aims_health_add(h, i), AIMS_OK);
    }
    return h;
}

static void fail_n(aims_health *h, aims_instance id, int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(aims_health_report(h, id, 0), AIMS_OK);
    }
}

static void test_health_create_params_misuse(void **state)
{
    (void)state;
    assert_int_equal(aims_health_create(NULL), AIMS_E_MISUSE);
    aims_health_destroy(NULL);
    assert_int_equal(aims_health_report(NULL, 1, 0), AIMS_E_MISUSE);
    assert_int_equal(aims_health_state_of(NULL, 1), 0);
    assert_int_equal(aims_health_is_in_panic(NULL), 0);
    aims_health *h = NULL;
    assert_int_equal(aims_health_create(&h), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_FAILURES, 0), AIMS_E_RANGE);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_PANIC_PCT, 101), AIMS_E_RANGE);
    assert_int_not_equal(aims_health_set_param_i64(h, AIMS_MODEL_DROPOUT, 1), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_EJECT_MS, 10), AIMS_OK);
    assert_int_equal(aims_health_add(h, 0), AIMS_E_INVAL);
    assert_int_equal(aims_health_add(h, 5), AIMS_OK);
    assert_int_equal(aims_health_add(h, 5), AIMS_E_EXISTS);
    assert_int_equal(aims_health_add(h, 3), AIMS_OK);
    assert_int_equal(aims_health_state_of(h, 5), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(aims_health_state_of(h, 4), 0);
    assert_int_equal(aims_health_report(h, 4, 1), AIMS_E_NOTFOUND);
    assert_int_equal(aims_health_remove(h, 5), AIMS_OK);
    assert_int_equal(aims_health_remove(h, 5), AIMS_E_NOTFOUND);
    assert_int_equal(aims_health_state_of(h, 5), 0);
    assert_int_equal(aims_health_state_of(h, 3), AIMS_HEALTH_STATE_HEALTHY);
    aims_health_destroy(h);
}

/* Defaults are Envoy's: 5 failures, 30 s, at most 10 % (>= 1). */
static void test_health_defaults_eject_after_five(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    changes c = {0};
    aims_health *h = mk(&clk, &c, 20);
    fail_n(h, 7, 4);
    assert_int_equal(aims_health_state_of(h, 7), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(aims_health_report(h, 7, 1), AIMS_OK); /* a success resets the run */
    fail_n(h, 7, 4);
    assert_int_equal(aims_health_state_of(h, 7), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(c.to_ejected, 0);
    fail_n(h, 7, 1);
    assert_int_equal(aims_health_state_of(h, 7), AIMS_HEALTH_STATE_EJECTED);
    assert_int_equal(c.to_ejected, 1);
    assert_int_equal(c.last_id, 7);
    fail_n(h, 7, 10); /* reports on an ejected instance change nothing */
    assert_int_equal(c.to_ejected, 1);
    atomic_store(&clk, 30000 * MS - 1);
    assert_int_equal(aims_health_state_of(h, 7), AIMS_HEALTH_STATE_EJECTED);
    atomic_store(&clk, 30000 * MS);
    assert_int_equal(aims_health_state_of(h, 7), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(aims_health_state_of(h, 7), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(aims_health_is_in_panic(h), 0);
    assert_int_equal(c.to_healthy, 1); /* once per change */
    aims_health_destroy(h);
}

/* Eject id now and return the ejection length in ms, measured on the clock. */
static uint64_t eject_len(aims_health *h, _Atomic uint64_t *clk, aims_instance id)
{
    fail_n(h, id, 2);
    assert_int_equal(aims_health_state_of(h, id), AIMS_HEALTH_STATE_EJECTED);
    const uint64_t t0 = atomic_load(clk);
    uint64_t ms = 0;
    while (aims_health_state_of(h, id) == AIMS_HEALTH_STATE_EJECTED) {
        ms++;
        atomic_store(clk, t0 + ms * MS);
        assert_true(ms < 100000);
    }
    return ms;
}

static void test_health_ejection_grows_and_caps(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 5 * MS;
    changes c = {0};
    aims_health *h = mk(&clk, &c, 4);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_FAILURES, 2), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_EJECT_MS, 100), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_MAX_EJECT_MS, 250), AIMS_OK);
    assert_int_equal(eject_len(h, &clk, 1), 100);
    assert_int_equal(eject_len(h, &clk, 1), 200);
    assert_int_equal(eject_len(h, &clk, 1), 250);
    assert_int_equal(eject_len(h, &clk, 1), 250);
    assert_int_equal(c.to_ejected, 4);
    assert_int_equal(c.to_healthy, 4);
    /* another instance has its own multiplier */
    assert_int_equal(eject_len(h, &clk, 2), 100);
    aims_health_destroy(h);
}

/* The multiplier drops by one per full eject_ms spent healthy. */
static void test_health_multiplier_decays(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    changes c = {0};
    aims_health *h = mk(&clk, &c, 2);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_FAILURES, 2), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_EJECT_MS, 100), AIMS_OK);
    assert_int_equal(eject_len(h, &clk, 1), 100);
    assert_int_equal(eject_len(h, &clk, 1), 200); /* times = 2 */
    /* healthy 99 ms: no decay, third ejection is 300 ms */
    atomic_fetch_add(&clk, 99 * MS);
    assert_int_equal(eject_len(h, &clk, 1), 300); /* times = 3 */
    /* healthy 200 ms: two decrements -> times 1, next ejection 200 ms */
    atomic_fetch_add(&clk, 200 * MS);
    assert_int_equal(eject_len(h, &clk, 1), 200);
    /* healthy a long time: back to the base */
    atomic_fetch_add(&clk, 10000 * MS);
    assert_int_equal(eject_len(h, &clk, 1), 100);
    aims_health_destroy(h);
}

static void test_health_max_ejected_share(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    changes c = {0};
    aims_health *h = mk(&clk, &c, 5); /* 10 % of 5 rounds to 0: one may still go */
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_FAILURES, 3), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_EJECT_MS, 1000), AIMS_OK);
    fail_n(h, 1, 3);
    fail_n(h, 2, 3);
    assert_int_equal(aims_health_state_of(h, 1), AIMS_HEALTH_STATE_EJECTED);
    assert_int_equal(aims_health_state_of(h, 2), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(c.to_ejected, 1);
    atomic_store(&clk, 1000 * MS);
    /* the run of 2 continues: the next failure ejects once there is room */
    fail_n(h, 2, 1);
    assert_int_equal(aims_health_state_of(h, 1), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(aims_health_state_of(h, 2), AIMS_HEALTH_STATE_EJECTED);
    assert_int_equal(c.to_ejected, 2);
    assert_int_equal(c.to_healthy, 1);
    /* with 50 %: two of five */
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_MAX_EJECTED_PCT, 50), AIMS_OK);
    fail_n(h, 3, 3);
    fail_n(h, 4, 3);
    assert_int_equal(aims_health_state_of(h, 3), AIMS_HEALTH_STATE_EJECTED);
    assert_int_equal(aims_health_state_of(h, 4), AIMS_HEALTH_STATE_HEALTHY);
    /* removing an ejected instance frees its slot (2 of 4 at 50 %) */
    assert_int_equal(aims_health_remove(h, 2), AIMS_OK);
    fail_n(h, 4, 1);
    assert_int_equal(aims_health_state_of(h, 4), AIMS_HEALTH_STATE_EJECTED);
    aims_health_destroy(h);
}

static void test_health_panic_threshold(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    changes c = {0};
    aims_health *h = mk(&clk, &c, 0);
    assert_int_equal(aims_health_is_in_panic(h), 0); /* empty: no panic */
    for (aims_instance i = 1; i <= 4; i++) {
        assert_int_equal(aims_health_add(h, i), AIMS_OK);
    }
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_FAILURES, 1), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_MAX_EJECTED_PCT, 100), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_EJECT_MS, 50), AIMS_OK);
    fail_n(h, 1, 1);
    assert_int_equal(aims_health_is_in_panic(h), 0); /* 75 % healthy */
    fail_n(h, 2, 1);
    assert_int_equal(aims_health_is_in_panic(h), 0); /* 50 %: not below 50 */
    fail_n(h, 3, 1);
    assert_int_equal(aims_health_is_in_panic(h), 1); /* 25 % */
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_PANIC_PCT, 25), AIMS_OK);
    assert_int_equal(aims_health_is_in_panic(h), 0);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_PANIC_PCT, 50), AIMS_OK);
    atomic_store(&clk, 50 * MS); /* ejections end: in_panic ends them, with callbacks */
    assert_int_equal(aims_health_is_in_panic(h), 0);
    assert_int_equal(c.to_healthy, 3);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_PANIC_PCT, 0), AIMS_OK);
    fail_n(h, 1, 1);
    fail_n(h, 2, 1);
    fail_n(h, 3, 1);
    fail_n(h, 4, 1);
    assert_int_equal(aims_health_is_in_panic(h), 0); /* panic disabled */
    aims_health_destroy(h);
}

/* ---- callbacks ------------------------------------------------------------------- */

typedef struct reent {
    aims_health *h;
    int calls;
    aims_health_state seen_state;
} reent;

static void reent_cb(void *user, aims_instance id, aims_health_state from, aims_health_state to)
{
    (void)from;
    reent *const r = user;
    r->calls++;
    /* call back into the tracker: state is already updated */
    r->seen_state = aims_health_state_of(r->h, id);
    assert_int_equal(r->seen_state, to);
    assert_int_equal(aims_health_report(r->h, id, 1), AIMS_OK);
    (void)aims_health_is_in_panic(r->h);
}

static void test_health_callback_reentrant(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    aims_health *h = NULL;
    assert_int_equal(aims_health_create(&h), AIMS_OK);
    assert_int_equal(aims_health_set_clock(h, fake_clock, &clk), AIMS_OK);
    reent r = {.h = h};
    assert_int_equal(aims_health_set_change_fn(h, reent_cb, &r), AIMS_OK);
    assert_int_equal(aims_health_add(h, 1), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(h, AIMS_HEALTH_FAILURES, 1), AIMS_OK);
    fail_n(h, 1, 1);
    assert_int_equal(r.calls, 1);
    atomic_store(&clk, 30000 * MS);
    assert_int_equal(aims_health_state_of(h, 1), AIMS_HEALTH_STATE_HEALTHY);
    assert_int_equal(r.calls, 2);
    assert_int_equal(aims_health_set_change_fn(h, NULL, NULL), AIMS_OK);
    fail_n(h, 1, 1);
    assert_int_equal(r.calls, 2);
    aims_health_destroy(h);
}

#define THREADS 4

typedef struct conc {
    aims_health *h;
    _Atomic uint64_t clk;
    atomic_int ejections;
    atomic_int returns;
    int idx;
} conc;

static void conc_cb(void *user, aims_instance id, aims_health_state from, aims_health_state to)
{
    (void)id;
    (void)from;
    conc *const c = user;
    if (to == AIMS_HEALTH_STATE_EJECTED) {
        atomic_fetch_add(&c->ejections, 1);
    } else {
        atomic_fetch_add(&c->returns, 1);
    }
}

typedef struct worker_arg {
    conc *c;
    int idx;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *const a = p;
    for (int i = 0; i < 3000; i++) {
        const aims_instance id = (aims_instance)(1 + (i + a->idx) % 8);
        if (aims_health_report(a->c->h, id, i % 5 == 0) != AIMS_OK) {
            return (void *)1;
        }
        if (a->idx == 0 && i % 50 == 0) {
            atomic_fetch_add(&a->c->clk, 7 * MS);
        }
        (void)aims_health_state_of(a->c->h, id);
    }
    return NULL;
}

static void test_health_concurrent_reports(void **state)
{
    (void)state;
    conc c = {0};
    atomic_init(&c.clk, 0);
    atomic_init(&c.ejections, 0);
    atomic_init(&c.returns, 0);
    assert_int_equal(aims_health_create(&c.h), AIMS_OK);
    assert_int_equal(aims_health_set_clock(c.h, fake_clock, &c.clk), AIMS_OK);
    assert_int_equal(aims_health_set_change_fn(c.h, conc_cb, &c), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(c.h, AIMS_HEALTH_FAILURES, 2), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(c.h, AIMS_HEALTH_EJECT_MS, 20), AIMS_OK);
    assert_int_equal(aims_health_set_param_i64(c.h, AIMS_HEALTH_MAX_EJECTED_PCT, 50), AIMS_OK);
    for (aims_instance i = 1; i <= 8; i++) {
        assert_int_equal(aims_health_add(c.h, i), AIMS_OK);
    }
    pthread_t th[THREADS];
    worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].c = &c;
        args[i].idx = i;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
    int ejected = 0;
    for (aims_instance i = 1; i <= 8; i++) {
        ejected += aims_health_state_of(c.h, i) == AIMS_HEALTH_STATE_EJECTED;
    }
    assert_true(ejected <= 4);
    assert_true(atomic_load(&c.ejections) > 0);
    /* every change seen exactly once: ejections - returns = currently ejected */
    assert_int_equal(atomic_load(&c.ejections) - atomic_load(&c.returns), ejected);
    aims_health_destroy(c.h);
}

/* ---- allocation failures -------------------------------------------------------- */

static aims_status op_health(void *ctx)
{
    (void)ctx;
    aims_health *h = NULL;
    AIMSI_TRY(aims_health_create(&h));
    aims_status st = AIMS_OK;
    for (aims_instance i = 40; i > 0 && st == AIMS_OK; i--) {
        st = aims_health_add(h, i);
    }
    if (st == AIMS_OK) {
        st = aims_health_report(h, 3, 0);
    }
    aims_health_destroy(h);
    return st;
}

/* aimsi_health_report_ok (the client's per-reply report, with its lock-free
 * shortcut while every instance is clean) behaves exactly as
 * aims_health_report(h, id, 1): two trackers on one fake clock get the same
 * random stream of failures and successes (one through each), with
 * instances removed and added back, and agree on every state, on panic and
 * on the changes they delivered after every step. */
static void test_health_report_ok_same_as_report(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    changes ca = {0}, cb = {0};
    aims_health *a = mk(&clk, &ca, 4);
    aims_health *b = mk(&clk, &cb, 4);
    aims_health *both[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(aims_health_set_param_i64(both[k], AIMS_HEALTH_FAILURES, 3), AIMS_OK);
        assert_int_equal(aims_health_set_param_i64(both[k], AIMS_HEALTH_EJECT_MS, 10), AIMS_OK);
        assert_int_equal(aims_health_set_param_i64(both[k], AIMS_HEALTH_MAX_EJECT_MS, 40),
                         AIMS_OK);
        assert_int_equal(aims_health_set_param_i64(both[k], AIMS_HEALTH_MAX_EJECTED_PCT, 50),
                         AIMS_OK);
    }
    uint64_t r = 12345;
    int shortcut_chances = 0; /* steps where every instance was clean */
    for (int step = 0; step < 20000; step++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        const aims_instance id = 1 + (aims_instance)((r >> 33) % 4u);
        const unsigned roll = (unsigned)((r >> 40) % 100u);
        if (roll < 1) {
            /* an instance leaves and comes back clean */
            assert_int_equal(aims_health_remove(a, id), AIMS_OK);
            assert_int_equal(aims_health_remove(b, id), AIMS_OK);
            assert_int_equal(aims_health_add(a, id), AIMS_OK);
            assert_int_equal(aims_health_add(b, id), AIMS_OK);
        } else if (roll < 25) {
            assert_int_equal(aims_health_report(a, id, 0), AIMS_OK);
            assert_int_equal(aims_health_report(b, id, 0), AIMS_OK);
        } else {
            assert_int_equal(aims_health_report(a, id, 1), AIMS_OK);
            aimsi_health_report_ok(b, id);
        }
        atomic_fetch_add(&clk, ((r >> 20) % 4u) * MS);
        int clean = 1;
        for (aims_instance i = 1; i <= 4; i++) {
            const aims_health_state sa = aims_health_state_of(a, i);
            assert_int_equal(sa, aims_health_state_of(b, i));
            clean &= sa == AIMS_HEALTH_STATE_HEALTHY;
        }
        shortcut_chances += clean;
        assert_int_equal(aims_health_is_in_panic(a), aims_health_is_in_panic(b));
        assert_int_equal(ca.to_ejected, cb.to_ejected);
        assert_int_equal(ca.to_healthy, cb.to_healthy);
    }
    assert_true(ca.to_ejected > 10); /* the stream did eject, and end ejections */
    assert_true(ca.to_healthy > 10);
    assert_true(shortcut_chances > 0);
    aimsi_health_report_ok(a, 99); /* untracked: nothing happens, nothing is said */
    aims_health_destroy(a);
    aims_health_destroy(b);
}

static void test_health_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("health", op_health, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_health_create_params_misuse, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_defaults_eject_after_five, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_ejection_grows_and_caps, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_multiplier_decays, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_max_ejected_share, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_panic_threshold, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_callback_reentrant, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_concurrent_reports, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_report_ok_same_as_report, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_health_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
