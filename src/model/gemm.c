/*
 * gemm.c -- libaims' own GEMM for training: fp32 (AVX-512 FMA) or bf16
 * operands (AVX512_BF16), fp32 accumulation.
 *
 * Why it exists: this CPU family has AVX512_BF16 (vdpbf16ps: 32 multiply-adds
 * of bf16 pairs into 16 fp32 sums per instruction, twice the fp32 FMA rate),
 * but Debian's OpenBLAS 0.3.21 has no sbgemm; and OpenBLAS's fp32 GEMMs run on
 * its own process-wide threads, which keep spinning on the other core while a
 * training step does its element-wise work (27 % of the cycles of an fp32
 * epoch). Training runs its big GEMMs here instead, on the trainer's own pool.
 * With bf16 only the two GEMM operands are rounded (nearest even) while they
 * are packed; master weights, optimizer state, activations and every sum stay
 * fp32.
 *
 * Shape (the classic Goto/BLIS split, small enough to read in one sitting).
 * A "slot" is 32 bits along k: one fp32 value, or a pair of bf16 values
 * (k rounded up to even, the odd tail padded with zero).
 *   - A (m x k) is read through two strides (row i, slot kk): fp32 straight
 *     from the caller's matrix; bf16 from a copy packed once per call,
 *     row-major when A's rows run along k, slot-major when A is stored
 *     transposed (two source rows interleave into one packed row).
 *   - B (k x n) is packed in panels of 32 columns: for each slot, the 32
 *     columns side by side (128 bytes), so the kernel loads them as two
 *     vectors. Columns past n are zero. When B's rows run along k (trans_b),
 *     16 x 16 blocks are transposed in registers. A full panel that B already
 *     holds in that shape (fp32 B stored k x n; bf16 B given as pair rows)
 *     is read in place, at B's row stride, and not packed (see sweep).
 *   - The kernel computes an 8 x 32 block of C in 16 zmm accumulators, one
 *     FMA / vdpbf16ps per accumulator per slot; C = acc + beta C, with masked
 *     stores at the right edge. A panel with at most 16 real columns (narrow
 *     outputs such as 10 classes) runs only its first half.
 *   - Work items are B panels: each item packs its panel (into the slice of
 *     the workspace of the pool item running it, reused panel after panel)
 *     and sweeps every row block, so threads never share a write and need
 *     no barrier. The bf16 copy of A is packed first, on the
 *     calling thread (measured faster than on the pool: see pack_a_bf16's call).
 *   - Epilogue (aimsi_gemm_epi, issue 15): while a finished 8 x 32 block is
 *     still in registers, the store can add a bias row, apply ReLU, apply a
 *     ReLU gate (backward) and run an SGD-with-momentum step on the matching
 *     weights -- the element-wise passes training would otherwise make over
 *     C (and, for SGD, over w and v) afterwards, each with the same operations
 *     in the same order, so the bits are those of the passes. The lines of C
 *     (and w, gate) the next block touches are prefetched while this one
 *     computes: with k = one batch a block is short. The weight update can
 *     also write its new weights into the panels the next forward GEMM
 *     (X W^T) reads (aimsi_gemm_epi.wpk: an 8 x 32 block of w is 32 panel
 *     rows of 8 neurons, one transpose in registers), so that forward packs
 *     nothing (aimsi_gemm_pre.bpk).
 * Each sum runs over k in the same order whatever the thread count, so
 * results do not depend on how panels are spread over threads (exact resume,
 * determinism for any train_threads).
 *
 * Everything here is compiled for AVX-512 with target attributes and only
 * called after aimsi_gemm_own_available() said the CPU has it. On a CPU with
 * AVX2 + FMA but no AVX-512, fp32 runs the same split, panels and epilogue
 * with gemm_avx2.c's kernel (sweep hands it each panel; the same bits);
 * otherwise the call falls through to aimsi_sgemm (OpenBLAS).
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../core/aimsi_core.h"
#include "aimsi_gemm.h"

#ifdef AIMSI_HAVE_OWN_GEMM
#include <immintrin.h>

#define F32_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* The first n of 16 lanes (n >= 16: all). */
static inline __mmask16 mask16(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* 16 slots from a source row along k, starting at slot s (zero past k). */
F32_TARGET static inline __m512i slots_f32(const float *row, size_t s, size_t k)
{
    return _mm512_castps_si512(_mm512_maskz_loadu_ps(mask16(k - s), row + s));
}

BF16_TARGET static inline __m512i slots_bf16(const float *row, size_t s, size_t k)
{
    const size_t left = k - 2 * s;
    const __m512 lo = _mm512_maskz_loadu_ps(mask16(left), row + 2 * s);
    const __m512 hi = _mm512_maskz_loadu_ps(mask16(left > 16 ? left - 16 : 0), row + 2 * s + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* 16 bf16 pairs (r0[i], r1[i]) from two source rows (r1 NULL: zeros). */
BF16_TARGET static inline __m512i pairs_bf16(const float *r0, const float *r1, size_t n)
{
    const __m512i lo =
        _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(n), r0)));
    if (r1 == NULL) {
        return lo;
    }
    const __m512i hi =
        _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(n), r1)));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

/* Transpose 16 vectors of 16 slots (r[j][t]) and store rows t < lim:
 * dst[t * stride + j] = r[j][t]. Three shuffle stages: 32-bit and 64-bit
 * interleaves inside 128-bit lanes, then two rounds of lane shuffles. */
