/*
 * test_frame.c -- white-box tests of the wire frame codec (src/codec/frame.c).
 *
 * Round trips cover every frame type and tensor dtype, raw and compressed
 * payloads, empty tensor lists and every cap at its limit. Hostile frames are
 * either damaged encodings (truncated at every length, every byte flipped)
 * or hand-built headers/payloads with a correct header CRC (wrap/fix_crc), so
 * each test reaches the check it aims at rather than the CRC. Allocation
 * failure loops run over encode and decode, compressed and not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/aimsi_frame.h"
#include "testalloc.h"

#define CAP ((size_t)1 << 26)

static const uint8_t dtypes[] = {AIMSI_DT_F32, AIMSI_DT_I32, AIMSI_DT_U8, AIMSI_DT_I64,
                                 AIMSI_DT_BYTES};
static const size_t dsize[] = {4, 4, 1, 8, 1};

static void fix_crc(uint8_t *p)
{
    aimsi_store_u32le(p + 40, aimsi_crc32c(0, p, 40));
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static aimsi_frame_hdr mkhdr(uint8_t type)
{
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof h);
    h.type = type;
    h.request_id = 0x0102030405060708ull;
    h.deadline_ns = 123456789ull;
    h.status = type == AIMSI_FRAME_REQUEST ? 0 : -7;
    strcpy(h.service, type == AIMSI_FRAME_REQUEST ? "infer@2/model-a.v1" : "");
    strcpy(h.method, type == AIMSI_FRAME_REQUEST ? "predict_batch" : "");
    return h;
}

static aimsi_tensor mktensor(uint8_t dtype, uint8_t ndim, const uint64_t *dims, const void *data,
                             size_t elsize, const char *name)
{
    aimsi_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    strcpy(t.name, name);
    size_t n = 1;
    for (uint8_t d = 0; d < ndim; d++) {
        t.dims[d] = dims[d];
        n *= (size_t)dims[d];
    }
    t.data = data;
    t.bytes = n * elsize;
    return t;
}

/* Hand-built uncompressed frame around payload bytes (names from mkhdr). */
static uint8_t *wrap(uint8_t type, const uint8_t *payload, size_t plen, size_t *out_len)
{
    aimsi_buf b;
    aimsi_buf_init(&b);
    const aimsi_frame_hdr h = mkhdr(type);
    assert_int_equal(aimsi_frame_encode(&h, NULL, 0, type == AIMSI_FRAME_ERROR ? "" : NULL, 0, &b),
                     AIMS_OK);
    /* Replace the encoded (empty-list) payload by ours. */
    const size_t names = strlen(h.service) + strlen(h.method);
    b.len = AIMSI_FRAME_HEADER + names;
    assert_int_equal(aimsi_buf_append(&b, payload, plen), AIMS_OK);
    aimsi_store_u32le(b.data + 32, (uint32_t)plen);
    aimsi_store_u32le(b.data + 36, (uint32_t)plen);
    fix_crc(b.data);
    return aimsi_buf_take(&b, out_len);
}

static void expect_decode(const uint8_t *p, size_t len, aims_status want)
{
    aimsi_frame f;
    memset(&f, 0xab, sizeof f);
    const aims_status rc = aimsi_frame_decode(p, len, CAP, &f);
    if (rc == AIMS_OK) {
        aimsi_frame_release(&f);
    }
    assert_int_equal(rc, want);
}

/* ---- round trips ----------------------------------------------------------------- */

