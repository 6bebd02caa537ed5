/*
 * frame.c -- the wire frame every transport carries (layout in aimsi_frame.h).
 *
 * Encoder. The payload (tensor list or error message) is checked and sized
 * first. Below the caller's compression threshold -- every frame on a
 * loopback or ipc:// connection, and every small one -- the output buffer
 * grows once and the payload is laid out in place behind the header (no
 * scratch buffer, no copy). Otherwise it is laid out raw in a scratch buffer
 * and zstd-compressed into a second one capped at raw - 1 bytes, so a
 * payload that does not shrink is simply stored raw (zstd answers "does not
 * fit" instead of us comparing afterwards); only then is the output buffer
 * grown once and header + names + payload appended. A failure at any step
 * leaves out->len where it was.
 *
 * Decoder. The 44-byte header is parsed by one function (hdr_parse) shared
 * by peek and decode: magic, version (newer: AIMS_E_UNSUPPORTED; the older
 * version 1 is parsed and reported in hdr.version, so a node can answer an
 * old peer in words it reads instead of dropping it), the header
 * CRC before any length is believed, then type, flags and every length
 * against its cap. Decode then insists that the frame occupies the input
 * exactly, checks names' characters, checks the raw size against the
 * caller's cap before allocating, and (compressed) validates the zstd frame
 * shape before decompressing into a buffer the frame owns. The tensor list
 * is parsed with the bounds-checked reader: dims products are overflow
 * checked, padding must be zero, data must lie inside the payload and the
 * last tensor must end exactly at the end of the payload. Tensors borrow the
 * payload (zero copy). Everything is built in a local frame and copied out
 * only on success, so a failed decode leaves *out untouched and owns nothing.
 *
 * Peek on fewer than 44 bytes checks the magic bytes present and answers
 * "need 44" (AIMS_OK, *out_total = 44), so a transport can loop
 * "peek, read up to total" from the first byte.
 */
#include <string.h>

#include "aimsi_frame.h"

#define ZSTD_LEVEL 1 /* frames are latency-bound: the fastest level */
#define MAX_MESSAGE 1024u
#define PAD 8u

static const uint8_t frame_magic[4] = {'A', 'I', 'M', 'F'};

/* Header fields as parsed, before the names are read. */
typedef struct raw_hdr {
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint64_t request_id;
    uint64_t deadline_ns;
    int32_t status;
    uint16_t slen;
    uint16_t mlen;
    uint32_t stored;
    uint32_t raw;
} raw_hdr;

static size_t elem_size(uint8_t dtype)
{
    switch (dtype) {
    case AIMSI_DT_F32:
    case AIMSI_DT_I32:
        return 4;
    case AIMSI_DT_U8:
    case AIMSI_DT_BYTES:
        return 1;
    case AIMSI_DT_I64:
        return 8;
    default:
        return 0;
    }
}

static int type_valid(uint8_t type)
{
    return type >= AIMSI_FRAME_REQUEST && type <= AIMSI_FRAME_CANCEL;
}

static int has_tensors(uint8_t type)
{
    return type == AIMSI_FRAME_REQUEST || type == AIMSI_FRAME_REPLY;
}

static int name_char_ok(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '@' || c == '/' || c == '-';
}

/* Index of the first bad character in name[0, n), or n when all are fine. */
static size_t name_bad_at(const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!name_char_ok(name[i])) {
            return i;
        }
    }
    return n;
}

/* Method names may also start with '$': the methods every service answers
 * ("$ping", "$stats") live in their own namespace so they never collide with
 * a service's own methods. */
static size_t method_bad_at(const char *name, size_t n)
{
    if (n == 0 || name[0] != '$') {
        return name_bad_at(name, n);
    }
    const size_t bad = name_bad_at(name + 1, n - 1);
    return bad == n - 1 ? n : bad + 1;
}

