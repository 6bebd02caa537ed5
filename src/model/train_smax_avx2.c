/*
 * train_smax_avx2.c -- the AVX2 + FMA group kernels of softmax regression's
 * own step (train_smax.c has the step and the design notes; the AVX-512
 * kernels are in train_smax_avx512.c): 8 lanes, 16 ymm registers.
 *
 * The structure of the AVX-512 kernels, blocked for half the lanes and half
 * the registers:
 *
 *   - logits: the rows two at a time, read where they lie in the dataset
 *     (the rows four pairs ahead prefetched into L2 meanwhile), dot products
 *     along the features with lanes = 8 features; the two rows share every
 *     load of W, and the classes go in passes of at most 6 (2 rows x 6
 *     classes = 12 accumulators + 2 rows + 1 W vector = 15 registers; 10
 *     classes: two passes of 5 over the pair, which stays in L1). Each pass
 *     folds its 8-lane sums into one vector of class sums (a hadd tree);
 *   - softmax, loss and the loss gradient per row with the classes in two
 *     8-lane vectors (the formula of train_dense.c; exp is Cephes' expf
 *     polynomial, within 2 ulp of expf, with 2^n applied as two exact
 *     factors so that it underflows to 0 where expf does and the loss is inf
 *     where the general step's is);
 *   - the group's share of the weight gradient G^T X over its rows, with
 *     K classes x 8 features (K <= 6: x 16) in registers, classes in passes
 *     of at most 12, the rows streamed from this core's L2 where the forward
 *     left them.
 *
 * Bits. Every sum runs in a fixed order that depends on the shapes only, so
 * the bits do not depend on the thread count (train_smax.c's groups are fixed
 * halves of the batch). They are not the AVX-512 kernels' bits: the logits'
 * lane-wise partial sums run over 8 features instead of 16 and are folded
 * by another tree (the weight gradient's sums are in row order in both, but
 * from other logits). The compact copy (u8 codes of k / d pixels) decodes
 * to the float rows' bits, as in the AVX-512 kernels.
 *
 * Only called after train_smax.c saw AVX2 and FMA on the CPU.
 */
#include <math.h>
#include <string.h>

#include "aimsi_smax.h"

#ifdef AIMSI_HAVE_SMAX

#define AVX2_TARGET __attribute__((target("avx2,fma")))

/* Classes per pass of the logits (2 rows each) and of the weight gradient. */
enum { LOGIT_CLASSES = 6, GRAD_CLASSES = 12 };

/* All ones in lanes 0..n-1 (n >= 8: all). */
AVX2_TARGET SMAX_INLINE __m256i lane_mask(size_t n)
{
    const int k = n >= 8 ? 8 : (int)n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The 8 floats at p of which n (>= 1) are there. */
AVX2_TARGET SMAX_INLINE __m256 load8(const float *p, size_t n)
{
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n));
}

/* The sums of a[0..n) (n <= 8) in lanes 0..n-1 of one vector (0 above):
 * hadd pairs, then pairs of pairs, then the two 128-bit halves. */
AVX2_TARGET SMAX_INLINE __m256 fold8(const __m256 *a, const size_t n)
{
    const __m256 z = _mm256_setzero_ps();
    const __m256 h0 = _mm256_hadd_ps(a[0], n > 1 ? a[1] : z);
    const __m256 h1 = n > 2 ? _mm256_hadd_ps(a[2], n > 3 ? a[3] : z) : z;
    const __m256 h2 = n > 4 ? _mm256_hadd_ps(a[4], n > 5 ? a[5] : z) : z;
    const __m256 h3 = n > 6 ? _mm256_hadd_ps(a[6], n > 7 ? a[7] : z) : z;
    const __m256 q0 = _mm256_hadd_ps(h0, h1); /* a0..a3 per half */
    const __m256 q1 = _mm256_hadd_ps(h2, h3); /* a4..a7 per half */
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                         _mm256_permute2f128_ps(q0, q1, 0x31));
}

/* Logits of classes [c0, c0 + n) (n <= LOGIT_CLASSES) of two rows (x1 may
 * equal x0), without the bias, into z0[c0..], z1[c0..] (8 floats written
 * each: the buffers have room). p0, p1 (or NULL): rows whose lines to
 * prefetch at the same pace. */
