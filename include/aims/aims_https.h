/*
 * aims_https.h -- HTTPS on the HTTP front door (issue 12 item 5, issue 10).
 *
 * Why. The front door (aims_http.h) lets Kubernetes probes, Prometheus and
 * programs in any language reach a node; across machines that traffic must
 * be encrypted and the server authenticated, with the same certificates the
 * node's tls:// transport already uses, so an operator manages one set of
 * files. Callers authenticate with the same JWT bearer tokens the native
 * protocol accepts ("Authorization: Bearer <JWT>"), judged by the node's one
 * policy (aims_policy.h): one policy for every door.
 *
 * How. aims_http_set_tls hands the config's certificate chain and key to the
 * HTTP server's TLS stack (libmicrohttpd's HTTPS, which is GnuTLS: OpenSSL
 * stays the library of tls://, the HTTP library brings its own). TLS 1.3
 * only, like tls://. The server does not ask for client certificates: on
 * this door callers are "anonymous" unless a bearer token verifies. With TLS
 * the server may listen on a non-loopback address without
 * AIMS_HTTP_INSECURE; its URL starts with "https://". docs/HTTP.md has the
 * curl commands.
 *
 * Threads: like the other aims_http setters (one thread, before start).
 */
/** @file */
#ifndef AIMS_HTTPS_H
#define AIMS_HTTPS_H

#include "aims_http.h"
#include "aims_tls.h"

AIMS_EXTERN_C_BEGIN

/**
 * @brief Serve HTTPS with @p cfg's certificate chain and private key.
 *
 * The files are read now (call it again after rotating them, then restart
 * the server: aims_http_stop + aims_http_start). Call before aims_http_start.
 * @param h    The server; must not be NULL (else AIMS_E_MISUSE).
 * Mutual TLS: when @p cfg requires peers -- it has a CA (aims_tls_config_set_ca,
 * a file) and allowed peer names (aims_tls_config_add_peer_name) -- the door
 * requires client certificates: a request whose connection has no
 * certificate verifying against that CA (chain and dates) and carrying one
 * of those names is answered 403 {"error": "client certificate ..."} before
 * routing (health and metrics included). A verified caller's identity is the
 * certificate's first DNS/URI subjectAltName, else its CN (as on tls://); the
 * node's policy judges that name (a valid JWT bearer token still wins).
 * Without peer names (or without a CA) no client certificate is asked for
 * (callers are "anonymous" unless a token verifies). The daemon gives the door its CA when it has
 * --tls-peer (docs/HTTP.md, section "Client certificates").
 * @param cfg  A config with a certificate (aims_tls_config_set_cert); its
 *             certificate, key, CA and peer names are read; borrowed, not kept.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (the server runs, or @p cfg has no
 *         certificate), AIMS_E_IO (a file cannot be read), AIMS_E_NOMEM,
 *         AIMS_E_UNSUPPORTED (built without HTTP or TLS, or the HTTP library
 *         has no HTTPS; a CA directory, or a CA when built without GnuTLS).
 * @note Thread safety: as the other aims_http setters.
 * @since 0.1
 */
AIMS_API aims_status aims_http_set_tls(aims_http *h, const aims_tls_config *cfg);

AIMS_EXTERN_C_END

#endif /* AIMS_HTTPS_H */
