/*
 * regbk_service.c -- the registry-service backend: joining the "aims.registry"
 * service a node hosts (svc_registry.c) at aims:// (= tcp://), tcp://, ipc://,
 * inproc:// or any other transport URL.
 *
 * A joining client keeps a private local aims_registry as a mirror and a sync
 * thread that polls "changes" every AIMS_CLIENT_SYNC_MS and applies them. When
 * the registry is unreachable the thread just tries again later: the mirror
 * keeps its last view (static stability -- never drop healthy instances
 * because the registry went away). Mirror entries carry a long lease renewed
 * by every successful sync.
 *
 * A joining node registers, heartbeats and deregisters its services with
 * frames through a private client (the aimsi_reg_ops session below); an id
 * the registry no longer knows (expired during a partition, or the registry
 * restarted) is registered again under a new id.
 *
 * Replies come from the network: "changes" is validated array by array
 * before the mirror is touched (the fuzz target drives it through
 * aimsi_regsync_apply_once).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../../codec/aimsi_kv.h"
#include "aimsi_regbk.h"

#define REG_SERVICE "aims.registry"
#define MAX_EVENTS 4096u
#define MIRROR_TTL_MS 86400000u /* one day; renewed by every sync */

/* ---- the mirror a joining client keeps -------------------------------------- */

/* One mirrored instance. Identity is the remote id AND the owner record: a
 * restarted registry numbers instances from 1 again, so an id alone could
 * stand for another instance after a restart. */
typedef struct mirror_map {
    int64_t remote;
    aims_instance local;
    char *service;
    char *address;
    int seen; /* snapshot bookkeeping */
} mirror_map;

struct aimsi_regsync {
    aims_client *caller; /* private client used for the sync calls */
    aims_registry *mirror;
    char url[AIMSI_URL_MAX + 1];
    uint64_t period_ms;
    int64_t since, epoch;
    mirror_map *map;
    size_t n_map, cap_map;
    uint64_t last_renew_ns;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    uint64_t syncs_ok, syncs_failed;
    aimsi_reach reach; /* logs and explains an unreachable registry */
};

static mirror_map *map_find(aimsi_regsync *rs, int64_t remote, const char *service,
                            const char *address)
{
    for (size_t i = 0; i < rs->n_map; i++) {
        mirror_map *m = &rs->map[i];
        if (m->remote == remote &&
            (service == NULL || (strcmp(m->service, service) == 0 &&
                                 strcmp(m->address, address) == 0))) {
            return m;
        }
    }
    return NULL;
}

static void map_remove_at(aimsi_regsync *rs, size_t i)
{
    aims_registry_deregister(rs->mirror, rs->map[i].local);
    aimsi_free(rs->map[i].service);
    aimsi_free(rs->map[i].address);
    rs->map[i] = rs->map[--rs->n_map];
}

static void map_clear(aimsi_regsync *rs)
{
    while (rs->n_map > 0) {
        map_remove_at(rs, rs->n_map - 1);
    }
    aimsi_free(rs->map);
    rs->map = NULL;
    rs->cap_map = 0;
}

/* DELETE/EXPIRE of remote id: every mirrored instance under that id goes. */
static void mirror_drop(aimsi_regsync *rs, int64_t remote)
{
    for (size_t i = 0; i < rs->n_map;) {
        if (rs->map[i].remote == remote) {
            map_remove_at(rs, i);
        } else {
            i++;
        }
    }
}

static aims_status mirror_put(aimsi_regsync *rs, int64_t remote, const char *service,
                              const char *address, uint32_t weight)
{
    mirror_map *m = map_find(rs, remote, service, address);
    if (m != NULL) {
        if (aims_registry_weight(rs->mirror, m->local) != weight) {
            aims_registry_set_weight(rs->mirror, m->local, weight);
        }
        m->seen = 1;
        return AIMS_OK;
    }
    if (aimsi_grow((void **)&rs->map, &rs->cap_map, rs->n_map, sizeof(*rs->map), 32) != 0) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "registry mirror: out of memory");
    }
    mirror_map e = {remote, 0, aimsi_strdup(service), aimsi_strdup(address), 1};
    aims_status rc = e.service != NULL && e.address != NULL
                         ? AIMS_OK
                         : aimsi_err(NULL, AIMS_E_NOMEM, "registry mirror: out of memory");
    if (rc == AIMS_OK) {
        rc = aims_registry_register(rs->mirror, service, address, weight, MIRROR_TTL_MS,
                                    &e.local);
    }
    if (rc != AIMS_OK) {
        aimsi_free(e.service);
        aimsi_free(e.address);
        return rc;
    }
    rs->map[rs->n_map++] = e;
    return AIMS_OK;
}