AVX2_TARGET SMAX_INLINE void logits2_pass(const size_t n, size_t in, const float *w,
                                          const float *x0, const float *x1, const float *p0,
                                          const float *p1, float *z0, float *z1)
{
    __m256 a0[LOGIT_CLASSES];
    __m256 a1[LOGIT_CLASSES];
    for (size_t c = 0; c < n; c++) {
        a0[c] = _mm256_setzero_ps();
        a1[c] = _mm256_setzero_ps();
    }
    for (size_t j = 0; j < in; j += 8) {
        if (p0 != NULL && (j & 15u) == 0) { /* a line of each every 16 features */
            _mm_prefetch((const char *)(p0 + j), SMAX_HINT);
            _mm_prefetch((const char *)(p1 + j), SMAX_HINT);
        }
        const __m256 v0 = load8(x0 + j, in - j);
        const __m256 v1 = load8(x1 + j, in - j);
        for (size_t c = 0; c < n; c++) {
            const __m256 wv = load8(w + c * in + j, in - j);
            a0[c] = _mm256_fmadd_ps(v0, wv, a0[c]);
            a1[c] = _mm256_fmadd_ps(v1, wv, a1[c]);
        }
    }
    if (p0 != NULL) {
        _mm_prefetch((const char *)(p0 + in - 1), SMAX_HINT);
        _mm_prefetch((const char *)(p1 + in - 1), SMAX_HINT);
    }
    _mm256_storeu_ps(z0, fold8(a0, n));
    _mm256_storeu_ps(z1, fold8(a1, n));
}

/* Logits of two rows, all K classes, in passes of at most LOGIT_CLASSES
 * (as even as they go: 10 = 5 + 5); the prefetches go with the first. */
AVX2_TARGET SMAX_INLINE void logits2(const size_t K, size_t in, const float *w, const float *x0,
                                     const float *x1, const float *p0, const float *p1,
                                     float *z0, float *z1)
{
    const size_t passes = (K + LOGIT_CLASSES - 1) / LOGIT_CLASSES;
    const size_t per = (K + passes - 1) / passes;
    for (size_t c0 = 0; c0 < K; c0 += per) {
        const size_t n = K - c0 < per ? K - c0 : per;
        logits2_pass(n, in, w + c0 * in, x0, x1, c0 == 0 ? p0 : NULL, p1, z0 + c0, z1 + c0);
    }
}

/* One group's share of the weight gradient: pw[c][j] = sum over its rows r
 * (in order; row r at x + idx[r] in, or x + r in when idx is NULL) of
 * g[r][c] x_r[j], classes in passes of at most GRAD_CLASSES,
 * 16 features (K <= 6) or 8 at a time with the sums in registers; pb[c] =
 * sum of g[r][c]. */
AVX2_TARGET SMAX_INLINE void grad_block(const size_t K, size_t in, const float *x,
                                        const size_t *idx, size_t cnt, const float *g,
                                        float *pw, float *pb)
{
    const size_t H = K <= 6 ? 2 : 1; /* 8-feature vectors per row and class */
    const size_t passes = (K + GRAD_CLASSES - 1) / GRAD_CLASSES;
    const size_t per = (K + passes - 1) / passes;
    for (size_t c0 = 0; c0 < K; c0 += per) {
        const size_t n = K - c0 < per ? K - c0 : per;
        for (size_t j = 0; j < in; j += 8 * H) {
            const size_t left = in - j;
            __m256 acc[GRAD_CLASSES][2];
            for (size_t c = 0; c < n; c++) {
                acc[c][0] = _mm256_setzero_ps();
                acc[c][1] = _mm256_setzero_ps();
            }
            for (size_t r = 0; r < cnt; r++) {
                const float *xr = idx != NULL ? x + idx[r] * in + j : x + r * in + j;
                const __m256 v0 = load8(xr, left);
                const __m256 v1 = H == 2 && left > 8 ? load8(xr + 8, left - 8)
                                                     : _mm256_setzero_ps();
                const float *gr = g + r * K + c0;
                for (size_t c = 0; c < n; c++) {
                    const __m256 gb = _mm256_broadcast_ss(gr + c);
                    acc[c][0] = _mm256_fmadd_ps(gb, v0, acc[c][0]);
                    if (H == 2) {
                        acc[c][1] = _mm256_fmadd_ps(gb, v1, acc[c][1]);
                    }
                }
            }
            const __m256i m0 = lane_mask(left);
            for (size_t c = 0; c < n; c++) {
                float *o = pw + (c0 + c) * in + j;
                _mm256_maskstore_ps(o, m0, acc[c][0]);
                if (H == 2 && left > 8) {
                    _mm256_maskstore_ps(o + 8, lane_mask(left - 8), acc[c][1]);
                }
            }
        }
    }
    const __m256i mlo = lane_mask(K);
    const __m256i mhi = lane_mask(K > 8 ? K - 8 : 0);
    __m256 slo = _mm256_setzero_ps();
    __m256 shi = _mm256_setzero_ps();
    for (size_t r = 0; r < cnt; r++) {
        slo = _mm256_add_ps(slo, _mm256_maskload_ps(g + r * K, mlo));
        if (K > 8) {
            shi = _mm256_add_ps(shi, _mm256_maskload_ps(g + r * K + 8, mhi));
        }
    }
    _mm256_maskstore_ps(pb, mlo, slo);
    if (K > 8) {
        _mm256_maskstore_ps(pb + 8, mhi, shi);
    }
}

