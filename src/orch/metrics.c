/*
 * metrics.c -- named counters, gauges and latency histograms, Prometheus text.
 *
 * Shape. A chained hash map keyed by (name, labels) under one mutex. The lock
 * covers only the lookup (and creation on first use): entries are never moved
 * or freed before destroy, so after unlocking the caller updates the entry
 * through atomics. A counter add or a histogram observe is therefore one
 * hash + lock/unlock + one or three relaxed atomic adds.
 *
 * Each entry is one allocation: the entry, then (histograms) its bucket
 * counters, then "name\0labels\0". A name keeps one kind: using a counter's
 * name as a gauge is rejected, since the exposition format has one # TYPE per
 * name.
 *
 * Histograms are log-linear (HdrHistogram's layout, fixed precision): values
 * below 32 ns get one bucket each, and every power of two [2^k, 2^(k+1)) above
 * is cut into 32 equal sub-buckets, so a bucket is at most 1/32 (3.1 %) of its
 * lower bound wide; interpolating inside the bucket usually does much better.
 * 1056 buckets reach 2^37 ns (137 s); larger values land in the last bucket.
 * The range asked for (1 us .. 100 s) is covered with room on both sides.
 *
 * Exposition. Entries are sorted by (name, labels) so the text is stable and
 * every name's samples sit under its # TYPE line. Histograms are exposed in
 * seconds (Prometheus' base unit) with 25 "le" bounds at 1-2.5-5 steps from
 * 1 us to 100 s plus +Inf. A bound's cumulative count includes only buckets
 * lying entirely at or below it, so counts are exact lower bounds (a value in
 * a bucket straddling a bound is counted at the next bound).
 *
 * Label text is inserted verbatim, so it is validated first: name="value"
 * pairs separated by commas, label names [a-zA-Z_][a-zA-Z0-9_]*, values with
 * only \\, \" and \n escapes; histograms may not use the reserved "le".
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_orch.h"

#define MX_NAME_MAX 128u
#define MX_LABELS_MAX 1024u

typedef enum mx_kind { MX_COUNTER = 1, MX_GAUGE = 2, MX_HIST = 3 } mx_kind;

typedef struct mx_entry {
    struct mx_entry *next; /* hash chain */
    uint64_t hash;
    mx_kind kind;
    const char *name;   /* point into the tail of this block */
    const char *labels; /* "" when none */
    _Atomic uint64_t value; /* counter, or gauge double bits */
    _Atomic uint64_t sum;   /* histogram: sum of ns */
    _Atomic uint64_t *buckets;
} mx_entry;

struct aims_metrics {
    aimsi_obj hdr;
    pthread_mutex_t lock;
    mx_entry **tab;
    size_t cap; /* power of two */
    size_t count;
    int lent; /* owned by a node or client: aims_metrics_destroy refuses it */
};

/* ---- histogram buckets ---------------------------------------------------- */

size_t aimsi_hist_index(uint64_t ns)
{
    if (ns < 32) {
        return (size_t)ns;
    }
    const unsigned k = 63u - (unsigned)__builtin_clzll(ns); /* ns >= 32: k >= 5 */
    if (k >= 5u + 32u) {
        return AIMSI_HIST_BUCKETS - 1;
    }
    const size_t sub = (size_t)((ns >> (k - AIMSI_HIST_SUB_BITS)) & 31u);
    return 32u + (size_t)(k - 5u) * 32u + sub;
}

void aimsi_hist_bounds(size_t index, uint64_t *lo, uint64_t *hi)
{
    if (index < 32) {
        *lo = index;
        *hi = index + 1;
        return;
    }
    const size_t m = (index - 32u) / 32u;
    const uint64_t sub = (index - 32u) % 32u;
    *lo = (32u + sub) << m;
    *hi = (33u + sub) << m;
}

/* ---- validation ----------------------------------------------------------- */

static int mx_name_char(char c, int first)
{
    const int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    return alpha || (!first && c >= '0' && c <= '9');
}

static aims_status mx_check_name(const char *name)
{
    if (name == NULL) {
        return AIMSI_MISUSE("name is NULL");
    }
    size_t n = 0;
    for (; name[n] != '\0'; n++) {
        if (n >= MX_NAME_MAX || !mx_name_char(name[n], n == 0)) {
            return aimsi_err(NULL, AIMS_E_INVAL,
                             "metrics: name \"%.32s\" invalid at byte %zu (want "
                             "[a-zA-Z_:][a-zA-Z0-9_:]*, <= %u bytes)",
                             name, n, MX_NAME_MAX);
        }
    }
    if (n == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "metrics: empty name");
    }
    return AIMS_OK;
}

