/*
 * steps_text.c -- the text steps, fused into one pass per document.
 *
 * How. NORMALIZE, TOKENIZE, NGRAMS, HASH and TFIDF are not run one after the
 * other over the corpus: each document is scanned once, byte by byte. ASCII
 * word bytes are lower-cased on the fly, complete and valid UTF-8 sequences
 * (no overlongs, no surrogates, nothing above U+10FFFF) are word characters,
 * every other byte separates tokens -- so a token is always valid UTF-8. Kept
 * tokens are written to a scratch buffer separated by exactly one space, which
 * makes every word n-gram a contiguous substring: n-grams are hashed in place,
 * without building joined strings.
 *
 * Hashing follows scikit-learn's HashingVectorizer: MurmurHash3_x86_32 with
 * seed 0 over the token bytes, read as a signed 32-bit h; bucket = |h| mod
 * buckets, where |INT32_MIN| is taken as 2^31 (sklearn special-cases it the same
 * way); the sign (alternate_sign) is h >= 0 ? +1 : -1.
 *
 * TFIDF merges repeated buckets by sorting the document's (bucket, sign) keys
 * (introsort: O(n log n) even for hostile documents), then weights tf * idf and
 * normalises the row, all in double. Buckets whose signed count cancels to 0
 * are dropped (and do not count towards document frequency). With
 * smooth_idf = 0, a bucket never seen in fit would get sklearn's infinite idf;
 * we give it ln(n) + 1, as if it had been seen once.
 *
 * Threads. All scratch lives in per-chunk structures owned by one call, never
 * in the pipeline, so concurrent transforms on one pipeline are safe. Documents
 * are cut into chunks run on the pipeline's pool; per-document output does not
 * depend on the chunking, so the result is identical for any thread count.
 * Document frequencies are integer sums, also independent of the split.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include <math.h>
#include <string.h>

#include "aimsi_steps.h"

#define MAX_TEXT_CHUNKS 64u

/* ---- MurmurHash3 x86 32 ------------------------------------------------------ */

static uint32_t rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

