/*
 * test_api_nonfinite.c -- data honesty through the public API: NaN and inf
 * never reach a model unless the caller asked for them, and training that
 * diverges stops with a status naming the step.
 *
 * Covers: aims_dataset_create_dense(_v2) refusing/keeping non-finite values,
 * the CSV loader's allow_nonfinite option feeding an IMPUTE step, the
 * trainer refusing non-finite rows, divergence, and step/trainer parameters
 * refusing non-finite values (a SCALE step took FACTOR = inf before).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

static void expect_msg(const char *msg, const char *want)
{
    if (msg == NULL || strstr(msg, want) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", msg != NULL ? msg : "(null)", want);
    }
}

static aims_loadopts *allow_opts(void)
{
    aims_loadopts *lo = NULL;
    OK(aims_loadopts_create(&lo));
    OK(aims_loadopts_set_param_i64(lo, AIMS_LOAD_NONFINITE, 1));
    return lo;
}

static void test_dataset_create_dense_nonfinite(void **state)
{
    (void)state;
    const float x[] = {1, 2, 3, 4, 5, NAN};
    const float xi[] = {1, 2, -INFINITY, 4};
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_dense(3, 2, x, NULL, &ds), AIMS_E_INVAL);
    assert_null(ds);
    expect_msg(aims_errmsg(), "row 3, column 2 is NaN");
    assert_int_equal(aims_dataset_create_dense(2, 2, xi, NULL, &ds), AIMS_E_INVAL);
    expect_msg(aims_errmsg(), "row 2, column 1 is -inf");
    /* the default options refuse as well; allow_nonfinite=1 keeps the values */
    assert_int_equal(aims_dataset_create_dense_v2(3, 2, x, NULL, NULL, &ds), AIMS_E_INVAL);
    aims_loadopts *lo = allow_opts();
    OK(aims_dataset_create_dense_v2(3, 2, x, NULL, lo, &ds));
    assert_true(isnan(aims_dataset_features(ds)[5]));
    aims_dataset_destroy(ds);
    aims_loadopts_destroy(lo);
    int64_t v = -1;
    OK(aims_param_by_name("allow_nonfinite", &(aims_param){0}));
    OK(aims_loadopts_create(&lo));
    OK(aims_loadopts_get_param_i64(lo, AIMS_LOAD_NONFINITE, &v));
    assert_int_equal(v, 0);
    assert_int_equal(aims_loadopts_set_param_i64(lo, AIMS_LOAD_NONFINITE, 2), AIMS_E_RANGE);
    aims_loadopts_destroy(lo);
}

/* A CSV with nan cells: refused by default (file, line, column), loaded with
 * allow_nonfinite=1, then an IMPUTE step makes it trainable; without the
 * IMPUTE step the trainer refuses it instead of training NaN weights. */
static void test_csv_nan_impute_then_train(void **state)
{
    (void)state;
    static const char text[] = "0.1,0.2,0\n0.2,nan,0\n1.1,1.0,1\n1.2,1.1,1\n"
                               "0.0,0.1,0\n1.0,nan,1\n0.3,0.1,0\n0.9,1.2,1\n";
    aims_loadopts *lo = NULL;
    OK(aims_loadopts_create(&lo));
    OK(aims_loadopts_set_param_i64(lo, AIMS_LOAD_LABEL_COLUMN, -2));
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_parse(AIMS_FORMAT_CSV, text, sizeof text - 1, lo, &ds),
                     AIMS_E_CORRUPT);
    expect_msg(aims_errmsg(), "<memory>:2: column 2:");
    OK(aims_loadopts_set_param_i64(lo, AIMS_LOAD_NONFINITE, 1));
    OK(aims_dataset_parse(AIMS_FORMAT_CSV, text, sizeof text - 1, lo, &ds));
    aims_loadopts_destroy(lo);

    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 2, 2, &m));
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 3));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 4));
    assert_int_equal(aims_trainer_fit(t, ds, NULL), AIMS_E_INVAL);
    expect_msg(aims_trainer_errmsg(t), "train: row 2, column 2 is NaN");

    aims_pipeline *p = NULL;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_IMPUTE, NULL));
    aims_dataset *clean = NULL;
    OK(aims_pipeline_fit_transform(p, ds, &clean));
    OK(aims_trainer_fit(t, clean, NULL));
    float out[2 * 8];
    OK(aims_model_predict(m, AIMS_OUT_SCORES, aims_dataset_features(clean), 8, 2, out, 16));
    for (size_t i = 0; i < 16; i++) {
        assert_true(isfinite(out[i]));
    }
    aims_dataset_destroy(clean);
    aims_pipeline_destroy(p);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

