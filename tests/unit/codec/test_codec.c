/*
 * test_codec.c -- white-box tests of src/codec: the bounds-checked reader,
 * CRC-32C, the container writer/reader (round trips and every corruption we
 * could think of), whole-file reads and atomic writes, and allocation-failure
 * loops over all of them.
 *
 * Hostile containers are built by hand (build_ctr) with a correct header CRC,
 * so each test reaches the check it is aimed at rather than the CRC. zstd is
 * called directly here only to craft malformed frames.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include "codec/aimsi_codec.h"
#include "testalloc.h"

#define TAG_A AIMSI_TAG('A', 'A', 'A', 'A')
#define TAG_B AIMSI_TAG('B', 'B', 'B', 'B')
#define TAG_C AIMSI_TAG('C', 'C', 'C', 'C')
#define TAG_D AIMSI_TAG('D', 'D', 'D', 'D')
#define CAP_ANY ((size_t)1 << 30)

/* ---- helpers ------------------------------------------------------------------- */

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* Compressible: a float ramp, like a feature matrix. */
static void fill_ramp(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)((i / 4) % 251 + (i % 4 == 3 ? 0x40 : 0));
    }
}

/* Write a container with the given sections via the real writer. */
static void make_ctr(uint32_t kind, const uint32_t *tags, const uint8_t *const *datas,
                     const size_t *lens, size_t n, uint8_t **out, size_t *out_len)
{
    aimsi_cwriter *w = NULL;
    assert_int_equal(aimsi_cw_create(kind, 0, &w), AIMS_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(aimsi_cw_add(w, tags[i], datas[i], lens[i]), AIMS_OK);
    }
    void *buf = NULL;
    assert_int_equal(aimsi_cw_finish(w, &buf, out_len), AIMS_OK);
    aimsi_cw_destroy(w);
    *out = buf;
}

/* The small reference file many tests damage: an empty, a raw and a zstd section. */
static const char small_raw[] = "hello, container";
static uint8_t small_z[300];

static void make_small(uint8_t **out, size_t *out_len)
{
    for (size_t i = 0; i < sizeof small_z; i++) {
        small_z[i] = (uint8_t)("0123456789abcdefghij"[i % 20] + (i / 100));
    }
    const uint32_t tags[] = {TAG_A, TAG_B, TAG_C};
    const uint8_t *datas[] = {NULL, (const uint8_t *)small_raw, small_z};
    const size_t lens[] = {0, sizeof small_raw, sizeof small_z};
    make_ctr(AIMSI_KIND_DATASET, tags, datas, lens, 3, out, out_len);
}

typedef struct entry {
    uint32_t tag, flags;
    uint64_t off, stored, raw;
} entry;

/* Hand-built container with a correct CRC: header + table + payload blob, with
 * entry offsets taken as written (absolute). */
static uint8_t *build_ctr(uint16_t major, uint16_t minor, uint32_t kind, uint32_t count,
                          const entry *e, size_t n, const void *payload, size_t pay_len,
                          size_t *len)
{
    const size_t table_end = 24 + 32 * n;
    const size_t total = table_end + pay_len;
    uint8_t *b = calloc(1, total);
    assert_non_null(b);
    memcpy(b, "AIMSCTR", 8);
    b[8] = (uint8_t)major;
    b[9] = (uint8_t)(major >> 8);
    b[10] = (uint8_t)minor;
    b[11] = (uint8_t)(minor >> 8);
    aimsi_store_u32le(b + 12, kind);
    aimsi_store_u32le(b + 16, count);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = b + 24 + 32 * i;
        aimsi_store_u32le(p, e[i].tag);
        aimsi_store_u32le(p + 4, e[i].flags);
        aimsi_store_u64le(p + 8, e[i].off);
        aimsi_store_u64le(p + 16, e[i].stored);
        aimsi_store_u64le(p + 24, e[i].raw);
    }
    if (pay_len > 0) {
        memcpy(b + table_end, payload, pay_len);
    }
    /* The CRC covers header, table and every raw payload that lies in the file. */
    uint32_t crc = aimsi_crc32c(0, b, 20);
    crc = aimsi_crc32c(crc, b + 24, 32 * n);
    for (size_t i = 0; i < n; i++) {
        if ((e[i].flags & 1u) == 0 && e[i].stored > 0 && e[i].off <= total &&
            e[i].stored <= total - e[i].off) {
            crc = aimsi_crc32c(crc, b + e[i].off, (size_t)e[i].stored);
        }
    }
    aimsi_store_u32le(b + 20, crc);
    *len = total;
    return b;
}

static aims_status open_status(const void *b, size_t len, uint32_t kind)
{
    aimsi_creader *r = NULL;
    const aims_status rc = aimsi_cr_open_mem(b, len, 0, kind, &r);
    if (rc == AIMS_OK) {
        assert_non_null(r);
        aimsi_cr_destroy(r);
    } else {
        assert_null(r);
    }
    return rc;
}

/* Open b and decode `tag`; returns the status of the first failing step. */
static aims_status section_status(const void *b, size_t len, uint32_t tag, size_t cap)
{
    aimsi_creader *r = NULL;
    aims_status rc = aimsi_cr_open_mem(b, len, 0, 0, &r);
    if (rc != AIMS_OK) {
        return rc;
    }
    void *out = (void *)&rc; /* sentinel: must stay untouched on failure */
    size_t out_len = 12345;
    rc = aimsi_cr_section(r, tag, cap, &out, &out_len);
    if (rc == AIMS_OK) {
        aimsi_free(out);
    } else {
        assert_ptr_equal(out, (void *)&rc);
        assert_int_equal(out_len, 12345);
    }
    aimsi_cr_destroy(r);
    return rc;
}

/* A zstd frame with chosen header flags, for crafting hostile sections. */
static size_t make_frame(const void *src, size_t n, int checksum, int content_size, void *dst,
                         size_t cap)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    assert_non_null(c);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum)));
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, content_size)));
    size_t r;
    if (content_size) {
        r = ZSTD_compress2(c, dst, cap, src, n);
    } else {
        /* A streaming compress without a pledged size leaves the size out. */
        ZSTD_inBuffer in = {src, n, 0};
        ZSTD_outBuffer out = {dst, cap, 0};
        r = ZSTD_compressStream2(c, &out, &in, ZSTD_e_end);
        assert_int_equal(r, 0);
        r = out.pos;
    }
    assert_false(ZSTD_isError(r));
    ZSTD_freeCCtx(c);
    return r;
}

