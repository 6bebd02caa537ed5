/*
 * jobs_itest.h -- what the durable-job integration tests share
 * (test_jobs_daemon.c, test_fence_daemon.c; docs/JOBS.md).
 *
 * Both run `aims_node --train trainer --train-store DIR` nodes on
 * tcp://127.0.0.1 over one store folder, store Fashion-MNIST's first
 * JOBS_ROWS rows once ("put_data"), submit jobs that name the rows by
 * reference, poll "status" until a predicate holds, and compare a job's
 * result with an uninterrupted run of the same spec. Only the spec and what
 * is done to the node running the job (SIGKILL, SIGSTOP) differ, so the
 * rig below owns everything else: the survivor node, the client, the data
 * reference and the uninterrupted run's result bytes.
 *
 * Every helper fails the test (IT_CHECK) on what it does not expect; every
 * wait is a bounded poll, no timing assertions.
 */
#ifndef JOBS_ITEST_H
#define JOBS_ITEST_H

#include <stddef.h>
#include <stdint.h>

#include <aims/aims.h>

#include "itest.h"

#define JOBS_ROWS 6000
#define JOBS_LEASE_MS 1000
#define JOBS_CKPT_EVERY 40
#define JOBS_SVC "trainer"

/* The node that runs the uninterrupted job and adopts the others, and what
 * the tests compare against. */
typedef struct jobs_rig {
    it_proc survivor;  /* "survivor": the first trainer node */
    aims_client *c;    /* it_client(NULL, 50): calls by address */
    char ref[80];      /* the stored rows' reference ("sha256:...") */
    aims_msg *rep;     /* a reply message the test may reuse */
    void *ref_bytes;   /* result bundle of the uninterrupted job "ref" */
    size_t ref_len;
} jobs_rig;

/* After it_init(): 0 (logged "skipped") without the Fashion-MNIST cache in
 * AIMS_DATA_DIR -- the test then returns 77. Else 1: the store folder is
 * it_dir()/store (lease JOBS_LEASE_MS), every submit carries spec (borrowed,
 * must outlive the test), the survivor runs, the rows are stored, and job
 * "ref" has run to its end on the survivor with its result in r. */
int jobs_rig_start(jobs_rig *r, const char *spec);
/* Frees r's reply, result copy and client; SIGTERMs the survivor and checks
 * that it exits 0. */
void jobs_rig_stop(jobs_rig *r);

/* A trainer node on the shared store ("--train trainer --train-store"). */
void jobs_spawn_trainer(it_proc *p, const char *name);

aims_msg *jobs_msg(void);
/* The i32 or i64 tensor called name (the test fails when it is missing). */
int64_t jobs_int(const aims_msg *m, const char *name);
/* The BYTES tensor called name as a string in buf ("" when missing). */
const char *jobs_str(const aims_msg *m, const char *name, char *buf, size_t cap);

/* One call of method for job on addr (data_ref != NULL: a submit with the
 * rig's spec and publish name); the status, the reply in rep. */
aims_status jobs_call(aims_client *c, const char *addr, const char *method, const char *job,
                      const char *data_ref, aims_msg *rep);

/* Poll status on addr until pred holds (at most 120 s, else the test fails);
 * the last reply stays in rep. */
typedef int (*jobs_pred)(const aims_msg *rep, const void *arg);
void jobs_wait(aims_client *c, const char *addr, const char *job, aims_msg *rep, jobs_pred pred,
               const void *arg, const char *what);
/* Predicates: done (fails the test on failed/cancelled); running at step >=
 * *(const int64_t *)arg; running on the process *(const pid_t *)arg. */
int jobs_is_done(const aims_msg *rep, const void *arg);
int jobs_step_at_least(const aims_msg *rep, const void *arg);
int jobs_running_on(const aims_msg *rep, const void *arg);

/* A malloc'd copy of the job's result bundle (free it), its size in *len. */
void *jobs_result(aims_client *c, const char *addr, const char *job, size_t *len);
/* Files called "result" in the job's store folder. */
int jobs_results_in_store(const char *job);

#endif /* JOBS_ITEST_H */
