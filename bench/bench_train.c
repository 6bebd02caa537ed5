/*
 * bench_train.c -- the libaims side of the training benchmark (issue 3, P1..P5).
 *
 * usage: bench_train DATA_DIR GOAL REPS [key=value ...]
 *   DATA_DIR  what bench/prepare_data.py wrote (fashion-mnist/, fortunes/)
 *   GOAL      P1sgd | P1adam | P2 | P2lbfgs | P3 | P4 | P5
 *   REPS      timed repetitions (each a whole training from fresh weights)
 *   keys      threads=N (training threads, default 2), precision=0|1 (fp32|bf16
 *             GEMMs), gemm=0|1 (own AVX-512/AVX2 kernels when the CPU has them |
 *             OpenBLAS), epochs=N, optimizer=0|1|2, lr=X, batch=N, calls=N (P5
 *             latency calls), seed=N (repetition i uses seed N+i; default 1),
 *             contender=NAME (label of the JSON rows)
 *
 * What each goal does (hyper-parameters are those of bench/peers/torch_train.py):
 *   P1sgd   MLP 784-256(ReLU)-10, batch 128, 5 epochs, SGD lr 0.1 momentum 0.9
 *   P1adam  the same MLP, Adam lr 1e-3
 *   P2      softmax regression 784-10, same SGD setting
 *   P2lbfgs softmax regression, time to accuracy (compared with scikit-learn's
 *           lbfgs): the same model with the settings given by the keys
 *   P3      fortunes topics: load train.tsv, text pipeline (NORMALIZE, TOKENIZE
 *           min length 1 with punctuation tokens (AIMS_STEP_PUNCT), NGRAMS 2, HASH
 *           2^18, TFIDF sublinear tf + l2 norm), TEXT model with
 *           AIMS_MODEL_TEXT_LINEAR = 1 (one weight per token and class, no
 *           embedding) and AIMS_MODEL_LOSS = 3 (one-vs-rest hinge): 10 epochs of
 *           per-document SGD, lr 0.2 decaying linearly to 0; timed from the file
 *           to the trained model, as fastText's CLI is. The settings were chosen
 *           on fortunes/tune-train.tsv -> tune-valid.tsv (train=, test= keys),
 *           never on the test set, like the peers' grids; each lever's effect on
 *           that validation split is in docs/text-training.md. Keys: punct=0|1,
 *           ngram=N, buckets=LOG2, minlen=N, sublinear=0|1, loss=0|3,
 *           average=N (AIMS_TRAIN_AVERAGE), train=FILE, test=FILE
 *   P4      OpenBLAS sgemm GFLOP/s at m=128 n=256 k=784 (Y = X W^T, the MLP's
 *           first layer) with 1 and 2 threads, then the GFLOP/s one MLP training
 *           epoch reaches (P1sgd's model, FLOPs counted analytically below)
 *   P5      single-row predict p50 latency of the trained P1sgd MLP, fp32 and int8
 *           (aims_model_quantize, calibrated on the training set), with accuracy
 *
 * Inputs are the Fashion-MNIST IDX files scaled by 1/255 with a SCALE pipeline
 * (untimed), the same values torch_train.py builds. Training time is
 * aims_trainer_fit only; accuracy comes from aims_model_evaluate on the 10,000
 * test rows. Each measurement is one JSON line on stdout (bench/run_train.py reads
 * them); a failing goal prints a line with "error" instead.
 *
 * This program is the one place outside src/model that calls OpenBLAS: to
 * measure the sgemm limit P4 compares against, at the same shapes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include <aims/aims.h>

#include "bench_data.h"
#include "bench_util.h"
#include <aims/aims_model.h>

#define MAX_REPS 100
#define MAX_CALLS 1000000

/* Per-sample FLOPs of one training step of the 784-256-10 MLP: forward
 * 2(784*256 + 256*10); backward dW for both layers 2(784*256 + 256*10) and dX of
 * the output layer 2*256*10 (the input layer needs no dX). */