/* Parse one label value after its opening quote; returns the index after the
 * closing quote, or 0 on a bad escape, raw newline or missing quote. */
static size_t mx_label_value(const char *l, size_t i)
{
    for (;;) {
        const char c = l[i];
        if (c == '\0' || c == '\n') {
            return 0;
        }
        if (c == '"') {
            return i + 1;
        }
        if (c == '\\') {
            const char e = l[i + 1];
            if (e != '\\' && e != '"' && e != 'n') {
                return 0;
            }
            i++;
        }
        i++;
    }
}

static aims_status mx_check_labels(const char *l, mx_kind kind)
{
    const size_t len = strlen(l);
    if (len > MX_LABELS_MAX) {
        return aimsi_err(NULL, AIMS_E_INVAL, "metrics: labels longer than %u bytes", MX_LABELS_MAX);
    }
    size_t i = 0;
    while (i < len) {
        const size_t start = i;
        while (mx_name_char(l[i], i == start) && l[i] != ':') {
            i++;
        }
        const int is_le = i - start == 2 && l[start] == 'l' && l[start + 1] == 'e';
        if (i == start || l[i] != '=' || l[i + 1] != '"' || (is_le && kind == MX_HIST)) {
            return aimsi_err(NULL, AIMS_E_INVAL,
                             "metrics: labels invalid at byte %zu (want name=\"value\",...%s)",
                             i, kind == MX_HIST ? "; no \"le\" on a histogram" : "");
        }
        const size_t end = mx_label_value(l, i + 2);
        if (end == 0) {
            return aimsi_err(NULL, AIMS_E_INVAL, "metrics: label value invalid after byte %zu", i);
        }
        i = end;
        if (l[i] == ',' && l[i + 1] != '\0') {
            i++;
        } else if (l[i] != '\0') {
            return aimsi_err(NULL, AIMS_E_INVAL, "metrics: labels: want ',' at byte %zu", i);
        }
    }
    return AIMS_OK;
}

/* ---- map ------------------------------------------------------------------ */

static uint64_t mx_hash(const char *name, const char *labels)
{
    /* FNV-1a over name, a separator no name contains, and labels. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = name; *p != '\0'; p++) {
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    }
    h = (h ^ 0xffu) * 0x100000001b3ull;
    for (const char *p = labels; *p != '\0'; p++) {
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    }
    return h;
}

static mx_entry *mx_find(const aims_metrics *mx, uint64_t h, const char *name, const char *labels)
{
    for (mx_entry *e = mx->tab[h & (mx->cap - 1)]; e != NULL; e = e->next) {
        if (e->hash == h && strcmp(e->name, name) == 0 && strcmp(e->labels, labels) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Kind already used by another entry with this name, or 0. */
static mx_kind mx_kind_of_name(const aims_metrics *mx, const char *name)
{
    for (size_t i = 0; i < mx->cap; i++) {
        for (const mx_entry *e = mx->tab[i]; e != NULL; e = e->next) {
            if (strcmp(e->name, name) == 0) {
                return e->kind;
            }
        }
    }
    return (mx_kind)0;
}

static aims_status mx_grow(aims_metrics *mx)
{
    const size_t ncap = mx->cap * 2;
    mx_entry **nt = aimsi_calloc(ncap, sizeof *nt);
    if (nt == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "metrics: table of %zu slots", ncap);
    }
    for (size_t i = 0; i < mx->cap; i++) {
        mx_entry *e = mx->tab[i];
        while (e != NULL) {
            mx_entry *next = e->next;
            e->next = nt[e->hash & (ncap - 1)];
            nt[e->hash & (ncap - 1)] = e;
            e = next;
        }
    }
    aimsi_free(mx->tab);
    mx->tab = nt;
    mx->cap = ncap;
    return AIMS_OK;
}

