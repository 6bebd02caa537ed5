/*
 * train_fix.h -- the model/trainer set-up the white-box training tests share
 * (tests/unit/model: test_kernels.c, test_smax.c, test_shard.c, test_gemm.c).
 *
 * Each of those tests wrote the same shapes several times: a 24-bit LCG
 * draw and the buffers filled from it; "allocate x and y, fill them, make
 * the dense dataset, free them"; "create a model, add hidden layers,
 * create a trainer, set optimizer / epochs / batch / seed / threads / lr";
 * "step until done"; "copy the parameters out, destroy trainer and model";
 * a mkstemp'd checkpoint path and the run stopped after N steps into it. They differed only in values, which are now
 * the fields of tf_net and tf_hyper. A test still states every value it
 * trains with, so its data and weights are bit for bit what they were:
 * the optional fields are set only when they differ from the library's
 * default (0 for precision, dropout, Nesterov, weight decay and the held-out
 * fraction), which is what setting them to that default did.
 *
 * cmocka asserts: include after cmocka.h. White-box (m->params), so unit tests
 * only. Header-only, `static inline`, so a test that uses part of it still
 * builds warning-free under clang -Werror.
 */
#ifndef TRAIN_FIX_H
#define TRAIN_FIX_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/aimsi_model.h"

/* A deterministic float in [-1, 1) from a 64-bit LCG, 24 bits of it. */
static inline float tf_frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

/* count floats drawn with tf_frand; aimsi_malloc'd. Asserts. */
static inline float *tf_filled(size_t count, uint64_t *seed)
{
    float *v = aimsi_malloc(count * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < count; i++) {
        v[i] = tf_frand(seed);
    }
    return v;
}

/* run(prec) with the own GEMM's AVX2 kernel forced on (it runs on AVX-512
 * CPUs too); skips with a note on a CPU without AVX2 and FMA. */
static inline void tf_avx2_forced(void (*run)(int), int prec)
{
    if (aimsi_gemm_isa() < AIMSI_GEMM_ISA_AVX2) {
        print_message("note: no AVX2+FMA on this CPU, no AVX2 kernel\n");
        skip();
    }
    const int was = aimsi_gemm_avx2_force(1);
    run(prec);
    aimsi_gemm_avx2_force(was);
}

/* An aimsi_malloc'd copy of count floats. Asserts. */
static inline float *tf_copy_of(const float *v, size_t count)
{
    float *c = aimsi_malloc(count * sizeof *c);
    assert_non_null(c);
    memcpy(c, v, count * sizeof *c);
    return c;
}

/* aimsi_malloc(bytes), asserted. */
static inline void *tf_alloc(size_t bytes)
{
    void *p = aimsi_malloc(bytes);
    assert_non_null(p);
    return p;
}

/* The dense dataset of rows x cols features x and rows labels y, which were
 * aimsi_malloc'd (tf_alloc, tf_filled) and are freed here. Asserts. */
static inline aims_dataset *tf_dense_take(size_t rows, size_t cols, float *x, int32_t *y)
{
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_dense(rows, cols, x, y, &ds), AIMS_OK);
    aimsi_free(x);
    aimsi_free(y);
    return ds;
}

/* rows x cols seeded features with 4 classes from a fixed rule on features
 * 0, 1, 2 and 5 (cols >= 6): learnable, so training moves every weight. */
static inline aims_dataset *tf_rule_data(size_t rows, size_t cols, uint64_t seed)
{
    float *x = tf_filled(rows * cols, &seed);
    int32_t *y = tf_alloc(rows * sizeof *y);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        y[r] = (xr[0] > xr[1]) + 2 * (xr[2] > xr[5]);
    }
    return tf_dense_take(rows, cols, x, y);
}

/* A model: kind, input and output widths, up to three hidden dense layers
 * (widths; 0 ends the list) with one activation, and the two structural
 * parameters the tests vary (set when not 0, their default). */
typedef struct tf_net {
    aims_model_kind kind;
    size_t in, out;
    size_t hidden[3];
    aims_activation act;
    int64_t precision;
    double dropout;
} tf_net;

/* A trainer: the values every test sets, then the ones set only when not 0
 * (their default). */
typedef struct tf_hyper {
    int64_t opt, epochs, batch, seed, threads;
    double lr;
    int64_t nesterov;
    double wd, val;
} tf_hyper;

static inline aims_status tf_model(const tf_net *n, aims_model **out)
{
    aims_model *m = NULL;
    aims_status rc = aims_model_create(n->kind, n->in, n->out, &m);
    for (size_t i = 0; rc == AIMS_OK && i < 3 && n->hidden[i] > 0; i++) {
        rc = aims_model_add_dense(m, n->hidden[i], n->act);
    }
    if (rc == AIMS_OK && n->precision != 0) {
        rc = aims_model_set_param_i64(m, AIMS_MODEL_PRECISION, n->precision);
    }
    if (rc == AIMS_OK && n->dropout != 0.0) {
        rc = aims_model_set_param_f64(m, AIMS_MODEL_DROPOUT, n->dropout);
    }
    if (rc != AIMS_OK) {
        aims_model_destroy(m);
        return rc;
    }
    *out = m;
    return AIMS_OK;
}

