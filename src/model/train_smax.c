/*
 * train_smax.c -- softmax regression's own training step: one dense layer
 * (y = x W^T + b, 2..16 classes), softmax + cross-entropy, fp32, on a CPU
 * with AVX-512 or AVX2 + FMA. This file is the step (batch groups, the
 * meeting point, the update, the compact copy's life); a group's arithmetic
 * is in the per-ISA kernels, train_smax_avx512.c and train_smax_avx2.c
 * (aimsi_smax.h), one table picked once from __builtin_cpu_supports. The
 * step uses the run's pool (the own GEMM's) or, where the run has none (no
 * own GEMM on this CPU), a pool of its own.
 *
 * Why a path of its own. With 10 classes the two GEMMs of a step are thin
 * (128 x 10 x 784 and 10 x 784 x 128): the general step (train_dense.c)
 * copies the 128 random rows of the batch into a block (400 KB), packs W^T
 * into a 32-column panel of which 10 columns are real (the forward then
 * spends 6 of every 16 lanes on padding), packs the batch again into
 * panels for the weight gradient, runs both GEMMs on one core (below the
 * pool's threshold) and makes separate passes for the loss, the bias sums
 * and the update. Here a step is one pool run (aimsi_train_smax_step; the
 * two runs A then B below stay as aimsi_train_smax_grad + _apply, for the
 * test that the one run gives their bits), in two phases with a meeting
 * point between them:
 *
 *   A. every batch group (SMAX_GROUPS fixed halves of the batch, whatever the
 *      thread count) on its own core: the rows are read where they lie in
 *      the dataset (no gather copy; the lines of the rows four pairs ahead
 *      are prefetched into L2 while a pair computes), the logits come from dot products
 *      along the features (lanes = 16 features, two rows share every load of
 *      W, so all 16 lanes do real work), then softmax, loss and the loss
 *      gradient G per row with the classes in the lanes of one vector (the
 *      formula of train_dense.c; exp is a 16-lane polynomial within 2 ulp of
 *      expf, so these probabilities may differ from aimsi_softmax_exp's --
 *      the one predict uses -- in the last bits), and last the group's share
 *      of the weight gradient,
 *      G^T X over its rows, register-blocked (K classes x 32 features in
 *      registers, the group's rows streamed from this core's L2 where the
 *      forward left them), into the group's own gradient block;
 *   B. the optimizer: every parameter's gradient is the sum of the groups'
 *      blocks in group order, then train_opt.c's update (SGD with or without
 *      momentum or Nesterov, Adam, AdamW: the trainer's own arithmetic),
 *      element-wise in chunks over the pool.
 *
 * Between A and B every thread checks the batch loss (see "the one-run
 * step" below); during B it prefetches the next batch's first rows. From
 * the run's second epoch on, A reads a u8 copy of the features instead of
 * the floats when every feature is k / d (Fashion-MNIST's pixels k / 255):
 * a quarter of the bytes from DRAM, the same bits (see "the compact copy").
 *
 * Determinism. Each logit, each group block and each final sum is computed
 * by one thread in a fixed order; the groups are fixed halves of the batch,
 * so the trained bits do not depend on the thread count (exact resume and
 * determinism hold as in the general path). The AVX2 kernels' bits are not
 * the AVX-512 kernels' (other partial sums); each is independent of threads. They are not the bits of the
 * general path (its sums run in another order): aimsi_train_smax_force(0)
 * switches this path off, for the test that compares the two.
 *
 * Divergence. The loss of the batch is known after A; every thread checks
 * it before B (the trainer too, after the run), so a non-finite step is never
 * applied (the contract of aims_trainer_step).
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_smax.h"

enum { SMAX_APPLY_CHUNK = 4096 };

struct aimsi_smax {
    const aimsi_smax_isa *isa; /* the group kernels for this CPU */
    aimsi_pool *pool;          /* the run's (the own GEMM's) pool; NULL: one thread */
    float *part;       /* SMAX_GROUPS x n_params: each group's gradient (W, b) */
    size_t *idx;       /* bmax: dataset rows of this batch */
    size_t n;          /* rows in this batch */
    double loss[SMAX_GROUPS];
    /* the compact copy: x[i] == decode(xq[i]) bit for bit once READY */
    uint8_t *xq;       /* dataset rows x in codes (NULL: none) */
    float qd;          /* decode(k) = k / qd, correctly rounded */
    int qstate;        /* SMAX_Q_* */
    atomic_int qbad;   /* a feature of this epoch's rows has no code */
    /* the one-run step (aimsi_train_smax_step): claims and the meeting point */
    atomic_uint gnext;  /* next batch group to claim */
    atomic_uint gdone;  /* batch groups finished */
    atomic_size_t cnext; /* next update chunk to claim */
    pthread_mutex_t lock; /* with met: a thread that waited too long sleeps */
    pthread_cond_t met;
    int sync_init;
};
/* The compact copy's life: made during the first whole epoch of a run, from
 * the rows the steps read anyway, used from the next epoch on. */
