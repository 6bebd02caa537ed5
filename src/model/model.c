/*
 * model.c -- the model object: structure, parameters, forward pass, predict,
 * files.
 *
 * A model is a stack of dense layers over one contiguous float block (see
 * aimsi_model.h). Its life has two phases: configuration (add_dense,
 * set_param) and then "finalized", when aimsi_model_finalize() has fixed the
 * layer shapes and allocated the parameters. Predict and evaluate only read
 * the model, so any number of threads may run them at once; they never touch
 * shared scratch: small batches use a stack buffer (the single-row path does
 * not allocate at all) and larger ones allocate their own.
 *
 * Files. A model is one container (kind MODEL) with a header section 'MHDR'
 * (kind, dims, every layer's shape and activation, parameters, flags), the
 * float parameters 'MPRM' and, for int8 models, 'QDNS'. The reader treats all
 * of it as hostile: every count is capped before it sizes anything, the layer
 * chain must be consistent, and the model is rebuilt through the same
 * create/add/finalize calls a user makes, so a loaded model obeys exactly the
 * invariants of a constructed one.
 */
#include <math.h>
#include <string.h>

#include "aimsi_model.h"

/* A model file stores its kind as the aims_model_kind number (read back by a
 * cast in the header decoder), so these values are a file format too. */
_Static_assert(AIMS_MODEL_LINEAR == 1 && AIMS_MODEL_LOGISTIC == 2 && AIMS_MODEL_SOFTMAX == 3 &&
                   AIMS_MODEL_MLP == 4 && AIMS_MODEL_TEXT == 5,
               "aims_model_kind values are .aimsm file codes: never renumber");

#define MODEL_OK(m) aimsi_obj_ok((m), AIMSI_MAGIC_MODEL)
#define MAX_DIM ((size_t)1 << 24)           /* any one width */
#define MAX_PARAMS ((size_t)1 << 28)        /* 1 GiB of floats */
#define STACK_SCRATCH 8192                  /* floats; single-row predict */
#define TAG_MHDR AIMSI_TAG('M', 'H', 'D', 'R')
#define TAG_MPRM AIMSI_TAG('M', 'P', 'R', 'M')
#define TAG_QDNS AIMSI_TAG('Q', 'D', 'N', 'S')
/* Header version 2 = version 1 + a u32 text_linear after `precision`. Models
 * with text_linear 0 are still written as version 1, so their files stay
 * byte-identical to (and readable by) earlier builds. */
#define HDR_VERSION 1u
#define HDR_VERSION_TEXT_LINEAR 2u
#define TEXT_MAX_WIDTH 4096 /* widest TEXT hidden vector: predict keeps it on the stack */

/* ---- activations ------------------------------------------------------------------- */

void aimsi_act_apply(aims_activation act, float *v, size_t n)
{
    switch (act) {
    case AIMS_ACT_RELU:
        for (size_t i = 0; i < n; i++) {
            v[i] = v[i] > 0.0f ? v[i] : 0.0f;
        }
        break;
    case AIMS_ACT_GELU:
        for (size_t i = 0; i < n; i++) {
            const float x = v[i];
            const float u = 0.7978845608f * (x + 0.044715f * x * x * x);
            v[i] = 0.5f * x * (1.0f + tanhf(u));
        }
        break;
    case AIMS_ACT_TANH:
        for (size_t i = 0; i < n; i++) {
            v[i] = tanhf(v[i]);
        }
        break;
    case AIMS_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) {
            v[i] = 1.0f / (1.0f + expf(-v[i]));
        }
        break;
    case AIMS_ACT_NONE:
    default:
        break;
    }
}

/* ---- create / destroy / configure ----------------------------------------------------- */

