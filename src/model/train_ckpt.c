/*
 * train_ckpt.c -- trainer checkpoints: aims_trainer_checkpoint and
 * aims_trainer_restore.
 *
 * How. Every random choice of a run is a pure function of (seed, epoch) or
 * (seed, step) (see train.c), so a checkpoint only stores weights, optimizer
 * buffers, counters and early-stopping state, plus a fingerprint of
 * everything a resume must agree on (data, model shape, parameters,
 * AIMS_TRAIN_THREADS). Restoring regenerates the current epoch's order and
 * continues bit for bit. The _bytes variants (aimsi_model.h) do the same in
 * memory for the train service's durable jobs (src/svc/jobs/).
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_train.h"

#define TAG_TSTA AIMSI_TAG('T', 'S', 'T', 'A')
#define TAG_TOP1 AIMSI_TAG('T', 'O', 'P', '1')
#define TAG_TOP2 AIMSI_TAG('T', 'O', 'P', '2')
#define TAG_TBST AIMSI_TAG('T', 'B', 'S', 'T')
#define CKPT_VERSION 1u

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
    if (t->shards > 1) { /* data parallel (train_shard.c): the sums depend on the count */
        v[n++] = 0x5AA2D0000ull + (uint64_t)t->shards;
    }
    if (t->m->kind == AIMS_MODEL_KIND_TEXT && (t->m->text_linear != 0 || t->m->loss == 3)) {
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

/* Stored as 8-byte little-endian words (aimsi_cw_add_words), so every field
 * must be 8 bytes wide and the struct unpadded. */
_Static_assert(sizeof(ckpt_state) == 15 * 8, "ckpt_state is 15 8-byte words");

/* The counters and fingerprint of t, as a checkpoint stores them. */
static ckpt_state ckpt_state_of(const aims_trainer *t)
{
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
    return s;
}

/* The checkpoint's container from its parts (a live trainer or a snapshot of
 * one: the same bytes either way), filled (the caller saves or finishes it). */
static aims_status ckpt_fill(const aims_model *m, const ckpt_state *s, const float *v1,
                             const float *v2, const float *best, aimsi_cwriter **out)
{
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_CHECKPOINT, 1, &w));
    aims_status rc = aimsi_model_write(m, w);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add_words(w, TAG_TSTA, s, sizeof *s / 8, 8); /* all 8-byte fields */
    }
    if (rc == AIMS_OK && v1 != NULL) {
        rc = aimsi_cw_add_words(w, TAG_TOP1, v1, m->n_params, 4);
    }
    if (rc == AIMS_OK && v2 != NULL) {
        rc = aimsi_cw_add_words(w, TAG_TOP2, v2, m->n_params, 4);
    }
    if (rc == AIMS_OK && best != NULL) {
        rc = aimsi_cw_add_words(w, TAG_TBST, best, m->n_params, 4);
    }
    if (rc != AIMS_OK) {
        aimsi_cw_destroy(w);
        return rc;
    }
    *out = w;
    return AIMS_OK;
}

static aims_status ckpt_writer(const aims_trainer *t, aimsi_cwriter **out)
{
    const ckpt_state s = ckpt_state_of(t);
    return ckpt_fill(t->m, &s, t->v1, t->v2, t->best, out);
}

aims_status aims_trainer_checkpoint(const aims_trainer *t, const char *path)
{
    if (!TRAINER_OK(t) || path == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL path");
    }
    if (!t->running) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_trainer_checkpoint: no run");
    }
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(ckpt_writer(t, &w));
    const aims_status rc = aimsi_cw_save(w, path);
    aimsi_cw_destroy(w);
    return rc;
}

