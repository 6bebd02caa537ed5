/*
 * train.c -- the trainer: mini-batch gradient descent over dense models.
 *
 * Shape of a step. Rows of the batch are gathered into one contiguous block
 * (so every layer is one sgemm), the forward pass keeps each layer's output,
 * the loss gradient is formed in place of the logits (softmax + cross-entropy
 * fused: G = (softmax(z) - onehot(y)) / n, from max-shifted exponentials), and
 * the backward pass walks the layers down: dA_prev = G W first (needs the old
 * W), then dW = G^T A_prev, then the optimizer updates the layer at once while
 * its weights are still in cache. For plain SGD with momentum the gradient
 * GEMM accumulates straight into the velocity buffer (beta = 1 over a buffer
 * that the previous update already scaled by mu), so no gradient array is
 * written and OpenBLAS runs no separate beta sweep; the arithmetic is that of
 * PyTorch's SGD (v = mu v + g; w -= lr v). Likewise every forward GEMM starts
 * from the bias rows (beta = 1), so bias and activation cost one pass.
 *
 * Memory. begin() allocates one workspace for the whole run; a step never
 * allocates (validation at the end of an epoch does, once).
 *
 * Determinism and exact resume. Every random choice is a pure function of
 * (seed, epoch) or (seed, step): the epoch's row order is a Fisher-Yates
 * shuffle seeded from seed+epoch, dropout masks from seed and the step
 * number, the held-out split and the initial weights from the seed. A
 * checkpoint therefore only stores weights, optimizer buffers, counters and
 * early-stopping state; resuming regenerates the current epoch's order and
 * continues bit for bit. The big GEMMs run in libaims' own kernels
 * (gemm.c) on an AVX-512 CPU, whose sums do not depend on the thread count;
 * on the OpenBLAS path (AIMS_TRAIN_GEMM = 1, or no AVX-512) results depend on
 * OpenBLAS's thread count (it splits the output, not the sums), so there the
 * guarantee holds for a fixed OpenBLAS thread count.
 *
 * Threads. The own kernels run on the trainer's pool of AIMS_TRAIN_THREADS
 * threads (spinning briefly between the GEMMs of a step, so a hand-off costs
 * no futex wake-up). Debian's OpenBLAS 0.3.21 keeps ONE process-wide thread
 * count and does not export openblas_set_num_threads_local (checked with
 * nm -D), so libaims cannot give OpenBLAS GEMMs a per-call thread count
 * without changing every other user's setting; it never calls
 * openblas_set_num_threads, and the OpenBLAS path runs with OpenBLAS's own
 * count (OPENBLAS_NUM_THREADS, default: all cores). The small GEMMs left on
 * OpenBLAS (outputs narrower than 32) run on the calling thread.
 * AIMS_TRAIN_THREADS is recorded and checked on resume.
 *
 * Cancellation is an atomic flag polled at every step boundary; the step in
 * flight completes, so the model always holds the weights of a whole step.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_model.h"

#define TRAINER_OK(t) aimsi_obj_ok((t), AIMSI_MAGIC_TRAINER)
#define TAG_TSTA AIMSI_TAG('T', 'S', 'T', 'A')
#define TAG_TOP1 AIMSI_TAG('T', 'O', 'P', '1')
#define TAG_TOP2 AIMSI_TAG('T', 'O', 'P', '2')
#define TAG_TBST AIMSI_TAG('T', 'B', 'S', 'T')
#define CKPT_VERSION 1u

enum { OPT_SGD = 0, OPT_ADAM = 1, OPT_ADAMW = 2 };
enum { SCHED_CONST = 0, SCHED_STEP = 1, SCHED_COSINE = 2 };

typedef struct hyper {
    int64_t opt, nesterov, sched, warmup, step_epochs, batch, epochs, seed, threads, patience,
        metric, warm, gemm;
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
    void *gws;            /* own GEMMs: packed operands (NULL: OpenBLAS) */
    aimsi_pool *pool;     /* own GEMMs: train_threads compute threads */
    int gprec;            /* own GEMMs: AIMSI_GEMM_F32 or AIMSI_GEMM_BF16 */

    /* statistics */
    double loss_sum;
    size_t loss_rows;
    double train_loss, val_loss, val_acc, sps, best_metric;
    int64_t best_epoch, bad_epochs;
    uint64_t epoch_t0;
    double epoch_secs;
};

/* ---- parameters ---------------------------------------------------------------------- */

static void hyper_defaults(hyper *h)
{
    h->opt = (int64_t)aimsi_param_default(AIMS_TRAIN_OPTIMIZER);
    h->lr = aimsi_param_default(AIMS_TRAIN_LR);
    h->mom = aimsi_param_default(AIMS_TRAIN_MOMENTUM);
    h->nesterov = (int64_t)aimsi_param_default(AIMS_TRAIN_NESTEROV);
    h->b1 = aimsi_param_default(AIMS_TRAIN_BETA1);
    h->b2 = aimsi_param_default(AIMS_TRAIN_BETA2);
    h->eps = aimsi_param_default(AIMS_TRAIN_EPS);
    h->wd = aimsi_param_default(AIMS_TRAIN_WEIGHT_DECAY);
    h->sched = (int64_t)aimsi_param_default(AIMS_TRAIN_SCHEDULE);
    h->warmup = (int64_t)aimsi_param_default(AIMS_TRAIN_WARMUP_STEPS);
    h->step_epochs = (int64_t)aimsi_param_default(AIMS_TRAIN_STEP_EPOCHS);
    h->gamma = aimsi_param_default(AIMS_TRAIN_GAMMA);
    h->batch = (int64_t)aimsi_param_default(AIMS_TRAIN_BATCH);
    h->epochs = (int64_t)aimsi_param_default(AIMS_TRAIN_EPOCHS);
    h->seed = (int64_t)aimsi_param_default(AIMS_TRAIN_SEED);
    h->threads = (int64_t)aimsi_param_default(AIMS_TRAIN_THREADS);
    h->val_frac = aimsi_param_default(AIMS_TRAIN_VAL_FRACTION);
    h->patience = (int64_t)aimsi_param_default(AIMS_TRAIN_PATIENCE);
    h->min_delta = aimsi_param_default(AIMS_TRAIN_MIN_DELTA);
    h->metric = (int64_t)aimsi_param_default(AIMS_TRAIN_METRIC);
    h->warm = (int64_t)aimsi_param_default(AIMS_TRAIN_WARM_START);
    h->gemm = (int64_t)aimsi_param_default(AIMS_TRAIN_GEMM);
}

static int64_t *i64_slot(hyper *h, aims_param p)
{
    switch (p) {
    case AIMS_TRAIN_OPTIMIZER:
        return &h->opt;
    case AIMS_TRAIN_NESTEROV:
        return &h->nesterov;
    case AIMS_TRAIN_SCHEDULE:
        return &h->sched;
    case AIMS_TRAIN_WARMUP_STEPS:
        return &h->warmup;
    case AIMS_TRAIN_STEP_EPOCHS:
        return &h->step_epochs;
    case AIMS_TRAIN_BATCH:
        return &h->batch;
    case AIMS_TRAIN_EPOCHS:
        return &h->epochs;
    case AIMS_TRAIN_SEED:
        return &h->seed;
    case AIMS_TRAIN_THREADS:
        return &h->threads;
    case AIMS_TRAIN_PATIENCE:
        return &h->patience;
    case AIMS_TRAIN_METRIC:
        return &h->metric;
    case AIMS_TRAIN_WARM_START:
        return &h->warm;
    case AIMS_TRAIN_GEMM:
        return &h->gemm;
    default:
        return NULL;
    }
}

static double *f64_slot(hyper *h, aims_param p)
{
    switch (p) {
    case AIMS_TRAIN_LR:
        return &h->lr;
    case AIMS_TRAIN_MOMENTUM:
        return &h->mom;
    case AIMS_TRAIN_BETA1:
        return &h->b1;
    case AIMS_TRAIN_BETA2:
        return &h->b2;
    case AIMS_TRAIN_EPS:
        return &h->eps;
    case AIMS_TRAIN_WEIGHT_DECAY:
        return &h->wd;
    case AIMS_TRAIN_GAMMA:
        return &h->gamma;
    case AIMS_TRAIN_VAL_FRACTION:
        return &h->val_frac;
    case AIMS_TRAIN_MIN_DELTA:
        return &h->min_delta;
    default:
        return NULL;
    }
}

