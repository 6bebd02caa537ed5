/*
 * health.c -- passive outlier ejection and panic detection (Envoy semantics).
 *
 * Each tracked instance keeps a run of consecutive failures. When the run
 * reaches `failures`, the instance is ejected for eject_ms x (times ejected),
 * capped at max_eject_ms -- provided the ejected share stays within
 * max_ejected_pct; when that cap rounds down to 0 one instance may still be
 * ejected (Envoy's "at least one host is ejectable"). A blocked ejection is
 * retried on every further failure of the run.
 *
 * Times ejected. Envoy lowers the multiplier by one per analysis interval the
 * host spends healthy. We have no interval timer, so the base ejection time
 * stands in for the interval: for every full eject_ms spent healthy since the
 * last un-ejection (or the last decrement) the count drops by one, computed
 * lazily when the instance is next reported or ejected. The count stops growing
 * once eject_ms x count reaches max_eject_ms, so it cannot overflow and a long
 * bad streak is forgiven at the same pace as a short one past the cap.
 *
 * Un-ejection is lazy: report, state_of and in_panic first end every ejection
 * whose end time the clock has passed (the failure run restarts at 0). A cached
 * earliest end keeps that to one comparison when nothing is due.
 *
 * Callbacks. Every state change is made under `lock` and delivered right after
 * with `lock` released but `deliver` (a recursive mutex) held, one change per
 * round. So callbacks never run under the state lock, arrive in the order the
 * changes were made even with concurrent callers, and a callback may call back
 * into the tracker: the nested call's changes are made and delivered after the
 * change being delivered, which keeps the order. The common case -- a report
 * that cannot eject while no ejection is due -- changes no state and skips
 * `deliver`, so concurrent reports contend only on the short state lock.
 *
 * Panic: fewer than panic_pct % of the tracked instances are healthy (an empty
 * tracker is not in panic).
 *
 * The clean shortcut (session 10). A success report changes nothing when no
 * tracked instance has a failure run, an ejection or an ejection count still
 * to forgive ("dirty"): then it cannot reset a run, end or cause an ejection,
 * or decay a count. `ndirty` counts dirty instances under `lock` and is
 * published in an atomic, so aimsi_health_report_ok -- the client's report
 * of every successful reply -- returns at once in the common case, without
 * the lock, the clock read and the search (one of the per-call locks of
 * pipelined calls, docs/pipelined.md). A report racing with one that makes
 * an instance dirty is ordered before it, as if it had come first.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "aimsi_orch.h"

#define NS_PER_MS 1000000u

typedef struct hent {
    aims_instance id;
    aims_health_state state;
    uint32_t fails;           /* current run of consecutive failures */
    uint64_t times;           /* times ejected (the multiplier) */
    uint64_t eject_end_ns;    /* while EJECTED */
    uint64_t healthy_since;   /* start of the current healthy period (for decay) */
} hent;

typedef struct change {
    aims_health_fn fn;
    void *user;
    aims_instance id;
    aims_health_state from, to;
} change;

struct aims_health {
    aimsi_obj obj;
    pthread_mutex_t lock;
    pthread_mutex_t deliver;
    aims_clock_fn clock;
    void *clock_user;
    /* guarded by lock */
    int64_t failures, eject_ms, max_eject_ms, max_ejected_pct, panic_pct;
    hent *e; /* sorted by id */
    size_t n, cap;
    size_t ejected;
    uint64_t next_end; /* no ejection ends before this */
    size_t ndirty;     /* instances with a failure run, an ejection or times > 0 */
    _Atomic size_t ndirty_pub; /* ndirty, for the clean shortcut (read without lock) */
    aims_health_fn fn;
    void *fn_user;
};

/* Where each AIMS_HEALTH_* parameter lives (core/params.c does the typed access). */
static const aimsi_param_field k_health_fields[] = {
    {AIMS_HEALTH_FAILURES, AIMSI_FIELD_I64, offsetof(struct aims_health, failures)},
    {AIMS_HEALTH_EJECT_MS, AIMSI_FIELD_I64, offsetof(struct aims_health, eject_ms)},
    {AIMS_HEALTH_MAX_EJECT_MS, AIMSI_FIELD_I64, offsetof(struct aims_health, max_eject_ms)},
    {AIMS_HEALTH_MAX_EJECTED_PCT, AIMSI_FIELD_I64, offsetof(struct aims_health, max_ejected_pct)},
    {AIMS_HEALTH_PANIC_PCT, AIMSI_FIELD_I64, offsetof(struct aims_health, panic_pct)},
};
static const aimsi_param_map k_health_map = {600, 699, k_health_fields,
                                             sizeof k_health_fields / sizeof k_health_fields[0]};

#define HEALTH_OK(h) aimsi_obj_ok((h), AIMSI_MAGIC_HEALTH)

