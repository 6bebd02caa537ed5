/*
 * aims_svc.h -- nodes, services, clients, messages and transports.
 *
 * One code path in-process and across processes (DESIGN.md §2, §5):
 *
 *   aims_client_call(client, "infer/fmnist", "predict", req, reply, ...)
 *     -> the client's view of the registry lists live instances of the service
 *     -> its balancer (P2C by default) picks one, its health tracker ejects bad ones
 *     -> the instance address selects the transport by URL scheme:
 *          inproc://name      a node in this process: the request is handed over as
 *                             a pointer (no encoding, no copy) and runs on the
 *                             caller's thread when the service has a free slot
 *          tcp://host:port    length-delimited frames over TCP (TCP_NODELAY)
 *          ipc:///path        the same frames over a Unix domain socket
 *          <scheme>://...     a transport the host registered (aims_transport)
 *     -> the node's service: bounded queue, concurrency limit, dynamic batching
 *        (infer), deadline checks -> handler -> reply back the same way.
 *
 * Messages. An aims_msg is an ordered list of named tensors (dtype + shape +
 * data) plus, on replies, an error text. It is what a request and a reply carry,
 * on every transport.
 *
 * Errors a caller sees. AIMS_E_OVERLOADED: a queue or limit was full, or the
 * queue ahead would not let the request finish before its deadline, or it
 * waited past the service's target delay under sustained overload (the text
 * carries "retry after N ms": when the queue will have drained enough, from
 * its drain rate); AIMS_E_TIMEOUT: the deadline passed or is shorter than one
 * run (queued requests that can no longer finish in time are dropped before
 * they run; docs/OVERLOAD.md); AIMS_E_NOTFOUND:
 * no live instance of the service; AIMS_E_CLOSED: the instance went away
 * mid-call. A handler's own status and error text travel back unchanged.
 *
 * Retries. Only for calls flagged AIMS_CALL_IDEMPOTENT (the built-in infer
 * "predict" and preprocess "transform" methods are idempotent by definition),
 * only on errors that mean "the request did not run" or "the instance died"
 * (OVERLOADED, CLOSED, transport failures), on another instance, and only within
 * the client's retry budget: retries may add at most AIMS_CLIENT_RETRY_BUDGET x
 * recent requests (plus AIMS_CLIENT_RETRY_MIN per second), so a failing
 * cluster is not hit with a retry storm. A retry after OVERLOADED waits for
 * the "retry after" hint, and is not made when the hint is past the deadline.
 * Per-try timeouts: each try of an idempotent call gets 4 x the service's
 * recent p99 latency in this client (at least 200 ms, at most half the time
 * left; the last possible try, and every try before 8 successes were seen,
 * gets all the time left); a try past its share is abandoned (its late reply
 * is dropped) and retried on another instance, so a hung instance costs
 * latency, not failed calls.
 *
 * Threads. Every function here may be called from any thread on a shared
 * object, except *_destroy (exclusive: no call may be running or start on the
 * object). Handlers run on the node's worker threads or, for inproc calls to a
 * service with a free slot and AIMS_SERVICE_INLINE set, on the caller's thread;
 * several may run at once up to the service's concurrency limit. Completion
 * callbacks of async calls run on a client or node thread; they must not
 * destroy the client.
 *
 * Process-wide state. inproc:// names live in one process-wide table (that is
 * what lets nodes of one process find each other); everything else belongs to
 * the objects.
 */
/** @file */
#ifndef AIMS_SVC_H
#define AIMS_SVC_H

#include "aims_core.h"
#include "aims_model.h"
#include "aims_orch.h"
#include "aims_pipeline.h"

AIMS_EXTERN_C_BEGIN

/** A message: up to 64 named tensors and an error text (opaque). */
typedef struct aims_msg aims_msg;
/** A node hosting services behind its listeners (opaque). */
typedef struct aims_node aims_node;
/** One service on a node (opaque, owned by the node). */
typedef struct aims_service aims_service;
/** A client calling services by name or address (opaque). */
typedef struct aims_client aims_client;

/* ------------------------------------------------------------------------ */
/* Messages                                                                   */

