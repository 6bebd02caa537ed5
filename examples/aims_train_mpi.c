/*
 * aims_train_mpi.c -- data-parallel training of a Fashion-MNIST MLP over MPI
 * ranks (aims_dist.h, docs/MPI.md), and its one-process reference.
 *
 *   mpirun -np 2 aims_train_mpi DATA_DIR --mpi [options]      S ranks, one shard each
 *   aims_train_mpi DATA_DIR --shards 2 [options]              one process, same bits
 *   aims_train_mpi DATA_DIR [options]                         the ordinary trainer
 *
 * Options: --rows N (first N training rows, default all 60000), --epochs E (2),
 * --batch B (128), --hidden H (256; 0 = softmax regression), --threads T
 * (AIMS_TRAIN_THREADS, 1), --opt sgd|nesterov|adam|adamw (sgd), --lr X,
 * --dropout P (0), --val F (held-out fraction, 0), --seed N (1), --out FILE
 * (rank 0 saves the model), --bundle FILE (rank 0 saves pipeline + model),
 * --test N (rank 0 reports accuracy on the first N test images, 0 = skip).
 *
 * Every rank loads the same rows and trains the same spec; the epoch's order
 * is a function of the seed, so rank r knows its rows of every batch without
 * being sent them. Every rank ends with the same weights; rank 0 writes the
 * files and prints one JSON line: seconds per epoch, loss, test accuracy.
 * All libaims memory goes through a counting allocator that must balance.
 *
 * Exit codes: 0 ok, 1 failure, 2 usage, 77 Fashion-MNIST missing or (with
 * --mpi) libaims built without MPI.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aims/aims.h>

#define TRY(call)                                                                              \
    do {                                                                                       \
        const aims_status rc_ = (call);                                                        \
        if (rc_ != AIMS_OK) {                                                                  \
            fprintf(stderr, "aims_train_mpi[%d]: %s: %s\n", g_rank, #call, aims_errmsg());     \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

enum { MAX_EPOCHS = 256 };

static int g_rank;
static atomic_long g_live; /* blocks libaims holds through the counting allocator */

static void *count_malloc(void *user, size_t n)
{
    (void)user;
    void *p = malloc(n > 0 ? n : 1);
    if (p != NULL) {
        atomic_fetch_add(&g_live, 1);
    }
    return p;
}

static void *count_realloc(void *user, void *p, size_t n)
{
    (void)user;
    void *q = realloc(p, n > 0 ? n : 1);
    if (q != NULL && p == NULL) {
        atomic_fetch_add(&g_live, 1);
    }
    return q;
}

static void count_free(void *user, void *p)
{
    (void)user;
    if (p != NULL) {
        atomic_fetch_sub(&g_live, 1);
        free(p);
    }
}

typedef struct opts {
    const char *data, *out, *bundle, *opt;
    long rows, epochs, batch, hidden, threads, seed, test, shards;
    double lr, dropout, val;
    int mpi;
} opts;

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 2;
    o->batch = 128;
    o->hidden = 256;
    o->threads = 1;
    o->seed = 1;
    o->shards = 1;
    o->opt = "sgd";
    o->lr = -1.0;
    if (argc < 2 || argv[1][0] == '-') {
        return -1;
    }
    o->data = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--mpi") == 0) {
            o->mpi = 1;
            continue;
        }
        if (v == NULL) {
            return -1;
        }
        i++;
        if (strcmp(a, "--rows") == 0) {
            o->rows = atol(v);
        } else if (strcmp(a, "--epochs") == 0) {
            o->epochs = atol(v);
        } else if (strcmp(a, "--batch") == 0) {
            o->batch = atol(v);
        } else if (strcmp(a, "--hidden") == 0) {
            o->hidden = atol(v);
        } else if (strcmp(a, "--threads") == 0) {
            o->threads = atol(v);
        } else if (strcmp(a, "--seed") == 0) {
            o->seed = atol(v);
        } else if (strcmp(a, "--test") == 0) {
            o->test = atol(v);
        } else if (strcmp(a, "--shards") == 0) {
            o->shards = atol(v);
        } else if (strcmp(a, "--lr") == 0) {
            o->lr = atof(v);
        } else if (strcmp(a, "--dropout") == 0) {
            o->dropout = atof(v);
        } else if (strcmp(a, "--val") == 0) {
            o->val = atof(v);
        } else if (strcmp(a, "--opt") == 0) {
            o->opt = v;
        } else if (strcmp(a, "--out") == 0) {
            o->out = v;
        } else if (strcmp(a, "--bundle") == 0) {
            o->bundle = v;
        } else {
            return -1;
        }
    }
    return o->epochs >= 1 && o->epochs <= MAX_EPOCHS && o->batch >= 1 && o->shards >= 1 ? 0
                                                                                          : -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int set_optimizer(aims_trainer *t, const opts *o)
{
    int64_t kind = 0;
    if (strcmp(o->opt, "nesterov") == 0) {
        TRY(aims_trainer_set_param_i64(t, AIMS_TRAIN_NESTEROV, 1));
    } else if (strcmp(o->opt, "adam") == 0) {
        kind = 1;
    } else if (strcmp(o->opt, "adamw") == 0) {
        kind = 2;
        TRY(aims_trainer_set_param_f64(t, AIMS_TRAIN_WEIGHT_DECAY, 0.01));
    } else if (strcmp(o->opt, "sgd") != 0) {
        fprintf(stderr, "aims_train_mpi: unknown optimizer %s\n", o->opt);
        return 1;
    }
    TRY(aims_trainer_set_param_i64(t, AIMS_TRAIN_OPTIMIZER, kind));
    if (o->lr > 0.0) {
        TRY(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, o->lr));
    } else if (kind != 0) {
        TRY(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, 0.001));
    }
    return 0;
}

