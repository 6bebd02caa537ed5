/*
 * dataset_load.c -- the loaders' public front door: aims_dataset_parse,
 * aims_dataset_load_file and aims_dataset_load_idx.
 *
 * How. The entry points check their arguments once, recognise gzip input,
 * and dispatch by format to the loaders (load_csv.c, load_idx.c,
 * load_svmlight.c, load_text.c, the .aims reader in dataset_file.c); every
 * loader then sees plain bytes and a name for its messages.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_data.h"

/* ---- public loader entry points ------------------------------------------------------ */

static int is_gzip(const void *data, size_t size)
{
    const unsigned char *p = data;
    return size >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

/* Shared front half of parse and load_file: checks, then dispatch by format. */
static aims_status dispatch(aims_format format, const void *data, size_t size, const char *name,
                            const aims_loadopts *opts, aims_dataset **out)
{
    const uint64_t cap = (uint64_t)aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES);
    if (size == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: empty input", name);
    }
    if ((uint64_t)size > cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %zu bytes exceed max_bytes %llu", name, size,
                         (unsigned long long)cap);
    }
    if (is_gzip(data, size)) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "%s: gzip-compressed: decompress first (gzip -dc)", name);
    }
    switch (format) {
    case AIMS_FORMAT_IDX: return aimsi_load_idx_images(data, size, name, opts, out);
    case AIMS_FORMAT_CSV: return aimsi_load_csv(data, size, name, opts, out);
    case AIMS_FORMAT_SVMLIGHT: return aimsi_load_svmlight(data, size, name, opts, out);
    case AIMS_FORMAT_TEXT: return aimsi_load_text(data, size, name, opts, out);
    case AIMS_FORMAT_AIMS: return aimsi_load_aims(data, size, name, opts, out);
    }
    return aimsi_err(NULL, AIMS_E_INVAL, "%s: unknown format %d", name, (int)format);
}

static aims_status check_load_args(aims_format format, const aims_loadopts *opts,
                                   aims_dataset **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    if (opts != NULL && !aimsi_obj_ok(opts, AIMSI_MAGIC_LOADOPTS)) {
        return AIMSI_MISUSE("opts is not a valid aims_loadopts handle");
    }
    if (format < AIMS_FORMAT_IDX || format > AIMS_FORMAT_AIMS) {
        return aimsi_err(NULL, AIMS_E_INVAL, "unknown dataset format %d", (int)format);
    }
    return AIMS_OK;
}

aims_status aims_dataset_parse(aims_format format, const void *data, size_t size,
                               const aims_loadopts *opts, aims_dataset **out)
{
    AIMSI_TRY(check_load_args(format, opts, out));
    if (data == NULL && size != 0) {
        return AIMSI_MISUSE("data is NULL");
    }
    return dispatch(format, data, size, "<memory>", opts, out);
}

aims_status aims_dataset_load_file(aims_format format, const char *path,
                                   const aims_loadopts *opts, aims_dataset **out)
{
    AIMSI_TRY(check_load_args(format, opts, out));
    if (path == NULL) {
        return AIMSI_MISUSE("path is NULL");
    }
    void *data = NULL;
    size_t len = 0;
    AIMSI_TRY(aimsi_file_read(path, (uint64_t)aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES), &data,
                              &len));
    const aims_status rc = dispatch(format, data, len, path, opts, out);
    aimsi_free(data);
    return rc;
}

/* First dimension of an IDX header (already validated by its loader). */
static uint64_t idx_count(const void *data, size_t size)
{
    aimsi_rd rd;
    uint32_t magic = 0;
    uint32_t n = 0;
    aimsi_rd_init(&rd, data, size);
    if (aimsi_rd_u32be(&rd, &magic) != 0 || aimsi_rd_u32be(&rd, &n) != 0) {
        return 0;
    }
    return n;
}

/* Load the label file and attach it to ds (whose image file declared n_images). */
static aims_status attach_idx_labels(aims_dataset *ds, uint64_t n_images, const char *labels_path,
                                     const aims_loadopts *opts)
{
    void *data = NULL;
    size_t len = 0;
    AIMSI_TRY(aimsi_file_read(labels_path, (uint64_t)aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES),
                              &data, &len));
    if (is_gzip(data, len)) {
        aimsi_free(data);
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "%s: gzip-compressed: decompress first (gzip -dc)", labels_path);
    }
    int32_t *labels = NULL;
    size_t n = 0;
    aims_status rc = aimsi_load_idx_labels(data, len, labels_path, opts, &labels, &n);
    const uint64_t n_labels = idx_count(data, len);
    aimsi_free(data);
    AIMSI_TRY(rc);
    if (n_labels != n_images || n != ds->rows) {
        aimsi_free(labels);
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: %llu labels for %llu images", labels_path,
                         (unsigned long long)n_labels, (unsigned long long)n_images);
    }
    size_t classes = 0;
    rc = aimsi_dataset_scan_labels(labels, n, &classes);
    if (rc != AIMS_OK) {
        aimsi_free(labels);
        return aimsi_err(NULL, AIMS_E_CORRUPT, "%s: negative label", labels_path);
    }
    ds->labels = labels;
    ds->num_classes = classes;
    return AIMS_OK;
}

aims_status aims_dataset_load_idx(const char *images_path, const char *labels_path,
                                  const aims_loadopts *opts, aims_dataset **out)
{
    AIMSI_TRY(check_load_args(AIMS_FORMAT_IDX, opts, out));
    if (images_path == NULL) {
        return AIMSI_MISUSE("images_path is NULL");
    }
    void *data = NULL;
    size_t len = 0;
    AIMSI_TRY(aimsi_file_read(images_path, (uint64_t)aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES),
                              &data, &len));
    aims_dataset *ds = NULL;
    aims_status rc = dispatch(AIMS_FORMAT_IDX, data, len, images_path, opts, &ds);
    const uint64_t n_images = idx_count(data, len);
    aimsi_free(data);
    AIMSI_TRY(rc);
    if (labels_path != NULL) {
        rc = attach_idx_labels(ds, n_images, labels_path, opts);
        if (rc != AIMS_OK) {
            aimsi_dataset_free(ds);
            return rc;
        }
    }
    *out = ds;
    return AIMS_OK;
}
