/*
 * svc_dispatch.c -- a request's way into a service: run inline or queue it,
 * reject it, the concurrency slots, the spare reply messages, the per-service
 * statistics the dispatch and the workers note (service.c has the overview).
 *
 * Rejections happen before any work: a closed service (AIMS_E_CLOSED), a full
 * queue (AIMS_E_OVERLOADED, with a retry hint), a deadline that has passed
 * (AIMS_E_TIMEOUT). Admission by time and the queue discipline (which item
 * runs next, which is dropped unrun) live in svc_admit.c: a request is queued
 * only if the queue ahead leaves it time to finish before its deadline, and
 * under sustained overload the queue is kept short (FIFO, adaptive limit).
 *
 * Slots. `inflight` counts concurrency slots in use, by inline callers and
 * workers alike; both take a slot with a CAS that never exceeds `limit`.
 *
 * Threads. Public functions are safe from any thread except as the public
 * header says (set_param before start). Services live until the node is
 * destroyed; a stopped service may be started again.
 */

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_local.h"
#include "aimsi_svckind.h"
#include "aimsi_node.h"
#include "aimsi_service.h"
#include "../orch/aimsi_orch.h"

/* ---- slots, spares, statistics ------------------------------------------------- */

int aimsi_service_slot_try_acquire(aims_service *s)
{
    int64_t cur = atomic_load(&s->inflight);
    while (cur < s->limit) {
        if (atomic_compare_exchange_weak(&s->inflight, &cur, cur + 1)) {
            return 1;
        }
    }
    return 0;
}

static aims_msg *spare_take(aims_service *s)
{
    for (size_t i = 0; i < AIMSI_SVC_SPARES; i++) {
        if (atomic_load_explicit(&s->spare[i], memory_order_relaxed) != NULL) {
            aims_msg *m = atomic_exchange(&s->spare[i], NULL);
            if (m != NULL) {
                return m;
            }
        }
    }
    aims_msg *m = NULL;
    if (aims_msg_create(&m) != AIMS_OK) {
        return NULL;
    }
    return m;
}

static void spare_put(aims_service *s, aims_msg *m)
{
    aims_msg_clear(m);
    for (size_t i = 0; i < AIMSI_SVC_SPARES; i++) {
        aims_msg *expect = NULL;
        if (atomic_compare_exchange_strong(&s->spare[i], &expect, m)) {
            return;
        }
    }
    aims_msg_destroy(m);
}

/* Items a single run() takes (batching kinds: a whole batch). */
int64_t aimsi_service_per_run(const aims_service *s)
{
    return s->kind->batching ? s->p_batch_max : 1;
}

/* Expected wait (ns) before an item arriving behind `queued` others completes. */
static uint64_t wait_estimate(const aims_service *s, int64_t queued)
{
    const uint64_t ewma = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
    const int64_t per_round = aimsi_service_per_run(s) * s->limit;
    const uint64_t rounds = (uint64_t)(queued / (per_round > 0 ? per_round : 1)) + 1u;
    return rounds * ewma;
}

/* EWMA with weight 1/8 of `smp`, a sample at most 4x the old value. */
static void ewma_add(_Atomic uint64_t *e, uint64_t smp)
{
    const uint64_t old = atomic_load_explicit(e, memory_order_relaxed);
    smp = old != 0 && smp / 4u > old ? 4u * old : smp;
    const uint64_t next =
        old == 0 ? smp : (uint64_t)((int64_t)old + ((int64_t)smp - (int64_t)old) / 8);
    atomic_store_explicit(e, next, memory_order_relaxed);
}

void aimsi_service_note_run(aims_service *s, uint64_t run_ns, uint64_t rows)
{
    ewma_add(&s->row_ewma_ns, run_ns / (rows > 0 ? rows : 1));
    /* EWMA with weight 1/8; racing updates may lose one sample, which is fine. */
    const uint64_t old = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
    /* One outlier (a handler stalled by SIGSTOP, swapping) moves the estimate
     * at most 4x per sample: admission must not refuse everything after it. */
    const uint64_t smp = old != 0 && run_ns / 4u > old ? 4u * old : run_ns;
    aimsi_admit_note_run(s, old, smp);
    const uint64_t next =
        old == 0 ? smp : (uint64_t)((int64_t)old + ((int64_t)smp - (int64_t)old) / 8);
    atomic_store_explicit(&s->ewma_ns, next, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->busy_ns, run_ns, memory_order_relaxed);
    /* Metrics are best effort: a failed first-use allocation only loses a sample. */
    aimsi_mx_add(aimsi_metrics_series(s->node->mx, &s->mx_busy, 'c', "aims_svc_busy_ns_total",
                                      s->labels),
                 run_ns);
}

