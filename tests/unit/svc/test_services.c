/*
 * test_services.c -- the built-in service kinds (svc_infer.c, svc_pre.c,
 * svc_train.c), driven through their run() directly with hand-built work
 * items, and through a node with aimsi_node_call_local.
 *
 * Models are trained here on small synthetic data: three Gaussian blobs in 4-D
 * (softmax / mlp / logistic / linear) and a handful of short documents for a
 * TEXT model. Everything is deterministic (seeded trainers, fixed data).
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "svc/aimsi_msg.h"
#include "svc/aimsi_local.h"
#include "svc/aimsi_svckind.h"
#include "svc_blobs.h"
#include "testalloc.h"

#define ROWS 240
#define COLS 4
#define CLASSES 3

/* ---- data and models ------------------------------------------------------------------- */

static float g_x[ROWS * COLS];
static int32_t g_y[ROWS];

static void make_data(void)
{
    const blobs_shape sh = {.rows = ROWS, .cols = COLS, .classes = CLASSES, .seed = 42,
                            .hi = 3.0, .lo = -1.0, .spread = 1.5, .slope = 10.0};
    blobs_make(&sh, g_x, g_y);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Train a dense model of `kind` (pipeline: standardize, when with_pipe). */
static aims_bundle *make_bundle(aims_model_kind kind, int with_pipe, int epochs)
{
    aims_dataset *ds = NULL;
    int32_t ybin[ROWS];
    for (size_t r = 0; r < ROWS; r++) {
        ybin[r] = g_y[r] == 0 ? 1 : 0;
    }
    const int32_t *labels = kind == AIMS_MODEL_KIND_LOGISTIC ? ybin : g_y;
    assert_int_equal(aims_dataset_create_dense(ROWS, COLS, g_x, labels, &ds), AIMS_OK);
    aims_pipeline *p = NULL;
    aims_dataset *tds = ds;
    if (with_pipe) {
        assert_int_equal(aims_pipeline_create(&p), AIMS_OK);
        assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL), AIMS_OK);
        assert_int_equal(aims_pipeline_fit_transform(p, ds, &tds), AIMS_OK);
    }
    const size_t out = kind == AIMS_MODEL_KIND_LOGISTIC || kind == AIMS_MODEL_KIND_LINEAR ? 1 : CLASSES;
    aims_model *m = NULL;
    assert_int_equal(aims_model_create(kind, COLS, out, &m), AIMS_OK);
    if (kind == AIMS_MODEL_KIND_MLP) {
        assert_int_equal(aims_model_add_dense(m, 8, AIMS_ACT_RELU), AIMS_OK);
    }
    aims_trainer *t = NULL;
    assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, epochs), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 16), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, with_pipe ? 0.1 : 0.001),
                     AIMS_OK);
    assert_int_equal(aims_trainer_fit(t, tds, NULL), AIMS_OK);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(p, m, &b), AIMS_OK);
    assert_int_equal(aims_bundle_set_meta(b, "name", "blobs"), AIMS_OK);
    assert_int_equal(aims_bundle_set_meta(b, "version", "3"), AIMS_OK);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    if (tds != ds) {
        aims_dataset_destroy(tds);
    }
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
    return b;
}

static const char *const g_docs[] = {
    "the cat sat on the mat",          "a dog barked at the cat",
    "stocks fell as markets slid",     "the market rallied on earnings",
    "my cat chased the little mouse",  "investors sold shares of the bank",
    "the puppy and the kitten played", "bond yields rose while stocks fell",
};
#define NDOCS (sizeof g_docs / sizeof g_docs[0])

/* tokenize + hash into 256 buckets, not fitted yet */
static aims_pipeline *text_pipeline(void)
{
    aims_pipeline *p = NULL;
    size_t hs = 0;
    assert_int_equal(aims_pipeline_create(&p), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &hs), AIMS_OK);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, hs, AIMS_STEP_BUCKETS, 256), AIMS_OK);
    return p;
}

static aims_bundle *make_text_bundle(void)
{
    int32_t labels[NDOCS];
    for (size_t i = 0; i < NDOCS; i++) {
        labels[i] = (int32_t)(i % 2);
    }
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_texts(NDOCS, g_docs, NULL, labels, &ds), AIMS_OK);
    aims_pipeline *p = text_pipeline();
    aims_dataset *tds = NULL;
    assert_int_equal(aims_pipeline_fit_transform(p, ds, &tds), AIMS_OK);
    aims_model *m = NULL;
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_TEXT, 256, 2, &m), AIMS_OK);
    assert_int_equal(aims_model_set_param_i64(m, AIMS_MODEL_EMBED_DIM, 8), AIMS_OK);
    aims_trainer *t = NULL;
    assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 20), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, 0.5), AIMS_OK);
    assert_int_equal(aims_trainer_fit(t, tds, NULL), AIMS_OK);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(p, m, &b), AIMS_OK);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(tds);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
    return b;
}

/* ---- work items ------------------------------------------------------------------------- */

typedef struct item {
    aims_msg *req;
    aims_msg *reply;
    aimsi_work w;
} item;

static void item_init(item *it, const char *method)
{
    memset(it, 0, sizeof *it);
    assert_int_equal(aims_msg_create(&it->req), AIMS_OK);
    assert_int_equal(aims_msg_create(&it->reply), AIMS_OK);
    it->w.method = method;
    it->w.req = it->req;
    it->w.reply = it->reply;
    it->w.status = (aims_status)-1;
}

static void item_fini(item *it)
{
    aims_msg_destroy(it->req);
    aims_msg_destroy(it->reply);
}

static void add_x(aims_msg *m, const float *x, size_t rows, size_t cols)
{
    const uint64_t d[2] = {rows, cols};
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, d, 2, x, 0), AIMS_OK);
}

static void add_bytes(aims_msg *m, const char *name, const char *s)
{
    const uint64_t d = strlen(s);
    assert_int_equal(aims_msg_add(m, name, AIMS_DT_BYTES, &d, 1, s, 0), AIMS_OK);
}

static void add_i32(aims_msg *m, const char *name, int32_t v)
{
    assert_int_equal(aims_msg_add(m, name, AIMS_DT_I32, NULL, 0, &v, 0), AIMS_OK);
}

static const float *reply_f32(const aims_msg *m, const char *name, size_t *n_out)
{
    size_t idx = 0;
    assert_int_equal(aims_msg_find(m, name, &idx), AIMS_OK);
    aims_dtype dt = 0;
    const void *data = NULL;
    size_t bytes = 0;
    assert_int_equal(aims_msg_get_tensor(m, idx, NULL, &dt, NULL, NULL, &data, &bytes), AIMS_OK);
    assert_int_equal(dt, AIMS_DT_F32);
    *n_out = bytes / sizeof(float);
    return data;
}

static int32_t reply_i32(const aims_msg *m, const char *name)
{
    size_t idx = 0;
    assert_int_equal(aims_msg_find(m, name, &idx), AIMS_OK);
    const void *data = NULL;
    aims_dtype dt = 0;
    assert_int_equal(aims_msg_get_tensor(m, idx, NULL, &dt, NULL, NULL, &data, NULL), AIMS_OK);
    assert_int_equal(dt, AIMS_DT_I32);
    int32_t v = 0;
    memcpy(&v, data, sizeof v);
    return v;
}

static void run_items(const aimsi_svc_kind *k, void *impl, item *its, size_t n)
{
    aimsi_work *ws[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++) {
        ws[i] = &its[i].w;
    }
    k->run(impl, ws, n);
}