uint32_t aimsi_murmur3_32(const void *key, size_t len, uint32_t seed)
{
    const uint8_t *data = key;
    const uint32_t c1 = 0xcc9e2d51u;
    const uint32_t c2 = 0x1b873593u;
    uint32_t h = seed;
    const size_t nblocks = len / 4;
    for (size_t i = 0; i < nblocks; i++) {
        uint32_t k;
        memcpy(&k, data + 4 * i, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        k = __builtin_bswap32(k);
#endif
        k *= c1;
        k = rotl32(k, 15);
        k *= c2;
        h ^= k;
        h = rotl32(h, 13);
        h = h * 5u + 0xe6546b64u;
    }
    const uint8_t *tail = data + 4 * nblocks;
    const size_t rest = len & 3u;
    uint32_t k1 = 0;
    if (rest == 3) {
        k1 ^= (uint32_t)tail[2] << 16;
    }
    if (rest >= 2) {
        k1 ^= (uint32_t)tail[1] << 8;
    }
    if (rest >= 1) {
        k1 ^= tail[0];
        k1 *= c1;
        k1 = rotl32(k1, 15);
        k1 *= c2;
        h ^= k1;
    }
    h ^= (uint32_t)len;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* ---- configuration ------------------------------------------------------------- */

typedef struct text_cfg {
    int lower, punct;
    size_t minlen, nmax;
    uint32_t buckets;
    int sign;
    const aimsi_step *tfidf; /* NULL when absent */
    int norm, sublinear;
} text_cfg;

static void cfg_init(const aims_pipeline *p, text_cfg *c)
{
    *c = (text_cfg){.lower = 0, .minlen = 2, .nmax = 1, .buckets = 1u << 18};
    for (size_t k = 0; k < p->nsteps; k++) {
        const aimsi_step *s = &p->steps[k];
        switch (s->kind) {
        case AIMS_STEP_KIND_NORMALIZE: c->lower = aimsi_sp(s, AIMS_STEP_LOWERCASE) != 0.0; break;
        case AIMS_STEP_KIND_TOKENIZE:
            c->minlen = (size_t)aimsi_sp(s, AIMS_STEP_MIN_TOKEN_LEN);
            c->punct = aimsi_sp(s, AIMS_STEP_PUNCT) != 0.0;
            break;
        case AIMS_STEP_KIND_NGRAMS: c->nmax = (size_t)aimsi_sp(s, AIMS_STEP_NGRAM_MAX); break;
        case AIMS_STEP_KIND_HASH:
            c->buckets = (uint32_t)aimsi_sp(s, AIMS_STEP_BUCKETS);
            c->sign = aimsi_sp(s, AIMS_STEP_SIGNED) != 0.0;
            break;
        case AIMS_STEP_KIND_TFIDF:
            c->tfidf = s;
            c->norm = (int)aimsi_sp(s, AIMS_STEP_NORM);
            c->sublinear = aimsi_sp(s, AIMS_STEP_SUBLINEAR_TF) != 0.0;
            break;
        default: break;
        }
    }
}

/* ---- per-document scratch ---------------------------------------------------- */

typedef struct doc_scratch {
    char *buf; /* kept tokens, each followed by one space */
    size_t bcap;
    size_t *tpos; /* token i spans buf[tpos[2i], tpos[2i+1]) */
    size_t tcap;  /* in tokens */
    uint64_t *keys; /* (bucket << 1) | negative */
    size_t kcap;
} doc_scratch;

static void scratch_free(doc_scratch *s)
{
    aimsi_free(s->buf);
    aimsi_free(s->tpos);
    aimsi_free(s->keys);
    *s = (doc_scratch){0};
}

/* Grow *p to hold at least need elements of size sz. */
static int grow(void **p, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap) {
        return 0;
    }
    size_t ncap = *cap < 64 ? 64 : *cap;
    while (ncap < need) {
        ncap = ncap > SIZE_MAX / 4 ? need : ncap * 2;
    }
    size_t bytes;
    if (aimsi_mul_ok(ncap, sz, &bytes) != 0) {
        return -1;
    }
    void *q = aimsi_realloc(*p, bytes);
    if (q == NULL) {
        return -1;
    }
    *p = q;
    *cap = ncap;
    return 0;
}

/* ---- tokenizer --------------------------------------------------------------------- */

/* 1 for ASCII letters, digits and '_' */
static const uint8_t k_word[128] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['_'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static int cont(uint8_t b)
{
    return (b & 0xC0u) == 0x80u;
}

/* Length of the valid UTF-8 sequence at s (lead byte >= 0x80), or 0. */
static size_t utf8_len(const uint8_t *s, size_t left)
{
    const uint8_t b = s[0];
    if (b >= 0xC2 && b <= 0xDF) {
        return left >= 2 && cont(s[1]) ? 2 : 0;
    }
    if (b >= 0xE0 && b <= 0xEF) {
        if (left < 3 || !cont(s[1]) || !cont(s[2])) {
            return 0;
        }
        if ((b == 0xE0 && s[1] < 0xA0) || (b == 0xED && s[1] > 0x9F)) {
            return 0; /* overlong / UTF-16 surrogate */
        }
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (left < 4 || !cont(s[1]) || !cont(s[2]) || !cont(s[3])) {
            return 0;
        }
        if ((b == 0xF0 && s[1] < 0x90) || (b == 0xF4 && s[1] > 0x8F)) {
            return 0; /* overlong / above U+10FFFF */
        }
        return 4;
    }
    return 0; /* continuation byte, C0/C1 overlong lead, F5..FF */
}

/* Tokenise one document into scr; returns the token count or (size_t)-1 on
 * allocation failure. */
static size_t tokenize(const text_cfg *c, const uint8_t *s, size_t len, doc_scratch *scr)
{
    /* Words are separated in the input, so at most len/2+1 of them fit in len+1
     * bytes; punctuation tokens need no separator (every byte may be a token, and
     * each is written with a space after it). */
    const size_t bytes = c->punct ? 2 * len + 1 : len + 1;
    const size_t toks = c->punct ? len + 1 : len / 2 + 1;
    if (grow((void **)&scr->buf, &scr->bcap, bytes, 1) != 0 ||
        grow((void **)&scr->tpos, &scr->tcap, 2 * toks, sizeof(size_t)) != 0) {
        return (size_t)-1;
    }
    char *buf = scr->buf;
    size_t *tp = scr->tpos;
    const uint8_t lowbit = c->lower ? 0x20u : 0u;
    size_t o = 0;
    size_t nt = 0;
    size_t i = 0;
    while (i < len) {
        /* skip separators; with punct, a punctuation byte is a token of its own */
        while (i < len) {
            const uint8_t b = s[i];
            if (b < 0x80) {
                if (k_word[b]) {
                    break;
                }
                if (c->punct && b > 0x20 && b < 0x7F) {
                    tp[2 * nt] = o;
                    buf[o++] = (char)b;
                    tp[2 * nt + 1] = o;
                    nt++;
                    buf[o++] = ' ';
                }
                i++;
            } else if (utf8_len(s + i, len - i) != 0) {
                break;
            } else {
                i++;
            }
        }
        if (i >= len) {
            break;
        }
        const size_t ts = o;
        while (i < len) {
            const uint8_t b = s[i];
            if (b < 0x80) {
                if (!k_word[b]) {
                    break;
                }
                buf[o++] = (char)(b >= 'A' && b <= 'Z' ? (b | lowbit) : b);
                i++;
                continue;
            }
            const size_t n = utf8_len(s + i, len - i);
            if (n == 0) {
                break;
            }
            memcpy(buf + o, s + i, n);
            o += n;
            i += n;
        }
        if (o - ts >= c->minlen) {
            tp[2 * nt] = ts;
            tp[2 * nt + 1] = o;
            nt++;
            buf[o++] = ' ';
        } else {
            o = ts;
        }
    }
    return nt;
}

/* Hash tokens and n-grams into scr->keys; returns the key count or -1. */
static size_t hash_tokens(const text_cfg *c, size_t nt, doc_scratch *scr)
{
    size_t nk = 0;
    size_t total = 0;
    for (size_t n = 1; n <= c->nmax && n <= nt; n++) {
        total += nt - n + 1;
    }
    if (grow((void **)&scr->keys, &scr->kcap, total + 1, sizeof(uint64_t)) != 0) {
        return (size_t)-1;
    }
    for (size_t n = 1; n <= c->nmax && n <= nt; n++) {
        for (size_t i = 0; i + n <= nt; i++) {
            const size_t a = scr->tpos[2 * i];
            const size_t b = scr->tpos[2 * (i + n - 1) + 1];
            const uint32_t h = aimsi_murmur3_32(scr->buf + a, b - a, 0);
            /* |(int32)h| with |INT32_MIN| = 2^31, as scikit-learn */
            const uint32_t mag = (h & 0x80000000u) ? (uint32_t)(0u - h) : h;
            const uint32_t bucket = mag % c->buckets;
            const uint64_t neg = c->sign && (h & 0x80000000u) ? 1u : 0u;
            scr->keys[nk++] = ((uint64_t)bucket << 1) | neg;
        }
    }
    return nk;
}

/* ---- introsort of uint64 keys --------------------------------------------------- */

static void insertion_sort(uint64_t *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        const uint64_t x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1] > x) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static void sift_down(uint64_t *v, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n) {
            return;
        }
        if (child + 1 < n && v[child + 1] > v[child]) {
            child++;
        }
        if (v[root] >= v[child]) {
            return;
        }
        const uint64_t t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

static void heap_sort(uint64_t *v, size_t n)
{
    for (size_t i = n / 2; i-- > 0;) {
        sift_down(v, i, n);
    }
    for (size_t end = n; end-- > 1;) {
        const uint64_t t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end);
    }
}

