/*
 * test_api_core.c -- black-box tests of aims_core.h through libaims.so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

static void test_version_matches_header(void **state)
{
    (void)state;
    assert_int_equal(aims_version_number(), AIMS_VERSION_NUMBER);
    assert_string_equal(aims_version_string(), AIMS_VERSION_STRING);
    assert_true(AIMS_VERSION_AT_LEAST(0, 1, 0));
}

static void test_build_info_names_blas_and_zstd(void **state)
{
    (void)state;
    const char *info = aims_build_info();
    assert_non_null(info);
    assert_true(info[0] == '{');
    assert_non_null(strstr(info, "\"blas\":\"OpenBLAS"));
    assert_non_null(strstr(info, "\"zstd\":\"1."));
    assert_non_null(strstr(info, "\"blas_parallel\":"));
    assert_non_null(strstr(info, "\"kernels\":{\"gemm_f32\":"));
    assert_ptr_equal(info, aims_build_info()); /* built once */
}

static void test_param_info_and_by_name(void **state)
{
    (void)state;
    aims_param id;
    assert_int_equal(aims_param_by_name("buckets", &id), AIMS_OK);
    assert_int_equal(id, AIMS_STEP_BUCKETS);
    aims_param_type type;
    double lo, hi, def;
    assert_int_equal(aims_param_info(id, &type, &lo, &hi, &def), AIMS_OK);
    assert_int_equal(type, AIMS_PARAM_TYPE_I64);
    assert_true(def == 262144.0);
    assert_true(lo >= 1.0 && hi >= def);
    assert_int_equal(aims_param_by_name("no_such_param", &id), AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_errmsg(), "no_such_param"));
    assert_int_equal(aims_param_by_name(NULL, &id), AIMS_E_MISUSE);
    assert_int_equal(aims_param_info((aims_param)12345, NULL, NULL, NULL, NULL),
                     AIMS_E_NOTFOUND);
    assert_null(aims_param_name((aims_param)12345));
    assert_string_equal(aims_param_name(AIMS_LOAD_DELIMITER), "delimiter");
}

static int g_log_calls;
static aims_log_level g_log_level;

static void log_cb(void *user, aims_log_level level, const char *msg)
{
    int *tag = user;
    assert_int_equal(*tag, 77);
    assert_non_null(msg);
    g_log_calls++;
    g_log_level = level;
}

static void test_log_callback_receives_debug_errors(void **state)
{
    (void)state;
    int tag = 77;
    assert_int_equal(aims_set_log(log_cb, &tag, AIMS_LOG_DEBUG), AIMS_OK);
    aims_param id;
    assert_int_equal(aims_param_by_name("nope", &id), AIMS_E_NOTFOUND);
    assert_true(g_log_calls >= 1);
    assert_int_equal(g_log_level, AIMS_LOG_DEBUG);
    assert_int_equal(aims_set_log(NULL, NULL, AIMS_LOG_OFF), AIMS_OK);
    const int before = g_log_calls;
    assert_int_equal(aims_param_by_name("nope", &id), AIMS_E_NOTFOUND);
    assert_int_equal(g_log_calls, before);
    assert_int_equal(aims_set_log(log_cb, &tag, (aims_log_level)5), AIMS_E_INVAL);
}

static void test_set_allocator_rejects_partial_and_live_swap(void **state)
{
    (void)state;
    assert_int_equal(aims_set_allocator(NULL, NULL, NULL, NULL), AIMS_OK);
    ta_install(); /* back to the counting allocator (nothing live) */
    aims_loadopts *opts = NULL;
    assert_int_equal(aims_loadopts_create(&opts), AIMS_OK);
    assert_true(aims_alloc_live() > 0);
    assert_int_equal(aims_set_allocator(NULL, NULL, NULL, NULL), AIMS_E_STATE);
    aims_loadopts_destroy(opts);
    aims_free(NULL);
}

static void test_strerror_is_static_text(void **state)
{
    (void)state;
    assert_string_equal(aims_strerror(AIMS_OK), "ok");
    assert_string_equal(aims_strerror(AIMS_E_NOMEM), "out of memory");
    assert_string_equal(aims_strerror((aims_status)-1), "unknown status");
}

/* The numbers are ABI: pin a few so an edit of AIMS_STATUS_MAP cannot renumber. */
_Static_assert(AIMS_OK == 0 && AIMS_E_MISUSE == 1 && AIMS_E_NOMEM == 2 && AIMS_E_NOTFOUND == 8 &&
                   AIMS_E_TIMEOUT == 12 && AIMS_E_INTERNAL == 16,
               "aims_status values never change");

/* Every row of the one table: the enum value, aims_status_name and
 * aims_strerror agree with it, and nothing outside the table has a name. */
static void test_status_name_every_row_of_the_map(void **state)
{
    (void)state;
    size_t rows = 0;
#define ROW_(name, value, text)                                \
    do {                                                       \
        assert_int_equal((int)(name), (value));                \
        assert_non_null(aims_status_name(name));               \
        assert_string_equal(aims_status_name(name), #name);    \
        assert_string_equal(aims_strerror(name), (text));      \
        rows++;                                                \
    } while (0);
    AIMS_STATUS_MAP(ROW_)
#undef ROW_
    assert_true(rows >= 17);
    size_t named = 0;
    for (int c = -64; c < 4096; c++) {
        const char *n = aims_status_name((aims_status)c);
        if (n != NULL) {
            named++;
            assert_true(strncmp(n, "AIMS_", 5) == 0);
        } else {
            assert_string_equal(aims_strerror((aims_status)c), "unknown status");
        }
    }
    assert_int_equal(named, rows);
    assert_null(aims_status_name((aims_status)-1));
    assert_null(aims_status_name((aims_status)18));
    assert_string_equal(aims_status_name(AIMS_E_NOMEM), "AIMS_E_NOMEM");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_version_matches_header, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_build_info_names_blas_and_zstd, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_param_info_and_by_name, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_log_callback_receives_debug_errors, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_set_allocator_rejects_partial_and_live_swap,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_strerror_is_static_text, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_status_name_every_row_of_the_map, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
