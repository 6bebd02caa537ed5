/*
 * test_wpanels.c -- the forward's panels of the weights written by the fused
 * update (train_dense.c, "the forward's panels"; aimsi_gemm_epi.wpk and
 * aimsi_gemm_pre.bpk in gemm.c) change no trained bit.
 *
 *   - training with the panels (the forward reads W^T's panels as the last
 *     SGD/Adam/AdamW epilogue wrote them) gives the same weights, bit for bit,
 *     as packing W every step: fp32 and bf16, odd widths (a padded bf16 slot,
 *     a ragged last panel, a neuron count that is no multiple of 8), odd
 *     batches (a short last batch), weight decay, 2 and 3 threads, 2 and 3
 *     layers;
 *   - a checkpoint restore in the middle of a run forgets the panels: the run
 *     that steps on, restores and finishes ends with the weights of the run
 *     that never stopped;
 *   - by default only bf16 runs use them (fp32 measured slower with them).
 * Skipped on a CPU without the own kernels (bf16 cases: without AVX512_BF16).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/aimsi_train.h"
#include "testalloc.h"
#include "train_fix.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

typedef struct wcase {
    int64_t precision, opt, batch, threads;
    size_t cols, hidden1, hidden2;
    double wd;
} wcase;

static void make(const wcase *c, aims_model **m, aims_trainer **t)
{
    const tf_net net = {AIMS_MODEL_KIND_MLP, c->cols, 4, {c->hidden1, c->hidden2, 0},
                        AIMS_ACT_RELU, c->precision, 0.0};
    const tf_hyper h = {.opt = c->opt, .epochs = 2, .batch = c->batch, .seed = 17,
                        .threads = c->threads, .lr = c->opt == 0 ? 0.05 : 0.002, .wd = c->wd};
    OK(tf_make(&net, &h, m, t));
}

/* Train c to the end with the panels forced on (fp32 too) or off; *seen:
 * the first layer had panels. */
static float *train(const aims_dataset *ds, const wcase *c, int on, size_t *n, int *seen)
{
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    make(c, &m, &t);
    tf_begin_forced(t, ds, aimsi_train_wpk_force, on ? 2 : 0);
    *seen = t->wpk[0] != NULL;
    tf_steps_to_end(t);
    return tf_params_take(m, t, n);
}

static int skip_case(const wcase *c)
{
    if (!aimsi_gemm_own_available(c->precision == 1 ? AIMSI_GEMM_BF16 : AIMSI_GEMM_F32)) {
        print_message("note: no own %s kernels on this CPU\n", c->precision ? "bf16" : "fp32");
        return 1;
    }
    return 0;
}

static void test_wpanels_training_bit_identical(void **state)
{
    (void)state;
    static const wcase cases[] = {
        {0, 0, 64, 2, 256, 128, 0, 0.0},    {0, 0, 63, 3, 255, 100, 0, 1e-3},
        {0, 1, 64, 2, 255, 128, 64, 0.0},   {0, 2, 63, 2, 256, 100, 0, 1e-2},
        {1, 0, 64, 2, 256, 128, 0, 0.0},    {1, 0, 63, 3, 255, 100, 0, 1e-3},
        {1, 1, 63, 2, 255, 128, 64, 1e-3},  {1, 2, 64, 2, 256, 100, 0, 1e-2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const wcase *c = &cases[i];
        if (skip_case(c)) {
            continue;
        }
        aims_dataset *ds = tf_rule_data(640, c->cols, 51 + i);
        size_t n1 = 0;
        size_t n2 = 0;
        int seen1 = 0;
        int seen2 = 1;
        float *p1 = train(ds, c, 1, &n1, &seen1);
        float *p2 = train(ds, c, 0, &n2, &seen2);
        assert_true(seen1);
        assert_false(seen2);
        assert_int_equal(n1, n2);
        if (memcmp(p1, p2, n1 * sizeof *p1) != 0) {
            fail_msg("case %zu (precision %lld, opt %lld, batch %lld, %lld threads, %zu-%zu-%zu, "
                     "wd %g): training with the update's panels gave different weights",
                     i, (long long)c->precision, (long long)c->opt, (long long)c->batch,
                     (long long)c->threads, c->cols, c->hidden1, c->hidden2, c->wd);
        }
        aimsi_free(p2);
        aimsi_free(p1);
        aims_dataset_destroy(ds);
    }
}

/* Step 7, checkpoint, step 5 more (fresh panels of step 12), restore step
 * 7's checkpoint, finish: the weights of the uninterrupted run. */
static void test_wpanels_stale_after_restore(void **state)
{
    (void)state;
    static const wcase cases[] = {{0, 0, 64, 2, 256, 128, 0, 0.0}, {1, 1, 63, 2, 255, 100, 0, 0.0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const wcase *c = &cases[i];
        if (skip_case(c)) {
            continue;
        }
        aims_dataset *ds = tf_rule_data(640, c->cols, 71 + i);
        size_t n = 0;
        int seen = 0;
        float *want = train(ds, c, 1, &n, &seen);
        assert_true(seen);
        char path[] = "/tmp/aims_wpanels_XXXXXX";
        tf_temp_file(path);
        aims_model *m = NULL;
        aims_trainer *t = NULL;
        make(c, &m, &t);
        tf_begin_forced(t, ds, aimsi_train_wpk_force, 2);
        int done = 0;
        for (int s = 0; s < 12; s++) {
            OK(aims_trainer_step(t, &done));
            if (s == 6) {
                OK(aims_trainer_checkpoint(t, path));
            }
        }
        assert_true(t->wpk[0] != NULL);
        OK(aims_trainer_restore(t, path));
        tf_steps_to_end(t);
        tf_resume_check(m, t, want, n, path);
        aims_dataset_destroy(ds);
    }
}

/* The default (mode 1): panels with bf16 GEMMs only. */
static void test_wpanels_default_bf16_only(void **state)
{
    (void)state;
    for (int64_t prec = 0; prec <= 1; prec++) {
        const wcase c = {prec, 0, 64, 2, 256, 128, 0, 0.0};
        if (skip_case(&c)) {
            continue;
        }
        aims_dataset *ds = tf_rule_data(640, c.cols, 91);
        aims_model *m = NULL;
        aims_trainer *t = NULL;
        make(&c, &m, &t);
        tf_begin_forced(t, ds, aimsi_train_wpk_force, 1);
        assert_int_equal(t->wpk[0] != NULL, prec == 1);
        aims_trainer_destroy(t);
        aims_model_destroy(m);
        aims_dataset_destroy(ds);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wpanels_training_bit_identical, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_wpanels_stale_after_restore, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_wpanels_default_bf16_only, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
