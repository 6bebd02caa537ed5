/*
 * test_deadline_wire.c -- deadlines as "time left" (frame version 2,
 * docs/WIRE.md, src/svc/wire.c), run once per transport (argv[1]: inproc or
 * tcp; meson registers both):
 *   - a call with a 50 ms deadline queued behind a request that holds the
 *     only slot for longer is dropped by the node with AIMS_E_TIMEOUT when
 *     its turn comes (counted as rejected), never served late;
 *   - a handler that calls another service passes on what its own request
 *     has left (the callee's deadline is the caller's 300 ms, not the inner
 *     call's 10 s default), over the wire on tcp://;
 *   - tcp:// only, raw frames built with the codec: the deadline field is
 *     read as time left (5 s left is served; read as an absolute time it
 *     would be 1970), a queued raw request gets the node's own ERROR
 *     AIMS_E_TIMEOUT frame, and a version-1 request is answered in
 *     version 1 with AIMS_E_UNSUPPORTED.
 * No timing assertions: the tests count handler entries and the node's
 * rejections; the only bound checked is "the callee saw at most the 300 ms
 * its caller had, not 10 s".
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
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>

#include "aims/aims_cancel.h"
#include "codec/aimsi_frame.h"
#include "svc/transport/aimsi_transport.h"
#include "svc_echo.h"
#include "testalloc.h"
#include "tr_raw.h"

static const char *g_tr = "inproc";

static double stat_of(aims_service *s, aims_service_stat which)
{
    double v = 0;
    assert_int_equal(aims_service_get_stat(s, which, &v), AIMS_OK);
    return v;
}

/* Wait (bounded) until the service has rejected at least `want` requests. */
static void wait_rejected(aims_service *s, double want)
{
    for (int i = 0; i < 20000 && stat_of(s, AIMS_SERVICE_STAT_REJECTED) < want; i++) {
        nap_ms(1);
    }
    assert_true(stat_of(s, AIMS_SERVICE_STAT_REJECTED) >= want);
}

/* Wait (bounded) until the service has at least one request queued. */
static void wait_queued(aims_service *s)
{
    for (int i = 0; i < 20000 && stat_of(s, AIMS_SERVICE_STAT_QUEUED) < 1.0; i++) {
        nap_ms(1);
    }
    assert_true(stat_of(s, AIMS_SERVICE_STAT_QUEUED) >= 1.0);
}

/* ---- queued past its deadline: dropped by the node, not served late ----------------- */

static void test_queued_past_deadline_dropped(void **state)
{
    (void)state;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    hctx h;
    memset(&h, 0, sizeof h);
    atomic_store(&h.gate_closed, 1);
    svc_node1 nd;
    svc_node1_up(&nd, g_tr, "dw", reg, "slow", echo_fn, &h, 1); /* one slot */
    aims_client *c = mk_client(reg);
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    /* A holds the only slot (the work ahead) until well after B's 50 ms. */
    aims_call *a = NULL;
    assert_int_equal(aims_client_call_start(c, "slow", "m", req, 0, 20000, &a), AIMS_OK);
    svc_wait_count(&h.entered, 1);
    /* B: 50 ms. The caller stops waiting at its deadline ... */
    assert_int_equal(aims_client_call(c, "slow", "m", req, rep, 0, 50), AIMS_E_TIMEOUT);
    nap_ms(150); /* ... and the node's deadline for B (time left on arrival) passes too */
    const double rejected0 = stat_of(nd.s, AIMS_SERVICE_STAT_REJECTED);
    atomic_store(&h.gate_closed, 0); /* the work ahead ends: B's turn */
    assert_int_equal(aims_call_wait(a, rep), AIMS_OK);
    /* ... the node drops B with AIMS_E_TIMEOUT instead of serving it late. */
    wait_rejected(nd.s, rejected0 + 1.0);
    assert_int_equal(atomic_load(&h.entered), 1);
    /* A later call with time to spare is served. */
    assert_int_equal(aims_client_call(c, "slow", "m", req, rep, 0, 20000), AIMS_OK);
    assert_int_equal(atomic_load(&h.entered), 2);
    aims_call_destroy(a);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    aims_node_destroy(nd.n);
    aims_registry_destroy(reg);
}

/* ---- a handler's own calls get what its request has left --------------------------- */

