/*
 * aimsi_stream_io.h -- private to the stream machinery (stream.c,
 * stream_io.c, stream_rx.c, stream_tx.c): the instance, listener and
 * connection types and the functions those files share. stream.c's top
 * comment explains the design; the transport families (sock.c, tls.c) see
 * only aimsi_stream.h.
 */
#ifndef AIMSI_STREAM_IO_H
#define AIMSI_STREAM_IO_H

#include <pthread.h>
#include <stdint.h>

#include "aimsi_stream.h"
#include "../../core/aimsi_mpsc.h"

#define RBUF_INIT ((size_t)64u << 10)
/* A peer that stops sending in the middle of a frame holds a read buffer as
 * big as the frame it announced: after STALL_NS without a byte the
 * connection is dropped (slow-loris), checked every SWEEP_NS. */
#define STALL_NS (10ull * 1000000000ull)
#define SWEEP_NS (1000000000ull)
#define RX_WINDOW_NS (2000000000ull)
/* Connections paused for rx_budget that one release of budget may resume
 * (stream_rx.c): bounded work per release; the rest wait for the next one. */
#define RX_RESUME_MAX 8
/* Accepted connections per instance; beyond this new ones are closed at once
 * (each may hold up to max_frame bytes of read buffer). */
#define MAX_ACCEPTED 4096u
#define RBUF_SHRINK ((size_t)1u << 20)
/* A grown read buffer is kept this long after the last frame that needed it:
 * a stream of big frames then reads into pages already mapped (a fresh 6 MB
 * buffer per frame cost ~1500 page faults, most of an ipc transfer here). */
#define RBUF_KEEP_NS (1000000000ull)
#define READS_PER_EVENT 16
#define EVENTS_PER_WAIT 64
#define IOV_BATCH 64
/* While corked, a connection's sends are queued and written together once
 * this many bytes are waiting (or IOV_BATCH frames), or at the uncork. */
#define CORK_BYTES ((size_t)64u << 10)
#define QRING_INIT 8u
/* writevs one drain does before it leaves the rest to EPOLLOUT, so that a
 * sender that never stops cannot keep the I/O thread on one connection. */
#define DRAIN_ROUNDS 16

enum { TAG_WAKE = 1, TAG_LISTENER = 2, TAG_CONN = 3 };

typedef struct stream_inst stream_inst;

typedef struct qent {
    void *p;
    size_t len;
    aimsi_frame_rel rel; /* how p goes back (fn NULL: aimsi_free) */
} qent;

/* Give a sent (or refused) frame back: rel.fn, or aimsi_free. */
static inline void aimsi_stream_frame_free(aimsi_frame_rel rel, void *p)
{
    if (rel.fn != NULL) {
        rel.fn(rel.ctx, p);
    } else {
        aimsi_free(p);
    }
}

typedef struct stream_conn {
    int tag; /* TAG_CONN: first member, epoll data points here */
    stream_inst *inst;
    int fd;
    void *user;
    struct stream_conn *prev, *next; /* inst->conns, or the zombie list */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int closed;    /* the library released it: no more hooks */
    int dead;      /* failed: on_close delivered (or due), out of epoll */
    int in_hook;   /* the I/O thread runs one of its hooks */
    int want_out;  /* EPOLLOUT armed */
    int zombie;    /* on inst->zombie_conns */
    int cork;      /* the I/O thread delivers a run of frames: sends queue (stream_tx.c) */
    int writing;   /* the I/O thread writes the queue without mu held: nobody else writes */
    /* send queue (ring) */
    qent *q;
    size_t qcap, qhead, qn, qoff, qbytes;
    /* read buffer (I/O thread only) */
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint64_t last_rx_ns; /* last recv that brought bytes (I/O thread only) */
    uint64_t big_ns;     /* last delivery of a frame above RBUF_INIT (I/O thread only) */
    uint64_t frame_ns, win_ns; /* frame in progress: first byte, rate window start */
    uint64_t win_bytes;        /* bytes in the rate window */
    int64_t held;              /* bytes reserved from rx->held */
    int rx_paused;             /* reading paused for rx_budget (written by the I/O thread under mu) */
    uint64_t paused_ns;        /* when it paused (I/O thread only) */
    struct stream_conn *pq_prev, *pq_next; /* inst's queue of paused connections (I/O thread) */
    int in_pq;                 /* on that queue (I/O thread only) */
    int accepted;        /* counted in inst->n_accepted */
    void *sx;            /* the family's per-connection state (ops), or NULL */
    int hs;              /* accepted, handshake not done: no on_accept yet (I/O thread) */
    uint64_t hs_deadline_ns;     /* drop it if the handshake is not done by then */
    struct stream_listener *lst; /* its listener while hs (under inst->mu) */
    /* On inst->again: the family holds bytes epoll cannot announce (ops->pending)
     * and the read loop stopped before taking them (I/O thread only). */
    int again;
    struct stream_conn *again_prev, *again_next;
    /* Lock-free hand-over of deferred frames (stream_tx.c, "Handing over"):
     * senders push onto `inbox` without mu; whoever holds mu and is about to
     * write or queue moves it into the ring first (tx_take), so the queue
     * stays in send order. `spill`: frames taken from the inbox that did not
     * fit the ring (out of memory growing it), oldest first, under mu; they
     * go before anything queued later. */
    aimsi_mpsc inbox;
    struct aimsi_mpsc_node *spill_head, *spill_tail;
    aimsi_mpsc_node rnode;   /* on inst->ready */
    _Atomic int txstate;     /* TX_IDLE / TX_READY (on inst->ready) / TX_LOOKING (corked) */
    _Atomic int txshut;      /* closed or dead: pushes refused (mirrors the flags under mu) */
    _Atomic size_t txn, txb; /* frames and bytes waiting: inbox + spill + ring (queue limits) */
} stream_conn;

