/*
 * jobs_lease.c -- job ownership for durable training jobs (aimsi_jobs.h):
 * fencing tokens, leases, the status record, and the lease thread that
 * renews this instance's leases and adopts jobs whose owner died.
 *
 * Why tokens as files. The store's put_new (link(2) in the directory
 * backend) is the one atomic "create if absent" every backend can offer, so
 * a claim is "create tok.<N+1>": of two instances that see the same expired
 * lease exactly one creates it, and the job's owner is whoever holds the
 * highest N. A writer checks that N is still its own before every write
 * (aimsi_jobs_fence), so a process that was paused past its lease and comes
 * back finds a higher token and stops, with a message naming the new owner.
 * The check and the write are two steps; a zombie may slip one checkpoint in
 * between, which is harmless by construction: training is deterministic
 * (same seed, data and step -> same bytes), so any checkpoint of step S is
 * the same state whoever wrote it, and the result is created only once.
 *
 * Expiry. The lease holds a wall-clock expiry (processes on one machine or
 * hosts with synchronized clocks compare it), renewed every lease_ms / 3. A
 * job whose highest token has no lease yet expires by the claim's own first
 * lease (written into tok.<N>), so a claimer that died right after claiming
 * does not strand the job.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../codec/aimsi_frame.h"
#include "../aimsi_msg.h"
#include "jobs_impl.h"

int64_t aimsi_jobs_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void aimsi_jobs_dirname(const char *id, size_t id_len, char dir[JOBS_DIR_MAX])
{
    static const char hex[] = "0123456789abcdef";
    dir[0] = 'j';
    dir[1] = '/';
    size_t k = 2;
    for (size_t i = 0; i < id_len && i < JOBS_ID_MAX; i++) {
        const unsigned char c = (unsigned char)id[i];
        dir[k++] = hex[c >> 4];
        dir[k++] = hex[c & 15];
    }
    dir[k] = '\0';
}

void aimsi_jobs_path(const char *dir, const char *leaf, char *out)
{
    snprintf(out, AIMSI_STORE_NAME_MAX + 1, "%s/%s", dir, leaf);
}

/* ---- tokens --------------------------------------------------------------------------------- */

static int max_token_cb(void *user, const char *name)
{
    uint64_t *max = user;
    if (strncmp(name, "tok.", 4) == 0) {
        char *end = NULL;
        const unsigned long long v = strtoull(name + 4, &end, 10);
        if (end != name + 4 && *end == '\0' && v > *max) {
            *max = v;
        }
    }
    return 0;
}

aims_status aimsi_jobs_token_now(aimsi_jobs *J, const char *dir, uint64_t *out)
{
    uint64_t max = 0;
    AIMSI_TRY(aimsi_store_list(J->st, dir, max_token_cb, &max));
    *out = max;
    return AIMS_OK;
}

/* Parse "key=value" lines; calls fn for each pair (values end at '\n'). */
typedef void (*kv_fn)(void *user, const char *k, size_t klen, const char *v, size_t vlen);

static void parse_lines(const char *p, size_t n, kv_fn fn, void *user)
{
    size_t i = 0;
    while (i < n) {
        const char *line = p + i;
        const char *nl = memchr(line, '\n', n - i);
        const size_t len = nl != NULL ? (size_t)(nl - line) : n - i;
        const char *eq = memchr(line, '=', len);
        if (eq != NULL) {
            fn(user, line, (size_t)(eq - line), eq + 1, len - (size_t)(eq - line) - 1);
        }
        i += len + 1;
    }
}

static int key_is(const char *k, size_t klen, const char *want)
{
    return strlen(want) == klen && memcmp(k, want, klen) == 0;
}

