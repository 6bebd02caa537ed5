/*
 * train_shard.c -- data-parallel steps (aims_dist.h): one mini-batch cut into
 * shards whose partial gradients are summed in a fixed order, computed either
 * all by this process (aims_trainer_set_shards) or one per process
 * (aims_trainer_set_mpi; train_mpi.c carries the bytes, this file knows no MPI).
 *
 * Why a fixed order. Floating-point addition is not associative, so "the same
 * global batch" does not give the same weights unless every sum is taken in
 * the same order. An ordinary step sums the batch's rows inside the dW GEMM
 * (k = batch rows), in an order that depends on the kernel's blocking; a
 * distributed step cannot reproduce that. So a sharded step defines its own
 * order, the same wherever it runs: shard s of an n-row batch is rows
 * [n s / S, n (s + 1) / S) of it; each shard runs the ordinary forward pass,
 * loss gradient (normalized by the whole batch's n, norm_rows) and backward
 * pass (without update) on its rows alone, leaving its partial gradient and
 * summed loss in its block of sbuf; then grad = ((g_0 + g_1) + g_2) + ...
 * over the non-empty shards in shard order, and the optimizer updates every
 * parameter once from grad. One process computes every block itself; an MPI
 * rank computes its own block and receives the others (allgather), then sums
 * exactly the same blocks in exactly the same order. Same code, same rows,
 * same sums: the same bits.
 *
 * Memory. begin() allocates shards x sblk bytes (sblk = the loss, a double,
 * a stop word, then n_params floats, rounded up to 8 bytes); a step never
 * allocates.
 *
 * Stopping alike (docs/MPI.md). Every step is collective, so a rank must not
 * leave a run alone: a cancel on one MPI rank (aims_trainer_cancel, or a
 * progress callback returning non-zero, which train.c turns into a cancel of
 * the next step) is written into the stop word of its block and crosses the
 * next exchange with the gradients; after it every rank sees the same words
 * and returns AIMS_E_CANCELLED from the same step with nothing applied. No
 * extra message per step: the word rides the allgather that happens anyway. A
 * shard's backward writes its gradient straight into its block (t->grad is
 * pointed there for the duration of the shard).
 *
 * Cost. A one-process sharded step does the work of an ordinary step in S
 * smaller GEMMs plus S - 1 gradient sums; an MPI rank does 1 / S of the
 * GEMMs, then moves (S - 1) x n_params floats in and sums them (measured in
 * docs/MPI.md).
 */
#include <string.h>

#include "aimsi_dist.h"
#include "aimsi_mpi.h"
#include "aimsi_train.h"

enum { MAX_SHARDS = 4096 };

/* A block: the shard's summed loss (double), the stop word, the gradient. */
#define BLK_STOP ((size_t)sizeof(double))
#define BLK_GRAD ((size_t)(2 * sizeof(double)))

int aimsi_train_sharded(const aims_trainer *t)
{
    return t->shards > 1;
}

/* First row of shard s of an n-row batch cut into S shards. */
static size_t shard_lo(size_t n, size_t s, size_t S)
{
    return n * s / S;
}

static void drop_dist(aims_trainer *t)
{
    if (t->dist != NULL && t->dist->destroy != NULL) {
        t->dist->destroy(t->dist);
    }
    t->dist = NULL;
}

aims_status aims_trainer_set_shards(aims_trainer *t, int shards)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    if (shards < 1 || shards > MAX_SHARDS) {
        return aimsi_err(&t->obj, AIMS_E_INVAL,
                         "aims_trainer_set_shards: shards = %d, must be 1 .. %d", shards,
                         (int)MAX_SHARDS);
    }
    if (t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE,
                         "aims_trainer_set_shards: a run is in progress (begin a new one)");
    }
    drop_dist(t);
    t->shards = shards;
    return AIMS_OK;
}