aims_status aims_model_create(aims_model_kind kind, size_t input_dim, size_t output_dim,
                              aims_model **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    if (kind < AIMS_MODEL_LINEAR || kind > AIMS_MODEL_TEXT) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_model_create: unknown kind %d", (int)kind);
    }
    if (input_dim == 0 || output_dim == 0 || input_dim > MAX_DIM || output_dim > MAX_DIM) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_model_create: input_dim %zu / output_dim %zu outside [1, %zu]",
                         input_dim, output_dim, MAX_DIM);
    }
    if (kind == AIMS_MODEL_LOGISTIC && output_dim != 1) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_model_create: LOGISTIC needs output_dim 1, got %zu", output_dim);
    }
    aims_model *m = aimsi_calloc(1, sizeof *m);
    if (m == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_create: out of memory");
    }
    aimsi_obj_init(&m->obj, AIMSI_MAGIC_MODEL);
    m->kind = kind;
    m->input_dim = input_dim;
    m->output_dim = output_dim;
    m->embed_dim = (size_t)aimsi_param_default(AIMS_MODEL_EMBED_DIM);
    m->dropout = aimsi_param_default(AIMS_MODEL_DROPOUT);
    m->loss_param = (int)aimsi_param_default(AIMS_MODEL_LOSS);
    m->threads = (int)aimsi_param_default(AIMS_MODEL_THREADS);
    m->precision = (int)aimsi_param_default(AIMS_MODEL_PRECISION);
    m->text_linear = (int)aimsi_param_default(AIMS_MODEL_TEXT_LINEAR);
    *out = m;
    return AIMS_OK;
}

static void free_q8(aims_model *m)
{
    for (size_t i = 0; i < AIMSI_MAX_LAYERS; i++) {
        aimsi_free(m->layers[i].qw);
        aimsi_free(m->layers[i].wscale);
        aimsi_free(m->layers[i].qwsum);
        m->layers[i].qw = NULL;
        m->layers[i].wscale = NULL;
        m->layers[i].qwsum = NULL;
    }
}

void aims_model_destroy(aims_model *m)
{
    if (!MODEL_OK(m)) {
        return;
    }
    free_q8(m);
    aimsi_free(m->params);
    aimsi_obj_kill(&m->obj);
    aimsi_free(m);
}

aims_status aims_model_add_dense(aims_model *m, size_t units, aims_activation act)
{
    if (!MODEL_OK(m)) {
        return AIMSI_MISUSE("m is not a valid aims_model handle");
    }
    if (m->kind != AIMS_MODEL_MLP) {
        return aimsi_err(&m->obj, AIMS_E_INVAL, "aims_model_add_dense: only MLP models have "
                                                "hidden layers");
    }
    if (units == 0 || units > MAX_DIM) {
        return aimsi_err(&m->obj, AIMS_E_INVAL, "aims_model_add_dense: units %zu outside [1, %zu]",
                         units, MAX_DIM);
    }
    if (act < AIMS_ACT_NONE || act > AIMS_ACT_SIGMOID) {
        return aimsi_err(&m->obj, AIMS_E_INVAL, "aims_model_add_dense: unknown activation %d",
                         (int)act);
    }
    if (m->params != NULL) {
        return aimsi_err(&m->obj, AIMS_E_STATE,
                         "aims_model_add_dense: the structure is final (trained or loaded)");
    }
    if (m->n_layers + 1 >= AIMSI_MAX_LAYERS) {
        return aimsi_err(&m->obj, AIMS_E_RANGE, "aims_model_add_dense: more than %d layers",
                         AIMSI_MAX_LAYERS - 1);
    }
    aimsi_dense *L = &m->layers[m->n_layers++];
    memset(L, 0, sizeof *L);
    L->out = units;
    L->act = act;
    return AIMS_OK;
}

/* Loss the model trains with: 1 cross-entropy, 2 MSE, 3 hinge (TEXT only, which
 * aims_model_set_param enforces). */
static int resolve_loss(const aims_model *m)
{
    if (m->kind == AIMS_MODEL_LINEAR) {
        return 2;
    }
    if (m->kind == AIMS_MODEL_TEXT) {
        return m->loss_param == 3 ? 3 : 1;
    }
    if (m->kind == AIMS_MODEL_MLP && m->loss_param != 0) {
        return m->loss_param;
    }
    if (m->kind == AIMS_MODEL_MLP && m->loss != 0) {
        return m->loss; /* auto, resolved from the training data by the trainer */
    }
    return 1;
}

