/*
 * test_rng.c -- white-box tests of src/core/rng.c: the seeded RNG is deterministic and its
 * ranges unbiased.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "testalloc.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rng_deterministic_and_unbiased_range, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