/* Offset of the first byte that breaks well-formed UTF-8 (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF) or a NUL, else n. Error
 * messages end up in logs and in other languages' strings, so they must be text. */
static size_t utf8_bad_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const uint8_t c = s[i];
        size_t k = 0;
        uint8_t lo = 0x80;
        uint8_t hi = 0xbf;
        if (c == 0) {
            return i;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80;
            hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            lo = c == 0xf0 ? 0x90 : 0x80;
            hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            return i;
        }
        if (k > n - i - 1) {
            return i;
        }
        for (size_t j = 1; j <= k; j++) {
            const uint8_t min = j == 1 ? lo : 0x80;
            const uint8_t max = j == 1 ? hi : 0xbf;
            if (s[i + j] < min || s[i + j] > max) {
                return i;
            }
        }
        i += k + 1;
    }
    return n;
}

/* Bytes of data a tensor with these dims holds; 0 with *ok = 0 on overflow. */
static size_t tensor_bytes(uint8_t dtype, uint8_t ndim, const uint64_t *dims, int *ok)
{
    size_t total = elem_size(dtype);
    *ok = 1;
    for (uint8_t d = 0; d < ndim; d++) {
        if (dims[d] > SIZE_MAX || aimsi_mul_ok(total, (size_t)dims[d], &total) != 0) {
            *ok = 0;
            return 0;
        }
    }
    return total;
}

/* ---- header -------------------------------------------------------------------- */

static aims_status hdr_parse(const uint8_t *p, raw_hdr *h)
{
    if (memcmp(p, frame_magic, sizeof frame_magic) != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 0: bad magic (not an AIMF frame)");
    }
    if (p[4] == 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 4: version 0 is not valid");
    }
    if (p[4] > AIMSI_FRAME_VERSION) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "frame: byte 4: version %u is newer than this build's %u", p[4],
                         AIMSI_FRAME_VERSION);
    }
    h->version = p[4]; /* 1 is still parsed: the node answers it (aimsi_wire.h) */
    const uint32_t crc = aimsi_crc32c(0, p, 40);
    if (crc != aimsi_load_u32le(p + 40)) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "frame: byte 40: header CRC 0x%08x does not match stored 0x%08x",
                         (unsigned)crc, (unsigned)aimsi_load_u32le(p + 40));
    }
    h->type = p[5];
    h->flags = (uint16_t)(p[6] | (p[7] << 8));
    h->request_id = aimsi_load_u64le(p + 8);
    h->deadline_ns = aimsi_load_u64le(p + 16);
    h->status = (int32_t)aimsi_load_u32le(p + 24);
    h->slen = (uint16_t)(p[28] | (p[29] << 8));
    h->mlen = (uint16_t)(p[30] | (p[31] << 8));
    h->stored = aimsi_load_u32le(p + 32);
    h->raw = aimsi_load_u32le(p + 36);
    if (!type_valid(h->type)) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 5: unknown frame type %u", h->type);
    }
    if ((h->flags & ~AIMSI_FRAME_FLAG_ZSTD) != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 6: unknown flag bits 0x%04x",
                         (unsigned)h->flags);
    }
    if (h->slen > AIMSI_FRAME_MAX_SERVICE || (h->type == AIMSI_FRAME_REQUEST && h->slen == 0)) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 28: service name length %u invalid",
                         (unsigned)h->slen);
    }
    if (h->mlen > AIMSI_FRAME_MAX_METHOD) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 30: method name length %u > %u",
                         (unsigned)h->mlen, AIMSI_FRAME_MAX_METHOD);
    }
    if ((h->flags & AIMSI_FRAME_FLAG_ZSTD) == 0 && h->stored != h->raw) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "frame: byte 32: uncompressed payload stored %u != raw %u",
                         (unsigned)h->stored, (unsigned)h->raw);
    }
    if ((h->flags & AIMSI_FRAME_FLAG_ZSTD) != 0 && h->stored == 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 32: compressed payload is empty");
    }
    if (h->type == AIMSI_FRAME_REQUEST && h->status != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte 24: request with status %d",
                         (int)h->status);
    }
    return AIMS_OK;
}

