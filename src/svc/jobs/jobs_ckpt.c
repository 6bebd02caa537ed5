/*
 * jobs_ckpt.c -- a durable job's checkpoints written off the training thread
 * (aimsi_jobs_fit, jobs_fit.c; docs/JOBS.md "Checkpoints off the critical
 * path").
 *
 * Why. A checkpoint used to stop training for its whole life: serialise the
 * weights and optimizer state (zstd container), frame + CRC, write, fsync the
 * file, rename, fsync the folder, list + prune, then the status record (a
 * second fsync'd write + folder fsync). Measured (strace -T, loaded machine,
 * 1.5 MB checkpoint of the P1 MLP): four fsyncs of 3-15 ms each dominate; the
 * CPU part is small. None of it needs the trainer once the state is copied.
 *
 * How. At a due step the fit thread (1) waits for the previous checkpoint to
 * be durable (at most one in flight: never two writers of one job, and the
 * next snapshot reuses the buffer the writer is done with), and takes its
 * outcome; (2) does what must stay on its thread (the test pause point, the
 * fence, the cancel marker); (3) copies the trainer's state into a reused
 * snapshot (aimsi_trainer_snap_take: a memcpy of parameters + optimizer
 * buffers + counters) and the status it will record; (4) wakes the writer
 * and trains on. The writer thread (one per fit, started at the first
 * checkpoint) fences again, serialises the snapshot into the very bytes a
 * synchronous checkpoint would have had, puts it (temp file, fsync, rename,
 * folder fsync: a crash mid-write leaves the previous checkpoint valid),
 * prunes old ones and writes the status. The fit's end waits for the last
 * write before it returns, so a job's result, its "done" status and a
 * released lease (aimsi_jobs_stop waits for writers in flight) always come
 * after its last durable checkpoint.
 *
 * Errors. The writer's status (fenced, I/O) is handed back, message and all,
 * at the next checkpoint or at the end of the fit, whichever comes first.
 * When the snapshot cannot be taken (no memory for its buffer, a quantized
 * model) or the thread cannot start, the checkpoint is written synchronously
 * as before: slower, never skipped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../model/aimsi_model.h"
#include "jobs_impl.h"

void aimsi_jobs_ckpt_name(const char *dir, int64_t step, char *out)
{
    char leaf[40];
    snprintf(leaf, sizeof leaf, "ckpt.%016" PRId64, step);
    aimsi_jobs_path(dir, leaf, out);
}

static int ckpt_cb(void *user, const char *name)
{
    jobs_ckpt_list *c = user;
    if (strncmp(name, "ckpt.", 5) != 0 || c->n == JOBS_CKPT_SCAN_MAX) {
        return 0;
    }
    char *end = NULL;
    const long long v = strtoll(name + 5, &end, 10);
    if (end != name + 5 && *end == '\0' && v >= 0) {
        c->steps[c->n++] = v;
    }
    return 0;
}

static int cmp_desc(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a;
    const int64_t y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

aims_status aimsi_jobs_ckpt_list(aimsi_jobs *J, const char *dir, jobs_ckpt_list *c)
{
    c->n = 0;
    AIMSI_TRY(aimsi_store_list(J->st, dir, ckpt_cb, c));
    qsort(c->steps, c->n, sizeof c->steps[0], cmp_desc);
    return AIMS_OK;
}

/* Remove all but the JOBS_CKPT_KEEP newest checkpoints (newest = highest step). */
static void prune(aimsi_jobs *J, const char *dir)
{
    jobs_ckpt_list c;
    if (aimsi_jobs_ckpt_list(J, dir, &c) != AIMS_OK) {
        return;
    }
    for (size_t i = JOBS_CKPT_KEEP; i < c.n; i++) {
        char name[AIMSI_STORE_NAME_MAX + 1];
        aimsi_jobs_ckpt_name(dir, c.steps[i], name);
        (void)aimsi_store_remove(J->st, name);
    }
}

aims_status aimsi_jobs_ckpt_persist(aimsi_jobs *J, const char *dir, uint64_t token,
                                    const void *bytes, size_t len, int64_t step,
                                    const jobs_status *s)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_ckpt_name(dir, step, name);
    AIMSI_TRY(aimsi_store_put(J->st, name, bytes, len));
    prune(J, dir);
    const aims_status rc = aimsi_jobs_status_write(J, dir, s);
    if (atomic_load(&J->pause_after) > 0 && atomic_fetch_sub(&J->pause_after, 1) == 1) {
        atomic_store(&J->paused, 1); /* test hook: "dies" after this checkpoint */
    }
    return rc;
}

