/*
 * dataset.c -- the aims_dataset object: life cycle, views, reordering, splits,
 * persistence, and the public entry points of the loaders.
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
 *
 * Reordering. select, split and shuffle all go through one gather routine that
 * copies listed rows of every part into fresh arrays. Shuffle gathers through a
 * seeded Fisher-Yates permutation and then swaps the new arrays in, so a failed
 * shuffle leaves the dataset exactly as it was. It refuses views and datasets
 * with live views: moving rows under a view would silently change the view.
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

/* ---- life cycle ---------------------------------------------------------------- */

aims_status aimsi_dataset_new(aims_dataset **out)
{
    aims_dataset *ds = aimsi_calloc(1, sizeof *ds);
    if (ds == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory");
    }
    aimsi_obj_init(&ds->obj, AIMSI_MAGIC_DATASET);
    atomic_init(&ds->refs, 1);
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

void aimsi_dataset_free(aims_dataset *ds)
{
    if (ds == NULL) {
        return;
    }
    aimsi_obj_kill(&ds->obj);
    if (ds->root != NULL) {
        /* A view owns only itself; it still holds a reference on its root. */
        aims_dataset *root = ds->root;
        aimsi_free(ds);
        release_root(root);
        return;
    }
    free_arrays(ds);
    aimsi_free(ds);
}

void aims_dataset_destroy(aims_dataset *ds)
{
    if (!DS_OK(ds)) {
        return;
    }
    aimsi_obj_kill(&ds->obj);
    if (ds->root != NULL) {
        aims_dataset *root = ds->root;
        aimsi_free(ds);
        release_root(root);
    } else {
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
static aims_status scan_labels(const int32_t *labels, size_t rows, size_t *out_classes)
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
    AIMSI_TRY(scan_labels(labels, ds->rows, &ds->num_classes));
    ds->labels = aimsi_malloc(ds->rows * sizeof *ds->labels);
    if (ds->labels == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for labels");
    }
    memcpy(ds->labels, labels, ds->rows * sizeof *ds->labels);
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
    if (labels != NULL) {
        size_t classes = 0;
        AIMSI_TRY(scan_labels(labels, rows, &classes));
    }
    aims_dataset *ds = NULL;
    AIMSI_TRY(aimsi_dataset_new(&ds));
    ds->rows = rows;
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
    if (labels != NULL) {
        size_t classes = 0;
        AIMSI_TRY(scan_labels(labels, rows, &classes));
    }
    aims_dataset *ds = NULL;
    AIMSI_TRY(aimsi_dataset_new(&ds));
    ds->rows = rows;
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

/* ---- gather: copy listed rows of every part --------------------------------------- */

typedef struct ds_parts {
    float *x;
    uint64_t *tok_off;
    uint32_t *tok_ids;
    float *tok_w;
    uint64_t *txt_off;
    char *txt;
    int32_t *labels;
    float *targets;
} ds_parts;

static void parts_free(ds_parts *p)
{
    aimsi_free(p->x);
    aimsi_free(p->tok_off);
    aimsi_free(p->tok_ids);
    aimsi_free(p->tok_w);
    aimsi_free(p->txt_off);
    aimsi_free(p->txt);
    aimsi_free(p->labels);
    aimsi_free(p->targets);
    memset(p, 0, sizeof *p);
}

/* Allocate n*size bytes (at least 1 so empty parts still get a pointer). */
static void *alloc_array(size_t n, size_t size)
{
    size_t bytes = 0;
    if (aimsi_mul_ok(n, size, &bytes) != 0) {
        return NULL;
    }
    return aimsi_malloc(bytes > 0 ? bytes : 1);
}

/* Total length of the CSR rows listed in idx; -1 on overflow. */
static int csr_total(const uint64_t *off, const size_t *idx, size_t n, size_t *out)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t len = off[idx[i] + 1] - off[idx[i]];
        if (len > UINT64_MAX - total) {
            return -1;
        }
        total += len;
    }
    if (total > SIZE_MAX) {
        return -1;
    }
    *out = (size_t)total;
    return 0;
}

static aims_status gather_dense(const aims_dataset *src, const size_t *idx, size_t n, ds_parts *p)
{
    size_t cells = 0;
    if (aimsi_mul_ok(n, src->cols, &cells) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "dataset: %zu rows x %zu cols overflows", n,
                         src->cols);
    }
    p->x = alloc_array(cells, sizeof *p->x);
    if (p->x == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for %zu features", cells);
    }
    const size_t row_bytes = src->cols * sizeof *p->x;
    for (size_t i = 0; i < n; i++) {
        memcpy(p->x + i * src->cols, src->x + idx[i] * src->cols, row_bytes);
    }
    return AIMS_OK;
}

