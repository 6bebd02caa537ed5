/*
 * load_svmlight.c -- svmlight / libsvm text into the dataset's sparse part.
 *
 * Each line is "label idx:val idx:val ... # comment". Blank lines and lines
 * holding only a comment are skipped; CR LF endings, a UTF-8 BOM and a last
 * line without LF are accepted. Tokens are separated by blanks.
 *
 *   label   AIMS_LOAD_LABEL_KIND 0: a class id, an integer in [0, 2^24).
 *           libsvm files often say -1/+1; those are NOT silently remapped --
 *           a negative label is an error that suggests label_kind=1, which
 *           reads any finite float as a regression target instead.
 *           Feature values that are not finite (nan, inf, 1e999) are an error
 *           unless AIMS_LOAD_NONFINITE is 1; a label never may be.
 *   idx     decimal, 1-based unless AIMS_LOAD_ZERO_BASED=1, strictly
 *           increasing within a line (what every svmlight writer emits; a
 *           repeat or a step back means a damaged file, not something to sort).
 *   qid:N   ranking groups: skipped.
 *
 * The sparse part becomes the CSR triple tok_off / tok_ids / tok_w (ids are
 * the 0-based feature indices, weights their values). tok_dim is
 * AIMS_LOAD_NUM_FEATURES when set (an index beyond it is an error), else the
 * largest index + 1.
 *
 * Memory. One scan over the bytes gives upper bounds that are never below the
 * truth: rows <= lines, entries <= ':' bytes. Everything is allocated once
 * from those bounds (so the size is at most a small multiple of the input,
 * which AIMS_LOAD_MAX_BYTES caps) and filled in a single parsing pass; no
 * reallocation, so an allocation failure has only one place to happen per
 * array and the error paths stay simple.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "aimsi_data.h"

enum {
    MAX_CLASS_ID = (1 << 24) - 1
};

typedef struct svm_ctx {
    const char *name;
    int label_kind;
    int zero_based;
    int nonfinite;         /* AIMS_LOAD_NONFINITE */
    uint64_t num_features; /* 0 = infer */
    uint64_t max_rows;     /* 0 = all */
} svm_ctx;

typedef struct svm_out {
    size_t rows;
    size_t nnz;
    uint64_t *off;
    uint32_t *ids;
    float *w;
    int32_t *labels;
    float *targets;
    int32_t max_label;
    uint64_t max_id_plus1;
} svm_out;

static int is_blank(unsigned char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}


/* CORRUPT "<name>:<line>: <what> "<token excerpt>"". */
static aims_status bad_token(const svm_ctx *c, uint64_t line, const char *b, const char *e,
                             const char *what)
{
    char ex[AIMSI_EXCERPT_CAP];
    aimsi_excerpt(b, e, ex, sizeof ex);
    return aimsi_err(NULL, AIMS_E_CORRUPT, "%s:%llu: %s \"%s\"", c->name,
                     (unsigned long long)line, what, ex);
}

static aims_status parse_label(const svm_ctx *c, uint64_t line, const char *b, const char *e,
                               size_t r, svm_out *o)
{
    float v = 0.0f;
    if (aimsi_parse_float(b, e, &v) != 0) {
        return bad_token(c, line, b, e, "label is not a number:");
    }
    if (!isfinite(v)) {
        return bad_token(c, line, b, e, "label is not a finite number:");
    }
    if (c->label_kind == 1) {
        o->targets[r] = v;
        return AIMS_OK;
    }
    if (v < 0.0f) {
        return bad_token(c, line, b, e,
                         "negative class label (class ids must be >= 0; libsvm -1/+1 files "
                         "need label_kind=1 or relabelling):");
    }
    if (v != floorf(v) || v > (float)MAX_CLASS_ID) {
        return bad_token(c, line, b, e,
                         "class label is not an integer in [0, 2^24) (use label_kind=1 for "
                         "float targets):");
    }
    const int32_t k = (int32_t)v;
    o->labels[r] = k;
    o->max_label = (k > o->max_label) ? k : o->max_label;
    return AIMS_OK;
}

