/*
 * eval.c -- evaluation: typed metrics from one pass over labelled rows.
 *
 * aimsi_model_score() is the single scoring loop, shared by the public
 * aims_model_evaluate() and the trainer's validation: rows are forwarded in
 * chunks (gathered through an index list so a held-out split needs no copy),
 * and the pass accumulates log-loss, the confusion matrix, or the sums for
 * MSE and R^2. Sums are in double so a long evaluation does not drift.
 * Log-loss uses log-softmax computed from the logits (max-shifted), never
 * log of a rounded probability, so a confident wrong answer costs a finite,
 * exact amount.
 */
#include <math.h>
#include <string.h>

#include "aimsi_model.h"

#define EVAL_CHUNK 512

struct aims_eval {
    aimsi_obj obj;
    int classifier;
    size_t k;
    double accuracy, macro_f1, log_loss, mse, r2;
    size_t rows;
    int64_t *confusion; /* k*k */
};

#define EVAL_OK(e) aimsi_obj_ok((e), AIMSI_MAGIC_EVAL)

/* log-loss of one row of logits for class y, and its argmax */
static double row_logloss(const float *z, size_t k, int32_t y, int32_t *pred)
{
    if (k == 1) { /* LOGISTIC: binary cross-entropy from the logit */
        const double v = z[0];
        *pred = v >= 0.0 ? 1 : 0;
        return fmax(v, 0.0) - v * (double)y + log1p(exp(-fabs(v)));
    }
    size_t best = 0;
    for (size_t i = 1; i < k; i++) {
        best = z[i] > z[best] ? i : best;
    }
    const double mx = z[best];
    double s = 0.0;
    for (size_t i = 0; i < k; i++) {
        s += exp((double)z[i] - mx);
    }
    *pred = (int32_t)best;
    return log(s) + mx - (double)z[y];
}

typedef struct score_acc {
    double loss, sse, sum_t, sum_t2;
    size_t correct;
} score_acc;

static void score_chunk(const aims_model *m, const float *raw, size_t n, const int32_t *labels,
                        const float *targets, const size_t *rows, int64_t *confusion,
                        score_acc *a)
{
    const size_t units = m->layers[m->n_layers - 1].out;
    const size_t k = aimsi_model_classes(m);
    const int cls = aimsi_model_is_classifier(m);
    for (size_t r = 0; r < n; r++) {
        const size_t row = rows[r];
        const float *z = raw + r * units;
        if (cls) {
            int32_t pred = 0;
            const int32_t y = labels[row];
            a->loss += row_logloss(z, units, y, &pred);
            a->correct += pred == y;
            if (confusion != NULL) {
                confusion[(size_t)y * k + (size_t)pred]++;
            }
            continue;
        }
        for (size_t j = 0; j < units; j++) {
            double t = 0.0;
            if (targets != NULL) {
                t = targets[row];
            } else if (units == 1) {
                t = labels[row];
            } else {
                t = (size_t)labels[row] == j ? 1.0 : 0.0; /* one-hot MSE classifier */
            }
            const double d = (double)z[j] - t;
            a->sse += d * d;
            a->sum_t += t;
            a->sum_t2 += t * t;
        }
    }
}

static void finish_score(const aims_model *m, const score_acc *a, size_t n, aimsi_score *out)
{
    const size_t units = m->layers[m->n_layers - 1].out;
    out->rows = n;
    if (aimsi_model_is_classifier(m)) {
        out->loss = a->loss / (double)n;
        out->accuracy = (double)a->correct / (double)n;
        out->r2 = NAN;
    } else {
        const double cnt = (double)n * (double)units;
        const double mean = a->sum_t / cnt;
        const double sst = a->sum_t2 - cnt * mean * mean;
        out->loss = a->sse / cnt;
        out->accuracy = NAN;
        out->r2 = sst > 0.0 ? 1.0 - a->sse / sst : NAN;
    }
}

