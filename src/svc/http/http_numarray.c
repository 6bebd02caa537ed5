/*
 * http_numarray.c -- the numeric "data" arrays of KServe v2 JSON requests,
 * parsed without building a cJSON tree for them.
 *
 * Why (measured). cJSON makes one heap node per number: a 64-row Fashion-
 * MNIST request (64 x 784 numbers, 425 KB of JSON) decoded at 4.5 MB/s, all
 * of it malloc and page faults, against a target of 200 MB/s. The issue
 * allows the numeric arrays to go through the library's own exact float
 * parser, so:
 *
 *   1. aimsi_numarray_lift scans the raw body once (strings skipped with
 *      their escapes) for the value of every "data" key that is an array made
 *      only of number characters, brackets, commas and whitespace, at least
 *      AIMSI_NUMARRAY_MIN bytes long. Each such array is copied out of a
 *      "skeleton" of the body and replaced there by a short JSON string,
 *      "\u0001aims:K". cJSON then parses only the skeleton.
 *   2. When the decoder finds such a placeholder as an input's "data", it
 *      calls aimsi_numarray_walk on span K, which checks the JSON grammar of
 *      the array strictly (numbers as RFC 8259 defines them -- so NaN and
 *      Infinity stay refused -- commas, nesting depth) and hands each number
 *      to the decoder's element check, FP32 through aimsi_parse_float (the
 *      CSV loader's correctly rounded parser, same result as strtof).
 *
 * A body that itself contains the placeholder's bytes (an escaped \u0001 or a
 * raw 0x01) is never lifted, so a client cannot forge a placeholder. Each
 * "data" array is scanned at most once and the scans never overlap (a scan
 * stops at the first non-number character, and a nested "data" key starts
 * with a quote), so the pre-pass is linear in the body.
 */
#include <stdlib.h>
#include <string.h>

#include "aimsi_http.h"
#include "../../data/aimsi_data.h"

/* Character classes: 1 whitespace, 2 other characters of a numbers-only array. */
static const unsigned char k_class[256] = {
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1,
    ['0'] = 2, ['1'] = 2, ['2'] = 2, ['3'] = 2, ['4'] = 2, ['5'] = 2, ['6'] = 2, ['7'] = 2,
    ['8'] = 2, ['9'] = 2, ['-'] = 2, ['+'] = 2, ['.'] = 2, ['e'] = 2, ['E'] = 2, [','] = 2,
    ['['] = 2, [']'] = 2,
};

static int is_ws(char c)
{
    return k_class[(unsigned char)c] == 1;
}

static int is_numchar(char c)
{
    return k_class[(unsigned char)c] != 0;
}

/* End (one past the matching ']') of a numbers-only array starting at p[0] ==
 * '[', or NULL when it holds anything else or does not close. */
static const char *numeric_array_end(const char *p, const char *end)
{
    int depth = 0;
    for (const char *q = p; q < end; q++) {
        if (!is_numchar(*q)) {
            return NULL;
        }
        if (*q == '[') {
            depth++;
        } else if (*q == ']' && --depth == 0) {
            return q + 1;
        }
    }
    return NULL;
}

aims_status aimsi_numarray_lift(const char *body, size_t len, aimsi_numarrays *out)
{
    memset(out, 0, sizeof(*out));
    if (memchr(body, 0x01, len) != NULL || memmem(body, len, "\\u0001", 6) != NULL) {
        return AIMS_OK; /* could forge a placeholder: no lifting */
    }
    const char *p = body;
    const char *end = body + len;
    const char *copied = body; /* body[copied..p) not yet in the skeleton */
    aimsi_hbuf sk = {0};
    while (p < end) {
        p = memchr(p, '"', (size_t)(end - p));
        if (p == NULL) {
            break;
        }
        /* a string: find its end, skipping escapes */
        const char *s = ++p;
        while (p < end && *p != '"') {
            p += *p == '\\' ? 2 : 1;
        }
        if (p >= end) {
            break;
        }
        const int is_data = p - s == 4 && memcmp(s, "data", 4) == 0;
        p++;
        if (!is_data || out->n == AIMSI_NUMARRAY_MAX) {
            continue;
        }
        const char *q = p;
        while (q < end && is_ws(*q)) {
            q++;
        }
        if (q >= end || *q != ':') {
            continue;
        }
        q++;
        while (q < end && is_ws(*q)) {
            q++;
        }
        if (q >= end || *q != '[') {
            continue;
        }
        const char *e = numeric_array_end(q, end);
        if (e == NULL || (size_t)(e - q) < AIMSI_NUMARRAY_MIN) {
            continue;
        }
        aimsi_hbuf_add(&sk, copied, (size_t)(q - copied));
        aimsi_hbuf_printf(&sk, "\"\\u0001aims:%zu\"", out->n);
        out->off[out->n] = (size_t)(q - body);
        out->len[out->n] = (size_t)(e - q);
        out->n++;
        copied = p = e;
    }
    if (out->n == 0) {
        aimsi_hbuf_free(&sk);
        return AIMS_OK;
    }
    aimsi_hbuf_add(&sk, copied, (size_t)(end - copied));
    if (sk.failed) {
        aimsi_hbuf_free(&sk);
        memset(out, 0, sizeof(*out));
        return aimsi_err(NULL, AIMS_E_NOMEM, "no memory for the request");
    }
    out->skeleton = sk.p;
    out->skeleton_len = sk.len;
    return AIMS_OK;
}

