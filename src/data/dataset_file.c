/*
 * dataset_file.c -- the .aims dataset file: aims_dataset_save and the reader
 * behind aimsi_load_aims.
 *
 * Persistence. aims_dataset_save() writes a container of kind
 * AIMSI_KIND_DATASET: META (sizes and which parts exist) followed by one
 * section per array, all little-endian. The reader trusts nothing: every
 * section must have exactly the size META implies, offsets must start at 0, be
 * monotone and end at the array length, ids must be < tok_dim and labels <
 * num_classes, otherwise AIMS_E_CORRUPT with a message naming the section.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_data.h"

#define DS_OK(ds) aimsi_obj_ok((ds), AIMSI_MAGIC_DATASET)

/* ---- persistence ------------------------------------------------------------------------ */

enum {
    META_VERSION = 1,
    META_BYTES = 64,
    PART_DENSE = 1u << 0,
    PART_TOKENS = 1u << 1,
    PART_WEIGHTS = 1u << 2,
    PART_TEXT = 1u << 3,
    PART_LABELS = 1u << 4,
    PART_TARGETS = 1u << 5,
    PART_NAMES = 1u << 6,
    PART_KNOWN = (1u << 7) - 1
};

#define TAG_META AIMSI_TAG('M', 'E', 'T', 'A')
#define TAG_DENS AIMSI_TAG('D', 'E', 'N', 'S')
#define TAG_TOFF AIMSI_TAG('T', 'O', 'F', 'F')
#define TAG_TIDS AIMSI_TAG('T', 'I', 'D', 'S')
#define TAG_TWGT AIMSI_TAG('T', 'W', 'G', 'T')
#define TAG_XOFF AIMSI_TAG('X', 'O', 'F', 'F')
#define TAG_TEXT AIMSI_TAG('T', 'E', 'X', 'T')
#define TAG_LABL AIMSI_TAG('L', 'A', 'B', 'L')
#define TAG_TARG AIMSI_TAG('T', 'A', 'R', 'G')
#define TAG_NAME AIMSI_TAG('N', 'A', 'M', 'E')

/* Add an array of 4-byte words as a little-endian section (codec byte order). */
static aims_status add_words32(aimsi_cwriter *w, uint32_t tag, const void *data, size_t n)
{
    return aimsi_cw_add_words(w, tag, data, n, 4);
}

/* Add rows+1 offsets rebased to start at 0 (views start elsewhere). */
static aims_status add_offsets(aimsi_cwriter *w, uint32_t tag, const uint64_t *off, size_t rows)
{
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = aimsi_buf_reserve(&b, (rows + 1) * 8);
    for (size_t i = 0; rc == AIMS_OK && i <= rows; i++) {
        rc = aimsi_buf_put_u64le(&b, off[i] - off[0]);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, tag, b.data, b.len);
    }
    aimsi_buf_free(&b);
    return rc;
}

static aims_status add_meta(aimsi_cwriter *w, const aims_dataset *ds, uint32_t flags)
{
    const uint64_t nnz = ds->tok_off != NULL ? ds->tok_off[ds->rows] - ds->tok_off[0] : 0;
    const uint64_t tlen = ds->txt_off != NULL ? ds->txt_off[ds->rows] - ds->txt_off[0] : 0;
    const uint64_t names = ds->class_names != NULL ? ds->num_names : 0;
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = aimsi_buf_put_u32le(&b, META_VERSION);
    const uint64_t fields[] = {ds->rows, ds->cols, ds->tok_dim, ds->num_classes, names, nnz, tlen};
    if (rc == AIMS_OK) {
        rc = aimsi_buf_put_u32le(&b, flags);
    }
    for (size_t i = 0; rc == AIMS_OK && i < sizeof fields / sizeof fields[0]; i++) {
        rc = aimsi_buf_put_u64le(&b, fields[i]);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_META, b.data, b.len);
    }
    aimsi_buf_free(&b);
    return rc;
}

