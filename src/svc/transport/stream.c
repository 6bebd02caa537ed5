/*
 * stream.c -- the machinery behind the tcp://, ipc:// and tls:// transports:
 * one I/O thread per instance, whole frames in, whole frames out. Bytes move
 * through the family's per-connection hooks (aimsi_stream.h: plain sockets in
 * sock.c, OpenSSL in tls.c); an accepted connection of a family with a
 * handshake is shown to the library (on_accept) only once the handshake is
 * done, and is dropped if that takes longer than the family's budget.
 *
 * Shape. An instance (what aims_transport.create returns; a node or a client
 * owns one per scheme) has one epoll I/O thread, started lazily at the first
 * listen or dial, an eventfd to wake it, a list of listeners and a list of
 * connections. Sockets are nonblocking; the epoll set is level-triggered.
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
 * read-buffer growth above RBUF_INIT is reserved from the node-wide rx_budget
 * and a connection whose frame would overdraw it is refused (dropped). The
 * sweep (every SWEEP_NS) enforces the first two, so a slow sender is dropped
 * at most rx_header_ms + SWEEP_NS, or 2 x RX_WINDOW_NS + SWEEP_NS, after it
 * slowed down (1 byte/s: 3 s with the defaults).
 *
 * Writing. send() may come from any thread and takes the frame. If the
 * connection's queue is empty it writes on the caller's thread right away:
 * a request/reply round trip then costs no wake-up of the I/O thread, which
 * on a VM is most of a loopback round trip. What does not fit in the socket
 * buffer stays queued (a ring of frames) and the sender arms EPOLLOUT itself
 * (epoll_ctl is thread-safe), so the I/O thread finishes with sendmsg() over
 * as many queued frames as it can. The queue is bounded (16 MiB or 4096 frames)
 * and says AIMS_E_OVERLOADED beyond that, so a peer that never reads costs a
 * bounded amount of memory and nobody else waits for it. All writes of a
 * connection happen under its mutex, which keeps frames whole and in order.
 *
 * Lifetime. Hooks run only on the I/O thread, so hooks of one connection never
 * overlap. Before each hook the I/O thread checks the connection's `closed`
 * flag and marks it `in_hook`; close() from another thread sets `closed` and
 * waits until `in_hook` clears, so after close() returns no hook runs for the
 * connection; close() from the I/O thread itself (from inside a hook) just sets
 * the flag. The memory is never freed by close(): the connection goes to a
 * zombie list and the I/O thread frees it at the top of its next loop, after
 * it finished the batch of epoll events that may still point at it. A file
 * descriptor is closed only then too, so a sender can never write into a
 * recycled descriptor number. A failing connection (peer gone, bad frame) gets
 * on_close once, leaves the epoll set and is shut down, but stays allocated
 * until the library closes it. Listeners are similar, except that unlisten()
 * closes the descriptor itself (after the I/O thread stopped accepting on it),
 * so the address can be bound again as soon as unlisten returns.
 *
 * Hooks may run before dial() returns (a peer that closes at once): the owner
 * must have its conn_user ready before it dials. destroy() must not be called
 * from a hook (it joins the I/O thread).
 *
 * Locks: inst->mu guards the lists, zombie lists and thread start; conn->mu
 * guards a connection's flags and send queue. The I/O thread never holds a
 * lock while it runs a hook. A caller of close()/unlisten() must not hold a
 * lock that the hooks take (close waits for a running hook to return).
 */
#include "aimsi_stream.h"
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

#define RBUF_INIT ((size_t)64u << 10)
/* A peer that stops sending in the middle of a frame holds a read buffer as
 * big as the frame it announced: after STALL_NS without a byte the
 * connection is dropped (slow-loris), checked every SWEEP_NS. */
#define STALL_NS (10ull * 1000000000ull)
#define SWEEP_NS (1000000000ull)
#define RX_WINDOW_NS (2000000000ull)
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
#define QRING_INIT 8u

enum { TAG_WAKE = 1, TAG_LISTENER = 2, TAG_CONN = 3 };

typedef struct stream_inst stream_inst;

typedef struct qent {
    void *p;
    size_t len;
} qent;

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
    int accepted;        /* counted in inst->n_accepted */
    void *sx;            /* the family's per-connection state (ops), or NULL */
    int hs;              /* accepted, handshake not done: no on_accept yet (I/O thread) */
    uint64_t hs_deadline_ns;     /* drop it if the handshake is not done by then */
    struct stream_listener *lst; /* its listener while hs (under inst->mu) */
} stream_conn;

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
};

/* Set on the I/O thread: lets close()/unlisten() know they run inside a hook. */
static _Thread_local const stream_inst *tl_io_inst;

/* ---- lists ------------------------------------------------------------------ */

