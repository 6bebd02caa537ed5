/*
 * pool.c -- a small fork-join thread pool.
 *
 * Shape: `threads - 1` workers sleep on a condition variable; aimsi_pool_run()
 * publishes one job (fn, ctx, n), wakes them, and works on it too. Work items
 * are claimed with an atomic counter, so uneven items balance themselves.
 * A generation number tells sleeping workers a new job arrived (condition
 * variables may wake spuriously). Concurrent runs are serialised by run_lock:
 * a pool is one set of cores, and running two jobs on it at once would only
 * oversubscribe them.
 *
 * Spinning. Waking a sleeping worker through a futex costs ~20 us here, more
 * than a training GEMM's half. aimsi_pool_set_spin() lets a pool's workers
 * (and the caller waiting for them) poll for up to `spin_us` before they
 * sleep, so back-to-back jobs -- the GEMMs of a training step -- are handed
 * over through memory. generation and busy are atomics for that; the mutex
 * and condition variables stay for the sleeping path, and every change a
 * sleeper waits for is still published under the mutex, so no wake-up is lost.
 *
 * Start and join. aimsi_pool_run is aimsi_pool_start (publish the job) +
 * aimsi_pool_join (drain and wait) back to back; a caller with work of its
 * own that the job does not touch (the trainer's output layer while the
 * workers gather the next batch) does that work between the two halves.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#include "aimsi_core.h"

struct aimsi_pool {
    unsigned threads; /* including the caller */
    pthread_t *workers;
    unsigned started;

    pthread_mutex_t run_lock; /* one job at a time */
    pthread_mutex_t lock;     /* protects the fields below */
    pthread_cond_t wake;
    pthread_cond_t done;
    atomic_uint_fast64_t generation;
    atomic_int quit;
    atomic_uint busy;       /* workers still inside the current job */
    atomic_uint spin_us;    /* poll this long before sleeping (0: sleep at once) */

    aimsi_task_fn fn;
    void *ctx;
    size_t n;
    atomic_size_t next;
    int started_async; /* aimsi_pool_start ran and its join did not (run_lock held) */
};

unsigned aimsi_cpu_count(void)
{
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : (unsigned)n;
}

static void drain(aimsi_pool *pool)
{
    for (;;) {
        const size_t i = atomic_fetch_add(&pool->next, 1);
        if (i >= pool->n) {
            return;
        }
        pool->fn(pool->ctx, i);
    }
}

/* Poll until cond(pool, arg) holds or spin_us pass; returns whether it held. */
static int spin_until(aimsi_pool *pool, int (*cond)(aimsi_pool *, uint64_t), uint64_t arg)
{
    const unsigned us = atomic_load_explicit(&pool->spin_us, memory_order_relaxed);
    if (us == 0) {
        return cond(pool, arg);
    }
    const uint64_t end = aimsi_now_ns() + (uint64_t)us * 1000u;
    for (unsigned i = 1;; i++) {
        if (cond(pool, arg)) {
            return 1;
        }
        if ((i & 15u) == 0) {
            if (aimsi_now_ns() >= end) {
                return 0;
            }
            sched_yield(); /* an oversubscribed machine: let the thread we wait for run */
        }
        CPU_RELAX();
    }
}

static int job_arrived(aimsi_pool *pool, uint64_t seen)
{
    return atomic_load(&pool->quit) || atomic_load(&pool->generation) != seen;
}

static int job_finished(aimsi_pool *pool, uint64_t unused)
{
    (void)unused;
    return atomic_load(&pool->busy) == 0;
}

static void *worker_main(void *arg)
{
    aimsi_pool *pool = arg;
    uint64_t seen = 0;
    for (;;) {
        if (!spin_until(pool, job_arrived, seen)) {
            pthread_mutex_lock(&pool->lock);
            while (!job_arrived(pool, seen)) {
                pthread_cond_wait(&pool->wake, &pool->lock);
            }
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load(&pool->quit)) {
            break;
        }
        seen = atomic_load(&pool->generation);
        drain(pool);
        if (atomic_fetch_sub(&pool->busy, 1) == 1) {
            pthread_mutex_lock(&pool->lock); /* the caller may be between check and wait */
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->lock);
        }
    }
    return NULL;
}

