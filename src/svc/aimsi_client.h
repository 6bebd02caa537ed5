/*
 * aimsi_client.h -- private to the aims_client files (client.c, client_send.c,
 * client_pick.c, client_call.c): the client's types and the functions they
 * share. client.c's top comment explains the design; nothing outside these
 * files includes this header (others go through the contract headers).
 */
#ifndef AIMSI_CLIENT_H
#define AIMSI_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../codec/aimsi_frame.h"
#include "../core/aimsi_core.h"
#include "transport/aimsi_transport.h"

#define CL_HASH 256u                  /* pending-id buckets (power of two) */
#define CL_MAX_TRIED 16u              /* instances remembered per call (>= max attempts) */
#define CL_SWEEP_NS 2000000u          /* async deadline sweep period while busy */
#define CL_IDLE_NS 100000000u         /* client thread period when idle; health expiry check */
#define CL_MAX_SERVICES 4096u

/* ---- per-try timeouts and retry hints (client_try.c) ------------------------
 * lat_ring: the last AIMSI_LAT_RING successful attempt latencies of one
 * service (racy but atomic). try_deadline: when a try started at `now` is
 * abandoned (== deadline for the last try). retry_hint_ns: the "retry after N
 * ms" of an AIMS_E_OVERLOADED text in ns (0: none). */
#define AIMSI_LAT_RING 64u
typedef struct aimsi_lat_ring {
    _Atomic uint64_t ns[AIMSI_LAT_RING];
    _Atomic unsigned next;
} aimsi_lat_ring;
void aimsi_lat_ring_note(aimsi_lat_ring *r, uint64_t ns);
uint64_t aimsi_lat_ring_p99(const aimsi_lat_ring *r);
uint64_t aimsi_try_deadline(const aimsi_lat_ring *r, uint64_t now, uint64_t deadline,
                            unsigned tries_left);
uint64_t aimsi_retry_hint_ns(const char *text);

typedef struct cl_ep cl_ep;
typedef struct cl_call cl_call;

/* The replies of one read burst not handled yet (aimsi_transport_tl_burst):
 * borrowed from the transport's read buffer until the burst ends. */
#define CL_BURST 64u
typedef struct cl_burst {
    uint64_t seq; /* the transport's burst these frames belong to */
    unsigned n;
    const void *frame[CL_BURST];
    size_t len[CL_BURST];
} cl_burst;

/* One stream connection (conn_user of the transport's hooks). */
typedef struct cl_conn {
    aims_client *c;
    cl_ep *ep;
    aimsi_tslot *slot;
    void *conn;
    /* the endpoint's + one per sender in progress; atomic, so a sender drops
     * its reference without c->mu (taken under c->mu while ep->conn == this) */
    atomic_int refs;
    int dead; /* on_close ran (or send saw CLOSED) */
    cl_burst burst; /* the I/O thread's (aimsi_client_on_frame) */
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
    /* the per-call metrics series, looked up once (aimsi_metrics_series) */
    _Atomic(struct mx_entry *) mx_calls, mx_lat;
    char name[];
} cl_svc;

