/*
 * client.c -- aims_client: resolve a service name, pick an instance, send the
 * request over the instance's transport, await the reply; deadlines, retries
 * within a budget, per-service balancing and passive health. This file holds
 * the public API (create, parameters, registry, calls, destroy) and the
 * per-thread call error text; the parts live next to it:
 * client_send.c (pendings, endpoints, connections, sending one attempt),
 * client_pick.c (service views, picking, the retry budget, outcomes),
 * client_call.c (sync and async call drivers, the client thread),
 * client_try.c (per-try timeouts, retry hints); aimsi_client.h holds the
 * shared types.
 *
 * Shape. One mutex (c->mu) guards the client's small shared state: the
 * per-service views, the endpoints (one per address), the list of calls in
 * flight ("pendings") with an id hash for the stream transports, the retry
 * token bucket. It is held for a few hundred ns per call (view check + pick +
 * link) and never across a transport, node, handler or user callback.
 *
 * Errors. Call failures are recorded thread-locally (aimsi_err(NULL, ...) plus
 * a per-thread copy that aims_client_errmsg returns when the last failing call
 * on this thread was on that client), so concurrent callers never race on the
 * handle's text; configuration calls use the handle's text as usual.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimsi_client.h"
#include "aimsi_msg.h"
#include "aimsi_local.h"
#include "aimsi_wire.h"
#include "registry/aimsi_regbk.h"
#include "../orch/aimsi_orch.h"

static _Thread_local char t_call_err[AIMSI_ERRMSG_CAP];
static _Thread_local const aims_client *t_call_owner;

/* Record a call failure: thread-local text (aims_errmsg and aims_client_errmsg). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
aims_status aimsi_client_call_err(const aims_client *c, aims_status code, const char *fmt, ...)
{
    char text[AIMSI_ERRMSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    aimsi_err(NULL, code, "%s", text);
    memcpy(t_call_err, text, sizeof t_call_err);
    t_call_owner = c;
    return code;
}

/* ---- public API ----------------------------------------------------------------------------- */

#define CLIENT_OK(c) aimsi_obj_ok((c), AIMSI_MAGIC_CLIENT)

static void client_free(aims_client *c)
{
    for (cl_svc *s = c->svcs; s != NULL;) {
        cl_svc *nx = s->next;
        aimsi_client_svc_free(s);
        s = nx;
    }
    for (cl_ep *e = c->eps; e != NULL;) {
        cl_ep *nx = e->next;
        if (e->node != NULL) {
            aimsi_node_unref(e->node);
        }
        for (cl_grave *g = e->graves; g != NULL;) {
            cl_grave *gn = g->next;
            aimsi_node_unref(g->node);
            aimsi_free(g);
            g = gn;
        }
        pthread_mutex_destroy(&e->dial_mu);
        aimsi_free(e);
        e = nx;
    }
    aimsi_ttable_fini(&c->tt);
    aimsi_client_token_drop(c->token);
    aims_registry_destroy(c->reg_owned);
    aimsi_metrics_destroy_owned(c->mx);
    aimsi_client_pool_fini(&c->pool); /* every call, pending and copy was given back */
    aimsi_client_pool_fini(&c->mpool);
    aimsi_client_pool_fini(&c->fpool); /* after the transports: they give frames back */
    pthread_cond_destroy(&c->cv);
    pthread_condattr_destroy(&c->cattr);
    pthread_mutex_destroy(&c->mu);
    aimsi_obj_kill(&c->obj);
    aimsi_free(c);
}

