/*
 * etcd.c -- the etcd registry backend: etcd://host:port[,host:port...]/prefix.
 *
 * Layout in etcd (every key under the URL's prefix, "/aims/" by default):
 *
 *   <prefix>svc/<service>/<lease id, hex>  ->  {"service": s, "address": a,
 *                                               "weight": w}
 *
 * Node side. Each registration grants a lease whose TTL is the registry lease
 * (aims_node's 3 heartbeats, rounded up to whole seconds; etcd raises tiny
 * TTLs to its own minimum) and puts the key bound to it, so the instance
 * disappears by itself when the node stops renewing. A heartbeat is one
 * lease keep-alive; a keep-alive that comes back without a TTL means etcd
 * forgot the lease (it expired while the node was paused or partitioned):
 * the instance is registered again under a fresh lease. A weight change
 * rewrites the key under the same lease in a transaction that compares its
 * mod revision with the one of our last write (see lease_rec). Deregister revokes the lease, which
 * deletes the key.
 *
 * Client side (the view). A sync thread lists the prefix (range), applies it
 * to the view as a snapshot (add what is new first, then drop what is gone,
 * so a name never blinks out), then watches from the list's revision + 1 and
 * applies events in revision order. When the watch breaks (etcd stopped, a
 * member died) the thread resumes the watch from the last applied revision + 1
 * on the next endpoint; when etcd says that revision is compacted
 * (compact_revision), it lists again. While no endpoint answers the view
 * keeps its last state (static stability). View entries carry a long lease of
 * their own, renewed by every list.
 *
 * Reachability. Node and view sessions each keep an aimsi_reach (reach.c):
 * the first failed call logs an ERROR with the URL and etcd's answer (or the
 * connection error), recovery an INFO, and a client's "no live instance"
 * says since when etcd is unreachable and why (view_why).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimsi_etcd.h"
#include "../aimsi_reach.h" /* aimsi_reach: an unreachable etcd is logged once, with the cause */

#define CALL_TIMEOUT_MS 2000L
#define VIEW_TTL_MS 86400000u /* one day; renewed by every list */
#define MAX_KEY 512

static int etcd_available(const char **why)
{
    (void)why;
    return 1;
}

/* The key of one instance. */
static int instance_key(const aimsi_etcd *e, const char *service, uint64_t lease, char *key)
{
    const int k = snprintf(key, MAX_KEY, "%ssvc/%s/%016llx", aimsi_etcd_prefix(e), service,
                           (unsigned long long)lease);
    return k > 0 && k < MAX_KEY;
}

/* ---- node side ------------------------------------------------------------------- */

/* The last weight written for each lease and the key's mod revision after
 * that write, so a heartbeat with a changed weight rewrites the key -- in a
 * transaction that compares the mod revision, so a writer that changed the
 * key meanwhile (an operator's override) is never silently overwritten and
 * of two writers from the same revision exactly one wins. Small: one entry
 * per service of this node. */
typedef struct lease_rec {
    uint64_t lease;
    uint32_t weight;
    int64_t rev;
} lease_rec;

typedef struct etcd_node {
    aimsi_etcd *e;
    aimsi_reach reach;
    pthread_mutex_t lock; /* guards recs */
    lease_rec *recs;
    size_t n_recs, cap_recs;
} etcd_node;

static void rec_set(etcd_node *en, uint64_t lease, uint32_t weight, int64_t rev)
{
    pthread_mutex_lock(&en->lock);
    for (size_t i = 0; i < en->n_recs; i++) {
        if (en->recs[i].lease == lease) {
            en->recs[i].weight = weight;
            en->recs[i].rev = rev;
            pthread_mutex_unlock(&en->lock);
            return;
        }
    }
    if (en->n_recs == en->cap_recs) {
        const size_t cap = en->cap_recs ? en->cap_recs * 2 : 8;
        lease_rec *g = aimsi_realloc(en->recs, cap * sizeof(*g));
        if (g == NULL) {
            pthread_mutex_unlock(&en->lock);
            return; /* only costs a re-put on the next beat */
        }
        en->recs = g;
        en->cap_recs = cap;
    }
    en->recs[en->n_recs++] = (lease_rec){lease, weight, rev};
    pthread_mutex_unlock(&en->lock);
}

