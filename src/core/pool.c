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
 */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "aimsi_core.h"

struct aimsi_pool {
    unsigned threads; /* including the caller */
    pthread_t *workers;
    unsigned started;

    pthread_mutex_t run_lock; /* one job at a time */
    pthread_mutex_t lock;     /* protects the fields below */
    pthread_cond_t wake;
    pthread_cond_t done;
    uint64_t generation;
    int quit;
    unsigned busy; /* workers still inside the current job */

    aimsi_task_fn fn;
    void *ctx;
    size_t n;
    atomic_size_t next;
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

static void *worker_main(void *arg)
{
    aimsi_pool *pool = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->quit && pool->generation == seen) {
            pthread_cond_wait(&pool->wake, &pool->lock);
        }
        if (pool->quit) {
            break;
        }
        seen = pool->generation;
        pthread_mutex_unlock(&pool->lock);
        drain(pool);
        pthread_mutex_lock(&pool->lock);
        if (--pool->busy == 0) {
            pthread_cond_signal(&pool->done);
        }
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static void stop_workers(aimsi_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->quit = 1;
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
    pthread_mutex_lock(&pool->run_lock);
    pthread_mutex_lock(&pool->lock);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n = n;
    atomic_store(&pool->next, 0);
    pool->busy = pool->started;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    drain(pool);

    pthread_mutex_lock(&pool->lock);
    while (pool->busy != 0) {
        pthread_cond_wait(&pool->done, &pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    pthread_mutex_unlock(&pool->run_lock);
}
