/*
 * jobs_data.c -- training data by reference (docs/JOBS.md): a job's rows are
 * written to the store once, content-addressed by their SHA-256, and the job
 * names them "data" = "sha256:<64 hex>" instead of shipping them again.
 *
 * How. The rows are the submit's "x" (f32 [rows, cols]) or "text" (BYTES)
 * and "y" (i32 [rows]), encoded as one uncompressed frame (codec/frame.c;
 * deterministic, so the same rows always give the same key) and stored at
 * d/<hex>. A reader recomputes the digest of what it read and refuses bytes
 * that do not match their name (AIMS_E_CORRUPT), so a job resumed on another
 * instance trains on exactly the bytes the first one did. put_new makes a
 * second write of the same rows a no-op.
 *
 * Verified once. Hashing 188 MB of Fashion-MNIST rows costs more than the
 * rest of an adoption (bench_jobs P14b), so the digest is checked once per
 * blob: whoever hashed the rows (the writer, or the first reader of a store
 * without one) records a sidecar d/<hex>.ok = the payload's length and the
 * CRC-32C its store frame carries. A reader whose blob frame has that length
 * and CRC (the store checks the CRC on every read) skips SHA-256: accidental
 * damage or a torn copy changes the CRC and falls back to the full check. The
 * sidecar vouches against accidents, not against someone who can write the
 * store (who could rewrite the sidecar too; the store is private, 0700).
 * Rows are decoded in place in the read buffer (no copy beyond the read).
 */
#include <stdio.h>
#include <string.h>

#include "../../codec/aimsi_frame.h"
#include "../aimsi_msg.h"
#include "jobs_impl.h"

#define DATA_PREFIX "sha256:"
#define SIDECAR_MAX 96
#define DATA_REF_LEN JOBS_REF_LEN

int aimsi_jobs_has_ref(const aims_msg *req)
{
    size_t idx = 0;
    return aims_msg_find(req, "data", &idx) == AIMS_OK;
}

static int is_row_tensor(const char *name)
{
    return strcmp(name, "x") == 0 || strcmp(name, "y") == 0 || strcmp(name, "text") == 0;
}

/* Encode the row tensors of m (x/text + y) into one frame. */
static aims_status encode_rows(const aims_msg *m, aimsi_buf *out)
{
    aimsi_tensor all[AIMS_MSG_MAX_TENSORS];
    aimsi_tensor rows[3];
    const size_t n = aimsi_msg_views(m, all);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_row_tensor(all[i].name) && k < 3) {
            rows[k++] = all[i];
        }
    }
    if (k < 2) {
        return aimsi_err(NULL, AIMS_E_INVAL, "put_data: want \"x\" (or \"text\") and \"y\"");
    }
    aimsi_frame_hdr hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.type = AIMSI_FRAME_REPLY;
    return aimsi_frame_encode(&hdr, rows, k, NULL, 0, out);
}

/* d/<hex>.ok: the rows of d/<hex> hashed to <hex> when they had this length
 * and payload CRC (best effort: without it a reader hashes again). */
static void sidecar_write(aimsi_jobs *J, const char *hex, size_t len, uint32_t crc)
{
    char name[80];
    char text[SIDECAR_MAX];
    snprintf(name, sizeof name, "d/%s.ok", hex);
    const int n = snprintf(text, sizeof text, "len=%zu\ncrc=%u\n", len, (unsigned)crc);
    const aims_status rc = aimsi_store_put_new(J->st, name, text, (size_t)n);
    if (rc != AIMS_OK && rc != AIMS_E_EXISTS) {
        aimsi_log(AIMS_LOG_WARN, "jobs: recording the digest check of d/%s: %s", hex,
                  aims_errmsg());
    }
}

/* 1 when d/<hex>.ok vouches for a payload of len bytes with this CRC. */
static int sidecar_ok(aimsi_jobs *J, const char *hex, size_t len, uint32_t crc)
{
    char name[80];
    snprintf(name, sizeof name, "d/%s.ok", hex);
    void *p = NULL;
    size_t n = 0;
    if (aimsi_store_get(J->st, name, &p, &n) != AIMS_OK) {
        return 0;
    }
    char want[SIDECAR_MAX];
    const int w = snprintf(want, sizeof want, "len=%zu\ncrc=%u\n", len, (unsigned)crc);
    const int ok = w > 0 && (size_t)w == n && memcmp(p, want, n) == 0;
    aimsi_free(p);
    return ok;
}

/* Store the rows of m; ref gets "sha256:<hex>". */
aims_status aimsi_jobs_data_store(aimsi_jobs *J, const aims_msg *m, char ref[DATA_REF_LEN + 1])
{
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = encode_rows(m, &b);
    char hex[65];
    if (rc == AIMS_OK) {
        rc = aimsi_sha256_hex(b.data, b.len, hex);
    }
    if (rc == AIMS_OK) {
        char name[80];
        snprintf(name, sizeof name, "d/%s", hex);
        rc = aimsi_store_put_new(J->st, name, b.data, b.len);
        if (rc == AIMS_E_EXISTS) {
            rc = AIMS_OK; /* the same rows, stored before */
        }
        if (rc == AIMS_OK) {
            sidecar_write(J, hex, b.len, aimsi_store_crc(b.data, b.len));
        }
    }
    aimsi_buf_free(&b);
    if (rc == AIMS_OK) {
        snprintf(ref, DATA_REF_LEN + 1, DATA_PREFIX "%s", hex);
    }
    return rc;
}