static size_t hdr_total(const raw_hdr *h)
{
    /* At most 44 + 128 + 64 + 2^32 - 1: fits size_t on 64-bit; on 32-bit the
     * caller's max_frame check below catches the wrap because we saturate. */
    const size_t fixed = AIMSI_FRAME_HEADER + h->slen + h->mlen;
    return h->stored > SIZE_MAX - fixed ? SIZE_MAX : fixed + h->stored;
}

aims_status aimsi_frame_peek(const void *buf, size_t len, size_t max_frame, size_t *out_total)
{
    if ((buf == NULL && len > 0) || out_total == NULL) {
        return AIMSI_MISUSE("buf or out_total is NULL");
    }
    const uint8_t *const p = buf;
    if (len < AIMSI_FRAME_HEADER) {
        const size_t n = len < sizeof frame_magic ? len : sizeof frame_magic;
        if (n > 0 && memcmp(p, frame_magic, n) != 0) {
            return aimsi_err(NULL, AIMS_E_CORRUPT,
                             "frame: byte 0: bad magic (not an AIMF frame)");
        }
        *out_total = AIMSI_FRAME_HEADER;
        return AIMS_OK;
    }
    raw_hdr h;
    AIMSI_TRY(hdr_parse(p, &h));
    const size_t total = hdr_total(&h);
    if (total > max_frame) {
        return aimsi_err(NULL, AIMS_E_RANGE, "frame: byte 32: frame of %zu bytes exceeds cap %zu",
                         total, max_frame);
    }
    *out_total = total;
    return AIMS_OK;
}

uint8_t aimsi_frame_peek_id(const void *buf, uint64_t *request_id)
{
    const uint8_t *const p = buf;
    *request_id = aimsi_load_u64le(p + 8);
    return p[5];
}

/* ---- encode -------------------------------------------------------------------- */

static aims_status check_name(const char *what, const char *name, size_t max, size_t min,
                              size_t *out_len)
{
    const size_t n = strnlen(name, max + 1);
    if (n > max || n < min) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: %s name length must be %zu..%zu", what,
                         min, max);
    }
    const size_t bad = strcmp(what, "method") == 0 ? method_bad_at(name, n) : name_bad_at(name, n);
    if (bad < n) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "frame encode: %s name has a character outside [A-Za-z0-9_.@/-] at %zu",
                         what, bad);
    }
    *out_len = n;
    return AIMS_OK;
}

static aims_status check_tensor(const aimsi_tensor *t, size_t i, size_t *name_len)
{
    if (elem_size(t->dtype) == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: tensor %zu: unknown dtype %u", i,
                         t->dtype);
    }
    if (t->ndim > AIMSI_FRAME_MAX_NDIM) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: tensor %zu: ndim %u > %u", i, t->ndim,
                         AIMSI_FRAME_MAX_NDIM);
    }
    *name_len = strnlen(t->name, AIMSI_FRAME_MAX_NAME + 1);
    if (*name_len > AIMSI_FRAME_MAX_NAME) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: tensor %zu: name longer than %u", i,
                         AIMSI_FRAME_MAX_NAME);
    }
    int ok = 0;
    const size_t bytes = tensor_bytes(t->dtype, t->ndim, t->dims, &ok);
    if (!ok || bytes != t->bytes) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "frame encode: tensor %zu: %zu data bytes do not match its shape", i,
                         t->bytes);
    }
    if (bytes > 0 && t->data == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: tensor %zu: data is NULL", i);
    }
    return AIMS_OK;
}

/* Append one tensor; `base` is where the payload starts in b (padding
 * counts from there). */
