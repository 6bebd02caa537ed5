/*
 * jobs_cache.c -- fast adoption (docs/JOBS.md, "Fast adoption"): the rows of
 * data references come from the instance's row cache (aimsi_rowcache.h),
 * and a warm thread fills it with the rows of the jobs other instances run,
 * so that when one of them dies its adopter only claims the job and loads a
 * checkpoint.
 *
 * Why prefetch. Detection already costs about one lease (a lease is three
 * heartbeats), so an adoption meets "<= 3 heartbeats + one checkpoint load"
 * only if it does not read the job's rows then. A standby instance has
 * nothing better to do than to hold them: the warm thread looks at the store
 * every scan_ms, and for each unfinished job it does not run (once per job)
 * reads the stored submit and loads its "data" reference into the cache --
 * through the same checked path as an adoption (store CRC, digest or its
 * sidecar, the submit's row checks), so the cache never holds rows a reader
 * would refuse. The cache's bound (store option data_cache_mb) caps what
 * this costs in memory; data_cache_mb=0 turns cache and prefetch off.
 *
 * What is cached. Dense rows ("x" f32 [rows, cols] + "y" i32 [rows]) become
 * a checked root dataset; a submit gets a view of it (no copy). Text rows
 * ("text") are tokenized by the service's pipeline at submit and take the
 * uncached path (the decoded rows, as before).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../aimsi_msg.h"
#include "../train_spec.h"
#include "aimsi_rowcache.h"
#include "jobs_impl.h"

#define WARM_MEMO 256

/* ---- the loader: rows of a reference -> a checked root dataset ------------------------------ */

typedef struct load_ctx {
    aimsi_jobs *J;
    const aims_msg *req; /* carries "data" */
    aims_msg *rows;      /* not dense: the decoded rows, for the caller */
    int record;          /* 0: a prefetch, J->times untouched */
} load_ctx;

/* Dense rows of m as a new root dataset; AIMS_E_UNSUPPORTED when m holds
 * no well-formed dense rows (text, or shapes the submit's own checks will
 * name). */
static aims_status dense_of(const aims_msg *m, aims_dataset **root, size_t *bytes, int32_t *ymax)
{
    const uint64_t *dx = NULL;
    const uint64_t *dy = NULL;
    const void *x = NULL;
    const void *y = NULL;
    size_t bx = 0;
    size_t by = 0;
    if (!aimsi_train_get_tensor(m, "x", AIMS_DT_F32, 2, &dx, &x, &bx) ||
        !aimsi_train_get_tensor(m, "y", AIMS_DT_I32, 1, &dy, &y, &by) || dx[0] == 0 ||
        dx[1] == 0 || dy[0] != dx[0] || (uint64_t)(size_t)dx[0] != dx[0] ||
        (uint64_t)(size_t)dx[1] != dx[1]) {
        return AIMS_E_UNSUPPORTED;
    }
    const size_t rows = (size_t)dx[0];
    const size_t cols = (size_t)dx[1];
    void *tx = NULL;
    void *ty = NULL;
    aims_status rc = aimsi_train_aligned(x, bx, _Alignof(float), &x, &tx);
    if (rc == AIMS_OK) {
        rc = aimsi_train_aligned(y, by, _Alignof(int32_t), &y, &ty);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_train_check_rows(x, y, rows, cols, ymax);
    }
    if (rc == AIMS_OK) {
        rc = aims_dataset_create_dense(rows, cols, x, y, root);
    }
    aimsi_free(tx);
    aimsi_free(ty);
    if (rc == AIMS_OK) {
        *bytes = rows * cols * sizeof(float) + rows * sizeof(int32_t);
    }
    return rc;
}

static aims_status load_rows(void *user, aims_dataset **root, size_t *bytes, int32_t *ymax)
{
    load_ctx *c = user;
    aims_msg *m = NULL;
    AIMSI_TRY(aimsi_jobs_data_read(c->J, c->req, &m, c->record)); /* CRC + digest/sidecar */
    const uint64_t t0 = aimsi_now_ns();
    const aims_status rc = dense_of(m, root, bytes, ymax);
    if (rc == AIMS_E_UNSUPPORTED) {
        c->rows = m; /* not dense: the caller takes the decoded rows */
        return rc;
    }
    aims_msg_destroy(m);
    if (c->record) {
        pthread_mutex_lock(&c->J->mu);
        c->J->times.data_build_ns = aimsi_now_ns() - t0;
        pthread_mutex_unlock(&c->J->mu);
    }
    return rc;
}

aims_status aimsi_jobs_data_get(aimsi_jobs *J, const aims_msg *req, aims_msg **rows,
                                aims_dataset **ds, int32_t *ymax)
{
    return aimsi_jobs_data_fetch(J, req, rows, ds, ymax, 1);
}

aims_status aimsi_jobs_data_fetch(aimsi_jobs *J, const aims_msg *req, aims_msg **rows,
                                  aims_dataset **ds, int32_t *ymax, int record)
{
    *rows = NULL;
    *ds = NULL;
    if (J->cache == NULL) {
        return aimsi_jobs_data_read(J, req, rows, record); /* data_cache_mb=0 */
    }
    char hex[65];
    AIMSI_TRY(aimsi_jobs_data_hex(req, hex));
    load_ctx c = {J, req, NULL, record};
    int hit = 0;
    int32_t ym = 0;
    aims_dataset *view = NULL;
    const aims_status rc = aimsi_rowcache_get(J->cache, hex, load_rows, &c, &view, &ym, &hit);
    if (c.rows != NULL) {
        *rows = c.rows;
        return AIMS_OK;
    }
    if (rc != AIMS_OK) {
        return rc;
    }
    *ds = view;
    *ymax = ym;
    if (!record) {
        return AIMS_OK;
    }
    pthread_mutex_lock(&J->mu);
    J->times.data_cached = hit;
    if (hit) { /* nothing read, checked or built for this adoption */
        J->times.data_read_ns = 0;
        J->times.data_verify_ns = 0;
        J->times.data_decode_ns = 0;
        J->times.data_build_ns = 0;
    }
    pthread_mutex_unlock(&J->mu);
    return AIMS_OK;
}

