/*
 * test_gemm.c -- libaims' own GEMM (src/model/gemm.c), fp32 and bf16, against a
 * reference computed in double from the same (for bf16: rounded) operands.
 *
 * Covers every trans_a/trans_b combination, edge shapes (m not a multiple of
 * the 8-row block, n not a multiple of the 32-column panel, odd k, k = 1),
 * beta 0 / 1 / 0.5, and that the result is bit-identical whatever the pool's
 * thread count (the exact-resume contract). Skipped on CPUs without
 * AVX512_BF16. Then training through the own kernels (fp32 and
 * AIMS_MODEL_PRECISION = 1): the same weights for 1, 2 and 3 threads,
 * accuracy close to the OpenBLAS path (AIMS_TRAIN_GEMM = 1), exact resume
 * from a checkpoint, and the allocation-failure loop over a bf16 fit.
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

#include "model/aimsi_model.h"
#include "testalloc.h"
#include "train_fix.h"

/* fp32 -> bf16 -> fp32, round to nearest even (finite inputs). */
static double bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    float r;
    memcpy(&r, &u, sizeof r);
    return (double)r;
}

typedef struct shape {
    size_t m, n, k;
} shape;

static void check_one(aimsi_pool *pool, int prec, int ta, int tb, shape s, float beta, uint64_t seed)
{
    const size_t lda = (ta ? s.m : s.k) + 3; /* padded leading dimensions */
    const size_t ldb = (tb ? s.k : s.n) + 5;
    const size_t ldc = s.n + 2;
    const float *a = tf_filled((ta ? s.k : s.m) * lda, &seed);
    const float *b = tf_filled((tb ? s.n : s.k) * ldb, &seed);
    float *c0 = tf_filled(s.m * ldc, &seed);
    float *c = aimsi_malloc(s.m * ldc * sizeof *c);
    float *c1 = aimsi_malloc(s.m * ldc * sizeof *c1);
    void *ws = aimsi_malloc(aimsi_gemm_own_ws_bytes(prec, s.m, s.n, s.k));
    assert_non_null(c);
    assert_non_null(c1);
    assert_non_null(ws);
    memcpy(c, c0, s.m * ldc * sizeof *c);
    memcpy(c1, c0, s.m * ldc * sizeof *c);
    aimsi_gemm_own(pool, ws, prec, ta, tb, s.m, s.n, s.k, a, lda, b, ldb, beta, c, ldc);
    aimsi_gemm_own(NULL, ws, prec, ta, tb, s.m, s.n, s.k, a, lda, b, ldb, beta, c1, ldc);
    for (size_t i = 0; i < s.m; i++) {
        for (size_t j = 0; j < ldc; j++) {
            const size_t at = i * ldc + j;
            if (memcmp(&c[at], &c1[at], sizeof *c) != 0) {
                fail_msg("ta=%d tb=%d %zux%zux%zu (%zu,%zu): pool %.9g vs one thread %.9g", ta,
                         tb, s.m, s.n, s.k, i, j, (double)c[at], (double)c1[at]);
            }
            if (j >= s.n) { /* the padding past column n is never written */
                assert_memory_equal(&c[at], &c0[at], sizeof *c);
                continue;
            }
            double want = (double)beta * (double)c0[at];
            double mag = fabs(want);
            for (size_t kk = 0; kk < s.k; kk++) {
                const float fx = ta ? a[kk * lda + i] : a[i * lda + kk];
                const float fy = tb ? b[j * ldb + kk] : b[kk * ldb + j];
                const double x = prec == AIMSI_GEMM_BF16 ? bf16(fx) : (double)fx;
                const double y = prec == AIMSI_GEMM_BF16 ? bf16(fy) : (double)fy;
                want += x * y;
                mag += fabs(x * y);
            }
            if (fabs((double)c[at] - want) > 1e-6 * (mag + 1.0) * (double)(s.k + 1)) {
                fail_msg("ta=%d tb=%d %zux%zux%zu beta %g (%zu,%zu): got %.9g want %.9g", ta, tb,
                         s.m, s.n, s.k, (double)beta, i, j, (double)c[at], want);
            }
        }
    }
    aimsi_free(ws);
    aimsi_free(c1);
    aimsi_free(c);
    aimsi_free(c0);
    aimsi_free((void *)b);
    aimsi_free((void *)a);
}

