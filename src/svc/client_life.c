/*
 * client_life.c -- the client side of the model lifecycle (aims_lifecycle.h):
 * aims_client_load_version, _unload_version, _set_version_weight, _rollback,
 * _canary_start and _canary_state.
 *
 * Why every instance: versions and weights live in each infer service
 * (svc_life.c), so a change meant for "the service" must reach each live
 * instance of it, not the one a balancer would pick. The client's registry
 * view lists them (as aims_client_balance_degree reads it); each gets the
 * request through aims_client_call_addr (no retry: these methods change
 * state and are not idempotent; a failed instance is named in the message),
 * one after the other, and the first failure is the result. Addresses that
 * appear twice (one node registering a service under two names) are called once.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/aimsi_core.h"
#include "aimsi_client.h"
#include "aimsi_msg.h"
#include "aimsi_regsync.h"
#include "aims/aims_lifecycle.h"
#include "transport/aimsi_transport.h"

#define LIFE_MAX_INSTANCES 256

typedef aims_status (*reply_fn)(void *user, const aims_msg *reply);

static aims_status each_instance(aims_client *c, const char *service, const char *method,
                                 const aims_msg *req, int64_t timeout_ms, reply_fn fn,
                                 void *user)
{
    aims_registry *r = aimsi_client_registry(c);
    if (r == NULL) {
        return aimsi_client_call_err(c, AIMS_E_NOTFOUND, "%s %s: the client has no registry view "
                         "(aims_client_set_registry or aims_client_join)", method, service);
    }
    aims_instance *ids = aimsi_calloc(LIFE_MAX_INSTANCES, sizeof *ids);
    char(*urls)[AIMSI_URL_MAX + 1] = aimsi_calloc(LIFE_MAX_INSTANCES, sizeof *urls);
    aims_msg reply;
    aimsi_msg_init(&reply);
    size_t found = 0, n = 0;
    aims_status rc = ids == NULL || urls == NULL ? AIMS_E_NOMEM : AIMS_OK;
    if (rc == AIMS_OK) {
        rc = aims_registry_lookup(r, service, ids, LIFE_MAX_INSTANCES, &found);
    }
    for (size_t i = 0; rc == AIMS_OK && i < found; i++) {
        size_t len = 0;
        if (aims_registry_get_address(r, ids[i], urls[n], sizeof urls[n], &len) != AIMS_OK) {
            continue;
        }
        int dup = 0;
        for (size_t k = 0; k < n && !dup; k++) {
            dup = strcmp(urls[k], urls[n]) == 0;
        }
        n += !dup;
    }
    if (rc == AIMS_OK && n == 0) {
        rc = aimsi_client_call_err(c, AIMS_E_NOTFOUND, "%s %s: no live instance", method, service);
    } else if (rc != AIMS_OK) {
        rc = aimsi_client_call_err(c, rc, "%s %s: reading the registry view failed", method,
                                   service);
    }
    for (size_t i = 0; rc == AIMS_OK && i < n; i++) {
        rc = aims_client_call_addr(c, urls[i], service, method, req, &reply, timeout_ms);
        if (rc != AIMS_OK) {
            const char *e = aims_msg_error(&reply);
            char cause[512];
            snprintf(cause, sizeof cause, "%s", e[0] != '\0' ? e : aims_client_errmsg(c));
            rc = aimsi_client_call_err(c, rc, "%s %s at %s: %s", method, service, urls[i],
                                       cause);
        } else if (fn != NULL) {
            rc = fn(user, &reply);
        }
    }
    aimsi_msg_fini(&reply);
    aimsi_free(ids);
    aimsi_free(urls);
    return rc;
}

static aims_status put_str(aims_msg *m, const char *name, const char *s)
{
    return aimsi_msg_put_bytes(m, name, s, strlen(s));
}

/* "version" and the bundle source of a load or deploy. */
static aims_status put_source(aims_msg *m, const char *version, const void *bundle, size_t len,
                              const char *path)
{
    if ((bundle == NULL || len == 0) == (path == NULL)) {
        return AIMSI_MISUSE("give exactly one of bundle bytes and path");
    }
    AIMSI_TRY(put_str(m, "version", version));
    if (path != NULL) {
        return put_str(m, "path", path);
    }
    const uint64_t n = len;
    return aims_msg_add(m, "bundle", AIMS_DT_BYTES, &n, 1, bundle, AIMS_MSG_BORROW);
}

static aims_status run(aims_client *c, const char *service, const char *method, aims_msg *req,
                       aims_status rc, int64_t timeout_ms, reply_fn fn, void *user)
{
    if (rc == AIMS_OK) {
        rc = each_instance(c, service, method, req, timeout_ms, fn, user);
    }
    aimsi_msg_fini(req);
    return rc;
}