static aims_status gather_tokens(const aims_dataset *src, const size_t *idx, size_t n, ds_parts *p)
{
    size_t nnz = 0;
    if (csr_total(src->tok_off, idx, n, &nnz) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "dataset: token count overflows");
    }
    p->tok_off = alloc_array(n + 1, sizeof *p->tok_off);
    p->tok_ids = alloc_array(nnz, sizeof *p->tok_ids);
    if (src->tok_w != NULL) {
        p->tok_w = alloc_array(nnz, sizeof *p->tok_w);
    }
    if (p->tok_off == NULL || p->tok_ids == NULL || (src->tok_w != NULL && p->tok_w == NULL)) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for %zu tokens", nnz);
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t b = src->tok_off[idx[i]];
        const size_t len = (size_t)(src->tok_off[idx[i] + 1] - b);
        p->tok_off[i] = pos;
        if (len > 0) {
            memcpy(p->tok_ids + pos, src->tok_ids + b, len * sizeof *p->tok_ids);
            if (p->tok_w != NULL) {
                memcpy(p->tok_w + pos, src->tok_w + b, len * sizeof *p->tok_w);
            }
        }
        pos += len;
    }
    p->tok_off[n] = pos;
    return AIMS_OK;
}

static aims_status gather_text(const aims_dataset *src, const size_t *idx, size_t n, ds_parts *p)
{
    size_t total = 0;
    if (csr_total(src->txt_off, idx, n, &total) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "dataset: text size overflows");
    }
    p->txt_off = alloc_array(n + 1, sizeof *p->txt_off);
    p->txt = alloc_array(total, 1);
    if (p->txt_off == NULL || p->txt == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for %zu text bytes", total);
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t b = src->txt_off[idx[i]];
        const size_t len = (size_t)(src->txt_off[idx[i] + 1] - b);
        p->txt_off[i] = pos;
        if (len > 0) {
            memcpy(p->txt + pos, src->txt + b, len);
        }
        pos += len;
    }
    p->txt_off[n] = pos;
    return AIMS_OK;
}

static aims_status gather_labels(const aims_dataset *src, const size_t *idx, size_t n, ds_parts *p)
{
    if (src->labels != NULL) {
        p->labels = alloc_array(n, sizeof *p->labels);
        if (p->labels == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for labels");
        }
        for (size_t i = 0; i < n; i++) {
            p->labels[i] = src->labels[idx[i]];
        }
    }
    if (src->targets != NULL) {
        p->targets = alloc_array(n, sizeof *p->targets);
        if (p->targets == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for targets");
        }
        for (size_t i = 0; i < n; i++) {
            p->targets[i] = src->targets[idx[i]];
        }
    }
    return AIMS_OK;
}

/* Copy rows idx[0..n) (each < src->rows) of every part into *p; on failure
 * *p holds nothing. */
static aims_status gather(const aims_dataset *src, const size_t *idx, size_t n, ds_parts *p)
{
    memset(p, 0, sizeof *p);
    aims_status rc = AIMS_OK;
    if (src->x != NULL) {
        rc = gather_dense(src, idx, n, p);
    }
    if (rc == AIMS_OK && src->tok_off != NULL) {
        rc = gather_tokens(src, idx, n, p);
    }
    if (rc == AIMS_OK && src->txt_off != NULL) {
        rc = gather_text(src, idx, n, p);
    }
    if (rc == AIMS_OK) {
        rc = gather_labels(src, idx, n, p);
    }
    if (rc != AIMS_OK) {
        parts_free(p);
    }
    return rc;
}

