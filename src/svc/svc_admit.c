/*
 * svc_admit.c -- admission and queue discipline of a service: which request
 * is queued, which queued request runs next, which is dropped without running.
 *
 * Why. A queue bounded by count alone collapses under sustained overload: with
 * 2 s deadlines and a queue that holds 2 s of work, every request is admitted
 * with almost its whole deadline of work ahead, finishes just after its caller
 * gave up, and the node stays 100 % busy producing replies nobody waits for
 * (issue 11 measured 7 % of capacity served at 2.5x offered load). Goodput is
 * protected by never spending a run on a request that cannot be answered in
 * time, and by keeping the queue short once overload is sustained, so that
 * what runs is fresh.
 *
 * How. Everything here runs under node->lock except aimsi_admit_note_run.
 *
 *  - Estimate. The service keeps an EWMA of run() durations (svc_dispatch.c,
 *    weight 1/8) and here the EWMA of their absolute deviation (weight 1/4),
 *    the error of that estimate, as TCP keeps SRTT and RTTVAR. Work is
 *    counted in rows (an infer request's input rows, 1 for other kinds:
 *    qitem.rows), because a run takes up to AIMS_SERVICE_BATCH_MAX rows, not
 *    requests (svc_worker.c): counting requests made 64 queued 64-row calls
 *    look like one run when they are 64, and let ~1 s of work in (10-18 %
 *    goodput, docs/OVERLOAD.md). A request of r rows arriving behind q queued
 *    rows completes after about rounds x ewma with
 *    rounds = ceil((q + r) / (batch_max x concurrency)) -- where batch_max is
 *    the mean request's rows when requests are bigger than a batch (each
 *    runs alone; docs/P9.md) --; the adaptive limit and its floor (two
 *    rounds) are in rows too.
 *  - Admission. Admitted only if now + estimate + margin <= deadline, with
 *    margin = estimate / 8 + 4 x deviation + ADM_HEADROOM_NS (the reply's
 *    transit and the caller's wake-up). A deadline shorter than one run is
 *    AIMS_E_TIMEOUT; a queue too long for the deadline is AIMS_E_OVERLOADED
 *    (another instance may meet it). A service with an empty queue and a free
 *    slot admits whatever leaves room for one run; estimates are refreshed
 *    only by runs, so when it refuses on the estimate alone the estimate
 *    decays (1/16 per refusal) lest a stale one lock it out (svc_dispatch.c also
 *    clips each run sample to 4x the estimate, so one stalled run -- SIGSTOP,
 *    swapping -- does not inflate it).
 *  - Sustained overload (CoDel's idea): the queue has not been empty for
 *    ADM_INTERVAL_NS. Then the queueing delay admitted is capped at the
 *    target, max(ADM_TARGET_NS, ADM_TARGET_ROUNDS runs). The queue stays FIFO
 *    and nothing admitted is dropped for having waited: since nothing is
 *    admitted behind more than the target, a request that will not make it is
 *    refused at arrival (a rejection costs the caller one round trip, not a
 *    wait) -- an earlier LIFO + drop-after-target design made the p99 of a
 *    rejection 75-130 ms (docs/OVERLOAD.md).
 *  - Adaptive limit (svc_climit.c): queued + running must stay below a limit
 *    that a gradient rule derives from the sojourn time vs the no-load run
 *    time; refused at arrival with AIMS_E_OVERLOADED when it is reached and
 *    the queue ahead is longer than half the target. Not below that: a very
 *    fast service (an echo of 10 us) has a tiny no-load time, so any queue
 *    drives its limit to the floor, while a burst of hundreds of its calls
 *    (a client pipelining 512) drains in milliseconds -- a good queue, in
 *    CoDel's terms, that must be queued, not refused. Not only under
 *    sustained overload either: a short queue empties now and then, which
 *    ends "sustained", and the limit must hold then too.
 *  - Dropped before running. At take time, a request whose deadline passed or
 *    that can no longer finish before it (now + one run > deadline) is
 *    completed with AIMS_E_TIMEOUT without running.
 *  - Tuning (AIMS_SERVICE_CLIMIT_TOLERANCE_PCT, AIMS_SERVICE_LIFO). The limit's
 *    latency tolerance is a service parameter (0 turns the limit off: then
 *    queue_cap, the deadline and the target bound the queue). lifo = 1 brings
 *    back the design the FIFO replaced, as an option: under sustained
 *    overload admission goes by the deadline alone (no target cap at
 *    arrival), the newest request is served first, and a queued request that
 *    waited past the target is dropped with AIMS_E_OVERLOADED and a hint
 *    (CoDel's drop, but after the wait rather than at arrival).
 *    docs/OVERLOAD.md has both measured side by side.
 *  - Retry hint. Every AIMS_E_OVERLOADED says "retry after N ms": the time the
 *    queue needs, at its drain rate (batch rows x concurrency per ewma), to
 *    come down to the level at which a fresh request would be admitted (at
 *    least one run). aims_client honours it within the call's deadline.
 */
