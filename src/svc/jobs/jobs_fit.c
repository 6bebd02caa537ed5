/*
 * jobs_fit.c -- the training loop of a durable job (aimsi_jobs_fit): the
 * trainer's own begin + step, with an exact-resume checkpoint written to the
 * store every N steps (default: at each epoch end) and/or every T ms, and a
 * resume from the newest intact checkpoint when the job has one.
 *
 * Why step by step. aims_trainer_fit is begin + step until done; running the
 * same steps here changes nothing in the arithmetic (the final model is
 * bit-identical to a fit), and lets the loop stop at any step boundary to
 * checkpoint. Every random choice of a run is a function of (seed, epoch,
 * step) and a checkpoint stores weights, optimizer state and counters
 * (src/model/train_ckpt.c), so a resumed run ends in the very same bytes.
 *
 * Damage. The store's blob checksum tells a damaged checkpoint from an
 * intact one; the trainer itself refuses one from another run (its
 * fingerprint). Either way the loop falls back to the next older one (two are
 * kept), and with none left starts over: slower, never wrong.
 *
 * Fencing. Before every checkpoint and status write the job's token is
 * compared with the store's highest (aimsi_jobs_fence): a writer that lost
 * the job stops with AIMS_E_STATE "fenced".
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/aimsi_model.h"
#include "jobs_impl.h"

/* Restore the newest intact checkpoint into t (begun); *from = its step or -1. */
static aims_status resume(aimsi_jobs *J, const char *dir, aims_trainer *t, const aims_dataset *ds,
                          int64_t *from)
{
    *from = -1;
    jobs_ckpt_list c;
    AIMSI_TRY(aimsi_jobs_ckpt_list(J, dir, &c));
    for (size_t i = 0; i < c.n; i++) {
        char name[AIMSI_STORE_NAME_MAX + 1];
        aimsi_jobs_ckpt_name(dir, c.steps[i], name);
        void *p = NULL;
        size_t n = 0;
        aims_status rc = aimsi_store_get(J->st, name, &p, &n);
        if (rc == AIMS_OK) {
            rc = aimsi_trainer_restore_bytes(t, p, n);
            aimsi_free(p);
            if (rc == AIMS_OK) {
                *from = c.steps[i];
                return AIMS_OK;
            }
            /* a half-restored optimizer: begin again before the next try */
            const aims_status again = aims_trainer_begin(t, ds, NULL);
            if (again != AIMS_OK) {
                return again;
            }
        }
        if (rc == AIMS_E_NOMEM) {
            return rc;
        }
        aimsi_log(AIMS_LOG_WARN, "jobs: %s: skipping checkpoint of step %" PRId64 ": %s", dir,
                  c.steps[i], aims_errmsg());
    }
    return AIMS_OK;
}

/* Steps done -> the held entry (the lease heartbeat reports it); 1 when the
 * lease thread saw a cancel from another instance. */
static int note_step(aimsi_jobs *J, const char *id, size_t id_len, int64_t step)
{
    int cancel = 0;
    pthread_mutex_lock(&J->mu);
    jobs_held *h = aimsi_jobs_held_find(J, id, id_len);
    if (h != NULL) {
        atomic_store(&h->step, step);
        cancel = atomic_load(&h->cancel);
    }
    pthread_mutex_unlock(&J->mu);
    return cancel;
}

static void stats_into(const aims_trainer *t, jobs_status *s)
{
    double v = 0;
    if (aims_trainer_get_stat(t, AIMS_TRAINER_STAT_EPOCH, &v) == AIMS_OK) {
        s->epoch = (int64_t)v;
    }
    if (aims_trainer_get_stat(t, AIMS_TRAINER_STAT_TRAIN_LOSS, &v) == AIMS_OK) {
        s->loss = v;
    }
    if (aims_trainer_get_stat(t, AIMS_TRAINER_STAT_VAL_ACCURACY, &v) == AIMS_OK) {
        s->metric = v;
    }
}

/* The checkpoint of step `step`: what must happen on the training thread
 * (the test pause point, the fence, a cancel marker), then the snapshot handed
 * to the writer thread (jobs_ckpt.c), or, when that cannot be, the whole
 * write here (serialise, put, prune, status). *pause_ns += time spent. */
static aims_status checkpoint(aimsi_jobs *J, jobs_ckptw *w, const char *dir, uint64_t token,
                              const aims_trainer *t, int64_t step, jobs_status *s,
                              int64_t *n_sync)
{
    AIMSI_TRY(aimsi_jobs_ckpt_wait(w)); /* the previous one is durable (or failed) */
    if (aimsi_jobs_pause_point(J)) {
        return aimsi_err(NULL, AIMS_E_CANCELLED, "jobs: stopped while paused");
    }
    AIMSI_TRY(aimsi_jobs_fence(J, dir, token));
    if (aimsi_jobs_cancelled(J, dir)) {
        return aimsi_err(NULL, AIMS_E_CANCELLED, "jobs: cancelled by a caller on another "
                                                 "instance");
    }
    stats_into(t, s);
    s->step = step;
    s->ckpt_step = step;
    int sync = 0;
    AIMSI_TRY(aimsi_jobs_ckpt_submit(w, t, step, s, &sync));
    if (!sync) {
        return AIMS_OK;
    }
    (*n_sync)++;
    void *bytes = NULL;
    size_t len = 0;
    AIMSI_TRY(aimsi_trainer_checkpoint_bytes(t, &bytes, &len));
    const aims_status rc = aimsi_jobs_ckpt_persist(J, dir, token, bytes, len, step, s);
    aimsi_free(bytes);
    return rc;
}