/* The weight last put for lease, or 0 when unknown (and its mod revision
 * into *rev when rev is not NULL). Removes it when drop. */
static uint32_t rec_get(etcd_node *en, uint64_t lease, int drop, int64_t *rev)
{
    uint32_t w = 0;
    pthread_mutex_lock(&en->lock);
    for (size_t i = 0; i < en->n_recs; i++) {
        if (en->recs[i].lease == lease) {
            w = en->recs[i].weight;
            if (rev != NULL) {
                *rev = en->recs[i].rev;
            }
            if (drop) {
                en->recs[i] = en->recs[--en->n_recs];
            }
            break;
        }
    }
    pthread_mutex_unlock(&en->lock);
    return w;
}

static aims_status call_simple(aimsi_etcd *e, const char *path, cJSON *body, cJSON **out)
{
    if (body == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd: out of memory");
    }
    cJSON *reply = NULL;
    const aims_status rc = aimsi_etcd_call(e, path, body, &reply, CALL_TIMEOUT_MS);
    cJSON_Delete(body);
    if (rc == AIMS_OK && out != NULL) {
        *out = reply;
    } else {
        cJSON_Delete(reply);
    }
    return rc;
}

static cJSON *lease_body(uint64_t lease)
{
    cJSON *b = cJSON_CreateObject();
    if (b != NULL && !cJSON_AddItemToObject(b, "ID", aimsi_etcd_i64_item((int64_t)lease))) {
        cJSON_Delete(b);
        return NULL;
    }
    return b;
}

static aims_status put_instance(etcd_node *en, const char *service, const char *address,
                                uint32_t weight, uint64_t lease, int64_t expect_rev)
{
    char key[MAX_KEY];
    if (!instance_key(en->e, service, lease, key)) {
        return aimsi_err(NULL, AIMS_E_RANGE, "etcd: key for service '%s' is too long", service);
    }
    cJSON *val = cJSON_CreateObject();
    char *text = NULL;
    if (val != NULL && cJSON_AddStringToObject(val, "service", service) != NULL &&
        cJSON_AddStringToObject(val, "address", address) != NULL &&
        cJSON_AddNumberToObject(val, "weight", weight) != NULL) {
        text = cJSON_PrintUnformatted(val);
    }
    cJSON_Delete(val);
    /* txn: if (expect_rev == 0 ? key absent : key's mod_revision == expect_rev)
     * then put key=value with the lease. */
    cJSON *body = text != NULL ? cJSON_CreateObject() : NULL;
    cJSON *cmp = cJSON_CreateObject(), *put = cJSON_CreateObject();
    cJSON *cmps = cJSON_AddArrayToObject(body, "compare");
    cJSON *succ = cJSON_AddArrayToObject(body, "success");
    cJSON *req = cJSON_CreateObject();
    int ok = body != NULL && cmp != NULL && put != NULL && cmps != NULL && succ != NULL &&
             req != NULL;
    ok = ok && cJSON_AddItemToObject(cmp, "key", aimsi_etcd_b64(key, strlen(key))) &&
         cJSON_AddStringToObject(cmp, "target", expect_rev > 0 ? "MOD" : "CREATE") != NULL &&
         cJSON_AddStringToObject(cmp, "result", "EQUAL") != NULL &&
         cJSON_AddItemToObject(cmp, expect_rev > 0 ? "mod_revision" : "create_revision",
                               aimsi_etcd_i64_item(expect_rev)) &&
         cJSON_AddItemToObject(put, "key", aimsi_etcd_b64(key, strlen(key))) &&
         cJSON_AddItemToObject(put, "value", aimsi_etcd_b64(text, strlen(text))) &&
         cJSON_AddItemToObject(put, "lease", aimsi_etcd_i64_item((int64_t)lease));
    if (ok) {
        cJSON_AddItemToArray(cmps, cmp);
        cJSON_AddItemToObject(req, "request_put", put);
        cJSON_AddItemToArray(succ, req);
    } else {
        cJSON_Delete(cmp);
        cJSON_Delete(put);
        cJSON_Delete(req);
        cJSON_Delete(body);
        body = NULL;
    }
    cJSON_free(text);
    cJSON *reply = NULL;
    aims_status rc = call_simple(en->e, "kv/txn", body, &reply);
    if (rc != AIMS_OK) {
        return rc;
    }
    const int64_t rev =
        aimsi_etcd_i64(cJSON_GetObjectItemCaseSensitive(reply, "header"), "revision", 0);
    const int won = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "succeeded"));
    cJSON_Delete(reply);
    if (won) {
        rec_set(en, lease, weight, rev);
        return AIMS_OK;
    }
    /* Another writer changed the key since our last write: its value stands.
     * Take its revision as the new base (a later change of ours wins again)
     * and remember the weight asked for, so the next beat does not retry. */
    int64_t cur = 0;
    cJSON *q = cJSON_CreateObject();
    if (q != NULL && !cJSON_AddItemToObject(q, "key", aimsi_etcd_b64(key, strlen(key)))) {
        cJSON_Delete(q);
        q = NULL;
    }
    if (call_simple(en->e, "kv/range", q, &reply) == AIMS_OK) {
        const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(reply, "kvs");
        cur = aimsi_etcd_i64(cJSON_GetArrayItem(kvs, 0), "mod_revision", 0);
        cJSON_Delete(reply);
    }
    rec_set(en, lease, weight, cur);
    return aimsi_err(NULL, AIMS_E_EXISTS, "etcd: %s was changed by another writer since "
                     "revision %lld; weight %u not written", key, (long long)expect_rev,
                     weight);
}

