/*
 * service.c -- services on a node: bounded queues, concurrency limits,
 * deadlines, dynamic batching, draining, the user-handler kind, statistics.
 * The node's worker threads live in svc_worker.c, registry membership
 * (register, heartbeat, deregister) in svc_member.c; aimsi_service.h is
 * their private header.
 *
 * Shape. A service is a kind (a vtable: handler, infer, preprocess, train)
 * plus the machinery every kind shares. A request reaches a service through
 * aimsi_svc_dispatch from one of three places: an inproc client call
 * (aimsi_node_call_local, on the client's thread), a frame from tcp/ipc (on
 * the transport's I/O thread), or nothing else. Dispatch decides between:
 *
 *   inline  the kind allows it, AIMS_SERVICE_INLINE is 1, nothing is queued
 *           and a concurrency slot is free (an atomic compare-and-swap): the
 *           kind runs right here, on the caller's thread, with the caller's
 *           borrowed request. No copy, no lock, no thread hand-off -- the
 *           hand-off (a cross-core wake-up, ~50 us on this VM) is what the
 *           inproc latency goal cannot afford. The reply message comes from a
 *           small lock-free spare list, so a warm inline call allocates only
 *           what the handler itself allocates.
 *   queued  the request is deep-copied into a queue item and appended to the
 *           service's FIFO (bounded by AIMS_SERVICE_QUEUE_CAP); a node worker
 *           takes it when the service has a free slot. An inproc async call
 *           whose client holds its own request copy until done has returned
 *           (AIMSI_REQ_KEPT, aimsi_local.h) is queued borrowing it instead.
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
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../codec/aimsi_frame.h"
#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_local.h"
#include "aimsi_svckind.h"
#include "aimsi_node.h"
#include "transport/aimsi_transport.h"
#include "aimsi_service.h"
#include "registry/aimsi_regbk.h"
#include "aimsi_ident.h"
#include "../orch/aimsi_orch.h"
#include "aimsi_wire.h"

#define COMPRESS_NEVER 0u

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

static int name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '/' || c == '-' || c == '@';
}

/* Registry name rules: 1..128 bytes of [A-Za-z0-9_.@/-], at most one '@',
 * neither first nor last. Returns the length before '@' in *base_len. */
static int service_name_ok(const char *name, size_t *base_len)
{
    const size_t len = strnlen(name, AIMSI_FRAME_MAX_SERVICE + 1);
    if (len == 0 || len > AIMSI_FRAME_MAX_SERVICE) {
        return 0;
    }
    size_t at = len;
    for (size_t i = 0; i < len; i++) {
        if (!name_char_ok(name[i])) {
            return 0;
        }
        if (name[i] == '@') {
            if (at != len || i == 0 || i + 1 == len) {
                return 0;
            }
            at = i;
        }
    }
    *base_len = at;
    return 1;
}

/* ---- lookup ------------------------------------------------------------------- */

/* Exact "name@version" / "name" match first; else "name" matches the first
 * service whose base name is it (the single or first-added version). Lock-free:
 * the array is append-only and published with a release store of n_svc. */
aims_service *aimsi_svc_lookup(aims_node *n, const char *name)
{
    const size_t cnt = atomic_load_explicit(&n->n_svc, memory_order_acquire);
    aims_service *by_base = NULL;
    const size_t len = strlen(name);
    for (size_t i = 0; i < cnt; i++) {
        aims_service *s = atomic_load_explicit(&n->svc[i], memory_order_relaxed);
        if (strcmp(s->name, name) == 0) {
            return s;
        }
        if (by_base == NULL && s->base_len == len && s->base_len < strlen(s->name) &&
            memcmp(s->name, name, len) == 0) {
            by_base = s;
        }
    }
    return by_base;
}

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

/* ---- the user-handler kind ---------------------------------------------------------- */

typedef struct handler_impl {
    aims_handler_fn fn;
    void *user;
    const aims_node *node; /* names in-process callers (aimsi_ident_host) */
} handler_impl;

static void handler_run(void *impl, aimsi_work *const *items, size_t n)
{
    const handler_impl *h = impl;
    for (size_t i = 0; i < n; i++) {
        aimsi_work *w = items[i];
        const char *who = w->caller != NULL ? w->caller : aimsi_ident_host(h->node);
        const aimsi_cancel_cur prev = aimsi_cancel_enter(w->req, w->cancel, who); /* svc_cancel.c */
        const uint64_t dl = aimsi_deadline_enter(w->deadline_ns); /* passed on: wire.c */
        w->status = h->fn(h->user, w->method, w->req, w->reply, w->deadline_ns);
        aimsi_deadline_leave(dl);
        aimsi_cancel_leave(prev);
    }
}