#define MLP_TRAIN_FLOPS_PER_ROW (4.0 * 784 * 256 + 6.0 * 256 * 10)

typedef struct opts {
    const char *data_dir;
    const char *goal;
    const char *contender;
    int reps;
    int threads;
    int precision;
    int gemm; /* AIMS_TRAIN_GEMM: 0 auto (own kernels), 1 OpenBLAS */
    int epochs;
    int optimizer;
    int batch;
    double lr;
    long calls;
    int seed; /* repetition i trains with seed + i */
    /* P3 only (the text pipeline and TEXT model; see goal_defaults) */
    const char *train_file; /* under DATA_DIR/fortunes/ */
    const char *test_file;
    int ngram, buckets_log2, min_len, loss, average, sublinear, punct;
} opts;

typedef struct fmnist {
    aims_dataset *train;
    aims_dataset *test;
} fmnist;

static void json_env(const opts *o)
{
    static const char *const vars[] = {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                       "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"};
    printf("\"env\": {");
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        printf("\"%s\": ", vars[i]);
        if (v) {
            json_str(v);
        } else {
            printf("null");
        }
        printf(", ");
    }
    printf("\"train_threads\": %d, \"precision\": %d, \"gemm\": %d, \"aims_build_info\": ",
           o->threads, o->precision, o->gemm);
    json_str(aims_build_info());
    printf("}, \"version\": ");
    json_str(aims_version_string());
}

static void emit_error(const opts *o, const char *contender, const char *what,
                       aims_status st, const char *detail)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "%s: %s: %s", what, aims_strerror(st),
             detail && *detail ? detail : aims_errmsg());
    printf("{\"goal\": \"%s\", \"contender\": \"%s\", \"error\": ", o->goal, contender);
    json_str(buf);
    printf(", ");
    json_env(o);
    printf("}\n");
    fflush(stdout);
}

/* One JSON row. samples[] is sorted in place for the median; accs may be NULL. */
static void emit(const opts *o, const char *contender, const char *metric, const char *unit,
                 double *samples, const double *accs, int n, const char *extra)
{
    printf("{\"goal\": \"%s\", \"contender\": \"%s\", \"metric\": \"%s\", \"unit\": \"%s\", "
           "\"samples\": [",
           o->goal, contender, metric, unit);
    for (int i = 0; i < n; i++) {
        printf("%s%.9g", i ? ", " : "", samples[i]);
    }
    printf("], \"accuracies\": [");
    double acc_copy[MAX_REPS];
    for (int i = 0; accs && i < n; i++) {
        printf("%s%.6f", i ? ", " : "", accs[i]);
        acc_copy[i] = accs[i];
    }
    printf("], \"accuracy\": ");
    if (accs) {
        printf("%.6f", median_sort(acc_copy, (size_t)n));
    } else {
        printf("null");
    }
    const double med = median_sort(samples, (size_t)n);
    printf(", \"median\": %.9g, \"min\": %.9g, \"max\": %.9g, \"n\": %d, \"epochs\": %d, "
           "\"batch\": %d%s%s, ",
           med, samples[0], samples[n - 1], n, o->epochs, o->batch, extra ? ", " : "",
           extra ? extra : "");
    json_env(o);
    printf("}\n");
    fflush(stdout);
}

/* ---- data -------------------------------------------------------------------------- */


