/*
 * files.c -- whole-file reads with a size cap, and crash-safe atomic writes.
 *
 * Reading. The file is opened O_CLOEXEC (the host may fork), fstat'ed to
 * refuse directories early and to size the buffer, then read in a loop that
 * survives EINTR and short reads. The fstat size is only a hint: a file that
 * grows while we read, or a pipe/character device that reports 0, still reads
 * to EOF, and the cap is enforced on the bytes actually read, so a hostile or
 * runaway input can never make us allocate more than max_bytes (+1). The
 * buffer always carries one extra NUL byte after the data (not counted in
 * *out_len) so text parsers may use it as a sentinel, and an empty file gives
 * a valid 1-byte allocation rather than NULL, so callers always aimsi_free.
 *
 * Writing. A reader must see either the old file or the whole new one, never
 * a torn one, even across a crash. So we write a temporary file in the SAME
 * directory (rename is atomic only within one file system), named
 * "<path>.tmp.<pid>.<counter>" and created O_EXCL (never clobber another
 * writer's temp file; the counter separates threads of one process), write
 * it fully, fsync it (data on disk before the name points at it), rename it
 * over the target, and fsync the directory (the rename itself on disk). On
 * any failure before the rename the temp file is unlinked and the previous
 * file is untouched. A directory fsync that the file system does not support
 * (EINVAL) is not an error: there is nothing more we could do.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "aimsi_codec.h"

#define READ_CHUNK ((size_t)1 << 16)

/* ---- reading ------------------------------------------------------------------- */

/* Grow *buf to hold at least `need` bytes plus the NUL sentinel. */
static aims_status grow(uint8_t **buf, size_t *cap, size_t need, const char *path)
{
    if (need + 1 <= *cap) {
        return AIMS_OK;
    }
    size_t ncap = *cap + *cap / 2;
    if (ncap < need + 1) {
        ncap = need + 1;
    }
    uint8_t *const nb = aimsi_realloc(*buf, ncap);
    if (nb == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu bytes", path, ncap);
    }
    if (*cap == 0) {
        aimsi_hint_hugepages(nb, ncap); /* first (exact-size) allocation of a big file */
    }
    *buf = nb;
    *cap = ncap;
    return AIMS_OK;
}

/* Read fd to EOF into *buf, never holding more than max_bytes of data. */
static aims_status read_all(int fd, const char *path, size_t max_bytes, size_t hint,
                            uint8_t **buf, size_t *len)
{
    size_t cap = 0;
    size_t n = 0;
    /* One byte past the hint lets the EOF probe read land without a realloc. */
    AIMSI_TRY(grow(buf, &cap, (hint < max_bytes ? hint : max_bytes) + 1, path));
    for (;;) {
        if (n + 1 >= cap) {
            /* Ask for one chunk more than the cap allows so "too big" is seen. */
            const size_t want = max_bytes - n < READ_CHUNK ? max_bytes + 1 : n + READ_CHUNK;
            AIMSI_TRY(grow(buf, &cap, want, path));
        }
        const ssize_t got = read(fd, *buf + n, cap - 1 - n);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return aimsi_err(NULL, AIMS_E_IO, "%s: read failed at byte %zu: %s", path, n,
                             strerror(errno));
        }
        if (got == 0) {
            break;
        }
        n += (size_t)got;
        if (n > max_bytes) {
            return aimsi_err(NULL, AIMS_E_RANGE, "%s: larger than the cap of %zu bytes", path,
                             max_bytes);
        }
    }
    (*buf)[n] = 0;
    *len = n;
    return AIMS_OK;
}

