/*
 * test_api_model.c -- black-box tests of models, training and evaluation
 * through <aims/aims.h> and libaims.so only: misuse, the documented error
 * codes, a small end-to-end run (train, evaluate with hand-checked metrics,
 * save, load, predict), the step/epoch API and checkpoints.
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

/* Two well-separated clusters per class along the first feature. */
static aims_dataset *toy(size_t rows)
{
    float *x = calloc(rows * 2, sizeof *x);
    int32_t *y = calloc(rows, sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (size_t r = 0; r < rows; r++) {
        y[r] = (int32_t)(r % 3);
        x[2 * r] = (float)y[r] * 2.0f - 2.0f + 0.1f * (float)(r % 5);
        x[2 * r + 1] = (float)(r % 7) * 0.1f;
    }
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(rows, 2, x, y, &ds));
    free(x);
    free(y);
    return ds;
}

static void test_misuse(void **state)
{
    (void)state;
    aims_model *m = NULL;
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 2, 3, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_model_add_dense(NULL, 3, AIMS_ACT_RELU), AIMS_E_MISUSE);
    assert_int_equal(aims_model_kind_of(NULL), 0);
    assert_int_equal(aims_model_input_dim(NULL), 0);
    assert_string_equal(aims_model_errmsg(NULL), "");
    aims_model_destroy(NULL);
    aims_eval_destroy(NULL);
    aims_trainer_destroy(NULL);
    aims_trainer_cancel(NULL);
    aims_trainer *t = NULL;
    assert_int_equal(aims_trainer_create(NULL, &t), AIMS_E_MISUSE);
    OK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 2, 3, &m));
    OK(aims_trainer_create(m, &t));
    int done = 0;
    assert_int_equal(aims_trainer_step(t, &done), AIMS_E_STATE);
    assert_int_equal(aims_trainer_checkpoint(t, "/tmp/x"), AIMS_E_STATE);
    assert_int_equal(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, -1.0), AIMS_E_RANGE);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_LR, 1), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_MODEL_LOSS, 1), AIMS_E_UNSUPPORTED);
    double v = 0;
    OK(aims_trainer_get_param_f64(t, AIMS_TRAIN_LR, &v));
    assert_true(v == 0.1);
    assert_int_equal(aims_trainer_get_stat(t, (aims_trainer_stat)99, &v), AIMS_E_UNSUPPORTED);
    /* wrong width and out-of-range labels */
    float x[4] = {0, 0, 1, 1};
    int32_t y[2] = {0, 5};
    aims_dataset *bad = NULL;
    OK(aims_dataset_create_dense(2, 2, x, y, &bad));
    assert_int_equal(aims_trainer_begin(t, bad, NULL), AIMS_E_INVAL);
    assert_true(strlen(aims_trainer_errmsg(t)) > 0);
    aims_dataset_destroy(bad);
    OK(aims_dataset_create_dense(1, 4, x, NULL, &bad));
    assert_int_equal(aims_trainer_fit(t, bad, NULL), AIMS_E_INVAL);
    aims_dataset_destroy(bad);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
}

