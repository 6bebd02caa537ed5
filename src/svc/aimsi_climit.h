/*
 * aimsi_climit.h -- the adaptive concurrency limit of a service (svc_climit.c).
 *
 * Why a header of its own: the limit is a small, self-contained control loop
 * (Netflix concurrency-limits' "gradient" limit) that the admission code of
 * svc_admit.c consults and the worker feeds; unit tests drive it directly with
 * synthetic samples (tests/unit/svc/test_climit.c) to check it converges.
 *
 * State is atomics only: racing updates may lose a sample (as the run-time
 * EWMA of service.c does), never tear one, so no lock is taken on the hot path.
 */
#ifndef AIMSI_CLIMIT_H
#define AIMSI_CLIMIT_H

#include <stdatomic.h>
#include <stdint.h>

#define AIMSI_CLIMIT_TOLERANCE 2.0      /* default: rtt up to 2x the no-queue rtt: no decrease */
#define AIMSI_CLIMIT_SMOOTHING 0.2      /* weight of a new limit */
#define AIMSI_CLIMIT_WINDOW_NS 5000000000u /* the no-queue rtt: min over 5 s windows */

typedef struct aimsi_climit {
    _Atomic uint64_t limit_milli;   /* the limit x 1000 (0: no sample yet = hi) */
    _Atomic uint64_t min_ns;        /* min run() time in the current window */
    _Atomic uint64_t prev_min_ns;   /* min of the previous window (0: none) */
    _Atomic uint64_t win_start_ns;  /* start of the current window */
    _Atomic uint64_t n_samples;
} aimsi_climit;

/* One step of the gradient rule: gradient = clamp(tolerance x min_rtt / rtt,
 * 0.5, 1); new = limit x gradient + sqrt(limit), not above limit when the
 * service was app-limited (in_system < limit / 2); smoothed by SMOOTHING and
 * clamped to [lo, hi]. Pure: unit-tested. */
double aimsi_climit_next(double limit, uint64_t min_rtt, uint64_t rtt, int64_t in_system,
                         double lo, double hi, double tolerance);

void aimsi_climit_init(aimsi_climit *c);
/* A run of run_ns (no queueing in it): the no-queue rtt. */
void aimsi_climit_note_run(aimsi_climit *c, uint64_t now, uint64_t run_ns);
/* A request answered after sojourn_ns (queue wait + run) with in_system
 * requests queued or running: one step of the limit (tolerance: the service's
 * AIMS_SERVICE_CLIMIT_TOLERANCE_PCT / 100). */
void aimsi_climit_note_sojourn(aimsi_climit *c, uint64_t sojourn_ns, int64_t in_system, double lo,
                               double hi, double tolerance);
/* The current limit (hi before the first sample). */
int64_t aimsi_climit_get(const aimsi_climit *c, double lo, double hi);

#endif
