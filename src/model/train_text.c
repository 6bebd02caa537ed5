/*
 * train_text.c -- the TEXT trainer, fastText style: workspace, initial
 * embeddings, and one document's step (embedding bag forward, fused
 * cross-entropy or hinge gradient, sparse SGD).
 *
 * How. TEXT trains row by row with plain SGD and a linearly decaying learning
 * rate (lr_at in train.c): no batch buffers and no optimizer state, because
 * the embedding table can be large; only the embedding rows of the
 * document's tokens move. The initial embeddings are drawn per token from the
 * seed (aimsi_train_mix_seed), so the order of the data does not matter.
 *
 * Averaging (AIMS_TRAIN_AVERAGE = N > 0, ASGD). Per-document SGD on a sparse
 * bag of n-grams ends wherever the last few documents pushed it; the mean of
 * the iterates of the last N epochs is a better model (on the fortunes topics
 * +1 to +2 pp, see docs/text-training.md). Averaging must stay sparse, so it uses
 * the usual lazy form: with w_s the weights after averaged step s = 1..T and u_s
 * that step's update, sum_s w_s = T w_T - sum_s (s-1) u_s, so each update also
 * adds (s-1) u_s to an accumulator A of the touched entries only, and at the
 * end w = w_T - A / T: one more float per parameter, no dense pass per step.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_train.h"

/* TEXT trains row by row with plain SGD: no batch buffers, no optimizer state
 * (the embedding table can be large). */
aims_status aimsi_train_text_workspace(aims_trainer *t)
{
    const aims_model *m = t->m;
    const int early = t->n_va > 0 || t->val != NULL;
    const int avg = t->h.avg > 0 && t->h.patience == 0;
    const size_t small = 2 * m->embed_dim + m->output_dim;
    t->ws = aimsi_calloc(small + (early ? m->n_params : 0) + (avg ? m->n_params : 0),
                         sizeof(float));
    t->perm = aimsi_malloc(t->n_tr * sizeof *t->perm);
    if (t->ws == NULL || t->perm == NULL) {
        return aimsi_err(&t->obj, AIMS_E_NOMEM, "aims_trainer_begin: out of memory for the "
                                                "workspace");
    }
    t->th = t->ws;
    t->tdh = t->th + m->embed_dim;
    t->tz = t->tdh + m->embed_dim;
    t->best = early ? t->tz + m->output_dim : NULL;
    t->tavg = avg ? t->tz + m->output_dim + (early ? m->n_params : 0) : NULL;
    const int64_t from = t->h.epochs > t->h.avg ? (t->h.epochs - t->h.avg) * t->steps_per_epoch : 0;
    t->avg_from = from;
    t->avg_n = 0;
    t->grad = NULL;
    t->v1 = NULL;
    t->v2 = NULL;
    return AIMS_OK;
}

/* TEXT, fastText style: embeddings U(-1/dim, 1/dim), output layer zero. Only the
 * rows of tokens present in the training data are drawn (each from its own
 * seed, so the order of the data does not matter); the others stay zero, so a
 * token never seen in training adds nothing at predict time instead of noise,
 * and a 2^21-bucket table is not filled with 100M random numbers. */
void aimsi_train_text_init(aims_trainer *t, uint64_t seed)
{
    aims_model *m = t->m;
    const aims_dataset *ds = t->train;
    const size_t e = m->embed_dim;
    const float k = 1.0f / (float)e;
    float *emb = m->params + m->emb_off;
    memset(emb, 0, m->input_dim * e * sizeof *emb);
    memset(m->params + m->layers[0].w_off, 0,
           (m->layers[0].in + 1) * m->layers[0].out * sizeof(float));
    if (m->text_linear) {
        return; /* a linear model starts at 0: no symmetry to break */
    }
    for (size_t r = 0; r < t->n_tr; r++) {
        const size_t row = t->tr_idx[r];
        for (uint64_t i = ds->tok_off[row]; i < ds->tok_off[row + 1]; i++) {
            const uint32_t id = ds->tok_ids[i];
            float *v = emb + (size_t)id * e;
            if (v[0] != 0.0f) {
                continue; /* drawn already (a draw of exactly 0 is redrawn: harmless) */
            }
            aimsi_rng rng;
            aimsi_rng_seed(&rng, aimsi_train_mix_seed(seed, 0x7E470000000ull + id));
            for (size_t j = 0; j < e; j++) {
                v[j] = (float)(2.0 * aimsi_rng_unit(&rng) - 1.0) * k;
            }
        }
    }
}

