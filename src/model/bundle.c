/*
 * bundle.c -- one file that serves raw inputs: fitted pipeline + model + metadata.
 *
 * A bundle owns private copies of its pipeline (optional) and model, so the
 * caller's objects may change or die afterwards. The pipeline is copied by a
 * round trip through its own serialiser (there is no pipeline clone, and the
 * serialiser is the one representation that is guaranteed complete).
 *
 * File: a container of kind AIMSI_KIND_BUNDLE holding
 *   'BHDR'  u32 format version (1), u32 flags (bit 0: has a pipeline),
 *           u32 metadata entries n (<= BUNDLE_MAX_META)
 *   'BMET'  n x (u32 key length, key bytes, u32 value length, value bytes)
 *   the pipeline's sections (aimsi_pipeline_write: 'PIPE') when flag bit 0,
 *   the model's sections (aimsi_model_write: 'MHDR', 'MPRM', 'QDNS').
 * The section tags of the three writers are disjoint, so one container holds
 * them all and each reader finds its own. Loading trusts nothing: the
 * container checks sizes and CRC, every length here is checked against what
 * is left and against the key/value caps, keys must be unique and free of NUL
 * bytes, and the pipeline's output width must equal the model's input width
 * (a file stitched together from unrelated parts fails with AIMS_E_CORRUPT).
 *
 * "library_version" is not stored as set: save always writes the version of
 * the library that writes the file, so after a load it tells who wrote it.
 *
 * Threads: predict calls are const and allocate only their own scratch, so
 * any number of threads may predict on one bundle (model and pipeline predict
 * paths are themselves safe for that).
 */
#include <string.h>

#include "aimsi_model.h"

#define BUNDLE_VERSION 1u
#define BUNDLE_MAX_META 1024u
#define BUNDLE_MAX_KEY 64u
#define BUNDLE_MAX_VALUE ((size_t)1 << 20) /* exclusive */
/* all keys + values together; also the cap on the BMET section a loader will
 * inflate, so a hostile file cannot make it allocate more */
#define BUNDLE_MAX_META_BYTES ((size_t)1 << 26)
#define BUNDLE_MAX_FILE ((uint64_t)1 << 33)
#define BUNDLE_FLAG_PIPELINE 1u
/* predict_rows keeps this many transformed floats on the stack (one wide row)
 * so a single-row request does not allocate */
#define BUNDLE_STACK_FLOATS 2048u
/* predict_texts with a dense model densifies at most this many floats at once */
#define BUNDLE_DENSE_CHUNK ((size_t)1 << 22)

#define TAG_BHDR AIMSI_TAG('B', 'H', 'D', 'R')
#define TAG_BMET AIMSI_TAG('B', 'M', 'E', 'T')

static const char LIBVER_KEY[] = "library_version";

struct aims_bundle {
    aimsi_obj obj;
    aims_pipeline *pipe; /* NULL: rows go straight to the model */
    aims_model *model;
    size_t n_meta;
    size_t meta_bytes; /* sum of key and value lengths */
    char *keys[BUNDLE_MAX_META];
    char *vals[BUNDLE_MAX_META];
};

#define BUNDLE_OK(b) aimsi_obj_ok((b), AIMSI_MAGIC_BUNDLE)

/* ---- life cycle ----------------------------------------------------------------- */

static aims_status bundle_new(aims_bundle **out)
{
    aims_bundle *b = aimsi_calloc(1, sizeof *b);
    if (b == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "bundle: out of memory");
    }
    aimsi_obj_init(&b->obj, AIMSI_MAGIC_BUNDLE);
    *out = b;
    return AIMS_OK;
}

void aims_bundle_destroy(aims_bundle *b)
{
    if (!BUNDLE_OK(b)) {
        return;
    }
    for (size_t i = 0; i < b->n_meta; i++) {
        aimsi_free(b->keys[i]);
        aimsi_free(b->vals[i]);
    }
    aims_pipeline_destroy(b->pipe);
    aims_model_destroy(b->model);
    aimsi_obj_kill(&b->obj);
    aimsi_free(b);
}

