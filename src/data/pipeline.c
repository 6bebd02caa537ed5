/*
 * pipeline.c -- the aims_pipeline object: steps, parameters, fit/transform
 * dispatch, and the file format.
 *
 * How. A pipeline is a fixed array of at most AIMSI_MAX_STEPS steps (adding a
 * step never allocates). The first step decides the family (numeric or text);
 * text steps must follow [NORMALIZE] TOKENIZE [NGRAMS] HASH [TFIDF]. The same
 * rule function checks add() and the loader, so a file can never describe a
 * pipeline the API could not have built. Any configuration change drops the
 * fitted state: a fitted pipeline always matches its parameters.
 *
 * The math lives in steps_num.c and steps_text.c; this file validates
 * arguments, owns the thread pool (created at fit/set/load time, never inside
 * a const transform, so concurrent transforms only share read-only state and
 * the pool, whose runs aimsi_pool_run serialises) and builds output datasets.
 *
 * File format: a container of kind AIMSI_KIND_PIPELINE with one section PIPE:
 *   u32 version (1), u32 family, u32 nsteps, u32 fitted, u64 threads,
 *   u64 in_w, u64 out_w, then per step: u32 kind, 17 x f64 parameters and,
 *   when fitted, the step's state (numeric: u64 in_w, out_w, c0, c1 and the
 *   per-column arrays; TFIDF: u64 ndocs, u32 buckets, buckets x u32 df).
 * The reader re-checks everything the API would have enforced -- kinds,
 * order, parameter bounds, widths chained step to step, array sizes against
 * declared widths, df <= ndocs -- and refuses the rest as AIMS_E_CORRUPT.
 */
#include <math.h>
#include <string.h>
#if defined(__linux__)
#endif

#include "aimsi_steps.h"

/* A pipeline file stores each step's aims_step_kind number (read back by a
 * cast in decode_steps), so these values are a file format too. */
_Static_assert(AIMS_STEP_STANDARDIZE == 1 && AIMS_STEP_MINMAX == 2 && AIMS_STEP_IMPUTE == 3 &&
                   AIMS_STEP_CLIP == 4 && AIMS_STEP_ONEHOT == 5 && AIMS_STEP_SCALE == 6 &&
                   AIMS_STEP_NORMALIZE == 20 && AIMS_STEP_TOKENIZE == 21 &&
                   AIMS_STEP_NGRAMS == 22 && AIMS_STEP_HASH == 23 && AIMS_STEP_TFIDF == 24,
               "aims_step_kind values are pipeline file codes: never renumber");

#define PIPE_TAG AIMSI_TAG('P', 'I', 'P', 'E')
#define PIPE_VERSION 1u
#define PIPE_MAX_FILE ((uint64_t)1 << 33)
#define PIPE_MAX_SECTION ((size_t)1 << 30) /* 2^28 TFIDF buckets; bounds a hostile raw size */

/* ---- step kinds and the parameters that apply to them ------------------------- */

static int is_num_kind(int k)
{
    return k >= AIMS_STEP_STANDARDIZE && k <= AIMS_STEP_SCALE;
}

static int is_text_kind(int k)
{
    return k >= AIMS_STEP_NORMALIZE && k <= AIMS_STEP_TFIDF;
}

#define KB(k) (1u << ((k) >= 20 ? (k) - 13 : (k)))
#define NUMERIC_KINDS                                                                     \
    (KB(AIMS_STEP_STANDARDIZE) | KB(AIMS_STEP_MINMAX) | KB(AIMS_STEP_IMPUTE) |              \
     KB(AIMS_STEP_CLIP) | KB(AIMS_STEP_ONEHOT) | KB(AIMS_STEP_SCALE))

