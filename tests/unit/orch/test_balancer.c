/*
 * test_balancer.c -- white-box tests of src/orch/balancer.c: exact sequences
 * (RR, nginx SWRR), P2C distinctness and load/latency avoidance on a simulated
 * clock, Maglev consistency/disruption/balance, stats kept across set changes,
 * availability and panic, concurrency (TSan) and allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <pthread.h>
#include <string.h>

#include <cmocka.h>

#include "orch/aimsi_orch.h"
#include "testalloc.h"

/* ---- helpers -------------------------------------------------------------- */

typedef struct fake_clock {
    uint64_t now;
} fake_clock;

static uint64_t fake_now(void *user)
{
    return ((const fake_clock *)user)->now;
}

static aims_balancer *mk(aims_lb_policy p, uint64_t seed, const aims_instance *ids,
                         const uint32_t *w, size_t n)
{
    aims_balancer *b = NULL;
    assert_int_equal(aims_balancer_create(p, seed, &b), AIMS_OK);
    assert_int_equal(aims_balancer_set_instances(b, ids, w, n), AIMS_OK);
    return b;
}

static aims_instance pick_done(aims_balancer *b, uint64_t key)
{
    aims_instance id = 0;
    assert_int_equal(aims_balancer_pick(b, key, &id), AIMS_OK);
    assert_int_equal(aims_balancer_done(b, id, 1000, 1), AIMS_OK);
    return id;
}

/* ---- arguments ------------------------------------------------------------ */

static void test_balancer_create_rejects_bad_args(void **state)
{
    (void)state;
    aims_balancer *b = NULL;
    assert_int_equal(aims_balancer_create(AIMS_LB_P2C, 1, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_balancer_create((aims_lb_policy)0, 1, &b), AIMS_E_INVAL);
    assert_int_equal(aims_balancer_create((aims_lb_policy)7, 1, &b), AIMS_E_INVAL);
    assert_null(b);
    aims_instance id = 0;
    assert_int_equal(aims_balancer_pick(NULL, 0, &id), AIMS_E_MISUSE);
    assert_int_equal(aims_balancer_done(NULL, 1, 0, 1), AIMS_E_MISUSE);
    assert_int_equal(aims_balancer_set_instances(NULL, NULL, NULL, 0), AIMS_E_MISUSE);
    assert_int_equal(aims_balancer_outstanding(NULL, 1), 0);
    aims_balancer_destroy(NULL);
}

static void test_balancer_set_instances_invalid_keeps_old_set(void **state)
{
    (void)state;
    const aims_instance ids[] = {1, 2, 3};
    aims_balancer *b = mk(AIMS_LB_ROUND_ROBIN, 1, ids, NULL, 3);
    const aims_instance zero[] = {4, 0};
    const aims_instance dup[] = {4, 5, 4};
    const uint32_t w0[] = {1, 0};
    const uint32_t wbig[] = {1, 10001};
    assert_int_equal(aims_balancer_set_instances(b, zero, NULL, 2), AIMS_E_INVAL);
    assert_int_equal(aims_balancer_set_instances(b, dup, NULL, 3), AIMS_E_INVAL);
    assert_int_equal(aims_balancer_set_instances(b, ids, w0, 2), AIMS_E_INVAL);
    assert_int_equal(aims_balancer_set_instances(b, ids, wbig, 2), AIMS_E_INVAL);
    assert_int_equal(aims_balancer_set_instances(b, NULL, NULL, 2), AIMS_E_MISUSE);
    for (int k = 0; k < 6; k++) {
        assert_int_equal(pick_done(b, 0), ids[k % 3]);
    }
    /* Empty set: NOTFOUND, not a crash. */
    assert_int_equal(aims_balancer_set_instances(b, NULL, NULL, 0), AIMS_OK);
    aims_instance id = 99;
    assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_E_NOTFOUND);
    assert_int_equal(id, 99);
    aims_balancer_destroy(b);
    /* A fresh balancer without a set is empty too. */
    assert_int_equal(aims_balancer_create(AIMS_LB_P2C, 1, &b), AIMS_OK);
    assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_E_NOTFOUND);
    assert_int_equal(aims_balancer_done(b, 5, 10, 1), AIMS_OK); /* unknown: ignored */
    aims_balancer_destroy(b);
}

