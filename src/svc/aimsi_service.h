/*
 * aimsi_service.h -- private to service.c, svc_dispatch.c, svc_drain.c,
 * svc_worker.c and svc_member.c: the helpers they share (slots, statistics, rejections, the registry
 * backend). service.c's top comment explains the design; other files use
 * the contract headers (aimsi_local.h, aimsi_svckind.h, ...).
 */
#ifndef AIMSI_SERVICE_H
#define AIMSI_SERVICE_H

#include <time.h>

#include "aimsi_local.h"
#include "aimsi_regsync.h"
#include "aimsi_node.h"

#define VEC_STACK 64u

/* The registry backend, read under node->lock (the setters write under it).
 * Callers hold s->reg_lock while they use it: aimsi_node_set_remote_registry
 * passes every service's reg_lock before it releases replaced ops. */
typedef struct reg_backend {
    aims_registry *reg;
    const aimsi_reg_ops *rops;
    void *rctx;
} reg_backend;

int aimsi_service_slot_try_acquire(aims_service *s);
void aimsi_service_note_done(aims_service *s, aims_status st, uint64_t latency_ns);
void aimsi_service_reject(aims_service *s, aims_status st, aimsi_local_done done, void *ctx,
                          const char *text);
void aimsi_service_free_item(aimsi_qitem *it);
/* A run() of `rows` rows took run_ns (an inline run counts as one row): the
 * per-run and per-row EWMAs, busy time, admission's deviation. */
void aimsi_service_note_run(aims_service *s, uint64_t run_ns, uint64_t rows);
int64_t aimsi_service_per_run(const aims_service *s);
struct timespec aimsi_service_mono_ts(uint64_t at);
void aimsi_service_note_depth(aims_service *s);
void aimsi_service_poke_idle(aims_service *s);
reg_backend aimsi_service_backend_of(aims_node *n);
int aimsi_service_first_address(aims_node *n, char *buf);
aims_status aimsi_service_reg_register(aims_service *s, const reg_backend *b, const char *addr);
void aimsi_service_reg_deregister(aims_service *s);

#endif
