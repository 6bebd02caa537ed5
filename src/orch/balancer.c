/*
 * balancer.c -- load balancer: P2C/peak-EWMA, round robin, smooth weighted RR,
 * least outstanding, Maglev, random.
 *
 * Shape. The instance set lives in an immutable snapshot (ids, weights, an
 * id -> slot hash, the SWRR current weights and, for MAGLEV, the lookup table).
 * set_instances() builds a new snapshot and publishes it with one atomic
 * pointer swap, so pick() and done() never take a lock (WEIGHTED_RR excepted:
 * nginx's algorithm mutates every current weight on each pick, so it runs under
 * a small mutex).
 *
 * Per-instance load statistics (outstanding count, latency EWMA, availability
 * mark) live in separately allocated lb_stats blocks that snapshots point to.
 * A new snapshot reuses the blocks of the ids it keeps, so a request picked on
 * the old snapshot and finished on the new one still balances its count, and
 * "instances kept from the previous set keep their load statistics" costs
 * nothing. Blocks of dropped ids die with the old snapshot.
 *
 * Reclamation: a two-counter grace period (the classic userspace-RCU scheme).
 * A reader increments readers[epoch & 1] before loading the snapshot pointer
 * and decrements it when done. The writer (serialised by wlock) swaps the
 * pointer, then flips the epoch and waits for the old parity to drain, twice:
 * once per parity. Any reader that could have loaded the old pointer
 * incremented one of the two counters before the swap, so seeing each counter
 * at zero once after the swap proves it has left. Flipping first means new
 * readers go to the other counter, so a steady stream of picks cannot starve
 * the writer. All operations are seq_cst; the counters' release sequences give
 * TSan the happens-before edge from the last reader to the free.
 * Each parity's counter is split into LB_SHARDS cache lines, a thread using
 * the one its thread-local address hashes to (session 10): with pipelined
 * calls the caller picks and the client's I/O thread reports done() for
 * every call, and one shared counter moved its cache line between the two
 * cores at each enter and exit of both. The writer waits for every shard of the old
 * parity; a reader increments and decrements the same shard, so the argument
 * above holds per shard.
 *
 * P2C. Score = (outstanding + 1) x cost / weight, where cost is Finagle's
 * "peak EWMA" of latency: a sample above the current cost replaces it at once
 * (react to a slowdown immediately), a faster sample pulls it down with weight
 * 1 - exp(-dt/tau), tau = 10 s, dt = time since the previous sample. At pick
 * time the cost is also decayed by exp(-dt/tau) so an instance that stopped
 * getting traffic because it looked slow is eventually probed again. An
 * instance with no sample yet scores 0 while idle (probe it once) and a huge
 * penalty + outstanding while its probe is in flight (Finagle does the same).
 * Stale memory (issue 11: a healthy instance once received nothing for 4-5 s
 * under CPU contention, its cost decaying over tau): an instance with no call
 * outstanding and no sample for LB_STALE_NS (1 s) scores 0, so it is picked
 * by the next P2C draw or scan that sees it (for n <= 4, within 1 s plus one
 * pick), and a sample arriving LB_STALE_NS or more after the previous one
 * replaces the cost instead of being averaged in: one fast answer puts a
 * recovered instance back in rotation. A slow one costs one probe a second.
 * A failed call counts as a sample of twice max(latency, cost), capped at 10 s,
 * so an instance that fails fast does not look fast (SRE book ch. 20).
 * The two candidates are DISTINCT (Envoy's sampling with replacement sends a
 * quarter of its draws at n = 2 to one random host). For n <= 4 we scan every
 * instance instead (research lesson 1, after Envoy #11004/#20420): at that size
 * a scan costs no more than a draw and always finds the least loaded; the start
 * offset is random so ties spread. Herding is not a concern for one shared
 * balancer per process: outstanding counts update on every pick.
 *
 * RNG. One splitmix64 state advanced with a relaxed atomic load + store:
 * thread-safe (no data race), lock-free, cheaper than a fetch_add, and a
 * single thread with a given seed sees the same sequence every run.
 *
 * Clock. Without an installed clock the EWMA reads CLOCK_MONOTONIC_COARSE: a
 * 10 s decay needs no better than its ~4 ms ticks, and CLOCK_MONOTONIC costs
 * ~75 ns per read on this kvm-clock VM (most of the 100 ns pick budget).
 *
 * Other policies. ROUND_ROBIN: one atomic counter modulo n (an unavailable
 * instance's turn goes to the next available one). LEAST_OUTSTANDING: a scan
 * for the least (outstanding + 1) / weight, starting at a rotating offset so
 * ties rotate. MAGLEV: Eisenbud et al.'s table (65537 entries, prime), rebuilt
 * on set_instances, weights as turns per round; the key goes through a
 * splitmix64 finaliser before "% M" so structured keys (multiples of M,
 * small integers) spread too; an unavailable owner sends the key to a few
 * rehashed entries, then to the next available instance. RANDOM: uniform,
 * re-drawn up to 5 times past unavailable instances (Finagle's maxEffort).
 *
 * Availability. set_available() flips a mark in lb_stats and keeps the
 * snapshot's available count, both under wlock (so a concurrent
 * set_instances cannot miscount). Picks skip marked instances; when none is
 * available they ignore the marks (panic: an unhealthy instance beats none).
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "aimsi_orch.h"

#define LB_MAX_WEIGHT 10000u
#define LB_MAGLEV_M 65537u           /* prime; Envoy's default table size */
#define LB_MAGLEV_MAX_N 65535u       /* table entries are uint16_t slots */
#define LB_MAGLEV_EMPTY 0xffffu
#define LB_TAU_NS 10e9               /* Finagle's peak-EWMA decay time */
#define LB_STALE_NS 1000000000u      /* older latency memory is stale (see above) */
#define LB_PENALTY 1e12              /* score of an unknown instance with a probe in flight */
#define LB_FAIL_CAP_NS 10e9          /* cap of a failure's latency sample */
#define LB_FULL_SCAN_MAX 4u          /* P2C scans every instance at or below this size */
#define LB_MAX_EFFORT 5              /* random re-draws before scanning for an available one */
#define LB_GOLDEN 0x9e3779b97f4a7c15ull