aims_status aims_trainer_set_param_i64(aims_trainer *t, aims_param param, int64_t value)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    AIMSI_TRY(aimsi_param_check(&t->obj, param, 500, 599, AIMS_PARAM_I64, (double)value));
    int64_t *slot = i64_slot(&t->h, param);
    if (slot == NULL) {
        return aimsi_err(&t->obj, AIMS_E_UNSUPPORTED, "trainer parameter %d", (int)param);
    }
    if (t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE,
                         "aims_trainer_set_param: a run is in progress (begin a new one)");
    }
    *slot = value;
    return AIMS_OK;
}

aims_status aims_trainer_set_param_f64(aims_trainer *t, aims_param param, double value)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    AIMSI_TRY(aimsi_param_check(&t->obj, param, 500, 599, AIMS_PARAM_F64, value));
    double *slot = f64_slot(&t->h, param);
    if (slot == NULL) {
        return aimsi_err(&t->obj, AIMS_E_UNSUPPORTED, "trainer parameter %d", (int)param);
    }
    if (t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE,
                         "aims_trainer_set_param: a run is in progress (begin a new one)");
    }
    *slot = value;
    return AIMS_OK;
}

aims_status aims_trainer_get_param_i64(const aims_trainer *t, aims_param param,
                                       int64_t *out_value)
{
    if (!TRAINER_OK(t) || out_value == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_value");
    }
    AIMSI_TRY(aimsi_param_check(NULL, param, 500, 599, AIMS_PARAM_I64,
                                aimsi_param_default(param)));
    hyper h = t->h;
    *out_value = *i64_slot(&h, param);
    return AIMS_OK;
}

aims_status aims_trainer_get_param_f64(const aims_trainer *t, aims_param param,
                                       double *out_value)
{
    if (!TRAINER_OK(t) || out_value == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_value");
    }
    AIMSI_TRY(aimsi_param_check(NULL, param, 500, 599, AIMS_PARAM_F64,
                                aimsi_param_default(param)));
    hyper h = t->h;
    *out_value = *f64_slot(&h, param);
    return AIMS_OK;
}

/* ---- create / destroy ---------------------------------------------------------------- */

aims_status aims_trainer_create(aims_model *m, aims_trainer **out)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MODEL) || out == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL out");
    }
    aims_trainer *t = aimsi_calloc(1, sizeof *t);
    if (t == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_trainer_create: out of memory");
    }
    aimsi_obj_init(&t->obj, AIMSI_MAGIC_TRAINER);
    t->m = m;
    hyper_defaults(&t->h);
    atomic_init(&t->cancel, 0);
    t->val_loss = NAN;
    t->val_acc = NAN;
    t->train_loss = NAN;
    *out = t;
    return AIMS_OK;
}

static void end_run(aims_trainer *t)
{
    aimsi_free(t->ws);
    aimsi_free(t->tr_idx);
    aimsi_free(t->va_idx);
    aimsi_free(t->perm);
    aimsi_free(t->yb);
    aimsi_free(t->mask_block);
    aimsi_free(t->gws);
    aimsi_pool_destroy(t->pool);
    t->gws = NULL;
    t->pool = NULL;
    t->ws = NULL;
    t->tr_idx = NULL;
    t->va_idx = NULL;
    t->perm = NULL;
    t->yb = NULL;
    t->mask_block = NULL;
    t->running = 0;
}

void aims_trainer_destroy(aims_trainer *t)
{
    if (!TRAINER_OK(t)) {
        return;
    }
    end_run(t);
    aimsi_obj_kill(&t->obj);
    aimsi_free(t);
}

aims_status aims_trainer_set_progress(aims_trainer *t, aims_progress_fn fn, void *user)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    t->fn = fn;
    t->user = user;
    return AIMS_OK;
}

void aims_trainer_cancel(aims_trainer *t)
{
    if (TRAINER_OK(t)) {
        atomic_store(&t->cancel, 1);
    }
}

const char *aims_trainer_errmsg(const aims_trainer *t)
{
    return TRAINER_OK(t) ? t->obj.errmsg : "";
}

/* ---- data checks and the held-out split ----------------------------------------------- */

static aims_status check_data(aims_trainer *t, const aims_dataset *ds, const char *what)
{
    const aims_model *m = t->m;
    if (!aimsi_obj_ok(ds, AIMSI_MAGIC_DATASET)) {
        return aimsi_err(&t->obj, AIMS_E_MISUSE, "aims_trainer_begin: %s is not a dataset", what);
    }
    if (m->kind == AIMS_MODEL_TEXT) {
        const aims_status rc = aimsi_text_check(m, ds);
        if (rc != AIMS_OK) {
            return aimsi_err_adopt(&t->obj, rc);
        }
    } else if (ds->x == NULL || ds->cols != m->input_dim || ds->rows == 0) {
        return aimsi_err(&t->obj, AIMS_E_INVAL,
                         "aims_trainer_begin: %s has %zu rows of width %zu, model needs width %zu",
                         what, ds->rows, ds->cols, m->input_dim);
    }
    if (m->kind != AIMS_MODEL_TEXT) {
        static const char hint[] = "impute or drop it before training: one such row turns "
                                   "every weight into NaN";
        aims_status rc = aimsi_check_finite(AIMS_E_INVAL, what, ds->x, ds->rows, ds->cols,
                                            NULL, hint);
        if (rc == AIMS_OK && ds->targets != NULL) {
            rc = aimsi_check_finite(AIMS_E_INVAL, what, ds->targets, ds->rows, 1, NULL, hint);
        }
        if (rc != AIMS_OK) {
            return aimsi_err_adopt(&t->obj, rc);
        }
    }
    if (aimsi_model_is_classifier(m)) {
        if (ds->labels == NULL) {
            return aimsi_err(&t->obj, AIMS_E_INVAL, "aims_trainer_begin: %s has no labels", what);
        }
        const size_t k = aimsi_model_classes(m);
        for (size_t r = 0; r < ds->rows; r++) {
            if (ds->labels[r] < 0 || (size_t)ds->labels[r] >= k) {
                return aimsi_err(&t->obj, AIMS_E_INVAL,
                                 "aims_trainer_begin: %s row %zu has label %d, model has %zu "
                                 "classes",
                                 what, r, (int)ds->labels[r], k);
            }
        }
        return AIMS_OK;
    }
    if (ds->targets == NULL && ds->labels == NULL) {
        return aimsi_err(&t->obj, AIMS_E_INVAL, "aims_trainer_begin: %s has no targets", what);
    }
    if (ds->targets != NULL && m->output_dim != 1) {
        return aimsi_err(&t->obj, AIMS_E_INVAL,
                         "aims_trainer_begin: %zu outputs, %s has one target per row",
                         m->output_dim, what);
    }
    return AIMS_OK;
}

static uint64_t mix_seed(uint64_t seed, uint64_t salt)
{
    return seed * 0x9E3779B97F4A7C15ull + salt * 0xD1B54A32D192ED03ull + 0x5851F42D4C957F2Dull;
}

/* Seeded stratified hold-out: shuffle all rows, then each class gives its
 * first round(frac * count) members to validation. */
static aims_status make_split(aims_trainer *t)
{
    const aims_dataset *ds = t->train;
    const size_t n = ds->rows;
    const int cls = aimsi_model_is_classifier(t->m);
    const size_t k = cls ? aimsi_model_classes(t->m) : 1;
    size_t *order = aimsi_malloc(n * sizeof *order);
    size_t *count = aimsi_calloc(k, sizeof *count);
    size_t *taken = aimsi_calloc(k, sizeof *taken);
    uint8_t *is_val = aimsi_calloc(n, 1);
    t->tr_idx = aimsi_malloc(n * sizeof *t->tr_idx);
    t->va_idx = aimsi_malloc(n * sizeof *t->va_idx);
    aims_status rc = AIMS_OK;
    if (order == NULL || count == NULL || taken == NULL || is_val == NULL || t->tr_idx == NULL ||
        t->va_idx == NULL) {
        rc = aimsi_err(&t->obj, AIMS_E_NOMEM, "aims_trainer_begin: out of memory");
    } else {
        aimsi_rng rng;
        aimsi_rng_seed(&rng, mix_seed((uint64_t)t->h.seed, 0xA11CE));
        for (size_t i = 0; i < n; i++) {
            order[i] = i;
            count[cls ? (size_t)ds->labels[i] : 0]++;
        }
        for (size_t i = n; i > 1; i--) {
            const size_t j = (size_t)aimsi_rng_below(&rng, i);
            const size_t tmp = order[i - 1];
            order[i - 1] = order[j];
            order[j] = tmp;
        }
        for (size_t i = 0; i < n; i++) {
            const size_t c = cls ? (size_t)ds->labels[order[i]] : 0;
            const size_t want = (size_t)floor(t->h.val_frac * (double)count[c] + 0.5);
            if (taken[c] < want) {
                taken[c]++;
                is_val[order[i]] = 1;
            }
        }
        t->n_tr = 0;
        t->n_va = 0;
        for (size_t i = 0; i < n; i++) {
            if (is_val[i]) {
                t->va_idx[t->n_va++] = i;
            } else {
                t->tr_idx[t->n_tr++] = i;
            }
        }
        if (t->n_tr == 0 || t->n_va == 0) {
            rc = aimsi_err(&t->obj, AIMS_E_INVAL,
                           "aims_trainer_begin: val_fraction %g leaves %zu training and %zu "
                           "validation rows",
                           t->h.val_frac, t->n_tr, t->n_va);
        }
    }
    aimsi_free(order);
    aimsi_free(count);
    aimsi_free(taken);
    aimsi_free(is_val);
    return rc;
}

