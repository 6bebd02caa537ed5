/*
 * test_jobs_ckpt.c -- durable-job checkpoints written off the training thread
 * (src/svc/jobs/jobs_ckpt.c, docs/JOBS.md "Checkpoints off the critical
 * path"), driven through aimsi_jobs_fit as bench/bench_jobs.c does.
 *
 * - the asynchronous writer gives the same final model as the synchronous
 *   path (ckpt_async=0) and a plain fit, and a resume from its newest
 *   checkpoint ends in those bytes too; a snapshot serialises to the very
 *   bytes aimsi_trainer_checkpoint_bytes gives at the same step;
 * - a write held in flight (the writer's test hook) leaves the previous
 *   checkpoint the newest, intact and restorable, and the status says so;
 *   the fit does not return while it is held, even once cancelled: the end
 *   of a job waits for its last durable checkpoint, which is then there;
 * - no memory for the snapshot: aimsi_trainer_snap_take fails cleanly (the
 *   fit then writes that checkpoint synchronously: the ckpt_async=0 path).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "aims/aims.h"
#include "core/aimsi_core.h"
#include "model/aimsi_model.h"
#include "svc/aimsi_msg.h"
#include "svc/jobs/aimsi_jobs.h"
#include "svc/store/aimsi_store.h"
#include "svc_blobs.h"
#include "testalloc.h"
#include "tmp_dir.h"

#define ROWS 240
#define COLS 4
#define CLASSES 3
#define EPOCHS 6
#define LEASE "?lease_ms=300&scan_ms=20"

static float g_x[ROWS * COLS];
static int32_t g_y[ROWS];
static char g_dir[256];

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void new_run(aims_model **m, aims_trainer **t)
{
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_MLP, COLS, CLASSES, m), AIMS_OK);
    assert_int_equal(aims_model_add_dense(*m, 8, AIMS_ACT_RELU), AIMS_OK);
    assert_int_equal(aims_trainer_create(*m, t), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(*t, AIMS_TRAIN_EPOCHS, EPOCHS), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(*t, AIMS_TRAIN_BATCH, 16), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_f64(*t, AIMS_TRAIN_LR, 0.1), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_f64(*t, AIMS_TRAIN_MOMENTUM, 0.9), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(*t, AIMS_TRAIN_SEED, 7), AIMS_OK);
}

static aims_dataset *dataset(void)
{
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_dense(ROWS, COLS, g_x, g_y, &ds), AIMS_OK);
    return ds;
}

static void *model_bytes(const aims_model *m, size_t *len)
{
    aims_bundle *b = NULL;
    assert_int_equal(aims_bundle_create(NULL, m, &b), AIMS_OK);
    void *p = NULL;
    assert_int_equal(aimsi_bundle_to_bytes(b, &p, len), AIMS_OK);
    aims_bundle_destroy(b);
    return p;
}

static void add_bytes(aims_msg *m, const char *name, const char *s)
{
    const uint64_t n = strlen(s);
    assert_int_equal(aims_msg_add(m, name, AIMS_DT_BYTES, &n, 1, s, 0), AIMS_OK);
}

static aims_status adopt_none(void *user, const aims_msg *submit, uint64_t token)
{
    (void)user;
    (void)submit;
    (void)token;
    return AIMS_E_UNSUPPORTED;
}

static aimsi_jobs *open_jobs(const char *extra)
{
    char url[512];
    snprintf(url, sizeof url, "dir:%s%s%s", g_dir, LEASE, extra);
    aimsi_jobs *J = NULL;
    assert_int_equal(aimsi_jobs_create(url, "ckpt-test", &J), AIMS_OK);
    assert_int_equal(aimsi_jobs_start(J, adopt_none, NULL), AIMS_OK);
    return J;
}

static uint64_t begin_job(aimsi_jobs *J, const char *id)
{
    aims_msg *sub = NULL;
    assert_int_equal(aims_msg_create(&sub), AIMS_OK);
    add_bytes(sub, "job", id);
    add_bytes(sub, "spec", "kind=mlp hidden=8 epochs=6 batch=16");
    const uint64_t xd[2] = {ROWS, COLS}, yd = ROWS;
    assert_int_equal(aims_msg_add(sub, "x", AIMS_DT_F32, xd, 2, g_x, AIMS_MSG_BORROW), AIMS_OK);
    assert_int_equal(aims_msg_add(sub, "y", AIMS_DT_I32, &yd, 1, g_y, AIMS_MSG_BORROW), AIMS_OK);
    uint64_t token = 0;
    assert_int_equal(aimsi_jobs_begin(J, sub, "ckpt-handle-0123456789", 22, &token), AIMS_OK);
    aims_msg_destroy(sub);
    return token;
}

static void job_dir(const char *id, char *out)
{
    int k = sprintf(out, "j/");
    for (const char *p = id; *p != '\0'; p++) {
        k += sprintf(out + k, "%02x", (unsigned)(unsigned char)*p);
    }
}

typedef struct ckpt_seen {
    int64_t steps[16];
    size_t n;
} ckpt_seen;

static int seen_cb(void *user, const char *name)
{
    ckpt_seen *c = user;
    if (strncmp(name, "ckpt.", 5) == 0 && c->n < 16) {
        c->steps[c->n++] = strtoll(name + 5, NULL, 10);
    }
    return 0;
}

static int64_t newest_ckpt(aimsi_store *st, const char *dir)
{
    ckpt_seen c = {.n = 0};
    assert_int_equal(aimsi_store_list(st, dir, seen_cb, &c), AIMS_OK);
    int64_t top = -1;
    for (size_t i = 0; i < c.n; i++) {
        top = c.steps[i] > top ? c.steps[i] : top;
    }
    return top;
}

static void *get_ckpt(aimsi_store *st, const char *dir, int64_t step, size_t *len)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s/ckpt.%016lld", dir, (long long)step);
    void *p = NULL;
    assert_int_equal(aimsi_store_get(st, name, &p, len), AIMS_OK);
    return p;
}

/* A durable fit of job `id` on J; the final model bytes. */
static void *durable(aimsi_jobs *J, const char *id, int begin, aimsi_jobs_times *tm,
                     size_t *len)
{
    const uint64_t token = begin ? begin_job(J, id) : 1;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    new_run(&m, &t);
    aims_dataset *ds = dataset();
    assert_int_equal(aimsi_jobs_fit(J, id, strlen(id), token, t, ds, 0, 0), AIMS_OK);
    aimsi_jobs_get_times(J, tm);
    void *b = model_bytes(m, len);
    aims_dataset_destroy(ds);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return b;
}

