/*
 * test_authz.c -- the policy parser and decisions, JWT verification (HS256,
 * ES256; keys made at run time with OpenSSL and with the `openssl` CLI, no key
 * material committed), the audit hook, and the node's door end to end over
 * tcp:// and ipc:// ("$auth" bearer tokens, SO_PEERCRED uids, denials
 * audited and rate-limited). Allocation-failure loops over policy and JWT.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "svc/aimsi_msg.h"
#include "svc/authz/aimsi_authz.h"
#include "testalloc.h"
#include "svc_echo.h"

#if defined(AIMS_HAVE_OPENSSL)
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "jwt_support.h"
#include <openssl/pem.h>
#endif

static const char *const k_policy =
    "# test policy\n"
    "admin   uid:0\n"
    "allow   uid:1000      register  echo*\n"
    "allow   *             join      aims.registry\n"
    "allow   jwt:alice     call      echo/*\n"
    "allow   scope:train   train     trainer\n"
    "allow   *             call      public/*\n"
    "deny    jwt:mallory   call      *        # deny wins over the allow above\n"
    "allow   node-?.example call     infer.*/predict\n";

/* ---- policy ---------------------------------------------------------------------------- */

static void test_policy_decide(void **state)
{
    (void)state;
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    /* empty policy: deny by default, host always allowed */
    assert_int_equal(aims_policy_check(p, "uid:1000", "call", "echo/x"), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "no rule allows"));
    assert_int_equal(aims_policy_check(p, "host", "swap", "anything"), AIMS_OK);
    assert_int_equal(aims_policy_load_string(p, k_policy, "t.policy"), AIMS_OK);
    assert_int_equal(aims_policy_check(p, "uid:1000", "register", "echo-2"), AIMS_OK);
    assert_int_equal(aims_policy_check(p, "uid:1001", "register", "echo-2"), AIMS_E_DENIED);
    assert_int_equal(aims_policy_check(p, "uid:1000", "register", "infer.fmnist"),
                     AIMS_E_DENIED);
    assert_int_equal(aims_policy_check(p, "uid:0", "swap", "infer.fmnist"), AIMS_OK);
    assert_int_equal(aims_policy_check(p, "jwt:alice", "call", "echo/predict"), AIMS_OK);
    assert_int_equal(aims_policy_check(p, "jwt:mallory", "call", "public/x"), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "denied by t.policy:8"));
    assert_int_equal(aims_policy_check(p, "anyone", "call", "public/x"), AIMS_OK);
    assert_int_equal(aims_policy_check(p, "node-a.example", "call", "infer.fmnist/predict"),
                     AIMS_OK);
    assert_int_equal(aims_policy_check(p, "node-ab.example", "call", "infer.fmnist/predict"),
                     AIMS_E_DENIED);
    /* scopes only come from tokens */
    char why[256];
    assert_int_equal(aimsi_policy_decide(p, "jwt:bob", "read train", "train", "trainer", why,
                                         sizeof why), AIMS_OK);
    assert_int_equal(aimsi_policy_decide(p, "jwt:bob", "read", "train", "trainer", why,
                                         sizeof why), AIMS_E_DENIED);
    assert_int_equal(aims_policy_check(p, "scope:train", "train", "trainer"), AIMS_E_DENIED);
    assert_int_equal(aims_policy_check(NULL, "a", "call", "b"), AIMS_E_MISUSE);
    aims_policy_destroy(p);
    aims_policy_destroy(NULL);
}

/* A record about a service (a canary verdict, a model or job event) is
 * decided under its own name and its service's (authz.c record_owner,
 * docs/VERDICTS.md "Who may record"): an allow on either admits, a deny on
 * either refuses. */
static void test_policy_decide_owned(void **state)
{
    (void)state;
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_load_string(p,
                                             "allow n1.aims register blobs\n"
                                             "allow n2.aims register blobs\n"
                                             "deny  n2.aims register blobs/*@verdict*\n"
                                             "allow n3.aims register blobs/*@verdict-*\n"
                                             "deny  n4.aims register blobs\n"
                                             "allow n4.aims register blobs/*\n",
                                             "own.policy"),
                     AIMS_OK);
    char why[300];
    const char *rec = "blobs/2@verdict-p1";
    assert_int_equal(aimsi_policy_decide(p, "n1.aims", NULL, "register", rec, why, sizeof why),
                     AIMS_E_DENIED); /* the record's own name: no rule */
    assert_int_equal(aimsi_policy_decide_owned(p, "n1.aims", NULL, "register", rec, "blobs",
                                               why, sizeof why),
                     AIMS_OK); /* the service's registrant */
    assert_int_equal(aimsi_policy_decide_owned(p, "n2.aims", NULL, "register", rec, "blobs",
                                               why, sizeof why),
                     AIMS_E_DENIED); /* a deny on the record wins */
    assert_non_null(strstr(why, "denied by own.policy:3"));
    assert_int_equal(aimsi_policy_decide_owned(p, "n3.aims", NULL, "register", rec, "blobs",
                                               why, sizeof why),
                     AIMS_OK); /* allowed by the record's name alone */
    assert_int_equal(aimsi_policy_decide_owned(p, "n4.aims", NULL, "register", rec, "blobs",
                                               why, sizeof why),
                     AIMS_E_DENIED); /* a deny on the service wins */
    assert_non_null(strstr(why, "denied by own.policy:5"));
    assert_int_equal(aimsi_policy_decide_owned(p, "n5.aims", NULL, "register", rec, "blobs",
                                               why, sizeof why),
                     AIMS_E_DENIED);
    assert_non_null(strstr(why, "'n5.aims' may not register 'blobs/2@verdict-p1' nor on its "
                                "service 'blobs' (no rule allows it)"));
    assert_int_equal(aimsi_policy_decide_owned(p, "host", NULL, "register", rec, "blobs", why,
                                               sizeof why),
                     AIMS_OK);
    aims_policy_destroy(p);
}

