/*
 * policy.c -- aims_policy: rules loaded from a small text format
 * (docs/POLICY.md), decided by glob matching.
 *
 * Why a format of our own: a policy is a handful of lines an operator writes
 * and reviews ("allow uid:1000 register echo*"), and a file-and-line error is
 * worth more than the expressiveness of a general language. One rule per
 * line, whitespace-separated fields, '#' comments:
 *
 *   admin IDENTITY                      -- may do everything
 *   allow IDENTITY ACTION RESOURCE
 *   deny  IDENTITY ACTION RESOURCE
 *   jwt-hs256-key-file PATH | jwt-es256-key-file PATH
 *   jwt-audience AUD | jwt-issuer ISS | jwt-leeway SECONDS
 *
 * IDENTITY and RESOURCE are globs ('*', '?'); ACTION is one of register,
 * join, call, train, jobs, swap, load, unload, rollback, weight, deploy
 * (the model lifecycle, aims_lifecycle.h) or '*'. An IDENTITY "scope:NAME" matches a
 * JWT caller whose token carries scope NAME.
 *
 * Decision: "host" (in-process callers) and admins are allowed everything;
 * else a matching deny rule denies (whatever the order), else a matching allow
 * rule allows, else denied -- deny by default. Order never matters, so a rule
 * appended later cannot silently shadow an earlier deny.
 *
 * Loading is all or nothing: a text is parsed into a scratch policy, and only
 * a fully valid one is appended (a half-loaded policy would be a different
 * policy from the one written). Parsers trust nothing: lines are capped at
 * 1024 bytes, a file at 1 MiB, rules at 4096, fields must be printable ASCII.
 * Key files named by a relative path are read relative to the policy file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_authz.h"
#include "../aimsi_wire.h"

#define LINE_MAX_BYTES 1024u
#define FILE_MAX_BYTES (1u << 20)
#define RULES_MAX 4096u
#define FIELD_MAX 256u
#define KEYFILE_MAX 65536u
#define LEEWAY_DEFAULT 30
#define LEEWAY_MAX 600

static const char *const k_actions[] = {"register", "join",   "call",     "train",  "jobs", "swap",
                                        "load",     "unload", "rollback", "weight", "deploy", "*"};

#define POLICY_OK(p) aimsi_obj_ok((p), AIMSI_MAGIC_POLICY)

/* ---- glob ---------------------------------------------------------------------- */

int aimsi_glob(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s != '\0') {
        if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (*pat == '?' || *pat == *s) {
            pat++;
            s++;
        } else if (star != NULL) {
            pat = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*pat == '*') {
        pat++;
    }
    return *pat == '\0';
}

/* ---- lifecycle ------------------------------------------------------------------- */

static void rules_free(aimsi_rule *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        aimsi_free(r[i].ident);
        aimsi_free(r[i].action);
        aimsi_free(r[i].resource);
        aimsi_free(r[i].where);
    }
}

aims_status aims_policy_create(aims_policy **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_policy *p = aimsi_calloc(1, sizeof(*p));
    if (p == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_policy_create: out of memory");
    }
    aimsi_obj_init(&p->obj, AIMSI_MAGIC_POLICY);
    p->jwt.leeway_s = LEEWAY_DEFAULT;
    const aims_status rc = aimsi_jwt_cache_new(&p->jwt);
    if (rc != AIMS_OK) {
        aimsi_free(p);
        return rc;
    }
    *out = p;
    return AIMS_OK;
}

void aims_policy_destroy(aims_policy *p)
{
    if (!POLICY_OK(p)) {
        return;
    }
    rules_free(p->rules, p->n);
    aimsi_free(p->rules);
    aimsi_jwt_cfg_free(&p->jwt);
    aimsi_obj_kill(&p->obj);
    aimsi_free(p);
}

const char *aims_policy_errmsg(const aims_policy *p)
{
    return POLICY_OK(p) ? p->obj.errmsg : "";
}

/* ---- parsing ------------------------------------------------------------------------ */

typedef struct parse_ctx {
    aims_policy *p;    /* the caller's policy (errors are recorded on it) */
    aims_policy tmp;   /* what this text adds (rules, jwt settings) */
    const char *name;  /* file name for messages */
    const char *dir;   /* directory of the file, or NULL */
    size_t dir_len;
    unsigned line;
    int set_hs, set_es, set_aud, set_iss, set_leeway;
} parse_ctx;

