/*
 * train_dense.c -- one mini-batch step of a dense model: gather the batch,
 * forward pass, fused loss gradient, backward pass (which hands each layer to
 * the optimizer in train_opt.c as soon as its gradient is complete).
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
 * In libaims' own kernels (gemm.c) those passes disappear into the GEMM's
 * epilogue, done while each block of C is still in registers: the forward
 * adds the bias and applies ReLU there, dA_prev = G W applies the ReLU
 * gate (ReLU backward) there, and the fast SGD path runs the whole update
 * (w -= lr v; v *= mu) there, so w and v are read and written once per step
 * instead of twice. The epilogue does the same operations in the same order
 * as the passes it replaces (aimsi_gemm_epi), so the weights are bit for bit
 * those of the separate passes.
 *
 * With bf16 GEMMs the gather rounds the batch to bf16 once, on the pool,
 * straight into the operand layouts both GEMMs of the first layer read (see
 * "the batch in bf16" below).
 *
 * The gather of the next batch runs on the pool's workers while the caller
 * computes the layers above the first (see "the next batch" below), so a
 * step's critical path is the first layer's two GEMMs plus the caller's part.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_train.h"

/* GEMMs big enough to thread (OpenBLAS's own line: m n k >= 4 * 65536) run
 * in the own kernels when the trainer set them up. Outputs narrower than 8
 * stay with OpenBLAS (all but a sliver of the 32-column panel would be
 * padding); from 8 up the own kernel still wins over OpenBLAS's small-matrix
 * path (softmax regression's 128 x 10 x 784 forward: measured A/B, 5 runs). */
static int use_own(const aims_trainer *t, size_t m, size_t n, size_t k)
{
    return t->gws != NULL && n >= 8 && m * n * k >= (size_t)4 * 65536;
}

/* Epilogue fusion on (1) or off (0): process-wide, for the test that proves
 * the fused step bit-identical to the separate passes. */
static atomic_int g_fuse = 1;

int aimsi_train_fusion_force(int on)
{
    return atomic_exchange(&g_fuse, on ? 1 : 0);
}

static int fuse(const aims_trainer *t, size_t m, size_t n, size_t k)
{
    return use_own(t, m, n, k) && atomic_load_explicit(&g_fuse, memory_order_relaxed);
}

/* C = op(A) op(B) + beta C, then the epilogue e (NULL: none): in the own
 * kernels while each block is in registers, else as passes over C. */
static void gemm(aims_trainer *t, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                 const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                 size_t ldc, const aimsi_gemm_epi *e, const aimsi_gemm_pre *pre)
{
    static const aimsi_gemm_pre none = {0};
    if (use_own(t, m, n, k)) {
        /* below ~2M multiply-adds the hand-off to the pool costs more than the
         * second core gains (softmax regression: 1 thread beat 2) */
        aimsi_pool *pool = m * n * k >= ((size_t)2 << 20) ? aimsi_train_pool(t) : NULL;
        aimsi_gemm_own_pre(pool, t->gws, t->gprec, trans_a, trans_b, m, n, k, a, lda, b, ldb,
                           beta, c, ldc, e, pre != NULL ? pre : &none);
        return;
    }
    aimsi_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    if (e != NULL) {
        aimsi_gemm_epi_apply(e, m, n, c, ldc);
    }
}

/* ---- the batch in bf16 ------------------------------------------------------------------ */

/* With bf16 GEMMs the first layer's two GEMMs take the batch as a bf16
 * operand: the forward as A, the weight gradient as B. Each used to round
 * the fp32 batch itself every step -- the forward's copy on the calling
 * thread while the other core waited, the weight gradient's once per thread
 * (row split) -- so the batch was rounded three times and read as fp32 three
 * times. Instead the gather, spread over the pool, rounds each row as it
 * copies it (aimsi_bf16_round_row, the GEMMs' own rounding) into xb16, in
 * the slot layout the forward's A packing made, and both GEMMs take it as is
 * (aimsi_gemm_pre); fp32 xb is then not written. Every value, and so every
 * trained bit, is what rounding the fp32 batch gave (test_kernels:
 * test_bf16_rows_bit_identical).
 *
 * Not done (estimated, not measured): a bf16 copy of the whole training
 * set, so that later epochs' gathers move half the bytes. Per fit it would
 * cost rows x in x 2 bytes (Fashion-MNIST: 94 MB of page faults and writes
 * in the first epoch) against a saving of about that size over the next
 * four epochs, plus that much memory for the run. */