static aims_status load_fmnist(const char *dir, fmnist *f)
{
    aims_status st = load_scaled(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                 &f->train);
    if (st == AIMS_OK) {
        st = load_scaled(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", &f->test);
    }
    return st;
}

/* ---- dense training ------------------------------------------------------------------ */

typedef struct trained {
    aims_model *model;
    double seconds;
    double accuracy;
} trained;

static aims_status build_model(const opts *o, int mlp, aims_model **out)
{
    aims_model *m = NULL;
    aims_status st = aims_model_create(mlp ? AIMS_MODEL_KIND_MLP : AIMS_MODEL_KIND_SOFTMAX, 784, 10, &m);
    if (st == AIMS_OK && mlp) {
        st = aims_model_add_dense(m, 256, AIMS_ACT_RELU);
    }
    if (st == AIMS_OK) {
        st = aims_model_set_param_i64(m, AIMS_MODEL_PRECISION, o->precision);
    }
    if (st != AIMS_OK) {
        aims_model_destroy(m);
        return st;
    }
    *out = m;
    return AIMS_OK;
}

static aims_status configure(aims_trainer *t, const opts *o, uint64_t seed)
{
    aims_status st = aims_trainer_set_param_i64(t, AIMS_TRAIN_OPTIMIZER, o->optimizer);
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, o->lr);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_f64(t, AIMS_TRAIN_MOMENTUM, o->optimizer == 0 ? 0.9 : 0.0);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, o->batch);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, o->epochs);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_SEED, (int64_t)seed);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_THREADS, o->threads);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_GEMM, o->gemm);
    }
    return st;
}

static aims_status accuracy_of(const aims_model *m, const aims_dataset *test, double *acc)
{
    aims_eval *ev = NULL;
    aims_status st = aims_model_evaluate(m, test, &ev);
    if (st == AIMS_OK) {
        st = aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, acc);
    }
    aims_eval_destroy(ev);
    return st;
}

/* Train one fresh model; on success the caller owns res->model. */
static aims_status train_dense(const opts *o, const fmnist *f, int mlp, uint64_t seed,
                               trained *res, char *err, size_t err_cap)
{
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_status st = build_model(o, mlp, &m);
    if (st == AIMS_OK) {
        st = aims_trainer_create(m, &t);
    }
    if (st == AIMS_OK) {
        st = configure(t, o, seed);
    }
    if (st == AIMS_OK) {
        const double t0 = now_s();
        st = aims_trainer_fit(t, f->train, NULL);
        res->seconds = now_s() - t0;
    }
    if (st != AIMS_OK && t) {
        snprintf(err, err_cap, "%s", aims_trainer_errmsg(t));
    }
    aims_trainer_destroy(t);
    if (st == AIMS_OK) {
        st = accuracy_of(m, f->test, &res->accuracy);
    }
    if (st != AIMS_OK) {
        aims_model_destroy(m);
        return st;
    }
    res->model = m;
    return AIMS_OK;
}

static int goal_dense(const opts *o, const fmnist *f, int mlp)
{
    double secs[MAX_REPS];
    double accs[MAX_REPS];
    char err[1024] = "";
    /* Untimed warm-up: page faults of fresh buffers, BLAS thread start-up, lazy binding. */
    opts warm = *o;
    warm.epochs = 1;
    trained r = {0};
    aims_status st = train_dense(&warm, f, mlp, 99, &r, err, sizeof err);
    aims_model_destroy(r.model);
    for (int i = 0; st == AIMS_OK && i < o->reps; i++) {
        r.model = NULL;
        st = train_dense(o, f, mlp, (uint64_t)o->seed + (uint64_t)i, &r, err, sizeof err);
        aims_model_destroy(r.model);
        secs[i] = r.seconds;
        accs[i] = r.accuracy;
    }
    if (st != AIMS_OK) {
        emit_error(o, o->contender, "train", st, err);
        return 1;
    }
    char extra[256] = "";
    if (mlp) {
        double gf[MAX_REPS];
        for (int i = 0; i < o->reps; i++) {
            gf[i] = MLP_TRAIN_FLOPS_PER_ROW * 60000.0 * o->epochs / secs[i] * 1e-9;
        }
        snprintf(extra, sizeof extra, "\"train_gflops\": %.3f",
                 median_sort(gf, (size_t)o->reps));
    }
    emit(o, o->contender, "train_s", "s", secs, accs, o->reps, extra[0] ? extra : NULL);
    return 0;
}

/* ---- P4: sgemm limit and training GFLOP/s ------------------------------------------- */

