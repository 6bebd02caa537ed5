/*
 * steps_num.c -- the numeric pipeline steps: fit and transform.
 *
 * How. Rows stream through the steps in small blocks (about 64 KiB of floats)
 * so that a block written by step k is still in cache when step k+1 reads it:
 * a chain like SCALE -> STANDARDIZE costs one pass over memory, not two. Steps
 * that keep the width work in place on the caller's output block; ONEHOT, which
 * widens rows, ping-pongs between two scratch blocks allocated up front (so a
 * failed allocation happens before anything is written).
 *
 * Fit learns step k from the output of steps 0..k-1 by streaming the input
 * through those steps block by block -- never materialising the intermediate
 * matrix. Rows are cut into chunks whose number depends only on the data size,
 * each chunk accumulates its own partial sums (in double), and the partials are
 * combined in chunk order: the fitted state is bit-identical for any thread
 * count. STANDARDIZE keeps sums of (x - shift) and (x - shift)^2 with the shift
 * taken from the first row, which avoids the cancellation of plain sum/sumsq.
 * Its fast path does no per-element finiteness test: a NaN or inf makes the
 * column's sum non-finite, and only then is the chunk rescanned to name the
 * row and column.
 *
 * Transform validates first (when some step refuses non-finite input) and then
 * writes, so a refused batch leaves the caller's buffer untouched. The
 * validation costs one read of the input, vectorised (x * 0 is 0 unless x is
 * NaN or inf); fit_transform skips it when fit already checked every step that
 * refuses non-finite values.
 */
#if defined(__GNUC__) && !defined(__clang__)
/* gcc 12 -O2 only vectorises loops whose trip count is known; these kernels are
 * the library's hottest loops and are memory-bound once vectorised. */
#pragma GCC optimize("O3")
#endif

#include <float.h>
#include <math.h>
#include <string.h>

#include "aimsi_steps.h"

#define BLOCK_FLOATS 16384u
#define MAX_CHUNKS 64u

/* ---- small helpers ------------------------------------------------------------- */

static int strict(const aimsi_step *s)
{
    return aimsi_sp(s, AIMS_STEP_NONFINITE) == 0.0;
}

static int has_onehot(const aims_pipeline *p)
{
    for (size_t k = 0; k < p->nsteps; k++) {
        if (p->steps[k].kind == AIMS_STEP_KIND_ONEHOT) {
            return 1;
        }
    }
    return 0;
}

/* Widest row any stage of steps [0, k1) reads or writes. */
static size_t max_width(const aims_pipeline *p, size_t k1)
{
    size_t w = p->in_w;
    for (size_t k = 0; k < k1; k++) {
        w = p->steps[k].out_w > w ? p->steps[k].out_w : w;
    }
    return w;
}

static size_t block_rows(size_t width)
{
    const size_t b = BLOCK_FLOATS / (width == 0 ? 1 : width);
    return b == 0 ? 1 : b;
}

static const char *kind_name(aims_step_kind k)
{
    switch (k) {
    case AIMS_STEP_KIND_STANDARDIZE: return "standardize";
    case AIMS_STEP_KIND_MINMAX: return "minmax";
    case AIMS_STEP_KIND_IMPUTE: return "impute";
    case AIMS_STEP_KIND_CLIP: return "clip";
    case AIMS_STEP_KIND_ONEHOT: return "onehot";
    case AIMS_STEP_KIND_SCALE: return "scale";
    default: return "?";
    }
}

/* ---- per-step transform kernels ------------------------------------------------ */

/* Copy the columns a width-preserving step does not touch (src != dst only). */
static void copy_outside(const aimsi_step *s, const float *src, float *dst)
{
    if (src == dst) {
        return;
    }
    memcpy(dst, src, s->c0 * sizeof(float));
    memcpy(dst + s->c1, src + s->c1, (s->in_w - s->c1) * sizeof(float));
}

/* The width-preserving steps share one row driver: copy the untouched columns,
 * then hand the selected span [c0, c1) of each row to the step's span function.
 * The indirect call is once per row (hundreds of columns), so it costs nothing
 * next to the loop it calls, which the compiler vectorises on its own. */
typedef void (*span_fn)(const aimsi_step *s, const float *in, float *o, size_t m);

static void for_each_row(const aimsi_step *s, const float *src, float *dst, size_t n,
                         span_fn fn)
{
    const size_t m = s->c1 - s->c0;
    for (size_t r = 0; r < n; r++) {
        const float *in = src + r * s->in_w;
        float *o = dst + r * s->out_w;
        copy_outside(s, in, o);
        fn(s, in + s->c0, o + s->c0, m);
    }
}

