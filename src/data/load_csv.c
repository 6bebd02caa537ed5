/*
 * load_csv.c -- delimited text (RFC 4180) into a dense float32 dataset.
 *
 * Shape of the input. An optional UTF-8 BOM; AIMS_LOAD_SKIP_ROWS physical
 * lines that are ignored; then, per AIMS_LOAD_HEADER, nothing (0), one record
 * of column names (1: tokenised so quoted names may hold delimiters, then
 * dropped -- the API has no column names), or one physical line skipped (2:
 * sklearn's bundled files put counts there). Then data records. Records end at
 * LF (CR LF too: a CR before the terminator is trimmed like other blanks).
 * Lines holding only blanks (space, tab, CR -- minus the delimiter) are
 * skipped. A final line without LF is a record.
 *
 * Fields. A field that starts with '"' is quoted: it ends at the next lone
 * '"', "" stands for one quote, and delimiters and newlines inside are data.
 * After the closing quote only blanks may precede the delimiter/end of line.
 * Unquoted fields run to the next delimiter or LF. Blanks around a field are
 * trimmed. Every field must then be a number (numparse.c) or a missing marker
 * -- empty, NA, N/A, NaN (any case, any sign), NULL, "?" -- which becomes NaN
 * when AIMS_LOAD_MISSING is 1 and an error when it is 0. A number that is not
 * finite (nan, inf, or a literal beyond float range such as 1e999) is an
 * error unless AIMS_LOAD_NONFINITE is 1: such values poison training silently. Every record must
 * have as many fields as the first (or the header). The label column, when
 * there is one, is taken out of the features: class ids must be integers in
 * [0, 2^24) (a float holds them exactly, and a class count from a hostile file
 * stays bounded); with AIMS_LOAD_LABEL_KIND 1 it is a float target instead.
 *
 * Speed. This loader is benchmarked against pandas' C tokenizer, so:
 *   - two passes over the bytes: one memchr pass counts lines, an upper bound
 *     on the records (capped by max_rows); the parse pass converts straight
 *     into arrays allocated once from that bound. When blank lines or quoted
 *     newlines made the bound loose, the arrays are shrunk at the end (best
 *     effort). A bound that cannot fit the bytes (lines x (fields - 1) >
 *     bytes: a wide first line then many short ones) triggers a dry run into
 *     a one-row scratch first, so a small hostile file never asks for a huge
 *     block, and errors still come in file order;
 *   - the hot path (fast_record) uses the input's last LF as a sentinel, so
 *     the per-byte loop has no bounds checks, and converts short unsigned
 *     integers (pixel data) while scanning them. Any field it does not fully
 *     understand (quotes, missing markers, junk) sends the whole record to the
 *     general tokenizer, which is the single authority on errors;
 *   - the output block is advised to use transparent huge pages: on a VM,
 *     first-touch 4 KiB page faults on a 220 MB array cost more than parsing.
 *
 * Errors are AIMS_E_CORRUPT with "<name>:<line>: ..." naming the physical
 * line (1-based), the column (1-based) and an escaped excerpt of the field.
 * On any error nothing is returned and everything allocated is released.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(__linux__)
#include <unistd.h>
#endif

#include "aimsi_data.h"

enum {
    MAX_CLASS_ID = (1 << 24) - 1
};

typedef struct csv_ctx {
    const char *end;
    const char *name;
    unsigned char delim;
    int header;
    uint64_t skip_rows;
    int64_t label_opt; /* AIMS_LOAD_LABEL_COLUMN as given */
    int label_kind;
    int missing;
    int nonfinite;     /* AIMS_LOAD_NONFINITE */
    uint64_t max_rows;
    size_t ncols;      /* fields per record */
    size_t label_idx;  /* field index of the label, SIZE_MAX for none */
    size_t feat_cols;  /* ncols minus the label column */
} csv_ctx;

/* One scanned field: either an unsigned integer converted on the fly, or the
 * trimmed raw bytes [b, e) (for quoted fields, between the quotes). */
