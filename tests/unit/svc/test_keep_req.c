/*
 * test_keep_req.c -- AIMS_CALL_KEEP_REQUEST: an async call borrows the
 * caller's request, and done() never runs while anything still reads it
 * (src/svc/client_keep.c, docs/keep-request.md). argv[1] = inproc | ipc | tcp.
 *
 * Why these cases. The flag trades the client's request copy for a promise
 * both ways: the caller keeps its message until done() returned, the library
 * runs done() only after the last reader of the message is finished. Every
 * done() below scribbles over its request's bytes and frees them (legal:
 * done() has returned nothing yet), so a reader after done() is a
 * use-after-free under ASan (make test) and a wrong echo in any build.
 *
 *  - keep_borrowed: 64 calls, 32 KB each, all in flight; every reply echoes
 *    its own bytes; on inproc:// the handler saw the caller's very buffer
 *    (borrowed end to end: no copy in the client, none in the node).
 *  - keep_retry: every call's first attempt is refused (OVERLOADED, a 1 ms
 *    hint): a retry re-reads the caller's message after the first attempt
 *    ended; answered calls echo their own bytes.
 *  - keep_done_waits: a handler held at a gate past the call's deadline. On
 *    inproc:// the node reads the caller's message, so done(TIMEOUT) waits
 *    until the handler returns; on ipc/tcp the request was encoded before it
 *    left, so done(TIMEOUT) comes while the handler is still held.
 *  - keep_retry_beside_reader (inproc): a try abandoned at its share of the
 *    deadline is still running when its retry answers; done() must wait for
 *    the first try's handler and still see the retry's reply (kept as a copy).
 *  - keep_deadline_storm: 300 calls with 64 KB requests and 1 ms deadlines
 *    against a 1 ms handler; every call ends once (the sender's encode and
 *    the sweeper race).
 * No timing assertion: waits are bounded polls; "done has not run" is
 * checked while a gate the test holds makes it impossible.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_echo.h"
#include "testalloc.h"

#define N_CALLS 64
#define N_FLOATS 8192 /* 32 KB */

static const char *g_tr = "inproc";
static char g_dir[128]; /* ipc:// sockets */

typedef struct kh {
    atomic_int entered, calls, gate_closed, gate_first_only, refuse_first, finished_held;
    atomic_int tries[N_CALLS];
    const void *seen[N_CALLS]; /* the request bytes the handler saw, per call */
} kh;

static int call_index(const aims_msg *req, const float **x, size_t *n)
{
    size_t idx = 0;
    const void *data = NULL;
    size_t bytes = 0;
    if (aims_msg_find(req, "x", &idx) != AIMS_OK ||
        aims_msg_get_tensor(req, idx, NULL, NULL, NULL, NULL, &data, &bytes) != AIMS_OK ||
        bytes < sizeof(float)) {
        return -1;
    }
    *x = data;
    *n = bytes / sizeof(float);
    const int i = (int)((*x)[0] / 100000.0f);
    return i >= 0 && i < N_CALLS ? i : -1;
}

static aims_status kh_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                         uint64_t deadline_ns)
{
    (void)method;
    (void)deadline_ns;
    kh *h = user;
    const float *x = NULL;
    size_t n = 0;
    const int i = call_index(req, &x, &n);
    if (i < 0) {
        return AIMS_E_INVAL;
    }
    atomic_fetch_add(&h->entered, 1);
    const int try_no = atomic_fetch_add(&h->tries[i], 1) + 1;
    int held = 0;
    while (atomic_load(&h->gate_closed) && (try_no == 1 || !atomic_load(&h->gate_first_only))) {
        held = 1;
        nap_ms(1);
    }
    h->seen[i] = x;
    if (try_no == 1 && atomic_load(&h->refuse_first)) {
        aims_msg_set_error(reply, "refused once; retry after 1 ms");
        return AIMS_E_OVERLOADED;
    }
    /* Read the whole request now: after a held wait this is the late reader. */
    const uint64_t dims[1] = {n};
    const aims_status rc = aims_msg_add(reply, "x", AIMS_DT_F32, dims, 1, x, 0);
    atomic_fetch_add(&h->calls, 1);
    if (held) {
        atomic_fetch_add(&h->finished_held, 1);
    }
    return rc;
}

typedef struct kcall {
    aims_msg *m;
    float *x;
    float want;
    size_t n;
} kcall;

typedef struct outcome {
    atomic_int done, ok, right, timeouts, other;
    atomic_int held_done_at_done; /* h->finished_held when done ran (last call) */
    kh *h;
    kcall calls[N_CALLS];
} outcome;

typedef struct kref {
    outcome *o;
    int i;
} kref;