F32_TARGET static void transpose16_store(const __m512i r[16], uint32_t *dst, size_t stride,
                                         size_t lim)
{
    __m512i t[16];
    __m512i u[16];
    for (size_t i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (size_t i = 0; i < 4; i++) { /* u[4i + c], lane L: rows 4i..4i+3 of column 4L + c */
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (size_t c = 0; c < 4; c++) {
        const __m512i x0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88);
        const __m512i y0 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
        const __m512i x1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xDD);
        const __m512i y1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xDD);
        const __m512i col[4] = {_mm512_shuffle_i32x4(x0, y0, 0x88),
                                _mm512_shuffle_i32x4(x1, y1, 0x88),
                                _mm512_shuffle_i32x4(x0, y0, 0xDD),
                                _mm512_shuffle_i32x4(x1, y1, 0xDD)};
        for (size_t l = 0; l < 4; l++) { /* column 4l + c */
            if (4 * l + c < lim) {
                _mm512_storeu_si512(dst + (4 * l + c) * stride, col[l]);
            }
        }
    }
}

/* Panel of a B whose rows run along k (trans_b): columns j0..j0+cols-1 are
 * rows of b; slot vectors of 16 columns are transposed into panel rows.
 * Instantiated per precision so the slot loader inlines. */
#define PACK_ROWS_ALONG_K(NAME, TARGET, SLOTS)                                              \
    TARGET static void NAME(size_t j0, size_t cols, size_t k, size_t ks, const float *b,      \
                            size_t ldb, uint32_t *dst)                                        \
    {                                                                                         \
        for (size_t s = 0; s < ks; s += 16) {                                                 \
            for (size_t half = 0; half < NR; half += 16) {                                    \
                __m512i r[16];                                                                \
                for (size_t jj = 0; jj < 16; jj++) {                                          \
                    r[jj] = half + jj < cols ? SLOTS(b + (j0 + half + jj) * ldb, s, k)        \
                                             : _mm512_setzero_si512();                        \
                }                                                                             \
                transpose16_store(r, dst + s * NR + half, NR, ks - s >= 16 ? 16 : ks - s);    \
            }                                                                                 \
        }                                                                                     \
    }
PACK_ROWS_ALONG_K(pack_t_f32, F32_TARGET, slots_f32)
PACK_ROWS_ALONG_K(pack_t_bf16, BF16_TARGET, slots_bf16)

/* Panel of a B stored k x n (b[kk * ldb + j]). */
F32_TARGET static void pack_n_f32(size_t j0, size_t cols, size_t k, const float *b, size_t ldb,
                                  uint32_t *dst)
{
    const __mmask16 m0 = mask16(cols);
    const __mmask16 m1 = mask16(cols > 16 ? cols - 16 : 0);
    for (size_t kk = 0; kk < k; kk++) {
        const float *r = b + kk * ldb + j0;
        _mm512_storeu_ps(dst + kk * NR, _mm512_maskz_loadu_ps(m0, r));
        _mm512_storeu_ps(dst + kk * NR + 16, _mm512_maskz_loadu_ps(m1, r + 16));
    }
}

BF16_TARGET static void pack_n_bf16(size_t j0, size_t cols, size_t k, const float *b, size_t ldb,
                                    uint32_t *dst)
{
    const size_t n1 = cols > 16 ? cols - 16 : 0;
    for (size_t kp = 0; 2 * kp < k; kp++) {
        const float *r0 = b + 2 * kp * ldb + j0;
        const float *r1 = 2 * kp + 1 < k ? r0 + ldb : NULL;
        _mm512_storeu_si512(dst + kp * NR, pairs_bf16(r0, r1, cols));
        _mm512_storeu_si512(dst + kp * NR + 16,
                            n1 > 0 ? pairs_bf16(r0 + 16, r1 != NULL ? r1 + 16 : NULL, n1)
                                   : _mm512_setzero_si512());
    }
}

/* Panel of a B already rounded to bf16 (the trainer's bf16 batch, k rows of
 * ldb bf16 values): rows 2kp and 2kp + 1 interleave into the slots of panel
 * row kp, exactly what pack_n_bf16 makes from the fp32 rows (the values are
 * the same roundings), without reading or converting fp32. */
static const uint16_t g_ilv_idx[2][32] = {
    {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
     8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47},
    {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
     24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63}};

BF16_TARGET static void pack_n_b16(size_t j0, size_t cols, size_t k, const uint16_t *b,
                                   size_t ldb, uint32_t *dst)
{
    const __mmask32 m = cols >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << cols) - 1u);
    const __m512i lo = _mm512_loadu_si512(g_ilv_idx[0]);
    const __m512i hi = _mm512_loadu_si512(g_ilv_idx[1]);
    for (size_t kp = 0; 2 * kp < k; kp++) {
        const uint16_t *r0 = b + 2 * kp * ldb + j0;
        const __m512i v0 = _mm512_maskz_loadu_epi16(m, r0);
        const __m512i v1 =
            2 * kp + 1 < k ? _mm512_maskz_loadu_epi16(m, r0 + ldb) : _mm512_setzero_si512();
        _mm512_storeu_si512(dst + kp * NR, _mm512_permutex2var_epi16(v0, lo, v1));
        _mm512_storeu_si512(dst + kp * NR + 16, _mm512_permutex2var_epi16(v0, hi, v1));
    }
}

/* Two rows of bf16 slots (round_row_bf16's layout, k values each; r1 NULL:
 * zeros) -> k slots of pairs (r0[j], r1[j]): one row of a bf16 panel's
 * layout for a B of k columns, what pack_n_b16 makes of the same two rows. */
