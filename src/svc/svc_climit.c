/*
 * svc_climit.c -- adaptive concurrency limit of a service (issue 11).
 *
 * Why. A fixed limit on the requests a service holds (queued + running) is
 * either too small (idle slots under bursts) or too big (a queue that turns
 * into latency). Netflix's concurrency-limits "gradient" limit and Envoy's
 * adaptive concurrency filter find it from latency: while the round-trip time
 * stays near the no-load one, the limit grows (by sqrt(limit), the queue it
 * allows); when it grows past TOLERANCE x the no-load one, the limit shrinks
 * in proportion (at most halving a step); TOLERANCE is the service's
 * AIMS_SERVICE_CLIMIT_TOLERANCE_PCT / 100 (0 turns the limit off in
 * svc_admit.c). For a service doing one run at a
 * time the fixed point of limit = limit x 2/limit + sqrt(limit) is 4: one
 * running, about three queued, a bounded queueing delay whatever the offer.
 *
 * How. The no-load rtt is measured directly on the server: the minimum run()
 * duration over a window (AIMSI_CLIMIT_WINDOW_NS; the lower of this and the
 * previous window, so a reset never leaves it empty), which is what Envoy
 * approximates by pinning concurrency to 1 now and then. The current rtt is
 * each request's sojourn (enqueue to end of run). Admission (svc_admit.c)
 * refuses with AIMS_E_OVERLOADED, at arrival, when queued + running reaches
 * the limit. Before the first sample the limit is `hi` (the queue cap plus
 * the concurrency), so a fresh service behaves as before. When the service
 * is app-limited (fewer than limit/2 in it) the limit does not grow: a
 * lightly loaded service does not drift to `hi` and then take a burst
 * unprotected.
 */
#include "aimsi_climit.h"

#include <math.h>

double aimsi_climit_next(double limit, uint64_t min_rtt, uint64_t rtt, int64_t in_system,
                         double lo, double hi, double tolerance)
{
    if (rtt == 0 || min_rtt == 0) {
        return limit;
    }
    double g = tolerance * (double)min_rtt / (double)rtt;
    g = g < 0.5 ? 0.5 : (g > 1.0 ? 1.0 : g);
    double next = limit * g + sqrt(limit);
    if ((double)in_system < limit / 2.0 && next > limit) {
        next = limit; /* app-limited: no evidence the service can take more */
    }
    next = limit * (1.0 - AIMSI_CLIMIT_SMOOTHING) + next * AIMSI_CLIMIT_SMOOTHING;
    return next < lo ? lo : (next > hi ? hi : next);
}

void aimsi_climit_init(aimsi_climit *c)
{
    atomic_init(&c->limit_milli, 0);
    atomic_init(&c->min_ns, 0);
    atomic_init(&c->prev_min_ns, 0);
    atomic_init(&c->win_start_ns, 0);
    atomic_init(&c->n_samples, 0);
}

void aimsi_climit_note_run(aimsi_climit *c, uint64_t now, uint64_t run_ns)
{
    if (run_ns == 0) {
        run_ns = 1;
    }
    const uint64_t start = atomic_load_explicit(&c->win_start_ns, memory_order_relaxed);
    if (start == 0 || now - start >= AIMSI_CLIMIT_WINDOW_NS) {
        atomic_store_explicit(&c->prev_min_ns,
                              atomic_load_explicit(&c->min_ns, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&c->min_ns, run_ns, memory_order_relaxed);
        atomic_store_explicit(&c->win_start_ns, now, memory_order_relaxed);
        return;
    }
    const uint64_t m = atomic_load_explicit(&c->min_ns, memory_order_relaxed);
    if (m == 0 || run_ns < m) {
        atomic_store_explicit(&c->min_ns, run_ns, memory_order_relaxed);
    }
}

static uint64_t no_load_rtt(const aimsi_climit *c)
{
    const uint64_t m = atomic_load_explicit(&c->min_ns, memory_order_relaxed);
    const uint64_t p = atomic_load_explicit(&c->prev_min_ns, memory_order_relaxed);
    return p != 0 && (m == 0 || p < m) ? p : m;
}

int64_t aimsi_climit_get(const aimsi_climit *c, double lo, double hi)
{
    const uint64_t lm = atomic_load_explicit(&c->limit_milli, memory_order_relaxed);
    const double l = lm == 0 ? hi : (double)lm / 1000.0;
    const double v = l < lo ? lo : (l > hi ? hi : l);
    return (int64_t)v;
}

void aimsi_climit_note_sojourn(aimsi_climit *c, uint64_t sojourn_ns, int64_t in_system, double lo,
                               double hi, double tolerance)
{
    const uint64_t base = no_load_rtt(c);
    if (base == 0) {
        return;
    }
    const uint64_t lm = atomic_load_explicit(&c->limit_milli, memory_order_relaxed);
    const double cur = lm == 0 ? hi : (double)lm / 1000.0;
    const double next = aimsi_climit_next(cur, base, sojourn_ns, in_system, lo, hi, tolerance);
    atomic_store_explicit(&c->limit_milli, (uint64_t)(next * 1000.0) + 1u, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->n_samples, 1, memory_order_relaxed);
}
