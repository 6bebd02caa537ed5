/*
 * svc_echo.h -- what the svc tests share (test_client.c, test_svc_matrix.c):
 * the echo handler, which returns every request tensor plus an i32 "tag" that
 * says which instance answered and can be told to wait, hold at a gate or
 * fail; and the small client/message helpers around it (cmocka asserts: include
 * after cmocka.h). Header-only: each test program includes it once.
 */
#ifndef SVC_ECHO_H
#define SVC_ECHO_H

#include <stdatomic.h>
#include <time.h>

#include "aims/aims.h"
#include "core/aimsi_core.h"

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What a handler does, and what it saw. */
typedef struct hctx {
    atomic_int entered;            /* calls that reached the handler */
    atomic_int calls;              /* calls that got past the gate and the wait */
    int tag;                       /* written into the reply as i32 "tag" */
    _Atomic aims_status fail_with; /* return this (after counting) unless AIMS_OK */
    atomic_long sleep_ms;          /* wait this long in the handler */
    atomic_int gate_closed;        /* handlers spin (sleeping) while set */
} hctx;

static aims_status echo_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                           uint64_t deadline_ns)
{
    (void)method;
    (void)deadline_ns;
    hctx *h = user;
    atomic_fetch_add(&h->entered, 1);
    while (atomic_load(&h->gate_closed)) {
        nap_ms(1);
    }
    const long sleep_ms = atomic_load(&h->sleep_ms);
    if (sleep_ms > 0) {
        nap_ms(sleep_ms);
    }
    atomic_fetch_add(&h->calls, 1);
    const aims_status fail = atomic_load(&h->fail_with);
    if (fail != AIMS_OK) {
        aims_msg_set_error(reply, "told to fail");
        return fail;
    }
    for (size_t i = 0; i < aims_msg_num_tensors(req); i++) {
        const char *name;
        aims_dtype dt;
        size_t nd;
        const uint64_t *dims;
        const void *data;
        size_t bytes;
        AIMSI_TRY(aims_msg_get_tensor(req, i, &name, &dt, &nd, &dims, &data, &bytes));
        AIMSI_TRY(aims_msg_add(reply, name, dt, dims, nd, data, 0));
    }
    const int32_t tag = h->tag;
    return aims_msg_add(reply, "tag", AIMS_DT_I32, NULL, 0, &tag, 0);
}

/* ---- client and message helpers ---- */

/* Set by a suite that runs over tls://: every mk_client() dials with it. */
static aims_tls_config *g_client_tls;

static aims_client *mk_client(aims_registry *r)
{
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    if (g_client_tls != NULL) {
        assert_int_equal(aims_client_set_tls(c, g_client_tls), AIMS_OK);
    }
    if (r != NULL) {
        assert_int_equal(aims_client_set_registry(c, r), AIMS_OK);
    }
    return c;
}

static aims_msg *mk_msg(void)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    return m;
}

static inline aims_msg *mk_req(float x)
{
    aims_msg *m = mk_msg();
    const uint64_t dims[1] = {1};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dims, 1, &x, 0), AIMS_OK);
    return m;
}

static inline int reply_tag(const aims_msg *m)
{
    size_t idx = 0;
    if (aims_msg_find(m, "tag", &idx) != AIMS_OK) {
        return -1;
    }
    const void *data = NULL;
    assert_int_equal(aims_msg_get_tensor(m, idx, NULL, NULL, NULL, NULL, &data, NULL), AIMS_OK);
    int32_t t;
    memcpy(&t, data, sizeof t);
    return t;
}

#endif /* SVC_ECHO_H */