/* Linear regression with a learning rate far too large: the loss grows by
 * a constant factor per step until it overflows; the run stops there. */
static void test_trainer_divergence_stops(void **state)
{
    (void)state;
    char text[64 * 32];
    size_t n = 0;
    for (int r = 0; r < 64; r++) {
        n += (size_t)snprintf(text + n, sizeof text - n, "%d,%d,%d\n", r, 2 * r + 1, 3 * r);
    }
    aims_loadopts *lo = NULL;
    OK(aims_loadopts_create(&lo));
    OK(aims_loadopts_set_param_i64(lo, AIMS_LOAD_LABEL_COLUMN, -2));
    OK(aims_loadopts_set_param_i64(lo, AIMS_LOAD_LABEL_KIND, 1));
    aims_dataset *ds = NULL;
    OK(aims_dataset_parse(AIMS_FORMAT_CSV, text, n, lo, &ds));
    aims_loadopts_destroy(lo);
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_LINEAR, 2, 1, &m));
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, 1000.0));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 100));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 8));
    assert_int_equal(aims_trainer_fit(t, ds, NULL), AIMS_E_RANGE);
    expect_msg(aims_trainer_errmsg(t), "training diverged at step ");
    expect_msg(aims_trainer_errmsg(t), "lower the learning rate");
    double step = 0;
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_STEP, &step));
    assert_true(step > 0 && step < 100 * 8);
    /* the run stays stopped */
    int done = 0;
    assert_int_equal(aims_trainer_step(t, &done), AIMS_E_RANGE);
    /* a sane rate on the same data trains */
    OK(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, 1e-5));
    OK(aims_trainer_fit(t, ds, NULL));
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

static void test_params_refuse_nonfinite(void **state)
{
    (void)state;
    aims_pipeline *p = NULL;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL));
    assert_int_equal(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_FACTOR, INFINITY), AIMS_E_RANGE);
    expect_msg(aims_pipeline_errmsg(p), "factor = inf is not a finite number");
    assert_int_equal(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_FACTOR, NAN), AIMS_E_RANGE);
    assert_int_equal(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_FACTOR, 1e300), AIMS_E_RANGE);
    OK(aims_pipeline_set_step_param_f64(p, 0, AIMS_STEP_FACTOR, 2.0));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_IMPUTE, NULL));
    assert_int_equal(aims_pipeline_set_step_param_f64(p, 1, AIMS_STEP_VALUE, -INFINITY), AIMS_E_RANGE);
    /* a clip bound may still be open (infinite) */
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_CLIP, NULL));
    OK(aims_pipeline_set_step_param_f64(p, 2, AIMS_STEP_HIGH, INFINITY));
    assert_int_equal(aims_pipeline_set_step_param_f64(p, 2, AIMS_STEP_HIGH, NAN), AIMS_E_RANGE);
    aims_pipeline_destroy(p);

    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_MLP, 2, 2, &m));
    assert_int_equal(aims_model_set_param_f64(m, AIMS_MODEL_DROPOUT, NAN), AIMS_E_RANGE);
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    assert_int_equal(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, INFINITY), AIMS_E_RANGE);
    assert_int_equal(aims_trainer_set_param_f64(t, AIMS_TRAIN_MIN_DELTA, INFINITY),
                     AIMS_E_RANGE);
    expect_msg(aims_trainer_errmsg(t), "min_delta = inf is not a finite number");
    aims_trainer_destroy(t);
    aims_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dataset_create_dense_nonfinite, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_nan_impute_then_train, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_trainer_divergence_stops, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_params_refuse_nonfinite, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
