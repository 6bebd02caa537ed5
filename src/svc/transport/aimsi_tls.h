/*
 * aimsi_tls.h -- private to src/svc/transport: what tls.c (connections,
 * handshakes, the stream hooks) and tls_config.c (the public aims_tls_config:
 * files, SSL contexts, reload) share. Only built with OpenSSL (AIMS_HAVE_TLS);
 * these three files are the only ones that see OpenSSL.
 */
#ifndef AIMSI_TLS_H
#define AIMSI_TLS_H

#include "aimsi_stream.h"

#include <pthread.h>
#include <stdatomic.h>

#include <openssl/ssl.h>

#define TLS_MAGIC 0x41544c53u /* "ATLS" */
#define TLS_NAME_MAX 256u
#define TLS_MAX_NAMES 64u
#define TLS_HS_MS_DEFAULT 10000u
#define TLS_SESSIONS 16u

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
    atomic_uint_fast64_t batch_waits; /* batched writes left waiting for the socket (tls.c) */
    atomic_uint_fast64_t ra_fills;    /* recv()s into a connection's read-ahead buffer (tls.c) */
};

/* The stream hooks of tls:// and its listen (tcp's, any address). */
extern const aimsi_stream_ops aimsi_tls_ops;
aims_status aimsi_tls_listen_fd(const char *url, unsigned flags, int *out_fd, char *bound,
                                size_t bound_cap, char *unlink_path);
/* The newest OpenSSL error as text ("" when none); clears the queue. */
void aimsi_tls_errtext(char *out, size_t cap);
/* A certificate's identity: first DNS/URI subjectAltName, else the CN. */
void aimsi_tls_cert_identity(X509 *cert, char *out, size_t cap);
/* Peer verification (with the allowed names), ALPN "aims/1" and session
 * tickets / the client session cache on a context; 0, or -1 out of memory. */
int aimsi_tls_ctx_hooks(SSL_CTX *ctx, int server);
/* Drop the cached client sessions. Caller holds cfg->mu. */
void aimsi_tls_sessions_clear(aims_tls_config *cfg);

#endif /* AIMSI_TLS_H */
