/*
 * svc_life_desc.c -- what an infer service with model versions serves, as
 * the HTTP door describes it (GET /v2/models/{m}[/versions/{v}];
 * docs/LIFECYCLE.md "Metadata").
 *
 * Why: the door described a model from the bundle the service was created
 * with. After a promotion, a rollback or a weight change (svc_life.c,
 * svc_verdict.c) calls are served by another version -- maybe with another
 * input width -- and that description was stale. Here the description
 * follows the version table: no version named, the stable version (the one
 * a plain call is served by); a version named, that version, whether it
 * takes traffic or not.
 *
 * How: the slot is looked up under the table's mutex and held by a
 * reference (as a batch holds the versions it runs), so an unload meanwhile
 * cannot free it; the description itself is taken by svc_infer.c under the
 * version's own lock, outside the table's.
 */
#include <pthread.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_life.h"
#include "aimsi_life_table.h"

_Static_assert(AIMSI_LIFE_LABEL == LIFE_VER_MAX + 1, "a label buffer holds a version label");

aims_status aimsi_life_describe(aims_service *s, const char *ver, aimsi_infer_desc *out)
{
    void *base = NULL;
    _Atomic(aimsi_life *) *lp = aimsi_infer_life_slot(s, &base);
    if (lp == NULL || out == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "not an infer service");
    }
    aimsi_life *lf = atomic_load_explicit(lp, memory_order_acquire);
    const int named = ver != NULL && ver[0] != '\0';
    if (lf == NULL) {
        if (named) { /* versions by name exist once the table does (any lifecycle request) */
            return aimsi_err(NULL, AIMS_E_NOTFOUND, "no version %.40s in %s", ver, s->name);
        }
        return aimsi_infer_describe_impl(base, out);
    }
    pthread_mutex_lock(&lf->mu);
    const int i = named ? aimsi_life_find(lf, ver) : lf->stable;
    life_slot *sl = i >= 0 ? lf->slot[i] : NULL;
    if (sl != NULL) {
        sl->refs++;
    }
    pthread_mutex_unlock(&lf->mu);
    if (sl == NULL) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "no version %.40s in %s", named ? ver : "",
                         s->name);
    }
    const aims_status rc = aimsi_infer_describe_impl(sl->impl, out);
    pthread_mutex_lock(&lf->mu);
    const int last = --sl->refs == 0 && sl->gone;
    pthread_mutex_unlock(&lf->mu);
    if (last) {
        aimsi_life_slot_free(sl);
    }
    return rc;
}

size_t aimsi_life_labels(aims_service *s, const char **vers, size_t n, size_t cap,
                         char (*buf)[AIMSI_LIFE_LABEL], size_t bcap)
{
    _Atomic(aimsi_life *) *lp = aimsi_infer_life_slot(s, NULL);
    aimsi_life *lf = lp != NULL ? atomic_load_explicit(lp, memory_order_acquire) : NULL;
    if (lf == NULL) {
        return n;
    }
    size_t used = 0;
    pthread_mutex_lock(&lf->mu);
    for (int i = 0; i < LIFE_MAX && n < cap && used < bcap; i++) {
        if (lf->slot[i] == NULL) {
            continue;
        }
        int dup = 0;
        for (size_t k = 0; k < n && !dup; k++) {
            dup = strcmp(vers[k], lf->slot[i]->ver) == 0;
        }
        if (!dup) {
            memcpy(buf[used], lf->slot[i]->ver, AIMSI_LIFE_LABEL);
            vers[n++] = buf[used++];
        }
    }
    pthread_mutex_unlock(&lf->mu);
    return n;
}