/* "idx:val" in [b, e); *prev is the previous id of the line (-1 at first). */
static aims_status parse_entry(const svm_ctx *c, uint64_t line, const char *b, const char *e,
                               int64_t *prev, svm_out *o)
{
    const char *colon = memchr(b, ':', (size_t)(e - b));
    if (colon == NULL || colon == b) {
        return bad_token(c, line, b, e, "expected index:value, found");
    }
    uint64_t idx = 0;
    for (const char *p = b; p < colon; p++) {
        if (*p < '0' || *p > '9') {
            return bad_token(c, line, b, e, "feature index is not a non-negative integer:");
        }
        idx = idx * 10u + (uint64_t)(*p - '0');
        if (idx > UINT32_MAX) {
            return bad_token(c, line, b, e, "feature index is too large:");
        }
    }
    if (!c->zero_based && idx == 0) {
        return bad_token(c, line, b, e, "index 0 in a 1-based file (set zero_based=1):");
    }
    const uint64_t id = c->zero_based ? idx : idx - 1;
    if ((int64_t)id <= *prev) {
        return bad_token(c, line, b, e, "feature indices must be strictly increasing:");
    }
    if (c->num_features > 0 && id >= c->num_features) {
        return bad_token(c, line, b, e, "feature index is beyond num_features:");
    }
    float v = 0.0f;
    if (aimsi_parse_float(colon + 1, e, &v) != 0) {
        return bad_token(c, line, b, e, "feature value is not a number:");
    }
    if (!isfinite(v) && !c->nonfinite) {
        return bad_token(c, line, b, e,
                         "feature value is not a finite number (nan, inf or beyond float "
                         "range; set allow_nonfinite=1 to load it):");
    }
    *prev = (int64_t)id;
    o->ids[o->nnz] = (uint32_t)id;
    o->w[o->nnz] = v;
    o->nnz++;
    o->max_id_plus1 = (id + 1 > o->max_id_plus1) ? id + 1 : o->max_id_plus1;
    return AIMS_OK;
}

/* Parse the content [p, stop) of one line (comment already cut off).
 * *had_row is set when the line held a record (row r). */
static aims_status parse_line(const svm_ctx *c, uint64_t line, const char *p, const char *stop,
                              size_t r, svm_out *o, int *had_row)
{
    int64_t prev = -1;
    int first = 1;
    *had_row = 0;
    for (;;) {
        while (p < stop && is_blank((unsigned char)*p)) {
            p++;
        }
        if (p == stop) {
            break;
        }
        const char *t = p;
        while (p < stop && !is_blank((unsigned char)*p)) {
            p++;
        }
        if (first) {
            AIMSI_TRY(parse_label(c, line, t, p, r, o));
            first = 0;
            *had_row = 1;
        } else if (p - t >= 4 && memcmp(t, "qid:", 4) == 0) {
            continue;
        } else {
            AIMSI_TRY(parse_entry(c, line, t, p, &prev, o));
        }
    }
    return AIMS_OK;
}

static void out_free(svm_out *o)
{
    aimsi_free(o->off);
    aimsi_free(o->ids);
    aimsi_free(o->w);
    aimsi_free(o->labels);
    aimsi_free(o->targets);
}

