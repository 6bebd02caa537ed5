/*
 * store.c -- the backend-neutral half of the checkpoint store (aimsi_store.h):
 * opening a store by URL, checking blob names, and the blob frame that makes
 * damage detectable whatever the backend.
 *
 * Blob frame, little-endian, 24 bytes before the payload:
 *   0  4  magic "AIMB"
 *   4  4  version (1)
 *   8  8  payload length
 *   16 4  CRC-32C of the payload
 *   20 4  CRC-32C of bytes [0, 20)
 * A reader checks all of it before handing the payload out, so a torn write
 * (impossible with the directory backend's rename, possible with a careless
 * copy or a failing disk) is AIMS_E_CORRUPT, never wrong training state.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../codec/aimsi_codec.h"
#include "aimsi_store.h"

#define BLOB_MAGIC 0x424d4941u /* "AIMB" read little-endian */
#define BLOB_VERSION 1u
#define BLOB_HDR 24u

int aimsi_store_name_ok(const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > AIMSI_STORE_NAME_MAX) {
        return 0;
    }
    int part_start = 1;
    for (const char *p = name; *p != '\0'; p++) {
        const char c = *p;
        if (c == '/') {
            if (part_start) {
                return 0; /* leading '/', or "//" */
            }
            part_start = 1;
            continue;
        }
        const int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       (c >= '0' && c <= '9') || c == '_' || c == '-' || (c == '.' && !part_start);
        if (!ok) {
            return 0;
        }
        part_start = 0;
    }
    return !part_start; /* no trailing '/' */
}

aims_status aimsi_store_option(const char *url, const char *key, int64_t lo, int64_t hi,
                               int64_t dflt, int64_t *out)
{
    const char *q = url != NULL ? strchr(url, '?') : NULL;
    const size_t klen = strlen(key);
    for (const char *p = q; p != NULL; p = strchr(p + 1, '&')) {
        const char *k = p + 1;
        if (strncmp(k, key, klen) != 0 || k[klen] != '=') {
            continue;
        }
        char *end = NULL;
        errno = 0;
        const long long v = strtoll(k + klen + 1, &end, 10);
        if (errno != 0 || end == k + klen + 1 || (*end != '\0' && *end != '&') || v < lo ||
            v > hi) {
            return aimsi_err(NULL, AIMS_E_INVAL, "store %s: option %s wants an integer in "
                             "[%lld, %lld]", url, key, (long long)lo, (long long)hi);
        }
        *out = v;
        return AIMS_OK;
    }
    *out = dflt;
    return AIMS_OK;
}

aims_status aimsi_store_open(const char *url, aimsi_store **out)
{
    if (url == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL url or out");
    }
    const char *path = url;
    if (strncmp(url, "dir:", 4) == 0) {
        path = url + 4;
    } else if (url[0] != '/') {
        return aimsi_err(NULL, AIMS_E_INVAL, "store '%s': want dir:/absolute/path (the only "
                                             "store backend so far)", url);
    }
    const size_t plen = strcspn(path, "?");
    if (plen == 0 || path[0] != '/' || plen >= 480) {
        return aimsi_err(NULL, AIMS_E_INVAL, "store '%s': the directory must be an absolute "
                                             "path of 1..479 bytes", url);
    }
    if (strlen(url) >= sizeof(((aimsi_store *)0)->url)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "store '%s': URL too long", url);
    }
    char root[480];
    memcpy(root, path, plen);
    root[plen] = '\0';
    aimsi_store *s = aimsi_calloc(1, sizeof *s);
    if (s == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "store: no memory");
    }
    snprintf(s->url, sizeof s->url, "%s", url);
    const aims_status rc = aimsi_store_dir_open(root, &s->ops, &s->ctx);
    if (rc != AIMS_OK) {
        aimsi_free(s);
        return rc;
    }
    *out = s;
    return AIMS_OK;
}

void aimsi_store_close(aimsi_store *s)
{
    if (s == NULL) {
        return;
    }
    s->ops->destroy(s->ctx);
    aimsi_free(s);
}

static aims_status check_name(const aimsi_store *s, const char *name)
{
    if (!aimsi_store_name_ok(name)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "store %s: bad blob name '%.64s'", s->url,
                         name != NULL ? name : "(null)");
    }
    return AIMS_OK;
}

/* The frame header of p[0..n) into b (BLOB_HDR bytes); the payload follows
 * it in the blob as it is (the backend writes both parts, no joined copy). */