static void test_policy_glob(void **state)
{
    (void)state;
    assert_true(aimsi_glob("*", ""));
    assert_true(aimsi_glob("a*c", "abbbc"));
    assert_true(aimsi_glob("a*c*", "acxc"));
    assert_true(aimsi_glob("?x", "ax"));
    assert_false(aimsi_glob("?x", "x"));
    assert_false(aimsi_glob("a*c", "abcd"));
    assert_true(aimsi_glob("*.example", "node.a.example"));
    assert_false(aimsi_glob("echo", "echo2"));
}

static void expect_bad(const char *text, aims_status want, const char *needle)
{
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_load_string(p, "allow a call b/c\n", "ok"), AIMS_OK);
    assert_int_equal(aims_policy_load_string(p, text, "bad.policy"), want);
    const char *msg = aims_policy_errmsg(p);
    if (strstr(msg, needle) == NULL) {
        fail_msg("message '%s' lacks '%s'", msg, needle);
    }
    /* all or nothing: the good rule stays, nothing of the bad text was added */
    assert_int_equal(aims_policy_check(p, "a", "call", "b/c"), AIMS_OK);
    assert_int_equal(aims_policy_check(p, "x", "call", "y/z"), AIMS_E_DENIED);
    aims_policy_destroy(p);
}

static void test_policy_errors(void **state)
{
    (void)state;
    expect_bad("allow x call y/z\nallow x regsiter y\n", AIMS_E_CORRUPT,
               "bad.policy:2: unknown action 'regsiter'");
    expect_bad("\n\npermit x call y\n", AIMS_E_CORRUPT, "bad.policy:3: unknown directive");
    expect_bad("allow x call\n", AIMS_E_CORRUPT, "bad.policy:1: 'allow' takes");
    expect_bad("admin\n", AIMS_E_CORRUPT, "bad.policy:1: 'admin' takes one identity");
    expect_bad("allow a b c d e\n", AIMS_E_CORRUPT, "too many fields");
    expect_bad("allow x\x01 call y\n", AIMS_E_CORRUPT, "byte 0x01");
    expect_bad("jwt-leeway 9999\n", AIMS_E_CORRUPT, "jwt-leeway must be");
    expect_bad("jwt-hs256-key-file /nonexistent/key\n", AIMS_E_IO, "bad.policy:1: cannot open");
    char longline[1200];
    memset(longline, 'a', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    expect_bad(longline, AIMS_E_RANGE, "line longer than 1024");

    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_load_file(p, "/nonexistent/policy"), AIMS_E_IO);
    assert_non_null(strstr(aims_policy_errmsg(p), "/nonexistent/policy"));
    assert_int_equal(aims_policy_set_jwt_hs256(p, "short", 5), AIMS_E_RANGE);
    assert_int_equal(aims_policy_set_jwt_claims(p, "", NULL, 30), AIMS_E_RANGE);
    aims_policy_destroy(p);
}

/* A file with a relative key file next to it. */
static void test_policy_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/aims-policy-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], key[256];
    snprintf(path, sizeof path, "%s/node.policy", dir);
    snprintf(key, sizeof key, "%s/hs.key", dir);
    FILE *f = fopen(key, "w");
    assert_non_null(f);
    fputs("0123456789abcdef0123456789abcdef\n", f);
    fclose(f);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("jwt-hs256-key-file hs.key\njwt-audience aims\njwt-issuer test\njwt-leeway 5\n"
          "allow jwt:* call echo/*\n", f);
    fclose(f);
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_load_file(p, path), AIMS_OK);
    assert_int_equal(p->jwt.hs_len, 32); /* newline trimmed */
    assert_string_equal(p->jwt.audience, "aims");
    assert_int_equal(p->jwt.leeway_s, 5);
    aims_policy_destroy(p);
    unlink(key);
    unlink(path);
    rmdir(dir);
}

/* ---- JWT --------------------------------------------------------------------------------- */

#if defined(AIMS_HAVE_OPENSSL)

static const char k_hs_key[] = "an HS256 key of at least 32 bytes!!";

/* DER ECDSA signature -> raw r||s (64 bytes). */
static void der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64])
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    assert_non_null(sig);
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(sig, &r, &s);
    assert_int_equal(BN_bn2binpad(r, raw, 32), 32);
    assert_int_equal(BN_bn2binpad(s, raw + 32, 32), 32);
    ECDSA_SIG_free(sig);
}

