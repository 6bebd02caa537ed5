/*
 * client_hedge_async.c -- hedged requests for aims_client_call_async
 * (docs/CANCEL.md): the same rules as the synchronous hedge (client_hedge.c),
 * without a caller's thread to wait on.
 *
 * Rules (as for sync calls). An async call flagged AIMS_CALL_IDEMPOTENT on a
 * client with AIMS_CLIENT_HEDGE_MS >= 0 that has no reply after the hedge
 * delay (the set ms, or with 0 the service's recent p95 capped at twice the
 * median; no hedge before 8 samples) sends a second copy to another instance.
 * The first good reply is the call's outcome and the other copy is
 * cancelled; when no copy succeeds the last one to end gives the outcome. A
 * hedge takes a token from the retry budget (none: no hedge, counted in
 * aims_client_hedges_denied_total) and is not a new call for it, so retries
 * plus hedges stay within AIMS_CLIENT_RETRY_BUDGET. The user's done callback
 * runs exactly once.
 *
 * How. An ahedge owns a copy of the request (both copies borrow it) and
 * counts references: one per copy started (dropped by that copy's
 * completion), one for the timer link, one for the starting thread. The
 * timer is the client thread (client_call.c): every loop it calls
 * aimsi_client_ahedge_tick, which unlinks the hedges whose delay is up and,
 * when the first copy is still running, takes a token and starts the second
 * copy from that thread (the client thread already runs async retries, which
 * may dial). While a copy runs the client thread wakes every CL_SWEEP_NS, so
 * a hedge leaves within ~2 ms of its delay. A hedge whose first copy already
 * ended waits in the list until its time (or aims_client_destroy, which
 * drains the list after every call has ended: aimsi_client_ahedge_fini).
 *
 * Races. The winner's completion cancels the other copy through its slot
 * (client_cancel.c; a no-op once it ended). A second copy started just as
 * the first one won is cancelled by the tick itself right after it starts.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "aimsi_client.h"
#include "aimsi_msg.h"
#include "aimsi_wire.h"
#include "aims/aims_cancel.h"

#define AH_LEGS 2

typedef struct cl_ahedge cl_ahedge;

typedef struct ah_leg {
    cl_ahedge *ah;
    cl_call *k; /* c->mu: the copy while it runs (its slot) */
    int started, done;
} ah_leg;

struct cl_ahedge {
    cl_ahedge *next; /* c->mu: c->ahedges */
    aims_client *c;
    pthread_mutex_t mu;
    atomic_int refs;
    ah_leg leg[AH_LEGS];
    int delivered; /* mu: the user's done has been (or is being) called */
    int winner;    /* mu: the leg whose reply won, or -1 */
    uint64_t fire_at, deadline;
    unsigned flags;
    aims_done_fn done;
    void *user;
    aims_msg req;
    char *service, *method; /* in names[] */
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    char names[];
};

static void ah_unref(cl_ahedge *ah)
{
    if (atomic_fetch_sub(&ah->refs, 1) != 1) {
        return;
    }
    aimsi_msg_fini(&ah->req);
    pthread_mutex_destroy(&ah->mu);
    aimsi_free(ah);
}

/* Cancel leg i if it still runs; 1 when it was in flight. */
static int cancel_leg(cl_ahedge *ah, int i)
{
    aims_client *c = ah->c;
    pthread_mutex_lock(&c->mu);
    const int running = ah->leg[i].k != NULL;
    pthread_mutex_unlock(&c->mu);
    if (running) {
        aimsi_client_cancel(c, &ah->leg[i].k);
    }
    return running;
}

static void leg_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    ah_leg *l = user;
    cl_ahedge *ah = l->ah;
    const int me = (int)(l - ah->leg);
    pthread_mutex_lock(&ah->mu);
    l->done = 1;
    int deliver = 0;
    if (!ah->delivered && st == AIMS_OK) {
        deliver = 1;
        ah->winner = me;
    } else if (!ah->delivered) {
        /* A failure ends the call when no other copy can still answer: the
         * other one ended, or was never started and never will be (the
         * first copy failed before the hedge delay: as sync, no hedge). */
        const ah_leg *o = &ah->leg[1 - me];
        deliver = o->started ? o->done : 1;
    }
    if (deliver) {
        ah->delivered = 1;
    }
    const int other_running = ah->leg[1 - me].started && !ah->leg[1 - me].done;
    pthread_mutex_unlock(&ah->mu);
    if (deliver) {
        /* The loser first and the counts before the caller hears: a caller
         * that reads the metrics in its callback sees this call in them. */
        if (st == AIMS_OK && other_running && cancel_leg(ah, 1 - me)) {
            aims_metrics_count(ah->c->mx, "aims_client_hedges_cancelled_total", ah->labels, 1);
        }
        if (st == AIMS_OK && me == 1) {
            aims_metrics_count(ah->c->mx, "aims_client_hedges_won_total", ah->labels, 1);
        }
        ah->done(ah->user, st, reply, error != NULL ? error : "");
    }
    ah_unref(ah);
}

static int64_t ms_left(uint64_t deadline)
{
    const uint64_t now = aimsi_now_ns();
    return deadline > now ? (int64_t)((deadline - now + 999999u) / 1000000u) : 1;
}