/* ---- exact sequences ------------------------------------------------------ */

static void test_balancer_rr_exact_rotation(void **state)
{
    (void)state;
    const aims_instance ids[] = {11, 22, 33, 44};
    aims_balancer *b = mk(AIMS_LB_ROUND_ROBIN, 7, ids, NULL, 4);
    for (int k = 0; k < 40; k++) {
        assert_int_equal(pick_done(b, (uint64_t)k), ids[k % 4]);
    }
    aims_balancer_destroy(b);
}

static void test_balancer_swrr_nginx_sequence(void **state)
{
    (void)state;
    const aims_instance ids[] = {1, 2, 3}; /* a, b, c */
    const uint32_t w[] = {5, 1, 1};
    const aims_instance want[] = {1, 1, 2, 1, 3, 1, 1};
    aims_balancer *b = mk(AIMS_LB_WEIGHTED_RR, 7, ids, w, 3);
    for (int k = 0; k < 70; k++) {
        assert_int_equal(pick_done(b, 0), want[k % 7]);
    }
    aims_balancer_destroy(b);
}

static void test_balancer_least_outstanding_spreads(void **state)
{
    (void)state;
    const aims_instance ids[] = {1, 2, 3};
    aims_balancer *b = mk(AIMS_LB_LEAST_OUTSTANDING, 7, ids, NULL, 3);
    for (int k = 0; k < 30; k++) {
        aims_instance id = 0;
        assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_OK);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aims_balancer_outstanding(b, ids[i]), 10);
    }
    /* Finish everything on 2: the next picks go there until it catches up. */
    for (int k = 0; k < 10; k++) {
        assert_int_equal(aims_balancer_done(b, 2, 100, 1), AIMS_OK);
    }
    for (int k = 0; k < 10; k++) {
        aims_instance id = 0;
        assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_OK);
        assert_int_equal(id, 2);
    }
    aims_balancer_destroy(b);
}

static void test_balancer_random_deterministic_and_uniform(void **state)
{
    (void)state;
    aims_instance ids[8];
    for (int i = 0; i < 8; i++) {
        ids[i] = (aims_instance)(100 + i);
    }
    aims_balancer *b1 = mk(AIMS_LB_RANDOM, 42, ids, NULL, 8);
    aims_balancer *b2 = mk(AIMS_LB_RANDOM, 42, ids, NULL, 8);
    int count[8] = {0};
    for (int k = 0; k < 80000; k++) {
        const aims_instance a = pick_done(b1, 0);
        assert_int_equal(a, pick_done(b2, 0));
        count[a - 100]++;
    }
    for (int i = 0; i < 8; i++) {
        assert_in_range(count[i], 9500, 10500);
    }
    aims_balancer_destroy(b1);
    aims_balancer_destroy(b2);
}

/* ---- P2C ------------------------------------------------------------------ */

static void test_balancer_p2c_draw_distinct(void **state)
{
    (void)state;
    uint64_t z = 12345;
    for (size_t n = 2; n <= 64; n++) {
        int seen[64][64];
        memset(seen, 0, sizeof seen);
        for (int k = 0; k < 20000; k++) {
            z += 0x9e3779b97f4a7c15ull;
            uint64_t r = z;
            r = (r ^ (r >> 30)) * 0xbf58476d1ce4e5b9ull;
            r = (r ^ (r >> 27)) * 0x94d049bb133111ebull;
            r ^= r >> 31;
            size_t i = 0, j = 0;
            aimsi_lb_draw2(r, n, &i, &j);
            assert_true(i < n && j < n);
            assert_true(i != j);
            seen[i][j] = 1;
        }
        if (n <= 8) { /* every ordered pair of distinct instances occurs */
            for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < n; j++) {
                    assert_int_equal(seen[i][j], i != j);
                }
            }
        }
    }
}

