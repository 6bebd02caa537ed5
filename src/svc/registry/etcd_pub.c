/*
 * etcd_pub.c -- exactly-once publication of model versions on etcd
 * (aims_publish.h, docs/PUBLISH.md): the etcd half of the contract that
 * registry_pub.c keeps in one process.
 *
 * Layout: <prefix>pub/<name>/<version> -> {"name","version","owner","meta"}.
 * A version never holds '/', so the last segment is the version even when the
 * name has slashes. The key has no lease: a publication outlives the process
 * that made it.
 *
 * How: one kv/txn --
 *   compare  create_revision(key) == 0       (the key does not exist)
 *   success  put key = record                (we are the publisher)
 *   failure  range key                       (who was first, same round trip)
 * etcd serialises transactions, so of any number of racing writers exactly
 * one sees the compare hold; everybody else reads the winner's record from
 * the same revision it lost at, and reports "name@version already published
 * by OWNER" (AIMS_E_EXISTS), the message every backend gives.
 *
 * A transport failure leaves the outcome unknown (the txn may have been
 * applied before the reply was lost): publishing again tells, since the
 * winner's second try names itself as the owner.
 */
#include <stdio.h>
#include <string.h>

#include "aimsi_etcd.h"
#include "aims/aims_publish.h"
#include "../../orch/aimsi_orch.h"

#define PUB_TIMEOUT_MS 5000L
#define MAX_KEY 512

/* {"key": b64(key)} -- the body of a put/range request on key (NULL on OOM). */
static cJSON *key_obj(const char *key)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL && !cJSON_AddItemToObject(o, "key", aimsi_etcd_b64(key, strlen(key)))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The transaction body (NULL on out-of-memory). */
static cJSON *pub_txn(const char *key, const char *value)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *cmps = cJSON_AddArrayToObject(body, "compare");
    cJSON *succ = cJSON_AddArrayToObject(body, "success");
    cJSON *fail = cJSON_AddArrayToObject(body, "failure");
    cJSON *cmp = key_obj(key), *put = key_obj(key), *get = key_obj(key);
    cJSON *rs = cJSON_CreateObject(), *rf = cJSON_CreateObject();
    int ok = cmps != NULL && succ != NULL && fail != NULL && cmp != NULL && put != NULL &&
             get != NULL && rs != NULL && rf != NULL;
    ok = ok && cJSON_AddStringToObject(cmp, "target", "CREATE") != NULL &&
         cJSON_AddStringToObject(cmp, "result", "EQUAL") != NULL &&
         cJSON_AddItemToObject(cmp, "create_revision", aimsi_etcd_i64_item(0)) &&
         cJSON_AddItemToObject(put, "value", aimsi_etcd_b64(value, strlen(value)));
    if (!ok) {
        cJSON_Delete(cmp);
        cJSON_Delete(put);
        cJSON_Delete(get);
        cJSON_Delete(rs);
        cJSON_Delete(rf);
        cJSON_Delete(body);
        return NULL;
    }
    cJSON_AddItemToArray(cmps, cmp);
    cJSON_AddItemToObject(rs, "request_put", put);
    cJSON_AddItemToArray(succ, rs);
    cJSON_AddItemToObject(rf, "request_range", get);
    cJSON_AddItemToArray(fail, rf);
    return body;
}

/* The owner in the failure branch's range reply, into owner[cap] ("?" when
 * the record is unreadable: another writer's junk must not crash us). */
static void winner_of(const cJSON *reply, char *owner, size_t cap)
{
    snprintf(owner, cap, "?");
    const cJSON *resp = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(reply, "responses"), 0);
    const cJSON *rr = cJSON_GetObjectItemCaseSensitive(resp, "response_range");
    const cJSON *kv = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(rr, "kvs"), 0);
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(kv, "value");
    char buf[AIMS_PUBLISH_MAX_META * 2 + 1024];
    size_t n = 0;
    if (!cJSON_IsString(val) || !aimsi_etcd_unb64(val->valuestring, buf, sizeof(buf), &n)) {
        return;
    }
    cJSON *j = cJSON_ParseWithLength(buf, n);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "owner");
    if (cJSON_IsString(o) && strlen(o->valuestring) < cap) {
        snprintf(owner, cap, "%s", o->valuestring);
    }
    cJSON_Delete(j);
}

aims_status aimsi_etcd_publish(aimsi_etcd *e, const char *name, const char *version,
                               const char *owner, const char *meta)
{
    char key[MAX_KEY];
    const int k = snprintf(key, sizeof(key), "%spub/%s/%s", aimsi_etcd_prefix(e), name, version);
    if (k <= 0 || k >= MAX_KEY) {
        return aimsi_err(NULL, AIMS_E_RANGE, "etcd publish: key for %s@%s is too long", name,
                         version);
    }
    cJSON *rec = cJSON_CreateObject();
    char *text = NULL;
    if (rec != NULL && cJSON_AddStringToObject(rec, "name", name) != NULL &&
        cJSON_AddStringToObject(rec, "version", version) != NULL &&
        cJSON_AddStringToObject(rec, "owner", owner) != NULL &&
        cJSON_AddStringToObject(rec, "meta", meta) != NULL) {
        text = cJSON_PrintUnformatted(rec);
    }
    cJSON_Delete(rec);
    cJSON *body = text != NULL ? pub_txn(key, text) : NULL;
    cJSON_free(text);
    if (body == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd publish: out of memory");
    }
    cJSON *reply = NULL;
    const aims_status rc = aimsi_etcd_call(e, "kv/txn", body, &reply, PUB_TIMEOUT_MS);
    cJSON_Delete(body);
    if (rc != AIMS_OK) {
        return rc;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "succeeded"))) {
        cJSON_Delete(reply);
        return AIMS_OK;
    }
    char winner[AIMS_PUBLISH_MAX_OWNER + 1];
    winner_of(reply, winner, sizeof(winner));
    cJSON_Delete(reply);
    return aimsi_pub_conflict(name, version, winner);
}