#define BAD(ctx, code, ...) parse_err((ctx), (code), __VA_ARGS__)

static aims_status parse_err(parse_ctx *ctx, aims_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static aims_status parse_err(parse_ctx *ctx, aims_status code, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return aimsi_err(&ctx->p->obj, code, "%s:%u: %s", ctx->name, ctx->line, msg);
}

/* Split a line in place into at most cap fields; returns the count, or
 * cap + 1 when there are more. A '#' at the start of a field ends the line. */
static size_t split(char *line, char **f, size_t cap)
{
    size_t n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r') {
            p++;
        }
        if (*p == '\0' || *p == '#') {
            return n;
        }
        if (n == cap) {
            return cap + 1;
        }
        f[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r') {
            p++;
        }
        if (*p != '\0') {
            *p++ = '\0';
        }
    }
}

static aims_status check_field(parse_ctx *ctx, const char *what, const char *s)
{
    const size_t len = strlen(s);
    if (len > FIELD_MAX) {
        return BAD(ctx, AIMS_E_CORRUPT, "%s is longer than %u bytes", what, FIELD_MAX);
    }
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e) {
            return BAD(ctx, AIMS_E_CORRUPT, "%s contains byte 0x%02x (printable ASCII only)",
                       what, c);
        }
    }
    return AIMS_OK;
}

static aims_status add_rule(parse_ctx *ctx, int kind, const char *ident, const char *action,
                            const char *resource)
{
    aims_policy *t = &ctx->tmp;
    if (ctx->p->n + t->n >= RULES_MAX) {
        return BAD(ctx, AIMS_E_RANGE, "more than %u rules", RULES_MAX);
    }
    AIMSI_TRY(check_field(ctx, "identity", ident));
    AIMSI_TRY(check_field(ctx, "resource", resource));
    int known = 0;
    for (size_t i = 0; i < sizeof(k_actions) / sizeof(k_actions[0]); i++) {
        known |= strcmp(action, k_actions[i]) == 0;
    }
    if (!known) {
        return BAD(ctx, AIMS_E_CORRUPT, "unknown action '%.64s' (register, join, call, train, "
                   "jobs, swap or *)", action);
    }
    if (aimsi_grow((void **)&t->rules, &t->cap, t->n, sizeof(*t->rules), 16) != 0) {
        return BAD(ctx, AIMS_E_NOMEM, "out of memory");
    }
    char where[300];
    snprintf(where, sizeof(where), "%s:%u", ctx->name, ctx->line);
    aimsi_rule r = {kind, aimsi_strdup(ident), aimsi_strdup(action), aimsi_strdup(resource),
                    aimsi_strdup(where)};
    if (r.ident == NULL || r.action == NULL || r.resource == NULL || r.where == NULL) {
        rules_free(&r, 1);
        return BAD(ctx, AIMS_E_NOMEM, "out of memory");
    }
    t->rules[t->n++] = r;
    return AIMS_OK;
}

/* Read a whole file of at most max bytes (NUL-terminated copy). */
static aims_status read_file(const char *path, size_t max, char **out, size_t *out_len,
                             char *err, size_t err_cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, err_cap, "cannot open %s: %s", path, strerror(errno));
        return AIMS_E_IO;
    }
    char *buf = aimsi_malloc(max + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(err, err_cap, "out of memory");
        return AIMS_E_NOMEM;
    }
    const size_t n = fread(buf, 1, max + 1, f);
    const int bad = ferror(f);
    fclose(f);
    if (bad || n > max) {
        aimsi_free(buf);
        snprintf(err, err_cap, bad ? "cannot read %s" : "%s is larger than %zu bytes", path, max);
        return bad ? AIMS_E_IO : AIMS_E_RANGE;
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return AIMS_OK;
}

static aims_status key_file(parse_ctx *ctx, const char *arg, char **out, size_t *len)
{
    char path[1200];
    if (arg[0] != '/' && ctx->dir != NULL) {
        snprintf(path, sizeof(path), "%.*s/%s", (int)ctx->dir_len, ctx->dir, arg);
    } else {
        snprintf(path, sizeof(path), "%s", arg);
    }
    char err[300];
    const aims_status rc = read_file(path, KEYFILE_MAX, out, len, err, sizeof(err));
    return rc == AIMS_OK ? AIMS_OK : BAD(ctx, rc, "%s", err);
}

