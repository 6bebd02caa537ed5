/*
 * test_reject_fast.c -- a rejection is decided when the request arrives and
 * written at once, never after the worker (issue 11: "rejection p99 <= 5 ms";
 * docs/OVERLOAD.md, "Rejection latency").
 *
 * One node, one worker, a handler service (concurrency 1, queue_cap 1, not
 * inline) whose handler is held at a gate: call 1 runs and holds the worker,
 * call 2 waits in the queue, then more calls arrive. Each is refused
 * (AIMS_E_OVERLOADED "queue full ... retry after") and the refusal reaches
 * the caller while the handler is still held -- asserted on state (the gate
 * is still closed, the handler has not returned), not on time. Then the gate
 * opens and calls 1 and 2 complete OK. On inproc://, tcp:// and ipc://: over
 * the stream transports the decision and the reply happen on the node's I/O
 * thread, as the frame is read.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_echo.h"
#include "testalloc.h"

typedef struct bg_call {
    pthread_t th;
    aims_client *c;
    const char *addr;
    aims_status st;
} bg_call;

static aims_msg *small_req(void)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    const float x = 1.0f;
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, NULL, 0, &x, 0), AIMS_OK);
    return m;
}

static void *bg_main(void *arg)
{
    bg_call *b = arg;
    aims_msg *req = small_req();
    aims_msg *rep = NULL;
    b->st = aims_msg_create(&rep);
    if (b->st == AIMS_OK) {
        b->st = aims_client_call_addr(b->c, b->addr, "h", "m", req, rep, 60000);
    }
    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    return NULL;
}

static double stat_of(aims_service *s, aims_service_stat st)
{
    double v = -1.0;
    assert_int_equal(aims_service_get_stat(s, st, &v), AIMS_OK);
    return v;
}

static void wait_until(aims_service *s, aims_service_stat st, double want, const hctx *h)
{
    for (int i = 0; i < 60000; i++) { /* generous: a loaded machine, never a timing check */
        if (stat_of(s, st) >= want && (h == NULL || atomic_load(&h->entered) >= 1)) {
            return;
        }
        nap_ms(1);
    }
    fail_msg("service state not reached");
}

static void refused_while_held(const char *scheme)
{
    static int seq;
    char name[32], url[160], addr[160];
    snprintf(name, sizeof name, "rf%d", seq++);
    aims_node *n = NULL;
    aims_service *s = NULL;
    hctx h;
    memset(&h, 0, sizeof h);
    assert_int_equal(aims_node_create(name, &n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_WORKERS, 1), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_DRAIN_MS, 100), AIMS_OK);
    if (strcmp(scheme, "inproc") == 0) {
        snprintf(url, sizeof url, "inproc://%s", name);
    } else if (strcmp(scheme, "tcp") == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    } else {
        snprintf(url, sizeof url, "ipc:///tmp/aims-rf-%d-%s.sock", (int)getpid(), name);
    }
    assert_int_equal(aims_node_listen(n, url), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(n, 0, addr, sizeof addr, &len), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "h", echo_fn, &h, &s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, 1), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(s, AIMS_SERVICE_QUEUE_CAP, 1), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);

    aims_client *c = mk_client(NULL);
    aims_msg *req = small_req();
    aims_msg *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    /* One answered call first: the service now has a run-time estimate (so
     * admission by time is live, not only the queue cap). */
    atomic_store(&h.sleep_ms, 20);
    assert_int_equal(aims_client_call_addr(c, addr, "h", "m", req, rep, 60000), AIMS_OK);
    atomic_store(&h.sleep_ms, 0);
    atomic_store(&h.entered, 0);

    atomic_store(&h.gate_closed, 1);
    bg_call b1 = {.c = mk_client(NULL), .addr = addr};
    assert_int_equal(pthread_create(&b1.th, NULL, bg_main, &b1), 0);
    wait_until(s, AIMS_SERVICE_STAT_INFLIGHT, 1, &h); /* call 1 holds the worker */
    bg_call b2 = {.c = mk_client(NULL), .addr = addr};
    assert_int_equal(pthread_create(&b2.th, NULL, bg_main, &b2), 0);
    wait_until(s, AIMS_SERVICE_STAT_QUEUED, 1, NULL); /* call 2 queued: the queue is full */

    for (int i = 0; i < 20; i++) {
        const aims_status st = aims_client_call_addr(c, addr, "h", "m", req, rep, 60000);
        assert_int_equal(st, AIMS_E_OVERLOADED);
        assert_non_null(strstr(aims_client_errmsg(c), "retry after"));
        /* Refused while the handler is still held: nobody waited for the worker. */
        assert_int_equal(atomic_load(&h.gate_closed), 1);
        assert_int_equal(atomic_load(&h.calls), 1);
    }
    /* A deadline shorter than one run (~20 ms): refused too (by the node, or by
     * the client's own deadline on a slow machine), never run. */
    const aims_status st = aims_client_call_addr(c, addr, "h", "m", req, rep, 2);
    assert_true(st == AIMS_E_TIMEOUT || st == AIMS_E_OVERLOADED);
    assert_int_equal(atomic_load(&h.calls), 1);

    atomic_store(&h.gate_closed, 0);
    pthread_join(b1.th, NULL);
    pthread_join(b2.th, NULL);
    assert_int_equal(b1.st, AIMS_OK);
    assert_int_equal(b2.st, AIMS_OK);
    assert_int_equal(atomic_load(&h.calls), 3);

    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    aims_client_destroy(b1.c);
    aims_client_destroy(b2.c);
    aims_client_destroy(c);
    aims_node_destroy(n);
}

static void test_reject_at_arrival_inproc(void **state)
{
    (void)state;
    refused_while_held("inproc");
}

static void test_reject_at_arrival_tcp(void **state)
{
    (void)state;
    refused_while_held("tcp");
}

static void test_reject_at_arrival_ipc(void **state)
{
    (void)state;
    refused_while_held("ipc");
}

#define T(x) cmocka_unit_test_setup_teardown(x, ta_setup, ta_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_reject_at_arrival_inproc),
        T(test_reject_at_arrival_tcp),
        T(test_reject_at_arrival_ipc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