static aims_status add_names(aimsi_cwriter *w, const aims_dataset *ds)
{
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = AIMS_OK;
    for (size_t i = 0; rc == AIMS_OK && i < ds->num_names; i++) {
        const size_t len = strlen(ds->class_names[i]);
        rc = aimsi_buf_put_u32le(&b, (uint32_t)len);
        if (rc == AIMS_OK) {
            rc = aimsi_buf_append(&b, ds->class_names[i], len);
        }
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_NAME, b.data, b.len);
    }
    aimsi_buf_free(&b);
    return rc;
}

static uint32_t part_flags(const aims_dataset *ds)
{
    uint32_t f = 0;
    f |= ds->x != NULL ? PART_DENSE : 0u;
    f |= ds->tok_off != NULL ? PART_TOKENS : 0u;
    f |= (ds->tok_off != NULL && ds->tok_w != NULL) ? PART_WEIGHTS : 0u;
    f |= ds->txt_off != NULL ? PART_TEXT : 0u;
    f |= ds->labels != NULL ? PART_LABELS : 0u;
    f |= ds->targets != NULL ? PART_TARGETS : 0u;
    f |= ds->class_names != NULL ? PART_NAMES : 0u;
    return f;
}

static aims_status write_sections(aimsi_cwriter *w, const aims_dataset *ds)
{
    const uint32_t flags = part_flags(ds);
    AIMSI_TRY(add_meta(w, ds, flags));
    if (flags & PART_DENSE) {
        AIMSI_TRY(add_words32(w, TAG_DENS, ds->x, ds->rows * ds->cols));
    }
    if (flags & PART_TOKENS) {
        const uint64_t b = ds->tok_off[0];
        const size_t nnz = (size_t)(ds->tok_off[ds->rows] - b);
        AIMSI_TRY(add_offsets(w, TAG_TOFF, ds->tok_off, ds->rows));
        AIMSI_TRY(add_words32(w, TAG_TIDS, ds->tok_ids + b, nnz));
        if (flags & PART_WEIGHTS) {
            AIMSI_TRY(add_words32(w, TAG_TWGT, ds->tok_w + b, nnz));
        }
    }
    if (flags & PART_TEXT) {
        const uint64_t b = ds->txt_off[0];
        AIMSI_TRY(add_offsets(w, TAG_XOFF, ds->txt_off, ds->rows));
        AIMSI_TRY(aimsi_cw_add(w, TAG_TEXT, ds->txt + b, (size_t)(ds->txt_off[ds->rows] - b)));
    }
    if (flags & PART_LABELS) {
        AIMSI_TRY(add_words32(w, TAG_LABL, ds->labels, ds->rows));
    }
    if (flags & PART_TARGETS) {
        AIMSI_TRY(add_words32(w, TAG_TARG, ds->targets, ds->rows));
    }
    if (flags & PART_NAMES) {
        AIMSI_TRY(add_names(w, ds));
    }
    return AIMS_OK;
}

static aims_status fill_dataset(const void *ds, aimsi_cwriter *w)
{
    return write_sections(w, ds);
}

aims_status aims_dataset_save(const aims_dataset *ds, const char *path)
{
    if (!DS_OK(ds)) {
        return AIMSI_MISUSE("ds is not a valid aims_dataset handle");
    }
    if (path == NULL) {
        return AIMSI_MISUSE("path is NULL");
    }
    return aimsi_container_save(AIMSI_KIND_DATASET, 0, ds, fill_dataset, path);
}

/* ---- loading a saved dataset --------------------------------------------------------- */

typedef struct ds_meta {
    uint32_t flags;
    uint64_t rows, cols, tok_dim, num_classes, num_names, nnz, tlen;
} ds_meta;

