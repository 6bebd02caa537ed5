/*
 * aimsi_node.h -- node-private: the layout of aims_node and aims_service
 * and the functions the files implementing them share (node.c, service.c,
 * svc_worker.c, svc_member.c, svc_admit.c, node_view.c). Three files outside
 * the node read a field or two and include it too: authz/authz.c (the
 * node's policy slot), registry/regjoin.c (the node's TLS config) and
 * svc_infer.c (aims_service_swap's audit record).
 *
 * Why its own header: everything else in src/svc reaches a node through the
 * contracts in aimsi_local.h, aimsi_svckind.h, aimsi_regsync.h and
 * aimsi_dispatch.h; only the files listed above may read these fields.
 */
#ifndef AIMSI_NODE_H
#define AIMSI_NODE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "aims/aims_orch.h"
#include "aims/aims_svc.h"
#include "aimsi_msg.h"
#include "aimsi_cancel.h"
#include "aimsi_climit.h"
#include "aimsi_local.h"
#include "aimsi_svckind.h"
#include "aimsi_regsync.h"
#include "transport/aimsi_transport.h"

/* ---- node / service internals (node.c and service.c + svc_dispatch.c + svc_drain.c ONLY) ------------------
 *
 * Shared layout of the two files that implement nodes and services. Other
 * svc files use the functions above, never these fields.
 *
 * Locks. node->lock guards the service queues, the worker state, the address
 * list and the connection list. svc->reg_lock guards the registry state of one
 * service (held across registry calls; never together with node->lock).
 * conn->lock guards conn->tconn against close while a worker sends. Order:
 * nothing nests except conn->lock -> (transport internals). The inline path
 * takes no lock: service lookup reads an append-only array, the concurrency
 * slot is an atomic try-acquire, the reply comes from a lock-free spare list. */


#define AIMSI_NODE_MAX_SERVICES 64
#define AIMSI_NODE_MAX_ADDRS 8
#define AIMSI_SVC_SPARES 4

/* One queued request (service.c). */
typedef struct aimsi_qitem {
    struct aimsi_qitem *next, *prev;
    aimsi_work w;
    aims_msg req;            /* owned deep copy */
    aims_msg reply;
    char method[AIMSI_FRAME_MAX_METHOD + 1];
    uint64_t t_enq;          /* monotonic ns at acceptance */
    int64_t rows;            /* work units (infer: input rows; else 1): svc_admit.c */
    aimsi_local_done done;
    void *ctx;
} aimsi_qitem;

enum { AIMSI_SVC_NEW = 0, AIMSI_SVC_RUNNING = 1, AIMSI_SVC_CLOSING = 2 };

struct aims_service {
    aimsi_obj obj;
    aims_node *node;
    char name[AIMSI_FRAME_MAX_SERVICE + 1];
    size_t base_len;                 /* length of the part before '@' */
    char labels[AIMSI_FRAME_MAX_SERVICE + 96];
    const aimsi_svc_kind *kind;
    void *impl;
    /* parameters (set before start) */
    int64_t p_concurrency, p_queue_cap, p_batch_max, p_batch_delay_us, p_inline, p_weight;
    int64_t p_climit_tol_pct, p_lifo; /* svc_admit.c: adaptive limit tolerance (0 off), LIFO */
    int64_t limit;                   /* resolved concurrency limit (>= 1) */
    int can_inline;                  /* resolved at start */
    _Atomic int state;
    _Atomic int64_t inflight;        /* concurrency slots in use */
    _Atomic int64_t queued;          /* mirrors the queue length (lock-free reads) */
    _Atomic int64_t queued_rows;     /* rows of the queued items (svc_admit.c) */
    _Atomic int64_t running_rows;    /* rows of the items workers are running */
    int batch_waiting;               /* a worker is filling a batch (node->lock) */
    aimsi_qitem *head, *tail;        /* node->lock */
    /* statistics */
    _Atomic uint64_t n_req, n_err, n_rej, n_batches, n_rows, busy_ns, ewma_ns;
    _Atomic uint64_t mdev_ns;        /* mean deviation of run() from ewma_ns (svc_admit.c) */
    _Atomic uint64_t row_ewma_ns;    /* EWMA of run() time per row (AIMSI_INLINE_IF_CHEAP_ROW) */
    /* the per-call metrics series, looked up once (aimsi_metrics_series) */
    _Atomic(struct mx_entry *) mx_req, mx_busy, mx_lat;
    uint64_t busy_since_ns;          /* node->lock: queue non-empty since (0: empty) */
    aimsi_climit climit;             /* adaptive limit on queued + running (svc_climit.c) */
    _Atomic(aims_msg *) spare[AIMSI_SVC_SPARES];
    /* registry (reg_lock) */
    pthread_mutex_t reg_lock;
    int registered;
    uint64_t reg_id;
    int reg_remote;                  /* registered through the remote ops */
    int reg_leaving;                 /* stop deregistered it: beats must not re-register */
    _Atomic int stopping;            /* a start or stop is in progress (one at a time) */
};

