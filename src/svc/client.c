/*
 * client.c -- aims_client: resolve a service name, pick an instance, send the
 * request over the instance's transport, await the reply; deadlines, retries
 * within a budget, per-service balancing and passive health.
 *
 * Shape. One mutex (c->mu) guards the client's small shared state: the
 * per-service views, the endpoints (one per address), the list of calls in
 * flight ("pendings") with an id hash for the stream transports, the retry
 * token bucket. It is held for a few hundred ns per call (view check + pick +
 * link) and never across a transport, node, handler or user callback.
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
 * Pendings. Every attempt is a cl_pending linked into c->plist. Exactly one
 * party unlinks it -- the reply (on_frame / the node's completion), the
 * connection's on_close, the deadline sweeper, a waiter that timed out, or
 * destroy -- and that party alone delivers the outcome. That is the whole
 * "exactly once" argument: late replies find nothing to unlink and are
 * dropped. A pending is reference counted (link + waiter + node) because the
 * node still holds it after a waiter gave up on it.
 *
 * inproc:// endpoints cache a reference to the node; the request is handed
 * over borrowed and the node's reply is moved (not copied) into the caller's
 * reply. Stream endpoints (tcp, ipc, host transports) hold one connection,
 * dialed lazily; a failed dial or a dropped connection backs the endpoint off
 * (AIMS_CLIENT_BACKOFF_MS, doubling up to 32x) and calls to it fail fast with
 * AIMS_E_CLOSED meanwhile, so they retry on another instance. Replies are
 * decoded on the transport's thread into a message that adopts the frame
 * bytes (one copy, out of the transport's buffer).
 *
 * Retries (idempotent calls only; OVERLOADED, CLOSED, IO, and NOTFOUND from an
 * instance: the request did not run or the instance died; never TIMEOUT or a
 * handler's error). A token bucket: each call deposits AIMS_CLIENT_RETRY_BUDGET
 * tokens, time deposits AIMS_CLIENT_RETRY_MIN per second, a retry takes one;
 * the bucket holds at most 10 s worth (budget x calls of the last ~10 s, a
 * decaying count, + 10 x retry_min). gRPC's retry throttle and Finagle's
 * RetryBudget work the same way.
 *
 * The client thread sweeps expired async calls (every 2 ms while any is in
 * flight), runs async retries (never on a transport or node thread, since a
 * retry may dial), and ends health ejections whose time is up.
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

#include "aimsi_svc.h"
#include "registry/aimsi_regbk.h"
#include "../orch/aimsi_orch.h"

#define CL_HASH 256u                  /* pending-id buckets (power of two) */
#define CL_MAX_TRIED 16u              /* instances remembered per call (>= max attempts) */
#define CL_SWEEP_NS 2000000u          /* async deadline sweep period while busy */
#define CL_IDLE_NS 100000000u         /* client thread period when idle; health expiry check */
#define CL_MAX_SERVICES 4096u

typedef struct cl_ep cl_ep;
typedef struct cl_call cl_call;

/* One stream connection (conn_user of the transport's hooks). */
typedef struct cl_conn {
    aims_client *c;
    cl_ep *ep;
    aimsi_tslot *slot;
    void *conn;
    int refs; /* under c->mu: the endpoint's + one per sender in progress */
    int dead; /* on_close ran (or send saw CLOSED) */
} cl_conn;

typedef struct cl_grave {
    struct cl_grave *next;
    aims_node *node;
} cl_grave;

/* One address. Never freed before the client: views and pendings point at it. */
struct cl_ep {
    cl_ep *next;
    char url[AIMSI_URL_MAX + 1];
    int inproc;
    aims_node *node;   /* inproc: cached reference, or NULL */
    int node_stale;    /* the node answered CLOSED: look the name up again */
    cl_grave *graves;  /* replaced node references, released on destroy */
    cl_conn *conn;     /* stream: the open connection, or NULL */
    pthread_mutex_t dial_mu;
    uint64_t retry_at;   /* no dial before this (CLOCK_MONOTONIC ns) */
    uint64_t backoff_ns; /* current backoff, 0 = none */
};

/* The cached view of one service name. */
typedef struct cl_svc {
    struct cl_svc *next;
    aims_client *c;
    aims_balancer *lb;
    aims_health *hl;
    uint64_t rev; /* registry revision the arrays reflect; UINT64_MAX = never read */
    size_t n;
    aims_instance *ids;
    cl_ep **eps;
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    aimsi_lat_ring lat; /* successful attempt latencies (per-try timeouts) */
    char name[];
} cl_svc;

typedef struct cl_pending {
    struct cl_pending *prev, *next; /* c->plist */
    struct cl_pending *hnext;       /* id hash (stream attempts) */
    atomic_int refs;
    int linked;   /* under c->mu */
    int hashed;
    int unsent;   /* failed before the request reached a handler (node closed) */
    uint64_t id;
    uint64_t deadline_ns;
    uint64_t try_ns; /* this try is abandoned then (<= deadline_ns; client_try.c) */
    aims_client *c;
    cl_ep *ep;
    cl_conn *cc;  /* stream attempts */
    cl_call *call; /* async: the call this attempt belongs to; NULL: sync */
    /* sync delivery */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int delivered;
    aims_status st;
    aims_msg *dst;
    char err[AIMSI_ERRMSG_CAP];
} cl_pending;

/* One logical call, across attempts. Sync calls keep it on the caller's stack. */
struct cl_call {
    cl_call *qnext;  /* retry queue */
    const char *service;
    const char *method;
    const char *addr; /* call_addr: the address; NULL: resolve by name */
    const aims_msg *req;
    aims_msg *req_copy; /* async: owned copy for retries, or NULL */
    unsigned flags;
    uint64_t start_ns, deadline_ns;
    uint64_t try_ns;     /* the attempt in progress is abandoned then */
    uint64_t not_before; /* async: no retry before (an OVERLOADED hint) */
    unsigned attempts;
    int no_retry; /* failed before reaching an instance (no instance, no registry) */
    int unsent;   /* the last attempt provably never reached a handler */
    aims_instance tried[CL_MAX_TRIED];
    /* the attempt in progress */
    cl_svc *sv;
    aims_instance inst;
    int lb_counted; /* the balancer counted this attempt (pick, not fallback) */
    uint64_t attempt_ns;
    aims_done_fn done;
    void *user;
};

