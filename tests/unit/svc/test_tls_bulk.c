/*
 * test_tls_bulk.c -- big frames over tls://, byte for byte: what tls.c's
 * record batching must keep (nb_write gathers the 16 KiB records of a write
 * into one buffer and sends them in batches; when the socket is full the
 * rest waits there and tls_writev reports one byte fewer, so the stream core
 * keeps the frame queued until EPOLLOUT).
 *
 *   sizes      one call at a time, frames from 1 byte to 4 MiB + 3 around
 *              the record (16 KiB) and batch (256 KiB) boundaries, echoed
 *              and compared byte for byte;
 *   full       a 16 MiB frame sent while the node does not read (its I/O
 *              thread is held in an inline handler by an earlier call): the
 *              socket fills, batched records wait (the held byte; counted by
 *              aimsi_tls_config_batch_waits), and everything arrives intact
 *              once the node reads again;
 *   window     24 async 1 MiB calls, 6 in flight on one connection (the
 *              P11b-stream path of bench_tls: the caller writes a big frame
 *              itself when nothing waits before it, else it queues for the
 *              client's I/O thread), every reply compared.
 *   read_ahead the receive side's read-ahead (nb_read: one recv of up to
 *              256 KiB serves many records): a 1 MiB echo uses it on both
 *              ends (aimsi_tls_config_ra_fills), then 80 small calls on the
 *              same connection (records served from the buffer, then the
 *              buffer given back after 64 short reads), then a 1 MiB + 5
 *              echo reads ahead again; every reply compared.
 *
 * The PKI is made at start by mkcerts.sh; waits are bounded, nothing is timed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "svc/transport/aimsi_transport.h"
#include "svc_echo.h"
#include "testalloc.h"
#include "tls_support.h"

static char g_dir[128];

/* ---- a node serving "echo" inline over tls://, in a local registry ------------------------ */

typedef struct bnode {
    aims_node *node;
    aims_service *svc;
    aims_registry *reg;
    aims_tls_config *cfg;
    hctx h;
    char addr[AIMSI_URL_MAX + 1];
} bnode;

static void bnode_start(bnode *b)
{
    memset(b, 0, sizeof *b);
    b->h.tag = 7;
    b->cfg = tls_cfg(g_dir, "node");
    assert_non_null(b->cfg);
    assert_int_equal(aims_node_create("bulk", &b->node), AIMS_OK);
    assert_int_equal(aims_node_set_tls(b->node, b->cfg), AIMS_OK);
    assert_int_equal(aims_node_listen(b->node, "tls://127.0.0.1:0"), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(b->node, 0, b->addr, sizeof b->addr, &len), AIMS_OK);
    assert_int_equal(aims_service_add_handler(b->node, "echo", echo_fn, &b->h, &b->svc),
                     AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(b->svc, AIMS_SERVICE_INLINE, 1), AIMS_OK);
    assert_int_equal(aims_service_start(b->svc), AIMS_OK);
    aims_instance id;
    assert_int_equal(aims_registry_create(&b->reg), AIMS_OK);
    assert_int_equal(aims_registry_register(b->reg, "echo", b->addr, 1, 3600000, &id), AIMS_OK);
}

static void bnode_stop(bnode *b)
{
    aims_node_destroy(b->node);
    aims_registry_destroy(b->reg);
    aims_tls_config_destroy(b->cfg);
}

/* A client of b's registry dialing with *cfg (kept for its counters). */
static aims_client *bulk_client(const bnode *b, aims_tls_config **cfg)
{
    *cfg = tls_cfg(g_dir, "client");
    assert_non_null(*cfg);
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_client_set_tls(c, *cfg), AIMS_OK);
    assert_int_equal(aims_client_set_registry(c, b->reg), AIMS_OK);
    return c;
}

/* ---- payloads ------------------------------------------------------------------------------ */

static uint8_t pattern(size_t i, unsigned seed)
{
    return (uint8_t)((i * 131u + seed * 7919u) ^ (i >> 13));
}

static aims_msg *big_req(size_t n, unsigned seed)
{
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++) {
        buf[i] = pattern(i, seed);
    }
    aims_msg *m = mk_msg();
    const uint64_t dims[1] = {n};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_U8, dims, 1, buf, 0), AIMS_OK);
    free(buf);
    return m;
}