static inline aims_status tf_hyper_apply(aims_trainer *t, const tf_hyper *h)
{
    const struct {
        aims_param p;
        int64_t v;
        int always;
    } ints[] = {{AIMS_TRAIN_OPTIMIZER, h->opt, 1},   {AIMS_TRAIN_EPOCHS, h->epochs, 1},
                {AIMS_TRAIN_BATCH, h->batch, 1},     {AIMS_TRAIN_SEED, h->seed, 1},
                {AIMS_TRAIN_THREADS, h->threads, 1}, {AIMS_TRAIN_NESTEROV, h->nesterov, 0}};
    const struct {
        aims_param p;
        double v;
        int always;
    } reals[] = {{AIMS_TRAIN_LR, h->lr, 1},
                 {AIMS_TRAIN_WEIGHT_DECAY, h->wd, 0},
                 {AIMS_TRAIN_VAL_FRACTION, h->val, 0}};
    aims_status rc = AIMS_OK;
    for (size_t i = 0; rc == AIMS_OK && i < sizeof ints / sizeof ints[0]; i++) {
        if (ints[i].always || ints[i].v != 0) {
            rc = aims_trainer_set_param_i64(t, ints[i].p, ints[i].v);
        }
    }
    for (size_t i = 0; rc == AIMS_OK && i < sizeof reals / sizeof reals[0]; i++) {
        if (reals[i].always || reals[i].v != 0.0) {
            rc = aims_trainer_set_param_f64(t, reals[i].p, reals[i].v);
        }
    }
    return rc;
}

/* The model `n` describes and a trainer of it set to `h`. No assert: the
 * first failure is returned with nothing left behind, so this also serves
 * inside allocation-failure loops. */
static inline aims_status tf_make(const tf_net *n, const tf_hyper *h, aims_model **out_m,
                                  aims_trainer **out_t)
{
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_status rc = tf_model(n, &m);
    if (rc == AIMS_OK) {
        rc = aims_trainer_create(m, &t);
    }
    if (rc == AIMS_OK) {
        rc = tf_hyper_apply(t, h);
    }
    if (rc != AIMS_OK) {
        aims_trainer_destroy(t);
        aims_model_destroy(m);
        return rc;
    }
    *out_m = m;
    *out_t = t;
    return AIMS_OK;
}

/* aims_trainer_begin with a test switch (one of aimsi_train_*_force) set to
 * `on` for the begin only, as the begin is where the trainer reads it. */
static inline void tf_begin_forced(aims_trainer *t, const aims_dataset *ds, int (*force)(int),
                                   int on)
{
    const int before = force(on);
    assert_int_equal(aims_trainer_begin(t, ds, NULL), AIMS_OK);
    force(before);
}

/* Step a begun trainer until its run is done. Asserts every step. */
static inline void tf_steps_to_end(aims_trainer *t)
{
    int done = 0;
    while (!done) {
        assert_int_equal(aims_trainer_step(t, &done), AIMS_OK);
    }
}

/* The trained parameters (aimsi_malloc'd copy, *n their count); destroys
 * t and then m. */
static inline float *tf_params_take(aims_model *m, aims_trainer *t, size_t *n)
{
    *n = m->n_params;
    float *p = tf_copy_of(m->params, m->n_params);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return p;
}

/* The first half of an exact-resume test: begin t on ds, take `steps`
 * steps, checkpoint to `path`, destroy t and then m. Asserts. */
static inline void tf_checkpoint_after(aims_model *m, aims_trainer *t, const aims_dataset *ds,
                                       int steps, const char *path)
{
    assert_int_equal(aims_trainer_begin(t, ds, NULL), AIMS_OK);
    int done = 0;
    for (int i = 0; i < steps; i++) {
        assert_int_equal(aims_trainer_step(t, &done), AIMS_OK);
    }
    assert_int_equal(aims_trainer_checkpoint(t, path), AIMS_OK);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
}

/* The end of an exact-resume test: m holds the n parameters `want` of the
 * run that never stopped, bit for bit; then t, m, the checkpoint at `path`
 * and want are released. Asserts. */
static inline void tf_resume_check(aims_model *m, aims_trainer *t, float *want, size_t n,
                                   const char *path)
{
    assert_int_equal(m->n_params, n);
    assert_memory_equal(m->params, want, n * sizeof *want);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    unlink(path);
    aimsi_free(want);
}

/* A fresh temporary file from `templ` (a mkstemp template, rewritten in place),
 * created and closed: a checkpoint path. Asserts. */
static inline void tf_temp_file(char *templ)
{
    const int fd = mkstemp(templ);
    assert_true(fd >= 0);
    close(fd);
}

#endif /* TRAIN_FIX_H */
