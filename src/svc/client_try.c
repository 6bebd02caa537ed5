/*
 * client_try.c -- how long one try of an idempotent call may take, and when a
 * retry after AIMS_E_OVERLOADED may go out (the client's side of issue 11).
 *
 * Per-try timeouts. A hung instance (SIGSTOPped, swapping, a wedged handler)
 * still accepts connections and bytes, so nothing fails fast: without a
 * per-try bound, every call it received waits its whole deadline and fails
 * with AIMS_E_TIMEOUT. Instead an idempotent call's deadline is split into
 * tries: a try that runs past CL_TRY_MULT x the service's recent p99 (bounded
 * below by CL_TRY_FLOOR_NS) is abandoned and the call retries on another
 * instance, within the retry budget. No try but the last gets more than half
 * the time left (one slow outlier in the window would otherwise hand a hung
 * instance the whole deadline). The last try the call can make gets all
 * the time left; so does every try until the client has seen
 * CL_TRY_MIN_SAMPLES successful calls of the service (a cold client must not
 * abandon a slow service's first calls). The p99 is the largest of the last AIMSI_LAT_RING successful
 * attempt latencies of that service in this client (a window of 64 samples,
 * so its largest is about the 98.5th percentile), cheap and lock-free. An
 * abandoned try's pending is unlinked, so its late reply finds nothing and is
 * dropped (client_send.c's exactly-once rule).
 *
 * Retry hints. An instance's AIMS_E_OVERLOADED text ends in "retry after N ms"
 * (svc_admit.c: when its queue will have drained to an admissible level). The
 * client does not retry before that, and does not retry at all when that is
 * past the call's deadline (the caller gets the OVERLOADED right away).
 */
#include <stdlib.h>
#include <string.h>

#include "aimsi_client.h"

#define CL_TRY_MULT 4u
#define CL_TRY_FLOOR_NS 200000000u /* 200 ms: a loaded machine stalls healthy calls ~100 ms */
#define CL_HINT_MAX_NS 10000000000u /* ignore hints beyond 10 s */
#define CL_TRY_MIN_SAMPLES 8u        /* fewer successes seen: no split yet */

void aimsi_lat_ring_note(aimsi_lat_ring *r, uint64_t ns)
{
    const unsigned i = atomic_fetch_add_explicit(&r->next, 1u, memory_order_relaxed);
    atomic_store_explicit(&r->ns[i % AIMSI_LAT_RING], ns, memory_order_relaxed);
}

uint64_t aimsi_lat_ring_p99(const aimsi_lat_ring *r)
{
    uint64_t m = 0;
    for (unsigned i = 0; i < AIMSI_LAT_RING; i++) {
        const uint64_t v = atomic_load_explicit(&r->ns[i], memory_order_relaxed);
        m = v > m ? v : m;
    }
    return m;
}

uint64_t aimsi_try_deadline(const aimsi_lat_ring *r, uint64_t now, uint64_t deadline,
                            unsigned tries_left)
{
    if (r == NULL || tries_left <= 1 || deadline <= now ||
        atomic_load_explicit(&r->next, memory_order_relaxed) < CL_TRY_MIN_SAMPLES) {
        return deadline;
    }
    const uint64_t left = deadline - now;
    uint64_t share = CL_TRY_MULT * aimsi_lat_ring_p99(r);
    share = share < CL_TRY_FLOOR_NS ? CL_TRY_FLOOR_NS : share;
    /* One outlier in the window must not give the whole deadline to one try. */
    share = share > left / 2u ? left / 2u : share;
    return now + share;
}

uint64_t aimsi_retry_hint_ns(const char *text)
{
    const char *p = text != NULL ? strstr(text, "retry after ") : NULL;
    if (p == NULL) {
        return 0;
    }
    char *end = NULL;
    const unsigned long long ms = strtoull(p + 12, &end, 10);
    if (end == p + 12 || strncmp(end, " ms", 3) != 0) {
        return 0;
    }
    const uint64_t ns = (uint64_t)ms * 1000000u;
    return ms > CL_HINT_MAX_NS / 1000000u ? 0 : ns;
}