/* 1 when the reply's "x" is the n bytes of pattern `seed`. */
static int reply_ok(const aims_msg *rep, size_t n, unsigned seed)
{
    size_t idx = 0;
    const void *data = NULL;
    size_t bytes = 0;
    if (rep == NULL || aims_msg_find(rep, "x", &idx) != AIMS_OK ||
        aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &data, &bytes) != AIMS_OK ||
        bytes != n) {
        return 0;
    }
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != pattern(i, seed)) {
            fprintf(stderr, "byte %zu of %zu differs (seed %u)\n", i, n, seed);
            return 0;
        }
    }
    return 1;
}

/* ---- async calls ------------------------------------------------------------------------------ */

typedef struct acall {
    size_t n;
    unsigned seed;
    atomic_int done;
    atomic_int ok;
} acall;

typedef struct agroup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
} agroup;

static agroup g_grp = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void on_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    acall *a = user;
    if (status != AIMS_OK) {
        fprintf(stderr, "call of %zu bytes failed: %s\n", a->n, error != NULL ? error : "");
    }
    atomic_store(&a->ok, status == AIMS_OK && reply_ok(reply, a->n, a->seed));
    pthread_mutex_lock(&g_grp.mu);
    atomic_store(&a->done, 1);
    g_grp.inflight--;
    pthread_cond_broadcast(&g_grp.cv);
    pthread_mutex_unlock(&g_grp.mu);
}

static void start(aims_client *c, acall *a, const aims_msg *req)
{
    pthread_mutex_lock(&g_grp.mu);
    g_grp.inflight++;
    pthread_mutex_unlock(&g_grp.mu);
    (void)aims_client_call_async(c, "echo", "m", req, 0, 120000, on_done, a);
}

/* Wait (bounded by the calls' own deadlines) until at most `left` calls are in flight. */
static void wait_inflight(int left)
{
    pthread_mutex_lock(&g_grp.mu);
    while (g_grp.inflight > left) {
        pthread_cond_wait(&g_grp.cv, &g_grp.mu);
    }
    pthread_mutex_unlock(&g_grp.mu);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_tls_bulk_sizes(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 16383, 16384, 16385, 65541, 262144, 262145, 300001,
                                   (size_t)1 << 20, ((size_t)4 << 20) + 3};
    bnode b;
    bnode_start(&b);
    aims_tls_config *ccfg = NULL;
    aims_client *c = bulk_client(&b, &ccfg);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        aims_msg *req = big_req(sizes[k], (unsigned)k), *rep = mk_msg();
        assert_int_equal(aims_client_call_addr(c, b.addr, "echo", "m", req, rep, 60000), AIMS_OK);
        assert_true(reply_ok(rep, sizes[k], (unsigned)k));
        assert_int_equal(reply_tag(rep), 7);
        aims_msg_destroy(req);
        aims_msg_destroy(rep);
    }
    aims_client_destroy(c);
    aims_tls_config_destroy(ccfg);
    bnode_stop(&b);
}

static void test_tls_bulk_full_socket(void **state)
{
    (void)state;
    bnode b;
    bnode_start(&b);
    aims_tls_config *ccfg = NULL;
    aims_client *c = bulk_client(&b, &ccfg);
    const uint64_t waits0 = aimsi_tls_config_batch_waits(ccfg);
    /* Call A holds the node's I/O thread (inline handler at a closed gate),
     * so nobody reads B: B's 16 MiB cannot all fit in the socket buffers. */
    atomic_store(&b.h.gate_closed, 1);
    acall a = {16, 1, 0, 0}, bb = {(size_t)16 << 20, 2, 0, 0};
    aims_msg *ra = big_req(a.n, a.seed), *rb = big_req(bb.n, bb.seed);
    start(c, &a, ra);
    for (int i = 0; i < 3000 && atomic_load(&b.h.entered) < 1; i++) {
        nap_ms(10);
    }
    assert_int_equal(atomic_load(&b.h.entered), 1);
    start(c, &bb, rb);
    for (int i = 0; i < 3000 && aimsi_tls_config_batch_waits(ccfg) == waits0; i++) {
        nap_ms(10);
    }
    const uint64_t waits = aimsi_tls_config_batch_waits(ccfg) - waits0;
    print_message("batched writes that waited for a full socket: %llu\n",
                  (unsigned long long)waits);
    atomic_store(&b.h.gate_closed, 0);
    wait_inflight(0);
    assert_true(waits >= 1);
    assert_true(atomic_load(&a.ok));
    assert_true(atomic_load(&bb.ok));
    aims_msg_destroy(ra);
    aims_msg_destroy(rb);
    aims_client_destroy(c);
    aims_tls_config_destroy(ccfg);
    bnode_stop(&b);
}

