/*
 * regjoin.c -- the node side of the registry-service backend (regbk_service.c):
 * a node's registrations go to a registry hosted by another process
 * ("aims.registry", svc_registry.c) through aimsi_reg_ops.
 *
 * Split out of svc_registry.c when leases got secrets. "register" returns the
 * instance id and a lease secret; this side keeps the secret of every id it
 * holds and sends it with each heartbeat ("secrets") and with "deregister"
 * ("secret"): without it the registry refuses to renew or remove the lease,
 * which is what stops a process that only knows an id from taking somebody's
 * instance out. A heartbeat that reports the id missing (lease lost, registry
 * restarted, or the secret no longer matches) forgets the old secret and
 * registers again.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "../../codec/aimsi_kv.h"
#include "aimsi_regbk.h"
#include "../aimsi_node.h"

#define REG_SERVICE "aims.registry"

/* Copy a BYTES tensor of a reply into a NUL-terminated string (< cap bytes). */
static aims_status reply_str(const aims_msg *m, const char *name, char *buf, size_t cap)
{
    const char *p;
    size_t n;
    AIMSI_TRY(aimsi_msg_bytes(m, name, &p, &n));
    if (!aimsi_kv_field_copy(p, n, buf, cap)) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "registry reply tensor '%s' malformed", name);
    }
    return AIMS_OK;
}

/* A node's registrations go to the hosted registry through a private client.
 * The lease secret of every id it holds is kept here (a node hosts a handful
 * of services, so a short array). */
typedef struct join_secret {
    int64_t id;
    char secret[AIMSI_SECRET_HEX + 1];
} join_secret;

typedef struct node_join {
    aims_client *caller;
    char url[AIMSI_URL_MAX + 1];
    pthread_mutex_t lock;
    join_secret *sec;
    size_t n_sec, cap_sec;
    aimsi_reach reach; /* logs an unreachable registry once, with the cause */
} node_join;

/* Remember (secret non-NULL) or forget the secret of id. */
static aims_status join_keep(node_join *nj, int64_t id, const char *secret)
{
    aims_status rc = AIMS_OK;
    pthread_mutex_lock(&nj->lock);
    size_t i = 0;
    while (i < nj->n_sec && nj->sec[i].id != id) {
        i++;
    }
    if (secret == NULL) {
        if (i < nj->n_sec) {
            nj->sec[i] = nj->sec[--nj->n_sec];
        }
    } else {
        if (i == nj->n_sec && nj->n_sec == nj->cap_sec) {
            const size_t cap = nj->cap_sec ? nj->cap_sec * 2 : 8;
            join_secret *g = aimsi_realloc(nj->sec, cap * sizeof(*g));
            if (g == NULL) {
                rc = aimsi_err(NULL, AIMS_E_NOMEM, "aims_node_join: out of memory");
            } else {
                nj->sec = g;
                nj->cap_sec = cap;
            }
        }
        if (rc == AIMS_OK) {
            if (i == nj->n_sec) {
                nj->n_sec++;
            }
            nj->sec[i].id = id;
            snprintf(nj->sec[i].secret, sizeof(nj->sec[i].secret), "%s", secret);
        }
    }
    pthread_mutex_unlock(&nj->lock);
    return rc;
}

/* Copy the secret of id into out ("" when unknown). */
static void join_secret_of(node_join *nj, int64_t id, char out[AIMSI_SECRET_HEX + 1])
{
    out[0] = '\0';
    pthread_mutex_lock(&nj->lock);
    for (size_t i = 0; i < nj->n_sec; i++) {
        if (nj->sec[i].id == id) {
            memcpy(out, nj->sec[i].secret, AIMSI_SECRET_HEX + 1);
        }
    }
    pthread_mutex_unlock(&nj->lock);
}

#define JOIN_TIMEOUT_MS 2000

static aims_status join_call(node_join *nj, const char *method, const aims_msg *req,
                             aims_msg *reply)
{
    const aims_status rc = aims_client_call_addr(nj->caller, nj->url, REG_SERVICE, method, req,
                                                 reply, JOIN_TIMEOUT_MS);
    /* Any failed call: the registry is unusable (down, or the URL names a node
     * that hosts no registry); logged on the first failure only. A refusal
     * (wrong secret) is not an outage. */
    if (rc != AIMS_E_DENIED) {
        aimsi_reach_record(&nj->reach, rc, aims_client_errmsg(nj->caller));
    }
    return rc;
}

static aims_status join_reg(void *ctx, const char *service, const char *address,
                            uint32_t weight, uint64_t ttl_ms, uint64_t *out_id)
{
    node_join *nj = ctx;
    aims_msg req, reply;
    aimsi_msg_init(&req);
    aimsi_msg_init(&reply);
    aims_status rc = aimsi_msg_put_bytes(&req, "service", service, strlen(service));
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_bytes(&req, "address", address, strlen(address));
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(&req, "weight", weight);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(&req, "ttl_ms", (int64_t)ttl_ms);
    }
    if (rc == AIMS_OK) {
        rc = join_call(nj, "register", &req, &reply);
    }
    int64_t id = 0;
    if (rc == AIMS_OK) {
        rc = aimsi_msg_int(&reply, "id", &id);
    }
    if (rc == AIMS_OK && id <= 0) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "registry at %s returned instance id %lld",
                       nj->url, (long long)id);
    }
    char secret[AIMSI_SECRET_HEX + 1];
    if (rc == AIMS_OK) {
        rc = reply_str(&reply, "secret", secret, sizeof(secret));
    }
    if (rc == AIMS_OK) {
        rc = join_keep(nj, id, secret);
    }
    if (rc == AIMS_OK) {
        *out_id = (uint64_t)id;
    }
    aimsi_msg_fini(&req);
    aimsi_msg_fini(&reply);
    return rc;
}