enum { SIGN_NONE, SIGN_HS, SIGN_ES };

/* header.payload.signature into out (static-size buffer). */
static void make_token(char *out, size_t cap, const char *header, const char *payload, int how,
                       const void *hs_key, size_t hs_len, EVP_PKEY *es)
{
    char h[1024], pl[2048];
    jwt_b64url((const unsigned char *)header, strlen(header), h);
    jwt_b64url((const unsigned char *)payload, strlen(payload), pl);
    const int n = snprintf(out, cap, "%s.%s", h, pl);
    assert_true(n > 0 && (size_t)n < cap - 200);
    if (how == SIGN_HS) {
        assert_true(jwt_hs256_append(out, (size_t)n, hs_key, hs_len) > 0);
        return;
    }
    unsigned char sig[256];
    size_t sig_len = 0;
    if (how == SIGN_ES) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char der[128];
        size_t der_len = sizeof der;
        assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, es), 1);
        assert_int_equal(EVP_DigestSign(md, der, &der_len, (const unsigned char *)out, (size_t)n),
                         1);
        EVP_MD_CTX_free(md);
        der_to_raw(der, der_len, sig);
        sig_len = 64;
    }
    char s64[400];
    jwt_b64url(sig, sig_len, s64);
    snprintf(out + n, cap - (size_t)n, ".%s", s64);
}

static char *pubkey_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    char *data = NULL;
    const long n = BIO_get_mem_data(b, &data);
    char *pem = malloc((size_t)n + 1);
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
    BIO_free(b);
    return pem;
}

static aims_status verify(const aims_policy *p, const char *tok)
{
    char id[200];
    return aims_policy_verify_token(p, tok, id, sizeof id);
}

static void payload(char *out, size_t cap, const char *extra, long exp_delta)
{
    snprintf(out, cap, "{\"sub\":\"alice\",\"aud\":\"aims\",\"iss\":\"test\",\"exp\":%lld%s}",
             (long long)time(NULL) + exp_delta, extra);
}

