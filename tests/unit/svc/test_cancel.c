/*
 * test_cancel.c -- cancellation and hedging (docs/CANCEL.md), run once per
 * transport (argv[1]: inproc or tcp; meson registers both): a queued call that
 * is cancelled never runs (the handler counts), a running handler sees the
 * flag, handles behave (wait, poll, destroy while running), and hedged
 * idempotent calls with one of two instances slowed 10x are answered by the
 * fast one, with hedges within the retry budget. No timing assertions: the
 * hedging test counts which instance answered and what the metrics say.
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

#include "aims/aims_cancel.h"
#include "svc/transport/aimsi_transport.h"
#include "svc_echo.h"
#include "testalloc.h"

static const char *g_tr = "inproc";

/* Over a stream, frames on one connection are handled in order: a $ping
 * answered after the CANCEL frame proves the node has seen it. */
static void sync_with_node(aims_client *c, const svc_node1 *nd, const char *service)
{
    aims_msg *q = mk_msg(), *r = mk_msg();
    assert_int_equal(aims_client_call_addr(c, nd->addr, service, "$ping", q, r, 5000), AIMS_OK);
    aims_msg_destroy(q);
    aims_msg_destroy(r);
}

static void test_queued_cancelled_never_runs(void **state)
{
    (void)state;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    hctx h;
    memset(&h, 0, sizeof h);
    atomic_store(&h.gate_closed, 1);
    svc_node1 nd;
    svc_node1_up(&nd, g_tr, "cx", reg, "q", echo_fn, &h, 1);
    aims_client *c = mk_client(reg);
    aims_msg *req = mk_req(1.0f);
    aims_call *a = NULL, *b = NULL;
    /* a holds the only slot at the gate; b waits in the queue. */
    assert_int_equal(aims_client_call_start(c, "q", "m", req, 0, 20000, &a), AIMS_OK);
    svc_wait_count(&h.entered, 1);
    assert_int_equal(aims_client_call_start(c, "q", "m", req, 0, 20000, &b), AIMS_OK);
    double qd = 0;
    for (int i = 0; i < 10000 && qd < 1.0; i++) { /* b reached the queue */
        assert_int_equal(aims_service_get_stat(nd.s, AIMS_SERVICE_STAT_QUEUED, &qd), AIMS_OK);
        if (qd < 1.0) {
            nap_ms(1);
        }
    }
    assert_true(qd >= 1.0);
    assert_false(aims_call_is_done(b));
    assert_int_equal(aims_call_cancel(b), AIMS_OK);
    assert_int_equal(aims_call_cancel(b), AIMS_OK); /* idempotent */
    aims_msg *rep = mk_msg();
    assert_int_equal(aims_call_wait(b, rep), AIMS_E_CANCELLED);
    assert_true(aims_call_is_done(b));
    assert_non_null(strstr(aims_call_errmsg(b), "cancelled"));
    if (strcmp(g_tr, "inproc") != 0) {
        sync_with_node(c, &nd, "q");
    }
    atomic_store(&h.gate_closed, 0);
    assert_int_equal(aims_call_wait(a, rep), AIMS_OK);
    assert_int_equal(reply_tag(rep), 0);
    /* A later call queues behind wherever b was: once it ran, b had its turn. */
    assert_int_equal(aims_client_call(c, "q", "m", req, rep, 0, 20000), AIMS_OK);
    assert_int_equal(atomic_load(&h.entered), 2);
    assert_int_equal(atomic_load(&h.calls), 2);
    aims_call_destroy(a);
    aims_call_destroy(b);
    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    aims_client_destroy(c);
    aims_node_destroy(nd.n);
    aims_registry_destroy(reg);
}

/* A long handler that polls its request's cancellation flag. */
typedef struct longh {
    atomic_int entered, saw_cancel, finished;
} longh;

static aims_status long_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                           uint64_t deadline_ns)
{
    (void)method;
    (void)reply;
    (void)deadline_ns;
    longh *l = user;
    atomic_fetch_add(&l->entered, 1);
    assert_false(aims_msg_is_cancelled(reply)); /* only the request answers */
    aims_status st = AIMS_OK;
    for (int i = 0; i < 20000; i++) {
        if (aims_msg_is_cancelled(req)) {
            atomic_fetch_add(&l->saw_cancel, 1);
            st = AIMS_E_CANCELLED;
            break;
        }
        nap_ms(1);
    }
    atomic_fetch_add(&l->finished, 1);
    return st;
}

