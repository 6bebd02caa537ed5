/*
 * secret.c -- unguessable secrets from the OS CSPRNG, and comparing them.
 *
 * Why: a registry lease and a training job used to be reachable by anybody
 * who knew (or guessed) a small integer or a caller-chosen name. Registration
 * and submit now hand out a secret; renew/deregister and status/result/cancel
 * need it back. A secret must therefore be unpredictable even to somebody who
 * watched the process (no seeded PRNG, no clock, no address): it comes from
 * getrandom(2), the kernel CSPRNG, retried on EINTR and on short reads.
 *
 * Secrets travel as lowercase hex text (they sit in BYTES tensors and in
 * host code), AIMSI_SECRET_HEX characters for AIMSI_SECRET_BYTES random bytes
 * (128 bits). aimsi_secret_equal compares in time independent of where the
 * first difference is, so a remote caller cannot find a secret byte by byte
 * by timing the refusals.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "aimsi_core.h"

aims_status aimsi_secret_fill(void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        const ssize_t k = getrandom(p + got, n - got, 0);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return aimsi_err(NULL, AIMS_E_BACKEND, "getrandom: %s", strerror(errno));
        }
        got += (size_t)k;
    }
    return AIMS_OK;
}

aims_status aimsi_secret_hex(char out[AIMSI_SECRET_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[AIMSI_SECRET_BYTES];
    AIMSI_TRY(aimsi_secret_fill(raw, sizeof(raw)));
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = digits[raw[i] >> 4];
        out[2 * i + 1] = digits[raw[i] & 15u];
    }
    out[AIMSI_SECRET_HEX] = '\0';
    return AIMS_OK;
}

int aimsi_secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    if (a == NULL || b == NULL || alen != blen || alen == 0) {
        return 0;
    }
    unsigned char diff = 0;
    for (size_t i = 0; i < alen; i++) {
        diff |= (unsigned char)(a[i] ^ b[i]);
    }
    return diff == 0;
}