static int64_t to_i64(const char *v, size_t vlen)
{
    char buf[32];
    const size_t n = vlen < sizeof buf - 1 ? vlen : sizeof buf - 1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static double to_f64(const char *v, size_t vlen)
{
    char buf[64];
    const size_t n = vlen < sizeof buf - 1 ? vlen : sizeof buf - 1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return strtod(buf, NULL);
}

static void copy_str(char *dst, size_t cap, const char *v, size_t vlen)
{
    const size_t n = vlen < cap - 1 ? vlen : cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* A lease (or a claim's first lease). */
typedef struct lease {
    uint64_t token;
    int64_t expires_ms;
    int64_t step;
    char owner[JOBS_INSTANCE_MAX];
} lease;

static void lease_kv(void *user, const char *k, size_t klen, const char *v, size_t vlen)
{
    lease *l = user;
    if (key_is(k, klen, "token")) {
        l->token = (uint64_t)to_i64(v, vlen);
    } else if (key_is(k, klen, "expires_ms")) {
        l->expires_ms = to_i64(v, vlen);
    } else if (key_is(k, klen, "step")) {
        l->step = to_i64(v, vlen);
    } else if (key_is(k, klen, "owner")) {
        copy_str(l->owner, sizeof l->owner, v, vlen);
    }
}

static aims_status lease_read(aimsi_jobs *J, const char *dir, const char *leaf, lease *l)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, leaf, name);
    void *p = NULL;
    size_t n = 0;
    memset(l, 0, sizeof *l);
    AIMSI_TRY(aimsi_store_get(J->st, name, &p, &n));
    parse_lines(p, n, lease_kv, l);
    aimsi_free(p);
    return AIMS_OK;
}

static int lease_text(char *buf, size_t cap, uint64_t token, const char *owner, int64_t exp,
                      int64_t step)
{
    return snprintf(buf, cap, "token=%" PRIu64 "\nowner=%s\nexpires_ms=%" PRId64 "\nstep=%" PRId64
                              "\n", token, owner, exp, step);
}

aims_status aimsi_jobs_claim(aimsi_jobs *J, const char *dir, uint64_t n)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    char leaf[40];
    snprintf(leaf, sizeof leaf, "tok.%010" PRIu64, n);
    aimsi_jobs_path(dir, leaf, name);
    char text[256];
    const int len = lease_text(text, sizeof text, n, J->instance,
                               aimsi_jobs_wall_ms() + J->lease_ms, 0);
    return aimsi_store_put_new(J->st, name, text, (size_t)len);
}

aims_status aimsi_jobs_fence(aimsi_jobs *J, const char *dir, uint64_t token)
{
    uint64_t now = 0;
    AIMSI_TRY(aimsi_jobs_token_now(J, dir, &now));
    if (now == token) {
        return AIMS_OK;
    }
    lease l;
    char leaf[40];
    snprintf(leaf, sizeof leaf, "tok.%010" PRIu64, now);
    const int known = lease_read(J, dir, leaf, &l) == AIMS_OK;
    pthread_mutex_lock(&J->mu);
    for (jobs_held *h = J->held; h != NULL; h = h->next) {
        if (strcmp(h->dir, dir) == 0 && h->token == token) {
            atomic_store(&h->lost, 1);
        }
    }
    pthread_mutex_unlock(&J->mu);
    return aimsi_err(NULL, AIMS_E_STATE, "fenced: this instance (%s, token %" PRIu64 ") lost "
                     "the job's lease; instance %s holds it now (token %" PRIu64 ")",
                     J->instance, token, known ? l.owner : "?", now);
}

aims_status aimsi_jobs_lease_write(aimsi_jobs *J, const char *dir, uint64_t token, int64_t step,
                                   int release)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "lease", name);
    char text[256];
    const int64_t now = aimsi_jobs_wall_ms();
    const int len = lease_text(text, sizeof text, token, J->instance,
                               release ? now - 1 : now + J->lease_ms, step);
    return aimsi_store_put(J->st, name, text, (size_t)len);
}

/* ---- the status record ---------------------------------------------------------------------- */

void aimsi_jobs_status_init(jobs_status *s)
{
    memset(s, 0, sizeof *s);
    s->ckpt_step = -1;
    s->resumed_from = -1;
    s->lost_steps = -1;
    s->loss = NAN;
    s->metric = NAN;
}

