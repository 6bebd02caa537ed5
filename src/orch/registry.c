/*
 * registry.c -- service registry: instances with leases, a revision counter,
 * an event history and ordered watches (in the spirit of etcd's leases and
 * watch API, without the network).
 *
 * State. Live instances sit in one array sorted by id; ids come from a counter
 * that only grows, so appending keeps the order (= registration order) and a
 * lookup by id is a binary search. The strings of an instance (service and
 * address) never change, so they live in one reference-counted block ("rec")
 * shared by the instance and by every history event that mentions it: an event
 * costs no allocation, and a watcher can read the strings after the state lock
 * is gone.
 *
 * Revisions and history. Every event (PUT, DELETE, EXPIRE) bumps the revision
 * by one and lands in a fixed ring of the last AIMSI_REG_HISTORY events, indexed
 * by revision. watch(from) replays the ring from from+1; older is AIMS_E_RANGE
 * (compacted), like etcd's compact_revision.
 *
 * Leases. Expiry is lazy: every call first sweeps instances whose deadline
 * (last heartbeat + ttl) is <= now; an instance is live while now < deadline,
 * so it expires exactly at ttl, not before. A cached earliest deadline keeps the
 * sweep to one comparison when nothing can have expired.
 *
 * Delivery. Two locks: `lock` guards the state, `deliver` (recursive) orders the
 * callbacks and guards the watch list. A call changes the state under `lock`,
 * releases it, then takes `deliver` and hands out every event not delivered
 * yet, in revision order, copying batches out of the ring under `lock` and
 * running the callbacks with `lock` released. One thread delivers at a time, so
 * every watcher sees strictly increasing revisions even with many writers; a
 * writer whose events were handed out by another thread's loop finds nothing
 * left and returns (its events were delivered before its call returned). So,
 * unlike the header's general rule, a watch callback may run on another
 * registry-calling thread than the one that caused the event: strict revision
 * order across writers and "on the causing thread" cannot both hold once a
 * callback may write (it would wait for itself). A call made from inside a
 * callback (depth > 0) only queues: the outer loop picks its events up after
 * the current one, which keeps the order. Undelivered events
 * are never overwritten in the ring: a write that would do so fails with
 * AIMS_E_OVERLOADED (only reachable when more than 4096 events pile up inside
 * one callback), and the lazy sweep expires only as many instances as the ring
 * has room for (the rest are already invisible: every accessor checks the
 * deadline itself).
 *
 * Service names. "name" or "name@version" over [A-Za-z0-9_.@/-], 1..128 bytes;
 * we also require at most one '@', neither first nor last, so "name" matching
 * "every version" is well defined. A filter without '@' matches every instance
 * whose part before '@' equals it; a filter with '@' matches exactly.
 *
 * Errors are recorded thread-locally only (aimsi_err(NULL, ...)): the registry
 * is shared between threads and has no per-object error getter. Errors found
 * under the lock are formatted there and raised after the unlock, because
 * aimsi_err() may call the host's log callback.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "aimsi_orch.h"

#define AIMSI_REG_HISTORY 4096u
#define REG_BATCH 64u
#define SERVICE_MAX 128u
#define ADDRESS_MAX 256u
#define WEIGHT_MAX 10000u
#define TTL_MAX_MS 86400000u
#define NS_PER_MS 1000000u

/* Immutable strings of one instance, shared with history events. */
typedef struct rec {
    atomic_uint refs;
    size_t svc_len;
    char *address; /* points into data, after the service */
    char data[];   /* service NUL address NUL */
} rec;

typedef struct inst {
    aims_instance id;
    uint32_t weight;
    uint64_t ttl_ns;
    uint64_t deadline_ns;
    rec *rc;
} inst;

typedef struct event {
    uint64_t rev; /* 0: empty slot */
    aims_instance id;
    rec *rc;
    aims_event_kind kind;
} event;