void aimsi_service_note_done(aims_service *s, aims_status st, uint64_t latency_ns)
{
    if (st != AIMS_OK) {
        atomic_fetch_add_explicit(&s->n_err, 1, memory_order_relaxed);
        (void)aims_metrics_count(s->node->mx, "aims_svc_errors_total", s->labels, 1);
    }
    aimsi_mx_observe(aimsi_metrics_series(s->node->mx, &s->mx_lat, 'h',
                                          "aims_svc_latency_seconds", s->labels),
                     latency_ns);
}

static void note_accept(aims_service *s)
{
    atomic_fetch_add_explicit(&s->n_req, 1, memory_order_relaxed);
    aimsi_mx_add(aimsi_metrics_series(s->node->mx, &s->mx_req, 'c', "aims_svc_requests_total",
                                      s->labels),
                 1);
}

void aimsi_service_note_depth(aims_service *s)
{
    (void)aims_metrics_set_gauge(s->node->mx, "aims_svc_queue_depth", s->labels,
                                 (double)atomic_load_explicit(&s->queued, memory_order_relaxed));
}

void aimsi_service_reject(aims_service *s, aims_status st, aimsi_local_done done, void *ctx,
                          const char *text)
{
    if (st == AIMS_E_OVERLOADED || st == AIMS_E_TIMEOUT) {
        atomic_fetch_add_explicit(&s->n_rej, 1, memory_order_relaxed);
        (void)aims_metrics_count(s->node->mx, "aims_svc_rejected_total", s->labels, 1);
    }
    done(ctx, st, NULL, text);
}

/* Wake drains waiting for this service to go idle. */
void aimsi_service_poke_idle(aims_service *s)
{
    if (atomic_load(&s->state) == AIMSI_SVC_CLOSING) {
        pthread_mutex_lock(&s->node->lock);
        pthread_cond_broadcast(&s->node->idle_cond);
        pthread_mutex_unlock(&s->node->lock);
    }
}

/* ---- dispatch ------------------------------------------------------------------ */

static void run_inline(aims_service *s, const char *method, const aims_msg *req,
                       uint64_t deadline_ns, uint64_t t0, aimsi_local_done done, void *ctx,
                       const _Atomic int *cancel, const char *caller)
{
    aims_msg *reply = spare_take(s);
    if (reply == NULL) {
        atomic_fetch_sub(&s->inflight, 1);
        aimsi_service_reject(s, AIMS_E_NOMEM, done, ctx, "out of memory for the reply message");
        return;
    }
    note_accept(s);
    aimsi_work w = {method, req, reply, deadline_ns, AIMS_OK, cancel, caller};
    aimsi_work *const item = &w;
    s->kind->run(s->impl, &item, 1);
    const uint64_t t1 = aimsi_now_ns();
    /* Release the slot before the completion: the caller may chain another call. */
    atomic_fetch_sub(&s->inflight, 1);
    aimsi_service_note_run(s, t1 - t0, 1);
    atomic_fetch_add_explicit(&s->n_batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->n_rows, 1, memory_order_relaxed);
    aimsi_service_note_done(s, w.status, t1 - t0);
    done(ctx, w.status, reply, w.status == AIMS_OK ? "" : aims_msg_error(reply));
    spare_put(s, reply);
    if (atomic_load_explicit(&s->queued, memory_order_relaxed) > 0) {
        /* A worker may be waiting for the slot this call held. */
        pthread_mutex_lock(&s->node->lock);
        pthread_cond_broadcast(&s->node->work_cond);
        pthread_mutex_unlock(&s->node->lock);
    }
    aimsi_service_poke_idle(s);
    aimsi_svc_tl_clock.clock_out = t1; /* the next frame's "now" (aimsi_node.h) */
}

/* The retry hint: time for the queue to drain below its cap. */
static void overload_text(const aims_service *s, int64_t q, char *text, size_t cap)
{
    const uint64_t ewma = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
    /* In rows (svc_admit.c): the queue's rows, and the cap in rows of its mean request. */
    const int64_t rows = atomic_load_explicit(&s->queued_rows, memory_order_relaxed);
    const int64_t per_item = q > 0 && rows > q ? rows / q : 1;
    const uint64_t ms =
        aimsi_admit_hint_ms(s, rows, wait_estimate(s, (s->p_queue_cap - 1) * per_item) - ewma);
    snprintf(text, cap,
             "service %s overloaded: queue full (%" PRId64 " waiting); retry after %" PRIu64
             " ms",
             s->name, q, ms);
}

