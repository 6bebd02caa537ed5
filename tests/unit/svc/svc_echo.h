/*
 * svc_echo.h -- what the svc tests share (test_client.c, test_svc_matrix.c,
 * test_pipe.c, test_cancel_race.c, ...): the echo handler, which returns every
 * request tensor plus an i32 "tag" that says which instance answered and can
 * be told to wait, hold at a gate or fail; the small client/message helpers
 * around it; and the fixtures several tests built for themselves: one node
 * serving echo_fn in a local registry with a client of that registry
 * (svc_rig), a node serving one handler (svc_node1) and a node hosting a
 * registry (svc_host). The transport under
 * test (main()'s argument, a node's listen URL) is svc_tr.h's, included here.
 *
 * cmocka asserts: include after cmocka.h. Header-only, every function
 * `static inline` so a test that uses only part of it compiles without
 * unused-function warnings (clang -Werror).
 */
#ifndef SVC_ECHO_H
#define SVC_ECHO_H

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aims/aims.h"
#include "core/aimsi_core.h"
#include "svc/transport/aimsi_transport.h"
#include "svc_tr.h"

static inline void nap_ms(long ms)
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

/* Copy every tensor of req into reply, in order (the echo of the handlers). */
static inline aims_status echo_tensors(const aims_msg *req, aims_msg *reply)
{
    for (size_t i = 0; i < aims_msg_num_tensors(req); i++) {
        const char *name;
        aims_dtype dt;
        size_t nd;
        const uint64_t *dims;
        const void *data;
        AIMSI_TRY(aims_msg_get_tensor(req, i, &name, &dt, &nd, &dims, &data, NULL));
        AIMSI_TRY(aims_msg_add(reply, name, dt, dims, nd, data, 0));
    }
    return AIMS_OK;
}

static inline aims_status echo_fn(void *user, const char *method, const aims_msg *req,
                                  aims_msg *reply, uint64_t deadline_ns)
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
    AIMSI_TRY(echo_tensors(req, reply));
    const int32_t tag = h->tag;
    return aims_msg_add(reply, "tag", AIMS_DT_I32, NULL, 0, &tag, 0);
}

/* ---- client and message helpers ---- */

/* Set by a suite that runs over tls://: every mk_client() dials with it. */
static aims_tls_config *g_client_tls;

static inline aims_client *mk_client(aims_registry *r)
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

static inline aims_msg *mk_msg(void)
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

/* Whether reply's f32 "x" holds n floats with x[k] == base + k (every 97th k
 * checked): the ramp a test wrote into its request, echoed back. */
static inline int reply_is_ramp(const aims_msg *reply, size_t n, float base)
{
    size_t idx = 0;
    const void *data = NULL;
    size_t bytes = 0;
    int right = aims_msg_find(reply, "x", &idx) == AIMS_OK &&
                aims_msg_get_tensor(reply, idx, NULL, NULL, NULL, NULL, &data, &bytes) ==
                    AIMS_OK &&
                bytes == n * sizeof(float);
    for (size_t k = 0; right && k < n; k += 97) {
        float v;
        memcpy(&v, (const char *)data + k * sizeof v, sizeof v);
        right = v == base + (float)k;
    }
    return right;
}

/* ---- fixtures: a node on the transport under test (svc_tr.h: its URL) ---- */

/* One node serving echo_fn (with h) as `service` over transport tr,
 * registered in a local registry, and a client of that registry; queues of
 * 1 << 14 on both sides, so bursts of async calls are not shed by size. */
typedef struct svc_rig {
    aims_registry *reg;
    aims_node *node;
    aims_service *svc;
    hctx h;
    aims_client *c;
} svc_rig;

/* Node names are prefix<n>_<tr> (n counts rigs in this process); an ipc://
 * socket goes to dir. inline_run sets AIMS_SERVICE_INLINE. */
static inline void svc_rig_up(svc_rig *r, const char *tr, const char *dir, const char *prefix,
                              const char *service, int inline_run)
{
    static atomic_int seq;
    memset(r, 0, sizeof *r);
    char name[64], url[AIMSI_URL_MAX + 1];
    snprintf(name, sizeof name, "%s%d_%s", prefix, atomic_fetch_add(&seq, 1), tr);
    svc_listen_url(url, sizeof url, tr, dir, name);
    assert_int_equal(aims_registry_create(&r->reg), AIMS_OK);
    assert_int_equal(aims_node_create(name, &r->node), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(r->node, AIMS_NODE_HEARTBEAT_MS, 250), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(r->node, AIMS_NODE_DRAIN_GRACE_MS, 30), AIMS_OK);
    assert_int_equal(aims_node_listen(r->node, url), AIMS_OK);
    assert_int_equal(aims_node_set_registry(r->node, r->reg), AIMS_OK);
    assert_int_equal(aims_service_add_handler(r->node, service, echo_fn, &r->h, &r->svc),
                     AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(r->svc, AIMS_SERVICE_INLINE, inline_run), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(r->svc, AIMS_SERVICE_QUEUE_CAP, 1 << 14), AIMS_OK);
    assert_int_equal(aims_service_start(r->svc), AIMS_OK);
    r->c = mk_client(r->reg);
    assert_int_equal(aims_client_set_param_i64(r->c, AIMS_CLIENT_MAX_PENDING, 1 << 14), AIMS_OK);
}

