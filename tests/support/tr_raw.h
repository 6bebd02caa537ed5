/*
 * tr_raw.h -- raw sockets and hand-made frames for the tests that play a
 * peer of the stream transports themselves (test_transport.c: hostile and
 * stalled peers; test_rx_resume.c: senders paused by the receive budget;
 * test_burst.c: many frames in one write, a raw server answering a client).
 *
 * Each of those tests carried its own copy of the connect-by-URL code and of
 * the header+one-tensor frame encoder, differing only in the names and
 * constants that are now arguments.
 *
 * cmocka asserts: include after cmocka.h. Header-only, `static inline`, so a
 * test that uses part of it still builds warning-free under clang -Werror.
 */
#ifndef TR_RAW_H
#define TR_RAW_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"

/* A raw socket connected to a bound listener URL: "tcp://127.0.0.1:PORT"
 * (loopback, the port after the last ':') or "ipc://PATH". Asserts. */
static inline int tr_raw_connect(const char *bound)
{
    int fd;
    if (strncmp(bound, "tcp://", 6) == 0) {
        const char *colon = strrchr(bound, ':');
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)atoi(colon + 1));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    } else {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        const size_t pl = strnlen(bound + 6, sizeof a.sun_path - 1);
        memcpy(a.sun_path, bound + 6, pl);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    }
    return fd;
}

/* Send all n bytes (MSG_NOSIGNAL: a peer that went away is -1, not SIGPIPE);
 * 0, or -1 when the socket failed. */
static inline int tr_raw_send_all(int fd, const void *buf, size_t n)
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

/* One encoded frame: header `type`, `id`, service/method (service NULL: none)
 * and, when tname is not NULL, one 1-D tensor `tname` of `dtype` holding the
 * n bytes at data. aimsi_malloc'd (a transport's send takes it; else
 * aimsi_free it); NULL when encoding fails -- no assert, so it also serves
 * inside allocation-failure loops. */
static inline void *tr_raw_frame(uint8_t type, uint64_t id, const char *service,
                                 const char *method, uint8_t dtype, const char *tname,
                                 const void *data, size_t n, size_t *out_len)
{
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof h);
    h.type = type;
    h.request_id = id;
    if (service != NULL) {
        snprintf(h.service, sizeof h.service, "%s", service);
        snprintf(h.method, sizeof h.method, "%s", method);
    }
    aimsi_tensor t;
    memset(&t, 0, sizeof t);
    if (tname != NULL) {
        snprintf(t.name, sizeof t.name, "%s", tname);
        t.dtype = dtype;
        t.ndim = 1;
        t.dims[0] = n;
        t.data = data;
        t.bytes = n;
    }
    aimsi_buf b;
    aimsi_buf_init(&b);
    if (aimsi_frame_encode(&h, tname != NULL ? &t : NULL, tname != NULL ? 1 : 0, NULL, 0, &b) !=
        AIMS_OK) {
        aimsi_buf_free(&b);
        return NULL;
    }
    return aimsi_buf_take(&b, out_len);
}

#endif /* TR_RAW_H */