/* Apply one "changes" reply. Validates the arrays before touching the mirror.
 * A snapshot first adds what is new, then drops what it does not list, so a
 * reader of the mirror never sees a service vanish and come back. */
static aims_status mirror_apply(aimsi_regsync *rs, const aims_msg *reply)
{
    int64_t epoch, rev, snap;
    const char *svc, *addr;
    size_t svc_len, addr_len;
    size_t ik, ii, iw;
    if (aimsi_msg_int(reply, "epoch", &epoch) != AIMS_OK ||
        aimsi_msg_int(reply, "revision", &rev) != AIMS_OK ||
        aimsi_msg_int(reply, "snapshot", &snap) != AIMS_OK ||
        aimsi_msg_bytes(reply, "services", &svc, &svc_len) != AIMS_OK ||
        aimsi_msg_bytes(reply, "addresses", &addr, &addr_len) != AIMS_OK ||
        aims_msg_find(reply, "kinds", &ik) != AIMS_OK ||
        aims_msg_find(reply, "ids", &ii) != AIMS_OK ||
        aims_msg_find(reply, "weights", &iw) != AIMS_OK) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "registry reply from %s is malformed", rs->url);
    }
    const void *kinds, *ids, *weights;
    aims_dtype dk, di, dw;
    size_t bk, bi, bw;
    aims_msg_get_tensor(reply, ik, NULL, &dk, NULL, NULL, &kinds, &bk);
    aims_msg_get_tensor(reply, ii, NULL, &di, NULL, NULL, &ids, &bi);
    aims_msg_get_tensor(reply, iw, NULL, &dw, NULL, NULL, &weights, &bw);
    const size_t n = bk / 4;
    if (dk != AIMS_DT_I32 || di != AIMS_DT_I64 || dw != AIMS_DT_I32 || bk != n * 4 ||
        bi != n * 8 || bw != n * 4 || n > MAX_EVENTS || rev < 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "registry reply from %s: event arrays disagree",
                         rs->url);
    }
    for (size_t i = 0; i < rs->n_map; i++) {
        rs->map[i].seen = 0;
    }
    const char *ps = svc, *pa = addr;
    for (size_t k = 0; k < n; k++) {
        int32_t kind, weight;
        int64_t id;
        char s[AIMSI_FRAME_MAX_SERVICE + 1], a[AIMSI_URL_MAX + 1];
        memcpy(&kind, (const char *)kinds + k * 4, 4);
        memcpy(&weight, (const char *)weights + k * 4, 4);
        memcpy(&id, (const char *)ids + k * 8, 8);
        if (!aimsi_kv_field_next(&ps, svc + svc_len, s, sizeof(s)) ||
            !aimsi_kv_field_next(&pa, addr + addr_len, a, sizeof(a))) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "registry reply from %s: event %zu names",
                             rs->url, k);
        }
        if (kind == AIMS_EVENT_PUT || snap) {
            if (weight < 1 || weight > 10000) {
                weight = 1;
            }
            AIMSI_TRY(mirror_put(rs, id, s, a, (uint32_t)weight));
        } else {
            mirror_drop(rs, id);
        }
    }
    if (snap) {
        for (size_t i = 0; i < rs->n_map;) {
            if (rs->map[i].seen) {
                i++;
            } else {
                map_remove_at(rs, i);
            }
        }
    }
    rs->epoch = epoch;
    rs->since = rev;
    return AIMS_OK;
}

