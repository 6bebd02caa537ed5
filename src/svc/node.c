/*
 * node.c -- nodes: the process-wide inproc:// name table, listening
 * transports and the server side of frames, registry leases (heartbeat
 * thread), metrics, and the node lifecycle. Services and workers are in
 * service.c; the two files share the layout in aimsi_node.h.
 *
 * Inproc names. A mutex-protected list maps inproc names to nodes. Nodes are
 * reference counted: the owner holds one reference, every aimsi_inproc_find
 * another, so a client that found a node can keep the pointer after the node
 * was destroyed -- it then only reads `closing` and gets AIMS_E_CLOSED. Destroy
 * removes the names first (no new finds), raises `closing`, then waits for the
 * `active` count of aimsi_node_call_local calls in progress to reach zero
 * before it tears the services down (closing/active are a Dekker pair of
 * sequentially consistent atomics, so no lock is taken per call).
 *
 * Frames. tcp:// and ipc:// listeners belong to the node's aimsi_ttable; the
 * transport runs on_accept/on_frame/on_close on its I/O thread. A connection
 * record (refcounted: one reference while open, one per request in flight)
 * lets a worker finish a request after the peer went away: the reply is simply
 * dropped. A REQUEST frame is decoded (tensors borrow the frame bytes), turned
 * into a borrowed aims_msg and dispatched exactly like a local call -- so it may
 * run inline on the I/O thread (saving a hand-off; only while the service's
 * recent run time is tiny, since a slow handler there would stall every
 * connection of the transport) or be copied into the service queue. The reply is encoded and handed to transport send from
 * whichever thread completes it. Hostile input (a frame that does not decode,
 * an unexpected frame type) closes that connection only.
 *
 * conn->lock guards the open flag and every send, so a worker never sends on a
 * connection another thread just closed; close itself runs after the flag is
 * set and outside the lock (a transport may wait for its own hooks there).
 *
 * Registry. The heartbeat thread starts with the first service that registers
 * and renews every registered service's lease each AIMS_NODE_HEARTBEAT_MS
 * (lease = 3 periods), re-registering a service whose lease was lost. A remote
 * registry (aims_node_join in svc_registry.c) plugs in through aimsi_reg_ops.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../codec/aimsi_frame.h"
#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_wire.h"
#include "aimsi_local.h"
#include "aimsi_regsync.h"
#include "aimsi_node.h"
#include "transport/aimsi_transport.h"
#include "../orch/aimsi_orch.h"
#include "authz/aimsi_authz.h"
#include "aimsi_dispatch.h"
#include "aimsi_life.h"


/* ---- the process-wide inproc table ---------------------------------------------- */

typedef struct inproc_ent {
    struct inproc_ent *next;
    aims_node *node;
    char name[AIMS_MSG_MAX_NAME + 1];
} inproc_ent;

static pthread_mutex_t g_inproc_lock = PTHREAD_MUTEX_INITIALIZER;
static inproc_ent *g_inproc;

static int node_name_ok(const char *name)
{
    const size_t len = strnlen(name, AIMS_MSG_MAX_NAME + 1);
    if (len == 0 || len > AIMS_MSG_MAX_NAME) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        const char c = name[i];
        const int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

aims_status aimsi_inproc_find(const char *name, aims_node **out)
{
    if (name == NULL || out == NULL) {
        return AIMSI_MISUSE("name and out are required");
    }
    aims_node *found = NULL;
    pthread_mutex_lock(&g_inproc_lock);
    for (inproc_ent *e = g_inproc; e != NULL; e = e->next) {
        if (strcmp(e->name, name) == 0 && !atomic_load(&e->node->closing)) {
            found = e->node;
            atomic_fetch_add(&found->refs, 1);
            break;
        }
    }
    pthread_mutex_unlock(&g_inproc_lock);
    if (found == NULL) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "no node listens on inproc://%.80s", name);
    }
    *out = found;
    return AIMS_OK;
}

static void node_free(aims_node *n)
{
    aimsi_obj_kill(&n->obj);
    aimsi_free(n);
}

void aimsi_node_unref(aims_node *n)
{
    if (n != NULL && atomic_fetch_sub(&n->refs, 1) == 1) {
        node_free(n);
    }
}

static aims_status inproc_add(aims_node *n, const char *name)
{
    inproc_ent *e = aimsi_calloc(1, sizeof(*e));
    if (e == NULL) {
        return aimsi_err(&n->obj, AIMS_E_NOMEM, "node %s: out of memory", n->name);
    }
    strcpy(e->name, name);
    e->node = n;
    aims_status st = AIMS_OK;
    pthread_mutex_lock(&g_inproc_lock);
    for (const inproc_ent *it = g_inproc; it != NULL; it = it->next) {
        if (strcmp(it->name, name) == 0) {
            st = AIMS_E_EXISTS;
            break;
        }
    }
    if (st == AIMS_OK) {
        e->next = g_inproc;
        g_inproc = e;
    }
    pthread_mutex_unlock(&g_inproc_lock);
    if (st != AIMS_OK) {
        aimsi_free(e);
        return aimsi_err(&n->obj, st, "inproc://%s is already in use", name);
    }
    return AIMS_OK;
}