static void test_jwt_hs256(void **state)
{
    (void)state;
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_set_jwt_hs256(p, k_hs_key, strlen(k_hs_key)), AIMS_OK);
    assert_int_equal(aims_policy_set_jwt_claims(p, "aims", "test", 30), AIMS_OK);
    const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char pl[512], tok[4096], id[64];
    payload(pl, sizeof pl, ",\"scope\":\"train read\"", 600);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(aims_policy_verify_token(p, tok, id, sizeof id), AIMS_OK);
    assert_string_equal(id, "jwt:alice");
    assert_int_equal(aims_policy_verify_token(p, tok, id, 5), AIMS_E_RANGE);
    /* forged: payload swapped for another, signature kept */
    char forged[4096], pl2[512];
    snprintf(pl2, sizeof pl2, "{\"sub\":\"root\",\"aud\":\"aims\",\"iss\":\"test\",\"exp\":%lld}",
             (long long)time(NULL) + 600);
    make_token(forged, sizeof forged, hdr, pl2, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    const char *sig = strrchr(tok, '.');
    strcpy(strrchr(forged, '.'), sig);
    assert_int_equal(verify(p, forged), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "bad signature"));
    /* wrongly signed: another key */
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, "another key of at least 32 bytes!!!", 35, NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    /* expired, beyond the leeway; within it is fine */
    payload(pl, sizeof pl, "", -120);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "expired"));
    payload(pl, sizeof pl, "", -10);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_OK);
    /* not yet valid */
    char extra[64];
    snprintf(extra, sizeof extra, ",\"nbf\":%lld", (long long)time(NULL) + 3600);
    payload(pl, sizeof pl, extra, 7200);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "nbf"));
    /* wrong audience, audience in an array, wrong issuer, no exp, no sub */
    snprintf(pl, sizeof pl, "{\"sub\":\"a\",\"aud\":\"other\",\"iss\":\"test\",\"exp\":%lld}",
             (long long)time(NULL) + 60);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "aud"));
    snprintf(pl, sizeof pl, "{\"sub\":\"a\",\"aud\":[\"x\",\"aims\"],\"iss\":\"test\","
             "\"exp\":%lld}", (long long)time(NULL) + 60);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_OK);
    snprintf(pl, sizeof pl, "{\"sub\":\"a\",\"aud\":\"aims\",\"iss\":\"evil\",\"exp\":%lld}",
             (long long)time(NULL) + 60);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    make_token(tok, sizeof tok, hdr, "{\"sub\":\"a\",\"aud\":\"aims\",\"iss\":\"test\"}", SIGN_HS,
               k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "exp"));
    /* the cache of verified tokens never outlives exp + leeway */
    {
        aimsi_jwt_claims cl;
        char err[200];
        const int64_t t0 = (int64_t)time(NULL);
        snprintf(pl, sizeof pl, "{\"sub\":\"c\",\"aud\":\"aims\",\"iss\":\"test\","
                 "\"exp\":%lld}", (long long)t0 + 100);
        make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
        assert_int_equal(aimsi_jwt_check(&p->jwt, tok, strlen(tok), t0, &cl, err, sizeof err),
                         AIMS_OK);
        assert_int_equal(aimsi_jwt_check(&p->jwt, tok, strlen(tok), t0 + 1, &cl, err,
                                         sizeof err), AIMS_OK); /* a hit */
        assert_string_equal(cl.sub, "c");
        assert_int_equal(aimsi_jwt_check(&p->jwt, tok, strlen(tok), t0 + 131, &cl, err,
                                         sizeof err), AIMS_E_DENIED);
        /* a new key empties the cache: the old token no longer verifies */
        assert_int_equal(aims_policy_set_jwt_hs256(p, "a completely different key, 32+ b", 34),
                         AIMS_OK);
        assert_int_equal(aimsi_jwt_check(&p->jwt, tok, strlen(tok), t0 + 1, &cl, err,
                                         sizeof err), AIMS_E_DENIED);
        assert_int_equal(aims_policy_set_jwt_hs256(p, k_hs_key, strlen(k_hs_key)), AIMS_OK);
        /* scopes from an array claim */
        snprintf(pl, sizeof pl, "{\"sub\":\"s\",\"aud\":\"aims\",\"iss\":\"test\","
                 "\"scp\":[\"train\",\"read\"],\"exp\":%lld}", (long long)t0 + 100);
        make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
        assert_int_equal(aimsi_jwt_check(&p->jwt, tok, strlen(tok), t0, &cl, err, sizeof err),
                         AIMS_OK);
        assert_string_equal(cl.scope, "train read");
    }
    /* duplicate claims are ambiguous: refused */
    snprintf(pl, sizeof pl, "{\"sub\":\"a\",\"sub\":\"root\",\"aud\":\"aims\",\"iss\":\"test\","
             "\"exp\":%lld}", (long long)time(NULL) + 60);
    make_token(tok, sizeof tok, hdr, pl, SIGN_HS, k_hs_key, strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_CORRUPT);
    /* alg none, unsigned; alg none with a signature; unknown alg; crit */
    payload(pl, sizeof pl, "", 600);
    make_token(tok, sizeof tok, "{\"alg\":\"none\"}", pl, SIGN_NONE, NULL, 0, NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "none"));
    make_token(tok, sizeof tok, "{\"alg\":\"none\"}", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    make_token(tok, sizeof tok, "{\"alg\":\"HS512\"}", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", pl, SIGN_HS, k_hs_key,
               strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    /* malformed: base64, JSON, parts */
    assert_int_equal(verify(p, "abc"), AIMS_E_CORRUPT);
    assert_int_equal(verify(p, "a.b.c.d"), AIMS_E_CORRUPT);
    assert_int_equal(verify(p, "!!!.eyJ9.sig"), AIMS_E_CORRUPT);
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\"", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    assert_int_equal(verify(p, tok), AIMS_E_CORRUPT);
    make_token(tok, sizeof tok, hdr, "{\"sub\":\"a\",\"exp\":1e12}", SIGN_HS, k_hs_key,
               strlen(k_hs_key), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_CORRUPT);
    aims_policy_destroy(p);
}

static void test_jwt_es256(void **state)
{
    (void)state;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    EVP_PKEY *other = EVP_EC_gen("P-256");
    assert_non_null(k);
    assert_non_null(other);
    char *pem = pubkey_pem(k);
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_set_jwt_es256(p, "-----BEGIN PUBLIC KEY-----\nnope\n"),
                     AIMS_E_CORRUPT);
    assert_int_equal(aims_policy_set_jwt_es256(p, pem), AIMS_OK);
    char pl[512], tok[4096];
    payload(pl, sizeof pl, "", 600);
    make_token(tok, sizeof tok, "{\"alg\":\"ES256\"}", pl, SIGN_ES, NULL, 0, k);
    assert_int_equal(verify(p, tok), AIMS_OK);
    make_token(tok, sizeof tok, "{\"alg\":\"ES256\"}", pl, SIGN_ES, NULL, 0, other);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    /* algorithm confusion: an HS256 token whose HMAC key is the public PEM */
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\"}", pl, SIGN_HS, pem, strlen(pem), NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "no HS256 key"));
    /* ... and with an HS256 key configured too, it is still a bad signature */
    assert_int_equal(aims_policy_set_jwt_hs256(p, k_hs_key, strlen(k_hs_key)), AIMS_OK);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "bad signature"));
    /* an ES256 header on an HS256 signature */
    make_token(tok, sizeof tok, "{\"alg\":\"ES256\"}", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    aims_policy_destroy(p);
    free(pem);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
}