/* Load statistics of one instance; shared by every snapshot that holds the id.
 * Padded to a cache line so two instances' counters do not false-share. */
typedef struct lb_stats {
    _Atomic uint64_t outstanding;
    _Atomic uint64_t cost;  /* peak-EWMA latency in ns, as double bits; 0 = no sample yet */
    _Atomic uint64_t stamp; /* clock of the last sample */
    atomic_int unavailable; /* written under wlock only */
    aims_instance id;
    char pad[64 - 5 * sizeof(uint64_t)]; /* the int above takes a padded 8 */
} lb_stats;

/* Immutable instance set (everything but n_avail, cw and the stats blocks). */
typedef struct lb_snap {
    size_t n;
    _Atomic size_t n_avail; /* instances not marked unavailable; changed under wlock */
    size_t hmask;           /* id hash: hmask + 1 slots holding index + 1, 0 = empty */
    aims_instance *ids;
    lb_stats **st;
    double *inv_w;          /* 1 / weight, for scores */
    int64_t *cw;            /* SWRR current weights, under swrr_lock */
    uint32_t *w;
    uint32_t *slots;
    uint16_t *maglev;       /* LB_MAGLEV_M entries (MAGLEV only) */
} lb_snap;

/* One shard of a grace-period reader count, alone on its cache line. */
#define LB_SHARDS 16u
typedef struct lb_ctr {
    atomic_ulong n;
    char pad[64 - sizeof(atomic_ulong)];
} lb_ctr;

struct aims_balancer {
    aimsi_obj hdr;
    aims_lb_policy policy;
    aims_clock_fn clock;
    void *clock_user;
    _Atomic(lb_snap *) cur;
    atomic_uint epoch;
    lb_ctr readers[2][LB_SHARDS];
    _Atomic uint64_t rng; /* splitmix64 state */
    _Atomic uint64_t rr;  /* round-robin / rotation counter */
    pthread_mutex_t wlock;
    pthread_mutex_t swrr_lock;
};

/* ---- small helpers ------------------------------------------------------- */

static uint64_t lb_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double lb_bits_to_d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static uint64_t lb_d_to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* splitmix64 step as a relaxed load + store, not a fetch_add: a locked
 * read-modify-write costs ~15 ns here, a fifth of the pick budget. Two threads
 * racing may draw the same number (harmless for balancing); one thread with a
 * given seed still gets the same sequence every run. */
static uint64_t lb_rand(aims_balancer *b)
{
    const uint64_t z = atomic_load_explicit(&b->rng, memory_order_relaxed) + LB_GOLDEN;
    atomic_store_explicit(&b->rng, z, memory_order_relaxed);
    return lb_mix(z);
}

/* Uniform in [0, n) from 32 random bits (Lemire's multiply-shift; the bias is
 * below n / 2^32, far under anything a balancer can measure). */
static size_t lb_below(uint32_t r, size_t n)
{
    if (n > UINT32_MAX) {
        return (size_t)(r % n);
    }
    return (size_t)(((uint64_t)r * (uint64_t)n) >> 32);
}

