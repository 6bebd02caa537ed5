/*
 * test_quant.c -- white-box tests of the int8 kernels and aims_model_quantize.
 *
 * The kernels must agree bit for bit across ISA paths (each path is forced in
 * turn with aimsi_q8_isa_force; paths the CPU lacks are skipped and say so).
 * Models are built directly (finalize + seeded random weights + trained = 1)
 * so these tests do not depend on the trainer.
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

#include "model/aimsi_quant.h"
#include "testalloc.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

static const int g_isas[] = {AIMSI_Q8_C, AIMSI_Q8_AVX2, AIMSI_Q8_VNNI};
static const char *const g_isa_names[] = {"?", "C", "AVX2", "VNNI"};

static float urand(aimsi_rng *rng, float lo, float hi)
{
    return lo + (hi - lo) * (float)aimsi_rng_unit(rng);
}

/* MLP in -> hidden (act) -> out with seeded weights, marked trained. */
static aims_model *make_mlp(size_t in, size_t hidden, size_t out, aims_activation act,
                            uint64_t seed)
{
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_MLP, in, out, &m));
    if (hidden > 0) {
        OK(aims_model_add_dense(m, hidden, act));
    }
    OK(aimsi_model_finalize(m));
    aimsi_rng rng;
    aimsi_rng_seed(&rng, seed);
    for (size_t l = 0; l < m->n_layers; l++) {
        const aimsi_dense *L = &m->layers[l];
        const float a = 1.7f / sqrtf((float)L->in);
        for (size_t i = 0; i < L->in * L->out; i++) {
            m->params[L->w_off + i] = urand(&rng, -a, a);
        }
        for (size_t o = 0; o < L->out; o++) {
            m->params[L->b_off + o] = urand(&rng, -0.1f, 0.1f);
        }
    }
    m->trained = 1;
    return m;
}

static float *rand_rows(size_t rows, size_t cols, uint64_t seed, float lo, float hi)
{
    float *x = malloc(rows * cols * sizeof *x);
    assert_non_null(x);
    aimsi_rng rng;
    aimsi_rng_seed(&rng, seed);
    for (size_t i = 0; i < rows * cols; i++) {
        x[i] = urand(&rng, lo, hi);
    }
    return x;
}

/* ---- kernels ------------------------------------------------------------------- */

static void test_q8_gemv_paths_identical(void **state)
{
    (void)state;
    static const size_t shapes[][2] = {{1, 1},   {3, 5},    {15, 4},  {16, 9},  {17, 3},
                                       {63, 7},  {64, 4},   {65, 9},  {128, 8}, {200, 13},
                                       {256, 10}, {784, 256}, {1000, 33}};
    aimsi_rng rng;
    aimsi_rng_seed(&rng, 42);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t in = shapes[s][0];
        const size_t out = shapes[s][1];
        int8_t *qw = malloc(in * out);
        uint8_t *xu = malloc(in);
        int32_t *ref = malloc(out * sizeof *ref);
        int32_t *got = malloc(out * sizeof *got);
        assert_true(qw != NULL && xu != NULL && ref != NULL && got != NULL);
        for (size_t i = 0; i < in * out; i++) {
            /* extremes first so saturation bugs in a 16-bit path would show */
            qw[i] = i < 64 ? (int8_t)(i % 2 ? -127 : 127) : (int8_t)((int)aimsi_rng_below(&rng, 255) - 127);
        }
        for (size_t k = 0; k < in; k++) {
            xu[k] = k < 32 ? 255 : (uint8_t)aimsi_rng_below(&rng, 256);
        }
        assert_int_equal(aimsi_q8_isa_force(AIMSI_Q8_C), AIMSI_Q8_C);
        aimsi_q8_gemv(qw, in, out, xu, ref);
        for (size_t o = 0; o < out; o++) { /* the C path against a plain sum */
            int64_t e = 0;
            for (size_t k = 0; k < in; k++) {
                e += (int64_t)xu[k] * qw[o * in + k];
            }
            assert_int_equal(ref[o], e);
        }
        for (size_t i = 1; i < 3; i++) {
            if (aimsi_q8_isa_force(g_isas[i]) != g_isas[i]) {
                continue;
            }
            memset(got, 0x5a, out * sizeof *got);
            aimsi_q8_gemv(qw, in, out, xu, got);
            if (memcmp(got, ref, out * sizeof *got) != 0) {
                fail_msg("%s path differs from C at %zu x %zu", g_isa_names[g_isas[i]], in, out);
            }
        }
        free(qw);
        free(xu);
        free(ref);
        free(got);
    }
    for (size_t i = 1; i < 3; i++) {
        if (aimsi_q8_isa_force(g_isas[i]) != g_isas[i]) {
            print_message("note: %s kernel not supported on this CPU, not compared\n",
                          g_isa_names[g_isas[i]]);
        }
    }
    assert_true(aimsi_q8_isa_force(AIMSI_Q8_AUTO) >= AIMSI_Q8_C);
}

