/*
 * tcp.c -- the tcp:// transport: address parsing and socket set-up; the rest
 * (I/O thread, framing, queues) is stream.c.
 *
 * Addresses are "tcp://HOST:PORT" with HOST a numeric IPv4 address, a numeric
 * IPv6 address in brackets ("[::1]") or "localhost" (127.0.0.1). Listening
 * takes no names on purpose: a name that resolves to a public interface would
 * silently expose an unauthenticated port. Dialing also accepts a host name
 * (getaddrinfo, first IPv4/IPv6 answer that connects).
 *
 * Security default: plain TCP only binds loopback (127.0.0.0/8, ::1) unless
 * the caller passes AIMS_LISTEN_INSECURE (a node maps its AIMS_NODE_INSECURE
 * parameter to it, the daemon its --insecure flag); the tls:// transport
 * (tls.c, which reuses this file's address handling) is the way to cross
 * machines.
 *
 * Every socket gets TCP_NODELAY (frames are written whole; Nagle would only add
 * a delayed-ACK stall to each request/reply) and SO_KEEPALIVE (a peer that
 * vanished without a FIN is found eventually even when idle).
 */
#include "aimsi_stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct tcp_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char host[64]; /* as written, brackets removed */
    unsigned port;
    int numeric;   /* host parsed as an address (or localhost) */
} tcp_addr;

static aims_status parse_port(const char *url, const char *s, unsigned *out)
{
    if (*s == '\0' || strlen(s) > 5) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: port must be 0..65535", url);
    }
    unsigned v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return aimsi_err(NULL, AIMS_E_INVAL, "%s: port must be 0..65535", url);
        }
        v = v * 10u + (unsigned)(*p - '0');
    }
    if (v > 65535u) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: port must be 0..65535", url);
    }
    *out = v;
    return AIMS_OK;
}

/* Split and, when numeric, convert "tcp://HOST:PORT". */
static aims_status parse_url(const char *url, tcp_addr *a)
{
    char scheme[17];
    const char *rest = NULL;
    AIMSI_TRY(aimsi_url_split(url, scheme, sizeof scheme, &rest));
    if (strcmp(scheme, "tcp") != 0 && strcmp(scheme, "tls") != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: not a tcp:// or tls:// address", url);
    }
    memset(a, 0, sizeof *a);
    const char *hs = rest;
    const char *he = NULL;
    const char *ps = NULL;
    if (*rest == '[') {
        hs = rest + 1;
        he = strchr(hs, ']');
        if (he == NULL || he[1] != ':') {
            return aimsi_err(NULL, AIMS_E_INVAL, "%s: expected tcp://[IPV6]:PORT", url);
        }
        ps = he + 2;
    } else {
        he = strrchr(rest, ':');
        if (he == NULL) {
            return aimsi_err(NULL, AIMS_E_INVAL, "%s: expected tcp://HOST:PORT", url);
        }
        ps = he + 1;
    }
    const size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof a->host) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: host must be 1..63 bytes", url);
    }
    memcpy(a->host, hs, hl);
    a->host[hl] = '\0';
    AIMSI_TRY(parse_port(url, ps, &a->port));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->ss;
    const char *h = (strcmp(a->host, "localhost") == 0) ? "127.0.0.1" : a->host;
    if (inet_pton(AF_INET, h, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)a->port);
        a->len = sizeof *v4;
        a->numeric = 1;
    } else if (inet_pton(AF_INET6, h, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)a->port);
        a->len = sizeof *v6;
        a->numeric = 1;
    } else if (*rest == '[') {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: bad IPv6 address", url);
    }
    return AIMS_OK;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
        return (ntohl(v4->sin_addr.s_addr) >> 24) == 127u;
    }
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
    if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
        return 1;
    }
    return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) && v6->sin6_addr.s6_addr[12] == 127u;
}