/* TEXT: one row at a time (the hidden layer is a cheap embedding mean). */
static aims_status score_text(const aims_model *m, const aims_dataset *ds, const size_t *idx,
                              size_t n, int64_t *confusion, aimsi_score *out)
{
    float *h = aimsi_malloc((m->embed_dim + m->output_dim) * sizeof *h);
    if (h == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "evaluate: out of memory");
    }
    float *z = h + m->embed_dim;
    score_acc a;
    memset(&a, 0, sizeof a);
    for (size_t r = 0; r < n; r++) {
        const size_t row = idx != NULL ? idx[r] : r;
        aimsi_text_hidden(m, ds, row, h);
        aimsi_text_logits(m, h, z);
        score_chunk(m, z, 1, ds->labels, ds->targets, &row, confusion, &a);
    }
    aimsi_free(h);
    finish_score(m, &a, n, out);
    return AIMS_OK;
}

aims_status aimsi_model_score_ds(const aims_model *m, const aims_dataset *ds, const size_t *idx,
                                 size_t n, int64_t *confusion, aimsi_score *out)
{
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        return score_text(m, ds, idx, n, confusion, out);
    }
    return aimsi_model_score(m, ds->x, ds->labels, ds->targets, idx, n, confusion, out);
}

aims_status aimsi_model_score(const aims_model *m, const float *x, const int32_t *labels,
                              const float *targets, const size_t *idx, size_t n,
                              int64_t *confusion, aimsi_score *out)
{
    const size_t chunk = n < EVAL_CHUNK ? n : EVAL_CHUNK;
    const size_t in = m->input_dim;
    const size_t units = m->layers[m->n_layers - 1].out;
    const size_t sneed = aimsi_model_scratch_floats(m, chunk);
    float *xb = aimsi_malloc(chunk * in * sizeof *xb);
    float *raw = aimsi_malloc(chunk * units * sizeof *raw);
    float *scratch = aimsi_malloc(sneed * sizeof *scratch);
    size_t *rows = aimsi_malloc(chunk * sizeof *rows);
    if (xb == NULL || raw == NULL || scratch == NULL || rows == NULL) {
        aimsi_free(xb);
        aimsi_free(raw);
        aimsi_free(scratch);
        aimsi_free(rows);
        return aimsi_err(NULL, AIMS_E_NOMEM, "evaluate: out of memory");
    }
    score_acc a;
    memset(&a, 0, sizeof a);
    for (size_t r0 = 0; r0 < n; r0 += chunk) {
        const size_t c = n - r0 < chunk ? n - r0 : chunk;
        for (size_t r = 0; r < c; r++) {
            rows[r] = idx != NULL ? idx[r0 + r] : r0 + r;
            memcpy(xb + r * in, x + rows[r] * in, in * sizeof *xb);
        }
        aimsi_model_forward(m, xb, c, scratch, raw);
        score_chunk(m, raw, c, labels, targets, rows, confusion, &a);
    }
    aimsi_free(xb);
    aimsi_free(raw);
    aimsi_free(scratch);
    aimsi_free(rows);
    finish_score(m, &a, n, out);
    return AIMS_OK;
}

static double macro_f1(const int64_t *c, size_t k)
{
    double sum = 0.0;
    size_t used = 0;
    for (size_t i = 0; i < k; i++) {
        int64_t tp = c[i * k + i];
        int64_t row = 0;
        int64_t col = 0;
        for (size_t j = 0; j < k; j++) {
            row += c[i * k + j];
            col += c[j * k + i];
        }
        if (row == 0 && col == 0) {
            continue; /* class absent from truth and predictions: not counted */
        }
        used++;
        if (tp > 0) {
            sum += 2.0 * (double)tp / (double)(row + col);
        }
    }
    return used > 0 ? sum / (double)used : 0.0;
}

static aims_status check_labels(const aims_model *m, const aims_dataset *ds)
{
    if (aimsi_model_is_classifier(m)) {
        if (ds->labels == NULL) {
            return aimsi_err(NULL, AIMS_E_INVAL, "evaluate: the dataset has no labels");
        }
        const size_t k = aimsi_model_classes(m);
        for (size_t r = 0; r < ds->rows; r++) {
            if (ds->labels[r] < 0 || (size_t)ds->labels[r] >= k) {
                return aimsi_err(NULL, AIMS_E_INVAL,
                                 "evaluate: row %zu has label %d, model has %zu classes", r,
                                 (int)ds->labels[r], k);
            }
        }
        return AIMS_OK;
    }
    if (ds->targets == NULL && ds->labels == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "evaluate: the dataset has no targets");
    }
    if (ds->targets != NULL && m->output_dim != 1) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "evaluate: %zu outputs but the dataset has one target per row",
                         m->output_dim);
    }
    return AIMS_OK;
}