static void test_running_handler_sees_flag(void **state)
{
    (void)state;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    longh l;
    memset(&l, 0, sizeof l);
    svc_node1 nd;
    svc_node1_up(&nd, g_tr, "cx", reg, "long", long_fn, &l, 0);
    aims_client *c = mk_client(reg);
    aims_msg *req = mk_req(2.0f), *rep = mk_msg();
    assert_false(aims_msg_is_cancelled(req)); /* not inside a handler */
    aims_call *a = NULL;
    assert_int_equal(aims_client_call_start(c, "long", "m", req, AIMS_CALL_IDEMPOTENT, 30000, &a),
                     AIMS_OK);
    svc_wait_count(&l.entered, 1);
    assert_int_equal(aims_call_cancel(a), AIMS_OK);
    assert_int_equal(aims_call_wait(a, rep), AIMS_E_CANCELLED);
    svc_wait_count(&l.finished, 1);
    assert_int_equal(atomic_load(&l.saw_cancel), 1);
    assert_int_equal(atomic_load(&l.entered), 1); /* a cancelled call is never retried */
    aims_call_destroy(a);
    /* Destroying a handle of a running call cancels it and waits for it. */
    assert_int_equal(aims_client_call_start(c, "long", "m", req, 0, 30000, &a), AIMS_OK);
    svc_wait_count(&l.entered, 2);
    aims_call_destroy(a);
    svc_wait_count(&l.finished, 2);
    assert_int_equal(atomic_load(&l.saw_cancel), 2);
    /* A call that completes normally through a handle. */
    hctx h;
    memset(&h, 0, sizeof h);
    h.tag = 7;
    aims_service *s2 = NULL;
    assert_int_equal(aims_service_add_handler(nd.n, "echo", echo_fn, &h, &s2), AIMS_OK);
    assert_int_equal(aims_service_start(s2), AIMS_OK);
    assert_int_equal(aims_client_call_start(c, "echo", "m", req, 0, 30000, &a), AIMS_OK);
    assert_int_equal(aims_call_wait(a, rep), AIMS_OK);
    assert_int_equal(reply_tag(rep), 7);
    assert_int_equal(aims_call_cancel(a), AIMS_OK); /* after the outcome: no effect */
    assert_string_equal(aims_call_errmsg(a), "");
    aims_call_destroy(a);
    /* A call that cannot start: the failure is the handle's outcome. */
    assert_int_equal(aims_client_call_start(c, "nosuch", "m", req, 0, 1000, &a), AIMS_OK);
    assert_int_equal(aims_call_wait(a, rep), AIMS_E_NOTFOUND);
    aims_call_destroy(a);
    /* A handle outlives its client: destroy ends the call (CLOSED, or OK if it won). */
    atomic_store(&h.sleep_ms, 100);
    assert_int_equal(aims_client_call_start(c, "echo", "m", req, 0, 30000, &a), AIMS_OK);
    aims_client_destroy(c);
    const aims_status st = aims_call_wait(a, rep);
    assert_true(st == AIMS_E_CLOSED || st == AIMS_OK);
    aims_call_destroy(a);
    c = mk_client(reg);
    /* Misuse. */
    assert_int_equal(aims_client_call_start(NULL, "echo", "m", req, 0, 0, &a), AIMS_E_MISUSE);
    assert_int_equal(aims_call_wait(NULL, rep), AIMS_E_MISUSE);
    assert_int_equal(aims_call_cancel(NULL), AIMS_E_MISUSE);
    assert_false(aims_call_is_done(NULL));
    assert_string_equal(aims_call_errmsg(NULL), "");
    aims_call_destroy(NULL);
    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    aims_client_destroy(c);
    aims_node_destroy(nd.n);
    aims_registry_destroy(reg);
}

#define FAST_MS 20
#define SLOW_MS 200 /* 10x */

/* What hedge_run brought up: its instances, their registry, the client. */
typedef struct hedge_rig {
    size_t n;
    svc_node1 nd[4];
    hctx h[4];
    aims_registry *reg;
    aims_client *c;
} hedge_rig;

/* n (<= 4) instances (tag i + 1), the last one 10x slow; `calls` sequential
 * hedged calls; returns how many replies came from fast instances. */
