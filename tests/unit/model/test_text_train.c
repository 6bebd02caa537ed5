/*
 * test_text_train.c -- the two accuracy levers of issue 15 for text models:
 * punctuation tokens (AIMS_STEP_PUNCT) and averaged SGD (AIMS_TRAIN_AVERAGE).
 *
 * Why here. Both are checked against an independent statement of what they
 * mean, not against stored numbers: punctuation tokens must equal the tokens of
 * the same document split by hand, and survive save/load; the averaged model
 * must equal the mean of the weights after every step of the averaged epochs,
 * recomputed by stepping an identical trainer with averaging off.
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

#include "model/aimsi_model.h"
#include "testalloc.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

/* NORMALIZE, TOKENIZE(min_len, punct), HASH(2^16) */
static aims_pipeline *tok_pipeline(int64_t min_len, int64_t punct)
{
    aims_pipeline *p = NULL;
    size_t k = 0;
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_NORMALIZE, NULL));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, &k));
    OK(aims_pipeline_set_step_param_i64(p, k, AIMS_STEP_MIN_TOKEN_LEN, min_len));
    OK(aims_pipeline_set_step_param_i64(p, k, AIMS_STEP_PUNCT, punct));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &k));
    OK(aims_pipeline_set_step_param_i64(p, k, AIMS_STEP_BUCKETS, 1 << 16));
    return p;
}

/* tok_pipeline, fitted (HASH keeps no state, but transform wants a fitted pipeline) */
static aims_pipeline *tok_fitted(int64_t min_len, int64_t punct)
{
    aims_pipeline *p = tok_pipeline(min_len, punct);
    const char *doc = "fit";
    const int32_t y = 0;
    aims_dataset *raw = NULL;
    OK(aims_dataset_create_texts(1, &doc, NULL, &y, &raw));
    OK(aims_pipeline_fit(p, raw));
    aims_dataset_destroy(raw);
    return p;
}

static aims_dataset *tokens_of(const aims_pipeline *p, const char *doc)
{
    aims_dataset *raw = NULL;
    aims_dataset *out = NULL;
    const int32_t y = 0;
    OK(aims_dataset_create_texts(1, &doc, NULL, &y, &raw));
    OK(aims_pipeline_transform(p, raw, &out));
    aims_dataset_destroy(raw);
    return out;
}

static void assert_same_tokens(const aims_dataset *a, const aims_dataset *b)
{
    const uint64_t na = a->tok_off[1] - a->tok_off[0];
    const uint64_t nb = b->tok_off[1] - b->tok_off[0];
    assert_int_equal(na, nb);
    assert_memory_equal(a->tok_ids + a->tok_off[0], b->tok_ids + b->tok_off[0],
                        na * sizeof *a->tok_ids);
}