aims_status aimsi_model_finalize(aims_model *m)
{
    if (m->params != NULL) {
        return AIMS_OK;
    }
    size_t n_hidden = m->kind == AIMS_MODEL_MLP ? m->n_layers : 0;
    size_t total = 0;
    size_t in = m->input_dim;
    size_t width = m->embed_dim;
    if (m->kind == AIMS_MODEL_TEXT) {
        if (m->text_linear) {
            /* one weight per token and class: the "embedding" is the score row */
            if (m->output_dim > TEXT_MAX_WIDTH) {
                return aimsi_err(&m->obj, AIMS_E_RANGE,
                                 "model: text_linear takes at most %d classes, got %zu",
                                 TEXT_MAX_WIDTH, m->output_dim);
            }
            width = m->output_dim;
        }
        size_t emb = 0;
        if (aimsi_mul_ok(m->input_dim, width, &emb) != 0 || emb > MAX_PARAMS) {
            return aimsi_err(&m->obj, AIMS_E_RANGE, "model: embedding table %zu x %zu too large",
                             m->input_dim, width);
        }
        total = emb;
        in = width;
    }
    /* shapes first, into a copy, so a failure leaves the model unchanged */
    aimsi_dense shapes[AIMSI_MAX_LAYERS];
    memset(shapes, 0, sizeof shapes);
    for (size_t i = 0; i <= n_hidden; i++) {
        aimsi_dense *L = &shapes[i];
        L->in = in;
        L->out = i < n_hidden ? m->layers[i].out : m->output_dim;
        L->act = i < n_hidden ? m->layers[i].act : AIMS_ACT_NONE;
        size_t w = 0;
        if (aimsi_mul_ok(L->in, L->out, &w) != 0 || w > MAX_PARAMS ||
            total > MAX_PARAMS - w - L->out) {
            return aimsi_err(&m->obj, AIMS_E_RANGE, "model: more than %zu parameters",
                             MAX_PARAMS);
        }
        L->w_off = total;
        L->b_off = total + w;
        total += w + L->out;
        in = L->out;
    }
    /* advise huge pages BEFORE the first touch: a TEXT embedding table can be
     * hundreds of MB, and 4 KiB page faults would cost more than zeroing it */
    float *p = aimsi_malloc(total * sizeof *p);
    if (p == NULL) {
        return aimsi_err(&m->obj, AIMS_E_NOMEM, "model: out of memory for %zu parameters",
                         total);
    }
    aimsi_hint_hugepages(p, total * sizeof *p);
    memset(p, 0, total * sizeof *p);
    memcpy(m->layers, shapes, sizeof shapes);
    m->n_layers = n_hidden + 1;
    m->emb_off = 0;
    if (m->kind == AIMS_MODEL_TEXT) {
        m->embed_dim = width;
    }
    m->params = p;
    m->n_params = total;
    m->loss = resolve_loss(m);
    return AIMS_OK;
}

static int is_structural(aims_param param)
{
    return param == AIMS_MODEL_LOSS || param == AIMS_MODEL_EMBED_DIM ||
           param == AIMS_MODEL_TEXT_LINEAR;
}

aims_status aims_model_set_param_i64(aims_model *m, aims_param param, int64_t value)
{
    if (!MODEL_OK(m)) {
        return AIMSI_MISUSE("m is not a valid aims_model handle");
    }
    AIMSI_TRY(aimsi_param_check(&m->obj, param, 400, 499, AIMS_PARAM_I64, (double)value));
    if (is_structural(param) && m->params != NULL) {
        return aimsi_err(&m->obj, AIMS_E_STATE,
                         "aims_model_set_param: parameter %d is structural and the model "
                         "structure is final",
                         (int)param);
    }
    if ((param == AIMS_MODEL_TEXT_LINEAR || (param == AIMS_MODEL_LOSS && value == 3)) &&
        m->kind != AIMS_MODEL_TEXT) {
        return aimsi_err(&m->obj, AIMS_E_INVAL,
                         "aims_model_set_param: parameter %d = %lld is for TEXT models only",
                         (int)param, (long long)value);
    }
    switch (param) {
    case AIMS_MODEL_LOSS:
        m->loss_param = (int)value;
        break;
    case AIMS_MODEL_TEXT_LINEAR:
        m->text_linear = (int)value;
        break;
    case AIMS_MODEL_EMBED_DIM:
        m->embed_dim = (size_t)value;
        break;
    case AIMS_MODEL_THREADS:
        m->threads = (int)value;
        break;
    case AIMS_MODEL_PRECISION:
        m->precision = (int)value;
        break;
    default:
        return aimsi_err(&m->obj, AIMS_E_UNSUPPORTED, "aims_model_set_param: %d", (int)param);
    }
    return AIMS_OK;
}