static void roundtrip_types(size_t compress_above)
{
    float fa[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e9f, -1e-9f};
    int32_t ia[3] = {1, -2, 3};
    uint8_t ua[5] = {0, 1, 2, 254, 255};
    int64_t la[2] = {INT64_MIN, INT64_MAX};
    const char txt[] = "hello bytes";
    const void *datas[] = {fa, ia, ua, la, txt};
    const uint64_t dims2[2] = {2, 3};
    const uint64_t d3[1] = {3};
    const uint64_t d5[1] = {5};
    const uint64_t d2[1] = {2};
    const uint64_t d11[1] = {11};
    const uint64_t *dimsv[] = {dims2, d3, d5, d2, d11};
    const uint8_t ndims[] = {2, 1, 1, 1, 1};
    aimsi_tensor ts[5];
    for (size_t i = 0; i < 5; i++) {
        ts[i] = mktensor(dtypes[i], ndims[i], dimsv[i], datas[i], dsize[i], i == 4 ? "" : "t_x");
    }
    const uint8_t types[] = {AIMSI_FRAME_REQUEST, AIMSI_FRAME_REPLY, AIMSI_FRAME_ERROR,
                             AIMSI_FRAME_PING, AIMSI_FRAME_PONG, AIMSI_FRAME_CANCEL};
    for (size_t k = 0; k < sizeof types; k++) {
        const aimsi_frame_hdr h = mkhdr(types[k]);
        aimsi_buf b;
        aimsi_buf_init(&b);
        const int tens = types[k] <= AIMSI_FRAME_REPLY;
        const char *msg = types[k] == AIMSI_FRAME_ERROR ? "boom: ünïcode" : NULL;
        assert_int_equal(
            aimsi_frame_encode(&h, tens ? ts : NULL, tens ? 5 : 0, msg, compress_above, &b),
            AIMS_OK);
        size_t total = 0;
        assert_int_equal(aimsi_frame_peek(b.data, b.len, b.len, &total), AIMS_OK);
        assert_int_equal(total, b.len);
        aimsi_frame f;
        assert_int_equal(aimsi_frame_decode(b.data, b.len, CAP, &f), AIMS_OK);
        assert_int_equal(f.hdr.type, types[k]);
        assert_true(f.hdr.request_id == h.request_id);
        assert_true(f.hdr.deadline_ns == h.deadline_ns);
        assert_int_equal(f.hdr.status, h.status);
        assert_string_equal(f.hdr.service, h.service);
        assert_string_equal(f.hdr.method, h.method);
        if (tens) {
            assert_int_equal(f.n_tensors, 5);
            for (size_t i = 0; i < 5; i++) {
                assert_int_equal(f.tensors[i].dtype, ts[i].dtype);
                assert_int_equal(f.tensors[i].ndim, ts[i].ndim);
                assert_string_equal(f.tensors[i].name, ts[i].name);
                assert_memory_equal(f.tensors[i].dims, ts[i].dims, ts[i].ndim * 8);
                assert_int_equal(f.tensors[i].bytes, ts[i].bytes);
                assert_memory_equal(f.tensors[i].data, ts[i].data, ts[i].bytes);
                /* data starts 8-aligned from the payload start */
                assert_int_equal(((const uint8_t *)f.tensors[i].data - f.payload) % 8, 0);
            }
        } else if (msg != NULL) {
            assert_int_equal(f.message_len, strlen(msg));
            assert_memory_equal(f.message, msg, strlen(msg));
        } else {
            assert_int_equal(f.payload_len, 0);
        }
        aimsi_frame_release(&f);
        aimsi_frame_release(&f); /* idempotent */
        aimsi_buf_free(&b);
    }
}

static void test_roundtrip_raw(void **state)
{
    (void)state;
    roundtrip_types(0);
}

static void test_roundtrip_threshold_small(void **state)
{
    (void)state;
    roundtrip_types(1); /* tries zstd on everything; incompressible stays raw */
}