static void conn_link(stream_conn **head, stream_conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head != NULL) {
        (*head)->prev = c;
    }
    *head = c;
}

static void conn_unlink(stream_conn **head, stream_conn *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        *head = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void lst_link(stream_listener **head, stream_listener *l)
{
    l->prev = NULL;
    l->next = *head;
    if (*head != NULL) {
        (*head)->prev = l;
    }
    *head = l;
}

static void lst_unlink(stream_listener **head, stream_listener *l)
{
    if (l->prev != NULL) {
        l->prev->next = l->next;
    } else {
        *head = l->next;
    }
    if (l->next != NULL) {
        l->next->prev = l->prev;
    }
    l->prev = l->next = NULL;
}

static void wake(stream_inst *in)
{
    const uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the thread will wake. */
    ssize_t rc;
    do {
        rc = write(in->wakefd, &one, sizeof one);
    } while (rc < 0 && errno == EINTR);
}

/* ---- connection objects ----------------------------------------------------------- */

static void queue_drop(stream_conn *c)
{
    while (c->qn > 0) {
        aimsi_free(c->q[c->qhead].p);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qn--;
    }
    c->qhead = 0;
    c->qoff = 0;
    c->qbytes = 0;
}

/* Reserve (or give back) budget so that c holds what a read buffer of `cap`
 * bytes holds above RBUF_INIT. 0 when the node-wide budget is spent. */
static int rx_hold(stream_conn *c, size_t cap)
{
    aimsi_rx_limits *rx = c->inst->rx;
    const int64_t want = cap > RBUF_INIT ? (int64_t)(cap - RBUF_INIT) : 0;
    if (rx == NULL || want == c->held) {
        return 1;
    }
    const int64_t delta = want - c->held;
    const int64_t now_held = atomic_fetch_add(&rx->held, delta) + delta;
    if (delta > 0 && rx->budget > 0 && now_held > rx->budget) {
        atomic_fetch_sub(&rx->held, delta);
        return 0;
    }
    c->held = want;
    return 1;
}

static void conn_free(stream_conn *c)
{
    (void)rx_hold(c, 0);
    queue_drop(c);
    if (c->sx != NULL && c->inst->fam->ops->close != NULL) {
        c->inst->fam->ops->close(c->sx);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    aimsi_free(c->q);
    aimsi_free(c->rbuf);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    aimsi_free(c);
}

static aims_status conn_new(stream_inst *in, int fd, void *user, stream_conn **out)
{
    stream_conn *c = aimsi_calloc(1, sizeof *c);
    if (c == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s transport: out of memory for a connection",
                         in->fam->scheme);
    }
    c->q = aimsi_calloc(QRING_INIT, sizeof *c->q);
    c->rbuf = aimsi_malloc(RBUF_INIT);
    if (c->q == NULL || c->rbuf == NULL) {
        aimsi_free(c->q);
        aimsi_free(c->rbuf);
        aimsi_free(c);
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s transport: out of memory for a connection",
                         in->fam->scheme);
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        aimsi_free(c->q);
        aimsi_free(c->rbuf);
        aimsi_free(c);
        return aimsi_err(NULL, AIMS_E_BACKEND, "%s transport: pthread_mutex_init failed",
                         in->fam->scheme);
    }
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        aimsi_free(c->q);
        aimsi_free(c->rbuf);
        aimsi_free(c);
        return aimsi_err(NULL, AIMS_E_BACKEND, "%s transport: pthread_cond_init failed",
                         in->fam->scheme);
    }
    c->tag = TAG_CONN;
    c->inst = in;
    c->fd = fd;
    c->user = user;
    c->qcap = QRING_INIT;
    c->rcap = RBUF_INIT;
    *out = c;
    return AIMS_OK;
}

/* ---- hooks gate ------------------------------------------------------------------- */

