/*
 * test_pipeline.c -- white-box tests of the pipeline steps, files and threads.
 *
 * Reference numbers marked "sklearn" were produced once with Debian's
 * /usr/bin/python3 (scikit-learn 1.2.1) by the snippets quoted next to them.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "data/aimsi_steps.h"
#include "testalloc.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

/* NaN/inf are the subject of several tests here: allow them in the dataset. */
static aims_dataset *dense(size_t rows, size_t cols, const float *x)
{
    aims_dataset *ds = NULL;
    aims_loadopts *lo = NULL;
    OK(aims_loadopts_create(&lo));
    OK(aims_loadopts_set_param_i64(lo, AIMS_LOAD_NONFINITE, 1));
    OK(aims_dataset_create_dense_v2(rows, cols, x, NULL, lo, &ds));
    aims_loadopts_destroy(lo);
    return ds;
}

static aims_pipeline *num_pipe(aims_step_kind k)
{
    aims_pipeline *p = NULL;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, k, NULL));
    return p;
}

static void fit_rows(aims_pipeline *p, size_t rows, size_t cols, const float *x)
{
    aims_dataset *ds = dense(rows, cols, x);
    OK(aims_pipeline_fit(p, ds));
    aims_dataset_destroy(ds);
}

static void assert_floats(const float *got, const float *want, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i])) {
            assert_true(isnan(got[i]));
            continue;
        }
        if (fabs((double)got[i] - (double)want[i]) > tol) {
            fail_msg("index %zu: got %.9g want %.9g", i, (double)got[i], (double)want[i]);
        }
    }
}

/* ---- hashing -------------------------------------------------------------------- */

static void test_murmur_golden(void **state)
{
    (void)state;
    /* sklearn: from sklearn.utils import murmurhash3_32; murmurhash3_32(b"hello", 0) */
    assert_int_equal((int32_t)aimsi_murmur3_32("hello", 5, 0), 613153351);
    assert_int_equal((int32_t)aimsi_murmur3_32("world", 5, 0), -74040069);
    assert_int_equal((int32_t)aimsi_murmur3_32("a", 1, 0), 1009084850);
    assert_int_equal((int32_t)aimsi_murmur3_32("ab", 2, 0), -1681926305);
    assert_int_equal((int32_t)aimsi_murmur3_32("abc", 3, 0), -1277324294);
    assert_int_equal((int32_t)aimsi_murmur3_32("abcd", 4, 0), 1139631978);
    assert_int_equal((int32_t)aimsi_murmur3_32("hello world", 11, 0), 1586663183);
    assert_int_equal((int32_t)aimsi_murmur3_32("", 0, 0), 0);
}

/* ---- numeric steps ------------------------------------------------------------- */

static void test_standardize_math(void **state)
{
    (void)state;
    const float x[] = {1, 2, 3, 2, 5, 2, 7, 2};
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_STANDARDIZE);
    fit_rows(p, 4, 2, x);
    float out[8];
    OK(aims_pipeline_transform_rows(p, x, 4, 2, out, 8));
    /* sklearn: StandardScaler().fit_transform([[1,2],[3,2],[5,2],[7,2]]) */
    const float want[] = {-1.3416408f, 0, -0.4472136f, 0, 0.4472136f, 0, 1.3416408f, 0};
    assert_floats(out, want, 8, 1e-6);
    size_t oc = 0;
    OK(aims_pipeline_output_cols(p, &oc));
    assert_int_equal(oc, 2);
    aims_pipeline_destroy(p);
}

static void test_minmax_clip_scale_math(void **state)
{
    (void)state;
    const float x[] = {0, 4, 5, 4, 10, 4};
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_MINMAX);
    OK(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_LOW, -1.0));
    OK(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_HIGH, 1.0));
    fit_rows(p, 3, 2, x);
    float out[6];
    OK(aims_pipeline_transform_rows(p, x, 3, 2, out, 6));
    const float want[] = {-1, -1, 0, -1, 1, -1}; /* constant column -> low */
    assert_floats(out, want, 6, 1e-6);
    aims_pipeline_destroy(p);

    p = num_pipe(AIMS_STEP_KIND_SCALE);
    OK(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_FACTOR, 0.5));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_CLIP, NULL));
    OK(aims_pipeline_set_step_param_f64(p, 1, AIMS_STEP_LOW, 1.0));
    OK(aims_pipeline_set_step_param_f64(p, 1, AIMS_STEP_HIGH, 2.0));
    OK(aims_pipeline_set_step_param_i64(p, 1, AIMS_STEP_COL_END, 1));
    fit_rows(p, 3, 2, x);
    OK(aims_pipeline_transform_rows(p, x, 3, 2, out, 6));
    const float want2[] = {1, 2, 2, 2, 2, 2};
    assert_floats(out, want2, 6, 0);
    aims_pipeline_destroy(p);
}

