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

/* Start/join: the job runs while the caller does its own work, every index
 * once, whether the workers or the join's drain take the items; a join with
 * nothing started is a no-op; with spinning on or off, and on a NULL pool
 * (start runs everything). */
static void test_pool_start_join_runs_every_index_once(void **state)
{
    (void)state;
    for (unsigned threads = 1; threads <= 3; threads++) {
        aimsi_pool *pool = NULL;
        assert_int_equal(aimsi_pool_create(threads, &pool), AIMS_OK);
        aimsi_pool_join(pool); /* nothing pending */
        for (int rep = 0; rep < 40; rep++) {
            static sum_ctx c;
            memset(&c, 0, sizeof c);
            aimsi_pool_set_spin(pool, rep % 2 == 0 ? 0u : 200u);
            const size_t n = rep % 3 == 0 ? 1 : 1000;
            aimsi_pool_start(pool, n, sum_task, &c);
            long own = 0; /* the caller's work meanwhile */
            for (int i = 0; i < 1000 * (rep % 4); i++) {
                own += i;
            }
            aimsi_pool_join(pool);
            aimsi_pool_join(pool); /* a second join: nothing pending */
            assert_true(own >= 0);
            for (size_t i = 0; i < n; i++) {
                assert_int_equal(atomic_load(&c.hits[i]), 1);
            }
            aimsi_pool_run(pool, 10, sum_task, &c); /* the pool is free again */
            assert_int_equal(atomic_load(&c.hits[9]), n > 9 ? 2 : 1);
        }
        aimsi_pool_destroy(pool);
    }
    static sum_ctx c;
    memset(&c, 0, sizeof c);
    aimsi_pool_start(NULL, 5, sum_task, &c);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(atomic_load(&c.hits[i]), 1);
    }
    aimsi_pool_join(NULL);
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
        cmocka_unit_test_setup_teardown(test_pool_start_join_runs_every_index_once, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_pool_alloc_failure_loop, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
