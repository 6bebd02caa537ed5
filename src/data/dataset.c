/*
 * dataset.c -- the aims_dataset object: life cycle, building from host memory
 * and accessors. Reordering lives in dataset_subset.c, the .aims file format in
 * dataset_file.c, the loaders' public entry points in dataset_load.c.
 *
 * Memory. A root dataset owns its arrays (dense features, CSR tokens, text
 * bytes + offsets, labels, targets, class names). A view is a small struct whose
 * pointers aim into its root's arrays, already advanced to the view's first row,
 * so every accessor works the same on roots and views. Token and text offsets
 * are absolute indexes into the root's ids/bytes: a view shares the root's ids
 * and bytes pointers and only advances the offset arrays (that is why
 * aims_dataset_tokens() says offsets[0] may be non-zero).
 *
 * Reference counting. The root carries `refs` = 1 (its own handle) + live
 * views; a view of a view references the ultimate root, so the chain is never
 * longer than one. Destroying a handle kills its magic at once (a stale pointer
 * is then misuse, not a use-after-free in our code) and drops one reference;
 * whoever drops the last reference frees the arrays. Handles may therefore be
 * destroyed in any order, from any thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_data.h"

#define DS_OK(ds) aimsi_obj_ok((ds), AIMSI_MAGIC_DATASET)

/* ---- life cycle ---------------------------------------------------------------- */

aims_status aimsi_dataset_new(aims_dataset **out)
{
    aims_dataset *ds = aimsi_calloc(1, sizeof *ds);
    if (ds == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory");
    }
    aimsi_obj_init(&ds->obj, AIMSI_MAGIC_DATASET);
    atomic_init(&ds->refs, 1);
    atomic_init(&ds->x_finite, 0);
    *out = ds;
    return AIMS_OK;
}

static void free_names(char **names, size_t n)
{
    if (names == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        aimsi_free(names[i]);
    }
    aimsi_free(names);
}

/* Release the arrays a root owns (not the struct). */
static void free_arrays(aims_dataset *ds)
{
    aimsi_free(ds->x);
    aimsi_free(ds->tok_off);
    aimsi_free(ds->tok_ids);
    aimsi_free(ds->tok_w);
    aimsi_free(ds->txt_off);
    aimsi_free(ds->txt);
    aimsi_free(ds->labels);
    aimsi_free(ds->targets);
    free_names(ds->class_names, ds->num_names);
}

/* Drop one reference on a root; the last one frees it. */
static void release_root(aims_dataset *root)
{
    if (atomic_fetch_sub(&root->refs, 1) == 1) {
        free_arrays(root);
        aimsi_free(root);
    }
}

/* Kill a handle. A view frees itself and drops its reference on the root
 * (returns 1); a root is left for the caller to free (returns 0). */
static int drop_view(aims_dataset *ds)
{
    aimsi_obj_kill(&ds->obj);
    if (ds->root == NULL) {
        return 0;
    }
    aims_dataset *root = ds->root;
    aimsi_free(ds);
    release_root(root);
    return 1;
}

void aimsi_dataset_free(aims_dataset *ds)
{
    if (ds != NULL && !drop_view(ds)) {
        free_arrays(ds);
        aimsi_free(ds);
    }
}

void aims_dataset_destroy(aims_dataset *ds)
{
    if (DS_OK(ds) && !drop_view(ds)) {
        release_root(ds);
    }
}

aims_status aimsi_dataset_set_names(aims_dataset *ds, const char *const *names, size_t n)
{
    char **copy = NULL;
    if (n > 0) {
        copy = aimsi_calloc(n, sizeof *copy);
        if (copy == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for %zu class names", n);
        }
        for (size_t i = 0; i < n; i++) {
            copy[i] = aimsi_strdup(names[i] != NULL ? names[i] : "");
            if (copy[i] == NULL) {
                free_names(copy, n);
                return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for class names");
            }
        }
    }
    free_names(ds->class_names, ds->num_names);
    ds->class_names = copy;
    ds->num_names = n;
    /* Names define the classes (invariant num_names == num_classes). */
    if (n > 0) {
        ds->num_classes = n;
    }
    return AIMS_OK;
}

