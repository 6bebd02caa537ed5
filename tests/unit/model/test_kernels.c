/*
 * test_kernels.c -- the kernels of issue 15 item 6 (src/model/gemm.c epilogue,
 * gemv.c, the packed int8 GEMV of quant.c) against the code they replace.
 *
 *   - the own GEMM's epilogue (bias, ReLU, ReLU gate, SGD step) gives the same
 *     bits as the GEMM followed by the separate passes, fp32 and bf16, every
 *     transpose combination, edge shapes, on a 3-thread pool;
 *   - training with the epilogues fused gives the same weights, bit for bit,
 *     as training with the separate passes (SGD with and without weight decay,
 *     Adam with and without L2, AdamW, dropout, bf16), so models are what
 *     they were before the fusion;
 *   - bf16 training from the batch the gather rounds (train_dense.c) gives
 *     the same weights, bit for bit, as rounding the fp32 batch in every
 *     GEMM (odd widths and batches included);
 *   - the single-row GEMV on every kernel the CPU has (AVX-512, AVX2, C) is
 *     close to a double-precision reference for awkward shapes;
 *   - the int8 panel kernel over pre-packed weights gives exactly the int32
 *     sums of the row-major C kernel, and a quantized model keeps its panels
 *     through save/load and clone.
 * Kernels the CPU lacks are skipped (and say so).
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
#include "model/aimsi_train.h"
#include "testalloc.h"
#include "train_fix.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

/* ---- GEMM epilogue == GEMM + passes ------------------------------------------------ */

typedef struct shape {
    size_t m, n, k;
} shape;

static void epi_one(aimsi_pool *pool, int prec, int ta, int tb, shape s, int variant,
                    uint64_t seed)
{
    const size_t lda = (ta ? s.m : s.k) + 1;
    const size_t ldb = (tb ? s.k : s.n) + 3;
    const size_t ldc = s.n + 2;
    const size_t ldw = s.n + 5;
    float *a = tf_filled((ta ? s.k : s.m) * lda, &seed);
    float *b = tf_filled((tb ? s.n : s.k) * ldb, &seed);
    float *c0 = tf_filled(s.m * ldc, &seed);
    float *bias = tf_filled(s.n, &seed);
    float *gate = tf_filled(s.m * ldc, &seed);
    float *w0 = tf_filled(s.m * ldw, &seed);
    for (size_t i = 0; i < s.m * ldc; i += 7) {
        gate[i] = 0.0f; /* the boundary: "> 0" is false */
    }
    float *c1 = tf_copy_of(c0, s.m * ldc);
    float *c2 = tf_copy_of(c0, s.m * ldc);
    float *w1 = tf_copy_of(w0, s.m * ldw);
    float *w2 = tf_copy_of(w0, s.m * ldw);
    aimsi_gemm_epi e = {0};
    float beta = 0.0f;
    switch (variant) {
    case 0: /* forward: bias + ReLU */
        e.bias = bias;
        e.relu = 1;
        break;
    case 1: /* ReLU backward */
        e.gate = gate;
        break;
    case 2: /* SGD step into a momentum buffer */
        beta = 1.0f;
        e.lr = 0.1f;
        e.mom = 0.9f;
        break;
    default: /* everything, with weight decay and beta 0.5 */
        beta = 0.5f;
        e.bias = bias;
        e.relu = 1;
        e.gate = gate;
        e.lr = 0.05f;
        e.mom = 0.8f;
        e.wd = 0.01f;
        break;
    }
    if (variant >= 2) {
        e.ldw = ldw;
    }
    void *ws = aimsi_malloc(aimsi_gemm_own_ws_bytes(prec, s.m, s.n, s.k));
    assert_non_null(ws);
    aimsi_gemm_epi e1 = e;
    e1.w = variant >= 2 ? w1 : NULL;
    aimsi_gemm_own_epi(pool, ws, prec, ta, tb, s.m, s.n, s.k, a, lda, b, ldb, beta, c1, ldc,
                       &e1);
    aimsi_gemm_epi e2 = e;
    e2.w = variant >= 2 ? w2 : NULL;
    aimsi_gemm_own(NULL, ws, prec, ta, tb, s.m, s.n, s.k, a, lda, b, ldb, beta, c2, ldc);
    aimsi_gemm_epi_apply(&e2, s.m, s.n, c2, ldc);
    for (size_t i = 0; i < s.m; i++) {
        for (size_t j = 0; j < ldc; j++) {
            if (memcmp(&c1[i * ldc + j], &c2[i * ldc + j], sizeof *c1) != 0) {
                fail_msg("prec %d ta %d tb %d %zux%zux%zu variant %d C(%zu,%zu): fused %.9g, "
                         "passes %.9g",
                         prec, ta, tb, s.m, s.n, s.k, variant, i, j, (double)c1[i * ldc + j],
                         (double)c2[i * ldc + j]);
            }
        }
    }
    assert_memory_equal(w1, w2, s.m * ldw * sizeof *w1);
    aimsi_free(ws);
    aimsi_free(w2);
    aimsi_free(w1);
    aimsi_free(c2);
    aimsi_free(c1);
    aimsi_free(w0);
    aimsi_free(gate);
    aimsi_free(bias);
    aimsi_free(c0);
    aimsi_free(b);
    aimsi_free(a);
}

