/*
 * gemm_bf16.c -- our own GEMM with bf16 inputs and fp32 accumulation.
 *
 * Why it exists: this CPU family has AVX512_BF16 (vdpbf16ps: 32 multiply-adds
 * of bf16 pairs into 16 fp32 sums per instruction, twice the fp32 FMA rate),
 * but Debian's OpenBLAS 0.3.21 has no sbgemm. Training with
 * AIMS_MODEL_PRECISION = 1 runs its big GEMMs here; master weights, biases,
 * activations, gradients and every sum stay fp32, only the two GEMM operands
 * are rounded to bf16 (round to nearest even) while they are packed.
 *
 * Shape (the classic Goto/BLIS split, small enough to read in one sitting):
 *   - A (m x k) is packed once per call into bf16 pairs along k: either
 *     row-major (pair (i, kp) at i * kp2 + kp, when A's rows run along k) or
 *     kp-major (at kp * m + i, when A is stored transposed, so two rows of the
 *     source interleave into one packed row). The micro-kernel only
 *     broadcasts 32-bit pairs from A, so it takes both layouts through two
 *     strides.
 *   - B (k x n) is packed in panels of 32 columns: for each pair index kp, the
 *     32 columns' pairs side by side (128 bytes), so the kernel loads them as
 *     two vectors. Columns past n are zero.
 *   - The kernel computes an 8 x 32 block of C in 16 zmm accumulators, one
 *     vdpbf16ps per accumulator per pair; C = acc + beta C with masked stores
 *     at the right edge.
 *   - Work items are B panels: each item packs its panel (into its own slice of
 *     the workspace) and sweeps every row block, so the pool's threads never
 *     share a write and need no barrier; A is packed by the caller first.
 * The sums over k run in the same order whatever the thread count, so a result
 * does not depend on how panels are spread over threads (exact resume).
 *
 * Everything here is compiled for AVX-512 BF16 with a target attribute and is
 * only called after aimsi_gemm_bf16_available() said the CPU has it; callers
 * fall back to the fp32 OpenBLAS path otherwise.
 */
#include <stdint.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_model.h"

enum { MR = 8, NR = 32 };

#if defined(__GNUC__) && defined(__x86_64__) && (__GNUC__ >= 10 || defined(__clang__))
#define AIMSI_HAVE_BF16_KERNEL 1
#include <immintrin.h>

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* The first n of 16 lanes (n >= 16: all). */
static inline __mmask16 mask16(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* 16 floats from p (n of them valid, rest zero) rounded to bf16. */
BF16_TARGET static inline __m256i cvt16(const float *p, unsigned n)
{
    return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(n), p));
}

