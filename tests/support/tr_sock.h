/*
 * tr_sock.h -- raw client sockets for the tests that play a peer of the
 * stream transports by hand: connect to a bound tcp:// or ipc:// URL, send
 * every byte.
 *
 * Why a header of its own: the unit tests (through tr_raw.h, which adds the
 * cmocka asserts and a frame encoder over the library's internal codec) and
 * the integration tests (test_hostile.c, linked against the public shared
 * library only, with their own failure reporting) each carried a copy of
 * this code. This half needs neither cmocka nor a libaims header, so both
 * kinds of test include it.
 *
 * Header-only, `static inline`, so a test that uses part of it still builds
 * warning-free under clang -Werror.
 */
#ifndef TR_SOCK_H
#define TR_SOCK_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

/* A raw socket (close-on-exec) connected to a bound listener URL:
 * "tcp://127.0.0.1:PORT" (loopback, the port after the last ':'; "tls://"
 * likewise, a plain TCP connection to a TLS listener) or "ipc://PATH". -1
 * with errno set when the socket or the connect fails or the scheme is none
 * of these. */
static inline int tr_sock_dial(const char *bound)
{
    int fd = -1;
    int rc = -1;
    if (strncmp(bound, "tcp://", 6) == 0 || strncmp(bound, "tls://", 6) == 0) {
        const char *colon = strrchr(bound, ':');
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)atoi(colon + 1));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        }
    } else if (strncmp(bound, "ipc://", 6) == 0) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        const size_t pl = strnlen(bound + 6, sizeof a.sun_path - 1);
        memcpy(a.sun_path, bound + 6, pl);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        }
    } else {
        errno = EINVAL;
    }
    if (fd >= 0 && rc != 0) {
        const int e = errno;
        close(fd);
        errno = e;
        fd = -1;
    }
    return fd;
}

/* Send all n bytes (MSG_NOSIGNAL: a peer that went away is -1, not SIGPIPE);
 * 0, or -1 when the socket failed. */
static inline int tr_sock_send_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

#endif /* TR_SOCK_H */
