/*
 * client_cancel.c -- the client's side of cancellation: aims_call handles and
 * aimsi_client_cancel, which the handles and hedges (client_hedge.c) use
 * (docs/CANCEL.md; client.c has the client's overview).
 *
 * Reaching a call. An async call (cl_call) is finished by whoever wins its
 * attempt's unlink, on any thread -- possibly while the thread that linked the
 * attempt is still encoding its request, which is why that sender holds a
 * reference until it is done (client_send.c, "Who frees what"; the last
 * reference frees). So nobody keeps a bare pointer to it: a handle or a hedge
 * leg owns a slot (cl_call *) that the call fills when it starts and that
 * aimsi_client_finish_call clears, both under c->mu. aimsi_client_cancel reads
 * the slot under c->mu; while it holds the lock the call cannot be freed.
 *
 * What a cancel does, under c->mu: mark the call cancelled (no further
 * attempt: link_locked refuses to link one, retry_ok refuses a retry), set the
 * attempt's flag (the node reads it for inproc:// calls), and unlink the
 * attempt in flight -- whoever unlinks a pending delivers its outcome
 * (client_send.c), so winning the unlink means this thread delivers
 * AIMS_E_CANCELLED and a late reply is dropped. Outside the lock it sends a
 * CANCEL frame for stream attempts, so the instance drops or flags the
 * request. A call waiting in the retry queue is taken out and finished. When
 * another thread is already delivering the outcome, that outcome stands.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "aimsi_client.h"
#include "aimsi_msg.h"
#include "aims/aims_cancel.h"

#define CALL_MAGIC 0x43414c4cu /* "CALL" */
#define CANCEL_TEXT "cancelled by the caller"

/* Send a CANCEL frame for request `id` on cc (the caller holds a reference). */
static void send_cancel_frame(aims_client *c, cl_conn *cc, uint64_t id)
{
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof h);
    h.type = AIMSI_FRAME_CANCEL;
    h.request_id = id;
    aimsi_buf b;
    aimsi_buf_init(&b);
    if (aimsi_frame_encode(&h, NULL, 0, NULL, 0, &b) == AIMS_OK) {
        size_t len = 0;
        void *frame = aimsi_buf_take(&b, &len);
        /* Best effort: a lost CANCEL only means the request runs. */
        (void)cc->slot->vt.send(cc->slot->inst, cc->conn, frame, len);
    } else {
        aimsi_buf_free(&b);
    }
    aimsi_client_conn_release(c, cc);
}

/* Under c->mu: take k out of the retry queue; 1 when it was there. */
static int rq_remove_locked(aims_client *c, cl_call *k)
{
    cl_call *prev = NULL;
    for (cl_call *q = c->rq_head; q != NULL; prev = q, q = q->qnext) {
        if (q != k) {
            continue;
        }
        if (prev != NULL) {
            prev->qnext = q->qnext;
        } else {
            c->rq_head = q->qnext;
        }
        if (c->rq_tail == q) {
            c->rq_tail = prev;
        }
        q->qnext = NULL;
        return 1;
    }
    return 0;
}

void aimsi_client_cancel(aims_client *c, cl_call *const *slot)
{
    cl_pending *won = NULL;
    cl_conn *cc = NULL;
    uint64_t id = 0;
    int queued = 0;
    pthread_mutex_lock(&c->mu);
    cl_call *k = *slot;
    if (k == NULL || k->cancelled) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    k->cancelled = 1;
    cl_pending *p = k->cur;
    if (p != NULL) {
        atomic_store(&p->cancel, 1); /* inproc: the node drops or flags it */
        if (aimsi_client_unlink_locked(c, p)) {
            won = p;
            if (p->cc != NULL && !p->cc->dead && p->cc->ep->conn == p->cc) {
                cc = p->cc;
                cc->refs++;
                id = p->id;
            }
        }
    } else {
        queued = rq_remove_locked(c, k);
    }
    pthread_mutex_unlock(&c->mu);
    if (cc != NULL) {
        send_cancel_frame(c, cc, id);
    }
    if (won != NULL) {
        aimsi_client_deliver(won, AIMS_E_CANCELLED, NULL, CANCEL_TEXT);
        aimsi_client_pending_unref(won); /* the link's */
    } else if (queued) {
        aimsi_client_finish_call(c, k, AIMS_E_CANCELLED, NULL, CANCEL_TEXT);
    }
    /* Otherwise k is between attempts on the client thread (its next link is
     * refused) or its outcome is being delivered right now. */
}