static void status_kv(void *user, const char *k, size_t klen, const char *v, size_t vlen)
{
    jobs_status *s = user;
    if (key_is(k, klen, "state")) {
        s->state = (int)to_i64(v, vlen);
    } else if (key_is(k, klen, "owner")) {
        copy_str(s->owner, sizeof s->owner, v, vlen);
    } else if (key_is(k, klen, "token")) {
        s->token = (uint64_t)to_i64(v, vlen);
    } else if (key_is(k, klen, "epoch")) {
        s->epoch = to_i64(v, vlen);
    } else if (key_is(k, klen, "step")) {
        s->step = to_i64(v, vlen);
    } else if (key_is(k, klen, "ckpt_step")) {
        s->ckpt_step = to_i64(v, vlen);
    } else if (key_is(k, klen, "resumed_from")) {
        s->resumed_from = to_i64(v, vlen);
    } else if (key_is(k, klen, "lost_steps")) {
        s->lost_steps = to_i64(v, vlen);
    } else if (key_is(k, klen, "adoptions")) {
        s->adoptions = to_i64(v, vlen);
    } else if (key_is(k, klen, "ended_ms")) {
        s->ended_ms = to_i64(v, vlen);
    } else if (key_is(k, klen, "ckpt_every")) {
        s->ckpt_every = to_i64(v, vlen);
    } else if (key_is(k, klen, "loss")) {
        s->loss = to_f64(v, vlen);
    } else if (key_is(k, klen, "metric")) {
        s->metric = to_f64(v, vlen);
    } else if (key_is(k, klen, "error")) {
        copy_str(s->err, sizeof s->err, v, vlen);
    }
}

aims_status aimsi_jobs_status_read(aimsi_jobs *J, const char *dir, jobs_status *s)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "status", name);
    void *p = NULL;
    size_t n = 0;
    AIMSI_TRY(aimsi_store_get(J->st, name, &p, &n));
    aimsi_jobs_status_init(s);
    parse_lines(p, n, status_kv, s);
    aimsi_free(p);
    return AIMS_OK;
}

aims_status aimsi_jobs_status_write(aimsi_jobs *J, const char *dir, const jobs_status *s)
{
    char err[JOBS_ERR_MAX];
    snprintf(err, sizeof err, "%s", s->err);
    for (char *c = err; *c != '\0'; c++) {
        *c = *c == '\n' ? ' ' : *c; /* one line per key */
    }
    char text[1024];
    const int len = snprintf(
        text, sizeof text,
        "state=%d\nowner=%s\ntoken=%" PRIu64 "\nepoch=%" PRId64 "\nstep=%" PRId64
        "\nckpt_step=%" PRId64 "\nresumed_from=%" PRId64 "\nlost_steps=%" PRId64
        "\nadoptions=%" PRId64 "\nckpt_every=%" PRId64 "\nended_ms=%" PRId64
        "\nloss=%.9g\nmetric=%.9g\nerror=%s\n",
        s->state, s->owner, s->token, s->epoch, s->step, s->ckpt_step, s->resumed_from,
        s->lost_steps, s->adoptions, s->ckpt_every, s->ended_ms, s->loss, s->metric, err);
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "status", name);
    return aimsi_store_put(J->st, name, text, len > 0 && (size_t)len < sizeof text
                                                  ? (size_t)len : sizeof text - 1);
}

/* ---- held jobs ------------------------------------------------------------------------------ */

jobs_held *aimsi_jobs_held_find(aimsi_jobs *J, const char *id, size_t id_len)
{
    for (jobs_held *h = J->held; h != NULL; h = h->next) {
        if (h->id_len == id_len && memcmp(h->id, id, id_len) == 0) {
            return h;
        }
    }
    return NULL;
}

aims_status aimsi_jobs_held_add(aimsi_jobs *J, const char *id, size_t id_len, uint64_t token)
{
    if (id_len == 0 || id_len > JOBS_ID_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "jobs: job id of %zu bytes", id_len);
    }
    jobs_held *h = aimsi_calloc(1, sizeof *h);
    if (h == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "jobs: no memory");
    }
    memcpy(h->id, id, id_len);
    h->id_len = id_len;
    aimsi_jobs_dirname(id, id_len, h->dir);
    h->token = token;
    atomic_init(&h->step, 0);
    atomic_init(&h->lost, 0);
    atomic_init(&h->cancel, 0);
    h->prev_step = -1;
    aimsi_jobs_held_remove(J, id, id_len); /* a re-adopted job replaces its old entry */
    h->next = J->held;
    J->held = h;
    return AIMS_OK;
}