aims_status aims_model_set_param_f64(aims_model *m, aims_param param, double value)
{
    if (!MODEL_OK(m)) {
        return AIMSI_MISUSE("m is not a valid aims_model handle");
    }
    AIMSI_TRY(aimsi_param_check(&m->obj, param, 400, 499, AIMS_PARAM_F64, value));
    if (param != AIMS_MODEL_DROPOUT) {
        return aimsi_err(&m->obj, AIMS_E_UNSUPPORTED, "aims_model_set_param: %d", (int)param);
    }
    m->dropout = value;
    return AIMS_OK;
}

aims_status aims_model_get_param_i64(const aims_model *m, aims_param param, int64_t *out_value)
{
    if (!MODEL_OK(m) || out_value == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL out_value");
    }
    AIMSI_TRY(aimsi_param_check(NULL, param, 400, 499, AIMS_PARAM_I64,
                                aimsi_param_default(param)));
    switch (param) {
    case AIMS_MODEL_LOSS:
        *out_value = m->loss_param;
        break;
    case AIMS_MODEL_EMBED_DIM:
        *out_value = (int64_t)m->embed_dim;
        break;
    case AIMS_MODEL_THREADS:
        *out_value = m->threads;
        break;
    case AIMS_MODEL_TEXT_LINEAR:
        *out_value = m->text_linear;
        break;
    default:
        *out_value = m->precision;
        break;
    }
    return AIMS_OK;
}

aims_status aims_model_get_param_f64(const aims_model *m, aims_param param, double *out_value)
{
    if (!MODEL_OK(m) || out_value == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL out_value");
    }
    AIMSI_TRY(aimsi_param_check(NULL, param, 400, 499, AIMS_PARAM_F64,
                                aimsi_param_default(param)));
    *out_value = m->dropout;
    return AIMS_OK;
}

aims_model_kind aims_model_get_kind(const aims_model *m)
{
    return MODEL_OK(m) ? m->kind : (aims_model_kind)0;
}

size_t aims_model_input_dim(const aims_model *m)
{
    return MODEL_OK(m) ? m->input_dim : 0;
}

size_t aims_model_output_dim(const aims_model *m)
{
    if (!MODEL_OK(m)) {
        return 0;
    }
    return m->kind == AIMS_MODEL_LOGISTIC ? 2 : m->output_dim;
}

size_t aims_model_num_params(const aims_model *m)
{
    return MODEL_OK(m) ? m->n_params : 0;
}

int aims_model_is_trained(const aims_model *m)
{
    return MODEL_OK(m) && m->trained;
}

int aims_model_is_quantized(const aims_model *m)
{
    return MODEL_OK(m) && m->quantized;
}

const char *aims_model_errmsg(const aims_model *m)
{
    return MODEL_OK(m) ? m->obj.errmsg : "";
}

/* ---- forward ---------------------------------------------------------------------------- */

static size_t widest(const aims_model *m)
{
    size_t w = m->kind == AIMS_MODEL_TEXT ? m->embed_dim : m->input_dim;
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

static void softmax_row(float *v, size_t n)
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
    const float inv = 1.0f / s;
    for (size_t i = 0; i < n; i++) {
        v[i] *= inv;
    }
}

int aimsi_model_is_classifier(const aims_model *m)
{
    const int loss = resolve_loss(m);
    return m->kind != AIMS_MODEL_LINEAR && (loss == 1 || loss == 3);
}