static void handler_destroy(void *impl)
{
    aimsi_free(impl);
}

static const aimsi_svc_kind handler_kind = {"handler", 0, 0, handler_run, NULL, handler_destroy,
                                           NULL};

/* ---- adding services --------------------------------------------------------------- */

static void drop_impl(const aimsi_svc_kind *kind, void *impl)
{
    if (kind != NULL && kind->destroy != NULL && impl != NULL) {
        kind->destroy(impl);
    }
}

/* Where each AIMS_SERVICE_* parameter lives (core/params.c does the typed access). */
static const aimsi_param_field k_service_fields[] = {
    {AIMS_SERVICE_CONCURRENCY, AIMSI_FIELD_I64, offsetof(struct aims_service, p_concurrency)},
    {AIMS_SERVICE_QUEUE_CAP, AIMSI_FIELD_I64, offsetof(struct aims_service, p_queue_cap)},
    {AIMS_SERVICE_BATCH_MAX, AIMSI_FIELD_I64, offsetof(struct aims_service, p_batch_max)},
    {AIMS_SERVICE_BATCH_DELAY_US, AIMSI_FIELD_I64,
     offsetof(struct aims_service, p_batch_delay_us)},
    {AIMS_SERVICE_INLINE, AIMSI_FIELD_I64, offsetof(struct aims_service, p_inline)},
    {AIMS_SERVICE_WEIGHT, AIMSI_FIELD_I64, offsetof(struct aims_service, p_weight)},
    {AIMS_SERVICE_CLIMIT_TOLERANCE_PCT, AIMSI_FIELD_I64,
     offsetof(struct aims_service, p_climit_tol_pct)},
    {AIMS_SERVICE_LIFO, AIMSI_FIELD_I64, offsetof(struct aims_service, p_lifo)},
};
static const aimsi_param_map k_service_map = {720, 739, k_service_fields,
                                              sizeof k_service_fields / sizeof k_service_fields[0]};

aims_status aimsi_service_add(aims_node *n, const char *name, const aimsi_svc_kind *kind,
                              void *impl, aims_service **out)
{
    size_t base_len = 0;
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || name == NULL || kind == NULL ||
        kind->run == NULL || out == NULL) {
        drop_impl(kind, impl);
        return AIMSI_MISUSE("node, name, kind (with run) and out are required");
    }
    if (!service_name_ok(name, &base_len)) {
        drop_impl(kind, impl);
        return aimsi_err(&n->obj, AIMS_E_INVAL,
                         "service name '%.140s': want 1..128 bytes of [A-Za-z0-9_.@/-], "
                         "at most one '@', not first or last",
                         name);
    }
    aims_service *s = aimsi_calloc(1, sizeof(*s));
    if (s == NULL) {
        drop_impl(kind, impl);
        return aimsi_err(&n->obj, AIMS_E_NOMEM, "service %s: out of memory", name);
    }
    aimsi_obj_init(&s->obj, AIMSI_MAGIC_SERVICE);
    s->node = n;
    strcpy(s->name, name);
    s->base_len = base_len;
    snprintf(s->labels, sizeof(s->labels), "service=\"%s\",node=\"%s\"", name, n->name);
    s->kind = kind;
    s->impl = impl;
    aimsi_param_set_defaults(&k_service_map, s);
    s->limit = 1;
    atomic_init(&s->state, AIMSI_SVC_NEW);
    aimsi_climit_init(&s->climit);
    pthread_mutex_init(&s->reg_lock, NULL);

    aims_status st = AIMS_OK;
    pthread_mutex_lock(&n->lock);
    const size_t cnt = atomic_load(&n->n_svc);
    if (atomic_load(&n->closing)) {
        st = aimsi_err(&n->obj, AIMS_E_STATE, "node %s is being destroyed", n->name);
    } else if (cnt >= AIMSI_NODE_MAX_SERVICES) {
        st = aimsi_err(&n->obj, AIMS_E_RANGE, "node %s: at most %d services", n->name,
                       AIMSI_NODE_MAX_SERVICES);
    } else {
        for (size_t i = 0; i < cnt; i++) {
            if (strcmp(atomic_load(&n->svc[i])->name, name) == 0) {
                st = aimsi_err(&n->obj, AIMS_E_EXISTS, "node %s already has a service %s",
                               n->name, name);
                break;
            }
        }
    }
    if (st == AIMS_OK) {
        atomic_store_explicit(&n->svc[cnt], s, memory_order_relaxed);
        atomic_store_explicit(&n->n_svc, cnt + 1, memory_order_release);
    }
    pthread_mutex_unlock(&n->lock);
    if (st != AIMS_OK) {
        s->impl = NULL;
        aimsi_svc_destroy(s);
        drop_impl(kind, impl);
        return st;
    }
    *out = s;
    return AIMS_OK;
}

