/*
 * svc_train_pub.c -- a finished train job's "publish": exactly once through
 * the registry, then deploy (docs/JOBS.md, docs/PUBLISH.md, docs/LIFECYCLE.md).
 *
 * Why: two train jobs may finish the same "name@version" (two train services,
 * a retried submit under another id, two operators). Deploying both would let
 * the second silently replace a model clients are already served. The
 * registry's publication record (aims_node_publish_version) is decided by one
 * compare-and-set on every backend, so only its winner may deploy.
 *
 * How: before aimsi_life_publish deploys the bundle to the infer service on
 * this node, the job publishes "name@version" with owner = its job id:
 *   AIMS_OK        -> ours: deploy.
 *   AIMS_E_EXISTS  -> if the record's owner is this job id, an earlier try of
 *                     ours won (a lost reply, or this job adopted after its
 *                     first owner died between publish and deploy): deploy.
 *                     Otherwise do not deploy; the job's status carries
 *                     "name@version already published by OWNER", audited as a
 *                     refused MODEL_DEPLOY.
 *   AIMS_E_STATE   -> the node has no registry: deploy as before (nothing to
 *                     race against that the registry could decide).
 *   AIMS_E_IO / AIMS_E_TIMEOUT / AIMS_E_BACKEND -> outcome unknown: try again
 *                     (a winner's retry is answered EXISTS naming itself);
 *                     still unknown after PUB_TRIES: do not deploy (never
 *                     risk a second deployment), status says why.
 * A target without "@version" has nothing to publish exactly once: it deploys
 * as before (the lifecycle numbers the version).
 * The outcome text goes to `note` for the job's status ("publish" field).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../core/aimsi_core.h"
#include "../model/aimsi_model.h"
#include "aimsi_life.h"
#include "aimsi_node.h"
#include "authz/aimsi_authz.h"
#include "aims/aims_publish.h"

#define PUB_TRIES 3
#define PUB_RETRY_MS 200

static int owned_by(const char *msg, const char *owner)
{
    static const char by[] = " already published by ";
    const char *p = strstr(msg, by);
    return p != NULL && strcmp(p + sizeof by - 1, owner) == 0;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Decide whether this job may deploy `publish`; 1 = deploy. */
static int gate(aims_node *n, const char *publish, const char *owner, char *note, size_t cap)
{
    char name[AIMSI_FRAME_MAX_SERVICE + 1];
    if (snprintf(name, sizeof name, "%s", publish) >= (int)sizeof name) {
        snprintf(note, cap, "not deployed: publish target too long");
        return 0;
    }
    char *at = strchr(name, '@');
    if (at == NULL) {
        snprintf(note, cap, "deployed (no version: not published in the registry)");
        return 1;
    }
    *at = '\0';
    aims_status rc = AIMS_E_IO;
    char msg[AIMSI_ERRMSG_CAP] = "";
    for (int i = 0; i < PUB_TRIES; i++) {
        rc = aims_node_publish_version(n, name, at + 1, owner, "train");
        snprintf(msg, sizeof msg, "%s", aims_errmsg());
        if (rc != AIMS_E_IO && rc != AIMS_E_TIMEOUT && rc != AIMS_E_BACKEND) {
            break;
        }
        pause_ms(PUB_RETRY_MS);
    }
    if (rc == AIMS_OK) {
        snprintf(note, cap, "published %s by %s", publish, owner);
        return 1;
    }
    if (rc == AIMS_E_STATE) {
        snprintf(note, cap, "deployed (the node has no registry: not published there)");
        return 1;
    }
    if (rc == AIMS_E_EXISTS && owned_by(msg, owner)) {
        snprintf(note, cap, "published %s by %s (an earlier try)", publish, owner);
        return 1;
    }
    if (rc == AIMS_E_EXISTS) {
        snprintf(note, cap, "not deployed: %s", msg);
    } else {
        snprintf(note, cap, "not deployed: publishing %s failed (%s): %s", publish,
                 aims_status_name(rc), msg);
    }
    aimsi_authz_audit(n, AIMS_AUDIT_MODEL_DEPLOY, "train", "", publish, rc, note);
    aimsi_log(AIMS_LOG_WARN, "train job %s: %s", owner, note);
    return 0;
}

aims_status aimsi_train_publish(aims_node *n, const char *publish, const char *owner,
                                const void *bytes, size_t len, int64_t canary_pct, char *note,
                                size_t cap)
{
    if (!gate(n, publish, owner, note, cap)) {
        return AIMS_E_EXISTS;
    }
    const aims_status rc = aimsi_life_publish(n, publish, bytes, len, canary_pct, "train");
    if (rc != AIMS_OK) {
        const size_t used = strlen(note);
        snprintf(note + used, cap - used, "; deploy failed: %s", aims_errmsg());
    }
    return rc;
}

aims_status aimsi_train_bundle(const aims_pipeline *p, const aims_model *m, const char *publish,
                               void **out, size_t *out_len)
{
    char name[AIMSI_FRAME_MAX_SERVICE + 1] = "";
    if (publish != NULL && snprintf(name, sizeof name, "%s", publish) >= (int)sizeof name) {
        return aimsi_err(NULL, AIMS_E_INVAL, "bundle: publish target too long");
    }
    char *at = strchr(name, '@');
    if (at != NULL) {
        *at = '\0';
    }
    aims_bundle *b = NULL;
    AIMSI_TRY(aims_bundle_create(p, m, &b));
    aims_status rc = name[0] != '\0' ? aims_bundle_set_meta(b, "name", name) : AIMS_OK;
    if (rc == AIMS_OK && at != NULL) {
        rc = aims_bundle_set_meta(b, "version", at + 1);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_bundle_to_bytes(b, out, out_len);
    }
    aims_bundle_destroy(b);
    return rc;
}