typedef struct watch {
    uint64_t id;
    aims_watch_fn fn;
    void *user;
    uint64_t seen; /* last revision this watch has been offered */
    int dead;      /* unwatched from inside a callback; freed by the outer loop */
    int exact;     /* filter contains '@' */
    size_t flen;   /* 0: no filter */
    char filter[];
} watch;

struct aims_registry {
    aimsi_obj obj;
    pthread_mutex_t lock;
    pthread_mutex_t deliver;
    aims_clock_fn clock;
    void *clock_user;
    /* guarded by lock */
    inst *inst;
    size_t n, cap;
    aims_instance next_id;
    uint64_t next_deadline; /* no instance expires before this */
    _Atomic uint64_t revision;
    uint64_t delivered;     /* events handed to the delivery loop */
    event *ring;            /* AIMSI_REG_HISTORY slots, slot = rev % size */
    /* guarded by deliver */
    watch **watches;
    size_t nwatch, capwatch;
    uint64_t next_watch;
    unsigned depth;
    int has_dead;
    aimsi_pubtab pubs; /* published model versions (registry_pub.c) */
};

#define REG_OK(r) aimsi_obj_ok((r), AIMSI_MAGIC_REGISTRY)

/* ---- small helpers ------------------------------------------------------------ */

aims_status aimsi_orch_defer(aimsi_orch_err *e, aims_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

aims_status aimsi_orch_raise(const aimsi_orch_err *e)
{
    return e->code == AIMS_OK ? AIMS_OK : aimsi_err(NULL, e->code, "%s", e->msg);
}

static void rec_ref(rec *rc)
{
    atomic_fetch_add_explicit(&rc->refs, 1u, memory_order_relaxed);
}

static void rec_unref(rec *rc)
{
    if (rc != NULL && atomic_fetch_sub_explicit(&rc->refs, 1u, memory_order_acq_rel) == 1u) {
        aimsi_free(rc);
    }
}

static uint64_t rev_now(const aims_registry *r)
{
    return atomic_load_explicit(&r->revision, memory_order_relaxed);
}

static uint64_t reg_now(const aims_registry *r)
{
    return aimsi_orch_now(r->clock, r->clock_user);
}

/* Validate a service name or filter; on success *len is its length. */
static aims_status check_service(const char *s, size_t *len)
{
    if (s == NULL) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "registry: service is NULL");
    }
    const size_t n = strnlen(s, SERVICE_MAX + 1u);
    if (n == 0 || n > SERVICE_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "registry: service name length must be 1..%u",
                         SERVICE_MAX);
    }
    size_t ats = 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        const int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '/' ||
                       c == '-' || c == '@';
        if (!ok) {
            return aimsi_err(NULL, AIMS_E_INVAL, "registry: service name byte %zu (0x%02x) "
                             "is not in [A-Za-z0-9_.@/-]", i, (unsigned)(unsigned char)c);
        }
        ats += c == '@';
    }
    if (ats > 1 || s[0] == '@' || s[n - 1] == '@') {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "registry: service must be \"name\" or \"name@version\"");
    }
    *len = n;
    return AIMS_OK;
}

static size_t base_len(const rec *rc)
{
    const char *at = memchr(rc->data, '@', rc->svc_len);
    return at != NULL ? (size_t)(at - rc->data) : rc->svc_len;
}

static int matches(const char *filter, size_t flen, int exact, const rec *rc)
{
    if (flen == 0) {
        return 1;
    }
    const size_t len = exact ? rc->svc_len : base_len(rc);
    return len == flen && memcmp(filter, rc->data, flen) == 0;
}