enum { SMAX_Q_PENDING = 0, SMAX_Q_MAKING = 1, SMAX_Q_READY = 2 };

static atomic_int g_smax = 1;
static atomic_int g_smax_one_run = 1;
static atomic_int g_smax_avx2 = 0; /* the AVX2 kernels even on an AVX-512 CPU (tests) */
/* Off by default: measured (loaded, docs/kernels.md "Session 11: P2"), the
 * fresh 47 MB a fit must fault in and the first epoch's coding cost more
 * than the cheaper reads of epochs 2..5 save; it pays when the copy
 * outlives a fit (not done). */
static atomic_int g_smax_compact = 0;

int aimsi_train_smax_compact_force(int on)
{
    return atomic_exchange(&g_smax_compact, on ? 1 : 0);
}

int aimsi_train_smax_compact_on(const aims_trainer *t)
{
    return t->smax != NULL && t->smax->xq != NULL && t->smax->qstate == SMAX_Q_READY;
}

int aimsi_train_smax_one_run_force(int on)
{
    return atomic_exchange(&g_smax_one_run, on ? 1 : 0);
}

int aimsi_train_smax_force(int on)
{
    return atomic_exchange(&g_smax, on ? 1 : 0);
}

int aimsi_train_smax_on(const aims_trainer *t)
{
    return t->smax != NULL;
}

void aimsi_train_smax_end(aims_trainer *t)
{
    if (t->smax != NULL) {
        if (t->smax->sync_init) {
            pthread_cond_destroy(&t->smax->met);
            pthread_mutex_destroy(&t->smax->lock);
        }
        aimsi_free(t->smax->xq);
        aimsi_free(t->smax->part);
        aimsi_free(t->smax->idx);
        aimsi_free(t->smax);
        t->smax = NULL;
    }
}

#ifdef AIMSI_HAVE_SMAX
static void group_task(void *ctx, size_t gi)
{
    const aimsi_smax_ctx *s = ctx;
    const aims_trainer *t = s->t;
    const struct aimsi_smax *sm = t->smax;
    const aimsi_dense *L = &t->m->layers[0];
    const size_t r0 = gi * sm->n / SMAX_GROUPS;
    const size_t r1 = (gi + 1) * sm->n / SMAX_GROUPS;
    float *part = sm->part + gi * t->m->n_params;
    double *loss = &t->smax->loss[gi];
    if (r0 == r1) { /* an empty group adds zeros */
        memset(part, 0, t->m->n_params * sizeof *part);
        *loss = 0.0;
        return;
    }
    sm->isa->group[s->k](s, sm->idx + r0, r1 - r0, s->xb + r0 * s->in, s->g + r0 * s->k,
                  part + L->w_off, part + L->b_off, loss);
}

