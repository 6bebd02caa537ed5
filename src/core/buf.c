/*
 * buf.c -- a growable byte buffer for serialisers.
 *
 * Growth doubles the capacity so appends are amortised O(1). On allocation
 * failure the buffer keeps its old contents, so callers can free it normally.
 */
#include <string.h>

#include "aimsi_core.h"

void aimsi_buf_init(aimsi_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void aimsi_buf_free(aimsi_buf *b)
{
    aimsi_free(b->data);
    aimsi_buf_init(b);
}

aims_status aimsi_buf_reserve(aimsi_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "buffer size overflow");
    }
    const size_t need = b->len + extra;
    if (need <= b->cap) {
        return AIMS_OK;
    }
    size_t cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    uint8_t *p = aimsi_realloc(b->data, cap);
    if (p == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "out of memory growing a buffer to %zu bytes", cap);
    }
    b->data = p;
    b->cap = cap;
    return AIMS_OK;
}

aims_status aimsi_buf_append(aimsi_buf *b, const void *data, size_t n)
{
    if (n == 0) {
        return AIMS_OK;
    }
    AIMSI_TRY(aimsi_buf_reserve(b, n));
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return AIMS_OK;
}

aims_status aimsi_buf_put_u8(aimsi_buf *b, uint8_t v)
{
    return aimsi_buf_append(b, &v, 1);
}

aims_status aimsi_buf_put_u32le(aimsi_buf *b, uint32_t v)
{
    uint8_t t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (uint8_t)(v >> (8 * i));
    }
    return aimsi_buf_append(b, t, sizeof t);
}

aims_status aimsi_buf_put_u64le(aimsi_buf *b, uint64_t v)
{
    uint8_t t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (uint8_t)(v >> (8 * i));
    }
    return aimsi_buf_append(b, t, sizeof t);
}

aims_status aimsi_buf_put_f64le(aimsi_buf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return aimsi_buf_put_u64le(b, u);
}

void *aimsi_buf_take(aimsi_buf *b, size_t *out_len)
{
    void *p = b->data;
    *out_len = b->len;
    aimsi_buf_init(b);
    return p;
}
