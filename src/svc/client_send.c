/*
 * client_send.c -- the client's calls in flight and how one attempt reaches
 * an instance: the pending table, endpoints and their connections, the
 * inproc and stream send paths (client.c has the overview).
 *
 * Pendings. Every attempt is a cl_pending linked into c->plist. Exactly one
 * party unlinks it -- the reply (on_frame / the node's completion), the
 * connection's on_close, the deadline sweeper, a waiter that timed out, or
 * destroy -- and that party alone delivers the outcome. That is the whole
 * "exactly once" argument: late replies find nothing to unlink and are
 * dropped. A pending is reference counted (link + starter + node) because the
 * node still holds it after a waiter gave up on it.
 *
 * Who frees what, while an attempt is sent. An attempt is linked (under c->mu,
 * which gives it its request id and makes it cancellable) *before* its
 * request is encoded (stream) or handed to the node (inproc). From the link on,
 * another thread may win the unlink and finish the call: aims_call_cancel,
 * the deadline sweeper, a hedge cancelling its loser, on_close. Finishing
 * an async call frees the cl_call (and its request copy) and drops the
 * pending's link reference. So the sender -- the thread in
 * aimsi_client_attempt_start -- holds its own reference on both until it is
 * done reading them: the pending's "starter" reference (for a sync call that
 * is the waiter's, held across the wait) and a hold on the cl_call
 * (cl_call.holds; client_call.c). The rule: nobody reads a cl_call or a
 * cl_pending after the unlink unless they hold a reference; whoever drops the
 * last one frees. A send that fails after another party won the unlink
 * reports success: the winner delivers the outcome, exactly once.
 *
 * inproc:// endpoints cache a reference to the node; the request is handed
 * over borrowed and the node's reply is moved (not copied) into the caller's
 * reply. An async call's own request copy is lent to the node with a hold on
 * the call (AIMSI_REQ_KEPT), so a queued call is not copied a second time. Stream
 * endpoints (tcp, ipc, host transports) hold one connection, dialed lazily;
 * a failed dial or a dropped connection backs the endpoint off
 * (AIMS_CLIENT_BACKOFF_MS, doubling up to 32x) and calls to it fail fast with
 * AIMS_E_CLOSED meanwhile, so they retry on another instance. Replies are
 * decoded on the transport's thread: an async reply borrows the frame bytes
 * for its done(), a sync one adopts a copy. The replies of one read burst are
 * unlinked together, under one hold of c->mu (aimsi_client_on_frame).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimsi_client.h"
#include "aimsi_local.h"
#include "aimsi_wire.h"
#include "registry/aimsi_regbk.h"
#include "../orch/aimsi_orch.h"

/* ---- pendings -------------------------------------------------------------------- */

cl_pending *aimsi_client_pending_new(aims_client *c, cl_ep *ep, uint64_t deadline_ns,
                                     cl_call *async, aims_msg *dst)
{
    cl_pending *p = aimsi_client_pool_get(&c->pool, sizeof(*p)); /* zeroed */
    if (p == NULL) {
        return NULL;
    }
    p->c = c;
    p->ep = ep;
    p->deadline_ns = deadline_ns;
    p->call = async;
    p->dst = dst;
    /* The link reference and the starter's: the sync waiter's, or the async
     * sender's until it has sent (aimsi_client_attempt_start drops it). */
    atomic_init(&p->refs, 2);
    if (async == NULL) {
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, &c->cattr);
    }
    return p;
}

void aimsi_client_pending_unref(cl_pending *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (p->call == NULL) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    aimsi_client_pool_put(p);
}

static size_t hash_of(uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 56) & (CL_HASH - 1u);
}

/* Link p (under c->mu). AIMS_E_OVERLOADED past AIMS_CLIENT_MAX_PENDING. */
static aims_status link_locked(aims_client *c, cl_pending *p, int hashed)
{
    if (c->n_pending >= (size_t)c->max_pending) {
        return AIMS_E_OVERLOADED;
    }
    if (p->call != NULL && p->call->cancelled) {
        return AIMS_E_CANCELLED; /* client_cancel.c */
    }
    p->id = ++c->next_id;
    p->next = &c->plist;
    p->prev = c->plist.prev;
    c->plist.prev->next = p;
    c->plist.prev = p;
    p->linked = 1;
    c->n_pending++;
    if (p->call != NULL) {
        c->n_async++;
        p->call->cur = p;
        p->call->cur_inst = p->call->inst;
        if (p->try_ns < c->next_try) { /* earlier than the sweeper's plan (client_call.c) */
            c->next_try = p->try_ns;
            if (c->sweep_sleeping) {
                pthread_cond_broadcast(&c->cv);
            }
        }
    }
    if (hashed) {
        const size_t h = hash_of(p->id);
        p->hnext = c->hash[h];
        c->hash[h] = p;
        p->hashed = 1;
    }
    return AIMS_OK;
}

