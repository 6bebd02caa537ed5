/*
 * client_call.c -- driving a call across its attempts: sync calls wait on
 * their pending, async calls are re-run from the retry queue, and the client
 * thread (client.c has the overview).
 *
 * The client thread sweeps expired async calls (every 2 ms while any is in
 * flight), runs async retries (never on a transport or node thread, since a
 * retry may dial), and ends health ejections whose time is up.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimsi_client.h"
#include "aimsi_msg.h"
#include "registry/aimsi_regbk.h"
#include "../orch/aimsi_orch.h"

/* ---- sync calls ------------------------------------------------------------------------- */

static aims_status wait_sync(aims_client *c, cl_pending *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->delivered) {
        struct timespec ts;
        ts.tv_sec = (time_t)(p->try_ns / 1000000000u);
        ts.tv_nsec = (long)(p->try_ns % 1000000000u);
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) != 0 && !p->delivered &&
            aimsi_now_ns() >= p->try_ns) {
            break;
        }
    }
    int delivered = p->delivered;
    pthread_mutex_unlock(&p->mu);
    if (!delivered) {
        pthread_mutex_lock(&c->mu);
        const int won = aimsi_client_unlink_locked(c, p);
        pthread_mutex_unlock(&c->mu);
        if (won) {
            aimsi_client_pending_unref(p); /* the link's: a late completion finds nothing */
            aims_msg_clear(p->dst);
            snprintf(p->err, sizeof p->err, "%s waiting for %.200s",
                     p->try_ns < p->deadline_ns ? "try timed out (its share of the deadline)"
                                                : "deadline passed",
                     p->ep->url);
            p->st = AIMS_E_TIMEOUT;
            return AIMS_E_TIMEOUT;
        }
        /* Someone is delivering right now: wait for it (short). */
        pthread_mutex_lock(&p->mu);
        while (!p->delivered) {
            pthread_cond_wait(&p->cv, &p->mu);
        }
        pthread_mutex_unlock(&p->mu);
    }
    return p->st;
}

aims_status aimsi_client_call_sync(aims_client *c, cl_call *k, aims_msg *reply)
{
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", k->service);
    k->deposit = k->addr == NULL; /* at the first pick (client_pick.c) */
    aims_status st;
    for (;;) {
        cl_pending *p = NULL;
        uint64_t hint = 0;
        st = aimsi_client_attempt_start(c, k, reply, &p);
        k->unsent = st != AIMS_OK;
        if (st == AIMS_OK) {
            st = wait_sync(c, p);
            hint = st == AIMS_E_OVERLOADED ? aimsi_retry_hint_ns(p->err) : 0;
            k->unsent = p->unsent;
            aimsi_client_report(k, st);
            if (st != AIMS_OK) {
                const char *why = p->err[0] != '\0' ? p->err : aims_strerror(st);
                aimsi_client_call_err(c, st, "service '%s' method '%s' at %s: %s", k->service,
                                      k->method, p->ep->url, why);
            }
            aimsi_client_pending_unref(p); /* the waiter's */
        }
        const uint64_t now = aimsi_now_ns();
        if (st == AIMS_OK || now + hint >= k->deadline_ns ||
            !aimsi_client_retry_ok(c, k, st, labels)) {
            break;
        }
        if (hint > 0) {
            const struct timespec ts = {(time_t)(hint / 1000000000u),
                                        (long)(hint % 1000000000u)};
            (void)nanosleep(&ts, NULL);
        }
    }
    aimsi_client_call_metrics(c, k, st);
    return st;
}

/* ---- async calls ------------------------------------------------------------------------ */

void aimsi_client_call_free(cl_call *k)
{
    aimsi_client_keep_free(k);
    if (k->req_copy != NULL) { /* from the client's mpool (client.c) */
        aimsi_msg_fini(k->req_copy);
        aimsi_client_pool_put(k->req_copy);
    }
    aimsi_client_pool_put(k); /* from aimsi_client_pool_get (client.c) */
}

void aimsi_client_call_hold(cl_call *k)
{
    atomic_fetch_add_explicit(&k->holds, 1, memory_order_relaxed);
}

/* holds counts the references beyond the finisher's: whoever finds it at 0
 * (the finisher when no sender reads k any more, or the last sender after
 * the call finished) frees k. */
void aimsi_client_call_unref(cl_call *k)
{
    if (atomic_fetch_sub_explicit(&k->holds, 1, memory_order_acq_rel) == 0) {
        aimsi_client_call_free(k);
    }
}