typedef struct cl_pending {
    struct cl_pending *prev, *next; /* c->plist */
    struct cl_pending *hnext;       /* id hash (stream attempts) */
    atomic_int refs;
    int linked;   /* under c->mu */
    int hashed;
    int unsent;   /* failed before the request reached a handler (node closed) */
    _Atomic int cancel; /* inproc: the node's view of a cancel (svc_cancel.c) */
    uint64_t id;
    uint64_t deadline_ns;
    uint64_t try_ns; /* this try is abandoned then (<= deadline_ns; client_try.c) */
    uint64_t rx_ns;  /* when its reply was read (a burst's clock), or 0: read the clock */
    aims_client *c;
    cl_ep *ep;
    cl_conn *cc;  /* stream attempts */
    cl_call *call; /* async: the call this attempt belongs to; NULL: sync */
    int node_holds_call; /* inproc: the node borrows call->req_copy; node_done drops the hold */
    int rd; /* holds one of call->rdgate's readers (AIMS_CALL_KEEP_REQUEST, client_keep.c) */
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
    int deposit;  /* count the call into the retry bucket at its first pick (one lock) */
    int no_retry; /* failed before reaching an instance (no instance, no registry) */
    int unsent;   /* the last attempt provably never reached a handler */
    aims_instance tried[CL_MAX_TRIED];
    /* the attempt in progress */
    cl_svc *sv;
    cl_svc *msv; /* the view of the last pick, kept for the call's metrics */
    aims_instance inst;
    int lb_counted; /* the balancer counted this attempt (pick, not fallback) */
    uint64_t attempt_ns;
    uint64_t done_ns; /* when the last reported attempt ended (aimsi_client_report) */
    uint64_t rx_ns;   /* the ending attempt's reply was read then (0: unknown; one report) */
    aims_done_fn done;
    void *user;
    /* cancellation and hedging (client_cancel.c, client_hedge.c); under c->mu */
    int cancelled;        /* no further attempt; the outcome is AIMS_E_CANCELLED */
    cl_pending *cur;      /* the attempt linked now, or NULL */
    aims_instance cur_inst; /* the instance of the last linked attempt */
    aims_instance avoid;  /* never picked (a hedge avoids its first copy's instance) */
    cl_call **slot;       /* cleared when the call finishes, or NULL */
    /* async: senders still reading the call (client_send.c, "Who frees what");
     * 0 = only the finisher's reference, so a zeroed call needs no init */
    atomic_int holds;
    /* AIMS_CALL_KEEP_REQUEST (client_keep.c): req is the caller's, and done()
     * waits for its readers (senders encoding it, nodes holding it) */
    int keep;
    atomic_uint rdgate;      /* readers, | CL_RD_FIN once the call finished */
    aims_status fin_st;      /* a finish waiting for the last reader */
    aims_msg *fin_reply;     /* its reply, copied (or NULL) */
    char *fin_err;
};

/* Recycled blocks for calls and pendings (client_pool.c explains why): a
 * block fits a cl_pending or a cl_call with its service and method names. */
#define CL_NAMES_MAX (AIMSI_FRAME_MAX_SERVICE + AIMSI_FRAME_MAX_METHOD + 2u)
#define CL_POOL_BLOCK                                                                        \
    (sizeof(cl_pending) > sizeof(cl_call) + CL_NAMES_MAX ? sizeof(cl_pending)                \
                                                         : sizeof(cl_call) + CL_NAMES_MAX)
#define CL_POOL_KEEP 1024u /* blocks the call/pending pool keeps at most */
#define CL_MPOOL_KEEP 256u /* request copies (~10 KB each) the message pool keeps */
/* Tensor bytes an async call's request copy keeps inside its pooled block,
 * behind the message (client.c, copy_request): small requests -- the
 * pipelined case -- then cost no allocation and no cross-thread free. */
#define CL_REQ_INLINE 1024u
#define CL_MPOOL_BLOCK (sizeof(aims_msg) + 16u + CL_REQ_INLINE)
typedef struct cl_pool {
    size_t block;                 /* payload bytes of a pooled block */
    size_t keep;                  /* blocks kept at most */
    pthread_mutex_t mu;           /* allocating threads only */
    struct cl_blk *own;           /* under mu: blocks to hand out */
    _Atomic(struct cl_blk *) ret; /* lock-free stack: blocks given back */
    atomic_size_t kept;           /* blocks held (own + ret), roughly */
} cl_pool;
void aimsi_client_pool_init(cl_pool *pl, size_t block, size_t keep);
void aimsi_client_pool_fini(cl_pool *pl);
/* A block of `size` bytes (from the pool when it fits), or NULL: take leaves
 * it as it was, get zeroes it. */
