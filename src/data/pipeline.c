/*
 * pipeline.c -- the aims_pipeline object: steps, parameters and fit/transform
 * dispatch. The file format lives in pipeline_file.c.
 *
 * How. A pipeline is a fixed array of at most AIMSI_MAX_STEPS steps (adding a
 * step never allocates). The first step decides the family (numeric or text);
 * text steps must follow [NORMALIZE] TOKENIZE [NGRAMS] HASH [TFIDF]. The same
 * rule function (aimsi_pipe_add_refusal) checks add() and the loader, so a
 * file can never describe a pipeline the API could not have built. Any
 * configuration change drops the fitted state: a fitted pipeline always
 * matches its parameters.
 *
 * The math lives in steps_num.c and steps_text.c; this file validates
 * arguments, owns the thread pool (created at fit/set/load time, never inside
 * a const transform, so concurrent transforms only share read-only state and
 * the pool, whose runs aimsi_pool_run serialises) and builds output datasets.
 */#include <math.h>
#include <string.h>

#include "aimsi_steps.h"


/* ---- step kinds and the parameters that apply to them ------------------------- */

int aimsi_pipe_is_num_kind(int k)
{
    return k >= AIMS_STEP_KIND_STANDARDIZE && k <= AIMS_STEP_KIND_SCALE;
}

static int is_text_kind(int k)
{
    return k >= AIMS_STEP_KIND_NORMALIZE && k <= AIMS_STEP_KIND_TFIDF;
}

#define KB(k) (1u << ((k) >= 20 ? (k) - 13 : (k)))
#define NUMERIC_KINDS                                                                     \
    (KB(AIMS_STEP_KIND_STANDARDIZE) | KB(AIMS_STEP_KIND_MINMAX) | KB(AIMS_STEP_KIND_IMPUTE) |              \
     KB(AIMS_STEP_KIND_CLIP) | KB(AIMS_STEP_KIND_ONEHOT) | KB(AIMS_STEP_KIND_SCALE))

/* Which step kinds each step parameter applies to (bit KB(kind)). */
static const unsigned k_applies[AIMSI_NSTEP_PARAMS] = {
    [AIMS_STEP_COL_BEGIN - 200] = NUMERIC_KINDS,
    [AIMS_STEP_COL_END - 200] = NUMERIC_KINDS,
    [AIMS_STEP_LOW - 200] = KB(AIMS_STEP_KIND_MINMAX) | KB(AIMS_STEP_KIND_CLIP),
    [AIMS_STEP_HIGH - 200] = KB(AIMS_STEP_KIND_MINMAX) | KB(AIMS_STEP_KIND_CLIP),
    [AIMS_STEP_STRATEGY - 200] = KB(AIMS_STEP_KIND_IMPUTE),
    [AIMS_STEP_VALUE - 200] = KB(AIMS_STEP_KIND_IMPUTE),
    [AIMS_STEP_FACTOR - 200] = KB(AIMS_STEP_KIND_SCALE),
    [AIMS_STEP_MAX_CATEGORIES - 200] = KB(AIMS_STEP_KIND_ONEHOT),
    [AIMS_STEP_LOWERCASE - 200] = KB(AIMS_STEP_KIND_NORMALIZE),
    [AIMS_STEP_MIN_TOKEN_LEN - 200] = KB(AIMS_STEP_KIND_TOKENIZE),
    [AIMS_STEP_NGRAM_MAX - 200] = KB(AIMS_STEP_KIND_NGRAMS),
    [AIMS_STEP_BUCKETS - 200] = KB(AIMS_STEP_KIND_HASH),
    [AIMS_STEP_SIGNED - 200] = KB(AIMS_STEP_KIND_HASH),
    [AIMS_STEP_SMOOTH_IDF - 200] = KB(AIMS_STEP_KIND_TFIDF),
    [AIMS_STEP_SUBLINEAR_TF - 200] = KB(AIMS_STEP_KIND_TFIDF),
    [AIMS_STEP_NORM - 200] = KB(AIMS_STEP_KIND_TFIDF),
    [AIMS_STEP_NONFINITE - 200] = NUMERIC_KINDS,
    [AIMS_STEP_PUNCT - 200] = KB(AIMS_STEP_KIND_TOKENIZE),
};