aims_status aimsi_jobs_data_hex(const aims_msg *req, char hex[65])
{
    const char *ref = NULL;
    size_t len = 0;
    if (aimsi_msg_bytes(req, "data", &ref, &len) != AIMS_OK || len != DATA_REF_LEN ||
        memcmp(ref, DATA_PREFIX, 7) != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"data\" must be BYTES \"sha256:<64 hex "
                                             "digits>\" (from the train service's put_data)");
    }
    memcpy(hex, ref + 7, 64);
    hex[64] = '\0';
    for (size_t i = 0; i < 64; i++) {
        const char c = hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"data\": '%c' is not a lowercase "
                                                 "hex digit", c);
        }
    }
    return AIMS_OK;
}

aims_status aimsi_jobs_data_load(aimsi_jobs *J, const aims_msg *req, aims_msg **out)
{
    return aimsi_jobs_data_read(J, req, out, 1);
}

aims_status aimsi_jobs_data_read(aimsi_jobs *J, const aims_msg *req, aims_msg **out, int record)
{
    char hex[65];
    AIMSI_TRY(aimsi_jobs_data_hex(req, hex));
    char name[80];
    snprintf(name, sizeof name, "d/%s", hex);
    void *base = NULL;
    size_t off = 0;
    size_t n = 0;
    uint32_t crc = 0;
    const uint64_t t0 = aimsi_now_ns();
    aims_status rc = aimsi_store_get_framed(J->st, name, &base, &off, &n, &crc);
    if (rc == AIMS_E_NOTFOUND) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "submit: no data sha256:%s in the store %s "
                         "(write it with put_data first)", hex, J->st->url);
    }
    AIMSI_TRY(rc);
    const uint64_t t1 = aimsi_now_ns();
    const int vouched = sidecar_ok(J, hex, n, crc);
    if (!vouched) {
        char got[65];
        rc = aimsi_sha256_hex((const char *)base + off, n, got);
        if (rc == AIMS_OK && memcmp(got, hex, 64) != 0) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "data %s: the stored bytes hash to %s", hex,
                           got);
        }
        if (rc != AIMS_OK) {
            aimsi_free(base);
            return rc;
        }
        sidecar_write(J, hex, n, crc); /* the next reader skips the hash */
    }
    const uint64_t t2 = aimsi_now_ns();
    rc = aimsi_jobs_decode_at(base, off, n, out);
    const uint64_t t3 = aimsi_now_ns();
    if (!record) {
        return rc; /* a prefetch: the times are the newest submit's or adoption's */
    }
    pthread_mutex_lock(&J->mu);
    J->times.data_read_ns = t1 - t0;
    J->times.data_verify_ns = vouched ? 0 : t2 - t1;
    J->times.data_decode_ns = t3 - t2;
    J->times.data_sidecar = vouched;
    J->times.data_cached = 0;
    pthread_mutex_unlock(&J->mu);
    return rc;
}

aims_status aimsi_jobs_decode(void *p, size_t n, aims_msg **out)
{
    return aimsi_jobs_decode_at(p, 0, n, out);
}

aims_status aimsi_jobs_decode_at(void *base, size_t off, size_t n, aims_msg **out)
{
    void *p = base;
    aimsi_frame *f = aimsi_calloc(1, sizeof *f);
    aims_status rc = f == NULL ? aimsi_err(NULL, AIMS_E_NOMEM, "jobs: no memory") : AIMS_OK;
    aims_msg *m = NULL;
    if (rc == AIMS_OK) {
        rc = aims_msg_create(&m);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_frame_decode((const char *)p + off, n, (size_t)1 << 34, f);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_msg_adopt_frame(m, p, f); /* owns p and f from here, also on failure */
        p = NULL;
        f = NULL;
    }
    aimsi_free(f);
    aimsi_free(p);
    if (rc != AIMS_OK) {
        aims_msg_destroy(m);
        return rc;
    }
    *out = m;
    return AIMS_OK;
}

aims_status aimsi_jobs_put_data(aimsi_jobs *J, aimsi_work *w)
{
    char ref[DATA_REF_LEN + 1];
    const aims_status rc = aimsi_jobs_data_store(J, w->req, ref);
    if (rc != AIMS_OK) {
        return aimsi_work_fail(w, rc, "put_data: %s", aims_errmsg());
    }
    aims_msg_clear(w->reply);
    const aims_status st = aimsi_msg_put_bytes(w->reply, "data", ref, DATA_REF_LEN);
    return st != AIMS_OK ? aimsi_work_fail(w, st, "put_data: no room for the reply") : AIMS_OK;
}
