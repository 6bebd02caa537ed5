/*
 * store_sha256.c -- SHA-256 for content-addressed blobs of the checkpoint
 * store (training data by reference, "sha256:<hex>"; docs/JOBS.md).
 *
 * Hashing is OpenSSL's (DESIGN.md §1: OpenSSL 3 for TLS, signatures and
 * hashing), so this file is the store's one door to it. Built without
 * OpenSSL (meson -Dtls=disabled) the call reports AIMS_E_UNSUPPORTED with a
 * clear "built without OpenSSL" instead of a home-made digest.
 */
#include <stdio.h>

#include "aimsi_store.h"

#if defined(AIMS_HAVE_OPENSSL)
#include <openssl/evp.h>

aims_status aimsi_sha256_hex(const void *p, size_t n, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    if (EVP_Digest(p, n, d, &dl, EVP_sha256(), NULL) != 1 || dl != 32) {
        return aimsi_err(NULL, AIMS_E_BACKEND, "sha256: EVP_Digest failed");
    }
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
    return AIMS_OK;
}
#else
aims_status aimsi_sha256_hex(const void *p, size_t n, char hex[65])
{
    (void)p;
    (void)n;
    (void)hex;
    return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "data by reference needs SHA-256: libaims was "
                                               "built without OpenSSL (meson -Dtls=enabled)");
}
#endif
