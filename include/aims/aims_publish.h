/*
 * aims_publish.h -- exactly-once publication of model versions (docs/PUBLISH.md).
 *
 * Why: a trained model becomes "name@version" for every client the moment it
 * is published. When two train jobs (a retried one, an adopted one, two
 * operators) finish the same version, exactly one of them may publish it:
 * the other must learn that it lost, and who won, instead of silently
 * overwriting a model that clients may already be served.
 *
 * How: a publication is a record "name@version" -> (owner, meta) kept by the
 * registry, created by one compare-and-set that only one writer can win, on
 * every backend:
 *   - the in-process aims_registry: a check-and-insert under its lock;
 *   - the registry service (aims:// tcp:// ipc:// inproc://): the method
 *     "publish" of "aims.registry", which does the same on the hosted registry;
 *   - etcd (etcd://): one transaction on <prefix>pub/<name>/<version> comparing
 *     create_revision == 0 (the key does not exist), whose else-branch reads
 *     the winner's record in the same round trip.
 * The loser gets AIMS_E_EXISTS with the message
 * "name@version already published by <owner>" (aims_errmsg(), and the
 * client's or node's errmsg). Publishing the same version again with the same
 * owner is also AIMS_E_EXISTS: a publication is never overwritten or deleted
 * through this API (a rollback routes traffic, it does not unpublish).
 *
 * The record says who published what; serving the version is the infer
 * service "name@version" (aims_service_add_infer) that the winner starts.
 *
 * Threads: every call here may be made from any thread at any time.
 */
#ifndef AIMS_PUBLISH_H
#define AIMS_PUBLISH_H

#include "aims_orch.h"
#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/** Longest owner string, in bytes. */
#define AIMS_PUBLISH_MAX_OWNER 128
/** Longest meta string, in bytes. */
#define AIMS_PUBLISH_MAX_META 1024
/** Longest version string, in bytes. */
#define AIMS_PUBLISH_MAX_VERSION 32

/**
 * @brief Publish model version @p name@@p version in the in-process registry
 * @p r, exactly once.
 *
 * @param r        Registry; must not be NULL (else AIMS_E_MISUSE).
 * @param name     Model name: 1..95 bytes of [A-Za-z0-9_./-] (no '@').
 * @param version  1..AIMS_PUBLISH_MAX_VERSION bytes of [A-Za-z0-9_.-].
 * @param owner    Who publishes (a job id, node or user name): 1..AIMS_PUBLISH_MAX_OWNER
 *                 bytes without NUL or newline.
 * @param meta     Free text kept with the record (NULL = ""): up to
 *                 AIMS_PUBLISH_MAX_META bytes.
 * @return AIMS_OK when this call published it; AIMS_E_EXISTS when the version
 *         was published before ("name@version already published by OWNER");
 *         AIMS_E_MISUSE, AIMS_E_INVAL (a name, version, owner or meta outside
 *         the rules above, named in the message), AIMS_E_NOMEM.
 * @note Thread safety: of any number of concurrent calls for one version,
 *       exactly one returns AIMS_OK.
 * @since 0.1
 */
AIMS_API aims_status aims_registry_publish(aims_registry *r, const char *name,
                                           const char *version, const char *owner,
                                           const char *meta);

/**
 * @brief Who published @p name@@p version in @p r, and with what meta.
 *
 * @param r          Registry; must not be NULL.
 * @param name       Model name (as for aims_registry_publish).
 * @param version    Version (as for aims_registry_publish).
 * @param owner      [out] caller buffer for the owner, NUL-terminated; may be NULL.
 * @param owner_cap  Capacity of @p owner; AIMS_PUBLISH_MAX_OWNER + 1 always fits.
 * @param meta       [out] caller buffer for the meta, NUL-terminated; may be NULL.
 * @param meta_cap   Capacity of @p meta; AIMS_PUBLISH_MAX_META + 1 always fits.
 * @return AIMS_OK, AIMS_E_NOTFOUND (not published), AIMS_E_RANGE (a buffer is
 *         too small; nothing written), AIMS_E_MISUSE, AIMS_E_INVAL.
 * @since 0.1
 */
AIMS_API aims_status aims_registry_get_publication(aims_registry *r, const char *name,
                                                   const char *version, char *owner,
                                                   size_t owner_cap, char *meta,
                                                   size_t meta_cap);

/**
 * @brief Publish @p name@@p version through the registry the client resolves
 * names with: the one given to aims_client_set_registry, or the backend
 * joined with aims_client_join (registry service or etcd), exactly once across
 * every process using that registry.
 *
 * Arguments and results as aims_registry_publish. In addition:
 * AIMS_E_STATE when the client has no registry; AIMS_E_IO, AIMS_E_TIMEOUT or
 * AIMS_E_BACKEND when the joined backend cannot be reached or refuses (then
 * nothing is known about the outcome: publishing again tells, since a second
 * try by the winner gets AIMS_E_EXISTS naming itself); AIMS_E_DENIED when the
 * registry service's policy does not let the client's identity register
 * @p name@@p version (docs/POLICY.md; a canary verdict record also counts as
 * its service's, docs/VERDICTS.md). Blocks for one round trip to the backend
 * (at most a few seconds).
 * @param c        The client; must not be NULL.
 * @param name     Model name.
 * @param version  Version.
 * @param owner    Who publishes.
 * @param meta     Free text, or NULL.
 * @note Thread safety: any thread; concurrent calls are fine.
 * @since 0.1
 */
AIMS_API aims_status aims_client_publish_version(aims_client *c, const char *name,
                                                 const char *version, const char *owner,
                                                 const char *meta);

/**
 * @brief Publish @p name@@p version through the registry node @p n registers
 * its services with (aims_node_set_registry, or the backend joined with
 * aims_node_join), exactly once. For services running on a node (a train
 * service finishing a job). Arguments and results as aims_client_publish_version;
 * AIMS_E_STATE when the node has no registry.
 * @param n        The node; must not be NULL.
 * @param name     Model name.
 * @param version  Version.
 * @param owner    Who publishes.
 * @param meta     Free text, or NULL.
 * @since 0.1
 */
AIMS_API aims_status aims_node_publish_version(aims_node *n, const char *name,
                                               const char *version, const char *owner,
                                               const char *meta);

AIMS_EXTERN_C_END

#endif /* AIMS_PUBLISH_H */