int aimsi_numarray_index(const aimsi_numarrays *a, const char *s)
{
    if (a->n == 0 || s == NULL || strncmp(s, "\x01" "aims:", 6) != 0) {
        return -1;
    }
    char *e = NULL;
    const unsigned long k = strtoul(s + 6, &e, 10);
    return e != s + 6 && *e == '\0' && k < a->n ? (int)k : -1;
}

/* Length of the RFC 8259 number at p (0 when there is none). */
static size_t json_number(const char *p, const char *end)
{
    const char *q = p;
    if (q < end && *q == '-') {
        q++;
    }
    if (q < end && *q == '0') {
        q++;
    } else if (q < end && *q >= '1' && *q <= '9') {
        while (q < end && *q >= '0' && *q <= '9') {
            q++;
        }
    } else {
        return 0;
    }
    if (q < end && *q == '.') {
        const char *f = ++q;
        while (q < end && *q >= '0' && *q <= '9') {
            q++;
        }
        if (q == f) {
            return 0;
        }
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < end && (*q == '+' || *q == '-')) {
            q++;
        }
        const char *x = q;
        while (q < end && *q >= '0' && *q <= '9') {
            q++;
        }
        if (q == x) {
            return 0;
        }
    }
    return (size_t)(q - p);
}

const char *aimsi_numarray_walk(const char *p, size_t len, int max_depth, int as_f32,
                                void (*num)(void *ctx, double v), void *ctx)
{
    const char *end = p + len;
    int depth = 0;
    int want_value = 1; /* after '[' or ',': a value (or ']' right after '[') */
    int after_open = 0;
    while (p < end) {
        const char c = *p;
        if (is_ws(c)) {
            p++;
            continue;
        }
        if (c == '[') {
            if (!want_value) {
                return "\"data\" is not valid JSON";
            }
            if (++depth > max_depth) {
                return "\"data\" is nested too deeply";
            }
            after_open = 1;
            p++;
            continue;
        }
        if (c == ']') {
            if (want_value && !after_open) {
                return "\"data\" is not valid JSON";
            }
            depth--;
            want_value = 0;
            after_open = 0;
            p++;
            if (depth == 0) {
                break;
            }
            continue;
        }
        if (c == ',') {
            if (want_value) {
                return "\"data\" is not valid JSON";
            }
            want_value = 1;
            after_open = 0;
            p++;
            continue;
        }
        const size_t n = want_value ? json_number(p, end) : 0;
        if (n == 0) {
            return "\"data\" is not valid JSON";
        }
        double v = 0;
        if (as_f32) {
            float f = 0;
            if (aimsi_parse_float(p, p + n, &f) != 0) {
                return "\"data\" is not valid JSON";
            }
            v = f;
        } else {
            char tmp[64];
            if (n >= sizeof(tmp)) {
                return "a number in \"data\" is longer than 63 characters";
            }
            memcpy(tmp, p, n);
            tmp[n] = '\0';
            v = strtod(tmp, NULL);
        }
        num(ctx, v);
        want_value = 0;
        after_open = 0;
        p += n;
    }
    if (depth != 0) {
        return "\"data\" is not valid JSON";
    }
    while (p < end && is_ws(*p)) {
        p++;
    }
    return p == end ? NULL : "\"data\" is not valid JSON";
}