static void epi_case(int prec)
{
    if (!aimsi_gemm_own_available(prec)) {
        print_message("note: the own %s GEMM needs AVX-512%s\n",
                      prec == AIMSI_GEMM_BF16 ? "bf16" : "fp32",
                      prec == AIMSI_GEMM_BF16 ? "_BF16" : "");
        skip();
    }
    aimsi_pool *pool = NULL;
    OK(aimsi_pool_create(3, &pool));
    static const shape shapes[] = {{1, 1, 1},   {8, 32, 2},   {7, 31, 3},    {9, 33, 33},
                                   {13, 70, 101}, {64, 10, 128}, {24, 784, 16}, {3, 17, 1000},
                                   {96, 100, 40}, {256, 784, 128}};
    uint64_t seed = 99;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int v = 0; v < 4; v++) {
            const int ta = (int)((s + (size_t)v) & 1u);
            const int tb = (int)(((s + (size_t)v) >> 1) & 1u);
            epi_one(pool, prec, ta, tb, shapes[s], v, seed++);
        }
    }
    aimsi_pool_destroy(pool);
}

static void test_gemm_epilogue_f32(void **state)
{
    (void)state;
    epi_case(AIMSI_GEMM_F32);
}

/* The same with the AVX2 kernel forced on (it runs on AVX-512 CPUs too). */
static void test_gemm_epilogue_f32_avx2(void **state)
{
    (void)state;
    tf_avx2_forced(epi_case, AIMSI_GEMM_F32);
}

static void test_gemm_epilogue_bf16(void **state)
{
    (void)state;
    epi_case(AIMSI_GEMM_BF16);
}

/* ---- fp32 B read in place == packed ------------------------------------------------- */

/* C = op(A) B + beta C (B stored k x n, so full panels are read in place)
 * with and without the in-place read: the same bits, with the SGD epilogue
 * and without, full panels and a ragged right edge, 1 and 3 threads. */