static void span_standardize(const aimsi_step *s, const float *in, float *o, size_t m)
{
    const double *mean = s->a;
    const double *inv = s->b;
    for (size_t j = 0; j < m; j++) {
        o[j] = (float)(((double)in[j] - mean[j]) * inv[j]);
    }
}

static void span_minmax(const aimsi_step *s, const float *in, float *o, size_t m)
{
    const double lo = aimsi_sp(s, AIMS_STEP_LOW);
    for (size_t j = 0; j < m; j++) {
        o[j] = (float)(((double)in[j] - s->a[j]) * s->b[j] + lo);
    }
}

static void span_impute(const aimsi_step *s, const float *in, float *o, size_t m)
{
    for (size_t j = 0; j < m; j++) {
        const float v = in[j];
        o[j] = isnan(v) ? (float)s->a[j] : v;
    }
}

static void span_clip(const aimsi_step *s, const float *in, float *o, size_t m)
{
    const float lo = (float)aimsi_sp(s, AIMS_STEP_LOW);
    const float hi = (float)aimsi_sp(s, AIMS_STEP_HIGH);
    for (size_t j = 0; j < m; j++) {
        const float v = in[j];
        /* comparisons with NaN are false, so NaN passes through */
        o[j] = v < lo ? lo : (v > hi ? hi : v);
    }
}

static void span_scale(const aimsi_step *s, const float *in, float *o, size_t m)
{
    const double f = aimsi_sp(s, AIMS_STEP_FACTOR);
    for (size_t j = 0; j < m; j++) {
        o[j] = (float)((double)in[j] * f);
    }
}

/* Category index of v, or -1 when v is not an integer in [0, k). */
static long category(float v, uint32_t k)
{
    if (!(v >= 0.0f) || v >= (float)k || v != floorf(v)) {
        return -1;
    }
    return (long)v;
}

static void k_onehot(const aimsi_step *s, const float *src, float *dst, size_t n)
{
    const size_t m = s->c1 - s->c0;
    const size_t tail = s->in_w - s->c1;
    for (size_t r = 0; r < n; r++) {
        const float *in = src + r * s->in_w;
        float *o = dst + r * s->out_w;
        memcpy(o, in, s->c0 * sizeof(float));
        o += s->c0;
        for (size_t j = 0; j < m; j++) {
            const uint32_t k = s->cat[j];
            const long c = category(in[s->c0 + j], k);
            memset(o, 0, k * sizeof(float));
            if (c >= 0) {
                o[c] = 1.0f;
            }
            o += k;
        }
        memcpy(o, in + s->c1, tail * sizeof(float));
    }
}

static void apply_block(const aimsi_step *s, const float *src, float *dst, size_t n)
{
    switch (s->kind) {
    case AIMS_STEP_KIND_STANDARDIZE: for_each_row(s, src, dst, n, span_standardize); break;
    case AIMS_STEP_KIND_MINMAX: for_each_row(s, src, dst, n, span_minmax); break;
    case AIMS_STEP_KIND_IMPUTE: for_each_row(s, src, dst, n, span_impute); break;
    case AIMS_STEP_KIND_CLIP: for_each_row(s, src, dst, n, span_clip); break;
    case AIMS_STEP_KIND_ONEHOT: k_onehot(s, src, dst, n); break;
    case AIMS_STEP_KIND_SCALE: for_each_row(s, src, dst, n, span_scale); break;
    default: break;
    }
}

/* Push n rows through steps [0, k1). With `final` set the last step writes
 * there (and, without ONEHOT, every step works in place in it); otherwise the
 * result lands in bufa or bufb. Returns where the result is. */
static const float *run_steps(const aims_pipeline *p, size_t k1, const float *src, size_t n,
                              float *bufa, float *bufb, float *final, int widen)
{
    for (size_t k = 0; k < k1; k++) {
        const aimsi_step *s = &p->steps[k];
        const int same = s->in_w == s->out_w;
        float *dst;
        if (final != NULL && (!widen || k + 1 == k1)) {
            dst = final;
        } else if (src == bufa) {
            dst = same ? bufa : bufb;
        } else if (src == bufb) {
            dst = same ? bufb : bufa;
        } else {
            dst = bufa;
        }
        apply_block(s, src, dst, n);
        src = dst;
    }
    return src;
}

