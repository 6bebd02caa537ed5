/*
 * tls_bio.c -- the socket BIO under every tls:// connection (tls.c): sockets
 * go through a small BIO of our own that uses send(MSG_NOSIGNAL) -- OpenSSL's
 * socket BIO write()s, and a peer that went away would raise SIGPIPE in the
 * host -- and that batches records into fewer sends and reads ahead (below).
 * Its state lives in the connection (tls_conn, aimsi_tls.h); every call runs
 * under the connection's mutex, as OpenSSL calls it from inside SSL calls.
 */
#include "aimsi_tls.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;


/* Batching records into fewer sends. OpenSSL hands the BIO one TLS record
 * (at most 16 KiB of plaintext) per write, so a 1 MiB frame was 64 send()
 * calls, each a system call (with page-table isolation on this VM) plus, on
 * loopback, the receiver's TCP input path and a wake-up run by the sender.
 * TLS 1.3 offers no bigger records (max_send_fragment only lowers the 16 KiB
 * cap) and OpenSSL's record pipelining needs a TLS 1.2 explicit-IV CBC cipher,
 * so the batching is ours: a tls_writev of more than one record turns the BIO
 * into an appender -- records go into obuf, which is sent once TLS_BATCH_FLUSH
 * bytes wait and at the end of the writev: a 1 MiB frame is 5 sends instead
 * of 64, and the receiver is woken a few times instead of 64 (it still starts
 * decrypting the first batch while the sender encrypts the next). The price
 * is a memcpy of the ciphertext (docs/DOOR_SPEED.md has the measurements).
 * obuf is made for the first big write and given back after TLS_SMALL_FREE
 * small ones in a row, so a connection that moves small frames holds none.
 *
 * Bytes left in obuf when the socket is full: tls_writev reports one
 * plaintext byte fewer than OpenSSL took (`held`), so the stream core keeps
 * the frame queued and arms EPOLLOUT; the next tls_writev sends obuf first,
 * then counts the held byte (the core hands the same bytes again) and goes
 * on. Outside tls_writev (handshake, alerts, close_notify, a KeyUpdate answer
 * from SSL_read) records go straight to the socket, after what obuf holds. */
#define TLS_BATCH_FLUSH ((size_t)256u << 10)
/* Room for one more record above the flush mark (TLS 1.3: 5 + 16384 + 1 + 255). */
#define TLS_REC_ROOM ((size_t)17u << 10)

int aimsi_tls_out_flush(tls_conn *tc)
{
    while (tc->ooff < tc->olen) {
        const ssize_t w = send(tc->fd, tc->obuf + tc->ooff, tc->olen - tc->ooff,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
        }
        tc->ooff += (size_t)w;
    }
    tc->olen = tc->ooff = 0;
    return 0;
}

