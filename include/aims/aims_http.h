/*
 * aims_http.h -- the HTTP front door of a node: the Open Inference Protocol
 * (KServe v2 REST), health probes, Prometheus metrics and a status page.
 *
 * A host that runs a node may put an HTTP server in front of it so that
 * Kubernetes probes, Prometheus and programs in any language reach its
 * services without speaking libaims' frame protocol:
 *
 *   GET  /v2/health/live            200 while the server runs
 *   GET  /v2/health/ready           200 when every service of the node is
 *                                   started and registered; 503 before that
 *                                   and while the node drains
 *   GET  /v2                        server metadata
 *   GET  /v2/models/M[/versions/V]  model metadata (inputs, outputs, -1 batch)
 *   GET  /v2/models/M[/versions/V]/ready
 *   POST /v2/models/M[/versions/V]/infer   JSON tensors in and out
 *   GET  /metrics                   Prometheus text exposition
 *   GET  /                          status page (self-contained HTML)
 *
 * Model M version V is the infer service "M@V" of the node (M alone picks
 * the service named exactly M, else the first "M@..." one). An infer request
 * goes through the node's own dispatch: the same queues, dynamic batching,
 * deadlines (AIMS_HTTP_TIMEOUT_MS) and overload rejection as a native call.
 * docs/HTTP.md describes the JSON, the status codes and every metric.
 *
 * The server is libmicrohttpd (HTTP/1.1, keep-alive); it is an optional part
 * of the build (meson -Dhttp=disabled): then aims_http_create returns
 * AIMS_E_UNSUPPORTED ("built without HTTP").
 *
 * Security: plain HTTP listens on loopback only unless AIMS_HTTP_INSECURE is
 * set; with aims_http_set_tls (aims_https.h) the door serves HTTPS and may
 * listen anywhere. Callers are "anonymous" unless an "Authorization: Bearer"
 * JWT verifies against the node's policy (aims_policy.h), which judges infer
 * requests here as on the native protocol.
 *
 * Threads: create/set/start/stop/destroy from one thread at a time. The
 * server's own threads (AIMS_HTTP_THREADS) call into the node. Stop (or
 * destroy) the server before destroying its node.
 */
/** @file */
#ifndef AIMS_HTTP_H
#define AIMS_HTTP_H

#include "aims_core.h"
#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/** An HTTP front door of one node. */
typedef struct aims_http aims_http;

/**
 * @brief Create an HTTP front door for @p node (not started).
 * @param node  The node whose services it serves; borrowed, must outlive the server.
 * @param out   [out] the new server.
 * @return AIMS_OK, AIMS_E_MISUSE (NULL arguments or not a node), AIMS_E_NOMEM,
 *         AIMS_E_UNSUPPORTED when libaims was built without HTTP.
 * @since 0.1
 */
AIMS_API aims_status aims_http_create(aims_node *node, aims_http **out);

/**
 * @brief Stop the server if it runs (see aims_http_stop) and free it. NULL is a no-op.
 * @since 0.1
 */
AIMS_API void aims_http_destroy(aims_http *h);

/**
 * @brief Set a server parameter (AIMS_HTTP_*), before aims_http_start.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_UNSUPPORTED (not an AIMS_HTTP_* parameter),
 *         AIMS_E_RANGE (out of bounds; see aims_param_info), AIMS_E_STATE (running).
 * @since 0.1
 */
AIMS_API aims_status aims_http_set_param_i64(aims_http *h, aims_param param, int64_t value);

/**
 * @brief Set the address to listen on, before aims_http_start.
 * @param addr  "HOST:PORT" with HOST an IPv4 address, "localhost" or "[::1]"-style
 *              IPv6 address; PORT 0 picks a free port. Default "127.0.0.1:0".
 *              A non-loopback HOST needs AIMS_HTTP_INSECURE = 1 (else AIMS_E_STATE
 *              at start).
 * @param h  The HTTP server; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (malformed address), AIMS_E_STATE (running).
 * @since 0.1
 */
AIMS_API aims_status aims_http_set_listen(aims_http *h, const char *addr);

/**
 * @brief Bind and start serving on the server's own threads.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (already running, or a non-loopback
 *         address without AIMS_HTTP_INSECURE), AIMS_E_IO (bind failed: message names
 *         the address), AIMS_E_BACKEND (the HTTP library failed).
 * @since 0.1
 */
AIMS_API aims_status aims_http_start(aims_http *h);

/**
 * @brief Stop accepting, let requests already handed to the node finish (their
 *        replies are still sent), close every connection, join the threads.
 *        Idempotent; the server may be started again.
 * @since 0.1
 */
AIMS_API void aims_http_stop(aims_http *h);

/**
 * @brief The base URL the server listens on ("http://127.0.0.1:8080"), the
 *        port resolved, once started.
 * @param buf      [out] caller buffer, NUL-terminated on success.
 * @param cap      capacity of @p buf (64 is enough for any address).
 * @param out_len  [out] length without the NUL (may be NULL).
 * @param h  The HTTP server; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (not running), AIMS_E_RANGE (buf too small).
 * @since 0.1
 */
AIMS_API aims_status aims_http_url(const aims_http *h, char *buf, size_t cap, size_t *out_len);

/** @brief Last error text on this server ("" if none). @since 0.1 */
AIMS_API const char *aims_http_errmsg(const aims_http *h);

AIMS_EXTERN_C_END

#endif /* AIMS_HTTP_H */
