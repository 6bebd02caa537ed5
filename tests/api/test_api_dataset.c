/*
 * test_api_dataset.c -- black-box tests of aims_dataset through <aims/aims.h>
 * and libaims.so only: building, views, shuffle, select, split, save/load,
 * the IDX / TEXT / AIMS parsers and the topics directory loader, hostile
 * inputs, allocation-failure loops, and the real data sets when present.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

/* ---- helpers -------------------------------------------------------------------------- */

static char g_tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char path[512];
    if (g_tmpdir[0] == '\0') {
        strcpy(g_tmpdir, "/tmp/aims_api_dataset_XXXXXX");
        assert_non_null(mkdtemp(g_tmpdir));
    }
    snprintf(path, sizeof path, "%s/%s", g_tmpdir, name);
    return path;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len > 0) {
        assert_int_equal(fwrite(data, 1, len, f), len);
    }
    assert_int_equal(fclose(f), 0);
}

static void *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    const long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    void *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A u8 IDX file: n items of rows x cols, value of item i pixel j = (i*7 + j) & 0xff. */
static size_t make_idx_u8(unsigned char *buf, uint32_t n, uint32_t r, uint32_t c)
{
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = 0x08;
    buf[3] = 3;
    put_be32(buf + 4, n);
    put_be32(buf + 8, r);
    put_be32(buf + 12, c);
    size_t pos = 16;
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < r * c; j++) {
            buf[pos++] = (unsigned char)((i * 7 + j) & 0xff);
        }
    }
    return pos;
}

static size_t make_idx_labels(unsigned char *buf, uint32_t n, uint32_t classes)
{
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = 0x08;
    buf[3] = 1;
    put_be32(buf + 4, n);
    for (uint32_t i = 0; i < n; i++) {
        buf[8 + i] = (unsigned char)(i % classes);
    }
    return 8 + n;
}

/* rows x 3 dense dataset, x[i][j] = i*10 + j, label i % classes. */
static aims_dataset *make_dense(size_t rows, int classes)
{
    float *x = malloc(rows * 3 * sizeof *x);
    int32_t *y = malloc(rows * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < 3; j++) {
            x[i * 3 + j] = (float)(i * 10 + j);
        }
        y[i] = (int32_t)(i % (size_t)classes);
    }
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_dense(rows, 3, x, y, &ds), AIMS_OK);
    free(x);
    free(y);
    return ds;
}

static const char k_text[] =
    "sport\tthe match was won\r\n"
    "\n"
    "art\ta painting\n"
    "sport\tgoal \xff\xfe bytes\n"
    "code\tint main(void);\n"
    "art\t\n";

/* ---- building and accessors ------------------------------------------------------------ */