static aims_status mx_new_entry(aims_metrics *mx, uint64_t h, const char *name,
                                const char *labels, mx_kind kind, mx_entry **out)
{
    const mx_kind other = mx_kind_of_name(mx, name);
    if (other != 0 && other != kind) {
        return aimsi_err(NULL, AIMS_E_INVAL, "metrics: \"%s\" is already a %s", name,
                         other == MX_COUNTER ? "counter" : other == MX_GAUGE ? "gauge"
                                                                             : "histogram");
    }
    if (mx->count >= mx->cap) {
        AIMSI_TRY(mx_grow(mx));
    }
    const size_t nl = strlen(name);
    const size_t ll = strlen(labels);
    const size_t nb = kind == MX_HIST ? AIMSI_HIST_BUCKETS * sizeof(uint64_t) : 0;
    unsigned char *p = aimsi_calloc(1, sizeof(mx_entry) + nb + nl + ll + 2);
    if (p == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "metrics: entry for \"%s\"", name);
    }
    mx_entry *e = (mx_entry *)(void *)p;
    char *text = (char *)(p + sizeof(mx_entry) + nb);
    memcpy(text, name, nl + 1);
    memcpy(text + nl + 1, labels, ll + 1);
    e->hash = h;
    e->kind = kind;
    e->name = text;
    e->labels = text + nl + 1;
    e->buckets = nb != 0 ? (_Atomic uint64_t *)(void *)(p + sizeof(mx_entry)) : NULL;
    e->next = mx->tab[h & (mx->cap - 1)];
    mx->tab[h & (mx->cap - 1)] = e;
    mx->count++;
    *out = e;
    return AIMS_OK;
}

/* Find (name, labels) of `kind`, creating it when `create`. */
static aims_status mx_get(aims_metrics *mx, const char *name, const char *labels, mx_kind kind,
                          int create, mx_entry **out)
{
    if (!aimsi_obj_ok(mx, AIMSI_MAGIC_METRICS)) {
        return AIMSI_MISUSE("mx is not a metrics registry");
    }
    AIMSI_TRY(mx_check_name(name));
    const char *lab = labels != NULL ? labels : "";
    const uint64_t h = mx_hash(name, lab);
    pthread_mutex_lock(&mx->lock);
    mx_entry *e = mx_find(mx, h, name, lab);
    aims_status rc = AIMS_OK;
    if (e != NULL && e->kind != kind) {
        rc = aimsi_err(NULL, create ? AIMS_E_INVAL : AIMS_E_NOTFOUND,
                       "metrics: \"%s\" {%s} is not a %s", name, lab,
                       kind == MX_COUNTER ? "counter" : kind == MX_GAUGE ? "gauge" : "histogram");
    } else if (e == NULL && !create) {
        rc = aimsi_err(NULL, AIMS_E_NOTFOUND, "metrics: no histogram \"%s\" {%s}", name, lab);
    } else if (e == NULL) {
        rc = mx_check_labels(lab, kind);
        if (rc == AIMS_OK) {
            rc = mx_new_entry(mx, h, name, lab, kind, &e);
        }
    }
    pthread_mutex_unlock(&mx->lock);
    if (rc == AIMS_OK) {
        *out = e;
    }
    return rc;
}

/* ---- lifecycle and updates ------------------------------------------------ */

aims_status aims_metrics_create(aims_metrics **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_metrics *mx = aimsi_calloc(1, sizeof *mx);
    if (mx == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_metrics_create: %zu bytes", sizeof *mx);
    }
    mx->cap = 16;
    mx->tab = aimsi_calloc(mx->cap, sizeof *mx->tab);
    if (mx->tab == NULL) {
        aimsi_free(mx);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_metrics_create: table");
    }
    if (pthread_mutex_init(&mx->lock, NULL) != 0) {
        aimsi_free(mx->tab);
        aimsi_free(mx);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_metrics_create: mutex");
    }
    aimsi_obj_init(&mx->hdr, AIMSI_MAGIC_METRICS);
    *out = mx;
    return AIMS_OK;
}

/* Ownership. A registry the host created is the host's to destroy. The ones a
 * node or client creates for itself are lent out by aims_node_metrics /
 * aims_client_metrics, and the owner keeps updating them from its threads, so
 * aims_metrics_destroy on one would free memory still in use: it is refused
 * (a no-op with an AIMS_E_MISUSE message and a warning in the log), and only
 * the owner frees it, through aimsi_metrics_destroy_owned. The flag is set
 * before the handle is published and never changes, so it needs no lock. */
aims_status aimsi_metrics_create_owned(aims_metrics **out)
{
    AIMSI_TRY(aims_metrics_create(out));
    (*out)->lent = 1;
    return AIMS_OK;
}