/* Lower bound of id in h->e. */
static size_t lower(const aims_health *h, aims_instance id)
{
    size_t lo = 0;
    size_t hi = h->n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (h->e[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static hent *find(aims_health *h, aims_instance id)
{
    const size_t i = lower(h, id);
    return (i < h->n && h->e[i].id == id) ? &h->e[i] : NULL;
}

static int dirty(const hent *x)
{
    return x->fails > 0 || x->state != AIMS_HEALTH_STATE_HEALTHY || x->times > 0;
}

/* x was (was_dirty) before a change made under lock; count what it is now. */
static void dirty_note(aims_health *h, int was_dirty, const hent *x)
{
    const int now_dirty = dirty(x);
    if (was_dirty == now_dirty) {
        return;
    }
    h->ndirty = now_dirty ? h->ndirty + 1u : h->ndirty - 1u;
    atomic_store_explicit(&h->ndirty_pub, h->ndirty, memory_order_release);
}

static void set_change(const aims_health *h, change *c, aims_instance id,
                       aims_health_state from, aims_health_state to)
{
    c->fn = h->fn;
    c->user = h->fn_user;
    c->id = id;
    c->from = from;
    c->to = to;
}

/* End the earliest ejection that is due, if any. Caller holds lock. */
static int uneject_one(aims_health *h, uint64_t now, change *c)
{
    if (now < h->next_end) {
        return 0;
    }
    hent *due = NULL;
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < h->n; i++) {
        hent *const x = &h->e[i];
        if (x->state != AIMS_HEALTH_STATE_EJECTED) {
            continue;
        }
        if (x->eject_end_ns <= now && (due == NULL || x->eject_end_ns < due->eject_end_ns)) {
            due = x;
        }
    }
    if (due != NULL) {
        const int was = dirty(due);
        due->state = AIMS_HEALTH_STATE_HEALTHY;
        due->fails = 0;
        due->healthy_since = due->eject_end_ns;
        h->ejected--;
        dirty_note(h, was, due);
        set_change(h, c, due->id, AIMS_HEALTH_STATE_EJECTED, AIMS_HEALTH_STATE_HEALTHY);
    }
    for (size_t i = 0; i < h->n; i++) {
        const hent *const x = &h->e[i];
        if (x->state == AIMS_HEALTH_STATE_EJECTED && x->eject_end_ns < next) {
            next = x->eject_end_ns;
        }
    }
    h->next_end = next;
    return due != NULL;
}

static void fire(const change *c)
{
    if (c->fn != NULL) {
        c->fn(c->user, c->id, c->from, c->to);
    }
}

static uint64_t health_now(const aims_health *h)
{
    return aimsi_orch_now(h->clock, h->clock_user);
}

/* End every due ejection, one change per round (see the file comment).
 * Caller holds deliver. */
static void settle(aims_health *h)
{
    for (;;) {
        change c;
        pthread_mutex_lock(&h->lock);
        const int have = uneject_one(h, health_now(h), &c);
        pthread_mutex_unlock(&h->lock);
        if (!have) {
            return;
        }
        fire(&c);
    }
}

/* Forgive one ejection per full eject_ms spent healthy. */
static void decay(const aims_health *h, hent *x, uint64_t now)
{
    if (x->times == 0 || now <= x->healthy_since) {
        return;
    }
    const uint64_t period = (uint64_t)h->eject_ms * NS_PER_MS;
    const uint64_t k = (now - x->healthy_since) / period;
    x->times = k >= x->times ? 0 : x->times - k;
    x->healthy_since += k * period;
}

/* Most instances that may be ejected at once (at least one). */
static size_t max_ejected(const aims_health *h)
{
    const size_t m = (size_t)(((uint64_t)h->n * (uint64_t)h->max_ejected_pct) / 100u);
    return m > 0 ? m : 1u;
}

static void eject(aims_health *h, hent *x, uint64_t now)
{
    const uint64_t base = (uint64_t)h->eject_ms;
    const uint64_t cap = (uint64_t)h->max_eject_ms;
    const uint64_t grow_limit = (cap + base - 1u) / base; /* eject x this >= cap */
    if (x->times < grow_limit) {
        x->times++;
    }
    const uint64_t ms = x->times > cap / base ? cap : base * x->times;
    x->state = AIMS_HEALTH_STATE_EJECTED;
    x->eject_end_ns = now + ms * NS_PER_MS;
    x->fails = 0;
    h->ejected++;
    h->next_end = x->eject_end_ns < h->next_end ? x->eject_end_ns : h->next_end;
}

/* ---- lifecycle --------------------------------------------------------------------- */

aims_status aims_health_create(aims_health **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_health *h = aimsi_calloc(1, sizeof(*h));
    if (h == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "health_create: out of memory");
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    const int e1 = pthread_mutex_init(&h->lock, NULL);
    const int e2 = pthread_mutex_init(&h->deliver, &attr);
    pthread_mutexattr_destroy(&attr);
    if (e1 != 0 || e2 != 0) {
        if (e1 == 0) {
            pthread_mutex_destroy(&h->lock);
        }
        if (e2 == 0) {
            pthread_mutex_destroy(&h->deliver);
        }
        aimsi_free(h);
        return aimsi_err(NULL, AIMS_E_BACKEND, "health_create: pthread_mutex_init failed");
    }
    aimsi_obj_init(&h->obj, AIMSI_MAGIC_HEALTH);
    aimsi_param_set_defaults(&k_health_map, h);
    h->next_end = UINT64_MAX;
    *out = h;
    return AIMS_OK;
}

void aims_health_destroy(aims_health *h)
{
    if (!HEALTH_OK(h)) {
        return;
    }
    aimsi_free(h->e);
    pthread_mutex_destroy(&h->lock);
    pthread_mutex_destroy(&h->deliver);
    aimsi_obj_kill(&h->obj);
    aimsi_free(h);
}

aims_status aims_health_set_clock(aims_health *h, aims_clock_fn fn, void *user)
{
    if (!HEALTH_OK(h)) {
        return AIMSI_MISUSE("health handle");
    }
    h->clock = fn;
    h->clock_user = fn != NULL ? user : NULL;
    return AIMS_OK;
}

aims_status aims_health_set_param_i64(aims_health *h, aims_param param, int64_t value)
{
    if (!HEALTH_OK(h)) {
        return AIMSI_MISUSE("health handle");
    }
    const aimsi_param_field *f = NULL;
    AIMSI_TRY(aimsi_param_field_of(NULL, &k_health_map, param, AIMS_PARAM_TYPE_I64,
                                   (double)value, &f));
    pthread_mutex_lock(&h->lock);
    aimsi_param_store(h, f, value, 0.0);
    pthread_mutex_unlock(&h->lock);
    return AIMS_OK;
}

aims_status aims_health_set_change_fn(aims_health *h, aims_health_fn fn, void *user)
{
    if (!HEALTH_OK(h)) {
        return AIMSI_MISUSE("health handle");
    }
    pthread_mutex_lock(&h->lock);
    h->fn = fn;
    h->fn_user = fn != NULL ? user : NULL;
    pthread_mutex_unlock(&h->lock);
    return AIMS_OK;
}

/* ---- instances ------------------------------------------------------------------------ */

aims_status aims_health_add(aims_health *h, aims_instance id)
{
    if (!HEALTH_OK(h)) {
        return AIMSI_MISUSE("health handle");
    }
    if (id == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "health_add: instance id 0");
    }
    aims_status st = AIMS_OK;
    aimsi_orch_err err = {0};
    pthread_mutex_lock(&h->lock);
    const size_t i = lower(h, id);
    if (i < h->n && h->e[i].id == id) {
        st = aimsi_orch_defer(&err, AIMS_E_EXISTS, "health_add: instance %llu already tracked",
                              (unsigned long long)id);
    } else if (h->n == h->cap) {
        const size_t cap = h->cap == 0 ? 8u : h->cap * 2u;
        size_t bytes;
        hent *p = NULL;
        if (aimsi_mul_ok(cap, sizeof(hent), &bytes) == 0) {
            p = aimsi_realloc(h->e, bytes);
        }
        if (p == NULL) {
            st = aimsi_orch_defer(&err, AIMS_E_NOMEM, "health_add: out of memory");
        } else {
            h->e = p;
            h->cap = cap;
        }
    }
    if (st == AIMS_OK) {
        memmove(&h->e[i + 1], &h->e[i], (h->n - i) * sizeof(hent));
        memset(&h->e[i], 0, sizeof(hent));
        h->e[i].id = id;
        h->e[i].state = AIMS_HEALTH_STATE_HEALTHY;
        h->n++;
    }
    pthread_mutex_unlock(&h->lock);
    return aimsi_orch_raise(&err);
}

aims_status aims_health_remove(aims_health *h, aims_instance id)
{
    if (!HEALTH_OK(h)) {
        return AIMSI_MISUSE("health handle");
    }
    int found = 0;
    pthread_mutex_lock(&h->lock);
    const size_t i = lower(h, id);
    if (i < h->n && h->e[i].id == id) {
        found = 1;
        h->ejected -= h->e[i].state == AIMS_HEALTH_STATE_EJECTED;
        if (dirty(&h->e[i])) {
            h->ndirty--;
            atomic_store_explicit(&h->ndirty_pub, h->ndirty, memory_order_release);
        }
        memmove(&h->e[i], &h->e[i + 1], (h->n - i - 1) * sizeof(hent));
        h->n--;
    }
    pthread_mutex_unlock(&h->lock);
    if (!found) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "health_remove: instance %llu not tracked",
                         (unsigned long long)id);
    }
    return AIMS_OK;
}