/* Which step kinds each step parameter applies to (bit KB(kind)). */
static const unsigned k_applies[AIMSI_NSTEP_PARAMS] = {
    [AIMS_STEP_COL_BEGIN - 200] = NUMERIC_KINDS,
    [AIMS_STEP_COL_END - 200] = NUMERIC_KINDS,
    [AIMS_STEP_LOW - 200] = KB(AIMS_STEP_MINMAX) | KB(AIMS_STEP_CLIP),
    [AIMS_STEP_HIGH - 200] = KB(AIMS_STEP_MINMAX) | KB(AIMS_STEP_CLIP),
    [AIMS_STEP_STRATEGY - 200] = KB(AIMS_STEP_IMPUTE),
    [AIMS_STEP_VALUE - 200] = KB(AIMS_STEP_IMPUTE),
    [AIMS_STEP_FACTOR - 200] = KB(AIMS_STEP_SCALE),
    [AIMS_STEP_MAX_CATEGORIES - 200] = KB(AIMS_STEP_ONEHOT),
    [AIMS_STEP_LOWERCASE - 200] = KB(AIMS_STEP_NORMALIZE),
    [AIMS_STEP_MIN_TOKEN_LEN - 200] = KB(AIMS_STEP_TOKENIZE),
    [AIMS_STEP_NGRAM_MAX - 200] = KB(AIMS_STEP_NGRAMS),
    [AIMS_STEP_BUCKETS - 200] = KB(AIMS_STEP_HASH),
    [AIMS_STEP_SIGNED - 200] = KB(AIMS_STEP_HASH),
    [AIMS_STEP_SMOOTH_IDF - 200] = KB(AIMS_STEP_TFIDF),
    [AIMS_STEP_SUBLINEAR_TF - 200] = KB(AIMS_STEP_TFIDF),
    [AIMS_STEP_NORM - 200] = KB(AIMS_STEP_TFIDF),
    [AIMS_STEP_NONFINITE - 200] = NUMERIC_KINDS,
};

static const char *step_name(int k)
{
    static const char *const num[] = {"?", "standardize", "minmax", "impute",
                                      "clip", "onehot", "scale"};
    static const char *const text[] = {"normalize", "tokenize", "ngrams", "hash", "tfidf"};
    if (is_num_kind(k)) {
        return num[k];
    }
    return is_text_kind(k) ? text[k - AIMS_STEP_NORMALIZE] : "unknown";
}

/* May a step of `kind` follow steps[0..n)? Returns NULL or the reason. */
static const char *add_refusal(const aimsi_step *steps, size_t n, int kind)
{
    if (!is_num_kind(kind) && !is_text_kind(kind)) {
        return "unknown step kind";
    }
    if (n >= AIMSI_MAX_STEPS) {
        return "too many steps (cap 64)";
    }
    if (n > 0 && is_num_kind(steps[0].kind) != is_num_kind(kind)) {
        return "numeric and text steps cannot be mixed in one pipeline";
    }
    if (is_num_kind(kind)) {
        return NULL;
    }
    int have_tok = 0;
    int have_hash = 0;
    for (size_t i = 0; i < n; i++) {
        have_tok |= steps[i].kind == AIMS_STEP_TOKENIZE;
        have_hash |= steps[i].kind == AIMS_STEP_HASH;
    }
    if (n > 0 && (int)steps[n - 1].kind >= kind) {
        return "text steps must come in the order [normalize] tokenize [ngrams] hash [tfidf], "
               "each once";
    }
    if (kind > AIMS_STEP_TOKENIZE && !have_tok) {
        return "tokenize must come before ngrams, hash and tfidf";
    }
    if (kind == AIMS_STEP_TFIDF && !have_hash) {
        return "hash must come before tfidf";
    }
    return NULL;
}

