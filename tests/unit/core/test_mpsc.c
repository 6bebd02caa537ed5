/*
 * test_mpsc.c -- white-box tests of src/core/aimsi_mpsc.h, the lock-free
 * hand-over list the stream transports use between callers and their I/O
 * thread: many producers and one consumer, every node taken exactly once,
 * each producer's nodes in its own order, "was empty" reported to exactly the
 * push that must wake the consumer (no lost wake-up when the consumer sleeps
 * on what push reports), and nothing leaked (the counting allocator balances:
 * producers allocate every node, the consumer frees it).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "core/aimsi_mpsc.h"
#include "testalloc.h"

typedef struct item {
    aimsi_mpsc_node node; /* first: a list node is an item */
    unsigned producer;
    unsigned seq;
} item;

/* ---- one thread ----------------------------------------------------------------------- */

static void test_mpsc_push_take_fifo(void **state)
{
    (void)state;
    aimsi_mpsc l;
    aimsi_mpsc_init(&l);
    assert_null(aimsi_mpsc_take(&l));
    item it[5];
    for (unsigned i = 0; i < 5; i++) {
        it[i].seq = i;
        /* Only the first push finds the list empty. */
        assert_int_equal(aimsi_mpsc_push(&l, &it[i].node), i == 0 ? 1 : 0);
    }
    unsigned want = 0;
    for (aimsi_mpsc_node *n = aimsi_mpsc_take(&l); n != NULL; n = n->next) {
        assert_int_equal(((item *)n)->seq, want);
        want++;
    }
    assert_int_equal(want, 5);
    assert_null(aimsi_mpsc_take(&l)); /* taken whole */
    assert_int_equal(aimsi_mpsc_push(&l, &it[0].node), 1); /* empty again */
    aimsi_mpsc_node *n = aimsi_mpsc_take(&l);
    assert_ptr_equal(n, &it[0].node);
    assert_null(n->next);
}

/* ---- many producers, one consumer ------------------------------------------------------- */

#define PRODUCERS 4u
#define PER_PRODUCER 20000u

typedef struct shared {
    aimsi_mpsc list;
    sem_t wake;           /* posted by the push that found the list empty */
    atomic_uint pushed;   /* nodes pushed by all producers */
    atomic_uint wakes;    /* posts */
    atomic_int alloc_failed;
} shared;

typedef struct producer_arg {
    shared *sh;
    unsigned id;
} producer_arg;

static void *producer_main(void *arg)
{
    const producer_arg *pa = arg;
    for (unsigned i = 0; i < PER_PRODUCER; i++) {
        item *it = aimsi_malloc(sizeof *it);
        if (it == NULL) {
            atomic_store(&pa->sh->alloc_failed, 1);
            break;
        }
        it->producer = pa->id;
        it->seq = i;
        atomic_fetch_add(&pa->sh->pushed, 1);
        if (aimsi_mpsc_push(&pa->sh->list, &it->node)) {
            atomic_fetch_add(&pa->sh->wakes, 1);
            sem_post(&pa->sh->wake);
        }
        if ((i & 1023u) == 0) {
            sched_yield(); /* vary the interleaving: bursts and single pushes */
        }
    }
    return NULL;
}

/* Wait for a post, at most 10 s (a lost wake-up fails the test instead of
 * hanging it). Returns 0 on timeout. */
static int wait_post(sem_t *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    while (sem_timedwait(s, &ts) != 0) {
        if (errno != EINTR) {
            return 0;
        }
    }
    return 1;
}

static void test_mpsc_many_producers_one_consumer(void **state)
{
    (void)state;
    static shared sh;
    aimsi_mpsc_init(&sh.list);
    assert_int_equal(sem_init(&sh.wake, 0, 0), 0);
    atomic_init(&sh.pushed, 0);
    atomic_init(&sh.wakes, 0);
    atomic_init(&sh.alloc_failed, 0);
    pthread_t thr[PRODUCERS];
    producer_arg pa[PRODUCERS];
    for (unsigned p = 0; p < PRODUCERS; p++) {
        pa[p].sh = &sh;
        pa[p].id = p;
        assert_int_equal(pthread_create(&thr[p], NULL, producer_main, &pa[p]), 0);
    }
    /* The consumer: take everything, check, free; sleep only when a take
     * found nothing, and only until the next empty -> non-empty push posts. */
    unsigned next[PRODUCERS] = {0};
    unsigned got = 0;
    unsigned takes = 0;
    int timed_out = 0;
    while (got < PRODUCERS * PER_PRODUCER) {
        aimsi_mpsc_node *n = aimsi_mpsc_take(&sh.list);
        if (n == NULL) {
            if (!wait_post(&sh.wake)) {
                timed_out = 1;
                break;
            }
            continue;
        }
        takes++;
        while (n != NULL) {
            item *it = (item *)n;
            n = n->next;
            assert_true(it->producer < PRODUCERS);
            /* Each producer's nodes arrive in its own order, none twice, none skipped. */
            assert_int_equal(it->seq, next[it->producer]);
            next[it->producer]++;
            got++;
            aimsi_free(it);
        }
    }
    for (unsigned p = 0; p < PRODUCERS; p++) {
        pthread_join(thr[p], NULL);
    }
    assert_false(timed_out); /* no lost wake-up */
    assert_int_equal(atomic_load(&sh.alloc_failed), 0);
    assert_int_equal(got, PRODUCERS * PER_PRODUCER);
    assert_int_equal(atomic_load(&sh.pushed), got);
    for (unsigned p = 0; p < PRODUCERS; p++) {
        assert_int_equal(next[p], PER_PRODUCER);
    }
    assert_null(aimsi_mpsc_take(&sh.list));
    /* One post per empty -> non-empty transition: at most one per take the
     * consumer made that found nodes (plus none for the empty ones). */
    assert_true(atomic_load(&sh.wakes) >= 1);
    assert_true(atomic_load(&sh.wakes) <= takes);
    sem_destroy(&sh.wake);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mpsc_push_take_fifo, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_mpsc_many_producers_one_consumer, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
