/*
 * tls.c -- the tls:// transport: mutual TLS 1.3 (OpenSSL 3) as one more
 * stream family over TCP, and the aims_tls_config behind it. The only file
 * that includes OpenSSL.
 *
 * How it plugs in. tls:// uses tcp.c's address handling and stream.c's I/O
 * thread, framing and queues unchanged; what differs is the per-connection
 * hooks (aimsi_stream_ops): bytes go through SSL_read/SSL_write instead of
 * recv/sendmsg. A config embeds its own family and vtable (factory_user =
 * &cfg->fam), so a node or client that was given a config simply registers
 * that vtable for "tls" in its transport table; without one, the built-in
 * placeholder vtable explains what is missing.
 *
 * Handshakes. A dial secures its socket on the caller's thread, bounded by
 * the handshake timeout: SSL_do_handshake with poll() on WANT_READ/WANT_WRITE,
 * then a short wait for the server's verdict -- in TLS 1.3 a client finishes
 * before the server has checked the client certificate, so the client waits
 * until either a session ticket (accepted; cached for resumption) or an alert
 * (refused: "certificate required", "certificate expired"...) arrives, and a
 * refused dial fails at once with the server's reason instead of at the first
 * call. An accepted socket is handshaken on the I/O thread, never blocking:
 * each event advances SSL_do_handshake one step, stream.c arms EPOLLOUT on
 * WANT_WRITE and drops the connection when the budget passes.
 *
 * Locking. SSL objects are not safe for concurrent use, but stream.c reads
 * on the I/O thread while senders write from theirs: every SSL call of a
 * connection runs under its tls_conn mutex (lock order: stream conn mutex ->
 * tls_conn mutex -> config mutex). The config mutex guards the SSL_CTX pair
 * (swapped whole by reload; connections hold their own SSL_CTX references),
 * the peer names and the client session cache.
 *
 * Sockets go through a small BIO of our own that uses send(MSG_NOSIGNAL):
 * OpenSSL's socket BIO write()s, and a peer that went away would raise
 * SIGPIPE in the host.
 *
 * Peer names are checked in the verify callback at depth 0, so a wrong
 * identity fails the handshake itself (the peer sees an alert, not a later
 * close). Identity = first DNS or URI subjectAltName, else the subject CN.
 */
#include "aimsi_stream.h"

#include <string.h>

#define TLS_MAGIC 0x41544c53u /* "ATLS" */
#define TLS_NAME_MAX 256u
#define TLS_MAX_NAMES 64u
#define TLS_HS_MS_DEFAULT 10000u

#ifndef AIMS_HAVE_TLS
/* ---- built without TLS ---------------------------------------------------------------- */

static aims_status no_tls(void)
{
    return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                     "libaims was built without TLS (meson -Dtls=disabled): tls:// and "
                     "aims_tls_config are not available");
}

static aims_status nt_listen(const char *url, unsigned flags, int *out_fd, char *bound,
                             size_t bound_cap, char *unlink_path)
{
    (void)url, (void)flags, (void)out_fd, (void)bound, (void)bound_cap, (void)unlink_path;
    return no_tls();
}

static aims_status nt_dial(const char *url, int *out_fd)
{
    (void)url, (void)out_fd;
    return no_tls();
}

static const aimsi_stream_family nt_family = {"tls", nt_listen, nt_dial, NULL,
                                              &aimsi_stream_plain_ops, NULL};
static const aims_transport nt_vtable = AIMSI_STREAM_VTABLE("tls", &nt_family);

const aims_transport *aimsi_transport_tls(aims_tls_config *cfg)
{
    (void)cfg;
    return &nt_vtable;
}

void aimsi_tls_config_ref(aims_tls_config *cfg)
{
    (void)cfg;
}

uint64_t aimsi_tls_config_resumed(const aims_tls_config *cfg)
{
    (void)cfg;
    return 0;
}

AIMS_API aims_status aims_tls_config_create(aims_tls_config **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    return no_tls();
}

AIMS_API void aims_tls_config_destroy(aims_tls_config *cfg)
{
    (void)cfg;
}

AIMS_API aims_status aims_tls_config_set_ca(aims_tls_config *cfg, const char *path)
{
    (void)cfg, (void)path;
    return no_tls();
}

AIMS_API aims_status aims_tls_config_set_cert(aims_tls_config *cfg, const char *chain_file,
                                              const char *key_file)
{
    (void)cfg, (void)chain_file, (void)key_file;
    return no_tls();
}

