/*
 * service.c -- services on a node: names and lookup, adding a service (the
 * user-handler kind among them), parameters, statistics, freeing. Dispatch
 * (inline or queued, rejections, slots, the spare replies) lives in
 * svc_dispatch.c, start and the draining stop in svc_drain.c, the node's
 * worker threads in svc_worker.c, registry membership (register,
 * heartbeat, deregister) in svc_member.c; aimsi_service.h is their private
 * header.
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
 * Threads. Public functions are safe from any thread except as the public
 * header says (set_param before start). Services live until the node is
 * destroyed; a stopped service may be started again.
 */

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_local.h"
#include "aimsi_svckind.h"
#include "aimsi_node.h"
#include "aimsi_service.h"
#include "aimsi_ident.h"
#include "aimsi_wire.h"

#define COMPRESS_NEVER 0u

/* ---- names ------------------------------------------------------------------ */

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
