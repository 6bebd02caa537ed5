/*
 * test_smax.c -- softmax regression's own training step (src/model/train_smax.c).
 *
 *   - it trains what the general step (train_dense.c) trains: the same weights
 *     up to rounding, for SGD with and without momentum and weight decay,
 *     Nesterov, Adam and AdamW, feature counts that are and are not multiples
 *     of 16, 2 to 16 classes, odd batches and a last batch of one row (an
 *     empty batch group);
 *   - its weights do not depend on the thread count (bit for bit);
 *   - a run stopped mid-epoch, checkpointed and restored ends with the bits of
 *     the run that never stopped;
 *   - it is used only where it applies (one layer, 2..16 classes, fp32 in the
 *     own kernels) and a failed allocation falls back to the general step
 *     without leaking;
 *   - a step whose loss is not finite is refused before any update;
 *   - the one-run step (one pool run: groups, a meeting point, the update)
 *     gives the bits of the two-run path;
 *   - the kernels follow the CPU (AVX-512, else AVX2 + FMA), and the cases
 *     above run again with the AVX2 kernels forced (an AVX-512 CPU checks
 *     both steps);
 *   - pixel data (k / 255) trains from the u8 copy with the float rows' bits,
 *     and data that is not of that form gets no copy.
 * Skipped on CPUs with neither AVX-512 nor AVX2 + FMA (the path never runs
 * there).
 */
#include <math.h>
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

/* rows x cols features in [0, 1), `classes` classes from a fixed linear rule. */
static aims_dataset *rule_data(size_t rows, size_t cols, size_t classes, uint64_t seed)
{
    float *x = tf_alloc(rows * cols * sizeof *x);
    int32_t *y = tf_alloc(rows * sizeof *y);
    for (size_t i = 0; i < rows * cols; i++) {
        x[i] = 0.5f + 0.5f * tf_frand(&seed);
    }
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float s = 0.0f;
        for (size_t c = 0; c < cols; c++) {
            s += xr[c] * (float)((c % 7) + 1) * (c % 2 ? 1.0f : -1.0f);
        }
        y[r] = (int32_t)((size_t)(fabsf(s) * 3.0f) % classes);
    }
    return tf_dense_take(rows, cols, x, y);
}

typedef struct run_cfg {
    size_t cols, classes;
    int64_t opt, nesterov, batch, epochs, threads;
    double lr, mom, wd;
} run_cfg;

static aims_trainer *make_trainer(const run_cfg *c, aims_model **om)
{
    const tf_net net = {AIMS_MODEL_KIND_SOFTMAX, c->cols, c->classes, {0, 0, 0}, AIMS_ACT_RELU,
                        0, 0.0};
    const tf_hyper h = {.opt = c->opt, .epochs = c->epochs, .batch = c->batch, .seed = 3,
                        .threads = c->threads, .lr = c->lr, .nesterov = c->nesterov,
                        .wd = c->wd};
    aims_trainer *t = NULL;
    OK(tf_make(&net, &h, om, &t));
    OK(aims_trainer_set_param_f64(t, AIMS_TRAIN_MOMENTUM, c->mom));
    return t;
}

/* Train to the end with the path allowed (smax = 1) or not; *used: it ran. */
static float *train(const aims_dataset *ds, const run_cfg *c, int smax, int *used, size_t *n,
                    double *loss)
{
    aims_model *m = NULL;
    aims_trainer *t = make_trainer(c, &m);
    tf_begin_forced(t, ds, aimsi_train_smax_force, smax);
    *used = aimsi_train_smax_on(t);
    tf_steps_to_end(t);
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_TRAIN_LOSS, loss));
    return tf_params_take(m, t, n);
}

static void skip_without_kernels(void)
{
    if (aimsi_train_smax_isa() == NULL) {
        print_message("note: neither AVX-512 nor AVX2 + FMA on this CPU, no softmax step\n");
        skip();
    }
}