/* ---- handles ------------------------------------------------------------------------- */

struct aims_call {
    uint32_t magic;
    aims_client *c;
    cl_call *k; /* c->mu: the call while it runs */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    aims_status st;
    aims_msg reply;
    char err[AIMSI_ERRMSG_CAP];
};

static int call_ok(const aims_call *h)
{
    return h != NULL && h->magic == CALL_MAGIC;
}

static void handle_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    aims_call *h = user;
    pthread_mutex_lock(&h->mu);
    aims_status rst = AIMS_OK;
    if (reply != NULL) {
        rst = aimsi_msg_copy(&h->reply, reply);
    }
    h->st = rst != AIMS_OK ? rst : st;
    snprintf(h->err, sizeof h->err, "%s",
             rst != AIMS_OK ? "out of memory copying the reply" : (error != NULL ? error : ""));
    h->done = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

AIMS_API aims_status aims_client_call_start(aims_client *c, const char *service,
                                            const char *method, const aims_msg *req,
                                            unsigned flags, int64_t timeout_ms,
                                            aims_call **out)
{
    if (out == NULL || c == NULL) {
        return AIMSI_MISUSE("aims_client_call_start: client and out are required");
    }
    aims_call *h = aimsi_calloc(1, sizeof(*h));
    if (h == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_client_call_start: out of memory");
    }
    h->magic = CALL_MAGIC;
    h->c = c;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    aimsi_msg_init(&h->reply);
    const cl_start opt = {0, 0, 0, &h->k};
    const aims_status rc =
        aimsi_client_async_start(c, service, method, req, flags, timeout_ms, handle_done, h, &opt);
    if (rc == AIMS_E_MISUSE) { /* not a client or bad arguments: nothing started */
        aims_call_destroy(h);
        return rc;
    }
    *out = h; /* any other failure is the call's outcome (done already ran) */
    return AIMS_OK;
}

AIMS_API aims_status aims_call_wait(aims_call *h, aims_msg *reply)
{
    if (!call_ok(h) || reply == NULL) {
        return AIMSI_MISUSE("aims_call_wait: call and reply are required");
    }
    pthread_mutex_lock(&h->mu);
    while (!h->done) {
        pthread_cond_wait(&h->cv, &h->mu); /* the call's deadline sweeper bounds this */
    }
    aimsi_msg_move(reply, &h->reply);
    if (h->err[0] != '\0') {
        (void)aims_msg_set_error(reply, h->err);
    }
    const aims_status st = h->st;
    pthread_mutex_unlock(&h->mu);
    return st;
}

AIMS_API int aims_call_is_done(const aims_call *h)
{
    if (!call_ok(h)) {
        return 0;
    }
    aims_call *m = (aims_call *)h; /* the lock only */
    pthread_mutex_lock(&m->mu);
    const int d = m->done;
    pthread_mutex_unlock(&m->mu);
    return d;
}

AIMS_API aims_status aims_call_cancel(aims_call *h)
{
    if (!call_ok(h)) {
        return AIMSI_MISUSE("aims_call_cancel: not a call handle");
    }
    if (!aims_call_is_done(h)) { /* once done, the client may be gone */
        aimsi_client_cancel(h->c, &h->k);
    }
    return AIMS_OK;
}

AIMS_API void aims_call_destroy(aims_call *h)
{
    if (!call_ok(h)) {
        return;
    }
    /* A finished call needs no client: the handle may outlive it. */
    if (!aims_call_is_done(h)) {
        aimsi_client_cancel(h->c, &h->k);
    }
    pthread_mutex_lock(&h->mu);
    while (!h->done) { /* done runs exactly once, also for a call that never started */
        pthread_cond_wait(&h->cv, &h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    h->magic = 0;
    aimsi_msg_fini(&h->reply);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    aimsi_free(h);
}

AIMS_API const char *aims_call_errmsg(const aims_call *h)
{
    if (!call_ok(h)) {
        return "";
    }
    aims_call *m = (aims_call *)h;
    pthread_mutex_lock(&m->mu);
    const char *e = m->done ? m->err : "";
    pthread_mutex_unlock(&m->mu);
    return e;
}