/* ---- validation: which step would refuse a non-finite input value ------------- */

/* Follow value v of input column j through the steps; returns the index of the
 * step that refuses it, or -1. Only called for non-finite inputs (rare). */
static long refusing_step(const aims_pipeline *p, size_t j, float v)
{
    for (size_t k = 0; k < p->nsteps; k++) {
        const aimsi_step *s = &p->steps[k];
        if (j < s->c0) {
            continue;
        }
        if (j >= s->c1) {
            j = j - s->in_w + s->out_w;
            continue;
        }
        if (s->kind == AIMS_STEP_KIND_IMPUTE) {
            v = isnan(v) ? (float)s->a[j - s->c0] : v;
            continue;
        }
        if (!isfinite(v) && strict(s)) {
            return (long)k;
        }
        if (s->kind == AIMS_STEP_KIND_ONEHOT) {
            return -1; /* indicators are always finite */
        }
        if (s->kind == AIMS_STEP_KIND_STANDARDIZE) {
            v = (float)(((double)v - s->a[j - s->c0]) * s->b[j - s->c0]);
        } else if (s->kind == AIMS_STEP_KIND_MINMAX) {
            v = (float)(((double)v - s->a[j - s->c0]) * s->b[j - s->c0] +
                        aimsi_sp(s, AIMS_STEP_LOW));
        } else if (s->kind == AIMS_STEP_KIND_CLIP) {
            const float lo = (float)aimsi_sp(s, AIMS_STEP_LOW);
            const float hi = (float)aimsi_sp(s, AIMS_STEP_HIGH);
            v = v < lo ? lo : (v > hi ? hi : v);
        } else if (s->kind == AIMS_STEP_KIND_SCALE) {
            v = (float)((double)v * aimsi_sp(s, AIMS_STEP_FACTOR));
        }
    }
    return -1;
}

/* Does any step refuse non-finite input? */
static int needs_check(const aims_pipeline *p)
{
    for (size_t k = 0; k < p->nsteps; k++) {
        if (p->steps[k].kind != AIMS_STEP_KIND_IMPUTE && strict(&p->steps[k])) {
            return 1;
        }
    }
    return 0;
}

/* ---- transform ------------------------------------------------------------------- */

typedef struct chunk_res {
    aims_status rc;
    size_t row, col;
    long step;
} chunk_res;

typedef struct xf_job {
    const aims_pipeline *p;
    const float *x;
    float *out;
    size_t rows, nch, per, maxw, brows;
    float *scratch; /* nch * 2 * brows * maxw floats when ONEHOT is present */
    int widen;
    chunk_res res[MAX_CHUNKS];
} xf_job;

static void check_task(void *ctx, size_t i)
{
    xf_job *job = ctx;
    const size_t w = job->p->in_w;
    const size_t r0 = i * job->per;
    const size_t r1 = r0 + job->per < job->rows ? r0 + job->per : job->rows;
    for (size_t r = r0; r < r1; r += 64) {
        const size_t n = r1 - r < 64 ? r1 - r : 64;
        const float *b = job->x + r * w;
        /* Any Inf or NaN in the block? Only an all-ones exponent carries
         * into bit 31 when 1 is added at the exponent's lowest bit; an OR
         * of those sums is three SSE2 instructions per four floats. The
         * float sum of b[e] * 0 it replaces was one serial chain of
         * dependent adds (~9 % of a 64-row infer call on the worker, P9). */
        uint32_t acc = 0;
        for (size_t e = 0; e < n * w; e++) {
            uint32_t u;
            memcpy(&u, &b[e], sizeof u);
            acc |= (u & 0x7f800000u) + 0x00800000u;
        }
        if ((acc & 0x80000000u) == 0) {
            continue;
        }
        for (size_t e = 0; e < n * w; e++) {
            if (!isfinite(b[e])) {
                const long k = refusing_step(job->p, e % w, b[e]);
                if (k >= 0) {
                    job->res[i] = (chunk_res){AIMS_E_INVAL, r + e / w, e % w, k};
                    return;
                }
            }
        }
    }
}

