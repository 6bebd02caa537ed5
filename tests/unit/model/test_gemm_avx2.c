/*
 * test_gemm_avx2.c -- the own fp32 GEMM's AVX2+FMA kernel (src/model/gemm_avx2.c),
 * forced on (aimsi_gemm_avx2_force) so it runs on AVX-512 CPUs as well.
 *
 * Against OpenBLAS's sgemm within a rounding tolerance over ragged m, n, k
 * (1, 7, 8, 9, 31, 33, 100, and the P1 shapes with 784), beta 0 and 1, the
 * trans flags the trainer uses (and the fourth); the same bits for 1, 2 and
 * 3 threads, with and without the weight-updating epilogue (which splits by
 * rows); and, on a CPU that has AVX-512, the same bits as the AVX-512
 * kernel. test_gemm and test_kernels check the rest (a double reference,
 * every epilogue == its separate pass) with whichever kernel the CPU picks.
 * Skipped, with a note, on a CPU without AVX2 and FMA.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "model/aimsi_model.h"
#include "testalloc.h"
#include "train_fix.h"

static void skip_without_avx2(void)
{
    if (aimsi_gemm_isa() < AIMSI_GEMM_ISA_AVX2) {
        print_message("note: no AVX2+FMA on this CPU, no AVX2 kernel to test\n");
        skip();
    }
}

typedef struct shape {
    size_t m, n, k;
} shape;

/* Operands of one GEMM with padded leading dimensions. */
typedef struct operands {
    int ta, tb;
    shape s;
    size_t lda, ldb, ldc;
    float *a, *b, *c0;
} operands;

static operands operands_make(int ta, int tb, shape s, uint64_t seed)
{
    operands o = {.ta = ta, .tb = tb, .s = s};
    o.lda = (ta ? s.m : s.k) + 3;
    o.ldb = (tb ? s.k : s.n) + 5;
    o.ldc = s.n + 2;
    o.a = tf_filled((ta ? s.k : s.m) * o.lda, &seed);
    o.b = tf_filled((tb ? s.n : s.k) * o.ldb, &seed);
    o.c0 = tf_filled(s.m * o.ldc, &seed);
    return o;
}

static void operands_free(operands *o)
{
    aimsi_free(o->c0);
    aimsi_free(o->b);
    aimsi_free(o->a);
}

/* C = op(A) op(B) + beta C0 through the own GEMM (epilogue e, NULL: none)
 * on pool; returns C (aimsi_free it). */
static float *own(const operands *o, aimsi_pool *pool, float beta, const aimsi_gemm_epi *e)
{
    const shape s = o->s;
    float *c = tf_copy_of(o->c0, s.m * o->ldc);
    void *ws = tf_alloc(aimsi_gemm_own_ws_bytes(AIMSI_GEMM_F32, s.m, s.n, s.k));
    aimsi_gemm_own_epi(pool, ws, AIMSI_GEMM_F32, o->ta, o->tb, s.m, s.n, s.k, o->a, o->lda,
                       o->b, o->ldb, beta, c, o->ldc, e);
    aimsi_free(ws);
    return c;
}