/* Simulate n instances (the first n_slow ones 3x slower) on a fake clock:
 * a request every `gap_ns`, each completing after its instance's latency with
 * done() feedback. Returns the slow instances' share of picks. */
static double p2c_slow_share(size_t n, size_t n_slow, uint64_t gap_ns, int picks)
{
    enum { MAXQ = 4096 };
    aims_instance ids[16];
    for (size_t i = 0; i < n; i++) {
        ids[i] = (aims_instance)(i + 1);
    }
    fake_clock clk = {1000000000ull};
    aims_balancer *b = NULL;
    assert_int_equal(aims_balancer_create(AIMS_LB_P2C, 99, &b), AIMS_OK);
    assert_int_equal(aims_balancer_set_clock(b, fake_now, &clk), AIMS_OK);
    assert_int_equal(aims_balancer_set_instances(b, ids, NULL, n), AIMS_OK);
    static aims_instance q_id[MAXQ];
    static uint64_t q_end[MAXQ], q_lat[MAXQ];
    size_t nq = 0;
    int slow = 0;
    for (int k = 0; k < picks; k++) {
        clk.now += gap_ns;
        for (size_t r = 0; r < nq;) {
            if (q_end[r] <= clk.now) {
                assert_int_equal(aims_balancer_done(b, q_id[r], q_lat[r], 1), AIMS_OK);
                nq--;
                q_id[r] = q_id[nq];
                q_end[r] = q_end[nq];
                q_lat[r] = q_lat[nq];
            } else {
                r++;
            }
        }
        aims_instance id = 0;
        assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_OK);
        const int is_slow = id <= n_slow;
        slow += is_slow;
        /* 1 ms base, 3 ms slow, plus a queueing term per outstanding request. */
        const uint64_t out = aims_balancer_outstanding(b, id);
        const uint64_t lat = (is_slow ? 3000000ull : 1000000ull) * (1 + out / 4);
        assert_true(nq < MAXQ);
        q_id[nq] = id;
        q_end[nq] = clk.now + lat;
        q_lat[nq] = lat;
        nq++;
    }
    aims_balancer_destroy(b);
    return (double)slow / (double)picks;
}

static void test_balancer_p2c_avoids_slow_instance(void **state)
{
    (void)state;
    /* n = 4 (full scan): one slow of four; fair share 25 %. */
    const double s4 = p2c_slow_share(4, 1, 250000, 20000);
    assert_true(s4 < 0.125);
    assert_true(s4 > 0.0); /* still probed: not black-holed forever */
    /* n = 8 (two distinct random candidates): two slow; fair share 25 %. */
    const double s8 = p2c_slow_share(8, 2, 125000, 20000);
    assert_true(s8 < 0.125);
}

static void test_balancer_p2c_avoids_high_outstanding(void **state)
{
    (void)state;
    for (size_t n = 4; n <= 8; n += 4) {
        aims_instance ids[8];
        for (size_t i = 0; i < n; i++) {
            ids[i] = (aims_instance)(i + 1);
        }
        fake_clock clk = {1000};
        aims_balancer *b = NULL;
        assert_int_equal(aims_balancer_create(AIMS_LB_P2C, 5, &b), AIMS_OK);
        assert_int_equal(aims_balancer_set_clock(b, fake_now, &clk), AIMS_OK);
        assert_int_equal(aims_balancer_set_instances(b, ids, NULL, n), AIMS_OK);
        /* Instance 1 never answers; the others answer at once in 1 ms. */
        int stuck = 0;
        for (int k = 0; k < 4000; k++) {
            clk.now += 100000;
            aims_instance id = 0;
            assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_OK);
            if (id == 1) {
                stuck++;
            } else {
                assert_int_equal(aims_balancer_done(b, id, 1000000, 1), AIMS_OK);
            }
        }
        assert_true(stuck < 4000 / (int)n / 10);
        assert_int_equal(aims_balancer_outstanding(b, 1), (uint64_t)stuck);
        aims_balancer_destroy(b);
    }
}

