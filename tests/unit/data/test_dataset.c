/*
 * test_dataset.c -- white-box tests of src/data/dataset.c, loadopts.c,
 * load_idx.c and load_text.c: the parts the public API cannot build by itself
 * (token datasets with weights and targets), the invariant checker, and a
 * saved-dataset reader fed hand-made hostile containers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "data/aimsi_data.h"
#include "testalloc.h"

/* 4 rows: tokens {1,2} {} {3} {0,4,4}, weights = id/10, text "r<i>", labels
 * 0 1 0 1 with names, targets i + 0.5. Row i is recognisable in every part. */
static aims_dataset *make_tokens(void)
{
    static const uint64_t off[5] = {0, 2, 2, 3, 6};
    static const uint32_t ids[6] = {1, 2, 3, 0, 4, 4};
    static const char *const names[2] = {"even", "odd"};
    aims_dataset *ds = NULL;
    assert_int_equal(aimsi_dataset_new(&ds), AIMS_OK);
    ds->rows = 4;
    ds->tok_dim = 5;
    ds->tok_off = aimsi_malloc(sizeof off);
    ds->tok_ids = aimsi_malloc(sizeof ids);
    ds->tok_w = aimsi_malloc(6 * sizeof(float));
    ds->txt_off = aimsi_malloc(5 * sizeof(uint64_t));
    ds->txt = aimsi_malloc(8);
    ds->labels = aimsi_malloc(4 * sizeof(int32_t));
    ds->targets = aimsi_malloc(4 * sizeof(float));
    assert_non_null(ds->targets);
    memcpy(ds->tok_off, off, sizeof off);
    memcpy(ds->tok_ids, ids, sizeof ids);
    for (int j = 0; j < 6; j++) {
        ds->tok_w[j] = (float)ids[j] / 10.0f;
    }
    memcpy(ds->txt, "r0r1r2r3", 8);
    for (int i = 0; i < 4; i++) {
        ds->txt_off[i] = (uint64_t)(2 * i);
        ds->labels[i] = i % 2;
        ds->targets[i] = (float)i + 0.5f;
    }
    ds->txt_off[4] = 8;
    assert_int_equal(aimsi_dataset_set_names(ds, names, 2), AIMS_OK);
    assert_int_equal(ds->num_classes, 2);
    assert_int_equal(aimsi_dataset_check(ds), AIMS_OK);
    return ds;
}

/* Row r of ds must be original row `orig` of make_tokens(). */
static void expect_row(const aims_dataset *ds, size_t r, size_t orig)
{
    static const uint64_t off[5] = {0, 2, 2, 3, 6};
    static const uint32_t ids[6] = {1, 2, 3, 0, 4, 4};
    const uint64_t *o = NULL;
    const uint32_t *id = NULL;
    const float *w = NULL;
    assert_int_equal(aims_dataset_tokens(ds, &o, &id, &w), AIMS_OK);
    assert_int_equal(o[r + 1] - o[r], off[orig + 1] - off[orig]);
    for (uint64_t j = 0; j < o[r + 1] - o[r]; j++) {
        assert_int_equal(id[o[r] + j], ids[off[orig] + j]);
        assert_float_equal(w[o[r] + j], (float)ids[off[orig] + j] / 10.0f, 0.0f);
    }
    size_t len = 0;
    const char *t = aims_dataset_text(ds, r, &len);
    assert_int_equal(len, 2);
    assert_int_equal(t[1], '0' + (int)orig);
    assert_int_equal(aims_dataset_labels(ds)[r], (int32_t)(orig % 2));
    assert_float_equal(aims_dataset_targets(ds)[r], (float)orig + 0.5f, 0.0f);
}

