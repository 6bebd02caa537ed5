/*
 * tls.c -- the tls:// transport: mutual TLS 1.3 (OpenSSL 3) as one more
 * stream family over TCP. The configuration object (files, SSL contexts,
 * reload) is tls_config.c; this file is the per-connection side.
 *
 * How it plugs in. tls:// uses tcp.c's address handling and stream.c's I/O
 * thread, framing and queues unchanged; what differs is the per-connection
 * hooks (aimsi_stream_ops): bytes go through SSL_read/SSL_write instead of
 * recv/sendmsg. A config embeds its own family and vtable (factory_user =
 * &cfg->fam), so a node or client that was given a config simply registers
 * that vtable for "tls" in its transport table.
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
 * Sockets go through a BIO of our own (tls_bio.c: no SIGPIPE, batched
 * writes, read-ahead); peer names, ALPN and the session cache are hooks on
 * the SSL contexts (tls_hooks.c).
 */
#include "aimsi_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

#define TICKET_WAIT_MS 2000u

/* ---- handshake failures ------------------------------------------------------------------ */

/* Why a handshake failed: the certificate verdict first, else OpenSSL's reason. */
static void hs_reason(tls_conn *tc, int ret, char *out, size_t cap)
{
    const int e = SSL_get_error(tc->ssl, ret);
    const long v = SSL_get_verify_result(tc->ssl);
    char txt[200];
    aimsi_tls_errtext(txt, sizeof txt);
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

/* ---- connections -------------------------------------------------------------------------- */

static void tc_free(tls_conn *tc)
{
    if (tc == NULL) {
        return;
    }
    SSL_free(tc->ssl);
    pthread_mutex_destroy(&tc->mu);
    aimsi_free(tc->obuf);
    aimsi_free(tc->ibuf);
    aimsi_free(tc);
}

static aims_status tc_new(aims_tls_config *cfg, int fd, int server, const char *url,
                          tls_conn **out)
{
    BIO_METHOD *const bio_method = aimsi_tls_bio_method();
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
    } else if (tc->ssl == NULL || bio_method == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for a TLS connection", url);
    }
    BIO *bio = rc == AIMS_OK ? BIO_new(bio_method) : NULL;
    if (rc == AIMS_OK && bio == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for a TLS connection", url);
    }
    if (rc != AIMS_OK) {
        ERR_clear_error();
        tc_free(tc);
        return rc;
    }
    tc->fd = fd;
    BIO_set_data(bio, tc);
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
        aimsi_tls_errtext(txt, sizeof txt);
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
    SSL_set_read_ahead(tc->ssl, 1); /* see tls_read */
    tc->ra = 1;                     /* and nb_read */
    if (tc->peer[0] == '\0') { /* a resumed session: no verify callback ran */
        X509 *pc = SSL_get0_peer_certificate(tc->ssl);
        if (pc != NULL) {
            aimsi_tls_cert_identity(pc, tc->peer, sizeof tc->peer);
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
        if (plen != sizeof aimsi_tls_alpn - 1 || memcmp(proto, aimsi_tls_alpn + 1, plen) != 0) {
            snprintf(why, cap, "the client did not offer ALPN \"aims/1\"");
            res = AIMSI_HS_FAILED;
        } else if (tc->peer[0] == '\0') {
            X509 *pc = SSL_get0_peer_certificate(tc->ssl);
            if (pc != NULL) {
                aimsi_tls_cert_identity(pc, tc->peer, sizeof tc->peer);
            }
        }
        if (res == AIMSI_HS_DONE) {
            SSL_set_read_ahead(tc->ssl, 1); /* see tls_read */
            tc->ra = 1;                     /* and nb_read */
        }
    }
    pthread_mutex_unlock(&tc->mu);
    return res;
}

/* Empty this thread's OpenSSL error queue before an SSL call on the data
 * path (SSL_get_error reads it). ERR_clear_error() in OpenSSL 3.0 frees two
 * pointers in each of the queue's 16 slots whether or not anything is queued
 * (32 CRYPTO_free calls, each a libc free of NULL), and the data path made
 * four such calls a round trip: with its own frame ~1 us of the 64 B round
 * trip's ~7 us of TLS work in perf (docs/DOOR_SPEED.md). The queue is nearly
 * always empty and peeking is cheap. (Handshakes keep ERR_clear_error.) */
static void err_reset(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

/* Bytes read off the socket and not returned yet: in OpenSSL's buffers or
 * in our BIO's (nb_read). Caller holds tc->mu. */
static int tls_has_pending(const tls_conn *tc)
{
    return tc->ioff < tc->ilen || SSL_has_pending(tc->ssl);
}

/* Reading ahead. Without it OpenSSL reads a record in two recv() calls (the
 * 5-byte header, then exactly the body), so a 64 B frame cost the receiver two
 * system calls where tcp:// needs one. After the handshake each connection
 * reads ahead: one recv() takes whatever the socket holds, up to OpenSSL's
 * buffer, and records are decrypted out of that. Bytes taken off the socket
 * but not yet returned are invisible to epoll; tls_read returns short only
 * when none are left (tls_has_pending), and when the stream core stops with
 * the buffer full it asks tls_pending and comes back without an event
 * (stream_rx.c, inst->again). Read-ahead is off during the handshake, so the
 * dial side never leaves application bytes behind in OpenSSL unseen. */
static ssize_t tls_read(void *sx, int fd, void *buf, size_t len)
{
    (void)fd;
    tls_conn *tc = sx;
    size_t total = 0;
    ssize_t res = 0;
    pthread_mutex_lock(&tc->mu);
    while (total < len) {
        size_t got = 0;
        err_reset();
        errno = 0;
        const int r = SSL_read_ex(tc->ssl, (uint8_t *)buf + total, len - total, &got);
        if (r == 1) {
            total += got;
            /* A short record with nothing buffered in OpenSSL (no read-ahead):
             * likely the end of a burst. Stop without the recv that would only
             * say EAGAIN; anything still in the socket wakes epoll again. */
            if (got < SSL3_RT_MAX_PLAIN_LENGTH && !tls_has_pending(tc)) {
                break;
            }
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
            aimsi_tls_errtext(txt, sizeof txt);
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

/* Before a tls_writev writes anything new: send what obuf still holds and
 * count the held byte (nb_write). 0 go on (*total = the held bytes, skipped
 * in the iovec), else an errno value (EAGAIN: obuf still not empty). */
static int writev_resume(tls_conn *tc, size_t *total)
{
    if (tc->ooff < tc->olen) {
        const int f = aimsi_tls_out_flush(tc);
        if (f != 0) {
            return f > 0 ? EAGAIN : (errno != 0 ? errno : EPIPE);
        }
    }
    *total = tc->held;
    tc->held = 0;
    return 0;
}

/* After the records are written (into obuf while batching): send obuf. What
 * the socket did not take stays there; then one byte of `total` is held back
 * so the stream core keeps the frame queued and waits for EPOLLOUT. Returns 0
 * or an errno value (the connection is broken). */
static int writev_finish(tls_conn *tc, size_t *total)
{
    const int f = aimsi_tls_out_flush(tc);
    if (f < 0) {
        return errno != 0 ? errno : EPIPE;
    }
    if (f > 0 && *total > 0) {
        tc->held = 1;
        *total -= 1;
        atomic_fetch_add(&tc->cfg->batch_waits, 1);
    }
    return 0;
}

static ssize_t tls_writev(void *sx, int fd, const struct iovec *iov, int n)
{
    (void)fd;
    tls_conn *tc = sx;
    size_t total = 0;
    pthread_mutex_lock(&tc->mu);
    int err = writev_resume(tc, &total);
    size_t skip = total; /* held bytes: the core hands them again */
    size_t want = 0;
    for (int i = 0; i < n; i++) {
        want += iov[i].iov_len;
    }
    /* Batch only what takes more than one record: a small frame is one
     * record and one send either way. A connection that moves only small
     * frames for a while gives the batch buffer back (memory per idle
     * connection stays OpenSSL's own). */
    tc->batching = want - skip > SSL3_RT_MAX_PLAIN_LENGTH;
    tc->small = tc->batching ? 0 : (tc->small < TLS_SMALL_FREE ? tc->small + 1 : tc->small);
    if (tc->small >= TLS_SMALL_FREE && tc->obuf != NULL && tc->olen == 0) {
        aimsi_free(tc->obuf);
        tc->obuf = NULL;
        tc->ocap = 0;
    }
    for (int i = 0; i < n && err == 0; i++) {
        size_t off = skip < iov[i].iov_len ? skip : iov[i].iov_len;
        skip -= off;
        while (off < iov[i].iov_len) {
            size_t w = 0;
            err_reset();
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
    tc->batching = 0;
    if (err == 0 || err == EAGAIN) {
        const int fe = writev_finish(tc, &total);
        if (fe != 0) {
            err = fe;
            total = 0; /* broken: nothing counts */
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

static int tls_pending(void *sx)
{
    tls_conn *tc = sx;
    pthread_mutex_lock(&tc->mu);
    const int n = tls_has_pending(tc);
    pthread_mutex_unlock(&tc->mu);
    return n;
}

const aimsi_stream_ops aimsi_tls_ops = {tls_dial,   tls_accept, tls_handshake, tls_read,
                                        tls_writev, tls_close,  tls_peer,      tls_pending};

/* ---- the family ------------------------------------------------------------------------------- */

aims_status aimsi_tls_listen_fd(const char *url, unsigned flags, int *out_fd, char *bound,
                                size_t bound_cap, char *unlink_path)
{
    /* Encrypted and authenticated: any address is fine. */
    return aimsi_tcp_listen_fd(url, flags | AIMS_LISTEN_INSECURE, out_fd, bound, bound_cap,
                               unlink_path);
}
