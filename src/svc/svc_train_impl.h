/*
 * svc_train_impl.h -- private to svc_train.c and svc_train_run.c: the train
 * service's job table and run queue (train_impl) and one job (train_job),
 * moved here verbatim from svc_train.c when its job thread moved to
 * svc_train_run.c (the house limit of 1,000 lines a file). What the fields
 * mean, the locking (everything under `mu`; job news under `news_mu` first)
 * and the job states are described at the top of svc_train.c.
 */
#ifndef AIMSI_SVC_TRAIN_IMPL_H
#define AIMSI_SVC_TRAIN_IMPL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/aimsi_core.h"
#include "aimsi_ident.h"
#include "aimsi_news.h"
#include "aimsi_svckind.h"
#include "authz/aimsi_authz.h"
#include "jobs/aimsi_jobs.h"

#define TRAIN_QUEUE_MAX 16
#define TRAIN_JOBS_KEPT 64
#define TRAIN_ID_MAX 64
#define TRAIN_HANDLE_MIN 16
#define TRAIN_HANDLE_MAX 64
#define TRAIN_RETRY_MS 1000

enum job_state { JOB_QUEUED = 0, JOB_RUNNING = 1, JOB_DONE = 2, JOB_FAILED = 3, JOB_CANCELLED = 4 };

typedef struct train_job {
    struct train_job *next;  /* all jobs, oldest first */
    struct train_job *qnext; /* run queue */
    char id[TRAIN_ID_MAX + 1];
    size_t id_len;
    char handle[TRAIN_HANDLE_MAX + 1];
    size_t handle_len;
    char owner[AIMSI_CALLER_MAX]; /* who submitted, "" = unauthenticated (svc_ident.c) */
    int state;
    int cancel;
    int32_t epoch;
    float loss;
    float metric;
    aims_dataset *ds;
    aims_model *model;
    aims_trainer *trainer;
    char *publish;           /* "name@version" or NULL */
    int64_t publish_canary;  /* percent for a canary publish, 0 = direct (svc_life.c) */
    void *bundle;            /* result bytes (done) */
    size_t bundle_len;
    char err[AIMSI_ERRMSG_CAP];
    uint64_t token;          /* durable: fencing token (src/svc/jobs/) */
    int64_t ckpt_steps;      /* durable: checkpoint_every_steps / _ms of the spec */
    int64_t ckpt_ms;
    int moved;               /* durable: handed over or fenced; the store answers */
    char pubnote[AIMSI_ERRMSG_CAP]; /* outcome of "publish" (svc_train_pub.c), "" = none */
    int adopted;             /* durable: taken over from a dead instance */
    aimsi_job_news news;     /* what event watchers were told (svc_news.c; news_mu) */
    char *spec;              /* MPI service: the submit's spec text (svc_train_mpi.c) */
    size_t spec_len;
} train_job;

typedef struct train_impl {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const aims_pipeline *p;
    train_job *jobs;
    size_t n_jobs;
    train_job *qhead;
    train_job *qtail;
    size_t queued;
    train_job *running;
    pthread_t thread;
    int thread_on;
    int stopping;
    aimsi_jobs *durable;     /* durable jobs, or NULL (aimsi_train_set_store) */
    aims_node *node;         /* where "publish" deploys (svc_life.c) */
    char name[AIMSI_FRAME_MAX_SERVICE + 1]; /* the service's name (job news) */
    pthread_mutex_t news_mu; /* keeps the news of a job in order (job_news) */
    int mpi;                 /* jobs run on every MPI rank (aims_service_set_mpi) */
} train_impl;

/* Tell event watchers what changed about job id (svc_news.c). Takes news_mu
 * then mu, so call it with neither held (svc_train.c). */
void aimsi_train_job_news(train_impl *ti, const char *id, size_t id_len);
/* Remove a queued job from the run queue (under mu; svc_train.c). */
void aimsi_train_queue_remove(train_impl *ti, train_job *j);
/* The job thread: runs queued jobs one at a time until ti->stopping
 * (pthread_create argument ti; svc_train_run.c). */
void *aimsi_train_job_thread(void *arg);
/* Fit job j on every MPI rank, rank 0 leading (svc_train_mpi.c; job thread). */
aims_status aimsi_train_mpi_fit(train_impl *ti, train_job *j);

#endif /* AIMSI_SVC_TRAIN_IMPL_H */