size_t aimsi_model_classes(const aims_model *m)
{
    return m->kind == AIMS_MODEL_LOGISTIC ? 2 : m->output_dim;
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
    if (m->kind == AIMS_MODEL_TEXT) {
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
    if (m->kind == AIMS_MODEL_LOGISTIC) {
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
    if (m->kind != AIMS_MODEL_LOGISTIC) {
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
    if (m->kind == AIMS_MODEL_TEXT) {
        return predict_text(m, what, ds, out, out_cap);
    }
    if (ds->x == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "predict_dataset: the dataset has no dense part");
    }
    return aims_model_predict(m, what, ds->x, ds->rows, ds->cols, out, out_cap);
}

/* ---- clone -------------------------------------------------------------------------------- */

static aims_status clone_q8(const aims_model *src, aims_model *dst)
{
    for (size_t i = 0; i < src->n_layers; i++) {
        const aimsi_dense *s = &src->layers[i];
        aimsi_dense *d = &dst->layers[i];
        d->qw = NULL;
        d->wscale = NULL;
        d->qwsum = NULL;
        if (s->qw == NULL) {
            continue;
        }
        d->qw = aimsi_malloc(s->in * s->out);
        d->wscale = aimsi_malloc(s->out * sizeof *d->wscale);
        d->qwsum = aimsi_malloc(s->out * sizeof *d->qwsum);
        if (d->qw == NULL || d->wscale == NULL || d->qwsum == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_clone: out of memory");
        }
        memcpy(d->qw, s->qw, s->in * s->out);
        memcpy(d->wscale, s->wscale, s->out * sizeof *d->wscale);
        memcpy(d->qwsum, s->qwsum, s->out * sizeof *d->qwsum);
    }
    return AIMS_OK;
}

aims_status aims_model_clone(const aims_model *m, aims_model **out)
{
    if (!MODEL_OK(m) || out == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL out");
    }
    aims_model *c = aimsi_malloc(sizeof *c);
    if (c == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_clone: out of memory");
    }
    memcpy(c, m, sizeof *c);
    c->params = NULL;
    for (size_t i = 0; i < AIMSI_MAX_LAYERS; i++) {
        c->layers[i].qw = NULL;
        c->layers[i].wscale = NULL;
        c->layers[i].qwsum = NULL;
    }
    c->obj.errmsg[0] = '\0';
    aims_status rc = AIMS_OK;
    if (m->params != NULL) {
        c->params = aimsi_malloc(m->n_params * sizeof *c->params);
        if (c->params == NULL) {
            rc = aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_clone: out of memory");
        } else {
            memcpy(c->params, m->params, m->n_params * sizeof *c->params);
        }
    }
    if (rc == AIMS_OK) {
        rc = clone_q8(m, c);
    }
    if (rc != AIMS_OK) {
        aims_model_destroy(c);
        return rc;
    }
    *out = c;
    return AIMS_OK;
}

/* ---- files -------------------------------------------------------------------------------- */

static aims_status put_u64(aimsi_buf *b, uint64_t v)
{
    return aimsi_buf_put_u64le(b, v);
}

static aims_status write_header(const aims_model *m, aimsi_buf *b)
{
    AIMSI_TRY(aimsi_buf_put_u32le(b, m->text_linear ? HDR_VERSION_TEXT_LINEAR : HDR_VERSION));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->kind));
    AIMSI_TRY(put_u64(b, m->input_dim));
    AIMSI_TRY(put_u64(b, m->output_dim));
    AIMSI_TRY(put_u64(b, m->embed_dim));
    AIMSI_TRY(aimsi_buf_put_f64le(b, m->dropout));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->loss_param));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->loss));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->threads));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->precision));
    if (m->text_linear) {
        AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->text_linear));
    }
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)(m->trained ? 1 : 0)));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)(m->quantized ? 1 : 0)));
    AIMSI_TRY(put_u64(b, m->n_params));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->n_layers));
    for (size_t i = 0; i < m->n_layers; i++) {
        AIMSI_TRY(put_u64(b, m->layers[i].in));
        AIMSI_TRY(put_u64(b, m->layers[i].out));
        AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->layers[i].act));
    }
    return AIMS_OK;
}

static aims_status write_q8(const aims_model *m, aimsi_buf *b)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        const aimsi_dense *L = &m->layers[i];
        AIMSI_TRY(aimsi_buf_put_u8(b, L->qw != NULL ? 1 : 0));
        if (L->qw == NULL) {
            continue;
        }
        uint32_t bits = 0;
        memcpy(&bits, &L->xscale, sizeof bits);
        AIMSI_TRY(aimsi_buf_put_u32le(b, bits));
        for (size_t o = 0; o < L->out; o++) {
            memcpy(&bits, &L->wscale[o], sizeof bits);
            AIMSI_TRY(aimsi_buf_put_u32le(b, bits));
            AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)L->qwsum[o]));
        }
        AIMSI_TRY(aimsi_buf_append(b, L->qw, L->in * L->out));
    }
    return AIMS_OK;
}