aims_status aimsi_dataset_copy_labels(aims_dataset *dst, const aims_dataset *src)
{
    if (dst->rows != src->rows) {
        return aimsi_err(NULL, AIMS_E_INTERNAL, "dataset: copy_labels with %zu vs %zu rows",
                         dst->rows, src->rows);
    }
    int32_t *labels = NULL;
    float *targets = NULL;
    if (src->labels != NULL) {
        labels = aimsi_malloc(src->rows * sizeof *labels);
        if (labels == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for labels");
        }
        memcpy(labels, src->labels, src->rows * sizeof *labels);
    }
    if (src->targets != NULL) {
        targets = aimsi_malloc(src->rows * sizeof *targets);
        if (targets == NULL) {
            aimsi_free(labels);
            return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for targets");
        }
        memcpy(targets, src->targets, src->rows * sizeof *targets);
    }
    const aims_status rc = aimsi_dataset_set_names(
        dst, (const char *const *)src->class_names, src->class_names != NULL ? src->num_names : 0);
    if (rc != AIMS_OK) {
        aimsi_free(labels);
        aimsi_free(targets);
        return rc;
    }
    aimsi_free(dst->labels);
    aimsi_free(dst->targets);
    dst->labels = labels;
    dst->targets = targets;
    dst->num_classes = src->num_classes;
    return AIMS_OK;
}

static aims_status check_offsets(const uint64_t *off, size_t rows, uint64_t limit,
                                 const char *what)
{
    for (size_t i = 0; i < rows; i++) {
        if (off[i] > off[i + 1]) {
            return aimsi_err(NULL, AIMS_E_INTERNAL, "dataset: %s offsets decrease at row %zu",
                             what, i);
        }
    }
    if (off[rows] > limit) {
        return aimsi_err(NULL, AIMS_E_INTERNAL, "dataset: %s offsets exceed the data", what);
    }
    return AIMS_OK;
}

aims_status aimsi_dataset_check(const aims_dataset *ds)
{
    if (!DS_OK(ds) || ds->rows == 0) {
        return aimsi_err(NULL, AIMS_E_INTERNAL, "dataset: invalid handle or zero rows");
    }
    if ((ds->x == NULL) != (ds->cols == 0)) {
        return aimsi_err(NULL, AIMS_E_INTERNAL, "dataset: dense part and cols disagree");
    }
    if (ds->tok_off != NULL) {
        AIMSI_TRY(check_offsets(ds->tok_off, ds->rows, UINT64_MAX, "token"));
        for (uint64_t j = ds->tok_off[0]; j < ds->tok_off[ds->rows]; j++) {
            if (ds->tok_ids[j] >= ds->tok_dim) {
                return aimsi_err(NULL, AIMS_E_INTERNAL, "dataset: token id %u >= tok_dim %zu",
                                 (unsigned)ds->tok_ids[j], ds->tok_dim);
            }
        }
    }
    if (ds->txt_off != NULL) {
        AIMSI_TRY(check_offsets(ds->txt_off, ds->rows, UINT64_MAX, "text"));
    }
    if (ds->labels != NULL) {
        for (size_t i = 0; i < ds->rows; i++) {
            if (ds->labels[i] < 0 || (size_t)ds->labels[i] >= ds->num_classes) {
                return aimsi_err(NULL, AIMS_E_INTERNAL,
                                 "dataset: label %ld at row %zu out of range",
                                 (long)ds->labels[i], i);
            }
        }
    }
    if (ds->class_names != NULL && ds->num_names != ds->num_classes) {
        return aimsi_err(NULL, AIMS_E_INTERNAL, "dataset: %zu class names for %zu classes",
                         ds->num_names, ds->num_classes);
    }
    return AIMS_OK;
}

/* ---- building from host memory ----------------------------------------------------- */