static void test_balancer_weights_shift_p2c_and_random_maglev(void **state)
{
    (void)state;
    /* P2C with equal latency: weight 3 vs 1 -> the heavy one gets most picks. */
    const aims_instance ids[] = {1, 2};
    const uint32_t w[] = {3, 1};
    fake_clock clk = {1000};
    aims_balancer *b = NULL;
    assert_int_equal(aims_balancer_create(AIMS_LB_P2C, 5, &b), AIMS_OK);
    assert_int_equal(aims_balancer_set_clock(b, fake_now, &clk), AIMS_OK);
    assert_int_equal(aims_balancer_set_instances(b, ids, w, 2), AIMS_OK);
    int heavy = 0;
    aims_instance held[8];
    for (int k = 0; k < 4000; k++) {
        /* keep 4 requests in flight so outstanding counts matter */
        for (int h = 0; h < 4; h++) {
            assert_int_equal(aims_balancer_pick(b, 0, &held[h]), AIMS_OK);
            heavy += held[h] == 1;
        }
        clk.now += 1000000;
        for (int h = 0; h < 4; h++) {
            assert_int_equal(aims_balancer_done(b, held[h], 1000000, 1), AIMS_OK);
        }
    }
    assert_true(heavy > 16000 * 55 / 100);
    aims_balancer_destroy(b);
    /* Maglev weights: table share follows the weights. */
    b = mk(AIMS_LB_MAGLEV, 5, ids, w, 2);
    heavy = 0;
    for (uint64_t key = 0; key < 100000; key++) {
        heavy += pick_done(b, key) == 1;
    }
    assert_in_range(heavy, 72000, 78000);
    aims_balancer_destroy(b);
}

static void test_balancer_p2c_failures_and_idle_decay(void **state)
{
    (void)state;
    const aims_instance ids[] = {1, 2};
    fake_clock clk = {1000000000ull};
    aims_balancer *b = NULL;
    assert_int_equal(aims_balancer_create(AIMS_LB_P2C, 5, &b), AIMS_OK);
    assert_int_equal(aims_balancer_set_clock(b, fake_now, &clk), AIMS_OK);
    assert_int_equal(aims_balancer_set_instances(b, ids, NULL, 2), AIMS_OK);
    /* Both answer in 1 ms, but 1 fails fast (10 us): failing fast must not win. */
    int to1 = 0;
    for (int k = 0; k < 2000; k++) {
        clk.now += 1000000;
        aims_instance id = 0;
        assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_OK);
        to1 += id == 1;
        assert_int_equal(aims_balancer_done(b, id, id == 1 ? 10000 : 1000000, id != 1), AIMS_OK);
    }
    assert_true(to1 < 2000 / 10);
    /* Instance 1 recovers but gets no traffic; after ~a minute of idling its
     * decayed cost falls below 2's fresh one and it is probed again. */
    for (int k = 0; k < 60; k++) {
        clk.now += 1000000000ull;
        aims_instance id = 0;
        assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_OK);
        assert_int_equal(aims_balancer_done(b, id, 1000000, 1), AIMS_OK);
        if (id == 1) {
            aims_balancer_destroy(b);
            return;
        }
    }
    fail_msg("idle instance never probed again");
}

/* ---- Maglev --------------------------------------------------------------- */