/* Index of id in r->inst, or r->n when absent. Caller holds lock. */
static size_t find_inst(const aims_registry *r, aims_instance id)
{
    size_t lo = 0;
    size_t hi = r->n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (r->inst[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return (lo < r->n && r->inst[lo].id == id) ? lo : r->n;
}

/* Index of a live (unexpired) instance, or r->n. Caller holds lock. */
static size_t find_live(const aims_registry *r, aims_instance id, uint64_t now)
{
    const size_t i = find_inst(r, id);
    return (i < r->n && r->inst[i].deadline_ns > now) ? i : r->n;
}

/* Ring slots free for new events: slots of delivered events may be reused. */
static uint64_t ring_room(const aims_registry *r)
{
    return AIMSI_REG_HISTORY - (rev_now(r) - r->delivered);
}

/* Append one event. Caller holds lock and checked ring_room() > 0. */
static void push_event(aims_registry *r, aims_event_kind kind, aims_instance id, rec *rc)
{
    const uint64_t rev = rev_now(r) + 1u;
    event *slot = &r->ring[rev % AIMSI_REG_HISTORY];
    rec_unref(slot->rc);
    rec_ref(rc);
    slot->rev = rev;
    slot->id = id;
    slot->rc = rc;
    slot->kind = kind;
    atomic_store_explicit(&r->revision, rev, memory_order_relaxed);
}

/* Drop the instance at index i (its rec reference goes with it). */
static void remove_at(aims_registry *r, size_t i)
{
    rec_unref(r->inst[i].rc);
    memmove(&r->inst[i], &r->inst[i + 1], (r->n - i - 1) * sizeof(inst));
    r->n--;
}

/* Expire instances whose deadline passed, as far as the ring has room.
 * Returns the number expired. Caller holds lock. */
static size_t sweep_locked(aims_registry *r, uint64_t now)
{
    if (now < r->next_deadline) {
        return 0;
    }
    size_t expired = 0;
    size_t w = 0;
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < r->n; i++) {
        inst *const it = &r->inst[i];
        if (it->deadline_ns <= now && ring_room(r) > 0) {
            push_event(r, AIMS_EVENT_EXPIRE, it->id, it->rc);
            rec_unref(it->rc);
            expired++;
            continue;
        }
        next = it->deadline_ns < next ? it->deadline_ns : next;
        r->inst[w++] = *it;
    }
    r->n = w;
    r->next_deadline = next;
    return expired;
}

/* ---- delivery ------------------------------------------------------------------- */

static void free_dead_watches(aims_registry *r)
{
    size_t w = 0;
    for (size_t i = 0; i < r->nwatch; i++) {
        if (r->watches[i]->dead) {
            aimsi_free(r->watches[i]);
        } else {
            r->watches[w++] = r->watches[i];
        }
    }
    r->nwatch = w;
    r->has_dead = 0;
}

/* Offer one event to every watch, in list order. The list may grow or get
 * dead entries while a callback runs (same thread), so it is re-read. */
static void offer(aims_registry *r, const event *e)
{
    for (size_t i = 0; i < r->nwatch; i++) {
        watch *const w = r->watches[i];
        if (w->dead || e->rev <= w->seen) {
            continue;
        }
        w->seen = e->rev;
        if (matches(w->filter, w->flen, w->exact, e->rc)) {
            w->fn(w->user, e->rev, e->kind, e->id, e->rc->data, e->rc->address);
        }
    }
}

/* Hand out every undelivered event, in revision order (see the file comment). */
static void deliver(aims_registry *r)
{
    pthread_mutex_lock(&r->deliver);
    if (r->depth > 0) {
        pthread_mutex_unlock(&r->deliver);
        return;
    }
    r->depth = 1;
    for (;;) {
        event batch[REG_BATCH];
        size_t k = 0;
        pthread_mutex_lock(&r->lock);
        const uint64_t rev = rev_now(r);
        while (r->delivered < rev && k < REG_BATCH) {
            r->delivered++;
            batch[k] = r->ring[r->delivered % AIMSI_REG_HISTORY];
            rec_ref(batch[k].rc);
            k++;
        }
        pthread_mutex_unlock(&r->lock);
        if (k == 0) {
            break;
        }
        for (size_t i = 0; i < k; i++) {
            offer(r, &batch[i]);
            rec_unref(batch[i].rc);
        }
    }
    if (r->has_dead) {
        free_dead_watches(r);
    }
    r->depth = 0;
    pthread_mutex_unlock(&r->deliver);
}

/* Lazy sweep at the start of a call. Caller holds lock; returns events made. */
static size_t lazy_sweep(aims_registry *r, uint64_t *now)
{
    *now = reg_now(r);
    return sweep_locked(r, *now);
}

/* ---- lifecycle ------------------------------------------------------------------ */

aims_status aims_registry_create(aims_registry **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_registry *r = aimsi_calloc(1, sizeof(*r));
    if (r == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "registry_create: out of memory");
    }
    r->ring = aimsi_calloc(AIMSI_REG_HISTORY, sizeof(event));
    if (r->ring == NULL) {
        aimsi_free(r);
        return aimsi_err(NULL, AIMS_E_NOMEM, "registry_create: out of memory (history)");
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    const int e1 = pthread_mutex_init(&r->lock, NULL);
    const int e2 = pthread_mutex_init(&r->deliver, &attr);
    pthread_mutexattr_destroy(&attr);
    const int e3 = e1 == 0 && e2 == 0 ? aimsi_pubtab_init(&r->pubs) : -1;
    if (e1 != 0 || e2 != 0 || e3 != 0) {
        if (e1 == 0) {
            pthread_mutex_destroy(&r->lock);
        }
        if (e2 == 0) {
            pthread_mutex_destroy(&r->deliver);
        }
        aimsi_free(r->ring);
        aimsi_free(r);
        return aimsi_err(NULL, AIMS_E_BACKEND, "registry_create: pthread_mutex_init failed");
    }
    aimsi_obj_init(&r->obj, AIMSI_MAGIC_REGISTRY);
    r->next_id = 1;
    r->next_watch = 1;
    r->next_deadline = UINT64_MAX;
    atomic_init(&r->revision, 0);
    *out = r;
    return AIMS_OK;
}

void aims_registry_destroy(aims_registry *r)
{
    if (!REG_OK(r)) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        rec_unref(r->inst[i].rc);
    }
    for (size_t i = 0; i < AIMSI_REG_HISTORY; i++) {
        rec_unref(r->ring[i].rc);
    }
    for (size_t i = 0; i < r->nwatch; i++) {
        aimsi_free(r->watches[i]);
    }
    aimsi_free(r->watches);
    aimsi_free(r->inst);
    aimsi_free(r->ring);
    aimsi_pubtab_fini(&r->pubs);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->deliver);
    aimsi_obj_kill(&r->obj);
    aimsi_free(r);
}