static void test_q8_quantize_row_paths_identical(void **state)
{
    (void)state;
    enum { N = 203 };
    float x[N];
    aimsi_rng rng;
    aimsi_rng_seed(&rng, 7);
    for (size_t i = 0; i < N; i++) {
        x[i] = urand(&rng, -3.0f, 3.0f);
    }
    /* ties, clamps and non-finite values */
    x[0] = 0.5f;
    x[1] = 1.5f;
    x[2] = -2.5f;
    x[3] = NAN;
    x[4] = INFINITY;
    x[5] = -INFINITY;
    x[6] = 1e30f;
    x[20] = 0.25f; /* * 2 = 0.5 -> ties to even at scale 0.5 */
    const float inv = 2.0f;
    uint8_t ref[N];
    uint8_t got[N];
    assert_int_equal(aimsi_q8_isa_force(AIMSI_Q8_C), AIMSI_Q8_C);
    aimsi_q8_quantize_row(x, N, inv, ref);
    assert_int_equal(ref[0], 128 + 1);  /* 1.0 */
    assert_int_equal(ref[1], 128 + 3);  /* 3.0 */
    assert_int_equal(ref[2], 128 - 5);  /* -5.0 */
    assert_int_equal(ref[3], 1);        /* NaN -> -127 */
    assert_int_equal(ref[4], 255);      /* +inf -> 127 */
    assert_int_equal(ref[5], 1);
    assert_int_equal(ref[6], 255);
    assert_int_equal(ref[20], 128);     /* 0.5 -> 0 (ties to even) */
    for (size_t i = 1; i < 3; i++) {
        if (aimsi_q8_isa_force(g_isas[i]) != g_isas[i]) {
            continue;
        }
        memset(got, 0, sizeof got);
        aimsi_q8_quantize_row(x, N, inv, got);
        assert_memory_equal(got, ref, N);
    }
    aimsi_q8_isa_force(AIMSI_Q8_AUTO);
}

static void test_q8_weights_per_channel(void **state)
{
    (void)state;
    const float w[3 * 4] = {0.5f, -1.0f, 0.25f, 0.0f, /* max 1 */
                            0.0f, 0.0f,  0.0f,  0.0f, /* all zero */
                            2.0f, 4.0f,  -4.0f, 1.0f};
    int8_t qw[12];
    float ws[3];
    int32_t qs[3];
    aimsi_q8_quantize_weights(w, 4, 3, qw, ws, qs);
    assert_float_equal(ws[0], 1.0f / 127.0f, 1e-9);
    assert_int_equal(qw[1], -127);
    assert_int_equal(qw[0], 64); /* 63.5 -> 64 (lrintf: ties to even) */
    assert_float_equal(ws[1], 0.0f, 0.0);
    assert_int_equal(qs[1], 0);
    assert_int_equal(qw[9], 127);
    assert_int_equal(qw[10], -127);
    assert_int_equal(qs[2], 64 + 127 - 127 + 32);
}

/* ---- quantize ---------------------------------------------------------------------- */

static double max_abs_diff(const float *a, const float *b, size_t n, double *max_ref)
{
    double d = 0.0;
    *max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        *max_ref = fmax(*max_ref, fabs((double)b[i]));
    }
    return d;
}