static void stop_workers(aimsi_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->quit, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < pool->started; i++) {
        pthread_join(pool->workers[i], NULL);
    }
    pool->started = 0;
}

aims_status aimsi_pool_create(unsigned threads, aimsi_pool **out)
{
    if (threads == 0) {
        threads = aimsi_cpu_count();
    }
    aimsi_pool *pool = aimsi_calloc(1, sizeof *pool);
    if (pool == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "out of memory creating a thread pool");
    }
    pool->threads = threads;
    pool->workers = aimsi_calloc(threads, sizeof *pool->workers);
    if (pool->workers == NULL) {
        aimsi_free(pool);
        return aimsi_err(NULL, AIMS_E_NOMEM, "out of memory creating a thread pool");
    }
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->quit, 0);
    atomic_init(&pool->busy, 0);
    atomic_init(&pool->spin_us, 0);
    pthread_mutex_init(&pool->run_lock, NULL);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    for (unsigned i = 0; i + 1 < threads; i++) {
        if (pthread_create(&pool->workers[i], NULL, worker_main, pool) != 0) {
            aimsi_pool_destroy(pool);
            return aimsi_err(NULL, AIMS_E_BACKEND, "cannot start thread %u of %u", i + 1,
                             threads - 1);
        }
        pool->started++;
    }
    *out = pool;
    return AIMS_OK;
}

void aimsi_pool_destroy(aimsi_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    stop_workers(pool);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    pthread_mutex_destroy(&pool->run_lock);
    aimsi_free(pool->workers);
    aimsi_free(pool);
}

unsigned aimsi_pool_threads(const aimsi_pool *pool)
{
    return pool == NULL ? 1u : pool->threads;
}

void aimsi_pool_run(aimsi_pool *pool, size_t n, aimsi_task_fn fn, void *ctx)
{
    if (pool == NULL || pool->started == 0 || n <= 1) {
        for (size_t i = 0; i < n; i++) {
            fn(ctx, i);
        }
        return;
    }
    aimsi_pool_start(pool, n, fn, ctx);
    aimsi_pool_join(pool);
}

/* The first half of aimsi_pool_run: publish the job and return. The caller
 * keeps run_lock until its aimsi_pool_join (no other run can start in
 * between) and does its own work meanwhile; the join drains what the workers
 * left and waits for them. */
void aimsi_pool_start(aimsi_pool *pool, size_t n, aimsi_task_fn fn, void *ctx)
{
    if (pool == NULL || pool->started == 0 || n == 0) {
        for (size_t i = 0; i < n; i++) {
            fn(ctx, i);
        }
        return;
    }
    pthread_mutex_lock(&pool->run_lock);
    pthread_mutex_lock(&pool->lock);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n = n;
    atomic_store(&pool->next, 0);
    atomic_store(&pool->busy, pool->started);
    atomic_fetch_add(&pool->generation, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    pool->started_async = 1; /* only the run_lock holder reads or writes it */
}

void aimsi_pool_join(aimsi_pool *pool)
{
    if (pool == NULL || !pool->started_async) {
        return;
    }
    pool->started_async = 0;
    drain(pool);
    if (!spin_until(pool, job_finished, 0)) {
        pthread_mutex_lock(&pool->lock);
        while (!job_finished(pool, 0)) {
            pthread_cond_wait(&pool->done, &pool->lock);
        }
        pthread_mutex_unlock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->run_lock);
}

void aimsi_pool_set_spin(aimsi_pool *pool, unsigned spin_us)
{
    if (pool != NULL) {
        atomic_store(&pool->spin_us, spin_us);
    }
}
