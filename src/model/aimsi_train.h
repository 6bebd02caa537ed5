/*
 * aimsi_train.h -- the trainer's layout, shared by the trainer's files:
 * train.c (parameters, runs, validation, statistics), train_dense.c (batch
 * forward/backward), train_opt.c (optimizer update), train_text.c (TEXT
 * trainer) and train_ckpt.c (checkpoint/restore). Private to src/model.
 */
#ifndef AIMSI_TRAIN_H
#define AIMSI_TRAIN_H

#include <stdatomic.h>

#include "aimsi_model.h"

#define TRAINER_OK(t) aimsi_obj_ok((t), AIMSI_MAGIC_TRAINER)

enum { OPT_SGD = 0, OPT_ADAM = 1, OPT_ADAMW = 2 };
enum { SCHED_CONST = 0, SCHED_STEP = 1, SCHED_COSINE = 2 };

typedef struct hyper {
    int64_t opt, nesterov, sched, warmup, step_epochs, batch, epochs, seed, threads, patience,
        metric, warm, gemm, avg;
    double lr, mom, b1, b2, eps, wd, gamma, val_frac, min_delta;
} hyper;

struct aims_trainer {
    aimsi_obj obj;
    aims_model *m;
    hyper h;
    aims_progress_fn fn;
    void *user;
    atomic_int cancel;

    /* the run */
    int running, done;
    int diverged; /* the loss of a step was not finite: the run stopped there */
    const aims_dataset *train, *val;
    size_t *tr_idx, n_tr; /* training rows of `train` */
    size_t *va_idx, n_va; /* held-out rows of `train` (internal split) */
    size_t *perm;         /* n_tr: this epoch's order (indices into tr_idx) */
    int64_t epoch, step, pos, steps_per_epoch;
    size_t bmax; /* rows per batch */

    /* workspace: one block */
    float *ws;
    float *xb;                      /* bmax x in */
    float *act[AIMSI_MAX_LAYERS];   /* bmax x out: layer outputs (last: logits -> G) */
    float *pre[AIMSI_MAX_LAYERS];   /* bmax x out: pre-activations (GELU only) */
    uint8_t *mask[AIMSI_MAX_LAYERS]; /* bmax x out: dropout keep flags */
    float *g[2];                    /* bmax x widest: gradients wrt layer outputs */
    float *grad, *v1, *v2, *best;   /* n_params each (v2: Adam; best: early stopping) */
    int32_t *yb;
    float *tb;
    uint8_t *mask_block;
    float *th, *tdh, *tz; /* TEXT: hidden, its gradient, logits */
    float *tavg;          /* TEXT, average > 0: n_params, sum of (steps so far) x update */
    int64_t avg_from;     /* TEXT: first step averaged */
    int64_t avg_n;        /* TEXT: steps averaged so far */
    void *gws;            /* own GEMMs: packed operands (NULL: OpenBLAS) */
    aimsi_pool *pool;     /* own GEMMs: train_threads compute threads */
    int gprec;            /* own GEMMs: AIMSI_GEMM_F32 or AIMSI_GEMM_BF16 */
    /* bf16 own GEMMs (train_dense.c): the batch rounded to bf16 by the gather */
    uint32_t *xb16; /* bmax x x16_ks slots (instead of xb); NULL: gather fp32 */
    size_t x16_ks;  /* slots per row: (input_dim + 1) / 2 */
    uint32_t *xp16; /* (bmax + 1) / 2 pair rows of input_dim slots (with xb16) */
    void *x16_blk;  /* the allocation holding both */
    /* the next batch, gathered by the pool while the caller runs the layers
     * above the first (train_dense.c); NULL: gathered at the start of a step */
    struct aimsi_next *nx;
    struct aimsi_smax *smax; /* softmax regression's own step (train_smax.c); NULL: none */
    /* each layer's W^T in the forward GEMM's panels, written by the fused
     * update (train_dense.c, "the forward's panels"); NULL: packed per step */
    uint32_t *wpk[AIMSI_MAX_LAYERS];
    int wpk_ok[AIMSI_MAX_LAYERS]; /* wpk[l] holds the weights as they are now */
    void *wpk_blk;

    /* statistics */
    double loss_sum;
    size_t loss_rows;
    double train_loss, val_loss, val_acc, sps, best_metric;
    int64_t best_epoch, bad_epochs;
    uint64_t epoch_t0;
    double epoch_secs;

