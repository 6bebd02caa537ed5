/*
 * aimsi_orch.h -- internal header of src/orch (registry, balancer, health, metrics).
 *
 * src/orch depends only on src/core. This header holds what the orch files
 * share: handle magics and the clock helper. Each file appends its own section.
 */
#ifndef AIMSI_ORCH_H
#define AIMSI_ORCH_H

#include "aims/aims_orch.h"
#include "../core/aimsi_core.h"

/* ---- registry / health (registry.c, health.c) ------------------------------ */

/* Handle magics (AIMSI_MAGIC_REGISTRY, _HEALTH, _BALANCER, _METRICS): aimsi_core.h. */

/* Read an installed clock, or CLOCK_MONOTONIC when fn is NULL. */
static inline uint64_t aimsi_orch_now(aims_clock_fn fn, void *user)
{
    return fn != NULL ? fn(user) : aimsi_now_ns();
}

/* An error noticed under an object's lock, raised after the unlock: aimsi_err()
 * logs, and the host's log callback must never run under our locks (it may
 * call back into the object). defer() formats and returns code; raise() records
 * the message thread-locally and returns the code (AIMS_OK when none). */
typedef struct aimsi_orch_err {
    aims_status code;
    char msg[160];
} aimsi_orch_err;

aims_status aimsi_orch_defer(aimsi_orch_err *e, aims_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
aims_status aimsi_orch_raise(const aimsi_orch_err *e);

/* aims_health_report(h, id, 1) for callers that do not need to know whether
 * id is tracked (the client, per successful reply): returns without the
 * tracker's lock when no instance has a failure run, an ejection or an
 * ejection count to forgive, where a success report changes nothing
 * (health.c, "The clean shortcut"). h must be a live tracker. */
void aimsi_health_report_ok(aims_health *h, aims_instance id);

/* ---- balancer / metrics (balancer.c, metrics.c) --------------------------- */

/* Metrics a node or client owns and lends out (aims_node_metrics,
 * aims_client_metrics): aims_metrics_destroy refuses them; the owner frees
 * them with aimsi_metrics_destroy_owned (NULL is a no-op). */
aims_status aimsi_metrics_create_owned(aims_metrics **out);
void aimsi_metrics_destroy_owned(aims_metrics *mx);

/* Series handles (metrics.c), for hot paths that update the same series on
 * every call: the (name, labels) lookup -- a name check, a hash of both
 * strings and the registry's mutex -- happens once, and each update is then
 * one or two relaxed atomic adds. An entry lives until its registry is
 * destroyed, so a handle stays valid as long as the registry; *slot caches it
 * (NULL until the first successful lookup, which a failed one -- out of memory,
 * a name already used as another kind -- retries at the next update, so a
 * sample may be lost, as with aims_metrics_count). kind: 'c' counter, 'h'
 * histogram. */
typedef struct mx_entry aimsi_mx_series;
aimsi_mx_series *aimsi_metrics_series(aims_metrics *mx, _Atomic(aimsi_mx_series *) *slot,
                                      char kind, const char *name, const char *labels);
void aimsi_mx_add(aimsi_mx_series *s, uint64_t delta);     /* counter; NULL: no-op */
void aimsi_mx_observe(aimsi_mx_series *s, uint64_t ns);    /* histogram; NULL: no-op */

/* P2C draw: two DISTINCT indices in [0, n) (n >= 2) from one 64-bit random
 * value (high half -> *i, low half -> *j). Exposed for the distribution tests. */
void aimsi_lb_draw2(uint64_t r, size_t n, size_t *i, size_t *j);

/* Histogram buckets (metrics.c): log-linear, 32 linear sub-buckets per power
 * of two, so a bucket is at most 1/32 of its lower bound wide. */
#define AIMSI_HIST_SUB_BITS 5
#define AIMSI_HIST_BUCKETS (32u + 32u * 32u)
/* Bucket index of a value in ns, and the bucket's [lo, hi) bounds in ns. */
size_t aimsi_hist_index(uint64_t ns);
void aimsi_hist_bounds(size_t index, uint64_t *lo, uint64_t *hi);

/* ---- publications (registry_pub.c; aims_publish.h) ------------------------ */

#include <pthread.h>

/* The "name@version" -> (owner, meta) records of one registry, under their own
 * lock (never held with the registry's locks). Embedded in aims_registry. */
typedef struct aimsi_pubrec aimsi_pubrec;
typedef struct aimsi_pubtab {
    pthread_mutex_t mu;
    aimsi_pubrec *recs;
    size_t n, cap;
} aimsi_pubtab;

/* 0 on success (a mutex could not be made otherwise). */
int aimsi_pubtab_init(aimsi_pubtab *t);
void aimsi_pubtab_fini(aimsi_pubtab *t);
/* The table of a registry (registry.c); NULL for a bad handle. */
aimsi_pubtab *aimsi_registry_pubs(aims_registry *r);
/* Check publish arguments (aims_publish.h rules; meta may be NULL). AIMS_OK,
 * AIMS_E_MISUSE (NULL), AIMS_E_INVAL naming the argument; `who` starts the
 * message. Shared by every backend so they refuse the same inputs. */
aims_status aimsi_pub_check(const char *who, const char *name, const char *version,
                            const char *owner, const char *meta);
/* The conflict every backend reports: AIMS_E_EXISTS, "name@version already
 * published by OWNER". */
aims_status aimsi_pub_conflict(const char *name, const char *version, const char *owner);

#endif /* AIMSI_ORCH_H */