void *aimsi_client_pool_take(cl_pool *pl, size_t size);
void *aimsi_client_pool_get(cl_pool *pl, size_t size);
/* Give a block of pool_get back (any thread; NULL: no-op). */
void aimsi_client_pool_put(void *p);
/* Headerless blocks of exactly pl->block bytes, plain aimsi_malloc pointers
 * (a request frame the encoder may realloc): take on the allocating side,
 * put_raw(pool, p) from any thread (the transport's release hook). */
void *aimsi_client_pool_take_raw(cl_pool *pl);
void aimsi_client_pool_put_raw(void *pool, void *p);
/* Request frames up to this size are encoded into recycled blocks; a block
 * has AIMSI_FRAME_LINK more bytes behind, lent to the stream transport as the
 * frame's hand-over node (aimsi_frame_rel.link). */
#define CL_FRAME_BLOCK 2048u
#define CL_FPOOL_KEEP 512u

/* Options of aimsi_client_async_start (client.c). */
typedef struct cl_start {
    aims_instance avoid; /* never pick this instance (0: none) */
    int no_deposit;      /* a hedge: not a new call for the retry budget */
    int borrow;          /* req outlives the call: never copy it */
    cl_call **slot;      /* set to the call under c->mu, cleared when it finishes */
} cl_start;

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
        backoff_ms, hedge_ms;
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
    /* The client thread sleeps until the earliest try deadline of the async
     * calls in flight, not every CL_SWEEP_NS (client_call.c): next_try is a
     * lower bound of it (link lowers it, a sweep recomputes it); a link below
     * it while sweep_sleeping wakes the thread. */
    uint64_t next_try;
    int sweep_sleeping;
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
    struct aimsi_client_tok *token; /* mu: bearer token for "$auth" (client_token.c) */
    cl_pool pool;  /* calls and pendings (client_pool.c) */
    cl_pool mpool; /* async calls' request copies (aims_msg) */
    cl_pool fpool; /* request frames of stream connections (headerless) */
    struct cl_ahedge *ahedges; /* mu: async hedges waiting for their delay */
};

/* client_token.c: the client's bearer token, reference-counted so a renewal
 * never races a frame being encoded. take (under c->mu: the sender links its
 * call in the same hold): a reference or NULL (no token); view: fill a
 * borrowed "$auth" BYTES view of it (0 when t is NULL). */
typedef struct aimsi_client_tok aimsi_client_tok;
aimsi_client_tok *aimsi_client_bearer_take_locked(aims_client *c);
int aimsi_client_token_view(const aimsi_client_tok *t, aimsi_tensor *view);
void aimsi_client_token_drop(aimsi_client_tok *t);

static inline uint64_t aimsi_client_ms_to_ns(int64_t ms)
{
    return (uint64_t)ms * 1000000u;
}

/* Record a call failure: thread-local text (aims_errmsg and aims_client_errmsg). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
aims_status aimsi_client_call_err(const aims_client *c, aims_status code, const char *fmt, ...);
void aimsi_client_on_frame(void *conn_user, const void *frame, size_t len);
void aimsi_client_on_close(void *conn_user, aims_status why);
cl_ep *aimsi_client_ep_get_locked(aims_client *c, const char *url);
void aimsi_client_deliver(cl_pending *p, aims_status st, aims_msg *reply, const char *err);
cl_pending *aimsi_client_pending_new(aims_client *c, cl_ep *ep, uint64_t deadline_ns,
                                     cl_call *async, aims_msg *dst);
aims_status aimsi_client_send_inproc(aims_client *c, cl_call *k, cl_pending *p);
aims_status aimsi_client_send_stream(aims_client *c, cl_call *k, cl_pending *p);
void aimsi_client_pending_unref(cl_pending *p);
int aimsi_client_unlink_locked(aims_client *c, cl_pending *p);
void aimsi_client_conn_close(cl_conn *cc);
int aimsi_client_retryable(aims_status st);
aims_status aimsi_client_attempt_start(aims_client *c, cl_call *k, aims_msg *dst, cl_pending **out);
/* An async attempt on a connected stream endpoint is linked inside the pick's
 * own hold of c->mu (one hold per call on the caller's thread, not two):
 * aimsi_client_stream_link_locked links it (0: not linked, nothing changed;
 * the caller takes the usual path), aimsi_client_send_linked encodes and
 * sends it (client_send.c). */