/* A key pair and a signature made by the `openssl` command-line tool. */
static void test_jwt_es256_openssl_cli(void **state)
{
    (void)state;
    if (system("openssl version >/dev/null 2>&1") != 0) {
        skip();
    }
    char dir[] = "/tmp/aims-jwt-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[1024], path[300];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl ecparam -name prime256v1 -genkey -noout -out k.pem 2>/dev/null && "
             "openssl ec -in k.pem -pubout -out pub.pem 2>/dev/null", dir);
    assert_int_equal(system(cmd), 0);
    char pl[512], h[256], p64[1024], signing[1400];
    payload(pl, sizeof pl, "", 600);
    jwt_b64url((const unsigned char *)"{\"alg\":\"ES256\",\"typ\":\"JWT\"}", 27, h);
    jwt_b64url((const unsigned char *)pl, strlen(pl), p64);
    snprintf(signing, sizeof signing, "%s.%s", h, p64);
    snprintf(path, sizeof path, "%s/in", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(signing, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd %s && openssl dgst -sha256 -sign k.pem -out sig.der in", dir);
    assert_int_equal(system(cmd), 0);
    unsigned char der[128], raw[64];
    snprintf(path, sizeof path, "%s/sig.der", dir);
    f = fopen(path, "rb");
    assert_non_null(f);
    const size_t dn = fread(der, 1, sizeof der, f);
    fclose(f);
    der_to_raw(der, dn, raw);
    char s64[128], tok[4096];
    jwt_b64url(raw, 64, s64);
    snprintf(tok, sizeof tok, "%s.%s", signing, s64);
    char pem[1024] = "";
    snprintf(path, sizeof path, "%s/pub.pem", dir);
    f = fopen(path, "r");
    assert_non_null(f);
    const size_t pn = fread(pem, 1, sizeof pem - 1, f);
    pem[pn] = '\0';
    fclose(f);
    aims_policy *p = NULL;
    assert_int_equal(aims_policy_create(&p), AIMS_OK);
    assert_int_equal(aims_policy_set_jwt_es256(p, pem), AIMS_OK);
    assert_int_equal(verify(p, tok), AIMS_OK);
    tok[strlen(tok) - 3] ^= 1; /* one bit of the signature */
    assert_int_equal(verify(p, tok), AIMS_E_DENIED);
    aims_policy_destroy(p);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

#endif /* AIMS_HAVE_OPENSSL */

/* ---- audit ------------------------------------------------------------------------------ */

typedef struct audit_log {
    pthread_mutex_t mu;
    int n[8];
    char last_identity[160];
    char last_peer[160];
    char last_detail[300];
    int last_action;
} audit_log;

static void on_audit(void *user, int64_t unix_ms, aims_audit_action action, const char *identity,
                     const char *peer, const char *resource, aims_status status,
                     const char *detail)
{
    (void)resource;
    (void)status;
    audit_log *a = user;
    assert_true(unix_ms > 1600000000000LL);
    pthread_mutex_lock(&a->mu);
    if (action >= 1 && action <= 7) {
        a->n[action]++;
    }
    a->last_action = (int)action;
    snprintf(a->last_identity, sizeof a->last_identity, "%s", identity);
    snprintf(a->last_peer, sizeof a->last_peer, "%s", peer);
    snprintf(a->last_detail, sizeof a->last_detail, "%s", detail);
    pthread_mutex_unlock(&a->mu);
}

/* A consistent copy of the log (the hook writes it on node threads). */
static audit_log snap(audit_log *a)
{
    pthread_mutex_lock(&a->mu);
    audit_log copy = *a;
    pthread_mutex_unlock(&a->mu);
    return copy;
}

static void test_audit_json(void **state)
{
    (void)state;
    char buf[512];
    const size_t n = aims_audit_json(buf, sizeof buf, 1700000000123LL, AIMS_AUDIT_DENIED,
                                     "jwt:\"eve\"", "tcp://127.0.0.1:5", "echo/x", AIMS_E_DENIED,
                                     "line\nbreak\\");
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "{\"unix_ms\":1700000000123,\"action\":\"denied\",\"identity\":"
                             "\"jwt:\\\"eve\\\"\",\"peer\":\"tcp://127.0.0.1:5\",\"resource\":"
                             "\"echo/x\",\"status\":17,\"error\":\"permission denied\","
                             "\"detail\":\"line\\u000abreak\\\\\"}\n");
    char small[16];
    const size_t need = aims_audit_json(small, sizeof small, 1, AIMS_AUDIT_JOIN, "", "", "",
                                        AIMS_OK, "");
    assert_true(need >= sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_string_equal(aims_audit_action_name(AIMS_AUDIT_MODEL_SWAP), "model_swap");
    assert_string_equal(aims_audit_action_name((aims_audit_action)99), "?");
}

/* A node with an echo service on tcp:// and ipc://, a policy and an audit hook. */
typedef struct door {
    aims_node *n;
    aims_service *s;
    hctx h;
    aims_policy *p;
    audit_log log;
    char tcp[256], ipc[256];
    char dir[64];
} door;

static void door_up(door *d, const char *policy_text)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->log.mu, NULL);
    snprintf(d->dir, sizeof d->dir, "/tmp/aims-door-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    assert_int_equal(aims_node_create("door", &d->n), AIMS_OK);
    assert_int_equal(aims_node_set_audit(d->n, on_audit, &d->log), AIMS_OK);
    if (policy_text != NULL) {
        assert_int_equal(aims_policy_create(&d->p), AIMS_OK);
        assert_int_equal(aims_policy_load_string(d->p, policy_text, "door.policy"), AIMS_OK);
#if defined(AIMS_HAVE_OPENSSL)
        assert_int_equal(aims_policy_set_jwt_hs256(d->p, k_hs_key, strlen(k_hs_key)), AIMS_OK);
#endif
        assert_int_equal(aims_node_set_policy(d->n, d->p), AIMS_OK);
    }
    char ipc[200];
    snprintf(ipc, sizeof ipc, "ipc://%s/door.sock", d->dir);
    assert_int_equal(aims_node_listen(d->n, "tcp://127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_node_listen(d->n, ipc), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(d->n, 0, d->tcp, sizeof d->tcp, &len), AIMS_OK);
    assert_int_equal(aims_node_get_address(d->n, 1, d->ipc, sizeof d->ipc, &len), AIMS_OK);
    assert_int_equal(aims_service_add_handler(d->n, "echo", echo_fn, &d->h, &d->s), AIMS_OK);
    assert_int_equal(aims_service_start(d->s), AIMS_OK);
}

static void door_down(door *d)
{
    aims_node_destroy(d->n);
    aims_policy_destroy(d->p);
    pthread_mutex_destroy(&d->log.mu);
    rmdir(d->dir);
}

static aims_status call_with(aims_client *c, const char *addr, const char *method,
                             const char *token)
{
    aims_msg *req = mk_req(1.0f), *rep = mk_msg();
    if (token != NULL) {
        const uint64_t d[1] = {strlen(token)};
        assert_int_equal(aims_msg_add(req, "$auth", AIMS_DT_BYTES, d, 1, token, 0), AIMS_OK);
    }
    const aims_status rc = aims_client_call_addr(c, addr, "echo", method, req, rep, 5000);
    if (rc == AIMS_OK) {
        size_t i = 0;
        /* the handler never sees the token */
        assert_int_not_equal(aims_msg_find(rep, "$auth", &i), AIMS_OK);
        assert_int_equal(aims_msg_find(rep, "x", &i), AIMS_OK);
        assert_int_equal(reply_tag(rep), 0);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

static void test_door_peercred_and_denials(void **state)
{
    (void)state;
    char text[256];
    snprintf(text, sizeof text, "allow uid:%u call echo/ping\n", (unsigned)getuid());
    door d;
    door_up(&d, text);
    aims_client *c = mk_client(NULL);
    /* ipc://: the kernel says who we are */
    assert_int_equal(call_with(c, d.ipc, "ping", NULL), AIMS_OK);
    assert_int_equal(call_with(c, d.ipc, "other", NULL), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "no rule allows"));
    char uid[32];
    snprintf(uid, sizeof uid, "uid:%u", (unsigned)getuid());
    assert_string_equal(snap(&d.log).last_identity, uid);
    assert_non_null(strstr(snap(&d.log).last_peer, "ipc://pid:"));
    /* tcp://: anonymous, refused, with the peer's address in the audit */
    assert_int_equal(call_with(c, d.tcp, "ping", NULL), AIMS_E_DENIED);
    assert_string_equal(snap(&d.log).last_identity, "anonymous");
    assert_non_null(strstr(snap(&d.log).last_peer, "tcp://127.0.0.1:"));
    assert_int_equal(snap(&d.log).last_action, AIMS_AUDIT_DENIED);
    /* a flood of denials is rate-limited in the audit */
    for (int i = 0; i < 200; i++) {
        assert_int_equal(call_with(c, d.tcp, "ping", NULL), AIMS_E_DENIED);
    }
    pthread_mutex_lock(&d.log.mu);
    const int denied = d.log.n[AIMS_AUDIT_DENIED];
    pthread_mutex_unlock(&d.log.mu);
    assert_true(denied >= 20 && denied < 150);
    assert_int_equal(atomic_load(&d.h.calls), 1);
    aims_client_destroy(c);
    door_down(&d);
}

#if defined(AIMS_HAVE_OPENSSL)
static void test_door_bearer_token(void **state)
{
    (void)state;
    door d;
    door_up(&d, "allow jwt:alice call echo/*\ndeny jwt:mallory call *\n");
    aims_client *c = mk_client(NULL);
    char pl[256], tok[4096];
    snprintf(pl, sizeof pl, "{\"sub\":\"alice\",\"exp\":%lld}", (long long)time(NULL) + 600);
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\"}", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    assert_int_equal(call_with(c, d.tcp, "predict", tok), AIMS_OK);
    assert_int_equal(call_with(c, d.tcp, "predict", NULL), AIMS_E_DENIED);
    /* forged, expired, alg:none: refused and audited with the reason */
    snprintf(pl, sizeof pl, "{\"sub\":\"alice\",\"exp\":%lld}", (long long)time(NULL) - 3600);
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\"}", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    assert_int_equal(call_with(c, d.tcp, "predict", tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "expired"));
    assert_non_null(strstr(snap(&d.log).last_detail, "expired"));
    snprintf(pl, sizeof pl, "{\"sub\":\"alice\",\"exp\":%lld}", (long long)time(NULL) + 600);
    make_token(tok, sizeof tok, "{\"alg\":\"none\"}", pl, SIGN_NONE, NULL, 0, NULL);
    assert_int_equal(call_with(c, d.tcp, "predict", tok), AIMS_E_DENIED);
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\"}", pl, SIGN_HS, "a wrong key that is long enough!!", 33, NULL);
    assert_int_equal(call_with(c, d.tcp, "predict", tok), AIMS_E_DENIED);
    snprintf(pl, sizeof pl, "{\"sub\":\"mallory\",\"exp\":%lld}", (long long)time(NULL) + 600);
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\"}", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    assert_int_equal(call_with(c, d.tcp, "predict", tok), AIMS_E_DENIED);
    assert_non_null(strstr(aims_errmsg(), "denied by door.policy:2"));
    assert_int_equal(atomic_load(&d.h.calls), 1);
    aims_client_destroy(c);
    door_down(&d);
}
#endif

/* Without a policy nothing is refused at the door, but the lease secret holds
 * and registry doors are audited. */
static void test_door_registry_audit(void **state)
{
    (void)state;
    door d;
    door_up(&d, NULL);
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    assert_int_equal(aims_node_host_registry(d.n, r), AIMS_OK);
    aims_client *c = mk_client(NULL);
    aims_msg *req = mk_msg(), *rep = mk_msg();
    const uint64_t d1[1] = {4}, d2[1] = {14};
    assert_int_equal(aims_msg_add(req, "service", AIMS_DT_BYTES, d1, 1, "echo", 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "address", AIMS_DT_BYTES, d2, 1, "tcp://1.2.3.4:5", 0),
                     AIMS_OK);
    const int64_t w = 1, ttl = 60000;
    assert_int_equal(aims_msg_add(req, "weight", AIMS_DT_I64, NULL, 0, &w, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "ttl_ms", AIMS_DT_I64, NULL, 0, &ttl, 0), AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, d.ipc, "aims.registry", "register", req, rep, 5000),
                     AIMS_OK);
    assert_int_equal(snap(&d.log).n[AIMS_AUDIT_REGISTER], 1);
    const char *sec = NULL;
    size_t sl = 0;
    assert_int_equal(aimsi_msg_bytes(rep, "secret", &sec, &sl), AIMS_OK);
    char secret[40];
    memcpy(secret, sec, sl);
    secret[sl] = '\0';
    int64_t id = 0;
    assert_int_equal(aimsi_msg_int(rep, "id", &id), AIMS_OK);
    aims_msg_clear(req);
    assert_int_equal(aims_msg_add(req, "id", AIMS_DT_I64, NULL, 0, &id, 0), AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, d.tcp, "aims.registry", "deregister", req, rep,
                                           5000), AIMS_E_DENIED);
    assert_int_equal(snap(&d.log).n[AIMS_AUDIT_DENIED], 1);
    assert_non_null(strstr(snap(&d.log).last_detail, "secret"));
    const uint64_t d3[1] = {sl};
    assert_int_equal(aims_msg_add(req, "secret", AIMS_DT_BYTES, d3, 1, secret, 0), AIMS_OK);
    assert_int_equal(aims_client_call_addr(c, d.tcp, "aims.registry", "deregister", req, rep,
                                           5000), AIMS_OK);
    assert_int_equal(snap(&d.log).n[AIMS_AUDIT_DEREGISTER], 1); /* only the one that happened */
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    door_down(&d);
    aims_registry_destroy(r);
}

/* A policy admin (here: our uid over ipc://) needs no lease secret or job
 * handle; a "$admin" tensor sent from the network is stripped, not honoured. */
static aims_status reg_call(aims_client *c, const char *addr, const char *method, int64_t id,
                            int forge)
{
    aims_msg *req = mk_msg(), *rep = mk_msg();
    assert_int_equal(aims_msg_add(req, "id", AIMS_DT_I64, NULL, 0, &id, 0), AIMS_OK);
    if (forge) {
        const int32_t one = 1;
        assert_int_equal(aims_msg_add(req, "$admin", AIMS_DT_I32, NULL, 0, &one, 0), AIMS_OK);
    }
    const aims_status rc = aims_client_call_addr(c, addr, "aims.registry", method, req, rep,
                                                 5000);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

static aims_status job_call(aims_client *c, const char *addr, const char *method, int forge,
                            int submit)
{
    aims_msg *req = mk_msg(), *rep = mk_msg();
    const uint64_t jd[1] = {5};
    assert_int_equal(aims_msg_add(req, "job", AIMS_DT_BYTES, jd, 1, "job-a", 0), AIMS_OK);
    if (forge) {
        const int32_t one = 1;
        assert_int_equal(aims_msg_add(req, "$admin", AIMS_DT_I32, NULL, 0, &one, 0), AIMS_OK);
    }
    if (submit) {
        float x[8 * 2];
        int32_t y[8];
        for (int i = 0; i < 8; i++) {
            y[i] = i % 2;
            x[2 * i] = (float)y[i];
            x[2 * i + 1] = 1.0f - (float)y[i];
        }
        const uint64_t xd[2] = {8, 2}, yd[1] = {8};
        const char *spec = "kind=softmax\nclasses=2\nepochs=1";
        const uint64_t sd[1] = {strlen(spec)};
        assert_int_equal(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, x, 0), AIMS_OK);
        assert_int_equal(aims_msg_add(req, "y", AIMS_DT_I32, yd, 1, y, 0), AIMS_OK);
        assert_int_equal(aims_msg_add(req, "spec", AIMS_DT_BYTES, sd, 1, spec, 0), AIMS_OK);
    }
    const aims_status rc = aims_client_call_addr(c, addr, "trainer", method, req, rep, 20000);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

static void test_door_admin(void **state)
{
    (void)state;
    char text[256];
    snprintf(text, sizeof text, "admin uid:%u\nallow * join aims.registry\n"
             "allow anonymous train trainer\nallow anonymous jobs trainer\n", (unsigned)getuid());
    door d;
    door_up(&d, text);
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    assert_int_equal(aims_node_host_registry(d.n, r), AIMS_OK);
    aims_service *tr = NULL;
    assert_int_equal(aims_service_add_train(d.n, "trainer", NULL, &tr), AIMS_OK);
    assert_int_equal(aims_service_start(tr), AIMS_OK);
    aims_client *c = mk_client(NULL);
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(r, "echo", "tcp://1.2.3.4:5", 1, 60000, &id),
                     AIMS_OK);
    /* anonymous over tcp: no secret, and a forged "$admin" changes nothing */
    assert_int_equal(reg_call(c, d.tcp, "deregister", (int64_t)id, 0), AIMS_E_DENIED);
    assert_int_equal(reg_call(c, d.tcp, "deregister", (int64_t)id, 1), AIMS_E_DENIED);
    /* the admin over ipc needs no secret */
    assert_int_equal(reg_call(c, d.ipc, "deregister", (int64_t)id, 0), AIMS_OK);
    size_t n = 1;
    assert_int_equal(aims_registry_lookup(r, "echo", NULL, 0, &n), AIMS_OK);
    assert_int_equal(n, 0);
    /* jobs: submitted anonymously; only the handle or an admin reaches them */
    assert_int_equal(job_call(c, d.tcp, "submit", 0, 1), AIMS_OK);
    assert_int_equal(job_call(c, d.tcp, "status", 1, 0), AIMS_E_DENIED);
    assert_int_equal(job_call(c, d.ipc, "status", 0, 0), AIMS_OK);
    assert_int_equal(job_call(c, d.ipc, "cancel", 0, 0), AIMS_OK);
    aims_client_destroy(c);
    door_down(&d);
    aims_registry_destroy(r);
}

/* ---- allocation failures ------------------------------------------------------------------ */

static aims_status op_policy(void *ctx)
{
    (void)ctx;
    aims_policy *p = NULL;
    AIMSI_TRY(aims_policy_create(&p));
    aims_status rc = aims_policy_load_string(p, k_policy, "t.policy");
    if (rc == AIMS_OK) {
        rc = aims_policy_load_string(p, "allow x call y/*\njwt-audience aims\n", "more");
    }
    if (rc == AIMS_OK) {
        rc = aims_policy_set_jwt_claims(p, "aims", "iss", 10);
    }
    if (rc == AIMS_OK) {
        rc = aims_policy_check(p, "x", "call", "y/z");
    }
    aims_policy_destroy(p);
    return rc;
}

static void test_alloc_policy(void **state)
{
    (void)state;
    ta_fail_loop("policy", op_policy, NULL);
}

#if defined(AIMS_HAVE_OPENSSL)
static aims_status op_jwt(void *ctx)
{
    const char *tok = ctx;
    aims_policy *p = NULL;
    AIMSI_TRY(aims_policy_create(&p));
    aims_status rc = aims_policy_set_jwt_hs256(p, k_hs_key, strlen(k_hs_key));
    if (rc == AIMS_OK) {
        rc = aims_policy_set_jwt_claims(p, "aims", "test", 30);
    }
    char id[64];
    if (rc == AIMS_OK) {
        rc = aims_policy_verify_token(p, tok, id, sizeof id);
    }
    aims_policy_destroy(p);
    return rc;
}

static void test_alloc_jwt(void **state)
{
    (void)state;
    char pl[512], tok[4096];
    payload(pl, sizeof pl, "", 600);
    make_token(tok, sizeof tok, "{\"alg\":\"HS256\"}", pl, SIGN_HS, k_hs_key, strlen(k_hs_key),
               NULL);
    ta_fail_loop("jwt", op_jwt, tok);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_policy_decide, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_policy_decide_owned, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_policy_glob, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_policy_errors, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_policy_file, ta_setup, ta_teardown),
#if defined(AIMS_HAVE_OPENSSL)
        cmocka_unit_test_setup_teardown(test_jwt_hs256, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_jwt_es256, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_jwt_es256_openssl_cli, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_door_bearer_token, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_jwt, ta_setup, ta_teardown),
#endif
        cmocka_unit_test_setup_teardown(test_audit_json, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_door_peercred_and_denials, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_door_registry_audit, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_door_admin, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_policy, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