/* Size the arrays from upper bounds (lines, ':' count). */
static aims_status out_alloc(const svm_ctx *c, const char *p, const char *end, svm_out *o)
{
    size_t lines = 1;
    size_t colons = 0;
    for (const char *s = p; s < end; s++) {
        lines += (*s == '\n');
        colons += (*s == ':');
    }
    if (c->max_rows > 0 && lines > c->max_rows) {
        lines = (size_t)c->max_rows;
    }
    colons = (colons > 0) ? colons : 1;
    o->max_label = -1;
    /* lines + 1 and the element sizes cannot overflow: both counts are at
     * most the input size, which lives in memory */
    o->off = aimsi_calloc(lines + 1, sizeof *o->off);
    o->ids = aimsi_calloc(colons, sizeof *o->ids);
    o->w = aimsi_calloc(colons, sizeof *o->w);
    if (c->label_kind == 0) {
        o->labels = aimsi_calloc(lines, sizeof *o->labels);
    } else {
        o->targets = aimsi_calloc(lines, sizeof *o->targets);
    }
    if (o->off == NULL || o->ids == NULL || o->w == NULL ||
        (o->labels == NULL && o->targets == NULL)) {
        out_free(o);
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu rows, %zu entries",
                         c->name, lines, colons);
    }
    return AIMS_OK;
}

static aims_status parse_all(const svm_ctx *c, const char *p, const char *end, svm_out *o)
{
    uint64_t line = 1;
    while (p < end && (c->max_rows == 0 || o->rows < c->max_rows)) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = (nl == NULL) ? end : nl;
        const char *hash = memchr(p, '#', (size_t)(stop - p));
        int had_row = 0;
        AIMSI_TRY(parse_line(c, line, p, (hash != NULL) ? hash : stop, o->rows, o, &had_row));
        if (had_row) {
            o->rows++;
            o->off[o->rows] = o->nnz;
        }
        p = (nl == NULL) ? end : nl + 1;
        line++;
    }
    if (o->rows == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: no data rows", c->name);
    }
    return AIMS_OK;
}

aims_status aimsi_load_svmlight(const void *data, size_t size, const char *name,
                                const aims_loadopts *opts, aims_dataset **out)
{
    name = (name != NULL) ? name : "<memory>";
    if (data == NULL || size == 0) {
        return aimsi_err(NULL, (data == NULL && size > 0) ? AIMS_E_MISUSE : AIMS_E_INVAL,
                         "%s: empty input", name);
    }
    const int64_t max_bytes = aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES);
    if (max_bytes > 0 && (uint64_t)size > (uint64_t)max_bytes) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %zu bytes exceed max_bytes %lld", name, size,
                         (long long)max_bytes);
    }
    svm_ctx c;
    c.name = name;
    c.label_kind = (int)aimsi_loadopt(opts, AIMS_LOAD_LABEL_KIND);
    c.nonfinite = (int)aimsi_loadopt(opts, AIMS_LOAD_NONFINITE);
    c.zero_based = (int)aimsi_loadopt(opts, AIMS_LOAD_ZERO_BASED);
    const int64_t nf = aimsi_loadopt(opts, AIMS_LOAD_NUM_FEATURES);
    c.num_features = (nf > 0) ? (uint64_t)nf : 0;
    const int64_t mr = aimsi_loadopt(opts, AIMS_LOAD_MAX_ROWS);
    c.max_rows = (mr > 0) ? (uint64_t)mr : 0;

    const char *p = data;
    const char *const end = p + size;
    if (size >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
        p += 3;
    }
    svm_out o;
    memset(&o, 0, sizeof o);
    AIMSI_TRY(out_alloc(&c, p, end, &o));
    aims_status rc = parse_all(&c, p, end, &o);
    aims_dataset *ds = NULL;
    if (rc == AIMS_OK) {
        rc = aimsi_dataset_new(&ds);
    }
    if (rc != AIMS_OK) {
        out_free(&o);
        return rc;
    }
    ds->rows = o.rows;
    ds->tok_off = o.off;
    ds->tok_ids = o.ids;
    ds->tok_w = o.w;
    ds->tok_dim = (c.num_features > 0) ? (size_t)c.num_features : (size_t)o.max_id_plus1;
    ds->labels = o.labels;
    ds->targets = o.targets;
    ds->num_classes = (o.labels != NULL) ? (size_t)o.max_label + 1 : 0;
    *out = ds;
    return AIMS_OK;
}