/* One zstd section (tag A) built by hand from an arbitrary payload. */
static aims_status zsection_status(const void *pay, size_t pay_len, uint64_t raw, size_t cap)
{
    entry e = {TAG_A, 1, 56, pay_len, raw};
    size_t len = 0;
    uint8_t *b = build_ctr(1, 0, 1, 1, &e, 1, pay, pay_len, &len);
    const aims_status rc = section_status(b, len, TAG_A, cap);
    free(b);
    return rc;
}

/* ---- bounds-checked reader, LE helpers, CRC ------------------------------------ */

static void test_rd_reads_and_refuses_past_end(void **state)
{
    (void)state;
    const uint8_t d[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    aimsi_rd r;
    aimsi_rd_init(&r, d, sizeof d);
    uint8_t u8 = 0;
    uint16_t u16 = 0;
    uint32_t u32 = 0;
    uint64_t u64 = 0;
    assert_int_equal(aimsi_rd_u8(&r, &u8), 0);
    assert_int_equal(u8, 1);
    assert_int_equal(aimsi_rd_u16le(&r, &u16), 0);
    assert_int_equal(u16, 0x0302);
    assert_int_equal(aimsi_rd_u32le(&r, &u32), 0);
    assert_int_equal(u32, 0x07060504u);
    assert_int_equal(aimsi_rd_u32be(&r, &u32), 0);
    assert_int_equal(u32, 0x08090a0bu);
    assert_int_equal(aimsi_rd_left(&r), 4);
    /* Too short for 8: fails, the cursor and the output stay. */
    u64 = 77;
    assert_int_equal(aimsi_rd_u64le(&r, &u64), -1);
    assert_int_equal(u64, 77);
    assert_int_equal(aimsi_rd_left(&r), 4);
    double dv = 1.5;
    assert_int_equal(aimsi_rd_f64le(&r, &dv), -1);
    assert_true(dv == 1.5);
    const uint8_t *p = NULL;
    assert_int_equal(aimsi_rd_bytes(&r, 5, &p), -1);
    assert_null(p);
    assert_int_equal(aimsi_rd_bytes(&r, 4, &p), 0);
    assert_ptr_equal(p, d + 11);
    assert_int_equal(aimsi_rd_left(&r), 0);
    assert_int_equal(aimsi_rd_u8(&r, &u8), -1);
    assert_int_equal(aimsi_rd_u16le(&r, &u16), -1);
    assert_int_equal(aimsi_rd_u32le(&r, &u32), -1);
    assert_int_equal(aimsi_rd_u32be(&r, &u32), -1);
    assert_int_equal(aimsi_rd_bytes(&r, 0, &p), 0); /* zero bytes are always there */
    /* A huge n cannot wrap the bounds check. */
    aimsi_rd_init(&r, d, sizeof d);
    assert_int_equal(aimsi_rd_u8(&r, &u8), 0);
    assert_int_equal(aimsi_rd_bytes(&r, SIZE_MAX, &p), -1);
    aimsi_rd_init(&r, NULL, 0);
    assert_int_equal(aimsi_rd_left(&r), 0);
    assert_int_equal(aimsi_rd_u8(&r, &u8), -1);
}

static void test_rd_f64_and_store_load_round_trip(void **state)
{
    (void)state;
    uint8_t b[16];
    const double v = -1234.5678e-9;
    uint64_t bits;
    memcpy(&bits, &v, 8);
    aimsi_store_u64le(b, bits);
    aimsi_store_u32le(b + 8, 0xdeadbeefu);
    assert_int_equal(b[0], (uint8_t)bits);
    assert_int_equal(b[8], 0xef);
    assert_int_equal(b[11], 0xde);
    assert_int_equal(aimsi_load_u32le(b + 8), 0xdeadbeefu);
    assert_true(aimsi_load_u64le(b) == bits);
    aimsi_rd r;
    aimsi_rd_init(&r, b, 12);
    double got = 0;
    assert_int_equal(aimsi_rd_f64le(&r, &got), 0);
    assert_memory_equal(&got, &v, sizeof v);
}

static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
    }
    return ~crc;
}

