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

/* ---- balancer / metrics (balancer.c, metrics.c) --------------------------- */

/* Metrics a node or client owns and lends out (aims_node_metrics,
 * aims_client_metrics): aims_metrics_destroy refuses them; the owner frees
 * them with aimsi_metrics_destroy_owned (NULL is a no-op). */
aims_status aimsi_metrics_create_owned(aims_metrics **out);
void aimsi_metrics_destroy_owned(aims_metrics *mx);

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

#endif /* AIMSI_ORCH_H */