static void test_impute_math(void **state)
{
    (void)state;
    const float x[] = {1, NAN, 3, 2, NAN, 4, 10, 8};
    const int64_t strategies[] = {0, 1, 2};
    const float want_fill[3][2] = {{14.0f / 3.0f, 14.0f / 3.0f}, {3, 4}, {-7, -7}};
    for (int s = 0; s < 3; s++) {
        aims_pipeline *p = num_pipe(AIMS_STEP_KIND_IMPUTE);
        OK(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_STRATEGY, strategies[s]));
        OK(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_VALUE, -7.0));
        fit_rows(p, 4, 2, x);
        float out[8];
        OK(aims_pipeline_transform_rows(p, x, 4, 2, out, 8));
        const float want[] = {1, want_fill[s][1], 3, 2, want_fill[s][0], 4, 10, 8};
        assert_floats(out, want, 8, 1e-6);
        aims_pipeline_destroy(p);
    }
    /* even count: median is the mean of the two middle values */
    const float y[] = {1, 2, 3, 10, NAN};
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_IMPUTE);
    OK(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_STRATEGY, 1));
    fit_rows(p, 5, 1, y);
    float out[5];
    OK(aims_pipeline_transform_rows(p, y, 5, 1, out, 5));
    assert_true(out[4] == 2.5f);
    aims_pipeline_destroy(p);
}

static void test_onehot_math(void **state)
{
    (void)state;
    const float x[] = {9, 0, 2, 9, 1, 7, 9, 2, 1};
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_ONEHOT);
    OK(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_COL_BEGIN, 1));
    OK(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_COL_END, 2));
    fit_rows(p, 3, 3, x);
    size_t oc = 0;
    OK(aims_pipeline_output_cols(p, &oc));
    assert_int_equal(oc, 5);
    const float t[] = {9, 1, 5, 9, 1.5f, 6, 9, 3, 6, 9, -1, 6};
    float out[20];
    OK(aims_pipeline_transform_rows(p, t, 4, 3, out, 20));
    const float want[] = {9, 0, 1, 0, 5, 9, 0, 0, 0, 6, 9, 0, 0, 0, 6, 9, 0, 0, 0, 6};
    assert_floats(out, want, 20, 0);
    /* a one-hot pipeline through the dataset path too */
    aims_dataset *ds = dense(4, 3, t);
    aims_dataset *o = NULL;
    OK(aims_pipeline_transform(p, ds, &o));
    assert_int_equal(aims_dataset_cols(o), 5);
    assert_floats(aims_dataset_features(o), want, 20, 0);
    aims_dataset_destroy(o);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

static void test_nonfinite_policy(void **state)
{
    (void)state;
    float x[] = {1, 2, 3, NAN, 5, 6};
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_STANDARDIZE);
    aims_dataset *ds = dense(3, 2, x);
    assert_int_equal(aims_pipeline_fit(p, ds), AIMS_E_INVAL);
    assert_non_null(strstr(aims_pipeline_errmsg(p), "row 1, column 1"));
    assert_false(aims_pipeline_is_fitted(p));
    OK(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_NONFINITE, 1));
    OK(aims_pipeline_fit(p, ds));
    float out[6];
    OK(aims_pipeline_transform_rows(p, x, 3, 2, out, 6));
    assert_true(isnan(out[3]));
    assert_true(fabsf(out[1] + 1.0f) < 1e-6f); /* column 1 fitted on {2, 6} */
    /* strict transform: error, out untouched */
    OK(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_NONFINITE, 0));
    const float clean[] = {1, 2, 3, 4, 5, 6};
    fit_rows(p, 3, 2, clean);
    float keep[6] = {42, 42, 42, 42, 42, 42};
    x[3] = INFINITY;
    assert_int_equal(aims_pipeline_transform_rows(p, x, 3, 2, keep, 6), AIMS_E_INVAL);
    assert_non_null(strstr(aims_errmsg(), "row 1, column 1"));
    for (int i = 0; i < 6; i++) {
        assert_true(keep[i] == 42.0f);
    }
    /* an IMPUTE first makes NaN acceptable to the next step */
    aims_pipeline_destroy(p);
    p = num_pipe(AIMS_STEP_KIND_IMPUTE);
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL));
    x[3] = NAN;
    aims_dataset_destroy(ds);
    ds = dense(3, 2, x);
    OK(aims_pipeline_fit(p, ds));
    OK(aims_pipeline_transform_rows(p, x, 3, 2, out, 6));
    assert_true(isfinite(out[3]));
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