static void test_roundtrip_compressed(void **state)
{
    (void)state;
    enum { N = 4096 };
    float *v = calloc(N, sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < N; i++) {
        v[i] = (float)(i % 7);
    }
    const uint64_t dims[2] = {64, 64};
    const aimsi_tensor t = mktensor(AIMSI_DT_F32, 2, dims, v, 4, "x");
    const aimsi_frame_hdr h = mkhdr(AIMSI_FRAME_REQUEST);
    aimsi_buf b;
    aimsi_buf_init(&b);
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 1024, &b), AIMS_OK);
    assert_true((b.data[6] & AIMSI_FRAME_FLAG_ZSTD) != 0);
    assert_true(b.len < N * sizeof *v / 4);
    aimsi_frame f;
    assert_int_equal(aimsi_frame_decode(b.data, b.len, CAP, &f), AIMS_OK);
    assert_non_null(f.owned);
    assert_int_equal(f.tensors[0].bytes, N * sizeof *v);
    assert_memory_equal(f.tensors[0].data, v, N * sizeof *v);
    aimsi_frame_release(&f);
    /* the raw cap applies to the decompressed size */
    assert_int_equal(aimsi_frame_decode(b.data, b.len, N * sizeof *v, &f), AIMS_E_RANGE);
    /* under the threshold it stays raw */
    aimsi_buf b2;
    aimsi_buf_init(&b2);
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, N * sizeof *v + 100, &b2), AIMS_OK);
    assert_int_equal(b2.data[6], 0);
    expect_decode(b2.data, b2.len, AIMS_OK);
    /* every byte of the compressed payload flipped: clean error or (rarely) OK */
    for (size_t i = 44; i < b.len; i++) {
        b.data[i] ^= 0x5a;
        aims_status rc = aimsi_frame_decode(b.data, b.len, CAP, &f);
        if (rc == AIMS_OK) {
            aimsi_frame_release(&f);
        } else {
            assert_true(rc == AIMS_E_CORRUPT);
        }
        b.data[i] ^= 0x5a;
    }
    aimsi_buf_free(&b);
    aimsi_buf_free(&b2);
    free(v);
}

static void test_empty_and_append(void **state)
{
    (void)state;
    const aimsi_frame_hdr h = mkhdr(AIMSI_FRAME_REPLY);
    aimsi_buf b;
    aimsi_buf_init(&b);
    assert_int_equal(aimsi_buf_append(&b, "xyz", 3), AIMS_OK);
    assert_int_equal(aimsi_frame_encode(&h, NULL, 0, NULL, 1, &b), AIMS_OK);
    assert_int_equal(b.len, 3 + 44 + 4);
    aimsi_frame f;
    assert_int_equal(aimsi_frame_decode(b.data + 3, b.len - 3, CAP, &f), AIMS_OK);
    assert_int_equal(f.n_tensors, 0);
    aimsi_frame_release(&f);
    /* zero-sized tensor and a scalar */
    const uint64_t z[2] = {0, 9};
    const int64_t one = 42;
    aimsi_tensor ts[2] = {mktensor(AIMSI_DT_F32, 2, z, NULL, 4, "empty"),
                          mktensor(AIMSI_DT_I64, 0, NULL, &one, 8, "scalar")};
    b.len = 0;
    assert_int_equal(aimsi_frame_encode(&h, ts, 2, NULL, 0, &b), AIMS_OK);
    assert_int_equal(aimsi_frame_decode(b.data, b.len, CAP, &f), AIMS_OK);
    assert_int_equal(f.tensors[0].bytes, 0);
    assert_int_equal(f.tensors[1].bytes, 8);
    assert_memory_equal(f.tensors[1].data, &one, 8);
    aimsi_frame_release(&f);
    aimsi_buf_free(&b);
}

