/*
 * svc_drain.c -- starting a service and stopping it by draining; the node
 * drains all its services at once through aimsi_svc_leave/aimsi_svc_finish
 * (node.c). service.c has the overview.
 *
 * Draining (aims_service_stop). Leave the registry, wait the grace period
 * while still serving, then refuse new work (CLOSING), wait for the queue and
 * the slots to empty (up to the timeout), reject what is still queued with
 * AIMS_E_CLOSED, wait for running handlers (they cannot be interrupted), call
 * kind->stop. The CLOSING store and the slot count are sequentially
 * consistent atomics on both sides (Dekker): an inline caller increments the
 * slot count and then reads the state; stop writes the state and then reads
 * the slot count, so one of the two always sees the other.
 *
 * Threads. Public functions are safe from any thread except as the public
 * header says (set_param before start). Services live until the node is
 * destroyed; a stopped service may be started again.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_local.h"
#include "aimsi_svckind.h"
#include "aimsi_node.h"
#include "aimsi_service.h"

/* ---- small helpers ----------------------------------------------------------- */

static void add_ns(struct timespec *ts, uint64_t ns)
{
    ts->tv_sec += (time_t)(ns / 1000000000u);
    ts->tv_nsec += (long)(ns % 1000000000u);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Absolute CLOCK_MONOTONIC timespec for the monotonic ns value `at`. */
struct timespec aimsi_service_mono_ts(uint64_t at)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(at / 1000000000u);
    ts.tv_nsec = (long)(at % 1000000000u);
    return ts;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {0, 0};
    add_ns(&ts, (uint64_t)ms * 1000000u);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- start / stop -------------------------------------------------------------- */

aims_status aims_service_start(aims_service *s)
{
    if (!aimsi_obj_ok(s, AIMSI_MAGIC_SERVICE)) {
        return AIMSI_MISUSE("service");
    }
    aims_node *n = s->node;
    if (atomic_load(&n->closing)) {
        return aimsi_err(&s->obj, AIMS_E_STATE, "node %s is being destroyed", n->name);
    }
    int expect = 0;
    if (atomic_load(&s->state) != AIMSI_SVC_NEW ||
        !atomic_compare_exchange_strong(&s->stopping, &expect, 1)) {
        return aimsi_err(&s->obj, AIMS_E_STATE, "service %s is already started (or stopping)",
                         s->name);
    }
    /* `stopping` doubles as the start/stop guard: one transition at a time. */
    aims_status st = aimsi_node_workers_start(n);
    if (st != AIMS_OK) {
        atomic_store(&s->stopping, 0);
        return aimsi_err_adopt(&s->obj, st);
    }
    pthread_mutex_lock(&n->lock);
    const int64_t workers = (int64_t)n->n_threads;
    pthread_mutex_unlock(&n->lock);
    s->limit = s->p_concurrency > 0 ? s->p_concurrency : (workers > 0 ? workers : 1);
    /* Batching kinds run inline too (a batch of one) when nothing is queued and
     * a slot is free: at low load a batch would only add delay; under load the
     * slots are busy, requests queue and the workers join them into batches. */
    s->can_inline = s->p_inline != 0 && !s->kind->never_inline;

    const reg_backend b = aimsi_service_backend_of(n);
    if (b.reg != NULL || b.rops != NULL) {
        char addr[AIMSI_URL_MAX];
        if (!aimsi_service_first_address(n, addr)) {
            atomic_store(&s->stopping, 0);
            return aimsi_err(&s->obj, AIMS_E_STATE,
                             "service %s: node %s has no address to register (listen first)",
                             s->name, n->name);
        }
        st = aimsi_node_hb_start(n);
        if (st != AIMS_OK) {
            atomic_store(&s->stopping, 0);
            return aimsi_err_adopt(&s->obj, st);
        }
        pthread_mutex_lock(&s->reg_lock);
        s->reg_leaving = 0;
        /* Read again under reg_lock: the ops may have been replaced meanwhile. */
        const reg_backend cur = aimsi_service_backend_of(n);
        const aims_status rst = aimsi_service_reg_register(s, &cur, addr);
        /* A remote registry may be unreachable: the heartbeat keeps trying. */
        const int fatal = rst != AIMS_OK && cur.rops == NULL;
        if (!fatal) {
            atomic_store(&s->state, AIMSI_SVC_RUNNING);
        }
        pthread_mutex_unlock(&s->reg_lock);
        atomic_store(&s->stopping, 0);
        if (fatal) {
            return aimsi_err(&s->obj, rst, "service %s: registry refused it: %s", s->name,
                             aims_errmsg());
        }
        return AIMS_OK;
    }
    atomic_store(&s->state, AIMSI_SVC_RUNNING);
    atomic_store(&s->stopping, 0);
    return AIMS_OK;
}

/* Wait (node->lock held) until s is idle (no slot used; and, when asked, an
 * empty queue) or `until` (0: no limit) passed. */
static int idle_wait(aims_service *s, uint64_t until, int need_queue_empty)
{
    aims_node *n = s->node;
    for (;;) {
        const int busy = atomic_load(&s->inflight) > 0 ||
                         (need_queue_empty && atomic_load(&s->queued) > 0);
        if (!busy) {
            return 1;
        }
        const uint64_t now = aimsi_now_ns();
        if (until != 0 && now >= until) {
            return 0;
        }
        /* Bounded steps: a completion racing the wait costs at most 5 ms. */
        uint64_t step = now + 5000000u;
        if (until != 0 && until < step) {
            step = until;
        }
        const struct timespec ts = aimsi_service_mono_ts(step);
        (void)pthread_cond_timedwait(&n->idle_cond, &n->lock, &ts);
    }
}

int aimsi_svc_leave(aims_service *s)
{
    int expect = 0;
    if (atomic_load(&s->state) != AIMSI_SVC_RUNNING ||
        !atomic_compare_exchange_strong(&s->stopping, &expect, 1)) {
        return -1;
    }
    pthread_mutex_lock(&s->reg_lock);
    const int was_registered = s->registered;
    aimsi_service_reg_deregister(s);
    s->reg_leaving = 1;
    pthread_mutex_unlock(&s->reg_lock);
    return was_registered;
}

int64_t aimsi_node_grace_ms(const aims_node *n)
{
    return n->p_drain_grace_ms > 0 ? n->p_drain_grace_ms : 2 * n->p_heartbeat_ms;
}

void aimsi_svc_finish(aims_service *s, uint64_t until, int64_t timeout_ms)
{
    aims_node *n = s->node;
    /* refuse new work, finish what is queued or running (bounded). */
    atomic_store(&s->state, AIMSI_SVC_CLOSING);
    pthread_mutex_lock(&n->lock);
    pthread_cond_broadcast(&n->work_cond); /* a batcher waiting for more stops waiting */
    (void)idle_wait(s, until, 1);
    /* reject leftovers. */
    aimsi_qitem *left = s->head;
    s->head = NULL;
    s->tail = NULL;
    atomic_store(&s->queued, 0);
    atomic_store(&s->queued_rows, 0);
    pthread_mutex_unlock(&n->lock);
    size_t rejected = 0;
    while (left != NULL) {
        aimsi_qitem *next = left->next;
        char text[200];
        snprintf(text, sizeof(text), "service %s stopped before the call ran", s->name);
        left->done(left->ctx, AIMS_E_CLOSED, NULL, text);
        aimsi_service_free_item(left);
        left = next;
        rejected++;
    }
    aimsi_service_note_depth(s);
    /* running handlers cannot be interrupted: wait for them. */
    pthread_mutex_lock(&n->lock);
    (void)idle_wait(s, 0, 0);
    pthread_mutex_unlock(&n->lock);
    if (s->kind->stop != NULL) {
        s->kind->stop(s->impl);
    }
    atomic_store(&s->state, AIMSI_SVC_NEW);
    atomic_store(&s->stopping, 0);
    if (rejected > 0) {
        /* The service did stop: report the cut-short drain in the log, not as a failure. */
        aimsi_log(AIMS_LOG_WARN,
                  "service %s: drain timed out after %" PRId64
                  " ms; %zu queued calls rejected with AIMS_E_CLOSED",
                  s->name, timeout_ms, rejected);
    }
}

static aims_status svc_stop(aims_service *s, int64_t timeout_ms)
{
    const uint64_t until = aimsi_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    /* 1. leave the registry, then give balancers time to notice while serving. */
    const int was_registered = aimsi_svc_leave(s);
    if (was_registered < 0) {
        return aimsi_err(&s->obj, AIMS_E_STATE, "service %s is not running (or already stopping)",
                         s->name);
    }
    if (was_registered) {
        int64_t grace = aimsi_node_grace_ms(s->node);
        grace = grace < timeout_ms ? grace : timeout_ms;
        if (grace > 0) {
            sleep_ms(grace);
        }
    }
    /* 2..4. refuse new work, drain, reject leftovers, kind->stop. */
    aimsi_svc_finish(s, until, timeout_ms);
    return AIMS_OK;
}

aims_status aims_service_stop(aims_service *s, int64_t timeout_ms)
{
    if (!aimsi_obj_ok(s, AIMSI_MAGIC_SERVICE) || timeout_ms < 0) {
        return AIMSI_MISUSE("service, timeout_ms >= 0");
    }
    return svc_stop(s, timeout_ms);
}