static void inproc_remove_node(aims_node *n)
{
    pthread_mutex_lock(&g_inproc_lock);
    inproc_ent **pp = &g_inproc;
    while (*pp != NULL) {
        inproc_ent *e = *pp;
        if (e->node == n) {
            *pp = e->next;
            aimsi_free(e);
        } else {
            pp = &e->next;
        }
    }
    pthread_mutex_unlock(&g_inproc_lock);
}

/* ---- local calls ------------------------------------------------------------------- */

aims_status aimsi_node_dispatch(aims_node *n, const aimsi_dispatch *d)
{
    if (n == NULL || d == NULL || d->service == NULL || d->method == NULL || d->done == NULL) {
        return AIMSI_MISUSE("node and call (service, method, done) are required");
    }
    atomic_fetch_add(&n->active, 1);
    if (atomic_load(&n->closing)) {
        atomic_fetch_sub(&n->active, 1);
        char text[160];
        snprintf(text, sizeof(text), "node %s is closed", n->name);
        d->done(d->ctx, AIMS_E_CLOSED, NULL, text);
        return AIMS_OK;
    }
    aims_service *s = aimsi_svc_lookup(n, d->service);
    if (s == NULL) {
        char text[256];
        snprintf(text, sizeof(text), "no service %.128s on node %s", d->service, n->name);
        d->done(d->ctx, AIMS_E_NOTFOUND, NULL, text);
    } else {
        aimsi_svc_dispatch(s, d->method, d->req, d->deadline_ns, d->allow_inline, d->done,
                           d->ctx, d->cancel, NULL);
    }
    atomic_fetch_sub(&n->active, 1);
    return AIMS_OK;
}

aims_status aimsi_node_call_local(aims_node *n, const aimsi_local_call *call)
{
    if (call == NULL) {
        return AIMSI_MISUSE("call is required");
    }
    const aimsi_dispatch d = {call->service, call->method, call->req, call->deadline_ns,
                              ((call->no_inline & ~AIMSI_REQ_KEPT) != 0 ? AIMSI_INLINE_NO
                                                                        : AIMSI_INLINE_YES) |
                                  (call->no_inline & AIMSI_REQ_KEPT),
                              call->done, call->ctx, call->cancel};
    return aimsi_node_dispatch(n, &d);
}

/* ---- connections (server side of tcp:// / ipc://) --------------------------------- */

typedef struct aimsi_conn {
    struct aimsi_conn *next, *prev; /* node->conns (node->lock) */
    int in_list;
    aims_node *node;
    aimsi_tslot *slot;
    void *tconn;
    pthread_mutex_t lock;
    int closed;                     /* lock */
    _Atomic int refs;
    _Atomic int64_t inflight;
    atomic_int peer_compresses; /* a request came compressed: compress big replies */
    char peer[256]; /* the peer's verified identity (tls://), "" when unauthenticated */
    char peer_id[AIMSI_ID_MAX];     /* who the transport says it is (set at accept) */
    char peer_addr[96];
} aimsi_conn;

typedef struct conn_req {
    aimsi_conn *c;
    uint64_t id;
    aimsi_door *door; /* an outcome to audit (authz), or NULL */
    aimsi_cancel_ent ce; /* what a CANCEL frame for this id sets (svc_cancel.c) */
    char caller[AIMSI_CALLER_MAX]; /* who asks, as the door decided (aims_msg_caller) */
} conn_req;

static void conn_unref(aimsi_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        pthread_mutex_destroy(&c->lock);
        aimsi_free(c);
    }
}

static void conn_unlink(aimsi_conn *c)
{
    aims_node *n = c->node;
    pthread_mutex_lock(&n->lock);
    if (c->in_list) {
        if (c->prev != NULL) {
            c->prev->next = c->next;
        } else {
            n->conns = c->next;
        }
        if (c->next != NULL) {
            c->next->prev = c->prev;
        }
        c->in_list = 0;
    }
    pthread_mutex_unlock(&n->lock);
}

/* Close once (any thread, also from the connection's own hooks). */
static void conn_close(aimsi_conn *c)
{
    pthread_mutex_lock(&c->lock);
    const int was = c->closed;
    c->closed = 1;
    pthread_mutex_unlock(&c->lock);
    if (!was) {
        c->slot->vt.close(c->slot->inst, c->tconn);
        conn_unlink(c);
        conn_unref(c); /* the "open" reference */
    }
}