static aims_status put_tensor(aimsi_buf *b, const aimsi_tensor *t, size_t name_len, size_t base)
{
    static const uint8_t zeros[PAD] = {0};
    const uint8_t head[4] = {t->dtype, t->ndim, (uint8_t)name_len, (uint8_t)(name_len >> 8)};
    AIMSI_TRY(aimsi_buf_append(b, head, sizeof head));
    AIMSI_TRY(aimsi_buf_append(b, t->name, name_len));
    for (uint8_t d = 0; d < t->ndim; d++) {
        AIMSI_TRY(aimsi_buf_put_u64le(b, t->dims[d]));
    }
    AIMSI_TRY(aimsi_buf_append(b, zeros, (PAD - (b->len - base) % PAD) % PAD));
    return aimsi_buf_append(b, t->data, t->bytes);
}

/* The payload of a frame: with pay == NULL only checked and sized (*need:
 * its exact length); else appended to pay, which must hold exactly that many
 * more bytes -- a reserve the caller already made is never grown (the
 * in-place encode below relies on it: pay is then a window into `out`). */
static aims_status build_payload(const aimsi_frame_hdr *hdr, const aimsi_tensor *tensors,
                                 size_t n, const char *message, aimsi_buf *pay, size_t *need)
{
    if (has_tensors(hdr->type)) {
        if (message != NULL || n > AIMSI_FRAME_MAX_TENSORS || (n > 0 && tensors == NULL)) {
            return aimsi_err(NULL, AIMS_E_INVAL,
                             "frame encode: %zu tensors (max %u, non-NULL) and no message", n,
                             AIMSI_FRAME_MAX_TENSORS);
        }
        size_t name_len[AIMSI_FRAME_MAX_TENSORS];
        /* The payload's exact size, reserved at once: laid out by doubling
         * from 64 bytes it cost two or three reallocs per frame, on both
         * sides of every call (P14 profile). Padding counts from the
         * payload's first byte. */
        size_t len = 4u;
        for (size_t i = 0; i < n; i++) {
            AIMSI_TRY(check_tensor(&tensors[i], i, &name_len[i]));
            len += 4u + name_len[i] + 8u * tensors[i].ndim;
            len += (PAD - len % PAD) % PAD;
            len = tensors[i].bytes > SIZE_MAX / 2 - len ? SIZE_MAX / 2 : len + tensors[i].bytes;
        }
        *need = len;
        if (pay == NULL) {
            return AIMS_OK;
        }
        const size_t base = pay->len;
        AIMSI_TRY(aimsi_buf_reserve(pay, len));
        AIMSI_TRY(aimsi_buf_put_u32le(pay, (uint32_t)n));
        for (size_t i = 0; i < n; i++) {
            AIMSI_TRY(put_tensor(pay, &tensors[i], name_len[i], base));
        }
        return AIMS_OK;
    }
    if (n > 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: type %u carries no tensors",
                         hdr->type);
    }
    if (hdr->type == AIMSI_FRAME_ERROR) {
        const size_t len = message == NULL ? 0 : strnlen(message, MAX_MESSAGE + 1);
        if (len > MAX_MESSAGE) {
            return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: error message longer than %u",
                             MAX_MESSAGE);
        }
        const size_t bad = utf8_bad_at((const uint8_t *)message, len);
        if (bad < len) {
            return aimsi_err(NULL, AIMS_E_INVAL,
                             "frame encode: error message is not UTF-8 at byte %zu", bad);
        }
        *need = len;
        return pay == NULL || len == 0 ? AIMS_OK : aimsi_buf_append(pay, message, len);
    }
    if (message != NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: type %u carries no message",
                         hdr->type);
    }
    *need = 0;
    return AIMS_OK;
}