static void step_defaults(aimsi_step *s, aims_step_kind kind)
{
    *s = (aimsi_step){.kind = kind};
    for (int i = 0; i < AIMSI_NSTEP_PARAMS; i++) {
        s->pv[i] = aimsi_param_default((aims_param)(AIMS_STEP_COL_BEGIN + i));
    }
    if (kind == AIMS_STEP_CLIP) {
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
static aims_status sync_pool(aims_pipeline *p)
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
    const char *why = add_refusal(p->steps, p->nsteps, (int)kind);
    if (why != NULL) {
        return aimsi_err(&p->obj, AIMS_E_INVAL, "cannot add step %d (%s) at index %zu: %s",
                         (int)kind, step_name((int)kind), p->nsteps, why);
    }
    unfit(p);
    step_defaults(&p->steps[p->nsteps], kind);
    p->family = is_num_kind((int)kind) ? AIMSI_FAMILY_NUM : AIMSI_FAMILY_TEXT;
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
    AIMSI_TRY(aimsi_param_check(obj, param, AIMS_STEP_COL_BEGIN, AIMS_STEP_NONFINITE, type,
                                value));
    const aimsi_step *s = &p->steps[step];
    if ((k_applies[param - AIMS_STEP_COL_BEGIN] & KB(s->kind)) == 0) {
        return aimsi_err(obj, AIMS_E_UNSUPPORTED, "parameter %s does not apply to step %zu (%s)",
                         aims_param_name(param), step, step_name(s->kind));
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

aims_status aims_pipeline_set_step_i64(aims_pipeline *p, size_t step, aims_param param,
                                                int64_t value)
{
    return set_step(p, step, param, AIMS_PARAM_I64, (double)value);
}

aims_status aims_pipeline_set_step_f64(aims_pipeline *p, size_t step, aims_param param,
                                                double value)
{
    return set_step(p, step, param, AIMS_PARAM_F64, value);
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

aims_status aims_pipeline_get_step_i64(const aims_pipeline *p, size_t step,
                                                aims_param param, int64_t *out_value)
{
    double v = 0;
    AIMSI_TRY(get_step(p, step, param, AIMS_PARAM_I64, out_value == NULL ? NULL : &v));
    *out_value = (int64_t)v;
    return AIMS_OK;
}

aims_status aims_pipeline_get_step_f64(const aims_pipeline *p, size_t step,
                                                aims_param param, double *out_value)
{
    return get_step(p, step, param, AIMS_PARAM_F64, out_value);
}

aims_status aims_pipeline_set_param_i64(aims_pipeline *p, aims_param param,
                                                 int64_t value)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE)) {
        return AIMSI_MISUSE("invalid pipeline handle");
    }
    AIMSI_TRY(aimsi_param_check(&p->obj, param, AIMS_PIPELINE_THREADS, 399, AIMS_PARAM_I64,
                                (double)value));
    const int64_t old = p->threads;
    p->threads = value;
    const aims_status rc = sync_pool(p);
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
    AIMSI_TRY(aimsi_param_check(NULL, param, AIMS_PIPELINE_THREADS, 399, AIMS_PARAM_I64,
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

static int text_complete(const aims_pipeline *p)
{
    int tok = 0;
    int hash = 0;
    for (size_t k = 0; k < p->nsteps; k++) {
        tok |= p->steps[k].kind == AIMS_STEP_TOKENIZE;
        hash |= p->steps[k].kind == AIMS_STEP_HASH;
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
    AIMSI_TRY(sync_pool(p));
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
    if (!text_complete(p)) {
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
    if (p->nsteps == 0 || !text_complete(p)) {
        rc = aimsi_err(&p->obj, AIMS_E_INVAL,
                       "pipeline fit: a text pipeline needs tokenize and hash steps");
    } else if (!has_text(ds)) {
        rc = aimsi_err(&p->obj, AIMS_E_INVAL,
                       "pipeline fit: text steps need a dataset with a text part");
    }
    rc = rc != AIMS_OK ? rc : sync_pool(p);
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

/* ---- writing --------------------------------------------------------------------------- */

static aims_status put_f64s(aimsi_buf *b, const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        AIMSI_TRY(aimsi_buf_put_f64le(b, v[i]));
    }
    return AIMS_OK;
}

static aims_status put_step(aimsi_buf *b, const aims_pipeline *p, const aimsi_step *s)
{
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)s->kind));
    AIMSI_TRY(put_f64s(b, s->pv, AIMSI_NSTEP_PARAMS));
    if (!p->fitted) {
        return AIMS_OK;
    }
    if (p->family == AIMSI_FAMILY_NUM) {
        const size_t m = s->c1 - s->c0;
        AIMSI_TRY(aimsi_buf_put_u64le(b, s->in_w));
        AIMSI_TRY(aimsi_buf_put_u64le(b, s->out_w));
        AIMSI_TRY(aimsi_buf_put_u64le(b, s->c0));
        AIMSI_TRY(aimsi_buf_put_u64le(b, s->c1));
        if (s->kind == AIMS_STEP_STANDARDIZE || s->kind == AIMS_STEP_MINMAX) {
            AIMSI_TRY(put_f64s(b, s->a, m));
            AIMSI_TRY(put_f64s(b, s->b, m));
        } else if (s->kind == AIMS_STEP_IMPUTE) {
            AIMSI_TRY(put_f64s(b, s->a, m));
        } else if (s->kind == AIMS_STEP_ONEHOT) {
            for (size_t j = 0; j < m; j++) {
                AIMSI_TRY(aimsi_buf_put_u32le(b, s->cat[j]));
            }
        }
        return AIMS_OK;
    }
    if (s->kind == AIMS_STEP_TFIDF) {
        AIMSI_TRY(aimsi_buf_put_u64le(b, s->ndocs));
        AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)p->out_w));
        AIMSI_TRY(aimsi_buf_reserve(b, p->out_w * 4));
        for (size_t j = 0; j < p->out_w; j++) {
            AIMSI_TRY(aimsi_buf_put_u32le(b, s->df[j]));
        }
    }
    return AIMS_OK;
}

