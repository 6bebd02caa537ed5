/*
 * train_smax.c -- softmax regression's own training step: one dense layer
 * (y = x W^T + b, 2..16 classes), softmax + cross-entropy, fp32, on a CPU
 * with the own AVX-512 kernels.
 *
 * Why a path of its own. With 10 classes the two GEMMs of a step are thin
 * (128 x 10 x 784 and 10 x 784 x 128): the general step (train_dense.c)
 * copies the 128 random rows of the batch into a block (400 KB), packs W^T
 * into a 32-column panel of which 10 columns are real (the forward then
 * spends 6 of every 16 lanes on padding), packs the batch again into
 * panels for the weight gradient, runs both GEMMs on one core (below the
 * pool's threshold) and makes separate passes for the loss, the bias sums
 * and the update. Here a step is one pool run (aimsi_train_smax_step; the
 * two runs A then B below stay as aimsi_train_smax_grad + _apply, for the
 * test that the one run gives their bits), in two phases with a meeting
 * point between them:
 *
 *   A. every batch group (SMAX_GROUPS fixed halves of the batch, whatever the
 *      thread count) on its own core: the rows are read where they lie in
 *      the dataset (no gather copy; the lines of the rows four pairs ahead
 *      are prefetched into L2 while a pair computes), the logits come from dot products
 *      along the features (lanes = 16 features, two rows share every load of
 *      W, so all 16 lanes do real work), then softmax, loss and the loss
 *      gradient G per row with the classes in the lanes of one vector (the
 *      formula of train_dense.c; exp is a 16-lane polynomial within 2 ulp of
 *      expf, so these probabilities may differ from aimsi_softmax_exp's --
 *      the one predict uses -- in the last bits), and last the group's share
 *      of the weight gradient,
 *      G^T X over its rows, register-blocked (K classes x 32 features in
 *      registers, the group's rows streamed from this core's L2 where the
 *      forward left them), into the group's own gradient block;
 *   B. the optimizer: every parameter's gradient is the sum of the groups'
 *      blocks in group order, then train_opt.c's update (SGD with or without
 *      momentum or Nesterov, Adam, AdamW: the trainer's own arithmetic),
 *      element-wise in chunks over the pool.
 *
 * Between A and B every thread checks the batch loss (see "the one-run
 * step" below); during B it prefetches the next batch's first rows. From
 * the run's second epoch on, A reads a u8 copy of the features instead of
 * the floats when every feature is k / d (Fashion-MNIST's pixels k / 255):
 * a quarter of the bytes from DRAM, the same bits (see "the compact copy").
 *
 * Determinism. Each logit, each group block and each final sum is computed
 * by one thread in a fixed order; the groups are fixed halves of the batch,
 * so the trained bits do not depend on the thread count (exact resume and
 * determinism hold as in the general path). They are not the bits of the
 * general path (its sums run in another order): aimsi_train_smax_force(0)
 * switches this path off, for the test that compares the two.
 *
 * Divergence. The loss of the batch is known after A; every thread checks
 * it before B (the trainer too, after the run), so a non-finite step is never
 * applied (the contract of aims_trainer_step).
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_train.h"

/* SMAX_AHEAD: pairs of rows whose lines are prefetched (into L2: the L2 keeps
 * more misses in flight than L1; random rows of a 188 MB dataset come from
 * DRAM, and a step of softmax regression is bound by them). */
enum { SMAX_GROUPS = 2, SMAX_KMAX = 16, SMAX_APPLY_CHUNK = 4096, SMAX_AHEAD = 4 };
#define SMAX_HINT _MM_HINT_T1

struct aimsi_smax {
    float *part;       /* SMAX_GROUPS x n_params: each group's gradient (W, b) */
    size_t *idx;       /* bmax: dataset rows of this batch */
    size_t n;          /* rows in this batch */
    double loss[SMAX_GROUPS];
    /* the compact copy: x[i] == decode(xq[i]) bit for bit once READY */
    uint8_t *xq;       /* dataset rows x in codes (NULL: none) */
    float qd;          /* decode(k) = k / qd, correctly rounded */
    int qstate;        /* SMAX_Q_* */
    atomic_int qbad;   /* a feature of this epoch's rows has no code */
    /* the one-run step (aimsi_train_smax_step): claims and the meeting point */
    atomic_uint gnext;  /* next batch group to claim */
    atomic_uint gdone;  /* batch groups finished */
    atomic_size_t cnext; /* next update chunk to claim */
    pthread_mutex_t lock; /* with met: a thread that waited too long sleeps */
    pthread_cond_t met;
    int sync_init;
};

