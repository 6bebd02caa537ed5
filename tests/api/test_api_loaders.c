/*
 * test_api_loaders.c -- black-box tests of the CSV and svmlight loaders
 * through aims_dataset_parse / aims_dataset_load_file and libaims.so only.
 *
 * Covers every loader option, hostile inputs (ragged rows, quotes, invalid
 * UTF-8, huge numbers, truncation at every byte), the allocation-failure loop
 * over both loaders, and sklearn's bundled tables as real data (skipped when
 * python3-sklearn is not installed).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

#define SKLEARN_DATA "/usr/lib/python3/dist-packages/sklearn/datasets/data/"

typedef struct opt_kv {
    aims_param p;
    int64_t v;
} opt_kv;

static aims_loadopts *make_opts(const opt_kv *kv, size_t n)
{
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(aims_loadopts_set_param_i64(o, kv[i].p, kv[i].v), AIMS_OK);
    }
    return o;
}

static aims_status parse_with(aims_format fmt, const void *data, size_t size, const opt_kv *kv,
                              size_t n, aims_dataset **out)
{
    aims_loadopts *o = make_opts(kv, n);
    const aims_status rc = aims_dataset_parse(fmt, data, size, o, out);
    aims_loadopts_destroy(o);
    return rc;
}

static aims_status csv(const char *text, const opt_kv *kv, size_t n, aims_dataset **out)
{
    return parse_with(AIMS_FORMAT_CSV, text, strlen(text), kv, n, out);
}

static aims_status svm(const char *text, const opt_kv *kv, size_t n, aims_dataset **out)
{
    return parse_with(AIMS_FORMAT_SVMLIGHT, text, strlen(text), kv, n, out);
}

static void expect_error(aims_status rc, aims_status want, const char *needle)
{
    assert_int_equal(rc, want);
    if (strstr(aims_errmsg(), needle) == NULL) {
        fail_msg("error message \"%s\" lacks \"%s\"", aims_errmsg(), needle);
    }
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- CSV options ----------------------------------------------------------------- */

static void test_api_csv_defaults(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_CSV, "1,2\n3,4\n", 8, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 2);
    assert_int_equal(aims_dataset_cols(ds), 2);
    const float want[] = {1, 2, 3, 4};
    assert_memory_equal(aims_dataset_features(ds), want, sizeof want);
    assert_null(aims_dataset_labels(ds));
    assert_null(aims_dataset_targets(ds));
    assert_int_equal(aims_dataset_num_classes(ds), 0);
    const uint64_t *off = NULL;
    const uint32_t *ids = NULL;
    assert_int_equal(aims_dataset_tokens(ds, &off, &ids, NULL), AIMS_E_STATE);
    aims_dataset_destroy(ds);
}