/* ---- workspace ------------------------------------------------------------------------- */

static size_t model_widest(const aims_model *m)
{
    size_t w = m->input_dim;
    for (size_t i = 0; i < m->n_layers; i++) {
        w = m->layers[i].out > w ? m->layers[i].out : w;
    }
    return w;
}

/* TEXT trains row by row with plain SGD: no batch buffers, no optimizer state
 * (the embedding table can be large). */
static aims_status alloc_text_workspace(aims_trainer *t)
{
    const aims_model *m = t->m;
    const int early = t->n_va > 0 || t->val != NULL;
    const size_t small = 2 * m->embed_dim + m->output_dim;
    t->ws = aimsi_calloc(small + (early ? m->n_params : 0), sizeof(float));
    t->perm = aimsi_malloc(t->n_tr * sizeof *t->perm);
    if (t->ws == NULL || t->perm == NULL) {
        return aimsi_err(&t->obj, AIMS_E_NOMEM, "aims_trainer_begin: out of memory for the "
                                                "workspace");
    }
    t->th = t->ws;
    t->tdh = t->th + m->embed_dim;
    t->tz = t->tdh + m->embed_dim;
    t->best = early ? t->tz + m->output_dim : NULL;
    t->grad = NULL;
    t->v1 = NULL;
    t->v2 = NULL;
    return AIMS_OK;
}

/* GEMMs big enough to thread (OpenBLAS's own line: m n k >= 4 * 65536) run
 * in the own kernels when the trainer set them up. Outputs narrower than 8
 * stay with OpenBLAS (all but a sliver of the 32-column panel would be
 * padding); from 8 up the own kernel still wins over OpenBLAS's small-matrix
 * path (softmax regression's 128 x 10 x 784 forward: measured A/B, 5 runs). */
static int use_own(const aims_trainer *t, size_t m, size_t n, size_t k)
{
    return t->gws != NULL && n >= 8 && m * n * k >= (size_t)4 * 65536;
}