AIMS_API aims_status aims_tls_config_add_peer_name(aims_tls_config *cfg, const char *name)
{
    (void)cfg, (void)name;
    return no_tls();
}

AIMS_API aims_status aims_tls_config_set_handshake_timeout(aims_tls_config *cfg, uint32_t ms)
{
    (void)cfg, (void)ms;
    return no_tls();
}

AIMS_API aims_status aims_tls_config_reload(aims_tls_config *cfg)
{
    (void)cfg;
    return no_tls();
}

AIMS_API const char *aims_tls_config_identity(const aims_tls_config *cfg)
{
    (void)cfg;
    return "";
}

AIMS_API const char *aims_tls_config_errmsg(const aims_tls_config *cfg)
{
    (void)cfg;
    return "libaims was built without TLS";
}

#else
/* ---- OpenSSL ------------------------------------------------------------------------------ */

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define TLS_SESSIONS 16u
#define TICKET_WAIT_MS 2000u

static const unsigned char k_alpn[] = {6, 'a', 'i', 'm', 's', '/', '1'};

typedef struct tls_session {
    char key[AIMSI_URL_MAX];
    SSL_SESSION *sess;
} tls_session;

struct aims_tls_config {
    aimsi_obj obj;
    atomic_int refs;
    pthread_mutex_t mu;
    aimsi_stream_family fam; /* ctx = this config */
    aims_transport vt;       /* factory_user = &fam */
    SSL_CTX *srv, *cli;      /* NULL until a CA is set */
    char *ca_path, *cert_path, *key_path;
    char identity[TLS_NAME_MAX];
    char *names[TLS_MAX_NAMES];
    size_t n_names;
    uint32_t hs_ms;
    tls_session sessions[TLS_SESSIONS];
    size_t next_session;
    atomic_uint_fast64_t resumed; /* dials that resumed a session */
};

typedef struct tls_conn {
    SSL *ssl;
    aims_tls_config *cfg;
    pthread_mutex_t mu;
    int got_ticket;
    char key[AIMSI_URL_MAX]; /* session cache key (dial side), "" on accept */
    char peer[TLS_NAME_MAX]; /* verified identity */
} tls_conn;

/* ---- a socket BIO that never raises SIGPIPE ------------------------------------------------- */

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

static int bio_fd(BIO *b)
{
    return (int)(intptr_t)BIO_get_data(b);
}

static int nb_write(BIO *b, const char *buf, int len)
{
    BIO_clear_retry_flags(b);
    ssize_t w;
    do {
        w = send(bio_fd(b), buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        BIO_set_retry_write(b);
    }
    return (int)w;
}

static int nb_read(BIO *b, char *buf, int len)
{
    BIO_clear_retry_flags(b);
    ssize_t r;
    do {
        r = recv(bio_fd(b), buf, (size_t)len, MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        BIO_set_retry_read(b);
    }
    return (int)r;
}

static long nb_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int nb_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "aims-socket");
    if (m != NULL) {
        BIO_meth_set_write(m, nb_write);
        BIO_meth_set_read(m, nb_read);
        BIO_meth_set_ctrl(m, nb_ctrl);
        BIO_meth_set_create(m, nb_create);
    }
    g_bio_method = m;
}

/* ---- error text ------------------------------------------------------------------------------ */

/* The newest OpenSSL error as text ("" when the queue is empty). */
static void ssl_errtext(char *out, size_t cap)
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

/* Why a handshake failed: the certificate verdict first, else OpenSSL's reason. */
static void hs_reason(tls_conn *tc, int ret, char *out, size_t cap)
{
    const int e = SSL_get_error(tc->ssl, ret);
    const long v = SSL_get_verify_result(tc->ssl);
    char txt[200];
    ssl_errtext(txt, sizeof txt);
    if (v == X509_V_ERR_APPLICATION_VERIFICATION) {
        snprintf(out, cap, "peer certificate rejected: identity \"%s\" is not among the allowed "
                 "peer names", tc->peer);
    } else if (v != X509_V_OK) {
        snprintf(out, cap, "peer certificate rejected: %s", X509_verify_cert_error_string(v));
    } else if (txt[0] != '\0') {
        snprintf(out, cap, "TLS handshake failed: %s%s", txt,
                 strstr(txt, "wrong version") != NULL || strstr(txt, "packet length") != NULL ||
                         strstr(txt, "http request") != NULL
                     ? " (the peer does not speak TLS)"
                     : "");
    } else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
        snprintf(out, cap, "connection closed during the TLS handshake (%s)",
                 errno != 0 ? strerror(errno) : "end of stream; is it a TLS port?");
    } else {
        snprintf(out, cap, "TLS handshake failed (SSL error %d)", e);
    }
}