void aimsi_client_finish_call(aims_client *c, cl_call *k, aims_status st, const aims_msg *reply,
                              const char *err)
{
    aimsi_client_call_metrics(c, k, st);
    if (k->slot != NULL) { /* a handle or hedge may cancel k until now */
        pthread_mutex_lock(&c->mu);
        *k->slot = NULL;
        pthread_mutex_unlock(&c->mu);
    }
    if (k->keep && !aimsi_client_keep_finish(k, st, reply, err)) {
        return; /* the request's last reader runs done() (client_keep.c) */
    }
    k->done(k->user, st, reply, err != NULL ? err : "");
    aimsi_client_call_unref(k); /* a sender may still be encoding k (client_send.c) */
}

/* Run attempts of k until one is in flight or the call is over (any thread
 * but a transport's: a retry may dial). */
static void run_async(aims_client *c, cl_call *k)
{
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", k->service);
    for (;;) {
        cl_pending *p = NULL;
        const aims_status st = aimsi_client_attempt_start(c, k, NULL, &p);
        if (st == AIMS_OK) {
            return; /* from here on k may already be finished */
        }
        k->unsent = 1;
        if (!aimsi_client_retry_ok(c, k, st, labels)) {
            aimsi_client_finish_call(c, k, st, NULL, aims_errmsg());
            return;
        }
    }
}

