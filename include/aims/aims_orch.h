/*
 * aims_orch.h -- orchestration primitives: registry, balancer, health, metrics.
 *
 * These are plain objects that know nothing about transports or models: a host
 * can use them with its own networking, and tests drive them with a simulated
 * clock. The node/service/client layer (a later header) wires them together.
 *
 * Instances are identified by aims_instance ids (non-zero uint64, never reused
 * within one registry). A balancer and a health tracker hold ids only.
 *
 * Time. Every object reads time through an aims_clock_fn (nanoseconds,
 * monotonic). The default is CLOCK_MONOTONIC (the balancer, whose latency
 * decay has a 10 s time constant, reads CLOCK_MONOTONIC_COARSE: 14 ns instead
 * of 75 ns per read on this VM); set_clock() installs another one (tests,
 * simulations). Durations in parameters are milliseconds.
 *
 * Threads. Every function of this header is safe to call from any thread on a
 * shared object, except *_destroy and set_clock (exclusive). Callbacks (watches,
 * health state changes) run after the object's state lock is released; a
 * callback may call into the same object (but not destroy it). Registry watch
 * callbacks are delivered strictly in revision order, so one may run on another
 * registry-calling thread than the one that caused its event; every call
 * returns only after its own events were delivered.
 */
/** @file */
#ifndef AIMS_ORCH_H
#define AIMS_ORCH_H

#include "aims_core.h"

AIMS_EXTERN_C_BEGIN

/** Identifier of one registered service instance (never 0 for a live one). */
typedef uint64_t aims_instance;
/** Service registry: instances by name, leases, watches (opaque). */
typedef struct aims_registry aims_registry;
/** Load balancer picking one instance per call (opaque). */
typedef struct aims_balancer aims_balancer;
/** Health checker probing instances (opaque). */
typedef struct aims_health aims_health;
/** Counters, gauges and latency histograms (opaque). */
typedef struct aims_metrics aims_metrics;

/** Clock: monotonic nanoseconds. */
typedef uint64_t (*aims_clock_fn)(void *user);

/* ------------------------------------------------------------------------ */
/* Registry                                                                   */

/** Registry events (watch callbacks). */
typedef enum aims_event_kind {
    AIMS_EVENT_PUT = 1,     /**< instance registered or its data changed */
    AIMS_EVENT_DELETE = 2,  /**< instance deregistered */
    AIMS_EVENT_EXPIRE = 3,  /**< instance removed because its lease expired */
    /* Only client event watches (aims_events.h) deliver the kinds below. */
    AIMS_EVENT_WEIGHT = 4,  /**< an instance's weight changed */
    AIMS_EVENT_VERSION = 5, /**< first instance of a "name@version" appeared */
    AIMS_EVENT_RESYNC = 6,  /**< history lost: a full snapshot follows */
    AIMS_EVENT_MODEL = 7,   /**< a model lifecycle step on an infer service (docs/EVENTS.md) */
    AIMS_EVENT_JOB = 8      /**< a training job changed state or made progress */
} aims_event_kind;

/**
 * Watch callback: one call per event, in revision order, never two for one revision.
 * @p service and @p address are valid only during the call.
 */
typedef void (*aims_watch_fn)(void *user, uint64_t revision, aims_event_kind kind,
                              aims_instance id, const char *service, const char *address);

/**
 * @brief Create an empty registry (revision 0).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_registry_create(aims_registry **out);
/** @brief Destroy a registry. NULL is a no-op. @since 0.1 */
AIMS_API void aims_registry_destroy(aims_registry *r);
/** @brief Install the clock (NULL restores CLOCK_MONOTONIC). @since 0.1 */
AIMS_API aims_status aims_registry_set_clock(aims_registry *r, aims_clock_fn fn, void *user);