/* Expected outputs of `rows` rows at x, computed by the bundle directly. */
static void expect_rows(const aims_bundle *b, int what, const float *x, size_t rows,
                        float *out)
{
    const aims_model *m = aims_bundle_model(b);
    const size_t k = aims_model_output_dim(m);
    float raw[64 * 8];
    assert_true(rows * k <= sizeof raw / sizeof raw[0]);
    assert_int_equal(aims_bundle_predict_rows(b, what == 0 ? AIMS_OUT_SCORES : what, x, rows,
                                              COLS, raw, rows * k),
                     AIMS_OK);
    if (what != 0) {
        memcpy(out, raw, rows * k * sizeof *out);
        return;
    }
    int32_t cls[64];
    /* class ids must agree with the model's own argmax (predict_class) */
    const aims_pipeline *p = aims_bundle_pipeline(b);
    float t[64 * COLS];
    const float *in = x;
    if (p != NULL) {
        assert_int_equal(aims_pipeline_transform_rows(p, x, rows, COLS, t, rows * COLS), AIMS_OK);
        in = t;
    }
    assert_int_equal(aims_model_predict_class(m, in, rows, COLS, cls, rows), AIMS_OK);
    for (size_t r = 0; r < rows; r++) {
        out[r] = (float)cls[r];
    }
}

/* ---- infer -------------------------------------------------------------------------------- */

static aims_bundle *g_softmax; /* with a standardize pipeline */

static void check_batch(const aims_bundle *b, int what)
{
    void *impl = NULL;
    assert_int_equal(aimsi_infer_create(b, &impl), AIMS_OK);
    item its[6];
    const size_t rows[6] = {1, 3, 2, 5, 1, 4};
    size_t off = 0;
    for (size_t i = 0; i < 6; i++) {
        item_init(&its[i], "predict");
        add_x(its[i].req, g_x + off * COLS, rows[i], COLS);
        if (what != 0) {
            add_i32(its[i].req, "output", what);
        }
        off += rows[i] * 7;
    }
    run_items(&aimsi_kind_infer, impl, its, 6);
    const size_t k = what == 0 ? 1 : aims_model_output_dim(aims_bundle_model(b));
    off = 0;
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(its[i].w.status, AIMS_OK);
        size_t n = 0;
        const float *y = reply_f32(its[i].reply, "y", &n);
        assert_int_equal(n, rows[i] * k);
        float want[64];
        expect_rows(b, what, g_x + off * COLS, rows[i], want);
        for (size_t j = 0; j < n; j++) {
            /* a lone row goes through gemv, a batch through sgemm: same math,
             * possibly other rounding; class ids must match exactly */
            if (what == 0) {
                assert_true(y[j] == want[j]);
            } else {
                assert_true(fabsf(y[j] - want[j]) <= 1e-5f * (1.0f + fabsf(want[j])));
            }
        }
        off += rows[i] * 7;
        item_fini(&its[i]);
    }
    aimsi_kind_infer.destroy(impl);
}

static void test_infer_batch_equals_direct(void **state)
{
    (void)state;
    check_batch(g_softmax, 0);
    check_batch(g_softmax, AIMS_OUT_SCORES);
    check_batch(g_softmax, AIMS_OUT_PROBA);
}

/* The joined batch must be exactly one predict over the joined rows. */
static void test_infer_batch_bitexact_joined(void **state)
{
    (void)state;
    void *impl = NULL;
    assert_int_equal(aimsi_infer_create(g_softmax, &impl), AIMS_OK);
    item its[3];
    const size_t rows[3] = {2, 3, 4};
    size_t off = 0;
    for (size_t i = 0; i < 3; i++) {
        item_init(&its[i], "predict");
        add_x(its[i].req, g_x + off * COLS, rows[i], COLS);
        add_i32(its[i].req, "output", AIMS_OUT_SCORES);
        off += rows[i];
    }
    run_items(&aimsi_kind_infer, impl, its, 3);
    float want[9 * CLASSES];
    assert_int_equal(aims_bundle_predict_rows(g_softmax, AIMS_OUT_SCORES, g_x, 9, COLS, want,
                                              9 * CLASSES),
                     AIMS_OK);
    off = 0;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(its[i].w.status, AIMS_OK);
        size_t n = 0;
        const float *y = reply_f32(its[i].reply, "y", &n);
        assert_int_equal(n, rows[i] * CLASSES);
        assert_memory_equal(y, want + off * CLASSES, n * sizeof(float));
        off += rows[i];
        item_fini(&its[i]);
    }
    aimsi_kind_infer.destroy(impl);
}

static void expect_error(const item *it, aims_status st, const char *needle)
{
    if (it->w.status != st || strstr(aims_msg_error(it->reply), needle) == NULL) {
        fail_msg("status %d (want %d), error '%s' (want '%s')", (int)it->w.status, (int)st,
                 aims_msg_error(it->reply), needle);
    }
    assert_int_equal(aims_msg_num_tensors(it->reply), 0);
}

static void test_infer_bad_items(void **state)
{
    (void)state;
    void *impl = NULL;
    assert_int_equal(aimsi_infer_create(g_softmax, &impl), AIMS_OK);
    enum { N = 11 };
    item its[N];
    for (size_t i = 0; i < N; i++) {
        item_init(&its[i], "predict");
    }
    float nan_row[COLS * 2];
    memcpy(nan_row, g_x, sizeof nan_row);
    nan_row[5] = NAN;
    add_x(its[0].req, g_x, 2, COLS);                 /* good */
    add_x(its[1].req, g_x, 3, COLS - 1);             /* wrong width */
    add_x(its[2].req, nan_row, 2, COLS);             /* NaN: the pipeline rejects it */
    add_x(its[3].req, g_x + 8, 3, COLS);             /* good */
    const uint64_t d2[2] = {1, COLS};
    assert_int_equal(aims_msg_add(its[4].req, "x", AIMS_DT_I32, d2, 2, g_y, 0), AIMS_OK);
    /* its[5]: no input at all */
    add_x(its[6].req, g_x, 1, COLS);
    add_i32(its[6].req, "output", 7);                /* bad output */
    add_x(its[7].req, g_x, 1, COLS);
    its[7].w.method = "explode";                     /* unknown method */
    add_x(its[8].req, g_x, 1, COLS);
    its[8].w.deadline_ns = 1;                        /* long past */
    its[9].w.method = "info";
    add_x(its[10].req, g_x + 4 * COLS, 1, COLS);     /* good, alone */
    run_items(&aimsi_kind_infer, impl, its, N);

    float want[8];
    assert_int_equal(its[0].w.status, AIMS_OK);
    size_t n = 0;
    const float *y = reply_f32(its[0].reply, "y", &n);
    assert_int_equal(n, 2);
    expect_rows(g_softmax, 0, g_x, 2, want);
    assert_memory_equal(y, want, 2 * sizeof(float));
    assert_int_equal(its[3].w.status, AIMS_OK);
    y = reply_f32(its[3].reply, "y", &n);
    assert_int_equal(n, 3);
    expect_rows(g_softmax, 0, g_x + 8, 3, want);
    assert_memory_equal(y, want, 3 * sizeof(float));
    assert_int_equal(its[10].w.status, AIMS_OK);
    expect_error(&its[1], AIMS_E_INVAL, "in_cols 3");
    expect_error(&its[2], AIMS_E_INVAL, "predict");
    expect_error(&its[4], AIMS_E_INVAL, "\"x\" must be f32");
    expect_error(&its[5], AIMS_E_INVAL, "exactly one of");
    expect_error(&its[6], AIMS_E_INVAL, "\"output\" = 7");
    expect_error(&its[7], AIMS_E_NOTFOUND, "no method explode on infer service");
    expect_error(&its[8], AIMS_E_TIMEOUT, "deadline");
    /* info */
    assert_int_equal(its[9].w.status, AIMS_OK);
    size_t idx = 0;
    const void *data = NULL;
    size_t bytes = 0;
    assert_int_equal(aims_msg_find(its[9].reply, "name", &idx), AIMS_OK);
    assert_int_equal(aims_msg_get_tensor(its[9].reply, idx, NULL, NULL, NULL, NULL, &data, &bytes),
                     AIMS_OK);
    assert_int_equal(bytes, 5);
    assert_memory_equal(data, "blobs", 5);
    assert_int_equal(aims_msg_find(its[9].reply, "version", &idx), AIMS_OK);
    assert_int_equal(aims_msg_get_tensor(its[9].reply, idx, NULL, NULL, NULL, NULL, &data, &bytes),
                     AIMS_OK);
    assert_int_equal(bytes, 1);
    assert_memory_equal(data, "3", 1);
    for (size_t i = 0; i < N; i++) {
        item_fini(&its[i]);
    }
    aimsi_kind_infer.destroy(impl);
}