BF16_TARGET static void pair_rows_bf16(const uint32_t *r0, const uint32_t *r1, size_t k,
                                       uint32_t *dst)
{
    const uint16_t *a = (const uint16_t *)(const void *)r0;
    const uint16_t *b = (const uint16_t *)(const void *)r1;
    const __m512i lo = _mm512_loadu_si512(g_ilv_idx[0]);
    const __m512i hi = _mm512_loadu_si512(g_ilv_idx[1]);
    for (size_t j = 0; j < k; j += 32) {
        const size_t left = k - j;
        const __mmask32 m = left >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << left) - 1u);
        const __m512i v0 = _mm512_maskz_loadu_epi16(m, a + j);
        const __m512i v1 = b != NULL ? _mm512_maskz_loadu_epi16(m, b + j) : _mm512_setzero_si512();
        _mm512_mask_storeu_epi32(dst + j, mask16(left), _mm512_permutex2var_epi16(v0, lo, v1));
        if (left > 16) {
            _mm512_mask_storeu_epi32(dst + j + 16, mask16(left - 16),
                                     _mm512_permutex2var_epi16(v0, hi, v1));
        }
    }
}

/* One row of k floats -> (k + 1) / 2 bf16 slots, the odd tail padded with
 * zero: the rounding pack_a_bf16 does (and, value by value, pack_n_bf16). */
BF16_TARGET static void round_row_bf16(const float *x, size_t k, uint32_t *dst)
{
    const size_t ks = (k + 1) / 2;
    for (size_t s = 0; s < ks; s += 16) {
        _mm512_mask_storeu_epi32(dst + s, mask16(ks - s), slots_bf16(x, s, k));
    }
}

/* Pack A (m x k) to bf16 slots. trans_a = 0: a[i * lda + kk] -> row-major
 * (stride_i = ks, stride_k = 1), rows [from, to); trans_a = 1: a[kk * lda + i]
 * -> slot-major (stride_i = 1, stride_k = m), slots [from, to). */
BF16_TARGET static void pack_a_bf16(int trans_a, size_t m, size_t k, const float *a, size_t lda,
                                    uint32_t *ap, size_t from, size_t to)
{
    const size_t ks = (k + 1) / 2;
    if (!trans_a) {
        for (size_t i = from; i < to; i++) {
            for (size_t s = 0; s < ks; s += 16) {
                _mm512_mask_storeu_epi32(ap + i * ks + s, mask16(ks - s),
                                         slots_bf16(a + i * lda, s, k));
            }
        }
        return;
    }
    for (size_t kp = from; kp < to; kp++) {
        const float *r0 = a + 2 * kp * lda;
        const float *r1 = 2 * kp + 1 < k ? r0 + lda : NULL;
        for (size_t i = 0; i < m; i += 16) {
            _mm512_mask_storeu_epi32(ap + kp * m + i, mask16(m - i),
                                     pairs_bf16(r0 + i, r1 != NULL ? r1 + i : NULL, m - i));
        }
    }
}

/* One 16-lane half of a finished row of C: v = acc + beta c, then the
 * epilogue (aimsi_gemm_epi) in its documented order, with the operations of
 * the separate passes it replaces (no FMA contraction), so the result is bit
 * for bit what those passes gave. at: offset of the half in C's indexing
 * (row i, column j) -> i * ldc + j; col: its first column. */
F32_TARGET static inline __m512 epi_half(__m512 v, __mmask16 m, const aimsi_gemm_epi *e,
                                         size_t row, size_t col, size_t ldc)
{
    const __m512 zero = _mm512_setzero_ps();
    if (e->bias != NULL) {
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, e->bias + col));
    }
    if (e->relu) { /* max(v, 0) returns 0 for NaN and -0, as "v > 0 ? v : 0" */
        v = _mm512_max_ps(v, zero);
    }
    if (e->gate != NULL) {
        const __m512 g = _mm512_maskz_loadu_ps(m, e->gate + row * ldc + col);
        v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(g, zero, _CMP_GT_OQ), v);
    }
    if (e->w != NULL && e->adam) { /* Adam: adam_avx2's operations, 16 lanes */
        const size_t at = row * e->ldw + col;
        __m512 w = _mm512_maskz_loadu_ps(m, e->w + at);
        __m512 g = v;
        if (e->adam == 2) {
            w = _mm512_sub_ps(w, _mm512_mul_ps(_mm512_set1_ps(e->lr * e->wd), w));
        } else {
            g = _mm512_add_ps(g, _mm512_mul_ps(_mm512_set1_ps(e->wd), w));
        }
        const __m512 mv = _mm512_add_ps(
            _mm512_mul_ps(_mm512_set1_ps(e->b1), _mm512_maskz_loadu_ps(m, e->v1 + at)),
            _mm512_mul_ps(_mm512_set1_ps(1.0f - e->b1), g));
        const __m512 sv = _mm512_add_ps(
            _mm512_mul_ps(_mm512_set1_ps(e->b2), _mm512_maskz_loadu_ps(m, e->v2 + at)),
            _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(1.0f - e->b2), g), g));
        _mm512_mask_storeu_ps(e->v1 + at, m, mv);
        _mm512_mask_storeu_ps(e->v2 + at, m, sv);
        const __m512 mh = _mm512_div_ps(mv, _mm512_set1_ps(e->c1));
        const __m512 sh = _mm512_div_ps(sv, _mm512_set1_ps(e->c2));
        const __m512 step =
            _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(e->lr), mh),
                          _mm512_add_ps(_mm512_sqrt_ps(sh), _mm512_set1_ps(e->eps)));
        _mm512_mask_storeu_ps(e->w + at, m, _mm512_sub_ps(w, step));
    } else if (e->w != NULL) { /* SGD with momentum on the block: v is mu v + grad */
        float *wp = e->w + row * e->ldw + col;
        __m512 w = _mm512_maskz_loadu_ps(m, wp);
        if (e->wd > 0.0f) {
            v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(e->wd), w));
        }
        w = _mm512_sub_ps(w, _mm512_mul_ps(_mm512_set1_ps(e->lr), v));
        v = _mm512_mul_ps(v, _mm512_set1_ps(e->mom));
        _mm512_mask_storeu_ps(wp, m, w);
    }
    return v;
}

