/*
 * aimsi_regsync.h -- registry membership and sync across processes: the
 * hook through which a node's services register with a registry hosted
 * elsewhere (installed by the registry backends, registry/), the
 * "aims.registry" service kind, the client mirror kept in sync with a remote
 * registry, and the client internals that mirror needs (client.c).
 *
 * Why its own header: node.c, client.c and registry/ meet here and nowhere
 * else; none of them needs the others' layout.
 */
#ifndef AIMSI_REGSYNC_H
#define AIMSI_REGSYNC_H

#include <stdint.h>

#include "aims/aims_orch.h"
#include "aims/aims_svc.h"
#include "aims/aims_tls.h"
#include "aimsi_msg.h"
#include "aimsi_svckind.h"

/* ---- remote registry hook (node.c; installed by svc_registry.c) -----------
 *
 * When a node joins a registry hosted elsewhere (aims_node_join), its services
 * register through these calls instead of a local aims_registry. Every call
 * runs on a node thread (aims_service_start/stop's caller or the node's
 * heartbeat thread), never under a node lock, and may block (network). */
typedef struct aimsi_reg_ops {
    /* Register (service, address, weight, ttl_ms); write the instance id. */
    aims_status (*reg)(void *ctx, const char *service, const char *address, uint32_t weight,
                       uint64_t ttl_ms, uint64_t *out_id);
    /* Renew the lease of *io_id. The full record is passed so the remote side
     * may re-register an instance whose lease was lost (then it writes the new
     * id). AIMS_E_NOTFOUND makes the node register again on the next beat. */
    aims_status (*heartbeat)(void *ctx, const char *service, const char *address,
                             uint32_t weight, uint64_t ttl_ms, uint64_t *io_id);
    /* Remove the instance now. */
    aims_status (*dereg)(void *ctx, uint64_t id);
    /* Free ctx: called once by the node when the ops are replaced or the node
     * is destroyed, after its last use (may be NULL). */
    void (*release)(void *ctx);
    /* Publish model version name@version exactly once (aims_publish.h;
     * arguments already checked, meta never NULL): AIMS_OK for the one writer
     * that wins, AIMS_E_EXISTS "... already published by OWNER" for every
     * other. NULL: the backend cannot publish (AIMS_E_UNSUPPORTED). */
    aims_status (*publish)(void *ctx, const char *name, const char *version,
                           const char *owner, const char *meta);
} aimsi_reg_ops;

/* Install (ops non-NULL) or remove (NULL) the remote registry of node n; the
 * ops table and ctx must outlive the node or the next call. Services started
 * afterwards (and the heartbeat thread) use it instead of aims_node_set_registry's
 * local registry. Services already registered are re-registered on the next beat. */
aims_status aimsi_node_set_remote_registry(aims_node *n, const aimsi_reg_ops *ops, void *ctx);

/* ---- registry service and sync (svc_registry.c) ---------------------------- */

/* The "aims.registry" service kind over registry r (borrowed). */
aims_status aimsi_regsvc_create(aims_registry *r, void **out_impl);
const aimsi_svc_kind *aimsi_regsvc_kind(void);

/* A thread that keeps `mirror` (a local registry the caller owns) in sync with
 * the registry hosted at url, polling every period_ms; the first sync runs
 * before start returns (failure to reach the registry is not an error). */
typedef struct aimsi_regsync aimsi_regsync;
aims_status aimsi_regsync_start(const char *url, aims_registry *mirror, uint64_t period_ms,
                                aims_tls_config *tls, aimsi_regsync **out);
void aimsi_regsync_stop(aimsi_regsync *rs);
/* Successful (ok != 0) or failed syncs so far. */
uint64_t aimsi_regsync_count(aimsi_regsync *rs, int ok);
/* Apply one "changes" reply to a fresh mirror state (fuzzing and tests); the
 * instances it registered in `mirror` are removed again before it returns. */
aims_status aimsi_regsync_apply_once(aims_registry *mirror, const aims_msg *reply);

/* ---- client internals for svc_registry.c (client.c) ------------------------- */

/* aims_client_join's mirror: from now on the client resolves names through
 * `r` (exactly like aims_client_set_registry) and OWNS it. The client's
 * destroy first calls stop(ctx) -- which must stop whatever keeps r in sync
 * (its thread may be inside aims_client_call_addr on this client: such calls
 * fail fast with AIMS_E_CLOSED once destroy began) and free ctx -- and then
 * destroys r. AIMS_E_STATE when the client already adopted one. */
aims_status aimsi_client_adopt_registry(aims_client *c, aims_registry *r, void (*stop)(void *ctx),
                                        void *ctx);
/* The registry the client resolves names through (NULL when none). */
aims_registry *aimsi_client_registry(aims_client *c);
/* The client's AIMS_CLIENT_SYNC_MS (the mirror's sync period). */
int64_t aimsi_client_sync_ms(const aims_client *c);
/* The TLS config a client dials tls:// with (NULL: none); client.c. */
aims_tls_config *aimsi_client_tls(aims_client *c);

#endif /* AIMSI_REGSYNC_H */