typedef struct csv_field {
    int is_int;
    uint32_t ival;
    const char *b;
    const char *e;
    uint64_t line; /* line the field starts on */
} csv_field;

/* What the result arrays look like while they are filled. */
typedef struct csv_out {
    size_t rows;
    float *x;
    int32_t *labels;
    float *targets;
    int32_t max_label;
} csv_out;

static int is_blank(const csv_ctx *c, unsigned char ch)
{
    return (ch == ' ' || ch == '\t' || ch == '\r') && ch != c->delim;
}

/* ---- messages ------------------------------------------------------------------- */


#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static aims_status
csv_fail(const csv_ctx *c, aims_status code, uint64_t line, const char *fmt, ...)
{
    char msg[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line == 0) {
        return aimsi_err(NULL, code, "%s: %s", c->name, msg);
    }
    return aimsi_err(NULL, code, "%s:%llu: %s", c->name, (unsigned long long)line, msg);
}

static aims_status bad_field(const csv_ctx *c, const csv_field *f, size_t col, const char *what)
{
    char ex[AIMSI_EXCERPT_CAP];
    aimsi_excerpt(f->b, f->e, ex, sizeof ex);
    return csv_fail(c, AIMS_E_CORRUPT, f->line, "column %zu: %s \"%s\"", col + 1, what, ex);
}

/* ---- tokenizer ------------------------------------------------------------------- */

/* Skip n physical lines (LF-terminated, quotes not interpreted). */
static void skip_lines(const csv_ctx *c, const char **pp, uint64_t *line, uint64_t n)
{
    const char *p = *pp;
    for (uint64_t i = 0; i < n && p < c->end; i++) {
        const char *nl = memchr(p, '\n', (size_t)(c->end - p));
        p = (nl == NULL) ? c->end : nl + 1;
        *line += 1;
    }
    *pp = p;
}

/* Move *pp past lines that hold only blanks; stops at the start of the next
 * line with content, or at the end. */
static void skip_blank_lines(const csv_ctx *c, const char **pp, uint64_t *line)
{
    const char *p = *pp;
    for (;;) {
        const char *q = p;
        while (q < c->end && is_blank(c, (unsigned char)*q)) {
            q++;
        }
        if (q == c->end) {
            *pp = c->end;
            return;
        }
        if (*q != '\n') {
            *pp = p;
            return;
        }
        p = q + 1;
        *line += 1;
    }
}

static void trim(const csv_ctx *c, csv_field *f)
{
    while (f->b < f->e && is_blank(c, (unsigned char)f->b[0])) {
        f->b++;
    }
    while (f->e > f->b && is_blank(c, (unsigned char)f->e[-1])) {
        f->e--;
    }
}

/* A quoted field starting at *pp (which holds '"'). Leaves *pp at the field's
 * terminator (delimiter, LF or end). */
static aims_status scan_quoted(const csv_ctx *c, const char **pp, uint64_t *line, csv_field *f)
{
    const uint64_t start_line = *line;
    const char *p = *pp + 1;
    f->b = p;
    for (;;) {
        const char *qt = memchr(p, '"', (size_t)(c->end - p));
        if (qt == NULL) {
            return csv_fail(c, AIMS_E_CORRUPT, start_line,
                            "unterminated quoted field (opened on this line)");
        }
        for (const char *s = p; s < qt; s++) {
            *line += (*s == '\n');
        }
        if (qt + 1 < c->end && qt[1] == '"') {
            p = qt + 2; /* "" is an escaped quote */
            continue;
        }
        f->e = qt;
        p = qt + 1;
        break;
    }
    while (p < c->end && is_blank(c, (unsigned char)*p)) {
        p++;
    }
    if (p < c->end && *p != (char)c->delim && *p != '\n') {
        char ex[AIMSI_EXCERPT_CAP];
        aimsi_excerpt(p, c->end, ex, sizeof ex);
        return csv_fail(c, AIMS_E_CORRUPT, *line,
                        "unexpected bytes after a closing quote: \"%s\"", ex);
    }
    *pp = p;
    trim(c, f);
    return AIMS_OK;
}