struct aims_client {
    aimsi_obj obj;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* client thread wake-ups, destroy waits */
    pthread_condattr_t cattr;  /* CLOCK_MONOTONIC, shared by the pendings' conds */
    pthread_t thread;
    int thread_started;
    int closing;
    /* parameters (atomic: set_param may race with calls on other threads) */
    _Atomic int64_t timeout_ms, retry_min, max_attempts, lb_policy, max_pending, sync_ms,
        backoff_ms;
    _Atomic double retry_budget;
    /* name resolution */
    aims_registry *reg;
    aims_registry *reg_owned;          /* mirror adopted from svc_registry.c */
    void (*reg_stop)(void *ctx);
    void *reg_ctx;
    cl_svc *svcs;
    size_t n_svcs;
    cl_ep *eps;
    aimsi_ttable tt;
    uint64_t max_frame;
    /* calls in flight */
    cl_pending plist; /* sentinel */
    cl_pending *hash[CL_HASH];
    size_t n_pending;
    size_t n_async;
    size_t node_refs; /* pendings a node still holds */
    uint64_t next_id;
    cl_call *rq_head, *rq_tail; /* async retries for the client thread */
    /* retry budget */
    double tokens, recent_calls;
    uint64_t bucket_ns;
    uint64_t seed;
    uint64_t health_ns;
    uint64_t probe_ns; /* under mu: last active-probe round */
    aims_metrics *mx;
};

static _Thread_local char t_call_err[AIMSI_ERRMSG_CAP];
static _Thread_local const aims_client *t_call_owner;

/* Record a call failure: thread-local text (aims_errmsg and aims_client_errmsg). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static aims_status call_err(const aims_client *c, aims_status code, const char *fmt, ...)
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

static uint64_t ms_to_ns(int64_t ms)
{
    return (uint64_t)ms * 1000000u;
}

/* ---- pendings -------------------------------------------------------------------- */

static cl_pending *pending_new(aims_client *c, cl_ep *ep, uint64_t deadline_ns, cl_call *async,
                               aims_msg *dst)
{
    cl_pending *p = aimsi_calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    p->c = c;
    p->ep = ep;
    p->deadline_ns = deadline_ns;
    p->call = async;
    p->dst = dst;
    /* The link reference; the waiter's (sync) is added here too. */
    atomic_init(&p->refs, async != NULL ? 1 : 2);
    if (async == NULL) {
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, &c->cattr);
    }
    return p;
}

static void pending_unref(cl_pending *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (p->call == NULL) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    aimsi_free(p);
}

static size_t hash_of(uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 56) & (CL_HASH - 1u);
}

/* Link p (under c->mu). AIMS_E_OVERLOADED past AIMS_CLIENT_MAX_PENDING. */
static aims_status link_locked(aims_client *c, cl_pending *p, int hashed)
{
    if (c->n_pending >= (size_t)c->max_pending) {
        return AIMS_E_OVERLOADED;
    }
    p->id = ++c->next_id;
    p->next = &c->plist;
    p->prev = c->plist.prev;
    c->plist.prev->next = p;
    c->plist.prev = p;
    p->linked = 1;
    c->n_pending++;
    if (p->call != NULL) {
        c->n_async++;
    }
    if (hashed) {
        const size_t h = hash_of(p->id);
        p->hnext = c->hash[h];
        c->hash[h] = p;
        p->hashed = 1;
    }
    return AIMS_OK;
}

/* Unlink p (under c->mu). Returns 1 when this caller won (p was linked). */
static int unlink_locked(aims_client *c, cl_pending *p)
{
    if (!p->linked) {
        return 0;
    }
    p->linked = 0;
    p->prev->next = p->next;
    p->next->prev = p->prev;
    c->n_pending--;
    if (p->call != NULL) {
        c->n_async--;
    }
    if (p->hashed) {
        cl_pending **pp = &c->hash[hash_of(p->id)];
        while (*pp != NULL && *pp != p) {
            pp = &(*pp)->hnext;
        }
        if (*pp == p) {
            *pp = p->hnext;
        }
        p->hashed = 0;
    }
    return 1;
}

static cl_pending *hash_find_locked(aims_client *c, uint64_t id)
{
    cl_pending *p = c->hash[hash_of(id)];
    while (p != NULL && p->id != id) {
        p = p->hnext;
    }
    return p;
}

static void attempt_finished(aims_client *c, cl_call *k, aims_status st, const aims_msg *reply,
                             const char *err);

/* Deliver an attempt's outcome (the caller won the unlink). For a sync waiter
 * the reply's contents are moved into the caller's message. */
