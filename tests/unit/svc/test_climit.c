/*
 * test_climit.c -- the adaptive concurrency limit of a service (svc_climit.c,
 * docs/OVERLOAD.md): driven with synthetic samples from a model of a service
 * that runs one request at a time (run time R, so a request that finds L
 * queued or running is answered after L x R). Checks, on counts only: the
 * limit converges to the gradient rule's fixed point (about 4 for a
 * tolerance of 2) from above and from below, grows to its upper bound when
 * latency does not grow with load, does not grow when the service is
 * app-limited, and re-converges after the service got slower (the no-load
 * time is a windowed minimum).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "svc/aimsi_climit.h"

#define R_NS 10000000u /* one run: 10 ms */
#define LO 2.0
#define HI 1000.0
#define TOL AIMSI_CLIMIT_TOLERANCE

/* `steps` requests through the model (one every run), the service always
 * full to its limit (an offered load far above capacity). */
static uint64_t drive(aimsi_climit *c, uint64_t now, uint64_t run_ns, int steps)
{
    for (int i = 0; i < steps; i++) {
        const int64_t l = aimsi_climit_get(c, LO, HI);
        aimsi_climit_note_run(c, now, run_ns);
        aimsi_climit_note_sojourn(c, (uint64_t)l * run_ns, l, LO, HI, AIMSI_CLIMIT_TOLERANCE);
        now += run_ns;
    }
    return now;
}

static void converges_from_above(void **state)
{
    (void)state;
    aimsi_climit c;
    aimsi_climit_init(&c);
    assert_int_equal(aimsi_climit_get(&c, LO, HI), 1000); /* no sample yet: hi */
    (void)drive(&c, 1, R_NS, 300);
    const int64_t l = aimsi_climit_get(&c, LO, HI);
    assert_in_range(l, 3, 5);
}

static void converges_from_below(void **state)
{
    (void)state;
    double l = LO;
    for (int i = 0; i < 300; i++) {
        const uint64_t in_sys = (uint64_t)l;
        l = aimsi_climit_next(l, R_NS, in_sys * R_NS, (int64_t)in_sys, LO, HI, TOL);
    }
    assert_in_range((int64_t)l, 3, 5);
}

/* AIMS_SERVICE_CLIMIT_TOLERANCE_PCT = 400: the fixed point of L = 4 + sqrt(L), 6.56. */
static void tolerance_moves_fixed_point(void **state)
{
    (void)state;
    double l = LO;
    for (int i = 0; i < 300; i++) {
        const uint64_t in_sys = (uint64_t)l;
        l = aimsi_climit_next(l, R_NS, in_sys * R_NS, (int64_t)in_sys, LO, HI, 4.0);
    }
    assert_in_range((int64_t)l, 5, 7);
}

static void grows_when_latency_flat(void **state)
{
    (void)state;
    /* Many workers: latency does not grow with the load. */
    double l = 10.0;
    for (int i = 0; i < 500; i++) {
        l = aimsi_climit_next(l, R_NS, R_NS, (int64_t)l, LO, HI, TOL);
    }
    assert_int_equal((int64_t)l, 1000);
}

static void app_limited_does_not_grow(void **state)
{
    (void)state;
    double l = 10.0;
    for (int i = 0; i < 500; i++) {
        l = aimsi_climit_next(l, R_NS, R_NS, 1, LO, HI, TOL); /* one request in at a time */
    }
    assert_int_equal((int64_t)l, 10);
}

static void reconverges_after_slowdown(void **state)
{
    (void)state;
    aimsi_climit c;
    aimsi_climit_init(&c);
    uint64_t now = drive(&c, 1, R_NS, 300);
    /* The service is now 3x slower: the old minimum run time ages out of the
     * window (two 5 s windows = 10 s of 30 ms runs = 334 runs), then the
     * limit settles at the same fixed point. */
    now = drive(&c, now, 3 * R_NS, 800);
    (void)now;
    assert_in_range(aimsi_climit_get(&c, LO, HI), 3, 5);
}

static void bounds_hold(void **state)
{
    (void)state;
    /* A sojourn 100x the run time at the floor: stays at lo. */
    assert_true(aimsi_climit_next(LO, R_NS, 100u * R_NS, 2, LO, HI, TOL) >= LO);
    /* No data: unchanged. */
    assert_true(aimsi_climit_next(7.0, 0, R_NS, 7, LO, HI, TOL) == 7.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(converges_from_above), cmocka_unit_test(converges_from_below),
        cmocka_unit_test(tolerance_moves_fixed_point),
        cmocka_unit_test(grows_when_latency_flat), cmocka_unit_test(app_limited_does_not_grow),
        cmocka_unit_test(reconverges_after_slowdown), cmocka_unit_test(bounds_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