static void test_dataset_tokens_view_select(void **state)
{
    (void)state;
    aims_dataset *ds = make_tokens();
    assert_int_equal(aims_dataset_token_dim(ds), 5);
    aims_dataset *v = NULL;
    assert_int_equal(aims_dataset_view(ds, 2, 2, &v), AIMS_OK);
    const uint64_t *o = NULL;
    const uint32_t *id = NULL;
    assert_int_equal(aims_dataset_tokens(v, &o, &id, NULL), AIMS_OK);
    assert_int_equal(o[0], 2); /* offsets of a view stay absolute */
    expect_row(v, 0, 2);
    expect_row(v, 1, 3);
    assert_int_equal(atomic_load(&ds->refs), 2);
    assert_int_equal(aimsi_dataset_check(v), AIMS_OK);

    const size_t idx[3] = {3, 1, 0};
    aims_dataset *s = NULL;
    assert_int_equal(aims_dataset_select(v, idx, 1, &s), AIMS_E_RANGE);
    assert_int_equal(aims_dataset_select(ds, idx, 3, &s), AIMS_OK);
    assert_int_equal(s->tok_off[0], 0);
    assert_int_equal(s->tok_off[3], 5);
    expect_row(s, 0, 3);
    expect_row(s, 1, 1);
    expect_row(s, 2, 0);
    assert_string_equal(aims_dataset_class_name(s, 1), "odd");
    assert_int_equal(aimsi_dataset_check(s), AIMS_OK);
    aims_dataset_destroy(s);
    aims_dataset_destroy(ds);
    assert_int_equal(atomic_load(&v->root->refs), 1);
    /* aimsi_dataset_free on a view drops the view's reference, like destroy */
    aims_dataset *vv = NULL;
    assert_int_equal(aims_dataset_view(v, 0, 1, &vv), AIMS_OK);
    assert_true(vv->root == v->root);
    assert_int_equal(atomic_load(&v->root->refs), 2);
    aimsi_dataset_free(vv);
    assert_int_equal(atomic_load(&v->root->refs), 1);
    aims_dataset_destroy(v);
}

static void test_dataset_shuffle_all_parts(void **state)
{
    (void)state;
    aims_dataset *ds = make_tokens();
    assert_int_equal(aims_dataset_shuffle(ds, 5), AIMS_OK);
    assert_int_equal(aimsi_dataset_check(ds), AIMS_OK);
    for (size_t r = 0; r < 4; r++) {
        size_t len = 0;
        const char *t = aims_dataset_text(ds, r, &len);
        expect_row(ds, r, (size_t)(t[1] - '0'));
    }
    aims_dataset_destroy(ds);
}

static void test_dataset_check_catches(void **state)
{
    (void)state;
    aims_dataset *ds = make_tokens();
    ds->tok_ids[0] = 5;
    assert_int_equal(aimsi_dataset_check(ds), AIMS_E_INTERNAL);
    ds->tok_ids[0] = 1;
    ds->tok_off[2] = 1;
    assert_int_equal(aimsi_dataset_check(ds), AIMS_E_INTERNAL);
    ds->tok_off[2] = 2;
    ds->labels[3] = 2;
    assert_int_equal(aimsi_dataset_check(ds), AIMS_E_INTERNAL);
    ds->labels[3] = 1;
    assert_int_equal(aimsi_dataset_check(ds), AIMS_OK);
    aimsi_dataset_free(ds);
}

static void test_dataset_copy_labels(void **state)
{
    (void)state;
    aims_dataset *src = make_tokens();
    aims_dataset *dst = NULL;
    assert_int_equal(aimsi_dataset_new(&dst), AIMS_OK);
    dst->rows = 3;
    assert_int_equal(aimsi_dataset_copy_labels(dst, src), AIMS_E_INTERNAL);
    dst->rows = 4;
    assert_int_equal(aimsi_dataset_copy_labels(dst, src), AIMS_OK);
    assert_int_equal(dst->num_classes, 2);
    assert_memory_equal(dst->labels, src->labels, 4 * sizeof(int32_t));
    assert_memory_equal(dst->targets, src->targets, 4 * sizeof(float));
    assert_string_equal(dst->class_names[0], "even");
    /* twice: replaces, does not leak */
    assert_int_equal(aimsi_dataset_copy_labels(dst, src), AIMS_OK);
    aimsi_dataset_free(dst);
    aimsi_dataset_free(src);
}

/* ---- saved datasets ----------------------------------------------------------------- */