static void test_dataset_create_dense_accessors(void **state)
{
    (void)state;
    aims_dataset *ds = make_dense(5, 3);
    assert_int_equal(aims_dataset_rows(ds), 5);
    assert_int_equal(aims_dataset_cols(ds), 3);
    assert_int_equal(aims_dataset_num_classes(ds), 3);
    assert_float_equal(aims_dataset_features(ds)[4 * 3 + 2], 42.0f, 0.0f);
    assert_int_equal(aims_dataset_labels(ds)[4], 1);
    assert_null(aims_dataset_targets(ds));
    assert_null(aims_dataset_class_name(ds, 0));
    assert_null(aims_dataset_text(ds, 0, NULL));
    assert_int_equal(aims_dataset_token_dim(ds), 0);
    const uint64_t *off = NULL;
    const uint32_t *ids = NULL;
    assert_int_equal(aims_dataset_tokens(ds, &off, &ids, NULL), AIMS_E_STATE);
    assert_null(off);
    assert_string_equal(aims_dataset_errmsg(ds), "");
    aims_dataset_destroy(ds);

    /* NULL / invalid handles */
    assert_int_equal(aims_dataset_rows(NULL), 0);
    assert_int_equal(aims_dataset_cols(NULL), 0);
    assert_null(aims_dataset_features(NULL));
    assert_null(aims_dataset_labels(NULL));
    assert_int_equal(aims_dataset_num_classes(NULL), 0);
    assert_int_equal(aims_dataset_tokens(NULL, &off, &ids, NULL), AIMS_E_MISUSE);
    assert_string_equal(aims_dataset_errmsg(NULL), "");
    int not_a_dataset[64] = {0};
    assert_int_equal(aims_dataset_rows((const aims_dataset *)(void *)not_a_dataset), 0);
    assert_int_equal(aims_dataset_shuffle((aims_dataset *)(void *)not_a_dataset, 1), AIMS_E_MISUSE);
    aims_dataset_destroy(NULL);

    const float x[2] = {1, 2};
    const int32_t bad[2] = {0, -1};
    aims_dataset *out = NULL;
    assert_int_equal(aims_dataset_create_dense(2, 1, x, bad, &out), AIMS_E_INVAL);
    assert_null(out);
    assert_int_equal(aims_dataset_create_dense(0, 1, x, NULL, &out), AIMS_E_INVAL);
    assert_int_equal(aims_dataset_create_dense(2, 1, NULL, NULL, &out), AIMS_E_MISUSE);
    assert_int_equal(aims_dataset_create_dense(2, 1, x, NULL, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_dataset_create_dense(SIZE_MAX, 2, x, NULL, &out), AIMS_E_RANGE);
    assert_null(out);
}

static void test_dataset_create_texts(void **state)
{
    (void)state;
    const char *texts[3] = {"hello", "", "wor\0ld"};
    const size_t lens[3] = {5, 0, 6};
    const int32_t y[3] = {1, 0, 1};
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_texts(3, texts, lens, y, &ds), AIMS_OK);
    size_t len = 0;
    const char *t = aims_dataset_text(ds, 2, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(t, "wor\0ld", 6);
    t = aims_dataset_text(ds, 1, &len);
    assert_non_null(t);
    assert_int_equal(len, 0);
    assert_null(aims_dataset_text(ds, 3, &len));
    assert_int_equal(aims_dataset_num_classes(ds), 2);
    assert_int_equal(aims_dataset_cols(ds), 0);
    assert_null(aims_dataset_features(ds));
    aims_dataset_destroy(ds);

    assert_int_equal(aims_dataset_create_texts(3, texts, NULL, NULL, &ds), AIMS_OK);
    assert_non_null(aims_dataset_text(ds, 2, &len));
    assert_int_equal(len, 3); /* NUL-terminated: "wor" */
    assert_int_equal(aims_dataset_num_classes(ds), 0);
    aims_dataset_destroy(ds);
}

/* ---- views, shuffle, select, split ------------------------------------------------------- */

static void test_dataset_view_destroy_any_order(void **state)
{
    (void)state;
    aims_dataset *ds = make_dense(10, 2);
    aims_dataset *v = NULL;
    aims_dataset *vv = NULL;
    assert_int_equal(aims_dataset_view(ds, 2, 5, &v), AIMS_OK);
    assert_int_equal(aims_dataset_rows(v), 5);
    assert_float_equal(aims_dataset_features(v)[0], 20.0f, 0.0f);
    assert_int_equal(aims_dataset_labels(v)[1], 1);
    assert_int_equal(aims_dataset_view(v, 1, 3, &vv), AIMS_OK);
    assert_float_equal(aims_dataset_features(vv)[0], 30.0f, 0.0f);

    assert_int_equal(aims_dataset_view(ds, 10, 1, &v), AIMS_E_RANGE);
    assert_int_equal(aims_dataset_view(ds, 0, 0, &v), AIMS_E_RANGE);
    assert_int_equal(aims_dataset_view(ds, 5, 6, &v), AIMS_E_RANGE);
    assert_int_equal(aims_dataset_view(ds, 0, SIZE_MAX, &v), AIMS_E_RANGE);

    /* shuffle refuses views and datasets with live views */
    assert_int_equal(aims_dataset_shuffle(v, 1), AIMS_E_STATE);
    assert_int_equal(aims_dataset_shuffle(ds, 1), AIMS_E_STATE);
    assert_true(strlen(aims_dataset_errmsg(ds)) > 0);

    /* root first: the views stay readable */
    aims_dataset_destroy(ds);
    assert_int_equal(aims_dataset_rows(ds), 0); /* killed handle reads as invalid */
    assert_float_equal(aims_dataset_features(v)[4 * 3 + 2], 62.0f, 0.0f);
    aims_dataset_destroy(vv);
    aims_dataset_destroy(v);

    /* views first, then the root, then shuffle works again */
    ds = make_dense(10, 2);
    assert_int_equal(aims_dataset_view(ds, 0, 10, &v), AIMS_OK);
    aims_dataset_destroy(v);
    assert_int_equal(aims_dataset_shuffle(ds, 1), AIMS_OK);
    aims_dataset_destroy(ds);
}

static void test_dataset_shuffle_keeps_rows_together(void **state)
{
    (void)state;
    aims_dataset *a = make_dense(50, 7);
    aims_dataset *b = make_dense(50, 7);
    assert_int_equal(aims_dataset_shuffle(a, 42), AIMS_OK);
    assert_int_equal(aims_dataset_shuffle(b, 42), AIMS_OK);
    assert_memory_equal(aims_dataset_features(a), aims_dataset_features(b), 50 * 3 * sizeof(float));
    int moved = 0;
    for (size_t i = 0; i < 50; i++) {
        const float *row = aims_dataset_features(a) + i * 3;
        const size_t orig = (size_t)row[0] / 10;
        assert_float_equal(row[2], (float)(orig * 10 + 2), 0.0f);
        assert_int_equal(aims_dataset_labels(a)[i], (int32_t)(orig % 7));
        moved += orig != i;
    }
    assert_true(moved > 0);
    aims_dataset *c = make_dense(50, 7);
    assert_int_equal(aims_dataset_shuffle(c, 43), AIMS_OK);
    assert_memory_not_equal(aims_dataset_features(a), aims_dataset_features(c),
                            50 * 3 * sizeof(float));
    aims_dataset_destroy(a);
    aims_dataset_destroy(b);
    aims_dataset_destroy(c);

    /* texts and labels move together */
    aims_dataset *t = NULL;
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_TEXT, k_text, sizeof k_text - 1, NULL, &t),
                     AIMS_OK);
    assert_int_equal(aims_dataset_shuffle(t, 7), AIMS_OK);
    for (size_t i = 0; i < aims_dataset_rows(t); i++) {
        size_t len = 0;
        const char *s = aims_dataset_text(t, i, &len);
        const char *name = aims_dataset_class_name(t, (size_t)aims_dataset_labels(t)[i]);
        if (len >= 4 && memcmp(s, "goal", 4) == 0) {
            assert_string_equal(name, "sport");
        }
        if (len >= 3 && memcmp(s, "int", 3) == 0) {
            assert_string_equal(name, "code");
        }
    }
    aims_dataset_destroy(t);
}

static void test_dataset_select(void **state)
{
    (void)state;
    aims_dataset *ds = make_dense(6, 3);
    const size_t idx[4] = {5, 0, 5, 2};
    aims_dataset *s = NULL;
    assert_int_equal(aims_dataset_select(ds, idx, 4, &s), AIMS_OK);
    assert_int_equal(aims_dataset_rows(s), 4);
    assert_float_equal(aims_dataset_features(s)[0], 50.0f, 0.0f);
    assert_float_equal(aims_dataset_features(s)[2 * 3 + 1], 51.0f, 0.0f);
    assert_int_equal(aims_dataset_labels(s)[3], 2);
    assert_int_equal(aims_dataset_num_classes(s), 3);
    aims_dataset_destroy(s);
    const size_t bad[2] = {0, 6};
    s = NULL;
    assert_int_equal(aims_dataset_select(ds, bad, 2, &s), AIMS_E_RANGE);
    assert_null(s);
    assert_int_equal(aims_dataset_select(ds, idx, 0, &s), AIMS_E_RANGE);
    assert_int_equal(aims_dataset_select(ds, NULL, 1, &s), AIMS_E_MISUSE);

    /* select from a view */
    aims_dataset *v = NULL;
    assert_int_equal(aims_dataset_view(ds, 3, 3, &v), AIMS_OK);
    const size_t one[1] = {2};
    assert_int_equal(aims_dataset_select(v, one, 1, &s), AIMS_OK);
    assert_float_equal(aims_dataset_features(s)[0], 50.0f, 0.0f);
    aims_dataset_destroy(s);
    aims_dataset_destroy(v);
    aims_dataset_destroy(ds);
}