static void deliver(cl_pending *p, aims_status st, aims_msg *reply, const char *err)
{
    if (p->call != NULL) {
        p->call->unsent = p->unsent;
        attempt_finished(p->c, p->call, st, reply, err != NULL ? err : "");
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->st = st;
    if (reply != NULL) {
        aimsi_msg_move(p->dst, reply);
    } else {
        aims_msg_clear(p->dst);
    }
    snprintf(p->err, sizeof p->err, "%s", err != NULL ? err : "");
    p->delivered = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- endpoints and connections ------------------------------------------------------- */

/* Find or add the endpoint of `url` (under c->mu). */
static cl_ep *ep_get_locked(aims_client *c, const char *url)
{
    for (cl_ep *e = c->eps; e != NULL; e = e->next) {
        if (strcmp(e->url, url) == 0) {
            return e;
        }
    }
    const size_t len = strlen(url);
    if (len > AIMSI_URL_MAX) {
        return NULL;
    }
    cl_ep *e = aimsi_calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    memcpy(e->url, url, len + 1);
    e->inproc = strncmp(url, "inproc://", 9) == 0;
    pthread_mutex_init(&e->dial_mu, NULL);
    e->next = c->eps;
    c->eps = e;
    return e;
}

static void backoff_locked(aims_client *c, cl_ep *e)
{
    const uint64_t base = ms_to_ns(c->backoff_ms);
    if (e->backoff_ns == 0) {
        e->backoff_ns = base;
    } else if (e->backoff_ns < 32u * base) {
        e->backoff_ns = e->backoff_ns * 2u > 32u * base ? 32u * base : e->backoff_ns * 2u;
    }
    e->retry_at = aimsi_now_ns() + e->backoff_ns;
}

/* Detach cc from its endpoint (under c->mu). Returns 1 when the caller must
 * close it (last reference gone). */
static int conn_detach_locked(aims_client *c, cl_conn *cc)
{
    cc->dead = 1;
    if (cc->ep->conn != cc) {
        return 0;
    }
    cc->ep->conn = NULL;
    backoff_locked(c, cc->ep);
    return --cc->refs == 0;
}

static void conn_close(cl_conn *cc)
{
    cc->slot->vt.close(cc->slot->inst, cc->conn);
    aimsi_free(cc);
}

/* Unlink every call still waiting on cc (under c->mu), chained through hnext. */
static cl_pending *conn_unlink_calls_locked(aims_client *c, const cl_conn *cc)
{
    cl_pending *dead = NULL;
    for (cl_pending *p = c->plist.next; p != &c->plist;) {
        cl_pending *nx = p->next;
        if (p->cc == cc && unlink_locked(c, p)) {
            p->hnext = dead;
            dead = p;
        }
        p = nx;
    }
    return dead;
}

static void fail_calls(cl_pending *dead, aims_status st, const char *text)
{
    while (dead != NULL) {
        cl_pending *p = dead;
        dead = p->hnext;
        deliver(p, st, NULL, text);
        pending_unref(p);
    }
}

/* Close cc (its last reference is gone) after failing the calls still on it:
 * once closed, no hook would ever answer them. */
static void conn_finish(aims_client *c, cl_conn *cc)
{
    pthread_mutex_lock(&c->mu);
    cl_pending *dead = conn_unlink_calls_locked(c, cc);
    pthread_mutex_unlock(&c->mu);
    fail_calls(dead, AIMS_E_CLOSED, "connection closed");
    conn_close(cc);
}

/* Drop a sender's reference. */
static void conn_release(aims_client *c, cl_conn *cc)
{
    pthread_mutex_lock(&c->mu);
    const int last = --cc->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) {
        conn_finish(c, cc);
    }
}

/* The endpoint's connection with a sender reference, dialing it if needed.
 * Fails fast with AIMS_E_CLOSED while the endpoint backs off. */
static aims_status conn_get(aims_client *c, cl_ep *e, cl_conn **out)
{
    pthread_mutex_lock(&e->dial_mu);
    pthread_mutex_lock(&c->mu);
    if (e->conn != NULL) {
        e->conn->refs++;
        *out = e->conn;
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        return AIMS_OK;
    }
    if (e->retry_at != 0 && aimsi_now_ns() < e->retry_at) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        return call_err(c, AIMS_E_CLOSED, "%s: reconnect backoff (%llu ms)", e->url,
                        (unsigned long long)(e->backoff_ns / 1000000u));
    }
    aimsi_tslot *slot = NULL;
    aims_status rc = c->closing ? AIMS_E_CLOSED : aimsi_ttable_get(&c->tt, e->url, &slot);
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK) {
        pthread_mutex_unlock(&e->dial_mu);
        return call_err(c, rc, "%s: %s", e->url, aims_errmsg());
    }
    cl_conn *cc = aimsi_calloc(1, sizeof(*cc));
    if (cc == NULL) {
        pthread_mutex_unlock(&e->dial_mu);
        return call_err(c, AIMS_E_NOMEM, "%s: out of memory for a connection", e->url);
    }
    cc->c = c;
    cc->ep = e;
    cc->slot = slot;
    rc = slot->vt.dial(slot->inst, e->url, cc, &cc->conn);
    char why[AIMSI_ERRMSG_CAP] = "";
    if (rc != AIMS_OK) { /* the transport's own words (TLS: the verification failure) */
        snprintf(why, sizeof why, "%s", aims_errmsg());
    }
    pthread_mutex_lock(&c->mu);
    if (rc != AIMS_OK) {
        backoff_locked(c, e);
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        aimsi_free(cc);
        /* A refused dial means the request never left: retryable. */
        const aims_status code = rc == AIMS_E_NOMEM ? rc : AIMS_E_CLOSED;
        return call_err(c, code, "%s: connect failed: %s (%s)", e->url, aims_strerror(rc), why);
    }
    if (cc->dead) {
        /* on_close beat us: the connection died before it was installed. */
        backoff_locked(c, e);
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        conn_close(cc);
        return call_err(c, AIMS_E_CLOSED, "%s: connection closed while connecting", e->url);
    }
    cc->refs = 2; /* the endpoint's + ours */
    e->conn = cc;
    *out = cc;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&e->dial_mu);
    return AIMS_OK;
}

/* Transport hook: one reply frame. */
static void on_frame(void *conn_user, const void *frame, size_t len)
{
    cl_conn *cc = conn_user;
    aims_client *c = cc->c;
    void *bytes = aimsi_malloc(len > 0 ? len : 1);
    aimsi_frame *f = aimsi_malloc(sizeof(*f));
    if (bytes == NULL || f == NULL) {
        /* Out of memory: the waiter times out; nothing better to do here. */
        aimsi_free(bytes);
        aimsi_free(f);
        return;
    }
    memcpy(bytes, frame, len);
    if (aimsi_frame_decode(bytes, len, (size_t)c->max_frame, f) != AIMS_OK ||
        (f->hdr.type != AIMSI_FRAME_REPLY && f->hdr.type != AIMSI_FRAME_ERROR)) {
        /* Not a reply we can read (PONG, junk): ignore it; the deadline covers it. */
        aimsi_frame_release(f);
        aimsi_free(f);
        aimsi_free(bytes);
        return;
    }
    pthread_mutex_lock(&c->mu);
    cl_pending *p = hash_find_locked(c, f->hdr.request_id);
    int won = 0;
    if (p != NULL && p->cc == cc) {
        won = unlink_locked(c, p);
        cc->ep->backoff_ns = 0; /* the connection works */
    }
    pthread_mutex_unlock(&c->mu);
    if (!won) {
        /* A late reply (the call timed out) or a stranger's id: dropped. */
        aimsi_frame_release(f);
        aimsi_free(f);
        aimsi_free(bytes);
        return;
    }
    aims_status st = (aims_status)f->hdr.status;
    if (f->hdr.status < 0 || f->hdr.status > (int32_t)AIMS_E_DENIED) {
        st = AIMS_E_INTERNAL;
    }
    if (st == AIMS_OK && f->hdr.type == AIMSI_FRAME_ERROR) {
        st = AIMS_E_INTERNAL;
    }
    aims_msg tmp;
    aimsi_msg_init(&tmp);
    const aims_status ar = aimsi_msg_adopt_frame(&tmp, bytes, f);
    if (ar != AIMS_OK) {
        deliver(p, AIMS_E_CORRUPT, NULL, "malformed reply");
    } else {
        deliver(p, st, &tmp, aims_msg_error(&tmp));
    }
    aimsi_msg_fini(&tmp);
    pending_unref(p);
}