/* Items asking for different outputs share a batch; unaligned borrowed input
 * (as a decoded frame may hand over) is read correctly. */
static void test_infer_mixed_outputs_unaligned(void **state)
{
    (void)state;
    void *impl = NULL;
    assert_int_equal(aimsi_infer_create(g_softmax, &impl), AIMS_OK);
    static unsigned char raw[1 + 6 * COLS * sizeof(float)];
    memcpy(raw + 1, g_x, 6 * COLS * sizeof(float));
    item its[6];
    for (size_t i = 0; i < 6; i++) {
        item_init(&its[i], "predict");
        const uint64_t d[2] = {1, COLS};
        assert_int_equal(aims_msg_add(its[i].req, "x", AIMS_DT_F32, d, 2,
                                      raw + 1 + i * COLS * sizeof(float), AIMS_MSG_BORROW),
                         AIMS_OK);
        add_i32(its[i].req, "output", (int32_t)(i % 3));
    }
    run_items(&aimsi_kind_infer, impl, its, 6);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(its[i].w.status, AIMS_OK);
        size_t n = 0;
        const float *y = reply_f32(its[i].reply, "y", &n);
        const int what = (int)(i % 3);
        assert_int_equal(n, what == 0 ? 1 : CLASSES);
        float want[CLASSES];
        expect_rows(g_softmax, what, g_x + i * COLS, 1, want);
        for (size_t j = 0; j < n; j++) {
            assert_true(fabsf(y[j] - want[j]) <= 1e-5f * (1.0f + fabsf(want[j])));
        }
        item_fini(&its[i]);
    }
    aimsi_kind_infer.destroy(impl);
}

/* Logistic (two columns, class = z >= 0), linear regression (no class ids), mlp. */
static void test_infer_outputs(void **state)
{
    (void)state;
    aims_bundle *lg = make_bundle(AIMS_MODEL_KIND_LOGISTIC, 1, 3);
    check_batch(lg, 0);
    check_batch(lg, AIMS_OUT_SCORES);
    check_batch(lg, AIMS_OUT_PROBA);
    aims_bundle *mlp = make_bundle(AIMS_MODEL_KIND_MLP, 0, 2);
    check_batch(mlp, 0);
    check_batch(mlp, AIMS_OUT_PROBA);
    aims_bundle *lin = make_bundle(AIMS_MODEL_KIND_LINEAR, 1, 2);
    check_batch(lin, AIMS_OUT_SCORES);
    void *impl = NULL;
    assert_int_equal(aimsi_infer_create(lin, &impl), AIMS_OK);
    item its[2];
    item_init(&its[0], "predict");
    item_init(&its[1], "predict");
    add_x(its[0].req, g_x, 2, COLS);
    add_x(its[1].req, g_x, 2, COLS);
    add_i32(its[1].req, "output", AIMS_OUT_PROBA);
    run_items(&aimsi_kind_infer, impl, its, 2);
    expect_error(&its[0], AIMS_E_INVAL, "regression");
    expect_error(&its[1], AIMS_E_INVAL, "regression");
    item_fini(&its[0]);
    item_fini(&its[1]);
    aimsi_kind_infer.destroy(impl);
    aims_bundle_destroy(lg);
    aims_bundle_destroy(mlp);
    aims_bundle_destroy(lin);
}

static void test_infer_text(void **state)
{
    (void)state;
    aims_bundle *tb = make_text_bundle();
    void *impl = NULL;
    assert_int_equal(aimsi_infer_create(tb, &impl), AIMS_OK);
    item its[4];
    const char *req[4] = {"the cat sat\nstocks fell today\n", "a market rally",
                          "\nkitten\n\nbank shares", "x"};
    for (size_t i = 0; i < 4; i++) {
        item_init(&its[i], "predict");
        add_bytes(its[i].req, "text", req[i]);
        add_i32(its[i].req, "output", i == 3 ? 0 : AIMS_OUT_PROBA);
    }
    run_items(&aimsi_kind_infer, impl, its, 4);
    /* expected: split by hand, predicted one document set at a time */
    const char *docs[3][4] = {{"the cat sat", "stocks fell today"},
                              {"a market rally"},
                              {"", "kitten", "", "bank shares"}};
    const size_t ndocs[3] = {2, 1, 4};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(its[i].w.status, AIMS_OK);
        size_t n = 0;
        const float *y = reply_f32(its[i].reply, "y", &n);
        assert_int_equal(n, ndocs[i] * 2);
        float want[8];
        assert_int_equal(aims_bundle_predict_texts(tb, AIMS_OUT_PROBA, docs[i], NULL, ndocs[i],
                                                   want, 8),
                         AIMS_OK);
        for (size_t j = 0; j < n; j++) {
            assert_true(fabsf(y[j] - want[j]) <= 1e-6f);
        }
    }
    assert_int_equal(its[3].w.status, AIMS_OK);
    size_t n = 0;
    const float *cls = reply_f32(its[3].reply, "y", &n);
    assert_int_equal(n, 1);
    assert_true(cls[0] == 0.0f || cls[0] == 1.0f);
    for (size_t i = 0; i < 4; i++) {
        item_fini(&its[i]);
    }
    /* text into a dense bundle: the bundle's own error for that item only */
    void *dimpl = NULL;
    assert_int_equal(aimsi_infer_create(g_softmax, &dimpl), AIMS_OK);
    item_init(&its[0], "predict");
    add_bytes(its[0].req, "text", "hello");
    run_items(&aimsi_kind_infer, dimpl, its, 1);
    assert_int_equal(its[0].w.status, AIMS_E_STATE);
    item_fini(&its[0]);
    aimsi_kind_infer.destroy(dimpl);
    aimsi_kind_infer.destroy(impl);
    aims_bundle_destroy(tb);
}

/* ---- swap under load ----------------------------------------------------------------------- */

typedef struct swap_ctx {
    void *impl;
    float want_a[2];
    float want_b[2];
    volatile int stop;
    int bad;
} swap_ctx;

static void *swap_worker(void *arg)
{
    swap_ctx *c = arg;
    item it;
    item_init(&it, "predict");
    add_x(it.req, g_x, 1, COLS);
    add_i32(it.req, "output", AIMS_OUT_SCORES);
    int bad = 0;
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        aimsi_work *w = &it.w;
        aimsi_kind_infer.run(c->impl, &w, 1);
        size_t n = 0;
        const float *y = NULL;
        if (it.w.status == AIMS_OK) {
            size_t idx = 0;
            const void *data = NULL;
            size_t bytes = 0;
            aims_msg_find(it.reply, "y", &idx);
            aims_msg_get_tensor(it.reply, idx, NULL, NULL, NULL, NULL, &data, &bytes);
            y = data;
            n = bytes / sizeof(float);
        }
        if (y == NULL || n < 2 ||
            !((y[0] == c->want_a[0] && y[1] == c->want_a[1]) ||
              (y[0] == c->want_b[0] && y[1] == c->want_b[1]))) {
            bad++;
        }
    }
    item_fini(&it);
    __atomic_fetch_add(&c->bad, bad, __ATOMIC_RELAXED);
    return NULL;
}

