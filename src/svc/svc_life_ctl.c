/*
 * svc_life_ctl.c -- the lifecycle requests of an infer service: load, unload,
 * weight, rollback, deploy and versions (aims_lifecycle.h, docs/LIFECYCLE.md).
 *
 * Each request is validated here (tensors, the model directory for paths)
 * and applied as one transition of the version table under its mutex
 * (aimsi_life_table.h); audit, metrics and logs run after the mutex. Bytes
 * from the wire are hostile: names are length-capped copies without NUL,
 * integers range-checked, paths resolved with realpath and confined to the
 * service's model directory (an escape attempt is "outside" whether or not
 * the target exists, so nothing outside can be probed).
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "../model/aimsi_model.h"
#include "aimsi_life_table.h"
#include "authz/aimsi_authz.h"

/* ---- methods ---------------------------------------------------------------------- */

static const struct {
    const char *method;
    const char *action;
    aims_audit_action audit;
} k_ctl[] = {
    {"load", "load", AIMS_AUDIT_MODEL_LOAD},
    {"unload", "unload", AIMS_AUDIT_MODEL_UNLOAD},
    {"weight", "weight", AIMS_AUDIT_MODEL_WEIGHT},
    {"rollback", "rollback", AIMS_AUDIT_MODEL_ROLLBACK},
    {"deploy", "deploy", AIMS_AUDIT_MODEL_DEPLOY},
};

const char *aimsi_life_action(const char *method, aims_audit_action *audit)
{
    for (size_t i = 0; method != NULL && i < sizeof k_ctl / sizeof k_ctl[0]; i++) {
        if (strcmp(method, k_ctl[i].method) == 0) {
            if (audit != NULL) {
                *audit = k_ctl[i].audit;
            }
            return k_ctl[i].action;
        }
    }
    return NULL;
}

int aimsi_life_is_ctl(const char *m)
{
    return m != NULL && (aimsi_life_action(m, NULL) != NULL || strcmp(m, "versions") == 0);
}