static void test_balancer_maglev_consistent_and_balanced(void **state)
{
    (void)state;
    aims_instance ids[10];
    for (int i = 0; i < 10; i++) {
        ids[i] = (aims_instance)(1000 + 7 * i);
    }
    aims_balancer *b = mk(AIMS_LB_MAGLEV, 1, ids, NULL, 10);
    aims_balancer *b2 = mk(AIMS_LB_MAGLEV, 2, ids, NULL, 10); /* seed does not matter */
    enum { KEYS = 200000 };
    int count[10] = {0};
    for (uint64_t key = 0; key < KEYS; key++) {
        const aims_instance a = pick_done(b, key);
        assert_int_equal(a, pick_done(b, key));
        assert_int_equal(a, pick_done(b2, key));
        count[(a - 1000) / 7]++;
    }
    for (int i = 0; i < 10; i++) {
        assert_in_range(count[i], KEYS / 10 * 95 / 100, KEYS / 10 * 105 / 100);
    }
    aims_balancer_destroy(b);
    aims_balancer_destroy(b2);
}

static void test_balancer_maglev_minimal_disruption(void **state)
{
    (void)state;
    aims_instance ids[10];
    for (int i = 0; i < 10; i++) {
        ids[i] = (aims_instance)(i + 1);
    }
    aims_balancer *b = mk(AIMS_LB_MAGLEV, 1, ids, NULL, 10);
    enum { KEYS = 100000 };
    static aims_instance before[KEYS];
    for (uint64_t key = 0; key < KEYS; key++) {
        before[key] = pick_done(b, key);
    }
    /* Remove instance 4. */
    aims_instance rest[9];
    for (int i = 0, k = 0; i < 10; i++) {
        if (ids[i] != 4) {
            rest[k++] = ids[i];
        }
    }
    assert_int_equal(aims_balancer_set_instances(b, rest, NULL, 9), AIMS_OK);
    int moved_other = 0;
    for (uint64_t key = 0; key < KEYS; key++) {
        const aims_instance now = pick_done(b, key);
        assert_int_not_equal(now, 4);
        if (before[key] != 4 && now != before[key]) {
            moved_other++;
        }
    }
    assert_true(moved_other <= KEYS * 15 / 100);
    aims_balancer_destroy(b);
}

/* ---- set changes and availability ----------------------------------------- */

static void test_balancer_set_instances_keeps_stats(void **state)
{
    (void)state;
    const aims_instance a[] = {1, 2, 3};
    aims_balancer *b = mk(AIMS_LB_ROUND_ROBIN, 1, a, NULL, 3);
    for (int k = 0; k < 6; k++) {
        aims_instance id = 0;
        assert_int_equal(aims_balancer_pick(b, 0, &id), AIMS_OK);
    }
    assert_int_equal(aims_balancer_outstanding(b, 2), 2);
    const aims_instance c[] = {4, 3, 2};
    assert_int_equal(aims_balancer_set_instances(b, c, NULL, 3), AIMS_OK);
    assert_int_equal(aims_balancer_outstanding(b, 2), 2);
    assert_int_equal(aims_balancer_outstanding(b, 3), 2);
    assert_int_equal(aims_balancer_outstanding(b, 4), 0);
    assert_int_equal(aims_balancer_outstanding(b, 1), 0); /* gone */
    assert_int_equal(aims_balancer_done(b, 1, 10, 1), AIMS_OK); /* ignored */
    assert_int_equal(aims_balancer_done(b, 2, 10, 1), AIMS_OK);
    assert_int_equal(aims_balancer_outstanding(b, 2), 1);
    /* done() never drives a count below zero */
    for (int k = 0; k < 3; k++) {
        assert_int_equal(aims_balancer_done(b, 4, 10, 0), AIMS_OK);
    }
    assert_int_equal(aims_balancer_outstanding(b, 4), 0);
    aims_balancer_destroy(b);
}

