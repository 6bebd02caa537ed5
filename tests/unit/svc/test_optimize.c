/*
 * test_optimize.c -- the optimize service (svc_optimize.c, docs/OPTIMIZE.md)
 * over a transport given as argv[1] (inproc or tcp; meson registers both).
 *
 * A small MLP classifier (standardize pipeline) is trained here on synthetic
 * Gaussian blobs, deterministic (seeded trainer, fixed data). Checked: an
 * accepted optimize returns an int8 bundle whose accuracy numbers match a
 * local aims_model_evaluate of both models; a too-tight bound is refused with
 * nothing returned; hostile requests give clear errors; publish swaps the
 * int8 model into an infer service on the node; with a policy (tcp), publish
 * also needs "swap <target>".
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

#include "aims/aims.h"
#include "core/aimsi_core.h"
#include "model/aimsi_model.h"
#include "svc_blobs.h"
#include "svc_tr.h"
#include "testalloc.h"

#define ROWS 600
#define COLS 8
#define CLASSES 3
#define TRAIN_ROWS 400

static const char *g_tr = "inproc";
static float g_x[ROWS * COLS];
static int32_t g_y[ROWS];
static void *g_bytes; /* the fp32 bundle file */
static size_t g_len;
static int g_seq;

static void make_data(void)
{
    const blobs_shape sh = {.rows = ROWS, .cols = COLS, .classes = CLASSES, .seed = 7,
                            .random_labels = 1, .hi = 1.5, .lo = -0.5, .spread = 4.0,
                            .slope = 5.0};
    blobs_make(&sh, g_x, g_y);
}

/* Train on the first TRAIN_ROWS rows; the rest is the held-out set. */
static void make_bundle(void)
{
    const blobs_train t = {.hidden = 16, .epochs = 20, .batch = 16, .lr = 0.05};
    blobs_bundle(g_x, g_y, TRAIN_ROWS, COLS, CLASSES, &t, &g_bytes, &g_len);
}

typedef struct env {
    aims_node *n;
    aims_service *opt, *inf;
    aims_bundle *served; /* the infer service's first bundle */
    aims_client *c;
    char addr[256];
} env;

static void env_up(env *e, const aims_policy *pol)
{
    memset(e, 0, sizeof *e);
    char name[64], url[128];
    snprintf(name, sizeof name, "opt%d_%s", g_seq++, g_tr);
    svc_listen_url(url, sizeof url, g_tr, NULL, name);
    assert_int_equal(aims_node_create(name, &e->n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(e->n, AIMS_NODE_DRAIN_GRACE_MS, 10), AIMS_OK);
    if (pol != NULL) {
        assert_int_equal(aims_node_set_policy(e->n, pol), AIMS_OK);
    }
    assert_int_equal(aims_node_listen(e->n, url), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(e->n, 0, e->addr, sizeof e->addr, &len), AIMS_OK);
    assert_int_equal(aims_service_add_optimize(e->n, "optimize.blobs", &e->opt), AIMS_OK);
    assert_int_equal(aims_service_start(e->opt), AIMS_OK);
    assert_int_equal(aims_bundle_parse(g_bytes, g_len, &e->served), AIMS_OK);
    assert_int_equal(aims_service_add_infer(e->n, "blobs", e->served, &e->inf), AIMS_OK);
    assert_int_equal(aims_service_start(e->inf), AIMS_OK);
    assert_int_equal(aims_client_create(&e->c), AIMS_OK);
}

static void env_down(env *e)
{
    aims_client_destroy(e->c);
    aims_node_destroy(e->n);
    aims_bundle_destroy(e->served);
}

/* A request: bundle bytes (or `bundle`), held-out x/y with `cols`, max_drop. */
static aims_msg *mk_req(const void *bundle, size_t blen, size_t cols, float max_drop)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    if (bundle != NULL) {
        const uint64_t bn = blen;
        assert_int_equal(aims_msg_add(m, "bundle", AIMS_DT_BYTES, &bn, 1, bundle, 0), AIMS_OK);
    }
    const size_t rows = ROWS - TRAIN_ROWS;
    const uint64_t xd[2] = {rows, cols};
    float *x = NULL;
    assert_int_equal(aims_msg_alloc(m, "x", AIMS_DT_F32, xd, 2, (void **)&x), AIMS_OK);
    for (size_t r = 0; r < rows; r++) {
        for (size_t j = 0; j < cols; j++) {
            x[r * cols + j] = g_x[(TRAIN_ROWS + r) * COLS + (j % COLS)];
        }
    }
    const uint64_t yd = rows;
    assert_int_equal(aims_msg_add(m, "y", AIMS_DT_I32, &yd, 1, g_y + TRAIN_ROWS, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "max_drop", AIMS_DT_F32, NULL, 0, &max_drop, 0), AIMS_OK);
    return m;
}

