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

static void test_grow_doubles_from_first_and_refuses_overflow(void **state)
{
    (void)state;
    int *a = NULL;
    size_t cap = 0;
    for (size_t n = 0; n < 100; n++) {
        assert_int_equal(aimsi_grow((void **)&a, &cap, n, sizeof *a, 16), 0);
        assert_true(cap > n);
        a[n] = (int)n;
    }
    assert_int_equal(cap, 128);
    assert_int_equal(a[99], 99);
    size_t huge = SIZE_MAX / 2 + 1;
    assert_int_equal(aimsi_grow((void **)&a, &huge, huge, sizeof *a, 16), -1);
    assert_int_equal(huge, SIZE_MAX / 2 + 1);
    aimsi_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_calloc_overflow_returns_null, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_grow_doubles_from_first_and_refuses_overflow,
                                        ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
