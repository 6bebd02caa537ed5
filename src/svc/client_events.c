/*
 * client_events.c -- client event watches (aims_events.h, docs/EVENTS.md).
 *
 * Why here and not in the client mirror: the mirror (registry/regbk_service.c)
 * copies the remote registry into a local aims_registry whose revisions are
 * local and die with the client, so they cannot be a resume point. A watch
 * speaks the registry service's own "changes" method (svc_registry.c) and
 * keeps the REMOTE (epoch, revision): the same pair a restarted host passes
 * back to continue without gaps or duplicates.
 *
 * How: one thread per watch polls "changes" (since, epoch) every period over a
 * private client (the owner's TLS config), validates the whole reply, then
 * turns it into events and calls the user back on that same thread, in order.
 * Replies are from the network: arrays are checked for agreeing lengths and
 * names are parsed with bounds (aimsi_kv_field_next) before anything is
 * delivered; a bad reply is dropped whole and the poll retried.
 *
 * Revisions: the registry bumps its revision once per event and "changes"
 * replays every event after `since`, so the k-th event of a delta reply has
 * revision since + 1 + k (the reply's "revision" is since + n; a reply that
 * disagrees is refused). A snapshot reply ("snapshot" = 1) is delivered as
 * RESYNC + one PUT per live instance, all at the snapshot's revision.
 *
 * Derived kinds: a table of the live instances (id, service) known to this
 * watch turns a PUT of a known id into WEIGHT (the registry re-puts an
 * instance when its weight changes) and the first live instance of a
 * "name@version" into an extra VERSION event.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../codec/aimsi_frame.h"
#include "../codec/aimsi_kv.h"
#include "../core/aimsi_core.h"
#include "aims/aims_events.h"
#include "aimsi_msg.h"
#include "aimsi_news.h"
#include "aimsi_regsync.h"
#include "aimsi_wire.h"
#include "registry/aimsi_regbk.h"

#define WATCH_MAGIC 0x41455657u /* "AEVW" */
#define MAX_REPLY_EVENTS 4096u

typedef struct live_entry {
    int64_t id;
    char *service;
} live_entry;

struct aims_event_watch {
    uint32_t magic;
    aims_client *caller;
    char url[AIMSI_URL_MAX + 1];
    uint64_t epoch, since, period_ms;
    aims_event_fn fn;
    void *user;
    live_entry *live;
    size_t n_live, cap_live;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    int self_free; /* destroyed from its own callback: the thread frees it */
    char err[256];   /* last poll failure, written by the thread under lock */
    char shown[256]; /* what aims_event_watch_errmsg returned last */
};

static int stopping(aims_event_watch *w)
{
    pthread_mutex_lock(&w->lock);
    const int s = w->stop;
    pthread_mutex_unlock(&w->lock);
    return s;
}

static void live_clear(aims_event_watch *w)
{
    for (size_t i = 0; i < w->n_live; i++) {
        aimsi_free(w->live[i].service);
    }
    w->n_live = 0;
}

static live_entry *live_find(aims_event_watch *w, int64_t id)
{
    for (size_t i = 0; i < w->n_live; i++) {
        if (w->live[i].id == id) {
            return &w->live[i];
        }
    }
    return NULL;
}

static size_t live_count_service(aims_event_watch *w, const char *service)
{
    size_t k = 0;
    for (size_t i = 0; i < w->n_live; i++) {
        k += strcmp(w->live[i].service, service) == 0;
    }
    return k;
}

static void live_drop(aims_event_watch *w, int64_t id)
{
    live_entry *e = live_find(w, id);
    if (e != NULL) {
        aimsi_free(e->service);
        *e = w->live[--w->n_live];
    }
}

/* Add id; 0 on success, -1 out of memory (the event is still delivered). */
static int live_add(aims_event_watch *w, int64_t id, const char *service)
{
    if (w->n_live == w->cap_live) {
        const size_t cap = w->cap_live ? w->cap_live * 2 : 32;
        live_entry *grown = aimsi_realloc(w->live, cap * sizeof(*grown));
        if (grown == NULL) {
            return -1;
        }
        w->live = grown;
        w->cap_live = cap;
    }
    char *s = aimsi_strdup(service);
    if (s == NULL) {
        return -1;
    }
    w->live[w->n_live].id = id;
    w->live[w->n_live].service = s;
    w->n_live++;
    return 0;
}

static void emit(aims_event_watch *w, aims_event_kind kind, uint64_t rev, int64_t id,
                 const char *service, const char *address, uint32_t weight)
{
    const aims_event ev = {kind, w->epoch, rev, (aims_instance)id, service, address, weight};
    w->fn(w->user, &ev);
}

/* One PUT (join or weight change), plus VERSION for a new name@version. */
static void deliver_put(aims_event_watch *w, uint64_t rev, int64_t id, const char *s,
                        const char *a, uint32_t weight)
{
    if (live_find(w, id) != NULL) {
        emit(w, AIMS_EVENT_WEIGHT, rev, id, s, a, weight);
        return;
    }
    const int first = strchr(s, '@') != NULL && live_count_service(w, s) == 0;
    live_add(w, id, s);
    emit(w, AIMS_EVENT_PUT, rev, id, s, a, weight);
    if (first) {
        emit(w, AIMS_EVENT_VERSION, rev, id, s, a, weight);
    }
}

