/*
 * test_msg.c -- white-box tests of src/svc/msg.c and wire.c: building
 * messages (copy, borrow, alloc), lookups, validation, error texts, the
 * frame round trip (views -> encode -> decode -> adopt), copy/move, the
 * deadline clock conversion and allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "svc/aimsi_msg.h"
#include "svc/aimsi_wire.h"
#include "testalloc.h"

static aims_msg *mk(void)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    return m;
}

static void test_add_get_find(void **state)
{
    (void)state;
    aims_msg *m = mk();
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const uint64_t dims[2] = {2, 3};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dims, 2, x, 0), AIMS_OK);
    const int64_t k = 7;
    assert_int_equal(aims_msg_add(m, "k", AIMS_DT_I64, NULL, 0, &k, AIMS_MSG_BORROW), AIMS_OK);
    assert_int_equal(aims_msg_num_tensors(m), 2);

    size_t idx = 99;
    assert_int_equal(aims_msg_find(m, "k", &idx), AIMS_OK);
    assert_int_equal(idx, 1);
    assert_int_equal(aims_msg_find(m, "nope", &idx), AIMS_E_NOTFOUND);

    const char *name;
    aims_dtype dt;
    size_t ndim, bytes;
    const uint64_t *d;
    const void *data;
    assert_int_equal(aims_msg_get_tensor(m, 0, &name, &dt, &ndim, &d, &data, &bytes), AIMS_OK);
    assert_string_equal(name, "x");
    assert_int_equal(dt, AIMS_DT_F32);
    assert_int_equal(ndim, 2);
    assert_int_equal(d[1], 3);
    assert_int_equal(bytes, sizeof(x));
    assert_true(data != (const void *)x); /* copied */
    assert_memory_equal(data, x, sizeof(x));
    assert_int_equal(aims_msg_get_tensor(m, 1, NULL, NULL, NULL, NULL, &data, &bytes), AIMS_OK);
    assert_ptr_equal(data, &k); /* borrowed */
    assert_int_equal(bytes, 8);
    assert_int_equal(aims_msg_get_tensor(m, 2, NULL, NULL, NULL, NULL, NULL, NULL), AIMS_E_RANGE);

    aims_msg_clear(m);
    assert_int_equal(aims_msg_num_tensors(m), 0);
    aims_msg_destroy(m);
}

static void test_validation(void **state)
{
    (void)state;
    aims_msg *m = mk();
    const uint64_t dims[5] = {1, 1, 1, 1, 1};
    const float v = 1;
    char longname[80];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    assert_int_equal(aims_msg_add(m, "", AIMS_DT_F32, dims, 1, &v, 0), AIMS_E_INVAL);
    assert_int_equal(aims_msg_add(m, longname, AIMS_DT_F32, dims, 1, &v, 0), AIMS_E_INVAL);
    assert_int_equal(aims_msg_add(m, "a", (aims_dtype)9, dims, 1, &v, 0), AIMS_E_INVAL);
    assert_int_equal(aims_msg_add(m, "a", AIMS_DT_F32, dims, 5, &v, 0), AIMS_E_INVAL);
    assert_int_equal(aims_msg_add(m, "a", AIMS_DT_F32, dims, 1, NULL, 0), AIMS_E_MISUSE);
    assert_int_equal(aims_msg_add(m, "a", AIMS_DT_F32, dims, 1, &v, 8u), AIMS_E_INVAL);
    const uint64_t huge[2] = {UINT64_MAX / 2, 4};
    assert_int_equal(aims_msg_add(m, "a", AIMS_DT_F32, huge, 2, &v, AIMS_MSG_BORROW),
                     AIMS_E_RANGE);
    assert_int_equal(aims_msg_add(m, "a", AIMS_DT_F32, dims, 1, &v, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "a", AIMS_DT_F32, dims, 1, &v, 0), AIMS_E_INVAL);
    for (int i = 1; i < AIMS_MSG_MAX_TENSORS; i++) {
        char nm[16];
        snprintf(nm, sizeof(nm), "t%d", i);
        assert_int_equal(aims_msg_add(m, nm, AIMS_DT_U8, NULL, 0, &v, AIMS_MSG_BORROW), AIMS_OK);
    }
    assert_int_equal(aims_msg_add(m, "z", AIMS_DT_U8, NULL, 0, &v, 0), AIMS_E_RANGE);
    assert_int_equal(aims_msg_num_tensors(m), AIMS_MSG_MAX_TENSORS);
    assert_int_equal(aims_msg_add(NULL, "z", AIMS_DT_U8, NULL, 0, &v, 0), AIMS_E_MISUSE);
    assert_int_equal(aims_msg_num_tensors(NULL), 0);
    aims_msg_destroy(m);
    aims_msg_destroy(NULL);
}