    /* data parallel (train_shard.c, aims_dist.h): every batch cut into shards */
    int64_t shards;          /* 0 or 1: the ordinary trainer */
    struct aimsi_dist *dist; /* owned; NULL: this process computes every shard */
    size_t norm_rows;        /* loss gradient normalized by this many rows (0: the batch's) */
    uint64_t shard_salt;     /* 1 + shard being computed (0: none): salts dropout masks */
    unsigned char *sbuf;     /* shards x sblk bytes: each shard's loss, stop word, gradient */
    size_t sblk;
    int dist_stopped;        /* a stop crossed the exchange: no more exchanges this run */
};

typedef struct opt_step {
    float lr, mom, wd, b1, b2, eps, c1, c2; /* c1, c2: Adam bias corrections */
} opt_step;

/* ---- train.c ---- */

/* Seed of one random stream: a pure function of (seed, salt). */
uint64_t aimsi_train_mix_seed(uint64_t seed, uint64_t salt);
/* The epoch's row order: a Fisher-Yates shuffle seeded from seed + epoch. */
void aimsi_train_make_perm(aims_trainer *t, int64_t epoch);

/* ---- train_dense.c: one mini-batch step of a dense model ---- */

/* The bf16 batch (xb16), when the run trains the first layer in the own
 * bf16 GEMMs; silently none when it does not apply or the memory is not
 * there. _end frees it (end_run). */
void aimsi_train_x16_begin(aims_trainer *t);
void aimsi_train_x16_end(aims_trainer *t);
/* Use the bf16 batch when it applies (1, the default) or never (0); returns
 * the previous setting. Process-wide; for tests (the same bits either way). */
int aimsi_train_x16_force(int on);
/* The forward's panels of the weights (wpk), when the run trains in the own
 * GEMMs with a fused update; silently none when it does not apply or the
 * memory is not there. _end frees them (end_run); _stale forgets their
 * contents (call it whenever the weights change outside a training step,
 * e.g. a checkpoint restore). */
void aimsi_train_wpk_begin(aims_trainer *t);
void aimsi_train_wpk_end(aims_trainer *t);
void aimsi_train_wpk_stale(aims_trainer *t);
/* Use the panels never (0), for bf16 GEMMs when they apply (1, the default)
 * or for fp32 GEMMs too (2); returns the previous setting. Process-wide; for
 * tests and benches (the same bits either way). */
int aimsi_train_wpk_force(int on);
/* Copy batch rows [first, first + n) of this epoch's order into xb/yb/tb
 * (the features rounded into xb16 instead when the bf16 batch is used). */
void aimsi_train_gather(aims_trainer *t, size_t first, size_t n);
/* The next batch gathered during a step (runs with a pool and two or more
 * layers; silently none without the memory). _begin after the workspace,
 * _end first thing in end_run (it waits for a running gather and gives the
 * trainer its own buffers back). */
void aimsi_train_next_begin(aims_trainer *t);
void aimsi_train_next_end(aims_trainer *t);
/* Wait for the next batch's gather if it runs (before any other pool job). */
void aimsi_train_next_join(aims_trainer *t);
/* t->pool, after joining the next batch's gather. */
aimsi_pool *aimsi_train_pool(aims_trainer *t);
/* Gather the next batch during a step (1, the default) or never (0); returns
 * the previous setting. Process-wide; for tests (the same bits either way). */
int aimsi_train_next_force(int on);
void aimsi_train_forward(aims_trainer *t, size_t n);
/* Loss gradient in place of the logits; returns the batch's summed loss. */
double aimsi_train_loss_grad(aims_trainer *t, size_t n);
/* Backward pass, updating each layer through train_opt.c (o == NULL: only the
 * gradients, into t->grad, for a data-parallel shard). */
void aimsi_train_backward(aims_trainer *t, size_t n, const opt_step *o);
/* Fuse bias/ReLU/ReLU-backward/SGD into the own GEMMs' epilogues (1, the
 * default) or run them as separate passes (0); returns the previous setting.
 * Process-wide; for tests only (the results are the same bits either way). */
int aimsi_train_fusion_force(int on);

/* ---- train_smax.c: softmax regression's own step ---- */

/* begin: switch the run to train_smax.c's step when the model is one dense
 * layer of 2..16 classes with softmax + cross-entropy, fp32 in the own
 * kernels, not sharded (silently not, also without memory); _end frees it. */