static void test_crc32c_known_vectors_and_chaining(void **state)
{
    (void)state;
    assert_int_equal(aimsi_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(aimsi_crc32c(0, "", 0), 0);
    uint8_t zeros[32] = {0};
    assert_int_equal(aimsi_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    enum { N = 4099 };
    uint8_t *d = malloc(N);
    assert_non_null(d);
    fill_random(d, N, 7);
    const uint32_t whole = aimsi_crc32c(0, d, N);
    assert_int_equal(whole, crc_bitwise(0, d, N));
    for (size_t cut = 0; cut <= 64; cut++) {
        const uint32_t c = aimsi_crc32c(aimsi_crc32c(0, d, cut), d + cut, N - cut);
        assert_int_equal(c, whole);
    }
    /* Unaligned starts take the same path. */
    for (size_t s = 1; s < 8; s++) {
        assert_int_equal(aimsi_crc32c(0, d + s, N - s), crc_bitwise(0, d + s, N - s));
    }
    free(d);
}

static void test_zstd_version_string(void **state)
{
    (void)state;
    const char *v = aimsi_codec_zstd_version();
    assert_non_null(v);
    assert_non_null(strchr(v, '.'));
    assert_string_equal(v, ZSTD_versionString());
}

/* ---- container round trips ------------------------------------------------------ */

static void expect_section(aimsi_creader *r, uint32_t tag, const void *data, size_t len)
{
    void *out = NULL;
    size_t out_len = 999;
    assert_int_equal(aimsi_cr_section(r, tag, CAP_ANY, &out, &out_len), AIMS_OK);
    assert_int_equal(out_len, len);
    if (len == 0) {
        assert_null(out);
    } else {
        assert_memory_equal(out, data, len);
    }
    aimsi_free(out);
}

static void test_container_round_trip_small(void **state)
{
    (void)state;
    uint8_t *b = NULL;
    size_t len = 0;
    make_small(&b, &len);
    /* header + 3 entries + raw payload + a compressed frame smaller than the ramp */
    assert_true(len > 24 + 96 + sizeof small_raw);
    assert_true(len < 24 + 96 + sizeof small_raw + sizeof small_z);
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_mem(b, len, 0, AIMSI_KIND_DATASET, &r), AIMS_OK);
    assert_int_equal(aimsi_cr_kind(r), AIMSI_KIND_DATASET);
    assert_int_equal(aimsi_cr_minor(r), AIMSI_CONTAINER_MINOR);
    assert_true(aimsi_cr_has(r, TAG_A));
    assert_true(aimsi_cr_has(r, TAG_C));
    assert_false(aimsi_cr_has(r, TAG_D));
    expect_section(r, TAG_A, NULL, 0);
    expect_section(r, TAG_B, small_raw, sizeof small_raw);
    expect_section(r, TAG_C, small_z, sizeof small_z);
    /* Missing section and cap checks leave outputs untouched. */
    void *out = (void *)b;
    size_t out_len = 5;
    assert_int_equal(aimsi_cr_section(r, TAG_D, CAP_ANY, &out, &out_len), AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_errmsg(), "DDDD"));
    assert_int_equal(aimsi_cr_section(r, TAG_C, sizeof small_z - 1, &out, &out_len),
                     AIMS_E_RANGE);
    assert_non_null(strstr(aims_errmsg(), "<memory>"));
    assert_ptr_equal(out, b);
    assert_int_equal(out_len, 5);
    expect_section(r, TAG_C, small_z, sizeof small_z); /* exactly at the cap is fine */
    aimsi_cr_destroy(r);
    /* Any kind with 0; the wrong kind is refused. */
    assert_int_equal(open_status(b, len, 0), AIMS_OK);
    assert_int_equal(open_status(b, len, AIMSI_KIND_MODEL), AIMS_E_INVAL);
    assert_non_null(strstr(aims_errmsg(), "kind"));
    aimsi_free(b);
}

static void test_container_raw_threshold_and_empty_file(void **state)
{
    (void)state;
    uint8_t d[64];
    fill_random(d, sizeof d, 3);
    const uint32_t tags[] = {TAG_A, TAG_B};
    const uint8_t *datas[] = {d, d};
    const size_t lens[] = {63, 64};
    uint8_t *b = NULL;
    size_t len = 0;
    make_ctr(AIMSI_KIND_MODEL, tags, datas, lens, 2, &b, &len);
    assert_int_equal(aimsi_load_u32le(b + 24 + 4), 0);      /* 63 bytes: raw */
    assert_int_equal(aimsi_load_u32le(b + 24 + 32 + 4), 1); /* 64 bytes: zstd */
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_mem(b, len, 0, AIMSI_KIND_MODEL, &r), AIMS_OK);
    expect_section(r, TAG_A, d, 63);
    expect_section(r, TAG_B, d, 64);
    aimsi_cr_destroy(r);
    aimsi_free(b);
    /* No sections at all. */
    make_ctr(AIMSI_KIND_BUNDLE, NULL, NULL, NULL, 0, &b, &len);
    assert_int_equal(len, 24);
    assert_int_equal(aimsi_cr_open_mem(b, len, 1, AIMSI_KIND_BUNDLE, &r), AIMS_OK);
    assert_false(aimsi_cr_has(r, TAG_A));
    aimsi_cr_destroy(r); /* owned: frees b */
}

static void test_container_round_trip_big(void **state)
{
    (void)state;
    const size_t nz = (size_t)8 << 20;
    const size_t nr = (size_t)2 << 20;
    uint8_t *z = malloc(nz);
    uint8_t *rnd = malloc(nr);
    assert_non_null(z);
    assert_non_null(rnd);
    fill_ramp(z, nz);
    fill_random(rnd, nr, 11);
    const uint32_t tags[] = {TAG_A, TAG_B};
    const uint8_t *datas[] = {z, rnd};
    const size_t lens[] = {nz, nr};
    uint8_t *b = NULL;
    size_t len = 0;
    make_ctr(AIMSI_KIND_CHECKPOINT, tags, datas, lens, 2, &b, &len);
    /* Compressible data shrinks; incompressible grows by zstd's block overhead only. */
    const uint64_t zs = aimsi_load_u64le(b + 24 + 16);
    const uint64_t rs = aimsi_load_u64le(b + 24 + 32 + 16);
    assert_true(zs < nz / 20);
    assert_true(rs >= nr && rs < nr + nr / 1000 + 64);
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_mem(b, len, 1, AIMSI_KIND_CHECKPOINT, &r), AIMS_OK);
    expect_section(r, TAG_A, z, nz);
    expect_section(r, TAG_B, rnd, nr);
    aimsi_cr_destroy(r);
    free(z);
    free(rnd);
}

static void test_container_many_sections(void **state)
{
    (void)state;
    aimsi_cwriter *w = NULL;
    assert_int_equal(aimsi_cw_create(AIMSI_KIND_PIPELINE, 1, &w), AIMS_OK);
    uint8_t d[100];
    for (uint32_t i = 0; i < AIMSI_MAX_SECTIONS; i++) {
        memset(d, (int)i, sizeof d);
        assert_int_equal(aimsi_cw_add(w, 0x10000u + i, d, i % 100), AIMS_OK);
    }
    assert_int_equal(aimsi_cw_add(w, 7, d, 1), AIMS_E_RANGE);
    void *b = NULL;
    size_t len = 0;
    assert_int_equal(aimsi_cw_finish(w, &b, &len), AIMS_OK);
    aimsi_cw_destroy(w);
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_mem(b, len, 1, AIMSI_KIND_PIPELINE, &r), AIMS_OK);
    for (uint32_t i = 0; i < AIMSI_MAX_SECTIONS; i += 37) {
        memset(d, (int)i, sizeof d);
        expect_section(r, 0x10000u + i, d, i % 100);
    }
    assert_false(aimsi_cr_has(r, 7));
    aimsi_cr_destroy(r);
}