static atomic_int g_x16 = 1;

int aimsi_train_x16_force(int on)
{
    return atomic_exchange(&g_x16, on ? 1 : 0);
}

/* The first layer's forward and weight-gradient GEMMs at batch n both run in
 * the own kernels (so both read xb16 and nothing reads xb). */
static int x16_fits(const aims_trainer *t, size_t n)
{
    const aimsi_dense *L = &t->m->layers[0];
    return use_own(t, n, L->out, L->in) && use_own(t, L->out, L->in, n);
}

static int x16_on(const aims_trainer *t, size_t n)
{
    return t->xb16 != NULL && x16_fits(t, n);
}

void aimsi_train_x16_end(aims_trainer *t)
{
    aimsi_free(t->x16_blk);
    t->x16_blk = NULL;
    t->xb16 = NULL;
    t->xp16 = NULL;
    t->x16_ks = 0;
}

void aimsi_train_x16_begin(aims_trainer *t)
{
    const aims_model *m = t->m;
    const aims_dataset *ds = t->train;
    if (t->gws == NULL || t->gprec != AIMSI_GEMM_BF16 || m->kind == AIMS_MODEL_KIND_TEXT ||
        m->n_layers == 0 || aimsi_train_sharded(t) || ds == NULL || ds->x == NULL ||
        ds->cols != m->layers[0].in || !atomic_load(&g_x16) || !x16_fits(t, t->bmax) ||
        !aimsi_gemm_own_available(AIMSI_GEMM_BF16)) {
        return;
    }
    const size_t ks = (m->layers[0].in + 1) / 2;
    /* the rows, then the same batch as the pair rows the weight gradient reads
     * in place; both on cache lines (a 64-byte load across two lines costs two) */
    const size_t rows_bytes = (t->bmax * ks * sizeof(uint32_t) + 63) & ~(size_t)63;
    const size_t pairs_bytes = (t->bmax + 1) / 2 * m->layers[0].in * sizeof(uint32_t);
    t->x16_blk = aimsi_malloc(rows_bytes + pairs_bytes + 64);
    if (t->x16_blk == NULL) {
        return; /* an optimisation only: gather fp32 rows, the GEMMs round them */
    }
    unsigned char *p = (unsigned char *)(((uintptr_t)t->x16_blk + 63) & ~(uintptr_t)63);
    t->xb16 = (uint32_t *)(void *)p;
    t->xp16 = (uint32_t *)(void *)(p + rows_bytes);
    t->x16_ks = ks;
}

/* ---- the forward's panels ------------------------------------------------------------ */

/* The forward GEMM (X W^T) reads W^T in 32-neuron panels, and packing them
 * from w every step (pack_t_f32 / pack_t_bf16: all of w read, transposed,
 * and for bf16 rounded) was ~5 % of a P1 run's samples. The fused SGD/Adam
 * update has every block of the new w in hand anyway, so it writes the block
 * into a persistent copy of those panels too (aimsi_gemm_epi.wpk; with the
 * row split the CPU that updates a neuron is the one whose forward reads its
 * panel), and the next step's forward takes them as they are
 * (aimsi_gemm_pre.bpk). The values are exactly what the pack made of the
 * same w (same rounding), so the trained bits do not change (test_wpanels).
 *
 * Freshness: wpk_ok[l] is set by the fused update that wrote the panels and
 * cleared by every forward that reads (or could not read) them, so a panel
 * copy is used at most once and only right after the update that made it;
 * anything else that changes the weights between steps (a checkpoint
 * restore, the best-epoch restore) calls aimsi_train_wpk_stale. */
static atomic_int g_wpk = 1;

