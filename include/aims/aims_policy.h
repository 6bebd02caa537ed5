/*
 * aims_policy.h -- who may do what: the authorization policy, JWT bearer
 * tokens and the audit hook (issue 10; docs/POLICY.md has the file format).
 *
 * One aims_policy object answers every door of a node: which identities may
 * register which service names in a hosted registry, read the registry, call
 * which service/method, submit training jobs, see or cancel jobs, swap models.
 * Once a policy is set on a node (aims_node_set_policy) everything it does
 * not allow is denied (AIMS_E_DENIED); a node without a policy behaves as
 * before (loopback deployments keep working), still protected by the lease
 * secrets and job handles that need no identity.
 *
 * Identities are strings. The transport says who the peer is: "uid:1000" for
 * an ipc:// peer (SO_PEERCRED), the certificate's name for a tls:// peer,
 * "anonymous" for a plain tcp:// peer; in-process callers are "host" (always
 * allowed: they are the program itself). A request may also carry a JWT
 * bearer token (RFC 7519) in a BYTES tensor named "$auth"; when it verifies
 * against the policy's key, the caller is "jwt:<sub>" and the token's scopes
 * match rules written for "scope:<name>". "$auth" is removed from the request
 * before the handler sees it.
 *
 * Threads. A policy is filled (load/set calls) by one thread, then only read:
 * aims_policy_check and aims_policy_verify_token may run on any number of
 * threads at once. Loading more rules into a policy already set on a running
 * node is not allowed (make a new policy and set that instead).
 */
/** @file */
#ifndef AIMS_POLICY_H
#define AIMS_POLICY_H

#include "aims_core.h"

AIMS_EXTERN_C_BEGIN

/** An access policy: rules, JWT keys (opaque). */
typedef struct aims_policy aims_policy;
/** A node hosting services (opaque; declared in aims_svc.h too). */
typedef struct aims_node aims_node;

/**
 * @brief Create an empty policy: no rules, so it denies everything but "host".
 * @param out [out] the new policy.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_policy_create(aims_policy **out);

/** @brief Destroy a policy (NULL is a no-op); no node may still use it. @since 0.1 */
AIMS_API void aims_policy_destroy(aims_policy *p);

/**
 * @brief Add the rules of a policy file (format: docs/POLICY.md).
 * @param p    Policy.
 * @param path File to read (at most 1 MiB).
 * @return AIMS_OK; AIMS_E_IO (cannot read), AIMS_E_CORRUPT (a bad line: the
 *         message names the file and line), AIMS_E_RANGE (too many rules or a
 *         line over 1024 bytes), AIMS_E_NOMEM, AIMS_E_MISUSE. On error the
 *         policy keeps only the rules it had before the call.
 * @since 0.1
 */
AIMS_API aims_status aims_policy_load_file(aims_policy *p, const char *path);

/**
 * @brief Add the rules of policy text (the same format as a file).
 * @param p    Policy.
 * @param text NUL-terminated policy text.
 * @param name Name used in error messages ("name:line"); NULL means "<string>".
 * @return As aims_policy_load_file, without AIMS_E_IO.
 * @since 0.1
 */
AIMS_API aims_status aims_policy_load_string(aims_policy *p, const char *text, const char *name);

/**
 * @brief Is @p identity allowed to do @p action on @p resource?
 * @param p        Policy.
 * @param identity The caller ("uid:1000", "jwt:alice", "node-a.example", "host").
 * @param action   "register", "join", "call", "train", "jobs", "swap", or one of the
 *                 model lifecycle's "load", "unload", "rollback", "weight", "deploy".
 * @param resource Service name, or "service/method" for "call".
 * @return AIMS_OK (allowed) or AIMS_E_DENIED; aims_errmsg() (thread-local: the
 *         policy is const here) names the rule that denied it ("denied by
 *         node.policy:7") or says that no rule allows it. AIMS_E_MISUSE on NULLs.
 * @note Thread safety: any number of threads at once.
 * @since 0.1
 */
AIMS_API aims_status aims_policy_check(const aims_policy *p, const char *identity,
                                       const char *action, const char *resource);

/** @brief Detail of the last failed call on @p p ("" if none). @since 0.1 */
AIMS_API const char *aims_policy_errmsg(const aims_policy *p);

/**
 * @brief Accept HS256 tokens signed with this shared key.
 * @param key Key bytes (copied), 32..1024 bytes (RFC 7518 §3.2: at least the hash size).
 * @param p    The policy; must not be NULL.
 * @param len  Bytes at @p key.
 * @return AIMS_OK, AIMS_E_RANGE (key length), AIMS_E_NOMEM, AIMS_E_MISUSE.
 * @since 0.1
 */
AIMS_API aims_status aims_policy_set_jwt_hs256(aims_policy *p, const void *key, size_t len);

/**
 * @brief Accept ES256 tokens (ECDSA P-256) verified with this public key.
 * @param pem PEM text of a P-256 public key ("-----BEGIN PUBLIC KEY-----").
 * @param p  The policy; must not be NULL.
 * @return AIMS_OK, AIMS_E_CORRUPT (not a P-256 public key), AIMS_E_UNSUPPORTED
 *         (built without OpenSSL, meson -Dtls=disabled), AIMS_E_NOMEM, AIMS_E_MISUSE.
 * @since 0.1
 */