static void test_writer_refuses_misuse(void **state)
{
    (void)state;
    aimsi_cwriter *w = NULL;
    assert_int_equal(aimsi_cw_create(0, 0, &w), AIMS_E_INVAL);
    assert_int_equal(aimsi_cw_create(1, 1000, &w), AIMS_E_INVAL);
    assert_int_equal(aimsi_cw_create(1, 0, NULL), AIMS_E_MISUSE);
    assert_null(w);
    assert_int_equal(aimsi_cw_create(1, -3, &w), AIMS_OK); /* negative = zstd fast levels */
    const uint8_t d[200] = {1};
    assert_int_equal(aimsi_cw_add(w, TAG_A, d, sizeof d), AIMS_OK);
    assert_int_equal(aimsi_cw_add(w, TAG_A, d, 3), AIMS_E_EXISTS);
    assert_int_equal(aimsi_cw_add(w, TAG_B, NULL, 3), AIMS_E_MISUSE);
    assert_int_equal(aimsi_cw_add(NULL, TAG_B, d, 3), AIMS_E_MISUSE);
    assert_int_equal(aimsi_cw_add(w, TAG_B, NULL, 0), AIMS_OK);
    /* finish twice gives the same bytes: the writer is not consumed. */
    void *b1 = NULL;
    void *b2 = NULL;
    size_t l1 = 0;
    size_t l2 = 0;
    assert_int_equal(aimsi_cw_finish(w, &b1, &l1), AIMS_OK);
    assert_int_equal(aimsi_cw_finish(w, &b2, &l2), AIMS_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    assert_int_equal(aimsi_cw_finish(w, NULL, &l2), AIMS_E_MISUSE);
    aimsi_free(b1);
    aimsi_free(b2);
    aimsi_cw_destroy(w);
    aimsi_cw_destroy(NULL);
    aimsi_cr_destroy(NULL);
    assert_int_equal(aimsi_cr_kind(NULL), 0);
    assert_false(aimsi_cr_has(NULL, TAG_A));
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_mem(NULL, 5, 0, 0, &r), AIMS_E_MISUSE);
    assert_int_equal(aimsi_cr_open_mem(d, 5, 0, 0, NULL), AIMS_E_MISUSE);
}

/* ---- container corruption ------------------------------------------------------ */

static void test_container_truncated_at_every_byte(void **state)
{
    (void)state;
    uint8_t *b = NULL;
    size_t len = 0;
    make_small(&b, &len);
    for (size_t cut = 0; cut < len; cut++) {
        /* A fresh exact-size copy so ASan sees any read past the end. */
        uint8_t *t = malloc(cut + 1);
        assert_non_null(t);
        memcpy(t, b, cut);
        const aims_status rc = open_status(cut > 0 ? t : NULL, cut, 0);
        if (rc != AIMS_E_CORRUPT) {
            fail_msg("truncated at %zu of %zu: rc=%d (%s)", cut, len, (int)rc, aims_errmsg());
        }
        free(t);
    }
    aimsi_free(b);
}

static void test_container_flipped_bits_everywhere(void **state)
{
    (void)state;
    uint8_t *b = NULL;
    size_t len = 0;
    make_small(&b, &len);
    const size_t table_end = 24 + 3 * 32;
    const size_t raw_off = (size_t)aimsi_load_u64le(b + 24 + 32 + 8);
    uint8_t *t = malloc(len);
    assert_non_null(t);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(t, b, len);
            t[i] ^= (uint8_t)(1u << bit);
            aimsi_creader *r = NULL;
            const aims_status rc = aimsi_cr_open_mem(t, len, 0, 0, &r);
            if (i >= raw_off && i < raw_off + sizeof small_raw) {
                /* Raw payloads are covered by the header CRC: caught at open. */
                assert_int_equal(rc, AIMS_E_CORRUPT);
                continue;
            }
            if (i < table_end) {
                /* Header and table: always caught (major bytes say "unsupported"). */
                if (i == 8 || i == 9) {
                    assert_int_equal(rc, AIMS_E_UNSUPPORTED);
                } else if (rc != AIMS_E_CORRUPT) {
                    fail_msg("flip at byte %zu bit %d not caught: rc=%d", i, bit, (int)rc);
                }
                continue;
            }
            assert_int_equal(rc, AIMS_OK);
            void *out = NULL;
            size_t out_len = 0;
            const aims_status src =
                aimsi_cr_section(r, TAG_C, CAP_ANY, &out, &out_len);
            if (src == AIMS_OK) {
                /* Only possible if the flip did not change the decoded bytes. */
                assert_int_equal(out_len, sizeof small_z);
                assert_memory_equal(out, small_z, sizeof small_z);
                aimsi_free(out);
            } else {
                assert_int_equal(src, AIMS_E_CORRUPT);
                assert_true(i >= raw_off + sizeof small_raw);
            }
            /* The raw section is untouched by this flip and reads back. */
            assert_int_equal(aimsi_cr_section(r, TAG_B, CAP_ANY, &out, &out_len), AIMS_OK);
            aimsi_free(out);
            aimsi_cr_destroy(r);
        }
    }
    free(t);
    aimsi_free(b);
}

static void test_container_header_checks(void **state)
{
    (void)state;
    const uint8_t pay[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    entry e = {TAG_A, 0, 56, 8, 8};
    size_t len = 0;
    uint8_t *b;
    /* the good case first, so each variant below is one change away from it */
    b = build_ctr(1, 0, 1, 1, &e, 1, pay, 8, &len);
    assert_int_equal(section_status(b, len, TAG_A, 8), AIMS_OK);
    b[0] = 'X';
    assert_int_equal(open_status(b, len, 0), AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "magic"));
    free(b);
    /* newer major: refused as unsupported even though the CRC is right */
    b = build_ctr(2, 0, 1, 1, &e, 1, pay, 8, &len);
    assert_int_equal(open_status(b, len, 0), AIMS_E_UNSUPPORTED);
    free(b);
    b = build_ctr(0, 0, 1, 1, &e, 1, pay, 8, &len);
    assert_int_equal(open_status(b, len, 0), AIMS_E_UNSUPPORTED);
    free(b);
    /* newer minor: read, and reported */
    b = build_ctr(1, 7, 1, 1, &e, 1, pay, 8, &len);
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_mem(b, len, 0, 1, &r), AIMS_OK);
    assert_int_equal(aimsi_cr_minor(r), 7);
    aimsi_cr_destroy(r);
    free(b);
    /* kind 0 is reserved; a wrong kind is the caller's mistake */
    b = build_ctr(1, 0, 0, 1, &e, 1, pay, 8, &len);
    assert_int_equal(open_status(b, len, 0), AIMS_E_CORRUPT);
    free(b);
    b = build_ctr(1, 0, 9, 1, &e, 1, pay, 8, &len);
    assert_int_equal(open_status(b, len, 0), AIMS_OK);
    assert_int_equal(open_status(b, len, 1), AIMS_E_INVAL);
    free(b);
    /* huge counts, with and without a matching table length */
    const uint32_t counts[] = {AIMSI_MAX_SECTIONS + 1, 0x7fffffffu, 0xffffffffu, 1000, 2};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        b = build_ctr(1, 0, 1, counts[i], &e, 1, pay, 8, &len);
        assert_int_equal(open_status(b, len, 0), AIMS_E_CORRUPT);
        free(b);
    }
    /* the CRC itself */
    b = build_ctr(1, 0, 1, 1, &e, 1, pay, 8, &len);
    b[20] ^= 1;
    assert_int_equal(open_status(b, len, 0), AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "checksum"));
    free(b);
}