static aims_status check_hdr(const aimsi_frame_hdr *hdr, size_t *slen, size_t *mlen)
{
    if (!type_valid(hdr->type)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: unknown frame type %u", hdr->type);
    }
    if (hdr->version > AIMSI_FRAME_VERSION) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: version %u is newer than %u",
                         hdr->version, AIMSI_FRAME_VERSION);
    }
    if (hdr->type == AIMSI_FRAME_REQUEST && hdr->status != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "frame encode: a request carries status 0");
    }
    AIMSI_TRY(check_name("service", hdr->service, AIMSI_FRAME_MAX_SERVICE,
                         hdr->type == AIMSI_FRAME_REQUEST ? 1 : 0, slen));
    return check_name("method", hdr->method, AIMSI_FRAME_MAX_METHOD, 0, mlen);
}

static void write_header(uint8_t *p, const aimsi_frame_hdr *hdr, uint16_t flags, size_t slen,
                         size_t mlen, uint32_t stored, uint32_t raw)
{
    memcpy(p, frame_magic, sizeof frame_magic);
    p[4] = hdr->version != 0 ? hdr->version : AIMSI_FRAME_VERSION;
    p[5] = hdr->type;
    p[6] = (uint8_t)flags;
    p[7] = (uint8_t)(flags >> 8);
    aimsi_store_u64le(p + 8, hdr->request_id);
    aimsi_store_u64le(p + 16, hdr->deadline_ns);
    aimsi_store_u32le(p + 24, (uint32_t)hdr->status);
    p[28] = (uint8_t)slen;
    p[29] = (uint8_t)(slen >> 8);
    p[30] = (uint8_t)mlen;
    p[31] = (uint8_t)(mlen >> 8);
    aimsi_store_u32le(p + 32, stored);
    aimsi_store_u32le(p + 36, raw);
    aimsi_store_u32le(p + 40, aimsi_crc32c(0, p, 40));
}

/* Try to shrink pay into z; on AIMS_OK *use_z says whether it did. */
static aims_status maybe_compress(const aimsi_buf *pay, size_t compress_above, aimsi_buf *z,
                                  int *use_z)
{
    *use_z = 0;
    if (compress_above == 0 || pay->len < compress_above || pay->len < 2) {
        return AIMS_OK;
    }
    AIMSI_TRY(aimsi_buf_reserve(z, pay->len - 1));
    size_t zlen = 0;
    const aims_status rc =
        aimsi_zstd_compress(pay->data, pay->len, ZSTD_LEVEL, z->data, pay->len - 1, &zlen);
    if (rc == AIMS_E_RANGE) {
        return AIMS_OK; /* would not shrink: store raw */
    }
    AIMSI_TRY(rc);
    z->len = zlen;
    *use_z = 1;
    return AIMS_OK;
}

static aims_status encode_into(const aimsi_frame_hdr *hdr, size_t slen, size_t mlen,
                               const aimsi_buf *pay, const aimsi_buf *z, int use_z,
                               aimsi_buf *out)
{
    const aimsi_buf *const body = use_z ? z : pay;
    if (pay->len > UINT32_MAX) {
        return aimsi_err(NULL, AIMS_E_RANGE, "frame encode: payload of %zu bytes exceeds 4 GiB",
                         pay->len);
    }
    const size_t total = AIMSI_FRAME_HEADER + slen + mlen + body->len;
    AIMSI_TRY(aimsi_buf_reserve(out, total));
    uint8_t *const p = out->data + out->len;
    write_header(p, hdr, use_z ? AIMSI_FRAME_FLAG_ZSTD : 0, slen, mlen, (uint32_t)body->len,
                 (uint32_t)pay->len);
    memcpy(p + AIMSI_FRAME_HEADER, hdr->service, slen);
    memcpy(p + AIMSI_FRAME_HEADER + slen, hdr->method, mlen);
    if (body->len > 0) {
        memcpy(p + AIMSI_FRAME_HEADER + slen + mlen, body->data, body->len);
    }
    out->len += total;
    return AIMS_OK;
}

