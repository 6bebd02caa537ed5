/*
 * load_text.c -- labelled text: "label<TAB>text" lines, and a directory of
 * one-topic-per-file documents (the fortunes layout).
 *
 * Both produce a text dataset: document bytes concatenated into one buffer
 * with rows+1 offsets, int32 labels, and class names. Text bytes are kept
 * exactly as they are (invalid UTF-8 included): deciding what bytes mean is the
 * pipeline's job, and a loader that silently "fixes" text makes results
 * irreproducible.
 *
 * Class ids must not depend on line order or readdir order, so labels of a
 * TEXT file are sorted bytewise before ids are assigned, and topic files are
 * sorted by name. The line parser does two passes over the bytes: the first
 * counts rows and text bytes so every array is allocated once at its final
 * size; the second fills them.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "aimsi_data.h"

/* ---- "label<TAB>text" lines ------------------------------------------------------- */

typedef struct span {
    const char *p;
    size_t len;
} span;

typedef struct text_line {
    span label;
    span text;
} text_line;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a;
    const span *y = b;
    const size_t n = x->len < y->len ? x->len : y->len;
    const int c = n > 0 ? memcmp(x->p, y->p, n) : 0;
    if (c != 0) {
        return c;
    }
    return (x->len > y->len) - (x->len < y->len);
}

/* Split [p, end) into lines; returns the number of non-empty lines (capped by
 * max_rows when > 0) and fills lines[] when non-NULL. Errors name the line. */
static aims_status scan_lines(const char *p, const char *end, const char *name, size_t max_rows,
                              text_line *lines, size_t *out_n)
{
    size_t n = 0;
    size_t lineno = 0;
    while (p < end && (max_rows == 0 || n < max_rows)) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl != NULL ? nl : end;
        const char *next = nl != NULL ? nl + 1 : end;
        lineno++;
        if (eol > p && eol[-1] == '\r') {
            eol--; /* CRLF */
        }
        if (eol == p) {
            p = next;
            continue;
        }
        const char *tab = memchr(p, '\t', (size_t)(eol - p));
        if (tab == NULL) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "%s:%zu: no TAB between label and text", name,
                             lineno);
        }
        if (tab == p) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "%s:%zu: empty label", name, lineno);
        }
        if (memchr(p, '\0', (size_t)(tab - p)) != NULL) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "%s:%zu: NUL byte in the label", name, lineno);
        }
        if (lines != NULL) {
            lines[n].label.p = p;
            lines[n].label.len = (size_t)(tab - p);
            lines[n].text.p = tab + 1;
            lines[n].text.len = (size_t)(eol - tab - 1);
        }
        n++;
        p = next;
    }
    *out_n = n;
    return AIMS_OK;
}

/* Sorted unique labels as NUL-terminated strings. */
static aims_status unique_labels(const text_line *lines, size_t n, span **out_u, size_t *out_k)
{
    span *u = aimsi_malloc(n * sizeof *u);
    if (u == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "text: out of memory for labels");
    }
    for (size_t i = 0; i < n; i++) {
        u[i] = lines[i].label;
    }
    qsort(u, n, sizeof *u, cmp_span);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || cmp_span(&u[k - 1], &u[i]) != 0) {
            u[k++] = u[i];
        }
    }
    *out_u = u;
    *out_k = k;
    return AIMS_OK;
}

static aims_status set_span_names(aims_dataset *ds, const span *u, size_t k)
{
    char **names = aimsi_calloc(k, sizeof *names);
    aims_status rc = names == NULL ? AIMS_E_NOMEM : AIMS_OK;
    for (size_t i = 0; rc == AIMS_OK && i < k; i++) {
        names[i] = aimsi_strndup(u[i].p, u[i].len);
        rc = names[i] == NULL ? AIMS_E_NOMEM : AIMS_OK;
    }
    if (rc == AIMS_OK) {
        rc = aimsi_dataset_set_names(ds, (const char *const *)names, k);
    } else {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "text: out of memory for class names");
    }
    for (size_t i = 0; names != NULL && i < k; i++) {
        aimsi_free(names[i]);
    }
    aimsi_free(names);
    return rc;
}

