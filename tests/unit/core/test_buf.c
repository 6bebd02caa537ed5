/*
 * test_buf.c -- white-box tests of src/core/buf.c: the growable byte buffer, including
 * allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "testalloc.h"

static void test_buf_append_and_take(void **state)
{
    (void)state;
    aimsi_buf b;
    aimsi_buf_init(&b);
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal(aimsi_buf_put_u32le(&b, i), AIMS_OK);
    }
    assert_int_equal(aimsi_buf_put_u64le(&b, 0x0102030405060708ull), AIMS_OK);
    assert_int_equal(b.len, 4008);
    assert_int_equal(b.data[4], 1);
    assert_int_equal(b.data[4000], 8);
    size_t len;
    void *p = aimsi_buf_take(&b, &len);
    assert_int_equal(len, 4008);
    assert_null(b.data);
    aimsi_free(p);
    aimsi_buf_free(&b);
}

static aims_status buf_op(void *ctx)
{
    (void)ctx;
    aimsi_buf b;
    aimsi_buf_init(&b);
    for (int i = 0; i < 100; i++) {
        const aims_status rc = aimsi_buf_append(&b, "0123456789", 10);
        if (rc != AIMS_OK) {
            aimsi_buf_free(&b);
            return rc;
        }
    }
    aimsi_buf_free(&b);
    return AIMS_OK;
}

static void test_buf_alloc_failure_loop(void **state)
{
    (void)state;
    ta_fail_loop("buf", buf_op, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_buf_append_and_take, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_buf_alloc_failure_loop, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