static aims_status etcd_reg(void *ctx, const char *service, const char *address,
                            uint32_t weight, uint64_t ttl_ms, uint64_t *out_id)
{
    etcd_node *en = ctx;
    cJSON *body = cJSON_CreateObject();
    const int64_t ttl_s = (int64_t)((ttl_ms + 999) / 1000);
    if (body != NULL && !cJSON_AddItemToObject(body, "TTL", aimsi_etcd_i64_item(ttl_s))) {
        cJSON_Delete(body);
        body = NULL;
    }
    cJSON *reply = NULL;
    AIMSI_TRY(call_simple(en->e, "lease/grant", body, &reply));
    const int64_t lease = aimsi_etcd_i64(reply, "ID", 0);
    cJSON_Delete(reply);
    if (lease <= 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "etcd lease/grant returned no lease id");
    }
    const aims_status rc = put_instance(en, service, address, weight, (uint64_t)lease, 0);
    if (rc != AIMS_OK) {
        (void)call_simple(en->e, "lease/revoke", lease_body((uint64_t)lease), NULL);
        return rc;
    }
    *out_id = (uint64_t)lease;
    return AIMS_OK;
}

static aims_status etcd_heartbeat(void *ctx, const char *service, const char *address,
                                  uint32_t weight, uint64_t ttl_ms, uint64_t *io_id)
{
    etcd_node *en = ctx;
    cJSON *reply = NULL;
    AIMSI_TRY(call_simple(en->e, "lease/keepalive", lease_body(*io_id), &reply));
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(reply, "result");
    const int64_t ttl = aimsi_etcd_i64(res, "TTL", 0);
    cJSON_Delete(reply);
    if (ttl <= 0) {
        /* etcd forgot the lease (expired): the key went with it. */
        (void)rec_get(en, *io_id, 1, NULL);
        return etcd_reg(ctx, service, address, weight, ttl_ms, io_id);
    }
    int64_t rev = 0;
    if (rec_get(en, *io_id, 0, &rev) != weight) {
        return put_instance(en, service, address, weight, *io_id, rev);
    }
    return AIMS_OK;
}