/* A new root dataset holding rows idx[0..n) of src. */
static aims_status build_from(const aims_dataset *src, const size_t *idx, size_t n,
                              aims_dataset **out)
{
    aims_dataset *ds = NULL;
    AIMSI_TRY(aimsi_dataset_new(&ds));
    ds_parts p;
    aims_status rc = gather(src, idx, n, &p);
    if (rc == AIMS_OK && src->class_names != NULL) {
        rc = aimsi_dataset_set_names(ds, (const char *const *)src->class_names, src->num_names);
        if (rc != AIMS_OK) {
            parts_free(&p);
        }
    }
    if (rc != AIMS_OK) {
        aimsi_dataset_free(ds);
        return rc;
    }
    ds->rows = n;
    ds->cols = src->cols;
    ds->x = p.x;
    ds->tok_off = p.tok_off;
    ds->tok_ids = p.tok_ids;
    ds->tok_w = p.tok_w;
    ds->tok_dim = src->tok_dim;
    ds->txt_off = p.txt_off;
    ds->txt = p.txt;
    ds->labels = p.labels;
    ds->targets = p.targets;
    ds->num_classes = src->num_classes;
    *out = ds;
    return AIMS_OK;
}

/* ---- shuffle, view, select, split --------------------------------------------------- */

aims_status aims_dataset_shuffle(aims_dataset *ds, uint64_t seed)
{
    if (!DS_OK(ds)) {
        return AIMSI_MISUSE("ds is not a valid aims_dataset handle");
    }
    if (ds->root != NULL) {
        return aimsi_err(&ds->obj, AIMS_E_STATE, "aims_dataset_shuffle: cannot shuffle a view");
    }
    if (atomic_load(&ds->refs) > 1) {
        return aimsi_err(&ds->obj, AIMS_E_STATE,
                         "aims_dataset_shuffle: the dataset has %ld live view(s)",
                         (long)atomic_load(&ds->refs) - 1);
    }
    size_t *perm = alloc_array(ds->rows, sizeof *perm);
    if (perm == NULL) {
        return aimsi_err(&ds->obj, AIMS_E_NOMEM, "aims_dataset_shuffle: out of memory");
    }
    for (size_t i = 0; i < ds->rows; i++) {
        perm[i] = i;
    }
    aimsi_rng rng;
    aimsi_rng_seed(&rng, seed);
    for (size_t i = ds->rows - 1; i > 0; i--) {
        const size_t j = (size_t)aimsi_rng_below(&rng, (uint64_t)i + 1);
        const size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    ds_parts p;
    const aims_status rc = gather(ds, perm, ds->rows, &p);
    aimsi_free(perm);
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&ds->obj, rc);
    }
    /* Commit: swap the permuted arrays in (names and sizes are unchanged). */
    aimsi_free(ds->x);
    aimsi_free(ds->tok_off);
    aimsi_free(ds->tok_ids);
    aimsi_free(ds->tok_w);
    aimsi_free(ds->txt_off);
    aimsi_free(ds->txt);
    aimsi_free(ds->labels);
    aimsi_free(ds->targets);
    ds->x = p.x;
    ds->tok_off = p.tok_off;
    ds->tok_ids = p.tok_ids;
    ds->tok_w = p.tok_w;
    ds->txt_off = p.txt_off;
    ds->txt = p.txt;
    ds->labels = p.labels;
    ds->targets = p.targets;
    return AIMS_OK;
}

aims_status aims_dataset_view(const aims_dataset *ds, size_t begin, size_t count,
                              aims_dataset **out)
{
    if (!DS_OK(ds)) {
        return AIMSI_MISUSE("ds is not a valid aims_dataset handle");
    }
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    if (count == 0 || begin >= ds->rows || count > ds->rows - begin) {
        return aimsi_err(NULL, AIMS_E_RANGE,
                         "aims_dataset_view: rows [%zu, %zu+%zu) outside [0, %zu) or empty", begin,
                         begin, count, ds->rows);
    }
    aims_dataset *v = aimsi_calloc(1, sizeof *v);
    if (v == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_view: out of memory");
    }
    aimsi_obj_init(&v->obj, AIMSI_MAGIC_DATASET);
    atomic_init(&v->refs, 0);
    v->rows = count;
    v->cols = ds->cols;
    v->x = ds->x != NULL ? ds->x + begin * ds->cols : NULL;
    /* ids, weights and text bytes stay shared; offsets stay absolute. */
    v->tok_off = ds->tok_off != NULL ? ds->tok_off + begin : NULL;
    v->tok_ids = ds->tok_ids;
    v->tok_w = ds->tok_w;
    v->tok_dim = ds->tok_dim;
    v->txt_off = ds->txt_off != NULL ? ds->txt_off + begin : NULL;
    v->txt = ds->txt;
    v->labels = ds->labels != NULL ? ds->labels + begin : NULL;
    v->targets = ds->targets != NULL ? ds->targets + begin : NULL;
    v->num_classes = ds->num_classes;
    v->class_names = ds->class_names;
    v->num_names = ds->num_names;
    /* The reference count is the one mutable field of a const dataset: taking a
     * reference does not change what the dataset holds. */
    aims_dataset *root = ds->root != NULL ? ds->root : (aims_dataset *)ds;
    atomic_fetch_add(&root->refs, 1);
    v->root = root;
    *out = v;
    return AIMS_OK;
}