static void test_misuse_and_rules(void **state)
{
    (void)state;
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_SCALE);
    size_t idx = 9;
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, &idx), AIMS_E_INVAL);
    assert_int_equal(idx, 9);
    assert_int_equal(aims_pipeline_add(p, (aims_step_kind)99, NULL), AIMS_E_INVAL);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, 3, AIMS_STEP_COL_BEGIN, 0), AIMS_E_RANGE);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_BUCKETS, 8), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_FACTOR, 2), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_COL_BEGIN, -3), AIMS_E_RANGE);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, 0, AIMS_PIPELINE_THREADS, 1),
                     AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_pipeline_set_param_i64(p, AIMS_STEP_LOW, 1), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, 9999), AIMS_E_RANGE);
    double f = 0;
    OK(aims_pipeline_get_step_param_f64(p, 0, AIMS_STEP_FACTOR, &f));
    assert_true(fabs(f - 1.0 / 255.0) < 1e-15);
    float out[4];
    const float x[] = {1, 2, 3, 4};
    assert_int_equal(aims_pipeline_transform_rows(p, x, 2, 2, out, 4), AIMS_E_STATE);
    fit_rows(p, 2, 2, x);
    assert_int_equal(aims_pipeline_transform_rows(p, x, 1, 4, out, 4), AIMS_E_INVAL);
    assert_int_equal(aims_pipeline_transform_rows(p, x, 2, 2, out, 3), AIMS_E_RANGE);
    assert_int_equal(aims_pipeline_transform_rows(p, NULL, 2, 2, out, 4), AIMS_E_MISUSE);
    OK(aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_COL_END, 5));
    aims_dataset *ds = dense(2, 2, x);
    assert_int_equal(aims_pipeline_fit(p, ds), AIMS_E_INVAL);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);

    OK(aims_pipeline_create(&p));
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, NULL), AIMS_E_INVAL);
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL));
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL), AIMS_E_INVAL);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_NORMALIZE, NULL), AIMS_E_INVAL);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_TFIDF, NULL), AIMS_E_INVAL);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL), AIMS_E_INVAL);
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, NULL));
    assert_int_equal(aims_pipeline_step_kind(p, 1), AIMS_STEP_KIND_HASH);
    assert_int_equal(aims_pipeline_step_kind(p, 2), 0);
    aims_pipeline_destroy(p);
    aims_pipeline_destroy(NULL);
    assert_int_equal(aims_pipeline_num_steps(NULL), 0);
}

/* ---- text steps ------------------------------------------------------------------ */

static aims_pipeline *text_pipe(int ngrams, int tfidf)
{
    aims_pipeline *p = NULL;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_NORMALIZE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL));
    if (ngrams) {
        OK(aims_pipeline_add(p, AIMS_STEP_KIND_NGRAMS, NULL));
    }
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, NULL));
    if (tfidf) {
        OK(aims_pipeline_add(p, AIMS_STEP_KIND_TFIDF, NULL));
    }
    return p;
}

static const char *const k_docs[] = {"The quick brown fox jumps over the lazy dog",
                                     "the dog barks, the fox runs!",
                                     "A lazy afternoon: dogs and foxes sleep"};

