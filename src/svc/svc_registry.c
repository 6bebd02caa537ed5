/*
 * svc_registry.c -- the registry as a service (the server side of the
 * registry-service backend; joining it is registry/regbk_service.c).
 *
 * A node hosts an aims_registry as the service "aims.registry" (methods
 * below). Other processes never share memory with it; they speak frames:
 *
 *   register    service, address (BYTES), weight, ttl_ms -> id, secret
 *   heartbeat   ids (i64 [n]), secrets (BYTES, '\n'-separated, one per id)
 *                                   -> missing (i64 [k]: unknown ids, or ids
 *                                      whose secret does not match; the
 *                                      owner registers those again)
 *   deregister  id, secret
 *   publish     name, version, owner, [meta] (BYTES) -> nothing; exactly one
 *               caller per name@version gets AIMS_OK, the others
 *               AIMS_E_EXISTS "... already published by OWNER" (aims_publish.h)
 *   changes     since, epoch (i64)  -> epoch, revision, snapshot (0/1), and
 *                                      per event: kinds, ids, weights (i32/i64
 *                                      [n]), services, addresses (BYTES,
 *                                      '\n'-separated)
 *
 * "changes" is the etcd pattern: events after `since` from the registry's
 * history (a temporary watch replays them in order). When the caller is too
 * far behind (history compacted), comes from another registry incarnation
 * (epoch differs: the registry process restarted) or is ahead of us, the reply
 * is a snapshot of every live instance instead, taken from a table this file
 * keeps current with a permanent watch.
 *
 * Lease secrets. "register" returns a fresh 128-bit secret (getrandom,
 * aimsi_secret_hex) kept in the live table next to the instance; a lease is
 * renewed or removed over the wire only with it, so a process that merely
 * knows an instance id (ids are small counters) cannot keep a dead instance
 * alive or take a live one out. A heartbeat without secrets is refused
 * (AIMS_E_DENIED); a heartbeat whose secret does not match renews nothing and
 * reports the id missing (a restarted registry may have given that id to
 * somebody else, and the owner should simply register again). Instances the
 * hosting process registered in-process have no secret and cannot be touched
 * over the wire at all -- except by an admin of the node's policy (the door
 * marks such a request "$admin", a name no network request can carry). The
 * joining side (regjoin.c) keeps the secret of each of its ids in a small table.
 *
 * Every request tensor is from the network: names, lengths and counts are
 * validated before use, and a bad request gets AIMS_E_INVAL with a message,
 * never a crash (the fuzz target for registry messages drives run()).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../codec/aimsi_frame.h"
#include "../codec/aimsi_kv.h"
#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_wire.h"
#include "aimsi_svckind.h"
#include "aimsi_regsync.h"
#include "transport/aimsi_transport.h"
#include "authz/aimsi_authz.h"
#include "registry/aimsi_regbk.h"
#include "aims/aims_publish.h"

#define REG_SERVICE "aims.registry"
#define MAX_EVENTS 4096u
#define MIRROR_TTL_MS 86400000u /* one day; renewed by every sync */

/* ---- server side ------------------------------------------------------------ */

typedef struct reg_entry {
    aims_instance id;
    char *service;
    char *address;
    char secret[AIMSI_SECRET_HEX + 1]; /* "" = registered in-process: no wire control */
} reg_entry;

typedef struct reg_impl {
    aims_registry *reg;
    uint64_t watch;
    uint64_t epoch;
    pthread_mutex_t lock;
    reg_entry *live;
    size_t n_live, cap_live;
    aims_status table_rc; /* a failed table update forces snapshots to say so */
} reg_impl;

static void table_drop(reg_impl *ri, aims_instance id)
{
    for (size_t i = 0; i < ri->n_live; i++) {
        if (ri->live[i].id == id) {
            aimsi_free(ri->live[i].service);
            aimsi_free(ri->live[i].address);
            ri->live[i] = ri->live[--ri->n_live];
            return;
        }
    }
}