static aims_status call(env *e, const aims_msg *req, aims_msg *rep)
{
    return aims_client_call_addr(e->c, e->addr, "optimize.blobs", "optimize", req, rep, 60000);
}

/* The scalar `name` of reply m, which must have dtype dt (4 or 8 bytes into out). */
static void scalar_of(const aims_msg *m, const char *name, aims_dtype dt, void *out, size_t size)
{
    size_t idx = 0, bytes = 0;
    assert_int_equal(aims_msg_find(m, name, &idx), AIMS_OK);
    const void *d = NULL;
    aims_dtype got = 0;
    assert_int_equal(aims_msg_get_tensor(m, idx, NULL, &got, NULL, NULL, &d, &bytes), AIMS_OK);
    assert_int_equal(got, dt);
    assert_int_equal(bytes, size);
    memcpy(out, d, size);
}

static int64_t i64_of(const aims_msg *m, const char *name)
{
    int64_t v = 0;
    scalar_of(m, name, AIMS_DT_I64, &v, sizeof v);
    return v;
}

static float f32_of(const aims_msg *m, const char *name)
{
    float v = 0;
    scalar_of(m, name, AIMS_DT_F32, &v, sizeof v);
    return v;
}

/* Rows of the held-out set model-in-bundle b classifies right (local aims_eval). */
static int64_t local_correct(const aims_bundle *b)
{
    const size_t rows = ROWS - TRAIN_ROWS;
    aims_dataset *raw = NULL, *t = NULL;
    assert_int_equal(aims_dataset_create_dense(rows, COLS, g_x + TRAIN_ROWS * COLS,
                                               g_y + TRAIN_ROWS, &raw), AIMS_OK);
    assert_int_equal(aims_pipeline_transform(aims_bundle_pipeline(b), raw, &t), AIMS_OK);
    aims_eval *ev = NULL;
    assert_int_equal(aims_model_evaluate(aims_bundle_model(b), t, &ev), AIMS_OK);
    double acc = 0;
    assert_int_equal(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc), AIMS_OK);
    aims_eval_destroy(ev);
    aims_dataset_destroy(t);
    aims_dataset_destroy(raw);
    return (int64_t)llround(acc * (double)rows);
}