static void test_dataset_split_stratified(void **state)
{
    (void)state;
    /* classes 0,1,2 with 10, 20, 30 rows */
    float x[60];
    int32_t y[60];
    for (int i = 0; i < 60; i++) {
        x[i] = (float)i;
        y[i] = i < 10 ? 0 : (i < 30 ? 1 : 2);
    }
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_dense(60, 1, x, y, &ds), AIMS_OK);
    aims_dataset *tr = NULL;
    aims_dataset *te = NULL;
    assert_int_equal(aims_dataset_split(ds, 0.2, 9, 1, &tr, &te), AIMS_OK);
    assert_int_equal(aims_dataset_rows(tr), 48);
    assert_int_equal(aims_dataset_rows(te), 12);
    size_t counts[3] = {0};
    for (size_t i = 0; i < 12; i++) {
        counts[aims_dataset_labels(te)[i]]++;
    }
    assert_int_equal(counts[0], 2);
    assert_int_equal(counts[1], 4);
    assert_int_equal(counts[2], 6);
    /* relative order kept */
    for (size_t i = 1; i < 48; i++) {
        assert_true(aims_dataset_features(tr)[i] > aims_dataset_features(tr)[i - 1]);
    }
    for (size_t i = 1; i < 12; i++) {
        assert_true(aims_dataset_features(te)[i] > aims_dataset_features(te)[i - 1]);
    }
    /* same seed, same split */
    aims_dataset *tr2 = NULL;
    aims_dataset *te2 = NULL;
    assert_int_equal(aims_dataset_split(ds, 0.2, 9, 1, &tr2, &te2), AIMS_OK);
    assert_memory_equal(aims_dataset_features(te), aims_dataset_features(te2), 12 * sizeof(float));
    aims_dataset_destroy(tr2);
    aims_dataset_destroy(te2);
    aims_dataset_destroy(tr);
    aims_dataset_destroy(te);

    /* random split */
    assert_int_equal(aims_dataset_split(ds, 0.25, 3, 0, &tr, &te), AIMS_OK);
    assert_int_equal(aims_dataset_rows(te), 15);
    assert_int_equal(aims_dataset_rows(tr), 45);
    aims_dataset_destroy(tr);
    aims_dataset_destroy(te);

    tr = te = NULL;
    assert_int_equal(aims_dataset_split(ds, 0.0, 3, 0, &tr, &te), AIMS_E_INVAL);
    assert_int_equal(aims_dataset_split(ds, 1.0, 3, 0, &tr, &te), AIMS_E_INVAL);
    assert_int_equal(aims_dataset_split(ds, NAN, 3, 0, &tr, &te), AIMS_E_INVAL);
    assert_int_equal(aims_dataset_split(ds, 0.001, 3, 0, &tr, &te), AIMS_E_INVAL);
    assert_int_equal(aims_dataset_split(ds, 0.5, 3, 0, &tr, &tr), AIMS_E_MISUSE);
    assert_null(tr);
    assert_null(te);
    aims_dataset_destroy(ds);

    const char *texts[2] = {"a", "b"};
    assert_int_equal(aims_dataset_create_texts(2, texts, NULL, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_split(ds, 0.5, 3, 1, &tr, &te), AIMS_E_INVAL);
    assert_int_equal(aims_dataset_split(ds, 0.5, 3, 0, &tr, &te), AIMS_OK);
    assert_int_equal(aims_dataset_rows(tr) + aims_dataset_rows(te), 2);
    aims_dataset_destroy(tr);
    aims_dataset_destroy(te);
    aims_dataset_destroy(ds);
}

/* ---- save / load ------------------------------------------------------------------------- */