/* Rank 0's JSON line. */
static void report(const opts *o, int ranks, const double *secs, long epochs, double loss,
                   double acc)
{
    printf("{\"bench\":\"mpi\",\"mode\":\"%s\",\"ranks\":%d,\"shards\":%ld,\"threads\":%ld,"
           "\"openblas_threads\":\"%s\",\"rows\":%ld,\"batch\":%ld,\"hidden\":%ld,\"opt\":\"%s\","
           "\"epochs\":%ld,\"epoch_s\":[",
           o->mpi ? "mpi" : (o->shards > 1 ? "shards" : "plain"), ranks,
           o->mpi ? (long)ranks : o->shards, o->threads,
           getenv("OPENBLAS_NUM_THREADS") != NULL ? getenv("OPENBLAS_NUM_THREADS") : "",
           o->rows, o->batch, o->hidden, o->opt, epochs);
    for (long e = 0; e < epochs; e++) {
        printf("%s%.4f", e > 0 ? "," : "", secs[e]);
    }
    printf("],\"train_loss\":%.6f,\"test_accuracy\":%.4f}\n", loss, acc);
    fflush(stdout);
}

static int train(const opts *o, int rank, int ranks)
{
    char img[1024], lab[1024];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", o->data);
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", o->data);
    aims_dataset *all, *sub, *x, *test = NULL, *test_x = NULL;
    aims_pipeline *p;
    aims_model *m;
    aims_trainer *t;
    const aims_status st = aims_dataset_load_idx(img, lab, NULL, &all);
    if (st == AIMS_E_NOTFOUND) {
        fprintf(stderr, "aims_train_mpi: %s; run `make data` first\n", aims_errmsg());
        return 77;
    }
    TRY(st);
    const size_t rows = o->rows > 0 && (size_t)o->rows < aims_dataset_rows(all)
                            ? (size_t)o->rows
                            : aims_dataset_rows(all);
    TRY(aims_dataset_view(all, 0, rows, &sub));
    TRY(aims_pipeline_create(&p));
    TRY(aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL)); /* x / 255 */
    TRY(aims_pipeline_fit_transform(p, sub, &x));

    TRY(aims_model_create(o->hidden > 0 ? AIMS_MODEL_KIND_MLP : AIMS_MODEL_KIND_SOFTMAX,
                          aims_dataset_cols(x), 10, &m));
    if (o->hidden > 0) {
        TRY(aims_model_add_dense(m, (size_t)o->hidden, AIMS_ACT_RELU));
    }
    if (o->dropout > 0.0) {
        TRY(aims_model_set_param_f64(m, AIMS_MODEL_DROPOUT, o->dropout));
    }
    TRY(aims_trainer_create(m, &t));
    TRY(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, o->epochs));
    TRY(aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, o->batch));
    TRY(aims_trainer_set_param_i64(t, AIMS_TRAIN_SEED, o->seed));
    TRY(aims_trainer_set_param_i64(t, AIMS_TRAIN_THREADS, o->threads));
    TRY(aims_trainer_set_param_f64(t, AIMS_TRAIN_VAL_FRACTION, o->val));
    if (set_optimizer(t, o) != 0) {
        return 1;
    }
    if (o->mpi) {
        TRY(aims_trainer_set_mpi(t, 1));
    } else {
        TRY(aims_trainer_set_shards(t, (int)o->shards));
    }

    double secs[MAX_EPOCHS];
    long epochs = 0;
    int done = 0;
    TRY(aims_trainer_begin(t, x, NULL));
    while (!done && epochs < MAX_EPOCHS) {
        const double t0 = now_s();
        TRY(aims_trainer_epoch(t, &done));
        secs[epochs++] = now_s() - t0;
    }
    double loss = 0.0;
    double acc = -1.0;
    TRY(aims_trainer_get_stat(t, AIMS_TRAINER_STAT_TRAIN_LOSS, &loss));
    if (rank == 0) {
        if (o->test > 0) {
            char timg[1024], tlab[1024];
            snprintf(timg, sizeof timg, "%s/fashion-mnist/t10k-images-idx3-ubyte", o->data);
            snprintf(tlab, sizeof tlab, "%s/fashion-mnist/t10k-labels-idx1-ubyte", o->data);
            aims_dataset *tv;
            aims_eval *ev;
            TRY(aims_dataset_load_idx(timg, tlab, NULL, &test));
            const size_t n = (size_t)o->test < aims_dataset_rows(test) ? (size_t)o->test
                                                                        : aims_dataset_rows(test);
            TRY(aims_dataset_view(test, 0, n, &tv));
            TRY(aims_pipeline_transform(p, tv, &test_x));
            aims_dataset_destroy(tv);
            TRY(aims_model_evaluate(m, test_x, &ev));
            TRY(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc));
            aims_eval_destroy(ev);
        }
        if (o->out != NULL) {
            TRY(aims_model_save(m, o->out));
        }
        if (o->bundle != NULL) {
            aims_bundle *b;
            TRY(aims_bundle_create(p, m, &b));
            TRY(aims_bundle_set_meta(b, "name", "fmnist-mlp"));
            TRY(aims_bundle_save(b, o->bundle));
            aims_bundle_destroy(b);
        }
        report(o, ranks, secs, epochs, loss, acc);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(test_x);
    aims_dataset_destroy(test);
    aims_dataset_destroy(x);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(sub);
    aims_dataset_destroy(all);
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: aims_train_mpi DATA_DIR [--mpi | --shards S] [--rows N] "
                        "[--epochs E] [--batch B] [--hidden H] [--threads T] [--opt sgd|nesterov|"
                        "adam|adamw] [--lr X] [--dropout P] [--val F] [--seed N] [--test N] "
                        "[--out FILE] [--bundle FILE]\n");
        return 2;
    }
    if (aims_set_allocator(count_malloc, count_realloc, count_free, NULL) != AIMS_OK) {
        fprintf(stderr, "aims_train_mpi: aims_set_allocator: %s\n", aims_errmsg());
        return 1;
    }
    int rank = 0;
    int ranks = 1;
    if (o.mpi) {
        const aims_status st = aims_init_mpi(&rank, &ranks);
        if (st == AIMS_E_UNSUPPORTED) {
            fprintf(stderr, "aims_train_mpi: %s\n", aims_errmsg());
            return 77;
        }
        if (st != AIMS_OK) {
            fprintf(stderr, "aims_train_mpi: aims_init_mpi: %s\n", aims_errmsg());
            return 1;
        }
        g_rank = rank;
    }
    int rc = train(&o, rank, ranks);
    if (o.mpi && aims_finalize_mpi() != AIMS_OK) {
        fprintf(stderr, "aims_train_mpi[%d]: aims_finalize_mpi: %s\n", rank, aims_errmsg());
        rc = rc != 0 ? rc : 1;
    }
    const long live = atomic_load(&g_live);
    if (rc == 0 && (live != 0 || aims_alloc_live() != 0)) {
        fprintf(stderr, "aims_train_mpi[%d]: allocator not balanced: %ld blocks live "
                        "(aims_alloc_live %zu)\n",
                rank, live, aims_alloc_live());
        rc = 1;
    }
    return rc;
}