static void vs_sgemm(aimsi_pool *pool, int ta, int tb, shape s, float beta, uint64_t seed)
{
    operands o = operands_make(ta, tb, s, seed);
    float *c = own(&o, pool, beta, NULL);
    float *want = tf_copy_of(o.c0, s.m * o.ldc);
    aimsi_sgemm(ta, tb, s.m, s.n, s.k, 1.0f, o.a, o.lda, o.b, o.ldb, beta, want, o.ldc);
    for (size_t i = 0; i < s.m; i++) {
        for (size_t j = 0; j < o.ldc; j++) {
            const size_t at = i * o.ldc + j;
            if (j >= s.n) { /* past column n: never written */
                assert_memory_equal(&c[at], &o.c0[at], sizeof *c);
                continue;
            }
            double mag = fabs((double)beta * (double)o.c0[at]);
            for (size_t kk = 0; kk < s.k; kk++) {
                const float x = ta ? o.a[kk * o.lda + i] : o.a[i * o.lda + kk];
                const float y = tb ? o.b[j * o.ldb + kk] : o.b[kk * o.ldb + j];
                mag += fabs((double)x * (double)y);
            }
            /* two fp32 summation orders: each within k eps of the sum of |terms| */
            const double tol = 2.0 * (double)(s.k + 2) * 6e-8 * (mag + 1e-30);
            if (fabs((double)c[at] - (double)want[at]) > tol) {
                fail_msg("ta=%d tb=%d %zux%zux%zu beta %g (%zu,%zu): own %.9g sgemm %.9g", ta,
                         tb, s.m, s.n, s.k, (double)beta, i, j, (double)c[at],
                         (double)want[at]);
            }
        }
    }
    aimsi_free(want);
    aimsi_free(c);
    operands_free(&o);
}

static void test_gemm_avx2_vs_sgemm(void **state)
{
    (void)state;
    skip_without_avx2();
    const int was = aimsi_gemm_avx2_force(1);
    aimsi_pool *pool = NULL;
    assert_int_equal(aimsi_pool_create(2, &pool), AIMS_OK);
    static const size_t dims[] = {1, 7, 8, 9, 31, 33, 100};
    static const int flags[4][2] = {{0, 1}, {1, 0}, {0, 0}, {1, 1}}; /* forward, dW, dX, rest */
    const size_t nd = sizeof dims / sizeof dims[0];
    uint64_t seed = 15;
    for (size_t x = 0; x < nd * nd * nd; x++) {
        const shape s = {dims[x % nd], dims[x / nd % nd], dims[x / (nd * nd)]};
        const int *f = flags[x % 4];
        vs_sgemm(pool, f[0], f[1], s, (x / 4) % 2 ? 1.0f : 0.0f, seed++);
    }
    static const shape big[] = {{128, 256, 784}, {256, 784, 128}, {100, 784, 33}, {33, 10, 784}};
    for (size_t b = 0; b < sizeof big / sizeof big[0]; b++) {
        for (size_t f = 0; f < 3; f++) {
            vs_sgemm(pool, flags[f][0], flags[f][1], big[b], (float)(b % 2), seed++);
        }
    }
    aimsi_pool_destroy(pool);
    aimsi_gemm_avx2_force(was);
}

/* The epilogue variants the trainer uses (rows: the forward's bias + ReLU;
 * the dX GEMM's gate; the SGD step, which splits the work by rows). */
typedef struct epi_bufs {
    aimsi_gemm_epi e;
    float *bias, *gate, *w;
} epi_bufs;

static epi_bufs epi_make(int variant, const operands *o, uint64_t seed)
{
    epi_bufs b = {0};
    const shape s = o->s;
    if (variant == 1) {
        b.bias = tf_filled(s.n, &seed);
        b.e.bias = b.bias;
        b.e.relu = 1;
    } else if (variant == 2) {
        b.gate = tf_filled(s.m * o->ldc, &seed);
        b.e.gate = b.gate;
    } else if (variant == 3) {
        b.w = tf_filled(s.m * s.n, &seed);
        b.e.w = b.w;
        b.e.ldw = s.n;
        b.e.lr = 0.05f;
        b.e.mom = 0.9f;
        b.e.wd = 1e-3f;
    }
    return b;
}

static void epi_free(epi_bufs *b)
{
    aimsi_free(b->w);
    aimsi_free(b->gate);
    aimsi_free(b->bias);
}

/* C (and the updated w) of one GEMM with epilogue variant v on pool. */
static float *own_epi(const operands *o, aimsi_pool *pool, int v, float **w_out)
{
    epi_bufs b = epi_make(v, o, 77);
    float *c = own(o, pool, v == 3 ? 1.0f : 0.0f, v == 0 ? NULL : &b.e);
    *w_out = b.w;
    b.w = NULL;
    epi_free(&b);
    return c;
}

