/*
 * train_smax_avx512.c -- the AVX-512 group kernels of softmax regression's own
 * step (train_smax.c has the step and the design notes): 16 lanes, 32 zmm
 * registers. A group's rows are read where they lie in the dataset (no
 * gather copy; the lines of the rows four pairs ahead are prefetched into L2
 * while a pair computes), the logits come from dot products along the
 * features (lanes = 16 features, two rows share every load of W, so all 16
 * lanes do real work), then softmax, loss and the loss gradient G per row
 * with the classes in the lanes of one vector (the formula of train_dense.c;
 * exp is a 16-lane polynomial within 2 ulp of expf, so these probabilities
 * may differ from aimsi_softmax_exp's -- the one predict uses -- in the last
 * bits), and last the group's share of the weight gradient, G^T X over its
 * rows, register-blocked (K classes x 32 features in registers, the group's
 * rows streamed from this core's L2 where the forward left them).
 *
 * Only called after train_smax.c saw AVX-512 F/BW/VL/DQ on the CPU.
 */
#include <math.h>
#include <string.h>

#include "aimsi_smax.h"

#ifdef AIMSI_HAVE_SMAX
#define SMAX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

static inline __mmask16 tail_mask(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* The float of 16 codes k (u8 in the low bytes of 32-bit lanes): k / d
 * correctly rounded, as q = k r, then q + (k - q d) r with exact residuals
 * (two FMAs; the compact copy is made only where this gives every feature's
 * bits, so the divisor need not make it exact for every k). */
SMAX_TARGET SMAX_INLINE __m512 decode16(__m512i k, __m512 d, __m512 r)
{
    const __m512 kf = _mm512_cvtepi32_ps(k);
    const __m512 q = _mm512_mul_ps(kf, r);
    return _mm512_fmadd_ps(_mm512_fnmadd_ps(q, d, kf), r, q);
}

/* The sums of a[0..K) (K <= 16) in lanes 0..K-1 of one vector: a
 * transposing tree (32-bit, 64-bit and 128-bit interleaves, 15 adds for 16
 * vectors) instead of one 8-instruction reduction per vector. */
SMAX_TARGET SMAX_INLINE __m512 fold16(const __m512 *a, const size_t K)
{
    const __m512 zero = _mm512_setzero_ps();
    __m512 b[8];
    __m512 c[4];
    for (size_t i = 0; i < 8; i++) { /* lane L: x(4L + {0,2}), y(4L + {0,2}), x(+{1,3}), y */
        const __m512 x = 2 * i < K ? a[2 * i] : zero;
        const __m512 y = 2 * i + 1 < K ? a[2 * i + 1] : zero;
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    }
    for (size_t i = 0; i < 4; i++) { /* lane L: the lane-L sums of a[4i .. 4i + 3] */
        const __m512d x = _mm512_castps_pd(b[2 * i]);
        const __m512d y = _mm512_castps_pd(b[2 * i + 1]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    const __m512 e01 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88),
                                     _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
    const __m512 e23 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x88),
                                     _mm512_shuffle_f32x4(c[2], c[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(e01, e23, 0x88),
                         _mm512_shuffle_f32x4(e01, e23, 0xDD));
}

/* Both rows' partial sums of every class for one 16-feature vector of each
 * row: a_r[c] += v_r w[c][j..] (full: a whole vector, W loaded unmasked;
 * else the tail under mask m). Shared by logits2 and logits2_q. */
SMAX_TARGET SMAX_INLINE void fma2_classes(const size_t K, size_t in, const float *wj,
                                          const int full, __mmask16 m, __m512 v0, __m512 v1,
                                          __m512 *a0, __m512 *a1)
{
    for (size_t c = 0; c < K; c++) {
        const __m512 wv =
            full ? _mm512_loadu_ps(wj + c * in) : _mm512_maskz_loadu_ps(m, wj + c * in);
        a0[c] = _mm512_fmadd_ps(v0, wv, a0[c]);
        a1[c] = _mm512_fmadd_ps(v1, wv, a1[c]);
    }
}

/* Both rows' K partial sums, zero. */
SMAX_TARGET SMAX_INLINE void zero2(const size_t K, __m512 *a0, __m512 *a1)
{
    for (size_t c = 0; c < K; c++) {
        a0[c] = _mm512_setzero_ps();
        a1[c] = _mm512_setzero_ps();
    }
}

/* Logits of two rows (x1 may equal x0), without the bias, in lanes 0..K-1:
 * z_r[c] = sum_j x_r[j] w[c][j] in 16 lane-wise partial sums along j, then
 * folded. The two rows share every load of W; p0, p1 (or NULL): rows whose
 * lines to prefetch at the same pace. */
SMAX_TARGET SMAX_INLINE void logits2(const size_t K, size_t in, const float *w, const float *x0,
                                     const float *x1, const float *p0, const float *p1,
                                     __m512 *z0, __m512 *z1)
{
    __m512 a0[SMAX_KMAX];
    __m512 a1[SMAX_KMAX];
    zero2(K, a0, a1);
    size_t j = 0;
    for (; j + 16 <= in; j += 16) {
        if (p0 != NULL) {
            _mm_prefetch((const char *)(p0 + j), SMAX_HINT);
            _mm_prefetch((const char *)(p1 + j), SMAX_HINT);
        }
        const __m512 v0 = _mm512_loadu_ps(x0 + j);
        const __m512 v1 = _mm512_loadu_ps(x1 + j);
        fma2_classes(K, in, w + j, 1, (__mmask16)0xFFFF, v0, v1, a0, a1);
    }
    if (j < in) {
        const __mmask16 m = tail_mask(in - j);
        const __m512 v0 = _mm512_maskz_loadu_ps(m, x0 + j);
        const __m512 v1 = _mm512_maskz_loadu_ps(m, x1 + j);
        fma2_classes(K, in, w + j, 0, m, v0, v1, a0, a1);
    }
    if (p0 != NULL) {
        _mm_prefetch((const char *)(p0 + in - 1), SMAX_HINT);
        _mm_prefetch((const char *)(p1 + in - 1), SMAX_HINT);
    }
    *z0 = fold16(a0, K);
    *z1 = fold16(a1, K);
}

/* The codes of a row of `in` features into q: k = rint(x d), written as a
 * byte; returns whether every feature is decode16(k) bit for bit with k in
 * 0..255 (-0.0, NaN, values between codes or out of range: not). */
SMAX_TARGET SMAX_INLINE int code_row(const float *x, uint8_t *q, size_t in, float qd)
{
    const __m512 d = _mm512_set1_ps(qd);
    const __m512 rr = _mm512_set1_ps(1.0f / qd);
    const __m512 zero = _mm512_setzero_ps();
    const __m512 hi = _mm512_set1_ps(255.0f);
    __mmask16 all = 0xFFFF;
    for (size_t j = 0; j < in; j += 16) {
        const __mmask16 m = tail_mask(in - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __m512 kf = _mm512_roundscale_ps(_mm512_mul_ps(v, d),
                                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __mmask16 ok = _mm512_cmp_ps_mask(kf, zero, _CMP_GE_OQ) &
                       _mm512_cmp_ps_mask(kf, hi, _CMP_LE_OQ);
        const __m512i k = _mm512_cvtps_epi32(kf);
        const __m512 back = decode16(k, d, rr);
        ok &= _mm512_cmpeq_epi32_mask(_mm512_castps_si512(back), _mm512_castps_si512(v));
        all &= (__mmask16)(ok | (__mmask16)~m);
        _mm_mask_storeu_epi8(q + j, m, _mm512_cvtepi32_epi8(k));
    }
    return all == 0xFFFF;
}

/* Logits of two compact rows (as logits2, same sums in the same order: the
 * decoded features are the dataset's bits), decoding them into o0, o1 on the
 * way for the weight gradient. */
SMAX_TARGET SMAX_INLINE void logits2_q(const size_t K, size_t in, const float *w,
                                       const uint8_t *q0, const uint8_t *q1, float *o0,
                                       float *o1, float qd, __m512 *z0, __m512 *z1)
{
    const __m512 d = _mm512_set1_ps(qd);
    const __m512 rr = _mm512_set1_ps(1.0f / qd);
    __m512 a0[SMAX_KMAX];
    __m512 a1[SMAX_KMAX];
    zero2(K, a0, a1);
    size_t j = 0;
    for (; j + 16 <= in; j += 16) {
        const __m512 v0 =
            decode16(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q0 + j))), d, rr);
        const __m512 v1 =
            decode16(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q1 + j))), d, rr);
        _mm512_storeu_ps(o0 + j, v0);
        _mm512_storeu_ps(o1 + j, v1);
        fma2_classes(K, in, w + j, 1, (__mmask16)0xFFFF, v0, v1, a0, a1);
    }
    if (j < in) {
        const __mmask16 m = tail_mask(in - j);
        const __m512 v0 = _mm512_maskz_mov_ps(
            m, decode16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, q0 + j)), d, rr));
        const __m512 v1 = _mm512_maskz_mov_ps(
            m, decode16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, q1 + j)), d, rr));
        _mm512_mask_storeu_ps(o0 + j, m, v0);
        _mm512_mask_storeu_ps(o1 + j, m, v1);
        fma2_classes(K, in, w + j, 0, m, v0, v1, a0, a1);
    }
    *z0 = fold16(a0, K);
    *z1 = fold16(a1, K);
}