const char *aimsi_pipe_step_name(int k)
{
    static const char *const num[] = {"?", "standardize", "minmax", "impute",
                                      "clip", "onehot", "scale"};
    static const char *const text[] = {"normalize", "tokenize", "ngrams", "hash", "tfidf"};
    if (aimsi_pipe_is_num_kind(k)) {
        return num[k];
    }
    return is_text_kind(k) ? text[k - AIMS_STEP_KIND_NORMALIZE] : "unknown";
}

/* May a step of `kind` follow steps[0..n)? Returns NULL or the reason. */
const char *aimsi_pipe_add_refusal(const aimsi_step *steps, size_t n, int kind)
{
    if (!aimsi_pipe_is_num_kind(kind) && !is_text_kind(kind)) {
        return "unknown step kind";
    }
    if (n >= AIMSI_MAX_STEPS) {
        return "too many steps (cap 64)";
    }
    if (n > 0 && aimsi_pipe_is_num_kind(steps[0].kind) != aimsi_pipe_is_num_kind(kind)) {
        return "numeric and text steps cannot be mixed in one pipeline";
    }
    if (aimsi_pipe_is_num_kind(kind)) {
        return NULL;
    }
    int have_tok = 0;
    int have_hash = 0;
    for (size_t i = 0; i < n; i++) {
        have_tok |= steps[i].kind == AIMS_STEP_KIND_TOKENIZE;
        have_hash |= steps[i].kind == AIMS_STEP_KIND_HASH;
    }
    if (n > 0 && (int)steps[n - 1].kind >= kind) {
        return "text steps must come in the order [normalize] tokenize [ngrams] hash [tfidf], "
               "each once";
    }
    if (kind > AIMS_STEP_KIND_TOKENIZE && !have_tok) {
        return "tokenize must come before ngrams, hash and tfidf";
    }
    if (kind == AIMS_STEP_KIND_TFIDF && !have_hash) {
        return "hash must come before tfidf";
    }
    return NULL;
}

void aimsi_pipe_step_defaults(aimsi_step *s, aims_step_kind kind)
{
    *s = (aimsi_step){.kind = kind};
    for (int i = 0; i < AIMSI_NSTEP_PARAMS; i++) {
        s->pv[i] = aimsi_param_default((aims_param)(AIMS_STEP_COL_BEGIN + i));
    }
    if (kind == AIMS_STEP_KIND_CLIP) {
        s->pv[AIMS_STEP_LOW - 200] = -HUGE_VAL;
        s->pv[AIMS_STEP_HIGH - 200] = HUGE_VAL;
    }
}

void aimsi_step_clear(aimsi_step *s)
{
    aimsi_free(s->a);
    aimsi_free(s->b);
    aimsi_free(s->cat);
    aimsi_free(s->df);
    aimsi_free(s->idf);
    s->a = s->b = NULL;
    s->cat = NULL;
    s->df = NULL;
    s->idf = NULL;
    s->ndocs = 0;
    s->in_w = s->out_w = s->c0 = s->c1 = 0;
}

static void unfit(aims_pipeline *p)
{
    for (size_t k = 0; k < p->nsteps; k++) {
        aimsi_step_clear(&p->steps[k]);
    }
    p->fitted = 0;
    p->in_w = p->out_w = 0;
}

unsigned aimsi_pipe_nthreads(const aims_pipeline *p)
{
    return p->pool != NULL ? aimsi_pool_threads(p->pool) : 1u;
}

/* Make the pool match the threads parameter (exclusive-access calls only). */
aims_status aimsi_pipe_sync_pool(aims_pipeline *p)
{
    const unsigned want = p->threads == 0 ? aimsi_cpu_count() : (unsigned)p->threads;
    if (want <= 1) {
        aimsi_pool_destroy(p->pool);
        p->pool = NULL;
        return AIMS_OK;
    }
    if (p->pool != NULL && aimsi_pool_threads(p->pool) == want) {
        return AIMS_OK;
    }
    aimsi_pool *pool = NULL;
    const aims_status rc = aimsi_pool_create(want, &pool);
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&p->obj, rc);
    }
    aimsi_pool_destroy(p->pool);
    p->pool = pool;
    return AIMS_OK;
}

/* ---- lifecycle -------------------------------------------------------------------- */

aims_status aims_pipeline_create(aims_pipeline **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_pipeline *p = aimsi_calloc(1, sizeof *p);
    if (p == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_pipeline_create: no memory");
    }
    aimsi_obj_init(&p->obj, AIMSI_MAGIC_PIPELINE);
    p->threads = (int64_t)aimsi_param_default(AIMS_PIPELINE_THREADS);
    *out = p;
    return AIMS_OK;
}

