/*
 * train_opt.c -- the optimizer update: SGD (momentum, Nesterov), Adam and
 * AdamW over one contiguous parameter range, called by the backward pass
 * (train_dense.c) layer by layer.
 *
 * How. For plain SGD with momentum the gradient GEMM has already accumulated
 * into the velocity buffer (see train_dense.c), so the update reads v1; the
 * other optimizers read grad. The arithmetic is PyTorch's (v = mu v + g;
 * w -= lr v; Adam with bias corrections c1, c2). Large ranges are cut into
 * UPDATE_CHUNK pieces over the trainer's pool; every parameter's update is
 * element-wise and the vector and scalar code do the same operations in the
 * same order, so neither the split nor the AVX2 path changes a bit.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_train.h"

/* Adam/AdamW on elements [from, cnt): the whole update without AVX2, and the
 * tail the AVX2 loop leaves (one copy, so both paths do the same arithmetic). */
static void adam_scalar(const opt_step *o, int decoupled, float *w, float *v, float *s,
                        const float *g, size_t from, size_t cnt)
{
    for (size_t i = from; i < cnt; i++) {
        float gi = g[i];
        if (decoupled) {
            w[i] -= o->lr * o->wd * w[i];
        } else {
            gi += o->wd * w[i];
        }
        v[i] = o->b1 * v[i] + (1.0f - o->b1) * gi;
        s[i] = o->b2 * s[i] + (1.0f - o->b2) * gi * gi;
        const float mh = v[i] / o->c1;
        const float sh = s[i] / o->c2;
        w[i] -= o->lr * mh / (sqrtf(sh) + o->eps);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define AIMSI_ADAM_AVX2 1
/* Adam/AdamW over a range, 8 lanes at a time: the scalar loop cannot be
 * vectorised by the compiler (sqrtf may set errno), and with it Adam cost more
 * than the GEMMs. Same operations in the same order as the scalar tail (no
 * FMA contraction), so the result does not depend on the split point. */
__attribute__((target("avx2"))) static void adam_avx2(const opt_step *o, int decoupled,
                                                       float *w, float *v, float *s,
                                                       const float *g, size_t cnt)
{
    const __m256 lr = _mm256_set1_ps(o->lr);
    const __m256 lrwd = _mm256_set1_ps(o->lr * o->wd);
    const __m256 wd = _mm256_set1_ps(o->wd);
    const __m256 b1 = _mm256_set1_ps(o->b1);
    const __m256 b2 = _mm256_set1_ps(o->b2);
    const __m256 nb1 = _mm256_set1_ps(1.0f - o->b1);
    const __m256 nb2 = _mm256_set1_ps(1.0f - o->b2);
    const __m256 c1 = _mm256_set1_ps(o->c1);
    const __m256 c2 = _mm256_set1_ps(o->c2);
    const __m256 eps = _mm256_set1_ps(o->eps);
    size_t i = 0;
    for (; i + 8 <= cnt; i += 8) {
        __m256 wi = _mm256_loadu_ps(w + i);
        __m256 gi = _mm256_loadu_ps(g + i);
        if (decoupled) {
            wi = _mm256_sub_ps(wi, _mm256_mul_ps(lrwd, wi));
        } else {
            gi = _mm256_add_ps(gi, _mm256_mul_ps(wd, wi));
        }
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(v + i)),
                                        _mm256_mul_ps(nb1, gi));
        const __m256 si = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(s + i)),
                                        _mm256_mul_ps(_mm256_mul_ps(nb2, gi), gi));
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(s + i, si);
        const __m256 mh = _mm256_div_ps(vi, c1);
        const __m256 sh = _mm256_div_ps(si, c2);
        const __m256 step =
            _mm256_div_ps(_mm256_mul_ps(lr, mh), _mm256_add_ps(_mm256_sqrt_ps(sh), eps));
        _mm256_storeu_ps(w + i, _mm256_sub_ps(wi, step));
    }
    adam_scalar(o, decoupled, w, v, s, g, i, cnt);
}
#endif

/* Update one contiguous parameter range [off, off+cnt) from the gradient
 * already in grad (generic path) or in v1 (fast SGD path). */
void aimsi_train_update_range(const aims_trainer *t, const opt_step *o, size_t off, size_t cnt)
{
    float *w = t->m->params + off;
    float *v = t->v1 + off;
    const float *g = t->grad + off;
    if (t->h.opt == OPT_SGD && !t->h.nesterov) {
        /* v holds mu v + grad (the GEMM accumulated into it with beta 1); the
         * next step's "mu v" is applied here, while v is in cache, instead of
         * by the GEMM's own beta pass (a separate, threaded sweep in OpenBLAS).
         * The stored buffer is therefore mu * velocity. */
        if (o->wd > 0.0f) {
            for (size_t i = 0; i < cnt; i++) {
                v[i] += o->wd * w[i];
                w[i] -= o->lr * v[i];
                v[i] *= o->mom;
            }
        } else {
            for (size_t i = 0; i < cnt; i++) {
                w[i] -= o->lr * v[i];
                v[i] *= o->mom;
            }
        }
        return;
    }
    if (t->h.opt == OPT_SGD) { /* Nesterov */
        for (size_t i = 0; i < cnt; i++) {
            const float gi = g[i] + o->wd * w[i];
            v[i] = o->mom * v[i] + gi;
            w[i] -= o->lr * (gi + o->mom * v[i]);
        }
        return;
    }
    float *s = t->v2 + off;
    const int decoupled = t->h.opt == OPT_ADAMW;
#ifdef AIMSI_ADAM_AVX2
    if (__builtin_cpu_supports("avx2")) {
        adam_avx2(o, decoupled, w, v, s, g, cnt);
        return;
    }
#endif
    adam_scalar(o, decoupled, w, v, s, g, 0, cnt);
}

typedef struct update_job {
    const aims_trainer *t;
    const opt_step *o;
    size_t off, cnt;
} update_job;

enum { UPDATE_CHUNK = 16384 }; /* parameters per pool item */

static void update_task(void *ctx, size_t i)
{
    const update_job *u = ctx;
    const size_t at = i * UPDATE_CHUNK;
    aimsi_train_update_range(u->t, u->o, u->off + at, u->cnt - at < UPDATE_CHUNK ? u->cnt - at : UPDATE_CHUNK);
}

/* The optimizer update over [off, off+cnt), in chunks over the own GEMMs'
 * pool. Every parameter's update is element-wise (and the vector and scalar
 * code do the same operations in the same order), so the split does not
 * change a bit. */
void aimsi_train_update_params(const aims_trainer *t, const opt_step *o, size_t off, size_t cnt)
{
    update_job u = {t, o, off, cnt};
    aimsi_pool_run(t->pool, (cnt + UPDATE_CHUNK - 1) / UPDATE_CHUNK, update_task, &u);
}
