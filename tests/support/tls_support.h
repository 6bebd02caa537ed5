/*
 * tls_support.h -- test PKI for the tls:// tests: tests/support/mkcerts.sh
 * makes a CA and node/client certificates (good, expired, not yet valid,
 * wrong SAN, other CA) with the openssl CLI in a temporary directory at test
 * time; nothing is committed. Header-only; include after cmocka.h.
 */
#ifndef TLS_SUPPORT_H
#define TLS_SUPPORT_H

#include <stdio.h>
#include <stdlib.h>

#include <aims/aims_tls.h>

/* Make the PKI in dir; 0 on success. */
static int tls_make_pki(const char *dir)
{
    const char *src = getenv("AIMS_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/support/mkcerts.sh' '%s'", src ? src : ".", dir);
    return system(cmd);
}

/* A fresh /tmp/aims_<name>_XXXXXX directory (written to dir, cap bytes) holding
 * the test PKI; 0 on success, else -1 with the reason on stderr. */
static inline int tls_temp_pki(char *dir, size_t cap, const char *name)
{
    snprintf(dir, cap, "/tmp/aims_%s_XXXXXX", name);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return -1;
    }
    if (tls_make_pki(dir) != 0) {
        fprintf(stderr, "cannot make the test PKI with tests/support/mkcerts.sh\n");
        return -1;
    }
    return 0;
}

/* A config trusting dir/<ca>.pem with certificate dir/<who>.pem (who NULL: none). */
static aims_tls_config *tls_cfg2(const char *dir, const char *ca, const char *who)
{
    aims_tls_config *cfg = NULL;
    char a[512], b[512], c[512];
    if (aims_tls_config_create(&cfg) != AIMS_OK) {
        return NULL;
    }
    snprintf(a, sizeof a, "%s/%s.pem", dir, ca);
    if (aims_tls_config_set_ca(cfg, a) != AIMS_OK) {
        fprintf(stderr, "set_ca: %s\n", aims_tls_config_errmsg(cfg));
        aims_tls_config_destroy(cfg);
        return NULL;
    }
    if (who != NULL) {
        snprintf(b, sizeof b, "%s/%s.pem", dir, who);
        snprintf(c, sizeof c, "%s/%s.key", dir, who);
        if (aims_tls_config_set_cert(cfg, b, c) != AIMS_OK) {
            fprintf(stderr, "set_cert: %s\n", aims_tls_config_errmsg(cfg));
            aims_tls_config_destroy(cfg);
            return NULL;
        }
    }
    return cfg;
}

static aims_tls_config *tls_cfg(const char *dir, const char *who)
{
    return tls_cfg2(dir, "ca", who);
}

#endif /* TLS_SUPPORT_H */