/* Transport hook: the connection is gone. Fail its calls with AIMS_E_CLOSED. */
static void on_close(void *conn_user, aims_status why)
{
    cl_conn *cc = conn_user;
    aims_client *c = cc->c;
    cl_pending *dead = NULL;
    pthread_mutex_lock(&c->mu);
    const int last = conn_detach_locked(c, cc);
    dead = conn_unlink_calls_locked(c, cc);
    char url[AIMSI_URL_MAX + 1];
    memcpy(url, cc->ep->url, sizeof url);
    pthread_mutex_unlock(&c->mu);
    char text[AIMSI_ERRMSG_CAP];
    snprintf(text, sizeof text, "%s: connection lost (%s)", url, aims_strerror(why));
    fail_calls(dead, AIMS_E_CLOSED, text);
    if (last) {
        conn_close(cc);
    }
}

/* ---- inproc ------------------------------------------------------------------------ */

/* The endpoint's node (a cached reference). */
static aims_status ep_node(aims_client *c, cl_ep *e, aims_node **out)
{
    pthread_mutex_lock(&c->mu);
    if (e->node == NULL || e->node_stale) {
        aims_node *n = NULL;
        const aims_status rc = aimsi_inproc_find(e->url + 9, &n);
        if (rc != AIMS_OK) {
            pthread_mutex_unlock(&c->mu);
            return call_err(c, rc == AIMS_E_NOMEM ? rc : AIMS_E_CLOSED,
                            "%s: no node listens there", e->url);
        }
        if (n == e->node) {
            aimsi_node_unref(n); /* same node: the service restarted */
        } else if (e->node != NULL) {
            cl_grave *g = aimsi_malloc(sizeof(*g));
            if (g == NULL) {
                pthread_mutex_unlock(&c->mu);
                aimsi_node_unref(n);
                return call_err(c, AIMS_E_NOMEM, "%s: out of memory", e->url);
            }
            /* Another thread may still be calling the old node: keep the
             * reference until destroy. */
            g->node = e->node;
            g->next = e->graves;
            e->graves = g;
            e->node = n;
        } else {
            e->node = n;
        }
        e->node_stale = 0;
    }
    *out = e->node;
    pthread_mutex_unlock(&c->mu);
    return AIMS_OK;
}

/* Node completion (any thread; possibly inside aimsi_node_call_local). */
static void node_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    cl_pending *p = ctx;
    aims_client *c = p->c;
    pthread_mutex_lock(&c->mu);
    const int won = unlink_locked(c, p);
    if (st == AIMS_E_CLOSED) {
        p->ep->node_stale = 1;
    }
    pthread_mutex_unlock(&c->mu);
    if (won) {
        /* No reply and CLOSED: the node refused before any handler ran. */
        p->unsent = reply == NULL && st == AIMS_E_CLOSED;
        deliver(p, st, reply, err);
        pending_unref(p); /* the link's */
    }
    pthread_mutex_lock(&c->mu);
    c->node_refs--;
    if (c->closing && c->node_refs == 0) {
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    pending_unref(p); /* the node's */
}

/* ---- sending one attempt ------------------------------------------------------------ */

/* Send attempt p of call k to endpoint e. AIMS_OK: p is linked and will be
 * delivered (maybe already was). Otherwise nothing is linked; the caller owns p. */
static aims_status send_inproc(aims_client *c, cl_call *k, cl_pending *p)
{
    aims_node *n = NULL;
    AIMSI_TRY(ep_node(c, p->ep, &n));
    pthread_mutex_lock(&c->mu);
    aims_status rc = c->closing ? AIMS_E_CLOSED : link_locked(c, p, 0);
    if (rc == AIMS_OK) {
        c->node_refs++;
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); /* the node's */
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK) {
        return call_err(c, rc, "%s: %s", p->ep->url,
                        rc == AIMS_E_OVERLOADED ? "too many calls in flight (max_pending)"
                                                : "client closing");
    }
    const aimsi_local_call lc = {k->service, k->method, k->req, p->deadline_ns, node_done, p,
                                 k->done != NULL};
    rc = aimsi_node_call_local(n, &lc);
    if (rc == AIMS_OK) {
        return AIMS_OK;
    }
    /* The node refused before taking the call: done will not run. */
    pthread_mutex_lock(&c->mu);
    unlink_locked(c, p);
    c->node_refs--;
    if (rc == AIMS_E_CLOSED) {
        p->ep->node_stale = 1;
    }
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_sub_explicit(&p->refs, 1, memory_order_relaxed);
    return call_err(c, rc, "%s: %s", p->ep->url, aims_errmsg());
}

int aimsi_url_compresses(const char *url)
{
    if (strncmp(url, "ipc://", 6) == 0) {
        return 0;
    }
    if (strncmp(url, "tcp://", 6) != 0 && strncmp(url, "tls://", 6) != 0) {
        return 1; /* tls:// is tcp underneath: the same loopback rule */
    }
    const char *h = url + 6;
    return !(strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
             strncmp(h, "[::1]:", 6) == 0);
}