/** Element types of message tensors (the wire codes, never renumbered). */
typedef enum aims_dtype {
    AIMS_DT_F32 = 1,
    AIMS_DT_I32 = 2,
    AIMS_DT_U8 = 3,
    AIMS_DT_I64 = 4,
    AIMS_DT_BYTES = 5 /**< raw bytes / UTF-8 text, element size 1 */
} aims_dtype;

/** aims_msg_add flag: do not copy @p data; the caller keeps it alive and
 *  unchanged until the message is cleared or destroyed (or the call using it
 *  returned, for a request). */
#define AIMS_MSG_BORROW 1u

/** Limits every message obeys (the frame format's). */
#define AIMS_MSG_MAX_TENSORS 64
#define AIMS_MSG_MAX_NAME 64 /**< bytes in a tensor name */
#define AIMS_MSG_MAX_NDIM 4  /**< dimensions of a tensor */

/**
 * @brief Create an empty message.
 * @note Thread safety: a message is not shared; one thread uses it at a time.
 * @since 0.1
 */
AIMS_API aims_status aims_msg_create(aims_msg **out);
/** @brief Destroy a message and what it owns. NULL is a no-op. @since 0.1 */
AIMS_API void aims_msg_destroy(aims_msg *m);
/** @brief Remove every tensor and the error text (keeps capacity). @since 0.1 */
AIMS_API void aims_msg_clear(aims_msg *m);

/**
 * @brief Append a tensor.
 * @param name   1..64 bytes, unique within the message.
 * @param dims   @p ndim sizes (0..4 dims; a scalar has ndim 0 and one element).
 * @param data   product(dims) x element size bytes (may be NULL when that is 0).
 * @param flags  0 (copy) or AIMS_MSG_BORROW.
 * @param m      The message; must not be NULL.
 * @param dtype  Element type (AIMS_DT_*).
 * @param ndim   Number of dimensions, 0..4.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (name, dtype, ndim, duplicate name),
 *         AIMS_E_RANGE (more than 64 tensors, size overflow), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_msg_add(aims_msg *m, const char *name, aims_dtype dtype,
                                  const uint64_t *dims, size_t ndim, const void *data,
                                  unsigned flags);
/**
 * @brief Append a tensor whose storage the message allocates (zeroed, 64-byte
 * aligned); fill it through *out_data (handlers write replies without a copy).
 * @return as aims_msg_add.
 * @since 0.1
 */
AIMS_API aims_status aims_msg_alloc(aims_msg *m, const char *name, aims_dtype dtype,
                                    const uint64_t *dims, size_t ndim, void **out_data);
/** @brief Number of tensors. @since 0.1 */
AIMS_API size_t aims_msg_num_tensors(const aims_msg *m);
/**
 * @brief Describe tensor @p index. Every output is optional. Pointers stay
 * valid until the message is cleared or destroyed. Data may be unaligned.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE (index).
 * @since 0.1
 */
AIMS_API aims_status aims_msg_get_tensor(const aims_msg *m, size_t index, const char **out_name,
                                         aims_dtype *out_dtype, size_t *out_ndim,
                                         const uint64_t **out_dims, const void **out_data,
                                         size_t *out_bytes);
/** @brief Index of the tensor called @p name. @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND. @since 0.1 */
AIMS_API aims_status aims_msg_find(const aims_msg *m, const char *name, size_t *out_index);
/**
 * @brief Set the error text a handler returns with a failing status (copied,
 * at most 1024 bytes kept, must be UTF-8).
 * @since 0.1
 */
AIMS_API aims_status aims_msg_set_error(aims_msg *m, const char *text);
/** @brief Error text of a failed reply, or "" (valid until clear/destroy). @since 0.1 */
AIMS_API const char *aims_msg_error(const aims_msg *m);

/* ------------------------------------------------------------------------ */
/* Transports                                                                 */

/** Version of the aims_transport vtable this header describes. */
#define AIMS_TRANSPORT_VERSION 1u

/** aims_transport.listen flag: allow a non-loopback address without TLS. */
#define AIMS_LISTEN_INSECURE 1u

/**
 * What a transport calls back into the library. All three run on the
 * transport's own thread(s); for one connection they never run concurrently
 * and on_close is the last one.
 */