static void test_balancer_available_marks_and_panic(void **state)
{
    (void)state;
    const aims_lb_policy pols[] = {AIMS_LB_P2C,    AIMS_LB_ROUND_ROBIN, AIMS_LB_WEIGHTED_RR,
                                   AIMS_LB_LEAST_OUTSTANDING, AIMS_LB_MAGLEV, AIMS_LB_RANDOM};
    const aims_instance ids[] = {1, 2, 3, 4, 5, 6};
    for (size_t p = 0; p < sizeof pols / sizeof pols[0]; p++) {
        aims_balancer *b = mk(pols[p], 3, ids, NULL, 6);
        assert_int_equal(aims_balancer_set_available(b, 99, 0), AIMS_E_NOTFOUND);
        assert_int_equal(aims_balancer_set_available(b, 2, 0), AIMS_OK);
        assert_int_equal(aims_balancer_set_available(b, 5, 0), AIMS_OK);
        assert_int_equal(aims_balancer_set_available(b, 5, 0), AIMS_OK); /* idempotent */
        int seen[7] = {0};
        for (uint64_t k = 0; k < 600; k++) {
            seen[pick_done(b, k * 7919)]++;
        }
        assert_int_equal(seen[2], 0);
        assert_int_equal(seen[5], 0);
        /* Marks survive a set change for kept ids. */
        const aims_instance more[] = {1, 2, 3, 4, 5, 6, 7};
        assert_int_equal(aims_balancer_set_instances(b, more, NULL, 7), AIMS_OK);
        for (uint64_t k = 0; k < 300; k++) {
            const aims_instance id = pick_done(b, k * 7919);
            assert_true(id != 2 && id != 5);
        }
        /* Every instance unavailable: panic, picks use them all. */
        for (aims_instance id = 1; id <= 7; id++) {
            assert_int_equal(aims_balancer_set_available(b, id, 0), AIMS_OK);
        }
        int any = 0;
        for (uint64_t k = 0; k < 200; k++) {
            const aims_instance id = pick_done(b, k * 7919);
            assert_in_range(id, 1, 7);
            any |= 1 << id;
        }
        assert_true(any != 0);
        assert_int_equal(aims_balancer_set_available(b, 3, 1), AIMS_OK);
        for (uint64_t k = 0; k < 50; k++) {
            assert_int_equal(pick_done(b, k), 3);
        }
        aims_balancer_destroy(b);
    }
}

/* ---- concurrency (run under TSan) ----------------------------------------- */

typedef struct conc_ctx {
    aims_balancer *b;
    atomic_int stop;
    atomic_long picks;
    int seed;
} conc_ctx;

static void *conc_picker(void *arg)
{
    conc_ctx *c = arg;
    uint64_t key = 0;
    long n = 0;
    while (!atomic_load(&c->stop) || n < 2000) {
        aims_instance id = 0;
        const aims_status rc = aims_balancer_pick(c->b, key++, &id);
        if (rc == AIMS_OK) {
            (void)aims_balancer_outstanding(c->b, id);
            (void)aims_balancer_done(c->b, id, 1000 + (key % 7) * 100, (int)(key % 5 != 0));
        } else if (rc != AIMS_E_NOTFOUND) {
            atomic_store(&c->picks, -1000000000L);
        }
        n++;
    }
    atomic_fetch_add(&c->picks, n);
    return NULL;
}

static void *conc_writer(void *arg)
{
    conc_ctx *c = arg;
    aims_instance ids[12];
    for (int round = 0; round < 300; round++) {
        const size_t n = (size_t)(round % 12);
        for (size_t i = 0; i < n; i++) {
            ids[i] = (aims_instance)((size_t)round % 3 + i + 1); /* overlapping sets */
        }
        if (aims_balancer_set_instances(c->b, ids, NULL, n) != AIMS_OK) {
            atomic_store(&c->picks, -1000000000L);
        }
        if (n > 2) {
            (void)aims_balancer_set_available(c->b, ids[1], round & 1);
        }
    }
    atomic_store(&c->stop, 1);
    return NULL;
}