/**
 * @brief Register an instance with a lease of @p ttl_ms.
 * @param service  "name" or "name@version"; 1..128 bytes of [A-Za-z0-9_.@/-],
 *                 at most one '@', neither first nor last.
 * @param address  Transport address, 1..256 bytes (copied).
 * @param weight   Relative weight 1..10000 (balancers use it).
 * @param ttl_ms   Lease length, 1 ms .. 1 day. The instance is removed (EXPIRE
 *                 event) once ttl_ms passes without a heartbeat; removal happens
 *                 at the first registry call after that moment (any call sweeps).
 * @param out_id   [out] the new instance id.
 * @param r  The registry; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (names, weight, ttl), AIMS_E_NOMEM,
 *         AIMS_E_OVERLOADED (more than 4096 undelivered events queued by writes
 *         from inside watch callbacks; also for set_weight and deregister).
 * @since 0.1
 */
AIMS_API aims_status aims_registry_register(aims_registry *r, const char *service,
                                            const char *address, uint32_t weight,
                                            uint64_t ttl_ms, aims_instance *out_id);

/**
 * @brief Renew an instance's lease (now + ttl).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND (unknown or already expired:
 *         the owner must register again).
 * @since 0.1
 */
AIMS_API aims_status aims_registry_heartbeat(aims_registry *r, aims_instance id);

/**
 * @brief Change an instance's weight (a PUT event).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL, AIMS_E_NOTFOUND.
 * @since 0.1
 */
AIMS_API aims_status aims_registry_set_weight(aims_registry *r, aims_instance id,
                                              uint32_t weight);

/** @brief Remove an instance now (DELETE event). AIMS_E_NOTFOUND if absent. @since 0.1 */
AIMS_API aims_status aims_registry_deregister(aims_registry *r, aims_instance id);

/**
 * @brief Remove every instance whose lease has expired; optional count of removals.
 * @since 0.1
 */
AIMS_API aims_status aims_registry_sweep(aims_registry *r, size_t *out_expired);

/** @brief Current revision: bumped once per event. @since 0.1 */
AIMS_API uint64_t aims_registry_revision(const aims_registry *r);

/**
 * @brief Live instances of @p service ("name" matches every version, "name@v" one).
 * @param out_ids  [out] up to @p cap ids, in registration order.
 * @param out_n    [out] number of live instances (may exceed cap: then the call
 *                 returns AIMS_E_RANGE, sets *out_n and writes no ids).
 * @param r        The registry; must not be NULL.
 * @param service  Service name to look up ("name" or "name@version").
 * @param cap      Capacity of the output array in entries.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE.
 * @since 0.1
 */
AIMS_API aims_status aims_registry_lookup(aims_registry *r, const char *service,
                                          aims_instance *out_ids, size_t cap, size_t *out_n);

/**
 * @brief Copy an instance's address into @p buf (NUL-terminated).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND, AIMS_E_RANGE (buf too small;
 *         *out_len says the size needed without the NUL).
 * @since 0.1
 */
AIMS_API aims_status aims_registry_get_address(aims_registry *r, aims_instance id, char *buf,
                                               size_t cap, size_t *out_len);

/** @brief Weight of an instance, or 0 if unknown. Not const: like
 * aims_registry_lookup it first sweeps expired leases (NAMING.md rule 10). @since 0.1 */
AIMS_API uint32_t aims_registry_weight(aims_registry *r, aims_instance id);

/**
 * @brief Watch events of @p service (NULL: all services) after @p from_revision.
 *
 * Events with revision > from_revision still in the history (the last 4096
 * events) are delivered first, in order, before this call returns; then every
 * new event. Pass aims_registry_revision() to see only new events.
 * @param out_watch [out] id for aims_registry_unwatch.
 * @param r              The registry; must not be NULL.
 * @param service        Service name to watch, or NULL for every service.
 * @param from_revision  Deliver events with a revision above this one.
 * @param fn             Callback run for each change, in revision order.
 * @param user           Passed to @p fn unchanged.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE (from_revision older than the
 *         history: compacted, take a fresh lookup and watch from its revision),
 *         AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_registry_watch(aims_registry *r, const char *service,
                                         uint64_t from_revision, aims_watch_fn fn, void *user,
                                         uint64_t *out_watch);

/** @brief Stop a watch; no callback runs after this returns. @since 0.1 */
AIMS_API aims_status aims_registry_unwatch(aims_registry *r, uint64_t watch);

/* ------------------------------------------------------------------------ */
/* Balancer                                                                   */