static void check_close(aims_activation act, int isa)
{
    enum { IN = 40, H = 32, K = 5, ROWS = 300 };
    aims_model *m = make_mlp(IN, H, K, act, 11 + (uint64_t)act);
    float *x = rand_rows(ROWS, IN, 5, -1.0f, 1.0f);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(ROWS, IN, x, NULL, &ds));
    aims_model *q = NULL;
    OK(aims_model_quantize(m, ds, &q));
    assert_true(aims_model_is_quantized(q));
    assert_false(aims_model_is_quantized(m));
    assert_int_equal(aims_model_output_dim(q), K);
    if (isa != AIMSI_Q8_AUTO && aimsi_q8_isa_force(isa) != isa) {
        print_message("note: ISA %s unavailable\n", g_isa_names[isa]);
        aimsi_q8_isa_force(AIMSI_Q8_AUTO);
    }
    float *ref = malloc(ROWS * K * sizeof *ref);
    float *got = malloc(ROWS * K * sizeof *got);
    OK(aims_model_predict(m, AIMS_OUT_SCORES, x, ROWS, IN, ref, ROWS * K));
    OK(aims_model_predict(q, AIMS_OUT_SCORES, x, ROWS, IN, got, ROWS * K));
    double mref = 0.0;
    const double d = max_abs_diff(got, ref, ROWS * K, &mref);
    /* two 8-bit layers: errors of a few percent of the output range at most */
    if (d > 0.03 * mref + 1e-3) {
        fail_msg("act %d: int8 scores differ by %g (range %g)", (int)act, d, mref);
    }
    size_t agree = 0;
    for (size_t r = 0; r < ROWS; r++) {
        size_t a = 0;
        size_t b = 0;
        for (size_t k = 1; k < K; k++) {
            a = ref[r * K + k] > ref[r * K + a] ? k : a;
            b = got[r * K + k] > got[r * K + b] ? k : b;
        }
        agree += a == b;
    }
    assert_true(agree >= ROWS * 97 / 100);
    aimsi_q8_isa_force(AIMSI_Q8_AUTO);
    free(ref);
    free(got);
    free(x);
    aims_dataset_destroy(ds);
    aims_model_destroy(q);
    aims_model_destroy(m);
}

static void test_quantize_close_to_fp32(void **state)
{
    (void)state;
    check_close(AIMS_ACT_RELU, AIMSI_Q8_AUTO);
    check_close(AIMS_ACT_TANH, AIMSI_Q8_C);
    check_close(AIMS_ACT_GELU, AIMSI_Q8_AVX2);
    check_close(AIMS_ACT_SIGMOID, AIMSI_Q8_VNNI);
}

static void test_quantize_softmax_and_single_row(void **state)
{
    (void)state;
    enum { IN = 64, K = 4 };
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, IN, K, &m));
    OK(aimsi_model_finalize(m));
    aimsi_rng rng;
    aimsi_rng_seed(&rng, 3);
    for (size_t i = 0; i < m->n_params; i++) {
        m->params[i] = urand(&rng, -0.3f, 0.3f);
    }
    m->trained = 1;
    float *x = rand_rows(50, IN, 9, 0.0f, 1.0f);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(50, IN, x, NULL, &ds));
    aims_model *q = NULL;
    OK(aims_model_quantize(m, ds, &q));
    float p[K];
    float pq[K];
    OK(aims_model_predict(m, AIMS_OUT_PROBA, x, 1, IN, p, K));
    const long before = ta_allocs();
    OK(aims_model_predict(q, AIMS_OUT_PROBA, x, 1, IN, pq, K));
    assert_int_equal(ta_allocs(), before); /* the single-row path does not allocate */
    for (size_t k = 0; k < K; k++) {
        assert_float_equal(pq[k], p[k], 0.02);
    }
    free(x);
    aims_dataset_destroy(ds);
    aims_model_destroy(q);
    aims_model_destroy(m);
}

