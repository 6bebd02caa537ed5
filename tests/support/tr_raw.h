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
 * The sockets themselves are tr_sock.h's (shared with the integration
 * tests); this header adds the asserting connect and the frame encoder.
 *
 * cmocka asserts: include after cmocka.h. Header-only, `static inline`, so a
 * test that uses part of it still builds warning-free under clang -Werror.
 */
#ifndef TR_RAW_H
#define TR_RAW_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "tr_sock.h"

/* A raw socket connected to a bound listener URL: "tcp://127.0.0.1:PORT"
 * (loopback, the port after the last ':') or "ipc://PATH". Asserts. */
static inline int tr_raw_connect(const char *bound)
{
    const int fd = tr_sock_dial(bound);
    assert_true(fd >= 0);
    return fd;
}

/* Send all n bytes (tr_sock_send_all): 0, or -1 when the socket failed. */
static inline int tr_raw_send_all(int fd, const void *buf, size_t n)
{
    return tr_sock_send_all(fd, buf, n);
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
