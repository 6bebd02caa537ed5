/*
 * aimsi_codec.h -- everything that turns bytes into values and back.
 *
 * Only src/codec calls zstd. Depends on src/core only.
 *
 * 1. Bounds-checked little-endian reader (aimsi_rd): every get returns -1
 *    instead of reading past the end, so parsers never touch bytes they do not own.
 *
 * 2. The container format, used for every file libaims writes:
 *
 *      offset  size  field
 *      0       8     magic "AIMSCTR\0"
 *      8       2     format major (readers refuse a newer major: AIMS_E_UNSUPPORTED)
 *      10      2     format minor (newer minors are read; unknown sections skipped)
 *      12      4     kind: what the file holds (AIMSI_KIND_*)
 *      16      4     section count n (capped at AIMSI_MAX_SECTIONS)
 *      20      4     CRC-32C of bytes [0, 20), the section table and every raw
 *                    (uncompressed) payload in table order
 *      24      32*n  section table, per section:
 *                      u32 tag, u32 flags (bit 0: zstd-compressed),
 *                      u64 offset of the payload from the file start,
 *                      u64 stored size, u64 raw (decompressed) size
 *      ...           payloads: zstd frames with zstd's content checksum and
 *                    content size, or raw bytes when flags bit 0 is clear
 *
 *    All integers little-endian. Readers check: magic, major, the CRC, that
 *    every section lies inside the file and sections do not overlap the
 *    header, that raw sizes stay below the caller's cap, and that the zstd frame
 *    decodes to exactly the raw size with a valid checksum.
 *
 * 3. Whole-file reads with a size cap, and atomic writes (temp file in the same
 *    directory, fsync, rename, fsync of the directory).
 *
 * Errors are recorded in the thread-local message (aimsi_err(NULL, ...)) and
 * name the path (or "<memory>"), the section tag and the byte offset at fault.
 */
#ifndef AIMSI_CODEC_H
#define AIMSI_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../core/aimsi_core.h"

/* ---- bounds-checked reader ------------------------------------------------------ */

typedef struct aimsi_rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
} aimsi_rd;

void aimsi_rd_init(aimsi_rd *r, const void *data, size_t len);
size_t aimsi_rd_left(const aimsi_rd *r);
int aimsi_rd_u8(aimsi_rd *r, uint8_t *v);
int aimsi_rd_u16le(aimsi_rd *r, uint16_t *v);
int aimsi_rd_u32le(aimsi_rd *r, uint32_t *v);
int aimsi_rd_u32be(aimsi_rd *r, uint32_t *v); /* IDX headers are big-endian */
int aimsi_rd_u64le(aimsi_rd *r, uint64_t *v);
int aimsi_rd_f64le(aimsi_rd *r, double *v);
/* Borrow n bytes at the cursor and advance. */
int aimsi_rd_bytes(aimsi_rd *r, size_t n, const uint8_t **out);

/* Plain little-endian stores into memory the caller sized. */
void aimsi_store_u32le(uint8_t *p, uint32_t v);
void aimsi_store_u64le(uint8_t *p, uint64_t v);
uint32_t aimsi_load_u32le(const uint8_t *p);
uint64_t aimsi_load_u64le(const uint8_t *p);

/* CRC-32C (Castagnoli), chainable: crc = aimsi_crc32c(crc, data, n), start at 0. */
uint32_t aimsi_crc32c(uint32_t crc, const void *data, size_t n);

/* ---- container ------------------------------------------------------------------ */

#define AIMSI_CONTAINER_MAJOR 1
#define AIMSI_CONTAINER_MINOR 0
#define AIMSI_MAX_SECTIONS 1024

/* What a container holds. */
enum {
    AIMSI_KIND_DATASET = 1,
    AIMSI_KIND_PIPELINE = 2,
    AIMSI_KIND_MODEL = 3,
    AIMSI_KIND_BUNDLE = 4,
    AIMSI_KIND_CHECKPOINT = 5
};

/* Build a four-character section tag: AIMSI_TAG('M','E','T','A'). */
#define AIMSI_TAG(a, b, c, d)                                                             \
    ((uint32_t)(uint8_t)(a) | ((uint32_t)(uint8_t)(b) << 8) | ((uint32_t)(uint8_t)(c) << 16) | \
     ((uint32_t)(uint8_t)(d) << 24))

typedef struct aimsi_cwriter aimsi_cwriter;

/* level: zstd level; 0 = our default: 3 for sections up to 1 MiB, 1 above (big
 * float sections must save fast; see container.c). An explicit level always
 * wins. Sections smaller than 64 bytes are stored raw. */
aims_status aimsi_cw_create(uint32_t kind, int level, aimsi_cwriter **out);
void aimsi_cw_destroy(aimsi_cwriter *w);
/* Compress and append a section now (data is not retained). Tags must be unique
 * (a repeated tag gives AIMS_E_EXISTS); more than AIMSI_MAX_SECTIONS gives
 * AIMS_E_RANGE. A failed add leaves the writer unchanged. */