static kref g_refs[N_CALLS];

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *err)
{
    (void)err;
    kref *r = user;
    outcome *o = r->o;
    kcall *kc = &o->calls[r->i];
    atomic_store(&o->held_done_at_done, atomic_load(&o->h->finished_held));
    if (st == AIMS_OK) {
        atomic_fetch_add(&o->ok, 1);
        if (reply_is_ramp(reply, kc->n, kc->want)) {
            atomic_fetch_add(&o->right, 1);
        }
    } else if (st == AIMS_E_TIMEOUT) {
        atomic_fetch_add(&o->timeouts, 1);
    } else {
        atomic_fetch_add(&o->other, 1);
    }
    /* The caller's half of the promise ends here: scribble and free. */
    memset(kc->x, 0xA5, kc->n * sizeof(float));
    aims_msg_destroy(kc->m);
    free(kc->x);
    kc->x = NULL;
    kc->m = NULL;
    atomic_fetch_add(&o->done, 1);
}

static void start(aims_client *c, outcome *o, int i, size_t n, int64_t timeout_ms)
{
    kcall *kc = &o->calls[i];
    kc->n = n;
    kc->want = (float)(i * 100000);
    kc->x = malloc(n * sizeof(float));
    assert_non_null(kc->x);
    for (size_t k = 0; k < n; k++) {
        kc->x[k] = kc->want + (float)k;
    }
    kc->m = mk_msg();
    const uint64_t dims[1] = {n};
    assert_int_equal(aims_msg_add(kc->m, "x", AIMS_DT_F32, dims, 1, kc->x, AIMS_MSG_BORROW),
                     AIMS_OK);
    g_refs[i] = (kref){o, i};
    /* done runs exactly once, also when the call cannot start */
    (void)aims_client_call_async(c, "keep", "run", kc->m,
                                 AIMS_CALL_IDEMPOTENT | AIMS_CALL_KEEP_REQUEST, timeout_ms,
                                 on_done, &g_refs[i]);
}

typedef struct rig {
    aims_registry *reg;
    aims_node *n;
    aims_service *s;
    aims_client *c;
} rig;