/** Balancing policies. */
typedef enum aims_lb_policy {
    AIMS_LB_P2C = 1,          /**< two distinct random instances, least (outstanding+1) x latency EWMA / weight (default) */
    AIMS_LB_ROUND_ROBIN = 2,
    AIMS_LB_WEIGHTED_RR = 3,  /**< smooth weighted round robin (nginx) */
    AIMS_LB_LEAST_OUTSTANDING = 4,
    AIMS_LB_MAGLEV = 5,       /**< consistent hashing on a hash of the key (Maglev table, 65537 entries; <= 65535 instances) */
    AIMS_LB_RANDOM = 6
} aims_lb_policy;

/**
 * @brief Create a balancer.
 * @param seed Seed of the balancer's RNG (P2C, random): same seed, same picks.
 * @param policy  The picking policy (AIMS_LB_*).
 * @param out     [out] the new balancer on success.
 * @since 0.1
 */
AIMS_API aims_status aims_balancer_create(aims_lb_policy policy, uint64_t seed,
                                          aims_balancer **out);
/** @brief Destroy a balancer. NULL is a no-op. @since 0.1 */
AIMS_API void aims_balancer_destroy(aims_balancer *b);
/** @brief Install the clock used for latency EWMA decay. @since 0.1 */
AIMS_API aims_status aims_balancer_set_clock(aims_balancer *b, aims_clock_fn fn, void *user);

/**
 * @brief Replace the instance set. Instances kept from the previous set keep
 * their load statistics; weights 1..10000 (NULL weights: all 1).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (duplicate or zero id, weight), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_balancer_set_instances(aims_balancer *b, const aims_instance *ids,
                                                 const uint32_t *weights, size_t n);

/**
 * @brief Mark an instance available (non-zero) or unavailable (0) for picking
 * (health feeds this). When every instance is unavailable, picks ignore the
 * marks (panic: better an unhealthy instance than none).
 * @since 0.1
 */
AIMS_API aims_status aims_balancer_set_available(aims_balancer *b, aims_instance id,
                                                 int available);

/**
 * @brief Pick an instance and count one outstanding request on it.
 * @param key  Affinity key (MAGLEV); ignored by other policies.
 * @param out  [out] the instance. Report completion with aims_balancer_done().
 * @param b  The balancer; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND (empty set).
 * @note Thread safety: lock-free on the hot path for every policy but WEIGHTED_RR.
 * @since 0.1
 */
AIMS_API aims_status aims_balancer_pick(aims_balancer *b, uint64_t key, aims_instance *out);

/**
 * @brief Report the end of a picked request: latency feeds the EWMA, the
 * outstanding count drops by one. Unknown ids (removed meanwhile) are ignored.
 * @since 0.1
 */
AIMS_API aims_status aims_balancer_done(aims_balancer *b, aims_instance id, uint64_t latency_ns,
                                        int ok);

/** @brief Outstanding requests on an instance (0 if unknown). @since 0.1 */
AIMS_API uint64_t aims_balancer_outstanding(const aims_balancer *b, aims_instance id);

/* ------------------------------------------------------------------------ */
/* Health                                                                     */

/** Health states of an instance. */
typedef enum aims_health_state {
    AIMS_HEALTH_STATE_HEALTHY = 1,
    AIMS_HEALTH_STATE_EJECTED = 2  /**< passive outlier ejection; returns after the ejection time */
} aims_health_state;

/** State-change callback. */
typedef void (*aims_health_fn)(void *user, aims_instance id, aims_health_state from,
                               aims_health_state to);

/**
 * @brief Create a health tracker. Parameters (AIMS_HEALTH_*, 600..699) default to
 * Envoy's: 5 consecutive failures eject; ejection 30 s x times ejected, capped at
 * 300 s; at most 10 % of instances ejected (at least one); panic below 50 % healthy.
 * @since 0.1
 */