void aimsi_jobs_cache_stats(aimsi_jobs *J, aimsi_rowcache_stats *out)
{
    memset(out, 0, sizeof *out);
    if (J->cache != NULL) {
        aimsi_rowcache_get_stats(J->cache, out);
    }
}

int64_t aimsi_jobs_prefetched(aimsi_jobs *J)
{
    return atomic_load(&J->prefetched);
}

/* ---- the warm thread ------------------------------------------------------------------------ */

typedef struct warm_state {
    char seen[WARM_MEMO][JOBS_DIR_MAX]; /* jobs looked at (finished, or their rows loaded) */
    size_t n_seen;
    size_t next; /* ring position once full */
    char names[256][JOBS_DIR_MAX];
    size_t n;
} warm_state;

static int warm_list_cb(void *user, const char *name)
{
    warm_state *w = user;
    if (w->n < 256 && strlen(name) <= 2 * JOBS_ID_MAX) {
        snprintf(w->names[w->n++], JOBS_DIR_MAX, "j/%s", name);
    }
    return 0;
}

static int seen(const warm_state *w, const char *dir)
{
    for (size_t i = 0; i < w->n_seen; i++) {
        if (strcmp(w->seen[i], dir) == 0) {
            return 1;
        }
    }
    return 0;
}

static void remember(warm_state *w, const char *dir)
{
    const size_t at = w->n_seen < WARM_MEMO ? w->n_seen++ : w->next++ % WARM_MEMO;
    snprintf(w->seen[at], JOBS_DIR_MAX, "%s", dir);
}

static int mine(aimsi_jobs *J, const char *dir)
{
    int found = 0;
    pthread_mutex_lock(&J->mu);
    for (const jobs_held *h = J->held; h != NULL && !found; h = h->next) {
        found = strcmp(h->dir, dir) == 0;
    }
    pthread_mutex_unlock(&J->mu);
    return found;
}

static int quitting(aimsi_jobs *J)
{
    pthread_mutex_lock(&J->mu);
    const int q = J->quit;
    pthread_mutex_unlock(&J->mu);
    return q || atomic_load(&J->paused) || atomic_load(&J->stopped);
}

/* Load the rows of the unfinished jobs this instance does not run. */
static void warm_pass(aimsi_jobs *J, warm_state *w)
{
    w->n = 0;
    (void)aimsi_store_list(J->st, "j", warm_list_cb, w);
    for (size_t i = 0; i < w->n && !quitting(J); i++) {
        const char *dir = w->names[i];
        jobs_status s;
        if (seen(w, dir) || mine(J, dir) || aimsi_jobs_status_read(J, dir, &s) != AIMS_OK) {
            continue; /* no status yet: a submit being recorded, next pass */
        }
        remember(w, dir); /* once per job, whatever happens below */
        aims_msg *sub = NULL;
        if (s.state >= AIMSI_JOB_DONE || aimsi_jobs_load_submit(J, dir, &sub) != AIMS_OK) {
            continue;
        }
        if (aimsi_jobs_has_ref(sub)) {
            aims_msg *rows = NULL;
            aims_dataset *ds = NULL;
            int32_t ymax = 0;
            if (aimsi_jobs_data_fetch(J, sub, &rows, &ds, &ymax, 0) == AIMS_OK && ds != NULL) {
                atomic_fetch_add(&J->prefetched, 1);
            } else if (rows == NULL) {
                aimsi_log(AIMS_LOG_WARN, "jobs: %s: prefetching the rows of %s: %s", J->instance,
                          dir, aims_errmsg());
            }
            aims_msg_destroy(rows);
            aims_dataset_destroy(ds);
        }
        aims_msg_destroy(sub);
    }
}

static void *warm_thread(void *arg)
{
    aimsi_jobs *J = arg;
    warm_state *w = aimsi_calloc(1, sizeof *w);
    pthread_mutex_lock(&J->mu);
    while (!J->quit && w != NULL) {
        pthread_mutex_unlock(&J->mu);
        if (!atomic_load(&J->paused) && !atomic_load(&J->stopped)) {
            warm_pass(J, w);
        }
        pthread_mutex_lock(&J->mu);
        aimsi_jobs_wait_locked(J, J->scan_ms);
    }
    pthread_mutex_unlock(&J->mu);
    aimsi_free(w);
    return NULL;
}

/* Called by aimsi_jobs_start with J->mu held; aimsi_jobs_join joins it. */
void aimsi_jobs_warm_start(aimsi_jobs *J)
{
    if (J->cache == NULL || J->warm_on) {
        return;
    }
    if (pthread_create(&J->warm, NULL, warm_thread, J) != 0) {
        aimsi_log(AIMS_LOG_WARN, "jobs: %s: no prefetch thread (adoptions read their rows)",
                  J->instance);
        return;
    }
    J->warm_on = 1;
}
