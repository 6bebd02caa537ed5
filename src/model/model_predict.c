/*
 * model_predict.c -- the forward pass and predict of a finalized model: dense
 * forward (float and int8), predict, predict_class and the TEXT embedding bag.
 *
 * How. Predict only reads the model, so any number of threads may run it at
 * once; it never touches shared scratch: small batches use a stack buffer (the
 * single-row path does not allocate at all) and larger ones allocate their
 * own, in chunks of PREDICT_CHUNK rows.
 */
#include <math.h>
#include <string.h>

#include "aimsi_modelobj.h"

#define STACK_SCRATCH 8192                  /* floats; single-row predict */

/* ---- forward ---------------------------------------------------------------------------- */

static size_t widest(const aims_model *m)
{
    size_t w = m->kind == AIMS_MODEL_KIND_TEXT ? m->embed_dim : m->input_dim;
    for (size_t i = 0; i < m->n_layers; i++) {
        w = m->layers[i].in > w ? m->layers[i].in : w;
        w = m->layers[i].out > w ? m->layers[i].out : w;
    }
    return w;
}

size_t aimsi_model_scratch_floats(const aims_model *m, size_t rows)
{
    size_t n = 0;
    if (aimsi_mul_ok(rows, widest(m), &n) != 0 || aimsi_mul_ok(n, 4, &n) != 0) {
        return SIZE_MAX;
    }
    return n;
}

/* Portable int8 fallback: dequantise on the fly. quant.c overrides it. */
__attribute__((weak)) void aimsi_q8_dense_forward(const aims_model *m, const aimsi_dense *L,
                                                  const float *x, size_t rows, float *scratch,
                                                  float *y)
{
    (void)scratch;
    const float *b = m->params + L->b_off;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * L->in;
        for (size_t o = 0; o < L->out; o++) {
            const int8_t *w = L->qw + o * L->in;
            float s = 0.0f;
            for (size_t i = 0; i < L->in; i++) {
                s += (float)w[i] * xr[i];
            }
            y[r * L->out + o] = s * L->wscale[o] + b[o];
        }
    }
}

/* y = x W^T + b, then the activation: one sgemm with the bias pre-filled so
 * the add costs nothing extra (beta = 1). */
static void dense_forward(const aims_model *m, const aimsi_dense *L, const float *x, size_t rows,
                          float *scratch, float *y)
{
    if (m->quantized && L->qw != NULL) {
        aimsi_q8_dense_forward(m, L, x, rows, scratch, y);
    } else if (rows == 1) {
        aimsi_gemv_bias(m->params + L->w_off, L->out, L->in, x, m->params + L->b_off, y);
    } else {
        const float *b = m->params + L->b_off;
        for (size_t r = 0; r < rows; r++) {
            memcpy(y + r * L->out, b, L->out * sizeof *y);
        }
        aimsi_sgemm(0, 1, rows, L->out, L->in, 1.0f, x, L->in, m->params + L->w_off, L->in,
                    1.0f, y, L->out);
    }
    aimsi_act_apply(L->act, y, rows * L->out);
}

void aimsi_model_forward(const aims_model *m, const float *x, size_t rows, float *scratch,
                         float *out)
{
    const size_t half = rows * widest(m);
    float *buf[2] = {scratch, scratch + half};
    float *qscratch = scratch + 2 * half;
    const float *cur = x;
    for (size_t i = 0; i < m->n_layers; i++) {
        float *dst = i + 1 == m->n_layers ? out : buf[i & 1];
        dense_forward(m, &m->layers[i], cur, rows, qscratch, dst);
        cur = dst;
    }
}

/* ---- predict ------------------------------------------------------------------------------ */

/* The one softmax. Predict and both training losses (train_dense.c,
 * train_text.c) call aimsi_softmax_exp, so probabilities at serve time are
 * exactly the ones the loss was computed from: replace v by exp(v - max v)
 * (max-shifted, so no overflow) and return the sum. */
float aimsi_softmax_exp(float *v, size_t n)
{
    float mx = v[0];
    for (size_t i = 1; i < n; i++) {
        mx = v[i] > mx ? v[i] : mx;
    }
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) {
        v[i] = expf(v[i] - mx);
        s += v[i];
    }
    return s;
}