static int nb_write(BIO *b, const char *buf, int len)
{
    tls_conn *tc = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (tc->batching && (size_t)len <= TLS_REC_ROOM) {
        if (tc->obuf == NULL) {
            tc->obuf = aimsi_malloc(TLS_BATCH_FLUSH + TLS_REC_ROOM);
            tc->ocap = tc->obuf != NULL ? TLS_BATCH_FLUSH + TLS_REC_ROOM : 0;
        }
        if (tc->obuf != NULL) {
            if (tc->olen + (size_t)len > tc->ocap) {
                if (aimsi_tls_out_flush(tc) < 0) {
                    return -1;
                }
                if (tc->ooff > 0) { /* some sent: keep the rest at the front */
                    memmove(tc->obuf, tc->obuf + tc->ooff, tc->olen - tc->ooff);
                    tc->olen -= tc->ooff;
                    tc->ooff = 0;
                }
                if (tc->olen + (size_t)len > tc->ocap) {
                    BIO_set_retry_write(b); /* OpenSSL keeps the record and retries it */
                    return -1;
                }
            }
            memcpy(tc->obuf + tc->olen, buf, (size_t)len);
            tc->olen += (size_t)len;
            if (tc->olen - tc->ooff >= TLS_BATCH_FLUSH) {
                (void)aimsi_tls_out_flush(tc); /* a failure shows at tls_writev's final flush */
            }
            return len;
        }
    }
    if (tc->ooff < tc->olen) { /* keep the order: what obuf holds goes first */
        const int f = aimsi_tls_out_flush(tc);
        if (f != 0) {
            if (f > 0) {
                BIO_set_retry_write(b);
            }
            return -1;
        }
    }
    ssize_t w;
    do {
        w = send(tc->fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        BIO_set_retry_write(b);
    }
    return (int)w;
}

/* Reading ahead in our BIO (session 11). OpenSSL 3.0 reads at most one
 * record a recv() even with read-ahead on (its buffer holds one record; a
 * bigger one costs a memmove of everything left per record: ssl3_read_n's
 * `clearold`, docs/DOOR_SPEED.md), so a 1 MiB frame was ~65 recv() calls on
 * the receiving side, each a system call under the connection's lock. Once
 * a recv fills what OpenSSL asked for (a big frame is arriving), the BIO
 * takes up to TLS_RA_BUF bytes a recv into ibuf and serves OpenSSL's reads
 * from there: ~5 recv() a MiB for one memcpy of the ciphertext. A connection
 * that moves small frames reads straight into OpenSSL's buffer as before, and
 * gives ibuf back after TLS_SMALL_FREE short recvs in a row. Bytes in ibuf
 * are invisible to epoll: tls_read and tls_pending count them as pending
 * (tls_has_pending), as they do OpenSSL's own. Off during the handshake (the
 * dial side hands the socket to the I/O thread with nothing buffered). */
#define TLS_RA_BUF ((size_t)256u << 10)

static int nb_read(BIO *b, char *buf, int len)
{
    tls_conn *tc = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (tc->ioff < tc->ilen) {
        const size_t n = tc->ilen - tc->ioff < (size_t)len ? tc->ilen - tc->ioff : (size_t)len;
        memcpy(buf, tc->ibuf + tc->ioff, n);
        tc->ioff += n;
        return (int)n;
    }
    tc->ilen = tc->ioff = 0;
    const int into_ibuf = tc->ibuf != NULL && (size_t)len < TLS_RA_BUF;
    ssize_t r;
    do {
        r = into_ibuf ? recv(tc->fd, tc->ibuf, TLS_RA_BUF, MSG_DONTWAIT)
                      : recv(tc->fd, buf, (size_t)len, MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        BIO_set_retry_read(b);
    }
    if (r <= 0) {
        return (int)r;
    }
    if (!into_ibuf) {
        if (tc->ra && r == len && tc->ibuf == NULL) { /* more is likely waiting */
            tc->ibuf = aimsi_malloc(TLS_RA_BUF);
            tc->ishort = 0;
        }
        return (int)r;
    }
    tc->ishort = (size_t)r > TLS_REC_ROOM ? 0 : tc->ishort + 1;
    if (tc->ishort >= TLS_SMALL_FREE && (size_t)r <= (size_t)len) {
        memcpy(buf, tc->ibuf, (size_t)r); /* small frames again: back to direct reads */
        aimsi_free(tc->ibuf);
        tc->ibuf = NULL;
        return (int)r;
    }
    atomic_fetch_add_explicit(&tc->cfg->ra_fills, 1, memory_order_relaxed);
    tc->ilen = (size_t)r;
    tc->ioff = (size_t)r < (size_t)len ? (size_t)r : (size_t)len;
    memcpy(buf, tc->ibuf, tc->ioff);
    return (int)tc->ioff;
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

BIO_METHOD *aimsi_tls_bio_method(void)
{
    pthread_once(&g_bio_once, bio_method_init);
    return g_bio_method;
}
