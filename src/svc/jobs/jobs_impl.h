/*
 * jobs_impl.h -- private to src/svc/jobs/ (jobs.c, jobs_lease.c, jobs_fit.c,
 * jobs_data.c): the aimsi_jobs object, the held-job table, the job status
 * record and the fencing helpers. aimsi_jobs.h explains the design.
 */
#ifndef AIMSI_JOBS_IMPL_H
#define AIMSI_JOBS_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "../store/aimsi_store.h"
#include "aimsi_jobs.h"
#include "aimsi_rowcache.h"

#define JOBS_ID_MAX 64
#define JOBS_DIR_MAX (2 + 2 * JOBS_ID_MAX + 1)
#define JOBS_INSTANCE_MAX 96
#define JOBS_ERR_MAX 240
#define JOBS_LEASE_MS_DEFAULT 3000
#define JOBS_CACHE_MB_DEFAULT 512 /* data_cache_mb: decoded rows kept per instance */
#define JOBS_CKPT_KEEP 2
#define JOBS_REF_LEN (7 + 64) /* "sha256:" + hex */

/* A job this instance holds (runs or has queued) under a fencing token. */
typedef struct jobs_held {
    struct jobs_held *next;
    char id[JOBS_ID_MAX + 1];
    size_t id_len;
    char dir[JOBS_DIR_MAX];
    uint64_t token;
    _Atomic int64_t step; /* steps done, as the fit reports them (lease heartbeat) */
    _Atomic int lost;     /* another instance holds a higher token */
    _Atomic int cancel;   /* the lease thread saw the job's cancel marker */
    int64_t prev_step;    /* adopted: the step the previous owner last reported, else -1 */
} jobs_held;

struct aimsi_jobs {
    aimsi_store *st;
    char instance[JOBS_INSTANCE_MAX];
    int64_t lease_ms;
    int64_t scan_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    jobs_held *held;
    pthread_t thread;      /* renewals */
    pthread_t scan_thread; /* adoption scans (an adoption may read GBs of rows) */
    int thread_on;
    int quit;
    _Atomic int paused;   /* test hook: a paused process */
    _Atomic int stopped;  /* the service stopped: no adoption */
    _Atomic int wake;     /* stop: fits waiting in a pause return */
    _Atomic int64_t pause_after; /* test hook: pause after this many checkpoints (-1 off) */
    aimsi_jobs_adopt_fn adopt;
    void *adopt_user;
    aimsi_jobs_room_fn room; /* NULL: always room */
    aimsi_jobs_times times;  /* guarded by mu */
    int64_t keep_done;       /* retention: finished jobs kept (-1: all) */
    int64_t keep_done_ms;    /* retention: finished jobs kept this long (-1: forever) */
    aimsi_rowcache *cache;   /* decoded rows of data references (NULL: data_cache_mb=0) */
    pthread_t warm;          /* prefetch into the cache (jobs_cache.c) */
    int warm_on;
    _Atomic int64_t prefetched; /* rows the warm thread loaded */
    _Atomic int ckpt_async;     /* checkpoints off the training thread (ckpt_async=1) */
    _Atomic int ckpt_writing;   /* checkpoint writes in flight (jobs_ckpt.c) */
    aimsi_jobs_ckpt_hook_fn ckpt_hook; /* test hook, set before jobs run */
    void *ckpt_hook_user;
};

/* The job's status record (j/<hex>/status). */
typedef struct jobs_status {
    int state;
    char owner[JOBS_INSTANCE_MAX];
    uint64_t token;
    int64_t epoch;
    int64_t step;
    int64_t ckpt_step;     /* step of the newest checkpoint, -1 none */
    int64_t resumed_from;  /* checkpoint step the current owner resumed from, -1 none */
    int64_t lost_steps;    /* steps the previous owner had reported beyond it, -1 n/a */
    int64_t adoptions;
    int64_t ended_ms;      /* wall clock when the job finished (0: unknown / running) */
    int64_t ckpt_every;    /* checkpoint interval in steps (0: each epoch) */
    double loss;
    double metric;
    char err[JOBS_ERR_MAX];
} jobs_status;

/* A fit's checkpoint writer (jobs_ckpt.c): one snapshot in flight at most. */
typedef struct jobs_ckptw {
    aimsi_jobs *J;
    char dir[JOBS_DIR_MAX];
    uint64_t token;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int on;      /* thread started (lazily, at the first checkpoint) */
    int pending; /* a snapshot waits for or is in its write (mu) */
    int quit;
    struct aimsi_trainer_snap *snap; /* reused from checkpoint to checkpoint */
    int64_t step;                    /* of the snapshot */
    jobs_status s;                   /* the status record to write with it */
    aims_status rc;                  /* outcome of the last write (mu) */
    char err[JOBS_ERR_MAX];
    int64_t writes;    /* checkpoints handed to the thread */
    uint64_t write_ns; /* time the thread spent writing them (mu) */
} jobs_ckptw;

/* A job's checkpoints (steps, newest first; at most JOBS_CKPT_SCAN_MAX). */
#define JOBS_CKPT_SCAN_MAX 64
typedef struct jobs_ckpt_list {
    int64_t steps[JOBS_CKPT_SCAN_MAX];
    size_t n;
} jobs_ckpt_list;
aims_status aimsi_jobs_ckpt_list(aimsi_jobs *J, const char *dir, jobs_ckpt_list *c);
/* dir + "/ckpt.<step, 16 digits>" into out (AIMSI_STORE_NAME_MAX + 1 bytes). */
void aimsi_jobs_ckpt_name(const char *dir, int64_t step, char *out);