/* Send an encoded frame (ownership passes); dropped when the connection closed. */
static void conn_send(aimsi_conn *c, void *frame, size_t len)
{
    aims_status st = AIMS_E_CLOSED;
    pthread_mutex_lock(&c->lock);
    if (!c->closed) {
        st = c->slot->vt.send(c->slot->inst, c->tconn, frame, len);
        frame = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    aimsi_free(frame);
    if (st == AIMS_E_OVERLOADED) {
        /* A peer that does not read its replies is cut off rather than
         * silently losing some of them. */
        conn_close(c);
    }
}

static void send_control(aimsi_conn *c, uint8_t type, uint64_t id, aims_status status,
                         const char *message)
{
    aimsi_frame_hdr hdr;
    memset(&hdr, 0, sizeof(hdr));
    hdr.type = type;
    hdr.request_id = id;
    hdr.status = (int32_t)status;
    aimsi_buf b;
    aimsi_buf_init(&b);
    if (aimsi_frame_encode(&hdr, NULL, 0, message, 0, &b) != AIMS_OK) {
        aimsi_buf_free(&b);
        return; /* out of memory: the caller times out */
    }
    size_t len = 0;
    void *bytes = aimsi_buf_take(&b, &len);
    conn_send(c, bytes, len);
}

/* Error text fit for an ERROR frame: <= 1024 bytes cut at a UTF-8 boundary. */
static void clip_text(const char *in, char *out, size_t cap)
{
    size_t len = strnlen(in, cap - 1);
    if (in[len] != '\0') {
        while (len > 0 && ((unsigned char)in[len] & 0xC0u) == 0x80u) {
            len--;
        }
    }
    memcpy(out, in, len);
    out[len] = '\0';
}

static void send_error(aimsi_conn *c, uint64_t id, aims_status st, const char *text)
{
    char msg[AIMSI_MSG_MAX_ERROR + 1];
    clip_text(text != NULL ? text : "", msg, sizeof(msg));
    send_control(c, AIMSI_FRAME_ERROR, id, st, msg);
}

static void send_reply(aimsi_conn *c, uint64_t id, const aims_msg *reply)
{
    aimsi_frame_hdr hdr;
    memset(&hdr, 0, sizeof(hdr));
    hdr.type = AIMSI_FRAME_REPLY;
    hdr.request_id = id;
    aimsi_tensor views[AIMS_MSG_MAX_TENSORS];
    const size_t cnt = aimsi_msg_views(reply, views);
    aimsi_buf b;
    aimsi_buf_init(&b);
    const size_t above = atomic_load(&c->peer_compresses) ? AIMSI_COMPRESS_ABOVE : 0;
    const aims_status st = aimsi_frame_encode(&hdr, views, cnt, NULL, above, &b);
    if (st != AIMS_OK) {
        aimsi_buf_free(&b);
        send_error(c, id, st, "the reply could not be encoded");
        return;
    }
    if ((uint64_t)b.len > (uint64_t)c->node->p_max_frame) {
        aimsi_buf_free(&b);
        send_error(c, id, AIMS_E_RANGE, "the reply is larger than the node's max frame");
        return;
    }
    size_t len = 0;
    void *bytes = aimsi_buf_take(&b, &len);
    conn_send(c, bytes, len);
}

/* Completion of a request that came in a frame (any thread). */
static void conn_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    conn_req *r = ctx;
    aimsi_cancel_del(&r->c->node->cancels, &r->ce);
    /* Free the in-flight slot first: the peer may send its next request as
     * soon as it reads this reply. */
    atomic_fetch_sub(&r->c->inflight, 1);
    if (r->door != NULL || st == AIMS_E_DENIED) { /* audited before the caller hears */
        aimsi_authz_done(r->c->node, r->door, r->c->peer_id, r->c->peer_addr, st,
                         st == AIMS_OK ? "" : err);
    }
    if (st == AIMS_OK && reply != NULL) {
        send_reply(r->c, r->id, reply);
    } else {
        send_error(r->c, r->id, st == AIMS_OK ? AIMS_E_INTERNAL : st, err);
    }
    conn_unref(r->c);
    aimsi_free(r);
}