static void test_gemm_direct_b_bit_identical(void **state)
{
    (void)state;
    if (!aimsi_gemm_own_available(AIMSI_GEMM_F32)) {
        print_message("note: the own fp32 GEMM needs AVX-512\n");
        skip();
    }
    aimsi_pool *pool = NULL;
    OK(aimsi_pool_create(3, &pool));
    static const shape shapes[] = {{8, 32, 2}, {7, 31, 3}, {9, 64, 33}, {64, 100, 128},
                                   {256, 784, 128}, {13, 70, 5}};
    uint64_t seed = 7;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int v = 0; v < 4; v++) {
            const shape sh = shapes[s];
            const int ta = v & 1;
            const size_t lda = (ta ? sh.m : sh.k) + 1;
            const size_t ldb = sh.n + (v >= 2 ? 3 : 0);
            const size_t ldc = sh.n + 2;
            float *a = tf_filled((ta ? sh.k : sh.m) * lda, &seed);
            float *b = tf_filled(sh.k * ldb, &seed);
            float *c1 = tf_filled(sh.m * ldc, &seed);
            float *w1 = tf_filled(sh.m * sh.n, &seed);
            float *c2 = tf_copy_of(c1, sh.m * ldc);
            float *w2 = tf_copy_of(w1, sh.m * sh.n);
            aimsi_gemm_epi e = {0};
            e.ldw = sh.n;
            e.lr = 0.1f;
            e.mom = 0.9f;
            void *ws = aimsi_malloc(aimsi_gemm_own_ws_bytes(AIMSI_GEMM_F32, sh.m, sh.n, sh.k));
            assert_non_null(ws);
            aimsi_pool *p = s % 2 == 0 ? pool : NULL;
            for (int direct = 1; direct >= 0; direct--) {
                const int before = aimsi_gemm_direct_b_force(direct);
                aimsi_gemm_epi ed = e;
                ed.w = direct ? w1 : w2;
                aimsi_gemm_own_epi(p, ws, AIMSI_GEMM_F32, ta, 0, sh.m, sh.n, sh.k, a, lda, b,
                                   ldb, 1.0f, direct ? c1 : c2, ldc, v >= 2 ? &ed : NULL);
                aimsi_gemm_direct_b_force(before);
            }
            if (memcmp(c1, c2, sh.m * ldc * sizeof *c1) != 0 ||
                memcmp(w1, w2, sh.m * sh.n * sizeof *w1) != 0) {
                fail_msg("%zux%zux%zu ta %d variant %d: B read in place gave other bits", sh.m,
                         sh.n, sh.k, ta, v);
            }
            aimsi_free(ws);
            aimsi_free(w2);
            aimsi_free(c2);
            aimsi_free(w1);
            aimsi_free(c1);
            aimsi_free(b);
            aimsi_free(a);
        }
    }
    aimsi_pool_destroy(pool);
}

/* ---- fused training == separate passes --------------------------------------------- */

/* rows x cols features, 4 classes from a fixed linear rule. */
static aims_dataset *rule_data_cols(size_t rows, size_t cols, uint64_t seed)
{
    return tf_rule_data(rows, cols, seed);
}

static aims_dataset *rule_data(size_t rows, uint64_t seed)
{
    return rule_data_cols(rows, 256, seed);
}

typedef struct train_case {
    int64_t opt, precision;
    double wd, dropout;
} train_case;

/* MLP 256-128(ReLU)-64(ReLU)-4, batch 64: the two hidden layers' GEMMs run in
 * the own kernels, so every epilogue (bias+ReLU, ReLU gate, SGD) is used. */
static float *train_params(const aims_dataset *ds, const train_case *c, int fused, size_t *n)
{
    const tf_net net = {AIMS_MODEL_KIND_MLP, 256, 4, {128, 64, 0}, AIMS_ACT_RELU,
                        c->precision, c->dropout};
    const tf_hyper h = {.opt = c->opt, .epochs = 2, .batch = 64, .seed = 5, .threads = 2,
                        .lr = c->opt == 0 ? 0.05 : 0.002, .wd = c->wd};
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    OK(tf_make(&net, &h, &m, &t));
    const int before = aimsi_train_fusion_force(fused);
    OK(aims_trainer_fit(t, ds, NULL));
    aimsi_train_fusion_force(before);
    return tf_params_take(m, t, n);
}