static aims_status encode(const aims_pipeline *p, aimsi_buf *b)
{
    AIMSI_TRY(aimsi_buf_put_u32le(b, PIPE_VERSION));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)p->family));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)p->nsteps));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)p->fitted));
    AIMSI_TRY(aimsi_buf_put_u64le(b, (uint64_t)p->threads));
    AIMSI_TRY(aimsi_buf_put_u64le(b, p->in_w));
    AIMSI_TRY(aimsi_buf_put_u64le(b, p->out_w));
    for (size_t k = 0; k < p->nsteps; k++) {
        AIMSI_TRY(put_step(b, p, &p->steps[k]));
    }
    return AIMS_OK;
}

aims_status aimsi_pipeline_write(const aims_pipeline *p, aimsi_cwriter *w)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) || w == NULL) {
        return AIMSI_MISUSE("invalid pipeline handle or writer");
    }
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = encode(p, &b);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, PIPE_TAG, b.data, b.len);
    }
    aimsi_buf_free(&b);
    return rc;
}

aims_status aims_pipeline_save(const aims_pipeline *p, const char *path)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) || path == NULL) {
        return AIMSI_MISUSE("invalid pipeline handle or NULL path");
    }
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_PIPELINE, 0, &w));
    aims_status rc = aimsi_pipeline_write(p, w);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_save(w, path);
    }
    aimsi_cw_destroy(w);
    return rc;
}

/* ---- reading --------------------------------------------------------------------------- */

typedef struct reader {
    aimsi_rd rd;
    size_t step; /* for messages */
} reader;

#define CORRUPT(...) aimsi_err(NULL, AIMS_E_CORRUPT, "pipeline file: " __VA_ARGS__)

static aims_status rd_u32(reader *r, uint32_t *v, const char *what)
{
    if (aimsi_rd_u32le(&r->rd, v) != 0) {
        return CORRUPT("truncated at byte %zu reading %s", r->rd.pos, what);
    }
    return AIMS_OK;
}

static aims_status rd_u64(reader *r, uint64_t *v, const char *what)
{
    if (aimsi_rd_u64le(&r->rd, v) != 0) {
        return CORRUPT("truncated at byte %zu reading %s", r->rd.pos, what);
    }
    return AIMS_OK;
}

/* Borrow n values of sz bytes, checking they are present before any allocation. */
static aims_status rd_array(reader *r, size_t n, size_t sz, const uint8_t **out, const char *what)
{
    size_t bytes;
    if (aimsi_mul_ok(n, sz, &bytes) != 0 || aimsi_rd_bytes(&r->rd, bytes, out) != 0) {
        return CORRUPT("step %zu: %s array of %zu values runs past the end (byte %zu)", r->step,
                       what, n, r->rd.pos);
    }
    return AIMS_OK;
}

static aims_status rd_f64s(reader *r, size_t n, double **out, int finite, const char *what)
{
    const uint8_t *src;
    AIMSI_TRY(rd_array(r, n, 8, &src, what));
    double *v = aimsi_malloc((n == 0 ? 1 : n) * sizeof(double));
    if (v == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "pipeline file: no memory for %zu values", n);
    }
    for (size_t i = 0; i < n; i++) {
        const uint64_t u = aimsi_load_u64le(src + 8 * i);
        memcpy(&v[i], &u, 8);
        if (isnan(v[i]) || (finite && !isfinite(v[i]))) {
            aimsi_free(v);
            return CORRUPT("step %zu: %s[%zu] is not a valid number", r->step, what, i);
        }
    }
    *out = v;
    return AIMS_OK;
}