void aimsi_lb_draw2(uint64_t r, size_t n, size_t *i, size_t *j)
{
    /* Draw j from the n - 1 slots other than i: distinct by construction. */
    const size_t a = lb_below((uint32_t)(r >> 32), n);
    size_t c = lb_below((uint32_t)r, n - 1);
    if (c >= a) {
        c++;
    }
    *i = a;
    *j = c;
}

/* The EWMA only needs time at the scale of its 10 s decay, so without an
 * installed clock we read CLOCK_MONOTONIC_COARSE (the same monotonic time at
 * tick resolution, ~4 ms): ~14 ns instead of ~75 ns for CLOCK_MONOTONIC on
 * this kvm-clock VM, which alone would eat most of the 100 ns pick budget. */
static uint64_t lb_now(const aims_balancer *b)
{
    if (b->clock != NULL) {
        return b->clock(b->clock_user);
    }
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
        return aimsi_now_ns();
    }
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- grace period -------------------------------------------------------- */

/* This thread's reader shard: a hash of a thread-local's address (no
 * global state; two threads may share a shard, which is only slower). */
static _Thread_local char t_lb_anchor;

static unsigned lb_shard(void)
{
    return (unsigned)(lb_mix((uint64_t)(uintptr_t)&t_lb_anchor) >> 60) & (LB_SHARDS - 1u);
}

/* Returns the token lb_exit needs: the parity and the shard. */
static unsigned lb_enter(aims_balancer *b)
{
    const unsigned e = atomic_load(&b->epoch) & 1u;
    const unsigned k = lb_shard();
    atomic_fetch_add(&b->readers[e][k].n, 1);
    return e | (k << 1);
}

static void lb_exit(aims_balancer *b, unsigned tok)
{
    atomic_fetch_sub(&b->readers[tok & 1u][tok >> 1].n, 1);
}

static unsigned long lb_readers(aims_balancer *b, unsigned e)
{
    unsigned long any = 0;
    for (unsigned k = 0; k < LB_SHARDS; k++) {
        any |= atomic_load(&b->readers[e][k].n); /* nonzero when any shard is */
    }
    return any;
}

/* Called under wlock after the pointer swap: returns when no reader can still
 * hold the previous snapshot (see the file comment). */
static void lb_synchronize(aims_balancer *b)
{
    for (int round = 0; round < 2; round++) {
        const unsigned old = atomic_load(&b->epoch) & 1u;
        atomic_store(&b->epoch, old ^ 1u);
        while (lb_readers(b, old) != 0) {
            sched_yield();
        }
    }
}

/* ---- snapshots ----------------------------------------------------------- */

static size_t lb_find(const lb_snap *s, aims_instance id)
{
    size_t h = (size_t)lb_mix(id) & s->hmask;
    for (;;) {
        const uint32_t v = s->slots[h];
        if (v == 0) {
            return SIZE_MAX;
        }
        if (s->ids[v - 1] == id) {
            return v - 1;
        }
        h = (h + 1) & s->hmask;
    }
}

static size_t lb_align8(size_t x)
{
    return (x + 7u) & ~(size_t)7u;
}

/* One block: header, ids[n], st[n], inv_w[n], cw[n], w[n], slots[cap], maglev[M]. */
static aims_status lb_snap_alloc(size_t n, int maglev, lb_snap **out)
{
    size_t cap = 4;
    while (cap < 2 * n) {
        if (cap > SIZE_MAX / 4) {
            return aimsi_err(NULL, AIMS_E_INVAL, "aims_balancer_set_instances: n = %zu too large", n);
        }
        cap *= 2;
    }
    size_t sz_st, sz_w, sz_slots;
    if (aimsi_mul_ok(n, sizeof(aims_instance) + sizeof(void *) + sizeof(double) + sizeof(int64_t),
                     &sz_st) != 0 ||
        aimsi_mul_ok(n, sizeof(uint32_t), &sz_w) != 0 ||
        aimsi_mul_ok(cap, sizeof(uint32_t), &sz_slots) != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_balancer_set_instances: n = %zu too large", n);
    }
    const size_t sz_mag = maglev ? LB_MAGLEV_M * sizeof(uint16_t) : 0;
    const size_t head = lb_align8(sizeof(lb_snap));
    size_t total = head;
    const size_t parts[] = {sz_st, sz_w, sz_slots, sz_mag};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        if (total > SIZE_MAX - parts[k] - 8) {
            return aimsi_err(NULL, AIMS_E_INVAL, "aims_balancer_set_instances: n = %zu too large", n);
        }
        total += lb_align8(parts[k]);
    }
    unsigned char *p = aimsi_calloc(1, total);
    if (p == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_balancer_set_instances: snapshot of %zu bytes",
                         total);
    }
    lb_snap *s = (lb_snap *)(void *)p;
    size_t off = head;
    s->n = n;
    s->hmask = cap - 1;
    s->ids = (aims_instance *)(void *)(p + off);
    off += n * sizeof(aims_instance);
    s->st = (lb_stats **)(void *)(p + off);
    off += n * sizeof(void *);
    s->inv_w = (double *)(void *)(p + off);
    off += n * sizeof(double);
    s->cw = (int64_t *)(void *)(p + off);
    off += n * sizeof(int64_t);
    off = lb_align8(off);
    s->w = (uint32_t *)(void *)(p + off);
    off += lb_align8(sz_w);
    s->slots = (uint32_t *)(void *)(p + off);
    off += lb_align8(sz_slots);
    s->maglev = maglev ? (uint16_t *)(void *)(p + off) : NULL;
    atomic_init(&s->n_avail, n);
    *out = s;
    return AIMS_OK;
}