aims_status aims_service_add_handler(aims_node *n, const char *name, aims_handler_fn fn,
                                     void *user, aims_service **out)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || name == NULL || fn == NULL || out == NULL) {
        return AIMSI_MISUSE("node, name, fn and out are required");
    }
    handler_impl *h = aimsi_malloc(sizeof(*h));
    if (h == NULL) {
        return aimsi_err(&n->obj, AIMS_E_NOMEM, "service %s: out of memory", name);
    }
    h->fn = fn;
    h->user = user;
    h->node = n;
    return aimsi_service_add(n, name, &handler_kind, h, out);
}

void *aimsi_service_impl(aims_service *s, const aimsi_svc_kind *kind)
{
    if (!aimsi_obj_ok(s, AIMSI_MAGIC_SERVICE) || s->kind != kind) {
        return NULL;
    }
    return s->impl;
}

const char *aimsi_service_name(const aims_service *s)
{
    return s != NULL ? s->name : "";
}

/* Frees the service (node destroy, after it stopped and no caller can reach it). */
void aimsi_svc_destroy(aims_service *s)
{
    if (s == NULL) {
        return;
    }
    drop_impl(s->kind, s->impl);
    for (size_t i = 0; i < AIMSI_SVC_SPARES; i++) {
        aims_msg_destroy(atomic_load(&s->spare[i]));
    }
    aimsi_qitem *it = s->head;
    while (it != NULL) {
        aimsi_qitem *next = it->next;
        aimsi_service_free_item(it);
        it = next;
    }
    pthread_mutex_destroy(&s->reg_lock);
    aimsi_obj_kill(&s->obj);
    aimsi_free(s);
}

/* ---- parameters -------------------------------------------------------------------- */

aims_status aims_service_set_param_i64(aims_service *s, aims_param param, int64_t value)
{
    const aimsi_param_field *f = NULL;
    AIMSI_SET_I64_OPEN(s, AIMSI_MAGIC_SERVICE, "service", &k_service_map, param, value, &f);
    if (atomic_load(&s->state) != AIMSI_SVC_NEW) {
        return aimsi_err(&s->obj, AIMS_E_STATE, "service %s: set parameters before start",
                         s->name);
    }
    aimsi_param_store(s, f, value, 0.0);
    return AIMS_OK;
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

/* ---- statistics -------------------------------------------------------------------- */

aims_status aims_service_get_stat(aims_service *s, aims_service_stat stat, double *out)
{
    if (!aimsi_obj_ok(s, AIMSI_MAGIC_SERVICE) || out == NULL) {
        return AIMSI_MISUSE("service and out are required");
    }
    double v = 0.0;
    switch (stat) {
    case AIMS_SERVICE_STAT_REQUESTS:
        v = (double)atomic_load(&s->n_req);
        break;
    case AIMS_SERVICE_STAT_ERRORS:
        v = (double)atomic_load(&s->n_err);
        break;
    case AIMS_SERVICE_STAT_REJECTED:
        v = (double)atomic_load(&s->n_rej);
        break;
    case AIMS_SERVICE_STAT_INFLIGHT:
        v = (double)atomic_load(&s->inflight);
        break;
    case AIMS_SERVICE_STAT_QUEUED:
        v = (double)atomic_load(&s->queued);
        break;
    case AIMS_SERVICE_STAT_BATCHES:
        v = (double)atomic_load(&s->n_batches);
        break;
    case AIMS_SERVICE_STAT_BATCH_ROWS:
        v = (double)atomic_load(&s->n_rows);
        break;
    case AIMS_SERVICE_STAT_BUSY_NS:
        v = (double)atomic_load(&s->busy_ns);
        break;
    case AIMS_SERVICE_STAT_P50_NS:
    case AIMS_SERVICE_STAT_P99_NS: {
        const double q = stat == AIMS_SERVICE_STAT_P50_NS ? 0.5 : 0.99;
        const aims_status st =
            aims_metrics_quantile(s->node->mx, "aims_svc_latency_seconds", s->labels, q, &v);
        if (st == AIMS_E_NOTFOUND) {
            v = 0.0; /* no observation yet */
        } else if (st != AIMS_OK) {
            return aimsi_err_adopt(&s->obj, st);
        }
        break;
    }
    default:
        return aimsi_err(&s->obj, AIMS_E_INVAL, "service %s: unknown statistic %d", s->name,
                         (int)stat);
    }
    *out = v;
    return AIMS_OK;
}