/* Read one section that must decode to exactly `expect` bytes. */
static aims_status read_exact(aimsi_creader *r, const char *name, uint32_t tag, const char *tname,
                              uint64_t expect, uint64_t cap, void **out)
{
    if (expect > cap || expect > SIZE_MAX) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: section %s needs %llu bytes, above the cap %llu",
                         name, tname, (unsigned long long)expect, (unsigned long long)cap);
    }
    void *data = NULL;
    size_t len = 0;
    aims_status rc = aimsi_cr_section(r, tag, (size_t)expect, &data, &len);
    if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section %s %s (META implies %llu bytes)", name,
                         tname, rc == AIMS_E_NOTFOUND ? "is missing" : "is larger than",
                         (unsigned long long)expect);
    }
    AIMSI_TRY(rc);
    if (len != expect) {
        aimsi_free(data);
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section %s holds %zu bytes, META implies %llu",
                         name, tname, len, (unsigned long long)expect);
    }
    if (data == NULL) {
        /* Empty arrays still get a pointer so accessors never add to NULL. */
        data = aimsi_malloc(1);
        if (data == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory", name);
        }
    }
    *out = data;
    return AIMS_OK;
}

/* A section of n little-endian words of `width` bytes, in host order. */
static aims_status read_words(aimsi_creader *r, const char *name, uint32_t tag, const char *tname,
                              uint64_t n, size_t width, uint64_t cap, void **out)
{
    AIMSI_TRY(read_exact(r, name, tag, tname, n * width, cap, out)); /* callers cap n */
    aimsi_le_words(*out, (size_t)n, width);
    return AIMS_OK;
}


static aims_status read_meta(aimsi_creader *r, const char *name, ds_meta *m)
{
    void *data = NULL;
    size_t len = 0;
    aims_status rc = aimsi_cr_section(r, TAG_META, 4096, &data, &len);
    if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: META section missing or oversized", name);
    }
    AIMSI_TRY(rc);
    aimsi_rd rd;
    aimsi_rd_init(&rd, data, len);
    uint32_t version = 0;
    uint64_t *fields[] = {&m->rows, &m->cols, &m->tok_dim, &m->num_classes,
                          &m->num_names, &m->nnz, &m->tlen};
    int bad = aimsi_rd_u32le(&rd, &version) != 0 || aimsi_rd_u32le(&rd, &m->flags) != 0;
    for (size_t i = 0; !bad && i < sizeof fields / sizeof fields[0]; i++) {
        bad = aimsi_rd_u64le(&rd, fields[i]) != 0;
    }
    aimsi_free(data);
    if (bad) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: META section truncated (%zu bytes)", name, len);
    }
    if (version != META_VERSION || (m->flags & ~(uint32_t)PART_KNOWN) != 0) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "%s: dataset META version %u flags 0x%x not supported", name,
                         (unsigned)version, (unsigned)m->flags);
    }
    return AIMS_OK;
}

/* Cross-field checks on META alone (before any array is read). */
static aims_status check_meta(const ds_meta *m, const char *name)
{
    const uint32_t f = m->flags;
    const char *why = NULL;
    if (m->rows == 0 || m->rows >= SIZE_MAX / 8) {
        why = "row count is 0 or too large";
    } else if ((f & (PART_DENSE | PART_TOKENS | PART_TEXT | PART_LABELS | PART_TARGETS)) == 0) {
        why = "no row data";
    } else if (((f & PART_DENSE) != 0) != (m->cols != 0)) {
        why = "cols disagrees with the dense flag";
    } else if ((f & PART_WEIGHTS) != 0 && (f & PART_TOKENS) == 0) {
        why = "weights without tokens";
    } else if ((f & PART_TOKENS) == 0 && (m->nnz != 0 || m->tok_dim != 0)) {
        why = "token sizes without tokens";
    } else if ((f & PART_TOKENS) != 0 && m->tok_dim > (uint64_t)UINT32_MAX + 1) {
        why = "tok_dim beyond 32-bit ids";
    } else if ((f & PART_TEXT) == 0 && m->tlen != 0) {
        why = "text length without text";
    } else if ((f & PART_LABELS) != 0 &&
               (m->num_classes == 0 || m->num_classes > (uint64_t)INT32_MAX + 1)) {
        why = "labels without a valid class count";
    } else if ((f & PART_NAMES) != 0 && (m->num_names != m->num_classes || m->num_names == 0)) {
        why = "class name count differs from the class count";
    } else if ((f & PART_NAMES) == 0 && m->num_names != 0) {
        why = "name count without names";
    } else if ((f & (PART_LABELS | PART_NAMES)) == 0 && m->num_classes != 0) {
        why = "class count without labels";
    }
    if (why != NULL) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: dataset META invalid: %s", name, why);
    }
    return AIMS_OK;
}

