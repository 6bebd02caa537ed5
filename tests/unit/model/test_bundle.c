/*
 * test_bundle.c -- white-box tests of model bundles (src/model/bundle.c).
 *
 * Models are built directly (finalize + seeded weights + trained = 1) so the
 * tests do not depend on the trainer. Hostile-file tests truncate the saved
 * bytes at every length and flip every byte: parsing must fail cleanly (or, if
 * a change slips past every check, the loaded bundle must still predict) and
 * never leak.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/aimsi_model.h"
#include "testalloc.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

enum { IN = 12, H = 10, K = 3, ROWS = 40, BUCKETS = 32 };

static aims_model *make_model(aims_model_kind kind, size_t in, size_t hidden, size_t out,
                              uint64_t seed)
{
    aims_model *m = NULL;
    OK(aims_model_create(kind, in, out, &m));
    if (hidden > 0) {
        OK(aims_model_add_dense(m, hidden, AIMS_ACT_RELU));
    }
    OK(aimsi_model_finalize(m));
    aimsi_rng rng;
    aimsi_rng_seed(&rng, seed);
    for (size_t i = 0; i < m->n_params; i++) {
        m->params[i] = (float)(aimsi_rng_unit(&rng) - 0.5);
    }
    m->trained = 1;
    return m;
}

static void fill_rows(float *x, size_t n, uint64_t seed)
{
    aimsi_rng rng;
    aimsi_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(aimsi_rng_unit(&rng) * 10.0 - 3.0);
    }
}

static aims_pipeline *fitted_standardize(const float *x, size_t rows, size_t cols)
{
    aims_pipeline *p = NULL;
    aims_dataset *ds = NULL;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL));
    OK(aims_dataset_create_dense(rows, cols, x, NULL, &ds));
    OK(aims_pipeline_fit(p, ds));
    aims_dataset_destroy(ds);
    return p;
}

/* x (ROWS x IN) filled from seed, and a standardize pipeline fitted on it. */
static aims_pipeline *fill_and_fit(float *x, uint64_t seed)
{
    fill_rows(x, ROWS * IN, seed);
    return fitted_standardize(x, ROWS, IN);
}

static const char *const g_docs[] = {"the cat sat on the mat", "dogs bark at night",
                                     "a cat and a dog", "stock markets fell today",
                                     "the market rose", ""};
#define NDOCS (sizeof g_docs / sizeof g_docs[0])

static aims_pipeline *fitted_text(void)
{
    aims_pipeline *p = NULL;
    size_t h = 0;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &h));
    OK(aims_pipeline_set_step_param_i64(p, h, AIMS_STEP_BUCKETS, BUCKETS));
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(NDOCS, g_docs, NULL, NULL, &ds));
    OK(aims_pipeline_fit(p, ds));
    aims_dataset_destroy(ds);
    return p;
}

static char *tmp_path(const char *tag)
{
    static char path[96];
    snprintf(path, sizeof path, "/tmp/aims_test_bundle_%s_%ld.aimsb", tag, (long)getpid());
    return path;
}

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)n);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* ---- round trips ------------------------------------------------------------------- */