static void softmax_row(float *v, size_t n)
{
    const float inv = 1.0f / aimsi_softmax_exp(v, n);
    for (size_t i = 0; i < n; i++) {
        v[i] *= inv;
    }
}

int aimsi_model_is_classifier(const aims_model *m)
{
    const int loss = aimsi_model_resolve_loss(m);
    return m->kind != AIMS_MODEL_KIND_LINEAR && (loss == 1 || loss == 3);
}

size_t aimsi_model_classes(const aims_model *m)
{
    return m->kind == AIMS_MODEL_KIND_LOGISTIC ? 2 : m->output_dim;
}


static aims_status check_predict(const aims_model *m, aims_output what, const float *x,
                                 size_t rows, size_t cols, const void *out)
{
    if (!MODEL_OK(m) || x == NULL || out == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL x/out");
    }
    if (!m->trained || m->params == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "predict: the model is not trained");
    }
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict: TEXT models take token datasets "
                                             "(aims_model_predict_dataset)");
    }
    if (rows == 0 || cols != m->input_dim) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict: %zu rows of width %zu, model needs "
                                             "width %zu",
                         rows, cols, m->input_dim);
    }
    if (what != AIMS_OUT_SCORES && what != AIMS_OUT_PROBA) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict: unknown output %d", (int)what);
    }
    if (what == AIMS_OUT_PROBA && !aimsi_model_is_classifier(m)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict: probabilities of a regression model");
    }
    return AIMS_OK;
}

/* Turn raw last-layer values (rows x units) into what the caller asked for, in
 * out (rows x output_dim()). LOGISTIC scores are (0, z) so that softmax and
 * argmax of the pair agree with sigmoid(z). Safe in place for non-LOGISTIC. */
static void finish_rows(const aims_model *m, aims_output what, const float *raw, size_t rows,
                        float *out)
{
    if (m->kind == AIMS_MODEL_KIND_LOGISTIC) {
        for (size_t r = rows; r-- > 0;) {
            const float z = raw[r];
            if (what == AIMS_OUT_PROBA) {
                const float p = 1.0f / (1.0f + expf(-z));
                out[2 * r] = 1.0f - p;
                out[2 * r + 1] = p;
            } else {
                out[2 * r] = 0.0f;
                out[2 * r + 1] = z;
            }
        }
        return;
    }
    const size_t k = m->output_dim;
    if (raw != out) {
        memcpy(out, raw, rows * k * sizeof *out);
    }
    if (what == AIMS_OUT_PROBA) {
        for (size_t r = 0; r < rows; r++) {
            softmax_row(out + r * k, k);
        }
    }
}

/* Forward `rows` rows into raw (rows x last units) with scratch from the
 * stack when it fits, else the heap. */
static aims_status forward_rows(const aims_model *m, const float *x, size_t rows, float *raw)
{
    float stack[STACK_SCRATCH];
    const size_t need = aimsi_model_scratch_floats(m, rows);
    float *scratch = stack;
    if (need > STACK_SCRATCH) {
        if (need == SIZE_MAX) {
            return aimsi_err(NULL, AIMS_E_RANGE, "predict: %zu rows overflow the scratch size",
                             rows);
        }
        scratch = aimsi_malloc(need * sizeof *scratch);
        if (scratch == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "predict: out of memory for scratch");
        }
    }
    aimsi_model_forward(m, x, rows, scratch, raw);
    if (scratch != stack) {
        aimsi_free(scratch);
    }
    return AIMS_OK;
}

/* Rows per chunk for batch predict: bounds scratch memory for huge inputs. */
#define PREDICT_CHUNK 4096