/* ---- the compact copy (made by group_k, read by group_q) ----
 *
 * A step reads 128 random rows of 784 floats (400 KB) from DRAM; Fashion-
 * MNIST's features are pixels k / 255. When every feature of the dataset is
 * k / d for a u8 k and one d (d found from the smallest positive value of
 * the first rows), a u8 copy holds the same information in a quarter of the
 * bytes, and decode16 gives back every feature's exact bits (checked for
 * each feature while the copy is made: a single mismatch, -0.0, NaN or a
 * value out of range, and there is no copy). A separate pass would read the
 * whole dataset once more (188 MB: a sixth of a 5-epoch fit); instead the
 * steps of the run's first whole epoch, which read every training row once,
 * write each row's codes right after its logits (the row is in L1 then),
 * and the next epochs read the codes. */

enum { SMAX_PROBE_ROWS = 64 };

static void compact_begin(aims_trainer *t, struct aimsi_smax *s)
{
    const aims_dataset *ds = t->train;
    const size_t probe = (ds->rows < SMAX_PROBE_ROWS ? ds->rows : SMAX_PROBE_ROWS) * ds->cols;
    float v1 = INFINITY;
    for (size_t e = 0; e < probe; e++) {
        if (ds->x[e] > 0.0f && ds->x[e] < v1) {
            v1 = ds->x[e];
        }
    }
    const float qd = rintf(1.0f / v1);
    if (!(qd >= 1.0f && qd <= 65536.0f)) {
        return; /* no positive value (or a tiny one): not k / d */
    }
    s->xq = aimsi_malloc(ds->rows * ds->cols);
    if (s->xq == NULL) {
        return; /* an optimisation only */
    }
    /* 2 MB pages: a fault per 4 KB page costs more than its rows here (a VM),
     * and the steps' random rows then miss the TLB less */
    aimsi_hint_hugepages(s->xq, ds->rows * ds->cols);
    s->qd = qd;
    s->qstate = SMAX_Q_PENDING;
    atomic_init(&s->qbad, 0);
}

/* At the start of every epoch (first == 0): a pending copy is made during
 * this epoch (every training row is read once per epoch); one made during
 * the last epoch is used from now on, or freed if a feature had no code. */
static void compact_epoch(struct aimsi_smax *sm, size_t first)
{
    if (sm->xq == NULL || first != 0) {
        return;
    }
    if (sm->qstate == SMAX_Q_PENDING) {
        sm->qstate = SMAX_Q_MAKING;
    } else if (sm->qstate == SMAX_Q_MAKING) {
        if (atomic_load(&sm->qbad)) {
            aimsi_free(sm->xq);
            sm->xq = NULL;
        } else {
            sm->qstate = SMAX_Q_READY;
        }
    }
}

/* The group kernels for this CPU, read once: AVX-512 F/BW/VL/DQ, else AVX2
 * and FMA, else none (the general step trains). */
static const aimsi_smax_isa *g_isa;
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

static void read_isa(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        g_isa = &aimsi_smax_avx512;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        g_isa = &aimsi_smax_avx2;
    }
}

static const aimsi_smax_isa *smax_isa(void)
{
    pthread_once(&g_isa_once, read_isa);
    if (g_isa == &aimsi_smax_avx512 && atomic_load(&g_smax_avx2)) {
        return &aimsi_smax_avx2; /* an AVX-512 CPU runs AVX2 too */
    }
    return g_isa;
}
#endif /* AIMSI_HAVE_SMAX */

int aimsi_train_smax_cpu_ok(void)
{
#ifdef AIMSI_HAVE_SMAX
    return smax_isa() != NULL;
#else
    return 0;
#endif
}

const char *aimsi_train_smax_isa(void)
{
#ifdef AIMSI_HAVE_SMAX
    const aimsi_smax_isa *isa = smax_isa();
    return isa != NULL ? isa->name : NULL;
#else
    return NULL;
#endif
}

