/*
 * jwt.c -- verification of compact JWTs (RFC 7519) signed HS256 or ES256
 * (RFC 7518 §3.2, §3.4). The only file of src/svc/authz that calls OpenSSL
 * (meson feature `tls`); built without it, every verify says so.
 *
 * Why only these two algorithms, and why the key decides: the classic JWT
 * attacks are "alg":"none" (an unsigned token accepted as signed) and
 * algorithm confusion (an RS/ES public key, which is public, used as the HMAC
 * secret of an HS256 token). Here the header's "alg" only selects between the
 * two keys the policy holds, each usable for its own algorithm only: "none",
 * any other alg, or an alg whose key is not configured is refused before any
 * crypto runs. The HS256 key is a separate secret, never the PEM text.
 *
 * Parsing trusts nothing: the token is capped (AIMSI_JWT_MAX), exactly three
 * base64url parts without padding, a JSON object header and payload parsed by
 * a small strict reader (strings with escapes, numbers, literals, arrays,
 * nested values skipped to a depth of 8, duplicate claim names refused). The
 * ES256 signature is the raw 64-byte r||s, converted to DER for
 * EVP_DigestVerify; the HMAC compare is CRYPTO_memcmp (constant time).
 *
 * Cache. ES256 verification costs ~100-300 us, more than a loopback round
 * trip, and a client sends the same token with every call; so a policy keeps
 * a small direct-mapped cache of verified tokens keyed by their SHA-256 (32
 * slots, one mutex). A hit must still be within exp + leeway and at most
 * JWT_CACHE_MAX_S old; failures are never cached; changing a key or claim
 * setting clears it.
 *
 * Claims: "exp" is required; now > exp + leeway is expired; "nbf" > now +
 * leeway is not yet valid; a configured audience must equal "aud" (a string
 * or one string of an array); a configured issuer must equal "iss". "sub"
 * (required, printable, <= 128 bytes) is the identity; "scope" (a string) or
 * "scp"/"scopes" (an array of strings) give the scopes.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "aimsi_authz.h"

#if defined(AIMS_HAVE_OPENSSL)
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#endif

#define SUB_MAX 128u
#define JSON_DEPTH 8
#define JWT_CACHE_SLOTS 32u
#define JWT_CACHE_MAX_S 300

typedef struct jwt_cache_ent {
    unsigned char digest[32];
    int used;
    int64_t until; /* unix seconds */
    aimsi_jwt_claims cl;
} jwt_cache_ent;

struct aimsi_jwt_cache {
    pthread_mutex_t mu;
    jwt_cache_ent ent[JWT_CACHE_SLOTS];
};

aims_status aimsi_jwt_cache_new(aimsi_jwt_cfg *cfg)
{
    struct aimsi_jwt_cache *c = aimsi_calloc(1, sizeof(*c));
    if (c == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "policy: out of memory");
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        aimsi_free(c);
        return aimsi_err(NULL, AIMS_E_BACKEND, "policy: pthread_mutex_init failed");
    }
    cfg->cache = c;
    return AIMS_OK;
}

void aimsi_jwt_cache_clear(aimsi_jwt_cfg *cfg)
{
    if (cfg->cache != NULL) {
        pthread_mutex_lock(&cfg->cache->mu);
        memset(cfg->cache->ent, 0, sizeof(cfg->cache->ent));
        pthread_mutex_unlock(&cfg->cache->mu);
    }
}

static void cache_free(aimsi_jwt_cfg *cfg)
{
    if (cfg->cache != NULL) {
        pthread_mutex_destroy(&cfg->cache->mu);
        aimsi_free(cfg->cache);
        cfg->cache = NULL;
    }
}

/* ---- base64url --------------------------------------------------------------- */

static int b64v(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

long aimsi_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len % 4 == 1) {
        return -1;
    }
    const size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > cap) {
        return -1;
    }
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        const int v = b64v((unsigned char)in[i]);
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* leftover bits must be zero (one encoding per value) */
    if (bits > 0 && (acc & ((1u << bits) - 1u)) != 0) {
        return -1;
    }
    return (long)o;
}

/* ---- a small strict JSON reader ----------------------------------------------------- */

typedef struct jr {
    const char *p, *end;
} jr;