static double sgemm_gflops(int threads)
{
    enum { M = 128, N = 256, K = 784, INNER = 100, OUTER = 15 };
    float *x = malloc(sizeof(float) * M * K);
    float *w = malloc(sizeof(float) * N * K);
    float *y = malloc(sizeof(float) * M * N);
    if (!x || !w || !y) {
        free(x);
        free(w);
        free(y);
        return 0.0;
    }
    for (size_t i = 0; i < (size_t)M * K; i++) {
        x[i] = (float)(i % 255) / 255.0f;
    }
    for (size_t i = 0; i < (size_t)N * K; i++) {
        w[i] = (float)((int)(i % 61) - 30) * 0.001f;
    }
    openblas_set_num_threads(threads);
    double rates[OUTER];
    for (int r = -2; r < OUTER; r++) { /* two untimed warm-up rounds */
        const double t0 = now_s();
        for (int k = 0; k < INNER; k++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K,
                        0.0f, y, N);
        }
        const double dt = now_s() - t0;
        if (r >= 0) {
            rates[r] = 2.0 * M * N * K * INNER / dt * 1e-9;
        }
    }
    free(x);
    free(w);
    free(y);
    return median_sort(rates, OUTER);
}

static int goal_p4(const opts *o, const fmnist *f)
{
    const int saved = openblas_get_num_threads();
    for (int th = 1; th <= 2; th++) {
        double g[MAX_REPS];
        for (int i = 0; i < o->reps; i++) {
            g[i] = sgemm_gflops(th);
        }
        char name[64];
        snprintf(name, sizeof name, "openblas-sgemm-%dt", th);
        emit(o, name, "gflops", "GFLOP/s", g, NULL, o->reps,
             "\"shape\": \"m=128 n=256 k=784 (X W^T)\"");
    }
    openblas_set_num_threads(saved);
    /* Training: per-epoch GFLOP/s of the P1sgd fp32 configuration. */
    double gf[MAX_REPS];
    double accs[MAX_REPS];
    char err[1024] = "";
    trained r = {0};
    opts warm = *o;
    warm.epochs = 1;
    aims_status st = train_dense(&warm, f, 1, 99, &r, err, sizeof err);
    aims_model_destroy(r.model);
    for (int i = 0; st == AIMS_OK && i < o->reps; i++) {
        r.model = NULL;
        st = train_dense(o, f, 1, (uint64_t)o->seed + (uint64_t)i, &r, err, sizeof err);
        aims_model_destroy(r.model);
        gf[i] = MLP_TRAIN_FLOPS_PER_ROW * 60000.0 * o->epochs / r.seconds * 1e-9;
        accs[i] = r.accuracy;
    }
    if (st != AIMS_OK) {
        emit_error(o, o->contender, "train", st, err);
        return 1;
    }
    emit(o, o->contender, "train_gflops", "GFLOP/s", gf, accs, o->reps,
         "\"flops_per_row\": 818176");
    return 0;
}

/* ---- P5: single-row latency ---------------------------------------------------------- */

static aims_status row_latency(const aims_model *m, const aims_dataset *test, long calls,
                               double *p50, double *p90)
{
    double *lat = malloc(sizeof(double) * (size_t)calls);
    if (!lat) {
        return AIMS_E_NOMEM;
    }
    const float *x = aims_dataset_features(test);
    const size_t rows = aims_dataset_rows(test);
    float out[16];
    aims_status st = AIMS_OK;
    for (long i = 0; st == AIMS_OK && i < 1000; i++) {
        st = aims_model_predict(m, AIMS_OUT_SCORES, x + (size_t)i % rows * 784, 1, 784, out, 16);
    }
    for (long i = 0; st == AIMS_OK && i < calls; i++) {
        const float *row = x + (size_t)i % rows * 784;
        const double t0 = now_s();
        st = aims_model_predict(m, AIMS_OUT_SCORES, row, 1, 784, out, 16);
        lat[i] = (now_s() - t0) * 1e6;
    }
    if (st == AIMS_OK) {
        qsort(lat, (size_t)calls, sizeof *lat, cmp_double);
        *p50 = lat[calls / 2];
        *p90 = lat[calls * 9 / 10];
    }
    free(lat);
    return st;
}