aims_status aimsi_train_set_dist(aims_trainer *t, aimsi_dist *d)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    if (t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE,
                         "aims_trainer_set_mpi: a run is in progress (begin a new one)");
    }
    drop_dist(t);
    t->dist_stopped = 0;
    t->dist = d;
    t->shards = d != NULL ? d->size : 1;
    return AIMS_OK;
}

void aimsi_train_shard_destroy(aims_trainer *t)
{
    drop_dist(t);
}

aims_status aimsi_train_shard_begin(aims_trainer *t)
{
    t->dist_stopped = 0;
    if (!aimsi_train_sharded(t)) {
        return AIMS_OK;
    }
    if (t->m->kind == AIMS_MODEL_KIND_TEXT) {
        return aimsi_err(&t->obj, AIMS_E_UNSUPPORTED,
                         "aims_trainer_begin: data-parallel training (%lld shards) needs a dense "
                         "model; a TEXT model trains one document per step",
                         (long long)t->shards);
    }
    const size_t S = (size_t)t->shards;
    const size_t P = t->m->n_params;
    if (P > (SIZE_MAX / 2 / S - BLK_GRAD) / sizeof(float)) {
        return aimsi_err(&t->obj, AIMS_E_NOMEM, "aims_trainer_begin: %zu shards of %zu "
                                                "parameters overflow", S, P);
    }
    t->sblk = (BLK_GRAD + P * sizeof(float) + 7u) & ~(size_t)7u;
    t->sbuf = aimsi_malloc(S * t->sblk);
    if (t->sbuf == NULL) {
        return aimsi_err(&t->obj, AIMS_E_NOMEM,
                         "aims_trainer_begin: out of memory for %zu shard gradients", S);
    }
    return AIMS_OK;
}

void aimsi_train_shard_end(aims_trainer *t)
{
    aimsi_free(t->sbuf);
    t->sbuf = NULL;
    t->sblk = 0;
    t->norm_rows = 0;
    t->shard_salt = 0;
}

/* Shard s = rows [first, first + n) of the epoch's order: forward, loss
 * gradient and backward (no update) into the shard's block. */
static void shard_pass(aims_trainer *t, size_t first, size_t n, size_t s, unsigned char *blk)
{
    float *const keep = t->grad;
    t->grad = (float *)(void *)(blk + BLK_GRAD);
    t->shard_salt = (uint64_t)s + 1u;
    aimsi_train_gather(t, first, n);
    aimsi_train_forward(t, n);
    const double loss = aimsi_train_loss_grad(t, n);
    aimsi_train_backward(t, n, NULL);
    t->grad = keep;
    t->shard_salt = 0;
    memcpy(blk, &loss, sizeof loss);
}

/* grad = ((g_0 + g_1) + g_2) + ... and the loss likewise, over the non-empty
 * shards in shard order: the one order every process agrees on. */
static double sum_shards(aims_trainer *t, size_t n)
{
    const size_t S = (size_t)t->shards;
    const size_t P = t->m->n_params;
    float *g = t->grad;
    double loss = 0.0;
    int first = 1;
    for (size_t s = 0; s < S; s++) {
        if (shard_lo(n, s + 1, S) == shard_lo(n, s, S)) {
            continue; /* empty shard (batch narrower than the shard count) */
        }
        const unsigned char *blk = t->sbuf + s * t->sblk;
        const float *gs = (const float *)(const void *)(blk + BLK_GRAD);
        double ls;
        memcpy(&ls, blk, sizeof ls);
        if (first) {
            memcpy(g, gs, P * sizeof *g);
            loss = ls;
            first = 0;
            continue;
        }
        for (size_t i = 0; i < P; i++) {
            g[i] += gs[i];
        }
        loss += ls;
    }
    return loss;
}

/* The stop word of every block after an exchange: the first rank that
 * stopped, or -1 when none did (the same answer on every rank). */