static void test_smax_matches_general_step(void **state)
{
    (void)state;
    skip_without_kernels();
    static const run_cfg cases[] = {
        /* cols, classes, opt, nesterov, batch, epochs, threads, lr, mom, wd */
        {784, 10, 0, 0, 64, 2, 2, 0.1, 0.9, 0.0},   /* the bench's shape, narrower data */
        {100, 10, 0, 0, 63, 2, 2, 0.1, 0.9, 1e-3},  /* a masked tail, weight decay */
        {37, 3, 0, 1, 16, 2, 3, 0.05, 0.9, 0.0},    /* Nesterov, 3 threads */
        {50, 16, 1, 0, 32, 2, 2, 0.01, 0.0, 0.0},   /* Adam, the widest kernel */
        {33, 2, 2, 0, 20, 2, 1, 0.01, 0.0, 1e-2},   /* AdamW, one thread */
        {16, 13, 0, 0, 64, 2, 2, 0.1, 0.0, 0.0},    /* no momentum, 13 classes, one vector */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const run_cfg *c = &cases[i];
        /* 65 rows past a multiple of the batch: a last batch of one row */
        aims_dataset *ds = rule_data(4 * (size_t)c->batch + 1, c->cols, c->classes, 11 + i);
        size_t n1 = 0;
        size_t n2 = 0;
        int used1 = 0;
        int used2 = 1;
        double l1 = 0.0;
        double l2 = 0.0;
        float *p1 = train(ds, c, 1, &used1, &n1, &l1);
        float *p2 = train(ds, c, 0, &used2, &n2, &l2);
        assert_true(used1);
        assert_false(used2);
        assert_int_equal(n1, n2);
        for (size_t k = 0; k < n1; k++) {
            if (!(fabsf(p1[k] - p2[k]) <= 1e-4f * (1.0f + fabsf(p2[k])))) {
                fail_msg("case %zu, parameter %zu of %zu: softmax step %.9g, general step %.9g",
                         i, k, n1, (double)p1[k], (double)p2[k]);
            }
        }
        assert_true(isfinite(l1));
        assert_true(fabs(l1 - l2) <= 1e-4 * (1.0 + fabs(l2)));
        aimsi_free(p2);
        aimsi_free(p1);
        aims_dataset_destroy(ds);
    }
}

static void test_smax_threads_bit_identical(void **state)
{
    (void)state;
    skip_without_kernels();
    aims_dataset *ds = rule_data(301, 100, 10, 5);
    run_cfg c = {100, 10, 0, 0, 50, 2, 1, 0.1, 0.9, 0.0};
    float *p[4];
    size_t n[4];
    for (int64_t i = 0; i < 4; i++) { /* 1, 2, 3 threads, then 2 again */
        c.threads = i < 3 ? i + 1 : 2;
        int used = 0;
        double loss = 0.0;
        p[i] = train(ds, &c, 1, &used, &n[i], &loss);
        assert_true(used);
    }
    assert_memory_equal(p[0], p[1], n[0] * sizeof *p[0]);
    assert_memory_equal(p[0], p[2], n[0] * sizeof *p[0]);
    assert_memory_equal(p[0], p[3], n[0] * sizeof *p[0]);
    for (int i = 0; i < 4; i++) {
        aimsi_free(p[i]);
    }
    aims_dataset_destroy(ds);
}

/* The one-run step (gradient, loss check and update in one pool run) gives
 * the bits of the two-run path (aimsi_train_smax_grad, then _apply), for
 * every optimizer and thread count. */
static void test_smax_one_run_same_bits(void **state)
{
    (void)state;
    skip_without_kernels();
    static const run_cfg cases[] = {
        /* cols, classes, opt, nesterov, batch, epochs, threads, lr, mom, wd */
        {784, 10, 0, 0, 64, 2, 2, 0.1, 0.9, 0.0},  /* the bench's shape */
        {100, 10, 0, 0, 63, 2, 3, 0.1, 0.9, 1e-3}, /* weight decay, 3 threads */
        {37, 3, 0, 1, 16, 2, 2, 0.05, 0.9, 0.0},   /* Nesterov */
        {50, 16, 1, 0, 32, 2, 2, 0.01, 0.0, 0.0},  /* Adam */
        {33, 2, 2, 0, 20, 2, 1, 0.01, 0.0, 1e-2},  /* AdamW, one thread */
        {16, 13, 0, 0, 64, 2, 4, 0.1, 0.0, 0.0},   /* plain SGD, 4 threads */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const run_cfg *c = &cases[i];
        aims_dataset *ds = rule_data(4 * (size_t)c->batch + 1, c->cols, c->classes, 21 + i);
        size_t n1 = 0;
        size_t n2 = 0;
        int used1 = 0;
        int used2 = 0;
        double l1 = 0.0;
        double l2 = 0.0;
        const int was = aimsi_train_smax_one_run_force(1);
        float *p1 = train(ds, c, 1, &used1, &n1, &l1);
        aimsi_train_smax_one_run_force(0);
        float *p2 = train(ds, c, 1, &used2, &n2, &l2);
        aimsi_train_smax_one_run_force(was);
        assert_true(used1 && used2);
        assert_int_equal(n1, n2);
        if (memcmp(p1, p2, n1 * sizeof *p1) != 0) {
            fail_msg("case %zu: the one-run step's weights differ from the two-run path's", i);
        }
        assert_true(l1 == l2);
        aimsi_free(p2);
        aimsi_free(p1);
        aims_dataset_destroy(ds);
    }
}