static aims_status fill_text(aims_dataset *ds, const text_line *lines, size_t n, const span *u,
                             size_t k)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += lines[i].text.len; /* bounded by the input size */
    }
    ds->txt_off = aimsi_malloc((n + 1) * sizeof *ds->txt_off);
    ds->txt = aimsi_malloc(total > 0 ? total : 1);
    ds->labels = aimsi_malloc(n * sizeof *ds->labels);
    if (ds->txt_off == NULL || ds->txt == NULL || ds->labels == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "text: out of memory for %zu documents", n);
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const span *hit = bsearch(&lines[i].label, u, k, sizeof *u, cmp_span);
        ds->labels[i] = (int32_t)(hit - u);
        ds->txt_off[i] = pos;
        if (lines[i].text.len > 0) {
            memcpy(ds->txt + pos, lines[i].text.p, lines[i].text.len);
        }
        pos += lines[i].text.len;
    }
    ds->txt_off[n] = pos;
    ds->rows = n;
    return AIMS_OK;
}

aims_status aimsi_load_text(const void *data, size_t size, const char *name,
                            const aims_loadopts *opts, aims_dataset **out)
{
    const char *p = data;
    const char *end = p + size;
    const int64_t max_rows = aimsi_loadopt(opts, AIMS_LOAD_MAX_ROWS);
    const size_t cap_rows = max_rows > 0 ? (size_t)max_rows : 0;
    size_t n = 0;
    AIMSI_TRY(scan_lines(p, end, name, cap_rows, NULL, &n));
    if (n == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: no labelled lines", name);
    }
    if (n > (size_t)INT32_MAX) {
        return aimsi_err(NULL, AIMS_E_RANGE, "%s: too many lines", name);
    }
    text_line *lines = aimsi_malloc(n * sizeof *lines);
    if (lines == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "%s: out of memory for %zu lines", name, n);
    }
    span *u = NULL;
    size_t k = 0;
    aims_dataset *ds = NULL;
    aims_status rc = scan_lines(p, end, name, cap_rows, lines, &n);
    if (rc == AIMS_OK) {
        rc = unique_labels(lines, n, &u, &k);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_dataset_new(&ds);
    }
    if (rc == AIMS_OK) {
        rc = set_span_names(ds, u, k);
    }
    if (rc == AIMS_OK) {
        rc = fill_text(ds, lines, n, u, k);
    }
    aimsi_free(u);
    aimsi_free(lines);
    if (rc != AIMS_OK) {
        aimsi_dataset_free(ds);
        return rc;
    }
    *out = ds;
    return AIMS_OK;
}

/* ---- topics directory ------------------------------------------------------------- */

/* Growing output of the topics loader. */
typedef struct topic_acc {
    aimsi_buf text;   /* document bytes */
    aimsi_buf off;    /* uint64 start offsets (native order) */
    aimsi_buf labels; /* int32 per document */
    size_t rows;
    size_t max_rows; /* 0 = all */
} topic_acc;

static int is_blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char c = p[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') {
            return 0;
        }
    }
    return 1;
}

/* A line holding only "%" (CRLF tolerated) separates entries. */
static int is_separator(const char *line, size_t len)
{
    return (len == 1 && line[0] == '%') || (len == 2 && line[0] == '%' && line[1] == '\r');
}

/* Remove backspace over-strikes in place: every '\b' erases the character
 * before it (a whole UTF-8 sequence, never a newline), so "_\bX" -> "X" and
 * "___\b\b\bnot" -> "not". Returns the new length. */
static size_t strip_overstrike(char *p, size_t n)
{
    size_t w = 0;
    for (size_t r = 0; r < n; r++) {
        if (p[r] != '\b') {
            p[w++] = p[r];
            continue;
        }
        if (w == 0 || p[w - 1] == '\n') {
            continue;
        }
        w--;
        while (w > 0 && ((unsigned char)p[w] & 0xC0) == 0x80 && p[w - 1] != '\n') {
            w--; /* p[w] was a continuation byte: erase back to the lead byte */
        }
    }
    return w;
}

/* Append one document (the entry without the newline that ends its last line). */
static aims_status add_doc(topic_acc *acc, const char *p, size_t len, int32_t label)
{
    if (acc->max_rows != 0 && acc->rows >= acc->max_rows) {
        return AIMS_OK;
    }
    if (len > 0 && p[len - 1] == '\n') {
        len--;
    }
    const uint64_t start = acc->text.len;
    AIMSI_TRY(aimsi_buf_append(&acc->off, &start, sizeof start));
    AIMSI_TRY(aimsi_buf_append(&acc->labels, &label, sizeof label));
    AIMSI_TRY(aimsi_buf_append(&acc->text, p, len));
    acc->rows++;
    return AIMS_OK;
}