static aims_bundle *clone_bundle(const aims_bundle *b)
{
    char path[] = "/tmp/aims-test-svc-XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(aims_bundle_save(b, path), AIMS_OK);
    aims_bundle *c = NULL;
    assert_int_equal(aims_bundle_load(path, &c), AIMS_OK);
    unlink(path);
    return c;
}

static void test_infer_swap_under_load(void **state)
{
    (void)state;
    aims_bundle *other = make_bundle(AIMS_MODEL_KIND_SOFTMAX, 1, 1);
    swap_ctx c;
    memset(&c, 0, sizeof c);
    float sa[CLASSES];
    float sb[CLASSES];
    assert_int_equal(aims_bundle_predict_rows(g_softmax, AIMS_OUT_SCORES, g_x, 1, COLS, sa,
                                              CLASSES),
                     AIMS_OK);
    assert_int_equal(aims_bundle_predict_rows(other, AIMS_OUT_SCORES, g_x, 1, COLS, sb,
                                              CLASSES),
                     AIMS_OK);
    memcpy(c.want_a, sa, sizeof c.want_a);
    memcpy(c.want_b, sb, sizeof c.want_b);
    aims_bundle *cur = clone_bundle(g_softmax);
    assert_int_equal(aimsi_infer_create(cur, &c.impl), AIMS_OK);
    pthread_t th[3];
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, swap_worker, &c), 0);
    }
    for (int round = 0; round < 20; round++) {
        /* a fresh copy each time; the old one is destroyed as soon as the swap
         * returns -- a run still using it would be a use-after-free (ASan) */
        aims_bundle *next = clone_bundle(round % 2 == 0 ? other : g_softmax);
        assert_int_equal(aimsi_infer_swap(c.impl, next), AIMS_OK);
        aims_bundle_destroy(cur);
        cur = next;
        sleep_ms(2);
    }
    __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
    for (size_t i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(c.bad, 0);
    aimsi_kind_infer.destroy(c.impl);
    aims_bundle_destroy(cur);
    aims_bundle_destroy(other);
}

/* ---- preprocess ----------------------------------------------------------------------------- */

static void test_preprocess(void **state)
{
    (void)state;
    const aims_pipeline *p = aims_bundle_pipeline(g_softmax);
    void *impl = NULL;
    assert_int_equal(aimsi_preprocess_create(p, &impl), AIMS_OK);
    item its[4];
    for (size_t i = 0; i < 4; i++) {
        item_init(&its[i], "transform");
    }
    add_x(its[0].req, g_x, 5, COLS);
    add_x(its[1].req, g_x, 2, COLS + 1);
    its[2].w.method = "predict";
    /* its[3]: no x */
    run_items(&aimsi_kind_preprocess, impl, its, 4);
    assert_int_equal(its[0].w.status, AIMS_OK);
    size_t n = 0;
    const float *y = reply_f32(its[0].reply, "x", &n);
    float want[5 * COLS];
    assert_int_equal(aims_pipeline_transform_rows(p, g_x, 5, COLS, want, 5 * COLS), AIMS_OK);
    assert_int_equal(n, 5 * COLS);
    assert_memory_equal(y, want, sizeof want);
    /* the dataset path gives the same numbers */
    aims_dataset *ds = NULL;
    aims_dataset *tds = NULL;
    assert_int_equal(aims_dataset_create_dense(5, COLS, g_x, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_pipeline_transform(p, ds, &tds), AIMS_OK);
    assert_memory_equal(aims_dataset_features(tds), y, sizeof want);
    aims_dataset_destroy(tds);
    aims_dataset_destroy(ds);
    expect_error(&its[1], AIMS_E_INVAL, "transform");
    expect_error(&its[2], AIMS_E_NOTFOUND, "no method predict on preprocess service");
    expect_error(&its[3], AIMS_E_INVAL, "no \"x\"");
    for (size_t i = 0; i < 4; i++) {
        item_fini(&its[i]);
    }
    aimsi_kind_preprocess.destroy(impl);
    /* no pipeline, or an unfitted one */
    assert_int_equal(aimsi_preprocess_create(NULL, &impl), AIMS_E_MISUSE);
    aims_pipeline *u = NULL;
    assert_int_equal(aims_pipeline_create(&u), AIMS_OK);
    assert_int_equal(aims_pipeline_add(u, AIMS_STEP_KIND_STANDARDIZE, NULL), AIMS_OK);
    assert_int_equal(aimsi_preprocess_create(u, &impl), AIMS_E_STATE);
    aims_pipeline_destroy(u);
}

/* ---- train ------------------------------------------------------------------------------------ */

static aims_status train_call(void *impl, const char *method, const char *job, const char *spec,
                              size_t rows, aims_msg *reply_out)
{
    item it;
    item_init(&it, method);
    if (job != NULL) {
        add_bytes(it.req, "job", job);
        char handle[96]; /* the caller's own job secret (>= 16 bytes) */
        snprintf(handle, sizeof handle, "test-handle-of-%s", job);
        add_bytes(it.req, "handle", handle);
    }
    if (spec != NULL) {
        add_x(it.req, g_x, rows, COLS);
        const uint64_t d = rows;
        assert_int_equal(aims_msg_add(it.req, "y", AIMS_DT_I32, &d, 1, g_y, 0), AIMS_OK);
        add_bytes(it.req, "spec", spec);
        add_bytes(it.req, "publish", "blobs@7");
    }
    aimsi_work *w = &it.w;
    aimsi_kind_train.run(impl, &w, 1);
    const aims_status st = it.w.status;
    if (reply_out != NULL) {
        aimsi_msg_move(reply_out, it.reply);
    }
    item_fini(&it);
    return st;
}

static int32_t train_state(void *impl, const char *job)
{
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    assert_int_equal(train_call(impl, "status", job, NULL, 0, r), AIMS_OK);
    const int32_t s = reply_i32(r, "state");
    aims_msg_destroy(r);
    return s;
}

static int32_t wait_state(void *impl, const char *job, int32_t until_at_least)
{
    int32_t s = 0;
    for (int i = 0; i < 60000; i++) {
        s = train_state(impl, job);
        if (s >= until_at_least) {
            return s;
        }
        sleep_ms(1);
    }
    fail_msg("job %s stuck in state %d", job, (int)s);
    return s;
}

/* The "bundle" tensor of a train "result" reply, parsed. */
static aims_bundle *reply_bundle(const aims_msg *r)
{
    size_t idx = 0;
    const void *data = NULL;
    size_t bytes = 0;
    assert_int_equal(aims_msg_find(r, "bundle", &idx), AIMS_OK);
    assert_int_equal(aims_msg_get_tensor(r, idx, NULL, NULL, NULL, NULL, &data, &bytes), AIMS_OK);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_parse(data, bytes, &b), AIMS_OK);
    return b;
}

/* "result" of a done job, parsed (the reply lands in r). */
static aims_bundle *result_bundle(void *impl, const char *job, aims_msg *r)
{
    assert_int_equal(train_call(impl, "result", job, NULL, 0, r), AIMS_OK);
    return reply_bundle(r);
}

static const char SPEC_OK[] = "kind=softmax\n# a comment\nepochs=4 batch=16\nlr=0.001\n"
                              "val_fraction=0.2\n";