static void test_api_csv_every_option(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    /* delimiter + header names + label column by index */
    const opt_kv a[] = {{AIMS_LOAD_DELIMITER, ';'}, {AIMS_LOAD_HEADER, 1},
                        {AIMS_LOAD_LABEL_COLUMN, 1}};
    assert_int_equal(csv("x;\"y;z\";w\n1,5;2;3\n4;0;6\n", a, N_OF(a), &ds), AIMS_E_CORRUPT);
    assert_int_equal(csv("x;\"y;z\";w\n1.5;2;3\n4;0;6\n", a, N_OF(a), &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 2);
    assert_int_equal(aims_dataset_cols(ds), 2);
    assert_int_equal(aims_dataset_labels(ds)[0], 2);
    assert_int_equal(aims_dataset_labels(ds)[1], 0);
    assert_int_equal(aims_dataset_num_classes(ds), 3);
    assert_true(aims_dataset_features(ds)[0] == 1.5f && aims_dataset_features(ds)[3] == 6.0f);
    aims_dataset_destroy(ds);

    /* skip_rows + header=2 (skip the sklearn count line) + label last + max_rows */
    const opt_kv b[] = {{AIMS_LOAD_SKIP_ROWS, 2}, {AIMS_LOAD_HEADER, 2},
                        {AIMS_LOAD_LABEL_COLUMN, -2}, {AIMS_LOAD_MAX_ROWS, 2}};
    assert_int_equal(csv("junk\nmore junk\n3,2,a,b\n1,2,1\n3,4,0\n5,6,1\n", b, N_OF(b), &ds),
                     AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 2);
    assert_int_equal(aims_dataset_cols(ds), 2);
    assert_int_equal(aims_dataset_num_classes(ds), 2);
    aims_dataset_destroy(ds);

    /* float targets */
    const opt_kv c[] = {{AIMS_LOAD_LABEL_COLUMN, 0}, {AIMS_LOAD_LABEL_KIND, 1}};
    assert_int_equal(csv("-1.25,7\n3e2,8\n", c, N_OF(c), &ds), AIMS_OK);
    assert_null(aims_dataset_labels(ds));
    assert_true(aims_dataset_targets(ds)[0] == -1.25f && aims_dataset_targets(ds)[1] == 300.0f);
    assert_int_equal(aims_dataset_num_classes(ds), 0);
    aims_dataset_destroy(ds);

    /* missing: NaN (default) or error */
    assert_int_equal(csv("1,,NA\n?,null,2\n", NULL, 0, &ds), AIMS_OK);
    assert_true(isnan(aims_dataset_features(ds)[1]) && isnan(aims_dataset_features(ds)[3]));
    aims_dataset_destroy(ds);
    ds = NULL;
    const opt_kv d[] = {{AIMS_LOAD_MISSING, 0}};
    expect_error(csv("1,,NA\n", d, N_OF(d), &ds), AIMS_E_CORRUPT, "missing value");

    /* max_bytes */
    const opt_kv e[] = {{AIMS_LOAD_MAX_BYTES, 4}};
    expect_error(csv("1,2\n3,4\n", e, N_OF(e), &ds), AIMS_E_RANGE, "max_bytes");
    assert_null(ds);
}

/* ---- svmlight options -------------------------------------------------------------- */

static void test_api_svmlight_every_option(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    assert_int_equal(svm("1 1:0.5 4:2\n0 2:1 # c\n", NULL, 0, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 2);
    assert_int_equal(aims_dataset_token_dim(ds), 4);
    const uint64_t *off = NULL;
    const uint32_t *ids = NULL;
    const float *w = NULL;
    assert_int_equal(aims_dataset_tokens(ds, &off, &ids, &w), AIMS_OK);
    assert_int_equal(off[0], 0);
    assert_int_equal(off[2], 3);
    assert_int_equal(ids[1], 3);
    assert_true(w[0] == 0.5f);
    assert_int_equal(aims_dataset_num_classes(ds), 2);
    assert_int_equal(aims_dataset_cols(ds), 0);
    aims_dataset_destroy(ds);

    const opt_kv a[] = {{AIMS_LOAD_ZERO_BASED, 1}, {AIMS_LOAD_NUM_FEATURES, 100},
                        {AIMS_LOAD_LABEL_KIND, 1}, {AIMS_LOAD_MAX_ROWS, 1}};
    assert_int_equal(svm("-1 0:1 qid:2 99:2\n+1 100:1\n", a, N_OF(a), &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 1);
    assert_int_equal(aims_dataset_token_dim(ds), 100);
    assert_true(aims_dataset_targets(ds)[0] == -1.0f);
    aims_dataset_destroy(ds);
    ds = NULL;

    const opt_kv b[] = {{AIMS_LOAD_NUM_FEATURES, 100}};
    expect_error(svm("1 101:1\n", b, N_OF(b), &ds), AIMS_E_CORRUPT, "num_features");
    expect_error(svm("-1 1:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "label_kind=1");
    const opt_kv c[] = {{AIMS_LOAD_MAX_BYTES, 3}};
    expect_error(svm("1 1:1\n", c, N_OF(c), &ds), AIMS_E_RANGE, "max_bytes");
    assert_null(ds);
}

/* ---- hostile inputs -------------------------------------------------------------------- */

static void test_api_hostile_csv(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    expect_error(csv("1,2,3\n4,5\n", NULL, 0, &ds), AIMS_E_CORRUPT, ":2: expected 3 fields");
    expect_error(csv("1,2\n\"3,4\n5,6\n", NULL, 0, &ds), AIMS_E_CORRUPT,
                 ":2: unterminated quoted field");
    expect_error(csv("1,\"2\"\"\"\n", NULL, 0, &ds), AIMS_E_CORRUPT, "column 2");
    expect_error(csv("1,\xc3\x28\n", NULL, 0, &ds), AIMS_E_CORRUPT, "\\xc3(");
    expect_error(csv("1,2\n3,\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"
                     "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\n",
                     NULL, 0, &ds),
                 AIMS_E_CORRUPT, "...");
    expect_error(aims_dataset_parse(AIMS_FORMAT_CSV, "\x1f\x8b\x08", 3, NULL, &ds),
                 AIMS_E_UNSUPPORTED, "gzip");
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_CSV, "", 0, NULL, &ds), AIMS_E_INVAL);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_CSV, NULL, 5, NULL, &ds), AIMS_E_MISUSE);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_CSV, "1", 1, NULL, NULL), AIMS_E_MISUSE);
    /* NUL bytes are just bad bytes */
    expect_error(aims_dataset_parse(AIMS_FORMAT_CSV, "1,\0\n", 4, NULL, &ds), AIMS_E_CORRUPT,
                 "\\x00");
    assert_null(ds);

    /* huge numbers saturate like strtof; tiny ones underflow */
    const opt_kv nf[] = {{AIMS_LOAD_NONFINITE, 1}};
    assert_int_equal(csv("1e39,-1e39,1e-60,123456789012345678901234567890\r\n", nf, N_OF(nf),
                         &ds),
                     AIMS_OK);
    const float *x = aims_dataset_features(ds);
    assert_true(isinf(x[0]) && x[0] > 0 && isinf(x[1]) && x[1] < 0);
    assert_true(x[2] == 0.0f);
    assert_true(x[3] == 123456789012345678901234567890.0f);
    aims_dataset_destroy(ds);

    /* BOM + CRLF + quotes with delimiters and newlines inside (header) */
    const opt_kv h[] = {{AIMS_LOAD_HEADER, 1}};
    assert_int_equal(csv("\xEF\xBB\xBF\"a,\r\nb\",\"c\"\"\"\r\n\"1\",2\r\n", h, 1, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 1);
    assert_int_equal(aims_dataset_cols(ds), 2);
    aims_dataset_destroy(ds);
}