/* Copy a pipeline through its serialiser. */
static aims_status pipeline_copy(const aims_pipeline *p, aims_pipeline **out)
{
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_PIPELINE, 1, &w));
    void *bytes = NULL;
    size_t len = 0;
    aims_status rc = aimsi_pipeline_write(p, w);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_finish(w, &bytes, &len);
    }
    aimsi_cw_destroy(w);
    if (rc != AIMS_OK) {
        return rc;
    }
    aimsi_creader *r = NULL;
    rc = aimsi_cr_open_mem(bytes, len, 1, AIMSI_KIND_PIPELINE, &r); /* takes bytes */
    if (rc == AIMS_OK) {
        rc = aimsi_pipeline_read(r, out);
        aimsi_cr_destroy(r);
    }
    return rc;
}

/* The pipeline feeds the model: fitted, and its output width is the model's input. */
static aims_status check_pair(const aims_pipeline *p, const aims_model *m, aims_status code,
                              const char *who)
{
    if (!aims_model_is_trained(m)) {
        return aimsi_err(NULL, AIMS_E_STATE, "%s: the model is not trained", who);
    }
    if (p == NULL) {
        return AIMS_OK;
    }
    size_t cols = 0;
    if (!aims_pipeline_is_fitted(p) || aims_pipeline_output_cols(p, &cols) != AIMS_OK) {
        return aimsi_err(NULL, AIMS_E_STATE, "%s: the pipeline is not fitted", who);
    }
    if (cols != aims_model_input_dim(m)) {
        return aimsi_err(NULL, code, "%s: pipeline output width %zu != model input width %zu",
                         who, cols, aims_model_input_dim(m));
    }
    return AIMS_OK;
}

/* ---- metadata --------------------------------------------------------------------- */

static long meta_find(const aims_bundle *b, const char *key, size_t klen)
{
    for (size_t i = 0; i < b->n_meta; i++) {
        if (strlen(b->keys[i]) == klen && memcmp(b->keys[i], key, klen) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* Insert or replace; key/value are (ptr, len) with no NUL inside. */
static aims_status meta_put(aims_bundle *b, const char *key, size_t klen, const char *val,
                            size_t vlen)
{
    const long at = meta_find(b, key, klen);
    if (at < 0 && b->n_meta == BUNDLE_MAX_META) {
        return aimsi_err(&b->obj, AIMS_E_RANGE, "bundle: more than %u metadata keys",
                         BUNDLE_MAX_META);
    }
    const size_t old = at >= 0 ? klen + strlen(b->vals[at]) : 0;
    if (b->meta_bytes - old + klen + vlen > BUNDLE_MAX_META_BYTES) {
        return aimsi_err(&b->obj, AIMS_E_RANGE, "bundle: metadata over %zu bytes in all",
                         BUNDLE_MAX_META_BYTES);
    }
    char *v = aimsi_strndup(val, vlen);
    if (v == NULL) {
        return aimsi_err(&b->obj, AIMS_E_NOMEM, "bundle: out of memory");
    }
    if (at >= 0) {
        aimsi_free(b->vals[at]);
        b->vals[at] = v;
        b->meta_bytes = b->meta_bytes - old + klen + vlen;
        return AIMS_OK;
    }
    char *k = aimsi_strndup(key, klen);
    if (k == NULL) {
        aimsi_free(v);
        return aimsi_err(&b->obj, AIMS_E_NOMEM, "bundle: out of memory");
    }
    b->keys[b->n_meta] = k;
    b->vals[b->n_meta] = v;
    b->n_meta++;
    b->meta_bytes += klen + vlen;
    return AIMS_OK;
}

aims_status aims_bundle_create(const aims_pipeline *p, const aims_model *m, aims_bundle **out)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MODEL) || out == NULL ||
        (p != NULL && !aimsi_obj_ok(p, AIMSI_MAGIC_PIPELINE))) {
        return AIMSI_MISUSE("invalid pipeline/model handle or NULL out");
    }
    AIMSI_TRY(check_pair(p, m, AIMS_E_INVAL, "aims_bundle_create"));
    aims_bundle *b = NULL;
    AIMSI_TRY(bundle_new(&b));
    aims_status rc = aims_model_clone(m, &b->model);
    if (rc == AIMS_OK && p != NULL) {
        rc = pipeline_copy(p, &b->pipe);
    }
    if (rc == AIMS_OK) {
        rc = meta_put(b, LIBVER_KEY, strlen(LIBVER_KEY), AIMS_VERSION_STRING,
                      strlen(AIMS_VERSION_STRING));
    }
    if (rc != AIMS_OK) {
        aims_bundle_destroy(b);
        return rc;
    }
    *out = b;
    return AIMS_OK;
}

