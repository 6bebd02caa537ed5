/*
 * jobs.c -- the durable-jobs object (aimsi_jobs.h): opening the store for one
 * train service, recording a new job, committing or ending it, and answering
 * status/result/cancel of jobs this instance does not run from the store.
 *
 * How a job is recorded. The submit request is kept as the job's recipe: its
 * rows go to the store once by content (jobs_data.c) and are replaced by a
 * "data" reference, the job's secret handle is added (the caller may not have
 * sent one), and the result is encoded as a frame at j/<hex>/submit. An
 * instance that adopts the job hands that very request to the train service,
 * which rebuilds the job exactly as the first instance did -- same spec, same
 * rows, same handle -- so the resumed run is the same run.
 *
 * The handle rule holds everywhere: the store's copy of the handle guards
 * status, result and cancel on every instance (compared in constant time),
 * so the store must be as private as the nodes' keys (folders are 0700).
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../codec/aimsi_frame.h"
#include "../aimsi_msg.h"
#include "../authz/aimsi_authz.h"
#include "jobs_impl.h"

aims_status aimsi_jobs_create(const char *url, const char *instance, aimsi_jobs **out)
{
    if (url == NULL || instance == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL url, instance or out");
    }
    int64_t lease_ms = 0;
    int64_t scan_ms = 0;
    AIMSI_TRY(aimsi_store_option(url, "lease_ms", 50, 3600000, JOBS_LEASE_MS_DEFAULT, &lease_ms));
    const int64_t third = lease_ms / 3 > 10 ? lease_ms / 3 : 10;
    AIMSI_TRY(aimsi_store_option(url, "scan_ms", 10, 3600000, third, &scan_ms));
    scan_ms = scan_ms < third ? scan_ms : third; /* adopters look at least every heartbeat */
    int64_t cache_mb = 0;
    AIMSI_TRY(aimsi_store_option(url, "data_cache_mb", 0, 1 << 20, JOBS_CACHE_MB_DEFAULT,
                                 &cache_mb));
    int64_t keep_done = 0;
    int64_t keep_done_s = 0;
    AIMSI_TRY(aimsi_store_option(url, "keep_done", 0, INT32_MAX, -1, &keep_done));
    AIMSI_TRY(aimsi_store_option(url, "keep_done_s", 0, INT32_MAX, -1, &keep_done_s));
    int64_t ckpt_async = 1;
    AIMSI_TRY(aimsi_store_option(url, "ckpt_async", 0, 1, 1, &ckpt_async));
    aimsi_jobs *J = aimsi_calloc(1, sizeof *J);
    if (J == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "jobs: no memory");
    }
    J->keep_done = keep_done;
    J->keep_done_ms = keep_done_s >= 0 ? keep_done_s * 1000 : -1;
    size_t k = 0;
    for (const char *p = instance; *p != '\0' && k + 1 < sizeof J->instance; p++) {
        const char c = *p;
        J->instance[k++] = (c == '\n' || c == '=' || c == '\r') ? '_' : c; /* one line */
    }
    J->instance[k] = '\0';
    J->lease_ms = lease_ms;
    J->scan_ms = scan_ms;
    aims_status rc = cache_mb > 0 ? aimsi_rowcache_create((size_t)cache_mb << 20, &J->cache)
                                  : AIMS_OK;
    if (rc == AIMS_OK) {
        rc = aimsi_store_open(url, &J->st);
    }
    if (rc == AIMS_OK && pthread_mutex_init(&J->mu, NULL) != 0) {
        rc = aimsi_err(NULL, AIMS_E_BACKEND, "jobs: pthread_mutex_init failed");
        aimsi_store_close(J->st);
    } else if (rc == AIMS_OK && pthread_cond_init(&J->cv, NULL) != 0) {
        rc = aimsi_err(NULL, AIMS_E_BACKEND, "jobs: pthread_cond_init failed");
        pthread_mutex_destroy(&J->mu);
        aimsi_store_close(J->st);
    }
    if (rc != AIMS_OK) {
        aimsi_rowcache_destroy(J->cache);
        aimsi_free(J);
        return rc;
    }
    atomic_init(&J->prefetched, 0);
    atomic_init(&J->ckpt_async, (int)ckpt_async);
    atomic_init(&J->ckpt_writing, 0);
    atomic_init(&J->paused, 0);
    atomic_init(&J->stopped, 0);
    atomic_init(&J->wake, 0);
    atomic_init(&J->pause_after, -1);
    *out = J;
    return AIMS_OK;
}

