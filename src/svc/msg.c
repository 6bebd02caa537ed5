/*
 * msg.c -- aims_msg: the named-tensor list every request and reply carries.
 *
 * A message is a fixed array of at most 64 tensor descriptors (the frame
 * format's cap) inside the handle, so building a message allocates nothing
 * but the tensors' own storage -- and nothing at all for borrowed tensors.
 * That is what keeps an inproc call allocation-free on its hot path: the
 * request is borrowed, the reply is filled in place.
 *
 * A tensor is either borrowed (data points at memory someone else keeps
 * alive: the caller's for AIMS_MSG_BORROW, the decoded frame's for a message
 * made from the wire) or owned (data == owned, freed with the message).
 * Messages made from a frame hold the frame bytes in `hold` (and the frame's
 * decompressed payload through `frame`) until they are cleared.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_svckind.h"

/* The frame codec (below svc) cannot see aims_dtype, so it keeps its own dtype
 * codes; tensors cross between the two by a plain cast. They must agree. */
_Static_assert((int)AIMSI_DT_F32 == (int)AIMS_DT_F32 && (int)AIMSI_DT_I32 == (int)AIMS_DT_I32 &&
                   (int)AIMSI_DT_U8 == (int)AIMS_DT_U8 && (int)AIMSI_DT_I64 == (int)AIMS_DT_I64 &&
                   (int)AIMSI_DT_BYTES == (int)AIMS_DT_BYTES,
               "frame dtype codes (aimsi_frame.h) mirror aims_dtype (aims_svc.h)");
/* A message is what one frame carries, so the public caps are the frame's; and
 * aims_transport's doc promises hosts the 44-byte frame header. */
_Static_assert(AIMS_MSG_MAX_TENSORS == AIMSI_FRAME_MAX_TENSORS &&
                   AIMS_MSG_MAX_NAME == AIMSI_FRAME_MAX_NAME &&
                   AIMS_MSG_MAX_NDIM == AIMSI_FRAME_MAX_NDIM,
               "aims_msg caps (aims_svc.h) mirror the frame caps (aimsi_frame.h)");
_Static_assert(AIMSI_FRAME_HEADER == 44u, "aims_svc.h documents a 44-byte frame header");

size_t aimsi_dtype_size(uint8_t dtype)
{
    switch (dtype) {
    case AIMS_DT_F32:
    case AIMS_DT_I32:
        return 4;
    case AIMS_DT_U8:
    case AIMS_DT_BYTES:
        return 1;
    case AIMS_DT_I64:
        return 8;
    default:
        return 0;
    }
}

void aimsi_msg_init(aims_msg *m)
{
    /* The header only: every t[i] below n is written whole before it is read
     * (add, alloc, adopt, move), and clearing the ~8 KB table as well cost an
     * 8 KB memset per message -- several messages per call on the hot path of
     * pipelined calls (P14). */
    aimsi_obj_init(&m->obj, AIMSI_MAGIC_MSG);
    m->n = 0;
    m->error = NULL;
    m->hold = NULL;
    m->frame = NULL;
}

static void release_tensor(aimsi_mtensor *t)
{
    aimsi_free(t->owned);
    t->owned = NULL;
    t->data = NULL;
}

static void release_backing(aims_msg *m)
{
    aimsi_free(m->error);
    m->error = NULL;
    if (m->frame != NULL) {
        aimsi_frame_release(m->frame);
        aimsi_free(m->frame);
        m->frame = NULL;
    }
    aimsi_free(m->hold);
    m->hold = NULL;
}

void aimsi_msg_fini(aims_msg *m)
{
    aims_msg_clear(m);
    aimsi_obj_kill(&m->obj);
}

AIMS_API aims_status aims_msg_create(aims_msg **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_msg *m = aimsi_malloc(sizeof(*m));
    if (m == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_msg_create: out of memory");
    }
    aimsi_msg_init(m);
    *out = m;
    return AIMS_OK;
}

AIMS_API void aims_msg_destroy(aims_msg *m)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MSG)) {
        return;
    }
    aimsi_msg_fini(m);
    aimsi_free(m);
}

AIMS_API void aims_msg_clear(aims_msg *m)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MSG)) {
        return;
    }
    for (size_t i = 0; i < m->n; i++) {
        release_tensor(&m->t[i]);
    }
    m->n = 0;
    release_backing(m);
}

/* Validate name/dtype/shape and compute the byte size; the descriptor is
 * written to *t (not yet part of m) so a failure leaves m untouched. */
