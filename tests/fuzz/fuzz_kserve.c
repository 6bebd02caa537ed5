/*
 * fuzz_kserve.c -- fuzz target for the HTTP front door's KServe v2 JSON
 * request decoder (src/svc/http/http_kserve.c, aimsi_kserve_decode).
 *
 * The first input byte picks the model the body is decoded for (bit 0: a text
 * model taking BYTES "text", else a dense one; bits 1-3: its width 1..8; bit
 * 4: classifier; bit 5: the next two bytes (little-endian) are the
 * Inference-Header-Content-Length of the binary tensor extension, clipped to
 * the body); the rest is the request body. The decoder must answer with
 * a status and a message, never crash or read past the body, and leave no
 * libaims block live. A successful decode is also encoded back as a reply.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "svc/http/aimsi_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    aimsi_infer_desc d;
    memset(&d, 0, sizeof(d));
    d.text = data[0] & 1;
    d.in_cols = d.text ? 0 : 1 + ((data[0] >> 1) & 7);
    d.out_dim = 2;
    d.classifier = (data[0] >> 4) & 1;
    const int binary = (data[0] >> 5) & 1;
    size_t skip = 1;
    size_t json_len = 0;
    if (binary) {
        if (size < 3) {
            return 0;
        }
        json_len = (size_t)data[1] | (size_t)data[2] << 8;
        skip = 3;
    }
    const size_t len = size - skip;
    json_len = binary && json_len < len ? json_len : len;
    /* a private copy, so reading past the body is caught by ASan */
    char *body = aimsi_malloc(len ? len : 1);
    if (body == NULL) {
        return 0;
    }
    memcpy(body, data + skip, len);
    aims_msg m;
    aimsi_msg_init(&m);
    aimsi_kserve_req rq;
    char err[512];
    err[0] = '\0';
    const aims_status st = aimsi_kserve_decode(body, len, json_len, &d, &m, &rq, err, sizeof(err));
    if (st != AIMS_OK && err[0] == '\0') {
        __builtin_trap(); /* every failure explains itself */
    }
    if (st == AIMS_OK) {
        /* answer with the decoded tensor as "y" when it is f32 */
        aims_msg reply;
        aimsi_msg_init(&reply);
        size_t i = 0;
        const void *x = NULL;
        size_t ndim = 0;
        const uint64_t *dims = NULL;
        if (aims_msg_find(&m, "x", &i) == AIMS_OK &&
            aims_msg_get_tensor(&m, i, NULL, NULL, &ndim, &dims, &x, NULL) == AIMS_OK &&
            aims_msg_add(&reply, "y", AIMS_DT_F32, dims, ndim, x, 0) == AIMS_OK) {
            aimsi_hbuf b = {0};
            size_t jl = 0;
            (void)aimsi_kserve_encode_reply(&b, "m", "1", &rq, &reply, &jl);
            aimsi_hbuf_free(&b);
        }
        aimsi_msg_fini(&reply);
    }
    aimsi_msg_fini(&m);
    aimsi_free(body);
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