/* A frame that will not be compressed: out grows once to its exact size and
 * the payload is laid out right behind the header and names -- no scratch
 * buffer, no copy of the payload (which was a malloc, a free and a memcpy
 * per frame on both sides of every call). `need`: the payload's size
 * (build_payload). On failure out->len is where it was. */
static aims_status encode_in_place(const aimsi_frame_hdr *hdr, const aimsi_tensor *tensors,
                                   size_t n, const char *message, size_t slen, size_t mlen,
                                   size_t need, aimsi_buf *out)
{
    if (need > UINT32_MAX) {
        return aimsi_err(NULL, AIMS_E_RANGE, "frame encode: payload of %zu bytes exceeds 4 GiB",
                         need);
    }
    const size_t head = AIMSI_FRAME_HEADER + slen + mlen;
    AIMSI_TRY(aimsi_buf_reserve(out, head + need));
    uint8_t *const p = out->data + out->len;
    /* A window on the reserved bytes: build_payload never grows it. */
    aimsi_buf win = {p + head, 0, need};
    AIMSI_TRY(build_payload(hdr, tensors, n, message, &win, &need));
    if (win.data != p + head || win.len != need) {
        return aimsi_err(NULL, AIMS_E_INTERNAL, "frame encode: payload size changed");
    }
    write_header(p, hdr, 0, slen, mlen, (uint32_t)need, (uint32_t)need);
    memcpy(p + AIMSI_FRAME_HEADER, hdr->service, slen);
    memcpy(p + AIMSI_FRAME_HEADER + slen, hdr->method, mlen);
    out->len += head + need;
    return AIMS_OK;
}

aims_status aimsi_frame_encode(const aimsi_frame_hdr *hdr, const aimsi_tensor *tensors,
                               size_t n, const char *message, size_t compress_above,
                               aimsi_buf *out)
{
    if (hdr == NULL || out == NULL) {
        return AIMSI_MISUSE("hdr or out is NULL");
    }
    size_t slen = 0;
    size_t mlen = 0;
    AIMSI_TRY(check_hdr(hdr, &slen, &mlen));
    size_t need = 0;
    AIMSI_TRY(build_payload(hdr, tensors, n, message, NULL, &need));
    if (compress_above == 0 || need < compress_above || need < 2) {
        return encode_in_place(hdr, tensors, n, message, slen, mlen, need, out);
    }
    aimsi_buf pay;
    aimsi_buf z;
    aimsi_buf_init(&pay);
    aimsi_buf_init(&z);
    int use_z = 0;
    aims_status rc = build_payload(hdr, tensors, n, message, &pay, &need);
    if (rc == AIMS_OK) {
        rc = maybe_compress(&pay, compress_above, &z, &use_z);
    }
    if (rc == AIMS_OK) {
        rc = encode_into(hdr, slen, mlen, &pay, &z, use_z, out);
    }
    aimsi_buf_free(&pay);
    aimsi_buf_free(&z);
    return rc;
}

/* ---- decode -------------------------------------------------------------------- */

static aims_status bad_payload(size_t base, size_t pos, const char *what)
{
    return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: payload byte %zu (frame byte %zu): %s", pos,
                     base + pos, what);
}