/* Validate labels (>= 0) and return max + 1 in *out_classes. */
aims_status aimsi_dataset_scan_labels(const int32_t *labels, size_t rows, size_t *out_classes)
{
    int32_t max = -1;
    for (size_t i = 0; i < rows; i++) {
        if (labels[i] < 0) {
            return aimsi_err(NULL, AIMS_E_INVAL, "dataset: negative label %ld at row %zu",
                             (long)labels[i], i);
        }
        if (labels[i] > max) {
            max = labels[i];
        }
    }
    *out_classes = (size_t)max + 1;
    return AIMS_OK;
}

static aims_status copy_new_labels(aims_dataset *ds, const int32_t *labels)
{
    if (labels == NULL) {
        return AIMS_OK;
    }
    AIMSI_TRY(aimsi_dataset_scan_labels(labels, ds->rows, &ds->num_classes));
    ds->labels = aimsi_malloc(ds->rows * sizeof *ds->labels);
    if (ds->labels == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for labels");
    }
    memcpy(ds->labels, labels, ds->rows * sizeof *ds->labels);
    return AIMS_OK;
}

/* A new empty dataset of `rows` rows, once the labels (if any) are valid. */
static aims_status new_checked(size_t rows, const int32_t *labels, aims_dataset **out)
{
    if (labels != NULL) {
        size_t classes = 0;
        AIMSI_TRY(aimsi_dataset_scan_labels(labels, rows, &classes));
    }
    AIMSI_TRY(aimsi_dataset_new(out));
    (*out)->rows = rows;
    return AIMS_OK;
}

aims_status aims_dataset_create_dense(size_t rows, size_t cols, const float *x,
                                      const int32_t *labels, aims_dataset **out)
{
    return aims_dataset_create_dense_v2(rows, cols, x, labels, NULL, out);
}

aims_status aims_dataset_create_dense_v2(size_t rows, size_t cols, const float *x,
                                         const int32_t *labels, const aims_loadopts *opts,
                                         aims_dataset **out)
{
    if (out == NULL || x == NULL) {
        return AIMSI_MISUSE("out and x must not be NULL");
    }
    if (rows == 0 || cols == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_dataset_create_dense: rows and cols must be >= 1");
    }
    size_t n = 0;
    size_t bytes = 0;
    if (aimsi_mul_ok(rows, cols, &n) != 0 || aimsi_mul_ok(n, sizeof(float), &bytes) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "aims_dataset_create_dense: %zu x %zu overflows",
                         rows, cols);
    }
    AIMSI_TRY(aimsi_check_finite(AIMS_E_INVAL, "aims_dataset_create_dense", x, rows, cols, opts,
                                 NULL));
    aims_dataset *ds = NULL;
    AIMSI_TRY(new_checked(rows, labels, &ds));
    ds->cols = cols;
    ds->x = aimsi_malloc(bytes);
    if (ds->x == NULL) {
        aimsi_dataset_free(ds);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_create_dense: out of memory (%zu bytes)",
                         bytes);
    }
    memcpy(ds->x, x, bytes);
    const aims_status rc = copy_new_labels(ds, labels);
    if (rc != AIMS_OK) {
        aimsi_dataset_free(ds);
        return rc;
    }
    ds->x_finite = aimsi_loadopt(opts, AIMS_LOAD_NONFINITE) == 0; /* checked above */
    *out = ds;
    return AIMS_OK;
}