static void xf_task(void *ctx, size_t i)
{
    xf_job *job = ctx;
    const aims_pipeline *p = job->p;
    const size_t r0 = i * job->per;
    const size_t r1 = r0 + job->per < job->rows ? r0 + job->per : job->rows;
    float *bufa = NULL;
    float *bufb = NULL;
    if (job->scratch != NULL) {
        bufa = job->scratch + i * 2 * job->brows * job->maxw;
        bufb = bufa + job->brows * job->maxw;
    }
    for (size_t r = r0; r < r1; r += job->brows) {
        const size_t n = r1 - r < job->brows ? r1 - r : job->brows;
        float *o = job->out + r * p->out_w;
        const float *res = run_steps(p, p->nsteps, job->x + r * p->in_w, n, bufa, bufb, o,
                                     job->widen);
        if (res != o) {
            memcpy(o, res, n * p->out_w * sizeof(float));
        }
    }
}

aims_status aimsi_num_transform(const aims_pipeline *p, const float *x, size_t rows, float *out,
                                int check)
{
    const unsigned t = aimsi_pipe_nthreads(p);
    xf_job job = {.p = p, .x = x, .out = out, .rows = rows, .widen = has_onehot(p)};
    job.nch = t == 1 || rows < 512 ? 1 : (rows / 256 < t * 4u ? rows / 256 : t * 4u);
    job.nch = job.nch > MAX_CHUNKS ? MAX_CHUNKS : job.nch;
    job.per = (rows + job.nch - 1) / job.nch;
    job.maxw = max_width(p, p->nsteps);
    job.brows = block_rows(job.maxw);
    if (check && needs_check(p)) {
        aimsi_pool_run(p->pool, job.nch, check_task, &job);
        for (size_t i = 0; i < job.nch; i++) {
            if (job.res[i].rc != AIMS_OK) {
                const chunk_res *e = &job.res[i];
                return aimsi_err(NULL, AIMS_E_INVAL,
                                 "row %zu, column %zu: non-finite value refused by step %ld "
                                 "(%s; set nonfinite=1 to pass it through)",
                                 e->row, e->col, e->step,
                                 kind_name(p->steps[e->step].kind));
            }
        }
    }
    if (job.widen) {
        size_t n;
        if (aimsi_mul_ok(job.nch * 2, job.brows * job.maxw, &n) != 0 ||
            aimsi_mul_ok(n, sizeof(float), &n) != 0) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "pipeline transform: scratch size overflows");
        }
        job.scratch = aimsi_malloc(n);
        if (job.scratch == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "pipeline transform: no memory for scratch");
        }
    }
    aimsi_pool_run(p->pool, job.nch, xf_task, &job);
    aimsi_free(job.scratch);
    return AIMS_OK;
}

/* ---- fit ---------------------------------------------------------------------------- */

typedef struct fit_chunk {
    double *s1, *s2, *cnt; /* per selected column */
    chunk_res res;
} fit_chunk;

typedef struct fit_job {
    aims_pipeline *p;
    size_t k; /* step being fitted */
    const float *x;
    size_t rows, nch, per, maxw, brows;
    const double *shift; /* STANDARDIZE: per selected column */
    float *colbuf;       /* IMPUTE median: selected columns, column-major */
    fit_chunk *ch;
    aims_status alloc_rc;
} fit_job;

/* Fold one block of step-k input rows into chunk c. Returns 0, or -1 after
 * recording a refused non-finite value in c->res. */