static aims_status describe(const aims_msg *m, const char *name, aims_dtype dtype,
                            const uint64_t *dims, size_t ndim, aimsi_mtensor *t)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MSG) || name == NULL || (ndim > 0 && dims == NULL)) {
        return AIMSI_MISUSE("message, name or dims is NULL");
    }
    const size_t name_len = strnlen(name, AIMS_MSG_MAX_NAME + 1);
    if (name_len == 0 || name_len > AIMS_MSG_MAX_NAME) {
        return aimsi_err(NULL, AIMS_E_INVAL, "tensor name must be 1..%d bytes",
                         AIMS_MSG_MAX_NAME);
    }
    const size_t esize = aimsi_dtype_size((uint8_t)dtype);
    if (esize == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "tensor '%s': unknown dtype %d", name, (int)dtype);
    }
    if (ndim > AIMS_MSG_MAX_NDIM) {
        return aimsi_err(NULL, AIMS_E_INVAL, "tensor '%s': %zu dims (at most %d)", name, ndim,
                         AIMS_MSG_MAX_NDIM);
    }
    if (m->n >= AIMS_MSG_MAX_TENSORS) {
        return aimsi_err(NULL, AIMS_E_RANGE, "message already holds %d tensors",
                         AIMS_MSG_MAX_TENSORS);
    }
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->t[i].name, name) == 0) {
            return aimsi_err(NULL, AIMS_E_INVAL, "tensor name '%s' used twice", name);
        }
    }
    size_t bytes = esize;
    for (size_t d = 0; d < ndim; d++) {
        if (dims[d] > SIZE_MAX || aimsi_mul_ok(bytes, (size_t)dims[d], &bytes) != 0) {
            return aimsi_err(NULL, AIMS_E_RANGE, "tensor '%s': size overflows", name);
        }
    }
    memset(t, 0, sizeof(*t));
    memcpy(t->name, name, name_len + 1);
    t->dtype = (uint8_t)dtype;
    t->ndim = (uint8_t)ndim;
    for (size_t d = 0; d < ndim; d++) {
        t->dims[d] = dims[d];
    }
    t->bytes = bytes;
    return AIMS_OK;
}

AIMS_API aims_status aims_msg_add(aims_msg *m, const char *name, aims_dtype dtype,
                                  const uint64_t *dims, size_t ndim, const void *data,
                                  unsigned flags)
{
    aimsi_mtensor spare;
    /* Described straight into the next slot (no copy of the ~170-byte entry:
     * four adds per pipelined call); counted only once it is complete. */
    aimsi_mtensor *const t = aimsi_obj_ok(m, AIMSI_MAGIC_MSG) && m->n < AIMS_MSG_MAX_TENSORS
                                 ? &m->t[m->n]
                                 : &spare;
    AIMSI_TRY(describe(m, name, dtype, dims, ndim, t));
    if (t->bytes > 0 && data == NULL) {
        return AIMSI_MISUSE("data is NULL for a non-empty tensor");
    }
    if ((flags & ~AIMS_MSG_BORROW) != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_msg_add: unknown flags 0x%x", flags);
    }
    if ((flags & AIMS_MSG_BORROW) != 0 || t->bytes == 0) {
        t->data = data;
    } else {
        t->owned = aimsi_malloc(t->bytes);
        if (t->owned == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "tensor '%s': out of memory (%zu bytes)", name,
                             t->bytes);
        }
        memcpy(t->owned, data, t->bytes);
        t->data = t->owned;
    }
    m->n++;
    return AIMS_OK;
}

AIMS_API aims_status aims_msg_alloc(aims_msg *m, const char *name, aims_dtype dtype,
                                    const uint64_t *dims, size_t ndim, void **out_data)
{
    aimsi_mtensor t;
    memset(&t, 0, sizeof(t));
    if (out_data == NULL) {
        return AIMSI_MISUSE("out_data is NULL");
    }
    AIMSI_TRY(describe(m, name, dtype, dims, ndim, &t));
    /* 64-byte alignment by hand: the allocator hook only promises malloc's. */
    if (t.bytes > SIZE_MAX - 64) {
        return aimsi_err(NULL, AIMS_E_RANGE, "tensor '%s': size overflows", name);
    }
    const size_t total = t.bytes + 64;
    t.owned = aimsi_calloc(1, total);
    if (t.owned == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "tensor '%s': out of memory (%zu bytes)", name,
                         t.bytes);
    }
    const uintptr_t base = (uintptr_t)t.owned;
    t.data = (void *)((base + 63u) & ~(uintptr_t)63u);
    m->t[m->n++] = t;
    *out_data = (void *)(uintptr_t)t.data;
    return AIMS_OK;
}