static aims_status etcd_dereg(void *ctx, uint64_t id)
{
    etcd_node *en = ctx;
    (void)rec_get(en, id, 1, NULL);
    const aims_status rc = call_simple(en->e, "lease/revoke", lease_body(id), NULL);
    return rc == AIMS_E_NOTFOUND ? AIMS_OK : rc; /* already expired: gone anyway */
}

/* The node's calls, each outcome recorded for the reachability log. */
static aims_status noted(void *ctx, aims_status rc)
{
    etcd_node *en = ctx;
    aimsi_reach_record(&en->reach, rc, aims_errmsg());
    return rc;
}

static aims_status node_reg(void *ctx, const char *service, const char *address,
                            uint32_t weight, uint64_t ttl_ms, uint64_t *out_id)
{
    return noted(ctx, etcd_reg(ctx, service, address, weight, ttl_ms, out_id));
}

static aims_status node_heartbeat(void *ctx, const char *service, const char *address,
                                  uint32_t weight, uint64_t ttl_ms, uint64_t *io_id)
{
    return noted(ctx, etcd_heartbeat(ctx, service, address, weight, ttl_ms, io_id));
}

static void etcd_release(void *ctx)
{
    etcd_node *en = ctx;
    if (en != NULL) {
        aimsi_reach_fini(&en->reach);
        aimsi_etcd_destroy(en->e);
        pthread_mutex_destroy(&en->lock);
        aimsi_free(en->recs);
        aimsi_free(en);
    }
}

static aims_status node_publish(void *ctx, const char *name, const char *version,
                                const char *owner, const char *meta)
{
    return aimsi_etcd_publish(((etcd_node *)ctx)->e, name, version, owner, meta);
}

static const aimsi_reg_ops k_etcd_ops = {
    .reg = node_reg, .heartbeat = node_heartbeat, .dereg = etcd_dereg,
    .release = etcd_release, .publish = node_publish,
};

static aims_status etcd_node_open(const char *url, aims_node *n, const aimsi_reg_ops **ops,
                                  void **ctx)
{
    (void)n; /* etcd sessions carry no node credentials (yet) */
    etcd_node *en = aimsi_calloc(1, sizeof(*en));
    if (en == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd: out of memory");
    }
    if (pthread_mutex_init(&en->lock, NULL) != 0) {
        aimsi_free(en);
        return aimsi_err(NULL, AIMS_E_BACKEND, "etcd: pthread_mutex_init failed");
    }
    aimsi_reach_init(&en->reach, "node join", url);
    const aims_status rc = aimsi_etcd_create(url, &en->e);
    if (rc != AIMS_OK) {
        aimsi_reach_fini(&en->reach);
        pthread_mutex_destroy(&en->lock);
        aimsi_free(en);
        return rc;
    }
    *ops = &k_etcd_ops;
    *ctx = en;
    return AIMS_OK;
}

/* ---- client side: the view -------------------------------------------------------- */

typedef struct view_entry {
    char *key;
    aims_instance local;
    char *service, *address;
    int seen; /* snapshot bookkeeping */
} view_entry;

typedef struct etcd_view {
    aimsi_etcd *e;
    aims_registry *view;
    uint64_t period_ms;
    int64_t rev;    /* last revision applied (0: list first) */
    int need_list;
    view_entry *ents;
    size_t n_ents, cap_ents;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    _Atomic int stop;
    aimsi_reach reach;
} etcd_view;

static view_entry *view_find(etcd_view *v, const char *key)
{
    for (size_t i = 0; i < v->n_ents; i++) {
        if (strcmp(v->ents[i].key, key) == 0) {
            return &v->ents[i];
        }
    }
    return NULL;
}

