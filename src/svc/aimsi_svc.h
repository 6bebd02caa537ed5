/*
 * aimsi_svc.h -- internal header of src/svc (messages, transports, node,
 * service, client). src/svc may use every module below it (DESIGN.md §1).
 *
 * Who owns what:
 *   msg.c              struct aims_msg, conversion to/from wire frames
 *   transport/ files      the built-in stream transports (tcp://, ipc://) behind
 *                      the public aims_transport vtable, and the scheme table
 *   node.c service.c   nodes, services, inproc:// names, server side of frames
 *   svc_infer.c ...    the built-in services
 *   client.c           registry view, balancing, health, retries, pending calls
 */
#ifndef AIMSI_SVC_H
#define AIMSI_SVC_H

#include <stdarg.h>

#include "aims/aims_svc.h"
#include "aims/aims_tls.h"
#include "../core/aimsi_core.h"
#include "../codec/aimsi_frame.h"

/* Handle magics (AIMSI_MAGIC_MSG, _NODE, _SERVICE, _CLIENT): aimsi_core.h. */

#define AIMSI_MSG_MAX_ERROR 1024u
#define AIMSI_URL_MAX 256u
/* Frame payloads at least this big are zstd-compressed when that makes them
 * smaller and the link is worth it: requests when aimsi_url_compresses(url),
 * replies when the connection's peer compressed a request (the peer knows
 * where it is). */
#define AIMSI_COMPRESS_ABOVE (256u << 10)

/* Whether frames to this address should be compressed: not over ipc:// nor
 * tcp:// to a loopback host, where zstd (~0.5 GB/s at level 1) is slower than
 * the link -- a 6 MB float tensor round trip over ipc cost 4 x ~25 ms of
 * (de)compression for nothing; yes for other hosts and other schemes. */
int aimsi_url_compresses(const char *url);

/* ---- messages (msg.c) ------------------------------------------------------ */

typedef struct aimsi_mtensor {
    char name[AIMS_MSG_MAX_NAME + 1];
    uint8_t dtype;
    uint8_t ndim;
    uint64_t dims[AIMS_MSG_MAX_NDIM];
    const void *data; /* borrowed, or == owned */
    size_t bytes;
    void *owned;      /* aimsi_malloc'd storage, or NULL when borrowed */
} aimsi_mtensor;

struct aims_msg {
    aimsi_obj obj;
    size_t n;
    aimsi_mtensor t[AIMS_MSG_MAX_TENSORS];
    char *error;      /* aimsi_malloc'd UTF-8, or NULL */
    void *hold;       /* storage the borrowed tensors point into (a decoded
                         frame's bytes), freed with the message, or NULL */
    aimsi_frame *frame; /* decoded frame whose payload `hold`/tensors use, or NULL */
};

/* Element size of a dtype (0 for an unknown one). */
size_t aimsi_dtype_size(uint8_t dtype);

/* Fill `tensors` (cap AIMS_MSG_MAX_TENSORS) with borrowed views of m's tensors
 * for aimsi_frame_encode. Returns the count. */
size_t aimsi_msg_views(const aims_msg *m, aimsi_tensor *tensors);

/* Make `m` (cleared first) describe the tensors of a decoded REQUEST/REPLY frame.
 * Takes ownership of `bytes` (the encoded frame, aimsi_malloc'd) and of `f`'s
 * owned payload: the message borrows into them and frees them with itself.
 * On failure m is left empty and bytes/f are released too. */
aims_status aimsi_msg_adopt_frame(aims_msg *m, void *bytes, aimsi_frame *f);

/* Deep copy src into dst (cleared first): every tensor copied into storage dst
 * owns. Used when a borrowed request must outlive its caller (queued work). */
aims_status aimsi_msg_copy(aims_msg *dst, const aims_msg *src);

/* Move src's contents into dst (cleared first); src ends empty. No allocation. */
void aimsi_msg_move(aims_msg *dst, aims_msg *src);

/* Typed getters for request tensors, with the error text a caller should see
 * ("request tensor 'x' is missing" / "... must be i64 scalar"): a BYTES tensor
 * (any ndim <= 1), an integer scalar (I64 or I32, ndim 0 or one element). */
aims_status aimsi_msg_bytes(const aims_msg *m, const char *name, const char **out,
                            size_t *out_len);
