/*
 * aimsi_local.h -- calls into a node of this process (node.c): how an
 * inproc:// client (client_send.c) or a front door finds a node by name and
 * runs a request on it without a frame, with a completion callback.
 *
 * Why its own header: the caller needs only the call record and the
 * completion contract, never the node's layout (aimsi_node.h).
 */
#ifndef AIMSI_LOCAL_H
#define AIMSI_LOCAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "aimsi_msg.h"

/* Completion of a local call: status, reply (valid during the call; NULL when the
 * call failed before a handler ran), error text. Runs exactly once, either on
 * the caller's thread before aimsi_node_call_local returns (inline run or early
 * rejection) or on a node worker thread. */
typedef void (*aimsi_local_done)(void *ctx, aims_status st, aims_msg *reply, const char *err);

typedef struct aimsi_local_call {
    const char *service;   /* "name" or "name@version" as registered */
    const char *method;
    const aims_msg *req;   /* borrowed until done runs; the node copies it when it queues */
    uint64_t deadline_ns;  /* CLOCK_MONOTONIC, 0 = none */
    aimsi_local_done done;
    void *ctx;
    /* 1: never run on the caller's thread (async calls: the caller expects to
     * get on with its work, and several calls in flight must run in parallel).
     * Or'd with AIMSI_REQ_KEPT: req (and every byte it borrows) stays valid
     * until done has returned -- the caller holds it for the node
     * (client_send.c: an async call's own request copy) --, so a queued call
     * borrows it instead of deep-copying it (a 64-row f32 request is 200 KB;
     * docs/P9.md). Without it the node copies, as before. */
    int no_inline;
    /* The caller's cancellation flag (svc_cancel.c), or NULL: set, the call is
     * dropped if still queued and aims_msg_is_cancelled answers 1 in the handler.
     * Must stay valid until done runs. */
    const _Atomic int *cancel;
} aimsi_local_call;

/* Find the node listening on inproc://name and take a reference
 * (AIMS_E_NOTFOUND if none). Release with aimsi_node_unref. */
aims_status aimsi_inproc_find(const char *name, aims_node **out);
void aimsi_node_unref(aims_node *n);
/* Run or queue a call on node n. Returns AIMS_OK when done has run or will run. */
aims_status aimsi_node_call_local(aims_node *n, const aimsi_local_call *call);

/* Identities for the request path (node.c): the verified peer of a node
 * connection ("" when unauthenticated), and the node's own identity (its TLS
 * certificate's; what in-process callers carry), "" without TLS. */
struct aimsi_conn;
const char *aimsi_node_conn_peer(const struct aimsi_conn *c);
const char *aimsi_node_identity(const aims_node *n);

/* Where a call may run: AIMSI_INLINE_NO, _YES (the caller accepts running the
 * handler on its own thread), or _IF_CHEAP (only while the service's run-time
 * EWMA is at most AIMSI_INLINE_CHEAP_NS: a transport I/O thread must not stall
 * every connection behind a slow handler). */
enum { AIMSI_INLINE_NO = 0, AIMSI_INLINE_YES = 1, AIMSI_INLINE_IF_CHEAP = 2 };
/* _IF_CHEAP judged by the run time per ROW (row_ewma_ns), not per run: a
 * batch of 9 rows takes 9x a single row, so under load the per-run EWMA of a
 * batched service stays above the line and every call keeps queueing (the
 * HTTP door's bistable rps, docs/DOOR_SPEED.md "Session 11"). For a caller
 * whose hand-off costs more than a cheap run (the HTTP door: suspend, two
 * thread hops, resume). */
#define AIMSI_INLINE_IF_CHEAP_ROW 3
#define AIMSI_INLINE_CHEAP_NS 50000u
/* Or'd into aimsi_local_call.no_inline by the caller, and by
 * aimsi_node_call_local into allow_inline: a queued request borrows the
 * caller's tensors (service.c, enqueue). */
#define AIMSI_REQ_KEPT 0x100

#endif /* AIMSI_LOCAL_H */