#define LIFE_ARGS_OK(c, service) (aimsi_obj_ok((c), AIMSI_MAGIC_CLIENT) && (service) != NULL)

aims_status aims_client_load_version(aims_client *c, const char *service, const char *version,
                                     const void *bundle, size_t len, const char *path,
                                     int64_t timeout_ms)
{
    if (!LIFE_ARGS_OK(c, service) || version == NULL) {
        return AIMSI_MISUSE("NULL client, service or version");
    }
    aims_msg req;
    aimsi_msg_init(&req);
    const aims_status rc = put_source(&req, version, bundle, len, path);
    return run(c, service, "load", &req, rc, timeout_ms, NULL, NULL);
}

aims_status aims_client_unload_version(aims_client *c, const char *service, const char *version,
                                       int64_t timeout_ms)
{
    if (!LIFE_ARGS_OK(c, service) || version == NULL) {
        return AIMSI_MISUSE("NULL client, service or version");
    }
    aims_msg req;
    aimsi_msg_init(&req);
    const aims_status rc = put_str(&req, "version", version);
    return run(c, service, "unload", &req, rc, timeout_ms, NULL, NULL);
}

aims_status aims_client_set_version_weight(aims_client *c, const char *service,
                                           const char *version, uint32_t weight,
                                           int64_t timeout_ms)
{
    if (!LIFE_ARGS_OK(c, service) || version == NULL) {
        return AIMSI_MISUSE("NULL client, service or version");
    }
    aims_msg req;
    aimsi_msg_init(&req);
    aims_status rc = put_str(&req, "version", version);
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(&req, "weight", (int64_t)weight);
    }
    return run(c, service, "weight", &req, rc, timeout_ms, NULL, NULL);
}

aims_status aims_client_rollback(aims_client *c, const char *service, int64_t timeout_ms)
{
    if (!LIFE_ARGS_OK(c, service)) {
        return AIMSI_MISUSE("NULL client or service");
    }
    aims_msg req;
    aimsi_msg_init(&req);
    return run(c, service, "rollback", &req, AIMS_OK, timeout_ms, NULL, NULL);
}

/* A canary id (16 hex digits): the wall clock, the process and a counter,
 * mixed (splitmix64), so two clients starting canaries do not collide. */
static void canary_id(char *out, size_t cap)
{
    static _Atomic uint64_t seq;
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    x ^= (uint64_t)getpid() << 40;
    x += (atomic_fetch_add(&seq, 1) + 1) * 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    snprintf(out, cap, "%016llx", (unsigned long long)x);
}

aims_status aims_client_canary_start(aims_client *c, const char *service, const char *version,
                                     const void *bundle, size_t len, const char *path,
                                     uint32_t percent, const char *rule, int64_t timeout_ms)
{
    if (!LIFE_ARGS_OK(c, service) || version == NULL) {
        return AIMSI_MISUSE("NULL client, service or version");
    }
    if (percent < 1 || percent > 100) {
        return aimsi_err(NULL, AIMS_E_RANGE, "canary percent %u not in 1..100", percent);
    }
    aims_msg req;
    aimsi_msg_init(&req);
    aims_status rc = put_source(&req, version, bundle, len, path);
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(&req, "percent", (int64_t)percent);
    }
    if (rc == AIMS_OK && rule != NULL) {
        rc = put_str(&req, "rule", rule);
    }
    char id[24];
    canary_id(id, sizeof id);
    if (rc == AIMS_OK) { /* one id for every instance: it names the cluster's verdict */
        rc = put_str(&req, "canary_id", id);
    }
    return run(c, service, "deploy", &req, rc, timeout_ms, NULL, NULL);
}

/* Fold one instance's canary state into the overall one. */
static aims_status fold_state(void *user, const aims_msg *reply)
{
    aims_canary_state *acc = user;
    int64_t v = 0;
    AIMSI_TRY(aimsi_msg_int(reply, "canary", &v));
    static const int rank[] = {0, 2, 1, 3}; /* NONE < PROMOTED < RUNNING < ROLLED_BACK */
    if (v < 0 || v > 3) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "versions: canary state %lld unknown",
                         (long long)v);
    }
    if (rank[v] > rank[*acc]) {
        *acc = (aims_canary_state)v;
    }
    return AIMS_OK;
}

aims_status aims_client_canary_state(aims_client *c, const char *service, aims_canary_state *out,
                                     int64_t timeout_ms)
{
    if (!LIFE_ARGS_OK(c, service) || out == NULL) {
        return AIMSI_MISUSE("NULL client, service or out");
    }
    aims_msg req;
    aimsi_msg_init(&req);
    aims_canary_state acc = AIMS_CANARY_STATE_NONE;
    const aims_status rc = run(c, service, "versions", &req, AIMS_OK, timeout_ms, fold_state, &acc);
    if (rc == AIMS_OK) {
        *out = acc;
    }
    return rc;
}