static void same_bits(const operands *o, int v, const float *c1, const float *w1,
                      const float *c2, const float *w2, const char *what)
{
    const shape s = o->s;
    if (memcmp(c1, c2, s.m * o->ldc * sizeof *c1) != 0 ||
        (w1 != NULL && memcmp(w1, w2, s.m * s.n * sizeof *w1) != 0)) {
        fail_msg("%s: ta=%d tb=%d %zux%zux%zu epilogue %d: not the same bits", what, o->ta, o->tb,
                 s.m, s.n, s.k, v);
    }
}

static const struct {
    int ta, tb;
    shape s;
} g_cases[] = {
    {0, 1, {128, 256, 784}}, /* P1's forward */
    {1, 0, {256, 784, 128}}, /* P1's weight gradient (row split with the SGD step) */
    {0, 0, {128, 784, 256}}, /* a dX */
    {0, 1, {37, 70, 101}},   {1, 0, {100, 33, 9}}, {0, 0, {9, 31, 7}},
};

static void test_gemm_avx2_threads_bit_identical(void **state)
{
    (void)state;
    skip_without_avx2();
    const int was = aimsi_gemm_avx2_force(1);
    aimsi_pool *pools[3] = {NULL, NULL, NULL}; /* 1 (the caller), 2, 3 threads */
    assert_int_equal(aimsi_pool_create(2, &pools[1]), AIMS_OK);
    assert_int_equal(aimsi_pool_create(3, &pools[2]), AIMS_OK);
    for (size_t x = 0; x < sizeof g_cases / sizeof g_cases[0]; x++) {
        operands o = operands_make(g_cases[x].ta, g_cases[x].tb, g_cases[x].s, 300 + x);
        for (int v = 0; v < 4; v++) {
            float *w1 = NULL;
            float *c1 = own_epi(&o, pools[0], v, &w1);
            for (size_t p = 1; p < 3; p++) {
                float *w2 = NULL;
                float *c2 = own_epi(&o, pools[p], v, &w2);
                same_bits(&o, v, c1, w1, c2, w2, p == 1 ? "1 vs 2 threads" : "1 vs 3 threads");
                aimsi_free(w2);
                aimsi_free(c2);
            }
            aimsi_free(w1);
            aimsi_free(c1);
        }
        operands_free(&o);
    }
    aimsi_pool_destroy(pools[2]);
    aimsi_pool_destroy(pools[1]);
    aimsi_gemm_avx2_force(was);
}

/* Both kernels run each element's fma chain in the same order: an fp32 run
 * trains the same bits on either kind of CPU. */
static void test_gemm_avx2_matches_avx512(void **state)
{
    (void)state;
    if (aimsi_gemm_isa() < AIMSI_GEMM_ISA_AVX512) {
        print_message("note: no AVX-512 on this CPU, nothing to compare the AVX2 kernel with\n");
        skip();
    }
    aimsi_pool *pool = NULL;
    assert_int_equal(aimsi_pool_create(2, &pool), AIMS_OK);
    for (size_t x = 0; x < sizeof g_cases / sizeof g_cases[0]; x++) {
        operands o = operands_make(g_cases[x].ta, g_cases[x].tb, g_cases[x].s, 500 + x);
        for (int v = 0; v < 4; v++) {
            float *w1 = NULL;
            float *w2 = NULL;
            const int was = aimsi_gemm_avx2_force(1);
            float *c1 = own_epi(&o, pool, v, &w1);
            aimsi_gemm_avx2_force(0);
            float *c2 = own_epi(&o, pool, v, &w2);
            aimsi_gemm_avx2_force(was);
            same_bits(&o, v, c1, w1, c2, w2, "AVX2 vs AVX-512");
            aimsi_free(w2);
            aimsi_free(c2);
            aimsi_free(w1);
            aimsi_free(c1);
        }
        operands_free(&o);
    }
    aimsi_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gemm_avx2_vs_sgemm, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_avx2_threads_bit_identical, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_gemm_avx2_matches_avx512, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