static void *save_to_memory(const aims_dataset *ds, size_t *len)
{
    char path[] = "/tmp/aims_unit_ds_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(aims_dataset_save(ds, path), AIMS_OK);
    void *data = NULL;
    assert_int_equal(aimsi_file_read(path, 1u << 30, &data, len), AIMS_OK);
    unlink(path);
    return data;
}

static void test_dataset_save_load_tokens(void **state)
{
    (void)state;
    aims_dataset *ds = make_tokens();
    aims_dataset *v = NULL;
    assert_int_equal(aims_dataset_view(ds, 1, 3, &v), AIMS_OK);
    size_t len = 0;
    void *bytes = save_to_memory(v, &len);
    aims_dataset *back = NULL;
    assert_int_equal(aimsi_load_aims(bytes, len, "<mem>", NULL, &back), AIMS_OK);
    assert_int_equal(aimsi_dataset_check(back), AIMS_OK);
    assert_int_equal(back->rows, 3);
    assert_int_equal(back->tok_off[0], 0);
    expect_row(back, 0, 1);
    expect_row(back, 1, 2);
    expect_row(back, 2, 3);
    assert_string_equal(aims_dataset_class_name(back, 0), "even");
    aims_dataset_destroy(back);
    aimsi_free(bytes);
    aims_dataset_destroy(v);
    aims_dataset_destroy(ds);
}

typedef struct sect {
    uint32_t tag;
    const void *data;
    size_t len;
} sect;

static uint8_t g_meta[64];

static void set_meta(uint32_t flags, uint64_t rows, uint64_t cols, uint64_t tok_dim,
                     uint64_t classes, uint64_t names, uint64_t nnz, uint64_t tlen)
{
    aimsi_store_u32le(g_meta, 1);
    aimsi_store_u32le(g_meta + 4, flags);
    const uint64_t f[7] = {rows, cols, tok_dim, classes, names, nnz, tlen};
    for (int i = 0; i < 7; i++) {
        aimsi_store_u64le(g_meta + 8 + 8 * i, f[i]);
    }
}

/* Build a dataset container from sections and parse it. */
static aims_status load_sections(const sect *s, size_t n)
{
    aimsi_cwriter *w = NULL;
    assert_int_equal(aimsi_cw_create(AIMSI_KIND_DATASET, 1, &w), AIMS_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(aimsi_cw_add(w, s[i].tag, s[i].data, s[i].len), AIMS_OK);
    }
    void *bytes = NULL;
    size_t len = 0;
    assert_int_equal(aimsi_cw_finish(w, &bytes, &len), AIMS_OK);
    aimsi_cw_destroy(w);
    aims_dataset *ds = NULL;
    const aims_status rc = aimsi_load_aims(bytes, len, "<mem>", NULL, &ds);
    aimsi_free(bytes);
    if (rc == AIMS_OK) {
        assert_int_equal(aimsi_dataset_check(ds), AIMS_OK);
        aims_dataset_destroy(ds);
    } else {
        assert_null(ds);
    }
    return rc;
}

#define META AIMSI_TAG('M', 'E', 'T', 'A')
#define TOFF AIMSI_TAG('T', 'O', 'F', 'F')
#define TIDS AIMSI_TAG('T', 'I', 'D', 'S')
#define LABL AIMSI_TAG('L', 'A', 'B', 'L')
#define DENS AIMSI_TAG('D', 'E', 'N', 'S')
#define NAME AIMSI_TAG('N', 'A', 'M', 'E')
#define XOFF AIMSI_TAG('X', 'O', 'F', 'F')
#define TEXT AIMSI_TAG('T', 'E', 'X', 'T')