/* C[rows x cols] = acc + beta C, then the epilogue (rows <= 8, cols <= 32);
 * (i0, j0): the block's place in C. Always inlined: as a call, the 16
 * accumulators would go through memory. */
F32_TARGET static inline __attribute__((always_inline)) void
store_block(__m512 acc[MR][2], size_t rows, size_t cols, float beta, float *c, size_t ldc,
            const aimsi_gemm_epi *e, size_t i0, size_t j0)
{
    const __mmask16 m0 = mask16(cols);
    const __mmask16 m1 = mask16(cols > 16 ? cols - 16 : 0);
    const __m512 vb = _mm512_set1_ps(beta);
    for (size_t r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        __m512 v0 = acc[r][0];
        __m512 v1 = acc[r][1];
        if (beta != 0.0f) {
            v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), v0);
            v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), v1);
        }
        if (e != NULL) {
            v0 = epi_half(v0, m0, e, i0 + r, j0, ldc);
            if (cols > 16) {
                v1 = epi_half(v1, m1, e, i0 + r, j0 + 16, ldc);
            }
        }
        if (e != NULL && e->adam) {
            continue; /* the gradient was consumed by the Adam step */
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        if (cols > 16) {
            _mm512_mask_storeu_ps(cr + 16, m1, v1);
        }
    }
}

/* The 8 x 32 micro-kernel: C block = A block . B panel + beta C, over ks
 * slots. A slot of A is broadcast (BCAST), a panel row is two vectors
 * (LOADB), MAC accumulates. Full blocks unroll the 8 rows; edge blocks loop. */
#define MICRO_KERNEL(NAME, TARGET, ATYPE, BTYPE, BCAST, LOADB, MAC)                            \
    TARGET static inline __attribute__((always_inline)) void NAME##_rows(                      \
        __m512 acc[MR][2], size_t rows, size_t halves, size_t ks, const ATYPE *a, size_t si,    \
        size_t sk, const uint32_t *bp, size_t bs)                                               \
    {                                                                                           \
        for (size_t s = 0; s < ks; s++) {                                                       \
            const BTYPE b0 = LOADB(bp + s * bs);                                                \
            const BTYPE b1 = LOADB(bp + s * bs + 16);                                           \
            const ATYPE *as = a + s * sk;                                                       \
            for (size_t r = 0; r < rows; r++) {                                                 \
                const BTYPE x = BCAST(as + r * si);                                             \
                acc[r][0] = MAC(acc[r][0], x, b0);                                              \
                if (halves == 2) {                                                              \
                    acc[r][1] = MAC(acc[r][1], x, b1);                                          \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    TARGET static void NAME(size_t rows, size_t cols, size_t ks, const ATYPE *a, size_t si,     \
                            size_t sk, const uint32_t *bp, size_t bs, float beta, float *c,     \
                            size_t ldc,                                                         \
                            const aimsi_gemm_epi *e, size_t i0, size_t j0)                      \
    {                                                                                           \
        __m512 acc[MR][2];                                                                      \
        for (size_t r = 0; r < MR; r++) {                                                       \
            acc[r][0] = _mm512_setzero_ps();                                                    \
            acc[r][1] = _mm512_setzero_ps();                                                    \
        }                                                                                       \
        /* constant row and half counts: the compiler unrolls them into registers;      \
         * a panel of at most 16 real columns skips the padded half (narrow outputs) */  \
        if (rows == MR && cols > 16) {                                                          \
            NAME##_rows(acc, MR, 2, ks, a, si, sk, bp, bs);                                     \
        } else if (rows == MR) {                                                                \
            NAME##_rows(acc, MR, 1, ks, a, si, sk, bp, bs);                                     \
        } else {                                                                                \
            NAME##_rows(acc, rows, cols > 16 ? 2 : 1, ks, a, si, sk, bp, bs);                   \
        }                                                                                       \
        store_block(acc, rows, cols, beta, c, ldc, e, i0, j0);                                  \
    }

#define BCAST_F32(p) _mm512_set1_ps(*(p))
#define LOADB_F32(p) _mm512_loadu_ps((const float *)(const void *)(p))
#define MAC_F32(acc, x, b) _mm512_fmadd_ps((x), (b), (acc))
#define BCAST_BF16(p) ((__m512bh)_mm512_set1_epi32((int)*(p)))
#define LOADB_BF16(p) ((__m512bh)_mm512_loadu_si512(p))
#define MAC_BF16(acc, x, b) _mm512_dpbf16_ps((acc), (x), (b))
MICRO_KERNEL(kernel_f32, F32_TARGET, float, __m512, BCAST_F32, LOADB_F32, MAC_F32)
MICRO_KERNEL(kernel_bf16, BF16_TARGET, uint32_t, __m512bh, BCAST_BF16, LOADB_BF16, MAC_BF16)

/* ---- the forward's panels of w, written by the update (aimsi_gemm_epi.wpk) ---------- */

/* r[0..7]: 16 slots (fp32 values or bf16 pairs) of 8 consecutive rows of w,
 * i.e. 8 neurons -> out[f]: slot f of the 8 rows side by side, the 8 columns
 * of panel row f that those neurons are (what pack_t_* writes there). Two
 * interleave stages inside 128-bit lanes, then a lane shuffle puts rows 0-3
 * and 4-7 of one slot together. */
F32_TARGET static inline void wpk_transpose8(const __m512 *r, __m256 out[16])
{
    __m512 t[MR];
    __m512 u[MR];
    for (size_t i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (size_t h = 0; h < 2; h++) { /* u[4h + c], lane L: rows 4h..4h+3 of slot 4L + c */
        u[4 * h] = _mm512_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm512_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
        u[4 * h + 2] = _mm512_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm512_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
    }
    for (size_t c = 0; c < 4; c++) {
        /* lanes 0, 1 (slots c, c + 4) and lanes 2, 3 (slots c + 8, c + 12) of
         * both halves; then (a, b) of lane L next to each other */
        const __m512 y0 = _mm512_shuffle_f32x4(_mm512_shuffle_f32x4(u[c], u[4 + c], 0x44),
                                               _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), 0xD8);
        const __m512 y1 = _mm512_shuffle_f32x4(_mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE),
                                               _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE), 0xD8);
        out[c] = _mm512_castps512_ps256(y0);
        out[c + 4] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(y0), 1));
        out[c + 8] = _mm512_castps512_ps256(y1);
        out[c + 12] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(y1), 1));
    }
}

