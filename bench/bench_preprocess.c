/*
 * bench_preprocess.c -- the libaims side of the preprocessing benchmark.
 *
 * usage: bench_preprocess DATA_DIR OUT_DIR [REPS [GOALS]]
 *   DATA_DIR  what bench/prepare_data.py wrote (fashion-mnist/, fortunes/)
 *   OUT_DIR   where the outputs for the equality check go
 *   REPS      timed repetitions per goal (default 5)
 *   GOALS     comma list out of D1,D2,D3a,D3b (default all)
 *
 * How. Every goal is one operation wrapped as `op(ctx)` that creates its result
 * and destroys the previous one, so each timed call pays for allocating the new
 * output and freeing the old one -- exactly what the Python peer pays when it
 * rebinds `result = fn()`. One untimed warm-up call first (page cache, lazy
 * symbol binding, allocator growth), on both sides. The result left after the
 * last repetition is what gets dumped and checksummed.
 *
 *   D1  aims_pipeline_create + STANDARDIZE + fit_transform on Fashion-MNIST
 *       train (60000x784 float32), plus destroying pipeline and output.
 *   D2  create + NORMALIZE + TOKENIZE + HASH(2^18) + TFIDF(l2) + fit_transform on
 *       the fortunes training split. NORMALIZE is there because scikit-learn's
 *       HashingVectorizer lower-cases by default (lowercase=True).
 *   D3a aims_dataset_load_idx(train images, train labels).
 *   D3b aims_dataset_load_file(CSV, train.csv) with LABEL_COLUMN=0, HEADER=1.
 *
 * Each measurement is one JSON line on stdout (bench/run.py reads them); the
 * "check" object holds checksums that are exact for the integer-valued D3 data,
 * computed the same way as the peer script does. A goal that fails prints a
 * line with "error" and the run goes on with the next goal.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aims/aims.h>

#include "bench_util.h"

#define SAMPLE_ROWS 100
#define MAX_REPS 1000

typedef aims_status (*bench_op)(void *ctx);

typedef struct bench_paths {
    char idx_images[4096];
    char idx_labels[4096];
    char csv[4096];
    char tsv[4096];
    const char *out_dir;
} bench_paths;

/* D1 / D2: a pipeline applied to a preloaded input dataset. */
typedef struct pipe_ctx {
    const aims_dataset *in;
    aims_dataset *out;
} pipe_ctx;

/* D3a / D3b: a loader. */
typedef struct load_ctx {
    const bench_paths *paths;
    const aims_loadopts *opts;
    aims_dataset *out;
} load_ctx;

static void json_env(void)
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
    printf("\"aims_version\": ");
    json_str(aims_version_string());
    printf(", \"aims_build_info\": ");
    json_str(aims_build_info());
    printf(", \"pipeline_threads\": 1}");
}

static void emit_error(const char *goal, const char *metric, aims_status st)
{
    printf("{\"goal\": \"%s\", \"contender\": \"libaims\", \"metric\": \"%s\", \"error\": ",
           goal, metric);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s: %s", aims_strerror(st), aims_errmsg());
    json_str(buf);
    printf(", ");
    json_env();
    printf("}\n");
    fflush(stdout);
}

/* Runs op once untimed, then reps timed; times[] receives seconds. */
static aims_status time_op(bench_op op, void *ctx, int reps, double *times)
{
    aims_status st = op(ctx);
    for (int i = 0; st == AIMS_OK && i < reps; i++) {
        const double t0 = now_s();
        st = op(ctx);
        times[i] = now_s() - t0;
    }
    return st;
}

static void emit_times(const char *goal, const char *metric, const double *t, int reps,
                       const char *check_json)
{
    double lo = t[0];
    double hi = t[0];
    double sorted[MAX_REPS];
    memcpy(sorted, t, (size_t)reps * sizeof *t);
    printf("{\"goal\": \"%s\", \"contender\": \"libaims\", \"metric\": \"%s\", \"unit\": \"s\", "
           "\"samples\": [",
           goal, metric);
    for (int i = 0; i < reps; i++) {
        printf("%s%.9f", i ? ", " : "", t[i]);
        lo = t[i] < lo ? t[i] : lo;
        hi = t[i] > hi ? t[i] : hi;
    }
    printf("], \"median\": %.9f, \"min\": %.9f, \"max\": %.9f, \"n\": %d, \"check\": %s, ",
           median_sort(sorted, (size_t)reps), lo, hi, reps, check_json);
    json_env();
    printf("}\n");
    fflush(stdout);
}