aims_status aims_bundle_set_meta(aims_bundle *b, const char *key, const char *value)
{
    if (!BUNDLE_OK(b) || key == NULL || value == NULL) {
        return AIMSI_MISUSE("invalid bundle handle or NULL key/value");
    }
    const size_t klen = strnlen(key, BUNDLE_MAX_KEY + 1);
    if (klen == 0 || klen > BUNDLE_MAX_KEY) {
        return aimsi_err(&b->obj, AIMS_E_INVAL, "aims_bundle_set_meta: key must be 1..%u bytes",
                         BUNDLE_MAX_KEY);
    }
    const size_t vlen = strnlen(value, BUNDLE_MAX_VALUE);
    if (vlen >= BUNDLE_MAX_VALUE) {
        return aimsi_err(&b->obj, AIMS_E_INVAL,
                         "aims_bundle_set_meta: value of '%s' is 1 MiB or more", key);
    }
    /* the library's own key (written by create and save, never by the caller) */
    if (strcmp(key, LIBVER_KEY) == 0) {
        return aimsi_err(&b->obj, AIMS_E_INVAL,
                         "aims_bundle_set_meta: '%s' is set by the library", key);
    }
    return meta_put(b, key, klen, value, vlen);
}

const char *aims_bundle_meta(const aims_bundle *b, const char *key)
{
    if (!BUNDLE_OK(b) || key == NULL) {
        return NULL;
    }
    const long at = meta_find(b, key, strlen(key));
    return at >= 0 ? b->vals[at] : NULL;
}

const aims_model *aims_bundle_model(const aims_bundle *b)
{
    return BUNDLE_OK(b) ? b->model : NULL;
}

const aims_pipeline *aims_bundle_pipeline(const aims_bundle *b)
{
    return BUNDLE_OK(b) ? b->pipe : NULL;
}

/* ---- save ---------------------------------------------------------------------------- */

static aims_status put_str(aimsi_buf *buf, const char *s)
{
    const size_t n = strlen(s);
    AIMSI_TRY(aimsi_buf_put_u32le(buf, (uint32_t)n));
    return aimsi_buf_append(buf, s, n);
}

static aims_status write_meta(const aims_bundle *b, aimsi_cwriter *w)
{
    aimsi_buf hdr;
    aimsi_buf met;
    aimsi_buf_init(&hdr);
    aimsi_buf_init(&met);
    aims_status rc = aimsi_buf_put_u32le(&hdr, BUNDLE_VERSION);
    if (rc == AIMS_OK) {
        rc = aimsi_buf_put_u32le(&hdr, b->pipe != NULL ? BUNDLE_FLAG_PIPELINE : 0u);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_buf_put_u32le(&hdr, (uint32_t)b->n_meta);
    }
    for (size_t i = 0; i < b->n_meta && rc == AIMS_OK; i++) {
        const int lib = strcmp(b->keys[i], LIBVER_KEY) == 0;
        rc = put_str(&met, b->keys[i]);
        if (rc == AIMS_OK) {
            rc = put_str(&met, lib ? AIMS_VERSION_STRING : b->vals[i]);
        }
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_BHDR, hdr.data, hdr.len);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_BMET, met.data, met.len);
    }
    aimsi_buf_free(&hdr);
    aimsi_buf_free(&met);
    return rc;
}