/* Scan one field at *pp; leaves *pp at its terminator (delimiter, LF or end).
 * Unsigned integers of up to 9 digits followed directly by the terminator
 * (or CR LF) are converted here: that is almost every field of image data. */
static inline aims_status scan_field(const csv_ctx *c, const char **pp, uint64_t *line,
                                     csv_field *f)
{
    const char *p = *pp;
    const char *const end = c->end;
    f->line = *line;
    if (p < end && (unsigned)((unsigned char)*p - '0') < 10u) {
        uint32_t v = (uint32_t)((unsigned char)*p - '0');
        const char *q = p + 1;
        const char *const lim = (end - p > 9) ? p + 9 : end;
        while (q < lim && (unsigned)((unsigned char)*q - '0') < 10u) {
            v = v * 10u + (uint32_t)((unsigned char)*q - '0');
            q++;
        }
        if (q == end || *q == (char)c->delim || *q == '\n') {
            f->is_int = 1;
            f->ival = v;
            *pp = q;
            return AIMS_OK;
        }
        if (*q == '\r' && (q + 1 == end || q[1] == '\n')) {
            f->is_int = 1;
            f->ival = v;
            *pp = q + 1;
            return AIMS_OK;
        }
    }
    f->is_int = 0;
    if (p < end && *p == '"') {
        return scan_quoted(c, pp, line, f);
    }
    const char *q = p;
    while (q < end && *q != (char)c->delim && *q != '\n') {
        q++;
    }
    f->b = p;
    f->e = q;
    *pp = q;
    trim(c, f);
    return AIMS_OK;
}

/* Consume the terminator after a field: returns 1 when the record ended. */
static inline int end_of_field(const csv_ctx *c, const char **pp, uint64_t *line)
{
    const char *p = *pp;
    if (p == c->end) {
        return 1;
    }
    *pp = p + 1;
    if (*p == '\n') {
        *line += 1;
        return 1;
    }
    return 0; /* the delimiter */
}

/* Tokenise one record at *pp without converting anything; counts its fields. */
static aims_status count_record(const csv_ctx *c, const char **pp, uint64_t *line,
                                size_t *nfields)
{
    size_t n = 0;
    for (;;) {
        csv_field f;
        AIMSI_TRY(scan_field(c, pp, line, &f));
        n++;
        if (end_of_field(c, pp, line)) {
            break;
        }
    }
    *nfields = n;
    return AIMS_OK;
}

/* ---- values ----------------------------------------------------------------------- */

static int lower_eq(const char *b, const char *e, const char *word)
{
    const size_t n = strlen(word);
    if ((size_t)(e - b) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        if (ch >= 'A' && ch <= 'Z') {
            ch = (char)(ch + ('a' - 'A'));
        }
        if (ch != word[i]) {
            return 0;
        }
    }
    return 1;
}

static int is_missing_marker(const csv_field *f)
{
    return f->b == f->e || lower_eq(f->b, f->e, "na") || lower_eq(f->b, f->e, "n/a") ||
           lower_eq(f->b, f->e, "null") || lower_eq(f->b, f->e, "?");
}

/* Value of a non-integer field: missing markers obey AIMS_LOAD_MISSING, numbers
 * that are not finite (nan, inf, 1e999) AIMS_LOAD_NONFINITE. */
static aims_status field_value(const csv_ctx *c, const csv_field *f, size_t col, float *out)
{
    float v = 0.0f;
    const int parsed = (aimsi_parse_float(f->b, f->e, &v) == 0);
    if (parsed && (isfinite(v) || c->nonfinite)) {
        *out = v;
        return AIMS_OK;
    }
    if (parsed) {
        return bad_field(c, f, col,
                         "is not a finite number (nan, inf or beyond float range; set "
                         "allow_nonfinite=1 to load it):");
    }
    if (!parsed && !is_missing_marker(f)) {
        return bad_field(c, f, col, "is not a number:");
    }
    if (c->missing == 0) {
        return bad_field(c, f, col, "missing value (set missing=1 to read it as NaN):");
    }
    *out = NAN;
    return AIMS_OK;
}

