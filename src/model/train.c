/*
 * train.c -- the trainer: mini-batch gradient descent over dense models --
 * parameters, runs (begin/step/epoch/fit), validation, early stopping and
 * statistics. The batch forward/backward lives in train_dense.c, the
 * optimizer update in train_opt.c, the TEXT (fastText-style) trainer in
 * train_text.c, checkpoint/restore in train_ckpt.c; aimsi_train.h holds the
 * trainer's layout they share.
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
 * (gemm.c, gemm_avx2.c) on an AVX-512 or AVX2+FMA CPU, whose sums do not
 * depend on the thread count (nor on which of the two kernels runs);
 * on the OpenBLAS path (AIMS_TRAIN_GEMM = 1, or neither) results depend on
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
#include <stddef.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_train.h"

/* ---- parameters ---------------------------------------------------------------------- */

/* Where each trainer parameter lives in `hyper` (core/params.c does the typed access). */
static const aimsi_param_field k_hyper_fields[] = {
    {AIMS_TRAIN_OPTIMIZER, AIMSI_FIELD_I64, offsetof(hyper, opt)},
    {AIMS_TRAIN_NESTEROV, AIMSI_FIELD_I64, offsetof(hyper, nesterov)},
    {AIMS_TRAIN_SCHEDULE, AIMSI_FIELD_I64, offsetof(hyper, sched)},
    {AIMS_TRAIN_WARMUP_STEPS, AIMSI_FIELD_I64, offsetof(hyper, warmup)},
    {AIMS_TRAIN_STEP_EPOCHS, AIMSI_FIELD_I64, offsetof(hyper, step_epochs)},
    {AIMS_TRAIN_BATCH, AIMSI_FIELD_I64, offsetof(hyper, batch)},
    {AIMS_TRAIN_EPOCHS, AIMSI_FIELD_I64, offsetof(hyper, epochs)},
    {AIMS_TRAIN_SEED, AIMSI_FIELD_I64, offsetof(hyper, seed)},
    {AIMS_TRAIN_THREADS, AIMSI_FIELD_I64, offsetof(hyper, threads)},
    {AIMS_TRAIN_PATIENCE, AIMSI_FIELD_I64, offsetof(hyper, patience)},
    {AIMS_TRAIN_METRIC, AIMSI_FIELD_I64, offsetof(hyper, metric)},
    {AIMS_TRAIN_WARM_START, AIMSI_FIELD_I64, offsetof(hyper, warm)},
    {AIMS_TRAIN_GEMM, AIMSI_FIELD_I64, offsetof(hyper, gemm)},
    {AIMS_TRAIN_AVERAGE, AIMSI_FIELD_I64, offsetof(hyper, avg)},
    {AIMS_TRAIN_LR, AIMSI_FIELD_F64, offsetof(hyper, lr)},
    {AIMS_TRAIN_MOMENTUM, AIMSI_FIELD_F64, offsetof(hyper, mom)},
    {AIMS_TRAIN_BETA1, AIMSI_FIELD_F64, offsetof(hyper, b1)},
    {AIMS_TRAIN_BETA2, AIMSI_FIELD_F64, offsetof(hyper, b2)},
    {AIMS_TRAIN_EPS, AIMSI_FIELD_F64, offsetof(hyper, eps)},
    {AIMS_TRAIN_WEIGHT_DECAY, AIMSI_FIELD_F64, offsetof(hyper, wd)},
    {AIMS_TRAIN_GAMMA, AIMSI_FIELD_F64, offsetof(hyper, gamma)},
    {AIMS_TRAIN_VAL_FRACTION, AIMSI_FIELD_F64, offsetof(hyper, val_frac)},
    {AIMS_TRAIN_MIN_DELTA, AIMSI_FIELD_F64, offsetof(hyper, min_delta)},
};
static const aimsi_param_map k_hyper_map = {500, 599, k_hyper_fields,
                                            sizeof k_hyper_fields / sizeof k_hyper_fields[0]};

static aims_status trainer_set(aims_trainer *t, aims_param param, aims_param_type type, int64_t i,
                               double d)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    const aimsi_param_field *f = NULL;
    AIMSI_TRY(aimsi_param_field_of(&t->obj, &k_hyper_map, param, type,
                                   type == AIMS_PARAM_TYPE_I64 ? (double)i : d, &f));
    if (t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE,
                         "aims_trainer_set_param: a run is in progress (begin a new one)");
    }
    aimsi_param_store(&t->h, f, i, d);
    return AIMS_OK;
}

aims_status aims_trainer_set_param_i64(aims_trainer *t, aims_param param, int64_t value)
{
    return trainer_set(t, param, AIMS_PARAM_TYPE_I64, value, 0.0);
}

aims_status aims_trainer_set_param_f64(aims_trainer *t, aims_param param, double value)
{
    return trainer_set(t, param, AIMS_PARAM_TYPE_F64, 0, value);
}

