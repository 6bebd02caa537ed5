/*
 * test_api_pipeline.c -- black-box tests of aims_pipeline through libaims.so.
 *
 * Only <aims/aims.h>: fit/transform agreement between the three transform
 * entry points, thread-count independence, save/load through real files,
 * corrupt files, documented errors, and the allocation-failure loop.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

static float *make_rows(size_t rows, size_t cols)
{
    float *x = test_malloc(rows * cols * sizeof(float));
    uint32_t s = 12345;
    for (size_t i = 0; i < rows * cols; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = (float)((s >> 8) % 1000) / 7.0f;
    }
    return x;
}

static aims_pipeline *numeric(int threads)
{
    aims_pipeline *p = NULL;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_CLIP, NULL));
    OK(aims_pipeline_set_step_param_f64(p, 2, AIMS_STEP_LOW, -1.5));
    OK(aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, threads));
    return p;
}

static void temp_path(char *path)
{
    strcpy(path, "/tmp/aims_api_pipeline_XXXXXX");
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

static void test_pipeline_numeric_paths_agree(void **state)
{
    (void)state;
    const size_t rows = 3000;
    const size_t cols = 20;
    float *x = make_rows(rows, cols);
    int32_t *labels = test_malloc(rows * sizeof(int32_t));
    for (size_t i = 0; i < rows; i++) {
        labels[i] = (int32_t)(i % 3);
    }
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(rows, cols, x, labels, &ds));
    aims_pipeline *p1 = numeric(1);
    aims_pipeline *p2 = numeric(2);
    aims_dataset *a = NULL;
    aims_dataset *b = NULL;
    OK(aims_pipeline_fit_transform(p1, ds, &a));
    OK(aims_pipeline_fit_transform(p2, ds, &b));
    assert_memory_equal(aims_dataset_features(a), aims_dataset_features(b),
                        rows * cols * sizeof(float));
    assert_memory_equal(aims_dataset_labels(a), labels, rows * sizeof(int32_t));
    float *out = test_malloc(rows * cols * sizeof(float));
    OK(aims_pipeline_transform_rows(p1, x, rows, cols, out, rows * cols));
    assert_memory_equal(out, aims_dataset_features(a), rows * cols * sizeof(float));

    char path[64];
    temp_path(path);
    OK(aims_pipeline_save(p2, path));
    aims_pipeline *q = NULL;
    OK(aims_pipeline_load(path, &q));
    int64_t t = 0;
    OK(aims_pipeline_get_param_i64(q, AIMS_PIPELINE_THREADS, &t));
    assert_int_equal(t, 2);
    OK(aims_pipeline_transform_rows(q, x, rows, cols, out, rows * cols));
    assert_memory_equal(out, aims_dataset_features(a), rows * cols * sizeof(float));
    aims_pipeline_destroy(q);

    /* every truncation of the file is refused cleanly */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t buf[8192];
    const size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    unlink(path);
    for (size_t n = 0; n < len; n++) {
        q = NULL;
        assert_int_not_equal(aims_pipeline_parse(buf, n, &q), AIMS_OK);
        assert_null(q);
    }
    assert_int_equal(aims_pipeline_load("/nonexistent/dir/p.aims", &q), AIMS_E_NOTFOUND);

    /* wrong width, NaN input */
    assert_int_equal(aims_pipeline_transform_rows(p1, x, 10, cols - 1, out, rows * cols),
                     AIMS_E_INVAL);
    x[5] = NAN;
    assert_int_equal(aims_pipeline_transform_rows(p1, x, 10, cols, out, rows * cols),
                     AIMS_E_INVAL);
    assert_true(strlen(aims_errmsg()) > 0);

    test_free(out);
    aims_dataset_destroy(a);
    aims_dataset_destroy(b);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p1);
    aims_pipeline_destroy(p2);
    test_free(labels);
    test_free(x);
}

