/*
 * svc_member.c -- a service's membership in the node's registry (local or
 * remote): register at start, heartbeat the lease, deregister at stop, and
 * forget a remote registration when the node switches registries (service.c
 * has the overview; node.c drives the heartbeats).
 *
 * The backend (registry, remote ops, their context) is read under node->lock
 * and used under the service's reg_lock, so a node that replaces its remote
 * registry waits for every service's reg_lock before it releases the old ops.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimsi_regsync.h"
#include "aimsi_node.h"
#include "transport/aimsi_transport.h"
#include "aimsi_service.h"
#include "registry/aimsi_regbk.h"

/* ---- registry -------------------------------------------------------------------- */

static uint64_t lease_ms(const aims_node *n)
{
    return 3u * (uint64_t)n->p_heartbeat_ms;
}

reg_backend aimsi_service_backend_of(aims_node *n)
{
    pthread_mutex_lock(&n->lock);
    const reg_backend b = {n->reg, n->rops, n->rctx};
    pthread_mutex_unlock(&n->lock);
    return b;
}

/* Under reg_lock. */
aims_status aimsi_service_reg_register(aims_service *s, const reg_backend *b, const char *addr)
{
    aims_node *n = s->node;
    uint64_t id = 0;
    const aimsi_reg_ops *ops;
    void *ctx;
    const int remote = b->rops != NULL;
    if (!aimsi_regbk_session(b->reg, b->rops, b->rctx, remote, &ops, &ctx)) {
        return AIMS_OK;
    }
    const aims_status st = ops->reg(ctx, s->name, addr, (uint32_t)s->p_weight, lease_ms(n), &id);
    s->reg_remote = remote;
    if (st == AIMS_OK) {
        s->registered = 1;
        s->reg_id = id;
    }
    return st;
}

/* Under reg_lock. */
void aimsi_service_reg_deregister(aims_service *s)
{
    if (!s->registered) {
        return;
    }
    const reg_backend b = aimsi_service_backend_of(s->node);
    const aimsi_reg_ops *ops;
    void *ctx;
    if (aimsi_regbk_session(b.reg, b.rops, b.rctx, s->reg_remote, &ops, &ctx)) {
        (void)ops->dereg(ctx, s->reg_id);
    }
    s->registered = 0;
    s->reg_id = 0;
}

/* The node's registry address (first listen address), copied under the lock. */
int aimsi_service_first_address(aims_node *n, char *buf)
{
    pthread_mutex_lock(&n->lock);
    const int have = n->n_addr > 0;
    if (have) {
        memcpy(buf, n->addr[0], AIMSI_URL_MAX);
    }
    pthread_mutex_unlock(&n->lock);
    return have;
}

void aimsi_svc_forget_remote(aims_service *s)
{
    pthread_mutex_lock(&s->reg_lock);
    if (s->registered && s->reg_remote) {
        /* Its lease on the old remote registry simply expires. */
        s->registered = 0;
        s->reg_id = 0;
    }
    pthread_mutex_unlock(&s->reg_lock);
}

void aimsi_svc_beat(aims_service *s)
{
    aims_node *n = s->node;
    char addr[AIMSI_URL_MAX];
    if (atomic_load(&s->state) != AIMSI_SVC_RUNNING || !aimsi_service_first_address(n, addr)) {
        return;
    }
    pthread_mutex_lock(&s->reg_lock);
    if (atomic_load(&s->state) != AIMSI_SVC_RUNNING || s->reg_leaving) {
        pthread_mutex_unlock(&s->reg_lock);
        return;
    }
    const reg_backend b = aimsi_service_backend_of(n);
    const aimsi_reg_ops *ops;
    void *ctx;
    if (!s->registered) {
        /* Remote registry unreachable at start, or a lost lease: try again. */
        (void)aimsi_service_reg_register(s, &b, addr);
    } else if (aimsi_regbk_session(b.reg, b.rops, b.rctx, s->reg_remote, &ops, &ctx)) {
        uint64_t id = s->reg_id;
        const aims_status st = ops->heartbeat(ctx, s->name, addr, (uint32_t)s->p_weight,
                                              lease_ms(n), &id);
        if (st == AIMS_OK) {
            s->reg_id = id;
        } else if (st == AIMS_E_NOTFOUND) {
            s->registered = 0;
            (void)aimsi_service_reg_register(s, &b, addr);
        }
    }
    pthread_mutex_unlock(&s->reg_lock);
}