static void test_quantize_errors(void **state)
{
    (void)state;
    float x[8 * 6] = {0};
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(8, 6, x, NULL, &ds));
    aims_model *q = NULL;
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_MLP, 6, 3, &m));
    assert_int_equal(aims_model_quantize(m, ds, &q), AIMS_E_STATE); /* untrained */
    aims_model_destroy(m);

    m = make_mlp(5, 4, 3, AIMS_ACT_RELU, 1);
    assert_int_equal(aims_model_quantize(m, ds, &q), AIMS_E_INVAL); /* width 6 vs 5 */
    assert_int_equal(aims_model_quantize(NULL, ds, &q), AIMS_E_MISUSE);
    assert_int_equal(aims_model_quantize(m, NULL, &q), AIMS_E_MISUSE);
    assert_int_equal(aims_model_quantize(m, ds, NULL), AIMS_E_MISUSE);
    assert_null(q);
    aims_model_destroy(m);

    m = make_mlp(6, 4, 3, AIMS_ACT_RELU, 1);
    OK(aims_model_quantize(m, ds, &q)); /* all-zero calibration data is fine */
    aims_model *qq = NULL;
    assert_int_equal(aims_model_quantize(q, ds, &qq), AIMS_E_STATE); /* already int8 */
    float out[3];
    OK(aims_model_predict(q, AIMS_OUT_SCORES, x, 1, 6, out, 3));
    for (size_t k = 0; k < 3; k++) {
        assert_true(isfinite(out[k]));
    }
    aims_model_destroy(q);
    aims_model_destroy(m);

    OK(aims_model_create(AIMS_MODEL_KIND_TEXT, 100, 3, &m));
    assert_int_equal(aims_model_quantize(m, ds, &q), AIMS_E_UNSUPPORTED);
    aims_model_destroy(m);

    aims_dataset_destroy(ds);
}

static void test_quantize_save_load_clone(void **state)
{
    (void)state;
    enum { IN = 30, K = 4, ROWS = 64 };
    aims_model *m = make_mlp(IN, 24, K, AIMS_ACT_RELU, 77);
    float *x = rand_rows(ROWS, IN, 8, -2.0f, 2.0f);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(ROWS, IN, x, NULL, &ds));
    aims_model *q = NULL;
    OK(aims_model_quantize(m, ds, &q));
    char path[64];
    snprintf(path, sizeof path, "/tmp/aims_test_quant_%ld.aimsm", (long)getpid());
    OK(aims_model_save(q, path));
    aims_model *l = NULL;
    OK(aims_model_load(path, &l));
    unlink(path);
    aims_model *c = NULL;
    OK(aims_model_clone(q, &c));
    assert_true(aims_model_is_quantized(l));
    assert_true(aims_model_is_quantized(c));
    float a[ROWS * K];
    float b[ROWS * K];
    float d[ROWS * K];
    OK(aims_model_predict(q, AIMS_OUT_SCORES, x, ROWS, IN, a, ROWS * K));
    OK(aims_model_predict(l, AIMS_OUT_SCORES, x, ROWS, IN, b, ROWS * K));
    OK(aims_model_predict(c, AIMS_OUT_SCORES, x, ROWS, IN, d, ROWS * K));
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(a, d, sizeof a);
    free(x);
    aims_model_destroy(l);
    aims_model_destroy(c);
    aims_model_destroy(q);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

/* ---- allocation failures ------------------------------------------------------------- */

typedef struct qctx {
    aims_model *m;
    aims_dataset *ds;
} qctx;

static aims_status op_quantize(void *p)
{
    qctx *c = p;
    aims_model *q = NULL;
    const aims_status rc = aims_model_quantize(c->m, c->ds, &q);
    if (rc == AIMS_OK) {
        float out[12];
        const float *x = aims_dataset_features(c->ds);
        const aims_status rp = aims_model_predict(q, AIMS_OUT_PROBA, x, 4, 12, out, 12);
        aims_model_destroy(q);
        return rp;
    }
    return rc;
}

static void test_quantize_alloc_failures(void **state)
{
    (void)state;
    qctx c;
    c.m = make_mlp(12, 8, 3, AIMS_ACT_RELU, 5);
    float *x = rand_rows(20, 12, 1, -1.0f, 1.0f);
    OK(aims_dataset_create_dense(20, 12, x, NULL, &c.ds));
    ta_fail_loop("aims_model_quantize", op_quantize, &c);
    free(x);
    aims_dataset_destroy(c.ds);
    aims_model_destroy(c.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_q8_gemv_paths_identical, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_q8_quantize_row_paths_identical, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_q8_weights_per_channel, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_quantize_close_to_fp32, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_quantize_softmax_and_single_row, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_quantize_errors, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_quantize_save_load_clone, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_quantize_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
