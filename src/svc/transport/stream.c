/*
 * stream.c -- the machinery behind the tcp://, ipc:// and tls:// transports:
 * one I/O thread per instance, whole frames in, whole frames out. Bytes move
 * through the family's per-connection hooks (aimsi_stream.h: plain sockets in
 * sock.c, OpenSSL in tls*.c); an accepted connection of a family with a
 * handshake is shown to the library (on_accept) only once the handshake is
 * done, and is dropped if that takes longer than the family's budget.
 * This file holds the instance and connection objects, the hook gate and the
 * vtable; the parts live next to it: stream_io.c (the I/O thread: accepting,
 * handshakes, reaping), stream_rx.c (receiving: framing and receive bounds),
 * stream_tx.c (sending: the per-connection queues); aimsi_stream_io.h holds
 * the shared types.
 *
 * Shape. An instance (what aims_transport.create returns; a node or a client
 * owns one per scheme) has one epoll I/O thread, started lazily at the first
 * listen or dial, an eventfd to wake it, a list of listeners and a list of
 * connections. Sockets are nonblocking; the epoll set is level-triggered.
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

/* Set on the I/O thread: lets close()/unlisten() know they run inside a hook. */
_Thread_local const stream_inst *aimsi_stream_tl_io_inst;

/* ---- lists ------------------------------------------------------------------ */

void aimsi_stream_conn_link(stream_conn **head, stream_conn *c)
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

void aimsi_stream_wake(stream_inst *in)
{
    const uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the thread will wake. */
    ssize_t rc;
    do {
        rc = write(in->wakefd, &one, sizeof one);
    } while (rc < 0 && errno == EINTR);
}

/* ---- connection objects ----------------------------------------------------------- */

/* Reserve (or give back) budget so that c holds what a read buffer of `cap`
 * bytes holds above RBUF_INIT. 0 when the node-wide budget is spent. */
int aimsi_stream_rx_hold(stream_conn *c, size_t cap)
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
    if (delta < 0) {
        /* Only the I/O thread (or destroy, after it stopped) gives budget
         * back: a connection holds budget only once that thread grew it. */
        c->inst->rx_freed = 1; /* paused connections may resume (stream_rx.c) */
    }
    return 1;
}

void aimsi_stream_conn_free(stream_conn *c)
{
    aimsi_stream_pq_remove(c);
    (void)aimsi_stream_rx_hold(c, 0);
    aimsi_stream_again_del(c); /* I/O thread, or after it was joined */
    aimsi_stream_tx_drop(c);   /* the ring, and frames handed over (stream_tx.c) */
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

aims_status aimsi_stream_conn_new(stream_inst *in, int fd, void *user, stream_conn **out)
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
    if (aimsi_mutex_init_spin(&c->mu) != 0) {
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
    aimsi_mpsc_init(&c->inbox);
    atomic_init(&c->txstate, TX_IDLE);
    atomic_init(&c->txshut, 0);
    atomic_init(&c->txn, 0);
    atomic_init(&c->txb, 0);
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

int aimsi_stream_hook_enter(stream_conn *c)
{
    pthread_mutex_lock(&c->mu);
    const int ok = !c->closed;
    if (ok) {
        c->in_hook = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

int aimsi_stream_hook_next(stream_conn *c)
{
    pthread_mutex_lock(&c->mu);
    const int ok = !c->closed;
    if (!ok) {
        c->in_hook = 0; /* as hook_leave: a close() waiting for us goes on */
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void aimsi_stream_hook_leave(stream_conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->in_hook = 0;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* The connection failed: leave epoll, shut the socket, drop the queue, and
 * tell the library once (unless it already released the connection). */
void aimsi_stream_conn_fail(stream_conn *c, aims_status why)
{
    stream_inst *in = c->inst;
    pthread_mutex_lock(&c->mu);
    if (c->dead) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->dead = 1;
    atomic_store_explicit(&c->txshut, 1, memory_order_release); /* no more pushes */
    epoll_ctl(in->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    shutdown(c->fd, SHUT_RDWR);
    aimsi_stream_tx_drop(c);
    c->want_out = 0;
    pthread_mutex_unlock(&c->mu);
    aimsi_stream_pq_remove(c); /* the I/O thread's: only it fails connections */
    if (aimsi_stream_hook_enter(c)) {
        in->hooks.on_close(c->user, why);
        aimsi_stream_hook_leave(c);
    }
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
    aimsi_mpsc_init(&in->ready);
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
        aimsi_stream_wake(in);
        pthread_join(in->thr, NULL);
    }
    aimsi_stream_reap(in);
    while (in->conns != NULL) {
        stream_conn *c = in->conns;
        conn_unlink(&in->conns, c);
        aimsi_stream_conn_free(c);
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
        rc = aimsi_stream_ensure_started(in);
        if (rc == AIMS_OK && aimsi_stream_epoll_add(in, fd, l) != 0) {
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
    if (aimsi_stream_tl_io_inst != in) {
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
    aimsi_stream_wake(in);
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
    rc = aimsi_stream_conn_new(in, fd, conn_user, &c);
    if (rc != AIMS_OK) {
        if (sx != NULL) {
            in->fam->ops->close(sx);
        }
        close(fd);
        return rc;
    }
    c->sx = sx;
    pthread_mutex_lock(&in->mu);
    rc = aimsi_stream_ensure_started(in);
    if (rc == AIMS_OK && aimsi_stream_epoll_add(in, fd, c) != 0) {
        rc = aimsi_err(NULL, AIMS_E_IO, "%s: epoll_ctl: %s", url, strerror(errno));
    }
    if (rc == AIMS_OK) {
        aimsi_stream_conn_link(&in->conns, c);
    }
    pthread_mutex_unlock(&in->mu);
    if (rc != AIMS_OK) {
        aimsi_stream_conn_free(c);
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
    atomic_store_explicit(&c->txshut, 1, memory_order_release);
    if (aimsi_stream_tl_io_inst != in) {
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
    aimsi_stream_conn_link(&in->zombie_conns, c);
    pthread_mutex_unlock(&in->mu);
    aimsi_stream_wake(in);
}
/* For the node's door (authz.c): the socket of an accepted connection, to ask
 * the kernel who the peer is (SO_PEERCRED, getpeername). */
int aimsi_stream_conn_fd(void *tconn)
{
    const stream_conn *c = tconn;
    return c != NULL && c->tag == TAG_CONN ? c->fd : -1;
}