static void test_alloc_aligned(void **state)
{
    (void)state;
    aims_msg *m = mk();
    const uint64_t dims[1] = {100};
    void *p = NULL;
    assert_int_equal(aims_msg_alloc(m, "y", AIMS_DT_F32, dims, 1, &p), AIMS_OK);
    assert_int_equal((uintptr_t)p % 64, 0);
    const float *f = p;
    assert_true(f[0] == 0.0f && f[99] == 0.0f);
    ((float *)p)[5] = 3.5f;
    const void *data;
    assert_int_equal(aims_msg_get_tensor(m, 0, NULL, NULL, NULL, NULL, &data, NULL), AIMS_OK);
    assert_ptr_equal(data, p);
    aims_msg_destroy(m);
}

static void test_error_text(void **state)
{
    (void)state;
    aims_msg *m = mk();
    assert_string_equal(aims_msg_error(m), "");
    assert_int_equal(aims_msg_set_error(m, "bad input: ü"), AIMS_OK);
    assert_string_equal(aims_msg_error(m), "bad input: ü");
    assert_int_equal(aims_msg_set_error(m, "\xc3\x28"), AIMS_E_INVAL);
    assert_int_equal(aims_msg_set_error(m, "\xed\xa0\x80"), AIMS_E_INVAL); /* surrogate */
    assert_string_equal(aims_msg_error(m), "bad input: ü");
    char big[3000];
    for (size_t i = 0; i + 2 < sizeof(big); i += 2) {
        big[i] = (char)0xc3;
        big[i + 1] = (char)0xa9;
    }
    big[sizeof(big) - 2] = 'x';
    big[sizeof(big) - 1] = 0;
    assert_int_equal(aims_msg_set_error(m, big), AIMS_OK);
    assert_true(strlen(aims_msg_error(m)) <= AIMSI_MSG_MAX_ERROR);
    assert_int_equal(strlen(aims_msg_error(m)) % 2, 0); /* not cut inside a character */
    aims_msg_clear(m);
    assert_string_equal(aims_msg_error(m), "");
    aims_msg_destroy(m);
}

