/*
 * ipc.c -- the ipc:// transport: Unix domain stream sockets at a filesystem
 * path ("ipc:///tmp/aims.sock"); framing and threads are stream.c's.
 *
 * Paths must be absolute (a relative one would depend on the process's
 * working directory, which two processes rarely share) and fit sun_path.
 *
 * Stale sockets. A process that died leaves its socket file behind, and bind()
 * then fails with EADDRINUSE forever. Before binding we try to connect to the
 * path: if somebody accepts, the address is really in use (AIMS_E_EXISTS); if
 * the connection is refused the file is a leftover and is unlinked. Only
 * socket files are ever unlinked (lstat + S_ISSOCK), never a regular file a
 * typo pointed at. unlisten and destroy unlink the path the listener created.
 */
#include "aimsi_stream.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static aims_status parse_url(const char *url, struct sockaddr_un *sun, socklen_t *len,
                             const char **path)
{
    char scheme[17];
    const char *rest = NULL;
    AIMSI_TRY(aimsi_url_split(url, scheme, sizeof scheme, &rest));
    if (strcmp(scheme, "ipc") != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: not an ipc:// address", url);
    }
    if (rest[0] != '/') {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: ipc path must be absolute (ipc:///path)", url);
    }
    const size_t n = strlen(rest);
    memset(sun, 0, sizeof *sun);
    if (n >= sizeof sun->sun_path || n >= AIMSI_STREAM_PATH_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: path is %zu bytes, a Unix socket takes at most %zu",
                         url, n, sizeof sun->sun_path - 1);
    }
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, rest, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    *path = rest;
    return AIMS_OK;
}

/* Is somebody accepting on the socket at sun? */
static int someone_listens(const struct sockaddr_un *sun, socklen_t len)
{
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 1; /* cannot tell: do not unlink */
    }
    const int rc = connect(fd, (const struct sockaddr *)sun, len);
    const int e = errno;
    close(fd);
    if (rc == 0) {
        return 1;
    }
    return !(e == ECONNREFUSED || e == ENOENT);
}

static aims_status ipc_listen_fd(const char *url, unsigned flags, int *out_fd, char *bound,
                                 size_t bound_cap, char *unlink_path)
{
    (void)flags;
    struct sockaddr_un sun;
    socklen_t len = 0;
    const char *path = NULL;
    AIMSI_TRY(parse_url(url, &sun, &len, &path));
    unlink_path[0] = '\0';
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return aimsi_err(NULL, AIMS_E_EXISTS, "%s: %s exists and is not a socket", url, path);
        }
        if (someone_listens(&sun, len)) {
            return aimsi_err(NULL, AIMS_E_EXISTS, "%s: another process listens on %s", url, path);
        }
        (void)unlink(path); /* a stale socket left by a dead process */
    }
    int fd = -1;
    AIMSI_TRY(aimsi_stream_listen_fd(AF_UNIX, &sun, (unsigned)len, 0, path, url, &fd));
    const int n = snprintf(bound, bound_cap, "ipc://%s", path);
    if (n < 0 || (size_t)n >= bound_cap) {
        close(fd);
        (void)unlink(path);
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: bound address does not fit %zu bytes", url,
                         bound_cap);
    }
    memcpy(unlink_path, path, strlen(path) + 1);
    *out_fd = fd;
    return AIMS_OK;
}

static aims_status ipc_dial_fd(const char *url, int *out_fd)
{
    struct sockaddr_un sun;
    socklen_t len = 0;
    const char *path = NULL;
    AIMSI_TRY(parse_url(url, &sun, &len, &path));
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return aimsi_err(NULL, AIMS_E_IO, "%s: socket: %s", url, strerror(errno));
    }
    const aims_status rc = aimsi_stream_connect(fd, &sun, (unsigned)len, url);
    if (rc != AIMS_OK) {
        close(fd);
        return rc;
    }
    *out_fd = fd;
    return AIMS_OK;
}

static const aimsi_stream_family ipc_family = {"ipc", ipc_listen_fd, ipc_dial_fd, NULL,
                                            &aimsi_stream_plain_ops, NULL};

static const aims_transport ipc_vtable = AIMSI_STREAM_VTABLE("ipc", &ipc_family);

const aims_transport *aimsi_transport_ipc(void)
{
    return &ipc_vtable;
}