static int first_stop(const aims_trainer *t)
{
    for (int64_t s = 0; s < t->shards; s++) {
        int64_t w = 0;
        memcpy(&w, t->sbuf + (size_t)s * t->sblk + BLK_STOP, sizeof w);
        if (w != 0) {
            return (int)s;
        }
    }
    return -1;
}

aims_status aimsi_train_shard_grad(aims_trainer *t, size_t first, size_t n, int stop,
                                   double *out_loss)
{
    const size_t S = (size_t)t->shards;
    t->norm_rows = n;
    if (t->dist == NULL) {
        for (size_t s = 0; s < S; s++) {
            const size_t lo = shard_lo(n, s, S);
            const size_t hi = shard_lo(n, s + 1, S);
            if (hi > lo) {
                shard_pass(t, first + lo, hi - lo, s, t->sbuf + s * t->sblk);
            }
        }
    } else {
        const size_t r = (size_t)t->dist->rank;
        const size_t lo = shard_lo(n, r, S);
        const size_t hi = shard_lo(n, r + 1, S);
        unsigned char *mine = t->sbuf + r * t->sblk;
        if (t->dist_stopped) { /* the ranks already left this run together */
            t->norm_rows = 0;
            return aimsi_err(&t->obj, AIMS_E_CANCELLED, "training cancelled at step %lld "
                             "(every rank stopped)", (long long)t->step);
        }
        if (hi > lo && !stop) {
            shard_pass(t, first + lo, hi - lo, r, mine);
        } else {
            memset(mine, 0, t->sblk); /* sent but skipped by every rank's sum */
        }
        const int64_t word = stop ? 1 : 0;
        memcpy(mine + BLK_STOP, &word, sizeof word);
        char err[256] = "";
        const aims_status rc = t->dist->exchange(t->dist, t->sbuf, t->sblk, err, sizeof err);
        if (rc != AIMS_OK) {
            t->norm_rows = 0;
            t->dist_stopped = 1; /* the link is broken: no rank may wait on it again */
            return aimsi_err(&t->obj, rc,
                             "aims_trainer_step: the gradient exchange of step %lld (rank %d of "
                             "%d) failed: %s",
                             (long long)t->step, t->dist->rank, t->dist->size, err);
        }
        const int who = first_stop(t);
        if (who >= 0) {
            t->norm_rows = 0;
            t->dist_stopped = 1;
            return aimsi_err(&t->obj, AIMS_E_CANCELLED, "training cancelled at step %lld: rank "
                             "%d of %d stopped, every rank stops", (long long)t->step, who,
                             t->dist->size);
        }
    }
    t->norm_rows = 0;
    *out_loss = sum_shards(t, n);
    return AIMS_OK;
}

void aimsi_train_dist_leave(aims_trainer *t)
{
    if (!TRAINER_OK(t) || t->dist == NULL || !aimsi_train_sharded(t) || !t->running ||
        t->done || t->diverged || t->dist_stopped || t->sbuf == NULL) {
        return;
    }
    unsigned char *mine = t->sbuf + (size_t)t->dist->rank * t->sblk;
    memset(mine, 0, t->sblk);
    const int64_t word = 1;
    memcpy(mine + BLK_STOP, &word, sizeof word);
    char err[256] = "";
    (void)t->dist->exchange(t->dist, t->sbuf, t->sblk, err, sizeof err);
    t->dist_stopped = 1;
}

void aimsi_train_shard_apply(aims_trainer *t, const opt_step *o)
{
    const size_t P = t->m->n_params;
    if (t->h.opt == OPT_SGD && !t->h.nesterov) {
        /* the fast SGD update keeps mu * velocity in v1 and expects the
         * gradient already added to it (train_opt.c) */
        float *v = t->v1;
        const float *g = t->grad;
        for (size_t i = 0; i < P; i++) {
            v[i] += g[i];
        }
    }
    /* every parameter's update is element-wise: one range over all layers */
    aimsi_train_update_params(t, o, 0, P);
}
