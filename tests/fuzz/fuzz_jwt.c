/*
 * fuzz_jwt.c -- fuzz target for the JWT verifier (src/svc/authz/jwt.c):
 * base64url, the strict JSON reader, the claim checks.
 *
 * The input is verified twice with an HS256 key configured: once as it is
 * (header parsing, algorithm checks, signature check), and once with its
 * first two dot-separated parts re-signed with the key, so the payload
 * parser and claim checks are reached too (the fuzzer cannot forge an HMAC).
 * No libaims block may stay live afterwards.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svc/authz/aimsi_authz.h"

#if defined(AIMS_HAVE_OPENSSL)
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char k_key[] = "fuzzing key of at least 32 bytes.....";

#if defined(AIMS_HAVE_OPENSSL)
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                           (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n) {
            out[o++] = a[(v >> 6) & 63];
        }
        if (i + 2 < n) {
            out[o++] = a[v & 63];
        }
    }
    return o;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > AIMSI_JWT_MAX) {
        return 0;
    }
    aims_policy *p = NULL;
    if (aims_policy_create(&p) != AIMS_OK) {
        return 0;
    }
    if (aims_policy_set_jwt_hs256(p, k_key, strlen(k_key)) != AIMS_OK ||
        aims_policy_set_jwt_claims(p, "aims", "fuzz", 30) != AIMS_OK) {
        __builtin_trap();
    }
    aimsi_jwt_claims cl;
    char err[200];
    (void)aimsi_jwt_verify(&p->jwt, (const char *)data, size, 1700000000, &cl, err, sizeof err);
#if defined(AIMS_HAVE_OPENSSL)
    /* re-sign "<header>.<payload>" (everything before the last dot, or all) */
    size_t signed_len = size;
    for (size_t i = size; i > 0; i--) {
        if (data[i - 1] == '.') {
            signed_len = i - 1;
            break;
        }
    }
    char *tok = malloc(signed_len + 64);
    if (tok != NULL) {
        memcpy(tok, data, signed_len);
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;
        if (HMAC(EVP_sha256(), k_key, (int)strlen(k_key), (const unsigned char *)tok, signed_len,
                 mac, &mac_len) != NULL) {
            tok[signed_len] = '.';
            const size_t n = b64url(mac, mac_len, tok + signed_len + 1);
            (void)aimsi_jwt_verify(&p->jwt, tok, signed_len + 1 + n, 1700000000, &cl, err,
                                   sizeof err);
        }
        free(tok);
    }
#endif
    aims_policy_destroy(p);
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
