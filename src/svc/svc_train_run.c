/*
 * svc_train_run.c -- the train service's job thread (svc_train.c): one
 * thread per service takes the oldest queued job, fits it (with a store,
 * through aimsi_jobs_fit, which checkpoints and renews the job's lease),
 * turns the model into bundle bytes, commits them to the store under the
 * job's fencing token, publishes once when the submit asked for it
 * (svc_train_pub.c), and records the outcome under the service's mutex.
 *
 * Why a file of its own: svc_train.c reached the house limit of 1,000 lines;
 * these functions moved out whole (the job thread is the part of the service
 * that never handles a request), with job_news and queue_remove exported to
 * them as aimsi_train_job_news and aimsi_train_queue_remove.
 *
 * How progress reaches callers: the trainer's progress callback copies the
 * epoch, loss and metric into the job under `mu` (status reads them there)
 * and posts job news; its return value is the job's cancel flag, so a cancel
 * stops the fit at the next step. The trainer pointer is cleared under `mu`
 * before the trainer is destroyed, so do_cancel never reaches a dead one.
 * A durable job that stops with the service, or is fenced (AIMS_E_STATE),
 * is marked `moved`: the store answers for it from then on.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "../model/aimsi_model.h"
#include "aimsi_life.h"
#include "jobs/aimsi_jobs.h"
#include "svc_train_impl.h"

/* ---- the job thread -------------------------------------------------------------------- */

typedef struct progress_ctx {
    train_impl *ti;
    train_job *job;
} progress_ctx;

static int progress_cb(void *user, const aims_trainer *t)
{
    const progress_ctx *pc = user;
    double epoch = 0;
    double loss = NAN;
    double metric = NAN;
    (void)aims_trainer_get_stat(t, AIMS_TRAINER_STAT_EPOCH, &epoch);
    (void)aims_trainer_get_stat(t, AIMS_TRAINER_STAT_TRAIN_LOSS, &loss);
    (void)aims_trainer_get_stat(t, AIMS_TRAINER_STAT_VAL_ACCURACY, &metric);
    pthread_mutex_lock(&pc->ti->mu);
    pc->job->epoch = (int32_t)epoch;
    pc->job->loss = (float)loss;
    pc->job->metric = (float)metric;
    const int stop = pc->job->cancel;
    pthread_mutex_unlock(&pc->ti->mu);
    aimsi_train_job_news(pc->ti, pc->job->id, pc->job->id_len);
    return stop;
}

static void run_job(train_impl *ti, train_job *j)
{
    progress_ctx pc = {ti, j};
    aimsi_train_job_news(ti, j->id, j->id_len); /* running (after queued) */
    aims_status rc = aims_trainer_set_progress_fn(j->trainer, progress_cb, &pc);
    if (rc == AIMS_OK) {
        rc = ti->mpi ? aimsi_train_mpi_fit(ti, j) /* every rank (svc_train_mpi.c) */
             : ti->durable != NULL ? aimsi_jobs_fit(ti->durable, j->id, j->id_len, j->token,
                                                  j->trainer, j->ds, j->ckpt_steps, j->ckpt_ms)
                                 : aims_trainer_fit(j->trainer, j->ds, NULL);
    }
    char err[AIMSI_ERRMSG_CAP] = "";
    if (rc != AIMS_OK && rc != AIMS_E_CANCELLED) {
        snprintf(err, sizeof err, "%s", aims_trainer_errmsg(j->trainer)[0] != '\0'
                                            ? aims_trainer_errmsg(j->trainer)
                                            : aims_errmsg());
    }
    void *bytes = NULL;
    size_t len = 0;
    if (rc == AIMS_OK) {
        rc = aimsi_train_bundle(ti->p, j->model, j->publish, &bytes, &len);
        if (rc != AIMS_OK) {
            snprintf(err, sizeof err, "bundle: %s", aims_errmsg());
        }
        if (rc == AIMS_OK && ti->durable != NULL) {
            rc = aimsi_jobs_commit(ti->durable, j->id, j->id_len, j->token, bytes, len);
            snprintf(err, sizeof err, "%s", rc != AIMS_OK ? aims_errmsg() : ""); /* fenced */
        }
    }
    char pubnote[AIMSI_ERRMSG_CAP] = "";
    if (rc == AIMS_OK && j->publish != NULL && ti->node != NULL) {
        /* publish exactly once, then deploy, before "done" shows (svc_train_pub.c); a
         * refusal or failure is in the status ("publish"), the result stays */
        (void)aimsi_train_publish(ti->node, j->publish, j->id, bytes, len, j->publish_canary,
                                  pubnote, sizeof pubnote);
    }
    pthread_mutex_lock(&ti->mu);
    aims_trainer *t = j->trainer;
    j->trainer = NULL; /* cancel must not reach it any more */
    ti->running = NULL;
    memcpy(j->pubnote, pubnote, sizeof pubnote);
    if (rc == AIMS_OK) {
        j->state = JOB_DONE;
        j->bundle = bytes;
        j->bundle_len = len;
    } else if (rc == AIMS_E_CANCELLED || j->cancel) {
        j->state = JOB_CANCELLED;
    } else {
        j->state = JOB_FAILED;
        snprintf(j->err, sizeof j->err, "%s", err);
    }
    /* stopped with the service, or fenced (AIMS_E_STATE): the store answers from now on */
    const int handover = ti->durable != NULL && rc != AIMS_OK &&
                         (ti->stopping || rc == AIMS_E_STATE);
    j->moved = handover;
    aims_model *m = j->model;
    aims_dataset *ds = j->ds;
    j->model = NULL;
    j->ds = NULL;
    pthread_cond_broadcast(&ti->cv);
    pthread_mutex_unlock(&ti->mu);
    aimsi_train_job_news(ti, j->id, j->id_len); /* done / failed / cancelled */
    if (rc != AIMS_OK) {
        aimsi_free(bytes);
    }
    if (ti->durable != NULL && rc != AIMS_OK && handover) {
        aimsi_log(AIMS_LOG_WARN, "train: job %.*s handed over: %s", (int)j->id_len, j->id, err);
        aimsi_jobs_drop(ti->durable, j->id, j->id_len);
    } else if (ti->durable != NULL && rc != AIMS_OK) {
        aimsi_jobs_end(ti->durable, j->id, j->id_len, j->token,
                       rc == AIMS_E_CANCELLED ? JOB_CANCELLED : JOB_FAILED, err);
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

void *aimsi_train_job_thread(void *arg)
{
    train_impl *ti = arg;
    pthread_mutex_lock(&ti->mu);
    for (;;) {
        while (!ti->stopping && ti->qhead == NULL) {
            pthread_cond_wait(&ti->cv, &ti->mu);
        }
        if (ti->stopping) {
            break;
        }
        train_job *j = ti->qhead;
        aimsi_train_queue_remove(ti, j);
        j->state = JOB_RUNNING;
        ti->running = j;
        pthread_mutex_unlock(&ti->mu);
        run_job(ti, j);
        pthread_mutex_lock(&ti->mu);
    }
    pthread_mutex_unlock(&ti->mu);
    return NULL;
}