/* Insert ids[i] into the id hash; -1 on a duplicate id. */
static int lb_hash_insert(lb_snap *s, size_t i)
{
    const aims_instance id = s->ids[i];
    size_t h = (size_t)lb_mix(id) & s->hmask;
    while (s->slots[h] != 0) {
        if (s->ids[s->slots[h] - 1] == id) {
            return -1;
        }
        h = (h + 1) & s->hmask;
    }
    s->slots[h] = (uint32_t)(i + 1);
    return 0;
}

/* Maglev (Eisenbud et al., NSDI 2016): every instance walks its own
 * permutation of the table (offset + j * skip mod M, from two hashes of its
 * id) and claims the next free entry, in turns, until the table is full.
 * Weights: each round an instance earns weight / max_weight turns. */
static aims_status lb_maglev_build(lb_snap *s)
{
    const size_t n = s->n;
    uint64_t *tmp = aimsi_calloc(n, 4 * sizeof(uint64_t));
    if (tmp == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_balancer_set_instances: maglev scratch");
    }
    uint64_t *offset = tmp;
    uint64_t *skip = tmp + n;
    uint64_t *next = tmp + 2 * n; /* position reached in each permutation */
    double *credit = (double *)(void *)(tmp + 3 * n);
    uint32_t wmax = 1;
    for (size_t i = 0; i < n; i++) {
        offset[i] = lb_mix(s->ids[i] ^ 0x6a09e667f3bcc908ull) % LB_MAGLEV_M;
        skip[i] = lb_mix(s->ids[i] ^ 0xbb67ae8584caa73bull) % (LB_MAGLEV_M - 1) + 1;
        credit[i] = 0.0;
        wmax = s->w[i] > wmax ? s->w[i] : wmax;
    }
    for (size_t k = 0; k < LB_MAGLEV_M; k++) {
        s->maglev[k] = LB_MAGLEV_EMPTY;
    }
    /* M is prime and 1 <= skip < M, so each permutation visits every entry:
     * the inner do-while always finds a free one while the table is not full. */
    size_t filled = 0;
    while (filled < LB_MAGLEV_M) {
        for (size_t i = 0; i < n && filled < LB_MAGLEV_M; i++) {
            credit[i] += (double)s->w[i] / (double)wmax;
            while (credit[i] >= 1.0 && filled < LB_MAGLEV_M) {
                credit[i] -= 1.0;
                uint64_t c;
                do {
                    c = (offset[i] + next[i] * skip[i]) % LB_MAGLEV_M;
                    next[i]++;
                } while (s->maglev[c] != LB_MAGLEV_EMPTY);
                s->maglev[c] = (uint16_t)i;
                filled++;
            }
        }
    }
    aimsi_free(tmp);
    return AIMS_OK;
}

/* Free the stats blocks of `old` that `keep` (may be NULL) does not hold, then old. */
static void lb_snap_release(lb_snap *old, const lb_snap *keep)
{
    if (old == NULL) {
        return;
    }
    for (size_t i = 0; i < old->n; i++) {
        if (keep == NULL || lb_find(keep, old->ids[i]) == SIZE_MAX) {
            aimsi_free(old->st[i]);
        }
    }
    aimsi_free(old);
}

/* ---- lifecycle ----------------------------------------------------------- */

