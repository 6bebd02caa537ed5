/*
 * client_hedge.c -- hedged requests (docs/CANCEL.md): a synchronous
 * idempotent call that has no reply after the hedge delay sends a second copy
 * to another instance; the first good reply wins and the loser is cancelled.
 * (Async calls hedge by the same rules in client_hedge_async.c.)
 *
 * Why. One slow instance (a noisy neighbour, a GC pause, a swapped-out page)
 * sets the tail latency of every call routed to it; per-try timeouts
 * (client_try.c) only act after 4x the p99. A hedge after the p95 bounds the
 * tail near the fast instances' latency for ~5% more requests -- "The Tail at
 * Scale" (Dean & Barroso), gRPC's hedging policy.
 *
 * How. Each copy ("leg") is an async call (aimsi_client_async_start) whose
 * slot lets us cancel it (client_cancel.c); the caller's thread waits on the
 * hedge's condition variable: first for the delay, then for a good reply or
 * for every leg to end. The hedge copy avoids the first copy's instance, does
 * not count as a new call for the retry budget and takes one token from it
 * (no token: no hedge, counted in aims_client_hedges_denied_total), so
 * retries plus hedges stay within AIMS_CLIENT_RETRY_BUDGET. The request is
 * borrowed: the caller's thread waits for every leg to end before returning.
 * The delay is AIMS_CLIENT_HEDGE_MS, or with 0 the 95th percentile of the
 * service's last 64 successful attempt latencies in this client, capped at
 * twice their median (no hedge before 8 were seen).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aimsi_client.h"
#include "aimsi_msg.h"
#include "aims/aims_cancel.h"
#include "aimsi_wire.h"

#define HEDGE_LEGS 2
#define HEDGE_MIN_SAMPLES 8u

typedef struct hedge hedge;

typedef struct hedge_leg {
    hedge *h;
    cl_call *k; /* c->mu: the leg while it runs */
    int started, done;
    aims_status st;
    aims_msg reply;
    char err[AIMSI_ERRMSG_CAP];
} hedge_leg;

struct hedge {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hedge_leg leg[HEDGE_LEGS];
    int winner; /* the first leg with a good reply, or -1 */
};

static void leg_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    hedge_leg *l = user;
    hedge *h = l->h;
    pthread_mutex_lock(&h->mu);
    if (st == AIMS_OK && h->winner < 0 && reply != NULL) {
        st = aimsi_msg_copy(&l->reply, reply);
        if (st == AIMS_OK) {
            h->winner = (int)(l - h->leg);
        }
    } else if (st != AIMS_OK && reply != NULL) {
        (void)aimsi_msg_copy(&l->reply, reply); /* a handler's failing reply */
    }
    l->st = st;
    snprintf(l->err, sizeof l->err, "%s", error != NULL ? error : "");
    l->done = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The hedge delay for `service` (0: no hedge yet); also client_hedge_async.c. */
uint64_t aimsi_client_hedge_delay_ns(aims_client *c, const char *service)
{
    const int64_t ms = c->hedge_ms;
    if (ms > 0) {
        return (uint64_t)ms * 1000000u;
    }
    uint64_t v[AIMSI_LAT_RING];
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (cl_svc *sv = c->svcs; sv != NULL; sv = sv->next) {
        if (strcmp(sv->name, service) != 0) {
            continue;
        }
        const unsigned seen = atomic_load_explicit(&sv->lat.next, memory_order_relaxed);
        if (seen >= HEDGE_MIN_SAMPLES) {
            for (unsigned i = 0; i < AIMSI_LAT_RING && i < seen; i++) {
                v[n++] = atomic_load_explicit(&sv->lat.ns[i], memory_order_relaxed);
            }
        }
        break;
    }
    pthread_mutex_unlock(&c->mu);
    if (n == 0) {
        return 0;
    }
    qsort(v, n, sizeof v[0], cmp_u64);
    const size_t i = (n * 95u + 99u) / 100u; /* ceil(0.95 n), 1-based */
    uint64_t d = v[i > 0 ? i - 1 : 0];
    /* When one slow instance serves more than 5% of the calls, the p95 *is*
     * that instance and a hedge after it is useless (a fixed point: its
     * replies keep arriving before the hedge and keep the p95 up). Twice the
     * median still marks a call as slow without that trap. */
    const uint64_t twice_median = 2u * v[n / 2];
    d = twice_median > 0 && twice_median < d ? twice_median : d;
    return d > 0 ? d : 1;
}

static int64_t ms_left(uint64_t deadline)
{
    const uint64_t now = aimsi_now_ns();
    return deadline > now ? (int64_t)((deadline - now + 999999u) / 1000000u) : 1;
}

/* Under h->mu: 1 when the caller can stop waiting (a winner, or every started leg ended). */
static int settled_locked(const hedge *h)
{
    if (h->winner >= 0) {
        return 1;
    }
    for (int i = 0; i < HEDGE_LEGS; i++) {
        if (h->leg[i].started && !h->leg[i].done) {
            return 0;
        }
    }
    return 1;
}