/* First and last SAMPLE_ROWS rows of the dense part, float32 native order. */
static int dump_rows(const char *dir, const char *name, const aims_dataset *ds)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const size_t rows = aims_dataset_rows(ds);
    const size_t cols = aims_dataset_cols(ds);
    const float *x = aims_dataset_features(ds);
    if (!x || rows < SAMPLE_ROWS) {
        fprintf(stderr, "bench: %s: dataset has no dense part or too few rows\n", name);
        return -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    const size_t n = SAMPLE_ROWS * cols;
    size_t w = fwrite(x, sizeof *x, n, f);
    w += fwrite(x + (rows - SAMPLE_ROWS) * cols, sizeof *x, n, f);
    const int bad = fclose(f) != 0 || w != 2 * n;
    if (bad) {
        fprintf(stderr, "bench: %s: write failed\n", path);
    }
    return bad ? -1 : 0;
}

/* Exact (integer-valued data) checksums, the same formulas as the peer script. */
static void dense_checks(const aims_dataset *ds, char *buf, size_t cap)
{
    const size_t rows = aims_dataset_rows(ds);
    const size_t cols = aims_dataset_cols(ds);
    const float *x = aims_dataset_features(ds);
    const int32_t *y = aims_dataset_labels(ds);
    double sum = 0.0;
    double rowsum_w = 0.0;
    double colsum_w = 0.0;
    long long labels_sum = 0;
    long long labels_w = 0;
    for (size_t i = 0; x && i < rows; i++) {
        double rs = 0.0;
        for (size_t j = 0; j < cols; j++) {
            const double v = x[i * cols + j];
            rs += v;
            colsum_w += (double)j * v;
        }
        sum += rs;
        rowsum_w += (double)(i % 1000) * rs;
        if (y) {
            labels_sum += y[i];
            labels_w += (long long)(i % 1000) * y[i];
        }
    }
    snprintf(buf, cap,
             "{\"rows\": %zu, \"cols\": %zu, \"sum\": %.1f, \"rowsum_w\": %.1f, "
             "\"colsum_w\": %.1f, \"labels_sum\": %lld, \"labels_w\": %lld}",
             rows, cols, sum, rowsum_w, colsum_w, labels_sum, labels_w);
}

/* ------------------------------------------------------------------------ */
/* D1                                                                         */

static aims_status op_standardize(void *vctx)
{
    pipe_ctx *ctx = vctx;
    aims_pipeline *p = NULL;
    aims_dataset *out = NULL;
    aims_status st = aims_pipeline_create(&p);
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_fit_transform(p, ctx->in, &out);
    }
    aims_pipeline_destroy(p);
    aims_dataset_destroy(ctx->out);
    ctx->out = out;
    return st;
}