static void test_container_table_checks(void **state)
{
    (void)state;
    uint8_t pay[64];
    fill_random(pay, sizeof pay, 5);
    struct {
        entry e[2];
        size_t n;
        aims_status want;
    } cases[] = {
        /* offset past the end, at the end with bytes, wrapping, inside the table */
        {{{TAG_A, 0, 200, 1, 1}}, 1, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 56 + 64, 1, 1}}, 1, AIMS_E_CORRUPT},
        {{{TAG_A, 0, UINT64_MAX - 3, 8, 8}}, 1, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 56, UINT64_MAX, UINT64_MAX}}, 1, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 0, 8, 8}}, 1, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 55, 8, 8}}, 1, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 56 + 32, 8, 8}, {TAG_B, 0, 56, 32, 32}}, 2, AIMS_E_CORRUPT}, /* in table */
        /* stored past the end */
        {{{TAG_A, 0, 56, 65, 65}}, 1, AIMS_E_CORRUPT},
        /* raw with stored != raw */
        {{{TAG_A, 0, 56, 8, 9}}, 1, AIMS_E_CORRUPT},
        /* the good cases: an empty section at the very end, touching sections */
        {{{TAG_A, 0, 56 + 64, 0, 0}}, 1, AIMS_OK},
        {{{TAG_A, 0, 88, 32, 32}, {TAG_B, 0, 120, 32, 32}}, 2, AIMS_OK},
        {{{TAG_A, 0, 88, 0, 0}, {TAG_B, 0, 88, 32, 32}}, 2, AIMS_OK},
        /* overlapping, in either table order, and duplicate tags */
        {{{TAG_A, 0, 88, 32, 32}, {TAG_B, 0, 119, 32, 32}}, 2, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 100, 20, 20}, {TAG_B, 0, 88, 32, 32}}, 2, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 88, 32, 32}, {TAG_B, 0, 100, 0, 0}}, 2, AIMS_E_CORRUPT},
        {{{TAG_A, 0, 88, 16, 16}, {TAG_A, 0, 104, 16, 16}}, 2, AIMS_E_CORRUPT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 0;
        /* payload starts right after a table of n entries; fixed 64-byte payload */
        const size_t n = cases[i].n;
        uint8_t *b = build_ctr(1, 0, 1, (uint32_t)n, cases[i].e, n, pay, sizeof pay, &len);
        /* entries above are written for n = 1 (payload at 56) or n = 2 (at 88) */
        const aims_status rc = open_status(b, len, 0);
        if (rc != cases[i].want) {
            fail_msg("case %zu: rc=%d want %d (%s)", i, (int)rc, (int)cases[i].want,
                     aims_errmsg());
        }
        free(b);
    }
}

static void test_container_section_flags_and_caps(void **state)
{
    (void)state;
    uint8_t pay[64];
    fill_random(pay, sizeof pay, 9);
    size_t len = 0;
    /* unknown flag bits: the file opens (section may be skipped), decoding refuses */
    entry e = {TAG_A, 2, 56, 64, 64};
    uint8_t *b = build_ctr(1, 0, 1, 1, &e, 1, pay, sizeof pay, &len);
    assert_int_equal(open_status(b, len, 0), AIMS_OK);
    assert_int_equal(section_status(b, len, TAG_A, CAP_ANY), AIMS_E_UNSUPPORTED);
    free(b);
    /* raw size above the cap, raw and compressed */
    e.flags = 0;
    b = build_ctr(1, 0, 1, 1, &e, 1, pay, sizeof pay, &len);
    assert_int_equal(section_status(b, len, TAG_A, 63), AIMS_E_RANGE);
    assert_int_equal(section_status(b, len, TAG_A, 0), AIMS_E_RANGE);
    assert_int_equal(section_status(b, len, TAG_A, 64), AIMS_OK);
    free(b);
    uint8_t frame[256];
    const size_t fl = make_frame(pay, sizeof pay, 1, 1, frame, sizeof frame);
    assert_int_equal(zsection_status(frame, fl, 64, 64), AIMS_OK);
    assert_int_equal(zsection_status(frame, fl, 64, 63), AIMS_E_RANGE);
    /* a zstd section whose table raw size claims terabytes: range before anything */
    assert_int_equal(zsection_status(frame, fl, (uint64_t)1 << 40, CAP_ANY), AIMS_E_RANGE);
}