/* Unlink p (under c->mu). Returns 1 when this caller won (p was linked). */
int aimsi_client_unlink_locked(aims_client *c, cl_pending *p)
{
    if (!p->linked) {
        return 0;
    }
    p->linked = 0;
    p->prev->next = p->next;
    p->next->prev = p->prev;
    c->n_pending--;
    if (p->call != NULL) {
        c->n_async--;
        if (p->call->cur == p) {
            p->call->cur = NULL;
        }
    }
    if (p->hashed) {
        cl_pending **pp = &c->hash[hash_of(p->id)];
        while (*pp != NULL && *pp != p) {
            pp = &(*pp)->hnext;
        }
        if (*pp == p) {
            *pp = p->hnext;
        }
        p->hashed = 0;
    }
    return 1;
}

static cl_pending *hash_find_locked(aims_client *c, uint64_t id)
{
    cl_pending *p = c->hash[hash_of(id)];
    while (p != NULL && p->id != id) {
        p = p->hnext;
    }
    return p;
}

/* Deliver an attempt's outcome (the caller won the unlink). For a sync waiter
 * the reply's contents are moved into the caller's message. */
void aimsi_client_deliver(cl_pending *p, aims_status st, aims_msg *reply, const char *err)
{
    if (p->call != NULL) {
        p->call->unsent = p->unsent;
        p->call->rx_ns = p->rx_ns; /* the reply's read time: its report reads no clock */
        aimsi_client_attempt_finished(p->c, p->call, st, reply, err != NULL ? err : "");
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->st = st;
    if (reply != NULL) {
        aimsi_msg_move(p->dst, reply);
    } else {
        aims_msg_clear(p->dst);
    }
    snprintf(p->err, sizeof p->err, "%s", err != NULL ? err : "");
    p->delivered = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- endpoints and connections ------------------------------------------------------- */

/* Find or add the endpoint of `url` (under c->mu). */
cl_ep *aimsi_client_ep_get_locked(aims_client *c, const char *url)
{
    for (cl_ep *e = c->eps; e != NULL; e = e->next) {
        if (strcmp(e->url, url) == 0) {
            return e;
        }
    }
    const size_t len = strlen(url);
    if (len > AIMSI_URL_MAX) {
        return NULL;
    }
    cl_ep *e = aimsi_calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    memcpy(e->url, url, len + 1);
    e->inproc = strncmp(url, "inproc://", 9) == 0;
    pthread_mutex_init(&e->dial_mu, NULL);
    e->next = c->eps;
    c->eps = e;
    return e;
}

static void backoff_locked(aims_client *c, cl_ep *e)
{
    const uint64_t base = aimsi_client_ms_to_ns(c->backoff_ms);
    if (e->backoff_ns == 0) {
        e->backoff_ns = base;
    } else if (e->backoff_ns < 32u * base) {
        e->backoff_ns = e->backoff_ns * 2u > 32u * base ? 32u * base : e->backoff_ns * 2u;
    }
    e->retry_at = aimsi_now_ns() + e->backoff_ns;
}

/* Detach cc from its endpoint (under c->mu). Returns 1 when the caller must
 * close it (last reference gone). */
static int conn_detach_locked(aims_client *c, cl_conn *cc)
{
    cc->dead = 1;
    if (cc->ep->conn != cc) {
        return 0;
    }
    cc->ep->conn = NULL;
    backoff_locked(c, cc->ep);
    return --cc->refs == 0;
}

void aimsi_client_conn_close(cl_conn *cc)
{
    cc->slot->vt.close(cc->slot->inst, cc->conn);
    aimsi_free(cc);
}

/* Unlink every call still waiting on cc (under c->mu), chained through hnext. */
static cl_pending *conn_unlink_calls_locked(aims_client *c, const cl_conn *cc)
{
    cl_pending *dead = NULL;
    for (cl_pending *p = c->plist.next; p != &c->plist;) {
        cl_pending *nx = p->next;
        if (p->cc == cc && aimsi_client_unlink_locked(c, p)) {
            p->hnext = dead;
            dead = p;
        }
        p = nx;
    }
    return dead;
}

static void fail_calls(cl_pending *dead, aims_status st, const char *text)
{
    while (dead != NULL) {
        cl_pending *p = dead;
        dead = p->hnext;
        aimsi_client_deliver(p, st, NULL, text);
        aimsi_client_pending_unref(p);
    }
}

/* Close cc (its last reference is gone) after failing the calls still on it:
 * once closed, no hook would ever answer them. */
static void conn_finish(aims_client *c, cl_conn *cc)
{
    pthread_mutex_lock(&c->mu);
    cl_pending *dead = conn_unlink_calls_locked(c, cc);
    pthread_mutex_unlock(&c->mu);
    fail_calls(dead, AIMS_E_CLOSED, "connection closed");
    aimsi_client_conn_close(cc);
}

/* Drop a sender's reference (no lock: refs is atomic, and whoever takes it
 * to zero -- here or conn_detach_locked -- is the one that closes). */
void aimsi_client_conn_release(aims_client *c, cl_conn *cc)
{
    if (--cc->refs == 0) {
        conn_finish(c, cc);
    }
}

/* The endpoint's connection with a sender reference, dialing it if needed.
 * Fails fast with AIMS_E_CLOSED while the endpoint backs off. */
static aims_status conn_get(aims_client *c, cl_ep *e, cl_conn **out)
{
    pthread_mutex_lock(&e->dial_mu);
    pthread_mutex_lock(&c->mu);
    if (e->conn != NULL) {
        e->conn->refs++;
        *out = e->conn;
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        return AIMS_OK;
    }
    if (e->retry_at != 0 && aimsi_now_ns() < e->retry_at) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        return aimsi_client_call_err(c, AIMS_E_CLOSED, "%s: reconnect backoff (%llu ms)", e->url,
                                     (unsigned long long)(e->backoff_ns / 1000000u));
    }
    aimsi_tslot *slot = NULL;
    aims_status rc = c->closing ? AIMS_E_CLOSED : aimsi_ttable_get(&c->tt, e->url, &slot);
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK) {
        pthread_mutex_unlock(&e->dial_mu);
        return aimsi_client_call_err(c, rc, "%s: %s", e->url, aims_errmsg());
    }
    cl_conn *cc = aimsi_calloc(1, sizeof(*cc));
    if (cc == NULL) {
        pthread_mutex_unlock(&e->dial_mu);
        return aimsi_client_call_err(c, AIMS_E_NOMEM, "%s: out of memory for a connection", e->url);
    }
    cc->c = c;
    cc->ep = e;
    cc->slot = slot;
    rc = slot->vt.dial(slot->inst, e->url, cc, &cc->conn);
    char why[AIMSI_ERRMSG_CAP] = "";
    if (rc != AIMS_OK) { /* the transport's own words (TLS: the verification failure) */
        snprintf(why, sizeof why, "%s", aims_errmsg());
    }
    pthread_mutex_lock(&c->mu);
    if (rc != AIMS_OK) {
        backoff_locked(c, e);
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        aimsi_free(cc);
        /* A refused dial means the request never left: retryable. */
        const aims_status code = rc == AIMS_E_NOMEM ? rc : AIMS_E_CLOSED;
        return aimsi_client_call_err(c, code, "%s: connect failed: %s (%s)", e->url,
                                     aims_strerror(rc), why);
    }
    if (cc->dead) {
        /* on_close beat us: the connection died before it was installed. */
        backoff_locked(c, e);
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&e->dial_mu);
        aimsi_client_conn_close(cc);
        return aimsi_client_call_err(c, AIMS_E_CLOSED, "%s: connection closed while connecting",
                                     e->url);
    }
    cc->refs = 2; /* the endpoint's + ours */
    e->conn = cc;
    *out = cc;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&e->dial_mu);
    return AIMS_OK;
}