static void ws(jr *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) {
        r->p++;
    }
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        const char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return 0;
        }
    }
    *out = v;
    return 1;
}

/* Read a string into out[cap] (UTF-8; NUL refused); 0 on error or overflow.
 * out may be NULL to skip. */
static int jstr(jr *r, char *out, size_t cap)
{
    if (r->p >= r->end || *r->p != '"') {
        return 0;
    }
    r->p++;
    size_t n = 0;
    while (r->p < r->end && *r->p != '"') {
        unsigned cp = (unsigned char)*r->p++;
        if (cp < 0x20) {
            return 0;
        }
        if (cp == '\\') {
            if (r->p >= r->end) {
                return 0;
            }
            const char e = *r->p++;
            switch (e) {
            case '"': case '\\': case '/': cp = (unsigned char)e; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (r->end - r->p < 4 || !hex4(r->p, &cp)) {
                    return 0;
                }
                r->p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' ||
                        !hex4(r->p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        return 0;
                    }
                    r->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return 0;
                }
                if (cp == 0) {
                    return 0;
                }
                break;
            default: return 0;
            }
            /* encode cp as UTF-8 */
            unsigned char u[4];
            size_t k;
            if (cp < 0x80) {
                u[0] = (unsigned char)cp;
                k = 1;
            } else if (cp < 0x800) {
                u[0] = (unsigned char)(0xC0 | (cp >> 6));
                u[1] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 2;
            } else if (cp < 0x10000) {
                u[0] = (unsigned char)(0xE0 | (cp >> 12));
                u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 3;
            } else {
                u[0] = (unsigned char)(0xF0 | (cp >> 18));
                u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                u[3] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 4;
            }
            if (out != NULL) {
                if (n + k >= cap) {
                    return 0;
                }
                memcpy(out + n, u, k);
            }
            n += k;
            continue;
        }
        if (out != NULL) {
            if (n + 1 >= cap) {
                return 0;
            }
            out[n] = (char)cp;
        }
        n++;
    }
    if (r->p >= r->end) {
        return 0;
    }
    r->p++;
    if (out != NULL) {
        out[n] = '\0';
    }
    return 1;
}

/* A JSON number as int64 when integral and in range (fractions truncated);
 * 0 on malformed input. */
static int jnum(jr *r, int64_t *out)
{
    const char *s = r->p;
    int neg = 0;
    if (s < r->end && *s == '-') {
        neg = 1;
        s++;
    }
    if (s >= r->end || *s < '0' || *s > '9' || (*s == '0' && s + 1 < r->end && s[1] >= '0' &&
                                                 s[1] <= '9')) {
        return 0;
    }
    int64_t v = 0;
    int big = 0;
    while (s < r->end && *s >= '0' && *s <= '9') {
        if (v > (INT64_MAX - 9) / 10) {
            big = 1;
        } else {
            v = v * 10 + (*s - '0');
        }
        s++;
    }
    if (s < r->end && *s == '.') {
        s++;
        if (s >= r->end || *s < '0' || *s > '9') {
            return 0;
        }
        while (s < r->end && *s >= '0' && *s <= '9') {
            s++;
        }
    }
    if (s < r->end && (*s == 'e' || *s == 'E')) {
        return 0; /* no exponents in NumericDate claims we accept */
    }
    r->p = s;
    if (big) {
        v = INT64_MAX;
    }
    *out = neg ? -v : v;
    return 1;
}

static int jlit(jr *r, const char *lit)
{
    const size_t n = strlen(lit);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0) {
        return 0;
    }
    r->p += n;
    return 1;
}

static int jskip(jr *r, int depth);

/* Step over a container's opening character; 1 (and past `close`) when the
 * container is empty. */
static int jopen_empty(jr *r, char close)
{
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 1;
    }
    return 0;
}

/* After a member: 1 when `close` ends the container, 2 after a ',' (another
 * member follows), 0 for anything else. */
static int jsep(jr *r, char close)
{
    ws(r);
    if (r->p >= r->end) {
        return 0;
    }
    if (*r->p == close) {
        r->p++;
        return 1;
    }
    if (*r->p != ',') {
        return 0;
    }
    r->p++;
    return 2;
}