aims_status aims_dataset_select(const aims_dataset *ds, const size_t *idx, size_t n,
                                aims_dataset **out)
{
    if (!DS_OK(ds)) {
        return AIMSI_MISUSE("ds is not a valid aims_dataset handle");
    }
    if (out == NULL || idx == NULL) {
        return AIMSI_MISUSE("out and idx must not be NULL");
    }
    if (n == 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "aims_dataset_select: no rows selected");
    }
    for (size_t i = 0; i < n; i++) {
        if (idx[i] >= ds->rows) {
            return aimsi_err(NULL, AIMS_E_RANGE, "aims_dataset_select: idx[%zu] = %zu >= rows %zu",
                             i, idx[i], ds->rows);
        }
    }
    return build_from(ds, idx, n, out);
}

typedef struct label_row {
    int32_t label;
    size_t row;
} label_row;

static int cmp_label_row(const void *a, const void *b)
{
    const label_row *x = a;
    const label_row *y = b;
    if (x->label != y->label) {
        return x->label < y->label ? -1 : 1;
    }
    return (x->row > y->row) - (x->row < y->row);
}

/* Rows of the test part per the header: round(n_k * f), >= 1 when n_k >= 2,
 * and (our choice) <= n_k - 1 then, so every class of >= 2 rows is in both parts. */
static size_t stratum_test_count(size_t nk, double f)
{
    size_t t = (size_t)floor((double)nk * f + 0.5);
    if (nk >= 2) {
        t = t < 1 ? 1 : t;
        t = t > nk - 1 ? nk - 1 : t;
    }
    return t > nk ? nk : t;
}

/* Mark test rows of a stratified split: group rows by label (sorted by
 * (label, row), so the result does not depend on the sort's stability) and
 * draw each group's test rows with a partial Fisher-Yates. */
static aims_status mark_stratified(const aims_dataset *ds, double f, aimsi_rng *rng,
                                   unsigned char *is_test)
{
    label_row *lr = alloc_array(ds->rows, sizeof *lr);
    if (lr == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_split: out of memory");
    }
    for (size_t i = 0; i < ds->rows; i++) {
        lr[i].label = ds->labels[i];
        lr[i].row = i;
    }
    qsort(lr, ds->rows, sizeof *lr, cmp_label_row);
    size_t a = 0;
    while (a < ds->rows) {
        size_t b = a + 1;
        while (b < ds->rows && lr[b].label == lr[a].label) {
            b++;
        }
        const size_t nk = b - a;
        const size_t t = stratum_test_count(nk, f);
        for (size_t j = 0; j < t; j++) {
            const size_t r = a + j + (size_t)aimsi_rng_below(rng, (uint64_t)(nk - j));
            const label_row tmp = lr[a + j];
            lr[a + j] = lr[r];
            lr[r] = tmp;
            is_test[lr[a + j].row] = 1;
        }
        a = b;
    }
    aimsi_free(lr);
    return AIMS_OK;
}

static aims_status mark_random(size_t rows, double f, aimsi_rng *rng, unsigned char *is_test)
{
    const size_t t = (size_t)floor((double)rows * f + 0.5);
    size_t *perm = alloc_array(rows, sizeof *perm);
    if (perm == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_split: out of memory");
    }
    for (size_t i = 0; i < rows; i++) {
        perm[i] = i;
    }
    for (size_t j = 0; j < t && j < rows; j++) {
        const size_t r = j + (size_t)aimsi_rng_below(rng, (uint64_t)(rows - j));
        const size_t tmp = perm[j];
        perm[j] = perm[r];
        perm[r] = tmp;
        is_test[perm[j]] = 1;
    }
    aimsi_free(perm);
    return AIMS_OK;
}