AIMS_API aims_status aims_policy_set_jwt_es256(aims_policy *p, const char *pem);

/**
 * @brief Require these "aud" and "iss" claims (NULL: not checked) and allow
 *        @p leeway_s seconds of clock skew on "exp"/"nbf" (default 30, at most 600).
 * @return AIMS_OK, AIMS_E_RANGE, AIMS_E_NOMEM, AIMS_E_MISUSE.
 * @since 0.1
 */
AIMS_API aims_status aims_policy_set_jwt_claims(aims_policy *p, const char *audience,
                                                const char *issuer, int leeway_s);

/**
 * @brief Verify a compact JWT and give the identity it proves.
 *
 * Only HS256 (with the HS256 key) and ES256 (with the ES256 key) are
 * accepted: "alg":"none", any other algorithm and a header naming the other
 * algorithm than the key configured for it are refused. "exp" is required;
 * "nbf", "aud" (string or array) and "iss" are checked when present or required.
 * @param token    The token text ("xxx.yyy.zzz"), at most 8 KiB.
 * @param identity [out] "jwt:<sub>" (NUL-terminated).
 * @param cap      Capacity of @p identity (AIMS_E_RANGE if too small).
 * @param p  The policy; must not be NULL.
 * @return AIMS_OK, AIMS_E_DENIED (bad signature, expired, not yet valid, wrong
 *         aud/iss, refused algorithm; the message says which), AIMS_E_CORRUPT
 *         (not a JWT), AIMS_E_UNSUPPORTED (built without OpenSSL), AIMS_E_NOMEM.
 * @note Thread safety: any number of threads at once (the message is thread-local: aims_errmsg()).
 * @since 0.1
 */
AIMS_API aims_status aims_policy_verify_token(const aims_policy *p, const char *token,
                                              char *identity, size_t cap);

/** Audited actions (values never change). */
typedef enum aims_audit_action {
    AIMS_AUDIT_JOIN = 1,         /**< a node joined a registry (aims_node_join) */
    AIMS_AUDIT_REGISTER = 2,     /**< a peer registers an instance in the hosted registry */
    AIMS_AUDIT_DEREGISTER = 3,   /**< a peer removes an instance */
    AIMS_AUDIT_DENIED = 4,       /**< a call refused (policy, token, secret or handle) */
    AIMS_AUDIT_TRAIN_SUBMIT = 5, /**< a training job submitted */
    AIMS_AUDIT_MODEL_SWAP = 6,   /**< a model swapped on an infer service */
    AIMS_AUDIT_RESULT = 7,       /**< a training result fetched */
    /* The model lifecycle (aims_lifecycle.h); 8..19 are left to the security work. */
    AIMS_AUDIT_MODEL_LOAD = 20,     /**< a model version loaded into an infer service */
    AIMS_AUDIT_MODEL_UNLOAD = 21,   /**< a model version unloaded */
    AIMS_AUDIT_MODEL_WEIGHT = 22,   /**< a version's traffic weight set */
    AIMS_AUDIT_MODEL_ROLLBACK = 23, /**< traffic given back to a previous version (asked, or a failed canary) */
    AIMS_AUDIT_MODEL_DEPLOY = 24,   /**< a version deployed: a canary started, or switched to at 100 % */
    AIMS_AUDIT_MODEL_PROMOTE = 25   /**< a canary passed its rule and took all traffic */
} aims_audit_action;

/**
 * Audit callback: one structured event. Strings are valid during the call
 * only and never NULL ("" when unknown). @p status is the outcome (AIMS_OK,
 * or why the request was refused or failed). Called on node threads (an I/O
 * or worker thread), one event at a time (under the node's audit lock):
 * keep it short and do not call back into the node.
 */
typedef void (*aims_audit_fn)(void *user, int64_t unix_ms, aims_audit_action action,
                              const char *identity, const char *peer, const char *resource,
                              aims_status status, const char *detail);

/** @brief "join", "register", ... ("?" for an unknown value). @since 0.1 */
AIMS_API const char *aims_audit_action_name(aims_audit_action action);

/**
 * @brief Format one audit event as a JSON object line (with '\n'), escaped.
 * @return The length the line needs (without the NUL); it was written in
 *         full only if that is < @p cap (snprintf rule).
 * @since 0.1
 */
AIMS_API size_t aims_audit_json(char *buf, size_t cap, int64_t unix_ms, aims_audit_action action,
                                const char *identity, const char *peer, const char *resource,
                                aims_status status, const char *detail);

/**
 * @brief Enforce @p p on every request this node receives (NULL: no policy).
 * @param p Borrowed: must outlive the node or the next set call.
 * @param n  The node; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOMEM.
 * @note Call before aims_node_listen; safe later too (requests already admitted run on).
 * @since 0.1
 */
AIMS_API aims_status aims_node_set_policy(aims_node *n, const aims_policy *p);

/**
 * @brief Send this node's audit events to @p fn (NULL: none). Denials are
 *        rate-limited: at most 20 per second reach @p fn, and the next event
 *        after a burst says how many were dropped.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_node_set_audit(aims_node *n, aims_audit_fn fn, void *user);

AIMS_EXTERN_C_END

#endif