aims_status aimsi_file_read(const char *path, uint64_t max_bytes, void **out, size_t *out_len)
{
    if (path == NULL || out == NULL || out_len == NULL) {
        return AIMSI_MISUSE("path, out or out_len is NULL");
    }
    /* Leave room for the sentinel and for the "one more" probe byte. */
    const size_t cap = max_bytes > (uint64_t)(SIZE_MAX - 2) ? SIZE_MAX - 2 : (size_t)max_bytes;
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        const int e = errno;
        return aimsi_err(NULL, e == ENOENT ? AIMS_E_NOTFOUND : AIMS_E_IO, "%s: cannot open: %s",
                         path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        const int e = errno;
        (void)close(fd);
        return aimsi_err(NULL, AIMS_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        (void)close(fd);
        return aimsi_err(NULL, AIMS_E_IO, "%s: is a directory", path);
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        (void)close(fd);
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %lld bytes, larger than the cap of %llu",
                         path, (long long)st.st_size, (unsigned long long)max_bytes);
    }
    const size_t hint = S_ISREG(st.st_mode) ? (size_t)st.st_size : 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    const aims_status rc = read_all(fd, path, cap, hint, &buf, &len);
    (void)close(fd); /* read-only: close cannot lose data */
    if (rc != AIMS_OK) {
        aimsi_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return AIMS_OK;
}

/* ---- atomic writing ---------------------------------------------------------------- */

/* Temp names only need to be unique within this process (the pid does the rest). */
static unsigned long next_temp_id(void)
{
    static unsigned long counter;
    return __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
}

static aims_status write_fully(int fd, const char *tmp, const uint8_t *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        const ssize_t w = write(fd, p + done, len - done);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return aimsi_err(NULL, AIMS_E_IO, "%s: write failed at byte %zu: %s", tmp, done,
                             strerror(errno));
        }
        done += (size_t)w;
    }
    return AIMS_OK;
}

/* Write, fsync and close the temp file; closes fd in every case. */
static aims_status fill_temp(int fd, const char *tmp, const void *data, size_t len)
{
    aims_status rc = write_fully(fd, tmp, data, len);
    if (rc == AIMS_OK && fsync(fd) != 0) {
        rc = aimsi_err(NULL, AIMS_E_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    }
    /* close can report a deferred write error (NFS), so it counts. */
    if (close(fd) != 0 && rc == AIMS_OK && errno != EINTR) {
        rc = aimsi_err(NULL, AIMS_E_IO, "%s: close failed: %s", tmp, strerror(errno));
    }
    return rc;
}

/* Make the rename durable. `scratch` (at least strlen(path) + 2 bytes) receives
 * the directory name, so nothing is allocated after the rename: a failure
 * to allocate can then never be reported for a write that already happened. */
static aims_status sync_dir(const char *path, char *scratch)
{
    const char *const slash = strrchr(path, '/');
    if (slash == NULL) {
        memcpy(scratch, ".", 2);
    } else if (slash == path) {
        memcpy(scratch, "/", 2);
    } else {
        const size_t n = (size_t)(slash - path);
        memcpy(scratch, path, n);
        scratch[n] = '\0';
    }
    const int fd = open(scratch, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return aimsi_err(NULL, AIMS_E_IO, "%s: cannot open its directory to sync: %s", path,
                         strerror(errno));
    }
    aims_status rc = AIMS_OK;
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        rc = aimsi_err(NULL, AIMS_E_IO, "%s: fsync of the directory failed: %s", path,
                       strerror(errno));
    }
    (void)close(fd);
    return rc;
}

aims_status aimsi_file_write_atomic(const char *path, const void *data, size_t len)
{
    if (path == NULL || (data == NULL && len > 0)) {
        return AIMSI_MISUSE("path is NULL or data is NULL");
    }
    const size_t plen = strlen(path);
    if (plen == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "atomic write: empty path");
    }
    /* ".tmp." + two unsigned longs in decimal + '.' + NUL fits in 64. */
    char *const tmp = aimsi_malloc(plen + 64);
    if (tmp == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory", path);
    }
    (void)snprintf(tmp, plen + 64, "%s.tmp.%lu.%lu", path, (unsigned long)getpid(),
                   next_temp_id());
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        const int e = errno;
        aimsi_free(tmp);
        return aimsi_err(NULL, AIMS_E_IO, "%s: cannot create a temporary file: %s", path,
                         strerror(e));
    }
    aims_status rc = fill_temp(fd, tmp, data, len);
    if (rc == AIMS_OK && rename(tmp, path) != 0) {
        rc = aimsi_err(NULL, AIMS_E_IO, "%s: rename from %s failed: %s", path, tmp,
                       strerror(errno));
    }
    if (rc != AIMS_OK) {
        (void)unlink(tmp);
        aimsi_free(tmp);
        return rc;
    }
    /* The new file is in place; a failure here only means it may not survive a crash. */
    rc = sync_dir(path, tmp);
    aimsi_free(tmp);
    return rc;
}