aims_status aims_balancer_create(aims_lb_policy policy, uint64_t seed, aims_balancer **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    if (policy < AIMS_LB_P2C || policy > AIMS_LB_RANDOM) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_balancer_create: unknown policy %d",
                         (int)policy);
    }
    aims_balancer *b = aimsi_calloc(1, sizeof *b);
    if (b == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_balancer_create: %zu bytes", sizeof *b);
    }
    if (pthread_mutex_init(&b->wlock, NULL) != 0) {
        aimsi_free(b);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_balancer_create: mutex");
    }
    if (pthread_mutex_init(&b->swrr_lock, NULL) != 0) {
        pthread_mutex_destroy(&b->wlock);
        aimsi_free(b);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_balancer_create: mutex");
    }
    aimsi_obj_init(&b->hdr, AIMSI_MAGIC_BALANCER);
    b->policy = policy;
    atomic_init(&b->cur, NULL);
    atomic_init(&b->epoch, 0);
    for (unsigned k = 0; k < LB_SHARDS; k++) {
        atomic_init(&b->readers[0][k].n, 0);
        atomic_init(&b->readers[1][k].n, 0);
    }
    atomic_init(&b->rng, seed);
    atomic_init(&b->rr, 0);
    *out = b;
    return AIMS_OK;
}

void aims_balancer_destroy(aims_balancer *b)
{
    if (!aimsi_obj_ok(b, AIMSI_MAGIC_BALANCER)) {
        return;
    }
    lb_snap_release(atomic_load(&b->cur), NULL);
    pthread_mutex_destroy(&b->swrr_lock);
    pthread_mutex_destroy(&b->wlock);
    aimsi_obj_kill(&b->hdr);
    aimsi_free(b);
}

aims_status aims_balancer_set_clock(aims_balancer *b, aims_clock_fn fn, void *user)
{
    if (!aimsi_obj_ok(b, AIMSI_MAGIC_BALANCER)) {
        return AIMSI_MISUSE("b is not a balancer");
    }
    b->clock = fn;
    b->clock_user = fn != NULL ? user : NULL;
    return AIMS_OK;
}

/* ---- set_instances ------------------------------------------------------- */

static aims_status lb_check_args(const aims_instance *ids, const uint32_t *weights, size_t n,
                                 int maglev)
{
    if (n > 0 && ids == NULL) {
        return AIMSI_MISUSE("ids is NULL with n > 0");
    }
    if (maglev && n > LB_MAGLEV_MAX_N) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_balancer_set_instances: n = %zu exceeds maglev's %u", n,
                         LB_MAGLEV_MAX_N);
    }
    if (n > UINT32_MAX - 1) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_balancer_set_instances: n = %zu too large", n);
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == 0) {
            return aimsi_err(NULL, AIMS_E_INVAL, "aims_balancer_set_instances: ids[%zu] is 0", i);
        }
        if (weights != NULL && (weights[i] == 0 || weights[i] > LB_MAX_WEIGHT)) {
            return aimsi_err(NULL, AIMS_E_INVAL,
                             "aims_balancer_set_instances: weights[%zu] = %u not in 1..%u", i,
                             weights[i], LB_MAX_WEIGHT);
        }
    }
    return AIMS_OK;
}

/* Free the stats blocks s->st[0..n) that `old` does not own. */
static void lb_free_fresh(lb_snap *s, const lb_snap *old, size_t n)
{
    for (size_t m = 0; m < n; m++) {
        if (old == NULL || lb_find(old, s->ids[m]) == SIZE_MAX) {
            aimsi_free(s->st[m]);
        }
    }
}

/* Point s->st[] at the old blocks of kept ids and fresh blocks for new ones,
 * and count the available ones. Called under wlock (old is stable). On
 * failure frees only the fresh blocks. */
static aims_status lb_bind_stats(lb_snap *s, const lb_snap *old)
{
    size_t avail = 0;
    for (size_t i = 0; i < s->n; i++) {
        const size_t k = old != NULL ? lb_find(old, s->ids[i]) : SIZE_MAX;
        if (k != SIZE_MAX) {
            s->st[i] = old->st[k];
        } else {
            lb_stats *st = aimsi_calloc(1, sizeof *st);
            if (st == NULL) {
                lb_free_fresh(s, old, i);
                return aimsi_err(NULL, AIMS_E_NOMEM, "aims_balancer_set_instances: stats");
            }
            st->id = s->ids[i];
            s->st[i] = st;
        }
        avail += atomic_load(&s->st[i]->unavailable) == 0;
    }
    atomic_store(&s->n_avail, avail);
    return AIMS_OK;
}

/* Fill ids, weights and the id hash of a fresh snapshot (no stats yet). */
static aims_status lb_fill(lb_snap *s, const aims_instance *ids, const uint32_t *weights)
{
    for (size_t i = 0; i < s->n; i++) {
        const uint32_t w = weights != NULL ? weights[i] : 1u;
        s->ids[i] = ids[i];
        s->w[i] = w;
        s->inv_w[i] = 1.0 / (double)w;
        if (lb_hash_insert(s, i) != 0) {
            return aimsi_err(NULL, AIMS_E_INVAL,
                             "aims_balancer_set_instances: duplicate id %llu at ids[%zu]",
                             (unsigned long long)ids[i], i);
        }
    }
    if (s->maglev != NULL && s->n > 0) {
        return lb_maglev_build(s);
    }
    return AIMS_OK;
}

