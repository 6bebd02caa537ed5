/*
 * aims_lifecycle.h -- the remote model lifecycle of infer services: load,
 * unload, per-version traffic weights, rollback and canary deployments with
 * automatic promotion or rollback (issue 16 item 3; docs/LIFECYCLE.md).
 *
 * Versions live inside one infer service. A service "fmnist" serves its first
 * bundle as one version (the "@version" of its name, else the bundle's
 * "version" meta, else "1") and may hold up to 8 versions at once; each has a
 * weight 0..10000, and the service splits its predict traffic between the
 * versions in proportion to their weights (smooth weighted round robin, so
 * 10 / 90 gives exactly 1 call in 10). Why in the service and not as one
 * registry instance per version: a client sends the name it called, the node
 * resolves that name to one service, and only there is a failed try of a new
 * version cheap to serve again by the old one. So a canary never costs a
 * failed call: a predict that fails on a version other than the stable one is
 * run again, in the same batch, on the stable version, and the client sees
 * the stable version's answer. Every node applies the same weights to its own
 * traffic; the client calls below send each change to every live instance.
 *
 * Methods of every infer service (wire names; docs/LIFECYCLE.md has tensors):
 *   load     add a version from bundle bytes or a path under the service's
 *            model directory (aims_service_set_model_dir); weight 0 by default
 *   unload   remove a version that has no traffic (weight 0, not the stable one)
 *   weight   set one version's weight
 *   rollback give all traffic back to the previous version
 *   deploy   load a version and start a canary (or switch to it at 100 %)
 *   versions the table (read-only, a plain "call")
 * Over the wire the first five need a policy that allows the caller the
 * action of the same name (policy actions "load", "unload", "weight",
 * "rollback", "deploy"; docs/SECURITY.md) on the service, as "swap" does;
 * in-process callers are "host". Each is audited (AIMS_AUDIT_MODEL_*), and
 * the canary's own decisions are audited with the identity "canary".
 *
 * Canary rule (text "key=value ...", every key optional; defaults shown):
 *   window_ms=2000 min_calls=50 max_error_delta=0.01 max_latency_ratio=2
 *   latency_slack_us=2000
 * The canary is rolled back (weight 0, unloaded) as soon as it has min_calls
 * calls and its error rate exceeds the stable version's by more than
 * max_error_delta (a canary error is a call that failed on the canary and then
 * succeeded on the stable version); once window_ms has passed with at least
 * min_calls canary calls, it is rolled back when its mean latency exceeds both
 * max_latency_ratio x and latency_slack_us above the stable version's mean,
 * else promoted (weight 100, every other version 0; the old stable version
 * stays loaded as the rollback target). A canary with fewer than min_calls
 * calls when its window ends gets the window once more; still too few calls
 * then, it is rolled back ("insufficient traffic": the stable version keeps
 * serving). The rule is applied after every batch, on every "versions" query
 * (aims_client_canary_state) and on the node's heartbeat tick
 * (AIMS_NODE_HEARTBEAT_MS, while the node has a registry), so a window that
 * ends without traffic still gets its verdict.
 *
 * One verdict per cluster: when the node has a registry, the first instance
 * to reach a verdict records it there exactly once (as aims_publish.h
 * publishes a version: "<service>/<version>@verdict-<canary id>", owner
 * "promoted <node>" or "rolled_back <node>"), and every other instance
 * applies the recorded verdict when it reaches its own, whatever its own
 * numbers said -- so all instances end in the same state, and the model event
 * (AIMS_EVENT_MODEL) of the verdict is posted once, by the instance that
 * recorded it. Without a registry each instance decides alone.
 *
 * Metrics (the node's aims_metrics, labels service, version):
 * aims_version_weight (gauge), aims_version_calls_total,
 * aims_version_errors_total, aims_version_fallbacks_total,
 * aims_canary_decisions_total{outcome="promoted"|"rolled_back"}.
 *
 * Threads: every call here may run on any thread, on shared objects.
 */
/** @file */
#ifndef AIMS_LIFECYCLE_H
#define AIMS_LIFECYCLE_H

#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/** Where a service's last canary stands (values never change). */
typedef enum aims_canary_state {
    AIMS_CANARY_STATE_NONE = 0,        /**< no canary was started */
    AIMS_CANARY_STATE_RUNNING = 1,     /**< being watched */
    AIMS_CANARY_STATE_PROMOTED = 2,    /**< it passed: it serves all traffic */
    AIMS_CANARY_STATE_ROLLED_BACK = 3  /**< it failed: traffic went back, it was unloaded */
} aims_canary_state;