static void test_tfidf_golden(void **state)
{
    (void)state;
    aims_pipeline *p = text_pipe(0, 1);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(3, k_docs, NULL, NULL, &ds));
    aims_dataset *o = NULL;
    OK(aims_pipeline_fit_transform(p, ds, &o));
    const uint64_t *off;
    const uint32_t *ids;
    const float *w;
    OK(aims_dataset_tokens(o, &off, &ids, &w));
    /* sklearn: TfidfTransformer().fit_transform(HashingVectorizer(n_features=2**18,
     *   alternate_sign=False, norm=None).transform(docs)), indices sorted */
    const uint32_t want_ids[] = {8649, 24734, 25819, 63437, 79543, 194085, 237056, 244631,
                                 24734, 32664, 194085, 194672, 244631,
                                 6461, 7941, 62674, 79543, 166932, 180525};
    const float want_w[] = {0.352480045f, 0.536140319f, 0.352480045f, 0.352480045f,
                            0.268070159f, 0.268070159f, 0.352480045f, 0.268070159f,
                            0.650331097f, 0.42755362f, 0.325165549f, 0.42755362f,
                            0.325165549f,
                            0.423394483f, 0.423394483f, 0.423394483f, 0.322002418f,
                            0.423394483f, 0.423394483f};
    assert_int_equal(off[1] - off[0], 8);
    assert_int_equal(off[2] - off[1], 5);
    assert_int_equal(off[3] - off[2], 6);
    for (size_t i = 0; i < 19; i++) {
        assert_int_equal(ids[off[0] + i], want_ids[i]);
    }
    assert_floats(w + off[0], want_w, 19, 1e-6);
    assert_int_equal(aims_dataset_token_dim(o), 1u << 18);
    aims_dataset_destroy(o);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

/* Bucket of a token under the default 2^18 buckets, computed independently. */
static uint32_t bucket_of(const char *tok)
{
    const int32_t h = (int32_t)aimsi_murmur3_32(tok, strlen(tok), 0);
    const int64_t a = h < 0 ? -(int64_t)h : h;
    return (uint32_t)(a % (1 << 18));
}

static void test_tokenize_utf8(void **state)
{
    (void)state;
    aims_pipeline *p = text_pipe(1, 0);
    /* overlong '/', a surrogate, > U+10FFFF, lone continuation, valid e-acute */
    const char *docs[] = {"Ab\xC0\xAF" "cd\xED\xA0\x80" "ef\xF4\x90\x80\x80gh\x80ij caf\xC3\xA9 x",
                          "", "!!! ? a"};
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(3, docs, NULL, NULL, &ds));
    aims_dataset *o = NULL;
    OK(aims_pipeline_fit_transform(p, ds, &o));
    const uint64_t *off;
    const uint32_t *ids;
    const float *w = (const float *)1;
    OK(aims_dataset_tokens(o, &off, &ids, &w));
    assert_null(w);
    const char *want[] = {"ab", "cd", "ef", "gh", "ij", "caf\xC3\xA9",
                          "ab cd", "cd ef", "ef gh", "gh ij", "ij caf\xC3\xA9"};
    assert_int_equal(off[1] - off[0], 11);
    for (size_t i = 0; i < 11; i++) {
        assert_int_equal(ids[off[0] + i], bucket_of(want[i]));
    }
    assert_int_equal(off[2], off[1]); /* empty document -> empty row */
    assert_int_equal(off[3], off[2]); /* no token of length >= 2 */
    aims_dataset_destroy(o);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

static void test_signed_hash(void **state)
{
    (void)state;
    aims_pipeline *p = text_pipe(0, 0);
    OK(aims_pipeline_set_step_param_i64(p, 2, AIMS_STEP_SIGNED, 1));
    OK(aims_pipeline_set_step_param_i64(p, 2, AIMS_STEP_BUCKETS, 1000));
    const char *docs[] = {"hello world"};
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(1, docs, NULL, NULL, &ds));
    OK(aims_pipeline_fit(p, ds));
    aims_dataset *o = NULL;
    OK(aims_pipeline_transform_texts(p, docs, NULL, 1, &o));
    const uint64_t *off;
    const uint32_t *ids;
    const float *w;
    OK(aims_dataset_tokens(o, &off, &ids, &w));
    /* hello: 613153351 (>= 0), world: -74040069 (< 0) */
    assert_int_equal(ids[0], 613153351u % 1000u);
    assert_int_equal(ids[1], 74040069u % 1000u);
    assert_true(w[0] == 1.0f && w[1] == -1.0f);
    aims_dataset_destroy(o);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

/* ---- equality of the entry points, threads, files ------------------------------- */

static float *random_rows(size_t rows, size_t cols, uint64_t seed)
{
    aimsi_rng rng;
    aimsi_rng_seed(&rng, seed);
    float *x = test_malloc(rows * cols * sizeof(float));
    for (size_t i = 0; i < rows * cols; i++) {
        x[i] = (float)(aimsi_rng_unit(&rng) * 100.0 - 20.0);
    }
    for (size_t r = 0; r < rows; r++) {
        x[r * cols + 3] = (float)(r % 5); /* a categorical column */
    }
    return x;
}