aims_status aims_model_predict(const aims_model *m, aims_output what, const float *x,
                               size_t rows, size_t cols, float *out, size_t out_cap)
{
    AIMSI_TRY(check_predict(m, what, x, rows, cols, out));
    const size_t k = aims_model_output_dim(m);
    size_t need = 0;
    if (aimsi_mul_ok(rows, k, &need) != 0 || out_cap < need) {
        return aimsi_err(NULL, AIMS_E_RANGE, "predict: out_cap %zu < %zu rows x %zu", out_cap,
                         rows, k);
    }
    if (m->kind != AIMS_MODEL_KIND_LOGISTIC) {
        /* the caller's buffer holds the raw scores directly, chunk by chunk; a
         * failure part-way would have written out, so allocate up front */
        float stack[STACK_SCRATCH];
        const size_t chunk = rows < PREDICT_CHUNK ? rows : PREDICT_CHUNK;
        const size_t sneed = aimsi_model_scratch_floats(m, chunk);
        float *scratch = stack;
        if (sneed > STACK_SCRATCH) {
            if (sneed == SIZE_MAX) {
                return aimsi_err(NULL, AIMS_E_RANGE, "predict: scratch size overflows");
            }
            scratch = aimsi_malloc(sneed * sizeof *scratch);
            if (scratch == NULL) {
                return aimsi_err(NULL, AIMS_E_NOMEM, "predict: out of memory for scratch");
            }
        }
        for (size_t r0 = 0; r0 < rows; r0 += chunk) {
            const size_t n = rows - r0 < chunk ? rows - r0 : chunk;
            aimsi_model_forward(m, x + r0 * cols, n, scratch, out + r0 * k);
            finish_rows(m, what, out + r0 * k, n, out + r0 * k);
        }
        if (scratch != stack) {
            aimsi_free(scratch);
        }
        return AIMS_OK;
    }
    /* LOGISTIC: one raw value per row, expanded to two columns in place from
     * the back, so out doubles as the raw buffer. */
    for (size_t r0 = 0; r0 < rows; r0 += PREDICT_CHUNK) {
        const size_t n = rows - r0 < PREDICT_CHUNK ? rows - r0 : PREDICT_CHUNK;
        AIMSI_TRY(forward_rows(m, x + r0 * cols, n, out + r0 * 2));
        finish_rows(m, what, out + r0 * 2, n, out + r0 * 2);
    }
    return AIMS_OK;
}

static int32_t argmax(const float *v, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return (int32_t)best;
}

aims_status aims_model_predict_class(const aims_model *m, const float *x, size_t rows,
                                     size_t cols, int32_t *out, size_t out_cap)
{
    AIMSI_TRY(check_predict(m, AIMS_OUT_SCORES, x, rows, cols, out));
    if (!aimsi_model_is_classifier(m)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict_class: a regression model has no classes");
    }
    if (out_cap < rows) {
        return aimsi_err(NULL, AIMS_E_RANGE, "predict_class: out_cap %zu < rows %zu", out_cap,
                         rows);
    }
    const size_t k = m->layers[m->n_layers - 1].out;
    float stack[256];
    const size_t chunk = k <= 256 ? 256 / k : 1;
    float *raw = stack;
    size_t per = chunk;
    if (rows > chunk) {
        per = rows < PREDICT_CHUNK ? rows : PREDICT_CHUNK;
        raw = aimsi_malloc(per * k * sizeof *raw);
        if (raw == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "predict_class: out of memory");
        }
    }
    aims_status rc = AIMS_OK;
    for (size_t r0 = 0; r0 < rows && rc == AIMS_OK; r0 += per) {
        const size_t n = rows - r0 < per ? rows - r0 : per;
        rc = forward_rows(m, x + r0 * cols, n, raw);
        for (size_t r = 0; r < n && rc == AIMS_OK; r++) {
            out[r0 + r] = k == 1 ? (raw[r] >= 0.0f ? 1 : 0) : argmax(raw + r * k, k);
        }
    }
    if (raw != stack) {
        aimsi_free(raw);
    }
    return rc;
}

/* ---- TEXT -------------------------------------------------------------------------------- */

/* Token rows are scattered over a table far larger than the caches, so the
 * embedding bag is bound by memory latency, not arithmetic: ask for the rows
 * of tokens TEXT_PREFETCH ahead while summing the current one (measured: the
 * bag dominated a text_linear training profile before this). */
#define TEXT_PREFETCH 8

static void prefetch_row(const float *v, size_t floats)
{
#if defined(__GNUC__) || defined(__clang__)
    const char *p = (const char *)v;
    for (size_t off = 0; off < floats * sizeof *v; off += 64) {
        __builtin_prefetch(p + off);
    }
#else
    (void)v;
    (void)floats;
#endif
}