aimsi_pubtab *aimsi_registry_pubs(aims_registry *r)
{
    return REG_OK(r) ? &r->pubs : NULL;
}

aims_status aims_registry_set_clock(aims_registry *r, aims_clock_fn fn, void *user)
{
    if (!REG_OK(r)) {
        return AIMSI_MISUSE("registry handle");
    }
    r->clock = fn;
    r->clock_user = fn != NULL ? user : NULL;
    return AIMS_OK;
}

/* ---- instances ------------------------------------------------------------------ */

static aims_status check_register_args(const char *service, const char *address,
                                       uint32_t weight, uint64_t ttl_ms, size_t *svc_len,
                                       size_t *addr_len)
{
    AIMSI_TRY(check_service(service, svc_len));
    if (address == NULL) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "registry_register: address is NULL");
    }
    *addr_len = strnlen(address, ADDRESS_MAX + 1u);
    if (*addr_len == 0 || *addr_len > ADDRESS_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "registry_register: address length must be 1..%u",
                         ADDRESS_MAX);
    }
    if (weight == 0 || weight > WEIGHT_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "registry_register: weight %u not in 1..%u",
                         (unsigned)weight, WEIGHT_MAX);
    }
    if (ttl_ms == 0 || ttl_ms > TTL_MAX_MS) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "registry_register: ttl_ms %llu not in 1..%u (1 ms .. 1 day)",
                         (unsigned long long)ttl_ms, TTL_MAX_MS);
    }
    return AIMS_OK;
}