static void gemm(const aims_trainer *t, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                 const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                 size_t ldc)
{
    if (use_own(t, m, n, k)) {
        /* below ~2M multiply-adds the hand-off to the pool costs more than the
         * second core gains (softmax regression: 1 thread beat 2) */
        aimsi_pool *pool = m * n * k >= ((size_t)2 << 20) ? t->pool : NULL;
        aimsi_gemm_own(pool, t->gws, t->gprec, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c,
                       ldc);
        return;
    }
    aimsi_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* The own GEMMs (gemm = auto on an AVX-512 CPU): bf16 when the model asks
 * for it and the CPU has AVX512_BF16, fp32 otherwise; the packing workspace
 * for the largest GEMM of a step and a pool of train_threads threads (the own
 * kernels do not use OpenBLAS's threads). Elsewhere training is OpenBLAS fp32. */
static aims_status alloc_own_gemm(aims_trainer *t)
{
    const aims_model *m = t->m;
    t->gprec = m->precision == 1 && aimsi_gemm_own_available(AIMSI_GEMM_BF16)
                   ? AIMSI_GEMM_BF16
                   : AIMSI_GEMM_F32;
    if (t->h.gemm != 0 || !aimsi_gemm_own_available(t->gprec)) {
        return AIMS_OK;
    }
    const size_t B = t->bmax;
    size_t bytes = 0;
    for (size_t l = 0; l < m->n_layers; l++) {
        const size_t in = m->layers[l].in;
        const size_t out = m->layers[l].out;
        bytes = max_size(bytes, aimsi_gemm_own_ws_bytes(t->gprec, B, out, in)); /* forward */
        bytes = max_size(bytes, aimsi_gemm_own_ws_bytes(t->gprec, B, in, out)); /* dX */
        bytes = max_size(bytes, aimsi_gemm_own_ws_bytes(t->gprec, out, in, B)); /* dW */
    }
    t->gws = aimsi_malloc(bytes);
    if (t->gws == NULL) {
        return aimsi_err(&t->obj, AIMS_E_NOMEM,
                         "aims_trainer_begin: out of memory for the GEMM workspace");
    }
    const unsigned threads = t->h.threads > 0 ? (unsigned)t->h.threads : aimsi_cpu_count();
    if (threads > 1) {
        AIMSI_TRY(aimsi_pool_create(threads, &t->pool));
        aimsi_pool_set_spin(t->pool, 200); /* the GEMMs of a step come back to back */
    }
    return AIMS_OK;
}

static aims_status alloc_workspace(aims_trainer *t)
{
    const aims_model *m = t->m;
    if (m->kind == AIMS_MODEL_TEXT) {
        return alloc_text_workspace(t);
    }
    const size_t B = t->bmax;
    size_t total = B * m->input_dim + 2 * B * model_widest(m) + B;
    size_t mask_total = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const size_t n = B * m->layers[i].out;
        total += n;
        if (m->layers[i].act == AIMS_ACT_GELU) {
            total += n;
        }
        if (i + 1 < m->n_layers && m->dropout > 0.0) {
            mask_total += n;
        }
    }
    const int adam = t->h.opt != OPT_SGD;
    const int early = t->n_va > 0 || t->val != NULL;
    total += m->n_params * (size_t)(2 + adam + early);
    t->ws = aimsi_calloc(total, sizeof(float));
    t->yb = aimsi_malloc(B * sizeof *t->yb);
    t->perm = aimsi_malloc(t->n_tr * sizeof *t->perm);
    if (mask_total > 0) {
        t->mask_block = aimsi_malloc(mask_total);
    }
    if (t->ws == NULL || t->yb == NULL || t->perm == NULL ||
        (mask_total > 0 && t->mask_block == NULL)) {
        return aimsi_err(&t->obj, AIMS_E_NOMEM, "aims_trainer_begin: out of memory for the "
                                                "workspace");
    }
    aimsi_hint_hugepages(t->ws, total * sizeof(float));
    float *p = t->ws;
    uint8_t *mk = t->mask_block;
    t->xb = p;
    p += B * m->input_dim;
    t->g[0] = p;
    p += B * model_widest(m);
    t->g[1] = p;
    p += B * model_widest(m);
    t->tb = p;
    p += B;
    for (size_t i = 0; i < m->n_layers; i++) {
        const size_t n = B * m->layers[i].out;
        t->act[i] = p;
        p += n;
        t->pre[i] = NULL;
        t->mask[i] = NULL;
        if (m->layers[i].act == AIMS_ACT_GELU) {
            t->pre[i] = p;
            p += n;
        }
        if (i + 1 < m->n_layers && m->dropout > 0.0) {
            t->mask[i] = mk;
            mk += n;
        }
    }
    t->grad = p;
    p += m->n_params;
    t->v1 = p;
    p += m->n_params;
    t->v2 = adam ? p : NULL;
    p += adam ? m->n_params : 0;
    t->best = early ? p : NULL;
    return alloc_own_gemm(t);
}

/* PyTorch's default for nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for W and b. */
/* TEXT, fastText style: embeddings U(-1/dim, 1/dim), output layer zero. Only the
 * rows of tokens present in the training data are drawn (each from its own
 * seed, so the order of the data does not matter); the others stay zero, so a
 * token never seen in training adds nothing at predict time instead of noise,
 * and a 2^21-bucket table is not filled with 100M random numbers. */
static void init_text(aims_trainer *t, uint64_t seed)
{
    aims_model *m = t->m;
    const aims_dataset *ds = t->train;
    const size_t e = m->embed_dim;
    const float k = 1.0f / (float)e;
    float *emb = m->params + m->emb_off;
    memset(emb, 0, m->input_dim * e * sizeof *emb);
    memset(m->params + m->layers[0].w_off, 0,
           (m->layers[0].in + 1) * m->layers[0].out * sizeof(float));
    if (m->text_linear) {
        return; /* a linear model starts at 0: no symmetry to break */
    }
    for (size_t r = 0; r < t->n_tr; r++) {
        const size_t row = t->tr_idx[r];
        for (uint64_t i = ds->tok_off[row]; i < ds->tok_off[row + 1]; i++) {
            const uint32_t id = ds->tok_ids[i];
            float *v = emb + (size_t)id * e;
            if (v[0] != 0.0f) {
                continue; /* drawn already (a draw of exactly 0 is redrawn: harmless) */
            }
            aimsi_rng rng;
            aimsi_rng_seed(&rng, mix_seed(seed, 0x7E470000000ull + id));
            for (size_t j = 0; j < e; j++) {
                v[j] = (float)(2.0 * aimsi_rng_unit(&rng) - 1.0) * k;
            }
        }
    }
}

static void init_weights(aims_model *m, uint64_t seed)
{
    aimsi_rng rng;
    aimsi_rng_seed(&rng, mix_seed(seed, 0x1417));
    for (size_t l = 0; l < m->n_layers; l++) {
        const aimsi_dense *L = &m->layers[l];
        const double k = 1.0 / sqrt((double)L->in);
        float *w = m->params + L->w_off;
        for (size_t i = 0; i < L->in * L->out; i++) {
            w[i] = (float)((2.0 * aimsi_rng_unit(&rng) - 1.0) * k);
        }
        float *b = m->params + L->b_off;
        for (size_t i = 0; i < L->out; i++) {
            b[i] = (float)((2.0 * aimsi_rng_unit(&rng) - 1.0) * k);
        }
    }
}

static void make_perm(aims_trainer *t, int64_t epoch)
{
    aimsi_rng rng;
    aimsi_rng_seed(&rng, mix_seed((uint64_t)t->h.seed, 0xE90C0000ull + (uint64_t)epoch));
    for (size_t i = 0; i < t->n_tr; i++) {
        t->perm[i] = i;
    }
    for (size_t i = t->n_tr; i > 1; i--) {
        const size_t j = (size_t)aimsi_rng_below(&rng, i);
        const size_t tmp = t->perm[i - 1];
        t->perm[i - 1] = t->perm[j];
        t->perm[j] = tmp;
    }
}

/* Undo aimsi_model_finalize() after a failed begin on a fresh model. */
static void unfinalize(aims_model *m)
{
    aimsi_free(m->params);
    m->params = NULL;
    m->n_params = 0;
    m->n_layers -= 1; /* drop the output layer finalize appended */
    for (size_t i = 0; i < m->n_layers; i++) {
        m->layers[i].in = 0;
        m->layers[i].w_off = 0;
        m->layers[i].b_off = 0;
    }
}

static aims_status begin_run(aims_trainer *t)
{
    aims_model *m = t->m;
    if (t->val == NULL && t->h.val_frac > 0.0) {
        AIMSI_TRY(make_split(t));
    } else {
        t->n_tr = t->train->rows;
        t->n_va = 0;
        t->tr_idx = aimsi_malloc(t->n_tr * sizeof *t->tr_idx);
        if (t->tr_idx == NULL) {
            return aimsi_err(&t->obj, AIMS_E_NOMEM, "aims_trainer_begin: out of memory");
        }
        for (size_t i = 0; i < t->n_tr; i++) {
            t->tr_idx[i] = i;
        }
    }
    t->bmax = (size_t)t->h.batch < t->n_tr ? (size_t)t->h.batch : t->n_tr;
    if (m->kind == AIMS_MODEL_TEXT) {
        t->bmax = 1; /* fastText-style per-document SGD */
    }
    t->steps_per_epoch = (int64_t)((t->n_tr + t->bmax - 1) / t->bmax);
    AIMSI_TRY(alloc_workspace(t));
    if (!(t->h.warm && m->trained)) {
        if (m->kind == AIMS_MODEL_TEXT) {
            init_text(t, (uint64_t)t->h.seed);
        } else {
            init_weights(m, (uint64_t)t->h.seed);
        }
    }
    return AIMS_OK;
}

aims_status aims_trainer_begin(aims_trainer *t, const aims_dataset *train,
                               const aims_dataset *val)
{
    if (!TRAINER_OK(t) || !aimsi_obj_ok(t->m, AIMSI_MAGIC_MODEL)) {
        return AIMSI_MISUSE("invalid trainer handle (or its model was destroyed)");
    }
    if (t->m->quantized) {
        return aimsi_err(&t->obj, AIMS_E_INVAL, "aims_trainer_begin: the model is quantized");
    }
    aims_model *mm = t->m;
    if (mm->params == NULL && mm->kind == AIMS_MODEL_MLP && mm->loss_param == 0 &&
        aimsi_obj_ok(train, AIMSI_MAGIC_DATASET)) {
        /* auto loss: targets without labels train a regression */
        mm->loss = train->labels == NULL && train->targets != NULL ? 2 : 1;
    }
    AIMSI_TRY(check_data(t, train, "train"));
    if (val != NULL) {
        AIMSI_TRY(check_data(t, val, "val"));
    }
    end_run(t);
    t->diverged = 0;
    aims_model *m = t->m;
    const int was_final = m->params != NULL;
    aims_status rc = aimsi_model_finalize(m);
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&t->obj, rc);
    }
    t->train = train;
    t->val = val;
    rc = begin_run(t);
    if (rc != AIMS_OK) {
        end_run(t);
        if (!was_final) {
            unfinalize(m);
        }
        return rc;
    }
    t->running = 1;
    t->done = 0;
    t->diverged = 0;
    t->epoch = 0;
    t->step = 0;
    t->pos = 0;
    t->loss_sum = 0.0;
    t->loss_rows = 0;
    t->train_loss = NAN;
    t->val_loss = NAN;
    t->val_acc = NAN;
    t->sps = 0.0;
    t->best_metric = INFINITY;
    t->best_epoch = 0;
    t->bad_epochs = 0;
    m->trained = 1;
    return AIMS_OK;
}

/* ---- learning rate ---------------------------------------------------------------------- */

static double lr_at(const aims_trainer *t, int64_t step)
{
    const hyper *h = &t->h;
    double lr = h->lr;
    if (t->m->kind == AIMS_MODEL_TEXT) { /* fastText: linear decay to zero over the run */
        const double total = (double)(h->epochs * t->steps_per_epoch);
        return total > 0.0 ? lr * fmax(0.0, 1.0 - (double)step / total) : lr;
    }
    if (h->warmup > 0 && step < h->warmup) {
        return lr * (double)(step + 1) / (double)h->warmup;
    }
    if (h->sched == SCHED_STEP) {
        const int64_t epoch = t->steps_per_epoch > 0 ? step / t->steps_per_epoch : 0;
        lr *= pow(h->gamma, (double)(epoch / h->step_epochs));
    } else if (h->sched == SCHED_COSINE) {
        const double total = (double)(h->epochs * t->steps_per_epoch - h->warmup);
        const double done = (double)(step - h->warmup);
        const double frac = total > 0.0 ? fmin(done / total, 1.0) : 1.0;
        lr *= 0.5 * (1.0 + cos(3.14159265358979323846 * frac));
    }
    return lr;
}

/* ---- forward / loss / backward ------------------------------------------------------- */

/* Activation (+ dropout) over a layer's fresh GEMM output (the GEMM started
 * from the bias rows, so z = x W^T + b is already complete). */
static void bias_act(const aims_trainer *t, size_t l, size_t n)
{
    const aims_model *m = t->m;
    const aimsi_dense *L = &m->layers[l];
    float *a = t->act[l];
    const size_t cnt = n * L->out;
    if (L->act == AIMS_ACT_GELU) {
        memcpy(t->pre[l], a, cnt * sizeof *a); /* the derivative needs z */
    }
    aimsi_act_apply(L->act, a, cnt);
    if (t->mask[l] != NULL) {
        aimsi_rng rng;
        aimsi_rng_seed(&rng, mix_seed((uint64_t)t->h.seed,
                                      0xD50F000000ull + (uint64_t)t->step * 64u + l));
        const double p = m->dropout;
        const float keep_scale = (float)(1.0 / (1.0 - p));
        uint8_t *mk = t->mask[l];
        for (size_t i = 0; i < cnt; i++) {
            mk[i] = aimsi_rng_unit(&rng) >= p;
            a[i] = mk[i] ? a[i] * keep_scale : 0.0f;
        }
    }
}

