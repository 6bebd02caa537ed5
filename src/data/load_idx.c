/*
 * load_idx.c -- the IDX format of the MNIST family.
 *
 *   bytes 0,1   zero
 *   byte  2     element type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
 *   byte  3     number of dimensions (we accept 1..4)
 *   4*ndim      dimensions, big-endian u32 each
 *   ...         elements, big-endian, row-major
 *
 * The header is hostile: every dimension must be non-zero, the element count
 * is multiplied with overflow checks, and the declared size must equal the
 * bytes we were given exactly (a truncated file names expected vs actual; a
 * file with trailing bytes is just as corrupt -- it means we misread the shape).
 *
 * Speed. Fashion-MNIST images are 47 M u8 values; the u8 -> float conversion is
 * benchmarked against numpy's frombuffer().astype(float32). Three things matter:
 * the conversion is SSE2 (16 bytes -> 16 floats per step; gcc's -O2 cost model
 * does not vectorise the plain loop), the output gets MADV_HUGEPAGE like numpy
 * does for large arrays (on a VM a 4 KiB page fault costs more than converting
 * the page), and large images are split over two threads.
 */
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "aimsi_data.h"

enum {
    IDX_U8 = 0x08,
    IDX_I8 = 0x09,
    IDX_I16 = 0x0B,
    IDX_I32 = 0x0C,
    IDX_F32 = 0x0D,
    IDX_F64 = 0x0E,
    IDX_MAX_DIMS = 4,
    /* Below this many values a thread hand-off costs more than it saves. */
    IDX_PARALLEL_MIN = 1u << 20
};

typedef struct idx_header {
    uint8_t type;
    uint8_t ndim;
    uint32_t dims[IDX_MAX_DIMS];
    size_t esize;       /* bytes per element */
    size_t items;       /* dims[0] */
    size_t per_item;    /* product of dims[1..] (1 for ndim 1) */
    size_t header_len;  /* 4 + 4*ndim */
} idx_header;

static size_t idx_elem_size(uint8_t type)
{
    switch (type) {
    case IDX_U8:
    case IDX_I8: return 1;
    case IDX_I16: return 2;
    case IDX_I32:
    case IDX_F32: return 4;
    case IDX_F64: return 8;
    default: return 0;
    }
}

static aims_status idx_parse_header(const void *data, size_t size, const char *name,
                                    idx_header *h)
{
    aimsi_rd rd;
    aimsi_rd_init(&rd, data, size);
    uint8_t z0 = 0;
    uint8_t z1 = 0;
    if (aimsi_rd_u8(&rd, &z0) != 0 || aimsi_rd_u8(&rd, &z1) != 0 ||
        aimsi_rd_u8(&rd, &h->type) != 0 || aimsi_rd_u8(&rd, &h->ndim) != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: IDX header truncated (%zu bytes)", name, size);
    }
    if (z0 != 0 || z1 != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: bad IDX magic %02x %02x at byte 0 (expected 00 00)", name, z0, z1);
    }
    h->esize = idx_elem_size(h->type);
    if (h->esize == 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: unknown IDX element type 0x%02x at byte 2",
                         name, h->type);
    }
    if (h->ndim < 1 || h->ndim > IDX_MAX_DIMS) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: IDX ndim %u at byte 3 not in 1..%d", name,
                         (unsigned)h->ndim, IDX_MAX_DIMS);
    }
    h->per_item = 1;
    for (unsigned d = 0; d < h->ndim; d++) {
        if (aimsi_rd_u32be(&rd, &h->dims[d]) != 0) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: IDX header truncated in dimension %u", name,
                             d);
        }
        if (h->dims[d] == 0) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: IDX dimension %u is 0 (byte %u)", name, d,
                             4 + 4 * d);
        }
        if (d > 0 && aimsi_mul_ok(h->per_item, h->dims[d], &h->per_item) != 0) {
            return aimsi_err(NULL, AIMS_E_RANGE, "%s: IDX dimensions overflow", name);
        }
    }
    h->items = h->dims[0];
    h->header_len = 4 + 4 * (size_t)h->ndim;
    return AIMS_OK;
}

