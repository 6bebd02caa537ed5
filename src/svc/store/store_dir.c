/*
 * store_dir.c -- the directory backend of the checkpoint store
 * (aimsi_store.h): one file per blob under a root directory, which may be a
 * shared path (NFS, a mounted volume) that every train instance sees.
 *
 * How writes stay whole. A blob is written to a temporary file in its own
 * folder (".tmp.<pid>.<n>.<name>": listing skips dot files) with writev
 * (frame header + payload, never joined in memory), fdatasync'd, then
 *   put      rename(2) over the name: readers see the old or the new file;
 *   put_new  link(2) to the name: fails with EEXIST when the name exists,
 *            so of two racing creators exactly one wins (the fencing claim
 *            of a job and its one result rely on this; link is atomic on
 *            local file systems and on NFSv3+);
 * and the folder is fsync'd so the new name survives a crash. Folders are
 * created on demand (mode 0700: checkpoints and job records are private).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "aimsi_store.h"

#define DIR_PATH_MAX 1024

typedef struct dir_store {
    char root[480];
    _Atomic unsigned long seq;
} dir_store;

static aims_status join(const dir_store *d, const char *name, char *out)
{
    const int n = snprintf(out, DIR_PATH_MAX, "%s/%s", d->root, name);
    if (n < 0 || n >= DIR_PATH_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "store dir:%s: path of %s too long", d->root, name);
    }
    return AIMS_OK;
}

/* mkdir -p of the folder holding path (path is root/...; root exists). */
static aims_status make_parents(const dir_store *d, char *path)
{
    const size_t rlen = strlen(d->root);
    for (char *p = path + rlen + 1; *p != '\0'; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        const int r = mkdir(path, 0700);
        const int e = errno;
        *p = '/';
        if (r != 0 && e != EEXIST) {
            return aimsi_err(NULL, AIMS_E_IO, "store: mkdir for %s: %s", path, strerror(e));
        }
    }
    return AIMS_OK;
}

static aims_status sync_folder(const char *path)
{
    char dir[DIR_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    const int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return aimsi_err(NULL, AIMS_E_IO, "store: open folder %s: %s", dir, strerror(errno));
    }
    aims_status rc = AIMS_OK;
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        rc = aimsi_err(NULL, AIMS_E_IO, "store: fsync folder %s: %s", dir, strerror(errno));
    }
    close(fd);
    return rc;
}

/* Write hdr[0..hn) + p[0..n) to a new temp file next to path (one writev
 * per pass, no joined copy; fdatasync: the data and the size a reader needs,
 * the name is made durable by the folder's fsync after the rename/link); its
 * name into tmp. */
static aims_status write_temp(dir_store *d, const char *path, const void *hdr, size_t hn,
                              const void *p, size_t n, char *tmp)
{
    const char *slash = strrchr(path, '/');
    const size_t dlen = (size_t)(slash - path);
    const unsigned long seq = atomic_fetch_add(&d->seq, 1);
    const int len = snprintf(tmp, DIR_PATH_MAX, "%.*s/.tmp.%ld.%lu.%s", (int)dlen, path,
                             (long)getpid(), seq, slash + 1);
    if (len < 0 || len >= DIR_PATH_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "store: temp path for %s too long", path);
    }
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return aimsi_err(NULL, AIMS_E_IO, "store: create %s: %s", tmp, strerror(errno));
    }
    aims_status rc = AIMS_OK;
    struct iovec iov[2] = {{(void *)hdr, hn}, {(void *)p, n}};
    int first = hn > 0 ? 0 : 1;
    while (rc == AIMS_OK && first < 2) {
        if (iov[first].iov_len == 0) {
            first++;
            continue;
        }
        const ssize_t w = writev(fd, iov + first, 2 - first);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            rc = aimsi_err(NULL, AIMS_E_IO, "store: write %s: %s", tmp,
                           w == 0 ? "no progress" : strerror(errno));
            break;
        }
        size_t left = (size_t)w; /* advance past what was written */
        while (left > 0 && first < 2) {
            const size_t take = left < iov[first].iov_len ? left : iov[first].iov_len;
            iov[first].iov_base = (char *)iov[first].iov_base + take;
            iov[first].iov_len -= take;
            left -= take;
            if (iov[first].iov_len == 0) {
                first++;
            }
        }
    }
    if (rc == AIMS_OK && fdatasync(fd) != 0) {
        rc = aimsi_err(NULL, AIMS_E_IO, "store: fdatasync %s: %s", tmp, strerror(errno));
    }
    if (close(fd) != 0 && rc == AIMS_OK && errno != EINTR) {
        rc = aimsi_err(NULL, AIMS_E_IO, "store: close %s: %s", tmp, strerror(errno));
    }
    if (rc != AIMS_OK) {
        unlink(tmp);
    }
    return rc;
}

