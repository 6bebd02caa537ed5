/*
 * aimsi_authz.h -- private to src/svc: the policy object's layout, the JWT
 * verifier (jwt.c, the only file here that calls OpenSSL) and the node-side
 * door (authz.c: aimsi_authz_check, audit).
 */
#ifndef AIMSI_AUTHZ_H
#define AIMSI_AUTHZ_H

#include <stddef.h>
#include <stdint.h>

#include "aims/aims_policy.h"
#include "aims/aims_svc.h"
#include "../../core/aimsi_core.h"

#define AIMSI_AUTH_TENSOR "$auth"
/* Added by the door (never accepted from the network) to a registry or train
 * request from an admin identity: lease secrets and job handles are waived. */
#define AIMSI_ADMIN_TENSOR "$admin"
#define AIMSI_JWT_MAX 8192u
#define AIMSI_ID_MAX 160u
/* Room for a caller identity ("jwt:" + sub, a certificate name, "uid:N"). */
#define AIMSI_CALLER_MAX (AIMSI_ID_MAX + 8u)

/* ---- policy (policy.c) --------------------------------------------------- */

typedef enum { RULE_ALLOW = 1, RULE_DENY = 2, RULE_ADMIN = 3 } aimsi_rule_kind;

typedef struct aimsi_rule {
    int kind;
    char *ident;    /* glob */
    char *action;   /* "register", ..., "*" */
    char *resource; /* glob */
    char *where;    /* "file:line" */
} aimsi_rule;

/* JWT configuration (set by the policy file or the public setters). */
typedef struct aimsi_jwt_cfg {
    unsigned char *hs_key;
    size_t hs_len;
    void *es_key;      /* EVP_PKEY * (jwt.c), NULL if none */
    char *audience;
    char *issuer;
    int leeway_s;
    struct aimsi_jwt_cache *cache; /* verified tokens (jwt.c); NULL: no caching */
} aimsi_jwt_cfg;

struct aims_policy {
    aimsi_obj obj;
    aimsi_rule *rules;
    size_t n, cap;
    aimsi_jwt_cfg jwt;
};

#define AIMSI_MAGIC_POLICY 0x41504f31u /* "APO1" */

/* Glob match: '*' any run (also empty), '?' one byte, everything else itself. */
int aimsi_glob(const char *pat, const char *s);

/* Decide for a principal: identity plus its token scopes (space-separated,
 * may be NULL). Writes the reason for a denial into why. */
aims_status aimsi_policy_decide(const aims_policy *p, const char *identity, const char *scopes,
                                const char *action, const char *resource, char *why,
                                size_t why_cap);

/* aimsi_policy_decide for a resource that also goes by its owner's name (a
 * canary verdict record "<svc>/<ver>@verdict-<id>" and its service "<svc>",
 * docs/VERDICTS.md): allowed when an allow rule matches either name and no
 * deny rule matches either. */
aims_status aimsi_policy_decide_owned(const aims_policy *p, const char *identity,
                                      const char *scopes, const char *action,
                                      const char *resource, const char *owner, char *why,
                                      size_t why_cap);

/* Is the principal an admin of p (an "admin" rule matches it)? */
int aimsi_policy_is_admin(const aims_policy *p, const char *identity, const char *scopes);
/* Does request m carry the door's "$admin" mark? */
int aimsi_authz_admin(const aims_msg *m);

/* ---- JWT (jwt.c) -------------------------------------------------------------- */

typedef struct aimsi_jwt_claims {
    char sub[AIMSI_ID_MAX];
    char scope[512]; /* "scope" claim (space-separated), or "scp"/"scopes" array joined */
    int64_t exp;
} aimsi_jwt_claims;

/* Verify token[0..len) with cfg at unix time now_s. AIMS_OK fills *out;
 * AIMS_E_DENIED / AIMS_E_CORRUPT / AIMS_E_UNSUPPORTED with the reason in err. */
aims_status aimsi_jwt_verify(const aimsi_jwt_cfg *cfg, const char *token, size_t len,
                             int64_t now_s, aimsi_jwt_claims *out, char *err, size_t err_cap);
/* aimsi_jwt_verify through cfg's cache of verified tokens: a token seen
 * before (same SHA-256) and still within exp + leeway (and at most 300 s
 * since it was verified) is not verified again. Only successes are cached. */
aims_status aimsi_jwt_check(const aimsi_jwt_cfg *cfg, const char *token, size_t len,
                            int64_t now_s, aimsi_jwt_claims *out, char *err, size_t err_cap);
/* Give cfg a cache (policy create; AIMS_E_NOMEM) / forget every entry (the
 * keys or claims changed). */
aims_status aimsi_jwt_cache_new(aimsi_jwt_cfg *cfg);
void aimsi_jwt_cache_clear(aimsi_jwt_cfg *cfg);
/* Parse a PEM P-256 public key into cfg->es_key (replacing one). */
aims_status aimsi_jwt_set_es256(aimsi_jwt_cfg *cfg, const char *pem, size_t len, char *err,
                                size_t err_cap);
/* Free what cfg holds (not cfg itself). */
void aimsi_jwt_cfg_free(aimsi_jwt_cfg *cfg);
/* base64url without padding -> bytes; -1 on a bad character or length. */
long aimsi_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* ---- the node's door (authz.c) ---------------------------------------------------- */

/* An admitted request whose outcome is to be audited (register, deregister,
 * train submit, result): who, what, which action. */
typedef struct aimsi_door aimsi_door;

/* The one check at request dispatch (node.c handle_request). peer_id is what
 * the transport says ("uid:1000", "anonymous"), peer_addr where it came from;
 * kind the service kind ("registry", "train", ...); m the request (without
 * any '$' tensor); auth/auth_len the "$auth" tensor bytes or NULL. AIMS_OK
 * admits (and *door may hold a record for aimsi_authz_done; an admin's
 * registry or train request gets "$admin" added to m) and who names the
 * caller for the handler (aims_msg_caller: the verified token's "jwt:<sub>"
 * or peer_id); otherwise the status and why (for the ERROR frame) -- and the
 * denial is audited. */
aims_status aimsi_authz_check(aims_node *n, const char *peer_id, const char *peer_addr,
                              const char *kind, const char *service, const char *method,
                              aims_msg *m, const void *auth, size_t auth_len,
                              aimsi_door **door, char who[AIMSI_CALLER_MAX], char *why,
                              size_t why_cap);
/* The request finished with st (err: its message): audit the door event with
 * its real outcome, or a denial by the service (wrong lease secret or job
 * handle); frees door (may be NULL). */
void aimsi_authz_done(aims_node *n, aimsi_door *door, const char *peer_id, const char *peer_addr,
                      aims_status st, const char *err);
/* Audit one event on node n (no-op without a hook); denials are rate-limited. */
void aimsi_authz_audit(aims_node *n, aims_audit_action action, const char *identity,
                       const char *peer, const char *resource, aims_status status,
                       const char *detail);
/* Free the node's authz state (node destroy). */
void aimsi_authz_free(aims_node *n);
/* Who is on the other end of an accepted built-in stream connection (tcp, ipc):
 * identity ("uid:N" via SO_PEERCRED, else "anonymous") and address. */
void aimsi_authz_peer(const char *scheme, void *tconn, char *id, size_t id_cap, char *addr,
                      size_t addr_cap);
/* stream.c: the socket of a built-in stream connection. */
int aimsi_stream_conn_fd(void *tconn);

#endif
