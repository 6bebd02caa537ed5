/*
 * client_pick.c -- which instance an attempt goes to, and whether a failed
 * call may try again: per-service views, picking, the retry budget, and the
 * bookkeeping of an attempt's outcome (client.c has the overview).
 *
 * Views. A cl_svc caches the instance list of one service name (ids, weights,
 * endpoints) tagged with the registry revision it was read at; the hot path
 * compares that tag with the registry's atomic revision and only re-reads the
 * registry when something changed, so a steady-state call neither takes the
 * registry lock nor allocates for the view. Each view owns a balancer (policy
 * AIMS_CLIENT_LB_POLICY) and a health tracker whose state changes flip the
 * balancer's availability marks. A remote registry is mirrored into a private
 * local aims_registry by svc_registry.c (aimsi_client_adopt_registry) and read
 * the same way.
 *
 * Retries (idempotent calls only; OVERLOADED, CLOSED, IO, and NOTFOUND from an
 * instance: the request did not run or the instance died; never TIMEOUT or a
 * handler's error). A token bucket: each call deposits AIMS_CLIENT_RETRY_BUDGET
 * tokens, time deposits AIMS_CLIENT_RETRY_MIN per second, a retry takes one;
 * the bucket holds at most 10 s worth (budget x calls of the last ~10 s, a
 * decaying count, + 10 x retry_min). gRPC's retry throttle and Finagle's
 * RetryBudget work the same way.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimsi_client.h"
#include "registry/aimsi_regbk.h"
#include "../orch/aimsi_orch.h"

/* ---- views ----------------------------------------------------------------------------- */

static void health_changed(void *user, aims_instance id, aims_health_state from,
                           aims_health_state to)
{
    (void)from;
    cl_svc *sv = user;
    aims_balancer_set_available(sv->lb, id, to == AIMS_HEALTH_STATE_HEALTHY);
}

void aimsi_client_svc_free(cl_svc *sv)
{
    aims_health_destroy(sv->hl);
    aims_balancer_destroy(sv->lb);
    aimsi_free(sv->ids);
    aimsi_free(sv->eps);
    aimsi_free(sv);
}

static cl_svc *svc_get_locked(aims_client *c, const char *name)
{
    for (cl_svc *s = c->svcs; s != NULL; s = s->next) {
        if (strcmp(s->name, name) == 0) {
            return s;
        }
    }
    const size_t len = strlen(name);
    if (c->n_svcs >= CL_MAX_SERVICES || len > AIMSI_FRAME_MAX_SERVICE) {
        return NULL;
    }
    cl_svc *sv = aimsi_calloc(1, sizeof(*sv) + len + 1);
    if (sv == NULL) {
        return NULL;
    }
    memcpy(sv->name, name, len + 1);
    snprintf(sv->labels, sizeof sv->labels, "service=\"%s\"", name);
    sv->c = c;
    sv->rev = UINT64_MAX;
    if (aims_balancer_create((aims_lb_policy)c->lb_policy, c->seed++, &sv->lb) != AIMS_OK ||
        aims_health_create(&sv->hl) != AIMS_OK ||
        aims_health_set_change_fn(sv->hl, health_changed, sv) != AIMS_OK) {
        aimsi_client_svc_free(sv);
        return NULL;
    }
    sv->next = c->svcs;
    c->svcs = sv;
    c->n_svcs++;
    return sv;
}