static aims_status fill_bundle(const void *obj, aimsi_cwriter *w)
{
    const aims_bundle *b = obj;
    aims_status rc = write_meta(b, w);
    if (rc == AIMS_OK && b->pipe != NULL) {
        rc = aimsi_pipeline_write(b->pipe, w);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_model_write(b->model, w);
    }
    return rc;
}

aims_status aims_bundle_save(const aims_bundle *b, const char *path)
{
    if (!BUNDLE_OK(b) || path == NULL) {
        return AIMSI_MISUSE("invalid bundle handle or NULL path");
    }
    const aims_status rc = aimsi_container_save(AIMSI_KIND_BUNDLE, 0, b, fill_bundle, path);
    return rc;
}

/* The bytes aims_bundle_save would write (aimsi_free them): for services that
 * ship a bundle in a reply without a temporary file. */
aims_status aimsi_bundle_to_bytes(const aims_bundle *b, void **out, size_t *out_len)
{
    if (!BUNDLE_OK(b) || out == NULL || out_len == NULL) {
        return AIMSI_MISUSE("invalid bundle handle or NULL out");
    }
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_BUNDLE, 0, &w));
    aims_status rc = fill_bundle(b, w);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_finish(w, out, out_len);
    }
    aimsi_cw_destroy(w);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------ */

#define CORRUPT(...) aimsi_err(NULL, AIMS_E_CORRUPT, "bundle: " __VA_ARGS__)

static aims_status read_str(aimsi_rd *rd, size_t max, const char *what, size_t i,
                            const uint8_t **p, size_t *n)
{
    uint32_t len = 0;
    if (aimsi_rd_u32le(rd, &len) != 0) {
        return CORRUPT("BMET entry %zu: truncated %s length at byte %zu", i, what, rd->pos);
    }
    if (len > max || aimsi_rd_bytes(rd, len, p) != 0) {
        return CORRUPT("BMET entry %zu: %s of %u bytes (max %zu, %zu left) at byte %zu", i, what,
                       len, max, aimsi_rd_left(rd), rd->pos);
    }
    if (memchr(*p, 0, len) != NULL) {
        return CORRUPT("BMET entry %zu: NUL byte inside the %s", i, what);
    }
    *n = len;
    return AIMS_OK;
}

static aims_status read_meta(aimsi_creader *r, aims_bundle *b, uint32_t *flags)
{
    void *hp = NULL;
    size_t hlen = 0;
    aims_status rc = aimsi_cr_section(r, TAG_BHDR, 64, &hp, &hlen);
    if (rc != AIMS_OK) {
        return rc == AIMS_E_NOMEM ? rc : CORRUPT("BHDR section missing or damaged");
    }
    aimsi_rd rd;
    aimsi_rd_init(&rd, hp, hlen);
    uint32_t ver = 0;
    uint32_t n = 0;
    const int bad = aimsi_rd_u32le(&rd, &ver) != 0 || aimsi_rd_u32le(&rd, flags) != 0 ||
                    aimsi_rd_u32le(&rd, &n) != 0;
    aimsi_free(hp);
    if (bad) {
        return CORRUPT("BHDR truncated (%zu bytes)", hlen);
    }
    if (ver != BUNDLE_VERSION) {
        return aimsi_err(NULL, ver > BUNDLE_VERSION ? AIMS_E_UNSUPPORTED : AIMS_E_CORRUPT,
                         "bundle: format version %u (this library reads %u)", ver,
                         BUNDLE_VERSION);
    }
    if ((*flags & ~BUNDLE_FLAG_PIPELINE) != 0 || n > BUNDLE_MAX_META) {
        return CORRUPT("BHDR flags 0x%x / %u metadata entries (max %u)", *flags, n,
                       BUNDLE_MAX_META);
    }
    void *mp = NULL;
    size_t mlen = 0;
    rc = aimsi_cr_section(r, TAG_BMET, (size_t)n * 8 + BUNDLE_MAX_META_BYTES, &mp, &mlen);
    if (rc != AIMS_OK) {
        return rc == AIMS_E_NOMEM ? rc : CORRUPT("BMET section missing or damaged");
    }
    aimsi_rd_init(&rd, mp, mlen);
    for (size_t i = 0; i < n && rc == AIMS_OK; i++) {
        const uint8_t *k = NULL;
        const uint8_t *v = NULL;
        size_t kn = 0;
        size_t vn = 0;
        rc = read_str(&rd, BUNDLE_MAX_KEY, "key", i, &k, &kn);
        if (rc == AIMS_OK) {
            rc = read_str(&rd, BUNDLE_MAX_VALUE - 1, "value", i, &v, &vn);
        }
        if (rc == AIMS_OK && (kn == 0 || meta_find(b, (const char *)k, kn) >= 0)) {
            rc = CORRUPT("BMET entry %zu: empty or repeated key", i);
        }
        if (rc == AIMS_OK) {
            rc = meta_put(b, (const char *)k, kn, (const char *)v, vn);
        }
    }
    if (rc == AIMS_OK && aimsi_rd_left(&rd) != 0) {
        rc = CORRUPT("BMET: %zu unexpected bytes after entry %u", aimsi_rd_left(&rd), n);
    }
    aimsi_free(mp);
    return rc;
}