static void test_jobs_ckpt_async_same_bytes(void **state)
{
    (void)state;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    new_run(&m, &t);
    aims_dataset *ds = dataset();
    assert_int_equal(aims_trainer_fit(t, ds, NULL), AIMS_OK);
    size_t plain_len = 0;
    void *plain = model_bytes(m, &plain_len);
    aims_dataset_destroy(ds);
    aims_trainer_destroy(t);
    aims_model_destroy(m);

    aimsi_jobs *A = open_jobs("");                  /* asynchronous (the default) */
    aimsi_jobs *S = open_jobs("&ckpt_async=0");     /* synchronous, as before */
    aimsi_jobs_times ta, ts;
    size_t la = 0, ls = 0;
    void *ba = durable(A, "async", 1, &ta, &la);
    void *bs = durable(S, "sync", 1, &ts, &ls);
    assert_int_equal(ta.ckpts, EPOCHS - 1); /* each epoch end but the last */
    assert_int_equal(ta.ckpts_async, ta.ckpts);
    assert_int_equal(ts.ckpts, EPOCHS - 1);
    assert_int_equal(ts.ckpts_async, 0);
    assert_true(la == plain_len && memcmp(ba, plain, la) == 0);
    assert_true(ls == plain_len && memcmp(bs, plain, ls) == 0);

    /* the same checkpoint bytes on both paths (the two newest are kept) */
    char url[300];
    snprintf(url, sizeof url, "dir:%s", g_dir);
    aimsi_store *st = NULL;
    assert_int_equal(aimsi_store_open(url, &st), AIMS_OK);
    char da[64], dsy[64];
    job_dir("async", da);
    job_dir("sync", dsy);
    const int64_t top = newest_ckpt(st, da);
    assert_true(top > 0);
    assert_int_equal(newest_ckpt(st, dsy), top);
    /* (not byte-equal across runs: a checkpoint records the run's samples/s) */
    size_t ca_len = 0, cs_len = 0;
    void *ca = get_ckpt(st, da, top, &ca_len);
    void *cs = get_ckpt(st, dsy, top, &cs_len);
    assert_int_equal(ca_len, cs_len);
    aimsi_free(ca);
    aimsi_free(cs);

    /* exact resume from the asynchronous checkpoint: a second fit of the
     * finished job's id resumes at `top` and ends in the plain bytes */
    aimsi_jobs_times tr;
    size_t lr = 0;
    void *br = durable(A, "async", 0, &tr, &lr);
    assert_int_equal(tr.ckpts, 0); /* resumed after the last checkpoint */
    assert_true(lr == plain_len && memcmp(br, plain, lr) == 0);
    aims_free(br);

    aimsi_store_close(st);
    aims_free(ba);
    aims_free(bs);
    aims_free(plain);
    aimsi_jobs_destroy(A);
    aimsi_jobs_destroy(S);
}

