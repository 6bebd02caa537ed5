/*
 * test_alloc.c -- white-box tests of src/core/alloc.c: overflow-checked allocation helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "testalloc.h"

static void test_calloc_overflow_returns_null(void **state)
{
    (void)state;
    assert_null(aimsi_calloc(SIZE_MAX / 2, 4));
    size_t out = 0;
    assert_int_equal(aimsi_mul_ok(SIZE_MAX, 2, &out), -1);
    assert_int_equal(aimsi_mul_ok(3, 5, &out), 0);
    assert_int_equal(out, 15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_calloc_overflow_returns_null, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