static aims_status dir_write(void *ctx, const char *name, const void *hdr, size_t hn,
                             const void *p, size_t n, int only_new)
{
    dir_store *d = ctx;
    char path[DIR_PATH_MAX];
    char tmp[DIR_PATH_MAX];
    AIMSI_TRY(join(d, name, path));
    AIMSI_TRY(make_parents(d, path));
    AIMSI_TRY(write_temp(d, path, hdr, hn, p, n, tmp));
    aims_status rc = AIMS_OK;
    if (only_new) {
        if (link(tmp, path) != 0) {
            rc = errno == EEXIST
                     ? aimsi_err(NULL, AIMS_E_EXISTS, "store: %s exists already", name)
                     : aimsi_err(NULL, AIMS_E_IO, "store: link %s: %s", path, strerror(errno));
        }
        unlink(tmp);
    } else if (rename(tmp, path) != 0) {
        rc = aimsi_err(NULL, AIMS_E_IO, "store: rename to %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    return rc == AIMS_OK ? sync_folder(path) : rc;
}

static aims_status dir_put(void *ctx, const char *name, const void *hdr, size_t hn,
                           const void *p, size_t n)
{
    return dir_write(ctx, name, hdr, hn, p, n, 0);
}

static aims_status dir_put_new(void *ctx, const char *name, const void *hdr, size_t hn,
                               const void *p, size_t n)
{
    return dir_write(ctx, name, hdr, hn, p, n, 1);
}

static aims_status dir_get(void *ctx, const char *name, size_t cap, void **out, size_t *out_len)
{
    dir_store *d = ctx;
    char path[DIR_PATH_MAX];
    AIMSI_TRY(join(d, name, path));
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? aimsi_err(NULL, AIMS_E_NOTFOUND, "store: no blob %s", name)
                               : aimsi_err(NULL, AIMS_E_IO, "store: open %s: %s", path,
                                           strerror(errno));
    }
    struct stat sb;
    aims_status rc = AIMS_OK;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = aimsi_err(NULL, AIMS_E_IO, "store: %s is not a regular file", path);
    } else if ((uint64_t)sb.st_size > (uint64_t)cap) {
        rc = aimsi_err(NULL, AIMS_E_RANGE, "store: %s has %lld bytes (cap %zu)", path,
                       (long long)sb.st_size, cap);
    }
    const size_t len = rc == AIMS_OK ? (size_t)sb.st_size : 0;
    char *buf = rc == AIMS_OK ? aimsi_malloc(len > 0 ? len : 1) : NULL;
    if (rc == AIMS_OK && buf == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "store: no memory for %zu bytes of %s", len, name);
    }
    for (size_t got = 0; rc == AIMS_OK && got < len;) {
        const ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            rc = aimsi_err(NULL, AIMS_E_IO, "store: read %s: %s", path,
                           r == 0 ? "file shrank while reading" : strerror(errno));
        } else {
            got += (size_t)r;
        }
    }
    close(fd);
    if (rc != AIMS_OK) {
        aimsi_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return AIMS_OK;
}

static aims_status dir_list(void *ctx, const char *dir, aimsi_store_list_fn fn, void *user)
{
    dir_store *d = ctx;
    char path[DIR_PATH_MAX];
    AIMSI_TRY(join(d, dir, path));
    DIR *h = opendir(path);
    if (h == NULL) {
        return errno == ENOENT ? AIMS_OK
                               : aimsi_err(NULL, AIMS_E_IO, "store: list %s: %s", path,
                                           strerror(errno));
    }
    for (;;) {
        errno = 0;
        const struct dirent *e = readdir(h);
        if (e == NULL) {
            break;
        }
        if (e->d_name[0] == '.') {
            continue; /* ".", "..", temp files */
        }
        if (fn(user, e->d_name) != 0) {
            break;
        }
    }
    closedir(h);
    return AIMS_OK;
}

static aims_status dir_rename(void *ctx, const char *from, const char *to)
{
    dir_store *d = ctx;
    char a[DIR_PATH_MAX];
    char b[DIR_PATH_MAX];
    AIMSI_TRY(join(d, from, a));
    AIMSI_TRY(join(d, to, b));
    AIMSI_TRY(make_parents(d, b));
    if (rename(a, b) != 0) {
        return aimsi_err(NULL, errno == ENOENT ? AIMS_E_NOTFOUND : AIMS_E_IO,
                         "store: rename %s to %s: %s", from, to, strerror(errno));
    }
    return sync_folder(b);
}

static aims_status dir_remove(void *ctx, const char *name)
{
    dir_store *d = ctx;
    char path[DIR_PATH_MAX];
    AIMSI_TRY(join(d, name, path));
    if (unlink(path) == 0 || errno == ENOENT) {
        return AIMS_OK;
    }
    if ((errno == EISDIR || errno == EPERM) && rmdir(path) == 0) {
        return AIMS_OK; /* an empty folder */
    }
    return aimsi_err(NULL, AIMS_E_IO, "store: remove %s: %s", path, strerror(errno));
}

static void dir_destroy(void *ctx)
{
    aimsi_free(ctx);
}

static const aimsi_store_ops k_dir_ops = {
    .scheme = "dir",
    .put = dir_put,
    .put_new = dir_put_new,
    .get = dir_get,
    .list = dir_list,
    .rename = dir_rename,
    .remove = dir_remove,
    .destroy = dir_destroy,
};

aims_status aimsi_store_dir_open(const char *root, const aimsi_store_ops **ops, void **ctx)
{
    if (strlen(root) >= sizeof(((dir_store *)0)->root)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "store dir:%s: path too long", root);
    }
    /* the root itself may be several levels deep: mkdir -p it */
    char path[DIR_PATH_MAX];
    snprintf(path, sizeof path, "%s/", root);
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0700) != 0 && errno != EEXIST) {
                return aimsi_err(NULL, AIMS_E_IO, "store dir:%s: mkdir %s: %s", root, path,
                                 strerror(errno));
            }
            *p = '/';
        }
    }
    struct stat sb;
    if (stat(root, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        return aimsi_err(NULL, AIMS_E_IO, "store dir:%s: not a directory", root);
    }
    dir_store *d = aimsi_calloc(1, sizeof *d);
    if (d == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "store: no memory");
    }
    snprintf(d->root, sizeof d->root, "%s", root);
    atomic_init(&d->seq, 0);
    *ops = &k_dir_ops;
    *ctx = d;
    return AIMS_OK;
}
