/*
 * tls_hooks.c -- what tls:// hangs on its SSL contexts (tls_config.c makes
 * them, aimsi_tls_ctx_hooks dresses them): peer names checked in the verify
 * callback at depth 0, so a wrong identity fails the handshake itself (the
 * peer sees an alert, not a later close) -- identity = first DNS or URI
 * subjectAltName, else the subject CN; ALPN "aims/1"; session tickets and the
 * client session cache (in the config, under its mutex). Also OpenSSL's
 * error text for the messages of tls.c and tls_config.c.
 */
#include "aimsi_tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

const unsigned char aimsi_tls_alpn[7] = {6, 'a', 'i', 'm', 's', '/', '1'};

/* ---- error text ------------------------------------------------------------------------------ */

/* The newest OpenSSL error as text ("" when the queue is empty). */
void aimsi_tls_errtext(char *out, size_t cap)
{
    const unsigned long e = ERR_peek_last_error();
    out[0] = '\0';
    if (e != 0) {
        const char *r = ERR_reason_error_string(e);
        if (r != NULL) {
            snprintf(out, cap, "%s", r);
        } else {
            ERR_error_string_n(e, out, cap);
        }
    }
    ERR_clear_error();
}

/* ---- identities and names ------------------------------------------------------------------ */

void aimsi_tls_cert_identity(X509 *cert, char *out, size_t cap)
{
    out[0] = '\0';
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && out[0] == '\0'; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS || g->type == GEN_URI) {
            const ASN1_IA5STRING *s = g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
            const int n = ASN1_STRING_length(s);
            if (n > 0 && (size_t)n < cap) {
                memcpy(out, ASN1_STRING_get0_data(s), (size_t)n);
                out[n] = '\0';
            }
        }
    }
    GENERAL_NAMES_free(gens);
    if (out[0] == '\0') {
        X509_NAME *subj = X509_get_subject_name(cert);
        if (subj == NULL || X509_NAME_get_text_by_NID(subj, NID_commonName, out, (int)cap) < 0) {
            out[0] = '\0';
        }
    }
}

/* Is the certificate allowed by cfg's peer names? Caller holds cfg->mu. */
static int name_allowed(const aims_tls_config *cfg, X509 *cert, const char *identity)
{
    if (cfg->n_names == 0) {
        return 1;
    }
    for (size_t i = 0; i < cfg->n_names; i++) {
        if (strcmp(cfg->names[i], identity) == 0 ||
            X509_check_host(cert, cfg->names[i], 0, 0, NULL) == 1) {
            return 1;
        }
    }
    return 0;
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
    if (!ok || X509_STORE_CTX_get_error_depth(x) != 0) {
        return ok;
    }
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls_conn *tc = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    if (tc == NULL || cert == NULL) {
        return ok;
    }
    aimsi_tls_cert_identity(cert, tc->peer, sizeof tc->peer);
    pthread_mutex_lock(&tc->cfg->mu);
    const int allowed = name_allowed(tc->cfg, cert, tc->peer);
    pthread_mutex_unlock(&tc->cfg->mu);
    if (!allowed) {
        X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl, (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, aimsi_tls_alpn, sizeof aimsi_tls_alpn, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* no "aims/1": refuse (no_application_protocol) */
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* ---- client session cache ----------------------------------------------------------------- */

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    tls_conn *tc = SSL_get_app_data(ssl);
    if (tc == NULL || tc->key[0] == '\0') {
        return 0;
    }
    tc->got_ticket = 1;
    if (!SSL_SESSION_is_resumable(sess)) {
        return 0;
    }
    aims_tls_config *cfg = tc->cfg;
    pthread_mutex_lock(&cfg->mu);
    tls_session *slot = NULL;
    for (size_t i = 0; i < TLS_SESSIONS && slot == NULL; i++) {
        if (cfg->sessions[i].sess != NULL && strcmp(cfg->sessions[i].key, tc->key) == 0) {
            slot = &cfg->sessions[i];
        }
    }
    if (slot == NULL) {
        slot = &cfg->sessions[cfg->next_session];
        cfg->next_session = (cfg->next_session + 1) % TLS_SESSIONS;
    }
    SSL_SESSION_free(slot->sess);
    slot->sess = sess; /* returning 1 keeps our reference */
    memcpy(slot->key, tc->key, strlen(tc->key) + 1);
    pthread_mutex_unlock(&cfg->mu);
    return 1;
}

void aimsi_tls_sessions_clear(aims_tls_config *cfg)
{
    for (size_t i = 0; i < TLS_SESSIONS; i++) {
        SSL_SESSION_free(cfg->sessions[i].sess);
        cfg->sessions[i].sess = NULL;
        cfg->sessions[i].key[0] = '\0';
    }
}


int aimsi_tls_ctx_hooks(SSL_CTX *ctx, int server)
{
    if (server) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"aims/1", 6);
        SSL_CTX_set_num_tickets(ctx, 1);
        return 0;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    if (SSL_CTX_set_alpn_protos(ctx, aimsi_tls_alpn, sizeof aimsi_tls_alpn) != 0) {
        return -1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);
    return 0;
}