static aims_pipeline *mixed_num_pipe(void)
{
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_SCALE);
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_ONEHOT, NULL));
    OK(aims_pipeline_set_step_param_i64(p, 1, AIMS_STEP_COL_BEGIN, 3));
    OK(aims_pipeline_set_step_param_i64(p, 1, AIMS_STEP_COL_END, 4));
    OK(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_FACTOR, 1.0)); /* keep categories */
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_MINMAX, NULL));
    OK(aims_pipeline_set_step_param_i64(p, 3, AIMS_STEP_COL_BEGIN, 2));
    return p;
}

static float *run_num(aims_pipeline *p, const float *x, size_t rows, size_t cols, size_t *oc)
{
    aims_dataset *ds = dense(rows, cols, x);
    aims_dataset *o = NULL;
    OK(aims_pipeline_fit_transform(p, ds, &o));
    OK(aims_pipeline_output_cols(p, oc));
    float *out = test_malloc(rows * *oc * sizeof(float));
    memcpy(out, aims_dataset_features(o), rows * *oc * sizeof(float));
    float *out2 = test_malloc(rows * *oc * sizeof(float));
    OK(aims_pipeline_transform_rows(p, x, rows, cols, out2, rows * *oc));
    assert_memory_equal(out, out2, rows * *oc * sizeof(float));
    test_free(out2);
    aims_dataset_destroy(o);
    aims_dataset_destroy(ds);
    return out;
}

static void test_threads_identical_numeric(void **state)
{
    (void)state;
    const size_t rows = 5000;
    const size_t cols = 13;
    float *x = random_rows(rows, cols, 7);
    size_t oc1 = 0;
    size_t oc2 = 0;
    aims_pipeline *p = mixed_num_pipe();
    float *a = run_num(p, x, rows, cols, &oc1);
    OK(aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, 2));
    float *b = run_num(p, x, rows, cols, &oc2);
    assert_int_equal(oc1, cols - 1 + 5);
    assert_int_equal(oc1, oc2);
    assert_memory_equal(a, b, rows * oc1 * sizeof(float));
    test_free(a);
    test_free(b);
    test_free(x);
    aims_pipeline_destroy(p);
}

/* Serialise through the container into memory. */
static void *save_mem(const aims_pipeline *p, size_t *len)
{
    aimsi_cwriter *w = NULL;
    OK(aimsi_cw_create(AIMSI_KIND_PIPELINE, 0, &w));
    OK(aimsi_pipeline_write(p, w));
    void *data = NULL;
    OK(aimsi_cw_finish(w, &data, len));
    aimsi_cw_destroy(w);
    return data;
}

static void test_save_load_numeric(void **state)
{
    (void)state;
    const size_t rows = 300;
    const size_t cols = 6;
    float *x = random_rows(rows, cols, 3);
    aims_pipeline *p = mixed_num_pipe();
    size_t oc = 0;
    float *a = run_num(p, x, rows, cols, &oc);
    char path[] = "/tmp/aims_test_pipeline_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    OK(aims_pipeline_save(p, path));
    aims_pipeline *q = NULL;
    OK(aims_pipeline_load(path, &q));
    unlink(path);
    assert_true(aims_pipeline_is_fitted(q));
    float *b = test_malloc(rows * oc * sizeof(float));
    OK(aims_pipeline_transform_rows(q, x, rows, cols, b, rows * oc));
    assert_memory_equal(a, b, rows * oc * sizeof(float));

    /* truncation at every byte and single-byte flips: errors, never crashes */
    size_t len = 0;
    uint8_t *data = save_mem(p, &len);
    for (size_t n = 0; n < len; n++) {
        aims_pipeline *r = NULL;
        assert_int_not_equal(aims_pipeline_parse(data, n, &r), AIMS_OK);
        assert_null(r);
    }
    for (size_t i = 0; i < len; i++) {
        data[i] ^= 0x5a;
        aims_pipeline *r = NULL;
        if (aims_pipeline_parse(data, len, &r) == AIMS_OK) {
            aims_pipeline_destroy(r); /* a flip in a don't-care byte may still parse */
        }
        data[i] ^= 0x5a;
    }
    aimsi_free(data);
    test_free(a);
    test_free(b);
    test_free(x);
    aims_pipeline_destroy(q);
    aims_pipeline_destroy(p);
}

/* Encode a hand-made PIPE section in a valid container: the loader must
 * check what the container CRC cannot (the section content). */
