/*
 * authz.c -- the node's door: aimsi_authz_check at request dispatch, who the
 * peer is, and the audit hook (aims_node_set_policy / aims_node_set_audit).
 *
 * One function decides every network request (node.c handle_request calls
 * aimsi_authz_check and nothing else), so the doors cannot drift apart. It
 * turns (service kind, method, request) into a policy action and resource:
 *
 *   registry  register             -> register  <"service" tensor>
 *   registry  publish              -> register  <"name"@"version" tensors>
 *     (records about a service -- its canary verdicts, its model and job
 *     events -- also by whoever may register the service: record_owner)
 *   registry  changes/heartbeat/deregister -> join aims.registry
 *   train     submit               -> train     <service>
 *   train     status/result/cancel -> jobs      <service>
 *   anything else                  -> call      <service>/<method>
 *   (optimize with "publish": also swap <"publish" tensor>)
 *
 * The caller is who the transport says (aimsi_authz_peer: "uid:N" for ipc://
 * via SO_PEERCRED, "anonymous" for plain tcp://; a TLS transport hands up its
 * certificate identity the same way), unless the request carries a "$auth"
 * JWT that verifies: then it is "jwt:<sub>" with the token's scopes. A token
 * that does not verify is a denial even if the transport identity would be
 * allowed -- a caller that presents a credential means it.
 *
 * Without a policy nothing is refused here (lease secrets and job handles,
 * in the services, still hold), but door events are still audited.
 *
 * State. The node owns one lazily created aimsi_authz, published with an
 * atomic pointer and freed only by node destroy, so dispatch reads it without
 * a lock. The policy pointer is atomic too. The audit hook runs under the
 * authz mutex: events reach it one at a time, in order, and a set_audit that
 * replaces it never races a call in progress. Denials pass a limiter (at most
 * AUDIT_DENY_PER_S per second; the next one emitted says how many were
 * dropped), so a flood of refused calls cannot fill an audit disk.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "aimsi_authz.h"
#include "../aimsi_node.h"
#include "../aimsi_life.h"
#include "../aimsi_wire.h"
#include "../../codec/aimsi_frame.h"

#define AUDIT_DENY_PER_S 20u

typedef struct aimsi_authz {
    _Atomic(const aims_policy *) policy;
    pthread_mutex_t mu;
    aims_audit_fn fn; /* mu */
    void *user;       /* mu */
    uint64_t window_ns;
    unsigned in_window;
    uint64_t dropped;
} aimsi_authz;

static aimsi_authz *authz_get(aims_node *n, int create)
{
    aimsi_authz *a = atomic_load(&n->authz);
    if (a != NULL || !create) {
        return a;
    }
    aimsi_authz *fresh = aimsi_calloc(1, sizeof(*fresh));
    if (fresh == NULL) {
        return NULL;
    }
    if (pthread_mutex_init(&fresh->mu, NULL) != 0) {
        aimsi_free(fresh);
        return NULL;
    }
    aimsi_authz *expected = NULL;
    if (!atomic_compare_exchange_strong(&n->authz, &expected, fresh)) {
        pthread_mutex_destroy(&fresh->mu);
        aimsi_free(fresh);
        return expected;
    }
    return fresh;
}

void aimsi_authz_free(aims_node *n)
{
    aimsi_authz *a = atomic_exchange(&n->authz, NULL);
    if (a != NULL) {
        pthread_mutex_destroy(&a->mu);
        aimsi_free(a);
    }
}

aims_status aims_node_set_policy(aims_node *n, const aims_policy *p)
{
    if (n == NULL || (p != NULL && !aimsi_obj_ok(p, AIMSI_MAGIC_POLICY))) {
        return AIMSI_MISUSE("node is NULL or policy is not a policy");
    }
    aimsi_authz *a = authz_get(n, 1);
    if (a == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_node_set_policy: out of memory");
    }
    atomic_store(&a->policy, p);
    return AIMS_OK;
}

