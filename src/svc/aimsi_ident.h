/*
 * aimsi_ident.h -- private to src/svc: who owns a training job and what name
 * an in-process caller carries (svc_ident.c; docs/IDENT.md).
 */
#ifndef AIMSI_IDENT_H
#define AIMSI_IDENT_H

#include <stddef.h>

#include "aims/aims_svc.h"

/* Record the owner of a new job from the door's caller identity (aimsi_work
 * caller; NULL for in-process): "" when nothing was authenticated ("anonymous",
 * in-process "host"), else the identity itself (cert name, "uid:N", "jwt:sub").
 * owner has room for cap bytes; longer names are cut (never happens with
 * AIMSI_CALLER_MAX). */
void aimsi_job_owner_set(char *owner, size_t cap, const char *caller);

/* May caller (NULL = in-process) reach a job owned by owner? Yes when the
 * submitter was not authenticated (its handle alone decides, as before), when
 * the caller is the program itself, or when it is the same identity. */
int aimsi_job_owner_ok(const char *owner, const char *caller);

/* The name in-process callers of node n carry for aims_msg_caller: the node's
 * certificate name when it has TLS, else NULL (svc_cancel.c then says "host"). */
const char *aimsi_ident_host(const aims_node *n);

#endif /* AIMSI_IDENT_H */