static void test_bundle_roundtrip_rows(void **state)
{
    (void)state;
    float x[ROWS * IN];
    aims_pipeline *p = fill_and_fit(x, 1);
    aims_model *m = make_model(AIMS_MODEL_KIND_MLP, IN, H, K, 2);
    aims_bundle *b = NULL;
    OK(aims_bundle_create(p, m, &b));
    OK(aims_bundle_set_meta(b, "name", "fmnist-mlp"));
    OK(aims_bundle_set_meta(b, "classes", "a\nb\nc"));
    OK(aims_bundle_set_meta(b, "name", "renamed")); /* replace */
    assert_string_equal(aims_bundle_meta(b, "name"), "renamed");
    assert_string_equal(aims_bundle_meta(b, "library_version"), AIMS_VERSION_STRING);
    assert_null(aims_bundle_meta(b, "missing"));
    assert_non_null(aims_bundle_pipeline(b));
    assert_ptr_not_equal(aims_bundle_model(b), m); /* a private copy */

    /* expected: transform then predict by hand */
    float t[ROWS * IN];
    float want[ROWS * K];
    float got[ROWS * K];
    OK(aims_pipeline_transform_rows(p, x, ROWS, IN, t, ROWS * IN));
    OK(aims_model_predict(m, AIMS_OUT_PROBA, t, ROWS, IN, want, ROWS * K));
    aims_pipeline_destroy(p); /* the bundle must not need the originals */
    aims_model_destroy(m);
    OK(aims_bundle_predict_rows(b, AIMS_OUT_PROBA, x, ROWS, IN, got, ROWS * K));
    assert_memory_equal(got, want, sizeof got);

    const char *path = tmp_path("rows");
    OK(aims_bundle_save(b, path));
    aims_bundle *l = NULL;
    OK(aims_bundle_load(path, &l));
    size_t len = 0;
    void *bytes = read_all(path, &len);
    unlink(path);
    aims_bundle *pb = NULL;
    OK(aims_bundle_parse(bytes, len, &pb));
    free(bytes);
    assert_string_equal(aims_bundle_meta(l, "name"), "renamed");
    assert_string_equal(aims_bundle_meta(l, "classes"), "a\nb\nc");
    assert_string_equal(aims_bundle_meta(pb, "library_version"), AIMS_VERSION_STRING);
    memset(got, 0, sizeof got);
    OK(aims_bundle_predict_rows(l, AIMS_OUT_PROBA, x, ROWS, IN, got, ROWS * K));
    assert_memory_equal(got, want, sizeof got);
    OK(aims_bundle_predict_rows(pb, AIMS_OUT_PROBA, x, 1, IN, got, K));
    for (size_t k = 0; k < K; k++) { /* one row may take another BLAS path: not bitwise */
        assert_float_equal(got[k], want[k], 1e-5);
    }

    /* width and capacity errors leave out untouched */
    float keep[K] = {-7.0f, -7.0f, -7.0f};
    assert_int_equal(aims_bundle_predict_rows(l, AIMS_OUT_PROBA, x, 1, IN - 1, keep, K),
                     AIMS_E_INVAL);
    assert_int_equal(aims_bundle_predict_rows(l, AIMS_OUT_PROBA, x, 2, IN, keep, K),
                     AIMS_E_RANGE);
    assert_float_equal(keep[0], -7.0f, 0.0);
    const char *docs[] = {"x"};
    assert_int_equal(aims_bundle_predict_texts(l, AIMS_OUT_PROBA, docs, NULL, 1, keep, K),
                     AIMS_E_STATE);
    aims_bundle_destroy(pb);
    aims_bundle_destroy(l);
    aims_bundle_destroy(b);
}

static void test_bundle_no_pipeline_quantized(void **state)
{
    (void)state;
    float x[ROWS * IN];
    fill_rows(x, ROWS * IN, 3);
    aims_model *m = make_model(AIMS_MODEL_KIND_MLP, IN, H, K, 4);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(ROWS, IN, x, NULL, &ds));
    aims_model *q = NULL;
    OK(aims_model_quantize(m, ds, &q));
    aims_bundle *b = NULL;
    OK(aims_bundle_create(NULL, q, &b));
    assert_null(aims_bundle_pipeline(b));
    const char *path = tmp_path("q8");
    OK(aims_bundle_save(b, path));
    aims_bundle *l = NULL;
    OK(aims_bundle_load(path, &l));
    unlink(path);
    assert_true(aims_model_is_quantized(aims_bundle_model(l)));
    float want[ROWS * K];
    float got[ROWS * K];
    OK(aims_model_predict(q, AIMS_OUT_SCORES, x, ROWS, IN, want, ROWS * K));
    OK(aims_bundle_predict_rows(l, AIMS_OUT_SCORES, x, ROWS, IN, got, ROWS * K));
    assert_memory_equal(got, want, sizeof got);
    aims_bundle_destroy(l);
    aims_bundle_destroy(b);
    aims_model_destroy(q);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

