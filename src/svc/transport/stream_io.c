/*
 * stream_io.c -- the stream transports' I/O thread (stream.c has the
 * overview): accepting connections and running handshakes within the
 * family's budget, pausing listeners when accept fails, reaping zombie
 * connections and listeners, and the epoll loop itself.
 *
 * The thread is started lazily (ensure_started) at the first listen or dial;
 * it frees zombies at the top of each loop, after it finished the batch of
 * epoll events that may still point at them (stream.c's Lifetime).
 */
#include "aimsi_stream.h"
#include "aimsi_stream_io.h"
#include "../authz/aimsi_authz.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- accepting ------------------------------------------------------------------------- */

int aimsi_stream_epoll_add(stream_inst *in, int fd, void *ptr)
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
    (void)aimsi_stream_hook_enter(c);
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
    atomic_store_explicit(&c->txshut, 1, memory_order_release);
    epoll_ctl(c->inst->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->mu);
    aimsi_stream_close(c->inst, c);
}

/* Advance an accepted connection's handshake (I/O thread). */
void aimsi_stream_conn_handshake(stream_conn *c)
{
    stream_inst *in = c->inst;
    char why[256] = "";
    const int r = in->fam->ops->handshake(c->sx, why, sizeof why);
    if (r == AIMSI_HS_FAILED) {
        hs_drop(c, why);
        return;
    }
    pthread_mutex_lock(&c->mu);
    aimsi_stream_arm_out(c, r == AIMSI_HS_WANT_WRITE);
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
    if (aimsi_stream_hook_enter(c)) { /* a first frame may have come with the handshake */
        aimsi_stream_hook_leave(c);
        aimsi_stream_conn_readable(c);
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
    if (aimsi_stream_conn_new(in, fd, NULL, &c) != AIMS_OK) {
        close(fd);
        return;
    }
    if (in->fam->ops->accept != NULL) {
        uint64_t budget = 0;
        if (in->fam->ops->accept(in->fam->ctx, fd, &c->sx, &budget) != AIMS_OK) {
            aimsi_log(AIMS_LOG_WARN, "%s transport: cannot accept a connection: %s",
                      in->fam->scheme, aims_errmsg());
            aimsi_stream_conn_free(c);
            return;
        }
        c->hs = 1;
        c->hs_deadline_ns = aimsi_now_ns() + budget;
        c->lst = l;
    }
    /* In the epoll set before on_accept: the library may send on it from
     * another thread as soon as it knows it (arming EPOLLOUT needs the fd in
     * the set). No event is handled before this function returns. */
    if (aimsi_stream_epoll_add(in, fd, c) != 0) {
        aimsi_stream_conn_free(c);
        return;
    }
    pthread_mutex_lock(&in->mu);
    if (in->n_accepted >= MAX_ACCEPTED) {
        pthread_mutex_unlock(&in->mu);
        epoll_ctl(in->epfd, EPOLL_CTL_DEL, fd, NULL);
        aimsi_stream_conn_free(c);
        aimsi_log(AIMS_LOG_WARN, "%s transport: %u connections open, refusing another",
                  in->fam->scheme, MAX_ACCEPTED);
        return;
    }
    in->n_accepted++;
    c->accepted = 1;
    c->last_rx_ns = aimsi_now_ns();
    aimsi_stream_conn_link(&in->conns, c);
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

void aimsi_stream_reap(stream_inst *in)
{
    pthread_mutex_lock(&in->mu);
    stream_conn *zc = in->zombie_conns;
    stream_listener *zl = in->zombie_listeners;
    in->zombie_conns = NULL;
    in->zombie_listeners = NULL;
    pthread_mutex_unlock(&in->mu);
    if (zc != NULL && aimsi_stream_tl_io_inst == in) {
        /* A zombie may still be on the ready list (a push before its close):
         * take the list now, so nothing points at it once it is freed. (In
         * destroy, after the thread stopped, nobody reads that list again.) */
        aimsi_stream_tx_run(in);
    }
    while (zc != NULL) {
        stream_conn *next = zc->next;
        epoll_ctl(in->epfd, EPOLL_CTL_DEL, zc->fd, NULL);
        pthread_mutex_lock(&zc->mu);
        if (!zc->dead) {
            (void)aimsi_stream_tx_take(zc); /* frames handed over before the close */
            (void)aimsi_stream_queue_flush(zc); /* best effort: a reply sent just before close */
        }
        pthread_mutex_unlock(&zc->mu);
        aimsi_stream_conn_free(zc);
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

/* Under a real-time policy (a host or daemon started with chrt -f N), run
 * one priority above the thread that started us -- and so above the node's
 * workers, which inherit N. Threads of one SCHED_FIFO priority never preempt
 * each other: with every core busy in a worker's run (two instances of a
 * 64-row MLP on two cores), a frame waited until some run ended, and a
 * rejection took 14-22 ms at the median instead of 0.1 ms
 * (docs/OVERLOAD.md, "Rejection latency"). This thread only moves bytes,
 * admits or refuses, and runs handlers cheap enough to run inline, so it
 * cannot hog a core. Best effort: without the privilege, nothing changes.
 * Under the normal policy (SCHED_OTHER) nothing is done. */
static void io_sched_above_workers(void)
{
    int policy = 0;
    struct sched_param sp;
    if (pthread_getschedparam(pthread_self(), &policy, &sp) != 0 ||
        (policy != SCHED_FIFO && policy != SCHED_RR) ||
        sp.sched_priority >= sched_get_priority_max(policy)) {
        return;
    }
    sp.sched_priority += 1;
    (void)pthread_setschedparam(pthread_self(), policy, &sp);
}

/* The I/O thread: reap, resume paused readers, sweep, then one epoll batch. */
static void *io_main(void *arg)
{
    stream_inst *in = arg;
    aimsi_stream_tl_io_inst = in;
    /* Named, so that an operator can tell it from the workers ("aims-worker")
     * in top -H and set priorities with chrt -p. */
    char name[16];
    snprintf(name, sizeof name, "aims-io-%s", in->fam->scheme);
    (void)pthread_setname_np(pthread_self(), name);
    io_sched_above_workers();
    struct epoll_event evs[EVENTS_PER_WAIT];
    for (;;) {
        aimsi_stream_reap(in);
        pthread_mutex_lock(&in->mu);
        const int stop = in->stopping;
        pthread_mutex_unlock(&in->mu);
        if (stop) {
            break;
        }
        if (in->rx_freed) {
            /* Budget came back (a big frame delivered, a connection freed):
             * paused connections go on now, not at the next sweep. */
            aimsi_stream_rx_wake(in, aimsi_now_ns());
        }
        int timeout = resume_listeners(in);
        const uint64_t now = aimsi_now_ns();
        if (now >= in->next_sweep_ns) {
            aimsi_stream_sweep_stalled(in, now);
            sweep_handshakes(in, now);
            in->next_sweep_ns = now + SWEEP_NS;
        }
        if (timeout < 0 || timeout > (int)(SWEEP_NS / 1000000u)) {
            timeout = (int)(SWEEP_NS / 1000000u);
        }
        if (in->again != NULL) {
            timeout = 0; /* bytes a family holds wait for no event */
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
                aimsi_stream_conn_event(evs[i].data.ptr, evs[i].events);
            }
        }
        aimsi_stream_tx_run(in); /* frames handed over lock-free (stream_tx.c) */
        aimsi_stream_again_run(in);
    }
    aimsi_stream_tl_io_inst = NULL;
    return NULL;
}

/* Create epoll + eventfd and start the thread, once. Caller holds in->mu. */
aims_status aimsi_stream_ensure_started(stream_inst *in)
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
    if (aimsi_stream_epoll_add(in, in->wakefd, &in->wake_tag) != 0) {
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
