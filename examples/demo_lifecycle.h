/*
 * demo_lifecycle.h -- the model lifecycle steps of aims_demo (issue 16):
 * a training job that survives the death of its node (--processes: two train
 * nodes share a checkpoint store, the one running the job is killed with
 * SIGKILL mid-job, the other resumes it), optimize as a service (int8 PTQ
 * with an accuracy bound, optimize.fmnist), and the int8 version deployed to
 * the infer service as a canary under the demo's own load until it is
 * promoted. See demo_lifecycle.c and docs/LIFECYCLE.md ("The demo").
 */
#ifndef AIMS_DEMO_LIFECYCLE_H
#define AIMS_DEMO_LIFECYCLE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <aims/aims.h>

typedef struct demo_life {
    /* train: the job's own record (status of a durable train service) */
    pid_t *train_pid[2];     /* --processes: the two train nodes' pids (0 once reaped) */
    int killed;              /* the node running the job was killed with SIGKILL */
    long killed_pid;
    int64_t killed_epoch, killed_ckpt_step;
    double eligible_s;       /* when the job first could be killed (monotonic s) */
    int64_t resumed_from, lost_steps, adoptions, ckpt_every, token;
    char owner[160];         /* the instance that finished the job */
    /* optimize (the optimize.fmnist service's reply) */
    double t_optimize;
    double fp32_acc, int8_acc, fp32_lat_us, int8_lat_us;
    int64_t fp32_bytes, int8_bytes, rows;
    void *int8_bundle;       /* the int8 bundle file bytes (malloc) */
    size_t int8_len;
    /* canary */
    char stable[16], version[16];
    int percent;
    aims_canary_state state;
    double t_canary;
    size_t canary_calls, canary_failed; /* the demo's load while the canary ran */
} demo_life;

/* Reset; resumed_from etc. -1 (no durable store answered). */
void demo_life_init(demo_life *L);

/* Called with every status reply of the training job: records the job's
 * durable fields and, with --processes, kills the node running the job once
 * it has written a checkpoint and finished an epoch. 0, or 1 on failure. */
int demo_life_on_status(demo_life *L, const aims_msg *status);

/* The --train-store value for the train nodes sharing dir/jobs. */
void demo_life_store_flag(const char *dir, char *out, size_t cap);

/* Writes dir/infer.policy for --processes without TLS: lifecycle requests
 * are refused on a node without a policy, so the infer nodes get one that
 * lets any caller call and deploy infer.fmnist. 0 or 1. */
int demo_life_plain_policy(const char *dir, char *path, size_t cap);

/* optimize.fmnist: the fp32 bundle file at bundle_path -> int8, evaluated
 * on the raw test set, calibrated on 1,024 raw training rows, accepted
 * within a 2-point accuracy drop. 0 or 1. */
int demo_life_optimize(aims_client *cl, const char *bundle_path, const aims_dataset *test,
                       const aims_dataset *train, demo_life *L);

/* Deploys the int8 bundle as version "2" of infer.fmnist at 20 % and polls
 * until the canary is decided (the caller keeps load running). 0 when it was
 * promoted, 1 otherwise. */
int demo_life_canary(aims_client *cl, demo_life *L);

/* "lifecycle":{...} (no leading or trailing comma). */
void demo_life_json(FILE *f, const demo_life *L, int processes);

void demo_life_free(demo_life *L);

/* An i32 or i64 scalar tensor of m as int64: 0, or 1 when absent or other. */
int demo_msg_i64(const aims_msg *m, const char *name, int64_t *out);

#endif /* AIMS_DEMO_LIFECYCLE_H */
