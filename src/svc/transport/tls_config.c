/*
 * tls_config.c -- aims_tls_config: the trust anchors, own certificate chain +
 * key and allowed peer names behind tls:// (tls.c), and the placeholder
 * tls:// vtable a node or client has before it was given a config.
 *
 * Each setter reads and checks its files at once (missing file, not a
 * certificate, key of another certificate: the message says which) by
 * building a fresh pair of SSL contexts (server and client side, TLS 1.3
 * only) and swapping them in only when everything loaded, so a failed call
 * or reload leaves the config as it was. Connections hold their own
 * reference to the context they started with; reload therefore affects new
 * connections only, and drops the cached client sessions (tickets of the old
 * server context would not be accepted anyway).
 *
 * The config is reference-counted: nodes and clients take a reference in
 * aims_node_set_tls / aims_client_set_tls (transport/table.c) and drop it
 * when they are destroyed, after their connections are gone.
 *
 * Built without OpenSSL (meson -Dtls=disabled) every entry point says so.
 */
#include "aimsi_stream.h"

#include <string.h>

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

uint64_t aimsi_tls_config_batch_waits(const aims_tls_config *cfg)
{
    (void)cfg;
    return 0;
}

uint64_t aimsi_tls_config_ra_fills(const aims_tls_config *cfg)
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

aims_status aimsi_tls_config_pems(const aims_tls_config *cfg, char **cert, char **key)
{
    (void)cfg, (void)cert, (void)key;
    return no_tls();
}

aims_status aimsi_tls_config_trust(const aims_tls_config *cfg, char **ca, char **names)
{
    (void)cfg, (void)ca, (void)names;
    return no_tls();
}

#else
/* ---- OpenSSL ------------------------------------------------------------------------------ */

#include "aimsi_tls.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

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

/* TLS 1.3 suites, fastest first. OpenSSL's default order puts AES-256-GCM
 * first; with AES-NI and carry-less multiply (this VM: AMD EPYC, `openssl
 * speed -evp`, docs/DOOR_SPEED.md) AES-128-GCM does the same job with 10
 * rounds instead of 14, which is what a 1 MiB frame pays for. Without AES-NI
 * (old x86) ChaCha20-Poly1305 is the fast one: the client offers it first
 * there, and the server (SSL_OP_PRIORITIZE_CHACHA) honours a client that
 * puts ChaCha first. All three stay allowed. */
static const char *suites(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("aes") || !__builtin_cpu_supports("pclmul")) {
        return "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
    }
#endif
    return "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
}

/* OpenSSL 3.0 decodes a certificate's extensions (key identifiers, usages)
 * into the X509 object the first time a verification needs them, and two
 * handshakes that first use one shared certificate at the same moment can
 * both write that cache while the other reads it (TSan, test_svc_matrix_tls:
 * ASN1_STRING_set of a 20-byte key id against ASN1_STRING_cmp in two client
 * dials). Decode them here, while ctx is still this thread's alone, for every
 * certificate its handshakes share: the store's CAs, its own certificate and
 * chain. (A CA directory is read lazily at verification time; not covered.) */
static void warm_cert_caches(SSL_CTX *ctx)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x != NULL) {
            (void)X509_check_purpose(x, -1, 0); /* -1: only fills the cache */
        }
    }
    X509 *own = SSL_CTX_get0_certificate(ctx);
    if (own != NULL) {
        (void)X509_check_purpose(own, -1, 0);
    }
    STACK_OF(X509) *chain = NULL;
    if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1) {
        for (int i = 0; i < sk_X509_num(chain); i++) {
            (void)X509_check_purpose(sk_X509_value(chain, i), -1, 0);
        }
    }
}

static aims_status ctx_setup(aims_tls_config *cfg, SSL_CTX *ctx, const char *ca, const char *cert,
                             const char *key, int server)
{
    char txt[200];
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_ciphersuites(ctx, suites()) != 1) {
        aimsi_tls_errtext(txt, sizeof txt);
        return aimsi_err(&cfg->obj, AIMS_E_NOMEM, "tls: cannot set the TLS 1.3 cipher suites "
                         "(%s)", txt);
    }
    if (server) {
        SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
    }
    int is_dir = 0;
    AIMSI_TRY(file_check(cfg, "CA", ca, &is_dir));
    const int ok = is_dir ? SSL_CTX_load_verify_dir(ctx, ca) : SSL_CTX_load_verify_file(ctx, ca);
    if (ok != 1) {
        aimsi_tls_errtext(txt, sizeof txt);
        return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: CA \"%s\": no certificate could be "
                         "read (%s)", ca, txt);
    }
    if (cert != NULL) {
        AIMSI_TRY(file_check(cfg, "certificate chain", cert, NULL));
        AIMSI_TRY(file_check(cfg, "private key", key, NULL));
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            aimsi_tls_errtext(txt, sizeof txt);
            return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: certificate chain \"%s\": %s", cert,
                             txt);
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            aimsi_tls_errtext(txt, sizeof txt);
            return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: private key \"%s\"%s: %s", key,
                             strstr(txt, "mismatch") != NULL ? " does not match the certificate"
                                                             : "",
                             txt);
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            aimsi_tls_errtext(txt, sizeof txt);
            return aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: private key \"%s\" does not match "
                             "the certificate \"%s\" (%s)", key, cert, txt);
        }
    }
    if (aimsi_tls_ctx_hooks(ctx, server) != 0) {
        return aimsi_err(&cfg->obj, AIMS_E_NOMEM, "tls: out of memory setting up a context");
    }
    if (server && !is_dir) { /* tell clients which CA to pick a certificate for */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (names != NULL) {
            SSL_CTX_set_client_CA_list(ctx, names);
        }
    }
    warm_cert_caches(ctx);
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
            aimsi_tls_cert_identity(own, ident, sizeof ident);
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
    aimsi_tls_sessions_clear(cfg);
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

