/*
 * stream_rx.c -- receiving on a stream connection (stream.c has the
 * overview): framing out of the read buffer, its growth and shrinking, the
 * per-connection event handler, and the receive bounds against slow senders.
 *
 * Reading. Each connection has one read buffer (64 KiB to start). The I/O
 * thread recv()s as much as fits, then walks the buffer: once 44 header bytes
 * are there aimsi_frame_peek() says how long the frame is (and rejects a
 * corrupt or oversize header at once, before any allocation for it); every
 * whole frame is handed to on_frame straight from the buffer (no copy), so one
 * recv can deliver many frames. A frame longer than the buffer grows it by
 * doubling as its bytes arrive (never beyond the frame's length, which
 * peek capped at max_frame), so memory follows what a peer actually sent, not
 * what its header claims; a big buffer shrinks back once drained.
 *
 * Receive bounds (a node's instances; aimsi_stream_set_rx, AIMS_NODE_RX_*).
 * A frame in progress must complete its header within rx_header_ms of its
 * first byte and keep up rx_min_rate bytes/s over each RX_WINDOW_NS window;
 * read-buffer growth above RBUF_INIT is reserved from the node-wide rx_budget.
 * The sweep (every SWEEP_NS) enforces the first two, so a slow sender is
 * dropped at most rx_header_ms + SWEEP_NS, or 2 x RX_WINDOW_NS + SWEEP_NS,
 * after it slowed down (1 byte/s: 3 s with the defaults).
 *
 * Pacing big frames by the budget. A connection whose frame would overdraw
 * rx_budget is not dropped but paused: out of EPOLLIN (the kernel's socket
 * buffers fill and TCP flow control stops the sender), exempt from the rate
 * rules (it is not slow, we are not reading), and appended to the instance's
 * queue of paused connections. One paused longer than rx_pause_ms is dropped
 * (AIMS_E_OVERLOADED), so a paused connection lives at most rx_pause_ms +
 * SWEEP_NS without progress; rx_pause_ms = 0 drops at once (the behaviour
 * before pausing). Memory held for frames in progress thus never exceeds
 * rx_budget.
 *
 * Resuming as soon as budget frees. Whenever budget comes back on this
 * instance -- a big frame was delivered (while anyone is paused its buffer
 * is given back at once instead of being kept RBUF_KEEP_NS for the next big
 * frame), a connection was freed -- rx_hold raises rx_freed, and the I/O
 * thread, at the top of its next loop (before it sleeps again), resumes
 * paused connections in the order they paused (aimsi_stream_rx_wake), at
 * most RX_RESUME_MAX per release, stopping at the first whose frame does not
 * fit: a later, smaller paused frame does not overtake it. (A connection
 * that is being read may still grow whenever the budget has room: making it
 * queue behind a paused 60 MB frame would let one peer announcing huge
 * frames stall every other big-frame sender for rx_pause_ms.) A resumed
 * connection reserves the *whole rest* of its frame at once (not the next
 * doubling), so it never pauses again for that frame: resumed connections
 * cannot deadlock each other each holding half of the budget. Budget given back by another
 * instance of the node (tcp vs ipc vs tls share rx_budget, each has its own
 * I/O thread) is noticed by the sweep (every SWEEP_NS), in the same order.
 * Before, only the sweep resumed: a paused big frame waited up to 1 s after
 * the budget it needed was free.
 */
#include "aimsi_stream.h"
#include "aimsi_stream_io.h"
#include "../authz/aimsi_authz.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- reading ------------------------------------------------------------------------ */

/* Receive-bound bookkeeping (I/O thread): a frame in progress started, with
 * `have` bytes of it already here; `got` more bytes arrived. */
static void rx_frame_begins(stream_conn *c, size_t have)
{
    c->frame_ns = c->win_ns = c->last_rx_ns;
    c->win_bytes = have;
}

static void rx_count(stream_conn *c, size_t got)
{
    if (c->rlen == 0) {
        rx_frame_begins(c, 0);
    }
    c->win_bytes += got;
}

_Thread_local const aimsi_burst *aimsi_transport_tl_burst;
static _Thread_local uint64_t t_burst_seq;