void aimsi_text_hidden(const aims_model *m, const aims_dataset *ds, size_t row, float *h)
{
    const size_t e = m->embed_dim;
    const uint64_t b = ds->tok_off[row];
    const uint64_t end = ds->tok_off[row + 1];
    memset(h, 0, e * sizeof *h);
    if (end == b) {
        return;
    }
    const float *emb = m->params + m->emb_off;
    for (uint64_t k = b; k < end && k < b + TEXT_PREFETCH; k++) {
        prefetch_row(emb + (size_t)ds->tok_ids[k] * e, e);
    }
    for (uint64_t k = b; k < end; k++) {
        if (k + TEXT_PREFETCH < end) {
            prefetch_row(emb + (size_t)ds->tok_ids[k + TEXT_PREFETCH] * e, e);
        }
        const float w = ds->tok_w != NULL ? ds->tok_w[k] : 1.0f;
        const float *v = emb + (size_t)ds->tok_ids[k] * e;
        for (size_t j = 0; j < e; j++) {
            h[j] += w * v[j];
        }
    }
    const float inv = aimsi_text_pool_scale(m, end - b);
    for (size_t j = 0; j < e; j++) {
        h[j] *= inv;
    }
}

float aimsi_text_pool_scale(const aims_model *m, uint64_t n_tokens)
{
    return m->text_linear || n_tokens == 0 ? 1.0f : 1.0f / (float)n_tokens;
}

void aimsi_text_logits(const aims_model *m, const float *h, float *z)
{
    const aimsi_dense *L = &m->layers[0];
    const float *w = m->params + L->w_off;
    const float *b = m->params + L->b_off;
    if (m->text_linear) {
        for (size_t o = 0; o < L->out; o++) {
            z[o] = h[o] + b[o];
        }
        return;
    }
    for (size_t o = 0; o < L->out; o++) {
        const float *wr = w + o * L->in;
        float s = 0.0f;
        for (size_t j = 0; j < L->in; j++) {
            s += wr[j] * h[j];
        }
        z[o] = s + b[o];
    }
}

aims_status aimsi_text_check(const aims_model *m, const aims_dataset *ds)
{
    if (ds->tok_off == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "TEXT model: the dataset has no token part");
    }
    if (ds->tok_dim > m->input_dim) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "TEXT model: token ids up to %zu, model takes ids below %zu",
                         ds->tok_dim, m->input_dim);
    }
    return AIMS_OK;
}

static aims_status predict_text(const aims_model *m, aims_output what, const aims_dataset *ds,
                                float *out, size_t out_cap)
{
    if (!m->trained || m->params == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "predict: the model is not trained");
    }
    AIMSI_TRY(aimsi_text_check(m, ds));
    if (what != AIMS_OUT_SCORES && what != AIMS_OUT_PROBA) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict: unknown output %d", (int)what);
    }
    const size_t k = m->output_dim;
    size_t need = 0;
    if (aimsi_mul_ok(ds->rows, k, &need) != 0 || out_cap < need) {
        return aimsi_err(NULL, AIMS_E_RANGE, "predict: out_cap %zu < %zu rows x %zu", out_cap,
                         ds->rows, k);
    }
    float h[TEXT_MAX_WIDTH]; /* embed_dim <= 4096 (parameter bound; text_linear: checked) */
    for (size_t r = 0; r < ds->rows; r++) {
        aimsi_text_hidden(m, ds, r, h);
        aimsi_text_logits(m, h, out + r * k);
        finish_rows(m, what, out + r * k, 1, out + r * k);
    }
    return AIMS_OK;
}

aims_status aims_model_predict_dataset(const aims_model *m, aims_output what,
                                       const aims_dataset *ds, float *out, size_t out_cap)
{
    if (!MODEL_OK(m) || !aimsi_obj_ok(ds, AIMSI_MAGIC_DATASET) || out == NULL) {
        return AIMSI_MISUSE("invalid model/dataset handle or NULL out");
    }
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        return predict_text(m, what, ds, out, out_cap);
    }
    if (ds->x == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict_dataset: the dataset has no dense part");
    }
    return aims_model_predict(m, what, ds->x, ds->rows, ds->cols, out, out_cap);
}