static aims_status frame(const void *p, size_t n, uint8_t b[BLOB_HDR])
{
    if (n > AIMSI_STORE_BLOB_MAX) {
        return aimsi_err(NULL, AIMS_E_RANGE, "store: a %zu-byte blob is over the cap", n);
    }
    aimsi_store_u32le(b, BLOB_MAGIC);
    aimsi_store_u32le(b + 4, BLOB_VERSION);
    aimsi_store_u64le(b + 8, (uint64_t)n);
    aimsi_store_u32le(b + 16, aimsi_crc32c(0, p, n));
    aimsi_store_u32le(b + 20, aimsi_crc32c(0, b, 20));
    return AIMS_OK;
}

static aims_status put_framed(aimsi_store *s, const char *name, const void *p, size_t n,
                              int only_new)
{
    if (s == NULL || (p == NULL && n > 0)) {
        return AIMSI_MISUSE("NULL store or data");
    }
    AIMSI_TRY(check_name(s, name));
    uint8_t b[BLOB_HDR];
    AIMSI_TRY(frame(p, n, b));
    return only_new ? s->ops->put_new(s->ctx, name, b, BLOB_HDR, p, n)
                    : s->ops->put(s->ctx, name, b, BLOB_HDR, p, n);
}

aims_status aimsi_store_put(aimsi_store *s, const char *name, const void *p, size_t n)
{
    return put_framed(s, name, p, n, 0);
}

aims_status aimsi_store_put_new(aimsi_store *s, const char *name, const void *p, size_t n)
{
    return put_framed(s, name, p, n, 1);
}

uint32_t aimsi_store_crc(const void *p, size_t n)
{
    return aimsi_crc32c(0, p, n);
}

aims_status aimsi_store_get_framed(aimsi_store *s, const char *name, void **base, size_t *off,
                                   size_t *out_len, uint32_t *out_crc)
{
    if (s == NULL || base == NULL || off == NULL || out_len == NULL) {
        return AIMSI_MISUSE("NULL store or out");
    }
    AIMSI_TRY(check_name(s, name));
    void *raw = NULL;
    size_t len = 0;
    AIMSI_TRY(s->ops->get(s->ctx, name, AIMSI_STORE_BLOB_MAX + BLOB_HDR, &raw, &len));
    const uint8_t *b = raw;
    aimsi_rd r;
    aimsi_rd_init(&r, b, len);
    uint32_t magic = 0, version = 0, crc = 0, hcrc = 0;
    uint64_t n = 0;
    const int hdr_ok = aimsi_rd_u32le(&r, &magic) == 0 && aimsi_rd_u32le(&r, &version) == 0 &&
                       aimsi_rd_u64le(&r, &n) == 0 && aimsi_rd_u32le(&r, &crc) == 0 &&
                       aimsi_rd_u32le(&r, &hcrc) == 0;
    const char *why = NULL;
    if (!hdr_ok || magic != BLOB_MAGIC) {
        why = "not a store blob (bad magic or shorter than its header)";
    } else if (hcrc != aimsi_crc32c(0, b, 20)) {
        why = "header checksum mismatch";
    } else if (version != BLOB_VERSION) {
        why = "unknown blob version";
    } else if (n != (uint64_t)(len - BLOB_HDR)) {
        why = "length mismatch (torn or truncated)";
    } else if (crc != aimsi_crc32c(0, b + BLOB_HDR, (size_t)n)) {
        why = "payload checksum mismatch (damaged)";
    }
    if (why != NULL) {
        aimsi_free(raw);
        return aimsi_err(NULL, AIMS_E_CORRUPT, "store %s: blob %s: %s", s->url, name, why);
    }
    *base = raw;
    *off = BLOB_HDR;
    *out_len = (size_t)n;
    if (out_crc != NULL) {
        *out_crc = crc;
    }
    return AIMS_OK;
}

aims_status aimsi_store_get(aimsi_store *s, const char *name, void **out, size_t *out_len)
{
    if (s == NULL || out == NULL || out_len == NULL) {
        return AIMSI_MISUSE("NULL store or out");
    }
    void *raw = NULL;
    size_t off = 0;
    size_t n = 0;
    AIMSI_TRY(aimsi_store_get_framed(s, name, &raw, &off, &n, NULL));
    /* hand out the payload in the same buffer, the frame header dropped */
    if (n > 0) {
        memmove(raw, (uint8_t *)raw + off, n);
    }
    *out = raw;
    *out_len = n;
    return AIMS_OK;
}

aims_status aimsi_store_list(aimsi_store *s, const char *dir, aimsi_store_list_fn fn, void *user)
{
    if (s == NULL || fn == NULL) {
        return AIMSI_MISUSE("NULL store or fn");
    }
    AIMSI_TRY(check_name(s, dir));
    return s->ops->list(s->ctx, dir, fn, user);
}

aims_status aimsi_store_remove(aimsi_store *s, const char *name)
{
    if (s == NULL) {
        return AIMSI_MISUSE("NULL store");
    }
    AIMSI_TRY(check_name(s, name));
    return s->ops->remove(s->ctx, name);
}