static void test_max_sizes(void **state)
{
    (void)state;
    aimsi_frame_hdr h = mkhdr(AIMSI_FRAME_REQUEST);
    memset(h.service, 'S', AIMSI_FRAME_MAX_SERVICE);
    h.service[AIMSI_FRAME_MAX_SERVICE] = '\0';
    memset(h.method, 'm', AIMSI_FRAME_MAX_METHOD);
    h.method[AIMSI_FRAME_MAX_METHOD] = '\0';
    static aimsi_tensor ts[AIMSI_FRAME_MAX_TENSORS + 1];
    const uint64_t dims[4] = {1, 2, 1, 3};
    const uint8_t data[6] = {1, 2, 3, 4, 5, 6};
    for (size_t i = 0; i <= AIMSI_FRAME_MAX_TENSORS; i++) {
        ts[i] = mktensor(AIMSI_DT_U8, 4, dims, data, 1, "");
        memset(ts[i].name, 'n', AIMSI_FRAME_MAX_NAME);
        ts[i].name[AIMSI_FRAME_MAX_NAME] = '\0';
    }
    aimsi_buf b;
    aimsi_buf_init(&b);
    assert_int_equal(aimsi_frame_encode(&h, ts, AIMSI_FRAME_MAX_TENSORS, NULL, 0, &b), AIMS_OK);
    aimsi_frame f;
    assert_int_equal(aimsi_frame_decode(b.data, b.len, CAP, &f), AIMS_OK);
    assert_int_equal(f.n_tensors, AIMSI_FRAME_MAX_TENSORS);
    assert_int_equal(strlen(f.hdr.service), AIMSI_FRAME_MAX_SERVICE);
    assert_int_equal(strlen(f.hdr.method), AIMSI_FRAME_MAX_METHOD);
    assert_int_equal(strlen(f.tensors[63].name), AIMSI_FRAME_MAX_NAME);
    aimsi_frame_release(&f);
    /* peek with a frame cap one below the size */
    size_t total = 0;
    assert_int_equal(aimsi_frame_peek(b.data, b.len, b.len - 1, &total), AIMS_E_RANGE);
    /* the raw cap at exactly the payload size passes */
    const uint32_t raw = aimsi_load_u32le(b.data + 36);
    assert_int_equal(aimsi_frame_decode(b.data, b.len, raw, &f), AIMS_OK);
    aimsi_frame_release(&f);
    assert_int_equal(aimsi_frame_decode(b.data, b.len, raw - 1, &f), AIMS_E_RANGE);
    const size_t before = b.len;
    /* one over every cap: refused, out untouched */
    assert_int_equal(aimsi_frame_encode(&h, ts, AIMSI_FRAME_MAX_TENSORS + 1, NULL, 0, &b),
                     AIMS_E_INVAL);
    ts[0].name[AIMSI_FRAME_MAX_NAME] = 'n';
    assert_int_equal(aimsi_frame_encode(&h, ts, 1, NULL, 0, &b), AIMS_E_INVAL);
    ts[0].name[AIMSI_FRAME_MAX_NAME] = '\0';
    aimsi_frame_hdr h2 = h;
    h2.service[AIMSI_FRAME_MAX_SERVICE] = 'S';
    assert_int_equal(aimsi_frame_encode(&h2, ts, 1, NULL, 0, &b), AIMS_E_INVAL);
    h2 = h;
    h2.method[AIMSI_FRAME_MAX_METHOD] = 'm';
    assert_int_equal(aimsi_frame_encode(&h2, ts, 1, NULL, 0, &b), AIMS_E_INVAL);
    /* error message: 1024 fits, 1025 does not */
    char msg[1026];
    memset(msg, 'e', sizeof msg - 1);
    msg[1025] = '\0';
    const aimsi_frame_hdr he = mkhdr(AIMSI_FRAME_ERROR);
    assert_int_equal(aimsi_frame_encode(&he, NULL, 0, msg, 0, &b), AIMS_E_INVAL);
    assert_int_equal(b.len, before);
    msg[1024] = '\0';
    assert_int_equal(aimsi_frame_encode(&he, NULL, 0, msg, 0, &b), AIMS_OK);
    assert_int_equal(aimsi_frame_decode(b.data + before, b.len - before, CAP, &f), AIMS_OK);
    assert_int_equal(f.message_len, 1024);
    aimsi_frame_release(&f);
    aimsi_buf_free(&b);
}