void aimsi_jobs_held_remove(aimsi_jobs *J, const char *id, size_t id_len)
{
    for (jobs_held **pp = &J->held; *pp != NULL; pp = &(*pp)->next) {
        jobs_held *h = *pp;
        if (h->id_len == id_len && memcmp(h->id, id, id_len) == 0) {
            *pp = h->next;
            aimsi_free(h);
            return;
        }
    }
}

int aimsi_jobs_pause_point(aimsi_jobs *J)
{
    while (atomic_load(&J->paused) && !atomic_load(&J->wake)) {
        sleep_ms(2);
    }
    return atomic_load(&J->wake) && atomic_load(&J->paused);
}

/* ---- the lease thread: renewals ------------------------------------------------------------- */

#define RENEW_MAX 64

typedef struct renew_item {
    char dir[JOBS_DIR_MAX];
    uint64_t token;
    int64_t step;
} renew_item;

/* Renew (or with release, give up) every lease this instance holds. The
 * store I/O runs outside J->mu so a fit's per-step bookkeeping never waits
 * for an fsync. */
static void renew_all(aimsi_jobs *J, int release)
{
    renew_item items[RENEW_MAX];
    size_t n = 0;
    pthread_mutex_lock(&J->mu);
    for (jobs_held *h = J->held; h != NULL && n < RENEW_MAX; h = h->next) {
        if (!atomic_load(&h->lost)) {
            memcpy(items[n].dir, h->dir, sizeof h->dir);
            items[n].token = h->token;
            items[n].step = atomic_load(&h->step);
            n++;
        }
    }
    pthread_mutex_unlock(&J->mu);
    for (size_t i = 0; i < n; i++) {
        if (aimsi_jobs_fence(J, items[i].dir, items[i].token) != AIMS_OK) {
            aimsi_log(AIMS_LOG_WARN, "jobs: %s: %s", items[i].dir, aims_errmsg());
            continue;
        }
        if (!release && aimsi_jobs_cancelled(J, items[i].dir)) {
            /* a caller on another instance cancelled it: the fit sees the flag at its
             * next step, so a cancel lands within one renewal, whatever the checkpoint
             * interval */
            pthread_mutex_lock(&J->mu);
            for (jobs_held *h = J->held; h != NULL; h = h->next) {
                if (strcmp(h->dir, items[i].dir) == 0) {
                    atomic_store(&h->cancel, 1);
                }
            }
            pthread_mutex_unlock(&J->mu);
        }
        if (aimsi_jobs_lease_write(J, items[i].dir, items[i].token, items[i].step, release) !=
            AIMS_OK) {
            aimsi_log(AIMS_LOG_WARN, "jobs: renewing %s: %s", items[i].dir, aims_errmsg());
        }
    }
}

/* ---- the lease thread: adoption ------------------------------------------------------------- */

typedef struct scan_ctx {
    char names[256][JOBS_DIR_MAX];
    size_t n;
} scan_ctx;

static int scan_cb(void *user, const char *name)
{
    scan_ctx *c = user;
    if (c->n < 256 && strlen(name) <= 2 * JOBS_ID_MAX) {
        snprintf(c->names[c->n++], JOBS_DIR_MAX, "j/%s", name);
    }
    return 0;
}

static int unhex(const char *hex, char *out, size_t *len)
{
    const size_t n = strlen(hex);
    if (n == 0 || n % 2 != 0 || n / 2 > JOBS_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            const char c = hex[2 * i + (size_t)k];
            const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) {
                return 0;
            }
            v = v * 16 + (unsigned)d;
        }
        out[i] = (char)v;
    }
    *len = n / 2;
    return 1;
}