typedef struct aims_transport_hooks {
    void *user; /**< passed to on_accept */
    /** A listener accepted @p conn: return the per-connection pointer that
     *  on_frame/on_close will receive, or NULL to refuse (the transport closes it). */
    void *(*on_accept)(void *user, void *listener, void *conn);
    /** One whole frame arrived; @p frame is valid during the call only. */
    void (*on_frame)(void *conn_user, const void *frame, size_t len);
    /** The connection failed or the peer closed it (@p why: AIMS_E_CLOSED,
     *  AIMS_E_IO, AIMS_E_CORRUPT for a bad frame, AIMS_E_RANGE for an oversize one).
     *  The library still calls close() to release it. */
    void (*on_close)(void *conn_user, aims_status why);
} aims_transport_hooks;

/**
 * A transport: a versioned vtable a host may register on a node or client to
 * carry frames over its own medium. The built-in tcp:// and ipc:// transports
 * implement the same table. Frames are whole: the library sends whole frames
 * and the transport delivers whole frames (the frame header holds its length:
 * 44 header bytes, then bytes 28..40 give the rest; see docs/ABI.md).
 */
typedef struct aims_transport {
    uint32_t struct_size; /**< sizeof(aims_transport) as compiled by the host */
    uint32_t version;     /**< AIMS_TRANSPORT_VERSION */
    const char *scheme;   /**< "tcp", "myscheme": [a-z0-9+.-], 1..16 bytes */
    void *factory_user;   /**< passed to create */
    /** Make one instance (a node or client owns one per scheme). @p max_frame
     *  caps every frame the instance accepts; bigger ones close the connection. */
    aims_status (*create)(void *factory_user, const aims_transport_hooks *hooks,
                          uint64_t max_frame, void **out_inst);
    /** Close every listener and connection; no hook runs after this returns. */
    void (*destroy)(void *inst);
    /** Listen on @p url; write the bound address (port 0 resolved) to @p bound. */
    aims_status (*listen)(void *inst, const char *url, unsigned flags, char *bound,
                          size_t bound_cap, void **out_listener);
    /** Stop listening (accepted connections stay open). */
    void (*unlisten)(void *inst, void *listener);
    /** Connect (blocking, bounded by the transport's connect timeout). */
    aims_status (*dial)(void *inst, const char *url, void *conn_user, void **out_conn);
    /** Queue one whole frame. Takes ownership of @p frame (allocated by the
     *  library's allocator; release it with aims_free), also on failure.
     *  Returns AIMS_E_OVERLOADED when the connection's send queue is over its
     *  limit, AIMS_E_CLOSED when the connection is gone. Any thread. */
    aims_status (*send)(void *inst, void *conn, void *frame, size_t len);
    /** Release @p conn. After return no hook runs for it (may be called from
     *  inside one of its own hooks). */
    void (*close)(void *inst, void *conn);
} aims_transport;

/* ------------------------------------------------------------------------ */
/* Nodes                                                                      */

/**
 * @brief Create a node: worker threads (AIMS_NODE_WORKERS) that run the
 * services it hosts, and, once it listens on tcp:// or ipc://, an I/O thread.
 * @param name  1..64 bytes [A-Za-z0-9_.-]; also its inproc:// name when it listens there.
 * @param out  [out] the new node on success.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL, AIMS_E_NOMEM, AIMS_E_BACKEND (threads).
 * @since 0.1
 */
AIMS_API aims_status aims_node_create(const char *name, aims_node **out);
/**
 * @brief Stop every service (draining each for up to AIMS_NODE_DRAIN_MS), close
 * listeners and connections, join threads, free. NULL is a no-op.
 * @since 0.1
 */