aims_status aims_node_set_audit(aims_node *n, aims_audit_fn fn, void *user)
{
    if (n == NULL) {
        return AIMSI_MISUSE("node is NULL");
    }
    aimsi_authz *a = authz_get(n, 1);
    if (a == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_node_set_audit: out of memory");
    }
    pthread_mutex_lock(&a->mu);
    a->fn = fn;
    a->user = user;
    pthread_mutex_unlock(&a->mu);
    return AIMS_OK;
}

/* ---- audit -------------------------------------------------------------------------- */

const char *aims_audit_action_name(aims_audit_action action)
{
    switch (action) {
    case AIMS_AUDIT_JOIN: return "join";
    case AIMS_AUDIT_REGISTER: return "register";
    case AIMS_AUDIT_DEREGISTER: return "deregister";
    case AIMS_AUDIT_DENIED: return "denied";
    case AIMS_AUDIT_TRAIN_SUBMIT: return "train_submit";
    case AIMS_AUDIT_MODEL_SWAP: return "model_swap";
    case AIMS_AUDIT_RESULT: return "result";
    case AIMS_AUDIT_MODEL_LOAD: return "model_load";
    case AIMS_AUDIT_MODEL_UNLOAD: return "model_unload";
    case AIMS_AUDIT_MODEL_WEIGHT: return "model_weight";
    case AIMS_AUDIT_MODEL_ROLLBACK: return "model_rollback";
    case AIMS_AUDIT_MODEL_DEPLOY: return "model_deploy";
    case AIMS_AUDIT_MODEL_PROMOTE: return "model_promote";
    }
    return "?";
}

void aimsi_authz_audit(aims_node *n, aims_audit_action action, const char *identity,
                       const char *peer, const char *resource, aims_status status,
                       const char *detail)
{
    aimsi_authz *a = n != NULL ? authz_get(n, 0) : NULL;
    if (a == NULL) {
        return;
    }
    char more[AIMSI_ERRMSG_CAP + 64];
    pthread_mutex_lock(&a->mu);
    if (a->fn == NULL) {
        pthread_mutex_unlock(&a->mu);
        return;
    }
    if (action == AIMS_AUDIT_DENIED) {
        const uint64_t now = aimsi_now_ns();
        if (now - a->window_ns >= 1000000000u) {
            a->window_ns = now;
            a->in_window = 0;
        }
        if (a->in_window >= AUDIT_DENY_PER_S) {
            a->dropped++;
            pthread_mutex_unlock(&a->mu);
            return;
        }
        a->in_window++;
        if (a->dropped > 0) {
            snprintf(more, sizeof(more), "%s (+%llu similar denials not logged)",
                     detail != NULL ? detail : "", (unsigned long long)a->dropped);
            detail = more;
            a->dropped = 0;
        }
    }
    a->fn(a->user, (int64_t)(aimsi_realtime_ns() / 1000000u), action,
          identity != NULL ? identity : "", peer != NULL ? peer : "",
          resource != NULL ? resource : "", status, detail != NULL ? detail : "");
    pthread_mutex_unlock(&a->mu);
}

/* JSON string body, escaped (control bytes as \u00XX). */
static size_t json_str(char *buf, size_t cap, size_t at, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s != '\0'; s++) {
        const unsigned char c = (unsigned char)*s;
        char e[7];
        size_t k = 0;
        if (c == '"' || c == '\\') {
            e[k++] = '\\';
            e[k++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15u];
            k = 6;
        } else {
            e[k++] = (char)c;
        }
        for (size_t i = 0; i < k; i++, at++) {
            if (at + 1 < cap) {
                buf[at] = e[i];
            }
        }
    }
    return at;
}

static size_t json_raw(char *buf, size_t cap, size_t at, const char *s)
{
    for (; *s != '\0'; s++, at++) {
        if (at + 1 < cap) {
            buf[at] = *s;
        }
    }
    return at;
}