/* One group's share of the weight gradient: pw[c][j] = sum over its rows r
 * (in order; row r at x + idx[r] in, or x + r in when idx is NULL) of g[r][c] x_r[j], 32 features (K <= 12) or 16 at a time with
 * the K x 2 (or K x 1) sums in registers; pb[c] = sum of g[r][c]. */
SMAX_TARGET SMAX_INLINE void grad_block(const size_t K, size_t in, const float *x,
                                        const size_t *idx, size_t cnt, const float *g,
                                        float *pw, float *pb)
{
    const size_t H = K <= 12 ? 2 : 1; /* 16-feature vectors per row and class */
    for (size_t j = 0; j < in; j += 16 * H) {
        const __mmask16 m0 = tail_mask(in - j);
        const __mmask16 m1 = H == 2 ? tail_mask(in - j > 16 ? in - j - 16 : 0) : 0;
        __m512 acc[SMAX_KMAX][2];
        for (size_t c = 0; c < K; c++) {
            acc[c][0] = _mm512_setzero_ps();
            acc[c][1] = _mm512_setzero_ps();
        }
        for (size_t r = 0; r < cnt; r++) {
            const float *xr = idx != NULL ? x + idx[r] * in + j : x + r * in + j;
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, xr);
            const __m512 v1 = H == 2 ? _mm512_maskz_loadu_ps(m1, xr + 16) : _mm512_setzero_ps();
            const float *gr = g + r * K;
            for (size_t c = 0; c < K; c++) {
                const __m512 gb = _mm512_set1_ps(gr[c]);
                acc[c][0] = _mm512_fmadd_ps(gb, v0, acc[c][0]);
                if (H == 2) {
                    acc[c][1] = _mm512_fmadd_ps(gb, v1, acc[c][1]);
                }
            }
        }
        for (size_t c = 0; c < K; c++) {
            _mm512_mask_storeu_ps(pw + c * in + j, m0, acc[c][0]);
            if (H == 2 && m1 != 0) {
                _mm512_mask_storeu_ps(pw + c * in + j + 16, m1, acc[c][1]);
            }
        }
    }
    const __mmask16 mk = tail_mask(K);
    __m512 sb = _mm512_setzero_ps();
    for (size_t r = 0; r < cnt; r++) {
        sb = _mm512_add_ps(sb, _mm512_maskz_loadu_ps(mk, g + r * K));
    }
    _mm512_mask_storeu_ps(pb, mk, sb);
}

