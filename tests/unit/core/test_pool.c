/*
 * test_pool.c -- white-box tests of src/core/pool.c: the thread pool runs every index once and
 * survives allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <string.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "testalloc.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool_runs_every_index_once, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_pool_alloc_failure_loop, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