static void test_encode_invalid(void **state)
{
    (void)state;
    aimsi_buf b;
    aimsi_buf_init(&b);
    const uint8_t d[4] = {0};
    const uint64_t dims[1] = {4};
    aimsi_tensor t = mktensor(AIMSI_DT_U8, 1, dims, d, 1, "ok");
    aimsi_frame_hdr h = mkhdr(AIMSI_FRAME_REQUEST);
    assert_int_equal(aimsi_frame_encode(NULL, &t, 1, NULL, 0, &b), AIMS_E_MISUSE);
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, NULL), AIMS_E_MISUSE);
    h.type = 0;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    h.type = 7;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    h = mkhdr(AIMSI_FRAME_REQUEST);
    h.service[0] = '\0';
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    strcpy(h.service, "bad name");
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    h = mkhdr(AIMSI_FRAME_REQUEST);
    strcpy(h.method, "x:y");
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    h = mkhdr(AIMSI_FRAME_REQUEST);
    h.status = 3;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    h = mkhdr(AIMSI_FRAME_REQUEST);
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, "msg", 0, &b), AIMS_E_INVAL);
    assert_int_equal(aimsi_frame_encode(&h, NULL, 1, NULL, 0, &b), AIMS_E_INVAL);
    t.dtype = 6;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    t.dtype = AIMSI_DT_U8;
    t.ndim = 5;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    t.ndim = 1;
    t.bytes = 3;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    t.bytes = 4;
    t.data = NULL;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    t.data = d;
    t.dtype = AIMSI_DT_I64;
    t.dims[0] = UINT64_MAX / 4;
    assert_int_equal(aimsi_frame_encode(&h, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    const aimsi_frame_hdr hp = mkhdr(AIMSI_FRAME_PING);
    assert_int_equal(aimsi_frame_encode(&hp, &t, 1, NULL, 0, &b), AIMS_E_INVAL);
    assert_int_equal(aimsi_frame_encode(&hp, NULL, 0, "x", 0, &b), AIMS_E_INVAL);
    assert_int_equal(b.len, 0);
    aimsi_buf_free(&b);
}

/* ---- hostile input --------------------------------------------------------------- */

static uint8_t *sample(size_t *len, size_t compress_above)
{
    static float v[512];
    for (size_t i = 0; i < 512; i++) {
        v[i] = (float)(i % 5);
    }
    const uint64_t dims[2] = {16, 32};
    const uint8_t u[3] = {7, 8, 9};
    const uint64_t d3[1] = {3};
    const aimsi_tensor ts[2] = {mktensor(AIMSI_DT_F32, 2, dims, v, 4, "feat"),
                                mktensor(AIMSI_DT_U8, 1, d3, u, 1, "u")};
    const aimsi_frame_hdr h = mkhdr(AIMSI_FRAME_REQUEST);
    aimsi_buf b;
    aimsi_buf_init(&b);
    assert_int_equal(aimsi_frame_encode(&h, ts, 2, NULL, compress_above, &b), AIMS_OK);
    return aimsi_buf_take(&b, len);
}

static void test_truncation_every_byte(void **state)
{
    (void)state;
    for (int z = 0; z < 2; z++) {
        size_t len = 0;
        uint8_t *p = sample(&len, z ? 64 : 0);
        for (size_t n = 0; n < len; n++) {
            uint8_t *c = malloc(n + 1); /* exact-size copy so ASan sees overreads */
            assert_non_null(c);
            memcpy(c, p, n);
            expect_decode(c, n, AIMS_E_CORRUPT);
            size_t total = 0;
            assert_int_equal(aimsi_frame_peek(c, n, CAP, &total), AIMS_OK);
            assert_int_equal(total, n < AIMSI_FRAME_HEADER ? AIMSI_FRAME_HEADER : len);
            free(c);
        }
        expect_decode(p, len, AIMS_OK);
        /* one trailing byte too many */
        uint8_t *c = malloc(len + 1);
        assert_non_null(c);
        memcpy(c, p, len);
        c[len] = 0;
        expect_decode(c, len + 1, AIMS_E_CORRUPT);
        free(c);
        aimsi_free(p);
    }
}

/* Version 2 is written by default; version 1 still decodes and says so (the
 * node answers it, aimsi_wire.h); an encoder asked for a newer one refuses. */
static void test_versions(void **state)
{
    (void)state;
    aimsi_frame_hdr h = mkhdr(AIMSI_FRAME_REQUEST);
    for (uint8_t v = 0; v <= AIMSI_FRAME_VERSION + 1; v++) {
        h.version = v;
        aimsi_buf b;
        aimsi_buf_init(&b);
        const aims_status rc = aimsi_frame_encode(&h, NULL, 0, NULL, 0, &b);
        if (v > AIMSI_FRAME_VERSION) {
            assert_int_equal(rc, AIMS_E_INVAL);
            assert_int_equal(b.len, 0);
            aimsi_buf_free(&b);
            continue;
        }
        assert_int_equal(rc, AIMS_OK);
        const uint8_t want = v == 0 ? AIMSI_FRAME_VERSION : v;
        assert_int_equal(((const uint8_t *)b.data)[4], want);
        aimsi_frame f;
        assert_int_equal(aimsi_frame_decode(b.data, b.len, CAP, &f), AIMS_OK);
        assert_int_equal(f.hdr.version, want);
        assert_true(f.hdr.deadline_ns == h.deadline_ns);
        aimsi_frame_release(&f);
        aimsi_buf_free(&b);
    }
    assert_int_equal(AIMSI_FRAME_VERSION, 2);
    assert_int_equal(AIMSI_FRAME_VERSION_MIN, 1);
}

static void test_byte_flips(void **state)
{
    (void)state;
    size_t len = 0;
    uint8_t *p = sample(&len, 0);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            p[i] ^= (uint8_t)(1u << bit);
            aimsi_frame f;
            const aims_status rc = aimsi_frame_decode(p, len, CAP, &f);
            if (rc == AIMS_OK) {
                aimsi_frame_release(&f); /* payload data bytes are not checksummed */
                assert_true(i >= 44);
            } else {
                assert_true(rc == AIMS_E_CORRUPT || rc == AIMS_E_UNSUPPORTED);
            }
            p[i] ^= (uint8_t)(1u << bit);
        }
    }
    aimsi_free(p);
}