static void intro_sort(uint64_t *v, size_t n, int depth)
{
    while (n > 24) {
        if (depth-- == 0) {
            heap_sort(v, n);
            return;
        }
        const uint64_t a = v[0];
        const uint64_t b = v[n / 2];
        const uint64_t c = v[n - 1];
        const uint64_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = 0;
        size_t j = n - 1;
        for (;;) {
            while (v[i] < pivot) {
                i++;
            }
            while (v[j] > pivot) {
                j--;
            }
            if (i >= j) {
                break;
            }
            const uint64_t t = v[i];
            v[i] = v[j];
            v[j] = t;
            i++;
            j--;
        }
        /* [0, j] <= pivot <= [j+1, n): recurse into the smaller side */
        const size_t left = j + 1;
        if (left < n - left) {
            intro_sort(v, left, depth);
            v += left;
            n -= left;
        } else {
            intro_sort(v + left, n - left, depth);
            n = left;
        }
    }
    insertion_sort(v, n);
}

static void sort_keys(uint64_t *v, size_t n)
{
    int depth = 0;
    for (size_t m = n; m > 1; m >>= 1) {
        depth += 2;
    }
    intro_sort(v, n, depth);
}

/* Merge sorted keys into (bucket, signed count) pairs in place; returns the
 * pair count. Pairs are written as bucket ids into ids[] and counts into cnt[]. */