static void test_dataset_save_load_roundtrip(void **state)
{
    (void)state;
    aims_dataset *ds = make_dense(20, 4);
    const char *path = tmp_path("dense.aimsd");
    assert_int_equal(aims_dataset_save(ds, path), AIMS_OK);
    aims_dataset *back = NULL;
    assert_int_equal(aims_dataset_load_file(AIMS_FORMAT_AIMS, path, NULL, &back), AIMS_OK);
    assert_int_equal(aims_dataset_rows(back), 20);
    assert_int_equal(aims_dataset_cols(back), 3);
    assert_int_equal(aims_dataset_num_classes(back), 4);
    assert_memory_equal(aims_dataset_features(back), aims_dataset_features(ds), 60 * sizeof(float));
    assert_memory_equal(aims_dataset_labels(back), aims_dataset_labels(ds), 20 * sizeof(int32_t));
    aims_dataset_destroy(back);

    /* a view saves as its own rows */
    aims_dataset *v = NULL;
    assert_int_equal(aims_dataset_view(ds, 5, 3, &v), AIMS_OK);
    assert_int_equal(aims_dataset_save(v, path), AIMS_OK);
    assert_int_equal(aims_dataset_load_file(AIMS_FORMAT_AIMS, path, NULL, &back), AIMS_OK);
    assert_int_equal(aims_dataset_rows(back), 3);
    assert_float_equal(aims_dataset_features(back)[0], 50.0f, 0.0f);
    aims_dataset_destroy(back);
    aims_dataset_destroy(v);
    aims_dataset_destroy(ds);

    /* text with class names, from a view that does not start at offset 0 */
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_TEXT, k_text, sizeof k_text - 1, NULL, &ds),
                     AIMS_OK);
    assert_int_equal(aims_dataset_view(ds, 1, 3, &v), AIMS_OK);
    assert_int_equal(aims_dataset_save(v, path), AIMS_OK);
    size_t len = 0;
    void *bytes = read_whole(path, &len);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_AIMS, bytes, len, NULL, &back), AIMS_OK);
    assert_int_equal(aims_dataset_rows(back), 3);
    assert_int_equal(aims_dataset_num_classes(back), 3);
    assert_string_equal(aims_dataset_class_name(back, 2), "sport");
    size_t a = 0;
    size_t b = 0;
    const char *ta = aims_dataset_text(back, 1, &a);
    const char *tb = aims_dataset_text(v, 1, &b);
    assert_int_equal(a, b);
    assert_memory_equal(ta, tb, a);
    aims_dataset_destroy(back);

    /* every single-byte corruption is detected (CRC / zstd checksum / checks) */
    unsigned char *p = bytes;
    for (size_t i = 0; i < len; i++) {
        p[i] ^= 0x5a;
        back = NULL;
        const aims_status rc = aims_dataset_parse(AIMS_FORMAT_AIMS, p, len, NULL, &back);
        if (rc == AIMS_OK) {
            /* a flip inside a raw (uncompressed, unchecksummed) payload may stay
             * valid; the result must still be a consistent dataset */
            assert_true(aims_dataset_rows(back) >= 1);
            aims_dataset_destroy(back);
        } else {
            assert_null(back);
        }
        p[i] ^= 0x5a;
    }
    /* truncation at every length */
    for (size_t n = 0; n < len; n++) {
        back = NULL;
        assert_int_not_equal(aims_dataset_parse(AIMS_FORMAT_AIMS, p, n, NULL, &back), AIMS_OK);
        assert_null(back);
    }
    free(bytes);
    aims_dataset_destroy(v);
    aims_dataset_destroy(ds);

    assert_int_equal(aims_dataset_load_file(AIMS_FORMAT_AIMS, tmp_path("missing"), NULL, &back),
                     AIMS_E_NOTFOUND);
    assert_int_equal(aims_dataset_save(NULL, path), AIMS_E_MISUSE);
}

/* ---- IDX --------------------------------------------------------------------------------- */

static void test_dataset_parse_idx_types(void **state)
{
    (void)state;
    unsigned char buf[64];
    aims_dataset *ds = NULL;
    size_t n = make_idx_u8(buf, 3, 2, 2);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, buf, n, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 3);
    assert_int_equal(aims_dataset_cols(ds), 4);
    assert_float_equal(aims_dataset_features(ds)[2 * 4 + 3], 17.0f, 0.0f);
    aims_dataset_destroy(ds);

    /* i16: values -2, 300 as 2 items x 1 */
    const unsigned char i16[] = {0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0xff, 0xfe, 0x01, 0x2c};
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, i16, sizeof i16, NULL, &ds), AIMS_OK);
    assert_float_equal(aims_dataset_features(ds)[0], -2.0f, 0.0f);
    assert_float_equal(aims_dataset_features(ds)[1], 300.0f, 0.0f);
    aims_dataset_destroy(ds);

    /* i8 ndim 1 -> one column */
    const unsigned char i8[] = {0, 0, 0x09, 1, 0, 0, 0, 2, 0x80, 0x7f};
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, i8, sizeof i8, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_cols(ds), 1);
    assert_float_equal(aims_dataset_features(ds)[0], -128.0f, 0.0f);
    aims_dataset_destroy(ds);

    /* i32, f32 (1.5 = 0x3fc00000), f64 (-0.25 = 0xbfd0000000000000) */
    const unsigned char i32[] = {0, 0, 0x0C, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf6};
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, i32, sizeof i32, NULL, &ds), AIMS_OK);
    assert_float_equal(aims_dataset_features(ds)[0], -10.0f, 0.0f);
    aims_dataset_destroy(ds);
    const unsigned char f32[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3f, 0xc0, 0, 0};
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, f32, sizeof f32, NULL, &ds), AIMS_OK);
    assert_float_equal(aims_dataset_features(ds)[0], 1.5f, 0.0f);
    aims_dataset_destroy(ds);
    const unsigned char f64[] = {0, 0, 0x0E, 1, 0, 0, 0, 1, 0xbf, 0xd0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, f64, sizeof f64, NULL, &ds), AIMS_OK);
    assert_float_equal(aims_dataset_features(ds)[0], -0.25f, 0.0f);
    aims_dataset_destroy(ds);

    /* max_rows */
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_MAX_ROWS, 2), AIMS_OK);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, buf, n, o, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 2);
    aims_dataset_destroy(ds);
    aims_loadopts_destroy(o);
}

static void expect_parse(aims_format f, const void *data, size_t n, aims_status want)
{
    aims_dataset *ds = NULL;
    const aims_status rc = aims_dataset_parse(f, data, n, NULL, &ds);
    if (rc != want) {
        fail_msg("parse of %zu bytes: rc=%d (%s), want %d", n, (int)rc, aims_errmsg(), (int)want);
    }
    assert_null(ds);
}