static void test_train_submit_result(void **state)
{
    (void)state;
    void *impl = NULL;
    assert_int_equal(aimsi_train_create(NULL, &impl), AIMS_OK);
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    assert_int_equal(train_call(impl, "submit", "job-1", SPEC_OK, ROWS, r), AIMS_OK);
    const int32_t s0 = reply_i32(r, "state");
    assert_true(s0 >= 0 && s0 <= 2);
    assert_int_equal(wait_state(impl, "job-1", 2), 2);
    /* status numbers */
    assert_int_equal(train_call(impl, "status", "job-1", NULL, 0, r), AIMS_OK);
    assert_int_equal(reply_i32(r, "epoch"), 4);
    size_t n = 0;
    const float *loss = reply_f32(r, "loss", &n);
    assert_true(isfinite(loss[0]));
    const float *metric = reply_f32(r, "metric", &n);
    assert_true(metric[0] > 0.5f && metric[0] <= 1.0f);
    /* a repeated submit of the same id does not start a second job */
    assert_int_equal(train_call(impl, "submit", "job-1", "kind=linear", 3, r), AIMS_OK);
    assert_int_equal(reply_i32(r, "state"), 2);
    /* result: a bundle that loads and predicts */
    aims_bundle *b = result_bundle(impl, "job-1", r);
    assert_string_equal(aims_bundle_meta(b, "name"), "blobs");
    assert_string_equal(aims_bundle_meta(b, "version"), "7");
    float out[ROWS * CLASSES];
    assert_int_equal(aims_bundle_predict_rows(b, AIMS_OUT_PROBA, g_x, ROWS, COLS, out,
                                              ROWS * CLASSES),
                     AIMS_OK);
    size_t right = 0;
    for (size_t i = 0; i < ROWS; i++) {
        size_t best = 0;
        for (size_t j = 1; j < CLASSES; j++) {
            best = out[i * CLASSES + j] > out[i * CLASSES + best] ? j : best;
        }
        right += (int32_t)best == g_y[i];
    }
    assert_true(right > ROWS / 2);
    aims_bundle_destroy(b);
    /* unknown job */
    assert_int_equal(train_call(impl, "status", "nope", NULL, 0, r), AIMS_E_NOTFOUND);
    assert_int_equal(train_call(impl, "result", "nope", NULL, 0, r), AIMS_E_NOTFOUND);
    assert_int_equal(train_call(impl, "frobnicate", "job-1", NULL, 0, r), AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_msg_error(r), "no method frobnicate on train service"));
    aims_msg_destroy(r);
    aimsi_kind_train.stop(impl);
    aimsi_kind_train.destroy(impl);
}

static const char SPEC_LONG[] = "kind=mlp\nhidden=16\nactivation=tanh\nepochs=1000000\n"
                                "batch=8\nlr=0.001\n";

static void test_train_cancel_and_queue(void **state)
{
    (void)state;
    void *impl = NULL;
    assert_int_equal(aimsi_train_create(NULL, &impl), AIMS_OK);
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    assert_int_equal(train_call(impl, "submit", "long", SPEC_LONG, 64, r), AIMS_OK);
    assert_int_equal(wait_state(impl, "long", 1), 1);
    /* the queue holds 16; the 17th waiting job is refused with a retry hint */
    char id[32];
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof id, "q%d", i);
        assert_int_equal(train_call(impl, "submit", id, SPEC_OK, 32, r), AIMS_OK);
        assert_int_equal(reply_i32(r, "state"), 0);
    }
    assert_int_equal(train_call(impl, "submit", "q16", SPEC_OK, 32, r), AIMS_E_OVERLOADED);
    assert_non_null(strstr(aims_msg_error(r), "retry after"));
    /* a queued job cancels at once */
    assert_int_equal(train_call(impl, "cancel", "q3", NULL, 0, r), AIMS_OK);
    assert_int_equal(reply_i32(r, "state"), 4);
    assert_int_equal(train_call(impl, "result", "q3", NULL, 0, r), AIMS_E_STATE);
    /* the running one stops at the next step */
    assert_int_equal(train_call(impl, "cancel", "long", NULL, 0, r), AIMS_OK);
    assert_int_equal(wait_state(impl, "long", 3), 4);
    /* the queue moves on: q0 finishes */
    assert_int_equal(wait_state(impl, "q0", 2), 2);
    /* stop cancels whatever is left and joins the thread */
    aimsi_kind_train.stop(impl);
    for (int i = 1; i < 16; i++) {
        snprintf(id, sizeof id, "q%d", i);
        const int32_t s = train_state(impl, id);
        assert_true(s >= 2);
    }
    /* the service can be used again after stop */
    assert_int_equal(train_call(impl, "submit", "again", SPEC_OK, 32, r), AIMS_OK);
    assert_int_equal(wait_state(impl, "again", 2), 2);
    aims_msg_destroy(r);
    aimsi_kind_train.destroy(impl); /* destroy also stops */
}

/* kind=text: "text" ('\n'-separated documents) through the service's text
 * pipeline into a TEXT model; the result bundle classifies the documents. */
static char g_text_err[512];

static aims_status text_submit(void *impl, const char *job, const char *spec, const char *text,
                               size_t rows, int with_x)
{
    item it;
    item_init(&it, "submit");
    add_bytes(it.req, "job", job);
    add_bytes(it.req, "spec", spec);
    add_bytes(it.req, "text", text);
    if (with_x) {
        add_x(it.req, g_x, rows, COLS);
    }
    int32_t labels[NDOCS];
    for (size_t i = 0; i < NDOCS; i++) {
        labels[i] = (int32_t)(i % 2);
    }
    const uint64_t d = rows;
    assert_int_equal(aims_msg_add(it.req, "y", AIMS_DT_I32, &d, 1, labels, 0), AIMS_OK);
    char handle[96];
    snprintf(handle, sizeof handle, "test-handle-of-%s", job);
    add_bytes(it.req, "handle", handle);
    aimsi_work *w = &it.w;
    aimsi_kind_train.run(impl, &w, 1);
    const aims_status st = it.w.status;
    snprintf(g_text_err, sizeof g_text_err, "%s", st != AIMS_OK ? aims_msg_error(it.reply) : "");
    item_fini(&it);
    return st;
}

static void test_train_text_kind(void **state)
{
    (void)state;
    char text[1024] = "";
    for (size_t i = 0; i < NDOCS; i++) {
        strcat(text, g_docs[i]);
        strcat(text, "\n");
    }
    /* without a pipeline the service cannot tokenize: refused up front */
    void *bare = NULL;
    assert_int_equal(aimsi_train_create(NULL, &bare), AIMS_OK);
    assert_int_equal(text_submit(bare, "t0", "kind=text", text, NDOCS, 0), AIMS_E_INVAL);
    assert_non_null(strstr(g_text_err, "text pipeline"));
    aimsi_kind_train.stop(bare);
    aimsi_kind_train.destroy(bare);

    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_texts(NDOCS, g_docs, NULL, NULL, &ds), AIMS_OK);
    aims_pipeline *p = text_pipeline();
    assert_int_equal(aims_pipeline_fit(p, ds), AIMS_OK);
    aims_dataset_destroy(ds);
    void *impl = NULL;
    assert_int_equal(aimsi_train_create(p, &impl), AIMS_OK);
    /* "x" with kind=text, "text" with another kind, a document count off by one */
    assert_int_equal(text_submit(impl, "t1", "kind=text", text, NDOCS, 1), AIMS_E_INVAL);
    assert_int_equal(text_submit(impl, "t2", "kind=softmax", text, NDOCS, 0), AIMS_E_INVAL);
    assert_int_equal(text_submit(impl, "t3", "kind=text", text, NDOCS - 1, 0), AIMS_E_INVAL);
    assert_non_null(strstr(g_text_err, "documents"));
    assert_int_equal(text_submit(impl, "t4", "kind=text\nepochs=20\nlr=0.5\nseed=3", text,
                                 NDOCS, 0),
                     AIMS_OK);
    assert_int_equal(wait_state(impl, "t4", 2), 2);
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    aims_bundle *b = result_bundle(impl, "t4", r);
    aims_msg_destroy(r);
    float out[NDOCS * 2];
    assert_int_equal(aims_bundle_predict_texts(b, AIMS_OUT_PROBA, g_docs, NULL, NDOCS, out,
                                               NDOCS * 2),
                     AIMS_OK);
    size_t right = 0;
    for (size_t i = 0; i < NDOCS; i++) {
        right += (out[2 * i + 1] > out[2 * i]) == (int)(i % 2);
    }
    assert_true(right >= NDOCS - 1); /* the training documents themselves */
    aims_bundle_destroy(b);
    aimsi_kind_train.stop(impl);
    aimsi_kind_train.destroy(impl);
    aims_pipeline_destroy(p);
}