static void forward(aims_trainer *t, size_t n)
{
    const aims_model *m = t->m;
    const float *x = t->xb;
    for (size_t l = 0; l < m->n_layers; l++) {
        const aimsi_dense *L = &m->layers[l];
        const float *b = m->params + L->b_off;
        for (size_t r = 0; r < n; r++) {
            memcpy(t->act[l] + r * L->out, b, L->out * sizeof *b);
        }
        /* beta 1 over the bias rows: no separate zeroing sweep inside OpenBLAS */
        gemm(t, 0, 1, n, L->out, L->in, x, L->in, m->params + L->w_off, L->in, 1.0f, t->act[l],
             L->out);
        bias_act(t, l, n);
        x = t->act[l];
    }
}

/* Loss of the batch (sum over rows) and, in place of the last layer's
 * outputs, dLoss/dz for the mean loss. */
static double loss_grad(aims_trainer *t, size_t n)
{
    const aims_model *m = t->m;
    const size_t k = m->layers[m->n_layers - 1].out;
    float *z = t->act[m->n_layers - 1];
    const float inv_n = 1.0f / (float)n;
    double total = 0.0;
    if (m->loss == 1 && k == 1) { /* LOGISTIC: sigmoid + binary cross-entropy */
        for (size_t r = 0; r < n; r++) {
            const float v = z[r];
            const float y = (float)t->yb[r];
            total += fmax(v, 0.0) - (double)v * y + log1p(exp(-fabs((double)v)));
            z[r] = (1.0f / (1.0f + expf(-v)) - y) * inv_n;
        }
        return total;
    }
    if (m->loss == 1) { /* softmax + cross-entropy, fused and max-shifted */
        for (size_t r = 0; r < n; r++) {
            float *row = z + r * k;
            float mx = row[0];
            for (size_t j = 1; j < k; j++) {
                mx = row[j] > mx ? row[j] : mx;
            }
            float s = 0.0f;
            for (size_t j = 0; j < k; j++) {
                row[j] = expf(row[j] - mx);
                s += row[j];
            }
            const int32_t y = t->yb[r];
            total += log((double)s) - log((double)row[y]);
            const float inv = inv_n / s;
            for (size_t j = 0; j < k; j++) {
                row[j] *= inv;
            }
            row[y] -= inv_n;
        }
        return total;
    }
    /* MSE, mean over rows and outputs */
    const float scale = 2.0f / (float)(n * k);
    for (size_t r = 0; r < n; r++) {
        for (size_t j = 0; j < k; j++) {
            float target = t->tb[r];
            if (k > 1) {
                target = (size_t)t->yb[r] == j ? 1.0f : 0.0f;
            }
            const float d = z[r * k + j] - target;
            total += (double)d * d / (double)k;
            z[r * k + j] = d * scale;
        }
    }
    return total;
}

/* g *= f'(pre) where f is the activation of layer l (and the dropout mask). */
static void act_backward(const aims_trainer *t, size_t l, size_t n, float *g)
{
    const aimsi_dense *L = &t->m->layers[l];
    const float *a = t->act[l];
    const size_t cnt = n * L->out;
    switch (L->act) {
    case AIMS_ACT_RELU:
        for (size_t i = 0; i < cnt; i++) {
            g[i] = a[i] > 0.0f ? g[i] : 0.0f;
        }
        break;
    case AIMS_ACT_TANH:
    case AIMS_ACT_SIGMOID: {
        const float keep = t->mask[l] != NULL ? (float)(1.0 - t->m->dropout) : 1.0f;
        for (size_t i = 0; i < cnt; i++) {
            const float y = a[i] * keep; /* undo the dropout scale to get f(z) */
            g[i] *= L->act == AIMS_ACT_TANH ? 1.0f - y * y : y * (1.0f - y);
        }
        break;
    }
    case AIMS_ACT_GELU: {
        const float *z = t->pre[l];
        for (size_t i = 0; i < cnt; i++) {
            const float x = z[i];
            const float u = 0.7978845608f * (x + 0.044715f * x * x * x);
            const float th = tanhf(u);
            const float du = 0.7978845608f * (1.0f + 3.0f * 0.044715f * x * x);
            g[i] *= 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        }
        break;
    }
    default:
        break;
    }
    if (t->mask[l] != NULL) {
        const float keep_scale = (float)(1.0 / (1.0 - t->m->dropout));
        for (size_t i = 0; i < cnt; i++) {
            g[i] = t->mask[l][i] ? g[i] * keep_scale : 0.0f;
        }
    }
}

typedef struct opt_step {
    float lr, mom, wd, b1, b2, eps, c1, c2; /* c1, c2: Adam bias corrections */
} opt_step;

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define AIMSI_ADAM_AVX2 1
/* Adam/AdamW over a range, 8 lanes at a time: the scalar loop cannot be
 * vectorised by the compiler (sqrtf may set errno), and with it Adam cost more
 * than the GEMMs. Same operations in the same order as the scalar tail (no
 * FMA contraction), so the result does not depend on the split point. */
__attribute__((target("avx2"))) static void adam_avx2(const opt_step *o, int decoupled,
                                                       float *w, float *v, float *s,
                                                       const float *g, size_t cnt)
{
    const __m256 lr = _mm256_set1_ps(o->lr);
    const __m256 lrwd = _mm256_set1_ps(o->lr * o->wd);
    const __m256 wd = _mm256_set1_ps(o->wd);
    const __m256 b1 = _mm256_set1_ps(o->b1);
    const __m256 b2 = _mm256_set1_ps(o->b2);
    const __m256 nb1 = _mm256_set1_ps(1.0f - o->b1);
    const __m256 nb2 = _mm256_set1_ps(1.0f - o->b2);
    const __m256 c1 = _mm256_set1_ps(o->c1);
    const __m256 c2 = _mm256_set1_ps(o->c2);
    const __m256 eps = _mm256_set1_ps(o->eps);
    size_t i = 0;
    for (; i + 8 <= cnt; i += 8) {
        __m256 wi = _mm256_loadu_ps(w + i);
        __m256 gi = _mm256_loadu_ps(g + i);
        if (decoupled) {
            wi = _mm256_sub_ps(wi, _mm256_mul_ps(lrwd, wi));
        } else {
            gi = _mm256_add_ps(gi, _mm256_mul_ps(wd, wi));
        }
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(v + i)),
                                        _mm256_mul_ps(nb1, gi));
        const __m256 si = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(s + i)),
                                        _mm256_mul_ps(_mm256_mul_ps(nb2, gi), gi));
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(s + i, si);
        const __m256 mh = _mm256_div_ps(vi, c1);
        const __m256 sh = _mm256_div_ps(si, c2);
        const __m256 step =
            _mm256_div_ps(_mm256_mul_ps(lr, mh), _mm256_add_ps(_mm256_sqrt_ps(sh), eps));
        _mm256_storeu_ps(w + i, _mm256_sub_ps(wi, step));
    }
    for (; i < cnt; i++) {
        float gi = g[i];
        if (decoupled) {
            w[i] -= o->lr * o->wd * w[i];
        } else {
            gi += o->wd * w[i];
        }
        v[i] = o->b1 * v[i] + (1.0f - o->b1) * gi;
        s[i] = o->b2 * s[i] + (1.0f - o->b2) * gi * gi;
        const float mh = v[i] / o->c1;
        const float sh = s[i] / o->c2;
        w[i] -= o->lr * mh / (sqrtf(sh) + o->eps);
    }
}
#endif

/* Update one contiguous parameter range [off, off+cnt) from the gradient
 * already in grad (generic path) or in v1 (fast SGD path). */