static aims_status class_id(const csv_ctx *c, const csv_field *f, size_t col, int32_t *out)
{
    if (f->is_int) {
        if (f->ival > MAX_CLASS_ID) {
            return csv_fail(c, AIMS_E_CORRUPT, f->line,
                            "column %zu: class id %u is above the limit %d", col + 1,
                            (unsigned)f->ival, MAX_CLASS_ID);
        }
        *out = (int32_t)f->ival;
        return AIMS_OK;
    }
    float v = 0.0f;
    const int parsed = (aimsi_parse_float(f->b, f->e, &v) == 0);
    if ((parsed && isnan(v)) || (!parsed && is_missing_marker(f))) {
        return bad_field(c, f, col, "missing class label:");
    }
    if (!parsed) {
        return bad_field(c, f, col, "class label is not a number:");
    }
    if (v < 0.0f) {
        return bad_field(c, f, col,
                         "negative class label (class ids must be >= 0; use label_kind=1 "
                         "for float targets):");
    }
    if (v != floorf(v) || v > (float)MAX_CLASS_ID) {
        return bad_field(c, f, col,
                         "class label is not an integer in [0, 2^24) (use label_kind=1 for "
                         "float targets):");
    }
    *out = (int32_t)v;
    return AIMS_OK;
}

/* ---- the two passes ------------------------------------------------------------------- */

static aims_status ragged(const csv_ctx *c, const char *rec, uint64_t rec_line)
{
    size_t n = 0;
    uint64_t line = rec_line;
    const char *p = rec;
    if (count_record(c, &p, &line, &n) != AIMS_OK) {
        /* the record is malformed beyond its width: report that instead */
        p = rec;
        line = rec_line;
        return count_record(c, &p, &line, &n);
    }
    return csv_fail(c, AIMS_E_CORRUPT, rec_line, "expected %zu fields, found %zu", c->ncols, n);
}

/* Parse one record into row r of out. */
static aims_status parse_record(const csv_ctx *c, const char **pp, uint64_t *line, size_t r,
                                csv_out *out)
{
    const char *const rec = *pp;
    const uint64_t rec_line = *line;
    float *xrow = (out->x != NULL) ? out->x + r * c->feat_cols : NULL;
    size_t j = 0;
    for (size_t i = 0;; i++) {
        csv_field f;
        AIMSI_TRY(scan_field(c, pp, line, &f));
        if (i >= c->ncols) {
            return ragged(c, rec, rec_line);
        }
        if (i != c->label_idx) {
            if (f.is_int) {
                xrow[j++] = (float)f.ival;
            } else {
                AIMSI_TRY(field_value(c, &f, i, &xrow[j++]));
            }
        } else if (c->label_kind == 0) {
            int32_t k = 0;
            AIMSI_TRY(class_id(c, &f, i, &k));
            out->labels[r] = k;
            out->max_label = (k > out->max_label) ? k : out->max_label;
        } else if (f.is_int) {
            out->targets[r] = (float)f.ival;
        } else {
            AIMSI_TRY(field_value(c, &f, i, &out->targets[r]));
        }
        if (end_of_field(c, pp, line)) {
            if (i + 1 != c->ncols) {
                return ragged(c, rec, rec_line);
            }
            return AIMS_OK;
        }
    }
}

/* Store a field that the fast path converted into row r; 0 when the label
 * needs the careful path. */
static inline int fast_store(const csv_ctx *c, size_t i, int is_int, uint32_t ival, float v,
                             float *xrow, size_t *j, size_t r, csv_out *out)
{
    if (i != c->label_idx) {
        xrow[(*j)++] = is_int ? (float)ival : v;
        return 1;
    }
    if (c->label_kind != 0) {
        out->targets[r] = is_int ? (float)ival : v;
        return 1;
    }
    if (!is_int || ival > MAX_CLASS_ID) {
        return 0;
    }
    out->labels[r] = (int32_t)ival;
    out->max_label = ((int32_t)ival > out->max_label) ? (int32_t)ival : out->max_label;
    return 1;
}