void aimsi_jobs_ckpt_init(jobs_ckptw *w, aimsi_jobs *J, const char *dir, uint64_t token);
/* Hand the checkpoint of `step` to the writer: waits for the previous one
 * (its failure is returned), snapshots t and s, and returns. *sync = 1 when
 * it could not (no memory for the snapshot, no thread, ckpt_async=0): the
 * caller writes this one synchronously. */
aims_status aimsi_jobs_ckpt_submit(jobs_ckptw *w, const aims_trainer *t, int64_t step,
                                   const jobs_status *s, int *sync);
/* Wait for the checkpoint in flight; its outcome. */
aims_status aimsi_jobs_ckpt_wait(jobs_ckptw *w);
/* Wait for the last write, stop the thread, free the snapshot; its outcome. */
aims_status aimsi_jobs_ckpt_finish(jobs_ckptw *w);
/* Put checkpoint bytes as ckpt.<step>, prune to the newest JOBS_CKPT_KEEP,
 * write status s (either path; the caller fenced). */
aims_status aimsi_jobs_ckpt_persist(aimsi_jobs *J, const char *dir, uint64_t token,
                                    const void *bytes, size_t len, int64_t step,
                                    const jobs_status *s);
/* Wait (at most max_ms) until no checkpoint write of J is in flight. */
void aimsi_jobs_ckpt_drain(aimsi_jobs *J, int64_t max_ms);

/* "j/<hex of id>" into dir. */
void aimsi_jobs_dirname(const char *id, size_t id_len, char dir[JOBS_DIR_MAX]);
/* dir + "/" + leaf into out (AIMSI_STORE_NAME_MAX + 1 bytes). */
void aimsi_jobs_path(const char *dir, const char *leaf, char *out);

/* Highest token file of the job (0 when none). */
aims_status aimsi_jobs_token_now(aimsi_jobs *J, const char *dir, uint64_t *out);
/* AIMS_OK when `token` is still the job's highest, else AIMS_E_STATE "fenced"
 * naming the instance that took the job (and marking the held entry lost). */
aims_status aimsi_jobs_fence(aimsi_jobs *J, const char *dir, uint64_t token);
/* Claim token n (put_new tok.<n>, content = our first lease). */
aims_status aimsi_jobs_claim(aimsi_jobs *J, const char *dir, uint64_t n);

void aimsi_jobs_status_init(jobs_status *s);
aims_status aimsi_jobs_status_read(aimsi_jobs *J, const char *dir, jobs_status *s);
aims_status aimsi_jobs_status_write(aimsi_jobs *J, const char *dir, const jobs_status *s);

/* Held table (take J->mu around these). */
jobs_held *aimsi_jobs_held_find(aimsi_jobs *J, const char *id, size_t id_len);
aims_status aimsi_jobs_held_add(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token);
void aimsi_jobs_held_remove(aimsi_jobs *J, const char *id, size_t id_len);

/* Write a job's lease (expiry now + lease_ms, or already past when release). */
aims_status aimsi_jobs_lease_write(aimsi_jobs *J, const char *dir, uint64_t token, int64_t step,
                                   int release);

/* A paused instance blocks here until unpaused or woken by stop: 1 when woken
 * (the caller gives up), 0 when it may go on. */
int aimsi_jobs_pause_point(aimsi_jobs *J);

/* Store the row tensors of m ("x"/"text", "y") by content; ref gets
 * "sha256:<hex>" (jobs_data.c). */
aims_status aimsi_jobs_data_store(aimsi_jobs *J, const aims_msg *m, char ref[JOBS_REF_LEN + 1]);
/* Decode an encoded frame (aimsi_malloc'd p, taken also on failure) into a
 * new message whose tensors point into it (jobs_data.c). */
aims_status aimsi_jobs_decode(void *p, size_t n, aims_msg **out);
/* The same for a frame at base + off (base is the allocation taken). */
aims_status aimsi_jobs_decode_at(void *base, size_t off, size_t n, aims_msg **out);
/* aimsi_jobs_data_load; record = 0: leave J->times alone (prefetch). */
aims_status aimsi_jobs_data_read(aimsi_jobs *J, const aims_msg *req, aims_msg **out, int record);
/* aimsi_jobs_data_get; record = 0: leave J->times alone (prefetch; jobs_cache.c). */
aims_status aimsi_jobs_data_fetch(aimsi_jobs *J, const aims_msg *req, aims_msg **rows,
                                  aims_dataset **ds, int32_t *ymax, int record);
/* The 64 hex digits of req's "data" reference (checked) into hex (jobs_data.c). */
aims_status aimsi_jobs_data_hex(const aims_msg *req, char hex[65]);
/* Decode the stored submit of the job in dir (jobs_lease.c). */
aims_status aimsi_jobs_load_submit(aimsi_jobs *J, const char *dir, aims_msg **out);
/* Wait on J->cv (J->mu held) until ms passed (at most 1 s) or quit (jobs_lease.c). */
void aimsi_jobs_wait_locked(aimsi_jobs *J, int64_t ms);
/* Start the prefetch thread when the cache is on (J->mu held; jobs_cache.c). */
void aimsi_jobs_warm_start(aimsi_jobs *J);
/* 1 when a caller on another instance asked to cancel the job in dir (jobs.c). */
int aimsi_jobs_cancelled(aimsi_jobs *J, const char *dir);

/* Retention (jobs_gc.c): remove finished jobs beyond keep_done / older than
 * keep_done_ms among the scanned job folders (lease thread). */
void aimsi_jobs_gc(aimsi_jobs *J, const char (*dirs)[JOBS_DIR_MAX], size_t n);

/* Wall-clock milliseconds (leases are compared across processes). */
int64_t aimsi_jobs_wall_ms(void);

#endif /* AIMSI_JOBS_IMPL_H */