aims_status aims_balancer_set_instances(aims_balancer *b, const aims_instance *ids,
                                        const uint32_t *weights, size_t n)
{
    if (!aimsi_obj_ok(b, AIMSI_MAGIC_BALANCER)) {
        return AIMSI_MISUSE("b is not a balancer");
    }
    const int maglev = b->policy == AIMS_LB_MAGLEV;
    AIMSI_TRY(lb_check_args(ids, weights, n, maglev));
    lb_snap *s = NULL;
    AIMSI_TRY(lb_snap_alloc(n, maglev, &s));
    aims_status rc = lb_fill(s, ids, weights);
    if (rc != AIMS_OK) {
        aimsi_free(s);
        return rc;
    }
    pthread_mutex_lock(&b->wlock);
    lb_snap *const old = atomic_load(&b->cur);
    rc = lb_bind_stats(s, old);
    if (rc != AIMS_OK) {
        pthread_mutex_unlock(&b->wlock);
        aimsi_free(s);
        return rc;
    }
    atomic_store(&b->cur, s);
    lb_synchronize(b);
    lb_snap_release(old, s);
    pthread_mutex_unlock(&b->wlock);
    return AIMS_OK;
}

aims_status aims_balancer_set_available(aims_balancer *b, aims_instance id, int available)
{
    if (!aimsi_obj_ok(b, AIMSI_MAGIC_BALANCER)) {
        return AIMSI_MISUSE("b is not a balancer");
    }
    pthread_mutex_lock(&b->wlock);
    lb_snap *const s = atomic_load(&b->cur); /* stable: only wlock holders swap it */
    const size_t k = s != NULL ? lb_find(s, id) : SIZE_MAX;
    if (k == SIZE_MAX) {
        pthread_mutex_unlock(&b->wlock);
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "aims_balancer_set_available: id %llu not in the set",
                         (unsigned long long)id);
    }
    const int mark = available ? 0 : 1;
    const int was = atomic_exchange(&s->st[k]->unavailable, mark);
    if (was != mark) {
        if (mark) {
            atomic_fetch_sub(&s->n_avail, 1);
        } else {
            atomic_fetch_add(&s->n_avail, 1);
        }
    }
    pthread_mutex_unlock(&b->wlock);
    return AIMS_OK;
}

/* ---- picking ------------------------------------------------------------- */

/* Usable: available, or every instance is unavailable (panic). */
static int lb_usable(const lb_snap *s, size_t i, int panic)
{
    return panic || atomic_load_explicit(&s->st[i]->unavailable, memory_order_relaxed) == 0;
}

static double lb_score(const lb_snap *s, size_t i, uint64_t now)
{
    const lb_stats *st = s->st[i];
    const uint64_t out = atomic_load_explicit(&st->outstanding, memory_order_relaxed);
    double cost = lb_bits_to_d(atomic_load_explicit(&st->cost, memory_order_relaxed));
    if (cost <= 0.0) {
        return out == 0 ? 0.0 : (LB_PENALTY + (double)out) * s->inv_w[i];
    }
    /* Idle decay toward 0 (so a shunned instance gets probed again). Below
     * tau/1024 (~10 ms) the factor is within 0.1 % of 1: skip the exp(). */
    const uint64_t stamp = atomic_load_explicit(&st->stamp, memory_order_relaxed);
    if (out == 0 && now > stamp && now - stamp >= LB_STALE_NS) {
        return 0.0; /* stale memory, nothing outstanding: probe it */
    }
    if (now > stamp && (double)(now - stamp) > LB_TAU_NS / 1024.0) {
        cost *= exp(-(double)(now - stamp) / LB_TAU_NS);
    }
    return (double)(out + 1) * cost * s->inv_w[i];
}

/* Least score over every usable instance, starting at a random offset. */
static size_t lb_scan_best(aims_balancer *b, const lb_snap *s, int panic, uint64_t now)
{
    const size_t n = s->n;
    const size_t start = lb_below((uint32_t)lb_rand(b), n);
    size_t best = SIZE_MAX;
    double best_score = 0.0;
    for (size_t k = 0; k < n; k++) {
        const size_t i = start + k < n ? start + k : start + k - n;
        if (!lb_usable(s, i, panic)) {
            continue;
        }
        const double sc = lb_score(s, i, now);
        if (best == SIZE_MAX || sc < best_score) {
            best = i;
            best_score = sc;
        }
    }
    /* A concurrent set_available() may have marked the last available one
     * since the caller read n_avail: then panic after all. */
    return best != SIZE_MAX || panic ? best : lb_scan_best(b, s, 1, now);
}