void aims_pipeline_destroy(aims_pipeline *p)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE)) {
        return;
    }
    unfit(p);
    aimsi_pool_destroy(p->pool);
    aimsi_obj_kill(&p->obj);
    aimsi_free(p);
}

aims_status aims_pipeline_add(aims_pipeline *p, aims_step_kind kind, size_t *out_index)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE)) {
        return AIMSI_MISUSE("invalid pipeline handle");
    }
    const char *why = aimsi_pipe_add_refusal(p->steps, p->nsteps, (int)kind);
    if (why != NULL) {
        return aimsi_err(&p->obj, AIMS_E_INVAL, "cannot add step %d (%s) at index %zu: %s",
                         (int)kind, aimsi_pipe_step_name((int)kind), p->nsteps, why);
    }
    unfit(p);
    aimsi_pipe_step_defaults(&p->steps[p->nsteps], kind);
    p->family = aimsi_pipe_is_num_kind((int)kind) ? AIMSI_FAMILY_NUM : AIMSI_FAMILY_TEXT;
    if (out_index != NULL) {
        *out_index = p->nsteps;
    }
    p->nsteps++;
    return AIMS_OK;
}

/* ---- parameters ------------------------------------------------------------------- */

static aims_status step_param_ok(aimsi_obj *obj, const aims_pipeline *p, size_t step,
                                 aims_param param, aims_param_type type, double value)
{
    if (step >= p->nsteps) {
        return aimsi_err(obj, AIMS_E_RANGE, "no step %zu (pipeline has %zu)", step, p->nsteps);
    }
    AIMSI_TRY(aimsi_param_check(obj, param, AIMS_STEP_COL_BEGIN, AIMS_STEP_PUNCT, type,
                                value));
    const aimsi_step *s = &p->steps[step];
    if ((k_applies[param - AIMS_STEP_COL_BEGIN] & KB(s->kind)) == 0) {
        return aimsi_err(obj, AIMS_E_UNSUPPORTED, "parameter %s does not apply to step %zu (%s)",
                         aims_param_name(param), step, aimsi_pipe_step_name(s->kind));
    }
    return AIMS_OK;
}

static aims_status set_step(aims_pipeline *p, size_t step, aims_param param,
                            aims_param_type type, double value)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE)) {
        return AIMSI_MISUSE("invalid pipeline handle");
    }
    AIMSI_TRY(step_param_ok(&p->obj, p, step, param, type, value));
    unfit(p);
    p->steps[step].pv[param - AIMS_STEP_COL_BEGIN] = value;
    return AIMS_OK;
}

aims_status aims_pipeline_set_step_param_i64(aims_pipeline *p, size_t step, aims_param param,
                                                int64_t value)
{
    return set_step(p, step, param, AIMS_PARAM_TYPE_I64, (double)value);
}

aims_status aims_pipeline_set_step_param_f64(aims_pipeline *p, size_t step, aims_param param,
                                                double value)
{
    return set_step(p, step, param, AIMS_PARAM_TYPE_F64, value);
}

static aims_status get_step(const aims_pipeline *p, size_t step, aims_param param,
                            aims_param_type type, double *out)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) || out == NULL) {
        return AIMSI_MISUSE("invalid pipeline handle or NULL output");
    }
    aims_param_type t;
    double def;
    if (aims_param_info(param, &t, NULL, NULL, &def) != AIMS_OK) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "unknown parameter %d", (int)param);
    }
    /* check with the default value: reads validate kind and type, not bounds */
    AIMSI_TRY(step_param_ok(NULL, p, step, param, type, def));
    *out = p->steps[step].pv[param - AIMS_STEP_COL_BEGIN];
    return AIMS_OK;
}

aims_status aims_pipeline_get_step_param_i64(const aims_pipeline *p, size_t step,
                                                aims_param param, int64_t *out_value)
{
    double v = 0;
    AIMSI_TRY(get_step(p, step, param, AIMS_PARAM_TYPE_I64, out_value == NULL ? NULL : &v));
    *out_value = (int64_t)v;
    return AIMS_OK;
}

aims_status aims_pipeline_get_step_param_f64(const aims_pipeline *p, size_t step,
                                                aims_param param, double *out_value)
{
    return get_step(p, step, param, AIMS_PARAM_TYPE_F64, out_value);
}