static void test_dataset_load_aims_hostile(void **state)
{
    (void)state;
    const uint64_t off_ok[3] = {0, 1, 2};
    const uint64_t off_dec[3] = {0, 2, 1};
    const uint64_t off_start[3] = {1, 1, 2};
    const uint32_t ids_ok[2] = {0, 3};
    const uint32_t ids_bad[2] = {0, 4};
    const int32_t lab_ok[2] = {0, 1};
    const int32_t lab_bad[2] = {0, 2};
    const float dense[4] = {1, 2, 3, 4};
    const uint8_t names[] = {1, 0, 0, 0, 'a', 1, 0, 0, 0, 'b'};
    const uint8_t names_nul[] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 'b'};

    /* tokens + labels + names, valid */
    set_meta(2 | 16 | 64, 2, 0, 4, 2, 2, 2, 0);
    sect ok[] = {{META, g_meta, 64}, {TOFF, off_ok, 24}, {TIDS, ids_ok, 8},
                 {LABL, lab_ok, 8}, {NAME, names, sizeof names}};
    assert_int_equal(load_sections(ok, 5), AIMS_OK);
    /* each mutation is caught */
    sect s[5];
    memcpy(s, ok, sizeof ok);
    s[1].data = off_dec;
    assert_int_equal(load_sections(s, 5), AIMS_E_CORRUPT);
    s[1].data = off_start;
    assert_int_equal(load_sections(s, 5), AIMS_E_CORRUPT);
    memcpy(s, ok, sizeof ok);
    s[2].data = ids_bad;
    assert_int_equal(load_sections(s, 5), AIMS_E_CORRUPT);
    memcpy(s, ok, sizeof ok);
    s[3].data = lab_bad;
    assert_int_equal(load_sections(s, 5), AIMS_E_CORRUPT);
    memcpy(s, ok, sizeof ok);
    s[4].data = names_nul;
    assert_int_equal(load_sections(s, 5), AIMS_E_CORRUPT);
    s[4].len = 9;
    s[4].data = names;
    assert_int_equal(load_sections(s, 5), AIMS_E_CORRUPT);
    memcpy(s, ok, sizeof ok);
    s[2].len = 4; /* shorter than META implies */
    assert_int_equal(load_sections(s, 5), AIMS_E_CORRUPT);
    assert_int_equal(load_sections(ok, 4), AIMS_E_CORRUPT); /* NAME missing */
    assert_int_equal(load_sections(ok, 1), AIMS_E_CORRUPT); /* everything missing */

    /* META itself */
    set_meta(2 | 16 | 64, 2, 0, 4, 3, 2, 2, 0); /* names != classes */
    assert_int_equal(load_sections(ok, 5), AIMS_E_CORRUPT);
    set_meta(2 | 16 | 64, 0, 0, 4, 2, 2, 2, 0); /* zero rows */
    assert_int_equal(load_sections(ok, 5), AIMS_E_CORRUPT);
    set_meta(1u << 9, 2, 0, 0, 0, 0, 0, 0); /* unknown part */
    assert_int_equal(load_sections(ok, 1), AIMS_E_UNSUPPORTED);
    set_meta(0, 2, 0, 0, 0, 0, 0, 0); /* no parts */
    assert_int_equal(load_sections(ok, 1), AIMS_E_CORRUPT);
    set_meta(1, UINT64_MAX / 2, UINT64_MAX / 2, 0, 0, 0, 0, 0); /* huge dense */
    const aims_status big = load_sections(ok, 1);
    assert_true(big == AIMS_E_CORRUPT || big == AIMS_E_RANGE);
    set_meta(16, 2, 0, 0, 0, 0, 0, 0); /* labels with zero classes */
    assert_int_equal(load_sections(ok, 1), AIMS_E_CORRUPT);
    sect shortmeta[] = {{META, g_meta, 20}};
    assert_int_equal(load_sections(shortmeta, 1), AIMS_E_CORRUPT);

    /* dense + text valid, then a text offset past the end */
    set_meta(1 | 8, 2, 2, 0, 0, 0, 0, 3);
    const uint64_t xoff[3] = {0, 1, 3};
    const uint64_t xoff_bad[3] = {0, 1, 4};
    sect dt[] = {{META, g_meta, 64}, {DENS, dense, 16}, {XOFF, xoff, 24}, {TEXT, "abc", 3}};
    assert_int_equal(load_sections(dt, 4), AIMS_OK);
    dt[2].data = xoff_bad;
    assert_int_equal(load_sections(dt, 4), AIMS_E_CORRUPT);
}

/* ---- loaders and options (internal entry points) -------------------------------------- */