void aimsi_jobs_destroy(aimsi_jobs *J)
{
    if (J == NULL) {
        return;
    }
    aimsi_jobs_join(J);
    aimsi_jobs_stop(J); /* releases leases (unless paused) and frees the held table */
    pthread_cond_destroy(&J->cv);
    pthread_mutex_destroy(&J->mu);
    aimsi_store_close(J->st);
    aimsi_rowcache_destroy(J->cache); /* views jobs still hold stay valid */
    aimsi_free(J);
}

const char *aimsi_jobs_instance(const aimsi_jobs *J)
{
    return J->instance;
}

/* ---- a new job ------------------------------------------------------------------------------ */

static aims_status job_of(const aims_msg *m, const char **id, size_t *len)
{
    if (aimsi_msg_bytes(m, "job", id, len) != AIMS_OK || *len == 0 || *len > JOBS_ID_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "jobs: \"job\" must be BYTES of 1..%d bytes",
                         JOBS_ID_MAX);
    }
    return AIMS_OK;
}

/* The job's recipe: submit minus rows and handle, plus "handle" and "data". */
static aims_status make_record(aimsi_jobs *J, const aims_msg *submit, const char *handle,
                               size_t handle_len, aims_msg *rec)
{
    size_t idx = 0;
    int has_rows = 0;
    const size_t n = aims_msg_num_tensors(submit);
    for (size_t i = 0; i < n; i++) {
        const char *name = NULL;
        aims_dtype dt = 0;
        size_t nd = 0;
        const uint64_t *dims = NULL;
        const void *data = NULL;
        AIMSI_TRY(aims_msg_get_tensor(submit, i, &name, &dt, &nd, &dims, &data, NULL));
        if (strcmp(name, "x") == 0 || strcmp(name, "y") == 0 || strcmp(name, "text") == 0) {
            has_rows = 1;
            continue;
        }
        if (strcmp(name, "handle") == 0) {
            continue;
        }
        AIMSI_TRY(aims_msg_add(rec, name, dt, dims, nd, data, AIMS_MSG_BORROW));
    }
    AIMSI_TRY(aimsi_msg_put_bytes(rec, "handle", handle, handle_len));
    if (has_rows && aims_msg_find(rec, "data", &idx) != AIMS_OK) {
        char ref[JOBS_REF_LEN + 1];
        AIMSI_TRY(aimsi_jobs_data_store(J, submit, ref));
        AIMSI_TRY(aimsi_msg_put_bytes(rec, "data", ref, JOBS_REF_LEN));
    }
    return AIMS_OK;
}

static aims_status put_record(aimsi_jobs *J, const char *dir, const aims_msg *rec)
{
    aimsi_tensor views[AIMS_MSG_MAX_TENSORS];
    const size_t n = aimsi_msg_views(rec, views);
    aimsi_frame_hdr hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.type = AIMSI_FRAME_REPLY;
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = aimsi_frame_encode(&hdr, views, n, NULL, 0, &b);
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "submit", name);
    if (rc == AIMS_OK) {
        rc = aimsi_store_put(J->st, name, b.data, b.len);
    }
    aimsi_buf_free(&b);
    return rc;
}