/* Walk the entries of one topic file (separated by "%" lines). Blank entries
 * are dropped; the others are counted in *count and, when acc is non-NULL,
 * appended as documents. Counting first lets a too-small topic be skipped
 * without touching the output. */
static aims_status walk_entries(const char *p, size_t n, topic_acc *acc, int32_t label,
                                size_t *count)
{
    size_t start = 0;
    size_t i = 0;
    *count = 0;
    while (i <= n) {
        const char *nl = i < n ? memchr(p + i, '\n', n - i) : NULL;
        const size_t eol = nl != NULL ? (size_t)(nl - p) : n;
        const int sep = is_separator(p + i, eol - i);
        if (sep || eol == n) {
            const size_t stop = sep ? i : n;
            if (!is_blank(p + start, stop - start)) {
                ++*count;
                if (acc != NULL) {
                    AIMSI_TRY(add_doc(acc, p + start, stop - start, label));
                }
            }
            start = eol + 1;
        }
        i = eol + 1;
    }
    return AIMS_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int has_suffix(const char *s, const char *suffix)
{
    const size_t n = strlen(s);
    const size_t m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

typedef struct name_list {
    char **v;
    size_t n;
    size_t cap;
} name_list;

static void names_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        aimsi_free(l->v[i]);
    }
    aimsi_free(l->v);
    memset(l, 0, sizeof *l);
}

static aims_status names_push(name_list *l, const char *s)
{
    if (l->n == l->cap) {
        const size_t cap = l->cap == 0 ? 64 : l->cap * 2;
        char **v = aimsi_realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "topics: out of memory");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = aimsi_strdup(s);
    if (l->v[l->n] == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "topics: out of memory");
    }
    l->n++;
    return AIMS_OK;
}

/* Join dir and name into a new string. */
static char *join_path(const char *dir, const char *name)
{
    const size_t a = strlen(dir);
    const size_t b = strlen(name);
    char *s = aimsi_malloc(a + b + 2);
    if (s != NULL) {
        memcpy(s, dir, a);
        s[a] = '/';
        memcpy(s + a + 1, name, b + 1);
    }
    return s;
}

/* Topic candidates: regular files (lstat: symlinks excluded) whose names do
 * not start with '.' or end in ".dat"/".u8", sorted bytewise. */
static aims_status list_topics(const char *dir, name_list *out)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        const int e = errno;
        return aimsi_err(NULL, e == ENOENT ? AIMS_E_NOTFOUND : AIMS_E_IO,
                         "%s: cannot open directory: %s", dir, strerror(e));
    }
    aims_status rc = AIMS_OK;
    for (;;) {
        errno = 0;
        const struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                rc = aimsi_err(NULL, AIMS_E_IO, "%s: readdir: %s", dir, strerror(errno));
            }
            break;
        }
        const char *nm = de->d_name;
        if (nm[0] == '.' || has_suffix(nm, ".dat") || has_suffix(nm, ".u8")) {
            continue;
        }
        char *path = join_path(dir, nm);
        if (path == NULL) {
            rc = aimsi_err(NULL, AIMS_E_NOMEM, "topics: out of memory");
            break;
        }
        struct stat st;
        const int regular = lstat(path, &st) == 0 && S_ISREG(st.st_mode);
        aimsi_free(path);
        if (regular) {
            rc = names_push(out, nm);
            if (rc != AIMS_OK) {
                break;
            }
        }
    }
    closedir(d);
    if (rc == AIMS_OK && out->n > 1) {
        qsort(out->v, out->n, sizeof *out->v, cmp_str);
    }
    return rc;
}

/* Read one topic file and strip its over-strikes; *out is aimsi_free'd by the caller. */
static aims_status read_topic(const char *dir, const char *nm, uint64_t max_bytes, char **out,
                              size_t *out_len)
{
    char *path = join_path(dir, nm);
    if (path == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "topics: out of memory");
    }
    void *data = NULL;
    size_t len = 0;
    const aims_status rc = aimsi_file_read(path, max_bytes, &data, &len);
    aimsi_free(path);
    AIMSI_TRY(rc);
    *out = data;
    *out_len = data != NULL ? strip_overstrike(data, len) : 0;
    return AIMS_OK;
}