/* ---- identities and names ------------------------------------------------------------------ */

static void cert_identity(X509 *cert, char *out, size_t cap)
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
    cert_identity(cert, tc->peer, sizeof tc->peer);
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
    if (SSL_select_next_proto(&sel, outlen, k_alpn, sizeof k_alpn, in, inlen) !=
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

static void sessions_clear(aims_tls_config *cfg)
{
    for (size_t i = 0; i < TLS_SESSIONS; i++) {
        SSL_SESSION_free(cfg->sessions[i].sess);
        cfg->sessions[i].sess = NULL;
        cfg->sessions[i].key[0] = '\0';
    }
}

/* ---- building the contexts ----------------------------------------------------------------- */

static aims_status file_check(aims_tls_config *cfg, const char *what, const char *path, int *is_dir)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return aimsi_err(&cfg->obj, AIMS_E_NOTFOUND, "tls: %s \"%s\": %s", what, path,
                         strerror(errno));
    }
    if (is_dir != NULL) {
        *is_dir = S_ISDIR(st.st_mode);
    } else if (S_ISDIR(st.st_mode)) {
        return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: %s \"%s\" is a directory, expected a "
                         "PEM file", what, path);
    }
    return AIMS_OK;
}

static aims_status ctx_setup(aims_tls_config *cfg, SSL_CTX *ctx, const char *ca, const char *cert,
                             const char *key, int server)
{
    char txt[200];
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int is_dir = 0;
    AIMSI_TRY(file_check(cfg, "CA", ca, &is_dir));
    const int ok = is_dir ? SSL_CTX_load_verify_dir(ctx, ca) : SSL_CTX_load_verify_file(ctx, ca);
    if (ok != 1) {
        ssl_errtext(txt, sizeof txt);
        return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: CA \"%s\": no certificate could be "
                         "read (%s)", ca, txt);
    }
    if (cert != NULL) {
        AIMSI_TRY(file_check(cfg, "certificate chain", cert, NULL));
        AIMSI_TRY(file_check(cfg, "private key", key, NULL));
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            ssl_errtext(txt, sizeof txt);
            return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: certificate chain \"%s\": %s", cert,
                             txt);
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            ssl_errtext(txt, sizeof txt);
            return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: private key \"%s\"%s: %s", key,
                             strstr(txt, "mismatch") != NULL ? " does not match the certificate"
                                                             : "",
                             txt);
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            ssl_errtext(txt, sizeof txt);
            return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: private key \"%s\" does not match "
                             "the certificate \"%s\" (%s)", key, cert, txt);
        }
    }
    if (server) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"aims/1", 6);
        SSL_CTX_set_num_tickets(ctx, 1);
        if (!is_dir) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
            if (names != NULL) {
                SSL_CTX_set_client_CA_list(ctx, names);
            }
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
        if (SSL_CTX_set_alpn_protos(ctx, k_alpn, sizeof k_alpn) != 0) {
            return aimsi_err(&cfg->obj, AIMS_E_NOMEM, "tls: out of memory setting ALPN");
        }
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session);
    }
    ERR_clear_error();
    return AIMS_OK;
}

/* Build both contexts from the given files and swap them in (all or nothing). */
static aims_status rebuild(aims_tls_config *cfg, const char *ca, const char *cert,
                           const char *key)
{
    SSL_CTX *srv = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cli = SSL_CTX_new(TLS_client_method());
    aims_status rc = AIMS_OK;
    if (srv == NULL || cli == NULL) {
        rc = aimsi_err(&cfg->obj, AIMS_E_NOMEM, "tls: out of memory creating SSL contexts");
    }
    if (rc == AIMS_OK) {
        rc = ctx_setup(cfg, srv, ca, cert, key, 1);
    }
    if (rc == AIMS_OK) {
        rc = ctx_setup(cfg, cli, ca, cert, key, 0);
    }
    char ident[TLS_NAME_MAX] = "";
    if (rc == AIMS_OK && cert != NULL) {
        X509 *own = SSL_CTX_get0_certificate(srv);
        if (own != NULL) {
            cert_identity(own, ident, sizeof ident);
        }
    }
    if (rc != AIMS_OK) {
        SSL_CTX_free(srv);
        SSL_CTX_free(cli);
        ERR_clear_error();
        return rc;
    }
    pthread_mutex_lock(&cfg->mu);
    SSL_CTX *old_srv = cfg->srv;
    SSL_CTX *old_cli = cfg->cli;
    cfg->srv = srv;
    cfg->cli = cli;
    memcpy(cfg->identity, ident, sizeof ident);
    sessions_clear(cfg);
    pthread_mutex_unlock(&cfg->mu);
    SSL_CTX_free(old_srv);
    SSL_CTX_free(old_cli);
    return AIMS_OK;
}