/* Check the declared payload against the bytes present and the caps. */
static aims_status idx_check_size(const idx_header *h, size_t size, const char *name,
                                  const aims_loadopts *opts)
{
    size_t elems = 0;
    size_t bytes = 0;
    if (aimsi_mul_ok(h->items, h->per_item, &elems) != 0 ||
        aimsi_mul_ok(elems, h->esize, &bytes) != 0 || bytes > SIZE_MAX - h->header_len) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: IDX declared size overflows", name);
    }
    const size_t expect = bytes + h->header_len;
    const uint64_t cap = (uint64_t)aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES);
    if ((uint64_t)expect > cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: IDX declares %zu bytes, above max_bytes %llu",
                         name, expect, (unsigned long long)cap);
    }
    if (size < expect) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: IDX truncated: expected %zu bytes, got %zu",
                         name, expect, size);
    }
    if (size > expect) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: IDX has %zu trailing bytes after byte %zu (expected %zu bytes)", name,
                         size - expect, expect, expect);
    }
    return AIMS_OK;
}

/* Rows actually loaded: AIMS_LOAD_MAX_ROWS (0 = all) caps the item count. */
static size_t idx_rows(const idx_header *h, const aims_loadopts *opts)
{
    const int64_t max_rows = aimsi_loadopt(opts, AIMS_LOAD_MAX_ROWS);
    if (max_rows > 0 && (uint64_t)max_rows < (uint64_t)h->items) {
        return (size_t)max_rows;
    }
    return h->items;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void convert_u8(const uint8_t *in, float *out, size_t n)
{
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
        const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        const __m128i lo = _mm_unpacklo_epi8(b, zero);
        const __m128i hi = _mm_unpackhi_epi8(b, zero);
        _mm_storeu_ps(out + i, _mm_cvtepi32_ps(_mm_unpacklo_epi16(lo, zero)));
        _mm_storeu_ps(out + i + 4, _mm_cvtepi32_ps(_mm_unpackhi_epi16(lo, zero)));
        _mm_storeu_ps(out + i + 8, _mm_cvtepi32_ps(_mm_unpacklo_epi16(hi, zero)));
        _mm_storeu_ps(out + i + 12, _mm_cvtepi32_ps(_mm_unpackhi_epi16(hi, zero)));
    }
#endif
    for (; i < n; i++) {
        out[i] = (float)in[i];
    }
}

/* Convert n big-endian elements of `type` to float. */
static void convert(uint8_t type, const uint8_t *in, float *out, size_t n)
{
    switch (type) {
    case IDX_U8: convert_u8(in, out, n); break;
    case IDX_I8:
        for (size_t i = 0; i < n; i++) {
            out[i] = (float)(int8_t)in[i];
        }
        break;
    case IDX_I16:
        for (size_t i = 0; i < n; i++) {
            const uint16_t u = (uint16_t)(((unsigned)in[2 * i] << 8) | in[2 * i + 1]);
            out[i] = (float)(int16_t)u;
        }
        break;
    case IDX_I32:
        for (size_t i = 0; i < n; i++) {
            out[i] = (float)(int32_t)be32(in + 4 * i);
        }
        break;
    case IDX_F32:
        for (size_t i = 0; i < n; i++) {
            const uint32_t u = be32(in + 4 * i);
            memcpy(&out[i], &u, sizeof u);
        }
        break;
    default: /* IDX_F64 */
        for (size_t i = 0; i < n; i++) {
            const uint64_t u = ((uint64_t)be32(in + 8 * i) << 32) | be32(in + 8 * i + 4);
            double d;
            memcpy(&d, &u, sizeof d);
            out[i] = (float)d;
        }
        break;
    }
}

typedef struct convert_job {
    uint8_t type;
    size_t esize;
    const uint8_t *in;
    float *out;
    size_t n;
    size_t chunks;
} convert_job;

