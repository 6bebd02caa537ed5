/*
 * stream_tx.c -- sending on a stream connection (stream.c has the overview):
 * the write on the caller's thread, the bounded per-connection queue, and
 * the flush the I/O thread does once the socket is writable again.
 *
 * Writing. send() may come from any thread and takes the frame. If the
 * connection's queue is empty it writes on the caller's thread right away:
 * a request/reply round trip then costs no wake-up of the I/O thread, which
 * on a VM is most of a loopback round trip. What does not fit in the socket
 * buffer stays queued (a ring of frames) and the sender arms EPOLLOUT itself
 * (epoll_ctl is thread-safe), so the I/O thread finishes with sendmsg() over
 * as many queued frames as it can. The queue is bounded (16 MiB or 4096 frames)
 * and says AIMS_E_OVERLOADED beyond that, so a peer that never reads costs a
 * bounded amount of memory and nobody else waits for it. Writes on a
 * sender's thread happen under the connection's mutex; the I/O thread writes
 * the queue with the mutex released around each writev (`writing` keeps
 * every other writer out, queue_drain), so senders keep appending while it is
 * in the syscall. Either way one writer at a time: frames stay whole and in
 * order.
 *
 * Corking. When one read brings several frames (a pipelining peer), the I/O
 * thread corks the connection while it delivers them (stream_rx.c): the
 * replies that inline handlers -- or workers, meanwhile -- send are queued
 * and go out in one writev at the uncork, or as soon as IOV_BATCH frames or
 * CORK_BYTES wait. One sendmsg then carries a burst of replies instead of one
 * each (with 64 pipelined 64-byte calls, sendmsg was the top user symbol of
 * both processes). A lone request is never corked, so round trips do not wait.
 *
 * Deferring. The client sets aimsi_transport_tl_defer around the send of an
 * async call that has other async calls in flight (client_send.c). Such a
 * frame is queued instead of written, and the first one queued arms EPOLLOUT:
 * the I/O thread wakes and writes whatever the caller queued by then in one
 * writev (the ZeroMQ/NNG way), so a window of W pipelined calls costs a few
 * syscalls instead of W sendmsg on the caller's thread. Sync calls and a lone
 * async call are never deferred: their round trip keeps the direct write.
 * Nor is a big frame (DIRECT_MIN, session 11): it is its own writev anyway,
 * so deferring saves no system call; it only moved the frame's copy into the
 * kernel -- and for tls:// its AES-GCM seal -- from the sender, whose cache
 * still holds the frame it just encoded, to the I/O thread, which also reads
 * (decrypts) the replies. Written on the sender's thread when nothing waits
 * before it (else queued behind, as any frame), P11b-stream (8 async 1 MiB
 * calls in flight) took less CPU per MiB on both transports and its tls/tcp
 * ratio went from 0.67 to 0.80 (medians of 12 loaded rounds,
 * docs/DOOR_SPEED.md "Session 11").
 *
 * Handing over (session 10). A deferred frame whose sender lent a link area
 * (aimsi_frame_rel.link: the client's pooled request frames) does not take
 * the connection's mutex at all: its node is pushed onto the connection's
 * lock-free inbox (core/aimsi_mpsc.h, the multi-producer list ZeroMQ's ypipe
 * and NNG's aio lists are cousins of), and the I/O thread takes the whole
 * inbox at once. With 64 calls in flight the caller and the I/O thread used
 * to meet on c->mu per call (lock + unlock ~9 % of a pipelined call's
 * samples). Order: whoever holds c->mu and is about to write or queue a
 * frame first moves the inbox into the ring (aimsi_stream_tx_take) -- a
 * direct write, the uncork, the I/O thread's drain -- so frames leave in the
 * order their sends returned, and a CANCEL (never deferred) cannot overtake
 * its REQUEST. Waking: the push that makes an inbox non-empty moves the
 * connection's `txstate` from IDLE to READY and puts the connection on the
 * instance's `ready` list; the push that makes *that* list non-empty writes
 * the eventfd -- one wake-up per burst, not per frame. While the I/O thread
 * delivers a burst on the connection (corked) the state is LOOKING and
 * pushes wake nobody: the uncork takes them. The I/O thread stores IDLE
 * *before* it takes an inbox (both sequentially consistent, as are the
 * push and the producer's state check), so a push is either taken or
 * schedules the connection again, never neither. The queue limits count
 * the inbox too (`txn`/`txb`, atomics), and `txshut` refuses pushes to a
 * closed or failed connection; a push that races with the failure is freed
 * when the connection is (conn_free), like a queued frame.
 */