aims_status aimsi_jobs_fit(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token,
                           aims_trainer *t, const aims_dataset *ds, int64_t ckpt_steps,
                           int64_t ckpt_ms)
{
    return aimsi_jobs_fit_sync(J, id, id_len, token, t, ds, ckpt_steps, ckpt_ms, NULL, NULL);
}

aims_status aimsi_jobs_fit_sync(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token,
                                aims_trainer *t, const aims_dataset *ds, int64_t ckpt_steps,
                                int64_t ckpt_ms, aims_status (*sync)(void *, aims_trainer *),
                                void *sync_user)
{
    char dir[JOBS_DIR_MAX];
    aimsi_jobs_dirname(id, id_len, dir);
    const uint64_t t0 = aimsi_now_ns();
    AIMSI_TRY(aims_trainer_begin(t, ds, NULL));
    const uint64_t t1 = aimsi_now_ns();
    int64_t from = -1;
    AIMSI_TRY(resume(J, dir, t, ds, &from));
    if (sync != NULL) { /* MPI: every rank takes this trainer state (svc_train_mpi.c) */
        AIMSI_TRY(sync(sync_user, t));
    }
    const uint64_t t2 = aimsi_now_ns();
    int64_t step = from > 0 ? from : 0;
    pthread_mutex_lock(&J->mu);
    jobs_held *h = aimsi_jobs_held_find(J, id, id_len);
    const int64_t prev = h != NULL ? h->prev_step : -1;
    if (h != NULL) {
        atomic_store(&h->step, step);
    }
    pthread_mutex_unlock(&J->mu);
    jobs_status s;
    if (aimsi_jobs_status_read(J, dir, &s) != AIMS_OK) {
        aimsi_jobs_status_init(&s);
    }
    s.state = AIMSI_JOB_RUNNING;
    snprintf(s.owner, sizeof s.owner, "%s", J->instance);
    s.token = token;
    s.resumed_from = from;
    s.step = step;
    s.ckpt_every = ckpt_steps;
    /* work the previous owner had done (its last heartbeat) beyond the checkpoint */
    s.lost_steps = prev >= 0 ? (prev > step ? prev - step : 0) : -1;
    if (from >= 0 || prev >= 0) {
        aimsi_log(AIMS_LOG_INFO, "jobs: %.*s resumes at step %" PRId64 " (previous owner "
                  "reported step %" PRId64 ")", (int)id_len, id, step, prev);
    }
    AIMSI_TRY(aimsi_jobs_fence(J, dir, token));
    pthread_mutex_lock(&J->mu);
    J->times.begin_ns = t1 - t0;
    J->times.ckpt_ns = t2 - t1;
    J->times.running_wall_ms = aimsi_jobs_wall_ms(); /* before anyone can read "running" */
    pthread_mutex_unlock(&J->mu);
    AIMSI_TRY(aimsi_jobs_status_write(J, dir, &s));
    double spe = 0;
    (void)aims_trainer_get_stat(t, AIMS_TRAINER_STAT_STEPS_PER_EPOCH, &spe);
    const int64_t per_epoch = spe >= 1 ? (int64_t)spe : 1;
    const int64_t every = ckpt_steps > 0 ? ckpt_steps : per_epoch;
    uint64_t last_ns = aimsi_now_ns();
    aims_status rc = AIMS_OK;
    jobs_ckptw w;
    aimsi_jobs_ckpt_init(&w, J, dir, token);
    int64_t n_ckpt = 0;
    int64_t n_sync = 0;
    uint64_t pause_ns = 0;
    for (int done = 0; !done;) {
        rc = aims_trainer_step(t, &done);
        if (rc != AIMS_OK) {
            break;
        }
        step++;
        if (note_step(J, id, id_len, step)) {
            rc = aimsi_err(NULL, AIMS_E_CANCELLED, "jobs: cancelled by a caller on another "
                                                   "instance");
            break;
        }
        if (done) {
            break;
        }
        const uint64_t now = aimsi_now_ns();
        const int due = step % every == 0 ||
                        (ckpt_ms > 0 && now - last_ns >= (uint64_t)ckpt_ms * 1000000u);
        if (due) {
            rc = checkpoint(J, &w, dir, token, t, step, &s, &n_sync);
            n_ckpt++;
            last_ns = aimsi_now_ns();
            pause_ns += last_ns - now;
            if (rc != AIMS_OK) {
                break;
            }
        }
    }
    /* the result, "done" and a hand-over come after the last durable checkpoint */
    char msg[JOBS_ERR_MAX] = "";
    if (rc != AIMS_OK) {
        snprintf(msg, sizeof msg, "%s", aims_errmsg()); /* the fit's failure wins */
    }
    const aims_status wrc = aimsi_jobs_ckpt_finish(&w);
    if (rc != AIMS_OK && wrc != AIMS_OK) {
        (void)aimsi_err(NULL, rc, "%s", msg);
    }
    rc = rc != AIMS_OK ? rc : wrc;
    pthread_mutex_lock(&J->mu);
    J->times.ckpts = n_ckpt;
    J->times.ckpts_async = n_ckpt - n_sync;
    J->times.ckpt_pause_ns = pause_ns;
    J->times.ckpt_write_ns = w.write_ns;
    pthread_mutex_unlock(&J->mu);
    return rc;
}