static aims_status parse_section(const void *sec, size_t n)
{
    aimsi_cwriter *w = NULL;
    OK(aimsi_cw_create(AIMSI_KIND_PIPELINE, 0, &w));
    OK(aimsi_cw_add(w, AIMSI_TAG('P', 'I', 'P', 'E'), sec, n));
    void *data = NULL;
    size_t len = 0;
    OK(aimsi_cw_finish(w, &data, &len));
    aimsi_cw_destroy(w);
    aims_pipeline *p = NULL;
    const aims_status rc = aims_pipeline_parse(data, len, &p);
    aims_pipeline_destroy(p);
    aimsi_free(data);
    return rc;
}

static void test_load_validates_content(void **state)
{
    (void)state;
    const float x[] = {1, 2, 3, 4};
    aims_pipeline *p = num_pipe(AIMS_STEP_KIND_STANDARDIZE);
    fit_rows(p, 2, 2, x);
    size_t len = 0;
    uint8_t *data = save_mem(p, &len);
    aimsi_creader *r = NULL;
    OK(aimsi_cr_open_mem(data, len, 0, AIMSI_KIND_PIPELINE, &r));
    uint8_t *sec = NULL;
    size_t n = 0;
    OK(aimsi_cr_section(r, AIMSI_TAG('P', 'I', 'P', 'E'), 1 << 20, (void **)&sec, &n));
    aimsi_cr_destroy(r);
    OK(parse_section(sec, n));
    /* header: version(0) family(4) nsteps(8) fitted(12) threads(16) in_w(24) out_w(32);
     * step 0 at 40: kind, 17 params, in_w, out_w, c0, c1, means, inv stds */
    const struct {
        size_t at;
        uint8_t v;
        aims_status want;
    } cases[] = {
        {0, 9, AIMS_E_UNSUPPORTED}, /* version */
        {4, 2, AIMS_E_CORRUPT},     /* family */
        {8, 65, AIMS_E_CORRUPT},    /* step count */
        {24, 3, AIMS_E_CORRUPT},    /* input width */
        {40, 22, AIMS_E_CORRUPT},   /* kind: a text step in a numeric pipeline */
        {40, 77, AIMS_E_CORRUPT},   /* unknown kind */
        {44 + 8 * 16, 0x40, AIMS_E_CORRUPT}, /* nonfinite param = 2.0 */
        {44 + 8 * 17, 7, AIMS_E_CORRUPT},    /* step in_w */
        {44 + 8 * 17 + 24, 1, AIMS_E_CORRUPT}, /* c1 */
        {44 + 8 * 21 + 16 + 7, 0xff, AIMS_E_CORRUPT}, /* inv std -> NaN */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *c = test_malloc(n);
        memcpy(c, sec, n);
        if (cases[i].at == 44 + 8 * 16) {
            memset(c + cases[i].at, 0, 8);
            c[cases[i].at + 7] = cases[i].v;
        } else if (cases[i].at == 44 + 8 * 21 + 16 + 7) {
            c[cases[i].at] = 0xff;
            c[cases[i].at - 1] = 0xf8;
        } else {
            c[cases[i].at] = cases[i].v;
        }
        assert_int_equal(parse_section(c, n), cases[i].want);
        test_free(c);
    }
    assert_int_equal(parse_section(sec, n - 1), AIMS_E_CORRUPT);
    uint8_t *longer = test_malloc(n + 1);
    memcpy(longer, sec, n);
    longer[n] = 0;
    assert_int_equal(parse_section(longer, n + 1), AIMS_E_CORRUPT);
    test_free(longer);
    aimsi_free(sec);
    aimsi_free(data);
    aims_pipeline_destroy(p);
}

static char **corpus(size_t n)
{
    static const char *const words[] = {"alpha", "beta", "gamma", "delta", "eps", "zeta",
                                        "eta", "theta", "iota", "kappa", "\xC3\xA9t\xC3\xA9",
                                        "x", "Mu", "NU"};
    aimsi_rng rng;
    aimsi_rng_seed(&rng, 11);
    char **docs = test_malloc(n * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        docs[i] = test_malloc(256);
        docs[i][0] = '\0';
        const size_t nw = (size_t)aimsi_rng_below(&rng, 20);
        for (size_t k = 0; k < nw; k++) {
            strcat(docs[i], words[aimsi_rng_below(&rng, 14)]);
            strcat(docs[i], k % 3 == 0 ? ", " : " ");
        }
    }
    return docs;
}