static size_t merge_keys(const uint64_t *k, size_t n, uint32_t *ids, double *cnt)
{
    size_t m = 0;
    size_t i = 0;
    while (i < n) {
        const uint64_t b = k[i] >> 1;
        double c = 0.0;
        while (i < n && (k[i] >> 1) == b) {
            c += (k[i] & 1u) ? -1.0 : 1.0;
            i++;
        }
        if (c != 0.0) {
            ids[m] = (uint32_t)b;
            cnt[m] = c;
            m++;
        }
    }
    return m;
}

/* ---- reading documents ---------------------------------------------------------------- */

static const uint8_t *doc_at(const aimsi_textsrc *src, size_t i, size_t *len)
{
    if (src->ds != NULL) {
        const char *t = aims_dataset_text(src->ds, i, len);
        if (t == NULL) {
            *len = 0;
            return (const uint8_t *)"";
        }
        return (const uint8_t *)t;
    }
    const char *t = src->texts[i];
    *len = src->lens != NULL ? src->lens[i] : strlen(t);
    return (const uint8_t *)t;
}

/* ---- fit: document frequencies ---------------------------------------------------------- */

/* One worker's scratch for merging a document's hashed tokens into (id, count)
 * pairs: fit and transform both use it through doc_pairs. */
typedef struct doc_merge {
    doc_scratch scr;
    uint32_t *ids;
    double *cnt;
    size_t mcap;
} doc_merge;

static void merge_free(doc_merge *mg)
{
    aimsi_free(mg->ids);
    aimsi_free(mg->cnt);
    scratch_free(&mg->scr);
}

typedef struct fit_slice {
    uint32_t *df;
    doc_merge mg;
    aims_status rc;
} fit_slice;

/* The documents of a fit or transform cut into slices of `per` for the pool's tasks. */
typedef struct doc_split {
    const text_cfg *cfg;
    const aimsi_textsrc *src;
    size_t rows, per;
} doc_split;

static doc_split split_docs(const text_cfg *cfg, const aimsi_textsrc *src, size_t rows,
                            size_t parts)
{
    return (doc_split){.cfg = cfg, .src = src, .rows = rows, .per = (rows + parts - 1) / parts};
}

/* Run doc(job, slot, d) over the documents d of slice i, stopping at the first that
 * fails (nonzero: out of memory). */
static aims_status split_run(const doc_split *sp, size_t i, int (*doc)(void *, void *, size_t),
                             void *job, void *slot)
{
    const size_t d0 = i * sp->per;
    const size_t d1 = d0 + sp->per < sp->rows ? d0 + sp->per : sp->rows;
    for (size_t d = d0; d < d1; d++) {
        if (doc(job, slot, d) != 0) {
            return AIMS_E_NOMEM;
        }
    }
    return AIMS_OK;
}