static void test_dataset_loadopt_defaults(void **state)
{
    (void)state;
    assert_int_equal(aimsi_loadopt(NULL, AIMS_LOAD_MIN_DOCS), 20);
    assert_int_equal(aimsi_loadopt(NULL, AIMS_LOAD_DELIMITER), ',');
    assert_int_equal(aimsi_loadopt(NULL, AIMS_LOAD_LABEL_COLUMN), -1);
    assert_int_equal(aimsi_loadopt(NULL, AIMS_STEP_BUCKETS), 0);
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_SKIP_ROWS, 7), AIMS_OK);
    assert_int_equal(aimsi_loadopt(o, AIMS_LOAD_SKIP_ROWS), 7);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_HEADER, 3), AIMS_E_RANGE);
    assert_true(strlen(o->obj.errmsg) > 0);
    aims_loadopts_destroy(o);
}

static void test_dataset_idx_labels_internal(void **state)
{
    (void)state;
    const uint8_t i16[] = {0, 0, 0x0B, 1, 0, 0, 0, 3, 0, 1, 0x01, 0x00, 0, 9};
    int32_t *labels = NULL;
    size_t n = 0;
    assert_int_equal(aimsi_load_idx_labels(i16, sizeof i16, "x", NULL, &labels, &n), AIMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(labels[1], 256);
    aimsi_free(labels);
    const uint8_t img[] = {0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1, 7};
    labels = NULL;
    assert_int_equal(aimsi_load_idx_labels(img, sizeof img, "x", NULL, &labels, &n),
                     AIMS_E_CORRUPT);
    assert_null(labels);
    /* large enough to take the threaded conversion path */
    const size_t items = 4096;
    const size_t total = 16 + items * 784;
    uint8_t *big = malloc(total);
    assert_non_null(big);
    const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0x10, 0, 0, 0, 0, 28, 0, 0, 0, 28};
    memcpy(big, hdr, 16);
    for (size_t i = 16; i < total; i++) {
        big[i] = (uint8_t)(i * 31);
    }
    aims_dataset *ds = NULL;
    assert_int_equal(aimsi_load_idx_images(big, total, "big", NULL, &ds), AIMS_OK);
    assert_int_equal(ds->rows, items);
    for (size_t i = 0; i < items * 784; i += 997) {
        assert_float_equal(ds->x[i], (float)big[16 + i], 0.0f);
    }
    assert_float_equal(ds->x[items * 784 - 1], (float)big[total - 1], 0.0f);
    aims_dataset_destroy(ds);
    free(big);
}

static void test_dataset_text_class_order(void **state)
{
    (void)state;
    /* ids follow bytewise order of the names, not first appearance */
    const char t[] = "zeta\t1\nBeta\t2\nalpha\t3\nzeta\t4\n\xc3\xa9t\xc3\xa9\t5\n";
    aims_dataset *ds = NULL;
    assert_int_equal(aimsi_load_text(t, sizeof t - 1, "t", NULL, &ds), AIMS_OK);
    assert_int_equal(ds->num_classes, 4);
    assert_string_equal(ds->class_names[0], "Beta");
    assert_string_equal(ds->class_names[1], "alpha");
    assert_string_equal(ds->class_names[2], "zeta");
    assert_string_equal(ds->class_names[3], "\xc3\xa9t\xc3\xa9");
    const int32_t want[5] = {2, 0, 1, 2, 3};
    assert_memory_equal(ds->labels, want, sizeof want);
    assert_int_equal(aimsi_dataset_check(ds), AIMS_OK);
    aims_dataset_destroy(ds);

    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    assert_int_equal(aims_loadopts_set_param_i64(o, AIMS_LOAD_MAX_ROWS, 2), AIMS_OK);
    assert_int_equal(aimsi_load_text(t, sizeof t - 1, "t", o, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 2);
    assert_int_equal(ds->num_classes, 2);
    aims_dataset_destroy(ds);
    aims_loadopts_destroy(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dataset_tokens_view_select, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_shuffle_all_parts, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_check_catches, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_copy_labels, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_save_load_tokens, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_load_aims_hostile, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_loadopt_defaults, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_idx_labels_internal, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_dataset_text_class_order, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name("unit_dataset", tests, NULL, NULL);
}
