/**
 * @file aims_tls.h
 * @brief Mutual TLS for the tls:// transport: certificates, trust, peer names.
 *
 * `tls://HOST:PORT` is tcp:// wrapped in TLS 1.3 (OpenSSL 3): the same frames,
 * the same services and clients, on any address (plain tcp:// only binds
 * loopback unless explicitly allowed). Both sides authenticate by default:
 *
 *  - the server (a node's listener) requires a client certificate signed by
 *    its trusted CA and refuses a peer without one;
 *  - the client checks the server's certificate against its trusted CA and
 *    the HOST of the url it dialed (the certificate's subjectAltName: a DNS
 *    name, or an IP address for a numeric HOST);
 *  - with allowed peer names set, the peer's certificate must also carry one
 *    of them (checked on both sides);
 *  - only TLS 1.3 is spoken, with ALPN "aims/1"; clients resume sessions.
 *
 * A verified certificate gives the peer an identity: its first DNS or URI
 * subjectAltName, else its subject CN.
 *
 * Usage: create a config, set the CA and the own certificate chain + key
 * (each setter reads and checks the files at once and says what is wrong),
 * then hand it to every node (aims_node_set_tls()) and client
 * (aims_client_set_tls()) that should speak tls://, before their first listen
 * or call on it. aims_tls_config_reload() re-reads the files (rotated
 * certificates) without a restart: new connections use them, open ones keep
 * theirs.
 *
 * A library built without OpenSSL (meson -Dtls=disabled) keeps these symbols;
 * they return AIMS_E_UNSUPPORTED ("built without TLS"), and so does a
 * tls:// listen or dial.
 *
 * Thread safety: a config may be used by any number of nodes and clients at
 * once and reloaded while they run; it is reference-counted, so destroying it
 * while nodes or clients still use it is safe (they keep it until they are
 * destroyed). The setters and aims_tls_config_reload() must not run
 * concurrently with each other (one thread configures; any thread may reload).
 *
 * Making certificates with the openssl command line: docs/SECURITY.md.
 */
#ifndef AIMS_TLS_H
#define AIMS_TLS_H

#include "aims_core.h"
#include "aims_svc.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque TLS configuration (trust anchors, own certificate, peer names). */
typedef struct aims_tls_config aims_tls_config;

/**
 * @brief Create an empty TLS configuration.
 * @param out [out] the new config; destroy with aims_tls_config_destroy().
 * @return AIMS_OK, AIMS_E_MISUSE (out NULL), AIMS_E_NOMEM,
 *         AIMS_E_UNSUPPORTED (built without TLS; *out stays NULL).
 * @since 0.1
 */
AIMS_API aims_status aims_tls_config_create(aims_tls_config **out);

/**
 * @brief Release the caller's reference; nodes and clients that use the
 *        config keep theirs. NULL is a no-op.
 * @since 0.1
 */
AIMS_API void aims_tls_config_destroy(aims_tls_config *cfg);

/**
 * @brief Trust anchors: a PEM file of CA certificates, or a directory of
 *        them hashed with `openssl rehash`.
 * @param cfg   The config.
 * @param path  File or directory; read now.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND (path missing),
 *         AIMS_E_INVAL (no certificate could be read from it), AIMS_E_NOMEM,
 *         AIMS_E_BACKEND. On error the previous setting stays.
 * @since 0.1
 */
AIMS_API aims_status aims_tls_config_set_ca(aims_tls_config *cfg, const char *path);

/**
 * @brief Own certificate chain (PEM, leaf first) and its private key (PEM).
 * @param cfg         The config.
 * @param chain_file  Certificate chain file; read now.
 * @param key_file    Private key file (unencrypted PEM); read now.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOTFOUND (a file is missing),
 *         AIMS_E_INVAL (not a certificate / key, or the key does not match
 *         the certificate), AIMS_E_NOMEM. On error the previous setting stays.
 * @note A node's tls:// listener needs it; a client without one can dial only
 *       servers that do not require client certificates (not libaims nodes).
 * @since 0.1
 */
AIMS_API aims_status aims_tls_config_set_cert(aims_tls_config *cfg, const char *chain_file,
                                              const char *key_file);

/**
 * @brief Allow only peers whose certificate carries @p name (a DNS name,
 *        wildcards in the certificate honoured, or the exact identity).
 *        May be called several times; with none set any certificate the CA
 *        signed is accepted (and, on the client, the dialed host must match).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (empty or over 255 bytes),
 *         AIMS_E_RANGE (more than 64 names), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_tls_config_add_peer_name(aims_tls_config *cfg, const char *name);

/**
 * @brief Bound on a server-side handshake: a peer that has not finished its
 *        handshake after @p ms milliseconds is dropped (default 10000), and a
 *        client's dial gives up after the same time.
 * @param ms 50..600000.
 * @param cfg  The TLS configuration; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE.
 * @since 0.1
 */
AIMS_API aims_status aims_tls_config_set_handshake_timeout(aims_tls_config *cfg, uint32_t ms);

/**
 * @brief Re-read the CA and the certificate/key files set before (rotated
 *        certificates) without a restart. New connections use the new files;
 *        cached client sessions are dropped.
 * @return AIMS_OK or the setters' errors; on error the config keeps the
 *         files it had.
 * @since 0.1
 */
AIMS_API aims_status aims_tls_config_reload(aims_tls_config *cfg);

/**
 * @brief The identity the own certificate gives (first DNS/URI
 *        subjectAltName, else the subject CN), or "" when none is set.
 *        In-process callers of a node carry this identity.
 * @return A string owned by @p cfg, valid until the next set_cert/reload.
 * @since 0.1
 */
AIMS_API const char *aims_tls_config_identity(const aims_tls_config *cfg);

/**
 * @brief Message of the last failed call on @p cfg ("" if none).
 * @since 0.1
 */
AIMS_API const char *aims_tls_config_errmsg(const aims_tls_config *cfg);

/**
 * @brief Serve and dial tls:// with @p cfg on this node (takes a reference).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (tls:// already in use on
 *         this node: set it before the first tls:// listen),
 *         AIMS_E_UNSUPPORTED (built without TLS).
 * @since 0.1
 */
AIMS_API aims_status aims_node_set_tls(aims_node *n, aims_tls_config *cfg);

/**
 * @brief Dial tls:// with @p cfg from this client (takes a reference).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (tls:// already in use on
 *         this client), AIMS_E_UNSUPPORTED (built without TLS).
 * @since 0.1
 */
AIMS_API aims_status aims_client_set_tls(aims_client *c, aims_tls_config *cfg);

#ifdef __cplusplus
}
#endif

#endif /* AIMS_TLS_H */