int aimsi_train_wpk_force(int on)
{
    return atomic_exchange(&g_wpk, on < 0 ? 0 : (on > 2 ? 2 : on));
}

void aimsi_train_wpk_stale(aims_trainer *t)
{
    memset(t->wpk_ok, 0, sizeof t->wpk_ok);
}

void aimsi_train_wpk_end(aims_trainer *t)
{
    aimsi_free(t->wpk_blk);
    t->wpk_blk = NULL;
    memset(t->wpk, 0, sizeof t->wpk);
    aimsi_train_wpk_stale(t);
}

/* Panels for layer l: its forward and weight gradient at a full batch run in
 * the own kernels and the update is fused (SGD with momentum, Adam, AdamW). */
static int wpk_fits(const aims_trainer *t, size_t l)
{
    const aimsi_dense *L = &t->m->layers[l];
    const int opt_fused = (t->h.opt == OPT_SGD && !t->h.nesterov) || t->h.opt == OPT_ADAM ||
                          t->h.opt == OPT_ADAMW;
    return opt_fused && use_own(t, t->bmax, L->out, L->in) && use_own(t, L->out, L->in, t->bmax);
}

static size_t wpk_slots(const aims_trainer *t, size_t l)
{
    const aimsi_dense *L = &t->m->layers[l];
    const size_t ks = t->gprec == AIMSI_GEMM_BF16 ? (L->in + 1) / 2 : L->in;
    return (L->out + 31) / 32 * 32 * ks;
}

void aimsi_train_wpk_begin(aims_trainer *t)
{
    const aims_model *m = t->m;
    aimsi_train_wpk_stale(t);
    /* fp32 only when forced (2): there the panels (800 KB for P1's first
     * layer, twice bf16's) measured slower to write than the pack they save
     * (docs/kernels.md, session 11) */
    const int mode = atomic_load(&g_wpk);
    if (t->gws == NULL || m->kind == AIMS_MODEL_KIND_TEXT || aimsi_train_sharded(t) ||
        mode == 0 || (mode == 1 && t->gprec != AIMSI_GEMM_BF16) ||
        !aimsi_gemm_own_available(t->gprec)) {
        return;
    }
    size_t total = 0;
    for (size_t l = 0; l < m->n_layers && l < AIMSI_MAX_LAYERS; l++) {
        total += wpk_fits(t, l) ? (wpk_slots(t, l) + 15) & ~(size_t)15 : 0;
    }
    if (total == 0) {
        return;
    }
    /* zeroed: the pads of the panels (columns past the neurons) are never written */
    t->wpk_blk = aimsi_calloc(1, total * sizeof(uint32_t) + 64);
    if (t->wpk_blk == NULL) {
        return; /* an optimisation only: the forward packs w each step */
    }
    uint32_t *p = (uint32_t *)(((uintptr_t)t->wpk_blk + 63) & ~(uintptr_t)63);
    for (size_t l = 0; l < m->n_layers && l < AIMSI_MAX_LAYERS; l++) {
        if (wpk_fits(t, l)) {
            t->wpk[l] = p;
            p += (wpk_slots(t, l) + 15) & ~(size_t)15;
        }
    }
}

static void next_start(aims_trainer *t);

/* ---- forward / loss / backward ------------------------------------------------------- */

/* Activation (+ dropout) over a layer's fresh GEMM output (the GEMM added
 * the bias, so z = x W^T + b is already complete; relu_done: and the ReLU). */
static void bias_act(const aims_trainer *t, size_t l, size_t n, int relu_done)
{
    const aims_model *m = t->m;
    const aimsi_dense *L = &m->layers[l];
    float *a = t->act[l];
    const size_t cnt = n * L->out;
    if (L->act == AIMS_ACT_GELU) {
        memcpy(t->pre[l], a, cnt * sizeof *a); /* the derivative needs z */
    }
    if (!relu_done) {
        aimsi_act_apply(L->act, a, cnt);
    }
    if (t->mask[l] != NULL) {
        aimsi_rng rng;
        /* shard_salt: each shard of a data-parallel step draws its own masks */
        aimsi_rng_seed(&rng, aimsi_train_mix_seed((uint64_t)t->h.seed,
                                      0xD50F000000ull + (uint64_t)t->step * 64u + l +
                                          (t->shard_salt << 48)));
        const double p = m->dropout;
        const float keep_scale = (float)(1.0 / (1.0 - p));
        uint8_t *mk = t->mask[l];
        for (size_t i = 0; i < cnt; i++) {
            mk[i] = aimsi_rng_unit(&rng) >= p;
            a[i] = mk[i] ? a[i] * keep_scale : 0.0f;
        }
    }
}