/**
 * @brief Let "load" and "deploy" requests name a bundle file by path, but
 *        only one under @p dir (resolved with realpath: no ".." or symlink
 *        escapes). Without a model directory, loads by path are refused.
 * @param s   An infer service.
 * @param dir An existing directory (copied after resolving), or NULL to refuse paths again.
 * @return AIMS_OK, AIMS_E_MISUSE (not an infer service), AIMS_E_IO (no such
 *         directory), AIMS_E_RANGE (path too long), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_service_set_model_dir(aims_service *s, const char *dir);

/**
 * @brief Load a version into every live instance of @p service (weight 0:
 *        it takes no traffic until aims_client_set_version_weight).
 * @param c        Client with a registry view (set_registry or join).
 * @param service  Infer service name ("name").
 * @param version  Version label, 1..32 bytes of [A-Za-z0-9._-], new on the service.
 * @param bundle   Bundle file bytes (aims_bundle_save's format), or NULL with @p path.
 * @param len      Bytes at @p bundle.
 * @param path     Or a bundle file under the service's model directory (NULL with @p bundle).
 * @param timeout_ms Per instance; 0 = the client's default.
 * @return AIMS_OK when every instance loaded it; else the first failure
 *         (AIMS_E_DENIED, AIMS_E_EXISTS, AIMS_E_CORRUPT, AIMS_E_RANGE (8
 *         versions already), AIMS_E_NOTFOUND (no instance), ...);
 *         aims_client_errmsg() names the instance and the cause.
 * @since 0.1
 */
AIMS_API aims_status aims_client_load_version(aims_client *c, const char *service,
                                              const char *version, const void *bundle,
                                              size_t len, const char *path, int64_t timeout_ms);

/**
 * @brief Unload @p version from every live instance. Refused (AIMS_E_STATE)
 *        while the version has a weight above 0, is the stable version or a
 *        running canary.
 * @return AIMS_OK or the first failure (AIMS_E_NOTFOUND: no such version).
 * @since 0.1
 */
AIMS_API aims_status aims_client_unload_version(aims_client *c, const char *service,
                                                const char *version, int64_t timeout_ms);

/**
 * @brief Set @p version's traffic weight (0..10000) on every live instance.
 *        The service splits predict calls between versions in proportion to
 *        their weights. Refused (AIMS_E_STATE) when it would leave no version
 *        with weight, or while a canary runs (roll it back first).
 * @return AIMS_OK or the first failure.
 * @since 0.1
 */
AIMS_API aims_status aims_client_set_version_weight(aims_client *c, const char *service,
                                                    const char *version, uint32_t weight,
                                                    int64_t timeout_ms);

/**
 * @brief Give all traffic back to the previous version: while a canary runs
 *        or traffic is split, to the stable version (the canary is unloaded);
 *        otherwise to the version that was stable before the last promotion.
 * @return AIMS_OK or the first failure (AIMS_E_STATE: nothing to go back to).
 * @since 0.1
 */
AIMS_API aims_status aims_client_rollback(aims_client *c, const char *service,
                                          int64_t timeout_ms);

/**
 * @brief Deploy @p version (bytes or path, as aims_client_load_version) as a
 *        canary taking @p percent % of the traffic, judged by @p rule (NULL:
 *        the defaults; see the header overview). @p percent = 100 switches to
 *        it at once (the old version stays loaded for rollback).
 * @param c        Client with a registry view.
 * @param service  Infer service name.
 * @param version  New version label (as aims_client_load_version).
 * @param bundle   Bundle file bytes, or NULL with @p path.
 * @param len      Bytes at @p bundle.
 * @param path     Or a bundle file under the service's model directory.
 * @param percent  1..100.
 * @param rule     "key=value" text or NULL.
 * @param timeout_ms Per instance; 0 = the client's default.
 * @return AIMS_OK when every instance started it; the outcome comes later
 *         (aims_client_canary_state). Every instance gets the same canary id
 *         (a fresh random one per call), which names the cluster's verdict
 *         record, so a later canary of the same version label is judged anew.
 * @since 0.1
 */
AIMS_API aims_status aims_client_canary_start(aims_client *c, const char *service,
                                              const char *version, const void *bundle,
                                              size_t len, const char *path, uint32_t percent,
                                              const char *rule, int64_t timeout_ms);

/**
 * @brief The canary state over every live instance: ROLLED_BACK if any rolled
 *        back, else RUNNING if any still runs, else PROMOTED if any promoted, else NONE.
 * @param c        Client with a registry view.
 * @param service  Infer service name.
 * @param out      [out] the state.
 * @param timeout_ms Per instance; 0 = the client's default.
 * @return AIMS_OK or the first failure.
 * @since 0.1
 */
AIMS_API aims_status aims_client_canary_state(aims_client *c, const char *service,
                                              aims_canary_state *out, int64_t timeout_ms);

AIMS_EXTERN_C_END

#endif