/* An async attempt's reply, straight from the transport's buffer: done()
 * sees a reply only while it runs (aims_done_fn), so its tensors borrow the
 * frame -- no copy of the bytes, no heap frame (an aimsi_frame is ~8 KB, past
 * malloc's per-thread caches) per reply on the I/O thread. */
static void deliver_borrowed(cl_pending *p, aims_status st, const aimsi_frame *f)
{
    aims_msg tmp;
    aimsi_msg_init(&tmp);
    aims_status rc = f->n_tensors <= AIMS_MSG_MAX_TENSORS ? AIMS_OK : AIMS_E_CORRUPT;
    for (size_t i = 0; rc == AIMS_OK && i < f->n_tensors; i++) {
        const aimsi_tensor *t = &f->tensors[i];
        rc = aims_msg_add(&tmp, t->name, (aims_dtype)t->dtype, t->dims, t->ndim, t->data,
                          AIMS_MSG_BORROW);
    }
    char err[1025]; /* an ERROR frame's text is at most 1024 bytes */
    const size_t n = f->message != NULL ? (f->message_len < 1024 ? f->message_len : 1024) : 0;
    memcpy(err, f->message != NULL ? f->message : "", n);
    err[n] = '\0';
    if (rc == AIMS_OK && n > 0) {
        (void)aims_msg_set_error(&tmp, err); /* aims_msg_error(reply) says it too */
    }
    if (rc != AIMS_OK) {
        aimsi_client_deliver(p, AIMS_E_CORRUPT, NULL, "malformed reply");
    } else {
        aimsi_client_deliver(p, st, &tmp, err);
    }
    aimsi_msg_fini(&tmp);
}