static void rig_up(rig *r, kh *h)
{
    static atomic_int seq;
    char name[64], url[AIMSI_URL_MAX + 1];
    snprintf(name, sizeof name, "keep%d_%s", atomic_fetch_add(&seq, 1), g_tr);
    svc_listen_url(url, sizeof url, g_tr, g_dir, name);
    assert_int_equal(aims_registry_create(&r->reg), AIMS_OK);
    assert_int_equal(aims_node_create(name, &r->n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(r->n, AIMS_NODE_WORKERS, 4), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(r->n, AIMS_NODE_HEARTBEAT_MS, 250), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(r->n, AIMS_NODE_DRAIN_GRACE_MS, 30), AIMS_OK);
    assert_int_equal(aims_node_listen(r->n, url), AIMS_OK);
    assert_int_equal(aims_node_set_registry(r->n, r->reg), AIMS_OK);
    assert_int_equal(aims_service_add_handler(r->n, "keep", kh_fn, h, &r->s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(r->s, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(r->s, AIMS_SERVICE_CONCURRENCY, 4), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(r->s, AIMS_SERVICE_QUEUE_CAP, 1 << 14), AIMS_OK);
    assert_int_equal(aims_service_start(r->s), AIMS_OK);
    r->c = mk_client(r->reg);
    assert_int_equal(aims_client_set_param_i64(r->c, AIMS_CLIENT_MAX_PENDING, 1 << 14), AIMS_OK);
}

static void rig_down(rig *r)
{
    aims_client_destroy(r->c);
    aims_node_destroy(r->n);
    aims_registry_destroy(r->reg);
}

static kh g_h;
static outcome g_o;

static void reset(void)
{
    memset(&g_h, 0, sizeof g_h);
    memset(&g_o, 0, sizeof g_o);
    g_o.h = &g_h;
}

static void keep_borrowed(void **state)
{
    (void)state;
    reset();
    rig r;
    rig_up(&r, &g_h);
    const float *buf[N_CALLS];
    atomic_store(&g_h.gate_closed, 1); /* all in flight before any answers */
    for (int i = 0; i < N_CALLS; i++) {
        start(r.c, &g_o, i, N_FLOATS, 30000);
        buf[i] = g_o.calls[i].x;
    }
    atomic_store(&g_h.gate_closed, 0);
    svc_wait_count(&g_o.done, N_CALLS);
    assert_int_equal(atomic_load(&g_o.ok), N_CALLS);
    assert_int_equal(atomic_load(&g_o.right), N_CALLS);
    if (strcmp(g_tr, "inproc") == 0) {
        for (int i = 0; i < N_CALLS; i++) {
            assert_ptr_equal(g_h.seen[i], buf[i]); /* the caller's bytes, not a copy */
        }
    }
    rig_down(&r);
}

static void keep_retry(void **state)
{
    (void)state;
    reset();
    rig r;
    rig_up(&r, &g_h);
    atomic_store(&g_h.refuse_first, 1);
    for (int i = 0; i < 16; i++) {
        start(r.c, &g_o, i, N_FLOATS, 30000);
    }
    svc_wait_count(&g_o.done, 16);
    /* The retry budget may deny some retries: those end OVERLOADED. */
    assert_int_equal(atomic_load(&g_o.ok) + atomic_load(&g_o.other), 16);
    assert_true(atomic_load(&g_o.ok) >= 1);
    assert_int_equal(atomic_load(&g_o.right), atomic_load(&g_o.ok));
    rig_down(&r);
}

static void keep_done_waits(void **state)
{
    (void)state;
    reset();
    rig r;
    rig_up(&r, &g_h);
    atomic_store(&g_h.gate_closed, 1);
    start(r.c, &g_o, 0, N_FLOATS, 100);
    svc_wait_count(&g_h.entered, 1); /* running, held at the gate */
    if (strcmp(g_tr, "inproc") == 0) {
        /* The deadline passes and the sweeper ends the call, but the node
         * still holds the caller's message: done waits for the handler. */
        nap_ms(400);
        assert_int_equal(atomic_load(&g_o.done), 0);
        atomic_store(&g_h.gate_closed, 0);
        svc_wait_count(&g_o.done, 1);
        assert_int_equal(atomic_load(&g_o.held_done_at_done), 1);
    } else {
        /* The request left as bytes: done(TIMEOUT) does not wait. */
        svc_wait_count(&g_o.done, 1);
        assert_int_equal(atomic_load(&g_o.held_done_at_done), 0);
        atomic_store(&g_h.gate_closed, 0);
        svc_wait_count(&g_h.calls, 1);
    }
    assert_int_equal(atomic_load(&g_o.timeouts), 1);
    rig_down(&r);
}

static void keep_retry_beside_reader(void **state)
{
    (void)state;
    if (strcmp(g_tr, "inproc") != 0) {
        skip();
    }
    reset();
    rig r;
    rig_up(&r, &g_h);
    /* Warm the client's latency window so tries get their share (client_try.c). */
    for (int i = 0; i < 12; i++) {
        start(r.c, &g_o, i, 16, 30000);
        svc_wait_count(&g_o.done, i + 1);
    }
    assert_int_equal(atomic_load(&g_o.right), 12);
    memset(&g_o, 0, sizeof g_o);
    memset(&g_h, 0, sizeof g_h);
    g_o.h = &g_h;
    atomic_store(&g_h.gate_first_only, 1);
    atomic_store(&g_h.gate_closed, 1);
    start(r.c, &g_o, 0, N_FLOATS, 4000); /* a try gets 200 ms..2 s of it */
    svc_wait_count(&g_h.entered, 2);      /* the first try held, its retry ran */
    svc_wait_count(&g_h.calls, 1);        /* the retry answered */
    nap_ms(100);
    assert_int_equal(atomic_load(&g_o.done), 0); /* the first try still reads */
    atomic_store(&g_h.gate_closed, 0);
    svc_wait_count(&g_o.done, 1);
    assert_int_equal(atomic_load(&g_o.ok), 1);
    assert_int_equal(atomic_load(&g_o.right), 1); /* the retry's reply, kept */
    assert_int_equal(atomic_load(&g_o.held_done_at_done), 1);
    rig_down(&r);
}

static void keep_deadline_storm(void **state)
{
    (void)state;
    enum { N = 300 };
    reset();
    rig r;
    rig_up(&r, &g_h);
    atomic_int total;
    atomic_init(&total, 0);
    for (int b = 0; b * N_CALLS < N; b++) {
        const int n = N - b * N_CALLS < N_CALLS ? N - b * N_CALLS : N_CALLS;
        memset(&g_o, 0, sizeof g_o);
        g_o.h = &g_h;
        for (int i = 0; i < n; i++) {
            start(r.c, &g_o, i, 16384, 1); /* 64 KB, 1 ms */
        }
        svc_wait_count(&g_o.done, n);
        assert_int_equal(atomic_load(&g_o.ok) + atomic_load(&g_o.timeouts) +
                             atomic_load(&g_o.other),
                         n);
        assert_int_equal(atomic_load(&g_o.right), atomic_load(&g_o.ok));
        atomic_fetch_add(&total, n);
    }
    assert_int_equal(atomic_load(&total), N);
    rig_down(&r);
}

int main(int argc, char **argv)
{
    if (svc_transport_arg(argc, argv, &g_tr, "inproc|ipc|tcp") != 0) {
        return 2;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/aims_keep_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(keep_borrowed, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(keep_retry, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(keep_done_waits, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(keep_retry_beside_reader, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(keep_deadline_storm, ta_setup, ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "keep_req_%s", g_tr);
    const int rc = cmocka_run_group_tests_name(group, tests, NULL, NULL);
    rmdir(g_dir);
    return rc;
}