#include <inttypes.h>
#include <stdio.h>

#include "aimsi_node.h"

#define ADM_INTERVAL_NS 100000000u /* queue never empty this long = sustained overload */
#define ADM_TARGET_NS 50000000u    /* overload: longest queueing delay admitted ... */
#define ADM_TARGET_ROUNDS 4u       /* ... or this many runs, whichever is longer */
#define ADM_HEADROOM_NS 2000000u   /* reply transit + caller wake-up */

static uint64_t ewma_of(const aims_service *s)
{
    return atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
}

/* Rows one round of runs takes: batch_max rows per slot -- or, when the
 * requests are bigger than a batch, one request per slot, since such a
 * request runs alone (svc_worker.c): `extra_rows` in `extra_items` requests
 * beyond the queue (the one arriving) count into the mean request size.
 * Counting batch_max alone made a 64-row call behind batch_max 8 look like
 * eight runs of work, so a service refused at a ~12-call queue what it would
 * serve in 25 ms (docs/P9.md). */
static uint64_t per_round_with(const aims_service *s, int64_t extra_rows, int64_t extra_items)
{
    int64_t per_run = s->kind->batching ? s->p_batch_max : 1;
    if (s->kind->batching) {
        const int64_t items =
            atomic_load_explicit(&s->queued, memory_order_relaxed) + extra_items;
        const int64_t rows =
            atomic_load_explicit(&s->queued_rows, memory_order_relaxed) + extra_rows;
        const int64_t mean = items > 0 ? rows / items : 0;
        per_run = mean > per_run ? mean : per_run;
    }
    const int64_t r = per_run * s->limit;
    return r > 0 ? (uint64_t)r : 1u;
}

static uint64_t per_round(const aims_service *s)
{
    return per_round_with(s, 0, 0);
}

/* Completion time estimate (ns from now) of a request of `own` rows behind q
 * queued rows: the runs needed to get through both, ceil((q + own) / per
 * round) (a request bigger than a batch runs alone: then a round is one
 * request per slot, per_round_with). */
static uint64_t estimate(const aims_service *s, int64_t q, int64_t own)
{
    const uint64_t ahead = (uint64_t)(q > 0 ? q : 0) + (uint64_t)(own > 1 ? own : 1) - 1u;
    const uint64_t round = own > 1 ? per_round_with(s, own, 1) : per_round(s);
    return (ahead / round + 1u) * ewma_of(s);
}

static uint64_t margin(const aims_service *s, uint64_t est)
{
    return est / 8u + 4u * atomic_load_explicit(&s->mdev_ns, memory_order_relaxed) +
           ADM_HEADROOM_NS;
}

static uint64_t target(const aims_service *s)
{
    const uint64_t r = ADM_TARGET_ROUNDS * ewma_of(s);
    return r > ADM_TARGET_NS ? r : ADM_TARGET_NS;
}

static int overloaded(const aims_service *s, uint64_t now)
{
    return s->busy_since_ns != 0 && now - s->busy_since_ns >= ADM_INTERVAL_NS;
}

/* Rows queued (q) or running: the rows the workers took, or one per slot in
 * use when more slots are busy (inline runs take a slot, not rows). Counting
 * rows, not requests: 64 queued calls of 64 rows are 64 runs of work, not one
 * (the bug docs/OVERLOAD.md describes). */