static int goal_d1(const bench_paths *paths, int reps)
{
    aims_dataset *x = NULL;
    double t[MAX_REPS];
    aims_status st = aims_dataset_load_idx(paths->idx_images, paths->idx_labels, NULL, &x);
    pipe_ctx ctx = {x, NULL};
    if (st == AIMS_OK) {
        st = time_op(op_standardize, &ctx, reps, t);
    }
    int rc = 0;
    if (st != AIMS_OK) {
        emit_error("D1", "fit_transform_s", st);
        rc = 1;
    } else {
        const size_t n = aims_dataset_rows(ctx.out) * aims_dataset_cols(ctx.out);
        const float *z = aims_dataset_features(ctx.out);
        double sum_sq = 0.0;
        for (size_t i = 0; z && i < n; i++) {
            sum_sq += (double)z[i] * z[i];
        }
        char chk[256];
        snprintf(chk, sizeof chk, "{\"rows\": %zu, \"cols\": %zu, \"sum_sq\": %.6f}",
                 aims_dataset_rows(ctx.out), aims_dataset_cols(ctx.out), sum_sq);
        rc = dump_rows(paths->out_dir, "D1_libaims.f32", ctx.out);
        emit_times("D1", "fit_transform_s", t, reps, chk);
    }
    aims_dataset_destroy(ctx.out);
    aims_dataset_destroy(x);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* D2                                                                         */

static aims_status add_text_steps(aims_pipeline *p)
{
    size_t hash = 0;
    size_t tfidf = 0;
    aims_status st = aims_pipeline_add(p, AIMS_STEP_KIND_NORMALIZE, NULL);
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &hash);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_set_step_param_i64(p, hash, AIMS_STEP_BUCKETS, INT64_C(1) << 18);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_TFIDF, &tfidf);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_set_step_param_i64(p, tfidf, AIMS_STEP_NORM, 2);
    }
    return st;
}

static aims_status op_tfidf(void *vctx)
{
    pipe_ctx *ctx = vctx;
    aims_pipeline *p = NULL;
    aims_dataset *out = NULL;
    aims_status st = aims_pipeline_create(&p);
    if (st == AIMS_OK) {
        st = add_text_steps(p);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_fit_transform(p, ctx->in, &out);
    }
    aims_pipeline_destroy(p);
    aims_dataset_destroy(ctx->out);
    ctx->out = out;
    return st;
}

/* The whole CSR matrix: u64 rows, dim, nnz; offsets (from 0); ids; weights. */
static int dump_csr(const char *dir, const aims_dataset *ds, char *chk, size_t cap)
{
    const uint64_t *off = NULL;
    const uint32_t *ids = NULL;
    const float *w = NULL;
    if (aims_dataset_tokens(ds, &off, &ids, &w) != AIMS_OK || !w) {
        fprintf(stderr, "bench: D2 output has no weighted token part\n");
        return -1;
    }
    const uint64_t rows = aims_dataset_rows(ds);
    const uint64_t dim = aims_dataset_token_dim(ds);
    const uint64_t nnz = off[rows] - off[0];
    snprintf(chk, cap, "{\"rows\": %llu, \"cols\": %llu, \"nnz\": %llu}",
             (unsigned long long)rows, (unsigned long long)dim, (unsigned long long)nnz);
    char path[4096];
    snprintf(path, sizeof path, "%s/D2_libaims.csr", dir);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    const uint64_t head[3] = {rows, dim, nnz};
    int bad = fwrite(head, sizeof head, 1, f) != 1;
    for (uint64_t i = 0; i <= rows && !bad; i++) {
        const uint64_t o = off[i] - off[0];
        bad = fwrite(&o, sizeof o, 1, f) != 1;
    }
    if (!bad && nnz) {
        bad = fwrite(ids + off[0], sizeof *ids, nnz, f) != nnz ||
              fwrite(w + off[0], sizeof *w, nnz, f) != nnz;
    }
    bad |= fclose(f) != 0;
    if (bad) {
        fprintf(stderr, "bench: %s: write failed\n", path);
    }
    return bad ? -1 : 0;
}