static aims_status read_params(reader *r, aimsi_step *s)
{
    const uint8_t *src;
    AIMSI_TRY(rd_array(r, AIMSI_NSTEP_PARAMS, 8, &src, "parameter"));
    for (int i = 0; i < AIMSI_NSTEP_PARAMS; i++) {
        const aims_param param = (aims_param)(AIMS_STEP_COL_BEGIN + i);
        const uint64_t u = aimsi_load_u64le(src + 8 * i);
        double v;
        memcpy(&v, &u, 8);
        aims_param_type type;
        double lo;
        double hi;
        if (aims_param_info(param, &type, &lo, &hi, NULL) != AIMS_OK) {
            return aimsi_err(NULL, AIMS_E_INTERNAL, "step parameter %d has no table row",
                             (int)param);
        }
        if (isnan(v) || v < lo || v > hi || (type == AIMS_PARAM_I64 && v != floor(v))) {
            return CORRUPT("step %zu: parameter %s = %g is outside [%g, %g]", r->step,
                           aims_param_name(param), v, lo, hi);
        }
        s->pv[i] = v;
    }
    return AIMS_OK;
}

/* Read and check the fitted state of numeric step s whose input is w wide. */
static aims_status read_num_state(reader *r, aimsi_step *s, size_t w)
{
    uint64_t in_w, out_w, c0, c1;
    AIMSI_TRY(rd_u64(r, &in_w, "step width"));
    AIMSI_TRY(rd_u64(r, &out_w, "step width"));
    AIMSI_TRY(rd_u64(r, &c0, "column range"));
    AIMSI_TRY(rd_u64(r, &c1, "column range"));
    const double cb = aimsi_sp(s, AIMS_STEP_COL_BEGIN);
    const double ce = aimsi_sp(s, AIMS_STEP_COL_END);
    if (in_w != w || out_w == 0 || out_w > AIMSI_MAX_WIDTH || c0 >= c1 || c1 > in_w ||
        (double)c0 != cb || (ce >= 0 ? (double)c1 != ce : c1 != in_w)) {
        return CORRUPT("step %zu: widths %llu -> %llu with columns [%llu, %llu) do not match "
                       "the input width %zu and the step's column parameters",
                       r->step, (unsigned long long)in_w, (unsigned long long)out_w,
                       (unsigned long long)c0, (unsigned long long)c1, w);
    }
    s->in_w = (size_t)in_w;
    s->out_w = (size_t)out_w;
    s->c0 = (size_t)c0;
    s->c1 = (size_t)c1;
    const size_t m = s->c1 - s->c0;
    if (s->kind != AIMS_STEP_ONEHOT && out_w != in_w) {
        return CORRUPT("step %zu (%s): output width differs from input width", r->step,
                       step_name(s->kind));
    }
    const double lo = aimsi_sp(s, AIMS_STEP_LOW);
    const double hi = aimsi_sp(s, AIMS_STEP_HIGH);
    if ((s->kind == AIMS_STEP_MINMAX && !(lo < hi && isfinite(lo) && isfinite(hi))) ||
        (s->kind == AIMS_STEP_CLIP && !(lo <= hi))) {
        return CORRUPT("step %zu (%s): low %g / high %g are inconsistent", r->step,
                       step_name(s->kind), lo, hi);
    }
    if (s->kind == AIMS_STEP_STANDARDIZE || s->kind == AIMS_STEP_MINMAX) {
        AIMSI_TRY(rd_f64s(r, m, &s->a, 1, "offset"));
        AIMSI_TRY(rd_f64s(r, m, &s->b, 1, "scale"));
        for (size_t j = 0; j < m; j++) {
            if (s->b[j] < 0.0 || (s->kind == AIMS_STEP_STANDARDIZE && s->b[j] == 0.0)) {
                return CORRUPT("step %zu: scale[%zu] = %g is invalid", r->step, j, s->b[j]);
            }
        }
    } else if (s->kind == AIMS_STEP_IMPUTE) {
        AIMSI_TRY(rd_f64s(r, m, &s->a, 0, "fill value"));
    } else if (s->kind == AIMS_STEP_ONEHOT) {
        const uint8_t *src;
        AIMSI_TRY(rd_array(r, m, 4, &src, "category count"));
        s->cat = aimsi_malloc(m * sizeof(uint32_t));
        if (s->cat == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "pipeline file: no memory");
        }
        uint64_t sum = 0;
        const double cap = aimsi_sp(s, AIMS_STEP_MAX_CATEGORIES);
        for (size_t j = 0; j < m; j++) {
            s->cat[j] = aimsi_load_u32le(src + 4 * j);
            if (s->cat[j] == 0 || (double)s->cat[j] > cap) {
                return CORRUPT("step %zu: category count %u of column %zu outside [1, %g]",
                               r->step, s->cat[j], j, cap);
            }
            sum += s->cat[j];
        }
        if (out_w != in_w - m + sum) {
            return CORRUPT("step %zu (onehot): output width %llu != %llu", r->step,
                           (unsigned long long)out_w, (unsigned long long)(in_w - m + sum));
        }
    }
    return AIMS_OK;
}

