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
#include "../support/jwt_support.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char k_key[] = "fuzzing key of at least 32 bytes.....";

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
        const size_t n = jwt_hs256_append(tok, signed_len, k_key, strlen(k_key));
        if (n > 0) {
            (void)aimsi_jwt_verify(&p->jwt, tok, n, 1700000000, &cl, err, sizeof err);
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