AIMS_API void aims_node_destroy(aims_node *n);
/** @brief Set a node parameter (AIMS_NODE_*). Before the first listen. @since 0.1 */
AIMS_API aims_status aims_node_set_param_i64(aims_node *n, aims_param param, int64_t value);
/** @brief Register a host transport for its scheme (copied; overrides a built-in). @since 0.1 */
AIMS_API aims_status aims_node_add_transport(aims_node *n, const aims_transport *t);
/**
 * @brief Listen on @p url: "inproc://name", "tcp://127.0.0.1:0" (port 0: any),
 * "ipc:///path". A non-loopback tcp address needs AIMS_NODE_INSECURE = 1.
 * May be called several times; services are reachable on every address.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (url), AIMS_E_UNSUPPORTED (scheme),
 *         AIMS_E_EXISTS (inproc name or path in use), AIMS_E_IO, AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_node_listen(aims_node *n, const char *url);
/**
 * @brief Copy the @p index-th bound address (in listen order, port resolved).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE (index past the last address, or
 *         @p cap too small: then *out_len = length needed without NUL).
 * @note Not const: a failure is recorded for aims_node_errmsg().
 * @since 0.1
 */
AIMS_API aims_status aims_node_get_address(aims_node *n, size_t index, char *buf, size_t cap,
                                           size_t *out_len);
/**
 * @brief Services started on this node register in @p r (borrowed; must
 * outlive the node) under the node's first address, renew their leases every
 * AIMS_NODE_HEARTBEAT_MS and deregister when stopped.
 * @since 0.1
 */
AIMS_API aims_status aims_node_set_registry(aims_node *n, aims_registry *r);
/**
 * @brief Serve @p r (borrowed) as the service "aims.registry" on this node, so
 * nodes and clients of other processes can join it (aims_node_join,
 * aims_client_join). Also implies aims_node_set_registry(n, r).
 * @since 0.1
 */
AIMS_API aims_status aims_node_host_registry(aims_node *n, aims_registry *r);
/**
 * @brief Register this node's services in the registry at @p url. Leases are
 * renewed every heartbeat; when the registry is unreachable the node keeps
 * retrying and re-registers when it is back.
 *
 * The URL's scheme picks the registry backend:
 * - `etcd://[user:password@]host:port[,host:port...][/prefix]`: etcd (v3 JSON
 *   API over HTTP; credentials are traded for an auth token);
 *   each instance is a key under /prefix/ (default /aims/) bound to a lease
 *   whose TTL is the registry lease; heartbeats are lease keep-alives; the
 *   endpoints are tried in turn (docs/ETCD.md).
 * - `aims://host:port` (= `tcp://host:port`), or any node address (`tcp://`,
 *   `ipc://`, `inproc://`): the registry a node hosts (aims_node_host_registry).
 * @return AIMS_OK; AIMS_E_INVAL (no scheme, malformed etcd URL);
 *         AIMS_E_UNSUPPORTED (etcd:// in a library built without etcd).
 * @since 0.1
 */
AIMS_API aims_status aims_node_join(aims_node *n, const char *url);
/**
 * @brief The node's metrics (per service and instance).
 * @return A handle borrowed from the node, valid until aims_node_destroy; NULL
 *         for a bad node. The node keeps writing to it: aims_metrics_destroy on
 *         it is refused (a no-op, AIMS_E_MISUSE text in aims_errmsg and a
 *         warning in the log), so a host cannot free it under the node.
 * @since 0.1
 */
AIMS_API aims_metrics *aims_node_metrics(aims_node *n);
/** @brief Last error text on this node ("" if none). @since 0.1 */
AIMS_API const char *aims_node_errmsg(const aims_node *n);

/* ------------------------------------------------------------------------ */
/* Services                                                                   */

/**
 * A user handler. Fill @p reply (already empty) and return AIMS_OK, or return an
 * error status (optionally with aims_msg_set_error(reply, ...)). @p req and
 * @p reply are valid during the call only. @p deadline_ns is the request's
 * CLOCK_MONOTONIC deadline (0: none); a long handler should check it.
 */
typedef aims_status (*aims_handler_fn)(void *user, const char *method, const aims_msg *req,
                                       aims_msg *reply, uint64_t deadline_ns);

