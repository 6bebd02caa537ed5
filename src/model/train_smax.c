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
 * and the update. Here a step is two pool runs:
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
 * Determinism. Each logit, each group block and each final sum is computed
 * by one thread in a fixed order; the groups are fixed halves of the batch,
 * so the trained bits do not depend on the thread count (exact resume and
 * determinism hold as in the general path). They are not the bits of the
 * general path (its sums run in another order): aimsi_train_smax_force(0)
 * switches this path off, for the test that compares the two.
 *
 * Divergence. The loss of the batch is known after A; the trainer checks it
 * before B, so a non-finite step is never applied (the contract of
 * aims_trainer_step).
 */
#include <math.h>
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
};

static atomic_int g_smax = 1;

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

/* Every line of a row of `in` floats into L2 (the first line and then one
 * per 16 floats, plus the last: rows need not start on a line). */
static inline void prefetch_row(const float *r, size_t in)
{
    for (size_t j = 0; j < in; j += 16) {
        _mm_prefetch((const char *)(r + j), SMAX_HINT);
    }
    _mm_prefetch((const char *)(r + in - 1), SMAX_HINT);
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

/* One group's share of the weight gradient: pw[c][j] = sum over its rows r
 * (in order) of g[r][c] x_r[j], 32 features (K <= 12) or 16 at a time with
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
            const float *xr = x + idx[r] * in + j;
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

/* Group rows [r0, r1): forward, loss gradient, then the group's gradient. */
SMAX_TARGET SMAX_INLINE void group_k(const smax_ctx *s, const size_t K, const size_t *idx,
                                     size_t cnt, float *g, float *pw, float *pb, double *loss)
{
    const size_t in = s->in;
    const float *x = s->x;
    double total = 0.0;
    for (size_t r = 0; r < cnt && r < 2 * SMAX_AHEAD; r++) { /* the first pairs */
        prefetch_row(x + idx[r] * in, in);
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
                                      float *g, float *pw, float *pb, double *loss)              \
    {                                                                                            \
        group_k(s, K, idx, cnt, g, pw, pb, loss);                                                \
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
                         double *);
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
    k_group[s->k](s, sm->idx + r0, r1 - r0, s->g + r0 * s->k, part + L->w_off, part + L->b_off,
                  loss);
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
        !aimsi_gemm_own_available(AIMSI_GEMM_F32)) {
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
    }
#else
    (void)t;
#endif
}

double aimsi_train_smax_grad(aims_trainer *t, size_t first, size_t n)
{
#ifdef AIMSI_HAVE_SMAX
    struct aimsi_smax *sm = t->smax;
    const aimsi_dense *L = &t->m->layers[0];
    for (size_t r = 0; r < n; r++) {
        sm->idx[r] = t->tr_idx[t->perm[first + r]];
    }
    sm->n = n;
    const smax_ctx s = {.t = t,
                        .x = t->train->x,
                        .labels = t->train->labels,
                        .in = L->in,
                        .k = L->out,
                        .w = t->m->params + L->w_off,
                        .b = t->m->params + L->b_off,
                        .g = t->act[0],
                        .inv_n = 1.0f / (float)n};
    aimsi_pool_run(t->pool, SMAX_GROUPS, group_task, (void *)&s);
    double total = 0.0;
    for (size_t gi = 0; gi < SMAX_GROUPS; gi++) {
        total += sm->loss[gi];
    }
    return total;
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
