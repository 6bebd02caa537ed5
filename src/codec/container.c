/*
 * container.c -- the sectioned, checksummed file format every libaims file uses.
 *
 * The layout is specified in aimsi_codec.h. This file is its only writer and
 * reader, and the only place (with bytes.c's version query) that calls zstd.
 *
 * Writer. aimsi_cw_add compresses a section at once into one growing payload
 * buffer and records (tag, flags, offset in the payload, stored size, raw
 * size) in a small table, so the caller's data need not outlive the call.
 * aimsi_cw_finish then lays out header + table + payloads in one allocation,
 * turning payload-relative offsets into file offsets, and writes the header
 * CRC last. A failed add leaves the writer exactly as it was (the payload
 * length and section count only move after success), so a caller may retry
 * or go on. Every zstd frame carries its content size and zstd's own content
 * checksum (XXH64), so payload damage is caught at decode time; the header
 * CRC-32C covers the header, the table and the raw payloads: sections under
 * 64 bytes are stored raw (a zstd frame would be larger than the data), and
 * the CRC is what protects them.
 *
 * Compression level. Level 0 means "ours": zstd level 3 for sections up to
 * 1 MiB (small metadata, ratio matters, time does not) and level 1 above it,
 * because big sections are float matrices where level 3 buys a few percent of
 * size for roughly half the speed; a 200 MB dataset must save in a few
 * seconds on one core. A level the caller chooses explicitly always wins.
 *
 * Reader. aimsi_cr_open_mem validates everything the table claims before any
 * section is touched: magic, major version (newer is refused), the CRC, a
 * capped section count, that every section lies inside the file after the
 * table, that sections do not overlap each other, that tags are unique, and
 * that raw sections have stored == raw size. aimsi_cr_section then checks the
 * caller's size cap before allocating, insists on a single zstd frame (not a
 * skippable one, with content size equal to the table's raw size and the
 * checksum flag set, consumed exactly to the last byte of the section), and
 * decodes it in one shot into a buffer of exactly the raw size. After open
 * the reader is immutable, so several threads may decode sections at once;
 * each call uses its own short-lived zstd context.
 *
 * zstd's working memory goes through the allocator hook (ZSTD_customMem),
 * so allocation-failure tests reach inside zstd too; zstd reports those as
 * memory_allocation errors, which map to AIMS_E_NOMEM. The one-shot helpers
 * aimsi_zstd_compress / _frame_problem / _decompress live here too, next to
 * that hook, so the wire frames (frame.c) share the hook and the frame checks.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem, *_advanced, ZSTD_getFrameHeader */
#include <zstd.h>
#include <zstd_errors.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_codec.h"

#define HEADER_SIZE 24u
#define ENTRY_SIZE 32u
#define RAW_BELOW 64u                   /* sections smaller than this are stored raw */
#define BIG_SECTION ((size_t)1 << 20)   /* above this the default level drops to 1 */
#define DEFAULT_LEVEL_SMALL 3
#define DEFAULT_LEVEL_BIG 1
#define FLAG_ZSTD 1u
#define NAME_CAP 192

static const uint8_t container_magic[8] = {'A', 'I', 'M', 'S', 'C', 'T', 'R', '\0'};

/* One table entry; `off` is payload-relative in the writer, absolute in the reader. */
typedef struct section {
    uint32_t tag;
    uint32_t flags;
    uint64_t off;
    uint64_t stored;
    uint64_t raw;
} section;

struct aimsi_cwriter {
    uint32_t kind;
    int level; /* 0 = our size-dependent default */
    ZSTD_CCtx *cctx;
    section *secs;
    size_t n;
    size_t cap;
    uint8_t *pay; /* payload bytes, in table order */
    size_t pay_len;
    size_t pay_cap;
};

struct aimsi_creader {
    const uint8_t *data;
    size_t len;
    int own;
    uint32_t kind;
    uint16_t minor;
    size_t n;
    section *secs; /* sorted by offset */
    uint32_t crc;  /* stored checksum, verified by cr_check_crc */
    char name[NAME_CAP];
};

/* CRC-32C over header bytes [0, 20), the table, and every raw (uncompressed)
 * payload in table order: zstd payloads carry their own checksum, raw ones
 * (small metadata) would otherwise have none. */
