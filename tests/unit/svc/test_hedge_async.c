/*
 * test_hedge_async.c -- hedged aims_client_call_async (docs/CANCEL.md,
 * src/svc/client_hedge_async.c), run once per transport (argv[1]: inproc or
 * tcp; meson registers both). Two instances, one slowed 10x, round robin so
 * half the first copies go to the slow one:
 *   - with a 50 ms hedge delay and a generous budget, every async call
 *     succeeds, (nearly) every reply comes from the fast instance, hedges
 *     were sent, won, and their losers cancelled; the done callback runs
 *     exactly once per call;
 *   - with a 10 % budget and no per-second allowance, hedges plus retries
 *     stay within the budget and the rest are counted as denied;
 *   - calls in flight several at a time, and a client destroyed while
 *     hedged calls are still running, end every call once (allocator
 *     balanced at teardown).
 * Counts only, no timing assertions.
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

#include "svc/transport/aimsi_transport.h"
#include "svc_echo.h"
#include "testalloc.h"

#define FAST_MS 20
#define SLOW_MS 200 /* 10x */

static const char *g_tr = "inproc";

/* What the done callbacks saw. */
typedef struct outcome {
    atomic_int done, ok, fast, other;
    int slow_tag;
} outcome;

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    (void)error;
    outcome *o = user;
    if (st == AIMS_OK) {
        atomic_fetch_add(&o->ok, 1);
        if (reply != NULL && reply_tag(reply) != o->slow_tag) {
            atomic_fetch_add(&o->fast, 1);
        }
    } else {
        atomic_fetch_add(&o->other, 1);
    }
    atomic_fetch_add(&o->done, 1); /* last: the test reads the others after seeing it */
}

static void wait_done(outcome *o, int want)
{
    for (int i = 0; i < 60000 && atomic_load(&o->done) < want; i++) {
        nap_ms(1);
    }
    assert_int_equal(atomic_load(&o->done), want);
}

typedef struct rig {
    aims_registry *reg;
    svc_node1 nd[2];
    hctx h[2];
    aims_client *c;
} rig;

static void rig_up(rig *r, int64_t hedge_ms, int64_t retry_min, double budget)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(aims_registry_create(&r->reg), AIMS_OK);
    for (int i = 0; i < 2; i++) {
        r->h[i].tag = i + 1;
        atomic_store(&r->h[i].sleep_ms, i == 1 ? SLOW_MS : FAST_MS);
        svc_node1_up(&r->nd[i], g_tr, "ha", r->reg, "hedged", echo_fn, &r->h[i], 0);
    }
    r->c = mk_client(r->reg);
    assert_int_equal(aims_client_set_param_i64(r->c, AIMS_CLIENT_HEDGE_MS, hedge_ms), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(r->c, AIMS_CLIENT_RETRY_MIN, retry_min), AIMS_OK);
    assert_int_equal(aims_client_set_param_f64(r->c, AIMS_CLIENT_RETRY_BUDGET, budget), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(r->c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN),
                     AIMS_OK);
}

static void rig_down(rig *r)
{
    aims_client_destroy(r->c);
    aims_node_destroy(r->nd[0].n);
    aims_node_destroy(r->nd[1].n);
    aims_registry_destroy(r->reg);
}

/* `calls` async hedged calls, `width` in flight at a time. */
static void run_calls(rig *r, outcome *o, long calls, int width)
{
    aims_msg *req = mk_req(3.0f);
    memset(o, 0, sizeof *o);
    o->slow_tag = 2;
    for (long i = 0; i < calls; i += width) {
        const int n = (int)(calls - i < width ? calls - i : width);
        const int before = atomic_load(&o->done);
        for (int j = 0; j < n; j++) {
            assert_int_equal(aims_client_call_async(r->c, "hedged", "m", req,
                                                    AIMS_CALL_IDEMPOTENT, 20000, on_done, o),
                             AIMS_OK);
        }
        wait_done(o, before + n);
    }
    aims_msg_destroy(req);
}

static void test_async_hedge_fast_instance_wins(void **state)
{
    (void)state;
    rig r;
    outcome o;
    const long calls = 40;
    rig_up(&r, 50, 1000, 1.0); /* a generous budget: every call may hedge after 50 ms */
    run_calls(&r, &o, calls, 1);
    const long sent = svc_client_counter(r.c, "aims_client_hedges_total");
    const long won = svc_client_counter(r.c, "aims_client_hedges_won_total");
    const long cancelled = svc_client_counter(r.c, "aims_client_hedges_cancelled_total");
    print_message("async hedge (%s): %ld calls, %d ok, %d answered by the fast instance, hedges "
                  "sent %ld won %ld cancelled %ld\n",
                  g_tr, calls, atomic_load(&o.ok), atomic_load(&o.fast), sent, won, cancelled);
    assert_int_equal(atomic_load(&o.ok), calls);
    assert_int_equal(atomic_load(&o.other), 0);
    assert_true(sent >= 1);
    assert_true(won >= 1);
    assert_true(cancelled >= 1);
    /* Without hedging half the calls would wait for the slow instance. */
    assert_true(atomic_load(&o.fast) >= calls - calls / 10);
    rig_down(&r);
    assert_int_equal(atomic_load(&o.done), calls); /* no late second callback */
}

static void test_async_hedge_within_budget(void **state)
{
    (void)state;
    rig r;
    outcome o;
    const long calls = 30;
    rig_up(&r, 30, 0, 0.1); /* no per-second allowance, 10% of calls: at most 3 hedges */
    run_calls(&r, &o, calls, 1);
    const long sent = svc_client_counter(r.c, "aims_client_hedges_total");
    const long denied = svc_client_counter(r.c, "aims_client_hedges_denied_total");
    const long retries = svc_client_counter(r.c, "aims_client_retries_total");
    print_message("async budget (%s): hedges sent %ld denied %ld retries %ld\n", g_tr, sent,
                  denied, retries);
    assert_int_equal(atomic_load(&o.ok), calls);
    assert_true(sent + retries <= calls / 10 + 1);
    assert_true(denied >= 1);
    rig_down(&r);
}

static void test_async_hedge_concurrent_and_destroy(void **state)
{
    (void)state;
    rig r;
    outcome o;
    const long calls = 32;
    rig_up(&r, 50, 1000, 1.0);
    run_calls(&r, &o, calls, 8);
    assert_int_equal(atomic_load(&o.ok), calls);
    assert_true(svc_client_counter(r.c, "aims_client_hedges_total") >= 1);
    /* Destroy the client with hedged calls in flight: each ends exactly once. */
    aims_msg *req = mk_req(4.0f);
    outcome o2;
    memset(&o2, 0, sizeof o2);
    o2.slow_tag = 2;
    for (int j = 0; j < 6; j++) {
        assert_int_equal(aims_client_call_async(r.c, "hedged", "m", req, AIMS_CALL_IDEMPOTENT,
                                                20000, on_done, &o2),
                         AIMS_OK);
    }
    nap_ms(60); /* some hedges have left, some copies still run */
    aims_client_destroy(r.c);
    r.c = NULL;
    assert_int_equal(atomic_load(&o2.done), 6);
    aims_msg_destroy(req);
    aims_node_destroy(r.nd[0].n);
    aims_node_destroy(r.nd[1].n);
    aims_registry_destroy(r.reg);
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
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_async_hedge_fast_instance_wins, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_async_hedge_within_budget, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_async_hedge_concurrent_and_destroy, ta_setup,
                                        ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "hedge_async_%s", g_tr);
    return cmocka_run_group_tests_name(group, tests, NULL, NULL);
}
