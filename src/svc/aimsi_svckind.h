/*
 * aimsi_svckind.h -- the service-kind contract: what a kind of service
 * (the user handler in service.c; infer, preprocess and train in svc_infer.c,
 * svc_pre.c, svc_train.c; the registry service) implements so the node's core
 * (service.c, svc_worker.c) can queue, batch and run its requests.
 *
 * Why its own header: a kind sees one work item at a time and never the
 * node's queues or locks; the core sees the kind only through this table.
 */
#ifndef AIMSI_SVCKIND_H
#define AIMSI_SVCKIND_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

#include "aims/aims_svc.h"
#include "aimsi_msg.h"

/* One request on its way through a service. The core fills method/req/deadline,
 * the kind fills reply (already empty) and status (+ aims_msg_set_error). */
typedef struct aimsi_work {
    const char *method;
    const aims_msg *req;   /* borrowed (inline run) or the core's owned copy */
    aims_msg *reply;
    uint64_t deadline_ns;  /* CLOCK_MONOTONIC, 0 = none */
    aims_status status;
    const _Atomic int *cancel; /* the caller's cancellation flag, or NULL (svc_cancel.c) */
    const char *caller;        /* who asks (authz door), NULL = in-process "host" (svc_cancel.c) */
} aimsi_work;

/* Fail work item w: clear its reply, set the formatted error text on it,
 * return st (for `return aimsi_work_fail(w, AIMS_E_INVAL, "...", ...)`). */
aims_status aimsi_work_fail(aimsi_work *w, aims_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The same with a va_list (for callers that wrap it). */
aims_status aimsi_work_failv(aimsi_work *w, aims_status st, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 0)))
#endif
    ;

typedef struct aimsi_svc_kind {
    const char *name;       /* "handler", "infer", "preprocess", "train" */
    /* 1: the core hands run() queued items of up to AIMS_SERVICE_BATCH_MAX rows at once,
     * waiting up to AIMS_SERVICE_BATCH_DELAY_US for more when the queue runs dry
     * (and never past the earliest deadline); it never runs such items inline. */
    int batching;
    /* 1: never run inline (long or stateful work, e.g. train submissions). */
    int never_inline;
    /* Run n (>= 1) items; set every item's status and reply. Called from up to
     * AIMS_SERVICE_CONCURRENCY threads at once. */
    void (*run)(void *impl, aimsi_work *const *items, size_t n);
    /* Called by aims_service_stop after the queue drained (may be NULL). */
    void (*stop)(void *impl);
    /* Free impl when the node is destroyed (may be NULL). */
    void (*destroy)(void *impl);
    /* Batching kinds: the rows a queued request adds to a batch (>= 1; may be
     * NULL: 1). Called once per request at queueing time, on the request
     * alone (w->req, w->method); must not fail -- a malformed request counts
     * 1 and fails in run(). A batch holds at most AIMS_SERVICE_BATCH_MAX rows. */
    int64_t (*rows)(const aimsi_work *w);
} aimsi_svc_kind;

/* Add a service of `kind` (impl owned by the service from now on, also on failure:
 * kind->destroy(impl) is called then). */
aims_status aimsi_service_add(aims_node *n, const char *name, const aimsi_svc_kind *kind,
                              void *impl, aims_service **out);
/* The impl a service was added with, or NULL when s is not of `kind`. */
void *aimsi_service_impl(aims_service *s, const aimsi_svc_kind *kind);
/* The registry name the service was added with. */
const char *aimsi_service_name(const aims_service *s);

/* ---- built-in service kinds (svc_infer.c, svc_pre.c, svc_train.c) --------
 * Section owned by the built-in services engineer. The kinds are exported so
 * tests (and service.c, if it wants) can build an impl and drive run()
 * directly, without a node. An impl made here is handed to aimsi_service_add
 * by aims_service_add_infer/_preprocess/_train. */

extern const aimsi_svc_kind aimsi_kind_infer;
extern const aimsi_svc_kind aimsi_kind_preprocess;
extern const aimsi_svc_kind aimsi_kind_train;

/* Make the impl of each kind (free with kind.destroy). b / p are borrowed. */
aims_status aimsi_infer_create(const aims_bundle *b, void **out);
aims_status aimsi_preprocess_create(const aims_pipeline *p, void **out);
aims_status aimsi_train_create(const aims_pipeline *p, void **out);
/* Serve b from now on; returns once no run() uses the previous bundle. */
aims_status aimsi_infer_swap(void *impl, const aims_bundle *b);

#endif /* AIMSI_SVCKIND_H */