AIMS_API aims_status aims_health_create(aims_health **out);
/** @brief Destroy a tracker. NULL is a no-op. @since 0.1 */
AIMS_API void aims_health_destroy(aims_health *h);
/** @brief Install the clock. @since 0.1 */
AIMS_API aims_status aims_health_set_clock(aims_health *h, aims_clock_fn fn, void *user);
/** @brief Set an integer parameter (AIMS_HEALTH_*). @since 0.1 */
AIMS_API aims_status aims_health_set_param_i64(aims_health *h, aims_param param, int64_t value);
/** @brief Install the state-change callback (NULL removes it). @since 0.1 */
AIMS_API aims_status aims_health_set_change_fn(aims_health *h, aims_health_fn fn, void *user);
/** @brief Start tracking an instance (healthy). AIMS_E_EXISTS if tracked. @since 0.1 */
AIMS_API aims_status aims_health_add(aims_health *h, aims_instance id);
/** @brief Stop tracking an instance. @since 0.1 */
AIMS_API aims_status aims_health_remove(aims_health *h, aims_instance id);
/**
 * @brief Report a call outcome. Consecutive failures may eject the instance
 * (subject to the ejected-share cap); a success resets the failure run.
 * @since 0.1
 */
AIMS_API aims_status aims_health_report(aims_health *h, aims_instance id, int ok);
/**
 * @brief Current state (expired ejections end here, firing the callback).
 * @return the state, or 0 for an unknown instance.
 * @since 0.1
 */
AIMS_API aims_health_state aims_health_state_of(aims_health *h, aims_instance id);
/** @brief Non-zero when fewer than the panic threshold of instances are healthy.
 * Not const: like aims_health_state_of it first ends expired ejections. @since 0.1 */
AIMS_API int aims_health_is_in_panic(aims_health *h);

/* ------------------------------------------------------------------------ */
/* Metrics                                                                    */

/**
 * @brief Create a metrics registry: named counters, gauges and latency histograms
 * (log-linear buckets, 1 us .. 100 s, ~3 % relative error).
 * @since 0.1
 */
AIMS_API aims_status aims_metrics_create(aims_metrics **out);
/**
 * @brief Destroy a registry made by aims_metrics_create. NULL is a no-op.
 *
 * A handle borrowed from a node or client (aims_node_metrics,
 * aims_client_metrics) is not the caller's to destroy: it is left alone (its
 * owner frees it), aims_errmsg() names the mistake (AIMS_E_MISUSE) and a
 * warning goes to the log.
 * @since 0.1
 */
AIMS_API void aims_metrics_destroy(aims_metrics *mx);
/**
 * @brief Add @p delta to a counter, creating it at 0 first.
 * @param name  Prometheus-style metric name [a-zA-Z_:][a-zA-Z0-9_:]*, <= 128 bytes.
 * @param labels Prometheus label text without braces (e.g. "service=\"infer\""), or NULL.
 * @param mx     The metrics object; must not be NULL.
 * @param delta  Amount to add to the counter.
 * A name keeps the type it was created with: using it as another type, malformed
 * labels, or a label "le" on a histogram give AIMS_E_INVAL.
 * @since 0.1
 */
AIMS_API aims_status aims_metrics_count(aims_metrics *mx, const char *name, const char *labels,
                                        uint64_t delta);
/** @brief Set a gauge. @since 0.1 */
AIMS_API aims_status aims_metrics_set_gauge(aims_metrics *mx, const char *name, const char *labels,
                                            double value);
/** @brief Record one latency observation (nanoseconds) in a histogram. @since 0.1 */
AIMS_API aims_status aims_metrics_observe(aims_metrics *mx, const char *name,
                                          const char *labels, uint64_t ns);
/**
 * @brief Quantile of a histogram in nanoseconds (q in [0, 1]).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND (no such histogram or no data), AIMS_E_INVAL.
 * @since 0.1
 */
AIMS_API aims_status aims_metrics_quantile(const aims_metrics *mx, const char *name,
                                           const char *labels, double q, double *out_ns);
/**
 * @brief Prometheus text exposition of every metric (histograms as _bucket/_sum/_count).
 * @param out [out] NUL-terminated text allocated by the library; free with aims_free().
 * @param mx       The metrics object; must not be NULL.
 * @param out_len  [out] length of the text without the NUL (may be NULL).
 * @since 0.1
 */
AIMS_API aims_status aims_metrics_prometheus(const aims_metrics *mx, char **out,
                                             size_t *out_len);

AIMS_EXTERN_C_END

#endif /* AIMS_ORCH_H */