static void test_dataset_parse_idx_hostile(void **state)
{
    (void)state;
    unsigned char buf[64];
    const size_t n = make_idx_u8(buf, 3, 2, 2);
    /* truncated at every offset */
    expect_parse(AIMS_FORMAT_IDX, buf, 0, AIMS_E_INVAL);
    for (size_t k = 1; k < n; k++) {
        expect_parse(AIMS_FORMAT_IDX, buf, k, AIMS_E_CORRUPT);
    }
    expect_parse(AIMS_FORMAT_IDX, buf, n - 1, AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "expected 28 bytes, got 27"));
    /* trailing bytes */
    unsigned char big[80];
    memcpy(big, buf, n);
    big[n] = 0;
    expect_parse(AIMS_FORMAT_IDX, big, n + 1, AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "trailing"));
    /* bad magic, type, ndim, zero dim */
    unsigned char bad[64];
    memcpy(bad, buf, n);
    bad[0] = 1;
    expect_parse(AIMS_FORMAT_IDX, bad, n, AIMS_E_CORRUPT);
    memcpy(bad, buf, n);
    bad[2] = 0x0A;
    expect_parse(AIMS_FORMAT_IDX, bad, n, AIMS_E_CORRUPT);
    memcpy(bad, buf, n);
    bad[3] = 0;
    expect_parse(AIMS_FORMAT_IDX, bad, n, AIMS_E_CORRUPT);
    bad[3] = 5;
    expect_parse(AIMS_FORMAT_IDX, bad, n, AIMS_E_CORRUPT);
    memcpy(bad, buf, n);
    put_be32(bad + 8, 0);
    expect_parse(AIMS_FORMAT_IDX, bad, n, AIMS_E_CORRUPT);
    /* huge dims: overflow or above max_bytes, never an allocation */
    const unsigned char huge[] = {0, 0, 0x0E, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1};
    expect_parse(AIMS_FORMAT_IDX, huge, sizeof huge, AIMS_E_RANGE);
    const unsigned char large[] = {0,    0,    0x08, 2,    0x00, 0xff, 0xff,
                                   0xff, 0x00, 0xff, 0xff, 0xff, 1};
    expect_parse(AIMS_FORMAT_IDX, large, sizeof large, AIMS_E_RANGE);
    /* gzip */
    const unsigned char gz[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0};
    expect_parse(AIMS_FORMAT_IDX, gz, sizeof gz, AIMS_E_UNSUPPORTED);
    assert_non_null(strstr(aims_errmsg(), "gzip -dc"));
    /* misuse */
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, NULL, 5, NULL, &ds), AIMS_E_MISUSE);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, buf, n, NULL, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_dataset_parse((aims_format)99, buf, n, NULL, &ds), AIMS_E_INVAL);
    /* max_bytes */
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_MAX_BYTES, 10), AIMS_OK);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_IDX, buf, n, o, &ds), AIMS_E_RANGE);
    assert_null(ds);
    aims_loadopts_destroy(o);
}

static void test_dataset_load_idx_files(void **state)
{
    (void)state;
    unsigned char img[128];
    unsigned char lab[32];
    const size_t ni = make_idx_u8(img, 5, 2, 3);
    const size_t nl = make_idx_labels(lab, 5, 3);
    write_file(tmp_path("img.idx"), img, ni);
    write_file(tmp_path("lab.idx"), lab, nl);
    aims_dataset *ds = NULL;
    char img_path[512];
    snprintf(img_path, sizeof img_path, "%s", tmp_path("img.idx"));
    assert_int_equal(aims_dataset_load_idx(img_path, tmp_path("lab.idx"), NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 5);
    assert_int_equal(aims_dataset_cols(ds), 6);
    assert_int_equal(aims_dataset_num_classes(ds), 3);
    assert_int_equal(aims_dataset_labels(ds)[4], 1);
    aims_dataset_destroy(ds);
    assert_int_equal(aims_dataset_load_idx(img_path, NULL, NULL, &ds), AIMS_OK);
    assert_null(aims_dataset_labels(ds));
    aims_dataset_destroy(ds);

    /* counts disagree */
    const size_t nl4 = make_idx_labels(lab, 4, 3);
    write_file(tmp_path("lab4.idx"), lab, nl4);
    ds = NULL;
    assert_int_equal(aims_dataset_load_idx(img_path, tmp_path("lab4.idx"), NULL, &ds),
                     AIMS_E_CORRUPT);
    assert_null(ds);
    /* float labels, negative labels, labels with ndim 3 */
    const unsigned char fl[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0};
    write_file(tmp_path("labf.idx"), fl, sizeof fl);
    assert_int_equal(aims_dataset_load_idx(img_path, tmp_path("labf.idx"), NULL, &ds),
                     AIMS_E_CORRUPT);
    const unsigned char neg[] = {0, 0, 0x09, 1, 0, 0, 0, 5, 0, 1, 2, 0xff, 0};
    write_file(tmp_path("labn.idx"), neg, sizeof neg);
    assert_int_equal(aims_dataset_load_idx(img_path, tmp_path("labn.idx"), NULL, &ds),
                     AIMS_E_CORRUPT);
    assert_int_equal(aims_dataset_load_idx(img_path, img_path, NULL, &ds), AIMS_E_CORRUPT);
    assert_int_equal(aims_dataset_load_idx(tmp_path("nope.idx"), NULL, NULL, &ds),
                     AIMS_E_NOTFOUND);
    assert_null(ds);
    /* load_file with IDX */
    assert_int_equal(aims_dataset_load_file(AIMS_FORMAT_IDX, img_path, NULL, &ds), AIMS_OK);
    aims_dataset_destroy(ds);
}

/* ---- TEXT -------------------------------------------------------------------------------- */

static void test_dataset_parse_text(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_TEXT, k_text, sizeof k_text - 1, NULL, &ds),
                     AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 5);
    assert_int_equal(aims_dataset_num_classes(ds), 3);
    assert_string_equal(aims_dataset_class_name(ds, 0), "art");
    assert_string_equal(aims_dataset_class_name(ds, 1), "code");
    assert_string_equal(aims_dataset_class_name(ds, 2), "sport");
    assert_null(aims_dataset_class_name(ds, 3));
    const int32_t want[5] = {2, 0, 2, 1, 0};
    assert_memory_equal(aims_dataset_labels(ds), want, sizeof want);
    size_t len = 0;
    const char *t = aims_dataset_text(ds, 0, &len);
    assert_int_equal(len, strlen("the match was won")); /* CRLF stripped */
    assert_memory_equal(t, "the match was won", len);
    t = aims_dataset_text(ds, 2, &len);
    assert_memory_equal(t, "goal \xff\xfe bytes", len); /* invalid UTF-8 kept */
    t = aims_dataset_text(ds, 4, &len);
    assert_int_equal(len, 0);
    aims_dataset_destroy(ds);

    const char notab[] = "a\tok\nno tab here\n";
    expect_parse(AIMS_FORMAT_TEXT, notab, sizeof notab - 1, AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), ":2:"));
    const char nolabel[] = "\ttext\n";
    expect_parse(AIMS_FORMAT_TEXT, nolabel, sizeof nolabel - 1, AIMS_E_CORRUPT);
    const char empty[] = "\n\r\n\n";
    expect_parse(AIMS_FORMAT_TEXT, empty, sizeof empty - 1, AIMS_E_INVAL);
    const char nul[] = "a\0b\tx\n";
    expect_parse(AIMS_FORMAT_TEXT, nul, sizeof nul - 1, AIMS_E_CORRUPT);
    /* no final newline, tab inside text kept */
    const char last[] = "b\tx\ty";
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_TEXT, last, sizeof last - 1, NULL, &ds),
                     AIMS_OK);
    t = aims_dataset_text(ds, 0, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(t, "x\ty", 3);
    aims_dataset_destroy(ds);
}