static void view_remove_at(etcd_view *v, size_t i)
{
    aims_registry_deregister(v->view, v->ents[i].local);
    aimsi_free(v->ents[i].key);
    aimsi_free(v->ents[i].service);
    aimsi_free(v->ents[i].address);
    v->ents[i] = v->ents[--v->n_ents];
}

static void view_drop(etcd_view *v, const char *key)
{
    view_entry *x = view_find(v, key);
    if (x != NULL) {
        view_remove_at(v, (size_t)(x - v->ents));
    }
}

/* PUT of key with its JSON value (base64 from etcd). Unparseable values are
 * skipped: another writer's junk under our prefix must not stop the view. */
static aims_status view_put(etcd_view *v, const char *key, const char *value_b64)
{
    char buf[4096];
    size_t n = 0;
    if (value_b64 == NULL || !aimsi_etcd_unb64(value_b64, buf, sizeof(buf), &n)) {
        return AIMS_OK;
    }
    cJSON *j = cJSON_ParseWithLength(buf, n);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "service");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "address");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "weight");
    if (!cJSON_IsString(s) || !cJSON_IsString(a) || s->valuestring[0] == 0 ||
        a->valuestring[0] == 0 || strlen(s->valuestring) > AIMSI_FRAME_MAX_SERVICE ||
        strlen(a->valuestring) > AIMSI_URL_MAX) {
        cJSON_Delete(j);
        return AIMS_OK;
    }
    const double wd = cJSON_IsNumber(w) ? w->valuedouble : 1.0;
    const uint32_t weight = wd >= 1.0 && wd <= 10000.0 ? (uint32_t)wd : 1u;
    view_entry *x = view_find(v, key);
    aims_status rc = AIMS_OK;
    if (x != NULL && strcmp(x->service, s->valuestring) == 0 &&
        strcmp(x->address, a->valuestring) == 0) {
        if (aims_registry_weight(v->view, x->local) != weight) {
            aims_registry_set_weight(v->view, x->local, weight);
        }
        x->seen = 1;
        cJSON_Delete(j);
        return AIMS_OK;
    }
    if (x != NULL) {
        view_remove_at(v, (size_t)(x - v->ents));
    }
    if (v->n_ents == v->cap_ents) {
        const size_t cap = v->cap_ents ? v->cap_ents * 2 : 32;
        view_entry *g = aimsi_realloc(v->ents, cap * sizeof(*g));
        if (g == NULL) {
            cJSON_Delete(j);
            return aimsi_err(NULL, AIMS_E_NOMEM, "etcd view: out of memory");
        }
        v->ents = g;
        v->cap_ents = cap;
    }
    view_entry e = {aimsi_strdup(key), 0, aimsi_strdup(s->valuestring),
                    aimsi_strdup(a->valuestring), 1};
    if (e.key == NULL || e.service == NULL || e.address == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "etcd view: out of memory");
    } else {
        rc = aims_registry_register(v->view, e.service, e.address, weight, VIEW_TTL_MS,
                                    &e.local);
    }
    cJSON_Delete(j);
    if (rc != AIMS_OK) {
        aimsi_free(e.key);
        aimsi_free(e.service);
        aimsi_free(e.address);
        return rc;
    }
    v->ents[v->n_ents++] = e;
    return AIMS_OK;
}

/* The decoded key of a kv object, or 0. */
static int kv_key(const cJSON *kv, char *key)
{
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(kv, "key");
    size_t n = 0;
    return cJSON_IsString(k) && aimsi_etcd_unb64(k->valuestring, key, MAX_KEY, &n) &&
           strlen(key) == n;
}

/* "<prefix>svc/" and its range end (the prefix with its last byte + 1). */
static void range_of(const etcd_view *v, char *key, char *end)
{
    snprintf(key, MAX_KEY, "%ssvc/", aimsi_etcd_prefix(v->e));
    strcpy(end, key);
    end[strlen(end) - 1]++;
}