/* The same checkpoint as bytes in memory (the train service's job store). */
aims_status aimsi_trainer_checkpoint_bytes(const aims_trainer *t, void **out, size_t *out_len)
{
    if (!TRAINER_OK(t) || out == NULL || out_len == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL out");
    }
    if (!t->running) {
        return aimsi_err(NULL, AIMS_E_STATE, "checkpoint: no run");
    }
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(ckpt_writer(t, &w));
    const aims_status rc = aimsi_cw_finish(w, out, out_len);
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
        aimsi_le_words(p, n, 4);
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
        aimsi_le_words(&s, sizeof s / 8, 8);
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
        aimsi_train_wpk_stale(t); /* the forward's panels were of the weights before */
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
        aimsi_train_make_perm(t, t->epoch);
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

aims_status aimsi_trainer_restore_bytes(aims_trainer *t, const void *data, size_t len)
{
    if (!TRAINER_OK(t) || data == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL data");
    }
    if (!t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE, "restore: no run (call begin)");
    }
    aimsi_creader *r = NULL;
    aims_status rc = aimsi_cr_open_mem(data, len, 0, AIMSI_KIND_CHECKPOINT, &r);
    if (rc == AIMS_OK) {
        rc = restore_from(t, r);
        aimsi_cr_destroy(r);
    }
    return rc;
}

/* ---- snapshots (durable jobs: the checkpoint written off the training thread) ------------- */

/* A copy of everything a checkpoint stores, taken between two steps. The
 * model part is a by-value copy of the trainer's model struct (shapes,
 * flags: what aimsi_model_write reads besides the parameters) whose params
 * point at the snapshot's own copy; it is never handed out as a model. */
struct aimsi_trainer_snap {
    aims_model m;
    ckpt_state s;
    float *buf; /* params, then v1, v2, best when the run has them */
    size_t cap; /* floats in buf */
    const float *v1, *v2, *best;
};

aims_status aimsi_trainer_snap_take(const aims_trainer *t, aimsi_trainer_snap **io)
{
    if (!TRAINER_OK(t) || io == NULL) {
        return AIMSI_MISUSE("invalid trainer handle or NULL snapshot");
    }
    if (!t->running || t->m->params == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "checkpoint: no run");
    }
    if (t->m->quantized) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "checkpoint snapshot: quantized model");
    }
    const size_t n = t->m->n_params;
    const size_t need = n * (1u + (t->v1 != NULL) + (t->v2 != NULL) + (t->best != NULL));
    aimsi_trainer_snap *s = *io;
    if (s == NULL) {
        s = aimsi_calloc(1, sizeof *s);
        if (s == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "checkpoint snapshot: no memory");
        }
    }
    if (s->cap < need) {
        float *b = aimsi_malloc(need * sizeof(float));
        if (b == NULL) {
            if (*io == NULL) {
                aimsi_free(s);
            }
            return aimsi_err(NULL, AIMS_E_NOMEM, "checkpoint snapshot: no memory for %zu "
                                                 "floats", need);
        }
        aimsi_free(s->buf);
        s->buf = b;
        s->cap = need;
    }
    s->m = *t->m;
    s->m.params = s->buf;
    memcpy(s->buf, t->m->params, n * sizeof(float));
    float *next = s->buf + n;
    const float *const src[3] = {t->v1, t->v2, t->best};
    const float **dst[3] = {&s->v1, &s->v2, &s->best};
    for (int i = 0; i < 3; i++) {
        *dst[i] = NULL;
        if (src[i] != NULL) {
            memcpy(next, src[i], n * sizeof(float));
            *dst[i] = next;
            next += n;
        }
    }
    s->s = ckpt_state_of(t);
    *io = s;
    return AIMS_OK;
}

aims_status aimsi_trainer_snap_bytes(const aimsi_trainer_snap *s, void **out, size_t *out_len)
{
    if (s == NULL || s->buf == NULL || out == NULL || out_len == NULL) {
        return AIMSI_MISUSE("empty snapshot or NULL out");
    }
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(ckpt_fill(&s->m, &s->s, s->v1, s->v2, s->best, &w));
    const aims_status rc = aimsi_cw_finish(w, out, out_len);
    aimsi_cw_destroy(w);
    return rc;
}

void aimsi_trainer_snap_free(aimsi_trainer_snap *s)
{
    if (s != NULL) {
        aimsi_free(s->buf);
        aimsi_free(s);
    }
}
