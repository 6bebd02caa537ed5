/*
 * pipeline_file.c -- the aims_pipeline file format: save/parse/load and the
 * container section used by model bundles (aimsi_pipeline_write/read).
 *
 * Why apart. The object and its rules live in pipeline.c; this file only
 * encodes them and, reading, re-checks them, sharing pipeline.c's rule
 * functions (aimsi_pipe_*) so a file can never describe a pipeline the API
 * could not have built.
 *
 * File format: a container of kind AIMSI_KIND_PIPELINE with one section PIPE:
 *   u32 version (2), u32 family, u32 nsteps, u32 fitted, u64 threads,
 *   u64 in_w, u64 out_w, then per step: u32 kind, 18 x f64 parameters and,
 *   when fitted, the step's state (numeric: u64 in_w, out_w, c0, c1 and the
 *   per-column arrays; TFIDF: u64 ndocs, u32 buckets, buckets x u32 df).
 * The reader re-checks everything the API would have enforced -- kinds,
 * order, parameter bounds, widths chained step to step, array sizes against
 * declared widths, df <= ndocs -- and refuses the rest as AIMS_E_CORRUPT.
 * Version 1 files (17 parameters: before AIMS_STEP_PUNCT) are still read; the
 * parameters they lack take their defaults.
 */
#include <math.h>
#include <string.h>

#include "aimsi_steps.h"

/* A pipeline file stores each step's aims_step_kind number (read back by a
 * cast in decode_steps), so these values are a file format too. */
_Static_assert(AIMS_STEP_KIND_STANDARDIZE == 1 && AIMS_STEP_KIND_MINMAX == 2 && AIMS_STEP_KIND_IMPUTE == 3 &&
                   AIMS_STEP_KIND_CLIP == 4 && AIMS_STEP_KIND_ONEHOT == 5 && AIMS_STEP_KIND_SCALE == 6 &&
                   AIMS_STEP_KIND_NORMALIZE == 20 && AIMS_STEP_KIND_TOKENIZE == 21 &&
                   AIMS_STEP_KIND_NGRAMS == 22 && AIMS_STEP_KIND_HASH == 23 && AIMS_STEP_KIND_TFIDF == 24,
               "aims_step_kind values are pipeline file codes: never renumber");

#define PIPE_TAG AIMSI_TAG('P', 'I', 'P', 'E')
#define PIPE_VERSION 2u
#define PIPE_NPARAMS_V1 17 /* version 1: AIMS_STEP_COL_BEGIN .. AIMS_STEP_NONFINITE */
#define PIPE_MAX_FILE ((uint64_t)1 << 33)
#define PIPE_MAX_SECTION ((size_t)1 << 30) /* 2^28 TFIDF buckets; bounds a hostile raw size */

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
        if (s->kind == AIMS_STEP_KIND_STANDARDIZE || s->kind == AIMS_STEP_KIND_MINMAX) {
            AIMSI_TRY(put_f64s(b, s->a, m));
            AIMSI_TRY(put_f64s(b, s->b, m));
        } else if (s->kind == AIMS_STEP_KIND_IMPUTE) {
            AIMSI_TRY(put_f64s(b, s->a, m));
        } else if (s->kind == AIMS_STEP_KIND_ONEHOT) {
            for (size_t j = 0; j < m; j++) {
                AIMSI_TRY(aimsi_buf_put_u32le(b, s->cat[j]));
            }
        }
        return AIMS_OK;
    }
    if (s->kind == AIMS_STEP_KIND_TFIDF) {
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

static aims_status fill_pipeline(const void *p, aimsi_cwriter *w)
{
    return aimsi_pipeline_write(p, w);
}

aims_status aims_pipeline_save(const aims_pipeline *p, const char *path)
{
    if (!aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE) || path == NULL) {
        return AIMSI_MISUSE("invalid pipeline handle or NULL path");
    }
    return aimsi_container_save(AIMSI_KIND_PIPELINE, 0, p, fill_pipeline, path);
}

/* ---- reading --------------------------------------------------------------------------- */