enum { TX_IDLE = 0, TX_READY = 1, TX_LOOKING = 2 };

typedef struct stream_listener {
    int tag; /* TAG_LISTENER */
    stream_inst *inst;
    int fd;
    int dead;
    int busy; /* the I/O thread is accepting on it */
    int paused; /* out of the epoll set after EMFILE/ENFILE (I/O thread only) */
    char path[AIMSI_STREAM_PATH_MAX];
    struct stream_listener *prev, *next;
} stream_listener;

struct stream_inst {
    const aimsi_stream_family *fam;
    uint64_t next_sweep_ns; /* I/O thread only */
    size_t n_accepted;      /* under mu */
    aims_transport_hooks hooks;
    size_t max_frame;
    aimsi_rx_limits *rx; /* NULL: no receive bounds but STALL_NS */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* listener busy -> idle */
    int started;
    int stopping;
    int epfd;
    int wake_tag; /* TAG_WAKE; its address is the wake fd's epoll data */
    int wakefd;
    pthread_t thr;
    stream_conn *conns;
    stream_conn *zombie_conns;
    stream_listener *listeners;
    stream_listener *zombie_listeners;
    uint64_t resume_ns; /* when paused listeners go back into epoll (0: none paused) */
    /* Connections paused for rx_budget, in the order they paused, and whether
     * budget was given back since the I/O thread last looked (stream_rx.c;
     * I/O thread only, or after it stopped). */
    stream_conn *pq_head, *pq_tail;
    int rx_freed;
    stream_conn *again; /* connections to read again without an event (I/O thread only) */
    aimsi_mpsc ready;   /* connections whose inbox waits for the I/O thread (stream_tx.c) */
};

/* Set on the I/O thread: lets close()/unlisten() know they run inside a hook. */
extern _Thread_local const stream_inst *aimsi_stream_tl_io_inst;

int aimsi_stream_hook_enter(stream_conn *c);
void aimsi_stream_hook_leave(stream_conn *c);
/* Between two frames of one read burst: stay in the hook (one lock hold
 * instead of leave + enter per frame), unless the library closed c
 * meanwhile: then leave it and return 0. A close() from another thread thus
 * waits for the rest of a burst (at most one read buffer of frames). */
int aimsi_stream_hook_next(stream_conn *c);
int aimsi_stream_rx_hold(stream_conn *c, size_t cap);
void aimsi_stream_conn_fail(stream_conn *c, aims_status why);
aims_status aimsi_stream_conn_new(stream_inst *in, int fd, void *user, stream_conn **out);
void aimsi_stream_conn_free(stream_conn *c);
void aimsi_stream_conn_link(stream_conn **head, stream_conn *c);
void aimsi_stream_conn_handshake(stream_conn *c);
void aimsi_stream_reap(stream_inst *in);
aims_status aimsi_stream_ensure_started(stream_inst *in);
int aimsi_stream_epoll_add(stream_inst *in, int fd, void *ptr);
void aimsi_stream_conn_readable(stream_conn *c);
/* The family-buffered bytes of c (ops->pending) are read on the I/O thread's
 * next loop: put c on / take it off inst->again (I/O thread only), and read
 * every connection on it (io_main, after each batch of epoll events). */
void aimsi_stream_again_add(stream_conn *c);
void aimsi_stream_again_del(stream_conn *c);
void aimsi_stream_again_run(stream_inst *in);
void aimsi_stream_sweep_stalled(stream_inst *in, uint64_t now);
/* Budget was given back (rx_freed): resume paused connections in the order
 * they paused while it has room for the rest of their frames, at most
 * RX_RESUME_MAX (I/O thread, top of its loop). */
void aimsi_stream_rx_wake(stream_inst *in, uint64_t now);
/* Take c off its instance's paused queue, if it is on it (I/O thread, or
 * after the thread stopped). */
void aimsi_stream_pq_remove(stream_conn *c);
void aimsi_stream_conn_event(stream_conn *c, uint32_t events);
/* Write the queue under c->mu (held by the caller); does nothing while the
 * I/O thread is draining it (`writing`). */
int aimsi_stream_queue_flush(stream_conn *c);
/* The I/O thread's flush: like queue_flush, but c->mu is released around
 * each writev so that senders keep queueing meanwhile (stream_tx.c). */
int aimsi_stream_queue_drain(stream_conn *c);
void aimsi_stream_arm_out(stream_conn *c, int on);
/* Cork a connection (sends queue) / uncork it and write what queued meanwhile;
 * uncork returns 0 or the errno of a failed write. I/O thread, around deliver. */
void aimsi_stream_cork(stream_conn *c);
int aimsi_stream_uncork(stream_conn *c);
/* Move the frames handed over lock-free (inbox, then spill) into the ring,
 * in order. Caller holds c->mu. Returns 0, or -1 when some did not fit (out
 * of memory: they wait on spill, and nothing may be queued behind them). */
int aimsi_stream_tx_take(stream_conn *c);
/* The I/O thread: move and write the inbox of every connection on
 * inst->ready (once per loop, and before reaping: a connection on that list
 * is freed only after this took it off). */
void aimsi_stream_tx_run(stream_inst *in);
/* Free every frame still handed over or queued (conn_fail, conn_free). */
void aimsi_stream_tx_drop(stream_conn *c);
/* Wake the I/O thread (its eventfd). */
void aimsi_stream_wake(stream_inst *in);

#endif