struct aims_node {
    aimsi_obj obj;
    _Atomic int refs;                /* owner + inproc lookups */
    _Atomic int closing;             /* destroy started: local calls get CLOSED */
    _Atomic int active;              /* aimsi_node_call_local calls in progress */
    char name[AIMS_MSG_MAX_NAME + 1];
    pthread_mutex_t lock;
    pthread_mutex_t cfg_lock;        /* serialises listen / add_transport (ttable) */
    pthread_cond_t work_cond;        /* workers: queue changed (CLOCK_MONOTONIC) */
    pthread_cond_t idle_cond;        /* drains: a service went idle */
    pthread_cond_t hb_cond;          /* heartbeat thread: wake up / stop */
    /* parameters */
    int64_t p_workers, p_max_frame, p_conn_inflight, p_heartbeat_ms, p_insecure, p_drain_ms,
        p_drain_grace_ms;
    /* services: append-only; readers load n_svc (acquire) then the pointers */
    _Atomic(aims_service *) svc[AIMSI_NODE_MAX_SERVICES];
    _Atomic size_t n_svc;
    size_t rr;                       /* worker round robin cursor */
    /* workers */
    pthread_t *threads;
    size_t n_threads;
    int workers_stop;
    /* heartbeat */
    pthread_t hb_thread;
    int hb_started, hb_stop;
    /* addresses and listeners */
    char addr[AIMSI_NODE_MAX_ADDRS][AIMSI_URL_MAX];
    void *listener[AIMSI_NODE_MAX_ADDRS];        /* NULL for inproc */
    aimsi_tslot *lslot[AIMSI_NODE_MAX_ADDRS];
    aimsi_tslot *listen_pending;     /* slot being listened on (accept race) */
    size_t n_addr;
    int tt_ready;
    aimsi_ttable tt;
    struct aimsi_conn *conns;        /* open connections (node->lock) */
    /* registries */
    aims_registry *reg;
    const aimsi_reg_ops *rops;
    void *rctx;
    aims_metrics *mx;
    _Atomic(struct aimsi_authz *) authz; /* policy + audit (authz/authz.c), lazily made */
    aimsi_cancel_tab cancels;        /* requests from connections that a CANCEL may reach */
};

/* service.c, svc_dispatch.c and svc_drain.c, for node.c */
aims_service *aimsi_svc_lookup(aims_node *n, const char *name);
/* Run or queue one request on s; done runs exactly once (see aimsi_local_done).
 * allow_inline: one of AIMSI_INLINE_* (aimsi_local.h). */
void aimsi_svc_dispatch(aims_service *s, const char *method, const aims_msg *req,
                        uint64_t deadline_ns, int allow_inline, aimsi_local_done done,
                        void *ctx, const _Atomic int *cancel, const char *caller);
/* Clock hand-over between node.c and the next aimsi_svc_dispatch on this
 * thread (one clock read per frame instead of three on the pipelined path):
 * `clock_in`, when nonzero, is a CLOCK_MONOTONIC reading taken moments ago
 * that dispatch uses as its "now" (and clears on entry, so a dispatch nested
 * in a handler never sees it); after an inline run dispatch leaves its end
 * time in `clock_out` (0 otherwise) for the caller to pass on to the next
 * frame of the same read burst. */
typedef struct aimsi_svc_clock {
    uint64_t clock_in, clock_out;
} aimsi_svc_clock;
extern _Thread_local aimsi_svc_clock aimsi_svc_tl_clock;
void aimsi_svc_destroy(aims_service *s);
/* Drain in phases (aims_node_destroy leaves the registry with every service,
 * waits one grace period, then finishes each): leave returns -1 when s is not
 * running (or another stop runs), else whether it was registered; finish
 * refuses new work, drains until `until` (monotonic ns), rejects leftovers,
 * waits for running handlers and calls kind->stop. */
int aimsi_svc_leave(aims_service *s);
void aimsi_svc_finish(aims_service *s, uint64_t until, int64_t timeout_ms);
int64_t aimsi_node_grace_ms(const aims_node *n);
/* Renew s's lease (heartbeat thread). */
void aimsi_svc_beat(aims_service *s);
/* The remote ops were replaced: s is no longer registered through them. */
void aimsi_svc_forget_remote(aims_service *s);
/* Workers: start (lazily, idempotent) and stop+join (node.c at destroy). */
aims_status aimsi_node_workers_start(aims_node *n);
void aimsi_node_workers_stop(aims_node *n);
/* node.c, for service.c */
aims_status aimsi_node_hb_start(aims_node *n);

/* ---- admission and queue discipline (svc_admit.c) -------------------------
 * All under node->lock but note_run. Queue lengths are in rows (qitem.rows:
 * an infer request's input rows, 1 for other kinds). check: may a request of
 * `own` rows arriving behind q queued rows be admitted (AIMS_OK; else
 * AIMS_E_OVERLOADED with a retry hint or AIMS_E_TIMEOUT, text in text[cap]).
 * push: append. take: the next item to run (FIFO) or NULL, also NULL when it
 * has more than `room` rows (it stays queued); items that must not run any
 * more are unlinked onto *dropped (via next) with w.status set. hint_ms: the
 * retry hint for a queue of q rows when `allowed_ns` of queueing is admissible. */
void aimsi_admit_note_run(aims_service *s, uint64_t old_ewma, uint64_t run_ns);
aims_status aimsi_admit_check(aims_service *s, int64_t q, int64_t own, uint64_t now,
                              uint64_t deadline, char *text, size_t cap);
void aimsi_admit_push(aims_service *s, aimsi_qitem *it, uint64_t now);
aimsi_qitem *aimsi_admit_take(aims_service *s, uint64_t now, aimsi_qitem **dropped, int64_t room);
uint64_t aimsi_admit_hint_ms(const aims_service *s, int64_t q, uint64_t allowed_ns);
/* A request ran and was answered sojourn_ns after it was queued: feeds the
 * adaptive limit (no lock needed). */
void aimsi_admit_note_done(aims_service *s, uint64_t sojourn_ns);

#endif /* AIMSI_NODE_H */
