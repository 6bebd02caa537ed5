/*
 * test_build_info.c -- aims_build_info()'s "kernels" object says what the
 * library really picks on this CPU (src/model/blas.c): the same answers as the
 * run-time tests the trainer and the predict paths make (own GEMM fp32/bf16,
 * softmax regression's step, the int8 kernel). Benchmarks record that object
 * beside their figures (bench/machine.py), so it must never say "own" where
 * the trainer falls back to OpenBLAS. Holds on any CPU: the expected values are
 * read from the same internal tests, not assumed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "aims/aims.h"
#include "model/aimsi_model.h"
#include "model/aimsi_quant.h"
#include "model/aimsi_train.h"
#include "testalloc.h"

/* The value of "key":"..." in the kernels object, copied into out. */
static int kernel_value(const char *info, const char *key, char *out, size_t cap)
{
    const char *k = strstr(info, "\"kernels\":{");
    if (k == NULL) {
        return -1;
    }
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *v = strstr(k, pat);
    if (v == NULL) {
        return -1;
    }
    v += strlen(pat);
    const char *end = strchr(v, '"');
    if (end == NULL || (size_t)(end - v) >= cap) {
        return -1;
    }
    memcpy(out, v, (size_t)(end - v));
    out[end - v] = '\0';
    return 0;
}

static void test_build_info_kernels_match_runtime_tests(void **state)
{
    (void)state;
    const char *info = aims_build_info();
    char v[32];
    assert_int_equal(kernel_value(info, "gemm_f32", v, sizeof v), 0);
    assert_string_equal(v, aimsi_gemm_own_available(AIMSI_GEMM_F32) ? "own" : "openblas");
    assert_int_equal(kernel_value(info, "gemm_bf16", v, sizeof v), 0);
    assert_string_equal(v, aimsi_gemm_own_available(AIMSI_GEMM_BF16) ? "own" : "openblas");
    assert_int_equal(kernel_value(info, "smax_step", v, sizeof v), 0);
    assert_string_equal(v, aimsi_train_smax_cpu_ok() ? "own" : "off");
    assert_int_equal(kernel_value(info, "int8", v, sizeof v), 0);
    const int q = aimsi_q8_isa();
    assert_string_equal(v, q == AIMSI_Q8_VNNI ? "vnni" : q == AIMSI_Q8_AVX2 ? "avx2" : "c");
    /* bf16 kernels only where the fp32 ones are; the object closes the line */
    if (aimsi_gemm_own_available(AIMSI_GEMM_BF16)) {
        assert_true(aimsi_gemm_own_available(AIMSI_GEMM_F32));
    }
    assert_non_null(strstr(info, "}}"));
    assert_int_equal(info[strlen(info) - 1], '}');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_build_info_kernels_match_runtime_tests, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