typedef struct parsed {
    int64_t epoch, rev, snap;
    const char *svc, *addr;
    size_t svc_len, addr_len, n;
    const char *kinds, *ids, *weights;
} parsed;

/* Validate a "changes" reply completely before anything is delivered. */
static aims_status parse_reply(aims_event_watch *w, const aims_msg *reply, parsed *p)
{
    size_t ik, ii, iw;
    if (aimsi_msg_int(reply, "epoch", &p->epoch) != AIMS_OK ||
        aimsi_msg_int(reply, "revision", &p->rev) != AIMS_OK ||
        aimsi_msg_int(reply, "snapshot", &p->snap) != AIMS_OK ||
        aimsi_msg_bytes(reply, "services", &p->svc, &p->svc_len) != AIMS_OK ||
        aimsi_msg_bytes(reply, "addresses", &p->addr, &p->addr_len) != AIMS_OK ||
        aims_msg_find(reply, "kinds", &ik) != AIMS_OK ||
        aims_msg_find(reply, "ids", &ii) != AIMS_OK ||
        aims_msg_find(reply, "weights", &iw) != AIMS_OK) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "events: registry reply from %s is malformed",
                         w->url);
    }
    const void *k, *i, *wt;
    aims_dtype dk, di, dw;
    size_t bk, bi, bw;
    aims_msg_get_tensor(reply, ik, NULL, &dk, NULL, NULL, &k, &bk);
    aims_msg_get_tensor(reply, ii, NULL, &di, NULL, NULL, &i, &bi);
    aims_msg_get_tensor(reply, iw, NULL, &dw, NULL, NULL, &wt, &bw);
    p->n = bk / 4;
    p->kinds = k;
    p->ids = i;
    p->weights = wt;
    const int delta_ok = p->snap || (p->epoch == (int64_t)w->epoch &&
                                     (uint64_t)p->rev == w->since + p->n);
    if (dk != AIMS_DT_I32 || di != AIMS_DT_I64 || dw != AIMS_DT_I32 || bk != p->n * 4 ||
        bi != p->n * 8 || bw != p->n * 4 || p->n > MAX_REPLY_EVENTS || p->rev < 0 ||
        !delta_ok) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "events: registry reply from %s: event arrays "
                         "or revisions disagree", w->url);
    }
    const char *ps = p->svc, *pa = p->addr;
    for (size_t e = 0; e < p->n; e++) {
        char s[AIMSI_FRAME_MAX_SERVICE + 1], a[AIMSI_URL_MAX + 1];
        if (!aimsi_kv_field_next(&ps, p->svc + p->svc_len, s, sizeof(s)) ||
            !aimsi_kv_field_next(&pa, p->addr + p->addr_len, a, sizeof(a))) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "events: registry reply from %s: event %zu "
                             "names", w->url, e);
        }
    }
    return AIMS_OK;
}

static void deliver(aims_event_watch *w, const parsed *p)
{
    const uint64_t since = w->since;
    if (p->snap) {
        live_clear(w);
        w->epoch = (uint64_t)p->epoch;
        emit(w, AIMS_EVENT_RESYNC, (uint64_t)p->rev, 0, "", "", 0);
    }
    const char *ps = p->svc, *pa = p->addr;
    for (size_t e = 0; e < p->n && !stopping(w); e++) {
        char s[AIMSI_FRAME_MAX_SERVICE + 1], a[AIMSI_URL_MAX + 1];
        aimsi_kv_field_next(&ps, p->svc + p->svc_len, s, sizeof(s));
        aimsi_kv_field_next(&pa, p->addr + p->addr_len, a, sizeof(a));
        int32_t kind, weight;
        int64_t id;
        memcpy(&kind, p->kinds + e * 4, 4);
        memcpy(&weight, p->weights + e * 4, 4);
        memcpy(&id, p->ids + e * 8, 8);
        const uint64_t rev = p->snap ? (uint64_t)p->rev : since + 1 + e;
        const uint32_t wgt = weight < 1 || weight > 10000 ? 1u : (uint32_t)weight;
        char subj[AIMSI_FRAME_MAX_SERVICE + 1];
        const int news = aimsi_news_kind(s, subj, sizeof(subj)); /* svc_news.c */
        if (news != 0) {
            if (p->snap || kind == AIMS_EVENT_PUT) { /* a record's removal is bookkeeping */
                emit(w, (aims_event_kind)news, rev, id, subj, a, 0);
            }
        } else if (p->snap || kind == AIMS_EVENT_PUT) {
            deliver_put(w, rev, id, s, a, wgt);
        } else if (kind == AIMS_EVENT_DELETE || kind == AIMS_EVENT_EXPIRE) {
            live_drop(w, id);
            emit(w, (aims_event_kind)kind, rev, id, s, a, 0);
        }
        w->since = rev; /* a stop mid-reply leaves since at the last delivered event */
    }
    if (!stopping(w)) {
        w->since = (uint64_t)p->rev;
    }
}