static void handle_request(aimsi_conn *c, const aimsi_frame *f)
{
    aims_node *n = c->node;
    const uint64_t id = f->hdr.request_id;
    char text[320];
    if ((f->hdr.flags & AIMSI_FRAME_FLAG_ZSTD) != 0 && !atomic_load(&c->peer_compresses)) {
        atomic_store(&c->peer_compresses, 1);
    }
    if (atomic_load(&c->inflight) >= n->p_conn_inflight) {
        snprintf(text, sizeof(text),
                 "node %s overloaded: %lld requests in flight on this connection; retry after 1 ms",
                 n->name, (long long)n->p_conn_inflight);
        send_error(c, id, AIMS_E_OVERLOADED, text);
        return;
    }
    aims_service *s = aimsi_svc_lookup(n, f->hdr.service);
    if (s == NULL) {
        snprintf(text, sizeof(text), "no service %.128s on node %s", f->hdr.service, n->name);
        send_error(c, id, AIMS_E_NOTFOUND, text);
        return;
    }
    /* A message borrowing the decoded tensors: copied only if the call queues. */
    aims_msg m;
    aimsi_msg_init(&m);
    const aimsi_tensor *auth = NULL; /* "$auth": a bearer token, for the door only */
    for (size_t i = 0; i < f->n_tensors; i++) {
        const aimsi_tensor *t = &f->tensors[i];
        if (t->name[0] == '$') { /* '$' names are the door's: never from the network */
            if (strcmp(t->name, AIMSI_AUTH_TENSOR) == 0 && t->dtype == AIMS_DT_BYTES) {
                auth = t;
            }
            continue;
        }
        const aims_status st = aims_msg_add(&m, t->name, (aims_dtype)t->dtype, t->dims, t->ndim,
                                            t->data, AIMS_MSG_BORROW);
        if (st != AIMS_OK) {
            aimsi_msg_fini(&m);
            snprintf(text, sizeof(text), "bad request tensor %zu: %s", i, aims_errmsg());
            send_error(c, id, st, text);
            return;
        }
    }
    aimsi_door *door = NULL;
    char who[AIMSI_CALLER_MAX];
    const aims_status az = aimsi_authz_check(n, c->peer_id, c->peer_addr, s->kind->name,
                                             f->hdr.service, f->hdr.method, &m,
                                             auth != NULL ? auth->data : NULL,
                                             auth != NULL ? auth->bytes : 0, &door, who, text,
                                             sizeof(text));
    if (az != AIMS_OK) {
        aimsi_msg_fini(&m);
        send_error(c, id, az, text);
        return;
    }
    conn_req *r = aimsi_malloc(sizeof(*r));
    if (r == NULL) {
        aimsi_msg_fini(&m);
        aimsi_authz_done(n, door, c->peer_id, c->peer_addr, AIMS_E_NOMEM, "out of memory");
        send_error(c, id, AIMS_E_NOMEM, "out of memory");
        return;
    }
    r->c = c;
    r->id = id;
    r->door = door;
    memcpy(r->caller, who, sizeof(who));
    atomic_fetch_add(&c->refs, 1);
    atomic_fetch_add(&c->inflight, 1);
    aimsi_cancel_add(&n->cancels, &r->ce, c, id);
    const uint64_t now = aimsi_frame_clock(); /* one clock read per burst (wire.c) */
    aimsi_svc_tl_clock.clock_in = now;
    aimsi_svc_tl_clock.clock_out = 0;
    aimsi_svc_dispatch(s, f->hdr.method, &m, aimsi_deadline_decode(f->hdr.deadline_ns, now),
                       AIMSI_INLINE_IF_CHEAP, conn_done, r, &r->ce.flag, r->caller);
    aimsi_svc_tl_clock.clock_in = 0;
    aimsi_frame_clock_after(aimsi_svc_tl_clock.clock_out);
    aimsi_svc_tl_clock.clock_out = 0;
    aimsi_msg_fini(&m);
}

static void *hook_accept(void *user, void *listener, void *tconn)
{
    aims_node *n = user;
    if (atomic_load(&n->closing)) {
        return NULL;
    }
    aimsi_conn *c = aimsi_calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->node = n;
    c->tconn = tconn;
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->refs, 1);
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->n_addr; i++) {
        if (n->listener[i] == listener && listener != NULL) {
            c->slot = n->lslot[i];
        }
    }
    if (c->slot == NULL) {
        /* Accepted before listen() returned its listener pointer. */
        c->slot = n->listen_pending;
    }
    if (c->slot != NULL) {
        c->next = n->conns;
        c->prev = NULL;
        if (n->conns != NULL) {
            n->conns->prev = c;
        }
        n->conns = c;
        c->in_list = 1;
    }
    pthread_mutex_unlock(&n->lock);
    if (c->slot == NULL) {
        pthread_mutex_destroy(&c->lock);
        aimsi_free(c);
        return NULL;
    }
    /* Copied: requests in flight may outlive the transport connection. */
    const char *peer = aimsi_ttable_peer(c->slot, tconn);
    snprintf(c->peer, sizeof c->peer, "%s", peer != NULL ? peer : "");
    /* before any frame of this connection can arrive (same I/O thread) */
    aimsi_authz_peer(c->slot->scheme, tconn, c->peer_id, sizeof(c->peer_id), c->peer_addr,
                     sizeof(c->peer_addr));
    if (c->peer[0] != '\0') { /* a verified certificate names the caller */
        const size_t l = strnlen(c->peer, sizeof(c->peer_id) - 1);
        memcpy(c->peer_id, c->peer, l);
        c->peer_id[l] = '\0';
    }
    return c;
}

/* A version-1 REQUEST: an ERROR the old peer can read (wire.c). */
static void refuse_old_version(aimsi_conn *c, const aimsi_frame_hdr *h)
{
    aimsi_buf b;
    aimsi_buf_init(&b);
    if (aimsi_wire_refuse_v1(h, c->node->name, &b) != AIMS_OK) {
        aimsi_buf_free(&b);
        return;
    }
    size_t len = 0;
    void *bytes = aimsi_buf_take(&b, &len);
    conn_send(c, bytes, len);
}