/* Re-read the registry for sv (under c->mu). On failure the old view stays. */
static aims_status svc_refresh_locked(aims_client *c, cl_svc *sv, uint64_t rev)
{
    size_t n = 0;
    aims_instance *ids = NULL;
    aims_status rc;
    size_t cap = sv->n + 4;
    for (;;) {
        ids = aimsi_calloc(cap, sizeof(*ids));
        if (ids == NULL) {
            return AIMS_E_NOMEM;
        }
        rc = aims_registry_lookup(c->reg, sv->name, ids, cap, &n);
        if (rc != AIMS_E_RANGE) {
            break;
        }
        aimsi_free(ids);
        cap = n + 4;
    }
    if (rc != AIMS_OK) {
        aimsi_free(ids);
        return rc;
    }
    cl_ep **eps = aimsi_calloc(n + 1, sizeof(*eps));
    uint32_t *w = aimsi_calloc(n + 1, sizeof(*w));
    if (eps == NULL || w == NULL) {
        aimsi_free(ids);
        aimsi_free(eps);
        aimsi_free(w);
        return AIMS_E_NOMEM;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char url[AIMSI_URL_MAX + 1];
        size_t ulen = 0;
        if (aims_registry_get_address(c->reg, ids[i], url, sizeof url, &ulen) != AIMS_OK) {
            continue; /* gone meanwhile, or an address we cannot hold */
        }
        cl_ep *e = aimsi_client_ep_get_locked(c, url);
        if (e == NULL) {
            rc = AIMS_E_NOMEM;
            break;
        }
        const uint32_t wt = aims_registry_weight(c->reg, ids[i]);
        ids[m] = ids[i];
        eps[m] = e;
        w[m] = wt > 0 ? wt : 1;
        m++;
    }
    if (rc == AIMS_OK && m == 0 && sv->n > 0 && c->reg_owned != NULL) {
        /* A remote registry that lists nothing right after listing instances
         * has most likely restarted empty (instances re-register on their next
         * heartbeat): keep the last view (static stability). Instances that
         * really died fail with CLOSED, are retried elsewhere and ejected. */
        sv->rev = rev;
        aimsi_free(ids);
        aimsi_free(eps);
        aimsi_free(w);
        return AIMS_OK;
    }
    if (rc == AIMS_OK) {
        rc = aims_balancer_set_instances(sv->lb, ids, w, m);
    }
    if (rc == AIMS_OK) {
        for (size_t i = 0; i < m; i++) {
            aims_health_add(sv->hl, ids[i]); /* AIMS_E_EXISTS for kept ones */
        }
        for (size_t i = 0; i < sv->n; i++) {
            int kept = 0;
            for (size_t j = 0; j < m && !kept; j++) {
                kept = sv->ids[i] == ids[j];
            }
            if (!kept) {
                aims_health_remove(sv->hl, sv->ids[i]);
            }
        }
        aimsi_free(sv->ids);
        aimsi_free(sv->eps);
        sv->ids = ids;
        sv->eps = eps;
        sv->n = m;
        sv->rev = rev;
        ids = NULL;
        eps = NULL;
    }
    aimsi_free(ids);
    aimsi_free(eps);
    aimsi_free(w);
    return rc;
}

static int tried(const cl_call *k, aims_instance id)
{
    const unsigned n = k->attempts < CL_MAX_TRIED ? k->attempts : CL_MAX_TRIED;
    if (k->avoid != 0 && k->avoid == id) {
        return 1; /* a hedge never goes where its first copy went */
    }
    for (unsigned i = 0; i < n; i++) {
        if (k->tried[i] == id) {
            return 1;
        }
    }
    return 0;
}

static void bucket_deposit_locked(aims_client *c, uint64_t now);

static void attempt_begin(aims_client *c, cl_call *k, cl_pending *p, cl_ep *e, uint64_t now);

/* Resolve + pick for an attempt of k (started at `now`): sets k->sv, k->inst
 * and *out_ep. With `pre` (an async attempt's pending), a pick of a connected
 * stream endpoint also begins and links the attempt in the same hold of c->mu
 * (*linked = 1, *sl filled). */