static void test_hostile_header(void **state)
{
    (void)state;
    size_t len = 0;
    uint8_t *p = sample(&len, 0);
    uint8_t *c = malloc(len);
    assert_non_null(c);
    size_t total = 0;
    /* version: 0 corrupt, 3 unsupported (before the CRC is even checked) */
    memcpy(c, p, len);
    c[4] = 3;
    expect_decode(c, len, AIMS_E_UNSUPPORTED);
    assert_int_equal(aimsi_frame_peek(c, len, CAP, &total), AIMS_E_UNSUPPORTED);
    c[4] = 0;
    fix_crc(c);
    expect_decode(c, len, AIMS_E_CORRUPT);
    /* bad CRC */
    memcpy(c, p, len);
    c[41] ^= 1;
    expect_decode(c, len, AIMS_E_CORRUPT);
    assert_int_equal(aimsi_frame_peek(c, len, CAP, &total), AIMS_E_CORRUPT);
    /* partial magic mismatch on peek */
    assert_int_equal(aimsi_frame_peek("AIX", 3, CAP, &total), AIMS_E_CORRUPT);
    assert_int_equal(aimsi_frame_peek("AI", 2, CAP, &total), AIMS_OK);
    assert_int_equal(aimsi_frame_peek(NULL, 0, CAP, &total), AIMS_OK);
    assert_int_equal(aimsi_frame_peek(p, len, CAP, NULL), AIMS_E_MISUSE);
    struct {
        size_t off;
        unsigned val;
        int width;
    } cases[] = {
        {5, 0, 1},      {5, 7, 1},      {6, 2, 2},     {6, 0x8000, 2},   {28, 0, 2},
        {28, 129, 2},   {28, 0xffff, 2}, {30, 65, 2},  {30, 0xffff, 2},  {24, 1, 4},
        {32, 0xffffffffu, 4}, {36, 5, 4}, {32, 5, 4},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(c, p, len);
        if (cases[k].width == 1) {
            c[cases[k].off] = (uint8_t)cases[k].val;
        } else if (cases[k].width == 2) {
            put16(c + cases[k].off, (uint16_t)cases[k].val);
        } else {
            aimsi_store_u32le(c + cases[k].off, cases[k].val);
        }
        fix_crc(c);
        expect_decode(c, len, AIMS_E_CORRUPT);
    }
    /* hostile stored length: peek reports the claimed size or the cap */
    memcpy(c, p, len);
    aimsi_store_u32le(c + 32, 0xffffffffu);
    aimsi_store_u32le(c + 36, 0xffffffffu);
    fix_crc(c);
    assert_int_equal(aimsi_frame_peek(c, 44, 1 << 20, &total), AIMS_E_RANGE);
    expect_decode(c, len, AIMS_E_CORRUPT);
    /* compressed flag on a raw payload */
    memcpy(c, p, len);
    c[6] = 1;
    fix_crc(c);
    expect_decode(c, len, AIMS_E_CORRUPT);
    /* bad characters in names */
    memcpy(c, p, len);
    c[44] = ' ';
    expect_decode(c, len, AIMS_E_CORRUPT);
    memcpy(c, p, len);
    c[44 + strlen("infer@2/model-a.v1")] = 0;
    expect_decode(c, len, AIMS_E_CORRUPT);
    assert_int_equal(aimsi_frame_decode(NULL, 5, CAP, NULL), AIMS_E_MISUSE);
    free(c);
    aimsi_free(p);
}