/* One write of the snapshot w holds (writer thread; w->mu not held). */
static aims_status write_one(jobs_ckptw *w)
{
    aimsi_jobs *J = w->J;
    aimsi_jobs_ckpt_hook_fn hook = J->ckpt_hook;
    if (hook != NULL) {
        hook(J->ckpt_hook_user, w->step); /* test hook: a write held in flight */
    }
    AIMSI_TRY(aimsi_jobs_fence(J, w->dir, w->token));
    void *bytes = NULL;
    size_t len = 0;
    AIMSI_TRY(aimsi_trainer_snap_bytes(w->snap, &bytes, &len));
    const aims_status rc =
        aimsi_jobs_ckpt_persist(J, w->dir, w->token, bytes, len, w->step, &w->s);
    aimsi_free(bytes);
    return rc;
}

static void *writer_main(void *arg)
{
    jobs_ckptw *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->pending && !w->quit) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
        if (!w->pending) {
            break; /* quit with nothing left to write */
        }
        pthread_mutex_unlock(&w->mu);
        const uint64_t t0 = aimsi_now_ns();
        const aims_status rc = write_one(w);
        const uint64_t dt = aimsi_now_ns() - t0;
        pthread_mutex_lock(&w->mu);
        w->rc = rc;
        if (rc != AIMS_OK) {
            snprintf(w->err, sizeof w->err, "%s", aims_errmsg());
        }
        w->write_ns += dt;
        w->pending = 0;
        atomic_fetch_sub(&w->J->ckpt_writing, 1);
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void aimsi_jobs_ckpt_init(jobs_ckptw *w, aimsi_jobs *J, const char *dir, uint64_t token)
{
    memset(w, 0, sizeof *w);
    w->J = J;
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    w->token = token;
    w->rc = AIMS_OK;
}

/* Wait until no write is in flight; its outcome (then cleared). */
static aims_status wait_idle(jobs_ckptw *w)
{
    if (!w->on) {
        return AIMS_OK;
    }
    pthread_mutex_lock(&w->mu);
    while (w->pending) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    const aims_status rc = w->rc;
    char err[JOBS_ERR_MAX];
    memcpy(err, w->err, sizeof err);
    w->rc = AIMS_OK;
    pthread_mutex_unlock(&w->mu);
    return rc == AIMS_OK ? AIMS_OK : aimsi_err(NULL, rc, "%s", err);
}

static int start(jobs_ckptw *w)
{
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        return 0;
    }
    if (pthread_cond_init(&w->cv, NULL) != 0) {
        pthread_mutex_destroy(&w->mu);
        return 0;
    }
    if (pthread_create(&w->th, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return 0;
    }
    w->on = 1;
    return 1;
}

aims_status aimsi_jobs_ckpt_wait(jobs_ckptw *w)
{
    return wait_idle(w);
}

aims_status aimsi_jobs_ckpt_submit(jobs_ckptw *w, const aims_trainer *t, int64_t step,
                                   const jobs_status *s, int *sync)
{
    *sync = 0;
    AIMSI_TRY(wait_idle(w)); /* at most one in flight; the buffer is ours again */
    const int use_async = atomic_load(&w->J->ckpt_async) != 0;
    aims_status rc = use_async ? aimsi_trainer_snap_take(t, &w->snap) : AIMS_E_UNSUPPORTED;
    if (rc == AIMS_OK && !w->on && !start(w)) {
        rc = AIMS_E_BACKEND;
    }
    if (rc != AIMS_OK) {
        if (use_async) {
            aimsi_log(AIMS_LOG_WARN, "jobs: %s: checkpoint of step %" PRId64 " written "
                      "synchronously (%s)", w->dir, step,
                      rc == AIMS_E_BACKEND ? "no writer thread" : aims_errmsg());
        }
        *sync = 1; /* the caller writes it the old way */
        return AIMS_OK;
    }
    pthread_mutex_lock(&w->mu);
    w->step = step;
    w->s = *s;
    w->pending = 1;
    w->writes++;
    atomic_fetch_add(&w->J->ckpt_writing, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return AIMS_OK;
}

aims_status aimsi_jobs_ckpt_finish(jobs_ckptw *w)
{
    const aims_status rc = wait_idle(w);
    if (w->on) {
        pthread_mutex_lock(&w->mu);
        w->quit = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->th, NULL);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        w->on = 0;
    }
    aimsi_trainer_snap_free(w->snap);
    w->snap = NULL;
    return rc;
}

void aimsi_jobs_ckpt_drain(aimsi_jobs *J, int64_t max_ms)
{
    for (int64_t waited = 0; atomic_load(&J->ckpt_writing) > 0 && waited < max_ms; waited++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}