static void test_accepted_matches_local_eval(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL);
    aims_msg *req = mk_req(g_bytes, g_len, COLS, 0.5f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_OK);
    size_t idx = 0;
    assert_int_equal(aims_msg_find(rep, "bundle", &idx), AIMS_OK);
    const void *qb = NULL;
    size_t qlen = 0;
    assert_int_equal(aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &qb, &qlen), AIMS_OK);
    aims_bundle *q = NULL;
    assert_int_equal(aims_bundle_parse(qb, qlen, &q), AIMS_OK);
    assert_true(aims_model_is_quantized(aims_bundle_model(q)));
    assert_string_equal(aims_bundle_meta(q, "version"), "1-int8");
    assert_string_equal(aims_bundle_meta(q, "name"), "blobs");
    /* the numbers agree with a local evaluation of both models */
    assert_int_equal(i64_of(rep, "rows"), ROWS - TRAIN_ROWS);
    assert_int_equal(i64_of(rep, "fp32_correct"), local_correct(e.served));
    assert_int_equal(i64_of(rep, "int8_correct"), local_correct(q));
    const double rows = ROWS - TRAIN_ROWS;
    assert_true(fabs(f32_of(rep, "fp32_accuracy") - (double)i64_of(rep, "fp32_correct") / rows) <
                1e-6);
    assert_true(fabs(f32_of(rep, "int8_accuracy") - (double)i64_of(rep, "int8_correct") / rows) <
                1e-6);
    assert_true(f32_of(rep, "fp32_accuracy") > 0.8f); /* the model learned the blobs */
    assert_true(f32_of(rep, "drop") <= 0.5f);
    assert_int_equal(i64_of(rep, "fp32_bytes"), (int64_t)g_len);
    assert_int_equal(i64_of(rep, "int8_bytes"), (int64_t)qlen);
    assert_true(f32_of(rep, "fp32_latency_us") > 0.0f);
    assert_true(f32_of(rep, "int8_latency_us") > 0.0f);
    assert_int_not_equal(aims_msg_find(rep, "published", &idx), AIMS_OK);
    fprintf(stderr, "optimize: fp32 acc %.4f %lld B %.2f us | int8 acc %.4f %lld B %.2f us\n",
            (double)f32_of(rep, "fp32_accuracy"), (long long)i64_of(rep, "fp32_bytes"),
            (double)f32_of(rep, "fp32_latency_us"), (double)f32_of(rep, "int8_accuracy"),
            (long long)i64_of(rep, "int8_bytes"), (double)f32_of(rep, "int8_latency_us"));
    aims_bundle_destroy(q);
    /* separate calibration rows and an explicit version */
    const uint64_t cd[2] = {TRAIN_ROWS, COLS};
    assert_int_equal(aims_msg_add(req, "calib_x", AIMS_DT_F32, cd, 2, g_x, 0), AIMS_OK);
    const uint64_t vn = 2;
    assert_int_equal(aims_msg_add(req, "version", AIMS_DT_BYTES, &vn, 1, "2q", 0), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_OK);
    assert_int_equal(aims_msg_find(rep, "bundle", &idx), AIMS_OK);
    assert_int_equal(aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &qb, &qlen), AIMS_OK);
    assert_int_equal(aims_bundle_parse(qb, qlen, &q), AIMS_OK);
    assert_string_equal(aims_bundle_meta(q, "version"), "2q");
    assert_int_equal(i64_of(rep, "int8_correct"), local_correct(q));
    aims_bundle_destroy(q);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    env_down(&e);
}

static void test_too_tight_refused(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL);
    aims_msg *req = mk_req(g_bytes, g_len, COLS, -0.5f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_E_RANGE);
    size_t idx = 0;
    assert_int_not_equal(aims_msg_find(rep, "bundle", &idx), AIMS_OK);
    assert_non_null(strstr(aims_msg_error(rep), "refused"));
    assert_non_null(strstr(aims_msg_error(rep), "max_drop"));
    /* a refused publish leaves the infer service alone */
    const uint64_t pn = 5;
    assert_int_equal(aims_msg_add(req, "publish", AIMS_DT_BYTES, &pn, 1, "blobs", 0), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_E_RANGE);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    env_down(&e);
}

static void expect_err(env *e, const aims_msg *req, aims_status want, const char *needle)
{
    aims_msg *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(call(e, req, rep), want);
    size_t idx = 0;
    assert_int_not_equal(aims_msg_find(rep, "bundle", &idx), AIMS_OK);
    if (strstr(aims_msg_error(rep), needle) == NULL) {
        fail_msg("error \"%s\" does not mention \"%s\"", aims_msg_error(rep), needle);
    }
    aims_msg_destroy(rep);
}