static void shapes_case(int prec)
{
    if (!aimsi_gemm_own_available(prec)) {
        skip();
    }
    aimsi_pool *pool = NULL;
    assert_int_equal(aimsi_pool_create(3, &pool), AIMS_OK);
    static const shape shapes[] = {{1, 1, 1},    {8, 32, 2},    {7, 31, 3},   {9, 33, 33},
                                   {16, 64, 32}, {13, 70, 101}, {128, 10, 256}, {24, 784, 128},
                                   {3, 5, 1000}, {40, 47, 17}};
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    uint64_t seed = 7;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int ta = 0; ta < 2; ta++) {
            for (int tb = 0; tb < 2; tb++) {
                check_one(pool, prec, ta, tb, shapes[s], betas[(s + (size_t)ta + 2u * (size_t)tb) % 3],
                          seed++);
            }
        }
    }
    aimsi_pool_destroy(pool);
}

static void test_gemm_bf16_shapes(void **state)
{
    (void)state;
    shapes_case(AIMSI_GEMM_BF16);
}

static void test_gemm_f32_shapes(void **state)
{
    (void)state;
    shapes_case(AIMSI_GEMM_F32);
}

/* The same with the AVX2 kernel forced on (it runs on AVX-512 CPUs too). */
static void test_gemm_f32_shapes_avx2(void **state)
{
    (void)state;
    tf_avx2_forced(shapes_case, AIMSI_GEMM_F32);
}

/* Ties round to even, NaN-free inputs exact where bf16 can hold them: a GEMM
 * over values bf16 represents exactly equals the fp32 product. */
static void test_gemm_bf16_exact_small_ints(void **state)
{
    (void)state;
    if (!aimsi_gemm_own_available(AIMSI_GEMM_BF16)) {
        skip();
    }
    float a[4 * 6];
    float b[6 * 3];
    float c[4 * 3];
    for (int i = 0; i < 24; i++) {
        a[i] = (float)(i % 7 - 3);
    }
    for (int i = 0; i < 18; i++) {
        b[i] = (float)(i % 5 - 2) * 0.5f;
    }
    unsigned char ws[4096];
    assert_true(aimsi_gemm_own_ws_bytes(AIMSI_GEMM_BF16, 4, 3, 6) <= sizeof ws);
    aimsi_gemm_own(NULL, ws, AIMSI_GEMM_BF16, 0, 0, 4, 3, 6, a, 6, b, 3, 0.0f, c, 3);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 3; j++) {
            float want = 0.0f;
            for (int kk = 0; kk < 6; kk++) {
                want += a[i * 6 + kk] * b[kk * 3 + j];
            }
            assert_true(c[i * 3 + j] == want);
        }
    }
}

/* ---- training with bf16 GEMMs (AIMS_MODEL_PRECISION = 1) ------------------------------- */

#define OK(e) assert_int_equal((e), AIMS_OK)

/* rows x 256 features, 4 classes from a fixed linear rule. */
static aims_dataset *rule_data(size_t rows, uint64_t seed)
{
    enum { COLS = 256 };
    float *x = tf_alloc(rows * COLS * sizeof *x);
    int32_t *y = tf_alloc(rows * sizeof *y);
    for (size_t r = 0; r < rows; r++) {
        float best = -1e9f;
        for (size_t c = 0; c < COLS; c++) {
            x[r * COLS + c] = tf_frand(&seed);
        }
        for (int32_t k = 0; k < 4; k++) {
            const float v = x[r * COLS + (size_t)k * 3] - x[r * COLS + (size_t)k * 5 + 1];
            if (v > best) {
                best = v;
                y[r] = k;
            }
        }
    }
    return tf_dense_take(rows, COLS, x, y);
}

/* MLP 256-128-4: the first layer's GEMMs (64 x 128 x 256) are big enough for
 * the own kernels on the pool (>= 2M multiply-adds). */
static aims_status make_pair(int64_t precision, int64_t threads, int64_t gemm, aims_model **om,
                             aims_trainer **ot)
{
    const tf_net net = {AIMS_MODEL_KIND_MLP, 256, 4, {128, 0, 0}, AIMS_ACT_RELU, precision, 0.0};
    const tf_hyper h = {.opt = 0, .epochs = 4, .batch = 64, .seed = 3, .threads = threads,
                        .lr = 0.05};
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_status rc = tf_make(&net, &h, &m, &t);
    if (rc != AIMS_OK) {
        return rc;
    }
    rc = aims_trainer_set_param_i64(t, AIMS_TRAIN_GEMM, gemm);
    if (rc != AIMS_OK) {
        aims_trainer_destroy(t);
        aims_model_destroy(m);
        return rc;
    }
    *om = m;
    *ot = t;
    return AIMS_OK;
}