/* Read a section of rows+1 offsets and check them: first 0, non-decreasing,
 * last == limit. */
static aims_status read_offsets(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                                uint32_t tag, const char *tname, uint64_t limit, uint64_t **out)
{
    const size_t rows = (size_t)m->rows;
    AIMSI_TRY(read_words(r, name, tag, tname, m->rows + 1, 8, cap, (void **)out));
    const uint64_t *off = *out;
    if (off[0] != 0) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section %s: first offset is not 0", name,
                         tname);
    }
    for (size_t i = 0; i < rows; i++) {
        if (off[i + 1] < off[i]) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section %s: offset %zu decreases", name,
                             tname, i + 1);
        }
    }
    if (off[rows] != limit) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section %s: last offset %llu != length %llu",
                         name, tname, (unsigned long long)off[rows], (unsigned long long)limit);
    }
    return AIMS_OK;
}

static aims_status read_tokens(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                               aims_dataset *ds)
{
    AIMSI_TRY(read_offsets(r, m, cap, name, TAG_TOFF, "TOFF", m->nnz, &ds->tok_off));
    if (m->nnz > cap / 4) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %llu tokens exceed the size cap", name,
                         (unsigned long long)m->nnz);
    }
    AIMSI_TRY(read_words(r, name, TAG_TIDS, "TIDS", m->nnz, 4, cap, (void **)&ds->tok_ids));
    for (uint64_t j = 0; j < m->nnz; j++) {
        if (ds->tok_ids[j] >= m->tok_dim) {
            return aimsi_err(NULL, AIMS_E_CORRUPT,
                             "%s: section TIDS: id %u at %llu >= tok_dim %llu",
                             name, (unsigned)ds->tok_ids[j], (unsigned long long)j,
                             (unsigned long long)m->tok_dim);
        }
    }
    if (m->flags & PART_WEIGHTS) {
        AIMSI_TRY(read_words(r, name, TAG_TWGT, "TWGT", m->nnz, 4, cap, (void **)&ds->tok_w));
    }
    ds->tok_dim = (size_t)m->tok_dim;
    return AIMS_OK;
}

static aims_status read_text(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                             aims_dataset *ds)
{
    AIMSI_TRY(read_offsets(r, m, cap, name, TAG_XOFF, "XOFF", m->tlen, &ds->txt_off));
    return read_exact(r, name, TAG_TEXT, "TEXT", m->tlen, cap, (void **)&ds->txt);
}

static aims_status read_labels(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                               aims_dataset *ds)
{
    const size_t rows = (size_t)m->rows;
    if (m->flags & PART_LABELS) {
        AIMSI_TRY(read_words(r, name, TAG_LABL, "LABL", m->rows, 4, cap, (void **)&ds->labels));
        for (size_t i = 0; i < rows; i++) {
            if (ds->labels[i] < 0 || (uint64_t)ds->labels[i] >= m->num_classes) {
                return aimsi_err(NULL, AIMS_E_CORRUPT,
                                 "%s: section LABL: label %ld at row %zu not in [0, %llu)", name,
                                 (long)ds->labels[i], i, (unsigned long long)m->num_classes);
            }
        }
    }
    if (m->flags & PART_TARGETS) {
        AIMSI_TRY(read_words(r, name, TAG_TARG, "TARG", m->rows, 4, cap, (void **)&ds->targets));
    }
    ds->num_classes = (size_t)m->num_classes;
    return AIMS_OK;
}