void aimsi_tcp_tune(int fd)
{
    const int one = 1;
    /* Best effort: a socket without them still works, only slower to notice. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    /* Linux waits 2 h before the first probe by default: far too long for a
     * cluster; a dead idle peer is now found after 60 s + 3 x 10 s. */
    const int idle = 60;
    const int intvl = 10;
    const int cnt = 3;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static aims_status format_bound(const char *scheme, const struct sockaddr_storage *ss, char *out,
                                size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    int n;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        port = ntohs(v4->sin_port);
        n = snprintf(out, cap, "%s://%s:%u", scheme, host, port);
    } else {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        port = ntohs(v6->sin6_port);
        n = snprintf(out, cap, "%s://[%s]:%u", scheme, host, port);
    }
    if (n < 0 || (size_t)n >= cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "tcp: bound address does not fit %zu bytes", cap);
    }
    return AIMS_OK;
}

aims_status aimsi_tcp_listen_fd(const char *url, unsigned flags, int *out_fd, char *bound,
                                size_t bound_cap, char *unlink_path)
{
    tcp_addr a;
    AIMSI_TRY(parse_url(url, &a));
    unlink_path[0] = '\0';
    if (!a.numeric) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "%s: listen needs a numeric address or localhost (no name lookup)",
                         url);
    }
    if (!is_loopback(&a.ss) && (flags & AIMS_LISTEN_INSECURE) == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "%s: refusing plain tcp on a non-loopback address: serve tls:// "
                         "instead, or allow it explicitly (node parameter AIMS_NODE_INSECURE, "
                         "aims_node --insecure)",
                         url);
    }
    int fd = -1;
    AIMSI_TRY(aimsi_stream_listen_fd(a.ss.ss_family, &a.ss, (unsigned)a.len, 1, NULL, url, &fd));
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    memset(&got, 0, sizeof got);
    if (getsockname(fd, (struct sockaddr *)&got, &gl) != 0) {
        const int e = errno;
        close(fd);
        return aimsi_err(NULL, AIMS_E_IO, "%s: getsockname: %s", url, strerror(e));
    }
    const aims_status rc = format_bound(strncmp(url, "tls", 3) == 0 ? "tls" : "tcp", &got, bound,
                                        bound_cap);
    if (rc != AIMS_OK) {
        close(fd);
        return rc;
    }
    *out_fd = fd;
    return AIMS_OK;
}

static aims_status dial_addr(const char *url, const struct sockaddr *sa, socklen_t len,
                             int *out_fd)
{
    const int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return aimsi_err(NULL, AIMS_E_IO, "%s: socket: %s", url, strerror(errno));
    }
    aimsi_tcp_tune(fd);
    const aims_status rc = aimsi_stream_connect(fd, sa, (unsigned)len, url);
    if (rc != AIMS_OK) {
        close(fd);
        return rc;
    }
    *out_fd = fd;
    return AIMS_OK;
}

aims_status aimsi_tcp_dial_fd(const char *url, int *out_fd)
{
    tcp_addr a;
    AIMSI_TRY(parse_url(url, &a));
    if (a.port == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: cannot dial port 0", url);
    }
    if (a.numeric) {
        return dial_addr(url, (const struct sockaddr *)&a.ss, a.len, out_fd);
    }
    char port[16];
    snprintf(port, sizeof port, "%u", a.port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *res = NULL;
    const int g = getaddrinfo(a.host, port, &hints, &res);
    if (g != 0) {
        return aimsi_err(NULL, AIMS_E_IO, "%s: cannot resolve \"%s\": %s", url, a.host,
                         gai_strerror(g));
    }
    aims_status rc = aimsi_err(NULL, AIMS_E_IO, "%s: no address for \"%s\"", url, a.host);
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rc = dial_addr(url, ai->ai_addr, ai->ai_addrlen, out_fd);
        if (rc == AIMS_OK) {
            break;
        }
    }
    freeaddrinfo(res);
    return rc;
}

static const aimsi_stream_family tcp_family = {"tcp", aimsi_tcp_listen_fd, aimsi_tcp_dial_fd, aimsi_tcp_tune,
                                            &aimsi_stream_plain_ops, NULL};

static const aims_transport tcp_vtable = AIMSI_STREAM_VTABLE("tcp", &tcp_family);

const aims_transport *aimsi_transport_tcp(void)
{
    return &tcp_vtable;
}