static void update_range(const aims_trainer *t, const opt_step *o, size_t off, size_t cnt)
{
    float *w = t->m->params + off;
    float *v = t->v1 + off;
    const float *g = t->grad + off;
    if (t->h.opt == OPT_SGD && !t->h.nesterov) {
        /* v holds mu v + grad (the GEMM accumulated into it with beta 1); the
         * next step's "mu v" is applied here, while v is in cache, instead of
         * by the GEMM's own beta pass (a separate, threaded sweep in OpenBLAS).
         * The stored buffer is therefore mu * velocity. */
        if (o->wd > 0.0f) {
            for (size_t i = 0; i < cnt; i++) {
                v[i] += o->wd * w[i];
                w[i] -= o->lr * v[i];
                v[i] *= o->mom;
            }
        } else {
            for (size_t i = 0; i < cnt; i++) {
                w[i] -= o->lr * v[i];
                v[i] *= o->mom;
            }
        }
        return;
    }
    if (t->h.opt == OPT_SGD) { /* Nesterov */
        for (size_t i = 0; i < cnt; i++) {
            const float gi = g[i] + o->wd * w[i];
            v[i] = o->mom * v[i] + gi;
            w[i] -= o->lr * (gi + o->mom * v[i]);
        }
        return;
    }
    float *s = t->v2 + off;
    const int decoupled = t->h.opt == OPT_ADAMW;
#ifdef AIMSI_ADAM_AVX2
    if (__builtin_cpu_supports("avx2")) {
        adam_avx2(o, decoupled, w, v, s, g, cnt);
        return;
    }
#endif
    for (size_t i = 0; i < cnt; i++) {
        float gi = g[i];
        if (decoupled) {
            w[i] -= o->lr * o->wd * w[i];
        } else {
            gi += o->wd * w[i];
        }
        v[i] = o->b1 * v[i] + (1.0f - o->b1) * gi;
        s[i] = o->b2 * s[i] + (1.0f - o->b2) * gi * gi;
        const float mh = v[i] / o->c1;
        const float sh = s[i] / o->c2;
        w[i] -= o->lr * mh / (sqrtf(sh) + o->eps);
    }
}

typedef struct update_job {
    const aims_trainer *t;
    const opt_step *o;
    size_t off, cnt;
} update_job;

enum { UPDATE_CHUNK = 16384 }; /* parameters per pool item */

static void update_task(void *ctx, size_t i)
{
    const update_job *u = ctx;
    const size_t at = i * UPDATE_CHUNK;
    update_range(u->t, u->o, u->off + at, u->cnt - at < UPDATE_CHUNK ? u->cnt - at : UPDATE_CHUNK);
}

/* The optimizer update over [off, off+cnt), in chunks over the own GEMMs'
 * pool. Every parameter's update is element-wise (and the vector and scalar
 * code do the same operations in the same order), so the split does not
 * change a bit. */
static void update_params(const aims_trainer *t, const opt_step *o, size_t off, size_t cnt)
{
    update_job u = {t, o, off, cnt};
    aimsi_pool_run(t->pool, (cnt + UPDATE_CHUNK - 1) / UPDATE_CHUNK, update_task, &u);
}

static void backward(aims_trainer *t, size_t n, const opt_step *o)
{
    aims_model *m = t->m;
    const int fast = t->h.opt == OPT_SGD && !t->h.nesterov;
    float *gcur = t->act[m->n_layers - 1]; /* loss_grad left dL/dz here */
    for (size_t l = m->n_layers; l-- > 0;) {
        const aimsi_dense *L = &m->layers[l];
        const float *aprev = l > 0 ? t->act[l - 1] : t->xb;
        float *gprev = t->g[l & 1];
        if (l > 0) { /* dA_prev = G W, with the weights before this step's update */
            gemm(t, 0, 0, n, L->in, L->out, gcur, L->out, m->params + L->w_off, L->in, 0.0f,
                 gprev, L->in);
        }
        float *dw = fast ? t->v1 + L->w_off : t->grad + L->w_off;
        float *db = fast ? t->v1 + L->b_off : t->grad + L->b_off;
        /* fast path: dw/db already hold mu * v (see update_range) */
        const float beta = fast ? 1.0f : 0.0f;
        gemm(t, 1, 0, L->out, L->in, n, gcur, L->out, aprev, L->in, beta, dw, L->in);
        if (!fast) {
            memset(db, 0, L->out * sizeof *db);
        }
        for (size_t r = 0; r < n; r++) {
            const float *gr = gcur + r * L->out;
            for (size_t j = 0; j < L->out; j++) {
                db[j] += gr[j];
            }
        }
        update_params(t, o, L->w_off, L->in * L->out);
        update_range(t, o, L->b_off, L->out);
        if (l > 0) {
            act_backward(t, l - 1, n, gprev);
            gcur = gprev;
        }
    }
}

typedef struct gather_job {
    aims_trainer *t;
    size_t first, n;
} gather_job;

enum { GATHER_ROWS = 32 }; /* rows per pool item */

/* Rows [GATHER_ROWS i, ...) of the batch: with the own GEMMs' pool the copy
 * of randomly placed rows (cache and TLB misses, not bandwidth) runs on every
 * core instead of one. */
static void gather_task(void *ctx, size_t i)
{
    const gather_job *g = ctx;
    aims_trainer *t = g->t;
    const aims_dataset *ds = t->train;
    const size_t in = t->m->input_dim;
    const size_t end = (i + 1) * GATHER_ROWS < g->n ? (i + 1) * GATHER_ROWS : g->n;
    for (size_t r = i * GATHER_ROWS; r < end; r++) {
        const size_t row = t->tr_idx[t->perm[g->first + r]];
        if (r + 2 < end) { /* random rows are latency-bound: fetch two ahead (-5 % P2) */
            const char *ahead = (const char *)(ds->x + t->tr_idx[t->perm[g->first + r + 2]] * in);
            for (size_t b = 0; b < in * sizeof(float); b += 64) {
                __builtin_prefetch(ahead + b);
            }
        }
        memcpy(t->xb + r * in, ds->x + row * in, in * sizeof *t->xb);
        t->yb[r] = ds->labels != NULL ? ds->labels[row] : 0;
        t->tb[r] = ds->targets != NULL ? ds->targets[row]
                                       : (ds->labels != NULL ? (float)ds->labels[row] : 0.0f);
    }
}

static void gather(aims_trainer *t, size_t first, size_t n)
{
    gather_job g = {t, first, n};
    aimsi_pool_run(t->pool, (n + GATHER_ROWS - 1) / GATHER_ROWS, gather_task, &g);
}

/* ---- epochs, validation, early stopping --------------------------------------------- */

static aims_status validate(aims_trainer *t)
{
    const aims_model *m = t->m;
    aimsi_score s;
    aims_status rc = AIMS_OK;
    if (t->val != NULL) {
        rc = aimsi_model_score_ds(m, t->val, NULL, t->val->rows, NULL, &s);
    } else {
        rc = aimsi_model_score_ds(m, t->train, t->va_idx, t->n_va, NULL, &s);
    }
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&t->obj, rc);
    }
    t->val_loss = s.loss;
    t->val_acc = s.accuracy;
    return AIMS_OK;
}

static int has_validation(const aims_trainer *t)
{
    return t->val != NULL || t->n_va > 0;
}

static void restore_best(aims_trainer *t)
{
    if (t->best != NULL && t->h.patience > 0 && t->best_epoch > 0) {
        memcpy(t->m->params, t->best, t->m->n_params * sizeof *t->best);
    }
}

static aims_status end_epoch(aims_trainer *t)
{
    t->epoch++;
    t->pos = 0;
    t->train_loss = t->loss_rows > 0 ? t->loss_sum / (double)t->loss_rows : NAN;
    t->epoch_secs = (double)(aimsi_now_ns() - t->epoch_t0) / 1e9;
    t->sps = t->epoch_secs > 0.0 ? (double)t->loss_rows / t->epoch_secs : 0.0;
    if (has_validation(t)) {
        AIMSI_TRY(validate(t));
        /* lower is better: loss as is, accuracy negated */
        const double cur = t->h.metric == 1 ? -t->val_acc : t->val_loss;
        if (t->best_epoch == 0 || t->best_metric - cur > t->h.min_delta) {
            t->best_metric = cur;
            t->best_epoch = t->epoch;
            t->bad_epochs = 0;
            memcpy(t->best, t->m->params, t->m->n_params * sizeof *t->best);
        } else {
            t->bad_epochs++;
        }
        if (t->h.patience > 0 && t->bad_epochs >= t->h.patience) {
            t->done = 1;
        }
    }
    if (t->epoch >= t->h.epochs) {
        t->done = 1;
    }
    if (t->done) {
        restore_best(t);
    }
    if (t->fn != NULL && t->fn(t->user, t) != 0) {
        return aimsi_err(&t->obj, AIMS_E_CANCELLED, "training stopped by the progress "
                                                    "callback after epoch %lld",
                         (long long)t->epoch);
    }
    return AIMS_OK;
}