static void table_put(reg_impl *ri, aims_instance id, const char *service, const char *address)
{
    for (size_t i = 0; i < ri->n_live; i++) {
        if (ri->live[i].id == id) {
            return; /* weight changes only: nothing to keep here */
        }
    }
    if (ri->n_live == ri->cap_live) {
        const size_t cap = ri->cap_live ? ri->cap_live * 2 : 64;
        reg_entry *grown = aimsi_realloc(ri->live, cap * sizeof(*grown));
        if (grown == NULL) {
            ri->table_rc = AIMS_E_NOMEM;
            return;
        }
        ri->live = grown;
        ri->cap_live = cap;
    }
    reg_entry e = {id, aimsi_strdup(service), aimsi_strdup(address), ""};
    if (e.service == NULL || e.address == NULL) {
        aimsi_free(e.service);
        aimsi_free(e.address);
        ri->table_rc = AIMS_E_NOMEM;
        return;
    }
    ri->live[ri->n_live++] = e;
}

static void on_table_event(void *user, uint64_t revision, aims_event_kind kind, aims_instance id,
                           const char *service, const char *address)
{
    reg_impl *ri = user;
    (void)revision;
    pthread_mutex_lock(&ri->lock);
    if (kind == AIMS_EVENT_PUT) {
        table_put(ri, id, service, address);
    } else {
        table_drop(ri, id);
    }
    pthread_mutex_unlock(&ri->lock);
}

/* Events collected for one "changes" reply. */
typedef struct ev_list {
    aimsi_buf services, addresses;
    int32_t *kinds;
    int64_t *ids;
    int32_t *weights;
    size_t n, cap;
    uint64_t last_rev;
    aims_registry *reg;
    aims_status rc;
} ev_list;

static void ev_add(ev_list *ev, aims_event_kind kind, aims_instance id, const char *service,
                   const char *address, uint32_t weight)
{
    if (ev->rc != AIMS_OK) {
        return;
    }
    if (ev->n == MAX_EVENTS) {
        ev->rc = AIMS_E_RANGE; /* the caller falls back to a snapshot */
        return;
    }
    if (ev->n == ev->cap) {
        const size_t cap = ev->cap ? ev->cap * 2 : 32;
        int32_t *k = aimsi_realloc(ev->kinds, cap * sizeof(*k));
        if (k != NULL) {
            ev->kinds = k;
        }
        int64_t *i = aimsi_realloc(ev->ids, cap * sizeof(*i));
        if (i != NULL) {
            ev->ids = i;
        }
        int32_t *w = aimsi_realloc(ev->weights, cap * sizeof(*w));
        if (w != NULL) {
            ev->weights = w;
        }
        if (k == NULL || i == NULL || w == NULL) {
            ev->rc = AIMS_E_NOMEM;
            return;
        }
        ev->cap = cap;
    }
    if (aimsi_buf_append(&ev->services, service, strlen(service)) != AIMS_OK ||
        aimsi_buf_put_u8(&ev->services, '\n') != AIMS_OK ||
        aimsi_buf_append(&ev->addresses, address, strlen(address)) != AIMS_OK ||
        aimsi_buf_put_u8(&ev->addresses, '\n') != AIMS_OK) {
        ev->rc = AIMS_E_NOMEM;
        return;
    }
    ev->kinds[ev->n] = (int32_t)kind;
    ev->ids[ev->n] = (int64_t)id;
    ev->weights[ev->n] = (int32_t)weight;
    ev->n++;
}

static void on_change_event(void *user, uint64_t revision, aims_event_kind kind, aims_instance id,
                            const char *service, const char *address)
{
    ev_list *ev = user;
    const uint32_t w = kind == AIMS_EVENT_PUT ? aims_registry_weight(ev->reg, id) : 0;
    ev_add(ev, kind, id, service, address, w == 0 ? 1 : w);
    if (ev->rc == AIMS_OK) {
        ev->last_rev = revision;
    }
}

static void ev_free(ev_list *ev)
{
    aimsi_buf_free(&ev->services);
    aimsi_buf_free(&ev->addresses);
    aimsi_free(ev->kinds);
    aimsi_free(ev->ids);
    aimsi_free(ev->weights);
}