/* Apply one report under lock; returns 1 when it ejected the instance. */
static int apply_report_raw(aims_health *h, hent *x, int ok, uint64_t now, change *c);

static int apply_report(aims_health *h, hent *x, int ok, uint64_t now, change *c)
{
    const int was = dirty(x);
    const int r = apply_report_raw(h, x, ok, now, c);
    dirty_note(h, was, x);
    return r;
}

static int apply_report_raw(aims_health *h, hent *x, int ok, uint64_t now, change *c)
{
    if (x->state == AIMS_HEALTH_STATE_EJECTED) {
        return 0; /* traffic that still reaches it does not extend the ejection */
    }
    decay(h, x, now);
    if (ok) {
        x->fails = 0;
        return 0;
    }
    if (x->fails < UINT32_MAX) {
        x->fails++;
    }
    if ((int64_t)x->fails < h->failures || h->ejected >= max_ejected(h)) {
        return 0;
    }
    eject(h, x, now);
    set_change(h, c, x->id, AIMS_HEALTH_STATE_HEALTHY, AIMS_HEALTH_STATE_EJECTED);
    return 1;
}

/* Fast path of report: when no ejection is due and this report cannot eject,
 * nothing can change state, so no callback can be owed and `deliver` (which
 * serialises changes) is not needed. Returns 1 when the report was handled. */