static aims_status after_step(aims_trainer *t, int *out_done)
{
    t->step++;
    t->pos++;
    aims_status rc = AIMS_OK;
    if (t->pos == t->steps_per_epoch) {
        rc = end_epoch(t);
    }
    *out_done = t->done;
    return rc;
}

/* Loss gradient wrt the scores z (in place) for label y, returning the loss.
 * Cross-entropy: g = softmax(z) - onehot(y). Hinge (one-vs-rest, scikit-learn's
 * SGDClassifier default): with s = +1 for y and -1 for the other classes, each
 * class whose margin s z < 1 gets g = -s, the others 0. */
static double text_loss_grad(int kind, float *z, size_t k, size_t y)
{
    if (kind == 3) {
        double sum = 0.0;
        for (size_t o = 0; o < k; o++) {
            const float s = o == y ? 1.0f : -1.0f;
            const float margin = s * z[o];
            sum += margin < 1.0f ? (double)(1.0f - margin) : 0.0;
            z[o] = margin < 1.0f ? -s : 0.0f;
        }
        return sum;
    }
    float mx = z[0];
    for (size_t o = 1; o < k; o++) {
        mx = z[o] > mx ? z[o] : mx;
    }
    float sum = 0.0f;
    for (size_t o = 0; o < k; o++) {
        z[o] = expf(z[o] - mx);
        sum += z[o];
    }
    const double ce = log((double)sum) - log((double)z[y]);
    const float inv = 1.0f / sum;
    for (size_t o = 0; o < k; o++) {
        z[o] = z[o] * inv - (o == y ? 1.0f : 0.0f);
    }
    return ce;
}

/* One document of a TEXT model: forward, fused loss gradient, and sparse SGD --
 * only the embedding rows of this document's tokens move. The gradient wrt the
 * pooled vector is taken from W before W is updated (same pass); text_linear
 * has no W, the pooled vector is the scores, so that gradient is g itself. */
static double text_step(aims_trainer *t, size_t row, float lr)
{
    aims_model *m = t->m;
    const aims_dataset *ds = t->train;
    const size_t e = m->embed_dim;
    const size_t k = m->output_dim;
    float *h = t->th;
    float *dh = t->tdh;
    float *z = t->tz;
    aimsi_text_hidden(m, ds, row, h);
    aimsi_text_logits(m, h, z);
    const double loss = text_loss_grad(m->loss, z, k, (size_t)ds->labels[row]);
    float *w = m->params + m->layers[0].w_off;
    float *b = m->params + m->layers[0].b_off;
    memset(dh, 0, e * sizeof *dh);
    for (size_t o = 0; o < k; o++) {
        const float g = z[o];
        const float step = lr * g;
        b[o] -= step;
        if (m->text_linear) {
            dh[o] = g;
            continue;
        }
        float *wr = w + o * e;
        for (size_t j = 0; j < e; j++) {
            dh[j] += g * wr[j];
            wr[j] -= step * h[j];
        }
    }
    const uint64_t t0 = ds->tok_off[row];
    const uint64_t t1 = ds->tok_off[row + 1];
    if (t1 > t0) {
        const float scale = lr * aimsi_text_pool_scale(m, t1 - t0);
        float *emb = m->params + m->emb_off;
        for (uint64_t i = t0; i < t1; i++) {
            const float s = scale * (ds->tok_w != NULL ? ds->tok_w[i] : 1.0f);
            float *v = emb + (size_t)ds->tok_ids[i] * e;
            for (size_t j = 0; j < e; j++) {
                v[j] -= s * dh[j];
            }
        }
    }
    return loss;
}

/* Divergence: the loss of step t->step is not finite (NaN or inf). The run
 * stops for good (the run's buffers are released, every later step returns
 * the same status, parameters may be changed for a new begin); the check runs
 * before the update, so no NaN gradient is applied (the weights may still
 * hold inf from the last finite-loss update). Data was checked finite at
 * begin, so the cause is the optimisation. */
static aims_status diverged(aims_trainer *t, double loss)
{
    if (!t->diverged) {
        end_run(t); /* parameters may change now, and a new begin() starts over */
    }
    t->diverged = 1;
    t->train_loss = loss;
    return aimsi_err(&t->obj, AIMS_E_RANGE,
                     "training diverged at step %lld (epoch %lld): the loss is %s; lower the "
                     "learning rate (lr = %g) or scale the features",
                     (long long)t->step, (long long)t->epoch + 1, isnan(loss) ? "NaN" : "inf",
                     t->h.lr);
}

aims_status aims_trainer_step(aims_trainer *t, int *out_done)
{
    if (!TRAINER_OK(t) || out_done == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_done");
    }
    if (t->diverged) {
        return diverged(t, t->train_loss);
    }
    if (!t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE, "aims_trainer_step: no run (call begin)");
    }
    if (t->done) {
        *out_done = 1;
        return AIMS_OK;
    }
    if (atomic_exchange(&t->cancel, 0) != 0) {
        return aimsi_err(&t->obj, AIMS_E_CANCELLED, "training cancelled at step %lld",
                         (long long)t->step);
    }
    if (t->pos == 0) {
        make_perm(t, t->epoch);
        t->loss_sum = 0.0;
        t->loss_rows = 0;
        t->epoch_t0 = aimsi_now_ns();
    }
    const size_t first = (size_t)t->pos * t->bmax;
    const size_t n = t->n_tr - first < t->bmax ? t->n_tr - first : t->bmax;
    if (t->m->kind == AIMS_MODEL_TEXT) {
        const double loss = text_step(t, t->tr_idx[t->perm[first]], (float)lr_at(t, t->step));
        if (!isfinite(loss)) {
            return diverged(t, loss);
        }
        t->loss_sum += loss;
        t->loss_rows += 1;
        return after_step(t, out_done);
    }
    gather(t, first, n);
    forward(t, n);
    const double loss = loss_grad(t, n);
    if (!isfinite(loss)) {
        return diverged(t, loss); /* before backward: no NaN gradient is applied */
    }
    t->loss_sum += loss;
    t->loss_rows += n;
    opt_step o;
    o.lr = (float)lr_at(t, t->step);
    o.mom = (float)t->h.mom;
    o.wd = (float)t->h.wd;
    o.b1 = (float)t->h.b1;
    o.b2 = (float)t->h.b2;
    o.eps = (float)t->h.eps;
    o.c1 = (float)(1.0 - pow(t->h.b1, (double)(t->step + 1)));
    o.c2 = (float)(1.0 - pow(t->h.b2, (double)(t->step + 1)));
    backward(t, n, &o);
    return after_step(t, out_done);
}

aims_status aims_trainer_epoch(aims_trainer *t, int *out_done)
{
    if (!TRAINER_OK(t) || out_done == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_done");
    }
    const int64_t start = t->epoch;
    int done = 0;
    do {
        AIMSI_TRY(aims_trainer_step(t, &done));
    } while (!done && t->epoch == start);
    *out_done = done;
    return AIMS_OK;
}

aims_status aims_trainer_fit(aims_trainer *t, const aims_dataset *train,
                             const aims_dataset *val)
{
    AIMSI_TRY(aims_trainer_begin(t, train, val));
    int done = 0;
    while (!done) {
        AIMSI_TRY(aims_trainer_step(t, &done));
    }
    return AIMS_OK;
}

aims_status aims_trainer_stat(const aims_trainer *t, aims_stat stat, double *out_value)
{
    if (!TRAINER_OK(t) || out_value == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_value");
    }
    double v = 0.0;
    switch (stat) {
    case AIMS_STAT_EPOCH:
        v = (double)t->epoch;
        break;
    case AIMS_STAT_STEP:
        v = (double)t->step;
        break;
    case AIMS_STAT_TRAIN_LOSS:
        v = t->pos > 0 && t->loss_rows > 0 ? t->loss_sum / (double)t->loss_rows : t->train_loss;
        break;
    case AIMS_STAT_VAL_LOSS:
        v = t->val_loss;
        break;
    case AIMS_STAT_VAL_ACCURACY:
        v = t->val_acc;
        break;
    case AIMS_STAT_SAMPLES_PER_S:
        v = t->sps;
        break;
    case AIMS_STAT_LR:
        v = t->running ? lr_at(t, t->step) : t->h.lr;
        break;
    case AIMS_STAT_BEST_EPOCH:
        v = (double)t->best_epoch;
        break;
    case AIMS_STAT_STEPS_PER_EPOCH:
        v = (double)t->steps_per_epoch;
        break;
    default:
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "aims_trainer_stat: unknown stat %d",
                         (int)stat);
    }
    *out_value = v;
    return AIMS_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------- */