aims_status aims_model_evaluate(const aims_model *m, const aims_dataset *ds, aims_eval **out)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MODEL) || !aimsi_obj_ok(ds, AIMSI_MAGIC_DATASET) ||
        out == NULL) {
        return AIMSI_MISUSE("invalid model/dataset handle or NULL out");
    }
    if (!m->trained || m->params == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "evaluate: the model is not trained");
    }
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        AIMSI_TRY(aimsi_text_check(m, ds));
    } else if (ds->x == NULL || ds->cols != m->input_dim || ds->rows == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "evaluate: dataset width %zu, model needs %zu",
                         ds->cols, m->input_dim);
    }
    AIMSI_TRY(check_labels(m, ds));
    aims_eval *ev = aimsi_calloc(1, sizeof *ev);
    if (ev == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "evaluate: out of memory");
    }
    aimsi_obj_init(&ev->obj, AIMSI_MAGIC_EVAL);
    ev->classifier = aimsi_model_is_classifier(m);
    if (ev->classifier) {
        ev->k = aimsi_model_classes(m);
        ev->confusion = aimsi_calloc(ev->k * ev->k, sizeof *ev->confusion);
        if (ev->confusion == NULL) {
            aims_eval_destroy(ev);
            return aimsi_err(NULL, AIMS_E_NOMEM, "evaluate: out of memory");
        }
    }
    aimsi_score s;
    const aims_status rc = aimsi_model_score_ds(m, ds, NULL, ds->rows, ev->confusion, &s);
    if (rc != AIMS_OK) {
        aims_eval_destroy(ev);
        return rc;
    }
    ev->rows = s.rows;
    if (ev->classifier) {
        ev->accuracy = s.accuracy;
        ev->log_loss = s.loss;
        ev->macro_f1 = macro_f1(ev->confusion, ev->k);
    } else {
        ev->mse = s.loss;
        ev->r2 = s.r2;
    }
    *out = ev;
    return AIMS_OK;
}

void aims_eval_destroy(aims_eval *ev)
{
    if (!EVAL_OK(ev)) {
        return;
    }
    aimsi_free(ev->confusion);
    aimsi_obj_kill(&ev->obj);
    aimsi_free(ev);
}

aims_status aims_eval_get_metric(const aims_eval *ev, aims_eval_metric metric, double *out_value)
{
    if (!EVAL_OK(ev) || out_value == NULL) {
        return AIMSI_MISUSE("invalid eval handle or NULL out_value");
    }
    double v = 0.0;
    int ok = 1;
    switch (metric) {
    case AIMS_EVAL_METRIC_ACCURACY:
        v = ev->accuracy;
        ok = ev->classifier;
        break;
    case AIMS_EVAL_METRIC_MACRO_F1:
        v = ev->macro_f1;
        ok = ev->classifier;
        break;
    case AIMS_EVAL_METRIC_LOG_LOSS:
        v = ev->log_loss;
        ok = ev->classifier;
        break;
    case AIMS_EVAL_METRIC_MSE:
        v = ev->mse;
        ok = !ev->classifier;
        break;
    case AIMS_EVAL_METRIC_R2:
        v = ev->r2;
        ok = !ev->classifier;
        break;
    case AIMS_EVAL_METRIC_ROWS:
        v = (double)ev->rows;
        break;
    default:
        ok = 0;
        break;
    }
    if (!ok) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "aims_eval_get_metric: metric %d does not apply",
                         (int)metric);
    }
    *out_value = v;
    return AIMS_OK;
}

size_t aims_eval_num_classes(const aims_eval *ev)
{
    return EVAL_OK(ev) ? ev->k : 0;
}

aims_status aims_eval_get_confusion(const aims_eval *ev, int64_t *out, size_t out_cap)
{
    if (!EVAL_OK(ev) || out == NULL) {
        return AIMSI_MISUSE("invalid eval handle or NULL out");
    }
    if (!ev->classifier) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "aims_eval_get_confusion: regression model");
    }
    if (out_cap < ev->k * ev->k) {
        return aimsi_err(NULL, AIMS_E_RANGE, "aims_eval_get_confusion: out_cap %zu < %zu", out_cap,
                         ev->k * ev->k);
    }
    memcpy(out, ev->confusion, ev->k * ev->k * sizeof *out);
    return AIMS_OK;
}