static void test_fused_training_bit_identical(void **state)
{
    (void)state;
    if (!aimsi_gemm_own_available(AIMSI_GEMM_F32)) {
        print_message("note: no own kernels on this CPU, nothing is fused\n");
        skip();
    }
    aims_dataset *ds = rule_data(640, 21);
    static const train_case cases[] = {
        {0, 0, 0.0, 0.0},  {0, 0, 1e-3, 0.0}, {1, 0, 0.0, 0.0}, {1, 0, 1e-3, 0.0},
        {2, 0, 1e-2, 0.0}, {0, 0, 0.0, 0.2},  {0, 1, 0.0, 0.0}, {1, 1, 0.0, 0.0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n1 = 0;
        size_t n2 = 0;
        float *p1 = train_params(ds, &cases[i], 1, &n1);
        float *p2 = train_params(ds, &cases[i], 0, &n2);
        assert_int_equal(n1, n2);
        if (memcmp(p1, p2, n1 * sizeof *p1) != 0) {
            fail_msg("case %zu (opt %lld, precision %lld, wd %g, dropout %g): fused and "
                     "separate passes trained different weights",
                     i, (long long)cases[i].opt, (long long)cases[i].precision, cases[i].wd,
                     cases[i].dropout);
        }
        aimsi_free(p2);
        aimsi_free(p1);
    }
    aims_dataset_destroy(ds);
}

/* ---- the batch rounded by the gather == rounded by the GEMMs -------------------------- */

/* MLP cols-128(ReLU)-4 in bf16, 2 epochs; x16 = 0 forbids the bf16 batch
 * (the GEMMs round the fp32 batch). *seen: the run used it. */
static float *train_x16(const aims_dataset *ds, size_t cols, int64_t opt, int64_t batch,
                        int x16, size_t *n, int *seen)
{
    const tf_net net = {AIMS_MODEL_KIND_MLP, cols, 4, {128, 0, 0}, AIMS_ACT_RELU, 1, 0.0};
    const tf_hyper h = {.opt = opt, .epochs = 2, .batch = batch, .seed = 9, .threads = 2,
                        .lr = opt == 0 ? 0.05 : 0.002};
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    OK(tf_make(&net, &h, &m, &t));
    tf_begin_forced(t, ds, aimsi_train_x16_force, x16);
    *seen = t->xb16 != NULL;
    tf_steps_to_end(t);
    return tf_params_take(m, t, n);
}

static void test_bf16_rows_bit_identical(void **state)
{
    (void)state;
    if (!aimsi_gemm_own_available(AIMSI_GEMM_BF16)) {
        print_message("note: no AVX512_BF16 on this CPU, no bf16 batch\n");
        skip();
    }
    /* an odd width (a padded slot in every row) and an odd batch (an unpaired
     * last row in the weight gradient's B), SGD and Adam */
    static const struct {
        size_t cols;
        int64_t opt, batch;
    } cases[] = {{256, 0, 64}, {255, 0, 63}, {255, 1, 63}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        aims_dataset *ds = rule_data_cols(640, cases[i].cols, 31 + i);
        size_t n1 = 0;
        size_t n2 = 0;
        int seen1 = 0;
        int seen2 = 1;
        float *p1 = train_x16(ds, cases[i].cols, cases[i].opt, cases[i].batch, 1, &n1, &seen1);
        float *p2 = train_x16(ds, cases[i].cols, cases[i].opt, cases[i].batch, 0, &n2, &seen2);
        assert_true(seen1);
        assert_false(seen2);
        assert_int_equal(n1, n2);
        if (memcmp(p1, p2, n1 * sizeof *p1) != 0) {
            fail_msg("case %zu (%zu columns, opt %lld, batch %lld): training from the bf16 "
                     "batch gave different weights",
                     i, cases[i].cols, (long long)cases[i].opt, (long long)cases[i].batch);
        }
        aimsi_free(p2);
        aimsi_free(p1);
        aims_dataset_destroy(ds);
    }
}

/* ---- the next batch gathered during a step == gathered at its start ------------------ */

typedef struct next_case {
    int64_t precision, opt, nesterov, batch, layers;
    double dropout;
} next_case;

/* MLP 255-128(ReLU)[-64(ReLU)]-4, 2 epochs of 640 rows, 2 threads; next = 0
 * forbids the next-batch gather. *seen: the run gathered ahead. */
static float *train_next(const aims_dataset *ds, const next_case *c, int next, size_t *n,
                         int *seen)
{
    const tf_net net = {AIMS_MODEL_KIND_MLP, 255, 4, {128, c->layers > 2 ? 64 : 0, 0},
                        AIMS_ACT_RELU, c->precision, c->dropout};
    const tf_hyper h = {.opt = c->opt, .epochs = 2, .batch = c->batch, .seed = 13,
                        .threads = 2, .lr = c->opt == 0 ? 0.05 : 0.002,
                        .nesterov = c->nesterov};
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    OK(tf_make(&net, &h, &m, &t));
    tf_begin_forced(t, ds, aimsi_train_next_force, next);
    *seen = t->nx != NULL;
    tf_steps_to_end(t);
    return tf_params_take(m, t, n);
}

/* Every optimizer path (fused SGD, Nesterov through the pooled update, Adam),
 * fp32 and the bf16 batch, dropout, a short last batch, two and three layers. */
static void test_next_batch_bit_identical(void **state)
{
    (void)state;
    if (!aimsi_gemm_own_available(AIMSI_GEMM_F32)) {
        print_message("note: no own kernels on this CPU, so no training pool\n");
        skip();
    }
    static const next_case cases[] = {
        {0, 0, 0, 64, 2, 0.0}, {0, 0, 0, 63, 3, 0.0}, {0, 0, 1, 64, 2, 0.0},
        {0, 1, 0, 63, 2, 0.0}, {0, 0, 0, 64, 3, 0.2}, {1, 0, 0, 63, 2, 0.0},
        {1, 1, 0, 64, 3, 0.0}};
    aims_dataset *ds = rule_data_cols(640, 255, 41);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n1 = 0;
        size_t n2 = 0;
        int seen1 = 0;
        int seen2 = 1;
        float *p1 = train_next(ds, &cases[i], 1, &n1, &seen1);
        float *p2 = train_next(ds, &cases[i], 0, &n2, &seen2);
        assert_true(seen1);
        assert_false(seen2);
        assert_int_equal(n1, n2);
        if (memcmp(p1, p2, n1 * sizeof *p1) != 0) {
            fail_msg("case %zu (precision %lld, opt %lld, nesterov %lld, batch %lld, %lld "
                     "layers, dropout %g): the next-batch gather changed the weights",
                     i, (long long)cases[i].precision, (long long)cases[i].opt,
                     (long long)cases[i].nesterov, (long long)cases[i].batch,
                     (long long)cases[i].layers, cases[i].dropout);
        }
        aimsi_free(p2);
        aimsi_free(p1);
    }
    aims_dataset_destroy(ds);
}

