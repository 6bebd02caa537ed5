/*
 * aimsi_rowcache.h -- the decoded rows of training data by reference, kept
 * per train instance (docs/JOBS.md, "Fast adoption"): a small
 * content-addressed cache of datasets keyed by the SHA-256 digest the store
 * names them by (d/<hex>), bounded in bytes, evicted least recently used.
 *
 * Why. Adopting a job whose owner died used to cost reading, checking,
 * decoding and copying all its rows (188 MB for Fashion-MNIST: seconds on a
 * loaded machine), far more than the claim and the checkpoint load. With the
 * rows already decoded on the adopter (prefetched while the owner was alive,
 * jobs_cache.c), an adoption is a claim + a checkpoint load.
 *
 * How. An entry holds a root aims_dataset built (and checked) from rows that
 * passed the store's CRC and their digest; a get hands out a new VIEW of it
 * (aims_dataset_view: no copy), and the dataset's own reference count keeps
 * the arrays alive while any job trains on them, whatever the cache evicts
 * meanwhile. The bound counts the entries the cache keeps (cap_bytes); the
 * rows of running jobs live as long as their jobs. A value larger than the
 * bound is handed out but not kept. One loader per digest at a time: a
 * second get of a digest being loaded waits for the first instead of
 * reading the same bytes again. Rows that failed to load (a bad CRC, a wrong
 * digest, rows a submit would refuse) are never entered.
 *
 * Threads. Every call may come from any thread (one mutex; the loader runs
 * outside it).
 */
#ifndef AIMSI_ROWCACHE_H
#define AIMSI_ROWCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "aims/aims_dataset.h"

typedef struct aimsi_rowcache aimsi_rowcache;

/* Build the value of a missing digest: a root dataset (taken by the cache),
 * its size in bytes and its largest label. Runs without the cache's lock. */
typedef aims_status (*aimsi_rowcache_load_fn)(void *user, aims_dataset **root, size_t *bytes,
                                              int32_t *ymax);

typedef struct aimsi_rowcache_stats {
    size_t entries;     /* datasets kept */
    size_t bytes;       /* their bytes (<= cap) */
    size_t cap;         /* the bound */
    uint64_t hits;      /* gets served from the cache */
    uint64_t misses;    /* gets that had to load */
    uint64_t loads;     /* loads that succeeded */
    uint64_t evictions; /* entries dropped for room */
} aimsi_rowcache_stats;

/* A cache holding at most cap_bytes of datasets (>= 1). */
aims_status aimsi_rowcache_create(size_t cap_bytes, aimsi_rowcache **out);
/* Drop the cache's references (views handed out stay valid). NULL: no-op. */
void aimsi_rowcache_destroy(aimsi_rowcache *c);
/* The dataset of digest hex (64 lowercase hex digits): a new view of the
 * cached rows in *view (aims_dataset_destroy it) and their largest label;
 * *hit = 1 when served without loading. On a miss fn(user, ...) loads it
 * (NULL fn: AIMS_E_NOTFOUND). A failed load enters nothing and returns the
 * loader's status and message. */
aims_status aimsi_rowcache_get(aimsi_rowcache *c, const char *hex, aimsi_rowcache_load_fn fn,
                               void *user, aims_dataset **view, int32_t *ymax, int *hit);
/* 1 when digest hex is cached (loaded, not being loaded). */
int aimsi_rowcache_has(aimsi_rowcache *c, const char *hex);
void aimsi_rowcache_get_stats(aimsi_rowcache *c, aimsi_rowcache_stats *out);

#endif /* AIMSI_ROWCACHE_H */