/* r[0..15]: 16 slots of up to 16 consecutive rows of w (rows past `rows`
 * zero); store slot f < nf of rows < `rows` at dst + f * NR. Two row blocks
 * together fill whole 64-byte lines of the panel (16 neurons x 4 bytes), so
 * the lines are written whole instead of in 32-byte halves. */
F32_TARGET static void wpk_rows_store(const __m512 r[2 * MR], size_t rows, size_t nf, float *dst)
{
    const __mmask16 mk = mask16(rows);
    __m256 lo[16];
    __m256 hi[16];
    wpk_transpose8(r, lo);
    if (rows > MR) {
        wpk_transpose8(r + MR, hi);
    }
    for (size_t f = 0; f < nf; f++) {
        const __m512 z = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castpd256_pd512(_mm256_castps_pd(lo[f])),
            _mm256_castps_pd(rows > MR ? hi[f] : _mm256_setzero_ps()), 1));
        _mm512_mask_storeu_ps(dst + f * NR, mk, z);
    }
}

/* Where rows i.. of w, slot s land in the panels (ks slots per panel). */
static float *wpk_at(const gemm_job *g, size_t ks, size_t i, size_t s)
{
    return (float *)(void *)(g->epi->wpk + ((i / NR) * ks + s) * NR + i % NR);
}

/* After the update of rows [i, i + rows) (rows <= 16: one or two row blocks)
 * x columns [j0, j0 + cols) of w (C blocks of the weight-gradient GEMM, whose
 * n is the forward's k): the same values, reloaded from L1, into the
 * forward's fp32 panels. */
F32_TARGET static void wpk_block_f32(const gemm_job *g, size_t i, size_t rows, size_t j0,
                                     size_t cols)
{
    const aimsi_gemm_epi *e = g->epi;
    for (size_t h = 0; h < cols; h += 16) {
        __m512 r[2 * MR];
        for (size_t q = 0; q < 2 * MR; q++) {
            r[q] = q < rows ? _mm512_maskz_loadu_ps(mask16(cols - h), e->w + (i + q) * e->ldw + j0 + h)
                            : _mm512_setzero_ps();
        }
        wpk_rows_store(r, rows, cols - h >= 16 ? 16 : cols - h, wpk_at(g, g->n, i, j0 + h));
    }
}

/* The same for bf16 panels: 32 columns are 16 slots, rounded as slots_bf16
 * rounds (the odd tail's pair padded with zero, as past k). */
BF16_TARGET static void wpk_block_bf16(const gemm_job *g, size_t i, size_t rows, size_t j0,
                                       size_t cols)
{
    const aimsi_gemm_epi *e = g->epi;
    __m512 r[2 * MR];
    for (size_t q = 0; q < 2 * MR; q++) {
        r[q] = q < rows ? _mm512_castsi512_ps(slots_bf16(e->w + (i + q) * e->ldw + j0, 0, cols))
                        : _mm512_setzero_ps();
    }
    wpk_rows_store(r, rows, (cols + 1) / 2, wpk_at(g, (g->n + 1) / 2, i, j0 / 2));
}

/* Pack panel p of B into `panel`, then C rows [i0, i1) x the panel's columns.
 * A full panel of an fp32 B stored k x n is not packed: its slot rows are
 * already 32 floats side by side in B itself (at stride ldb instead of NR),
 * so the kernel reads them in place -- the same values in the same order, so
 * the same bits -- and the copy (the weight gradient's B is the whole batch,
 * packed by every thread of the row split: 400 KB per thread and step for
 * P1) is saved. A bf16 B comes that way when the caller gives it as pair
 * rows (aimsi_gemm_pre.bp32: the trainer's gather writes the batch so). */