static aims_status encode_request(aims_client *c, const cl_call *k, const char *url,
                                  uint64_t id, uint64_t deadline_ns, void **out,
                                  size_t *out_len)
{
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof h);
    h.type = AIMSI_FRAME_REQUEST;
    h.request_id = id;
    h.deadline_ns = aimsi_deadline_to_wire(deadline_ns);
    snprintf(h.service, sizeof h.service, "%s", k->service);
    snprintf(h.method, sizeof h.method, "%s", k->method);
    aimsi_tensor views[AIMS_MSG_MAX_TENSORS];
    const size_t n = aimsi_msg_views(k->req, views);
    aimsi_buf b;
    aimsi_buf_init(&b);
    const size_t above = aimsi_url_compresses(url) ? AIMSI_COMPRESS_ABOVE : 0;
    const aims_status rc = aimsi_frame_encode(&h, views, n, NULL, above, &b);
    if (rc != AIMS_OK) {
        aimsi_buf_free(&b);
        return call_err(c, rc, "encoding the request for '%s': %s", k->service, aims_errmsg());
    }
    *out = aimsi_buf_take(&b, out_len);
    return AIMS_OK;
}

static aims_status send_stream(aims_client *c, cl_call *k, cl_pending *p)
{
    cl_conn *cc = NULL;
    AIMSI_TRY(conn_get(c, p->ep, &cc));
    p->cc = cc;
    pthread_mutex_lock(&c->mu);
    aims_status rc = c->closing ? AIMS_E_CLOSED : link_locked(c, p, 1);
    const uint64_t id = p->id;
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK) {
        conn_release(c, cc);
        return call_err(c, rc, "%s: %s", p->ep->url,
                        rc == AIMS_E_OVERLOADED
                            ? "too many calls in flight (max_pending); retry after 10 ms"
                            : "client closing");
    }
    void *frame = NULL;
    size_t len = 0;
    rc = encode_request(c, k, p->ep->url, id, p->deadline_ns, &frame, &len);
    if (rc == AIMS_OK) {
        rc = cc->slot->vt.send(cc->slot->inst, cc->conn, frame, len);
        if (rc == AIMS_E_OVERLOADED) {
            /* The connection's send queue is full: the peer reads slower than
             * we write. Short back-off hint, like a service's queue-full reply. */
            call_err(c, rc, "%s: send queue full (peer not keeping up); retry after 10 ms",
                     p->ep->url);
        } else if (rc != AIMS_OK) {
            call_err(c, rc, "%s: send failed: %s", p->ep->url, aims_strerror(rc));
        }
    }
    if (rc == AIMS_OK) {
        conn_release(c, cc);
        return AIMS_OK;
    }
    pthread_mutex_lock(&c->mu);
    const int won = unlink_locked(c, p);
    if (rc == AIMS_E_CLOSED || rc == AIMS_E_IO) {
        (void)conn_detach_locked(c, cc); /* our reference keeps it above 0 */
    }
    const int last = --cc->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) {
        conn_finish(c, cc);
    }
    if (!won) {
        /* on_close got there first and delivers; our send error is moot. */
        return AIMS_OK;
    }
    return rc;
}

/* ---- views ----------------------------------------------------------------------------- */

static void health_changed(void *user, aims_instance id, aims_health_state from,
                           aims_health_state to)
{
    (void)from;
    cl_svc *sv = user;
    aims_balancer_set_available(sv->lb, id, to == AIMS_HEALTH_HEALTHY);
}

static void svc_free(cl_svc *sv)
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
        aims_health_on_change(sv->hl, health_changed, sv) != AIMS_OK) {
        svc_free(sv);
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
        if (aims_registry_address(c->reg, ids[i], url, sizeof url, &ulen) != AIMS_OK) {
            continue; /* gone meanwhile, or an address we cannot hold */
        }
        cl_ep *e = ep_get_locked(c, url);
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
    for (unsigned i = 0; i < n; i++) {
        if (k->tried[i] == id) {
            return 1;
        }
    }
    return 0;
}

/* Resolve + pick for an attempt of k: sets k->sv, k->inst and *out_ep. */
static aims_status pick(aims_client *c, cl_call *k, cl_ep **out_ep)
{
    pthread_mutex_lock(&c->mu);
    if (k->addr != NULL) {
        cl_ep *e = ep_get_locked(c, k->addr);
        pthread_mutex_unlock(&c->mu);
        if (e == NULL) {
            return call_err(c, AIMS_E_NOMEM, "%s: out of memory", k->addr);
        }
        k->sv = NULL;
        k->inst = 0;
        *out_ep = e;
        return AIMS_OK;
    }
    if (c->reg == NULL) {
        pthread_mutex_unlock(&c->mu);
        return call_err(c, AIMS_E_STATE,
                        "calling '%s' by name needs a registry (aims_client_use_registry/join)",
                        k->service);
    }
    cl_svc *sv = svc_get_locked(c, k->service);
    if (sv == NULL) {
        pthread_mutex_unlock(&c->mu);
        return call_err(c, AIMS_E_NOMEM, "service '%s': out of memory for its view",
                        k->service);
    }
    const uint64_t rev = aims_registry_revision(c->reg);
    if (sv->rev != rev) {
        const aims_status rc = svc_refresh_locked(c, sv, rev);
        if (rc != AIMS_OK && sv->rev == UINT64_MAX) {
            pthread_mutex_unlock(&c->mu);
            return call_err(c, rc, "service '%s': reading the registry failed", k->service);
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
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK || e == NULL) {
        if (rc == AIMS_OK && counted) {
            aims_balancer_done(sv->lb, id, 0, 1);
        }
        char why[AIMSI_URL_MAX + 400];
        if (aimsi_regbk_why(reg_stop, reg_ctx, why, sizeof why) > 0) {
            /* say why the view is empty: the joined registry is unreachable */
            return call_err(c, AIMS_E_NOTFOUND, "service '%s': no live instance; %s",
                            k->service, why);
        }
        return call_err(c, AIMS_E_NOTFOUND, "service '%s': no live instance", k->service);
    }
    k->sv = sv;
    k->inst = id;
    k->lb_counted = counted;
    *out_ep = e;
    return AIMS_OK;
}

/* ---- retries and outcomes ------------------------------------------------------------- */

static int retryable(aims_status st)
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
    const double dt = (double)(now - c->bucket_ns) * 1e-9;
    if (dt <= 0) {
        return;
    }
    c->bucket_ns = now;
    c->tokens += dt * (double)c->retry_min;
    c->recent_calls *= exp(-dt / 10.0);
}

