/*
 * test_errors.c -- white-box tests of src/core/errors.c: status strings and the per-
 * object/thread error message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "testalloc.h"

static void test_status_strerror_all_codes(void **state)
{
    (void)state;
    for (int c = 0; c <= AIMS_E_DENIED; c++) {
        const char *s = aims_strerror((aims_status)c);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown status");
    }
    assert_string_equal(aims_strerror((aims_status)9999), "unknown status");
}

static void test_err_sets_object_and_thread_message(void **state)
{
    (void)state;
    aimsi_obj obj;
    aimsi_obj_init(&obj, 0x1234);
    assert_int_equal(aimsi_err(&obj, AIMS_E_CORRUPT, "file %s byte %d", "x.csv", 17),
                     AIMS_E_CORRUPT);
    assert_string_equal(obj.errmsg, "file x.csv byte 17");
    assert_string_equal(aims_errmsg(), "file x.csv byte 17");
    assert_true(aimsi_obj_ok(&obj, 0x1234));
    assert_false(aimsi_obj_ok(&obj, 0x1235));
    assert_false(aimsi_obj_ok(NULL, 0x1234));
    aimsi_obj_kill(&obj);
    assert_false(aimsi_obj_ok(&obj, 0x1234));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_status_strerror_all_codes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_err_sets_object_and_thread_message, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