aims_status aimsi_model_write(const aims_model *m, aimsi_cwriter *w)
{
    if (m->params == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "model write: the model has no structure yet");
    }
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = write_header(m, &b);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_MHDR, b.data, b.len);
    }
    if (rc == AIMS_OK) {
        /* floats are stored in host order; libaims supports little-endian hosts */
        rc = aimsi_cw_add(w, TAG_MPRM, m->params, m->n_params * sizeof *m->params);
    }
    if (rc == AIMS_OK && m->quantized) {
        b.len = 0;
        rc = write_q8(m, &b);
        if (rc == AIMS_OK) {
            rc = aimsi_cw_add(w, TAG_QDNS, b.data, b.len);
        }
    }
    aimsi_buf_free(&b);
    return rc;
}

#define RD(expr)                                                                       \
    do {                                                                               \
        if ((expr) != 0) {                                                             \
            return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: truncated at byte %zu", \
                             rd->pos);                                                 \
        }                                                                              \
    } while (0)

typedef struct hdr_info {
    uint32_t kind, loss, resolved, threads, precision, text_linear, trained, quantized, n_layers;
    uint64_t in, out, embed, n_params;
    double dropout;
    uint64_t lin[AIMSI_MAX_LAYERS], lout[AIMSI_MAX_LAYERS];
    uint32_t lact[AIMSI_MAX_LAYERS];
} hdr_info;

static aims_status read_header(aimsi_rd *rd, hdr_info *h)
{
    uint32_t version = 0;
    RD(aimsi_rd_u32le(rd, &version));
    if (version != HDR_VERSION && version != HDR_VERSION_TEXT_LINEAR) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "model header: version %u (expected %u or %u)",
                         version, HDR_VERSION, HDR_VERSION_TEXT_LINEAR);
    }
    RD(aimsi_rd_u32le(rd, &h->kind));
    RD(aimsi_rd_u64le(rd, &h->in));
    RD(aimsi_rd_u64le(rd, &h->out));
    RD(aimsi_rd_u64le(rd, &h->embed));
    RD(aimsi_rd_f64le(rd, &h->dropout));
    RD(aimsi_rd_u32le(rd, &h->loss));
    RD(aimsi_rd_u32le(rd, &h->resolved));
    RD(aimsi_rd_u32le(rd, &h->threads));
    RD(aimsi_rd_u32le(rd, &h->precision));
    h->text_linear = 0;
    if (version == HDR_VERSION_TEXT_LINEAR) {
        RD(aimsi_rd_u32le(rd, &h->text_linear));
    }
    RD(aimsi_rd_u32le(rd, &h->trained));
    RD(aimsi_rd_u32le(rd, &h->quantized));
    RD(aimsi_rd_u64le(rd, &h->n_params));
    RD(aimsi_rd_u32le(rd, &h->n_layers));
    if (h->n_layers == 0 || h->n_layers >= AIMSI_MAX_LAYERS) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: %u layers", h->n_layers);
    }
    for (uint32_t i = 0; i < h->n_layers; i++) {
        RD(aimsi_rd_u64le(rd, &h->lin[i]));
        RD(aimsi_rd_u64le(rd, &h->lout[i]));
        RD(aimsi_rd_u32le(rd, &h->lact[i]));
    }
    return AIMS_OK;
}

/* Rebuild the model from a header through the public construction calls, then
 * check that the result has exactly the stored shapes. */