/**
 * @brief Add a service running @p fn to node @p n (not started yet).
 * @param name "name" or "name@version" (registry name rules).
 * @param n     The node that hosts the service; must not be NULL.
 * @param fn    The handler, called for every request (on a worker thread).
 * @param user  Passed to @p fn unchanged.
 * @param out   [out] the service (owned by the node); must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL, AIMS_E_EXISTS (name on this node), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_service_add_handler(aims_node *n, const char *name,
                                              aims_handler_fn fn, void *user,
                                              aims_service **out);
/**
 * @brief Add an infer service over @p b (borrowed; see aims_service_swap_bundle).
 * Method "predict": request tensor "x" (f32 [rows, cols] raw features) or
 * "text" (BYTES, documents separated by '\n'), optional i32 scalar "output"
 * (aims_output, default class ids); reply tensor "y" (f32 [rows, k]; class ids
 * as f32 [rows]). Requests are batched dynamically (AIMS_SERVICE_BATCH_MAX,
 * AIMS_SERVICE_BATCH_DELAY_US). Method "info": reply "name", "version" (BYTES).
 * @since 0.1
 */
AIMS_API aims_status aims_service_add_infer(aims_node *n, const char *name,
                                            const aims_bundle *b, aims_service **out);
/**
 * @brief Add a preprocess service over the fitted pipeline @p p (borrowed).
 * Method "transform": "x" (f32 [rows, cols]) -> "x" (f32 [rows, out_cols]).
 * @since 0.1
 */
AIMS_API aims_status aims_service_add_preprocess(aims_node *n, const char *name,
                                                 const aims_pipeline *p, aims_service **out);
/**
 * @brief Add a train service. Jobs run one at a time on a service thread.
 * Methods:
 *  - "submit": "job" (BYTES id chosen by the caller, 1..64 bytes), "x" (f32
 *    [rows, cols], already preprocessed), "y" (i32 [rows]), "spec" (BYTES,
 *    "key=value" lines: kind=mlp|softmax|logistic|linear|text, hidden=256[,128],
 *    activation=relu, classes=10, and any trainer parameter by name, e.g.
 *    epochs=5 lr=0.1 optimizer=0), optional "publish" (BYTES "name@version":
 *    the finished model is deployed to the infer service "name" on this node
 *    as that version before the job shows done; optional i64 "publish_canary"
 *    1..99 deploys it as a canary at that percent, see aims_lifecycle.h).
 *    kind=text takes "text" (BYTES, one '\n'-separated document per row of
 *    "y") instead of "x" and needs @p p to be a fitted text pipeline
 *    (tokenize + hash); see docs/train_text.md.
 *    A submit with a job id the service already knows returns that job's
 *    state and never starts a second job (so a retried submit is safe).
 *    Reply: "state" (i32: 0 queued, 1 running, 2 done, 3 failed, 4 cancelled).
 *  - "status": "job" -> "state", "epoch" (i32), "loss" (f32), "metric" (f32 validation accuracy or NaN).
 *  - "result": "job" -> "bundle" (BYTES: an aims bundle file, pipeline @p p + model).
 *  - "cancel": "job" -> "state".
 * @param p  fitted pipeline stored in every produced bundle (borrowed; may be NULL).
 * @param n     The node that hosts the service; must not be NULL.
 * @param name  Service name ("name" or "name@version").
 * @param out   [out] the service (owned by the node); must not be NULL.
 * @since 0.1
 */
AIMS_API aims_status aims_service_add_train(aims_node *n, const char *name,
                                            const aims_pipeline *p, aims_service **out);
/** @brief Set a service parameter (AIMS_SERVICE_*), before start. @since 0.1 */
AIMS_API aims_status aims_service_set_param_i64(aims_service *s, aims_param param,
                                                int64_t value);
/**
 * @brief Start accepting calls and register in the node's registry.
 * @since 0.1
 */
AIMS_API aims_status aims_service_start(aims_service *s);
/**
 * @brief Drain and stop: leave the registry, wait AIMS_NODE_DRAIN_GRACE_MS for
 * balancers to notice, finish queued and running work (up to @p timeout_ms,
 * then reject what is left with AIMS_E_CLOSED), stop. The service may be
 * started again.
 * @since 0.1
 */
AIMS_API aims_status aims_service_stop(aims_service *s, int64_t timeout_ms);
/**
 * @brief Infer services: serve @p b from now on (borrowed); calls already
 * running finish on the old bundle. Returns once no call uses the old one, so
 * the caller may then destroy it. Rollback = swap back.
 * @since 0.1
 */
AIMS_API aims_status aims_service_swap_bundle(aims_service *s, const aims_bundle *b);