static void hook_frame(void *conn_user, const void *bytes, size_t len)
{
    aimsi_conn *c = conn_user;
    aims_node *n = c->node;
    aimsi_frame f;
    if (aimsi_frame_decode(bytes, len, (size_t)n->p_max_frame, &f) != AIMS_OK) {
        aimsi_log(AIMS_LOG_DEBUG, "node %s: closing a connection after a bad frame: %s",
                  n->name, aims_errmsg());
        conn_close(c);
        return;
    }
    switch (f.hdr.type) {
    case AIMSI_FRAME_PING:
        send_control(c, AIMSI_FRAME_PONG, f.hdr.request_id, AIMS_OK, NULL);
        break;
    case AIMSI_FRAME_REQUEST:
        if (f.hdr.version != AIMSI_FRAME_VERSION) { /* its deadline means another thing */
            refuse_old_version(c, &f.hdr);
            break;
        }
        handle_request(c, &f);
        break;
    case AIMSI_FRAME_CANCEL: /* queued: never runs; running: the handler may poll */
        (void)aimsi_cancel_fire(&n->cancels, c, f.hdr.request_id);
        break;
    default:
        /* Replies or errors are not for a server: a confused or hostile peer. */
        conn_close(c);
        break;
    }
    aimsi_frame_release(&f);
}

static void hook_close(void *conn_user, aims_status why)
{
    (void)why;
    conn_close(conn_user);
}

/* ---- node lifecycle ----------------------------------------------------------------- */

/* Where each AIMS_NODE_* parameter lives (core/params.c does the typed access). */
static const aimsi_param_field k_node_fields[] = {
    {AIMS_NODE_WORKERS, AIMSI_FIELD_I64, offsetof(struct aims_node, p_workers)},
    {AIMS_NODE_MAX_FRAME, AIMSI_FIELD_I64, offsetof(struct aims_node, p_max_frame)},
    {AIMS_NODE_CONN_INFLIGHT, AIMSI_FIELD_I64, offsetof(struct aims_node, p_conn_inflight)},
    {AIMS_NODE_HEARTBEAT_MS, AIMSI_FIELD_I64, offsetof(struct aims_node, p_heartbeat_ms)},
    {AIMS_NODE_INSECURE, AIMSI_FIELD_I64, offsetof(struct aims_node, p_insecure)},
    {AIMS_NODE_DRAIN_MS, AIMSI_FIELD_I64, offsetof(struct aims_node, p_drain_ms)},
    {AIMS_NODE_DRAIN_GRACE_MS, AIMSI_FIELD_I64, offsetof(struct aims_node, p_drain_grace_ms)},
    {AIMS_NODE_RX_MIN_RATE, AIMSI_FIELD_I64, offsetof(struct aims_node, tt.rx.min_rate)},
    {AIMS_NODE_RX_HEADER_MS, AIMSI_FIELD_I64, offsetof(struct aims_node, tt.rx.header_ms)},
    {AIMS_NODE_RX_BUDGET, AIMSI_FIELD_I64, offsetof(struct aims_node, tt.rx.budget)},
    {AIMS_NODE_RX_PAUSE_MS, AIMSI_FIELD_I64, offsetof(struct aims_node, tt.rx.pause_ms)},
};
static const aimsi_param_map k_node_map = {700, 719, k_node_fields,
                                           sizeof k_node_fields / sizeof k_node_fields[0]};

aims_status aims_node_create(const char *name, aims_node **out)
{
    if (name == NULL || out == NULL) {
        return AIMSI_MISUSE("name and out are required");
    }
    if (!node_name_ok(name)) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "node name '%.80s': want 1..64 bytes of [A-Za-z0-9_.-]", name);
    }
    aims_node *n = aimsi_calloc(1, sizeof(*n));
    if (n == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "node %s: out of memory", name);
    }
    aimsi_obj_init(&n->obj, AIMSI_MAGIC_NODE);
    strcpy(n->name, name);
    atomic_init(&n->refs, 1);
    const aims_status st = aimsi_metrics_create_owned(&n->mx);
    if (st != AIMS_OK) {
        aimsi_free(n);
        return st;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&n->lock, NULL);
    pthread_mutex_init(&n->cfg_lock, NULL);
    aimsi_cancel_tab_init(&n->cancels);
    pthread_cond_init(&n->work_cond, &ca);
    pthread_cond_init(&n->idle_cond, &ca);
    pthread_cond_init(&n->hb_cond, &ca);
    pthread_condattr_destroy(&ca);
    const aims_transport_hooks hooks = {n, hook_accept, hook_frame, hook_close};
    aimsi_ttable_init(&n->tt, &hooks, (uint64_t)aimsi_param_default(AIMS_NODE_MAX_FRAME));
    aimsi_param_set_defaults(&k_node_map, n); /* after ttable_init: some live in tt */
    n->tt_ready = 1;
    *out = n;
    return AIMS_OK;
}

