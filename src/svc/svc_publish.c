/*
 * svc_publish.c -- aims_client_publish_version and aims_node_publish_version
 * (aims_publish.h, docs/PUBLISH.md): publishing a model version through
 * whatever registry a client resolves with, or a node registers with.
 *
 * Why one file: both entry points only pick the session and hand the checked
 * arguments to it. The exactly-once decision is the backend's: the in-process
 * registry's table (src/orch/registry_pub.c), the registry service's
 * "publish" method (svc_registry.c, which runs that same table on the hosted
 * registry), or an etcd transaction (registry/etcd_pub.c).
 *
 * Which session:
 *   client  joined (aims_client_join)      -> the view's backend (regbk.c)
 *           aims_client_set_registry       -> that aims_registry
 *   node    joined (aims_node_join)        -> the node's aimsi_reg_ops.publish
 *           aims_node_set_registry         -> that aims_registry
 * The session pointers are read under the owner's lock and used after it,
 * as service registration does: they live as long as the client or node.
 */
#include <pthread.h>
#include <string.h>

#include "aimsi_client.h"
#include "aimsi_node.h"
#include "aimsi_regsync.h"
#include "registry/aimsi_regbk.h"
#include "../orch/aimsi_orch.h"
#include "aims/aims_publish.h"

aims_status aims_client_publish_version(aims_client *c, const char *name, const char *version,
                                        const char *owner, const char *meta)
{
    if (!aimsi_obj_ok(c, AIMSI_MAGIC_CLIENT)) {
        return AIMSI_MISUSE("client handle");
    }
    aims_status rc = aimsi_pub_check("aims_client_publish_version", name, version, owner, meta);
    if (rc != AIMS_OK) {
        return aimsi_client_call_err(c, rc, "%s", aims_errmsg());
    }
    pthread_mutex_lock(&c->mu);
    aims_registry *reg = c->reg;
    void (*const stop)(void *) = c->reg_stop;
    void *const ctx = c->reg_ctx;
    pthread_mutex_unlock(&c->mu);
    meta = meta != NULL ? meta : "";
    if (stop != NULL) {
        rc = aimsi_regbk_view_publish(stop, ctx, name, version, owner, meta);
    } else if (reg != NULL) {
        rc = aims_registry_publish(reg, name, version, owner, meta);
    } else {
        rc = aimsi_err(NULL, AIMS_E_STATE, "aims_client_publish_version: the client has no "
                       "registry (aims_client_set_registry or aims_client_join first)");
    }
    /* the text on the client too, from this thread (aims_client_errmsg) */
    return rc == AIMS_OK ? AIMS_OK : aimsi_client_call_err(c, rc, "%s", aims_errmsg());
}

aims_status aims_node_publish_version(aims_node *n, const char *name, const char *version,
                                      const char *owner, const char *meta)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE)) {
        return AIMSI_MISUSE("node handle");
    }
    aims_status rc = aimsi_pub_check("aims_node_publish_version", name, version, owner, meta);
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&n->obj, rc);
    }
    pthread_mutex_lock(&n->lock);
    aims_registry *reg = n->reg;
    const aimsi_reg_ops *rops = n->rops;
    void *rctx = n->rctx;
    pthread_mutex_unlock(&n->lock);
    meta = meta != NULL ? meta : "";
    if (rops != NULL) {
        rc = rops->publish != NULL
                 ? rops->publish(rctx, name, version, owner, meta)
                 : aimsi_err(NULL, AIMS_E_UNSUPPORTED, "aims_node_publish_version: the "
                             "node's registry backend cannot publish");
    } else if (reg != NULL) {
        rc = aims_registry_publish(reg, name, version, owner, meta);
    } else {
        rc = aimsi_err(NULL, AIMS_E_STATE, "aims_node_publish_version: the node has no "
                       "registry (aims_node_set_registry or aims_node_join first)");
    }
    return rc == AIMS_OK ? AIMS_OK : aimsi_err_adopt(&n->obj, rc);
}