aims_status aimsi_msg_int(const aims_msg *m, const char *name, int64_t *out);
/* Append a BYTES tensor / an i64 scalar (copied). */
aims_status aimsi_msg_put_bytes(aims_msg *m, const char *name, const void *p, size_t len);
aims_status aimsi_msg_put_i64(aims_msg *m, const char *name, int64_t v);

/* Initialise / release a message embedded in another struct (no handle alloc). */
void aimsi_msg_init(aims_msg *m);
void aimsi_msg_fini(aims_msg *m);

/* ---- transports (transport/ files) -------------------------------------------- */

/* Built-in stream transports: the same vtable hosts implement. */
const aims_transport *aimsi_transport_tcp(void);
const aims_transport *aimsi_transport_ipc(void);
/* tls:// (tls.c): the vtable of a config (cfg NULL: a placeholder whose listen
 * and dial say that no TLS config was set, or that the build has no TLS). */
const aims_transport *aimsi_transport_tls(aims_tls_config *cfg);
void aimsi_tls_config_ref(aims_tls_config *cfg);
/* Identities for the request path (node.c): the verified peer of a node
 * connection ("" when unauthenticated), and the node's own identity (its TLS
 * certificate's; what in-process callers carry), "" without TLS. */
struct aimsi_conn;
const char *aimsi_node_conn_peer(const struct aimsi_conn *c);
const char *aimsi_node_identity(const aims_node *n);
/* The TLS config a client dials tls:// with (NULL: none); client.c. */
aims_tls_config *aimsi_client_tls(aims_client *c);
/* Dials of cfg that resumed a cached session (tests, metrics). */
uint64_t aimsi_tls_config_resumed(const aims_tls_config *cfg);

/* A small per-owner table of transports by scheme (a node's or a client's):
 * built-ins first, host registrations override. Instances are created lazily
 * with the owner's hooks on first use. */
#define AIMSI_MAX_TRANSPORTS 8
typedef struct aimsi_tslot {
    aims_transport vt;  /* copied vtable (size-checked on registration) */
    char scheme[17];
    void *inst;         /* created instance, or NULL */
} aimsi_tslot;
/* Receive bounds of a node's stream transports (stream.c; the node
 * parameters AIMS_NODE_RX_*). Zero = off (a client's table). `held`: read-buffer
 * bytes above the first 64 KiB held by frames in progress, node-wide. */
typedef struct aimsi_rx_limits {
    int64_t min_rate;  /* bytes/s a frame in progress keeps up over 2 s windows */
    int64_t header_ms; /* first byte of a frame -> its whole header */
    int64_t budget;    /* most bytes `held` */
    _Atomic int64_t held;
} aimsi_rx_limits;

typedef struct aimsi_ttable {
    aimsi_tslot slot[AIMSI_MAX_TRANSPORTS];
    size_t n;
    aims_transport_hooks hooks;
    uint64_t max_frame;
    aims_tls_config *tls; /* reference held for the tls slot, or NULL */
    aimsi_rx_limits rx; /* handed to built-in stream instances at creation */
} aimsi_ttable;

/* Fill with the built-ins (tcp, ipc). */
void aimsi_ttable_init(aimsi_ttable *tt, const aims_transport_hooks *hooks, uint64_t max_frame);
/* Register (copy) a host vtable: checks struct_size/version/scheme/function pointers. */
aims_status aimsi_ttable_add(aimsi_ttable *tt, const aims_transport *t);
/* Slot for the scheme of `url` ("scheme://..."), creating its instance if needed.
 * AIMS_E_UNSUPPORTED for an unknown scheme, AIMS_E_INVAL for a malformed url. */
aims_status aimsi_ttable_get(aimsi_ttable *tt, const char *url, aimsi_tslot **out);
/* Destroy every created instance. */
void aimsi_ttable_fini(aimsi_ttable *tt);
/* Use cfg for tls:// (takes a reference); AIMS_E_STATE once tls:// is in use. */
aims_status aimsi_ttable_set_tls(aimsi_ttable *tt, aims_tls_config *cfg);
/* The verified identity of the peer on `conn` of `slot` (tls://), or NULL. */
const char *aimsi_ttable_peer(const aimsi_tslot *slot, void *conn);