/* List the prefix and apply it as a snapshot. */
static aims_status view_list(etcd_view *v)
{
    char key[MAX_KEY], end[MAX_KEY];
    range_of(v, key, end);
    cJSON *body = cJSON_CreateObject();
    if (body != NULL && (!cJSON_AddItemToObject(body, "key", aimsi_etcd_b64(key, strlen(key))) ||
                         !cJSON_AddItemToObject(body, "range_end",
                                                aimsi_etcd_b64(end, strlen(end))))) {
        cJSON_Delete(body);
        body = NULL;
    }
    cJSON *reply = NULL;
    AIMSI_TRY(call_simple(v->e, "kv/range", body, &reply));
    const int64_t rev = aimsi_etcd_i64(cJSON_GetObjectItemCaseSensitive(reply, "header"),
                                       "revision", -1);
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(reply, "kvs");
    if (rev < 0 || (kvs != NULL && !cJSON_IsArray(kvs))) {
        cJSON_Delete(reply);
        return aimsi_err(NULL, AIMS_E_CORRUPT, "etcd kv/range: reply without revision/kvs");
    }
    for (size_t i = 0; i < v->n_ents; i++) {
        v->ents[i].seen = 0;
    }
    aims_status rc = AIMS_OK;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, kvs)
    {
        char k[MAX_KEY];
        if (kv_key(kv, k)) {
            const cJSON *val = cJSON_GetObjectItemCaseSensitive(kv, "value");
            rc = view_put(v, k, cJSON_IsString(val) ? val->valuestring : NULL);
            if (rc != AIMS_OK) {
                break;
            }
        }
    }
    cJSON_Delete(reply);
    if (rc != AIMS_OK) {
        return rc; /* keep every old entry: the next list tries again */
    }
    for (size_t i = 0; i < v->n_ents;) {
        if (v->ents[i].seen) {
            aims_registry_heartbeat(v->view, v->ents[i].local);
            i++;
        } else {
            view_remove_at(v, i);
        }
    }
    v->rev = rev;
    v->need_list = 0;
    return AIMS_OK;
}

/* One watch result: events in revision order, or the end of the watch. */
static int on_watch_result(void *user, const cJSON *res)
{
    etcd_view *v = user;
    aimsi_reach_record(&v->reach, AIMS_OK, NULL); /* etcd answers again */
    if (aimsi_etcd_i64(res, "compact_revision", 0) > 0) {
        v->need_list = 1; /* our revision is gone: list again */
        return 1;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "canceled"))) {
        v->need_list = 1;
        return 1;
    }
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(res, "events");
    const cJSON *ev;
    cJSON_ArrayForEach(ev, evs)
    {
        const cJSON *kv = cJSON_GetObjectItemCaseSensitive(ev, "kv");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
        char k[MAX_KEY];
        if (!kv_key(kv, k)) {
            continue;
        }
        const int64_t mod = aimsi_etcd_i64(kv, "mod_revision", 0);
        if (mod <= v->rev) {
            continue; /* already applied (a resumed watch may repeat) */
        }
        if (cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0) {
            view_drop(v, k);
        } else {
            const cJSON *val = cJSON_GetObjectItemCaseSensitive(kv, "value");
            if (view_put(v, k, cJSON_IsString(val) ? val->valuestring : NULL) != AIMS_OK) {
                v->need_list = 1; /* out of memory: converge through a list */
                return 1;
            }
        }
        v->rev = mod;
    }
    return 0;
}

/* Sleep up to ms unless stopped; returns v->stop. */
static int view_nap(etcd_view *v, uint64_t ms)
{
    pthread_mutex_lock(&v->lock);
    if (!v->stop) {
        const struct timespec ts = aimsi_mono_after_ms(ms);
        pthread_cond_timedwait(&v->cond, &v->lock, &ts);
    }
    const int stop = v->stop;
    pthread_mutex_unlock(&v->lock);
    return stop;
}