/* Replace *slot with a copy of s (NULL clears). */
static aims_status set_path(aims_tls_config *cfg, char **slot, const char *s)
{
    char *d = NULL;
    if (s != NULL) {
        d = aimsi_strdup(s);
        if (d == NULL) {
            return aimsi_err(&cfg->obj, AIMS_E_NOMEM, "tls: out of memory");
        }
    }
    aimsi_free(*slot);
    *slot = d;
    return AIMS_OK;
}

/* ---- connections -------------------------------------------------------------------------- */

static void tc_free(tls_conn *tc)
{
    if (tc == NULL) {
        return;
    }
    SSL_free(tc->ssl);
    pthread_mutex_destroy(&tc->mu);
    aimsi_free(tc);
}

static aims_status tc_new(aims_tls_config *cfg, int fd, int server, const char *url,
                          tls_conn **out)
{
    pthread_once(&g_bio_once, bio_method_init);
    tls_conn *tc = aimsi_calloc(1, sizeof *tc);
    if (tc == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for a TLS connection", url);
    }
    if (pthread_mutex_init(&tc->mu, NULL) != 0) {
        aimsi_free(tc);
        return aimsi_err(NULL, AIMS_E_BACKEND, "%s: pthread_mutex_init failed", url);
    }
    tc->cfg = cfg;
    pthread_mutex_lock(&cfg->mu);
    SSL_CTX *ctx = server ? cfg->srv : cfg->cli;
    const int has_cert = cfg->cert_path != NULL;
    tc->ssl = ctx != NULL ? SSL_new(ctx) : NULL;
    pthread_mutex_unlock(&cfg->mu);
    aims_status rc = AIMS_OK;
    if (ctx == NULL) {
        rc = aimsi_err(NULL, AIMS_E_STATE, "%s: the TLS config has no CA (aims_tls_config_set_ca)",
                       url);
    } else if (server && !has_cert) {
        rc = aimsi_err(NULL, AIMS_E_STATE, "%s: the TLS config has no certificate to serve with "
                       "(aims_tls_config_set_cert)", url);
    } else if (tc->ssl == NULL || g_bio_method == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for a TLS connection", url);
    }
    BIO *bio = rc == AIMS_OK ? BIO_new(g_bio_method) : NULL;
    if (rc == AIMS_OK && bio == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for a TLS connection", url);
    }
    if (rc != AIMS_OK) {
        ERR_clear_error();
        tc_free(tc);
        return rc;
    }
    BIO_set_data(bio, (void *)(intptr_t)fd);
    SSL_set_bio(tc->ssl, bio, bio);
    SSL_set_app_data(tc->ssl, tc);
    *out = tc;
    return AIMS_OK;
}

/* Wait until fd is ready for what `err` (SSL_ERROR_WANT_*) asks, or the deadline. */
static int wait_fd(int fd, int err, uint64_t deadline)
{
    const uint64_t now = aimsi_now_ns();
    if (now >= deadline) {
        return 0;
    }
    struct pollfd p = {fd, (short)(err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
    const int n = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
    return n >= 0 || errno == EINTR;
}

/* Client host check: an IP SAN for a numeric host, else a DNS SAN (and SNI). */
static aims_status set_host(tls_conn *tc, const char *url)
{
    const char *rest = strstr(url, "://");
    rest = rest != NULL ? rest + 3 : url;
    char host[128];
    const char *end = NULL;
    if (*rest == '[') {
        rest++;
        end = strchr(rest, ']');
    } else {
        end = strrchr(rest, ':');
    }
    if (end == NULL || (size_t)(end - rest) >= sizeof host) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: expected tls://HOST:PORT", url);
    }
    memcpy(host, rest, (size_t)(end - rest));
    host[end - rest] = '\0';
    unsigned char buf[16];
    int ok;
    if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tc->ssl), host);
    } else {
        ok = SSL_set1_host(tc->ssl, host) && SSL_set_tlsext_host_name(tc->ssl, host);
    }
    return ok == 1 ? AIMS_OK : aimsi_err(NULL, AIMS_E_NOMEM, "%s: cannot set the TLS host", url);
}