/* ---- single-row GEMV ------------------------------------------------------------------ */

static void gemv_check(size_t out, size_t in, uint64_t seed)
{
    float *w = tf_filled(out * in, &seed);
    float *x = tf_filled(in, &seed);
    float *b = tf_filled(out, &seed);
    float *y = aimsi_malloc((out + 1) * sizeof *y);
    assert_non_null(y);
    y[out] = 12345.0f; /* nothing past out is written */
    aimsi_gemv_bias(w, out, in, x, b, y);
    for (size_t o = 0; o < out; o++) {
        double want = (double)b[o];
        double mag = fabs(want);
        for (size_t i = 0; i < in; i++) {
            want += (double)w[o * in + i] * (double)x[i];
            mag += fabs((double)w[o * in + i] * (double)x[i]);
        }
        if (fabs((double)y[o] - want) > 2e-7 * (mag + 1.0) * sqrt((double)in + 1.0) * 4.0) {
            fail_msg("gemv %zux%zu row %zu: got %.9g want %.9g", out, in, o, (double)y[o],
                     want);
        }
    }
    assert_true(y[out] == 12345.0f);
    aimsi_free(y);
    aimsi_free(b);
    aimsi_free(x);
    aimsi_free(w);
}

static void test_gemv_every_kernel(void **state)
{
    (void)state;
    static const char *const names[] = {"", "C", "AVX2", "AVX-512"};
    static const size_t outs[] = {1, 7, 8, 9, 10, 16, 17, 256};
    static const size_t ins[] = {1, 3, 8, 15, 16, 17, 33, 784};
    for (int isa = 1; isa <= 3; isa++) {
        if (aimsi_gemv_isa_force(isa) != isa) {
            print_message("note: GEMV kernel %s unavailable\n", names[isa]);
            continue;
        }
        uint64_t seed = 3 + (uint64_t)isa;
        for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
            for (size_t j = 0; j < sizeof ins / sizeof ins[0]; j++) {
                gemv_check(outs[i], ins[j], seed++);
            }
        }
    }
    assert_true(aimsi_gemv_isa_force(0) >= 1);
}

/* ---- int8 panels ------------------------------------------------------------------------ */

