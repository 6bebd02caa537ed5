/*
 * svc_registry.c -- the registry as a service, and the two ways to join it.
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
 * A joining client keeps a private local aims_registry as a mirror and a sync
 * thread that polls "changes" every AIMS_CLIENT_SYNC_MS and applies them. When
 * the registry is unreachable the thread just tries again later: the mirror
 * keeps its last view (static stability -- never drop healthy instances
 * because the registry went away). Mirror entries carry a long lease renewed
 * by every successful sync.
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
 * joining side (aims_node_join) keeps the secret of
 * each of its ids in a small table.
 *
 * Every request tensor is from the network: names, lengths and counts are
 * validated before use, and a bad request gets AIMS_E_INVAL with a message,
 * never a crash (the fuzz target for registry messages drives run()).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimsi_svc.h"
#include "authz/aimsi_authz.h"

#define REG_SERVICE "aims.registry"
#define MAX_EVENTS 4096u
#define MIRROR_TTL_MS 86400000u /* one day; renewed by every sync */

/* ---- server side ------------------------------------------------------------ */

static int next_field(const char **p, const char *end, char *buf, size_t cap);

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
    if (n == 0 || n >= cap || memchr(p, 0, n) != NULL || memchr(p, '\n', n) != NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "request tensor '%s': 1..%zu bytes without NUL "
                         "or newline", name, cap - 1);
    }
    memcpy(buf, p, n);
    buf[n] = 0;
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
    aims_msg_get(req, i, NULL, &dt, &ndim, NULL, &data, &bytes);
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
            if (!next_field(&ps, svc + svc_len, sb, sizeof(sb)) ||
                !next_field(&pa, addr + addr_len, ab, sizeof(ab))) {
                return aimsi_err(NULL, AIMS_E_INVAL, "heartbeat: owner record %zu malformed", i);
            }
            ok = same_owner(ri, id, sb, ab);
        }
        char kb[AIMSI_SECRET_HEX + 2];
        if (!admin && !next_field(&pk, sec + sec_len, kb, sizeof(kb))) {
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
    if (rs->n_map == rs->cap_map) {
        const size_t cap = rs->cap_map ? rs->cap_map * 2 : 32;
        mirror_map *g = aimsi_realloc(rs->map, cap * sizeof(*g));
        if (g == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "registry mirror: out of memory");
        }
        rs->map = g;
        rs->cap_map = cap;
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

/* Next '\n'-terminated field of a joined list, copied into buf (NUL-terminated). */
static int next_field(const char **p, const char *end, char *buf, size_t cap)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (nl == NULL || nl == *p || (size_t)(nl - *p) >= cap) {
        return 0;
    }
    memcpy(buf, *p, (size_t)(nl - *p));
    buf[nl - *p] = 0;
    *p = nl + 1;
    return 1;
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
    aims_msg_get(reply, ik, NULL, &dk, NULL, NULL, &kinds, &bk);
    aims_msg_get(reply, ii, NULL, &di, NULL, NULL, &ids, &bi);
    aims_msg_get(reply, iw, NULL, &dw, NULL, NULL, &weights, &bw);
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
        if (!next_field(&ps, svc + svc_len, s, sizeof(s)) ||
            !next_field(&pa, addr + addr_len, a, sizeof(a))) {
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
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        const uint64_t at = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec +
                            rs->period_ms * 1000000u;
        ts.tv_sec = (time_t)(at / 1000000000u);
        ts.tv_nsec = (long)(at % 1000000000u);
        pthread_cond_timedwait(&rs->cond, &rs->lock, &ts);
    }
    pthread_mutex_unlock(&rs->lock);
    return NULL;
}

aims_status aimsi_regsync_start(const char *url, aims_registry *mirror, uint64_t period_ms,
                                aims_tls_config *tls,
                                aimsi_regsync **out)
{
    if (url == NULL || strlen(url) > AIMSI_URL_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "join: registry url must be 1..%u bytes",
                         AIMSI_URL_MAX);
    }
    aimsi_regsync *rs = aimsi_calloc(1, sizeof(*rs));
    if (rs == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "join: out of memory");
    }
    strcpy(rs->url, url);
    rs->mirror = mirror;
    rs->period_ms = period_ms;
    rs->last_renew_ns = aimsi_now_ns();
    aims_status rc = aims_client_create(&rs->caller);
    if (rc == AIMS_OK && tls != NULL) { /* a tls:// registry: the joiner's credentials */
        rc = aims_client_set_tls(rs->caller, tls);
        if (rc != AIMS_OK) {
            aims_client_destroy(rs->caller);
        }
    }
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

static void regsync_stop_cb(void *ctx)
{
    aimsi_regsync_stop(ctx);
}

size_t aimsi_regsync_why(void (*stop)(void *ctx), void *ctx, char *buf, size_t cap)
{
    if (stop != regsync_stop_cb || ctx == NULL) {
        if (cap > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    return aimsi_reach_describe(&((aimsi_regsync *)ctx)->reach, buf, cap);
}

AIMS_API aims_status aims_client_join(aims_client *c, const char *url)
{
    /* Validate before anything starts: regsync_start spawns the sync thread. */
    if (!aimsi_obj_ok(c, AIMSI_MAGIC_CLIENT) || url == NULL) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "aims_client_join: client is %s%s",
                         aimsi_obj_what(c), url == NULL ? ", url is NULL" : "");
    }
    aims_registry *mirror = NULL;
    AIMSI_TRY(aims_registry_create(&mirror));
    aimsi_regsync *rs = NULL;
    const int64_t period = aimsi_client_sync_ms(c);
    aims_status rc = aimsi_regsync_start(url, mirror, (uint64_t)(period > 0 ? period : 200),
                                         aimsi_client_tls(c), &rs);
    if (rc != AIMS_OK) {
        aims_registry_destroy(mirror);
        return rc;
    }
    rc = aimsi_client_adopt_registry(c, mirror, regsync_stop_cb, rs);
    if (rc != AIMS_OK) {
        aimsi_regsync_stop(rs);
        aims_registry_destroy(mirror);
    }
    return rc;
}