static aims_status join_heartbeat(void *ctx, const char *service, const char *address,
                                  uint32_t weight, uint64_t ttl_ms, uint64_t *io_id)
{
    node_join *nj = ctx;
    const int64_t id = (int64_t)*io_id;
    char secret[AIMSI_SECRET_HEX + 1];
    join_secret_of(nj, id, secret);
    if (secret[0] == '\0') {
        /* We hold no lease under this id any more (deregistered, or never
         * registered through this session): the registry would refuse a
         * renewal without its secret, so register afresh. */
        return join_reg(ctx, service, address, weight, ttl_ms, io_id);
    }
    aims_msg req, reply;
    aimsi_msg_init(&req);
    aimsi_msg_init(&reply);
    const uint64_t dims[1] = {1};
    aims_status rc = aims_msg_add(&req, "ids", AIMS_DT_I64, dims, 1, &id, 0);
    char owner[AIMSI_URL_MAX + 2];
    if (rc == AIMS_OK) {
        const int k = snprintf(owner, sizeof(owner), "%s\n", service);
        rc = aimsi_msg_put_bytes(&req, "services", owner, (size_t)k);
    }
    if (rc == AIMS_OK) {
        const int k = snprintf(owner, sizeof(owner), "%s\n", address);
        rc = aimsi_msg_put_bytes(&req, "addresses", owner, (size_t)k);
    }
    if (rc == AIMS_OK) {
        const int k = snprintf(owner, sizeof(owner), "%s\n", secret);
        rc = aimsi_msg_put_bytes(&req, "secrets", owner, (size_t)k);
    }
    if (rc == AIMS_OK) {
        rc = join_call(nj, "heartbeat", &req, &reply);
    }
    size_t i;
    int lost = 0;
    if (rc == AIMS_OK && aims_msg_find(&reply, "missing", &i) == AIMS_OK) {
        size_t bytes = 0;
        aims_msg_get_tensor(&reply, i, NULL, NULL, NULL, NULL, NULL, &bytes);
        lost = bytes >= 8;
    }
    aimsi_msg_fini(&req);
    aimsi_msg_fini(&reply);
    if (rc == AIMS_OK && lost) {
        /* The registry forgot us (expired during a partition, or it restarted):
         * register again under a new id. */
        join_keep(nj, id, NULL);
        return join_reg(ctx, service, address, weight, ttl_ms, io_id);
    }
    return rc;
}

static aims_status join_dereg(void *ctx, uint64_t id)
{
    node_join *nj = ctx;
    aims_msg req, reply;
    aimsi_msg_init(&req);
    aimsi_msg_init(&reply);
    aims_status rc = aimsi_msg_put_i64(&req, "id", (int64_t)id);
    char secret[AIMSI_SECRET_HEX + 1];
    join_secret_of(nj, (int64_t)id, secret);
    if (rc == AIMS_OK && secret[0] != '\0') {
        rc = aimsi_msg_put_bytes(&req, "secret", secret, strlen(secret));
    }
    if (rc == AIMS_OK) {
        rc = join_call(nj, "deregister", &req, &reply);
    }
    if (rc == AIMS_OK) {
        join_keep(nj, (int64_t)id, NULL);
    }
    aimsi_msg_fini(&req);
    aimsi_msg_fini(&reply);
    return rc;
}

static void join_release(void *ctx)
{
    node_join *nj = ctx;
    if (nj != NULL) {
        aims_client_destroy(nj->caller);
        aimsi_reach_fini(&nj->reach);
        pthread_mutex_destroy(&nj->lock);
        aimsi_free(nj->sec);
        aimsi_free(nj);
    }
}

static aims_status join_publish(void *ctx, const char *name, const char *version,
                                const char *owner, const char *meta)
{
    node_join *nj = ctx;
    return aimsi_regsvc_publish(nj->caller, nj->url, name, version, owner, meta);
}

static const aimsi_reg_ops k_join_ops = {
    .reg = join_reg, .heartbeat = join_heartbeat, .dereg = join_dereg,
    .release = join_release, .publish = join_publish,
};

aims_status aimsi_regjoin_open(aims_node *n, const char *url, const aimsi_reg_ops **ops,
                              void **ctx)
{
    node_join *nj = aimsi_calloc(1, sizeof(*nj));
    if (nj == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_node_join: out of memory");
    }
    aims_tls_config *tls = n != NULL ? n->tt.tls : NULL; /* the node's credentials */
    aims_status rc = aimsi_regbk_private_client("aims_node_join", url, tls, nj->url, &nj->caller);
    if (rc != AIMS_OK) {
        aimsi_free(nj);
        return rc;
    }
    if (pthread_mutex_init(&nj->lock, NULL) != 0) {
        aims_client_destroy(nj->caller);
        aimsi_free(nj);
        return aimsi_err(NULL, AIMS_E_BACKEND, "aims_node_join: pthread_mutex_init failed");
    }
    aimsi_reach_init(&nj->reach, "node join", url);
    *ops = &k_join_ops;
    *ctx = nj;
    return AIMS_OK;
}
