/*
 * sock.c -- the plain-socket side of the stream families: the per-connection
 * hooks tcp:// and ipc:// plug into stream.c (recv and sendmsg, nothing else),
 * and the socket set-up helpers the families share (listening socket, bounded
 * nonblocking connect, url copy).
 *
 * Why a file of its own: stream.c owns framing, queues and the I/O thread and
 * calls the socket only through a family's aimsi_stream_ops; these are the
 * plain ops, and tls.c supplies the other set. Moving the socket calls here
 * keeps stream.c about frames, not about how bytes reach the wire.
 */
#include "aimsi_stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- plain socket hooks --------------------------------------------------------------- */

static ssize_t plain_read(void *sx, int fd, void *buf, size_t len)
{
    (void)sx;
    return recv(fd, buf, len, MSG_DONTWAIT);
}

static ssize_t plain_writev(void *sx, int fd, const struct iovec *iov, int n)
{
    (void)sx;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = (struct iovec *)(uintptr_t)iov;
    mh.msg_iovlen = (size_t)n;
    return sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

const aimsi_stream_ops aimsi_stream_plain_ops = {NULL, NULL, NULL, plain_read, plain_writev,
                                                 NULL, NULL, NULL};

/* ---- socket set-up helpers for the families ---------------------------------------------- */

aims_status aimsi_stream_listen_fd(int family, const void *addr, unsigned addrlen, int reuse_addr,
                                   const char *bound_path, const char *url, int *out_fd)
{
    const int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return aimsi_err(NULL, AIMS_E_IO, "%s: socket: %s", url, strerror(errno));
    }
    if (reuse_addr) {
        const int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (bind(fd, (const struct sockaddr *)addr, (socklen_t)addrlen) != 0) {
        const int e = errno;
        close(fd);
        return aimsi_err(NULL, e == EADDRINUSE ? AIMS_E_EXISTS : AIMS_E_IO, "%s: bind: %s", url,
                         strerror(e));
    }
    if (listen(fd, 128) != 0) {
        const int e = errno;
        close(fd);
        if (bound_path != NULL) {
            (void)unlink(bound_path);
        }
        return aimsi_err(NULL, AIMS_E_IO, "%s: listen: %s", url, strerror(e));
    }
    *out_fd = fd;
    return AIMS_OK;
}

aims_status aimsi_stream_connect(int fd, const void *addr, unsigned addrlen, const char *url)
{
    const uint64_t deadline = aimsi_now_ns() + (uint64_t)AIMSI_STREAM_CONNECT_MS * 1000000u;
    for (;;) {
        if (connect(fd, (const struct sockaddr *)addr, (socklen_t)addrlen) == 0) {
            return AIMS_OK;
        }
        const int e = errno;
        if (e == EINTR) {
            continue;
        }
        const uint64_t now = aimsi_now_ns();
        if (e == EAGAIN && now < deadline) {
            /* A Unix socket whose backlog is full: try again shortly. */
            const struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (e != EINPROGRESS) {
            return aimsi_err(NULL, AIMS_E_IO, "%s: connect: %s", url, strerror(e));
        }
        break;
    }
    for (;;) {
        const uint64_t now = aimsi_now_ns();
        if (now >= deadline) {
            return aimsi_err(NULL, AIMS_E_IO, "%s: connect: timed out after %d ms", url,
                             AIMSI_STREAM_CONNECT_MS);
        }
        struct pollfd p = {fd, POLLOUT, 0};
        const int ms = (int)((deadline - now) / 1000000u) + 1;
        const int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return aimsi_err(NULL, AIMS_E_IO, "%s: poll: %s", url, strerror(errno));
        }
        if (n == 0) {
            continue;
        }
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) {
            err = errno;
        }
        if (err != 0) {
            return aimsi_err(NULL, AIMS_E_IO, "%s: connect: %s", url, strerror(err));
        }
        return AIMS_OK;
    }
}

aims_status aimsi_stream_copy_url(char *out, size_t cap, const char *s, const char *what)
{
    const size_t n = strlen(s);
    if (n >= cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s \"%s\" needs %zu bytes, buffer has %zu", what, s,
                         n + 1, cap);
    }
    memcpy(out, s, n + 1);
    return AIMS_OK;
}

void aimsi_stream_peer_addr(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    char host[INET6_ADDRSTRLEN] = "";
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, cap, "an unknown peer");
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(v4->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(v6->sin6_port));
    } else {
        snprintf(out, cap, "a unix socket peer");
    }
}