void aimsi_service_free_item(aimsi_qitem *it)
{
    aimsi_msg_fini(&it->req);
    aimsi_msg_fini(&it->reply);
    aimsi_free(it);
}

/* The queue item's request: a deep copy, or -- when the caller keeps req
 * alive until done has returned (AIMSI_REQ_KEPT) -- descriptors borrowing its
 * tensors (no byte copied). */
static aims_status item_req(aims_msg *dst, const aims_msg *req, int kept)
{
    if (!kept) {
        return aimsi_msg_copy(dst, req);
    }
    for (size_t i = 0; i < req->n; i++) {
        const aimsi_mtensor *t = &req->t[i];
        const aims_status rc = aims_msg_add(dst, t->name, (aims_dtype)t->dtype, t->dims,
                                            t->ndim, t->data, AIMS_MSG_BORROW);
        if (rc != AIMS_OK) {
            aims_msg_clear(dst);
            return rc;
        }
    }
    return AIMS_OK;
}

static void enqueue(aims_service *s, const char *method, const aims_msg *req,
                    uint64_t deadline_ns, uint64_t t0, aimsi_local_done done, void *ctx,
                    const _Atomic int *cancel, const char *caller, int kept)
{
    char text[256];
    const size_t mlen = strlen(method);
    if (mlen > AIMSI_FRAME_MAX_METHOD) {
        done(ctx, AIMS_E_INVAL, NULL, "method name longer than 64 bytes");
        return;
    }
    /* Racy pre-check: under overload, refuse before paying for the copy. */
    const int64_t q0 = atomic_load_explicit(&s->queued, memory_order_relaxed);
    if (q0 >= s->p_queue_cap) {
        overload_text(s, q0, text, sizeof(text));
        aimsi_service_reject(s, AIMS_E_OVERLOADED, done, ctx, text);
        return;
    }
    aimsi_qitem *it = aimsi_malloc(sizeof(*it));
    if (it == NULL) {
        aimsi_service_reject(s, AIMS_E_NOMEM, done, ctx, "out of memory queueing the request");
        return;
    }
    it->next = NULL;
    aimsi_msg_init(&it->req);
    aimsi_msg_init(&it->reply);
    memcpy(it->method, method, mlen + 1);
    const aims_status cst = req != NULL ? item_req(&it->req, req, kept) : AIMS_OK;
    if (cst != AIMS_OK) {
        aimsi_service_free_item(it);
        aimsi_service_reject(s, cst, done, ctx, "out of memory copying the request");
        return;
    }
    it->w.method = it->method;
    it->w.req = &it->req;
    it->w.reply = &it->reply;
    it->w.deadline_ns = deadline_ns;
    it->w.status = AIMS_OK;
    it->w.cancel = cancel;
    it->w.caller = caller; /* lives in the requester's record until done runs */
    it->t_enq = t0;
    it->rows = 1;
    if (s->kind->batching && s->kind->rows != NULL) {
        const int64_t r = s->kind->rows(&it->w);
        it->rows = r > 1 ? r : 1;
    }
    it->done = done;
    it->ctx = ctx;

    aims_status st = AIMS_OK;
    aims_node *n = s->node;
    pthread_mutex_lock(&n->lock);
    const int64_t q = atomic_load(&s->queued);
    if (atomic_load(&s->state) != AIMSI_SVC_RUNNING) {
        st = AIMS_E_CLOSED;
        snprintf(text, sizeof(text), "service %s is stopping", s->name);
    } else if (q >= s->p_queue_cap) {
        st = AIMS_E_OVERLOADED;
        overload_text(s, q, text, sizeof(text));
    } else {
        st = aimsi_admit_check(s, atomic_load(&s->queued_rows), it->rows, t0, deadline_ns, text,
                               sizeof(text));
        if (st == AIMS_OK) {
            aimsi_admit_push(s, it, t0);
            pthread_cond_broadcast(&n->work_cond);
        }
    }
    pthread_mutex_unlock(&n->lock);
    if (st != AIMS_OK) {
        aimsi_service_free_item(it);
        aimsi_service_reject(s, st, done, ctx, text);
        return;
    }
    note_accept(s);
    aimsi_service_note_depth(s);
}

/* Built-in methods every service answers ("$" is not a valid method start for
 * kinds): "$ping" (empty reply: liveness probes) and "$stats" (the counters of
 * aims_service_get_stat() as f64 scalars, so a host can read the utilisation of a
 * replica in another process). They run on the caller's thread, never queue. */