static inline void svc_rig_down(svc_rig *r)
{
    aims_client_destroy(r->c);
    aims_node_destroy(r->node);
    aims_registry_destroy(r->reg);
    memset(r, 0, sizeof *r);
}

/* One node serving one handler on the transport under test, as the tests
 * that bring up several of them each wrote it (test_cancel, test_deadline_wire,
 * test_hedge_async): named prefix<n>_<tr>, heartbeat 250 ms, drain grace
 * 30 ms, registered in reg (when not NULL), workers only (AIMS_SERVICE_INLINE
 * 0: a handler run inline on the tcp I/O thread would keep that thread, and
 * a CANCEL frame behind it, waiting); concurrency > 0 sets
 * AIMS_SERVICE_CONCURRENCY. addr: its first address. aims_node_destroy(n)
 * takes it down. */
typedef struct svc_node1 {
    aims_node *n;
    aims_service *s;
    char addr[AIMSI_URL_MAX + 1];
} svc_node1;

static inline void svc_node1_up(svc_node1 *nd, const char *tr, const char *prefix,
                                aims_registry *reg, const char *service, aims_handler_fn fn,
                                void *user, int64_t concurrency)
{
    static atomic_int seq;
    char name[64], url[AIMSI_URL_MAX + 1];
    snprintf(name, sizeof name, "%s%d_%s", prefix, atomic_fetch_add(&seq, 1), tr);
    svc_listen_url(url, sizeof url, tr, NULL, name);
    assert_int_equal(aims_node_create(name, &nd->n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(nd->n, AIMS_NODE_HEARTBEAT_MS, 250), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(nd->n, AIMS_NODE_DRAIN_GRACE_MS, 30), AIMS_OK);
    assert_int_equal(aims_node_listen(nd->n, url), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(nd->n, 0, nd->addr, sizeof nd->addr, &len), AIMS_OK);
    if (reg != NULL) {
        assert_int_equal(aims_node_set_registry(nd->n, reg), AIMS_OK);
    }
    assert_int_equal(aims_service_add_handler(nd->n, service, fn, user, &nd->s), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(nd->s, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    if (concurrency > 0) {
        assert_int_equal(aims_service_set_param_i64(nd->s, AIMS_SERVICE_CONCURRENCY, concurrency),
                         AIMS_OK);
    }
    assert_int_equal(aims_service_start(nd->s), AIMS_OK);
}

/* Wait (bounded: 20 s) until *v >= want; asserts it got there. */
static inline void svc_wait_count(atomic_int *v, int want)
{
    for (int i = 0; i < 20000 && atomic_load(v) < want; i++) {
        nap_ms(1);
    }
    assert_true(atomic_load(v) >= want);
}

/* Sum of a client counter over its label sets (from its Prometheus text). */
static inline long svc_client_counter(aims_client *c, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(aims_metrics_prometheus(aims_client_metrics(c), &text, &len), AIMS_OK);
    long sum = 0;
    const size_t nl = strlen(name);
    for (const char *p = text; (p = strstr(p, name)) != NULL; p += nl) {
        if ((p == text || p[-1] == '\n') && (p[nl] == '{' || p[nl] == ' ')) {
            const char *sp = strchr(p, ' ');
            sum += sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
        }
    }
    aims_free(text);
    return sum;
}

/* A node ("reghost") hosting a fresh registry at `listen`; url is its first
 * address, for clients that join the registry by URL. */
typedef struct svc_host {
    aims_registry *r;
    aims_node *node;
    char url[300];
} svc_host;

static inline void svc_host_start(svc_host *h, const char *listen)
{
    memset(h, 0, sizeof(*h));
    assert_int_equal(aims_registry_create(&h->r), AIMS_OK);
    assert_int_equal(aims_node_create("reghost", &h->node), AIMS_OK);
    assert_int_equal(aims_node_listen(h->node, listen), AIMS_OK);
    assert_int_equal(aims_node_host_registry(h->node, h->r), AIMS_OK);
    assert_int_equal(aims_node_get_address(h->node, 0, h->url, sizeof(h->url), NULL), AIMS_OK);
}

static inline void svc_host_stop(svc_host *h)
{
    aims_node_destroy(h->node);
    aims_registry_destroy(h->r);
    memset(h, 0, sizeof(*h));
}

#endif /* SVC_ECHO_H */