/* The hot loop. The caller guarantees an LF at or after *pp, so that LF is a
 * sentinel and no byte read needs its own bounds check: every scan below
 * stops at the first LF, which ends this record (a record holding quotes is
 * handed back before any quoted newline matters). Handles records whose
 * fields all are plain numbers; returns 0 at anything else (quotes, missing
 * values, junk, ragged rows, odd labels) and parse_record redoes the record,
 * which decides and words the error. Row r may be partly written. */
static int fast_record(const csv_ctx *c, const char **pp, size_t r, csv_out *out)
{
    const char delim = (char)c->delim;
    const char *q = *pp;
    float *const xrow = (out->x != NULL) ? out->x + r * c->feat_cols : NULL;
    size_t j = 0;
    for (size_t i = 0; i < c->ncols; i++) {
        const char *const fs = q;
        unsigned d = (unsigned)((unsigned char)*q - '0');
        int is_int = 0;
        uint32_t ival = 0;
        float v = 0.0f;
        if (d < 10u) {
            ival = d;
            q++;
            d = (unsigned)((unsigned char)*q - '0');
            while (d < 10u && q - fs < 9) {
                ival = ival * 10u + d;
                q++;
                d = (unsigned)((unsigned char)*q - '0');
            }
            if (*q == delim || *q == '\n') {
                is_int = 1;
            } else if (*q == '\r' && q[1] == '\n') {
                is_int = 1;
                q++;
            }
        }
        if (!is_int) {
            q = fs;
            while (*q != delim && *q != '\n') {
                q++;
            }
            csv_field f = {0, 0, fs, q, 0};
            trim(c, &f);
            if (aimsi_parse_float(f.b, f.e, &v) != 0 || !isfinite(v)) {
                return 0;
            }
        }
        if (!fast_store(c, i, is_int, ival, v, xrow, &j, r, out)) {
            return 0;
        }
        if (*q == '\n') {
            if (i + 1 != c->ncols) {
                return 0;
            }
            *pp = q + 1;
            return 1;
        }
        q++; /* the delimiter */
    }
    return 0; /* more fields than expected */
}

/* Upper bound on the data records from p: lines (a record is at least one
 * line; blank lines and quoted newlines only make the bound loose), capped by
 * max_rows. One memchr pass -- the only pass besides parsing. */
static size_t count_lines(const csv_ctx *c, const char *p)
{
    const uint64_t cap = (c->max_rows > 0) ? c->max_rows : UINT64_MAX;
    size_t lines = 0;
    while (p < c->end && lines < cap) {
        const char *nl = memchr(p, '\n', (size_t)(c->end - p));
        lines++;
        p = (nl == NULL) ? c->end : nl + 1;
    }
    return lines;
}

/* The last LF of the input, or NULL: records starting at or before it can
 * use the fast path's sentinel. */
static const char *last_newline(const char *p, const char *end)
{
    for (const char *q = end; q > p; q--) {
        if (q[-1] == '\n') {
            return q - 1;
        }
    }
    return NULL;
}