static int builtin_method(aims_service *s, const char *method, aimsi_local_done done, void *ctx)
{
    if (method[0] != '$') {
        return 0;
    }
    aims_msg reply;
    aimsi_msg_init(&reply);
    aims_status st = AIMS_OK;
    if (strcmp(method, "$stats") == 0) {
        static const struct {
            const char *name;
            aims_service_stat stat;
        } k_stats[] = {{"requests", AIMS_SERVICE_STAT_REQUESTS}, {"errors", AIMS_SERVICE_STAT_ERRORS},
                       {"rejected", AIMS_SERVICE_STAT_REJECTED}, {"inflight", AIMS_SERVICE_STAT_INFLIGHT},
                       {"queued", AIMS_SERVICE_STAT_QUEUED},     {"batches", AIMS_SERVICE_STAT_BATCHES},
                       {"batch_rows", AIMS_SERVICE_STAT_BATCH_ROWS}, {"busy_ns", AIMS_SERVICE_STAT_BUSY_NS},
                       {"p50_ns", AIMS_SERVICE_STAT_P50_NS},     {"p99_ns", AIMS_SERVICE_STAT_P99_NS}};
        for (size_t i = 0; st == AIMS_OK && i < sizeof(k_stats) / sizeof(k_stats[0]); i++) {
            double v = 0.0;
            st = aims_service_get_stat(s, k_stats[i].stat, &v);
            const int64_t iv = (int64_t)v;
            if (st == AIMS_OK) {
                st = aims_msg_add(&reply, k_stats[i].name, AIMS_DT_I64, NULL, 0, &iv, 0);
            }
        }
    } else if (strcmp(method, "$ping") != 0) {
        char text[160];
        snprintf(text, sizeof(text), "no built-in method '%.64s' (known: $ping, $stats)",
                 method);
        done(ctx, AIMS_E_NOTFOUND, NULL, text);
        aimsi_msg_fini(&reply);
        return 1;
    }
    if (st == AIMS_OK) {
        done(ctx, AIMS_OK, &reply, "");
    } else {
        done(ctx, st, NULL, aims_errmsg());
    }
    aimsi_msg_fini(&reply);
    return 1;
}

_Thread_local aimsi_svc_clock aimsi_svc_tl_clock;

void aimsi_svc_dispatch(aims_service *s, const char *method, const aims_msg *req,
                        uint64_t deadline_ns, int allow_inline, aimsi_local_done done, void *ctx,
                        const _Atomic int *cancel, const char *caller)
{
    char text[200];
    const int kept = (allow_inline & AIMSI_REQ_KEPT) != 0;
    allow_inline &= ~AIMSI_REQ_KEPT;
    /* A reading node.c handed over (the end of the previous inline run of the
     * same read burst), or the clock. Taken once: a dispatch nested in a
     * handler reads the clock. */
    uint64_t t0 = aimsi_svc_tl_clock.clock_in;
    aimsi_svc_tl_clock.clock_in = 0;
    if (t0 == 0) {
        t0 = aimsi_now_ns();
    }
    if (builtin_method(s, method, done, ctx)) {
        return;
    }
    if (atomic_load(&s->state) != AIMSI_SVC_RUNNING) {
        snprintf(text, sizeof(text), "service %s is not running", s->name);
        done(ctx, AIMS_E_CLOSED, NULL, text);
        return;
    }
    if (deadline_ns != 0 && t0 >= deadline_ns) {
        snprintf(text, sizeof(text), "deadline passed before service %s could run the call",
                 s->name);
        aimsi_service_reject(s, AIMS_E_TIMEOUT, done, ctx, text);
        return;
    }
    const int cheap_enough =
        allow_inline == AIMSI_INLINE_IF_CHEAP_ROW
            ? atomic_load_explicit(&s->row_ewma_ns, memory_order_relaxed) <= AIMSI_INLINE_CHEAP_NS
            : allow_inline != AIMSI_INLINE_IF_CHEAP ||
                  atomic_load_explicit(&s->ewma_ns, memory_order_relaxed) <=
                      AIMSI_INLINE_CHEAP_NS;
    if (allow_inline != AIMSI_INLINE_NO && cheap_enough && s->can_inline &&
        atomic_load_explicit(&s->queued, memory_order_relaxed) == 0 &&
        aimsi_service_slot_try_acquire(s)) {
        if (atomic_load(&s->state) != AIMSI_SVC_RUNNING) {
            atomic_fetch_sub(&s->inflight, 1);
            aimsi_service_poke_idle(s);
            snprintf(text, sizeof(text), "service %s is stopping", s->name);
            done(ctx, AIMS_E_CLOSED, NULL, text);
            return;
        }
        run_inline(s, method, req, deadline_ns, t0, done, ctx, cancel, caller);
        return;
    }
    enqueue(s, method, req, deadline_ns, t0, done, ctx, cancel, caller, kept);
}

