/*
 * svc_life.c -- the remote model lifecycle of an infer service: a table of
 * model versions inside the service, its state transitions, the traffic
 * split between versions and the canary's decisions (aims_lifecycle.h has
 * the contract, docs/LIFECYCLE.md the reasoning; the requests load / unload /
 * weight / rollback / deploy / versions are parsed in svc_life_ctl.c).
 *
 * Why versions live inside the service. A client sends the name it called;
 * the node resolves that name to one service. If each version were its own
 * service ("name@2" beside "name@1"), calls to "name" would still reach one
 * of them by the node's lookup, and weights would depend on the caller's
 * balancing policy (P2C reads a weight only as a tie-breaker). Inside the
 * service the split is exact (smooth weighted round robin, as nginx), the
 * same on every transport, and -- what makes a canary safe -- a try that
 * failed on a new version can be served again by the stable version in the
 * same batch, so the caller never sees the canary's failure.
 *
 * How. Every version is a plain infer impl (svc_infer.c) over its own bundle:
 * the service's own impl serves the first version ("base"), and each loaded
 * version gets an impl made by aimsi_infer_create over a bundle this file
 * owns. svc_infer.c hands every batch to aimsi_life_run first; until a
 * lifecycle method arrives there is no table and that costs one atomic load
 * plus a method-name check per item. With a table, a batch is cut into
 * chunks of at most CHUNK items; under the table's mutex each predict item
 * gets a version (weighted round robin), "info" goes to the stable version
 * and anything else (swap, unknown methods) to the base impl; each version's
 * share runs through aimsi_infer_run_plain, so batching inside a version is
 * the same as before.
 *
 * Lifetime. A run holds a reference on every version it uses (and on the
 * stable one, for fallbacks); unloading takes the version out of the table at
 * once, and the last reference frees its impl and bundle. Nobody waits for
 * anybody, so a canary rolled back from inside a run (decisions are taken on
 * the traffic's threads, after a chunk) cannot deadlock on itself.
 *
 * Audit. Requests over the wire are audited by the node's door with the
 * caller's identity (authz.c, through aimsi_life_action); in-process
 * requests ("host") and the canary's own decisions ("canary") are audited
 * here. Audit hooks and metrics run after the mutex is released.
 */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "../model/aimsi_model.h"
#include "aimsi_dispatch.h"
#include "aimsi_life.h"
#include "aimsi_life_table.h"
#include "aimsi_news.h"
#include "aimsi_node.h"
#include "authz/aimsi_authz.h"

/* ---- small helpers ----------------------------------------------------------------- */