static void expect_submit_error(void *impl, const char *spec, aims_status st, const char *needle)
{
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    const aims_status got = train_call(impl, "submit", "bad", spec, 30, r);
    if (got != st || strstr(aims_msg_error(r), needle) == NULL) {
        fail_msg("spec '%s': status %d (want %d), error '%s' (want '%s')", spec, (int)got,
                 (int)st, aims_msg_error(r), needle);
    }
    aims_msg_destroy(r);
}

static void test_train_bad_spec(void **state)
{
    (void)state;
    void *impl = NULL;
    assert_int_equal(aimsi_train_create(NULL, &impl), AIMS_OK);
    expect_submit_error(impl, "kind=softmax\nfoo=1", AIMS_E_INVAL, "unknown key 'foo'");
    expect_submit_error(impl, "kind=softmax\nepochs=many", AIMS_E_INVAL, "epochs=many");
    expect_submit_error(impl, "kind=softmax\nlr=-1", AIMS_E_INVAL, "lr=-1");
    expect_submit_error(impl, "epochs=2", AIMS_E_INVAL, "kind is missing");
    expect_submit_error(impl, "kind=tree", AIMS_E_INVAL, "kind=tree");
    expect_submit_error(impl, "kind=softmax\nhidden=4", AIMS_E_INVAL, "kind=mlp only");
    expect_submit_error(impl, "kind=mlp\nhidden=4,x", AIMS_E_INVAL, "hidden=4,x");
    expect_submit_error(impl, "kind=mlp\nactivation=swish", AIMS_E_INVAL, "activation=swish");
    expect_submit_error(impl, "kind=softmax\nepochs=2\nepochs=3", AIMS_E_INVAL, "twice");
    expect_submit_error(impl, "kind=softmax\nclasses=2", AIMS_E_INVAL, "classes=2");
    expect_submit_error(impl, "kind=softmax\nworkers=2", AIMS_E_INVAL, "workers");
    expect_submit_error(impl, "kind=softmax\njunk", AIMS_E_INVAL, "'junk' is not key=value");
    expect_submit_error(impl, "kind=logistic", AIMS_E_INVAL, "0/1");
    /* tensors */
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    assert_int_equal(train_call(impl, "submit", NULL, SPEC_OK, 10, r), AIMS_E_INVAL);
    assert_non_null(strstr(aims_msg_error(r), "\"job\""));
    item it;
    item_init(&it, "submit");
    add_bytes(it.req, "job", "j");
    add_x(it.req, g_x, 10, COLS);
    const uint64_t d = 9;
    assert_int_equal(aims_msg_add(it.req, "y", AIMS_DT_I32, &d, 1, g_y, 0), AIMS_OK);
    add_bytes(it.req, "spec", "kind=softmax");
    aimsi_work *w = &it.w;
    aimsi_kind_train.run(impl, &w, 1);
    assert_int_equal(it.w.status, AIMS_E_INVAL);
    assert_non_null(strstr(aims_msg_error(it.reply), "\"y\""));
    item_fini(&it);
    /* none of them created a job */
    assert_int_equal(train_call(impl, "status", "bad", NULL, 0, r), AIMS_E_NOTFOUND);
    assert_int_equal(train_call(impl, "status", "j", NULL, 0, r), AIMS_E_NOTFOUND);
    aims_msg_destroy(r);
    aimsi_kind_train.destroy(impl);
}

/* A pipeline whose width does not match "x" is refused at submit; a job whose
 * fit fails (a validation split that leaves nothing) ends "failed" and says why. */
static void test_train_failed_job(void **state)
{
    (void)state;
    aims_pipeline *p = NULL;
    aims_dataset *ds = NULL;
    float wide[ROWS * (COLS + 1)];
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
        wide[i] = (float)(i % 7);
    }
    assert_int_equal(aims_dataset_create_dense(ROWS, COLS + 1, wide, NULL, &ds), AIMS_OK);
    assert_int_equal(aims_pipeline_create(&p), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL), AIMS_OK);
    assert_int_equal(aims_pipeline_fit(p, ds), AIMS_OK);
    void *impl = NULL;
    assert_int_equal(aimsi_train_create(p, &impl), AIMS_OK);
    expect_submit_error(impl, "kind=softmax\nepochs=1", AIMS_E_INVAL, "pipeline outputs 5");
    aimsi_kind_train.destroy(impl);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(ds);

    assert_int_equal(aimsi_train_create(NULL, &impl), AIMS_OK);
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    assert_int_equal(train_call(impl, "submit", "f", "kind=softmax\nclasses=3\nval_fraction=0.1",
                                3, r),
                     AIMS_OK);
    assert_int_equal(wait_state(impl, "f", 2), 3);
    assert_int_equal(train_call(impl, "status", "f", NULL, 0, r), AIMS_OK);
    assert_int_equal(aims_msg_find(r, "error", &(size_t){0}), AIMS_OK);
    assert_int_equal(train_call(impl, "result", "f", NULL, 0, r), AIMS_E_STATE);
    assert_non_null(strstr(aims_msg_error(r), "failed: "));
    assert_non_null(strstr(aims_msg_error(r), "val_fraction"));
    aims_msg_destroy(r);
    aimsi_kind_train.destroy(impl);
}

/* ---- through a node (aimsi_node_call_local) ------------------------------------------------ */

typedef struct call_res {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    aims_status st;
    aims_msg *reply;
    char err[512];
} call_res;

static void on_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    call_res *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->st = st;
    if (reply != NULL && aimsi_msg_copy(r->reply, reply) != AIMS_OK) {
        r->st = AIMS_E_NOMEM;
    }
    snprintf(r->err, sizeof r->err, "%s", err != NULL ? err : "");
    r->done = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Call and wait; the reply lands in `reply`, the error text in err (optional). */
static aims_status node_call(aims_node *n, const char *svc, const char *method,
                             const aims_msg *req, aims_msg *reply, char *err, size_t err_cap)
{
    call_res r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    r.reply = reply;
    aims_msg_clear(reply);
    const aimsi_local_call c = {svc, method, req, aimsi_now_ns() + 60000000000ull, on_done, &r, 0, NULL};
    assert_int_equal(aimsi_node_call_local(n, &c), AIMS_OK);
    pthread_mutex_lock(&r.mu);
    while (!r.done) {
        pthread_cond_wait(&r.cv, &r.mu);
    }
    pthread_mutex_unlock(&r.mu);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    if (err != NULL) {
        snprintf(err, err_cap, "%s", r.err);
    }
    return r.st;
}

typedef struct load_ctx {
    aims_node *n;
    size_t first;
    int bad;
} load_ctx;