static void sweep(const gemm_job *g, size_t p, uint32_t *panel, size_t i0, size_t i1)
{
    if (g->avx2) {
        aimsi_gemm_avx2_sweep(g, p, panel, i0, i1);
        return;
    }
    const size_t j0 = p * NR;
    const size_t cols = g->n - j0 >= NR ? NR : g->n - j0;
    const uint32_t *bp = panel;
    size_t bs = NR;
    if (g->bpk != NULL) { /* ready: written by the last update (aimsi_gemm_epi.wpk) */
        bp = g->bpk + p * g->ks * NR;
    } else if (cols == NR && g->direct_b) { /* in place: fp32 B, or bf16 B given as pair rows */
        bp = g->bpr != NULL ? g->bpr + j0 : (const uint32_t *)(const void *)(g->b + j0);
        bs = g->bpr != NULL ? g->ldbpr : g->ldb;
    } else if (g->b16 != NULL) {
        pack_n_b16(j0, cols, g->k, g->b16, g->ldb16, panel);
    } else if (g->prec == AIMSI_GEMM_BF16) {
        if (g->trans_b) {
            pack_t_bf16(j0, cols, g->k, g->ks, g->b, g->ldb, panel);
        } else {
            pack_n_bf16(j0, cols, g->k, g->b, g->ldb, panel);
        }
    } else if (g->trans_b) {
        pack_t_f32(j0, cols, g->k, g->ks, g->b, g->ldb, panel);
    } else {
        pack_n_f32(j0, cols, g->k, g->b, g->ldb, panel);
    }
    aimsi_gemm_prefetch(g, i0, i1, MR, j0, cols);
    aimsi_gemm_prefetch(g, i0 + MR, i1, MR, j0, cols);
    for (size_t i = i0; i < i1; i += MR) {
        const size_t rows = i1 - i >= MR ? MR : i1 - i;
        float *c = g->c + i * g->ldc + j0;
        aimsi_gemm_prefetch(g, i + PREFETCH_BLOCKS * MR, i1, MR, j0, cols);
        if (g->prec == AIMSI_GEMM_BF16) {
            kernel_bf16(rows, cols, g->ks, (const uint32_t *)g->a + i * g->stride_i, g->stride_i,
                        g->stride_k, bp, bs, g->beta, c, g->ldc, g->epi, i, j0);
        } else {
            kernel_f32(rows, cols, g->ks, (const float *)g->a + i * g->stride_i, g->stride_i,
                       g->stride_k, bp, bs, g->beta, c, g->ldc, g->epi, i, j0);
        }
        /* the new w, for the next forward: an even row block waits for the
         * odd one after it (whole panel lines), unless that one is not ours */
        if (g->epi != NULL && g->epi->wpk != NULL && (i % (2 * MR) != 0 || i + MR >= i1)) {
            const size_t lo = i % (2 * MR) == MR && i >= i0 + MR ? i - MR : i;
            if (g->prec == AIMSI_GEMM_BF16) {
                wpk_block_bf16(g, lo, i + rows - lo, j0, cols);
            } else {
                wpk_block_f32(g, lo, i + rows - lo, j0, cols);
            }
        }
    }
}

/* Panel range s is [s * panels / slots, (s + 1) * panels / slots). */
static size_t range_end(const gemm_job *g, size_t s)
{
    return (s + 1) * g->panels / g->slots;
}

/* One pool item per thread: take the panels of the range this CPU prefers,
 * then help with the others. Why: with k = one batch, the weight-gradient
 * GEMM reads and writes its C (the momentum buffer, 800 KB for the first
 * MLP layer) every step; when the same CPU takes the same columns every step
 * they stay in its L2, while first-come panels bounce C's lines between the
 * cores (measured: 2 threads no faster than 1). Every panel is computed by
 * exactly one thread whatever the order, so the bits do not change. */
static void run_ranges(void *ctx, size_t item)
{
    gemm_job *g = ctx;
    /* one panel buffer per pool item (items <= panels), reused for every
     * panel this thread packs: a panel is packed and consumed inside one
     * sweep, so a buffer per panel only spread the packed copy of B over
     * panels x 100 KB (the forward's W: 400 KB per thread) of L2, evicting
     * the weights and momentum the SGD epilogue updates next */
    uint32_t *panel = g->bp + item * g->ks * NR;
    const int cpu = sched_getcpu();
    const size_t home = cpu >= 0 ? (size_t)cpu % g->slots : 0;
    for (size_t d = 0; d < g->slots; d++) {
        const size_t s = (home + d) % g->slots;
        const size_t end = range_end(g, s);
        for (;;) {
            const size_t p = atomic_fetch_add_explicit(&g->next[s], 1, memory_order_relaxed);
            if (p >= end) {
                break;
            }
            sweep(g, p, panel, 0, g->m);
        }
    }
}
/* Row mode, for a GEMM whose epilogue updates weights (the SGD step in the
 * weight-gradient GEMM): range s is row blocks [s * blocks / slots, ...) of C,
 * i.e. output neurons, the same split as the forward GEMM's panels (its n is
 * the neurons), so with the same CPU preference each CPU updates exactly the
 * rows of w and v that it reads in the forward: they stay in its L2 instead
 * of crossing between the cores every step. A range is taken whole (each
 * thread packs every B panel into its own buffer, the panel slot of its range
 * number) and ranges no thread claimed are taken by the others. */