static aims_status pick_link(aims_client *c, cl_call *k, uint64_t now, cl_ep **out_ep,
                             cl_pending *pre, cl_slink *sl, int *linked)
{
    pthread_mutex_lock(&c->mu);
    if (k->deposit) { /* the call's deposit rides on its first pick's lock */
        k->deposit = 0;
        bucket_deposit_locked(c, now);
    }
    if (k->addr != NULL) {
        cl_ep *e = aimsi_client_ep_get_locked(c, k->addr);
        pthread_mutex_unlock(&c->mu);
        if (e == NULL) {
            return aimsi_client_call_err(c, AIMS_E_NOMEM, "%s: out of memory", k->addr);
        }
        k->sv = NULL;
        k->inst = 0;
        *out_ep = e;
        return AIMS_OK;
    }
    if (c->reg == NULL) {
        pthread_mutex_unlock(&c->mu);
        return aimsi_client_call_err(
            c, AIMS_E_STATE,
            "calling '%s' by name needs a registry (aims_client_set_registry/join)", k->service);
    }
    cl_svc *sv = svc_get_locked(c, k->service);
    if (sv == NULL) {
        pthread_mutex_unlock(&c->mu);
        return aimsi_client_call_err(c, AIMS_E_NOMEM, "service '%s': out of memory for its view",
                                     k->service);
    }
    const uint64_t rev = aims_registry_revision(c->reg);
    if (sv->rev != rev) {
        const aims_status rc = svc_refresh_locked(c, sv, rev);
        if (rc != AIMS_OK && sv->rev == UINT64_MAX) {
            pthread_mutex_unlock(&c->mu);
            return aimsi_client_call_err(c, rc, "service '%s': reading the registry failed",
                                         k->service);
        }
    }
    aims_instance id = 0;
    aims_status rc = AIMS_E_NOTFOUND;
    for (int i = 0; i < 8 && sv->n > 0; i++) {
        rc = aims_balancer_pick(sv->lb, 0, &id);
        if (rc != AIMS_OK || !tried(k, id) || i == 7 || sv->n == 1) {
            break;
        }
        /* Already failed on this call: give the pick back and draw again. */
        aims_balancer_done(sv->lb, id, 0, 1);
    }
    int counted = rc == AIMS_OK;
    if (rc == AIMS_OK && tried(k, id)) {
        /* The balancer keeps choosing an instance this call already failed on
         * (a dead one looks fast to a latency-aware policy until it is
         * ejected): take an untried one from the view, outside its accounting. */
        for (size_t i = 0; i < sv->n; i++) {
            if (!tried(k, sv->ids[i])) {
                aims_balancer_done(sv->lb, id, 0, 1);
                id = sv->ids[i];
                counted = 0;
                break;
            }
        }
    }
    cl_ep *e = NULL;
    for (size_t i = 0; rc == AIMS_OK && i < sv->n; i++) {
        if (sv->ids[i] == id) {
            e = sv->eps[i];
            break;
        }
    }
    void (*const reg_stop)(void *) = c->reg_stop;
    void *const reg_ctx = c->reg_ctx;
    if (pre != NULL && rc == AIMS_OK && e != NULL && !e->inproc && e->conn != NULL) {
        k->sv = sv; /* link_locked reads k->inst (the call's cur_inst) */
        k->msv = sv;
        k->inst = id;
        k->lb_counted = counted;
        attempt_begin(c, k, pre, e, now);
        *linked = aimsi_client_stream_link_locked(c, pre, sl);
        pthread_mutex_unlock(&c->mu);
        *out_ep = e;
        return AIMS_OK;
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK || e == NULL) {
        if (rc == AIMS_OK && counted) {
            aims_balancer_done(sv->lb, id, 0, 1);
        }
        char why[AIMSI_URL_MAX + 400];
        if (aimsi_regbk_why(reg_stop, reg_ctx, why, sizeof why) > 0) {
            /* say why the view is empty: the joined registry is unreachable */
            return aimsi_client_call_err(c, AIMS_E_NOTFOUND, "service '%s': no live instance; %s",
                                         k->service, why);
        }
        return aimsi_client_call_err(c, AIMS_E_NOTFOUND, "service '%s': no live instance",
                                     k->service);
    }
    k->sv = sv;
    k->msv = sv;
    k->inst = id;
    k->lb_counted = counted;
    *out_ep = e;
    return AIMS_OK;
}

/* ---- retries and outcomes ------------------------------------------------------------- */

int aimsi_client_retryable(aims_status st)
{
    return st == AIMS_E_OVERLOADED || st == AIMS_E_CLOSED || st == AIMS_E_IO ||
           st == AIMS_E_NOTFOUND;
}

/* A failure that says something about the instance (for health). */
static int instance_failure(aims_status st)
{
    return st == AIMS_E_CLOSED || st == AIMS_E_IO || st == AIMS_E_TIMEOUT;
}

static void bucket_refill_locked(aims_client *c, uint64_t now)
{
    if (c->bucket_ns == 0) {
        c->bucket_ns = now;
        return;
    }
    if (now <= c->bucket_ns) {
        return; /* read before another thread's refill (an attempt's start time) */
    }
    const double dt = (double)(now - c->bucket_ns) * 1e-9;
    c->bucket_ns = now;
    c->tokens += dt * (double)c->retry_min;
    c->recent_calls *= exp(-dt / 10.0);
}

double aimsi_client_bucket_cap(const aims_client *c)
{
    return c->retry_budget * c->recent_calls + 10.0 * (double)c->retry_min;
}

/* Count a call into the bucket (under c->mu); `now`: the attempt's clock read. */
static void bucket_deposit_locked(aims_client *c, uint64_t now)
{
    bucket_refill_locked(c, now);
    c->recent_calls += 1.0;
    c->tokens += c->retry_budget;
    const double cap = aimsi_client_bucket_cap(c);
    if (c->tokens > cap) {
        c->tokens = cap;
    }
}


/* Under c->mu: take one token from the retry bucket (a retry or a hedge);
 * 0 when the bucket is empty. */
