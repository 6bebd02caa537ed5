/*
 * aimsi_stream.h -- private to src/svc/transport: the stream machinery shared
 * by tcp.c and ipc.c (stream.c) and the socket-family hooks they plug into it.
 *
 * stream.c knows nothing about addresses: a family (tcp, ipc, tls) turns a URL
 * into a listening or connected nonblocking socket, stream.c does everything
 * after that (I/O thread, framing, send queues, close/destroy ordering).
 *
 * Stream families. Below the framing, a family moves bytes through its
 * per-connection hooks (aimsi_stream_ops, as Redis' ConnectionType and NNG's
 * stream layer): plain tcp:// and ipc:// use the socket hooks of sock.c
 * (recv/sendmsg), tls:// (tls.c) wraps the same TCP socket in OpenSSL. A
 * family with per-connection state secures a dialed socket on the caller's
 * thread (bounded), and an accepted one on the I/O thread without blocking:
 * stream.c keeps an accepted connection in the handshake state (no on_accept,
 * no frames) until the hook says done, and drops it when the handshake takes
 * longer than the budget the family gave.
 */
#include <sys/types.h>
#include <sys/uio.h>

#ifndef AIMSI_STREAM_H
#define AIMSI_STREAM_H

#include "aimsi_transport.h"
#include "../../codec/aimsi_frame.h"

/* Longest url a family writes into `bound` or keeps for unlinking. */
#define AIMSI_STREAM_PATH_MAX 112u

/* Connect timeout of dial (loopback and Unix sockets answer at once). */
#define AIMSI_STREAM_CONNECT_MS 2000

/* Per-connection send-queue limits: beyond them send() says AIMS_E_OVERLOADED.
 * One frame is always accepted on an empty queue, whatever its size. */
#define AIMSI_STREAM_QMAX_BYTES ((size_t)16u << 20)
#define AIMSI_STREAM_QMAX_FRAMES 4096u

/* Results of aimsi_stream_ops.handshake. */
enum { AIMSI_HS_DONE = 0, AIMSI_HS_WANT_READ = 1, AIMSI_HS_WANT_WRITE = 2, AIMSI_HS_FAILED = 3 };

/* Per-connection hooks. `ctx` is the family's; `sx` a connection's state
 * (NULL for plain sockets). read/writev have recv()/sendmsg() semantics:
 * bytes moved, 0 at end of stream (read), -1 with errno set (EAGAIN when it
 * would block). read runs on the I/O thread; writev on any sending thread
 * under the connection's lock, or on the I/O thread outside it (stream_tx.c:
 * never two writevs of a connection at once), so it may overlap a read of the
 * same connection (a family that cannot allow that locks inside). */
typedef struct aimsi_stream_ops {
    /* Secure a freshly connected socket on the caller's thread (bounded by
     * the family's handshake budget); NULL: nothing to do. */
    aims_status (*dial)(void *ctx, int fd, const char *url, void **out_sx);
    /* State for an accepted socket; *budget_ns bounds its handshake. NULL:
     * the connection is ready at once. */
    aims_status (*accept)(void *ctx, int fd, void **out_sx, uint64_t *budget_ns);
    /* Advance an accepted connection's handshake without blocking; on
     * AIMSI_HS_FAILED, why[cap] says why. */
    int (*handshake)(void *sx, char *why, size_t cap);
    ssize_t (*read)(void *sx, int fd, void *buf, size_t len);
    ssize_t (*writev)(void *sx, int fd, const struct iovec *iov, int n);
    void (*close)(void *sx); /* free sx (NULL: nothing to free) */
    /* The peer's verified identity, or NULL (no authentication). */
    const char *(*peer)(void *sx);
    /* Nonzero when the family holds bytes it read from the socket but read()
     * has not returned yet (tls:// reads ahead whole socket buffers): epoll
     * cannot see them, so stream_rx.c comes back for them itself. NULL: never. */
    int (*pending)(void *sx);
} aimsi_stream_ops;

/* recv/sendmsg on the socket itself (sock.c): tcp:// and ipc://. */
extern const aimsi_stream_ops aimsi_stream_plain_ops;

