/*
 * svc_blobs.h -- the synthetic data and model the svc tests that serve,
 * train or optimize a model share (test_optimize.c, test_lifecycle.c,
 * test_jobs.c, test_services.c): Gaussian-ish "blobs" from a 64-bit LCG,
 * one class per column group, and an MLP bundle trained on them.
 *
 * Each test used to carry its own copy of the LCG, the generator loop and
 * the train-and-save sequence, differing only in constants; the constants
 * are now the arguments, and the values each test draws are bit-for-bit the
 * ones its own copy drew (same LCG calls in the same order, same double
 * arithmetic before the one float conversion).
 *
 * cmocka asserts: include after cmocka.h. Header-only, `static inline`.
 */
#ifndef SVC_BLOBS_H
#define SVC_BLOBS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aims/aims.h"
#include "core/aimsi_core.h"
#include "model/aimsi_model.h"

static inline uint64_t blobs_lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* What blobs_make draws: feature j of a row of class c is
 * (j % classes == c ? hi : lo) + u * spread + slope * j, u uniform in
 * [-0.5, 0.5) in steps of 0.001. */
typedef struct blobs_shape {
    size_t rows, cols, classes;
    uint64_t seed;
    int random_labels; /* 1: each row's class from the LCG first; 0: row % classes */
    double hi, lo, spread, slope;
} blobs_shape;

/* rows x cols features into x (row-major), rows labels into y. */
static inline void blobs_make(const blobs_shape *sh, float *x, int32_t *y)
{
    uint64_t s = sh->seed;
    for (size_t r = 0; r < sh->rows; r++) {
        const int32_t c =
            (int32_t)(sh->random_labels ? blobs_lcg(&s) % sh->classes : r % sh->classes);
        y[r] = c;
        for (size_t j = 0; j < sh->cols; j++) {
            const double noise = ((double)(blobs_lcg(&s) % 1000) / 1000.0 - 0.5) * sh->spread;
            const double centre = (j % sh->classes == (size_t)c) ? sh->hi : sh->lo;
            x[r * sh->cols + j] = (float)(centre + noise + sh->slope * (double)j);
        }
    }
}

/* How blobs_bundle trains: `hidden` ReLU units (a second such layer when
 * deep), `epochs`; batch and lr only when > 0 (else the trainer's defaults). */
typedef struct blobs_train {
    size_t hidden;
    int deep;
    int64_t epochs, batch;
    double lr;
} blobs_train;

/* An MLP over the first `rows` rows of x (rows x cols) and y behind a
 * STANDARDIZE step, trained as t says; its bundle file (meta name=blobs,
 * version=1) into *out, in plain malloc so the counting allocator still
 * balances per test (free() it). */
static inline void blobs_bundle(const float *x, const int32_t *y, size_t rows, size_t cols,
                                size_t classes, const blobs_train *t, void **out, size_t *out_len)
{
    aims_dataset *ds = NULL, *tds = NULL;
    assert_int_equal(aims_dataset_create_dense(rows, cols, x, y, &ds), AIMS_OK);
    aims_pipeline *p = NULL;
    assert_int_equal(aims_pipeline_create(&p), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL), AIMS_OK);
    assert_int_equal(aims_pipeline_fit_transform(p, ds, &tds), AIMS_OK);
    aims_model *m = NULL;
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_MLP, cols, classes, &m), AIMS_OK);
    assert_int_equal(aims_model_add_dense(m, t->hidden, AIMS_ACT_RELU), AIMS_OK);
    if (t->deep) {
        assert_int_equal(aims_model_add_dense(m, t->hidden, AIMS_ACT_RELU), AIMS_OK);
    }
    aims_trainer *tr = NULL;
    assert_int_equal(aims_trainer_create(m, &tr), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(tr, AIMS_TRAIN_EPOCHS, t->epochs), AIMS_OK);
    if (t->batch > 0) {
        assert_int_equal(aims_trainer_set_param_i64(tr, AIMS_TRAIN_BATCH, t->batch), AIMS_OK);
    }
    if (t->lr > 0) {
        assert_int_equal(aims_trainer_set_param_f64(tr, AIMS_TRAIN_LR, t->lr), AIMS_OK);
    }
    assert_int_equal(aims_trainer_fit(tr, tds, NULL), AIMS_OK);
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(p, m, &b), AIMS_OK);
    assert_int_equal(aims_bundle_set_meta(b, "name", "blobs"), AIMS_OK);
    assert_int_equal(aims_bundle_set_meta(b, "version", "1"), AIMS_OK);
    void *bytes = NULL;
    assert_int_equal(aimsi_bundle_to_bytes(b, &bytes, out_len), AIMS_OK);
    *out = malloc(*out_len);
    assert_non_null(*out);
    memcpy(*out, bytes, *out_len);
    aimsi_free(bytes);
    aims_bundle_destroy(b);
    aims_trainer_destroy(tr);
    aims_model_destroy(m);
    aims_dataset_destroy(tds);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
}

#endif /* SVC_BLOBS_H */