/* TLS 1.3: wait for the server's verdict on our certificate (a ticket, or an alert). */
static aims_status await_verdict(tls_conn *tc, int fd, const char *url, uint64_t deadline)
{
    const uint64_t cap = aimsi_now_ns() + (uint64_t)TICKET_WAIT_MS * 1000000u;
    if (cap < deadline) {
        deadline = cap;
    }
    while (!tc->got_ticket) {
        unsigned char b;
        size_t got = 0;
        ERR_clear_error();
        errno = 0;
        const int r = SSL_peek_ex(tc->ssl, &b, 1, &got);
        if (r == 1) {
            return AIMS_OK; /* application data: accepted */
        }
        const int e = SSL_get_error(tc->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (tc->got_ticket || aimsi_now_ns() >= deadline) {
                return AIMS_OK; /* no verdict in time: assume accepted */
            }
            (void)wait_fd(fd, e, deadline);
            continue;
        }
        char txt[200];
        ssl_errtext(txt, sizeof txt);
        return aimsi_err(NULL, AIMS_E_IO, "%s: the server refused the TLS connection: %s", url,
                         txt[0] != '\0' ? txt : "closed after the handshake");
    }
    return AIMS_OK;
}

static aims_status tls_dial(void *ctx, int fd, const char *url, void **out_sx)
{
    aims_tls_config *cfg = ctx;
    tls_conn *tc = NULL;
    AIMSI_TRY(tc_new(cfg, fd, 0, url, &tc));
    aims_status rc = aimsi_stream_copy_url(tc->key, sizeof tc->key, url, "tls url");
    if (rc == AIMS_OK) {
        rc = set_host(tc, url);
    }
    if (rc != AIMS_OK) {
        tc_free(tc);
        return rc;
    }
    pthread_mutex_lock(&cfg->mu);
    for (size_t i = 0; i < TLS_SESSIONS; i++) {
        if (cfg->sessions[i].sess != NULL && strcmp(cfg->sessions[i].key, url) == 0) {
            (void)SSL_set_session(tc->ssl, cfg->sessions[i].sess);
        }
    }
    const uint64_t deadline = aimsi_now_ns() + (uint64_t)cfg->hs_ms * 1000000u;
    pthread_mutex_unlock(&cfg->mu);
    SSL_set_connect_state(tc->ssl);
    for (;;) {
        ERR_clear_error();
        errno = 0;
        const int r = SSL_do_handshake(tc->ssl);
        if (r == 1) {
            break;
        }
        const int e = SSL_get_error(tc->ssl, r);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
            aimsi_now_ns() < deadline) {
            (void)wait_fd(fd, e, deadline);
            continue;
        }
        char why[320];
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            snprintf(why, sizeof why, "TLS handshake not finished after %u ms", cfg->hs_ms);
        } else {
            hs_reason(tc, r, why, sizeof why);
        }
        tc_free(tc);
        return aimsi_err(NULL, AIMS_E_IO, "%s: %s", url, why);
    }
    rc = await_verdict(tc, fd, url, deadline);
    if (rc != AIMS_OK) {
        tc_free(tc);
        return rc;
    }
    if (SSL_session_reused(tc->ssl)) {
        atomic_fetch_add(&cfg->resumed, 1);
    }
    if (tc->peer[0] == '\0') { /* a resumed session: no verify callback ran */
        X509 *pc = SSL_get0_peer_certificate(tc->ssl);
        if (pc != NULL) {
            cert_identity(pc, tc->peer, sizeof tc->peer);
        }
    }
    *out_sx = tc;
    return AIMS_OK;
}

static aims_status tls_accept(void *ctx, int fd, void **out_sx, uint64_t *budget_ns)
{
    aims_tls_config *cfg = ctx;
    tls_conn *tc = NULL;
    AIMSI_TRY(tc_new(cfg, fd, 1, "tls", &tc));
    SSL_set_accept_state(tc->ssl);
    pthread_mutex_lock(&cfg->mu);
    *budget_ns = (uint64_t)cfg->hs_ms * 1000000u;
    pthread_mutex_unlock(&cfg->mu);
    *out_sx = tc;
    return AIMS_OK;
}