static void test_container_hostile_frames(void **state)
{
    (void)state;
    uint8_t data[1000];
    fill_ramp(data, sizeof data);
    uint8_t f[2048];
    uint8_t g[2048];
    /* content size differs from the table */
    size_t fl = make_frame(data, sizeof data, 1, 1, f, sizeof f);
    assert_int_equal(zsection_status(f, fl, sizeof data, CAP_ANY), AIMS_OK);
    assert_int_equal(zsection_status(f, fl, sizeof data - 1, CAP_ANY), AIMS_E_CORRUPT);
    assert_int_equal(zsection_status(f, fl, sizeof data + 1, CAP_ANY), AIMS_E_CORRUPT);
    assert_int_equal(zsection_status(f, fl, 0, CAP_ANY), AIMS_E_CORRUPT);
    /* truncated frame, trailing garbage, two frames back to back */
    assert_int_equal(zsection_status(f, fl - 1, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    assert_int_equal(zsection_status(f, 3, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    assert_int_equal(zsection_status(f, 0, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    memcpy(g, f, fl);
    g[fl] = 0;
    assert_int_equal(zsection_status(g, fl + 1, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    memcpy(g + fl, f, fl);
    assert_int_equal(zsection_status(g, 2 * fl, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    assert_int_equal(zsection_status(g, 2 * fl, 2 * sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    /* no checksum; no content size */
    fl = make_frame(data, sizeof data, 0, 1, f, sizeof f);
    assert_int_equal(zsection_status(f, fl, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "checksum"));
    fl = make_frame(data, sizeof data, 1, 0, f, sizeof f);
    assert_int_equal(zsection_status(f, fl, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "content size"));
    /* a skippable frame */
    const size_t sl = ZSTD_writeSkippableFrame(f, sizeof f, data, 100, 0);
    assert_false(ZSTD_isError(sl));
    assert_int_equal(zsection_status(f, sl, 100, CAP_ANY), AIMS_E_CORRUPT);
    assert_int_equal(zsection_status(f, sl, 0, CAP_ANY), AIMS_E_CORRUPT);
    /* the empty frame decodes to nothing, and is a valid zstd section */
    fl = make_frame(data, 0, 1, 1, f, sizeof f);
    assert_int_equal(zsection_status(f, fl, 0, CAP_ANY), AIMS_OK);
    /* valid header, garbage blocks */
    fl = make_frame(data, sizeof data, 1, 1, f, sizeof f);
    for (size_t i = fl / 2; i < fl - 4; i++) {
        f[i] = (uint8_t)(f[i] * 31 + 7);
    }
    assert_int_equal(zsection_status(f, fl, sizeof data, CAP_ANY), AIMS_E_CORRUPT);
}

/* RLE blocks let 4 bytes expand to 128 KiB; a frame's claimed size beyond what its
 * blocks can produce must be refused without allocating. */
static void test_container_claimed_size_beyond_blocks(void **state)
{
    (void)state;
    /* Frame: magic, descriptor (single segment, 8-byte FCS, checksum), FCS,
     * one last raw block of 1 byte, 4-byte checksum (wrong, never reached). */
    uint8_t f[4 + 1 + 8 + 3 + 1 + 4];
    size_t k = 0;
    aimsi_store_u32le(f, 0xFD2FB528u);
    k = 4;
    f[k++] = (uint8_t)(0xC0 | 0x20 | 0x04); /* FCS 8 bytes, single segment, checksum */
    const uint64_t claim = (uint64_t)1 << 33;
    aimsi_store_u64le(f + k, claim);
    k += 8;
    /* block header: last=1, type raw=0, size 1 -> (1 << 3) | 1 */
    f[k++] = 0x09;
    f[k++] = 0;
    f[k++] = 0;
    f[k++] = 'x';
    memset(f + k, 0, 4);
    k += 4;
    assert_int_equal(k, sizeof f);
    assert_int_equal(zsection_status(f, k, claim, (size_t)1 << 40), AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "too short"));
}

/* After open the reader is immutable: threads may decode sections at once. */
typedef struct dec_job {
    aimsi_creader *r;
    const uint8_t *want;
    size_t len;
    int ok;
} dec_job;

static void *decode_many(void *arg)
{
    dec_job *j = arg;
    j->ok = 1;
    for (int i = 0; i < 20; i++) {
        void *out = NULL;
        size_t out_len = 0;
        if (aimsi_cr_section(j->r, TAG_A, CAP_ANY, &out, &out_len) != AIMS_OK ||
            out_len != j->len || memcmp(out, j->want, j->len) != 0) {
            j->ok = 0;
        }
        aimsi_free(out);
    }
    return NULL;
}

static void test_container_concurrent_sections(void **state)
{
    (void)state;
    const size_t n = 200000;
    uint8_t *d = malloc(n);
    assert_non_null(d);
    fill_ramp(d, n);
    const uint32_t tags[] = {TAG_A};
    const uint8_t *datas[] = {d};
    uint8_t *b = NULL;
    size_t len = 0;
    make_ctr(AIMSI_KIND_DATASET, tags, datas, &n, 1, &b, &len);
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_mem(b, len, 1, AIMSI_KIND_DATASET, &r), AIMS_OK);
    dec_job jobs[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (dec_job){r, d, n, 0};
        assert_int_equal(pthread_create(&th[i], NULL, decode_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_true(jobs[i].ok);
    }
    aimsi_cr_destroy(r);
    free(d);
}

/* ---- files ----------------------------------------------------------------------------- */

static char *tmpdir_make(void)
{
    char *d = strdup("/tmp/aims_codec_XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

static char *path_in(const char *dir, const char *name)
{
    const size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (const struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void rm_tree(char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (const struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            char *p = path_in(dir, e->d_name);
            if (rmdir(p) != 0) {
                (void)unlink(p);
            }
            free(p);
        }
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
}

static void expect_file(const char *path, const void *data, size_t len)
{
    void *got = NULL;
    size_t got_len = 0;
    assert_int_equal(aimsi_file_read(path, len, &got, &got_len), AIMS_OK);
    assert_non_null(got);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, data, len);
    assert_int_equal(((const char *)got)[len], '\0'); /* the sentinel */
    aimsi_free(got);
}

static void test_file_write_read_round_trip(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *p = path_in(dir, "f.bin");
    const size_t n = 300000;
    uint8_t *d = malloc(n);
    assert_non_null(d);
    fill_random(d, n, 1);
    assert_int_equal(aimsi_file_write_atomic(p, d, n), AIMS_OK);
    expect_file(p, d, n);
    /* overwrite with something shorter, then empty */
    assert_int_equal(aimsi_file_write_atomic(p, "abc", 3), AIMS_OK);
    expect_file(p, "abc", 3);
    assert_int_equal(aimsi_file_write_atomic(p, NULL, 0), AIMS_OK);
    expect_file(p, "", 0);
    assert_int_equal(dir_entries(dir), 1); /* no temp files left behind */
    /* caps */
    assert_int_equal(aimsi_file_write_atomic(p, d, 100), AIMS_OK);
    void *got = (void *)d;
    size_t got_len = 7;
    assert_int_equal(aimsi_file_read(p, 99, &got, &got_len), AIMS_E_RANGE);
    assert_ptr_equal(got, d);
    assert_int_equal(got_len, 7);
    assert_int_equal(aimsi_file_read(p, 0, &got, &got_len), AIMS_E_RANGE);
    expect_file(p, d, 100);
    /* a relative path writes (and syncs) the current directory */
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(aimsi_file_write_atomic("rel.bin", "xyz", 3), AIMS_OK);
    assert_int_equal(chdir(cwd), 0);
    char *rp = path_in(dir, "rel.bin");
    expect_file(rp, "xyz", 3);
    free(rp);
    free(d);
    free(p);
    rm_tree(dir);
}

static void test_file_read_errors(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *p = path_in(dir, "missing");
    void *got = NULL;
    size_t got_len = 0;
    assert_int_equal(aimsi_file_read(p, 100, &got, &got_len), AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_errmsg(), "missing"));
    assert_int_equal(aimsi_file_read(dir, 100, &got, &got_len), AIMS_E_IO);
    assert_non_null(strstr(aims_errmsg(), "directory"));
    /* through a non-directory: ENOTDIR is an I/O error with the OS text */
    assert_int_equal(aimsi_file_write_atomic(p, "1", 1), AIMS_OK);
    char *q = path_in(p, "x");
    assert_int_equal(aimsi_file_read(q, 100, &got, &got_len), AIMS_E_IO);
    assert_non_null(strstr(aims_errmsg(), strerror(ENOTDIR)));
    free(q);
    assert_null(got);
    assert_int_equal(aimsi_file_read(NULL, 100, &got, &got_len), AIMS_E_MISUSE);
    /* files whose size stat does not know read to EOF, under the cap */
    assert_int_equal(aimsi_file_read("/proc/self/status", 1 << 20, &got, &got_len), AIMS_OK);
    assert_true(got_len > 10);
    assert_non_null(strstr(got, "Name:"));
    aimsi_free(got);
    assert_int_equal(aimsi_file_read("/proc/self/status", 10, &got, &got_len), AIMS_E_RANGE);
    assert_int_equal(aimsi_file_read("/dev/null", 10, &got, &got_len), AIMS_OK);
    assert_int_equal(got_len, 0);
    aimsi_free(got);
    free(p);
    rm_tree(dir);
}

static void test_file_write_failure_keeps_previous(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *p = path_in(dir, "keep.bin");
    assert_int_equal(aimsi_file_write_atomic(p, "previous", 8), AIMS_OK);
    /* 1. the target is a directory: the rename fails, the temp file goes away */
    char *sub = path_in(dir, "sub");
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(aimsi_file_write_atomic(sub, "x", 1), AIMS_E_IO);
    assert_int_equal(dir_entries(dir), 2);
    /* 2. the directory does not exist */
    char *nodir = path_in(dir, "nope/f.bin");
    assert_int_equal(aimsi_file_write_atomic(nodir, "x", 1), AIMS_E_IO);
    /* 3. the write itself fails half way (file size limit): old file intact */
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    struct rlimit lim = old;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    uint8_t big[10000];
    memset(big, 'n', sizeof big);
    const aims_status rc = aimsi_file_write_atomic(p, big, sizeof big);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, AIMS_E_IO);
    assert_non_null(strstr(aims_errmsg(), "write failed"));
    expect_file(p, "previous", 8);
    assert_int_equal(dir_entries(dir), 2); /* keep.bin and sub; no temp file */
    /* 4. a read-only directory (root ignores permissions, so only as a user) */
    if (geteuid() != 0) {
        assert_int_equal(chmod(dir, 0500), 0);
        assert_int_equal(aimsi_file_write_atomic(p, "new", 3), AIMS_E_IO);
        assert_int_equal(chmod(dir, 0700), 0);
        expect_file(p, "previous", 8);
    }
    /* 5. misuse */
    assert_int_equal(aimsi_file_write_atomic(NULL, "x", 1), AIMS_E_MISUSE);
    assert_int_equal(aimsi_file_write_atomic(p, NULL, 1), AIMS_E_MISUSE);
    assert_int_equal(aimsi_file_write_atomic("", "x", 1), AIMS_E_INVAL);
    expect_file(p, "previous", 8);
    free(nodir);
    free(sub);
    free(p);
    rm_tree(dir);
}

static void test_container_save_and_open_file(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *p = path_in(dir, "c.aims");
    aimsi_cwriter *w = NULL;
    assert_int_equal(aimsi_cw_create(AIMSI_KIND_MODEL, 0, &w), AIMS_OK);
    assert_int_equal(aimsi_cw_add(w, TAG_A, small_z, sizeof small_z), AIMS_OK);
    assert_int_equal(aimsi_cw_save(w, p), AIMS_OK);
    aimsi_cw_destroy(w);
    aimsi_creader *r = NULL;
    assert_int_equal(aimsi_cr_open_file(p, 1 << 20, AIMSI_KIND_MODEL, &r), AIMS_OK);
    expect_section(r, TAG_A, small_z, sizeof small_z);
    aimsi_cr_destroy(r);
    r = NULL;
    assert_int_equal(aimsi_cr_open_file(p, 10, AIMSI_KIND_MODEL, &r), AIMS_E_RANGE);
    assert_int_equal(aimsi_cr_open_file(p, 1 << 20, AIMSI_KIND_DATASET, &r), AIMS_E_INVAL);
    assert_non_null(strstr(aims_errmsg(), p)); /* errors name the path */
    char *q = path_in(dir, "absent");
    assert_int_equal(aimsi_cr_open_file(q, 1 << 20, 0, &r), AIMS_E_NOTFOUND);
    assert_int_equal(aimsi_file_write_atomic(q, "AIMSCTR", 8), AIMS_OK);
    assert_int_equal(aimsi_cr_open_file(q, 1 << 20, 0, &r), AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), q));
    assert_null(r);
    free(q);
    free(p);
    rm_tree(dir);
}

/* ---- allocation-failure loops ---------------------------------------------------------- */

typedef struct fl_ctx {
    const uint8_t *big;
    size_t big_len;
    uint8_t *file;
    size_t file_len;
    char *path;
} fl_ctx;

static aims_status op_write(void *vctx)
{
    const fl_ctx *c = vctx;
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_DATASET, 0, &w));
    aims_status rc = AIMS_OK;
    for (uint32_t i = 0; i < 12 && rc == AIMS_OK; i++) {
        /* raw, empty, small zstd and one big zstd section */
        const size_t n = i == 11 ? c->big_len : (size_t)i * 20;
        rc = aimsi_cw_add(w, TAG_A + i, c->big, n);
    }
    void *out = NULL;
    size_t out_len = 0;
    if (rc == AIMS_OK) {
        rc = aimsi_cw_finish(w, &out, &out_len);
    }
    aimsi_free(out);
    aimsi_cw_destroy(w);
    return rc;
}

static aims_status op_read(void *vctx)
{
    const fl_ctx *c = vctx;
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_mem(c->file, c->file_len, 0, AIMSI_KIND_DATASET, &r));
    aims_status rc = AIMS_OK;
    for (uint32_t i = 0; i < 12 && rc == AIMS_OK; i++) {
        void *out = NULL;
        size_t out_len = 0;
        rc = aimsi_cr_section(r, TAG_A + i, CAP_ANY, &out, &out_len);
        aimsi_free(out);
    }
    aimsi_cr_destroy(r);
    return rc;
}

static aims_status op_read_owned(void *vctx)
{
    const fl_ctx *c = vctx;
    void *copy = aimsi_malloc(c->file_len);
    if (copy == NULL) {
        return AIMS_E_NOMEM;
    }
    memcpy(copy, c->file, c->file_len);
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_mem(copy, c->file_len, 1, 0, &r)); /* frees copy on failure */
    aimsi_cr_destroy(r);
    return AIMS_OK;
}

static aims_status op_save_open_file(void *vctx)
{
    const fl_ctx *c = vctx;
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_DATASET, 0, &w));
    aims_status rc = aimsi_cw_add(w, TAG_A, c->big, 5000);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_save(w, c->path);
    }
    aimsi_cw_destroy(w);
    if (rc != AIMS_OK) {
        return rc;
    }
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_file(c->path, 1 << 20, AIMSI_KIND_DATASET, &r));
    void *out = NULL;
    size_t out_len = 0;
    rc = aimsi_cr_section(r, TAG_A, CAP_ANY, &out, &out_len);
    aimsi_free(out);
    aimsi_cr_destroy(r);
    return rc;
}

static void test_alloc_failure_loops(void **state)
{
    (void)state;
    fl_ctx c = {0};
    c.big_len = (size_t)3 << 20; /* > 1 MiB: the level-1 path */
    uint8_t *big = malloc(c.big_len);
    assert_non_null(big);
    fill_ramp(big, c.big_len);
    c.big = big;
    ta_fail_loop("writer", op_write, &c);

    aimsi_cwriter *w = NULL;
    assert_int_equal(aimsi_cw_create(AIMSI_KIND_DATASET, 0, &w), AIMS_OK);
    for (uint32_t i = 0; i < 12; i++) {
        assert_int_equal(aimsi_cw_add(w, TAG_A + i, c.big, i == 11 ? c.big_len : i * 20),
                         AIMS_OK);
    }
    void *file = NULL;
    assert_int_equal(aimsi_cw_finish(w, &file, &c.file_len), AIMS_OK);
    aimsi_cw_destroy(w);
    c.file = malloc(c.file_len);
    assert_non_null(c.file);
    memcpy(c.file, file, c.file_len);
    aimsi_free(file);
    ta_fail_loop("reader", op_read, &c);
    ta_fail_loop("reader_owned", op_read_owned, &c);

    char *dir = tmpdir_make();
    c.path = path_in(dir, "fl.aims");
    ta_fail_loop("save_open_file", op_save_open_file, &c);
    assert_int_equal(dir_entries(dir), 1);
    free(c.path);
    rm_tree(dir);
    free(c.file);
    free(big);
}

/* A failed add leaves the writer usable and its output unchanged. */
static void test_writer_failed_add_changes_nothing(void **state)
{
    (void)state;
    aimsi_cwriter *w = NULL;
    assert_int_equal(aimsi_cw_create(AIMSI_KIND_DATASET, 0, &w), AIMS_OK);
    assert_int_equal(aimsi_cw_add(w, TAG_A, small_z, sizeof small_z), AIMS_OK);
    void *b1 = NULL;
    size_t l1 = 0;
    assert_int_equal(aimsi_cw_finish(w, &b1, &l1), AIMS_OK);
    for (long n = 1; n < 50; n++) {
        ta_fail_at(n);
        const aims_status rc = aimsi_cw_add(w, TAG_B, small_z, sizeof small_z);
        const int injected = ta_failed();
        ta_fail_at(0);
        if (!injected) {
            assert_int_equal(rc, AIMS_OK);
            break;
        }
        if (rc == AIMS_OK) {
            fail_msg("add succeeded despite failure at %ld", n);
        }
        void *b2 = NULL;
        size_t l2 = 0;
        assert_int_equal(aimsi_cw_finish(w, &b2, &l2), AIMS_OK);
        assert_int_equal(l1, l2);
        assert_memory_equal(b1, b2, l1);
        aimsi_free(b2);
    }
    aimsi_free(b1);
    aimsi_cw_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rd_reads_and_refuses_past_end, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_rd_f64_and_store_load_round_trip, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_crc32c_known_vectors_and_chaining, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_zstd_version_string, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_round_trip_small, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_raw_threshold_and_empty_file, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_round_trip_big, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_many_sections, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_writer_refuses_misuse, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_truncated_at_every_byte, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_flipped_bits_everywhere, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_header_checks, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_table_checks, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_section_flags_and_caps, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_hostile_frames, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_claimed_size_beyond_blocks, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_concurrent_sections, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_file_write_read_round_trip, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_file_read_errors, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_file_write_failure_keeps_previous, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_container_save_and_open_file, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_writer_failed_add_changes_nothing, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failure_loops, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