/* 2^k for 8 integers k in [-126, 127]: the exponent field. */
AVX2_TARGET SMAX_INLINE __m256 pow2i(__m256i k)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

/* exp of 8 lanes (x <= 0 here: logits minus their maximum): Cephes' expf
 * (x = n ln2 + r, |r| <= ln2 / 2, degree-6 polynomial) within 2 ulp of
 * expf; 2^n (n >= -150) as 2^(n/2) 2^(n - n/2), two normal factors, so the
 * one rounding is in the last product and very negative x gives expf's
 * subnormals or 0; NaN stays NaN (max keeps its second operand). */
AVX2_TARGET SMAX_INLINE __m256 exp8(__m256 x)
{
    x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    return _mm256_mul_ps(_mm256_mul_ps(p, pow2i(n1)), pow2i(n2));
}

/* The largest and the sum of the 8 lanes (fixed order). */
AVX2_TARGET SMAX_INLINE float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

AVX2_TARGET SMAX_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* Softmax, loss and loss gradient of one row from its logits z[0..K) (bias
 * not yet added), the classes in two 8-lane vectors: G = (softmax(z) -
 * onehot(y)) / n from max-shifted exponentials, the loss as log(sum) - (z_y
 * - max); when p_y underflows to 0 the loss is inf, as the general step's. */
AVX2_TARGET SMAX_INLINE double row_loss_grad(const aimsi_smax_ctx *s, const float *z, int32_t y,
                                             float *g)
{
    const size_t K = s->k;
    const __m256i mlo = lane_mask(K);
    const __m256i mhi = lane_mask(K > 8 ? K - 8 : 0);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256 vlo = _mm256_blendv_ps(
        ninf, _mm256_add_ps(_mm256_loadu_ps(z), _mm256_maskload_ps(s->b, mlo)),
        _mm256_castsi256_ps(mlo));
    const __m256 vhi = _mm256_blendv_ps(
        ninf, _mm256_add_ps(_mm256_loadu_ps(z + 8), _mm256_maskload_ps(s->b + 8, mhi)),
        _mm256_castsi256_ps(mhi));
    const float mx = hmax8(_mm256_max_ps(vlo, vhi));
    const __m256 vm = _mm256_set1_ps(mx);
    const __m256 elo = _mm256_and_ps(exp8(_mm256_sub_ps(vlo, vm)), _mm256_castsi256_ps(mlo));
    const __m256 ehi = _mm256_and_ps(exp8(_mm256_sub_ps(vhi, vm)), _mm256_castsi256_ps(mhi));
    const float sum = hsum8(_mm256_add_ps(elo, ehi));
    const float inv = s->inv_n / sum;
    float gv[16];
    float ev[16];
    float zv[16];
    _mm256_storeu_ps(gv, _mm256_mul_ps(elo, _mm256_set1_ps(inv)));
    _mm256_storeu_ps(gv + 8, _mm256_mul_ps(ehi, _mm256_set1_ps(inv)));
    _mm256_storeu_ps(ev, elo);
    _mm256_storeu_ps(ev + 8, ehi);
    _mm256_storeu_ps(zv, vlo);
    _mm256_storeu_ps(zv + 8, vhi);
    gv[y] -= s->inv_n;
    memcpy(g, gv, K * sizeof *g);
    if (!(ev[y] > 0.0f)) { /* p_y underflowed (or NaN): inf (NaN), as the general step says */
        return log((double)sum) - log((double)ev[y]);
    }
    return log((double)sum) - ((double)zv[y] - (double)mx);
}