static aims_status read_options(const aims_loadopts *opts, csv_ctx *c)
{
    const int64_t delim = aimsi_loadopt(opts, AIMS_LOAD_DELIMITER);
    if (delim <= 0 || delim > 255 || delim == '"' || delim == '\n' || delim == '\r' ||
        (delim >= '0' && delim <= '9')) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "%s: delimiter %lld cannot separate fields (quote, newline or digit)",
                         c->name, (long long)delim);
    }
    c->delim = (unsigned char)delim;
    c->header = (int)aimsi_loadopt(opts, AIMS_LOAD_HEADER);
    const int64_t skip = aimsi_loadopt(opts, AIMS_LOAD_SKIP_ROWS);
    c->skip_rows = (skip > 0) ? (uint64_t)skip : 0;
    c->label_opt = aimsi_loadopt(opts, AIMS_LOAD_LABEL_COLUMN);
    c->label_kind = (int)aimsi_loadopt(opts, AIMS_LOAD_LABEL_KIND);
    c->missing = (int)aimsi_loadopt(opts, AIMS_LOAD_MISSING);
    c->nonfinite = (int)aimsi_loadopt(opts, AIMS_LOAD_NONFINITE);
    const int64_t max_rows = aimsi_loadopt(opts, AIMS_LOAD_MAX_ROWS);
    c->max_rows = (max_rows > 0) ? (uint64_t)max_rows : 0;
    if (c->label_opt < -2) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: label_column %lld is invalid", c->name,
                         (long long)c->label_opt);
    }
    return AIMS_OK;
}

/* Decide the column layout from the header or first record. */
static aims_status layout(csv_ctx *c, const char **pp, uint64_t *line)
{
    skip_lines(c, pp, line, c->skip_rows);
    if (c->header == 2) {
        skip_lines(c, pp, line, 1);
    }
    skip_blank_lines(c, pp, line);
    if (*pp == c->end) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: no data rows", c->name);
    }
    const char *p = *pp;
    uint64_t l = *line;
    AIMSI_TRY(count_record(c, &p, &l, &c->ncols));
    if (c->header == 1) {
        *pp = p; /* column names are consumed, not stored */
        *line = l;
    }
    if (c->label_opt == -1) {
        c->label_idx = SIZE_MAX;
        c->feat_cols = c->ncols;
        return AIMS_OK;
    }
    if (c->label_opt >= 0 && (uint64_t)c->label_opt >= c->ncols) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: label_column %lld but records have %zu fields",
                         c->name, (long long)c->label_opt, c->ncols);
    }
    c->label_idx = (c->label_opt == -2) ? c->ncols - 1 : (size_t)c->label_opt;
    c->feat_cols = c->ncols - 1;
    return AIMS_OK;
}

static void out_free(csv_out *o)
{
    aimsi_free(o->x);
    aimsi_free(o->labels);
    aimsi_free(o->targets);
}

static aims_status out_alloc(const csv_ctx *c, size_t rows, csv_out *o)
{
    size_t n = 0;
    size_t bytes = 0;
    o->rows = rows;
    o->max_label = -1;
    if (c->feat_cols > 0) {
        if (aimsi_mul_ok(rows, c->feat_cols, &n) != 0 ||
            aimsi_mul_ok(n, sizeof(float), &bytes) != 0) {
            return aimsi_err(NULL, AIMS_E_RANGE, "%s: %zu rows x %zu columns is too large",
                             c->name, rows, c->feat_cols);
        }
        o->x = aimsi_malloc(bytes);
        if (o->x == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu x %zu floats",
                             c->name, rows, c->feat_cols);
        }
        aimsi_hint_hugepages(o->x, bytes);
    }
    if (c->label_idx != SIZE_MAX) {
        if (c->label_kind == 0) {
            o->labels = aimsi_calloc(rows, sizeof(int32_t));
        } else {
            o->targets = aimsi_calloc(rows, sizeof(float));
        }
        if (o->labels == NULL && o->targets == NULL) {
            out_free(o);
            return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu labels", c->name,
                             rows);
        }
    }
    return AIMS_OK;
}

/* Can `rows` records of ncols fields fit in `bytes`? Each needs ncols - 1
 * delimiters (or one byte of content when ncols is 1) plus a newline. A file
 * that fails this has a ragged row somewhere; it must not get to allocate
 * rows x cols floats first (a 4 MB file could ask for terabytes). */
static int rows_fit(const csv_ctx *c, size_t rows, size_t bytes)
{
    const size_t per_row = (c->ncols > 1) ? c->ncols - 1 : 1;
    size_t need = 0;
    return aimsi_mul_ok(rows, per_row, &need) == 0 && need <= bytes;
}