/* 32 floats from p (n of them valid, rest zero) as 16 bf16 pairs. */
BF16_TARGET static inline __m512i cvt32(const float *p, size_t n)
{
    const __m512 lo = _mm512_maskz_loadu_ps(mask16(n), p);
    const __m512 hi = _mm512_maskz_loadu_ps(mask16(n > 16 ? n - 16 : 0), p + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Interleave rows r0 and r1 (16 entries each, r1 may be NULL = zeros) into 16
 * pairs (r0[i], r1[i]) stored at dst. */
BF16_TARGET static inline void pair16(const float *r0, const float *r1, unsigned n,
                                      uint32_t *dst, unsigned store_n)
{
    const __m512i lo = _mm512_cvtepu16_epi32(cvt16(r0, n));
    __m512i v = lo;
    if (r1 != NULL) {
        v = _mm512_or_si512(lo, _mm512_slli_epi32(_mm512_cvtepu16_epi32(cvt16(r1, n)), 16));
    }
    _mm512_mask_storeu_epi32(dst, mask16(store_n), v);
}

/* Row-major pairs of one source row running along k: dst[kp] = (row[2kp], row[2kp+1]). */
BF16_TARGET static void pack_row(const float *row, size_t k, uint32_t *dst)
{
    size_t kk = 0;
    for (; kk + 32 <= k; kk += 32) {
        const __m512 lo = _mm512_loadu_ps(row + kk);
        const __m512 hi = _mm512_loadu_ps(row + kk + 16);
        _mm512_storeu_si512(dst + kk / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (kk < k) { /* 1..31 left: zero-padded to an even count */
        _mm512_mask_storeu_epi32(dst + kk / 2, mask16((k - kk + 1) / 2), cvt32(row + kk, k - kk));
    }
}

/* Pack A (m x k). trans_a = 0: a[i * lda + kk], row-major pairs (stride_i =
 * kp2, stride_k = 1). trans_a = 1: a[kk * lda + i], kp-major pairs
 * (stride_i = 1, stride_k = m). */
BF16_TARGET static void pack_a(int trans_a, size_t m, size_t k, const float *a, size_t lda,
                               uint32_t *ap)
{
    const size_t kp2 = (k + 1) / 2;
    if (!trans_a) {
        for (size_t i = 0; i < m; i++) {
            pack_row(a + i * lda, k, ap + i * kp2);
        }
        return;
    }
    for (size_t kp = 0; kp < kp2; kp++) {
        const float *r0 = a + 2 * kp * lda;
        const float *r1 = 2 * kp + 1 < k ? r0 + lda : NULL;
        for (size_t i = 0; i < m; i += 16) {
            const unsigned n = m - i >= 16 ? 16u : (unsigned)(m - i);
            pair16(r0 + i, r1 != NULL ? r1 + i : NULL, n, ap + kp * m + i, n);
        }
    }
}

/* Pack panel p of B (columns 32p .. 32p+31 of op(B), k x n) into dst
 * (kp2 x 32 pairs). trans_b = 0: b[kk * ldb + j]; trans_b = 1: b[j * ldb + kk]. */
BF16_TARGET static void pack_b_panel(int trans_b, size_t p, size_t n, size_t k, const float *b,
                                     size_t ldb, uint32_t *dst)
{
    const size_t kp2 = (k + 1) / 2;
    const size_t j0 = p * NR;
    const size_t cols = n - j0 >= NR ? NR : n - j0;
    if (!trans_b) {
        for (size_t kp = 0; kp < kp2; kp++) {
            const float *r0 = b + 2 * kp * ldb + j0;
            const float *r1 = 2 * kp + 1 < k ? r0 + ldb : NULL;
            uint32_t *d = dst + kp * NR;
            const unsigned n0 = cols >= 16 ? 16u : (unsigned)cols;
            const unsigned n1 = cols > 16 ? (unsigned)(cols - 16) : 0u;
            pair16(r0, r1, n0, d, 16);
            if (n1 > 0) {
                pair16(r0 + 16, r1 != NULL ? r1 + 16 : NULL, n1, d + 16, 16);
            } else {
                _mm512_storeu_si512(d + 16, _mm512_setzero_si512());
            }
        }
        return;
    }
    /* Rows of b run along k: convert each column's row to pairs, then spread
     * them 32 apart. The 16 x 16 blocks go through a small buffer so the
     * conversion stays vectorised; the spread is scalar (this operand is the
     * smaller one in every training GEMM). */
    uint32_t tmp[16];
    if (cols < NR) {
        memset(dst, 0, kp2 * NR * sizeof *dst);
    }
    for (size_t jj = 0; jj < cols; jj++) {
        const float *row = b + (j0 + jj) * ldb;
        for (size_t kp = 0; kp < kp2; kp += 16) {
            _mm512_storeu_si512(tmp, cvt32(row + 2 * kp, k - 2 * kp));
            const size_t lim = kp2 - kp >= 16 ? 16 : kp2 - kp;
            for (size_t t = 0; t < lim; t++) {
                dst[(kp + t) * NR + jj] = tmp[t];
            }
        }
    }
}

/* C[rows x cols] (rows <= 8, cols <= 32) = A_block . B_panel + beta C. */
BF16_TARGET static void kernel(size_t rows, size_t cols, size_t kp2, const uint32_t *a,
                               size_t stride_i, size_t stride_k, const uint32_t *bp,
                               float beta, float *c, size_t ldc)
{
    __m512 acc[MR][2];
    for (size_t r = 0; r < MR; r++) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
    if (rows == MR) {
        for (size_t kp = 0; kp < kp2; kp++) {
            const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + kp * NR);
            const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + kp * NR + 16);
            const uint32_t *ak = a + kp * stride_k;
#define ROW(r)                                                                          \
    do {                                                                                \
        const __m512bh x = (__m512bh)_mm512_set1_epi32((int)ak[(r) * stride_i]);        \
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);                                 \
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);                                 \
    } while (0)
            ROW(0);
            ROW(1);
            ROW(2);
            ROW(3);
            ROW(4);
            ROW(5);
            ROW(6);
            ROW(7);
#undef ROW
        }
    } else {
        for (size_t kp = 0; kp < kp2; kp++) {
            const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + kp * NR);
            const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + kp * NR + 16);
            const uint32_t *ak = a + kp * stride_k;
            for (size_t r = 0; r < rows; r++) {
                const __m512bh x = (__m512bh)_mm512_set1_epi32((int)ak[r * stride_i]);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
            }
        }
    }
    const size_t n1 = cols > 16 ? cols - 16 : 0;
    const __mmask16 m0 = mask16(cols);
    const __mmask16 m1 = mask16(n1);
    const __m512 vb = _mm512_set1_ps(beta);
    for (size_t r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        __m512 v0 = acc[r][0];
        __m512 v1 = acc[r][1];
        if (beta != 0.0f) {
            v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), v0);
            v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), v1);
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        if (n1 > 0) {
            _mm512_mask_storeu_ps(cr + 16, m1, v1);
        }
    }
}