/* ---- the compact copy (train_smax.c: made during the first epoch, read from
 * the second; the same floats bit for bit, so the same trained bits) ---- */

/* The float of 8 codes k: k / d correctly rounded, as q = k r, then
 * q + (k - q d) r (the AVX-512 kernels' decode16, lane for lane). */
AVX2_TARGET SMAX_INLINE __m256 decode8(__m256i k, __m256 d, __m256 r)
{
    const __m256 kf = _mm256_cvtepi32_ps(k);
    const __m256 q = _mm256_mul_ps(kf, r);
    return _mm256_fmadd_ps(_mm256_fnmadd_ps(q, d, kf), r, q);
}

/* The codes of a row of `in` features into q: k = rint(x d) as a byte;
 * returns whether every feature is decode8(k) bit for bit with k in 0..255
 * (-0.0, NaN, values between codes or out of range: not). Only during the
 * first epoch: the bytes go out one by one. */
AVX2_TARGET SMAX_INLINE int code_row(const float *x, uint8_t *q, size_t in, float qd)
{
    const __m256 d = _mm256_set1_ps(qd);
    const __m256 rr = _mm256_set1_ps(1.0f / qd);
    const __m256 zero = _mm256_setzero_ps();
    const __m256 hi = _mm256_set1_ps(255.0f);
    int all = 1;
    for (size_t j = 0; j < in; j += 8) {
        const size_t n = in - j < 8 ? in - j : 8;
        const __m256 v = load8(x + j, n);
        const __m256 kf = _mm256_round_ps(_mm256_mul_ps(v, d),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256i k = _mm256_cvtps_epi32(kf);
        const __m256 back = decode8(k, d, rr);
        const __m256 ok = _mm256_and_ps(
            _mm256_and_ps(_mm256_cmp_ps(kf, zero, _CMP_GE_OQ), _mm256_cmp_ps(kf, hi, _CMP_LE_OQ)),
            _mm256_castsi256_ps(
                _mm256_cmpeq_epi32(_mm256_castps_si256(back), _mm256_castps_si256(v))));
        const unsigned need = (1u << n) - 1u;
        all &= ((unsigned)_mm256_movemask_ps(ok) & need) == need;
        int32_t kv[8];
        _mm256_storeu_si256((__m256i *)(void *)kv, k);
        for (size_t l = 0; l < n; l++) {
            q[j + l] = (uint8_t)kv[l];
        }
    }
    return all;
}

/* A compact row of `in` codes decoded into o (the dataset row's bits). */
AVX2_TARGET SMAX_INLINE void decode_row(const uint8_t *q, float *o, size_t in, float qd)
{
    const __m256 d = _mm256_set1_ps(qd);
    const __m256 rr = _mm256_set1_ps(1.0f / qd);
    size_t j = 0;
    for (; j + 8 <= in; j += 8) {
        const __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(q + j));
        _mm256_storeu_ps(o + j, decode8(_mm256_cvtepu8_epi32(b), d, rr));
    }
    if (j < in) { /* the tail through a buffer: no read past the row */
        uint8_t tb[8] = {0};
        memcpy(tb, q + j, in - j);
        const __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)tb);
        _mm256_maskstore_ps(o + j, lane_mask(in - j), decode8(_mm256_cvtepu8_epi32(b), d, rr));
    }
}

/* group_k from the compact copy: each pair of rows decoded into xb (this
 * group's rows of the batch block), its logits from there (the float rows'
 * bits, so the float path's sums), and the weight gradient from xb. */