/* FNV-1a over everything a resume must agree on. */
static uint64_t run_fingerprint(const aims_trainer *t)
{
    uint64_t v[32];
    size_t n = 0;
    const hyper *h = &t->h;
    const int64_t ints[] = {h->opt,     h->nesterov, h->sched,   h->warmup, h->step_epochs,
                            h->batch,   h->epochs,   h->seed,    h->threads, h->patience,
                            h->metric};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        v[n++] = (uint64_t)ints[i];
    }
    const double dbl[] = {h->lr, h->mom, h->b1, h->b2, h->eps, h->wd, h->gamma, h->val_frac,
                          h->min_delta, t->m->dropout};
    for (size_t i = 0; i < sizeof dbl / sizeof dbl[0]; i++) {
        memcpy(&v[n++], &dbl[i], sizeof(double));
    }
    v[n++] = t->n_tr;
    v[n++] = t->n_va;
    v[n++] = t->train->rows;
    v[n++] = t->m->n_params;
    v[n++] = t->val != NULL ? t->val->rows : 0;
    if (h->gemm != 0) { /* appended only when set: older checkpoints keep their fingerprint */
        v[n++] = (uint64_t)h->gemm;
    }
    if (t->m->kind == AIMS_MODEL_TEXT && (t->m->text_linear != 0 || t->m->loss == 3)) {
        /* same rule: a linear table can have the embedding model's size */
        v[n++] = 0x7E470000ull + (uint64_t)t->m->text_linear * 16u + (uint64_t)t->m->loss;
    }
    uint64_t f = 0xcbf29ce484222325ull;
    const uint8_t *p = (const uint8_t *)v;
    for (size_t i = 0; i < n * sizeof v[0]; i++) {
        f = (f ^ p[i]) * 0x100000001b3ull;
    }
    return f;
}

typedef struct ckpt_state {
    uint64_t version, fingerprint, epoch, step, pos, done, loss_rows, best_epoch, bad_epochs;
    double loss_sum, train_loss, val_loss, val_acc, best_metric, sps;
} ckpt_state;

aims_status aims_trainer_checkpoint(const aims_trainer *t, const char *path)
{
    if (!TRAINER_OK(t) || path == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL path");
    }
    if (!t->running) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_trainer_checkpoint: no run");
    }
    const ckpt_state s = {CKPT_VERSION,
                          run_fingerprint(t),
                          (uint64_t)t->epoch,
                          (uint64_t)t->step,
                          (uint64_t)t->pos,
                          (uint64_t)t->done,
                          t->loss_rows,
                          (uint64_t)t->best_epoch,
                          (uint64_t)t->bad_epochs,
                          t->loss_sum,
                          t->train_loss,
                          t->val_loss,
                          t->val_acc,
                          t->best_metric,
                          t->sps};
    const size_t bytes = t->m->n_params * sizeof(float);
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_CHECKPOINT, 1, &w));
    aims_status rc = aimsi_model_write(t->m, w);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_TSTA, &s, sizeof s);
    }
    if (rc == AIMS_OK && t->v1 != NULL) {
        rc = aimsi_cw_add(w, TAG_TOP1, t->v1, bytes);
    }
    if (rc == AIMS_OK && t->v2 != NULL) {
        rc = aimsi_cw_add(w, TAG_TOP2, t->v2, bytes);
    }
    if (rc == AIMS_OK && t->best != NULL) {
        rc = aimsi_cw_add(w, TAG_TBST, t->best, bytes);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_save(w, path);
    }
    aimsi_cw_destroy(w);
    return rc;
}

/* Read a float section of exactly n_params floats into dst (if dst != NULL). */
static aims_status read_floats(aimsi_creader *r, uint32_t tag, size_t n, float *dst)
{
    if (dst == NULL) {
        return aimsi_cr_has(r, tag) ? aimsi_err(NULL, AIMS_E_INVAL, "checkpoint: optimizer "
                                                                    "state does not match")
                                    : AIMS_OK;
    }
    void *p = NULL;
    size_t len = 0;
    aims_status rc = aimsi_cr_section(r, tag, n * sizeof(float), &p, &len);
    if (rc == AIMS_OK && len != n * sizeof(float)) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "checkpoint: section of %zu bytes, expected %zu",
                       len, n * sizeof(float));
    }
    if (rc == AIMS_OK) {
        memcpy(dst, p, len);
    }
    aimsi_free(p);
    return rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE
               ? aimsi_err(NULL, AIMS_E_CORRUPT, "checkpoint: a section is missing or too big")
               : rc;
}

static aims_status restore_from(aims_trainer *t, aimsi_creader *r)
{
    aims_model *loaded = NULL;
    AIMSI_TRY(aimsi_model_read(r, &loaded));
    aims_model *m = t->m;
    aims_status rc = AIMS_OK;
    if (loaded->n_params != m->n_params || loaded->n_layers != m->n_layers ||
        loaded->kind != m->kind) {
        rc = aimsi_err(NULL, AIMS_E_INVAL, "checkpoint: the model structure does not match");
    }
    for (size_t i = 0; i < m->n_layers && rc == AIMS_OK; i++) {
        if (loaded->layers[i].in != m->layers[i].in || loaded->layers[i].out != m->layers[i].out ||
            loaded->layers[i].act != m->layers[i].act) {
            rc = aimsi_err(NULL, AIMS_E_INVAL, "checkpoint: layer %zu does not match", i);
        }
    }
    ckpt_state s;
    void *p = NULL;
    size_t len = 0;
    if (rc == AIMS_OK) {
        rc = aimsi_cr_section(r, TAG_TSTA, sizeof s, &p, &len);
        if (rc == AIMS_OK && len != sizeof s) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "checkpoint: state of %zu bytes", len);
        } else if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "checkpoint: state section missing");
        }
    }
    if (rc == AIMS_OK) {
        memcpy(&s, p, sizeof s);
        if (s.version != CKPT_VERSION || s.fingerprint != run_fingerprint(t)) {
            rc = aimsi_err(NULL, AIMS_E_INVAL, "checkpoint: written by a run with other data "
                                               "or parameters");
        } else if (s.pos >= (uint64_t)t->steps_per_epoch || s.epoch > (uint64_t)t->h.epochs ||
                   s.step != s.epoch * (uint64_t)t->steps_per_epoch + s.pos || s.done > 1 ||
                   s.best_epoch > s.epoch) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "checkpoint: inconsistent counters");
        }
    }
    aimsi_free(p);
    /* read into the live buffers only after everything else checked out; a
     * failure in these leaves a half-restored optimizer, so begin() again */
    if (rc == AIMS_OK) {
        rc = read_floats(r, TAG_TOP1, m->n_params, t->v1);
    }
    if (rc == AIMS_OK) {
        rc = read_floats(r, TAG_TOP2, m->n_params, t->v2);
    }
    if (rc == AIMS_OK) {
        rc = read_floats(r, TAG_TBST, m->n_params, t->best);
    }
    if (rc == AIMS_OK) {
        memcpy(m->params, loaded->params, m->n_params * sizeof *m->params);
        t->epoch = (int64_t)s.epoch;
        t->step = (int64_t)s.step;
        t->pos = (int64_t)s.pos;
        t->done = (int)s.done;
        t->loss_rows = (size_t)s.loss_rows;
        t->best_epoch = (int64_t)s.best_epoch;
        t->bad_epochs = (int64_t)s.bad_epochs;
        t->loss_sum = s.loss_sum;
        t->train_loss = s.train_loss;
        t->val_loss = s.val_loss;
        t->val_acc = s.val_acc;
        t->best_metric = s.best_metric;
        t->sps = s.sps;
        make_perm(t, t->epoch);
        t->epoch_t0 = aimsi_now_ns();
    }
    aims_model_destroy(loaded);
    return rc;
}

aims_status aims_trainer_restore(aims_trainer *t, const char *path)
{
    if (!TRAINER_OK(t) || path == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL path");
    }
    if (!t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE, "aims_trainer_restore: no run (call begin)");
    }
    aimsi_creader *r = NULL;
    aims_status rc = aimsi_cr_open_file(path, (uint64_t)1 << 34, AIMSI_KIND_CHECKPOINT, &r);
    if (rc == AIMS_OK) {
        rc = restore_from(t, r);
        aimsi_cr_destroy(r);
    }
    return rc == AIMS_OK ? AIMS_OK : aimsi_err_adopt(&t->obj, rc);
}
