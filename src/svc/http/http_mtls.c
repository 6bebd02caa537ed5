/*
 * http_mtls.c -- client certificates on the HTTPS front door (issue 12 item 5).
 *
 * Why: a node whose TLS config names the peers it accepts (--tls-peer,
 * aims_tls_config_add_peer_name) should not let anyone with a browser past
 * its HTTPS door either; and callers with a certificate deserve the same
 * identity at the door as on tls:// (the policy sees the certificate name).
 *
 * How: libmicrohttpd's HTTPS is GnuTLS. Given the CA (MHD_OPTION_HTTPS_MEM_TRUST,
 * set by http_server.c) MHD asks every client for a certificate but leaves the
 * verdict to the application; this file gives it, on a connection's first
 * request (http_request.c caches it in the connection's socket context), before
 * routing: the GnuTLS session of the connection must hold a peer certificate
 * that verifies against that CA (chain, validity dates), the certificate must
 * carry one of the allowed names when there are any (GnuTLS' host matching on
 * its DNS subjectAltNames, else CN, as X509_check_host does for tls://), and
 * the identity is its first DNS or URI subjectAltName, else its CN -- the rule
 * of aimsi_tls_cert_identity. The only GnuTLS user in libaims; built when
 * meson finds gnutls (libmicrohttpd-dev depends on it), else a stub that
 * refuses with "built without GnuTLS".
 */
#include "aimsi_http.h"

#include <stdio.h>
#include <string.h>

#include <microhttpd.h>

#if defined(AIMSI_HTTP_GNUTLS)
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

/* One of the newline-separated allowed names is on the certificate. */
static int name_allowed(gnutls_x509_crt_t crt, const char *names)
{
    char one[256];
    while (names != NULL && *names != '\0') {
        const char *nl = strchr(names, '\n');
        const size_t n = nl != NULL ? (size_t)(nl - names) : strlen(names);
        if (n > 0 && n < sizeof(one)) {
            memcpy(one, names, n);
            one[n] = '\0';
            if (gnutls_x509_crt_check_hostname2(crt, one, 0) != 0) {
                return 1;
            }
        }
        names = nl != NULL ? nl + 1 : NULL;
    }
    return 0;
}

/* First DNS or URI subjectAltName, else the CN, else "". */
static void identity(gnutls_x509_crt_t crt, char *who, size_t cap)
{
    who[0] = '\0';
    for (unsigned i = 0; i < 64; i++) {
        char san[256];
        size_t sz = sizeof(san) - 1;
        const int t = gnutls_x509_crt_get_subject_alt_name(crt, i, san, &sz, NULL);
        if (t < 0 && t != GNUTLS_E_SHORT_MEMORY_BUFFER) {
            break;
        }
        if ((t == GNUTLS_SAN_DNSNAME || t == GNUTLS_SAN_URI) && sz < sizeof(san)) {
            san[sz] = '\0';
            snprintf(who, cap, "%s", san);
            return;
        }
    }
    char cn[256];
    size_t sz = sizeof(cn);
    if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &sz) == 0) {
        snprintf(who, cap, "%s", cn);
    }
}

int aimsi_http_peer_identity(struct MHD_Connection *conn, const char *names, char *who,
                             size_t cap, char *why, size_t why_cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t s = ci != NULL ? (gnutls_session_t)ci->tls_session : NULL;
    if (s == NULL) {
        snprintf(why, why_cap, "client certificate required (not a TLS connection)");
        return -1;
    }
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(s, &n);
    if (chain == NULL || n == 0) {
        snprintf(why, why_cap, "client certificate required: this door accepts only callers "
                               "with a certificate from the node's CA");
        return -1;
    }
    unsigned status = 0;
    const int v = gnutls_certificate_verify_peers2(s, &status);
    if (v < 0 || status != 0) {
        gnutls_datum_t txt = {NULL, 0};
        if (v >= 0 && gnutls_certificate_verification_status_print(
                          status, GNUTLS_CRT_X509, &txt, 0) == 0) {
            snprintf(why, why_cap, "client certificate rejected: %s", (const char *)txt.data);
            gnutls_free(txt.data);
        } else {
            snprintf(why, why_cap, "client certificate rejected: %s",
                     gnutls_strerror(v < 0 ? v : GNUTLS_E_CERTIFICATE_ERROR));
        }
        const size_t len = strlen(why);
        if (len > 0 && why[len - 1] == ' ') {
            why[len - 1] = '\0'; /* GnuTLS' text ends with a blank */
        }
        return -1;
    }
    gnutls_x509_crt_t crt = NULL;
    if (gnutls_x509_crt_init(&crt) < 0 ||
        gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) < 0) {
        gnutls_x509_crt_deinit(crt);
        snprintf(why, why_cap, "client certificate rejected: unreadable certificate");
        return -1;
    }
    int rc = 0;
    if (names != NULL && names[0] != '\0' && !name_allowed(crt, names)) {
        snprintf(why, why_cap, "client certificate rejected: not one of the node's allowed "
                               "peer names");
        rc = -1;
    } else {
        identity(crt, who, cap);
        if (who[0] == '\0') {
            snprintf(why, why_cap, "client certificate rejected: no DNS/URI name and no CN");
            rc = -1;
        }
    }
    gnutls_x509_crt_deinit(crt);
    return rc;
}

int aimsi_http_have_mtls(void)
{
    return 1;
}

#else /* !AIMSI_HTTP_GNUTLS */

int aimsi_http_peer_identity(struct MHD_Connection *conn, const char *names, char *who,
                             size_t cap, char *why, size_t why_cap)
{
    (void)conn, (void)names, (void)cap;
    who[0] = '\0';
    snprintf(why, why_cap, "client certificates: libaims was built without GnuTLS");
    return -1;
}

int aimsi_http_have_mtls(void)
{
    return 0;
}

#endif