#include "aimsi_stream.h"
#include "aimsi_stream_io.h"
#include "../authz/aimsi_authz.h"

#include <errno.h>
#include <stddef.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

_Thread_local int aimsi_transport_tl_defer;

/* Frames at least this big are never deferred (top comment, "Deferring"). */
#define DIRECT_MIN ((size_t)64u << 10)
_Thread_local aimsi_frame_rel aimsi_transport_tl_release;

/* A handed-over frame's node, in the link area its sender lent (rel.link). */
typedef struct tx_node {
    aimsi_mpsc_node link; /* first: a list node is its tx_node */
    void *p;
    size_t len;
    aimsi_frame_rel rel;
} tx_node;
_Static_assert(sizeof(tx_node) <= AIMSI_FRAME_LINK, "the hand-over node fits the link area");
_Static_assert(offsetof(tx_node, link) == 0, "list nodes are tx_nodes");

/* Count frames and bytes into / out of what waits (inbox + spill + ring). */
static void tx_count(stream_conn *c, size_t frames, size_t bytes, int add)
{
    if (add) {
        atomic_fetch_add_explicit(&c->txn, frames, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->txb, bytes, memory_order_relaxed);
    } else {
        atomic_fetch_sub_explicit(&c->txn, frames, memory_order_relaxed);
        atomic_fetch_sub_explicit(&c->txb, bytes, memory_order_relaxed);
    }
}

/* Free a chain of handed-over frames. */
static void tx_free_chain(stream_conn *c, aimsi_mpsc_node *n)
{
    while (n != NULL) {
        tx_node *t = (tx_node *)n;
        n = n->next;
        const aimsi_frame_rel rel = t->rel; /* t lives in the frame's block */
        void *const p = t->p;
        tx_count(c, 1, t->len, 0);
        aimsi_stream_frame_free(rel, p);
    }
}

/* ---- writing ------------------------------------------------------------------------ */