static int jskip_container(jr *r, int depth, char close, int keyed)
{
    if (jopen_empty(r, close)) {
        return 1;
    }
    for (;;) {
        ws(r);
        if (keyed) {
            if (!jstr(r, NULL, 0)) {
                return 0;
            }
            ws(r);
            if (r->p >= r->end || *r->p != ':') {
                return 0;
            }
            r->p++;
        }
        if (!jskip(r, depth + 1)) {
            return 0;
        }
        const int sep = jsep(r, close);
        if (sep != 2) {
            return sep;
        }
    }
}

static int jskip(jr *r, int depth)
{
    ws(r);
    if (r->p >= r->end || depth > JSON_DEPTH) {
        return 0;
    }
    int64_t v;
    switch (*r->p) {
    case '"': return jstr(r, NULL, 0);
    case '{': return jskip_container(r, depth, '}', 1);
    case '[': return jskip_container(r, depth, ']', 0);
    case 't': return jlit(r, "true");
    case 'f': return jlit(r, "false");
    case 'n': return jlit(r, "null");
    default: return jnum(r, &v);
    }
}

/* The claims and header fields we read. */
typedef struct jwt_fields {
    char alg[16];
    int has_alg, has_crit;
    char sub[SUB_MAX + 1];
    int has_sub;
    char iss[256];
    int has_iss;
    int64_t exp, nbf;
    int has_exp, has_nbf;
    int aud_match, has_aud;
    char scope[512];
    const char *want_aud;
    unsigned seen; /* bit per known key: duplicates refused */
} jwt_fields;

/* What to do with one string of a claim (a string or an array of strings). */
typedef void (*str_fn)(jwt_fields *f, const char *s);

static void add_scope(jwt_fields *f, const char *item)
{
    const size_t have = strlen(f->scope);
    if (have + strlen(item) + 2 < sizeof(f->scope)) {
        snprintf(f->scope + have, sizeof(f->scope) - have, "%s%s", have ? " " : "", item);
    }
}

static void match_aud(jwt_fields *f, const char *a)
{
    f->aud_match |= f->want_aud != NULL && strcmp(a, f->want_aud) == 0;
}

/* A string (when allow_one) or an array of strings, each handed to fn. */
static int read_strings(jr *r, jwt_fields *f, str_fn fn, int allow_one)
{
    char item[256];
    if (allow_one && r->p < r->end && *r->p == '"') {
        if (!jstr(r, item, sizeof(item))) {
            return 0;
        }
        fn(f, item);
        return 1;
    }
    if (r->p >= r->end || *r->p != '[') {
        return 0;
    }
    if (jopen_empty(r, ']')) {
        return 1;
    }
    for (;;) {
        ws(r);
        if (!jstr(r, item, sizeof(item))) {
            return 0;
        }
        fn(f, item);
        const int sep = jsep(r, ']');
        if (sep != 2) {
            return sep;
        }
    }
}

static int once(jwt_fields *f, unsigned bit)
{
    if (f->seen & bit) {
        return 0;
    }
    f->seen |= bit;
    return 1;
}