/* The compact copy's life: made during the first whole epoch of a run, from
 * the rows the steps read anyway, used from the next epoch on. */
enum { SMAX_Q_PENDING = 0, SMAX_Q_MAKING = 1, SMAX_Q_READY = 2 };

static atomic_int g_smax = 1;
static atomic_int g_smax_one_run = 1;
/* Off by default: measured (loaded, docs/kernels.md "Session 11: P2"), the
 * fresh 47 MB a fit must fault in and the first epoch's coding cost more
 * than the cheaper reads of epochs 2..5 save; it pays when the copy
 * outlives a fit (not done). */
static atomic_int g_smax_compact = 0;

int aimsi_train_smax_compact_force(int on)
{
    return atomic_exchange(&g_smax_compact, on ? 1 : 0);
}

int aimsi_train_smax_compact_on(const aims_trainer *t)
{
    return t->smax != NULL && t->smax->xq != NULL && t->smax->qstate == SMAX_Q_READY;
}

int aimsi_train_smax_one_run_force(int on)
{
    return atomic_exchange(&g_smax_one_run, on ? 1 : 0);
}

int aimsi_train_smax_force(int on)
{
    return atomic_exchange(&g_smax, on ? 1 : 0);
}

int aimsi_train_smax_on(const aims_trainer *t)
{
    return t->smax != NULL;
}

void aimsi_train_smax_end(aims_trainer *t)
{
    if (t->smax != NULL) {
        if (t->smax->sync_init) {
            pthread_cond_destroy(&t->smax->met);
            pthread_mutex_destroy(&t->smax->lock);
        }
        aimsi_free(t->smax->xq);
        aimsi_free(t->smax->part);
        aimsi_free(t->smax->idx);
        aimsi_free(t->smax);
        t->smax = NULL;
    }
}

#if defined(__GNUC__) && defined(__x86_64__) && (__GNUC__ >= 10 || defined(__clang__))
#define AIMSI_HAVE_SMAX 1
#include <immintrin.h>

#define SMAX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define SMAX_INLINE static inline __attribute__((always_inline))

typedef struct smax_ctx {
    const aims_trainer *t;
    const float *x; /* dataset features */
    const uint8_t *xq; /* or their compact copy (NULL: none) */
    float *xb;         /* with xq: the batch's rows decoded, bmax x in */
    float qd;
    uint8_t *qmake;    /* the compact copy to write this batch's rows into (NULL: none) */
    atomic_int *qbad;
    const int32_t *labels;
    size_t in, k;
    const float *w, *b;
    float *g; /* n x k: the loss gradient per row */
    float inv_n;
} smax_ctx;