static aims_status read_tfidf_state(reader *r, aimsi_step *s, size_t buckets)
{
    uint64_t ndocs;
    uint32_t nb;
    AIMSI_TRY(rd_u64(r, &ndocs, "document count"));
    AIMSI_TRY(rd_u32(r, &nb, "bucket count"));
    if (ndocs == 0 || nb != buckets) {
        return CORRUPT("step %zu (tfidf): %llu documents, %u buckets (hash has %zu)", r->step,
                       (unsigned long long)ndocs, nb, buckets);
    }
    const uint8_t *src;
    AIMSI_TRY(rd_array(r, buckets, 4, &src, "document frequency"));
    s->df = aimsi_malloc(buckets * sizeof(uint32_t));
    if (s->df == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "pipeline file: no memory for %zu buckets", buckets);
    }
    for (size_t b = 0; b < buckets; b++) {
        s->df[b] = aimsi_load_u32le(src + 4 * b);
        if (s->df[b] > ndocs) {
            return CORRUPT("step %zu (tfidf): df[%zu] = %u exceeds %llu documents", r->step, b,
                           s->df[b], (unsigned long long)ndocs);
        }
    }
    s->ndocs = ndocs;
    return aimsi_text_idf(s, buckets);
}

static size_t hash_buckets(const aims_pipeline *p)
{
    for (size_t k = 0; k < p->nsteps; k++) {
        if (p->steps[k].kind == AIMS_STEP_HASH) {
            return (size_t)aimsi_sp(&p->steps[k], AIMS_STEP_BUCKETS);
        }
    }
    return 0;
}

static aims_status decode_steps(reader *r, aims_pipeline *p, uint32_t nsteps, int fitted)
{
    size_t w = p->in_w;
    for (uint32_t k = 0; k < nsteps; k++) {
        uint32_t kind;
        r->step = k;
        AIMSI_TRY(rd_u32(r, &kind, "step kind"));
        const char *why = add_refusal(p->steps, p->nsteps, (int)kind);
        if (why != NULL) {
            return CORRUPT("step %u: kind %u refused: %s", k, kind, why);
        }
        aimsi_step *s = &p->steps[p->nsteps];
        step_defaults(s, (aims_step_kind)kind);
        p->family = is_num_kind((int)kind) ? AIMSI_FAMILY_NUM : AIMSI_FAMILY_TEXT;
        p->nsteps++;
        AIMSI_TRY(read_params(r, s));
        if (fitted && p->family == AIMSI_FAMILY_NUM) {
            AIMSI_TRY(read_num_state(r, s, w));
            w = s->out_w;
        } else if (fitted && s->kind == AIMS_STEP_TFIDF) {
            AIMSI_TRY(read_tfidf_state(r, s, hash_buckets(p)));
        }
    }
    if (fitted && p->family == AIMSI_FAMILY_NUM && w != p->out_w) {
        return CORRUPT("declared output width %zu != %zu produced by the steps", p->out_w, w);
    }
    if (fitted && p->family == AIMSI_FAMILY_TEXT &&
        (!text_complete(p) || p->out_w != hash_buckets(p))) {
        return CORRUPT("fitted text pipeline lacks tokenize/hash or its width %zu is wrong",
                       p->out_w);
    }
    return AIMS_OK;
}