/* The length of the whole frame at pos, or 0 when it is not all here yet
 * (*rc says why when its header is bad). */
static size_t whole_frame_at(const stream_conn *c, size_t pos, aims_status *rc)
{
    size_t total = 0;
    if (c->rlen - pos < AIMSI_FRAME_HEADER) {
        return 0;
    }
    const aims_status pr = aimsi_frame_peek(c->rbuf + pos, c->rlen - pos, c->inst->max_frame,
                                            &total);
    if (pr != AIMS_OK) {
        *rc = (pr == AIMS_E_RANGE) ? AIMS_E_RANGE : AIMS_E_CORRUPT;
        return 0;
    }
    return c->rlen - pos < total ? 0 : total;
}

/* Deliver every whole frame in the buffer, as one burst (aimsi_transport.h:
 * the read buffer stays put until the loop ends). Returns AIMS_OK, or the
 * reason to fail the connection; *stop is set when the library closed it
 * meanwhile. */
static aims_status deliver(stream_conn *c, int *stop)
{
    stream_inst *in = c->inst;
    size_t pos = 0;
    int corked = 0;
    aims_status rc = AIMS_OK;
    aimsi_burst burst = {++t_burst_seq, 0, c->last_rx_ns}; /* the read's clock */
    const aimsi_burst *const outer = aimsi_transport_tl_burst;
    int entered = 0; /* in the hook since the burst's first frame */
    size_t total = whole_frame_at(c, 0, &rc);
    while (total > 0) {
        const size_t next = whole_frame_at(c, pos + total, &rc);
        burst.more = next > 0;
        if (!corked && c->rlen - pos - total >= AIMSI_FRAME_HEADER) {
            /* More frames follow: their replies go out together. */
            aimsi_stream_cork(c);
            corked = 1;
        }
        if (!(entered ? aimsi_stream_hook_next(c) : aimsi_stream_hook_enter(c))) {
            *stop = 1;
            if (corked) {
                (void)aimsi_stream_uncork(c);
            }
            return AIMS_OK;
        }
        entered = 1;
        aimsi_transport_tl_burst = &burst;
        in->hooks.on_frame(c->user, c->rbuf + pos, total);
        aimsi_transport_tl_burst = outer;
        if (total > RBUF_INIT) {
            c->big_ns = aimsi_now_ns();
        }
        pos += total;
        total = next;
    }
    if (entered) {
        aimsi_stream_hook_leave(c);
    }
    if (corked) {
        const int e = aimsi_stream_uncork(c);
        if (e != 0 && rc == AIMS_OK) {
            rc = (e == EPIPE || e == ECONNRESET) ? AIMS_E_CLOSED : AIMS_E_IO;
        }
    }
    if (pos > 0) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
        if (c->rlen > 0) {
            rx_frame_begins(c, c->rlen); /* the rest is the next frame's start */
        }
    }
    return rc;
}

/* ---- the queue of connections paused for the budget (I/O thread only) ---------- */

static void pq_push(stream_conn *c)
{
    stream_inst *in = c->inst;
    if (c->in_pq) {
        return;
    }
    c->pq_next = NULL;
    c->pq_prev = in->pq_tail;
    if (in->pq_tail != NULL) {
        in->pq_tail->pq_next = c;
    } else {
        in->pq_head = c;
    }
    in->pq_tail = c;
    c->in_pq = 1;
    atomic_fetch_add(&in->rx->paused, 1);
}

void aimsi_stream_pq_remove(stream_conn *c)
{
    if (!c->in_pq) {
        return;
    }
    stream_inst *in = c->inst;
    if (c->pq_prev != NULL) {
        c->pq_prev->pq_next = c->pq_next;
    } else {
        in->pq_head = c->pq_next;
    }
    if (c->pq_next != NULL) {
        c->pq_next->pq_prev = c->pq_prev;
    } else {
        in->pq_tail = c->pq_prev;
    }
    c->pq_prev = c->pq_next = NULL;
    c->in_pq = 0;
    atomic_fetch_sub(&in->rx->paused, 1);
}