static void test_punct_tokens(void **state)
{
    (void)state;
    aims_pipeline *pp = tok_fitted(2, 1);
    aims_pipeline *pw = tok_fitted(2, 0);
    /* "Don't panic!!" -> don ' (t: shorter than 2) panic ! ! */
    aims_dataset *got = tokens_of(pp, "Don't panic!!");
    aims_dataset *want = tokens_of(pp, "don ' panic ! !");
    assert_int_equal(got->tok_off[1] - got->tok_off[0], 5);
    assert_same_tokens(got, want);
    /* punctuation off: the same words, no punctuation token */
    aims_dataset *words = tokens_of(pw, "Don't panic!!");
    aims_dataset *plain = tokens_of(pp, "don panic");
    assert_same_tokens(words, plain);
    /* every punctuation byte, glued: one token each; '_' stays a word byte */
    aims_dataset *glued = tokens_of(pp, "a_b:-)(\"x\"");
    aims_dataset *split = tokens_of(pp, "a_b : - ) ( \" \"");
    assert_same_tokens(glued, split);
    assert_int_equal(glued->tok_off[1] - glued->tok_off[0], 7);
    /* a document of punctuation only (worst case for the scratch sizes) */
    aims_dataset *bang = tokens_of(pp, "!?!?!?!?!?!?!?!?!?!?!?!?!?!?!?!?!");
    assert_int_equal(bang->tok_off[1] - bang->tok_off[0], 33);
    /* the parameter survives save/load (pipeline file version 2) */
    char path[] = "/tmp/aims-punct-XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    OK(aims_pipeline_save(pp, path));
    aims_pipeline *back = NULL;
    OK(aims_pipeline_load(path, &back));
    int64_t v = 0;
    OK(aims_pipeline_get_step_param_i64(back, 1, AIMS_STEP_PUNCT, &v));
    assert_int_equal(v, 1);
    aims_dataset *again = tokens_of(back, "Don't panic!!");
    assert_same_tokens(got, again);
    unlink(path);
    /* range and applicability */
    assert_int_equal(aims_pipeline_set_step_param_i64(pp, 1, AIMS_STEP_PUNCT, 2), AIMS_E_RANGE);
    assert_int_equal(aims_pipeline_set_step_param_i64(pp, 0, AIMS_STEP_PUNCT, 1), AIMS_E_UNSUPPORTED);
    aims_dataset *list[] = {got, want, words, plain, glued, split, bang, again};
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        aims_dataset_destroy(list[i]);
    }
    aims_pipeline_destroy(back);
    aims_pipeline_destroy(pp);
    aims_pipeline_destroy(pw);
}

/* A version 1 pipeline file (17 step parameters, written before AIMS_STEP_PUNCT;
 * the committed fuzz seed) still loads, with punct at its default 0. */
static void test_pipeline_file_v1(void **state)
{
    (void)state;
    const char *src = getenv("AIMS_SOURCE_DIR");
    if (src == NULL) {
        skip();
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fuzz/corpus/pipeline/text_tfidf", src);
    aims_pipeline *p = NULL;
    OK(aims_pipeline_load(path, &p));
    assert_true(aims_pipeline_is_fitted(p));
    int64_t v = -1;
    size_t tok = (size_t)-1;
    for (size_t i = 0; i < aims_pipeline_num_steps(p); i++) {
        if (aims_pipeline_step_kind(p, i) == AIMS_STEP_KIND_TOKENIZE) {
            tok = i;
        }
    }
    assert_true(tok != (size_t)-1);
    OK(aims_pipeline_get_step_param_i64(p, tok, AIMS_STEP_PUNCT, &v));
    assert_int_equal(v, 0);
    aims_pipeline_destroy(p);
}

/* 60 short documents of 3 topics, with punctuation */
static aims_dataset *docs(void)
{
    static const char *const words[3][4] = {{"apple", "pear", "plum", "fig"},
                                            {"wheel", "brake", "gear", "car"},
                                            {"dog", "cat", "bird", "pet"}};
    char *text[60];
    int32_t y[60];
    uint64_t s = 77;
    for (size_t r = 0; r < 60; r++) {
        y[r] = (int32_t)(r % 3);
        text[r] = malloc(128);
        assert_non_null(text[r]);
        text[r][0] = '\0';
        for (int w = 0; w < 5; w++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const int noise = (int)((s >> 33) % 5) == 0;
            strcat(text[r], words[noise ? (y[r] + 1) % 3 : y[r]][(s >> 40) % 4]);
            strcat(text[r], w == 4 ? "!" : ", ");
        }
    }
    aims_dataset *raw = NULL;
    aims_dataset *ds = NULL;
    OK(aims_dataset_create_texts(60, (const char *const *)text, NULL, y, &raw));
    aims_pipeline *p = tok_pipeline(1, 1);
    OK(aims_pipeline_fit_transform(p, raw, &ds));
    aims_pipeline_destroy(p);
    aims_dataset_destroy(raw);
    for (size_t r = 0; r < 60; r++) {
        free(text[r]);
    }
    return ds;
}

static aims_trainer *text_trainer(aims_model *m, int64_t average, double lr)
{
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 4));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_SEED, 5));
    OK(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, lr));
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_AVERAGE, average));
    return t;
}