AIMS_API size_t aims_msg_num_tensors(const aims_msg *m)
{
    return aimsi_obj_ok(m, AIMSI_MAGIC_MSG) ? m->n : 0;
}

AIMS_API aims_status aims_msg_get_tensor(const aims_msg *m, size_t index, const char **out_name,
                                         aims_dtype *out_dtype, size_t *out_ndim,
                                         const uint64_t **out_dims, const void **out_data,
                                         size_t *out_bytes)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MSG)) {
        return AIMSI_MISUSE("not a message");
    }
    if (index >= m->n) {
        return aimsi_err(NULL, AIMS_E_RANGE, "tensor index %zu out of range (%zu tensors)", index,
                         m->n);
    }
    const aimsi_mtensor *t = &m->t[index];
    if (out_name != NULL) {
        *out_name = t->name;
    }
    if (out_dtype != NULL) {
        *out_dtype = (aims_dtype)t->dtype;
    }
    if (out_ndim != NULL) {
        *out_ndim = t->ndim;
    }
    if (out_dims != NULL) {
        *out_dims = t->dims;
    }
    if (out_data != NULL) {
        *out_data = t->data;
    }
    if (out_bytes != NULL) {
        *out_bytes = t->bytes;
    }
    return AIMS_OK;
}

AIMS_API aims_status aims_msg_find(const aims_msg *m, const char *name, size_t *out_index)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MSG) || name == NULL || out_index == NULL) {
        return AIMSI_MISUSE("message, name or out_index is NULL");
    }
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->t[i].name, name) == 0) {
            *out_index = i;
            return AIMS_OK;
        }
    }
    return aimsi_err(NULL, AIMS_E_NOTFOUND, "no tensor '%s' in the message", name);
}

/* Valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF) without NUL: the rule
 * the frame encoder applies to ERROR texts, checked here so a handler learns
 * about a bad text where it set it. */
static int utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        size_t extra;
        unsigned cp;
        if (c == 0) {
            return 0;
        }
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            cp = c & 0x07u;
        } else {
            return 0;
        }
        if (n - i <= extra) {
            return 0;
        }
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0u) != 0x80u) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (extra == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
            return 0;
        }
        i += extra + 1;
    }
    return 1;
}

AIMS_API aims_status aims_msg_set_error(aims_msg *m, const char *text)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MSG) || text == NULL) {
        return AIMSI_MISUSE("message or text is NULL");
    }
    size_t n = strnlen(text, AIMSI_MSG_MAX_ERROR + 1);
    if (n > AIMSI_MSG_MAX_ERROR) {
        n = AIMSI_MSG_MAX_ERROR;
        /* Do not cut a multi-byte sequence in half. */
        while (n > 0 && (((const unsigned char *)text)[n] & 0xc0u) == 0x80u) {
            n--;
        }
    }
    if (!utf8_ok((const unsigned char *)text, n)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "error text is not valid UTF-8");
    }
    char *copy = aimsi_strndup(text, n);
    if (copy == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_msg_set_error: out of memory");
    }
    aimsi_free(m->error);
    m->error = copy;
    return AIMS_OK;
}

AIMS_API const char *aims_msg_error(const aims_msg *m)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MSG) || m->error == NULL) {
        return "";
    }
    return m->error;
}

size_t aimsi_msg_views(const aims_msg *m, aimsi_tensor *tensors)
{
    for (size_t i = 0; i < m->n; i++) {
        const aimsi_mtensor *s = &m->t[i];
        aimsi_tensor *d = &tensors[i];
        memset(d, 0, sizeof(*d));
        d->dtype = s->dtype;
        d->ndim = s->ndim;
        memcpy(d->name, s->name, sizeof(s->name));
        for (size_t k = 0; k < s->ndim; k++) {
            d->dims[k] = s->dims[k];
        }
        d->data = s->data;
        d->bytes = s->bytes;
    }
    return m->n;
}

aims_status aimsi_msg_adopt_frame(aims_msg *m, void *bytes, aimsi_frame *f)
{
    aims_msg_clear(m);
    if (f->n_tensors > AIMS_MSG_MAX_TENSORS) {
        aimsi_frame_release(f);
        aimsi_free(f);
        aimsi_free(bytes);
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame holds %zu tensors", f->n_tensors);
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        const aimsi_tensor *s = &f->tensors[i];
        aimsi_mtensor *d = &m->t[i];
        memset(d, 0, sizeof(*d));
        memcpy(d->name, s->name, sizeof(d->name));
        d->dtype = s->dtype;
        d->ndim = s->ndim;
        for (size_t k = 0; k < s->ndim; k++) {
            d->dims[k] = s->dims[k];
        }
        d->data = s->data;
        d->bytes = s->bytes;
    }
    m->n = f->n_tensors;
    if (f->message != NULL && f->message_len > 0) {
        m->error = aimsi_strndup(f->message, f->message_len);
        /* A reply without its error text is still a reply: not fatal. */
    }
    m->hold = bytes;
    m->frame = f;
    return AIMS_OK;
}