static void test_balancer_concurrent_pick_while_replacing(void **state)
{
    (void)state;
    const aims_lb_policy pols[] = {AIMS_LB_P2C, AIMS_LB_WEIGHTED_RR, AIMS_LB_MAGLEV,
                                   AIMS_LB_LEAST_OUTSTANDING, AIMS_LB_ROUND_ROBIN, AIMS_LB_RANDOM};
    for (size_t p = 0; p < sizeof pols / sizeof pols[0]; p++) {
        conc_ctx c;
        memset(&c, 0, sizeof c);
        assert_int_equal(aims_balancer_create(pols[p], 17, &c.b), AIMS_OK);
        pthread_t th[5];
        for (int t = 0; t < 4; t++) {
            assert_int_equal(pthread_create(&th[t], NULL, conc_picker, &c), 0);
        }
        assert_int_equal(pthread_create(&th[4], NULL, conc_writer, &c), 0);
        for (int t = 0; t < 5; t++) {
            assert_int_equal(pthread_join(th[t], NULL), 0);
        }
        assert_true(atomic_load(&c.picks) >= 4 * 2000);
        /* Every picked request was finished: nothing outstanding remains. */
        for (aims_instance id = 1; id <= 14; id++) {
            assert_int_equal(aims_balancer_outstanding(c.b, id), 0);
        }
        aims_balancer_destroy(c.b);
    }
}

/* ---- allocation failures -------------------------------------------------- */

static aims_status op_lifecycle(void *ctx)
{
    const aims_lb_policy policy = *(const aims_lb_policy *)ctx;
    aims_balancer *b = NULL;
    aims_status rc = aims_balancer_create(policy, 3, &b);
    if (rc != AIMS_OK) {
        return rc;
    }
    aims_instance ids[10];
    for (int i = 0; i < 10; i++) {
        ids[i] = (aims_instance)(i + 1);
    }
    rc = aims_balancer_set_instances(b, ids, NULL, 10);
    aims_instance got = 0;
    if (rc == AIMS_OK) {
        rc = aims_balancer_pick(b, 77, &got);
    }
    if (rc == AIMS_OK) {
        rc = aims_balancer_done(b, got, 500, 1);
    }
    if (rc == AIMS_OK) {
        rc = aims_balancer_set_instances(b, ids + 3, NULL, 7); /* keep 7, drop 3 */
    }
    if (rc == AIMS_OK) {
        ids[0] = 50;
        rc = aims_balancer_set_instances(b, ids, NULL, 5); /* 4 kept, 1 new */
    }
    if (rc == AIMS_OK) {
        rc = aims_balancer_pick(b, 78, &got);
    }
    aims_balancer_destroy(b);
    return rc;
}

static void test_balancer_alloc_failure_loop(void **state)
{
    (void)state;
    aims_lb_policy p = AIMS_LB_P2C;
    ta_fail_loop("balancer_p2c", op_lifecycle, &p);
    p = AIMS_LB_MAGLEV;
    ta_fail_loop("balancer_maglev", op_lifecycle, &p);
    p = AIMS_LB_WEIGHTED_RR;
    ta_fail_loop("balancer_swrr", op_lifecycle, &p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_balancer_create_rejects_bad_args, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_set_instances_invalid_keeps_old_set,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_rr_exact_rotation, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_swrr_nginx_sequence, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_least_outstanding_spreads, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_random_deterministic_and_uniform, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_p2c_draw_distinct, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_p2c_avoids_slow_instance, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_p2c_avoids_high_outstanding, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_p2c_failures_and_idle_decay, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_weights_shift_p2c_and_random_maglev,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_maglev_consistent_and_balanced, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_maglev_minimal_disruption, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_set_instances_keeps_stats, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_available_marks_and_panic, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_concurrent_pick_while_replacing, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_balancer_alloc_failure_loop, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name("balancer", tests, NULL, NULL);
}
