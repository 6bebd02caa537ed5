/*
 * dataset_subset.c -- reordering and subsets of an aims_dataset: gather,
 * shuffle, view, select and split.
 *
 * Reordering. select, split and shuffle all go through one gather routine that
 * copies listed rows of every part into fresh arrays. Shuffle gathers through a
 * seeded Fisher-Yates permutation and then swaps the new arrays in, so a failed
 * shuffle leaves the dataset exactly as it was. It refuses views and datasets
 * with live views: moving rows under a view would silently change the view.
 *
 * A view shares its root's arrays (see dataset.c for the reference counting);
 * select and split build new roots through gather.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_data.h"

#define DS_OK(ds) aimsi_obj_ok((ds), AIMSI_MAGIC_DATASET)

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

/* Exchange every part array between ds and p. */
static void parts_swap(aims_dataset *ds, ds_parts *p)
{
#define PARTS_SWAP(f) do { void *t_ = ds->f; ds->f = p->f; p->f = t_; } while (0)
    PARTS_SWAP(x); PARTS_SWAP(tok_off); PARTS_SWAP(tok_ids); PARTS_SWAP(tok_w);
    PARTS_SWAP(txt_off); PARTS_SWAP(txt); PARTS_SWAP(labels); PARTS_SWAP(targets);
#undef PARTS_SWAP
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

/* Copy the CSR rows idx[0..n) of a part: its offsets and one or two value
 * arrays of `size`-byte elements (from[0] always, from[1] when not NULL) into
 * fresh arrays *off_out, *to[0], *to[1]. `what` names the values in messages. */
static aims_status gather_csr(const uint64_t *off, const size_t *idx, size_t n,
                              const void *const from[2], size_t size, const char *what,
                              uint64_t **off_out, void **const to[2])
{
    size_t total = 0;
    if (csr_total(off, idx, n, &total) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "dataset: %s count overflows", what);
    }
    *off_out = alloc_array(n + 1, sizeof **off_out);
    int ok = *off_out != NULL;
    for (int k = 0; k < 2; k++) {
        if (k == 0 || from[k] != NULL) {
            *to[k] = alloc_array(total, size);
            ok = ok && *to[k] != NULL;
        }
    }
    if (!ok) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "dataset: out of memory for %zu %s", total, what);
    }
    uint64_t *o = *off_out;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t b = off[idx[i]];
        const size_t len = (size_t)(off[idx[i] + 1] - b);
        o[i] = pos;
        for (int k = 0; k < 2 && len > 0; k++) {
            if (from[k] != NULL) {
                memcpy((char *)*to[k] + pos * size, (const char *)from[k] + b * size, len * size);
            }
        }
        pos += len;
    }
    o[n] = pos;
    return AIMS_OK;
}

static aims_status gather_tokens(const aims_dataset *src, const size_t *idx, size_t n, ds_parts *p)
{
    const void *from[2] = {src->tok_ids, src->tok_w};
    void **const to[2] = {(void **)&p->tok_ids, (void **)&p->tok_w};
    return gather_csr(src->tok_off, idx, n, from, sizeof *p->tok_ids, "tokens", &p->tok_off, to);
}

static aims_status gather_text(const aims_dataset *src, const size_t *idx, size_t n, ds_parts *p)
{
    const void *from[2] = {src->txt, NULL};
    void **const to[2] = {(void **)&p->txt, NULL};
    return gather_csr(src->txt_off, idx, n, from, 1, "text bytes", &p->txt_off, to);
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
    /* Commit: swap the permuted arrays in (names and sizes are unchanged) and
     * free the old ones through the parts. */
    parts_swap(ds, &p);
    parts_free(&p);
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
    v->x_finite = ds->x_finite; /* the same (checked) values */
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