static void test_bundle_texts_dense_model(void **state)
{
    (void)state;
    aims_pipeline *p = fitted_text();
    aims_model *m = make_model(AIMS_MODEL_KIND_SOFTMAX, BUCKETS, 0, K, 5);
    aims_bundle *b = NULL;
    OK(aims_bundle_create(p, m, &b));
    float got[NDOCS * K];
    OK(aims_bundle_predict_texts(b, AIMS_OUT_SCORES, g_docs, NULL, NDOCS, got, NDOCS * K));
    /* by hand: tokens -> dense counts -> predict */
    aims_dataset *ds = NULL;
    OK(aims_pipeline_transform_texts(p, g_docs, NULL, NDOCS, &ds));
    const uint64_t *off = NULL;
    const uint32_t *ids = NULL;
    const float *w = NULL;
    OK(aims_dataset_tokens(ds, &off, &ids, &w));
    float d[NDOCS * BUCKETS] = {0};
    for (size_t r = 0; r < NDOCS; r++) {
        for (uint64_t j = off[r]; j < off[r + 1]; j++) {
            d[r * BUCKETS + ids[j]] += w != NULL ? w[j] : 1.0f;
        }
    }
    float want[NDOCS * K];
    OK(aims_model_predict(m, AIMS_OUT_SCORES, d, NDOCS, BUCKETS, want, NDOCS * K));
    for (size_t i = 0; i < NDOCS * K; i++) {
        assert_float_equal(got[i], want[i], 1e-5);
    }
    float x[BUCKETS] = {0};
    assert_int_equal(aims_bundle_predict_rows(b, AIMS_OUT_SCORES, x, 1, BUCKETS, got, K),
                     AIMS_E_STATE); /* a text pipeline takes no rows */
    assert_int_equal(aims_bundle_predict_texts(b, AIMS_OUT_SCORES, g_docs, NULL, NDOCS, got, 2),
                     AIMS_E_RANGE);
    aims_dataset_destroy(ds);
    aims_bundle_destroy(b);
    aims_model_destroy(m);
    aims_pipeline_destroy(p);
}

static void test_bundle_errors(void **state)
{
    (void)state;
    float x[ROWS * IN];
    aims_pipeline *p = fill_and_fit(x, 6);
    aims_model *wrong = make_model(AIMS_MODEL_KIND_SOFTMAX, IN + 1, 0, K, 1);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(p, wrong, &b), AIMS_E_INVAL);
    aims_model *untrained = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, IN, K, &untrained));
    assert_int_equal(aims_bundle_create(p, untrained, &b), AIMS_E_STATE);
    aims_pipeline *unfitted = NULL;
    OK(aims_pipeline_create(&unfitted));
    OK(aims_pipeline_add(unfitted, AIMS_STEP_KIND_STANDARDIZE, NULL));
    aims_model *m = make_model(AIMS_MODEL_KIND_SOFTMAX, IN, 0, K, 1);
    assert_int_equal(aims_bundle_create(unfitted, m, &b), AIMS_E_STATE);
    assert_int_equal(aims_bundle_create(p, NULL, &b), AIMS_E_MISUSE);
    assert_int_equal(aims_bundle_create(p, m, NULL), AIMS_E_MISUSE);
    assert_null(b);

    OK(aims_bundle_create(p, m, &b));
    char key[80];
    memset(key, 'k', sizeof key);
    key[65] = '\0';
    assert_int_equal(aims_bundle_set_meta(b, key, "v"), AIMS_E_INVAL);
    key[64] = '\0';
    OK(aims_bundle_set_meta(b, key, "v"));
    assert_int_equal(aims_bundle_set_meta(b, "", "v"), AIMS_E_INVAL);
    assert_int_equal(aims_bundle_set_meta(b, "library_version", "9.9.9"), AIMS_E_INVAL);
    assert_string_equal(aims_bundle_meta(b, "library_version"), AIMS_VERSION_STRING);
    char *big = malloc((1u << 20) + 1);
    memset(big, 'v', 1u << 20);
    big[1u << 20] = '\0';
    assert_int_equal(aims_bundle_set_meta(b, "big", big), AIMS_E_INVAL);
    big[(1u << 20) - 1] = '\0';
    OK(aims_bundle_set_meta(b, "big", big));
    free(big);
    assert_int_equal(aims_bundle_set_meta(NULL, "a", "b"), AIMS_E_MISUSE);
    assert_int_equal(aims_bundle_load("/nonexistent/x.aimsb", &b), AIMS_E_NOTFOUND);
    assert_int_equal(aims_bundle_parse("xx", 2, &b), AIMS_E_CORRUPT);

    /* a well-formed file whose pipeline (width IN) does not fit its model (IN + 1) */
    {
        aimsi_cwriter *w = NULL;
        const uint8_t hdr[12] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
        OK(aimsi_cw_create(AIMSI_KIND_BUNDLE, 0, &w));
        OK(aimsi_cw_add(w, AIMSI_TAG('B', 'H', 'D', 'R'), hdr, sizeof hdr));
        OK(aimsi_cw_add(w, AIMSI_TAG('B', 'M', 'E', 'T'), NULL, 0));
        OK(aimsi_pipeline_write(p, w));
        OK(aimsi_model_write(wrong, w));
        void *bytes = NULL;
        size_t len = 0;
        OK(aimsi_cw_finish(w, &bytes, &len));
        aimsi_cw_destroy(w);
        aims_bundle *sb = NULL;
        assert_int_equal(aims_bundle_parse(bytes, len, &sb), AIMS_E_CORRUPT);
        assert_non_null(strstr(aims_errmsg(), "width"));
        assert_null(sb);
        aimsi_free(bytes);
    }

    /* a model file is not a bundle */
    const char *path = tmp_path("model");
    OK(aims_model_save(m, path));
    aims_bundle *l = NULL;
    assert_int_equal(aims_bundle_load(path, &l), AIMS_E_INVAL);
    unlink(path);
    assert_null(l);
    aims_bundle_destroy(b);
    aims_bundle_destroy(NULL);
    aims_model_destroy(m);
    aims_model_destroy(untrained);
    aims_model_destroy(wrong);
    aims_pipeline_destroy(unfitted);
    aims_pipeline_destroy(p);
}