static aims_status parse_tensor(aimsi_rd *r, size_t base, aimsi_tensor *t)
{
    uint16_t nlen = 0;
    const uint8_t *bytes = NULL;
    const size_t at = r->pos;
    if (aimsi_rd_u8(r, &t->dtype) != 0 || aimsi_rd_u8(r, &t->ndim) != 0 ||
        aimsi_rd_u16le(r, &nlen) != 0) {
        return bad_payload(base, at, "truncated tensor header");
    }
    if (elem_size(t->dtype) == 0) {
        return bad_payload(base, at, "unknown tensor dtype");
    }
    if (t->ndim > AIMSI_FRAME_MAX_NDIM) {
        return bad_payload(base, at + 1, "tensor ndim above 4");
    }
    if (nlen > AIMSI_FRAME_MAX_NAME) {
        return bad_payload(base, at + 2, "tensor name longer than 64");
    }
    if (aimsi_rd_bytes(r, nlen, &bytes) != 0) {
        return bad_payload(base, r->pos, "truncated tensor name");
    }
    if (nlen > 0 && memchr(bytes, 0, nlen) != NULL) {
        return bad_payload(base, r->pos - nlen, "NUL inside a tensor name");
    }
    memcpy(t->name, bytes, nlen);
    t->name[nlen] = '\0';
    for (uint8_t d = 0; d < t->ndim; d++) {
        if (aimsi_rd_u64le(r, &t->dims[d]) != 0) {
            return bad_payload(base, r->pos, "truncated tensor dims");
        }
    }
    for (size_t d = t->ndim; d < AIMSI_FRAME_MAX_NDIM; d++) {
        t->dims[d] = 0; /* the frame is not cleared beforehand (decode) */
    }
    const size_t pad = (PAD - r->pos % PAD) % PAD;
    if (aimsi_rd_bytes(r, pad, &bytes) != 0) {
        return bad_payload(base, r->pos, "truncated padding");
    }
    for (size_t k = 0; k < pad; k++) {
        if (bytes[k] != 0) {
            return bad_payload(base, r->pos - pad + k, "non-zero padding");
        }
    }
    int ok = 0;
    t->bytes = tensor_bytes(t->dtype, t->ndim, t->dims, &ok);
    if (!ok) {
        return bad_payload(base, at, "tensor dims product overflows");
    }
    if (aimsi_rd_bytes(r, t->bytes, &bytes) != 0) {
        return bad_payload(base, r->pos, "tensor data runs past the payload");
    }
    t->data = bytes;
    return AIMS_OK;
}

/* base: frame offset of the payload, for messages (compressed: of the stored bytes). */
static aims_status parse_payload(aimsi_frame *f, size_t base)
{
    aimsi_rd r;
    aimsi_rd_init(&r, f->payload, f->payload_len);
    if (f->hdr.type == AIMSI_FRAME_ERROR) {
        if (f->payload_len > MAX_MESSAGE) {
            return bad_payload(base, 0, "error message longer than 1024 bytes");
        }
        const size_t bad = utf8_bad_at(f->payload, f->payload_len);
        if (bad < f->payload_len) {
            return bad_payload(base, bad, "error message is not UTF-8 (or holds a NUL)");
        }
        f->message = (const char *)f->payload;
        f->message_len = f->payload_len;
        return AIMS_OK;
    }
    if (!has_tensors(f->hdr.type)) {
        return f->payload_len == 0 ? AIMS_OK : bad_payload(base, 0, "control frame with payload");
    }
    uint32_t count = 0;
    if (aimsi_rd_u32le(&r, &count) != 0) {
        return bad_payload(base, 0, "truncated tensor count");
    }
    if (count > AIMSI_FRAME_MAX_TENSORS) {
        return bad_payload(base, 0, "tensor count above 64");
    }
    for (uint32_t i = 0; i < count; i++) {
        AIMSI_TRY(parse_tensor(&r, base, &f->tensors[i]));
    }
    if (aimsi_rd_left(&r) != 0) {
        return bad_payload(base, r.pos, "bytes after the last tensor");
    }
    f->n_tensors = count;
    return AIMS_OK;
}

static aims_status copy_names(const uint8_t *p, const raw_hdr *h, aimsi_frame_hdr *out)
{
    const char *const s = (const char *)p + AIMSI_FRAME_HEADER;
    const char *const m = s + h->slen;
    size_t bad = name_bad_at(s, h->slen);
    if (bad < h->slen) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "frame: byte %zu: service name character outside [A-Za-z0-9_.@/-]",
                         AIMSI_FRAME_HEADER + bad);
    }
    bad = method_bad_at(m, h->mlen);
    if (bad < h->mlen) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "frame: byte %zu: method name character outside [A-Za-z0-9_.@/-]",
                         AIMSI_FRAME_HEADER + h->slen + bad);
    }
    out->version = h->version;
    out->type = h->type;
    out->flags = h->flags;
    out->request_id = h->request_id;
    out->deadline_ns = h->deadline_ns;
    out->status = h->status;
    memcpy(out->service, s, h->slen);
    out->service[h->slen] = '\0';
    memcpy(out->method, m, h->mlen);
    out->method[h->mlen] = '\0';
    return AIMS_OK;
}