/* payload builder for hand-made tensor lists */
typedef struct pb {
    uint8_t b[512];
    size_t n;
} pb;

static void pb_u8(pb *p, uint8_t v)
{
    p->b[p->n++] = v;
}
static void pb_u16(pb *p, uint16_t v)
{
    put16(p->b + p->n, v);
    p->n += 2;
}
static void pb_u32(pb *p, uint32_t v)
{
    aimsi_store_u32le(p->b + p->n, v);
    p->n += 4;
}
static void pb_u64(pb *p, uint64_t v)
{
    aimsi_store_u64le(p->b + p->n, v);
    p->n += 8;
}
static void pb_pad(pb *p, uint8_t fill)
{
    while (p->n % 8 != 0) {
        pb_u8(p, fill);
    }
}

static void expect_payload(uint8_t type, const pb *p, aims_status want)
{
    size_t len = 0;
    uint8_t *f = wrap(type, p->b, p->n, &len);
    expect_decode(f, len, want);
    aimsi_free(f);
}

/* One u8 tensor with ndim 1 and dim d, data bytes given. */
static void one_tensor(pb *p, uint8_t dtype, uint8_t ndim, uint16_t nlen, uint64_t dim,
                       size_t data)
{
    memset(p, 0, sizeof *p);
    pb_u32(p, 1);
    pb_u8(p, dtype);
    pb_u8(p, ndim);
    pb_u16(p, nlen);
    for (uint16_t i = 0; i < nlen && p->n < 64; i++) {
        pb_u8(p, 'a');
    }
    for (uint8_t d = 0; d < ndim && d < 8; d++) {
        pb_u64(p, dim);
    }
    pb_pad(p, 0);
    for (size_t i = 0; i < data && p->n < sizeof p->b; i++) {
        pb_u8(p, 1);
    }
}