static rec *rec_new(const char *service, size_t svc_len, const char *address, size_t addr_len)
{
    rec *rc = aimsi_malloc(sizeof(rec) + svc_len + addr_len + 2u);
    if (rc == NULL) {
        return NULL;
    }
    atomic_init(&rc->refs, 1u);
    rc->svc_len = svc_len;
    memcpy(rc->data, service, svc_len);
    rc->data[svc_len] = '\0';
    rc->address = rc->data + svc_len + 1u;
    memcpy(rc->address, address, addr_len);
    rc->address[addr_len] = '\0';
    return rc;
}

/* Room for one more instance. Caller holds lock. */
static aims_status reserve_inst(aims_registry *r, aimsi_orch_err *err)
{
    if (r->n < r->cap) {
        return AIMS_OK;
    }
    const size_t cap = r->cap == 0 ? 16u : r->cap * 2u;
    size_t bytes;
    if (aimsi_mul_ok(cap, sizeof(inst), &bytes) != 0) {
        return aimsi_orch_defer(err, AIMS_E_NOMEM, "registry_register: too many instances");
    }
    inst *const p = aimsi_realloc(r->inst, bytes);
    if (p == NULL) {
        return aimsi_orch_defer(err, AIMS_E_NOMEM, "registry_register: out of memory");
    }
    r->inst = p;
    r->cap = cap;
    return AIMS_OK;
}

static aims_status overloaded(aimsi_orch_err *err, const char *fn)
{
    return aimsi_orch_defer(err, AIMS_E_OVERLOADED,
                     "%s: %u events not yet delivered to watchers (writes from a callback?)",
                     fn, AIMSI_REG_HISTORY);
}

aims_status aims_registry_register(aims_registry *r, const char *service, const char *address,
                                   uint32_t weight, uint64_t ttl_ms, aims_instance *out_id)
{
    if (!REG_OK(r) || out_id == NULL) {
        return AIMSI_MISUSE(r == NULL || !REG_OK(r) ? "registry handle" : "out_id is NULL");
    }
    size_t svc_len = 0;
    size_t addr_len = 0;
    AIMSI_TRY(check_register_args(service, address, weight, ttl_ms, &svc_len, &addr_len));
    rec *const rc = rec_new(service, svc_len, address, addr_len);
    if (rc == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "registry_register: out of memory");
    }
    uint64_t now;
    aimsi_orch_err err = {0};
    pthread_mutex_lock(&r->lock);
    const size_t swept = lazy_sweep(r, &now);
    aims_status rc_st = reserve_inst(r, &err);
    if (rc_st == AIMS_OK && ring_room(r) == 0) {
        rc_st = overloaded(&err, "registry_register");
    }
    aims_instance id = 0;
    if (rc_st == AIMS_OK) {
        id = r->next_id++;
        inst *const it = &r->inst[r->n++];
        it->id = id;
        it->weight = weight;
        it->ttl_ns = ttl_ms * NS_PER_MS;
        it->deadline_ns = now + it->ttl_ns;
        it->rc = rc;
        r->next_deadline = it->deadline_ns < r->next_deadline ? it->deadline_ns
                                                               : r->next_deadline;
        push_event(r, AIMS_EVENT_PUT, id, rc);
    }
    pthread_mutex_unlock(&r->lock);
    if (rc_st != AIMS_OK) {
        rec_unref(rc);
        if (swept > 0) {
            deliver(r);
        }
        return aimsi_orch_raise(&err);
    }
    deliver(r);
    *out_id = id;
    return AIMS_OK;
}

aims_status aims_registry_heartbeat(aims_registry *r, aims_instance id)
{
    if (!REG_OK(r)) {
        return AIMSI_MISUSE("registry handle");
    }
    uint64_t now;
    pthread_mutex_lock(&r->lock);
    const size_t swept = lazy_sweep(r, &now);
    const size_t i = find_live(r, id, now);
    const int found = i < r->n;
    if (found) {
        r->inst[i].deadline_ns = now + r->inst[i].ttl_ns;
    }
    pthread_mutex_unlock(&r->lock);
    if (swept > 0) {
        deliver(r);
    }
    if (!found) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND,
                         "registry_heartbeat: instance %llu unknown or expired",
                         (unsigned long long)id);
    }
    return AIMS_OK;
}