static aims_status put_events(aims_msg *reply, const ev_list *ev)
{
    const uint64_t dims[1] = {ev->n};
    AIMSI_TRY(aims_msg_add(reply, "kinds", AIMS_DT_I32, dims, 1, ev->kinds, 0));
    AIMSI_TRY(aims_msg_add(reply, "ids", AIMS_DT_I64, dims, 1, ev->ids, 0));
    AIMSI_TRY(aims_msg_add(reply, "weights", AIMS_DT_I32, dims, 1, ev->weights, 0));
    AIMSI_TRY(aimsi_msg_put_bytes(reply, "services", ev->services.data, ev->services.len));
    return aimsi_msg_put_bytes(reply, "addresses", ev->addresses.data, ev->addresses.len);
}

static aims_status snapshot(reg_impl *ri, ev_list *ev, uint64_t *out_rev)
{
    pthread_mutex_lock(&ri->lock);
    /* The revision read under the table lock: the table reflects every event up
     * to it (watch callbacks take this lock), so the caller resumes from here. */
    *out_rev = aims_registry_revision(ri->reg);
    aims_status rc = ri->table_rc;
    for (size_t i = 0; rc == AIMS_OK && i < ri->n_live; i++) {
        const uint32_t w = aims_registry_weight(ri->reg, ri->live[i].id);
        ev_add(ev, AIMS_EVENT_PUT, ri->live[i].id, ri->live[i].service, ri->live[i].address,
               w == 0 ? 1 : w);
        rc = ev->rc;
    }
    pthread_mutex_unlock(&ri->lock);
    return rc == AIMS_OK ? AIMS_OK
                         : aimsi_err(NULL, rc, "registry snapshot failed (%d instances)",
                                     (int)ri->n_live);
}

static aims_status do_changes(reg_impl *ri, const aims_msg *req, aims_msg *reply)
{
    int64_t since = 0, epoch = 0;
    AIMSI_TRY(aimsi_msg_int(req, "since", &since));
    if (aimsi_msg_int(req, "epoch", &epoch) != AIMS_OK) {
        epoch = 0;
    }
    aims_registry_sweep(ri->reg, NULL);
    ev_list ev;
    memset(&ev, 0, sizeof(ev));
    ev.reg = ri->reg;
    ev.last_rev = (uint64_t)since;
    int snap = since < 0 || (uint64_t)epoch != ri->epoch ||
               (uint64_t)since > aims_registry_revision(ri->reg);
    aims_status rc = AIMS_OK;
    if (!snap) {
        uint64_t w = 0;
        rc = aims_registry_watch(ri->reg, NULL, (uint64_t)since, on_change_event, &ev, &w);
        if (rc == AIMS_OK) {
            aims_registry_unwatch(ri->reg, w);
        }
        if (rc == AIMS_E_RANGE || ev.rc == AIMS_E_RANGE) {
            snap = 1; /* compacted or too many: start over from a snapshot */
            rc = AIMS_OK;
        } else if (rc == AIMS_OK && ev.rc != AIMS_OK) {
            rc = aimsi_err(NULL, ev.rc, "registry changes: out of memory");
        }
    }
    uint64_t rev = ev.last_rev;
    if (rc == AIMS_OK && snap) {
        ev_free(&ev);
        memset(&ev, 0, sizeof(ev));
        ev.reg = ri->reg;
        rc = snapshot(ri, &ev, &rev);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(reply, "epoch", (int64_t)ri->epoch);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(reply, "revision", (int64_t)rev);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(reply, "snapshot", snap);
    }
    if (rc == AIMS_OK) {
        rc = put_events(reply, &ev);
    }
    ev_free(&ev);
    return rc;
}

/* Copy a BYTES tensor into a NUL-terminated string of at most cap-1 bytes. */
static aims_status get_str(const aims_msg *req, const char *name, char *buf, size_t cap)
{
    const char *p;
    size_t n;
    AIMSI_TRY(aimsi_msg_bytes(req, name, &p, &n));
    if (!aimsi_kv_field_copy(p, n, buf, cap)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "request tensor '%s': 1..%zu bytes without NUL "
                         "or newline", name, cap - 1);
    }
    return AIMS_OK;
}