static aims_status read_names(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                              aims_dataset *ds)
{
    void *data = NULL;
    size_t len = 0;
    const size_t max = cap > SIZE_MAX ? SIZE_MAX : (size_t)cap;
    aims_status rc = aimsi_cr_section(r, TAG_NAME, max, &data, &len);
    if (rc == AIMS_E_NOTFOUND) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section NAME is missing", name);
    }
    AIMSI_TRY(rc);
    /* Every name takes at least its 4-byte length: caps the count by the bytes. */
    if (m->num_names > len / 4) {
        aimsi_free(data);
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section NAME too short for %llu names", name,
                         (unsigned long long)m->num_names);
    }
    const size_t n = (size_t)m->num_names;
    ds->class_names = aimsi_calloc(n, sizeof *ds->class_names);
    if (ds->class_names == NULL) {
        aimsi_free(data);
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for class names", name);
    }
    ds->num_names = n;
    aimsi_rd rd;
    aimsi_rd_init(&rd, data, len);
    for (size_t i = 0; rc == AIMS_OK && i < n; i++) {
        uint32_t sl = 0;
        const uint8_t *s = NULL;
        if (aimsi_rd_u32le(&rd, &sl) != 0 || aimsi_rd_bytes(&rd, sl, &s) != 0 ||
            memchr(s, 0, sl) != NULL) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section NAME: name %zu truncated or has NUL",
                           name, i);
            break;
        }
        ds->class_names[i] = aimsi_strndup((const char *)s, sl);
        if (ds->class_names[i] == NULL) {
            rc = aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for class names", name);
        }
    }
    if (rc == AIMS_OK && aimsi_rd_left(&rd) != 0) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "%s: section NAME: %zu trailing bytes", name,
                       aimsi_rd_left(&rd));
    }
    aimsi_free(data);
    return rc;
}

static aims_status read_parts(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                              aims_dataset *ds)
{
    if (m->flags & PART_DENSE) {
        uint64_t cells = 0;
        if (m->cols > cap / 4 || m->rows > (cap / 4) / m->cols) {
            return aimsi_err(NULL, AIMS_E_RANGE, "%s: %llu x %llu features exceed the size cap",
                             name, (unsigned long long)m->rows, (unsigned long long)m->cols);
        }
        cells = m->rows * m->cols;
        AIMSI_TRY(read_words(r, name, TAG_DENS, "DENS", cells, 4, cap, (void **)&ds->x));
        ds->cols = (size_t)m->cols;
    }
    if (m->rows + 1 > cap / 8 && (m->flags & (PART_TOKENS | PART_TEXT)) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %llu rows exceed the size cap", name,
                         (unsigned long long)m->rows);
    }
    if (m->flags & PART_TOKENS) {
        AIMSI_TRY(read_tokens(r, m, cap, name, ds));
    }
    if (m->flags & PART_TEXT) {
        AIMSI_TRY(read_text(r, m, cap, name, ds));
    }
    if (m->rows > cap / 4 && (m->flags & (PART_LABELS | PART_TARGETS)) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %llu rows exceed the size cap", name,
                         (unsigned long long)m->rows);
    }
    AIMSI_TRY(read_labels(r, m, cap, name, ds));
    if (m->flags & PART_NAMES) {
        AIMSI_TRY(read_names(r, m, cap, name, ds));
    }
    return AIMS_OK;
}

aims_status aimsi_load_aims(const void *data, size_t size, const char *name,
                            const aims_loadopts *opts, aims_dataset **out)
{
    const uint64_t cap = (uint64_t)aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES);
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_mem(data, size, 0, AIMSI_KIND_DATASET, &r));
    ds_meta m;
    memset(&m, 0, sizeof m);
    aims_status rc = read_meta(r, name, &m);
    if (rc == AIMS_OK) {
        rc = check_meta(&m, name);
    }
    aims_dataset *ds = NULL;
    if (rc == AIMS_OK) {
        rc = aimsi_dataset_new(&ds);
    }
    if (rc == AIMS_OK) {
        ds->rows = (size_t)m.rows;
        rc = read_parts(r, &m, cap, name, ds);
    }
    aimsi_cr_destroy(r);
    if (rc != AIMS_OK) {
        aimsi_dataset_free(ds);
        return rc;
    }
    *out = ds;
    return AIMS_OK;
}