static int tls_handshake(void *sx, char *why, size_t cap)
{
    tls_conn *tc = sx;
    pthread_mutex_lock(&tc->mu);
    ERR_clear_error();
    errno = 0;
    const int r = SSL_do_handshake(tc->ssl);
    int res = AIMSI_HS_DONE;
    if (r != 1) {
        const int e = SSL_get_error(tc->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            res = AIMSI_HS_WANT_READ;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            res = AIMSI_HS_WANT_WRITE;
        } else {
            hs_reason(tc, r, why, cap);
            res = AIMSI_HS_FAILED;
        }
    } else {
        const unsigned char *proto = NULL;
        unsigned plen = 0;
        SSL_get0_alpn_selected(tc->ssl, &proto, &plen);
        if (plen != sizeof k_alpn - 1 || memcmp(proto, k_alpn + 1, plen) != 0) {
            snprintf(why, cap, "the client did not offer ALPN \"aims/1\"");
            res = AIMSI_HS_FAILED;
        } else if (tc->peer[0] == '\0') {
            X509 *pc = SSL_get0_peer_certificate(tc->ssl);
            if (pc != NULL) {
                cert_identity(pc, tc->peer, sizeof tc->peer);
            }
        }
    }
    pthread_mutex_unlock(&tc->mu);
    return res;
}

static ssize_t tls_read(void *sx, int fd, void *buf, size_t len)
{
    (void)fd;
    tls_conn *tc = sx;
    size_t total = 0;
    ssize_t res = 0;
    pthread_mutex_lock(&tc->mu);
    while (total < len) {
        size_t got = 0;
        ERR_clear_error();
        errno = 0;
        const int r = SSL_read_ex(tc->ssl, (uint8_t *)buf + total, len - total, &got);
        if (r == 1) {
            total += got;
            continue;
        }
        const int e = SSL_get_error(tc->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            res = -1;
            errno = EAGAIN;
        } else if (e == SSL_ERROR_ZERO_RETURN ||
                   (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)) {
            res = 0; /* close_notify, or end of stream */
        } else {
            char txt[200];
            ssl_errtext(txt, sizeof txt);
            if (total == 0) {
                aimsi_log(AIMS_LOG_WARN, "tls transport: connection failed: %s",
                          txt[0] != '\0' ? txt : strerror(errno));
            }
            res = -1;
            errno = e == SSL_ERROR_SYSCALL && errno != 0 ? errno : EPROTO;
        }
        break;
    }
    pthread_mutex_unlock(&tc->mu);
    return total > 0 ? (ssize_t)total : res;
}

