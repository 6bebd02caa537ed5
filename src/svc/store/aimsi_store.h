/*
 * aimsi_store.h -- the checkpoint store: named blobs that outlive the process
 * that wrote them (durable training jobs, src/svc/jobs/; docs/JOBS.md).
 *
 * Why an interface. The first backend is a directory on a shared path (a
 * local disk for one box, NFS or a mounted volume for many); an object store
 * (S3 with conditional PUTs, etcd for small records) can follow behind the
 * same table. What the jobs need from any backend is small: replace a blob
 * atomically, create one only if it does not exist (the fencing claim and the
 * one result of a job), read, list a folder, remove.
 *
 * Integrity. The backend moves bytes; this header's aimsi_store_put/_get
 * frame every blob (magic, length, CRC-32C of the payload) so a reader can
 * tell an intact blob from a torn or damaged one (AIMS_E_CORRUPT naming the
 * blob) whatever the backend, and a job can fall back to an older checkpoint.
 *
 * Names. Relative, '/'-separated, each part of [A-Za-z0-9._-] not starting
 * with '.', at most AIMSI_STORE_NAME_MAX bytes; anything else is AIMS_E_INVAL
 * (no "..", no absolute paths: a job id never names a file outside the store).
 *
 * Threads. A store may be used from any number of threads at once; the
 * directory backend keeps no mutable state besides a temp-name counter.
 */
#ifndef AIMSI_STORE_H
#define AIMSI_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../../core/aimsi_core.h"

#define AIMSI_STORE_NAME_MAX 400
#define AIMSI_STORE_BLOB_MAX ((size_t)1 << 34) /* 16 GiB: bigger is refused */

/* One name a list call reports (the last path part, without the folder). */
typedef int (*aimsi_store_list_fn)(void *user, const char *name);

typedef struct aimsi_store_ops {
    const char *scheme; /* "dir" */
    /* Replace `name` atomically with the bytes hdr[0..hn) then p[0..n) (the
     * blob frame and its payload, written without joining them first): a
     * reader sees the old or the new blob, never a mix. */
    aims_status (*put)(void *ctx, const char *name, const void *hdr, size_t hn, const void *p,
                       size_t n);
    /* Create `name` with those bytes only if it does not exist: AIMS_E_EXISTS
     * when it does (atomic: of two racing creators exactly one wins). */
    aims_status (*put_new)(void *ctx, const char *name, const void *hdr, size_t hn,
                           const void *p, size_t n);
    /* Read all of `name` (at most cap bytes): AIMS_E_NOTFOUND when absent. */
    aims_status (*get)(void *ctx, const char *name, size_t cap, void **out, size_t *out_len);
    /* Call fn for each entry of folder `dir` (order unspecified; temp files
     * skipped); fn returning non-zero stops. A missing folder lists nothing. */
    aims_status (*list)(void *ctx, const char *dir, aimsi_store_list_fn fn, void *user);
    /* Rename `from` to `to` atomically (replacing `to`). */
    aims_status (*rename)(void *ctx, const char *from, const char *to);
    /* Remove `name` (absent: AIMS_OK). */
    aims_status (*remove)(void *ctx, const char *name);
    void (*destroy)(void *ctx);
} aimsi_store_ops;

typedef struct aimsi_store {
    const aimsi_store_ops *ops;
    void *ctx;
    char url[512];
} aimsi_store;

/* Open a store by URL: "dir:/path" or a plain absolute path (the directory is
 * created, mode 0700, when missing). Query options after '?' are the caller's
 * (aimsi_store_option) and ignored here. */
aims_status aimsi_store_open(const char *url, aimsi_store **out);
void aimsi_store_close(aimsi_store *s);
/* The value of option `key` in the URL's "?k=v&k2=v2" part, as an integer
 * (dflt when absent); AIMS_E_INVAL when present but not an integer in [lo, hi]. */
aims_status aimsi_store_option(const char *url, const char *key, int64_t lo, int64_t hi,
                               int64_t dflt, int64_t *out);

/* Framed blobs (checksummed): use these, not ops directly. */
aims_status aimsi_store_put(aimsi_store *s, const char *name, const void *p, size_t n);
aims_status aimsi_store_put_new(aimsi_store *s, const char *name, const void *p, size_t n);
/* AIMS_E_NOTFOUND when absent, AIMS_E_CORRUPT (naming the blob) when its frame
 * or checksum does not hold. *out is aimsi_malloc'd (aimsi_free it); an empty
 * blob gives a 1-byte allocation and *out_len 0. */
aims_status aimsi_store_get(aimsi_store *s, const char *name, void **out, size_t *out_len);
/* As aimsi_store_get, without moving the payload: *base is the allocation
 * (aimsi_free it), the payload is *base + *off for *out_len bytes, and *crc
 * its CRC-32C as the frame recorded (and the read checked). For big blobs
 * (training rows): no copy beyond the read itself. */
aims_status aimsi_store_get_framed(aimsi_store *s, const char *name, void **base, size_t *off,
                                   size_t *out_len, uint32_t *crc);
/* The payload CRC-32C a put of p[0..n) records in the blob frame. */
uint32_t aimsi_store_crc(const void *p, size_t n);
aims_status aimsi_store_list(aimsi_store *s, const char *dir, aimsi_store_list_fn fn, void *user);
aims_status aimsi_store_remove(aimsi_store *s, const char *name);
/* Is name acceptable (see Names)? */
int aimsi_store_name_ok(const char *name);

/* The directory backend (store_dir.c): root is an absolute path. */
aims_status aimsi_store_dir_open(const char *root, const aimsi_store_ops **ops, void **ctx);

/* SHA-256 of p[0..n) as 64 lowercase hex characters (store_sha256.c, OpenSSL;
 * AIMS_E_UNSUPPORTED "built without OpenSSL" when the tls feature is off). */
aims_status aimsi_sha256_hex(const void *p, size_t n, char hex[65]);

#endif /* AIMSI_STORE_H */