void aimsi_train_smax_begin(aims_trainer *t);
/* Whether this CPU (and build) can run the own step at all: the CPU half of
 * _begin's test, one place, also read by aims_build_info(). */
int aimsi_train_smax_cpu_ok(void);
void aimsi_train_smax_end(aims_trainer *t);
int aimsi_train_smax_on(const aims_trainer *t);
/* Batch rows [first, first + n) of this epoch's order: forward, loss and the
 * gradient; returns the batch's summed loss. No weight changes. */
double aimsi_train_smax_grad(aims_trainer *t, size_t first, size_t n);
/* The optimizer update from the gradient aimsi_train_smax_grad made. */
void aimsi_train_smax_apply(aims_trainer *t, const opt_step *o);
/* Use the path when it applies (1, the default) or never (0); returns the
 * previous setting. Process-wide; for tests. */
int aimsi_train_smax_force(int on);
/* The whole step in one pool run: gradient, the batch loss (returned; when
 * it is not finite nothing is written), and the update with o. */
double aimsi_train_smax_step(aims_trainer *t, size_t first, size_t n, const opt_step *o);
/* aimsi_train_smax_step in one pool run (1, the default) or as _grad then
 * _apply (0); returns the previous setting. Process-wide; for tests (the
 * same bits either way). */
int aimsi_train_smax_one_run_force(int on);
/* Read the features from a u8 copy when every one is k / d exactly (1) or
 * never (0, the default: see train_smax.c); returns the previous setting.
 * Process-wide; for tests and bench_smax (the same bits either way). _on:
 * this run reads the copy. */
int aimsi_train_smax_compact_force(int on);
int aimsi_train_smax_compact_on(const aims_trainer *t);
/* The group kernels this CPU runs ("avx512", "avx2"; NULL: none, the path
 * never applies). */
const char *aimsi_train_smax_isa(void);
/* Run the AVX2 kernels even where AVX-512 is there (1) or pick by CPU (0,
 * the default); returns the previous setting. Process-wide; for tests, so an
 * AVX-512 machine checks the AVX2 step too. Read at aimsi_train_smax_begin. */
int aimsi_train_smax_avx2_force(int on);

/* ---- train_opt.c: the optimizer update ---- */

void aimsi_train_update_range(const aims_trainer *t, const opt_step *o, size_t off,
                              size_t cnt);
void aimsi_train_update_params(const aims_trainer *t, const opt_step *o, size_t off,
                               size_t cnt);

/* ---- train_shard.c: data-parallel steps (aims_dist.h) ---- */

/* Non-zero when the run cuts batches into shards. */
int aimsi_train_sharded(const aims_trainer *t);
/* begin: check the model kind, allocate the shard blocks (end_run frees them). */
aims_status aimsi_train_shard_begin(aims_trainer *t);
void aimsi_train_shard_end(aims_trainer *t);
/* trainer destroy: release the exchange. */
void aimsi_train_shard_destroy(aims_trainer *t);
/* The batch [first, first + n) of this epoch's order: every shard's (or this
 * rank's) forward/backward, the exchange, and the shard-order sum into
 * t->grad; *out_loss gets the batch's summed loss. No weight changes.
 * stop != 0 (this rank was cancelled) rides the exchange in this rank's
 * block: when any rank's block says stop, every rank returns
 * AIMS_E_CANCELLED from the same step, nothing applied, and sets
 * dist_stopped (later steps of the run return it without an exchange). */
aims_status aimsi_train_shard_grad(aims_trainer *t, size_t first, size_t n, int stop,
                                   double *out_loss);
/* The optimizer update of every layer from t->grad. */
void aimsi_train_shard_apply(aims_trainer *t, const opt_step *o);

/* ---- train_text.c: the TEXT trainer ---- */

aims_status aimsi_train_text_workspace(aims_trainer *t);
void aimsi_train_text_init(aims_trainer *t, uint64_t seed);
/* One document: forward, loss gradient and sparse SGD; returns its loss. */
double aimsi_train_text_step(aims_trainer *t, size_t row, float lr);
/* ASGD (average > 0): replace the weights by the mean of the averaged steps. */
void aimsi_train_text_average_finish(aims_trainer *t);

#endif /* AIMSI_TRAIN_H */