/* Split "scheme://rest": writes the scheme (<= 16 bytes) and points *rest after "://". */
aims_status aimsi_url_split(const char *url, char *scheme, size_t scheme_cap, const char **rest);

/* ---- node-local calls (node.c; used by client.c for inproc://) ------------- */

/* Completion of a local call: status, reply (valid during the call; NULL when the
 * call failed before a handler ran), error text. Runs exactly once, either on
 * the caller's thread before aimsi_node_call_local returns (inline run or early
 * rejection) or on a node worker thread. */
typedef void (*aimsi_local_done)(void *ctx, aims_status st, aims_msg *reply, const char *err);

typedef struct aimsi_local_call {
    const char *service;   /* "name" or "name@version" as registered */
    const char *method;
    const aims_msg *req;   /* borrowed until done runs; the node copies it when it queues */
    uint64_t deadline_ns;  /* CLOCK_MONOTONIC, 0 = none */
    aimsi_local_done done;
    void *ctx;
    /* 1: never run on the caller's thread (async calls: the caller expects to
     * get on with its work, and several calls in flight must run in parallel). */
    int no_inline;
} aimsi_local_call;

/* Find the node listening on inproc://name and take a reference
 * (AIMS_E_NOTFOUND if none). Release with aimsi_node_unref. */
aims_status aimsi_inproc_find(const char *name, aims_node **out);
void aimsi_node_unref(aims_node *n);
/* Run or queue a call on node n. Returns AIMS_OK when done has run or will run. */
aims_status aimsi_node_call_local(aims_node *n, const aimsi_local_call *call);

/* ---- service kinds (service.c runs them; svc_infer.c, svc_pre.c, svc_train.c
 *      and the user-handler kind in service.c implement them) ----------------- */

/* One request on its way through a service. The core fills method/req/deadline,
 * the kind fills reply (already empty) and status (+ aims_msg_set_error). */
typedef struct aimsi_work {
    const char *method;
    const aims_msg *req;   /* borrowed (inline run) or the core's owned copy */
    aims_msg *reply;
    uint64_t deadline_ns;  /* CLOCK_MONOTONIC, 0 = none */
    aims_status status;
} aimsi_work;

/* Fail work item w: clear its reply, set the formatted error text on it,
 * return st (for `return aimsi_work_fail(w, AIMS_E_INVAL, "...", ...)`). */
aims_status aimsi_work_fail(aimsi_work *w, aims_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The same with a va_list (for callers that wrap it). */
aims_status aimsi_work_failv(aimsi_work *w, aims_status st, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 0)))
#endif
    ;

typedef struct aimsi_svc_kind {
    const char *name;       /* "handler", "infer", "preprocess", "train" */
    /* 1: the core hands run() up to AIMS_SERVICE_BATCH_MAX queued items at once,
     * waiting up to AIMS_SERVICE_BATCH_DELAY_US for more when the queue runs dry
     * (and never past the earliest deadline); it never runs such items inline. */
    int batching;
    /* 1: never run inline (long or stateful work, e.g. train submissions). */
    int never_inline;
    /* Run n (>= 1) items; set every item's status and reply. Called from up to
     * AIMS_SERVICE_CONCURRENCY threads at once. */
    void (*run)(void *impl, aimsi_work *const *items, size_t n);
    /* Called by aims_service_stop after the queue drained (may be NULL). */
    void (*stop)(void *impl);
    /* Free impl when the node is destroyed (may be NULL). */
    void (*destroy)(void *impl);
} aimsi_svc_kind;

/* Add a service of `kind` (impl owned by the service from now on, also on failure:
 * kind->destroy(impl) is called then). */
aims_status aimsi_service_add(aims_node *n, const char *name, const aimsi_svc_kind *kind,
                              void *impl, aims_service **out);
/* The impl a service was added with, or NULL when s is not of `kind`. */
void *aimsi_service_impl(aims_service *s, const aimsi_svc_kind *kind);
/* The registry name the service was added with. */
const char *aimsi_service_name(const aims_service *s);

/* ---- remote registry hook (node.c; installed by svc_registry.c) -----------
 *
 * When a node joins a registry hosted elsewhere (aims_node_join), its services
 * register through these calls instead of a local aims_registry. Every call
 * runs on a node thread (aims_service_start/stop's caller or the node's
 * heartbeat thread), never under a node lock, and may block (network). */