static void test_tls_bulk_window(void **state)
{
    (void)state;
    enum { CALLS = 24, WINDOW = 6 };
    bnode b;
    bnode_start(&b);
    aims_tls_config *ccfg = NULL;
    aims_client *c = bulk_client(&b, &ccfg);
    static acall calls[CALLS];
    aims_msg *req[3];
    for (unsigned s = 0; s < 3; s++) {
        req[s] = big_req(((size_t)1 << 20) + s * 4099u, 10u + s);
    }
    for (int k = 0; k < CALLS; k++) {
        wait_inflight(WINDOW - 1);
        calls[k].n = ((size_t)1 << 20) + (size_t)(k % 3) * 4099u;
        calls[k].seed = 10u + (unsigned)(k % 3);
        atomic_store(&calls[k].done, 0);
        atomic_store(&calls[k].ok, 0);
        start(c, &calls[k], req[k % 3]);
    }
    wait_inflight(0);
    for (int k = 0; k < CALLS; k++) {
        assert_true(atomic_load(&calls[k].done));
        assert_true(atomic_load(&calls[k].ok));
    }
    for (unsigned s = 0; s < 3; s++) {
        aims_msg_destroy(req[s]);
    }
    aims_client_destroy(c);
    aims_tls_config_destroy(ccfg);
    bnode_stop(&b);
}

static void echo_check(aims_client *c, const bnode *b, size_t n, unsigned seed)
{
    aims_msg *req = big_req(n, seed), *rep = mk_msg();
    assert_int_equal(aims_client_call_addr(c, b->addr, "echo", "m", req, rep, 60000), AIMS_OK);
    assert_true(reply_ok(rep, n, seed));
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
}

static void test_tls_bulk_read_ahead(void **state)
{
    (void)state;
    bnode b;
    bnode_start(&b);
    aims_tls_config *ccfg = NULL;
    aims_client *c = bulk_client(&b, &ccfg);
    echo_check(c, &b, 100, 1); /* connected: the handshake never reads ahead */
    const uint64_t n0 = aimsi_tls_config_ra_fills(b.cfg), c0 = aimsi_tls_config_ra_fills(ccfg);
    echo_check(c, &b, (size_t)1 << 20, 2);
    const uint64_t n1 = aimsi_tls_config_ra_fills(b.cfg), c1 = aimsi_tls_config_ra_fills(ccfg);
    print_message("read-ahead recvs for one 1 MiB echo: node %llu, client %llu\n",
                  (unsigned long long)(n1 - n0), (unsigned long long)(c1 - c0));
    assert_true(n1 > n0); /* the node read the request ahead */
    assert_true(c1 > c0); /* the client read the reply ahead */
    for (unsigned k = 0; k < 80; k++) {
        echo_check(c, &b, 1 + (size_t)k * 97u, 100u + k);
    }
    const uint64_t n2 = aimsi_tls_config_ra_fills(b.cfg);
    echo_check(c, &b, ((size_t)1 << 20) + 5, 3);
    assert_true(aimsi_tls_config_ra_fills(b.cfg) > n2); /* made again for the big frame */
    aims_client_destroy(c);
    aims_tls_config_destroy(ccfg);
    bnode_stop(&b);
}

int main(void)
{
    if (tls_temp_pki(g_dir, sizeof g_dir, "tlsbulk") != 0) {
        return 1;
    }
    ta_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls_bulk_sizes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_bulk_full_socket, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_bulk_window, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_bulk_read_ahead, ta_setup, ta_teardown),
    };
    const int rc = cmocka_run_group_tests_name("tls_bulk", tests, NULL, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    const int sr = system(cmd);
    (void)sr;
    return rc;
}
