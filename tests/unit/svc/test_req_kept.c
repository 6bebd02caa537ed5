/*
 * test_req_kept.c -- an inproc async call lends its own request copy to the
 * node instead of the node copying it again (client_send.c, service.c:
 * AIMSI_REQ_KEPT; docs/P9.md).
 *
 * Why a test of its own. The node used to deep-copy every queued request;
 * now a queued idempotent async call borrows the client's copy, which lives
 * with the call record. The call's done() may run before the node is done
 * with the request (the deadline sweeper answers TIMEOUT while the handler
 * still runs), so the node's hold on the call must keep the bytes alive until
 * the node's completion. Under ASan (make test runs this suite with
 * -fsanitize=address) a missing hold is a use-after-free in the handler; with
 * the counting allocator a hold never dropped is a leak at teardown.
 *
 *  - lent_requests_answered: 48 calls queued behind a closed gate, each with
 *    its own 32 KB tensor, the caller's message destroyed as soon as
 *    call_async returns; the echo handler copies the request into the reply:
 *    every reply holds the bytes that call sent.
 *  - lent_request_outlives_done: the handler is held while the call's
 *    deadline passes, so done() gets AIMS_E_TIMEOUT first; then the handler
 *    reads the request (copies it into its reply) and the node completes.
 * Counts and contents only: no timing assertion (the deadline is what
 * makes done() come first, and the test waits for it, bounded).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "svc_echo.h"
#include "testalloc.h"

#define N_CALLS 48
#define N_FLOATS 8192 /* 32 KB per request */

typedef struct outcome {
    atomic_int done, ok, right, timeouts;
    float want[N_CALLS];
} outcome;

typedef struct call_ref {
    outcome *o;
    int i;
} call_ref;

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *err)
{
    (void)err;
    call_ref *r = user;
    outcome *o = r->o;
    if (st == AIMS_OK) {
        atomic_fetch_add(&o->ok, 1);
        if (reply_is_ramp(reply, N_FLOATS, o->want[r->i])) {
            atomic_fetch_add(&o->right, 1);
        }
    } else if (st == AIMS_E_TIMEOUT) {
        atomic_fetch_add(&o->timeouts, 1);
    }
    atomic_fetch_add(&o->done, 1);
}

/* Start call i: a fresh message with its own bytes, destroyed right after. */
static void start(svc_rig *r, outcome *o, call_ref *ref, int i, int64_t timeout_ms)
{
    float *x = malloc(N_FLOATS * sizeof *x);
    assert_non_null(x);
    o->want[i] = (float)(i * 100000);
    for (size_t k = 0; k < N_FLOATS; k++) {
        x[k] = o->want[i] + (float)k;
    }
    aims_msg *m = mk_msg();
    const uint64_t dims[1] = {N_FLOATS};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dims, 1, x, AIMS_MSG_BORROW), AIMS_OK);
    ref->o = o;
    ref->i = i;
    assert_int_equal(aims_client_call_async(r->c, "kept", "run", m, AIMS_CALL_IDEMPOTENT,
                                            timeout_ms, on_done, ref),
                     AIMS_OK);
    /* The call's own copy is what travels: scribble over and free ours. */
    memset(x, 0xA5, N_FLOATS * sizeof *x);
    aims_msg_destroy(m);
    free(x);
}

static void wait_until(atomic_int *v, int want)
{
    for (int i = 0; i < 20000 && atomic_load(v) < want; i++) {
        nap_ms(1);
    }
    assert_true(atomic_load(v) >= want);
}

static void lent_requests_answered(void **state)
{
    (void)state;
    svc_rig r;
    svc_rig_up(&r, "inproc", NULL, "kept", "kept", 0);
    static outcome o;
    static call_ref refs[N_CALLS];
    memset(&o, 0, sizeof o);
    atomic_store(&r.h.gate_closed, 1);
    for (int i = 0; i < N_CALLS; i++) {
        start(&r, &o, &refs[i], i, 30000);
    }
    wait_until(&r.h.entered, 1); /* the rest are queued behind it */
    atomic_store(&r.h.gate_closed, 0);
    wait_until(&o.done, N_CALLS);
    assert_int_equal(atomic_load(&o.ok), N_CALLS);
    assert_int_equal(atomic_load(&o.right), N_CALLS);
    svc_rig_down(&r);
}

static void lent_request_outlives_done(void **state)
{
    (void)state;
    svc_rig r;
    svc_rig_up(&r, "inproc", NULL, "kept", "kept", 0);
    static outcome o;
    static call_ref ref;
    memset(&o, 0, sizeof o);
    atomic_store(&r.h.gate_closed, 1);
    start(&r, &o, &ref, 0, 100);
    wait_until(&r.h.entered, 1); /* running, held at the gate */
    wait_until(&o.done, 1);      /* the sweeper answered: deadline passed */
    assert_int_equal(atomic_load(&o.timeouts), 1);
    atomic_store(&r.h.gate_closed, 0); /* now the handler reads the request */
    wait_until(&r.h.calls, 1);
    svc_rig_down(&r); /* waits for the node's completion; the hold is dropped there */
    assert_int_equal(atomic_load(&o.done), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(lent_requests_answered, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(lent_request_outlives_done, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