/* rows x cols pixels k / 255 as the scale step makes them from IDX images,
 * (float)(k * (1.0 / 255)) for a u8 k, `classes` classes from a linear
 * rule; feature `odd` (when < cols) of every tenth row gets `v` instead. */
static aims_dataset *pixel_data(size_t rows, size_t cols, size_t classes, uint64_t seed,
                                size_t odd, float v)
{
    float *x = tf_alloc(rows * cols * sizeof *x);
    int32_t *y = tf_alloc(rows * sizeof *y);
    for (size_t i = 0; i < rows * cols; i++) {
        const unsigned k = (unsigned)(tf_frand(&seed) * 256.0f) & 255u;
        x[i] = (float)((double)k * (1.0 / 255));
    }
    for (size_t r = 3; odd < cols && r < rows; r += 10) {
        x[r * cols + odd] = v;
    }
    for (size_t r = 0; r < rows; r++) {
        float s = 0.0f;
        for (size_t c = 0; c < cols; c++) {
            s += x[r * cols + c] * (float)((c % 7) + 1) * (c % 2 ? 1.0f : -1.0f);
        }
        y[r] = (int32_t)((size_t)(fabsf(s) * 3.0f) % classes);
    }
    return tf_dense_take(rows, cols, x, y);
}

/* Pixel data trains from the u8 copy (made during the first epoch, read
 * from the second) with the bits of the float rows, for several optimizers,
 * widths (masked tails) and thread counts, in the one-run and the two-run
 * step; data that is not k / d (-0.0, a value between two codes, one out of
 * range) never reads a copy. */
static void test_smax_compact_same_bits(void **state)
{
    (void)state;
    skip_without_kernels();
    static const run_cfg cases[] = {
        /* cols, classes, opt, nesterov, batch, epochs, threads, lr, mom, wd */
        {784, 10, 0, 0, 128, 2, 2, 0.1, 0.9, 0.0}, /* the bench's shape */
        {100, 10, 0, 0, 63, 2, 3, 0.1, 0.9, 1e-3}, /* a masked tail, 3 threads */
        {37, 3, 0, 1, 16, 2, 1, 0.05, 0.9, 0.0},   /* Nesterov, one thread */
        {50, 16, 1, 0, 32, 2, 2, 0.01, 0.0, 0.0},  /* Adam, the widest kernel */
        {33, 2, 2, 0, 20, 2, 2, 0.01, 0.0, 1e-2},  /* AdamW */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const run_cfg *c = &cases[i];
        for (int one_run = 0; one_run <= 1; one_run++) {
            aims_dataset *ds = pixel_data(4 * (size_t)c->batch + 1, c->cols, c->classes, 31 + i,
                                          SIZE_MAX, 0.0f);
            const int was = aimsi_train_smax_one_run_force(one_run);
            aims_model *m1 = NULL;
            aims_trainer *t1 = make_trainer(c, &m1);
            tf_begin_forced(t1, ds, aimsi_train_smax_compact_force, 1);
            assert_false(aimsi_train_smax_compact_on(t1)); /* made during the first epoch */
            tf_steps_to_end(t1);
            assert_true(aimsi_train_smax_compact_on(t1)); /* and read in the second */
            size_t n1 = 0;
            float *p1 = tf_params_take(m1, t1, &n1);
            aims_model *m2 = NULL;
            aims_trainer *t2 = make_trainer(c, &m2);
            tf_begin_forced(t2, ds, aimsi_train_smax_compact_force, 0);
            assert_true(aimsi_train_smax_on(t2));
            tf_steps_to_end(t2);
            assert_false(aimsi_train_smax_compact_on(t2));
            size_t n2 = 0;
            float *p2 = tf_params_take(m2, t2, &n2);
            aimsi_train_smax_one_run_force(was);
            assert_int_equal(n1, n2);
            if (memcmp(p1, p2, n1 * sizeof *p1) != 0) {
                fail_msg("case %zu (one run %d): the u8 copy's weights differ", i, one_run);
            }
            aimsi_free(p2);
            aimsi_free(p1);
            aims_dataset_destroy(ds);
        }
    }
    static const float odd[] = {-0.0f, 0.5f / 255.0f, 300.0f / 255.0f, 0.1f};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const run_cfg c = {100, 10, 0, 0, 32, 3, 2, 0.1, 0.9, 0.0};
        aims_dataset *ds = pixel_data(200, 100, 10, 41, 7, odd[i]);
        aims_model *m = NULL;
        aims_trainer *t = make_trainer(&c, &m);
        tf_begin_forced(t, ds, aimsi_train_smax_compact_force, 1);
        assert_true(aimsi_train_smax_on(t));
        tf_steps_to_end(t);
        assert_false(aimsi_train_smax_compact_on(t));
        aims_trainer_destroy(t);
        aims_model_destroy(m);
        aims_dataset_destroy(ds);
    }
}