/* A sync attempt's reply: the waiter keeps it, so it adopts a copy of the
 * frame bytes (one copy, out of the transport's buffer) -- or, when the
 * payload was decompressed, the decoded frame itself (its tensors point into
 * the buffer the frame owns, which moves along; *f is left owning nothing). */
static void deliver_owned(aims_client *c, cl_pending *p, aims_status st, aimsi_frame *f,
                          const void *frame, size_t len)
{
    const int moved = f->owned != NULL;
    void *bytes = moved ? NULL : aimsi_malloc(len > 0 ? len : 1);
    aimsi_frame *hf = aimsi_malloc(sizeof(*hf));
    if ((!moved && bytes == NULL) || hf == NULL) {
        aimsi_free(bytes);
        aimsi_free(hf);
        aimsi_client_deliver(p, AIMS_E_NOMEM, NULL, "out of memory for the reply");
        return;
    }
    if (moved) {
        *hf = *f;
        f->owned = NULL;
    } else {
        memcpy(bytes, frame, len);
        if (aimsi_frame_decode(bytes, len, (size_t)c->max_frame, hf) != AIMS_OK) {
            aimsi_free(hf); /* decoded once already: cannot fail */
            aimsi_free(bytes);
            aimsi_client_deliver(p, AIMS_E_CORRUPT, NULL, "malformed reply");
            return;
        }
    }
    aims_msg tmp;
    aimsi_msg_init(&tmp);
    const aims_status ar = aimsi_msg_adopt_frame(&tmp, bytes, hf); /* owns both, also on error */
    if (ar != AIMS_OK) {
        aimsi_client_deliver(p, AIMS_E_CORRUPT, NULL, "malformed reply");
    } else {
        aimsi_client_deliver(p, st, &tmp, aims_msg_error(&tmp));
    }
    aimsi_msg_fini(&tmp);
}

/* One reply whose attempt this thread won: decode it, deliver, drop the link's
 * reference. A reply that does not decode fails its call (AIMS_E_CORRUPT). */
static void reply_deliver(aims_client *c, cl_pending *p, const void *frame, size_t len)
{
    aimsi_frame f; /* decoded in place: tensors point into the transport's buffer */
    if (aimsi_frame_decode(frame, len, (size_t)c->max_frame, &f) != AIMS_OK) {
        aimsi_client_deliver(p, AIMS_E_CORRUPT, NULL, "malformed reply");
        aimsi_client_pending_unref(p);
        return;
    }
    aims_status st = (aims_status)f.hdr.status;
    if (f.hdr.status < 0 || f.hdr.status > (int32_t)AIMS_E_DENIED) {
        st = AIMS_E_INTERNAL;
    }
    if (st == AIMS_OK && f.hdr.type == AIMSI_FRAME_ERROR) {
        st = AIMS_E_INTERNAL;
    }
    if (p->call != NULL) {
        deliver_borrowed(p, st, &f);
    } else {
        deliver_owned(c, p, st, &f, frame, len);
    }
    aimsi_frame_release(&f);
    aimsi_client_pending_unref(p);
}

/* The replies of one read burst: every attempt they answer is unlinked under
 * one hold of c->mu (not one per reply: with many calls in flight the caller
 * starting calls and this I/O thread meet on c->mu, and every collision is a
 * futex sleep and wake), then each is delivered outside the lock, in order.
 * A late reply (the call timed out), a stranger's id or a frame that is not a
 * reply (PONG) finds nothing to unlink and is dropped. */