static void hb_stop(aims_node *n)
{
    pthread_mutex_lock(&n->lock);
    const int started = n->hb_started;
    n->hb_stop = 1;
    pthread_cond_broadcast(&n->hb_cond);
    pthread_mutex_unlock(&n->lock);
    if (started) {
        pthread_join(n->hb_thread, NULL);
    }
    n->hb_started = 0;
}

static void close_transports(aims_node *n)
{
    pthread_mutex_lock(&n->cfg_lock);
    for (size_t i = 0; i < n->n_addr; i++) {
        if (n->listener[i] != NULL) {
            n->lslot[i]->vt.unlisten(n->lslot[i]->inst, n->listener[i]);
            n->listener[i] = NULL;
        }
    }
    /* Close every connection: take a reference on each under the lock, then
     * close outside it (close may wait for the connection's own hooks). */
    for (;;) {
        pthread_mutex_lock(&n->lock);
        aimsi_conn *c = n->conns;
        if (c != NULL) {
            atomic_fetch_add(&c->refs, 1);
        }
        pthread_mutex_unlock(&n->lock);
        if (c == NULL) {
            break;
        }
        conn_close(c);
        conn_unlink(c); /* in case it was already closed but still listed */
        conn_unref(c);
    }
    aimsi_ttable_fini(&n->tt);
    n->tt_ready = 0;
    pthread_mutex_unlock(&n->cfg_lock);
}

void aims_node_destroy(aims_node *n)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || atomic_load(&n->closing)) {
        return;
    }
    /* 1. no new finds or local calls; wait for calls in progress. */
    inproc_remove_node(n);
    atomic_store(&n->closing, 1);
    while (atomic_load(&n->active) > 0) {
        const struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    /* 2. drain every running service (frames may still arrive meanwhile):
     * all leave the registry, one grace period for balancers to notice, then
     * each finishes within what is left of AIMS_NODE_DRAIN_MS. */
    const size_t cnt = atomic_load(&n->n_svc);
    const uint64_t until = aimsi_now_ns() + (uint64_t)n->p_drain_ms * 1000000u;
    int any_registered = 0;
    int leaving[AIMSI_NODE_MAX_SERVICES];
    for (size_t i = 0; i < cnt; i++) {
        leaving[i] = aimsi_svc_leave(atomic_load(&n->svc[i]));
        any_registered |= leaving[i] > 0;
    }
    if (any_registered) {
        int64_t grace = aimsi_node_grace_ms(n);
        grace = grace < n->p_drain_ms ? grace : n->p_drain_ms;
        const struct timespec ts = {(time_t)(grace / 1000), (long)(grace % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < cnt; i++) {
        if (leaving[i] >= 0) {
            aimsi_svc_finish(atomic_load(&n->svc[i]), until, n->p_drain_ms);
        }
    }
    /* 3. threads and connections. */
    hb_stop(n);
    close_transports(n);
    aimsi_node_workers_stop(n);
    /* 4. free. */
    if (n->rops != NULL && n->rops->release != NULL) {
        n->rops->release(n->rctx);
    }
    n->rops = NULL;
    for (size_t i = 0; i < cnt; i++) {
        aimsi_svc_destroy(atomic_load(&n->svc[i]));
        atomic_store(&n->svc[i], NULL);
    }
    atomic_store(&n->n_svc, 0);
    aimsi_metrics_destroy_owned(n->mx);
    n->mx = NULL;
    aimsi_authz_free(n);
    pthread_cond_destroy(&n->work_cond);
    pthread_cond_destroy(&n->idle_cond);
    pthread_cond_destroy(&n->hb_cond);
    pthread_mutex_destroy(&n->lock);
    pthread_mutex_destroy(&n->cfg_lock);
    aimsi_cancel_tab_fini(&n->cancels);
    aimsi_node_unref(n);
}

aims_status aims_node_set_param_i64(aims_node *n, aims_param param, int64_t value)
{
    const aimsi_param_field *f = NULL;
    AIMSI_SET_I64_OPEN(n, AIMSI_MAGIC_NODE, "node", &k_node_map, param, value, &f);
    aims_status st = AIMS_OK;
    pthread_mutex_lock(&n->lock);
    const int listening = n->n_addr > 0;
    const int running = n->threads != NULL;
    if (param == AIMS_NODE_WORKERS && running) {
        st = AIMS_E_STATE;
    } else if ((param == AIMS_NODE_MAX_FRAME || param == AIMS_NODE_INSECURE ||
                param == AIMS_NODE_CONN_INFLIGHT || param == AIMS_NODE_RX_MIN_RATE ||
                param == AIMS_NODE_RX_HEADER_MS || param == AIMS_NODE_RX_BUDGET ||
                param == AIMS_NODE_RX_PAUSE_MS) &&
               listening) {
        /* read without a lock by the transport's I/O thread once listening */
        st = AIMS_E_STATE;
    } else {
        aimsi_param_store(n, f, value, 0.0);
        if (param == AIMS_NODE_MAX_FRAME) {
            n->tt.max_frame = (uint64_t)value;
        }
    }
    pthread_mutex_unlock(&n->lock);
    if (st == AIMS_E_STATE) {
        return aimsi_err(&n->obj, st,
                         "node %s: parameter %s must be set before the first listen / start",
                         n->name, aims_param_name(param));
    }
    return AIMS_OK;
}

aims_status aims_node_add_transport(aims_node *n, const aims_transport *t)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || t == NULL) {
        return AIMSI_MISUSE("node and transport are required");
    }
    pthread_mutex_lock(&n->cfg_lock);
    const aims_status st = n->tt_ready ? aimsi_ttable_add(&n->tt, t) : AIMS_E_STATE;
    pthread_mutex_unlock(&n->cfg_lock);
    if (st != AIMS_OK) {
        return aimsi_err_adopt(&n->obj, st);
    }
    return AIMS_OK;
}