static void test_end_to_end(void **state)
{
    (void)state;
    aims_dataset *ds = toy(300);
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_MLP, 2, 3, &m));
    OK(aims_model_add_dense(m, 16, AIMS_ACT_TANH));
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 30));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 32));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_SCHEDULE, 2));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_WARMUP_STEPS, 10));
    OK(aims_trainer_fit(t, ds, NULL));
    double e = 0, lr = 1, spe = 0;
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_EPOCH, &e));
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_LR, &lr));
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_STEPS_PER_EPOCH, &spe));
    assert_int_equal((int)e, 30);
    assert_int_equal((int)spe, 10);
    assert_true(lr < 1e-6); /* cosine reached its end */
    aims_eval *ev = NULL;
    OK(aims_model_evaluate(m, ds, &ev));
    double acc = 0;
    OK(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc));
    assert_true(acc > 0.97);
    aims_eval_destroy(ev);

    char path[] = "/tmp/aims_api_model_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    OK(aims_model_save(m, path));
    aims_model *l = NULL;
    OK(aims_model_load(path, &l));
    assert_int_equal(aims_model_kind_of(l), AIMS_MODEL_KIND_MLP);
    assert_int_equal(aims_model_output_dim(l), 3);
    float a[9], b[9];
    const float *x = aims_dataset_features(ds);
    OK(aims_model_predict(m, AIMS_OUT_PROBA, x, 3, 2, a, 9));
    OK(aims_model_predict(l, AIMS_OUT_PROBA, x, 3, 2, b, 9));
    assert_memory_equal(a, b, sizeof a);
    int32_t c[3];
    OK(aims_model_predict_class(l, x, 3, 2, c, 3));
    assert_int_equal(c[0], 0);
    assert_int_equal(c[1], 1);
    assert_int_equal(c[2], 2);
    /* a model file is not a pipeline and vice versa */
    aims_pipeline *p = NULL;
    assert_int_not_equal(aims_pipeline_load(path, &p), AIMS_OK);
    unlink(path);
    aims_model_destroy(l);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

static void test_metrics_by_hand(void **state)
{
    (void)state;
    /* LINEAR model with weights learned exactly: y = 2 x; check MSE and R2 on
     * a dataset whose targets are known: evaluation of a near-perfect fit. */
    float x[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    int32_t y[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_dense(8, 1, x, y, &ds));
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_LOGISTIC, 1, 1, &m));
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 200));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 8));
    OK(aims_trainer_fit(t, ds, NULL));
    aims_eval *ev = NULL;
    OK(aims_model_evaluate(m, ds, &ev));
    int64_t conf[4];
    OK(aims_eval_get_confusion(ev, conf, 4));
    assert_int_equal(conf[0], 4);
    assert_int_equal(conf[3], 4);
    double f1 = 0, ll = 1;
    OK(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_MACRO_F1, &f1));
    OK(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_LOG_LOSS, &ll));
    assert_true(fabs(f1 - 1.0) < 1e-12);
    assert_true(ll < 0.3);
    aims_eval_destroy(ev);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

static void test_step_api_and_checkpoint(void **state)
{
    (void)state;
    aims_dataset *ds = toy(90);
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 2, 3, &m));
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 10));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 2));
    OK(aims_trainer_set_param_f64(t, AIMS_TRAIN_VAL_FRACTION, 0.2));
    OK(aims_trainer_begin(t, ds, NULL));
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 3), AIMS_E_STATE);
    int done = 0;
    OK(aims_trainer_step(t, &done));
    double step = 0, spe = 0, vacc = 0;
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_STEP, &step));
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_STEPS_PER_EPOCH, &spe));
    assert_int_equal((int)step, 1);
    assert_int_equal((int)spe, 8); /* 72 training rows */
    char path[] = "/tmp/aims_api_ckpt_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    OK(aims_trainer_checkpoint(t, path));
    OK(aims_trainer_epoch(t, &done));
    assert_false(done);
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_VAL_ACCURACY, &vacc));
    assert_false(isnan(vacc));
    OK(aims_trainer_epoch(t, &done));
    assert_true(done);
    OK(aims_trainer_step(t, &done)); /* nothing left: still done */
    assert_true(done);
    OK(aims_trainer_restore(t, path));
    OK(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_STEP, &step));
    assert_int_equal((int)step, 1);
    /* corrupt checkpoint */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 40, SEEK_SET);
    fputc(0xEE, f);
    fclose(f);
    assert_int_equal(aims_trainer_restore(t, path), AIMS_E_CORRUPT);
    unlink(path);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_misuse, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_end_to_end, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_by_hand, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_step_api_and_checkpoint, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name("api_model", tests, NULL, NULL);
}
