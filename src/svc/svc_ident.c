/*
 * svc_ident.c -- identities beyond the door: training jobs bound to the
 * identity that submitted them, and the name in-process callers carry.
 *
 * Why. A job's secret handle (svc_train.c) keeps strangers out when nothing
 * is authenticated, but once the node knows who is calling (a tls://
 * certificate, an ipc:// uid, a verified JWT), a handle that leaked -- in a
 * log, a shared notebook, a proxy -- must not let another identity read the
 * result or cancel the job. Issue 10 asks for "its owner by default".
 *
 * How. On submit the train service stores the door's caller identity with
 * the job (aimsi_job_owner_set); status, result and cancel then need the
 * handle AND the same identity (aimsi_job_owner_ok), else AIMS_E_DENIED,
 * which the node's door audits as a denial (aimsi_authz_done). A policy admin
 * still needs neither ("$admin", svc_train.c). Unauthenticated submitters
 * ("anonymous" over plain tcp://, the program itself in-process) own nothing
 * beyond their handle, so loopback deployments without TLS behave as before;
 * in-process callers (the program itself) may always reach every job, as the
 * policy always allows "host".
 *
 * In-process callers. They carry no transport identity; on a node with TLS
 * aims_msg_caller names them with the node's own certificate name (what the
 * same program is called when it dials another node), else "host".
 */
#include <string.h>

#include "aimsi_ident.h"
#include "aimsi_local.h"

void aimsi_job_owner_set(char *owner, size_t cap, const char *caller)
{
    if (cap == 0) {
        return;
    }
    owner[0] = '\0';
    if (caller == NULL || strcmp(caller, "anonymous") == 0 || strcmp(caller, "host") == 0) {
        return;
    }
    size_t n = strlen(caller);
    n = n < cap ? n : cap - 1;
    memcpy(owner, caller, n);
    owner[n] = '\0';
}

int aimsi_job_owner_ok(const char *owner, const char *caller)
{
    if (owner == NULL || owner[0] == '\0' || caller == NULL) {
        return 1;
    }
    return strcmp(owner, caller) == 0;
}

const char *aimsi_ident_host(const aims_node *n)
{
    const char *me = aimsi_node_identity(n);
    return me != NULL && me[0] != '\0' ? me : NULL;
}
