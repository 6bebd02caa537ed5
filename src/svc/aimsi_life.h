/*
 * aimsi_life.h -- the remote model lifecycle of an infer service (svc_life.c,
 * svc_canary.c; public side in aims_lifecycle.h, design in docs/LIFECYCLE.md).
 *
 * Why its own header: the infer kind (svc_infer.c) only needs two hooks -- hand
 * a batch to the lifecycle first, free it with the service -- and the node's
 * door (authz/authz.c) only needs to know which methods change models. The
 * version table itself stays private to svc_life.c.
 */
#ifndef AIMSI_LIFE_H
#define AIMSI_LIFE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "aims/aims_lifecycle.h"
#include "aims/aims_policy.h"
#include "aimsi_dispatch.h"
#include "aimsi_svckind.h"

typedef struct aimsi_life aimsi_life;

/* svc_infer.c: the batch entry without the lifecycle (one bundle, as before). */
void aimsi_infer_run_plain(void *impl, aimsi_work *const *items, size_t n);
/* svc_infer.c: aimsi_infer_describe of one infer impl (a version's). */
aims_status aimsi_infer_describe_impl(void *impl, aimsi_infer_desc *out);

/* ---- what the HTTP door describes (svc_life_desc.c) -------------------------------- */

/* Bytes of a version label with its NUL. */
#define AIMSI_LIFE_LABEL 33
/* The description of version `ver` of infer service s, or (ver NULL or "")
 * of the version a plain call is served by now: the stable one when s has a
 * version table, else its own bundle. AIMS_E_NOTFOUND: no such version;
 * AIMS_E_INVAL: not an infer service. */
aims_status aimsi_life_describe(aims_service *s, const char *ver, aimsi_infer_desc *out);
/* Append to vers[0..n) (capacity cap) the labels of the versions loaded in
 * s's version table that it does not hold yet, copied into buf[0..bcap);
 * returns the new count (n when s has no table). */
size_t aimsi_life_labels(aims_service *s, const char **vers, size_t n, size_t cap,
                         char (*buf)[AIMSI_LIFE_LABEL], size_t bcap);

/* svc_infer.c hook: run the batch through the version table of the service.
 * Returns 0 (nothing done: the caller runs it plain) while no lifecycle
 * method ever reached the service; else every item was answered. `base` is
 * the service's own infer impl (it serves the first version). */
int aimsi_life_run(_Atomic(aimsi_life *) *lp, aims_service *svc, void *base,
                   aimsi_work *const *items, size_t n);
/* Free the table (service destroy; no run is in progress any more). */
void aimsi_life_free(aimsi_life *lf);
/* The table of s, made on first use (NULL: not an infer service, or no memory). */
aimsi_life *aimsi_life_of(aims_service *s);
/* svc_infer.c: the slot of the table pointer and the base impl of s. */
_Atomic(aimsi_life *) *aimsi_infer_life_slot(aims_service *s, void **base);

/* authz.c: the policy action guarding `method` on an infer service and the
 * audit action of its door, or NULL when the method changes no model. */
const char *aimsi_life_action(const char *method, aims_audit_action *audit);

/* svc_train.c: a finished job asked to publish `publish` ("name@version"):
 * deploy the bundle bytes to the infer service "name" on node n (directly, or
 * as a canary at `canary_pct` percent when 1..99). Logs and returns the
 * outcome; the job's result stays downloadable whatever happens here. */
aims_status aimsi_life_publish(aims_node *n, const char *publish, const void *bytes,
                               size_t len, int64_t canary_pct, const char *who);
/* svc_train_pub.c: publish `publish` exactly once through the node's registry
 * (owner = the job id), and deploy with aimsi_life_publish only when this job
 * won (or the node has no registry). The outcome, for the job's status, in note. */
aims_status aimsi_train_publish(aims_node *n, const char *publish, const char *owner,
                                const void *bytes, size_t len, int64_t canary_pct, char *note,
                                size_t cap);
/* svc_train_pub.c: the bundle file of a finished job (the service's pipeline and
 * the model; meta "name"/"version" from `publish` "name@version" when not NULL). */
aims_status aimsi_train_bundle(const aims_pipeline *p, const aims_model *m, const char *publish,
                               void **out, size_t *out_len);
/* svc_train.c: the optional "publish_canary" percent of a submit (0 = none). */
aims_status aimsi_life_publish_canary(const aims_msg *req, int64_t *out_pct);

/* ---- the canary rule (svc_canary.c) ----------------------------------------------- */

/* Longest canary id: the "canary_id" of a deploy, [A-Za-z0-9], which
 * aims_client_canary_start sets alike on every instance (svc_verdict.c). */
#define AIMSI_CANARY_ID_MAX 24

typedef struct aimsi_canary_rule {
    int64_t window_ms;        /* judge after this long ... */
    int64_t min_calls;        /* ... and at least this many canary calls */
    double max_error_delta;   /* canary error rate may exceed stable's by this much */
    double max_latency_ratio; /* canary mean latency may be this many times stable's ... */
    int64_t latency_slack_us; /* ... or this much slower in absolute terms */
    char id[AIMSI_CANARY_ID_MAX + 1]; /* canary id ("" = none): names its verdict record */
} aimsi_canary_rule;

/* What one version did in the current window. */
typedef struct aimsi_canary_win {
    uint64_t calls;  /* predict items answered by this version (first try) */
    uint64_t errors; /* of those, failed (canary: failed where stable succeeded) */
    uint64_t lat_ns; /* sum over items of the run time of the batch they were in */
} aimsi_canary_win;

enum { AIMSI_CANARY_WAIT = 0, AIMSI_CANARY_PROMOTE = 1, AIMSI_CANARY_ROLLBACK = 2 };

void aimsi_canary_rule_default(aimsi_canary_rule *r);
/* Parse "key=value" tokens over the defaults; AIMS_E_INVAL names the bad token. */
aims_status aimsi_canary_rule_parse(const char *text, size_t len, aimsi_canary_rule *r);
/* Decide: AIMSI_CANARY_* with the reason in why (always filled). */
int aimsi_canary_judge(const aimsi_canary_rule *r, const aimsi_canary_win *stable,
                       const aimsi_canary_win *canary, uint64_t elapsed_ns, char *why,
                       size_t cap);

/* ---- verdicts (svc_verdict.c) ------------------------------------------------------- */

/* A verdict point: judge the running canary of lf now and, when the rule
 * decides, record the verdict cluster-wide and apply the recorded one.
 * Called after each batch slice, on a "versions" query and on the node's
 * tick (tick = 1); never under lf->mu (it takes it, and may block on the
 * registry). With a remote registry (a registry service or etcd) only the
 * tick records verdicts: a traffic or I/O thread never waits for a registry
 * round trip. */
void aimsi_life_judge(aimsi_life *lf, int tick);
/* The node's heartbeat thread, once per period for every service: a verdict
 * point for an infer service that has a version table (nothing else). */
void aimsi_life_tick(aims_service *s);
/* 1 when id is a valid canary id (1..AIMSI_CANARY_ID_MAX of [A-Za-z0-9]). */
int aimsi_canary_id_ok(const char *id);

#endif