static aims_status set_str(parse_ctx *ctx, char **slot, const char *v, int *flag)
{
    AIMSI_TRY(check_field(ctx, "value", v));
    char *d = aimsi_strdup(v);
    if (d == NULL) {
        return BAD(ctx, AIMS_E_NOMEM, "out of memory");
    }
    aimsi_free(*slot);
    *slot = d;
    *flag = 1;
    return AIMS_OK;
}

static aims_status jwt_directive(parse_ctx *ctx, const char *key, const char *v)
{
    aimsi_jwt_cfg *j = &ctx->tmp.jwt;
    if (strcmp(key, "jwt-audience") == 0) {
        return set_str(ctx, &j->audience, v, &ctx->set_aud);
    }
    if (strcmp(key, "jwt-issuer") == 0) {
        return set_str(ctx, &j->issuer, v, &ctx->set_iss);
    }
    if (strcmp(key, "jwt-leeway") == 0) {
        char *end = NULL;
        const long s = strtol(v, &end, 10);
        if (end == v || *end != '\0' || s < 0 || s > LEEWAY_MAX) {
            return BAD(ctx, AIMS_E_CORRUPT, "jwt-leeway must be 0..%d seconds", LEEWAY_MAX);
        }
        j->leeway_s = (int)s;
        ctx->set_leeway = 1;
        return AIMS_OK;
    }
    char *bytes = NULL;
    size_t len = 0;
    AIMSI_TRY(key_file(ctx, v, &bytes, &len));
    aims_status rc = AIMS_OK;
    if (strcmp(key, "jwt-hs256-key-file") == 0) {
        while (len > 0 && (bytes[len - 1] == '\n' || bytes[len - 1] == '\r')) {
            len--; /* a key written with echo keeps its newline out of the key */
        }
        if (len < 32 || len > 1024) {
            rc = BAD(ctx, AIMS_E_RANGE, "HS256 key in %s is %zu bytes (32..1024)", v, len);
        } else {
            aimsi_free(j->hs_key);
            j->hs_key = (unsigned char *)bytes;
            j->hs_len = len;
            bytes = NULL;
            ctx->set_hs = 1;
        }
    } else {
        char err[200];
        rc = aimsi_jwt_set_es256(j, bytes, len, err, sizeof(err));
        if (rc != AIMS_OK) {
            rc = BAD(ctx, rc, "%s: %s", v, err);
        } else {
            ctx->set_es = 1;
        }
    }
    aimsi_free(bytes);
    return rc;
}

static aims_status parse_line(parse_ctx *ctx, char *line)
{
    char *f[5];
    const size_t n = split(line, f, 4);
    if (n == 0) {
        return AIMS_OK;
    }
    if (n > 4) {
        return BAD(ctx, AIMS_E_CORRUPT, "too many fields");
    }
    if (strcmp(f[0], "admin") == 0) {
        if (n != 2) {
            return BAD(ctx, AIMS_E_CORRUPT, "'admin' takes one identity");
        }
        return add_rule(ctx, RULE_ADMIN, f[1], "*", "*");
    }
    if (strcmp(f[0], "allow") == 0 || strcmp(f[0], "deny") == 0) {
        if (n != 4) {
            return BAD(ctx, AIMS_E_CORRUPT, "'%s' takes IDENTITY ACTION RESOURCE", f[0]);
        }
        return add_rule(ctx, f[0][0] == 'a' ? RULE_ALLOW : RULE_DENY, f[1], f[2], f[3]);
    }
    if (strcmp(f[0], "jwt-hs256-key-file") == 0 || strcmp(f[0], "jwt-es256-key-file") == 0 ||
        strcmp(f[0], "jwt-audience") == 0 || strcmp(f[0], "jwt-issuer") == 0 ||
        strcmp(f[0], "jwt-leeway") == 0) {
        if (n != 2) {
            return BAD(ctx, AIMS_E_CORRUPT, "'%s' takes one value", f[0]);
        }
        return jwt_directive(ctx, f[0], f[1]);
    }
    return BAD(ctx, AIMS_E_CORRUPT, "unknown directive '%.64s' (admin, allow, deny, jwt-...)",
               f[0]);
}