/* A BYTES tensor as a C string; 0 when absent; -1 when present but not text that fits. */
static int req_str(const aims_msg *m, const char *name, char *buf, size_t cap)
{
    const char *p = NULL;
    size_t len = 0;
    size_t idx = 0;
    if (aims_msg_find(m, name, &idx) != AIMS_OK) {
        return 0;
    }
    if (aimsi_msg_bytes(m, name, &p, &len) != AIMS_OK || len == 0 || len >= cap ||
        memchr(p, 0, len) != NULL) {
        return -1;
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
    return 1;
}

static aims_status req_int(const aims_msg *m, const char *name, int64_t dflt, int64_t lo,
                           int64_t hi, int64_t *out, char *why, size_t cap)
{
    size_t idx = 0;
    *out = dflt;
    if (aims_msg_find(m, name, &idx) != AIMS_OK) {
        return AIMS_OK;
    }
    if (aimsi_msg_int(m, name, out) != AIMS_OK || *out < lo || *out > hi) {
        snprintf(why, cap, "\"%s\" must be an integer scalar in %lld..%lld", name, (long long)lo,
                 (long long)hi);
        return AIMS_E_INVAL;
    }
    return AIMS_OK;
}

/* The bundle of a load/deploy: "bundle" bytes or "path" under the model dir. */
static aims_status req_bundle(aimsi_life *lf, const aims_msg *m, aims_bundle **out, char *why,
                              size_t cap)
{
    const char *p = NULL;
    size_t len = 0;
    char path[PATH_CAP];
    const int has_path = req_str(m, "path", path, sizeof path);
    const int has_bytes = aimsi_msg_bytes(m, "bundle", &p, &len) == AIMS_OK && len > 0;
    if (has_path < 0 || (has_path > 0) == has_bytes) {
        snprintf(why, cap, "want exactly one of \"bundle\" (BYTES: a saved bundle) and "
                           "\"path\" (BYTES: a bundle file under the model directory)");
        return AIMS_E_INVAL;
    }
    aims_status rc = AIMS_OK;
    if (has_bytes) {
        rc = aims_bundle_parse(p, len, out);
        if (rc != AIMS_OK) {
            snprintf(why, cap, "the bundle does not load: %s", aims_errmsg());
        }
    } else {
        char dir[PATH_CAP];
        pthread_mutex_lock(&lf->mu);
        memcpy(dir, lf->dir, sizeof dir);
        pthread_mutex_unlock(&lf->mu);
        char joined[2 * PATH_CAP + 2];
        char real[PATH_MAX];
        if (dir[0] == '\0') {
            snprintf(why, cap, "loading by path needs a model directory on the service "
                               "(aims_service_set_model_dir); none is set");
            return AIMS_E_DENIED;
        }
        const size_t dl = strlen(dir);
        snprintf(joined, sizeof joined, "%s%s%s", path[0] == '/' ? "" : dir,
                 path[0] == '/' ? "" : "/", path);
        if (realpath(joined, real) == NULL) {
            /* say "outside" before "missing", so nothing outside can be probed */
            const int up = strstr(path, "..") != NULL;
            const int abs_out = path[0] == '/' && (strncmp(path, dir, dl) != 0 ||
                                                   path[dl] != '/');
            snprintf(why, cap, up || abs_out ? "path \"%.200s\" is outside the model directory"
                                             : "path \"%.200s\": no such bundle file under "
                                               "the model directory", path);
            return up || abs_out ? AIMS_E_DENIED : AIMS_E_NOTFOUND;
        }
        if (strncmp(real, dir, dl) != 0 || real[dl] != '/') {
            snprintf(why, cap, "path \"%.200s\" is outside the model directory %.200s", path,
                     dir);
            return AIMS_E_DENIED;
        }
        rc = aims_bundle_load(real, out);
        if (rc != AIMS_OK) {
            snprintf(why, cap, "%.200s does not load: %.250s", real, aims_errmsg());
        }
    }
    if (rc == AIMS_OK) {
        const aims_model *mdl = aims_bundle_model(*out);
        if (mdl == NULL || !aims_model_is_trained(mdl)) {
            aims_bundle_destroy(*out);
            *out = NULL;
            snprintf(why, cap, "the bundle has no trained model");
            rc = AIMS_E_INVAL;
        }
    }
    return rc;
}

static aims_status do_load(aimsi_life *lf, aimsi_work *w, life_news *nw, char *ver, char *why,
                           size_t cap)
{
    int64_t weight = 0;
    aims_bundle *b = NULL;
    AIMSI_TRY(req_int(w->req, "weight", 0, 0, LIFE_WEIGHT_MAX, &weight, why, cap));
    AIMSI_TRY(req_bundle(lf, w->req, &b, why, cap));
    pthread_mutex_lock(&lf->mu);
    aims_status rc = AIMS_OK;
    if (weight > 0 && lf->canary >= 0) {
        snprintf(why, cap, "a canary is running; load with weight 0 or roll it back first");
        aims_bundle_destroy(b);
        rc = AIMS_E_STATE;
    }
    int idx = -1;
    if (rc == AIMS_OK) {
        rc = aimsi_life_add_locked(lf, ver, LIFE_VER_MAX + 1, b, &idx, why, cap);
    }
    if (rc == AIMS_OK) {
        lf->slot[idx]->weight = (uint32_t)weight;
        aimsi_life_settle_locked(lf);
        aimsi_life_news_set(nw, lf, AIMS_AUDIT_MODEL_LOAD, ver, "loaded with weight %lld",
                            (long long)weight);
    }
    pthread_mutex_unlock(&lf->mu);
    return rc;
}

static aims_status do_unload(aimsi_life *lf, const char *ver, life_news *nw, char *why,
                             size_t cap)
{
    life_slot *drop = NULL;
    aims_status rc = AIMS_OK;
    pthread_mutex_lock(&lf->mu);
    const int i = aimsi_life_find(lf, ver);
    if (i < 0) {
        snprintf(why, cap, "no version %s is loaded", ver);
        rc = AIMS_E_NOTFOUND;
    } else if (i == lf->canary || i == lf->stable || lf->slot[i]->weight > 0) {
        snprintf(why, cap, "version %s still takes traffic (%s); set its weight to 0 first", ver,
                 i == lf->canary ? "running canary" : i == lf->stable ? "the stable version"
                                                                      : "weight above 0");
        rc = AIMS_E_STATE;
    } else {
        drop = aimsi_life_remove_locked(lf, i);
        aimsi_life_news_set(nw, lf, AIMS_AUDIT_MODEL_UNLOAD, ver, "unloaded");
    }
    pthread_mutex_unlock(&lf->mu);
    aimsi_life_slot_free(drop);
    return rc;
}

static aims_status do_weight(aimsi_life *lf, const char *ver, int64_t weight, life_news *nw,
                             char *why, size_t cap)
{
    aims_status rc = AIMS_OK;
    pthread_mutex_lock(&lf->mu);
    const int i = aimsi_life_find(lf, ver);
    if (i < 0) {
        snprintf(why, cap, "no version %s is loaded", ver);
        rc = AIMS_E_NOTFOUND;
    } else if (lf->canary >= 0) {
        snprintf(why, cap, "a canary of version %s is running; roll it back first",
                 lf->slot[lf->canary]->ver);
        rc = AIMS_E_STATE;
    } else if (aimsi_life_total_locked(lf) - lf->slot[i]->weight + (uint64_t)weight == 0) {
        snprintf(why, cap, "weight 0 for %s would leave no version serving", ver);
        rc = AIMS_E_STATE;
    } else {
        lf->slot[i]->weight = (uint32_t)weight;
        for (int k = 0; k < LIFE_MAX; k++) {
            if (lf->slot[k] != NULL) {
                lf->slot[k]->cur = 0;
            }
        }
        if (weight == 0 && i == lf->stable) {
            /* the stable version lost its traffic: the heaviest other one is stable now */
            int best = -1;
            for (int k = 0; k < LIFE_MAX; k++) {
                if (lf->slot[k] != NULL && lf->slot[k]->weight > 0 &&
                    (best < 0 || lf->slot[k]->weight > lf->slot[best]->weight)) {
                    best = k;
                }
            }
            lf->prev = lf->stable;
            lf->stable = best;
        }
        aimsi_life_settle_locked(lf);
        aimsi_life_news_set(nw, lf, AIMS_AUDIT_MODEL_WEIGHT, ver, "weight %lld", (long long)weight);
    }
    pthread_mutex_unlock(&lf->mu);
    return rc;
}

static aims_status do_rollback(aimsi_life *lf, life_news *nw, const char *why_text, char *why,
                               size_t cap)
{
    aims_status rc = AIMS_OK;
    life_slot *drop = NULL;
    pthread_mutex_lock(&lf->mu);
    int split = 0;
    for (int i = 0; i < LIFE_MAX; i++) {
        split |= lf->slot[i] != NULL && i != lf->stable && lf->slot[i]->weight > 0;
    }
    if (lf->canary >= 0) {
        char cver[LIFE_VER_MAX + 1];
        memcpy(cver, lf->slot[lf->canary]->ver, sizeof cver);
        drop = aimsi_life_canary_back_locked(lf);
        aimsi_life_news_set(nw, lf, AIMS_AUDIT_MODEL_ROLLBACK, cver, "canary rolled back to %s: %s",
                 lf->slot[lf->stable]->ver, why_text);
    } else if (split) {
        aimsi_life_only_locked(lf, lf->stable);
        aimsi_life_news_set(nw, lf, AIMS_AUDIT_MODEL_ROLLBACK, lf->slot[lf->stable]->ver,
                 "all traffic back to %s", lf->slot[lf->stable]->ver);
    } else if (lf->prev >= 0 && lf->slot[lf->prev] != NULL) {
        const int to = lf->prev;
        lf->prev = lf->stable;
        lf->stable = to;
        aimsi_life_only_locked(lf, to);
        aimsi_life_news_set(nw, lf, AIMS_AUDIT_MODEL_ROLLBACK, lf->slot[to]->ver,
                            "back to %s from %s", lf->slot[to]->ver, lf->slot[lf->prev]->ver);
    } else {
        snprintf(why, cap, "nothing to roll back to: no previous version is loaded");
        rc = AIMS_E_STATE;
    }
    pthread_mutex_unlock(&lf->mu);
    aimsi_life_slot_free(drop);
    return rc;
}

static aims_status do_versions(aimsi_life *lf, aimsi_work *w)
{
    char table[LIFE_MAX * 160 + 64];
    size_t off = 0;
    char stable[LIFE_VER_MAX + 1] = "", canary[LIFE_VER_MAX + 1] = "";
    aimsi_life_judge(lf, 0); /* a verdict point: a window may have ended without traffic */
    pthread_mutex_lock(&lf->mu);
    for (int i = 0; i < LIFE_MAX; i++) {
        const life_slot *s = lf->slot[i];
        if (s == NULL) {
            continue;
        }
        off += (size_t)snprintf(table + off, sizeof table - off,
                                "%s weight=%u calls=%llu errors=%llu fallbacks=%llu%s%s\n",
                                s->ver, s->weight, (unsigned long long)s->calls,
                                (unsigned long long)s->errors, (unsigned long long)s->fallbacks,
                                i == lf->stable ? " stable" : "", i == lf->canary ? " canary" : "");
    }
    memcpy(stable, lf->slot[lf->stable]->ver, sizeof stable);
    if (lf->canary >= 0) {
        memcpy(canary, lf->slot[lf->canary]->ver, sizeof canary);
    }
    const int64_t cstate = lf->cstate;
    pthread_mutex_unlock(&lf->mu);
    AIMSI_TRY(aimsi_msg_put_bytes(w->reply, "table", table, off));
    AIMSI_TRY(aimsi_msg_put_bytes(w->reply, "stable", stable, strlen(stable)));
    AIMSI_TRY(aimsi_msg_put_bytes(w->reply, "canary_version", canary, strlen(canary)));
    return aimsi_msg_put_i64(w->reply, "canary", cstate);
}

/* One lifecycle request. */
void aimsi_life_ctl_run(aimsi_life *lf, aimsi_work *w)
{
    char why[512] = "";
    char ver[LIFE_VER_MAX + 1] = "";
    life_news nw;
    memset(&nw, 0, sizeof nw);
    aims_status rc = AIMS_OK;
    const char *m = w->method;
    if (strcmp(m, "versions") == 0) {
        rc = do_versions(lf, w);
        w->status = rc == AIMS_OK ? AIMS_OK : aimsi_work_fail(w, rc, "versions: %s", aims_errmsg());
        return;
    }
    const int hv = req_str(w->req, "version", ver, sizeof ver);
    const int need_ver = strcmp(m, "unload") == 0 || strcmp(m, "weight") == 0;
    if (hv < 0 || (need_ver && hv == 0)) {
        rc = AIMS_E_INVAL;
        snprintf(why, sizeof why, "want \"version\" (BYTES, 1..%d bytes)", LIFE_VER_MAX);
    } else if (strcmp(m, "load") == 0) {
        rc = do_load(lf, w, &nw, ver, why, sizeof why);
    } else if (strcmp(m, "unload") == 0) {
        rc = do_unload(lf, ver, &nw, why, sizeof why);
    } else if (strcmp(m, "weight") == 0) {
        int64_t weight = 0;
        rc = req_int(w->req, "weight", -1, 0, LIFE_WEIGHT_MAX, &weight, why, sizeof why);
        if (rc == AIMS_OK && weight < 0) {
            rc = AIMS_E_INVAL;
            snprintf(why, sizeof why, "want \"weight\" (integer scalar 0..%d)", LIFE_WEIGHT_MAX);
        }
        if (rc == AIMS_OK) {
            rc = do_weight(lf, ver, weight, &nw, why, sizeof why);
        }
    } else if (strcmp(m, "rollback") == 0) {
        rc = do_rollback(lf, &nw, "asked", why, sizeof why);
    } else { /* deploy */
        int64_t pct = 0;
        aimsi_canary_rule rule;
        aimsi_canary_rule_default(&rule);
        const char *rt = NULL;
        size_t rl = 0;
        aims_bundle *b = NULL;
        rc = req_int(w->req, "percent", 10, 1, 100, &pct, why, sizeof why);
        const int hid = req_str(w->req, "canary_id", rule.id, sizeof rule.id);
        if (rc == AIMS_OK && (hid < 0 || (hid > 0 && !aimsi_canary_id_ok(rule.id)))) {
            rc = AIMS_E_INVAL;
            snprintf(why, sizeof why, "\"canary_id\": want 1..%d bytes of [A-Za-z0-9]",
                     AIMSI_CANARY_ID_MAX);
        }
        if (rc == AIMS_OK && aimsi_msg_bytes(w->req, "rule", &rt, &rl) == AIMS_OK) {
            rc = aimsi_canary_rule_parse(rt, rl, &rule);
            if (rc != AIMS_OK) {
                snprintf(why, sizeof why, "%s", aims_errmsg());
            }
        }
        if (rc == AIMS_OK) {
            rc = req_bundle(lf, w->req, &b, why, sizeof why);
        }
        if (rc == AIMS_OK) {
            rc = aimsi_life_deploy(lf, ver, sizeof ver, b, pct, &rule, &nw, why, sizeof why);
        }
    }
    if (rc != AIMS_OK) {
        w->status = aimsi_work_fail(w, rc, "%s: %s", m, why);
        if (w->caller == NULL) { /* the door audits network callers */
            aims_audit_action a = 0;
            (void)aimsi_life_action(m, &a);
            aimsi_authz_audit(lf->svc->node, a, "host", "", lf->svc->name, rc, why);
        }
        return;
    }
    if (ver[0] == '\0' && nw.resource[0] != '\0') {
        const char *at = strrchr(nw.resource, '@');
        snprintf(ver, sizeof ver, "%s", at != NULL ? at + 1 : "");
    }
    rc = aimsi_msg_put_bytes(w->reply, "version", ver, strlen(ver));
    w->status = rc == AIMS_OK ? AIMS_OK : aimsi_work_fail(w, rc, "%s: no memory", m);
    aimsi_life_news_emit(lf, &nw, w->caller != NULL ? w->caller : "host", w->caller == NULL);
}

aims_status aimsi_life_publish_canary(const aims_msg *req, int64_t *out_pct)
{
    char why[200];
    const aims_status rc = req_int(req, "publish_canary", 0, 0, 100, out_pct, why, sizeof why);
    return rc == AIMS_OK ? AIMS_OK : aimsi_err(NULL, rc, "submit: %s", why);
}