typedef struct aimsi_stream_family {
    const char *scheme; /* "tcp", "ipc", "tls" */
    /* Make a bound, listening, nonblocking socket for `url`. Writes the bound
     * url into bound[bound_cap] and, for a filesystem socket, the path to unlink
     * later into unlink_path[AIMSI_STREAM_PATH_MAX] ("" if none). */
    aims_status (*listen_fd)(const char *url, unsigned flags, int *out_fd, char *bound,
                             size_t bound_cap, char *unlink_path);
    /* Connect (blocking, bounded by AIMSI_STREAM_CONNECT_MS); the returned
     * socket is nonblocking and tuned. */
    aims_status (*dial_fd)(const char *url, int *out_fd);
    /* Tune an accepted socket (TCP_NODELAY, keep-alive); may be NULL. */
    void (*tune)(int fd);
    const aimsi_stream_ops *ops; /* per-connection I/O hooks */
    void *ctx;                   /* the family's context for ops (tls: the config) */
} aimsi_stream_family;

/* The vtable's create: factory_user is the (const) aimsi_stream_family. */
aims_status aimsi_stream_create(void *factory_user, const aims_transport_hooks *hooks,
                                uint64_t max_frame, void **out_inst);
void aimsi_stream_destroy(void *inst);
aims_status aimsi_stream_listen(void *inst, const char *url, unsigned flags, char *bound,
                                size_t bound_cap, void **out_listener);
void aimsi_stream_unlisten(void *inst, void *listener);
aims_status aimsi_stream_dial(void *inst, const char *url, void *conn_user, void **out_conn);
aims_status aimsi_stream_send(void *inst, void *conn, void *frame, size_t len);
void aimsi_stream_close(void *inst, void *conn);
/* The verified identity of a stream connection's peer (tls://), or NULL. */
const char *aimsi_stream_peer(void *inst, void *conn);
/* Apply the receive bounds `rx` (borrowed; outlives the instance) before the
 * first listen or dial (table.c, for instances made by aimsi_stream_create). */
void aimsi_stream_set_rx(void *inst, aimsi_rx_limits *rx);

/* A family's aims_transport: every entry is the stream core's; the family
 * travels as factory_user (the core never writes through it). */
#define AIMSI_STREAM_VTABLE(scheme, family)                                                  \
    {sizeof(aims_transport), AIMS_TRANSPORT_VERSION, (scheme),                               \
     (void *)(uintptr_t)(family), aimsi_stream_create, aimsi_stream_destroy,                 \
     aimsi_stream_listen, aimsi_stream_unlisten, aimsi_stream_dial, aimsi_stream_send,       \
     aimsi_stream_close}

/* Shared socket helpers for the families. */
/* Wait for a nonblocking connect() in progress on fd (EINPROGRESS/EAGAIN). */
aims_status aimsi_stream_connect(int fd, const void *addr, unsigned addrlen,
                                 const char *url);
/* A nonblocking listening socket bound to addr (SO_REUSEADDR when reuse_addr).
 * If listen() fails after the bind, bound_path (a Unix socket path, or NULL)
 * is unlinked: the bind created it. Errors name url. */
aims_status aimsi_stream_listen_fd(int family, const void *addr, unsigned addrlen, int reuse_addr,
                                   const char *bound_path, const char *url, int *out_fd);
/* tcp.c's address handling, shared with tls:// (same syntax, scheme kept in
 * the bound url; listen refuses a plain non-loopback tcp:// address without
 * AIMS_LISTEN_INSECURE). */
aims_status aimsi_tcp_listen_fd(const char *url, unsigned flags, int *out_fd, char *bound,
                                size_t bound_cap, char *unlink_path);
aims_status aimsi_tcp_dial_fd(const char *url, int *out_fd);
void aimsi_tcp_tune(int fd);
/* "ADDR:PORT" of a socket's peer (or "a unix socket", "unknown peer"). */
void aimsi_stream_peer_addr(int fd, char *out, size_t cap);
/* Copy `s` into out[cap] or fail with AIMS_E_RANGE naming `what`. */
aims_status aimsi_stream_copy_url(char *out, size_t cap, const char *s, const char *what);

#endif /* AIMSI_STREAM_H */