/* First usable instance at or after i (cyclic); i itself when panicking. */
static size_t lb_next_usable(const lb_snap *s, size_t i, int panic)
{
    for (size_t k = 0; k < s->n; k++) {
        const size_t j = i + k < s->n ? i + k : i + k - s->n;
        if (lb_usable(s, j, panic)) {
            return j;
        }
    }
    return i;
}

static size_t lb_pick_p2c(aims_balancer *b, const lb_snap *s, int panic)
{
    const uint64_t now = lb_now(b);
    if (s->n <= LB_FULL_SCAN_MAX) {
        return lb_scan_best(b, s, panic, now);
    }
    for (int effort = 0; effort < LB_MAX_EFFORT; effort++) {
        size_t i, j;
        aimsi_lb_draw2(lb_rand(b), s->n, &i, &j);
        const int ui = lb_usable(s, i, panic);
        const int uj = lb_usable(s, j, panic);
        if (ui && uj) {
            return lb_score(s, j, now) < lb_score(s, i, now) ? j : i;
        }
        if (ui || uj) {
            return ui ? i : j;
        }
    }
    return lb_scan_best(b, s, panic, now);
}

static size_t lb_pick_least(aims_balancer *b, const lb_snap *s, int panic)
{
    const size_t n = s->n;
    const uint64_t r = atomic_fetch_add_explicit(&b->rr, 1, memory_order_relaxed);
    const size_t start = (size_t)(r % n);
    size_t best = SIZE_MAX;
    uint64_t best_out = 0;
    uint32_t best_w = 1;
    for (size_t k = 0; k < n; k++) {
        const size_t i = start + k < n ? start + k : start + k - n;
        if (!lb_usable(s, i, panic)) {
            continue;
        }
        const uint64_t out =
            atomic_load_explicit(&s->st[i]->outstanding, memory_order_relaxed) + 1;
        /* out / w < best_out / best_w, without division (weights <= 10^4). */
        if (best == SIZE_MAX || out * best_w < best_out * s->w[i]) {
            best = i;
            best_out = out;
            best_w = s->w[i];
        }
    }
    return best != SIZE_MAX || panic ? best : lb_pick_least(b, s, 1); /* see lb_scan_best */
}

/* nginx's smooth weighted round robin: every usable instance gains its
 * weight, the largest current weight wins (first on ties) and pays back the
 * total. Caller holds swrr_lock. SIZE_MAX when nothing is usable. */
static size_t lb_swrr_step(const lb_snap *s, int panic)
{
    int64_t total = 0;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++) {
        if (!lb_usable(s, i, panic)) {
            continue;
        }
        s->cw[i] += s->w[i];
        total += s->w[i];
        if (best == SIZE_MAX || s->cw[i] > s->cw[best]) {
            best = i;
        }
    }
    if (best != SIZE_MAX) {
        s->cw[best] -= total;
    }
    return best;
}

static size_t lb_pick_swrr(aims_balancer *b, const lb_snap *s, int panic)
{
    pthread_mutex_lock(&b->swrr_lock);
    size_t best = lb_swrr_step(s, panic);
    if (best == SIZE_MAX) {
        best = lb_swrr_step(s, 1); /* see lb_scan_best */
    }
    pthread_mutex_unlock(&b->swrr_lock);
    return best;
}

static size_t lb_pick_maglev(const lb_snap *s, uint64_t key, int panic)
{
    size_t i = s->maglev[lb_mix(key) % LB_MAGLEV_M];
    /* An unavailable owner: rehash the key a few times (stays consistent for
     * this key while the marks stay), then walk to the next usable one. */
    for (uint64_t a = 1; !lb_usable(s, i, panic) && a <= LB_MAX_EFFORT; a++) {
        i = s->maglev[lb_mix(key + a * LB_GOLDEN) % LB_MAGLEV_M];
    }
    return lb_next_usable(s, i, panic);
}

static size_t lb_pick_random(aims_balancer *b, const lb_snap *s, int panic)
{
    size_t i = lb_below((uint32_t)lb_rand(b), s->n);
    for (int effort = 1; !lb_usable(s, i, panic) && effort < LB_MAX_EFFORT; effort++) {
        i = lb_below((uint32_t)lb_rand(b), s->n);
    }
    return lb_next_usable(s, i, panic);
}