void aims_metrics_destroy(aims_metrics *mx)
{
    if (aimsi_obj_ok(mx, AIMSI_MAGIC_METRICS) && mx->lent) {
        aimsi_err(NULL, AIMS_E_MISUSE,
                  "aims_metrics_destroy: this registry belongs to a node or client "
                  "(aims_node_metrics / aims_client_metrics); ignored");
        aimsi_log(AIMS_LOG_WARN, "%s", aims_errmsg());
        return;
    }
    aimsi_metrics_destroy_owned(mx);
}

void aimsi_metrics_destroy_owned(aims_metrics *mx)
{
    if (!aimsi_obj_ok(mx, AIMSI_MAGIC_METRICS)) {
        return;
    }
    for (size_t i = 0; i < mx->cap; i++) {
        mx_entry *e = mx->tab[i];
        while (e != NULL) {
            mx_entry *next = e->next;
            aimsi_free(e);
            e = next;
        }
    }
    aimsi_free(mx->tab);
    pthread_mutex_destroy(&mx->lock);
    aimsi_obj_kill(&mx->hdr);
    aimsi_free(mx);
}

/* One front door for count / set_gauge / observe: find or make the series of that
 * kind, then apply v (a counter delta, a gauge's double bits, or a latency in ns). */
static aims_status mx_record(aims_metrics *mx, const char *name, const char *labels, mx_kind kind,
                             uint64_t v)
{
    mx_entry *e = NULL;
    AIMSI_TRY(mx_get(mx, name, labels, kind, 1, &e));
    if (kind == MX_COUNTER) {
        atomic_fetch_add_explicit(&e->value, v, memory_order_relaxed);
    } else if (kind == MX_GAUGE) {
        atomic_store_explicit(&e->value, v, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&e->buckets[aimsi_hist_index(v)], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->sum, v, memory_order_relaxed);
    }
    return AIMS_OK;
}

aims_status aims_metrics_count(aims_metrics *mx, const char *name, const char *labels,
                               uint64_t delta)
{
    return mx_record(mx, name, labels, MX_COUNTER, delta);
}

aims_status aims_metrics_set_gauge(aims_metrics *mx, const char *name, const char *labels,
                                   double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return mx_record(mx, name, labels, MX_GAUGE, bits);
}

aims_status aims_metrics_observe(aims_metrics *mx, const char *name, const char *labels,
                                 uint64_t ns)
{
    return mx_record(mx, name, labels, MX_HIST, ns);
}

/* ---- series handles (aimsi_orch.h) ----------------------------------------- */

aimsi_mx_series *aimsi_metrics_series(aims_metrics *mx, _Atomic(aimsi_mx_series *) *slot,
                                      char kind, const char *name, const char *labels)
{
    aimsi_mx_series *s = atomic_load_explicit(slot, memory_order_acquire);
    if (s != NULL) {
        return s;
    }
    mx_entry *e = NULL;
    if (mx_get(mx, name, labels, kind == 'h' ? MX_HIST : MX_COUNTER, 1, &e) != AIMS_OK) {
        return NULL;
    }
    /* Racing first uses find the same entry: either store is right. */
    atomic_store_explicit(slot, e, memory_order_release);
    return e;
}

void aimsi_mx_add(aimsi_mx_series *s, uint64_t delta)
{
    if (s != NULL) {
        atomic_fetch_add_explicit(&s->value, delta, memory_order_relaxed);
    }
}

void aimsi_mx_observe(aimsi_mx_series *s, uint64_t ns)
{
    if (s != NULL) {
        atomic_fetch_add_explicit(&s->buckets[aimsi_hist_index(ns)], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->sum, ns, memory_order_relaxed);
    }
}

/* Copy the bucket counters (concurrent observes may land on either side). */
static uint64_t mx_snapshot(const mx_entry *e, uint64_t *b)
{
    uint64_t total = 0;
    for (size_t i = 0; i < AIMSI_HIST_BUCKETS; i++) {
        b[i] = atomic_load_explicit(&e->buckets[i], memory_order_relaxed);
        total += b[i];
    }
    return total;
}

/* The two read-only queries take a const registry: the lock is the only thing
 * they change, so it is reached through a cast (the object itself is never
 * defined const: it comes from aimsi_calloc), and mx_get with create = 0 only
 * looks up. */
static pthread_mutex_t *mx_lock_of(const aims_metrics *mx)
{
    return (pthread_mutex_t *)&mx->lock;
}