/* Decode the stored submit frame into a message (aims_msg_destroy it). */
aims_status aimsi_jobs_load_submit(aimsi_jobs *J, const char *dir, aims_msg **out)
{
    char name[AIMSI_STORE_NAME_MAX + 1];
    aimsi_jobs_path(dir, "submit", name);
    void *p = NULL;
    size_t n = 0;
    AIMSI_TRY(aimsi_store_get(J->st, name, &p, &n));
    const aims_status rc = aimsi_jobs_decode(p, n, out);
    return rc == AIMS_OK ? AIMS_OK
                         : aimsi_err(NULL, rc, "jobs: %s: the stored submit is unreadable: %s",
                                     dir, aims_errmsg());
}

/* Is the job in dir unfinished with an expired lease? *top = its highest
 * token, *last_step = the step its owner last reported; an unfinished job's
 * lease expiry lowers *soonest (the scan looks again right after it). */
static int expired(aimsi_jobs *J, const char *dir, uint64_t *top, int64_t *last_step,
                   int64_t *soonest)
{
    jobs_status s;
    if (aimsi_jobs_status_read(J, dir, &s) != AIMS_OK || s.state >= AIMSI_JOB_DONE) {
        return 0;
    }
    uint64_t n = 0;
    if (aimsi_jobs_token_now(J, dir, &n) != AIMS_OK || n == 0) {
        return 0;
    }
    lease l;
    char leaf[40];
    snprintf(leaf, sizeof leaf, "tok.%010" PRIu64, n);
    if (lease_read(J, dir, "lease", &l) != AIMS_OK || l.token != n) {
        if (lease_read(J, dir, leaf, &l) != AIMS_OK) {
            return 0;
        }
    }
    *top = n;
    *last_step = l.step > s.step ? l.step : s.step;
    const int gone = aimsi_jobs_wall_ms() > l.expires_ms;
    if (!gone && l.expires_ms < *soonest) {
        *soonest = l.expires_ms;
    }
    return gone;
}

/* 1 when the adopter is full (the scan stops for this round), else 0. */
static int adopt_one(aimsi_jobs *J, const char *dir, int64_t *soonest)
{
    char id[JOBS_ID_MAX];
    size_t id_len = 0;
    uint64_t top = 0;
    int64_t last_step = 0;
    if (!unhex(dir + 2, id, &id_len)) {
        return 0;
    }
    pthread_mutex_lock(&J->mu);
    const int mine = aimsi_jobs_held_find(J, id, id_len) != NULL;
    pthread_mutex_unlock(&J->mu);
    if (mine || !expired(J, dir, &top, &last_step, soonest)) {
        return 0;
    }
    if (J->room != NULL && !J->room(J->adopt_user)) {
        return 1; /* no room to queue it: claim nothing (a claim adds a token file) */
    }
    if (aimsi_jobs_claim(J, dir, top + 1) != AIMS_OK) {
        return 0; /* another instance claimed it first (AIMS_E_EXISTS) */
    }
    const int64_t claim_ms = aimsi_jobs_wall_ms();
    aims_msg *m = NULL;
    aims_status rc = aimsi_jobs_load_submit(J, dir, &m);
    pthread_mutex_lock(&J->mu);
    if (rc == AIMS_OK) {
        rc = aimsi_jobs_held_add(J, id, id_len, top + 1);
    }
    jobs_held *h = rc == AIMS_OK ? aimsi_jobs_held_find(J, id, id_len) : NULL;
    if (h != NULL) {
        h->prev_step = last_step; /* the fit compares its resume point with it */
    }
    pthread_mutex_unlock(&J->mu);
    /* no lease write here: tok.<N+1> carries our first lease (expired() reads it while
     * `lease` still names token N) and the lease thread renews it within a heartbeat;
     * an adoption spends its time on the claim and the checkpoint, not on fsyncs */
    jobs_status s;
    if (rc == AIMS_OK && aimsi_jobs_status_read(J, dir, &s) == AIMS_OK) {
        snprintf(s.owner, sizeof s.owner, "%s", J->instance);
        s.token = top + 1;
        s.state = AIMSI_JOB_QUEUED;
        s.adoptions++;
        s.lost_steps = last_step; /* the fit turns it into steps lost */
        (void)aimsi_jobs_status_write(J, dir, &s);
    }
    if (rc == AIMS_OK) {
        aimsi_log(AIMS_LOG_INFO, "jobs: %s adopts job %.*s (token %" PRIu64 ", owner's last "
                  "step %" PRId64 ")", J->instance, (int)id_len, id, top + 1, last_step);
        const uint64_t t0 = aimsi_now_ns();
        rc = J->adopt(J->adopt_user, m, top + 1);
        const uint64_t t1 = aimsi_now_ns();
        pthread_mutex_lock(&J->mu);
        J->times.claim_wall_ms = claim_ms;
        J->times.adopt_ns = t1 - t0;
        pthread_mutex_unlock(&J->mu);
    }
    aims_msg_destroy(m);
    if (rc != AIMS_OK) {
        aimsi_log(AIMS_LOG_WARN, "jobs: adopting %s failed: %s", dir, aims_errmsg());
        (void)aimsi_jobs_lease_write(J, dir, top + 1, 0, 1); /* give it up at once */
        pthread_mutex_lock(&J->mu);
        aimsi_jobs_held_remove(J, id, id_len);
        pthread_mutex_unlock(&J->mu);
        return rc == AIMS_E_OVERLOADED; /* full after all (a race with submits) */
    }
    return 0;
}