/* Move what ctx->tmp holds into the policy (cannot fail). */
static void commit(parse_ctx *ctx)
{
    aims_policy *p = ctx->p, *t = &ctx->tmp;
    aimsi_jwt_cfg *pj = &p->jwt, *tj = &t->jwt;
    if (t->n > 0) { /* an empty text has no rules array (memcpy from NULL is UB) */
        memcpy(p->rules + p->n, t->rules, t->n * sizeof(*t->rules));
    }
    p->n += t->n;
    t->n = 0;
    if (ctx->set_hs) {
        aimsi_free(pj->hs_key);
        pj->hs_key = tj->hs_key;
        pj->hs_len = tj->hs_len;
        tj->hs_key = NULL;
    }
    if (ctx->set_es) {
        void *old = pj->es_key;
        pj->es_key = tj->es_key;
        tj->es_key = old; /* freed with the scratch policy */
    }
    if (ctx->set_aud) {
        aimsi_free(pj->audience);
        pj->audience = tj->audience;
        tj->audience = NULL;
    }
    if (ctx->set_iss) {
        aimsi_free(pj->issuer);
        pj->issuer = tj->issuer;
        tj->issuer = NULL;
    }
    if (ctx->set_leeway) {
        pj->leeway_s = tj->leeway_s;
    }
    if (ctx->set_hs || ctx->set_es || ctx->set_aud || ctx->set_iss || ctx->set_leeway) {
        aimsi_jwt_cache_clear(pj);
    }
}

static aims_status load_text(aims_policy *p, const char *text, size_t len, const char *name,
                             const char *dir, size_t dir_len)
{
    parse_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.p = p;
    ctx.name = name;
    ctx.dir = dir;
    ctx.dir_len = dir_len;
    aims_status rc = AIMS_OK;
    char line[LINE_MAX_BYTES + 1];
    size_t pos = 0;
    while (rc == AIMS_OK && pos < len) {
        ctx.line++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        const size_t ll = nl != NULL ? (size_t)(nl - (text + pos)) : len - pos;
        if (ll > LINE_MAX_BYTES) {
            rc = BAD(&ctx, AIMS_E_RANGE, "line longer than %u bytes", LINE_MAX_BYTES);
        } else if (memchr(text + pos, '\0', ll) != NULL) {
            rc = BAD(&ctx, AIMS_E_CORRUPT, "NUL byte in the line");
        } else {
            memcpy(line, text + pos, ll);
            line[ll] = '\0';
            rc = parse_line(&ctx, line);
        }
        pos += ll + 1;
    }
    if (rc == AIMS_OK && ctx.tmp.n > 0) {
        aimsi_rule *g = aimsi_realloc(p->rules, (p->n + ctx.tmp.n) * sizeof(*g));
        if (g == NULL) {
            rc = aimsi_err(&p->obj, AIMS_E_NOMEM, "%s: out of memory", name);
        } else {
            p->rules = g;
            p->cap = p->n + ctx.tmp.n;
        }
    }
    if (rc == AIMS_OK) {
        commit(&ctx);
    }
    rules_free(ctx.tmp.rules, ctx.tmp.n);
    aimsi_free(ctx.tmp.rules);
    aimsi_jwt_cfg_free(&ctx.tmp.jwt);
    return rc;
}

aims_status aims_policy_load_string(aims_policy *p, const char *text, const char *name)
{
    if (!POLICY_OK(p) || text == NULL) {
        return AIMSI_MISUSE("policy or text is NULL");
    }
    const size_t len = strlen(text);
    if (len > FILE_MAX_BYTES) {
        return aimsi_err(&p->obj, AIMS_E_RANGE, "policy text is larger than %u bytes",
                         FILE_MAX_BYTES);
    }
    return load_text(p, text, len, name != NULL ? name : "<string>", NULL, 0);
}

aims_status aims_policy_load_file(aims_policy *p, const char *path)
{
    if (!POLICY_OK(p) || path == NULL) {
        return AIMSI_MISUSE("policy or path is NULL");
    }
    char *text = NULL;
    size_t len = 0;
    char err[300];
    const aims_status rc = read_file(path, FILE_MAX_BYTES, &text, &len, err, sizeof(err));
    if (rc != AIMS_OK) {
        return aimsi_err(&p->obj, rc, "policy: %s", err);
    }
    const char *slash = strrchr(path, '/');
    const aims_status lr = load_text(p, text, len, path, slash != NULL ? path : NULL,
                                     slash != NULL ? (size_t)(slash - path) : 0);
    aimsi_free(text);
    return lr;
}