aims_status aims_pipeline_set_param_i64(aims_pipeline *p, aims_param param,
                                                 int64_t value)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE)) {
        return AIMSI_MISUSE("invalid pipeline handle");
    }
    AIMSI_TRY(aimsi_param_check(&p->obj, param, AIMS_PIPELINE_THREADS, 399, AIMS_PARAM_TYPE_I64,
                                (double)value));
    const int64_t old = p->threads;
    p->threads = value;
    const aims_status rc = aimsi_pipe_sync_pool(p);
    if (rc != AIMS_OK) {
        p->threads = old;
    }
    return rc;
}

aims_status aims_pipeline_get_param_i64(const aims_pipeline *p, aims_param param,
                                                 int64_t *out_value)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) || out_value == NULL) {
        return AIMSI_MISUSE("invalid pipeline handle or NULL output");
    }
    AIMSI_TRY(aimsi_param_check(NULL, param, AIMS_PIPELINE_THREADS, 399, AIMS_PARAM_TYPE_I64,
                                aimsi_param_default(param)));
    *out_value = p->threads;
    return AIMS_OK;
}

/* ---- queries ------------------------------------------------------------------------- */

size_t aims_pipeline_num_steps(const aims_pipeline *p)
{
    return aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) ? p->nsteps : 0;
}

aims_step_kind aims_pipeline_step_kind(const aims_pipeline *p, size_t step)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) || step >= p->nsteps) {
        return (aims_step_kind)0;
    }
    return p->steps[step].kind;
}

int aims_pipeline_is_fitted(const aims_pipeline *p)
{
    return aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) && p->fitted;
}

aims_status aims_pipeline_output_cols(const aims_pipeline *p, size_t *out_cols)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) || out_cols == NULL) {
        return AIMSI_MISUSE("invalid pipeline handle or NULL output");
    }
    if (!p->fitted) {
        return aimsi_err(NULL, AIMS_E_STATE, "pipeline is not fitted");
    }
    *out_cols = p->out_w;
    return AIMS_OK;
}

const char *aims_pipeline_errmsg(const aims_pipeline *p)
{
    return aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) ? p->obj.errmsg : "";
}

/* ---- fit ------------------------------------------------------------------------------- */

int aimsi_pipe_text_complete(const aims_pipeline *p)
{
    int tok = 0;
    int hash = 0;
    for (size_t k = 0; k < p->nsteps; k++) {
        tok |= p->steps[k].kind == AIMS_STEP_KIND_TOKENIZE;
        hash |= p->steps[k].kind == AIMS_STEP_KIND_HASH;
    }
    return tok && hash;
}

static int has_text(const aims_dataset *ds)
{
    size_t len;
    return aims_dataset_rows(ds) > 0 && aims_dataset_text(ds, 0, &len) != NULL;
}

static aims_status fit_impl(aims_pipeline *p, const aims_dataset *ds)
{
    if (p->nsteps == 0) {
        return aimsi_err(&p->obj, AIMS_E_INVAL, "pipeline fit: the pipeline has no steps");
    }
    AIMSI_TRY(aimsi_pipe_sync_pool(p));
    const size_t rows = aims_dataset_rows(ds);
    if (p->family == AIMSI_FAMILY_NUM) {
        const float *x = aims_dataset_features(ds);
        const size_t cols = aims_dataset_cols(ds);
        if (x == NULL || cols == 0 || rows == 0) {
            return aimsi_err(&p->obj, AIMS_E_INVAL,
                             "pipeline fit: numeric steps need a dataset with dense features");
        }
        return aimsi_num_fit(p, x, rows, cols);
    }
    if (!aimsi_pipe_text_complete(p)) {
        return aimsi_err(&p->obj, AIMS_E_INVAL,
                         "pipeline fit: a text pipeline needs tokenize and hash steps");
    }
    if (!has_text(ds)) {
        return aimsi_err(&p->obj, AIMS_E_INVAL,
                         "pipeline fit: text steps need a dataset with a text part");
    }
    const aimsi_textsrc src = {.ds = ds};
    return aimsi_text_fit(p, &src, rows);
}