/* Pause (1) or resume (0) reading c for the budget (I/O thread). */
static void rx_set_paused(stream_conn *c, int paused, uint64_t now)
{
    if (paused) {
        pq_push(c);
    } else {
        aimsi_stream_pq_remove(c);
    }
    pthread_mutex_lock(&c->mu);
    c->rx_paused = paused;
    if (!c->dead) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = (paused ? 0u : EPOLLIN) | (c->want_out ? EPOLLOUT : 0u);
        ev.data.ptr = c;
        (void)epoll_ctl(c->inst->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    pthread_mutex_unlock(&c->mu);
    if (paused) {
        c->paused_ns = now;
    } else {
        /* Not slow while paused: the rate rules start afresh. */
        c->last_rx_ns = c->win_ns = now;
        c->win_bytes = 0;
    }
}

/* Give a grown read buffer back (its budget with it) once what it holds
 * fits the initial size. */
static void rbuf_give_back(stream_conn *c)
{
    if (c->rcap > RBUF_INIT && c->rlen <= RBUF_INIT) {
        uint8_t *nb = aimsi_realloc(c->rbuf, RBUF_INIT);
        if (nb != NULL) {
            c->rbuf = nb;
            c->rcap = RBUF_INIT;
            (void)aimsi_stream_rx_hold(c, RBUF_INIT);
        }
    }
}

/* Make room to read: grow toward the pending frame's length (by doubling,
 * or with `whole` to the frame's length at once), or shrink a buffer a big
 * frame left behind. AIMS_E_OVERLOADED: the growth would overdraw the node's
 * rx_budget (nothing changed). */
static aims_status rbuf_room(stream_conn *c, int whole)
{
    if (c->rlen < c->rcap) {
        if (c->rcap > RBUF_SHRINK && c->rlen <= RBUF_INIT &&
            aimsi_now_ns() - c->big_ns > RBUF_KEEP_NS) {
            rbuf_give_back(c);
        }
        return AIMS_OK;
    }
    /* Full: deliver() left an incomplete frame longer than the buffer. Its
     * length was checked against max_frame by peek. */
    size_t total = 0;
    if (aimsi_frame_peek(c->rbuf, c->rlen, c->inst->max_frame, &total) != AIMS_OK ||
        total <= c->rcap) {
        return AIMS_E_INTERNAL;
    }
    size_t ncap = c->rcap * 2u;
    if (whole || ncap > total || ncap < c->rcap) {
        ncap = total;
    }
    if (!aimsi_stream_rx_hold(c, ncap)) {
        return AIMS_E_OVERLOADED;
    }
    uint8_t *nb = aimsi_realloc(c->rbuf, ncap);
    if (nb == NULL) {
        (void)aimsi_stream_rx_hold(c, c->rcap);
        return AIMS_E_NOMEM;
    }
    c->rbuf = nb;
    c->rcap = ncap;
    return AIMS_OK;
}

/* ---- bytes only the family can see ------------------------------------------------ */

void aimsi_stream_again_add(stream_conn *c)
{
    if (c->again) {
        return;
    }
    stream_inst *in = c->inst;
    c->again = 1;
    c->again_prev = NULL;
    c->again_next = in->again;
    if (in->again != NULL) {
        in->again->again_prev = c;
    }
    in->again = c;
}

void aimsi_stream_again_del(stream_conn *c)
{
    if (!c->again) {
        return;
    }
    if (c->again_prev != NULL) {
        c->again_prev->again_next = c->again_next;
    } else {
        c->inst->again = c->again_next;
    }
    if (c->again_next != NULL) {
        c->again_next->again_prev = c->again_prev;
    }
    c->again = 0;
    c->again_prev = c->again_next = NULL;
}

/* Read once more every connection the read loop left with family-buffered
 * bytes. A connection that again stops before they are gone goes back on the
 * list for the next loop, so one busy peer cannot keep the thread to itself.
 * Everything on the list is alive: conn_free takes a connection off it. */
void aimsi_stream_again_run(stream_inst *in)
{
    stream_conn *list = in->again;
    in->again = NULL;
    for (stream_conn *c = list; c != NULL; c = c->again_next) {
        c->again = 0; /* now only linked through `list` */
    }
    while (list != NULL) {
        stream_conn *c = list;
        list = c->again_next;
        c->again_prev = c->again_next = NULL;
        pthread_mutex_lock(&c->mu);
        const int gone = c->closed || c->dead || c->rx_paused;
        pthread_mutex_unlock(&c->mu);
        if (!gone && !c->hs) {
            aimsi_stream_conn_readable(c);
        }
    }
}

static int family_pending(const stream_conn *c)
{
    const aimsi_stream_ops *ops = c->inst->fam->ops;
    return ops->pending != NULL && c->sx != NULL && ops->pending(c->sx);
}

void aimsi_stream_conn_readable(stream_conn *c)
{
    for (int i = 0;; i++) {
        if (i == READS_PER_EVENT) {
            /* Plain sockets: level-triggered epoll reports the rest. Bytes a
             * family already took off the socket it would not: come back. */
            if (family_pending(c)) {
                aimsi_stream_again_add(c);
            }
            return;
        }
        const aims_status room = rbuf_room(c, 0);
        if (room == AIMS_E_OVERLOADED && c->inst->rx->pause_ms > 0) {
            rx_set_paused(c, 1, aimsi_now_ns()); /* a release or the sweep resumes it */
            return;
        }
        if (room != AIMS_OK) {
            if (room == AIMS_E_OVERLOADED) {
                aimsi_log(AIMS_LOG_WARN, "%s transport: a frame would overdraw the node's "
                          "rx_budget (%lld bytes held): dropping the connection",
                          c->inst->fam->scheme, (long long)atomic_load(&c->inst->rx->held));
            }
            aimsi_stream_conn_fail(c, room);
            return;
        }
        const ssize_t r = c->inst->fam->ops->read(c->sx, c->fd, c->rbuf + c->rlen,
                                                  c->rcap - c->rlen);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            aimsi_stream_conn_fail(c, errno == ECONNRESET || errno == EPIPE ? AIMS_E_CLOSED
                                                                            : AIMS_E_IO);
            return;
        }
        if (r == 0) {
            aimsi_stream_conn_fail(c, AIMS_E_CLOSED);
            return;
        }
        const size_t got = (size_t)r;
        c->last_rx_ns = aimsi_now_ns();
        rx_count(c, got);
        const int more = (c->rlen + got == c->rcap);
        c->rlen += got;
        int stop = 0;
        const aims_status rc = deliver(c, &stop);
        if (stop) {
            return;
        }
        if (rc != AIMS_OK) {
            aimsi_stream_conn_fail(c, rc);
            return;
        }
        if (c->inst->rx != NULL && atomic_load(&c->inst->rx->paused) > 0) {
            /* Someone waits for budget: a big frame just delivered gives its
             * buffer back now rather than keeping it RBUF_KEEP_NS. */
            rbuf_give_back(c);
        }
        if (!more) {
            return; /* the socket is drained (a short read) */
        }
    }
}

