/*
 * model.c -- the model object: structure, parameters, accessors and clone.
 * Predict lives in model_predict.c, the file format in model_file.c.
 *
 * A model is a stack of dense layers over one contiguous float block (see
 * aimsi_model.h). Its life has two phases: configuration (add_dense,
 * set_param) and then "finalized", when aimsi_model_finalize() has fixed the
 * layer shapes and allocated the parameters. Predict and evaluate only read
 * the model, so any number of threads may run them at once; they never touch
 * shared scratch: small batches use a stack buffer (the single-row path does
 * not allocate at all) and larger ones allocate their own.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "aimsi_modelobj.h"
#include "aimsi_quant.h"

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
    if (kind < AIMS_MODEL_KIND_LINEAR || kind > AIMS_MODEL_KIND_TEXT) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_model_create: unknown kind %d", (int)kind);
    }
    if (input_dim == 0 || output_dim == 0 || input_dim > MAX_DIM || output_dim > MAX_DIM) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_model_create: input_dim %zu / output_dim %zu outside [1, %zu]",
                         input_dim, output_dim, MAX_DIM);
    }
    if (kind == AIMS_MODEL_KIND_LOGISTIC && output_dim != 1) {
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
    if (m->kind != AIMS_MODEL_KIND_MLP) {
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
int aimsi_model_resolve_loss(const aims_model *m)
{
    if (m->kind == AIMS_MODEL_KIND_LINEAR) {
        return 2;
    }
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        return m->loss_param == 3 ? 3 : 1;
    }
    if (m->kind == AIMS_MODEL_KIND_MLP && m->loss_param != 0) {
        return m->loss_param;
    }
    if (m->kind == AIMS_MODEL_KIND_MLP && m->loss != 0) {
        return m->loss; /* auto, resolved from the training data by the trainer */
    }
    return 1;
}

aims_status aimsi_model_finalize(aims_model *m)
{
    if (m->params != NULL) {
        return AIMS_OK;
    }
    size_t n_hidden = m->kind == AIMS_MODEL_KIND_MLP ? m->n_layers : 0;
    size_t total = 0;
    size_t in = m->input_dim;
    size_t width = m->embed_dim;
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
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
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        m->embed_dim = width;
    }
    m->params = p;
    m->n_params = total;
    m->loss = aimsi_model_resolve_loss(m);
    return AIMS_OK;
}

static int is_structural(aims_param param)
{
    return param == AIMS_MODEL_LOSS || param == AIMS_MODEL_EMBED_DIM ||
           param == AIMS_MODEL_TEXT_LINEAR;
}

/* Where each model parameter lives in the model (core/params.c does the typed access). */
static const aimsi_param_field k_model_fields[] = {
    {AIMS_MODEL_LOSS, AIMSI_FIELD_INT, offsetof(aims_model, loss_param)},
    {AIMS_MODEL_TEXT_LINEAR, AIMSI_FIELD_INT, offsetof(aims_model, text_linear)},
    {AIMS_MODEL_EMBED_DIM, AIMSI_FIELD_SIZE, offsetof(aims_model, embed_dim)},
    {AIMS_MODEL_THREADS, AIMSI_FIELD_INT, offsetof(aims_model, threads)},
    {AIMS_MODEL_PRECISION, AIMSI_FIELD_INT, offsetof(aims_model, precision)},
    {AIMS_MODEL_DROPOUT, AIMSI_FIELD_F64, offsetof(aims_model, dropout)},
};
static const aimsi_param_map k_model_map = {400, 499, k_model_fields,
                                            sizeof k_model_fields / sizeof k_model_fields[0]};

aims_status aims_model_set_param_i64(aims_model *m, aims_param param, int64_t value)
{
    if (!MODEL_OK(m)) {
        return AIMSI_MISUSE("m is not a valid aims_model handle");
    }
    const aimsi_param_field *f = NULL;
    AIMSI_TRY(aimsi_param_field_of(&m->obj, &k_model_map, param, AIMS_PARAM_TYPE_I64, (double)value,
                                   &f));
    if (is_structural(param) && m->params != NULL) {
        return aimsi_err(&m->obj, AIMS_E_STATE,
                         "aims_model_set_param: parameter %d is structural and the model "
                         "structure is final",
                         (int)param);
    }
    if ((param == AIMS_MODEL_TEXT_LINEAR || (param == AIMS_MODEL_LOSS && value == 3)) &&
        m->kind != AIMS_MODEL_KIND_TEXT) {
        return aimsi_err(&m->obj, AIMS_E_INVAL,
                         "aims_model_set_param: parameter %d = %lld is for TEXT models only",
                         (int)param, (long long)value);
    }
    aimsi_param_store(m, f, value, 0.0);
    return AIMS_OK;
}

aims_status aims_model_set_param_f64(aims_model *m, aims_param param, double value)
{
    if (!MODEL_OK(m)) {
        return AIMSI_MISUSE("m is not a valid aims_model handle");
    }
    const aimsi_param_field *f = NULL;
    AIMSI_TRY(aimsi_param_field_of(&m->obj, &k_model_map, param, AIMS_PARAM_TYPE_F64, value, &f));
    aimsi_param_store(m, f, 0, value);
    return AIMS_OK;
}

aims_status aims_model_get_param_i64(const aims_model *m, aims_param param, int64_t *out_value)
{
    if (!MODEL_OK(m) || out_value == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL out_value");
    }
    return aimsi_param_get(&k_model_map, m, param, AIMS_PARAM_TYPE_I64, out_value, NULL);
}

aims_status aims_model_get_param_f64(const aims_model *m, aims_param param, double *out_value)
{
    if (!MODEL_OK(m) || out_value == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL out_value");
    }
    return aimsi_param_get(&k_model_map, m, param, AIMS_PARAM_TYPE_F64, NULL, out_value);
}

aims_model_kind aims_model_kind_of(const aims_model *m)
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
    return m->kind == AIMS_MODEL_KIND_LOGISTIC ? 2 : m->output_dim;
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
        d->qw = aimsi_malloc(aimsi_q8_qw_bytes(s->in, s->out)); /* matrix + panels */
        d->wscale = aimsi_malloc(s->out * sizeof *d->wscale);
        d->qwsum = aimsi_malloc(s->out * sizeof *d->qwsum);
        if (d->qw == NULL || d->wscale == NULL || d->qwsum == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_clone: out of memory");
        }
        memcpy(d->qw, s->qw, aimsi_q8_qw_bytes(s->in, s->out));
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