static void test_hostile_requests(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL);
    aims_msg *req = mk_req(NULL, 0, COLS, 0.5f);
    expect_err(&e, req, AIMS_E_INVAL, "\"bundle\"");
    aims_msg_destroy(req);
    char junk[300];
    memset(junk, 0x5a, sizeof junk);
    req = mk_req(junk, sizeof junk, COLS, 0.5f);
    expect_err(&e, req, AIMS_E_CORRUPT, "not a bundle");
    aims_msg_destroy(req);
    req = mk_req(g_bytes, g_len / 2, COLS, 0.5f); /* truncated */
    expect_err(&e, req, AIMS_E_CORRUPT, "not a bundle");
    aims_msg_destroy(req);
    req = mk_req(g_bytes, g_len, COLS - 3, 0.5f); /* wrong width */
    expect_err(&e, req, AIMS_E_INVAL, "pipeline");
    aims_msg_destroy(req);
    /* y of the wrong length, out-of-range label, no max_drop, NaN max_drop */
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    const uint64_t bn = g_len, xd[2] = {4, COLS}, yd = 3;
    float x[4 * COLS] = {0};
    int32_t y[4] = {0, 1, 2, 0};
    assert_int_equal(aims_msg_add(m, "bundle", AIMS_DT_BYTES, &bn, 1, g_bytes, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, xd, 2, x, 0), AIMS_OK);
    expect_err(&e, m, AIMS_E_INVAL, "\"max_drop\"");
    const float nan = NAN;
    assert_int_equal(aims_msg_add(m, "max_drop", AIMS_DT_F32, NULL, 0, &nan, 0), AIMS_OK);
    expect_err(&e, m, AIMS_E_INVAL, "finite");
    aims_msg_clear(m);
    const float md = 0.1f;
    assert_int_equal(aims_msg_add(m, "bundle", AIMS_DT_BYTES, &bn, 1, g_bytes, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, xd, 2, x, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "max_drop", AIMS_DT_F32, NULL, 0, &md, 0), AIMS_OK);
    expect_err(&e, m, AIMS_E_INVAL, "\"y\"");
    assert_int_equal(aims_msg_add(m, "y", AIMS_DT_I32, &yd, 1, y, 0), AIMS_OK);
    expect_err(&e, m, AIMS_E_INVAL, "\"y\"");
    aims_msg_clear(m);
    const uint64_t y4 = 4;
    y[2] = 7;
    assert_int_equal(aims_msg_add(m, "bundle", AIMS_DT_BYTES, &bn, 1, g_bytes, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, xd, 2, x, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "max_drop", AIMS_DT_F32, NULL, 0, &md, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "y", AIMS_DT_I32, &y4, 1, y, 0), AIMS_OK);
    expect_err(&e, m, AIMS_E_INVAL, "not a class");
    /* x as i32 instead of f32 */
    aims_msg_clear(m);
    assert_int_equal(aims_msg_add(m, "bundle", AIMS_DT_BYTES, &bn, 1, g_bytes, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "max_drop", AIMS_DT_F32, NULL, 0, &md, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_I32, &y4, 1, y, 0), AIMS_OK);
    expect_err(&e, m, AIMS_E_INVAL, "f32 [rows, cols]");
    aims_msg_destroy(m);
    /* unknown method */
    aims_msg *rep = NULL;
    req = mk_req(g_bytes, g_len, COLS, 0.5f);
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(aims_client_call_addr(e.c, e.addr, "optimize.blobs", "quantize", req, rep,
                                           60000),
                     AIMS_E_NOTFOUND);
    /* publish to a service that does not exist / is not an infer service */
    const uint64_t pn = 4;
    assert_int_equal(aims_msg_add(req, "publish", AIMS_DT_BYTES, &pn, 1, "nope", 0), AIMS_OK);
    expect_err(&e, req, AIMS_E_NOTFOUND, "nope");
    aims_msg_destroy(req);
    req = mk_req(g_bytes, g_len, COLS, 0.5f);
    const uint64_t on = 14;
    assert_int_equal(aims_msg_add(req, "publish", AIMS_DT_BYTES, &on, 1, "optimize.blobs", 0),
                     AIMS_OK);
    expect_err(&e, req, AIMS_E_INVAL, "not an infer service");
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    env_down(&e);
}

/* Predictions of the infer service "blobs" on the held-out rows. */
static void served_scores(env *e, float *out, size_t cap)
{
    aims_msg *req = NULL, *rep = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    const uint64_t xd[2] = {ROWS - TRAIN_ROWS, COLS};
    assert_int_equal(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, g_x + TRAIN_ROWS * COLS, 0),
                     AIMS_OK);
    const int32_t what = AIMS_OUT_SCORES;
    assert_int_equal(aims_msg_add(req, "output", AIMS_DT_I32, NULL, 0, &what, 0), AIMS_OK);
    assert_int_equal(aims_client_call_addr(e->c, e->addr, "blobs", "predict", req, rep, 60000),
                     AIMS_OK);
    size_t idx = 0, bytes = 0;
    const void *d = NULL;
    assert_int_equal(aims_msg_find(rep, "y", &idx), AIMS_OK);
    assert_int_equal(aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &d, &bytes), AIMS_OK);
    assert_int_equal(bytes, cap * sizeof(float));
    memcpy(out, d, bytes);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
}