static aims_status do_register(reg_impl *ri, const aims_msg *req, aims_msg *reply)
{
    char service[AIMSI_FRAME_MAX_SERVICE + 1], address[AIMSI_URL_MAX + 1];
    int64_t weight, ttl;
    AIMSI_TRY(get_str(req, "service", service, sizeof(service)));
    AIMSI_TRY(get_str(req, "address", address, sizeof(address)));
    AIMSI_TRY(aimsi_msg_int(req, "weight", &weight));
    AIMSI_TRY(aimsi_msg_int(req, "ttl_ms", &ttl));
    if (weight < 1 || weight > 10000 || ttl < 1 || ttl > (int64_t)MIRROR_TTL_MS) {
        return aimsi_err(NULL, AIMS_E_INVAL, "register: weight %lld or ttl_ms %lld out of range",
                         (long long)weight, (long long)ttl);
    }
    char secret[AIMSI_SECRET_HEX + 1];
    AIMSI_TRY(aimsi_secret_hex(secret));
    aims_instance id = 0;
    AIMSI_TRY(aims_registry_register(ri->reg, service, address, (uint32_t)weight, (uint64_t)ttl,
                                     &id));
    /* The PUT event reached the table before register returned. */
    pthread_mutex_lock(&ri->lock);
    for (size_t i = 0; i < ri->n_live; i++) {
        if (ri->live[i].id == id) {
            memcpy(ri->live[i].secret, secret, sizeof(secret));
        }
    }
    pthread_mutex_unlock(&ri->lock);
    aims_status rc = aimsi_msg_put_i64(reply, "id", (int64_t)id);
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_bytes(reply, "secret", secret, AIMSI_SECRET_HEX);
    }
    if (rc != AIMS_OK) {
        aims_registry_deregister(ri->reg, id);
    }
    return rc;
}

/* Does `id` carry the wire secret sec[0..len)? 1 yes, 0 no (wrong secret, or
 * an instance registered in-process), -1 no such live instance. */
static int secret_matches(reg_impl *ri, int64_t id, const char *sec, size_t len)
{
    int r = -1;
    pthread_mutex_lock(&ri->lock);
    for (size_t i = 0; i < ri->n_live; i++) {
        if (ri->live[i].id == (aims_instance)id) {
            r = aimsi_secret_equal(ri->live[i].secret, strlen(ri->live[i].secret), sec, len);
            break;
        }
    }
    pthread_mutex_unlock(&ri->lock);
    return r;
}

static aims_status get_ids(const aims_msg *req, const int64_t **out, size_t *n)
{
    size_t i;
    const void *data;
    aims_dtype dt;
    size_t ndim, bytes;
    if (aims_msg_find(req, "ids", &i) != AIMS_OK) {
        return aimsi_err(NULL, AIMS_E_INVAL, "request tensor 'ids' is missing");
    }
    aims_msg_get_tensor(req, i, NULL, &dt, &ndim, NULL, &data, &bytes);
    if (dt != AIMS_DT_I64 || ndim != 1 || bytes / 8 > MAX_EVENTS) {
        return aimsi_err(NULL, AIMS_E_INVAL, "request tensor 'ids' must be i64 [n <= %u]",
                         MAX_EVENTS);
    }
    *out = data;
    *n = bytes / 8;
    return AIMS_OK;
}

/* Does the live table hold `id` as (service, address)? A restarted registry
 * numbers instances from 1 again, so an id alone could renew somebody else's
 * lease; the owner's record settles it. */
static int same_owner(reg_impl *ri, int64_t id, const char *service, const char *address)
{
    int same = 0;
    pthread_mutex_lock(&ri->lock);
    for (size_t i = 0; i < ri->n_live; i++) {
        if (ri->live[i].id == (aims_instance)id) {
            same = strcmp(ri->live[i].service, service) == 0 &&
                   strcmp(ri->live[i].address, address) == 0;
            break;
        }
    }
    pthread_mutex_unlock(&ri->lock);
    return same;
}