static void replies_handle(cl_conn *cc, const void *const *frames, const size_t *lens,
                           unsigned n, uint64_t rx_ns)
{
    aims_client *c = cc->c;
    cl_pending *won[CL_BURST];
    int any = 0;
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < n; i++) {
        uint64_t id = 0;
        const uint8_t type = aimsi_frame_peek_id(frames[i], &id);
        cl_pending *p = NULL;
        if (type == AIMSI_FRAME_REPLY || type == AIMSI_FRAME_ERROR) {
            p = hash_find_locked(c, id);
        }
        won[i] = p != NULL && p->cc == cc && aimsi_client_unlink_locked(c, p) ? p : NULL;
        any |= won[i] != NULL;
    }
    if (any) {
        cc->ep->backoff_ns = 0; /* the connection works */
    }
    pthread_mutex_unlock(&c->mu);
    for (unsigned i = 0; i < n; i++) {
        if (won[i] != NULL) {
            won[i]->rx_ns = rx_ns; /* one clock read per burst, not per reply */
            reply_deliver(c, won[i], frames[i], lens[i]);
        }
    }
}

/* Transport hook: one reply frame. Inside a read burst of a built-in stream
 * transport (aimsi_transport_tl_burst) the frame is kept until the burst's
 * last one, which handles them all; elsewhere it is handled at once. A burst
 * cut short (the connection closed) leaves its frames unhandled: their calls
 * stay linked and on_close fails them. */
void aimsi_client_on_frame(void *conn_user, const void *frame, size_t len)
{
    cl_conn *cc = conn_user;
    const aimsi_burst *tb = aimsi_transport_tl_burst;
    if (tb == NULL) {
        replies_handle(cc, &frame, &len, 1, 0);
        return;
    }
    cl_burst *b = &cc->burst;
    if (b->seq != tb->seq) { /* a new burst: what an earlier one left is gone */
        b->seq = tb->seq;
        b->n = 0;
    }
    b->frame[b->n] = frame;
    b->len[b->n] = len;
    b->n++;
    if (tb->more && b->n < CL_BURST) {
        return;
    }
    const unsigned n = b->n;
    b->n = 0;
    replies_handle(cc, b->frame, b->len, n, tb->now_ns);
}

/* Transport hook: the connection is gone. Fail its calls with AIMS_E_CLOSED. */
void aimsi_client_on_close(void *conn_user, aims_status why)
{
    cl_conn *cc = conn_user;
    aims_client *c = cc->c;
    cl_pending *dead = NULL;
    pthread_mutex_lock(&c->mu);
    const int last = conn_detach_locked(c, cc);
    dead = conn_unlink_calls_locked(c, cc);
    char url[AIMSI_URL_MAX + 1];
    memcpy(url, cc->ep->url, sizeof url);
    pthread_mutex_unlock(&c->mu);
    char text[AIMSI_ERRMSG_CAP];
    snprintf(text, sizeof text, "%s: connection lost (%s)", url, aims_strerror(why));
    fail_calls(dead, AIMS_E_CLOSED, text);
    if (last) {
        aimsi_client_conn_close(cc);
    }
}

/* ---- inproc ------------------------------------------------------------------------ */

/* The endpoint's node (a cached reference). */
static aims_status ep_node(aims_client *c, cl_ep *e, aims_node **out)
{
    pthread_mutex_lock(&c->mu);
    if (e->node == NULL || e->node_stale) {
        aims_node *n = NULL;
        const aims_status rc = aimsi_inproc_find(e->url + 9, &n);
        if (rc != AIMS_OK) {
            pthread_mutex_unlock(&c->mu);
            return aimsi_client_call_err(c, rc == AIMS_E_NOMEM ? rc : AIMS_E_CLOSED,
                                         "%s: no node listens there", e->url);
        }
        if (n == e->node) {
            aimsi_node_unref(n); /* same node: the service restarted */
        } else if (e->node != NULL) {
            cl_grave *g = aimsi_malloc(sizeof(*g));
            if (g == NULL) {
                pthread_mutex_unlock(&c->mu);
                aimsi_node_unref(n);
                return aimsi_client_call_err(c, AIMS_E_NOMEM, "%s: out of memory", e->url);
            }
            /* Another thread may still be calling the old node: keep the
             * reference until destroy. */
            g->node = e->node;
            g->next = e->graves;
            e->graves = g;
            e->node = n;
        } else {
            e->node = n;
        }
        e->node_stale = 0;
    }
    *out = e->node;
    pthread_mutex_unlock(&c->mu);
    return AIMS_OK;
}