AIMS_API aims_status aims_client_create(aims_client **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_client *c = aimsi_calloc(1, sizeof(*c));
    if (c == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_client_create: out of memory");
    }
    aimsi_obj_init(&c->obj, AIMSI_MAGIC_CLIENT);
    aimsi_mutex_init_spin(&c->mu); /* aimsi_transport.h: caller and I/O thread meet on it */
    aimsi_client_pool_init(&c->pool, CL_POOL_BLOCK, CL_POOL_KEEP);
    aimsi_client_pool_init(&c->mpool, CL_MPOOL_BLOCK, CL_MPOOL_KEEP);
    aimsi_client_pool_init(&c->fpool, CL_FRAME_BLOCK + AIMSI_FRAME_LINK, CL_FPOOL_KEEP);
    pthread_condattr_init(&c->cattr);
    pthread_condattr_setclock(&c->cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &c->cattr);
    c->plist.next = c->plist.prev = &c->plist;
    c->timeout_ms = (int64_t)aimsi_param_default(AIMS_CLIENT_TIMEOUT_MS);
    c->retry_budget = aimsi_param_default(AIMS_CLIENT_RETRY_BUDGET);
    c->retry_min = (int64_t)aimsi_param_default(AIMS_CLIENT_RETRY_MIN);
    c->max_attempts = (int64_t)aimsi_param_default(AIMS_CLIENT_MAX_ATTEMPTS);
    c->lb_policy = (int64_t)aimsi_param_default(AIMS_CLIENT_LB_POLICY);
    c->max_pending = (int64_t)aimsi_param_default(AIMS_CLIENT_MAX_PENDING);
    c->sync_ms = (int64_t)aimsi_param_default(AIMS_CLIENT_SYNC_MS);
    c->backoff_ms = (int64_t)aimsi_param_default(AIMS_CLIENT_BACKOFF_MS);
    c->hedge_ms = (int64_t)aimsi_param_default(AIMS_CLIENT_HEDGE_MS);
    c->tokens = (double)c->retry_min;
    c->seed = aimsi_now_ns() ^ (uint64_t)(uintptr_t)c;
    c->max_frame = (uint64_t)aimsi_param_default(AIMS_CLIENT_MAX_FRAME);
    const aims_transport_hooks hooks = {c, NULL, aimsi_client_on_frame, aimsi_client_on_close};
    aimsi_ttable_init(&c->tt, &hooks, c->max_frame);
    if (aimsi_metrics_create_owned(&c->mx) != AIMS_OK) {
        client_free(c);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_client_create: out of memory");
    }
    if (pthread_create(&c->thread, NULL, aimsi_client_thread, c) != 0) {
        client_free(c);
        return aimsi_err(NULL, AIMS_E_BACKEND, "aims_client_create: cannot start its thread");
    }
    c->thread_started = 1;
    *out = c;
    return AIMS_OK;
}