static aims_status do_heartbeat(reg_impl *ri, const aims_msg *req, aims_msg *reply)
{
    const int64_t *ids = NULL;
    size_t n = 0;
    AIMSI_TRY(get_ids(req, &ids, &n));
    /* Optional owner records, '\n'-separated, one per id. */
    const char *svc = NULL, *addr = NULL;
    size_t svc_len = 0, addr_len = 0;
    const int owners = aimsi_msg_bytes(req, "services", &svc, &svc_len) == AIMS_OK &&
                       aimsi_msg_bytes(req, "addresses", &addr, &addr_len) == AIMS_OK;
    const char *sec = NULL;
    size_t sec_len = 0;
    const int admin = aimsi_authz_admin(req); /* the door says: a policy admin */
    if (aimsi_msg_bytes(req, "secrets", &sec, &sec_len) != AIMS_OK && !admin) {
        return aimsi_err(NULL, AIMS_E_DENIED, "heartbeat: tensor 'secrets' is missing: a lease "
                         "is renewed only with the secret its registration returned");
    }
    const char *ps = svc, *pa = addr, *pk = sec;
    int64_t missing[64];
    size_t n_missing = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t id;
        memcpy(&id, &ids[i], sizeof(id)); /* wire data may be unaligned */
        int ok = 1;
        if (owners) {
            char sb[AIMSI_FRAME_MAX_SERVICE + 1], ab[AIMSI_URL_MAX + 1];
            if (!aimsi_kv_field_next(&ps, svc + svc_len, sb, sizeof(sb)) ||
                !aimsi_kv_field_next(&pa, addr + addr_len, ab, sizeof(ab))) {
                return aimsi_err(NULL, AIMS_E_INVAL, "heartbeat: owner record %zu malformed", i);
            }
            ok = same_owner(ri, id, sb, ab);
        }
        char kb[AIMSI_SECRET_HEX + 2];
        if (!admin && !aimsi_kv_field_next(&pk, sec + sec_len, kb, sizeof(kb))) {
            return aimsi_err(NULL, AIMS_E_DENIED, "heartbeat: secret %zu missing or malformed", i);
        }
        if (ok && !admin) {
            ok = secret_matches(ri, id, kb, strlen(kb)) == 1;
        }
        if (ok) {
            ok = aims_registry_heartbeat(ri->reg, (aims_instance)id) == AIMS_OK;
        }
        if (!ok && n_missing < 64) {
            missing[n_missing++] = id;
        }
    }
    const uint64_t dims[1] = {n_missing};
    return aims_msg_add(reply, "missing", AIMS_DT_I64, dims, 1, missing, 0);
}

static aims_status do_deregister(reg_impl *ri, const aims_msg *req)
{
    int64_t id;
    AIMSI_TRY(aimsi_msg_int(req, "id", &id));
    const char *sec = NULL;
    size_t sec_len = 0;
    if (aimsi_msg_bytes(req, "secret", &sec, &sec_len) != AIMS_OK) {
        sec_len = 0;
    }
    if (!aimsi_authz_admin(req) && secret_matches(ri, id, sec, sec_len) == 0) {
        return aimsi_err(NULL, AIMS_E_DENIED, "deregister: instance %lld: wrong or missing "
                         "secret (only the holder of the secret its registration returned may "
                         "remove it)", (long long)id);
    }
    const aims_status rc = aims_registry_deregister(ri->reg, (aims_instance)id);
    return rc == AIMS_E_NOTFOUND ? AIMS_OK : rc; /* already gone is what was asked */
}

/* publish: name, version, owner, optional meta (BYTES) -> nothing; exactly
 * one caller per name@version gets AIMS_OK (aims_registry_publish decides). */
static aims_status do_publish(reg_impl *ri, const aims_msg *req)
{
    char name[AIMSI_FRAME_MAX_SERVICE + 1], version[AIMS_PUBLISH_MAX_VERSION + 1];
    char owner[AIMS_PUBLISH_MAX_OWNER + 1], meta[AIMS_PUBLISH_MAX_META + 1] = "";
    AIMSI_TRY(get_str(req, "name", name, sizeof(name)));
    AIMSI_TRY(get_str(req, "version", version, sizeof(version)));
    AIMSI_TRY(get_str(req, "owner", owner, sizeof(owner)));
    const char *mp = NULL;
    size_t mn = 0;
    if (aimsi_msg_bytes(req, "meta", &mp, &mn) == AIMS_OK) {
        if (mn > AIMS_PUBLISH_MAX_META || memchr(mp, '\0', mn) != NULL) {
            return aimsi_err(NULL, AIMS_E_INVAL, "publish: meta must be at most %d bytes "
                             "without NUL", AIMS_PUBLISH_MAX_META);
        }
        memcpy(meta, mp, mn);
        meta[mn] = '\0';
    }
    return aims_registry_publish(ri->reg, name, version, owner, meta);
}