static void test_frame_round_trip(void **state)
{
    (void)state;
    aims_msg *m = mk();
    float x[300];
    for (int i = 0; i < 300; i++) {
        x[i] = (float)i * 0.5f;
    }
    const uint64_t dims[2] = {100, 3};
    const int32_t ids[3] = {4, 5, 6};
    const uint64_t d3[1] = {3};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dims, 2, x, AIMS_MSG_BORROW), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "ids", AIMS_DT_I32, d3, 1, ids, 0), AIMS_OK);

    aimsi_tensor views[AIMS_MSG_MAX_TENSORS];
    const size_t n = aimsi_msg_views(m, views);
    assert_int_equal(n, 2);
    aimsi_frame_hdr hdr;
    memset(&hdr, 0, sizeof(hdr));
    hdr.type = AIMSI_FRAME_REPLY;
    hdr.request_id = 42;
    strcpy(hdr.service, "infer");
    strcpy(hdr.method, "predict");
    aimsi_buf out;
    aimsi_buf_init(&out);
    assert_int_equal(aimsi_frame_encode(&hdr, views, n, NULL, 64, &out), AIMS_OK);
    size_t len = 0;
    void *bytes = aimsi_buf_take(&out, &len);

    aimsi_frame *f = aimsi_calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(aimsi_frame_decode(bytes, len, 1u << 20, f), AIMS_OK);
    aims_msg *r = mk();
    assert_int_equal(aimsi_msg_adopt_frame(r, bytes, f), AIMS_OK);
    assert_int_equal(aims_msg_num_tensors(r), 2);
    const void *data;
    size_t nb;
    assert_int_equal(aims_msg_get_tensor(r, 0, NULL, NULL, NULL, NULL, &data, &nb), AIMS_OK);
    assert_int_equal(nb, sizeof(x));
    assert_memory_equal(data, x, sizeof(x));

    /* copy then move keep the data and leave the source usable/empty */
    aims_msg *c = mk();
    assert_int_equal(aimsi_msg_copy(c, r), AIMS_OK);
    aims_msg_destroy(r);
    aims_msg *mv = mk();
    aimsi_msg_move(mv, c);
    assert_int_equal(aims_msg_num_tensors(c), 0);
    assert_int_equal(aims_msg_get_tensor(mv, 1, NULL, NULL, NULL, NULL, &data, &nb), AIMS_OK);
    assert_memory_equal(data, ids, sizeof(ids));
    aims_msg_destroy(c);
    aims_msg_destroy(mv);
    aims_msg_destroy(m);
}

static void test_deadline_clock(void **state)
{
    (void)state;
    assert_int_equal(aimsi_deadline_to_wire(0), 0);
    assert_int_equal(aimsi_deadline_from_wire(0), 0);
    const uint64_t now = aimsi_now_ns();
    const uint64_t d = now + 5000000000ull;
    const uint64_t back = aimsi_deadline_from_wire(aimsi_deadline_to_wire(d));
    assert_true(back >= d); /* time left is re-anchored later, never earlier */
    assert_true(back - d < 100000000ull); /* the same deadline within 0.1 s of clock reads */
    assert_true(aimsi_deadline_from_wire(1) != 0); /* past stays past, never "none" */
    assert_true(aimsi_deadline_from_wire(1) <= aimsi_now_ns());
}

/* The pure pair behind it (wire.c): time left at the sender, re-anchored on
 * the receiver's own monotonic clock, whatever either host's realtime says. */
static void test_deadline_encode_decode(void **state)
{
    (void)state;
    const uint64_t ms = 1000000u;
    /* none stays none */
    assert_int_equal(aimsi_deadline_encode(0, 777), 0);
    assert_int_equal(aimsi_deadline_decode(0, 777), 0);
    /* 50 ms left at the sender (its clock at 10 s) ... */
    const uint64_t left = aimsi_deadline_encode(10000 * ms + 50 * ms, 10000 * ms);
    assert_true(left == 50 * ms);
    /* ... is 50 ms from arrival on a receiver whose clock reads anything */
    assert_true(aimsi_deadline_decode(left, 3 * ms) == 53 * ms);
    assert_true(aimsi_deadline_decode(left, 987654321000ull) == 987654321000ull + 50 * ms);
    /* a deadline already past (or exactly now) goes out as 1 ns: past on arrival */
    assert_int_equal(aimsi_deadline_encode(5 * ms, 9 * ms), 1);
    assert_int_equal(aimsi_deadline_encode(9 * ms, 9 * ms), 1);
    /* ... and is decoded as an instant always past (not now + 1 ns: a node's
     * now for a frame is its read burst's clock, which may be early) */
    assert_true(aimsi_deadline_decode(1, 9 * ms) == 1);
    assert_true(aimsi_deadline_decode(2, 9 * ms) == 9 * ms + 2);
    /* a huge budget saturates instead of wrapping into the past */
    assert_true(aimsi_deadline_decode(UINT64_MAX - 5, 100) == UINT64_MAX);
    assert_true(aimsi_deadline_encode(UINT64_MAX, 0) == UINT64_MAX);
}