/* ---- topics ------------------------------------------------------------------------------ */

static void make_topics_dir(char *dir, size_t cap)
{
    static int made;
    snprintf(dir, cap, "%s", tmp_path("topics"));
    if (made) {
        return;
    }
    made = 1;
    mkdir(dir, 0755);
    char p[600];
    /* beta: 3 entries, one blank */
    snprintf(p, sizeof p, "%s/beta", dir);
    const char beta[] = "b one\n%\nb two\nline 2\n%\n  \n\t\n%\nb three\n%\n";
    write_file(p, beta, sizeof beta - 1);
    /* alpha: over-strikes, CRLF separator, no final separator */
    snprintf(p, sizeof p, "%s/alpha", dir);
    const char alpha[] = "_\bI am *___\b\b\bnot* bold\n%\nsecond\n%\r\nthird\n";
    write_file(p, alpha, sizeof alpha - 1);
    /* skipped: dot file, .dat, .u8 symlink, symlink, small topic, sub-directory */
    snprintf(p, sizeof p, "%s/.hidden", dir);
    write_file(p, beta, sizeof beta - 1);
    snprintf(p, sizeof p, "%s/alpha.dat", dir);
    write_file(p, beta, sizeof beta - 1);
    snprintf(p, sizeof p, "%s/alpha.u8", dir);
    assert_int_equal(symlink("alpha", p), 0);
    snprintf(p, sizeof p, "%s/link", dir);
    assert_int_equal(symlink("beta", p), 0);
    snprintf(p, sizeof p, "%s/small", dir);
    write_file(p, "only one\n%\n", 11);
    snprintf(p, sizeof p, "%s/sub", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub/gamma", dir);
    write_file(p, beta, sizeof beta - 1);
}

static void test_dataset_load_topics_layout(void **state)
{
    (void)state;
    char dir[512];
    make_topics_dir(dir, sizeof dir);
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_MIN_DOCS, 2), AIMS_OK);
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_load_topics(dir, o, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_num_classes(ds), 2);
    assert_string_equal(aims_dataset_class_name(ds, 0), "alpha");
    assert_string_equal(aims_dataset_class_name(ds, 1), "beta");
    assert_int_equal(aims_dataset_rows(ds), 6);
    const int32_t want[6] = {0, 0, 0, 1, 1, 1};
    assert_memory_equal(aims_dataset_labels(ds), want, sizeof want);
    size_t len = 0;
    const char *t = aims_dataset_text(ds, 0, &len);
    assert_int_equal(len, strlen("I am *not* bold"));
    assert_memory_equal(t, "I am *not* bold", len);
    t = aims_dataset_text(ds, 2, &len);
    assert_memory_equal(t, "third", len);
    assert_int_equal(len, 5);
    t = aims_dataset_text(ds, 4, &len);
    assert_memory_equal(t, "b two\nline 2", len);
    assert_int_equal(len, 12);
    aims_dataset_destroy(ds);

    /* min_docs 1 keeps "small" too; max_rows caps documents */
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_MIN_DOCS, 1), AIMS_OK);
    assert_int_equal(aims_dataset_load_topics(dir, o, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_num_classes(ds), 3);
    assert_int_equal(aims_dataset_rows(ds), 7);
    aims_dataset_destroy(ds);
    /* default min_docs 20: nothing left */
    ds = NULL;
    assert_int_equal(aims_dataset_load_topics(dir, NULL, &ds), AIMS_E_INVAL);
    assert_null(ds);
    assert_int_equal(aims_dataset_load_topics(tmp_path("no-such-dir"), NULL, &ds),
                     AIMS_E_NOTFOUND);
    assert_int_equal(aims_dataset_load_topics(NULL, NULL, &ds), AIMS_E_MISUSE);
    aims_loadopts_destroy(o);
}

/* ---- loader options ------------------------------------------------------------------------ */

static void test_dataset_loadopts(void **state)
{
    (void)state;
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    int64_t v = 0;
    assert_int_equal(aims_loadopts_get_param_i64(o, AIMS_LOAD_MIN_DOCS, &v), AIMS_OK);
    assert_int_equal(v, 20);
    assert_int_equal(aims_loadopts_get_param_i64(o, AIMS_LOAD_MAX_BYTES, &v), AIMS_OK);
    assert_int_equal(v, 4294967296LL);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_DELIMITER, ';'), AIMS_OK);
    assert_int_equal(aims_loadopts_get_param_i64(o, AIMS_LOAD_DELIMITER, &v), AIMS_OK);
    assert_int_equal(v, ';');
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_MAX_BYTES, 0), AIMS_E_RANGE);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_STEP_BUCKETS, 5), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_loadopts_set_param_i64(o, (aims_param)150, 5), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_loadopts_get_param_i64(o, AIMS_STEP_BUCKETS, &v), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_loadopts_get_param_i64(o, AIMS_LOAD_HEADER, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_loadopts_set_param_i64(NULL, AIMS_LOAD_HEADER, 1), AIMS_E_MISUSE);
    assert_int_equal(aims_loadopts_create(NULL), AIMS_E_MISUSE);
    aims_loadopts_destroy(o);
    aims_loadopts_destroy(NULL);
    /* a destroyed or foreign options object is misuse for loaders */
    int junk[32] = {0};
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_TEXT, "a\tb", 3,
                                        (const aims_loadopts *)(void *)junk, &ds),
                     AIMS_E_MISUSE);
}