static aims_status bundle_read(aimsi_creader *r, aims_bundle **out)
{
    aims_bundle *b = NULL;
    AIMSI_TRY(bundle_new(&b));
    uint32_t flags = 0;
    aims_status rc = read_meta(r, b, &flags);
    if (rc == AIMS_OK && (flags & BUNDLE_FLAG_PIPELINE) != 0) {
        rc = aimsi_pipeline_read(r, &b->pipe);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_model_read(r, &b->model);
    }
    if (rc == AIMS_OK) {
        /* a bundle made by aims_bundle_create always passes; anything else is damage */
        rc = check_pair(b->pipe, b->model, AIMS_E_CORRUPT, "bundle");
        if (rc == AIMS_E_STATE) {
            rc = CORRUPT("unfitted pipeline or untrained model");
        }
    }
    if (rc != AIMS_OK) {
        aims_bundle_destroy(b);
        return rc;
    }
    *out = b;
    return AIMS_OK;
}

static aims_status take_bundle(aimsi_creader *r, void *out)
{
    return bundle_read(r, out);
}

aims_status aims_bundle_parse(const void *data, size_t size, aims_bundle **out)
{
    if (data == NULL || out == NULL) {
        return AIMSI_MISUSE("data and out must not be NULL");
    }
    return aimsi_container_parse(AIMSI_KIND_BUNDLE, data, size, take_bundle, out);
}

aims_status aims_bundle_load(const char *path, aims_bundle **out)
{
    if (path == NULL || out == NULL) {
        return AIMSI_MISUSE("path and out must not be NULL");
    }
    const aims_status rc = aimsi_container_load(AIMSI_KIND_BUNDLE, path, BUNDLE_MAX_FILE,
                                                take_bundle, out);
    if (rc != AIMS_OK) {
        aimsi_log(AIMS_LOG_ERROR, "cannot load bundle %s: %s", path, aims_errmsg());
    }
    return rc;
}

/* ---- predict ------------------------------------------------------------------------------ */