static void run_rows(void *ctx, size_t item)
{
    gemm_job *g = ctx;
    (void)item;
    const int cpu = sched_getcpu();
    const size_t home = cpu >= 0 ? (size_t)cpu % g->slots : 0;
    const size_t blocks = (g->m + MR - 1) / MR;
    for (size_t d = 0; d < g->slots; d++) {
        const size_t s = (home + d) % g->slots;
        if (atomic_exchange_explicit(&g->next[s], 1, memory_order_relaxed) != 0) {
            continue; /* taken */
        }
        const size_t i0 = s * blocks / g->slots * MR;
        const size_t b1 = (s + 1) * blocks / g->slots * MR;
        const size_t i1 = b1 < g->m ? b1 : g->m;
        uint32_t *panel = g->bp + s * g->ks * NR;
        for (size_t p = 0; p < g->panels && i0 < i1; p++) {
            sweep(g, p, panel, i0, i1);
        }
    }
}
#endif /* AIMSI_HAVE_OWN_GEMM */

#ifdef AIMSI_HAVE_OWN_GEMM
/* CPU features, read once: bit 0 the AVX-512 fp32 kernel, bit 1 the bf16
 * kernel (AVX512_BF16), bit 2 the AVX2 + FMA fp32 kernel (gemm_avx2.c). */
static unsigned g_features;
static pthread_once_t g_features_once = PTHREAD_ONCE_INIT;

static void read_features(void)
{
    __builtin_cpu_init();
    const int f = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl");
    const int a2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    g_features = (f ? 1u : 0u) | (f && __builtin_cpu_supports("avx512bf16") ? 2u : 0u) |
                 (a2 ? 4u : 0u);
}

static unsigned features(void)
{
    pthread_once(&g_features_once, read_features);
    return g_features;
}
#endif

/* fp32 through the AVX2 kernel even where AVX-512 is present: process-wide,
 * for the tests that run both kernels on one machine. */
static atomic_int g_force_avx2;

int aimsi_gemm_avx2_force(int on)
{
    return atomic_exchange(&g_force_avx2, on ? 1 : 0);
}

int aimsi_gemm_isa(void)
{
#ifdef AIMSI_HAVE_OWN_GEMM
    const unsigned f = features();
    if ((f & 1u) != 0) {
        return AIMSI_GEMM_ISA_AVX512;
    }
    return (f & 4u) != 0 ? AIMSI_GEMM_ISA_AVX2 : AIMSI_GEMM_ISA_NONE;
#else
    return AIMSI_GEMM_ISA_NONE;
#endif
}

int aimsi_gemm_own_available(int prec)
{
#ifdef AIMSI_HAVE_OWN_GEMM
    return (features() & (prec == AIMSI_GEMM_BF16 ? 2u : 5u)) != 0;
#else
    (void)prec;
    return 0;
#endif
}

/* Slots along k and the packed-A size (in slots, rounded to a cache line). */
static size_t k_slots(int prec, size_t k)
{
    return prec == AIMSI_GEMM_BF16 ? (k + 1) / 2 : k;
}

static size_t a_slots(int prec, size_t m, size_t k)
{
    return prec == AIMSI_GEMM_BF16 ? (m * k_slots(prec, k) + 15) & ~(size_t)15 : 0;
}

size_t aimsi_gemm_own_ws_bytes(int prec, size_t m, size_t n, size_t k)
{
    const size_t panels = (n + NR - 1) / NR;
    return (a_slots(prec, m, k) + panels * NR * k_slots(prec, k)) * sizeof(uint32_t) + 64;
}

/* The epilogue as plain passes over C (the path without the own kernels):
 * the same operations in the same order as epi_half. */
void aimsi_gemm_epi_apply(const aimsi_gemm_epi *e, size_t m, size_t n, float *c, size_t ldc)
{
    for (size_t i = 0; i < m; i++) {
        float *cr = c + i * ldc;
        float *wr = e->w != NULL ? e->w + i * e->ldw : NULL;
        const float *gr = e->gate != NULL ? e->gate + i * ldc : NULL;
        for (size_t j = 0; j < n; j++) {
            float v = cr[j];
            if (e->bias != NULL) {
                v += e->bias[j];
            }
            if (e->relu) {
                v = v > 0.0f ? v : 0.0f;
            }
            if (gr != NULL) {
                v = gr[j] > 0.0f ? v : 0.0f;
            }
            if (wr != NULL && e->adam) { /* train_opt.c's adam_scalar */
                const size_t at = i * e->ldw + j;
                float g = v;
                if (e->adam == 2) {
                    wr[j] -= e->lr * e->wd * wr[j];
                } else {
                    g += e->wd * wr[j];
                }
                e->v1[at] = e->b1 * e->v1[at] + (1.0f - e->b1) * g;
                e->v2[at] = e->b2 * e->v2[at] + (1.0f - e->b2) * g * g;
                const float mh = e->v1[at] / e->c1;
                const float sh = e->v2[at] / e->c2;
                wr[j] -= e->lr * mh / (sqrtf(sh) + e->eps);
                continue; /* C keeps the gradient */
            }
            if (wr != NULL) {
                if (e->wd > 0.0f) {
                    v += e->wd * wr[j];
                }
                wr[j] -= e->lr * v;
                v *= e->mom;
            }
            cr[j] = v;
        }
    }
}

void aimsi_gemm_own(aimsi_pool *pool, void *ws, int prec, int trans_a, int trans_b, size_t m,
                    size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                    float beta, float *c, size_t ldc)
{
    aimsi_gemm_own_epi(pool, ws, prec, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc,
                       NULL);
}

void aimsi_gemm_own_epi(aimsi_pool *pool, void *ws, int prec, int trans_a, int trans_b, size_t m,
                        size_t n, size_t k, const float *a, size_t lda, const float *b,
                        size_t ldb, float beta, float *c, size_t ldc, const aimsi_gemm_epi *epi)
{
    const aimsi_gemm_pre pre = {0};
    aimsi_gemm_own_pre(pool, ws, prec, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc,
                       epi, &pre);
}