static void free_corpus(char **docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        test_free(docs[i]);
    }
    test_free(docs);
}

static void assert_same_tokens(const aims_dataset *a, const aims_dataset *b)
{
    const uint64_t *oa, *ob;
    const uint32_t *ia, *ib;
    const float *wa, *wb;
    OK(aims_dataset_tokens(a, &oa, &ia, &wa));
    OK(aims_dataset_tokens(b, &ob, &ib, &wb));
    const size_t rows = aims_dataset_rows(a);
    assert_int_equal(rows, aims_dataset_rows(b));
    for (size_t i = 0; i <= rows; i++) {
        assert_int_equal(oa[i] - oa[0], ob[i] - ob[0]);
    }
    const size_t n = (size_t)(oa[rows] - oa[0]);
    assert_memory_equal(ia + oa[0], ib + ob[0], n * sizeof(uint32_t));
    assert_true((wa == NULL) == (wb == NULL));
    if (wa != NULL) {
        assert_memory_equal(wa + oa[0], wb + ob[0], n * sizeof(float));
    }
}

static void test_text_threads_and_files(void **state)
{
    (void)state;
    const size_t n = 700;
    char **docs = corpus(n);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(n, (const char *const *)docs, NULL, NULL, &ds));
    aims_pipeline *p = text_pipe(1, 1);
    aims_dataset *a = NULL;
    OK(aims_pipeline_fit_transform(p, ds, &a));
    aims_dataset *b = NULL;
    OK(aims_pipeline_transform_texts(p, (const char *const *)docs, NULL, n, &b));
    assert_same_tokens(a, b);
    aims_dataset_destroy(b);
    OK(aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, 2));
    OK(aims_pipeline_fit_transform(p, ds, &b));
    assert_same_tokens(a, b);
    aims_dataset_destroy(b);

    size_t len = 0;
    uint8_t *data = save_mem(p, &len);
    aims_pipeline *q = NULL;
    OK(aims_pipeline_parse(data, len, &q));
    OK(aims_pipeline_transform(q, ds, &b));
    assert_same_tokens(a, b);
    aims_dataset_destroy(b);
    aims_pipeline_destroy(q);
    for (size_t cut = 0; cut < len; cut += 1 + cut / 64) {
        assert_int_not_equal(aims_pipeline_parse(data, cut, &q), AIMS_OK);
    }
    aimsi_free(data);
    aims_dataset_destroy(a);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
    free_corpus(docs, n);
}

/* ---- concurrent transforms on one pipeline ---------------------------------------- */

typedef struct conc_ctx {
    const aims_pipeline *num;
    const aims_pipeline *text;
    const float *x;
    size_t rows, cols, oc;
    const float *want;
    char **docs;
    size_t ndocs;
    const aims_dataset *want_tok;
    int ok;
} conc_ctx;

static void *conc_main(void *arg)
{
    conc_ctx *c = arg;
    float *out = malloc(c->rows * c->oc * sizeof(float));
    c->ok = out != NULL;
    for (int it = 0; it < 5 && c->ok; it++) {
        c->ok = aims_pipeline_transform_rows(c->num, c->x, c->rows, c->cols, out,
                                             c->rows * c->oc) == AIMS_OK &&
                memcmp(out, c->want, c->rows * c->oc * sizeof(float)) == 0;
        aims_dataset *t = NULL;
        c->ok = c->ok && aims_pipeline_transform_texts(c->text, (const char *const *)c->docs,
                                                       NULL, c->ndocs, &t) == AIMS_OK;
        if (c->ok) {
            const uint64_t *oa, *ob;
            const uint32_t *ia, *ib;
            const float *wa, *wb;
            aims_dataset_tokens(t, &oa, &ia, &wa);
            aims_dataset_tokens(c->want_tok, &ob, &ib, &wb);
            const size_t n = (size_t)oa[c->ndocs];
            c->ok = n == ob[c->ndocs] && memcmp(ia, ib, n * 4) == 0 &&
                    memcmp(wa, wb, n * 4) == 0;
        }
        aims_dataset_destroy(t);
    }
    free(out);
    return NULL;
}