aims_status aimsi_cw_add(aimsi_cwriter *w, uint32_t tag, const void *data, size_t len);
/* Serialise the whole container into newly allocated memory (aimsi_free it). */
aims_status aimsi_cw_finish(aimsi_cwriter *w, void **out, size_t *out_len);
/* Serialise and write atomically to path. */
aims_status aimsi_cw_save(aimsi_cwriter *w, const char *path);

typedef struct aimsi_creader aimsi_creader;

/* Open a container in memory. The reader borrows data (keep it alive) unless
 * `own` is non-zero, in which case it takes ownership (aimsi_malloc'd memory)
 * and frees it on destroy, also on failure. expect_kind 0 accepts any kind
 * (kind 0 itself is reserved: writers refuse it, readers call it corrupt); any
 * other value must match the file's kind, else AIMS_E_INVAL. A newer major
 * gives AIMS_E_UNSUPPORTED, any damage AIMS_E_CORRUPT. After open the reader
 * is immutable: several threads may call aimsi_cr_section on it at once. */
aims_status aimsi_cr_open_mem(const void *data, size_t len, int own, uint32_t expect_kind,
                              aimsi_creader **out);
/* Read the file (at most max_bytes) and open it. */
aims_status aimsi_cr_open_file(const char *path, uint64_t max_bytes, uint32_t expect_kind,
                               aimsi_creader **out);
void aimsi_cr_destroy(aimsi_creader *r);
uint32_t aimsi_cr_kind(const aimsi_creader *r);
uint16_t aimsi_cr_minor(const aimsi_creader *r);
int aimsi_cr_has(const aimsi_creader *r, uint32_t tag);
/* Decode a section into newly allocated memory (aimsi_free it). Fails with
 * AIMS_E_NOTFOUND when missing, AIMS_E_RANGE when its raw size exceeds max_len,
 * AIMS_E_CORRUPT when it does not decode to exactly its raw size. An empty
 * section yields *out == NULL with *out_len == 0. */
aims_status aimsi_cr_section(aimsi_creader *r, uint32_t tag, size_t max_len, void **out,
                             size_t *out_len);

/* ---- container glue (container_io.c) --------------------------------------------- */

/* Write an object's sections into w / build a new object from r into out (a
 * pointer to the caller's handle variable). */
typedef aims_status (*aimsi_cw_fill_fn)(const void *obj, aimsi_cwriter *w);
typedef aims_status (*aimsi_cr_take_fn)(aimsi_creader *r, void *out);
/* create writer (kind, level) -> fill(obj) -> atomic save to path -> destroy. */
aims_status aimsi_container_save(uint32_t kind, int level, const void *obj, aimsi_cw_fill_fn fill,
                                 const char *path);
/* open the container in memory (borrowed) or from path (at most max_bytes),
 * check its kind, take(r, out), destroy the reader. */
aims_status aimsi_container_parse(uint32_t kind, const void *data, size_t size,
                                  aimsi_cr_take_fn take, void *out);
aims_status aimsi_container_load(uint32_t kind, const char *path, uint64_t max_bytes,
                                 aimsi_cr_take_fn take, void *out);
/* Add n words of `width` bytes (4: f32/i32/u32, 8: u64) as a little-endian
 * section, whatever the host's byte order. */
aims_status aimsi_cw_add_words(aimsi_cwriter *w, uint32_t tag, const void *data, size_t n,
                               size_t width);
/* Turn n little-endian words read from a section into host order in place
 * (a no-op on little-endian hosts; its own inverse). */
void aimsi_le_words(void *data, size_t n, size_t width);

/* zstd version the library runs with, e.g. "1.5.4" (static storage). */
const char *aimsi_codec_zstd_version(void);

/* ---- zstd one-shot helpers (src/codec only; allocator-hooked) -------------------- */

/* Compress len bytes into dst (cap bytes) as one zstd frame with content size and
 * checksum. AIMS_E_RANGE (no message) when the frame would not fit in cap, so a
 * caller passing cap = len - 1 learns "not worth it"; AIMS_E_NOMEM, AIMS_E_BACKEND. */
aims_status aimsi_zstd_compress(const void *src, size_t len, int level, void *dst, size_t cap,
                                size_t *out_len);
/* NULL when [src, src+stored) is exactly one checksummed zstd frame whose content
 * size is raw and which can plausibly expand to it; else why not (static text). */
const char *aimsi_zstd_frame_problem(const void *src, size_t stored, uint64_t raw);
/* Decode a frame (checked with aimsi_zstd_frame_problem) into dst of exactly raw
 * bytes. AIMS_E_NOMEM or AIMS_E_CORRUPT with *why set (no message recorded). */
aims_status aimsi_zstd_decompress(const void *src, size_t stored, void *dst, size_t raw,
                                  const char **why);

/* ---- files ------------------------------------------------------------------------- */

/* Read a whole file; AIMS_E_NOTFOUND, AIMS_E_IO, AIMS_E_RANGE (> max_bytes). */
aims_status aimsi_file_read(const char *path, uint64_t max_bytes, void **out, size_t *out_len);
/* Write atomically: temp file + fsync + rename (+ directory fsync). */
aims_status aimsi_file_write_atomic(const char *path, const void *data, size_t len);

#endif /* AIMSI_CODEC_H */
