/*
 * client_pool.c -- recycled blocks for what every call allocates on the
 * caller's thread and frees on the I/O thread: its cl_call (async), its
 * cl_pending (each attempt) and an idempotent async call's request copy
 * (an aims_msg, ~10 KB, with room for a small request's bytes), and the
 * encoded request frames that the I/O thread frees after its writev: three
 * pools per client (by block size).
 *
 * Why. With many async calls in flight on one connection the caller's thread
 * allocates the call and its pending and the connection's I/O thread frees
 * them when the reply arrives, so every block crosses threads. glibc's
 * per-thread cache keeps only 7 blocks of a size: the rest of a burst of 64
 * replies is freed into the caller thread's arena under that arena's lock,
 * while the caller mallocs the next calls from the same arena -- a contended
 * lock (futex sleeps and wakes) on the hot path of pipelined calls (goal
 * P14). The pool hands the blocks straight back to the allocating side.
 *
 * How. put (any thread) pushes a block onto a lock-free stack (`ret`, a CAS
 * push). get takes from a list of its own (`own`, under the pool's mutex,
 * which only allocating threads take -- never the I/O thread) and, when that
 * is empty, takes the whole `ret` stack with one atomic exchange: popping
 * everything at once has no ABA problem, unlike popping one node. At most
 * `keep` blocks are kept (a rough count); beyond that put frees. Every
 * block has a small header naming its pool (NULL: an oversize block from
 * aimsi_malloc), so put needs nothing but the pointer. Blocks come from
 * aimsi_malloc and the pool frees what it holds when the client is destroyed,
 * after every call finished, so the counting allocator balances.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_client.h"

/* Header in front of every block: 16 bytes, so the payload keeps malloc's
 * 16-byte alignment. */
typedef struct cl_blk {
    struct cl_blk *next; /* on `own` or `ret` */
    cl_pool *pool;       /* NULL: not pooled (oversize) */
} cl_blk;

void aimsi_client_pool_init(cl_pool *pl, size_t block, size_t keep)
{
    pl->block = block;
    pl->keep = keep;
    pthread_mutex_init(&pl->mu, NULL);
    pl->own = NULL;
    atomic_init(&pl->ret, NULL);
    atomic_init(&pl->kept, 0);
}

static void free_list(cl_blk *b)
{
    while (b != NULL) {
        cl_blk *nx = b->next;
        aimsi_free(b);
        b = nx;
    }
}

void aimsi_client_pool_fini(cl_pool *pl)
{
    free_list(pl->own);
    free_list(atomic_exchange(&pl->ret, NULL));
    pl->own = NULL;
    pthread_mutex_destroy(&pl->mu);
}

/* A kept block, or NULL (allocating threads). */
static cl_blk *pool_pop(cl_pool *pl)
{
    pthread_mutex_lock(&pl->mu);
    if (pl->own == NULL) {
        pl->own = atomic_exchange_explicit(&pl->ret, NULL, memory_order_acquire);
    }
    cl_blk *b = pl->own;
    if (b != NULL) {
        pl->own = b->next;
    }
    pthread_mutex_unlock(&pl->mu);
    if (b != NULL) {
        atomic_fetch_sub_explicit(&pl->kept, 1, memory_order_relaxed);
    }
    return b;
}

/* Keep b (any thread), or free it when the pool holds `keep` already. */
static void pool_push(cl_pool *pl, cl_blk *b)
{
    if (atomic_fetch_add_explicit(&pl->kept, 1, memory_order_relaxed) >= pl->keep) {
        atomic_fetch_sub_explicit(&pl->kept, 1, memory_order_relaxed);
        aimsi_free(b);
        return;
    }
    cl_blk *head = atomic_load_explicit(&pl->ret, memory_order_relaxed);
    do {
        b->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&pl->ret, &head, b, memory_order_release,
                                                    memory_order_relaxed));
}

void *aimsi_client_pool_take(cl_pool *pl, size_t size)
{
    cl_blk *b = NULL;
    if (size <= pl->block) {
        b = pool_pop(pl);
        if (b == NULL) {
            b = aimsi_malloc(sizeof(cl_blk) + pl->block);
        }
        if (b != NULL) {
            b->pool = pl;
        }
    } else {
        b = aimsi_malloc(sizeof(cl_blk) + size);
        if (b != NULL) {
            b->pool = NULL;
        }
    }
    return b != NULL ? b + 1 : NULL;
}

void *aimsi_client_pool_get(cl_pool *pl, size_t size)
{
    void *p = aimsi_client_pool_take(pl, size);
    if (p != NULL) {
        memset(p, 0, size);
    }
    return p;
}

/* ---- headerless blocks (request frames) ---------------------------------------------
 * A request frame is an aimsi_buf the encoder may grow (realloc) and that the
 * transport may end up freeing as an ordinary heap block, so its block must
 * be a plain aimsi_malloc'd pointer: no header. While a block waits in the
 * pool its first bytes hold the list link (cl_blk.next is at offset 0, so
 * aimsi_client_pool_fini frees these lists too). The pool is given as the
 * release hook's context (aimsi_transport_tl_release). */
void *aimsi_client_pool_take_raw(cl_pool *pl)
{
    cl_blk *b = pool_pop(pl);
    return b != NULL ? (void *)b : aimsi_malloc(pl->block);
}

void aimsi_client_pool_put_raw(void *pool, void *p)
{
    if (p != NULL) {
        pool_push(pool, p);
    }
}

void aimsi_client_pool_put(void *p)
{
    if (p == NULL) {
        return;
    }
    cl_blk *b = (cl_blk *)p - 1;
    if (b->pool == NULL) {
        aimsi_free(b); /* oversize: never pooled */
        return;
    }
    pool_push(b->pool, b);
}