/* Parse every record into a one-row scratch area, to learn the exact row
 * count (or the first error, in file order) before a big allocation. Used
 * only when the line-count bound is implausible for the row width. */
static aims_status dry_run(const csv_ctx *c, const char *p, uint64_t line, size_t *rows)
{
    csv_out o;
    memset(&o, 0, sizeof o);
    AIMSI_TRY(out_alloc(c, 1, &o));
    aims_status rc = AIMS_OK;
    size_t r = 0;
    for (; r < *rows && rc == AIMS_OK; r++) {
        skip_blank_lines(c, &p, &line);
        if (p == c->end) {
            break;
        }
        rc = parse_record(c, &p, &line, 0, &o);
    }
    out_free(&o);
    if (rc == AIMS_OK) {
        *rows = r;
    }
    return rc;
}

/* Give back the tail of the arrays when blank lines made the bound loose.
 * Only an optimisation: if the allocator cannot shrink, keep the block. */
static void shrink(void **p, size_t used_bytes)
{
    if (*p == NULL || used_bytes == 0) {
        return;
    }
    void *q = aimsi_realloc(*p, used_bytes);
    if (q != NULL) {
        *p = q;
    }
}

static aims_status check_input(const void *data, size_t size, const char *name,
                               const aims_loadopts *opts)
{
    if (data == NULL && size > 0) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "%s: data is NULL", name);
    }
    if (size == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: empty input", name);
    }
    const int64_t max_bytes = aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES);
    if (max_bytes > 0 && (uint64_t)size > (uint64_t)max_bytes) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: %zu bytes exceed max_bytes %lld", name, size,
                         (long long)max_bytes);
    }
    const unsigned char *b = data;
    if (size >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "%s: gzip-compressed input (decompress first)", name);
    }
    return AIMS_OK;
}

aims_status aimsi_load_csv(const void *data, size_t size, const char *name,
                           const aims_loadopts *opts, aims_dataset **out)
{
    name = (name != NULL) ? name : "<memory>";
    AIMSI_TRY(check_input(data, size, name, opts));
    csv_ctx c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.end = (const char *)data + size;
    AIMSI_TRY(read_options(opts, &c));

    const char *p = data;
    uint64_t line = 1;
    if (size >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
        p += 3;
    }
    AIMSI_TRY(layout(&c, &p, &line));
    size_t bound = count_lines(&c, p);
    if (!rows_fit(&c, bound, (size_t)(c.end - p))) {
        AIMSI_TRY(dry_run(&c, p, line, &bound));
    }
    if (bound == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: no data rows", name);
    }
    csv_out o;
    memset(&o, 0, sizeof o);
    AIMSI_TRY(out_alloc(&c, bound, &o));
    const char *const last_nl = last_newline(p, c.end);
    size_t rows = 0;
    for (; rows < bound; rows++) {
        skip_blank_lines(&c, &p, &line);
        if (p == c.end) {
            break;
        }
        if (last_nl != NULL && p <= last_nl && fast_record(&c, &p, rows, &o)) {
            line++;
            continue;
        }
        const aims_status rc = parse_record(&c, &p, &line, rows, &o);
        if (rc != AIMS_OK) {
            out_free(&o);
            return rc;
        }
    }
    if (rows == 0) {
        out_free(&o);
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: no data rows", name);
    }
    if (rows < bound) {
        shrink((void **)&o.x, rows * c.feat_cols * sizeof(float));
        shrink((void **)&o.labels, rows * sizeof(int32_t));
        shrink((void **)&o.targets, rows * sizeof(float));
    }

    aims_dataset *ds = NULL;
    const aims_status rc = aimsi_dataset_new(&ds);
    if (rc != AIMS_OK) {
        out_free(&o);
        return rc;
    }
    ds->rows = rows;
    ds->cols = c.feat_cols;
    ds->x = o.x;
    ds->labels = o.labels;
    ds->targets = o.targets;
    ds->num_classes = (o.labels != NULL) ? (size_t)o.max_label + 1 : 0;
    *out = ds;
    return AIMS_OK;
}
