/*
 * gemm_avx2.c -- the own fp32 training GEMM's kernel for CPUs with AVX2 and
 * FMA but no AVX-512 (AMD Zen 2/3, Intel Haswell to Alder Lake): what
 * gemm.c's sweep does, in 256-bit registers.
 *
 * Why: without it such a CPU trains through OpenBLAS, whose threads spin on
 * the other core between the GEMMs of a step (20 s of system time in a 50 s
 * P1 run on Zen 3) and which cannot fuse the bias, ReLU, ReLU gate and
 * optimizer passes into the GEMM. Everything around the kernel -- the work
 * split over the trainer's pool, B panels of 32 columns (packed, read in
 * place, or ready from the last update), the epilogue's contract -- is
 * gemm.c's, shared through aimsi_gemm.h.
 *
 * Shape. A panel of 32 columns is two halves of 16; the register block is
 * 6 rows x 16 columns: 12 ymm accumulators, the two vectors of a panel row
 * and one broadcast of A, 15 of the 16 ymm registers (the classic Haswell
 * blocking: per slot 12 FMAs against 2 loads of B and 6 broadcasts, so the
 * two FMA pipes, not the load ports, set the pace). Row blocks run outer and
 * the two halves inner, so the block's 6 rows of A (6 x k floats, 18 KB at
 * k = 784) are still in L1 for the second half while B streams from L2.
 * Row counts left over are split so no block is thinner than 3 rows where
 * that can be avoided (8 = 4 + 4, 7 = 4 + 3).
 *
 * Bits. Every element is acc = fma(a, b, acc) over k in order from zero,
 * then fma(beta, c, acc), then the epilogue with gemm.c's operations in
 * gemm.c's order (no contraction: c_std = c11). That is what the AVX-512
 * kernel computes element by element, so both kernels give the same bits,
 * for any thread count, and the fused epilogue equals the separate passes
 * (aimsi_gemm_epi_apply) bit for bit.
 *
 * Compiled with target attributes; called only after gemm.c found AVX2 and
 * FMA on the CPU.
 */
#include <string.h>

#include "aimsi_gemm.h"

#ifdef AIMSI_HAVE_OWN_GEMM
#include <immintrin.h>

#define AVX2_TARGET __attribute__((target("avx2,fma")))

enum { AR = 6, AH = 16 }; /* register block: AR rows x AH columns (half a panel) */

/* A lane mask for the first n of 8 lanes (n < 8). */
AVX2_TARGET static inline __m256i lanes(size_t n)
{
    static const int32_t ramp[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(const void *)(ramp + 8 - n));
}

/* The first n (<= 8) floats at p, zero past them; lanes past n are not read. */
AVX2_TARGET static inline __m256 load8(const float *p, size_t n)
{
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes(n));
}

AVX2_TARGET static inline void store8(float *p, size_t n, __m256 v)
{
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
    } else {
        _mm256_maskstore_ps(p, lanes(n), v);
    }
}

/* Eight lanes (n real) of a finished row of C, at (row, col): the epilogue
 * of gemm.c's epi_half, the same operations in the same order. */
AVX2_TARGET static inline __m256 epi8(__m256 v, size_t n, const aimsi_gemm_epi *e, size_t row,
                                      size_t col, size_t ldc)
{
    const __m256 zero = _mm256_setzero_ps();
    if (e->bias != NULL) {
        v = _mm256_add_ps(v, load8(e->bias + col, n));
    }
    if (e->relu) { /* max(v, 0) returns 0 for NaN and -0, as "v > 0 ? v : 0" */
        v = _mm256_max_ps(v, zero);
    }
    if (e->gate != NULL) {
        const __m256 g = load8(e->gate + row * ldc + col, n);
        v = _mm256_and_ps(_mm256_cmp_ps(g, zero, _CMP_GT_OQ), v);
    }
    if (e->w != NULL && e->adam) { /* train_opt.c's adam_avx2 */
        const size_t at = row * e->ldw + col;
        __m256 w = load8(e->w + at, n);
        __m256 g = v;
        if (e->adam == 2) {
            w = _mm256_sub_ps(w, _mm256_mul_ps(_mm256_set1_ps(e->lr * e->wd), w));
        } else {
            g = _mm256_add_ps(g, _mm256_mul_ps(_mm256_set1_ps(e->wd), w));
        }
        const __m256 mv = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(e->b1), load8(e->v1 + at, n)),
                                        _mm256_mul_ps(_mm256_set1_ps(1.0f - e->b1), g));
        const __m256 sv =
            _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(e->b2), load8(e->v2 + at, n)),
                          _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(1.0f - e->b2), g), g));
        store8(e->v1 + at, n, mv);
        store8(e->v2 + at, n, sv);
        const __m256 mh = _mm256_div_ps(mv, _mm256_set1_ps(e->c1));
        const __m256 sh = _mm256_div_ps(sv, _mm256_set1_ps(e->c2));
        const __m256 step = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(e->lr), mh),
                                          _mm256_add_ps(_mm256_sqrt_ps(sh), _mm256_set1_ps(e->eps)));
        store8(e->w + at, n, _mm256_sub_ps(w, step));
    } else if (e->w != NULL) { /* SGD with momentum: C holds mu v + grad */
        float *wp = e->w + row * e->ldw + col;
        __m256 w = load8(wp, n);
        if (e->wd > 0.0f) {
            v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(e->wd), w));
        }
        w = _mm256_sub_ps(w, _mm256_mul_ps(_mm256_set1_ps(e->lr), v));
        v = _mm256_mul_ps(v, _mm256_set1_ps(e->mom));
        store8(wp, n, w);
    }
    return v;
}

