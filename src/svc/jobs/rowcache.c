/*
 * rowcache.c -- the per-instance cache of decoded training rows
 * (aimsi_rowcache.h explains why and the rules).
 *
 * How. A short list of entries (a train instance holds a handful of
 * datasets, so a linear search beats a hash table here), each a root
 * dataset with its byte size and a use tick for LRU. A miss inserts a
 * placeholder marked `loading` and runs the loader outside the lock; other
 * gets of that digest wait on the condition variable and are served by the
 * finished entry (or load themselves when the first load failed). The
 * placeholder becomes the entry on success, so inserting a loaded value
 * allocates nothing; on failure it is unlinked and freed. Eviction drops the
 * least recently used loaded entries until the new one fits; dropping an
 * entry only drops the cache's reference on its root dataset (jobs training
 * on views keep the arrays alive: aims_dataset reference counts, dataset.c).
 */
#include <pthread.h>
#include <string.h>

#include "../../core/aimsi_core.h"
#include "aimsi_rowcache.h"

typedef struct rc_entry {
    struct rc_entry *next;
    char hex[65];
    aims_dataset *root; /* NULL while loading */
    size_t bytes;
    int32_t ymax;
    uint64_t used; /* LRU tick */
    int loading;
} rc_entry;

struct aimsi_rowcache {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rc_entry *head;
    size_t cap;
    aimsi_rowcache_stats st;
    uint64_t tick;
};

aims_status aimsi_rowcache_create(size_t cap_bytes, aimsi_rowcache **out)
{
    if (out == NULL || cap_bytes == 0) {
        return AIMSI_MISUSE("NULL out or a zero bound");
    }
    aimsi_rowcache *c = aimsi_calloc(1, sizeof *c);
    if (c == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "row cache: no memory");
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        aimsi_free(c);
        return aimsi_err(NULL, AIMS_E_BACKEND, "row cache: pthread_mutex_init failed");
    }
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        aimsi_free(c);
        return aimsi_err(NULL, AIMS_E_BACKEND, "row cache: pthread_cond_init failed");
    }
    c->cap = cap_bytes;
    c->st.cap = cap_bytes;
    *out = c;
    return AIMS_OK;
}

void aimsi_rowcache_destroy(aimsi_rowcache *c)
{
    if (c == NULL) {
        return;
    }
    while (c->head != NULL) {
        rc_entry *e = c->head;
        c->head = e->next;
        aims_dataset_destroy(e->root);
        aimsi_free(e);
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    aimsi_free(c);
}

static rc_entry *find_locked(aimsi_rowcache *c, const char *hex)
{
    for (rc_entry *e = c->head; e != NULL; e = e->next) {
        if (memcmp(e->hex, hex, 64) == 0) {
            return e;
        }
    }
    return NULL;
}

static void unlink_locked(aimsi_rowcache *c, rc_entry *gone)
{
    for (rc_entry **pp = &c->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == gone) {
            *pp = gone->next;
            return;
        }
    }
}

/* Drop least recently used loaded entries (not keep) until `need` more
 * bytes fit under the bound. */
static void evict_locked(aimsi_rowcache *c, size_t need, const rc_entry *keep)
{
    while (c->st.bytes + need > c->cap) {
        rc_entry *lru = NULL;
        for (rc_entry *e = c->head; e != NULL; e = e->next) {
            if (!e->loading && e != keep && (lru == NULL || e->used < lru->used)) {
                lru = e;
            }
        }
        if (lru == NULL) {
            return;
        }
        unlink_locked(c, lru);
        c->st.bytes -= lru->bytes;
        c->st.entries--;
        c->st.evictions++;
        aims_dataset_destroy(lru->root); /* views handed out keep the rows alive */
        aimsi_free(lru);
    }
}

/* A view of the whole of e's dataset. */
static aims_status view_of(const aims_dataset *root, aims_dataset **view)
{
    return aims_dataset_view(root, 0, aims_dataset_rows(root), view);
}

aims_status aimsi_rowcache_get(aimsi_rowcache *c, const char *hex, aimsi_rowcache_load_fn fn,
                               void *user, aims_dataset **view, int32_t *ymax, int *hit)
{
    if (c == NULL || hex == NULL || view == NULL || ymax == NULL || hit == NULL) {
        return AIMSI_MISUSE("NULL argument");
    }
    pthread_mutex_lock(&c->mu);
    rc_entry *e = find_locked(c, hex);
    while (e != NULL && e->loading) {
        pthread_cond_wait(&c->cv, &c->mu); /* another thread loads these rows right now */
        e = find_locked(c, hex);
    }
    if (e != NULL) {
        const aims_status rc = view_of(e->root, view);
        if (rc == AIMS_OK) {
            e->used = ++c->tick;
            c->st.hits++;
            *ymax = e->ymax;
            *hit = 1;
        }
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    c->st.misses++;
    if (fn == NULL) {
        pthread_mutex_unlock(&c->mu);
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "row cache: no rows %.64s", hex);
    }
    e = aimsi_calloc(1, sizeof *e);
    if (e == NULL) {
        pthread_mutex_unlock(&c->mu);
        return aimsi_err(NULL, AIMS_E_NOMEM, "row cache: no memory");
    }
    memcpy(e->hex, hex, 64);
    e->loading = 1;
    e->next = c->head;
    c->head = e;
    pthread_mutex_unlock(&c->mu);

    aims_dataset *root = NULL;
    size_t bytes = 0;
    int32_t ym = 0;
    aims_status rc = fn(user, &root, &bytes, &ym);
    if (rc == AIMS_OK) {
        rc = view_of(root, view);
    }

    pthread_mutex_lock(&c->mu);
    unlink_locked(c, e);
    if (rc == AIMS_OK && bytes <= c->cap) {
        evict_locked(c, bytes, e);
        e->root = root;
        e->bytes = bytes;
        e->ymax = ym;
        e->loading = 0;
        e->used = ++c->tick;
        e->next = c->head;
        c->head = e;
        c->st.bytes += bytes;
        c->st.entries++;
        root = NULL;
        e = NULL;
    }
    if (rc == AIMS_OK) {
        c->st.loads++;
        *ymax = ym;
        *hit = 0;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    aimsi_free(e);
    aims_dataset_destroy(root); /* not kept (too big, or failed): the view, if any, holds it */
    return rc;
}

int aimsi_rowcache_has(aimsi_rowcache *c, const char *hex)
{
    pthread_mutex_lock(&c->mu);
    const rc_entry *e = find_locked(c, hex);
    const int has = e != NULL && !e->loading;
    pthread_mutex_unlock(&c->mu);
    return has;
}

void aimsi_rowcache_get_stats(aimsi_rowcache *c, aimsi_rowcache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}