static aims_status build_from_header(const hdr_info *h, aims_model **out)
{
    if (h->kind != AIMS_MODEL_MLP && h->n_layers != 1) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: kind %u with %u layers", h->kind,
                         h->n_layers);
    }
    if (h->in > MAX_DIM || h->out > MAX_DIM || h->embed == 0 || h->embed > 4096 ||
        h->loss > 3 || h->resolved < 1 || h->resolved > 3 || h->threads > 256 || h->precision > 1 || h->trained > 1 ||
        h->quantized > 1 || !(h->dropout >= 0.0 && h->dropout <= 0.99) || h->text_linear > 1) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: a field is out of range");
    }
    if (h->kind != AIMS_MODEL_TEXT && (h->text_linear != 0 || h->loss == 3 || h->resolved == 3)) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "model header: text_linear / hinge loss on a kind %u model", h->kind);
    }
    aims_model *m = NULL;
    aims_status rc = aims_model_create((aims_model_kind)h->kind, h->in, h->out, &m);
    if (rc == AIMS_E_INVAL) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: kind %u, dims %llu x %llu", h->kind,
                       (unsigned long long)h->in, (unsigned long long)h->out);
    }
    AIMSI_TRY(rc);
    m->embed_dim = (size_t)h->embed;
    m->loss_param = (int)h->loss;
    m->loss = (int)h->resolved;
    m->threads = (int)h->threads;
    m->precision = (int)h->precision;
    m->text_linear = (int)h->text_linear;
    m->dropout = h->dropout;
    for (uint32_t i = 0; i + 1 < h->n_layers && rc == AIMS_OK; i++) {
        rc = aims_model_add_dense(m, (size_t)h->lout[i], (aims_activation)h->lact[i]);
        if (rc != AIMS_OK && rc != AIMS_E_NOMEM) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: layer %u is invalid", i);
        }
    }
    if (rc == AIMS_OK) {
        rc = aimsi_model_finalize(m);
        if (rc == AIMS_E_RANGE) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: too many parameters");
        }
    }
    for (uint32_t i = 0; i < h->n_layers && rc == AIMS_OK; i++) {
        const aimsi_dense *L = &m->layers[i];
        if (L->in != h->lin[i] || L->out != h->lout[i] || (uint32_t)L->act != h->lact[i]) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: layer %u shape mismatch", i);
        }
    }
    if (rc == AIMS_OK && m->embed_dim != h->embed) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: embed_dim %llu does not fit the model",
                       (unsigned long long)h->embed);
    }
    if (rc == AIMS_OK && m->loss != (int)h->resolved) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: loss %u does not fit the model",
                       h->resolved);
    }
    if (rc == AIMS_OK && (m->n_layers != h->n_layers || m->n_params != h->n_params)) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: %llu parameters declared, "
                                             "structure has %zu",
                       (unsigned long long)h->n_params, m->n_params);
    }
    if (rc != AIMS_OK) {
        aims_model_destroy(m);
        return rc;
    }
    *out = m;
    return AIMS_OK;
}

static aims_status read_q8(aims_model *m, const uint8_t *p, size_t len)
{
    aimsi_rd rdv;
    aimsi_rd *rd = &rdv;
    aimsi_rd_init(rd, p, len);
    for (size_t i = 0; i < m->n_layers; i++) {
        aimsi_dense *L = &m->layers[i];
        uint8_t has = 0;
        RD(aimsi_rd_u8(rd, &has));
        if (has == 0) {
            continue;
        }
        uint32_t bits = 0;
        RD(aimsi_rd_u32le(rd, &bits));
        memcpy(&L->xscale, &bits, sizeof bits);
        /* the sizes below are bounded by the structure, already capped */
        if (aimsi_rd_left(rd) / 8 < L->out) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "model int8 layer %zu: truncated", i);
        }
        L->wscale = aimsi_malloc(L->out * sizeof *L->wscale);
        L->qwsum = aimsi_malloc(L->out * sizeof *L->qwsum);
        L->qw = aimsi_malloc(L->in * L->out);
        if (L->wscale == NULL || L->qwsum == NULL || L->qw == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "model load: out of memory");
        }
        for (size_t o = 0; o < L->out; o++) {
            uint32_t s = 0;
            uint32_t q = 0;
            RD(aimsi_rd_u32le(rd, &s));
            RD(aimsi_rd_u32le(rd, &q));
            memcpy(&L->wscale[o], &s, sizeof s);
            L->qwsum[o] = (int32_t)q;
            if (!isfinite(L->wscale[o])) {
                return aimsi_err(NULL, AIMS_E_CORRUPT, "model int8 layer %zu: bad scale", i);
            }
        }
        const uint8_t *q = NULL;
        RD(aimsi_rd_bytes(rd, L->in * L->out, &q));
        memcpy(L->qw, q, L->in * L->out);
        if (!isfinite(L->xscale) || L->xscale <= 0.0f) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "model int8 layer %zu: bad input scale", i);
        }
    }
    return AIMS_OK;
}