/* out[r] = A row r . B panel rows over ks slots, 16 columns. Always inlined
 * with a constant `rows`, and the 12 accumulators are named locals, not an
 * array: GCC kept an array indexed later by the store loop's variable row
 * in registers but still stored it to the stack on every slot. */
#define ROW_FMA(r, lo, hi)                                                                   \
    if (rows > (r)) {                                                                        \
        const __m256 x = _mm256_broadcast_ss(as + (r) * si);                                 \
        lo = _mm256_fmadd_ps(x, b0, lo);                                                     \
        hi = _mm256_fmadd_ps(x, b1, hi);                                                     \
    }
#define ROW_OUT(r, lo, hi)                                                                   \
    if (rows > (r)) {                                                                        \
        out[r][0] = lo;                                                                      \
        out[r][1] = hi;                                                                      \
    }
AVX2_TARGET static inline __attribute__((always_inline)) void
fma_rows(__m256 out[AR][2], size_t rows, size_t ks, const float *a, size_t si, size_t sk,
         const float *bp, size_t bs)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (size_t s = 0; s < ks; s++) {
        const __m256 b0 = _mm256_loadu_ps(bp + s * bs);
        const __m256 b1 = _mm256_loadu_ps(bp + s * bs + 8);
        const float *as = a + s * sk;
        ROW_FMA(0, c00, c01)
        ROW_FMA(1, c10, c11)
        ROW_FMA(2, c20, c21)
        ROW_FMA(3, c30, c31)
        ROW_FMA(4, c40, c41)
        ROW_FMA(5, c50, c51)
    }
    ROW_OUT(0, c00, c01)
    ROW_OUT(1, c10, c11)
    ROW_OUT(2, c20, c21)
    ROW_OUT(3, c30, c31)
    ROW_OUT(4, c40, c41)
    ROW_OUT(5, c50, c51)
}
#undef ROW_FMA
#undef ROW_OUT

/* C[rows x cols] (rows <= 6, cols <= 16; (i0, j0) its place in C) = A rows
 * . half panel + beta C, then the epilogue; C is not stored after Adam. */
AVX2_TARGET static void block(const gemm_job *g, size_t rows, size_t cols, const float *a,
                              const float *bp, size_t bs, size_t i0, size_t j0)
{
    __m256 acc[AR][2];
    const size_t si = g->stride_i;
    const size_t sk = g->stride_k;
    /* one copy of the loop per row count: constant trip counts unroll */
#define ROWS_CASE(R)                                                                         \
    case R:                                                                                  \
        fma_rows(acc, R, g->ks, a, si, sk, bp, bs);                                          \
        break;
    switch (rows) {
        ROWS_CASE(6)
        ROWS_CASE(5)
        ROWS_CASE(4)
        ROWS_CASE(3)
        ROWS_CASE(2)
    default:
        fma_rows(acc, 1, g->ks, a, si, sk, bp, bs);
        break;
    }
#undef ROWS_CASE
    const aimsi_gemm_epi *e = g->epi;
    const __m256 vb = _mm256_set1_ps(g->beta);
    for (size_t r = 0; r < rows; r++) {
        float *cr = g->c + (i0 + r) * g->ldc + j0;
        for (size_t h = 0; h < 2 && 8 * h < cols; h++) {
            const size_t n = cols - 8 * h >= 8 ? 8 : cols - 8 * h;
            __m256 v = acc[r][h];
            if (g->beta != 0.0f) {
                v = _mm256_fmadd_ps(vb, load8(cr + 8 * h, n), v);
            }
            if (e != NULL) {
                v = epi8(v, n, e, i0 + r, j0 + 8 * h, g->ldc);
            }
            if (e == NULL || !e->adam) {
                store8(cr + 8 * h, n, v);
            }
        }
    }
}