/* ---- a write held in flight --------------------------------------------------------------- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int held;     /* the writer waits in the hook */
    int release;
    int64_t held_step;
} g_hook = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, -1};

static void hold_second(void *user, int64_t step)
{
    (void)user;
    pthread_mutex_lock(&g_hook.mu);
    if (++g_hook.calls == 2) {
        g_hook.held = 1;
        g_hook.held_step = step;
        pthread_cond_broadcast(&g_hook.cv);
        while (!g_hook.release) {
            pthread_cond_wait(&g_hook.cv, &g_hook.mu);
        }
        g_hook.held = 0;
    }
    pthread_mutex_unlock(&g_hook.mu);
}

typedef struct fit_arg {
    aimsi_jobs *J;
    uint64_t token;
    aims_trainer *t;
    aims_dataset *ds;
    aims_status rc;
    _Atomic int done;
} fit_arg;

static void *fit_main(void *p)
{
    fit_arg *a = p;
    a->rc = aimsi_jobs_fit(a->J, "held", 4, a->token, a->t, a->ds, 0, 0);
    atomic_store(&a->done, 1);
    return NULL;
}

static void test_jobs_ckpt_in_flight(void **state)
{
    (void)state;
    aimsi_jobs *J = open_jobs("");
    aimsi_jobs_set_ckpt_hook(J, hold_second, NULL);
    fit_arg a = {.J = J, .rc = AIMS_E_INTERNAL};
    atomic_init(&a.done, 0);
    a.token = begin_job(J, "held");
    aims_model *m = NULL;
    new_run(&m, &a.t);
    a.ds = dataset();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fit_main, &a), 0);
    pthread_mutex_lock(&g_hook.mu);
    while (!g_hook.held) {
        pthread_cond_wait(&g_hook.cv, &g_hook.mu);
    }
    const int64_t held_step = g_hook.held_step;
    pthread_mutex_unlock(&g_hook.mu);

    /* while the second checkpoint is in flight, the first is the newest, intact
     * and restorable, and the status names it */
    char url[300];
    snprintf(url, sizeof url, "dir:%s", g_dir);
    aimsi_store *st = NULL;
    assert_int_equal(aimsi_store_open(url, &st), AIMS_OK);
    char dir[64];
    job_dir("held", dir);
    const int64_t first = newest_ckpt(st, dir);
    assert_true(first > 0 && first < held_step);
    size_t len = 0;
    void *ck = get_ckpt(st, dir, first, &len);
    aims_model *m2 = NULL;
    aims_trainer *t2 = NULL;
    new_run(&m2, &t2);
    aims_dataset *ds2 = dataset();
    assert_int_equal(aims_trainer_begin(t2, ds2, NULL), AIMS_OK);
    assert_int_equal(aimsi_trainer_restore_bytes(t2, ck, len), AIMS_OK);
    aimsi_free(ck);
    aims_dataset_destroy(ds2);
    aims_trainer_destroy(t2);
    aims_model_destroy(m2);

    /* a caller cancels (the marker another instance would leave): the fit
     * stops training but does not return while the write is in flight */
    char name[AIMSI_STORE_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s/cancel", dir);
    assert_int_equal(aimsi_store_put(st, name, "1", 1), AIMS_OK);
    sleep_ms(400); /* > one lease renewal (100 ms): the fit has seen the cancel */
    assert_int_equal(atomic_load(&a.done), 0);
    assert_int_equal(newest_ckpt(st, dir), first);

    pthread_mutex_lock(&g_hook.mu);
    g_hook.release = 1;
    pthread_cond_broadcast(&g_hook.cv);
    pthread_mutex_unlock(&g_hook.mu);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(a.rc, AIMS_E_CANCELLED);
    /* the write that was in flight is durable now: it is the newest */
    assert_int_equal(newest_ckpt(st, dir), held_step);
    ck = get_ckpt(st, dir, held_step, &len);
    aimsi_free(ck);
    aimsi_jobs_end(J, "held", 4, a.token, 5, "cancelled");

    aimsi_store_close(st);
    aims_dataset_destroy(a.ds);
    aims_trainer_destroy(a.t);
    aims_model_destroy(m);
    aimsi_jobs_destroy(J);
}