/* ---- hostile files ----------------------------------------------------------------------- */

static void try_parse(const void *bytes, size_t len)
{
    const size_t live = aims_alloc_live();
    aims_bundle *b = NULL;
    if (aims_bundle_parse(bytes, len, &b) == AIMS_OK) {
        float x[IN] = {0};
        float out[K];
        (void)aims_bundle_predict_rows(b, AIMS_OUT_PROBA, x, 1, IN, out, K);
        aims_bundle_destroy(b);
    } else {
        assert_null(b);
    }
    assert_int_equal(aims_alloc_live(), live);
}

static void test_bundle_hostile_bytes(void **state)
{
    (void)state;
    float x[ROWS * IN];
    aims_pipeline *p = fill_and_fit(x, 8);
    aims_model *m = make_model(AIMS_MODEL_KIND_MLP, IN, 6, K, 9);
    aims_bundle *b = NULL;
    OK(aims_bundle_create(p, m, &b));
    OK(aims_bundle_set_meta(b, "name", "hostile"));
    const char *path = tmp_path("hostile");
    OK(aims_bundle_save(b, path));
    size_t len = 0;
    uint8_t *bytes = read_all(path, &len);
    unlink(path);
    for (size_t n = 0; n < len; n++) {
        try_parse(bytes, n);
    }
    for (size_t i = 0; i < len; i++) {
        bytes[i] ^= 0xa5;
        try_parse(bytes, len);
        bytes[i] ^= 0xa5;
    }
    try_parse(bytes, len);
    free(bytes);
    aims_bundle_destroy(b);
    aims_model_destroy(m);
    aims_pipeline_destroy(p);
}

/* A container with the given BHDR/BMET bytes and (optionally) a model. */
static aims_status parse_crafted(const void *hdr, size_t hlen, const void *met, size_t mlen,
                                 const aims_model *m)
{
    aimsi_cwriter *w = NULL;
    OK(aimsi_cw_create(AIMSI_KIND_BUNDLE, 0, &w));
    OK(aimsi_cw_add(w, AIMSI_TAG('B', 'H', 'D', 'R'), hdr, hlen));
    OK(aimsi_cw_add(w, AIMSI_TAG('B', 'M', 'E', 'T'), met, mlen));
    if (m != NULL) {
        OK(aimsi_model_write(m, w));
    }
    void *bytes = NULL;
    size_t len = 0;
    OK(aimsi_cw_finish(w, &bytes, &len));
    aimsi_cw_destroy(w);
    aims_bundle *b = NULL;
    const aims_status rc = aims_bundle_parse(bytes, len, &b);
    aimsi_free(bytes);
    aims_bundle_destroy(b);
    return rc;
}