static long hedge_run(hedge_rig *r, size_t n, long calls, int64_t hedge_ms, int64_t retry_min,
                      double budget)
{
    memset(r, 0, sizeof *r);
    r->n = n;
    svc_node1 *nd = r->nd;
    hctx *h = r->h;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    for (size_t i = 0; i < n; i++) {
        h[i].tag = (int)i + 1;
        atomic_store(&h[i].sleep_ms, i + 1 == n ? SLOW_MS : FAST_MS);
        svc_node1_up(&nd[i], g_tr, "cx", reg, "hedged", echo_fn, &h[i], 0);
    }
    aims_client *c = mk_client(reg);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_HEDGE_MS, hedge_ms), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_RETRY_MIN, retry_min), AIMS_OK);
    assert_int_equal(aims_client_set_param_f64(c, AIMS_CLIENT_RETRY_BUDGET, budget), AIMS_OK);
    /* Round robin: half the first copies go to the slow instance. */
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN),
                     AIMS_OK);
    aims_msg *req = mk_req(3.0f), *rep = mk_msg();
    long fast = 0;
    for (long i = 0; i < calls; i++) {
        assert_int_equal(aims_client_call(c, "hedged", "m", req, rep, AIMS_CALL_IDEMPOTENT, 20000),
                         AIMS_OK);
        fast += reply_tag(rep) != (int)n;
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    r->c = c;
    r->reg = reg;
    return fast;
}

static void hedge_down(hedge_rig *r)
{
    aims_client_destroy(r->c);
    for (size_t i = 0; i < r->n; i++) {
        aims_node_destroy(r->nd[i].n);
    }
    aims_registry_destroy(r->reg);
}

static void test_hedge_fast_instance_wins(void **state)
{
    (void)state;
    hedge_rig r;
    const long calls = 40;
    /* A generous budget: every call may hedge after 50 ms. */
    const long fast = hedge_run(&r, 2, calls, 50, 1000, 1.0);
    aims_client *c = r.c;
    const long sent = svc_client_counter(c, "aims_client_hedges_total");
    const long won = svc_client_counter(c, "aims_client_hedges_won_total");
    const long cancelled = svc_client_counter(c, "aims_client_hedges_cancelled_total");
    print_message("hedge (%s): %ld calls, %ld answered by the fast instance, hedges sent %ld "
                  "won %ld cancelled %ld\n", g_tr, calls, fast, sent, won, cancelled);
    assert_true(sent >= 1);
    assert_true(won >= 1);
    assert_true(cancelled >= 1);
    /* Without hedging half the calls would wait for the slow instance; with it
     * (nearly) every reply comes from the fast one. */
    assert_true(fast >= calls - calls / 10);
    /* The losers were cancelled: the slow instance's handler runs ended. */
    hedge_down(&r);
}

static void test_hedge_within_budget(void **state)
{
    (void)state;
    hedge_rig r;
    const long calls = 30;
    /* No per-second allowance, 10% of calls: at most 3 hedges. */
    (void)hedge_run(&r, 2, calls, 30, 0, 0.1);
    aims_client *c = r.c;
    const long sent = svc_client_counter(c, "aims_client_hedges_total");
    const long denied = svc_client_counter(c, "aims_client_hedges_denied_total");
    const long retries = svc_client_counter(c, "aims_client_retries_total");
    print_message("budget (%s): hedges sent %ld denied %ld retries %ld\n", g_tr, sent, denied,
                  retries);
    assert_true(sent + retries <= calls / 10 + 1);
    assert_true(denied >= 1);
    hedge_down(&r);
}

/* AIMS_CLIENT_HEDGE_MS = 0: the delay comes from the service's recent
 * latencies (p95, at most 2x the median); one of 4 instances 10x slow. */
static void test_hedge_p95_delay(void **state)
{
    (void)state;
    hedge_rig r;
    const long calls = 40;
    const long fast = hedge_run(&r, 4, calls, 0, 1000, 1.0);
    aims_client *c = r.c;
    const long sent = svc_client_counter(c, "aims_client_hedges_total");
    const long won = svc_client_counter(c, "aims_client_hedges_won_total");
    print_message("p95 (%s): %ld calls, %ld answered by a fast instance, hedges sent %ld won %ld\n",
                  g_tr, calls, fast, sent, won);
    assert_true(sent >= 1);
    assert_true(won >= 1);
    hedge_down(&r);
}

int main(int argc, char **argv)
{
    if (svc_transport_arg(argc, argv, &g_tr, "inproc|tcp") != 0) {
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_queued_cancelled_never_runs, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_running_handler_sees_flag, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_hedge_fast_instance_wins, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_hedge_within_budget, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_hedge_p95_delay, ta_setup, ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "cancel_%s", g_tr);
    return cmocka_run_group_tests_name(group, tests, NULL, NULL);
}