static double bucket_cap(const aims_client *c)
{
    return c->retry_budget * c->recent_calls + 10.0 * (double)c->retry_min;
}

/* Count a call into the bucket. */
static void bucket_deposit(aims_client *c)
{
    const uint64_t now = aimsi_now_ns();
    pthread_mutex_lock(&c->mu);
    bucket_refill_locked(c, now);
    c->recent_calls += 1.0;
    c->tokens += c->retry_budget;
    const double cap = bucket_cap(c);
    if (c->tokens > cap) {
        c->tokens = cap;
    }
    pthread_mutex_unlock(&c->mu);
}

/* May call k try again after status st? Withdraws a token when yes. */
static int retry_ok(aims_client *c, cl_call *k, aims_status st, const char *labels)
{
    /* A try abandoned at its share of the deadline (client_try.c) is retried. */
    const int try_expired = st == AIMS_E_TIMEOUT && k->try_ns < k->deadline_ns &&
                            aimsi_now_ns() >= k->try_ns;
    if ((k->flags & AIMS_CALL_IDEMPOTENT) == 0 || k->addr != NULL || k->no_retry ||
        (!retryable(st) && !try_expired) ||
        k->attempts >= (unsigned)c->max_attempts || aimsi_now_ns() >= k->deadline_ns) {
        return 0;
    }
    /* A request that provably never reached a handler retries outside the
     * budget (gRPC A6): it adds no load, and a drain's window (name gone,
     * registry not yet updated) must not drain the bucket. */
    const int free_retry = k->unsent && st == AIMS_E_CLOSED;
    pthread_mutex_lock(&c->mu);
    int ok = !c->closing;
    if (ok && !free_retry) {
        bucket_refill_locked(c, aimsi_now_ns());
        const double cap = bucket_cap(c);
        if (c->tokens > cap) {
            c->tokens = cap;
        }
        ok = c->tokens >= 1.0;
        if (ok) {
            c->tokens -= 1.0;
        }
    }
    pthread_mutex_unlock(&c->mu);
    aims_metrics_count(c->mx, ok ? "aims_client_retries_total" : "aims_client_retries_denied_total",
                       labels, 1);
    return ok;
}

/* Report an attempt's outcome to the balancer and health tracker. */
static void report(cl_call *k, aims_status st)
{
    if (k->sv == NULL) {
        return;
    }
    const uint64_t lat = aimsi_now_ns() - k->attempt_ns;
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
        aims_health_report(k->sv->hl, k->inst, 1);
    }
    k->sv = NULL;
}