/* Node completion (any thread; possibly inside aimsi_node_call_local). */
static void node_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    cl_pending *p = ctx;
    aims_client *c = p->c;
    cl_call *held = p->node_holds_call ? p->call : NULL; /* its req_copy, lent to the node */
    if (p->rd) { /* the node is done with the caller's request (client_keep.c) */
        p->rd = 0;
        aimsi_client_rd_put(p->call);
    }
    pthread_mutex_lock(&c->mu);
    const int won = aimsi_client_unlink_locked(c, p);
    if (st == AIMS_E_CLOSED) {
        p->ep->node_stale = 1;
    }
    pthread_mutex_unlock(&c->mu);
    if (won) {
        /* No reply and CLOSED: the node refused before any handler ran. */
        p->unsent = reply == NULL && st == AIMS_E_CLOSED;
        aimsi_client_deliver(p, st, reply, err);
        aimsi_client_pending_unref(p); /* the link's */
    }
    /* The node's references go before node_refs drops: once that reaches
     * zero destroy may free the client, and with it the pool p returns to. */
    aimsi_client_pending_unref(p);
    if (held != NULL) {
        aimsi_client_call_unref(held); /* the node is done with the request */
    }
    pthread_mutex_lock(&c->mu);
    c->node_refs--;
    if (c->closing && c->node_refs == 0) {
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- sending one attempt ------------------------------------------------------------ */

/* Send attempt p of call k to endpoint e. AIMS_OK: p is linked and will be
 * delivered (maybe already was). Otherwise nothing is linked; the caller owns p. */
aims_status aimsi_client_send_inproc(aims_client *c, cl_call *k, cl_pending *p)
{
    aims_node *n = NULL;
    AIMSI_TRY(ep_node(c, p->ep, &n));
    pthread_mutex_lock(&c->mu);
    aims_status rc = c->closing ? AIMS_E_CLOSED : link_locked(c, p, 0);
    if (rc == AIMS_OK) {
        c->node_refs++;
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); /* the node's */
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK) {
        return aimsi_client_call_err(
            c, rc, "%s: %s", p->ep->url,
            rc == AIMS_E_OVERLOADED   ? "too many calls in flight (max_pending)"
            : rc == AIMS_E_CANCELLED ? "cancelled by the caller"
                                     : "client closing");
    }
    /* An async call's own request copy lives as long as k: a hold on k for
     * the node lets a queued call borrow it instead of copying it again
     * (node_done drops the hold, after the node's last look at it). */
    const int lend = k->done != NULL &&
                     ((k->req_copy != NULL && k->req == k->req_copy) || k->keep);
    /* AIMS_CALL_KEEP_REQUEST: the sender's reader (p->rd) becomes the node's,
     * dropped by node_done before it delivers (client_keep.c). */
    if (lend) {
        aimsi_client_call_hold(k);
        p->node_holds_call = 1;
    }
    const aimsi_local_call lc = {k->service, k->method, k->req, p->deadline_ns, node_done, p,
                                 (k->done != NULL) | (lend ? AIMSI_REQ_KEPT : 0), &p->cancel};
    rc = aimsi_node_call_local(n, &lc);
    if (rc == AIMS_OK) {
        return AIMS_OK;
    }
    if (lend) {
        p->node_holds_call = 0;
        aimsi_client_call_unref(k); /* the sender's hold remains: never the last */
    }
    if (p->rd) { /* refused: the node will not read the request */
        p->rd = 0;
        aimsi_client_rd_put(k);
    }
    /* The node refused before taking the call: done will not run. */
    char why[AIMSI_ERRMSG_CAP];
    snprintf(why, sizeof why, "%s", aims_errmsg());
    pthread_mutex_lock(&c->mu);
    const int won = aimsi_client_unlink_locked(c, p);
    c->node_refs--;
    if (rc == AIMS_E_CLOSED) {
        p->ep->node_stale = 1;
    }
    pthread_mutex_unlock(&c->mu);
    aimsi_client_pending_unref(p); /* the node's (ours keeps p) */
    if (!won) {
        return AIMS_OK; /* a cancel or the sweeper unlinked it first and delivers */
    }
    return aimsi_client_call_err(c, rc, "%s: %s", p->ep->url, why);
}