static void test_smax_exact_resume(void **state)
{
    (void)state;
    skip_without_kernels();
    aims_dataset *ds = rule_data(200, 64, 10, 7);
    const run_cfg c = {64, 10, 0, 0, 32, 3, 2, 0.1, 0.9, 1e-4};
    size_t n = 0;
    int used = 0;
    double loss = 0.0;
    float *want = train(ds, &c, 1, &used, &n, &loss);
    assert_true(used);
    char path[] = "/tmp/aims_smax_ckpt_XXXXXX";
    tf_temp_file(path);

    aims_model *m = NULL;
    aims_trainer *t = make_trainer(&c, &m);
    tf_checkpoint_after(m, t, ds, 9, path); /* mid-epoch: 7 steps per epoch */

    t = make_trainer(&c, &m);
    OK(aims_trainer_begin(t, ds, NULL));
    OK(aims_trainer_restore(t, path));
    assert_true(aimsi_train_smax_on(t));
    tf_steps_to_end(t);
    tf_resume_check(m, t, want, n, path);
    aims_dataset_destroy(ds);
}

/* Where the path applies, and where it does not. */
static void test_smax_only_where_it_applies(void **state)
{
    (void)state;
    skip_without_kernels();
    aims_dataset *ds = rule_data(64, 20, 17, 9);
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    /* 17 classes: wider than one vector */
    OK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 20, 17, &m));
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_begin(t, ds, NULL));
    assert_false(aimsi_train_smax_on(t));
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    /* a hidden layer */
    OK(aims_model_create(AIMS_MODEL_KIND_MLP, 20, 17, &m));
    OK(aims_model_add_dense(m, 8, AIMS_ACT_RELU));
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_begin(t, ds, NULL));
    assert_false(aimsi_train_smax_on(t));
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
    /* OpenBLAS asked for, and bf16 */
    ds = rule_data(64, 20, 4, 9);
    for (int i = 0; i < 3; i++) {
        OK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 20, 4, &m));
        if (i == 1) {
            OK(aims_model_set_param_i64(m, AIMS_MODEL_PRECISION, 1));
        }
        OK(aims_trainer_create(m, &t));
        if (i == 0) {
            OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_GEMM, 1));
        }
        OK(aims_trainer_begin(t, ds, NULL));
        const int bf16 = aimsi_gemm_own_available(AIMSI_GEMM_BF16);
        assert_int_equal(aimsi_train_smax_on(t), i == 2 || (i == 1 && !bf16));
        aims_trainer_destroy(t);
        aims_model_destroy(m);
    }
    aims_dataset_destroy(ds);
}

static aims_status fit_once(void *ctx)
{
    const aims_dataset *ds = ctx;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_status rc = aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 40, 10, &m);
    if (rc == AIMS_OK) {
        rc = aims_trainer_create(m, &t);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 1);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 16);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_fit(t, ds, NULL);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return rc;
}

static void test_smax_alloc_failures(void **state)
{
    (void)state;
    aims_dataset *ds = rule_data(64, 40, 10, 13);
    ta_fail_loop("softmax fit", fit_once, ds);
    aims_dataset_destroy(ds);
}