/* ---- deciding ----------------------------------------------------------------------- */

static int has_scope(const char *scopes, const char *pat)
{
    if (scopes == NULL) {
        return 0;
    }
    char one[FIELD_MAX + 1];
    const char *s = scopes;
    while (*s != '\0') {
        while (*s == ' ') {
            s++;
        }
        size_t k = 0;
        while (s[k] != '\0' && s[k] != ' ') {
            k++;
        }
        if (k > 0 && k <= FIELD_MAX) {
            memcpy(one, s, k);
            one[k] = '\0';
            if (aimsi_glob(pat, one)) {
                return 1;
            }
        }
        s += k;
    }
    return 0;
}

static int ident_matches(const aimsi_rule *r, const char *identity, const char *scopes)
{
    if (strncmp(r->ident, "scope:", 6) == 0) {
        return has_scope(scopes, r->ident + 6);
    }
    return aimsi_glob(r->ident, identity);
}

/* The decision over one resource, or two names of one resource (owner non-NULL:
 * a canary verdict record and the service it belongs to, aimsi_policy_decide_owned):
 * an allow rule matching either admits, a deny rule matching either refuses. */
static aims_status decide(const aims_policy *p, const char *identity, const char *scopes,
                          const char *action, const char *resource, const char *owner,
                          char *why, size_t why_cap)
{
    if (strcmp(identity, "host") == 0) {
        return AIMS_OK;
    }
    const aimsi_rule *allow = NULL, *deny = NULL;
    for (size_t i = 0; i < p->n; i++) {
        const aimsi_rule *r = &p->rules[i];
        if (!ident_matches(r, identity, scopes)) {
            continue;
        }
        if (r->kind == RULE_ADMIN) {
            return AIMS_OK;
        }
        if ((strcmp(r->action, "*") == 0 || strcmp(r->action, action) == 0) &&
            (aimsi_glob(r->resource, resource) ||
             (owner != NULL && aimsi_glob(r->resource, owner)))) {
            if (r->kind == RULE_DENY && deny == NULL) {
                deny = r;
            } else if (r->kind == RULE_ALLOW && allow == NULL) {
                allow = r;
            }
        }
    }
    if (deny == NULL && allow != NULL) {
        return AIMS_OK;
    }
    if (why != NULL && why_cap > 0) {
        char also[200] = "";
        if (owner != NULL) {
            snprintf(also, sizeof(also), " nor on its service '%.140s'", owner);
        }
        if (deny != NULL) {
            snprintf(why, why_cap, "policy: '%.160s' may not %s '%.160s' (denied by %s)",
                     identity, action, resource, deny->where);
        } else {
            snprintf(why, why_cap, "policy: '%.160s' may not %s '%.160s'%s (no rule allows it)",
                     identity, action, resource, also);
        }
    }
    return AIMS_E_DENIED;
}

aims_status aimsi_policy_decide(const aims_policy *p, const char *identity, const char *scopes,
                                const char *action, const char *resource, char *why,
                                size_t why_cap)
{
    return decide(p, identity, scopes, action, resource, NULL, why, why_cap);
}

aims_status aimsi_policy_decide_owned(const aims_policy *p, const char *identity,
                                      const char *scopes, const char *action,
                                      const char *resource, const char *owner, char *why,
                                      size_t why_cap)
{
    return decide(p, identity, scopes, action, resource, owner, why, why_cap);
}

int aimsi_policy_is_admin(const aims_policy *p, const char *identity, const char *scopes)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->rules[i].kind == RULE_ADMIN && ident_matches(&p->rules[i], identity, scopes)) {
            return 1;
        }
    }
    return 0;
}

aims_status aims_policy_check(const aims_policy *p, const char *identity, const char *action,
                              const char *resource)
{
    if (!POLICY_OK(p) || identity == NULL || action == NULL || resource == NULL) {
        return AIMSI_MISUSE("policy, identity, action or resource is NULL");
    }
    char why[AIMSI_ERRMSG_CAP];
    const aims_status rc = aimsi_policy_decide(p, identity, NULL, action, resource, why,
                                               sizeof(why));
    if (rc != AIMS_OK) {
        /* const object: the detail goes to the thread-local message only */
        return aimsi_err(NULL, rc, "%s", why);
    }
    return AIMS_OK;
}