static int64_t in_system(const aims_service *s, int64_t q)
{
    const int64_t run = atomic_load_explicit(&s->running_rows, memory_order_relaxed);
    const int64_t slots = atomic_load_explicit(&s->inflight, memory_order_relaxed);
    return q + (run > slots ? run : slots);
}

/* The adaptive limit's bounds, in rows: at least two rounds (one running, one
 * queued: for 64-row calls and batch_max 64, two calls), at most the queue
 * cap of full-batch requests plus one round (the fixed bound before it). */
static double climit_lo(const aims_service *s)
{
    return 2.0 * (double)per_round(s);
}

static double climit_hi(const aims_service *s)
{
    const int64_t per_item = s->kind->batching ? s->p_batch_max : 1;
    const double hi = (double)(s->p_queue_cap * per_item + (int64_t)per_round(s));
    return hi > climit_lo(s) ? hi : climit_lo(s);
}

void aimsi_admit_note_done(aims_service *s, uint64_t sojourn_ns)
{
    if (s->p_climit_tol_pct <= 0) {
        return; /* adaptive limit off */
    }
    aimsi_climit_note_sojourn(&s->climit, sojourn_ns,
                              in_system(s, atomic_load_explicit(&s->queued, memory_order_relaxed)),
                              climit_lo(s), climit_hi(s), (double)s->p_climit_tol_pct / 100.0);
}

void aimsi_admit_note_run(aims_service *s, uint64_t old_ewma, uint64_t run_ns)
{
    if (old_ewma == 0) {
        return;
    }
    const uint64_t dev = run_ns > old_ewma ? run_ns - old_ewma : old_ewma - run_ns;
    const uint64_t md = atomic_load_explicit(&s->mdev_ns, memory_order_relaxed);
    const int64_t next = (int64_t)md + ((int64_t)dev - (int64_t)md) / 4;
    atomic_store_explicit(&s->mdev_ns, (uint64_t)(next > 0 ? next : 0), memory_order_relaxed);
}

uint64_t aimsi_admit_hint_ms(const aims_service *s, int64_t q, uint64_t allowed_ns)
{
    const uint64_t ewma = ewma_of(s);
    const uint64_t queued = estimate(s, q, 1) - ewma; /* queueing delay ahead */
    uint64_t ns = queued > allowed_ns ? queued - allowed_ns + ewma : ewma;
    uint64_t ms = (ns + 999999u) / 1000000u;
    return ms == 0 ? 1u : ms;
}

aims_status aimsi_admit_check(aims_service *s, int64_t q, int64_t own, uint64_t now,
                              uint64_t deadline, char *text, size_t cap)
{
    const uint64_t ewma = ewma_of(s);
    const uint64_t left = deadline > now ? deadline - now : 0;
    const int idle =
        q == 0 && atomic_load_explicit(&s->inflight, memory_order_relaxed) < s->limit;
    if (idle && deadline != 0 && ewma > left) {
        /* Refusing on the estimate alone: let it decay (1/16 per refusal), so
         * a service whose runs got fast again is not locked out for good by
         * callers whose deadlines the old estimate exceeds. */
        atomic_store_explicit(&s->ewma_ns, ewma - ewma / 16u, memory_order_relaxed);
    } else if (ewma == 0 || idle) {
        /* No estimate yet, or a free slot and room for one run: run it. */
        return AIMS_OK;
    }
    if (deadline != 0 && ewma > left) {
        snprintf(text, cap,
                 "service %s cannot meet the deadline: one run takes about %" PRIu64
                 " us, %" PRIu64 " us left",
                 s->name, ewma / 1000u, left / 1000u);
        return AIMS_E_TIMEOUT;
    }
    const int64_t in_sys = in_system(s, q);
    const int64_t lim = s->p_climit_tol_pct > 0
                            ? aimsi_climit_get(&s->climit, climit_lo(s), climit_hi(s))
                            : INT64_MAX;
    if (in_sys >= lim && estimate(s, q, 1) - ewma > target(s) / 2u) {
        const uint64_t allowed = estimate(s, lim - 1 - (in_sys - q), 1) - ewma;
        snprintf(text, cap,
                 "service %s overloaded: %" PRId64 " rows queued or running, adaptive "
                 "limit %" PRId64 "; retry after %" PRIu64 " ms",
                 s->name, in_sys, lim, aimsi_admit_hint_ms(s, q, allowed));
        return AIMS_E_OVERLOADED;
    }
    const uint64_t est = estimate(s, q, own);
    if (!s->p_lifo && overloaded(s, now) && est - ewma > target(s)) {
        snprintf(text, cap,
                 "service %s overloaded: about %" PRIu64 " us queued (target %" PRIu64
                 " us under sustained overload); retry after %" PRIu64 " ms",
                 s->name, (est - ewma) / 1000u, target(s) / 1000u,
                 aimsi_admit_hint_ms(s, q, target(s)));
        return AIMS_E_OVERLOADED;
    }
    if (deadline != 0 && est + margin(s, est) > left) {
        const uint64_t allowed = left > margin(s, left) + ewma ? left - margin(s, left) - ewma : 0;
        snprintf(text, cap,
                 "service %s overloaded: cannot meet the deadline, about %" PRIu64
                 " us of work ahead, %" PRIu64 " us left; retry after %" PRIu64 " ms",
                 s->name, est / 1000u, left / 1000u, aimsi_admit_hint_ms(s, q, allowed));
        return AIMS_E_OVERLOADED;
    }
    return AIMS_OK;
}

