/*
 * aims_jobs.h -- durable training jobs: training that survives the death of
 * the node running it (docs/JOBS.md).
 *
 * A train service (aims_service_add_train) keeps its jobs in memory: if its
 * node dies, its jobs are lost. Given a store -- a directory on a path every
 * train instance of the service shares -- it keeps each job there instead:
 *
 *  - the job's recipe (spec, publish, handle, and its rows stored once by
 *    content, see "Data by reference"), its status and its result;
 *  - exact-resume trainer checkpoints, written every checkpoint_every_steps
 *    steps (spec key; 0 = default = at each epoch end) and at least every
 *    checkpoint_every_ms ms (spec key; default 30000, 0 = off). The two newest
 *    are kept; each carries a checksum, and a damaged one is skipped for the
 *    one before it;
 *  - a lease per job with a fencing token. The instance running a job renews
 *    its lease every lease_ms / 3; when the lease expires (its node died or
 *    hung), another instance of the service claims the next token -- one
 *    claimer wins -- and resumes the job from its newest intact checkpoint.
 *    The model it finishes is bit-identical to an uninterrupted run (same
 *    seed, same data, same AIMS_TRAIN_THREADS). At most one checkpoint
 *    interval of work is redone.
 *  - fencing: every checkpoint, status and result write first checks that the
 *    writer still holds the job's highest token, so an instance that was
 *    paused past its lease and comes back cannot publish (its job ends with
 *    "fenced: ... instance X holds it now"); a job has exactly one result.
 *
 * Methods a durable train service adds or extends (over any transport):
 *  - "status" on ANY instance answers for every job in the store (state,
 *    epoch, loss, metric) plus "owner" (BYTES, the instance running it),
 *    "token", "step", "ckpt_step" (newest checkpoint), "resumed_from" (the
 *    checkpoint step the current owner resumed from, -1 none), "lost_steps"
 *    (steps the previous owner had reported beyond it), "adoptions",
 *    "ckpt_every" (all i64); "result" and "cancel" likewise. The job's
 *    secret "handle" is still required for all three.
 *  - "put_data": request "x" (f32 [rows, cols]) or "text" (BYTES) and "y"
 *    (i32 [rows]); reply "data" = "sha256:<64 hex digits>". A submit may then
 *    carry "data" with that reference instead of the rows.
 *
 * Data by reference. Rows are stored once, named by the SHA-256 of their
 * encoding, and checked against it when read, so a job resumed on another
 * instance trains on the very same bytes. Each instance keeps the decoded
 * rows of the unfinished jobs in the store (read ahead while their owners
 * run, bounded by data_cache_mb), so an adoption reads no rows. A submit that ships its rows has
 * them stored this way too (a retry or an adoption never ships them again).
 * Hashing uses OpenSSL: built without it (-Dtls=disabled), "put_data" and
 * durable submits report "built without OpenSSL".
 *
 * The store is trusted like the nodes' keys: it holds each job's handle (its
 * folders are created mode 0700). Leases compare wall-clock times: instances
 * on several hosts need synchronized clocks (NTP) and a lease_ms well above
 * their skew.
 *
 * Threads. aims_service_set_store is called once per service, before its
 * first submit, from the thread that configures the node.
 */
/** @file */
#ifndef AIMS_JOBS_H
#define AIMS_JOBS_H

#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/**
 * @brief Keep the jobs of train service @p s in a store shared by every
 *        instance of the service (docs/JOBS.md).
 * @param s      A train service (aims_service_add_train), before its first
 *               submit; else AIMS_E_INVAL (another kind) or AIMS_E_STATE.
 * @param store  "dir:/absolute/path" or "/absolute/path" (created, mode
 *               0700, when missing), optionally followed by
 *               "?lease_ms=N" (job lease, 50..3600000; default 3000),
 *               "&scan_ms=N" (how often to look for orphaned jobs; default
 *               and at most lease_ms / 3: a larger value is lowered to it),
 *               "&data_cache_mb=N" (0..1048576, default 512: the decoded
 *               rows of data references this instance keeps, prefetched
 *               for the jobs other instances run, so that adopting one is a
 *               claim + a checkpoint load; least recently used rows are
 *               dropped beyond N MB; 0 = no cache, no prefetch), and
 *               "&keep_done=N", "&keep_done_s=T" (retention, docs/JOBS.md).
 * @return AIMS_OK, AIMS_E_MISUSE (NULL), AIMS_E_INVAL (not a train service,
 *         bad store URL or option), AIMS_E_STATE (store already set, or jobs
 *         submitted), AIMS_E_IO (the directory cannot be made), AIMS_E_NOMEM.
 *         The message (aims_errmsg) names the problem.
 * @note Thread safety: configure the service from one thread.
 * @since 0.1
 */
AIMS_API aims_status aims_service_set_store(aims_service *s, const char *store);

AIMS_EXTERN_C_END

#endif /* AIMS_JOBS_H */