void aimsi_stream_conn_event(stream_conn *c, uint32_t events)
{
    if (c->hs) {
        aimsi_stream_conn_handshake(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    const int gone = c->closed || c->dead;
    int werr = 0;
    if (!gone && (events & EPOLLOUT) != 0) {
        werr = aimsi_stream_queue_drain(c);
        if (werr == 0 && c->qn == 0) {
            aimsi_stream_arm_out(c, 0);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (gone) {
        return;
    }
    if (werr != 0) {
        aimsi_stream_conn_fail(c, werr == EPIPE || werr == ECONNRESET ? AIMS_E_CLOSED : AIMS_E_IO);
        return;
    }
    if (c->rx_paused && (events & (EPOLLHUP | EPOLLERR)) != 0) {
        /* Not maskable, level-triggered: a paused reader must not spin on it. */
        aimsi_stream_conn_fail(c, AIMS_E_CLOSED);
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) != 0) {
        aimsi_stream_conn_readable(c);
    }
}

static int rx_too_slow(const stream_inst *in, stream_conn *c, uint64_t now)
{
    const aimsi_rx_limits *rx = in->rx;
    if (rx == NULL || c->rlen == 0) {
        return 0;
    }
    if (rx->header_ms > 0 && c->rlen < AIMSI_FRAME_HEADER &&
        now - c->frame_ns > (uint64_t)rx->header_ms * 1000000u) {
        return 1;
    }
    if (rx->min_rate > 0 && now - c->win_ns >= RX_WINDOW_NS) {
        if ((double)c->win_bytes * 1e9 < (double)rx->min_rate * (double)(now - c->win_ns)) {
            return 1;
        }
        c->win_ns = now;
        c->win_bytes = 0;
    }
    return 0;
}

/* Resume paused connections from the head of the queue while the budget has
 * room for the rest of their frames, at most RX_RESUME_MAX; count them in
 * *resumed. The head that does not fit stops it (arrival order). */
static void rx_resume(stream_inst *in, uint64_t now, _Atomic uint64_t *resumed)
{
    for (int k = 0; k < RX_RESUME_MAX && in->pq_head != NULL; k++) {
        stream_conn *c = in->pq_head;
        if (rbuf_room(c, 1) != AIMS_OK) {
            break;
        }
        rx_set_paused(c, 0, now); /* read on (level-triggered) */
        if (family_pending(c)) {
            aimsi_stream_again_add(c); /* what epoll will not report */
        }
        atomic_fetch_add(resumed, 1);
    }
}

void aimsi_stream_rx_wake(stream_inst *in, uint64_t now)
{
    in->rx_freed = 0;
    if (in->rx != NULL) {
        rx_resume(in, now, &in->rx->resumed_on_release);
    }
}

/* Drop connections stalled in the middle of a frame, or too slow for the
 * receive bounds (I/O thread only: rlen, last_rx_ns and the rate window are
 * its fields, and only it frees connections). */
void aimsi_stream_sweep_stalled(stream_inst *in, uint64_t now)
{
    stream_conn *stalled[64];
    stream_conn *starved[64]; /* paused for the budget longer than rx_pause_ms */
    size_t n = 0;
    size_t ns = 0;
    if (in->rx != NULL) {
        /* Budget another instance of the node gave back (its own release
         * does not wake this thread), then the ones that waited too long. */
        rx_resume(in, now, &in->rx->resumed_by_sweep);
        for (stream_conn *c = in->pq_head; c != NULL && ns < 64; c = c->pq_next) {
            if (now - c->paused_ns > (uint64_t)in->rx->pause_ms * 1000000u) {
                starved[ns++] = c;
            }
        }
    }
    pthread_mutex_lock(&in->mu);
    for (stream_conn *c = in->conns; c != NULL && n < 64; c = c->next) {
        if (c->rx_paused) {
            continue;
        }
        if (c->rlen == 0) {
            (void)rbuf_room(c, 0); /* an idle connection gives a kept big buffer back */
        }
        if ((c->rlen > 0 && now - c->last_rx_ns > STALL_NS) || rx_too_slow(in, c, now)) {
            stalled[n++] = c;
        }
    }
    pthread_mutex_unlock(&in->mu);
    for (size_t i = 0; i < ns; i++) {
        aimsi_log(AIMS_LOG_WARN, "%s transport: a frame waited %.1f s for the node's rx_budget "
                  "(%lld bytes held; rx_pause_ms %lld): dropping the connection",
                  in->fam->scheme, (double)(now - starved[i]->paused_ns) * 1e-9,
                  (long long)atomic_load(&in->rx->held), (long long)in->rx->pause_ms);
        aimsi_stream_conn_fail(starved[i], AIMS_E_OVERLOADED);
    }
    for (size_t i = 0; i < n; i++) {
        aimsi_log(AIMS_LOG_WARN, "%s transport: peer too slow inside a frame (%.1f s since "
                  "its first byte, %zu bytes held): dropping the connection", in->fam->scheme,
                  (double)(now - stalled[i]->frame_ns) * 1e-9, stalled[i]->rlen);
        aimsi_stream_conn_fail(stalled[i], AIMS_E_TIMEOUT);
    }
}
