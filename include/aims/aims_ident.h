/*
 * aims_ident.h -- who is calling: the caller's identity as a handler sees it,
 * and the bearer token a client attaches to every call (issue 10, items 2
 * and 4; docs/IDENT.md).
 *
 * Why. The node's door (aims_policy.h) decides every request from who the
 * caller is: a tls:// peer's verified certificate name, an ipc:// peer's
 * "uid:N", "anonymous" for plain tcp://, or "jwt:<sub>" when the request
 * carries a bearer token that verifies against the node's policy. A handler
 * that keeps per-user state, or checks finer rights than the policy's
 * service/method granularity, needs the same answer, and must not re-derive
 * it from request tensors a caller could forge. aims_msg_caller gives it the
 * door's answer. A client without a certificate presents a token; setting it
 * once on the client (aims_client_set_token) sends it on every call, and
 * setting it again renews it for the calls that follow.
 */
/** @file */
#ifndef AIMS_IDENT_H
#define AIMS_IDENT_H

#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/**
 * @brief For a handler: who sent the request @p req it is running.
 *
 * The identity the node's door decided for this request: "jwt:<sub>" when the
 * request carried a bearer token that the node's policy verified, else the
 * transport's: the verified certificate name of a tls:// peer, "uid:<uid>" of
 * an ipc:// peer (SO_PEERCRED), "anonymous" for plain tcp://. In-process
 * callers (inproc://, direct API calls) carry the node's own certificate name
 * (aims_tls_config_identity) when the node has TLS, else "host". Without a policy on the
 * node a token is not verified and so does not change the identity.
 * @param req the request the handler was given.
 * @return The identity, valid until the handler returns; "" when @p req is
 *         NULL or not the request this thread is running.
 * @note Thread safety: call it on the thread running the handler.
 * @since 0.1
 */
AIMS_API const char *aims_msg_caller(const aims_msg *req);

/**
 * @brief Attach a bearer token (a compact JWT, RFC 7519) to every call this
 *        client makes from now on; NULL or "" stops attaching one.
 *
 * The token travels as the reserved BYTES tensor "$auth" of each request
 * frame (tcp://, ipc://, tls://; docs/POLICY.md section 4); the node's door
 * verifies it and removes it before the handler runs. In-process calls do not
 * carry it (the caller is the program itself: "host"). Calling it again
 * replaces the token (renewal before "exp"): calls started afterwards carry
 * the new one; calls already sent keep the old one.
 * @param c     The client.
 * @param token The token text (copied), at most 8192 bytes, printable ASCII.
 * @return AIMS_OK, AIMS_E_INVAL (too long or not printable), AIMS_E_NOMEM,
 *         AIMS_E_MISUSE (@p c is NULL); aims_client_errmsg() says why.
 * @note Thread safety: may be called while other threads make calls.
 * @since 0.1
 */
AIMS_API aims_status aims_client_set_token(aims_client *c, const char *token);

AIMS_EXTERN_C_END

#endif