aims_status aimsi_jobs_begin(aimsi_jobs *J, const aims_msg *submit, const char *handle,
                             size_t handle_len, uint64_t *token)
{
    const char *id = NULL;
    size_t id_len = 0;
    AIMSI_TRY(job_of(submit, &id, &id_len));
    char dir[JOBS_DIR_MAX];
    aimsi_jobs_dirname(id, id_len, dir);
    atomic_store(&J->stopped, 0); /* the service runs (again) */
    atomic_store(&J->wake, 0);
    aims_msg *rec = NULL;
    AIMSI_TRY(aims_msg_create(&rec));
    aims_status rc = make_record(J, submit, handle, handle_len, rec);
    if (rc == AIMS_OK) {
        rc = aimsi_jobs_claim(J, dir, 1); /* AIMS_E_EXISTS: the store has this job */
    }
    if (rc == AIMS_OK) {
        rc = put_record(J, dir, rec);
    }
    aims_msg_destroy(rec);
    jobs_status s;
    aimsi_jobs_status_init(&s);
    s.state = AIMSI_JOB_QUEUED;
    snprintf(s.owner, sizeof s.owner, "%s", J->instance);
    s.token = 1;
    if (rc == AIMS_OK) {
        rc = aimsi_jobs_status_write(J, dir, &s);
    }
    if (rc == AIMS_OK) {
        pthread_mutex_lock(&J->mu);
        rc = aimsi_jobs_held_add(J, id, id_len, 1);
        pthread_mutex_unlock(&J->mu);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_jobs_lease_write(J, dir, 1, 0, 0);
    }
    if (rc == AIMS_OK) {
        *token = 1;
    }
    return rc;
}

/* ---- the end of a job ----------------------------------------------------------------------- */

static void forget(aimsi_jobs *J, const char *id, size_t id_len)
{
    pthread_mutex_lock(&J->mu);
    aimsi_jobs_held_remove(J, id, id_len);
    pthread_mutex_unlock(&J->mu);
}

aims_status aimsi_jobs_commit(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token,
                              const void *bytes, size_t len)
{
    char dir[JOBS_DIR_MAX];
    aimsi_jobs_dirname(id, id_len, dir);
    if (aimsi_jobs_pause_point(J)) {
        return aimsi_err(NULL, AIMS_E_CANCELLED, "jobs: stopped while paused");
    }
    aims_status rc = aimsi_jobs_fence(J, dir, token);
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "result", name);
    if (rc == AIMS_OK) {
        rc = aimsi_store_put_new(J->st, name, bytes, len);
        if (rc == AIMS_E_EXISTS) {
            /* a released owner finished just before it noticed: the same run, so the
             * same bytes; anything else is a second result and refused */
            void *had = NULL;
            size_t had_len = 0;
            rc = aimsi_store_get(J->st, name, &had, &had_len);
            if (rc == AIMS_OK && (had_len != len || memcmp(had, bytes, len) != 0)) {
                rc = aimsi_err(NULL, AIMS_E_EXISTS, "jobs: job %.*s has another result already "
                               "(one result per job)", (int)id_len, id);
            }
            aimsi_free(had);
        }
    }
    jobs_status s;
    if (rc == AIMS_OK && aimsi_jobs_status_read(J, dir, &s) == AIMS_OK) {
        s.state = AIMSI_JOB_DONE;
        s.ended_ms = aimsi_jobs_wall_ms();
        pthread_mutex_lock(&J->mu);
        jobs_held *h = aimsi_jobs_held_find(J, id, id_len);
        s.step = h != NULL ? atomic_load(&h->step) : s.step;
        pthread_mutex_unlock(&J->mu);
        (void)aimsi_jobs_status_write(J, dir, &s);
    }
    if (rc != AIMS_E_CANCELLED) {
        forget(J, id, id_len);
    }
    return rc;
}