/* A running handler's deadline caps the calls it makes (aimsi_deadline_cap). */
static void test_deadline_ambient(void **state)
{
    (void)state;
    assert_true(aimsi_deadline_cap(500) == 500); /* no handler: unchanged */
    assert_true(aimsi_deadline_cap(0) == 0);
    const uint64_t prev = aimsi_deadline_enter(300);
    assert_int_equal(prev, 0);
    assert_true(aimsi_deadline_cap(500) == 300); /* what the request has left */
    assert_true(aimsi_deadline_cap(200) == 200); /* a shorter own timeout wins */
    assert_true(aimsi_deadline_cap(0) == 300);
    const uint64_t inner = aimsi_deadline_enter(0); /* a nested handler without one */
    assert_true(inner == 300);
    assert_true(aimsi_deadline_cap(500) == 500);
    aimsi_deadline_leave(inner);
    assert_true(aimsi_deadline_cap(500) == 300);
    aimsi_deadline_leave(prev);
    assert_true(aimsi_deadline_cap(500) == 500);
}

/* An old (version 1) request is answered in version 1: AIMS_E_UNSUPPORTED. */
static void test_refuse_v1(void **state)
{
    (void)state;
    aimsi_frame_hdr req;
    memset(&req, 0, sizeof req);
    req.version = 1;
    req.type = AIMSI_FRAME_REQUEST;
    req.request_id = 42;
    req.deadline_ns = 1700000000000000000ull; /* an absolute realtime deadline */
    strcpy(req.service, "svc");
    aimsi_buf b;
    aimsi_buf_init(&b);
    assert_int_equal(aimsi_wire_refuse_v1(&req, "n1", &b), AIMS_OK);
    assert_int_equal(((const uint8_t *)b.data)[4], 1);
    aimsi_frame f;
    assert_int_equal(aimsi_frame_decode(b.data, b.len, 1u << 20, &f), AIMS_OK);
    assert_int_equal(f.hdr.version, 1);
    assert_int_equal(f.hdr.type, AIMSI_FRAME_ERROR);
    assert_true(f.hdr.request_id == 42);
    assert_int_equal(f.hdr.status, AIMS_E_UNSUPPORTED);
    assert_int_equal(f.hdr.deadline_ns, 0);
    char text[400];
    assert_true(f.message_len < sizeof text);
    memcpy(text, f.message, f.message_len);
    text[f.message_len] = '\0';
    assert_non_null(strstr(text, "version 1"));
    assert_non_null(strstr(text, "node n1"));
    aimsi_frame_release(&f);
    aimsi_buf_free(&b);
}

static aims_status op_build(void *ctx)
{
    (void)ctx;
    aims_msg *m = NULL;
    AIMSI_TRY(aims_msg_create(&m));
    const float x[4] = {1, 2, 3, 4};
    const uint64_t dims[1] = {4};
    void *p;
    aims_status rc = aims_msg_add(m, "x", AIMS_DT_F32, dims, 1, x, 0);
    if (rc == AIMS_OK) {
        rc = aims_msg_alloc(m, "y", AIMS_DT_F32, dims, 1, &p);
    }
    if (rc == AIMS_OK) {
        rc = aims_msg_set_error(m, "oops");
    }
    aims_msg *c = NULL;
    if (rc == AIMS_OK) {
        rc = aims_msg_create(&c);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_copy(c, m);
    }
    aims_msg_destroy(c);
    aims_msg_destroy(m);
    return rc;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("msg build", op_build, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_get_find, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_validation, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_aligned, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_error_text, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_frame_round_trip, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_clock, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_encode_decode, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_ambient, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_refuse_v1, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