/* One poll. Returns the outcome; the mirror is untouched on failure. */
static aims_status regsync_once(aimsi_regsync *rs)
{
    aims_msg req, reply;
    aimsi_msg_init(&req);
    aimsi_msg_init(&reply);
    aims_status rc = aimsi_msg_put_i64(&req, "since", rs->since);
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(&req, "epoch", rs->epoch);
    }
    if (rc == AIMS_OK) {
        const int64_t timeout = (int64_t)(rs->period_ms * 5 > 1000 ? rs->period_ms * 5 : 1000);
        rc = aims_client_call_addr(rs->caller, rs->url, REG_SERVICE, "changes", &req, &reply,
                                   timeout);
        aimsi_reach_record(&rs->reach, rc, aims_client_errmsg(rs->caller));
    }
    if (rc == AIMS_OK) {
        rc = mirror_apply(rs, &reply);
    }
    if (rc == AIMS_OK) {
        const uint64_t now = aimsi_now_ns();
        if (now - rs->last_renew_ns > 3600ull * 1000000000ull) {
            for (size_t i = 0; i < rs->n_map; i++) {
                aims_registry_heartbeat(rs->mirror, rs->map[i].local);
            }
            rs->last_renew_ns = now;
        }
    }
    aimsi_msg_fini(&req);
    aimsi_msg_fini(&reply);
    return rc;
}

static void *regsync_main(void *arg)
{
    aimsi_regsync *rs = arg;
    pthread_mutex_lock(&rs->lock);
    while (!rs->stop) {
        pthread_mutex_unlock(&rs->lock);
        const aims_status rc = regsync_once(rs);
        pthread_mutex_lock(&rs->lock);
        if (rc == AIMS_OK) {
            rs->syncs_ok++;
        } else {
            rs->syncs_failed++;
        }
        pthread_cond_broadcast(&rs->cond);
        if (rs->stop) {
            break;
        }
        const struct timespec ts = aimsi_mono_after_ms(rs->period_ms);
        pthread_cond_timedwait(&rs->cond, &rs->lock, &ts);
    }
    pthread_mutex_unlock(&rs->lock);
    return NULL;
}

aims_status aimsi_regsync_start(const char *url, aims_registry *mirror, uint64_t period_ms,
                                aims_tls_config *tls, aimsi_regsync **out)
{
    aimsi_regsync *rs = aimsi_calloc(1, sizeof(*rs));
    if (rs == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "join: out of memory");
    }
    rs->mirror = mirror;
    rs->period_ms = period_ms;
    rs->last_renew_ns = aimsi_now_ns();
    const aims_status rc = aimsi_regbk_private_client("join", url, tls, rs->url, &rs->caller);
    if (rc != AIMS_OK) {
        aimsi_free(rs);
        return rc;
    }
    aimsi_reach_init(&rs->reach, "client", url);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    const int e1 = pthread_mutex_init(&rs->lock, NULL);
    const int e2 = pthread_cond_init(&rs->cond, &ca);
    pthread_condattr_destroy(&ca);
    /* First sync on the caller's thread: a reachable registry is in the view
     * when join returns; an unreachable one is not an error (static stability:
     * the thread keeps trying). */
    regsync_once(rs);
    int e3 = 0;
    if (e1 == 0 && e2 == 0) {
        e3 = pthread_create(&rs->thread, NULL, regsync_main, rs);
    }
    if (e1 != 0 || e2 != 0 || e3 != 0) {
        if (e1 == 0) {
            pthread_mutex_destroy(&rs->lock);
        }
        if (e2 == 0) {
            pthread_cond_destroy(&rs->cond);
        }
        aims_client_destroy(rs->caller);
        map_clear(rs);
        aimsi_reach_fini(&rs->reach);
        aimsi_free(rs);
        return aimsi_err(NULL, AIMS_E_BACKEND, "join: cannot start the sync thread");
    }
    rs->started = 1;
    *out = rs;
    return AIMS_OK;
}

void aimsi_regsync_stop(aimsi_regsync *rs)
{
    if (rs == NULL) {
        return;
    }
    pthread_mutex_lock(&rs->lock);
    rs->stop = 1;
    pthread_cond_broadcast(&rs->cond);
    pthread_mutex_unlock(&rs->lock);
    if (rs->started) {
        pthread_join(rs->thread, NULL);
    }
    aims_client_destroy(rs->caller);
    pthread_mutex_destroy(&rs->lock);
    pthread_cond_destroy(&rs->cond);
    map_clear(rs);
    aimsi_reach_fini(&rs->reach);
    aimsi_free(rs);
}

