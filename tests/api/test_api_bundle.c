/*
 * test_api_bundle.c -- black-box: train a small MLP behind a pipeline through the
 * public API, quantize it, bundle it, save, reload and serve raw rows.
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

enum { D = 10, K = 3, N = 600 };

/* Three Gaussian-ish blobs on raw scales far from unit (so the pipeline matters). */
static void make_data(float *x, int32_t *y, size_t n, unsigned seed)
{
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        const int32_t c = (int32_t)(i % K);
        y[i] = c;
        for (size_t j = 0; j < D; j++) {
            float u = 0.0f;
            for (int r = 0; r < 4; r++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                u += (float)((s >> 40) & 0xffff) / 65536.0f;
            }
            const float center = (j % K == (size_t)c) ? 1.5f : 0.0f;
            x[i * D + j] = 100.0f + 40.0f * (center + (u - 2.0f));
        }
    }
}

typedef struct fixture {
    float x[N * D];
    int32_t y[N];
    aims_pipeline *p;
    aims_model *m;
    aims_model *q;
    aims_dataset *raw;
    aims_dataset *t;
} fixture;

static double accuracy(const aims_model *m, const aims_dataset *ds)
{
    aims_eval *ev = NULL;
    double acc = 0.0;
    OK(aims_model_evaluate(m, ds, &ev));
    OK(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc));
    aims_eval_destroy(ev);
    return acc;
}

static void build(fixture *f)
{
    make_data(f->x, f->y, N, 1);
    OK(aims_dataset_create_dense(N, D, f->x, f->y, &f->raw));
    OK(aims_pipeline_create(&f->p));
    OK(aims_pipeline_add(f->p, AIMS_STEP_KIND_STANDARDIZE, NULL));
    OK(aims_pipeline_fit_transform(f->p, f->raw, &f->t));
    OK(aims_model_create(AIMS_MODEL_KIND_MLP, D, K, &f->m));
    OK(aims_model_add_dense(f->m, 16, AIMS_ACT_RELU));
    aims_trainer *tr = NULL;
    OK(aims_trainer_create(f->m, &tr));
    OK(aims_trainer_set_param_i64(tr, AIMS_TRAIN_EPOCHS, 20));
    OK(aims_trainer_set_param_i64(tr, AIMS_TRAIN_BATCH, 32));
    OK(aims_trainer_set_param_f64(tr, AIMS_TRAIN_LR, 0.05));
    OK(aims_trainer_fit(tr, f->t, NULL));
    aims_trainer_destroy(tr);
    OK(aims_model_quantize(f->m, f->t, &f->q));
}

static void teardown_fixture(fixture *f)
{
    aims_model_destroy(f->q);
    aims_model_destroy(f->m);
    aims_pipeline_destroy(f->p);
    aims_dataset_destroy(f->t);
    aims_dataset_destroy(f->raw);
    free(f);
}

static void test_api_bundle_serves_raw_rows(void **state)
{
    (void)state;
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    build(f);
    const double acc = accuracy(f->m, f->t);
    const double accq = accuracy(f->q, f->t);
    assert_true(acc >= 0.9);
    assert_true(accq >= acc - 0.02);

    aims_bundle *b = NULL;
    OK(aims_bundle_create(f->p, f->q, &b));
    OK(aims_bundle_set_meta(b, "name", "blobs"));
    OK(aims_bundle_set_meta(b, "metrics", "{\"accuracy\":0.9}"));
    char path[64];
    snprintf(path, sizeof path, "/tmp/aims_api_bundle_%ld.aimsb", (long)getpid());
    OK(aims_bundle_save(b, path));
    aims_bundle_destroy(b);
    b = NULL;
    OK(aims_bundle_load(path, &b));
    unlink(path);
    assert_string_equal(aims_bundle_meta(b, "name"), "blobs");
    assert_string_equal(aims_bundle_meta(b, "library_version"), aims_version_string());
    assert_true(aims_model_is_quantized(aims_bundle_model(b)));

    static float got[N * K];
    static float want[N * K];
    OK(aims_bundle_predict_rows(b, AIMS_OUT_PROBA, f->x, N, D, got, N * K));
    OK(aims_model_predict(f->q, AIMS_OUT_PROBA, aims_dataset_features(f->t), N, D, want, N * K));
    for (size_t i = 0; i < N * K; i++) {
        assert_float_equal(got[i], want[i], 1e-5);
    }
    float one[K];
    OK(aims_bundle_predict_rows(b, AIMS_OUT_PROBA, f->x + 5 * D, 1, D, one, K));
    for (size_t k = 0; k < K; k++) {
        assert_float_equal(one[k], want[5 * K + k], 1e-5);
    }
    assert_int_equal(aims_bundle_predict_rows(b, AIMS_OUT_PROBA, f->x, 1, D + 1, one, K),
                     AIMS_E_INVAL);
    aims_bundle_destroy(b);
    teardown_fixture(f);
}

typedef struct ctx {
    fixture *f;
    const char *path;
} ctx;

static aims_status op_bundle(void *v)
{
    const ctx *c = v;
    aims_bundle *b = NULL;
    aims_status rc = aims_bundle_create(c->f->p, c->f->q, &b);
    if (rc == AIMS_OK) {
        rc = aims_bundle_save(b, c->path);
        aims_bundle_destroy(b);
        b = NULL;
    }
    if (rc == AIMS_OK) {
        rc = aims_bundle_load(c->path, &b);
    }
    if (rc == AIMS_OK) {
        float out[4 * K];
        rc = aims_bundle_predict_rows(b, AIMS_OUT_SCORES, c->f->x, 4, D, out, 4 * K);
        aims_bundle_destroy(b);
    }
    return rc;
}

static void test_api_bundle_alloc_failures(void **state)
{
    (void)state;
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    build(f);
    char path[64];
    snprintf(path, sizeof path, "/tmp/aims_api_bundle_oom_%ld.aimsb", (long)getpid());
    ctx c = {f, path};
    ta_fail_loop("bundle create/save/load/predict", op_bundle, &c);
    unlink(path);
    teardown_fixture(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_api_bundle_serves_raw_rows, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_bundle_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