/* Takes ownership of prm (the decoded parameter section, n_params floats). */
static aims_status read_body(aimsi_creader *r, aims_model *m, uint32_t quantized, float *prm)
{
    void *p = NULL;
    size_t len = 0;
    aims_status rc = AIMS_OK;
    for (size_t i = 0; i < m->n_params; i++) {
        if (!isfinite(prm[i])) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model parameters: value %zu is not finite", i);
            break;
        }
    }
    /* adopt the decoded block instead of copying it (big TEXT tables) */
    aimsi_free(m->params);
    m->params = prm;
    if (rc != AIMS_OK || !quantized) {
        return rc;
    }
    size_t cap = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        cap += 5 + 8 * m->layers[i].out + m->layers[i].in * m->layers[i].out;
    }
    rc = aimsi_cr_section(r, TAG_QDNS, cap, &p, &len);
    if (rc == AIMS_OK) {
        rc = read_q8(m, p, len);
        m->quantized = 1;
    }
    aimsi_free(p);
    return rc;
}

aims_status aimsi_model_read(aimsi_creader *r, aims_model **out)
{
    void *p = NULL;
    size_t len = 0;
    aims_status rc = aimsi_cr_section(r, TAG_MHDR, 16384, &p, &len);
    if (rc != AIMS_OK) {
        return rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE
                   ? aimsi_err(NULL, AIMS_E_CORRUPT, "model: header section missing or too big")
                   : rc;
    }
    hdr_info h;
    memset(&h, 0, sizeof h);
    aimsi_rd rd;
    aimsi_rd_init(&rd, p, len);
    rc = read_header(&rd, &h);
    aimsi_free(p);
    AIMSI_TRY(rc);
    /* decode the parameters before building: the section's real size, not
     * the header's claim, decides whether a large table gets allocated */
    if (h.n_params == 0 || h.n_params > MAX_PARAMS) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: %llu parameters",
                         (unsigned long long)h.n_params);
    }
    const size_t want = (size_t)h.n_params * sizeof(float);
    p = NULL;
    rc = aimsi_cr_section(r, TAG_MPRM, want, &p, &len);
    if (rc == AIMS_OK && len != want) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model parameters: %zu bytes, expected %zu", len,
                       want);
    } else if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model: parameter section missing or too big");
    }
    if (rc != AIMS_OK) {
        aimsi_free(p);
        return rc;
    }
    aims_model *m = NULL;
    rc = build_from_header(&h, &m);
    if (rc != AIMS_OK) {
        aimsi_free(p);
        return rc;
    }
    rc = read_body(r, m, h.quantized, p);
    if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model: int8 section missing or wrong size");
    }
    if (rc != AIMS_OK) {
        aims_model_destroy(m);
        return rc;
    }
    m->trained = (int)h.trained;
    *out = m;
    return AIMS_OK;
}

aims_status aims_model_save(const aims_model *m, const char *path)
{
    if (!MODEL_OK(m) || path == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL path");
    }
    if (!m->trained) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_model_save: the model is not trained");
    }
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_MODEL, 0, &w));
    aims_status rc = aimsi_model_write(m, w);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_save(w, path);
    }
    aimsi_cw_destroy(w);
    return rc;
}

aims_status aims_model_parse(const void *data, size_t size, aims_model **out)
{
    if (data == NULL || out == NULL) {
        return AIMSI_MISUSE("data and out must not be NULL");
    }
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_mem(data, size, 0, AIMSI_KIND_MODEL, &r));
    aims_status rc = aimsi_model_read(r, out);
    aimsi_cr_destroy(r);
    return rc;
}

aims_status aims_model_load(const char *path, aims_model **out)
{
    if (path == NULL || out == NULL) {
        return AIMSI_MISUSE("path and out must not be NULL");
    }
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_file(path, (uint64_t)MAX_PARAMS * 8, AIMSI_KIND_MODEL, &r));
    aims_status rc = aimsi_model_read(r, out);
    aimsi_cr_destroy(r);
    return rc;
}