static const char *const k_docs[] = {"Hello World, hello again", "", "caf\xC3\xA9 \xFF\xFE bad bytes",
                                     "one two three two one", "   "};

static void test_pipeline_text_paths_agree(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(5, k_docs, NULL, NULL, &ds));
    aims_pipeline *p = NULL;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_NORMALIZE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_NGRAMS, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_TFIDF, NULL));
    aims_dataset *a = NULL;
    assert_int_equal(aims_pipeline_transform(p, ds, &a), AIMS_E_STATE);
    OK(aims_pipeline_fit_transform(p, ds, &a));
    aims_dataset *b = NULL;
    OK(aims_pipeline_transform_texts(p, k_docs, NULL, 5, &b));
    const uint64_t *oa, *ob;
    const uint32_t *ia, *ib;
    const float *wa, *wb;
    OK(aims_dataset_tokens(a, &oa, &ia, &wa));
    OK(aims_dataset_tokens(b, &ob, &ib, &wb));
    assert_memory_equal(oa, ob, 6 * sizeof(uint64_t));
    assert_memory_equal(ia, ib, oa[5] * sizeof(uint32_t));
    assert_memory_equal(wa, wb, oa[5] * sizeof(float));
    assert_int_equal(oa[2], oa[1]); /* empty document: empty row */
    assert_int_equal(oa[5], oa[4]);
    /* each row is l2-normalised */
    double n2 = 0;
    for (uint64_t k = oa[0]; k < oa[1]; k++) {
        n2 += (double)wa[k] * wa[k];
    }
    assert_true(fabs(n2 - 1.0) < 1e-5);
    size_t oc = 0;
    OK(aims_pipeline_output_cols(p, &oc));
    assert_int_equal(oc, 1u << 18);
    float dummy[1];
    assert_int_equal(aims_pipeline_transform_rows(p, dummy, 1, 1, dummy, 1), AIMS_E_STATE);
    aims_dataset_destroy(a);
    aims_dataset_destroy(b);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

typedef struct op_ctx {
    const float *x;
    size_t rows, cols;
    int text;
    const char *path;
} op_ctx;

static aims_status op_roundtrip(void *arg)
{
    const op_ctx *c = arg;
    aims_pipeline *p = NULL;
    aims_pipeline *q = NULL;
    aims_dataset *ds = NULL;
    aims_dataset *o = NULL;
    aims_status rc = aims_pipeline_create(&p);
    if (c->text) {
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_HASH, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_set_step_param_i64(p, 1, AIMS_STEP_BUCKETS, 512);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_TFIDF, NULL);
        rc = rc != AIMS_OK ? rc : aims_dataset_create_texts(5, k_docs, NULL, NULL, &ds);
    } else {
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_MINMAX, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL);
        rc = rc != AIMS_OK ? rc : aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, 2);
        rc = rc != AIMS_OK ? rc : aims_dataset_create_dense(c->rows, c->cols, c->x, NULL, &ds);
    }
    rc = rc != AIMS_OK ? rc : aims_pipeline_fit(p, ds);
    rc = rc != AIMS_OK ? rc : aims_pipeline_transform(p, ds, &o);
    rc = rc != AIMS_OK ? rc : aims_pipeline_save(p, c->path);
    rc = rc != AIMS_OK ? rc : aims_pipeline_load(c->path, &q);
    aims_pipeline_destroy(q);
    aims_dataset_destroy(o);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
    return rc;
}

static void test_pipeline_alloc_failures(void **state)
{
    (void)state;
    char path[64];
    temp_path(path);
    float *x = make_rows(500, 4);
    op_ctx c = {.x = x, .rows = 500, .cols = 4, .path = path};
    ta_fail_loop("numeric roundtrip", op_roundtrip, &c);
    c.text = 1;
    ta_fail_loop("text roundtrip", op_roundtrip, &c);
    unlink(path);
    test_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pipeline_numeric_paths_agree, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_text_paths_agree, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