/* Well-formed containers (valid CRC) with damaged bundle sections: the bundle
 * parser itself must catch these, not the container checksum. */
static void test_bundle_crafted_sections(void **state)
{
    (void)state;
    aims_model *m = make_model(AIMS_MODEL_KIND_SOFTMAX, 4, 0, 2, 3);
    const uint8_t h1[12] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}; /* v1, no pipeline, 1 entry */
    const uint8_t ok_met[] = {1, 0, 0, 0, 'k', 2, 0, 0, 0, 'v', 'w'};
    OK(parse_crafted(h1, sizeof h1, ok_met, sizeof ok_met, m));

    const uint8_t h_v2[12] = {2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
    assert_int_equal(parse_crafted(h_v2, sizeof h_v2, ok_met, sizeof ok_met, m),
                     AIMS_E_UNSUPPORTED);
    const uint8_t h_flags[12] = {1, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0};
    assert_int_equal(parse_crafted(h_flags, sizeof h_flags, ok_met, sizeof ok_met, m),
                     AIMS_E_CORRUPT);
    const uint8_t h_many[12] = {1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(parse_crafted(h_many, sizeof h_many, ok_met, sizeof ok_met, m),
                     AIMS_E_CORRUPT);
    assert_int_equal(parse_crafted(h1, 8, ok_met, sizeof ok_met, m), AIMS_E_CORRUPT);
    const uint8_t h2[12] = {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0}; /* 2 entries, 1 present */
    assert_int_equal(parse_crafted(h2, sizeof h2, ok_met, sizeof ok_met, m), AIMS_E_CORRUPT);
    const uint8_t dup[] = {1, 0, 0, 0, 'k', 0, 0, 0, 0, 1, 0, 0, 0, 'k', 0, 0, 0, 0};
    assert_int_equal(parse_crafted(h2, sizeof h2, dup, sizeof dup, m), AIMS_E_CORRUPT);
    const uint8_t trailing[] = {1, 0, 0, 0, 'k', 0, 0, 0, 0, 'x'};
    assert_int_equal(parse_crafted(h1, sizeof h1, trailing, sizeof trailing, m), AIMS_E_CORRUPT);
    const uint8_t nul_key[] = {1, 0, 0, 0, '\0', 0, 0, 0, 0};
    assert_int_equal(parse_crafted(h1, sizeof h1, nul_key, sizeof nul_key, m), AIMS_E_CORRUPT);
    const uint8_t long_len[] = {0xff, 0xff, 0xff, 0x7f, 'k'};
    assert_int_equal(parse_crafted(h1, sizeof h1, long_len, sizeof long_len, m), AIMS_E_CORRUPT);
    uint8_t big_key[4 + 65 + 4];
    memset(big_key, 'a', sizeof big_key);
    big_key[0] = 65;
    big_key[1] = big_key[2] = big_key[3] = 0;
    memset(big_key + 69, 0, 4);
    assert_int_equal(parse_crafted(h1, sizeof h1, big_key, sizeof big_key, m), AIMS_E_CORRUPT);
    /* pipeline announced but absent; model absent */
    const uint8_t h_pipe[12] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    assert_int_not_equal(parse_crafted(h_pipe, sizeof h_pipe, NULL, 0, m), AIMS_OK);
    const uint8_t h0[12] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_not_equal(parse_crafted(h0, sizeof h0, NULL, 0, NULL), AIMS_OK);
    OK(parse_crafted(h0, sizeof h0, NULL, 0, m));
    aims_model_destroy(m);
}

/* ---- threads ---------------------------------------------------------------------------- */

typedef struct tctx {
    const aims_bundle *b;
    const float *x;
    const float *want;
    int bad;
} tctx;

static void *predict_worker(void *v)
{
    tctx *c = v;
    for (size_t it = 0; it < 300; it++) {
        const size_t r = it % ROWS;
        float out[K];
        if (aims_bundle_predict_rows(c->b, AIMS_OUT_SCORES, c->x + r * IN, 1, IN, out, K) !=
                AIMS_OK ||
            memcmp(out, c->want + r * K, sizeof out) != 0) {
            c->bad++;
        }
    }
    return NULL;
}

/* Many threads predicting on one int8 bundle get the single-threaded answers. */
static void test_bundle_concurrent_predict(void **state)
{
    (void)state;
    float x[ROWS * IN];
    aims_pipeline *p = fill_and_fit(x, 13);
    aims_model *m = make_model(AIMS_MODEL_KIND_MLP, IN, H, K, 14);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(ROWS, IN, x, NULL, &ds));
    aims_model *q = NULL;
    OK(aims_model_quantize(m, ds, &q));
    aims_bundle *b = NULL;
    OK(aims_bundle_create(p, q, &b));
    float want[ROWS * K];
    for (size_t r = 0; r < ROWS; r++) {
        OK(aims_bundle_predict_rows(b, AIMS_OUT_SCORES, x + r * IN, 1, IN, want + r * K, K));
    }
    enum { T = 4 };
    pthread_t th[T];
    tctx c[T];
    for (size_t i = 0; i < T; i++) {
        c[i] = (tctx){b, x, want, 0};
        assert_int_equal(pthread_create(&th[i], NULL, predict_worker, &c[i]), 0);
    }
    for (size_t i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].bad, 0);
    }
    aims_bundle_destroy(b);
    aims_model_destroy(q);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