aims_status aims_trainer_get_param_i64(const aims_trainer *t, aims_param param,
                                       int64_t *out_value)
{
    if (!TRAINER_OK(t) || out_value == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_value");
    }
    return aimsi_param_get(&k_hyper_map, &t->h, param, AIMS_PARAM_TYPE_I64, out_value, NULL);
}

aims_status aims_trainer_get_param_f64(const aims_trainer *t, aims_param param,
                                       double *out_value)
{
    if (!TRAINER_OK(t) || out_value == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_value");
    }
    return aimsi_param_get(&k_hyper_map, &t->h, param, AIMS_PARAM_TYPE_F64, NULL, out_value);
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
    aimsi_param_set_defaults(&k_hyper_map, &t->h);
    atomic_init(&t->cancel, 0);
    t->val_loss = NAN;
    t->val_acc = NAN;
    t->train_loss = NAN;
    *out = t;
    return AIMS_OK;
}

static void end_run(aims_trainer *t)
{
    aimsi_train_next_end(t); /* first: its gather may still read the run's buffers */
    aimsi_free(t->ws);
    aimsi_free(t->tr_idx);
    aimsi_free(t->va_idx);
    aimsi_free(t->perm);
    aimsi_free(t->yb);
    aimsi_free(t->mask_block);
    aimsi_free(t->gws);
    aimsi_pool_destroy(t->pool);
    aimsi_train_shard_end(t);
    aimsi_train_x16_end(t);
    aimsi_train_wpk_end(t);
    aimsi_train_smax_end(t);
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
    aimsi_train_shard_destroy(t);
    aimsi_obj_kill(&t->obj);
    aimsi_free(t);
}