static void test_concurrent_transforms(void **state)
{
    (void)state;
    const size_t rows = 2000;
    const size_t cols = 9;
    float *x = random_rows(rows, cols, 5);
    aims_pipeline *p = mixed_num_pipe();
    OK(aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, 2));
    size_t oc = 0;
    float *want = run_num(p, x, rows, cols, &oc);
    const size_t nd = 300;
    char **docs = corpus(nd);
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(nd, (const char *const *)docs, NULL, NULL, &ds));
    aims_pipeline *tp = text_pipe(1, 1);
    OK(aims_pipeline_set_param_i64(tp, AIMS_PIPELINE_THREADS, 2));
    aims_dataset *wt = NULL;
    OK(aims_pipeline_fit_transform(tp, ds, &wt));
    conc_ctx ctx[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (conc_ctx){p, tp, x, rows, cols, oc, want, docs, nd, wt, 0};
        assert_int_equal(pthread_create(&th[i], NULL, conc_main, &ctx[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(ctx[i].ok);
    }
    aims_dataset_destroy(wt);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(tp);
    free_corpus(docs, nd);
    test_free(want);
    test_free(x);
    aims_pipeline_destroy(p);
}

/* ---- allocation failures ---------------------------------------------------------- */

typedef struct af_ctx {
    const float *x;
    size_t rows, cols;
    const char *const *docs;
    size_t ndocs;
    int text;
} af_ctx;

static aims_status af_op(void *arg)
{
    const af_ctx *c = arg;
    aims_pipeline *p = NULL;
    aims_dataset *ds = NULL;
    aims_dataset *o = NULL;
    aims_pipeline *q = NULL;
    void *data = NULL;
    size_t len = 0;
    aimsi_cwriter *w = NULL;
    aims_status rc = aims_pipeline_create(&p);
    if (rc == AIMS_OK && c->text) {
        rc = aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_NGRAMS, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_HASH, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_set_step_param_i64(p, 2, AIMS_STEP_BUCKETS, 4096);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_TFIDF, NULL);
        rc = rc != AIMS_OK ? rc : aims_dataset_create_texts(c->ndocs, c->docs, NULL, NULL, &ds);
    } else if (rc == AIMS_OK) {
        rc = aims_pipeline_add(p, AIMS_STEP_KIND_IMPUTE, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_set_step_param_i64(p, 0, AIMS_STEP_STRATEGY, 1);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_ONEHOT, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_set_step_param_i64(p, 1, AIMS_STEP_COL_BEGIN, 3);
        rc = rc != AIMS_OK ? rc : aims_pipeline_set_step_param_i64(p, 1, AIMS_STEP_COL_END, 4);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, 2);
        aims_loadopts *lo = NULL;
        rc = rc != AIMS_OK ? rc : aims_loadopts_create(&lo);
        rc = rc != AIMS_OK ? rc : aims_loadopts_set_param_i64(lo, AIMS_LOAD_NONFINITE, 1);
        rc = rc != AIMS_OK ? rc : aims_dataset_create_dense_v2(c->rows, c->cols, c->x, NULL, lo, &ds);
        aims_loadopts_destroy(lo);
    }
    rc = rc != AIMS_OK ? rc : aims_pipeline_fit_transform(p, ds, &o);
    rc = rc != AIMS_OK ? rc : aimsi_cw_create(AIMSI_KIND_PIPELINE, 0, &w);
    rc = rc != AIMS_OK ? rc : aimsi_pipeline_write(p, w);
    rc = rc != AIMS_OK ? rc : aimsi_cw_finish(w, &data, &len);
    rc = rc != AIMS_OK ? rc : aims_pipeline_parse(data, len, &q);
    aimsi_cw_destroy(w);
    aimsi_free(data);
    aims_pipeline_destroy(q);
    aims_dataset_destroy(o);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
    return rc;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    float *x = random_rows(600, 5, 9);
    x[7] = NAN;
    af_ctx c = {.x = x, .rows = 600, .cols = 5};
    ta_fail_loop("numeric pipeline", af_op, &c);
    char **docs = corpus(40);
    c = (af_ctx){.docs = (const char *const *)docs, .ndocs = 40, .text = 1};
    ta_fail_loop("text pipeline", af_op, &c);
    free_corpus(docs, 40);
    test_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_murmur_golden, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_standardize_math, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_minmax_clip_scale_math, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_impute_math, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_onehot_math, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite_policy, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_misuse_and_rules, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tfidf_golden, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tokenize_utf8, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_signed_hash, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_threads_identical_numeric, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_save_load_numeric, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_load_validates_content, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_text_threads_and_files, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_transforms, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