aims_status aims_dataset_create_texts(size_t rows, const char *const *texts, const size_t *lens,
                                      const int32_t *labels, aims_dataset **out)
{
    if (out == NULL || texts == NULL) {
        return AIMSI_MISUSE("out and texts must not be NULL");
    }
    if (rows == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_dataset_create_texts: rows must be >= 1");
    }
    if (rows > (SIZE_MAX / sizeof(uint64_t)) - 1) {
        return aimsi_err(NULL, AIMS_E_RANGE, "aims_dataset_create_texts: too many rows");
    }
    size_t total = 0;
    for (size_t i = 0; i < rows; i++) {
        const size_t len = lens != NULL ? lens[i] : (texts[i] != NULL ? strlen(texts[i]) : 0);
        if (texts[i] == NULL && len > 0) {
            return aimsi_err(NULL, AIMS_E_MISUSE, "aims_dataset_create_texts: text %zu is NULL", i);
        }
        if (len > SIZE_MAX - total) {
            return aimsi_err(NULL, AIMS_E_RANGE, "aims_dataset_create_texts: total size overflows");
        }
        total += len;
    }
    aims_dataset *ds = NULL;
    AIMSI_TRY(new_checked(rows, labels, &ds));
    ds->txt_off = aimsi_malloc((rows + 1) * sizeof *ds->txt_off);
    /* Never NULL, even for all-empty documents, so text pointers are valid. */
    ds->txt = aimsi_malloc(total > 0 ? total : 1);
    if (ds->txt_off == NULL || ds->txt == NULL) {
        aimsi_dataset_free(ds);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_create_texts: out of memory");
    }
    size_t pos = 0;
    for (size_t i = 0; i < rows; i++) {
        const size_t len = lens != NULL ? lens[i] : (texts[i] != NULL ? strlen(texts[i]) : 0);
        ds->txt_off[i] = pos;
        if (len > 0) {
            memcpy(ds->txt + pos, texts[i], len);
        }
        pos += len;
    }
    ds->txt_off[rows] = pos;
    const aims_status rc = copy_new_labels(ds, labels);
    if (rc != AIMS_OK) {
        aimsi_dataset_free(ds);
        return rc;
    }
    *out = ds;
    return AIMS_OK;
}

/* ---- accessors ------------------------------------------------------------------------- */

size_t aims_dataset_rows(const aims_dataset *ds)
{
    return DS_OK(ds) ? ds->rows : 0;
}

size_t aims_dataset_cols(const aims_dataset *ds)
{
    return DS_OK(ds) ? ds->cols : 0;
}

const float *aims_dataset_features(const aims_dataset *ds)
{
    return DS_OK(ds) ? ds->x : NULL;
}

const int32_t *aims_dataset_labels(const aims_dataset *ds)
{
    return DS_OK(ds) ? ds->labels : NULL;
}

const float *aims_dataset_targets(const aims_dataset *ds)
{
    return DS_OK(ds) ? ds->targets : NULL;
}

size_t aims_dataset_num_classes(const aims_dataset *ds)
{
    if (!DS_OK(ds) || (ds->labels == NULL && ds->class_names == NULL)) {
        return 0;
    }
    return ds->num_classes;
}

const char *aims_dataset_class_name(const aims_dataset *ds, size_t k)
{
    if (!DS_OK(ds) || ds->class_names == NULL || k >= ds->num_names) {
        return NULL;
    }
    return ds->class_names[k];
}

aims_status aims_dataset_tokens(const aims_dataset *ds, const uint64_t **out_offsets,
                                const uint32_t **out_ids, const float **out_weights)
{
    if (!DS_OK(ds)) {
        return AIMSI_MISUSE("ds is not a valid aims_dataset handle");
    }
    if (out_offsets == NULL || out_ids == NULL) {
        return AIMSI_MISUSE("out_offsets and out_ids must not be NULL");
    }
    if (ds->tok_off == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_dataset_tokens: the dataset has no token part");
    }
    *out_offsets = ds->tok_off;
    *out_ids = ds->tok_ids;
    if (out_weights != NULL) {
        *out_weights = ds->tok_w;
    }
    return AIMS_OK;
}

size_t aims_dataset_token_dim(const aims_dataset *ds)
{
    return (DS_OK(ds) && ds->tok_off != NULL) ? ds->tok_dim : 0;
}

const char *aims_dataset_text(const aims_dataset *ds, size_t row, size_t *out_len)
{
    if (!DS_OK(ds) || ds->txt_off == NULL || row >= ds->rows) {
        return NULL;
    }
    if (out_len != NULL) {
        *out_len = (size_t)(ds->txt_off[row + 1] - ds->txt_off[row]);
    }
    return ds->txt + ds->txt_off[row];
}

const char *aims_dataset_errmsg(const aims_dataset *ds)
{
    return DS_OK(ds) ? ds->obj.errmsg : "";
}