/* ---- allocation failures ------------------------------------------------------------------- */

typedef struct bctx {
    aims_pipeline *p;
    aims_model *m;
    aims_bundle *b;
    const float *x;
} bctx;

static aims_status op_create_save_load(void *v)
{
    bctx *c = v;
    aims_bundle *b = NULL;
    AIMSI_TRY(aims_bundle_create(c->p, c->m, &b));
    aims_status rc = aims_bundle_set_meta(b, "name", "n");
    const char *path = tmp_path("oom");
    if (rc == AIMS_OK) {
        rc = aims_bundle_save(b, path);
    }
    aims_bundle_destroy(b);
    b = NULL;
    if (rc == AIMS_OK) {
        rc = aims_bundle_load(path, &b);
    }
    if (rc == AIMS_OK) {
        float out[ROWS * K];
        rc = aims_bundle_predict_rows(b, AIMS_OUT_PROBA, c->x, ROWS, IN, out, ROWS * K);
        aims_bundle_destroy(b);
    }
    unlink(path);
    return rc;
}

static aims_status op_predict_texts(void *v)
{
    bctx *c = v;
    float out[NDOCS * K];
    return aims_bundle_predict_texts(c->b, AIMS_OUT_PROBA, g_docs, NULL, NDOCS, out, NDOCS * K);
}

static void test_bundle_alloc_failures(void **state)
{
    (void)state;
    float x[ROWS * IN];
    bctx c = {fill_and_fit(x, 10), make_model(AIMS_MODEL_KIND_MLP, IN, H, K, 11), NULL,
              x};
    ta_fail_loop("bundle create/save/load/predict_rows", op_create_save_load, &c);
    aims_pipeline_destroy(c.p);
    aims_model_destroy(c.m);

    c.p = fitted_text();
    c.m = make_model(AIMS_MODEL_KIND_SOFTMAX, BUCKETS, 0, K, 12);
    OK(aims_bundle_create(c.p, c.m, &c.b));
    ta_fail_loop("bundle predict_texts", op_predict_texts, &c);
    aims_bundle_destroy(c.b);
    aims_pipeline_destroy(c.p);
    aims_model_destroy(c.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bundle_roundtrip_rows, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bundle_no_pipeline_quantized, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_bundle_texts_dense_model, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bundle_errors, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bundle_hostile_bytes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bundle_crafted_sections, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bundle_alloc_failures, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_bundle_concurrent_predict, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