/* Build both parts from the marks; rows keep their relative order. */
static aims_status split_build(const aims_dataset *ds, const unsigned char *is_test,
                               aims_dataset **out_train, aims_dataset **out_test)
{
    size_t n_test = 0;
    for (size_t i = 0; i < ds->rows; i++) {
        n_test += is_test[i];
    }
    if (n_test == 0 || n_test == ds->rows) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_dataset_split: the %s part would be empty (%zu rows)",
                         n_test == 0 ? "test" : "train", ds->rows);
    }
    size_t *order = alloc_array(ds->rows, sizeof *order);
    if (order == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_split: out of memory");
    }
    const size_t n_train = ds->rows - n_test;
    size_t tr = 0;
    size_t te = n_train;
    for (size_t i = 0; i < ds->rows; i++) {
        if (is_test[i]) {
            order[te++] = i;
        } else {
            order[tr++] = i;
        }
    }
    aims_dataset *train = NULL;
    aims_dataset *test = NULL;
    aims_status rc = build_from(ds, order, n_train, &train);
    if (rc == AIMS_OK) {
        rc = build_from(ds, order + n_train, n_test, &test);
        if (rc != AIMS_OK) {
            aims_dataset_destroy(train);
        }
    }
    aimsi_free(order);
    if (rc == AIMS_OK) {
        *out_train = train;
        *out_test = test;
    }
    return rc;
}

aims_status aims_dataset_split(const aims_dataset *ds, double test_fraction, uint64_t seed,
                               int stratified, aims_dataset **out_train, aims_dataset **out_test)
{
    if (!DS_OK(ds)) {
        return AIMSI_MISUSE("ds is not a valid aims_dataset handle");
    }
    if (out_train == NULL || out_test == NULL || out_train == out_test) {
        return AIMSI_MISUSE("out_train and out_test must be distinct non-NULL pointers");
    }
    if (!(test_fraction > 0.0 && test_fraction < 1.0)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_dataset_split: test_fraction %g not in (0, 1)",
                         test_fraction);
    }
    if (stratified && ds->labels == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_dataset_split: a stratified split needs class labels");
    }
    unsigned char *is_test = aimsi_calloc(ds->rows, 1);
    if (is_test == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_split: out of memory");
    }
    aimsi_rng rng;
    aimsi_rng_seed(&rng, seed);
    aims_status rc = stratified ? mark_stratified(ds, test_fraction, &rng, is_test)
                                : mark_random(ds->rows, test_fraction, &rng, is_test);
    if (rc == AIMS_OK) {
        rc = split_build(ds, is_test, out_train, out_test);
    }
    aimsi_free(is_test);
    return rc;
}

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

static int host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Byte-swap n 4-byte (or 8-byte) elements in place; only big-endian hosts
 * need it, since files and little-endian memory share one layout. */