static void *view_main(void *arg)
{
    etcd_view *v = arg;
    while (!v->stop) {
        if (v->need_list) {
            const aims_status lrc = view_list(v);
            aimsi_reach_record(&v->reach, lrc, aims_errmsg());
            if (lrc != AIMS_OK) {
                view_nap(v, v->period_ms);
                continue;
            }
        }
        char key[MAX_KEY], end[MAX_KEY];
        range_of(v, key, end);
        const aims_status rc =
            aimsi_etcd_watch(v->e, key, end, v->rev + 1, on_watch_result, v, &v->stop);
        if (rc != AIMS_OK) {
            /* etcd unreachable: keep the view, resume from v->rev + 1 later. */
            aimsi_reach_record(&v->reach, rc, aims_errmsg());
            view_nap(v, v->period_ms);
        }
    }
    return NULL;
}

static void view_free(etcd_view *v)
{
    while (v->n_ents > 0) {
        view_remove_at(v, v->n_ents - 1);
    }
    aimsi_free(v->ents);
    aimsi_reach_fini(&v->reach);
    aimsi_etcd_destroy(v->e);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->cond);
    aimsi_free(v);
}

static aims_status etcd_view_open(const char *url, aims_registry *view, uint64_t period_ms,
                                  aims_tls_config *tls, void **ctx)
{
    (void)tls; /* TLS to etcd (https endpoints) is not built yet: docs/ETCD.md */
    etcd_view *v = aimsi_calloc(1, sizeof(*v));
    if (v == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd: out of memory");
    }
    v->view = view;
    v->period_ms = period_ms;
    v->need_list = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    const int e1 = pthread_mutex_init(&v->lock, NULL);
    const int e2 = pthread_cond_init(&v->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (e1 != 0 || e2 != 0) {
        if (e1 == 0) {
            pthread_mutex_destroy(&v->lock);
        }
        if (e2 == 0) {
            pthread_cond_destroy(&v->cond);
        }
        aimsi_free(v);
        return aimsi_err(NULL, AIMS_E_BACKEND, "etcd: cannot make the view's lock");
    }
    aimsi_reach_init(&v->reach, "client", url);
    aims_status rc = aimsi_etcd_create(url, &v->e);
    if (rc != AIMS_OK) {
        v->e = NULL;
        view_free(v);
        return rc;
    }
    /* First list on the caller's thread: a reachable etcd is in the view when
     * join returns; an unreachable one is not an error (the thread retries). */
    const aims_status first = view_list(v);
    aimsi_reach_record(&v->reach, first, aims_errmsg());
    if (pthread_create(&v->thread, NULL, view_main, v) != 0) {
        view_free(v);
        return aimsi_err(NULL, AIMS_E_BACKEND, "etcd: cannot start the view's thread");
    }
    v->started = 1;
    *ctx = v;
    return AIMS_OK;
}

static void etcd_view_close(void *ctx)
{
    etcd_view *v = ctx;
    if (v == NULL) {
        return;
    }
    pthread_mutex_lock(&v->lock);
    v->stop = 1;
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
    if (v->started) {
        pthread_join(v->thread, NULL);
    }
    view_free(v);
}

static size_t etcd_view_why(void *ctx, char *buf, size_t cap)
{
    return aimsi_reach_describe(&((etcd_view *)ctx)->reach, buf, cap);
}

static aims_status etcd_view_publish(void *ctx, const char *name, const char *version,
                                     const char *owner, const char *meta)
{
    return aimsi_etcd_publish(((etcd_view *)ctx)->e, name, version, owner, meta);
}

static const aimsi_regbk k_etcd_backend = {
    .struct_size = sizeof(aimsi_regbk),
    .version = AIMSI_REGBK_VERSION,
    .scheme = "etcd",
    .node_open = etcd_node_open,
    .view_open = etcd_view_open,
    .view_close = etcd_view_close,
    .available = etcd_available,
    .view_why = etcd_view_why,
    .view_publish = etcd_view_publish,
};

const aimsi_regbk *aimsi_regbk_etcd(void)
{
    return &k_etcd_backend;
}