typedef struct back_ctx {
    atomic_int calls;
    _Atomic uint64_t left_ns; /* the deadline the callee saw, as time left on entry */
} back_ctx;

static aims_status back_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                           uint64_t deadline_ns)
{
    (void)method;
    (void)req;
    back_ctx *b = user;
    const uint64_t now = aimsi_now_ns();
    atomic_store(&b->left_ns, deadline_ns > now ? deadline_ns - now : 0);
    atomic_fetch_add(&b->calls, 1);
    const int32_t one = 1;
    return aims_msg_add(reply, "ok", AIMS_DT_I32, NULL, 0, &one, 0);
}

typedef struct front_ctx {
    aims_client *c; /* the front's own client (resolves "back" in the registry) */
    _Atomic aims_status inner;
} front_ctx;

static aims_status front_fn(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                            uint64_t deadline_ns)
{
    (void)method;
    (void)deadline_ns;
    front_ctx *f = user;
    /* timeout 0: the client's default (10 s), capped by what this request has left */
    const aims_status st = aims_client_call(f->c, "back", "m", req, reply, 0, 0);
    atomic_store(&f->inner, st);
    return st;
}

static void test_handler_passes_on_what_is_left(void **state)
{
    (void)state;
    const uint64_t ms = 1000000u;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    back_ctx b;
    memset(&b, 0, sizeof b);
    front_ctx f;
    memset(&f, 0, sizeof f);
    f.c = mk_client(reg);
    svc_node1 back, front;
    svc_node1_up(&back, g_tr, "dw", reg, "back", back_fn, &b, 1);
    svc_node1_up(&front, g_tr, "dw", reg, "front", front_fn, &f, 1);
    aims_client *c = mk_client(reg);
    aims_msg *req = mk_req(2.0f), *rep = mk_msg();
    /* Control: called directly with the default timeout, back sees ~10 s. */
    assert_int_equal(aims_client_call(c, "back", "m", req, rep, 0, 0), AIMS_OK);
    assert_true(atomic_load(&b.left_ns) > 5000u * ms);
    /* Through front with 300 ms: back sees at most those 300 ms. */
    assert_int_equal(aims_client_call(c, "front", "m", req, rep, 0, 300), AIMS_OK);
    assert_int_equal(atomic_load(&f.inner), AIMS_OK);
    assert_int_equal(atomic_load(&b.calls), 2);
    const uint64_t left = atomic_load(&b.left_ns);
    print_message("deadline (%s): back saw %.1f ms left of the caller's 300 ms\n", g_tr,
                  (double)left / 1e6);
    assert_true(left > 0);
    assert_true(left <= 300u * ms);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    aims_node_destroy(front.n);
    aims_client_destroy(f.c);
    aims_node_destroy(back.n);
    aims_registry_destroy(reg);
}

/* ---- tcp://: raw frames ------------------------------------------------------------- */

static int raw_connect(const char *url)
{
    const int fd = tr_raw_connect(url);
    struct timeval tv = {30, 0}; /* a bound on every read below */
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    return fd;
}

static void raw_send_request(int fd, uint8_t version, uint64_t id, const char *service,
                             uint64_t deadline_field)
{
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof h);
    h.version = version;
    h.type = AIMSI_FRAME_REQUEST;
    h.request_id = id;
    h.deadline_ns = deadline_field;
    snprintf(h.service, sizeof h.service, "%s", service);
    snprintf(h.method, sizeof h.method, "m");
    const float x = 3.0f;
    const uint64_t dims[1] = {1};
    aimsi_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = AIMSI_DT_F32;
    t.ndim = 1;
    t.dims[0] = dims[0];
    snprintf(t.name, sizeof t.name, "x");
    t.data = &x;
    t.bytes = sizeof x;
    aimsi_buf b;
    aimsi_buf_init(&b);
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_OK);
    assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
    aimsi_buf_free(&b);
}