typedef struct tfit_job {
    doc_split sp;
    fit_slice *sl;
} tfit_job;

/* Tokenise + hash + merge one document into mg->ids / mg->cnt; returns the
 * pair count or -1 on allocation failure. */
static size_t doc_pairs(const text_cfg *c, const uint8_t *s, size_t len, doc_merge *mg)
{
    const size_t nt = tokenize(c, s, len, &mg->scr);
    if (nt == (size_t)-1) {
        return (size_t)-1;
    }
    const size_t nk = hash_tokens(c, nt, &mg->scr);
    if (nk == (size_t)-1) {
        return (size_t)-1;
    }
    size_t cap = mg->mcap;
    if (grow((void **)&mg->ids, &cap, nk + 1, sizeof(uint32_t)) != 0) {
        return (size_t)-1;
    }
    size_t cap2 = mg->mcap;
    if (grow((void **)&mg->cnt, &cap2, nk + 1, sizeof(double)) != 0) {
        return (size_t)-1;
    }
    mg->mcap = cap < cap2 ? cap : cap2;
    sort_keys(mg->scr.keys, nk);
    return merge_keys(mg->scr.keys, nk, mg->ids, mg->cnt);
}

/* Count document d's buckets into its slice's df table; nonzero when out of memory. */
static int tfit_doc(void *ctx, void *slot, size_t d)
{
    const tfit_job *job = ctx;
    fit_slice *sl = slot;
    size_t len;
    const uint8_t *s = doc_at(job->sp.src, d, &len);
    const size_t m = doc_pairs(job->sp.cfg, s, len, &sl->mg);
    if (m == (size_t)-1) {
        return -1;
    }
    for (size_t k = 0; k < m; k++) {
        sl->df[sl->mg.ids[k]]++;
    }
    return 0;
}

static void tfit_task(void *ctx, size_t i)
{
    tfit_job *job = ctx;
    job->sl[i].rc = split_run(&job->sp, i, tfit_doc, job, &job->sl[i]);
}

aims_status aimsi_text_idf(aimsi_step *s, size_t buckets)
{
    double *idf = aimsi_malloc(buckets * sizeof(double));
    if (idf == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "tfidf: no memory for %zu idf values", buckets);
    }
    const double n = (double)s->ndocs;
    const int smooth = aimsi_sp(s, AIMS_STEP_SMOOTH_IDF) != 0.0;
    for (size_t b = 0; b < buckets; b++) {
        const double df = (double)s->df[b];
        if (smooth) {
            idf[b] = log((1.0 + n) / (1.0 + df)) + 1.0;
        } else {
            idf[b] = log(n / (df > 0.0 ? df : 1.0)) + 1.0;
        }
    }
    aimsi_free(s->idf);
    s->idf = idf;
    return AIMS_OK;
}

aims_status aimsi_text_fit(aims_pipeline *p, const aimsi_textsrc *src, size_t rows)
{
    text_cfg cfg;
    cfg_init(p, &cfg);
    p->out_w = cfg.buckets;
    if (cfg.tfidf == NULL) {
        return AIMS_OK;
    }
    aimsi_step *s = (aimsi_step *)cfg.tfidf;
    /* per-slice df arrays: a few when the table is small, one when it is big */
    unsigned nsl = aimsi_pipe_nthreads(p);
    nsl = nsl > 8 ? 8 : nsl;
    nsl = cfg.buckets > (1u << 22) || rows < 64 ? 1 : nsl;
    tfit_job job = {.sp = split_docs(&cfg, src, rows, nsl)};
    job.sl = aimsi_calloc(nsl, sizeof(fit_slice));
    aims_status rc = job.sl == NULL ? AIMS_E_NOMEM : AIMS_OK;
    for (unsigned i = 0; i < nsl && rc == AIMS_OK; i++) {
        job.sl[i].df = aimsi_calloc(cfg.buckets, sizeof(uint32_t));
        rc = job.sl[i].df == NULL ? AIMS_E_NOMEM : AIMS_OK;
    }
    if (rc == AIMS_OK) {
        aimsi_pool_run(p->pool, nsl, tfit_task, &job);
        for (unsigned i = 0; i < nsl; i++) {
            rc = job.sl[i].rc != AIMS_OK ? job.sl[i].rc : rc;
        }
    }
    if (rc == AIMS_OK) {
        /* slice 0's table becomes the step's: add the others into it */
        for (unsigned i = 1; i < nsl; i++) {
            for (size_t b = 0; b < cfg.buckets; b++) {
                job.sl[0].df[b] += job.sl[i].df[b];
            }
        }
        aimsi_free(s->df);
        s->df = job.sl[0].df;
        job.sl[0].df = NULL;
        s->ndocs = rows;
        rc = aimsi_text_idf(s, cfg.buckets);
    }
    for (unsigned i = 0; job.sl != NULL && i < nsl; i++) {
        aimsi_free(job.sl[i].df);
        merge_free(&job.sl[i].mg);
    }
    aimsi_free(job.sl);
    return rc == AIMS_OK ? AIMS_OK
                         : aimsi_err(&p->obj, rc, "pipeline fit: no memory for tfidf (%u buckets)",
                                     cfg.buckets);
}