int aimsi_url_compresses(const char *url)
{
    if (strncmp(url, "ipc://", 6) == 0) {
        return 0;
    }
    if (strncmp(url, "tcp://", 6) != 0 && strncmp(url, "tls://", 6) != 0) {
        return 1; /* tls:// is tcp underneath: the same loopback rule */
    }
    const char *h = url + 6;
    return !(strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
             strncmp(h, "[::1]:", 6) == 0);
}

/* tok: a reference to the bearer token (or NULL), dropped here. `now`: the
 * clock the time left on the wire counts from (docs/DEADLINES.md). */
static aims_status encode_request(aims_client *c, const cl_call *k, const char *url,
                                  uint64_t id, uint64_t deadline_ns, uint64_t now,
                                  aimsi_client_tok *tok, int pool, void **out, size_t *out_len,
                                  int *pooled)
{
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof h);
    h.type = AIMSI_FRAME_REQUEST;
    h.request_id = id;
    h.deadline_ns = aimsi_deadline_encode(deadline_ns, now);
    /* Copied by hand, not snprintf'd: per request, on the pipelined hot path. */
    const size_t sl = strnlen(k->service, sizeof h.service - 1);
    const size_t ml = strnlen(k->method, sizeof h.method - 1);
    memcpy(h.service, k->service, sl);
    memcpy(h.method, k->method, ml);
    aimsi_tensor views[AIMS_MSG_MAX_TENSORS + 1]; /* + the bearer token */
    size_t n = aimsi_msg_views(k->req, views);
    n += (size_t)aimsi_client_token_view(tok, &views[n]); /* client_token.c */
    aimsi_buf b;
    aimsi_buf_init(&b);
    /* One allocation of about the frame's size instead of a few doublings
     * (each a realloc on the caller's thread, while the I/O thread frees the
     * frames it wrote into the same malloc arena): header, names, and per
     * tensor its descriptor (<= 120 bytes with padding) and data. */
    size_t est = AIMSI_FRAME_HEADER + AIMSI_FRAME_MAX_SERVICE + AIMSI_FRAME_MAX_METHOD + 4;
    for (size_t i = 0; i < n; i++) {
        est += 120 + views[i].bytes;
    }
    /* A small frame goes into a recycled block (a plain heap block: should
     * the encoder ever need more it reallocs it like any other), which the
     * transport gives back to the pool when it is written. */
    void *blk = pool && est <= CL_FRAME_BLOCK ? aimsi_client_pool_take_raw(&c->fpool) : NULL;
    if (blk != NULL) {
        b.data = blk;
        b.cap = CL_FRAME_BLOCK;
    } else {
        (void)aimsi_buf_reserve(&b, est < ((size_t)64 << 10) ? est : ((size_t)64 << 10));
    }
    const size_t above = aimsi_url_compresses(url) ? AIMSI_COMPRESS_ABOVE : 0;
    const aims_status rc = aimsi_frame_encode(&h, views, n, NULL, above, &b);
    aimsi_client_token_drop(tok);
    *pooled = blk != NULL && b.data == blk;
    if (rc != AIMS_OK) {
        if (*pooled) {
            aimsi_client_pool_put_raw(&c->fpool, blk);
        } else {
            aimsi_buf_free(&b);
        }
        return aimsi_client_call_err(c, rc, "encoding the request for '%s': %s", k->service,
                                     aims_errmsg());
    }
    *out = aimsi_buf_take(&b, out_len);
    return AIMS_OK;
}

aims_status aimsi_client_send_stream(aims_client *c, cl_call *k, cl_pending *p)
{
    /* A connected endpoint (every call but the first): the sender reference
     * and the link in one hold of c->mu, no dial lock -- with many calls in
     * flight the caller and the I/O thread (replies) meet on c->mu, so each
     * hold saved is a futex sleep/wake pair less when they collide. */
    /* The time left on the wire counts from the attempt's start (its clock
     * read, a few microseconds ago: pick, link) unless this send dialed. */
    uint64_t now = k->attempt_ns;
    pthread_mutex_lock(&c->mu);
    cl_conn *cc = p->ep->conn;
    if (cc != NULL) {
        cc->refs++; /* ours, while we send (the endpoint holds one: refs >= 1) */
    } else {
        pthread_mutex_unlock(&c->mu);
        AIMSI_TRY(conn_get(c, p->ep, &cc)); /* dials; takes our reference */
        now = 0;
        pthread_mutex_lock(&c->mu);
    }
    p->cc = cc;
    aims_status rc = c->closing ? AIMS_E_CLOSED : link_locked(c, p, 1);
    cl_slink sl = {cc, p->id, 0, NULL};
    /* Async with others in flight: the I/O thread may batch it (stream_tx.c). */
    sl.defer = p->call != NULL && c->n_async > 1;
    sl.tok = rc == AIMS_OK ? aimsi_client_bearer_take_locked(c) : NULL;
    pthread_mutex_unlock(&c->mu);
    if (rc != AIMS_OK) {
        aimsi_client_conn_release(c, cc);
        return aimsi_client_call_err(c, rc, "%s: %s", p->ep->url,
                                     rc == AIMS_E_OVERLOADED
                            ? "too many calls in flight (max_pending); retry after 10 ms"
                            : rc == AIMS_E_CANCELLED ? "cancelled by the caller"
                                                     : "client closing");
    }
    return aimsi_client_send_linked(c, k, p, &sl, now != 0 ? now : aimsi_now_ns());
}