static void poll_once(aims_event_watch *w)
{
    aims_msg req, reply;
    aimsi_msg_init(&req);
    aimsi_msg_init(&reply);
    aims_status rc = aimsi_msg_put_i64(&req, "since", (int64_t)w->since);
    if (rc == AIMS_OK) {
        rc = aimsi_msg_put_i64(&req, "epoch", (int64_t)w->epoch);
    }
    if (rc == AIMS_OK) {
        const int64_t timeout = (int64_t)(w->period_ms * 5 > 1000 ? w->period_ms * 5 : 1000);
        rc = aims_client_call_addr(w->caller, w->url, "aims.registry", "changes", &req, &reply,
                                   timeout);
    }
    parsed p;
    memset(&p, 0, sizeof(p));
    const int call_failed = rc != AIMS_OK;
    if (rc == AIMS_OK) {
        rc = parse_reply(w, &reply, &p);
    }
    pthread_mutex_lock(&w->lock);
    snprintf(w->err, sizeof(w->err), "%s",
             rc == AIMS_OK ? "" : call_failed ? aims_client_errmsg(w->caller) : aims_errmsg());
    pthread_mutex_unlock(&w->lock);
    if (rc == AIMS_OK) {
        deliver(w, &p);
    }
    aimsi_msg_fini(&req);
    aimsi_msg_fini(&reply);
}

static void watch_free(aims_event_watch *w)
{
    w->magic = 0;
    aims_client_destroy(w->caller);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    live_clear(w);
    aimsi_free(w->live);
    aimsi_free(w);
}

static void *watch_main(void *arg)
{
    aims_event_watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        pthread_mutex_unlock(&w->lock);
        poll_once(w);
        pthread_mutex_lock(&w->lock);
        if (w->stop) {
            break;
        }
        const struct timespec ts = aimsi_mono_after_ms(w->period_ms);
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    }
    const int self_free = w->self_free;
    pthread_mutex_unlock(&w->lock);
    if (self_free) {
        pthread_detach(pthread_self());
        watch_free(w);
    }
    return NULL;
}

AIMS_API aims_status aims_client_watch(aims_client *c, const char *url, uint64_t epoch,
                                       uint64_t from_revision, aims_event_fn fn, void *user,
                                       aims_event_watch **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (aimsi_client_sync_ms(c) <= 0 || fn == NULL || out == NULL) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "aims_client_watch: client is %s, fn %s, out %s",
                         aimsi_obj_what(c), fn ? "set" : "NULL", out ? "set" : "NULL");
    }
    if (from_revision > INT64_MAX || epoch > INT64_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_client_watch: epoch/revision beyond 2^63");
    }
    aims_event_watch *w = aimsi_calloc(1, sizeof(*w));
    if (w == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_client_watch: out of memory");
    }
    /* aims://host:port is the registry service over tcp:// (as aims_client_join). */
    char u[AIMSI_URL_MAX + 8];
    if (url != NULL && strncmp(url, "aims://", 7) == 0 && strlen(url) <= AIMSI_URL_MAX) {
        memcpy(u, "tcp://", 6);
        strcpy(u + 6, url + 7);
        url = u;
    }
    const aims_status rc =
        aimsi_regbk_private_client("aims_client_watch", url, aimsi_client_tls(c), w->url,
                                   &w->caller);
    if (rc != AIMS_OK) {
        aimsi_free(w);
        return rc;
    }
    w->magic = WATCH_MAGIC;
    w->epoch = epoch;
    w->since = from_revision;
    w->period_ms = (uint64_t)aimsi_client_sync_ms(c);
    w->fn = fn;
    w->user = user;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    const int e1 = pthread_mutex_init(&w->lock, NULL);
    const int e2 = pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    const int e3 = e1 == 0 && e2 == 0 ? pthread_create(&w->thread, NULL, watch_main, w) : -1;
    if (e3 != 0) {
        if (e1 == 0) {
            pthread_mutex_destroy(&w->lock);
        }
        if (e2 == 0) {
            pthread_cond_destroy(&w->cond);
        }
        aims_client_destroy(w->caller);
        aimsi_free(w);
        return aimsi_err(NULL, AIMS_E_BACKEND, "aims_client_watch: cannot start the thread");
    }
    *out = w;
    return AIMS_OK;
}

AIMS_API void aims_event_watch_destroy(aims_event_watch *w)
{
    if (w == NULL || w->magic != WATCH_MAGIC) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->cond);
    if (pthread_equal(pthread_self(), w->thread)) {
        /* From the watch's own callback: the thread frees the watch once the
         * callback returned (watch_main). */
        w->self_free = 1;
        pthread_mutex_unlock(&w->lock);
        return;
    }
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    watch_free(w);
}

AIMS_API const char *aims_event_watch_errmsg(aims_event_watch *w)
{
    if (w == NULL || w->magic != WATCH_MAGIC) {
        return "";
    }
    pthread_mutex_lock(&w->lock);
    memcpy(w->shown, w->err, sizeof(w->shown));
    pthread_mutex_unlock(&w->lock);
    return w->shown;
}