static void test_publish_swaps_infer(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL);
    aims_msg *req = mk_req(g_bytes, g_len, COLS, 0.5f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    const uint64_t pn = 5;
    assert_int_equal(aims_msg_add(req, "publish", AIMS_DT_BYTES, &pn, 1, "blobs", 0), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_OK);
    assert_int_equal(i64_of(rep, "published"), 1);
    size_t idx = 0, qlen = 0;
    const void *qb = NULL;
    assert_int_equal(aims_msg_find(rep, "bundle", &idx), AIMS_OK);
    assert_int_equal(aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &qb, &qlen), AIMS_OK);
    aims_bundle *q = NULL;
    assert_int_equal(aims_bundle_parse(qb, qlen, &q), AIMS_OK);
    /* the infer service now answers with the int8 model */
    enum { N = (ROWS - TRAIN_ROWS) * CLASSES };
    static float served[N], local[N];
    served_scores(&e, served, N);
    assert_int_equal(aims_bundle_predict_rows(q, AIMS_OUT_SCORES, g_x + TRAIN_ROWS * COLS,
                                              ROWS - TRAIN_ROWS, COLS, local, N),
                     AIMS_OK);
    assert_memory_equal(served, local, sizeof served);
    aims_bundle_destroy(q);
    /* the host swaps its own bundle back (the published one stays owned by optimize) */
    assert_int_equal(aims_service_swap_bundle(e.inf, e.served), AIMS_OK);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    env_down(&e);
}

/* With a policy (network door: tcp only): "call" lets optimize run, a publish needs "swap". */
static void test_policy_publish_needs_swap(void **state)
{
    (void)state;
    if (strcmp(g_tr, "tcp") != 0) {
        skip();
    }
    aims_policy *pol = NULL;
    assert_int_equal(aims_policy_create(&pol), AIMS_OK);
    assert_int_equal(aims_policy_load_string(pol, "allow * call optimize.*/optimize\n"
                                                  "allow * call blobs/predict\n",
                                             "opt.policy"),
                     AIMS_OK);
    env e;
    env_up(&e, pol);
    aims_msg *req = mk_req(g_bytes, g_len, COLS, 0.5f), *rep = NULL;
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_OK);
    const uint64_t pn = 5;
    assert_int_equal(aims_msg_add(req, "publish", AIMS_DT_BYTES, &pn, 1, "blobs", 0), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_E_DENIED);
    /* granting swap on the target lets it through */
    aims_policy *pol2 = NULL;
    assert_int_equal(aims_policy_create(&pol2), AIMS_OK);
    assert_int_equal(aims_policy_load_string(pol2, "allow * call optimize.*/optimize\n"
                                                   "allow * swap blobs\n",
                                             "opt2.policy"),
                     AIMS_OK);
    assert_int_equal(aims_node_set_policy(e.n, pol2), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_OK);
    assert_int_equal(i64_of(rep, "published"), 1);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    env_down(&e);
    aims_policy_destroy(pol);
    aims_policy_destroy(pol2);
}

/* Fashion-MNIST (AIMS_DATA_DIR; skipped without it): an MLP trained on 20,000
 * rows, optimized against 2,000 test rows with 1,000 separate calibration
 * rows; the accuracies agree with a local evaluation and a 2-point bound is
 * met. Prints the measured numbers. */
static float *scaled(const aims_dataset *ds, size_t rows)
{
    const size_t n = rows * aims_dataset_cols(ds);
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    const float *f = aims_dataset_features(ds);
    for (size_t i = 0; i < n; i++) {
        x[i] = f[i] * (1.0f / 255.0f);
    }
    return x;
}

