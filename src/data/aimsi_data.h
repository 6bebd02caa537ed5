/*
 * aimsi_data.h -- the dataset object's layout, shared by the files of src/data.
 *
 * Ownership: a root dataset owns every array below (allocated with aimsi_malloc).
 * A view (root != NULL) points into its root's arrays and owns nothing but
 * itself; it holds one reference on the root. The root's memory is released
 * when its own handle and all views are destroyed (refs reaches 0).
 *
 * Invariants (checked by aimsi_dataset_check in debug builds):
 *   x            rows*cols floats or NULL (cols == 0)
 *   tok_off      rows+1 entries, non-decreasing; ids/weights index range
 *                [tok_off[0], tok_off[rows]); every id < tok_dim
 *   txt_off      rows+1 entries into txt (bytes, not NUL-terminated)
 *   labels       rows int32 in [0, num_classes) or NULL
 *   targets      rows floats or NULL
 *   class_names  num_names strings (num_names == num_classes when present) or NULL
 */
#ifndef AIMSI_DATA_H
#define AIMSI_DATA_H

#include <stdatomic.h>

#include "../codec/aimsi_codec.h"
#include "../core/aimsi_core.h"
#include "aims/aims_dataset.h"
#include "aims/aims_pipeline.h"

struct aims_dataset {
    aimsi_obj obj;
    size_t rows;

    size_t cols;
    float *x;

    uint64_t *tok_off;
    uint32_t *tok_ids;
    float *tok_w;
    size_t tok_dim;

    uint64_t *txt_off;
    char *txt;

    int32_t *labels;
    float *targets;
    size_t num_classes;
    char **class_names;
    size_t num_names;

    struct aims_dataset *root; /* NULL for a root dataset */
    atomic_long refs;          /* root only: 1 + number of live views */
    /* 1 once x is known finite: checked when built (create_dense) or by a
     * trainer's begin; datasets are immutable (a shuffle only reorders rows),
     * so later begins skip the scan */
    atomic_int x_finite;
};

/* Option values after defaults are applied; loaders read from this. */
struct aims_loadopts {
    aimsi_obj obj;
    int64_t v[16]; /* indexed by param - AIMS_LOAD_DELIMITER */
};

/* Read a loader option (opts may be NULL: the default). */
int64_t aimsi_loadopt(const aims_loadopts *opts, aims_param param);

/* A new, empty root dataset with refs = 1. */
aims_status aimsi_dataset_new(aims_dataset **out);
/* Release a dataset's arrays (root) -- used on loader error paths too. */
void aimsi_dataset_free(aims_dataset *ds);
/* Copy class names (n strings) into ds; ds->num_names = n. */
aims_status aimsi_dataset_set_names(aims_dataset *ds, const char *const *names, size_t n);
/* Copy labels/targets/class names of rows [0, src->rows) from src into dst
 * (dst->rows must equal src->rows). */
aims_status aimsi_dataset_copy_labels(aims_dataset *dst, const aims_dataset *src);
/* Debug check of the invariants above; returns AIMS_OK or AIMS_E_INTERNAL. */
aims_status aimsi_dataset_check(const aims_dataset *ds);

/* Loaders over memory (the public parse/load functions dispatch here).
 * `name` is the file name used in messages ("<memory>" for parse). */
aims_status aimsi_load_idx_images(const void *data, size_t size, const char *name,
                                  const aims_loadopts *opts, aims_dataset **out);
aims_status aimsi_load_idx_labels(const void *data, size_t size, const char *name,
                                  const aims_loadopts *opts, int32_t **out_labels,
                                  size_t *out_n);
aims_status aimsi_load_csv(const void *data, size_t size, const char *name,
                           const aims_loadopts *opts, aims_dataset **out);
aims_status aimsi_load_svmlight(const void *data, size_t size, const char *name,
                                const aims_loadopts *opts, aims_dataset **out);
aims_status aimsi_load_text(const void *data, size_t size, const char *name,
                            const aims_loadopts *opts, aims_dataset **out);
aims_status aimsi_load_aims(const void *data, size_t size, const char *name,
                            const aims_loadopts *opts, aims_dataset **out);

/* Fast decimal float parser used by the CSV and svmlight loaders: parses
 * [p, end) fully; returns 0 on success, -1 when the field is not a number. */
int aimsi_parse_float(const char *p, const char *end, float *out);

/* `code` naming "<where>: row R, column C" (1-based) of the first value of the
 * rows x cols matrix x that is NaN or inf, unless opts allows them
 * (AIMS_LOAD_NONFINITE = 1; opts may be NULL: the default, refuse). `hint`
 * (NULL: the allow_nonfinite advice) ends the message. */
aims_status aimsi_check_finite(aims_status code, const char *where, const float *x, size_t rows,
                               size_t cols, const aims_loadopts *opts, const char *hint);

/* Printable, escaped copy of at most 24 bytes of [b, e) (with "..." when cut)
 * for error messages: loaders quote the offending field without ever printing
 * raw control bytes or invalid UTF-8. cap >= AIMSI_EXCERPT_CAP is enough. */
#define AIMSI_EXCERPT_CAP 112
void aimsi_excerpt(const char *b, const char *e, char *buf, size_t cap);

/* Validate labels (>= 0) and return max + 1 in *out_classes (dataset.c). */
aims_status aimsi_dataset_scan_labels(const int32_t *labels, size_t rows, size_t *out_classes);

/* Serialise a pipeline into / out of a container (used by bundles later). */
aims_status aimsi_pipeline_write(const aims_pipeline *p, aimsi_cwriter *w);
aims_status aimsi_pipeline_read(aimsi_creader *r, aims_pipeline **out);

#endif /* AIMSI_DATA_H */
