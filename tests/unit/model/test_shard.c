/*
 * test_shard.c -- white-box tests of data-parallel training (train_shard.c,
 * aims_dist.h) without MPI: S trainers on S threads, joined by an exchange
 * hook made of a barrier and a shared buffer (the role train_mpi.c plays
 * between processes), must end with weights bit-identical to one trainer
 * computing all S shards; plus parameter checks, exact resume of a sharded
 * run, the "built without MPI" / "MPI not initialized" refusals and
 * allocation failures. The real MPI run is tests/integration/mpi_check.py.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/aimsi_dist.h"
#include "model/aimsi_mpi.h"
#include "model/aimsi_model.h"
#include "testalloc.h"
#include "train_fix.h"

#define OK(e) assert_int_equal((e), AIMS_OK)

enum { COLS = 12, CLASSES = 3, HIDDEN = 10, MAX_RANKS = 4 };

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* rows x COLS features, labels from a fixed (learnable) rule */
static aims_dataset *blobs(size_t rows, uint64_t seed)
{
    float *x = tf_alloc(rows * COLS * sizeof *x);
    int32_t *y = tf_alloc(rows * sizeof *y);
    uint64_t s = seed;
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < COLS; c++) {
            x[r * COLS + c] = frand(&s);
        }
        const float a = x[r * COLS] + 0.5f * x[r * COLS + 1];
        y[r] = a > 0.3f ? 2 : (a > -0.3f ? 1 : 0);
    }
    return tf_dense_take(rows, COLS, x, y);
}

typedef struct cfg {
    int64_t opt, batch, epochs, nesterov;
    double dropout, val;
} cfg;

/* MLP COLS-HIDDEN(tanh)-CLASSES, one thread, seed 7; lr 0.01 for Adam(W), the
 * default 0.1 for SGD. */
static aims_status make(const cfg *c, aims_model **out_m, aims_trainer **out_t)
{
    const tf_net net = {AIMS_MODEL_KIND_MLP, COLS, CLASSES, {HIDDEN, 0, 0}, AIMS_ACT_TANH, 0,
                        c->dropout};
    const tf_hyper h = {.opt = c->opt, .epochs = c->epochs, .batch = c->batch, .seed = 7,
                        .threads = 1, .lr = c->opt != 0 ? 0.01 : 0.1, .nesterov = c->nesterov,
                        .val = c->val};
    return tf_make(&net, &h, out_m, out_t);
}

/* Train with `shards` shards in one process; returns an aimsi_malloc'd copy
 * of the weights. */
static float *train_local(const aims_dataset *ds, const cfg *c, int shards, size_t *n_out)
{
    aims_model *m;
    aims_trainer *t;
    OK(make(c, &m, &t));
    OK(aims_trainer_set_shards(t, shards));
    OK(aims_trainer_fit(t, ds, NULL));
    return tf_params_take(m, t, n_out);
}

/* ---- the thread "cluster": one trainer per rank, a barrier exchange -------------------- */

typedef struct hub {
    pthread_barrier_t bar;
    unsigned char *shared; /* size x blk */
    size_t cap;
    int size;
} hub;

typedef struct rank_ctx {
    aimsi_dist base; /* first */
    hub *h;
    const aims_dataset *ds;
    const cfg *c;
    float *w; /* out: weights (malloc) */
    size_t n;
    aims_status rc;
    double loss;
} rank_ctx;

static aims_status hub_exchange(aimsi_dist *d, void *all, size_t blk, char *err, size_t cap)
{
    rank_ctx *rc = (rank_ctx *)d;
    hub *h = rc->h;
    if (blk * (size_t)h->size > h->cap) {
        snprintf(err, cap, "block of %zu bytes too big for the test hub", blk);
        return AIMS_E_RANGE; /* every rank takes this branch alike: no one waits */
    }
    unsigned char *a = all;
    memcpy(h->shared + (size_t)d->rank * blk, a + (size_t)d->rank * blk, blk);
    pthread_barrier_wait(&h->bar);
    memcpy(a, h->shared, (size_t)h->size * blk);
    pthread_barrier_wait(&h->bar); /* nobody overwrites shared before everyone read it */
    return AIMS_OK;
}