static ssize_t tls_writev(void *sx, int fd, const struct iovec *iov, int n)
{
    (void)fd;
    tls_conn *tc = sx;
    size_t total = 0;
    int err = 0;
    pthread_mutex_lock(&tc->mu);
    for (int i = 0; i < n && err == 0; i++) {
        size_t off = 0;
        while (off < iov[i].iov_len) {
            size_t w = 0;
            ERR_clear_error();
            errno = 0;
            const int r = SSL_write_ex(tc->ssl, (const uint8_t *)iov[i].iov_base + off,
                                       iov[i].iov_len - off, &w);
            if (r == 1) {
                off += w;
                total += w;
                continue;
            }
            const int e = SSL_get_error(tc->ssl, r);
            err = (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? EAGAIN
                  : (e == SSL_ERROR_SYSCALL && errno != 0)                  ? errno
                                                                            : EPIPE;
            ERR_clear_error();
            break;
        }
    }
    pthread_mutex_unlock(&tc->mu);
    if (total > 0) {
        return (ssize_t)total;
    }
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

static void tls_close(void *sx)
{
    tls_conn *tc = sx;
    pthread_mutex_lock(&tc->mu);
    if (SSL_is_init_finished(tc->ssl)) {
        (void)SSL_shutdown(tc->ssl); /* best effort close_notify; never waits */
    }
    ERR_clear_error();
    pthread_mutex_unlock(&tc->mu);
    tc_free(tc);
}

static const char *tls_peer(void *sx)
{
    const tls_conn *tc = sx;
    return tc->peer[0] != '\0' ? tc->peer : NULL;
}

static const aimsi_stream_ops tls_ops = {tls_dial,  tls_accept, tls_handshake, tls_read,
                                         tls_writev, tls_close, tls_peer};

/* ---- the family ------------------------------------------------------------------------------- */

static aims_status tls_listen_fd(const char *url, unsigned flags, int *out_fd, char *bound,
                                 size_t bound_cap, char *unlink_path)
{
    /* Encrypted and authenticated: any address is fine. */
    return aimsi_tcp_listen_fd(url, flags | AIMS_LISTEN_INSECURE, out_fd, bound, bound_cap,
                               unlink_path);
}

static aims_status unset_listen(const char *url, unsigned flags, int *out_fd, char *bound,
                                size_t bound_cap, char *unlink_path)
{
    (void)flags, (void)out_fd, (void)bound, (void)bound_cap, (void)unlink_path;
    return aimsi_err(NULL, AIMS_E_STATE, "%s: no TLS configuration on this node: call "
                     "aims_node_set_tls() first (aims_node --tls-ca/--tls-cert/--tls-key)", url);
}

static aims_status unset_dial(const char *url, int *out_fd)
{
    (void)out_fd;
    return aimsi_err(NULL, AIMS_E_STATE, "%s: no TLS configuration on this client: call "
                     "aims_client_set_tls() first", url);
}

static const aimsi_stream_family unset_family = {"tls", unset_listen, unset_dial, NULL,
                                                 &aimsi_stream_plain_ops, NULL};
static const aims_transport unset_vtable = AIMSI_STREAM_VTABLE("tls", &unset_family);

const aims_transport *aimsi_transport_tls(aims_tls_config *cfg)
{
    return cfg != NULL ? &cfg->vt : &unset_vtable;
}

void aimsi_tls_config_ref(aims_tls_config *cfg)
{
    atomic_fetch_add(&cfg->refs, 1);
}

uint64_t aimsi_tls_config_resumed(const aims_tls_config *cfg)
{
    return atomic_load(&((aims_tls_config *)(uintptr_t)cfg)->resumed);
}

/* ---- the public config -------------------------------------------------------------------- */

#define CFG_CHECK(cfg)                                                 \
    do {                                                               \
        if (!aimsi_obj_ok((cfg), TLS_MAGIC)) {                          \
            return AIMSI_MISUSE("NULL or destroyed aims_tls_config");  \
        }                                                              \
    } while (0)

AIMS_API aims_status aims_tls_config_create(aims_tls_config **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_tls_config *cfg = aimsi_calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "tls: out of memory for a config");
    }
    if (pthread_mutex_init(&cfg->mu, NULL) != 0) {
        aimsi_free(cfg);
        return aimsi_err(NULL, AIMS_E_BACKEND, "tls: pthread_mutex_init failed");
    }
    aimsi_obj_init(&cfg->obj, TLS_MAGIC);
    atomic_init(&cfg->refs, 1);
    cfg->hs_ms = TLS_HS_MS_DEFAULT;
    cfg->fam = (aimsi_stream_family){"tls", tls_listen_fd, aimsi_tcp_dial_fd, aimsi_tcp_tune,
                                     &tls_ops, cfg};
    cfg->vt = (aims_transport)AIMSI_STREAM_VTABLE("tls", &cfg->fam);
    *out = cfg;
    return AIMS_OK;
}

AIMS_API void aims_tls_config_destroy(aims_tls_config *cfg)
{
    if (!aimsi_obj_ok(cfg, TLS_MAGIC) || atomic_fetch_sub(&cfg->refs, 1) != 1) {
        return;
    }
    SSL_CTX_free(cfg->srv);
    SSL_CTX_free(cfg->cli);
    sessions_clear(cfg);
    aimsi_free(cfg->ca_path);
    aimsi_free(cfg->cert_path);
    aimsi_free(cfg->key_path);
    for (size_t i = 0; i < cfg->n_names; i++) {
        aimsi_free(cfg->names[i]);
    }
    pthread_mutex_destroy(&cfg->mu);
    aimsi_obj_kill(&cfg->obj);
    aimsi_free(cfg);
}

AIMS_API aims_status aims_tls_config_set_ca(aims_tls_config *cfg, const char *path)
{
    CFG_CHECK(cfg);
    if (path == NULL || path[0] == '\0') {
        return aimsi_err(&cfg->obj, AIMS_E_MISUSE, "aims_tls_config_set_ca: path is NULL or empty");
    }
    AIMSI_TRY(rebuild(cfg, path, cfg->cert_path, cfg->key_path));
    return set_path(cfg, &cfg->ca_path, path);
}

