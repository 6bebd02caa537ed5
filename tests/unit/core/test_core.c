/*
 * test_core.c -- white-box tests of src/core: errors, params, RNG, buffer, pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <string.h>

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

static void test_rng_deterministic_and_unbiased_range(void **state)
{
    (void)state;
    aimsi_rng a, b;
    aimsi_rng_seed(&a, 42);
    aimsi_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) {
        assert_true(aimsi_rng_next(&a) == aimsi_rng_next(&b));
    }
    aimsi_rng_seed(&b, 43);
    assert_true(aimsi_rng_next(&a) != aimsi_rng_next(&b));
    long counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        const uint64_t v = aimsi_rng_below(&a, 7);
        assert_true(v < 7);
        counts[v]++;
    }
    for (int k = 0; k < 7; k++) {
        assert_true(counts[k] > 9000 && counts[k] < 11000);
    }
    for (int i = 0; i < 1000; i++) {
        const double u = aimsi_rng_unit(&a);
        assert_true(u >= 0.0 && u < 1.0);
    }
}

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

typedef struct sum_ctx {
    atomic_long hits[1000];
} sum_ctx;

static void sum_task(void *ctx, size_t i)
{
    sum_ctx *c = ctx;
    atomic_fetch_add(&c->hits[i], 1);
}

static void test_pool_runs_every_index_once(void **state)
{
    (void)state;
    for (unsigned threads = 1; threads <= 4; threads++) {
        aimsi_pool *pool = NULL;
        assert_int_equal(aimsi_pool_create(threads, &pool), AIMS_OK);
        assert_int_equal(aimsi_pool_threads(pool), threads);
        for (int rep = 0; rep < 20; rep++) {
            static sum_ctx c;
            memset(&c, 0, sizeof c);
            aimsi_pool_run(pool, 1000, sum_task, &c);
            for (int i = 0; i < 1000; i++) {
                assert_int_equal(atomic_load(&c.hits[i]), 1);
            }
        }
        aimsi_pool_destroy(pool);
    }
    aimsi_pool_destroy(NULL);
}

static aims_status pool_op(void *ctx)
{
    (void)ctx;
    aimsi_pool *pool = NULL;
    AIMSI_TRY(aimsi_pool_create(3, &pool));
    aimsi_pool_destroy(pool);
    return AIMS_OK;
}

static void test_pool_alloc_failure_loop(void **state)
{
    (void)state;
    ta_fail_loop("pool", pool_op, NULL);
}

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
        cmocka_unit_test_setup_teardown(test_status_strerror_all_codes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_err_sets_object_and_thread_message, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_param_check_bounds_and_types, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_param_names_unique_and_round_trip, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_rng_deterministic_and_unbiased_range, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_buf_append_and_take, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_buf_alloc_failure_loop, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_pool_runs_every_index_once, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_pool_alloc_failure_loop, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_calloc_overflow_returns_null, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