static void test_hostile_payload(void **state)
{
    (void)state;
    pb p;
    one_tensor(&p, AIMSI_DT_U8, 1, 2, 5, 5);
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_OK);
    one_tensor(&p, AIMSI_DT_U8, 1, 2, 5, 4); /* data short */
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, AIMSI_DT_U8, 1, 2, 5, 6); /* trailing byte */
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, 0, 1, 2, 5, 5);
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, 6, 1, 2, 5, 5);
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, AIMSI_DT_U8, 5, 2, 1, 1);
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, AIMSI_DT_U8, 1, 65, 1, 1);
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, AIMSI_DT_U8, 1, 0xffff, 1, 1);
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, AIMSI_DT_U8, 1, 2, UINT64_MAX, 8); /* huge dim */
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, AIMSI_DT_I64, 2, 2, (uint64_t)1 << 32, 8); /* product overflows */
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    one_tensor(&p, AIMSI_DT_F32, 1, 2, (uint64_t)1 << 62, 8); /* bytes overflow */
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    /* NUL in a tensor name */
    one_tensor(&p, AIMSI_DT_U8, 1, 2, 1, 1);
    p.b[9] = 0;
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    /* non-zero padding: name length 3 -> 4+4+3+8 = 19, pad 5 */
    one_tensor(&p, AIMSI_DT_U8, 1, 3, 1, 1);
    p.b[20] = 1;
    expect_payload(AIMSI_FRAME_REQUEST, &p, AIMS_E_CORRUPT);
    /* counts */
    memset(&p, 0, sizeof p);
    pb_u32(&p, 65);
    expect_payload(AIMSI_FRAME_REPLY, &p, AIMS_E_CORRUPT);
    memset(&p, 0, sizeof p);
    pb_u32(&p, 0xffffffffu);
    expect_payload(AIMSI_FRAME_REPLY, &p, AIMS_E_CORRUPT);
    memset(&p, 0, sizeof p);
    pb_u32(&p, 2); /* claims two, has none */
    expect_payload(AIMSI_FRAME_REPLY, &p, AIMS_E_CORRUPT);
    memset(&p, 0, sizeof p);
    pb_u16(&p, 0); /* count truncated */
    expect_payload(AIMSI_FRAME_REPLY, &p, AIMS_E_CORRUPT);
    memset(&p, 0, sizeof p);
    expect_payload(AIMSI_FRAME_REPLY, &p, AIMS_E_CORRUPT); /* empty payload */
    /* control frames carry nothing; error messages are capped */
    pb_u8(&p, 1);
    expect_payload(AIMSI_FRAME_PING, &p, AIMS_E_CORRUPT);
    expect_payload(AIMSI_FRAME_ERROR, &p, AIMS_OK);
    /* error messages must be UTF-8 without NUL */
    static const char *const bad_utf8[] = {"\xff", "a\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                           "\xe2\x82", "\x80"};
    for (size_t k = 0; k < sizeof bad_utf8 / sizeof bad_utf8[0]; k++) {
        memset(&p, 0, sizeof p);
        p.n = strlen(bad_utf8[k]);
        memcpy(p.b, bad_utf8[k], p.n);
        expect_payload(AIMSI_FRAME_ERROR, &p, AIMS_E_CORRUPT);
        aimsi_buf b;
        aimsi_buf_init(&b);
        const aimsi_frame_hdr he = mkhdr(AIMSI_FRAME_ERROR);
        assert_int_equal(aimsi_frame_encode(&he, NULL, 0, bad_utf8[k], 0, &b), AIMS_E_INVAL);
        aimsi_buf_free(&b);
    }
    memset(&p, 0, sizeof p);
    p.n = 3; /* "a", NUL, "b" */
    p.b[0] = 'a';
    p.b[2] = 'b';
    expect_payload(AIMSI_FRAME_ERROR, &p, AIMS_E_CORRUPT);
    static const char good[] = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf";
    p.n = strlen(good);
    memcpy(p.b, good, p.n);
    expect_payload(AIMSI_FRAME_ERROR, &p, AIMS_OK);
    static uint8_t big[1025];
    memset(big, 'x', sizeof big);
    size_t len = 0;
    uint8_t *f = wrap(AIMSI_FRAME_ERROR, big, sizeof big, &len);
    expect_decode(f, len, AIMS_E_CORRUPT);
    aimsi_free(f);
}

/* ---- allocation failures --------------------------------------------------------- */

typedef struct op_ctx {
    size_t compress_above;
    const uint8_t *frame;
    size_t len;
} op_ctx;

static aims_status op_encode(void *vctx)
{
    const op_ctx *ctx = vctx;
    static float v[1024];
    const uint64_t dims[1] = {1024};
    const aimsi_tensor t = mktensor(AIMSI_DT_F32, 1, dims, v, 4, "v");
    const aimsi_frame_hdr h = mkhdr(AIMSI_FRAME_REQUEST);
    aimsi_buf b;
    aimsi_buf_init(&b);
    const aims_status rc = aimsi_frame_encode(&h, &t, 1, NULL, ctx->compress_above, &b);
    aimsi_buf_free(&b);
    return rc;
}

static aims_status op_decode(void *vctx)
{
    const op_ctx *ctx = vctx;
    aimsi_frame f;
    const aims_status rc = aimsi_frame_decode(ctx->frame, ctx->len, CAP, &f);
    if (rc == AIMS_OK) {
        aimsi_frame_release(&f);
    }
    return rc;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    op_ctx c0 = {0, NULL, 0};
    op_ctx c1 = {64, NULL, 0};
    ta_fail_loop("frame encode raw", op_encode, &c0);
    ta_fail_loop("frame encode zstd", op_encode, &c1);
    size_t len = 0;
    uint8_t *p = sample(&len, 64);
    assert_true(p[6] == 1);
    op_ctx c2 = {0, p, len};
    ta_fail_loop("frame decode zstd", op_decode, &c2);
    aimsi_free(p);
    p = sample(&len, 0);
    op_ctx c3 = {0, p, len};
    ta_fail_loop("frame decode raw", op_decode, &c3);
    aimsi_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_raw, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_versions, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_threshold_small, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_compressed, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_append, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_max_sizes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_encode_invalid, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_truncation_every_byte, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_byte_flips, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_header, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_payload, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