static inline __mmask16 tail_mask(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* Every line of a row of `bytes` bytes into L2 (the first line and then one
 * per 64 bytes, plus the last: rows need not start on a line). */
static inline void prefetch_row(const void *r, size_t bytes)
{
    const char *c = r;
    for (size_t j = 0; j < bytes; j += 64) {
        _mm_prefetch(c + j, SMAX_HINT);
    }
    _mm_prefetch(c + bytes - 1, SMAX_HINT);
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
    for (size_t c = 0; c < K; c++) {
        a0[c] = _mm512_setzero_ps();
        a1[c] = _mm512_setzero_ps();
    }
    size_t j = 0;
    for (; j + 16 <= in; j += 16) {
        if (p0 != NULL) {
            _mm_prefetch((const char *)(p0 + j), SMAX_HINT);
            _mm_prefetch((const char *)(p1 + j), SMAX_HINT);
        }
        const __m512 v0 = _mm512_loadu_ps(x0 + j);
        const __m512 v1 = _mm512_loadu_ps(x1 + j);
        for (size_t c = 0; c < K; c++) {
            const __m512 wv = _mm512_loadu_ps(w + c * in + j);
            a0[c] = _mm512_fmadd_ps(v0, wv, a0[c]);
            a1[c] = _mm512_fmadd_ps(v1, wv, a1[c]);
        }
    }
    if (j < in) {
        const __mmask16 m = tail_mask(in - j);
        const __m512 v0 = _mm512_maskz_loadu_ps(m, x0 + j);
        const __m512 v1 = _mm512_maskz_loadu_ps(m, x1 + j);
        for (size_t c = 0; c < K; c++) {
            const __m512 wv = _mm512_maskz_loadu_ps(m, w + c * in + j);
            a0[c] = _mm512_fmadd_ps(v0, wv, a0[c]);
            a1[c] = _mm512_fmadd_ps(v1, wv, a1[c]);
        }
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
    for (size_t c = 0; c < K; c++) {
        a0[c] = _mm512_setzero_ps();
        a1[c] = _mm512_setzero_ps();
    }
    size_t j = 0;
    for (; j + 16 <= in; j += 16) {
        const __m512 v0 =
            decode16(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q0 + j))), d, rr);
        const __m512 v1 =
            decode16(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q1 + j))), d, rr);
        _mm512_storeu_ps(o0 + j, v0);
        _mm512_storeu_ps(o1 + j, v1);
        for (size_t c = 0; c < K; c++) {
            const __m512 wv = _mm512_loadu_ps(w + c * in + j);
            a0[c] = _mm512_fmadd_ps(v0, wv, a0[c]);
            a1[c] = _mm512_fmadd_ps(v1, wv, a1[c]);
        }
    }
    if (j < in) {
        const __mmask16 m = tail_mask(in - j);
        const __m512 v0 = _mm512_maskz_mov_ps(
            m, decode16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, q0 + j)), d, rr));
        const __m512 v1 = _mm512_maskz_mov_ps(
            m, decode16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, q1 + j)), d, rr));
        _mm512_mask_storeu_ps(o0 + j, m, v0);
        _mm512_mask_storeu_ps(o1 + j, m, v1);
        for (size_t c = 0; c < K; c++) {
            const __m512 wv = _mm512_maskz_loadu_ps(m, w + c * in + j);
            a0[c] = _mm512_fmadd_ps(v0, wv, a0[c]);
            a1[c] = _mm512_fmadd_ps(v1, wv, a1[c]);
        }
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
SMAX_TARGET SMAX_INLINE double row_loss_grad(const smax_ctx *s, __m512 z, int32_t y, float *g)
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
SMAX_TARGET SMAX_INLINE void group_q(const smax_ctx *s, const size_t K, const size_t *idx,
                                     size_t cnt, float *xb, float *g, float *pw, float *pb,
                                     double *loss)
{
    const size_t in = s->in;
    const uint8_t *q = s->xq;
    double total = 0.0;
    for (size_t r = 0; r < cnt && r < 2 * SMAX_AHEAD; r++) { /* the first pairs */
        prefetch_row(q + idx[r] * in, in);
    }
    for (size_t r = 0; r < cnt; r += 2) {
        const size_t r1 = r + 1 < cnt ? r + 1 : r;
        if (r + 2 * SMAX_AHEAD < cnt) { /* SMAX_AHEAD pairs ahead */
            prefetch_row(q + idx[r + 2 * SMAX_AHEAD] * in, in);
            if (r + 2 * SMAX_AHEAD + 1 < cnt) {
                prefetch_row(q + idx[r + 2 * SMAX_AHEAD + 1] * in, in);
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
SMAX_TARGET SMAX_INLINE void group_k(const smax_ctx *s, const size_t K, const size_t *idx,
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
    for (size_t r = 0; r < cnt && r < 2 * SMAX_AHEAD; r++) { /* the first pairs */
        prefetch_row(x + idx[r] * in, in * sizeof *x);
    }
    for (size_t r = 0; r < cnt; r += 2) {
        const float *x0 = x + idx[r] * in;
        const float *x1 = r + 1 < cnt ? x + idx[r + 1] * in : x0;
        const float *p0 = NULL;
        const float *p1 = NULL;
        if (r + 2 * SMAX_AHEAD < cnt) { /* SMAX_AHEAD pairs ahead */
            p0 = x + idx[r + 2 * SMAX_AHEAD] * in;
            p1 = r + 2 * SMAX_AHEAD + 1 < cnt ? x + idx[r + 2 * SMAX_AHEAD + 1] * in : p0;
        }
        __m512 z0;
        __m512 z1;
        logits2(K, in, s->w, x0, x1, p0, p1, &z0, &z1);
        if (s->qmake != NULL) { /* the compact copy, from the rows now in L1 */
            int ok = code_row(x0, s->qmake + idx[r] * in, in, s->qd);
            if (r + 1 < cnt) {
                ok &= code_row(x1, s->qmake + idx[r + 1] * in, in, s->qd);
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
    SMAX_TARGET static void group_##K(const smax_ctx *s, const size_t *idx, size_t cnt,          \
                                      float *xb, float *g, float *pw, float *pb, double *loss)   \
    {                                                                                            \
        group_k(s, K, idx, cnt, xb, g, pw, pb, loss);                                            \
    }
SMAX_K(2)
SMAX_K(3)
SMAX_K(4)
SMAX_K(5)
SMAX_K(6)
SMAX_K(7)
SMAX_K(8)
SMAX_K(9)
SMAX_K(10)
SMAX_K(11)
SMAX_K(12)
SMAX_K(13)
SMAX_K(14)
SMAX_K(15)
SMAX_K(16)

typedef void (*group_fn)(const smax_ctx *, const size_t *, size_t, float *, float *, float *,
                         float *, double *);
static const group_fn k_group[SMAX_KMAX + 1] = {
    NULL,     NULL,     group_2,  group_3,  group_4,  group_5,  group_6,  group_7, group_8,
    group_9,  group_10, group_11, group_12, group_13, group_14, group_15, group_16};

static void group_task(void *ctx, size_t gi)
{
    const smax_ctx *s = ctx;
    const aims_trainer *t = s->t;
    const struct aimsi_smax *sm = t->smax;
    const aimsi_dense *L = &t->m->layers[0];
    const size_t r0 = gi * sm->n / SMAX_GROUPS;
    const size_t r1 = (gi + 1) * sm->n / SMAX_GROUPS;
    float *part = sm->part + gi * t->m->n_params;
    double *loss = &t->smax->loss[gi];
    if (r0 == r1) { /* an empty group adds zeros */
        memset(part, 0, t->m->n_params * sizeof *part);
        *loss = 0.0;
        return;
    }
    k_group[s->k](s, sm->idx + r0, r1 - r0, s->xb + r0 * s->in, s->g + r0 * s->k,
                  part + L->w_off, part + L->b_off, loss);
}

/* ---- the compact copy (made by group_k, read by group_q) ----
 *
 * A step reads 128 random rows of 784 floats (400 KB) from DRAM; Fashion-
 * MNIST's features are pixels k / 255. When every feature of the dataset is
 * k / d for a u8 k and one d (d found from the smallest positive value of
 * the first rows), a u8 copy holds the same information in a quarter of the
 * bytes, and decode16 gives back every feature's exact bits (checked for
 * each feature while the copy is made: a single mismatch, -0.0, NaN or a
 * value out of range, and there is no copy). A separate pass would read the
 * whole dataset once more (188 MB: a sixth of a 5-epoch fit); instead the
 * steps of the run's first whole epoch, which read every training row once,
 * write each row's codes right after its logits (the row is in L1 then),
 * and the next epochs read the codes. */

enum { SMAX_PROBE_ROWS = 64 };

static void compact_begin(aims_trainer *t, struct aimsi_smax *s)
{
    const aims_dataset *ds = t->train;
    const size_t probe = (ds->rows < SMAX_PROBE_ROWS ? ds->rows : SMAX_PROBE_ROWS) * ds->cols;
    float v1 = INFINITY;
    for (size_t e = 0; e < probe; e++) {
        if (ds->x[e] > 0.0f && ds->x[e] < v1) {
            v1 = ds->x[e];
        }
    }
    const float qd = rintf(1.0f / v1);
    if (!(qd >= 1.0f && qd <= 65536.0f)) {
        return; /* no positive value (or a tiny one): not k / d */
    }
    s->xq = aimsi_malloc(ds->rows * ds->cols);
    if (s->xq == NULL) {
        return; /* an optimisation only */
    }
    /* 2 MB pages: a fault per 4 KB page costs more than its rows here (a VM),
     * and the steps' random rows then miss the TLB less */
    aimsi_hint_hugepages(s->xq, ds->rows * ds->cols);
    s->qd = qd;
    s->qstate = SMAX_Q_PENDING;
    atomic_init(&s->qbad, 0);
}

/* At the start of every epoch (first == 0): a pending copy is made during
 * this epoch (every training row is read once per epoch); one made during
 * the last epoch is used from now on, or freed if a feature had no code. */
static void compact_epoch(struct aimsi_smax *sm, size_t first)
{
    if (sm->xq == NULL || first != 0) {
        return;
    }
    if (sm->qstate == SMAX_Q_PENDING) {
        sm->qstate = SMAX_Q_MAKING;
    } else if (sm->qstate == SMAX_Q_MAKING) {
        if (atomic_load(&sm->qbad)) {
            aimsi_free(sm->xq);
            sm->xq = NULL;
        } else {
            sm->qstate = SMAX_Q_READY;
        }
    }
}
#endif /* AIMSI_HAVE_SMAX */

void aimsi_train_smax_begin(aims_trainer *t)
{
#ifdef AIMSI_HAVE_SMAX
    const aims_model *m = t->m;
    const aims_dataset *ds = t->train;
    if (!atomic_load(&g_smax) || t->gws == NULL || t->gprec != AIMSI_GEMM_F32 ||
        m->kind == AIMS_MODEL_KIND_TEXT || m->n_layers != 1 || m->loss != 1 ||
        aimsi_train_sharded(t) || ds == NULL || ds->x == NULL || ds->labels == NULL ||
        aimsi_gemm_isa() < AIMSI_GEMM_ISA_AVX512 || !__builtin_cpu_supports("avx512dq")) {
        return;
    }
    const aimsi_dense *L = &m->layers[0];
    if (L->out < 2 || L->out > SMAX_KMAX || L->act != AIMS_ACT_NONE || L->in != ds->cols ||
        L->in == 0) {
        return;
    }
    struct aimsi_smax *s = aimsi_calloc(1, sizeof *s);
    if (s == NULL) {
        return; /* an optimisation only: the general step trains the same model */
    }
    s->part = aimsi_malloc(SMAX_GROUPS * m->n_params * sizeof *s->part);
    s->idx = aimsi_malloc(t->bmax * sizeof *s->idx);
    t->smax = s;
    if (s->part == NULL || s->idx == NULL) {
        aimsi_train_smax_end(t);
        return;
    }
    atomic_init(&s->gnext, 0);
    atomic_init(&s->gdone, 0);
    atomic_init(&s->cnext, 0);
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        aimsi_train_smax_end(t);
        return;
    }
    if (pthread_cond_init(&s->met, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        aimsi_train_smax_end(t);
        return;
    }
    s->sync_init = 1;
    if (atomic_load(&g_smax_compact)) {
        compact_begin(t, s);
    }
#else
    (void)t;
#endif
}

#ifdef AIMSI_HAVE_SMAX
/* The batch's summed loss: the groups' sums in group order. */
static double batch_loss(const struct aimsi_smax *sm)
{
    double total = 0.0;
    for (size_t gi = 0; gi < SMAX_GROUPS; gi++) {
        total += sm->loss[gi];
    }
    return total;
}

/* The batch rows [first, first + n) of this epoch's order, and the context
 * of the group kernels for them. */
static smax_ctx batch_ctx(aims_trainer *t, size_t first, size_t n)
{
    struct aimsi_smax *sm = t->smax;
    const aimsi_dense *L = &t->m->layers[0];
    compact_epoch(sm, first);
    for (size_t r = 0; r < n; r++) {
        sm->idx[r] = t->tr_idx[t->perm[first + r]];
    }
    sm->n = n;
    const smax_ctx s = {.t = t,
                        .x = t->train->x,
                        .xq = sm->qstate == SMAX_Q_READY ? sm->xq : NULL,
                        .xb = t->xb,
                        .qd = sm->qd,
                        .qmake = sm->qstate == SMAX_Q_MAKING ? sm->xq : NULL,
                        .qbad = &sm->qbad,
                        .labels = t->train->labels,
                        .in = L->in,
                        .k = L->out,
                        .w = t->m->params + L->w_off,
                        .b = t->m->params + L->b_off,
                        .g = t->act[0],
                        .inv_n = 1.0f / (float)n};
    return s;
}
#endif

double aimsi_train_smax_grad(aims_trainer *t, size_t first, size_t n)
{
#ifdef AIMSI_HAVE_SMAX
    struct aimsi_smax *sm = t->smax;
    const smax_ctx s = batch_ctx(t, first, n);
    aimsi_pool_run(t->pool, SMAX_GROUPS, group_task, (void *)&s);
    return batch_loss(sm);
#else
    (void)t;
    (void)first;
    (void)n;
    return NAN;
#endif
}

typedef struct apply_job {
    const aims_trainer *t;
    const opt_step *o;
} apply_job;

/* Parameters [i * SMAX_APPLY_CHUNK, ...): gradient = the groups' blocks
 * summed in group order (into v1 for plain SGD, whose v1 holds mu v, else
 * into grad), then train_opt.c's update of the same range. */
static void apply_task(void *ctx, size_t i)
{
    const apply_job *a = ctx;
    const aims_trainer *t = a->t;
    const size_t np = t->m->n_params;
    const size_t off = i * SMAX_APPLY_CHUNK;
    const size_t cnt = np - off < SMAX_APPLY_CHUNK ? np - off : SMAX_APPLY_CHUNK;
    const float *p = t->smax->part + off;
    const int fast = t->h.opt == OPT_SGD && !t->h.nesterov;
    float *dst = fast ? t->v1 + off : t->grad + off;
    for (size_t e = 0; e < cnt; e++) {
        float gsum = p[e];
        for (size_t gi = 1; gi < SMAX_GROUPS; gi++) {
            gsum += p[gi * np + e];
        }
        dst[e] = fast ? dst[e] + gsum : gsum;
    }
    aimsi_train_update_range(t, a->o, off, cnt);
}

void aimsi_train_smax_apply(aims_trainer *t, const opt_step *o)
{
    apply_job a = {t, o};
    const size_t np = t->m->n_params;
    aimsi_pool_run(t->pool, (np + SMAX_APPLY_CHUNK - 1) / SMAX_APPLY_CHUNK, apply_task, &a);
}

/* ---- the one-run step ----
 *
 * aimsi_train_smax_grad + the trainer's loss check + aimsi_train_smax_apply
 * are two pool runs per step (publish, wake, drain, join, twice: at ~60 us a
 * step, the hand-offs were a good part of it). Here one run does it all:
 * every thread claims batch groups until none is left, then waits until all
 * groups are done (a bounded spin that yields, then a condition variable:
 * never a pure spin on a shared machine), sums the groups' losses in group
 * order -- every thread the same sum, so all agree whether the step is
 * finite, and a non-finite step writes nothing -- and then claims update
 * chunks. The arithmetic is apply_task's and group_task's, in the same
 * order, so the bits are the two-run path's (aimsi_train_smax_one_run_force
 * keeps that path, for the test that compares them).
 *
 * Across the step boundary: while it updates, the thread that computed
 * group g prefetches the first rows of the next batch's group g (the
 * epoch's order is known), so their DRAM latency overlaps the update and the
 * next hand-off instead of starting the next step. */

enum { SMAX_SPINS = 2048 };

#ifdef AIMSI_HAVE_SMAX
typedef struct step_job {
    smax_ctx s;
    apply_job a;
    size_t chunks;
    size_t nnext[SMAX_GROUPS]; /* rows of the next batch's group g to prefetch */
    const void *next[SMAX_GROUPS][2 * SMAX_AHEAD]; /* rows of xq or x */
    size_t row_bytes;
} step_job;

static void wait_groups(struct aimsi_smax *sm)
{
    for (unsigned i = 1; i <= SMAX_SPINS; i++) {
        if (atomic_load_explicit(&sm->gdone, memory_order_acquire) == SMAX_GROUPS) {
            return;
        }
        if ((i & 15u) == 0) {
            sched_yield(); /* an oversubscribed machine: let the group's thread run */
        }
        _mm_pause();
    }
    pthread_mutex_lock(&sm->lock);
    while (atomic_load(&sm->gdone) != SMAX_GROUPS) {
        pthread_cond_wait(&sm->met, &sm->lock);
    }
    pthread_mutex_unlock(&sm->lock);
}

static void step_task(void *ctx, size_t ti)
{
    (void)ti;
    step_job *j = ctx;
    struct aimsi_smax *sm = j->s.t->smax;
    unsigned mine = 0; /* bit g: this thread computed group g */
    for (;;) {
        const unsigned g = atomic_fetch_add(&sm->gnext, 1);
        if (g >= SMAX_GROUPS) {
            break;
        }
        group_task(&j->s, g);
        mine |= 1u << g;
        pthread_mutex_lock(&sm->lock);
        atomic_fetch_add_explicit(&sm->gdone, 1, memory_order_release);
        pthread_cond_broadcast(&sm->met);
        pthread_mutex_unlock(&sm->lock);
    }
    wait_groups(sm);
    const double total = batch_loss(sm);
    if (!isfinite(total)) {
        return; /* every thread sees the same sum: nobody writes */
    }
    for (unsigned g = 0; g < SMAX_GROUPS; g++) {
        if (mine & (1u << g)) {
            for (size_t r = 0; r < j->nnext[g]; r++) {
                prefetch_row(j->next[g][r], j->row_bytes);
            }
        }
    }
    for (;;) {
        const size_t c = atomic_fetch_add(&sm->cnext, 1);
        if (c >= j->chunks) {
            break;
        }
        apply_task(&j->a, c);
    }
}
#endif /* AIMSI_HAVE_SMAX */

double aimsi_train_smax_step(aims_trainer *t, size_t first, size_t n, const opt_step *o)
{
#ifdef AIMSI_HAVE_SMAX
    if (!atomic_load(&g_smax_one_run)) {
        const double loss = aimsi_train_smax_grad(t, first, n);
        if (isfinite(loss)) {
            aimsi_train_smax_apply(t, o);
        }
        return loss;
    }
    struct aimsi_smax *sm = t->smax;
    const size_t in = t->m->layers[0].in;
    const size_t np = t->m->n_params;
    step_job j = {.s = batch_ctx(t, first, n),
                  .a = {t, o},
                  .chunks = (np + SMAX_APPLY_CHUNK - 1) / SMAX_APPLY_CHUNK};
    j.row_bytes = j.s.xq != NULL ? in : in * sizeof(float); /* after batch_ctx's epoch turn */
    const size_t nf = first + n; /* the next batch, when it is in this epoch's order */
    const size_t n2 = nf < t->n_tr ? (t->n_tr - nf < t->bmax ? t->n_tr - nf : t->bmax) : 0;
    for (size_t g = 0; g < SMAX_GROUPS; g++) {
        const size_t r0 = g * n2 / SMAX_GROUPS;
        const size_t r1 = (g + 1) * n2 / SMAX_GROUPS;
        j.nnext[g] = r1 - r0 < 2 * SMAX_AHEAD ? r1 - r0 : 2 * SMAX_AHEAD;
        for (size_t r = 0; r < j.nnext[g]; r++) {
            const size_t row = t->tr_idx[t->perm[nf + r0 + r]];
            j.next[g][r] = j.s.xq != NULL ? (const void *)(j.s.xq + row * in)
                                          : (const void *)(j.s.x + row * in);
        }
    }
    atomic_store(&sm->gnext, 0);
    atomic_store(&sm->gdone, 0);
    atomic_store(&sm->cnext, 0);
    aimsi_pool_run(t->pool, aimsi_pool_threads(t->pool), step_task, &j);
    return batch_loss(sm);
#else
    (void)t;
    (void)first;
    (void)n;
    (void)o;
    return NAN;
#endif
}