uint64_t aimsi_tls_config_batch_waits(const aims_tls_config *cfg)
{
    return atomic_load(&((aims_tls_config *)(uintptr_t)cfg)->batch_waits);
}

uint64_t aimsi_tls_config_ra_fills(const aims_tls_config *cfg)
{
    return atomic_load(&((aims_tls_config *)(uintptr_t)cfg)->ra_fills);
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
    cfg->fam = (aimsi_stream_family){"tls", aimsi_tls_listen_fd, aimsi_tcp_dial_fd,
                                     aimsi_tcp_tune, &aimsi_tls_ops, cfg};
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
    aimsi_tls_sessions_clear(cfg);
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
            aimsi_tls_errtext(txt, sizeof txt);
            rc = aimsi_err(&cfg->obj, AIMS_E_INVAL, "tls: certificate \"%s\" / key \"%s\": %s%s",
                           chain_file, key_file, txt,
                           strstr(txt, "mismatch") != NULL ? " (the key does not match the "
                                                             "certificate)" : "");
        }
        if (rc == AIMS_OK) {
            X509 *own = SSL_CTX_get0_certificate(ctx);
            pthread_mutex_lock(&cfg->mu);
            aimsi_tls_cert_identity(own, cfg->identity, sizeof cfg->identity);
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

/* A whole PEM file as a NUL-terminated string (at most 1 MiB). */
static aims_status read_pem(const char *what, const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return aimsi_err(NULL, AIMS_E_IO, "tls: cannot open the %s \"%s\": %s", what, path,
                         strerror(errno));
    }
    const size_t cap = (size_t)1 << 20;
    char *buf = aimsi_malloc(cap + 1);
    if (buf == NULL) {
        fclose(f);
        return aimsi_err(NULL, AIMS_E_NOMEM, "tls: out of memory reading the %s", what);
    }
    const size_t n = fread(buf, 1, cap + 1, f);
    const int bad = ferror(f);
    fclose(f);
    if (bad || n == 0 || n > cap) {
        aimsi_free(buf);
        return aimsi_err(NULL, AIMS_E_IO, "tls: the %s \"%s\" is %s", what, path,
                         bad ? "unreadable" : n == 0 ? "empty" : "over 1 MiB");
    }
    buf[n] = '\0';
    *out = buf;
    return AIMS_OK;
}

aims_status aimsi_tls_config_pems(const aims_tls_config *cfg, char **cert, char **key)
{
    if (!aimsi_obj_ok(cfg, TLS_MAGIC) || cert == NULL || key == NULL) {
        return AIMSI_MISUSE("a TLS config and outputs are required");
    }
    if (cfg->cert_path == NULL || cfg->key_path == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "tls: the config has no certificate and key "
                                             "(aims_tls_config_set_cert)");
    }
    char *c = NULL, *k = NULL;
    AIMSI_TRY(read_pem("certificate chain", cfg->cert_path, &c));
    const aims_status rc = read_pem("private key", cfg->key_path, &k);
    if (rc != AIMS_OK) {
        aimsi_free(c);
        return rc;
    }
    *cert = c;
    *key = k;
    return AIMS_OK;
}

aims_status aimsi_tls_config_trust(const aims_tls_config *cfg, char **ca, char **names)
{
    if (!aimsi_obj_ok(cfg, TLS_MAGIC) || ca == NULL || names == NULL) {
        return AIMSI_MISUSE("a TLS config and outputs are required");
    }
    *ca = *names = NULL;
    if (cfg->ca_path == NULL) {
        return AIMS_OK;
    }
    struct stat st;
    if (stat(cfg->ca_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "tls: the CA \"%s\" is a directory; the "
                                                   "HTTPS door needs a CA file", cfg->ca_path);
    }
    size_t len = 1;
    for (size_t i = 0; i < cfg->n_names; i++) {
        len += strlen(cfg->names[i]) + 1;
    }
    char *nl = aimsi_malloc(len);
    if (nl == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "tls: out of memory for the peer names");
    }
    nl[0] = '\0';
    for (size_t i = 0; i < cfg->n_names; i++) {
        strcat(nl, cfg->names[i]);
        strcat(nl, "\n");
    }
    const aims_status rc = read_pem("CA", cfg->ca_path, ca);
    if (rc != AIMS_OK) {
        aimsi_free(nl);
        return rc;
    }
    *names = nl;
    return AIMS_OK;
}

#endif /* AIMS_HAVE_TLS */