static int goal_d2(const bench_paths *paths, int reps)
{
    aims_dataset *docs = NULL;
    double t[MAX_REPS];
    aims_status st = aims_dataset_load_file(AIMS_FORMAT_TEXT, paths->tsv, NULL, &docs);
    pipe_ctx ctx = {docs, NULL};
    if (st == AIMS_OK) {
        st = time_op(op_tfidf, &ctx, reps, t);
    }
    int rc = 0;
    if (st != AIMS_OK) {
        emit_error("D2", "fit_transform_s", st);
        rc = 1;
    } else {
        char chk[256] = "{}";
        rc = dump_csr(paths->out_dir, ctx.out, chk, sizeof chk);
        emit_times("D2", "fit_transform_s", t, reps, chk);
    }
    aims_dataset_destroy(ctx.out);
    aims_dataset_destroy(docs);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* D3                                                                         */

static aims_status op_load_idx(void *vctx)
{
    load_ctx *ctx = vctx;
    aims_dataset *out = NULL;
    const aims_status st = aims_dataset_load_idx(ctx->paths->idx_images, ctx->paths->idx_labels,
                                                 ctx->opts, &out);
    aims_dataset_destroy(ctx->out);
    ctx->out = out;
    return st;
}

static aims_status op_load_csv(void *vctx)
{
    load_ctx *ctx = vctx;
    aims_dataset *out = NULL;
    const aims_status st = aims_dataset_load_file(AIMS_FORMAT_CSV, ctx->paths->csv, ctx->opts,
                                                  &out);
    aims_dataset_destroy(ctx->out);
    ctx->out = out;
    return st;
}

static int goal_load(const bench_paths *paths, int reps, const char *goal, const char *metric,
                     bench_op op, const aims_loadopts *opts)
{
    double t[MAX_REPS];
    load_ctx ctx = {paths, opts, NULL};
    const aims_status st = time_op(op, &ctx, reps, t);
    int rc = 0;
    if (st != AIMS_OK) {
        emit_error(goal, metric, st);
        rc = 1;
    } else {
        char chk[512];
        char name[64];
        dense_checks(ctx.out, chk, sizeof chk);
        snprintf(name, sizeof name, "%s_libaims.f32", goal);
        rc = dump_rows(paths->out_dir, name, ctx.out);
        emit_times(goal, metric, t, reps, chk);
    }
    aims_dataset_destroy(ctx.out);
    return rc;
}

static int goal_d3b(const bench_paths *paths, int reps)
{
    aims_loadopts *opts = NULL;
    aims_status st = aims_loadopts_create(&opts);
    if (st == AIMS_OK) {
        st = aims_loadopts_set_param_i64(opts, AIMS_LOAD_LABEL_COLUMN, 0);
    }
    if (st == AIMS_OK) {
        st = aims_loadopts_set_param_i64(opts, AIMS_LOAD_HEADER, 1);
    }
    int rc = 1;
    if (st != AIMS_OK) {
        emit_error("D3b", "csv_load_s", st);
    } else {
        rc = goal_load(paths, reps, "D3b", "csv_load_s", op_load_csv, opts);
    }
    aims_loadopts_destroy(opts);
    return rc;
}

/* ------------------------------------------------------------------------ */

static int wanted(const char *goals, const char *goal)
{
    const size_t n = strlen(goal);
    for (const char *p = goals; *p;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, goal, n) == 0) {
            return 1;
        }
        p += len + (comma != NULL);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s DATA_DIR OUT_DIR [REPS [GOALS]]\n", argv[0]);
        return 2;
    }
    const int reps = argc > 3 ? atoi(argv[3]) : 5;
    const char *goals = argc > 4 ? argv[4] : "D1,D2,D3a,D3b";
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench: REPS must be in 1..%d\n", MAX_REPS);
        return 2;
    }
    bench_paths paths;
    const char *d = argv[1];
    snprintf(paths.idx_images, sizeof paths.idx_images, "%s/fashion-mnist/train-images-idx3-ubyte",
             d);
    snprintf(paths.idx_labels, sizeof paths.idx_labels, "%s/fashion-mnist/train-labels-idx1-ubyte",
             d);
    snprintf(paths.csv, sizeof paths.csv, "%s/fashion-mnist/train.csv", d);
    snprintf(paths.tsv, sizeof paths.tsv, "%s/fortunes/train-ascii.tsv", d);
    paths.out_dir = argv[2];

    int failed = 0;
    if (wanted(goals, "D1")) {
        failed += goal_d1(&paths, reps);
    }
    if (wanted(goals, "D2")) {
        failed += goal_d2(&paths, reps);
    }
    if (wanted(goals, "D3a")) {
        failed += goal_load(&paths, reps, "D3a", "idx_load_s", op_load_idx, NULL);
    }
    if (wanted(goals, "D3b")) {
        failed += goal_d3b(&paths, reps);
    }
    return failed ? 1 : 0;
}
