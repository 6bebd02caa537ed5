/*
 * bytes.c -- the bounds-checked reader, little-endian helpers, CRC-32C and the
 * zstd version string.
 *
 * How. aimsi_rd is a cursor over borrowed bytes. Every getter first asks
 * whether enough bytes are left and returns -1 (leaving the cursor and the
 * output where they were) when they are not, so a parser built on it can only
 * fail, never read past its input. Integers are assembled byte by byte, which
 * is endian-independent and lets the compiler emit a single load on x86.
 *
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) uses "slicing-by-8":
 * eight 256-entry tables let the inner loop fold 8 input bytes per iteration
 * with eight independent table look-ups, about 1-2 GB/s on one core, which is
 * plenty for headers and for checksumming whole files of hundreds of MB.
 *
 * Why the tables are built at run time: a 2048-entry literal table would be
 * 25 KB of unreadable source. They are computed once under pthread_once, are
 * immutable afterwards and therefore safe to read from any thread; this is
 * the only process-wide state in the module and it never changes meaning.
 */
#include <pthread.h>
#include <string.h>

#include <zstd.h>

#include "aimsi_codec.h"

/* ---- bounds-checked reader ------------------------------------------------------ */

void aimsi_rd_init(aimsi_rd *r, const void *data, size_t len)
{
    r->p = (const uint8_t *)data;
    r->len = data != NULL ? len : 0;
    r->pos = 0;
}

size_t aimsi_rd_left(const aimsi_rd *r)
{
    return r->len - r->pos;
}

/* Borrow n bytes or fail without moving; the one place that checks bounds. */
static const uint8_t *rd_take(aimsi_rd *r, size_t n)
{
    if (aimsi_rd_left(r) < n) {
        return NULL;
    }
    const uint8_t *const at = r->p + r->pos;
    r->pos += n;
    return at;
}

int aimsi_rd_u8(aimsi_rd *r, uint8_t *v)
{
    const uint8_t *const p = rd_take(r, 1);
    if (p == NULL) {
        return -1;
    }
    *v = p[0];
    return 0;
}

int aimsi_rd_u16le(aimsi_rd *r, uint16_t *v)
{
    const uint8_t *const p = rd_take(r, 2);
    if (p == NULL) {
        return -1;
    }
    *v = (uint16_t)((unsigned)p[0] | ((unsigned)p[1] << 8));
    return 0;
}

int aimsi_rd_u32le(aimsi_rd *r, uint32_t *v)
{
    const uint8_t *const p = rd_take(r, 4);
    if (p == NULL) {
        return -1;
    }
    *v = aimsi_load_u32le(p);
    return 0;
}

int aimsi_rd_u32be(aimsi_rd *r, uint32_t *v)
{
    const uint8_t *const p = rd_take(r, 4);
    if (p == NULL) {
        return -1;
    }
    *v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
         (uint32_t)p[3];
    return 0;
}

int aimsi_rd_u64le(aimsi_rd *r, uint64_t *v)
{
    const uint8_t *const p = rd_take(r, 8);
    if (p == NULL) {
        return -1;
    }
    *v = aimsi_load_u64le(p);
    return 0;
}

int aimsi_rd_f64le(aimsi_rd *r, double *v)
{
    const uint8_t *const p = rd_take(r, 8);
    if (p == NULL) {
        return -1;
    }
    /* memcpy is the defined way to reinterpret the bits (no aliasing UB). */
    const uint64_t bits = aimsi_load_u64le(p);
    memcpy(v, &bits, sizeof *v);
    return 0;
}

int aimsi_rd_bytes(aimsi_rd *r, size_t n, const uint8_t **out)
{
    const uint8_t *const p = rd_take(r, n);
    if (p == NULL) {
        return -1;
    }
    *out = p;
    return 0;
}

/* ---- little-endian stores and loads ------------------------------------------- */

void aimsi_store_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void aimsi_store_u64le(uint8_t *p, uint64_t v)
{
    aimsi_store_u32le(p, (uint32_t)v);
    aimsi_store_u32le(p + 4, (uint32_t)(v >> 32));
}

uint32_t aimsi_load_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

uint64_t aimsi_load_u64le(const uint8_t *p)
{
    return (uint64_t)aimsi_load_u32le(p) | ((uint64_t)aimsi_load_u32le(p + 4) << 32);
}

/* ---- CRC-32C ---------------------------------------------------------------------- */

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reflected */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* x86-64 has CRC-32C in hardware (SSE4.2, the same Castagnoli polynomial,
 * bit-reflected): ~8x the tables' speed, which matters for the job store's
 * 188 MB row blobs checked on every read (bench_jobs P14b). Chosen at run
 * time, so the library still runs on a CPU without it. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define CRC_HW 1
static int crc_hw_ok;

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c64;
    while (n > 0) {
        c32 = _mm_crc32_u8(c32, *p);
        p++;
        n--;
    }
    return c32;
}
#endif

static void crc_init(void)
{
#ifdef CRC_HW
    crc_hw_ok = __builtin_cpu_supports("sse4.2");
#endif
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1u) != 0 ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        }
        crc_table[0][i] = c;
    }
    /* table[k][i] is the CRC of byte i followed by k zero bytes, which is what
     * lets one iteration fold eight bytes at once. */
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int k = 1; k < 8; k++) {
            c = crc_table[0][c & 0xffu] ^ (c >> 8);
            crc_table[k][i] = c;
        }
    }
}

uint32_t aimsi_crc32c(uint32_t crc, const void *data, size_t n)
{
    (void)pthread_once(&crc_once, crc_init);
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    if (p == NULL) {
        return crc;
    }
#ifdef CRC_HW
    if (crc_hw_ok) {
        return ~crc_hw(c, p, n);
    }
#endif
    while (n >= 8) {
        const uint32_t lo = c ^ aimsi_load_u32le(p);
        const uint32_t hi = aimsi_load_u32le(p + 4);
        c = crc_table[7][lo & 0xffu] ^ crc_table[6][(lo >> 8) & 0xffu] ^
            crc_table[5][(lo >> 16) & 0xffu] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xffu] ^ crc_table[2][(hi >> 8) & 0xffu] ^
            crc_table[1][(hi >> 16) & 0xffu] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        c = crc_table[0][(c ^ *p) & 0xffu] ^ (c >> 8);
        p++;
        n--;
    }
    return ~c;
}

/* ---- zstd ------------------------------------------------------------------------------ */

const char *aimsi_codec_zstd_version(void)
{
    return ZSTD_versionString();
}