/* ---- allocation-failure loops ------------------------------------------------------------ */

typedef struct fl_ctx {
    aims_format format;
    const void *data;
    size_t size;
    const char *path;
    const char *path2;
    aims_dataset *ds;
    const aims_loadopts *opts;
} fl_ctx;

static aims_status op_create_dense(void *c)
{
    (void)c;
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const int32_t y[3] = {0, 1, 1};
    aims_dataset *ds = NULL;
    const aims_status rc = aims_dataset_create_dense(3, 2, x, y, &ds);
    aims_dataset_destroy(ds);
    return rc;
}

static aims_status op_create_texts(void *c)
{
    (void)c;
    const char *t[2] = {"x", "yz"};
    aims_dataset *ds = NULL;
    const int32_t y[2] = {0, 1};
    const aims_status rc = aims_dataset_create_texts(2, t, NULL, y, &ds);
    aims_dataset_destroy(ds);
    return rc;
}

static aims_status op_view(void *c)
{
    fl_ctx *ctx = c;
    aims_dataset *v = NULL;
    aims_dataset *vv = NULL;
    aims_status rc = aims_dataset_view(ctx->ds, 1, 3, &v);
    if (rc == AIMS_OK) {
        rc = aims_dataset_view(v, 1, 1, &vv);
    }
    aims_dataset_destroy(vv);
    aims_dataset_destroy(v);
    return rc;
}

static aims_status op_select(void *c)
{
    fl_ctx *ctx = c;
    const size_t idx[3] = {2, 0, 2};
    aims_dataset *s = NULL;
    const aims_status rc = aims_dataset_select(ctx->ds, idx, 3, &s);
    aims_dataset_destroy(s);
    return rc;
}

static aims_status op_split(void *c)
{
    fl_ctx *ctx = c;
    aims_dataset *a = NULL;
    aims_dataset *b = NULL;
    aims_status rc = aims_dataset_split(ctx->ds, 0.3, 5, 1, &a, &b);
    aims_dataset_destroy(a);
    aims_dataset_destroy(b);
    a = b = NULL;
    if (rc == AIMS_OK) {
        rc = aims_dataset_split(ctx->ds, 0.3, 5, 0, &a, &b);
    }
    aims_dataset_destroy(a);
    aims_dataset_destroy(b);
    return rc;
}

static aims_status op_shuffle(void *c)
{
    fl_ctx *ctx = c;
    aims_dataset *ds = NULL;
    aims_status rc = aims_dataset_parse(AIMS_FORMAT_TEXT, ctx->data, ctx->size, NULL, &ds);
    if (rc == AIMS_OK) {
        rc = aims_dataset_shuffle(ds, 11);
    }
    aims_dataset_destroy(ds);
    return rc;
}

static aims_status op_save(void *c)
{
    fl_ctx *ctx = c;
    return aims_dataset_save(ctx->ds, ctx->path);
}

/* The loaders under the failure loop: each makes a dataset from ctx, which
 * is dropped at once (only the status and the allocations count). */
typedef enum { LOAD_PARSE, LOAD_FILE, LOAD_IDX, LOAD_TOPICS } load_how;

static aims_status load_and_drop(const fl_ctx *ctx, load_how how)
{
    aims_dataset *ds = NULL;
    aims_status rc = AIMS_E_INVAL;
    switch (how) {
    case LOAD_PARSE:
        rc = aims_dataset_parse(ctx->format, ctx->data, ctx->size, ctx->opts, &ds);
        break;
    case LOAD_FILE:
        rc = aims_dataset_load_file(ctx->format, ctx->path, ctx->opts, &ds);
        break;
    case LOAD_IDX:
        rc = aims_dataset_load_idx(ctx->path, ctx->path2, ctx->opts, &ds);
        break;
    case LOAD_TOPICS:
        rc = aims_dataset_load_topics(ctx->path, ctx->opts, &ds);
        break;
    }
    aims_dataset_destroy(ds);
    return rc;
}

static aims_status op_parse(void *c)
{
    return load_and_drop(c, LOAD_PARSE);
}

static aims_status op_load_file(void *c)
{
    return load_and_drop(c, LOAD_FILE);
}

static aims_status op_load_idx(void *c)
{
    return load_and_drop(c, LOAD_IDX);
}

static aims_status op_load_topics(void *c)
{
    return load_and_drop(c, LOAD_TOPICS);
}

static aims_status op_loadopts(void *c)
{
    (void)c;
    aims_loadopts *o = NULL;
    aims_status rc = aims_loadopts_create(&o);
    if (rc == AIMS_OK) {
        rc = aims_loadopts_set_param_i64(o, AIMS_LOAD_MIN_DOCS, 3);
    }
    aims_loadopts_destroy(o);
    return rc;
}