void aimsi_train_forward(aims_trainer *t, size_t n)
{
    const aims_model *m = t->m;
    const float *x = t->xb;
    for (size_t l = 0; l < m->n_layers; l++) {
        const aimsi_dense *L = &m->layers[l];
        const float *b = m->params + L->b_off;
        const float *w = m->params + L->w_off;
        int relu_done = 0;
        aimsi_gemm_pre pre = {0};
        pre.a16 = l == 0 && x16_on(t, n) ? t->xb16 : NULL; /* the batch, in bf16 */
        if (l < AIMSI_MAX_LAYERS) { /* W^T's panels, if the last update wrote them */
            pre.bpk = t->wpk_ok[l] ? t->wpk[l] : NULL;
            t->wpk_ok[l] = 0;
        }
        if (fuse(t, n, L->out, L->in)) {
            /* bias and ReLU in the GEMM's epilogue: no bias rows, no ReLU pass */
            aimsi_gemm_epi e = {0};
            e.bias = b;
            e.relu = relu_done = L->act == AIMS_ACT_RELU;
            gemm(t, 0, 1, n, L->out, L->in, x, L->in, w, L->in, 0.0f, t->act[l], L->out, &e,
                 &pre);
        } else {
            for (size_t r = 0; r < n; r++) {
                memcpy(t->act[l] + r * L->out, b, L->out * sizeof *b);
            }
            /* beta 1 over the bias rows: no separate zeroing sweep inside OpenBLAS */
            gemm(t, 0, 1, n, L->out, L->in, x, L->in, w, L->in, 1.0f, t->act[l], L->out, NULL,
                 &pre);
        }
        bias_act(t, l, n, relu_done);
        x = t->act[l];
        if (l == 0) {
            next_start(t); /* the layers above run on this thread: the workers gather */
        }
    }
}

/* Loss of the batch (sum over rows) and, in place of the last layer's
 * outputs, dLoss/dz for the mean loss. */