static int ver_ok(const char *v)
{
    const size_t n = strlen(v);
    if (n == 0 || n > LIFE_VER_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char ch = v[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

int aimsi_life_find(const aimsi_life *lf, const char *v)
{
    for (int i = 0; i < LIFE_MAX; i++) {
        if (lf->slot[i] != NULL && strcmp(lf->slot[i]->ver, v) == 0) {
            return i;
        }
    }
    return -1;
}

void aimsi_life_slot_free(life_slot *s)
{
    if (s == NULL) {
        return;
    }
    if (!s->base) {
        aimsi_kind_infer.destroy(s->impl);
        aims_bundle_destroy(s->bundle);
    }
    aimsi_free(s);
}

/* Take slot i out of the table (under mu); returns it when nobody uses it. */
life_slot *aimsi_life_remove_locked(aimsi_life *lf, int i)
{
    life_slot *s = lf->slot[i];
    lf->slot[i] = NULL;
    if (lf->prev == i) {
        lf->prev = -1;
    }
    s->gone = 1;
    return s->refs == 0 ? s : NULL;
}

static aims_metrics *life_mx(const aimsi_life *lf)
{
    return aims_node_metrics(lf->svc->node);
}

static void labels_of(const aimsi_life *lf, const char *ver, char *buf, size_t cap)
{
    snprintf(buf, cap, "service=\"%.128s\",version=\"%.32s\"", lf->svc->name, ver);
}

static void emit_weights(aimsi_life *lf)
{
    char vers[LIFE_MAX][LIFE_VER_MAX + 1];
    uint32_t w[LIFE_MAX];
    int n = 0;
    pthread_mutex_lock(&lf->mu);
    for (int i = 0; i < LIFE_MAX; i++) {
        if (lf->slot[i] != NULL) {
            memcpy(vers[n], lf->slot[i]->ver, sizeof vers[n]);
            w[n++] = lf->slot[i]->weight;
        }
    }
    pthread_mutex_unlock(&lf->mu);
    char labels[AIMSI_FRAME_MAX_SERVICE + 96];
    for (int i = 0; i < n; i++) {
        labels_of(lf, vers[i], labels, sizeof labels);
        (void)aims_metrics_set_gauge(life_mx(lf), "aims_version_weight", labels, (double)w[i]);
    }
}

void aimsi_life_news_set(life_news *nw, const aimsi_life *lf, aims_audit_action a, const char *ver,
                     const char *fmt, ...)
{
    nw->action = a;
    snprintf(nw->resource, sizeof nw->resource, "%s@%s", lf->svc->name, ver);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nw->detail, sizeof nw->detail, fmt, ap);
    va_end(ap);
    nw->weights = 1;
}

/* After the mutex: audit (when `who` is not audited by the door), metrics, log. */
void aimsi_life_news_emit(aimsi_life *lf, const life_news *nw, const char *who, int audit)
{
    if (nw->weights) {
        emit_weights(lf);
    }
    if (nw->action != 0 && audit) {
        aimsi_authz_audit(lf->svc->node, nw->action, who, "", nw->resource, AIMS_OK, nw->detail);
    }
    if (nw->action != 0 && !nw->quiet) { /* event watchers (svc_news.c): the new record
                                            * replaces the last */
        const uint64_t id = aimsi_news_model(lf->svc->node, lf->svc->name, nw->action,
                                             nw->resource, who, nw->detail);
        aimsi_news_drop(lf->svc->node, atomic_exchange(&lf->news_id, id));
    }
    if (nw->outcome != NULL) {
        char labels[AIMSI_FRAME_MAX_SERVICE + 160];
        snprintf(labels, sizeof labels, "service=\"%s\",outcome=\"%s\"", lf->svc->name,
                 nw->outcome);
        (void)aims_metrics_count(life_mx(lf), "aims_canary_decisions_total", labels, 1);
        aimsi_log(AIMS_LOG_INFO, "canary %s: %s (%s)", nw->resource, nw->outcome, nw->detail);
    }
}

/* ---- the table ---------------------------------------------------------------------- */

static aimsi_life *life_new(aims_service *svc, void *base)
{
    aimsi_life *lf = aimsi_calloc(1, sizeof *lf);
    life_slot *s = aimsi_calloc(1, sizeof *s);
    if (lf == NULL || s == NULL || pthread_mutex_init(&lf->mu, NULL) != 0) {
        aimsi_free(lf);
        aimsi_free(s);
        return NULL;
    }
    lf->svc = svc;
    lf->base_impl = base;
    lf->prev = -1;
    lf->canary = -1;
    aimsi_canary_rule_default(&lf->rule);
    /* the base version: "name@v" of the service, else the bundle's meta, else "1" */
    const char *at = strchr(svc->name, '@');
    aimsi_infer_desc d;
    if (at != NULL && ver_ok(at + 1)) {
        snprintf(s->ver, sizeof s->ver, "%s", at + 1);
    } else if (aimsi_infer_describe(svc, &d) == AIMS_OK && ver_ok(d.version)) {
        snprintf(s->ver, sizeof s->ver, "%.32s", d.version);
    } else {
        snprintf(s->ver, sizeof s->ver, "1");
    }
    s->impl = base;
    s->base = 1;
    s->weight = 100;
    lf->slot[0] = s;
    return lf;
}

void aimsi_life_free(aimsi_life *lf)
{
    if (lf == NULL) {
        return;
    }
    for (int i = 0; i < LIFE_MAX; i++) {
        aimsi_life_slot_free(lf->slot[i]);
    }
    pthread_mutex_destroy(&lf->mu);
    aimsi_free(lf);
}

static aimsi_life *life_get(_Atomic(aimsi_life *) *lp, aims_service *svc, void *base)
{
    aimsi_life *lf = atomic_load_explicit(lp, memory_order_acquire);
    if (lf != NULL) {
        return lf;
    }
    aimsi_life *fresh = life_new(svc, base);
    if (fresh == NULL) {
        return NULL;
    }
    aimsi_life *expected = NULL;
    if (!atomic_compare_exchange_strong(lp, &expected, fresh)) {
        aimsi_life_free(fresh);
        return expected;
    }
    emit_weights(fresh);
    return fresh;
}

aimsi_life *aimsi_life_of(aims_service *s)
{
    void *base = NULL;
    _Atomic(aimsi_life *) *lp = aimsi_infer_life_slot(s, &base);
    return lp == NULL ? NULL : life_get(lp, s, base);
}

/* ---- state transitions (under mu) ------------------------------------------------ */

/* Next numeric version: 1 + the largest numeric label in the table (under mu). */
static void next_ver_locked(const aimsi_life *lf, char *out, size_t cap)
{
    unsigned long best = 0;
    for (int i = 0; i < LIFE_MAX; i++) {
        if (lf->slot[i] == NULL) {
            continue;
        }
        char *end = NULL;
        const unsigned long v = strtoul(lf->slot[i]->ver, &end, 10);
        if (end != NULL && *end == '\0' && v > best) {
            best = v;
        }
    }
    snprintf(out, cap, "%lu", best + 1);
}

uint64_t aimsi_life_total_locked(const aimsi_life *lf)
{
    uint64_t t = 0;
    for (int i = 0; i < LIFE_MAX; i++) {
        t += lf->slot[i] != NULL ? lf->slot[i]->weight : 0;
    }
    return t;
}

/* Exactly one version has weight: it is the stable one (the old stable becomes prev). */
void aimsi_life_settle_locked(aimsi_life *lf)
{
    int only = -1;
    for (int i = 0; i < LIFE_MAX; i++) {
        if (lf->slot[i] != NULL && lf->slot[i]->weight > 0) {
            if (only >= 0) {
                return;
            }
            only = i;
        }
    }
    if (only >= 0 && only != lf->stable) {
        lf->prev = lf->stable;
        lf->stable = only;
    }
}

void aimsi_life_only_locked(aimsi_life *lf, int keep)
{
    for (int i = 0; i < LIFE_MAX; i++) {
        if (lf->slot[i] != NULL) {
            lf->slot[i]->weight = i == keep ? 100u : 0u;
            lf->slot[i]->cur = 0;
        }
    }
}

/* Add version `ver` ("" = next number) over b (owned from here, also on failure). */
aims_status aimsi_life_add_locked(aimsi_life *lf, char *ver, size_t ver_cap, aims_bundle *b,
                              int *out_idx, char *why, size_t cap)
{
    if (ver[0] == '\0') {
        next_ver_locked(lf, ver, ver_cap);
    }
    int free_i = -1;
    for (int i = LIFE_MAX - 1; i >= 0; i--) {
        free_i = lf->slot[i] == NULL ? i : free_i;
    }
    aims_status rc = AIMS_OK;
    if (!ver_ok(ver)) {
        snprintf(why, cap, "version \"%s\": want 1..%d bytes of [A-Za-z0-9._-]", ver,
                 LIFE_VER_MAX);
        rc = AIMS_E_INVAL;
    } else if (aimsi_life_find(lf, ver) >= 0) {
        snprintf(why, cap, "version %s is already loaded", ver);
        rc = AIMS_E_EXISTS;
    } else if (free_i < 0) {
        snprintf(why, cap, "%d versions are loaded; unload one first", LIFE_MAX);
        rc = AIMS_E_RANGE;
    }
    life_slot *s = rc == AIMS_OK ? aimsi_calloc(1, sizeof *s) : NULL;
    if (rc == AIMS_OK && s == NULL) {
        snprintf(why, cap, "no memory for a version");
        rc = AIMS_E_NOMEM;
    }
    if (rc == AIMS_OK) {
        rc = aimsi_infer_create(b, &s->impl);
        if (rc != AIMS_OK) {
            snprintf(why, cap, "%s", aims_errmsg());
        }
    }
    if (rc != AIMS_OK) {
        aimsi_free(s);
        aims_bundle_destroy(b);
        return rc;
    }
    snprintf(s->ver, sizeof s->ver, "%s", ver);
    s->bundle = b;
    lf->slot[free_i] = s;
    *out_idx = free_i;
    return AIMS_OK;
}

/* Start a canary of slot c at pct % (1..99), or switch to it (100). */
static void deploy_locked(aimsi_life *lf, int c, int64_t pct, const aimsi_canary_rule *rule)
{
    if (pct >= 100) {
        lf->prev = lf->stable;
        lf->stable = c;
        aimsi_life_only_locked(lf, c);
        return;
    }
    aimsi_life_only_locked(lf, lf->stable);
    lf->slot[lf->stable]->weight = (uint32_t)(100 - pct);
    lf->slot[c]->weight = (uint32_t)pct;
    lf->canary = c;
    lf->cstate = AIMS_CANARY_STATE_RUNNING;
    lf->rule = *rule;
    lf->cstart_ns = aimsi_now_ns();
    lf->cgen++;
    for (int i = 0; i < LIFE_MAX; i++) {
        if (lf->slot[i] != NULL) {
            memset(&lf->slot[i]->win, 0, sizeof lf->slot[i]->win);
        }
    }
}

/* Roll the running canary back (under mu); returns its slot when free to free. */
life_slot *aimsi_life_canary_back_locked(aimsi_life *lf)
{
    const int c = lf->canary;
    lf->canary = -1;
    lf->cstate = AIMS_CANARY_STATE_ROLLED_BACK;
    aimsi_life_only_locked(lf, lf->stable);
    return aimsi_life_remove_locked(lf, c);
}

aims_status aimsi_life_deploy(aimsi_life *lf, char *ver, size_t ver_cap, aims_bundle *b,
                                 int64_t pct, const aimsi_canary_rule *rule, life_news *nw,
                                 char *why, size_t cap)
{
    pthread_mutex_lock(&lf->mu);
    aims_status rc = AIMS_OK;
    int idx = -1;
    if (lf->canary >= 0) {
        snprintf(why, cap, "a canary of version %s is running; roll it back first",
                 lf->slot[lf->canary]->ver);
        aims_bundle_destroy(b);
        rc = AIMS_E_STATE;
    } else {
        rc = aimsi_life_add_locked(lf, ver, ver_cap, b, &idx, why, cap);
    }
    if (rc == AIMS_OK) {
        deploy_locked(lf, idx, pct, rule);
        aimsi_life_news_set(nw, lf, AIMS_AUDIT_MODEL_DEPLOY, ver, "%s %s at %lld%%",
                 pct >= 100 ? "switched to" : "canary", ver, (long long)pct);
    }
    pthread_mutex_unlock(&lf->mu);
    return rc;
}

/* ---- routing ----------------------------------------------------------------------- */

static int pick_locked(aimsi_life *lf)
{
    int best = -1;
    int64_t total = 0;
    for (int i = 0; i < LIFE_MAX; i++) {
        life_slot *s = lf->slot[i];
        if (s == NULL || s->weight == 0) {
            continue;
        }
        s->cur += s->weight;
        total += s->weight;
        if (best < 0 || s->cur > lf->slot[best]->cur) {
            best = i;
        }
    }
    if (best < 0) {
        return lf->stable;
    }
    lf->slot[best]->cur -= total;
    return best;
}

static int is_predict(const aimsi_work *w)
{
    return w->method != NULL && strcmp(w->method, "predict") == 0;
}

typedef struct chunk_tally {
    uint64_t calls, errors, fallbacks, lat_ns;
} chunk_tally;

/* Serve again, on the stable version, the predicts that failed on another. */
static void fallback(life_slot *st, aimsi_work **sub, size_t k, chunk_tally *t)
{
    aimsi_work *redo[CHUNK];
    size_t r = 0;
    for (size_t i = 0; i < k; i++) {
        if (is_predict(sub[i]) && sub[i]->status != AIMS_OK) {
            aims_msg_clear(sub[i]->reply);
            sub[i]->status = AIMS_OK;
            redo[r++] = sub[i];
        }
    }
    if (r == 0) {
        return;
    }
    aimsi_infer_run_plain(st->impl, redo, r);
    t->fallbacks += r;
    for (size_t i = 0; i < r; i++) {
        t->errors += redo[i]->status == AIMS_OK; /* the canary's fault, not the request's */
    }
}

static void route_chunk(aimsi_life *lf, aimsi_work *const *items, size_t n)
{
    int idx[CHUNK];
    life_slot *used[LIFE_MAX] = {0};
    char vers[LIFE_MAX][LIFE_VER_MAX + 1]; /* labels, copied: a slot may go during the run */
    chunk_tally tally[LIFE_MAX];
    memset(tally, 0, sizeof tally);
    aimsi_work *other[CHUNK];
    size_t n_other = 0;
    pthread_mutex_lock(&lf->mu);
    const int st = lf->stable;
    for (size_t i = 0; i < n; i++) {
        const char *m = items[i]->method;
        if (is_predict(items[i])) {
            idx[i] = pick_locked(lf);
        } else if (m != NULL && strcmp(m, "info") == 0) {
            idx[i] = st;
        } else {
            idx[i] = -1;
            other[n_other++] = items[i];
        }
        if (idx[i] >= 0 && used[idx[i]] == NULL) {
            used[idx[i]] = lf->slot[idx[i]];
            used[idx[i]]->refs++;
            memcpy(vers[idx[i]], used[idx[i]]->ver, sizeof vers[0]);
        }
    }
    life_slot *stable = lf->slot[st];
    stable->refs++;
    pthread_mutex_unlock(&lf->mu);

    if (n_other > 0) {
        aimsi_infer_run_plain(lf->base_impl, other, n_other); /* swap, unknown methods */
    }
    for (int v = 0; v < LIFE_MAX; v++) {
        if (used[v] == NULL) {
            continue;
        }
        aimsi_work *sub[CHUNK];
        size_t k = 0, preds = 0;
        for (size_t i = 0; i < n; i++) {
            if (idx[i] == v) {
                sub[k++] = items[i];
                preds += is_predict(items[i]);
            }
        }
        const uint64_t t0 = aimsi_now_ns();
        aimsi_infer_run_plain(used[v]->impl, sub, k);
        const uint64_t dt = aimsi_now_ns() - t0;
        chunk_tally *t = &tally[v];
        t->calls = preds;
        t->lat_ns = dt * preds;
        if (used[v] != stable) {
            fallback(stable, sub, k, t);
        } else {
            for (size_t i = 0; i < k; i++) {
                t->errors += is_predict(sub[i]) && sub[i]->status != AIMS_OK;
            }
        }
    }

    life_slot *drop[LIFE_MAX + 2] = {0};
    size_t n_drop = 0;
    pthread_mutex_lock(&lf->mu);
    for (int v = 0; v < LIFE_MAX; v++) {
        life_slot *s = used[v];
        if (s == NULL) {
            continue;
        }
        s->calls += tally[v].calls;
        s->errors += tally[v].errors;
        s->fallbacks += tally[v].fallbacks;
        s->win.calls += tally[v].calls;
        s->win.errors += tally[v].errors;
        s->win.lat_ns += tally[v].lat_ns;
        if (--s->refs == 0 && s->gone) {
            drop[n_drop++] = s;
        }
    }
    if (--stable->refs == 0 && stable->gone) {
        drop[n_drop++] = stable;
    }
    pthread_mutex_unlock(&lf->mu);
    for (size_t i = 0; i < n_drop; i++) {
        aimsi_life_slot_free(drop[i]);
    }
    aims_metrics *mx = life_mx(lf);
    char labels[AIMSI_FRAME_MAX_SERVICE + 96];
    for (int v = 0; v < LIFE_MAX; v++) {
        if (used[v] == NULL) {
            continue;
        }
        labels_of(lf, vers[v], labels, sizeof labels);
        (void)aims_metrics_count(mx, "aims_version_calls_total", labels, tally[v].calls);
        if (tally[v].errors > 0) {
            (void)aims_metrics_count(mx, "aims_version_errors_total", labels, tally[v].errors);
        }
        if (tally[v].fallbacks > 0) {
            (void)aims_metrics_count(mx, "aims_version_fallbacks_total", labels,
                                     tally[v].fallbacks);
        }
    }
    aimsi_life_judge(lf, 0); /* a verdict point (svc_verdict.c) */
}

int aimsi_life_run(_Atomic(aimsi_life *) *lp, aims_service *svc, void *base,
                   aimsi_work *const *items, size_t n)
{
    aimsi_life *lf = atomic_load_explicit(lp, memory_order_acquire);
    if (lf == NULL && svc == NULL) {
        return 0; /* a bare impl (tests, or a version of a table): no lifecycle */
    }
    if (lf == NULL) {
        int ctl = 0;
        for (size_t i = 0; i < n && !ctl; i++) {
            ctl = aimsi_life_is_ctl(items[i]->method);
        }
        if (!ctl) {
            return 0; /* no lifecycle yet: the service runs as it always did */
        }
        lf = life_get(lp, svc, base);
    }
    aimsi_work *rest[CHUNK];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        aimsi_work *w = items[i];
        if (aimsi_life_is_ctl(w->method)) {
            if (lf == NULL) {
                w->status = aimsi_work_fail(w, AIMS_E_NOMEM, "%s: no memory for the version "
                                                             "table", w->method);
            } else {
                aimsi_life_ctl_run(lf, w);
            }
            continue;
        }
        rest[k++] = w;
        if (k == CHUNK) {
            if (lf != NULL) {
                route_chunk(lf, rest, k);
            } else {
                aimsi_infer_run_plain(base, rest, k);
            }
            k = 0;
        }
    }
    if (k > 0) {
        if (lf != NULL) {
            route_chunk(lf, rest, k);
        } else {
            aimsi_infer_run_plain(base, rest, k);
        }
    }
    return 1;
}

/* ---- public and in-process entries -------------------------------------------------- */

aims_status aims_service_set_model_dir(aims_service *s, const char *dir)
{
    if (!aimsi_obj_ok(s, AIMSI_MAGIC_SERVICE) || aimsi_infer_life_slot(s, NULL) == NULL) {
        return AIMSI_MISUSE("not an infer service");
    }
    char real[PATH_MAX] = "";
    if (dir != NULL && realpath(dir, real) == NULL) {
        return aimsi_err(&s->obj, AIMS_E_IO, "model directory %s: no such directory", dir);
    }
    if (strlen(real) >= PATH_CAP) {
        return aimsi_err(&s->obj, AIMS_E_RANGE, "model directory %s: path too long", dir);
    }
    aimsi_life *lf = aimsi_life_of(s);
    if (lf == NULL) {
        return aimsi_err(&s->obj, AIMS_E_NOMEM, "no memory for the version table");
    }
    pthread_mutex_lock(&lf->mu);
    snprintf(lf->dir, sizeof lf->dir, "%s", real);
    pthread_mutex_unlock(&lf->mu);
    return AIMS_OK;
}

aims_status aimsi_life_publish(aims_node *n, const char *publish, const void *bytes,
                               size_t len, int64_t canary_pct, const char *who)
{
    char name[AIMSI_FRAME_MAX_SERVICE + 1];
    char ver[LIFE_VER_MAX + 1] = "";
    if (publish == NULL || snprintf(name, sizeof name, "%s", publish) >= (int)sizeof name) {
        return aimsi_err(NULL, AIMS_E_INVAL, "publish: bad target");
    }
    char *at = strchr(name, '@');
    if (at != NULL) {
        *at = '\0';
        snprintf(ver, sizeof ver, "%s", at + 1);
    }
    aims_service *s = aimsi_svc_lookup(n, name);
    aimsi_life *lf = s != NULL ? aimsi_life_of(s) : NULL;
    if (lf == NULL) {
        aimsi_log(AIMS_LOG_WARN, "publish %s: no infer service \"%s\" on this node; the "
                                 "model stays downloadable (\"result\")", publish, name);
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "publish %s: no infer service \"%s\" on this "
                         "node", publish, name);
    }
    aims_bundle *b = NULL;
    AIMSI_TRY(aims_bundle_parse(bytes, len, &b));
    char why[512] = "";
    life_news nw;
    memset(&nw, 0, sizeof nw);
    aimsi_canary_rule rule;
    aimsi_canary_rule_default(&rule);
    const int64_t pct = canary_pct >= 1 && canary_pct <= 99 ? canary_pct : 100;
    const aims_status rc =
        aimsi_life_deploy(lf, ver, sizeof ver, b, pct, &rule, &nw, why, sizeof why);
    if (rc != AIMS_OK) {
        aimsi_authz_audit(n, AIMS_AUDIT_MODEL_DEPLOY, who, "", publish, rc, why);
        aimsi_log(AIMS_LOG_WARN, "publish %s: %s", publish, why);
        return aimsi_err(NULL, rc, "publish %s: %s", publish, why);
    }
    aimsi_life_news_emit(lf, &nw, who, 1);
    return AIMS_OK;
}