static void test_dataset_alloc_failures(void **state)
{
    (void)state;
    fl_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ta_fail_loop("create_dense", op_create_dense, &ctx);
    ta_fail_loop("create_texts", op_create_texts, &ctx);
    ta_fail_loop("loadopts", op_loadopts, &ctx);

    /* text dataset with names: view / select / split / save / shuffle */
    ctx.data = k_text;
    ctx.size = sizeof k_text - 1;
    ctx.format = AIMS_FORMAT_TEXT;
    ta_fail_loop("parse_text", op_parse, &ctx);
    ta_fail_loop("shuffle", op_shuffle, &ctx);
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_TEXT, k_text, sizeof k_text - 1, NULL, &ctx.ds),
                     AIMS_OK);
    ta_fail_loop("view", op_view, &ctx);
    ta_fail_loop("select", op_select, &ctx);
    ta_fail_loop("split", op_split, &ctx);
    char path[512];
    snprintf(path, sizeof path, "%s", tmp_path("fl.aimsd"));
    ctx.path = path;
    ta_fail_loop("save", op_save, &ctx);
    aims_dataset_destroy(ctx.ds);
    ctx.ds = NULL;
    ctx.format = AIMS_FORMAT_AIMS;
    ta_fail_loop("load_file_aims", op_load_file, &ctx);
    size_t len = 0;
    void *bytes = read_whole(path, &len);
    ctx.data = bytes;
    ctx.size = len;
    ta_fail_loop("parse_aims", op_parse, &ctx);
    free(bytes);

    /* dense dataset save/load */
    ctx.ds = make_dense(30, 3);
    ta_fail_loop("save_dense", op_save, &ctx);
    ta_fail_loop("split_dense", op_split, &ctx);
    aims_dataset_destroy(ctx.ds);
    ctx.ds = NULL;
    ta_fail_loop("load_file_dense", op_load_file, &ctx);

    /* IDX */
    unsigned char img[128];
    unsigned char lab[32];
    const size_t ni = make_idx_u8(img, 5, 2, 3);
    const size_t nl = make_idx_labels(lab, 5, 3);
    ctx.format = AIMS_FORMAT_IDX;
    ctx.data = img;
    ctx.size = ni;
    ta_fail_loop("parse_idx", op_parse, &ctx);
    char img_path[512];
    char lab_path[512];
    snprintf(img_path, sizeof img_path, "%s", tmp_path("fl_img.idx"));
    snprintf(lab_path, sizeof lab_path, "%s", tmp_path("fl_lab.idx"));
    write_file(img_path, img, ni);
    write_file(lab_path, lab, nl);
    ctx.path = img_path;
    ctx.path2 = lab_path;
    ta_fail_loop("load_idx", op_load_idx, &ctx);

    /* topics */
    char dir[512];
    make_topics_dir(dir, sizeof dir);
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_MIN_DOCS, 2), AIMS_OK);
    ctx.path = dir;
    ctx.opts = o;
    ta_fail_loop("load_topics", op_load_topics, &ctx);
    aims_loadopts_destroy(o);
}

/* ---- real data ---------------------------------------------------------------------------- */

static void test_dataset_real_fashion_mnist(void **state)
{
    (void)state;
    const char *root = getenv("AIMS_DATA_DIR");
    if (root == NULL) {
        skip();
    }
    char img[1024];
    char lab[1024];
    snprintf(img, sizeof img, "%s/fashion-mnist/t10k-images-idx3-ubyte", root);
    snprintf(lab, sizeof lab, "%s/fashion-mnist/t10k-labels-idx1-ubyte", root);
    if (access(img, R_OK) != 0 || access(lab, R_OK) != 0) {
        skip();
    }
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_load_idx(img, lab, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_rows(ds), 10000);
    assert_int_equal(aims_dataset_cols(ds), 784);
    assert_int_equal(aims_dataset_num_classes(ds), 10);
    const float *x = aims_dataset_features(ds);
    float max = 0;
    for (size_t i = 0; i < 10000 * 784; i++) {
        max = x[i] > max ? x[i] : max;
    }
    assert_float_equal(max, 255.0f, 0.0f);
    aims_dataset_destroy(ds);
}

static void test_dataset_real_fortunes(void **state)
{
    (void)state;
    const char *dir = "/usr/share/games/fortunes";
    if (access(dir, R_OK) != 0) {
        skip();
    }
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_load_topics(dir, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_dataset_num_classes(ds), 40);
    assert_int_equal(aims_dataset_rows(ds), 15193);
    size_t counts[40] = {0};
    for (size_t i = 0; i < aims_dataset_rows(ds); i++) {
        counts[aims_dataset_labels(ds)[i]]++;
    }
    size_t lo = SIZE_MAX;
    size_t hi = 0;
    for (size_t k = 0; k < 40; k++) {
        lo = counts[k] < lo ? counts[k] : lo;
        hi = counts[k] > hi ? counts[k] : hi;
    }
    assert_int_equal(lo, 30);
    assert_int_equal(hi, 1251);
    for (size_t k = 0; k < 40; k++) {
        assert_string_not_equal(aims_dataset_class_name(ds, k), "ascii-art");
    }
    /* no backspace survives */
    for (size_t i = 0; i < aims_dataset_rows(ds); i++) {
        size_t len = 0;
        const char *t = aims_dataset_text(ds, i, &len);
        assert_null(memchr(t, '\b', len));
        assert_true(len > 0);
    }
    aims_dataset *tr = NULL;
    aims_dataset *te = NULL;
    assert_int_equal(aims_dataset_split(ds, 0.2, 2024, 1, &tr, &te), AIMS_OK);
    assert_int_equal(aims_dataset_rows(tr) + aims_dataset_rows(te), 15193);
    aims_dataset_destroy(tr);
    aims_dataset_destroy(te);
    aims_dataset_destroy(ds);
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_tmpdir[0] != '\0') {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", g_tmpdir);
        }
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dataset_create_dense_accessors, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_create_texts, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_view_destroy_any_order, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_shuffle_keeps_rows_together, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_select, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_split_stratified, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_save_load_roundtrip, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_parse_idx_types, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_parse_idx_hostile, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_load_idx_files, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_parse_text, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_load_topics_layout, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_loadopts, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_alloc_failures, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_real_fashion_mnist, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_real_fortunes, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name("api_dataset", tests, NULL, group_teardown);
}