void aimsi_admit_push(aims_service *s, aimsi_qitem *it, uint64_t now)
{
    it->next = NULL;
    it->prev = s->tail;
    if (s->tail != NULL) {
        s->tail->next = it;
    } else {
        s->head = it;
        s->busy_since_ns = now;
    }
    s->tail = it;
    atomic_fetch_add(&s->queued, 1);
    atomic_fetch_add(&s->queued_rows, it->rows);
}

static void unlink_item(aims_service *s, aimsi_qitem *it)
{
    if (it->prev != NULL) {
        it->prev->next = it->next;
    } else {
        s->head = it->next;
    }
    if (it->next != NULL) {
        it->next->prev = it->prev;
    } else {
        s->tail = it->prev;
    }
    it->next = it->prev = NULL;
    atomic_fetch_sub(&s->queued, 1);
    atomic_fetch_sub(&s->queued_rows, it->rows);
}

/* Why `it` should not run (its status), or AIMS_OK. */
static aims_status doomed(const aims_service *s, const aimsi_qitem *it, uint64_t now)
{
    const uint64_t dl = it->w.deadline_ns;
    if (dl != 0 && now + ewma_of(s) > dl) {
        return AIMS_E_TIMEOUT;
    }
    return AIMS_OK;
}

static void drop_item(aimsi_qitem *it, aims_status why, aimsi_qitem **dropped)
{
    it->w.status = why;
    it->next = *dropped;
    *dropped = it;
}

aimsi_qitem *aimsi_admit_take(aims_service *s, uint64_t now, aimsi_qitem **dropped, int64_t room)
{
    aimsi_qitem *it = NULL;
    /* FIFO (or, with lifo under sustained overload, newest first); the ones
     * that ran out of time while queued are dropped unrun; the next one stays
     * queued when it has more rows than the batch has room for (no
     * reordering: it heads the next batch, alone if it is bigger than one). */
    const int lifo = s->p_lifo && overloaded(s, now);
    while (it == NULL && s->head != NULL) {
        aimsi_qitem *cand = lifo ? s->tail : s->head;
        const aims_status why = doomed(s, cand, now);
        if (why != AIMS_OK) {
            unlink_item(s, cand);
            drop_item(cand, why, dropped);
            continue;
        }
        if (cand->rows > room) {
            break;
        }
        unlink_item(s, cand);
        it = cand;
    }
    /* lifo: what waited past the target is stale; its caller may still retry. */
    while (lifo && s->head != NULL && now - s->head->t_enq > target(s)) {
        aimsi_qitem *old = s->head;
        unlink_item(s, old);
        drop_item(old, AIMS_E_OVERLOADED, dropped);
    }
    if (s->head == NULL) {
        s->busy_since_ns = 0;
    }
    return it;
}
