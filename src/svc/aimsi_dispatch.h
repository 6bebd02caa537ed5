/*
 * aimsi_dispatch.h -- the seam between the node and front doors that do not
 * speak frames (the HTTP front door in src/svc/http/, later gRPC or others).
 *
 * Why a seam. A request that arrives over HTTP must get exactly what a native
 * frame gets: the service's bounded queue and concurrency limit, dynamic
 * batching, deadline checks, name@version resolution, overload rejection and
 * draining. So a front door never runs a model itself: it turns its request
 * into an aims_msg and calls aimsi_node_dispatch, which is the same entry the
 * tcp/ipc frame server and inproc:// clients use (aimsi_node_call_local is a
 * thin wrapper around it). The front door owns only its protocol: parsing,
 * encoding, and its connection handling.
 *
 * It also needs to *look at* the node (which services exist, whether they are
 * running and registered, whether the node drains) for health, metadata,
 * metrics and status pages: aimsi_node_view and aimsi_node_ready read the
 * node's service table without touching the queues (node_view.c).
 */
#ifndef AIMSI_DISPATCH_H
#define AIMSI_DISPATCH_H

#include "../codec/aimsi_frame.h"
#include "aimsi_local.h"

/* One request handed to the node by a front door.
 *
 * Contract:
 *  - `service` is "name" or "name@version" as registered (a bare name picks a
 *    service whose name is exactly that, else the first "name@..." one);
 *    `method` is the service method ("predict" for infer services).
 *  - `req` is borrowed until `done` runs; when the node queues the request it
 *    deep-copies it first, so the front door may free `req` as soon as
 *    aimsi_node_dispatch returns *or* done ran, whichever comes LAST.
 *  - `deadline_ns` is CLOCK_MONOTONIC (aimsi_now_ns-based), 0 = none. Queued
 *    work that misses it completes with AIMS_E_TIMEOUT without running.
 *  - `allow_inline` is AIMSI_INLINE_NO / _YES / _IF_CHEAP (aimsi_local.h): an
 *    event-loop thread (the HTTP server's) passes _IF_CHEAP so a slow model
 *    never stalls its other connections, but a microsecond one saves a
 *    thread hand-off.
 *  - `done(ctx, status, reply, err)` runs EXACTLY ONCE: on the caller's thread
 *    before aimsi_node_dispatch returns (inline run, unknown service
 *    -> AIMS_E_NOTFOUND, node closing -> AIMS_E_CLOSED, queue full ->
 *    AIMS_E_OVERLOADED, service draining -> AIMS_E_CLOSED) or later on a node
 *    worker thread. `reply` (NULL when no handler ran) and `err` are valid
 *    during the call only; done must not block for long (it runs on a worker).
 *  - The front door must stop issuing calls and wait for every outstanding
 *    done before the node is destroyed (aims_node_destroy drains queued work,
 *    so outstanding calls do complete).
 * Returns AIMS_OK when done has run or will run, AIMS_E_MISUSE (done never runs)
 * for NULL arguments. */
typedef struct aimsi_dispatch {
    const char *service;
    const char *method;
    const aims_msg *req;
    uint64_t deadline_ns;
    int allow_inline;
    aimsi_local_done done;
    void *ctx;
    const _Atomic int *cancel; /* cancellation flag (svc_cancel.c), or NULL */
} aimsi_dispatch;

aims_status aimsi_node_dispatch(aims_node *n, const aimsi_dispatch *d);

/* ---- looking at a node (node_view.c) --------------------------------------- */

/* One service as a front door sees it (a snapshot). */
typedef struct aimsi_svc_view {
    aims_service *svc;                     /* for aims_service_get_stat(); lives with the node */
    char name[AIMSI_FRAME_MAX_SERVICE + 1]; /* "name" or "name@version" */
    char model[AIMSI_FRAME_MAX_SERVICE + 1];   /* part before '@' */
    char version[AIMSI_FRAME_MAX_SERVICE + 1]; /* part after '@', or "" */
    const char *kind;                      /* "infer", "handler", ... */
    int running;                           /* started, not stopping */
    int draining;                          /* a stop is in progress */
    int registered;                        /* holds a registry lease (or none needed) */
} aimsi_svc_view;

/* Snapshot up to `cap` services of n in the order they were added; returns
 * how many the node has (may exceed cap). Never blocks on registry I/O. */
size_t aimsi_node_view(aims_node *n, aimsi_svc_view *out, size_t cap);

/* 1 when the node is ready for traffic: it has at least one service, every
 * service is started, not draining, and registered when the node has a
 * registry; 0 otherwise with the reason in why (may be NULL). */
int aimsi_node_ready(aims_node *n, char *why, size_t why_cap);

/* The node's name and metrics object (borrowed; live with the node). */
const char *aimsi_node_name(const aims_node *n);

/* What an infer service serves (a snapshot taken under the service's swap
 * lock, so it is consistent with one bundle). Text models take one BYTES
 * input "text"; dense ones one FP32 input "x" [-1, in_cols]. The output "y"
 * is [-1] class ids for classifiers (default) or [-1, out_dim] scores. */
typedef struct aimsi_infer_desc {
    int text;           /* 1: documents in, 0: float rows in */
    size_t in_cols;     /* dense input width (0 for text) */
    size_t out_dim;     /* model output width */
    int classifier;     /* class ids available */
    char name[65];      /* bundle meta "name" ("" if unset) */
    char version[65];   /* bundle meta "version" ("" if unset) */
} aimsi_infer_desc;

/* AIMS_E_INVAL when s is not an infer service (svc_infer.c). */
aims_status aimsi_infer_describe(aims_service *s, aimsi_infer_desc *out);

#endif /* AIMSI_DISPATCH_H */
