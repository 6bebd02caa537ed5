/*
 * aimsi_regbk.h -- registry backends behind one vtable (DESIGN.md §2, §7).
 *
 * Why: a node registers its services and a client resolves names through "a
 * registry", but where that registry lives is a deployment choice: an
 * aims_registry in this process, the "aims.registry" service hosted by some
 * node (aims:// tcp:// ipc:// inproc://), or etcd (etcd://). Each of those is
 * one backend: a small table of functions chosen by the URL's scheme in
 * aims_node_join / aims_client_join (regbk.c). A new backend is one file in
 * this folder plus one line in regbk.c's table.
 *
 * How: a backend has two halves.
 *   - node side: node_open(url, node) gives the aimsi_reg_ops session the node's
 *     services register, heartbeat and deregister through (aimsi_regsync.h);
 *   - client side: view_open(url, view) keeps `view` -- a private local
 *     aims_registry the client resolves names through -- in sync with the
 *     backend until view_close. While the backend is unreachable the view
 *     keeps its last state (static stability).
 * The in-process registry is the degenerate backend: its node session is
 * aimsi_regbk_local_ops over the aims_registry itself (what
 * aims_node_set_registry installs), and a client uses that registry directly.
 *
 * The struct is laid out to be published like aims_transport later: it starts
 * with struct_size and version, fields are only ever appended, and a caller
 * checks struct_size before reading a field added after version 1.
 */
#ifndef AIMSI_REGBK_H
#define AIMSI_REGBK_H

#include "../aimsi_regsync.h"
#include "../aimsi_reach.h"
#include "../transport/aimsi_transport.h"

#define AIMSI_REGBK_VERSION 1u

typedef struct aimsi_regbk {
    size_t struct_size; /* sizeof(aimsi_regbk) the backend was compiled with */
    uint32_t version;   /* AIMSI_REGBK_VERSION it implements */
    const char *scheme; /* URL scheme it serves, without "://" ("etcd") */
    /* Node side: a session for registering node n's services at url (n may be
     * NULL: no credentials; a backend reads n's TLS config when it dials). On
     * success *ops and *ctx belong to the node (ops->release(ctx) frees them). */
    aims_status (*node_open)(const char *url, aims_node *n, const aimsi_reg_ops **ops,
                             void **ctx);
    /* Client side: keep `view` (borrowed, outlives the sync) in sync with the
     * registry at url, re-reading at most every period_ms. A reachable
     * backend is in the view when view_open returns; an unreachable one is
     * not an error (it keeps trying). */
    aims_status (*view_open)(const char *url, aims_registry *view, uint64_t period_ms,
                             aims_tls_config *tls, void **ctx);
    /* Stop the sync (joins its thread) and free ctx. */
    void (*view_close)(void *ctx);
    /* Whether the backend is usable in this build (NULL: always). On 0, the
     * message names what is missing ("built without etcd"). */
    int (*available)(const char **why);
    /* Why the view's backend is unreachable right now ("registry X
     * unreachable since T, last error E") into buf[cap]; 0 when it is
     * reachable or the backend cannot tell (may be NULL). */
    size_t (*view_why)(void *ctx, char *buf, size_t cap);
    /* Publish name@version exactly once through the view's backend (ctx from
     * view_open), as aimsi_reg_ops.publish (may be NULL: unsupported). */
    aims_status (*view_publish)(void *ctx, const char *name, const char *version,
                                const char *owner, const char *meta);
} aimsi_regbk;

/* The backend for url's scheme (etcd: etcd; aims and any transport scheme:
 * the registry service). AIMS_E_INVAL without a scheme, AIMS_E_UNSUPPORTED
 * when the backend is not in this build. */
aims_status aimsi_regbk_find(const char *url, const aimsi_regbk **out);

/* Backends (one file each). */
const aimsi_regbk *aimsi_regbk_service(void); /* regbk_service.c */
const aimsi_regbk *aimsi_regbk_etcd(void);    /* etcd.c */

/* The registry service's node session (regjoin.c): lease secrets kept per
 * instance, the node's TLS credentials for a tls:// registry. */
aims_status aimsi_regjoin_open(aims_node *n, const char *url, const aimsi_reg_ops **ops,
                               void **ctx);

/* For a client's "no live instance" error: why its joined view's backend is
 * unreachable (stop/ctx as given to aimsi_client_adopt_registry by
 * aims_client_join); 0 when reachable or not a joined view. */
size_t aimsi_regbk_why(void (*stop)(void *ctx), void *ctx, char *buf, size_t cap);

/* Publish through a client's joined view (stop/ctx as for aimsi_regbk_why).
 * AIMS_E_STATE when stop/ctx is not a joined view. */
aims_status aimsi_regbk_view_publish(void (*stop)(void *ctx), void *ctx, const char *name,
                                     const char *version, const char *owner, const char *meta);

/* The "publish" method of the registry service at url, through caller
 * (regbk_service.c): both the client view and the node join of that backend
 * publish with it. */
aims_status aimsi_regsvc_publish(aims_client *caller, const char *url, const char *name,
                                 const char *version, const char *owner, const char *meta);

/* The in-process registry as a node session: ctx is the aims_registry. */
extern const aimsi_reg_ops aimsi_regbk_local_ops;

/* The session a node's registration goes through (service.c): the joined
 * backend's rops/rctx when remote, else the in-process registry reg behind
 * aimsi_regbk_local_ops. 0 when there is none. */
int aimsi_regbk_session(aims_registry *reg, const aimsi_reg_ops *rops, void *rctx, int remote,
                        const aimsi_reg_ops **ops, void **ctx);


/* The two registry-service sessions (the client mirror's sync in
 * regbk_service.c, a node's join in regjoin.c) are set up alike: the URL is
 * checked (1..AIMSI_URL_MAX bytes; `who` starts the message) and copied into
 * url_buf, and a private client is created that carries the joiner's TLS
 * credentials (tls may be NULL) when the registry is at tls://. Nothing is
 * left to free on failure. */
aims_status aimsi_regbk_private_client(const char *who, const char *url, aims_tls_config *tls,
                                       char url_buf[AIMSI_URL_MAX + 1], aims_client **out);

#endif