typedef struct aimsi_reg_ops {
    /* Register (service, address, weight, ttl_ms); write the instance id. */
    aims_status (*reg)(void *ctx, const char *service, const char *address, uint32_t weight,
                       uint64_t ttl_ms, uint64_t *out_id);
    /* Renew the lease of *io_id. The full record is passed so the remote side
     * may re-register an instance whose lease was lost (then it writes the new
     * id). AIMS_E_NOTFOUND makes the node register again on the next beat. */
    aims_status (*heartbeat)(void *ctx, const char *service, const char *address,
                             uint32_t weight, uint64_t ttl_ms, uint64_t *io_id);
    /* Remove the instance now. */
    aims_status (*dereg)(void *ctx, uint64_t id);
    /* Free ctx: called once by the node when the ops are replaced or the node
     * is destroyed, after its last use (may be NULL). */
    void (*release)(void *ctx);
} aimsi_reg_ops;

/* Install (ops non-NULL) or remove (NULL) the remote registry of node n; the
 * ops table and ctx must outlive the node or the next call. Services started
 * afterwards (and the heartbeat thread) use it instead of aims_node_set_registry's
 * local registry. Services already registered are re-registered on the next beat. */
aims_status aimsi_node_set_remote_registry(aims_node *n, const aimsi_reg_ops *ops, void *ctx);

/* ---- node / service internals (node.c and service.c ONLY) ------------------
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

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

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
    int64_t limit;                   /* resolved concurrency limit (>= 1) */
    int can_inline;                  /* resolved at start */
    _Atomic int state;
    _Atomic int64_t inflight;        /* concurrency slots in use */
    _Atomic int64_t queued;          /* mirrors the queue length (lock-free reads) */
    int batch_waiting;               /* a worker is filling a batch (node->lock) */
    aimsi_qitem *head, *tail;        /* node->lock */
    /* statistics */
    _Atomic uint64_t n_req, n_err, n_rej, n_batches, n_rows, busy_ns, ewma_ns;
    _Atomic uint64_t mdev_ns;        /* mean deviation of run() from ewma_ns (svc_admit.c) */
    uint64_t busy_since_ns;          /* node->lock: queue non-empty since (0: empty) */
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
};

/* service.c, for node.c */
aims_service *aimsi_svc_lookup(aims_node *n, const char *name);
/* Run or queue one request on s; done runs exactly once (see aimsi_local_done).
 * allow_inline: AIMSI_INLINE_NO, _YES (the caller accepts running the handler
 * on its own thread), or _IF_CHEAP (only while the service's run-time EWMA is
 * at most AIMSI_INLINE_CHEAP_NS: a transport I/O thread must not stall every
 * connection behind a slow handler). */
enum { AIMSI_INLINE_NO = 0, AIMSI_INLINE_YES = 1, AIMSI_INLINE_IF_CHEAP = 2 };
#define AIMSI_INLINE_CHEAP_NS 50000u
void aimsi_svc_dispatch(aims_service *s, const char *method, const aims_msg *req,
                        uint64_t deadline_ns, int allow_inline, aimsi_local_done done,
                        void *ctx);
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

/* ---- registry service and sync (svc_registry.c) ---------------------------- */

/* The "aims.registry" service kind over registry r (borrowed). */
aims_status aimsi_regsvc_create(aims_registry *r, void **out_impl);
const aimsi_svc_kind *aimsi_regsvc_kind(void);

/* A thread that keeps `mirror` (a local registry the caller owns) in sync with
 * the registry hosted at url, polling every period_ms; the first sync runs
 * before start returns (failure to reach the registry is not an error). */
/* Reachability of a joined registry (reach.c): logs the first failure (ERROR,
 * with URL and cause) and the recovery (INFO); describes the state for error
 * messages. */
typedef struct aimsi_reach {
    pthread_mutex_t lock;
    char what[64];
    char url[AIMSI_URL_MAX + 1];
    int failing, ever_ok;
    time_t since_wall;
    uint64_t since_ns, failures;
    char last_err[256];
} aimsi_reach;
void aimsi_reach_init(aimsi_reach *r, const char *what, const char *url);
void aimsi_reach_fini(aimsi_reach *r);
void aimsi_reach_record(aimsi_reach *r, aims_status rc, const char *errmsg);
/* "" while reachable; else "registry URL unreachable since T (...), last error: E". */
size_t aimsi_reach_describe(aimsi_reach *r, char *buf, size_t cap);