size_t aims_audit_json(char *buf, size_t cap, int64_t unix_ms, aims_audit_action action,
                       const char *identity, const char *peer, const char *resource,
                       aims_status status, const char *detail)
{
    char num[96];
    size_t at = 0;
    snprintf(num, sizeof(num), "{\"unix_ms\":%lld,\"action\":\"", (long long)unix_ms);
    at = json_raw(buf, cap, at, num);
    at = json_raw(buf, cap, at, aims_audit_action_name(action));
    at = json_raw(buf, cap, at, "\",\"identity\":\"");
    at = json_str(buf, cap, at, identity != NULL ? identity : "");
    at = json_raw(buf, cap, at, "\",\"peer\":\"");
    at = json_str(buf, cap, at, peer != NULL ? peer : "");
    at = json_raw(buf, cap, at, "\",\"resource\":\"");
    at = json_str(buf, cap, at, resource != NULL ? resource : "");
    snprintf(num, sizeof(num), "\",\"status\":%d,\"error\":\"", (int)status);
    at = json_raw(buf, cap, at, num);
    at = json_raw(buf, cap, at, status == AIMS_OK ? "" : aims_strerror(status));
    at = json_raw(buf, cap, at, "\",\"detail\":\"");
    at = json_str(buf, cap, at, detail != NULL ? detail : "");
    at = json_raw(buf, cap, at, "\"}\n");
    if (cap > 0) {
        buf[at < cap ? at : cap - 1] = '\0';
    }
    return at;
}

/* ---- the peer -------------------------------------------------------------------------- */

void aimsi_authz_peer(const char *scheme, void *tconn, char *id, size_t id_cap, char *addr,
                      size_t addr_cap)
{
    snprintf(id, id_cap, "anonymous");
    snprintf(addr, addr_cap, "%s://", scheme);
    const int is_ipc = strcmp(scheme, "ipc") == 0;
    const int is_tcp = strcmp(scheme, "tcp") == 0 || strcmp(scheme, "tls") == 0;
    if (!is_ipc && !is_tcp) {
        return; /* a host transport: it knows nothing we can ask */
    }
    const int fd = aimsi_stream_conn_fd(tconn);
    if (fd < 0) {
        return;
    }
    if (is_ipc) {
        struct ucred cr;
        socklen_t len = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0) {
            snprintf(id, id_cap, "uid:%u", (unsigned)cr.uid);
            snprintf(addr, addr_cap, "ipc://pid:%d", (int)cr.pid);
        }
        return;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            snprintf(addr, addr_cap, "%s://%s:%u", scheme, host, (unsigned)ntohs(in->sin_port));
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            snprintf(addr, addr_cap, "%s://[%s]:%u", scheme, host, (unsigned)ntohs(in6->sin6_port));
        }
    }
}

int aimsi_authz_admin(const aims_msg *m)
{
    int64_t v = 0;
    return aimsi_msg_int(m, AIMSI_ADMIN_TENSOR, &v) == AIMS_OK && v == 1;
}

/* ---- the check ----------------------------------------------------------------------------- */

/* A request's BYTES tensor as a bounded C string ("?" when absent or odd). */
static void req_text(const aims_msg *m, const char *name, char *out, size_t cap)
{
    const char *p = NULL;
    size_t len = 0;
    if (aimsi_msg_bytes(m, name, &p, &len) != AIMS_OK || len == 0 || len >= cap ||
        memchr(p, 0, len) != NULL) {
        snprintf(out, cap, "?");
        return;
    }
    memcpy(out, p, len);
    out[len] = '\0';
}

/* Records a node writes about a service it serves belong to that service, so
 * whoever may register <svc> may write them (docs/VERDICTS.md, "Who may
 * record"); owner gets "<svc>", or "" for any other name:
 *   publish  "<svc>/<ver>" @ "verdict" | "verdict-<id>"   a canary verdict (svc_verdict.c)
 *   register "aims.model/<svc>"                          a model event (svc_news.c)
 *   register "aims.job/<svc>/<job id>"                   a job event (svc_news.c)
 * ver: the publication's version, NULL for a registration. */