AIMS_API void aims_client_destroy(aims_client *c)
{
    if (!CLIENT_OK(c)) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->closing = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->thread_started) {
        pthread_join(c->thread, NULL);
    }
    if (c->reg_stop != NULL) {
        c->reg_stop(c->reg_ctx);
    }
    /* Close connections: afterwards no transport hook runs. */
    for (cl_ep *e = c->eps; e != NULL; e = e->next) {
        pthread_mutex_lock(&c->mu);
        cl_conn *cc = e->conn;
        int last = 0;
        if (cc != NULL) {
            cc->dead = 1;
            e->conn = NULL;
            last = --cc->refs == 0;
        }
        pthread_mutex_unlock(&c->mu);
        if (last) {
            aimsi_client_conn_close(cc);
        }
    }
    /* Fail what is still in flight, then queued retries. */
    cl_pending *dead = NULL;
    pthread_mutex_lock(&c->mu);
    while (c->plist.next != &c->plist) {
        cl_pending *p = c->plist.next;
        atomic_store(&p->cancel, 1); /* inproc: the node drops or flags it */
        aimsi_client_unlink_locked(c, p);
        p->hnext = dead;
        dead = p;
    }
    cl_call *rq = c->rq_head;
    c->rq_head = c->rq_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (dead != NULL) {
        cl_pending *p = dead;
        dead = p->hnext;
        aimsi_client_deliver(p, AIMS_E_CLOSED, NULL, "client destroyed");
        aimsi_client_pending_unref(p);
    }
    while (rq != NULL) {
        cl_call *k = rq;
        rq = k->qnext;
        aimsi_client_finish_call(c, k, AIMS_E_CLOSED, NULL, "client destroyed");
    }
    /* Nodes may still hold pendings (queued work): wait for their completions. */
    pthread_mutex_lock(&c->mu);
    while (c->node_refs > 0) {
        pthread_cond_wait(&c->cv, &c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    aimsi_client_ahedge_fini(c); /* every copy ended above: drop the timers' references */
    client_free(c);
}

AIMS_API aims_status aims_client_set_param_i64(aims_client *c, aims_param param, int64_t value)
{
    if (!CLIENT_OK(c)) {
        return AIMSI_MISUSE("not a client");
    }
    AIMSI_TRY(aimsi_param_check(&c->obj, param, 740, 759, AIMS_PARAM_TYPE_I64, (double)value));
    pthread_mutex_lock(&c->mu);
    if (param == AIMS_CLIENT_MAX_FRAME) {
        /* Transport instances take the cap when they are created (first call
         * on tcp/ipc); after that the limit is fixed. */
        int created = 0;
        for (size_t i = 0; i < c->tt.n; i++) {
            created |= c->tt.slot[i].inst != NULL;
        }
        if (!created) {
            c->max_frame = (uint64_t)value;
            c->tt.max_frame = (uint64_t)value;
        }
        pthread_mutex_unlock(&c->mu);
        return created ? aimsi_err(&c->obj, AIMS_E_STATE, "client_max_frame must be set before "
                                   "the first tcp/ipc call")
                       : AIMS_OK;
    }
    switch (param) {
    case AIMS_CLIENT_TIMEOUT_MS: c->timeout_ms = value; break;
    case AIMS_CLIENT_RETRY_MIN: c->retry_min = value; break;
    case AIMS_CLIENT_MAX_ATTEMPTS: c->max_attempts = value; break;
    case AIMS_CLIENT_LB_POLICY: c->lb_policy = value; break;
    case AIMS_CLIENT_MAX_PENDING: c->max_pending = value; break;
    case AIMS_CLIENT_SYNC_MS: c->sync_ms = value; break;
    case AIMS_CLIENT_BACKOFF_MS: c->backoff_ms = value; break;
    case AIMS_CLIENT_HEDGE_MS: c->hedge_ms = value; break;
    default: break;
    }
    if (param == AIMS_CLIENT_RETRY_MIN && c->tokens > aimsi_client_bucket_cap(c)) {
        c->tokens = aimsi_client_bucket_cap(c);
    }
    pthread_mutex_unlock(&c->mu);
    return AIMS_OK;
}

AIMS_API aims_status aims_client_set_param_f64(aims_client *c, aims_param param, double value)
{
    if (!CLIENT_OK(c)) {
        return AIMSI_MISUSE("not a client");
    }
    AIMSI_TRY(aimsi_param_check(&c->obj, param, 740, 759, AIMS_PARAM_TYPE_F64, value));
    pthread_mutex_lock(&c->mu);
    if (param == AIMS_CLIENT_RETRY_BUDGET) {
        c->retry_budget = value;
    }
    pthread_mutex_unlock(&c->mu);
    return AIMS_OK;
}

AIMS_API aims_status aims_client_add_transport(aims_client *c, const aims_transport *t)
{
    if (!CLIENT_OK(c) || t == NULL) {
        return AIMSI_MISUSE("client or transport is NULL");
    }
    pthread_mutex_lock(&c->mu);
    const aims_status rc = aimsi_ttable_add(&c->tt, t);
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&c->obj, rc);
    }
    return AIMS_OK;
}

/* Point the client at registry r; owned (with its stop hook) when adopted
 * from aims_client_join. Refused once a remote registry was joined. */