static aims_status inflate(const uint8_t *src, const raw_hdr *h, size_t base, aimsi_frame *f)
{
    const char *why = aimsi_zstd_frame_problem(src, h->stored, h->raw);
    if (why != NULL) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte %zu: payload holds %s", base, why);
    }
    uint8_t *const buf = aimsi_malloc(h->raw > 0 ? h->raw : 1);
    if (buf == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "frame: out of memory for a %u-byte payload",
                         (unsigned)h->raw);
    }
    const aims_status rc = aimsi_zstd_decompress(src, h->stored, buf, h->raw, &why);
    if (rc != AIMS_OK) {
        aimsi_free(buf);
        return aimsi_err(NULL, rc, "frame: byte %zu: payload does not decode: %s", base, why);
    }
    f->owned = buf;
    f->payload = buf;
    f->payload_len = h->raw;
    return AIMS_OK;
}

aims_status aimsi_frame_decode(const void *buf, size_t len, size_t max_raw, aimsi_frame *out)
{
    if ((buf == NULL && len > 0) || out == NULL) {
        return AIMSI_MISUSE("buf or out is NULL");
    }
    const uint8_t *const p = buf;
    if (len < AIMSI_FRAME_HEADER) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte %zu: truncated header (needs %u)", len,
                         AIMSI_FRAME_HEADER);
    }
    raw_hdr h;
    AIMSI_TRY(hdr_parse(p, &h));
    const size_t total = hdr_total(&h);
    if (total != len) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "frame: byte %zu: frame declares %zu bytes, got %zu",
                         total < len ? total : len, total, len);
    }
    if (h.raw > max_raw) {
        return aimsi_err(NULL, AIMS_E_RANGE, "frame: byte 36: payload of %u bytes exceeds cap %zu",
                         (unsigned)h.raw, max_raw);
    }
    /* Only the fixed part is cleared and only tensors[0, n) are copied out:
     * a frame is ~8 KB, nearly all of it the tensor table, and clearing and
     * copying it whole cost two 8 KB memcpys per decode -- two decodes per
     * call on the hot path of pipelined calls (P14). */
    aimsi_frame f;
    memset(&f, 0, offsetof(aimsi_frame, tensors));
    f.message = NULL;
    f.message_len = 0;
    AIMSI_TRY(copy_names(p, &h, &f.hdr));
    const size_t base = AIMSI_FRAME_HEADER + h.slen + h.mlen;
    if ((h.flags & AIMSI_FRAME_FLAG_ZSTD) != 0) {
        AIMSI_TRY(inflate(p + base, &h, base, &f));
    } else {
        f.payload = p + base;
        f.payload_len = h.raw;
    }
    const aims_status rc = parse_payload(&f, base);
    if (rc != AIMS_OK) {
        aimsi_free(f.owned);
        return rc;
    }
    memcpy(out, &f, offsetof(aimsi_frame, tensors));
    memcpy(out->tensors, f.tensors, f.n_tensors * sizeof f.tensors[0]);
    out->message = f.message;
    out->message_len = f.message_len;
    return AIMS_OK;
}

void aimsi_frame_release(aimsi_frame *f)
{
    if (f == NULL) {
        return;
    }
    aimsi_free(f->owned);
    f->owned = NULL;
    f->payload = NULL;
    f->payload_len = 0;
    f->n_tensors = 0;
    f->message = NULL;
    f->message_len = 0;
}