aims_status aims_bundle_predict_rows(const aims_bundle *b, aims_output what, const float *x,
                                     size_t rows, size_t cols, float *out, size_t out_cap)
{
    if (!BUNDLE_OK(b) || x == NULL || out == NULL || rows == 0) {
        return AIMSI_MISUSE("invalid bundle handle, NULL x/out or zero rows");
    }
    if (b->pipe == NULL) {
        return aims_model_predict(b->model, what, x, rows, cols, out, out_cap);
    }
    const size_t w = aims_model_input_dim(b->model);
    size_t n = 0;
    if (aimsi_mul_ok(rows, w, &n) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "aims_bundle_predict_rows: %zu rows too many", rows);
    }
    float stack[BUNDLE_STACK_FLOATS];
    float *t = stack;
    if (n > BUNDLE_STACK_FLOATS) {
        t = aimsi_malloc(n * sizeof *t);
        if (t == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "aims_bundle_predict_rows: no memory for %zu rows",
                             rows);
        }
    }
    aims_status rc = aims_pipeline_transform_rows(b->pipe, x, rows, cols, t, n);
    if (rc == AIMS_OK) {
        rc = aims_model_predict(b->model, what, t, rows, w, out, out_cap);
    }
    if (t != stack) {
        aimsi_free(t);
    }
    return rc;
}

/* Dense model on hashed text features: scatter each document's token weights
 * into dense rows, a chunk of rows at a time so memory stays bounded. */
static aims_status predict_tokens_dense(const aims_model *m, aims_output what,
                                        const aims_dataset *ds, float *out, size_t out_cap)
{
    const size_t w = aims_model_input_dim(m);
    const size_t k = aims_model_output_dim(m);
    if (ds->tok_off == NULL || ds->tok_dim != w) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_bundle_predict_texts: token width %zu != "
                                             "model input %zu", ds->tok_dim, w);
    }
    size_t need = 0;
    if (aimsi_mul_ok(ds->rows, k, &need) != 0 || need > out_cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "aims_bundle_predict_texts: out_cap %zu < %zu rows "
                                             "x %zu outputs", out_cap, ds->rows, k);
    }
    size_t chunk = BUNDLE_DENSE_CHUNK / w;
    chunk = chunk == 0 ? 1 : (chunk > ds->rows ? ds->rows : chunk);
    float *d = aimsi_malloc(chunk * w * sizeof *d);
    if (d == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_bundle_predict_texts: out of memory");
    }
    aims_status rc = AIMS_OK;
    for (size_t r0 = 0; r0 < ds->rows && rc == AIMS_OK; r0 += chunk) {
        const size_t nr = ds->rows - r0 < chunk ? ds->rows - r0 : chunk;
        memset(d, 0, nr * w * sizeof *d);
        for (size_t i = 0; i < nr; i++) {
            for (uint64_t j = ds->tok_off[r0 + i]; j < ds->tok_off[r0 + i + 1]; j++) {
                d[i * w + ds->tok_ids[j]] += ds->tok_w != NULL ? ds->tok_w[j] : 1.0f;
            }
        }
        rc = aims_model_predict(m, what, d, nr, w, out + r0 * k, out_cap - r0 * k);
    }
    aimsi_free(d);
    return rc;
}

aims_status aims_bundle_predict_texts(const aims_bundle *b, aims_output what,
                                      const char *const *texts, const size_t *lens, size_t rows,
                                      float *out, size_t out_cap)
{
    if (!BUNDLE_OK(b) || texts == NULL || out == NULL || rows == 0) {
        return AIMSI_MISUSE("invalid bundle handle, NULL texts/out or zero rows");
    }
    if (b->pipe == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_bundle_predict_texts: the bundle has no "
                                             "(text) pipeline");
    }
    aims_dataset *ds = NULL;
    AIMSI_TRY(aims_pipeline_transform_texts(b->pipe, texts, lens, rows, &ds));
    aims_status rc;
    if (aims_model_kind_of(b->model) == AIMS_MODEL_KIND_TEXT) {
        rc = aims_model_predict_dataset(b->model, what, ds, out, out_cap);
    } else {
        rc = predict_tokens_dense(b->model, what, ds, out, out_cap);
    }
    aims_dataset_destroy(ds);
    return rc;
}

const char *aims_bundle_errmsg(const aims_bundle *b)
{
    return aimsi_obj_errmsg(b, AIMSI_MAGIC_BUNDLE);
}