AVX2_TARGET SMAX_INLINE void group_q(const aimsi_smax_ctx *s, const size_t K, const size_t *idx,
                                     size_t cnt, float *xb, float *g, float *pw, float *pb,
                                     double *loss)
{
    const size_t in = s->in;
    const uint8_t *q = s->xq;
    double total = 0.0;
    float z0[SMAX_KMAX + 8];
    float z1[SMAX_KMAX + 8];
    memset(z0, 0, sizeof z0);
    memset(z1, 0, sizeof z1);
    for (size_t r = 0; r < cnt && r < 2 * SMAX_AHEAD; r++) { /* the first pairs */
        aimsi_smax_prefetch_row(q + idx[r] * in, in);
    }
    for (size_t r = 0; r < cnt; r += 2) {
        const size_t r1 = r + 1 < cnt ? r + 1 : r;
        for (size_t a = r + 2 * SMAX_AHEAD; a < cnt && a <= r + 2 * SMAX_AHEAD + 1; a++) {
            aimsi_smax_prefetch_row(q + idx[a] * in, in); /* SMAX_AHEAD pairs ahead */
        }
        decode_row(q + idx[r] * in, xb + r * in, in, s->qd);
        decode_row(q + idx[r1] * in, xb + r1 * in, in, s->qd);
        logits2(K, in, s->w, xb + r * in, xb + r1 * in, NULL, NULL, z0, z1);
        total += row_loss_grad(s, z0, s->labels[idx[r]], g + r * K);
        if (r + 1 < cnt) {
            total += row_loss_grad(s, z1, s->labels[idx[r + 1]], g + (r + 1) * K);
        }
    }
    grad_block(K, in, xb, NULL, cnt, g, pw, pb);
    *loss = total;
}

/* Group rows idx[0..cnt): forward, loss gradient, then the group's gradient. */
AVX2_TARGET SMAX_INLINE void group_k(const aimsi_smax_ctx *s, const size_t K, const size_t *idx,
                                     size_t cnt, float *xb, float *g, float *pw, float *pb,
                                     double *loss)
{
    if (s->xq != NULL) {
        group_q(s, K, idx, cnt, xb, g, pw, pb, loss);
        return;
    }
    const size_t in = s->in;
    const float *x = s->x;
    double total = 0.0;
    float z0[SMAX_KMAX + 8]; /* + 8: a pass writes a whole vector */
    float z1[SMAX_KMAX + 8];
    memset(z0, 0, sizeof z0); /* lanes past K are read (and masked off) */
    memset(z1, 0, sizeof z1);
    aimsi_smax_prefetch_first(x, idx, cnt, in);
    for (size_t r = 0; r < cnt; r += 2) {
        const aimsi_smax_pair pr = aimsi_smax_pair_at(x, idx, cnt, in, r);
        logits2(K, in, s->w, pr.x0, pr.x1, pr.p0, pr.p1, z0, z1);
        if (s->qmake != NULL) { /* the compact copy, from the rows now in L1 */
            int ok = code_row(pr.x0, s->qmake + idx[r] * in, in, s->qd);
            if (r + 1 < cnt) {
                ok &= code_row(pr.x1, s->qmake + idx[r + 1] * in, in, s->qd);
            }
            if (!ok) {
                atomic_store_explicit(s->qbad, 1, memory_order_relaxed);
            }
        }
        total += row_loss_grad(s, z0, s->labels[idx[r]], g + r * K);
        if (r + 1 < cnt) {
            total += row_loss_grad(s, z1, s->labels[idx[r + 1]], g + (r + 1) * K);
        }
    }
    grad_block(K, in, x, idx, cnt, g, pw, pb);
    *loss = total;
}

/* One instance per class count: the compiler keeps the sums in registers
 * only when K is a constant. */
#define SMAX2_K(K)                                                                               \
    AVX2_TARGET static void group_##K(const aimsi_smax_ctx *s, const size_t *idx, size_t cnt,   \
                                      float *xb, float *g, float *pw, float *pb, double *loss)   \
    {                                                                                            \
        group_k(s, K, idx, cnt, xb, g, pw, pb, loss);                                            \
    }
AIMSI_SMAX_EACH_K(SMAX2_K)

/* The table train_smax.c picks on a CPU with AVX2 and FMA but not AVX-512. */
const aimsi_smax_isa aimsi_smax_avx2 = {
    "avx2", 1,
    AIMSI_SMAX_GROUP_TABLE};
#endif /* AIMSI_HAVE_SMAX */
