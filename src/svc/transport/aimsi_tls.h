/*
 * aimsi_tls.h -- private to src/svc/transport: what tls.c (connections,
 * handshakes, the stream hooks), tls_bio.c (the socket BIO: batched writes,
 * read-ahead), tls_hooks.c (the SSL_CTX hooks: peer verification, ALPN, the
 * client session cache) and tls_config.c (the public aims_tls_config: files,
 * SSL contexts, reload) share. Only built with OpenSSL (AIMS_HAVE_TLS);
 * these files are the only ones that see OpenSSL.
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
    atomic_uint_fast64_t ra_fills;    /* recv()s into a connection's read-ahead buffer (tls_bio.c) */
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

/* "aims/1" as ALPN wants it (a length byte first); tls_hooks.c. */
extern const unsigned char aimsi_tls_alpn[7];

/* Given back after this many small writes / short reads in a row: a
 * connection that moves small frames holds no batch buffers (tls_bio.c). */
#define TLS_SMALL_FREE 64u

/* One tls:// connection: the SSL object, its lock, and the buffers of our
 * socket BIO (tls_bio.c). tls.c makes and drives it; tls_hooks.c's verify
 * and session callbacks reach it through SSL_get_app_data. */
typedef struct tls_conn {
    SSL *ssl;
    aims_tls_config *cfg;
    pthread_mutex_t mu;
    int fd;
    int got_ticket;
    /* Record batching (see nb_write): ciphertext records waiting for one send. */
    int batching;      /* inside tls_writev: records may wait in obuf */
    uint8_t *obuf;     /* ocap bytes, made for the first big write */
    size_t ocap;
    size_t olen, ooff; /* bytes in obuf; bytes of them already sent */
    unsigned small;    /* small writes in a row (obuf is given back after TLS_SMALL_FREE) */
    size_t held;       /* plaintext bytes OpenSSL took that tls_writev did not report yet */
    /* Reading ahead in the BIO (see nb_read): ciphertext taken off the socket
     * that OpenSSL has not asked for yet. */
    int ra;            /* after the handshake: nb_read may fill ibuf */
    uint8_t *ibuf;     /* TLS_RA_BUF bytes, made when a recv filled OpenSSL's buffer */
    size_t ilen, ioff; /* bytes in ibuf; bytes of them already handed to OpenSSL */
    unsigned ishort;   /* short recvs into ibuf in a row (ibuf is given back after TLS_SMALL_FREE) */
    char key[AIMSI_URL_MAX]; /* session cache key (dial side), "" on accept */
    char peer[TLS_NAME_MAX]; /* verified identity */
} tls_conn;

/* The socket BIO's method (tls_bio.c), made once; NULL out of memory. */
BIO_METHOD *aimsi_tls_bio_method(void);
/* Send what tc->obuf holds: 0 all sent, 1 the socket is full (some left), -1
 * failed (errno). Caller holds tc->mu (or is OpenSSL inside an SSL call,
 * which runs under it). */
int aimsi_tls_out_flush(tls_conn *tc);

#endif /* AIMSI_TLS_H */