typedef struct aimsi_regsync aimsi_regsync;
aims_status aimsi_regsync_start(const char *url, aims_registry *mirror, uint64_t period_ms,
                                aims_tls_config *tls, aimsi_regsync **out);
void aimsi_regsync_stop(aimsi_regsync *rs);
/* Successful (ok != 0) or failed syncs so far. */
uint64_t aimsi_regsync_count(aimsi_regsync *rs, int ok);
/* Apply one "changes" reply to a fresh mirror state (fuzzing and tests); the
 * instances it registered in `mirror` are removed again before it returns. */
aims_status aimsi_regsync_apply_once(aims_registry *mirror, const aims_msg *reply);

/* ---- client internals for svc_registry.c (client.c) ------------------------- */

/* aims_client_join's mirror: from now on the client resolves names through
 * `r` (exactly like aims_client_set_registry) and OWNS it. The client's
 * destroy first calls stop(ctx) -- which must stop whatever keeps r in sync
 * (its thread may be inside aims_client_call_addr on this client: such calls
 * fail fast with AIMS_E_CLOSED once destroy began) and free ctx -- and then
 * destroys r. AIMS_E_STATE when the client already adopted one. */
aims_status aimsi_client_adopt_registry(aims_client *c, aims_registry *r, void (*stop)(void *ctx),
                                        void *ctx);
/* The registry the client resolves names through (NULL when none). */
aims_registry *aimsi_client_registry(aims_client *c);
/* The client's AIMS_CLIENT_SYNC_MS (the mirror's sync period). */
int64_t aimsi_client_sync_ms(const aims_client *c);

/* ---- admission and queue discipline (svc_admit.c) -------------------------
 * All under node->lock but note_run. check: may a request arriving behind q
 * queued ones be admitted (AIMS_OK; else AIMS_E_OVERLOADED with a retry hint
 * or AIMS_E_TIMEOUT, text in text[cap]). push: append. take: the next item to
 * run (LIFO under sustained overload) or NULL; items that must not run any
 * more are unlinked onto *dropped (via next) with w.status set. hint_ms: the
 * retry hint for a queue of q when `allowed_ns` of queueing is admissible. */
void aimsi_admit_note_run(aims_service *s, uint64_t old_ewma, uint64_t run_ns);
aims_status aimsi_admit_check(aims_service *s, int64_t q, uint64_t now, uint64_t deadline,
                              char *text, size_t cap);
void aimsi_admit_push(aims_service *s, aimsi_qitem *it, uint64_t now);
aimsi_qitem *aimsi_admit_take(aims_service *s, uint64_t now, aimsi_qitem **dropped);
uint64_t aimsi_admit_hint_ms(const aims_service *s, int64_t q, uint64_t allowed_ns);

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

/* ---- clocks ---------------------------------------------------------------- */

/* CLOCK_REALTIME ns (the wire's deadline clock) and conversions to/from the
 * monotonic clock used inside the process (0 stays 0). */
uint64_t aimsi_realtime_ns(void);
uint64_t aimsi_deadline_to_wire(uint64_t mono_ns);
uint64_t aimsi_deadline_from_wire(uint64_t real_ns);

/* ---- built-in service kinds (svc_infer.c, svc_pre.c, svc_train.c) --------
 * Section owned by the built-in services engineer. The kinds are exported so
 * tests (and service.c, if it wants) can build an impl and drive run()
 * directly, without a node. An impl made here is handed to aimsi_service_add
 * by aims_service_add_infer/_preprocess/_train. */

extern const aimsi_svc_kind aimsi_kind_infer;
extern const aimsi_svc_kind aimsi_kind_preprocess;
extern const aimsi_svc_kind aimsi_kind_train;

/* Make the impl of each kind (free with kind.destroy). b / p are borrowed. */
aims_status aimsi_infer_create(const aims_bundle *b, void **out);
aims_status aimsi_preprocess_create(const aims_pipeline *p, void **out);
aims_status aimsi_train_create(const aims_pipeline *p, void **out);
/* Serve b from now on; returns once no run() uses the previous bundle. */
aims_status aimsi_infer_swap(void *impl, const aims_bundle *b);

#endif /* AIMSI_SVC_H */