static aims_status decode(const uint8_t *data, size_t len, aims_pipeline *p)
{
    reader r = {.step = 0};
    aimsi_rd_init(&r.rd, data, len);
    uint32_t version, family, nsteps, fitted;
    uint64_t threads, in_w, out_w;
    AIMSI_TRY(rd_u32(&r, &version, "version"));
    if (version != PIPE_VERSION) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "pipeline file: section version %u (this build reads %u)", version,
                         PIPE_VERSION);
    }
    AIMSI_TRY(rd_u32(&r, &family, "family"));
    AIMSI_TRY(rd_u32(&r, &nsteps, "step count"));
    AIMSI_TRY(rd_u32(&r, &fitted, "fitted flag"));
    AIMSI_TRY(rd_u64(&r, &threads, "threads"));
    AIMSI_TRY(rd_u64(&r, &in_w, "input width"));
    AIMSI_TRY(rd_u64(&r, &out_w, "output width"));
    if (family > AIMSI_FAMILY_TEXT || nsteps > AIMSI_MAX_STEPS || fitted > 1 ||
        threads > 256 || (nsteps == 0) != (family == AIMSI_FAMILY_NONE) ||
        (fitted && nsteps == 0) || in_w > AIMSI_MAX_WIDTH || out_w > ((uint64_t)1 << 30) ||
        (fitted && family == AIMSI_FAMILY_NUM && (in_w == 0 || out_w > AIMSI_MAX_WIDTH)) ||
        (!fitted && (in_w != 0 || out_w != 0))) {
        return CORRUPT("header fields out of range (family %u, %u steps, fitted %u, threads "
                       "%llu, widths %llu -> %llu)",
                       family, nsteps, fitted, (unsigned long long)threads,
                       (unsigned long long)in_w, (unsigned long long)out_w);
    }
    p->threads = (int64_t)threads;
    p->in_w = (size_t)in_w;
    p->out_w = (size_t)out_w;
    p->fitted = (int)fitted;
    AIMSI_TRY(decode_steps(&r, p, nsteps, (int)fitted));
    if ((uint32_t)family != (uint32_t)p->family) {
        return CORRUPT("declared family %u does not match the steps", family);
    }
    if (aimsi_rd_left(&r.rd) != 0) {
        return CORRUPT("%zu unexpected bytes after the last step", aimsi_rd_left(&r.rd));
    }
    return AIMS_OK;
}

aims_status aimsi_pipeline_read(aimsi_creader *r, aims_pipeline **out)
{
    if (r == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL reader or output");
    }
    void *data = NULL;
    size_t len = 0;
    aims_status rc = aimsi_cr_section(r, PIPE_TAG, PIPE_MAX_SECTION, &data, &len);
    if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
        rc = aimsi_err(NULL, rc == AIMS_E_RANGE ? AIMS_E_UNSUPPORTED : AIMS_E_CORRUPT,
                       "pipeline file: PIPE section %s", rc == AIMS_E_RANGE ? "too large" : "missing");
    }
    if (rc != AIMS_OK) {
        return rc;
    }
    aims_pipeline *p = NULL;
    rc = aims_pipeline_create(&p);
    if (rc == AIMS_OK) {
        rc = decode(data, len, p);
    }
    if (rc == AIMS_OK) {
        rc = sync_pool(p);
    }
    aimsi_free(data);
    if (rc != AIMS_OK) {
        aims_pipeline_destroy(p);
        return rc;
    }
    *out = p;
    return AIMS_OK;
}

aims_status aims_pipeline_parse(const void *data, size_t size, aims_pipeline **out)
{
    if ((data == NULL && size != 0) || out == NULL) {
        return AIMSI_MISUSE("data or out is NULL");
    }
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_mem(data, size, 0, AIMSI_KIND_PIPELINE, &r));
    const aims_status rc = aimsi_pipeline_read(r, out);
    aimsi_cr_destroy(r);
    return rc;
}

aims_status aims_pipeline_load(const char *path, aims_pipeline **out)
{
    if (path == NULL || out == NULL) {
        return AIMSI_MISUSE("path or out is NULL");
    }
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_file(path, PIPE_MAX_FILE, AIMSI_KIND_PIPELINE, &r));
    const aims_status rc = aimsi_pipeline_read(r, out);
    aimsi_cr_destroy(r);
    return rc;
}