/** Service statistics (aims_service_get_stat()). */
typedef enum aims_service_stat {
    AIMS_SERVICE_STAT_REQUESTS = 1,  /**< requests accepted */
    AIMS_SERVICE_STAT_ERRORS = 2,    /**< handler failures */
    AIMS_SERVICE_STAT_REJECTED = 3,  /**< overload + deadline rejections */
    AIMS_SERVICE_STAT_INFLIGHT = 4,  /**< running now */
    AIMS_SERVICE_STAT_QUEUED = 5,    /**< waiting now */
    AIMS_SERVICE_STAT_BATCHES = 6,   /**< batches run (infer) */
    AIMS_SERVICE_STAT_BATCH_ROWS = 7,/**< rows in those batches */
    AIMS_SERVICE_STAT_BUSY_NS = 8,   /**< total handler time (utilisation = busy / wall) */
    AIMS_SERVICE_STAT_P50_NS = 9,    /**< service latency quantiles (queue + run) */
    AIMS_SERVICE_STAT_P99_NS = 10
} aims_service_stat;
/** @brief Read a service statistic. Not const: a failure (an unknown @p stat)
 * is recorded for aims_service_errmsg(). @since 0.1 */
AIMS_API aims_status aims_service_get_stat(aims_service *s, aims_service_stat stat, double *out);

/** @brief Detail of the last failure on this service (start, stop, set_param,
 * swap_bundle, stat); "" if none (or for a bad handle). @since 0.1 */
AIMS_API const char *aims_service_errmsg(const aims_service *s);

/* ------------------------------------------------------------------------ */
/* Clients                                                                    */

/** aims_client_call flags. */
#define AIMS_CALL_IDEMPOTENT 1u /**< safe to retry on another instance */
/**
 * aims_client_call_async / aims_call_start flag: the caller keeps @p req
 * valid and unchanged until the call's done() has returned, so the client
 * borrows it instead of copying it (an idempotent async call copies its
 * request for retries; a queued inproc:// call was copied by the node). In
 * return done() runs only after every reader of the request has finished
 * with it -- an inproc handler still running past a TIMEOUT or a cancel
 * delays done() until it returns. Ignored by sync calls and hedged calls
 * (AIMS_CLIENT_HEDGE_MS >= 0: they copy once for both copies).
 * docs/keep-request.md. @since 0.1
 */
#define AIMS_CALL_KEEP_REQUEST 2u

/**
 * Completion of an async call. @p reply is the library's (valid during the call
 * only; NULL on transport-level failures); @p error is the error text ("" on success).
 */
typedef void (*aims_done_fn)(void *user, aims_status status, const aims_msg *reply,
                             const char *error);

/**
 * @brief Create a client. It needs a registry view (aims_client_set_registry or
 * aims_client_join) to call services by name; aims_client_call_addr works without.
 * @since 0.1
 */
AIMS_API aims_status aims_client_create(aims_client **out);
/** @brief Fail pending calls with AIMS_E_CLOSED, close connections, free. NULL is a no-op. @since 0.1 */
AIMS_API void aims_client_destroy(aims_client *c);
/** @brief Set a client parameter (AIMS_CLIENT_*). @since 0.1 */
AIMS_API aims_status aims_client_set_param_i64(aims_client *c, aims_param param, int64_t value);
/** @brief Set a f64 client parameter (AIMS_CLIENT_RETRY_BUDGET). @since 0.1 */
AIMS_API aims_status aims_client_set_param_f64(aims_client *c, aims_param param, double value);
/** @brief Register a host transport for its scheme (copied). @since 0.1 */
AIMS_API aims_status aims_client_add_transport(aims_client *c, const aims_transport *t);
/** @brief Resolve names through the local registry @p r (borrowed, must outlive the client). @since 0.1 */
AIMS_API aims_status aims_client_set_registry(aims_client *c, aims_registry *r);
/**
 * @brief Resolve names through the registry at @p url (the schemes of
 * aims_node_join: etcd://, aims://, or a node address). A registry service is
 * polled every AIMS_CLIENT_SYNC_MS; etcd is listed once and then watched (a
 * compacted watch lists again; AIMS_CLIENT_SYNC_MS is the retry period while
 * etcd is unreachable). When the registry is unreachable the client keeps its
 * last view (it never drops healthy instances because the registry went away).
 * @return AIMS_OK; AIMS_E_INVAL, AIMS_E_UNSUPPORTED as aims_node_join.
 * @since 0.1
 */