void aimsi_jobs_end(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token, int state,
                    const char *err)
{
    char dir[JOBS_DIR_MAX];
    aimsi_jobs_dirname(id, id_len, dir);
    jobs_status s;
    if (aimsi_jobs_fence(J, dir, token) == AIMS_OK &&
        aimsi_jobs_status_read(J, dir, &s) == AIMS_OK && s.state < AIMSI_JOB_DONE) {
        s.state = state;
        s.ended_ms = aimsi_jobs_wall_ms();
        snprintf(s.err, sizeof s.err, "%s", err != NULL ? err : "");
        (void)aimsi_jobs_status_write(J, dir, &s);
    }
    forget(J, id, id_len);
}

void aimsi_jobs_drop(aimsi_jobs *J, const char *id, size_t id_len)
{
    forget(J, id, id_len);
}

/* ---- answers from the store ----------------------------------------------------------------- */

static aims_status put_i64(aims_msg *m, const char *name, int64_t v)
{
    return aimsi_msg_put_i64(m, name, v);
}

static aims_status add_extra(aims_msg *m, const jobs_status *s)
{
    AIMSI_TRY(aimsi_msg_put_bytes(m, "owner", s->owner, strlen(s->owner)));
    AIMSI_TRY(put_i64(m, "token", (int64_t)s->token));
    AIMSI_TRY(put_i64(m, "step", s->step));
    AIMSI_TRY(put_i64(m, "ckpt_step", s->ckpt_step));
    AIMSI_TRY(put_i64(m, "resumed_from", s->resumed_from));
    AIMSI_TRY(put_i64(m, "lost_steps", s->lost_steps));
    AIMSI_TRY(put_i64(m, "adoptions", s->adoptions));
    return put_i64(m, "ckpt_every", s->ckpt_every);
}

void aimsi_jobs_status_extra(aimsi_jobs *J, const char *id, size_t id_len, aims_msg *reply)
{
    char dir[JOBS_DIR_MAX];
    aimsi_jobs_dirname(id, id_len, dir);
    jobs_status s;
    if (aimsi_jobs_status_read(J, dir, &s) == AIMS_OK) {
        (void)add_extra(reply, &s);
    }
}

/* Does the request carry the job's handle (from its stored recipe)? */
static aims_status check_handle(aimsi_jobs *J, const char *dir, const aims_msg *req)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "submit", name);
    void *p = NULL;
    size_t n = 0;
    AIMSI_TRY(aimsi_store_get(J->st, name, &p, &n));
    aimsi_frame f;
    aims_status rc = aimsi_frame_decode(p, n, (size_t)1 << 31, &f);
    const char *want = NULL;
    size_t want_len = 0;
    for (size_t i = 0; rc == AIMS_OK && i < f.n_tensors; i++) {
        if (strcmp(f.tensors[i].name, "handle") == 0) {
            want = f.tensors[i].data;
            want_len = f.tensors[i].bytes;
        }
    }
    const char *got = NULL;
    size_t got_len = 0;
    const int ok = (want != NULL && aimsi_msg_bytes(req, "handle", &got, &got_len) == AIMS_OK &&
                    aimsi_secret_equal(want, want_len, got, got_len)) ||
                   aimsi_authz_admin(req);
    if (rc == AIMS_OK) {
        aimsi_frame_release(&f);
    }
    aimsi_free(p);
    return rc != AIMS_OK ? rc : ok ? AIMS_OK : AIMS_E_DENIED;
}

static aims_status answer_status(aims_msg *m, const jobs_status *s)
{
    const int32_t state = s->state;
    const int32_t epoch = (int32_t)s->epoch;
    const float loss = (float)s->loss;
    const float metric = (float)s->metric;
    AIMSI_TRY(aims_msg_add(m, "state", AIMS_DT_I32, NULL, 0, &state, 0));
    AIMSI_TRY(aims_msg_add(m, "epoch", AIMS_DT_I32, NULL, 0, &epoch, 0));
    AIMSI_TRY(aims_msg_add(m, "loss", AIMS_DT_F32, NULL, 0, &loss, 0));
    AIMSI_TRY(aims_msg_add(m, "metric", AIMS_DT_F32, NULL, 0, &metric, 0));
    if (s->state == AIMSI_JOB_FAILED) {
        AIMSI_TRY(aimsi_msg_put_bytes(m, "error", s->err, strlen(s->err)));
    }
    return add_extra(m, s);
}