double aimsi_train_loss_grad(aims_trainer *t, size_t n)
{
    const aims_model *m = t->m;
    const size_t k = m->layers[m->n_layers - 1].out;
    float *z = t->act[m->n_layers - 1];
    /* a data-parallel shard normalizes by the whole batch (norm_rows) */
    const size_t norm = t->norm_rows > 0 ? t->norm_rows : n;
    const float inv_n = 1.0f / (float)norm;
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
            const float s = aimsi_softmax_exp(row, k);
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
    const float scale = 2.0f / (float)(norm * k);
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

/* g *= f'(pre) where f is the activation of layer l (and the dropout mask);
 * gated: the GEMM's epilogue already applied the ReLU gate. */
static void act_backward(const aims_trainer *t, size_t l, size_t n, float *g, int gated)
{
    const aimsi_dense *L = &t->m->layers[l];
    const float *a = t->act[l];
    const size_t cnt = n * L->out;
    switch (gated ? AIMS_ACT_NONE : L->act) {
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

void aimsi_train_backward(aims_trainer *t, size_t n, const opt_step *o)
{
    aims_model *m = t->m;
    /* o == NULL (a data-parallel shard): gradients into t->grad, no update */
    const int fast = o != NULL && t->h.opt == OPT_SGD && !t->h.nesterov;
    float *gcur = t->act[m->n_layers - 1]; /* loss_grad left dL/dz here */
    for (size_t l = m->n_layers; l-- > 0;) {
        const aimsi_dense *L = &m->layers[l];
        const float *aprev = l > 0 ? t->act[l - 1] : t->xb;
        float *w = m->params + L->w_off;
        float *gprev = t->g[l & 1];
        int gated = 0;
        if (l > 0) { /* dA_prev = G W, with the weights before this step's update */
            aimsi_gemm_epi e = {0};
            if (m->layers[l - 1].act == AIMS_ACT_RELU && fuse(t, n, L->in, L->out)) {
                e.gate = t->act[l - 1]; /* ReLU backward in the epilogue */
                gated = 1;
            }
            gemm(t, 0, 0, n, L->in, L->out, gcur, L->out, w, L->in, 0.0f, gprev, L->in,
                 gated ? &e : NULL, NULL);
        }
        float *dw = fast ? t->v1 + L->w_off : t->grad + L->w_off;
        float *db = fast ? t->v1 + L->b_off : t->grad + L->b_off;
        /* fast path: dw/db already hold mu * v (see update_range), and in the own
         * kernels the SGD step itself runs in the epilogue of this GEMM, while
         * each block of v is in registers (no separate pass over w and v) */
        const float beta = fast ? 1.0f : 0.0f;
        aimsi_gemm_epi e = {0};
        const int adam = o != NULL && (t->h.opt == OPT_ADAM || t->h.opt == OPT_ADAMW);
        const int fused = (fast || adam) && fuse(t, L->out, L->in, n);
        if (fused) {
            e.w = w;
            e.ldw = L->in;
            e.lr = o->lr;
            e.mom = o->mom;
            e.wd = o->wd;
            e.wpk = l < AIMSI_MAX_LAYERS ? t->wpk[l] : NULL; /* and the next forward's B */
            if (adam) { /* the whole Adam step in the epilogue; grad is not written */
                e.adam = t->h.opt == OPT_ADAMW ? 2 : 1;
                e.v1 = t->v1 + L->w_off;
                e.v2 = t->v2 + L->w_off;
                e.b1 = o->b1;
                e.b2 = o->b2;
                e.eps = o->eps;
                e.c1 = o->c1;
                e.c2 = o->c2;
            }
        }
        aimsi_gemm_pre pre = {0};
        if (l == 0 && x16_on(t, n)) { /* B = the batch, in bf16 */
            pre.b16 = (const uint16_t *)(const void *)t->xb16;
            pre.ldb16 = 2 * t->x16_ks;
            pre.bp32 = t->xp16; /* and as pair rows: read in place */
            pre.ldbp32 = L->in;
        }
        /* the bias first: it needs only G, and on the first layer this runs
         * while the workers may still gather the next batch (the GEMM below
         * joins them); bias and weights are disjoint, so the order changes
         * no bit */
        if (!fast) {
            memset(db, 0, L->out * sizeof *db);
        }
        for (size_t r = 0; r < n; r++) {
            const float *gr = gcur + r * L->out;
            for (size_t j = 0; j < L->out; j++) {
                db[j] += gr[j];
            }
        }
        if (o != NULL) { /* a data-parallel shard updates after the exchange */
            aimsi_train_update_range(t, o, L->b_off, L->out);
        }
        gemm(t, 1, 0, L->out, L->in, n, gcur, L->out, aprev, L->in, beta, dw, L->in,
             fused ? &e : NULL, &pre);
        if (l < AIMSI_MAX_LAYERS) {
            t->wpk_ok[l] = fused && e.wpk != NULL;
        }
        if (o != NULL && !fused) {
            aimsi_train_next_join(t); /* the update runs on the pool */
            aimsi_train_update_params(t, o, L->w_off, L->in * L->out);
        }
        if (l > 0) {
            act_backward(t, l - 1, n, gprev, gated);
            gcur = gprev;
        }
    }
    aimsi_train_next_join(t); /* no job outlives the step */
}

typedef struct gather_job {
    aims_trainer *t;
    size_t first, n;
    int b16; /* features rounded into xb16 instead of copied into xb */
    /* where the rows go: the trainer's batch, or the next batch (below) */
    float *xb;
    uint32_t *xb16;
    uint32_t *xp16; /* with xb16 (may be NULL): the batch as pair rows too */
    int32_t *yb;
    float *tb;
} gather_job;

enum { GATHER_ROWS = 32 }; /* rows per pool item */

/* Rows [GATHER_ROWS i, ...) of the batch: with the own GEMMs' pool the copy
 * of randomly placed rows (cache and TLB misses, not bandwidth) runs on every
 * core instead of one. */
static void gather_task(void *ctx, size_t i)
{
    const gather_job *g = ctx;
    const aims_trainer *t = g->t;
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
        if (g->b16) { /* rounded as it is copied: the operand both GEMMs read */
            aimsi_bf16_round_row(ds->x + row * in, in, g->xb16 + r * t->x16_ks);
        } else {
            memcpy(g->xb + r * in, ds->x + row * in, in * sizeof *g->xb);
        }
        g->yb[r] = ds->labels != NULL ? ds->labels[row] : 0;
        g->tb[r] = ds->targets != NULL ? ds->targets[row]
                                       : (ds->labels != NULL ? (float)ds->labels[row] : 0.0f);
    }
    if (g->b16 && g->xp16 != NULL) { /* rows 2kp, 2kp + 1 (GATHER_ROWS is even) */
        for (size_t kp = i * GATHER_ROWS / 2; 2 * kp < end; kp++) {
            const uint32_t *r0 = g->xb16 + 2 * kp * t->x16_ks;
            aimsi_bf16_pair_rows(r0, 2 * kp + 1 < end ? r0 + t->x16_ks : NULL, in,
                                 g->xp16 + kp * in);
        }
    }
}

/* ---- the next batch, gathered while the caller runs the layers above the first ------ */

/* A step's first-layer GEMMs run on every pool thread, but what lies between
 * them -- the forward and backward of the layers above (P1: the 256 x 10
 * output layer), the loss gradient, the bias sums -- runs on the calling
 * thread while the workers wait. The next step's gather needs nothing of
 * this step (its rows are fixed by the epoch's order), so the workers gather
 * it then, into a second set of batch buffers (aimsi_pool_start), and the
 * caller joins them before it needs the pool again; the next step swaps the
 * two sets instead of gathering. The bytes are the same as a gather at the
 * start of that step, so not a bit of training changes (test_model,
 * test_kernels: test_next_batch_bit_identical). The job never outlives the
 * step that started it (the backward pass and end_run join it). */
struct aimsi_next {
    gather_job job;     /* the pending or ready gather (its destinations: the spare set) */
    int64_t epoch;      /* the batch held: epoch's order, rows [first, first + n) */
    int pending, ready; /* started and not joined / joined, not yet taken */
    int swapped;        /* the trainer's buffers are the spare set's (swap back at end) */
    size_t cur_first, cur_n; /* the batch the step in flight uses */
};

static atomic_int g_next = 1;

int aimsi_train_next_force(int on)
{
    return atomic_exchange(&g_next, on ? 1 : 0);
}

static void swap_sets(aims_trainer *t, gather_job *spare)
{
    float *xb = t->xb;
    uint32_t *xb16 = t->xb16;
    uint32_t *xp16 = t->xp16;
    int32_t *yb = t->yb;
    float *tb = t->tb;
    t->xb = spare->xb;
    t->xb16 = spare->xb16;
    t->xp16 = spare->xp16;
    t->yb = spare->yb;
    t->tb = spare->tb;
    spare->xb = xb;
    spare->xb16 = xb16;
    spare->xp16 = xp16;
    spare->yb = yb;
    spare->tb = tb;
}

void aimsi_train_next_begin(aims_trainer *t)
{
    const aims_model *m = t->m;
    if (t->pool == NULL || m->kind == AIMS_MODEL_KIND_TEXT || m->n_layers < 2 ||
        aimsi_train_sharded(t) || !atomic_load(&g_next)) {
        return;
    }
    const size_t in = m->input_dim;
    const size_t B = t->bmax;
    const size_t x16 = t->xb16 != NULL ? (B * t->x16_ks * sizeof(uint32_t) + 63) & ~(size_t)63 : 0;
    const size_t xp16 = t->xp16 != NULL ? (B + 1) / 2 * in * sizeof(uint32_t) : 0;
    const size_t xb = (B * in * sizeof(float) + 63) & ~(size_t)63;
    const size_t lab = (B * (sizeof(int32_t) + sizeof(float)) + 63) & ~(size_t)63;
    const size_t bytes = sizeof(struct aimsi_next) + 64 + xb + lab + x16 + xp16;
    unsigned char *blk = aimsi_calloc(1, bytes);
    if (blk == NULL) {
        return; /* an optimisation only: gather at the start of each step */
    }
    struct aimsi_next *nx = (struct aimsi_next *)(void *)blk;
    unsigned char *p = (unsigned char *)(((uintptr_t)(blk + sizeof *nx) + 63) & ~(uintptr_t)63);
    nx->job.xb = (float *)(void *)p;
    p += xb;
    nx->job.yb = (int32_t *)(void *)p;
    nx->job.tb = (float *)(void *)(p + B * sizeof(int32_t));
    p += lab;
    nx->job.xb16 = x16 > 0 ? (uint32_t *)(void *)p : NULL;
    p += x16;
    nx->job.xp16 = xp16 > 0 ? (uint32_t *)(void *)p : NULL;
    nx->job.t = t;
    t->nx = nx;
}

/* Wait for the next batch's gather, if one is running. */
void aimsi_train_next_join(aims_trainer *t)
{
    struct aimsi_next *nx = t->nx;
    if (nx != NULL && nx->pending) {
        aimsi_pool_join(t->pool);
        nx->pending = 0;
        nx->ready = 1;
    }
}

void aimsi_train_next_end(aims_trainer *t)
{
    struct aimsi_next *nx = t->nx;
    if (nx == NULL) {
        return;
    }
    aimsi_train_next_join(t);
    if (nx->swapped) { /* give the trainer its own buffers back (end_run frees those) */
        swap_sets(t, &nx->job);
    }
    aimsi_free(nx);
    t->nx = NULL;
}

/* Start gathering the batch after the one in flight (none past the epoch's
 * end: the next epoch's order is not drawn yet). */
static void next_start(aims_trainer *t)
{
    struct aimsi_next *nx = t->nx;
    if (nx == NULL || nx->pending) {
        return;
    }
    const size_t first = nx->cur_first + nx->cur_n;
    if (first >= t->n_tr) {
        return;
    }
    const size_t n = t->n_tr - first < t->bmax ? t->n_tr - first : t->bmax;
    nx->ready = 0;
    nx->epoch = t->epoch;
    nx->job.first = first;
    nx->job.n = n;
    nx->job.b16 = x16_on(t, n);
    nx->pending = 1;
    aimsi_pool_start(t->pool, (n + GATHER_ROWS - 1) / GATHER_ROWS, gather_task, &nx->job);
}

/* The pool for a GEMM or an update: first the next batch's gather, if it is
 * still running (a run cannot start while it holds the pool). */
aimsi_pool *aimsi_train_pool(aims_trainer *t)
{
    aimsi_train_next_join(t);
    return t->pool;
}

void aimsi_train_gather(aims_trainer *t, size_t first, size_t n)
{
    struct aimsi_next *nx = t->nx;
    const int b16 = x16_on(t, n);
    if (nx != NULL) {
        aimsi_train_next_join(t); /* nothing should be running here; be sure */
        nx->cur_first = first;
        nx->cur_n = n;
        if (nx->ready && nx->epoch == t->epoch && nx->job.first == first && nx->job.n == n &&
            nx->job.b16 == b16) {
            swap_sets(t, &nx->job); /* gathered during the last step */
            nx->swapped ^= 1;
            nx->ready = 0;
            return;
        }
        nx->ready = 0;
    }
    gather_job g = {t, first, n, b16, t->xb, t->xb16, t->xp16, t->yb, t->tb};
    aimsi_pool_run(t->pool, (n + GATHER_ROWS - 1) / GATHER_ROWS, gather_task, &g);
}