aims_status aims_trainer_set_progress_fn(aims_trainer *t, aims_progress_fn fn, void *user)
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
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        const aims_status rc = aimsi_text_check(m, ds);
        if (rc != AIMS_OK) {
            return aimsi_err_adopt(&t->obj, rc);
        }
    } else if (ds->x == NULL || ds->cols != m->input_dim || ds->rows == 0) {
        return aimsi_err(&t->obj, AIMS_E_INVAL,
                         "aims_trainer_begin: %s has %zu rows of width %zu, model needs width %zu",
                         what, ds->rows, ds->cols, m->input_dim);
    }
    if (m->kind != AIMS_MODEL_KIND_TEXT) {
        static const char hint[] = "impute or drop it before training: one such row turns "
                                   "every weight into NaN";
        /* the scan reads every value (Fashion-MNIST: 188 MB, tens of ms per
         * fit): once per dataset, which is immutable (aimsi_data.h) */
        aims_status rc = AIMS_OK;
        if (!atomic_load_explicit(&ds->x_finite, memory_order_acquire)) {
            rc = aimsi_check_finite(AIMS_E_INVAL, what, ds->x, ds->rows, ds->cols, NULL, hint);
            if (rc == AIMS_OK) {
                atomic_store_explicit(&((aims_dataset *)ds)->x_finite, 1,
                                      memory_order_release);
            }
        }
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

uint64_t aimsi_train_mix_seed(uint64_t seed, uint64_t salt)
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
        aimsi_rng_seed(&rng, aimsi_train_mix_seed((uint64_t)t->h.seed, 0xA11CE));
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

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* The own GEMMs (gemm = auto on an AVX-512 or AVX2+FMA CPU): bf16 when the model asks
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
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        return aimsi_train_text_workspace(t);
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
    t->ws = aimsi_calloc(total + 16, sizeof(float)); /* + 16: xb on a cache line */
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
    /* the batch on a cache line: the weight gradient reads it in place (gemm.c) */
    float *p = (float *)(((uintptr_t)t->ws + 63) & ~(uintptr_t)63);
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

static void init_weights(aims_model *m, uint64_t seed)
{
    aimsi_rng rng;
    aimsi_rng_seed(&rng, aimsi_train_mix_seed(seed, 0x1417));
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

void aimsi_train_make_perm(aims_trainer *t, int64_t epoch)
{
    aimsi_rng rng;
    aimsi_rng_seed(&rng, aimsi_train_mix_seed((uint64_t)t->h.seed, 0xE90C0000ull + (uint64_t)epoch));
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
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        t->bmax = 1; /* fastText-style per-document SGD */
    }
    t->steps_per_epoch = (int64_t)((t->n_tr + t->bmax - 1) / t->bmax);
    AIMSI_TRY(aimsi_train_shard_begin(t));
    AIMSI_TRY(alloc_workspace(t));
    aimsi_train_x16_begin(t);
    aimsi_train_wpk_begin(t);
    aimsi_train_next_begin(t);
    aimsi_train_smax_begin(t); /* softmax regression's own step (train_smax.c) */
    if (!(t->h.warm && m->trained)) {
        if (m->kind == AIMS_MODEL_KIND_TEXT) {
            aimsi_train_text_init(t, (uint64_t)t->h.seed);
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
    if (mm->params == NULL && mm->kind == AIMS_MODEL_KIND_MLP && mm->loss_param == 0 &&
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
    if (t->m->kind == AIMS_MODEL_KIND_TEXT) { /* fastText: linear decay to zero over the run */
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
        aimsi_train_wpk_stale(t);
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
    if (t->done && t->m->kind == AIMS_MODEL_KIND_TEXT) {
        aimsi_train_text_average_finish(t);
    }
    if (t->done) {
        restore_best(t);
    }
    const int cb_stop = t->fn != NULL && t->fn(t->user, t) != 0;
    if (cb_stop && !t->done && t->dist != NULL && aimsi_train_sharded(t)) {
        /* over MPI: stop at the next step's exchange, with every rank */
        atomic_store(&t->cancel, 1);
    } else if (cb_stop) {
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
    const int cancel = atomic_exchange(&t->cancel, 0) != 0;
    /* over MPI a cancel must stop every rank at the same step: it rides the
     * step's exchange instead (train_shard.c, "Stopping alike") */
    const int alike = t->dist != NULL && aimsi_train_sharded(t);
    if (cancel && !alike) {
        return aimsi_err(&t->obj, AIMS_E_CANCELLED, "training cancelled at step %lld",
                         (long long)t->step);
    }
    if (t->pos == 0) {
        aimsi_train_make_perm(t, t->epoch);
        t->loss_sum = 0.0;
        t->loss_rows = 0;
        t->epoch_t0 = aimsi_now_ns();
    }
    const size_t first = (size_t)t->pos * t->bmax;
    const size_t n = t->n_tr - first < t->bmax ? t->n_tr - first : t->bmax;
    if (t->m->kind == AIMS_MODEL_KIND_TEXT) {
        const double loss = aimsi_train_text_step(t, t->tr_idx[t->perm[first]], (float)lr_at(t, t->step));
        if (!isfinite(loss)) {
            return diverged(t, loss);
        }
        t->loss_sum += loss;
        t->loss_rows += 1;
        return after_step(t, out_done);
    }
    opt_step o;
    o.lr = (float)lr_at(t, t->step);
    o.mom = (float)t->h.mom;
    o.wd = (float)t->h.wd;
    o.b1 = (float)t->h.b1;
    o.b2 = (float)t->h.b2;
    o.eps = (float)t->h.eps;
    o.c1 = (float)(1.0 - pow(t->h.b1, (double)(t->step + 1)));
    o.c2 = (float)(1.0 - pow(t->h.b2, (double)(t->step + 1)));
    double loss = 0.0;
    if (aimsi_train_sharded(t)) { /* data parallel: every shard's gradient, summed */
        AIMSI_TRY(aimsi_train_shard_grad(t, first, n, cancel, &loss));
    } else if (aimsi_train_smax_on(t)) { /* softmax regression: train_smax.c, updated */
        loss = aimsi_train_smax_step(t, first, n, &o); /* only when the loss is finite */
    } else {
        aimsi_train_gather(t, first, n);
        aimsi_train_forward(t, n);
        loss = aimsi_train_loss_grad(t, n);
    }
    if (!isfinite(loss)) {
        return diverged(t, loss); /* before backward: no NaN gradient is applied */
    }
    t->loss_sum += loss;
    t->loss_rows += n;
    if (aimsi_train_sharded(t)) {
        aimsi_train_shard_apply(t, &o);
    } else if (!aimsi_train_smax_on(t)) {
        aimsi_train_backward(t, n, &o);
    }
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

aims_status aims_trainer_get_stat(const aims_trainer *t, aims_trainer_stat stat, double *out_value)
{
    if (!TRAINER_OK(t) || out_value == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out_value");
    }
    double v = 0.0;
    switch (stat) {
    case AIMS_TRAINER_STAT_EPOCH:
        v = (double)t->epoch;
        break;
    case AIMS_TRAINER_STAT_STEP:
        v = (double)t->step;
        break;
    case AIMS_TRAINER_STAT_TRAIN_LOSS:
        v = t->pos > 0 && t->loss_rows > 0 ? t->loss_sum / (double)t->loss_rows : t->train_loss;
        break;
    case AIMS_TRAINER_STAT_VAL_LOSS:
        v = t->val_loss;
        break;
    case AIMS_TRAINER_STAT_VAL_ACCURACY:
        v = t->val_acc;
        break;
    case AIMS_TRAINER_STAT_SAMPLES_PER_S:
        v = t->sps;
        break;
    case AIMS_TRAINER_STAT_LR:
        v = t->running ? lr_at(t, t->step) : t->h.lr;
        break;
    case AIMS_TRAINER_STAT_BEST_EPOCH:
        v = (double)t->best_epoch;
        break;
    case AIMS_TRAINER_STAT_STEPS_PER_EPOCH:
        v = (double)t->steps_per_epoch;
        break;
    default:
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "aims_trainer_get_stat: unknown stat %d",
                         (int)stat);
    }
    *out_value = v;
    return AIMS_OK;
}