static float *train_copy(const aims_dataset *ds, int64_t precision, int64_t threads,
                         int64_t gemm, double *acc)
{
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    OK(make_pair(precision, threads, gemm, &m, &t));
    OK(aims_trainer_fit(t, ds, NULL));
    float *p = tf_copy_of(m->params, m->n_params);
    aims_eval *ev = NULL;
    OK(aims_model_evaluate(m, ds, &ev));
    OK(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, acc));
    aims_eval_destroy(ev);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return p;
}

static void test_bf16_training(void **state)
{
    (void)state;
    aims_dataset *ds = rule_data(1000, 11);
    size_t n = 0;
    {
        aims_model *m = NULL;
        aims_trainer *t = NULL;
        OK(make_pair(0, 1, 0, &m, &t));
        OK(aims_trainer_begin(t, ds, NULL));
        n = m->n_params;
        aims_trainer_destroy(t);
        aims_model_destroy(m);
    }
    double acc32 = 0.0, acc1 = 0.0, acc2 = 0.0, acc3 = 0.0, accb = 0.0, acc32b = 0.0;
    float *p32 = train_copy(ds, 0, 1, 0, &acc32);
    float *p32b = train_copy(ds, 0, 3, 0, &acc32b);
    float *pblas = train_copy(ds, 0, 2, 1, &accb);
    float *p1 = train_copy(ds, 1, 1, 0, &acc1);
    float *p2 = train_copy(ds, 1, 2, 0, &acc2);
    float *p3 = train_copy(ds, 1, 3, 0, &acc3);
    /* the own kernels' results do not depend on the thread count */
    assert_memory_equal(p1, p2, n * sizeof *p1);
    assert_memory_equal(p1, p3, n * sizeof *p1);
    assert_memory_equal(p32, p32b, n * sizeof *p1);
    /* every path learns as well as OpenBLAS fp32 does */
    assert_true(accb > 0.85);
    assert_true(acc32 > accb - 0.02);
    assert_true(acc1 > accb - 0.03);
    if (aimsi_gemm_own_available(AIMSI_GEMM_BF16)) { /* and it really ran in bf16 */
        assert_memory_not_equal(p1, p32, n * sizeof *p1);
    } else {
        assert_memory_equal(p1, p32, n * sizeof *p1);
    }
    aimsi_free(p32);
    aimsi_free(p32b);
    aimsi_free(pblas);
    aimsi_free(p1);
    aimsi_free(p2);
    aimsi_free(p3);
    aims_dataset_destroy(ds);
}

static void test_bf16_exact_resume(void **state)
{
    (void)state;
    aims_dataset *ds = rule_data(500, 12);
    double acc = 0.0;
    float *want = train_copy(ds, 1, 2, 0, &acc);
    char path[] = "/tmp/aims_bf16_XXXXXX";
    tf_temp_file(path);
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    OK(make_pair(1, 2, 0, &m, &t));
    tf_checkpoint_after(m, t, ds, 11, path); /* into the second epoch */

    OK(make_pair(1, 2, 0, &m, &t));
    OK(aims_trainer_begin(t, ds, NULL));
    OK(aims_trainer_restore(t, path));
    int done = 0;
    do {
        OK(aims_trainer_epoch(t, &done));
    } while (!done);
    assert_memory_equal(m->params, want, m->n_params * sizeof *want);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    unlink(path);
    aimsi_free(want);
    aims_dataset_destroy(ds);
}

static aims_status op_bf16_fit(void *arg)
{
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_status rc = make_pair(1, 2, 0, &m, &t);
    if (rc == AIMS_OK) {
        rc = aims_trainer_fit(t, arg, NULL);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return rc;
}

static void test_bf16_alloc_failures(void **state)
{
    (void)state;
    aims_dataset *ds = rule_data(130, 13);
    ta_fail_loop("bf16 fit", op_bf16_fit, ds);
    aims_dataset_destroy(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gemm_bf16_shapes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_f32_shapes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_f32_shapes_avx2, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_bf16_exact_small_ints, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bf16_training, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bf16_exact_resume, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bf16_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
