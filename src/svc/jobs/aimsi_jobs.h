/*
 * aimsi_jobs.h -- durable training jobs (docs/JOBS.md): the contract between
 * the train service (svc_train.c) and the job store module (src/svc/jobs/).
 *
 * A train service given a store (aims_service_set_store) keeps every job in
 * it, under j/<hex of the job id>/:
 *   submit       the submit request as an encoded frame (job, handle, spec,
 *                publish, ...) with the rows replaced by "data" = sha256:<hex>
 *   tok.<N>      fencing tokens, created with put_new (exactly one creator);
 *                the highest N is the job's current owner; its content is the
 *                claimer's first lease ("owner=..  expires_ms=..")
 *   lease        the owner's renewed lease (token, owner, expiry, step)
 *   status       state, owner, token, epoch, step, loss, last checkpoint,
 *                resumed-from, lost steps, error (key=value text)
 *   ckpt.<step>  exact-resume trainer checkpoints (the two newest kept)
 *   result       the bundle bytes, created once with put_new
 * and content-addressed data under d/<sha256 hex>.
 *
 * Ownership and fencing (jobs_lease.c). The instance holding the highest
 * token renews its lease every lease_ms / 3; another instance of the same
 * service that finds an unfinished job whose lease expired claims token N+1
 * with put_new (of racing claimers exactly one wins) and adopts the job: the
 * train service rebuilds it from `submit` and its data reference and the fit
 * resumes from the newest intact checkpoint. Every checkpoint and status
 * write and the result commit first compare the writer's token with the
 * store's highest: a zombie (paused past its lease, then back) gets
 * AIMS_E_STATE "fenced" and publishes nothing; the result is created once.
 *
 * Threads. All calls may come from any thread; one mutex guards the held-job
 * table; the lease thread (renewals) and the scan thread (adoption,
 * retention) are the module's own.
 */
#ifndef AIMSI_JOBS_H
#define AIMSI_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "aims/aims_model.h"
#include "../aimsi_svckind.h"
#include "aimsi_rowcache.h"

typedef struct aimsi_jobs aimsi_jobs;

/* Job states, as the train service numbers them (status "state"). */
enum { AIMSI_JOB_QUEUED = 0, AIMSI_JOB_RUNNING = 1, AIMSI_JOB_DONE = 2, AIMSI_JOB_FAILED = 3,
       AIMSI_JOB_CANCELLED = 4 };

/* The train service's side of an adoption: queue the job described by the
 * stored `submit` request under fencing token `token`. AIMS_OK when queued. */
typedef aims_status (*aimsi_jobs_adopt_fn)(void *user, const aims_msg *submit, uint64_t token);

/* Open the store at url ("dir:/path[?lease_ms=N&scan_ms=N]") for the instance
 * named `instance` (unique per process: it shows as the jobs' owner). */
aims_status aimsi_jobs_create(const char *url, const char *instance, aimsi_jobs **out);
/* Stop the lease thread (leases of unfinished jobs are released unless
 * paused) and free. NULL is a no-op. */
void aimsi_jobs_destroy(aimsi_jobs *J);
/* Start the lease thread: renewals, and adoption through fn(user, ...). */
aims_status aimsi_jobs_start(aimsi_jobs *J, aimsi_jobs_adopt_fn fn, void *user);
/* Stop and join the lease thread: no adoption from here on (train_destroy). */
void aimsi_jobs_join(aimsi_jobs *J);
/* The service stops: stop adopting, wake fits waiting in a pause, and give up
 * the leases of unfinished jobs (expire now) so another instance adopts them
 * at once -- unless paused (a dead process releases nothing). A later
 * aimsi_jobs_begin (the service runs again) resumes adopting. */
void aimsi_jobs_stop(aimsi_jobs *J);
/* Test hook: 1 = behave like a paused process (no renewals, no adoption, fits
 * block at their next store write until unpaused or stopped); 0 = come back. */
void aimsi_jobs_pause(aimsi_jobs *J, int paused);
/* Test hook: pause by itself right after the n-th checkpoint from now. */
void aimsi_jobs_pause_after(aimsi_jobs *J, int64_t checkpoints);
int aimsi_jobs_paused(aimsi_jobs *J);
/* The instance id. */
const char *aimsi_jobs_instance(const aimsi_jobs *J);

/* A new submit: store its data (content-addressed, when it carries rows),
 * claim token 1 and record the job. The job's secret handle is stored with
 * it (status/result/cancel on any instance need it). AIMS_E_EXISTS when the
 * store already has a job of this id (its state is then the answer). */
aims_status aimsi_jobs_begin(aimsi_jobs *J, const aims_msg *submit, const char *handle,
                             size_t handle_len, uint64_t *token);

/* Data by reference: 1 when req names its data by a "data" tensor. */
int aimsi_jobs_has_ref(const aims_msg *req);
/* The rows ("x", "y" or "text", "y") of the reference in req's "data", read
 * from the store and checked against their SHA-256 (aims_msg_destroy *out). */
aims_status aimsi_jobs_data_load(aimsi_jobs *J, const aims_msg *req, aims_msg **out);
/* The rows of the reference in req's "data" for a submit or an adoption,
 * through the instance's row cache (aimsi_rowcache.h): dense rows come back
 * as *ds, a view of the cached, already checked dataset (aims_dataset_destroy
 * it; *ymax its largest label; *rows NULL); other rows (text), or all rows
 * with data_cache_mb=0, as *rows like aimsi_jobs_data_load (*ds NULL). A
 * blob that fails its CRC or digest is refused as by aimsi_jobs_data_load
 * and never cached. */
aims_status aimsi_jobs_data_get(aimsi_jobs *J, const aims_msg *req, aims_msg **rows,
                                aims_dataset **ds, int32_t *ymax);