aims_status aimsi_jobs_answer(aimsi_jobs *J, aimsi_work *w, const char *id, size_t id_len)
{
    static const char *const names[] = {"queued", "running", "done", "failed", "cancelled"};
    char dir[JOBS_DIR_MAX];
    aimsi_jobs_dirname(id, id_len, dir);
    jobs_status s;
    aims_status rc = aimsi_jobs_status_read(J, dir, &s);
    if (rc == AIMS_E_NOTFOUND) {
        return AIMS_E_NOTFOUND;
    }
    if (rc == AIMS_OK) {
        rc = check_handle(J, dir, w->req);
    }
    if (rc == AIMS_E_DENIED) {
        return aimsi_work_fail(w, AIMS_E_DENIED, "%s: job %.*s: wrong or missing \"handle\" (the "
                               "secret its submit returned)", w->method, (int)id_len, id);
    }
    if (rc != AIMS_OK) {
        return aimsi_work_fail(w, rc, "%s: job %.*s in the store: %s", w->method, (int)id_len,
                               id, aims_errmsg());
    }
    const int st = s.state >= 0 && s.state <= 4 ? s.state : AIMSI_JOB_FAILED;
    aims_msg_clear(w->reply);
    if (strcmp(w->method, "status") == 0) {
        rc = answer_status(w->reply, &s);
        return rc == AIMS_OK ? AIMS_OK : aimsi_work_fail(w, rc, "status: no room for the reply");
    }
    if (strcmp(w->method, "cancel") == 0) {
        /* the owner's fit sees the marker at its next checkpoint */
        char name[AIMSI_STORE_NAME_MAX + 1];
        aimsi_jobs_path(dir, "cancel", name);
        if (st < AIMSI_JOB_DONE) {
            rc = aimsi_store_put(J->st, name, "cancel\n", 7);
        }
        if (rc == AIMS_OK) {
            const int32_t state = st;
            rc = aims_msg_add(w->reply, "state", AIMS_DT_I32, NULL, 0, &state, 0);
        }
        return rc == AIMS_OK ? AIMS_OK : aimsi_work_fail(w, rc, "cancel: %s", aims_errmsg());
    }
    if (st != AIMSI_JOB_DONE) {
        return aimsi_work_fail(w, AIMS_E_STATE, "result: job %.*s is %s%s%s (on %s)",
                               (int)id_len, id, names[st], s.err[0] != '\0' ? ": " : "", s.err,
                               s.owner);
    }
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "result", name);
    void *p = NULL;
    size_t n = 0;
    rc = aimsi_store_get(J->st, name, &p, &n);
    if (rc == AIMS_OK) {
        const uint64_t dim = n;
        rc = aims_msg_add(w->reply, "bundle", AIMS_DT_BYTES, &dim, 1, p, 0);
        aimsi_free(p);
    }
    return rc == AIMS_OK ? AIMS_OK : aimsi_work_fail(w, rc, "result: %s", aims_errmsg());
}

/* Has a caller on another instance cancelled the job? (jobs_fit.c) */
int aimsi_jobs_cancelled(aimsi_jobs *J, const char *dir)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "cancel", name);
    void *p = NULL;
    size_t n = 0;
    if (aimsi_store_get(J->st, name, &p, &n) != AIMS_OK) {
        return 0;
    }
    aimsi_free(p);
    return 1;
}

int aimsi_jobs_state(aimsi_jobs *J, const char *id, size_t id_len)
{
    char dir[JOBS_DIR_MAX];
    aimsi_jobs_dirname(id, id_len, dir);
    jobs_status s;
    return aimsi_jobs_status_read(J, dir, &s) == AIMS_OK ? s.state : -1;
}