int aimsi_bf16_pair_rows(const uint32_t *r0, const uint32_t *r1, size_t k, uint32_t *dst)
{
#ifdef AIMSI_HAVE_OWN_GEMM
    if (aimsi_gemm_own_available(AIMSI_GEMM_BF16)) {
        pair_rows_bf16(r0, r1, k, dst);
        return 1;
    }
#endif
    (void)r0;
    (void)r1;
    (void)k;
    (void)dst;
    return 0;
}

/* Full fp32 panels of a B stored k x n read in place (1, the default) or
 * packed (0): process-wide, for the test that proves both give the same bits. */
static atomic_int g_direct_b = 1;

int aimsi_gemm_direct_b_force(int on)
{
    return atomic_exchange(&g_direct_b, on ? 1 : 0);
}

int aimsi_bf16_round_row(const float *x, size_t k, uint32_t *dst)
{
#ifdef AIMSI_HAVE_OWN_GEMM
    if (aimsi_gemm_own_available(AIMSI_GEMM_BF16)) {
        round_row_bf16(x, k, dst);
        return 1;
    }
#endif
    (void)x;
    (void)k;
    (void)dst;
    return 0;
}

void aimsi_gemm_own_pre(aimsi_pool *pool, void *ws, int prec, int trans_a, int trans_b, size_t m,
                        size_t n, size_t k, const float *a, size_t lda, const float *b,
                        size_t ldb, float beta, float *c, size_t ldc, const aimsi_gemm_epi *epi,
                        const aimsi_gemm_pre *pre)
{
#ifdef AIMSI_HAVE_OWN_GEMM
    if (aimsi_gemm_own_available(prec)) {
        uint32_t *base = (uint32_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
        const size_t ks = k_slots(prec, k);
        /* fp32 without AVX-512 (or forced): the AVX2 kernel; the bf16
         * kernels exist only for AVX512_BF16 (aimsi_gemm_own_available) */
        const int avx2 = prec == AIMSI_GEMM_F32 && (features() & 4u) != 0 &&
                         ((features() & 1u) == 0 || atomic_load(&g_force_avx2));
        gemm_job g = {.prec = prec,
                      .trans_b = trans_b,
                      .avx2 = avx2,
                      .m = m,
                      .n = n,
                      .k = k,
                      .ks = ks,
                      .a = a,
                      .stride_i = trans_a ? 1 : lda,
                      .stride_k = trans_a ? lda : 1,
                      .b = b,
                      .ldb = ldb,
                      .bp = base + a_slots(prec, m, k),
                      .beta = beta,
                      .c = c,
                      .ldc = ldc,
                      .epi = epi};
        if (prec == AIMSI_GEMM_BF16 && !trans_b && pre->b16 != NULL) {
            g.b16 = pre->b16;
            g.ldb16 = pre->ldb16;
        }
        if (prec == AIMSI_GEMM_BF16 && !trans_a && pre->a16 != NULL) {
            g.a = pre->a16; /* already the row-major slots pack_a_bf16 makes */
            g.stride_i = ks;
            g.stride_k = 1;
        } else if (prec == AIMSI_GEMM_BF16) {
            /* on the calling thread: packing it on the pool (16 rows per item)
             * split the copy over both L2s, every panel then read half of it
             * from the other core, and it measured no faster */
            pack_a_bf16(trans_a, m, k, a, lda, base, 0, trans_a ? ks : m);
            g.a = base;
            g.stride_i = trans_a ? 1 : ks;
            g.stride_k = trans_a ? m : 1;
        }
        if (trans_b && pre->bpk != NULL) {
            g.bpk = pre->bpk;
        }
        if (prec == AIMSI_GEMM_BF16 && !trans_b && pre->bp32 != NULL) {
            g.bpr = pre->bp32;
            g.ldbpr = pre->ldbp32;
        }
        g.direct_b = !trans_b && (prec == AIMSI_GEMM_F32 || g.bpr != NULL) &&
                     atomic_load(&g_direct_b);
        g.panels = (n + NR - 1) / NR;
        g.slots = pool != NULL ? aimsi_pool_threads(pool) : 1;
        g.slots = g.slots > GEMM_MAX_SLOTS ? GEMM_MAX_SLOTS : g.slots;
        g.slots = g.slots > g.panels ? g.panels : g.slots;
        /* row mode when the epilogue updates weights and every range has a
         * few row blocks and its own panel buffer */
        const size_t threads = pool != NULL ? aimsi_pool_threads(pool) : 1;
        const int rows = epi != NULL && epi->w != NULL && threads > 1 &&
                         threads <= GEMM_MAX_SLOTS && m >= 2 * MR * threads &&
                         g.panels >= threads;
        if (rows) {
            g.slots = threads;
            for (size_t s = 0; s < g.slots; s++) {
                atomic_init(&g.next[s], 0);
            }
            aimsi_pool_run(pool, g.slots, run_rows, &g);
            return;
        }
        for (size_t s = 0; s < g.slots; s++) {
            atomic_init(&g.next[s], s * g.panels / g.slots);
        }
        aimsi_pool_run(pool, g.slots, run_ranges, &g);
        return;
    }
#endif
    (void)pool;
    (void)ws;
    (void)prec;
    (void)pre;
    aimsi_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    if (epi != NULL) {
        aimsi_gemm_epi_apply(epi, m, n, c, ldc);
    }
}