static void wait_until_locked(hedge *h, uint64_t until, int first_only)
{
    while (first_only ? !h->leg[0].done : !settled_locked(h)) {
        if (until == 0) {
            pthread_cond_wait(&h->cv, &h->mu);
            continue;
        }
        if (aimsi_now_ns() >= until) {
            break;
        }
        struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
        (void)pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
}

aims_status aimsi_client_call_hedged(aims_client *c, const char *service, const char *method,
                                     const aims_msg *req, aims_msg *reply, unsigned flags,
                                     int64_t timeout_ms)
{
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", service);
    const uint64_t deadline = aimsi_deadline_cap(
        aimsi_now_ns() + aimsi_client_ms_to_ns(timeout_ms > 0 ? timeout_ms : c->timeout_ms));
    hedge h;
    memset(&h, 0, sizeof h);
    h.winner = -1;
    pthread_mutex_init(&h.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h.cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < HEDGE_LEGS; i++) {
        h.leg[i].h = &h;
        aimsi_msg_init(&h.leg[i].reply);
    }
    const uint64_t delay = aimsi_client_hedge_delay_ns(c, service);
    h.leg[0].started = 1;
    const cl_start opt0 = {0, 0, 1, &h.leg[0].k};
    (void)aimsi_client_async_start(c, service, method, req, flags, ms_left(deadline), leg_done,
                                   &h.leg[0], &opt0);
    pthread_mutex_lock(&h.mu);
    if (delay > 0) {
        const uint64_t at = aimsi_now_ns() + delay;
        wait_until_locked(&h, at < deadline ? at : deadline, 1);
    }
    const int hedge_now = delay > 0 && !h.leg[0].done && aimsi_now_ns() < deadline;
    pthread_mutex_unlock(&h.mu);
    if (hedge_now) {
        pthread_mutex_lock(&c->mu);
        const cl_call *k0 = h.leg[0].k;
        const aims_instance avoid = k0 != NULL ? k0->cur_inst : 0;
        const int ok = k0 != NULL && !c->closing && aimsi_client_token_take_locked(c);
        pthread_mutex_unlock(&c->mu);
        if (k0 != NULL) {
            aims_metrics_count(c->mx, ok ? "aims_client_hedges_total"
                                         : "aims_client_hedges_denied_total", labels, 1);
        }
        if (ok) {
            pthread_mutex_lock(&h.mu);
            h.leg[1].started = 1;
            pthread_mutex_unlock(&h.mu);
            const cl_start opt1 = {avoid, 1, 1, &h.leg[1].k};
            (void)aimsi_client_async_start(c, service, method, req, flags, ms_left(deadline),
                                           leg_done, &h.leg[1], &opt1);
        }
    }
    pthread_mutex_lock(&h.mu);
    wait_until_locked(&h, 0, 0);
    const int winner = h.winner;
    pthread_mutex_unlock(&h.mu);
    /* Cancel the loser (a no-op for a leg that ended), then wait for it: its
     * request is borrowed from our caller. */
    int cancelled = 0;
    for (int i = 0; i < HEDGE_LEGS; i++) {
        if (i == winner || !h.leg[i].started) {
            continue;
        }
        pthread_mutex_lock(&c->mu);
        cancelled += h.leg[i].k != NULL;
        pthread_mutex_unlock(&c->mu);
        aimsi_client_cancel(c, &h.leg[i].k);
    }
    pthread_mutex_lock(&h.mu);
    for (int i = 0; i < HEDGE_LEGS; i++) {
        while (h.leg[i].started && !h.leg[i].done) {
            pthread_cond_wait(&h.cv, &h.mu);
        }
    }
    pthread_mutex_unlock(&h.mu);
    if (winner == 1) {
        aims_metrics_count(c->mx, "aims_client_hedges_won_total", labels, 1);
    }
    if (cancelled > 0 && h.leg[1].started) {
        aims_metrics_count(c->mx, "aims_client_hedges_cancelled_total", labels,
                           (uint64_t)cancelled);
    }
    /* The outcome: the winner's reply, else the last leg's failure. */
    const int pick = winner >= 0 ? winner : (h.leg[1].started ? 1 : 0);
    const aims_status st = h.leg[pick].st;
    aimsi_msg_move(reply, &h.leg[pick].reply);
    if (st != AIMS_OK) {
        if (h.leg[pick].err[0] != '\0') {
            (void)aims_msg_set_error(reply, h.leg[pick].err);
        }
        aimsi_client_call_err(c, st, "service '%s' method '%s': %s", service, method,
                              h.leg[pick].err[0] != '\0' ? h.leg[pick].err : aims_strerror(st));
    }
    for (int i = 0; i < HEDGE_LEGS; i++) {
        aimsi_msg_fini(&h.leg[i].reply);
    }
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    return st;
}
