/*
 * test_params.c -- white-box tests of src/core/params.c: parameter ranges, types, defaults and
 * names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "testalloc.h"

static void test_param_check_bounds_and_types(void **state)
{
    (void)state;
    assert_int_equal(aimsi_param_check(NULL, AIMS_LOAD_HEADER, 100, 199, AIMS_PARAM_TYPE_I64, 2),
                     AIMS_OK);
    assert_int_equal(aimsi_param_check(NULL, AIMS_LOAD_HEADER, 100, 199, AIMS_PARAM_TYPE_I64, 3),
                     AIMS_E_RANGE);
    assert_int_equal(aimsi_param_check(NULL, AIMS_LOAD_HEADER, 200, 299, AIMS_PARAM_TYPE_I64, 1),
                     AIMS_E_UNSUPPORTED);
    assert_int_equal(aimsi_param_check(NULL, AIMS_STEP_LOW, 200, 299, AIMS_PARAM_TYPE_I64, 1),
                     AIMS_E_UNSUPPORTED);
    assert_int_equal(aimsi_param_check(NULL, (aims_param)150, 100, 199, AIMS_PARAM_TYPE_I64, 1),
                     AIMS_E_UNSUPPORTED);
    assert_true(aimsi_param_default(AIMS_LOAD_DELIMITER) == ',');
}

static void test_param_names_unique_and_round_trip(void **state)
{
    (void)state;
    int seen = 0;
    for (int id = 0; id < 1000; id++) {
        const char *name = aims_param_name((aims_param)id);
        if (name == NULL) {
            continue;
        }
        aims_param back;
        assert_int_equal(aims_param_by_name(name, &back), AIMS_OK);
        assert_int_equal((int)back, id);
        seen++;
    }
    assert_true(seen >= 55);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_param_check_bounds_and_types, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_param_names_unique_and_round_trip, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