/* Parse one JSON object (header or payload) into f. */
static int read_object(const unsigned char *buf, size_t len, jwt_fields *f)
{
    jr r = {(const char *)buf, (const char *)buf + len};
    ws(&r);
    if (r.p >= r.end || *r.p != '{') {
        return 0;
    }
    r.p++;
    ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            char key[32];
            ws(&r);
            const char *at = r.p;
            if (!jstr(&r, key, sizeof(key))) {
                r.p = at; /* a long name is none we know: skip it as a string */
                if (!jstr(&r, NULL, 0)) {
                    return 0;
                }
                key[0] = '\0';
            }
            ws(&r);
            if (r.p >= r.end || *r.p != ':') {
                return 0;
            }
            r.p++;
            ws(&r);
            int ok;
            if (strcmp(key, "alg") == 0) {
                ok = once(f, 1u) && jstr(&r, f->alg, sizeof(f->alg));
                f->has_alg = 1;
            } else if (strcmp(key, "crit") == 0) {
                ok = once(f, 2u) && jskip(&r, 1);
                f->has_crit = 1;
            } else if (strcmp(key, "sub") == 0) {
                ok = once(f, 4u) && jstr(&r, f->sub, sizeof(f->sub));
                f->has_sub = 1;
            } else if (strcmp(key, "iss") == 0) {
                ok = once(f, 8u) && jstr(&r, f->iss, sizeof(f->iss));
                f->has_iss = 1;
            } else if (strcmp(key, "exp") == 0) {
                ok = once(f, 16u) && jnum(&r, &f->exp);
                f->has_exp = 1;
            } else if (strcmp(key, "nbf") == 0) {
                ok = once(f, 32u) && jnum(&r, &f->nbf);
                f->has_nbf = 1;
            } else if (strcmp(key, "aud") == 0) {
                f->has_aud = 1;
                ok = once(f, 64u) && read_strings(&r, f, match_aud, 1);
            } else if (strcmp(key, "scope") == 0) {
                ok = once(f, 128u) && jstr(&r, f->scope, sizeof(f->scope));
            } else if (strcmp(key, "scp") == 0 || strcmp(key, "scopes") == 0) {
                ok = once(f, 256u) && read_strings(&r, f, add_scope, 0);
            } else {
                ok = jskip(&r, 1);
            }
            if (!ok) {
                return 0;
            }
            ws(&r);
            if (r.p >= r.end) {
                return 0;
            }
            if (*r.p == '}') {
                r.p++;
                break;
            }
            if (*r.p != ',') {
                return 0;
            }
            r.p++;
        }
    }
    ws(&r);
    return r.p == r.end;
}

/* ---- crypto ------------------------------------------------------------------------------ */

#if defined(AIMS_HAVE_OPENSSL)

static int hs256_ok(const aimsi_jwt_cfg *cfg, const char *signed_part, size_t n,
                    const unsigned char *sig, size_t sig_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (HMAC(EVP_sha256(), cfg->hs_key, (int)cfg->hs_len, (const unsigned char *)signed_part, n,
             mac, &mac_len) == NULL) {
        return 0;
    }
    return sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
}

static int es256_ok(const aimsi_jwt_cfg *cfg, const char *signed_part, size_t n,
                    const unsigned char *sig, size_t sig_len)
{
    if (sig_len != 64) {
        return 0;
    }
    int ok = 0;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL);
    BIGNUM *s = BN_bin2bn(sig + 32, 32, NULL);
    unsigned char *der = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
        r = NULL; /* owned by es now */
        s = NULL;
        const int der_len = i2d_ECDSA_SIG(es, &der);
        if (der_len > 0 && md != NULL &&
            EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, (EVP_PKEY *)cfg->es_key) == 1) {
            ok = EVP_DigestVerify(md, der, (size_t)der_len, (const unsigned char *)signed_part,
                                  n) == 1;
        }
    }
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return ok;
}

aims_status aimsi_jwt_set_es256(aimsi_jwt_cfg *cfg, const char *pem, size_t len, char *err,
                                size_t err_cap)
{
    if (len > 65536) {
        snprintf(err, err_cap, "PEM text larger than 64 KiB");
        return AIMS_E_RANGE;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (b == NULL) {
        snprintf(err, err_cap, "out of memory");
        return AIMS_E_NOMEM;
    }
    EVP_PKEY *k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    char group[64] = "";
    size_t glen = 0;
    if (k == NULL || !EVP_PKEY_is_a(k, "EC") ||
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &glen) != 1 ||
        strcmp(group, "prime256v1") != 0) {
        EVP_PKEY_free(k);
        snprintf(err, err_cap, "not a PEM P-256 public key (-----BEGIN PUBLIC KEY-----)");
        return AIMS_E_CORRUPT;
    }
    EVP_PKEY_free((EVP_PKEY *)cfg->es_key);
    cfg->es_key = k;
    return AIMS_OK;
}

/* Release the keys: the ES256 key, and the HS256 secret wiped first. */
static void keys_free(aimsi_jwt_cfg *cfg)
{
    EVP_PKEY_free((EVP_PKEY *)cfg->es_key);
    cfg->es_key = NULL;
    if (cfg->hs_key != NULL) {
        OPENSSL_cleanse(cfg->hs_key, cfg->hs_len);
    }
}

#else

static int hs256_ok(const aimsi_jwt_cfg *cfg, const char *signed_part, size_t n,
                    const unsigned char *sig, size_t sig_len)
{
    (void)cfg, (void)signed_part, (void)n, (void)sig, (void)sig_len;
    return 0;
}