/* One adoption round; returns the wall-clock expiry of the soonest lease
 * of another instance's unfinished job (INT64_MAX: none). */
static int64_t scan(aimsi_jobs *J)
{
    int64_t soonest = INT64_MAX;
    scan_ctx *c = aimsi_calloc(1, sizeof *c);
    if (c == NULL) {
        return soonest;
    }
    (void)aimsi_store_list(J->st, "j", scan_cb, c);
    int full = 0;
    for (size_t i = 0; i < c->n && !full && !atomic_load(&J->paused) && !atomic_load(&J->stopped);
         i++) {
        full = adopt_one(J, c->names[i], &soonest);
    }
    aimsi_jobs_gc(J, (const char(*)[JOBS_DIR_MAX])c->names, c->n);
    aimsi_free(c);
    return soonest;
}

/* Wait on J->cv until `ms` passed or quit (J->mu held). */
void aimsi_jobs_wait_locked(aimsi_jobs *J, int64_t wait)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const int64_t ms = wait < 1 ? 1 : wait > 1000 ? 1000 : wait;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    if (!J->quit) {
        pthread_cond_timedwait(&J->cv, &J->mu, &ts);
    }
}

/* Renewals run on their own thread: an adoption (the scan thread) may take
 * seconds reading a big job's rows, longer than the leases of the jobs this
 * instance already runs. */
static void *lease_thread(void *arg)
{
    aimsi_jobs *J = arg;
    const int64_t renew_every = J->lease_ms / 3 > 1 ? J->lease_ms / 3 : 1;
    int64_t next_renew = 0;
    pthread_mutex_lock(&J->mu);
    while (!J->quit) {
        pthread_mutex_unlock(&J->mu);
        const int64_t now = (int64_t)(aimsi_now_ns() / 1000000u);
        if (!atomic_load(&J->paused) && now >= next_renew) {
            renew_all(J, 0);
            next_renew = now + renew_every;
        }
        pthread_mutex_lock(&J->mu);
        aimsi_jobs_wait_locked(J, next_renew - now);
    }
    pthread_mutex_unlock(&J->mu);
    return NULL;
}

static void *scan_thread(void *arg)
{
    aimsi_jobs *J = arg;
    int64_t next_scan = 0;
    pthread_mutex_lock(&J->mu);
    while (!J->quit) {
        pthread_mutex_unlock(&J->mu);
        const int64_t now = (int64_t)(aimsi_now_ns() / 1000000u);
        if (!atomic_load(&J->paused) && now >= next_scan && !atomic_load(&J->stopped)) {
            const int64_t soonest = scan(J);
            const int64_t after = (int64_t)(aimsi_now_ns() / 1000000u);
            next_scan = now + J->scan_ms;
            if (soonest != INT64_MAX) {
                /* look again right after the soonest lease runs out, not a scan later:
                 * detection = the lease's own expiry, whatever scan_ms */
                const int64_t at = after + (soonest - aimsi_jobs_wall_ms()) + 1;
                next_scan = at < next_scan ? (at > after ? at : after + 1) : next_scan;
            }
        }
        pthread_mutex_lock(&J->mu);
        aimsi_jobs_wait_locked(J, next_scan - (int64_t)(aimsi_now_ns() / 1000000u));
    }
    pthread_mutex_unlock(&J->mu);
    return NULL;
}