/* Shared body of set_weight (PUT) and deregister (DELETE). */
static aims_status change(aims_registry *r, aims_instance id, uint32_t weight,
                          aims_event_kind kind, const char *fn)
{
    uint64_t now;
    aimsi_orch_err err = {0};
    pthread_mutex_lock(&r->lock);
    const size_t swept = lazy_sweep(r, &now);
    const size_t i = find_live(r, id, now);
    if (i == r->n) {
        aimsi_orch_defer(&err, AIMS_E_NOTFOUND, "%s: instance %llu unknown or expired", fn,
                         (unsigned long long)id);
    } else if (ring_room(r) == 0) {
        overloaded(&err, fn);
    } else if (kind == AIMS_EVENT_PUT) {
        r->inst[i].weight = weight;
        push_event(r, AIMS_EVENT_PUT, id, r->inst[i].rc);
    } else {
        push_event(r, AIMS_EVENT_DELETE, id, r->inst[i].rc);
        remove_at(r, i);
    }
    pthread_mutex_unlock(&r->lock);
    if (swept > 0 || err.code == AIMS_OK) {
        deliver(r);
    }
    return aimsi_orch_raise(&err);
}

aims_status aims_registry_set_weight(aims_registry *r, aims_instance id, uint32_t weight)
{
    if (!REG_OK(r)) {
        return AIMSI_MISUSE("registry handle");
    }
    if (weight == 0 || weight > WEIGHT_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "registry_set_weight: weight %u not in 1..%u",
                         (unsigned)weight, WEIGHT_MAX);
    }
    return change(r, id, weight, AIMS_EVENT_PUT, "registry_set_weight");
}

aims_status aims_registry_deregister(aims_registry *r, aims_instance id)
{
    if (!REG_OK(r)) {
        return AIMSI_MISUSE("registry handle");
    }
    return change(r, id, 0, AIMS_EVENT_DELETE, "registry_deregister");
}

aims_status aims_registry_sweep(aims_registry *r, size_t *out_expired)
{
    if (!REG_OK(r)) {
        return AIMSI_MISUSE("registry handle");
    }
    /* Loop because one round expires only as many as the ring has room for. */
    size_t total = 0;
    for (;;) {
        uint64_t now;
        pthread_mutex_lock(&r->lock);
        const size_t swept = lazy_sweep(r, &now);
        pthread_mutex_unlock(&r->lock);
        if (swept == 0) {
            break;
        }
        total += swept;
        deliver(r);
    }
    if (out_expired != NULL) {
        *out_expired = total;
    }
    return AIMS_OK;
}

uint64_t aims_registry_revision(const aims_registry *r)
{
    if (!REG_OK(r)) {
        return 0;
    }
    return atomic_load_explicit(&r->revision, memory_order_acquire);
}

/* ---- queries --------------------------------------------------------------------- */