static int goal_p5(const opts *o, const fmnist *f)
{
    char err[1024] = "";
    trained r = {0};
    aims_status st = train_dense(o, f, 1, (uint64_t)o->seed, &r, err, sizeof err);
    if (st != AIMS_OK) {
        emit_error(o, o->contender, "train", st, err);
        return 1;
    }
    char extra[256];
    double p50 = 0.0;
    double p90 = 0.0;
    st = row_latency(r.model, f->test, o->calls, &p50, &p90);
    if (st != AIMS_OK) {
        emit_error(o, o->contender, "predict", st, aims_model_errmsg(r.model));
        aims_model_destroy(r.model);
        return 1;
    }
    snprintf(extra, sizeof extra, "\"p90_us\": %.4f, \"calls\": %ld, \"variant\": \"fp32\"",
             p90, o->calls);
    emit(o, o->contender, "predict_row_p50_us", "us", &p50, &r.accuracy, 1, extra);

    aims_model *q = NULL;
    double qacc = 0.0;
    char qname[96];
    snprintf(qname, sizeof qname, "%s-int8", o->contender);
    st = aims_model_quantize(r.model, f->train, &q);
    if (st == AIMS_OK) {
        st = accuracy_of(q, f->test, &qacc);
    }
    if (st == AIMS_OK) {
        st = row_latency(q, f->test, o->calls, &p50, &p90);
    }
    if (st != AIMS_OK) {
        emit_error(o, qname, "quantize", st, aims_model_errmsg(r.model));
    } else {
        snprintf(extra, sizeof extra,
                 "\"p90_us\": %.4f, \"calls\": %ld, \"variant\": \"int8\", "
                 "\"fp32_accuracy\": %.6f",
                 p90, o->calls, r.accuracy);
        emit(o, qname, "predict_row_p50_us", "us", &p50, &qacc, 1, extra);
    }
    aims_model_destroy(q);
    aims_model_destroy(r.model);
    return st == AIMS_OK ? 0 : 1;
}

/* ---- P3: fortunes topics ------------------------------------------------------------- */

static aims_status text_pipeline(const opts *o, aims_pipeline **out)
{
    aims_pipeline *p = NULL;
    size_t step = 0;
    aims_status st = aims_pipeline_create(&p);
    if (st == AIMS_OK) { /* the training threads tokenize too, as fastText's do */
        st = aims_pipeline_set_param_i64(p, AIMS_PIPELINE_THREADS, o->threads);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_NORMALIZE, NULL);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, &step);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_set_step_param_i64(p, step, AIMS_STEP_MIN_TOKEN_LEN, o->min_len);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_set_step_param_i64(p, step, AIMS_STEP_PUNCT, o->punct);
    }
    if (st == AIMS_OK && o->ngram > 1) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_NGRAMS, &step);
        if (st == AIMS_OK) {
            st = aims_pipeline_set_step_param_i64(p, step, AIMS_STEP_NGRAM_MAX, o->ngram);
        }
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &step);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_set_step_param_i64(p, step, AIMS_STEP_BUCKETS, (int64_t)1 << o->buckets_log2);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_TFIDF, &step);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_set_step_param_i64(p, step, AIMS_STEP_SUBLINEAR_TF, o->sublinear);
    }
    if (st != AIMS_OK) {
        aims_pipeline_destroy(p);
        return st;
    }
    *out = p;
    return AIMS_OK;
}

typedef struct text_run {
    double seconds;
    double accuracy;
} text_run;