int aimsi_train_smax_avx2_force(int on)
{
    return atomic_exchange(&g_smax_avx2, on ? 1 : 0);
}

void aimsi_train_smax_begin(aims_trainer *t)
{
#ifdef AIMSI_HAVE_SMAX
    const aims_model *m = t->m;
    const aims_dataset *ds = t->train;
    const aimsi_smax_isa *isa = smax_isa();
    /* The step runs on the own GEMM's pool (t->gws is set when the run uses the
     * own GEMMs: not when OpenBLAS is asked for; every CPU with smax kernels has
     * them); gprec: a bf16 run in the own kernels. */
    if (!atomic_load(&g_smax) || isa == NULL || t->gws == NULL || t->gprec != AIMSI_GEMM_F32 ||
        m->kind == AIMS_MODEL_KIND_TEXT || m->n_layers != 1 || m->loss != 1 ||
        aimsi_train_sharded(t) || ds == NULL || ds->x == NULL || ds->labels == NULL) {
        return;
    }
    const aimsi_dense *L = &m->layers[0];
    if (L->out < 2 || L->out > SMAX_KMAX || L->act != AIMS_ACT_NONE || L->in != ds->cols ||
        L->in == 0) {
        return;
    }
    struct aimsi_smax *s = aimsi_calloc(1, sizeof *s);
    if (s == NULL) {
        return; /* an optimisation only: the general step trains the same model */
    }
    s->part = aimsi_malloc(SMAX_GROUPS * m->n_params * sizeof *s->part);
    s->idx = aimsi_malloc(t->bmax * sizeof *s->idx);
    t->smax = s;
    s->isa = isa;
    s->pool = t->pool;
    if (s->part == NULL || s->idx == NULL) {
        aimsi_train_smax_end(t);
        return;
    }
    atomic_init(&s->gnext, 0);
    atomic_init(&s->gdone, 0);
    atomic_init(&s->cnext, 0);
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        aimsi_train_smax_end(t);
        return;
    }
    if (pthread_cond_init(&s->met, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        aimsi_train_smax_end(t);
        return;
    }
    s->sync_init = 1;
    if (atomic_load(&g_smax_compact) && isa->compact) {
        compact_begin(t, s);
    }
#else
    (void)t;
#endif
}

#ifdef AIMSI_HAVE_SMAX
/* The batch's summed loss: the groups' sums in group order. */
static double batch_loss(const struct aimsi_smax *sm)
{
    double total = 0.0;
    for (size_t gi = 0; gi < SMAX_GROUPS; gi++) {
        total += sm->loss[gi];
    }
    return total;
}

/* The batch rows [first, first + n) of this epoch's order, and the context
 * of the group kernels for them. */
static aimsi_smax_ctx batch_ctx(aims_trainer *t, size_t first, size_t n)
{
    struct aimsi_smax *sm = t->smax;
    const aimsi_dense *L = &t->m->layers[0];
    compact_epoch(sm, first);
    for (size_t r = 0; r < n; r++) {
        sm->idx[r] = t->tr_idx[t->perm[first + r]];
    }
    sm->n = n;
    const aimsi_smax_ctx s = {.t = t,
                        .x = t->train->x,
                        .xq = sm->qstate == SMAX_Q_READY ? sm->xq : NULL,
                        .xb = t->xb,
                        .qd = sm->qd,
                        .qmake = sm->qstate == SMAX_Q_MAKING ? sm->xq : NULL,
                        .qbad = &sm->qbad,
                        .labels = t->train->labels,
                        .in = L->in,
                        .k = L->out,
                        .w = t->m->params + L->w_off,
                        .b = t->m->params + L->b_off,
                        .g = t->act[0],
                        .inv_n = 1.0f / (float)n};
    return s;
}
#endif