static aims_status add_address(aims_node *n, const char *addr, void *listener,
                               aimsi_tslot *slot)
{
    pthread_mutex_lock(&n->lock);
    const size_t i = n->n_addr;
    strcpy(n->addr[i], addr);
    n->listener[i] = listener;
    n->lslot[i] = slot;
    n->n_addr = i + 1;
    n->listen_pending = NULL;
    pthread_mutex_unlock(&n->lock);
    return AIMS_OK;
}

aims_status aims_node_listen(aims_node *n, const char *url)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || url == NULL) {
        return AIMSI_MISUSE("node and url are required");
    }
    if (strnlen(url, AIMSI_URL_MAX) >= AIMSI_URL_MAX) {
        return aimsi_err(&n->obj, AIMS_E_INVAL, "url longer than %u bytes", AIMSI_URL_MAX - 1u);
    }
    char scheme[17];
    const char *rest = NULL;
    AIMSI_TRY(aimsi_url_split(url, scheme, sizeof(scheme), &rest));
    pthread_mutex_lock(&n->cfg_lock);
    aims_status st = AIMS_OK;
    if (n->n_addr >= AIMSI_NODE_MAX_ADDRS || !n->tt_ready) {
        st = aimsi_err(&n->obj, n->tt_ready ? AIMS_E_RANGE : AIMS_E_STATE,
                       "node %s: at most %d listen addresses", n->name, AIMSI_NODE_MAX_ADDRS);
    } else if (strcmp(scheme, "inproc") == 0) {
        if (!node_name_ok(rest)) {
            st = aimsi_err(&n->obj, AIMS_E_INVAL,
                           "inproc name '%.80s': want 1..64 bytes of [A-Za-z0-9_.-]", rest);
        } else {
            st = inproc_add(n, rest);
            if (st == AIMS_OK) {
                st = add_address(n, url, NULL, NULL);
            }
        }
    } else {
        aimsi_tslot *slot = NULL;
        st = aimsi_ttable_get(&n->tt, url, &slot);
        if (st == AIMS_OK) {
            char bound[AIMSI_URL_MAX];
            void *listener = NULL;
            pthread_mutex_lock(&n->lock);
            n->listen_pending = slot;
            pthread_mutex_unlock(&n->lock);
            st = slot->vt.listen(slot->inst, url, n->p_insecure ? AIMS_LISTEN_INSECURE : 0u,
                                 bound, sizeof(bound), &listener);
            if (st == AIMS_OK) {
                bound[sizeof(bound) - 1] = '\0';
                st = add_address(n, bound, listener, slot);
            } else {
                pthread_mutex_lock(&n->lock);
                n->listen_pending = NULL;
                pthread_mutex_unlock(&n->lock);
            }
        }
        if (st != AIMS_OK) {
            st = aimsi_err_adopt(&n->obj, st);
        }
    }
    pthread_mutex_unlock(&n->cfg_lock);
    if (st != AIMS_OK) {
        aimsi_log(AIMS_LOG_ERROR, "node %s: cannot listen on %s: %s", n->name, url,
                  aims_node_errmsg(n));
    }
    return st;
}

aims_status aims_node_get_address(aims_node *n, size_t index, char *buf, size_t cap,
                                  size_t *out_len)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || (buf == NULL && cap > 0)) {
        return AIMSI_MISUSE("node, and buf when cap > 0");
    }
    /* Both an index past the end and a short buffer are AIMS_E_RANGE (NAMING.md
     * rule 16); the message tells them apart, and only the second sets *out_len. */
    size_t n_addr = 0;
    size_t need = 0;
    pthread_mutex_lock(&n->lock);
    n_addr = n->n_addr;
    if (index < n_addr) {
        const size_t len = strlen(n->addr[index]);
        need = len + 1;
        if (out_len != NULL) {
            *out_len = len;
        }
        if (cap >= need) {
            memcpy(buf, n->addr[index], need);
        }
    }
    pthread_mutex_unlock(&n->lock);
    if (index >= n_addr) {
        return aimsi_err(&n->obj, AIMS_E_RANGE, "node %s has %zu address(es), no index %zu",
                         n->name, n_addr, index);
    }
    if (cap < need) {
        return aimsi_err(&n->obj, AIMS_E_RANGE, "node %s: address %zu needs %zu bytes",
                         n->name, index, need);
    }
    return AIMS_OK;
}