static void q8_packed_check(size_t in, size_t out, uint64_t seed)
{
    aimsi_dense L;
    memset(&L, 0, sizeof L);
    L.in = in;
    L.out = out;
    L.qw = aimsi_malloc(aimsi_q8_qw_bytes(in, out));
    uint8_t *xu = aimsi_malloc((in + 3) / 4 * 4);
    int32_t *want = aimsi_malloc((out + 1) * sizeof *want);
    int32_t *got = aimsi_malloc((out + 1) * sizeof *got);
    assert_non_null(L.qw);
    assert_non_null(xu);
    assert_non_null(want);
    assert_non_null(got);
    for (size_t i = 0; i < in * out; i++) {
        L.qw[i] = (int8_t)(tf_frand(&seed) * 127.0f);
    }
    for (size_t i = 0; i < in; i++) {
        xu[i] = (uint8_t)(tf_frand(&seed) * 127.0f + 128.0f);
    }
    memset(xu + in, 0, (in + 3) / 4 * 4 - in);
    aimsi_q8_pack(&L);
    got[out] = want[out] = -7;
    assert_int_equal(aimsi_q8_isa_force(AIMSI_Q8_C), AIMSI_Q8_C);
    aimsi_q8_gemv(L.qw, in, out, xu, want);
    aimsi_q8_isa_force(AIMSI_Q8_AUTO);
    aimsi_q8_gemv_packed(&L, xu, got);
    assert_memory_equal(got, want, (out + 1) * sizeof *got);
    aimsi_free(got);
    aimsi_free(want);
    aimsi_free(xu);
    aimsi_free(L.qw);
}

static void test_q8_packed_exact(void **state)
{
    (void)state;
    if (aimsi_q8_isa_force(AIMSI_Q8_VNNI) != AIMSI_Q8_VNNI) {
        print_message("note: no VNNI: the panels are checked through the fallback only\n");
    }
    aimsi_q8_isa_force(AIMSI_Q8_AUTO);
    static const size_t ins[] = {1, 3, 4, 5, 63, 64, 65, 256, 784};
    static const size_t outs[] = {1, 10, 15, 16, 17, 33, 100, 256, 257, 300, 530};
    uint64_t seed = 17;
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        for (size_t j = 0; j < sizeof outs / sizeof outs[0]; j++) {
            q8_packed_check(ins[i], outs[j], seed++);
        }
    }
}

/* A quantized model predicts the same bits after save/load and clone (both
 * rebuild or copy the panels) as the model quantize() made. */
static void test_q8_panels_survive_load_and_clone(void **state)
{
    (void)state;
    aims_dataset *ds = rule_data(300, 8);
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_MLP, 256, 4, &m));
    OK(aims_model_add_dense(m, 40, AIMS_ACT_RELU));
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 1));
    OK(aims_trainer_fit(t, ds, NULL));
    aims_model *q = NULL;
    OK(aims_model_quantize(m, ds, &q));
    char path[] = "/tmp/aims-test-kernels-XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    OK(aims_model_save(q, path));
    aims_model *l = NULL;
    OK(aims_model_load(path, &l));
    remove(path);
    aims_model *c = NULL;
    OK(aims_model_clone(q, &c));
    const float *x = aims_dataset_features(ds);
    float y[3][4];
    for (size_t r = 0; r < 20; r++) {
        OK(aims_model_predict(q, AIMS_OUT_SCORES, x + r * 256, 1, 256, y[0], 4));
        OK(aims_model_predict(l, AIMS_OUT_SCORES, x + r * 256, 1, 256, y[1], 4));
        OK(aims_model_predict(c, AIMS_OUT_SCORES, x + r * 256, 1, 256, y[2], 4));
        assert_memory_equal(y[0], y[1], sizeof y[0]);
        assert_memory_equal(y[0], y[2], sizeof y[0]);
    }
    aims_model_destroy(c);
    aims_model_destroy(l);
    aims_model_destroy(q);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gemm_epilogue_f32, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_epilogue_f32_avx2, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_epilogue_bf16, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_fused_training_bit_identical, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_bf16_rows_bit_identical, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_direct_b_bit_identical, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_next_batch_bit_identical, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemv_every_kernel, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_q8_packed_exact, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_q8_panels_survive_load_and_clone, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