static void *infer_load(void *arg)
{
    load_ctx *c = arg;
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    aims_msg_create(&req);
    aims_msg_create(&reply);
    for (size_t i = 0; i < 25; i++) {
        const size_t row = (c->first + i * 3) % (ROWS - 4);
        const size_t rows = 1 + i % 4;
        aims_msg_clear(req);
        const uint64_t d[2] = {rows, COLS};
        aims_msg_add(req, "x", AIMS_DT_F32, d, 2, g_x + row * COLS, AIMS_MSG_BORROW);
        const int32_t what = AIMS_OUT_SCORES;
        aims_msg_add(req, "output", AIMS_DT_I32, NULL, 0, &what, 0);
        const aims_status st = node_call(c->n, "blobs", "predict", req, reply, NULL, 0);
        float want[4 * CLASSES];
        aims_bundle_predict_rows(g_softmax, AIMS_OUT_SCORES, g_x + row * COLS, rows, COLS, want,
                                 4 * CLASSES);
        size_t idx = 0;
        const void *data = NULL;
        size_t bytes = 0;
        if (st != AIMS_OK || aims_msg_find(reply, "y", &idx) != AIMS_OK ||
            aims_msg_get_tensor(reply, idx, NULL, NULL, NULL, NULL, &data, &bytes) != AIMS_OK ||
            bytes != rows * CLASSES * sizeof(float)) {
            c->bad++;
            continue;
        }
        const float *y = data;
        for (size_t j = 0; j < rows * CLASSES; j++) {
            c->bad += fabsf(y[j] - want[j]) > 1e-5f * (1.0f + fabsf(want[j]));
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    return NULL;
}

static void test_node_services(void **state)
{
    (void)state;
    aims_node *n = NULL;
    assert_int_equal(aims_node_create("svc-test", &n), AIMS_OK);
    aims_service *si = NULL;
    aims_service *sp = NULL;
    aims_service *st = NULL;
    assert_int_equal(aims_service_add_infer(n, "blobs", g_softmax, &si), AIMS_OK);
    assert_int_equal(aims_service_add_preprocess(n, "prep", aims_bundle_pipeline(g_softmax), &sp),
                     AIMS_OK);
    assert_int_equal(aims_service_add_train(n, "trainer", NULL, &st), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(si, AIMS_SERVICE_BATCH_DELAY_US, 2000), AIMS_OK);
    assert_int_equal(aims_service_start(si), AIMS_OK);
    assert_int_equal(aims_service_start(sp), AIMS_OK);
    assert_int_equal(aims_service_start(st), AIMS_OK);
    /* wrong kinds */
    assert_int_equal(aims_service_swap_bundle(sp, g_softmax), AIMS_E_MISUSE);
    assert_int_equal(aims_service_add_infer(n, "nobundle", NULL, &si), AIMS_E_MISUSE);

    /* infer: concurrent callers, batched by the node, same numbers as direct calls */
    load_ctx lc[4];
    pthread_t th[4];
    for (size_t i = 0; i < 4; i++) {
        lc[i] = (load_ctx){n, i * 50, 0};
        assert_int_equal(pthread_create(&th[i], NULL, infer_load, &lc[i]), 0);
    }
    for (size_t i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(lc[i].bad, 0);
    }
    double batches = 0;
    double rows = 0;
    assert_int_equal(aims_service_get_stat(si, AIMS_SERVICE_STAT_BATCHES, &batches), AIMS_OK);
    assert_int_equal(aims_service_get_stat(si, AIMS_SERVICE_STAT_BATCH_ROWS, &rows), AIMS_OK);
    assert_true(batches >= 1 && batches <= 100);

    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    char err[512];
    /* info, unknown method */
    assert_int_equal(node_call(n, "blobs", "info", req, reply, err, sizeof err), AIMS_OK);
    assert_int_equal(aims_msg_find(reply, "name", &(size_t){0}), AIMS_OK);
    assert_int_equal(node_call(n, "blobs", "nope", req, reply, err, sizeof err),
                     AIMS_E_NOTFOUND);
    assert_non_null(strstr(err, "no method nope on infer service"));

    /* swap to another bundle while the service runs */
    aims_bundle *other = make_bundle(AIMS_MODEL_KIND_SOFTMAX, 1, 1);
    assert_int_equal(aims_service_swap_bundle(si, other), AIMS_OK);
    add_x(req, g_x, 2, COLS);
    add_i32(req, "output", AIMS_OUT_PROBA);
    assert_int_equal(node_call(n, "blobs", "predict", req, reply, err, sizeof err), AIMS_OK);
    float want[2 * CLASSES];
    assert_int_equal(aims_bundle_predict_rows(other, AIMS_OUT_PROBA, g_x, 2, COLS, want,
                                              2 * CLASSES),
                     AIMS_OK);
    size_t cnt = 0;
    const float *y = reply_f32(reply, "y", &cnt);
    assert_int_equal(cnt, 2 * CLASSES);
    for (size_t j = 0; j < cnt; j++) {
        assert_true(fabsf(y[j] - want[j]) <= 1e-5f);
    }
    assert_int_equal(aims_service_swap_bundle(si, g_softmax), AIMS_OK); /* rollback */
    aims_bundle_destroy(other);

    /* preprocess */
    aims_msg_clear(req);
    add_x(req, g_x, 3, COLS);
    assert_int_equal(node_call(n, "prep", "transform", req, reply, err, sizeof err), AIMS_OK);
    y = reply_f32(reply, "x", &cnt);
    float tw[3 * COLS];
    assert_int_equal(aims_pipeline_transform_rows(aims_bundle_pipeline(g_softmax), g_x, 3, COLS,
                                                  tw, 3 * COLS),
                     AIMS_OK);
    assert_int_equal(cnt, 3 * COLS);
    assert_memory_equal(y, tw, sizeof tw);

    /* train: submit, poll, result */
    aims_msg_clear(req);
    add_bytes(req, "job", "node-job");
    add_x(req, g_x, ROWS, COLS);
    const uint64_t dy = ROWS;
    assert_int_equal(aims_msg_add(req, "y", AIMS_DT_I32, &dy, 1, g_y, 0), AIMS_OK);
    add_bytes(req, "spec", "kind=softmax\nepochs=3\nlr=0.001\nbatch=16");
    assert_int_equal(node_call(n, "trainer", "submit", req, reply, err, sizeof err), AIMS_OK);
    char handle[AIMSI_SECRET_HEX + 1];
    {
        const char *hp = NULL;
        size_t hn = 0;
        assert_int_equal(aimsi_msg_bytes(reply, "handle", &hp, &hn), AIMS_OK);
        assert_int_equal(hn, AIMSI_SECRET_HEX);
        memcpy(handle, hp, hn);
        handle[hn] = '\0';
    }
    /* a repeated submit without the handle gets the state, never the handle */
    assert_int_equal(node_call(n, "trainer", "submit", req, reply, err, sizeof err), AIMS_OK);
    assert_int_not_equal(aims_msg_find(reply, "handle", &(size_t){0}), AIMS_OK);
    aims_msg_clear(req);
    add_bytes(req, "job", "node-job");
    /* status without the handle is refused */
    assert_int_equal(node_call(n, "trainer", "status", req, reply, err, sizeof err), AIMS_E_DENIED);
    assert_non_null(strstr(err, "handle"));
    add_bytes(req, "handle", handle);
    int32_t jstate = 0;
    for (int i = 0; i < 60000 && jstate < 2; i++) {
        assert_int_equal(node_call(n, "trainer", "status", req, reply, err, sizeof err), AIMS_OK);
        jstate = reply_i32(reply, "state");
        sleep_ms(1);
    }
    assert_int_equal(jstate, 2);
    assert_int_equal(node_call(n, "trainer", "result", req, reply, err, sizeof err), AIMS_OK);
    aims_bundle *trained = reply_bundle(reply);
    /* publish the trained bundle on the infer service */
    assert_int_equal(aims_service_swap_bundle(si, trained), AIMS_OK);
    aims_msg_clear(req);
    add_x(req, g_x, 3, COLS);
    assert_int_equal(node_call(n, "blobs", "predict", req, reply, err, sizeof err), AIMS_OK);

    /* a running job is cancelled by stopping the service */
    aims_msg_clear(req);
    add_bytes(req, "job", "forever");
    add_x(req, g_x, 64, COLS);
    const uint64_t d64 = 64;
    assert_int_equal(aims_msg_add(req, "y", AIMS_DT_I32, &d64, 1, g_y, 0), AIMS_OK);
    add_bytes(req, "spec", SPEC_LONG);
    assert_int_equal(node_call(n, "trainer", "submit", req, reply, err, sizeof err), AIMS_OK);
    assert_int_equal(aims_service_stop(st, 5000), AIMS_OK);

    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    aims_node_destroy(n);
    aims_bundle_destroy(trained);
}

/* ---- allocation failures ---------------------------------------------------------------------- */

static aims_status op_infer(void *ctx)
{
    (void)ctx;
    void *impl = NULL;
    AIMSI_TRY(aimsi_infer_create(g_softmax, &impl));
    item its[3];
    for (size_t i = 0; i < 3; i++) {
        memset(&its[i], 0, sizeof its[i]);
    }
    aims_status rc = AIMS_OK;
    for (size_t i = 0; i < 3 && rc == AIMS_OK; i++) {
        rc = aims_msg_create(&its[i].req);
        if (rc == AIMS_OK) {
            rc = aims_msg_create(&its[i].reply);
        }
        if (rc == AIMS_OK) {
            const uint64_t d[2] = {i + 1, COLS};
            rc = aims_msg_add(its[i].req, "x", AIMS_DT_F32, d, 2, g_x, 0);
        }
        if (rc == AIMS_OK && i == 2) {
            const int32_t v = AIMS_OUT_PROBA;
            rc = aims_msg_add(its[i].req, "output", AIMS_DT_I32, NULL, 0, &v, 0);
        }
        its[i].w.method = "predict";
        its[i].w.req = its[i].req;
        its[i].w.reply = its[i].reply;
    }
    if (rc == AIMS_OK) {
        aimsi_work *ws[3] = {&its[0].w, &its[1].w, &its[2].w};
        aimsi_kind_infer.run(impl, ws, 3);
        aimsi_kind_infer.run(impl, ws, 3); /* reuses the scratch */
        for (size_t i = 0; i < 3 && rc == AIMS_OK; i++) {
            rc = its[i].w.status;
        }
    }
    for (size_t i = 0; i < 3; i++) {
        aims_msg_destroy(its[i].req);
        aims_msg_destroy(its[i].reply);
    }
    aimsi_kind_infer.destroy(impl);
    return rc;
}

static void test_infer_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("infer run", op_infer, NULL);
}

static aims_status op_train(void *ctx)
{
    (void)ctx;
    void *impl = NULL;
    AIMSI_TRY(aimsi_train_create(NULL, &impl));
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    aims_status rc = aims_msg_create(&req);
    if (rc == AIMS_OK) {
        rc = aims_msg_create(&reply);
    }
    const uint64_t dx[2] = {24, COLS};
    const uint64_t dy = 24;
    const uint64_t dj = 3;
    const uint64_t ds = strlen("kind=softmax epochs=1");
    if (rc == AIMS_OK) {
        rc = aims_msg_add(req, "job", AIMS_DT_BYTES, &dj, 1, "abc", AIMS_MSG_BORROW);
    }
    if (rc == AIMS_OK) {
        rc = aims_msg_add(req, "x", AIMS_DT_F32, dx, 2, g_x, AIMS_MSG_BORROW);
    }
    if (rc == AIMS_OK) {
        rc = aims_msg_add(req, "y", AIMS_DT_I32, &dy, 1, g_y, AIMS_MSG_BORROW);
    }
    if (rc == AIMS_OK) {
        rc = aims_msg_add(req, "spec", AIMS_DT_BYTES, &ds, 1, "kind=softmax epochs=1",
                          AIMS_MSG_BORROW);
    }
    if (rc == AIMS_OK) {
        aimsi_work w = {"submit", req, reply, 0, AIMS_OK, NULL, NULL};
        aimsi_work *wp = &w;
        aimsi_kind_train.run(impl, &wp, 1);
        rc = w.status;
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    aimsi_kind_train.destroy(impl); /* cancels and joins the job thread */
    return rc;
}

static void test_train_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("train submit", op_train, NULL);
}

static aims_status op_pre(void *ctx)
{
    (void)ctx;
    void *impl = NULL;
    AIMSI_TRY(aimsi_preprocess_create(aims_bundle_pipeline(g_softmax), &impl));
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    aims_status rc = aims_msg_create(&req);
    if (rc == AIMS_OK) {
        rc = aims_msg_create(&reply);
    }
    const uint64_t dx[2] = {3, COLS};
    if (rc == AIMS_OK) {
        rc = aims_msg_add(req, "x", AIMS_DT_F32, dx, 2, g_x, 0);
    }
    if (rc == AIMS_OK) {
        aimsi_work w = {"transform", req, reply, 0, AIMS_OK, NULL, NULL};
        aimsi_work *wp = &w;
        aimsi_kind_preprocess.run(impl, &wp, 1);
        rc = w.status;
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    aimsi_kind_preprocess.destroy(impl);
    return rc;
}

static void test_pre_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("preprocess run", op_pre, NULL);
}

/* Adding the built-in services to a node: every allocation failure leaves
 * nothing behind (aimsi_service_add frees the impl when it fails). */
static aims_status op_node_add(void *ctx)
{
    (void)ctx;
    aims_node *n = NULL;
    AIMSI_TRY(aims_node_create("svc-fail", &n));
    aims_service *s = NULL;
    aims_status rc = aims_service_add_infer(n, "i", g_softmax, &s);
    if (rc == AIMS_OK) {
        rc = aims_service_add_preprocess(n, "p", aims_bundle_pipeline(g_softmax), &s);
    }
    if (rc == AIMS_OK) {
        rc = aims_service_add_train(n, "t", NULL, &s);
    }
    aims_node_destroy(n);
    return rc;
}

static void test_node_add_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("node add services", op_node_add, NULL);
}

/* ---- group setup --------------------------------------------------------------------------------- */

/* Every test starts from a freshly trained softmax bundle (built after the
 * allocation counter was reset, freed before the leak check). */
static int svc_setup(void **state)
{
    const int rc = ta_setup(state);
    g_softmax = make_bundle(AIMS_MODEL_KIND_SOFTMAX, 1, 5);
    return rc;
}

static int svc_teardown(void **state)
{
    aims_bundle_destroy(g_softmax);
    g_softmax = NULL;
    return ta_teardown(state);
}

int main(void)
{
    ta_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_infer_batch_equals_direct, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_infer_batch_bitexact_joined, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_infer_bad_items, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_infer_mixed_outputs_unaligned, svc_setup,
                                        svc_teardown),
        cmocka_unit_test_setup_teardown(test_infer_outputs, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_infer_text, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_infer_swap_under_load, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_preprocess, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_train_submit_result, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_train_cancel_and_queue, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_train_bad_spec, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_train_text_kind, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_train_failed_job, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_node_services, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_infer_alloc_failures, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_pre_alloc_failures, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_train_alloc_failures, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_node_add_alloc_failures, svc_setup, svc_teardown),
    };
    make_data();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