static aims_status set_registry(aims_client *c, aims_registry *r, int owned,
                                void (*stop)(void *ctx), void *ctx)
{
    if (!CLIENT_OK(c) || r == NULL) {
        return AIMSI_MISUSE("client or registry is NULL");
    }
    pthread_mutex_lock(&c->mu);
    const int busy = c->reg_owned != NULL;
    if (!busy) {
        c->reg = r;
        if (owned) {
            c->reg_owned = r;
            c->reg_stop = stop;
            c->reg_ctx = ctx;
        }
        for (cl_svc *s = c->svcs; s != NULL; s = s->next) {
            s->rev = UINT64_MAX; /* ids of another registry mean nothing */
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (busy) {
        return aimsi_err(&c->obj, AIMS_E_STATE, "the client already joined a remote registry");
    }
    return AIMS_OK;
}

AIMS_API aims_status aims_client_set_registry(aims_client *c, aims_registry *r)
{
    return set_registry(c, r, 0, NULL, NULL);
}

aims_status aimsi_client_adopt_registry(aims_client *c, aims_registry *r, void (*stop)(void *ctx),
                                        void *ctx)
{
    return set_registry(c, r, 1, stop, ctx);
}

int64_t aimsi_client_sync_ms(const aims_client *c)
{
    return CLIENT_OK(c) ? c->sync_ms : 0;
}

static aims_status check_call(const aims_client *c, const char *service, const char *method,
                              const aims_msg *req, int64_t timeout_ms)
{
    if (!CLIENT_OK(c) || service == NULL || method == NULL ||
        !aimsi_obj_ok(req, AIMSI_MAGIC_MSG)) {
        return aimsi_client_call_err(c, AIMS_E_MISUSE,
                                     "client call: client, service, method or req invalid");
    }
    const size_t sl = strnlen(service, AIMSI_FRAME_MAX_SERVICE + 1);
    const size_t ml = strnlen(method, AIMSI_FRAME_MAX_METHOD + 1);
    if (sl == 0 || sl > AIMSI_FRAME_MAX_SERVICE || ml > AIMSI_FRAME_MAX_METHOD) {
        return aimsi_client_call_err(c, AIMS_E_INVAL,
                                     "client call: service must be 1..%u bytes, method <= %u",
                                     AIMSI_FRAME_MAX_SERVICE, AIMSI_FRAME_MAX_METHOD);
    }
    if (timeout_ms < 0 || timeout_ms > 86400000) {
        return aimsi_client_call_err(c, AIMS_E_INVAL,
                                     "client call: timeout_ms %lld outside 0..86400000",
                                     (long long)timeout_ms);
    }
    return AIMS_OK;
}

static void call_init(const aims_client *c, cl_call *k, const char *service, const char *method,
                      const aims_msg *req, unsigned flags, int64_t timeout_ms)
{
    memset(k, 0, sizeof(*k));
    k->service = service;
    k->method = method;
    k->req = req;
    k->flags = flags;
    k->start_ns = aimsi_now_ns();
    k->deadline_ns = aimsi_deadline_cap( /* inside a handler: what its request has left */
        k->start_ns + aimsi_client_ms_to_ns(timeout_ms > 0 ? timeout_ms : c->timeout_ms));
}

AIMS_API aims_status aims_client_call(aims_client *c, const char *service, const char *method,
                                      const aims_msg *req, aims_msg *reply, unsigned flags,
                                      int64_t timeout_ms)
{
    AIMSI_TRY(check_call(c, service, method, req, timeout_ms));
    if (!aimsi_obj_ok(reply, AIMSI_MAGIC_MSG) || reply == req) {
        return aimsi_client_call_err(c, AIMS_E_MISUSE,
                                     "aims_client_call: reply is not a message (or is req)");
    }
    aims_msg_clear(reply);
    if ((flags & AIMS_CALL_IDEMPOTENT) != 0 && c->hedge_ms >= 0) {
        return aimsi_client_call_hedged(c, service, method, req, reply, flags, timeout_ms);
    }
    cl_call k;
    call_init(c, &k, service, method, req, flags, timeout_ms);
    return aimsi_client_call_sync(c, &k, reply);
}

AIMS_API aims_status aims_client_call_addr(aims_client *c, const char *address,
                                           const char *service, const char *method,
                                           const aims_msg *req, aims_msg *reply,
                                           int64_t timeout_ms)
{
    AIMSI_TRY(check_call(c, service, method, req, timeout_ms));
    if (!aimsi_obj_ok(reply, AIMSI_MAGIC_MSG) || reply == req || address == NULL) {
        return aimsi_client_call_err(c, AIMS_E_MISUSE,
                                     "aims_client_call_addr: address or reply invalid");
    }
    const size_t al = strnlen(address, AIMSI_URL_MAX + 1);
    if (al == 0 || al > AIMSI_URL_MAX || strstr(address, "://") == NULL) {
        return aimsi_client_call_err(
            c, AIMS_E_INVAL, "aims_client_call_addr: address '%.64s' is not a URL", address);
    }
    aims_msg_clear(reply);
    cl_call k;
    call_init(c, &k, service, method, req, 0, timeout_ms);
    k.addr = address;
    return aimsi_client_call_sync(c, &k, reply);
}

AIMS_API aims_status aims_client_call_async(aims_client *c, const char *service,
                                            const char *method, const aims_msg *req,
                                            unsigned flags, int64_t timeout_ms,
                                            aims_done_fn done, void *user)
{
    if ((flags & AIMS_CALL_IDEMPOTENT) != 0 && done != NULL &&
        check_call(c, service, method, req, timeout_ms) == AIMS_OK && c->hedge_ms >= 0) {
        return aimsi_client_async_hedged(c, service, method, req, flags, timeout_ms, done, user);
    }
    return aimsi_client_async_start(c, service, method, req, flags, timeout_ms, done, user,
                                    NULL);
}

/* An async call's own copy of its request, in a block of the client's mpool
 * (CL_MPOOL_BLOCK): when the tensors' bytes fit in CL_REQ_INLINE they are
 * copied behind the message, each 16-byte aligned, and the copy borrows them
 * -- no allocation per call, and nothing the I/O thread frees into the
 * caller's malloc arena when the call ends (client_pool.c says why that
 * matters). Bigger requests, or one with an error text, are deep-copied. */
static aims_status copy_request(aims_msg *dst, const aims_msg *src)
{
    size_t need = 0;
    for (size_t i = 0; i < src->n; i++) {
        need += (src->t[i].bytes + 15u) & ~(size_t)15u;
        if (need > CL_REQ_INLINE) {
            break;
        }
    }
    if (need > CL_REQ_INLINE || src->error != NULL) {
        return aimsi_msg_copy(dst, src);
    }
    unsigned char *room = (unsigned char *)(((uintptr_t)(dst + 1) + 15u) & ~(uintptr_t)15u);
    aims_msg_clear(dst);
    for (size_t i = 0; i < src->n; i++) {
        const aimsi_mtensor *t = &src->t[i];
        if (t->bytes > 0) {
            memcpy(room, t->data, t->bytes);
        }
        const aims_status rc = aims_msg_add(dst, t->name, (aims_dtype)t->dtype, t->dims,
                                            t->ndim, room, AIMS_MSG_BORROW);
        if (rc != AIMS_OK) {
            aims_msg_clear(dst);
            return rc;
        }
        room += (t->bytes + 15u) & ~(size_t)15u;
    }
    return AIMS_OK;
}

/* aims_client_call_async with options (handles, hedges: aimsi_client.h). */
aims_status aimsi_client_async_start(aims_client *c, const char *service, const char *method,
                                     const aims_msg *req, unsigned flags, int64_t timeout_ms,
                                     aims_done_fn done, void *user, const cl_start *opt)
{
    aims_status rc = check_call(c, service, method, req, timeout_ms);
    if (rc == AIMS_OK && done == NULL) {
        rc = aimsi_client_call_err(c, AIMS_E_MISUSE, "aims_client_call_async: done is NULL");
    }
    if (rc != AIMS_OK) {
        if (done != NULL) {
            done(user, rc, NULL, aims_errmsg());
        }
        return rc;
    }
    const size_t sl = strlen(service), ml = strlen(method);
    cl_call *k = aimsi_client_pool_get(&c->pool, sizeof(*k) + sl + ml + 2); /* zeroed */
    if (k == NULL) {
        rc = aimsi_client_call_err(c, AIMS_E_NOMEM, "aims_client_call_async: out of memory");
        done(user, rc, NULL, aims_errmsg());
        return rc;
    }
    char *names = (char *)(k + 1);
    memcpy(names, service, sl + 1);
    memcpy(names + sl + 1, method, ml + 1);
    call_init(c, k, names, names + sl + 1, req, flags, timeout_ms);
    k->done = done;
    k->user = user;
    if (opt != NULL) {
        k->avoid = opt->avoid;
        k->slot = opt->slot;
    }
    /* The caller keeps req until done (client_keep.c): borrow it. */
    k->keep = (flags & AIMS_CALL_KEEP_REQUEST) != 0 && (opt == NULL || !opt->borrow);
    if ((flags & AIMS_CALL_IDEMPOTENT) != 0 && c->max_attempts > 1 &&
        (opt == NULL || !opt->borrow) && !k->keep) {
        /* Retries run after this returns: they need their own request. */
        k->req_copy = aimsi_client_pool_take(&c->mpool, CL_MPOOL_BLOCK);
        rc = k->req_copy != NULL ? AIMS_OK : aimsi_err(NULL, AIMS_E_NOMEM, "out of memory");
        if (rc == AIMS_OK) {
            aimsi_msg_init(k->req_copy); /* pooled: freed by aimsi_client_call_free */
            rc = copy_request(k->req_copy, req);
        }
        if (rc != AIMS_OK) {
            aimsi_client_call_free(k);
            rc = aimsi_client_call_err(c, rc, "aims_client_call_async: copying the request: %s",
                                       aims_errmsg());
            done(user, rc, NULL, aims_errmsg());
            return rc;
        }
        k->req = k->req_copy;
    }
    if (opt == NULL || !opt->no_deposit) {
        k->deposit = 1; /* at the first pick, under the same lock (client_pick.c) */
    }
    if (k->slot != NULL) {
        pthread_mutex_lock(&c->mu);
        *k->slot = k;
        pthread_mutex_unlock(&c->mu);
    }
    /* The first attempt runs here; a failure to start (no instance, no memory)
     * is reported through done before we return, and returned. */
    cl_pending *p = NULL;
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    for (;;) {
        rc = aimsi_client_attempt_start(c, k, NULL, &p);
        if (rc == AIMS_OK) {
            return AIMS_OK;
        }
        snprintf(labels, sizeof labels, "service=\"%s\"", service); /* failures only */
        k->unsent = 1;
        if (!aimsi_client_retry_ok(c, k, rc, labels)) {
            break;
        }
    }
    char text[AIMSI_ERRMSG_CAP];
    snprintf(text, sizeof text, "%s", aims_errmsg());
    aimsi_client_finish_call(c, k, rc, NULL, text);
    aimsi_client_call_err(c, rc, "%s", text);
    return rc;
}

AIMS_API aims_metrics *aims_client_metrics(aims_client *c)
{
    return CLIENT_OK(c) ? c->mx : NULL;
}

AIMS_API const char *aims_client_errmsg(const aims_client *c)
{
    if (!CLIENT_OK(c)) {
        return "";
    }
    if (t_call_owner == c) {
        return t_call_err;
    }
    return c->obj.errmsg;
}

aims_registry *aimsi_client_registry(aims_client *c)
{
    pthread_mutex_lock(&c->mu);
    aims_registry *r = c->reg;
    pthread_mutex_unlock(&c->mu);
    return r;
}

AIMS_API aims_status aims_client_set_tls(aims_client *c, aims_tls_config *cfg)
{
    if (!CLIENT_OK(c) || cfg == NULL) {
        return AIMSI_MISUSE("client or TLS config is NULL");
    }
    pthread_mutex_lock(&c->mu);
    const aims_status rc = aimsi_ttable_set_tls(&c->tt, cfg);
    pthread_mutex_unlock(&c->mu);
    return rc != AIMS_OK ? aimsi_err_adopt(&c->obj, rc) : AIMS_OK;
}

aims_tls_config *aimsi_client_tls(aims_client *c)
{
    if (!CLIENT_OK(c)) {
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    aims_tls_config *t = c->tt.tls;
    pthread_mutex_unlock(&c->mu);
    return t;
}