/* ---- transform ---------------------------------------------------------------------------- */

typedef struct tx_chunk {
    uint32_t *ids;
    float *w;
    size_t n, cap, wcap;
    doc_merge mg; /* the document's merged (id, count) pairs */
    aims_status rc;
} tx_chunk;

typedef struct tx_job {
    doc_split sp;
    int weighted;
    int counts_only; /* fit_transform: emit merged raw counts, weight later */
    uint64_t *off; /* rows + 1; chunk tasks write per-document counts at [d + 1] */
    tx_chunk *ch;
} tx_job;

static int emit(tx_chunk *c, int weighted, size_t extra)
{
    if (grow((void **)&c->ids, &c->cap, c->n + extra + 1, sizeof(uint32_t)) != 0) {
        return -1;
    }
    if (weighted && grow((void **)&c->w, &c->wcap, c->n + extra + 1, sizeof(float)) != 0) {
        return -1;
    }
    return 0;
}

static double tfidf_weight(const text_cfg *cfg, double tf, uint32_t id);

/* Weight merged pairs as tf * idf and normalise; appends to chunk c. */
static void tfidf_row(const text_cfg *cfg, tx_chunk *c, size_t m)
{
    const double *idf = cfg->tfidf->idf;
    double norm = 0.0;
    (void)idf;
    for (size_t k = 0; k < m; k++) {
        const double w = tfidf_weight(cfg, c->mg.cnt[k], c->mg.ids[k]);
        c->mg.cnt[k] = w;
        norm += cfg->norm == 2 ? w * w : fabs(w);
    }
    norm = cfg->norm == 2 ? sqrt(norm) : norm;
    const double inv = cfg->norm != 0 && norm > 0.0 ? 1.0 / norm : 1.0;
    for (size_t k = 0; k < m; k++) {
        c->ids[c->n + k] = c->mg.ids[k];
        c->w[c->n + k] = (float)(c->mg.cnt[k] * inv);
    }
    c->n += m;
}

/* Transform document d into chunk c; returns -1 on allocation failure. */
static int doc_transform(const tx_job *job, tx_chunk *c, size_t d)
{
    const text_cfg *cfg = job->sp.cfg;
    size_t len;
    const uint8_t *s = doc_at(job->sp.src, d, &len);
    const size_t before = c->n;
    if (cfg->tfidf != NULL) {
        const size_t m = doc_pairs(cfg, s, len, &c->mg);
        if (m == (size_t)-1 || emit(c, 1, m) != 0) {
            return -1;
        }
        if (job->counts_only) {
            for (size_t k = 0; k < m; k++) {
                c->ids[c->n + k] = c->mg.ids[k];
                c->w[c->n + k] = (float)c->mg.cnt[k];
            }
            c->n += m;
        } else {
            tfidf_row(cfg, c, m);
        }
    } else {
        const size_t nt = tokenize(cfg, s, len, &c->mg.scr);
        const size_t nk = nt == (size_t)-1 ? (size_t)-1 : hash_tokens(cfg, nt, &c->mg.scr);
        if (nk == (size_t)-1 || emit(c, job->weighted, nk) != 0) {
            return -1;
        }
        for (size_t k = 0; k < nk; k++) {
            c->ids[c->n + k] = (uint32_t)(c->mg.scr.keys[k] >> 1);
            if (job->weighted) {
                c->w[c->n + k] = (c->mg.scr.keys[k] & 1u) ? -1.0f : 1.0f;
            }
        }
        c->n += nk;
    }
    job->off[d + 1] = c->n - before;
    return 0;
}