static aims_model *text_model(int64_t linear)
{
    aims_model *m = NULL;
    OK(aims_model_create(AIMS_MODEL_KIND_TEXT, 1 << 16, 3, &m));
    OK(aims_model_set_param_i64(m, AIMS_MODEL_EMBED_DIM, 8));
    OK(aims_model_set_param_i64(m, AIMS_MODEL_TEXT_LINEAR, linear));
    OK(aims_model_set_param_i64(m, AIMS_MODEL_LOSS, linear ? 3 : 0));
    return m;
}

/* average = 2 of 4 epochs: the result is the mean of the weights after each
 * step of epochs 3 and 4, recomputed from a twin trainer stepped by hand. */
static void check_average(int64_t linear)
{
    aims_dataset *ds = docs();
    aims_model *ma = text_model(linear);
    aims_model *mb = text_model(linear);
    const double lr = linear ? 0.3 : 2.0; /* the embedding model learns slowly here */
    aims_trainer *ta = text_trainer(ma, 2, lr);
    aims_trainer *tb = text_trainer(mb, 0, lr);
    OK(aims_trainer_fit(ta, ds, NULL));
    OK(aims_trainer_begin(tb, ds, NULL));
    const size_t n = mb->n_params;
    double *sum = calloc(n, sizeof *sum);
    assert_non_null(sum);
    int done = 0;
    size_t steps = 0;
    double stat = 0.0;
    while (!done) {
        OK(aims_trainer_get_stat(tb, AIMS_TRAINER_STAT_STEP, &stat));
        const int averaged = stat >= 2.0 * 60.0; /* epochs 3 and 4 of 60 steps */
        OK(aims_trainer_step(tb, &done));
        if (averaged) {
            for (size_t i = 0; i < n; i++) {
                sum[i] += (double)mb->params[i];
            }
            steps++;
        }
    }
    assert_int_equal(steps, 120);
    size_t moved = 0;
    for (size_t i = 0; i < n; i++) {
        const double want = sum[i] / (double)steps;
        const double got = (double)ma->params[i];
        if (fabs(got - want) > 1e-4 + 1e-3 * fabs(want)) {
            fail_msg("linear %d param %zu: averaged %.7g, mean of the iterates %.7g",
                     (int)linear, i, got, want);
        }
        moved += fabs((double)mb->params[i] - want) > 1e-6;
    }
    assert_true(moved > 0); /* the average is not just the last weights */
    /* the averaged model still classifies its training documents */
    aims_eval *ev = NULL;
    double acc = 0.0;
    OK(aims_model_evaluate(ma, ds, &ev));
    OK(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc));
    if (acc <= 0.7) {
        fail_msg("linear %d: training accuracy of the averaged model %.3f", (int)linear, acc);
    }
    aims_eval_destroy(ev);
    free(sum);
    aims_trainer_destroy(ta);
    aims_trainer_destroy(tb);
    aims_model_destroy(ma);
    aims_model_destroy(mb);
    aims_dataset_destroy(ds);
}

static void test_average_linear(void **state)
{
    (void)state;
    check_average(1);
}

static void test_average_embedding(void **state)
{
    (void)state;
    check_average(0);
}

static void test_average_param(void **state)
{
    (void)state;
    aims_model *m = text_model(1);
    aims_trainer *t = NULL;
    OK(aims_trainer_create(m, &t));
    int64_t v = -1;
    OK(aims_trainer_get_param_i64(t, AIMS_TRAIN_AVERAGE, &v));
    assert_int_equal(v, 0);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_AVERAGE, -1), AIMS_E_RANGE);
    OK(aims_trainer_set_param_i64(t, AIMS_TRAIN_AVERAGE, 100)); /* > epochs: all of them */
    aims_dataset *ds = docs();
    OK(aims_trainer_fit(t, ds, NULL));
    aims_dataset_destroy(ds);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_punct_tokens, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_file_v1, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_average_linear, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_average_embedding, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_average_param, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