static aims_status train_text(const opts *o, uint64_t seed, text_run *res, char *err,
                              size_t err_cap)
{
    char trp[4096];
    char tep[4096];
    snprintf(trp, sizeof trp, "%s/fortunes/%s", o->data_dir, o->train_file);
    snprintf(tep, sizeof tep, "%s/fortunes/%s", o->data_dir, o->test_file);
    aims_dataset *raw = NULL;
    aims_dataset *tok = NULL;
    aims_dataset *raw_te = NULL;
    aims_dataset *tok_te = NULL;
    aims_pipeline *p = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    const double t0 = now_s();
    aims_status st = aims_dataset_load_file(AIMS_FORMAT_TEXT, trp, NULL, &raw);
    if (st == AIMS_OK) {
        st = text_pipeline(o, &p);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_fit_transform(p, raw, &tok);
    }
    if (st == AIMS_OK) {
        st = aims_model_create(AIMS_MODEL_KIND_TEXT, aims_dataset_token_dim(tok),
                               aims_dataset_num_classes(raw), &m);
    }
    if (st == AIMS_OK) {
        st = aims_model_set_param_i64(m, AIMS_MODEL_TEXT_LINEAR, 1);
    }
    if (st == AIMS_OK) {
        st = aims_model_set_param_i64(m, AIMS_MODEL_LOSS, o->loss);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_create(m, &t);
    }
    if (st == AIMS_OK) {
        st = configure(t, o, seed);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_AVERAGE, o->average);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_fit(t, tok, NULL);
        if (st != AIMS_OK) {
            snprintf(err, err_cap, "%s", aims_trainer_errmsg(t));
        }
    }
    res->seconds = now_s() - t0;
    if (st == AIMS_OK) {
        st = aims_dataset_load_file(AIMS_FORMAT_TEXT, tep, NULL, &raw_te);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_transform(p, raw_te, &tok_te);
    }
    if (st == AIMS_OK) {
        st = accuracy_of(m, tok_te, &res->accuracy);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(tok_te);
    aims_dataset_destroy(raw_te);
    aims_dataset_destroy(tok);
    aims_dataset_destroy(raw);
    return st;
}

static int goal_p3(const opts *o)
{
    double secs[MAX_REPS];
    double accs[MAX_REPS];
    char err[1024] = "";
    text_run r = {0};
    aims_status st = AIMS_OK;
    for (int i = 0; st == AIMS_OK && i < o->reps; i++) {
        st = train_text(o, (uint64_t)o->seed + (uint64_t)i, &r, err, sizeof err);
        secs[i] = r.seconds;
        accs[i] = r.accuracy;
    }
    if (st != AIMS_OK) {
        emit_error(o, o->contender, "text", st, err);
        return 1;
    }
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "\"pipeline\": \"normalize,tokenize(min %d%s),ngrams(%d),hash(2^%d),tfidf(%sl2)\", "
             "\"model\": \"text_linear, loss %d\", \"config\": {\"lr\": %g, \"epochs\": %d, "
             "\"average\": %d, \"train\": \"%s\", \"test\": \"%s\"}",
             o->min_len, o->punct ? ", punct" : "", o->ngram, o->buckets_log2, o->sublinear ? "sublinear," : "", o->loss,
             o->lr, o->epochs, o->average, o->train_file, o->test_file);
    emit(o, o->contender, "train_s", "s", secs, accs, o->reps, cfg);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