static uint32_t container_crc(const uint8_t *file, size_t table_end, const section *secs,
                              size_t n, size_t payload_base)
{
    uint32_t crc = aimsi_crc32c(0, file, 20);
    crc = aimsi_crc32c(crc, file + HEADER_SIZE, table_end - HEADER_SIZE);
    for (size_t i = 0; i < n; i++) {
        if ((secs[i].flags & FLAG_ZSTD) == 0 && secs[i].stored > 0) {
            crc = aimsi_crc32c(crc, file + payload_base + secs[i].off, (size_t)secs[i].stored);
        }
    }
    return crc;
}

/* ---- zstd glue ----------------------------------------------------------------- */

static void *zstd_alloc(void *opaque, size_t size)
{
    (void)opaque;
    return aimsi_malloc(size);
}

static void zstd_free(void *opaque, void *address)
{
    (void)opaque;
    aimsi_free(address);
}

static ZSTD_customMem zstd_mem(void)
{
    const ZSTD_customMem mem = {zstd_alloc, zstd_free, NULL};
    return mem;
}

/* zstd's allocation failures are ours (the hook); everything else is corrupt
 * input on decode or a backend failure on encode. */
static aims_status zstd_status(size_t rc, aims_status otherwise)
{
    return ZSTD_getErrorCode(rc) == ZSTD_error_memory_allocation ? AIMS_E_NOMEM : otherwise;
}

/* ---- shared one-shot zstd helpers (declared in aimsi_codec.h; frame.c uses them) -- */

aims_status aimsi_zstd_compress(const void *src, size_t len, int level, void *dst, size_t cap,
                                size_t *out_len)
{
    ZSTD_CCtx *const cctx = ZSTD_createCCtx_advanced(zstd_mem());
    if (cctx == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "zstd: out of memory for a compression context");
    }
    size_t rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(rc)) {
        rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    }
    if (!ZSTD_isError(rc)) {
        rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
    }
    if (!ZSTD_isError(rc)) {
        rc = ZSTD_compress2(cctx, dst, cap, src, len);
    }
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(rc)) {
        /* Not fitting is an answer, not an error: the caller stores the bytes raw. */
        if (ZSTD_getErrorCode(rc) == ZSTD_error_dstSize_tooSmall) {
            return AIMS_E_RANGE;
        }
        return aimsi_err(NULL, zstd_status(rc, AIMS_E_BACKEND), "zstd: compressing %zu bytes: %s",
                         len, ZSTD_getErrorName(rc));
    }
    *out_len = rc;
    return AIMS_OK;
}

const char *aimsi_zstd_frame_problem(const void *src, size_t stored, uint64_t raw)
{
    ZSTD_frameHeader fh;
    if (ZSTD_getFrameHeader(&fh, src, stored) != 0) {
        return "no valid zstd frame header";
    }
    if (fh.frameType != ZSTD_frame) {
        return "a skippable frame instead of data";
    }
    if (fh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN) {
        return "a zstd frame without content size";
    }
    if (fh.frameContentSize != raw) {
        return "a zstd frame whose content size differs from the declared raw size";
    }
    if (fh.checksumFlag == 0) {
        return "a zstd frame without checksum";
    }
    if (ZSTD_findFrameCompressedSize(src, stored) != stored) {
        return "a truncated zstd frame or bytes after it";
    }
    /* Refuse before anyone allocates: every block has a 3-byte header and yields
     * at most ZSTD_BLOCKSIZE_MAX bytes, so these bytes cannot expand to raw.
     * (ZSTD_decompressBound would just trust the frame's own size field.) */
    if (stored / 3 < UINT64_MAX / ZSTD_BLOCKSIZE_MAX &&
        (uint64_t)(stored / 3) * ZSTD_BLOCKSIZE_MAX < raw) {
        return "a zstd frame too short for its content size";
    }
    return NULL;
}