aims_status aims_pipeline_fit(aims_pipeline *p, const aims_dataset *ds)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE)) {
        return AIMSI_MISUSE("invalid pipeline handle");
    }
    if (!aimsi_obj_ok(ds, AIMSI_MAGIC_DATASET)) {
        return aimsi_err(&p->obj, AIMS_E_MISUSE, "aims_pipeline_fit: invalid dataset handle");
    }
    unfit(p);
    const aims_status rc = fit_impl(p, ds);
    if (rc != AIMS_OK) {
        unfit(p);
        return rc;
    }
    p->fitted = 1;
    return AIMS_OK;
}

/* ---- transform ----------------------------------------------------------------------- */

static aims_status fitted_ok(const aims_pipeline *p, int family)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE)) {
        return AIMSI_MISUSE("invalid pipeline handle");
    }
    if (!p->fitted) {
        return aimsi_err(NULL, AIMS_E_STATE, "pipeline is not fitted");
    }
    if (family != 0 && p->family != family) {
        return aimsi_err(NULL, AIMS_E_STATE, "this call needs a %s pipeline",
                         family == AIMSI_FAMILY_NUM ? "numeric" : "text");
    }
    return AIMS_OK;
}

/* Numeric transform of a dataset; check: validate non-finite input. */
static aims_status transform_dense(const aims_pipeline *p, const aims_dataset *ds, int check,
                                   aims_dataset *o)
{
    const float *x = aims_dataset_features(ds);
    const size_t rows = aims_dataset_rows(ds);
    const size_t cols = aims_dataset_cols(ds);
    if (x == NULL || rows == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "pipeline transform: dataset has no dense features");
    }
    if (cols != p->in_w) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "pipeline transform: dataset has %zu columns, pipeline was fitted on %zu",
                         cols, p->in_w);
    }
    size_t n;
    if (aimsi_mul_ok(rows, p->out_w, &n) != 0 || aimsi_mul_ok(n, sizeof(float), &n) != 0) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "pipeline transform: output size overflows");
    }
    o->x = aimsi_malloc(n);
    if (o->x == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "pipeline transform: no memory for %zu x %zu",
                         rows, p->out_w);
    }
    aimsi_hint_hugepages(o->x, n);
    o->rows = rows;
    o->cols = p->out_w;
    return aimsi_num_transform(p, x, rows, o->x, check);
}

static aims_status transform_impl(const aims_pipeline *p, const aims_dataset *ds, int check,
                                  aims_dataset **out)
{
    AIMSI_TRY(fitted_ok(p, 0));
    if (!aimsi_obj_ok(ds, AIMSI_MAGIC_DATASET) || out == NULL) {
        return AIMSI_MISUSE("invalid dataset handle or NULL output");
    }
    if (p->family == AIMSI_FAMILY_TEXT && !has_text(ds)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "pipeline transform: dataset has no text part");
    }
    aims_dataset *o = NULL;
    AIMSI_TRY(aimsi_dataset_new(&o));
    aims_status rc;
    if (p->family == AIMSI_FAMILY_NUM) {
        rc = transform_dense(p, ds, check, o);
    } else {
        const aimsi_textsrc src = {.ds = ds};
        o->rows = aims_dataset_rows(ds);
        rc = aimsi_text_transform(p, &src, o->rows, o);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_dataset_copy_labels(o, ds);
    }
    if (rc != AIMS_OK) {
        aims_dataset_destroy(o);
        return rc;
    }
    *out = o;
    return AIMS_OK;
}

aims_status aims_pipeline_transform(const aims_pipeline *p, const aims_dataset *ds,
                                             aims_dataset **out)
{
    return transform_impl(p, ds, 1, out);
}

/* Text fit_transform: one tokenising pass (see aimsi_text_fit_transform). */
static aims_status text_fit_transform(aims_pipeline *p, const aims_dataset *ds,
                                      aims_dataset **out)
{
    if (!aimsi_obj_ok(ds, AIMSI_MAGIC_DATASET)) {
        return aimsi_err(&p->obj, AIMS_E_MISUSE, "aims_pipeline_fit_transform: invalid dataset");
    }
    unfit(p);
    aims_status rc = AIMS_OK;
    if (p->nsteps == 0 || !aimsi_pipe_text_complete(p)) {
        rc = aimsi_err(&p->obj, AIMS_E_INVAL,
                       "pipeline fit: a text pipeline needs tokenize and hash steps");
    } else if (!has_text(ds)) {
        rc = aimsi_err(&p->obj, AIMS_E_INVAL,
                       "pipeline fit: text steps need a dataset with a text part");
    }
    rc = rc != AIMS_OK ? rc : aimsi_pipe_sync_pool(p);
    aims_dataset *o = NULL;
    rc = rc != AIMS_OK ? rc : aimsi_dataset_new(&o);
    if (rc == AIMS_OK) {
        const aimsi_textsrc src = {.ds = ds};
        o->rows = aims_dataset_rows(ds);
        rc = aimsi_text_fit_transform(p, &src, o->rows, o);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_dataset_copy_labels(o, ds);
    }
    if (rc != AIMS_OK) {
        aims_dataset_destroy(o);
        unfit(p);
        return aimsi_err_adopt(&p->obj, rc);
    }
    p->fitted = 1;
    *out = o;
    return AIMS_OK;
}