/* exp of 16 lanes (x <= 0 here: logits minus their maximum): Cephes' expf
 * (x = n ln2 + r, |r| <= ln2 / 2, degree-6 polynomial, n applied with
 * scalef), within 2 ulp of expf; NaN stays NaN, very negative x gives 0. */
SMAX_TARGET SMAX_INLINE __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* scalef underflows to 0 below */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* Softmax, loss and loss gradient of one row from its logits z[0..K) (bias
 * not yet added), the K classes in the lanes of one vector: the arithmetic of
 * train_dense.c's aimsi_train_loss_grad (G = (softmax(z) - onehot(y)) / n,
 * from max-shifted exponentials), with exp16 for expf and the loss as
 * log(sum) - (z_y - max), which is -log(p_y) with one log instead of two;
 * when p_y underflows to 0 the loss is inf, as the general step's, so the
 * trainer's divergence check refuses the same steps. */
SMAX_TARGET SMAX_INLINE double row_loss_grad(const aimsi_smax_ctx *s, __m512 z, int32_t y, float *g)
{
    const __mmask16 mk = tail_mask(s->k);
    const __m512 v = _mm512_add_ps(z, _mm512_maskz_loadu_ps(mk, s->b));
    const float mx = _mm512_mask_reduce_max_ps(mk, v);
    const __m512 e = _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(v, _mm512_set1_ps(mx))));
    const float sum = _mm512_reduce_add_ps(e);
    float zv[16];
    _mm512_storeu_ps(zv, v);
    const float zy = zv[y];
    const float inv = s->inv_n / sum;
    __m512 gv = _mm512_mul_ps(e, _mm512_set1_ps(inv));
    gv = _mm512_mask_sub_ps(gv, (__mmask16)(1u << y), gv, _mm512_set1_ps(s->inv_n));
    _mm512_mask_storeu_ps(g, mk, gv);
    float ev[16];
    _mm512_storeu_ps(ev, e);
    if (!(ev[y] > 0.0f)) { /* p_y underflowed (or NaN): inf (NaN), as the general step says */
        return log((double)sum) - log((double)ev[y]);
    }
    return log((double)sum) - ((double)zy - (double)mx);
}