/* The new weights of a block, into the forward's panels (aimsi_gemm_epi.wpk,
 * fp32: ks = this GEMM's n): copies, so the values are the weights' bits. */
static void wpk_block(const gemm_job *g, size_t rows, size_t cols, size_t i0, size_t j0)
{
    const aimsi_gemm_epi *e = g->epi;
    float *wpk = (float *)(void *)e->wpk;
    for (size_t r = 0; r < rows; r++) {
        const size_t i = i0 + r;
        for (size_t j = 0; j < cols; j++) {
            wpk[((i / NR) * g->n + j0 + j) * NR + i % NR] = e->w[i * e->ldw + j0 + j];
        }
    }
}

/* Transpose 8 vectors in place: r[q][t] -> r[t][q]. */
AVX2_TARGET static inline void transpose8(__m256 r[8])
{
    __m256 t[8];
    __m256 u[8];
    for (size_t i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (size_t h = 0; h < 2; h++) { /* u[4h + c]: rows 4h..4h+3 of columns c, c + 4 */
        u[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
        u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
    }
    for (size_t c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[c + 4] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

/* Panel of a B whose rows run along k (trans_b): columns j0.. are rows of b;
 * dst[s * NR + j] = b[(j0 + j) * ldb + s], zero for j >= cols. */
AVX2_TARGET static void pack_t(size_t j0, size_t cols, size_t k, const float *b, size_t ldb,
                               float *dst)
{
    for (size_t jj = 0; jj < NR; jj += 8) {
        const size_t nr = cols > jj ? (cols - jj >= 8 ? 8 : cols - jj) : 0;
        const float *src = b + (j0 + jj) * ldb;
        size_t s = 0;
        if (nr == 8) {
            for (; s + 8 <= k; s += 8) {
                __m256 r[8];
                for (size_t q = 0; q < 8; q++) {
                    r[q] = _mm256_loadu_ps(src + q * ldb + s);
                }
                transpose8(r);
                for (size_t q = 0; q < 8; q++) {
                    _mm256_storeu_ps(dst + (s + q) * NR + jj, r[q]);
                }
            }
        }
        for (; s < k; s++) {
            for (size_t q = 0; q < 8; q++) {
                dst[s * NR + jj + q] = q < nr ? src[q * ldb + s] : 0.0f;
            }
        }
    }
}

/* Panel of a B stored k x n: 32 columns of each row, zero past cols. */
static void pack_n(size_t j0, size_t cols, size_t k, const float *b, size_t ldb, float *dst)
{
    for (size_t kk = 0; kk < k; kk++) {
        memcpy(dst + kk * NR, b + kk * ldb + j0, cols * sizeof *dst);
        memset(dst + kk * NR + cols, 0, (NR - cols) * sizeof *dst);
    }
}

/* Rows of the next register block when `left` rows remain. */
static size_t next_rows(size_t left)
{
    if (left == 8 || left == 7) {
        return 4; /* 4 + 4, 4 + 3 instead of 6 + 2, 6 + 1 */
    }
    return left >= AR ? AR : left;
}

void aimsi_gemm_avx2_sweep(const gemm_job *g, size_t p, uint32_t *panel, size_t i0, size_t i1)
{
    const size_t j0 = p * NR;
    const size_t cols = g->n - j0 >= NR ? NR : g->n - j0;
    const float *bp = (const float *)(const void *)panel;
    size_t bs = NR;
    if (g->bpk != NULL) { /* ready: written by the last update (aimsi_gemm_epi.wpk) */
        bp = (const float *)(const void *)(g->bpk + p * g->ks * NR);
    } else if (cols == NR && g->direct_b) { /* in place: B's rows are the panel's */
        bp = g->b + j0;
        bs = g->ldb;
    } else if (g->trans_b) {
        pack_t(j0, cols, g->k, g->b, g->ldb, (float *)(void *)panel);
    } else {
        pack_n(j0, cols, g->k, g->b, g->ldb, (float *)(void *)panel);
    }
    const float *a = g->a;
    aimsi_gemm_prefetch(g, i0, i1, PREFETCH_BLOCKS * AR, j0, cols);
    for (size_t i = i0; i < i1;) {
        const size_t rows = next_rows(i1 - i);
        aimsi_gemm_prefetch(g, i + PREFETCH_BLOCKS * AR, i1, rows, j0, cols);
        for (size_t h = 0; h < cols; h += AH) {
            const size_t hc = cols - h >= AH ? AH : cols - h;
            block(g, rows, hc, a + i * g->stride_i, bp + h, bs, i, j0 + h);
            if (g->epi != NULL && g->epi->w != NULL && g->epi->wpk != NULL) {
                wpk_block(g, rows, hc, i, j0 + h);
            }
        }
        i += rows;
    }
}
#endif /* AIMSI_HAVE_OWN_GEMM */