aims_status aims_pipeline_fit_transform(aims_pipeline *p, const aims_dataset *ds,
                                                 aims_dataset **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    if (aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) && p->family == AIMSI_FAMILY_TEXT) {
        return text_fit_transform(p, ds, out);
    }
    AIMSI_TRY(aims_pipeline_fit(p, ds));
    /* fit already refused non-finite input for the steps that learn state */
    const int check = p->family == AIMSI_FAMILY_NUM ? !aimsi_num_fit_checked_all(p) : 1;
    const aims_status rc = transform_impl(p, ds, check, out);
    return rc == AIMS_OK ? AIMS_OK : aimsi_err_adopt(&p->obj, rc);
}

aims_status aims_pipeline_transform_rows(const aims_pipeline *p, const float *x,
                                                  size_t rows, size_t in_cols, float *out,
                                                  size_t out_cap)
{
    AIMSI_TRY(fitted_ok(p, AIMSI_FAMILY_NUM));
    if (x == NULL || out == NULL) {
        return AIMSI_MISUSE("x or out is NULL");
    }
    if (rows == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_pipeline_transform_rows: rows is 0");
    }
    if (in_cols != p->in_w) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_pipeline_transform_rows: in_cols %zu, pipeline was fitted on %zu",
                         in_cols, p->in_w);
    }
    size_t need;
    if (aimsi_mul_ok(rows, p->out_w, &need) != 0 || out_cap < need) {
        return aimsi_err(NULL, AIMS_E_RANGE,
                         "aims_pipeline_transform_rows: out_cap %zu < %zu rows x %zu columns",
                         out_cap, rows, p->out_w);
    }
    return aimsi_num_transform(p, x, rows, out, 1);
}

aims_status aims_pipeline_transform_texts(const aims_pipeline *p,
                                                   const char *const *texts, const size_t *lens,
                                                   size_t rows, aims_dataset **out)
{
    AIMSI_TRY(fitted_ok(p, AIMSI_FAMILY_TEXT));
    if (texts == NULL || out == NULL) {
        return AIMSI_MISUSE("texts or out is NULL");
    }
    if (rows == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_pipeline_transform_texts: rows is 0");
    }
    for (size_t i = 0; i < rows; i++) {
        if (texts[i] == NULL && (lens == NULL || lens[i] != 0)) {
            return aimsi_err(NULL, AIMS_E_INVAL, "aims_pipeline_transform_texts: text %zu is NULL",
                             i);
        }
    }
    static const char empty[1] = "";
    const char **fixed = NULL;
    const char *const *use = texts;
    for (size_t i = 0; i < rows && fixed == NULL; i++) {
        if (texts[i] == NULL) {
            /* NULL with length 0: an empty document */
            fixed = aimsi_malloc(rows * sizeof(char *));
            if (fixed == NULL) {
                return aimsi_err(NULL, AIMS_E_NOMEM, "aims_pipeline_transform_texts: no memory");
            }
            for (size_t j = 0; j < rows; j++) {
                fixed[j] = texts[j] != NULL ? texts[j] : empty;
            }
            use = fixed;
        }
    }
    aims_dataset *o = NULL;
    aims_status rc = aimsi_dataset_new(&o);
    if (rc == AIMS_OK) {
        const aimsi_textsrc src = {.texts = use, .lens = lens};
        o->rows = rows;
        rc = aimsi_text_transform(p, &src, rows, o);
    }
    aimsi_free(fixed);
    if (rc != AIMS_OK) {
        aims_dataset_destroy(o);
        return rc;
    }
    *out = o;
    return AIMS_OK;
}