static void convert_chunk(void *ctx, size_t index)
{
    const convert_job *job = ctx;
    const size_t per = (job->n + job->chunks - 1) / job->chunks;
    const size_t begin = index * per;
    if (begin >= job->n) {
        return;
    }
    const size_t end = begin + per < job->n ? begin + per : job->n;
    convert(job->type, job->in + begin * job->esize, job->out + begin, end - begin);
}

/* Convert on two threads when large; fall back to one if the pool cannot start. */
static void convert_all(uint8_t type, size_t esize, const uint8_t *in, float *out, size_t n)
{
    aimsi_pool *pool = NULL;
    if (n < IDX_PARALLEL_MIN || aimsi_cpu_count() < 2 || aimsi_pool_create(2, &pool) != AIMS_OK) {
        convert(type, in, out, n);
        return;
    }
    convert_job job = {type, esize, in, out, n, 8};
    aimsi_pool_run(pool, job.chunks, convert_chunk, &job);
    aimsi_pool_destroy(pool);
}

aims_status aimsi_load_idx_images(const void *data, size_t size, const char *name,
                                  const aims_loadopts *opts, aims_dataset **out)
{
    idx_header h;
    AIMSI_TRY(idx_parse_header(data, size, name, &h));
    AIMSI_TRY(idx_check_size(&h, size, name, opts));
    const size_t rows = idx_rows(&h, opts);
    const size_t n = rows * h.per_item; /* <= items * per_item, checked above */
    aims_dataset *ds = NULL;
    AIMSI_TRY(aimsi_dataset_new(&ds));
    ds->x = aimsi_malloc(n * sizeof *ds->x);
    if (ds->x == NULL) {
        aimsi_dataset_free(ds);
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu x %zu features", name,
                         rows, h.per_item);
    }
    ds->rows = rows;
    ds->cols = h.per_item;
    aimsi_hint_hugepages(ds->x, n * sizeof *ds->x);
    convert_all(h.type, h.esize, (const uint8_t *)data + h.header_len, ds->x, n);
    if (h.type == IDX_F32 || h.type == IDX_F64) {
        const aims_status rc = aimsi_check_finite(AIMS_E_CORRUPT, name, ds->x, rows, ds->cols, opts,
                                                   NULL);
        if (rc != AIMS_OK) {
            aimsi_dataset_free(ds);
            return rc;
        }
    }
    *out = ds;
    return AIMS_OK;
}

aims_status aimsi_load_idx_labels(const void *data, size_t size, const char *name,
                                  const aims_loadopts *opts, int32_t **out_labels, size_t *out_n)
{
    idx_header h;
    AIMSI_TRY(idx_parse_header(data, size, name, &h));
    if (h.ndim != 1) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: IDX label file has %u dimensions (expected 1)",
                         name, (unsigned)h.ndim);
    }
    if (h.type == IDX_F32 || h.type == IDX_F64) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "%s: IDX label file holds floats (type 0x%02x); labels must be integers",
                         name, h.type);
    }
    AIMSI_TRY(idx_check_size(&h, size, name, opts));
    const size_t rows = idx_rows(&h, opts);
    const uint8_t *p = (const uint8_t *)data + h.header_len;
    int32_t *labels = aimsi_malloc(rows * sizeof *labels);
    if (labels == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu labels", name, rows);
    }
    for (size_t i = 0; i < rows; i++) {
        int32_t v = 0;
        switch (h.type) {
        case IDX_U8: v = p[i]; break;
        case IDX_I8: v = (int8_t)p[i]; break;
        case IDX_I16: v = (int16_t)(uint16_t)(((unsigned)p[2 * i] << 8) | p[2 * i + 1]); break;
        default: v = (int32_t)be32(p + 4 * i); break;
        }
        if (v < 0) {
            aimsi_free(labels);
            return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: negative label %ld at item %zu (byte %zu)",
                             name, (long)v, i, h.header_len + i * h.esize);
        }
        labels[i] = v;
    }
    *out_labels = labels;
    *out_n = rows;
    return AIMS_OK;
}