aims_status aimsi_zstd_decompress(const void *src, size_t stored, void *dst, size_t raw,
                                  const char **why)
{
    uint8_t dummy[1];
    ZSTD_DCtx *const dctx = ZSTD_createDCtx_advanced(zstd_mem());
    if (dctx == NULL) {
        *why = "out of memory for a zstd context";
        return AIMS_E_NOMEM;
    }
    const size_t rc = ZSTD_decompressDCtx(dctx, raw > 0 ? dst : dummy, raw, src, stored);
    ZSTD_freeDCtx(dctx);
    if (ZSTD_isError(rc)) {
        *why = ZSTD_getErrorName(rc);
        return zstd_status(rc, AIMS_E_CORRUPT);
    }
    if (rc != raw) {
        *why = "decoded size differs from the declared raw size";
        return AIMS_E_CORRUPT;
    }
    return AIMS_OK;
}

/* Printable form of a tag for messages: "META" or "0x1234abcd". */
static const char *tag_text(uint32_t tag, char buf[16])
{
    int printable = 1;
    for (int i = 0; i < 4; i++) {
        const unsigned c = (tag >> (8 * i)) & 0xffu;
        if (c < 0x20u || c > 0x7eu) {
            printable = 0;
        }
    }
    if (printable != 0) {
        for (int i = 0; i < 4; i++) {
            buf[i] = (char)((tag >> (8 * i)) & 0xffu);
        }
        buf[4] = '\0';
    } else {
        (void)snprintf(buf, 16, "0x%08x", (unsigned)tag);
    }
    return buf;
}

/* ---- writer ------------------------------------------------------------------------ */

aims_status aimsi_cw_create(uint32_t kind, int level, aimsi_cwriter **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    if (kind == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "container: kind 0 is reserved (means \"any\")");
    }
    if (level != 0 && (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())) {
        return aimsi_err(NULL, AIMS_E_INVAL, "container: zstd level %d outside [%d, %d]", level,
                         ZSTD_minCLevel(), ZSTD_maxCLevel());
    }
    aimsi_cwriter *const w = aimsi_calloc(1, sizeof *w);
    if (w == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "container: out of memory creating a writer");
    }
    w->cctx = ZSTD_createCCtx_advanced(zstd_mem());
    if (w->cctx == NULL) {
        aimsi_free(w);
        return aimsi_err(NULL, AIMS_E_NOMEM, "container: out of memory creating a zstd context");
    }
    w->kind = kind;
    w->level = level;
    *out = w;
    return AIMS_OK;
}

void aimsi_cw_destroy(aimsi_cwriter *w)
{
    if (w == NULL) {
        return;
    }
    ZSTD_freeCCtx(w->cctx);
    aimsi_free(w->secs);
    aimsi_free(w->pay);
    aimsi_free(w);
}

static int cw_has(const aimsi_cwriter *w, uint32_t tag)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->secs[i].tag == tag) {
            return 1;
        }
    }
    return 0;
}

/* Room for one more table entry. Growing capacity changes nothing visible. */
static aims_status cw_reserve_entry(aimsi_cwriter *w)
{
    if (w->n < w->cap) {
        return AIMS_OK;
    }
    const size_t cap = w->cap == 0 ? 8 : w->cap * 2;
    section *const secs = aimsi_realloc(w->secs, cap * sizeof *secs);
    if (secs == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "container: out of memory growing the table");
    }
    w->secs = secs;
    w->cap = cap;
    return AIMS_OK;
}

/* Room for `extra` more payload bytes, growing by 1.5x to amortise many adds. */
static aims_status cw_reserve_payload(aimsi_cwriter *w, size_t extra)
{
    if (extra > SIZE_MAX - w->pay_len) {
        return aimsi_err(NULL, AIMS_E_RANGE, "container: payload size overflows");
    }
    const size_t need = w->pay_len + extra;
    if (need <= w->pay_cap) {
        return AIMS_OK;
    }
    size_t cap = w->pay_cap + w->pay_cap / 2;
    if (cap < need) {
        cap = need;
    }
    uint8_t *const pay = aimsi_realloc(w->pay, cap);
    if (pay == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "container: out of memory for %zu payload bytes",
                         cap);
    }
    w->pay = pay;
    w->pay_cap = cap;
    return AIMS_OK;
}

static int cw_level_for(const aimsi_cwriter *w, size_t len)
{
    if (w->level != 0) {
        return w->level;
    }
    return len > BIG_SECTION ? DEFAULT_LEVEL_BIG : DEFAULT_LEVEL_SMALL;
}