static void record_owner(const char *name, const char *ver, char *owner, size_t cap)
{
    const char *from = name, *to = NULL;
    owner[0] = '\0';
    if (ver != NULL) {
        if (strcmp(ver, "verdict") == 0 || strncmp(ver, "verdict-", 8) == 0) {
            to = strrchr(name, '/');
        }
    } else if (strncmp(name, "aims.model/", 11) == 0) {
        from = name + 11;
        to = from + strlen(from);
    } else if (strncmp(name, "aims.job/", 9) == 0) {
        from = name + 9;
        to = strrchr(from, '/');
    }
    if (to != NULL && to > from && (size_t)(to - from) < cap) {
        memcpy(owner, from, (size_t)(to - from));
        owner[to - from] = '\0';
    }
}

struct aimsi_door {
    aims_audit_action action;
    char *resource; /* points into identity's block */
    char identity[];
};

static aimsi_door *door_new(aims_audit_action action, const char *identity, const char *resource)
{
    const size_t il = strlen(identity) + 1, rl = strlen(resource) + 1;
    aimsi_door *d = aimsi_malloc(sizeof(*d) + il + rl);
    if (d != NULL) {
        d->action = action;
        memcpy(d->identity, identity, il);
        d->resource = d->identity + il;
        memcpy(d->resource, resource, rl);
    }
    return d;
}

void aimsi_authz_done(aims_node *n, aimsi_door *door, const char *peer_id, const char *peer_addr,
                      aims_status st, const char *err)
{
    if (door != NULL) {
        aimsi_authz_audit(n, st == AIMS_E_DENIED ? AIMS_AUDIT_DENIED : door->action,
                          door->identity, peer_addr, door->resource, st, err);
        aimsi_free(door);
    } else if (st == AIMS_E_DENIED) {
        aimsi_authz_audit(n, AIMS_AUDIT_DENIED, peer_id, peer_addr, "", st, err);
    }
}