aims_status aimsi_client_async_hedged(aims_client *c, const char *service, const char *method,
                                      const aims_msg *req, unsigned flags, int64_t timeout_ms,
                                      aims_done_fn done, void *user)
{
    const uint64_t delay = aimsi_client_hedge_delay_ns(c, service);
    if (delay == 0) { /* no latency picture yet: a plain async call, as sync does */
        return aimsi_client_async_start(c, service, method, req, flags, timeout_ms, done, user,
                                        NULL);
    }
    const size_t sl = strlen(service), ml = strlen(method);
    cl_ahedge *ah = aimsi_calloc(1, sizeof(*ah) + sl + ml + 2);
    aims_status rc = ah != NULL ? AIMS_OK : AIMS_E_NOMEM;
    if (ah != NULL) {
        aimsi_msg_init(&ah->req);
        rc = aimsi_msg_copy(&ah->req, req);
        if (rc != AIMS_OK) {
            aimsi_msg_fini(&ah->req);
            aimsi_free(ah);
        }
    }
    if (rc != AIMS_OK) {
        rc = aimsi_client_call_err(c, rc, "aims_client_call_async: out of memory for a hedge");
        done(user, rc, NULL, aims_errmsg());
        return rc;
    }
    ah->c = c;
    pthread_mutex_init(&ah->mu, NULL);
    ah->winner = -1;
    ah->flags = flags;
    ah->done = done;
    ah->user = user;
    ah->service = ah->names;
    ah->method = ah->names + sl + 1;
    memcpy(ah->service, service, sl + 1);
    memcpy(ah->method, method, ml + 1);
    snprintf(ah->labels, sizeof ah->labels, "service=\"%s\"", service);
    for (int i = 0; i < AH_LEGS; i++) {
        ah->leg[i].ah = ah;
    }
    const uint64_t now = aimsi_now_ns();
    ah->deadline = aimsi_deadline_cap(
        now + aimsi_client_ms_to_ns(timeout_ms > 0 ? timeout_ms : c->timeout_ms));
    ah->fire_at = now + delay;
    /* the starter's, the timer's, leg 0's */
    atomic_init(&ah->refs, 3);
    ah->leg[0].started = 1;
    pthread_mutex_lock(&c->mu);
    ah->next = c->ahedges;
    c->ahedges = ah;
    if (ah->next == NULL && c->sweep_sleeping) {
        pthread_cond_broadcast(&c->cv); /* it sleeps until a deadline: tick again */
    }
    pthread_mutex_unlock(&c->mu);
    const cl_start opt0 = {0, 0, 1, &ah->leg[0].k};
    rc = aimsi_client_async_start(c, ah->service, ah->method, &ah->req, flags,
                                  ms_left(ah->deadline), leg_done, &ah->leg[0], &opt0);
    ah_unref(ah); /* the starter's */
    return rc;
}

/* Start the second copy of a hedge whose delay is up (client thread). */
static void fire(aims_client *c, cl_ahedge *ah)
{
    pthread_mutex_lock(&ah->mu);
    const int want = !ah->delivered && !ah->leg[0].done && aimsi_now_ns() < ah->deadline;
    pthread_mutex_unlock(&ah->mu);
    if (!want) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    const cl_call *k0 = ah->leg[0].k;
    const aims_instance avoid = k0 != NULL ? k0->cur_inst : 0;
    const int ok = k0 != NULL && !c->closing && aimsi_client_token_take_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (k0 == NULL) {
        return; /* the first copy just ended */
    }
    aims_metrics_count(c->mx, ok ? "aims_client_hedges_total" : "aims_client_hedges_denied_total",
                       ah->labels, 1);
    if (!ok) {
        return;
    }
    pthread_mutex_lock(&ah->mu);
    const int over = ah->delivered; /* the first copy ended meanwhile */
    if (!over) {
        ah->leg[1].started = 1;
        atomic_fetch_add(&ah->refs, 1); /* leg 1's */
    }
    pthread_mutex_unlock(&ah->mu);
    if (over) {
        return;
    }
    const cl_start opt1 = {avoid, 1, 1, &ah->leg[1].k};
    (void)aimsi_client_async_start(c, ah->service, ah->method, &ah->req, ah->flags,
                                   ms_left(ah->deadline), leg_done, &ah->leg[1], &opt1);
    pthread_mutex_lock(&ah->mu);
    const int late = ah->delivered && ah->winner != 1 && !ah->leg[1].done;
    pthread_mutex_unlock(&ah->mu);
    if (late && cancel_leg(ah, 1)) { /* leg 0 ended while leg 1 was starting */
        aims_metrics_count(c->mx, "aims_client_hedges_cancelled_total", ah->labels, 1);
    }
}

void aimsi_client_ahedge_tick(aims_client *c)
{
    const uint64_t now = aimsi_now_ns();
    cl_ahedge *due = NULL;
    pthread_mutex_lock(&c->mu);
    for (cl_ahedge **pp = &c->ahedges; *pp != NULL;) {
        cl_ahedge *ah = *pp;
        if (ah->fire_at <= now) {
            *pp = ah->next;
            ah->next = due;
            due = ah;
        } else {
            pp = &ah->next;
        }
    }
    pthread_mutex_unlock(&c->mu);
    while (due != NULL) {
        cl_ahedge *ah = due;
        due = ah->next;
        fire(c, ah);
        ah_unref(ah); /* the timer's */
    }
}

void aimsi_client_ahedge_fini(aims_client *c)
{
    pthread_mutex_lock(&c->mu);
    cl_ahedge *list = c->ahedges;
    c->ahedges = NULL;
    pthread_mutex_unlock(&c->mu);
    while (list != NULL) {
        cl_ahedge *ah = list;
        list = ah->next;
        ah_unref(ah);
    }
}