uint64_t aimsi_regsync_count(aimsi_regsync *rs, int ok)
{
    pthread_mutex_lock(&rs->lock);
    const uint64_t v = ok ? rs->syncs_ok : rs->syncs_failed;
    pthread_mutex_unlock(&rs->lock);
    return v;
}

aims_status aimsi_regsync_apply_once(aims_registry *mirror, const aims_msg *reply)
{
    aimsi_regsync rs;
    memset(&rs, 0, sizeof(rs));
    strcpy(rs.url, "(fuzz)");
    rs.mirror = mirror;
    const aims_status rc = mirror_apply(&rs, reply);
    map_clear(&rs);
    return rc;
}

/* ---- joining: a client's view, a node's registrations ------------------------ */

/* A node's registrations go to the hosted registry through a private client. */
/* aims://host:port is the registry service over tcp://. */
static void service_url(const char *url, char *out)
{
    if (strncmp(url, "aims://", 7) == 0) {
        snprintf(out, AIMSI_URL_MAX + 1, "tcp://%s", url + 7);
    } else {
        snprintf(out, AIMSI_URL_MAX + 1, "%s", url);
    }
}

static aims_status service_node_open(const char *url, aims_node *n, const aimsi_reg_ops **ops,
                                     void **ctx)
{
    char u[AIMSI_URL_MAX + 1];
    service_url(url, u);
    return aimsi_regjoin_open(n, u, ops, ctx);
}

static aims_status service_view_open(const char *url, aims_registry *view, uint64_t period_ms,
                                     aims_tls_config *tls, void **ctx)
{
    char u[AIMSI_URL_MAX + 1];
    service_url(url, u);
    aimsi_regsync *rs = NULL;
    AIMSI_TRY(aimsi_regsync_start(u, view, period_ms, tls, &rs));
    *ctx = rs;
    return AIMS_OK;
}

static void service_view_close(void *ctx)
{
    aimsi_regsync_stop(ctx);
}

aims_status aimsi_regsvc_publish(aims_client *caller, const char *url, const char *name,
                                 const char *version, const char *owner, const char *meta)
{
    aims_msg req, reply;
    aimsi_msg_init(&req);
    aimsi_msg_init(&reply);
    aims_status rc = aimsi_msg_put_bytes(&req, "name", name, strlen(name));
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_bytes(&req, "version", version, strlen(version));
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_bytes(&req, "owner", owner, strlen(owner));
    }
    if (rc == AIMS_OK && meta[0] != '\0') {
        rc = aimsi_msg_put_bytes(&req, "meta", meta, strlen(meta));
    }
    if (rc == AIMS_OK) {
        /* Not idempotent in its answer (a retry after a lost reply would say
         * "already published by <us>"), so one try: the caller may ask again. */
        rc = aims_client_call_addr(caller, url, REG_SERVICE, "publish", &req, &reply, 5000);
        if (rc != AIMS_OK) {
            /* the registry's own words ("... already published by X") when it answered */
            const char *why = aims_msg_error(&reply);
            rc = aimsi_err(NULL, rc, "%s", why != NULL && why[0] != '\0'
                                               ? why : aims_client_errmsg(caller));
        }
    }
    aimsi_msg_fini(&req);
    aimsi_msg_fini(&reply);
    return rc;
}

static aims_status service_view_publish(void *ctx, const char *name, const char *version,
                                        const char *owner, const char *meta)
{
    aimsi_regsync *rs = ctx;
    return aimsi_regsvc_publish(rs->caller, rs->url, name, version, owner, meta);
}

static size_t service_view_why(void *ctx, char *buf, size_t cap)
{
    return aimsi_reach_describe(&((aimsi_regsync *)ctx)->reach, buf, cap);
}

static const aimsi_regbk k_service_backend = {
    .struct_size = sizeof(aimsi_regbk),
    .version = AIMSI_REGBK_VERSION,
    .scheme = "aims",
    .node_open = service_node_open,
    .view_open = service_view_open,
    .view_close = service_view_close,
    .view_why = service_view_why,
    .view_publish = service_view_publish,
};

const aimsi_regbk *aimsi_regbk_service(void)
{
    return &k_service_backend;
}
