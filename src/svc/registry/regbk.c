/*
 * regbk.c -- choosing a registry backend by URL, and the two public ways to
 * join one (aims_node_join, aims_client_join). See aimsi_regbk.h for the
 * vtable. This file knows no backend's internals: it parses the scheme,
 * finds the table, and wires the backend's node session into the node
 * (aimsi_node_set_remote_registry) or its view into the client
 * (aimsi_client_adopt_registry, which owns the view and stops the sync first
 * at destroy).
 *
 * Also here: the in-process registry as a node session (aimsi_regbk_local_ops),
 * so service.c registers through one table whatever the backend.
 */
#include <string.h>

#include "aimsi_regbk.h"
#include "../authz/aimsi_authz.h"
#include "aims/aims_publish.h"

aims_status aimsi_regbk_private_client(const char *who, const char *url, aims_tls_config *tls,
                                       char url_buf[AIMSI_URL_MAX + 1], aims_client **out)
{
    if (url == NULL || strlen(url) == 0 || strlen(url) > AIMSI_URL_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: registry url must be 1..%u bytes", who,
                         AIMSI_URL_MAX);
    }
    aims_client *c = NULL;
    AIMSI_TRY(aims_client_create(&c));
    if (tls != NULL) {
        const aims_status rc = aims_client_set_tls(c, tls);
        if (rc != AIMS_OK) {
            aims_client_destroy(c);
            return rc;
        }
    }
    strcpy(url_buf, url);
    *out = c;
    return AIMS_OK;
}

/* Explicit schemes; any other scheme is a transport URL of the registry
 * service (tcp, ipc, inproc, tls...), whose transport table judges it. */
static const aimsi_regbk *backend_for_scheme(const char *scheme, size_t len)
{
    const aimsi_regbk *const table[] = {aimsi_regbk_etcd(), aimsi_regbk_service()};
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const aimsi_regbk *b = table[i];
        if (b != NULL && b->struct_size >= sizeof(aimsi_regbk) &&
            strlen(b->scheme) == len && strncmp(b->scheme, scheme, len) == 0) {
            return b;
        }
    }
    return aimsi_regbk_service();
}

aims_status aimsi_regbk_find(const char *url, const aimsi_regbk **out)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL || sep == url) {
        return aimsi_err(NULL, AIMS_E_INVAL, "registry url '%s' has no scheme (etcd://, "
                         "aims://, tcp://, ipc://, inproc://)", url);
    }
    const aimsi_regbk *b = backend_for_scheme(url, (size_t)(sep - url));
    const char *why = NULL;
    if (b->available != NULL && !b->available(&why)) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "registry url '%s': %s", url, why);
    }
    *out = b;
    return AIMS_OK;
}

static aims_status check_url(const char *url, const char *who)
{
    if (strlen(url) == 0 || strlen(url) > AIMSI_URL_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: url must be 1..%u bytes", who, AIMSI_URL_MAX);
    }
    return AIMS_OK;
}

AIMS_API aims_status aims_node_join(aims_node *n, const char *url)
{
    /* Validate before anything starts. */
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || url == NULL) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "aims_node_join: node is %s%s", aimsi_obj_what(n),
                         url == NULL ? ", url is NULL" : "");
    }
    AIMSI_TRY(check_url(url, "aims_node_join"));
    const aimsi_regbk *b = NULL;
    AIMSI_TRY(aimsi_regbk_find(url, &b));
    const aimsi_reg_ops *ops = NULL;
    void *ctx = NULL;
    aims_status rc = b->node_open(url, n, &ops, &ctx);
    if (rc == AIMS_OK) {
        rc = aimsi_node_set_remote_registry(n, ops, ctx);
        if (rc != AIMS_OK && ops->release != NULL) {
            ops->release(ctx);
        }
    }
    aimsi_authz_audit(n, AIMS_AUDIT_JOIN, "host", url, "aims.registry", rc, "");
    return rc;
}

typedef struct view_sync {
    const aimsi_regbk *b;
    void *ctx;
} view_sync;

static void view_stop(void *arg)
{
    view_sync *v = arg;
    v->b->view_close(v->ctx);
    aimsi_free(v);
}

