/*
 * test_cancel_race.c -- a call cancelled while its sender is still encoding
 * it (argv[1] = inproc | ipc | tcp; meson registers the program per transport).
 *
 * Why. An async call is linked as "in flight" under the client's mutex before
 * its request is encoded (stream transports) or handed to the node (inproc),
 * because the link gives it its request id. From that moment any other party
 * may finish it: aims_call_cancel on another thread, the deadline sweeper, a
 * hedge cancelling its loser, the connection's on_close. Finishing frees the
 * call (and its request copy) and the attempt; the sender used to go on
 * reading both (service, method, request, deadline) -- a use after free that
 * ASan reports here and TSan reports as a race. The rule now (client_send.c):
 * the sender holds a reference on the call and on the attempt until it is
 * done with them.
 *
 * How the test makes the window likely: big requests (encode takes a while),
 * one thread starting calls back to back and another cancelling each handle
 * the moment it appears; then calls whose 1 ms deadline passes while they
 * are encoded; then hedged sync calls whose loser is cancelled. Every call
 * must end exactly once with OK, CANCELLED, TIMEOUT (or shed), and the
 * counting allocator must balance. No timing assertions.
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
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <cmocka.h>

#include "svc/transport/aimsi_transport.h"
#include "aims/aims_cancel.h"
#include "svc_echo.h"
#include "testalloc.h"

static const char *g_tr = "tcp";
static char g_dir[128];

enum { N_CALLS = 600, BIG = 16384 /* floats: 64 KiB per request */ };

/* One node serving "race" over the transport under test, registered in a
 * local registry, and a client of that registry (svc_echo.h). */
static void rig_up(svc_rig *r, int inline_run)
{
    svc_rig_up(r, g_tr, g_dir, "cr", "race", inline_run);
}

static aims_msg *big_req(float x)
{
    aims_msg *m = mk_msg();
    const uint64_t dims[1] = {BIG};
    float *v = aimsi_malloc(sizeof(float) * BIG);
    assert_non_null(v);
    for (size_t i = 0; i < BIG; i++) {
        v[i] = x;
    }
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dims, 1, v, 0), AIMS_OK);
    aimsi_free(v);
    return m;
}

static int ended_ok(aims_status st)
{
    return st == AIMS_OK || st == AIMS_E_CANCELLED || st == AIMS_E_TIMEOUT ||
           st == AIMS_E_OVERLOADED;
}

/* ---- handles cancelled from another thread the moment they exist ------------------- */

typedef struct shared {
    aims_call *h[N_CALLS];
    atomic_int started; /* h[0 .. started) are set */
    atomic_int bad;     /* cancels refused (no cmocka asserts off the main thread) */
} shared;

static void *canceller(void *arg)
{
    shared *s = arg;
    int next = 0;
    while (next < N_CALLS) {
        const int upto = atomic_load(&s->started);
        if (next == upto) {
            sched_yield();
            continue;
        }
        for (; next < upto; next++) {
            if (aims_call_cancel(s->h[next]) != AIMS_OK) {
                atomic_fetch_add(&s->bad, 1);
            }
        }
    }
    return NULL;
}

static void cancel_storm(int inline_run, unsigned flags)
{
    svc_rig r;
    rig_up(&r, inline_run);
    static shared s;
    memset(&s, 0, sizeof s);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, canceller, &s), 0);
    aims_msg *req = big_req(3.0f);
    for (int i = 0; i < N_CALLS; i++) {
        assert_int_equal(aims_client_call_start(r.c, "race", "m", req, flags, 30000, &s.h[i]),
                         AIMS_OK);
        atomic_store(&s.started, i + 1);
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&s.bad), 0);
    int cancelled = 0;
    aims_msg *rep = mk_msg();
    for (int i = 0; i < N_CALLS; i++) {
        const aims_status st = aims_call_wait(s.h[i], rep);
        assert_true(ended_ok(st));
        cancelled += st == AIMS_E_CANCELLED;
        aims_call_destroy(s.h[i]);
    }
    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    svc_rig_down(&r);
    (void)cancelled; /* how many depends on scheduling: no assertion */
}

static void test_cancel_storm(void **state)
{
    (void)state;
    cancel_storm(1, AIMS_CALL_IDEMPOTENT); /* request copied: freed with the call */
    cancel_storm(0, 0);                    /* request borrowed, handler on a worker */
}

/* ---- deadlines passing while the request is encoded ----------------------------- */

static atomic_int g_dl_done, g_dl_twice, g_dl_bad;
static atomic_int g_dl_seen[N_CALLS];

static void dl_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    (void)reply;
    (void)error;
    atomic_int *seen = user;
    if (atomic_fetch_add(seen, 1) != 0) {
        atomic_fetch_add(&g_dl_twice, 1);
    }
    if (!ended_ok(st)) {
        atomic_fetch_add(&g_dl_bad, 1);
    }
    atomic_fetch_add(&g_dl_done, 1);
}

static void test_deadline_storm(void **state)
{
    (void)state;
    svc_rig r;
    rig_up(&r, 0);
    atomic_store(&r.h.sleep_ms, 1);
    atomic_init(&g_dl_done, 0);
    atomic_init(&g_dl_twice, 0);
    atomic_init(&g_dl_bad, 0);
    aims_msg *req = big_req(4.0f);
    for (int i = 0; i < N_CALLS; i++) {
        atomic_init(&g_dl_seen[i], 0);
        (void)aims_client_call_async(r.c, "race", "m", req, AIMS_CALL_IDEMPOTENT, 1, dl_done,
                                     &g_dl_seen[i]);
    }
    for (int w = 0; w < 60000 && atomic_load(&g_dl_done) < N_CALLS; w++) {
        nap_ms(1);
    }
    assert_int_equal(atomic_load(&g_dl_done), N_CALLS);
    assert_int_equal(atomic_load(&g_dl_twice), 0);
    assert_int_equal(atomic_load(&g_dl_bad), 0);
    aims_msg_destroy(req);
    atomic_store(&r.h.sleep_ms, 0);
    svc_rig_down(&r);
}

/* ---- hedged calls: the loser is cancelled ------------------------------------------ */

static void test_hedge_losers(void **state)
{
    (void)state;
    svc_rig r;
    rig_up(&r, 0);
    assert_int_equal(aims_client_set_param_i64(r.c, AIMS_CLIENT_HEDGE_MS, 1), AIMS_OK);
    aims_msg *req = big_req(5.0f);
    aims_msg *rep = mk_msg();
    for (int i = 0; i < 100; i++) {
        atomic_store(&r.h.sleep_ms, i % 2); /* some calls outlast the hedge delay */
        const aims_status st =
            aims_client_call(r.c, "race", "m", req, rep, AIMS_CALL_IDEMPOTENT, 30000);
        assert_true(ended_ok(st));
    }
    atomic_store(&r.h.sleep_ms, 0);
    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    svc_rig_down(&r);
}

int main(int argc, char **argv)
{
    if (svc_transport_arg(argc, argv, &g_tr, "inproc|ipc|tcp") != 0) {
        return 2;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/aims_cr_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cancel_storm, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_storm, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_hedge_losers, ta_setup, ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "cancel_race_%s", g_tr);
    const int rc = cmocka_run_group_tests_name(group, tests, NULL, NULL);
    rmdir(g_dir);
    return rc;
}