/* Loss gradient wrt the scores z (in place) for label y, returning the loss.
 * Cross-entropy: g = softmax(z) - onehot(y). Hinge (one-vs-rest, scikit-learn's
 * SGDClassifier default): with s = +1 for y and -1 for the other classes, each
 * class whose margin s z < 1 gets g = -s, the others 0. */
static double text_loss_grad(int kind, float *z, size_t k, size_t y)
{
    if (kind == 3) {
        double sum = 0.0;
        for (size_t o = 0; o < k; o++) {
            const float s = o == y ? 1.0f : -1.0f;
            const float margin = s * z[o];
            sum += margin < 1.0f ? (double)(1.0f - margin) : 0.0;
            z[o] = margin < 1.0f ? -s : 0.0f;
        }
        return sum;
    }
    const float sum = aimsi_softmax_exp(z, k);
    const double ce = log((double)sum) - log((double)z[y]);
    const float inv = 1.0f / sum;
    for (size_t o = 0; o < k; o++) {
        z[o] = z[o] * inv - (o == y ? 1.0f : 0.0f);
    }
    return ce;
}

/* One document of a TEXT model: forward, fused loss gradient, and sparse SGD --
 * only the embedding rows of this document's tokens move. The gradient wrt the
 * pooled vector is taken from W before W is updated (same pass); text_linear
 * has no W, the pooled vector is the scores, so that gradient is g itself. */
double aimsi_train_text_step(aims_trainer *t, size_t row, float lr)
{
    aims_model *m = t->m;
    const aims_dataset *ds = t->train;
    const size_t e = m->embed_dim;
    const size_t k = m->output_dim;
    float *h = t->th;
    float *dh = t->tdh;
    float *z = t->tz;
    aimsi_text_hidden(m, ds, row, h);
    aimsi_text_logits(m, h, z);
    const double loss = text_loss_grad(m->loss, z, k, (size_t)ds->labels[row]);
    float *w = m->params + m->layers[0].w_off;
    float *b = m->params + m->layers[0].b_off;
    /* ASGD: A += (s-1) u for every update u of this step (see the top comment) */
    float *acc = t->tavg != NULL && t->step >= t->avg_from ? t->tavg : NULL;
    const float c = (float)t->avg_n;
    memset(dh, 0, e * sizeof *dh);
    for (size_t o = 0; o < k; o++) {
        const float g = z[o];
        const float step = lr * g;
        b[o] -= step;
        if (acc != NULL) {
            acc[m->layers[0].b_off + o] -= c * step;
        }
        if (m->text_linear) {
            dh[o] = g;
            continue;
        }
        float *wr = w + o * e;
        float *ar = acc != NULL ? acc + m->layers[0].w_off + o * e : NULL;
        for (size_t j = 0; j < e; j++) {
            dh[j] += g * wr[j];
            wr[j] -= step * h[j];
            if (ar != NULL) {
                ar[j] -= c * step * h[j];
            }
        }
    }
    const uint64_t t0 = ds->tok_off[row];
    const uint64_t t1 = ds->tok_off[row + 1];
    if (t1 > t0) {
        const float scale = lr * aimsi_text_pool_scale(m, t1 - t0);
        float *emb = m->params + m->emb_off;
        for (uint64_t i = t0; i < t1; i++) {
            const float s = scale * (ds->tok_w != NULL ? ds->tok_w[i] : 1.0f);
            const size_t off = (size_t)ds->tok_ids[i] * e;
            float *v = emb + off;
            for (size_t j = 0; j < e; j++) {
                v[j] -= s * dh[j];
            }
            if (acc != NULL) {
                float *a = acc + m->emb_off + off;
                const float cs = c * s;
                for (size_t j = 0; j < e; j++) {
                    a[j] -= cs * dh[j];
                }
            }
        }
    }
    if (acc != NULL) {
        t->avg_n++;
    }
    return loss;
}

void aimsi_train_text_average_finish(aims_trainer *t)
{
    if (t->tavg == NULL || t->avg_n == 0) {
        return;
    }
    float *p = t->m->params;
    const float inv = 1.0f / (float)t->avg_n;
    for (size_t i = 0; i < t->m->n_params; i++) {
        p[i] -= t->tavg[i] * inv;
    }
    t->avg_n = 0; /* applied once */
}