double aimsi_train_smax_grad(aims_trainer *t, size_t first, size_t n)
{
#ifdef AIMSI_HAVE_SMAX
    struct aimsi_smax *sm = t->smax;
    const aimsi_smax_ctx s = batch_ctx(t, first, n);
    aimsi_pool_run(t->smax->pool, SMAX_GROUPS, group_task, (void *)&s);
    return batch_loss(sm);
#else
    (void)t;
    (void)first;
    (void)n;
    return NAN;
#endif
}

typedef struct apply_job {
    const aims_trainer *t;
    const opt_step *o;
} apply_job;

/* Parameters [i * SMAX_APPLY_CHUNK, ...): gradient = the groups' blocks
 * summed in group order (into v1 for plain SGD, whose v1 holds mu v, else
 * into grad), then train_opt.c's update of the same range. */
static void apply_task(void *ctx, size_t i)
{
    const apply_job *a = ctx;
    const aims_trainer *t = a->t;
    const size_t np = t->m->n_params;
    const size_t off = i * SMAX_APPLY_CHUNK;
    const size_t cnt = np - off < SMAX_APPLY_CHUNK ? np - off : SMAX_APPLY_CHUNK;
    const float *p = t->smax->part + off;
    const int fast = t->h.opt == OPT_SGD && !t->h.nesterov;
    float *dst = fast ? t->v1 + off : t->grad + off;
    for (size_t e = 0; e < cnt; e++) {
        float gsum = p[e];
        for (size_t gi = 1; gi < SMAX_GROUPS; gi++) {
            gsum += p[gi * np + e];
        }
        dst[e] = fast ? dst[e] + gsum : gsum;
    }
    aimsi_train_update_range(t, a->o, off, cnt);
}

void aimsi_train_smax_apply(aims_trainer *t, const opt_step *o)
{
    apply_job a = {t, o};
    const size_t np = t->m->n_params;
    aimsi_pool_run(t->smax->pool, (np + SMAX_APPLY_CHUNK - 1) / SMAX_APPLY_CHUNK, apply_task, &a);
}

/* ---- the one-run step ----
 *
 * aimsi_train_smax_grad + the trainer's loss check + aimsi_train_smax_apply
 * are two pool runs per step (publish, wake, drain, join, twice: at ~60 us a
 * step, the hand-offs were a good part of it). Here one run does it all:
 * every thread claims batch groups until none is left, then waits until all
 * groups are done (a bounded spin that yields, then a condition variable:
 * never a pure spin on a shared machine), sums the groups' losses in group
 * order -- every thread the same sum, so all agree whether the step is
 * finite, and a non-finite step writes nothing -- and then claims update
 * chunks. The arithmetic is apply_task's and group_task's, in the same
 * order, so the bits are the two-run path's (aimsi_train_smax_one_run_force
 * keeps that path, for the test that compares them).
 *
 * Across the step boundary: while it updates, the thread that computed
 * group g prefetches the first rows of the next batch's group g (the
 * epoch's order is known), so their DRAM latency overlaps the update and the
 * next hand-off instead of starting the next step. */

enum { SMAX_SPINS = 2048 };

#ifdef AIMSI_HAVE_SMAX
typedef struct step_job {
    aimsi_smax_ctx s;
    apply_job a;
    size_t chunks;
    size_t nnext[SMAX_GROUPS]; /* rows of the next batch's group g to prefetch */
    const void *next[SMAX_GROUPS][2 * SMAX_AHEAD]; /* rows of xq or x */
    size_t row_bytes;
} step_job;

static void wait_groups(struct aimsi_smax *sm)
{
    for (unsigned i = 1; i <= SMAX_SPINS; i++) {
        if (atomic_load_explicit(&sm->gdone, memory_order_acquire) == SMAX_GROUPS) {
            return;
        }
        if ((i & 15u) == 0) {
            sched_yield(); /* an oversubscribed machine: let the group's thread run */
        }
        _mm_pause();
    }
    pthread_mutex_lock(&sm->lock);
    while (atomic_load(&sm->gdone) != SMAX_GROUPS) {
        pthread_cond_wait(&sm->met, &sm->lock);
    }
    pthread_mutex_unlock(&sm->lock);
}