aims_status aimsi_msg_copy(aims_msg *dst, const aims_msg *src)
{
    aims_msg_clear(dst);
    for (size_t i = 0; i < src->n; i++) {
        const aimsi_mtensor *s = &src->t[i];
        const aims_status rc = aims_msg_add(dst, s->name, (aims_dtype)s->dtype, s->dims, s->ndim,
                                            s->data, 0);
        if (rc != AIMS_OK) {
            aims_msg_clear(dst);
            return rc;
        }
    }
    if (src->error != NULL) {
        dst->error = aimsi_strdup(src->error);
        if (dst->error == NULL) {
            aims_msg_clear(dst);
            return aimsi_err(NULL, AIMS_E_NOMEM, "aimsi_msg_copy: out of memory");
        }
    }
    return AIMS_OK;
}

void aimsi_msg_move(aims_msg *dst, aims_msg *src)
{
    aims_msg_clear(dst);
    for (size_t i = 0; i < src->n; i++) {
        dst->t[i] = src->t[i];
    }
    dst->n = src->n;
    dst->error = src->error;
    dst->hold = src->hold;
    dst->frame = src->frame;
    src->n = 0;
    src->error = NULL;
    src->hold = NULL;
    src->frame = NULL;
}

/* ---- typed getters/putters shared by the built-in services ------------------ */

static aims_status find_typed(const aims_msg *m, const char *name, const aimsi_mtensor **out)
{
    size_t i;
    if (aims_msg_find(m, name, &i) != AIMS_OK) {
        return aimsi_err(NULL, AIMS_E_INVAL, "request tensor '%s' is missing", name);
    }
    *out = &m->t[i];
    return AIMS_OK;
}

aims_status aimsi_msg_bytes(const aims_msg *m, const char *name, const char **out,
                            size_t *out_len)
{
    const aimsi_mtensor *t = NULL;
    AIMSI_TRY(find_typed(m, name, &t));
    if (t->dtype != AIMS_DT_BYTES || t->ndim > 1) {
        return aimsi_err(NULL, AIMS_E_INVAL, "request tensor '%s' must be BYTES", name);
    }
    *out = t->data;
    *out_len = t->bytes;
    return AIMS_OK;
}

aims_status aimsi_msg_int(const aims_msg *m, const char *name, int64_t *out)
{
    const aimsi_mtensor *t = NULL;
    AIMSI_TRY(find_typed(m, name, &t));
    const int scalar = t->ndim == 0 || (t->ndim == 1 && t->dims[0] == 1);
    if (scalar && t->dtype == AIMS_DT_I64) {
        int64_t v;
        memcpy(&v, t->data, sizeof(v)); /* wire data may be unaligned */
        *out = v;
        return AIMS_OK;
    }
    if (scalar && t->dtype == AIMS_DT_I32) {
        int32_t v;
        memcpy(&v, t->data, sizeof(v));
        *out = v;
        return AIMS_OK;
    }
    return aimsi_err(NULL, AIMS_E_INVAL, "request tensor '%s' must be an i64 or i32 scalar",
                     name);
}

aims_status aimsi_msg_put_bytes(aims_msg *m, const char *name, const void *p, size_t len)
{
    const uint64_t dims[1] = {len};
    return aims_msg_add(m, name, AIMS_DT_BYTES, dims, 1, len > 0 ? p : NULL, 0);
}

aims_status aimsi_msg_put_i64(aims_msg *m, const char *name, int64_t v)
{
    return aims_msg_add(m, name, AIMS_DT_I64, NULL, 0, &v, 0);
}

aims_status aimsi_work_failv(aimsi_work *w, aims_status st, const char *fmt, va_list ap)
{
    char text[AIMSI_MSG_MAX_ERROR];
    vsnprintf(text, sizeof text, fmt, ap);
    aims_msg_clear(w->reply);
    (void)aims_msg_set_error(w->reply, text);
    return st;
}

aims_status aimsi_work_fail(aimsi_work *w, aims_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aimsi_work_failv(w, st, fmt, ap);
    va_end(ap);
    return st;
}