aims_status aims_metrics_quantile(const aims_metrics *mx, const char *name, const char *labels,
                                  double q, double *out_ns)
{
    if (out_ns == NULL) {
        return AIMSI_MISUSE("out_ns is NULL");
    }
    if (!(q >= 0.0 && q <= 1.0)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_metrics_quantile: q = %g not in [0, 1]", q);
    }
    mx_entry *e = NULL;
    AIMSI_TRY(mx_get((aims_metrics *)mx, name, labels, MX_HIST, 0, &e));
    uint64_t b[AIMSI_HIST_BUCKETS];
    const uint64_t total = mx_snapshot(e, b);
    if (total == 0) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "aims_metrics_quantile: \"%s\" has no data", name);
    }
    /* Rank q * total along the cumulative counts, linear inside the bucket. */
    const double rank = q * (double)total;
    uint64_t cum = 0;
    size_t last = 0;
    for (size_t i = 0; i < AIMSI_HIST_BUCKETS; i++) {
        if (b[i] == 0) {
            continue;
        }
        last = i;
        if ((double)(cum + b[i]) >= rank) {
            uint64_t lo, hi;
            aimsi_hist_bounds(i, &lo, &hi);
            const double frac = (rank - (double)cum) / (double)b[i];
            *out_ns = (double)lo + (frac > 0.0 ? frac : 0.0) * (double)(hi - lo);
            return AIMS_OK;
        }
        cum += b[i];
    }
    uint64_t lo, hi;
    aimsi_hist_bounds(last, &lo, &hi); /* rounding left rank past the end */
    *out_ns = (double)hi;
    return AIMS_OK;
}

/* ---- exposition ----------------------------------------------------------- */

static const struct {
    const char *text;
    uint64_t ns;
} mx_le[] = {
    {"0.000001", 1000ull},         {"0.0000025", 2500ull},        {"0.000005", 5000ull},
    {"0.00001", 10000ull},         {"0.000025", 25000ull},        {"0.00005", 50000ull},
    {"0.0001", 100000ull},         {"0.00025", 250000ull},        {"0.0005", 500000ull},
    {"0.001", 1000000ull},         {"0.0025", 2500000ull},        {"0.005", 5000000ull},
    {"0.01", 10000000ull},         {"0.025", 25000000ull},        {"0.05", 50000000ull},
    {"0.1", 100000000ull},         {"0.25", 250000000ull},        {"0.5", 500000000ull},
    {"1", 1000000000ull},          {"2.5", 2500000000ull},        {"5", 5000000000ull},
    {"10", 10000000000ull},        {"25", 25000000000ull},        {"50", 50000000000ull},
    {"100", 100000000000ull},
};

static aims_status mx_puts(aimsi_buf *out, const char *s)
{
    return aimsi_buf_append(out, s, strlen(s));
}

static aims_status mx_put_u64(aimsi_buf *out, uint64_t v)
{
    char tmp[24];
    const int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    return aimsi_buf_append(out, tmp, (size_t)n);
}

static aims_status mx_put_double(aimsi_buf *out, double v)
{
    if (isnan(v)) {
        return mx_puts(out, "NaN");
    }
    if (isinf(v)) {
        return mx_puts(out, v > 0 ? "+Inf" : "-Inf");
    }
    char tmp[40];
    const int n = snprintf(tmp, sizeof tmp, "%.17g", v);
    return aimsi_buf_append(out, tmp, (size_t)n);
}

/* "name<suffix>{labels[,le="x"]} " */
static aims_status mx_put_series(aimsi_buf *out, const mx_entry *e, const char *suffix,
                                 const char *le)
{
    AIMSI_TRY(mx_puts(out, e->name));
    AIMSI_TRY(mx_puts(out, suffix));
    if (e->labels[0] != '\0' || le != NULL) {
        AIMSI_TRY(mx_puts(out, "{"));
        AIMSI_TRY(mx_puts(out, e->labels));
        if (le != NULL) {
            AIMSI_TRY(mx_puts(out, e->labels[0] != '\0' ? ",le=\"" : "le=\""));
            AIMSI_TRY(mx_puts(out, le));
            AIMSI_TRY(mx_puts(out, "\""));
        }
        AIMSI_TRY(mx_puts(out, "}"));
    }
    return mx_puts(out, " ");
}