static void step_task(void *ctx, size_t ti)
{
    (void)ti;
    step_job *j = ctx;
    struct aimsi_smax *sm = j->s.t->smax;
    unsigned mine = 0; /* bit g: this thread computed group g */
    for (;;) {
        const unsigned g = atomic_fetch_add(&sm->gnext, 1);
        if (g >= SMAX_GROUPS) {
            break;
        }
        group_task(&j->s, g);
        mine |= 1u << g;
        pthread_mutex_lock(&sm->lock);
        atomic_fetch_add_explicit(&sm->gdone, 1, memory_order_release);
        pthread_cond_broadcast(&sm->met);
        pthread_mutex_unlock(&sm->lock);
    }
    wait_groups(sm);
    const double total = batch_loss(sm);
    if (!isfinite(total)) {
        return; /* every thread sees the same sum: nobody writes */
    }
    for (unsigned g = 0; g < SMAX_GROUPS; g++) {
        if (mine & (1u << g)) {
            for (size_t r = 0; r < j->nnext[g]; r++) {
                aimsi_smax_prefetch_row(j->next[g][r], j->row_bytes);
            }
        }
    }
    for (;;) {
        const size_t c = atomic_fetch_add(&sm->cnext, 1);
        if (c >= j->chunks) {
            break;
        }
        apply_task(&j->a, c);
    }
}
#endif /* AIMSI_HAVE_SMAX */

double aimsi_train_smax_step(aims_trainer *t, size_t first, size_t n, const opt_step *o)
{
#ifdef AIMSI_HAVE_SMAX
    if (!atomic_load(&g_smax_one_run)) {
        const double loss = aimsi_train_smax_grad(t, first, n);
        if (isfinite(loss)) {
            aimsi_train_smax_apply(t, o);
        }
        return loss;
    }
    struct aimsi_smax *sm = t->smax;
    const size_t in = t->m->layers[0].in;
    const size_t np = t->m->n_params;
    step_job j = {.s = batch_ctx(t, first, n),
                  .a = {t, o},
                  .chunks = (np + SMAX_APPLY_CHUNK - 1) / SMAX_APPLY_CHUNK};
    j.row_bytes = j.s.xq != NULL ? in : in * sizeof(float); /* after batch_ctx's epoch turn */
    const size_t nf = first + n; /* the next batch, when it is in this epoch's order */
    const size_t n2 = nf < t->n_tr ? (t->n_tr - nf < t->bmax ? t->n_tr - nf : t->bmax) : 0;
    for (size_t g = 0; g < SMAX_GROUPS; g++) {
        const size_t r0 = g * n2 / SMAX_GROUPS;
        const size_t r1 = (g + 1) * n2 / SMAX_GROUPS;
        j.nnext[g] = r1 - r0 < 2 * SMAX_AHEAD ? r1 - r0 : 2 * SMAX_AHEAD;
        for (size_t r = 0; r < j.nnext[g]; r++) {
            const size_t row = t->tr_idx[t->perm[nf + r0 + r]];
            j.next[g][r] = j.s.xq != NULL ? (const void *)(j.s.xq + row * in)
                                          : (const void *)(j.s.x + row * in);
        }
    }
    atomic_store(&sm->gnext, 0);
    atomic_store(&sm->gdone, 0);
    atomic_store(&sm->cnext, 0);
    aimsi_pool_run(t->smax->pool, aimsi_pool_threads(t->smax->pool), step_task, &j);
    return batch_loss(sm);
#else
    (void)t;
    (void)first;
    (void)n;
    (void)o;
    return NAN;
#endif
}