static int parse_kv(opts *o, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq) {
        return -1;
    }
    const size_t klen = (size_t)(eq - kv);
    const char *v = eq + 1;
    if (klen == 7 && !strncmp(kv, "threads", klen)) {
        o->threads = atoi(v);
    } else if (klen == 9 && !strncmp(kv, "precision", klen)) {
        o->precision = atoi(v);
    } else if (klen == 4 && !strncmp(kv, "gemm", klen)) {
        o->gemm = atoi(v);
    } else if (klen == 6 && !strncmp(kv, "epochs", klen)) {
        o->epochs = atoi(v);
    } else if (klen == 9 && !strncmp(kv, "optimizer", klen)) {
        o->optimizer = atoi(v);
    } else if (klen == 2 && !strncmp(kv, "lr", klen)) {
        o->lr = atof(v);
    } else if (klen == 5 && !strncmp(kv, "batch", klen)) {
        o->batch = atoi(v);
    } else if (klen == 5 && !strncmp(kv, "calls", klen)) {
        o->calls = atol(v);
    } else if (klen == 4 && !strncmp(kv, "seed", klen)) {
        o->seed = atoi(v);
    } else if (klen == 9 && !strncmp(kv, "contender", klen)) {
        o->contender = v;
    } else if (klen == 5 && !strncmp(kv, "train", klen)) {
        o->train_file = v;
    } else if (klen == 4 && !strncmp(kv, "test", klen)) {
        o->test_file = v;
    } else if (klen == 5 && !strncmp(kv, "ngram", klen)) {
        o->ngram = atoi(v);
    } else if (klen == 7 && !strncmp(kv, "buckets", klen)) {
        o->buckets_log2 = atoi(v);
    } else if (klen == 6 && !strncmp(kv, "minlen", klen)) {
        o->min_len = atoi(v);
    } else if (klen == 4 && !strncmp(kv, "loss", klen)) {
        o->loss = atoi(v);
    } else if (klen == 7 && !strncmp(kv, "average", klen)) {
        o->average = atoi(v);
    } else if (klen == 5 && !strncmp(kv, "punct", klen)) {
        o->punct = atoi(v);
    } else if (klen == 9 && !strncmp(kv, "sublinear", klen)) {
        o->sublinear = atoi(v);
    } else {
        return -1;
    }
    return 0;
}

/* Goal defaults: the hyper-parameters of the PyTorch peer. */
static void goal_defaults(opts *o)
{
    o->epochs = 5;
    o->batch = 128;
    o->optimizer = 0;
    o->lr = 0.1;
    o->train_file = "train.tsv";
    o->test_file = "test.tsv";
    o->ngram = 2;
    o->buckets_log2 = 18;
    o->min_len = 1;
    o->loss = 3;
    o->average = 0;
    o->sublinear = 1;
    o->punct = 1;
    if (!strcmp(o->goal, "P1adam")) {
        o->optimizer = 1;
        o->lr = 1e-3;
    } else if (!strcmp(o->goal, "P3")) {
        /* See the top comment: linear TEXT model, hinge loss, per-document
         * SGD (batch does not apply to TEXT), lr decaying linearly to 0. */
        o->epochs = 10;
        o->batch = 16;
        o->lr = 0.2;
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DATA_DIR GOAL REPS [key=value ...]\n", argv[0]);
        return 2;
    }
    opts o = {.data_dir = argv[1], .goal = argv[2], .contender = "libaims", .threads = 2,
              .calls = 20000, .seed = 1};
    o.reps = atoi(argv[3]);
    goal_defaults(&o);
    for (int i = 4; i < argc; i++) {
        if (parse_kv(&o, argv[i]) != 0) {
            fprintf(stderr, "bench_train: bad option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (o.reps < 1 || o.reps > MAX_REPS || o.calls < 1 || o.calls > MAX_CALLS) {
        fprintf(stderr, "bench_train: REPS must be 1..%d, calls 1..%d\n", MAX_REPS, MAX_CALLS);
        return 2;
    }
    if (!strcmp(o.goal, "P3")) {
        return goal_p3(&o);
    }
    fmnist f = {0};
    aims_status st = load_fmnist(o.data_dir, &f);
    int rc = 1;
    if (st != AIMS_OK) {
        emit_error(&o, o.contender, "load", st, NULL);
    } else if (!strcmp(o.goal, "P1sgd") || !strcmp(o.goal, "P1adam")) {
        rc = goal_dense(&o, &f, 1);
    } else if (!strcmp(o.goal, "P2") || !strcmp(o.goal, "P2lbfgs")) {
        rc = goal_dense(&o, &f, 0);
    } else if (!strcmp(o.goal, "P4")) {
        rc = goal_p4(&o, &f);
    } else if (!strcmp(o.goal, "P5")) {
        rc = goal_p5(&o, &f);
    } else {
        fprintf(stderr, "bench_train: unknown goal '%s'\n", o.goal);
        rc = 2;
    }
    aims_dataset_destroy(f.train);
    aims_dataset_destroy(f.test);
    return rc;
}