/* group_k from the compact copy: each pair of rows decoded into xb (this
 * group's rows of the batch block) while its logits are computed, and the
 * weight gradient from xb. */
SMAX_TARGET SMAX_INLINE void group_q(const aimsi_smax_ctx *s, const size_t K, const size_t *idx,
                                     size_t cnt, float *xb, float *g, float *pw, float *pb,
                                     double *loss)
{
    const size_t in = s->in;
    const uint8_t *q = s->xq;
    double total = 0.0;
    for (size_t r = 0; r < cnt && r < 2 * SMAX_AHEAD; r++) { /* the first pairs */
        aimsi_smax_prefetch_row(q + idx[r] * in, in);
    }
    for (size_t r = 0; r < cnt; r += 2) {
        const size_t r1 = r + 1 < cnt ? r + 1 : r;
        if (r + 2 * SMAX_AHEAD < cnt) { /* SMAX_AHEAD pairs ahead */
            aimsi_smax_prefetch_row(q + idx[r + 2 * SMAX_AHEAD] * in, in);
            if (r + 2 * SMAX_AHEAD + 1 < cnt) {
                aimsi_smax_prefetch_row(q + idx[r + 2 * SMAX_AHEAD + 1] * in, in);
            }
        }
        __m512 z0;
        __m512 z1;
        logits2_q(K, in, s->w, q + idx[r] * in, q + idx[r1] * in, xb + r * in, xb + r1 * in,
                  s->qd, &z0, &z1);
        total += row_loss_grad(s, z0, s->labels[idx[r]], g + r * K);
        if (r + 1 < cnt) {
            total += row_loss_grad(s, z1, s->labels[idx[r + 1]], g + (r + 1) * K);
        }
    }
    grad_block(K, in, xb, NULL, cnt, g, pw, pb);
    *loss = total;
}

/* Group rows [r0, r1): forward, loss gradient, then the group's gradient. */
SMAX_TARGET SMAX_INLINE void group_k(const aimsi_smax_ctx *s, const size_t K, const size_t *idx,
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
    aimsi_smax_prefetch_first(x, idx, cnt, in);
    for (size_t r = 0; r < cnt; r += 2) {
        const aimsi_smax_pair pr = aimsi_smax_pair_at(x, idx, cnt, in, r);
        __m512 z0;
        __m512 z1;
        logits2(K, in, s->w, pr.x0, pr.x1, pr.p0, pr.p1, &z0, &z1);
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

/* One instance of the group kernel per class count: the compiler keeps the
 * K x 2 sums in registers only when K is a constant. */
#define SMAX_K(K)                                                                                \
    SMAX_TARGET static void group_##K(const aimsi_smax_ctx *s, const size_t *idx, size_t cnt,          \
                                      float *xb, float *g, float *pw, float *pb, double *loss)   \
    {                                                                                            \
        group_k(s, K, idx, cnt, xb, g, pw, pb, loss);                                            \
    }
AIMSI_SMAX_EACH_K(SMAX_K)

/* The table train_smax.c picks on a CPU with AVX-512 F/BW/VL/DQ. */
const aimsi_smax_isa aimsi_smax_avx512 = {
    "avx512", 1,
    AIMSI_SMAX_GROUP_TABLE};
#endif /* AIMSI_HAVE_SMAX */
