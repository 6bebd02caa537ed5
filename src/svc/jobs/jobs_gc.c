/*
 * jobs_gc.c -- retention of finished durable jobs (docs/JOBS.md): without it
 * every job folder (its submit, checkpoints and result) stays in the store
 * forever. The store URL's keep_done=N keeps the N newest finished jobs and
 * keep_done_s=T those finished less than T seconds ago; a finished job beyond
 * either limit is removed by the lease thread's scan.
 *
 * Safely. A finished job is never adopted again, but several instances scan
 * the same store, and a client may be reading the job's result. So removal
 * is a claim like an adoption: the remover creates tok.<N+1> with put_new
 * (of several racing removers exactly one wins: only the owner of the final
 * token removes), then renames the whole folder j/<hex> to g/<hex>.<N+1> in
 * one step -- a reader sees the job complete or not at all -- and deletes the
 * files there. A remover that dies halfway leaves a g/ folder, never a
 * half-deleted job (g/ leftovers are swept by the next scan of any instance:
 * nothing reads g/).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs_impl.h"

#define GC_MAX 256
#define GC_FILES_MAX 64

typedef struct gc_item {
    const char *dir;
    int64_t ended_ms;
} gc_item;

static int newest_first(const void *a, const void *b)
{
    const int64_t x = ((const gc_item *)a)->ended_ms;
    const int64_t y = ((const gc_item *)b)->ended_ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

typedef struct name_list {
    char names[GC_FILES_MAX][AIMSI_STORE_NAME_MAX + 1];
    size_t n;
} name_list;

static int collect(void *user, const char *name)
{
    name_list *l = user;
    if (l->n < GC_FILES_MAX) {
        snprintf(l->names[l->n++], sizeof l->names[0], "%s", name);
    }
    return 0;
}

/* Remove folder `dir` (job files are flat) and its files. */
static void remove_folder(aimsi_jobs *J, const char *dir, name_list *l)
{
    l->n = 0;
    (void)aimsi_store_list(J->st, dir, collect, l);
    for (size_t i = 0; i < l->n; i++) {
        char name[AIMSI_STORE_NAME_MAX + 1];
        char leaf[AIMSI_STORE_NAME_MAX + 1];
        snprintf(leaf, sizeof leaf, "%s", l->names[i]);
        aimsi_jobs_path(dir, leaf, name);
        (void)aimsi_store_remove(J->st, name);
    }
    (void)aimsi_store_remove(J->st, dir);
}

/* Claim the job's final token, move it out of j/ at once, delete it. */
static void remove_job(aimsi_jobs *J, const char *dir, name_list *l)
{
    uint64_t top = 0;
    if (aimsi_jobs_token_now(J, dir, &top) != AIMS_OK ||
        aimsi_jobs_claim(J, dir, top + 1) != AIMS_OK) {
        return; /* another instance removes it (or the store is unreadable: next scan) */
    }
    char to[AIMSI_STORE_NAME_MAX + 1];
    snprintf(to, sizeof to, "g/%s.%" PRIu64, dir + 2, top + 1);
    if (J->st->ops->rename(J->st->ctx, dir, to) != AIMS_OK) {
        aimsi_log(AIMS_LOG_WARN, "jobs: retention: moving %s away: %s", dir, aims_errmsg());
        return;
    }
    remove_folder(J, to, l);
    aimsi_log(AIMS_LOG_INFO, "jobs: retention: removed finished job folder %s", dir);
}

static int gc_leftover(void *user, const char *name)
{
    name_list *l = user;
    if (l->n < GC_FILES_MAX) {
        snprintf(l->names[l->n++], sizeof l->names[0], "g/%s", name);
    }
    return 0;
}

void aimsi_jobs_gc(aimsi_jobs *J, const char (*dirs)[JOBS_DIR_MAX], size_t n)
{
    if ((J->keep_done < 0 && J->keep_done_ms < 0) || n == 0) {
        return;
    }
    gc_item *items = aimsi_calloc(n, sizeof *items);
    name_list *l = aimsi_calloc(1, sizeof *l);
    name_list *left = aimsi_calloc(1, sizeof *left);
    if (items == NULL || l == NULL || left == NULL) {
        aimsi_free(items);
        aimsi_free(l);
        aimsi_free(left);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n && k < GC_MAX; i++) {
        jobs_status s;
        if (aimsi_jobs_status_read(J, dirs[i], &s) == AIMS_OK && s.state >= AIMSI_JOB_DONE) {
            items[k].dir = dirs[i];
            items[k].ended_ms = s.ended_ms;
            k++;
        }
    }
    qsort(items, k, sizeof *items, newest_first);
    const int64_t now = aimsi_jobs_wall_ms();
    for (size_t i = 0; i < k && !atomic_load(&J->paused); i++) {
        const int too_many = J->keep_done >= 0 && (int64_t)i >= J->keep_done;
        const int too_old = J->keep_done_ms >= 0 && items[i].ended_ms > 0 &&
                            now - items[i].ended_ms > J->keep_done_ms;
        if (too_many || too_old) {
            remove_job(J, items[i].dir, l);
        }
    }
    /* folders a remover left halfway */
    (void)aimsi_store_list(J->st, "g", gc_leftover, left);
    for (size_t i = 0; i < left->n; i++) {
        remove_folder(J, left->names[i], l);
    }
    aimsi_free(left);
    aimsi_free(l);
    aimsi_free(items);
}