static int es256_ok(const aimsi_jwt_cfg *cfg, const char *signed_part, size_t n,
                    const unsigned char *sig, size_t sig_len)
{
    (void)cfg, (void)signed_part, (void)n, (void)sig, (void)sig_len;
    return 0;
}

aims_status aimsi_jwt_set_es256(aimsi_jwt_cfg *cfg, const char *pem, size_t len, char *err,
                                size_t err_cap)
{
    (void)cfg, (void)pem, (void)len;
    snprintf(err, err_cap, "ES256 keys need OpenSSL: libaims was built without it "
                           "(meson -Dtls=disabled)");
    return AIMS_E_UNSUPPORTED;
}

static void keys_free(aimsi_jwt_cfg *cfg)
{
    if (cfg->hs_key != NULL) {
        memset(cfg->hs_key, 0, cfg->hs_len);
    }
}

#endif

void aimsi_jwt_cfg_free(aimsi_jwt_cfg *cfg)
{
    cache_free(cfg);
    keys_free(cfg);
    aimsi_free(cfg->hs_key);
    cfg->hs_key = NULL;
    aimsi_free(cfg->audience);
    cfg->audience = NULL;
    aimsi_free(cfg->issuer);
    cfg->issuer = NULL;
}

/* ---- verify ------------------------------------------------------------------------------- */

static aims_status fail(char *err, size_t cap, aims_status st, const char *msg)
{
    snprintf(err, cap, "token: %s", msg);
    return st;
}

aims_status aimsi_jwt_verify(const aimsi_jwt_cfg *cfg, const char *token, size_t len,
                             int64_t now_s, aimsi_jwt_claims *out, char *err, size_t err_cap)
{
#if !defined(AIMS_HAVE_OPENSSL)
    (void)cfg, (void)token, (void)len, (void)now_s, (void)out;
    (void)read_object, (void)hs256_ok, (void)es256_ok; /* the parser stays compiled */
    return fail(err, err_cap, AIMS_E_UNSUPPORTED, "JWT verification needs OpenSSL: libaims was "
                "built without it (meson -Dtls=disabled)");
#else
    if (len == 0 || len > AIMSI_JWT_MAX) {
        return fail(err, err_cap, AIMS_E_CORRUPT, "empty or longer than 8 KiB");
    }
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 != NULL ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL) {
        return fail(err, err_cap, AIMS_E_CORRUPT, "not three dot-separated parts");
    }
    const size_t hl = (size_t)(d1 - token), pl = (size_t)(d2 - d1 - 1);
    const size_t sl = len - (size_t)(d2 + 1 - token);
    unsigned char *buf = aimsi_malloc(len); /* decoded parts are shorter than the token */
    if (buf == NULL) {
        return fail(err, err_cap, AIMS_E_NOMEM, "out of memory");
    }
    aims_status st = AIMS_OK;
    jwt_fields hf, pf;
    memset(&hf, 0, sizeof(hf));
    memset(&pf, 0, sizeof(pf));
    pf.want_aud = cfg->audience;
    long n = aimsi_b64url_decode(token, hl, buf, len);
    if (n < 0 || !read_object(buf, (size_t)n, &hf)) {
        st = fail(err, err_cap, AIMS_E_CORRUPT, "header is not base64url JSON");
    } else if (!hf.has_alg) {
        st = fail(err, err_cap, AIMS_E_DENIED, "header has no \"alg\"");
    } else if (hf.has_crit) {
        st = fail(err, err_cap, AIMS_E_DENIED, "\"crit\" header parameters are not supported");
    } else if (strcmp(hf.alg, "HS256") != 0 && strcmp(hf.alg, "ES256") != 0) {
        st = fail(err, err_cap, AIMS_E_DENIED, "algorithm refused (only HS256 and ES256; never "
                  "\"none\")");
    } else if (strcmp(hf.alg, "HS256") == 0 && cfg->hs_key == NULL) {
        st = fail(err, err_cap, AIMS_E_DENIED, "HS256 token but no HS256 key is configured");
    } else if (strcmp(hf.alg, "ES256") == 0 && cfg->es_key == NULL) {
        st = fail(err, err_cap, AIMS_E_DENIED, "ES256 token but no ES256 key is configured");
    }
    if (st == AIMS_OK) {
        n = aimsi_b64url_decode(d2 + 1, sl, buf, len);
        const int good = n >= 0 && (hf.alg[0] == 'H'
                                        ? hs256_ok(cfg, token, (size_t)(d2 - token), buf, (size_t)n)
                                        : es256_ok(cfg, token, (size_t)(d2 - token), buf, (size_t)n));
        if (!good) {
            st = fail(err, err_cap, AIMS_E_DENIED, "bad signature");
        }
    }
    if (st == AIMS_OK) {
        n = aimsi_b64url_decode(d1 + 1, pl, buf, len);
        if (n < 0 || !read_object(buf, (size_t)n, &pf)) {
            st = fail(err, err_cap, AIMS_E_CORRUPT, "payload is not base64url JSON");
        }
    }
    aimsi_free(buf);
    const int64_t lw = cfg->leeway_s;
    if (st != AIMS_OK) {
        return st;
    }
    if (!pf.has_exp) {
        return fail(err, err_cap, AIMS_E_DENIED, "no \"exp\" claim");
    }
    if (pf.exp < INT64_MAX - lw && now_s > pf.exp + lw) {
        return fail(err, err_cap, AIMS_E_DENIED, "expired");
    }
    if (pf.has_nbf && pf.nbf > now_s + lw) {
        return fail(err, err_cap, AIMS_E_DENIED, "not valid yet (nbf)");
    }
    if (cfg->audience != NULL && !pf.aud_match) {
        return fail(err, err_cap, AIMS_E_DENIED, "wrong or missing audience (aud)");
    }
    if (cfg->issuer != NULL && (!pf.has_iss || strcmp(pf.iss, cfg->issuer) != 0)) {
        return fail(err, err_cap, AIMS_E_DENIED, "wrong or missing issuer (iss)");
    }
    if (!pf.has_sub || pf.sub[0] == '\0') {
        return fail(err, err_cap, AIMS_E_DENIED, "no \"sub\" claim");
    }
    for (const char *c = pf.sub; *c != '\0'; c++) {
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e) {
            return fail(err, err_cap, AIMS_E_DENIED, "\"sub\" must be printable ASCII");
        }
    }
    snprintf(out->sub, sizeof(out->sub), "%s", pf.sub);
    snprintf(out->scope, sizeof(out->scope), "%s", pf.scope);
    out->exp = pf.exp;
    return AIMS_OK;