/* A learning rate that makes the loss overflow: the step is refused. */
static void test_smax_divergence_refused(void **state)
{
    (void)state;
    skip_without_kernels();
    aims_dataset *ds = rule_data(256, 32, 10, 17);
    const run_cfg c = {32, 10, 0, 0, 32, 50, 2, 1e6, 0.9, 0.0};
    aims_model *m = NULL;
    aims_trainer *t = make_trainer(&c, &m);
    OK(aims_trainer_begin(t, ds, NULL));
    assert_true(aimsi_train_smax_on(t));
    int done = 0;
    aims_status rc = AIMS_OK;
    for (int i = 0; i < 400 && rc == AIMS_OK && !done; i++) {
        rc = aims_trainer_step(t, &done);
    }
    assert_int_equal(rc, AIMS_E_RANGE);
    int again = 0;
    assert_int_equal(aims_trainer_step(t, &again), AIMS_E_RANGE); /* for good */
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

/* The step that is refused writes nothing: the weights after it are those
 * before it (the refusal ends the run, so the velocity is gone), with one
 * thread and with the one-run step's meeting point on two and three. */
static void test_smax_refused_step_writes_nothing(void **state)
{
    (void)state;
    skip_without_kernels();
    aims_dataset *ds = rule_data(256, 32, 10, 17);
    for (int64_t th = 1; th <= 3; th++) {
        const run_cfg c = {32, 10, 0, 0, 32, 50, th, 1e6, 0.9, 0.0};
        aims_model *m = NULL;
        aims_trainer *t = make_trainer(&c, &m);
        OK(aims_trainer_begin(t, ds, NULL));
        assert_true(aimsi_train_smax_on(t));
        const size_t np = t->m->n_params;
        float *w0 = tf_alloc(np * sizeof *w0);
        int done = 0;
        aims_status rc = AIMS_OK;
        for (int i = 0; i < 400 && rc == AIMS_OK && !done; i++) {
            memcpy(w0, t->m->params, np * sizeof *w0);
            rc = aims_trainer_step(t, &done);
        }
        assert_int_equal(rc, AIMS_E_RANGE);
        assert_memory_equal(w0, t->m->params, np * sizeof *w0);
        aimsi_free(w0);
        aims_trainer_destroy(t);
        aims_model_destroy(m);
    }
    aims_dataset_destroy(ds);
}

/* The kernels follow the CPU: AVX-512 F/BW/VL/DQ, else AVX2 + FMA, else
 * none; forcing AVX2 picks it wherever the CPU has it. */
static void test_smax_kernels_follow_cpu(void **state)
{
    (void)state;
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char *isa = aimsi_train_smax_isa();
    if (avx512) {
        assert_string_equal(isa, "avx512");
    } else if (avx2) {
        assert_string_equal(isa, "avx2");
    } else {
        assert_null(isa);
    }
    const int was = aimsi_train_smax_avx2_force(1);
    isa = aimsi_train_smax_isa();
    if (avx2) {
        assert_string_equal(isa, "avx2");
    } else {
        assert_null(isa);
    }
    aimsi_train_smax_avx2_force(was);
}

/* The same cases again with the AVX2 kernels forced: on an AVX-512 CPU they
 * run the AVX2 step too (here, on an AVX2 CPU, the same step twice). */
static int force_avx2(void **state)
{
    (void)state;
    aimsi_train_smax_avx2_force(1);
    return 0;
}

static int unforce_avx2(void **state)
{
    (void)state;
    aimsi_train_smax_avx2_force(0);
    return 0;
}

int main(void)
{
/* The cases that run on every kernel set: in the default group (the CPU's own
 * kernels) and again with the AVX2 kernels forced. */
#define SMAX_KERNEL_CASES                                                                     \
    cmocka_unit_test_setup_teardown(test_smax_matches_general_step, ta_setup, ta_teardown),   \
        cmocka_unit_test_setup_teardown(test_smax_threads_bit_identical, ta_setup,            \
                                        ta_teardown),                                         \
        cmocka_unit_test_setup_teardown(test_smax_one_run_same_bits, ta_setup, ta_teardown),  \
        cmocka_unit_test_setup_teardown(test_smax_compact_same_bits, ta_setup, ta_teardown),  \
        cmocka_unit_test_setup_teardown(test_smax_exact_resume, ta_setup, ta_teardown),       \
        cmocka_unit_test_setup_teardown(test_smax_divergence_refused, ta_setup, ta_teardown), \
        cmocka_unit_test_setup_teardown(test_smax_refused_step_writes_nothing, ta_setup,      \
                                        ta_teardown)
    const struct CMUnitTest avx2_tests[] = {SMAX_KERNEL_CASES};
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smax_kernels_follow_cpu),
        SMAX_KERNEL_CASES,
        cmocka_unit_test_setup_teardown(test_smax_only_where_it_applies, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_smax_alloc_failures, ta_setup, ta_teardown),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests_name("smax_avx2_forced", avx2_tests, force_avx2,
                                                unforce_avx2);
}