/* ---- no memory for the snapshot ------------------------------------------------------------ */

static void test_jobs_ckpt_snapshot_nomem(void **state)
{
    (void)state;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    new_run(&m, &t);
    aims_dataset *ds = dataset();
    assert_int_equal(aims_trainer_begin(t, ds, NULL), AIMS_OK);
    int done = 0;
    assert_int_equal(aims_trainer_step(t, &done), AIMS_OK);
    aimsi_trainer_snap *snap = NULL;
    for (long n = 1; n <= 2; n++) { /* the snapshot object, then its buffer */
        ta_fail_at(n);
        assert_int_equal(aimsi_trainer_snap_take(t, &snap), AIMS_E_NOMEM);
        assert_null(snap);
        assert_non_null(strstr(aims_errmsg(), "snapshot"));
    }
    ta_fail_at(0);
    assert_int_equal(aimsi_trainer_snap_take(t, &snap), AIMS_OK);
    void *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    assert_int_equal(aimsi_trainer_snap_bytes(snap, &a, &la), AIMS_OK);
    assert_int_equal(aimsi_trainer_checkpoint_bytes(t, &b, &lb), AIMS_OK);
    assert_true(la == lb && memcmp(a, b, la) == 0);
    aimsi_free(a);
    aimsi_free(b);
    /* a second take reuses the buffer; the bytes follow the trainer */
    assert_int_equal(aims_trainer_step(t, &done), AIMS_OK);
    assert_int_equal(aimsi_trainer_snap_take(t, &snap), AIMS_OK);
    assert_int_equal(aimsi_trainer_snap_bytes(snap, &a, &la), AIMS_OK);
    assert_int_equal(aimsi_trainer_checkpoint_bytes(t, &b, &lb), AIMS_OK);
    assert_true(la == lb && memcmp(a, b, la) == 0);
    aimsi_free(a);
    aimsi_free(b);
    aimsi_trainer_snap_free(snap);
    aims_dataset_destroy(ds);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
}

static int setup(void **state)
{
    tmp_dir_make(g_dir, sizeof g_dir, "jobs-ckpt");
    return ta_setup(state);
}

static int teardown(void **state)
{
    tmp_dir_remove(g_dir);
    return ta_teardown(state);
}

int main(void)
{
    ta_install();
    const blobs_shape sh = {.rows = ROWS, .cols = COLS, .classes = CLASSES, .seed = 42,
                            .hi = 3.0, .lo = -1.0, .spread = 1.5};
    blobs_make(&sh, g_x, g_y);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_jobs_ckpt_async_same_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jobs_ckpt_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jobs_ckpt_snapshot_nomem, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