#endif
}

aims_status aimsi_jwt_check(const aimsi_jwt_cfg *cfg, const char *token, size_t len,
                            int64_t now_s, aimsi_jwt_claims *out, char *err, size_t err_cap)
{
#if defined(AIMS_HAVE_OPENSSL)
    struct aimsi_jwt_cache *c = cfg->cache;
    unsigned char d[32];
    unsigned dl = 0;
    if (c != NULL && len > 0 && len <= AIMSI_JWT_MAX &&
        EVP_Digest(token, len, d, &dl, EVP_sha256(), NULL) == 1 && dl == sizeof(d)) {
        jwt_cache_ent *e = &c->ent[d[0] % JWT_CACHE_SLOTS];
        int hit = 0;
        pthread_mutex_lock(&c->mu);
        if (e->used && memcmp(e->digest, d, sizeof(d)) == 0 && now_s <= e->until) {
            *out = e->cl;
            hit = 1;
        }
        pthread_mutex_unlock(&c->mu);
        if (hit) {
            return AIMS_OK;
        }
        const aims_status rc = aimsi_jwt_verify(cfg, token, len, now_s, out, err, err_cap);
        if (rc == AIMS_OK) {
            int64_t until = now_s + JWT_CACHE_MAX_S;
            if (out->exp < INT64_MAX - cfg->leeway_s && out->exp + cfg->leeway_s < until) {
                until = out->exp + cfg->leeway_s;
            }
            pthread_mutex_lock(&c->mu);
            memcpy(e->digest, d, sizeof(d));
            e->used = 1;
            e->until = until;
            e->cl = *out;
            pthread_mutex_unlock(&c->mu);
        }
        return rc;
    }
#endif
    return aimsi_jwt_verify(cfg, token, len, now_s, out, err, err_cap);
}