static void test_api_hostile_svmlight(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    expect_error(svm("1 2:1 1:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, ":1:");
    expect_error(svm("1 1:1\n1 \xff:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, ":2:");
    expect_error(svm("1 18446744073709551617:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "too large");
    expect_error(svm("1 :1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "index:value");
    assert_null(ds);
}

/* Every prefix of a valid file either loads or fails cleanly. */
static void truncate_everywhere(aims_format fmt, const char *text, const opt_kv *kv, size_t n)
{
    const size_t len = strlen(text);
    aims_loadopts *o = make_opts(kv, n);
    for (size_t cut = 0; cut <= len; cut++) {
        /* an exact-size heap copy, so a sanitizer sees any over-read */
        char *buf = malloc(cut > 0 ? cut : 1);
        assert_non_null(buf);
        memcpy(buf, text, cut);
        aims_dataset *ds = NULL;
        const aims_status rc = aims_dataset_parse(fmt, buf, cut, o, &ds);
        if (rc == AIMS_OK) {
            assert_true(aims_dataset_rows(ds) >= 1);
            aims_dataset_destroy(ds);
        } else {
            assert_true(rc == AIMS_E_CORRUPT || rc == AIMS_E_INVAL);
            assert_null(ds);
            assert_true(aims_errmsg()[0] != '\0');
        }
        free(buf);
        assert_int_equal(aims_alloc_live(), 1); /* just the options */
    }
    aims_loadopts_destroy(o);
}

static void test_api_truncation_never_crashes(void **state)
{
    (void)state;
    const char *c1 = "\xEF\xBB\xBF\"h1\",\"h,2\",h3\r\n1,\"2.5\",0\r\n-3,4e2,1\r\n\r\n5,,2\n";
    const opt_kv k1[] = {{AIMS_LOAD_HEADER, 1}, {AIMS_LOAD_LABEL_COLUMN, -2}};
    truncate_everywhere(AIMS_FORMAT_CSV, c1, k1, N_OF(k1));
    const opt_kv k2[] = {{AIMS_LOAD_MISSING, 0}, {AIMS_LOAD_DELIMITER, ','}};
    truncate_everywhere(AIMS_FORMAT_CSV, c1, k2, N_OF(k2));
    const char *s1 = "# c\n1 qid:1 1:0.5 7:2 # x\r\n0 2:-1e3\n\n2 3:1 4:2";
    truncate_everywhere(AIMS_FORMAT_SVMLIGHT, s1, NULL, 0);
    const opt_kv k3[] = {{AIMS_LOAD_ZERO_BASED, 1}, {AIMS_LOAD_LABEL_KIND, 1}};
    truncate_everywhere(AIMS_FORMAT_SVMLIGHT, s1, k3, N_OF(k3));
}

/* ---- allocation failures ------------------------------------------------------------------- */

typedef struct load_case {
    aims_format fmt;
    const char *text;
    const opt_kv *kv;
    size_t n;
    const char *path; /* load_file instead of parse when set */
} load_case;

static aims_status load_op(void *ctx)
{
    const load_case *lc = ctx;
    aims_loadopts *o = NULL;
    if (lc->n > 0) {
        if (aims_loadopts_create(&o) != AIMS_OK) {
            return AIMS_E_NOMEM;
        }
        for (size_t i = 0; i < lc->n; i++) {
            if (aims_loadopts_set_param_i64(o, lc->kv[i].p, lc->kv[i].v) != AIMS_OK) {
                aims_loadopts_destroy(o);
                return AIMS_E_INTERNAL;
            }
        }
    }
    aims_dataset *ds = NULL;
    aims_status rc;
    if (lc->path != NULL) {
        rc = aims_dataset_load_file(lc->fmt, lc->path, o, &ds);
    } else {
        rc = aims_dataset_parse(lc->fmt, lc->text, strlen(lc->text), o, &ds);
    }
    if (rc == AIMS_OK && aims_dataset_rows(ds) == 0) {
        rc = AIMS_E_INTERNAL;
    }
    aims_dataset_destroy(ds);
    aims_loadopts_destroy(o);
    return rc;
}

static void test_api_allocation_failures(void **state)
{
    (void)state;
    const opt_kv k1[] = {{AIMS_LOAD_LABEL_COLUMN, -2}};
    load_case a = {AIMS_FORMAT_CSV, "1,2,0\n3,4,1\n", k1, N_OF(k1), NULL};
    ta_fail_loop("csv plain", load_op, &a);
    const opt_kv k2[] = {{AIMS_LOAD_LABEL_COLUMN, 0}, {AIMS_LOAD_LABEL_KIND, 1},
                         {AIMS_LOAD_HEADER, 1}};
    load_case b = {AIMS_FORMAT_CSV, "\"t\",\"a,b\"\n1.5,\"2\"\n", k2, N_OF(k2), NULL};
    ta_fail_loop("csv quoted targets", load_op, &b);
    load_case c = {AIMS_FORMAT_SVMLIGHT, "1 1:1 3:2\n0 2:1\n", NULL, 0, NULL};
    ta_fail_loop("svmlight", load_op, &c);
    const opt_kv k3[] = {{AIMS_LOAD_LABEL_KIND, 1}};
    load_case d = {AIMS_FORMAT_SVMLIGHT, "-1 1:1\n", k3, N_OF(k3), NULL};
    ta_fail_loop("svmlight targets", load_op, &d);
    if (access(SKLEARN_DATA "iris.csv", R_OK) == 0) {
        const opt_kv k4[] = {{AIMS_LOAD_HEADER, 2}, {AIMS_LOAD_LABEL_COLUMN, -2}};
        load_case e = {AIMS_FORMAT_CSV, NULL, k4, N_OF(k4), SKLEARN_DATA "iris.csv"};
        ta_fail_loop("csv iris file", load_op, &e);
    }
}

/* ---- real data ------------------------------------------------------------------------------ */

static void check_sklearn_table(const char *file, size_t rows, size_t cols, size_t classes,
                                float x00, int32_t last_label)
{
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_HEADER, 2), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_LABEL_COLUMN, -2), AIMS_OK);
    aims_dataset *ds = NULL;
    const aims_status rc = aims_dataset_load_file(AIMS_FORMAT_CSV, file, o, &ds);
    if (rc != AIMS_OK) {
        fail_msg("%s: rc=%d %s", file, (int)rc, aims_errmsg());
    }
    assert_int_equal(aims_dataset_rows(ds), rows);
    assert_int_equal(aims_dataset_cols(ds), cols);
    assert_int_equal(aims_dataset_num_classes(ds), classes);
    assert_true(aims_dataset_features(ds)[0] == x00);
    assert_int_equal(aims_dataset_labels(ds)[rows - 1], last_label);
    for (size_t i = 0; i < rows * cols; i++) {
        assert_true(isfinite(aims_dataset_features(ds)[i]));
    }
    aims_dataset_destroy(ds);
    aims_loadopts_destroy(o);
}

static void test_api_real_sklearn_tables(void **state)
{
    (void)state;
    if (access(SKLEARN_DATA "iris.csv", R_OK) != 0) {
        skip();
    }
    check_sklearn_table(SKLEARN_DATA "iris.csv", 150, 4, 3, 5.1f, 2);
    if (access(SKLEARN_DATA "wine_data.csv", R_OK) == 0) {
        check_sklearn_table(SKLEARN_DATA "wine_data.csv", 178, 13, 3, 14.23f, 2);
    }
    if (access(SKLEARN_DATA "breast_cancer.csv", R_OK) == 0) {
        check_sklearn_table(SKLEARN_DATA "breast_cancer.csv", 569, 30, 2, 17.99f, 1);
    }
    /* without header=2 the count line is read as data: its class names are
     * not numbers, and the error names line 1, column 3 */
    aims_dataset *ds = NULL;
    aims_status rc = aims_dataset_load_file(AIMS_FORMAT_CSV, SKLEARN_DATA "wine_data.csv", NULL,
                                            &ds);
    if (access(SKLEARN_DATA "wine_data.csv", R_OK) == 0) {
        expect_error(rc, AIMS_E_CORRUPT, "wine_data.csv:1: column 3");
    }
    rc = aims_dataset_load_file(AIMS_FORMAT_CSV, "/nonexistent/dir/x.csv", NULL, &ds);
    assert_true(rc == AIMS_E_NOTFOUND || rc == AIMS_E_IO);
    assert_null(ds);
}

static void test_api_load_file_svmlight(void **state)
{
    (void)state;
    char path[] = "/tmp/aims_svmXXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "2 1:1 5:0.25\n0 3:-2\n1 2:1e1\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_load_file(AIMS_FORMAT_SVMLIGHT, path, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 3);
    assert_int_equal(aims_dataset_token_dim(ds), 5);
    assert_int_equal(aims_dataset_num_classes(ds), 3);
    aims_dataset_destroy(ds);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_api_csv_defaults, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_csv_every_option, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_svmlight_every_option, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_hostile_csv, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_hostile_svmlight, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_truncation_never_crashes, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_allocation_failures, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_real_sklearn_tables, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_load_file_svmlight, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