typedef struct reader {
    aimsi_rd rd;
    size_t step; /* for messages */
    uint32_t version;
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
    const int n = r->version == 1 ? PIPE_NPARAMS_V1 : AIMSI_NSTEP_PARAMS;
    AIMSI_TRY(rd_array(r, (size_t)n, 8, &src, "parameter"));
    for (int i = n; i < AIMSI_NSTEP_PARAMS; i++) {
        s->pv[i] = aimsi_param_default((aims_param)(AIMS_STEP_COL_BEGIN + i));
    }
    for (int i = 0; i < n; i++) {
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
        if (isnan(v) || v < lo || v > hi || (type == AIMS_PARAM_TYPE_I64 && v != floor(v))) {
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
    if (s->kind != AIMS_STEP_KIND_ONEHOT && out_w != in_w) {
        return CORRUPT("step %zu (%s): output width differs from input width", r->step,
                       aimsi_pipe_step_name(s->kind));
    }
    const double lo = aimsi_sp(s, AIMS_STEP_LOW);
    const double hi = aimsi_sp(s, AIMS_STEP_HIGH);
    if ((s->kind == AIMS_STEP_KIND_MINMAX && !(lo < hi && isfinite(lo) && isfinite(hi))) ||
        (s->kind == AIMS_STEP_KIND_CLIP && !(lo <= hi))) {
        return CORRUPT("step %zu (%s): low %g / high %g are inconsistent", r->step,
                       aimsi_pipe_step_name(s->kind), lo, hi);
    }
    if (s->kind == AIMS_STEP_KIND_STANDARDIZE || s->kind == AIMS_STEP_KIND_MINMAX) {
        AIMSI_TRY(rd_f64s(r, m, &s->a, 1, "offset"));
        AIMSI_TRY(rd_f64s(r, m, &s->b, 1, "scale"));
        for (size_t j = 0; j < m; j++) {
            if (s->b[j] < 0.0 || (s->kind == AIMS_STEP_KIND_STANDARDIZE && s->b[j] == 0.0)) {
                return CORRUPT("step %zu: scale[%zu] = %g is invalid", r->step, j, s->b[j]);
            }
        }
    } else if (s->kind == AIMS_STEP_KIND_IMPUTE) {
        AIMSI_TRY(rd_f64s(r, m, &s->a, 0, "fill value"));
    } else if (s->kind == AIMS_STEP_KIND_ONEHOT) {
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
        if (p->steps[k].kind == AIMS_STEP_KIND_HASH) {
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
        const char *why = aimsi_pipe_add_refusal(p->steps, p->nsteps, (int)kind);
        if (why != NULL) {
            return CORRUPT("step %u: kind %u refused: %s", k, kind, why);
        }
        aimsi_step *s = &p->steps[p->nsteps];
        aimsi_pipe_step_defaults(s, (aims_step_kind)kind);
        p->family = aimsi_pipe_is_num_kind((int)kind) ? AIMSI_FAMILY_NUM : AIMSI_FAMILY_TEXT;
        p->nsteps++;
        AIMSI_TRY(read_params(r, s));
        if (fitted && p->family == AIMSI_FAMILY_NUM) {
            AIMSI_TRY(read_num_state(r, s, w));
            w = s->out_w;
        } else if (fitted && s->kind == AIMS_STEP_KIND_TFIDF) {
            AIMSI_TRY(read_tfidf_state(r, s, hash_buckets(p)));
        }
    }
    if (fitted && p->family == AIMSI_FAMILY_NUM && w != p->out_w) {
        return CORRUPT("declared output width %zu != %zu produced by the steps", p->out_w, w);
    }
    if (fitted && p->family == AIMSI_FAMILY_TEXT &&
        (!aimsi_pipe_text_complete(p) || p->out_w != hash_buckets(p))) {
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
    if (version != PIPE_VERSION && version != 1) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "pipeline file: section version %u (this build reads 1..%u)", version,
                         PIPE_VERSION);
    }
    r.version = version;
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
        rc = aimsi_pipe_sync_pool(p);
    }
    aimsi_free(data);
    if (rc != AIMS_OK) {
        aims_pipeline_destroy(p);
        return rc;
    }
    *out = p;
    return AIMS_OK;
}

static aims_status take_pipeline(aimsi_creader *r, void *out)
{
    return aimsi_pipeline_read(r, out);
}

aims_status aims_pipeline_parse(const void *data, size_t size, aims_pipeline **out)
{
    if ((data == NULL && size != 0) || out == NULL) {
        return AIMSI_MISUSE("data or out is NULL");
    }
    return aimsi_container_parse(AIMSI_KIND_PIPELINE, data, size, take_pipeline, out);
}

aims_status aims_pipeline_load(const char *path, aims_pipeline **out)
{
    if (path == NULL || out == NULL) {
        return AIMSI_MISUSE("path or out is NULL");
    }
    return aimsi_container_load(AIMSI_KIND_PIPELINE, path, PIPE_MAX_FILE, take_pipeline, out);
}