static int fit_block(fit_job *job, fit_chunk *c, const float *blk, size_t n, size_t row0)
{
    const aimsi_step *s = &job->p->steps[job->k];
    const size_t m = s->c1 - s->c0;
    const int st = strict(s);
    for (size_t r = 0; r < n; r++) {
        const float *in = blk + r * s->in_w + s->c0;
        switch (s->kind) {
        case AIMS_STEP_KIND_STANDARDIZE:
            if (st) {
                for (size_t j = 0; j < m; j++) {
                    const double d = (double)in[j] - job->shift[j];
                    c->s1[j] += d;
                    c->s2[j] += d * d;
                }
                break;
            }
            for (size_t j = 0; j < m; j++) {
                if (isfinite(in[j])) {
                    const double d = (double)in[j] - job->shift[j];
                    c->cnt[j] += 1.0;
                    c->s1[j] += d;
                    c->s2[j] += d * d;
                }
            }
            break;
        case AIMS_STEP_KIND_MINMAX:
        case AIMS_STEP_KIND_ONEHOT:
            for (size_t j = 0; j < m; j++) {
                const float v = in[j];
                if (!isfinite(v)) {
                    if (st) {
                        c->res = (chunk_res){AIMS_E_INVAL, row0 + r, s->c0 + j, (long)job->k};
                        return -1;
                    }
                    continue;
                }
                if (s->kind == AIMS_STEP_KIND_ONEHOT && category(v, UINT32_MAX) < 0) {
                    continue; /* not a category: gives all zeros, does not widen */
                }
                if (c->cnt[j] == 0.0) {
                    c->s1[j] = v;
                    c->s2[j] = v;
                }
                c->cnt[j] += 1.0;
                c->s1[j] = v < c->s1[j] ? v : c->s1[j]; /* min */
                c->s2[j] = v > c->s2[j] ? v : c->s2[j]; /* max */
            }
            break;
        case AIMS_STEP_KIND_IMPUTE:
            for (size_t j = 0; j < m; j++) {
                const float v = in[j];
                if (job->colbuf != NULL) {
                    job->colbuf[j * job->rows + row0 + r] = v;
                } else if (isfinite(v)) {
                    c->cnt[j] += 1.0;
                    c->s1[j] += v;
                }
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

/* Find the first non-finite value in columns [c0, c1) of a standardize input
 * block (fast path found a non-finite sum). */
static int find_nonfinite(fit_job *job, fit_chunk *c, const float *blk, size_t n, size_t row0)
{
    const aimsi_step *s = &job->p->steps[job->k];
    for (size_t r = 0; r < n; r++) {
        for (size_t j = s->c0; j < s->c1; j++) {
            if (!isfinite(blk[r * s->in_w + j])) {
                c->res = (chunk_res){AIMS_E_INVAL, row0 + r, j, (long)job->k};
                return -1;
            }
        }
    }
    return 0;
}

static void fit_task(void *ctx, size_t i)
{
    fit_job *job = ctx;
    fit_chunk *c = &job->ch[i];
    const aims_pipeline *p = job->p;
    const aimsi_step *s = &p->steps[job->k];
    const size_t r0 = i * job->per;
    const size_t r1 = r0 + job->per < job->rows ? r0 + job->per : job->rows;
    const size_t m = s->c1 - s->c0;
    float *bufa = NULL;
    if (job->k > 0) {
        bufa = aimsi_malloc(2 * job->brows * job->maxw * sizeof(float));
        if (bufa == NULL) {
            c->res.rc = AIMS_E_NOMEM;
            return;
        }
    }
    float *bufb = bufa != NULL ? bufa + job->brows * job->maxw : NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t r = r0; r < r1; r += job->brows) {
            const size_t n = r1 - r < job->brows ? r1 - r : job->brows;
            const float *blk = run_steps(p, job->k, job->x + r * p->in_w, n, bufa, bufb, NULL, 1);
            const int bad = pass == 0 ? fit_block(job, c, blk, n, r)
                                      : find_nonfinite(job, c, blk, n, r);
            if (bad != 0) {
                aimsi_free(bufa);
                return;
            }
        }
        /* the standardize fast path skips per-value tests: a non-finite sum
         * means a non-finite input, found by a second pass over this chunk */
        int clean = 1;
        if (s->kind == AIMS_STEP_KIND_STANDARDIZE && strict(s)) {
            for (size_t j = 0; j < m; j++) {
                clean &= isfinite(c->s1[j]) && isfinite(c->s2[j]);
            }
        }
        if (clean || pass == 1) {
            break;
        }
    }
    aimsi_free(bufa);
}

/* Selection: the k-th smallest of v[0..n) (reorders v). */
static float nth_smallest(float *v, size_t n, size_t k)
{
    size_t lo = 0;
    size_t hi = n - 1;
    while (lo < hi) {
        const float pivot = v[lo + (hi - lo) / 2];
        size_t i = lo;
        size_t j = hi;
        while (i <= j) {
            while (v[i] < pivot) {
                i++;
            }
            while (v[j] > pivot) {
                j--;
            }
            if (i <= j) {
                const float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0) {
                    break;
                }
                j--;
            }
        }
        if (k <= j) {
            hi = j;
        } else if (k >= i) {
            lo = i;
        } else {
            return v[k];
        }
    }
    return v[k];
}

/* Median of the finite values of column j in colbuf (0 when there are none). */
static double column_median(float *col, size_t rows)
{
    size_t n = 0;
    for (size_t r = 0; r < rows; r++) {
        if (isfinite(col[r])) {
            col[n++] = col[r];
        }
    }
    if (n == 0) {
        return 0.0;
    }
    const float hi = nth_smallest(col, n, n / 2);
    if (n % 2 == 1) {
        return hi;
    }
    /* after selection every value left of n/2 is <= hi: the lower middle is their max */
    float lo = col[0];
    for (size_t r = 1; r < n / 2; r++) {
        lo = col[r] > lo ? col[r] : lo;
    }
    return ((double)lo + (double)hi) / 2.0;
}

/* Combine the chunk partials of step k into its fitted arrays. */
static aims_status fit_finish(fit_job *job)
{
    aimsi_step *s = &job->p->steps[job->k];
    const size_t m = s->c1 - s->c0;
    for (size_t j = 0; j < m; j++) {
        double s1 = 0.0;
        double s2 = 0.0;
        double n = 0.0;
        double mn = HUGE_VAL;
        double mx = -HUGE_VAL;
        for (size_t i = 0; i < job->nch; i++) {
            const fit_chunk *c = &job->ch[i];
            const double cn = c->cnt != NULL ? c->cnt[j] : (double)job->per;
            if (s->kind == AIMS_STEP_KIND_MINMAX || s->kind == AIMS_STEP_KIND_ONEHOT) {
                if (cn > 0.0) {
                    mn = c->s1[j] < mn ? c->s1[j] : mn;
                    mx = c->s2[j] > mx ? c->s2[j] : mx;
                }
                n += cn;
                continue;
            }
            s1 += c->s1 != NULL ? c->s1[j] : 0.0;
            s2 += c->s2 != NULL ? c->s2[j] : 0.0;
            n += c->cnt != NULL ? cn : 0.0;
        }
        if (s->kind == AIMS_STEP_KIND_STANDARDIZE) {
            if (strict(s)) {
                n = (double)job->rows;
            }
            const double d = n > 0.0 ? s1 / n : 0.0;
            double var = n > 0.0 ? s2 / n - d * d : 0.0;
            var = var < 0.0 ? 0.0 : var;
            const double mean = job->shift[j] + d;
            /* scikit-learn's test for a constant column: var within the
             * accumulated rounding error of a float64 pass */
            const double eps = DBL_EPSILON;
            const double bound = n * eps * var + (n * mean * eps) * (n * mean * eps);
            s->a[j] = mean;
            s->b[j] = var <= bound ? 1.0 : 1.0 / sqrt(var);
        } else if (s->kind == AIMS_STEP_KIND_MINMAX) {
            const double lo = aimsi_sp(s, AIMS_STEP_LOW);
            const double hi = aimsi_sp(s, AIMS_STEP_HIGH);
            s->a[j] = n > 0.0 ? mn : 0.0;
            s->b[j] = n > 0.0 && mx > mn ? (hi - lo) / (mx - mn) : 0.0;
        } else if (s->kind == AIMS_STEP_KIND_ONEHOT) {
            /* k = largest integer category seen + 1, capped; at least one column */
            const double cap = aimsi_sp(s, AIMS_STEP_MAX_CATEGORIES);
            double k = n > 0.0 && mx >= 0.0 ? floor(mx) + 1.0 : 1.0;
            k = k > cap ? cap : k;
            s->cat[j] = (uint32_t)k;
        } else if (s->kind == AIMS_STEP_KIND_IMPUTE) {
            const int64_t strategy = (int64_t)aimsi_sp(s, AIMS_STEP_STRATEGY);
            if (strategy == 2) {
                s->a[j] = aimsi_sp(s, AIMS_STEP_VALUE);
            } else if (strategy == 1) {
                s->a[j] = column_median(job->colbuf + j * job->rows, job->rows);
            } else {
                s->a[j] = n > 0.0 ? s1 / n : 0.0;
            }
        }
    }
    return AIMS_OK;
}

static void fit_job_free(fit_job *job)
{
    if (job->ch != NULL) {
        for (size_t i = 0; i < job->nch; i++) {
            aimsi_free(job->ch[i].s1);
            aimsi_free(job->ch[i].s2);
            aimsi_free(job->ch[i].cnt);
        }
    }
    aimsi_free(job->ch);
    aimsi_free(job->colbuf);
    aimsi_free((void *)job->shift);
}

/* Allocate the fitted arrays of step s and the chunk partials of job. */
static aims_status fit_alloc(aims_pipeline *p, aimsi_step *s, fit_job *job)
{
    const size_t m = s->c1 - s->c0;
    const int strategy = (int)aimsi_sp(s, AIMS_STEP_STRATEGY);
    const int mean_kind = s->kind == AIMS_STEP_KIND_STANDARDIZE;
    const int impute_median = s->kind == AIMS_STEP_KIND_IMPUTE && strategy == 1;
    if (s->kind == AIMS_STEP_KIND_ONEHOT) {
        s->cat = aimsi_calloc(m, sizeof(uint32_t));
    } else {
        s->a = aimsi_calloc(m, sizeof(double));
        if (s->kind != AIMS_STEP_KIND_IMPUTE) {
            s->b = aimsi_calloc(m, sizeof(double));
        }
    }
    job->ch = aimsi_calloc(job->nch, sizeof(fit_chunk));
    if ((s->cat == NULL && s->a == NULL) || job->ch == NULL ||
        (s->kind != AIMS_STEP_KIND_IMPUTE && s->kind != AIMS_STEP_KIND_ONEHOT && s->b == NULL)) {
        return aimsi_err(&p->obj, AIMS_E_NOMEM, "pipeline fit: no memory for step %zu", job->k);
    }
    if (mean_kind) {
        job->shift = aimsi_calloc(m, sizeof(double));
        if (job->shift == NULL) {
            return aimsi_err(&p->obj, AIMS_E_NOMEM, "pipeline fit: no memory for step %zu",
                             job->k);
        }
    }
    if (impute_median) {
        size_t n;
        if (aimsi_mul_ok(m, job->rows, &n) != 0 || aimsi_mul_ok(n, sizeof(float), &n) != 0) {
            return aimsi_err(&p->obj, AIMS_E_NOMEM, "pipeline fit: median buffer overflows");
        }
        job->colbuf = aimsi_malloc(n);
        if (job->colbuf == NULL) {
            return aimsi_err(&p->obj, AIMS_E_NOMEM, "pipeline fit: no memory for median");
        }
        return AIMS_OK;
    }
    for (size_t i = 0; i < job->nch; i++) {
        fit_chunk *c = &job->ch[i];
        c->s1 = aimsi_calloc(m, sizeof(double));
        c->s2 = aimsi_calloc(m, sizeof(double));
        const int need_cnt = !(mean_kind && strict(s));
        c->cnt = need_cnt ? aimsi_calloc(m, sizeof(double)) : NULL;
        if (c->s1 == NULL || c->s2 == NULL || (need_cnt && c->cnt == NULL)) {
            return aimsi_err(&p->obj, AIMS_E_NOMEM, "pipeline fit: no memory for step %zu",
                             job->k);
        }
    }
    return AIMS_OK;
}

/* Shift for STANDARDIZE: the first row of the step's input (finite values only). */
static aims_status fit_shift(fit_job *job, aimsi_step *s)
{
    const aims_pipeline *p = job->p;
    float *row = aimsi_malloc(2 * job->maxw * sizeof(float));
    if (row == NULL) {
        return aimsi_err(&job->p->obj, AIMS_E_NOMEM, "pipeline fit: no memory");
    }
    const float *in = run_steps(p, job->k, job->x, 1, row, row + job->maxw, NULL, 1);
    double *shift = (double *)job->shift;
    for (size_t j = s->c0; j < s->c1; j++) {
        shift[j - s->c0] = isfinite(in[j]) ? in[j] : 0.0;
    }
    aimsi_free(row);
    return AIMS_OK;
}

static aims_status fit_step(aims_pipeline *p, size_t k, const float *x, size_t rows)
{
    aimsi_step *s = &p->steps[k];
    const size_t m = s->c1 - s->c0;
    fit_job job = {.p = p, .k = k, .x = x, .rows = rows};
    job.maxw = max_width(p, k);
    job.maxw = s->in_w > job.maxw ? s->in_w : job.maxw;
    job.brows = block_rows(job.maxw);
    /* the chunk count depends only on the data size, so partial sums combine
     * the same way for any thread count */
    size_t nch = rows / 2048 == 0 ? 1 : rows / 2048;
    const size_t mem_cap = ((size_t)1 << 23) / (m + 1);
    nch = nch > MAX_CHUNKS ? MAX_CHUNKS : nch;
    nch = nch > mem_cap ? (mem_cap == 0 ? 1 : mem_cap) : nch;
    job.nch = nch;
    job.per = (rows + nch - 1) / nch;
    job.nch = (rows + job.per - 1) / job.per;
    aims_status rc = fit_alloc(p, s, &job);
    if (rc == AIMS_OK && s->kind == AIMS_STEP_KIND_STANDARDIZE) {
        rc = fit_shift(&job, s);
    }
    if (rc == AIMS_OK) {
        aimsi_pool_run(p->pool, job.nch, fit_task, &job);
        for (size_t i = 0; i < job.nch && rc == AIMS_OK; i++) {
            const chunk_res *e = &job.ch[i].res;
            if (e->rc == AIMS_E_NOMEM) {
                rc = aimsi_err(&p->obj, AIMS_E_NOMEM, "pipeline fit: no memory");
            } else if (e->rc != AIMS_OK) {
                rc = aimsi_err(&p->obj, e->rc,
                               "row %zu, column %zu: non-finite value refused by step %ld "
                               "(%s; set nonfinite=1 to ignore it)",
                               e->row, e->col, e->step, kind_name(s->kind));
            }
        }
    }
    if (rc == AIMS_OK) {
        rc = fit_finish(&job);
    }
    fit_job_free(&job);
    return rc;
}

/* Resolve [c0, c1) of step s against an input of width w. */
static aims_status resolve_cols(aims_pipeline *p, size_t k, size_t w)
{
    aimsi_step *s = &p->steps[k];
    const double b = aimsi_sp(s, AIMS_STEP_COL_BEGIN);
    const double e = aimsi_sp(s, AIMS_STEP_COL_END);
    const double end = e < 0 ? (double)w : e;
    if (b >= end || end > (double)w) {
        return aimsi_err(&p->obj, AIMS_E_INVAL,
                         "step %zu (%s): column range [%.0f, %.0f) is empty or outside the %zu "
                         "columns of its input",
                         k, kind_name(s->kind), b, end, w);
    }
    s->in_w = w;
    s->c0 = (size_t)b;
    s->c1 = (size_t)end;
    s->out_w = w;
    return AIMS_OK;
}

static aims_status check_bounds(aims_pipeline *p, size_t k)
{
    const aimsi_step *s = &p->steps[k];
    const double lo = aimsi_sp(s, AIMS_STEP_LOW);
    const double hi = aimsi_sp(s, AIMS_STEP_HIGH);
    if (s->kind == AIMS_STEP_KIND_MINMAX && !(lo < hi && isfinite(lo) && isfinite(hi))) {
        return aimsi_err(&p->obj, AIMS_E_INVAL,
                         "step %zu (minmax): needs finite low < high, got [%g, %g]", k, lo, hi);
    }
    if (s->kind == AIMS_STEP_KIND_CLIP && !(lo <= hi)) {
        return aimsi_err(&p->obj, AIMS_E_INVAL, "step %zu (clip): low %g > high %g", k, lo, hi);
    }
    return AIMS_OK;
}

aims_status aimsi_num_fit(aims_pipeline *p, const float *x, size_t rows, size_t cols)
{
    size_t w = cols;
    p->in_w = cols;
    for (size_t k = 0; k < p->nsteps; k++) {
        aimsi_step *s = &p->steps[k];
        AIMSI_TRY(resolve_cols(p, k, w));
        AIMSI_TRY(check_bounds(p, k));
        if (s->kind != AIMS_STEP_KIND_CLIP && s->kind != AIMS_STEP_KIND_SCALE) {
            AIMSI_TRY(fit_step(p, k, x, rows));
        }
        if (s->kind == AIMS_STEP_KIND_ONEHOT) {
            size_t add = 0;
            for (size_t j = 0; j < s->c1 - s->c0; j++) {
                add += s->cat[j];
            }
            const size_t nw = w - (s->c1 - s->c0) + add;
            if (nw > AIMSI_MAX_WIDTH) {
                return aimsi_err(&p->obj, AIMS_E_INVAL,
                                 "step %zu (onehot): output would have %zu columns (cap %zu)", k,
                                 nw, AIMSI_MAX_WIDTH);
            }
            s->out_w = nw;
        }
        w = s->out_w;
    }
    p->out_w = w;
    return AIMS_OK;
}

int aimsi_num_fit_checked_all(const aims_pipeline *p)
{
    /* fit refuses non-finite input for every step that learns state; only the
     * stateless CLIP and SCALE are checked at transform time alone */
    for (size_t k = 0; k < p->nsteps; k++) {
        const aimsi_step *s = &p->steps[k];
        if ((s->kind == AIMS_STEP_KIND_CLIP || s->kind == AIMS_STEP_KIND_SCALE) && strict(s)) {
            return 0;
        }
    }
    return 1;
}