static void test_fashion_mnist(void **state)
{
    (void)state;
    const char *dir = getenv("AIMS_DATA_DIR");
    char img[512], lab[512], timg[512], tlab[512];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", dir ? dir : ".");
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", dir ? dir : ".");
    snprintf(timg, sizeof timg, "%s/fashion-mnist/t10k-images-idx3-ubyte", dir ? dir : ".");
    snprintf(tlab, sizeof tlab, "%s/fashion-mnist/t10k-labels-idx1-ubyte", dir ? dir : ".");
    if (dir == NULL || access(img, R_OK) != 0 || access(timg, R_OK) != 0) {
        skip();
    }
    enum { TR = 20000, EV = 2000, CAL = 1000 };
    aims_dataset *tr = NULL, *te = NULL, *trs = NULL;
    assert_int_equal(aims_dataset_load_idx(img, lab, NULL, &tr), AIMS_OK);
    assert_int_equal(aims_dataset_load_idx(timg, tlab, NULL, &te), AIMS_OK);
    float *xtr = scaled(tr, TR), *xte = scaled(te, EV);
    assert_int_equal(aims_dataset_create_dense(TR, 784, xtr, aims_dataset_labels(tr), &trs),
                     AIMS_OK);
    aims_model *m = NULL;
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_MLP, 784, 10, &m), AIMS_OK);
    assert_int_equal(aims_model_add_dense(m, 64, AIMS_ACT_RELU), AIMS_OK);
    aims_trainer *t = NULL;
    assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 1), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 64), AIMS_OK);
    assert_int_equal(aims_trainer_fit(t, trs, NULL), AIMS_OK);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(NULL, m, &b), AIMS_OK);
    void *bytes = NULL;
    size_t blen = 0;
    assert_int_equal(aimsi_bundle_to_bytes(b, &bytes, &blen), AIMS_OK);
    env e;
    env_up(&e, NULL);
    aims_msg *req = NULL, *rep = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&rep), AIMS_OK);
    const uint64_t bn = blen, xd[2] = {EV, 784}, yd = EV, cd[2] = {CAL, 784};
    const float md = 0.02f;
    assert_int_equal(aims_msg_add(req, "bundle", AIMS_DT_BYTES, &bn, 1, bytes, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, xte, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "y", AIMS_DT_I32, &yd, 1, aims_dataset_labels(te), 0),
                     AIMS_OK);
    const float *calib = xtr + (size_t)(TR - CAL) * 784; /* training rows, not evaluated */
    assert_int_equal(aims_msg_add(req, "calib_x", AIMS_DT_F32, cd, 2, calib, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "max_drop", AIMS_DT_F32, NULL, 0, &md, 0), AIMS_OK);
    assert_int_equal(call(&e, req, rep), AIMS_OK);
    /* fp32 numbers = a local aims_eval on the same rows */
    aims_dataset *evs = NULL;
    assert_int_equal(aims_dataset_create_dense(EV, 784, xte, aims_dataset_labels(te), &evs),
                     AIMS_OK);
    aims_eval *ev = NULL;
    double acc = 0;
    assert_int_equal(aims_model_evaluate(m, evs, &ev), AIMS_OK);
    assert_int_equal(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc), AIMS_OK);
    assert_int_equal(i64_of(rep, "fp32_correct"), (int64_t)llround(acc * EV));
    assert_true(acc > 0.7);
    assert_true(f32_of(rep, "drop") <= md);
    assert_true(i64_of(rep, "int8_bytes") < i64_of(rep, "fp32_bytes"));
    fprintf(stderr, "fashion-mnist optimize: fp32 acc %.4f %lld B %.2f us | int8 acc %.4f "
            "%lld B %.2f us\n",
            (double)f32_of(rep, "fp32_accuracy"), (long long)i64_of(rep, "fp32_bytes"),
            (double)f32_of(rep, "fp32_latency_us"), (double)f32_of(rep, "int8_accuracy"),
            (long long)i64_of(rep, "int8_bytes"), (double)f32_of(rep, "int8_latency_us"));
    aims_eval_destroy(ev);
    aims_dataset_destroy(evs);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    env_down(&e);
    aimsi_free(bytes);
    aims_bundle_destroy(b);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(trs);
    aims_dataset_destroy(tr);
    aims_dataset_destroy(te);
    free(xtr);
    free(xte);
}

static int group_setup(void **state)
{
    (void)state;
    make_data();
    make_bundle();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_bytes);
    return 0;
}

int main(int argc, char **argv)
{
    if (svc_transport_arg(argc, argv, &g_tr, "inproc|tcp") != 0) {
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepted_matches_local_eval, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_too_tight_refused, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_requests, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_publish_swaps_infer, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_policy_publish_needs_swap, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_fashion_mnist, ta_setup, ta_teardown),
    };
    char group[64];
    snprintf(group, sizeof group, "optimize_%s", g_tr);
    return cmocka_run_group_tests_name(group, tests, group_setup, group_teardown);
}