/* The outcome of an async attempt (the deliverer's thread). */
void aimsi_client_attempt_finished(aims_client *c, cl_call *k, aims_status st,
                                   const aims_msg *reply, const char *err)
{
    aimsi_client_report(k, st);
    if (st == AIMS_OK) { /* the common case: no retry labels, no clock read */
        aimsi_client_finish_call(c, k, st, reply, err);
        return;
    }
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", k->service);
    const uint64_t hint = st == AIMS_E_OVERLOADED ? aimsi_retry_hint_ns(err) : 0;
    const uint64_t now = aimsi_now_ns();
    if (now + hint < k->deadline_ns && aimsi_client_retry_ok(c, k, st, labels)) {
        pthread_mutex_lock(&c->mu);
        k->not_before = hint > 0 ? now + hint : 0;
        k->qnext = NULL;
        if (c->rq_tail != NULL) {
            c->rq_tail->qnext = k;
        } else {
            c->rq_head = k;
        }
        c->rq_tail = k;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    aimsi_client_finish_call(c, k, st, reply, err);
}

/* ---- the client thread --------------------------------------------------------------------- */

/* Unlink the async attempts whose try deadline passed and answer them
 * TIMEOUT; c->next_try becomes the earliest try deadline still linked, which
 * is when the client thread wakes next (not every CL_SWEEP_NS: with calls
 * in flight that was 500 wake-ups a second, each a context switch and a walk
 * of the pending list under c->mu, on a machine whose cores the callers and
 * instances need -- docs/P9.md, session 11). */
static void sweep_expired(aims_client *c)
{
    const uint64_t now = aimsi_now_ns();
    cl_pending *dead = NULL;
    uint64_t next = UINT64_MAX;
    pthread_mutex_lock(&c->mu);
    for (cl_pending *p = c->plist.next; p != &c->plist;) {
        cl_pending *nx = p->next;
        if (p->call != NULL && p->try_ns <= now && aimsi_client_unlink_locked(c, p)) {
            p->hnext = dead;
            dead = p;
        } else if (p->call != NULL && p->try_ns < next) {
            next = p->try_ns;
        }
        p = nx;
    }
    c->next_try = next;
    pthread_mutex_unlock(&c->mu);
    while (dead != NULL) {
        cl_pending *p = dead;
        dead = p->hnext;
        aimsi_client_deliver(p, AIMS_E_TIMEOUT, NULL,
                             p->try_ns < p->deadline_ns
                                 ? "try timed out (its share of the deadline)"
                                 : "deadline passed");
        aimsi_client_pending_unref(p);
    }
}

/* End ejections whose time is up (aims_health_state_of fires the callback),
 * and probe instances that are not healthy: an active "$ping" every
 * CL_PROBE_NS. A failed probe counts as a failure (so a dead instance stays
 * out, its ejection growing) and a good one as a success, which is what
 * lets an instance that nobody calls -- because it is ejected -- come back on
 * evidence rather than on the clock alone. Probes run on the client thread
 * outside the client lock; views (cl_svc) live until the client is freed. */
#define CL_PROBE_NS 1000000000u
#define CL_PROBE_MAX 16
#define CL_PROBE_TIMEOUT_MS 200

typedef struct cl_probe {
    cl_svc *sv;
    aims_instance id;
    char url[AIMSI_URL_MAX + 1];
} cl_probe;

static void health_tick(aims_client *c)
{
    cl_probe probes[CL_PROBE_MAX];
    size_t n_probe = 0;
    const uint64_t now = aimsi_now_ns();
    pthread_mutex_lock(&c->mu);
    const int probe_now = now - c->probe_ns >= CL_PROBE_NS;
    if (probe_now) {
        c->probe_ns = now;
    }
    for (cl_svc *sv = c->svcs; sv != NULL; sv = sv->next) {
        for (size_t i = 0; i < sv->n; i++) {
            const aims_health_state st = aims_health_state_of(sv->hl, sv->ids[i]);
            if (probe_now && st != AIMS_HEALTH_STATE_HEALTHY && n_probe < CL_PROBE_MAX) {
                cl_probe *p = &probes[n_probe++];
                p->sv = sv;
                p->id = sv->ids[i];
                memcpy(p->url, sv->eps[i]->url, sizeof p->url);
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n_probe; i++) {
        aims_msg req, reply;
        aimsi_msg_init(&req);
        aimsi_msg_init(&reply);
        const aims_status st = aims_client_call_addr(c, probes[i].url, probes[i].sv->name,
                                                     "$ping", &req, &reply,
                                                     CL_PROBE_TIMEOUT_MS);
        aimsi_msg_fini(&req);
        aimsi_msg_fini(&reply);
        aims_health_report(probes[i].sv->hl, probes[i].id, st == AIMS_OK);
        aims_metrics_count(c->mx, st == AIMS_OK ? "aims_client_probes_ok_total"
                                                : "aims_client_probes_failed_total",
                           probes[i].sv->labels, 1);
    }
}

/* Under c->mu: the first queued retry whose hint has passed, unlinked when
 * `take` (NULL if none; *wake = the earliest hint still ahead, or 0). */
static cl_call *rq_ready_locked(aims_client *c, uint64_t now, uint64_t *wake, int take)
{
    *wake = 0;
    cl_call *prev = NULL;
    for (cl_call *k = c->rq_head; k != NULL; prev = k, k = k->qnext) {
        if (k->not_before > now) {
            *wake = *wake == 0 || k->not_before < *wake ? k->not_before : *wake;
            continue;
        }
        if (!take) {
            return k;
        }
        if (prev != NULL) {
            prev->qnext = k->qnext;
        } else {
            c->rq_head = k->qnext;
        }
        if (c->rq_tail == k) {
            c->rq_tail = prev;
        }
        k->qnext = NULL;
        return k;
    }
    return NULL;
}

void *aimsi_client_thread(void *arg)
{
    aims_client *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->closing) {
        uint64_t wake = 0;
        cl_call *k = rq_ready_locked(c, aimsi_now_ns(), &wake, 1);
        if (k != NULL) {
            pthread_mutex_unlock(&c->mu);
            run_async(c, k);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        const size_t n_async = c->n_async;
        pthread_mutex_unlock(&c->mu);
        if (n_async > 0) {
            sweep_expired(c);
        }
        aimsi_client_ahedge_tick(c); /* async hedges whose delay is up */
        const uint64_t now = aimsi_now_ns();
        if (now - c->health_ns >= CL_IDLE_NS) {
            c->health_ns = now;
            health_tick(c);
        }
        pthread_mutex_lock(&c->mu);
        if (c->closing || rq_ready_locked(c, aimsi_now_ns(), &wake, 0) != NULL) {
            continue;
        }
        /* Async hedges still tick every CL_SWEEP_NS (client_hedge_async.c);
         * deadlines wake the thread when the earliest is due. */
        uint64_t until = aimsi_now_ns() + (c->ahedges != NULL ? CL_SWEEP_NS : CL_IDLE_NS);
        until = c->n_async > 0 && c->next_try < until ? c->next_try : until;
        until = wake != 0 && wake < until ? wake : until;
        struct timespec ts;
        ts.tv_sec = (time_t)(until / 1000000000u);
        ts.tv_nsec = (long)(until % 1000000000u);
        c->sweep_sleeping = 1;
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        c->sweep_sleeping = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}