static size_t lb_pick_index(aims_balancer *b, const lb_snap *s, uint64_t key)
{
    const int panic = atomic_load_explicit(&s->n_avail, memory_order_relaxed) == 0;
    switch (b->policy) {
    case AIMS_LB_P2C: return lb_pick_p2c(b, s, panic);
    case AIMS_LB_ROUND_ROBIN: {
        const uint64_t r = atomic_fetch_add_explicit(&b->rr, 1, memory_order_relaxed);
        return lb_next_usable(s, (size_t)(r % s->n), panic);
    }
    case AIMS_LB_WEIGHTED_RR: return lb_pick_swrr(b, s, panic);
    case AIMS_LB_LEAST_OUTSTANDING: return lb_pick_least(b, s, panic);
    case AIMS_LB_MAGLEV: return lb_pick_maglev(s, key, panic);
    case AIMS_LB_RANDOM: return lb_pick_random(b, s, panic);
    }
    return 0;
}

aims_status aims_balancer_pick(aims_balancer *b, uint64_t key, aims_instance *out)
{
    if (!aimsi_obj_ok(b, AIMSI_MAGIC_BALANCER) || out == NULL) {
        return AIMSI_MISUSE(out == NULL ? "out is NULL" : "b is not a balancer");
    }
    const unsigned e = lb_enter(b);
    const lb_snap *s = atomic_load(&b->cur);
    if (s == NULL || s->n == 0) {
        lb_exit(b, e);
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "aims_balancer_pick: the instance set is empty");
    }
    const size_t i = lb_pick_index(b, s, key);
    lb_stats *st = s->st[i];
    atomic_fetch_add_explicit(&st->outstanding, 1, memory_order_relaxed);
    *out = st->id;
    lb_exit(b, e);
    return AIMS_OK;
}

/* ---- feedback ------------------------------------------------------------ */

static void lb_observe(lb_stats *st, uint64_t now, double sample)
{
    /* Load + store, not exchange: racing samples may both see the same prev
     * (one gets the decay credit twice), which an EWMA shrugs off. */
    const uint64_t prev = atomic_load_explicit(&st->stamp, memory_order_relaxed);
    if (now > prev) {
        atomic_store_explicit(&st->stamp, now, memory_order_relaxed);
    }
    const double td = now > prev ? (double)(now - prev) : 0.0;
    const double w = td > 0.0 ? exp(-td / LB_TAU_NS) : 1.0;
    uint64_t cur = atomic_load_explicit(&st->cost, memory_order_relaxed);
    for (;;) {
        const double c = lb_bits_to_d(cur);
        /* Peak: a slower sample (or the first one) replaces the cost outright. */
        const double nc =
            (sample > c || c <= 0.0 || td >= LB_STALE_NS) ? sample : c * w + sample * (1.0 - w);
        if (atomic_compare_exchange_weak_explicit(&st->cost, &cur, lb_d_to_bits(nc),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            return;
        }
    }
}

aims_status aims_balancer_done(aims_balancer *b, aims_instance id, uint64_t latency_ns, int ok)
{
    if (!aimsi_obj_ok(b, AIMSI_MAGIC_BALANCER)) {
        return AIMSI_MISUSE("b is not a balancer");
    }
    const unsigned e = lb_enter(b);
    const lb_snap *s = atomic_load(&b->cur);
    const size_t k = s != NULL ? lb_find(s, id) : SIZE_MAX;
    if (k != SIZE_MAX) {
        lb_stats *st = s->st[k];
        /* Decrement, but never below zero (a stray done() must not wrap). */
        uint64_t o = atomic_load_explicit(&st->outstanding, memory_order_relaxed);
        while (o > 0 && !atomic_compare_exchange_weak_explicit(&st->outstanding, &o, o - 1,
                                                               memory_order_relaxed,
                                                               memory_order_relaxed)) {
        }
        double sample = (double)latency_ns;
        if (!ok) {
            const double c = lb_bits_to_d(atomic_load_explicit(&st->cost, memory_order_relaxed));
            sample = 2.0 * (sample > c ? sample : c);
            sample = sample < LB_FAIL_CAP_NS ? sample : LB_FAIL_CAP_NS;
        }
        lb_observe(st, lb_now(b), sample);
    }
    lb_exit(b, e);
    return AIMS_OK;
}

uint64_t aims_balancer_outstanding(const aims_balancer *b, aims_instance id)
{
    if (!aimsi_obj_ok(b, AIMSI_MAGIC_BALANCER)) {
        return 0;
    }
    /* The grace-period counters are the only mutable part a reader touches;
     * they live in the handle, so drop const for them alone. */
    aims_balancer *mb = (aims_balancer *)(uintptr_t)b;
    const unsigned e = lb_enter(mb);
    const lb_snap *s = atomic_load(&mb->cur);
    const size_t k = s != NULL ? lb_find(s, id) : SIZE_MAX;
    const uint64_t v =
        k != SIZE_MAX ? atomic_load_explicit(&s->st[k]->outstanding, memory_order_relaxed) : 0;
    lb_exit(mb, e);
    return v;
}