/* Compress data into the payload's spare room; returns the frame size in *stored. */
static aims_status cw_compress(aimsi_cwriter *w, uint32_t tag, const void *data, size_t len,
                               size_t *stored)
{
    char tb[16];
    const size_t bound = ZSTD_compressBound(len);
    if (ZSTD_isError(bound)) {
        return aimsi_err(NULL, AIMS_E_RANGE, "container: section '%s' of %zu bytes is too big",
                         tag_text(tag, tb), len);
    }
    AIMSI_TRY(cw_reserve_payload(w, bound));
    size_t rc = ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(rc)) {
        rc = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, cw_level_for(w, len));
    }
    if (!ZSTD_isError(rc)) {
        rc = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    }
    if (!ZSTD_isError(rc)) {
        rc = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1);
    }
    if (!ZSTD_isError(rc)) {
        rc = ZSTD_compress2(w->cctx, w->pay + w->pay_len, bound, data, len);
    }
    if (ZSTD_isError(rc)) {
        return aimsi_err(NULL, zstd_status(rc, AIMS_E_BACKEND),
                         "container: zstd failed on section '%s' (%zu bytes): %s",
                         tag_text(tag, tb), len, ZSTD_getErrorName(rc));
    }
    *stored = rc;
    return AIMS_OK;
}

aims_status aimsi_cw_add(aimsi_cwriter *w, uint32_t tag, const void *data, size_t len)
{
    char tb[16];
    if (w == NULL) {
        return AIMSI_MISUSE("writer is NULL");
    }
    if (data == NULL && len > 0) {
        return AIMSI_MISUSE("data is NULL");
    }
    if (cw_has(w, tag)) {
        return aimsi_err(NULL, AIMS_E_EXISTS, "container: section '%s' added twice",
                         tag_text(tag, tb));
    }
    if (w->n >= AIMSI_MAX_SECTIONS) {
        return aimsi_err(NULL, AIMS_E_RANGE, "container: more than %d sections",
                         AIMSI_MAX_SECTIONS);
    }
    AIMSI_TRY(cw_reserve_entry(w));
    section s = {.tag = tag, .flags = 0, .off = w->pay_len, .stored = len, .raw = len};
    if (len < RAW_BELOW) {
        AIMSI_TRY(cw_reserve_payload(w, len));
        if (len > 0) {
            memcpy(w->pay + w->pay_len, data, len);
        }
    } else {
        size_t stored = 0;
        AIMSI_TRY(cw_compress(w, tag, data, len, &stored));
        s.flags = FLAG_ZSTD;
        s.stored = stored;
    }
    /* Commit only now: every failure above left the writer unchanged. */
    w->pay_len += (size_t)s.stored;
    w->secs[w->n++] = s;
    return AIMS_OK;
}

aims_status aimsi_cw_finish(aimsi_cwriter *w, void **out, size_t *out_len)
{
    if (w == NULL || out == NULL || out_len == NULL) {
        return AIMSI_MISUSE("writer, out or out_len is NULL");
    }
    /* n <= AIMSI_MAX_SECTIONS, so the table size cannot overflow. */
    const size_t table_end = HEADER_SIZE + ENTRY_SIZE * w->n;
    if (w->pay_len > SIZE_MAX - table_end) {
        return aimsi_err(NULL, AIMS_E_RANGE, "container: file size overflows");
    }
    const size_t total = table_end + w->pay_len;
    uint8_t *const buf = aimsi_malloc(total);
    if (buf == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "container: out of memory for %zu bytes", total);
    }
    memcpy(buf, container_magic, sizeof container_magic);
    buf[8] = (uint8_t)AIMSI_CONTAINER_MAJOR;
    buf[9] = (uint8_t)(AIMSI_CONTAINER_MAJOR >> 8);
    buf[10] = (uint8_t)AIMSI_CONTAINER_MINOR;
    buf[11] = (uint8_t)(AIMSI_CONTAINER_MINOR >> 8);
    aimsi_store_u32le(buf + 12, w->kind);
    aimsi_store_u32le(buf + 16, (uint32_t)w->n);
    for (size_t i = 0; i < w->n; i++) {
        uint8_t *const e = buf + HEADER_SIZE + ENTRY_SIZE * i;
        aimsi_store_u32le(e, w->secs[i].tag);
        aimsi_store_u32le(e + 4, w->secs[i].flags);
        aimsi_store_u64le(e + 8, table_end + w->secs[i].off);
        aimsi_store_u64le(e + 16, w->secs[i].stored);
        aimsi_store_u64le(e + 24, w->secs[i].raw);
    }
    if (w->pay_len > 0) {
        memcpy(buf + table_end, w->pay, w->pay_len);
    }
    /* Writer offsets are payload-relative; the payload starts at table_end. */
    aimsi_store_u32le(buf + 20, container_crc(buf, table_end, w->secs, w->n, table_end));
    *out = buf;
    *out_len = total;
    return AIMS_OK;
}