int aimsi_client_token_take_locked(aims_client *c)
{
    bucket_refill_locked(c, aimsi_now_ns());
    const double cap = aimsi_client_bucket_cap(c);
    if (c->tokens > cap) {
        c->tokens = cap;
    }
    if (c->tokens < 1.0) {
        return 0;
    }
    c->tokens -= 1.0;
    return 1;
}

/* May call k try again after status st? Withdraws a token when yes. */
int aimsi_client_retry_ok(aims_client *c, cl_call *k, aims_status st, const char *labels)
{
    /* A try abandoned at its share of the deadline (client_try.c) is retried. */
    const int try_expired = st == AIMS_E_TIMEOUT && k->try_ns < k->deadline_ns &&
                            aimsi_now_ns() >= k->try_ns;
    if ((k->flags & AIMS_CALL_IDEMPOTENT) == 0 || k->addr != NULL || k->no_retry ||
        (!aimsi_client_retryable(st) && !try_expired) ||
        k->attempts >= (unsigned)c->max_attempts || aimsi_now_ns() >= k->deadline_ns) {
        return 0;
    }
    /* A request that provably never reached a handler retries outside the
     * budget (gRPC A6): it adds no load, and a drain's window (name gone,
     * registry not yet updated) must not drain the bucket. */
    const int free_retry = k->unsent && st == AIMS_E_CLOSED;
    pthread_mutex_lock(&c->mu);
    int ok = !c->closing && !k->cancelled;
    if (ok && !free_retry) {
        ok = aimsi_client_token_take_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    aims_metrics_count(c->mx, ok ? "aims_client_retries_total" : "aims_client_retries_denied_total",
                       labels, 1);
    return ok;
}

/* Report an attempt's outcome to the balancer and health tracker. */
void aimsi_client_report(cl_call *k, aims_status st)
{
    if (k->sv == NULL) {
        return;
    }
    /* The reply's read time when the transport gave one (a read burst's
     * clock, client_send.c), else now: one clock read per burst of replies. */
    k->done_ns = k->rx_ns > k->attempt_ns ? k->rx_ns : aimsi_now_ns();
    k->rx_ns = 0;
    const uint64_t lat = k->done_ns - k->attempt_ns;
    const int bad = instance_failure(st) || st == AIMS_E_OVERLOADED;
    if (st == AIMS_OK) {
        aimsi_lat_ring_note(&k->sv->lat, lat);
    }
    if (k->lb_counted) {
        aims_balancer_done(k->sv->lb, k->inst, lat, !bad);
    }
    if (instance_failure(st)) {
        aims_health_report(k->sv->hl, k->inst, 0);
    } else if (st != AIMS_E_OVERLOADED) {
        aimsi_health_report_ok(k->sv->hl, k->inst); /* no lock when all are clean */
    }
    k->sv = NULL;
}

void aimsi_client_call_metrics(aims_client *c, const cl_call *k, aims_status st)
{
    cl_svc *sv = k->msv;
    if (sv != NULL && st == AIMS_OK) {
        /* By name and fine (the pipelined hot path): the view's series
         * handles, no label text, hash or metrics lock per call. */
        aimsi_mx_add(aimsi_metrics_series(c->mx, &sv->mx_calls, 'c', "aims_client_calls_total",
                                          sv->labels),
                     1);
        aimsi_mx_observe(aimsi_metrics_series(c->mx, &sv->mx_lat, 'h', "aims_client_latency_ns",
                                              sv->labels),
                         (k->done_ns != 0 ? k->done_ns : aimsi_now_ns()) - k->start_ns);
        return;
    }
    char buf[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(buf, sizeof buf, "service=\"%s\"", k->service);
    aims_metrics_count(c->mx, "aims_client_calls_total", buf, 1);
    if (st != AIMS_OK) {
        aims_metrics_count(c->mx, "aims_client_errors_total", buf, 1);
    }
    aims_metrics_observe(c->mx, "aims_client_latency_ns", buf, aimsi_now_ns() - k->start_ns);
}

/* The attempt's bookkeeping before it is linked (k is this thread's; under
 * c->mu when called from the pick): tried list, count, start, try deadline,
 * and the sender's hold on k. Once p is linked another thread may finish k
 * (a cancel, the deadline sweeper, on_close): the sender's hold keeps k and p
 * readable until it has encoded and handed over the request (client_send.c,
 * "Who frees what"). */
static void attempt_begin(aims_client *c, cl_call *k, cl_pending *p, cl_ep *e, uint64_t now)
{
    if (k->inst != 0 && k->attempts < CL_MAX_TRIED) {
        k->tried[k->attempts] = k->inst;
    }
    k->attempts++;
    k->attempt_ns = now;
    p->ep = e;
    const int may_retry = (k->flags & AIMS_CALL_IDEMPOTENT) != 0 && k->sv != NULL;
    const unsigned left = (unsigned)c->max_attempts > k->attempts
                              ? (unsigned)c->max_attempts - k->attempts + 1u
                              : 1u;
    p->try_ns = aimsi_try_deadline(k->sv != NULL ? &k->sv->lat : NULL, k->attempt_ns,
                                   k->deadline_ns, may_retry ? left : 1u);
    k->try_ns = p->try_ns;
    if (p->call != NULL) {
        aimsi_client_call_hold(k);
        if (k->keep) { /* the sender reads the caller's request (client_keep.c) */
            aimsi_client_rd_get(k);
            p->rd = 1;
        }
    }
}

/* Start one attempt: pick, make the pending, send. On AIMS_OK the attempt
 * completes later through deliver(). On failure nothing is in flight and the
 * attempt was reported. */
aims_status aimsi_client_attempt_start(aims_client *c, cl_call *k, aims_msg *dst, cl_pending **out)
{
    /* One clock read per attempt (the first attempt's is the call's start):
     * it checks the deadline and starts the attempt's latency. */
    const uint64_t now = k->attempts == 0 && k->start_ns != 0 ? k->start_ns : aimsi_now_ns();
    if (now >= k->deadline_ns) {
        return aimsi_client_call_err(c, AIMS_E_TIMEOUT, "service '%s' method '%s': deadline passed",
                                     k->service, k->method);
    }
    const int async = dst == NULL;
    cl_pending *pre = NULL;
    if (async) { /* made before the pick: a connected stream attempt links in its hold */
        pre = aimsi_client_pending_new(c, NULL, k->deadline_ns, k, NULL);
        if (pre == NULL) {
            return aimsi_client_call_err(c, AIMS_E_NOMEM, "service '%s': out of memory",
                                         k->service);
        }
    }
    cl_ep *e = NULL;
    cl_slink sl;
    int linked = 0, begun = 0;
    const aims_status prc = pick_link(c, k, now, &e, pre, &sl, &linked);
    begun = pre != NULL && pre->ep != NULL; /* attempt_begin ran in the pick's hold */
    if (prc != AIMS_OK) {
        if (pre != NULL) {
            atomic_store_explicit(&pre->refs, 1, memory_order_relaxed);
            aimsi_client_pending_unref(pre);
        }
        /* Nothing to retry on: another pick would see the same view. */
        k->no_retry = 1;
        return prc;
    }
    cl_pending *p = pre;
    if (p == NULL) {
        p = aimsi_client_pending_new(c, e, k->deadline_ns, NULL, dst);
        if (p == NULL) {
            if (k->inst != 0 && k->attempts < CL_MAX_TRIED) {
                k->tried[k->attempts] = k->inst;
            }
            k->attempts++;
            k->attempt_ns = now;
            aimsi_client_report(k, AIMS_E_NOMEM);
            return aimsi_client_call_err(c, AIMS_E_NOMEM, "service '%s': out of memory",
                                         k->service);
        }
    }
    if (!begun) {
        attempt_begin(c, k, p, e, now);
    }
    /* `now`, not k->attempt_ns (the same value, stored by attempt_begin): once
     * the pick has linked p, another thread may end this attempt and start
     * k's retry, which writes k->attempt_ns under c->mu while we read it
     * here without (TSan, test_keep_req tcp's deadline storm). */
    const aims_status rc = linked     ? aimsi_client_send_linked(c, k, p, &sl, now)
                           : e->inproc ? aimsi_client_send_inproc(c, k, p)
                                       : aimsi_client_send_stream(c, k, p);
    if (rc != AIMS_OK) {
        aimsi_client_report(k, rc);
        /* Not linked: only our references remain. */
        atomic_store_explicit(&p->refs, 1, memory_order_relaxed);
        if (p->rd) { /* failed before the request was read or handed over */
            p->rd = 0;
            aimsi_client_rd_put(k);
        }
        aimsi_client_pending_unref(p);
        if (async) {
            aimsi_client_call_unref(k); /* nobody else finished k: never the last */
        }
        return rc;
    }
    if (async) {
        /* From here on p and k may already be finished on another thread. */
        aimsi_client_pending_unref(p);
        aimsi_client_call_unref(k);
        *out = NULL;
        return AIMS_OK;
    }
    *out = p;
    return AIMS_OK;
}