static void read_exact(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        const ssize_t r = read(fd, p + got, n - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
}

/* Read one frame; returns its decoded header fields through the pointers. */
static void raw_read(int fd, uint8_t *version, uint8_t *type, uint64_t *id, int32_t *status,
                     char *text, size_t cap)
{
    uint8_t *buf = malloc(1u << 16);
    assert_non_null(buf);
    read_exact(fd, buf, AIMSI_FRAME_HEADER);
    size_t total = 0;
    assert_int_equal(aimsi_frame_peek(buf, AIMSI_FRAME_HEADER, 1u << 16, &total), AIMS_OK);
    read_exact(fd, buf + AIMSI_FRAME_HEADER, total - AIMSI_FRAME_HEADER);
    aimsi_frame f;
    assert_int_equal(aimsi_frame_decode(buf, total, 1u << 16, &f), AIMS_OK);
    *version = f.hdr.version;
    *type = f.hdr.type;
    *id = f.hdr.request_id;
    *status = f.hdr.status;
    text[0] = '\0';
    if (f.message != NULL) {
        const size_t n = f.message_len < cap - 1 ? f.message_len : cap - 1;
        memcpy(text, f.message, n);
        text[n] = '\0';
    }
    aimsi_frame_release(&f);
    free(buf);
}

static void test_raw_frames(void **state)
{
    (void)state;
    if (strcmp(g_tr, "tcp") != 0) {
        skip();
    }
    const uint64_t ms = 1000000u;
    aims_registry *reg = NULL;
    assert_int_equal(aims_registry_create(&reg), AIMS_OK);
    hctx h;
    memset(&h, 0, sizeof h);
    svc_node1 nd;
    svc_node1_up(&nd, g_tr, "dw", reg, "raw", echo_fn, &h, 1);
    const int fd = raw_connect(nd.addr);
    uint8_t v = 0, type = 0;
    uint64_t id = 0;
    int32_t st = 0;
    char text[1100];
    /* 5 s left: served. (Read as absolute CLOCK_REALTIME it is 1970: refused.) */
    raw_send_request(fd, 0, 11, "raw", 5000u * ms);
    raw_read(fd, &v, &type, &id, &st, text, sizeof text);
    assert_int_equal(v, AIMSI_FRAME_VERSION);
    assert_int_equal(type, AIMSI_FRAME_REPLY);
    assert_int_equal(id, 11);
    assert_int_equal(atomic_load(&h.calls), 1);
    /* A version-1 request: refused in version 1, the connection stays up. */
    raw_send_request(fd, 1, 12, "raw", 5000u * ms);
    raw_read(fd, &v, &type, &id, &st, text, sizeof text);
    assert_int_equal(v, 1);
    assert_int_equal(type, AIMSI_FRAME_ERROR);
    assert_int_equal(id, 12);
    assert_int_equal(st, AIMS_E_UNSUPPORTED);
    assert_non_null(strstr(text, "version 1"));
    assert_int_equal(atomic_load(&h.entered), 1);
    /* 50 ms left, queued behind a held slot: the node's own ERROR AIMS_E_TIMEOUT. */
    atomic_store(&h.gate_closed, 1);
    aims_client *c = mk_client(reg);
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    aims_call *a = NULL;
    assert_int_equal(aims_client_call_start(c, "raw", "m", req, 0, 20000, &a), AIMS_OK);
    svc_wait_count(&h.entered, 2);
    raw_send_request(fd, 0, 13, "raw", 50u * ms);
    wait_queued(nd.s);
    nap_ms(150);
    atomic_store(&h.gate_closed, 0);
    raw_read(fd, &v, &type, &id, &st, text, sizeof text);
    assert_int_equal(type, AIMSI_FRAME_ERROR);
    assert_int_equal(id, 13);
    assert_int_equal(st, AIMS_E_TIMEOUT);
    print_message("raw (%s): node answered: %s\n", g_tr, text);
    assert_int_equal(aims_call_wait(a, rep), AIMS_OK);
    assert_int_equal(atomic_load(&h.entered), 2); /* 13 never ran */
    /* 1 ns left: past on arrival, refused at once. */
    raw_send_request(fd, 0, 14, "raw", 1);
    raw_read(fd, &v, &type, &id, &st, text, sizeof text);
    assert_int_equal(id, 14);
    assert_int_equal(st, AIMS_E_TIMEOUT);
    assert_int_equal(atomic_load(&h.entered), 2);
    close(fd);
    aims_call_destroy(a);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    aims_node_destroy(nd.n);
    aims_registry_destroy(reg);
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
        cmocka_unit_test_setup_teardown(test_queued_past_deadline_dropped, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_handler_passes_on_what_is_left, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_raw_frames, ta_setup, ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "deadline_wire_%s", g_tr);
    return cmocka_run_group_tests_name(group, tests, NULL, NULL);
}