/* ---- registry ------------------------------------------------------------------- */

aims_status aims_node_set_registry(aims_node *n, aims_registry *r)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE)) {
        return AIMSI_MISUSE("node");
    }
    pthread_mutex_lock(&n->lock);
    n->reg = r;
    pthread_mutex_unlock(&n->lock);
    return AIMS_OK;
}

aims_status aimsi_node_set_remote_registry(aims_node *n, const aimsi_reg_ops *ops, void *ctx)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) ||
        (ops != NULL && (ops->reg == NULL || ops->heartbeat == NULL || ops->dereg == NULL))) {
        return AIMSI_MISUSE("node, and ops with reg/heartbeat/dereg");
    }
    pthread_mutex_lock(&n->lock);
    const aimsi_reg_ops *old = n->rops;
    void *old_ctx = n->rctx;
    n->rops = ops;
    n->rctx = ctx;
    pthread_mutex_unlock(&n->lock);
    if (old != NULL) {
        /* Every use of the old ops runs under some service's reg_lock, after
         * reading them under node->lock: passing each reg_lock once proves the
         * last use ended. Services it registered re-register on the next beat. */
        const size_t cnt = atomic_load_explicit(&n->n_svc, memory_order_acquire);
        for (size_t i = 0; i < cnt; i++) {
            aimsi_svc_forget_remote(atomic_load(&n->svc[i]));
        }
        if (old->release != NULL && (old != ops || old_ctx != ctx)) {
            old->release(old_ctx);
        }
    }
    return AIMS_OK;
}

static void *hb_main(void *arg)
{
    aims_node *n = arg;
    pthread_mutex_lock(&n->lock);
    while (!n->hb_stop) {
        const uint64_t at = aimsi_now_ns() + (uint64_t)n->p_heartbeat_ms * 1000000u;
        struct timespec ts;
        ts.tv_sec = (time_t)(at / 1000000000u);
        ts.tv_nsec = (long)(at % 1000000000u);
        while (!n->hb_stop && aimsi_now_ns() < at) {
            (void)pthread_cond_timedwait(&n->hb_cond, &n->lock, &ts);
        }
        if (n->hb_stop) {
            break;
        }
        pthread_mutex_unlock(&n->lock);
        const size_t cnt = atomic_load_explicit(&n->n_svc, memory_order_acquire);
        for (size_t i = 0; i < cnt; i++) {
            aimsi_svc_beat(atomic_load(&n->svc[i]));
            aimsi_life_tick(atomic_load(&n->svc[i])); /* canary verdicts (svc_verdict.c) */
        }
        pthread_mutex_lock(&n->lock);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

aims_status aimsi_node_hb_start(aims_node *n)
{
    aims_status st = AIMS_OK;
    pthread_mutex_lock(&n->lock);
    if (!n->hb_started) {
        n->hb_stop = 0;
        if (pthread_create(&n->hb_thread, NULL, hb_main, n) != 0) {
            st = aimsi_err(&n->obj, AIMS_E_BACKEND, "node %s: cannot start the heartbeat thread",
                           n->name);
        } else {
            n->hb_started = 1;
        }
    }
    pthread_mutex_unlock(&n->lock);
    return st;
}

aims_metrics *aims_node_metrics(aims_node *n)
{
    return aimsi_obj_ok(n, AIMSI_MAGIC_NODE) ? n->mx : NULL;
}

/* Next to the node: a service's detail text lives in the node-owned service object. */
const char *aims_service_errmsg(const aims_service *s)
{
    return aimsi_obj_errmsg(s, AIMSI_MAGIC_SERVICE);
}

const char *aims_node_errmsg(const aims_node *n)
{
    return aimsi_obj_ok(n, AIMSI_MAGIC_NODE) ? n->obj.errmsg : "";
}

aims_status aims_node_set_tls(aims_node *n, aims_tls_config *cfg)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || cfg == NULL) {
        return AIMSI_MISUSE("node and TLS config are required");
    }
    pthread_mutex_lock(&n->cfg_lock);
    const aims_status st = n->tt_ready ? aimsi_ttable_set_tls(&n->tt, cfg) : AIMS_E_STATE;
    pthread_mutex_unlock(&n->cfg_lock);
    return st != AIMS_OK ? aimsi_err_adopt(&n->obj, st) : AIMS_OK;
}

const char *aimsi_node_conn_peer(const struct aimsi_conn *c)
{
    return c != NULL ? c->peer : "";
}

const char *aimsi_node_identity(const aims_node *n)
{
    return n != NULL && n->tt.tls != NULL ? aims_tls_config_identity(n->tt.tls) : "";
}