aims_status aimsi_jobs_start(aimsi_jobs *J, aimsi_jobs_adopt_fn fn, void *user)
{
    pthread_mutex_lock(&J->mu);
    aims_status rc = AIMS_OK;
    if (!J->thread_on) {
        J->adopt = fn;
        J->adopt_user = user;
        J->quit = 0;
        if (pthread_create(&J->thread, NULL, lease_thread, J) != 0) {
            rc = aimsi_err(NULL, AIMS_E_BACKEND, "jobs: cannot start the lease thread");
        } else if (pthread_create(&J->scan_thread, NULL, scan_thread, J) != 0) {
            J->quit = 1;
            pthread_cond_broadcast(&J->cv);
            pthread_mutex_unlock(&J->mu);
            pthread_join(J->thread, NULL);
            pthread_mutex_lock(&J->mu);
            rc = aimsi_err(NULL, AIMS_E_BACKEND, "jobs: cannot start the scan thread");
        } else {
            J->thread_on = 1;
            aimsi_jobs_warm_start(J); /* prefetch: without it adoptions read their rows */
        }
    }
    pthread_mutex_unlock(&J->mu);
    return rc;
}

/* Join the lease thread (destroy). */
void aimsi_jobs_join(aimsi_jobs *J)
{
    pthread_mutex_lock(&J->mu);
    const int on = J->thread_on;
    const int warm = J->warm_on;
    J->quit = 1;
    J->thread_on = 0;
    J->warm_on = 0;
    pthread_cond_broadcast(&J->cv);
    pthread_mutex_unlock(&J->mu);
    if (on) {
        pthread_join(J->thread, NULL);
        pthread_join(J->scan_thread, NULL);
    }
    if (warm) {
        pthread_join(J->warm, NULL);
    }
}

void aimsi_jobs_stop(aimsi_jobs *J)
{
    if (J == NULL) {
        return;
    }
    atomic_store(&J->stopped, 1);
    atomic_store(&J->wake, 1);
    if (!atomic_load(&J->paused)) {
        /* a hand-over comes after the checkpoints in flight are durable (jobs_ckpt.c) */
        aimsi_jobs_ckpt_drain(J, 30000);
        renew_all(J, 1); /* hand the unfinished jobs over at once */
    }
    pthread_mutex_lock(&J->mu);
    while (J->held != NULL) {
        jobs_held *h = J->held;
        J->held = h->next;
        aimsi_free(h);
    }
    pthread_mutex_unlock(&J->mu);
}

void aimsi_jobs_get_times(aimsi_jobs *J, aimsi_jobs_times *out)
{
    pthread_mutex_lock(&J->mu);
    *out = J->times;
    pthread_mutex_unlock(&J->mu);
}

void aimsi_jobs_set_room(aimsi_jobs *J, aimsi_jobs_room_fn fn)
{
    pthread_mutex_lock(&J->mu);
    J->room = fn;
    pthread_mutex_unlock(&J->mu);
}

void aimsi_jobs_set_ckpt_hook(aimsi_jobs *J, aimsi_jobs_ckpt_hook_fn fn, void *user)
{
    J->ckpt_hook = fn;
    J->ckpt_hook_user = user;
}

void aimsi_jobs_pause_after(aimsi_jobs *J, int64_t checkpoints)
{
    atomic_store(&J->pause_after, checkpoints > 0 ? checkpoints : -1);
}

int aimsi_jobs_paused(aimsi_jobs *J)
{
    return atomic_load(&J->paused);
}

void aimsi_jobs_pause(aimsi_jobs *J, int paused)
{
    atomic_store(&J->paused, paused != 0);
    if (!paused) {
        atomic_store(&J->wake, 0);
    }
}
