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
 */
#include <stdio.h>
#include <string.h>

#include "../../codec/aimsi_frame.h"
#include "../aimsi_msg.h"
#include "jobs_impl.h"

#define DATA_PREFIX "sha256:"
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
    }
    aimsi_buf_free(&b);
    if (rc == AIMS_OK) {
        snprintf(ref, DATA_REF_LEN + 1, DATA_PREFIX "%s", hex);
    }
    return rc;
}

aims_status aimsi_jobs_data_load(aimsi_jobs *J, const aims_msg *req, aims_msg **out)
{
    const char *ref = NULL;
    size_t len = 0;
    if (aimsi_msg_bytes(req, "data", &ref, &len) != AIMS_OK || len != DATA_REF_LEN ||
        memcmp(ref, DATA_PREFIX, 7) != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"data\" must be BYTES \"sha256:<64 hex "
                                             "digits>\" (from the train service's put_data)");
    }
    char hex[65];
    memcpy(hex, ref + 7, 64);
    hex[64] = '\0';
    for (size_t i = 0; i < 64; i++) {
        const char c = hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"data\": '%c' is not a lowercase "
                                                 "hex digit", c);
        }
    }
    char name[80];
    snprintf(name, sizeof name, "d/%s", hex);
    void *p = NULL;
    size_t n = 0;
    aims_status rc = aimsi_store_get(J->st, name, &p, &n);
    if (rc == AIMS_E_NOTFOUND) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "submit: no data %.*s in the store %s (write "
                         "it with put_data first)", (int)len, ref, J->st->url);
    }
    AIMSI_TRY(rc);
    char got[65];
    rc = aimsi_sha256_hex(p, n, got);
    if (rc == AIMS_OK && memcmp(got, hex, 64) != 0) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "data %s: the stored bytes hash to %s", hex, got);
    }
    if (rc != AIMS_OK) {
        aimsi_free(p);
        return rc;
    }
    return aimsi_jobs_decode(p, n, out);
}

aims_status aimsi_jobs_decode(void *p, size_t n, aims_msg **out)
{
    aimsi_frame *f = aimsi_calloc(1, sizeof *f);
    aims_status rc = f == NULL ? aimsi_err(NULL, AIMS_E_NOMEM, "jobs: no memory") : AIMS_OK;
    aims_msg *m = NULL;
    if (rc == AIMS_OK) {
        rc = aims_msg_create(&m);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_frame_decode(p, n, (size_t)1 << 34, f);
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
