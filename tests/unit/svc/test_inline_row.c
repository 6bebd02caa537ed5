/*
 * test_inline_row.c -- AIMSI_INLINE_IF_CHEAP_ROW (service.c): the HTTP door
 * runs a call on its own event-loop thread when the service's run time PER
 * ROW is cheap, even while batching has made the time per RUN expensive.
 *
 * Why. The door used AIMSI_INLINE_IF_CHEAP, judged by the per-run EWMA. Under
 * load one slow run pushed it past the line, calls queued, the workers ran
 * them in batches of ~9 rows, and a batch's run time kept the EWMA above the
 * line: the door stayed in the queued state (a suspend, two thread hops and a
 * resume per request: ~63 us of CPU against ~36 us inline, 18k against 33k
 * requests/s; docs/DOOR_SPEED.md "Session 11"). White-box on a started
 * handler service: the EWMAs are set, then one dispatch says where the
 * handler ran (this thread = inline, a worker = queued).
 *
 *  - row_cheap_runs_inline: per run 400 us, per row 20 us: _IF_CHEAP_ROW
 *    runs inline, _IF_CHEAP queues.
 *  - row_dear_queues: per row 400 us: _IF_CHEAP_ROW queues too.
 *  - note_run_per_row: aimsi_service_note_run(s, 450 us, 9 rows) moves the
 *    per-row EWMA towards 50 us, the per-run one towards 450 us.
 * No timing assertion: the handler's thread is what is checked.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "aims/aims.h"
#include "svc/aimsi_local.h"
#include "svc/aimsi_node.h"
#include "svc/aimsi_service.h"
#include "testalloc.h"

#define US 1000u

static pthread_t g_ran_on;
static atomic_int g_done;

static aims_status handler(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                           uint64_t deadline_ns)
{
    (void)user;
    (void)method;
    (void)req;
    (void)reply;
    (void)deadline_ns;
    g_ran_on = pthread_self();
    return AIMS_OK;
}

static void on_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    (void)ctx;
    (void)reply;
    (void)err;
    assert_int_equal(st, AIMS_OK);
    atomic_store(&g_done, 1);
}

typedef struct fix {
    aims_node *node;
    aims_service *svc;
    aims_msg *req;
} fix;

static int setup(void **state)
{
    static fix f;
    ta_setup(state);
    memset(&f, 0, sizeof f);
    assert_int_equal(aims_node_create("inline-row", &f.node), AIMS_OK);
    assert_int_equal(aims_service_add_handler(f.node, "h", handler, NULL, &f.svc), AIMS_OK);
    assert_int_equal(aims_service_start(f.svc), AIMS_OK);
    assert_int_equal(aims_msg_create(&f.req), AIMS_OK);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fix *f = *state;
    aims_msg_destroy(f->req);
    (void)aims_service_stop(f->svc, 2000);
    aims_node_destroy(f->node);
    return ta_teardown(state);
}

/* Dispatch one call with the EWMAs set; 1 when the handler ran on this thread. */
static int ran_inline(fix *f, int mode, uint64_t per_run, uint64_t per_row)
{
    atomic_store(&f->svc->ewma_ns, per_run);
    atomic_store(&f->svc->row_ewma_ns, per_row);
    atomic_store(&g_done, 0);
    g_ran_on = (pthread_t)0;
    aimsi_svc_dispatch(f->svc, "m", f->req, 0, mode, on_done, NULL, NULL, NULL);
    for (int i = 0; i < 5000 && !atomic_load(&g_done); i++) { /* a worker: at most 5 s */
        const struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_true(atomic_load(&g_done));
    return pthread_equal(g_ran_on, pthread_self());
}

static void row_cheap_runs_inline(void **state)
{
    fix *f = *state;
    assert_true(ran_inline(f, AIMSI_INLINE_IF_CHEAP_ROW, 400 * US, 20 * US));
    assert_false(ran_inline(f, AIMSI_INLINE_IF_CHEAP, 400 * US, 20 * US));
    /* cheap both ways: both inline, as before */
    assert_true(ran_inline(f, AIMSI_INLINE_IF_CHEAP, 20 * US, 20 * US));
}

static void row_dear_queues(void **state)
{
    fix *f = *state;
    assert_false(ran_inline(f, AIMSI_INLINE_IF_CHEAP_ROW, 400 * US, 400 * US));
    assert_false(ran_inline(f, AIMSI_INLINE_IF_CHEAP_ROW, 20 * US, 400 * US));
}

static void note_run_per_row(void **state)
{
    fix *f = *state;
    atomic_store(&f->svc->ewma_ns, 0);
    atomic_store(&f->svc->row_ewma_ns, 0);
    aimsi_service_note_run(f->svc, 450 * US, 9);
    assert_int_equal(atomic_load(&f->svc->row_ewma_ns), 50 * US);
    assert_int_equal(atomic_load(&f->svc->ewma_ns), 450 * US);
    aimsi_service_note_run(f->svc, 450 * US, 0); /* no rows counted: one */
    assert_true(atomic_load(&f->svc->row_ewma_ns) > 50 * US);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(row_cheap_runs_inline, setup, teardown),
        cmocka_unit_test_setup_teardown(row_dear_queues, setup, teardown),
        cmocka_unit_test_setup_teardown(note_run_per_row, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