static void swap_words(void *data, size_t n, size_t width)
{
    unsigned char *p = data;
    for (size_t i = 0; i < n; i++, p += width) {
        for (size_t a = 0, b = width - 1; a < b; a++, b--) {
            const unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
    }
}

/* Add an array of 4-byte words as a little-endian section. */
static aims_status add_words32(aimsi_cwriter *w, uint32_t tag, const void *data, size_t n)
{
    const size_t bytes = n * 4;
    if (host_is_le()) {
        return aimsi_cw_add(w, tag, data, bytes);
    }
    void *tmp = aimsi_malloc(bytes > 0 ? bytes : 1);
    if (tmp == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_dataset_save: out of memory");
    }
    memcpy(tmp, data, bytes);
    swap_words(tmp, n, 4);
    const aims_status rc = aimsi_cw_add(w, tag, tmp, bytes);
    aimsi_free(tmp);
    return rc;
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

aims_status aims_dataset_save(const aims_dataset *ds, const char *path)
{
    if (!DS_OK(ds)) {
        return AIMSI_MISUSE("ds is not a valid aims_dataset handle");
    }
    if (path == NULL) {
        return AIMSI_MISUSE("path is NULL");
    }
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(AIMSI_KIND_DATASET, 0, &w));
    aims_status rc = write_sections(w, ds);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_save(w, path);
    }
    aimsi_cw_destroy(w);
    return rc;
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

/* rows+1 offsets: first 0, non-decreasing, last == limit. */
static aims_status check_loaded_offsets(const uint64_t *off, size_t rows, uint64_t limit,
                                        const char *name, const char *tname)
{
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
    const size_t rows = (size_t)m->rows;
    AIMSI_TRY(read_exact(r, name, TAG_TOFF, "TOFF", (m->rows + 1) * 8, cap, (void **)&ds->tok_off));
    if (!host_is_le()) {
        swap_words(ds->tok_off, rows + 1, 8);
    }
    AIMSI_TRY(check_loaded_offsets(ds->tok_off, rows, m->nnz, name, "TOFF"));
    if (m->nnz > cap / 4) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %llu tokens exceed the size cap", name,
                         (unsigned long long)m->nnz);
    }
    AIMSI_TRY(read_exact(r, name, TAG_TIDS, "TIDS", m->nnz * 4, cap, (void **)&ds->tok_ids));
    if (!host_is_le()) {
        swap_words(ds->tok_ids, (size_t)m->nnz, 4);
    }
    for (uint64_t j = 0; j < m->nnz; j++) {
        if (ds->tok_ids[j] >= m->tok_dim) {
            return aimsi_err(NULL, AIMS_E_CORRUPT,
                             "%s: section TIDS: id %u at %llu >= tok_dim %llu",
                             name, (unsigned)ds->tok_ids[j], (unsigned long long)j,
                             (unsigned long long)m->tok_dim);
        }
    }
    if (m->flags & PART_WEIGHTS) {
        AIMSI_TRY(read_exact(r, name, TAG_TWGT, "TWGT", m->nnz * 4, cap, (void **)&ds->tok_w));
        if (!host_is_le()) {
            swap_words(ds->tok_w, (size_t)m->nnz, 4);
        }
    }
    ds->tok_dim = (size_t)m->tok_dim;
    return AIMS_OK;
}

static aims_status read_text(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                             aims_dataset *ds)
{
    const size_t rows = (size_t)m->rows;
    AIMSI_TRY(read_exact(r, name, TAG_XOFF, "XOFF", (m->rows + 1) * 8, cap, (void **)&ds->txt_off));
    if (!host_is_le()) {
        swap_words(ds->txt_off, rows + 1, 8);
    }
    AIMSI_TRY(check_loaded_offsets(ds->txt_off, rows, m->tlen, name, "XOFF"));
    return read_exact(r, name, TAG_TEXT, "TEXT", m->tlen, cap, (void **)&ds->txt);
}

static aims_status read_labels(aimsi_creader *r, const ds_meta *m, uint64_t cap, const char *name,
                               aims_dataset *ds)
{
    const size_t rows = (size_t)m->rows;
    if (m->flags & PART_LABELS) {
        AIMSI_TRY(read_exact(r, name, TAG_LABL, "LABL", m->rows * 4, cap, (void **)&ds->labels));
        if (!host_is_le()) {
            swap_words(ds->labels, rows, 4);
        }
        for (size_t i = 0; i < rows; i++) {
            if (ds->labels[i] < 0 || (uint64_t)ds->labels[i] >= m->num_classes) {
                return aimsi_err(NULL, AIMS_E_CORRUPT,
                                 "%s: section LABL: label %ld at row %zu not in [0, %llu)", name,
                                 (long)ds->labels[i], i, (unsigned long long)m->num_classes);
            }
        }
    }
    if (m->flags & PART_TARGETS) {
        AIMSI_TRY(read_exact(r, name, TAG_TARG, "TARG", m->rows * 4, cap, (void **)&ds->targets));
        if (!host_is_le()) {
            swap_words(ds->targets, rows, 4);
        }
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
        AIMSI_TRY(read_exact(r, name, TAG_DENS, "DENS", cells * 4, cap, (void **)&ds->x));
        if (!host_is_le()) {
            swap_words(ds->x, (size_t)cells, 4);
        }
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
    rc = scan_labels(labels, n, &classes);
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
