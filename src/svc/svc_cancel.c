/*
 * svc_cancel.c -- the server side of cancellation (docs/CANCEL.md).
 *
 * Why. A caller that gave up on a call (it was hedged and the other copy won,
 * the user pressed stop, an upstream deadline passed) should not leave work
 * behind: a request still queued should never run, and a long handler should
 * be able to notice and stop early.
 *
 * How. Every request carries an optional pointer to a cancellation flag
 * (aimsi_work.cancel). For inproc:// calls the flag lives in the client's
 * pending (which the node references until done runs); for frames it lives in
 * the connection's request record, which this table indexes by (connection,
 * request id) so a CANCEL frame can find it. The workers (svc_worker.c) drop a
 * queued item whose flag is set with AIMS_E_CANCELLED; a handler polls
 * aims_msg_is_cancelled(req), which compares req with the request its thread
 * is running (a thread-local set around each handler call) and reads the flag.
 * aims_msg_caller(req) reads the caller's identity from the same thread-local.
 *
 * The table is one mutex over 64 buckets: each frame request adds and removes
 * one entry (a few tens of ns uncontended); CANCEL frames are rare.
 */
#include <stdatomic.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_cancel.h"
#include "aimsi_svckind.h"
#include "aims/aims_cancel.h"
#include "aims/aims_ident.h"

static size_t bucket_of(const void *conn, uint64_t id)
{
    const uint64_t h = (id ^ (uint64_t)(uintptr_t)conn) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 58) & (AIMSI_CANCEL_BUCKETS - 1u);
}

void aimsi_cancel_tab_init(aimsi_cancel_tab *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
}

void aimsi_cancel_tab_fini(aimsi_cancel_tab *t)
{
    pthread_mutex_destroy(&t->mu);
}

void aimsi_cancel_add(aimsi_cancel_tab *t, aimsi_cancel_ent *e, const void *conn, uint64_t id)
{
    e->conn = conn;
    e->id = id;
    atomic_init(&e->flag, 0);
    const size_t b = bucket_of(conn, id);
    pthread_mutex_lock(&t->mu);
    e->next = t->b[b];
    t->b[b] = e;
    e->linked = 1;
    pthread_mutex_unlock(&t->mu);
}

void aimsi_cancel_del(aimsi_cancel_tab *t, aimsi_cancel_ent *e)
{
    pthread_mutex_lock(&t->mu);
    if (e->linked) {
        aimsi_cancel_ent **pp = &t->b[bucket_of(e->conn, e->id)];
        while (*pp != NULL && *pp != e) {
            pp = &(*pp)->next;
        }
        if (*pp == e) {
            *pp = e->next;
        }
        e->linked = 0;
    }
    pthread_mutex_unlock(&t->mu);
}

int aimsi_cancel_fire(aimsi_cancel_tab *t, const void *conn, uint64_t id)
{
    int found = 0;
    pthread_mutex_lock(&t->mu);
    for (aimsi_cancel_ent *e = t->b[bucket_of(conn, id)]; e != NULL; e = e->next) {
        if (e->conn == conn && e->id == id) {
            atomic_store(&e->flag, 1);
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

/* ---- handlers ---------------------------------------------------------------------- */

static _Thread_local aimsi_cancel_cur t_cur;

aimsi_cancel_cur aimsi_cancel_enter(const void *req, const _Atomic int *flag, const char *caller)
{
    const aimsi_cancel_cur prev = t_cur;
    t_cur.req = req;
    t_cur.flag = flag;
    t_cur.caller = caller;
    return prev;
}

void aimsi_cancel_leave(aimsi_cancel_cur prev)
{
    t_cur = prev;
}

AIMS_API int aims_msg_is_cancelled(const aims_msg *req)
{
    if (req == NULL || req != t_cur.req || t_cur.flag == NULL) {
        return 0;
    }
    return atomic_load_explicit(t_cur.flag, memory_order_relaxed) != 0;
}

/* The same thread-local answers "who asks" (docs/SECURITY.md, identities):
 * the node's door resolved the caller before dispatch (certificate name,
 * "uid:N", "jwt:<sub>", "anonymous") and the string lives in the
 * connection's request record until the request is done. */
AIMS_API const char *aims_msg_caller(const aims_msg *req)
{
    if (req == NULL || req != t_cur.req) {
        return "";
    }
    return t_cur.caller != NULL ? t_cur.caller : "host";
}