static int hook_enter(stream_conn *c)
{
    pthread_mutex_lock(&c->mu);
    const int ok = !c->closed;
    if (ok) {
        c->in_hook = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static void hook_leave(stream_conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->in_hook = 0;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* The connection failed: leave epoll, shut the socket, drop the queue, and
 * tell the library once (unless it already released the connection). */
static void conn_fail(stream_conn *c, aims_status why)
{
    stream_inst *in = c->inst;
    pthread_mutex_lock(&c->mu);
    if (c->dead) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->dead = 1;
    epoll_ctl(in->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    shutdown(c->fd, SHUT_RDWR);
    queue_drop(c);
    c->want_out = 0;
    pthread_mutex_unlock(&c->mu);
    if (hook_enter(c)) {
        in->hooks.on_close(c->user, why);
        hook_leave(c);
    }
}

/* ---- writing ------------------------------------------------------------------------ */

static void arm_out(stream_conn *c, int on)
{
    if (c->want_out == on || c->dead) {
        return;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.ptr = c;
    if (epoll_ctl(c->inst->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        c->want_out = on;
    }
}

/* Write as much of the queue as the socket takes. Caller holds c->mu.
 * Returns 0, or an errno value when the socket failed. */
static int queue_flush(stream_conn *c)
{
    while (c->qn > 0) {
        struct iovec iov[IOV_BATCH];
        size_t n = 0;
        for (size_t i = 0; i < c->qn && n < IOV_BATCH; i++) {
            const qent *e = &c->q[(c->qhead + i) % c->qcap];
            const size_t off = (i == 0) ? c->qoff : 0;
            iov[n].iov_base = (uint8_t *)e->p + off;
            iov[n].iov_len = e->len - off;
            n++;
        }
        const ssize_t w = c->inst->fam->ops->writev(c->sx, c->fd, iov, (int)n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return errno;
        }
        size_t left = (size_t)w;
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
                aimsi_free(e->p);
                e->p = NULL;
                c->qhead = (c->qhead + 1) % c->qcap;
                c->qn--;
                c->qoff = 0;
            }
        }
    }
    return 0;
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

aims_status aimsi_stream_send(void *inst, void *conn, void *frame, size_t len)
{
    stream_inst *in = inst;
    stream_conn *c = conn;
    if (in == NULL || c == NULL || frame == NULL || len == 0) {
        aimsi_free(frame);
        return AIMSI_MISUSE("NULL instance, connection or frame, or empty frame");
    }
    if (c->inst != in) {
        aimsi_free(frame);
        return AIMSI_MISUSE("connection belongs to another transport instance");
    }
    if (len > in->max_frame) {
        aimsi_free(frame);
        return aimsi_err(NULL, AIMS_E_RANGE,
                         "%s transport: frame of %zu bytes is over max_frame (%zu)",
                         in->fam->scheme, len, in->max_frame);
    }
    pthread_mutex_lock(&c->mu);
    if (c->closed || c->dead) {
        pthread_mutex_unlock(&c->mu);
        aimsi_free(frame);
        return aimsi_err(NULL, AIMS_E_CLOSED, "%s transport: send on a closed connection",
                         in->fam->scheme);
    }
    if (c->qn > 0 &&
        (c->qn >= AIMSI_STREAM_QMAX_FRAMES || c->qbytes >= AIMSI_STREAM_QMAX_BYTES ||
         len > AIMSI_STREAM_QMAX_BYTES - c->qbytes)) {
        const size_t qb = c->qbytes;
        const size_t qn = c->qn;
        pthread_mutex_unlock(&c->mu);
        aimsi_free(frame);
        return aimsi_err(NULL, AIMS_E_OVERLOADED,
                         "%s transport: send queue full (%zu frames, %zu bytes waiting for a "
                         "slow peer); retry after 10 ms",
                         in->fam->scheme, qn, qb);
    }
    /* Reserve first: once a frame is half written it must be queued. */
    if (queue_reserve(c) != AIMS_OK) {
        pthread_mutex_unlock(&c->mu);
        aimsi_free(frame);
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s transport: out of memory queueing %zu bytes",
                         in->fam->scheme, len);
    }
    size_t done = 0;
    if (c->qn == 0) {
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
            aimsi_free(frame);
            return aimsi_err(NULL, AIMS_E_IO, "%s transport: send failed: %s",
                             in->fam->scheme, strerror(e));
        }
        if (done == len) {
            pthread_mutex_unlock(&c->mu);
            aimsi_free(frame);
            return AIMS_OK;
        }
    }
    const size_t slot = (c->qhead + c->qn) % c->qcap;
    c->q[slot].p = frame;
    c->q[slot].len = len;
    if (c->qn == 0) {
        c->qoff = done;
    }
    c->qn++;
    c->qbytes += len - done;
    arm_out(c, 1);
    pthread_mutex_unlock(&c->mu);
    return AIMS_OK;
}

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

/* Deliver every whole frame in the buffer. Returns AIMS_OK, or the reason to
 * fail the connection; *stop is set when the library closed it meanwhile. */
static aims_status deliver(stream_conn *c, int *stop)
{
    stream_inst *in = c->inst;
    size_t pos = 0;
    aims_status rc = AIMS_OK;
    while (c->rlen - pos >= AIMSI_FRAME_HEADER) {
        size_t total = 0;
        rc = aimsi_frame_peek(c->rbuf + pos, c->rlen - pos, in->max_frame, &total);
        if (rc != AIMS_OK) {
            rc = (rc == AIMS_E_RANGE) ? AIMS_E_RANGE : AIMS_E_CORRUPT;
            break;
        }
        if (c->rlen - pos < total) {
            break;
        }
        if (!hook_enter(c)) {
            *stop = 1;
            return AIMS_OK;
        }
        in->hooks.on_frame(c->user, c->rbuf + pos, total);
        hook_leave(c);
        if (total > RBUF_INIT) {
            c->big_ns = aimsi_now_ns();
        }
        pos += total;
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

/* Make room to read: grow toward the pending frame's length, or shrink a
 * buffer a big frame left behind. */
static aims_status rbuf_room(stream_conn *c)
{
    if (c->rlen < c->rcap) {
        if (c->rcap > RBUF_SHRINK && c->rlen <= RBUF_INIT &&
            aimsi_now_ns() - c->big_ns > RBUF_KEEP_NS) {
            uint8_t *nb = aimsi_realloc(c->rbuf, RBUF_INIT);
            if (nb != NULL) {
                c->rbuf = nb;
                c->rcap = RBUF_INIT;
                (void)rx_hold(c, RBUF_INIT);
            }
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
    if (ncap > total || ncap < c->rcap) {
        ncap = total;
    }
    if (!rx_hold(c, ncap)) {
        aimsi_log(AIMS_LOG_WARN, "%s transport: a %zu-byte frame would overdraw the node's "
                  "rx_budget (%lld bytes held): dropping the connection", c->inst->fam->scheme,
                  total, (long long)atomic_load(&c->inst->rx->held));
        return AIMS_E_OVERLOADED;
    }
    uint8_t *nb = aimsi_realloc(c->rbuf, ncap);
    if (nb == NULL) {
        (void)rx_hold(c, c->rcap);
        return AIMS_E_NOMEM;
    }
    c->rbuf = nb;
    c->rcap = ncap;
    return AIMS_OK;
}

static void conn_readable(stream_conn *c)
{
    for (int i = 0; i < READS_PER_EVENT; i++) {
        const aims_status room = rbuf_room(c);
        if (room != AIMS_OK) {
            conn_fail(c, room);
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
            conn_fail(c, errno == ECONNRESET || errno == EPIPE ? AIMS_E_CLOSED : AIMS_E_IO);
            return;
        }
        if (r == 0) {
            conn_fail(c, AIMS_E_CLOSED);
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
            conn_fail(c, rc);
            return;
        }
        if (!more) {
            return; /* the socket is drained (a short read) */
        }
    }
}

static void conn_handshake(stream_conn *c);

static void conn_event(stream_conn *c, uint32_t events)
{
    if (c->hs) {
        conn_handshake(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    const int gone = c->closed || c->dead;
    int werr = 0;
    if (!gone && (events & EPOLLOUT) != 0) {
        werr = queue_flush(c);
        if (werr == 0 && c->qn == 0) {
            arm_out(c, 0);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (gone) {
        return;
    }
    if (werr != 0) {
        conn_fail(c, werr == EPIPE || werr == ECONNRESET ? AIMS_E_CLOSED : AIMS_E_IO);
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) != 0) {
        conn_readable(c);
    }
}

/* ---- accepting ------------------------------------------------------------------------- */

static int epoll_add(stream_inst *in, int fd, void *ptr)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = ptr;
    return epoll_ctl(in->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Hand a ready connection to the library (on_accept); close it if refused. */
static void conn_accepted(stream_inst *in, stream_listener *l, stream_conn *c)
{
    /* Nobody knows c yet, so it cannot be closed: the gate always opens. */
    (void)hook_enter(c);
    void *const user = in->hooks.on_accept(in->hooks.user, l, c);
    pthread_mutex_lock(&c->mu);
    c->in_hook = 0;
    c->user = user;
    pthread_cond_broadcast(&c->cv);
    const int refused = (user == NULL) && !c->closed;
    pthread_mutex_unlock(&c->mu);
    if (refused) {
        aimsi_stream_close(in, c);
    }
}

/* Drop a connection whose handshake failed or stalled: nobody knows it yet,
 * so no on_close, only a log line naming the peer and the reason. */
static void hs_drop(stream_conn *c, const char *why)
{
    char peer[64];
    aimsi_stream_peer_addr(c->fd, peer, sizeof peer);
    aimsi_log(AIMS_LOG_WARN, "%s transport: refused connection from %s: %s",
              c->inst->fam->scheme, peer, why);
    c->hs = 0;
    pthread_mutex_lock(&c->mu);
    c->dead = 1;
    epoll_ctl(c->inst->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->mu);
    aimsi_stream_close(c->inst, c);
}

/* Advance an accepted connection's handshake (I/O thread). */
static void conn_handshake(stream_conn *c)
{
    stream_inst *in = c->inst;
    char why[256] = "";
    const int r = in->fam->ops->handshake(c->sx, why, sizeof why);
    if (r == AIMSI_HS_FAILED) {
        hs_drop(c, why);
        return;
    }
    pthread_mutex_lock(&c->mu);
    arm_out(c, r == AIMSI_HS_WANT_WRITE);
    pthread_mutex_unlock(&c->mu);
    if (r != AIMSI_HS_DONE) {
        return;
    }
    pthread_mutex_lock(&in->mu);
    stream_listener *l = c->lst;
    c->lst = NULL;
    pthread_mutex_unlock(&in->mu);
    if (l == NULL) {
        hs_drop(c, "its listener was closed during the handshake");
        return;
    }
    c->hs = 0;
    c->last_rx_ns = aimsi_now_ns();
    conn_accepted(in, l, c);
    if (hook_enter(c)) { /* a first frame may have come with the handshake */
        hook_leave(c);
        conn_readable(c);
    }
}

/* Drop accepted connections whose handshake outlived its budget. */
static void sweep_handshakes(stream_inst *in, uint64_t now)
{
    stream_conn *late[64];
    size_t n = 0;
    pthread_mutex_lock(&in->mu);
    for (stream_conn *c = in->conns; c != NULL && n < 64; c = c->next) {
        if (c->hs && now > c->hs_deadline_ns) {
            late[n++] = c;
        }
    }
    pthread_mutex_unlock(&in->mu);
    for (size_t i = 0; i < n; i++) {
        hs_drop(late[i], "handshake not finished in time (stalled peer)");
    }
}

static void accept_one(stream_inst *in, stream_listener *l, int fd)
{
    if (in->fam->tune != NULL) {
        in->fam->tune(fd);
    }
    stream_conn *c = NULL;
    if (conn_new(in, fd, NULL, &c) != AIMS_OK) {
        close(fd);
        return;
    }
    if (in->fam->ops->accept != NULL) {
        uint64_t budget = 0;
        if (in->fam->ops->accept(in->fam->ctx, fd, &c->sx, &budget) != AIMS_OK) {
            aimsi_log(AIMS_LOG_WARN, "%s transport: cannot accept a connection: %s",
                      in->fam->scheme, aims_errmsg());
            conn_free(c);
            return;
        }
        c->hs = 1;
        c->hs_deadline_ns = aimsi_now_ns() + budget;
        c->lst = l;
    }
    /* In the epoll set before on_accept: the library may send on it from
     * another thread as soon as it knows it (arming EPOLLOUT needs the fd in
     * the set). No event is handled before this function returns. */
    if (epoll_add(in, fd, c) != 0) {
        conn_free(c);
        return;
    }
    pthread_mutex_lock(&in->mu);
    if (in->n_accepted >= MAX_ACCEPTED) {
        pthread_mutex_unlock(&in->mu);
        epoll_ctl(in->epfd, EPOLL_CTL_DEL, fd, NULL);
        conn_free(c);
        aimsi_log(AIMS_LOG_WARN, "%s transport: %u connections open, refusing another",
                  in->fam->scheme, MAX_ACCEPTED);
        return;
    }
    in->n_accepted++;
    c->accepted = 1;
    c->last_rx_ns = aimsi_now_ns();
    conn_link(&in->conns, c);
    pthread_mutex_unlock(&in->mu);
    if (!c->hs) {
        conn_accepted(in, l, c);
    }
}

static void listener_event(stream_inst *in, stream_listener *l)
{
    pthread_mutex_lock(&in->mu);
    if (l->dead) {
        pthread_mutex_unlock(&in->mu);
        return;
    }
    l->busy = 1;
    pthread_mutex_unlock(&in->mu);
    for (int i = 0; i < 16; i++) {
        const int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Level-triggered epoll would report the pending connection
                 * again at once and spin: stop watching this listener for a
                 * while (the I/O thread puts it back, see resume_listeners). */
                pthread_mutex_lock(&in->mu);
                if (!l->dead) {
                    epoll_ctl(in->epfd, EPOLL_CTL_DEL, l->fd, NULL);
                    l->paused = 1;
                    in->resume_ns = aimsi_now_ns() + 100000000u;
                }
                pthread_mutex_unlock(&in->mu);
            }
            break; /* EAGAIN, or a transient error (ECONNABORTED): retry on the next event */
        }
        accept_one(in, l, fd);
        pthread_mutex_lock(&in->mu);
        const int dead = l->dead;
        pthread_mutex_unlock(&in->mu);
        if (dead) {
            break;
        }
    }
    pthread_mutex_lock(&in->mu);
    l->busy = 0;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

/* ---- the I/O thread ------------------------------------------------------------------------ */

static void reap(stream_inst *in)
{
    pthread_mutex_lock(&in->mu);
    stream_conn *zc = in->zombie_conns;
    stream_listener *zl = in->zombie_listeners;
    in->zombie_conns = NULL;
    in->zombie_listeners = NULL;
    pthread_mutex_unlock(&in->mu);
    while (zc != NULL) {
        stream_conn *next = zc->next;
        epoll_ctl(in->epfd, EPOLL_CTL_DEL, zc->fd, NULL);
        pthread_mutex_lock(&zc->mu);
        if (!zc->dead) {
            (void)queue_flush(zc); /* best effort: a reply sent just before close */
        }
        pthread_mutex_unlock(&zc->mu);
        conn_free(zc);
        zc = next;
    }
    while (zl != NULL) {
        stream_listener *next = zl->next;
        aimsi_free(zl); /* unlisten already closed its descriptor */
        zl = next;
    }
}

/* Put listeners paused by descriptor exhaustion back into epoll. Returns the
 * epoll_wait timeout: -1, or the ms until the next resume. */
static int resume_listeners(stream_inst *in)
{
    pthread_mutex_lock(&in->mu);
    int timeout = -1;
    if (in->resume_ns != 0) {
        const uint64_t now = aimsi_now_ns();
        if (now >= in->resume_ns) {
            in->resume_ns = 0;
            for (stream_listener *l = in->listeners; l != NULL; l = l->next) {
                if (l->paused && !l->dead) {
                    struct epoll_event ev;
                    memset(&ev, 0, sizeof ev);
                    ev.events = EPOLLIN;
                    ev.data.ptr = l;
                    (void)epoll_ctl(in->epfd, EPOLL_CTL_ADD, l->fd, &ev);
                }
                l->paused = 0;
            }
        } else {
            timeout = (int)((in->resume_ns - now) / 1000000u) + 1;
        }
    }
    pthread_mutex_unlock(&in->mu);
    return timeout;
}

/* A frame in progress too slow for the receive bounds (I/O thread only). */
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

/* Drop connections stalled in the middle of a frame, or too slow for the
 * receive bounds (I/O thread only: rlen, last_rx_ns and the rate window are
 * its fields, and only it frees connections). */
static void sweep_stalled(stream_inst *in, uint64_t now)
{
    stream_conn *stalled[64];
    size_t n = 0;
    pthread_mutex_lock(&in->mu);
    for (stream_conn *c = in->conns; c != NULL && n < 64; c = c->next) {
        if (c->rlen == 0) {
            (void)rbuf_room(c); /* an idle connection gives a kept big buffer back */
        }
        if ((c->rlen > 0 && now - c->last_rx_ns > STALL_NS) || rx_too_slow(in, c, now)) {
            stalled[n++] = c;
        }
    }
    pthread_mutex_unlock(&in->mu);
    for (size_t i = 0; i < n; i++) {
        aimsi_log(AIMS_LOG_WARN, "%s transport: peer too slow inside a frame (%.1f s since "
                  "its first byte, %zu bytes held): dropping the connection", in->fam->scheme,
                  (double)(now - stalled[i]->frame_ns) * 1e-9, stalled[i]->rlen);
        conn_fail(stalled[i], AIMS_E_TIMEOUT);
    }
}

static void *io_main(void *arg)
{
    stream_inst *in = arg;
    tl_io_inst = in;
    struct epoll_event evs[EVENTS_PER_WAIT];
    for (;;) {
        reap(in);
        pthread_mutex_lock(&in->mu);
        const int stop = in->stopping;
        pthread_mutex_unlock(&in->mu);
        if (stop) {
            break;
        }
        int timeout = resume_listeners(in);
        const uint64_t now = aimsi_now_ns();
        if (now >= in->next_sweep_ns) {
            sweep_stalled(in, now);
            sweep_handshakes(in, now);
            in->next_sweep_ns = now + SWEEP_NS;
        }
        if (timeout < 0 || timeout > (int)(SWEEP_NS / 1000000u)) {
            timeout = (int)(SWEEP_NS / 1000000u);
        }
        const int n = epoll_wait(in->epfd, evs, EVENTS_PER_WAIT, timeout);
        for (int i = 0; i < n; i++) {
            const int tag = *(const int *)evs[i].data.ptr;
            if (tag == TAG_WAKE) {
                uint64_t v;
                ssize_t rr = read(in->wakefd, &v, sizeof v);
                (void)rr;
            } else if (tag == TAG_LISTENER) {
                listener_event(in, evs[i].data.ptr);
            } else {
                conn_event(evs[i].data.ptr, evs[i].events);
            }
        }
    }
    tl_io_inst = NULL;
    return NULL;
}

/* Create epoll + eventfd and start the thread, once. Caller holds in->mu. */
static aims_status ensure_started(stream_inst *in)
{
    if (in->started) {
        return AIMS_OK;
    }
    in->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (in->epfd < 0) {
        return aimsi_err(NULL, AIMS_E_IO, "%s transport: epoll_create1: %s", in->fam->scheme,
                         strerror(errno));
    }
    in->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (in->wakefd < 0) {
        const int e = errno;
        close(in->epfd);
        return aimsi_err(NULL, AIMS_E_IO, "%s transport: eventfd: %s", in->fam->scheme,
                         strerror(e));
    }
    if (epoll_add(in, in->wakefd, &in->wake_tag) != 0) {
        const int e = errno;
        close(in->wakefd);
        close(in->epfd);
        return aimsi_err(NULL, AIMS_E_IO, "%s transport: epoll_ctl: %s", in->fam->scheme,
                         strerror(e));
    }
    if (pthread_create(&in->thr, NULL, io_main, in) != 0) {
        close(in->wakefd);
        close(in->epfd);
        return aimsi_err(NULL, AIMS_E_BACKEND, "%s transport: cannot start the I/O thread",
                         in->fam->scheme);
    }
    in->started = 1;
    return AIMS_OK;
}

/* ---- the vtable ------------------------------------------------------------------------------ */

aims_status aimsi_stream_create(void *factory_user, const aims_transport_hooks *hooks,
                                uint64_t max_frame, void **out_inst)
{
    const aimsi_stream_family *fam = factory_user;
    /* on_accept may be NULL for an owner that only dials (a client): listen
     * refuses then. */
    if (fam == NULL || hooks == NULL || out_inst == NULL || hooks->on_frame == NULL ||
        hooks->on_close == NULL) {
        return AIMSI_MISUSE("NULL family, hooks, on_frame/on_close hook or out_inst");
    }
    if (max_frame < AIMSI_FRAME_HEADER) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s transport: max_frame %llu is below the %u-byte "
                         "frame header", fam->scheme, (unsigned long long)max_frame,
                         AIMSI_FRAME_HEADER);
    }
    stream_inst *in = aimsi_calloc(1, sizeof *in);
    if (in == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s transport: out of memory", fam->scheme);
    }
    if (pthread_mutex_init(&in->mu, NULL) != 0) {
        aimsi_free(in);
        return aimsi_err(NULL, AIMS_E_BACKEND, "%s transport: pthread_mutex_init failed",
                         fam->scheme);
    }
    if (pthread_cond_init(&in->cv, NULL) != 0) {
        pthread_mutex_destroy(&in->mu);
        aimsi_free(in);
        return aimsi_err(NULL, AIMS_E_BACKEND, "%s transport: pthread_cond_init failed",
                         fam->scheme);
    }
    in->fam = fam;
    in->hooks = *hooks;
    in->max_frame = (max_frame > (uint64_t)SIZE_MAX) ? SIZE_MAX : (size_t)max_frame;
    in->epfd = -1;
    in->wakefd = -1;
    in->wake_tag = TAG_WAKE;
    *out_inst = in;
    return AIMS_OK;
}

void aimsi_stream_set_rx(void *inst, aimsi_rx_limits *rx)
{
    ((stream_inst *)inst)->rx = rx;
}

void aimsi_stream_destroy(void *inst)
{
    stream_inst *in = inst;
    if (in == NULL) {
        return;
    }
    pthread_mutex_lock(&in->mu);
    const int started = in->started;
    in->stopping = 1;
    pthread_mutex_unlock(&in->mu);
    if (started) {
        wake(in);
        pthread_join(in->thr, NULL);
    }
    reap(in);
    while (in->conns != NULL) {
        stream_conn *c = in->conns;
        conn_unlink(&in->conns, c);
        conn_free(c);
    }
    while (in->listeners != NULL) {
        stream_listener *l = in->listeners;
        lst_unlink(&in->listeners, l);
        if (l->path[0] != '\0') {
            unlink(l->path);
        }
        close(l->fd);
        aimsi_free(l);
    }
    if (started) {
        close(in->wakefd);
        close(in->epfd);
    }
    pthread_cond_destroy(&in->cv);
    pthread_mutex_destroy(&in->mu);
    aimsi_free(in);
}

aims_status aimsi_stream_listen(void *inst, const char *url, unsigned flags, char *bound,
                                size_t bound_cap, void **out_listener)
{
    stream_inst *in = inst;
    if (in == NULL || url == NULL || out_listener == NULL) {
        return AIMSI_MISUSE("NULL instance, url or out_listener");
    }
    if (in->hooks.on_accept == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "%s: this transport instance has no on_accept hook "
                         "(it was created to dial only)", url);
    }
    stream_listener *l = aimsi_calloc(1, sizeof *l);
    if (l == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for a listener", url);
    }
    char tmp[AIMSI_URL_MAX];
    int fd = -1;
    aims_status rc = in->fam->listen_fd(url, flags, &fd, tmp, sizeof tmp, l->path);
    if (rc != AIMS_OK) {
        aimsi_free(l);
        return rc;
    }
    if (bound != NULL && bound_cap > 0) {
        rc = aimsi_stream_copy_url(bound, bound_cap, tmp, "bound address");
    }
    if (rc == AIMS_OK) {
        l->tag = TAG_LISTENER;
        l->inst = in;
        l->fd = fd;
        pthread_mutex_lock(&in->mu);
        rc = ensure_started(in);
        if (rc == AIMS_OK && epoll_add(in, fd, l) != 0) {
            rc = aimsi_err(NULL, AIMS_E_IO, "%s: epoll_ctl: %s", url, strerror(errno));
        }
        if (rc == AIMS_OK) {
            lst_link(&in->listeners, l);
        }
        pthread_mutex_unlock(&in->mu);
    }
    if (rc != AIMS_OK) {
        if (l->path[0] != '\0') {
            unlink(l->path);
        }
        close(fd);
        aimsi_free(l);
        return rc;
    }
    *out_listener = l;
    return AIMS_OK;
}

void aimsi_stream_unlisten(void *inst, void *listener)
{
    stream_inst *in = inst;
    stream_listener *l = listener;
    if (in == NULL || l == NULL) {
        return;
    }
    pthread_mutex_lock(&in->mu);
    l->dead = 1;
    epoll_ctl(in->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    /* A new listen on the same path may follow at once: unlink now. */
    if (l->path[0] != '\0') {
        unlink(l->path);
        l->path[0] = '\0';
    }
    if (tl_io_inst != in) {
        while (l->busy) {
            pthread_cond_wait(&in->cv, &in->mu);
        }
    }
    /* Nobody uses the descriptor any more (the I/O thread checks `dead` before
     * it accepts, and re-checks after each accept): close it now, so the
     * address is free when this returns. Only the memory waits for the reaper. */
    close(l->fd);
    l->fd = -1;
    for (stream_conn *c = in->conns; c != NULL; c = c->next) {
        if (c->lst == l) {
            c->lst = NULL; /* still in its handshake: dropped when it ends */
        }
    }
    lst_unlink(&in->listeners, l);
    l->next = in->zombie_listeners;
    in->zombie_listeners = l;
    pthread_mutex_unlock(&in->mu);
    wake(in);
}

aims_status aimsi_stream_dial(void *inst, const char *url, void *conn_user, void **out_conn)
{
    stream_inst *in = inst;
    if (in == NULL || url == NULL || out_conn == NULL) {
        return AIMSI_MISUSE("NULL instance, url or out_conn");
    }
    int fd = -1;
    AIMSI_TRY(in->fam->dial_fd(url, &fd));
    void *sx = NULL;
    aims_status rc = AIMS_OK;
    if (in->fam->ops->dial != NULL) {
        rc = in->fam->ops->dial(in->fam->ctx, fd, url, &sx);
        if (rc != AIMS_OK) {
            close(fd);
            return rc;
        }
    }
    stream_conn *c = NULL;
    rc = conn_new(in, fd, conn_user, &c);
    if (rc != AIMS_OK) {
        if (sx != NULL) {
            in->fam->ops->close(sx);
        }
        close(fd);
        return rc;
    }
    c->sx = sx;
    pthread_mutex_lock(&in->mu);
    rc = ensure_started(in);
    if (rc == AIMS_OK && epoll_add(in, fd, c) != 0) {
        rc = aimsi_err(NULL, AIMS_E_IO, "%s: epoll_ctl: %s", url, strerror(errno));
    }
    if (rc == AIMS_OK) {
        conn_link(&in->conns, c);
    }
    pthread_mutex_unlock(&in->mu);
    if (rc != AIMS_OK) {
        conn_free(c);
        return rc;
    }
    *out_conn = c;
    return AIMS_OK;
}

const char *aimsi_stream_peer(void *inst, void *conn)
{
    const stream_inst *in = inst;
    const stream_conn *c = conn;
    if (in == NULL || c == NULL || c->sx == NULL || in->fam->ops->peer == NULL) {
        return NULL;
    }
    return in->fam->ops->peer(c->sx);
}

void aimsi_stream_close(void *inst, void *conn)
{
    stream_inst *in = inst;
    stream_conn *c = conn;
    if (in == NULL || c == NULL || c->inst != in) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->closed = 1;
    if (tl_io_inst != in) {
        while (c->in_hook) {
            pthread_cond_wait(&c->cv, &c->mu);
        }
    }
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&in->mu);
    if (c->accepted) {
        in->n_accepted--;
        c->accepted = 0;
    }
    conn_unlink(&in->conns, c);
    conn_link(&in->zombie_conns, c);
    pthread_mutex_unlock(&in->mu);
    wake(in);
}
/* For the node's door (authz.c): the socket of an accepted connection, to ask
 * the kernel who the peer is (SO_PEERCRED, getpeername). */
int aimsi_stream_conn_fd(void *tconn)
{
    const stream_conn *c = tconn;
    return c != NULL && c->tag == TAG_CONN ? c->fd : -1;
}