static int tx_doc(void *ctx, void *slot, size_t d)
{
    return doc_transform(ctx, slot, d);
}

static void tx_task(void *ctx, size_t i)
{
    tx_job *job = ctx;
    job->ch[i].rc = split_run(&job->sp, i, tx_doc, job, &job->ch[i]);
}

static void tx_free(tx_job *job, size_t nch)
{
    for (size_t i = 0; job->ch != NULL && i < nch; i++) {
        aimsi_free(job->ch[i].ids);
        aimsi_free(job->ch[i].w);
        merge_free(&job->ch[i].mg);
    }
    aimsi_free(job->ch);
}

/* Concatenate the chunks' output into out's token arrays. */
static aims_status tx_gather(tx_job *job, size_t nch, aims_dataset *out)
{
    uint64_t total = 0;
    for (size_t d = 0; d < job->sp.rows; d++) {
        total += job->off[d + 1];
        job->off[d + 1] = total;
    }
    if (nch == 1 && job->ch[0].ids != NULL && (!job->weighted || job->ch[0].w != NULL)) {
        /* one chunk: hand its arrays over instead of copying them */
        out->tok_off = job->off;
        out->tok_ids = job->ch[0].ids;
        out->tok_w = job->weighted ? job->ch[0].w : NULL;
        out->tok_dim = job->sp.cfg->buckets;
        job->ch[0].ids = NULL;
        job->ch[0].w = job->weighted ? NULL : job->ch[0].w;
        job->off = NULL;
        return AIMS_OK;
    }
    uint32_t *ids = aimsi_malloc((size_t)(total + 1) * sizeof(uint32_t));
    float *w = job->weighted ? aimsi_malloc((size_t)(total + 1) * sizeof(float)) : NULL;
    if (ids == NULL || (job->weighted && w == NULL)) {
        aimsi_free(ids);
        aimsi_free(w);
        return aimsi_err(NULL, AIMS_E_NOMEM, "text transform: no memory for %llu tokens",
                         (unsigned long long)total);
    }
    size_t at = 0;
    for (size_t i = 0; i < nch; i++) {
        memcpy(ids + at, job->ch[i].ids, job->ch[i].n * sizeof(uint32_t));
        if (w != NULL) {
            memcpy(w + at, job->ch[i].w, job->ch[i].n * sizeof(float));
        }
        at += job->ch[i].n;
    }
    out->tok_off = job->off;
    out->tok_ids = ids;
    out->tok_w = w;
    out->tok_dim = job->sp.cfg->buckets;
    job->off = NULL;
    return AIMS_OK;
}