/* A barrier for S ranks and room for `cap` bytes of exchanged blocks. */
static void hub_open(hub *h, int S, size_t cap)
{
    h->size = S;
    h->cap = cap;
    h->shared = malloc(h->cap);
    assert_non_null(h->shared);
    assert_int_equal(pthread_barrier_init(&h->bar, NULL, (unsigned)S), 0);
}

static void hub_close(hub *h)
{
    pthread_barrier_destroy(&h->bar);
    free(h->shared);
}

/* Rank i of S on hub h, training c on ds. */
static void rank_init(rank_ctx *r, int i, int S, hub *h, const aims_dataset *ds, const cfg *c)
{
    memset(r, 0, sizeof *r);
    r->base.rank = i;
    r->base.size = S;
    r->base.exchange = hub_exchange;
    r->h = h;
    r->ds = ds;
    r->c = c;
}

/* The rank's weights into r->w (malloc: a rank thread must not assert; NULL
 * when out of memory, which the main thread's checks catch). */
static void rank_keep_weights(rank_ctx *r, const aims_model *m)
{
    r->n = m->n_params;
    r->w = malloc(r->n * sizeof *r->w);
    if (r->w != NULL) {
        memcpy(r->w, m->params, r->n * sizeof *r->w);
    }
}

static void *rank_main(void *arg)
{
    rank_ctx *r = arg;
    aims_model *m;
    aims_trainer *t;
    r->rc = make(r->c, &m, &t);
    if (r->rc != AIMS_OK) {
        return NULL;
    }
    r->rc = aimsi_train_set_dist(t, &r->base); /* destroy is NULL: r stays ours */
    if (r->rc == AIMS_OK) {
        r->rc = aims_trainer_fit(t, r->ds, NULL);
    }
    if (r->rc == AIMS_OK) {
        aims_trainer_get_stat(t, AIMS_TRAINER_STAT_TRAIN_LOSS, &r->loss);
        rank_keep_weights(r, m);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return NULL;
}

/* S ranks on S threads must equal one process with S shards, on every rank. */
static void ranks_equal_local(size_t rows, const cfg *c, int S)
{
    aims_dataset *ds = blobs(rows, 99);
    size_t n = 0;
    float *want = train_local(ds, c, S, &n);

    hub h;
    hub_open(&h, S, (size_t)S * (24 + n * sizeof(float))); /* loss, stop word, grads, pad */
    rank_ctx r[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    for (int i = 0; i < S; i++) {
        rank_init(&r[i], i, S, &h, ds, c);
        assert_int_equal(pthread_create(&th[i], NULL, rank_main, &r[i]), 0);
    }
    for (int i = 0; i < S; i++) {
        pthread_join(th[i], NULL);
    }
    for (int i = 0; i < S; i++) {
        OK(r[i].rc);
        assert_int_equal(r[i].n, n);
        assert_non_null(r[i].w);
        assert_memory_equal(r[i].w, want, n * sizeof *want);
        assert_true(r[i].loss == r[0].loss);
        free(r[i].w);
    }
    hub_close(&h);
    aimsi_free(want);
    aims_dataset_destroy(ds);
}

static void test_shards_sgd_two_ranks(void **state)
{
    (void)state;
    const cfg c = {0, 32, 2, 0, 0.0, 0.1}; /* fast SGD path, held-out split */
    ranks_equal_local(300, &c, 2);
}

static void test_shards_adam_dropout_three_ranks(void **state)
{
    (void)state;
    /* 194 = 6 x 32 + 2: the last batch has 2 rows for 3 shards (shard 0 empty) */
    const cfg c = {1, 32, 2, 0, 0.25, 0.0};
    ranks_equal_local(194, &c, 3);
}

static void test_shards_nesterov_four_ranks(void **state)
{
    (void)state;
    const cfg c = {0, 50, 2, 1, 0.0, 0.0};
    ranks_equal_local(230, &c, 4);
}

/* ---- stopping alike: a cancel on one rank stops every rank at the same step ---------- */

typedef struct stop_ctx {
    rank_ctx r;      /* first: the exchange hook */
    int cancel_rank; /* this rank cancels ... */
    int64_t at_step; /* ... before this step (-1: never) */
    int cb_epoch;    /* > 0: this rank's progress callback says stop after that epoch */
    int64_t leave_at; /* this rank leaves between steps (aimsi_train_dist_leave), -1 never */
    int64_t stopped_at; /* out: the step whose call returned AIMS_E_CANCELLED */
    aims_status again;  /* out: one more step after the stop (must not exchange) */
} stop_ctx;

static int stop_cb(void *user, const aims_trainer *t)
{
    const stop_ctx *sc = user;
    double e = 0;
    aims_trainer_get_stat(t, AIMS_TRAINER_STAT_EPOCH, &e);
    return sc->cb_epoch > 0 && (int)e >= sc->cb_epoch;
}

static void *stop_main(void *arg)
{
    stop_ctx *sc = arg;
    rank_ctx *r = &sc->r;
    aims_model *m;
    aims_trainer *t;
    r->rc = make(r->c, &m, &t);
    if (r->rc != AIMS_OK) {
        return NULL;
    }
    r->rc = aimsi_train_set_dist(t, &r->base);
    if (r->rc == AIMS_OK && sc->cb_epoch > 0) {
        r->rc = aims_trainer_set_progress_fn(t, stop_cb, sc);
    }
    if (r->rc == AIMS_OK) {
        r->rc = aims_trainer_begin(t, r->ds, NULL);
    }
    sc->stopped_at = -1;
    for (int done = 0; r->rc == AIMS_OK && !done;) {
        double step = 0;
        aims_trainer_get_stat(t, AIMS_TRAINER_STAT_STEP, &step);
        if (sc->at_step >= 0 && (int64_t)step == sc->at_step) {
            aims_trainer_cancel(t);
        }
        if (sc->leave_at >= 0 && (int64_t)step == sc->leave_at) {
            aimsi_train_dist_leave(t); /* as a train service's rank 0 does */
            r->rc = AIMS_E_CANCELLED;
            sc->stopped_at = (int64_t)step;
            break;
        }
        r->rc = aims_trainer_step(t, &done);
        if (r->rc == AIMS_E_CANCELLED) {
            sc->stopped_at = (int64_t)step;
        }
    }
    if (r->rc == AIMS_E_CANCELLED) {
        int done = 0;
        sc->again = aims_trainer_step(t, &done); /* alone: an exchange would hang */
        rank_keep_weights(r, m);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return NULL;
}

/* Rank `who` stops (cancel before step at_step, or its callback after epoch
 * cb_epoch): every rank must return AIMS_E_CANCELLED from the same step, with
 * the same weights, and a later step must return at once on every rank. */
static void stop_alike_v(int S, int who, int64_t at_step, int cb_epoch, int64_t leave_at,
                         int64_t want_step)
{
    aims_dataset *ds = blobs(200, 3);
    const cfg c = {0, 20, 4, 0, 0.0, 0.0}; /* 10 steps an epoch */
    hub h;
    hub_open(&h, S, (size_t)S * (24 + 4096 * sizeof(float)));
    stop_ctx sc[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    for (int i = 0; i < S; i++) {
        memset(&sc[i], 0, sizeof sc[i]);
        rank_init(&sc[i].r, i, S, &h, ds, &c);
        sc[i].at_step = i == who ? at_step : -1;
        sc[i].cb_epoch = i == who ? cb_epoch : 0;
        sc[i].leave_at = i == who ? leave_at : -1;
        assert_int_equal(pthread_create(&th[i], NULL, stop_main, &sc[i]), 0);
    }
    for (int i = 0; i < S; i++) {
        pthread_join(th[i], NULL);
    }
    for (int i = 0; i < S; i++) {
        assert_int_equal(sc[i].r.rc, AIMS_E_CANCELLED);
        assert_int_equal(sc[i].stopped_at, want_step);
        assert_int_equal(sc[i].again, AIMS_E_CANCELLED);
        assert_non_null(sc[i].r.w);
        assert_memory_equal(sc[i].r.w, sc[0].r.w, sc[0].r.n * sizeof(float));
    }
    for (int i = 0; i < S; i++) {
        free(sc[i].r.w);
    }
    hub_close(&h);
    aims_dataset_destroy(ds);
}

static void stop_alike(int S, int who, int64_t at_step, int cb_epoch, int64_t want_step)
{
    stop_alike_v(S, who, at_step, cb_epoch, -1, want_step);
}

static void test_shards_cancel_one_rank_stops_all(void **state)
{
    (void)state;
    stop_alike(2, 1, 3, 0, 3);  /* a follower cancels before step 3 */
    stop_alike(3, 0, 17, 0, 17); /* rank 0 (the train service's) mid-epoch 2 */
}

static void test_shards_callback_stop_stops_all(void **state)
{
    (void)state;
    /* rank 0's progress callback says stop after epoch 1 (step 10): the next
     * step's exchange carries it, so every rank stops at step 10 */
    stop_alike(2, 0, -1, 1, 10);
    /* rank 0 leaves between steps without stepping (fenced, say) */
    stop_alike_v(3, 0, -1, 0, 13, 13);
}

/* A sharded run learns like an ordinary one: close, not equal (other sums). */
static void test_shards_close_to_plain(void **state)
{
    (void)state;
    aims_dataset *ds = blobs(400, 5);
    const cfg c = {0, 40, 3, 0, 0.0, 0.0};
    size_t n = 0;
    size_t n2 = 0;
    float *plain = train_local(ds, &c, 1, &n);
    float *sharded = train_local(ds, &c, 2, &n2);
    assert_int_equal(n, n2);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)plain[i] - (double)sharded[i];
        worst = d * d > worst ? d * d : worst;
    }
    assert_true(worst < 1e-6); /* rounding only: |diff| < 1e-3 */
    aimsi_free(plain);
    aimsi_free(sharded);
    aims_dataset_destroy(ds);
}

static void test_set_shards_checks(void **state)
{
    (void)state;
    assert_int_equal(aims_trainer_set_shards(NULL, 2), AIMS_E_MISUSE);
    aims_dataset *ds = blobs(100, 1);
    aims_model *m;
    aims_trainer *t;
    const cfg c = {0, 16, 1, 0, 0.0, 0.0};
    OK(make(&c, &m, &t));
    assert_int_equal(aims_trainer_set_shards(t, 0), AIMS_E_INVAL);
    assert_non_null(strstr(aims_trainer_errmsg(t), "shards = 0"));
    assert_int_equal(aims_trainer_set_shards(t, 5000), AIMS_E_INVAL);
    OK(aims_trainer_set_shards(t, 3));
    OK(aims_trainer_begin(t, ds, NULL));
    assert_int_equal(aims_trainer_set_shards(t, 2), AIMS_E_STATE);
    assert_int_equal(aims_trainer_set_mpi(t, 1), AIMS_E_STATE);
    tf_steps_to_end(t);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

/* Without MPI built: a clear refusal; with MPI built but not started: STATE. */
static void test_set_mpi_refusals(void **state)
{
    (void)state;
    aims_model *m;
    aims_trainer *t;
    const cfg c = {0, 16, 1, 0, 0.0, 0.0};
    OK(make(&c, &m, &t));
    assert_int_equal(aims_trainer_set_mpi(NULL, 1), AIMS_E_MISUSE);
#ifdef AIMS_HAVE_MPI
    assert_int_equal(aims_trainer_set_mpi(t, 1), AIMS_E_STATE);
    assert_non_null(strstr(aims_trainer_errmsg(t), "aims_init_mpi"));
    OK(aims_finalize_mpi()); /* never started by libaims: nothing to do */
#else
    assert_int_equal(aims_trainer_set_mpi(t, 1), AIMS_E_UNSUPPORTED);
    assert_non_null(strstr(aims_trainer_errmsg(t), "built without MPI"));
    int rank = -1;
    assert_int_equal(aims_init_mpi(&rank, NULL), AIMS_E_UNSUPPORTED);
    assert_int_equal(rank, -1);
    assert_non_null(strstr(aims_errmsg(), "built without MPI"));
    assert_int_equal(aims_finalize_mpi(), AIMS_E_UNSUPPORTED);
#endif
    OK(aims_trainer_set_mpi(t, 0)); /* detaching always works */
    aims_trainer_destroy(t);
    aims_model_destroy(m);
}

/* A TEXT model trains one document per step: no shards. */
static void test_shards_text_unsupported(void **state)
{
    (void)state;
    const char *const texts[] = {"alpha beta gamma", "beta gamma delta", "gamma delta eps",
                                 "delta eps zeta"};
    const int32_t y[] = {0, 1, 0, 1};
    aims_dataset *raw;
    aims_dataset *ds;
    aims_pipeline *p;
    size_t k = 0;
    OK(aims_dataset_create_texts(4, texts, NULL, y, &raw));
    OK(aims_pipeline_create(&p));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, &k));
    OK(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &k));
    OK(aims_pipeline_set_step_param_i64(p, k, AIMS_STEP_BUCKETS, 1 << 10));
    OK(aims_pipeline_fit_transform(p, raw, &ds));
    aims_pipeline_destroy(p);
    aims_dataset_destroy(raw);
    aims_model *m;
    aims_trainer *t;
    OK(aims_model_create(AIMS_MODEL_KIND_TEXT, 1 << 10, 2, &m));
    OK(aims_trainer_create(m, &t));
    OK(aims_trainer_set_shards(t, 2));
    assert_int_equal(aims_trainer_begin(t, ds, NULL), AIMS_E_UNSUPPORTED);
    assert_non_null(strstr(aims_trainer_errmsg(t), "dense model"));
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

/* A sharded run resumes bit for bit; another shard count refuses the checkpoint. */
static void test_shards_exact_resume(void **state)
{
    (void)state;
    aims_dataset *ds = blobs(260, 3);
    const cfg c = {2, 32, 3, 0, 0.1, 0.0}; /* AdamW + dropout */
    size_t n = 0;
    float *want = train_local(ds, &c, 3, &n);
    char path[] = "/tmp/aims_shard_ckpt_XXXXXX";
    tf_temp_file(path);

    aims_model *m;
    aims_trainer *t;
    OK(make(&c, &m, &t));
    OK(aims_trainer_set_shards(t, 3));
    tf_checkpoint_after(m, t, ds, 11, path);

    OK(make(&c, &m, &t));
    OK(aims_trainer_set_shards(t, 2));
    OK(aims_trainer_begin(t, ds, NULL));
    assert_int_equal(aims_trainer_restore(t, path), AIMS_E_INVAL);
    aims_trainer_destroy(t);
    aims_model_destroy(m);

    OK(make(&c, &m, &t));
    OK(aims_trainer_set_shards(t, 3));
    OK(aims_trainer_begin(t, ds, NULL));
    OK(aims_trainer_restore(t, path));
    int done = 0;
    do {
        OK(aims_trainer_epoch(t, &done));
    } while (!done);
    tf_resume_check(m, t, want, n, path);
    aims_dataset_destroy(ds);
}

typedef struct fail_ctx {
    const aims_dataset *ds;
} fail_ctx;

static aims_status op_sharded_fit(void *ctx)
{
    const fail_ctx *f = ctx;
    const cfg c = {1, 16, 1, 0, 0.0, 0.1};
    aims_model *m;
    aims_trainer *t;
    aims_status rc = make(&c, &m, &t);
    if (rc != AIMS_OK) {
        return rc;
    }
    rc = aims_trainer_set_shards(t, 3);
    if (rc == AIMS_OK) {
        rc = aims_trainer_fit(t, f->ds, NULL);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return rc;
}

static void test_shards_alloc_failures(void **state)
{
    (void)state;
    aims_dataset *ds = blobs(64, 4);
    fail_ctx f = {ds};
    ta_fail_loop("sharded fit", op_sharded_fit, &f);
    aims_dataset_destroy(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shards_sgd_two_ranks, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_adam_dropout_three_ranks, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_nesterov_four_ranks, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_close_to_plain, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_cancel_one_rank_stops_all, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_callback_stop_stops_all, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_set_shards_checks, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_set_mpi_refusals, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_text_unsupported, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_exact_resume, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_shards_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