typedef struct cl_slink {
    cl_conn *cc;
    uint64_t id;
    int defer;
    aimsi_client_tok *tok;
} cl_slink;
int aimsi_client_stream_link_locked(aims_client *c, cl_pending *p, cl_slink *out);
aims_status aimsi_client_send_linked(aims_client *c, cl_call *k, cl_pending *p, const cl_slink *sl,
                                     uint64_t now);
void aimsi_client_report(cl_call *k, aims_status st);
int aimsi_client_retry_ok(aims_client *c, cl_call *k, aims_status st, const char *labels);
void aimsi_client_call_metrics(aims_client *c, const cl_call *k, aims_status st);
void aimsi_client_svc_free(cl_svc *sv);
double aimsi_client_bucket_cap(const aims_client *c);
void aimsi_client_attempt_finished(aims_client *c, cl_call *k, aims_status st,
                                   const aims_msg *reply, const char *err);
void *aimsi_client_thread(void *arg);
void aimsi_client_finish_call(aims_client *c, cl_call *k, aims_status st, const aims_msg *reply,
                              const char *err);
aims_status aimsi_client_call_sync(aims_client *c, cl_call *k, aims_msg *reply);
void aimsi_client_call_free(cl_call *k);
/* Take / drop a sender's hold on an async call; the last drop frees it. */
void aimsi_client_call_hold(cl_call *k);
void aimsi_client_call_unref(cl_call *k);
aims_status aimsi_client_async_start(aims_client *c, const char *service, const char *method,
                                     const aims_msg *req, unsigned flags, int64_t timeout_ms,
                                     aims_done_fn done, void *user, const cl_start *opt);
void aimsi_client_conn_release(aims_client *c, cl_conn *cc);
int aimsi_client_token_take_locked(aims_client *c);
/* client_cancel.c: cancel the call *slot names (no-op once it finished). */
void aimsi_client_cancel(aims_client *c, cl_call *const *slot);
/* client_hedge.c: a sync idempotent call with a hedge after c->hedge_ms. */
aims_status aimsi_client_call_hedged(aims_client *c, const char *service, const char *method,
                                     const aims_msg *req, aims_msg *reply, unsigned flags,
                                     int64_t timeout_ms);
uint64_t aimsi_client_hedge_delay_ns(aims_client *c, const char *service);
/* client_hedge_async.c: an async idempotent call with a hedge; the client
 * thread's timer tick; the list drained by aims_client_destroy. */
aims_status aimsi_client_async_hedged(aims_client *c, const char *service, const char *method,
                                      const aims_msg *req, unsigned flags, int64_t timeout_ms,
                                      aims_done_fn done, void *user);
void aimsi_client_ahedge_tick(aims_client *c);
void aimsi_client_ahedge_fini(aims_client *c);

/* AIMS_CALL_KEEP_REQUEST (client_keep.c). rd_get before an attempt reads
 * k->req (attempt start), rd_put when it no longer does; keep_finish: 1 to
 * run done() now, 0 when the last reader will (the finisher's reference on k
 * goes with it). */
#define CL_RD_FIN 0x80000000u
void aimsi_client_rd_get(cl_call *k);
void aimsi_client_rd_put(cl_call *k);
int aimsi_client_keep_finish(cl_call *k, aims_status st, const aims_msg *reply, const char *err);
void aimsi_client_keep_free(cl_call *k);

#endif