/* ---- JWT settings ------------------------------------------------------------------------ */

aims_status aims_policy_set_jwt_hs256(aims_policy *p, const void *key, size_t len)
{
    if (!POLICY_OK(p) || key == NULL) {
        return AIMSI_MISUSE("policy or key is NULL");
    }
    if (len < 32 || len > 1024) {
        return aimsi_err(&p->obj, AIMS_E_RANGE, "HS256 key of %zu bytes (32..1024)", len);
    }
    unsigned char *k = aimsi_malloc(len);
    if (k == NULL) {
        return aimsi_err(&p->obj, AIMS_E_NOMEM, "aims_policy_set_jwt_hs256: out of memory");
    }
    memcpy(k, key, len);
    if (p->jwt.hs_key != NULL) {
        memset(p->jwt.hs_key, 0, p->jwt.hs_len);
    }
    aimsi_free(p->jwt.hs_key);
    p->jwt.hs_key = k;
    p->jwt.hs_len = len;
    aimsi_jwt_cache_clear(&p->jwt);
    return AIMS_OK;
}

aims_status aims_policy_set_jwt_es256(aims_policy *p, const char *pem)
{
    if (!POLICY_OK(p) || pem == NULL) {
        return AIMSI_MISUSE("policy or pem is NULL");
    }
    char err[200];
    const aims_status rc = aimsi_jwt_set_es256(&p->jwt, pem, strlen(pem), err, sizeof(err));
    aimsi_jwt_cache_clear(&p->jwt);
    return rc == AIMS_OK ? AIMS_OK : aimsi_err(&p->obj, rc, "aims_policy_set_jwt_es256: %s", err);
}

aims_status aims_policy_set_jwt_claims(aims_policy *p, const char *audience, const char *issuer,
                                       int leeway_s)
{
    if (!POLICY_OK(p)) {
        return AIMSI_MISUSE("policy is NULL");
    }
    if (leeway_s < 0 || leeway_s > LEEWAY_MAX ||
        (audience != NULL && (audience[0] == '\0' || strlen(audience) > FIELD_MAX)) ||
        (issuer != NULL && (issuer[0] == '\0' || strlen(issuer) > FIELD_MAX))) {
        return aimsi_err(&p->obj, AIMS_E_RANGE, "aims_policy_set_jwt_claims: leeway 0..%d s, "
                         "audience and issuer 1..%u bytes or NULL", LEEWAY_MAX, FIELD_MAX);
    }
    char *a = audience != NULL ? aimsi_strdup(audience) : NULL;
    char *i = issuer != NULL ? aimsi_strdup(issuer) : NULL;
    if ((audience != NULL && a == NULL) || (issuer != NULL && i == NULL)) {
        aimsi_free(a);
        aimsi_free(i);
        return aimsi_err(&p->obj, AIMS_E_NOMEM, "aims_policy_set_jwt_claims: out of memory");
    }
    aimsi_free(p->jwt.audience);
    aimsi_free(p->jwt.issuer);
    p->jwt.audience = a;
    p->jwt.issuer = i;
    p->jwt.leeway_s = leeway_s;
    aimsi_jwt_cache_clear(&p->jwt);
    return AIMS_OK;
}

aims_status aims_policy_verify_token(const aims_policy *p, const char *token, char *identity,
                                     size_t cap)
{
    if (!POLICY_OK(p) || token == NULL || identity == NULL) {
        return AIMSI_MISUSE("policy, token or identity is NULL");
    }
    aimsi_jwt_claims cl;
    char err[200];
    const aims_status rc = aimsi_jwt_check(&p->jwt, token, strnlen(token, AIMSI_JWT_MAX + 1),
                                            aimsi_realtime_ns() / 1000000000, &cl, err,
                                            sizeof(err));
    if (rc != AIMS_OK) {
        return aimsi_err(NULL, rc, "%s", err);
    }
    if (strlen(cl.sub) + 5 > cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "aims_policy_verify_token: identity buffer of %zu "
                         "bytes is too small", cap);
    }
    snprintf(identity, cap, "jwt:%s", cl.sub);
    return AIMS_OK;
}
