/*
 * jwt_support.h -- building JWTs in tests (tests/unit/svc/test_authz.c) and in
 * the JWT fuzz target (tests/fuzz/fuzz_jwt.c): base64url without padding and
 * an HS256 signature appended to "<header>.<payload>" with OpenSSL's HMAC,
 * the way a token issuer would make one. Header-only; needs AIMS_HAVE_OPENSSL
 * and linking with libcrypto.
 */
#ifndef JWT_SUPPORT_H
#define JWT_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* base64url (RFC 4648 §5, no padding) of n bytes into out, which needs
 * 4 * ceil(n / 3) + 1 bytes; NUL-terminated; returns the length. */
static inline size_t jwt_b64url(const unsigned char *in, size_t n, char *out)
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
    out[o] = '\0';
    return o;
}

/* HS256-sign the first len bytes of tok (the signing input) with key and
 * append ".<signature>" there; tok needs len + 45 bytes. Returns the token's
 * new length, or 0 when HMAC fails. */
static inline size_t jwt_hs256_append(char *tok, size_t len, const void *key, size_t key_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)tok, len, mac, &mac_len) ==
        NULL) {
        return 0;
    }
    tok[len] = '.';
    return len + 1 + jwt_b64url(mac, mac_len, tok + len + 1);
}

#endif /* JWT_SUPPORT_H */