static aims_status mx_put_hist(aimsi_buf *out, const mx_entry *e)
{
    uint64_t b[AIMSI_HIST_BUCKETS];
    const uint64_t total = mx_snapshot(e, b);
    size_t i = 0;
    uint64_t cum = 0;
    for (size_t k = 0; k < sizeof mx_le / sizeof mx_le[0]; k++) {
        for (; i < AIMSI_HIST_BUCKETS; i++) {
            uint64_t lo, hi;
            aimsi_hist_bounds(i, &lo, &hi);
            if (hi - 1 > mx_le[k].ns) {
                break; /* the bucket holds values above this bound */
            }
            cum += b[i];
        }
        AIMSI_TRY(mx_put_series(out, e, "_bucket", mx_le[k].text));
        AIMSI_TRY(mx_put_u64(out, cum));
        AIMSI_TRY(mx_puts(out, "\n"));
    }
    AIMSI_TRY(mx_put_series(out, e, "_bucket", "+Inf"));
    AIMSI_TRY(mx_put_u64(out, total));
    AIMSI_TRY(mx_puts(out, "\n"));
    AIMSI_TRY(mx_put_series(out, e, "_sum", NULL));
    AIMSI_TRY(mx_put_double(out, (double)atomic_load_explicit(&e->sum, memory_order_relaxed) / 1e9));
    AIMSI_TRY(mx_puts(out, "\n"));
    AIMSI_TRY(mx_put_series(out, e, "_count", NULL));
    AIMSI_TRY(mx_put_u64(out, total));
    return mx_puts(out, "\n");
}

static aims_status mx_put_entry(aimsi_buf *out, const mx_entry *e, const mx_entry *prev)
{
    static const char *const kinds[] = {"", "counter", "gauge", "histogram"};
    if (prev == NULL || strcmp(prev->name, e->name) != 0) {
        AIMSI_TRY(mx_puts(out, "# TYPE "));
        AIMSI_TRY(mx_puts(out, e->name));
        AIMSI_TRY(mx_puts(out, " "));
        AIMSI_TRY(mx_puts(out, kinds[e->kind]));
        AIMSI_TRY(mx_puts(out, "\n"));
    }
    if (e->kind == MX_HIST) {
        return mx_put_hist(out, e);
    }
    AIMSI_TRY(mx_put_series(out, e, "", NULL));
    const uint64_t v = atomic_load_explicit(&e->value, memory_order_relaxed);
    if (e->kind == MX_COUNTER) {
        AIMSI_TRY(mx_put_u64(out, v));
    } else {
        double d;
        memcpy(&d, &v, sizeof d);
        AIMSI_TRY(mx_put_double(out, d));
    }
    return mx_puts(out, "\n");
}

static int mx_cmp(const void *a, const void *b)
{
    const mx_entry *x = *(const mx_entry *const *)a;
    const mx_entry *y = *(const mx_entry *const *)b;
    const int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->labels, y->labels);
}

aims_status aims_metrics_prometheus(const aims_metrics *mx, char **out, size_t *out_len)
{
    if (!aimsi_obj_ok(mx, AIMSI_MAGIC_METRICS) || out == NULL) {
        return AIMSI_MISUSE(out == NULL ? "out is NULL" : "mx is not a metrics registry");
    }
    /* Entries never move or die before destroy: list them under the lock,
     * read their atomics after it. */
    pthread_mutex_lock(mx_lock_of(mx));
    const size_t n = mx->count;
    mx_entry **list = aimsi_calloc(n, sizeof *list);
    if (list == NULL) {
        pthread_mutex_unlock(mx_lock_of(mx));
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_metrics_prometheus: list of %zu", n);
    }
    size_t k = 0;
    for (size_t i = 0; i < mx->cap; i++) {
        for (mx_entry *e = mx->tab[i]; e != NULL; e = e->next) {
            list[k++] = e;
        }
    }
    pthread_mutex_unlock(mx_lock_of(mx));
    qsort(list, n, sizeof *list, mx_cmp);
    aimsi_buf buf;
    aimsi_buf_init(&buf);
    aims_status rc = AIMS_OK;
    for (size_t i = 0; i < n && rc == AIMS_OK; i++) {
        rc = mx_put_entry(&buf, list[i], i > 0 ? list[i - 1] : NULL);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_buf_put_u8(&buf, 0);
    }
    aimsi_free(list);
    if (rc != AIMS_OK) {
        aimsi_buf_free(&buf);
        return rc;
    }
    size_t len = 0;
    *out = aimsi_buf_take(&buf, &len);
    if (out_len != NULL) {
        *out_len = len - 1;
    }
    return AIMS_OK;
}