int aimsi_client_stream_link_locked(aims_client *c, cl_pending *p, cl_slink *out)
{
    cl_conn *cc = p->ep->conn;
    if (cc == NULL || c->closing) {
        return 0; /* dial, or fail, on the usual path */
    }
    p->cc = cc;
    if (link_locked(c, p, 1) != AIMS_OK) {
        p->cc = NULL;
        return 0; /* the usual path fails it the same way, with its words */
    }
    cc->refs++; /* ours, while we send (the endpoint holds one: refs >= 1) */
    out->cc = cc;
    out->id = p->id;
    out->defer = c->n_async > 1;
    out->tok = aimsi_client_bearer_take_locked(c);
    return 1;
}

/* Encode and send attempt p, linked on sl->cc with id sl->id; `now`: the
 * clock the time left on the wire counts from. */
aims_status aimsi_client_send_linked(aims_client *c, cl_call *k, cl_pending *p, const cl_slink *sl,
                                     uint64_t now)
{
    cl_conn *cc = sl->cc;
    const int defer = sl->defer;
    void *frame = NULL;
    size_t len = 0;
    int pooled = 0;
    aims_status rc = encode_request(c, k, p->ep->url, sl->id, p->deadline_ns, now, sl->tok,
                                    aimsi_ttable_streams(cc->slot), &frame, &len, &pooled);
    if (p->rd) { /* encoded: the caller's request is not read again (client_keep.c) */
        p->rd = 0;
        aimsi_client_rd_put(k);
    }
    if (rc == AIMS_OK) {
        aimsi_transport_tl_defer = defer;
        if (pooled) { /* the transport gives the frame back to fpool (client_pool.c) */
            aimsi_transport_tl_release.fn = aimsi_client_pool_put_raw;
            aimsi_transport_tl_release.ctx = &c->fpool;
            /* The block's tail behind CL_FRAME_BLOCK: the frame's node in the
             * transport's lock-free hand-over (stream_tx.c). */
            aimsi_transport_tl_release.link = (uint8_t *)frame + CL_FRAME_BLOCK;
        }
        rc = cc->slot->vt.send(cc->slot->inst, cc->conn, frame, len);
        aimsi_transport_tl_release.fn = NULL;
        aimsi_transport_tl_release.ctx = NULL;
        aimsi_transport_tl_release.link = NULL;
        aimsi_transport_tl_defer = 0;
        if (rc == AIMS_E_OVERLOADED) {
            /* The connection's send queue is full: the peer reads slower than
             * we write. Short back-off hint, like a service's queue-full reply. */
            aimsi_client_call_err(
                c, rc, "%s: send queue full (peer not keeping up); retry after 10 ms", p->ep->url);
        } else if (rc != AIMS_OK) {
            aimsi_client_call_err(c, rc, "%s: send failed: %s", p->ep->url, aims_strerror(rc));
        }
    }
    if (rc == AIMS_OK) {
        aimsi_client_conn_release(c, cc);
        return AIMS_OK;
    }
    pthread_mutex_lock(&c->mu);
    const int won = aimsi_client_unlink_locked(c, p);
    if (rc == AIMS_E_CLOSED || rc == AIMS_E_IO) {
        (void)conn_detach_locked(c, cc); /* our reference keeps it above 0 */
    }
    const int last = --cc->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) {
        conn_finish(c, cc);
    }
    if (!won) {
        /* on_close got there first and delivers; our send error is moot. */
        return AIMS_OK;
    }
    return rc;
}