typedef struct gemm_job {
    int trans_b;
    size_t m, n, k, kp2;
    const uint32_t *ap;
    size_t stride_i, stride_k;
    const float *b;
    size_t ldb;
    uint32_t *bp; /* panels, kp2 * NR pairs each */
    float beta;
    float *c;
    size_t ldc;
} gemm_job;

static void run_panel(void *ctx, size_t p)
{
    const gemm_job *g = ctx;
    uint32_t *panel = g->bp + p * g->kp2 * NR;
    pack_b_panel(g->trans_b, p, g->n, g->k, g->b, g->ldb, panel);
    const size_t j0 = p * NR;
    const size_t cols = g->n - j0 >= NR ? NR : g->n - j0;
    for (size_t i = 0; i < g->m; i += MR) {
        const size_t rows = g->m - i >= MR ? MR : g->m - i;
        kernel(rows, cols, g->kp2, g->ap + i * g->stride_i, g->stride_i, g->stride_k, panel,
               g->beta, g->c + i * g->ldc + j0, g->ldc);
    }
}
#endif /* AIMSI_HAVE_BF16_KERNEL */

int aimsi_gemm_bf16_available(void)
{
#ifdef AIMSI_HAVE_BF16_KERNEL
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

size_t aimsi_gemm_bf16_ws_bytes(size_t m, size_t n, size_t k)
{
    const size_t kp2 = (k + 1) / 2;
    const size_t panels = (n + NR - 1) / NR;
    return (((m * kp2 + 15) & ~(size_t)15) + panels * NR * kp2) * sizeof(uint32_t) + 64;
}

void aimsi_gemm_bf16(aimsi_pool *pool, void *ws, int trans_a, int trans_b, size_t m, size_t n,
                     size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                     float beta, float *c, size_t ldc)
{
#ifdef AIMSI_HAVE_BF16_KERNEL
    const size_t kp2 = (k + 1) / 2;
    uint32_t *base = (uint32_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    gemm_job g = {.trans_b = trans_b,
                  .m = m,
                  .n = n,
                  .k = k,
                  .kp2 = kp2,
                  .ap = base,
                  .stride_i = trans_a ? 1 : kp2,
                  .stride_k = trans_a ? m : 1,
                  .b = b,
                  .ldb = ldb,
                  .bp = base + ((m * kp2 + 15) & ~(size_t)15),
                  .beta = beta,
                  .c = c,
                  .ldc = ldc};
    pack_a(trans_a, m, k, a, lda, base);
    aimsi_pool_run(pool, (n + NR - 1) / NR, run_panel, &g);
#else
    (void)pool;
    (void)ws;
    aimsi_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
#endif
}