/* The row cache's counters (all 0 when it is off). */
void aimsi_jobs_cache_stats(aimsi_jobs *J, aimsi_rowcache_stats *out);
/* How many jobs' rows the prefetch thread loaded into the cache. */
int64_t aimsi_jobs_prefetched(aimsi_jobs *J);
/* The train service's "put_data" method: store the request's rows once and
 * reply "data" = "sha256:<hex>". */
aims_status aimsi_jobs_put_data(aimsi_jobs *J, aimsi_work *w);

/* Run trainer t over ds with checkpoints to the store (every ckpt_steps steps,
 * 0 = at each epoch end; and every ckpt_ms ms when > 0), resuming from the
 * newest intact checkpoint when there is one. Returns as
 * aims_trainer_fit, or AIMS_E_STATE "fenced" when the job was adopted by
 * another instance meanwhile. */
aims_status aimsi_jobs_fit(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token,
                           aims_trainer *t, const aims_dataset *ds, int64_t ckpt_steps,
                           int64_t ckpt_ms);
/* The same with sync(sync_user, t) called once the trainer is begun and
 * resumed, before the first step (MPI: rank 0 hands its state to every rank,
 * svc_train_mpi.c); its failure ends the fit with its status. */
aims_status aimsi_jobs_fit_sync(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token,
                                aims_trainer *t, const aims_dataset *ds, int64_t ckpt_steps,
                                int64_t ckpt_ms, aims_status (*sync)(void *, aims_trainer *),
                                void *sync_user);
/* Commit the result bytes (fenced; exactly one result per job): AIMS_E_STATE
 * "fenced" for a writer that lost its token, AIMS_E_EXISTS when a result is
 * already there. Marks the job done and drops it from the held table. */
aims_status aimsi_jobs_commit(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token,
                              const void *bytes, size_t len);
/* The job ended without a result (failed, or cancelled by its caller): record
 * it (fenced) so nobody adopts it, and drop it from the held table. */
void aimsi_jobs_end(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token, int state,
                    const char *err);
/* The job was stopped with the service (not cancelled by its caller): drop it
 * from the held table; its lease is released by aimsi_jobs_stop. */
void aimsi_jobs_drop(aimsi_jobs *J, const char *id, size_t id_len);

/* "status" or "result" (w->method) of a job from the store: AIMS_E_NOTFOUND
 * when the store has no such job (w untouched); AIMS_E_DENIED without the
 * job's handle; otherwise the reply is filled as the train service's own. */
aims_status aimsi_jobs_answer(aimsi_jobs *J, aimsi_work *w, const char *id, size_t id_len);
/* The job's state in the store, or -1 when the store has no such job. */
int aimsi_jobs_state(aimsi_jobs *J, const char *id, size_t id_len);
/* Add the store's view of a job this instance runs to a status reply
 * ("owner", "token", "step", "ckpt_step", "resumed_from", "lost_steps"). */
void aimsi_jobs_status_extra(aimsi_jobs *J, const char *id, size_t id_len, aims_msg *reply);

/* Where the time of the newest adoption went (bench_jobs P14b): wall-clock
 * ms of the claim and of the fit reporting "running", and the durations of
 * the parts in between. */
typedef struct aimsi_jobs_times {
    int64_t claim_wall_ms;    /* the claim of the newest adoption (tok.<N+1> created) */
    uint64_t data_read_ns;    /* newest data load: read + frame CRC of the rows */
    uint64_t data_verify_ns;  /* its SHA-256 check (0 when the sidecar vouched for them) */
    uint64_t data_decode_ns;  /* its frame decode */
    int data_sidecar;         /* 1: verified by d/<hex>.ok (length + CRC), no SHA-256 */
    int data_cached;          /* 1: the rows came from the row cache (nothing read) */
    uint64_t data_build_ns;   /* newest cache load: rows -> checked dataset */
    uint64_t adopt_ns;        /* the train service's rebuild, data load included */
    uint64_t begin_ns;        /* newest fit: aims_trainer_begin */
    uint64_t ckpt_ns;         /* newest fit: finding, reading and restoring the checkpoint */
    int64_t running_wall_ms;  /* newest fit: status "running" written */
    int64_t ckpts;            /* newest fit: checkpoints written */
    int64_t ckpts_async;      /* ... of them by the writer thread (the rest synchronously) */
    uint64_t ckpt_pause_ns;   /* ... time the training thread spent on them */
    uint64_t ckpt_write_ns;   /* ... time the writer thread spent writing */
} aimsi_jobs_times;
void aimsi_jobs_get_times(aimsi_jobs *J, aimsi_jobs_times *out);

/* Test hook: called by a fit's checkpoint writer thread before it writes
 * the checkpoint of `step` (block in it to hold a write in flight). Set
 * before any job runs; NULL: none. */
typedef void (*aimsi_jobs_ckpt_hook_fn)(void *user, int64_t step);
void aimsi_jobs_set_ckpt_hook(aimsi_jobs *J, aimsi_jobs_ckpt_hook_fn fn, void *user);

/* Does the adopter have room for one more job? Asked before claiming an
 * expired job (a claim that cannot be queued would add a token for nothing).
 * NULL (the default): always. */
typedef int (*aimsi_jobs_room_fn)(void *user);
void aimsi_jobs_set_room(aimsi_jobs *J, aimsi_jobs_room_fn fn);

/* Give the train service impl (aimsi_kind_train) a store (svc_train.c): once,
 * before any submit. Starts the lease thread. */
aims_status aimsi_train_set_store(void *impl, const char *url, const char *instance);
/* The store of a train impl, or NULL (tests, benchmarks). */
aimsi_jobs *aimsi_train_jobs(void *impl);

#endif /* AIMSI_JOBS_H */