static aims_status transform_impl(const aims_pipeline *p, const aimsi_textsrc *src, size_t rows,
                                  aims_dataset *out, int counts_only)
{
    text_cfg cfg;
    cfg_init(p, &cfg);
    const unsigned t = aimsi_pipe_nthreads(p);
    size_t nch = t == 1 || rows < 64 ? 1 : (size_t)t * 8;
    nch = nch > MAX_TEXT_CHUNKS ? MAX_TEXT_CHUNKS : nch;
    nch = nch > rows ? rows : nch;
    nch = nch == 0 ? 1 : nch;
    tx_job job = {.sp = split_docs(&cfg, src, rows, nch)};
    job.weighted = cfg.tfidf != NULL || cfg.sign;
    job.counts_only = counts_only;
    job.off = aimsi_calloc(rows + 1, sizeof(uint64_t));
    job.ch = aimsi_calloc(nch, sizeof(tx_chunk));
    aims_status rc = AIMS_OK;
    if (job.off == NULL || job.ch == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "text transform: no memory for %zu rows", rows);
    } else {
        aimsi_pool_run(p->pool, nch, tx_task, &job);
        for (size_t i = 0; i < nch && rc == AIMS_OK; i++) {
            if (job.ch[i].rc != AIMS_OK) {
                rc = aimsi_err(NULL, job.ch[i].rc, "text transform: no memory (chunk %zu)", i);
            }
        }
    }
    if (rc == AIMS_OK) {
        rc = tx_gather(&job, nch, out);
    }
    aimsi_free(job.off);
    tx_free(&job, nch);
    return rc;
}

aims_status aimsi_text_transform(const aims_pipeline *p, const aimsi_textsrc *src, size_t rows,
                                 aims_dataset *out)
{
    return transform_impl(p, src, rows, out, 0);
}

/* tf * idf of one merged count (as tfidf_row computes it). */
static double tfidf_weight(const text_cfg *cfg, double tf, uint32_t id)
{
    if (cfg->sublinear) {
        tf = tf > 0.0 ? 1.0 + log(tf) : -(1.0 + log(-tf));
    }
    return tf * cfg->tfidf->idf[id];
}

/* Weight the merged counts of every row as tf * idf and normalise, in place;
 * the same double arithmetic as tfidf_row, so fit_transform() and transform()
 * agree bit for bit. */
static void weight_rows(const text_cfg *cfg, aims_dataset *out)
{
    for (size_t r = 0; r < out->rows; r++) {
        const uint64_t b = out->tok_off[r];
        const uint64_t e = out->tok_off[r + 1];
        double norm = 0.0;
        for (uint64_t k = b; k < e; k++) {
            const double w = tfidf_weight(cfg, out->tok_w[k], out->tok_ids[k]);
            norm += cfg->norm == 2 ? w * w : fabs(w);
        }
        norm = cfg->norm == 2 ? sqrt(norm) : norm;
        const double inv = cfg->norm != 0 && norm > 0.0 ? 1.0 / norm : 1.0;
        for (uint64_t k = b; k < e; k++) {
            const double w = tfidf_weight(cfg, out->tok_w[k], out->tok_ids[k]);
            out->tok_w[k] = (float)(w * inv);
        }
    }
}

aims_status aimsi_text_fit_transform(aims_pipeline *p, const aimsi_textsrc *src, size_t rows,
                                     aims_dataset *out)
{
    text_cfg cfg;
    cfg_init(p, &cfg);
    if (cfg.tfidf == NULL) {
        AIMSI_TRY(aimsi_text_fit(p, src, rows));
        return aimsi_err_adopt(&p->obj, transform_impl(p, src, rows, out, 0));
    }
    /* one tokenise+hash pass: raw counts first, document frequencies from
     * them, then the weights in place -- half the work of fit + transform */
    p->out_w = cfg.buckets;
    aims_status rc = transform_impl(p, src, rows, out, 1);
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&p->obj, rc);
    }
    aimsi_step *s = (aimsi_step *)cfg.tfidf;
    uint32_t *df = aimsi_calloc(cfg.buckets, sizeof(uint32_t));
    if (df == NULL) {
        return aimsi_err(&p->obj, AIMS_E_NOMEM, "pipeline fit: no memory for %u buckets",
                         cfg.buckets);
    }
    const uint64_t total = out->tok_off[rows];
    for (uint64_t k = 0; k < total; k++) {
        df[out->tok_ids[k]]++; /* ids are unique within a row */
    }
    aimsi_free(s->df);
    s->df = df;
    s->ndocs = rows;
    rc = aimsi_text_idf(s, cfg.buckets);
    if (rc != AIMS_OK) {
        return aimsi_err_adopt(&p->obj, rc);
    }
    weight_rows(&cfg, out);
    return AIMS_OK;
}