static int report_fast(aims_health *h, aims_instance id, int ok, int *found)
{
    int done = 0;
    pthread_mutex_lock(&h->lock);
    const uint64_t now = health_now(h);
    hent *const x = find(h, id);
    *found = x != NULL;
    if (now < h->next_end) {
        const int would_eject = x != NULL && !ok && x->state == AIMS_HEALTH_STATE_HEALTHY &&
                                (int64_t)x->fails + 1 >= h->failures &&
                                h->ejected < max_ejected(h);
        if (x == NULL) {
            done = 1;
        } else if (!would_eject) {
            change unused;
            (void)apply_report(h, x, ok, now, &unused);
            done = 1;
        }
    }
    pthread_mutex_unlock(&h->lock);
    return done;
}

aims_status aims_health_report(aims_health *h, aims_instance id, int ok)
{
    if (!HEALTH_OK(h)) {
        return AIMSI_MISUSE("health handle");
    }
    int found = 0;
    if (!report_fast(h, id, ok, &found)) {
        pthread_mutex_lock(&h->deliver);
        settle(h);
        change c;
        pthread_mutex_lock(&h->lock);
        hent *const x = find(h, id);
        found = x != NULL;
        const int have = x != NULL && apply_report(h, x, ok, health_now(h), &c);
        pthread_mutex_unlock(&h->lock);
        if (have) {
            fire(&c);
        }
        pthread_mutex_unlock(&h->deliver);
    }
    if (!found) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "health_report: instance %llu not tracked",
                         (unsigned long long)id);
    }
    return AIMS_OK;
}

void aimsi_health_report_ok(aims_health *h, aims_instance id)
{
    if (atomic_load_explicit(&h->ndirty_pub, memory_order_acquire) == 0) {
        return; /* nothing a success report could change (the file comment) */
    }
    (void)aims_health_report(h, id, 1);
}

/* Whether an ejection is due (then settle() must run under `deliver`). */
static int ejection_due(aims_health *h)
{
    pthread_mutex_lock(&h->lock);
    const int due = health_now(h) >= h->next_end;
    pthread_mutex_unlock(&h->lock);
    return due;
}

aims_health_state aims_health_state_of(aims_health *h, aims_instance id)
{
    if (!HEALTH_OK(h)) {
        return (aims_health_state)0;
    }
    if (ejection_due(h)) {
        pthread_mutex_lock(&h->deliver);
        settle(h);
        pthread_mutex_unlock(&h->deliver);
    }
    pthread_mutex_lock(&h->lock);
    const hent *const x = find(h, id);
    const aims_health_state s = x != NULL ? x->state : (aims_health_state)0;
    pthread_mutex_unlock(&h->lock);
    return s;
}

int aims_health_is_in_panic(aims_health *h)
{
    if (!HEALTH_OK(h)) {
        return 0;
    }
    if (ejection_due(h)) {
        pthread_mutex_lock(&h->deliver);
        settle(h);
        pthread_mutex_unlock(&h->deliver);
    }
    pthread_mutex_lock(&h->lock);
    const uint64_t healthy = (uint64_t)(h->n - h->ejected);
    const int panic = healthy * 100u < (uint64_t)h->panic_pct * (uint64_t)h->n;
    pthread_mutex_unlock(&h->lock);
    return panic;
}
