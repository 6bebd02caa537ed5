/*
 * aimsi_cancel.h -- server-side cancellation (svc_cancel.c): the table that
 * lets a CANCEL frame find the request it names, and the thread-local "which
 * request is this handler running" that aims_msg_is_cancelled and
 * aims_msg_caller read.
 *
 * A request's cancellation flag is an _Atomic int owned by whoever started the
 * request: the client's pending for inproc:// calls (the node holds a
 * reference to it until done runs), the connection's request record for
 * frames. The service core only reads it (aimsi_work.cancel): a queued item
 * whose flag is set is dropped with AIMS_E_CANCELLED instead of running.
 */
#ifndef AIMSI_CANCEL_H
#define AIMSI_CANCEL_H

#include <pthread.h>
#include <stdint.h>

#define AIMSI_CANCEL_BUCKETS 64u

typedef struct aimsi_cancel_ent {
    struct aimsi_cancel_ent *next;
    const void *conn; /* the connection the request came on */
    uint64_t id;      /* its request id on that connection */
    _Atomic int flag;
    int linked;
} aimsi_cancel_ent;

typedef struct aimsi_cancel_tab {
    pthread_mutex_t mu;
    aimsi_cancel_ent *b[AIMSI_CANCEL_BUCKETS];
} aimsi_cancel_tab;

void aimsi_cancel_tab_init(aimsi_cancel_tab *t);
void aimsi_cancel_tab_fini(aimsi_cancel_tab *t);
/* Make e findable by (conn, id); clears its flag. */
void aimsi_cancel_add(aimsi_cancel_tab *t, aimsi_cancel_ent *e, const void *conn, uint64_t id);
/* Remove e (no-op when not added). */
void aimsi_cancel_del(aimsi_cancel_tab *t, aimsi_cancel_ent *e);
/* Set the flag of the request (conn, id); 1 when it was found. */
int aimsi_cancel_fire(aimsi_cancel_tab *t, const void *conn, uint64_t id);

/* The request a handler runs on this thread (saved and restored around each
 * run, so an inline call made from a handler nests). */
typedef struct aimsi_cancel_cur {
    const void *req;
    const _Atomic int *flag;
    const char *caller; /* aims_msg_caller: the door's identity, NULL = "host" */
} aimsi_cancel_cur;
aimsi_cancel_cur aimsi_cancel_enter(const void *req, const _Atomic int *flag, const char *caller);
void aimsi_cancel_leave(aimsi_cancel_cur prev);

#endif
