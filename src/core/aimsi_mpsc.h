/*
 * aimsi_mpsc.h -- a multi-producer, single-consumer intrusive hand-over list:
 * any number of threads push nodes, one thread takes every node pushed so far
 * at once, oldest first.
 *
 * Why. A thread that hands work to another one (a caller queueing a frame for
 * a connection's I/O thread) should not take a mutex the other thread also
 * takes per item: with the two on two cores every collision is a futex sleep
 * and wake (docs/pipelined.md). ZeroMQ's ypipe and NNG's aio lists hand
 * items over with atomics; this is the multi-producer version of the same
 * idea.
 *
 * How. The list is a LIFO stack of nodes the caller owns (intrusive: no
 * allocation here). push links the node in front of the current head with a
 * compare-and-swap (Treiber). take swaps the whole stack out with one atomic
 * exchange and reverses it, so the consumer gets the nodes in push order --
 * per producer that is the producer's own order, and across producers the
 * order in which their pushes took effect. Taking everything at once has no
 * ABA problem (nobody pops single nodes). Why a CAS push rather than a bare
 * exchange of the head: with `old = xchg(head, n); n->next = old` a consumer
 * that takes the list between the two steps would walk a node whose `next`
 * is not written yet; the CAS publishes the node with its link already in
 * place (release), and take's exchange (acquire) sees it whole.
 *
 * push reports whether the list was empty: the producer that makes it
 * non-empty is the one that must wake the consumer (one wake-up per burst,
 * not per item). Both push and take are sequentially consistent, so a
 * producer's push followed by a load of a consumer's "I am looking" flag,
 * and the consumer's store of that flag followed by a take, cannot both
 * miss each other (the stream transports' hand-over, stream_tx.c).
 *
 * Header-only: both operations are a handful of instructions on the hot path.
 */
#ifndef AIMSI_MPSC_H
#define AIMSI_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct aimsi_mpsc_node {
    struct aimsi_mpsc_node *next;
} aimsi_mpsc_node;

typedef struct aimsi_mpsc {
    _Atomic(aimsi_mpsc_node *) head; /* newest first */
} aimsi_mpsc;

static inline void aimsi_mpsc_init(aimsi_mpsc *l)
{
    atomic_init(&l->head, NULL);
}

/* Push n (any thread). n must not be on a list. Returns 1 when the list was
 * empty before this push. */
static inline int aimsi_mpsc_push(aimsi_mpsc *l, aimsi_mpsc_node *n)
{
    aimsi_mpsc_node *head = atomic_load_explicit(&l->head, memory_order_relaxed);
    do {
        n->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&l->head, &head, n, memory_order_seq_cst,
                                                    memory_order_relaxed));
    return head == NULL;
}

/* Take every node pushed so far, oldest first, as a NULL-terminated chain
 * (the consumer; NULL when empty). The nodes belong to the caller again.
 * An empty list costs one load and no write to the shared line (a consumer
 * may poll this once per loop); the load is seq_cst, so a consumer's
 * seq_cst store of an "I stopped looking" flag before it cannot be
 * reordered after it (the Dekker hand-shake with push, above). */
static inline aimsi_mpsc_node *aimsi_mpsc_take(aimsi_mpsc *l)
{
    if (atomic_load_explicit(&l->head, memory_order_seq_cst) == NULL) {
        return NULL;
    }
    aimsi_mpsc_node *n = atomic_exchange_explicit(&l->head, NULL, memory_order_seq_cst);
    aimsi_mpsc_node *fifo = NULL;
    while (n != NULL) {
        aimsi_mpsc_node *nx = n->next;
        n->next = fifo;
        fifo = n;
        n = nx;
    }
    return fifo;
}

#endif /* AIMSI_MPSC_H */