aims_status aimsi_cw_save(aimsi_cwriter *w, const char *path)
{
    if (w == NULL || path == NULL) {
        return AIMSI_MISUSE("writer or path is NULL");
    }
    void *buf = NULL;
    size_t len = 0;
    AIMSI_TRY(aimsi_cw_finish(w, &buf, &len));
    const aims_status rc = aimsi_file_write_atomic(path, buf, len);
    aimsi_free(buf);
    return rc;
}

/* ---- reader -------------------------------------------------------------------------- */

static int section_cmp(const void *a, const void *b)
{
    const section *const x = a;
    const section *const y = b;
    if (x->off != y->off) {
        return x->off < y->off ? -1 : 1;
    }
    if (x->stored != y->stored) {
        return x->stored < y->stored ? -1 : 1;
    }
    return 0;
}

/* Check the fixed header; on success *n is the (capped) section count. */
static aims_status cr_check_header(aimsi_creader *r, uint32_t expect_kind, size_t *n)
{
    aimsi_rd rd;
    aimsi_rd_init(&rd, r->data, r->len);
    const uint8_t *magic = NULL;
    uint16_t major = 0;
    uint32_t kind = 0;
    uint32_t count = 0;
    uint32_t crc = 0;
    if (aimsi_rd_bytes(&rd, sizeof container_magic, &magic) != 0 ||
        memcmp(magic, container_magic, sizeof container_magic) != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: byte 0: not a libaims container (bad magic)",
                         r->name);
    }
    if (aimsi_rd_u16le(&rd, &major) != 0 || aimsi_rd_u16le(&rd, &r->minor) != 0 ||
        aimsi_rd_u32le(&rd, &kind) != 0 || aimsi_rd_u32le(&rd, &count) != 0 ||
        aimsi_rd_u32le(&rd, &crc) != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: byte %zu: truncated header (%zu bytes, need %u)", r->name, r->len,
                         r->len, HEADER_SIZE);
    }
    /* The major is checked before the CRC: a newer major may lay out the rest
     * differently, so "unsupported" is the honest answer. */
    if (major == 0 || major > AIMSI_CONTAINER_MAJOR) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "%s: byte 8: container format %u.%u, this build reads %d.x", r->name,
                         (unsigned)major, (unsigned)r->minor, AIMSI_CONTAINER_MAJOR);
    }
    if (count > AIMSI_MAX_SECTIONS) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: byte 16: %u sections, more than the cap %d",
                         r->name, (unsigned)count, AIMSI_MAX_SECTIONS);
    }
    const size_t table_len = (size_t)count * ENTRY_SIZE;
    if (aimsi_rd_left(&rd) < table_len) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: byte %zu: truncated section table (%u entries need %zu bytes)",
                         r->name, r->len, (unsigned)count, HEADER_SIZE + table_len);
    }
    /* The CRC also covers raw payloads, which can only be located once the
     * table entries are checked (cr_check_crc, called from cr_parse). */
    r->crc = crc;
    if (kind == 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: byte 12: kind 0 is reserved", r->name);
    }
    if (expect_kind != 0 && kind != expect_kind) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: byte 12: file holds kind %u, expected kind %u",
                         r->name, (unsigned)kind, (unsigned)expect_kind);
    }
    r->kind = kind;
    *n = count;
    return AIMS_OK;
}