void aimsi_stream_arm_out(stream_conn *c, int on)
{
    if (c->want_out == on || c->dead) {
        return;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = (c->rx_paused ? 0u : EPOLLIN) | (on ? EPOLLOUT : 0u); /* stream_rx.c */
    ev.data.ptr = c;
    if (epoll_ctl(c->inst->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        c->want_out = on;
    }
}

/* The iovec of the first IOV_BATCH queued frames. Caller holds c->mu. */
static int queue_iov(const stream_conn *c, struct iovec *iov)
{
    int n = 0;
    for (size_t i = 0; i < c->qn && n < IOV_BATCH; i++) {
        const qent *e = &c->q[(c->qhead + i) % c->qcap];
        const size_t off = (i == 0) ? c->qoff : 0;
        iov[n].iov_base = (uint8_t *)e->p + off;
        iov[n].iov_len = e->len - off;
        n++;
    }
    return n;
}

/* Drop the first `w` written bytes of the queue, freeing whole frames. Caller
 * holds c->mu. Frames are only ever taken off the head by the one writer, so
 * the head is still the frame the writev started with, even if a sender grew
 * (re-laid) the ring meanwhile. */
static void queue_consume(stream_conn *c, size_t w)
{
    size_t freed = 0;
    size_t left = w;
    while (left > 0 && c->qn > 0) {
        qent *e = &c->q[c->qhead];
        const size_t rest = e->len - c->qoff;
        if (left < rest) {
            c->qoff += left;
            c->qbytes -= left;
            left = 0;
        } else {
            left -= rest;
            c->qbytes -= rest;
            freed++;
            aimsi_stream_frame_free(e->rel, e->p);
            e->p = NULL;
            c->qhead = (c->qhead + 1) % c->qcap;
            c->qn--;
            c->qoff = 0;
        }
    }
    tx_count(c, freed, w, 0); /* one update per writev, not per frame */
}

/* Write as much of the queue as the socket takes. Caller holds c->mu.
 * Returns 0, or an errno value when the socket failed. */
int aimsi_stream_queue_flush(stream_conn *c)
{
    if (c->writing) {
        return 0; /* the I/O thread is draining: it takes these frames too */
    }
    while (c->qn > 0) {
        struct iovec iov[IOV_BATCH];
        const int n = queue_iov(c, iov);
        const ssize_t w = c->inst->fam->ops->writev(c->sx, c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return errno;
        }
        queue_consume(c, (size_t)w);
    }
    return 0;
}

/* The I/O thread's flush (EPOLLOUT, uncork). Caller holds c->mu; it is
 * released around each writev, `writing` keeping every other thread from
 * writing meanwhile: senders only append to the queue (which a writev in
 * progress never looks at: its iovec points at the frames, not the ring) and
 * the drain loops until the queue is empty, so what they append goes out in
 * the next writev. Before, the I/O thread held the mutex across the syscall
 * and a pipelining sender blocked on it (a futex sleep and wake per
 * collision, the slow mode of P14). Safe because only the I/O thread frees a
 * connection or drops its queue (conn_fail, the reaper), and it is here. */
int aimsi_stream_queue_drain(stream_conn *c)
{
    if (c->writing) {
        return 0;
    }
    c->writing = 1;
    int err = 0;
    /* Each round first takes what was handed over meanwhile (stream_tx.c's
     * top comment): it joins this writev, behind what was queued before. */
    for (int round = 0; round < DRAIN_ROUNDS; round++) {
        (void)aimsi_stream_tx_take(c);
        if (c->qn == 0) {
            break;
        }
        struct iovec iov[IOV_BATCH];
        const int n = queue_iov(c, iov);
        pthread_mutex_unlock(&c->mu);
        const ssize_t w = c->inst->fam->ops->writev(c->sx, c->fd, iov, n);
        const int e = w < 0 ? errno : 0;
        pthread_mutex_lock(&c->mu);
        if (w < 0) {
            if (e == EINTR) {
                continue;
            }
            if (e != EAGAIN && e != EWOULDBLOCK) {
                err = e;
            }
            break;
        }
        queue_consume(c, (size_t)w);
    }
    c->writing = 0;
    return err;
}

/* Room for one more queue entry. Caller holds c->mu. */
static aims_status queue_reserve(stream_conn *c)
{
    if (c->qn < c->qcap) {
        return AIMS_OK;
    }
    const size_t ncap = c->qcap * 2u;
    qent *nq = aimsi_calloc(ncap, sizeof *nq);
    if (nq == NULL) {
        return AIMS_E_NOMEM;
    }
    for (size_t i = 0; i < c->qn; i++) {
        nq[i] = c->q[(c->qhead + i) % c->qcap];
    }
    aimsi_free(c->q);
    c->q = nq;
    c->qcap = ncap;
    c->qhead = 0;
    return AIMS_OK;
}

int aimsi_stream_tx_take(stream_conn *c)
{
    aimsi_mpsc_node *n = aimsi_mpsc_take(&c->inbox);
    if (c->spill_head != NULL) {
        /* Older than anything in the inbox: they go first. */
        c->spill_tail->next = n;
        n = c->spill_head;
        c->spill_head = c->spill_tail = NULL;
    }
    while (n != NULL) {
        if (queue_reserve(c) != AIMS_OK) {
            c->spill_head = n;
            while (n->next != NULL) {
                n = n->next;
            }
            c->spill_tail = n;
            return -1;
        }
        const tx_node *t = (const tx_node *)n;
        n = n->next; /* before the frame (and its node) may be written and freed */
        qent *e = &c->q[(c->qhead + c->qn) % c->qcap];
        e->p = t->p;
        e->len = t->len;
        e->rel = t->rel;
        if (c->qn == 0) {
            c->qoff = 0;
        }
        c->qn++;
        c->qbytes += e->len;
    }
    return 0;
}

void aimsi_stream_tx_drop(stream_conn *c)
{
    tx_free_chain(c, c->spill_head);
    c->spill_head = c->spill_tail = NULL;
    tx_free_chain(c, aimsi_mpsc_take(&c->inbox));
    while (c->qn > 0) {
        qent *e = &c->q[c->qhead];
        tx_count(c, 1, e->len - c->qoff, 0); /* qbytes held only the unwritten rest */
        c->qoff = 0;
        aimsi_stream_frame_free(e->rel, e->p);
        e->p = NULL;
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qn--;
    }
    c->qhead = 0;
    c->qoff = 0;
    c->qbytes = 0;
}

/* The hand-over (top comment): push a deferred frame without c->mu. */
static aims_status tx_push(stream_inst *in, stream_conn *c, void *frame, size_t len,
                           aimsi_frame_rel rel)
{
    if (atomic_load_explicit(&c->txshut, memory_order_acquire)) {
        aimsi_stream_frame_free(rel, frame);
        return aimsi_err(NULL, AIMS_E_CLOSED, "%s transport: send on a closed connection",
                         in->fam->scheme);
    }
    const size_t qn = atomic_load_explicit(&c->txn, memory_order_relaxed);
    const size_t qb = atomic_load_explicit(&c->txb, memory_order_relaxed);
    if (qn > 0 && (qn >= AIMSI_STREAM_QMAX_FRAMES || qb >= AIMSI_STREAM_QMAX_BYTES ||
                   len > AIMSI_STREAM_QMAX_BYTES - qb)) {
        aimsi_stream_frame_free(rel, frame);
        return aimsi_err(NULL, AIMS_E_OVERLOADED,
                         "%s transport: send queue full (%zu frames, %zu bytes waiting for a "
                         "slow peer); retry after 10 ms",
                         in->fam->scheme, qn, qb);
    }
    tx_node *t = rel.link;
    t->p = frame;
    t->len = len;
    t->rel = rel;
    tx_count(c, 1, len, 1);
    /* From the push on, the I/O thread may write and free the frame (and t). */
    if (aimsi_mpsc_push(&c->inbox, &t->link)) {
        int idle = TX_IDLE;
        if (atomic_compare_exchange_strong(&c->txstate, &idle, TX_READY) &&
            aimsi_mpsc_push(&in->ready, &c->rnode)) {
            aimsi_stream_wake(in);
        }
    }
    return AIMS_OK;
}

void aimsi_stream_tx_run(stream_inst *in)
{
    aimsi_mpsc_node *n = aimsi_mpsc_take(&in->ready);
    while (n != NULL) {
        stream_conn *c = (stream_conn *)(void *)((char *)n - offsetof(stream_conn, rnode));
        /* Off the list now: read the link before IDLE lets a push reuse it. */
        n = n->next;
        atomic_store(&c->txstate, TX_IDLE); /* before the take: see the top comment */
        int e = 0;
        pthread_mutex_lock(&c->mu);
        if (c->dead) {
            aimsi_stream_tx_drop(c);
        } else {
            (void)aimsi_stream_tx_take(c); /* what does not fit waits on spill */
            if (!c->closed && !c->cork && !c->want_out && c->qn > 0) {
                e = aimsi_stream_queue_drain(c);
                if (e == 0 && c->qn > 0) {
                    aimsi_stream_arm_out(c, 1);
                }
            }
        }
        pthread_mutex_unlock(&c->mu);
        if (e != 0) {
            aimsi_stream_conn_fail(c, e == EPIPE || e == ECONNRESET ? AIMS_E_CLOSED : AIMS_E_IO);
        }
    }
}

aims_status aimsi_stream_send(void *inst, void *conn, void *frame, size_t len)
{
    stream_inst *in = inst;
    stream_conn *c = conn;
    const aimsi_frame_rel rel = aimsi_transport_tl_release; /* the sender's, for this frame */
    if (in == NULL || c == NULL || frame == NULL || len == 0) {
        aimsi_stream_frame_free(rel, frame);
        return AIMSI_MISUSE("NULL instance, connection or frame, or empty frame");
    }
    if (c->inst != in) {
        aimsi_stream_frame_free(rel, frame);
        return AIMSI_MISUSE("connection belongs to another transport instance");
    }
    if (len > in->max_frame) {
        aimsi_stream_frame_free(rel, frame);
        return aimsi_err(NULL, AIMS_E_RANGE,
                         "%s transport: frame of %zu bytes is over max_frame (%zu)",
                         in->fam->scheme, len, in->max_frame);
    }
    const int defer = aimsi_transport_tl_defer && len < DIRECT_MIN;
    if (defer && rel.link != NULL) {
        return tx_push(in, c, frame, len, rel); /* no c->mu */
    }
    pthread_mutex_lock(&c->mu);
    if (c->closed || c->dead) {
        pthread_mutex_unlock(&c->mu);
        aimsi_stream_frame_free(rel, frame);
        return aimsi_err(NULL, AIMS_E_CLOSED, "%s transport: send on a closed connection",
                         in->fam->scheme);
    }
    /* Frames handed over before this one go first (a CANCEL after its REQUEST). */
    if (aimsi_stream_tx_take(c) != 0) {
        if (!c->writing && !c->cork) {
            aimsi_stream_arm_out(c, 1); /* the ring drains, then the spill follows */
        }
        pthread_mutex_unlock(&c->mu);
        aimsi_stream_frame_free(rel, frame);
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s transport: out of memory queueing %zu bytes",
                         in->fam->scheme, len);
    }
    if (c->qn > 0 &&
        (c->qn >= AIMSI_STREAM_QMAX_FRAMES || c->qbytes >= AIMSI_STREAM_QMAX_BYTES ||
         len > AIMSI_STREAM_QMAX_BYTES - c->qbytes)) {
        const size_t qb = c->qbytes;
        const size_t qn = c->qn;
        pthread_mutex_unlock(&c->mu);
        aimsi_stream_frame_free(rel, frame);
        return aimsi_err(NULL, AIMS_E_OVERLOADED,
                         "%s transport: send queue full (%zu frames, %zu bytes waiting for a "
                         "slow peer); retry after 10 ms",
                         in->fam->scheme, qn, qb);
    }
    /* Reserve first: once a frame is half written it must be queued. */
    if (queue_reserve(c) != AIMS_OK) {
        pthread_mutex_unlock(&c->mu);
        aimsi_stream_frame_free(rel, frame);
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s transport: out of memory queueing %zu bytes",
                         in->fam->scheme, len);
    }
    size_t done = 0;
    if (c->qn == 0 && !c->cork && !c->writing && !defer) {
        for (;;) {
            const struct iovec one = {frame, len};
            const ssize_t w = in->fam->ops->writev(c->sx, c->fd, &one, 1);
            if (w >= 0) {
                done = (size_t)w;
                break;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            const int e = errno;
            /* Let the I/O thread see the failure and report it through on_close. */
            shutdown(c->fd, SHUT_RDWR);
            pthread_mutex_unlock(&c->mu);
            aimsi_stream_frame_free(rel, frame);
            return aimsi_err(NULL, AIMS_E_IO, "%s transport: send failed: %s",
                             in->fam->scheme, strerror(e));
        }
        if (done == len) {
            pthread_mutex_unlock(&c->mu);
            aimsi_stream_frame_free(rel, frame);
            return AIMS_OK;
        }
    }
    const size_t slot = (c->qhead + c->qn) % c->qcap;
    c->q[slot].p = frame;
    c->q[slot].len = len;
    c->q[slot].rel = rel;
    if (c->qn == 0) {
        c->qoff = done;
    }
    c->qn++;
    c->qbytes += len - done;
    tx_count(c, 1, len - done, 1);
    if (c->writing) {
        /* The I/O thread is draining this queue: its next writev takes it. */
        pthread_mutex_unlock(&c->mu);
        return AIMS_OK;
    }
    if (c->cork && !c->want_out) {
        /* Flushed at the uncork, or now when the batch is full. */
        if (c->qn >= IOV_BATCH || c->qbytes >= CORK_BYTES) {
            const int e = aimsi_stream_queue_flush(c);
            if (e != 0) {
                shutdown(c->fd, SHUT_RDWR); /* the I/O thread reports it */
            } else if (c->qn > 0) {
                aimsi_stream_arm_out(c, 1);
            }
        }
        pthread_mutex_unlock(&c->mu);
        return AIMS_OK;
    }
    aimsi_stream_arm_out(c, 1);
    pthread_mutex_unlock(&c->mu);
    return AIMS_OK;
}

void aimsi_stream_cork(stream_conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->cork = 1;
    pthread_mutex_unlock(&c->mu);
    /* Pushes meanwhile wake nobody: the uncork takes them (unless the
     * connection is on the ready list already: then it stays there). */
    int idle = TX_IDLE;
    (void)atomic_compare_exchange_strong(&c->txstate, &idle, TX_LOOKING);
}

int aimsi_stream_uncork(stream_conn *c)
{
    int e = 0;
    int looking = TX_LOOKING;
    /* IDLE before the take (top comment): a later push schedules itself. */
    (void)atomic_compare_exchange_strong(&c->txstate, &looking, TX_IDLE);
    pthread_mutex_lock(&c->mu);
    c->cork = 0;
    if (!c->closed && !c->dead) {
        (void)aimsi_stream_tx_take(c);
        if (c->qn > 0 && !c->want_out) {
            e = aimsi_stream_queue_drain(c);
            if (e == 0 && c->qn > 0) {
                aimsi_stream_arm_out(c, 1);
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}