static void call_metrics(aims_client *c, const cl_call *k, aims_status st)
{
    char buf[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(buf, sizeof buf, "service=\"%s\"", k->service);
    aims_metrics_count(c->mx, "aims_client_calls_total", buf, 1);
    if (st != AIMS_OK) {
        aims_metrics_count(c->mx, "aims_client_errors_total", buf, 1);
    }
    aims_metrics_observe(c->mx, "aims_client_latency_ns", buf, aimsi_now_ns() - k->start_ns);
}

/* Start one attempt: pick, make the pending, send. On AIMS_OK the attempt
 * completes later through deliver(). On failure nothing is in flight and the
 * attempt was reported. */
static aims_status attempt_start(aims_client *c, cl_call *k, aims_msg *dst, cl_pending **out)
{
    if (aimsi_now_ns() >= k->deadline_ns) {
        return call_err(c, AIMS_E_TIMEOUT, "service '%s' method '%s': deadline passed",
                        k->service, k->method);
    }
    cl_ep *e = NULL;
    const aims_status prc = pick(c, k, &e);
    if (prc != AIMS_OK) {
        /* Nothing to retry on: another pick would see the same view. */
        k->no_retry = 1;
        return prc;
    }
    if (k->inst != 0 && k->attempts < CL_MAX_TRIED) {
        k->tried[k->attempts] = k->inst;
    }
    k->attempts++;
    k->attempt_ns = aimsi_now_ns();
    cl_pending *p = pending_new(c, e, k->deadline_ns, dst == NULL ? k : NULL, dst);
    if (p == NULL) {
        report(k, AIMS_E_NOMEM);
        return call_err(c, AIMS_E_NOMEM, "service '%s': out of memory", k->service);
    }
    const int may_retry = (k->flags & AIMS_CALL_IDEMPOTENT) != 0 && k->sv != NULL;
    const unsigned left = (unsigned)c->max_attempts > k->attempts
                              ? (unsigned)c->max_attempts - k->attempts + 1u
                              : 1u;
    p->try_ns = aimsi_try_deadline(k->sv != NULL ? &k->sv->lat : NULL, k->attempt_ns,
                                   k->deadline_ns, may_retry ? left : 1u);
    k->try_ns = p->try_ns;
    const aims_status rc = e->inproc ? send_inproc(c, k, p) : send_stream(c, k, p);
    if (rc != AIMS_OK) {
        report(k, rc);
        /* Not linked: only our references remain. */
        atomic_store_explicit(&p->refs, 1, memory_order_relaxed);
        pending_unref(p);
        return rc;
    }
    /* Async: from here on p (and k) may already be finished on another thread. */
    *out = dst != NULL ? p : NULL;
    return AIMS_OK;
}

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
        const int won = unlink_locked(c, p);
        pthread_mutex_unlock(&c->mu);
        if (won) {
            pending_unref(p); /* the link's: a late completion finds nothing */
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

static aims_status call_sync(aims_client *c, cl_call *k, aims_msg *reply)
{
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", k->service);
    if (k->addr == NULL) {
        bucket_deposit(c);
    }
    aims_status st;
    for (;;) {
        cl_pending *p = NULL;
        uint64_t hint = 0;
        st = attempt_start(c, k, reply, &p);
        k->unsent = st != AIMS_OK;
        if (st == AIMS_OK) {
            st = wait_sync(c, p);
            hint = st == AIMS_E_OVERLOADED ? aimsi_retry_hint_ns(p->err) : 0;
            k->unsent = p->unsent;
            report(k, st);
            if (st != AIMS_OK) {
                const char *why = p->err[0] != '\0' ? p->err : aims_strerror(st);
                call_err(c, st, "service '%s' method '%s' at %s: %s", k->service, k->method,
                         p->ep->url, why);
            }
            pending_unref(p); /* the waiter's */
        }
        const uint64_t now = aimsi_now_ns();
        if (st == AIMS_OK || now + hint >= k->deadline_ns || !retry_ok(c, k, st, labels)) {
            break;
        }
        if (hint > 0) {
            const struct timespec ts = {(time_t)(hint / 1000000000u),
                                        (long)(hint % 1000000000u)};
            (void)nanosleep(&ts, NULL);
        }
    }
    call_metrics(c, k, st);
    return st;
}

/* ---- async calls ------------------------------------------------------------------------ */

static void call_free(cl_call *k)
{
    aims_msg_destroy(k->req_copy);
    aimsi_free(k);
}

static void finish_call(aims_client *c, cl_call *k, aims_status st, const aims_msg *reply,
                        const char *err)
{
    call_metrics(c, k, st);
    k->done(k->user, st, reply, err != NULL ? err : "");
    call_free(k);
}

/* Run attempts of k until one is in flight or the call is over (any thread
 * but a transport's: a retry may dial). */
static void run_async(aims_client *c, cl_call *k)
{
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", k->service);
    for (;;) {
        cl_pending *p = NULL;
        const aims_status st = attempt_start(c, k, NULL, &p);
        if (st == AIMS_OK) {
            return; /* from here on k may already be finished */
        }
        k->unsent = 1;
        if (!retry_ok(c, k, st, labels)) {
            finish_call(c, k, st, NULL, aims_errmsg());
            return;
        }
    }
}

/* The outcome of an async attempt (the deliverer's thread). */
static void attempt_finished(aims_client *c, cl_call *k, aims_status st, const aims_msg *reply,
                             const char *err)
{
    report(k, st);
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", k->service);
    const uint64_t hint = st == AIMS_E_OVERLOADED ? aimsi_retry_hint_ns(err) : 0;
    const uint64_t now = aimsi_now_ns();
    if (st != AIMS_OK && now + hint < k->deadline_ns && retry_ok(c, k, st, labels)) {
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
    finish_call(c, k, st, reply, err);
}

/* ---- the client thread --------------------------------------------------------------------- */

static void sweep_expired(aims_client *c)
{
    const uint64_t now = aimsi_now_ns();
    cl_pending *dead = NULL;
    pthread_mutex_lock(&c->mu);
    for (cl_pending *p = c->plist.next; p != &c->plist;) {
        cl_pending *nx = p->next;
        if (p->call != NULL && p->try_ns <= now && unlink_locked(c, p)) {
            p->hnext = dead;
            dead = p;
        }
        p = nx;
    }
    pthread_mutex_unlock(&c->mu);
    while (dead != NULL) {
        cl_pending *p = dead;
        dead = p->hnext;
        deliver(p, AIMS_E_TIMEOUT, NULL,
                p->try_ns < p->deadline_ns ? "try timed out (its share of the deadline)"
                                           : "deadline passed");
        pending_unref(p);
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
            if (probe_now && st != AIMS_HEALTH_HEALTHY && n_probe < CL_PROBE_MAX) {
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

static void *client_thread(void *arg)
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
        const uint64_t now = aimsi_now_ns();
        if (now - c->health_ns >= CL_IDLE_NS) {
            c->health_ns = now;
            health_tick(c);
        }
        pthread_mutex_lock(&c->mu);
        if (c->closing || rq_ready_locked(c, aimsi_now_ns(), &wake, 0) != NULL) {
            continue;
        }
        uint64_t until = aimsi_now_ns() + (c->n_async > 0 ? CL_SWEEP_NS : CL_IDLE_NS);
        until = wake != 0 && wake < until ? wake : until;
        struct timespec ts;
        ts.tv_sec = (time_t)(until / 1000000000u);
        ts.tv_nsec = (long)(until % 1000000000u);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- public API ----------------------------------------------------------------------------- */

#define CLIENT_OK(c) aimsi_obj_ok((c), AIMSI_MAGIC_CLIENT)

static void client_free(aims_client *c)
{
    for (cl_svc *s = c->svcs; s != NULL;) {
        cl_svc *nx = s->next;
        svc_free(s);
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
    aims_registry_destroy(c->reg_owned);
    aimsi_metrics_destroy_owned(c->mx);
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
    pthread_mutex_init(&c->mu, NULL);
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
    c->tokens = (double)c->retry_min;
    c->seed = aimsi_now_ns() ^ (uint64_t)(uintptr_t)c;
    c->max_frame = (uint64_t)aimsi_param_default(AIMS_CLIENT_MAX_FRAME);
    const aims_transport_hooks hooks = {c, NULL, on_frame, on_close};
    aimsi_ttable_init(&c->tt, &hooks, c->max_frame);
    if (aimsi_metrics_create_owned(&c->mx) != AIMS_OK) {
        client_free(c);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_client_create: out of memory");
    }
    if (pthread_create(&c->thread, NULL, client_thread, c) != 0) {
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
            conn_close(cc);
        }
    }
    /* Fail what is still in flight, then queued retries. */
    cl_pending *dead = NULL;
    pthread_mutex_lock(&c->mu);
    while (c->plist.next != &c->plist) {
        cl_pending *p = c->plist.next;
        unlink_locked(c, p);
        p->hnext = dead;
        dead = p;
    }
    cl_call *rq = c->rq_head;
    c->rq_head = c->rq_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (dead != NULL) {
        cl_pending *p = dead;
        dead = p->hnext;
        deliver(p, AIMS_E_CLOSED, NULL, "client destroyed");
        pending_unref(p);
    }
    while (rq != NULL) {
        cl_call *k = rq;
        rq = k->qnext;
        finish_call(c, k, AIMS_E_CLOSED, NULL, "client destroyed");
    }
    /* Nodes may still hold pendings (queued work): wait for their completions. */
    pthread_mutex_lock(&c->mu);
    while (c->node_refs > 0) {
        pthread_cond_wait(&c->cv, &c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    client_free(c);
}

AIMS_API aims_status aims_client_set_param_i64(aims_client *c, aims_param param, int64_t value)
{
    if (!CLIENT_OK(c)) {
        return AIMSI_MISUSE("not a client");
    }
    AIMSI_TRY(aimsi_param_check(&c->obj, param, 740, 759, AIMS_PARAM_I64, (double)value));
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
    default: break;
    }
    if (param == AIMS_CLIENT_RETRY_MIN && c->tokens > bucket_cap(c)) {
        c->tokens = bucket_cap(c);
    }
    pthread_mutex_unlock(&c->mu);
    return AIMS_OK;
}

AIMS_API aims_status aims_client_set_param_f64(aims_client *c, aims_param param, double value)
{
    if (!CLIENT_OK(c)) {
        return AIMSI_MISUSE("not a client");
    }
    AIMSI_TRY(aimsi_param_check(&c->obj, param, 740, 759, AIMS_PARAM_F64, value));
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

AIMS_API aims_status aims_client_use_registry(aims_client *c, aims_registry *r)
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
        return call_err(c, AIMS_E_MISUSE, "client call: client, service, method or req invalid");
    }
    const size_t sl = strnlen(service, AIMSI_FRAME_MAX_SERVICE + 1);
    const size_t ml = strnlen(method, AIMSI_FRAME_MAX_METHOD + 1);
    if (sl == 0 || sl > AIMSI_FRAME_MAX_SERVICE || ml > AIMSI_FRAME_MAX_METHOD) {
        return call_err(c, AIMS_E_INVAL, "client call: service must be 1..%u bytes, method <= %u",
                        AIMSI_FRAME_MAX_SERVICE, AIMSI_FRAME_MAX_METHOD);
    }
    if (timeout_ms < 0 || timeout_ms > 86400000) {
        return call_err(c, AIMS_E_INVAL, "client call: timeout_ms %lld outside 0..86400000",
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
    k->deadline_ns = k->start_ns + ms_to_ns(timeout_ms > 0 ? timeout_ms : c->timeout_ms);
}

AIMS_API aims_status aims_client_call(aims_client *c, const char *service, const char *method,
                                      const aims_msg *req, aims_msg *reply, unsigned flags,
                                      int64_t timeout_ms)
{
    AIMSI_TRY(check_call(c, service, method, req, timeout_ms));
    if (!aimsi_obj_ok(reply, AIMSI_MAGIC_MSG) || reply == req) {
        return call_err(c, AIMS_E_MISUSE, "aims_client_call: reply is not a message (or is req)");
    }
    aims_msg_clear(reply);
    cl_call k;
    call_init(c, &k, service, method, req, flags, timeout_ms);
    return call_sync(c, &k, reply);
}

AIMS_API aims_status aims_client_call_addr(aims_client *c, const char *address,
                                           const char *service, const char *method,
                                           const aims_msg *req, aims_msg *reply,
                                           int64_t timeout_ms)
{
    AIMSI_TRY(check_call(c, service, method, req, timeout_ms));
    if (!aimsi_obj_ok(reply, AIMSI_MAGIC_MSG) || reply == req || address == NULL) {
        return call_err(c, AIMS_E_MISUSE, "aims_client_call_addr: address or reply invalid");
    }
    const size_t al = strnlen(address, AIMSI_URL_MAX + 1);
    if (al == 0 || al > AIMSI_URL_MAX || strstr(address, "://") == NULL) {
        return call_err(c, AIMS_E_INVAL, "aims_client_call_addr: address '%.64s' is not a URL",
                        address);
    }
    aims_msg_clear(reply);
    cl_call k;
    call_init(c, &k, service, method, req, 0, timeout_ms);
    k.addr = address;
    return call_sync(c, &k, reply);
}

AIMS_API aims_status aims_client_call_async(aims_client *c, const char *service,
                                            const char *method, const aims_msg *req,
                                            unsigned flags, int64_t timeout_ms,
                                            aims_done_fn done, void *user)
{
    aims_status rc = check_call(c, service, method, req, timeout_ms);
    if (rc == AIMS_OK && done == NULL) {
        rc = call_err(c, AIMS_E_MISUSE, "aims_client_call_async: done is NULL");
    }
    if (rc != AIMS_OK) {
        if (done != NULL) {
            done(user, rc, NULL, aims_errmsg());
        }
        return rc;
    }
    const size_t sl = strlen(service), ml = strlen(method);
    cl_call *k = aimsi_calloc(1, sizeof(*k) + sl + ml + 2);
    if (k == NULL) {
        rc = call_err(c, AIMS_E_NOMEM, "aims_client_call_async: out of memory");
        done(user, rc, NULL, aims_errmsg());
        return rc;
    }
    char *names = (char *)(k + 1);
    memcpy(names, service, sl + 1);
    memcpy(names + sl + 1, method, ml + 1);
    call_init(c, k, names, names + sl + 1, req, flags, timeout_ms);
    k->done = done;
    k->user = user;
    if ((flags & AIMS_CALL_IDEMPOTENT) != 0 && c->max_attempts > 1) {
        /* Retries run after this returns: they need their own request. */
        rc = aims_msg_create(&k->req_copy);
        if (rc == AIMS_OK) {
            rc = aimsi_msg_copy(k->req_copy, req);
        }
        if (rc != AIMS_OK) {
            call_free(k);
            rc = call_err(c, rc, "aims_client_call_async: copying the request: %s",
                          aims_errmsg());
            done(user, rc, NULL, aims_errmsg());
            return rc;
        }
        k->req = k->req_copy;
    }
    bucket_deposit(c);
    /* The first attempt runs here; a failure to start (no instance, no memory)
     * is reported through done before we return, and returned. */
    cl_pending *p = NULL;
    char labels[AIMSI_FRAME_MAX_SERVICE + 16];
    snprintf(labels, sizeof labels, "service=\"%s\"", service);
    for (;;) {
        rc = attempt_start(c, k, NULL, &p);
        if (rc == AIMS_OK) {
            return AIMS_OK;
        }
        k->unsent = 1;
        if (!retry_ok(c, k, rc, labels)) {
            break;
        }
    }
    char text[AIMSI_ERRMSG_CAP];
    snprintf(text, sizeof text, "%s", aims_errmsg());
    finish_call(c, k, rc, NULL, text);
    call_err(c, rc, "%s", text);
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