/* Parse one table entry and check it lies inside the file after the table. */
static aims_status cr_parse_entry(const aimsi_creader *r, size_t i, size_t table_end,
                                  section *s)
{
    char tb[16];
    const uint8_t *const e = r->data + HEADER_SIZE + ENTRY_SIZE * i;
    const size_t at = HEADER_SIZE + ENTRY_SIZE * i;
    s->tag = aimsi_load_u32le(e);
    s->flags = aimsi_load_u32le(e + 4);
    s->off = aimsi_load_u64le(e + 8);
    s->stored = aimsi_load_u64le(e + 16);
    s->raw = aimsi_load_u64le(e + 24);
    if (s->off < table_end || s->off > r->len || s->stored > r->len - s->off) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: byte %zu: section '%s' spans [%llu, +%llu) outside the payload "
                         "area [%zu, %zu)",
                         r->name, at, tag_text(s->tag, tb), (unsigned long long)s->off,
                         (unsigned long long)s->stored, table_end, r->len);
    }
    if ((s->flags & FLAG_ZSTD) == 0 && s->stored != s->raw) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: byte %zu: raw section '%s' stores %llu bytes but claims %llu",
                         r->name, at, tag_text(s->tag, tb), (unsigned long long)s->stored,
                         (unsigned long long)s->raw);
    }
    return AIMS_OK;
}

/* Tags unique, sections disjoint (after sorting by offset). */
static aims_status cr_check_layout(aimsi_creader *r)
{
    char tb[16];
    for (size_t i = 0; i < r->n; i++) {
        for (size_t j = i + 1; j < r->n; j++) {
            if (r->secs[i].tag == r->secs[j].tag) {
                return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section '%s' appears twice",
                                 r->name, tag_text(r->secs[i].tag, tb));
            }
        }
    }
    if (r->n > 1) {
        qsort(r->secs, r->n, sizeof *r->secs, section_cmp);
    }
    for (size_t i = 1; i < r->n; i++) {
        const section *const a = &r->secs[i - 1];
        if (a->off + a->stored > r->secs[i].off) {
            return aimsi_err(NULL, AIMS_E_CORRUPT,
                             "%s: byte %llu: section '%s' overlaps the section before it",
                             r->name, (unsigned long long)r->secs[i].off,
                             tag_text(r->secs[i].tag, tb));
        }
    }
    return AIMS_OK;
}

static aims_status cr_check_crc(const aimsi_creader *r, size_t table_end)
{
    const uint32_t want = container_crc(r->data, table_end, r->secs, r->n, 0);
    if (want != r->crc) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: byte 20: checksum of header, table and raw sections mismatch "
                         "(stored %08x, computed %08x)",
                         r->name, (unsigned)r->crc, (unsigned)want);
    }
    return AIMS_OK;
}

static aims_status cr_parse(aimsi_creader *r, uint32_t expect_kind)
{
    size_t n = 0;
    AIMSI_TRY(cr_check_header(r, expect_kind, &n));
    if (n > 0) {
        r->secs = aimsi_calloc(n, sizeof *r->secs);
        if (r->secs == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu table entries",
                             r->name, n);
        }
    }
    const size_t table_end = HEADER_SIZE + ENTRY_SIZE * n;
    for (size_t i = 0; i < n; i++) {
        AIMSI_TRY(cr_parse_entry(r, i, table_end, &r->secs[i]));
    }
    r->n = n;
    AIMSI_TRY(cr_check_crc(r, table_end));
    return cr_check_layout(r);
}

static void cr_free(aimsi_creader *r, int free_data)
{
    if (free_data != 0) {
        aimsi_free((void *)(uintptr_t)r->data);
    }
    aimsi_free(r->secs);
    aimsi_free(r);
}

static aims_status cr_open(const void *data, size_t len, int own, uint32_t expect_kind,
                           const char *name, aimsi_creader **out)
{
    if (out == NULL || (data == NULL && len > 0)) {
        if (own != 0) {
            aimsi_free((void *)(uintptr_t)data);
        }
        return AIMSI_MISUSE("out is NULL or data is NULL");
    }
    aimsi_creader *const r = aimsi_calloc(1, sizeof *r);
    if (r == NULL) {
        if (own != 0) {
            aimsi_free((void *)(uintptr_t)data);
        }
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory opening a container", name);
    }
    r->data = data;
    r->len = len;
    r->own = own;
    (void)snprintf(r->name, sizeof r->name, "%s", name);
    const aims_status rc = cr_parse(r, expect_kind);
    if (rc != AIMS_OK) {
        cr_free(r, own);
        return rc;
    }
    *out = r;
    return AIMS_OK;
}