aims_status aimsi_authz_check(aims_node *n, const char *peer_id, const char *peer_addr,
                              const char *kind, const char *service, const char *method,
                              aims_msg *m, const void *auth, size_t auth_len,
                              aimsi_door **door_out, char who[AIMSI_CALLER_MAX], char *why,
                              size_t why_cap)
{
    *door_out = NULL;
    /* Copied by hand: this runs for every request, and snprintf's format
     * machinery showed in the pipelined profile (P14). */
    const size_t wl = strnlen(peer_id, AIMSI_CALLER_MAX - 1);
    memcpy(who, peer_id, wl);
    who[wl] = '\0';
    const int swap = strcmp(kind, "infer") == 0 && strcmp(method, "swap") == 0;
    aims_audit_action life_door = 0; /* load, unload, ...: svc_life.c */
    const char *life = strcmp(kind, "infer") == 0 ? aimsi_life_action(method, &life_door) : NULL;
    const int guarded = swap || life != NULL;
    aimsi_authz *a = authz_get(n, 0);
    if (a == NULL && !guarded) {
        return AIMS_OK; /* no policy, no audit: the fast path */
    }
    /* the action and resource of this door */
    const char *action = "call";
    char resource[AIMSI_FRAME_MAX_SERVICE + AIMS_MSG_MAX_NAME + 2];
    aims_audit_action door = 0;
    char owner[AIMSI_FRAME_MAX_SERVICE + 1]; /* the service a record is about, or "" */
    owner[0] = '\0';
    snprintf(resource, sizeof(resource), "%s", service);
    if (strcmp(kind, "registry") == 0) {
        if (strcmp(method, "register") == 0) {
            action = "register";
            door = AIMS_AUDIT_REGISTER;
            req_text(m, "service", resource, sizeof(resource));
            record_owner(resource, NULL, owner, sizeof(owner));
        } else if (strcmp(method, "publish") == 0) {
            /* publishing name@version: whoever may register that name may */
            char ver[40];
            action = "register";
            door = AIMS_AUDIT_REGISTER;
            req_text(m, "name", resource, sizeof(resource) - sizeof(ver) - 1);
            req_text(m, "version", ver, sizeof(ver));
            record_owner(resource, ver, owner, sizeof(owner));
            strcat(strcat(resource, "@"), ver);
        } else {
            action = "join";
            if (strcmp(method, "deregister") == 0) {
                int64_t id = 0;
                door = AIMS_AUDIT_DEREGISTER;
                (void)aimsi_msg_int(m, "id", &id);
                snprintf(resource, sizeof(resource), "instance %lld", (long long)id);
            }
        }
    } else if (strcmp(kind, "train") == 0) {
        const int submit = strcmp(method, "submit") == 0;
        action = submit ? "train" : "jobs";
        door = submit ? AIMS_AUDIT_TRAIN_SUBMIT
                      : strcmp(method, "result") == 0 ? AIMS_AUDIT_RESULT : 0;
    } else if (swap) {
        action = "swap";
        door = AIMS_AUDIT_MODEL_SWAP;
    } else if (life != NULL) {
        action = life;
        door = life_door;
    } else {
        snprintf(resource, sizeof(resource), "%s/%s", service, method);
    }
    const aims_policy *p = a != NULL ? atomic_load(&a->policy) : NULL;
    char identity[AIMSI_CALLER_MAX];
    snprintf(identity, sizeof(identity), "%s", peer_id);
    aims_status rc = AIMS_OK;
    if (p == NULL && guarded) { /* a model change over the wire needs a rule allowing it */
        snprintf(why, why_cap, "a model %s over the wire needs a policy allowing '%s' on "
                               "'%s' (docs/POLICY.md); none is set on this node", action, action,
                 service);
        rc = AIMS_E_DENIED;
    } else if (p != NULL) {
        aimsi_jwt_claims cl;
        cl.scope[0] = '\0';
        const char *scopes = NULL;
        if (auth != NULL) {
            char err[200];
            rc = aimsi_jwt_check(&p->jwt, auth, auth_len,
                                  (int64_t)(aimsi_realtime_ns() / 1000000000u), &cl, err,
                                  sizeof(err));
            if (rc != AIMS_OK) {
                snprintf(why, why_cap, "%s (\"$auth\" from %s)", err, peer_id);
                rc = AIMS_E_DENIED;
            } else {
                snprintf(identity, sizeof(identity), "jwt:%s", cl.sub);
                scopes = cl.scope;
            }
        }
        if (rc == AIMS_OK) {
            /* a deregister is audited as "instance N" but decided as join
             * aims.registry (docs/POLICY.md), like heartbeat and changes */
            const int dereg = door == AIMS_AUDIT_DEREGISTER;
            rc = aimsi_policy_decide_owned(p, identity, scopes, action,
                                           dereg ? service : resource,
                                           owner[0] != '\0' ? owner : NULL, why, why_cap);
        }
        size_t pi = 0; /* an optimize that publishes also swaps its target's model */
        if (rc == AIMS_OK && strcmp(kind, "optimize") == 0 &&
            aims_msg_find(m, "publish", &pi) == AIMS_OK) {
            req_text(m, "publish", resource, sizeof(resource));
            rc = aimsi_policy_decide(p, identity, scopes, "swap", resource, why, why_cap);
        }
        if (rc == AIMS_OK && (strcmp(kind, "registry") == 0 || strcmp(kind, "train") == 0) &&
            aimsi_policy_is_admin(p, identity, scopes)) {
            const int32_t one = 1;
            rc = aims_msg_add(m, AIMSI_ADMIN_TENSOR, AIMS_DT_I32, NULL, 0, &one, 0);
            if (rc != AIMS_OK) {
                snprintf(why, why_cap, "out of memory");
            }
        }
    }
    snprintf(who, AIMSI_CALLER_MAX, "%s", identity);
    if (rc != AIMS_OK) {
        aimsi_authz_audit(n, AIMS_AUDIT_DENIED, identity, peer_addr, resource, rc, why);
    } else if (door != 0) {
        /* audited when the outcome is known; without memory, now */
        *door_out = door_new(door, identity, resource);
        if (*door_out == NULL) {
            aimsi_authz_audit(n, door, identity, peer_addr, resource, AIMS_OK, "admitted");
        }
    }
    return rc;
}