aims_status aims_registry_lookup(aims_registry *r, const char *service, aims_instance *out_ids,
                                 size_t cap, size_t *out_n)
{
    if (!REG_OK(r) || out_n == NULL || (out_ids == NULL && cap > 0)) {
        return AIMSI_MISUSE(!REG_OK(r) ? "registry handle" : "out_n/out_ids is NULL");
    }
    size_t flen = 0;
    AIMSI_TRY(check_service(service, &flen));
    const int exact = memchr(service, '@', flen) != NULL;
    uint64_t now;
    pthread_mutex_lock(&r->lock);
    const size_t swept = lazy_sweep(r, &now);
    size_t count = 0;
    for (size_t i = 0; i < r->n; i++) {
        count += r->inst[i].deadline_ns > now && matches(service, flen, exact, r->inst[i].rc);
    }
    if (count <= cap) {
        size_t k = 0;
        for (size_t i = 0; i < r->n; i++) {
            if (r->inst[i].deadline_ns > now && matches(service, flen, exact, r->inst[i].rc)) {
                out_ids[k++] = r->inst[i].id;
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
    if (swept > 0) {
        deliver(r);
    }
    *out_n = count;
    if (count > cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "registry_lookup: %zu instances, cap %zu", count,
                         cap);
    }
    return AIMS_OK;
}

aims_status aims_registry_get_address(aims_registry *r, aims_instance id, char *buf, size_t cap,
                                      size_t *out_len)
{
    if (!REG_OK(r) || out_len == NULL || (buf == NULL && cap > 0)) {
        return AIMSI_MISUSE(!REG_OK(r) ? "registry handle" : "out_len/buf is NULL");
    }
    uint64_t now;
    aimsi_orch_err err = {0};
    pthread_mutex_lock(&r->lock);
    const size_t swept = lazy_sweep(r, &now);
    const size_t i = find_live(r, id, now);
    size_t len = 0;
    if (i == r->n) {
        aimsi_orch_defer(&err, AIMS_E_NOTFOUND, "registry_address: instance %llu unknown",
                         (unsigned long long)id);
    } else {
        len = strlen(r->inst[i].rc->address);
        if (len >= cap) {
            aimsi_orch_defer(&err, AIMS_E_RANGE, "registry_address: needs %zu bytes, cap %zu",
                             len + 1u, cap);
        } else {
            memcpy(buf, r->inst[i].rc->address, len + 1u);
        }
    }
    pthread_mutex_unlock(&r->lock);
    if (swept > 0) {
        deliver(r);
    }
    if (err.code != AIMS_E_NOTFOUND) {
        *out_len = len;
    }
    return aimsi_orch_raise(&err);
}

uint32_t aims_registry_weight(aims_registry *r, aims_instance id)
{
    if (!REG_OK(r)) {
        return 0;
    }
    uint64_t now;
    pthread_mutex_lock(&r->lock);
    const size_t swept = lazy_sweep(r, &now);
    const size_t i = find_live(r, id, now);
    const uint32_t w = i < r->n ? r->inst[i].weight : 0u;
    pthread_mutex_unlock(&r->lock);
    if (swept > 0) {
        deliver(r);
    }
    return w;
}

/* ---- watches ----------------------------------------------------------------------- */

static watch *watch_new(const char *service, aims_watch_fn fn, void *user, aims_status *st)
{
    size_t flen = 0;
    if (service != NULL) {
        *st = check_service(service, &flen);
        if (*st != AIMS_OK) {
            return NULL;
        }
    }
    watch *const w = aimsi_calloc(1, sizeof(watch) + flen + 1u);
    if (w == NULL) {
        *st = aimsi_err(NULL, AIMS_E_NOMEM, "registry_watch: out of memory");
        return NULL;
    }
    w->fn = fn;
    w->user = user;
    w->flen = flen;
    if (flen > 0) {
        memcpy(w->filter, service, flen);
        w->exact = memchr(service, '@', flen) != NULL;
    }
    *st = AIMS_OK;
    return w;
}

/* Under both locks: check the history covers from, copy the events to replay
 * (from+1 .. delivered) and attach w. On failure nothing is attached. */
static aims_status attach(aims_registry *r, watch *w, uint64_t from, event **replay,
                          size_t *nreplay, aimsi_orch_err *err)
{
    const uint64_t rev = rev_now(r);
    const uint64_t oldest = rev > AIMSI_REG_HISTORY ? rev - AIMSI_REG_HISTORY + 1u : 1u;
    if (from + 1u < oldest) {
        return aimsi_orch_defer(err, AIMS_E_RANGE,
                                "registry_watch: revision %llu compacted (history starts at "
                                "%llu)", (unsigned long long)from, (unsigned long long)oldest);
    }
    if (r->nwatch == r->capwatch) {
        const size_t cap = r->capwatch == 0 ? 4u : r->capwatch * 2u;
        watch **const p = aimsi_realloc(r->watches, cap * sizeof(*p));
        if (p == NULL) {
            return aimsi_orch_defer(err, AIMS_E_NOMEM, "registry_watch: out of memory");
        }
        r->watches = p;
        r->capwatch = cap;
    }
    const size_t n = from < r->delivered ? (size_t)(r->delivered - from) : 0u;
    event *ev = NULL;
    if (n > 0) {
        ev = aimsi_calloc(n, sizeof(event));
        if (ev == NULL) {
            return aimsi_orch_defer(err, AIMS_E_NOMEM,
                                    "registry_watch: out of memory (replay)");
        }
        for (size_t i = 0; i < n; i++) {
            ev[i] = r->ring[(from + 1u + i) % AIMSI_REG_HISTORY];
            rec_ref(ev[i].rc);
        }
    }
    w->seen = from > r->delivered ? from : r->delivered;
    w->id = r->next_watch++;
    r->watches[r->nwatch++] = w;
    *replay = ev;
    *nreplay = n;
    return AIMS_OK;
}

aims_status aims_registry_watch(aims_registry *r, const char *service, uint64_t from_revision,
                                aims_watch_fn fn, void *user, uint64_t *out_watch)
{
    if (!REG_OK(r) || fn == NULL || out_watch == NULL) {
        return AIMSI_MISUSE(!REG_OK(r) ? "registry handle" : "fn/out_watch is NULL");
    }
    aims_status st;
    watch *const w = watch_new(service, fn, user, &st);
    if (w == NULL) {
        return st;
    }
    event *replay = NULL;
    size_t nreplay = 0;
    uint64_t now;
    aimsi_orch_err err = {0};
    pthread_mutex_lock(&r->deliver);
    pthread_mutex_lock(&r->lock);
    const size_t swept = lazy_sweep(r, &now);
    st = attach(r, w, from_revision, &replay, &nreplay, &err);
    pthread_mutex_unlock(&r->lock);
    if (st != AIMS_OK) {
        pthread_mutex_unlock(&r->deliver);
        aimsi_free(w);
        if (swept > 0) {
            deliver(r);
        }
        return aimsi_orch_raise(&err);
    }
    *out_watch = w->id;
    /* Replay with depth raised: writes from these callbacks queue behind. */
    r->depth++;
    for (size_t i = 0; i < nreplay; i++) {
        if (!w->dead && matches(w->filter, w->flen, w->exact, replay[i].rc)) {
            fn(user, replay[i].rev, replay[i].kind, replay[i].id, replay[i].rc->data,
               replay[i].rc->address);
        }
        rec_unref(replay[i].rc);
    }
    r->depth--;
    aimsi_free(replay);
    pthread_mutex_unlock(&r->deliver);
    deliver(r);
    return AIMS_OK;
}

aims_status aims_registry_unwatch(aims_registry *r, uint64_t watch_id)
{
    if (!REG_OK(r)) {
        return AIMSI_MISUSE("registry handle");
    }
    /* Taking `deliver` waits for a delivery running on another thread; on the
     * delivering thread itself (recursive) depth > 0 and the entry is only
     * marked, so the loop iterating the list stays valid. */
    pthread_mutex_lock(&r->deliver);
    int found = 0;
    for (size_t i = 0; i < r->nwatch; i++) {
        watch *const w = r->watches[i];
        if (w->id != watch_id || w->dead) {
            continue;
        }
        if (r->depth > 0) {
            w->dead = 1;
            r->has_dead = 1;
        } else {
            memmove(&r->watches[i], &r->watches[i + 1], (r->nwatch - i - 1) * sizeof(w));
            r->nwatch--;
            aimsi_free(w);
        }
        found = 1;
        break;
    }
    pthread_mutex_unlock(&r->deliver);
    if (!found) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "registry_unwatch: no watch %llu",
                         (unsigned long long)watch_id);
    }
    return AIMS_OK;
}