aims_status aimsi_cr_open_mem(const void *data, size_t len, int own, uint32_t expect_kind,
                              aimsi_creader **out)
{
    return cr_open(data, len, own, expect_kind, "<memory>", out);
}

aims_status aimsi_cr_open_file(const char *path, uint64_t max_bytes, uint32_t expect_kind,
                               aimsi_creader **out)
{
    if (path == NULL || out == NULL) {
        return AIMSI_MISUSE("path or out is NULL");
    }
    void *data = NULL;
    size_t len = 0;
    AIMSI_TRY(aimsi_file_read(path, max_bytes, &data, &len));
    return cr_open(data, len, 1, expect_kind, path, out);
}

void aimsi_cr_destroy(aimsi_creader *r)
{
    if (r != NULL) {
        cr_free(r, r->own);
    }
}

uint32_t aimsi_cr_kind(const aimsi_creader *r)
{
    return r != NULL ? r->kind : 0;
}

uint16_t aimsi_cr_minor(const aimsi_creader *r)
{
    return r != NULL ? r->minor : 0;
}

static const section *cr_find(const aimsi_creader *r, uint32_t tag)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->secs[i].tag == tag) {
            return &r->secs[i];
        }
    }
    return NULL;
}

int aimsi_cr_has(const aimsi_creader *r, uint32_t tag)
{
    return r != NULL && cr_find(r, tag) != NULL;
}

/* Check that the stored bytes are exactly one zstd frame of `raw` bytes with a checksum. */
static aims_status cr_check_frame(const aimsi_creader *r, const section *s)
{
    char tb[16];
    const char *const why = aimsi_zstd_frame_problem(r->data + s->off, (size_t)s->stored, s->raw);
    if (why != NULL) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: byte %llu: section '%s' holds %s", r->name,
                         (unsigned long long)s->off, tag_text(s->tag, tb), why);
    }
    return AIMS_OK;
}

static aims_status cr_decode(const aimsi_creader *r, const section *s, uint8_t *dst)
{
    char tb[16];
    const char *why = NULL;
    const aims_status rc =
        aimsi_zstd_decompress(r->data + s->off, (size_t)s->stored, dst, (size_t)s->raw, &why);
    if (rc != AIMS_OK) {
        return aimsi_err(NULL, rc, "%s: byte %llu: section '%s' does not decode: %s", r->name,
                         (unsigned long long)s->off, tag_text(s->tag, tb), why);
    }
    return AIMS_OK;
}

aims_status aimsi_cr_section(aimsi_creader *r, uint32_t tag, size_t max_len, void **out,
                             size_t *out_len)
{
    char tb[16];
    if (r == NULL || out == NULL || out_len == NULL) {
        return AIMSI_MISUSE("reader, out or out_len is NULL");
    }
    const section *const s = cr_find(r, tag);
    if (s == NULL) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "%s: no section '%s'", r->name,
                         tag_text(tag, tb));
    }
    if ((s->flags & ~FLAG_ZSTD) != 0) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "%s: section '%s' has unknown flags 0x%08x (written by a newer build?)",
                         r->name, tag_text(tag, tb), (unsigned)s->flags);
    }
    if (s->raw > max_len || s->raw > SIZE_MAX - 1) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: section '%s' holds %llu bytes, cap is %zu",
                         r->name, tag_text(tag, tb), (unsigned long long)s->raw, max_len);
    }
    if ((s->flags & FLAG_ZSTD) != 0) {
        AIMSI_TRY(cr_check_frame(r, s));
    }
    const size_t raw = (size_t)s->raw;
    uint8_t *buf = NULL;
    if (raw > 0) {
        buf = aimsi_malloc(raw);
        if (buf == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for section '%s' (%zu bytes)",
                             r->name, tag_text(tag, tb), raw);
        }
    }
    if ((s->flags & FLAG_ZSTD) != 0) {
        const aims_status rc = cr_decode(r, s, buf);
        if (rc != AIMS_OK) {
            aimsi_free(buf);
            return rc;
        }
    } else if (raw > 0) {
        memcpy(buf, r->data + s->off, raw);
    }
    *out = buf;
    *out_len = raw;
    return AIMS_OK;
}