/* Load every kept topic into acc; kept names go to `kept`. */
static aims_status load_topics_into(const char *dir, const name_list *topics,
                                    const aims_loadopts *opts, topic_acc *acc, name_list *kept)
{
    const uint64_t max_bytes = (uint64_t)aimsi_loadopt(opts, AIMS_LOAD_MAX_BYTES);
    const size_t min_docs = (size_t)aimsi_loadopt(opts, AIMS_LOAD_MIN_DOCS);
    uint64_t total = 0;
    for (size_t t = 0; t < topics->n; t++) {
        char *data = NULL;
        size_t len = 0;
        AIMSI_TRY(read_topic(dir, topics->v[t], max_bytes, &data, &len));
        total += len;
        aims_status rc = AIMS_OK;
        if (total > max_bytes) {
            rc = aimsi_err(NULL, AIMS_E_RANGE, "%s: topics exceed max_bytes %llu", dir,
                           (unsigned long long)max_bytes);
        } else {
            size_t count = 0;
            if (len > 0) {
                (void)walk_entries(data, len, NULL, 0, &count);
            }
            if (count >= min_docs && kept->n < (size_t)INT32_MAX) {
                rc = walk_entries(data, len, acc, (int32_t)kept->n, &count);
            }
            if (rc == AIMS_OK && count >= min_docs) {
                rc = names_push(kept, topics->v[t]);
            }
        }
        aimsi_free(data);
        AIMSI_TRY(rc);
    }
    return AIMS_OK;
}

/* Move the accumulated buffers into a new dataset. */
static aims_status topics_dataset(topic_acc *acc, const name_list *kept, aims_dataset **out)
{
    aims_dataset *ds = NULL;
    AIMSI_TRY(aimsi_dataset_new(&ds));
    const uint64_t end = acc->text.len;
    aims_status rc = aimsi_buf_append(&acc->off, &end, sizeof end);
    if (rc == AIMS_OK) {
        rc = aimsi_buf_reserve(&acc->text, 1); /* a non-NULL pointer even when empty */
    }
    if (rc == AIMS_OK) {
        rc = aimsi_dataset_set_names(ds, (const char *const *)kept->v, kept->n);
    }
    if (rc != AIMS_OK) {
        aimsi_dataset_free(ds);
        return rc;
    }
    size_t len = 0;
    ds->rows = acc->rows;
    ds->txt_off = aimsi_buf_take(&acc->off, &len);
    ds->txt = aimsi_buf_take(&acc->text, &len);
    ds->labels = aimsi_buf_take(&acc->labels, &len);
    ds->num_classes = kept->n;
    *out = ds;
    return AIMS_OK;
}

aims_status aims_dataset_load_topics(const char *dir, const aims_loadopts *opts,
                                     aims_dataset **out)
{
    if (dir == NULL || out == NULL) {
        return AIMSI_MISUSE("dir and out must not be NULL");
    }
    if (opts != NULL && !aimsi_obj_ok(opts, AIMSI_MAGIC_LOADOPTS)) {
        return AIMSI_MISUSE("opts is not a valid aims_loadopts handle");
    }
    name_list topics = {0};
    name_list kept = {0};
    topic_acc acc;
    memset(&acc, 0, sizeof acc);
    aimsi_buf_init(&acc.text);
    aimsi_buf_init(&acc.off);
    aimsi_buf_init(&acc.labels);
    const int64_t max_rows = aimsi_loadopt(opts, AIMS_LOAD_MAX_ROWS);
    acc.max_rows = max_rows > 0 ? (size_t)max_rows : 0;

    aims_status rc = list_topics(dir, &topics);
    if (rc == AIMS_OK) {
        rc = load_topics_into(dir, &topics, opts, &acc, &kept);
    }
    if (rc == AIMS_OK && acc.rows == 0) {
        rc = aimsi_err(NULL, AIMS_E_INVAL, "%s: no topic file with >= %lld entries", dir,
                       (long long)aimsi_loadopt(opts, AIMS_LOAD_MIN_DOCS));
    }
    if (rc == AIMS_OK) {
        rc = topics_dataset(&acc, &kept, out);
    }
    aimsi_buf_free(&acc.text);
    aimsi_buf_free(&acc.off);
    aimsi_buf_free(&acc.labels);
    names_free(&topics);
    names_free(&kept);
    return rc;
}