AIMS_API aims_status aims_client_join(aims_client *c, const char *url);
/**
 * @brief Call @p method of @p service and wait.
 * @param service     "name" (any version, by weight) or "name@version".
 * @param req         request (borrowed for the call).
 * @param reply       [out] cleared, then filled with the reply's tensors and error text.
 * @param flags       0 or AIMS_CALL_IDEMPOTENT.
 * @param timeout_ms  deadline from now; 0 = AIMS_CLIENT_TIMEOUT_MS. Propagated to the service.
 * @param c       The client; must not be NULL.
 * @param method  Method name of the service (e.g. "predict").
 * @return AIMS_OK, or the handler's status, or AIMS_E_TIMEOUT / OVERLOADED /
 *         NOTFOUND / CLOSED / IO; aims_client_errmsg() and aims_msg_error(reply)
 *         say why.
 * @since 0.1
 */
AIMS_API aims_status aims_client_call(aims_client *c, const char *service, const char *method,
                                      const aims_msg *req, aims_msg *reply, unsigned flags,
                                      int64_t timeout_ms);
/**
 * @brief Start a call; @p done runs exactly once (also on failure to start:
 * then before this returns, and the return value is that status).
 * @p req is copied when the call cannot complete before this returns.
 * Over tcp://, ipc:// and tls://, a call started while other async calls are
 * in flight is queued and written by the connection's I/O thread together
 * with the others queued by then (one writev for many calls); a lone call is
 * written on the caller's thread (docs/pipelined.md).
 * With AIMS_CALL_IDEMPOTENT and AIMS_CLIENT_HEDGE_MS >= 0 the call is hedged
 * as a synchronous one is (aims_cancel.h); @p done still runs once.
 * @return AIMS_OK when @p done has been or will be called with the outcome.
 * @since 0.1
 */
AIMS_API aims_status aims_client_call_async(aims_client *c, const char *service,
                                            const char *method, const aims_msg *req,
                                            unsigned flags, int64_t timeout_ms,
                                            aims_done_fn done, void *user);
/**
 * @brief Call a service on one address directly (no registry, no balancing, no retries).
 * @since 0.1
 */
AIMS_API aims_status aims_client_call_addr(aims_client *c, const char *address,
                                           const char *service, const char *method,
                                           const aims_msg *req, aims_msg *reply,
                                           int64_t timeout_ms);
/**
 * @brief The seed's load-balance degree of @p service, from the services' own
 * counters: every live instance's busy time ("$stats" busy_ns) is read, again
 * after @p window_ms, and degree = average utilisation / maximum utilisation
 * over the instances (1.0 = perfectly even; DESIGN.md §6). Blocks for the window.
 * @param out_degree  [out] the degree (0 when no instance did any work).
 * @param out_max_util [out] optional: the busiest instance's utilisation (0..cores).
 * @param c          The client; must not be NULL.
 * @param service    Service name whose instances are measured.
 * @param window_ms  Measurement window in ms, 1..600000.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND (no registry view or no live
 *         instance), AIMS_E_RANGE (window 1..600000 ms), or a call's error.
 * @since 0.1
 */
AIMS_API aims_status aims_client_balance_degree(aims_client *c, const char *service,
                                                int64_t window_ms, double *out_degree,
                                                double *out_max_util);
/**
 * @brief The client's metrics: calls, errors, retries, latency.
 * @return A handle borrowed from the client, valid until aims_client_destroy;
 *         NULL for a bad client. aims_metrics_destroy on it is refused (a
 *         no-op, AIMS_E_MISUSE text in aims_errmsg and a warning in the log).
 * @since 0.1
 */
AIMS_API aims_metrics *aims_client_metrics(aims_client *c);
/** @brief Last error text on this client ("" if none; per thread for calls). @since 0.1 */
AIMS_API const char *aims_client_errmsg(const aims_client *c);

AIMS_EXTERN_C_END

#endif /* AIMS_SVC_H */