static void reg_run(void *impl, aimsi_work *const *items, size_t n)
{
    reg_impl *ri = impl;
    for (size_t i = 0; i < n; i++) {
        aimsi_work *w = items[i];
        const char *m = w->method;
        aims_status rc;
        if (strcmp(m, "changes") == 0) {
            rc = do_changes(ri, w->req, w->reply);
        } else if (strcmp(m, "heartbeat") == 0) {
            rc = do_heartbeat(ri, w->req, w->reply);
        } else if (strcmp(m, "register") == 0) {
            rc = do_register(ri, w->req, w->reply);
        } else if (strcmp(m, "deregister") == 0) {
            rc = do_deregister(ri, w->req);
        } else if (strcmp(m, "publish") == 0) {
            rc = do_publish(ri, w->req);
        } else {
            rc = aimsi_err(NULL, AIMS_E_NOTFOUND, "no method '%s' on %s", m, REG_SERVICE);
        }
        if (rc != AIMS_OK) {
            aims_msg_clear(w->reply);
            aims_msg_set_error(w->reply, aims_errmsg());
        }
        w->status = rc;
    }
}

static void reg_destroy(void *impl)
{
    reg_impl *ri = impl;
    if (ri == NULL) {
        return;
    }
    if (ri->watch != 0) {
        aims_registry_unwatch(ri->reg, ri->watch);
    }
    for (size_t i = 0; i < ri->n_live; i++) {
        aimsi_free(ri->live[i].service);
        aimsi_free(ri->live[i].address);
    }
    aimsi_free(ri->live);
    pthread_mutex_destroy(&ri->lock);
    aimsi_free(ri);
}

static const aimsi_svc_kind k_reg_kind = {
    .name = "registry", .batching = 0, .never_inline = 0,
    .run = reg_run, .stop = NULL, .destroy = reg_destroy,
};

aims_status aimsi_regsvc_create(aims_registry *r, void **out_impl)
{
    reg_impl *ri = aimsi_calloc(1, sizeof(*ri));
    if (ri == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "host_registry: out of memory");
    }
    if (pthread_mutex_init(&ri->lock, NULL) != 0) {
        aimsi_free(ri);
        return aimsi_err(NULL, AIMS_E_BACKEND, "host_registry: pthread_mutex_init failed");
    }
    ri->reg = r;
    /* A random-enough epoch: a restarted registry process differs from the last. */
    ri->epoch = (aimsi_realtime_ns() ^ (uint64_t)(uintptr_t)ri) | 1u;
    /* Replay the whole history into the table, then follow it. */
    const aims_status rc = aims_registry_watch(r, NULL, 0, on_table_event, ri, &ri->watch);
    if (rc == AIMS_OK && ri->table_rc != AIMS_OK) {
        reg_destroy(ri);
        return aimsi_err(NULL, AIMS_E_NOMEM, "host_registry: out of memory");
    }
    if (rc != AIMS_OK) {
        ri->watch = 0;
        reg_destroy(ri);
        return rc == AIMS_E_RANGE
                   ? aimsi_err(NULL, AIMS_E_STATE, "host_registry: the registry's history is "
                               "compacted; host it before more than 4096 changes")
                   : rc;
    }
    *out_impl = ri;
    return AIMS_OK;
}

const aimsi_svc_kind *aimsi_regsvc_kind(void)
{
    return &k_reg_kind;
}

AIMS_API aims_status aims_node_host_registry(aims_node *n, aims_registry *r)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || !aimsi_obj_ok(r, AIMSI_MAGIC_REGISTRY)) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "aims_node_host_registry: node is %s, registry is %s",
                         aimsi_obj_what(n), aimsi_obj_what(r));
    }
    void *impl = NULL;
    AIMSI_TRY(aimsi_regsvc_create(r, &impl));
    aims_service *s = NULL;
    AIMSI_TRY(aimsi_service_add(n, REG_SERVICE, &k_reg_kind, impl, &s));
    AIMSI_TRY(aims_node_set_registry(n, r));
    return aims_service_start(s);
}