AIMS_API aims_status aims_tls_config_set_cert(aims_tls_config *cfg, const char *chain_file,
                                              const char *key_file)
{
    CFG_CHECK(cfg);
    if (chain_file == NULL || key_file == NULL || chain_file[0] == '\0' || key_file[0] == '\0') {
        return aimsi_err(&cfg->obj, AIMS_E_MISUSE,
                         "aims_tls_config_set_cert: chain_file and key_file are required");
    }
    if (cfg->ca_path == NULL) {
        /* Check the pair now with a throw-away context; built for real with the CA. */
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (ctx == NULL) {
            return aimsi_err(&cfg->obj, AIMS_E_NOMEM, "tls: out of memory");
        }
        aims_status rc = file_check(cfg, "certificate chain", chain_file, NULL);
        if (rc == AIMS_OK) {
            rc = file_check(cfg, "private key", key_file, NULL);
        }
        if (rc == AIMS_OK && (SSL_CTX_use_certificate_chain_file(ctx, chain_file) != 1 ||
                              SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
                              SSL_CTX_check_private_key(ctx) != 1)) {
            char txt[200];
            ssl_errtext(txt, sizeof txt);
            rc = aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: certificate \"%s\" / key \"%s\": %s%s",
                           chain_file, key_file, txt,
                           strstr(txt, "mismatch") != NULL ? " (the key does not match the "
                                                             "certificate)" : "");
        }
        if (rc == AIMS_OK) {
            X509 *own = SSL_CTX_get0_certificate(ctx);
            pthread_mutex_lock(&cfg->mu);
            cert_identity(own, cfg->identity, sizeof cfg->identity);
            pthread_mutex_unlock(&cfg->mu);
        }
        SSL_CTX_free(ctx);
        AIMSI_TRY(rc);
    } else {
        AIMSI_TRY(rebuild(cfg, cfg->ca_path, chain_file, key_file));
    }
    AIMSI_TRY(set_path(cfg, &cfg->cert_path, chain_file));
    return set_path(cfg, &cfg->key_path, key_file);
}

AIMS_API aims_status aims_tls_config_add_peer_name(aims_tls_config *cfg, const char *name)
{
    CFG_CHECK(cfg);
    if (name == NULL || name[0] == '\0' || strlen(name) >= TLS_NAME_MAX) {
        return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: a peer name must be 1..%u bytes",
                         TLS_NAME_MAX - 1);
    }
    char *d = aimsi_strdup(name);
    if (d == NULL) {
        return aimsi_err(&cfg->obj, AIMS_E_NOMEM, "tls: out of memory");
    }
    pthread_mutex_lock(&cfg->mu);
    const int full = cfg->n_names >= TLS_MAX_NAMES;
    if (!full) {
        cfg->names[cfg->n_names++] = d;
    }
    pthread_mutex_unlock(&cfg->mu);
    if (full) {
        aimsi_free(d);
        return aimsi_err(&cfg->obj, AIMS_E_RANGE, "tls: at most %u peer names", TLS_MAX_NAMES);
    }
    return AIMS_OK;
}

AIMS_API aims_status aims_tls_config_set_handshake_timeout(aims_tls_config *cfg, uint32_t ms)
{
    CFG_CHECK(cfg);
    if (ms < 50u || ms > 600000u) {
        return aimsi_err(&cfg->obj, AIMS_E_RANGE, "tls: handshake timeout %u ms is outside "
                         "50..600000", (unsigned)ms);
    }
    pthread_mutex_lock(&cfg->mu);
    cfg->hs_ms = ms;
    pthread_mutex_unlock(&cfg->mu);
    return AIMS_OK;
}

AIMS_API aims_status aims_tls_config_reload(aims_tls_config *cfg)
{
    CFG_CHECK(cfg);
    if (cfg->ca_path == NULL) {
        return aimsi_err(&cfg->obj, AIMS_E_STATE, "tls: nothing to reload: no CA was set");
    }
    return rebuild(cfg, cfg->ca_path, cfg->cert_path, cfg->key_path);
}

AIMS_API const char *aims_tls_config_identity(const aims_tls_config *cfg)
{
    return aimsi_obj_ok(cfg, TLS_MAGIC) ? cfg->identity : "";
}

AIMS_API const char *aims_tls_config_errmsg(const aims_tls_config *cfg)
{
    return aimsi_obj_ok(cfg, TLS_MAGIC) ? cfg->obj.errmsg : "";
}

#endif /* AIMS_HAVE_TLS */