size_t aimsi_regbk_why(void (*stop)(void *ctx), void *ctx, char *buf, size_t cap)
{
    const view_sync *v = ctx;
    if (stop != view_stop || v == NULL || v->b->view_why == NULL) {
        if (cap > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    return v->b->view_why(v->ctx, buf, cap);
}

aims_status aimsi_regbk_view_publish(void (*stop)(void *ctx), void *ctx, const char *name,
                                     const char *version, const char *owner, const char *meta)
{
    const view_sync *v = ctx;
    if (stop != view_stop || v == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "publish: the client joined no registry backend");
    }
    if (v->b->struct_size < sizeof(aimsi_regbk) || v->b->view_publish == NULL) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "publish: the %s:// registry backend "
                         "cannot publish", v->b->scheme);
    }
    return v->b->view_publish(v->ctx, name, version, owner, meta);
}

AIMS_API aims_status aims_client_join(aims_client *c, const char *url)
{
    /* Validate before anything starts: view_open may spawn a sync thread. */
    if (!aimsi_obj_ok(c, AIMSI_MAGIC_CLIENT) || url == NULL) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "aims_client_join: client is %s%s",
                         aimsi_obj_what(c), url == NULL ? ", url is NULL" : "");
    }
    AIMSI_TRY(check_url(url, "aims_client_join"));
    const aimsi_regbk *b = NULL;
    AIMSI_TRY(aimsi_regbk_find(url, &b));
    view_sync *v = aimsi_calloc(1, sizeof(*v));
    if (v == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_client_join: out of memory");
    }
    v->b = b;
    aims_registry *view = NULL;
    aims_status rc = aims_registry_create(&view);
    if (rc == AIMS_OK) {
        const int64_t period = aimsi_client_sync_ms(c);
        rc = b->view_open(url, view, (uint64_t)(period > 0 ? period : 200), aimsi_client_tls(c),
                         &v->ctx);
        if (rc != AIMS_OK) {
            aims_registry_destroy(view);
        }
    }
    if (rc != AIMS_OK) {
        aimsi_free(v);
        return rc;
    }
    rc = aimsi_client_adopt_registry(c, view, view_stop, v);
    if (rc != AIMS_OK) {
        view_stop(v);
        aims_registry_destroy(view);
    }
    return rc;
}

/* ---- the in-process registry as a node session ------------------------------- */

static aims_status local_reg(void *ctx, const char *service, const char *address,
                             uint32_t weight, uint64_t ttl_ms, uint64_t *out_id)
{
    aims_instance id = 0;
    AIMSI_TRY(aims_registry_register(ctx, service, address, weight, ttl_ms, &id));
    *out_id = id;
    return AIMS_OK;
}

static aims_status local_heartbeat(void *ctx, const char *service, const char *address,
                                   uint32_t weight, uint64_t ttl_ms, uint64_t *io_id)
{
    (void)service, (void)address, (void)weight, (void)ttl_ms;
    /* AIMS_E_NOTFOUND (expired) makes the service register again. */
    return aims_registry_heartbeat(ctx, *io_id);
}

static aims_status local_dereg(void *ctx, uint64_t id)
{
    return aims_registry_deregister(ctx, id);
}

static aims_status local_publish(void *ctx, const char *name, const char *version,
                                 const char *owner, const char *meta)
{
    return aims_registry_publish(ctx, name, version, owner, meta);
}

/* No release: the node borrows the registry (aims_node_set_registry). */
const aimsi_reg_ops aimsi_regbk_local_ops = {
    .reg = local_reg, .heartbeat = local_heartbeat, .dereg = local_dereg, .release = NULL,
    .publish = local_publish,
};

int aimsi_regbk_session(aims_registry *reg, const aimsi_reg_ops *rops, void *rctx, int remote,
                        const aimsi_reg_ops **ops, void **ctx)
{
    if (remote && rops != NULL) {
        *ops = rops;
        *ctx = rctx;
        return 1;
    }
    if (!remote && reg != NULL) {
        *ops = &aimsi_regbk_local_ops;
        *ctx = reg;
        return 1;
    }
    return 0;
}
